"""The cluster across hosts (network namespaces, netns.py) through a slow lossy WAN, a partition
and the loss of the Redis primary's host, at load.

Each test runs the e2e writers (votes on ingest-1, notes on ingest-2, every receipt kept) through
its fault, then :func:`check_cluster`: every acknowledged record on every copy at its height and
hash, every copy the home's bytes, the streams and replication counts complete, both observers'
signed tallies agreeing with what was written, and ``vledger verify --cluster`` clean.
"""

from __future__ import annotations

import time

import pytest

from vledger.tests.e2e.helpers import Load, Timeline, Written, alerts_since, check_cluster
from vledger.tests.integration.cluster import now_ms, wait_until
from vledger.tests.multihost.hosts import INGEST, REPLICAS, HostsCluster, LagProbe

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("multihost")]

RATE = 20.0  # records a second per writer
DELAY_MS, JITTER_MS, LOSS_PERCENT = 200, 50, 5
PARTITION_S = 60.0  # the figure: twice the default lag_alert_ms (30 s)
FAILOVER_S = 30.0  # Sentinel: down after 1.5 s, then the vote and the promotion


def test_two_replicas_behind_a_slow_lossy_link_keep_up(cluster: HostsCluster, written: Written) -> None:
    timeline = Timeline()
    for replica in REPLICAS:
        cluster.network.degrade(replica, INGEST, delay_ms=DELAY_MS, jitter_ms=JITTER_MS, loss_percent=LOSS_PERCENT)
    how = "tc netem" if cluster.network.netem else "the userspace link (no netem in this kernel) and nftables"
    timeline(f"{DELAY_MS} ms +- {JITTER_MS} ms, {LOSS_PERCENT} % loss between the homes and {REPLICAS}, by {how}")
    probe = LagProbe(cluster, REPLICAS)
    try:
        load = Load(cluster, RATE).start()
        load.progress(20)  # the replicas' connections opened again through the slow links
        while min(w.acked for w in load.writers) < 200:
            probe.read(0.5)
        load.stop(written)
        timeline(f"load stopped ({load}); {load.summary()}")
        probe.read(2.0)
        p50, p99 = probe.percentile(50), probe.percentile(99)
        timeline(
            f"replication lag over the slow link: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
            f"({len(probe.lags)} reports)"
        )
        # The delay is really on the path (a replica reports after its record crossed it) and it keeps up.
        assert DELAY_MS / 1000 * 0.75 <= p50 < 5.0, f"p50 {p50:.3f} s across a {DELAY_MS} ms link"
        check_cluster(cluster, written, timeline)  # over the slow links still
    finally:
        probe.close()
        for replica in REPLICAS:
            cluster.network.heal(replica)


def test_a_replica_cut_off_for_a_minute_catches_up_with_one_lagging_alert(
    cluster: HostsCluster, written: Written
) -> None:
    timeline = Timeline()
    victim = REPLICAS[0]
    since = now_ms()
    load = Load(cluster, RATE).start()
    load.progress(20)
    cluster.network.cut_off(victim)
    cut = time.monotonic()
    timeline(f"{victim} cut off from every other host ({load})")
    try:
        replication = cluster.replication()
        try:
            raised = wait_until(
                lambda: [
                    k
                    for k, a in replication.open_alerts().items()
                    if a.get("what") == "lagging" and a.get("node") == victim
                ],
                PARTITION_S,
                f"a lagging alert for {victim} while it is cut off",
                interval=0.5,
            )
        finally:
            replication.client.close()
        timeline(f"lagging alert open {time.monotonic() - cut:.1f} s into the partition: {raised}")
        load.progress(20)  # the homes and the other copies go on meanwhile
        time.sleep(max(0.0, PARTITION_S - (time.monotonic() - cut)))  # the length of the fault, not a wait for a state
    finally:
        cluster.network.heal(victim)
    timeline(f"{victim} back on the network after {time.monotonic() - cut:.1f} s ({load})")
    load.progress(20)
    load.stop(written)
    check_cluster(cluster, written, timeline)  # the catch-up, and the lagging alert resolved
    alerts = alerts_since(cluster, since)
    timeline(f"{len(alerts)} alerts raised in the test: " + "; ".join(alerts))
    false = [a for a in alerts if not a.startswith(f"lagging node {victim} ")]
    assert not false, f"alerts other than {victim} lagging: {false}"
    assert len(alerts) <= 2 * len(written.acks), f"an alert storm: {alerts}"  # one per ledger, at most a repeat


def test_the_redis_primary_host_cut_off_sentinel_promotes_and_writes_go_on(
    cluster: HostsCluster, written: Written
) -> None:
    timeline = Timeline()
    old = cluster.primary()
    assert old == "redis-1", f"the Sentinels name {old!r} as the primary before the fault"
    load = Load(cluster, RATE).start()
    load.progress(20)
    cluster.network.cut_off(old)
    cut = time.monotonic()
    timeline(f"{old} (the Redis primary and a Sentinel) cut off ({load})")
    try:
        new = wait_until(lambda: (p := cluster.primary()) not in ("", old) and p, FAILOVER_S, "a promoted primary")
        timeline(f"Sentinel promoted {new} {time.monotonic() - cut:.1f} s after the cut")
        wait_until(cluster.redis_answers, FAILOVER_S, f"a write to {new} through the Sentinels", interval=0.2)
        load.progress(40)  # writes go on; check_cluster proves they reached the new primary's streams
        timeline(f"writes acknowledged after the promotion ({load})")
    finally:
        cluster.network.heal(old)
    timeline(f"{old} back on the network; the Sentinels make it a replica of {new}")
    load.progress(20)
    load.stop(written)
    check_cluster(cluster, written, timeline)
