"""ChainStore: a node's durable, verified store of ledgers, with group commit.

Appends from any number of threads go to one queue; a group commit checks each one
against the ledger's head, writes the whole group in one SQLite transaction and fsyncs once
(WAL, ``synchronous=FULL``). An append returns only after its group is durable, so a
record that was acknowledged survives ``kill -9`` and power loss; many writers share one
fsync, so durability does not cost throughput.

Groups are committed by the store's committer thread, or by a caller that queued appends
with ``wake=False`` and then calls :meth:`ChainStore.flush` (the ingest node's request loop,
after each batch of requests it read): a lone writer's put then costs no thread hand-off
on its way to the disk and back. One lock makes every group commit exclusive, and groups
are taken from the queue under it, so appends are placed in the order they were queued.

Nothing unverified is written: a client's entry must meet its ledger's rules, and a
placed record (from a replica feed or an import) must extend the head exactly.

Each ledger is also a Merkle tree (docs/PROTOCOL.md section 12): the committer appends each
record's leaf to the ledger's frontier and writes the subtrees it completes in the records'
own transaction, so the tree is exactly as durable as the records. Opening a store checks
the whole stored tree against the records' bytes (or builds it, for a store from before it).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from ..config.settings import PROTOCOL_LIMITS, Limits, StoreSettings
from .blobs import BlobStore
from .checkpoint_log import COSIGNED, EVIDENCE, SIGNED, CheckpointLog, HandedRow
from .errors import (
    BadGenesisError,
    BadLinkError,
    DiskFullError,
    HeightGapError,
    LedgerExistsError,
    NoSuchLedgerError,
    PayloadTooLargeError,
    RecordConflictError,
    RequestConflictError,
    StoreClosedError,
    StoreDamagedError,
    StoreError,
    TreeMismatchError,
    VledgerError,
)
from .ledger import LedgerRules
from .record import GENESIS_KIND, ZERO_LINK, Entry, Record, check_node_name, decode_record
from .rules.admin import ADMIN_LEDGER
from .store_cut import Cut, cut_back, find_cut
from .storefile import (
    DB_NAME,
    INSERT_TREE,
    MAX_HEIGHT,
    PUT_EDGE,
    SCHEMA,
    SCHEMA_VERSION,
    STORED_LEVEL,
    TREE_KEPT,
    TYPED_APART,
    StoredTree,
    add_run_of_records,
    adopt_record_hashes,
    build_tree,
    check_column_types,
    check_hash_runs,
    check_tree,
    connect,
    damaged_file,
    disk_full,
    fill_run,
    filled_marks,
    hash_at,
    indexed_hash,
    iter_blob_pages,
    iter_pages,
    merge_hash_runs,
    not_blob_message,
    records_type_error,
    tail_rows,
    tree_kept,
)
from .tree import Frontier, leaf_hash
from .verify import ChainVerifier, verify_entry, verify_hashed_entry
from .wal_checkpoint import BACKSTOP_PAGES, WalCheckpointer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SetAside:
    """Records of ``ledger`` from ``kept`` on (``count`` of them) moved out of a store into ``path``."""

    ledger: str
    kept: int
    count: int
    path: Path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file ``path``, 0600, synced with its directory (its records are
    the only copy once the store lets them go). Raises OSError (FileExistsError: it exists)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


READ_CACHE_SECONDS = 1.0  # a read connection's page cache is dropped this often (see _reader)
# The most flush() waits for a signed checkpoint row that holds the commit lock (it takes
# microseconds; past this the lock has moved on to a group commit, which is the committer's).
BRIEF_WAIT_SECONDS = 0.002
# Records written since the hash index was last filled, all ledgers together, from which the
# group commit that brings them there writes them as a new run (storefile's docstring): a lookup
# by hash reads fewer rows than this (and a group) past the index. A run is the hashes the
# committer holds in memory, sorted: a few pages appended at the index's right edge, where
# filling one sorted table wrote a page at a random place for nearly each record (~11 us a put
# at 4b) and a larger fill stalled every commit behind it (8,192 at a time put replication lag's
# p99 at 48-92 ms).
HASH_FILL_AT = 1024


def fill_phase(name: str, fill_at: int = HASH_FILL_AT) -> int:
    """How many records before ``fill_at`` the store of node ``name`` fills its hash index
    first (then every ``fill_at``): stable per node, spread over half a fill. Every copy of a
    ledger counts the same heights, so without it the home and each replica on one host filled
    in the same group commit, each stalling its commits behind the others' for the same
    milliseconds (replication lag's p99)."""
    return zlib.crc32(name.encode()) % max(1, fill_at // 2)


# The runs are merged in steps inside the group commits (storefile.merge_hash_runs): each record
# written gives this many rows of merging to do, done once they reach MERGE_STEP_LEAST (a step's
# fixed cost, a seek a source run, is then small beside its rows) and at most MERGE_CREDIT_MOST
# in one group. A record is moved once for each level it climbs (twice by 200k records, three
# times by 1.5M), so the merges keep up, lowest level first, for any store below 1024 * 8**6.
MERGE_ROWS_PER_RECORD = 6
MERGE_STEP_LEAST = 256
MERGE_CREDIT_MOST = 8192

# Without statistics SQLite would rather scan the ledger's primary key than use this index.
_BY_REQUEST = "INDEXED BY records_by_request WHERE ledger = ? AND author = ? AND request_id = ?"
_NEWEST_REQUEST = "SELECT MAX(request_id) FROM records INDEXED BY records_by_request WHERE ledger = ? AND author = ?"
NEWEST_REQUESTS_KEPT = 4_096  # authors whose newest request id a home remembers (under 1 MB)
_BY_REQUESTS = (
    "SELECT data FROM records INDEXED BY records_by_request "
    "WHERE ledger = ? AND author = ? AND request_id IN (SELECT value FROM json_each(?))"
)


_INSERT_RECORD = "INSERT INTO records (ledger, height, hash, author, request_id, data) VALUES (?, ?, ?, ?, ?, ?)"
# A group's rows in one statement (see _insert_records): its hashes and its records' bytes each
# one blob, and a JSON list of each row's ledger, height, author, request id and bytes' place.
_INSERT_RECORDS = (
    "INSERT INTO records (ledger, height, hash, author, request_id, data) "
    "SELECT json_extract(row.value, '$[0]'), json_extract(row.value, '$[1]'), substr(?1, row.key * 32 + 1, 32), "
    "json_extract(row.value, '$[2]'), json_extract(row.value, '$[3]'), "
    "substr(?2, json_extract(row.value, '$[4]'), json_extract(row.value, '$[5]')) "
    "FROM json_each(?3) AS row"
)
# A group's tree rows in one statement likewise: their hashes one blob, the rest a JSON list.
_INSERT_TREE_ROWS = (
    "INSERT INTO tree (ledger, level, idx, hash) "
    "SELECT json_extract(row.value, '$[0]'), json_extract(row.value, '$[1]'), json_extract(row.value, '$[2]'), "
    "substr(?1, row.key * 32 + 1, 32) FROM json_each(?2) AS row"
)
ONE_STATEMENT_MIN = 32  # rows of a group from which they go in with one statement
ONE_STATEMENT_BYTES = 1 << 24  # record bytes a statement takes at most (SQLite's blobs end at 1 GB)


def _insert_records(conn: sqlite3.Connection, records: Sequence[Record], encoded: Sequence[bytes]) -> None:
    """INSERT a row of ``records`` for each record, its bytes in ``encoded``. Raises sqlite3.Error.

    From ONE_STATEMENT_MIN records on (a catch-up page, a round of pipelined puts) they go in
    with one statement per ONE_STATEMENT_BYTES of record bytes, their values packed into three
    parameters that SQLite unpacks itself: executemany binds each row in Python and releases the
    GIL around each row's step, and with another thread busy (the follower's, the request
    loop's) the committer then waited up to the interpreter's switch interval to take it back,
    a row at a time. One statement runs its rows without the GIL, and costs less CPU (3.4 against
    6 us a row in memory). Every value is a JSON string (UTF-8, escaped only where JSON must;
    SQLite gives it back the same) or an integer within SQLite's. Text holding a NUL, which
    SQLite's JSON would cut there (node/record.py's patterns allow none), goes row by row.
    """
    if len(records) < ONE_STATEMENT_MIN:
        _insert_each(conn, records, encoded)
        return
    begin, count = 0, len(records)
    while begin < count:
        rows: list[tuple[str, int, str, str, int, int]] = []
        place = 1  # where the record's bytes start in the blob (SQLite's substr counts from 1)
        end = begin
        while end < count and (end == begin or place + len(encoded[end]) <= ONE_STATEMENT_BYTES):
            content, size = records[end].content, len(encoded[end])
            rows.append((content.ledger, records[end].height, content.author, content.request_id, place, size))
            place += size
            end += 1
        hashes = b"".join([record.link for record in records[begin:end]])
        text = json.dumps(rows, separators=(",", ":"), ensure_ascii=False)
        if len(hashes) != 32 * (end - begin) or "\\u0000" in text:  # each hash is found by its place
            _insert_each(conn, records[begin:end], encoded[begin:end])
        else:
            conn.execute(_INSERT_RECORDS, (hashes, b"".join(encoded[begin:end]), text))
        begin = end


def _record_row(record: Record, data: bytes) -> tuple[str, int, bytes, str, str, bytes]:
    """The values of _INSERT_RECORD for ``record``, whose bytes are ``data``."""
    return (record.content.ledger, record.height, record.link, record.content.author, record.content.request_id, data)


def _insert_each(conn: sqlite3.Connection, records: Sequence[Record], encoded: Sequence[bytes]) -> None:
    """INSERT a row of ``records`` for each record, one statement a row (see _insert_records)."""
    conn.executemany(_INSERT_RECORD, [_record_row(r, data) for r, data in zip(records, encoded, strict=True)])


def _insert_tree_rows(conn: sqlite3.Connection, rows: Sequence[tuple[str, int, int, bytes]]) -> None:
    """INSERT ``rows`` (ledger, level, index, hash) into ``tree``, from ONE_STATEMENT_MIN rows on
    with one statement, as :func:`_insert_records` does and for the same reason (a catch-up page
    of 1,000 records completes some 125 subtrees). Raises sqlite3.Error."""
    if len(rows) >= ONE_STATEMENT_MIN:
        hashes = b"".join([row[3] for row in rows])
        places = json.dumps([row[:3] for row in rows], separators=(",", ":"), ensure_ascii=False)
        if len(hashes) == 32 * len(rows) and "\\u0000" not in places:  # each hash is found by its place
            conn.execute(_INSERT_TREE_ROWS, (hashes, places))
            return
    conn.executemany(INSERT_TREE, rows)


@dataclass(frozen=True, slots=True)
class Receipt:
    """What an append answers: where the record stands and its hash (= its link)."""

    ledger: str
    height: int
    hash: bytes
    checksum: bytes
    duplicate: bool = False
    values: dict[str, Any] = field(default_factory=dict)  # what the ledger's rules derive

    @classmethod
    def of(cls, record: Record, duplicate: bool = False, values: dict[str, Any] | None = None) -> Receipt:
        # One per append, built on the committer: the slots set through their descriptors,
        # as record.new_record does, cost a third of the frozen dataclass's __init__.
        set_ledger, set_height, set_hash, set_checksum, set_duplicate, set_values = _RECEIPT_SLOTS
        receipt: Receipt = object.__new__(cls)
        set_ledger(receipt, record.content.ledger)
        set_height(receipt, record.height)
        set_hash(receipt, record.link)
        set_checksum(receipt, record.checksum)
        set_duplicate(receipt, duplicate)
        set_values(receipt, values or {})
        return receipt


_RECEIPT_SLOTS = tuple(Receipt.__dict__[f.name].__set__ for f in fields(Receipt))


@dataclass(frozen=True, slots=True)
class GrownTree:
    """A verified run's Merkle tree as its caller grew it (see :meth:`ChainStore.submit_records`):
    the ledger's frontier once the run is stored, and the subtrees the run completes that a
    store keeps, as :func:`grow_kept` gives them."""

    frontier: Frontier
    rows: list[tuple[int, int, bytes]]  # (level, index, hash)


def grow_kept(frontier: Frontier, leaves: Sequence[bytes]) -> list[tuple[int, int, bytes]]:
    """Grow ``frontier`` by ``leaves`` (in place); the subtrees they complete that a store
    keeps in its ``tree`` table. Raises ProofError as Frontier.grow does."""
    return frontier.grow(leaves, STORED_LEVEL)


KEPT_LEAVES = 1 << STORED_LEVEL  # the leaves of the smallest subtree a store keeps


def grow_kept_by(
    frontier: Frontier, leaves: Sequence[bytes], subtrees: Mapping[int, bytes]
) -> list[tuple[int, int, bytes]]:
    """What :func:`grow_kept` gives and does to ``frontier``, with ``subtrees``: the hashes of
    some complete subtrees of KEPT_LEAVES leaves by their index (the smallest a store keeps),
    each taken for its leaves when they lie among ``leaves`` (one hash for its 16 leaves' 15).

    The caller vouches for them as for ``leaves``: a follower whose page checker hashed both
    compares the root with a signed checkpoint's, to which each subtree taken is an input."""
    if not subtrees:
        return grow_kept(frontier, leaves)
    kept: list[tuple[int, int, bytes]] = []
    done, count = 0, len(leaves)
    while done < count:
        size = frontier.size
        step = -size % KEPT_LEAVES  # the leaves up to the next subtree's start
        if not step:
            first = size // KEPT_LEAVES
            nodes: list[bytes] = []
            while done + KEPT_LEAVES * (len(nodes) + 1) <= count and (node := subtrees.get(first + len(nodes))):
                nodes.append(node)
            if nodes:
                kept.extend(frontier.grow_level(nodes, STORED_LEVEL))
                done += KEPT_LEAVES * len(nodes)
                continue
            step = KEPT_LEAVES  # not given: its leaves
        kept.extend(frontier.grow(leaves[done : done + step], STORED_LEVEL))
        done += step
    return kept


class DomainRules(Protocol):
    """The ledgers' domain rules (votes, funds, ...), run on every entry before it is placed.

    The store keeps them in step with what is durable: a ledger's state is rebuilt from the
    chain before its first check, and forgotten when a group commit fails.
    """

    def check_and_apply(self, record: Record, rules: LedgerRules) -> dict[str, Any]: ...

    def values_of(self, record: Record, rules: LedgerRules) -> dict[str, Any]: ...

    def replay(self, records: Iterable[Record]) -> Sequence[object]: ...

    def forget(self, ledger: str) -> None: ...


@dataclass(slots=True)
class CommitStats:
    """How appends were grouped: ``appends / groups`` is the mean group size."""

    groups: int = 0
    appends: int = 0

    @property
    def mean_group(self) -> float:
        return self.appends / self.groups if self.groups else 0.0


@dataclass(slots=True)
class _Head:
    """What the committer needs to place the next record: no read of the database."""

    height: int
    link: bytes
    accepted: int
    rules: LedgerRules


@dataclass(slots=True)
class _Job:
    """Appends waiting for a group commit: an entry to place, entries each placed on its own,
    or a run of placed records.

    ``entries``: the future gets each entry's receipt or error, in order (see
    :meth:`ChainStore.submit_entries`).
    ``many``: the future gets the run's list of receipts, else the one record's receipt.
    ``verified``: the caller checked each record already (see :meth:`ChainStore.submit_records`).
    ``given``: each record's exact bytes and leaf hash, from the caller (None: worked out here).
    ``grown``: the run's tree, grown by the caller (None: grown here).
    """

    entry: Entry | None
    records: Sequence[Record]
    future: Future[Any]
    many: bool = False
    verified: bool = False
    given: Sequence[tuple[bytes, bytes]] | None = None
    entries: Sequence[Entry] = ()
    grown: GrownTree | None = None
    receipts: bool = True  # False: a run taken whole on its head answers [] (see submit_records)
    hashed: bool = False  # entries whose checksums the node computed from their bytes (see submit_entries)
    early: bool = False  # queued by flush's own caller (wake=False): answered before the bookkeeping

    @property
    def size(self) -> int:
        """How many appends the job counts for in a group (a run of records counts once)."""
        return len(self.entries) or 1


def _extends(record: Record, head: _Head) -> LedgerRules:
    """What is left to check of a record its caller verified as the chain's next (with a
    ChainVerifier of its own, from what it read of this store): that it stands right on
    ``head``. Raises as ChainVerifier.check does; returns the ledger's rules."""
    ledger, height = record.ledger, record.height
    if height != head.height + 1:
        raise HeightGapError(f"expected height {head.height + 1}, found {height}", ledger=ledger, height=height)
    if record.content.kind == GENESIS_KIND:
        raise BadGenesisError("a genesis record may only stand at height 0", ledger=ledger, height=height)
    if record.prev != head.link:
        raise BadLinkError(
            f"prev {record.prev.hex()} is not the link of height {head.height} ({head.link.hex()})",
            ledger=ledger,
            height=height,
        )
    return head.rules


def _stands_on(records: Sequence[Record], heads: Mapping[str, _Head]) -> bool:
    """Whether a verified run of one ledger is, record after record, what _extends lets
    through from its head: then it is taken whole without a trial head per record. False
    sends it the record-by-record way, which names whatever is wrong."""
    first = records[0]
    ledger = first.ledger
    head = heads.get(ledger)
    if head is None or first.height != head.height + 1:
        return False  # a new ledger, duplicates or a gap
    height, link = head.height, head.link
    for record in records:
        if (
            record.height != height + 1
            or record.prev != link
            or record.content.ledger != ledger
            or record.content.kind == GENESIS_KIND
        ):
            return False
        height, link = record.height, record.link
    return True


def _take_standing(records: Sequence[Record], heads: dict[str, _Head], receipts: bool = True) -> list[Receipt]:
    """Take a run that :func:`_stands_on` its head whole: the head moves to its last record.
    Its receipts, or [] when the caller asked for none (see ChainStore.submit_records)."""
    last = records[-1]
    heads[last.ledger] = _Head(last.height, last.link, last.accepted, heads[last.ledger].rules)
    return [Receipt.of(record) for record in records] if receipts else []


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Staged(MutableMapping[tuple[str, int], Record]):
    """A group's records to write, by (ledger, height), in the order they were placed, each
    with its bytes and leaf hash when its caller gave them (else None: worked out at COMMIT).

    A verified run that stands on its head (a follower's catch-up page) is kept as one piece,
    not a dict entry a record: the committer spent ~4 us a row keying, pairing and re-listing
    the run's records, for lookups that only a duplicate in the same group makes.
    """

    def __init__(self) -> None:
        self._one: dict[tuple[str, int], Record] = {}
        self._runs: list[tuple[str, int, Sequence[Record]]] = []  # ledger, first height, records
        self.records: list[Record] = []  # in the order placed
        self.data: list[bytes | None] = []  # each record's bytes, if given
        self.leaves: list[bytes | None] = []  # each record's leaf hash, if given
        # The runs' trees as their callers grew them, in order, while every record staged
        # came in such a run; None once one did not.
        self.grown: list[tuple[str, int, GrownTree]] | None = []  # ledger, the run's length, tree

    def add(self, record: Record, given: tuple[bytes, bytes] | None = None) -> None:
        """Stage ``record`` (and its bytes and leaf hash, if given)."""
        self._one[(record.content.ledger, record.height)] = record
        self.records.append(record)
        self.grown = None
        self.data.append(given[0] if given is not None else None)
        self.leaves.append(given[1] if given is not None else None)

    def add_run(
        self, records: Sequence[Record], given: Sequence[tuple[bytes, bytes]], grown: GrownTree | None = None
    ) -> None:
        """Stage a run of one ledger's consecutive heights with their bytes and leaf hashes,
        and its tree if its caller grew it."""
        first = records[0]
        self._runs.append((first.content.ledger, first.height, records))
        if self.grown is not None:
            self.grown = None if grown is None else [*self.grown, (first.content.ledger, len(records), grown)]
        self.records.extend(records)
        self.data.extend([pair[0] for pair in given])
        self.leaves.extend([pair[1] for pair in given])

    def __getitem__(self, key: tuple[str, int]) -> Record:
        record = self._one.get(key)
        if record is not None:
            return record
        ledger, height = key
        for run_ledger, first, records in self._runs:
            if run_ledger == ledger and first <= height < first + len(records):
                return records[height - first]
        raise KeyError(key)

    def __setitem__(self, key: tuple[str, int], record: Record) -> None:
        if key != (record.content.ledger, record.height):
            raise KeyError(key)
        self.add(record)

    def __delitem__(self, key: tuple[str, int]) -> None:
        raise TypeError("a staged record stays staged: a failed group drops them all")

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return ((record.content.ledger, record.height) for record in self.records)

    def __len__(self) -> int:
        return len(self.records)


class _Requests:
    """The records of a group's request ids: those already stored, and those placed in this group.

    The stored ones are read with one query per ledger and author, the first time one of
    them is asked for: a query per entry cost the committer more than the rest of its append.
    None is read when every wanted id sorts after the author's newest stored one
    (``newest``, the store's NewestRequests): a client whose ids grow (broker.client's are
    time-ordered) costs its puts no query at all, which was a tenth of a lone put's work.
    """

    def __init__(self, conn: sqlite3.Connection, entries: Iterable[Entry], newest: NewestRequests) -> None:
        self._conn = conn
        self._newest = newest
        self._wanted: dict[tuple[str, str], list[str]] = {}
        for entry in entries:
            self._wanted.setdefault((entry.content.ledger, entry.content.author), []).append(entry.content.request_id)
        self._known: dict[tuple[str, str], dict[str, Record]] = {}

    def earlier(self, ledger: str, author: str, request_id: str) -> Record | None:
        known = self._known.get((ledger, author))
        if known is None:
            wanted = self._wanted[(ledger, author)]
            known = {}
            if min(wanted) <= self._newest.of(self._conn, ledger, author):
                if len(wanted) == 1:  # a lone writer's group: the plain lookup costs a third of json_each's
                    rows = self._conn.execute(f"SELECT data FROM records {_BY_REQUEST}", (ledger, author, wanted[0]))
                else:
                    rows = self._conn.execute(_BY_REQUESTS, (ledger, author, json.dumps(wanted)))
                for (data,) in rows:
                    record = decode_record(data, PROTOCOL_LIMITS)
                    known[record.content.request_id] = record
            self._known[(ledger, author)] = known
        return known.get(request_id)

    def placed(self, record: Record) -> None:
        """``record`` was placed in this group (after :meth:`earlier` found no record of its request)."""
        content = record.content  # not record.ledger: a property, a call
        self._known[(content.ledger, content.author)][content.request_id] = record


class NewestRequests:
    """The largest request id stored for a (ledger, author), for the authors a home saw lately.

    Exact, never a guess: an author's is read from the store (one seek of records_by_request)
    the first time it is asked for, and raised only by :meth:`committed`, with what a group
    commit made durable (every record stored goes through it, a follower's too). Ids compare
    as SQLite's BINARY collation does (UTF-8 bytes, which is code point order, as Python's
    ``str``). At most ``most`` authors are kept; past that the memory is dropped and read again.
    """

    def __init__(self, most: int = NEWEST_REQUESTS_KEPT) -> None:
        self._most = most
        self._newest: dict[tuple[str, str], str] = {}

    def of(self, conn: sqlite3.Connection, ledger: str, author: str) -> str:
        """The largest request id stored for ``ledger`` and ``author`` ("" if none). Raises sqlite3.Error."""
        newest = self._newest.get((ledger, author))
        if newest is None:
            row = conn.execute(_NEWEST_REQUEST, (ledger, author)).fetchone()
            newest = row[0] if row is not None and row[0] is not None else ""
            if len(self._newest) >= self._most:
                self._newest.clear()
            self._newest[(ledger, author)] = newest
        return newest

    def committed(self, records: Iterable[Record]) -> None:
        """``records`` are durable: raise the newest id of each author kept (others are read when asked)."""
        newest = self._newest
        if not newest:  # a replica's: it never places an entry, so it never asks
            return
        for record in records:
            content = record.content
            key = (content.ledger, content.author)
            kept = newest.get(key)
            if kept is not None and content.request_id > kept:
                newest[key] = content.request_id


class ChainStore:
    """The records of every ledger a node holds, in ``directory`` (plus a blob area)."""

    def __init__(
        self,
        directory: Path,
        *,
        origin: str | None = None,
        limits: Limits | None = None,
        settings: StoreSettings | None = None,
        clock: Callable[[], int] = _now_ms,
        domain: DomainRules | None = None,
        on_commit: Callable[[list[Record]], None] | None = None,
        keep_tree: bool = True,
        accepted_floor: Callable[[], int] | None = None,
        hash_fill_at: int | None = HASH_FILL_AT,
        hash_merge_step: int = MERGE_STEP_LEAST,
        hash_fill_phase: int = 0,
        cut_back: bool = False,
    ) -> None:
        """Open (or create) the store in ``directory`` and check it; see :meth:`_load_heads`
        and :meth:`_load_trees` for what is checked and raised.

        ``keep_tree=False`` is only for the benchmark that weighs the tree's cost: the store
        then keeps no Merkle tree, serves no proofs, and builds the tree anew when a store
        that keeps it next opens this directory.

        ``hash_fill_at``: the records written since the hash index was last filled from which
        a run is added to it (HASH_FILL_AT), ``hash_merge_step`` the fewest rows a merge step
        moves (MERGE_STEP_LEAST); tests make both small. ``hash_fill_phase`` (below
        ``hash_fill_at``): the first fill after opening comes that many records early
        (:func:`fill_phase`; a node's store takes its name's). ``hash_fill_at=None`` is only for the
        benchmark's store builder, which fills the index itself once the rows are in: the store
        then neither fills nor merges it nor keeps the hashes above it, and a lookup by hash
        raises StoreError. Opening converts a store of an earlier layout (see
        :meth:`_open_hash_index`).

        ``cut_back`` (a follower's store: a replica's, an observer's): a ledger whose file lost
        records behind the store's back, its last ones or a hole, is cut back to those it
        holds whole from its genesis before the checks (node/store_cut.py), and listed in
        :attr:`cuts`; the checks then read what is left. Without it such a file fails them.

        Accepted times and the admin ledger (docs/PROTOCOL.md 16.2): an admin record placed
        here is accepted no earlier than any record this store placed before it, and every
        record placed after it at least a millisecond later, so a record's ``accepted`` time
        says which admin records came before it. ``accepted_floor`` gives the same floor on
        a node that does not home the admin ledger (the last admin record it applied, plus 1).
        """
        self.directory = directory
        self.keep_tree = keep_tree
        self.hash_fill_at = hash_fill_at
        if hash_fill_at is not None and not 0 <= hash_fill_phase < hash_fill_at:
            raise ValueError(f"the fill phase must be below the fill size {hash_fill_at}, not {hash_fill_phase}")
        # The tail's size at which the next group commit fills: early by the phase once, then every hash_fill_at.
        self._fill_due = (hash_fill_at or 0) - hash_fill_phase
        self.hash_merge_step = hash_merge_step
        self._merge_credit = 0  # rows of merging owed (see MERGE_ROWS_PER_RECORD)
        # Called by the committer with each group's new records, in order, once they are
        # durable (and before their appends' futures are done, except in flush()): it must be
        # quick and not raise.
        self.on_commit = on_commit
        # True while on_commit runs for a group whose appends were all answered before it (a
        # round committed by flush on its caller's thread, the request loop's lone put) and with
        # nothing queued behind it: work done there then delays no answer, nor a group that
        # waits for the writer lock it holds. Only the committing thread reads it, within on_commit.
        self.answered = False
        # Called once, with the StoreDamagedError, the first time a read or write of a running
        # store finds its file damaged (see :meth:`damaged`): the node raises its alert and stops.
        self.on_damaged: Callable[[StoreDamagedError], None] | None = None
        self._damaged: StoreDamagedError | None = None
        self._full = False  # the last commit found the disk full (logged once: full_disk)
        # Called on the committer's thread, after the appends are answered, each time a group
        # commit found the disk full (the error; the first height of each ledger it would have
        # written), and once with (None, {}) when a commit succeeds after that: a home raises and
        # resolves its disk_full alert (PROTOCOL 10.5). Must not raise.
        self.on_full: Callable[[DiskFullError | None, Mapping[str, int]], None] | None = None
        self.limits = limits or Limits()
        self.settings = settings or StoreSettings()
        self.origin = check_node_name(origin, self.limits) if origin is not None else None
        self._clock = clock
        self._domain = domain
        self._domain_ready: set[str] = set()
        self._accepted_floor = accepted_floor
        self._latest_accepted = 0  # the largest accepted time of any record held
        self._after_admin = 0  # the least accepted time of a record placed after the last admin record
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / DB_NAME
        self.blobs = BlobStore(directory / "blobs")
        self._write = connect(self.path, shared=True)
        # The log's checkpoints are a thread's (WalCheckpointer); the writer's own only a bound.
        self._write.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
        self._readers: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._lock = threading.Lock()
        self._heads: dict[str, _Head] = {}
        self._newest_requests = NewestRequests()  # only the committing thread touches it
        # Replaced per ledger (never changed in place) after each group commit: readers take one
        # and get a size and root that belong together.
        self._frontiers: dict[str, Frontier] = {}
        self._committing = threading.Lock()  # held by whichever thread commits a group
        self.stats = CommitStats()
        self._closed = False
        self.cuts: list[Cut] = []  # the ledgers cut back at open (``cut_back``)
        try:
            old_index = (
                "SELECT 1 FROM sqlite_master WHERE type = 'index' "
                "AND name IN ('records_by_hash', 'records_by_hash_prefix')"
            )
            if self._write.execute(old_index).fetchone() is not None:
                log.warning("%s: a store of an earlier version: its hash index is built anew, once", self.path)
            self._write.executescript(SCHEMA)
            self._write.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            # Every table's column types but the records', which the open's one scan of them checks.
            check_column_types(self._write, self.path, TYPED_APART)
            # The hashes of the records above the filled marks, by hash: (ledger, height). Kept
            # by the committer (replaced when it fills the index, else added to after each
            # commit, before its appends are answered), so a lookup by hash reads no rows past
            # the index. Fewer than hash_fill_at, rebuilt from the rows when opened.
            self._tail: dict[bytes, tuple[str, int]] = {}
            try:
                if cut_back:
                    self.cuts = self._cut_back_all()
                self._load_heads()
                self._filled = filled_marks(self._write)  # each ledger's, as committed
                # The trees' scan checks the records' cell types: before the hash index, whose
                # open may write (adopt hashes, fill a run) what a tampered cell would put there
                # in a store then refused and kept as evidence (reviewer r6 #6).
                self._load_trees()
                if hash_fill_at is not None:
                    self._open_hash_index(hash_fill_at)
            except (VledgerError, TypeError, ValueError, sqlite3.OperationalError) as e:
                # A records cell of another type fails one of these checks (its type is read as
                # the rows are, see _load_heads and storefile.CHECKED_RECORD_PAGE): say so.
                wrong = records_type_error(self._write, self.path)
                if wrong is not None:
                    raise wrong from e
                raise
            self._replay_domain()
            # Signed, cosigned, evidence (PROTOCOL 10.7); its rows are written between group commits.
            # Its signed rows go through the write connection (see CheckpointLog), under the same lock.
            self.checkpoints = CheckpointLog(self.path, writer=self._committing, shared=self._write)
            try:
                self.checkpoints.check_latest()
            except BaseException:
                self.checkpoints.close()
                raise
            self.checkpoints.found_damaged = self.found_damaged
        except BaseException:
            for conn in (self._write, *self._readers):
                conn.close()
            raise
        self._queue: collections.deque[_Job] = collections.deque()
        self._work = threading.Event()  # set when the committer has appends to look at, or must stop
        self._committer = threading.Thread(target=self._commit_loop, name=f"commit:{directory.name}", daemon=True)
        self._wal = WalCheckpointer(self.path)
        self._committer.start()

    # --- lifecycle ------------------------------------------------------------------

    def _open_hash_index(self, fill_at: int) -> None:
        """Bring the hash index up to this layout and to the records, in one transaction, and
        read the hashes above its marks into memory. A store from before the runs has its
        sorted ``record_hashes`` table made the first run (no sort: it is one); each run's rows
        are counted against ``hash_runs`` first (storefile.check_hash_runs: a row deleted or
        added raises IndexMismatchError, and the store does not open); a mark above its
        ledger's head (a chain cut short behind the store's back) comes down to it, and a
        ledger that is gone loses its mark, so the records written there next are indexed;
        and ``fill_at`` records or more above the marks (a store from before any index, or
        one filled less often) are written as one run from their rows. Raises sqlite3.Error,
        IndexMismatchError."""
        conn, heads = self._write, self._heads
        check_hash_runs(conn, self.path)
        marks = {
            ledger: min(size, heads[ledger].height + 1) for ledger, size in self._filled.items() if ledger in heads
        }
        above = {
            ledger: (marks.get(ledger, 0), head.height + 1)
            for ledger, head in heads.items()
            if head.height + 1 > marks.get(ledger, 0)
        }
        conn.execute("BEGIN IMMEDIATE")
        try:
            if adopt_record_hashes(conn, fill_at):
                log.warning("%s: a store of an earlier version: its hash index is converted to runs, once", self.path)
            conn.executemany(
                "DELETE FROM hashes_filled WHERE ledger = ?", [(x,) for x in self._filled if x not in heads]
            )
            conn.executemany(
                "UPDATE hashes_filled SET size = ? WHERE ledger = ?",
                [(size, ledger) for ledger, size in marks.items() if size != self._filled[ledger]],
            )
            if sum(size - mark for mark, size in above.values()) >= fill_at:
                fill_run(conn, above, fill_at)
                marks.update((ledger, size) for ledger, (_, size) in above.items())
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._filled = marks
        for ledger in heads:
            rows = tail_rows(conn, ledger, marks.get(ledger, 0))
            self._tail.update((h, (ledger, height)) for h, height in rows)

    def _load_heads(self) -> None:
        """Check each ledger's genesis, head and the record below it, so a damaged file fails at open.

        New records are placed on the head, so the head must be the record it claims to be.
        The rest of the chain is checked by a full verification (`vledger verify`). A ledger
        or height column of another type raises StoreError, as reading such a row's data
        raises (TypeError, OperationalError): __init__ then names the cell.
        """
        ledgers = [r[0] for r in self._write.execute("SELECT DISTINCT ledger FROM records")]
        for ledger in ledgers:
            if type(ledger) is not str:  # (the caller names the cell: records_type_error)
                raise StoreError(f"{self.path}: a record's ledger column is no name")
            head = self._check_head(ledger)
            self._latest_accepted = max(self._latest_accepted, head.accepted)
            if ledger == ADMIN_LEDGER:
                self._after_admin = head.accepted + 1

    def _cut_back_all(self) -> list[Cut]:
        """At open, with ``cut_back``: every ledger whose file lost records cut back to those it holds
        whole (node/store_cut.py), in one transaction, before the checks read the file."""
        conn = self._write
        names = conn.execute("SELECT DISTINCT ledger FROM records UNION SELECT ledger FROM tree_edge").fetchall()
        ledgers = sorted(name for (name,) in names if type(name) is str)  # another type: the checks name it
        cuts = [cut for ledger in ledgers if (cut := find_cut(conn, ledger)) is not None]
        if cuts:
            self._cut(cuts)
        return cuts

    def _cut(self, cuts: list[Cut]) -> None:
        """Remove the rows of each of ``cuts`` past what it keeps, in one transaction."""
        conn = self._write
        conn.execute("BEGIN IMMEDIATE")
        try:
            for cut in cuts:
                cut_back(conn, cut, self.settings.read_page_size)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        for cut in cuts:
            log.warning("%s: %s", self.path, cut.describe())

    def lost_records(self, ledger: str, *, holes: bool = False) -> bool:
        """Whether the file lacks records of ``ledger`` that this store placed: its last ones (one
        seek), or with ``holes`` any below its head (a count of the ledger's rows: a scan)."""
        size = self.size(ledger)  # first: a commit meanwhile adds heights from here on only
        if self.stored_size(ledger) < size:
            return True
        if not holes or not size:
            return False
        # Through the requests index, which holds every row's (ledger, height) and no record
        # bytes: 6-7 ms CPU for 100,000 records against 14 ms through the table itself.
        query = "SELECT COUNT(*) FROM records INDEXED BY records_by_request WHERE ledger = ? AND height < ?"
        (count,) = self._reader().execute(query, (ledger, size)).fetchone()
        return int(count) < size

    def roll_back(self, ledger: str) -> Cut | None:
        """Cut ``ledger`` back to the records its file still holds whole from the genesis, if it
        lost some behind the store's back (node/store_cut.py), then check what is left as an open
        does and build on it: the head, the tree and the hash index's tail are those of the file
        again. None when nothing was lost. Only a follower's store is rolled back, between its
        runs (none of ``ledger`` queued: its follower settled them). Raises the errors of an
        open's checks (StoreError, TreeMismatchError, RecordError) when what is left fails them:
        a store damaged, not only cut."""
        with self._committing:
            cut = find_cut(self._write, ledger, self.size(ledger))
            if cut is None:
                return None
            self._cut([cut])
            self._build_on_cut(ledger, cut)
            return cut

    def set_aside(self, ledger: str, kept: int, clock: Callable[[], float] = time.time) -> SetAside | None:
        """Move ``ledger``'s records from height ``kept`` on out of the store into a file beside
        it (``set-aside-<ledger>-<kept>-<time>.json``, 0600, written and synced before a row
        goes), then build on the first ``kept`` as :meth:`roll_back` does. The checkpoints this
        store signed or holds cosigned past ``kept`` become evidence rows (they go into the file
        too): its own signatures of a tail the ledger does not hold, which its start checks would
        otherwise take for a store that lost what it signed. What a former home, named standby,
        does with records it placed past a handover (PROTOCOL 10.9: a failback): they are not the
        ledger's, and no write of theirs is dropped unseen. None when it holds none from there.

        Only a follower's store, between its runs (none of ``ledger`` queued). Raises OSError
        when the file cannot be written (nothing removed then), and the errors of roll_back's
        checks."""
        if not 0 < kept < self.size(ledger):
            return None
        with self._committing:
            held = self.size(ledger)
            rows = list(self.range_raw(ledger, kept))
            signed = self._write.execute(
                "SELECT kind, size, note FROM checkpoints WHERE ledger = ? AND size > ? AND kind IN (?, ?)",
                (ledger, kept, SIGNED, COSIGNED),
            ).fetchall()
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock()))
            path = self.path.with_name(f"set-aside-{ledger}-{kept}-{stamp}.json")
            document = {
                "ledger": ledger,
                "from_height": kept,
                "records": [base64.b64encode(data).decode() for _, data in rows],
                "checkpoints": [base64.b64encode(note).decode() for _, _, note in signed],
            }
            write_private(path, json.dumps(document, indent=1).encode())
            conn = self._write
            conn.execute("BEGIN IMMEDIATE")
            try:
                cut = Cut(ledger, kept, held, 0)
                cut_back(conn, cut, self.settings.read_page_size)
                conn.execute(
                    "INSERT OR IGNORE INTO checkpoints (ledger, kind, size, root, note, at_ms) SELECT ledger, ?, size,"
                    " root, note, at_ms FROM checkpoints WHERE ledger = ? AND size > ? AND kind IN (?, ?)",
                    (EVIDENCE, ledger, kept, SIGNED, COSIGNED),
                )
                conn.execute(
                    "DELETE FROM checkpoints WHERE ledger = ? AND size > ? AND kind IN (?, ?)",
                    (ledger, kept, SIGNED, COSIGNED),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._build_on_cut(ledger, cut)
        log.warning("%s: %d records of %s from height %d set aside in %s", self.path, len(rows), ledger, kept, path)
        return SetAside(ledger, kept, len(rows), path)

    def _build_on_cut(self, ledger: str, cut: Cut) -> None:
        """After ``cut`` removed rows of ``ledger`` (under the commit lock): check what is left as
        an open does and build on it."""
        if cut.kept:
            head = self._check_head(ledger)  # the heads first: a reader's size then has its tree
            if self.keep_tree:
                frontier, edge = check_tree(self._write, self.path, ledger, self.settings.read_page_size)
                self._check_past_edge(ledger, edge)
                if frontier.size != head.height + 1:
                    raise TreeMismatchError(
                        f"{self.path}: ledger {ledger!r}: the tree has {frontier.size} leaves for "
                        f"{head.height + 1} records"
                    )
                self._frontiers[ledger] = frontier
        else:
            self._heads = {name: head for name, head in self._heads.items() if name != ledger}
            self._frontiers.pop(ledger, None)
        marks = dict(self._filled)
        if marks.get(ledger, 0) > cut.kept:
            marks[ledger] = cut.kept
        self._filled = marks if cut.kept else {name: mark for name, mark in marks.items() if name != ledger}
        self._tail = {h: at for h, at in self._tail.items() if at[0] != ledger or at[1] < cut.kept}
        self._read_domain_again(ledger)

    def _check_head(self, ledger: str) -> _Head:
        """Check ``ledger``'s genesis, head and the record below it (see :meth:`_load_heads`) and
        make its head the one appends build on."""
        genesis = self._read_one(self._write, "WHERE ledger = ? AND height = 0", (ledger,))
        if genesis is None:
            raise StoreError(f"{self.path}: ledger {ledger!r} has no genesis record")
        rules = ChainVerifier(ledger, PROTOCOL_LIMITS).check(genesis)
        # One read of the ledger's index entries, which hold every height: a height of
        # another type than INTEGER (TEXT, a BLOB, a REAL 2.5) names no record (below).
        top, count, odd = self._write.execute(
            "SELECT MAX(height), COUNT(*), COUNT(*) FILTER (WHERE typeof(height) <> 'integer') "
            "FROM records WHERE ledger = ?",
            (ledger,),
        ).fetchone()
        if odd:
            raise StoreError(f"{self.path}: ledger {ledger!r} has {odd} heights that are no integers")
        if count != top + 1:
            raise StoreError(f"{self.path}: ledger {ledger!r} has {count} records for heights 0..{top}")
        head = genesis
        if top > 0:
            below = self._read_one(self._write, "WHERE ledger = ? AND height = ?", (ledger, top - 1))
            top_record = self._read_one(self._write, "WHERE ledger = ? AND height = ?", (ledger, top))
            assert below is not None and top_record is not None
            ChainVerifier.after(ledger, top - 1, below.link, rules, PROTOCOL_LIMITS).check(top_record)
            head = top_record
        placed = _Head(head.height, head.link, head.accepted, rules)
        self._heads = {**self._heads, ledger: placed}  # replaced whole, as a group commit does
        return placed

    def _load_trees(self) -> None:
        """Check every ledger's stored tree against its records, or build it if the store has none.

        The check recomputes each tree from every record's stored bytes and compares every
        stored node (not only the root, and not only since the last tile): a changed record
        anywhere, or a changed, missing or extra tree row, raises TreeMismatchError, and
        nothing is rewritten. A store from before the tree (no ``tree`` meta row) gets its
        rows built here, in one transaction.
        """
        if not self.keep_tree:
            check_column_types(self._write, self.path, ("records",))  # no scan of the records here to ride
            self._write.execute("DELETE FROM meta WHERE key = ?", (TREE_KEPT[0],))
            return
        page = self.settings.read_page_size
        if tree_kept(self._write):
            stray = self._write.execute(
                "SELECT ledger FROM tree_edge WHERE ledger NOT IN (SELECT DISTINCT ledger FROM records) UNION ALL "
                "SELECT ledger FROM tree WHERE ledger NOT IN (SELECT DISTINCT ledger FROM records) LIMIT 1"
            ).fetchone()
            if stray is not None:
                raise TreeMismatchError(
                    f"{self.path}: the stored tree has nodes of ledger {stray[0]!r}, which has no records"
                )
            for ledger in sorted(self._heads):
                self._frontiers[ledger], edge = check_tree(self._write, self.path, ledger, page)
                self._check_past_edge(ledger, edge)
        else:
            if self._heads:
                log.warning(
                    "%s: building the Merkle tree of %d ledgers from their records", self.path, len(self._heads)
                )
            self._write.execute("BEGIN IMMEDIATE")
            try:
                # What a run without the tree may have left.
                self._write.execute("DELETE FROM tree")
                self._write.execute("DELETE FROM tree_edge")
                for ledger in sorted(self._heads):
                    self._frontiers[ledger] = build_tree(self._write, ledger, page)
                self._write.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", TREE_KEPT)
                self._write.execute("COMMIT")
            except BaseException:
                if self._write.in_transaction:
                    self._write.execute("ROLLBACK")
                raise
        for ledger, frontier in self._frontiers.items():
            if frontier.size != self._heads[ledger].height + 1:
                raise TreeMismatchError(
                    f"{self.path}: ledger {ledger!r}: the tree has {frontier.size} leaves for "
                    f"{self._heads[ledger].height + 1} records"
                )

    def _check_past_edge(self, ledger: str, edge: int) -> None:
        """Check the records past the stored edge, which no tree hash covers (at most 15: the
        edge is written by the commits that complete a stored subtree), as the head is checked:
        each the valid next record of the one below, from the last record the edge covers. A
        record changed alone then fails at open. What passes, as it passes any check of one copy
        (PROTOCOL 4 and 12.6), unless a kept checkpoint covers it: records past the edge cut off,
        or any of them rewritten with its link and proof of work, and every record after it,
        recomputed: no hash here covers them, so only another copy, a receipt or a later
        checkpoint shows it."""
        first, top = max(edge, 1), self._heads[ledger].height
        if first >= top:
            return  # nothing past the edge but the head, which _load_heads checked
        below = self._read_one(self._write, "WHERE ledger = ? AND height = ?", (ledger, first - 1))
        assert below is not None  # check_tree read every record
        verifier = ChainVerifier.after(ledger, first - 1, below.link, self._heads[ledger].rules, PROTOCOL_LIMITS)
        for height, data in iter_pages(self._write, ledger, first, top + 1, 1 << STORED_LEVEL):
            try:
                verifier.feed_raw(data)
            except VledgerError as e:
                raise TreeMismatchError(
                    f"{self.path}: ledger {ledger!r}: record {height}, past the stored tree's right edge "
                    f"({edge} records), does not verify: {e.message}"
                ) from e

    def _replay_domain(self) -> None:
        """Bring the domain rules up to every ledger's head before serving (readers such as
        file reads ask them too, not only appends). Runs before the committer starts, so the
        engine still has one user at a time."""
        if self._domain is None:
            return
        # The admin ledger first: the grants of every other ledger's records depend on it.
        for ledger in sorted(self._heads, key=lambda name: (name != ADMIN_LEDGER, name)):
            violations = self._domain.replay(self.range(ledger))
            if violations:
                log.warning("ledger %s holds %d records that break its rules", ledger, len(violations))
            self._domain_ready.add(ledger)

    def close(self) -> None:
        """Finish the appends already queued, then close every connection."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._work.set()
        self._committer.join()
        self._wal.close()  # before the writer: the last connection's close checkpoints all
        self.checkpoints.close()
        self._write.close()
        for conn in self._readers:
            conn.close()

    def damaged(self, error: BaseException) -> StoreDamagedError | None:
        """The StoreDamagedError that ``error`` is, if it says the file is damaged
        (:func:`damaged_file`), else None. The first calls :attr:`on_damaged`. Called only where
        an error was already caught (the committer's handlers, a service's reply to a failed
        request): it costs no append and no read anything."""
        if isinstance(error, StoreDamagedError):
            return error  # reported where it was found (a commit's future raises it again)
        cause = damaged_file(error)
        if cause is None:
            return None
        return self.found_damaged(f"{self.path}: the store's file is damaged: {cause}")

    def full_disk(self, error: BaseException) -> DiskFullError:
        """The DiskFullError of a write ``error`` that found no room (:func:`disk_full`), logged
        once until a commit succeeds again: a follower retries every moment, and a traceback or
        a line a retry said nothing the first did not (outsider o13)."""
        if not self._full:
            self._full = True
            log.error("disk full: %s: writes to the store fail until there is room (%s)", self.path.parent, error)
        return DiskFullError(f"disk full: {self.path.parent}: {error}")

    def full_before(self) -> None:
        """An earlier run left this node's ``disk_full`` alert open: the next commit that
        succeeds reports the room back (:attr:`on_full`), as one after a full disk in this run."""
        self._full = True

    def found_damaged(self, message: str) -> StoreDamagedError:
        """Damage another reader of this store's file found (the outbox process, which ends with
        EXIT_STORE_DAMAGED), said in ``message``: as :meth:`damaged`, the first call calls
        :attr:`on_damaged`; every call returns the first damage's error."""
        with self._lock:
            first = self._damaged is None
            if first:
                self._damaged = StoreDamagedError(message)
            damaged = self._damaged
            assert damaged is not None
        if first:
            log.error("%s", damaged.message)
            if self.on_damaged is not None:
                self.on_damaged(damaged)
        return damaged

    def __enter__(self) -> ChainStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- appends --------------------------------------------------------------------

    def submit_entry(self, entry: Entry, *, wake: bool = True) -> Future[Receipt]:
        """Queue a client's entry for placement on its ledger; the future resolves when durable.

        ``wake=False`` leaves the committer thread asleep: the caller must call :meth:`flush`
        once it has queued what it has, and is answered before the store's bookkeeping (see
        flush). Raises StoreClosedError once the store is closed.
        """
        return self._submit(_Job(entry, (), Future(), early=not wake), wake)

    def submit_entries(
        self,
        entries: Sequence[Entry],
        *,
        wake: bool = True,
        future: Future[list[Receipt | Exception]] | None = None,
        hashed: bool = False,
    ) -> Future[list[Receipt | Exception]]:
        """Queue clients' entries under one future, each placed on its own: one refused does
        not keep the others out. The future resolves once the group commit that placed them is
        durable, to each entry's receipt or what refused it (a VledgerError; any other
        exception is a bug, logged), in order; or to the commit's
        StoreError, and then none of them was stored. The entries go to one group commit
        whatever ``group_commit_max`` says, so a caller keeps such a run to a round of requests.

        One future for many entries, not one each: a request loop that queues a round of puts
        (``wake=False``, then :meth:`flush`) pays for one future, and one queue lock, a round.
        ``future``: the caller's own, not yet running, to be completed instead of a new one (a
        request loop that handed it to its replies before the round was queued). ``hashed=True``
        says the caller made each entry's checksum itself, the SHA-256 of its ``content_bytes``
        (Entry.from_wire, Entry.from_checked: a request loop's puts), so it is not hashed again
        here; the kind and the proof of work are checked as ever. Raises StoreClosedError once
        the store is closed.
        """
        job = _Job(None, (), future or Future(), entries=tuple(entries), early=not wake, hashed=hashed)
        return self._submit(job, wake)

    def submit_record(self, record: Record) -> Future[Receipt]:
        """Queue a placed record (replication, import) that must extend its ledger's head.

        Raises StoreClosedError once the store is closed."""
        return self._submit(_Job(None, (record,), Future()), True)

    def submit_records(
        self,
        records: Sequence[Record],
        *,
        verified: bool = False,
        given: Sequence[tuple[bytes, bytes]] | None = None,
        grown: GrownTree | None = None,
        receipts: bool = True,
    ) -> Future[list[Receipt]]:
        """Queue a run of placed records (a follower's catch-up page) under one future.

        The run is stored whole or not at all, in one group commit: the future gets a receipt
        per record (a record already held, byte for byte, is a duplicate), or the first
        failure, and then none of the run is stored. ``verified=True`` says the caller
        checked each record as the chain's next (a follower's ChainVerifier): the store then
        checks only that the run extends its head, height by height and link by link, and
        not each record's hashes and work a second time. ``given`` (only with ``verified``):
        each record's bytes, exactly ``record.encode()`` (what decode_record took them from,
        having checked they are canonical), and their Merkle leaf hash, so that the store
        writes them as they are instead of encoding and hashing each record again.
        ``grown`` (only with ``given``): the run's tree, grown by :func:`grow_kept` from the
        ledger's frontier right below the run by exactly ``given``'s leaf hashes (a follower's,
        whose root it compared with a signed checkpoint), so that the store does not grow it
        again; used when the group commit holds only such runs, each standing where the one
        before ended, else the tree is grown here from the leaf hashes. ``receipts=False``: a
        run stored whole right on its ledger's head (none of it held before, nothing refused)
        answers an empty list instead of a receipt a record, which cost the committer half a
        microsecond a record for a caller that only looks for duplicates; a run that takes
        the record-by-record way (a duplicate, a gap) answers its receipts as ever.
        Raises ValueError if ``given`` does not pair with ``records`` one to one, or
        ``grown`` comes without it, and StoreClosedError once closed.
        """
        if given is not None and (not verified or len(given) != len(records)):
            raise ValueError("given bytes and leaf hashes come with a verified run, one pair a record")
        if grown is not None and given is None:
            raise ValueError("a grown tree comes with the leaf hashes it was grown from")
        job = _Job(
            None, tuple(records), Future(), many=True, verified=verified, given=given, grown=grown, receipts=receipts
        )
        return self._submit(job, True)

    def _submit(self, job: _Job, wake: bool) -> Future[Any]:
        with self._lock:
            if self._closed:
                raise StoreClosedError(f"{self.directory}: the store is closed")
            self._queue.append(job)
        if wake:
            self._work.set()
        return job.future

    def flush(self) -> None:
        """Commit what is queued, here on the calling thread, and return once it is durable
        (or failed: each append's future says which).

        If a group commit is under way on another thread, the committer thread is woken to
        take what is queued after it, and this returns at once: a caller never waits for
        someone else's fsync. Never raises for an append; errors go to its future.

        Here the futures of the appends queued with ``wake=False`` (this caller's own) are
        completed as soon as their group's COMMIT returned, before the store's own bookkeeping
        (its heads, trees and lookups move to the group) and before ``on_commit``: their
        callbacks run on this thread, so a caller that answers its clients from them (the
        request loop) sends the answers first, and whatever it does next, it does once both
        are done (a callback that reads the store sees it before the group). Any other append
        in the group (queued with ``wake=True`` by another thread, which flush took first) is
        completed after both, as the committer thread completes each: a thread that waits on
        a future may act, and read the store, at once.

        A home's signed checkpoint row (CheckpointLog.keep, no fsync) that holds the lock is
        waited for, up to BRIEF_WAIT_SECONDS: its INSERT takes microseconds, while handing a lone
        put to the committer thread costs it two thread wake-ups and its answer a trip through
        the request loop's wake-up pipe.
        """
        committing = self._committing
        if not committing.acquire(blocking=False) and not (
            self.checkpoints.holds_briefly() and committing.acquire(timeout=BRIEF_WAIT_SECONDS)
        ):
            self._work.set()
            return
        try:
            self._commit_queued(answer_first=True)
        finally:
            committing.release()

    def append(self, entry: Entry) -> Receipt:
        """Place ``entry`` on its ledger and return once it is durable.

        A retry of the same request (same author and request id, same content) returns
        the first receipt, marked duplicate, and writes nothing.
        """
        return self.submit_entry(entry).result()

    def create_ledger(self, genesis: Entry) -> Receipt:
        """Start a ledger from its genesis entry (its rules are the entry's payload)."""
        if genesis.content.kind != GENESIS_KIND:
            raise BadGenesisError(
                f"a new ledger starts with a {GENESIS_KIND!r} entry, not {genesis.content.kind!r}",
                ledger=genesis.content.ledger,
                height=0,
            )
        return self.append(genesis)

    def append_record(self, record: Record) -> Receipt:
        return self.submit_record(record).result()

    def append_records(self, records: Iterable[Record]) -> list[Receipt]:
        """Append many placed records; they share group commits. Stops at the first failure."""
        futures = [self.submit_record(r) for r in records]
        return [f.result() for f in futures]

    # --- the committer --------------------------------------------------------------

    def _commit_loop(self) -> None:
        while True:
            self._work.wait()
            self._work.clear()  # before taking the queue: an append queued after it sets it again
            stopping = self._closed
            with self._committing:
                self._commit_queued(between=self.checkpoints.give_way)
            if stopping:  # nothing can be queued once closed: the queue was emptied above
                return

    def _commit_queued(self, between: Callable[[], None] | None = None, answer_first: bool = False) -> None:
        """Commit the queue in groups of at most ``group_commit_max``, calling ``between`` before
        each (the committer thread lets a checkpoint row waiting for the file go first); the
        caller holds ``_committing``. ``answer_first``: see :meth:`flush`."""
        queued, most = self._queue, self.settings.group_commit_max
        while queued:
            if between is not None:  # None, not a no-op lambda: flush's lone put makes no call for it
                between()
            if not queued:  # a flush on another thread took the lock meanwhile and committed them
                return
            batch = [queued.popleft()]
            size = batch[0].size
            while queued and size + queued[0].size <= most:
                job = queued.popleft()
                batch.append(job)
                size += job.size
            try:
                self._commit(batch, size, answer_first)
            except Exception as e:  # a bug: answer what is left, keep the committer, say it loudly
                log.exception("group commit of %d appends failed unexpectedly", size)
                error = self.damaged(e) or StoreError(f"{self.path}: the group commit failed unexpectedly: {e}")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)

    def _grow_trees(
        self, records: Sequence[Record], data: Sequence[bytes], given: Sequence[bytes | None]
    ) -> tuple[dict[str, Frontier], list[tuple[str, int, int, bytes]]]:
        """The frontiers after this group's records (each with its bytes and, if its caller
        gave it, its leaf hash, else None), and the tree rows they complete.

        Grows copies, so a group that fails to commit leaves the frontiers as they were.
        """
        leaves: dict[str, list[bytes]] = {}  # each ledger's, in order (a group's ledgers may interleave)
        first = records[0].content.ledger
        if None not in given and all(record.content.ledger == first for record in records):
            leaves[first] = given  # type: ignore[assignment]  # no None in it, as just checked
        else:
            for record, encoded, leaf in zip(records, data, given, strict=True):
                leaves.setdefault(record.content.ledger, []).append(leaf if leaf is not None else leaf_hash(encoded))
        grown: dict[str, Frontier] = {}
        rows: list[tuple[str, int, int, bytes]] = []
        for ledger, hashes in leaves.items():
            held = self._frontiers.get(ledger)
            frontier = grown[ledger] = held.copy() if held is not None else Frontier()
            rows.extend((ledger, level, index, node) for level, index, node in frontier.grow(hashes, STORED_LEVEL))
        return grown, rows

    def _take_grown(
        self, runs: list[tuple[str, int, GrownTree]]
    ) -> tuple[dict[str, Frontier], list[tuple[str, int, int, bytes]]] | None:
        """What :meth:`_grow_trees` gives, from the trees the callers of a group's runs grew
        (see :meth:`submit_records`), if each stands where the ledger's tree (or the run
        before) ends; else None (the group's tree is grown from its leaves)."""
        grown: dict[str, Frontier] = {}
        rows: list[tuple[str, int, int, bytes]] = []
        for ledger, count, tree in runs:
            below = grown[ledger] if ledger in grown else self._frontiers.get(ledger)
            if below is None or tree.frontier.size != below.size + count:
                return None
            grown[ledger] = tree.frontier
            rows.extend([(ledger, level, index, node) for level, index, node in tree.rows])
        return {ledger: frontier.copy() for ledger, frontier in grown.items()}, rows

    def _writes_no_tree(self, records: Sequence[Record]) -> bool:
        """Whether ``records`` (placed entries) complete no stored subtree of their ledgers and
        move no stored edge, so that their commit writes no tree row (what :meth:`_edge_due`
        says, from the sizes alone): 15 lone puts of 16. Their trees are then grown once flush
        answered them, off the put's round trip; nothing but the store's readers needs them, and
        the heads move after the trees."""
        counts: dict[str, int] = {}
        for record in records:
            counts[record.content.ledger] = counts.get(record.content.ledger, 0) + 1
        for ledger, count in counts.items():
            held = self._frontiers.get(ledger)
            if held is None or held.size >> STORED_LEVEL != (held.size + count) >> STORED_LEVEL:
                return False
        return True

    def _edge_due(self, ledger: str, grown: Frontier) -> bool:
        """Whether this commit rewrites ``ledger``'s stored edge: when it starts the ledger or
        completes one of its stored subtrees (the commits that write its tree rows), so the records
        past the stored edge never complete one (storefile's docstring says what that keeps).

        The other commits, 15 lone puts of 16, write their records' pages only: the edge row
        was a third page in each, to write and fsync."""
        held = self._frontiers.get(ledger)
        return held is None or held.size >> STORED_LEVEL != grown.size >> STORED_LEVEL

    def _commit(self, batch: list[_Job], appends: int, answer_first: bool = False) -> None:
        heads = dict(self._heads)
        grown: dict[str, Frontier] = {}
        staged = _Staged()
        requests = _Requests(
            self._write,
            # A lone round's entries as they are: a comprehension is a call of its own.
            batch[0].entries
            if len(batch) == 1 and batch[0].entries
            else [entry for job in batch for entry in (job.entries or ((job.entry,) if job.entry is not None else ()))],
            self._newest_requests,
        )
        done: list[tuple[_Job, Any]] = []
        answered = answer_first  # every append answered before on_commit (see ``answered``)
        filled: dict[str, int] | None = None  # the new filled marks, if this group fills record_hashes
        later = False  # the group's trees are grown after its answers (see _writes_no_tree)
        followed: list[Record] = []  # stored as a follower's (a standby's): the domain rules see them after
        handed: list[HandedRow] = []  # signed checkpoint rows this group writes (CheckpointLog.keep, with_commit)
        deferred: list[HandedRow] = []  # those a lone put's group writes once it has answered
        for job in batch:
            if not job.future.set_running_or_notify_cancel():
                continue
            if job.entries:
                done.append((job, self._place_each(job.entries, heads, requests, staged, job.hashed)))
                continue
            try:
                if job.entry is not None:
                    receipt, record = self._place(job.entry, heads, requests)
                    placed = [record] if record is not None else []
                    result: Any = receipt
                elif job.verified and job.given is not None and len(job.records) > 1 and _stands_on(job.records, heads):
                    # A verified run right on its head with its bytes and leaves: a catch-up
                    # page. Staged whole, without a lookup entry or pairing a record.
                    done.append((job, _take_standing(job.records, heads, job.receipts)))
                    staged.add_run(job.records, job.given, job.grown)
                    followed.extend(job.records)
                    continue
                else:
                    receipts, placed = self._extend_run(job.records, heads, staged, job.verified)
                    result = receipts if job.many else receipts[0]
                    followed.extend(placed)
            except VledgerError as e:
                job.future.set_exception(e)
                continue
            except Exception as e:  # a bug must fail this append loudly, not kill the committer
                log.exception("append failed unexpectedly")
                job.future.set_exception(self.damaged(e) or e)  # a damaged file: no bug
                continue
            if job.given is None:
                for record in placed:
                    staged.add(record)
                    if job.entry is not None:
                        requests.placed(record)
            else:
                # What was placed is the run's records (the same objects) less its duplicates.
                pairs = iter(zip(job.records, job.given, strict=True))
                for record in placed:
                    staged.add(record, next(pair for r, pair in pairs if r is record))
            done.append((job, result))
        try:
            # staged.records, not staged: its truth is _Staged.__len__, a Python call (three a put).
            if staged.records:
                records = staged.records
                encoded = [d if d is not None else r.encode() for r, d in zip(records, staged.data, strict=True)]
                tree_rows: list[tuple[str, int, int, bytes]] = []
                edges: list[tuple[str, bytes]] = []
                if self.keep_tree and answer_first and not staged.grown and self._writes_no_tree(records):
                    later = True  # grown once answered: it writes nothing, and only readers need it
                elif self.keep_tree:
                    taken = self._take_grown(staged.grown) if staged.grown else None
                    grown, tree_rows = taken or self._grow_trees(records, encoded, staged.leaves)
                    edges = [(ledger, f.encode()) for ledger, f in grown.items() if self._edge_due(ledger, f)]
                fill = self.hash_fill_at is not None and len(self._tail) + len(records) >= self._fill_due
                handed = self.checkpoints.take_handed()
                if (
                    len(records) == 1
                    and not tree_rows
                    and not edges
                    and not fill
                    and (answer_first or not handed)
                    and not self._merge_due(1)
                ):
                    # A lone record and nothing else to write (15 lone puts of 16): its INSERT is
                    # a transaction of its own, committed (and fsynced, synchronous=FULL) by SQLite
                    # as it ends, so BEGIN and COMMIT cost it no statements. Still all or nothing:
                    # one statement, one row. Signed rows handed over meanwhile (one a pass of the
                    # outbox) are written once it has answered, without an fsync of their own,
                    # as CheckpointLog's own rows are: in this transaction they cost the put that
                    # met them a BEGIN, a COMMIT and their pages before its answer.
                    deferred, handed = handed, []
                    if self.hash_fill_at is not None:
                        self._merge_hashes(1)  # owes its rows of merging; none is due (above): no write
                    self._write.execute(_INSERT_RECORD, _record_row(records[0], encoded[0]))
                else:
                    self._write.execute("BEGIN IMMEDIATE")
                    _insert_records(self._write, records, encoded)
                    if tree_rows:  # 15 groups of 16 lone puts complete no stored subtree
                        _insert_tree_rows(self._write, tree_rows)
                    if edges:  # 15 lone puts of 16 move no edge: a page fewer to write and fsync
                        self._write.executemany(PUT_EDGE, edges)
                    if handed:
                        self.checkpoints.write_handed(self._write, handed)
                    if self.hash_fill_at is not None:
                        if fill:
                            # With the records that bring it there: durable together (see storefile).
                            filled = self._fill_hashes(heads)
                        self._merge_hashes(len(records))
                    self._write.execute("COMMIT")
        except Exception as e:  # whatever failed, no append of this group may be acknowledged
            if self._write.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._write.execute("ROLLBACK")
            full = disk_full(e)
            if not full:
                log.error("group commit of %d records failed: %s", len(staged), e)
            for ledger in {record.content.ledger for record in staged.records}:
                self._read_domain_again(ledger)  # the rules saw records that are not durable
            # A damaged file stops the node (on_damaged); anything else is the moment's.
            error = self.damaged(e) or (self.full_disk(e) if full else StoreError(f"{self.path}: write failed: {e}"))
            for job, _ in done:
                job.future.set_exception(error)
            self.checkpoints.handed_done(handed or deferred, committed=False)
            if isinstance(error, DiskFullError) and self.on_full is not None:
                first: dict[str, int] = {}
                for record in staged.records:
                    first[record.content.ledger] = min(first.get(record.content.ledger, record.height), record.height)
                self.on_full(error, first)
            return
        room = self._full
        if room:
            self._full = False
            log.warning("disk space back: %s: the store writes again", self.path.parent)
        if answer_first:
            # Durable: flush's caller (the request loop) sends its answers from these callbacks
            # now, and does the bookkeeping below after them, off the put's round trip. No read
            # can miss an answered record meanwhile: the client's next request is read by that
            # same thread once flush has returned (see flush). Another thread's append waits for
            # the bookkeeping: its waiter reads the store at once (reviewer r10 #2).
            for job, result in done:
                if job.early:
                    job.future.set_result(result)
                else:
                    answered = False
        if later:
            grown = self._grow_trees(staged.records, encoded, staged.leaves)[0]
        # The trees before the heads: a reader that sees a new size (size(), on another thread)
        # must find its tree (root at that size), or it raised TreeSizeError in that window
        # (reviewer r6 #3: a follower comparing a checkpoint at once alerted against its own copy).
        self._frontiers.update(grown)
        self._heads = heads
        self._newest_requests.committed(staged.records)
        if filled is not None:
            self._filled, self._tail = filled, {}
            self._fill_due = self.hash_fill_at or 0
        elif staged.records and self.hash_fill_at is not None:
            records = staged.records
            if len(records) == 1:  # a lone put's: no two comprehensions (a call each) for one row
                record = records[0]
                self._tail[record.link] = (record.content.ledger, record.height)
            else:
                self._tail.update(
                    zip([r.link for r in records], [(r.content.ledger, r.height) for r in records], strict=True)
                )
        if followed and self._domain is not None:
            self._follow_domain(followed)
        if deferred:
            handed = deferred
            try:
                CheckpointLog.write_handed_unsynced(self._write, deferred)
            except sqlite3.Error as e:  # each keep call writes its row on its own
                log.warning("signed checkpoint rows not written after a group commit: %s", e)
                self.checkpoints.handed_done(deferred, committed=False)
                handed = []
        self.checkpoints.handed_done(handed, committed=True)  # after the answers: it wakes the signing thread
        if not self._wal.due.is_set():  # a lock only when it wakes the checkpointer
            self._wal.due.set()
        self.stats.groups += 1
        self.stats.appends += appends
        if staged.records and self.on_commit is not None:
            self.answered = answered and not self._queue
            try:
                self.on_commit(staged.records)
            except Exception:  # the records are durable: a failing listener must not undo that
                log.exception("on_commit listener failed")
            finally:
                self.answered = False
        for job, result in done:
            if not (answer_first and job.early):
                job.future.set_result(result)
        if room and self.on_full is not None:
            self.on_full(None, {})

    def _fill_hashes(self, heads: Mapping[str, _Head]) -> dict[str, int]:
        """Write the hashes above the filled marks (those held in memory and this group's),
        sorted, as a new run of the index and move the marks to ``heads``, in the caller's
        transaction; returns the new marks, for ``_filled`` once it is committed.
        Raises sqlite3.Error."""
        filled = self._filled
        moved = {ledger: head.height + 1 for ledger, head in heads.items() if head.height + 1 > filled.get(ledger, 0)}
        # The hashes above the marks are those of the rows at the heights from each mark to its
        # head (this group's inserted already): read and sorted there, not here under the GIL.
        add_run_of_records(self._write, {ledger: (filled.get(ledger, 0), size) for ledger, size in moved.items()})
        return {**filled, **moved}

    def _merge_due(self, records: int) -> bool:
        """Whether :meth:`_merge_hashes` of ``records`` more would merge (False without a hash index)."""
        if self.hash_fill_at is None:
            return False
        return min(self._merge_credit + MERGE_ROWS_PER_RECORD * records, MERGE_CREDIT_MOST) >= self.hash_merge_step

    def _merge_hashes(self, records: int) -> None:
        """Owe MERGE_ROWS_PER_RECORD rows of merging for each of a group's ``records`` and, once
        at least ``hash_merge_step`` are owed, move them (storefile.merge_hash_runs), in the
        caller's transaction. Raises sqlite3.Error."""
        self._merge_credit = min(self._merge_credit + MERGE_ROWS_PER_RECORD * records, MERGE_CREDIT_MOST)
        if self._merge_credit >= self.hash_merge_step:
            moved = merge_hash_runs(self._write, self._merge_credit)
            self._merge_credit = 0 if moved is None else max(0, self._merge_credit - moved)

    def _read_domain_again(self, ledger: str) -> None:
        """Drop what the domain rules hold of ``ledger``: they replay it from its chain when next
        asked (:meth:`_check_domain`)."""
        self._domain_ready.discard(ledger)
        if self._domain is not None:
            self._domain.forget(ledger)

    def _follow_domain(self, records: list[Record]) -> None:
        """Move the domain rules on by ``records``, just stored as a follower's: a standby that
        is promoted places the next record under them (PROTOCOL 10.9). A ledger the rules have
        not read yet is replayed from its chain when first needed, and so is one they cannot
        continue. The admin ledger first, as placements and the opening replay take it: the
        grants of the other ledgers' records in the group may be among its records. On the
        committer thread, the rules' one user."""
        assert self._domain is not None
        runs: dict[str, list[Record]] = {}
        for record in records:
            runs.setdefault(record.ledger, []).append(record)
        for ledger, run in sorted(runs.items(), key=lambda item: (item[0] != ADMIN_LEDGER, item[0])):
            if ledger not in self._domain_ready:
                continue
            try:
                violations = self._domain.replay(run)
            except Exception as e:  # a bug too: the records are durable, their futures must be answered
                if isinstance(e, VledgerError):
                    log.warning("ledger %s: the rules cannot follow the stored records (%s): read again", ledger, e)
                else:
                    log.exception("ledger %s: the rules failed to follow the stored records: read again", ledger)
                self._read_domain_again(ledger)
                continue
            if violations:
                log.warning("ledger %s: %d records stored from its home break its rules", ledger, len(violations))

    def _place_each(
        self,
        entries: Sequence[Entry],
        heads: dict[str, _Head],
        requests: _Requests,
        staged: _Staged,
        hashed: bool = False,
    ) -> list[Receipt | Exception]:
        """Place each entry on its own (see :meth:`submit_entries`): its receipt, or the
        exception that refused it; a bug fails its entry loudly, not the committer.

        A round of puts is mostly each ledger's next record from a new request: those take
        :meth:`_place`'s way here, with the clock read once for the round (its records are
        accepted at one moment, as they are made durable at one), and without its calls per
        put. The accepted floor is read for each record, just before its grants are (16.2).
        Anything else (a retry, a genesis, the admin ledger, a ledger the rules have not read
        yet) goes through :meth:`_place` itself."""
        outcomes: list[Receipt | Exception] = []
        origin, domain, ready = self.origin, self._domain, self._domain_ready
        earlier, placed, max_bytes = requests.earlier, requests.placed, self.limits.max_content_bytes
        floor = self._accepted_floor
        verify = verify_hashed_entry if hashed else verify_entry
        now = -1  # the round's clock, and the floor an admin record placed here sets; -1: not read yet
        for entry in entries:
            content = entry.content
            ledger = content.ledger
            head = heads.get(ledger)
            try:
                if (
                    origin is None
                    or head is None
                    or ledger == ADMIN_LEDGER
                    or content.kind == GENESIS_KIND
                    or (domain is not None and ledger not in ready)
                    or len(entry.content_bytes) > max_bytes
                    or earlier(ledger, content.author, content.request_id) is not None
                ):
                    receipt, record = self._place(entry, heads, requests)
                    now = -1  # an admin record placed raises _after_admin
                else:
                    rules = head.rules
                    verify(entry, rules)
                    if now < 0:
                        now = max(self._clock(), self._after_admin)
                    # _accepted's time for a ledger other than the admin ledger.
                    accepted = max(now, head.accepted, floor() if floor is not None else 0)
                    record = entry.place(head.height + 1, head.link, accepted, origin)
                    values = domain.check_and_apply(record, rules) if domain is not None else {}
                    heads[ledger] = _Head(record.height, record.link, accepted, rules)
                    self._latest_accepted = max(self._latest_accepted, accepted)
                    receipt = Receipt.of(record, values=values)
            except VledgerError as e:
                outcomes.append(e)
                continue
            except Exception as e:  # a bug: this entry's request gets it, the others go on
                log.exception("append failed unexpectedly")
                outcomes.append(self.damaged(e) or e)  # a damaged file: no bug
                continue
            if record is not None:
                staged.add(record)
                placed(record)
            outcomes.append(receipt)
        return outcomes

    def _place(self, entry: Entry, heads: dict[str, _Head], requests: _Requests) -> tuple[Receipt, Record | None]:
        if self.origin is None:
            raise StoreError(f"{self.directory}: this store has no node name, so it cannot place entries")
        content = entry.content
        earlier = requests.earlier(content.ledger, content.author, content.request_id)
        if earlier is not None:
            if earlier.content_bytes != entry.content_bytes:
                raise RequestConflictError(f"request id {content.request_id!r} was already used with other content")
            if earlier.nonce != entry.nonce:
                # The same content with another valid nonce is still another record's bytes: say so,
                # so the client sees its retry recomputed the proof of work rather than changed the record.
                raise RequestConflictError(
                    f"request id {content.request_id!r} was already used with the same content but another "
                    f"nonce (proof of work {earlier.nonce}, this one {entry.nonce}): retry with the first one"
                )
            values = self._domain.values_of(earlier, heads[content.ledger].rules) if self._domain else {}
            return Receipt.of(earlier, duplicate=True, values=values), None
        self._check_size(entry)
        head = heads.get(content.ledger)
        if content.kind == GENESIS_KIND:
            if head is not None:
                raise LedgerExistsError(f"ledger {content.ledger!r} already exists")
            rules = LedgerRules.from_genesis(content, PROTOCOL_LIMITS)
            verify_entry(entry, rules, 0)
            record = entry.place(0, ZERO_LINK, self._accepted(content.ledger, 0), self.origin)
        else:
            if head is None:
                raise NoSuchLedgerError(f"ledger {content.ledger!r} does not exist")
            rules = head.rules
            verify_entry(entry, rules)
            # Accepted times never go backwards within a ledger, even if the clock does.
            record = entry.place(head.height + 1, head.link, self._accepted(content.ledger, head.accepted), self.origin)
        values = self._check_domain(record, rules)
        heads[content.ledger] = _Head(record.height, record.link, record.accepted, rules)
        # Only once the record passed every check: a refused admin record moves no floor.
        self._latest_accepted = max(self._latest_accepted, record.accepted)
        if content.ledger == ADMIN_LEDGER:
            self._after_admin = record.accepted + 1
        return Receipt.of(record, values=values), record

    def _check_size(self, entry: Entry) -> None:
        if len(entry.content_bytes) > self.limits.max_content_bytes:
            raise PayloadTooLargeError(
                f"content is {len(entry.content_bytes)} bytes, over this node's limit of "
                f"{self.limits.max_content_bytes}",
                ledger=entry.content.ledger,
            )

    def check_entry(self, entry: Entry) -> None:
        """Raise what placing ``entry`` on its ledger, which this store holds, would raise for
        its size, checksum, kind and proof of work; store nothing. The rules of its domain and
        grants are the caller's to check (they need the record's height and time)."""
        self._check_size(entry)
        verify_entry(entry, self.rules(entry.content.ledger))

    def next_accepted(self, ledger: str) -> int:
        """The accepted time a record of ``ledger``, which this store holds, placed now would have
        at the least: what a check of it before placing must judge it by (PROTOCOL 16.2), not the
        clock alone, which may be behind the admin records this node applied."""
        head = self.head(ledger)
        return self._accepted(ledger, 0 if head is None else head.accepted)

    def _accepted(self, ledger: str, head_accepted: int) -> int:
        """The accepted time of the next record of ``ledger`` (see __init__ on the admin ledger)."""
        accepted = max(self._clock(), head_accepted)
        if ledger == ADMIN_LEDGER:
            return max(accepted, self._latest_accepted)
        floor = self._accepted_floor() if self._accepted_floor is not None else 0
        return max(accepted, self._after_admin, floor)

    def _check_domain(self, record: Record, rules: LedgerRules) -> dict[str, Any]:
        if self._domain is None:
            return {}
        if record.ledger not in self._domain_ready and record.height > 0:
            self._domain.replay(self.range(record.ledger, 0, record.height))
        self._domain_ready.add(record.ledger)
        return self._domain.check_and_apply(record, rules)

    def _extend_run(
        self,
        records: Sequence[Record],
        heads: dict[str, _Head],
        staged: _Staged,
        verified: bool,
    ) -> tuple[list[Receipt], list[Record]]:
        """The receipts of ``records`` and those of them to write; raises the first failure,
        and then leaves ``heads`` as it was (a run is stored whole or not at all)."""
        if len(records) == 1:  # nothing to undo: _extend changes heads only once it passed
            receipt, record = self._extend(records[0], heads, staged, verified)
            return [receipt], [record] if record is not None else []
        if verified and _stands_on(records, heads):
            return _take_standing(records, heads), list(records)
        trial_heads: collections.ChainMap[str, _Head] = collections.ChainMap({}, heads)
        trial_staged: collections.ChainMap[tuple[str, int], Record] = collections.ChainMap({}, staged)
        receipts, placed = [], []
        for record in records:
            receipt, new = self._extend(record, trial_heads, trial_staged, verified)
            receipts.append(receipt)
            if new is not None:
                trial_staged[(new.ledger, new.height)] = new
                placed.append(new)
        heads.update(trial_heads.maps[0])
        return receipts, placed

    def _extend(
        self,
        record: Record,
        heads: MutableMapping[str, _Head],
        staged: Mapping[tuple[str, int], Record],
        verified: bool = False,
    ) -> tuple[Receipt, Record | None]:
        head = heads.get(record.ledger)
        if head is not None and record.height <= head.height:
            held = staged.get((record.ledger, record.height)) or self._read_one(
                self._write, "WHERE ledger = ? AND height = ?", (record.ledger, record.height)
            )
            if held is not None and held.encode() == record.encode():
                return Receipt.of(held, duplicate=True), None
            raise RecordConflictError(
                f"ledger {record.ledger!r} height {record.height}: a different record is already stored"
            )
        if verified and head is not None:
            rules = _extends(record, head)
        else:
            if head is None:
                verifier = ChainVerifier(record.ledger, PROTOCOL_LIMITS)
            else:
                verifier = ChainVerifier.after(record.ledger, head.height, head.link, head.rules, PROTOCOL_LIMITS)
            rules = verifier.check(record)
        heads[record.ledger] = _Head(record.height, record.link, record.accepted, rules)
        return Receipt.of(record), record

    # --- reads ----------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        """One read connection per thread: WAL lets reads run beside the committer."""
        if self._closed:
            raise StoreClosedError(f"{self.directory}: the store is closed")
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None:
            # shared: close() runs on whichever thread closes the store.
            conn = connect(self.path, shared=True)
            local.conn = conn
            local.fresh_until = time.monotonic() + READ_CACHE_SECONDS
            with self._lock:
                self._readers.append(conn)
        elif (now := time.monotonic()) >= local.fresh_until:
            # SQLite keeps a connection's pages while no write changes the WAL's index: a byte
            # changed on the disk behind its back (rot, a hand) would be served from memory,
            # and the sweeps (which read through this node) would never see it.
            conn.execute("PRAGMA shrink_memory")
            local.fresh_until = now + READ_CACHE_SECONDS
        return conn

    def _read_one(self, conn: sqlite3.Connection, where: str, args: tuple[object, ...]) -> Record | None:
        row = conn.execute(f"SELECT ledger, height, data FROM records {where}", args).fetchone()
        if row is None:
            return None
        if type(row[2]) is not bytes:
            raise self.damaged_cell(row[0], row[1], row[2])
        return decode_record(row[2], PROTOCOL_LIMITS)

    def damaged_cell(self, ledger: object, height: object, data: object) -> StoreDamagedError:
        """A record's data read as another type than the BLOB the node writes (tampered into
        valid UTF-8 TEXT, which a read takes as it is, or a number): as :meth:`found_damaged`.
        Checked where a read has the value in hand (a record decoded, a page read by
        :meth:`range_raw`: a type test a row, no read of its own); a running node otherwise meets it at
        its next start (storefile.check_column_types)."""
        return self.found_damaged(not_blob_message(self.path, ledger, height, data))

    def ledgers(self) -> list[str]:
        return sorted(self._heads)

    def rules(self, ledger: str) -> LedgerRules:
        head = self._heads.get(ledger)
        if head is None:
            raise NoSuchLedgerError(f"ledger {ledger!r} does not exist")
        return head.rules

    def size(self, ledger: str) -> int:
        """How many records the ledger holds (its head height + 1), 0 if it does not exist."""
        head = self._heads.get(ledger)
        return head.height + 1 if head else 0

    def get(self, ledger: str, height: int) -> Record | None:
        if not 0 <= height < MAX_HEIGHT:  # past what SQLite can hold: certainly not stored
            return None
        return self._read_one(self._reader(), "WHERE ledger = ? AND height = ?", (ledger, height))

    def _find_hash(self, record_hash: bytes) -> tuple[str, int, bytes] | None:
        """(ledger, height, bytes) of the row whose hash column is ``record_hash``: among the
        records above the filled marks, else through the index's runs. Raises StoreError when
        the store keeps no hash index (see __init__'s ``hash_fill_at``)."""
        if self.hash_fill_at is None:
            raise StoreError(f"{self.directory}: this store was opened without its hash index")
        # The hashes above the marks are taken before the index is read: the committer
        # replaces them only once the records are in the index.
        place = self._tail.get(record_hash)
        conn = self._reader()
        return indexed_hash(conn, record_hash) if place is None else hash_at(conn, record_hash, *place)

    def get_by_hash(self, record_hash: bytes) -> Record | None:
        """The record whose hash column is ``record_hash``, or None; raises as :meth:`_find_hash`."""
        found = self._find_hash(record_hash)
        if found is not None and type(found[2]) is not bytes:
            raise self.damaged_cell(*found)
        return None if found is None else decode_record(found[2], PROTOCOL_LIMITS)

    def heads(self) -> dict[str, tuple[int, bytes]]:
        """Every ledger's head height and hash, as of the last group commit."""
        return {ledger: (head.height, head.link) for ledger, head in self._heads.items()}

    def head(self, ledger: str) -> Record | None:
        head = self._heads.get(ledger)
        return self.get(ledger, head.height) if head else None

    def stored_head(self, ledger: str) -> Record | None:
        """The ledger's highest record as the file holds it now, None if it holds none.

        :meth:`head` and :meth:`size` give the head the committer placed last (what appends
        build on); this reads the file, so what a node reports about itself stays true when
        the file was changed behind the store's back (a chain cut short)."""
        return self._read_one(self._reader(), "WHERE ledger = ? ORDER BY height DESC LIMIT 1", (ledger,))

    def stored_size(self, ledger: str) -> int:
        """The ledger's highest height the file holds, plus one (0: none); see :meth:`stored_head`."""
        # A height tampered into TEXT or a BLOB sorts after every number: no height (as StoreReader.size).
        row = (
            self._reader()
            .execute("SELECT MAX(height) FROM records WHERE ledger = ? AND height <= ?", (ledger, MAX_HEIGHT))
            .fetchone()
        )
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    def find_request(self, ledger: str, author: str, request_id: str) -> Record | None:
        return self._read_one(self._reader(), _BY_REQUEST, (ledger, author, request_id))

    def range(self, ledger: str, start: int = 0, stop: int | None = None) -> Iterator[Record]:
        """Records start <= height < stop in order, read a page at a time."""
        for _, data in self.range_raw(ledger, start, stop):
            yield decode_record(data, PROTOCOL_LIMITS)

    def range_raw(self, ledger: str, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(height, record bytes) in height order, a page at a time; raises the StoreDamagedError
        of :meth:`damaged_cell` at a page holding a record whose data is not a BLOB, before any
        of that page is given (every reader that ships or uses records reads through here)."""
        return iter_blob_pages(self._reader(), ledger, start, stop, self.settings.read_page_size, self.damaged_cell)

    def have(self, hashes: Iterable[bytes]) -> list[bytes]:
        """Which of these record hashes this store holds (the "I have / you have" question)."""
        return [h for h in hashes if self._find_hash(h) is not None]

    # --- the Merkle tree (docs/PROTOCOL.md section 12) ------------------------------------

    def frontier(self, ledger: str) -> Frontier:
        """The ledger's tree as of the last group commit: its size and root belong together.

        Raises NoSuchLedgerError, or StoreError when this store keeps no tree.
        """
        if not self.keep_tree:
            raise StoreError(f"{self.directory}: this store was opened without its Merkle tree")
        frontier = self._frontiers.get(ledger)
        if frontier is None:
            raise NoSuchLedgerError(f"ledger {ledger!r} does not exist")
        return frontier.copy()

    def _tree(self, ledger: str) -> StoredTree:
        return StoredTree(self._reader(), ledger, self.frontier(ledger).size, self.settings.read_page_size)

    def tree_size(self, ledger: str) -> int:
        """How many leaves the ledger's tree has: every durable record (= :meth:`size`)."""
        return self.frontier(ledger).size

    def root(self, ledger: str, size: int | None = None) -> bytes:
        """The root of the ledger's tree of ``size`` leaves (default: now); TreeSizeError past it."""
        if size is None:
            return self.frontier(ledger).root()
        return self._tree(ledger).root(size)

    def inclusion_proof(self, ledger: str, index: int, size: int) -> list[bytes]:
        """The proof that record ``index`` is in the ledger's tree of ``size`` leaves.

        Raises TreeSizeError when ``size`` is past the tree, ProofError unless index < size.
        """
        return self._tree(ledger).inclusion_proof(index, size)

    def consistency_proof(self, ledger: str, old: int, new: int) -> list[bytes]:
        """The proof that the ledger's tree of ``new`` leaves extends that of ``old`` leaves.

        Raises TreeSizeError when a size is past the tree, ProofError unless 0 < old <= new.
        """
        return self._tree(ledger).consistency_proof(old, new)

    def tile(self, ledger: str, level: int, index: int, width: int | None = None) -> bytes:
        """The tlog-tiles tile (level, index) of the ledger's tree: ``width`` hashes, or as many
        as the tree holds now. Raises TreeSizeError when the tree has fewer."""
        return self._tree(ledger).tile(level, index, width)

    def leaf_hash(self, ledger: str, index: int) -> bytes:
        """SHA-256(0x00 || record ``index``'s bytes), as the tree holds it."""
        return self._tree(ledger).leaf(index)

    def index_of(self, record_hash: bytes) -> tuple[str, int] | None:
        """The ledger and tree index (= height) of the record with this hash (its link), if held.

        A lookup by leaf hash would need an index over the tree rows that every append
        would pay for; the record hash already has one.
        """
        found = self._find_hash(record_hash)
        return None if found is None else (found[0], found[1])
