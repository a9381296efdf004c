"""Following a feed without losing a record: the ZeroMQ guide's Clone pattern, by chain height.

A replica subscribes first, then catches up: for each ledger it asks its sources (the
Redis stream, then the nodes it follows, over their ``range`` command) for every record
above its own head, in order, until it reaches the highest height it has heard of.
Live records at or below its head are duplicates (checked to be the same bytes, else an
alert); a live record above ``head + 1`` reveals a gap, which is fetched before the record
is stored. The heads that publishers announce every second reveal a gap at the end of a
burst, when no later record would.

Every record is verified by the store before it is written (checksum, proof of work,
link, height: docs/PROTOCOL.md section 4): a forged, replayed or conflicting record is
never stored, it raises an alert naming the node it came from, and the record is fetched
from the next source instead. Nothing here touches a socket: the replica process
(vledger.ingest.replica) feeds it messages, and the tests drive it directly.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from ..broker.feed import FeedHeads, FeedMessage, FeedRecord
from ..broker.replication import Alert
from ..config.settings import PROTOCOL_LIMITS
from ..node.errors import RecordConflictError, VledgerError
from ..node.record import Record, decode_record
from ..node.store import ChainStore

log = logging.getLogger(__name__)

NOT_RELAYED = 255  # the hop count given to what catch-up fetched: never republished
MAX_REMEMBERED_ALERTS = 10_000  # findings already reported, not reported again


class Source(Protocol):
    """Somewhere to fetch a ledger's records from by height."""

    name: str

    def fetch(self, ledger: str, start: int, count: int) -> list[tuple[int, bytes]]:
        """Up to ``count`` (height, record bytes) from ``start`` on, in order; may begin above
        ``start`` (a trimmed stream) or be empty. Raises VledgerError or OSError when it cannot answer."""
        ...

    def heads(self) -> dict[str, int]:
        """The highest height of each ledger this source knows of."""
        ...


@dataclass(frozen=True, slots=True)
class Stored:
    """What one append of a batch did: the records stored, and whether the batch stopped early."""

    records: list[Record]
    complete: bool


