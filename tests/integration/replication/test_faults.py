"""Faults under load: replication converges, and nothing acknowledged is lost or changed.

While a writer thread keeps putting records on the home node (``Load``), one part fails:
a replica is killed with SIGKILL and started again, Redis is stopped and started again,
the home node is restarted, or a replica is frozen (SIGSTOP) until the feed drops its
messages. Afterwards every node holds the home node's chain byte for byte, every
acknowledged receipt is in it (same height, same hash), the Redis stream holds each height
once, and Redis counts every record on every node.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vledger.broker.client import Client
from vledger.broker.redis_server import RedisServer, connect, find_redis_server, free_port
from vledger.broker.replication import ReplicationLedger, count_distribution
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.node.errors import NodeUnavailableError, RemoteError
from vledger.node.record import Entry, decode_record
from vledger.tests.integration.cluster import ADMIN, LocalCluster, entry, genesis, wait_until

LEDGER = "votes"
WRITER = "writer1"
HEARTBEAT_MS = 200
CONVERGE_S = 40.0
ACK_WAIT_S = 30.0

StartCluster = Callable[..., LocalCluster]


@dataclass(frozen=True, slots=True)
class Ack:
    """One acknowledged put: where the home node placed the record, and its hash."""

    ledger: str
    height: int
    hash: bytes


class Load:
    """Puts records on ``ledger`` from a thread of its own, ``batch`` at a time, until stopped.

    Every receipt is kept. A put that fails is recorded in ``failures``; with ``retry``, the
    same entries are sent again (a retry is answered as a duplicate with the first receipt),
    else the thread ends there.
    """

    def __init__(
        self,
        cluster: LocalCluster,
        ledger: str,
        *,
        batch: int = 50,
        pad: int = 0,
        retry: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self.address = cluster.address()
        self.keys = cluster.keys[WRITER]
        self.ledger = ledger
        self.batch = batch
        self.pad = "x" * pad
        self.retry = retry
        self.timeout = timeout
        self.acks: dict[str, Ack] = {}  # request id -> receipt
        self.failures: list[str] = []
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    @property
    def acked(self) -> int:
        with self._lock:
            return len(self.acks)

    def wait_for(self, more: int, timeout: float = ACK_WAIT_S) -> None:
        """Return once ``more`` records beyond those acknowledged now are acknowledged."""
        goal = self.acked + more

        def reached() -> bool:
            if not self._thread.is_alive():
                raise AssertionError(f"the load stopped: {self.error!r}; failures {self.failures[-3:]}")
            return self.acked >= goal

        wait_until(reached, timeout, f"{goal} puts acknowledged (now {self.acked})")

    def stop(self, timeout: float = 30.0) -> list[Ack]:
        """Stop after the batch in hand; every acknowledgement, by height."""
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the load did not stop"
        if self.error is not None:
            raise AssertionError(f"the load failed: {self.error!r}") from self.error
        return sorted(self.acks.values(), key=lambda a: a.height)

    def _run(self) -> None:
        try:
            with Client(self.address, self.keys, timeout=self.timeout) as client:
                n = 0
                while not self._stop.is_set():
                    payloads = [{"n": i, "pad": self.pad} for i in range(n, n + self.batch)]
                    n += self.batch
                    entries = [entry(self.ledger, "vote", p, WRITER) for p in payloads]
                    if not self._put(client, entries):
                        return
        except BaseException as e:  # reported by wait_for and stop
            self.error = e

    def _put(self, client: Client, entries: list[Entry]) -> bool:
        while True:
            try:
                receipts = client.put_many(entries)
            except (NodeUnavailableError, RemoteError) as e:
                self.failures.append(f"{type(e).__name__}: {e}")
                if not self.retry or self._stop.is_set():
                    return self.retry
                continue
            with self._lock:
                for put, receipt in zip(entries, receipts, strict=True):
                    ack = Ack(receipt["ledger"], receipt["height"], receipt["hash"])
                    request_id = put.content.request_id
                    first = self.acks.setdefault(request_id, ack)
                    assert first == ack, f"{request_id} acknowledged as {first} and as {ack}"
            return True


def fault_cluster(start_cluster: StartCluster, redis_url: str | None = None, **replication: int) -> LocalCluster:
    cluster = start_cluster(redis_url, nodes=1, replicas=3, replication={"heartbeat_ms": HEARTBEAT_MS, **replication})
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
    return cluster


def assert_converged(cluster: LocalCluster, acks: list[Ack]) -> None:
    """Every node holds the home's chain byte for byte, each acknowledged receipt in it; the
    stream holds each height once; Redis counts each record on every node."""
    size: int = cluster.admin().call("size", {"ledger": LEDGER})["size"]
    assert acks and size >= acks[-1].height + 1
    wait_until(lambda: set(cluster.sizes(LEDGER).values()) == {size}, CONVERGE_S, f"every node at size {size}")
    heads = {name: cluster.admin(name).call("head", {"ledger": LEDGER})["hash"] for name in cluster.procs}
    assert len(set(heads.values())) == 1, heads
    home = list(cluster.admin().records(LEDGER))
    for name in cluster.replica_names:
        assert list(cluster.admin(name).records(LEDGER)) == home, f"{name} holds other bytes"
    hashes = [decode_record(data, PROTOCOL_LIMITS).hash for data in home]
    lost = [a for a in acks if a.ledger != LEDGER or hashes[a.height] != a.hash]
    assert not lost, f"{len(lost)} acknowledged records are not in the chain, e.g. {lost[:3]}"
    assert len({a.height for a in acks}) == len(acks), "two acknowledgements of one height"
    replication = ReplicationLedger(connect(cluster.cluster_redis_url))
    # The stream may lag (after a Redis outage the home node refills it from its store).
    wait_until(lambda: replication.last_height(LEDGER) == size - 1, 10, f"the stream up to height {size - 1}")
    streamed = replication.read(LEDGER, 0, size + 10)
    assert [r.height for r in streamed] == list(range(size))
    assert [r.data for r in streamed] == home
    nodes = 1 + len(cluster.replica_names)
    wait_until(
        lambda: count_distribution(replication.held(LEDGER), size) == {nodes: size},
        10,
        f"every record counted on {nodes} nodes: {replication.held(LEDGER)}",
    )


def test_a_replica_killed_mid_stream_catches_up_with_every_record(start_cluster: StartCluster) -> None:
    cluster = fault_cluster(start_cluster)
    load = Load(cluster, LEDGER).start()
    load.wait_for(200)
    cluster.kill_node("replica-2")
    load.wait_for(800)  # while it is down
    cluster.start_node("replica-2")
    load.wait_for(300)  # while it catches up, the feed running
    acks = load.stop()
    assert load.failures == []
    assert_converged(cluster, acks)
    assert cluster.stop_node("replica-2") == 0
    verified = cluster.verify_store("replica-2")  # from genesis, every check, after the SIGKILL
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.fixture
def own_redis(redis_server: RedisServer) -> Iterator[RedisServer]:
    """A redis-server of this test's own (append-only file on), on a port it keeps across restarts."""
    directory = Path(tempfile.mkdtemp(prefix="vl-redis-", dir="/tmp"))
    server = RedisServer(directory, free_port(), executable=find_redis_server())
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_redis_restarted_mid_stream_leaves_puts_acknowledged_and_the_stream_complete(
    own_redis: RedisServer, start_cluster: StartCluster
) -> None:
    cluster = fault_cluster(start_cluster, own_redis.url)
    load = Load(cluster, LEDGER).start()
    load.wait_for(200)
    own_redis.stop()
    try:
        load.wait_for(800)  # acknowledged without Redis: the store is the truth, the feed goes on
    finally:
        own_redis.start()  # same port, same directory: its append-only file brings the data back
    load.wait_for(300)
    acks = load.stop()
    assert load.failures == []
    assert_converged(cluster, acks)


