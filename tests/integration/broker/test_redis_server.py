"""A real redis-server started and stopped by RedisServer, with its append-only file on."""

from __future__ import annotations

from pathlib import Path

import pytest

from vledger.broker.redis_server import RedisServer, connect, find_redis_server
from vledger.node.errors import RedisServerError


@pytest.fixture
def executable(redis_server: RedisServer) -> Path:
    """The binary the session's server runs (and a skip, or a CI failure, without one)."""
    return find_redis_server()


def test_data_survives_a_restart_through_the_append_only_file(short_tmp: Path, executable: Path) -> None:
    with RedisServer(short_tmp, executable=executable) as server:
        client = connect(server.url)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
        client.set("kept", "yes")
        client.close()
    assert server.process is None
    assert not any(short_tmp.glob("*.rdb"))
    with RedisServer(short_tmp, executable=executable) as again:
        client = connect(again.url)
        assert client.get("kept") == b"yes"
        client.close()


def test_a_taken_port_is_a_clear_error(short_tmp: Path, redis_server: RedisServer, executable: Path) -> None:
    busy = RedisServer(short_tmp, port=redis_server.port, executable=executable, start_timeout=5)
    with pytest.raises(RedisServerError, match=f"port {redis_server.port} exited.*Address already in use"):
        busy.start()
    assert busy.process is None


def test_connect_honours_redis_url(monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    client = connect()
    assert client.ping()
    client.close()


def test_stop_is_idempotent(short_tmp: Path, executable: Path) -> None:
    server = RedisServer(short_tmp, executable=executable)
    server.start()
    with pytest.raises(RedisServerError, match="already started"):
        server.start()
    server.stop()
    server.stop()
