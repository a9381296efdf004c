"""Alerts whose cause is gone close by themselves, on real processes (outsider o13 F6).

After a home put back from an old store forked its ledger into Redis's stream, and was repaired,
24 alerts stayed open minutes later: the verifier's ``record_conflict`` against each honest copy
("this node's record differs from the stream's"), the stream's ``bad_link``, and a replica's own
refusal from the run before its restart. Each kind PROTOCOL 10.5 gives a node to resolve must
close within its bound once the cause is gone: here, ``vledger alerts --json`` ends up empty.
"""

from __future__ import annotations

import json
from typing import Any

from vledger.tests.integration.cluster import ADMIN, LocalCluster, genesis, wait_until
from vledger.tests.integration.replication.test_repair import repair
from vledger.tests.integration.replication.test_witnessed import (
    LEDGER,
    WAIT,
    _rewrite_tail,
    put,
    repl,
    size,
    wait_cosigned,
)

HOME = "ingest-1"


def open_alerts(cluster: LocalCluster) -> list[str]:
    """The open alerts ``vledger alerts --json`` lists, as ``raiser: node|ledger|what``."""
    done = cluster.cli("alerts", "--config", str(cluster.config_path), "--json")
    listed = json.loads(done.stdout)["alerts"]
    return sorted(f"{a['raised_by']}: {a['node']}|{a['ledger']}|{a['what']}" for a in listed if a["open"])


def _cluster(start_cluster: Any) -> LocalCluster:
    cluster: LocalCluster = start_cluster(nodes=1, replicas=2, verifiers=1)
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
    put(cluster, 20)
    wait_cosigned(cluster, cluster.replica_names, size(cluster))
    return cluster


def test_the_alerts_of_a_forked_stream_close_once_the_home_rewrote_it(start_cluster: Any) -> None:
    cluster = _cluster(start_cluster)
    total = size(cluster)
    assert cluster.stop_node(HOME) == 0
    # What a home started on an old store left in Redis (o13 F1): the stream's tail is other records.
    ledger = repl(cluster)
    fork = total - 5
    ledger.rewind(LEDGER, fork)
    ledger.append_checked(LEDGER, HOME, fork, [b"fork record 1", b"fork record 2"], latest=False)
    conflicts = {f"verifier-1: {replica}|{LEDGER}|record_conflict" for replica in cluster.replica_names}
    wait_until(lambda: conflicts <= set(open_alerts(cluster)), WAIT, "the copies' conflicts with the stream")

    cluster.start_node(HOME)  # it rewrites the stream from its store (10.2)
    put(cluster, 3, phase="after")
    wait_cosigned(cluster, cluster.replica_names, size(cluster))
    # main: the verifier's record_conflict on both honest copies stayed open (only an operator's).
    wait_until(lambda: open_alerts(cluster) == [], WAIT, "every alert closed")


def test_every_alert_closes_after_a_replica_is_repaired(start_cluster: Any) -> None:
    cluster = _cluster(start_cluster)
    assert cluster.stop_node("replica-2") == 0
    _rewrite_tail(cluster, "replica-2", 10, forget_checkpoints=True)
    cluster.start_node("replica-2")
    key = f"replica-2: replica-2|{LEDGER}|store_contradicts_checkpoint"
    wait_until(lambda: key in open_alerts(cluster), WAIT, "replica-2 naming itself")

    assert cluster.stop_node("replica-2") == 0
    done = repair(cluster, "replica-2")
    assert done.returncode == 0, done.stderr
    cluster.start_node("replica-2")
    put(cluster, 3, phase="after")
    wait_cosigned(cluster, cluster.replica_names, size(cluster))
    wait_until(lambda: open_alerts(cluster) == [], WAIT, "every alert closed")
