"""SQLite's own errors, as a store meets them, for the tests of what a node makes of them."""

from __future__ import annotations

import sqlite3


def malformed() -> sqlite3.DatabaseError:
    """The error SQLite raises for a damaged file ("database disk image is malformed"), with its
    result code (SQLITE_CORRUPT) as SQLite sets it: a DatabaseError made by hand has none."""
    error = sqlite3.DatabaseError("database disk image is malformed")
    error.sqlite_errorcode = sqlite3.SQLITE_CORRUPT  # type: ignore[attr-defined]
    error.sqlite_errorname = "SQLITE_CORRUPT"  # type: ignore[attr-defined]
    return error
