"""The shared HTTP plumbing: what a request aiohttp cannot parse leaves in the log; the head
deadline, idle timeout and connection caps every HTTP port has (real sockets)."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry

from vledger.broker.http import (
    ASKED_OF_AIOHTTP,
    BOUND_TO_LOOPBACK,
    HTTP09_REFUSED,
    HTTP2_REFUSED,
    ConnectionGuard,
    HttpThread,
    address_key,
    health_app,
    json_errors,
    missing_from_aiohttp,
    names_loopback,
    protocol_log,
)
from vledger.config.cluster import HttpSettings
from vledger.node.errors import StoreError
from vledger.tests.sqlite_faults import malformed

DEADLINE = 5.0


def test_an_unparsable_request_is_one_debug_line_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    # aiohttp logged each one with a traceback at ERROR: anyone could flood a gateway's log.
    caplog.set_level(logging.DEBUG, logger=protocol_log.name)
    with HttpThread(web.Application(middlewares=[json_errors]), "127.0.0.1", 0) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
            assert conn.recv(64).startswith(b"HTTP/1.0 400")
        deadline = time.monotonic() + DEADLINE
        while not [r for r in caplog.records if r.name == protocol_log.name] and time.monotonic() < deadline:
            time.sleep(0.01)
    records = [r for r in caplog.records if r.name == protocol_log.name]
    assert len(records) == 1
    assert records[0].levelno == logging.DEBUG and records[0].exc_info is None
    assert "8190" in records[0].getMessage() and "\n" not in records[0].getMessage()


def test_any_other_error_keeps_its_level_and_traceback() -> None:
    try:
        raise ValueError("a bug")
    except ValueError:
        bug = logging.LogRecord(protocol_log.name, logging.ERROR, __file__, 1, "Error handling", (), sys.exc_info())
    assert protocol_log.filters  # else the loop below would pass having checked nothing
    for f in protocol_log.filters:
        assert isinstance(f, logging.Filter) and f.filter(bug)
    assert bug.levelno == logging.ERROR and bug.exc_info is not None


def test_the_filter_reads_aiohttp_s_parse_error() -> None:
    # The class the filter matches is what aiohttp raises for an overlong header line.
    try:
        raise LineTooLong(b"x" * 10, 8190)
    except LineTooLong:
        record = logging.LogRecord(protocol_log.name, logging.ERROR, __file__, 1, "Error handling", (), sys.exc_info())
    for f in protocol_log.filters:
        assert isinstance(f, logging.Filter) and f.filter(record)
    assert record.levelno == logging.DEBUG and record.exc_info is None


def _answer_until_closed(conn: socket.socket) -> bytes:
    answer = b""
    while chunk := conn.recv(65536):
        answer += chunk
    return answer


@pytest.mark.parametrize(
    ("request_line", "status_line", "message"),
    [
        # outsider34 #8: "GET /healthz" (HTTP/0.9) was answered "HTTP/0.9 200 OK" with headers, a
        # status line and headers that version has not: now a refusal any HTTP client reads.
        (b"GET /", b"HTTP/1.0 400 ", HTTP09_REFUSED),
        # outsider o16 nit 8: "GET /healthz HTTP/2.0" was answered "HTTP/2.0 200 OK" in HTTP/1 framing.
        (b"GET / HTTP/2.0", b"HTTP/1.1 505 ", HTTP2_REFUSED),
    ],
    ids=["http-0.9", "http-2"],
)
def test_a_request_line_of_a_version_not_served_is_refused_in_http_1_and_closed(
    request_line: bytes, status_line: bytes, message: str
) -> None:
    with _server() as server, _connect(server) as conn:
        conn.sendall(request_line + b"\r\nHost: t\r\n\r\n")
        head, _, body = _answer_until_closed(conn).partition(b"\r\n\r\n")
        assert head.startswith(status_line), head
        assert json.loads(body)["error"] == {"code": "bad_request", "message": message}
        # Refused before any route, as a head that cannot be parsed: readable by any origin (PROTOCOL 15,
        # outsider o19 F6: these two lacked the header the unparsable head's 400 has).
        assert b"\r\nAccess-Control-Allow-Origin: *" in head, head
        with _connect(server) as old, _connect(server) as kept:  # HTTP/1.0 and 1.1 are served as before
            old.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert _answer_until_closed(old).startswith(b"HTTP/1.0 200 ")
            assert _get(kept) == (200, b"ok")


def test_a_percent_escape_in_a_path_is_refused_on_every_route() -> None:
    # outsider o16 nit 8: /ledgers/%7a%61%6b%61%74/checkpoint was served as /ledgers/zakat/...:
    # a second spelling of a resource; a query's escapes are the route's to judge.
    with _server() as server, _connect(server) as conn:
        conn.sendall(b"GET /%6f HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        head, _, body = _answer_until_closed(conn).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), head
        assert json.loads(body)["error"]["code"] == "bad_request"
        assert b"\r\nAccess-Control-Allow-Origin: *" in head, head  # before any route, as above
        with _connect(server) as kept:
            kept.sendall(b"GET /?x=%41 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert _answer_until_closed(kept).startswith(b"HTTP/1.1 200 ")


def test_a_2_mb_header_gets_its_400_whole_not_a_reset() -> None:
    # outsider34 #8: the 400 was written and the connection closed with the rest of the header
    # unread, so the kernel reset it: a client still sending got ECONNRESET and no answer.
    with _server() as server, _connect(server) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 2_000_000 + b"\r\n\r\n")
        head, _, body = _answer_until_closed(conn).partition(b"\r\n\r\n")  # no ConnectionResetError
        assert head.startswith(b"HTTP/1.0 400 "), head
        assert b"\r\nAccess-Control-Allow-Origin: *" in head, head
        assert json.loads(body)["error"]["code"] == "bad_request"
        _wait(lambda: not server.guard.lingering and server.guard.open == 0)  # closed, its place given back
        with _connect(server) as again:  # the server goes on as before
            assert _get(again) == (200, b"ok")


@pytest.mark.parametrize(
    ("head", "limit"),
    [
        (
            b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 2_000_000 + b"\r\n\r\n",
            "a line of its head is over 8,190 bytes",
        ),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", "a line of its head is over 8,190 bytes"),
        (
            b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: 1\r\n" % n for n in range(200)) + b"\r\n",
            "more than 128 header lines",
        ),
    ],
    ids=["header-line", "request-line", "header-lines"],
)
def test_a_head_over_a_limit_is_refused_naming_the_limit(head: bytes, limit: str) -> None:
    # outsider o15 #5b: the 400 said only "the request is not HTTP/1.1 this server can read";
    # PROTOCOL 15 names the limits (8,190 bytes a line, 128 header lines).
    with _server() as server, _connect(server) as conn:
        conn.sendall(head)
        head_, _, body = _answer_until_closed(conn).partition(b"\r\n\r\n")
        assert head_.startswith(b"HTTP/1.0 400 "), head_
        error = json.loads(body)["error"]
        assert error["code"] == "bad_request" and error["message"].endswith(limit), error


def test_a_malformed_head_within_the_limits_names_none() -> None:
    with _server() as server, _connect(server) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n")
        error = json.loads(_answer_until_closed(conn).partition(b"\r\n\r\n")[2])["error"]
        assert error["message"] == "the request is not HTTP/1.1 this server can read", error


# --- the head deadline, the idle timeout and the connection caps ([http]) ------------------------

HEAD_S = 0.4  # the head deadline of the servers below
IDLE_S = 2.5  # their idle keep-alive timeout


def _ok_app() -> web.Application:
    app = web.Application(middlewares=[json_errors])

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/", ok)
    return app


def _server(per_address: int = 64, most: int = 8192, registry: CollectorRegistry | None = None) -> HttpThread:
    settings = HttpSettings(
        header_timeout_ms=int(HEAD_S * 1000),
        idle_timeout_ms=int(IDLE_S * 1000),
        max_connections=most,
        max_connections_per_address=per_address,
    )
    return HttpThread(_ok_app(), "127.0.0.1", 0, settings=settings, registry=registry)


def _connect(server: HttpThread, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE, source_address=(source, 0))


def _get(conn: socket.socket) -> tuple[int, bytes]:
    """One GET / on a kept-alive connection: the status and the body."""
    conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = conn.recv(4096)
        assert chunk, f"closed after {answer!r}"
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(
        next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")).split(b":")[1]
    )
    while len(body) < length:
        chunk = conn.recv(4096)
        assert chunk
        body += chunk
    return int(head.split(b" ")[1]), body


def _until_closed(conn: socket.socket) -> float:
    """Seconds until the server closes ``conn`` (it sends nothing meanwhile); fails past DEADLINE."""
    start = time.monotonic()
    assert conn.recv(1) == b""
    return time.monotonic() - start


def _wait(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_head_sent_a_byte_at_a_time_is_cut_at_its_deadline_and_others_are_served_meanwhile() -> None:
    # The slowloris attack: aiohttp alone kept such a connection for as long as bytes came.
    registry = CollectorRegistry()
    with _server(registry=registry) as server:
        head = b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-A: b\r\n" * 1000
        served_meanwhile = False
        with _connect(server) as slow:
            start = time.monotonic()
            slow.settimeout(0.02)
            sent = 0
            closed_at = None
            while closed_at is None:
                assert time.monotonic() - start < DEADLINE, "still open"
                if not served_meanwhile and time.monotonic() - start > HEAD_S / 2:
                    with _connect(server) as other:
                        assert _get(other) == (200, b"ok")
                    served_meanwhile = True
                try:
                    slow.sendall(head[sent : sent + 1])
                    sent += 1
                    if slow.recv(1) == b"":
                        closed_at = time.monotonic() - start
                except TimeoutError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    closed_at = time.monotonic() - start
            assert HEAD_S * 0.9 <= closed_at < HEAD_S + 1.5
            assert sent > 5 and served_meanwhile  # bytes kept coming until then, and others were answered
            assert server.guard.late == 1
            assert registry.get_sample_value("vledger_http_heads_late_total") == 1


def test_a_connection_that_sends_nothing_is_closed_at_the_head_deadline() -> None:
    with _server() as server, _connect(server) as conn:
        assert HEAD_S * 0.9 <= _until_closed(conn) < HEAD_S + 1.5
        _wait(lambda: server.guard.open == 0)


def test_a_kept_alive_connection_idles_to_its_timeout_and_the_next_head_has_its_own_deadline() -> None:
    with _server() as server, _connect(server) as conn:
        assert _get(conn) == (200, b"ok")
        time.sleep(HEAD_S * 2)  # idle longer than a head may take: the head deadline does not run
        assert _get(conn) == (200, b"ok")
        conn.sendall(b"GET / HT")  # a head begun after the answer, never finished
        assert HEAD_S * 0.9 <= _until_closed(conn) < HEAD_S + 1.5
        assert server.guard.late == 1
    with _server() as server, _connect(server) as conn:
        assert _get(conn) == (200, b"ok")
        assert IDLE_S * 0.9 <= _until_closed(conn) < IDLE_S + 2.0
        assert server.guard.late == 0  # an idle close is no late head


def _refusal_of(conn: socket.socket) -> dict[str, Any]:
    conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    answer = b""
    while chunk := conn.recv(4096):
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 "), answer
    assert b"Connection: close" in head and b"Retry-After: 1" in head
    error: dict[str, Any] = json.loads(body)["error"]
    return error


def test_connections_past_the_caps_per_address_and_in_all_get_503_throttled() -> None:
    registry = CollectorRegistry()
    with _server(per_address=2, most=3, registry=registry) as server:
        with _connect(server) as a1, _connect(server) as a2, _connect(server, "127.0.0.2") as b1:
            for conn in (a1, a2, b1):
                assert _get(conn) == (200, b"ok")
            with _connect(server) as a3:
                error = _refusal_of(a3)
                assert error["code"] == "throttled" and "from this address (at most 2)" in error["message"]
            with _connect(server, "127.0.0.3") as c1:
                error = _refusal_of(c1)
                assert error["code"] == "throttled" and "(at most 3)" in error["message"]
            assert server.guard.refused == 2
            assert registry.get_sample_value("vledger_http_connections_refused_total") == 2
            assert registry.get_sample_value("vledger_http_connections") == 3
            a1.close()
            _wait(lambda: server.guard.open == 2)
            with _connect(server) as a4:  # the place a1 held is free again
                assert _get(a4) == (200, b"ok")
        _wait(lambda: server.guard.open == 0 and not server.guard.lingering)
        assert not server.guard.by_address


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        (("203.0.113.7", 4711), "203.0.113.7"),
        (("2001:db8:1:2:aaaa::1", 4711, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:bbbb::9", 80, 0, 0), "2001:db8:1:2::/64"),  # the same /64: one client
        (("::ffff:198.51.100.2", 4711, 0, 0), "198.51.100.2"),
        (("fe80::1%eth0", 4711, 0, 2), "fe80::/64"),
        (None, "None"),
    ],
)
def test_connections_count_by_ipv4_address_or_ipv6_slash_64(peer: Any, key: str) -> None:
    assert address_key(peer) == key


def test_readyz_adds_the_details_given_beside_its_checks() -> None:
    # A standby's follow restarts (ingest/server.py) reach /readyz this way.
    restarts = [0]
    app = health_app(
        {"store": lambda: None}, CollectorRegistry(), lambda: {"standby": {"follow_restarts": restarts[0]}}
    )
    with HttpThread(app, "127.0.0.1", 0) as server:
        url = f"http://127.0.0.1:{server.port}/readyz"
        restarts[0] = 2
        with urllib.request.urlopen(url, timeout=DEADLINE) as answer:
            body = json.loads(answer.read())
    assert body == {"ok": True, "checks": {"store": None}, "standby": {"follow_restarts": 2}}


def test_metrics_say_the_text_format_the_protocol_names() -> None:
    # PROTOCOL 15.3: Prometheus text format 0.0.4, whatever prometheus-client calls its latest.
    with HttpThread(health_app({}, CollectorRegistry()), "127.0.0.1", 0) as server:
        answer = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=DEADLINE)
        with answer:
            assert answer.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"


def test_a_read_that_meets_a_malformed_store_is_a_503_store_damaged_not_a_bug(caplog: pytest.LogCaptureFixture) -> None:
    """A gateway reads a node's store: a file SQLite finds malformed is said as such (503
    store_damaged, one error line, no traceback); a locked one stays what it was (a 500 bug)."""
    app = web.Application(middlewares=[json_errors])
    errors = {
        "/malformed": malformed(),
        "/locked": sqlite3.OperationalError("database is locked"),
        "/opened-malformed": opened_on(malformed()),
        "/missing": StoreError("/data/node: no vledger store here (no chain.sqlite3)"),
    }

    async def fail(request: web.Request) -> web.Response:
        raise errors[request.path]

    for path in errors:
        app.router.add_get(path, fail)
    caplog.set_level(logging.ERROR)
    with HttpThread(app, "127.0.0.1", 0) as server:
        answers = {}
        for path in errors:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=DEADLINE)
            except urllib.error.HTTPError as e:
                answers[path] = (e.code, json.loads(e.read())["error"])
    assert answers["/malformed"][0] == 503 and answers["/malformed"][1]["code"] == "store_damaged"
    assert "database disk image is malformed" in answers["/malformed"][1]["message"]
    assert answers["/locked"] == (500, {"code": "error", "message": "internal error; the server logged it"})
    # A reader opened after the damage (a pool thread's first request) raises StoreError from it:
    # damage too (it was store_error, by the thread the request happened to land on).
    assert answers["/opened-malformed"][0] == 503 and answers["/opened-malformed"][1]["code"] == "store_damaged"
    assert answers["/missing"][0] == 503 and answers["/missing"][1]["code"] == "store_error"
    damaged = [r for r in caplog.records if "the store's file is damaged" in r.getMessage()]
    assert len(damaged) == 2 and all(r.exc_info is None for r in damaged)


def opened_on(cause: Exception) -> StoreError:
    """What StoreReader raises when its first read of a file meets ``cause``."""
    try:
        raise StoreError(f"/data/node/chain.sqlite3: not a vledger store: {cause}") from cause
    except StoreError as e:
        return e


def test_the_private_aiohttp_slots_the_head_deadline_reads_are_there() -> None:
    """aiohttp has no public way to tell a parsed head or a request being answered (broker/http.py
    says why); an aiohttp that renamed either must fail at import, not at a connection's first byte."""
    assert missing_from_aiohttp() == []

    class Renamed:  # as a RequestHandler that renamed one of them would be
        __slots__ = ("_request_count", "_requests_in_progress")

    assert missing_from_aiohttp(Renamed) == ["_request_in_progress"]
    assert missing_from_aiohttp(object) == list(ASKED_OF_AIOHTTP)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.1.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("::", False), ("10.0.0.5", False), ("gateway.example", False)],
)  # fmt: skip
def test_the_host_check_follows_the_servers_bind_not_the_address_a_connection_reached(
    host: str, loopback: bool
) -> None:
    # A server on 0.0.0.0 reached as 127.0.1.1 (a Debian host's own name) is no loopback server:
    # a Prometheus scraping it by that name must not be refused (a reviewer's finding).
    app = web.Application()
    HttpThread(app, host, 0)
    assert app[BOUND_TO_LOOPBACK] is loopback


