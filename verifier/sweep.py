"""A full sweep of one node's copy of one ledger: every record from genesis to the head, re-verified.

A sweep goes a page at a time through a :class:`PageSource` (a node's ``range`` command)
and keeps only a checkpoint: the last height verified and its link. A checkpoint is enough to
resume after a restart, because the link commits to every record below it: the sweep first
re-reads the genesis (for the ledger's rules) and then goes on from the checkpoint. Nothing
holds a whole chain in memory. When the sweep reaches the node's head it is complete, and
the next one starts again from genesis, so a record changed below an old checkpoint is
caught by the next sweep.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from ..config.settings import PROTOCOL_LIMITS
from ..node.errors import RecordError
from ..node.ledger import LedgerRules
from ..node.record import ZERO_LINK, decode_record
from ..node.verify import ChainVerifier


class PageSource(Protocol):
    """A node's records of a ledger, by height."""

    def page(self, ledger: str, start: int, limit: int) -> list[bytes]:
        """Up to ``limit`` records from height ``start`` on, as the node stores them (fewer at its end)."""
        ...


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a sweep stands: the last height verified (-1: none yet) and that record's link."""

    height: int = -1
    link: bytes = ZERO_LINK
    sweeps: int = 0  # sweeps completed before this one
    started_ms: int = 0  # when this sweep began


@dataclass(frozen=True, slots=True)
class Finding:
    """A record of a node's copy that fails verification."""

    height: int  # the first height at which the copy is not what the chain must be
    code: str  # an error code of docs/PROTOCOL.md: bad_link, height_gap, bad_checksum, ...
    detail: str


@dataclass(frozen=True, slots=True)
class SweepStep:
    verified: int  # records verified by this step
    finding: Finding | None  # the first record that failed, if one did
    complete: bool  # the sweep reached the node's last record (its end) without a finding
    end: int  # the height the sweep reached (the last record verified)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class LedgerSweep:
    """Sweeps of ``node``'s copy of ``ledger``, one after another, from a checkpoint."""

    def __init__(self, node: str, ledger: str, checkpoint: Checkpoint | None = None) -> None:
        self.node = node
        self.ledger = ledger
        self.checkpoint = checkpoint or Checkpoint(started_ms=_now_ms())
        self._verifier: ChainVerifier | None = None
        self.last_complete_ms = 0  # when the last sweep without a finding ended
        self.last_records = 0  # how many records that sweep verified

    def step(self, source: PageSource, limit: int) -> SweepStep:
        """Verify up to ``limit`` records (a page); a finding ends this sweep and starts a new one."""
        cp = self.checkpoint
        height, link = cp.height, cp.link
        try:
            verifier = self._verifier or self._resume(source)
            rows = source.page(self.ledger, cp.height + 1, limit)
            for data in rows:
                # The lean path for a valid record, the checks one by one for anything else.
                verifier.feed_raw(data)
                height, link = verifier.next_height - 1, verifier.prev
        except RecordError as e:
            # The finding names the first height at which this copy goes wrong: where the next
            # record should stand (a deleted record's height, not that of the one after it).
            finding = Finding(height + 1, e.code, e.reason)
            self._restart()
            return SweepStep(height - cp.height, finding, False, height)
        verified = height - cp.height
        if len(rows) < limit:  # the node's end: this sweep is complete
            self.last_complete_ms = _now_ms()
            self.last_records = height + 1
            self.checkpoint = Checkpoint(sweeps=cp.sweeps + 1, started_ms=self.last_complete_ms)
            self._verifier = None
            return SweepStep(verified, None, True, height)
        self.checkpoint = Checkpoint(height, link, cp.sweeps, cp.started_ms)
        return SweepStep(verified, None, False, height)

    def _resume(self, source: PageSource) -> ChainVerifier:
        cp = self.checkpoint
        if cp.height < 0:
            self._verifier = ChainVerifier(self.ledger, PROTOCOL_LIMITS)
            return self._verifier
        rows = source.page(self.ledger, 0, 1)
        if not rows:
            raise RecordError("the node no longer has a genesis record", ledger=self.ledger, height=0)
        genesis = decode_record(rows[0], PROTOCOL_LIMITS)
        rules: LedgerRules = ChainVerifier(self.ledger, PROTOCOL_LIMITS).check(genesis)
        self._verifier = ChainVerifier.after(self.ledger, cp.height, cp.link, rules, PROTOCOL_LIMITS)
        return self._verifier

    def _restart(self) -> None:
        self.checkpoint = Checkpoint(sweeps=self.checkpoint.sweeps, started_ms=_now_ms())
        self._verifier = None
