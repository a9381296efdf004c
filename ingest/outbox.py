"""The outbox: every record a node's store makes durable goes to its Redis stream, then on the feed.

The store is the source of truth. The committer hands each group's records over (a
callback that only queues them); one thread adds them to the ledgers' streams in a
pipelined round trip, then publishes them on the node's PUB socket, then records that
this node holds them. If Redis is down the feed goes on without it, and once Redis is
back the outbox reads what the stream lacks from the store: the stream's last height is
the cursor, so nothing is lost and nothing added twice (docs/ARCHITECTURE.md). Every
``heartbeat_ms`` it publishes its heads, so a subscriber sees a gap at the end of a burst.

A home node's outbox also **seals** (vledger.node.seal): after each batch it signs the link
of each ledger's last record with the node's Ed25519 key and sends the seals after the
records, on the feed and in the stream; every heartbeat sends the latest seal of every
ledger. Followers store what others relay only once a seal covers it.

A replica runs an outbox too, with ``stream=False`` and no signing key: the home node's
outbox fills the streams; a relay republishes what it stored, with one more hop, and
forwards the home's seals it verified.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable

import msgpack

from ..broker.feed import Publisher
from ..broker.replication import REDIS_ERRORS, Alert, ReplicationLedger
from ..broker.signing import SigningKey, sign_seal
from ..config.cluster import ReplicationSettings
from ..node.record import Record
from ..node.seal import Seal
from ..node.store import ChainStore
from .follow import hash_of

log = logging.getLogger(__name__)

REDIS_RETRY_SECONDS = 1.0


class Outbox:
    """Streams and publishes a store's new records, on a thread of its own (:meth:`start`)."""

    def __init__(
        self,
        name: str,
        store: ChainStore,
        publisher: Publisher | None,
        replication: ReplicationLedger | None,
        settings: ReplicationSettings,
        *,
        stream: bool = True,
        signer: SigningKey | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.store = store
        self.publisher = publisher
        self.replication = replication
        self.settings = settings
        self.stream = stream and replication is not None
        self._clock = clock
        self.signer = signer  # a home node's key: it seals what it places
        self.seals: dict[str, Seal] = {}  # the latest seal of each ledger, sent every heartbeat
        self._queue: collections.deque[tuple[list[Record], int, list[Seal]]] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported: dict[str, int] = {}  # ledger -> the height Redis knows this node holds
        self._redis_retry_at = 0.0
        self.published = 0

    # --- any thread -------------------------------------------------------------------

    def backlog(self) -> int:
        """Commits queued and not yet streamed and published (read by the metrics, any thread)."""
        return len(self._queue)

    def committed(self, records: list[Record], hops: int = 1, seals: Iterable[Seal] = ()) -> None:
        """Queue a group's durable records (the store's ``on_commit``), and for a relay the seals
        that cover them, to go out after them: quick, never raises."""
        self._queue.append((records, hops, list(seals)))
        self._wake.set()

    def start(self) -> Outbox:
        self._thread = threading.Thread(target=self._run, name=f"outbox-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Publish what is queued, then stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # --- the outbox thread ----------------------------------------------------------------

    def _run(self) -> None:
        heartbeat = self.settings.heartbeat_ms / 1000
        next_beat = self._clock()  # the first pass syncs with Redis at once
        if self.signer is not None:  # what the store held before this start, sealed once
            for ledger, (height, link) in self.store.heads().items():
                self.seals[ledger] = sign_seal(self.signer, ledger, height, link, self.name)
        while True:
            self._wake.wait(max(0.0, next_beat - self._clock()))
            self._wake.clear()
            stopping = self._stop.is_set()
            try:
                self._drain()
                if self._clock() >= next_beat:
                    next_beat = self._clock() + heartbeat
                    if self.publisher is not None:
                        self.publisher.heads(self.seals.values())
                    self._sync_redis()
            except Exception:  # the outbox must outlive any one failure: the store has it all
                log.exception("outbox: publishing failed; the next heartbeat tries again")
            if stopping and not self._queue:
                return

    def _drain(self) -> None:
        while self._queue:
            batch: list[tuple[Record, bytes, int]] = []
            relayed: list[Seal] = []
            while self._queue and len(batch) < self.settings.catch_up_batch:
                records, hops, seals = self._queue.popleft()
                batch.extend((record, record.encode(), hops) for record in records)
                relayed.extend(seals)
            fresh = self._seal(batch) if self.signer is not None else relayed
            for seal in fresh:
                if seal.ledger not in self.seals or seal.height > self.seals[seal.ledger].height:
                    self.seals[seal.ledger] = seal
            self._to_stream(batch)
            if self.publisher is not None:
                for record, data, hops in batch:
                    if hops <= self.settings.max_hops:
                        self.publisher.record(record.ledger, record.height, data, hops)
                        self.published += 1
                if fresh:
                    self.publisher.heads(fresh)  # after the records they cover
            self._report({record.ledger: record.height for record, _, _ in batch})

    def _seal(self, batch: list[tuple[Record, bytes, int]]) -> list[Seal]:
        """A home node's seal of each ledger's last record in ``batch``."""
        assert self.signer is not None
        last: dict[str, Record] = {}
        for record, _, _ in batch:
            last[record.ledger] = record
        return [sign_seal(self.signer, r.ledger, r.height, r.link, self.name) for r in last.values()]

    def _redis_usable(self) -> bool:
        return self.replication is not None and self._clock() >= self._redis_retry_at

    def _redis_failed(self, error: Exception) -> None:
        log.warning("outbox: Redis unavailable (%s); the feed goes on, the stream catches up later", error)
        self._redis_retry_at = self._clock() + REDIS_RETRY_SECONDS

    def _to_stream(self, batch: list[tuple[Record, bytes, int]]) -> None:
        """Append ``batch`` to its ledgers' streams; whatever a stream lacks below it comes from the store."""
        if not self.stream or not self._redis_usable():
            return
        runs: dict[str, list[tuple[Record, bytes, int]]] = {}
        for item in batch:
            runs.setdefault(item[0].ledger, []).append(item)
        try:
            for ledger, run in runs.items():
                seal = self.seals.get(ledger)
                packed = _packed(seal) if seal is not None and seal.height == run[-1][0].height else b""
                self._append(ledger, run[0][0].height, [data for _, data, _ in run], packed)
        except REDIS_ERRORS as e:
            self._redis_failed(e)

    def _append(self, ledger: str, first: int, records: list[bytes], seal: bytes) -> None:
        """Append a run to the stream; if the stream ends below ``first`` (a Redis outage or a
        restart that lost its tail), fill it from the store up to the run's end."""
        assert self.replication is not None
        last, conflict = self.replication.append_checked(ledger, self.name, first, records, seal)
        end = first + len(records) - 1
        if conflict is None and last > end:  # the stream holds heights above the run: are they ours?
            conflict = self._first_foreign(ledger, end + 1, last)
        if conflict is not None:
            last = self._repair(ledger, conflict)
        self._fill(ledger, last, end)

    def _first_foreign(self, ledger: str, low: int, high: int) -> int | None:
        """The first height from ``low`` to ``high`` at which the stream's entry is not the
        store's record (another record, or one the store does not hold), None if all are."""
        assert self.replication is not None
        streamed = {r.height: r.data for r in self.replication.read(ledger, low, high - low + 1, stop=high + 1)}
        stored = dict(self.store.range_raw(ledger, low, high + 1))
        return next((h for h in range(low, high + 1) if streamed.get(h) != stored.get(h)), None)

    def _repair(self, ledger: str, height: int) -> int:
        """The stream's entry at ``height`` is not this home's record: the store is the truth, so
        the stream is cut back below it (its readers too) and filled again from the store; the
        finding goes to the alerts, against ``redis``. Returns the stream's last height now."""
        assert self.replication is not None
        entry = self.replication.read(ledger, height, 1, stop=height + 1)
        held = self.store.get(ledger, height)
        found = hash_of(entry[0].data) if entry else "missing"
        log.warning("outbox: the stream of %s holds %s at %d, not this node's record: rewriting it from the store",
                    ledger, found, height)  # fmt: skip
        self.replication.alert(
            Alert("redis", ledger, height, "record_conflict", f"the stream's entry is not {self.name}'s record at "
                  "this height: the home rewrote the stream from its store", source=self.name,
                  expected=held.hash.hex() if held is not None else "", found=found)
        )  # fmt: skip
        self.replication.rewind(ledger, height)  # after the alert: a reader of the true entries sees it
        return height - 1

    def _fill(self, ledger: str, last: int, end: int) -> None:
        """Append the store's records of ``ledger`` after the stream's ``last`` height up to ``end``."""
        assert self.replication is not None
        while last < end:
            stop = min(end + 1, last + 1 + self.settings.catch_up_batch)
            fill = [data for _, data in self.store.range_raw(ledger, last + 1, stop)]
            if not fill:
                raise RuntimeError(f"the store has no {ledger} records from {last + 1}")
            log.info("outbox: stream of %s ends at %d: adding %d records from the store", ledger, last, len(fill))
            seal = b""
            if self.signer is not None:  # each chunk sealed, so a follower can store it as it comes
                top = self.store.get(ledger, last + len(fill))
                if top is not None:
                    seal = _packed(sign_seal(self.signer, ledger, top.height, top.link, self.name))
            reached = self.replication.append(ledger, self.name, last + 1, fill, seal)
            if reached <= last:
                raise RuntimeError(f"the stream of {ledger} does not grow past {last}")
            last = reached

    def _sync_redis(self) -> None:
        """At start, at each heartbeat and after an outage: fill each stream up to the store's head."""
        if not self._redis_usable():
            return
        assert self.replication is not None
        try:
            heads = self.store.heads()
            if self.stream:
                for ledger, streamed in self.replication.last_heights(heads).items():
                    last = streamed
                    if streamed > heads[ledger][0]:  # only this node adds to it: the rest is not its chain
                        last = self._repair(ledger, heads[ledger][0] + 1)
                    if last < heads[ledger][0]:
                        self._fill(ledger, last, heads[ledger][0])
            if self.stream:  # a Redis that lost its latest seals gets them back
                self.replication.set_seals({ledger: _packed(seal) for ledger, seal in self.seals.items()})
            self._reported.clear()
            self._report({ledger: height for ledger, (height, _) in heads.items()})
        except REDIS_ERRORS as e:
            self._redis_failed(e)

    def _report(self, heights: dict[str, int]) -> None:
        """Tell Redis how far this node holds each ledger (what replication counts are made of)."""
        if not self._redis_usable():
            return
        assert self.replication is not None
        try:
            for ledger, height in heights.items():
                if self._reported.get(ledger, -1) < height:
                    self._reported[ledger] = self.replication.advance(self.name, ledger, height)
        except REDIS_ERRORS as e:
            self._redis_failed(e)


def _packed(seal: Seal) -> bytes:
    """A seal as the stream and ``vledger:seals`` hold it: msgpack of its wire form."""
    return msgpack.packb(seal.wire())  # type: ignore[no-any-return]
