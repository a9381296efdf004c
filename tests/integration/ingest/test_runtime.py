"""NodeRuntime on a real key directory and a real CURVE socket: roles, order of closing, signals.

The cluster file is written here and its keys made by ``vledger keygen --cluster``, as an
operator would; no Redis is needed, since nothing here asks the account registry (the node's
own key, a member of its cluster, is let in by hand), but by the test of a wedged Redis,
which stops a redis-server of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis
import zmq

from vledger.broker.curve import curve_client
from vledger.broker.keys import load_public, load_secret
from vledger.broker.redis_server import RedisServer, free_port
from vledger.config.cluster import ClusterConfig, load_cluster
from vledger.ingest.runtime import NODE_REDIS_TIMEOUT, NodeRuntime
from vledger.node.errors import SettingsError
from vledger.node.wire import encode_request, reply_ok

TIMEOUT_MS = 5000
CLUSTER = """\
[cluster]
name = "runtime"
keys = "keys"
data = "data"
redis = "redis://127.0.0.1:1/0"
default_home = "ingest-1"

[nodes.ingest-1]
role = "ingest"
host = "127.0.0.1"
port = {port}
pub_port = {pub_port}

[nodes.verifier-1]
role = "verifier"
host = "127.0.0.1"
port = {verifier_port}
"""


@pytest.fixture
def config(short_tmp: Path) -> ClusterConfig:
    path = short_tmp / "cluster.toml"
    path.write_text(CLUSTER.format(port=free_port(), pub_port=free_port(), verifier_port=free_port()))
    done = subprocess.run(
        [sys.executable, "-m", "vledger.tools.cli", "keygen", "--cluster", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return load_cluster(path)


class Hello:
    """A service that answers every request with the node's name (no slow work)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def handle(self, key: str, data: bytes, checked: object = None) -> bytes:
        return reply_ok(msgpack.unpackb(data)["id"], {"node": self.name})

    def prepare(self, datas: Sequence[bytes]) -> None:
        """Nothing to prepare: each request is handled as it is."""

    def flush(self) -> None:
        """Nothing waits: every answer is given at once."""


def test_a_node_of_another_role_is_refused(config: ClusterConfig) -> None:
    with (
        pytest.raises(SettingsError, match="is a verifier node, not a replica or observer"),
        NodeRuntime.open(config, "verifier-1", ("replica", "observer")),
    ):
        pass


def test_what_was_added_closes_in_reverse_order_even_after_a_failure(config: ClusterConfig) -> None:
    closed: list[str] = []
    with (
        pytest.raises(RuntimeError, match="start-up failed"),
        NodeRuntime.open(config, "ingest-1", ("ingest",)) as runtime,
    ):
        for part in ("store", "cache", "outbox"):
            runtime.closing(lambda part=part: closed.append(part))
        raise RuntimeError("start-up failed")
    assert closed == ["outbox", "cache", "store"]
    assert runtime.ctx.closed  # the Context ended after them


def test_sigterm_stops_serving_and_the_main_loop_then_closes_the_socket(config: ClusterConfig) -> None:
    node_key = load_secret(config.secret_key_path("verifier-1"))
    asked: list[Any] = []
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    with NodeRuntime.open(config, "verifier-1", ("verifier",)) as runtime:
        runtime.gates.requests.replace(runtime.gates.members.keys())  # what the accounts cache would do
        server = runtime.request_server(config.settings.broker)
        client = curve_client(
            zmq.Context.instance(), zmq.DEALER, load_public(config.public_key_path("verifier-1")), node_key
        )
        client.connect(server.connect_endpoint)

        def main() -> None:  # the process's own work, beside the request loop's thread
            client.send(encode_request(1, "hello", {}))
            assert client.poll(TIMEOUT_MS)
            asked.append(msgpack.unpackb(client.recv()))
            os.kill(os.getpid(), signal.SIGTERM)
            assert runtime.stopping.wait(TIMEOUT_MS / 1000)

        try:
            runtime.serve(server, Hello("verifier-1"), main=main)
        finally:
            client.close(linger=0)
        assert runtime.stopping.is_set()
    assert asked == [{"id": 1, "ok": True, "result": {"node": "verifier-1"}}]
    assert server.socket.closed and runtime.ctx.closed
    assert {signum: signal.getsignal(signum) for signum in handlers} == handlers


def test_the_account_registry_gives_up_on_a_wedged_redis(
    config: ClusterConfig, short_tmp: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis that took the connection and answers nothing (stopped): the registry's calls
    fail after the node's Redis timeout, as its replication client's do. They had none, so the
    accounts thread, an admin's account command or a node's start waited for ever."""
    (short_tmp / "redis").mkdir()
    with RedisServer(short_tmp / "redis", executable=redis_server.executable) as wedged:
        assert wedged.process is not None
        monkeypatch.setenv("REDIS_URL", wedged.url)
        with NodeRuntime.open(config, "verifier-1", ("verifier",)) as runtime:
            registry = runtime.registry()
            assert registry.version() == 0  # connected, before it stops answering
            outcome: list[BaseException | int] = []

            def ask() -> None:
                try:
                    outcome.append(registry.version())
                except BaseException as e:
                    outcome.append(e)

            os.kill(wedged.process.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                asking = threading.Thread(target=ask, daemon=True)
                asking.start()
                asking.join(NODE_REDIS_TIMEOUT + 10)
                waited = time.monotonic() - started
            finally:
                os.kill(wedged.process.pid, signal.SIGCONT)
            asking.join(10)
            assert len(outcome) == 1 and isinstance(outcome[0], redis.exceptions.TimeoutError), outcome
            assert NODE_REDIS_TIMEOUT - 0.5 <= waited < NODE_REDIS_TIMEOUT + 10, waited
