"""AccountCache.stop returns while its thread waits on a Redis that stopped answering.

Every node's accounts cache reads Redis on a client made without a socket timeout: with
Redis's host cut off, a read of its thread waits on for ever (for minutes behind Sentinel's
5 s, read after read), and the node's stop joined that thread: supervisor then killed it.
"""

from __future__ import annotations

import threading
import time
from typing import Any, cast

from vledger.broker import accounts
from vledger.broker.accounts import AccountCache, AccountRegistry, AccountsSnapshot
from vledger.tests.integration.cluster import wait_until

HELD_FOR = 60.0  # how long the silent Redis holds a read: far past any stop


class SilentPubSub:
    """A subscription that confirms, then hears nothing."""

    def __init__(self) -> None:
        self.confirmed = False
        self.closed = False

    def subscribe(self, channel: str) -> None:
        pass

    def get_message(self, timeout: float = 0.0) -> dict[str, Any] | None:
        if not self.confirmed:
            self.confirmed = True
            return {"type": "subscribe", "data": 1}
        time.sleep(min(timeout, 0.05))
        return None

    def close(self) -> None:
        self.closed = True


class SilentRedis:
    """The registry's Redis client, as far as the cache uses it: its subscription."""

    def __init__(self, subscription: SilentPubSub) -> None:
        self.subscription = subscription

    def pubsub(self) -> SilentPubSub:
        return self.subscription


class CutOffRegistry:
    """A registry whose Redis answers until ``cut`` is set, then holds every read (no timeout)."""

    channel = "vledger:accounts"

    def __init__(self) -> None:
        self.cut = threading.Event()
        self.held = threading.Event()  # a read is waiting on the silent Redis
        self.released = threading.Event()
        self.subscription = SilentPubSub()
        self.client = SilentRedis(self.subscription)

    def _read(self) -> None:
        if self.cut.is_set():
            self.held.set()
            self.released.wait(HELD_FOR)

    def snapshot(self) -> AccountsSnapshot:
        self._read()
        return AccountsSnapshot.empty()

    def admin_size(self) -> int:
        return 0

    def record_applied(self, node: str, version: int, admin: int | None = None) -> None:
        self._read()

    def version(self) -> int:
        self._read()
        return 0


def test_a_stop_returns_while_the_thread_waits_on_a_redis_that_stopped_answering() -> None:
    registry = CutOffRegistry()
    cache = AccountCache(cast(AccountRegistry, registry), "ingest-1", poll_interval=0.05).start()
    try:
        registry.cut.set()
        wait_until(registry.held.is_set, 10, "the cache's thread waits on the silent Redis")
        stopped = threading.Thread(target=cache.stop, daemon=True)
        began = time.monotonic()
        stopped.start()
        stopped.join(accounts._STOP_WAIT + 10)
        assert not stopped.is_alive(), "stop() waited on the thread's Redis read"
        assert time.monotonic() - began < accounts._STOP_WAIT + 5
        assert not registry.subscription.closed  # still the thread's: not closed under its read
    finally:
        registry.released.set()
