"""What a path on the command line is: a store directory or an export file, never a guess.

A path that is neither is the user's mistake, not a failed check, so these raise UsageError
(exit 2) with a sentence that says what the path is instead.
"""

from __future__ import annotations

from pathlib import Path

from ..node.errors import UsageError
from ..node.storefile import DB_NAME

# The first bytes of every SQLite file: an export file never starts with them.
_SQLITE_MAGIC = b"SQLite format 3\x00"


def is_store(path: Path) -> bool:
    return path.is_dir() and (path / DB_NAME).is_file()


def store_dir(path: Path) -> Path:
    """``path`` if it is a store directory."""
    if is_store(path):
        return path
    if path.is_dir():
        raise UsageError(f"{path}: a directory, but not a vledger store (no {DB_NAME} in it)")
    raise UsageError(f"{path}: not a vledger store directory")


def export_file(path: Path) -> Path:
    """``path`` if it is a file other than a store's database (whose directory was meant)."""
    if path.is_dir():
        raise UsageError(f"{path}: a directory, not an export file")
    if not path.is_file():
        raise UsageError(f"{path}: no such export file")
    with path.open("rb") as f:
        if f.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC:
            raise UsageError(f"{path}: this is a store's database file; give its directory {path.parent} instead")
    return path
