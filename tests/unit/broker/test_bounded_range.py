"""A stream range read under a byte budget without a script (broker/bounded_range.py), on a real Redis.

The read goes over a connection of its own, opened with the client's settings: the client's
connections are never used, so a reply left unread never reaches them.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from vledger.broker import bounded_range as bounded_range_module
from vledger.broker.bounded_range import READ_SIZE, bounded_range
from vledger.broker.redis_server import RedisServer, connect

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
    assert redis_client.client_id() == connection  # the client's own connection: never used
    # The second entry would pass the budget: it waits for the next read.
    assert bounded_range(redis_client, "XREVRANGE", STREAM, "+", "-", 3, 2 * ENTRY - 1) == [[ids[2], fields[2]]]
    assert redis_client.client_id() == connection  # the rest of the reply left unread on a connection of its own
    # One entry larger alone comes without its fields, so that a reader moves past it.
    assert bounded_range(redis_client, "XRANGE", STREAM, "-", "+", 3, ENTRY - 1) == [[ids[0], []]]


def test_an_error_reply_is_raised_and_the_client_s_connection_serves_on(redis_client: Any) -> None:
    redis_client.set("not-a-stream", "x")
    connection = redis_client.client_id()
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        bounded_range(redis_client, "XRANGE", "not-a-stream", "-", "+", 1, 1000)
    assert redis_client.client_id() == connection
    assert bounded_range(redis_client, "XRANGE", "no-such-stream", "-", "+", 1, 1000) == []


def test_a_large_entry_is_not_received_whole_and_its_connection_is_closed(
    redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bytes taken from the socket stay near the budget (one READ_SIZE past it at most, and
    headers), whatever the entry's size, without redis-py's private socket."""
    body = b"x" * (8 * 1024 * 1024)
    [entry_id] = [redis_client.xadd(STREAM, {"height": 1, "body": body})]
    replies: list[Any] = []

    class Counted(bounded_range_module._Reply):
        def __init__(self, sock: Any) -> None:
            super().__init__(sock)
            replies.append(self)

    monkeypatch.setattr(bounded_range_module, "_Reply", Counted)
    clients = len(redis_client.client_list())
    assert bounded_range(redis_client, "XRANGE", STREAM, "-", "+", 1, 1024 * 1024) == [[entry_id, []]]
    [reply] = replies
    assert reply.received <= 1024 * 1024 + READ_SIZE + 1024
    assert len(redis_client.client_list()) == clients  # its own connection is closed


def test_it_signs_in_as_the_client_s_user_and_is_refused_what_that_user_may_not_read(
    redis_client: Any, redis_server: RedisServer
) -> None:
    """A connection of its own signs in with the client's user and password, as the client's do:
    it reads what that user may read, a NOPERM is raised, and a wrong password is refused."""
    redis_client.xadd(STREAM, {"height": 1, "body": b"a"})
    redis_client.xadd("other:stream", {"height": 1})
    redis_client.acl_setuser(
        "reader", enabled=True, passwords=["+secret-pw"], keys=["vledger:*"], commands=["+xrange", "+xrevrange"]
    )
    try:
        url = redis_server.url.replace("redis://", "redis://reader:secret-pw@")
        reader = connect(url)
        assert [fields for _, fields in bounded_range(reader, "XRANGE", STREAM, "-", "+", 5, 1000)] == [
            [b"height", b"1", b"body", b"a"]
        ]
        with pytest.raises(redis.exceptions.NoPermissionError):
            bounded_range(reader, "XRANGE", "other:stream", "-", "+", 5, 1000)
        wrong = connect(redis_server.url.replace("redis://", "redis://reader:wrong@"))
        with pytest.raises(redis.exceptions.AuthenticationError):
            bounded_range(wrong, "XRANGE", STREAM, "-", "+", 5, 1000)
    finally:
        redis_client.acl_deluser("reader")
