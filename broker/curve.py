"""CURVE sockets whose clients are checked against a live allow-list, and the check that they are.

libzmq asks a ZAP handler whether a CURVE client may connect, but only a handler in the
*same* Context as the server socket; with none there, it admits any client that knows the
server's public key (docs: shared/NOTES.md, "Trap"). So:

* a process has one Context (:func:`process_context`), and each Context has at most one
  ``ThreadAuthenticator``, shared by every :class:`CurveServer` in it and kept until
  :func:`stop_authenticator` (call it before terminating the Context);
* the authenticator asks an :class:`AllowList` (a set of Z85 public keys that can be
  replaced at any time) for each new handshake, so a change applies to the next
  connection at once; connections already made stay open, so a server must still check
  each command's sender (:func:`sender_key`, or :class:`SenderKeys` per message) against
  the current accounts;
* :meth:`CurveServer.self_test` connects a client with a random, unlisted key and refuses
  to go on unless the handshake is refused (AuthSelfTestError).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from ..config.settings import BrokerSettings
from ..node.errors import AuthSelfTestError, CurveError
from .keys import KeyPair, check_public_key, new_keypair

if TYPE_CHECKING:  # imported where a server is guarded: a client needs neither it nor its
    # prometheus-client and HTTP helpers (the CLI's start-up, tools/cli.py)
    from .curve_guard import ConnectionGuard

logger = logging.getLogger(__name__)

DEFAULT_SETTINGS = BrokerSettings()
HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


def reply_queue_mark(max_queued_replies: int) -> int:
    """The request ROUTER's ZMQ_SNDHWM for a connection that keeps ``max_queued_replies``
    requests in flight (PROTOCOL 6): twice that, and two.

    A ROUTER drops an answer when its queue looks full, and it looks fuller than it is: the
    I/O thread tells the queue's writer of what it has read only every half-mark (libzmq's
    compute_lwm, (mark + 1) // 2), so up to half the mark less one answers the client already
    holds still count. At a mark of ``max_queued_replies`` a client within the promise lost
    answers (tests/integration/ingest/test_curve_limits.py); at 2N - 2 the N - 1 others and
    the unheard half-mark fit, the two more are margin. A client that never reads holds at
    most this many answers of the node.
    """
    return 2 * max_queued_replies + 2


# The socket a throwaway client uses to reach each kind of server socket in the self-test.
_PEER_TYPES: dict[int, int] = {
    zmq.ROUTER: zmq.DEALER,
    zmq.DEALER: zmq.DEALER,
    zmq.REP: zmq.REQ,
    zmq.REQ: zmq.REP,
    zmq.PUB: zmq.SUB,
    zmq.XPUB: zmq.SUB,
    zmq.SUB: zmq.PUB,
    zmq.PULL: zmq.PUSH,
    zmq.PUSH: zmq.PULL,
    zmq.PAIR: zmq.PAIR,
}


def process_context() -> zmq.Context[Any]:
    """The one Context of this process (ZeroMQ's own singleton, made anew after a fork)."""
    return zmq.Context.instance()


class AllowList:
    """The Z85 public keys that may complete a CURVE handshake; thread-safe and replaceable.

    The authenticator thread calls :meth:`callback` for every handshake; any other thread
    may :meth:`replace` the whole set (the accounts cache does, on each change).
    """

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._keys = frozenset(check_public_key(k) for k in keys)
        self._catch_up: Callable[[], bool] | None = None

    def on_unknown(self, catch_up: Callable[[], bool]) -> None:
        """Call ``catch_up`` (on the authenticator's thread) for a key not on the list before it
        is refused; True means it brought the list up to date, and the key is looked up again.
        It must not raise, and must bound its own cost: anyone can offer unknown keys."""
        self._catch_up = catch_up

    def replace(self, keys: Iterable[str]) -> None:
        new = frozenset(check_public_key(k) for k in keys)
        with self._lock:
            self._keys = new
        logger.info("CURVE allow-list now holds %d keys", len(new))

    def keys(self) -> frozenset[str]:
        with self._lock:
            return self._keys

    def __contains__(self, key: object) -> bool:
        if isinstance(key, bytes):
            key = key.decode("ascii", "replace")
        with self._lock:
            return key in self._keys

    def callback(self, domain: str, key: bytes) -> bool:
        """What ``configure_curve_callback`` calls: is this Z85 key (bytes) allowed?"""
        allowed = key in self
        if not allowed and self._catch_up is not None and self._catch_up():
            allowed = key in self
        if not allowed:
            # At debug level: anyone can make handshakes, and so lines of this log.
            logger.debug("refused CURVE client %s (domain %s)", key.decode("ascii", "replace"), domain)
        return allowed


@dataclass
class _Gate:
    """The authenticator of one Context, and per ZAP domain its allow-list and its servers."""

    authenticator: ThreadAuthenticator
    domains: dict[str, tuple[AllowList, int]] = field(default_factory=dict)


# The authenticator of a Context lives as long as the Context: libzmq unbinds the ZAP
# endpoint of a closed authenticator only later, so one cannot be stopped and started again
# at will. stop_authenticator() ends it, before the Context is terminated.
_gates: dict[int, _Gate] = {}
_gates_lock = threading.Lock()


def _acquire_gate(ctx: zmq.Context[Any], domain: str, allow_list: AllowList) -> ThreadAuthenticator:
    with _gates_lock:
        gate = _gates.get(id(ctx))
        if gate is None:
            authenticator = ThreadAuthenticator(ctx)
            authenticator.start()
            gate = _gates[id(ctx)] = _Gate(authenticator)
        current, users = gate.domains.get(domain, (allow_list, 0))
        if current is not allow_list:
            raise CurveError(f"ZAP domain {domain!r} already has another allow-list in this Context")
        if users == 0:
            gate.authenticator.configure_curve_callback(domain=domain, credentials_provider=allow_list)
        gate.domains[domain] = (allow_list, users + 1)
        return gate.authenticator


def _release_gate(ctx: zmq.Context[Any], domain: str) -> None:
    with _gates_lock:
        gate = _gates.get(id(ctx))
        if gate is None or domain not in gate.domains:
            return
        allow_list, users = gate.domains[domain]
        if users > 1:
            gate.domains[domain] = (allow_list, users - 1)
            return
        del gate.domains[domain]
        # A domain nobody serves refuses every client ("Unknown domain"), and may get a new list.
        gate.authenticator.credentials_providers.pop(domain, None)


def stop_authenticator(ctx: zmq.Context[Any]) -> None:
    """Stop the authenticator of ``ctx`` (before ``ctx.term()``); its servers must be closed."""
    with _gates_lock:
        gate = _gates.get(id(ctx))
        if gate is None:
            return
        if gate.domains:
            raise CurveError(f"CURVE servers still open in this Context (domains {sorted(gate.domains)})")
        del _gates[id(ctx)]
        gate.authenticator.stop()


def curve_server_socket(
    ctx: zmq.Context[Any],
    socket_type: int,
    keys: KeyPair,
    max_message_bytes: int,
    domain: str = "*",
    options: Mapping[int, int] | None = None,
    handshake_interval_ms: int = DEFAULT_SETTINGS.handshake_interval_ms,
) -> zmq.Socket[Any]:
    """A socket set up as a CURVE server, not yet bound. It is safe only once a ZAP handler
    runs in ``ctx``: use :class:`CurveServer`, which makes sure of that. ``options`` are set
    before the bind: libzmq copies options such as the high-water marks at bind time."""
    sock: zmq.Socket[Any] = ctx.socket(socket_type)
    sock.linger = 0
    sock.handshake_ivl = handshake_interval_ms
    for option, value in (options or {}).items():
        sock.setsockopt(option, value)
    sock.curve_secretkey = keys.secret.encode("ascii")
    sock.curve_publickey = keys.public.encode("ascii")
    sock.curve_server = True
    sock.maxmsgsize = max_message_bytes
    if domain != "*":
        sock.zap_domain = domain.encode("ascii")
    return sock


def curve_client(ctx: zmq.Context[Any], socket_type: int, server_public: str, client_pair: KeyPair) -> zmq.Socket[Any]:
    """A socket that will speak CURVE to a server with public key ``server_public``; connect it."""
    sock: zmq.Socket[Any] = ctx.socket(socket_type)
    sock.linger = 0
    sock.curve_serverkey = check_public_key(server_public).encode("ascii")
    sock.curve_publickey = client_pair.public.encode("ascii")
    sock.curve_secretkey = client_pair.secret.encode("ascii")
    return sock


def _user_id(frame: zmq.Frame) -> str:
    try:
        user_id = frame.get("User-Id")
    except zmq.ZMQError:
        raise CurveError("message has no User-Id: it did not pass the ZAP authenticator") from None
    if not isinstance(user_id, str):
        raise CurveError("message has no User-Id: it did not pass the ZAP authenticator")
    return user_id


def sender_key(frame: zmq.Frame) -> str:
    """The Z85 public key of the client that sent this frame (from a ``recv(copy=False)``).

    Raises CurveError if the frame carries none: then no ZAP handler saw the handshake,
    and the message must not be trusted.
    """
    return check_public_key(_user_id(frame))


class SenderKeys:
    """:func:`sender_key` for a server's every message: a User-Id is checked as a Z85 key the
    first time it is seen, not on each message. Holds at most ``size`` keys; one thread only."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._checked: dict[str, str] = {}

    def key_of(self, frame: zmq.Frame) -> str:
        user_id = _user_id(frame)
        key = self._checked.get(user_id)
        if key is None:
            key = check_public_key(user_id)
            if len(self._checked) >= self.size:
                self._checked.clear()  # many keys seen once: start again rather than grow
            self._checked[user_id] = key
        return key


def wait_for_event(monitor: zmq.Socket[Any], events: int, timeout: float) -> dict[str, Any] | None:
    """The first monitor event among ``events`` (a bit mask) within ``timeout`` seconds, else None."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not monitor.poll(max(1, int(left * 1000)), zmq.POLLIN):
            continue
        event: dict[str, Any] = dict(recv_monitor_message(monitor))
        if int(event["event"]) & events:
            return event
    return None


def check_refuses_unlisted(
    ctx: zmq.Context[Any], endpoint: str, server_public: str, socket_type: int, timeout: float
) -> None:
    """Connect a client with a fresh random key to ``endpoint``; raise unless it is refused.

    Proof by the client's monitor: EVENT_HANDSHAKE_FAILED_AUTH passes; a completed
    handshake means the server admits strangers (no ZAP handler in its Context), and
    anything else (no handshake within ``timeout``, a protocol failure) proves nothing:
    both raise AuthSelfTestError.
    """
    peer_type = _PEER_TYPES.get(socket_type)
    if peer_type is None:
        raise CurveError(f"no self-test client for socket type {socket_type}")
    client = curve_client(ctx, peer_type, server_public, new_keypair())
    monitor_endpoint = f"inproc://vledger-self-test-{id(client)}-{time.monotonic_ns()}"
    client.monitor(monitor_endpoint, HANDSHAKE_EVENTS)
    monitor = ctx.socket(zmq.PAIR)
    monitor.linger = 0
    try:
        monitor.connect(monitor_endpoint)
        client.connect(endpoint)
        event = wait_for_event(monitor, HANDSHAKE_EVENTS, timeout)
    finally:
        client.disable_monitor()
        client.close(linger=0)
        monitor.close(linger=0)
    if event is None:
        raise AuthSelfTestError(
            f"self-test: no CURVE handshake with {endpoint} within {timeout} s; cannot prove refusal"
        )
    if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
        raise AuthSelfTestError(
            f"self-test: {endpoint} admitted a client with a random, unlisted key: no ZAP authenticator "
            "runs in the server socket's Context; refusing to serve"
        )
    if event["event"] != zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        raise AuthSelfTestError(
            f"self-test: handshake with {endpoint} failed for another reason (event {event['event']})"
        )
    logger.info("self-test: %s refused an unlisted CURVE key", endpoint)


class CurveServer:
    """A bound CURVE server socket whose clients must be in ``allow_list``.

    Starts (or shares) the ThreadAuthenticator of ``ctx``, the process Context by default,
    before the socket is bound, so that no client can connect before the check is in place.
    Call :meth:`self_test` before serving. Use as a context manager, or call :meth:`close`.

    A ``guarded`` server caps its connections per client address and in all (curve_guard.py,
    within the process's file budget); a guarded ROUTER, which answers requests, also queues at
    most :func:`reply_queue_mark` answers for each (about twice ``settings.max_queued_replies``,
    the requests a client may keep in flight): a ROUTER drops what finds that queue full (no
    ZMQ_ROUTER_MANDATORY), so a client that does not read holds at most that many answers of
    the node's memory. (A feed's PUB has its own ``send_hwm``: Publisher.)
    """

    def __init__(
        self,
        keys: KeyPair,
        endpoint: str,
        allow_list: AllowList,
        *,
        socket_type: int = zmq.ROUTER,
        settings: BrokerSettings = DEFAULT_SETTINGS,
        ctx: zmq.Context[Any] | None = None,
        domain: str = "*",
        options: Mapping[int, int] | None = None,
        guarded: bool = False,
    ) -> None:
        self.ctx = ctx if ctx is not None else process_context()
        self.keys = keys
        self.allow_list = allow_list
        self.socket_type = socket_type
        self.settings = settings
        self.domain = domain
        self.authenticator = _acquire_gate(self.ctx, domain, allow_list)
        self._closed = False
        self.guard: ConnectionGuard | None = None
        if guarded and socket_type == zmq.ROUTER:
            options = {
                **(options or {}),
                zmq.SNDHWM: reply_queue_mark(settings.max_queued_replies),
                zmq.SNDBUF: settings.send_buffer_bytes,
            }
        try:
            self.socket = curve_server_socket(
                self.ctx, socket_type, keys, settings.max_message_bytes, domain, options, settings.handshake_interval_ms
            )
            try:
                if guarded:  # before the bind: every connection is counted
                    from .curve_guard import ConnectionGuard  # noqa: PLC0415 - see the TYPE_CHECKING import

                    self.guard = ConnectionGuard(self.ctx, settings, f"CURVE {endpoint}")
                    self.guard.attach(self.socket)
                self.socket.bind(endpoint)
            except zmq.ZMQError as e:
                self._stop_guard()
                self.socket.close(linger=0)
                raise CurveError(f"cannot bind {endpoint}: {e.strerror}") from e
        except BaseException:
            _release_gate(self.ctx, domain)
            raise
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        logger.info("CURVE server %s listening on %s", keys.fingerprint, self.endpoint)

    @property
    def connect_endpoint(self) -> str:
        """Where a local client reaches this socket (a wildcard address becomes loopback)."""
        for wildcard, loopback in (("tcp://0.0.0.0:", "tcp://127.0.0.1:"), ("tcp://[::]:", "tcp://[::1]:")):
            if self.endpoint.startswith(wildcard):
                return loopback + self.endpoint[len(wildcard) :]
        return self.endpoint

    def self_test(self, timeout: float | None = None) -> None:
        """Raise AuthSelfTestError unless a random unlisted key is refused by this socket."""
        if timeout is None:
            timeout = self.settings.handshake_timeout_ms / 1000
        check_refuses_unlisted(self.ctx, self.connect_endpoint, self.keys.public, self.socket_type, timeout)

    def close(self, linger_ms: int = 0) -> None:
        """Close the socket; with ``linger_ms``, replies already queued still go out for that
        long once the Context terminates (a clean shutdown), else they are dropped."""
        if self._closed:
            return
        self._closed = True
        self._stop_guard()
        self.socket.close(linger=linger_ms)
        _release_gate(self.ctx, self.domain)

    def _stop_guard(self) -> None:
        if self.guard is not None:
            self.guard.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