def test_the_home_node_restarted_mid_stream_loses_nothing_acknowledged(start_cluster: StartCluster) -> None:
    cluster = fault_cluster(start_cluster)
    load = Load(cluster, LEDGER, retry=True, timeout=2.0).start()
    load.wait_for(300)
    assert cluster.restart_node("ingest-1") == 0  # SIGTERM: the puts in flight are answered
    load.wait_for(500)
    acks = load.stop()
    assert_converged(cluster, acks)


def test_a_frozen_replica_past_the_high_water_mark_catches_up(start_cluster: StartCluster) -> None:
    # Queues of 10 messages each way, and records of about 5 kB: a subscriber that stops
    # reading fills its socket buffers and its queues within a few hundred records, after
    # which its home node's PUB socket drops what is meant for it. (Pages of 500 such records
    # are over 2 MiB: reading the chain back also checks that `range` bounds a page in bytes.)
    cluster = fault_cluster(start_cluster, send_hwm=10, receive_hwm=10)
    tap = cluster.tap("ingest-1", receive_hwm=10)  # the test's own subscriber, frozen as long
    tap.wait_beats(1)
    load = Load(cluster, LEDGER, pad=5000).start()
    load.wait_for(200)
    tap.read()
    first = load.acked
    cluster.signal_node("replica-1", signal.SIGSTOP)
    try:
        load.wait_for(2000)  # about 10 MB
        frozen = load.acked
    finally:
        cluster.signal_node("replica-1", signal.SIGCONT)
    load.wait_for(200)
    acks = load.stop()
    assert load.failures == []
    assert_converged(cluster, acks)
    assert cluster.admin("replica-1").hello()["current"] is True
    # The proof that the feed dropped records meant for a subscriber frozen that long.
    tap.wait_beats(2)
    heard = set(tap.heights(LEDGER))
    during = {a.height for a in acks[first:frozen]}
    assert during - heard, "the frozen subscriber lost nothing: the burst did not reach the high-water mark"
