"""A stream range read under a byte budget, for a Redis user that may run no script (the gateway's).

A command's ``COUNT`` bounds entries, not bytes, and Redis sends an entry whole: one entry an
observer's Redis user added with a body of hundreds of megabytes was read whole on every gateway
request for that ledger's tally. Without a script nothing in Redis cuts an entry short or tells
its size without reading it (``MEMORY USAGE`` is the whole key's, and an entry added between it
and the read escapes it). But RESP announces each string's length before its bytes: the reply is
read here as it arrives, and the read stops before the first field that would take the fields
read past the budget, then drops the connection, the rest of the reply still in flight.
What this process receives is then at most the budget, the entries' ids and headers (COUNT
bounds them) and one socket read (READ_SIZE); Redis still copies the entry into its reply
buffer and writes what the socket buffers take before the close reaches it (the scripted read,
broker/tallies.py, spares it that).
"""

from __future__ import annotations

import socket
from typing import Any

import redis

READ_SIZE = 64 * 1024  # bytes asked of the socket at a time


class _Cut(Exception):
    """The budget is reached inside the reply: what was read before is kept, the rest is left unread."""


class _Reply:
    """One RESP2 reply read from ``sock`` as it arrives, counting the bytes received."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.received = 0

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(READ_SIZE)
        except TimeoutError as e:  # socket.timeout: the client's socket_timeout passed
            raise redis.exceptions.TimeoutError(f"no reply from Redis in time: {e}") from e
        except OSError as e:
            raise redis.exceptions.ConnectionError(f"Redis's reply broke off: {e}") from e
        if not chunk:
            raise redis.exceptions.ConnectionError("Redis closed the connection in a reply")
        self.received += len(chunk)
        self.buffer += chunk

    def line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        found = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return found

    def header(self, kind: bytes) -> int:
        """The length a ``kind`` (``*`` array, ``$`` string) header announces; an error reply is raised."""
        line = self.line()
        if line.startswith(b"-"):
            message = line[1:].decode("utf-8", "replace")
            error = (
                redis.exceptions.NoPermissionError if message.startswith("NOPERM") else redis.exceptions.ResponseError
            )
            raise error(message)
        if line[:1] != kind or not line[1:].isdigit():
            raise redis.exceptions.InvalidResponse(f"a stream range's reply has {line[:40]!r} for a {kind!r} header")
        return int(line[1:])

    def string(self, length: int) -> bytes:
        while len(self.buffer) < length + 2:
            self._fill()
        found = bytes(self.buffer[:length])
        del self.buffer[: length + 2]
        return found


def _entries(reply: _Reply, budget: int) -> list[list[Any]]:
    """The entries of an XRANGE / XREVRANGE reply as [id, [field, value, ...]] until their fields
    as sent (each string with its framing) would pass ``budget``; the first entry larger alone
    as [id, []]. _Cut carries them when the reply is left unread from there."""
    kept: list[list[Any]] = []
    total = 0
    for _ in range(reply.header(b"*")):
        if reply.header(b"*") != 2:
            raise redis.exceptions.InvalidResponse("a stream entry is not [id, fields]")
        entry_id = reply.string(reply.header(b"$"))
        fields: list[bytes] = []
        for _ in range(reply.header(b"*")):
            length = reply.header(b"$")
            sent = length + len(str(length)) + 5  # as RESP sends it, as the script counts it
            if total + sent > budget:
                # As the script's read: a larger entry alone is taken without its fields, so
                # that a reader moves past it; one that would pass what others took waits for the next read.
                raise _Cut(kept or [[entry_id, []]])
            total += sent
            fields.append(reply.string(length))
        kept.append([entry_id, fields])
    return kept


def bounded_range(client: Any, command: str, key: str, start: str, end: str, count: int, budget: int) -> list[Any]:
    """``command`` (XRANGE or XREVRANGE) of the stream ``key`` from ``start`` to ``end``, at most
    ``count`` entries, as broker/tallies.py's script reads it: [id, [field, value, ...]] each, cut
    short before the entry whose fields would pass ``budget`` bytes, an entry larger alone given
    as [id, []]. ``client`` is a ``redis.Redis`` of bytes replies; the connection is dropped when
    the reply is left unread. Raises Redis errors (NoPermissionError for NOPERM)."""
    pool = client.connection_pool
    connection = pool.get_connection()
    done = False
    try:
        connection.send_command(command, key, start, end, "COUNT", count)
        # The parser of redis-py would read the reply whole: it is read from the socket itself.
        reply = _Reply(connection._sock)
        try:
            entries = _entries(reply, budget)
        except _Cut as cut:
            entries = cut.args[0]
        except redis.exceptions.ResponseError:
            done = not reply.buffer  # an error reply ends the reply: the connection serves on
            raise
        else:
            done = not reply.buffer
        return entries
    finally:
        if not done:
            connection.disconnect()
        pool.release(connection)
