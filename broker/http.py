"""HTTP plumbing (aiohttp) shared by the public gateway and every process's health port.

* :func:`json_errors`, a middleware: every failure is a JSON body ``{"error": {"code", "message"}}``
  with a stable code of docs/PROTOCOL.md and a 4xx status, never an HTML page or a traceback;
  a bug is a 500 with the code ``error``, logged here, its details kept out of the answer.
* :class:`HttpThread`: an aiohttp application served from a thread of its own (its own event
  loop), so that the node processes, which are threads around ZeroMQ sockets, can add one.
  Each connection passes :class:`ConnectionGuard` (config ``[http]``): a deadline on every
  request's head, an idle keep-alive timeout, and caps on open connections per client address
  and in all, which aiohttp alone does not have (a client sending its headers a byte at a time
  held a connection for ever, and ~20k such held the process's file limit).
* :func:`health_app`: ``/healthz`` (the process is alive), ``/readyz`` (every readiness check
  passes: store open, Redis reachable, copy current) and ``/metrics`` (Prometheus text).
* :func:`from_this_host`, :func:`check_local_host`: what only the local operator may read (a
  loopback server's metrics, a loopback gateway's logs) is answered only to a request whose
  ``Host`` names a loopback address too and that carries no reverse proxy's header: a web page
  the operator opens whose name an attacker points at 127.0.0.1 (DNS rebinding) sends its own
  name; a proxy sends its public name or a loopback one, and (configured as most are) a
  ``Forwarded``, ``X-Forwarded-For`` or ``Via`` header.

aiohttp rather than ``http.server``: one event loop serves thousands of idle Server-Sent
Events connections and keeps up with a cache's tile requests (README, "Public HTTP gateway").
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import redis
from aiohttp import HttpVersion10, HttpVersion11, web
from aiohttp import __version__ as aiohttp_version
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.http_parser import RawRequestMessage
from aiohttp.web_request import BaseRequest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from ..config.cluster import HttpSettings
from ..node.errors import BadRequestError, VledgerError
from ..node.storefile import damaged_file
from .file_budget import FileBudget, connection_cap, process_budget
from .redis_functions import FunctionsMissingError

log = logging.getLogger(__name__)
START_TIMEOUT = 10.0  # seconds: binding a port never takes longer unless something is wrong
SHUTDOWN_TIMEOUT = 3.0  # seconds open requests get to finish when the server stops
READ_VERBS = frozenset(("GET", "HEAD"))
ALLOWED = "GET, HEAD"
NOT_READ_VERB = "only GET and HEAD are served: this is read-only"
SERVER = "vledger"  # the Server header: aiohttp's named its version and Python's to anyone
# A refused connection gets its 503, then up to this long for the client to close first: closing
# with the client's request unread would reset the connection and could lose the answer.
REFUSAL_LINGER = 1.0
REFUSALS_LINGERING = 256  # past this many lingering at once, a refused connection is closed at once
# Connections the kernel queues before the loop accepts them: aiohttp's TCPSite's. 1,024 was
# tried against a burst of 3,000 connects (bench/slowloris.py): the prober's first answer still
# took 8.9 s (8.3 s with 128), so no gain.
LISTEN_BACKLOG = 128

# The HTTP status of each code a read can fail with; any other VledgerError is a 400.
STATUS_OF_CODE: Mapping[str, int] = {
    "not_found": 404,
    "no_such_ledger": 404,
    "bad_tree_size": 404,
    "too_large": 413,
    "store_error": 503,
    "store_closed": 503,
    "store_damaged": 503,
    "tree_mismatch": 500,
}
_REASON_CODE = {404: "not_found", 405: "bad_request", 413: "too_large"}
# What a route reads from Redis (tallies, alerts, heights, epochs) failed to arrive: Redis was
# stopped, paused or too loaded to answer within the client's timeout, or refused the read.
# The moment's, not a bug's: 503 `unavailable`, retried, never 500 (ob32's /tally under load).
UNAVAILABLE_STATUS = 503
REDIS_WARN_SECONDS = 60.0  # at most one log line a minute while Redis stays away, not one a request
_redis_warned_at = [-REDIS_WARN_SECONDS]

# The text format PROTOCOL 15.3 names, which generate_latest writes (its names escaped to
# underscores, as 0.0.4 has them): CONTENT_TYPE_LATEST followed the library (1.0.0 in 0.26).
METRICS_CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

Check = Callable[[], str | None]  # None when ready, else the reason it is not
Details = Callable[[], Mapping[str, Any]]  # more fields of a /readyz body, beside "ok" and "checks"


class _OneLineRefusals(logging.Filter):
    """aiohttp logs every request it cannot parse (a header over 8,190 bytes, a bad request
    line) with a traceback at ERROR, and answers it 400 itself: on the public gateway anyone
    could fill the log that way. Such a record becomes one DEBUG line; others pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            reason = str(error.message).strip().splitlines()[0][:200] if error.message else type(error).__name__
            record.msg, record.args = "%s: %s", (record.getMessage(), reason)
            record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
            record.exc_info = record.exc_text = None
        return True


