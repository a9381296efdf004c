"""SQLite's own errors, as a store meets them, for the tests of what a node makes of them."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

CHECKPOINT_DEADLINE = 30.0  # seconds for the WAL to be checkpointed into the main file (readers finish)


def malformed() -> sqlite3.DatabaseError:
    """The error SQLite raises for a damaged file ("database disk image is malformed"), with its
    result code (SQLITE_CORRUPT) as SQLite sets it: a DatabaseError made by hand has none."""
    error = sqlite3.DatabaseError("database disk image is malformed")
    error.sqlite_errorcode = sqlite3.SQLITE_CORRUPT  # type: ignore[attr-defined]
    error.sqlite_errorname = "SQLITE_CORRUPT"  # type: ignore[attr-defined]
    return error


def overwrite_pages(db: Path) -> None:
    """Put the records in the main file (an empty WAL), then overwrite every page but the
    first (the schema) with bytes SQLite cannot read as a b-tree page, in place: what a disk
    that rots or a hand that writes into the file does while the node runs."""
    deadline = time.monotonic() + CHECKPOINT_DEADLINE
    with contextlib.closing(sqlite3.connect(db)) as conn:
        # busy (1) while a reader holds an older snapshot: again until none does.
        while conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] != 0:
            assert time.monotonic() < deadline, f"{db}: no WAL checkpoint within {CHECKPOINT_DEADLINE} s"
            time.sleep(0.05)
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    with db.open("r+b") as file:
        pages = file.seek(0, 2) // page_size
        for page in range(1, pages):
            file.seek(page * page_size)
            file.write(b"\xa5" * page_size)
        file.flush()
