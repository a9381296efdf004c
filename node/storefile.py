"""The SQLite file behind a node's store: its schema and a read-only view of it.

One file holds every ledger of a node: a row per record with the record's exact bytes
(``data``) and, for lookups, copies of its ledger, height, hash, author and request id.
Only ``data`` is trusted by verification; the other columns are indexes.

Beside them, ``tree`` holds each ledger's Merkle tree (docs/PROTOCOL.md section 12): the
hash of every complete subtree of 16 leaves or more (level >= ``STORED_LEVEL``), written in
the transaction that writes its last record, and ``tree_edge`` the ledger's frontier (its
right edge, at most 64 hashes), rewritten in each transaction that starts the ledger or
completes one of those subtrees, and only then: a lone put's commit would otherwise write a
third page (the records' leaf, the request index's and the edge's) and fsync it, for 15 puts
of 16. Smaller subtrees are rehashed from the records when asked for (at most 8 records): the
records are the leaves, and a row per leaf cost appends more than the issue's budget allows.

The meta key ``tree`` is ``kept`` once those rows cover every record; a store from before
the tree (or one run without it) lacks the key, and ChainStore builds the rows on open.

What the edge guarantees at rest: for a ledger of ``n`` records its size ``e`` has ``e <= n``
and ``e >> STORED_LEVEL == n >> STORED_LEVEL`` (:func:`edge_covers`; a store from before,
whose edge moved with every commit, has ``e == n``), and it is the tree of the first ``e``
records. The records past it, at most 15, are covered by no stored hash: readers size the tree
by the records (:meth:`StoreReader.tree`), and the node checks them on open as the head is
checked, each the valid next record of the one below (ChainStore._check_past_edge). So a cut
of the tail, or a rewrite of a record with everything after it recomputed (its link and proof
of work, and the records after it), shows at rest (``vledger verify``, the node's open) when it
reaches below ``e`` or below a kept checkpoint's size; one of only the records past both is
what no single copy shows (docs/PROTOCOL.md 4 and 12.6): records no checkpoint covered yet,
since a home keeps a signed checkpoint of each batch its outbox streams.

Records are found by their hash through an index of sorted runs: ``hash_rows`` holds rows
(run, the hash's first 8 bytes, ledger, height), ``hash_runs`` each run's level and row count,
for the records of each ledger below its size in ``hashes_filled`` (none listed: none). The
records above it, fewer than ``store.HASH_FILL_AT`` and a group in all, are found by their rows'
hash column (:func:`tail_rows`: ChainStore keeps them in memory, StoreReader reads them, as they
come, only when the index misses). A record's hash is random, so a table sorted by it takes each new
hash at a random page: filled a thousand at a time it still rewrote a page for nearly every
record once it outgrew the fill. Here ChainStore writes the hashes above the marks, sorted,
as a new run in the transaction whose records bring them to HASH_FILL_AT (read from those
records' rows and sorted by SQLite: :func:`add_run_of_records`): run ids only grow,
so a run is appended at the index's right edge, a few pages, and the run and the marks are
durable together. Eight runs of one level are merged into one of the next
(:func:`merge_hash_runs`), in steps inside the ordinary group commits: each step moves the
sources' rows of the next range of prefixes into the new run (SQLite sorts that small range)
and deletes them from the sources, and saves the cursor, so a row is in exactly one run at
every commit: a lookup seeks each run listed in ``hash_runs`` for the prefix and compares the
record's whole hash, and a kill at any moment leaves a merge that the next commits go on with.
A store of an earlier layout is converted when ChainStore opens it: its sorted
``record_hashes`` table (already a run) is copied as the first run, an index on the records'
hash column (earlier still) dropped and the index filled from the rows. Read-only, either is
looked up as it is.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from . import tree
from .errors import IndexMismatchError, ProofError, StoreError, TreeMismatchError, TreeSizeError

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
DROP INDEX IF EXISTS records_by_hash;
DROP INDEX IF EXISTS records_by_hash_prefix;
CREATE TABLE IF NOT EXISTS hash_rows (
    run INTEGER NOT NULL,
    prefix BLOB NOT NULL,
    ledger TEXT NOT NULL,
    height INTEGER NOT NULL,
    PRIMARY KEY (run, prefix, ledger, height)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hash_runs (
    run INTEGER PRIMARY KEY,
    level INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    into_run INTEGER,
    cursor BLOB
);
CREATE TABLE IF NOT EXISTS hashes_filled (
    ledger TEXT PRIMARY KEY,
    size INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_by_request ON records (ledger, author, request_id);
CREATE TABLE IF NOT EXISTS tree (
    ledger TEXT NOT NULL,
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (ledger, level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tree_edge (
    ledger TEXT PRIMARY KEY,
    frontier BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    ledger TEXT NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note BLOB NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (ledger, kind, size, root)
) WITHOUT ROWID;
"""
# Finds a record by its hash (the one parameter) in a store from before the hash index (an index
# on the records' hash column: records_by_hash_prefix, or records_by_hash before it), until
# ChainStore opens it: SCHEMA drops that index and the hash index is filled instead.
BY_HASH = "substr(hash, 1, 8) = substr(?1, 1, 8) AND hash = ?1"
# A record by its hash through the runs of hash_rows (the records below their ledger's filled
# mark): one seek a run, every run of hash_runs, since each row is in exactly one run.
_BY_RUN_HASH = (
    "SELECT r.ledger, r.height, r.data FROM hash_rows AS h JOIN records AS r "
    "ON r.ledger = h.ledger AND r.height = h.height "
    "WHERE h.run IN (SELECT run FROM hash_runs) AND h.prefix = substr(?1, 1, 8) AND r.hash = ?1"
)
# The same through record_hashes, the one sorted table of a store from before the runs.
_BY_FILLED_HASH = (
    "SELECT r.ledger, r.height, r.data FROM record_hashes AS h JOIN records AS r "
    "ON r.ledger = h.ledger AND r.height = h.height WHERE h.prefix = substr(?1, 1, 8) AND r.hash = ?1"
)
# Each ledger's name, filled mark and size, one seek a ledger (no scan of the records).
_MARKS_AND_SIZES = (
    "WITH RECURSIVE names(ledger) AS (SELECT (SELECT MIN(ledger) FROM records) UNION ALL "
    "SELECT (SELECT MIN(ledger) FROM records WHERE ledger > names.ledger) FROM names WHERE names.ledger IS NOT NULL) "
    "SELECT ledger, coalesce((SELECT size FROM hashes_filled AS f WHERE f.ledger = names.ledger), 0), "
    "(SELECT MAX(height) FROM records AS r WHERE r.ledger = names.ledger) + 1 FROM names WHERE ledger IS NOT NULL"
)
# What StoreReader.find_hash asks the index, by the store's layout.
_READER_BY_HASH = {
    "runs": f"{_BY_RUN_HASH} LIMIT 1",
    "filled": f"{_BY_FILLED_HASH} LIMIT 1",
    "column": f"SELECT ledger, height, data FROM records WHERE {BY_HASH} LIMIT 1",
}
# The row at a ledger and height if its hash column is ?3.
_AT_HASH = "SELECT ledger, height, data FROM records WHERE ledger = ?1 AND height = ?2 AND hash = ?3"
# A new run's rows of one ledger from the hashes in memory, sorted: ?2 their prefixes, 8 bytes
# each, ?3 the ledger, ?4 a JSON list of their heights, in one statement (executemany would give
# the GIL up a row; a list of [ledger, height] pairs took twice the time to unpack).
_INSERT_RUN_ROWS = (
    "INSERT INTO hash_rows (run, prefix, ledger, height) "
    "SELECT ?1, substr(?2, row.key * 8 + 1, 8), ?3, row.value FROM json_each(?4) AS row"
)
# A new run from one ledger's rows from a height on (a store from before the runs, opened).
_FILL_RUN = (
    "INSERT INTO hash_rows (run, prefix, ledger, height) SELECT ?, substr(hash, 1, 8), ledger, height "
    "FROM records WHERE ledger = ? AND height >= ? AND height < ? ORDER BY 2, 3, 4"
)
_ADD_RUN = "INSERT INTO hash_runs (run, level, rows) VALUES (?, ?, ?)"
_PUT_FILLED = "INSERT OR REPLACE INTO hashes_filled (ledger, size) VALUES (?, ?)"
STORED_LEVEL = 4  # the tree table holds complete subtrees of 2**4 = 16 leaves and more
TREE_KEPT = ("tree", "kept")  # the meta row that says the tree rows cover every record
INSERT_TREE = "INSERT INTO tree (ledger, level, idx, hash) VALUES (?, ?, ?, ?)"
PUT_EDGE = "INSERT OR REPLACE INTO tree_edge (ledger, frontier) VALUES (?, ?)"


