"""Accounts come from the admin ledger, not from Redis (docs/PROTOCOL.md 16.4).

Whoever holds a Redis password that writes ``vledger:{accounts}:*`` (the ``vledger-admin``
user's; an ingest host's) can write an account there with plain HSET/SADD, and announce it as
the Lua scripts would. No record of the admin ledger adds it: every node must refuse its key
exactly as it refuses a stranger's (the CURVE handshake fails, nothing is answered), while the
accounts the ledger shows keep working. The same holds for a forged key bound to a real admin.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from vledger.broker.accounts import AccountRegistry
from vledger.broker.keys import KeyPair, fingerprint, new_keypair
from vledger.broker.redis_keys import group_key, ledger_key
from vledger.broker.redis_server import connect
from vledger.broker.replication import ReplicationLedger
from vledger.node.rules.admin import ADMIN_LEDGER
from vledger.tests.integration.cluster import ADMIN, LocalCluster, entry, genesis

from .conftest import REMOTE_LEDGERS

NO_REPLY_S = 0.5
APPLY_WAIT_S = 20.0


def _forge(client: Any, account: str, key: str, *, new_account: bool = True) -> int:
    """Write ``account`` as an enabled admin holding ``key`` the way a holder of the Redis password
    would: the raw keys, then the version bump and announcement the scripts make; the version."""
    accounts = "accounts"
    if new_account:
        client.sadd(group_key("vledger", accounts, "names"), account)
        client.hset(group_key("vledger", accounts, f"account:{account}"), mapping={"role": "admin", "enabled": "1"})
    client.hset(group_key("vledger", accounts, "keys"), key, account)
    version = int(client.incr(group_key("vledger", accounts, "version")))
    client.publish("vledger:accounts", str(version))
    return version


def _unforge(client: Any, account: str, key: str, *, new_account: bool = True) -> int:
    """Take the forged entries out again (the same raw way); the version."""
    accounts = "accounts"
    if new_account:
        client.srem(group_key("vledger", accounts, "names"), account)
        client.delete(group_key("vledger", accounts, f"account:{account}"))
    client.hdel(group_key("vledger", accounts, "keys"), key)
    version = int(client.incr(group_key("vledger", accounts, "version")))
    client.publish("vledger:accounts", str(version))
    return version


def _open_unbacked(replication: ReplicationLedger, nodes: list[str]) -> dict[str, str]:
    """Each node's open unbacked_account alert's detail (PROTOCOL 10.5), by node."""
    found = replication.open_alerts()
    return {
        node: found[f"{node}||unbacked_account"]["detail"] for node in nodes if f"{node}||unbacked_account" in found
    }


def _all_or_none(found: dict[str, str], nodes: list[str]) -> dict[str, str] | None:
    return found if len(found) == len(nodes) else None


def _until(condition: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while (value := condition()) is None or value is False:
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.1)
    return value


def _refused(cluster: LocalCluster, key_name: str, node: str) -> bool:
    """Whether ``key_name`` gets no answer from ``node`` and its handshake fails (shared/NOTES.md)."""
    wire = cluster.wire(key_name, node, monitor=True)
    wire.request("hello")
    return wire.handshake() == zmq.EVENT_HANDSHAKE_FAILED_AUTH and wire.recv(NO_REPLY_S) is None


@pytest.fixture
def redis_as_attacker(cluster: LocalCluster) -> Iterator[Any]:
    """A client that writes every key, once the admin ledger's home signed a checkpoint of it: until
    then (a heartbeat of its outbox after the first admin command made the ledger) no node but
    the home knows an admin ledger exists, and the bootstrap's accounts are Redis's (16.4)."""
    client = connect(cluster.cluster_redis_url)
    _until(lambda: client.exists(ledger_key("vledger", ADMIN_LEDGER, "checkpoint")) == 1, 20, "an admin checkpoint")
    yield client
    client.close()


def test_an_admin_account_written_into_redis_grants_nothing(cluster: LocalCluster, redis_as_attacker: Any) -> None:
    mallory: KeyPair = new_keypair()
    cluster.keys["mallory"] = mallory
    registry = AccountRegistry(redis_as_attacker)
    version = _forge(redis_as_attacker, "mallory", mallory.public)
    # Every node loaded the version that holds the forged account (so the refusal below is not
    # a node that has not read it yet).
    registry.wait_applied(version, cluster.node_names, APPLY_WAIT_S)
    for node in cluster.node_names:
        assert _refused(cluster, "mallory", node), f"the forged admin got in on {node}"
    # Each node says so once, in an alert of its own naming the account and the key's fingerprint.
    replication = ReplicationLedger(redis_as_attacker, raisers=cluster.node_names)
    nodes = list(cluster.node_names)
    details = _until(lambda: _all_or_none(_open_unbacked(replication, nodes), nodes), 20, "every node's alert")
    assert all(f"mallory ({fingerprint(mallory.public)})" in detail for detail in details.values()), details
    # Taken out of Redis again: the alerts are resolved.
    registry.wait_applied(_unforge(redis_as_attacker, "mallory", mallory.public), cluster.node_names, APPLY_WAIT_S)
    _until(lambda: _open_unbacked(replication, nodes) == {}, 20, "the alerts resolved")
    # Accounts the admin ledger shows are untouched: the writer still writes on both homes.
    for ledger in ("forged-check", REMOTE_LEDGERS[1]):  # homed on ingest-1, then on ingest-2
        cluster.admin().create_ledger(genesis(ledger, ADMIN, ["note"]))
        assert cluster.client("writer1").put(entry(ledger, "note", {"n": 1}, "writer1"))["height"] == 1


def test_a_key_written_into_redis_for_a_real_admin_grants_nothing(
    cluster: LocalCluster, redis_as_attacker: Any
) -> None:
    stolen: KeyPair = new_keypair()
    cluster.keys["second-admin-key"] = stolen
    version = _forge(redis_as_attacker, ADMIN, stolen.public, new_account=False)
    AccountRegistry(redis_as_attacker).wait_applied(version, cluster.node_names, APPLY_WAIT_S)
    for node in cluster.node_names:
        assert _refused(cluster, "second-admin-key", node), f"the forged key got in on {node}"
    _unforge(redis_as_attacker, ADMIN, stolen.public, new_account=False)
    # The admin's own key (on the ledger) still runs admin commands.
    assert "accounts" in cluster.admin().call("account.list")


def test_an_account_the_admin_adds_raises_no_unbacked_account_while_its_checkpoint_comes(
    cluster: LocalCluster, redis_as_attacker: Any
) -> None:
    # Redis's account entries hold an added account a second or so before the home's checkpoint
    # proves its record on the other nodes: each of them raised unbacked_account for every
    # honest `user add` (four cluster tests that expect no alert failed on it).
    replication = ReplicationLedger(redis_as_attacker, raisers=cluster.node_names)
    before = {entry["id"] for entry in replication.alerts(1000)}
    for n in range(3):  # each returns once every node applied it: proved its record, after the window
        cluster.add_account(f"honest{n}", "writer")
        assert cluster.client(f"honest{n}", "ingest-2").hello()["account"] == f"honest{n}"
    raised = [a for a in replication.alerts(1000) if a["id"] not in before and a["what"] == "unbacked_account"]
    assert raised == []


def _ready(cluster: LocalCluster, node: str) -> dict[str, Any]:
    with urllib.request.urlopen(cluster.health_url(node) + "readyz", timeout=5) as answer:
        return dict(json.loads(answer.read()))


def test_a_malformed_entry_in_redis_is_skipped_and_revocations_still_apply(
    cluster: LocalCluster, redis_as_attacker: Any
) -> None:
    # outsider o8 J6: a key that is none, bound to an account of its own, ended every node's accounts
    # thread (BadPublicKeyError while it named the entry), so a key revoked later stayed good on
    # every node, /readyz ok, no alert.
    victim = cluster.add_account("revoked-later", "writer")
    client = redis_as_attacker
    client.sadd(group_key("vledger", "accounts", "names"), "zz")
    client.hset(group_key("vledger", "accounts", "account:zz"), mapping={"role": "admin", "enabled": "1"})
    client.hset(group_key("vledger", "accounts", "keys"), "notakey", "zz")
    version = int(client.incr(group_key("vledger", "accounts", "version")))
    client.publish("vledger:accounts", str(version))
    AccountRegistry(client).wait_applied(version, cluster.node_names, APPLY_WAIT_S)
    # Each node names the entry in its alert, and stays ready: its thread lives on.
    replication = ReplicationLedger(client, raisers=cluster.node_names)
    nodes = list(cluster.node_names)
    details = _until(lambda: _all_or_none(_open_unbacked(replication, nodes), nodes), 20, "every node's alert")
    assert all("'zz' (not a public key: 'notakey'): malformed, ignored" in d for d in details.values()), details
    # A revocation made after it is applied by every node, which then refuses the key.
    result = cluster.admin().call("key.revoke", {"key": victim.public})
    assert result["pending"] == [], result
    for node in cluster.node_names:
        assert _refused(cluster, "revoked-later", node), f"the revoked key still got in on {node}"
        if cluster.procs[node].http_port:  # its accounts thread runs, and says so
            assert "accounts" in (ready := _ready(cluster, node))["checks"] and ready["ok"], (node, ready)
    # Taken out of Redis again: the alerts are resolved.
    client.hdel(group_key("vledger", "accounts", "keys"), "notakey")
    client.srem(group_key("vledger", "accounts", "names"), "zz")
    client.delete(group_key("vledger", "accounts", "account:zz"))
    version = int(client.incr(group_key("vledger", "accounts", "version")))
    client.publish("vledger:accounts", str(version))
    _until(lambda: _open_unbacked(replication, nodes) == {}, 20, "the alerts resolved")
