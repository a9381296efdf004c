"""The gateway's web pages: one layout (head, navigation) around each page's own part.

``verifier/web/layout.html`` holds what every page shares; ``verifier/web/<page>.html`` only
the page's ``<main>`` and its script. Pure apart from reading those files.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

WEB_DIR = Path(__file__).with_name("web")


@dataclass(frozen=True, slots=True)
class Page:
    title: str  # after "vledger: " in the window's title
    link: str  # its link in the navigation ("": none, the index)


PAGES = {
    "index": Page("public ledgers", ""),
    "vote": Page("check my vote", "Check my vote"),
    "tally": Page("live tally", "Live tally"),
    "charity": Page("charity ledger", "Charity ledger"),
    "dashboard": Page("operators' dashboard", "Operators"),
}


def navigation(current: str) -> str:
    """The links to the other pages, ``current``'s marked ``here``."""
    return "\n".join(
        f'<a href="{name}.html"' + (' class="here"' if name == current else "") + f">{page.link}</a>"
        for name, page in PAGES.items()
        if page.link
    )


def render(name: str, web_dir: Path = WEB_DIR) -> bytes:
    """Page ``name`` (a key of :data:`PAGES`: KeyError otherwise) as served: the layout around its part."""
    page = PAGES[name]
    layout = Template((web_dir / "layout.html").read_text(encoding="utf-8"))
    main = (web_dir / f"{name}.html").read_text(encoding="utf-8")
    return layout.substitute(title=page.title, nav=navigation(name), main=main).encode()


INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def security_headers(page: bytes) -> dict[str, str]:
    """The headers a rendered page is served with: a Content-Security-Policy that runs only the
    pages' own scripts (the static file, and each inline script by its SHA-256) and styles, and
    loads nothing from elsewhere but what the pages fetch (any gateway: ``#gateway=``, 15.5);
    no page may be framed (clickjacking a voter's check)."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in INLINE_SCRIPT.findall(page)
    )
    policy = (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self'; connect-src *; img-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return {"Content-Security-Policy": policy, "X-Frame-Options": "DENY"}