class StoreRow(NamedTuple):
    """One row of ``records`` as the file holds it: the index columns are unchecked copies."""

    height: int
    hash: bytes
    author: str
    request_id: str
    data: bytes


class NodeConnection(sqlite3.Connection):
    """A connection that may write (a node's store, its checkpoint log): its reads are never
    lenient (:func:`lenient_text`). A BLOB column's bytes stored as TEXT then fail the read, which
    the node takes for a damaged store (:func:`damaged_file`), rather than serving text as a
    record's bytes."""


def wal_of(path: Path) -> Path:
    """The store file's write-ahead log: the newest commits until SQLite copies them into the file."""
    return path.with_name(path.name + "-wal")


def shm_of(path: Path) -> Path:
    """The index of its write-ahead log that SQLite's readers share (and write)."""
    return path.with_name(path.name + "-shm")


def make_private(path: Path) -> None:
    """Make the store file (created if missing) and its -wal and -shm readable by their owner
    only, as every other file of a node's is: SQLite creates them under the process's umask
    (0644 under supervisord, outsider o13), and gives its -wal and -shm the file's own mode."""
    # Never raises: a path SQLite cannot open (a directory, another owner's) it says so itself,
    # as what the moment holds, which a store's open must not take for damage (ingest/runtime.py).
    # Only a file that is not there yet is opened (O_EXCL): closing any descriptor of a file
    # drops every POSIX lock this process holds on it, so opening and closing a store another
    # connection of this process had open (the checkpoint thread's, a reader's) released that
    # connection's locks; another process then took the file for unused, checkpointed it and
    # removed its -wal under it (bench 6b: a tampered record read back as the old one).
    with contextlib.suppress(OSError):  # FileExistsError among them: nothing to create
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    for each in (path, wal_of(path), shm_of(path)):
        with contextlib.suppress(OSError):
            if each.is_file():
                os.chmod(each, 0o600)  # one made before under another umask


