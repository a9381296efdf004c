"""The web pages: one layout around each page's part, the navigation marking the page shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vledger.verifier.pages import PAGES, WEB_DIR, render


@pytest.mark.parametrize("name", sorted(PAGES))
def test_each_page_is_the_layout_around_its_part(name: str) -> None:
    html = render(name).decode()
    assert html.startswith("<!doctype html>") and html.endswith("</body>\n</html>\n")
    assert html.count("<head>") == 1 and html.count("<header>") == 1 and html.count("<main>") == 1
    assert f"<title>vledger: {PAGES[name].title}</title>" in html
    here = re.findall(r'<a href="(\w+)\.html" class="here">', html)
    assert here == ([name] if PAGES[name].link else [])
    links = re.findall(r'<a href="(\w+)\.html"', html)
    assert links == [n for n, page in PAGES.items() if page.link]
    assert "$" not in html.split("<main>")[0]  # every placeholder of the layout filled


def test_a_page_part_holds_no_head_of_its_own() -> None:
    for name in PAGES:
        part = (WEB_DIR / f"{name}.html").read_text(encoding="utf-8")
        assert "<head>" not in part and "<header>" not in part and part.startswith("<main>"), name


def test_an_unknown_page_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        render("secrets", tmp_path)
