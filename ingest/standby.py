"""An ingest node as the standby of other homes' ledgers (PROTOCOL 10.9).

The cluster file may name, per ledger, a ``standby`` ingest node. That node follows those
ledgers into its own store as a replica does (vledger.ingest.follow: the home's feed, the
Redis stream, the replicas' and the home's ``range``; stored only under a checkpoint, checked by
the ledger's epochs), so that ``ledger.promote`` finds every acknowledged record there. It
follows a ledger only while another node is its home: once it is promoted (or its store's
records name it home) it places the ledger's records itself and ignores the feed of it.

A home killed between a record's feed message and its Redis stream entry leaves a record the
replicas hold and cosigned, but the stream lacks and the feed may not have brought here (each
subscriber's queue dies with the publisher): the standby's targets therefore also come from
the cosigned checkpoints in Redis (what a promotion counts as acknowledged), and the replicas
are sources it catches up from.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from ..broker.feed import FeedCheckpoints, FeedMessage, FeedSource, Subscriber
from ..broker.replication import REDIS_ERRORS, ReplicationLedger, raise_alert
from ..node.errors import VledgerError
from ..node.store import ChainStore
from .epochs import EpochBook, Homes
from .follow import Follower, Page, Source
from .members import MemberGates
from .replica import (
    HEADS_EVERY,
    RECEIVE_BATCH,
    RECEIVE_SLICE_MS,
    NodeSource,
    StreamSource,
    checkpoint_keys,
    ledger_checkpoint_keys,
    node_source,
    resolve_alerts,
)
from .runtime import NodeRuntime
from .worker import Restarts

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
        self.replication = replication
        self.stream = _Only(StreamSource(replication), ledgers)
        sources: list[_Only] = [self.stream]
        gates, own = runtime.gates, runtime.client_keys
        # The replicas before the homes: a home that is gone would hold each catch-up for its
        # client's timeout, and what a replica gives is stored only under a checkpoint too.
        sources.extend(_Only(node_source(runtime, replica.name), ledgers) for replica in config.nodes_of("replica"))
        for home in homes_named:
            feeds.append(self._feed(gates, home))
            sources.append(_Only(node_source(runtime, home), ledgers))
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
            # Its refusals close once the home's records are stored at their heights, as a
            # replica's do (PROTOCOL 10.5); without this they stayed open for ever.
            on_resolve=lambda keys, upto: resolve_alerts(replication, keys, upto),
            batch=config.replication.catch_up_batch,
            stopping=self.stopping.is_set,
            unserved_after=config.replication.unserved_note_ms / 1000,
        )
        self.restarts = Restarts(f"{name}: the standby follow")
        self._thread: threading.Thread | None = None
        # The ledgers whose store was compared with the chain once another node was their home:
        # a former home's tail past the handover is set aside before it follows (10.9 failback).
        self._compared: set[str] = set()
        # The sources a former home's records are compared with, the home first: the stream may
        # still hold what the former home wrote there itself.
        self._compare_with = [*sources[1:][::-1], self.stream]

    @staticmethod
    def _feed(gates: MemberGates, home: str) -> FeedSource:
        address = gates.feed_address_of(home)
        return FeedSource(home, address.endpoint, address.key, address.also)

    def report(self) -> dict[str, Any]:
        """What ``hello`` and ``/readyz`` say of it (PROTOCOL 6, 15.3): the ledgers it is the
        standby of, those another node is home of now (:meth:`following`: once promoted, a
        ledger is among those ``hello`` names it home of instead), and how often its follow ran
        again after a bug (it counts since the node started)."""
        return standby_report(self.following(), self.restarts.count)

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
        # A bug must not end the follow for good: a standby that stops following can never be
        # promoted (its store lacks what was acknowledged). The node goes on placing its own
        # ledgers meanwhile; each restart is logged with its traceback and counted.
        # A damaged store file is no bug: run again, the follow would fail for ever. The store
        # reports it (on_damaged: the node's store_damaged alert, and it stops with status 65).
        self.restarts.run(self._follow, self.stopping, final=self.follower.store.damaged)

    def _follow(self) -> None:
        """Catch up, then follow the feed (and the targets Redis holds) until stopped."""
        self._compare(self.following())
        self.follower.start()
        next_check = time.monotonic() + HEADS_EVERY
        while not self.stopping.is_set():
            messages = self.subscriber.receive(RECEIVE_SLICE_MS, RECEIVE_BATCH)
            followed = self.following()
            if not followed <= self._compared:
                self._compare(followed)
            followed &= self._compared  # a former home's tail first goes aside
            if messages:
                self.follower.receive(_narrowed(messages, followed))
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + HEADS_EVERY
                self._refresh_targets(followed)
                for ledger in sorted(followed):
                    if self.follower.target(ledger) > store_head(self.follower.store, ledger):
                        self.follower.catch_up(ledger, self.follower.target(ledger) + 1)

    def _compare(self, followed: set[str]) -> None:
        """Set aside, for each of ``followed`` not compared yet, the records this store holds past
        where the chain's differ, when its own records name this node the ledger's home: a former
        home, named standby after a handover (10.9, a failback), that placed records past it while
        cut off (written with w=0: not the ledger's). They go to a file beside the store and an
        alert [record_conflict] names them; the chain is then followed from there. A ledger whose
        sources could not be asked is compared again at the next look."""
        store = self.follower.store
        for ledger in sorted(followed - self._compared):
            history = self.homes.book.history(ledger) if store.size(ledger) > 0 else None
            if history is None or history.current.home != self.name:
                self._compared.add(ledger)  # a standby's copy: every record came from its homes
                continue
            kept = first_difference(store, self._compare_with, ledger)
            if kept is None:
                log.warning("%s: no source answered to compare its records of %s with: again later", self.name, ledger)
                continue
            if kept < store.size(ledger):
                # Compared only once set aside: a file that could not be written (its error
                # restarts the follow loop) is tried again, not followed past (review r30).
                self.follower.set_aside(ledger, kept, self.homes.home_of(ledger).name)
                self.homes.book.forget(ledger)
            self._compared.add(ledger)

    def _refresh_targets(self, followed: set[str]) -> None:
        """Take the checkpoints Redis holds of ``followed`` as targets (see redis_checkpoints)."""
        try:
            notes = redis_checkpoints(self.stream, self.replication, followed)
        except (OSError, *REDIS_ERRORS) as e:
            log.debug("%s: checkpoints from Redis unavailable: %s", self.name, e)
            return
        for ledger, note, source in notes:
            self.follower.take_checkpoint(ledger, note, source, catch_up=False)


def first_difference(store: ChainStore, sources: Sequence[Source], ledger: str) -> int | None:
    """The lowest height from 1 at which ``store``'s record of ``ledger`` is not the chain's (the
    chain's record there is another, or the chain holds none there), ``store``'s size when none
    is, None when no source answered. Each height is asked of ``sources`` in order (the home
    first), the first that answers counting (one that holds nothing there too; a trimmed stream,
    whose page begins above it, does not answer): records link, so a search by halves asks a few
    heights.
    Nothing here is trusted beyond where to cut: what is kept is checked against the new home's
    checkpoints as it is followed (a contradiction is an alert), what is set aside stays in a file.
    """
    size = store.size(ledger)

    def differs(height: int) -> bool | None:
        for source in sources:
            try:
                page = source.fetch(ledger, height, 1)
            except (VledgerError, OSError) as e:
                log.debug("%s of %s at %d: %s", source.name, ledger, height, e)
                continue
            if page.rows and page.rows[0][0] > height:
                continue  # a trimmed stream: it cannot say what the chain holds there
            # The first source that answers decides, "none there" too: a later one (a replica,
            # the stream, which any ingest node's Redis user writes) that gave this store's own
            # record above the home's chain kept a whole tail that the search by halves then
            # never looked below (review r30). Cutting too low only sets aside records the
            # chain serves again as this node follows it; too high leaves a fork in its store.
            theirs = next((data for at, data in page.rows if at == height), None)
            if theirs is None:
                return True  # the chain ends below it
            ours = next((data for _, data in store.range_raw(ledger, height, height + 1)), None)
            return theirs != ours
        return None

    top = differs(size - 1) if size > 1 else False
    if top is None:
        return None
    if not top:
        return size
    low, high = 1, size - 1  # the record at ``high`` differs; each below ``low`` is the chain's
    while low < high:
        middle = (low + high) // 2
        found = differs(middle)
        if found is None:
            return None
        if found:
            high = middle
        else:
            low = middle + 1
    return low


def standby_report(ledgers: Iterable[str], restarts: int) -> dict[str, Any]:
    """``{"ledgers": [names, sorted], "follow_restarts": restarts}``: a standby's part of ``hello`` and ``/readyz``."""
    return {"ledgers": sorted(ledgers), "follow_restarts": restarts}


class _Checkpoints(Protocol):
    def checkpoints(self) -> dict[str, bytes]: ...


class _Cosignatures(Protocol):
    def cosignatures(self, ledger: str) -> dict[str, bytes]: ...


def redis_checkpoints(
    stream: _Checkpoints, replication: _Cosignatures, followed: set[str]
) -> list[tuple[str, bytes, str]]:
    """The checkpoints of ``followed`` that Redis holds, each as (ledger, note, who it is from):
    the home's latest (``stream``), then each witness's last cosigned one, by witness name.
    Unchecked: anyone who reaches Redis can write them, so each is checked with the ledger's
    key like any other (a forged one is an alert, never a target)."""
    notes = [(ledger, note, "redis") for ledger, note in sorted(stream.checkpoints().items()) if ledger in followed]
    for ledger in sorted(followed):
        cosigned = replication.cosignatures(ledger)
        notes.extend((ledger, note, f"redis:cosigned:{witness}") for witness, note in sorted(cosigned.items()))
    return notes


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
