"""Verification of stores and export files from every genesis, trusting nothing they hold.

A store's ``data`` column is decoded and fed to a :class:`ChainVerifier` page by page; its
other columns are indexes, and each must agree with the record that verified. An export file
is checked line by line, one verifier per ledger. Each ledger keeps its first failure in its
:class:`LedgerReport`: one ledger's failure stops only that ledger.

A long ledger of a store is checked in chunks of heights by worker processes, one per usable
core. A worker checks every record of its chunk as the sequential verifier would, except the
first record's ``prev``, which only the record before the chunk can answer; it returns a
:class:`ChunkSummary`. The parent joins the chunks in height order: each must start where the
last ended, at its height, and its first ``prev`` must be the last chunk's last link. At the
first chunk that is not clean or does not join, the parent goes on alone from the last record
that joined, with the sequential checks: so the first failure it reports is, by construction,
the sequential verifier's, code and height.

A store's ledger also has checkpoints (the latest it signed and cosigned) and, kept by its
node, a Merkle tree. Their roots are checked against the tree of the records that verified
(docs/PROTOCOL.md, sections 12 and 13), each at the record that completes it, as an export's
checkpoint lines are: a chunk is ``2**k`` heights at a multiple of ``2**k``, a complete
subtree, so a worker returns its chunk's frontier (and the frontier at each checkpoint inside
it) and the parent extends the ledger's tree with it, never touching a leaf.

The node's stored tree rows (every complete subtree of 16 leaves and more, PROTOCOL 12.6) are
checked as the node checks them when it opens the store: the lowest stored level against the
subtrees of 16 leaves that the records' leaves give (a worker returns its chunk's), each level
above against the nodes recomputed from those, so every row is compared with the records'
hash, at the record that completes it; a missing or extra row fails too.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import multiprocessing
import os
import resource
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..broker.shm import take_ownership
from ..config.settings import Limits
from ..node.checkpoint_log import EVIDENCE, KeptCheckpoint, row_disagrees
from ..node.epoch import STANDBY_KEY_FIELD, EpochHistory
from ..node.errors import (
    CosignatureError,
    FieldError,
    HeightGapError,
    IndexMismatchError,
    LineError,
    MalformedRecordError,
    NoSuchLedgerError,
    NoteError,
    PayloadTooLargeError,
    ProofError,
    RecordError,
    RotationError,
    StoreError,
    TreeMismatchError,
    UsageError,
    VledgerError,
)
from ..node.export import ExportedCheckpoint, StoredRecord, decode_export_line, line_ledger, max_line_bytes
from ..node.key_rotation import ROTATION_KIND, KeyChain, chain_of, pinned_checkpoint_key
from ..node.ledger import LedgerRules
from ..node.note import Checkpoint, VerifierKey, parse_checkpoint, parse_note, verify_checkpoint, verify_signature
from ..node.record import ZERO_LINK, Record, decode_record, record_of_checked
from ..node.rules.admin import ADMIN_LEDGER
from ..node.still_store import still_store

# level_rows: the node's own reader of a tree level (its open check, check_tree): shared, not copied.
from ..node.storefile import (
    STORED_LEVEL,
    StoreReader,
    StoreRow,
    connect,
    edge_covers,
    lenient_text,
    level_rows,
    sqlite_type,
    tree_kept,
)
from ..node.tree import Frontier, leaf_hash
from ..node.verify import ChainVerifier
from .hash_index import IndexScan, IndexSum, add_record_page, first_difference, new_key, runs_wrong, scan_index
from .paths import export_file, store_dir
from .progress import Progress
from .rules_check import ReadRecords, RulesVerdict, judge_rules

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LedgerReport:
    """What a check found in one ledger: the records that verified, and its first failure."""

    ledger: str
    records: int = 0
    head: bytes | None = None
    error: VledgerError | None = None
    error_height: int | None = None
    error_line: int | None = None
    imported: int = 0
    present: int = 0
    checkpoints: int = 0  # checkpoint lines whose root is the records' (and signature, when pinned)
    vouched: int = 0  # the size of the largest of those: its records are vouched for, any past it not
    kept: int = 0  # (import) checkpoint rows its lines added to the store: none for one held already
    cosigned: int = 0  # cosignature lines of its checkpoints that verified with a witness key given
    unchecked: int = 0  # cosignature lines by a witness no key given names: not checked
    index: IndexSum | None = None  # (store) the sum of its records below the hash index's mark, once verified
    rules: RulesVerdict | None = None  # what the observers' rules found in its records that verified (None: not run)

    @property
    def ok(self) -> bool:
        """Its records verified, and none breaks a rule the observers flag."""
        return self.error is None and (self.rules is None or not self.rules.violations)

    @property
    def unvouched(self) -> int:
        """Its records past its largest checkpoint that verified: a copy cut there, checkpoint
        lines and all, would verify as well (outsider26 I4). 0 for a ledger whose chain failed."""
        return max(self.records - self.vouched, 0) if self.error is None else 0

    def vouch(self, size: int) -> None:
        self.checkpoints += 1
        self.vouched = max(self.vouched, size)

    def accept(self, record: Record) -> None:
        self.records += 1
        self.head = record.hash

    def accept_many(self, count: int, head: bytes) -> None:
        """``count`` more records verified, the last of them with the link ``head``."""
        self.records += count
        self.head = head

    def fail(self, error: VledgerError, height: int | None, line: int | None = None) -> None:
        """Keep the first failure only: what follows a broken link proves nothing more.
        ``line`` is the export line it was found on (None in a store)."""
        if self.error is None:
            self.error = error
            self.error_height = height
            self.error_line = line


@dataclass(slots=True)
class Verification:
    """The reports of every ledger checked, and a failure no ledger owns: a first line that
    names no ledger, or a file of CR LF lines (``error_line`` is its line number)."""

    reports: list[LedgerReport] = field(default_factory=list)
    error: VledgerError | None = None
    error_line: int | None = None
    witness_keys: int = 0  # witness keys the cosignatures were checked with (0: none checked)
    worker_cpu: float = 0.0  # CPU seconds the worker processes spent on their chunks (not printed)
    worker_rss: int = 0  # the largest resident size of a worker process, KiB (not printed)
    tree_unchecked: str | None = None  # (store) why its Merkle tree was not checked, printed: None when it was
    # (vledger verify --require-checkpoint, or --witness) a ledger with records past its largest
    # checkpoint that verified fails the whole: the tail of a backup may be gone, lines and all.
    require_checkpoint: bool = False
    wal_read: tuple[str, int] | None = None  # (store) the -wal whose commits were read: its name and size, printed
    rules: bool = False  # whether the observers' rules were run over the records that verified
    grants_judged: bool = False  # with them, whether an admin ledger judged grants and admin authors

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.ok for r in self.reports) and not self.unvouched()

    def unvouched(self) -> list[LedgerReport]:
        """The ledgers with records past their largest checkpoint, when that fails the whole."""
        return [r for r in self.reports if r.unvouched] if self.require_checkpoint else []


def verify_path(
    path: Path,
    wanted: str | None,
    limits: Limits,
    *,
    fork: bool = False,
    witnesses: Sequence[VerifierKey] = (),
    require_checkpoint: bool = False,
    rules: bool = True,
) -> Verification:
    """``vledger verify PATH``: a store directory or an export file, checked from every genesis.
    ``fork``: see :func:`verify_store`; ``witnesses``: see :func:`check_cosignatures`;
    ``require_checkpoint``: a ledger with records past its largest checkpoint that verified
    fails the result; ``rules``: the observers' rules judge the records that verified
    (tools/rules_check.py), a record they flag fails its ledger. Raises UsageError for a path
    that is neither."""
    if not path.exists():
        raise UsageError(f"{path}: no such store directory or export file")
    if path.is_dir():
        result = verify_store(store_dir(path), wanted, limits, fork=fork, witnesses=witnesses, rules=rules)
    else:
        result = verify_file(export_file(path), wanted, limits, witnesses, rules=rules)
    result.require_checkpoint = require_checkpoint
    log.info("verified %s: ok=%s", path, result.ok)
    return result


def select_ledgers(available: Iterable[str], wanted: str | None) -> list[str]:
    """All ledgers in name order, or only ``wanted``, which must be among them."""
    ledgers = sorted(available)
    if wanted is None:
        return ledgers
    if wanted not in ledgers:
        raise NoSuchLedgerError(f"ledger {wanted!r} is not in this store or file")
    return [wanted]


# --- stores -------------------------------------------------------------------------------


# Heights a worker checks at a time: a few tenths of a second of work. A ledger shorter than
# two chunks is checked in the calling process: starting workers would cost more. A power of
# two, so that each chunk is a complete subtree of the ledger's Merkle tree. A ledger too short
# to give each worker a few chunks gets smaller ones, down to MIN_CHUNK_RECORDS, so that 100k
# records are shared out too, and evenly.
CHUNK_RECORDS = 65_536
MIN_CHUNK_RECORDS = 16_384
CHUNKS_PER_WORKER = 4
CHUNKS_AHEAD = 3  # full chunks' worth of records per worker handed out ahead of the one joined next
# Towards a ledger's end the chunks halve, down to a sixteenth of the first, while fewer than
# TAIL_CHUNKS of them are left for each worker: the workers then finish within a small chunk of
# each other, not a large one (0.6 s of a 5 s run at 65,536 records). Halving keeps every chunk
# a complete subtree: each starts at a multiple of its size.
TAIL_CHUNKS = 2
TAIL_SHRINK = 16
# Leaf hashes folded into a tree at a time outside the workers: few calls, little memory.
TREE_BATCH = 4096
_LEAF_PREFIX = hashlib.sha256(b"\x00")  # copied, never updated (_verify_rows)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


def verify_store(
    directory: Path,
    wanted: str | None,
    limits: Limits,
    workers: int | None = None,
    *,
    chunk: int = CHUNK_RECORDS,
    executor: Executor | None = None,
    fork: bool = False,
    witnesses: Sequence[VerifierKey] = (),
    rules: bool = False,
) -> Verification:
    """Check every record of the selected ledgers from genesis; one ledger's failure stops only it.

    ``workers`` processes (default: one per usable core; 1: none) check the chunks of each
    ledger of at least two chunks (``chunk`` records, fewer for a shorter ledger: chunk_size);
    ``executor``, when given, runs the chunks instead (the tests' threads). The workers are
    forked from this process when ``fork`` is asked for and it runs one thread (the command
    line's case: they start in milliseconds), else from a forkserver. Each ledger's
    checkpoints, stored tree rows and edge are checked against the tree of its records (see
    the module's docstring): the first that differs is the ledger's TreeMismatchError. With
    ``rules``, the observers' rules then judge the records that verified (:func:`_judge_store`).
    Raises StoreError for what is not a store, UsageError for a ``chunk`` that is not a power of two.
    """
    if chunk < 1 or chunk & (chunk - 1):
        raise UsageError(f"a chunk of heights is a power of two, not {chunk}")
    with still_store(directory) as still:
        result = Verification(witness_keys=len({key.name for key in witnesses}), wal_read=still.wal_read)
        _verify_still_store(still.directory, wanted, limits, workers, chunk, executor, fork, witnesses, result, rules)
        if rules and not result.rules:  # not judged beside the chunks (_verify_still_store): here, alone
            with contextlib.closing(StoreReader(still.directory, still=True)) as reader:
                _judge_store(reader, result, limits)
    return result


def _verify_still_store(
    directory: Path,
    wanted: str | None,
    limits: Limits,
    workers: int | None,
    chunk: int,
    executor: Executor | None,
    fork: bool,
    witnesses: Sequence[VerifierKey],
    result: Verification,
    rules: bool = False,
) -> None:
    """:func:`verify_store` of the folder to open the store from (node/still_store.py), into
    ``result``. With ``rules`` and workers, the rules judge every record the store holds on a
    worker while the others check the chunks (:func:`judge_store_rules`): taken when every
    ledger verified whole (a ledger's rules read its records in order, one process, so on the
    calling process after the chunks they added their time to a domain ledger's check)."""
    witness_table = witness_keys_table(witnesses)
    workers = usable_cores() if workers is None else workers
    # SQLite forbids carrying a connection into a forked child: the workers start before the
    # parent's reader opens for the records (they open their own).
    with contextlib.closing(StoreReader(directory, still=True)) as reader:
        ledgers = select_ledgers(reader.ledgers(), wanted)
        # Each ledger's highest height + 1, one index seek (COUNT(*) reads every row, 0.05 s at
        # 1M, before any worker starts): a row missing below it fails its chunk, and chunks are
        # handed out a few at a time, so that a height far above the others costs nothing
        # (_verify_chunked).
        counts = {ledger: reader.size(ledger) for ledger in ledgers}
    chunks = {ledger: chunk_size(count, workers, chunk) for ledger, count in counts.items()}
    with contextlib.ExitStack() as stack:
        pool = executor
        if pool is None and workers > 1 and any(counts[ledger] >= 2 * chunks[ledger] for ledger in ledgers):
            take_ownership()  # the pool's semaphores are named by this process; a killed one's removed
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=_worker_context(fork)))
            pool.submit(os.getpid)  # starts the workers now (with fork, all at the first call)
        judged = pool.submit(judge_store_rules, directory, counts, limits) if rules and pool is not None else None
        reader = stack.enter_context(contextlib.closing(StoreReader(directory, still=True)))
        # The stored tree rows' own connection: read a level at a time beside the records' pages.
        tree_rows = stack.enter_context(contextlib.closing(connect(reader.path, readonly=True, still=True)))
        kept = tree_kept(tree_rows)
        # The hash index is summed on a thread of its own while the records verify (hash_index.py).
        key = new_key()
        index = stack.enter_context(_IndexScanThread(reader.path, key))
        marks = index.marks()
        # Named, so that several stores verified in a row (the cluster demo) tell which is which.
        label = f"verifying {directory.name}: checksums, work, links"
        with Progress(label, sum(counts.values())) as progress:
            for ledger in ledgers:
                report = LedgerReport(ledger)
                rows = _StoredRows(tree_rows, ledger, reader.page_size) if kept else None
                tree = _StoreTree.of(reader, ledger, limits, report, rows, witness_table)
                summed = None if marks is None else _Indexed(IndexSum(key), marks.get(ledger, 0))
                try:
                    if pool is not None and counts[ledger] >= 2 * chunks[ledger]:
                        job = _Job(pool, reader, directory, ledger, limits, chunks[ledger], workers, key)
                        cpu, rss = _verify_chunked(job, counts[ledger], report, progress, tree, summed)
                        result.worker_cpu += cpu
                        result.worker_rss = max(result.worker_rss, rss)
                    else:
                        verifier = ChainVerifier(ledger, limits)
                        _verify_rows(verifier, reader.row_pages(ledger), limits, report, progress, tree, summed)
                    if tree is not None:
                        tree.finish()
                except RecordError as e:
                    report.fail(_gap_named(tree_rows, e), e.height)
                except _TreeFailure as e:
                    report.fail(e.error, e.height)
                if summed is not None:
                    report.index = summed.sum
                result.reports.append(report)
        if marks is not None:
            _check_index(index.result(), tree_rows, reader, result, counts, wanted)
        if not kept:
            _no_tree_kept(tree_rows, result)
        _check_checkpoint_rows(tree_rows, result, counts, wanted)
        if judged is not None:
            _take_judged(judged, result, counts)


def _judge_store(reader: StoreReader, result: Verification, limits: Limits) -> None:
    """The observers' rules over the records of ``result``'s ledgers that verified, after the
    store's admin ledger (its records that verify, read again when it was not selected)."""
    if ADMIN_LEDGER not in reader.ledgers():
        admin = 0
    elif (report := next((r for r in result.reports if r.ledger == ADMIN_LEDGER), None)) is not None:
        admin = report.records
    else:
        admin = _verified_count(scan_ledger(reader, ADMIN_LEDGER, limits))

    def read(counts: Mapping[str, int]) -> Iterator[Record]:
        for ledger, count in counts.items():
            for _, data in reader.iter_raw(ledger, 0, count):
                yield _record_again(data, limits)

    judge(result, lambda ledger: _genesis_rules(reader, ledger, limits), read, admin)


def judge_store_rules(
    directory: Path, counts: Mapping[str, int], limits: Limits
) -> tuple[dict[str, RulesVerdict | None], bool]:
    """A worker's job: :func:`_judge_store` of ``counts[ledger]`` records of each ledger (all the
    store holds, before they verified): each ledger's verdict, and whether grants were judged."""
    result = Verification([LedgerReport(ledger, records=count) for ledger, count in counts.items()])
    with contextlib.closing(StoreReader(directory, still=True)) as reader:
        _judge_store(reader, result, limits)
    return {report.ledger: report.rules for report in result.reports}, result.grants_judged


def _take_judged(
    judged: Future[tuple[dict[str, RulesVerdict | None], bool]], result: Verification, counts: Mapping[str, int]
) -> None:
    """The verdicts of :func:`judge_store_rules` into ``result`` when they judged what verified:
    every ledger's records whole, the admin ledger's among them when it was selected (the worker
    read it as verified). Else ``result`` is left unjudged, for the records that did verify to be
    judged alone, and so when the worker failed."""
    whole = all(r.error is None and r.records == counts.get(r.ledger) for r in result.reports)
    if not whole or result.error is not None:
        judged.cancel()
        return
    try:
        verdicts, result.grants_judged = judged.result()
    except Exception as e:  # a worker that died: judged again in this process
        log.warning("the rules' worker failed (%s); judging in this process", e)
        return
    result.rules = True
    for report in result.reports:
        report.rules = verdicts.get(report.ledger)


def _record_again(data: bytes, limits: Limits) -> Record:
    """The record of bytes read again to judge them: bytes that verified decode to the same
    record without the checks (record_of_checked, ~5 us a record less than decode_record, a
    seventh of the rules' time); bytes that do not decode so are decoded with the checks, which
    raise their failure. Read before they verified (judge_store_rules), bytes that then fail
    are judged for nothing: their ledger's verdict is the chain's failure."""
    try:
        return record_of_checked(data)
    except (ValueError, KeyError, TypeError, AttributeError):
        return decode_record(data, limits)


def _verified_count(records: Iterable[object]) -> int:
    """How many of ``records`` (a verifying iterator) verified before its first failure."""
    count = 0
    with contextlib.suppress(VledgerError):
        for _ in records:
            count += 1
    return count


def judge(
    result: Verification, rules_of: Callable[[str], LedgerRules | None], read: ReadRecords, admin_records: int
) -> None:
    """Set each ledger's verdict of the observers' rules (tools/rules_check.py) in ``result``: the
    records of each ledger whose chain verified, after ``admin_records`` of the admin ledger."""
    counts = {report.ledger: report.records for report in result.reports if report.error is None}
    verdicts, result.grants_judged = judge_rules(counts, rules_of, read, admin_records=admin_records)
    result.rules = True
    for report in result.reports:
        report.rules = verdicts.get(report.ledger)


def _gap_named(conn: sqlite3.Connection, error: RecordError) -> RecordError:
    """``error``, or for a height missing from its ledger the same saying why, when a row's
    height or ledger column of another type is why: the pages read a ledger's rows by their
    integer heights, so such a row's record is missing there (as for a node). Two seeks: TEXT
    and BLOB sort after every number, BLOBs after all TEXT."""
    if not isinstance(error, HeightGapError) or error.ledger is None:
        return error
    rows = lenient_text(conn, "SELECT height FROM records WHERE ledger = ? AND height >= '' LIMIT 1", (error.ledger,))
    if rows:
        why = f"a row of the ledger holds its height as {sqlite_type(rows[0][0])} ({rows[0][0]!r}), not as an integer"
    else:
        rows = lenient_text(conn, "SELECT ledger, height FROM records WHERE ledger >= X'' LIMIT 1", ())
        if not rows:
            return error
        why = f"the row at height {rows[0][1]!r} holds its ledger as BLOB ({rows[0][0]!r}), not as TEXT"
    return HeightGapError(f"{error.message}: {why}", ledger=error.ledger, height=error.height)


def _no_tree_kept(conn: sqlite3.Connection, result: Verification) -> None:
    """A store whose meta row says it keeps no tree: one from before the tree (no tree rows, no
    edge) is named in the verdict, never passed silently; one that holds tree rows or edges is a
    meta row changed to skip the check (whoever can rewrite a tree row can rewrite that row too),
    which fails."""
    held = conn.execute("SELECT 1 FROM tree_edge UNION ALL SELECT 1 FROM tree LIMIT 1").fetchone()
    if held is not None:
        if result.error is None:
            result.error = TreeMismatchError(
                "the store's meta row says it keeps no Merkle tree, yet it holds tree rows: its tree is not "
                "checked, and a node opening the store would build the tree anew from the records"
            )
        return
    if result.reports:
        result.tree_unchecked = "a store from before the tree (a node builds it when it next opens the store)"


def _check_checkpoint_rows(
    conn: sqlite3.Connection, result: Verification, counts: Mapping[str, int], wanted: str | None
) -> None:
    """Every checkpoint row of the selected ledgers (all when ``wanted`` is None), the latest of
    each kind and every older one, against its own note (checkpoint_log.row_disagrees: the size,
    root and ledger columns the node selects by, the kind its signatures say, an at_ms in
    milliseconds; a column of another type is a finding too),
    and each signed, cosigned or imported one against the records it proves the store held: a
    ledger with none of its records left (deleted whole) fails here, as one cut short fails at
    its latest checkpoint. Evidence rows prove nothing of this store's records."""
    reports = {report.ledger: report for report in result.reports}
    rows = lenient_text(  # a note tampered into TEXT that is not UTF-8: its row's finding, not a failed read
        conn,
        "SELECT ledger, kind, size, root, note, at_ms FROM checkpoints WHERE ?1 IS NULL OR ledger = ?1 "
        "ORDER BY ledger, size",
        (wanted,),
    )
    for ledger, kind, size, root, note, at_ms in rows:
        if type(ledger) is not str:  # a row that names no ledger: the store's finding
            if result.error is None:
                result.error = StoreError(
                    f"the checkpoints table's {kind!r} row at size {size!r}: its ledger is stored as "
                    f"{sqlite_type(ledger)}, not as TEXT"
                )
            continue
        wrong: str | None
        if type(size) is not int:
            wrong = f"its size is stored as {sqlite_type(size)}, not as an integer"
        elif type(note) is bytes and type(root) is bytes:
            wrong = row_disagrees(KeptCheckpoint(ledger, kind, size, root, note, at_ms))
        else:
            wrong = "its root or note is not a BLOB"
        proves = kind != EVIDENCE
        if wrong is None and (not proves or ledger in counts):
            continue
        report = reports.get(ledger)
        if report is None:  # a ledger with checkpoints and no records
            report = reports[ledger] = LedgerReport(ledger)
            result.reports.append(report)
        if wrong is not None:
            error = StoreError(f"ledger {ledger!r}: the checkpoints table's {kind} row at size {size}: {wrong}")
        else:
            error = StoreError(
                f"ledger {ledger!r}: a stored {kind} checkpoint of size {size}, but the store holds none of its records"
            )
        report.fail(error, max(size - 1, 0) if type(size) is int else None)


@dataclass(frozen=True, slots=True)
class _Indexed:
    """A ledger's records' side of the hash index check: their sum, and the mark below which
    the index holds them."""

    sum: IndexSum
    mark: int


class _IndexScanThread:
    """:func:`scan_index` on a thread with its own connection: :meth:`marks` waits for the
    marks it read (None for a store whose index is the hash column's: nothing to check),
    :meth:`result` for the sums (raising what the scan raised)."""

    def __init__(self, path: Path, key: bytes) -> None:
        self._path, self._key = path, key
        self._marks: dict[str, int] | None = None
        self._marks_read = threading.Event()
        self._scan: IndexScan | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="verify:hash-index", daemon=True)

    def __enter__(self) -> _IndexScanThread:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._thread.join()

    def _run(self) -> None:
        try:
            with contextlib.closing(connect(self._path, readonly=True, still=True)) as conn:
                self._scan = scan_index(conn, self._key, self._got_marks)
        except sqlite3.Error as e:
            self._error = StoreError(f"{self._path}: cannot read the hash index: {e}")
        except BaseException as e:  # handed to the caller, which raises it
            self._error = e
        finally:
            self._marks_read.set()

    def _got_marks(self, layout: str, marks: dict[str, int]) -> None:
        self._marks = None if layout == "none" else marks
        self._marks_read.set()

    def marks(self) -> dict[str, int] | None:
        self._marks_read.wait()
        if self._error is not None:
            raise self._error
        return self._marks

    def result(self) -> IndexScan:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._scan is not None
        return self._scan


def _check_index(
    scan: IndexScan,
    conn: sqlite3.Connection,
    reader: StoreReader,
    result: Verification,
    counts: dict[str, int],
    wanted: str | None,
) -> None:
    """Compare each ledger's index sum with its records' (a ledger that failed already is left
    as it is); name the first wrong height of one that differs (IndexMismatchError). Rows of a
    ledger with no records, or of a run hash_runs does not list, fail the store."""
    for report in result.reports:
        ledger = report.ledger
        held = scan.sums.pop(ledger, None)
        if not report.ok or report.index is None:
            continue
        records = report.index
        if held is None:
            held = IndexSum(b"\0" * 16)  # no rows: the count alone differs, if the mark says any
        if held.damaged or held.count != records.count or held.total != records.total:
            mark = scan.marks.get(ledger, 0)
            error = first_difference(conn, scan.layout, ledger, mark, reader.iter_rows(ledger, 0, mark), counts[ledger])
            report.records = min(report.records, error.height or 0)
            report.fail(error, error.height)
    if wanted is not None:
        return
    if scan.unlisted:
        result.error = IndexMismatchError(
            f"the hash index has rows in run {scan.unlisted[0]}, which hash_runs does not list"
        )
    # A run's count that its rows contradict is left to a ledger's finding when one failed (it names the height).
    elif (wrong := runs_wrong(scan, counts=all(r.error is None for r in result.reports))) is not None:
        result.error = IndexMismatchError(wrong)
    elif scan.sums:
        ledger, held = next(iter(sorted(scan.sums.items())))
        result.error = IndexMismatchError(
            f"the hash index has {held.count} rows of ledger {ledger!r}, which has no records"
        )


def _worker_context(fork: bool) -> multiprocessing.context.BaseContext:
    """fork when asked and this process runs one thread: a fork copies only the calling thread,
    so another's lock or socket would be caught mid-flight. Else forkserver, whose server
    imports this module (~0.2 s) before it forks each worker."""
    if fork and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def chunk_spans(count: int, workers: int, chunk: int) -> Iterator[tuple[int, int]]:
    """The heights [start, stop) of each chunk of a ledger of ``count`` records: ``chunk`` each
    (a power of two), halved towards the end (see TAIL_CHUNKS); the last may be short. Each
    starts at a multiple of its size, so that it is a complete subtree of the ledger's tree."""
    floor = max(chunk // TAIL_SHRINK, 1)
    start, size = 0, chunk
    while start < count:
        while size > floor and count - start < TAIL_CHUNKS * max(workers, 1) * size:
            size //= 2
        stop = min(start + size, count)
        yield start, stop
        start = stop


def chunk_size(count: int, workers: int, chunk: int = CHUNK_RECORDS) -> int:
    """The chunk for a ledger of ``count`` records: ``chunk``, halved (not below
    MIN_CHUNK_RECORDS) while it would give ``workers`` fewer than CHUNKS_PER_WORKER each."""
    size = chunk
    while size // 2 >= MIN_CHUNK_RECORDS and count < CHUNKS_PER_WORKER * max(workers, 1) * size:
        size //= 2
    return size


class _TreeFailure(Exception):
    """A checkpoint or the stored tree disagrees with the records: ``error`` at ``height``."""

    def __init__(self, error: VledgerError, height: int) -> None:
        super().__init__(error)
        self.error = error
        self.height = height


class _Growth:
    """A tree that leaf hashes are folded into as records verify, and the sizes (``marks``,
    ascending) at which ``reached`` must see it: the only sizes a fold may stop short of."""

    def __init__(self, frontier: Frontier, marks: Iterable[int], reached: Callable[[Frontier], None]) -> None:
        self.frontier = frontier
        self.marks = sorted(m for m in set(marks) if m > frontier.size)
        self.reached = reached
        self.due = TREE_BATCH
        # The complete subtrees of 2**STORED_LEVEL leaves folded in, in order (by :meth:`completed`).
        self.bottom: list[bytes] = []
        self.refresh()

    def refresh(self) -> None:
        """Count :attr:`due` again from the tree's size: the leaves to collect before the next fold."""
        self.due = min(TREE_BATCH, self.marks[0] - self.frontier.size) if self.marks else TREE_BATCH

    def fold(self, leaves: list[bytes]) -> None:
        """Add ``leaves`` (at most :attr:`due` of them); at a mark, show the tree to ``reached``."""
        self.completed(self.frontier.append_keeping(leaves, STORED_LEVEL))
        if self.marks and self.frontier.size == self.marks[0]:
            del self.marks[0]
            self.reached(self.frontier)
        self.refresh()

    def completed(self, nodes: Sequence[bytes]) -> None:
        """The next complete subtrees of 2**STORED_LEVEL leaves: kept (a worker returns them)."""
        self.bottom.extend(nodes)


class _StoredRows:
    """One ledger's stored tree rows, compared with the tree of the records that verified as
    its complete subtrees of 2**STORED_LEVEL leaves come (:meth:`add`): each row of that level
    with the subtree its 16 records give, each row above with the node recomputed from them.
    Raises :class:`_TreeFailure` (TreeMismatchError naming ledger, level and index) at the
    first missing or different row, at the height of the record that completes it."""

    def __init__(self, conn: Any, ledger: str, page_size: int) -> None:
        self.conn, self.ledger, self.page_size = conn, ledger, page_size
        self.upper = Frontier()  # the tree whose leaves are the subtrees of the lowest stored level
        self.levels: dict[int, Iterator[tuple[int, bytes]]] = {}

    def add(self, nodes: Sequence[bytes]) -> None:
        for level, index, node in self.upper.grow(nodes):
            self._compare(level + STORED_LEVEL, index, node)

    def _compare(self, level: int, index: int, node: bytes) -> None:
        rows = self.levels.get(level)
        if rows is None:
            rows = self.levels[level] = level_rows(self.conn, self.ledger, level, self.page_size)
        row = next(rows, None)
        last = ((index + 1) << level) - 1  # the record that completes the node
        if row is None or row[0] != index:
            raise _TreeFailure(
                TreeMismatchError(
                    f"ledger {self.ledger!r}: the stored tree lacks its node at level {level}, index {index}"
                ),
                last,
            )
        if type(row[1]) is not bytes:
            raise _TreeFailure(
                TreeMismatchError(
                    f"ledger {self.ledger!r}: the stored tree's node at level {level}, index {index} "
                    f"is stored as {sqlite_type(row[1])}, not as a BLOB"
                ),
                last,
            )
        if row[1] != node:
            raise _TreeFailure(
                TreeMismatchError(
                    f"ledger {self.ledger!r}: the stored tree's node at level {level}, index {index} "
                    f"does not match the records up to {last}"
                ),
                last,
            )

    def finish(self, records: int) -> None:
        """After the ledger's last record: a stored row that no complete subtree of its records
        gives (past its end, or at a level they do not reach) fails at the last record."""
        for level, rows in sorted(self.levels.items()):
            extra = next(rows, None)
            if extra is not None:
                self._past(level, extra[0], records)
        other = self.conn.execute(
            "SELECT level, idx FROM tree WHERE ledger = ? AND (level < ? OR level >= ?) ORDER BY level, idx LIMIT 1",
            (self.ledger, STORED_LEVEL, STORED_LEVEL + len(self.levels)),
        ).fetchone()
        if other is not None:
            self._past(other[0], other[1], records)

    def _past(self, level: int, index: int, records: int) -> None:
        raise _TreeFailure(
            TreeMismatchError(
                f"ledger {self.ledger!r}: the stored tree has a node at level {level}, index {index} "
                f"past its {records} records"
            ),
            max(records - 1, 0),
        )


class _StoreTree(_Growth):
    """The parent's tree of one store ledger: its checkpoints (and its stored tree edge) are
    checked when the records up to their size have verified; :meth:`finish` then fails what
    the records never reached. Raises :class:`_TreeFailure` for the first that disagrees."""

    def __init__(
        self,
        reader: StoreReader,
        ledger: str,
        limits: Limits,
        report: LedgerReport,
        notes: list[tuple[int, bytes]],
        rows: _StoredRows | None = None,
        witnesses: WitnessTable | None = None,
    ) -> None:
        self.reader, self.ledger, self.limits, self.report = reader, ledger, limits, report
        self.witnesses = witnesses or {}
        self.rows = rows  # the stored tree rows, when the store keeps its tree
        self.checkpoints: dict[int, list[tuple[Checkpoint, bytes]]] = {}
        self.unreadable: list[tuple[int, NoteError]] = []
        for size, note in notes:
            if not note:  # StoreReader.latest_checkpoints' note of a column of another type than BLOB
                self.unreadable.append((size, NoteError("the note is empty, or stored as another type than a BLOB")))
                continue
            try:
                checkpoint = parse_checkpoint(parse_note(note).text)
            except NoteError as e:
                self.unreadable.append((size, e))
                continue
            self.checkpoints.setdefault(checkpoint.size, []).append((checkpoint, note))
        self.edge: Frontier | None = None
        self.edge_error: ProofError | None = None
        try:
            self.edge = reader.tree_edge(ledger)
        except ProofError as e:
            self.edge_error = e
        marks = list(self.checkpoints)
        if self.edge is not None:
            marks.append(self.edge.size)
        self._rules: LedgerRules | None = None
        super().__init__(Frontier(), marks, self.check)

    @classmethod
    def of(
        cls,
        reader: StoreReader,
        ledger: str,
        limits: Limits,
        report: LedgerReport,
        rows: _StoredRows | None,
        witnesses: WitnessTable | None = None,
    ) -> _StoreTree | None:
        """The ledger's tree check, or None when the store holds no checkpoint and no tree of it
        (``rows``: its stored tree rows, None for a store from before the tree)."""
        notes = reader.latest_checkpoints(ledger)
        if not notes and rows is None:
            return None
        return cls(reader, ledger, limits, report, notes, rows, witnesses)

    def completed(self, nodes: Sequence[bytes]) -> None:
        """The next complete subtrees of 2**STORED_LEVEL leaves: the stored rows they give, checked."""
        if self.rows is not None:
            try:
                self.rows.add(nodes)
            except _TreeFailure as e:
                # The records up to the one that completes the row verified, whatever batch or
                # chunk brought them: the same count sequentially and in chunks.
                self.report.records = e.height + 1
                raise

    def join(self, chunk: ChunkSummary) -> None:
        """Add a clean chunk's records (``chunk.tree``) after those folded in: the stored rows
        its subtrees give and the checkpoints of its marks, checked in height order."""
        first = chunk.start >> STORED_LEVEL  # the index of chunk.bottom[0], which starts on a subtree
        checked = 0
        for size, link, hashes in chunk.marks:
            below = max((size >> STORED_LEVEL) - first, checked)  # the subtrees completed by the mark
            self.completed(chunk.bottom[checked:below])
            checked = below
            # The ledger's tree at the mark: this chunk's subtrees below it, on the chunks before.
            self.report.records, self.report.head = size, link
            at = self.frontier.copy()
            at.extend(Frontier(size - chunk.start, hashes))
            self.marks.remove(size)
            self.check(at)
        bottom = chunk.bottom[checked:]
        group = 1 << STORED_LEVEL
        partial = self.frontier.size % group
        if partial or chunk.count < group:
            # A chunk smaller than a stored subtree (a test's): the subtree it completes, if any,
            # from the edge's hashes below that level and the chunk's.
            edge = self.frontier.hashes
            part = Frontier(partial, edge[len(edge) - partial.bit_count() :])
            part.extend(Frontier(chunk.count, chunk.tree or ()))
            bottom = part.hashes if part.size == group else ()
        self.frontier.extend(Frontier(chunk.count, chunk.tree or ()))
        self.completed(bottom)
        self.refresh()

    def check(self, frontier: Frontier) -> None:
        """The checkpoints of ``frontier.size``, and the stored edge if it is that size, against it."""
        size = frontier.size
        if self.edge is not None and self.edge.size == size and self.edge.hashes != frontier.hashes:
            raise _TreeFailure(
                TreeMismatchError(
                    f"ledger {self.ledger!r}: the stored tree's right edge does not match the {size} records"
                ),
                size - 1,
            )
        for checkpoint, note in self.checkpoints.get(size, ()):
            try:
                if frontier.root() != checkpoint.root:
                    raise TreeMismatchError(
                        f"ledger {self.ledger!r}: the stored checkpoint's root is not the tree of the {size} records"
                    )
                self._check_signature(note, size)
                check_cosignatures(note, checkpoint.origin, self.witnesses, self.report)
            except VledgerError as e:
                raise _TreeFailure(e, size - 1) from e
            self.report.vouch(size)

    def _check_signature(self, note: bytes, size: int) -> None:
        """The note signed by the key the genesis pins; for a ledger that may rotate it (13.8) or
        hand over to a standby (10.9), by the key in force at ``size`` along its records."""
        rules = self.rules()
        key = pinned_checkpoint_key(self.ledger, rules)
        if key is None:
            return
        if ROTATION_KIND not in rules.kinds and STANDBY_KEY_FIELD not in rules.rules:
            verify_checkpoint(note, key)
            return
        records = [decode_record(data, self.limits) for _, data in self.reader.iter_raw(self.ledger, 0, size)]
        if STANDBY_KEY_FIELD in rules.rules:
            history = EpochHistory.from_genesis(records[0], rules)
            history.feed(records[1:])
            history.verify(note, holds=True)  # it holds every record up to the checkpoint's size
            return
        chain = chain_of(self.ledger, rules, records[1:])
        if chain is not None:
            chain.check(note)

    def rules(self) -> LedgerRules:
        if self._rules is None:
            self._rules = _genesis_rules(self.reader, self.ledger, self.limits)
        return self._rules

    def finish(self) -> None:
        """After the ledger's last record: a checkpoint larger than the ledger fails at its size."""
        records = self.frontier.size
        if self.edge_error is not None:
            raise _TreeFailure(
                TreeMismatchError(f"ledger {self.ledger!r}: the stored tree's right edge: {self.edge_error.message}"),
                max(records - 1, 0),
            )
        if self.unreadable:
            size, e = self.unreadable[0]
            raise _TreeFailure(
                FieldError(f"a stored checkpoint note does not read as a checkpoint: {e.message}", ledger=self.ledger),
                records,
            )
        for size in self.marks:  # the smallest first: the first failure
            if size in self.checkpoints:
                raise _TreeFailure(
                    FieldError(
                        f"a stored checkpoint of size {size}, but the ledger has {records} records", ledger=self.ledger
                    ),
                    size - 1,
                )
            # A node's edge never covers more records than it wrote: records gone below it show here.
            raise _TreeFailure(
                TreeMismatchError(
                    f"ledger {self.ledger!r}: the stored tree's right edge covers {size} records, "
                    f"the ledger has {records}"
                ),
                size - 1,
            )
        if self.rows is not None:
            if self.edge is None:  # the node writes it with the ledger's first record
                raise _TreeFailure(
                    TreeMismatchError(f"ledger {self.ledger!r}: the stored tree has no right edge"),
                    max(records - 1, 0),
                )
            if not edge_covers(self.edge.size, records):
                # A node rewrites its edge in each commit that completes a stored subtree: an
                # edge that records past it complete one of is not one a node left.
                raise _TreeFailure(
                    TreeMismatchError(
                        f"ledger {self.ledger!r}: the stored tree's right edge covers {self.edge.size} records, "
                        f"yet the records past it, up to {records}, complete a stored subtree"
                    ),
                    max(records - 1, 0),
                )
            self.rows.finish(records)


def _verify_rows(
    verifier: ChainVerifier,
    pages: Iterable[Sequence[tuple[Any, ...]]],
    limits: Limits,
    report: LedgerReport,
    progress: Progress | None = None,
    tree: _Growth | None = None,
    index: _Indexed | None = None,
) -> None:
    """Check the rows of ``pages`` (:meth:`StoreReader.row_pages`) as the records after
    ``verifier``'s head, counting each that verified into ``report``; raises the first failure
    (a RecordError) as :func:`scan_ledger` would. With a ``tree``, each record that verified is
    its next leaf, folded in before the next record is checked whenever a mark is reached (so
    a checkpoint's failure comes before a later record's). With an ``index``, each page's rows
    below its mark are added to its sum once they verified."""
    # Each leaf hash a copy of a hash that took the leaf prefix, updated with the record: no
    # copy of the record behind b"\x00" (tree.leaf_hash, 10% less a leaf).
    leaf_prefixed = _LEAF_PREFIX.copy
    take_rows = verifier.take_rows
    leaves: list[bytes] = []
    due = tree.due if tree is not None else 0
    # Records verified since ``report`` last counted them, and the last one's link: the report
    # is brought up to date at each fold and at the end, not at every record.
    count, head = 0, verifier.prev
    try:
        for page in pages:
            begin, size = 0, len(page)
            while begin < size:
                # A run of rows in one call (take_rows), up to the next fold at most: a mark's
                # checkpoint is still checked before any record above it. (At least one row:
                # a tree's due is never below 1, but a run of none would never end.)
                end = size if tree is None else min(size, begin + max(due - len(leaves), 1))
                taken = take_rows(page, begin, end)
                count += taken - begin
                head = verifier.prev
                if taken < end:
                    # The checks one by one: they name the row's fault, or take a record the
                    # fast path leaves to them (a nested payload, say).
                    _check_row(verifier, StoreRow(*page[taken]), limits)
                    taken += 1
                    count += 1
                    head = verifier.prev
                if tree is not None:
                    for row in page[begin:taken]:
                        leaf = leaf_prefixed()
                        leaf.update(row[4])
                        leaves.append(leaf.digest())
                    if len(leaves) == due:
                        report.accept_many(count, head)
                        count = 0
                        tree.fold(leaves)
                        leaves, due = [], tree.due
                begin = taken
            if index is not None:
                add_record_page(index.sum, page, index.mark)
            if progress is not None:
                progress.advance(len(page))
    finally:
        if count:
            report.accept_many(count, head)
    if tree is not None and leaves:
        tree.fold(leaves)


@dataclass(frozen=True, slots=True)
class ChunkSummary:
    """What a worker found in heights [start, stop): ``count`` records from ``start`` passed every
    check but the first one's chain check; ``clean`` when that is the whole chunk."""

    start: int
    stop: int
    count: int
    first_prev: bytes | None  # the first record's prev, for the parent's chain check
    last_link: bytes | None
    clean: bool
    cpu: float = 0.0  # the worker's CPU seconds for this chunk
    rss: int = 0  # the worker's largest resident size so far, KiB
    tree: tuple[bytes, ...] | None = None  # the frontier of the chunk's leaves, when asked and clean
    # At each size asked for inside the chunk, (size, the link of record size - 1, the frontier
    # of the chunk's leaves below that size).
    marks: tuple[tuple[int, bytes, tuple[bytes, ...]], ...] = ()
    # The chunk's complete subtrees of 2**STORED_LEVEL leaves, in order, when asked and clean
    # (what the parent checks the lowest stored tree rows against).
    bottom: tuple[bytes, ...] = ()
    # The rows below the hash index's mark that verified, when asked: how many, and their sum.
    index_count: int = 0
    index_total: int = 0


def verify_chunk(
    directory: Path,
    ledger: str,
    start: int,
    stop: int,
    limits: Limits,
    marks: tuple[int, ...] | None = None,
    index: tuple[bytes, int] | None = None,
) -> ChunkSummary:
    """A worker's job: check the records of heights [start, stop) of ``ledger`` in the store at
    ``directory``, as the sequential verifier would after a record whose link is the first
    one's ``prev``. Stops at the first failure; never raises for what the store holds.

    With ``marks`` (sizes of the ledger's tree, each in (start, stop]), it also hashes the
    chunk's leaves and returns their frontier, and the frontier at each mark. With ``index``
    (a key and the hash index's mark), it sums the rows below the mark (hash_index.py)."""
    report = LedgerReport(ledger)
    first_prev: bytes | None = None
    cpu = time.process_time()
    tree: _Growth | None = None
    seen: list[tuple[int, bytes, tuple[bytes, ...]]] = []
    if marks is not None:

        def reached(frontier: Frontier) -> None:
            assert report.head is not None  # a mark is reached after a record verified
            seen.append((start + frontier.size, report.head, frontier.hashes))

        tree = _Growth(Frontier(), (mark - start for mark in marks), reached)
    summed = None if index is None else _Indexed(IndexSum(index[0]), index[1])
    try:
        with contextlib.closing(StoreReader(directory, still=True)) as reader:
            if start == 0:
                verifier = ChainVerifier(ledger, limits)
                first_prev = ZERO_LINK
            else:
                rules = _genesis_rules(reader, ledger, limits)
                first = next(reader.iter_raw(ledger, start, start + 1), None)
                if first is None or first[0] != start:
                    return ChunkSummary(start, stop, 0, None, None, False)
                first_prev = decode_record(first[1], limits).prev
                verifier = ChainVerifier.after(ledger, start - 1, first_prev, rules, limits)
                report.head = first_prev
            _verify_rows(verifier, reader.row_pages(ledger, start, stop), limits, report, None, tree, summed)
    except VledgerError:
        return ChunkSummary(
            start, stop, report.records, first_prev, report.head, False, time.process_time() - cpu, max_rss()
        )
    clean = report.records == stop - start
    frontier = tree.frontier.hashes if tree is not None and clean else None
    return ChunkSummary(
        start,
        stop,
        report.records,
        first_prev,
        report.head,
        clean,
        time.process_time() - cpu,
        max_rss(),
        frontier,
        tuple(seen),
        tuple(tree.bottom) if tree is not None and clean else (),
        summed.sum.count if summed is not None else 0,
        summed.sum.total if summed is not None else 0,
    )


def max_rss() -> int:
    """This process's largest resident size so far, in KiB: Linux's VmHWM, which starts again
    at exec (ru_maxrss keeps the peak of the process that forked it), else ru_maxrss."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _genesis_rules(reader: StoreReader, ledger: str, limits: Limits) -> LedgerRules:
    """The rules of ``ledger``'s genesis row, checked as the first record (raises its failure)."""
    rows = list(reader.iter_raw(ledger, 0, 1))
    if not rows:
        raise HeightGapError("expected height 0, found no genesis row", ledger=ledger, height=0)
    return ChainVerifier(ledger, limits).check(decode_record(rows[0][1], limits))


@dataclass(frozen=True, slots=True)
class _Job:
    """One store's chunked check: where the chunks run, what they read."""

    pool: Executor
    reader: StoreReader
    directory: Path
    ledger: str
    limits: Limits
    chunk: int
    workers: int
    key: bytes  # the hash index sums' key


def _verify_chunked(
    job: _Job,
    count: int,
    report: LedgerReport,
    progress: Progress,
    tree: _StoreTree | None = None,
    index: _Indexed | None = None,
) -> tuple[float, int]:
    """Check ``job.ledger``'s ``count`` records in chunks on ``job.pool``, then join them (see
    the module's docstring); raises the first failure exactly as the sequential checks would,
    a checkpoint's included. Returns the CPU seconds the chunks took and the largest resident
    size of a worker (KiB)."""
    ledger, limits = job.ledger, job.limits

    def marks(start: int, stop: int) -> tuple[int, ...] | None:
        return None if tree is None else tuple(m for m in tree.marks if start < m <= stop)

    def submit(start: int, stop: int) -> Future[ChunkSummary]:
        summed = None if index is None else (job.key, index.mark)
        return job.pool.submit(verify_chunk, job.directory, ledger, start, stop, limits, marks(start, stop), summed)

    # A few full chunks' worth of records handed out past the one joined next keep every worker
    # busy (however small the chunks of the tail); the rest wait, so that little is queued past
    # a chunk that fails (or past the rows, see verify_store).
    spans = chunk_spans(count, job.workers, job.chunk)
    futures: collections.deque[Future[ChunkSummary]] = collections.deque()
    ahead, queued = CHUNKS_AHEAD * job.workers * job.chunk, 0

    def top_up() -> None:
        nonlocal queued
        while queued < ahead and (span := next(spans, None)) is not None:
            futures.append(submit(*span))
            queued += span[1] - span[0]

    top_up()
    next_height, prev, cpu, rss = 0, ZERO_LINK, 0.0, 0
    try:
        while futures:
            try:
                chunk = futures.popleft().result()
            except Exception as e:  # a worker that died: the parent checks the rest alone
                log.warning("a verifying worker failed (%s); checking %s on in this process", e, ledger)
                break
            cpu += chunk.cpu
            rss = max(rss, chunk.rss)
            joins = chunk.start == next_height and chunk.first_prev == prev
            if not (chunk.clean and joins) or chunk.last_link is None:
                break
            if tree is not None:
                if chunk.tree is None:
                    break
                tree.join(chunk)
            next_height, prev = chunk.stop, chunk.last_link
            if index is not None:
                index.sum.add_sum(chunk.index_count, chunk.index_total)
            report.records = chunk.start  # as it stood before this chunk's marks
            report.accept_many(chunk.count, prev)
            progress.advance(chunk.count)
            queued -= chunk.count
            top_up()
    finally:
        for future in futures:
            future.cancel()
    # From the last record that joined (normally the ledger's end), one by one as ever.
    if next_height == 0:
        verifier = ChainVerifier(ledger, limits)
    else:
        rules = _genesis_rules(job.reader, ledger, limits)
        verifier = ChainVerifier.after(ledger, next_height - 1, prev, rules, limits)
    _verify_rows(verifier, job.reader.row_pages(ledger, next_height), limits, report, progress, tree, index)
    return cpu, rss


def scan_ledger(reader: StoreReader, ledger: str, limits: Limits) -> Iterator[StoredRecord]:
    """Yield a store ledger's records in height order, each verified before it is yielded.

    The ``data`` column is the only one trusted. The ``height`` column must agree with it, so
    that a row moved to another height is caught even where the chain still holds; the lookup
    columns must agree with the record that verified (see :func:`check_index_columns`).
    """
    verifier = ChainVerifier(ledger, limits)
    for row in reader.iter_rows(ledger):
        yield StoredRecord(_check_row(verifier, row, limits), row.data)


def _check_row(verifier: ChainVerifier, row: StoreRow, limits: Limits) -> Record:
    """The checks one by one of ``row`` as the record after ``verifier``'s head, which it becomes;
    raises the first failure, naming the row's height when the bytes cannot."""
    ledger = verifier.ledger
    if type(row.data) is not bytes:
        raise MalformedRecordError(
            f"the row's data column is stored as {sqlite_type(row.data)}, not as the record's bytes (a BLOB)",
            ledger=ledger,
            height=row.height,
        )
    try:
        record = decode_record(row.data, limits)
    except (MalformedRecordError, PayloadTooLargeError) as e:
        raise _locate(e, ledger, row.height) from e
    if record.height != row.height:
        raise HeightGapError(
            f"the row at height {row.height} holds the record of height {record.height}",
            ledger=ledger,
            height=row.height,
        )
    verifier.feed(record)
    check_index_columns(row, record)
    return record


def check_index_columns(row: StoreRow, record: Record) -> None:
    """The hash, author and request id columns must say what ``record`` says.

    The node finds records by these columns (a receipt by hash, a retry by author and request
    id), so a column that lies would hand out the wrong record although the chain is intact.
    The ledger column needs no check here: the verifier refuses a record of another ledger.
    """
    columns = (
        ("hash", row.hash, record.link),
        ("author", row.author, record.content.author),
        ("request_id", row.request_id, record.content.request_id),
    )
    for column, held, expected in columns:
        if held != expected:
            # A column tampered into another type (a hash as TEXT, NULL) is named by its type:
            # its value would show as undecodable text or None.
            shown = (
                _shown(held)
                if type(held) is type(expected)
                else f"a value stored as {sqlite_type(held)}, not as {sqlite_type(expected)}"
            )
            raise IndexMismatchError(
                f"the {column} column holds {shown}, the record {_shown(expected)}",
                ledger=record.ledger,
                height=record.height,
            )


def _shown(value: object) -> str:
    """A column value for a message; hashes in hex, anything else (even a wrong type) as its repr."""
    return value.hex() if isinstance(value, bytes) else repr(value)


def _locate(error: RecordError, ledger: str, height: int) -> RecordError:
    """The error, naming the row's ledger and height if the bytes were too broken to say them."""
    if error.ledger is not None and error.height is not None:
        return error
    return type(error)(error.reason, ledger=error.ledger or ledger, height=height)


# --- export files -------------------------------------------------------------------------


def verify_file(
    path: Path, wanted: str | None, limits: Limits, witnesses: Sequence[VerifierKey] = (), *, rules: bool = False
) -> Verification:
    """Check an export file line by line, every ledger from its genesis (its checkpoints'
    cosignatures by ``witnesses`` too); with ``rules``, the observers' rules then judge the
    records that verified, read again from the file (:func:`_judge_file`)."""
    with path.open("rb") as f:
        checker = ExportChecker(limits, wanted, witnesses=witnesses)
        result = checker.check_lines(iter_lines(f, limits))
        if rules and result.error is None:
            _judge_file(f, checker, result, limits)
        return result


def _judge_file(f: BinaryIO, checker: ExportChecker, result: Verification, limits: Limits) -> None:
    """:func:`judge` of an export's ledgers, after the file's admin ledger (its records that verify,
    checked again alone when it was not selected)."""
    admin = checker.reports.get(ADMIN_LEDGER)
    if admin is None:
        f.seek(0)
        try:
            admin = ExportChecker(limits, ADMIN_LEDGER).check_lines(iter_lines(f, limits)).reports[0]
        except NoSuchLedgerError:
            admin = LedgerReport(ADMIN_LEDGER)  # none in the file: grants and admin authors are not judged

    def read(counts: Mapping[str, int]) -> Iterator[Record]:
        f.seek(0)
        left = dict(counts)
        for number, line in iter_lines(f, limits):
            ledger = line_ledger(line)
            if ledger is None or not left.get(ledger):
                continue
            decoded = decode_export_line(line, number, limits)
            if isinstance(decoded, StoredRecord):
                left[ledger] -= 1
                yield decoded.record

    judge(result, checker.rules_of, read, admin.records)


def iter_lines(f: BinaryIO, limits: Limits) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of an export. An overlong line is cut just past the cap, never read
    whole, and the rest of it skipped, so that the next line is read as the next line."""
    cap = max_line_bytes(limits) + 2  # one byte over the cap, and the "\n"
    number = 0
    while line := f.readline(cap):
        number += 1
        if len(line) == cap and not line.endswith(b"\n"):
            while (rest := f.readline(cap)) and not rest.endswith(b"\n"):
                pass
        yield number, line


class ExportChecker:
    """Checks an export's lines as they come: one chain verifier per ledger, its first failure kept.

    Every line is read, whatever the lines before it held (docs/PROTOCOL.md, section 5): a line
    belongs to the ledger it names by its first bytes, or, when it names none, to the ledger of
    the line before it; a first line that names none is a failure of the file. So every ledger
    is read to its end, and a damaged line fails the ledger it may belong to.

    ``start`` makes the verifier for a ledger (as its lines name it) at its first line: from
    genesis for ``vledger verify``, or after a store's record for ``vledger import``. ``also``
    is a further check of each record that verified (the import's comparison with the store);
    it raises to fail the ledger. ``below(ledger, height)`` gives the bytes of a store's
    records under a ledger's first line when that is not its genesis (the import onto a store):
    checkpoint lines are checked against the tree and key chain of those records and the
    file's, as from a genesis.
    """

    def __init__(
        self,
        limits: Limits,
        wanted: str | None = None,
        start: Callable[[str, Record], ChainVerifier] | None = None,
        also: Callable[[StoredRecord, LedgerReport], None] | None = None,
        below: Callable[[str, int], Iterable[bytes]] | None = None,
        witnesses: Sequence[VerifierKey] = (),
    ) -> None:
        self.limits = limits
        self._witnesses = witness_keys_table(witnesses)
        self.wanted = wanted
        self.reports: dict[str, LedgerReport] = {}
        self.error: RecordError | None = None
        self.error_line: int | None = None
        self._verifiers: dict[str, ChainVerifier] = {}
        self._start = start or (lambda ledger, record: ChainVerifier(ledger, limits))
        self._also = also
        self._last: str | None = None
        # Checkpoint lines are checked against a tree grown from the genesis: a ledger whose
        # first line is above it starts from the store's records below (``below``).
        self._below = below
        self._trees: dict[str, Frontier] = {}
        # A ledger whose genesis pins a standby key: its epochs, from its records (PROTOCOL 10.9).
        self._epochs: dict[str, EpochHistory | None] = {}
        self._counted: set[tuple[str, bytes]] = set()  # (ledger, note) of the checkpoint lines counted
        # Each ledger's checkpoint key chain (13.8), for the ledgers read from their genesis.
        self._chains: dict[str, KeyChain | None] = {}

    def check_lines(self, lines: Iterable[tuple[int, bytes]]) -> Verification:
        """Check every line; a file whose first line ends in CR LF gets that one answer."""
        with Progress("verifying") as progress:
            for number, line in lines:
                if number == 1 and line.endswith(b"\r\n"):
                    # Every line of such a file would fail alike, each ledger at height 0.
                    error = LineError(
                        "line 1: the file's lines end in CR LF; an export's lines end in LF alone"
                        " (convert the file back, e.g. with dos2unix, then verify it again)"
                    )
                    return Verification([], error, 1)
                self.check(number, line)
                progress.advance()
        return self.result()

    def check(self, number: int, line: bytes) -> None:
        """Verify the line's record as its ledger's next (or its checkpoint against the records
        before it), unless that ledger already failed."""
        ledger = line_ledger(line) or self._last
        self._last = ledger
        if ledger is None:
            try:
                decode_export_line(line, number, self.limits)
            except RecordError as e:
                if self.error is None:
                    self.error, self.error_line = e, number
            return
        report = self._report(ledger)
        if report is None or not report.ok:
            return
        verifier = self._verifiers.get(ledger)
        try:
            decoded = decode_export_line(line, number, self.limits)
            if isinstance(decoded, ExportedCheckpoint):
                self._check_checkpoint(number, decoded)
                return
            stored = decoded
            record = stored.record
            if verifier is None:
                verifier = self._verifiers[ledger] = self._start(ledger, record)
                if record.height > 0 and self._below is not None:
                    self._grow_below(ledger, record.height, verifier)
            verifier.feed(record)
            self._follow_key_chain(ledger, record, verifier)
            if self._also is not None:
                self._also(stored, report)
        except RecordError as e:
            # A record not read as far as its height is named by the position it stood at:
            # where the ledger's next record was expected.
            position = verifier.next_height if verifier is not None else report.records
            located = _locate(e, ledger, position)
            report.fail(located, located.height, number)
            return
        except VledgerError as e:
            report.fail(e, record.height, number)
            return
        report.accept(record)
        self._trees.setdefault(ledger, Frontier()).append(leaf_hash(stored.data))
        self._follow_epochs(ledger, record, verifier)

    def _grow_below(self, ledger: str, height: int, verifier: ChainVerifier) -> None:
        """The tree, key chain and epochs of ``ledger`` grown from the store's records under
        ``height`` (trusted as the store's: the verifier starts after them). Raises what
        reading them into the key chain or epochs raises."""
        assert self._below is not None
        tree = self._trees[ledger] = Frontier()
        for data in self._below(ledger, height):
            record = decode_record(data, self.limits)
            tree.append(leaf_hash(data))
            self._follow_key_chain(ledger, record, verifier)
            self._follow_epochs(ledger, record, verifier)

    def _follow_epochs(self, ledger: str, record: Record, verifier: ChainVerifier) -> None:
        if record.height == 0 and verifier.rules is not None:
            try:
                history: EpochHistory | None = EpochHistory.from_genesis(record, verifier.rules)
            except VledgerError:
                history = None  # its checkpoint lines fail on the pinned key, as before
            self._epochs[ledger] = history if history is not None and history.standby_key is not None else None
        elif (history := self._epochs.get(ledger)) is not None:
            history.feed([record])

    def _follow_key_chain(self, ledger: str, record: Record, verifier: ChainVerifier) -> None:
        """Read ``record`` (verified as the chain's next) into the ledger's key chain; raises
        RotationError [bad_rotation] for a ``checkpoint_key`` record that is no valid rotation."""
        if record.height == 0 and verifier.rules is not None:
            self._chains[ledger] = KeyChain.from_rules(ledger, verifier.rules)
        elif record.content.kind == ROTATION_KIND and ledger in self._chains:  # read from its genesis
            chain = self._chains[ledger]
            if chain is None:
                raise RotationError("the genesis pins no checkpoint key to rotate", ledger=ledger, height=record.height)
            self._chains[ledger] = chain.after(record)

    def _check_checkpoint(self, number: int, line: ExportedCheckpoint) -> None:
        """A checkpoint line follows the record that completes its tree: its root must be the
        tree of the records before it, and its note signed by the key the genesis pins."""
        ledger, checkpoint = line.ledger, line.checkpoint
        report = self._report(ledger)
        if report is None or not report.ok:
            return
        height = checkpoint.size - 1
        tree = self._trees.get(ledger)
        verifier = self._verifiers.get(ledger)
        try:
            if tree is None or verifier is None or verifier.rules is None or tree.size != checkpoint.size:
                raise FieldError(
                    f"line {number}: a checkpoint of size {checkpoint.size} must follow the record line of "
                    f"height {height}",
                    ledger=ledger,
                    height=height,
                )
            if tree.root() != checkpoint.root:
                raise TreeMismatchError(
                    f"line {number}: the checkpoint's root is not the tree of the {checkpoint.size} records before it"
                )
            history = self._epochs.get(ledger)
            chain = self._chains.get(ledger)
            if history is not None:
                history.verify(line.note, holds=True)  # either pinned key, as its epoch says (10.9)
            elif chain is not None:  # the key in force at its size (13.8); retired_key for another of the chain's
                chain.check(line.note)
            check_cosignatures(line.note, checkpoint.origin, self._witnesses, report, number)
        except VledgerError as e:
            report.fail(e, height, number)
            return
        if (ledger, line.note) not in self._counted:  # a line given twice is one checkpoint
            self._counted.add((ledger, line.note))
            report.vouch(checkpoint.size)

    def rules_of(self, ledger: str) -> LedgerRules | None:
        """The rules of ``ledger``'s genesis, once it verified (None before)."""
        verifier = self._verifiers.get(ledger)
        return None if verifier is None else verifier.rules

    def _report(self, ledger: str) -> LedgerReport | None:
        if self.wanted is not None and ledger != self.wanted:
            return None
        return self.reports.setdefault(ledger, LedgerReport(ledger))

    def result(self) -> Verification:
        if self.error is None and self.wanted is not None and self.wanted not in self.reports:
            raise NoSuchLedgerError(f"ledger {self.wanted!r} is not in this file")
        keys = len({key.name for key in self._witnesses.values()})
        return Verification(list(self.reports.values()), self.error, self.error_line, witness_keys=keys)


WitnessTable = dict[tuple[str, int], VerifierKey]


def witness_keys_table(witnesses: Iterable[VerifierKey]) -> WitnessTable:
    """Witness keys by (name, key id), as a note's signature lines name them."""
    return {(key.name, key.key_id): key for key in witnesses}


def check_cosignatures(
    note: bytes, origin: str, witnesses: WitnessTable, report: LedgerReport, line: int | None = None
) -> None:
    """Check a verified checkpoint's cosignature lines (its signature lines not by the log,
    whose key is named by the origin, 13.5): each by a key in ``witnesses`` must verify (two
    lines by one key count once, the first checked, as 13.5 counts them), counted into
    ``report.cosigned``; one by a witness no key names is counted into ``report.unchecked``.
    Raises CosignatureError [bad_cosignature] for one that does not verify (``line``: the
    export line it is on)."""
    parsed = parse_note(note)
    seen: set[tuple[str, int]] = set()
    for signature in parsed.signatures:
        if signature.name == origin:
            continue
        where = (signature.name, signature.key_id)
        key = witnesses.get(where)
        if key is None:
            report.unchecked += 1
            continue
        if where in seen:
            continue
        seen.add(where)
        if not verify_signature(parsed.text, signature, key):
            at = f"line {line}: " if line is not None else ""
            raise CosignatureError(
                f"{at}the cosignature by witness {key.name} ({key.key_id:08x}) does not verify over the checkpoint"
            )
        report.cosigned += 1
