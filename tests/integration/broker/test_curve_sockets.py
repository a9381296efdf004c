"""Real CURVE sockets on 127.0.0.1: who gets in, who does not, and the start-up self-test.

Refusal is proved twice, as the NOTES ask: no reply within a poll timeout, and the client's
monitor reporting EVENT_HANDSHAKE_FAILED_AUTH.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import zmq

from vledger.broker.curve import (
    AllowList,
    CurveServer,
    check_refuses_unlisted,
    curve_client,
    curve_server_socket,
    sender_key,
    stop_authenticator,
    wait_for_event,
)
from vledger.broker.keys import KeyPair, new_keypair
from vledger.config.settings import BrokerSettings
from vledger.node.errors import AuthSelfTestError, CurveError

ENDPOINT = "tcp://127.0.0.1:*"
REPLY_TIMEOUT_MS = 500
EVENT_TIMEOUT = 5.0


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    """A Context of this test's own (a process uses one; a test stands for a process)."""
    context: zmq.Context[Any] = zmq.Context()
    yield context
    stop_authenticator(context)
    context.destroy(linger=0)


@dataclass
class Client:
    sock: zmq.Socket[Any]
    monitor: zmq.Socket[Any]

    def offer(self, payload: bytes) -> None:
        """Send without blocking: a refused DEALER has no peer, and a plain send would wait forever."""
        with contextlib.suppress(zmq.Again):
            self.sock.send(payload, zmq.NOBLOCK)

    def handshake(self) -> int | None:
        event = wait_for_event(
            self.monitor, zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH, EVENT_TIMEOUT
        )
        return None if event is None else int(event["event"])


@pytest.fixture
def connect(ctx: zmq.Context[Any]) -> Iterator[Any]:
    made: list[Client] = []

    def make(server: CurveServer, pair: KeyPair, socket_type: int = zmq.DEALER) -> Client:
        sock = curve_client(ctx, socket_type, server.keys.public, pair)
        address = f"inproc://monitor-{len(made)}-{id(sock)}"
        sock.monitor(address, zmq.EVENT_ALL)
        monitor = ctx.socket(zmq.PAIR)
        monitor.connect(address)
        sock.connect(server.connect_endpoint)
        client = Client(sock, monitor)
        made.append(client)
        return client

    yield make
    for client in made:
        client.sock.disable_monitor()
        client.sock.close(linger=0)
        client.monitor.close(linger=0)


def echo_once(server: CurveServer) -> str | None:
    """Answer one waiting message with its own payload; the sender's key, or None if none came."""
    if not server.socket.poll(REPLY_TIMEOUT_MS, zmq.POLLIN):
        return None
    identity, payload = server.socket.recv_multipart(copy=False)
    server.socket.send_multipart([identity, payload])
    return sender_key(payload)


def test_a_listed_key_gets_replies_and_is_named_by_user_id(ctx: zmq.Context[Any], connect: Any) -> None:
    listed = new_keypair()
    with CurveServer(new_keypair(), ENDPOINT, AllowList([listed.public]), ctx=ctx) as server:
        server.self_test()
        client = connect(server, listed)
        client.sock.send(b"ping")
        assert echo_once(server) == listed.public
        assert client.sock.poll(EVENT_TIMEOUT * 1000, zmq.POLLIN)
        assert client.sock.recv() == b"ping"
        assert client.handshake() == zmq.EVENT_HANDSHAKE_SUCCEEDED


def test_an_unlisted_key_gets_nothing_and_fails_auth(ctx: zmq.Context[Any], connect: Any) -> None:
    with CurveServer(new_keypair(), ENDPOINT, AllowList([new_keypair().public]), ctx=ctx) as server:
        client = connect(server, new_keypair())
        assert client.handshake() == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        client.offer(b"let me in")
        assert echo_once(server) is None  # nothing reached the server
        assert not client.sock.poll(REPLY_TIMEOUT_MS, zmq.POLLIN)


def test_a_key_removed_from_the_list_cannot_connect_again(ctx: zmq.Context[Any], connect: Any) -> None:
    pair = new_keypair()
    allow = AllowList([pair.public])
    with CurveServer(new_keypair(), ENDPOINT, allow, ctx=ctx) as server:
        assert connect(server, pair).handshake() == zmq.EVENT_HANDSHAKE_SUCCEEDED
        allow.replace([])
        later = connect(server, pair)
        assert later.handshake() == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        later.offer(b"ping")
        assert echo_once(server) is None
        allow.replace([pair.public])  # and back: applies to the next handshake at once
        assert connect(server, pair).handshake() == zmq.EVENT_HANDSHAKE_SUCCEEDED


