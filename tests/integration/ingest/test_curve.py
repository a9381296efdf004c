"""Who gets in: CURVE allow-lists and account states, on both ingest nodes of a real cluster.

Refusal is proved twice (shared/NOTES.md): no reply within a poll timeout, and the client's
socket monitor reporting EVENT_HANDSHAKE_FAILED_AUTH. A key that loses its account while
connected is refused from its next request, on every node, by the time the admin's
command is answered.
"""

from __future__ import annotations

from typing import Any

import pytest
import zmq

from vledger.broker.keys import KeyPair, new_keypair
from vledger.tests.integration.cluster import ADMIN, STRANGER, LocalCluster, Wire, entry, put_args

NO_REPLY_S = 0.5


def assert_refused_at_handshake(cluster: LocalCluster, key_name: str, node: str) -> None:
    wire = cluster.wire(key_name, node, monitor=True)
    # A DEALER queues to a pipe; on a loaded host the handshake may already have failed and taken
    # the pipe away, so nothing takes the request (itself a refusal): the monitor's event decides.
    if wire.socket.poll(int(NO_REPLY_S * 1000), zmq.POLLOUT):
        wire.request("hello")
    assert wire.handshake() == zmq.EVENT_HANDSHAKE_FAILED_AUTH, f"{key_name} on {node}"
    assert wire.recv(NO_REPLY_S) is None, f"{key_name} got an answer from {node}"


def connected(cluster: LocalCluster, key_name: str) -> dict[str, Wire]:
    """A connection of ``key_name`` to every node, each proved working with a hello."""
    wires = {}
    for node in cluster.node_names:
        wire = cluster.wire(key_name, node, monitor=True)
        reply = wire.call("hello")
        assert reply["ok"] is True, reply
        assert wire.handshake() == zmq.EVENT_HANDSHAKE_SUCCEEDED
        wires[node] = wire
    return wires


def error_of(reply: dict[str, Any]) -> dict[str, Any]:
    assert reply["ok"] is False, reply
    error = reply["error"]
    assert isinstance(error, dict)
    return error


def admin_does(cluster: LocalCluster, cmd: str, **args: str) -> None:
    result = cluster.admin().call(cmd, args)
    assert result["pending"] == [], f"{cmd}: not applied on {result['pending']}"


@pytest.mark.parametrize("node", ["ingest-1", "ingest-2"])
def test_an_unlisted_key_gets_no_answer_and_fails_the_handshake(cluster: LocalCluster, node: str) -> None:
    assert_refused_at_handshake(cluster, STRANGER, node)
    # The node itself is fine: a listed key is answered at once.
    assert cluster.client("writer1", node).hello()["node"] == node


@pytest.mark.parametrize("node", ["ingest-1", "ingest-2"])
def test_a_listed_key_completes_the_handshake_and_is_told_who_it_is(cluster: LocalCluster, node: str) -> None:
    wire = cluster.wire("observer", node, monitor=True)
    reply = wire.call("hello")
    assert wire.handshake() == zmq.EVENT_HANDSHAKE_SUCCEEDED
    assert reply["ok"] is True
    hello = reply["result"]
    assert (hello["node"], hello["account"], hello["role"], hello["protocol"]) == (node, "observer", "observer", 1)
    whoami = wire.call("whoami")["result"]
    assert whoami == {"account": "observer", "role": "observer", "key": cluster.keys["observer"].public}


def test_a_revoked_key_is_refused_from_its_next_request_on_both_nodes(cluster: LocalCluster) -> None:
    pair = cluster.add_account("revoked-user", "writer")
    wires = connected(cluster, "revoked-user")
    admin_does(cluster, "key.revoke", key=pair.public)
    # On the connections still open: forbidden, and nothing written.
    ledger_entry = entry("revoked-ledger", "note", {}, "revoked-user")
    for node, wire in wires.items():
        assert error_of(wire.call("hello"))["code"] == "forbidden", node
        assert error_of(wire.call("put", put_args(ledger_entry)))["code"] == "forbidden", node
    # New connections: the handshake fails.
    for node in cluster.node_names:
        assert_refused_at_handshake(cluster, "revoked-user", node)
    # The account itself is still there, without that key.
    accounts = {a["account"]: a for a in cluster.admin().call("account.list")["accounts"]}
    assert accounts["revoked-user"]["keys"] == []


