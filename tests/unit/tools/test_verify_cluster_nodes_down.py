"""`vledger verify --cluster` asked the nodes one by one as each ledger's check needed them, so
each node that was down (listening, never answering: a hung process, a host dropping packets)
cost the whole `--timeout` in a row: N such nodes, N timeouts (closing note 38, vq37). It asks
every node that may hold a copy at once first, and those that do not answer are not asked again:
N cost one timeout."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.keys import generate, new_keypair
from vledger.broker.redis_server import RedisServer
from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import generate_signing_key, load_signing_key, signing_key_paths
from vledger.config.cluster import load_cluster
from vledger.node.witness import HomeSigner
from vledger.tools import cluster_verify

LEDGER = "votes"
TIMEOUT = 3.0  # --timeout: serially, the two nodes down cost 6 s at least


@contextlib.contextmanager
def _silent_ports(count: int) -> Iterator[list[int]]:
    """Ports that take TCP connections (the kernel completes them) and never answer a byte."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            listener = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            listener.bind(("127.0.0.1", 0))
            listener.listen(16)
            ports.append(listener.getsockname()[1])
        yield ports


def test_two_nodes_down_cost_one_timeout_not_two(
    tmp_path: Path,
    redis_server: RedisServer,
    redis_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with _silent_ports(4) as ports:
        path = tmp_path / "cluster.toml"
        path.write_text(
            f'[cluster]\nredis = "{redis_server.url}"\ndefault_home = "ingest-1"\n'
            f'[nodes.ingest-1]\nrole = "ingest"\nport = {ports[0]}\npub_port = {ports[1]}\n'
            f'[nodes.replica-1]\nrole = "replica"\nport = {ports[2]}\npub_port = {ports[3]}\n'
        )
        config = load_cluster(path)
        config.keys_dir.mkdir(parents=True, exist_ok=True)
        for node in ("ingest-1", "replica-1"):
            generate(config.keys_dir, node)
        generate_signing_key(config.keys_dir, "ingest-1")
        seed = load_signing_key(signing_key_paths(config.keys_dir, "ingest-1")[0]).seed
        repl = ReplicationLedger(redis_client)
        redis_client.hset(repl.ledgers_key, LEDGER, "ingest-1")
        redis_client.set(repl.checkpoint_key(LEDGER), HomeSigner(config.name, seed).sign(LEDGER, 4, b"\x01" * 32).note)
        asking = new_keypair()
        monkeypatch.setattr(cluster_verify, "_asking_keys", lambda config, key: asking)
        monkeypatch.delenv("REDIS_URL", raising=False)

        started = time.monotonic()
        status = cluster_verify.verify_cluster(path, as_json=True, timeout=TIMEOUT)
        took = time.monotonic() - started

    said = json.loads(capsys.readouterr().out)
    assert status == 0, said  # no open alert; the ledger is not checked (no node proves its genesis)
    assert "not checked" in said["outside"][0]["warnings"][0]
    assert took < 1.7 * TIMEOUT, f"{took:.1f} s for two nodes down at --timeout {TIMEOUT}"
