"""Every error code is documented in docs/PROTOCOL.md, and every class has its own code."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from vledger.node import errors

PROTOCOL = Path(__file__).parents[3] / "docs" / "PROTOCOL.md"


def _codes() -> dict[str, str]:
    return {
        cls.__name__: cls.code
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.VledgerError)
    }


def test_every_error_code_is_documented() -> None:
    documented = set(re.findall(r"`([a-z_]+)`", PROTOCOL.read_text(encoding="utf-8")))
    missing = {name: code for name, code in _codes().items() if code not in documented}
    assert not missing, f"codes missing from docs/PROTOCOL.md: {missing}"


def test_every_error_is_a_vledger_error_with_its_own_code() -> None:
    seen: dict[str, str] = {}
    for name in dir(errors):
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == errors.__name__:
            assert issubclass(cls, errors.VledgerError), name
            assert isinstance(cls.code, str) and cls.code, name
            # A code names exactly one kind of failure.
            assert cls.code not in seen, f"{name} and {seen.get(cls.code)} share the code {cls.code!r}"
            seen[cls.code] = name