# The server side of each connection logs here instead of aiohttp's "aiohttp.server".
protocol_log = logging.getLogger(__name__ + ".protocol")
protocol_log.addFilter(_OneLineRefusals())


def error_response(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    kind: type[web.Response] = web.Response,
) -> web.Response:
    """The one error shape: ``{"error": {"code": code, "message": message}}``, never cached
    (a ``kind`` of response, web.Response's subclass, when given)."""
    body = {"error": {"code": code, "message": message}}
    shown = {"Cache-Control": "no-store", "Server": SERVER, "X-Content-Type-Options": "nosniff", **(headers or {})}
    return kind(text=json.dumps(body), status=status, headers=shown, content_type="application/json")


class _Lingering(web.Response):
    """A refusal of a request that could not be read, after which its connection lingers
    (GuardedHandler._linger) rather than closes with the client's bytes unread."""

    linger: Callable[[], None] | None = None

    async def write_eof(self, data: bytes = b"") -> None:
        await super().write_eof(data)
        if self.linger is not None:
            self.linger()


async def _plain_headers(_: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER
    response.headers["X-Content-Type-Options"] = "nosniff"  # each answer is read as its Content-Type says


def plain_headers(app: web.Application) -> web.Application:
    """``app`` answering with :data:`SERVER` as its Server header and ``nosniff`` (PROTOCOL 15)."""
    app.on_response_prepare.append(_plain_headers)
    return app


def json_response(value: Any, *, cache: str = "no-cache", status: int = 200) -> web.Response:
    """``value`` as compact JSON with the given Cache-Control."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return web.Response(text=text, status=status, content_type="application/json", headers={"Cache-Control": cache})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Set on a request whose line named no HTTP version (HTTP/0.9): aiohttp served it, its answer
# headed "HTTP/0.9 200 OK" with headers, which that version has neither of (outsider34 #8).
_HTTP09 = web.RequestKey("vledger.http09", bool)
HTTP09_REFUSED = "HTTP/0.9 is not served (a request line without a version): send HTTP/1.0 or HTTP/1.1"
# Likewise a request line naming HTTP/2 or later in HTTP/1 framing: answered "HTTP/2.0 200 OK"
# in HTTP/1 framing, which no client of that version reads (outsider o16, nit 8).
_HTTP2 = web.RequestKey("vledger.http2", bool)
HTTP2_REFUSED = "HTTP/2 and later are not served on this port: send HTTP/1.0 or HTTP/1.1"
# The refusals made before any route (PROTOCOL 15) carry it whatever their path.
ANY_ORIGIN = {"Access-Control-Allow-Origin": "*"}


def _as_http10(made: Callable[..., BaseRequest]) -> Callable[..., BaseRequest]:
    """A request factory as ``made``, but a request of HTTP/0.9 is made one of HTTP/1.0, and one
    naming a major version from 2 on one of HTTP/1.1, that closes its connection, marked for
    :func:`_refuse_http09`: an answer written in a version with a status line the client may
    read, the only refusal HTTP can say. (aiohttp's parser refuses HTTP/1.x past 1.1 itself.)"""

    def request_of(message: RawRequestMessage, *args: Any) -> BaseRequest:
        if message.version.major >= 2:
            request = made(message._replace(version=HttpVersion11, should_close=True), *args)
            request[_HTTP2] = True
            return request
        if message.version >= HttpVersion10:
            return made(message, *args)
        request = made(message._replace(version=HttpVersion10, should_close=True), *args)
        request[_HTTP09] = True
        return request

    return request_of


@web.middleware
async def _refuse_http09(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse the versions :func:`_as_http10` marked, and a percent-escape in a path (PROTOCOL
    15): no route's name needs one, and a decoded one gave a resource a second spelling
    (``/ledgers/%7a%61%6b%61%74/checkpoint`` served as ``/ledgers/zakat/checkpoint``)."""
    # Refused before any route, as a head that cannot be parsed (GuardedHandler.handle_error):
    # a refusal that says nothing may be read by any origin, whatever its path (outsider o19 F6).
    if request.get(_HTTP09):
        return error_response(400, "bad_request", HTTP09_REFUSED, ANY_ORIGIN)
    if request.get(_HTTP2):
        return error_response(505, "bad_request", HTTP2_REFUSED, ANY_ORIGIN)
    if "%" in request.raw_path.partition("?")[0]:
        message = f"{request.raw_path[:100]!r}: a path is spelt without percent-escapes"
        return error_response(400, "bad_request", message, ANY_ORIGIN)
    return await handler(request)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every refusal as JSON: unknown paths, other verbs, VledgerErrors, bugs."""
    if request.method not in READ_VERBS:
        # RFC 9110 15.5.6: a 405 must say which methods the resource has.
        return error_response(
            405, "bad_request", f"{request.method} is not served: this is read-only (GET, HEAD)", {"Allow": ALLOWED}
        )
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        # aiohttp's static route answers a directory (``/static/``) 403: nothing here is
        # forbidden to one and open to another, so it is a path that is no route (PROTOCOL 15).
        status = 404 if e.status == 403 else e.status
        code = _REASON_CODE.get(status, "bad_request")
        message = "no such path" if status == 404 else e.reason
        return error_response(status, code, message)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except redis.RedisError as e:
        if _redis_away(e):
            return _redis_unavailable(request, e)
        log.exception("%s %s failed", request.method, request.path[:200])
        return error_response(500, "error", "internal error; the server logged it")
    except Exception as e:
        # Before VledgerError: a StoreError raised from a malformed file (a reader first opened
        # after the damage: "not a vledger store: ... malformed") is damage too, not store_error.
        damaged = damaged_file(e)
        if damaged is not None:  # the store it reads is malformed: no bug of ours, and no passing fault
            log.error("%s %s: the store's file is damaged: %s", request.method, request.path[:200], damaged)
            message = f"the store this server reads is damaged ({damaged}): its node raises store_damaged"
            return error_response(STATUS_OF_CODE["store_damaged"], "store_damaged", message)
        if isinstance(e, VledgerError):
            return error_response(STATUS_OF_CODE.get(e.code, 400), e.code, e.message)
        log.exception("%s %s failed", request.method, request.path[:200])
        return error_response(500, "error", "internal error; the server logged it")


# Replies of a server that is there but cannot serve now; any other error reply (WRONGTYPE, a
# function's error) or a client-side DataError is damage or a bug: 500, its traceback logged.
_AWAY_REPLIES = ("OOM", "READONLY", "NOPERM", "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


# redis-py raises these replies as their own classes, the code stripped from the message
# (review r21 F2): the text check alone never matched them.
_AWAY_ERRORS = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.NoPermissionError,
    redis.exceptions.MasterDownError,
    FunctionsMissingError,  # Redis lost the functions library: the loader loads it again
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)


def _redis_away(error: redis.RedisError) -> bool:
    if isinstance(error, _AWAY_ERRORS):
        return True
    return isinstance(error, redis.ResponseError) and str(error).startswith(_AWAY_REPLIES)


def _redis_unavailable(request: web.Request, error: redis.RedisError) -> web.Response:
    """503 ``unavailable`` for a read Redis did not answer; its reason is logged, not shown."""
    now = time.monotonic()
    if now - _redis_warned_at[0] >= REDIS_WARN_SECONDS:
        _redis_warned_at[0] = now
        log.warning(
            "%s %s: Redis unavailable (%s: %s)", request.method, request.path[:200], type(error).__name__, error
        )
    failed = "did not answer in time" if isinstance(error, redis.TimeoutError) else "could not be read"
    message = f"Redis, which holds what this route reads, {failed}: retry later"
    return error_response(UNAVAILABLE_STATUS, "unavailable", message, {"Retry-After": "1"})


def address_key(peer: Any) -> str:
    """The client address a connection counts against: an IPv4 address, an IPv6 address's /64
    (one host or home network is given a whole /64, so counting single addresses would cap
    nothing), an IPv4-mapped IPv6 address as its IPv4 address; anything else as its text."""
    host = peer[0] if isinstance(peer, tuple) and peer else peer
    try:
        address = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return str(host)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _refusal(message: str) -> bytes:
    body = json.dumps({"error": {"code": "throttled", "message": message}}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
        f"Retry-After: 1\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class ConnectionGuard:
    """The counts behind ``[http]``'s caps, for one listening port (its event loop's thread only).

    :meth:`admit` takes a place for a new connection or says why there is none; :meth:`release`
    gives it back. The cap in all is ``max_connections``, lowered to the process's file limit
    less ``FILES_KEPT`` (broker/file_budget.py, logged once) so that the cap, not EMFILE, is what
    a flood meets; each admitted connection also holds a place of the process's ``budget``,
    which all its guards share.
    """

    def __init__(self, settings: HttpSettings, name: str = "http", budget: FileBudget | None = None) -> None:
        self.settings = settings
        self.header_timeout = settings.header_timeout_ms / 1000
        self.idle_timeout = settings.idle_timeout_ms / 1000
        self.per_address = settings.max_connections_per_address
        self.most = connection_cap(name, settings.max_connections)
        self.budget = budget if budget is not None else process_budget()
        self.open = 0
        self.by_address: Counter[str] = Counter()
        self.refused = 0  # connections answered 503 since the start
        self.late = 0  # connections closed for a request head not complete in time
        self.lingering: set[asyncio.Transport] = set()  # refused connections given time to close
        # Connections whose client does not take its answer (the transport paused our writes),
        # by address: what they leave unread is bounded per address and in all.
        self.stalled: dict[str, set[asyncio.Transport]] = {}
        self.unread_closed = 0  # connections closed for leaving too much unread, or for too long

    def admit(self, address: str) -> str | None:
        """Take a place for a connection from ``address``: None, or the reason it is refused."""
        if self.by_address[address] >= self.per_address:
            return f"too many open connections from this address (at most {self.per_address})"
        if self.open >= self.most:
            return f"too many open connections (at most {self.most})"
        if not self.budget.take():
            return f"too many open connections (at most {self.budget.total})"  # on all the process's ports
        self.open += 1
        self.by_address[address] += 1
        return None

    def stall(self, address: str, transport: asyncio.Transport) -> tuple[str, asyncio.Transport] | None:
        """``transport``'s client stopped taking its answer: None while what the stalled
        connections leave unread stays within the caps, else why, and which connection is to be
        closed: this one past its address's cap; past the cap in all, the largest of the address
        that leaves the most unread (closing the one that just paused let a few addresses that
        hold the cap pin it, and every other client's large answer was then cut)."""
        self.stalled.setdefault(address, set()).add(transport)
        mine = sum(t.get_write_buffer_size() for t in self.stalled[address])
        if mine > self.settings.max_unread_bytes_per_address:
            reason = f"{mine} bytes unread by this address (at most {self.settings.max_unread_bytes_per_address})"
            return reason, transport
        by_address = {a: sum(t.get_write_buffer_size() for t in held) for a, held in self.stalled.items()}
        total = sum(by_address.values())
        if total > self.settings.max_unread_bytes:
            most = max(by_address, key=lambda a: by_address[a])
            victim = max(self.stalled[most], key=lambda t: t.get_write_buffer_size())
            return f"{total} bytes unread in all (at most {self.settings.max_unread_bytes})", victim
        return None

    def unstall(self, address: str, transport: asyncio.Transport) -> None:
        held = self.stalled.get(address)
        if held is not None:
            held.discard(transport)
            if not held:
                del self.stalled[address]

    def unread(self) -> int:
        """Bytes written to stalled connections and not yet sent."""
        return sum(t.get_write_buffer_size() for held in self.stalled.values() for t in held)

    def release(self, address: str) -> None:
        self.budget.give()
        self.open -= 1
        self.by_address[address] -= 1
        if not self.by_address[address]:
            del self.by_address[address]


class GuardMetrics(Collector):
    """``vledger_http_connections`` (open now), ``vledger_http_connections_refused_total`` (answered
    503), ``vledger_http_heads_late_total`` (closed for a head not complete in time) and
    ``vledger_http_unread_closed_total`` (closed for answers left unread) of a port."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard

    def collect(self) -> Iterator[Metric]:
        guard = self.guard
        yield GaugeMetricFamily("vledger_http_connections", "open HTTP connections", value=guard.open)
        yield CounterMetricFamily(
            "vledger_http_connections_refused", "HTTP connections refused past a cap (503)", value=guard.refused
        )
        yield CounterMetricFamily(
            "vledger_http_heads_late", "HTTP connections closed for a request head late", value=guard.late
        )
        yield CounterMetricFamily(
            "vledger_http_unread_closed",
            "HTTP connections closed for leaving their answers unread (too many bytes, or too long)",
            value=guard.unread_closed,
        )


# aiohttp offers no public way to see what the head deadline needs: that a head was parsed, and
# that a request is being answered (RequestHandler's public members, 3.14: keep_alive, close,
# force_close, peername, sockname, ssl_context, keepalive_timeout). A middleware or a
# request_factory sees a request only once its handler starts and no longer once the handler
# returns, before the answer is written: a pipelined head arriving during a slow download would
# then start a deadline and cut the download. So GuardedHandler reads two of RequestHandler's
# slots, raised and set by aiohttp itself: the heads parsed on the connection (counted in
# data_received as the parser yields each) and whether one is being answered (from its handler's
# call to the end of its answer's write). Checked here, so that an aiohttp without them fails at
# import, not at a connection's first byte (tests/unit/broker/test_http.py pins them).
ASKED_OF_AIOHTTP = ("_request_count", "_request_in_progress")


def missing_from_aiohttp(handler_class: type = web.RequestHandler) -> list[str]:
    """The private RequestHandler slots GuardedHandler reads that ``handler_class`` lacks."""
    slots = {name for cls in handler_class.__mro__ for name in getattr(cls, "__slots__", ())}
    return [name for name in ASKED_OF_AIOHTTP if name not in slots]


if missing_from_aiohttp():
    raise ImportError(
        f"aiohttp {aiohttp_version}'s RequestHandler lacks {missing_from_aiohttp()}, which the head "
        "deadline of broker/http.py reads: install an aiohttp it was written for (3.14)"
    )


# aiohttp raises a bare BadHttpMessage past max_headers: only its message says so (pinned in
# tests/unit/broker/test_http.py).
_TOO_MANY_HEADERS = "Too many headers"


class GuardedHandler(web.RequestHandler):
    """aiohttp's handler of one connection, with :class:`ConnectionGuard`'s caps and the head deadline.

    The deadline runs from the connection's opening for its first request, and from the first
    byte after an answer for each later one (the idle time before it is aiohttp's keep-alive
    timeout); it ends when aiohttp has parsed a whole head. A connection still without a head
    then, and with no request being answered, is closed with no answer (as Go's
    ReadHeaderTimeout and nginx's client_header_timeout do). Bytes that come while a request is
    answered (a pipelined head) start no deadline: the idle timeout after the answer bounds them.
    """

    def __init__(self, manager: web.Server, *, loop: asyncio.AbstractEventLoop, guard: ConnectionGuard) -> None:
        super().__init__(
            manager,
            loop=loop,
            keepalive_timeout=guard.idle_timeout,
            logger=protocol_log,
            access_log=None,  # type: ignore[arg-type]  # no access log: what AppRunner(access_log=None) passes
        )
        self._guard = guard
        self._timers = loop  # ours: aiohttp's own reference to it is private
        self._address: str | None = None  # set once admitted
        self._refused: asyncio.Transport | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._heads_before = 0
        self._stalled: asyncio.Transport | None = None  # our transport, while the client does not read
        self._stall_timer: asyncio.TimerHandle | None = None
        self._draining = False  # a request could not be read: what follows is dropped
        self._lingering: asyncio.Transport | None = None  # our transport, after that request's refusal

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """A request aiohttp could not parse is refused as every other, in JSON (PROTOCOL 15): a
        method that is no HTTP method aiohttp knows (``FOO``) 405 as any other unserved method,
        anything else 400 [bad_request]. aiohttp's own answer was a text/plain page."""
        if status != 400 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        # As aiohttp logs it: _OneLineRefusals makes it one DEBUG line (anyone may send them).
        self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        # Whatever path it named (unparsed): a refusal that says nothing may be read by any origin.
        public = ANY_ORIGIN
        if isinstance(exc, BadHttpMethod):
            response = error_response(405, "bad_request", NOT_READ_VERB, {"Allow": ALLOWED, **public}, _Lingering)
        else:
            response = error_response(400, "bad_request", self._not_read(exc), public, _Lingering)
        assert isinstance(response, _Lingering)  # the kind asked for
        response.force_close()
        self._draining = True  # the rest of it is not parsed: read and dropped
        response.linger = self._linger
        return response

    def _not_read(self, exc: BaseException | None) -> str:
        """Why a request was not read, naming the limit of PROTOCOL 15 it broke where aiohttp
        tells which (outsider o15 #5b: a 2 MB header's 400 said only that it was not read)."""
        read = "the request is not HTTP/1.1 this server can read"
        if isinstance(exc, LineTooLong):  # the request line (max_line_size) or a header line (max_field_size)
            return f"{read}: a line of its head is over {max(self.max_line_size, self.max_field_size):,} bytes"
        if isinstance(exc, HttpProcessingError) and exc.message.startswith(_TOO_MANY_HEADERS):
            return f"{read}: its head has more than {self.max_headers} header lines"
        return read

    def _linger(self) -> None:
        """After the refusal of a request that could not be read: half-close the connection,
        drop what the client still sends, and close it once the client has (or after
        REFUSAL_LINGER). Closed at once, with the rest of a 2 MB header unread, the kernel
        reset it and the client lost the 400 (outsider34 #8), as a refused connection would."""
        tcp = self.transport
        if not isinstance(tcp, asyncio.Transport) or len(self._guard.lingering) >= REFUSALS_LINGERING:
            return  # aiohttp closes it as before
        self._guard.lingering.add(tcp)
        self._lingering = tcp
        self.transport = None  # aiohttp's loop then ends without closing it
        tcp.resume_reading()  # read (and drop) what it sends, even if aiohttp paused it
        try:
            if tcp.can_write_eof():
                tcp.write_eof()
        except OSError:  # the client is gone already: nothing to linger for
            tcp.close()
            return
        self._timers.call_later(REFUSAL_LINGER, tcp.close)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        address = address_key(transport.get_extra_info("peername"))
        reason = self._guard.admit(address)
        if reason is not None:
            self._refuse(transport, reason)
            return
        self._address = address
        sock = transport.get_extra_info("socket")
        if sock is not None:  # fixed, so that the unread caps count what a non-reader holds (see [http])
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._guard.settings.send_buffer_bytes)
        super().connection_made(transport)
        self._start_head_timer()

    def _refuse(self, transport: asyncio.BaseTransport, reason: str) -> None:
        guard = self._guard
        guard.refused += 1
        log.debug("refused a connection: %s", reason)
        tcp = transport if isinstance(transport, asyncio.Transport) else None
        if tcp is None or len(guard.lingering) >= REFUSALS_LINGERING:
            transport.close()
            return
        self._refused = tcp
        guard.lingering.add(tcp)
        tcp.write(_refusal(reason))
        if tcp.can_write_eof():
            tcp.write_eof()  # the client's EOF then closes it (aiohttp's eof_received: a transport closes on EOF)
        self._timers.call_later(REFUSAL_LINGER, tcp.close)

    def _start_head_timer(self) -> None:
        self._heads_before = self._request_count
        self._head_timer = self._timers.call_later(self._guard.header_timeout, self._head_late)

    def _head_late(self) -> None:
        self._head_timer = None
        # A head parsed since the timer started (bytes of a body may have started it) or a
        # request still being answered is no late head.
        if self._request_count == self._heads_before and not self._request_in_progress:
            self._guard.late += 1
            log.debug("closed a connection whose request head was not complete in %.1f s", self._guard.header_timeout)
            self.force_close()

    def data_received(self, data: bytes) -> None:
        if self._refused is not None or self._draining:
            return  # read and dropped: the 503 (or the 400) is on its way, the connection closing
        if self._head_timer is None and data and not self._request_in_progress:
            self._start_head_timer()
        super().data_received(data)
        if self._head_timer is not None and self._request_count != self._heads_before:
            self._head_timer.cancel()
            self._head_timer = None

    def pause_writing(self) -> None:
        """The transport holds more than its high-water mark unsent: the client is not reading.
        aiohttp then writes nothing more to it until :meth:`resume_writing`; but what was written
        stays in memory. Held past the caps on unread bytes, or with nothing of it taken for the
        idle timeout, the connection is closed and its buffer dropped."""
        super().pause_writing()
        transport = self.transport
        if self._address is None or transport is None:
            return
        self._stalled = transport
        over = self._guard.stall(self._address, transport)
        if over is not None:
            reason, victim = over
            if victim is transport:
                self._drop_unread(reason)
                return
            self._guard.unread_closed += 1  # another's: its connection_lost takes it off the stalled
            log.debug("closed a connection whose client does not read its answer: %s", reason)
            victim.abort()
        self._watch_unread(transport.get_write_buffer_size())

    def _watch_unread(self, unsent: int) -> None:
        self._stall_timer = self._timers.call_later(self._guard.idle_timeout, self._still_unread, unsent)

    def _still_unread(self, unsent: int) -> None:
        """The idle timeout since ``unsent`` bytes waited: a client that took some meanwhile is
        slow, not gone (a slow link drains a large answer below the low-water mark only after
        many such periods), and is given another; one that took none is closed."""
        self._stall_timer = None
        transport = self._stalled
        if transport is None:
            return
        now = transport.get_write_buffer_size()
        if now < unsent:
            self._watch_unread(now)
        else:
            self._drop_unread(f"nothing read in {self._guard.idle_timeout:.1f} s")

    def resume_writing(self) -> None:
        self._unstall()
        super().resume_writing()

    def _unstall(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if self._stalled is not None and self._address is not None:
            self._guard.unstall(self._address, self._stalled)
        self._stalled = None

    def _drop_unread(self, reason: str) -> None:
        self._stall_timer = None
        transport = self._stalled
        self._unstall()
        if transport is not None and not transport.is_closing():
            self._guard.unread_closed += 1
            log.debug("closed a connection whose client does not read its answer: %s", reason)
            transport.abort()  # close() would keep the unsent bytes until they are sent

    def connection_lost(self, exc: BaseException | None) -> None:
        self._unstall()
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._refused is not None:
            self._guard.lingering.discard(self._refused)
            self._refused = None
            return  # aiohttp never saw this connection
        if self._lingering is not None:
            self._guard.lingering.discard(self._lingering)
            self._lingering = None
        if self._address is not None:
            self._guard.release(self._address)
            self._address = None
            super().connection_lost(exc)


class HttpThread:
    """Serve ``app`` on ``host:port`` from a daemon thread with its own event loop.

    Every connection passes a :class:`ConnectionGuard` with ``settings`` (its caps and
    deadlines, ``[http]``'s defaults when None; the thread's ``guard``, whose counts go to
    ``registry`` when given: :class:`GuardMetrics`). :meth:`start` returns
    once the port is bound (``port`` then holds the bound port, useful with 0) and raises
    OSError when it cannot be; :meth:`stop` closes every connection.
    """

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        name: str = "http",
        settings: HttpSettings | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.app = app
        app[BOUND_TO_LOOPBACK] = _loopback_name(host)
        app.middlewares.insert(0, _refuse_http09)  # before any route or middleware reads it
        self.host = host
        self.port = port
        self.guard = ConnectionGuard(settings or HttpSettings(), name)
        if registry is not None:
            registry.register(GuardMetrics(self.guard))
        self._name = name
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)

    def start(self) -> HttpThread:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        try:
            future.result(START_TIMEOUT)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            raise
        log.info("%s listening on http://%s:%d/", self._name, self.host, self.port)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT, logger=protocol_log
        )
        await self._runner.setup()
        server = self._runner.server
        assert server is not None  # setup made it
        server.request_factory = _as_http10(server.request_factory)
        # Not a TCPSite: it would build aiohttp's own handler, which has no head deadline or caps.
        self._listener = await self._loop.create_server(
            lambda: GuardedHandler(server, loop=self._loop, guard=self.guard),
            self.host,
            self.port,
            reuse_address=True,
            backlog=LISTEN_BACKLOG,
        )
        if self.port == 0:  # the bound socket tells the port chosen
            self.port = self._listener.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        for transport in list(self.guard.lingering):
            transport.close()
        if self._runner is not None:
            await self._runner.cleanup()  # closes the connections aiohttp serves

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(START_TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT)
        self._loop.close()

    def __enter__(self) -> HttpThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_checks(checks: Mapping[str, Check]) -> dict[str, str | None]:
    """Each check's outcome: None when it passes, else its reason (a check that raises fails with its error)."""
    results: dict[str, str | None] = {}
    for name, check in checks.items():
        try:
            results[name] = check()
        except Exception as e:  # a probe answers; it never takes the process down
            results[name] = f"{type(e).__name__}: {e}"
    return results


def _loopback_name(host: str) -> bool:
    """Whether ``host`` (a Host header's name, its port removed) is a loopback address or ``localhost``."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):  # RFC 6761 6.3: loopback only
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


# RFC 9110 7.2: Host = uri-host [ ":" port ]; a name or an IPv4 address, or an IPv6 one in brackets.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::[0-9]{0,5})?")


def names_loopback(request: web.Request) -> bool:
    """Whether the request's Host names a loopback address (``127.0.0.1:8080``, ``[::1]``, ``localhost``).

    Only one Host header of the form host[:port] counts: ``localhost:80, evil.example`` (a list,
    which no browser sends) or two Host headers name no one host, so no loopback one either.
    """
    hosts = request.headers.getall("Host", [])
    found = _HOST.fullmatch(hosts[0]) if len(hosts) == 1 else None
    return found is not None and _loopback_name(found[1])


# Whether the HttpThread serving an application listens on a loopback address (its bind, not
# the address a connection reached: a server on 0.0.0.0 reached as 127.0.1.1 is no loopback server).
BOUND_TO_LOOPBACK = web.AppKey("bound_to_loopback", bool)
# What a reverse proxy adds (RFC 7239, the de-facto X-Forwarded-*, RFC 9110 7.6.3): a request
# that carries one came from elsewhere, whatever Host it names.
PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-IP", "Via")


def bound_to_loopback(request: web.Request) -> bool:
    """Whether the server that got the request listens on a loopback address."""
    return request.app.get(BOUND_TO_LOOPBACK, False)


def from_this_host(request: web.Request) -> bool:
    """Whether the request names a loopback address as its Host and went through no proxy that
    says so: the local operator's, as far as HTTP can tell (see the docstring)."""
    return names_loopback(request) and not any(name in request.headers for name in PROXY_HEADERS)


def check_local_host(request: web.Request) -> None:
    """BadRequestError if a server bound to a loopback address gets a request that is not
    :func:`from_this_host`: a DNS-rebinding page, which the browser lets read its "own" origin,
    or a reverse proxy's (see the docstring)."""
    if bound_to_loopback(request) and not from_this_host(request):
        host = request.headers.get("Host", "")[:100]
        raise BadRequestError(
            f"Host {host!r} (or a proxy's header) says this request is not from this host: a loopback "
            "server answers it only to 127.0.0.1, [::1] or localhost, not through a proxy"
        )


def add_health_routes(
    app: web.Application, checks: Mapping[str, Check], registry: CollectorRegistry, details: Details | None = None
) -> None:
    """``/healthz``, ``/readyz`` and ``/metrics`` on ``app`` (see the module's docstring); the
    fields ``details`` gives (a standby's follow restarts) are added to each ``/readyz`` body."""

    async def healthz(_: web.Request) -> web.Response:
        return json_response({"ok": True})

    async def readyz(_: web.Request) -> web.Response:
        # Checks may block on Redis for their timeout: off the event loop.
        results = await asyncio.get_running_loop().run_in_executor(None, run_checks, checks)
        ready = all(reason is None for reason in results.values())
        body = {**(details() if details is not None else {}), "ok": ready, "checks": results}
        return json_response(body, status=200 if ready else 503)

    async def metrics(request: web.Request) -> web.Response:
        check_local_host(request)
        body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE, "Cache-Control": "no-store"})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


def health_app(
    checks: Mapping[str, Check], registry: CollectorRegistry, details: Details | None = None
) -> web.Application:
    """An application with only the three probes, for a node's ``http_port``."""
    app = web.Application(middlewares=[json_errors])
    add_health_routes(app, checks, registry, details)
    return plain_headers(app)
