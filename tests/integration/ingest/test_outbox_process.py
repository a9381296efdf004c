"""The ingest node's outbox process: a real store, a real CURVE feed, a real Redis and a real
child process. What the committer made durable reaches the stream and the feed (records before
the checkpoint that covers them), a killed child is replaced and the stream filled from the
store, and a stop ships everything before the child ends."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from vledger.broker.curve import AllowList
from vledger.broker.feed import FeedCheckpoints, FeedMessage, FeedRecord, FeedSource, Publisher, Subscriber
from vledger.broker.keys import KeyPair, new_keypair
from vledger.broker.redis_server import RedisServer
from vledger.broker.replication import STORE_DAMAGED, ReplicationLedger
from vledger.broker.signing import new_signing_key
from vledger.config.cluster import RedisAccess, ReplicationSettings
from vledger.config.settings import BrokerSettings, Limits
from vledger.config.supervisor import EXIT_STORE_DAMAGED
from vledger.ingest import outbox_process
from vledger.ingest.outbox_process import OUTBOX_NICENESS, OutboxProcess
from vledger.node.checkpoint_log import SIGNED
from vledger.node.errors import StoreDamagedError
from vledger.node.record import Content, Entry
from vledger.node.store import ChainStore
from vledger.node.storefile import DB_NAME
from vledger.node.witness import CheckpointKeys, HomeSigner, home_key
from vledger.tests.sqlite_faults import overwrite_pages
from vledger.tests.unit.ingest.note_chain import T0
from vledger.tests.unit.ingest.note_chain import append as append_notes

HOME = "home"
LEDGER = "ledger-a"
CLUSTER = "test"
SIGNER = new_signing_key()
KEYS = CheckpointKeys(CLUSTER, lambda ledger: home_key(CLUSTER, ledger, SIGNER.public.raw))
SETTINGS = ReplicationSettings(heartbeat_ms=50, catch_up_batch=16)  # a dead child is replaced within 50 ms
DEADLINE = 20.0  # seconds: a spawned interpreter imports vledger first


def append(store: ChainStore, count: int) -> None:
    """``count`` more records on LEDGER (its genesis first if it is new), a few per group commit."""
    append_notes(store, LEDGER, count)


def put_alone(store: ChainStore) -> None:
    """One more record on LEDGER committed as the request loop commits a lone writer's put:
    queued without waking the committer, then committed and answered by flush on this thread."""
    height = store.size(LEDGER)
    content = Content(LEDGER, "note", {"n": height}, "Zoe.1", f"r-{height}", T0 + height)
    future = store.submit_entry(Entry.prepare(content, 0, Limits()), wake=False)
    store.flush()
    future.result()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


class Home:
    """A home's store, its CURVE feed and its outbox process, started; closed by the fixture."""

    def __init__(
        self, directory: Path, redis: RedisServer, subscriber_keys: KeyPair, settings: ReplicationSettings = SETTINGS
    ) -> None:
        self.store = ChainStore(directory, origin=HOME, clock=lambda: T0)
        self.publisher = Publisher(
            HOME, new_keypair(), "tcp://127.0.0.1:*", AllowList([subscriber_keys.public]), BrokerSettings(), 10_000
        )
        self.outbox = OutboxProcess(
            HOME,
            self.store,
            self.publisher,
            RedisAccess(redis.url),
            settings,
            stream_max_len=100_000,
            signer=HomeSigner(CLUSTER, SIGNER.seed),
        )
        self.store.on_commit = self.outbox.committed
        self.outbox.start()
        self.stopped = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.outbox.stop()

    def close(self) -> None:
        self.stop()
        self.publisher.close()
        self.store.close()


@pytest.fixture
def feed_keys() -> KeyPair:
    return new_keypair()


@pytest.fixture
def home(short_tmp: Path, redis_server: RedisServer, redis_client: Any, feed_keys: KeyPair) -> Iterator[Home]:
    running = Home(short_tmp / "store", redis_server, feed_keys)
    yield running
    running.close()


