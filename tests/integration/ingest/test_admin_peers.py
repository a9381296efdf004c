"""A node that starts without a proven copy of the admin ledger asks the nodes that hold it
(outsider o9 K2, docs/PROTOCOL.md 16.4).

An insider with a password that writes Redis deletes the admin ledger's copy and checkpoint there
(in a loop while the home runs: it puts them back) and writes an admin of their own. A node
that started with no copy of its own (a new node, a replaced disk, its file removed) took that
silence for "no admin ledger yet" and Redis's accounts as they are: the forged admin wrote on
ingest-2. Real node processes, a real redis-server; the attacker uses plain Redis commands.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.admin_copy import KEPT_ADMIN_COPY
from vledger.broker.client import Client
from vledger.broker.keys import KeyPair, new_keypair
from vledger.broker.redis_keys import group_key, ledger_key
from vledger.broker.redis_server import RedisServer
from vledger.broker.replication import ReplicationLedger
from vledger.ingest.runtime import ADMIN_UNPROVEN
from vledger.node.errors import NodeUnavailableError
from vledger.node.rules.admin import ADMIN_LEDGER
from vledger.tests.integration.cluster import ADMIN, LocalCluster, wait_until

from .test_admin_insider_cluster import _answers, _answers_a_member
from .test_forged_accounts import _forge, _refused, _unforge, redis_as_attacker  # noqa: F401

NOTE = ledger_key("vledger", ADMIN_LEDGER, "checkpoint")
RECORDS = group_key("vledger", "accounts", "admin:records")
DEADLINE = 30.0


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    """The admin ledger's home (ingest-1), ingest-2 (which holds no copy of it: it reads Redis's)
    and replica-1 (which holds one in its store)."""
    with LocalCluster(redis_server.url, replicas=1) as running:
        yield running


def _admin_size(cluster: LocalCluster, node: str) -> int:
    """The size of ``node``'s newest checkpoint of the admin ledger (-1: none)."""
    with Client(cluster.address(node), cluster.keys[ADMIN], timeout=2.0) as client:
        try:
            return int(client.call("checkpoint", {"ledger": ADMIN_LEDGER})["size"])
        except NodeUnavailableError:
            return -1


def _replica_caught_up(cluster: LocalCluster) -> None:
    home = cluster.own_size("ingest-1", ADMIN_LEDGER)
    wait_until(lambda: _admin_size(cluster, "replica-1") == home, DEADLINE, "replica-1 to hold the admin checkpoint")


class Loop:
    """What the insider runs while the home puts Redis's copy back: every few ms, the copy and its
    checkpoint deleted, and ``forge`` (if any) written again."""

    def __init__(self, client: Any, forge: tuple[str, str] | None = None) -> None:
        self.client = client
        self.forge = forge
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        turn = 0
        while not self.stop.is_set():
            self.client.delete(NOTE, RECORDS)
            if self.forge is not None and turn % 10 == 0:  # each announced: every node reloads
                _forge(self.client, *self.forge)
            turn += 1
            self.stop.wait(0.005)

    def __enter__(self) -> Loop:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _start_without_copy(cluster: LocalCluster, node: str, copy: bytes | None = None) -> None:
    """Start ``node`` (stopped) with no admin_copy.json in its data directory, or with ``copy``;
    return once it answers a member of the cluster (its accounts may admit nobody)."""
    path: Path = cluster.store_dir(node) / KEPT_ADMIN_COPY
    path.unlink(missing_ok=True)
    if copy is not None:
        path.write_bytes(copy)
        path.chmod(0o600)
    cluster._launch(node)  # not start_node: it waits for the admin's hello
    wait_until(lambda: _answers_a_member(cluster, node), DEADLINE, f"{node} to answer a node")


def _mallory(cluster: LocalCluster) -> KeyPair:
    mallory = new_keypair()
    cluster.keys["mallory"] = mallory
    return mallory


def test_a_node_started_without_its_copy_while_the_home_is_down_takes_no_account_from_redis(
    cluster: LocalCluster,
    redis_as_attacker: Any,  # noqa: F811
) -> None:
    """K2: the home down, Redis's copy and checkpoint deleted, a forged admin written: ingest-2
    started with no copy wrote as that admin. Now it proves replica-1's copy."""
    _replica_caught_up(cluster)
    mallory = _mallory(cluster)
    assert cluster.stop_node("ingest-1") == 0
    assert cluster.stop_node("ingest-2") == 0
    redis_as_attacker.delete(NOTE, RECORDS)
    _forge(redis_as_attacker, "mallory", mallory.public)
    try:
        _start_without_copy(cluster, "ingest-2")
        assert _refused(cluster, "mallory", "ingest-2"), "a forged admin got in on a node started without its copy"
        wait_until(lambda: _answers(cluster, ADMIN, "ingest-2"), DEADLINE, "the admin of the ledger let in")
    finally:
        _unforge(redis_as_attacker, "mallory", mallory.public)
        cluster.start_node("ingest-1", timeout=DEADLINE)
        cluster.wait_ready("ingest-2", DEADLINE)


