"""The CURVE guard (broker/curve_guard.py) on real sockets: what it counts and cuts.

Its thread reads each EVENT_ACCEPTED a moment after libzmq accepted the connection; by then
libzmq may have closed that descriptor and the number been given to another file, such as
one of the node's own outgoing sockets. The tests here read the monitor's events themselves
and hand them to the guard late, as its thread would on a loaded machine.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from vledger.broker.curve_guard import ConnectionGuard
from vledger.broker.file_budget import FileBudget
from vledger.config.settings import BrokerSettings

TIMEOUT = 10.0


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.destroy(linger=0)


def _event(monitor: zmq.Socket[Any], wanted: int) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if monitor.poll(100, zmq.POLLIN):
            event = recv_monitor_message(monitor)
            if event["event"] == wanted:
                return event
    raise AssertionError(f"no monitor event {wanted} within {TIMEOUT} s")


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def test_a_number_reused_by_an_outgoing_socket_is_neither_counted_nor_cut(ctx: zmq.Context[Any]) -> None:
    settings = BrokerSettings(max_connections_per_address=1, max_connections=1)
    guard = ConnectionGuard(ctx, settings, "test", budget=FileBudget(10))
    server = ctx.socket(zmq.ROUTER)
    monitor = ctx.socket(zmq.PAIR)
    redis = socket.create_server(("127.0.0.1", 0))  # some server the node itself talks to
    with contextlib.ExitStack() as stack:
        stack.callback(server.close, 0)
        stack.callback(monitor.close, 0)
        stack.enter_context(redis)
        server.monitor("inproc://test-curve-guard", zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        monitor.connect("inproc://test-curve-guard")
        server.bind("tcp://127.0.0.1:0")
        port = int(server.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])

        # A client comes and goes before the guard reads its EVENT_ACCEPTED.
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT):
            accepted = _event(monitor, zmq.EVENT_ACCEPTED)
        fd = int(accepted["value"])
        _event(monitor, zmq.EVENT_DISCONNECTED)
        deadline = time.monotonic() + TIMEOUT
        while not _closed(fd):  # libzmq closes it on its I/O thread just after the event
            assert time.monotonic() < deadline, "libzmq kept the descriptor"
            time.sleep(0.01)
        # Its number now names the node's connection to its Redis (on the same address).
        outgoing = stack.enter_context(socket.create_connection(redis.getsockname(), timeout=TIMEOUT))
        os.dup2(outgoing.fileno(), fd)
        reused = stack.enter_context(socket.socket(fileno=fd))
        peer, _ = redis.accept()
        stack.enter_context(peer)

        # One client holds the only place there is.
        stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT))
        held = _event(monitor, zmq.EVENT_ACCEPTED)
        guard._accepted(int(held["value"]), held["endpoint"])
        assert guard.open == 1 and guard.budget.held == 1

        guard._accepted(fd, accepted["endpoint"])  # the first client's event, read late
        assert guard.open == 1 and guard.refused == 0 and guard.budget.held == 1
        reused.sendall(b"PING\r\n")  # the node's own connection still works both ways
        assert peer.recv(6) == b"PING\r\n"
        peer.sendall(b"+PONG\r\n")
        assert reused.recv(7) == b"+PONG\r\n"
        guard.stop()
        assert guard.budget.held == 0


def test_a_guard_whose_context_ended_gives_its_connections_places_back(ctx: zmq.Context[Any]) -> None:
    """The Context terminated under a guard never stopped (a socket closed with its Context, as
    a process's shutdown or a test does): the places its connections held in the process's budget
    come back; kept, they would cut every later connection of the process's other ports."""
    budget = FileBudget(10)
    guard = ConnectionGuard(ctx, BrokerSettings(), "test", budget=budget)
    server = ctx.socket(zmq.ROUTER)
    guard.attach(server)
    server.bind("tcp://127.0.0.1:0")
    port = int(server.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT):
        deadline = time.monotonic() + TIMEOUT
        while budget.held != 1:
            assert time.monotonic() < deadline, f"the connection was not counted: {budget.held}"
            time.sleep(0.01)
        server.close(linger=0)
        ctx.term()
        deadline = time.monotonic() + TIMEOUT
        while budget.held != 0:
            assert time.monotonic() < deadline, f"{budget.held} places kept after the Context ended"
            time.sleep(0.01)
    assert guard.open == 0


def _port(sock: zmq.Socket[Any]) -> int:
    return int(sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.01)


def _delivers(ctx: zmq.Context[Any]) -> bool:
    """Whether a fresh PUB and SUB of ``ctx`` still connect over TCP and deliver (its I/O thread runs)."""
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    try:
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        sub.subscribe(b"")
        sub.connect(f"tcp://127.0.0.1:{port}")
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            pub.send(b"beat")
            if sub.poll(50, zmq.POLLIN):
                return True
        return False
    finally:
        pub.close(linger=0)
        sub.close(linger=0)


def test_a_stopped_guard_leaves_its_context_working_while_its_socket_still_takes_connections(
    ctx: zmq.Context[Any],
) -> None:
    """libzmq sends a monitor's events from the Context's I/O thread with a blocking send: with
    the guard's reader closed and the socket still monitored, the next connection blocked that
    thread for good, and every socket of the Context with it (the feed's rotation tests, and
    each later test of their worker, failed so)."""
    guard = ConnectionGuard(ctx, BrokerSettings(), "test", budget=FileBudget(10))
    server = ctx.socket(zmq.PUB)
    guard.attach(server)
    server.bind("tcp://127.0.0.1:0")
    try:
        guard.stop()  # a server closes its guard, then its socket: connections may come between
        with socket.create_connection(("127.0.0.1", _port(server)), timeout=TIMEOUT):
            assert _delivers(ctx), "the Context's I/O thread is blocked"
    finally:
        server.close(linger=0)


def test_connections_closed_by_an_unbind_give_their_places_back(ctx: zmq.Context[Any]) -> None:
    """A key rotation unbinds an endpoint (PROTOCOL 16.6): libzmq closes its connections with no
    EVENT_DISCONNECTED, and they stayed counted, against the caps and the budget, for ever."""
    budget = FileBudget(10)
    guard = ConnectionGuard(ctx, BrokerSettings(), "test", budget=budget)
    server = ctx.socket(zmq.PUB)
    guard.attach(server)
    server.bind("tcp://127.0.0.1:0")
    endpoint = server.getsockopt_string(zmq.LAST_ENDPOINT)
    try:
        with contextlib.ExitStack() as stack:
            for _ in range(3):
                stack.enter_context(socket.create_connection(("127.0.0.1", _port(server)), timeout=TIMEOUT))
            _wait(lambda: guard.open == 3, "the connections counted")
            server.unbind(endpoint)
            _wait(lambda: guard.open == 0, "the unbound endpoint's connections given back")
        assert budget.held == 0 and not guard.by_address
        server.bind(endpoint)  # as a rotation binds it again: its connections are counted as before
        with socket.create_connection(("127.0.0.1", _port(server)), timeout=TIMEOUT):
            _wait(lambda: guard.open == 1, "a connection to the endpoint bound again counted")
    finally:
        guard.stop()
        server.close(linger=0)
    assert budget.held == 0


def test_an_event_the_guard_cannot_handle_does_not_end_its_reader(
    ctx: zmq.Context[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    failures = iter([True])

    def address_key(peer: Any) -> str:
        if next(failures, False):
            raise ValueError("an address the guard cannot read")
        return str(peer[0])

    monkeypatch.setattr("vledger.broker.curve_guard.address_key", address_key)
    guard = ConnectionGuard(ctx, BrokerSettings(), "test", budget=FileBudget(10))
    server = ctx.socket(zmq.PUB)
    guard.attach(server)
    server.bind("tcp://127.0.0.1:0")
    try:
        with socket.create_connection(("127.0.0.1", _port(server)), timeout=TIMEOUT):
            with socket.create_connection(("127.0.0.1", _port(server)), timeout=TIMEOUT):
                _wait(lambda: guard.open == 1, "the second connection counted")
            assert _delivers(ctx)
    finally:
        guard.stop()
        server.close(linger=0)


def _ended(sock: socket.socket, wait: float) -> bool:
    """Whether the server ended ``sock`` within ``wait`` s (its greeting read and dropped)."""
    sock.settimeout(wait)
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline:
            if not sock.recv(4096):
                return True
    except TimeoutError:
        return False
    except OSError:  # reset
        return True
    return False


# A ZMTP 3.0 greeting asking for CURVE as a client (RFC 23): then nothing more, the handshake stalled.
GREETING = b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"CURVE".ljust(20, b"\x00") + b"\x00" + bytes(31)


def test_a_connection_past_the_cap_takes_the_place_of_the_oldest_whose_handshake_is_not_done(
    ctx: zmq.Context[Any],
) -> None:
    """Counted before their handshake, connections from a client's address that never finish it
    (silent, or stalled after a greeting) kept its new ones out: each past the cap was cut. The
    oldest whose handshake is not done is cut instead; one whose handshake is done keeps its
    place, and only when every other's is done is the new one cut."""
    settings = BrokerSettings(max_connections_per_address=2, max_connections=100)
    guard = ConnectionGuard(ctx, settings, "test", budget=FileBudget(100))
    server_public, server_secret = zmq.curve_keypair()
    server = ctx.socket(zmq.ROUTER)
    server.curve_server = True
    server.curve_secretkey = server_secret
    with contextlib.ExitStack() as stack:
        stack.callback(server.close, 0)
        guard.attach(server)
        stack.callback(guard.stop)
        server.bind("tcp://127.0.0.1:0")
        port = int(server.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])

        def raw(sent: bytes) -> socket.socket:
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT))
            sock.sendall(sent)
            return sock

        def client() -> zmq.Socket[Any]:
            """A CURVE client whose handshake is done once a message of it reached the server."""
            dealer = ctx.socket(zmq.DEALER)
            stack.callback(dealer.close, 0)
            dealer.curve_serverkey = server_public
            dealer.curve_publickey, dealer.curve_secretkey = zmq.curve_keypair()
            dealer.connect(f"tcp://127.0.0.1:{port}")
            dealer.send(b"here")
            assert server.poll(int(TIMEOUT * 1000)) and server.recv_multipart()[1] == b"here"
            return dealer

        silent, stalled = raw(b""), raw(GREETING)
        deadline = time.monotonic() + TIMEOUT
        while guard.open < 2:  # both counted before the next comes
            assert time.monotonic() < deadline, "the guard never saw them"
            time.sleep(0.01)
        first = client()
        assert _ended(silent, TIMEOUT) and not _ended(stalled, 0.3)
        client()
        assert _ended(stalled, TIMEOUT)
        assert guard.refused == 2 and guard.by_address["127.0.0.1"] == 2
        late = raw(GREETING)  # every other handshake done: the new one is cut
        assert _ended(late, TIMEOUT) and guard.refused == 3
        first.send(b"still")
        assert server.poll(int(TIMEOUT * 1000)) and server.recv_multipart()[1] == b"still"