# One answer's bytes: more than the kernel takes into a socket's buffers (loopback autotunes
# them to a few MB), so that most of it stays in the server's memory while the client does not read.
BIG = 8 * 1024 * 1024


def _big_server(unread: int) -> HttpThread:
    app = _ok_app()

    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * BIG)

    app.router.add_get("/big", big)
    settings = HttpSettings(
        header_timeout_ms=int(HEAD_S * 1000),
        idle_timeout_ms=int(IDLE_S * 1000),
        max_unread_bytes_per_address=unread,
        max_unread_bytes=unread,
    )
    return HttpThread(app, "127.0.0.1", 0, settings=settings)


def _unread(server: HttpThread) -> int:
    """What the server holds unsent for stalled clients (read from this thread: retried when
    the loop's thread changed the sets meanwhile)."""
    while True:
        try:
            return server.guard.unread()
        except RuntimeError:
            continue


def test_clients_that_never_read_their_answers_hold_no_more_than_the_unread_caps() -> None:
    """Outsider pass 18, F0: sixty connections that asked for a 70 MB page and never read took
    the gateway to 10 GB and stopped /healthz. What stalled clients leave unread is capped (a
    connection that would pass the cap is closed), the others are closed at the idle timeout,
    and the port answers others meanwhile."""
    cap = BIG
    with _big_server(cap) as server:
        stalled = []
        try:
            for _ in range(6):
                conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # reads nothing, takes little
                conn.settimeout(DEADLINE)
                conn.connect(("127.0.0.1", server.port))
                conn.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
                stalled.append(conn)
            _wait(lambda: server.guard.unread_closed >= 1)  # the caps met: some were closed
            most = 0
            deadline = time.monotonic() + IDLE_S / 2
            while time.monotonic() < deadline:
                most = max(most, _unread(server))
                time.sleep(0.005)
            assert 0 < most <= cap
            with _connect(server) as other:
                assert _get(other) == (200, b"ok")  # answered meanwhile
            # The rest are closed once they have not read for the idle timeout: nothing held.
            _wait(lambda: server.guard.open == 0)
            assert _unread(server) == 0 and not server.guard.stalled
        finally:
            for conn in stalled:
                conn.close()


