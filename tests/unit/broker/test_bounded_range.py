"""A stream range read under a byte budget without a script (broker/bounded_range.py), on a real Redis."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from vledger.broker.bounded_range import bounded_range

STREAM = "vledger:{t}:tallies:observer-1"
# The bytes of one entry's fields below as RESP sends them: "$6\r\nheight\r\n" and so on.
ENTRY = sum(len(field) + len(str(len(field))) + 5 for field in (b"height", b"1", b"body", b"a" * 10))


def test_entries_come_as_the_scripted_read_gives_them_cut_before_the_budget(redis_client: Any) -> None:
    ids = [redis_client.xadd(STREAM, {"height": n, "body": bytes([96 + n]) * 10}) for n in (1, 2, 3)]
    fields = [[b"height", str(n).encode(), b"body", bytes([96 + n]) * 10] for n in (1, 2, 3)]
    connection = redis_client.client_id()
    assert bounded_range(redis_client, "XRANGE", STREAM, "-", "+", 2, 1000) == [
        [ids[0], fields[0]],
        [ids[1], fields[1]],
    ]
    assert redis_client.client_id() == connection  # a reply read whole: the connection serves on
    # The second entry would pass the budget: it waits for the next read.
    assert bounded_range(redis_client, "XREVRANGE", STREAM, "+", "-", 3, 2 * ENTRY - 1) == [[ids[2], fields[2]]]
    assert redis_client.client_id() != connection  # the rest of the reply left unread: the connection dropped
    # One entry larger alone comes without its fields, so that a reader moves past it.
    assert bounded_range(redis_client, "XRANGE", STREAM, "-", "+", 3, ENTRY - 1) == [[ids[0], []]]


def test_an_error_reply_is_raised_and_the_connection_serves_on(redis_client: Any) -> None:
    redis_client.set("not-a-stream", "x")
    connection = redis_client.client_id()
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        bounded_range(redis_client, "XRANGE", "not-a-stream", "-", "+", 1, 1000)
    assert redis_client.client_id() == connection
    assert bounded_range(redis_client, "XRANGE", "no-such-stream", "-", "+", 1, 1000) == []