def connect(path: Path, *, readonly: bool = False, shared: bool = False, still: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves), WAL and full fsync.

    ``shared`` lets another thread use it: the store opens its write connection, then hands
    it to the committer thread, the only one that uses it from then on. ``still`` (with
    ``readonly``): read without a byte written beside it (``vledger verify`` of a forensic
    copy): without a -wal, immutable; with one, never immutable (SQLite would ignore the -wal's
    commits) but through its -shm opened read-only, which must exist (node/still_store.py says
    why, and opens a copy without one); a running node's store is read through its node's -shm.
    """
    try:
        if readonly:
            still_mode = ("&readonly_shm=1" if wal_of(path).exists() else "&immutable=1") if still else ""
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro{still_mode}", uri=True, isolation_level=None)
        else:
            make_private(path)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=not shared, factory=NodeConnection)
            # SQLite's own settings otherwise: mmap_size, cache_size and wal_autocheckpoint (200,
            # 4000) gave a lone INSERT no CPU back (a WAL commit is its two frames, four pwrites
            # and an fdatasync), and 0 (no checkpoints) a third more, the -wal growing (p27).
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
    except sqlite3.Error as e:
        raise StoreError(f"{path}: cannot open the store: {e}") from e
    return conn


class StoreReader:
    """Read-only access to a store's raw records, for tools that must trust nothing."""

    def __init__(self, directory: Path, page_size: int = 1000, *, still: bool = False) -> None:
        """``still``: read without a byte written beside it, as :func:`connect` says (a copy kept as
        evidence; a running node's store is read through its node's -shm)."""
        path = directory / DB_NAME
        if not path.is_file():
            raise StoreError(f"{directory}: no vledger store here (no {DB_NAME})")
        self.path = path
        self.page_size = page_size
        self._conn = connect(path, readonly=True, still=still)
        self._check_schema()
        self._schema_seen: int | None = None  # the schema counter _layout_seen was read under
        self._layout_seen = "column"
        # The rows above the filled marks as last read (see _read_tails): hash -> (ledger, height),
        # and per ledger the mark they were read under and the height read up to.
        self._tail: dict[bytes, tuple[str, int]] = {}
        self._tail_read: dict[str, tuple[int, int]] = {}

    def _check_schema(self) -> None:
        try:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.Error as e:
            hint = ""
            if not wal_of(self.path).exists():
                hint = (
                    f" (no {wal_of(self.path).name} beside it: a copy of a running node's store needs its -wal"
                    " file too, or take `vledger export`)"
                )
            raise StoreError(f"{self.path}: not a vledger store: {e}{hint}") from e
        if row is None or row[0] != str(SCHEMA_VERSION):
            raise StoreError(f"{self.path}: unsupported store schema {row[0] if row else None!r}")

    def close(self) -> None:
        self._conn.close()

    def ledgers(self) -> list[str]:
        """The ledgers with records, in name order: one index seek per ledger, not a scan of every record."""
        names: list[str] = []
        while True:
            # Below X'' (the least BLOB, which sorts after all text): a ledger column tampered
            # into a BLOB names no ledger (its record is then missing from its own ledger's).
            row = self._conn.execute(
                "SELECT MIN(ledger) FROM records WHERE ledger > ? AND ledger < X''", (names[-1] if names else "",)
            ).fetchone()
            if row[0] is None:
                return names
            names.append(row[0])

    def count(self, ledger: str | None = None) -> int:
        if ledger is None:
            return int(self._conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
        return int(self._conn.execute("SELECT COUNT(*) FROM records WHERE ledger = ?", (ledger,)).fetchone()[0])

    def size(self, ledger: str) -> int:
        """How many records of ``ledger`` the file holds (heights 0..size-1; 0 for an unknown ledger).
        A height column tampered into TEXT or a BLOB (which SQLite sorts after every number) is
        not a height: left out here as by the pages' reads, its record is then missing there."""
        row = self._conn.execute(
            "SELECT MAX(height) FROM records WHERE ledger = ? AND height <= ?", (ledger, MAX_HEIGHT)
        ).fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def get(
        self, ledger: str, height: int, not_blob: Callable[[str, int, object], Exception] | None = None
    ) -> bytes | None:
        """The stored bytes of the record at ``height``, or None. Data of another type than BLOB
        (TEXT read as a str; a number, which ``bytes()`` made that many zero bytes) raises
        ``not_blob(ledger, height, value)``, by default a StoreError naming the cell."""
        if not 0 <= height <= MAX_HEIGHT:
            return None
        row = self._conn.execute(
            "SELECT data FROM records WHERE ledger = ? AND height = ?", (ledger, height)
        ).fetchone()
        if row is None:
            return None
        if type(row[0]) is not bytes:
            raise (not_blob or self._not_blob)(ledger, height, row[0])
        return row[0]

    def _not_blob(self, ledger: str, height: int, data: object) -> StoreError:
        return StoreError(not_blob_message(self.path, ledger, height, data))

    def find_hash(self, record_hash: bytes) -> tuple[str, int, bytes] | None:
        """(ledger, height, bytes) of the record whose hash column is ``record_hash``, or None.

        In one read transaction: the index (runs, or the one sorted table of a store from
        before them) for the records below each ledger's filled mark, then, if it is not
        there, the rows above the marks (read as they come, see :meth:`_read_tails`); a
        store older still through its index on the hash column. Raises StoreError when the
        file cannot be read, or for a row whose data is of another type than bytes.

        The column is an unchecked copy: the caller checks the record's link before it trusts it.
        """
        for attempt in (1, 2):
            self._conn.execute("BEGIN")
            try:
                layout = self._layout()
                found = _found(self._conn, _READER_BY_HASH[layout], (record_hash,))
                if found is None and layout != "column":
                    self._read_tails()
                    place = self._tail.get(record_hash)
                    found = None if place is None else hash_at(self._conn, record_hash, *place)
                if found is not None and type(found[2]) is not bytes:
                    raise StoreError(not_blob_message(self.path, *found))
                return found
            except sqlite3.OperationalError as e:
                # A node converted the layout since it was read (its old table is gone): read it again.
                self._schema_seen = None
                if attempt == 2:
                    raise StoreError(f"{self.path}: cannot look a record up by its hash: {e}") from e
            finally:
                self._conn.execute("COMMIT")
        raise AssertionError("unreachable")

    def _read_tails(self) -> None:
        """Bring the hashes of the rows above the filled marks up to date, reading only the
        rows written since they were last read (and the marks and sizes of every ledger, one
        statement), forgetting those filled since (and those past a chain cut short behind
        the store's back)."""
        for ledger, mark, size in self._conn.execute(_MARKS_AND_SIZES).fetchall():
            seen_mark, read_to = self._tail_read.get(ledger, (0, 0))
            if mark == seen_mark and size == read_to:
                continue
            if mark != seen_mark or size < read_to:
                read_to = min(read_to, size)
                self._tail = {
                    h: place for h, place in self._tail.items() if place[0] != ledger or mark <= place[1] < read_to
                }
            rows = tail_rows(self._conn, ledger, max(mark, read_to))
            self._tail.update((h, (ledger, height)) for h, height in rows)
            self._tail_read[ledger] = (mark, max(mark, read_to, rows[-1][1] + 1 if rows else 0))

    def _layout(self) -> str:
        """The store's hash index: ``runs``, ``filled`` (record_hashes) or ``column`` (an index
        on the hash column), read again only when the schema changed (the header's counter)."""
        version = int(self._conn.execute("PRAGMA schema_version").fetchone()[0])
        if version != self._schema_seen:
            tables = {
                name
                for (name,) in self._conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('record_hashes', 'hash_runs')"
                )
            }
            self._layout_seen = "filled" if "record_hashes" in tables else "runs" if "hash_runs" in tables else "column"
            self._schema_seen = version
        return self._layout_seen

    def iter_raw(self, ledger: str, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(height column, record bytes) in height order, a page at a time."""
        return iter_pages(self._conn, ledger, start, stop, self.page_size)

    def iter_blobs(
        self, ledger: str, start: int, stop: int | None, not_blob: Callable[[str, int, object], Exception]
    ) -> Iterator[tuple[int, bytes]]:
        """:meth:`iter_raw` for a reader that ships the records: see :func:`iter_blob_pages`."""
        return iter_blob_pages(self._conn, ledger, start, stop, self.page_size, not_blob)

    def iter_rows(self, ledger: str, start: int = 0, stop: int | None = None) -> Iterator[StoreRow]:
        """Every column of each row in height order, a page at a time, for checking the indexes."""
        for row in _pages(self._conn, _ROW_COLUMNS, ledger, start, stop, self.page_size):
            yield StoreRow(*row)

    def row_pages(self, ledger: str, start: int = 0, stop: int | None = None) -> Iterator[list[tuple[Any, ...]]]:
        """:meth:`iter_rows`' rows a page at a time, each row a plain tuple in StoreRow's column
        order: a bulk reader's way, with no object made per row (``StoreRow(*row)`` names one)."""
        return _page_lists(self._conn, _ROW_COLUMNS, ledger, start, stop, self.page_size)

    def latest_checkpoints(self, ledger: str) -> list[tuple[int, bytes]]:
        """(size, note) of the latest checkpoint of ``ledger`` this store signed, of the latest
        it cosigned, and of the latest of each kind ``vledger import`` kept (one row per kind
        at most, one per note; evidence is not among them), smallest size first. A store from
        before checkpoints has none."""
        try:
            rows = self._conn.execute(
                "SELECT kind, size, note FROM checkpoints WHERE ledger = ? "
                "AND kind IN ('signed', 'cosigned', 'imported:signed', 'imported:cosigned') "
                "ORDER BY size DESC, at_ms DESC",
                (ledger,),
            ).fetchall()
        except sqlite3.OperationalError:
            return []  # no checkpoints table yet
        latest: dict[str, tuple[int, bytes]] = {}
        for kind, size, note in rows:
            # A column tampered into another type: a note that is no checkpoint (its reader's
            # finding, bad_field at the ledger's size), never a TypeError of the read.
            latest.setdefault(kind, (size if type(size) is int else 0, note if type(note) is bytes else b""))
        return sorted(set(latest.values()))  # a store's own row and the same note imported: one

    def tree_edge(self, ledger: str) -> tree.Frontier | None:
        """The right edge of ``ledger``'s tree as the file holds it (unchecked), or None when the
        store keeps no tree (from before the tree) or none of this ledger. Its size may be below
        the ledger's, by records that complete no stored subtree (see the module's docstring).
        Raises ProofError for an edge that does not decode."""
        if not tree_kept(self._conn):
            return None
        rows = lenient_text(self._conn, "SELECT frontier FROM tree_edge WHERE ledger = ?", (ledger,))
        row = rows[0] if rows else None
        return None if row is None else tree.Frontier.decode(blob_column(row[0], "the tree edge"))

    def tree(self, ledger: str) -> StoredTree:
        """The ledger's Merkle tree as the file holds it (the rows are not checked here).

        Raises StoreError when the store's tree was never built (a store from before the
        tree that no node has opened since), TreeSizeError when the ledger has no records.
        """
        if not tree_kept(self._conn):
            raise StoreError(
                f"{self.path}: this store has no Merkle tree yet; a node builds it when it opens the store"
            )
        # The edge and the records past it in one statement, so of one commit: the size is theirs.
        row = self._conn.execute(
            "SELECT frontier, (SELECT MAX(height) FROM records WHERE ledger = ?1) FROM tree_edge WHERE ledger = ?1",
            (ledger,),
        ).fetchone()
        if row is None:
            raise TreeSizeError(f"ledger {ledger!r} has no records in {self.path}")
        edge = tree.Frontier.decode(bytes(row[0])).size
        records = -1 if row[1] is None else row[1] + 1
        # The records past the edge complete no stored subtree, so their nodes are rehashed from
        # them; past the edge's subtree (not a node's file) the tree ends at its last record.
        # Records cut below the edge: the edge's size, whose missing records fail as they are read.
        return StoredTree(self._conn, ledger, max(edge, min(records, edge | ((1 << STORED_LEVEL) - 1))), self.page_size)


# The column lists a page may select; each starts with ``height``, the key of the next page.
_RAW_COLUMNS = "height, data"
_ROW_COLUMNS = "height, hash, author, request_id, data"
# (height, data) of a node's open, which reads every record once (check_tree, build_tree): its data
# NULL for a row whose hash, author or request id column is of another type than the node writes
# there, so that the leaf hash fails on it (TypeError), as on data of another type, and the open
# then names the cell (records_type_error). Checked by comparisons, as SQLite orders values (numbers,
# then TEXT, then BLOBs, X'' the least): no function call a row, and no scan of their own (a
# separate typeof() scan cost a 1M-record store's open 0.45 CPU s, these comparisons ~0.1).
# TEXT-affinity columns hold no numbers (SQLite stores them as text), so ``< X''`` is TEXT there.
CHECKED_RECORD_PAGE = "height, CASE WHEN hash >= X'' AND author < X'' AND request_id < X'' THEN data END"


# SQLite's primary result codes that say the file itself is damaged (the low byte of an extended code).
_DAMAGE_CODES = frozenset((sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB))
# Python's sqlite3 reading a TEXT cell that is not UTF-8 (a BLOB column's bytes stored as TEXT):
# an OperationalError with no SQLite code, yet the file's content, not the moment's.
_UNDECODABLE_CELL = "Could not decode to UTF-8 column"

# The storage class of each column the node reads, as it writes them: a cell of another class
# (``cast(data as text)``, a number in a hash column) is a store changed behind the node's back.
# (the two columns that name a row, how they are said, (column, its storage classes) ...); a
# column of hash_runs that a run's state leaves NULL may be NULL.
_COLUMN_TYPES: dict[str, tuple[str, str, tuple[tuple[str, str], ...]]] = {
    "records": (
        "ledger, height",
        "ledger {0!r} at {1}",
        (
            ("ledger", "text"),
            ("height", "integer"),
            ("hash", "blob"),
            ("author", "text"),
            ("request_id", "text"),
            ("data", "blob"),
        ),
    ),
    "tree": (
        "ledger, level || '/' || idx",
        "ledger {0!r} at {1}",
        (("ledger", "text"), ("level", "integer"), ("idx", "integer"), ("hash", "blob")),
    ),
    "tree_edge": ("ledger, NULL", "ledger {0!r}", (("ledger", "text"), ("frontier", "blob"))),
    "checkpoints": (
        "ledger, size",
        "ledger {0!r} at {1}",
        (
            ("ledger", "text"),
            ("kind", "text"),
            ("size", "integer"),
            ("root", "blob"),
            ("note", "blob"),
            ("at_ms", "integer"),
        ),
    ),
    "meta": ("key, NULL", "key {0!r}", (("key", "text"), ("value", "text"))),
    "hash_runs": (
        "run, NULL",
        "run {0}",
        (("level", "integer"), ("rows", "integer"), ("into_run", "integer null"), ("cursor", "blob null")),
    ),
}


# The tables whose column types ChainStore's open checks by a scan of their own (the records' are
# checked by its one scan of the records, see check_column_types).
TYPED_APART = tuple(table for table in _COLUMN_TYPES if table != "records")


def check_column_types(conn: sqlite3.Connection, path: Path, tables: tuple[str, ...] = tuple(_COLUMN_TYPES)) -> None:
    """Raise StoreError naming the table, column and row of the first cell of ``tables`` whose
    storage class is not the one the node writes there (_COLUMN_TYPES): read as it is, such a
    cell makes a read fail with an OperationalError or a TypeError far from here, at every open
    and on every read over it. One scan of each table (SQLite reads a cell's type from the row's
    header, not its bytes); a table the store does not have yet is skipped. ChainStore's open
    leaves ``records`` out: its scan of every record checks them as it reads them (see
    CHECKED_RECORD_PAGE), and it calls :func:`records_type_error` when a check fails."""
    for table in tables:
        wrong = _first_wrong_cell(conn, path, table)
        if wrong is not None:
            raise wrong


def records_type_error(conn: sqlite3.Connection, path: Path) -> StoreError | None:
    """The StoreError of :func:`check_column_types` for the first cell of ``records`` of another
    type, or None when there is none: one scan of the records, made by ChainStore's open only
    once one of its checks failed, so that a cell of another type is named as such."""
    return _first_wrong_cell(conn, path, "records")


def _first_wrong_cell(conn: sqlite3.Connection, path: Path, table: str) -> StoreError | None:
    where, label, columns = _COLUMN_TYPES[table]
    allowed = {column: ", ".join(f"'{k}'" for k in kind.split()) for column, kind in columns}
    tests = " OR ".join(f"typeof({column}) NOT IN ({allowed[column]})" for column, _ in columns)
    kinds = ", ".join(f"typeof({column})" for column, _ in columns)
    try:
        row = conn.execute(f"SELECT {where}, {kinds} FROM {table} WHERE {tests} LIMIT 1").fetchone()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return None
        raise
    if row is None:
        return None
    for (column, kind), found in zip(columns, row[2:], strict=True):
        if found not in kind.split():
            return StoreError(
                f"{path}: the {table} table's {column} column holds a {found} value, not {kind.split()[0]} "
                f"({label.format(*row[:2])}): the store was changed behind the node's back"
            )
    raise AssertionError("unreachable: the row was selected for a column of another type")


def damaged_file(error: BaseException) -> sqlite3.DatabaseError | None:
    """The SQLite error that says the store's file itself is damaged (SQLITE_CORRUPT "database
    disk image is malformed", SQLITE_NOTADB "file is not a database"), if ``error`` is one or was
    raised from one; None for anything else: what the moment holds (locked, busy, out of space
    or file handles), and a bug's (a closed connection, a constraint a bug broke), which must be
    seen as one, not stop the node for good as damage would."""
    cause = _cause(error, sqlite3.DatabaseError)
    if not isinstance(cause, sqlite3.DatabaseError):
        return None
    code = getattr(cause, "sqlite_errorcode", None)
    if isinstance(code, int):
        return cause if code & 0xFF in _DAMAGE_CODES else None
    return cause if str(cause).startswith(_UNDECODABLE_CELL) else None


def _cause(error: BaseException, kinds: type[BaseException] | tuple[type[BaseException], ...]) -> BaseException | None:
    """``error``, or what it was raised from, that is one of ``kinds``; None when neither is."""
    cause: BaseException | None = error
    for _ in range(3):  # the store wraps SQLite's errors once or twice (StoreError from it)
        if cause is None or isinstance(cause, kinds):
            return cause
        cause = cause.__cause__
    return None


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})  # no room: the disk, a quota, a file size limit


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or what it was raised from) says the disk has no room for a write:
    SQLite's SQLITE_FULL, or ENOSPC, EDQUOT or EFBIG from the file system."""
    cause = _cause(error, (sqlite3.Error, OSError))
    if isinstance(cause, sqlite3.Error):
        code = getattr(cause, "sqlite_errorcode", None)
        return isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_FULL
    return isinstance(cause, OSError) and cause.errno in _FULL_ERRNOS