def test_a_disabled_account_is_refused_on_both_nodes_until_enabled_again(cluster: LocalCluster) -> None:
    cluster.add_account("paused-user", "writer")
    wires = connected(cluster, "paused-user")
    admin_does(cluster, "account.disable", account="paused-user")
    for node, wire in wires.items():
        assert error_of(wire.call("whoami"))["code"] == "forbidden", node
    for node in cluster.node_names:
        assert_refused_at_handshake(cluster, "paused-user", node)

    admin_does(cluster, "account.enable", account="paused-user")
    for node, wire in wires.items():
        reply = wire.call("whoami")
        assert reply["ok"] is True, (node, reply)
        assert reply["result"]["account"] == "paused-user"
    for node in cluster.node_names:
        fresh = cluster.wire("paused-user", node, monitor=True)
        assert fresh.call("hello")["ok"] is True
        assert fresh.handshake() == zmq.EVENT_HANDSHAKE_SUCCEEDED


def test_refusals_do_not_tell_a_revoked_key_from_a_removed_or_disabled_account(cluster: LocalCluster) -> None:
    """No account enumeration: every key that may not come in gets the very same answer."""
    for name in ("gone-key", "gone-account", "gone-disabled"):
        cluster.add_account(name, "writer")
    wires = {name: connected(cluster, name) for name in ("gone-key", "gone-account", "gone-disabled")}
    admin_does(cluster, "key.revoke", key=cluster.keys["gone-key"].public)
    admin_does(cluster, "account.remove", account="gone-account")
    admin_does(cluster, "account.disable", account="gone-disabled")

    for node in cluster.node_names:
        answers = {}
        for name, by_node in wires.items():
            for cmd in ("hello", "account.list", "no.such.command"):
                answers[name, cmd] = error_of(by_node[node].call(cmd))
        distinct = {tuple(sorted(error.items())) for error in answers.values()}
        assert len(distinct) == 1, f"on {node}, refusals differ: {answers}"
        assert next(iter(answers.values()))["code"] == "forbidden"
        for name in (*wires, STRANGER):
            assert_refused_at_handshake(cluster, name, node)


def test_the_admin_key_cannot_be_used_by_another_key_pair(cluster: LocalCluster) -> None:
    """Knowing the admin's public key is not enough: the handshake proves the secret."""
    impostor = KeyPair(cluster.keys[ADMIN].public, new_keypair().secret)
    wire = Wire(cluster.address(), impostor, monitor=True)
    try:
        wire.request("account.list")
        assert wire.handshake() != zmq.EVENT_HANDSHAKE_SUCCEEDED
        assert wire.recv(NO_REPLY_S) is None
    finally:
        wire.close()


def test_a_change_made_while_a_node_is_down_applies_when_it_comes_back(cluster: LocalCluster) -> None:
    """The admin is answered with the nodes that have not confirmed; a node that starts loads the change."""
    cluster.add_account("late-revoked", "writer")
    cluster.kill_node("ingest-2")
    pair = new_keypair()
    try:
        admin = cluster.admin("ingest-1")
        assert admin.call("key.add", {"account": "observer", "key": pair.public})["pending"] == ["ingest-2"]
        revoked = admin.call("key.revoke", {"key": cluster.keys["late-revoked"].public})
        assert revoked["pending"] == ["ingest-2"]
    finally:
        cluster.start_node("ingest-2")
    cluster.keys["observer-2nd-key"] = pair
    assert cluster.client("observer-2nd-key", "ingest-2").call("whoami")["account"] == "observer"
    assert_refused_at_handshake(cluster, "late-revoked", "ingest-2")
