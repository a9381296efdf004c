"""pipelined: several commands in one round trip on the real session Redis."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import redis

from vledger.broker.redis_pipeline import pipelined


def test_replies_come_raw_and_in_order(redis_client: Any) -> None:
    assert pipelined(redis_client, [("SET", "a", b"\x00\xff"), ("INCRBY", "n", 5), ("GET", "a")]) == [
        b"OK",
        5,
        b"\x00\xff",
    ]


def test_an_error_reply_raises_after_every_reply_is_read(redis_client: Any) -> None:
    # The command after the error ran, and its reply is not left on the connection for the next caller.
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        pipelined(redis_client, [("SET", "s", "x"), ("HSET", "s", "f", "v"), ("INCR", "after")])
    assert redis_client.get("after") == b"1"
    assert pipelined(redis_client, [("INCR", "after"), ("GET", "s")]) == [2, b"x"]
    assert redis_client.ping()


def test_a_missing_script_raises_noscript(redis_client: Any) -> None:
    with pytest.raises(redis.exceptions.NoScriptError):
        pipelined(redis_client, [("EVALSHA", "0" * 40, 0), ("INCR", "k")])
    assert redis_client.get("k") == b"1"


def test_a_refused_command_raises_nopermission(redis_client: Any) -> None:
    redis_client.acl_setuser("limited", enabled=True, passwords=["+pw"], commands=["+get"], keys=["*"])
    client = redis.Redis(connection_pool=redis.ConnectionPool(**{**redis_client.connection_pool.connection_kwargs,
                                                                 "username": "limited", "password": "pw"}))  # fmt: skip
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            pipelined(client, [("SET", "k", "v"), ("GET", "k")])
        assert client.get("k") is None
    finally:
        client.close()
        redis_client.acl_deluser("limited")


def test_a_server_gone_raises_connection_error_and_the_pool_reconnects(redis_client: Any) -> None:
    redis_client.client_kill_filter(_type="normal", skipme=False)
    # The pool's idle connection was cut: the retry policy (or the caller's next try) reconnects.
    with contextlib.suppress(redis.exceptions.ConnectionError):
        pipelined(redis_client, [("PING",)])
    assert pipelined(redis_client, [("PING",)]) == [b"PONG"]
