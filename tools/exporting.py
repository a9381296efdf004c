"""``vledger export``: a store's records as JSON Lines, each verified before it is written.

Lines come in ledger then height order (docs/PROTOCOL.md, section 5); the latest checkpoint
the store signed and the latest it cosigned follow the record line that completes their tree. A store that fails
verification is not exported at all: the error stops the command and the output file never
appears, so an export file that exists is one that verified when it was written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..config.settings import Limits
from ..node.export import encode_checkpoint_line, encode_line
from ..node.still_store import still_store
from ..node.storefile import StoreReader
from .paths import output_file, store_dir
from .progress import Progress
from .verification import scan_ledger, select_ledgers

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExportSummary:
    records: int
    ledgers: int
    output: Path | None


def export_store(store: Path, wanted: str | None, output: Path | None, limits: Limits) -> ExportSummary:
    """Write every verified record of the selected ledgers to ``output`` (stdout if None)."""
    directory = store_dir(store)
    if output is not None:
        output_file(output)
    # As `vledger verify` reads it (node/still_store.py): a copy kept as evidence, with its -wal,
    # is exported without a byte written beside it (outsider o6 H10: its -shm was rewritten or made).
    with still_store(directory) as still, contextlib.closing(StoreReader(still.directory, still=True)) as reader:
        ledgers = select_ledgers(reader.ledgers(), wanted)
        total = sum(reader.count(ledger) for ledger in ledgers)
        with _open_output(output) as out, Progress("exporting", total) as progress:
            for ledger in ledgers:
                checkpoints = reader.latest_checkpoints(ledger)
                for stored in scan_ledger(reader, ledger, limits):
                    out.write(encode_line(stored))
                    progress.advance()
                    size = stored.record.height + 1
                    while checkpoints and checkpoints[0][0] <= size:
                        checkpoint_size, note = checkpoints.pop(0)
                        if checkpoint_size == size:
                            out.write(encode_checkpoint_line(ledger, note))
    log.info("exported %d records of %d ledgers from %s", progress.done, len(ledgers), directory)
    return ExportSummary(progress.done, len(ledgers), output)


@contextlib.contextmanager
def _open_output(path: Path | None) -> Iterator[BinaryIO]:
    """stdout, or a file that appears whole or not at all (written aside, fsynced, renamed)."""
    if path is None:
        sys.stdout.flush()
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        opened = partial.open("xb")
    except OSError as e:  # name the file the user asked for, not our temporary one
        raise OSError(e.errno, e.strerror, str(path)) from e
    try:
        with opened as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
