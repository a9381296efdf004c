"""A few Redis commands in one round trip, with less of redis-py around them than its Pipeline.

A home's outbox pass sends the same three commands every ``outbox_interval_ms`` (the ledger's
home, the append script, the holder height). redis-py's Pipeline spent more of the outbox
process's CPU than the round trip: a Pipeline object built and reset each time, each argument
encoded by a generator in Python, its observability and callback layers (profile of a lone
writer's puts, p30: 45 % of that process's samples holding the GIL). Here the commands go out
packed by hiredis's C packer on a connection of the client's own pool (so a Sentinel pool's
primary, TLS and the user sign-in stay as they are) under the connection's own retry policy,
as the Pipeline sent them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import hiredis
import redis

Command = Sequence[str | bytes | int | float]
_pack_command: Callable[[tuple[Any, ...]], bytes] = hiredis.pack_command  # its stub takes a tuple of one item


def pipelined(client: Any, commands: Sequence[Command], *, raise_on_error: bool = True) -> list[Any]:
    """The replies of ``commands`` sent together through ``client`` (a ``redis.Redis``), in
    order, raw as the server gave them (no redis-py response callbacks: each caller reads its
    own). Every reply is read before the first error reply is raised (a ResponseError, as
    Pipeline.execute raises it), so the connection goes back to the pool in step; a connection
    error drops the connection, retried as the client's policy says (the whole batch again:
    callers send only commands that may run twice). Without ``raise_on_error``, an error reply
    is returned in its command's place, for a caller that answers one command's error itself."""
    packed = [b"".join(_pack_command(tuple(command)) for command in commands)]
    pool = client.connection_pool
    connection = pool.get_connection()

    def send() -> list[Any]:
        connection.send_packed_command(packed)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(connection.read_response())
            except redis.exceptions.ResponseError as e:
                replies.append(e)
        return replies

    try:
        replies: list[Any] = connection.retry.call_with_retry(send, lambda error: connection.disconnect())
    except BaseException:
        connection.disconnect()  # a reply may be left half read: never hand that connection out again
        raise
    finally:
        pool.release(connection)
    for reply in replies:
        if raise_on_error and isinstance(reply, redis.exceptions.ResponseError):
            raise reply
    return replies