class Follower:
    """Brings ``store`` up to every ledger's head and keeps it there, from feed messages and sources.

    ``on_stored(records, hops)`` hears of every record stored (to relay it and report it
    held); ``on_alert`` of every finding. One thread.
    """

    def __init__(
        self,
        name: str,
        store: ChainStore,
        sources: Iterable[Source],
        *,
        on_stored: Callable[[list[Record], int], None],
        on_alert: Callable[[Alert], None],
        batch: int = 1000,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.name = name
        self.store = store
        self.sources = list(sources)
        self.on_stored = on_stored
        self.on_alert = on_alert
        self.batch = batch
        self.stopping = stopping  # a long catch-up ends early once this says so
        self.targets: dict[str, int] = {}  # ledger -> the highest height heard of
        self.caught_up = False  # the start-up catch-up reached every target
        self._alerted: set[tuple[str, int, str, str]] = set()
        self.stored = 0
        self.duplicates = 0

    # --- status ---------------------------------------------------------------------

    def behind(self) -> dict[str, int]:
        """Per ledger, how many records this node lacks of the highest height heard of."""
        return {
            ledger: target - (self.store.size(ledger) - 1)
            for ledger, target in sorted(self.targets.items())
            if self.store.size(ledger) - 1 < target
        }

    def status(self) -> dict[str, object]:
        behind = self.behind()
        return {"current": self.caught_up and not behind, "behind": behind}

    # --- catching up ----------------------------------------------------------------

    def start(self) -> None:
        """The start-up catch-up: learn the heads from the sources, then fetch up to them."""
        for ledger in self.store.ledgers():
            self.heard_of(ledger, self.store.size(ledger) - 1)
        for source in self.sources:
            try:
                for ledger, height in source.heads().items():
                    self.heard_of(ledger, height)
            except (VledgerError, OSError) as e:
                log.warning("%s: cannot ask %s for its heads: %s", self.name, source.name, e)
        self.catch_up_all()
        self.caught_up = True
        log.info("%s: caught up: %s", self.name, self._summary())

    def catch_up_all(self) -> None:
        for ledger, target in sorted(self.targets.items()):
            if self.store.size(ledger) - 1 < target:
                self.catch_up(ledger, target + 1)

    def catch_up(self, ledger: str, stop: int) -> bool:
        """Fetch ``ledger`` from the sources in turn until it holds every height below ``stop``."""
        for source in self.sources:
            while (start := self.store.size(ledger)) < stop and not self.stopping():
                try:
                    rows = source.fetch(ledger, start, min(self.batch, stop - start))
                except (VledgerError, OSError) as e:
                    log.info("%s: %s cannot serve %s from %d: %s", self.name, source.name, ledger, start, e)
                    break
                if not rows or rows[0][0] != start:
                    break  # this source lacks them (or was trimmed past them): ask the next
                if not self._store(ledger, rows, source.name, NOT_RELAYED).complete:
                    break
            if self.store.size(ledger) >= stop:
                return True
        if self.store.size(ledger) < stop:
            log.info(
                "%s: %s stays at %d: no source has height %d",
                self.name,
                ledger,
                self.store.size(ledger) - 1,
                self.store.size(ledger),
            )
        return False

    # --- the live feed ------------------------------------------------------------------

    def receive(self, messages: Iterable[FeedMessage]) -> None:
        """Apply a batch of feed messages: records ledger by ledger, heads as targets."""
        live: dict[str, dict[int, FeedRecord]] = {}
        gaps = False
        for message in messages:
            if isinstance(message, FeedHeads):
                for ledger, (height, _) in message.heads.items():
                    gaps |= self.heard_of(ledger, height) > self.store.size(ledger) - 1
            else:
                live.setdefault(message.ledger, {}).setdefault(message.height, message)
                self.heard_of(message.ledger, message.height)
        for ledger, records in live.items():
            self._apply(ledger, [records[h] for h in sorted(records)])
        if gaps:
            self.catch_up_all()

    def _apply(self, ledger: str, records: list[FeedRecord]) -> None:
        head = self.store.size(ledger) - 1
        fresh = []
        for record in records:
            if record.height <= head:
                self._check_duplicate(record)
            else:
                fresh.append(record)
        while fresh:
            head = self.store.size(ledger) - 1
            fresh = [r for r in fresh if r.height > head]
            if not fresh:
                return
            if fresh[0].height > head + 1 and not self.catch_up(ledger, fresh[0].height):
                return  # the gap stays: the next heads message tries again
            run = [fresh[0]]
            for record in fresh[1:]:
                if record.height != run[-1].height + 1:
                    break
                run.append(record)
            fresh = fresh[len(run) :]
            # A run may mix copies relayed over different paths: republish with the most hops.
            stored = self._store(ledger, [(r.height, r.data) for r in run], run[0].sender, max(r.hops for r in run))
            if not stored.complete:
                self.catch_up(ledger, run[-1].height + 1)  # the true records, from the sources

    def _check_duplicate(self, record: FeedRecord) -> None:
        self.duplicates += 1
        held = self.store.get(record.ledger, record.height)
        if held is not None and held.encode() != record.data:
            self._alert(
                record.ledger,
                record.height,
                RecordConflictError("a different record is already stored at this height"),
                record.sender,
                record.data,
            )

    # --- storing --------------------------------------------------------------------

    def _store(self, ledger: str, rows: list[tuple[int, bytes]], source: str, hops: int) -> Stored:
        """Verify and append ``rows`` in order (they share group commits); stop at the first bad one."""
        records: list[Record] = []
        failure: tuple[int, VledgerError] | None = None
        for height, data in rows:
            try:
                record = decode_record(data, PROTOCOL_LIMITS)
            except VledgerError as e:
                failure = (height, e)
                break
            if record.ledger != ledger or record.height != height:
                failure = (height, RecordConflictError(f"the record is {record.ledger!r} {record.height}"))
                break
            records.append(record)
        futures = [self.store.submit_record(r) for r in records]
        stored: list[Record] = []
        for record, future in zip(records, futures, strict=True):
            try:
                receipt = future.result()
            except VledgerError as e:
                if failure is None:
                    failure = (record.height, e)
                continue
            if not receipt.duplicate:
                stored.append(record)
        if stored:
            self.stored += len(stored)
            self.on_stored(stored, hops)
        if failure is not None:
            height = failure[0]
            self._alert(ledger, height, failure[1], source, dict(rows).get(height, b""))
        return Stored(stored, failure is None)

    def _alert(self, ledger: str, height: int, error: VledgerError, source: str, offered: bytes) -> None:
        key = (ledger, height, error.code, source)
        if key in self._alerted:
            return
        if len(self._alerted) >= MAX_REMEMBERED_ALERTS:
            self._alerted.clear()
        self._alerted.add(key)
        log.warning("%s: refused %s height %d from %s: %s: %s", self.name, ledger, height, source, error.code, error)
        held = self.store.get(ledger, height)
        self.on_alert(
            Alert(
                node=self.name,
                ledger=ledger,
                height=height,
                what=error.code,
                detail=str(error),
                source=source,
                expected=held.hash.hex() if held is not None else "",
                found=_hash_of(offered),
            )
        )

    def heard_of(self, ledger: str, height: int) -> int:
        """Note that ``ledger`` reaches at least ``height`` somewhere; returns the highest heard of."""
        if height > self.targets.get(ledger, -1):
            self.targets[ledger] = height
        return self.targets[ledger]

    def _summary(self) -> str:
        return (
            ", ".join(f"{ledger} at {self.store.size(ledger) - 1}" for ledger in sorted(self.targets)) or "no ledgers"
        )


def _hash_of(data: bytes) -> str:
    """The hash (link) a refused record claims, hex; for bytes that are no record, their SHA-256."""
    try:
        return decode_record(data, PROTOCOL_LIMITS).hash.hex()
    except VledgerError:
        return "sha256:" + hashlib.sha256(data).hexdigest()
