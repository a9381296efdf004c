"""Redis loses its data while the cluster runs (outsider26 I5: a restart without its append-only
file, a failover to an empty replica, a FLUSHALL): no account is refused for it. Running nodes
keep the accounts they proved, the admin ledger's home refills its cache and the accounts at
once and raises ``redis_lost``, the homes refill their streams, and a node restarted meanwhile
enforces the copy it kept of what it proved (docs/PROTOCOL.md 16.4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from vledger.broker import redis_functions
from vledger.broker.accounts import AccountRegistry
from vledger.broker.redis_server import connect
from vledger.broker.replication import ReplicationLedger
from vledger.node.errors import NodeUnavailableError
from vledger.node.rules.admin import ADMIN_LEDGER
from vledger.tests.integration.cluster import ADMIN, STRANGER, LocalCluster, entry, genesis, wait_until

StartCluster = Callable[..., LocalCluster]
LEDGER = "votes"
REFILL_S = 20.0  # a few polls of the accounts cache (500 ms here) and outbox heartbeats, on a loaded host
NODES = ("ingest-1", "ingest-2", "replica-1")


def _cluster(start_cluster: StartCluster) -> tuple[LocalCluster, Any]:
    cluster = start_cluster(homes={"remote": "ingest-2"}, replicas=1, broker={"accounts_poll_ms": 500})
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
    cluster.client("writer1").put_many([entry(LEDGER, "vote", {"choice": "a"}, "writer1")])
    redis = connect(cluster.cluster_redis_url)
    holders = ("ingest-1", "replica-1")
    wait_until(lambda: cluster.sizes(LEDGER, holders) == dict.fromkeys(holders, 2), REFILL_S, "the votes to replicate")
    return cluster, redis


def _whoami(cluster: LocalCluster, key_name: str, node: str) -> str:
    answer = cluster.client(key_name, node, timeout=5.0, follow=False).call("whoami")
    return str(answer["account"])


def _status(cluster: LocalCluster) -> str:
    key = cluster.directory / "keys" / f"{ADMIN}.key_secret"
    return cluster.cli("status", "--config", str(cluster.config_path), "--key", str(key), check=False).stdout


def test_redis_losing_its_data_refuses_no_account_and_the_admin_home_refills_it(
    start_cluster: StartCluster,
) -> None:
    cluster, redis = _cluster(start_cluster)
    registry, replication = AccountRegistry(redis), ReplicationLedger(redis)
    held = registry.admin_size()
    assert held == cluster.own_size("ingest-1", ADMIN_LEDGER) > 0
    redis.flushdb()
    for node in NODES:  # no moment without accounts: the nodes kept those they proved
        assert _whoami(cluster, ADMIN, node) == ADMIN
        assert _whoami(cluster, "writer1", node) == "writer1"

    def refilled() -> bool:
        names = {a.name for a in registry.list_accounts()}
        return registry.admin_size() == held and {ADMIN, "writer1", "writer2", "observer"} <= names

    # On main the cache stayed empty until someone restarted ingest-1 (its start-up sync).
    wait_until(refilled, REFILL_S, "the admin home to refill the admin ledger's cache and the accounts")
    key = f"redis|{ADMIN_LEDGER}|redis_lost"
    alert = wait_until(lambda: replication.open_alerts().get(key), REFILL_S, "the redis_lost alert")
    assert alert["raised_by"] == "ingest-1" and f"{held} of the admin ledger's {held} records" in alert["detail"]
    wait_until(lambda: replication.last_heights([LEDGER]).get(LEDGER) == 1, REFILL_S, "the home to refill the stream")
    # Resolved by the home once its outbox put the checkpoint back (every node proves the copy
    # again): one loss, one alert, not one left open for good (redis28).
    wait_until(lambda: key not in replication.open_alerts(), REFILL_S, "the home to resolve redis_lost")
    assert [a["detail"] for a in replication.alerts() if a["what"] == "redis_lost"] == [alert["detail"]]
    assert replication.open_alerts() == {}, replication.open_alerts()
    # The outsider's `vledger status` said "0 of 8 nodes up" (every key refused) and named no cause.
    shown = _status(cluster)
    assert "3 of 3 nodes up" in shown and "Redis holds no account" not in shown, shown
    # And the ledger goes on: an account made after the loss is proven and enforced everywhere.
    cluster.add_account("latecomer", "writer")
    for node in NODES:
        assert _whoami(cluster, "latecomer", node) == "latecomer"
    redis.close()


def test_a_node_restarted_while_redis_lost_its_data_and_the_admin_home_is_down_keeps_its_accounts(
    start_cluster: StartCluster,
) -> None:
    cluster, redis = _cluster(start_cluster)
    cluster.stop_node("ingest-1")  # the admin ledger's home: nobody refills Redis meanwhile
    redis.flushdb()
    # On main they started with no account at all: nobody's hello was answered (wait_ready).
    cluster.restart_node("replica-1")
    cluster.restart_node("ingest-2")
    for node in ("ingest-2", "replica-1"):
        assert _whoami(cluster, ADMIN, node) == ADMIN
        assert _whoami(cluster, "writer1", node) == "writer1"
    with pytest.raises(NodeUnavailableError):  # what was kept lets in its accounts, not anyone
        cluster.client(STRANGER, "replica-1", timeout=1.0, follow=False).call("whoami")
    shown = _status(cluster)
    assert "2 of 3 nodes up" in shown and "Redis holds no account" in shown, shown
    cluster.start_node("ingest-1")
    wait_until(lambda: AccountRegistry(redis).admin_size() > 0, REFILL_S, "the admin home to refill Redis")
    redis.close()


def test_a_node_goes_on_once_the_functions_library_redis_lost_is_loaded_again(start_cluster: StartCluster) -> None:
    """Redis lost the functions library (FUNCTION FLUSH; a server restarted without its data): the
    nodes, whose users may not load it, say so in their logs and go on as with Redis refusing
    (a put with w=0 is stored and answered, a running node does not exit). Nodes started
    meanwhile start and serve as well, on the accounts they prove without it (they exited at their
    first call: fix31). Once the loader loads it, the home's stream and the replica's held height
    catch up."""
    cluster, redis = _cluster(start_cluster)
    redis.function_flush()
    assert not redis_functions.libraries(redis)
    cluster.client("writer1").put_many([entry(LEDGER, "vote", {"choice": "b"}, "writer1")])
    assert cluster.own_size("ingest-1", LEDGER) == 3  # answered: in the home's store
    missing = f"Redis lacks the functions library {redis_functions.LIBRARY_NAME}"
    wait_until(lambda: missing in cluster.log_text("ingest-1"), REFILL_S, "the home to log the missing library")
    # Started meanwhile, the home of the ledger and of the admin ledger, and a replica: each
    # answers hello (start_node waits for it) and the home takes a put, with no library.
    for node in ("ingest-1", "replica-1"):
        cluster.restart_node(node)
        assert missing in cluster.log_text(node).rpartition("--- start ")[2]
    assert _whoami(cluster, "writer1", "replica-1") == "writer1"
    cluster.client("writer1").put_many([entry(LEDGER, "vote", {"choice": "c"}, "writer1")])
    assert cluster.own_size("ingest-1", LEDGER) == 4
    assert not redis_functions.libraries(redis)  # no node loaded it: their users may not
    redis_functions.load(redis)  # as the loader does
    replication = ReplicationLedger(redis)
    wait_until(lambda: replication.last_heights([LEDGER]).get(LEDGER) == 3, REFILL_S, "the home to fill its stream")
    wait_until(lambda: replication.held(LEDGER).get("replica-1") == 3, REFILL_S, "the replica's held height")
    assert all(cluster.procs[node].running() for node in NODES)  # none exited on it
