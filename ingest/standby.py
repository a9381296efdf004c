"""An ingest node as the standby of other homes' ledgers (PROTOCOL 10.9).

The cluster file may name, per ledger, a ``standby`` ingest node. That node follows those
ledgers into its own store as a replica does (vledger.ingest.follow: the home's feed, the
Redis stream, the home's ``range``; stored only under a checkpoint, checked by the ledger's
epochs), so that ``ledger.promote`` finds every acknowledged record there. It follows a
ledger only while another node is its home: once it is promoted (or its store's records
name it home) it places the ledger's records itself and ignores the feed of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from functools import partial

from ..broker.client import Client
from ..broker.feed import FeedCheckpoints, FeedMessage, FeedSource, Subscriber
from ..broker.replication import ReplicationLedger, raise_alert
from ..node.store import ChainStore
from .epochs import EpochBook, Homes
from .follow import Follower, Page
from .members import MemberGates
from .replica import (
    HEADS_EVERY,
    RECEIVE_BATCH,
    RECEIVE_SLICE_MS,
    SOURCE_TIMEOUT,
    NodeSource,
    StreamSource,
    checkpoint_keys,
    ledger_checkpoint_keys,
)
from .runtime import NodeRuntime

log = logging.getLogger(__name__)


class _Only:
    """A source narrowed to the ledgers this standby follows (a home's stream holds others)."""

    def __init__(self, source: StreamSource | NodeSource, followed: Iterable[str]) -> None:
        self.source = source
        self.name = source.name
        self.followed = frozenset(followed)

    def fetch(self, ledger: str, start: int, count: int) -> Page:
        return self.source.fetch(ledger, start, count)

    def checkpoints(self) -> dict[str, bytes]:
        return {k: v for k, v in self.source.checkpoints().items() if k in self.followed}


class StandbyFollow:
    """Follows ``ledgers`` into this ingest node's store on a thread of its own until stopped."""

    def __init__(
        self,
        runtime: NodeRuntime,
        store: ChainStore,
        replication: ReplicationLedger,
        book: EpochBook,
        homes: Homes,
        ledgers: list[str],
    ) -> None:
        config, name = runtime.config, runtime.name
        self.name = name
        self.homes = homes
        self.ledgers = frozenset(ledgers)
        self.stopping = threading.Event()
        homes_named = sorted({config.home_of(ledger).name for ledger in ledgers})
        feeds = []
        sources: list[_Only] = [_Only(StreamSource(replication), ledgers)]
        gates, own = runtime.gates, runtime.client_keys
        # Each home at its keys in force, with ours, through their rotations (PROTOCOL 16.6).
        for home in homes_named:
            feeds.append(self._feed(gates, home))
            client = Client(gates.address_of(home), own.current, timeout=SOURCE_TIMEOUT, follow=False)
            gates.keep_addressed(client, home)
            own.follow(partial(setattr, client, "keys"))
            runtime.closing(client.close)
            sources.append(_Only(NodeSource(home, client, config.ingest.page_size), ledgers))
        self.subscriber = Subscriber(
            runtime.ctx,
            own.current,
            feeds,
            receive_hwm=config.replication.receive_hwm,
            max_message_bytes=2 * config.ingest.max_message_bytes,
            max_record_bytes=config.settings.limits.max_record_bytes,
        )
        runtime.closing(self.subscriber.close)
        gates.on_rotation(lambda _: self.subscriber.retarget(own.current, [self._feed(gates, h) for h in homes_named]))
        self.follower = Follower(
            name,
            store,
            sources,
            keys=ledger_checkpoint_keys(config, checkpoint_keys(config, store), book),
            home_of=lambda ledger: homes.home_of(ledger).name,
            on_stored=lambda records, hops: None,  # the store's on_commit tells the book and the outbox
            on_alert=lambda alert: raise_alert(replication, alert),
            batch=config.replication.catch_up_batch,
            stopping=self.stopping.is_set,
        )
        self._thread: threading.Thread | None = None

    @staticmethod
    def _feed(gates: MemberGates, home: str) -> FeedSource:
        address = gates.feed_address_of(home)
        return FeedSource(home, address.endpoint, address.key, address.also)

    def following(self) -> set[str]:
        """The ledgers it follows now: those another node is home of."""
        return {ledger for ledger in self.ledgers if self.homes.home_of(ledger).name != self.name}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-standby", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:
            self.follower.start()
            next_check = time.monotonic() + HEADS_EVERY
            while not self.stopping.is_set():
                messages = self.subscriber.receive(RECEIVE_SLICE_MS, RECEIVE_BATCH)
                followed = self.following()
                if messages:
                    self.follower.receive(_narrowed(messages, followed))
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + HEADS_EVERY
                    for ledger in sorted(followed):
                        if self.follower.target(ledger) > store_head(self.follower.store, ledger):
                            self.follower.catch_up(ledger, self.follower.target(ledger) + 1)
        except Exception:  # a bug: the node goes on placing its own ledgers; say so loudly
            log.exception("%s: the standby follow stopped", self.name)


def store_head(store: ChainStore, ledger: str) -> int:
    return store.size(ledger) - 1


def _narrowed(messages: Iterable[FeedMessage], followed: set[str]) -> list[FeedMessage]:
    narrowed: list[FeedMessage] = []
    for message in messages:
        if isinstance(message, FeedCheckpoints):
            notes = {k: v for k, v in message.checkpoints.items() if k in followed}
            if notes:
                narrowed.append(FeedCheckpoints(message.sender, notes))
        elif message.ledger in followed:
            narrowed.append(message)
    return narrowed
