"""The Python client of the ingest protocol (docs/PROTOCOL.md, section 6).

A :class:`Client` holds one CURVE DEALER connection per node it has talked to. ``call``
sends one request and waits for its reply; ``call_many`` keeps a window of requests in flight
on one connection, which is how a single client reaches the store's group-commit rate.
A request answered ``not_home`` (a write sent to a node that is not its ledger's home, or a
read of a ledger the node neither holds nor homes: docs/PROTOCOL.md 6.1) is sent again, once,
to the home node the answer names. A request answered ``throttled`` is sent again after the
``retry_after_ms`` the node asks for, for up to ``timeout`` seconds in all; nothing was done for
it (the throttle answers before any command runs), so sending it again is safe. A reader that
must see one node's own state (the verifier, a follower) makes its client with ``follow=False``.
"""

from __future__ import annotations

import itertools
import logging
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

from ..node.errors import BadRequestError, NodeUnavailableError, RemoteError
from ..node.record import Entry
from ..node.wire import encode_request
from .curve import curve_client, process_context
from .keys import PUBLIC_SUFFIX, KeyPair, generation_name, load_public, newest_generation

if TYPE_CHECKING:
    from ..config.cluster import ClusterConfig

log = logging.getLogger(__name__)
# pyzmq's compiled send, without the Python wrapper of zmq.Socket.send (which only adds the
# DRAFT routing_id and group arguments, unused here): one call a request.
_send = zmq.backend.Socket.send
_NOBLOCK = int(zmq.NOBLOCK)
_POLLOUT = int(zmq.POLLOUT)
SEND_POLL_S = 0.1  # a send that found no way to the node looks again this often, to its deadline


@dataclass(frozen=True, slots=True)
class NodeAddress:
    endpoint: str
    key: str  # the node's z85 public key
    # More endpoints of the same node and key: its rotation endpoint, which serves a new key
    # while the node's main one still serves the old (docs/PROTOCOL.md 16.6).
    also: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.endpoint


class _Connection:
    def __init__(
        self, ctx: zmq.Context[Any], node: NodeAddress, keys: KeyPair, max_message_bytes: int, timeout: float
    ) -> None:
        self.node = node
        self.keys = keys
        self.socket = curve_client(ctx, zmq.DEALER, node.key, keys)
        self.socket.maxmsgsize = 2 * max_message_bytes
        # A reply is waited for inside libzmq's recv (the GIL released), not by a poll first:
        # pyzmq's Socket.poll builds a Poller each call, and a recv that found nothing raised
        # zmq.Again before it; under pipelined puts a client waited so about once a reply.
        # The first wait ends at LISTEN_CHECK_S, to tell a node nothing listens for at once.
        self.socket.rcvtimeo = _first_wait_ms(timeout)
        if node.also:
            # Requests go only to an endpoint whose handshake succeeded (the one serving this
            # key), never queued behind one that refuses it; no such endpoint: the send times out.
            self.socket.immediate = True
        for endpoint in (node.endpoint, *node.also):
            self.socket.connect(endpoint)

    def close(self) -> None:
        self.socket.close(linger=0)


LISTEN_PROBE_S = 1.0  # at most this long for a TCP connect to a silent node's endpoint (a dropped SYN)
# A reply not come by then: is anything listening? A client of a node that is down learnt it
# only at its timeout, 10 s by default (outsider o17); one listening is waited for to the timeout.
LISTEN_CHECK_S = 1.0


def _first_wait_ms(timeout: float) -> int:
    return max(1, int(min(timeout, LISTEN_CHECK_S) * 1000))


def _silent(node: NodeAddress, message: str, patience: float) -> NodeUnavailableError:
    """The error of ``node``'s silence, ``listening`` False when nothing accepts a TCP
    connection at any of its endpoints. A node that refuses a key answers nothing either, so
    "no answer" sent every user to their key, also of a node that was down or waiting for room
    on a full disk before it listens (outsider o15 #5c); a closed port tells that apart, and
    reveals nothing of accounts."""
    addresses = [address for address in map(_tcp_address, (node.endpoint, *node.also)) if address is not None]
    wait = min(LISTEN_PROBE_S, patience)
    if not addresses:
        return NodeUnavailableError(message)
    found = [_accepts(address, wait) for address in addresses]
    if any(found):
        return NodeUnavailableError(message, listening=True)
    if None in found:  # a connect that timed out: a full accept queue drops SYNs too (review r23)
        return NodeUnavailableError(message)
    return NodeUnavailableError(
        f"{message}, and nothing accepts a connection at {', '.join(map(str, (node.endpoint, *node.also)))}: "
        "the node is down or not serving yet (one started on a full disk waits for room before it listens)",
        listening=False,
    )