@pytest.fixture
def feed(home: Home, feed_keys: KeyPair) -> Iterator[Subscriber]:
    context: zmq.Context[Any] = zmq.Context()
    server = home.publisher.server
    subscriber = Subscriber(
        context,
        feed_keys,
        [FeedSource(HOME, server.connect_endpoint, server.keys.public)],
        receive_hwm=100_000,
        max_message_bytes=1 << 20,
        max_record_bytes=1 << 16,
    )
    yield subscriber
    subscriber.close()
    context.destroy(linger=0)


def streamed(replication: ReplicationLedger) -> list[tuple[int, bytes]]:
    return [(r.height, r.data) for r in replication.read(LEDGER, 0, 1_000_000)]


def stored(store: ChainStore) -> list[tuple[int, bytes]]:
    return list(store.range_raw(LEDGER))


def sizes_on_feed(message: FeedMessage) -> int | None:
    """The size of LEDGER's checkpoint in a checkpoints message, checked with the home's key."""
    if not isinstance(message, FeedCheckpoints) or LEDGER not in message.checkpoints:
        return None
    return KEYS.check(LEDGER, message.checkpoints[LEDGER]).size


def test_durable_records_reach_the_stream_and_the_feed_before_their_checkpoint(
    home: Home, feed: Subscriber, redis_client: Any
) -> None:
    replication = ReplicationLedger(redis_client)
    append(home.store, 1)
    received: list[FeedMessage] = []

    def arrived(condition: Callable[[FeedMessage], bool]) -> Callable[[], bool]:
        def check() -> bool:
            received.extend(feed.receive(20, 10_000))
            return any(condition(m) for m in received)

        return check

    # The subscription is up once a heartbeat's checkpoints arrive (a slow joiner misses the first).
    wait_until(arrived(lambda m: sizes_on_feed(m) is not None), "a heartbeat on the feed")
    assert home.outbox.pid not in (None, os.getpid())
    received.clear()
    for _ in range(6):
        append(home.store, 25)
    size = home.store.size(LEDGER)
    wait_until(arrived(lambda m: sizes_on_feed(m) == size), "the head's checkpoint on the feed")
    records = [m for m in received if isinstance(m, FeedRecord)]
    # The genesis may have gone out before the subscription was up, or after the heartbeat.
    assert [m.height for m in records] in (list(range(size)), list(range(1, size)))  # each once, in order
    assert [(m.height, m.data) for m in records if m.height > 0] == stored(home.store)[1:]
    first_at_head = next(i for i, m in enumerate(received) if sizes_on_feed(m) == size)
    assert received.index(records[-1]) < first_at_head  # the records before the checkpoint that covers them
    wait_until(lambda: streamed(replication) == stored(home.store), "the stream holds the store")
    wait_until(lambda: replication.held(LEDGER).get(HOME) == size - 1, "Redis knows the home holds the head")


def test_a_killed_outbox_process_is_replaced_and_the_stream_filled_from_the_store(
    home: Home, redis_client: Any
) -> None:
    replication = ReplicationLedger(redis_client)
    append(home.store, 20)
    wait_until(lambda: streamed(replication) == stored(home.store), "the stream holds the store")
    killed = home.outbox.pid
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    append(home.store, 40)  # handed to a dead process, or to none: only the store has them
    wait_until(lambda: home.outbox.restarts >= 1 and home.outbox.alive(), "another outbox process")
    assert home.outbox.pid != killed
    wait_until(lambda: streamed(replication) == stored(home.store), "the stream filled from the store")
    assert redis_client.xlen(replication.stream_key(LEDGER)) == home.store.size(LEDGER)  # each height once


