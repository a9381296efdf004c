"""Relays: replicas that republish what they store, in a ring, a diamond, and not at all.

A relay republishes only what it newly stores from the feed (docs/PROTOCOL.md 10.1), so a
record goes round a ring once and crosses a diamond once per path, however large
``max_hops``. The test's own subscribers (FeedTap, under the observer's key) hear every
publisher: no node publishes a height twice, and once every node holds the home's chain the
feeds carry heartbeats only. Each store then verifies from genesis, the same bytes as the
home node's, and Redis counts every record on every node. With ``max_hops = 1`` a relay
republishes nothing, and a replica that follows only that relay still converges, by
catching up from the Redis stream and from the relay's ``range``. A subscriber that a relay
refused (its account not applied there yet) subscribes again until it is admitted.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from vledger.broker.keys import new_keypair
from vledger.broker.redis_server import connect
from vledger.broker.replication import ReplicationLedger, count_distribution
from vledger.tests.integration.cluster import ADMIN, FeedTap, LocalCluster, entry, genesis, wait_until

LEDGER = "votes"
HEARTBEAT_MS = 200
CONVERGE_S = 30.0


StartCluster = Callable[..., LocalCluster]


def relay_cluster(
    start_cluster: StartCluster,
    follow: Mapping[str, list[str]],
    relays: list[str],
    *,
    replicas: int = 3,
    max_hops: int,
    **replication: int,
) -> LocalCluster:
    cluster = start_cluster(
        nodes=1,
        replicas=replicas,
        replication={"max_hops": max_hops, "heartbeat_ms": HEARTBEAT_MS, **replication},
        follow=follow,
        relays=relays,
    )
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
    return cluster


def put(cluster: LocalCluster, start: int, count: int, batch: int = 200) -> None:
    writer = cluster.client("writer1")
    for first in range(start, start + count, batch):
        writer.put_many([entry(LEDGER, "vote", {"n": n}, "writer1") for n in range(first, first + batch)])


def live_taps(cluster: LocalCluster, publishers: list[str]) -> dict[str, FeedTap]:
    """A subscriber on each publisher's feed, each proven live by a heartbeat."""
    taps = {name: cluster.tap(name) for name in publishers}
    for tap in taps.values():
        tap.wait_beats(1)
    return taps


def wait_converged(cluster: LocalCluster) -> int:
    """Every node at the home node's size; that size."""
    size: int = cluster.admin().call("size", {"ledger": LEDGER})["size"]
    wait_until(lambda: set(cluster.sizes(LEDGER).values()) == {size}, CONVERGE_S, f"every node at size {size}")
    return size


def assert_no_loop(taps: Mapping[str, FeedTap], size: int, hops: Mapping[str, int]) -> None:
    """No publisher sent a height twice, each sent its copies with its hop count, and after
    everyone converged the feeds fall silent but for their heartbeats."""
    for tap in taps.values():
        tap.wait_beats(2)  # sent after convergence: what was in flight then is in
    settled = {name: len(tap.records) for name, tap in taps.items()}
    for tap in taps.values():
        tap.wait_beats(2)
    assert {name: len(tap.records) for name, tap in taps.items()} == settled, "records still published"
    for name, tap in taps.items():
        heights = tap.heights(LEDGER)
        repeated = [h for h, n in collections.Counter(heights).items() if n > 1]
        assert not repeated, f"{name} published heights {repeated[:10]} more than once"
        assert len(heights) <= size
        assert {r.hops for r in tap.records} <= {hops[name]}, name
        assert {r.sender for r in tap.records} <= {name}


def assert_same_chain_everywhere(cluster: LocalCluster, size: int) -> None:
    """Identical records on every node, counted on every node in Redis; then each replica's store verifies."""
    home = list(cluster.admin().records(LEDGER))
    assert len(home) == size
    for name in cluster.replica_names:
        assert list(cluster.admin(name).records(LEDGER)) == home, f"{name} holds other records"
    replication = ReplicationLedger(connect(cluster.cluster_redis_url))
    nodes = 1 + len(cluster.replica_names)
    wait_until(
        lambda: count_distribution(replication.held(LEDGER), size) == {nodes: size},
        10,
        f"every record counted on {nodes} nodes: {replication.held(LEDGER)}",
    )
    for name in cluster.replica_names:
        assert cluster.stop_node(name) == 0
    with ThreadPoolExecutor() as pool:  # `vledger verify`, from genesis, every check: no duplicate, no gap
        verified_all = pool.map(cluster.verify_store, cluster.replica_names)
        for name, verified in zip(cluster.replica_names, verified_all, strict=True):
            assert verified.returncode == 0, f"{name}: {verified.stdout}{verified.stderr}"