def test_a_node_started_without_its_copy_while_the_home_runs_takes_no_account_from_redis(
    cluster: LocalCluster,
    redis_as_attacker: Any,  # noqa: F811
) -> None:
    """K2 with the home up: the copy and checkpoint deleted and the forged admin written again in
    a loop, faster than the home puts them back."""
    _replica_caught_up(cluster)
    mallory = _mallory(cluster)
    assert cluster.stop_node("ingest-2") == 0
    try:
        with Loop(redis_as_attacker, ("mallory", mallory.public)):
            _start_without_copy(cluster, "ingest-2")
            assert _refused(cluster, "mallory", "ingest-2"), "a forged admin got in on a node started without its copy"
            assert _answers(cluster, ADMIN, "ingest-2")
    finally:
        _unforge(redis_as_attacker, "mallory", mallory.public)
        cluster.wait_ready("ingest-2", DEADLINE)


def test_an_older_copy_put_back_brings_no_revoked_key_back(
    cluster: LocalCluster,
    redis_as_attacker: Any,  # noqa: F811
) -> None:
    """The variant: ingest-2's genuine copy from before a revocation put back in its data
    directory, Redis's copy deleted in a loop: the revoked key was let in again. Now the home's
    copy, longer, is taken."""
    dave = cluster.add_account("dave", "writer")  # applied on ingest-2: its file holds dave's key
    older = (cluster.store_dir("ingest-2") / KEPT_ADMIN_COPY).read_bytes()
    assert cluster.admin().call("key.revoke", {"key": dave.public})["pending"] == []
    assert _refused(cluster, "dave", "ingest-2")
    assert cluster.stop_node("ingest-2") == 0
    try:
        with Loop(redis_as_attacker):
            _start_without_copy(cluster, "ingest-2", older)
            assert _refused(cluster, "dave", "ingest-2"), "a revoked key got in on a node given its older copy"
            assert _answers(cluster, ADMIN, "ingest-2")
    finally:
        cluster.wait_ready("ingest-2", DEADLINE)
    assert _refused(cluster, "dave", "ingest-2")


def test_a_node_no_holder_answers_admits_no_account_and_says_so_until_one_does(
    cluster: LocalCluster,
    redis_as_attacker: Any,  # noqa: F811
) -> None:
    """The quorum rule's other side: with every node that holds the admin ledger down, Redis's
    silence is no proof: ingest-2 admits nobody, raises admin_unproven, and takes replica-1's
    copy once replica-1 is back."""
    _replica_caught_up(cluster)
    mallory = _mallory(cluster)
    assert cluster.stop_node("ingest-1") == 0
    assert cluster.stop_node("replica-1") == 0
    assert cluster.stop_node("ingest-2") == 0
    redis_as_attacker.delete(NOTE, RECORDS)
    _forge(redis_as_attacker, "mallory", mallory.public)
    replication = ReplicationLedger(redis_as_attacker, raisers=cluster.node_names + cluster.replica_names)
    try:
        _start_without_copy(cluster, "ingest-2")
        assert _refused(cluster, "mallory", "ingest-2")
        assert not _answers(cluster, ADMIN, "ingest-2")  # nothing proves the admin either
        alert = f"ingest-2|{ADMIN_LEDGER}|{ADMIN_UNPROVEN}"
        raised = wait_until(lambda: replication.open_alerts().get(alert), DEADLINE, "the admin_unproven alert")
        assert "answered" in raised["detail"], raised
        cluster.start_node("replica-1", timeout=DEADLINE)
        wait_until(lambda: _answers(cluster, ADMIN, "ingest-2"), DEADLINE, "replica-1's copy proven on ingest-2")
        assert _refused(cluster, "mallory", "ingest-2")
        wait_until(lambda: alert not in replication.open_alerts(), DEADLINE, "the alert resolved")
    finally:
        _unforge(redis_as_attacker, "mallory", mallory.public)
        if not cluster.node("replica-1").running():
            cluster.start_node("replica-1", timeout=DEADLINE)
        cluster.start_node("ingest-1", timeout=DEADLINE)
        cluster.wait_ready("ingest-2", DEADLINE)


def test_a_node_whose_key_rotated_proves_the_holders_copy_with_its_new_key(
    cluster: LocalCluster,
    redis_as_attacker: Any,  # noqa: F811
) -> None:
    """Outsider o18 F1, the same mistake here: before it read its key history (the admin ledger
    it is proving), ingest-2 asked the holders with its replaced key, which every node refuses
    once the window ended: nobody answered and it admitted no account. Last in the module: it
    leaves ingest-2 on its new key."""
    _replica_caught_up(cluster)
    common = ["--config", str(cluster.config_path), "--key", str(cluster.directory / "keys" / "admin.key_secret")]
    rotated = json.loads(cluster.cli("key", "rotate", "ingest-2", "--window", "2", "--json", *common).stdout)
    wait_until(lambda: time.time() * 1000 > rotated["until"] + 500, 10, "the window's end")
    cluster.node("ingest-2").public_key = rotated["curve"]  # the test's clients reach it with its new key
    cluster._admins.pop("ingest-2", None)
    assert cluster.stop_node("ingest-1") == 0  # replica-1 alone holds the admin ledger
    assert cluster.stop_node("ingest-2") == 0
    redis_as_attacker.delete(NOTE, RECORDS)
    try:
        _start_without_copy(cluster, "ingest-2")
        wait_until(lambda: _answers(cluster, ADMIN, "ingest-2"), DEADLINE, "replica-1's copy proven on ingest-2")
    finally:
        cluster.start_node("ingest-1", timeout=DEADLINE)
        cluster.wait_ready("ingest-2", DEADLINE)
