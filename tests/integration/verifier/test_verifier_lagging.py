"""A copy the verifier never heard from is lagging as what is known of it (outsider o11).

A replica down when the verifier starts has never answered it: its `lagging` read "it has not
answered, and lacks height 0, which ingest-1 has held for 31 s", a height made up for it. Real
nodes, a real verifier and Redis."""

from __future__ import annotations

import json
import signal
import time
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


def test_a_home_that_answers_nobody_is_home_unreachable_while_redis_has_not_missed_it(cluster: LocalCluster) -> None:
    """Outsider o24 F3: a home cut off from its clients (its Redis heartbeats going on) or killed
    left `repl status` and `verify --cluster` at exit 0 for 60+ s, no verifier alert saying the
    home was down. Frozen (SIGSTOP) for less than Redis's heartbeat window (30 s), the home
    answers no read: the verifier raises home_unreachable within lag_alert_ms and a few node
    timeouts, `verify --cluster` exits 1 and `repl status` 3 naming it down; thawed, it closes."""
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
    cluster.client("writer1").put_many([entry(LEDGER, "vote", {"n": i}, "writer1") for i in range(5)])
    config = str(cluster.config_path)
    wait_until(lambda: cluster.cli("repl", "status", "--config", config, check=False).returncode == 0, 30, "current")
    replication = ReplicationLedger(connect(cluster.cluster_redis_url))
    key = f"ingest-1|{LEDGER}|home_unreachable"
    frozen = time.monotonic()
    cluster.signal_node("ingest-1", signal.SIGSTOP)
    try:
        alert = wait_until(lambda: replication.open_alerts().get(key), 20, "ingest-1's home_unreachable alert")
        assert time.monotonic() - frozen < 20  # far inside the 30 s Redis would take to miss its heartbeat
        assert "has answered none of this verifier's reads" in alert["detail"], alert
        assert cluster.cli("verify", "--cluster", config, check=False).returncode == 1
        shown = cluster.cli("repl", "status", "--config", config, "--json", check=False)
        (votes,) = [s for s in json.loads(shown.stdout)["ledgers"] if s["ledger"] == LEDGER]
        assert shown.returncode == 3 and [n["down"] for n in votes["nodes"] if n["node"] == "ingest-1"] == [True]
    finally:
        cluster.signal_node("ingest-1", signal.SIGCONT)
    wait_until(lambda: key not in replication.open_alerts(), 30, "the alert closed once the home answers")
