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
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..config.settings import Limits
from ..node.errors import (
    FieldError,
    HeightGapError,
    IndexMismatchError,
    LineError,
    MalformedRecordError,
    NoSuchLedgerError,
    PayloadTooLargeError,
    RecordError,
    RotationError,
    TreeMismatchError,
    UsageError,
    VledgerError,
)
from ..node.export import ExportedCheckpoint, StoredRecord, decode_export_line, line_ledger, max_line_bytes
from ..node.key_rotation import ROTATION_KIND, KeyChain
from ..node.ledger import LedgerRules
from ..node.record import ZERO_LINK, Record, decode_record
from ..node.storefile import StoreReader, StoreRow
from ..node.tree import Frontier, leaf_hash
from ..node.verify import ChainVerifier
from .paths import export_file, store_dir
from .progress import Progress

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

    @property
    def ok(self) -> bool:
        return self.error is None

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
    worker_cpu: float = 0.0  # CPU seconds the worker processes spent on their chunks (not printed)

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.ok for r in self.reports)


def verify_path(path: Path, wanted: str | None, limits: Limits) -> Verification:
    """``vledger verify PATH``: a store directory or an export file, checked from every genesis."""
    if not path.exists():
        raise UsageError(f"{path}: no such store directory or export file")
    if path.is_dir():
        result = verify_store(store_dir(path), wanted, limits)
    else:
        result = verify_file(export_file(path), wanted, limits)
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
# two chunks is checked in the calling process: starting workers would cost more.
CHUNK_RECORDS = 65_536


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
) -> Verification:
    """Check every record of the selected ledgers from genesis; one ledger's failure stops only it.

    ``workers`` processes (default: one per usable core; 1: none) check the ``chunk``-record
    chunks of each ledger of at least two chunks; ``executor``, when given, runs the chunks
    instead (the tests' threads). Raises StoreError for what is not a store.
    """
    result = Verification()
    workers = usable_cores() if workers is None else workers
    with contextlib.ExitStack() as stack:
        reader = stack.enter_context(contextlib.closing(StoreReader(directory)))
        ledgers = select_ledgers(reader.ledgers(), wanted)
        counts = {ledger: reader.count(ledger) for ledger in ledgers}
        pool = executor
        if pool is None and workers > 1 and any(count >= 2 * chunk for count in counts.values()):
            # forkserver: a worker never inherits a caller's threads (sockets, a committer) mid-flight.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=context))
        # Named, so that several stores verified in a row (the cluster demo) tell which is which.
        label = f"verifying {directory.name}: checksums, work, links"
        with Progress(label, sum(counts.values())) as progress:
            for ledger in ledgers:
                report = LedgerReport(ledger)
                try:
                    if pool is not None and counts[ledger] >= 2 * chunk:
                        job = _Job(pool, reader, directory, ledger, limits, chunk)
                        result.worker_cpu += _verify_chunked(job, counts[ledger], report, progress)
                    else:
                        _verify_rows(ChainVerifier(ledger, limits), reader.iter_rows(ledger), limits, report, progress)
                except RecordError as e:
                    report.fail(e, e.height)
                result.reports.append(report)
    return result


def _verify_rows(
    verifier: ChainVerifier,
    rows: Iterable[StoreRow],
    limits: Limits,
    report: LedgerReport,
    progress: Progress | None = None,
) -> None:
    """Check ``rows`` as the records after ``verifier``'s head, counting each into ``report``;
    raises the first failure (a RecordError) as :func:`scan_ledger` would."""
    step = 0
    for row in rows:
        prev = verifier.prev
        content = verifier.feed_fast(row.data) if row.height == verifier.next_height else None
        if (
            content is None
            or row.hash != verifier.prev
            or row.author != content["author"]
            or row.request_id != content["request_id"]
        ):
            if content is not None:  # only a column disagrees: the checks one by one say which
                verifier.next_height, verifier.prev = row.height, prev
            _check_row(verifier, row, limits)
        report.records += 1
        report.head = verifier.prev
        step += 1
        if progress is not None and step == 1024:
            progress.advance(step)
            step = 0
    if progress is not None:
        progress.advance(step)


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


