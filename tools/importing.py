"""``vledger import``: verify a whole export file against a store, then append what it lacks.

Two passes over the file. The first verifies every line, compares each record the store
already holds byte for byte, and keeps a digest of each chunk of lines; it writes nothing,
not even an empty store. Only if everything verified does the second pass append the new
records, a chunk per group commit, each chunk first matched against its digest, so that
only bytes that were verified go in, and keeps each checkpoint line (verified in the first
pass as ``vledger verify`` checks one: its root, its note with the ledger's key) once the
records of its tree are in: an imported store serves and exports them as its source did.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..broker.node_lock import node_lock
from ..config.settings import Limits, StoreSettings
from ..node.checkpoint_log import IMPORTED_COSIGNED, IMPORTED_SIGNED
from ..node.errors import HeightGapError, RecordConflictError, SourceChangedError, VledgerError
from ..node.export import ExportedCheckpoint, StoredRecord, decode_export_line
from ..node.ledger import LedgerRules
from ..node.note import VerifierKey, parse_note
from ..node.record import Record, decode_record
from ..node.store import ChainStore, Receipt
from ..node.storefile import StoreReader
from ..node.verify import ChainVerifier
from .paths import export_file, is_store, store_target
from .progress import Progress
from .verification import ExportChecker, LedgerReport, Verification, iter_lines

log = logging.getLogger(__name__)

_Line = tuple[int, bytes]


def import_file(
    file: Path, store: Path, node: str | None, limits: Limits, witnesses: Sequence[VerifierKey] = ()
) -> Verification:
    """All or nothing, as far as verification is concerned: the store changes only if all verified
    (each checkpoint's cosignatures by ``witnesses`` included)."""
    path = export_file(file)
    store_target(store)
    chunk_size = StoreSettings().group_commit_max
    with path.open("rb") as f:
        view = StoreView(store, limits)
        try:
            plan = plan_import(f, view, limits, chunk_size, witnesses)
        finally:
            view.close()
        result = plan.verification
        if result.ok and (plan.new_from or plan.checkpoints):
            f.seek(0)
            # Never under a running node (or a repair): it would read these writes as damage.
            with node_lock(store, f"import into {store}"), ChainStore(store, origin=node, limits=limits) as target:
                appended = apply_import(f, plan, target, limits, chunk_size)
            kept = sum(r.kept for r in result.reports)
            log.info("imported %d records and kept %d checkpoints from %s into %s", appended, kept, path, store)
    return result


class StoreView:
    """Read-only access to the import's target store, which may not exist yet: the first pass
    must leave no trace, not even an empty store."""

    def __init__(self, directory: Path, limits: Limits) -> None:
        self.limits = limits
        self._reader = StoreReader(directory) if is_store(directory) else None

    def raw(self, ledger: str, height: int) -> bytes | None:
        if self._reader is None:
            return None
        return next((data for _, data in self._reader.iter_raw(ledger, height, height + 1)), None)

    def start(self, ledger: str, record: Record) -> ChainVerifier:
        """A verifier for a file whose ``ledger`` starts at ``record``: from genesis, or after the
        store's record just below it (whose rules come from the store's genesis)."""
        height = record.height
        if height == 0:
            return ChainVerifier(ledger, self.limits)
        below, genesis = self.raw(ledger, height - 1), self.raw(ledger, 0)
        if below is None or genesis is None:
            raise HeightGapError(
                f"the file starts this ledger at height {height}, but the store holds no record at height {height - 1}",
                ledger=ledger,
                height=height,
            )
        rules: LedgerRules = ChainVerifier(ledger, self.limits).check(decode_record(genesis, self.limits))
        return ChainVerifier.after(ledger, height - 1, decode_record(below, self.limits).link, rules, self.limits)

    def below(self, ledger: str, height: int) -> Iterator[bytes]:
        """The bytes of the store's records of ``ledger`` under ``height``, in height order."""
        if self._reader is not None:
            for _, data in self._reader.iter_raw(ledger, 0, height):
                yield data

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()


@dataclass(slots=True)
class ImportPlan:
    """What the verifying pass found: per ledger the first height to append, per chunk a digest,
    and how many checkpoint lines verified (each to be kept)."""

    verification: Verification
    new_from: dict[str, int] = field(default_factory=dict)
    digests: list[bytes] = field(default_factory=list)
    checkpoints: int = 0


def plan_import(
    f: BinaryIO, view: StoreView, limits: Limits, chunk_size: int, witnesses: Sequence[VerifierKey] = ()
) -> ImportPlan:
    """Pass 1: verify the whole file against the store, writing nothing."""
    plan = ImportPlan(Verification())

    def compare(stored: StoredRecord, report: LedgerReport) -> None:
        _compare_with_store(stored, report, view, plan)

    checker = ExportChecker(limits, start=view.start, also=compare, below=view.below, witnesses=witnesses)
    plan.verification = checker.check_lines(_digested(iter_lines(f, limits), chunk_size, plan.digests))
    plan.checkpoints = sum(r.checkpoints for r in plan.verification.reports)
    return plan


def _compare_with_store(stored: StoredRecord, report: LedgerReport, view: StoreView, plan: ImportPlan) -> None:
    """A record the store already holds must be byte-identical; the rest will be appended."""
    record = stored.record
    held = view.raw(record.ledger, record.height) if record.ledger not in plan.new_from else None
    if held is None:
        plan.new_from.setdefault(record.ledger, record.height)
        report.imported += 1
    elif held == stored.data:
        report.present += 1
    else:
        raise RecordConflictError("the store holds a different record at this height")


def apply_import(f: BinaryIO, plan: ImportPlan, store: ChainStore, limits: Limits, chunk_size: int) -> int:
    """Pass 2: append the new records, a chunk per group commit, each chunk exactly as verified,
    then keep the chunk's checkpoint lines (each after the records of its tree, so the store
    never holds a checkpoint past its records). Raises SourceChangedError for a chunk whose
    bytes are not the verified ones, what the store raises otherwise."""
    appended = 0
    total = sum(r.imported for r in plan.verification.reports)
    reports = {r.ledger: r for r in plan.verification.reports}
    with Progress("importing", total) as progress:
        for index, chunk in enumerate(_chunks(iter_lines(f, limits), chunk_size)):
            if index >= len(plan.digests) or _chunk_digest(chunk) != plan.digests[index]:
                raise SourceChangedError(
                    f"the file changed while it was imported; {appended} verified records were appended"
                )
            decoded = [decode_export_line(line, number, limits) for number, line in chunk]
            records = [_new_record(d, plan) for d in decoded]
            try:
                receipts = store.append_records(r for r in records if r is not None)
                for line in decoded:
                    if isinstance(line, ExportedCheckpoint) and _keep(store, line):
                        reports[line.ledger].kept += 1
            except VledgerError as e:
                # What was appended stays appended (each chunk verified); the command says how much.
                e.add_note(f"import stopped after appending {appended} verified records")
                raise
            _count_duplicates(receipts, reports)
            appended += len(receipts)
            progress.advance(len(receipts))
    return appended


def _keep(store: ChainStore, line: ExportedCheckpoint) -> bool:
    """Keep a verified checkpoint line as imported: ``imported:cosigned`` when its note carries
    cosignature lines (a witness's), else ``imported:signed`` (a home's). Never as ``signed`` or
    ``cosigned``: those say what this store's own node signed or cosigned (its self-checks, its
    cosigning and the write concern read them), and a witness would publish another's
    cosignature as its own. True when it added a row (a line kept before, or twice in the
    file, adds none)."""
    checkpoint = line.checkpoint
    kind = IMPORTED_COSIGNED if len(parse_note(line.note).signatures) > 1 else IMPORTED_SIGNED
    return store.checkpoints.keep(line.ledger, kind, checkpoint.size, checkpoint.root, line.note)


def _new_record(decoded: StoredRecord | ExportedCheckpoint, plan: ImportPlan) -> Record | None:
    if not isinstance(decoded, StoredRecord):  # a checkpoint line: kept once the records are in
        return None
    record = decoded.record
    first = plan.new_from.get(record.ledger)
    return record if first is not None and record.height >= first else None


def _count_duplicates(receipts: list[Receipt], reports: Mapping[str, LedgerReport]) -> None:
    """Another writer may have appended the same records since the first pass: they count as present."""
    for receipt in receipts:
        if receipt.duplicate:
            reports[receipt.ledger].imported -= 1
            reports[receipt.ledger].present += 1


def _digested(lines: Iterable[_Line], size: int, digests: list[bytes]) -> Iterator[_Line]:
    """The lines unchanged, with the digest of each chunk of ``size`` lines added to ``digests``
    as the chunk is read, so that pass 2 can tell whether it reads the same bytes."""
    for chunk in _chunks(lines, size):
        digests.append(_chunk_digest(chunk))
        yield from chunk


def _chunks(lines: Iterable[_Line], size: int) -> Iterator[list[_Line]]:
    chunk: list[_Line] = []
    for item in lines:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _chunk_digest(chunk: list[_Line]) -> bytes:
    digest = hashlib.sha256()
    for _, line in chunk:
        digest.update(line)
    return digest.digest()