# Below this much free space, an I/O error opening a file may be the disk's being full: SQLite says
# "disk I/O error" (SQLITE_IOERR), not SQLITE_FULL, when it cannot make or grow a -wal or -shm.
LOW_ROOM_BYTES = 1 << 20
# What a probe writes to tell a full disk from another fault on a nearly full one: twice a -shm's
# first 32 KiB, without which SQLite cannot open the store.
ROOM_PROBE_BYTES = 64 * 1024
_OPEN_IO_CODES = frozenset((sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN))


def no_room(directory: Path, error: BaseException) -> bool:
    """Whether ``error``, raised opening a file in ``directory``, comes of its disk having no
    room: :func:`disk_full`, or an I/O error (SQLite's SQLITE_IOERR or SQLITE_CANTOPEN, an
    OSError) while the disk has less than LOW_ROOM_BYTES free for an unprivileged writer and a
    write of ROOM_PROBE_BYTES in ``directory`` fails for want of room (:func:`_room_for`)."""
    if disk_full(error):
        return True
    cause = _cause(error, (sqlite3.Error, OSError))
    if isinstance(cause, sqlite3.Error):
        code = getattr(cause, "sqlite_errorcode", None)
        if not (isinstance(code, int) and code & 0xFF in _OPEN_IO_CODES):
            return False
    elif not isinstance(cause, OSError):
        return False
    try:
        room = os.statvfs(directory)
    except OSError:
        return False
    return room.f_bavail * room.f_frsize < LOW_ROOM_BYTES and not _room_for(directory, ROOM_PROBE_BYTES)


