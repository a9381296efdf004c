"""The gateway's event stream against a real socket: a client that does not read is bounded in
the bytes queued for it and dropped (its stream ended, counted), while one that reads gets
every event."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vledger.broker.http import HttpThread
from vledger.config.settings import Limits
from vledger.tests.unit.verifier.fakes import two_nodes
from vledger.tools.demo import run_demo
from vledger.verifier import gateway as gateway_module
from vledger.verifier.gateway import CLIENT_QUEUE_BYTES, Gateway, build_app

DEADLINE = 10.0
EVENT = b"event: checkpoint\ndata: " + b"x" * (512 * 1024) + b"\n\n"  # a large checkpoint's JSON
EVENTS = 2 * CLIENT_QUEUE_BYTES // len(EVENT) + 2  # past the bound for a client that takes none


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Gateway, HttpThread]]:
    config = two_nodes(tmp_path / "cluster.toml")
    run_demo(tmp_path / "data" / "replica-1", 5, 1, Limits())
    gateway = Gateway(config, "replica-1")
    try:
        with HttpThread(build_app(gateway), "127.0.0.1", 0) as server:
            yield gateway, server
    finally:
        gateway.close()


def _subscribe(server: HttpThread, receive_buffer: int | None = None) -> socket.socket:
    conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    conn.settimeout(DEADLINE)
    conn.connect(("127.0.0.1", server.port))
    conn.sendall(b"GET /api/events HTTP/1.1\r\nHost: t\r\n\r\n")
    return conn


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _closed(conn: socket.socket) -> bool:
    """Whether the server closed ``conn`` (what it had sent is read and let go meanwhile)."""
    try:
        return conn.recv(1 << 20) == b""
    except ConnectionResetError:
        return True


def _on_loop(server: HttpThread, action: Callable[[], object]) -> object:
    async def run() -> object:
        return action()

    return asyncio.run_coroutine_threadsafe(run(), server._loop).result(DEADLINE)


def test_a_subscriber_that_does_not_read_is_dropped_once_its_queue_passes_the_bytes_bound(
    served: tuple[Gateway, HttpThread],
) -> None:
    gateway, server = served
    slow = _subscribe(server, receive_buffer=4096)  # asks, then never reads
    fast = _subscribe(server)
    fast.settimeout(0.1)  # the reader looks at ``stop`` this often
    received = bytearray()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                chunk = fast.recv(1 << 20)
            except TimeoutError:
                continue
            if not chunk:
                return
            received.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        _wait(lambda: len(gateway._clients) == 2, "both streams open")
        dropped = gateway.metrics.event_clients_dropped
        for sent in range(1, EVENTS + 1):
            _on_loop(server, lambda: gateway_module._broadcast(gateway, EVENT))
            _wait(lambda: received.count(b"event: checkpoint") >= sent, f"the reader got event {sent}")  # noqa: B023
            queued = _on_loop(server, lambda: max((s.queued_bytes for s in gateway._clients), default=0))
            assert isinstance(queued, int) and queued <= CLIENT_QUEUE_BYTES
        assert dropped._value.get() == 1  # the slow one, once
        assert len(gateway._clients) == 1  # the reader's stream goes on
        assert received.count(b"event: checkpoint") == EVENTS
        _wait(lambda: _closed(slow), "the slow client's connection closed")
    finally:
        stop.set()
        reader.join(DEADLINE)
        slow.close()
        fast.close()


def test_a_visitor_who_leaves_the_stream_logs_no_error(
    served: tuple[Gateway, HttpThread], caplog: pytest.LogCaptureFixture
) -> None:
    # Each event written to a stream whose visitor had gone logged an error with a traceback
    # (ClientConnectionResetError), so anyone could fill the gateway's log (outsider19 F5).
    gateway, server = served
    gone = _subscribe(server)
    _wait(lambda: len(gateway._clients) == 1, "the stream open")
    gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # close: RST
    gone.close()
    with caplog.at_level(logging.WARNING):
        for _ in range(20):
            _on_loop(server, lambda: gateway_module._broadcast(gateway, EVENT))
            if not gateway._clients:
                break
        _wait(lambda: not gateway._clients, "the stream ended")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
