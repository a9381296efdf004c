"""A Redis insider against the admin ledger's copy, on a running cluster (reviewer r13 #1, #3).

The attacker holds a Redis password that writes every key and uses plain Redis commands only;
the nodes are real processes (tests/integration/ingest/test_admin_insider.py drives the same
parts in one process, each interleaving scripted).
"""

from __future__ import annotations

import threading
from typing import Any

from vledger.broker.client import Client
from vledger.broker.keys import load_secret, new_keypair
from vledger.broker.redis_keys import group_key, ledger_key
from vledger.broker.replication import ReplicationLedger
from vledger.ingest.admin_ledger import ADMIN_CACHE_CONFLICT
from vledger.node.errors import NodeUnavailableError
from vledger.node.rules.admin import ADMIN_LEDGER
from vledger.tests.integration.cluster import LocalCluster, wait_until

from .test_forged_accounts import _forge, _refused, redis_as_attacker  # noqa: F401

NOTE = ledger_key("vledger", ADMIN_LEDGER, "checkpoint")
RECORDS = group_key("vledger", "accounts", "admin:records")
DEADLINE = 30.0


def _answers(cluster: LocalCluster, key_name: str, node: str) -> bool:
    with Client(cluster.address(node), cluster.keys[key_name], timeout=0.25) as client:
        try:
            return bool(client.hello()["account"] == key_name)
        except NodeUnavailableError:
            return False


def _answers_a_member(cluster: LocalCluster, node: str) -> bool:
    """Whether ``node`` answers ingest-1's key (a node of the cluster: no account needed)."""
    key = load_secret(cluster.directory / "keys" / "ingest-1.key_secret")
    with Client(cluster.address(node), key, timeout=0.25) as client:
        try:
            return bool(client.hello()["node"] == node)
        except NodeUnavailableError:
            return False


def test_a_node_restarted_while_the_admin_checkpoint_is_deleted_in_a_loop_lets_no_forged_admin_in(
    cluster: LocalCluster,
    redis_as_attacker: Any,  # noqa: F811
) -> None:
    """r13 #1: having proven nothing yet, it took Redis's accounts as they are, mallory's too."""
    mallory = new_keypair()
    cluster.keys["mallory"] = mallory
    _forge(redis_as_attacker, "mallory", mallory.public)
    assert _refused(cluster, "mallory", "ingest-2")
    assert cluster.stop_node("ingest-2") == 0
    stop = threading.Event()

    def delete_loop() -> None:
        while not stop.is_set():
            redis_as_attacker.delete(NOTE)
            stop.wait(0.005)

    thread = threading.Thread(target=delete_loop, daemon=True)
    thread.start()
    try:
        cluster._launch("ingest-2")  # not start_node: it waits for the admin's hello
        wait_until(lambda: _answers_a_member(cluster, "ingest-2"), DEADLINE, "ingest-2 to answer a node")
        assert _refused(cluster, "mallory", "ingest-2"), "a forged admin got in on a restarted node"
    finally:
        stop.set()
        thread.join()
    # The home sets its checkpoint again: the node proves the ledger, the admin is let in again.
    cluster.wait_ready("ingest-2", DEADLINE)
    assert _refused(cluster, "mallory", "ingest-2")


def test_a_junk_entry_pushed_onto_the_admin_list_freezes_no_node(
    cluster: LocalCluster,
    redis_as_attacker: Any,  # noqa: F811
) -> None:
    """r13 #3: the home skipped its own next record (the list looked one longer), every later
    one was one index off, no checkpoint proved the list again: ingest-2 let a revoked key in
    for good, and admin commands answered ``pending: []`` once it stopped saying it was alive."""
    victim = cluster.add_account("victim", "writer")
    redis_as_attacker.rpush(RECORDS, b"junk")
    answer = cluster.admin().call("key.revoke", {"key": victim.public})
    assert answer["pending"] == []
    assert _refused(cluster, "victim", "ingest-2")
    replication = ReplicationLedger(redis_as_attacker, raisers=cluster.node_names)
    raised = replication.open_alerts()
    assert f"redis|{ADMIN_LEDGER}|{ADMIN_CACHE_CONFLICT}" in raised, raised


def test_a_junk_entry_pushed_while_the_admin_home_is_down_does_not_stop_it(
    cluster: LocalCluster,
    redis_as_attacker: Any,  # noqa: F811
) -> None:
    """r13 #3: the list longer than its store made the home's start raise store_damaged and exit
    65, naming a repair that rebuilds the store, not the list."""
    assert cluster.stop_node("ingest-1") == 0
    redis_as_attacker.rpush(RECORDS, b"junk")
    cluster.start_node("ingest-1", timeout=DEADLINE)
    assert b"junk" not in redis_as_attacker.lrange(RECORDS, 0, -1)
    # The other nodes follow the home again (its first checkpoint after a start may take a while).
    pair = new_keypair()
    cluster.keys["writer-after"] = pair
    cluster.admin().call("account.add", {"account": "writer-after", "role": "writer"})
    cluster.admin().call("key.add", {"account": "writer-after", "key": pair.public})
    wait_until(lambda: _answers(cluster, "writer-after", "ingest-2"), DEADLINE, "the new writer let in on ingest-2")
