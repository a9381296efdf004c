"""The verifier's CURVE key rotates on a running cluster (``vledger key rotate``, PROTOCOL 16.6).

Records are put throughout; the verifier's checks and sweeps keep running across the rotation
(no alert, no node it finds unavailable); from the record on it reads the nodes with its new
client key; its status socket serves the old key on ``port`` and the new one on
``rotation_port`` during the window, the new one alone after it; and once the window ended a
node refuses the verifier's old client key.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from vledger.broker.client import Client, NodeAddress
from vledger.broker.keys import load_public, load_secret
from vledger.broker.redis_server import RedisServer, connect
from vledger.broker.replication import ReplicationLedger
from vledger.client.session import node_address
from vledger.config.cluster import load_cluster
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.node.errors import NodeUnavailableError, RemoteError
from vledger.node.record import decode_record
from vledger.node.rules.admin import ADMIN_LEDGER
from vledger.tests.integration.cluster import ADMIN, LocalCluster, entry, genesis, wait_until

LEDGER = "votes"
VERIFIER = "verifier-1"
NODES = ("ingest-1", "replica-1")
WINDOW_SECONDS = 6


class Writer(threading.Thread):
    """Puts a record every few milliseconds until stopped: new records for the verifier to check."""

    def __init__(self, client: Client) -> None:
        super().__init__(name="writer", daemon=True)
        self.client = client
        self.stop = threading.Event()
        self.acknowledged = 0
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stop.wait(0.02):
            try:
                self.client.put(entry(LEDGER, "vote", {"n": self.acknowledged}, "writer1"))
            except (NodeUnavailableError, RemoteError) as error:
                self.failures.append(str(error))
                return
            self.acknowledged += 1


def _sweeps(status: dict[str, Any]) -> dict[str, int]:
    """Each copy of the ledger -> how many sweeps of it the verifier completed."""
    copies = status["copies"]
    return {node: copies[f"{node}|{LEDGER}"]["sweeps"] for node in NODES if f"{node}|{LEDGER}" in copies}


def _swept_again(status_of: Callable[[], dict[str, Any]], since: dict[str, int], what: str) -> dict[str, int]:
    """Wait until every copy was swept at least once more than ``since``; the counts then."""

    def more() -> dict[str, int] | None:
        now = _sweeps(status_of())
        return now if all(now.get(n, 0) > since.get(n, 0) for n in NODES) else None

    swept: dict[str, int] = wait_until(more, 20, what)
    return swept


def test_the_verifier_s_key_rotates_while_it_checks_and_its_old_client_key_is_refused_after_the_window(
    redis_server: RedisServer,
) -> None:
    with LocalCluster(
        redis_server.url,
        nodes=1,
        replicas=1,
        verifiers=1,
        rotating=[VERIFIER],
        accounts={"writer1": "writer"},
        verifier={"sweep_interval_ms": 200, "lag_alert_ms": 10_000},
    ) as cluster:
        cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
        keys = cluster.directory / "keys"
        old_address = cluster.address(VERIFIER)
        old_status = Client(old_address, cluster.keys[ADMIN], timeout=5.0)  # connected before: the old key
        writer = Writer(cluster.client("writer1"))
        writer.start()
        before = _swept_again(lambda: old_status.call("status"), {}, "a first sweep of every copy")
        common = ["--config", str(cluster.config_path), "--key", str(keys / "admin.key_secret")]
        rotated = cluster.cli("key", "rotate", VERIFIER, "--window", str(WINDOW_SECONDS), "--json", *common)
        result: dict[str, Any] = json.loads(rotated.stdout)
        assert result["generation"] == 1, rotated.stdout
        assert result["curve"] == load_public(keys / f"{VERIFIER}@1.key") != old_address.key
        assert result["sign"] == ""  # a verifier has no Ed25519 key (PROTOCOL 16.1)
        assert not list(keys.glob(f"{VERIFIER}@1.sign*"))
        # The record on the admin ledger, as an observer or an outsider reads it.
        (record,) = [
            decode_record(data, PROTOCOL_LIMITS)
            for data in cluster.admin().records(ADMIN_LEDGER)
            if decode_record(data, PROTOCOL_LIMITS).content.kind == "key_rotation"
        ]
        assert record.content.payload == {
            "node": VERIFIER, "curve": result["curve"], "sign": "", "until": result["until"],
            "via": cluster.keys[ADMIN].public,
        }  # fmt: skip
        config = load_cluster(cluster.config_path)
        new_address = node_address(config, VERIFIER)
        assert new_address == NodeAddress(
            old_address.endpoint, result["curve"], (config.node(VERIFIER).rotation_endpoint,)
        )
        new_status = Client(new_address, cluster.keys[ADMIN], timeout=5.0)
        # It reads the nodes with its new key from the record on (the nodes admit both now).
        wait_until(
            lambda: "connects to the others with its key generation 1" in cluster.log_text(VERIFIER),
            10,
            "the verifier's switch to its new client key",
        )
        # A connection made with the verifier's old client key during the window (as its readers had).
        old_client = load_secret(keys / f"{VERIFIER}.key_secret")
        held = {name: Client(node_address(config, name), old_client, timeout=5.0) for name in NODES}
        for client in held.values():
            assert client.call("hello")["role"] == "replica"  # a member of the cluster (ingest/members.py)
        # During the window: both status endpoints answer, and the sweeps go on.
        during = _swept_again(lambda: new_status.call("status"), before, "sweeps during the window")
        assert old_status.call("status")["open_alerts"] == []
        checked = new_status.call("status")["checked"]
        wait_until(lambda: time.time() * 1000 > result["until"] + 500, WINDOW_SECONDS + 5, "the window's end")
        # After it: the sweeps and the checks of new records go on, with the new key alone.
        _swept_again(lambda: new_status.call("status"), during, "sweeps after the window")
        wait_until(lambda: new_status.call("status")["checked"] > checked, 20, "new records checked after the window")
        writer.stop.set()
        writer.join(10)
        assert not writer.failures, writer.failures
        # No alert at any time, and no node ever unavailable to the verifier.
        assert ReplicationLedger(connect(cluster.cluster_redis_url)).alerts(1000) == []
        assert new_status.call("status")["open_alerts"] == []
        assert "unavailable" not in cluster.log_text(VERIFIER), cluster.log_tail(VERIFIER)
        # The verifier's old server key: no handshake, on a new connection or on the one it had.
        for client in (Client(old_address, cluster.keys[ADMIN], timeout=2.0), old_status):
            with pytest.raises(NodeUnavailableError):
                client.call("hello")
            client.close()
        with Client(NodeAddress(new_address.endpoint, new_address.key), cluster.keys[ADMIN], timeout=5.0) as main:
            assert main.call("hello")["node_role"] == "verifier"
        # The verifier's old client key: every node refuses it now, at each message over a
        # connection made before (forbidden) and at the handshake of a new one; its new key is admitted.
        for client in held.values():
            with pytest.raises(RemoteError) as refused:
                client.call("hello")
            assert refused.value.code == "forbidden"
            client.close()
        new_client = load_secret(keys / f"{VERIFIER}@1.key_secret")
        for name in NODES:
            reached = node_address(config, name)
            with Client(reached, old_client, timeout=2.0) as stale, pytest.raises(NodeUnavailableError):
                stale.call("hello")
            with Client(reached, new_client, timeout=5.0) as fresh:
                assert fresh.call("hello")["role"] == "replica"
        new_status.close()