def _room_for(directory: Path, size: int) -> bool:
    """Whether ``size`` bytes can be written in ``directory`` now (a probe file, removed at
    once). Free space alone made any fault opening the store on a nearly full disk "no room"
    (review r21 F7: a store path taken by a directory, EIO from a failing disk): the node
    waited for room for ever with the cause hidden. Only ENOSPC, EDQUOT or EFBIG say no."""
    try:
        fd, name = tempfile.mkstemp(prefix=".room-probe-", dir=directory)
    except OSError as e:
        return e.errno not in _FULL_ERRNOS
    try:
        left = memoryview(bytes(size))
        while left:  # a write short of the disk's last bytes is no error: the next one is ENOSPC
            left = left[os.write(fd, left) :]
        os.fsync(fd)
    except OSError as e:
        return e.errno not in _FULL_ERRNOS
    finally:  # a failing disk may fail these too: the probe's answer stands, its error is not the open's
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)
    return True


def iter_pages(
    conn: sqlite3.Connection, ledger: str, start: int, stop: int | None, page_size: int
) -> Iterator[tuple[int, bytes]]:
    """(height column, record bytes) in height order, a page at a time."""
    # The pages' rows through chain's C loop, with no generator frame resumed a row: a layer of
    # ``yield from`` cost every row of a full verify some 0.02 us (iter_raw once went through three).
    return itertools.chain.from_iterable(_page_lists(conn, _RAW_COLUMNS, ledger, start, stop, page_size))


def iter_blob_pages(
    conn: sqlite3.Connection,
    ledger: str,
    start: int,
    stop: int | None,
    page_size: int,
    not_blob: Callable[[str, int, object], Exception],
) -> Iterator[tuple[int, bytes]]:
    """:func:`iter_pages` for a reader that ships or uses the records (a node's ``range_raw``):
    raises ``not_blob(ledger, height, value)`` for the first row of a page whose data SQLite
    gives as another type than the BLOB the node writes (valid UTF-8 TEXT is read as a str, a
    number as a number), before any row of that page is given: such a row was changed behind
    the node's back since its open checked every row (CHECKED_RECORD_PAGE)."""

    def checked() -> Iterator[list[tuple[Any, ...]]]:
        for page in _page_lists(conn, _RAW_COLUMNS, ledger, start, stop, page_size):
            # A type test a row, on the page SQLite already gave: no read of its own.
            for height, data in page:
                if type(data) is not bytes:
                    raise not_blob(ledger, height, data)
            yield page

    return itertools.chain.from_iterable(checked())


def not_blob_message(path: Path, ledger: object, height: object, data: object) -> str:
    """What a store damaged by a record's data of another type than BLOB says (:func:`iter_blob_pages`)."""
    return (
        f"{path}: the records table's data column holds a {sqlite_type(data).lower()} value, not blob "
        f"(ledger {ledger!r} at {height}): the store was changed behind the node's back"
    )


def iter_checked_pages(
    conn: sqlite3.Connection, ledger: str, start: int, stop: int | None, page_size: int
) -> Iterator[tuple[int, bytes]]:
    """:func:`iter_pages` whose data is None for a row whose hash, author or request id column
    is of another type (CHECKED_RECORD_PAGE): for a reader that hashes every record's bytes."""
    return itertools.chain.from_iterable(_page_lists(conn, CHECKED_RECORD_PAGE, ledger, start, stop, page_size))


def _pages(
    conn: sqlite3.Connection, columns: str, ledger: str, start: int, stop: int | None, page_size: int
) -> Iterator[tuple[Any, ...]]:
    """Keyset pagination: each page is its own short read, so a long scan never pins the WAL.

    ``columns`` is one of the constants above, never outside text: it is put into the SQL.
    """
    for page in _page_lists(conn, columns, ledger, start, stop, page_size):
        yield from page


def _page_lists(
    conn: sqlite3.Connection, columns: str, ledger: str, start: int, stop: int | None, page_size: int
) -> Iterator[list[tuple[Any, ...]]]:
    """The pages of :func:`_pages`, each as the list SQLite gives."""
    # SQLite integers stop at 2**63 - 1; heights past it cannot be stored, so clamp, not fail.
    end = min(stop, MAX_HEIGHT) if stop is not None else MAX_HEIGHT
    while start < end:
        rows = lenient_text(
            conn,
            f"SELECT {columns} FROM records WHERE ledger = ? AND height >= ? AND height < ? ORDER BY height LIMIT ?",
            (ledger, start, end, page_size),
        )
        if not rows:
            return
        yield rows
        start = rows[-1][0] + 1


