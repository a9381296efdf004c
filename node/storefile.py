"""The SQLite file behind a node's store: its schema and a read-only view of it.

One file holds every ledger of a node: a row per record with the record's exact bytes
(``data``) and, for lookups, copies of its ledger, height, hash, author and request id.
Only ``data`` is trusted by verification; the other columns are indexes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from .errors import StoreError

DB_NAME = "chain.sqlite3"
SCHEMA_VERSION = 1
MAX_HEIGHT = 2**63 - 1  # SQLite's largest integer

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    ledger TEXT NOT NULL,
    height INTEGER NOT NULL,
    hash BLOB NOT NULL,
    author TEXT NOT NULL,
    request_id TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (ledger, height)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_by_hash ON records (hash);
CREATE INDEX IF NOT EXISTS records_by_request ON records (ledger, author, request_id);
"""


class StoreRow(NamedTuple):
    """One row of ``records`` as the file holds it: the index columns are unchecked copies."""

    height: int
    hash: bytes
    author: str
    request_id: str
    data: bytes


def connect(path: Path, *, readonly: bool = False, shared: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves), WAL and full fsync.

    ``shared`` lets another thread use it: the store opens its write connection, then hands
    it to the committer thread, the only one that uses it from then on.
    """
    try:
        if readonly:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        else:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=not shared)
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
    except sqlite3.Error as e:
        raise StoreError(f"{path}: cannot open the store: {e}") from e
    return conn


class StoreReader:
    """Read-only access to a store's raw records, for tools that must trust nothing."""

    def __init__(self, directory: Path, page_size: int = 1000) -> None:
        path = directory / DB_NAME
        if not path.is_file():
            raise StoreError(f"{directory}: no vledger store here (no {DB_NAME})")
        self.path = path
        self.page_size = page_size
        self._conn = connect(path, readonly=True)
        self._check_schema()

    def _check_schema(self) -> None:
        try:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: not a vledger store: {e}") from e
        if row is None or row[0] != str(SCHEMA_VERSION):
            raise StoreError(f"{self.path}: unsupported store schema {row[0] if row else None!r}")

    def close(self) -> None:
        self._conn.close()

    def ledgers(self) -> list[str]:
        rows = self._conn.execute("SELECT DISTINCT ledger FROM records ORDER BY ledger").fetchall()
        return [r[0] for r in rows]

    def count(self, ledger: str | None = None) -> int:
        if ledger is None:
            return int(self._conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
        return int(self._conn.execute("SELECT COUNT(*) FROM records WHERE ledger = ?", (ledger,)).fetchone()[0])

    def iter_raw(self, ledger: str, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(height column, record bytes) in height order, a page at a time."""
        yield from iter_pages(self._conn, ledger, start, stop, self.page_size)

    def iter_rows(self, ledger: str, start: int = 0, stop: int | None = None) -> Iterator[StoreRow]:
        """Every column of each row in height order, a page at a time, for checking the indexes."""
        for row in _pages(self._conn, _ROW_COLUMNS, ledger, start, stop, self.page_size):
            yield StoreRow(*row)


# The column lists a page may select; each starts with ``height``, the key of the next page.
_RAW_COLUMNS = "height, data"
_ROW_COLUMNS = "height, hash, author, request_id, data"


def iter_pages(
    conn: sqlite3.Connection, ledger: str, start: int, stop: int | None, page_size: int
) -> Iterator[tuple[int, bytes]]:
    """(height column, record bytes) in height order, a page at a time."""
    yield from _pages(conn, _RAW_COLUMNS, ledger, start, stop, page_size)


def _pages(
    conn: sqlite3.Connection, columns: str, ledger: str, start: int, stop: int | None, page_size: int
) -> Iterator[tuple[Any, ...]]:
    """Keyset pagination: each page is its own short read, so a long scan never pins the WAL.

    ``columns`` is one of the constants above, never outside text: it is put into the SQL.
    """
    # SQLite integers stop at 2**63 - 1; heights past it cannot be stored, so clamp, not fail.
    end = min(stop, MAX_HEIGHT) if stop is not None else MAX_HEIGHT
    while start < end:
        rows = conn.execute(
            f"SELECT {columns} FROM records WHERE ledger = ? AND height >= ? AND height < ? ORDER BY height LIMIT ?",
            (ledger, start, end, page_size),
        ).fetchall()
        if not rows:
            return
        yield from rows
        start = rows[-1][0] + 1