def test_a_slow_client_that_keeps_reading_a_large_answer_is_not_cut_off() -> None:
    """Taking an answer slowly is no stall: the answer's unsent bytes stay above the low-water
    mark for longer than the idle timeout, but each timeout finds fewer of them."""
    with _big_server(8 * BIG) as server:
        conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn.settimeout(DEADLINE)
        conn.connect(("127.0.0.1", server.port))
        with conn:
            conn.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
            got = 0
            start = time.monotonic()
            while got < BIG:  # about 1 MB/s: several idle timeouts to take the whole answer
                took = 0
                while took < 256 * 1024 and got + took < BIG:
                    chunk = conn.recv(65536)
                    assert chunk, f"closed after {got + took} bytes"
                    took += len(chunk)
                got += took
                time.sleep(0.25)
            assert time.monotonic() - start > 2 * IDLE_S
            assert server.guard.unread_closed == 0


@pytest.mark.parametrize(
    ("hosts", "loopback"),
    [
        (["localhost"], True),
        (["localhost:11260"], True),
        (["127.0.0.1:8080"], True),
        (["[::1]:8080"], True),
        (["[::1]"], True),
        (["localhost:11260, evil.example"], False),  # a list: no browser sends it, and it names two hosts
        (["localhost:11260,evil.example"], False),
        (["localhost", "evil.example"], False),  # two Host headers
        (["localhost", "localhost"], False),
        (["localhost:80:80"], False),
        (["[::1]:80, evil.example"], False),
        (["localhost evil.example"], False),
        (["localhost:x"], False),
        ([""], False),
        ([], False),
        (["evil.example"], False),
        (["localhost."], False),
        (["127.1"], False),
    ],
)
def test_only_one_well_formed_host_header_names_loopback(hosts: list[str], loopback: bool) -> None:
    headers = CIMultiDict(("Host", host) for host in hosts)
    assert names_loopback(make_mocked_request("GET", "/metrics", headers=headers)) is loopback


