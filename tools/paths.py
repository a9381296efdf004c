"""What a path on the command line is: a store directory or an export file, never a guess.

A path that is neither, or an input file that is not there, is the user's mistake, not a
failed check, so these raise UsageError (exit 2) with a sentence that says what the path is
instead.
"""

from __future__ import annotations

from pathlib import Path

from ..node.errors import UsageError
from ..node.storefile import DB_NAME

# The first bytes of every SQLite file: an export file never starts with them.
_SQLITE_MAGIC = b"SQLite format 3\x00"

# A store's database and the files SQLite keeps beside it: no output of ours may take their place.
_STORE_FILES = frozenset({DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal"})


def is_store(path: Path) -> bool:
    return path.is_dir() and (path / DB_NAME).is_file()


def store_dir(path: Path) -> Path:
    """``path`` if it is a store directory."""
    if is_store(path):
        return path
    if path.is_dir():
        raise UsageError(f"{path}: a directory, but not a vledger store (no {DB_NAME} in it)")
    raise UsageError(f"{path}: not a vledger store directory")


def store_target(path: Path) -> Path:
    """``path`` if a command may write a store there: a store, a new or an empty directory.

    Never a directory of other files: ``import --store run/keys`` made a store in the key
    directory, beside the secrets.
    """
    if is_store(path) or not path.exists():
        return path
    if not path.is_dir():
        raise UsageError(f"{path}: not a directory")
    if any(path.iterdir()):
        raise UsageError(f"{path}: a directory of other files, not a vledger store (no {DB_NAME} in it)")
    return path


def input_file(path: Path, option: str = "") -> Path:
    """``path`` if it names a file to read (a key, a configuration, a file to upload).

    A name that is no file is a typing mistake, exit 2 as for ``verify /nonexistent``: the
    loaders' own errors (``bad_key``, ``bad_settings``, exit 1) are for a file that is there
    but wrong. ``option`` (``--key``) names where the path came from.
    """
    given = f"{option} {path}" if option else str(path)
    if path.is_dir():
        raise UsageError(f"{given}: a directory, not a file")
    if not path.exists():
        raise UsageError(f"{given}: no such file")
    return path


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


def output_file(path: Path) -> Path:
    """``path`` if a command may write its output there: a new or a regular file, never a store's.

    An output is written aside and renamed into place, or truncated and written: either way a
    device (``-o /dev/full`` run as root) would be replaced by a regular file, and a running
    node's database (``-o run/data/replica-1/chain.sqlite3``) destroyed behind its back.
    """
    if not path.parent.is_dir():  # exit 2 as for a missing input, not the OSError's exit 1
        raise UsageError(f"{path}: no such directory {path.parent}")
    if path.name in _STORE_FILES:
        raise UsageError(f"{path}: the name of a store's database file; an output never takes its place")
    if path.exists() and not path.is_file():
        raise UsageError(f"{path}: not a regular file; without -o the output goes to stdout")
    if path.is_file():
        with path.open("rb") as f:
            if f.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC:
                raise UsageError(f"{path}: an SQLite database (a store's?); an output never overwrites one")
    return path
