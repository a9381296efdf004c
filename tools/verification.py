"""Verification of stores and export files from every genesis, trusting nothing they hold.

A store's ``data`` column is decoded and fed to a :class:`ChainVerifier` page by page; its
other columns are indexes, and each must agree with the record that verified. An export file
is checked line by line, one verifier per ledger. Each ledger keeps its first failure in its
:class:`LedgerReport`: one ledger's failure stops only that ledger.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
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
    TreeMismatchError,
    UsageError,
    VledgerError,
)
from ..node.export import ExportedCheckpoint, StoredRecord, decode_export_line, line_ledger, max_line_bytes
from ..node.note import verify_checkpoint
from ..node.receipt import pinned_checkpoint_key
from ..node.record import Record, decode_record
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


def verify_store(directory: Path, wanted: str | None, limits: Limits) -> Verification:
    """Check every record of the selected ledgers from genesis; one ledger's failure stops only it."""
    result = Verification()
    with contextlib.closing(StoreReader(directory)) as reader:
        ledgers = select_ledgers(reader.ledgers(), wanted)
        total = sum(reader.count(ledger) for ledger in ledgers)
        # Named, so that several stores verified in a row (the cluster demo) tell which is which.
        with Progress(f"verifying {directory.name}: checksums, work, links", total) as progress:
            for ledger in ledgers:
                report = LedgerReport(ledger)
                try:
                    for stored in scan_ledger(reader, ledger, limits):
                        report.accept(stored.record)
                        progress.advance()
                except RecordError as e:
                    report.fail(e, e.height)
                result.reports.append(report)
    return result


def scan_ledger(reader: StoreReader, ledger: str, limits: Limits) -> Iterator[StoredRecord]:
    """Yield a store ledger's records in height order, each verified before it is yielded.

    The ``data`` column is the only one trusted. The ``height`` column must agree with it, so
    that a row moved to another height is caught even where the chain still holds; the lookup
    columns must agree with the record that verified (see :func:`check_index_columns`).
    """
    verifier = ChainVerifier(ledger, limits)
    for row in reader.iter_rows(ledger):
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
        yield StoredRecord(record, row.data)


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
        """Verify the line's record (or checkpoint) as its ledger's next, unless that ledger already failed."""
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
            self._trees.setdefault(record.ledger, Frontier()).append(leaf_hash(stored.data))

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
            key = pinned_checkpoint_key(ledger, verifier.rules)
            if key is not None:
                verify_checkpoint(line.note, key)
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