def verify_chunk(directory: Path, ledger: str, start: int, stop: int, limits: Limits) -> ChunkSummary:
    """A worker's job: check the records of heights [start, stop) of ``ledger`` in the store at
    ``directory``, as the sequential verifier would after a record whose link is the first
    one's ``prev``. Stops at the first failure; never raises for what the store holds."""
    report = LedgerReport(ledger)
    first_prev: bytes | None = None
    cpu = time.process_time()
    try:
        with contextlib.closing(StoreReader(directory)) as reader:
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
            _verify_rows(verifier, reader.iter_rows(ledger, start, stop), limits, report)
    except VledgerError:
        return ChunkSummary(start, stop, report.records, first_prev, report.head, False, time.process_time() - cpu)
    clean = report.records == stop - start
    return ChunkSummary(start, stop, report.records, first_prev, report.head, clean, time.process_time() - cpu)


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


def _verify_chunked(job: _Job, count: int, report: LedgerReport, progress: Progress) -> float:
    """Check ``job.ledger``'s ``count`` records in chunks on ``job.pool``, then join them (see
    the module's docstring); raises the first failure exactly as the sequential checks would.
    Returns the CPU seconds the chunks took."""
    ledger, limits = job.ledger, job.limits
    futures: list[Future[ChunkSummary]] = [
        job.pool.submit(verify_chunk, job.directory, ledger, start, min(start + job.chunk, count), limits)
        for start in range(0, count, job.chunk)
    ]
    next_height, prev, cpu = 0, ZERO_LINK, 0.0
    try:
        for future in futures:
            try:
                chunk = future.result()
            except Exception as e:  # a worker that died: the parent checks the rest alone
                log.warning("a verifying worker failed (%s); checking %s on in this process", e, ledger)
                break
            cpu += chunk.cpu
            joins = chunk.start == next_height and chunk.first_prev == prev
            if not (chunk.clean and joins) or chunk.last_link is None:
                break
            next_height, prev = chunk.stop, chunk.last_link
            report.accept_many(chunk.count, prev)
            progress.advance(chunk.count)
    finally:
        for future in futures:
            future.cancel()
    # From the last record that joined (normally the ledger's end), one by one as ever.
    if next_height == 0:
        verifier = ChainVerifier(ledger, limits)
    else:
        rules = _genesis_rules(job.reader, ledger, limits)
        verifier = ChainVerifier.after(ledger, next_height - 1, prev, rules, limits)
    _verify_rows(verifier, job.reader.iter_rows(ledger, next_height), limits, report, progress)
    return cpu


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
            raise IndexMismatchError(
                f"the {column} column holds {_shown(held)}, the record {_shown(expected)}",
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


def verify_file(path: Path, wanted: str | None, limits: Limits) -> Verification:
    """Check an export file line by line, every ledger from its genesis."""
    with path.open("rb") as f:
        return ExportChecker(limits, wanted).check_lines(iter_lines(f, limits))


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
    it raises to fail the ledger.
    """

    def __init__(
        self,
        limits: Limits,
        wanted: str | None = None,
        start: Callable[[str, Record], ChainVerifier] | None = None,
        also: Callable[[StoredRecord, LedgerReport], None] | None = None,
        checkpoints: bool = True,
    ) -> None:
        self.limits = limits
        self.wanted = wanted
        self.reports: dict[str, LedgerReport] = {}
        self.error: RecordError | None = None
        self.error_line: int | None = None
        self._verifiers: dict[str, ChainVerifier] = {}
        self._start = start or (lambda ledger, record: ChainVerifier(ledger, limits))
        self._also = also
        self._last: str | None = None
        # Checkpoint lines are checked against a tree grown from the genesis; a reader that
        # starts mid-ledger (an import onto a store) skips them.
        self._checkpoints = checkpoints
        self._trees: dict[str, Frontier] = {}
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
                if self._checkpoints:
                    self._check_checkpoint(number, decoded)
                return
            stored = decoded
            record = stored.record
            verifier = verifier or self._start(ledger, record)
            self._verifiers[ledger] = verifier
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
        if self._checkpoints:
            self._trees.setdefault(ledger, Frontier()).append(leaf_hash(stored.data))

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
            chain = self._chains.get(ledger)
            if chain is not None:  # the key in force at its size (13.8); retired_key for another of the chain's
                chain.check(line.note)
        except VledgerError as e:
            report.fail(e, height, number)
            return
        report.checkpoints += 1

    def _report(self, ledger: str) -> LedgerReport | None:
        if self.wanted is not None and ledger != self.wanted:
            return None
        return self.reports.setdefault(ledger, LedgerReport(ledger))

    def result(self) -> Verification:
        if self.error is None and self.wanted is not None and self.wanted not in self.reports:
            raise NoSuchLedgerError(f"ledger {self.wanted!r} is not in this file")
        return Verification(list(self.reports.values()), self.error, self.error_line)