def test_a_ring_of_relays_carries_each_record_round_once(start_cluster: StartCluster) -> None:
    ring = {"replica-1": ["ingest-1", "replica-3"], "replica-2": ["replica-1"], "replica-3": ["replica-2"]}
    relays = ["replica-1", "replica-2", "replica-3"]
    # max_hops above the ring's length: only "never republish what you held" stops a loop.
    cluster = relay_cluster(start_cluster, ring, relays, max_hops=8)
    taps = live_taps(cluster, ["ingest-1", *relays])
    put(cluster, 0, 600)
    size = wait_converged(cluster)
    assert_no_loop(taps, size, {"ingest-1": 1, "replica-1": 2, "replica-2": 3, "replica-3": 4})
    # The ring is closed: replica-3 republished to replica-1, which already held them all.
    assert taps["replica-3"].heights(LEDGER), "replica-3 relayed nothing"
    assert_same_chain_everywhere(cluster, size)


def test_a_diamond_of_relays_stores_each_record_once(start_cluster: StartCluster) -> None:
    diamond = {"replica-1": ["ingest-1"], "replica-2": ["ingest-1"], "replica-3": ["replica-1", "replica-2"]}
    relays = ["replica-1", "replica-2"]
    cluster = relay_cluster(start_cluster, diamond, relays, max_hops=2)
    taps = live_taps(cluster, ["ingest-1", *relays])
    put(cluster, 0, 600)
    size = wait_converged(cluster)
    assert_no_loop(taps, size, {"ingest-1": 1, "replica-1": 2, "replica-2": 2})
    # Records reached replica-3 by both paths (a relay republishes what it took from the feed,
    # not what it fetched from the stream), and it holds each once.
    assert set(taps["replica-1"].heights(LEDGER)) & set(taps["replica-2"].heights(LEDGER))
    assert_same_chain_everywhere(cluster, size)


def test_with_one_hop_a_replica_behind_a_relay_catches_up_from_the_stream_and_the_relay(
    start_cluster: StartCluster,
) -> None:
    # max_hops = 1: replica-1 stores and serves but republishes nothing; replica-2 follows only
    # replica-1. A short stream (trimmed to about 100 records) makes replica-2, started late,
    # take the start of the chain from replica-1's range, the rest from the stream.
    flat = {"replica-2": ["replica-1"]}
    cluster = relay_cluster(start_cluster, flat, ["replica-1"], replicas=2, max_hops=1, stream_max_len=100)
    taps = live_taps(cluster, ["replica-1"])
    assert cluster.stop_node("replica-2") == 0
    put(cluster, 0, 800)
    replication = ReplicationLedger(connect(cluster.cluster_redis_url))
    head = cluster.admin().call("size", {"ledger": LEDGER})["size"] - 1
    # A put is answered once durable; the outbox streams after that: the last one first reaches the stream.
    wait_until(lambda: replication.last_height(LEDGER) == head, 30, f"the stream reached height {head}")
    trimmed = replication.read(LEDGER, 0, 1)
    assert trimmed and trimmed[0].height > 500, "the stream still holds the start of the chain"
    cluster.start_node("replica-2")
    size = wait_converged(cluster)
    put(cluster, size - 1, 200)  # live now: replica-2 hears of them only from heartbeats and Redis
    size = wait_converged(cluster)
    hello = cluster.admin("replica-2").hello()
    assert hello["current"] is True and hello["behind"] == {}
    assert_no_loop(taps, size, {"replica-1": 1})
    assert taps["replica-1"].records == [], "a relay republished with max_hops = 1"
    assert_same_chain_everywhere(cluster, size)


def test_a_subscriber_the_relay_refused_until_it_applied_the_account_then_hears_its_feed(
    start_cluster: StartCluster,
) -> None:
    # An admin's change is answered once the ingest nodes applied it; a relay applies it a moment
    # later. The diamond's tap once connected in that moment: refused, and libzmq never connects
    # again after a refused handshake, so it heard no heartbeat at all. Here the account comes
    # only after the relay refused the subscriber: it must subscribe again by itself.
    cluster = relay_cluster(start_cluster, {}, ["replica-1"], replicas=1, max_hops=2)
    late = new_keypair()
    cluster.keys["late"] = late  # an observer's key pair, whose account does not exist yet
    tap = cluster.tap("replica-1", "late")
    wait_until(lambda: tap.read(0.05) >= 0 and tap.subscriber.refusals > 0, 10, "the relay refused the tap")
    assert tap.beats == []
    cluster.add_account("late", "observer", late)
    tap.wait_beats(1)