def test_self_test_passes_when_the_authenticator_shares_the_context(ctx: zmq.Context[Any]) -> None:
    with CurveServer(new_keypair(), ENDPOINT, AllowList(), ctx=ctx, socket_type=zmq.PUB) as server:
        server.self_test()


def test_self_test_fails_when_the_socket_lives_in_a_context_without_authenticator(ctx: zmq.Context[Any]) -> None:
    keys = new_keypair()
    with CurveServer(new_keypair(), ENDPOINT, AllowList(), ctx=ctx):  # an authenticator, but in `ctx`
        other: zmq.Context[Any] = zmq.Context()
        try:
            sock = curve_server_socket(other, zmq.ROUTER, keys, 1 << 20)
            sock.bind(ENDPOINT)
            endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            with pytest.raises(AuthSelfTestError, match="admitted a client with a random, unlisted key"):
                check_refuses_unlisted(other, endpoint, keys.public, zmq.ROUTER, EVENT_TIMEOUT)
            sock.close(linger=0)
        finally:
            other.destroy(linger=0)


def test_self_test_cannot_pass_without_a_handshake(ctx: zmq.Context[Any]) -> None:
    nobody = ctx.socket(zmq.ROUTER)
    nobody.bind(ENDPOINT)  # not a CURVE server: no handshake can succeed or fail on auth
    endpoint = nobody.getsockopt_string(zmq.LAST_ENDPOINT)
    try:
        with pytest.raises(AuthSelfTestError):
            check_refuses_unlisted(ctx, endpoint, new_keypair().public, zmq.ROUTER, 1.0)
    finally:
        nobody.close(linger=0)


def test_a_message_over_the_size_limit_never_arrives(ctx: zmq.Context[Any], connect: Any) -> None:
    pair = new_keypair()
    settings = BrokerSettings(max_message_bytes=1024)
    with CurveServer(new_keypair(), ENDPOINT, AllowList([pair.public]), ctx=ctx, settings=settings) as server:
        client = connect(server, pair)
        client.offer(b"x" * 4096)
        assert echo_once(server) is None


def test_servers_in_one_context_share_the_authenticator_by_domain(ctx: zmq.Context[Any], connect: Any) -> None:
    writer, replica = new_keypair(), new_keypair()
    ingest = AllowList([writer.public])
    replicas = AllowList([replica.public])
    with (
        CurveServer(new_keypair(), ENDPOINT, ingest, ctx=ctx) as a,
        CurveServer(new_keypair(), ENDPOINT, replicas, ctx=ctx, domain="replicas", socket_type=zmq.PUB) as b,
    ):
        assert a.authenticator is b.authenticator
        a.self_test()
        b.self_test()
        assert connect(a, writer).handshake() == zmq.EVENT_HANDSHAKE_SUCCEEDED
        assert connect(a, replica).handshake() == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        assert connect(b, replica, zmq.SUB).handshake() == zmq.EVENT_HANDSHAKE_SUCCEEDED
        assert connect(b, writer, zmq.SUB).handshake() == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        with pytest.raises(CurveError, match="already has another allow-list"):
            CurveServer(new_keypair(), ENDPOINT, AllowList(), ctx=ctx, domain="replicas")


def test_the_authenticator_outlives_its_servers_until_stopped(ctx: zmq.Context[Any], connect: Any) -> None:
    pair = new_keypair()
    first = CurveServer(new_keypair(), ENDPOINT, AllowList([pair.public]), ctx=ctx)
    second = CurveServer(new_keypair(), ENDPOINT, first.allow_list, ctx=ctx)
    authenticator = first.authenticator
    first.close()
    assert connect(second, pair).handshake() == zmq.EVENT_HANDSHAKE_SUCCEEDED
    with pytest.raises(CurveError, match="still open"):
        stop_authenticator(ctx)
    second.close()
    second.close()  # twice is harmless
    assert authenticator.is_alive()
    # The domain is free again: a new server may bring another list, and the old one is gone.
    with CurveServer(new_keypair(), ENDPOINT, AllowList(), ctx=ctx) as again:
        assert again.authenticator is authenticator
        again.self_test()
        assert connect(again, pair).handshake() == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    stop_authenticator(ctx)
    assert not authenticator.is_alive()


def test_a_bind_failure_is_a_curve_error_and_leaks_nothing(ctx: zmq.Context[Any]) -> None:
    with CurveServer(new_keypair(), ENDPOINT, AllowList(), ctx=ctx) as server:
        with pytest.raises(CurveError, match="cannot bind"):
            CurveServer(new_keypair(), server.endpoint, server.allow_list, ctx=ctx)
        server.self_test()