def _tcp_address(endpoint: str) -> tuple[str, int] | None:
    """(host, port) of a ``tcp://`` endpoint; None for another transport or a wildcard."""
    if not endpoint.startswith("tcp://"):
        return None
    host, _, port = endpoint[len("tcp://") :].rpartition(":")
    if not host or host == "*" or not port.isdigit():
        return None
    return host.removeprefix("[").removesuffix("]"), int(port)


def _accepts(address: tuple[str, int], wait: float) -> bool | None:
    """True: a connection was accepted; False: refused or unreachable; None: no answer in time."""
    try:
        socket.create_connection(address, timeout=wait).close()
    except TimeoutError:
        return None
    except OSError:
        return False
    return True


class Client:
    def __init__(
        self,
        node: NodeAddress,
        keys: KeyPair,
        *,
        timeout: float = 10.0,
        max_message_bytes: int = 1024 * 1024,
        ctx: zmq.Context[Any] | None = None,
        follow: bool = True,
    ) -> None:
        self.node = node
        self.follow = follow  # send a request answered not_home again to the home it names
        self.keys = keys
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self._ctx = ctx or process_context()
        self._connections: dict[str, _Connection] = {}
        self._ids = itertools.count(1)

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    def set_timeout(self, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for each reply from now on, on the open connections too
        (a caller with an overall deadline gives each call only the time left)."""
        self.timeout = timeout
        for connection in self._connections.values():
            connection.socket.rcvtimeo = _first_wait_ms(timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connection(self, node: NodeAddress) -> _Connection:
        connection = self._connections.get(node.endpoint)
        # ``is`` first: a client's calls name the same address and keys each time, and comparing
        # two dataclasses field by field was a lone put's dearest step here.
        if (
            connection is None
            or (connection.node is not node and connection.node != node)
            or (connection.keys is not self.keys and connection.keys != self.keys)
        ):
            if connection is not None:  # the node's key or endpoints, or ours, changed (a key rotation)
                connection.close()
            connection = self._connections[node.endpoint] = _Connection(
                self._ctx, node, self.keys, self.max_message_bytes, self.timeout
            )
        return connection

    # --- requests -------------------------------------------------------------------

    def call(self, cmd: str, args: dict[str, Any] | None = None, *, node: NodeAddress | None = None) -> Any:
        """Send one request and return its result; a refusal raises RemoteError with its code."""
        return self.call_many([(cmd, args or {})], node=node)[0]

    def call_many(
        self, requests: Sequence[tuple[str, dict[str, Any]]], *, node: NodeAddress | None = None, window: int = 64
    ) -> list[Any]:
        """Results of many requests, sent with up to ``window`` in flight; raises the first refusal.

        ``window`` at most the node's ``max_queued_replies`` (256 by default, PROTOCOL 6): past
        it the node may drop answers, and this waits for them until ``timeout`` (NodeUnavailableError)."""
        node = node or self.node
        results = self._exchange(requests, node, window)
        if len(results) == 1 and not isinstance(results[0], RemoteError):
            return results  # a lone request answered (a clerk's put): nothing to retry or raise
        deadline = time.monotonic() + self.timeout
        while True:
            throttled = [i for i, r in enumerate(results) if isinstance(r, RemoteError) and r.code == "throttled"]
            if not throttled:
                break
            wait = max(_retry_after_s(results[i]) for i in throttled)
            if time.monotonic() + wait > deadline:
                break  # the key stays throttled past the client's patience: the refusal is the answer
            time.sleep(wait)
            again = self._exchange([requests[i] for i in throttled], node, window)
            for index, result in zip(throttled, again, strict=True):
                results[index] = result
        failed = next((r for r in results if isinstance(r, RemoteError)), None)
        if failed is not None:
            raise failed
        return results

    def _exchange(self, requests: Sequence[tuple[str, dict[str, Any]]], node: NodeAddress, window: int) -> list[Any]:
        """Every request's result or RemoteError, in request order; not_home is followed once."""
        connection = self._connection(node)
        if len(requests) == 1:
            # A lone request (a clerk's put, any call): no window, queue or map of ids to keep,
            # which cost a sequential put a sixth of the client's own CPU time (p32).
            request_id = self._send_request(connection, node, *requests[0])
            reply = self._receive(connection)
            while reply.get("id") != request_id:  # the reply to a request an earlier call gave up on
                reply = self._receive(connection)
            results: list[Any] = [_result_of(reply)]
        else:
            results = [None] * len(requests)
            pending: dict[int, int] = {}  # request id -> index
            queue = iter(enumerate(requests))
            while True:
                while len(pending) < window:
                    item = next(queue, None)
                    if item is None:
                        break
                    index, (cmd, args) = item
                    pending[self._send_request(connection, node, cmd, args)] = index
                if not pending:
                    break
                reply = self._receive(connection)
                index = pending.pop(reply.get("id"), -1)  # type: ignore[arg-type]
                if index >= 0:  # else the reply to a request an earlier call gave up on
                    results[index] = _result_of(reply)
        if self.follow:
            for index, result in enumerate(results):
                if not (isinstance(result, RemoteError) and result.code == "not_home"):
                    continue
                home = named_home(result)
                if home is None or home.endpoint == node.endpoint:
                    continue
                log.info("%s: the ledger's home is %s; sending there", requests[index][0], home)
                results[index] = self._exchange([requests[index]], home, 1)[0]
        return results

    def _send_request(self, connection: _Connection, node: NodeAddress, cmd: str, args: dict[str, Any]) -> int:
        """Send one request on ``connection``; its id."""
        request_id = next(self._ids)
        data = encode_request(request_id, cmd, args)
        if len(data) > self.max_message_bytes:
            raise BadRequestError(f"{cmd}: request is {len(data)} bytes, over {self.max_message_bytes}")
        try:
            _send(connection.socket, data, _NOBLOCK)
        except zmq.Again:
            self._send_when_possible(connection, node, data)
        return request_id

    def _send_when_possible(self, connection: _Connection, node: NodeAddress, data: bytes) -> None:
        """Send ``data`` once the socket has a way to the node, or raise NodeUnavailableError at
        the client's timeout. A socket has none when every handshake was refused: the endpoints of
        a rotating node (``immediate``), or a node that came back under another key, whose refusal
        ends the connection for good. The wait is ours, by the monotonic clock: libzmq's blocking
        send waited for ever without a send timeout, and a CI run hung 26 min in one. As a reply
        (:meth:`_receive_late`), a way not found within LISTEN_CHECK_S is looked into: nothing
        listening at any endpoint is said then, not at the timeout (a rotated node's socket is
        ``immediate``: it has no way to a node that is down, review r29)."""
        started = time.monotonic()
        deadline = started + self.timeout
        looked = False
        while (left := deadline - time.monotonic()) > 0:
            connection.socket.poll(max(1, int(min(left, SEND_POLL_S) * 1000)), _POLLOUT)
            try:
                _send(connection.socket, data, _NOBLOCK)
                return
            except zmq.Again:
                pass
            if not looked and time.monotonic() - started >= LISTEN_CHECK_S:
                looked = True
                waited = f"{node.endpoint}: no way to the node within {LISTEN_CHECK_S:g} s"
                down = _silent(node, waited, deadline - time.monotonic())
                if down.listening is False:
                    self._forget(connection)
                    raise down
        self._forget(connection)  # a socket without a way to the node stays so
        refused = f"no endpoint of the node accepted its key {node.key[:8]}... within {self.timeout:g} s"
        raise _silent(node, f"{node.endpoint}: {refused}", self.timeout)

    def _receive(self, connection: _Connection) -> dict[str, Any]:
        try:
            data = connection.socket.recv()  # waits up to the socket's rcvtimeo (the first wait)
        except zmq.Again:
            data = self._receive_late(connection)
        try:
            reply = msgpack.unpackb(data, raw=False)
        except (ValueError, msgpack.UnpackException) as e:
            raise NodeUnavailableError(f"{connection.node}: unreadable reply: {e}") from e
        if not isinstance(reply, dict):
            raise NodeUnavailableError(f"{connection.node}: a reply that is not a map")
        return reply

    def _receive_late(self, connection: _Connection) -> bytes:
        """A reply not come within the first wait: none at once if nothing listens at any of the
        node's endpoints; else waited for to the client's timeout. NodeUnavailableError without one."""
        node = connection.node
        waited = _first_wait_ms(self.timeout) / 1000
        if waited < self.timeout:
            started = time.monotonic()
            down = _silent(node, f"{node}: no answer within {waited:g} s", self.timeout - waited)
            left = self.timeout - waited - (time.monotonic() - started)
            if down.listening is False or left <= 0:
                self._forget(connection)
                raise down
            connection.socket.rcvtimeo = max(1, int(left * 1000))
            try:
                return bytes(connection.socket.recv())
            except zmq.Again:
                pass
            finally:
                connection.socket.rcvtimeo = _first_wait_ms(self.timeout)
        self._forget(connection)
        raise _silent(node, f"{node}: no answer within {self.timeout:g} s", self.timeout)

    def _forget(self, connection: _Connection) -> None:
        """Close ``connection`` and connect afresh next time: a late reply on it must not be read
        as the answer to a later request."""
        connection.close()
        self._connections.pop(connection.node.endpoint, None)

    # --- conveniences ---------------------------------------------------------------

    def hello(self) -> dict[str, Any]:
        return self.call("hello")  # type: ignore[no-any-return]

    def put(self, entry: Entry) -> dict[str, Any]:
        """Append a prepared entry on its ledger's home node; returns the receipt."""
        return self.put_many([entry])[0]

    def put_many(self, entries: Iterable[Entry], window: int = 64) -> list[dict[str, Any]]:
        requests = [("put", {"content": e.content_bytes, "nonce": e.nonce}) for e in entries]
        return self.call_many(requests, window=window)

    def create_ledger(self, genesis: Entry, *, keep_grants: bool = False) -> dict[str, Any]:
        """Start a ledger from ``genesis``; ``keep_grants``: even if another account holds a kind
        of it that moves votes or money (PROTOCOL 16.2: refused ``already_granted`` otherwise)."""
        args: dict[str, Any] = {"content": genesis.content_bytes, "nonce": genesis.nonce}
        if keep_grants:
            args["keep_grants"] = True
        return self.call("ledger.create", args)  # type: ignore[no-any-return]

    def records(self, ledger: str, start: int = 0) -> Iterator[bytes]:
        """Every record's bytes from ``start`` to the head, a page at a time."""
        next_height: int | None = start
        while next_height is not None:
            page = self.call("range", {"ledger": ledger, "start": next_height})
            yield from page["records"]
            next_height = page["next"]


def _result_of(reply: dict[str, Any]) -> Any:
    """A reply's result, or its RemoteError."""
    if reply.get("ok") is True:
        return reply.get("result")
    return _remote_error(reply)


def _remote_error(reply: dict[str, Any]) -> RemoteError:
    error = reply.get("error")
    if not isinstance(error, dict):
        return RemoteError("bad_reply", "the node answered with an error but no error map", {})
    code = error.get("code")
    message = error.get("message")
    details = {k: v for k, v in error.items() if k not in ("code", "message")}
    return RemoteError(str(code), str(message), details)


def _retry_after_s(error: RemoteError) -> float:
    """How long a throttled request waits before it is sent again: what the node asked, within reason."""
    asked = error.details.get("retry_after_ms")
    if not isinstance(asked, int) or isinstance(asked, bool):
        asked = 100
    return min(max(asked, 1), 10_000) / 1000


def named_home(error: Any) -> NodeAddress | None:
    """The address a ``not_home`` refusal names (its ``"home"``), as the answering node states it."""
    if not isinstance(error, RemoteError):
        return None
    home = error.details.get("home")
    if not isinstance(home, dict) or not isinstance(home.get("endpoint"), str) or not isinstance(home.get("key"), str):
        return None
    return NodeAddress(home["endpoint"], home["key"])


def node_address(config: ClusterConfig, name: str) -> NodeAddress:
    """How a client reaches node ``name``: its newest key in the key directory (PROTOCOL 16.6),
    on its endpoint and, once its keys rotated, its rotation endpoint too (which serves the new
    key while the endpoint still serves the old one, until the window ends)."""
    node = config.node(name)
    generation = newest_generation(config.keys_dir, node.name)
    key = load_public(config.keys_dir / f"{generation_name(node.name, generation)}{PUBLIC_SUFFIX}")
    also = (node.rotation_endpoint,) if generation > 0 and node.rotation_endpoint is not None else ()
    return NodeAddress(node.endpoint, key, also)