def test_a_due_pass_runs_on_the_committing_thread_before_its_appends_are_answered(
    short_tmp: Path, redis_server: RedisServer, redis_client: Any, feed_keys: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone writer's put that finds a pass due runs it itself, once flush committed and
    answered it: its checkpoint is signed and kept, and the heights handed to the outbox
    process, before flush returns. The outbox thread's pass cost each put it met its wake-ups
    and turns at the GIL, and its checkpoint row waited for the next put's commit (p31)."""
    # No heartbeat during the test, and no grace that ends before the put: a pass on the outbox
    # thread would take the commit's due pass (under load the put came > 2 ms after it was due).
    monkeypatch.setattr(outbox_process, "INLINE_PASS_GRACE_SECONDS", 3600.0)
    settings = ReplicationSettings(heartbeat_ms=600_000, catch_up_batch=16)
    home = Home(short_tmp / "store", redis_server, feed_keys, settings)
    try:
        replication = ReplicationLedger(redis_client)
        append(home.store, 1)
        gap = settings.outbox_interval_ms / 1000
        for _ in range(5):
            # Due once outbox_interval_ms passed since the last pass (the first, or this loop's).
            wait_until(lambda: time.monotonic() >= home.outbox._passed_at + gap, "a pass due")
            put_alone(home.store)
            kept = home.store.checkpoints.latest(LEDGER, SIGNED)
            assert kept is not None and kept.size == home.store.size(LEDGER)
        wait_until(lambda: streamed(replication) == stored(home.store), "the stream holds the store")
        wait_until(lambda: KEYS.check(LEDGER, replication.checkpoints()[LEDGER]).size == home.store.size(LEDGER),
                   "the head's checkpoint in Redis")  # fmt: skip
    finally:
        home.close()


def _quiet_home(
    short_tmp: Path, redis_server: RedisServer, feed_keys: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> Home:
    """A home whose passes come only when asked: no heartbeat, no gap's end, no grace, during a test."""
    monkeypatch.setattr(outbox_process, "INLINE_PASS_GRACE_SECONDS", 3600.0)
    settings = ReplicationSettings(heartbeat_ms=600_000, outbox_interval_ms=600_000, catch_up_batch=16)
    home = Home(short_tmp / "store", redis_server, feed_keys, settings)
    # The start's pass (it signs the head and syncs Redis) is over before the test begins.
    wait_until(lambda: home.outbox._passed_at > 0 and not home.outbox._pass_lock.locked(), "the first pass")
    return home


def kept_size(store: ChainStore) -> int:
    kept = store.checkpoints.latest(LEDGER, SIGNED)
    return kept.size if kept is not None else 0


def test_a_put_whose_write_concern_waits_passes_at_once_on_the_committing_thread(
    short_tmp: Path, redis_server: RedisServer, redis_client: Any, feed_keys: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within the gap a lone writer's w=0 put waits for the next pass; one whose write concern
    waits (CosignatureWatch.wait calls hurry from its answer's callback, before on_commit) has its
    pass on its own thread before flush returns, and its records reach the stream without the
    gap's end: a longer outbox_interval_ms never makes a w >= 1 put wait longer."""
    home = _quiet_home(short_tmp, redis_server, feed_keys, monkeypatch)
    try:
        replication = ReplicationLedger(redis_client)
        append(home.store, 1)  # the genesis
        put_alone(home.store)
        before = kept_size(home.store)
        assert before < home.store.size(LEDGER)  # w=0: no pass within the gap
        passed = home.outbox._passed_at
        wait_until(lambda: time.monotonic() >= passed + outbox_process.HURRIED_PASS_GAP_SECONDS, "a hurried pass due")
        home.outbox.hurry(LEDGER, home.store.size(LEDGER))  # the next put's height
        put_alone(home.store)
        assert kept_size(home.store) == home.store.size(LEDGER)  # signed and kept before flush returned
        assert home.outbox._hurried == {}
        hurried_at = home.outbox._passed_at
        wait_until(lambda: streamed(replication) == stored(home.store), "the stream holds the store")
        put_alone(home.store)  # w=0 again: it waits for the gap
        assert kept_size(home.store) == home.store.size(LEDGER) - 1
        # Hurried again at once: its pass waits HURRIED_PASS_GAP_SECONDS after the last, on the
        # outbox thread (no later commit comes), not outbox_interval_ms.
        home.outbox.hurry(LEDGER, home.store.size(LEDGER))
        put_alone(home.store)
        assert time.monotonic() < hurried_at + 60  # far from outbox_interval_ms's end
        wait_until(lambda: kept_size(home.store) == home.store.size(LEDGER), "the hurried pass")
        assert home.outbox._passed_at >= hurried_at + outbox_process.HURRIED_PASS_GAP_SECONDS
        assert home.outbox._hurried == {}
    finally:
        home.close()


def test_a_hurry_after_its_commit_wakes_the_outbox_thread_and_one_passed_already_asks_nothing(
    short_tmp: Path, redis_server: RedisServer, redis_client: Any, feed_keys: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's committer thread runs on_commit before its answers (a large round): the
    hurry then comes after the heights were noted, and the outbox thread passes at once."""
    home = _quiet_home(short_tmp, redis_server, feed_keys, monkeypatch)
    try:
        append(home.store, 30)  # woken committer: on_commit, then the answers
        head = home.store.size(LEDGER) - 1
        assert kept_size(home.store) <= head
        home.outbox.hurry(LEDGER, head)
        wait_until(lambda: kept_size(home.store) == head + 1, "the outbox thread's pass")
        assert home.outbox._hurried == {}
        passed = home.outbox._passed_at
        home.outbox.hurry(LEDGER, head)  # handed over already: no pass for it
        home.outbox.hurry(LEDGER, 3)
        assert home.outbox._hurried == {}
        assert home.outbox._passed_at == passed
    finally:
        home.close()


def test_the_outbox_process_runs_nicer_than_its_node(home: Home, redis_client: Any) -> None:
    """Its passes must not take the core from the node's request thread (OUTBOX_NICENESS)."""
    replication = ReplicationLedger(redis_client)
    append(home.store, 1)
    wait_until(lambda: streamed(replication) == stored(home.store), "the stream holds the store")  # it ships
    assert home.outbox.pid is not None
    node = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, home.outbox.pid) == min(19, node + OUTBOX_NICENESS) > node


def test_a_stop_ships_what_was_committed_then_ends_the_process(home: Home, redis_client: Any) -> None:
    replication = ReplicationLedger(redis_client)
    append(home.store, 60)
    directory = home.outbox.feed_directory
    assert directory is not None and directory.stat().st_mode & 0o077 == 0  # no other user pushes feed messages
    home.stop()  # at once: the heights were handed over when their appends returned
    assert streamed(replication) == stored(home.store)
    assert replication.held(LEDGER) == {HOME: 59}
    assert not home.outbox.alive()
    assert not directory.exists()


def test_a_step_on_the_pub_socket_runs_on_the_proxy_thread_and_the_feed_goes_on(home: Home, feed: Subscriber) -> None:
    """A key rotation re-binds the feed's socket on the thread that owns it: the proxy's."""
    append(home.store, 10)
    ran: list[str] = []
    home.outbox.feed_call_soon(lambda: ran.append(threading.current_thread().name))
    wait_until(lambda: ran == ["outbox-proxy"], "the step on the proxy's thread")
    received: list[FeedMessage] = []

    def heartbeat_arrived() -> bool:  # every 50 ms, for as long as the feed goes on
        received.extend(feed.receive(20, 10_000))
        return any(sizes_on_feed(m) == 10 for m in received)

    wait_until(heartbeat_arrived, "the feed going on after the step")


def test_an_outbox_process_that_finds_the_store_damaged_raises_the_alert_and_the_node_stops(
    home: Home, redis_client: Any
) -> None:
    """Its file's pages overwritten while it runs: the outbox process's next read meets them. It
    raises store_damaged as the node would, ends with EXIT_STORE_DAMAGED, is not started again
    (it would fail the same way, for ever: it was, every heartbeat), and the node's store is told,
    so that the node stops too (ingest/runtime.py). Before, it logged and restarted in a loop."""
    replication = ReplicationLedger(redis_client)
    append(home.store, 20)
    wait_until(lambda: streamed(replication) == stored(home.store), "the stream holds the store")
    told: list[StoreDamagedError] = []
    home.store.on_damaged = told.append
    first = home.outbox.pid
    overwrite_pages(home.store.directory / DB_NAME)
    wait_until(lambda: bool(told), "the node's store told of the damage")
    assert "the outbox process" in told[0].message and f"exit code {EXIT_STORE_DAMAGED}" in told[0].message
    assert home.outbox.restarts == 0 and home.outbox.pid == first and not home.outbox.alive()
    alert = replication.open_alerts()[f"{HOME}||{STORE_DAMAGED}"]
    assert alert["detail"].startswith("[store_error] ") and str(home.store.directory / DB_NAME) in alert["detail"]
    assert "malformed" in alert["detail"] or "not a database" in alert["detail"], alert
    time.sleep(4 * SETTINGS.heartbeat_ms / 1000)  # an observation window: four heartbeats start no other
    assert home.outbox.restarts == 0 and len(told) == 1
