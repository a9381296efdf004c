"""Admin accounts the admin ledger must show, through a real cluster and the command line
(docs/PROTOCOL.md 16.3): no bootstrap past the first admin, no last admin disabled."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from vledger.broker.client import Client
from vledger.broker.keys import new_keypair
from vledger.broker.redis_server import RedisServer
from vledger.tests.integration.cluster import ADMIN, LocalCluster, remote_error


def test_bootstrap_makes_no_hidden_admin_once_the_admin_ledger_exists(cluster: LocalCluster, tmp_path: Path) -> None:
    admin = cluster.admin()
    admin.call("account.add", {"account": "bystander", "role": "observer"})  # the admin ledger exists
    cluster.cli("keygen", "--dir", str(tmp_path), "mallory")
    bootstrap = ("admin", "bootstrap", "--config", str(cluster.config_path), "--account", "mallory")
    done = cluster.cli(*bootstrap, "--key", str(tmp_path / "mallory.key"), "--json", check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert json.loads(done.stdout)["error"]["code"] == "admin_ledger_exists"
    # A start script's run (docker compose's `bootstrap`, every `up`): said, exit 0, nothing made.
    once = cluster.cli(*bootstrap, "--key", str(tmp_path / "mallory.key"), "--json", "--once")
    assert json.loads(once.stdout)["skipped"] == "admin_ledger_exists"
    assert "mallory" not in {a["account"] for a in admin.call("account.list")["accounts"]}


def test_the_last_admin_cannot_lock_every_admin_out(cluster: LocalCluster) -> None:
    admin = cluster.admin()
    refused = remote_error(admin.call, "account.disable", {"account": ADMIN})
    assert refused.code == "last_admin"
    # Still an admin, still answered: the cluster did not go silent.
    assert admin.call("whoami")["account"] == ADMIN
    listed = {a["account"]: a for a in admin.call("account.list")["accounts"]}
    assert listed[ADMIN]["enabled"] is True


def test_an_admin_command_answers_once_every_live_node_replicas_too_enforces_it(redis_server: RedisServer) -> None:
    """`user add` answered once the ingest nodes had applied it; a replica still proving the record
    refused the new key's first handshake, which ZeroMQ never retries (test_node_key_rotation's
    replica gave writer1 no answer within 5 s). A live replica that cannot apply it is now named
    pending, and one that can is waited for: the key's first request to it is answered."""
    with LocalCluster(redis_server.url, nodes=1, replicas=1, accounts={}, ingest={"account_wait_ms": 5000}) as cluster:
        admin = cluster.admin()
        cluster.signal_node("replica-1", signal.SIGSTOP)  # frozen, yet its last heartbeat is recent: live
        try:
            added = admin.call("account.add", {"account": "bob", "role": "writer"})
        finally:
            cluster.signal_node("replica-1", signal.SIGCONT)
        assert added["pending"] == ["replica-1"]
        bob = new_keypair()
        bound = admin.call("key.add", {"account": "bob", "key": bob.public})
        assert bound["pending"] == []
        with Client(cluster.address("replica-1"), bob, timeout=5.0) as client:
            assert client.call("hello")


def test_a_node_stopped_cleanly_is_waited_for_by_no_admin_command_and_one_killed_is(redis_server: RedisServer) -> None:
    """A replica stopped with SIGTERM counted as live for 30 s after its last heartbeat: every admin
    command meanwhile waited the whole `account_wait_ms` for it and named it pending. Its clean stop
    now says so in Redis; a node killed -9 cannot, and is waited for and named until its window ends."""
    with LocalCluster(redis_server.url, nodes=1, replicas=2, accounts={}, ingest={"account_wait_ms": 4000}) as cluster:
        admin = cluster.admin()
        assert admin.call("account.add", {"account": "carol", "role": "writer"})["pending"] == []
        assert cluster.stop_node("replica-1") == 0
        began = time.monotonic()
        added = admin.call("account.add", {"account": "bob", "role": "writer"})
        assert added["pending"] == []
        assert time.monotonic() - began < 4.0  # not the whole wait for a node that is gone
        cluster.kill_node("replica-2")  # no word in Redis: live until its heartbeat window ends
        removed = admin.call("account.add", {"account": "dave", "role": "writer"})
        assert removed["pending"] == ["replica-2"]
        cluster.start_node("replica-1")  # live again once it applied every change
        bob = new_keypair()
        assert admin.call("key.add", {"account": "bob", "key": bob.public})["pending"] == ["replica-2"]
        with Client(cluster.address("replica-1"), bob, timeout=5.0) as client:
            assert client.call("hello")