def lenient_text(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> list[Any]:
    """The rows of ``conn.execute(sql, args)``, read again should a TEXT value not be UTF-8 (a
    BLOB column tampered into TEXT: the default decoding refuses the whole read), that text then
    decoded with surrogateescape. Such a column holds a ``str``, which its checks refuse by its
    type, naming its row, rather than the read failing for every row of the page."""
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError as e:
        if "decode" not in str(e) or isinstance(conn, NodeConnection):
            raise
    factory = conn.text_factory
    conn.text_factory = escaped_text
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.text_factory = factory


def escaped_text(raw: bytes) -> str:
    """A connection's text_factory that reads any TEXT, UTF-8 or not (see :func:`lenient_text`)."""
    return raw.decode("utf-8", "surrogateescape")


def blob_column(value: object, what: str) -> bytes:
    """``value`` read from a BLOB column; raises ProofError [bad_proof] naming ``what`` and the
    type SQLite gave when the column was tampered into another (TEXT, a number, NULL)."""
    if type(value) is not bytes:
        raise ProofError(f"{what} is stored as {sqlite_type(value)}, not as a BLOB")
    return value


def sqlite_type(value: object) -> str:
    """The SQLite storage class of a value read from a column, as SQLite names it."""
    return {bytes: "BLOB", str: "TEXT", int: "INTEGER", float: "REAL"}.get(type(value), "NULL")


def filled_marks(conn: sqlite3.Connection) -> dict[str, int]:
    """Each ledger's filled mark: its records below it are in the hash index (a ledger not
    listed: none of them). Raises IndexMismatchError [index_mismatch] for a mark tampered into
    another type than an integer (TEXT, REAL, a BLOB), which says no size."""
    marks = {}
    for ledger, size in lenient_text(conn, "SELECT ledger, size FROM hashes_filled", ()):
        if type(size) is not int:
            raise IndexMismatchError(
                f"the hash index's filled mark of ledger {ledger!r} is stored as {sqlite_type(size)}, not as an integer"
            )
        marks[ledger] = size
    return marks


def tail_rows(conn: sqlite3.Connection, ledger: str, start: int) -> list[tuple[bytes, int]]:
    """(hash column, height) of ``ledger``'s rows from ``start`` on: from its filled mark on,
    the rows the hash index does not hold yet (fewer than store.HASH_FILL_AT and a group in all)."""
    rows = conn.execute("SELECT hash, height FROM records WHERE ledger = ? AND height >= ?", (ledger, start))
    return [(bytes(h), int(height)) for h, height in rows]


def indexed_hash(conn: sqlite3.Connection, record_hash: bytes) -> tuple[str, int, bytes] | None:
    """(ledger, height, bytes) of a record below its filled mark whose hash column is ``record_hash``."""
    return _found(conn, f"{_BY_RUN_HASH} LIMIT 1", (record_hash,))


def hash_at(conn: sqlite3.Connection, record_hash: bytes, ledger: str, height: int) -> tuple[str, int, bytes] | None:
    """(ledger, height, bytes) of the row at ``ledger`` and ``height`` if its hash column is ``record_hash``."""
    return _found(conn, _AT_HASH, (ledger, height, record_hash))


def _found(conn: sqlite3.Connection, query: str, params: tuple[object, ...]) -> tuple[str, int, bytes] | None:
    """(ledger, height, bytes) of the first row ``query`` selects, or None. Its data as read: of
    another type than bytes only in a store tampered with, which the caller checks by its type
    (a copy by ``bytes()`` raised a TypeError for TEXT, and made bytes of a number)."""
    row = conn.execute(query, params).fetchone()
    return None if row is None else (row[0], int(row[1]), row[2])


# --- the hash index: sorted runs, merged in bounded steps --------------------------------

MERGE_FANOUT = 8  # runs of one level merged into one run of the next
PREFIX_END = 1 << 64  # past the largest 8-byte prefix
MERGE_STEPS_MOST = 4  # steps one call of merge_hash_runs takes at most, however little each moved


class HashRun(NamedTuple):
    """A row of ``hash_runs``: a run of ``hash_rows``, sorted by prefix, ledger and height.

    ``into_run``: set on the sources of a merge in progress, the run their rows move into.
    ``cursor``: set on that run while it is built: its sources' rows with a prefix below it
    have moved into it (and are gone from the sources), so each row is in exactly one run.
    ``rows``: how many rows the run holds; for a source, as the merge found it.
    """

    run: int
    level: int
    rows: int
    into_run: int | None
    cursor: bytes | None


def hash_runs(conn: sqlite3.Connection) -> list[HashRun]:
    """Every run of the hash index, oldest first."""
    return [
        HashRun(int(run), int(level), int(rows), into, None if cursor is None else bytes(cursor))
        for run, level, rows, into, cursor in conn.execute(
            "SELECT run, level, rows, into_run, cursor FROM hash_runs ORDER BY run"
        )
    ]


def check_hash_runs(conn: sqlite3.Connection, path: Path) -> None:
    """Count each run's rows against ``hash_runs`` (a store's open check: one pass over the
    index in its order, no sort): see :func:`runs_disagree`. Raises IndexMismatchError for a row
    deleted or added behind the store's back; a changed row is `vledger verify`'s to find
    (tools/hash_index.py)."""
    counts = {int(run): int(n) for run, n in conn.execute("SELECT run, COUNT(*) FROM hash_rows GROUP BY run")}
    wrong = runs_disagree(counts, hash_runs(conn))
    if wrong is not None:
        raise IndexMismatchError(f"{path}: {wrong}")


def runs_disagree(counts: Mapping[int, int], runs: list[HashRun]) -> str | None:
    """What of ``hash_runs`` (``runs``) the rows of each run (``counts``, run -> rows, a run
    with none left out) contradict, or None: a plain run holds the rows it lists, a merge's
    target the rows moved into it and its sources the rest of what they held, and no row is
    in a run it does not list."""
    listed = {r.run for r in runs}
    stray = sorted(set(counts) - listed)
    if stray:
        return f"the hash index has {counts[stray[0]]} rows in run {stray[0]}, which hash_runs does not list"
    for r in runs:
        if r.into_run is not None:
            continue
        if counts.get(r.run, 0) != r.rows:
            return f"the hash index's run {r.run} holds {counts.get(r.run, 0)} rows, hash_runs says {r.rows}"
        if r.cursor is not None:
            sources = [s for s in runs if s.into_run == r.run]
            held, expected = sum(counts.get(s.run, 0) for s in sources), sum(s.rows for s in sources) - r.rows
            if held != expected:
                return (
                    f"the hash index's runs {', '.join(str(s.run) for s in sources)}, merging into run "
                    f"{r.run}, hold {held} rows, hash_runs says {expected}"
                )
    return None


def run_level(rows: int, fill_at: int) -> int:
    """The level a run of ``rows`` rows is given when it is not made by a merge (a store of an
    earlier layout, filled or copied at once): that of the runs merges make about its size."""
    level, size = 0, max(fill_at, 1) * MERGE_FANOUT
    while rows >= size:
        level, size = level + 1, size * MERGE_FANOUT
    return level


def _new_run(conn: sqlite3.Connection, level: int, rows: int) -> int:
    """Add a run to hash_runs and return its id: above every run's, so its rows go in at the
    right edge of hash_rows (a merge's target is above its sources: the largest id never falls)."""
    row = conn.execute("SELECT MAX(run) FROM hash_runs").fetchone()
    run = 0 if row[0] is None else int(row[0]) + 1
    conn.execute(_ADD_RUN, (run, level, rows))
    return run


def add_run(conn: sqlite3.Connection, hashes: list[tuple[bytes, str, int]], marks: Mapping[str, int]) -> None:
    """Write ``hashes`` ((hash, ledger, height), sorted by hash) as a new run of level 0 and
    set each ledger's filled mark in ``marks``, inside the caller's transaction: the rows are
    appended past every other run's, a few pages, whatever the index holds. Raises sqlite3.Error."""
    if hashes:
        run = _new_run(conn, 0, len(hashes))
        ledgers: dict[str, list[tuple[bytes, int]]] = {}
        for h, ledger, height in hashes:
            ledgers.setdefault(ledger, []).append((h, height))
        for ledger, rows in ledgers.items():
            prefixes = b"".join(h[:8] for h, _ in rows)
            conn.execute(_INSERT_RUN_ROWS, (run, prefixes, ledger, json.dumps([height for _, height in rows])))
    conn.executemany(_PUT_FILLED, marks.items())


def add_run_of_records(conn: sqlite3.Connection, ranges: Mapping[str, tuple[int, int]]) -> None:
    """:func:`add_run` of the records of each ledger's range of heights [mark, size) in
    ``ranges``, read from their rows (those of the caller's transaction included) and sorted by
    SQLite, and make each ``size`` its ledger's mark, inside the caller's transaction: a
    committer's fill without a tuple a record and their sort under the GIL (~0.5 us a record
    that the follower's thread, or the request loop's, waited for). Raises sqlite3.Error."""
    rows = sum(size - mark for mark, size in ranges.values())
    if rows:
        run = _new_run(conn, 0, rows)
        for ledger, (mark, size) in ranges.items():
            if size > mark:
                conn.execute(_FILL_RUN, (run, ledger, mark, size))
    conn.executemany(_PUT_FILLED, [(ledger, size) for ledger, (_, size) in ranges.items()])


def fill_run(conn: sqlite3.Connection, ranges: Mapping[str, tuple[int, int]], fill_at: int) -> None:
    """Write the records of each ledger's range of heights [mark, size) in ``ranges`` as one new
    run, read from their rows, and make each ``size`` its ledger's mark, inside the caller's
    transaction (a store whose index is behind, opened: once). Raises sqlite3.Error."""
    rows = sum(size - mark for mark, size in ranges.values())
    run = _new_run(conn, run_level(rows, fill_at), rows)
    for ledger, (mark, size) in ranges.items():
        conn.execute(_FILL_RUN, (run, ledger, mark, size))
    conn.executemany(_PUT_FILLED, [(ledger, size) for ledger, (_, size) in ranges.items()])


def adopt_record_hashes(conn: sqlite3.Connection, fill_at: int) -> bool:
    """Make the ``record_hashes`` table of a store from before the runs (sorted by prefix,
    ledger and height: already a run) the index's first run and drop it, inside the caller's
    transaction; False when the store has none. Raises sqlite3.Error."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'record_hashes'").fetchone() is None:
        return False
    rows = int(conn.execute("SELECT COUNT(*) FROM record_hashes").fetchone()[0])
    if rows:
        run = _new_run(conn, run_level(rows, fill_at), rows)
        conn.execute(
            "INSERT INTO hash_rows (run, prefix, ledger, height) "
            "SELECT ?, prefix, ledger, height FROM record_hashes ORDER BY prefix, ledger, height",
            (run,),
        )
    conn.execute("DROP TABLE record_hashes")
    return True


def merge_hash_runs(conn: sqlite3.Connection, budget: int) -> int | None:
    """Move about ``budget`` rows (more when a step's range holds more) of the merges in progress
    into their targets, the lowest level first, inside the caller's transaction; first start a
    merge of each level that has MERGE_FANOUT runs free (none merging there yet). A step moves
    the sources' rows of the next prefix range (its width from the rows the sources hold:
    prefixes are uniform), and the merge's last step makes its target a plain run and drops
    its sources. Returns the rows moved, or None when no merge is left to work on.
    Raises sqlite3.Error."""
    runs = _start_merges(conn, hash_runs(conn))
    targets = sorted((r for r in runs if r.cursor is not None), key=lambda r: (r.level, r.run))
    if not targets:
        return None
    moved = steps = 0
    for target in targets:
        sources = [r for r in runs if r.into_run == target.run]
        total = max(sum(r.rows for r in sources), 1)
        ids = ",".join(str(r.run) for r in sources)  # integers read from hash_runs, not outside text
        low, rows = int.from_bytes(target.cursor or b"", "big"), target.rows
        while moved < budget and steps < MERGE_STEPS_MOST:
            high = low + -(-PREFIX_END * (budget - moved) // total)
            bounds = ([" AND prefix >= ?"] if low else []) + ([" AND prefix < ?"] if high < PREFIX_END else [])
            where = f"run IN ({ids})" + "".join(bounds)
            params = [b.to_bytes(8, "big") for b, on in ((low, low), (high, high < PREFIX_END)) if on]
            conn.execute(
                "INSERT OR IGNORE INTO hash_rows (run, prefix, ledger, height) "
                f"SELECT ?, prefix, ledger, height FROM hash_rows WHERE {where} ORDER BY 2, 3, 4",
                (target.run, *params),
            )
            n = conn.execute(f"DELETE FROM hash_rows WHERE {where}", params).rowcount
            moved, steps, rows, low = moved + max(n, 1), steps + 1, rows + n, high
            if high >= PREFIX_END:
                conn.execute("UPDATE hash_runs SET rows = ?, cursor = NULL WHERE run = ?", (rows, target.run))
                conn.execute("DELETE FROM hash_runs WHERE into_run = ?", (target.run,))
                break
        else:
            conn.execute(
                "UPDATE hash_runs SET rows = ?, cursor = ? WHERE run = ?", (rows, low.to_bytes(8, "big"), target.run)
            )
            return moved
    return moved


def _start_merges(conn: sqlite3.Connection, runs: list[HashRun]) -> list[HashRun]:
    """Start a merge of each level with MERGE_FANOUT runs free and no merge from it under way:
    its oldest runs become the sources of a new, empty run of the next level. Returns the runs
    as they are now."""
    building = {r.level for r in runs if r.cursor is not None}
    free: dict[int, list[HashRun]] = {}
    for r in runs:
        if r.into_run is None and r.cursor is None and r.level + 1 not in building:
            free.setdefault(r.level, []).append(r)
    started = False
    for level, level_runs in sorted(free.items()):
        if len(level_runs) >= MERGE_FANOUT:
            target = _new_run(conn, level + 1, 0)
            conn.execute("UPDATE hash_runs SET cursor = ? WHERE run = ?", (bytes(8), target))
            sources = [r.run for r in level_runs[:MERGE_FANOUT]]
            conn.executemany("UPDATE hash_runs SET into_run = ? WHERE run = ?", [(target, r) for r in sources])
            started = True
    return hash_runs(conn) if started else runs


def tree_kept(conn: sqlite3.Connection) -> bool:
    """Whether the ``tree`` rows cover every record (False for a store from before the tree)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (TREE_KEPT[0],)).fetchone()
    return row is not None and row[0] == TREE_KEPT[1]


