"""README's "Removing a replica or an observer", on real processes (outsider o13 F7).

Stopped, taken out of the cluster file, the nodes and the verifier restarted one at a time: no
alert is raised, ``vledger repl status`` no longer lists it (its held keys stay in Redis, where
no one writes them: they had kept its rows, their lag growing for good), and the cluster is
current without it. Then ``vledger repl forget`` deletes its keys (fix19a left them for good),
and refuses a member.
"""

from __future__ import annotations

import json
from typing import Any

from vledger.broker.accounts import AccountRegistry
from vledger.broker.redis_server import connect
from vledger.broker.replication import ReplicationLedger
from vledger.node.rules.admin import ADMIN_LEDGER
from vledger.tests.integration.cluster import ADMIN, LocalCluster, genesis, wait_until
from vledger.tests.integration.replication.test_alerts_closed import open_alerts
from vledger.tests.integration.replication.test_witnessed import LEDGER, WAIT, put, size, wait_cosigned

REMOVED = "replica-2"


def _without_node(text: str, name: str) -> str:
    """The cluster file's text without ``[nodes.<name>]`` (its lines up to the blank one after)."""
    lines, kept, skipping = text.splitlines(), [], False
    for line in lines:
        if line.strip() == f"[nodes.{name}]":
            skipping = True
        elif skipping and not line.strip():
            skipping = False
            continue
        if not skipping:
            kept.append(line)
    return "\n".join(kept) + "\n"


def _repl_status(cluster: LocalCluster) -> tuple[int, dict[str, Any]]:
    done = cluster.cli("repl", "status", "--config", str(cluster.config_path), "--json", check=False)
    return done.returncode, json.loads(done.stdout)


def test_a_replica_removed_as_readme_says_raises_nothing_and_is_no_longer_listed(start_cluster: Any) -> None:
    cluster: LocalCluster = start_cluster(nodes=1, replicas=2, verifiers=1)
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
    put(cluster, 10)
    wait_cosigned(cluster, cluster.replica_names, size(cluster))
    _, before = _repl_status(cluster)
    assert REMOVED in {n["node"] for item in before["ledgers"] for n in item["nodes"]}

    assert cluster.stop_node(REMOVED) == 0
    cluster.config_path.write_text(_without_node(cluster.config_path.read_text(), REMOVED))
    for name in ("ingest-1", "replica-1", "verifier-1"):  # one at a time: they read the members at start
        cluster.restart_node(name)
    put(cluster, 3, phase="after")
    wait_cosigned(cluster, ["replica-1"], size(cluster))

    def listed() -> set[str]:
        code, report = _repl_status(cluster)
        return {n["node"] for item in report["ledgers"] for n in item["nodes"]} if code == 0 else {"not current"}

    # main: "replica-2 unknown" rows stayed, with stale held heights.
    wait_until(lambda: REMOVED not in listed() and "not current" not in listed(), WAIT, "repl status without it")
    assert open_alerts(cluster) == []
    every = json.loads(cluster.cli("alerts", "--config", str(cluster.config_path), "--json").stdout)["alerts"]
    assert [a for a in every if REMOVED in (a["node"], a["source"], a.get("raised_by"))] == []

    client = connect(cluster.cluster_redis_url)
    repl, registry = ReplicationLedger(client), AccountRegistry(client)
    held = [repl.held_key(ledger, REMOVED) for ledger in (LEDGER, ADMIN_LEDGER)]
    its = [*held, repl.cosig_key(LEDGER, REMOVED), registry.applied_key(REMOVED)]
    assert all(client.exists(key) for key in its)  # what README's steps left behind
    refused = cluster.cli("repl", "forget", "replica-1", "--config", str(cluster.config_path), "--json", check=False)
    assert refused.returncode == 1 and json.loads(refused.stdout)["error"]["code"] == "forget_refused"
    done = cluster.cli("repl", "forget", REMOVED, "--config", str(cluster.config_path), "--json")
    assert set(its) <= set(json.loads(done.stdout)["deleted"])
    assert not any(client.exists(key) for key in its)
    assert client.exists(repl.held_key(LEDGER, "replica-1")) and client.exists(registry.applied_key("replica-1"))
    code, report = _repl_status(cluster)
    assert code == 0 and REMOVED not in {n["node"] for item in report["ledgers"] for n in item["nodes"]}
