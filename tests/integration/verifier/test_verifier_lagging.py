"""A copy the verifier never heard from is lagging as what is known of it (outsider o11).

A replica down when the verifier starts has never answered it: its `lagging` read "it has not
answered, and lacks height 0, which ingest-1 has held for 31 s", a height made up for it. Real
nodes, a real verifier and Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vledger.broker.redis_server import RedisServer, connect
from vledger.broker.replication import ReplicationLedger
from vledger.tests.integration.cluster import ADMIN, LocalCluster, entry, genesis, wait_until

LEDGER = "votes"
LAG_MS = 1_000


@pytest.fixture
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    settings = {"lag_alert_ms": LAG_MS, "sweep_interval_ms": 200}
    with LocalCluster(redis_server.url, nodes=1, replicas=1, verifiers=1, verifier=settings) as running:
        yield running


def test_a_copy_that_never_answered_the_verifier_is_lagging_without_a_height_made_up(cluster: LocalCluster) -> None:
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
    cluster.client("writer1").put_many([entry(LEDGER, "vote", {"n": i}, "writer1") for i in range(5)])
    assert cluster.stop_node("verifier-1") == 0
    assert cluster.stop_node("replica-1") == 0
    cluster.start_node("verifier-1")  # replica-1 never answers this run
    replication = ReplicationLedger(connect(cluster.cluster_redis_url))
    key = f"replica-1|{LEDGER}|lagging"
    alert = wait_until(lambda: replication.open_alerts().get(key), 30, "replica-1's lagging alert")
    assert (alert["height"], alert["found"], alert["expected"]) == ("0", "", "5"), alert
    assert alert["detail"].startswith(
        "it does not answer, and has not said it holds any record of it since this verifier started: what it "
        "holds is unknown; ingest-1 has held height 5 for "
    ), alert["detail"]
