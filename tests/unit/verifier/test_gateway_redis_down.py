"""The gateway when Redis stops answering: a real redis-server of the test's own, frozen with
SIGSTOP (a server too loaded to answer in the client's timeout looks the same) and then
stopped. Every route that reads Redis answers 503 ``unavailable`` (PROTOCOL 15), never 500
"internal error" (ob32: /tally once answered 500 under load); what the store alone holds is
still served."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.http import HttpThread
from vledger.broker.redis_server import RedisServer, connect
from vledger.config.cluster import ClusterConfig, cluster_from_mapping
from vledger.config.settings import Limits
from vledger.tools.demo import run_demo
from vledger.tools.node_commands import ensure_cluster_keys
from vledger.verifier.gateway import Gateway, build_app

# Each read waits this long for a frozen server: the client's timeout, short for the test.
TIMEOUT = 0.5
REDIS_ROUTES = ["/api/ledgers/election-2026/tally", "/api/cluster"]


@pytest.fixture
def own_redis(redis_server: RedisServer) -> Iterator[RedisServer]:
    """A server of this test alone (the session's is shared: freezing it would stall the others);
    taking ``redis_server`` skips or fails, as the other Redis tests do, without a redis-server."""
    directory = Path(tempfile.mkdtemp(prefix="vledger-redis-down-", dir="/tmp"))
    server = RedisServer(directory, executable=redis_server.executable)
    try:
        with server:
            yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)
        shutil.rmtree(directory, ignore_errors=True)


def with_observer(path: Path, redis_url: str) -> ClusterConfig:
    """A home, the replica the gateway serves and an observer, whose tallies it reads from Redis."""
    nodes: dict[str, Any] = {
        "ingest-1": {"role": "ingest", "port": 1, "pub_port": 2},
        "replica-1": {"role": "replica", "port": 3, "gateway_port": 4},
        "observer-1": {"role": "observer", "port": 5, "follow": ["ingest-1"]},
    }
    cluster = {"name": "t", "data": "data", "keys": "keys", "default_home": "ingest-1", "redis": redis_url}
    config = cluster_from_mapping({"cluster": cluster, "nodes": nodes}, path)
    ensure_cluster_keys(config)
    return config


def get(url: str) -> tuple[int, dict[str, str], Any]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def test_routes_that_read_redis_answer_503_unavailable_while_it_is_frozen_or_stopped(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    config = with_observer(tmp_path / "cluster.toml", own_redis.url)
    run_demo(tmp_path / "data" / "replica-1", 20, 1, Limits())
    gateway = Gateway(config, "replica-1", redis_client=connect(own_redis.url, timeout=TIMEOUT))
    process = own_redis.process
    assert process is not None
    try:
        with HttpThread(build_app(gateway), "127.0.0.1", 0) as server:
            url = f"http://127.0.0.1:{server.port}"
            for path in REDIS_ROUTES:  # Redis answering: served
                assert get(url + path)[0] == 200, path
            os.kill(process.pid, signal.SIGSTOP)
            try:
                for path in REDIS_ROUTES:
                    status, headers, body = get(url + path)
                    assert status == 503 and body["error"]["code"] == "unavailable", (path, status, body)
                    assert "in time" in body["error"]["message"] and headers["Retry-After"] == "1"
                    assert headers["Cache-Control"] == "no-store"
                # The store's own: still served (its checkpoint falls back to the store's notes).
                assert get(f"{url}/api/ledgers/election-2026/records?start=0&limit=2")[0] == 200
            finally:
                os.kill(process.pid, signal.SIGCONT)
            own_redis.stop()
            gateway._cluster_cache = None  # /api/cluster keeps an answer for a second
            for path in REDIS_ROUTES:
                status, _, body = get(url + path)
                assert status == 503 and body["error"]["code"] == "unavailable", (path, status, body)
    finally:
        gateway.close()
