"""The Python client against a real CURVE server on 127.0.0.1 that answers only when told to:
a node that does not answer costs a call its timeout, never more, and never a wrong reply."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
import zmq

from vledger.broker.client import Client, NodeAddress
from vledger.broker.curve import AllowList, CurveServer, stop_authenticator
from vledger.broker.keys import KeyPair, new_keypair
from vledger.broker.redis_server import free_port
from vledger.node.errors import CurveError, NodeUnavailableError

TIMEOUT = 0.3  # seconds: the client's patience in these tests
STOP_WAIT = 5.0


@dataclass
class Server:
    """Reads every request; answers each with its own id only while ``answering`` is set, after
    a reply of another id (one to a request a client gave up on) while ``stray`` is set."""

    server: CurveServer
    answering: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    stray: threading.Event = field(default_factory=threading.Event)
    read: int = 0
    slowness: float = 0.0  # seconds the server takes before it answers (a node under load)

    def run(self) -> None:
        socket = self.server.socket
        while not self.stopping.is_set():
            if not socket.poll(20):
                continue
            identity, data = socket.recv_multipart()
            self.read += 1
            if self.answering.is_set():
                time.sleep(self.slowness)
                request = msgpack.unpackb(data)
                if self.stray.is_set():
                    late = {"id": request["id"] + 1000, "ok": True, "result": {"cmd": "late"}}
                    socket.send_multipart([identity, msgpack.packb(late)])
                reply = {"id": request["id"], "ok": True, "result": {"cmd": request["cmd"]}}
                socket.send_multipart([identity, msgpack.packb(reply)])


@pytest.fixture
def served() -> Iterator[tuple[Server, NodeAddress, KeyPair]]:
    ctx: zmq.Context[Any] = zmq.Context()
    server_keys, client_keys = new_keypair(), new_keypair()
    server = Server(CurveServer(server_keys, "tcp://127.0.0.1:*", AllowList([client_keys.public]), ctx=ctx))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield server, NodeAddress(server.server.connect_endpoint, server_keys.public), client_keys
    finally:
        server.stopping.set()
        thread.join(STOP_WAIT)
        server.server.close()
        stop_authenticator(ctx)
        ctx.destroy(linger=0)


def test_a_silent_node_costs_a_call_its_timeout_then_a_new_connection_answers(
    served: tuple[Server, NodeAddress, KeyPair],
) -> None:
    server, node, keys = served
    with Client(node, keys, timeout=TIMEOUT) as client:
        started = time.monotonic()
        with pytest.raises(NodeUnavailableError, match="no answer within") as silent:
            client.call("hello")
        assert silent.value.listening is True  # its port is open
        waited = time.monotonic() - started
        assert TIMEOUT * 0.9 <= waited < TIMEOUT + 2.0
        assert server.read == 1  # it was sent, and read, but not answered
        server.answering.set()
        # A new connection: no late reply to the first call can be taken for this one's.
        assert client.call("ver") == {"cmd": "ver"}
        assert client.call_many([("hello", {}), ("ver", {})], window=2) == [{"cmd": "hello"}, {"cmd": "ver"}]


def test_a_reply_of_another_id_is_never_taken_for_a_calls_own(served: tuple[Server, NodeAddress, KeyPair]) -> None:
    server, node, keys = served
    server.answering.set()
    server.stray.set()
    with Client(node, keys, timeout=TIMEOUT) as client:
        # A lone call (its own path, p32) and a window of them each skip the reply of another id.
        assert client.call("ver") == {"cmd": "ver"}
        assert client.call_many([("hello", {}), ("ver", {})], window=2) == [{"cmd": "hello"}, {"cmd": "ver"}]
        assert client.call("hello") == {"cmd": "hello"}


def test_a_node_nothing_listens_for_is_told_from_one_that_refuses_the_key(
    served: tuple[Server, NodeAddress, KeyPair],
) -> None:
    # outsider o15 #5c: a home waiting for room on a full disk (it listens only once its store
    # opens) got the hint to check one's key. A closed port says the node is down or not serving
    # yet; a refused key, as an unknown one, is still no answer (nothing said of accounts).
    _, node, keys = served
    closed = NodeAddress(f"tcp://127.0.0.1:{free_port()}", node.key)
    with Client(closed, keys, timeout=TIMEOUT) as client, pytest.raises(NodeUnavailableError) as down:
        client.call("hello")
    assert down.value.code == "unavailable" and down.value.listening is False
    assert f"nothing accepts a connection at {closed.endpoint}: the node is down or not serving yet" in str(down.value)
    stranger = Client(node, new_keypair(), timeout=TIMEOUT)  # a key the server does not allow
    # Sent before the refusal came back (no answer), or after it (the socket had no way left): a
    # matter of scheduling, seen under load; either way its port is open.
    with stranger, pytest.raises(NodeUnavailableError, match=r"no answer within|accepted its key") as refused:
        stranger.call("hello")
    assert refused.value.listening is True, refused.value


def test_a_node_that_now_refuses_the_key_costs_a_call_its_timeout_not_a_hang() -> None:
    # A client that was answered keeps its connection; the node then comes back on its port
    # refusing the client's key (the account removed, or a node restarting that does not know it
    # yet). Its ZAP refusal ends that connection for good: libzmq does not reconnect, and the
    # socket has no way to the node. Its next send waited in libzmq for ever (no send timeout),
    # as one CI run did for 26 min in a cluster fixture's hello loop.
    ctx: zmq.Context[Any] = zmq.Context()
    server_keys, client_keys = new_keypair(), new_keypair()
    first = Server(CurveServer(server_keys, "tcp://127.0.0.1:*", AllowList([client_keys.public]), ctx=ctx))
    first.answering.set()
    servers = [first]
    thread = threading.Thread(target=first.run, daemon=True)
    thread.start()
    node = NodeAddress(first.server.connect_endpoint, server_keys.public)
    others = AllowList([new_keypair().public])
    try:
        with Client(node, client_keys, timeout=TIMEOUT) as client:
            assert client.call("hello") == {"cmd": "hello"}
            monitor = client._connections[node.endpoint].socket.get_monitor_socket()
            first.stopping.set()
            thread.join(STOP_WAIT)
            first.server.close()
            deadline = time.monotonic() + 10
            while True:  # libzmq lets the port go in its I/O thread, after close returns
                try:
                    servers.append(Server(CurveServer(server_keys, node.endpoint, others, ctx=ctx)))
                    break
                except CurveError:
                    assert time.monotonic() < deadline, "the first server's port was never let go"
                    time.sleep(0.01)
            while True:  # until the new server has refused the client's key
                assert monitor.poll(max(1, int((deadline - time.monotonic()) * 1000))), "no refusal seen"
                if zmq.utils.monitor.recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                    break
            monitor.close()
            socket = client._connections[node.endpoint].socket
            while socket.poll(10, zmq.POLLOUT):  # until the socket has taken the connection's end in
                assert time.monotonic() < deadline, "the refused connection still takes messages"
            started = time.monotonic()
            with pytest.raises(NodeUnavailableError, match="accepted its key") as refused:
                client.call("hello")
            assert time.monotonic() - started < TIMEOUT + 2.0
            assert refused.value.listening is True  # its port is open: a key matter, not a down node
            assert client._connections == {}  # the next call connects afresh
    finally:
        for server in servers:
            server.stopping.set()
            server.server.close()
        stop_authenticator(ctx)
        ctx.destroy(linger=0)


def test_a_client_of_a_node_nothing_listens_for_is_told_before_its_timeout(
    served: tuple[Server, NodeAddress, KeyPair],
) -> None:
    # outsider o17: told only at the client's timeout, 10 s by default, that nothing listened.
    # Past the first second without a reply the client looks; a node that listens is waited for.
    server, node, keys = served
    closed = NodeAddress(f"tcp://127.0.0.1:{free_port()}", node.key)
    patience = 30.0
    with Client(closed, keys, timeout=patience) as client:
        started = time.monotonic()
        with pytest.raises(NodeUnavailableError, match="nothing accepts a connection") as down:
            client.call("hello")
        assert time.monotonic() - started < patience / 2
        assert down.value.listening is False and "no answer within 1 s" in str(down.value)
    server.answering.set()
    server.slowness = 1.5  # past the first wait: the client looks, finds it listening, waits on
    with Client(node, keys, timeout=patience) as client:
        assert client.call("hello") == {"cmd": "hello"}
        assert server.read == 1