class StoredTree:
    """One ledger's Merkle tree read from the ``tree`` rows of ``conn``, as of ``size`` leaves.

    Every hash it reads is that of a complete subtree, which never changes once written, so
    a proof is right even while the committer appends; ``size`` is the newest size the caller
    knows to be durable.
    """

    def __init__(self, conn: sqlite3.Connection, ledger: str, size: int, page_size: int) -> None:
        self._conn = conn
        self.ledger = ledger
        self.size = size
        self._page_size = page_size

    def hash_at(self, level: int, index: int) -> bytes:
        """The hash of the complete subtree at (level, index); TreeMismatchError if it is missing.

        Below STORED_LEVEL it is rehashed from its (at most 8) records' stored bytes.
        """
        if level < STORED_LEVEL:
            start, n = index << level, 1 << level
            leaves = [tree.leaf_hash(data) for _, data in iter_pages(self._conn, self.ledger, start, start + n, n)]
            if len(leaves) != n:
                raise TreeMismatchError(
                    f"ledger {self.ledger!r}: the store lacks records of the subtree at level {level}, index {index}"
                )
            frontier = tree.Frontier()
            for leaf in leaves:
                frontier.append(leaf)
            return frontier.root()
        row = self._conn.execute(
            "SELECT hash FROM tree WHERE ledger = ? AND level = ? AND idx = ?", (self.ledger, level, index)
        ).fetchone()
        if row is None:
            raise TreeMismatchError(
                f"ledger {self.ledger!r}: the store's tree has no node at level {level}, index {index}"
            )
        return bytes(row[0])

    def _size(self, size: int | None, what: str = "tree size") -> int:
        if size is None:
            return self.size
        if not 0 <= size <= self.size:
            raise TreeSizeError(f"ledger {self.ledger!r}: {what} {size} is not in 0..{self.size}")
        return size

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (default: all); raises TreeSizeError past the tree."""
        return tree.root_at(self._size(size), self.hash_at)

    def leaf(self, index: int) -> bytes:
        """The leaf hash of record ``index``; raises TreeSizeError past the tree."""
        if not 0 <= index < self.size:
            raise TreeSizeError(f"ledger {self.ledger!r}: leaf {index} is not in 0..{self.size - 1}")
        return self.hash_at(0, index)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """The proof of leaf ``index`` in the tree of ``size`` leaves (raises TreeSizeError, ProofError)."""
        return tree.inclusion_proof(index, self._size(size), self.hash_at)

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """The proof that the tree of ``new`` leaves extends that of ``old`` (TreeSizeError, ProofError)."""
        return tree.consistency_proof(self._size(old, "old size"), self._size(new, "new size"), self.hash_at)

    def tile(self, level: int, index: int, width: int | None = None) -> bytes:
        """The hashes of tlog-tiles tile (level, index): ``width`` of them, or as many as the tree
        holds now (256 for a full tile). Raises TreeSizeError when the tree has fewer."""
        available = tree.tile_width(level, index, self.size)
        want = available if width is None else width
        if available == 0 or not 1 <= want <= available:
            raise TreeSizeError(
                f"ledger {self.ledger!r}: a tree of {self.size} leaves has no tile {level}/{index} of width {want}"
            )
        first = index * tree.TILE_WIDTH
        if level == 0:  # leaves are not kept: one read of up to 256 records, not one per leaf
            leaves = [
                tree.leaf_hash(data)
                for _, data in iter_pages(self._conn, self.ledger, first, first + want, self._page_size)
            ]
            if len(leaves) != want:
                raise TreeMismatchError(f"ledger {self.ledger!r}: the store lacks records of tile 0/{index}")
            return b"".join(leaves)
        # Tile levels from 1 on are tree levels of 8 and more, all kept (STORED_LEVEL): one range
        # read, not one per hash, since a tile's hashes are consecutive rows of one tree level.
        rows = self._conn.execute(
            "SELECT idx, hash FROM tree WHERE ledger = ? AND level = ? AND idx >= ? AND idx < ? ORDER BY idx",
            (self.ledger, tree.TILE_HEIGHT * level, first, first + want),
        ).fetchall()
        if [row[0] for row in rows] != list(range(first, first + want)):
            raise TreeMismatchError(f"ledger {self.ledger!r}: the store's tree lacks nodes of tile {level}/{index}")
        return b"".join(bytes(row[1]) for row in rows)


def level_rows(conn: sqlite3.Connection, ledger: str, level: int, page_size: int) -> Iterator[tuple[int, bytes]]:
    """(idx, hash) of one level of a ledger's tree rows in index order, a page at a time."""
    start = 0
    while True:
        rows = lenient_text(
            conn,
            "SELECT idx, hash FROM tree WHERE ledger = ? AND level = ? AND idx >= ? ORDER BY idx LIMIT ?",
            (ledger, level, start, page_size),
        )
        if not rows:
            return
        yield from rows
        start = rows[-1][0] + 1


