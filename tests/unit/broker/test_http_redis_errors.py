"""Review r20 F4: the gateway's middleware answers every redis.RedisError 503 "retry later",
logged at most once a minute: a WRONGTYPE on a key an insider changed, a script's error or a
DataError from our own code passing a value redis-py cannot send is a bug or damage, not Redis
being away, and was hidden (no traceback, one line a minute for every route together)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from vledger.broker.http import _redis_away, json_errors


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.DataError("Invalid input of type: 'NoneType'"),
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        redis.exceptions.ResponseError("ERR Error running script (call to f_x): attempt to compare nil"),
    ],
)
def test_a_redis_error_that_is_no_outage_is_a_logged_500(
    error: redis.RedisError, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise error

    async def run() -> web.StreamResponse:
        response: web.StreamResponse = await json_errors(make_mocked_request("GET", "/api/cluster"), handler)
        return response

    with caplog.at_level(logging.WARNING):
        first = asyncio.run(run())
        second = asyncio.run(run())
    assert isinstance(first, web.Response) and first.text is not None
    assert (first.status, json.loads(first.text)["error"]["code"]) == (500, "error")
    assert second.status == 500
    assert sum(r.exc_info is not None for r in caplog.records) == 2  # each one's traceback logged


def _error_of(call: Any) -> redis.RedisError:
    with pytest.raises(redis.RedisError) as caught:
        call()
    return caught.value


def test_a_real_oom_reply_is_redis_away(redis_client: Any) -> None:
    """Review r21 F2: redis-py raises such replies as their own classes, the code stripped from
    the message: a text check alone answered a real OOM a logged 500 at every request."""
    redis_client.config_set("maxmemory", "1")
    try:
        error = _error_of(lambda: redis_client.set("r21:oom", "x"))
    finally:
        redis_client.config_set("maxmemory", "0")
    assert _redis_away(error), (type(error), str(error))


def test_a_real_masterdown_reply_is_redis_away(redis_client: Any) -> None:
    stale = redis_client.config_get("replica-serve-stale-data")["replica-serve-stale-data"]
    redis_client.config_set("replica-serve-stale-data", "no")
    redis_client.replicaof("127.0.0.1", "1")  # a master that is never there
    try:
        error = _error_of(lambda: redis_client.get("r21:any"))
    finally:
        redis_client.replicaof("no", "one")
        redis_client.config_set("replica-serve-stale-data", stale)
    assert _redis_away(error), (type(error), str(error))
