"""pyproject.toml: the build requirement matches the metadata it declares, and the licence ships."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _minimum(requirement: str, name: str) -> tuple[int, ...]:
    match = re.fullmatch(rf"{name}\s*>=\s*([0-9.]+)", requirement.strip())
    assert match, f"{requirement!r}: expected '{name}>=X.Y'"
    return tuple(int(part) for part in match.group(1).split("."))


def test_an_spdx_license_string_needs_setuptools_77() -> None:
    # PEP 639: `license = "MIT"` (a string, not a table) and `license-files` are read by
    # setuptools 77 and later; an older one refuses the project while building it.
    assert isinstance(PYPROJECT["project"]["license"], str)
    (setuptools,) = [r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    assert _minimum(setuptools, "setuptools") >= (77,)


def test_the_license_file_exists_and_is_declared() -> None:
    files = PYPROJECT["project"]["license-files"]
    assert files == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 vledger authors" in text
    assert PYPROJECT["project"]["license"] == "MIT"


def test_the_image_build_context_holds_every_file_the_metadata_names() -> None:
    # The Dockerfile builds the wheel from a context that .dockerignore empties first: a file
    # pyproject names (readme, licence) but the context lacks fails the image build.
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()]
    let_in = {p.removeprefix("!") for p in patterns if p.startswith("!")}
    assert {PYPROJECT["project"]["readme"], *PYPROJECT["project"]["license-files"]} <= let_in