def check_tree(conn: sqlite3.Connection, path: Path, ledger: str, page_size: int) -> tuple[tree.Frontier, int]:
    """Recompute a ledger's tree from every record's stored bytes and compare it, row by row,
    with the stored tree: every stored node must be there with the recomputed hash, no other
    node may be, and the stored edge must be the recomputed frontier at its size (which covers
    the records below it that no stored node does), a size the records reach and whose records
    past it complete no stored subtree (the edge is written with the rows of each one).

    Returns the frontier of all the records and the edge's size (the records from it on are
    covered by no tree hash: ChainStore checks them as it checks the head); raises
    TreeMismatchError at the first disagreement (a changed record, a changed, missing or extra
    tree row, a changed edge, records cut off below the edge), and never writes. A record whose
    data, hash, author or request id column is of another type raises TypeError (its data is
    not bytes, see CHECKED_RECORD_PAGE), or OperationalError for data that is TEXT and not UTF-8
    (a NodeConnection's read): the caller names the cell (records_type_error).
    """
    row = conn.execute("SELECT frontier FROM tree_edge WHERE ledger = ?", (ledger,)).fetchone()
    try:
        edge = None if row is None else tree.Frontier.decode(bytes(row[0]))
    except ProofError as e:
        raise TreeMismatchError(f"{path}: ledger {ledger!r}: the stored tree's right edge: {e.message}") from e
    frontier = tree.Frontier()
    levels: dict[int, Iterator[tuple[int, bytes]]] = {}
    # The records up to the edge's size, its hashes compared there, then those past it.
    for start, stop in ((0, edge.size), (edge.size, None)) if edge is not None else ((0, None),):
        for height, data in iter_checked_pages(conn, ledger, start, stop, page_size):
            for level, index, node in frontier.append(tree.leaf_hash(data)):
                if level < STORED_LEVEL:
                    continue
                rows = levels.get(level)
                if rows is None:
                    rows = levels[level] = level_rows(conn, ledger, level, page_size)
                row = next(rows, None)
                if row is None or row[0] != index:
                    raise TreeMismatchError(
                        f"{path}: ledger {ledger!r}: the stored tree lacks its node at level {level}, index {index}"
                        f" (leaf {height})"
                    )
                if row[1] != node:
                    what = f"record {height}'s bytes" if level == 0 else f"the records up to {height}"
                    raise TreeMismatchError(
                        f"{path}: ledger {ledger!r}: the stored tree's node at level {level}, index {index} "
                        f"does not match {what}"
                    )
        if edge is not None and stop == edge.size:
            if frontier.size < edge.size:
                raise TreeMismatchError(
                    f"{path}: ledger {ledger!r}: the stored tree's right edge covers {edge.size} records, "
                    f"the ledger has {frontier.size}"
                )
            if frontier.hashes != edge.hashes:
                raise TreeMismatchError(
                    f"{path}: ledger {ledger!r}: the stored tree's right edge does not match the records "
                    f"(its last {edge.size % (1 << STORED_LEVEL) or 1 << STORED_LEVEL} at least)"
                )
    for level, rows in levels.items():
        extra = next(rows, None)
        if extra is not None:
            raise TreeMismatchError(
                f"{path}: ledger {ledger!r}: the stored tree has a node at level {level}, index {extra[0]} "
                f"past its {frontier.size} records"
            )
    above = conn.execute(
        "SELECT level, idx FROM tree WHERE ledger = ? AND (level < ? OR level >= ?) LIMIT 1",
        (ledger, STORED_LEVEL, STORED_LEVEL + len(levels)),
    ).fetchone()
    if above is not None:
        raise TreeMismatchError(
            f"{path}: ledger {ledger!r}: the stored tree has a node at level {above[0]}, index {above[1]} "
            f"past its {frontier.size} records"
        )
    if edge is None:
        raise TreeMismatchError(f"{path}: ledger {ledger!r}: the stored tree has no right edge")
    if not edge_covers(edge.size, frontier.size):
        raise TreeMismatchError(
            f"{path}: ledger {ledger!r}: the stored tree's right edge covers {edge.size} records, "
            f"yet the records past it, up to {frontier.size}, complete a stored subtree"
        )
    return frontier, edge.size


def edge_covers(edge: int, records: int) -> bool:
    """Whether a stored edge of size ``edge`` is one a node leaves below ``records`` records: it
    writes the edge in each commit that starts the ledger or completes a stored subtree, so the
    records past the edge complete none (at most 2**STORED_LEVEL - 1 of them)."""
    return edge <= records and edge >> STORED_LEVEL == records >> STORED_LEVEL


def build_tree(conn: sqlite3.Connection, ledger: str, page_size: int) -> tree.Frontier:
    """Write a ledger's tree rows from its records' stored bytes (inside the caller's transaction);
    raises as :func:`check_tree` for a record column of another type."""
    frontier = tree.Frontier()
    batch: list[tuple[str, int, int, bytes]] = []
    for _, data in iter_checked_pages(conn, ledger, 0, None, page_size):
        batch.extend(
            (ledger, level, index, node)
            for level, index, node in frontier.append(tree.leaf_hash(data))
            if level >= STORED_LEVEL
        )
        if len(batch) >= page_size:
            conn.executemany(INSERT_TREE, batch)
            batch.clear()
    conn.executemany(INSERT_TREE, batch)
    conn.execute(PUT_EDGE, (ledger, frontier.encode()))
    return frontier
