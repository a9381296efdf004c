"""A stream range read under a byte budget, for a Redis user that may call no function (the gateway's).

A command's ``COUNT`` bounds entries, not bytes, and Redis sends an entry whole: one entry an
observer's Redis user added with a body of hundreds of megabytes was read whole on every gateway
request for that ledger's tally. Without a function nothing in Redis cuts an entry short or tells
its size without reading it (``MEMORY USAGE`` is the whole key's, and an entry added between it
and the read escapes it). But RESP announces each string's length before its bytes: the reply is
read here as it arrives, and the read stops before the first field that would take the fields
read past the budget, then drops the connection, the rest of the reply still in flight.
What this process receives is then at most the budget, the entries' ids and headers (COUNT
bounds them) and one socket read (READ_SIZE); Redis still copies the entry into its reply
buffer and writes what the socket buffers take before the close reaches it (the read by a function,
broker/tallies.py, spares it that).

redis-py reads a reply whole and keeps its socket private, so the read goes over a connection
of its own (:func:`_dedicated`), opened with the client's public settings (its pool's
``connection_kwargs``: address or Unix path, TLS files, user and password, database; a
Sentinel pool's primary through ``get_master_address``) and closed after the one command: a
reply left unread never reaches a connection the client's other calls share. It once read the
pool connection's ``_sock``, which any redis-py release may rename or wrap.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import redis
from redis.sentinel import SentinelConnectionPool

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

    def simple(self) -> None:
        """A status reply (+OK); an error is raised: AuthenticationError for a sign-in refused, else ResponseError."""
        line = self.line()
        if line.startswith(b"-"):
            message = line[1:].decode("utf-8", "replace")
            wrong = message.startswith(("WRONGPASS", "NOAUTH", "ERR AUTH"))
            raise (redis.exceptions.AuthenticationError if wrong else redis.exceptions.ResponseError)(message)
        if not line.startswith(b"+"):
            raise redis.exceptions.InvalidResponse(f"a status reply is {line[:40]!r}")

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
            sent = length + len(str(length)) + 5  # as RESP sends it, as tally_read counts it
            if total + sent > budget:
                # As tally_read's read: a larger entry alone is taken without its fields, so
                # that a reader moves past it; one that would pass what others took waits for the next read.
                raise _Cut(kept or [[entry_id, []]])
            total += sent
            fields.append(reply.string(length))
        kept.append([entry_id, fields])
    return kept


def _command(*args: Any) -> bytes:
    """``args`` as a RESP array of bulk strings, as every Redis client sends a command."""
    parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)


_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def _tls(options: dict[str, Any]) -> ssl.SSLContext:
    """The TLS context of redis-py's SSLConnection for ``options`` (its ``ssl_*`` arguments we set:
    the CA, a client certificate, the check of the server's name, on by default as there)."""
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"), capath=options.get("ssl_ca_path"))
    reqs = options.get("ssl_cert_reqs", "required")
    mode: ssl.VerifyMode = ssl.CERT_NONE if reqs is None else _CERT_REQS[reqs] if isinstance(reqs, str) else reqs
    context.check_hostname = bool(options.get("ssl_check_hostname", True)) and mode != ssl.CERT_NONE
    context.verify_mode = mode
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"), options.get("ssl_password"))
    return context


def _connect(pool: Any, options: dict[str, Any]) -> socket.socket:
    """A socket connected to ``pool``'s server (its primary's, for a Sentinel pool), TLS as its connections."""
    if options.get("path"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(options.get("socket_connect_timeout"))
            sock.connect(options["path"])
        except OSError:
            sock.close()
            raise
    else:
        if isinstance(pool, SentinelConnectionPool):
            host, port = pool.get_master_address()  # type: ignore[no-untyped-call]
        else:
            host, port = options.get("host", "localhost"), int(options.get("port", 6379))
        sock = socket.create_connection((host, port), options.get("socket_connect_timeout"))
        if issubclass(pool.connection_class, redis.SSLConnection):
            try:
                sock = _tls(options).wrap_socket(sock, server_hostname=host)
            except (OSError, ssl.SSLError):
                sock.close()
                raise
    sock.settimeout(options.get("socket_timeout"))
    return sock


@contextmanager
def _dedicated(client: Any) -> Iterator[_Reply]:
    """A connection of its own to ``client``'s server, signed in as the client signs in, for one
    command (the module says why); closed at the end, whatever was left unread."""
    pool = client.connection_pool
    options: dict[str, Any] = pool.connection_kwargs
    try:
        sock = _connect(pool, options)
    except (OSError, ssl.SSLError) as e:
        raise redis.exceptions.ConnectionError(f"cannot reach Redis for a bounded read: {e}") from e
    with closing(sock):
        reply = _Reply(sock)
        password, username = options.get("password"), options.get("username")
        if password is not None:
            _send(sock, _command("AUTH", *([username] if username else []), password))
            reply.simple()
        if options.get("db"):
            _send(sock, _command("SELECT", options["db"]))
            reply.simple()
        yield reply


def _send(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError as e:
        raise redis.exceptions.ConnectionError(f"cannot send to Redis: {e}") from e


def bounded_range(client: Any, command: str, key: str, start: str, end: str, count: int, budget: int) -> list[Any]:
    """``command`` (XRANGE or XREVRANGE) of the stream ``key`` from ``start`` to ``end``, at most
    ``count`` entries, as broker/tallies.py's tally_read reads it: [id, [field, value, ...]] each, cut
    short before the entry whose fields would pass ``budget`` bytes, an entry larger alone given
    as [id, []]. ``client`` is a ``redis.Redis``, whose server and user are read over a connection
    of this call's own (its connections are never used). Raises Redis errors (NoPermissionError
    for NOPERM, AuthenticationError when its sign-in is refused, ConnectionError)."""
    with _dedicated(client) as reply:
        _send(reply.sock, _command(command, key, start, end, "COUNT", count))
        try:
            return _entries(reply, budget)
        except _Cut as cut:
            return list(cut.args[0])
