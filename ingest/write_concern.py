"""Write concern: answer a put with ``w=N`` once N replicas hold its record, or say they did not.

One thread follows the ``held`` channel of Redis (vledger.broker.replication): every
advance of a node's height on a ledger resolves the waiters it satisfies. A waiter that
passes its deadline fails with ``replication_timeout``: its record is durable on the home
node all the same, and the error says so. If Redis is unreachable, waiters time out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..broker.replication import REDIS_ERRORS, ReplicationLedger
from ..node.errors import ReplicationTimeoutError
from ..node.store import Receipt

log = logging.getLogger(__name__)

LISTEN_SLICE = 0.05  # seconds between two deadline checks
RETRY_PAUSE = 0.5


@dataclass(slots=True)
class _Waiter:
    receipt: Receipt
    replicas: int
    deadline: float
    future: Future[tuple[Receipt, list[str]]]
    timeout_ms: int


@dataclass(slots=True)
class _Ledger:
    held: dict[str, int] = field(default_factory=dict)
    waiters: list[_Waiter] = field(default_factory=list)


class ReplicaWatch:
    """Waits for replicas on behalf of the ingest node ``home`` (whose own copy never counts).

    The nodes in ``ignored`` (the observers: they hold copies, but to count, not to keep them
    safe) report their held heights too, and never count either.
    """

    def __init__(
        self,
        home: str,
        replication: ReplicationLedger,
        *,
        ignored: Collection[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.home = home
        self.ignored = frozenset(ignored) | {home}
        self.replication = replication
        self._clock = clock
        self._lock = threading.Lock()
        self._ledgers: dict[str, _Ledger] = {}
        self._new: list[str] = []  # ledgers whose heights must be read before they are trusted
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wait(self, receipt: Receipt, replicas: int, timeout_ms: int) -> Future[tuple[Receipt, list[str]]]:
        """A future of (receipt, the replicas that hold it), or of a ReplicationTimeoutError."""
        future: Future[tuple[Receipt, list[str]]] = Future()
        waiter = _Waiter(receipt, replicas, self._clock() + timeout_ms / 1000, future, timeout_ms)
        with self._lock:
            ledger = self._ledgers.get(receipt.ledger)
            if ledger is None:
                ledger = self._ledgers[receipt.ledger] = _Ledger()
                self._new.append(receipt.ledger)
            ledger.waiters.append(waiter)
            self._settle(ledger)
        return future

    def start(self) -> ReplicaWatch:
        self._thread = threading.Thread(target=self._follow, name=f"write-concern-{self.home}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            for ledger in self._ledgers.values():
                for waiter in ledger.waiters:
                    self._fail(waiter)
                ledger.waiters.clear()

    # --- the watch thread ---------------------------------------------------------------------

    def _follow(self) -> None:
        pubsub: Any = None
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self.replication.client.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self.replication.held_channel)
                    with self._lock:  # what moved while we were not listening
                        self._new = list(self._ledgers)
                self._load_new()
                message = pubsub.get_message(timeout=LISTEN_SLICE)
                if message is not None and message.get("type") in ("message", b"message"):
                    self._heard(message["data"])
                self._expire()
            except REDIS_ERRORS as e:
                log.warning("write concern: Redis unavailable (%s); retrying", e)
                if pubsub is not None:
                    pubsub.close()
                    pubsub = None
                self._expire()
                self._stop.wait(RETRY_PAUSE)
        if pubsub is not None:
            pubsub.close()

    def _load_new(self) -> None:
        with self._lock:
            new, self._new = self._new, []
        for name in new:
            held = self.replication.held(name)
            with self._lock:
                ledger = self._ledgers[name]
                for node, height in held.items():
                    ledger.held[node] = max(height, ledger.held.get(node, -1))
                self._settle(ledger)

    def _heard(self, data: bytes | str) -> None:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        parts = text.split(" ")
        if len(parts) != 3 or not parts[2].isdigit():
            log.warning("write concern: unexpected message on the held channel")
            return
        node, name, height = parts[0], parts[1], int(parts[2])
        with self._lock:
            ledger = self._ledgers.get(name)
            if ledger is None:
                return
            ledger.held[node] = max(height, ledger.held.get(node, -1))
            self._settle(ledger)

    def _settle(self, ledger: _Ledger) -> None:
        """Resolve the waiters that enough replicas now satisfy (the lock is held)."""
        if not ledger.waiters:
            return
        waiting = []
        for waiter in ledger.waiters:
            holders = self._holders(ledger, waiter)
            if len(holders) >= waiter.replicas:
                waiter.future.set_result((waiter.receipt, holders))
            else:
                waiting.append(waiter)
        ledger.waiters = waiting

    def _holders(self, ledger: _Ledger, waiter: _Waiter) -> list[str]:
        height = waiter.receipt.height
        return sorted(node for node, held in ledger.held.items() if held >= height and node not in self.ignored)

    def _expire(self) -> None:
        now = self._clock()
        with self._lock:
            for ledger in self._ledgers.values():
                if not ledger.waiters:
                    continue
                late = [w for w in ledger.waiters if w.deadline <= now]
                if late:
                    ledger.waiters = [w for w in ledger.waiters if w.deadline > now]
                    for waiter in late:
                        self._fail(waiter, self._holders(ledger, waiter))

    def _fail(self, waiter: _Waiter, holders: list[str] | None = None) -> None:
        receipt = waiter.receipt
        holders = holders or []
        waiter.future.set_exception(
            ReplicationTimeoutError(
                f"the record is durable on {self.home} (ledger {receipt.ledger!r} height {receipt.height}), "
                f"but {len(holders)} of the {waiter.replicas} replicas asked for confirmed it "
                f"within {waiter.timeout_ms} ms",
                ledger=receipt.ledger,
                height=receipt.height,
                hash=receipt.hash,
                replicas=holders,
            )
        )
