"""The README's curl commands fail on an HTTP error rather than save its JSON body as the file
asked for: a donor's `gift.json` that is a gateway's 404 answer was then refused by `receipt
verify` as a receipt, naming no HTTP status."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_curl_of_the_readme_fails_on_an_http_error_and_writes_its_file_itself() -> None:
    commands = re.findall(r"`(curl [^`]*)`", README.read_text(encoding="utf-8"))
    assert commands  # else the loop below would pass having checked nothing
    for command in commands:
        words = shlex.split(command)
        flags = "".join(w[1:] for w in words[1:] if w.startswith("-") and not w.startswith("--"))
        assert "f" in flags or "--fail" in words, command
        assert ">" not in words, command  # the shell would make the file, empty, even on a failure
