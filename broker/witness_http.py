"""The HTTP side of feeding an outside witness: one add-checkpoint POST (c2sp.org/tlog-witness).

A plain ``http.client`` request with one deadline for the whole of it: connecting, sending,
the status line, the headers and the body must all be done within ``timeout`` seconds, however
the witness spaces its bytes (a byte every few seconds keeps a per-read timeout from ever
firing). No redirects followed (a witness's URL is the operator's, from the cluster file,
never a client's), and a body read only up to ``max_bytes``: a witness that sends more is not one.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from typing import Any

from ..node.errors import WitnessRequestError
from ..node.outside import MAX_REPLY_BYTES, WitnessReply

ADD_CHECKPOINT = "/add-checkpoint"
USER_AGENT = "vledger-witness-feeder"


class _DeadlineReader(io.RawIOBase):
    """The socket's bytes, each receive given only what is left until the deadline."""

    def __init__(self, sock: socket.socket, deadline: float, host: str) -> None:
        self._sock = sock
        self._deadline = deadline
        self._host = host

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._sock.settimeout(_left(self._deadline, self._host))
        return self._sock.recv_into(buffer)


def _left(deadline: float, host: str) -> float:
    """The seconds left until ``deadline``; TimeoutError once none are."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"{host}: no whole answer within the deadline")
    return left


def _connect(host: str, port: int, context: ssl.SSLContext | None, deadline: float) -> socket.socket:
    """A socket connected to the witness, its TLS handshake done with ``context``, all by
    ``deadline``: http.client gives the connection and then the handshake a timeout each, so
    a witness slow to accept (a full accept queue: the SYN sent again a second later) had the
    whole timeout again for its handshake."""
    sock = _connect_tcp(host, port, deadline)
    if context is None:
        return sock
    try:
        sock.settimeout(_left(deadline, host))  # CPython bounds a whole handshake by the socket's timeout
        return context.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


def _connect_tcp(host: str, port: int, deadline: float) -> socket.socket:
    """A TCP connection to ``host`` by ``deadline``: its name resolved within it (:func:`_resolve`),
    then each address tried with an even share of what is left, the time an address that drops
    the SYN takes not taken from the next (socket.create_connection gave each the whole rest)."""
    addresses = _resolve(host, port, deadline)
    error = OSError(f"{host}: no address to connect to")
    for i, (family, kind, proto, _, address) in enumerate(addresses):
        share = _left(deadline, host) / (len(addresses) - i)
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(share)
            sock.connect(address)
            return sock
        except OSError as e:
            sock.close()
            error = e
    raise error


def _resolve(host: str, port: int, deadline: float) -> list[Any]:
    """``host``'s addresses by ``deadline``. getaddrinfo takes no timeout (a resolver that does not
    answer holds it for its own retries, seconds each), so a name is looked up on a thread of
    its own, waited for until the deadline (the lookup then ends alone); a literal address at once."""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    found: list[Any] = []
    done = threading.Event()

    def look_up() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as e:
            found.append(e)
        finally:
            done.set()

    threading.Thread(target=look_up, name=f"resolve-{host}", daemon=True).start()
    if not done.wait(_left(deadline, host)):
        raise TimeoutError(f"{host}: its name was not resolved within the deadline")
    if isinstance(found[0], OSError):
        raise found[0]
    return list(found[0])


class _DeadlineSocket:
    """What ``http.client.HTTPResponse`` reads from: ``makefile`` over a :class:`_DeadlineReader`."""

    def __init__(self, sock: socket.socket, deadline: float, host: str) -> None:
        self._reader = _DeadlineReader(sock, deadline, host)

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(self._reader)


def post_add_checkpoint(prefix: str, body: bytes, timeout: float, max_bytes: int = MAX_REPLY_BYTES) -> WitnessReply:
    """POST ``body`` to ``<prefix>/add-checkpoint`` and return the witness's answer.

    Raises OSError (http.client.HTTPException and TimeoutError included) when the witness
    cannot be reached or has not answered in full within ``timeout`` seconds of the start, and
    WitnessRequestError [bad_witness_message] when its body is over ``max_bytes``.
    """
    deadline = time.monotonic() + timeout
    url = urllib.parse.urlsplit(prefix + ADD_CHECKPOINT)
    host = url.hostname or ""
    conn: http.client.HTTPConnection
    context: ssl.SSLContext | None = None
    if url.scheme == "https":
        context = ssl.create_default_context()
        conn = http.client.HTTPSConnection(host, url.port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, url.port, timeout=timeout)
    try:
        conn.sock = _connect(host, conn.port, context, deadline)  # http.client sends over it: no connect() of its own
        conn.sock.settimeout(_left(deadline, host))  # sendall's timeout is for all of it
        conn.request("POST", url.path, body, {"Content-Type": "text/plain", "User-Agent": USER_AGENT})
        response = http.client.HTTPResponse(_DeadlineSocket(conn.sock, deadline, host), method="POST")  # type: ignore[arg-type]
        try:
            response.begin()
            data = response.read(max_bytes + 1)
        finally:
            response.close()
        content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
        status = response.status
    except http.client.HTTPException as e:
        raise OSError(f"{host}: {e!r}") from e
    finally:
        conn.close()
    if len(data) > max_bytes:
        raise WitnessRequestError(f"the witness at {host} answered more than {max_bytes} bytes")
    return WitnessReply(status, content_type, data)