class _Buffered:
    """A transport that holds ``unsent`` bytes (all ConnectionGuard.stall reads of one)."""

    def __init__(self, unsent: int) -> None:
        self.unsent = unsent

    def get_write_buffer_size(self) -> int:
        return self.unsent


def test_past_the_cap_in_all_the_largest_holder_is_closed_not_the_connection_that_just_paused() -> None:
    """Reviewer r3: closing the connection that just paused let a few addresses that hold the
    cap in all pin it, and every other client's large answer was then cut. Past an address's
    own cap, that address's connection is closed; past the cap in all, the largest connection
    of the address leaving the most unread."""
    guard = ConnectionGuard(HttpSettings(max_unread_bytes_per_address=60, max_unread_bytes=100))
    hog_small, hog_big, other = _Buffered(20), _Buffered(35), _Buffered(40)
    assert guard.stall("10.0.0.1", hog_small) is None  # type: ignore[arg-type]
    assert guard.stall("10.0.0.1", hog_big) is None  # type: ignore[arg-type]
    assert guard.stall("10.0.0.2", _Buffered(10)) is None  # type: ignore[arg-type]
    over = guard.stall("10.0.0.3", other)  # type: ignore[arg-type]
    assert over is not None and over[1] is hog_big and "in all" in over[0]
    own = guard.stall("10.0.0.2", _Buffered(55))  # type: ignore[arg-type]
    assert own is not None and "by this address" in own[0]


def test_each_accepted_connection_has_the_configured_kernel_send_buffer() -> None:
    """What a client that does not read holds in the kernel is outside the unread caps, and
    Linux grows a connection's send buffer to megabytes by itself: [http] send_buffer_bytes
    fixes it when the connection is accepted (Linux reports twice the value set)."""

    async def sndbuf(request: web.Request) -> web.Response:
        assert request.transport is not None
        sock = request.transport.get_extra_info("socket")
        return web.Response(text=str(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)))

    for configured in (48 * 1024, HttpSettings().send_buffer_bytes):
        app = _ok_app()  # an application is served once
        app.router.add_get("/sndbuf", sndbuf)
        server = HttpThread(app, "127.0.0.1", 0, settings=HttpSettings(send_buffer_bytes=configured))
        with server, urllib.request.urlopen(f"http://127.0.0.1:{server.port}/sndbuf", timeout=DEADLINE) as answer:
            held = int(answer.read())
        assert held == (2 * configured if sys.platform == "linux" else held)
