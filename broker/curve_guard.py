"""Caps on the connections of a CURVE server socket, which libzmq has no option for.

A TCP peer that never sends a ZMTP greeting holds a descriptor until the handshake interval
ends, and never reaches the ZAP handler, so only the socket's monitor sees it: EVENT_ACCEPTED
carries the new connection's descriptor, EVENT_DISCONNECTED the same descriptor when libzmq
lets it go. :class:`ConnectionGuard` counts them per client address and in all, from a thread
of its own, and cuts a connection past either cap with ``shutdown(2)``: libzmq then reads the
end of the stream and closes the descriptor itself (closing it here would hand its number to
the next file opened while libzmq still uses it). Four processes of silent connections filled
a node's 20,000 files in 24 s and then every connect timed out (outsider pass 21, F4).

Only connections that hold nothing are cut so. Cutting one whose queue of answers was full
(a client that does not read) left later connections unanswered in a test: libzmq's I/O thread
no longer brought their requests to the socket. Such a client is bounded by the socket's
ZMQ_SNDHWM instead (CurveServer, ``reply_queue_mark``): past it, its answers are dropped.

A descriptor is counted only if its local address is the one libzmq accepted it on (the event's
endpoint), and cut only while it still names the connection it was counted as (the same local
and peer addresses): libzmq may have closed it, and the number been given to another file,
before this thread read the event; counting, and at the cap cutting, one of the node's own
outgoing sockets (Redis, a range source) that took the number would break it.

Two facts of libzmq's monitor (4.3.5) shape the rest. It sends each event from the Context's
I/O thread with a blocking send into a PAIR of its own: once nothing reads that PAIR's peer any
more (a guard's reader closed, or its thread ended, while the socket was still monitored), the
next event blocks the I/O thread for good, and no socket of the Context accepts, shakes hands or
delivers again (python -m bench.monitor_hang shows it; it was what broke the feed's rotation
tests when the feed was first guarded). So :meth:`ConnectionGuard.stop` stops the monitor
before its reader, and the reader's thread outlives anything one event can raise. And a
connection libzmq closes itself, because its listener was unbound (a key rotation's re-bind,
PROTOCOL 16.6) or its number was taken again, gets no EVENT_DISCONNECTED: the guard looks again
at each connection of a listener it saw closed, and gives back those whose descriptor no longer
names them.

Every connection counted also takes a place of the process's :func:`~.file_budget.process_budget`,
shared with its other guarded ports (the request port, the feed, the HTTP ports): one past it
is cut like one past a cap, so that together they never hold the process's last files.

The caps count a connection from its accept, before its CURVE handshake: cutting the newest
past a cap let anyone who shares a client's address (a NAT, the host itself) keep that client
out with silent TCP connections, each renewed as the handshake interval closes it, and anyone
with many addresses do so to every new client. So a connection past a cap takes the place of
the oldest connection in the cap's scope (its address; any, for the others) whose handshake
is **not done**, which is cut instead; only when there is none is the new one cut. Done is read
from the kernel (TCP_INFO's bytes acknowledged): a node sends a peer whose handshake is not
done at most the greeting (64 bytes, ZMTP 3) and a WELCOME (170, CurveZMQ), then, past the
check of its key, a READY; a peer refused gets an ERROR and is closed. An honest client's
handshake takes a few round trips, during which the flood must bring a cap's worth of new
connections to cut it: a flood only cycles through its own connections.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import resource
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import zmq
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from zmq.utils.monitor import recv_monitor_message

from ..config.settings import BrokerSettings
from .file_budget import FileBudget, connection_cap, process_budget
from .http import address_key

log = logging.getLogger(__name__)

_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
_POLL_MS = 200  # how soon the thread sees stop(), and how often it looks again at a closed listener's connections
_LOG_EVERY_S = 10.0  # refusals are logged at most this often (anyone can cause them)

Names = tuple[Any, Any]  # a connection's (local, peer) socket addresses
# struct tcp_info (linux/tcp.h, since Linux 4.1): tcpi_bytes_acked, a u64 at this offset.
_BYTES_ACKED = 120
_TCP_INFO_LENGTH = 256  # more than the struct has ever been: the kernel gives what it has
# The most a CURVE server sends a peer whose handshake is not done: its greeting and a WELCOME
# (a short frame of the 168-byte command). Its READY, sent once the peer's key is let in, passes it.
_BEFORE_READY = 64 + 2 + 168


def raise_file_limit() -> int:
    """Raise this process's soft open-file limit to its hard limit; the limit now in force.

    Every connection a server socket holds is a descriptor: the caps below are lowered to the
    soft limit less FILES_KEPT (broker/file_budget.py), and a default soft limit of 1,024 would leave little room."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, e)
            return soft
        log.info("open-file limit raised from %d to %d", soft, hard)
    return hard


@contextlib.contextmanager
def _borrowed(fd: int) -> Iterator[socket.socket]:
    """Descriptor ``fd`` as a socket for a few calls, left open (it stays libzmq's); OSError if it is none."""
    sock = socket.socket(fileno=fd)
    try:
        yield sock
    finally:
        sock.detach()


def _names(fd: int) -> Names | None:
    """The local and peer addresses of descriptor ``fd`` if it is a connected socket, else None."""
    try:
        with _borrowed(fd) as sock:
            return sock.getsockname(), sock.getpeername()
    except OSError:
        return None


def _accepted_here(local: Any, endpoint: bytes) -> bool:
    """Whether local socket address ``local`` is the one of ``endpoint``, an EVENT_ACCEPTED's: the
    address libzmq accepted the connection on (4.3: read from the accepted descriptor; before
    it, the listener's, which a wildcard address names only by its port)."""
    text = endpoint.decode("ascii", "replace")
    if not text.startswith("tcp://"):
        return False
    host, _, port = text[len("tcp://") :].rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        if int(port) != local[1]:
            return False
        if host == "*":
            return True
        bound = ipaddress.ip_address(host)
        return bound.is_unspecified or bound == ipaddress.ip_address(local[0])
    except (ValueError, IndexError, TypeError):
        return False


def _shaking_hands(fd: int, names: Names) -> bool:
    """Whether connection ``fd`` (still with ``names``) has not finished its CURVE handshake: the
    peer acknowledged no byte past a WELCOME. Never, where the kernel does not say."""
    try:
        with _borrowed(fd) as sock:
            if (sock.getsockname(), sock.getpeername()) != names:
                return False
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LENGTH)
    except OSError:
        return False
    return len(info) >= _BYTES_ACKED + 8 and struct.unpack_from("=Q", info, _BYTES_ACKED)[0] <= _BEFORE_READY


def _shutdown(fd: int, names: Names) -> bool:
    """Shut connection ``fd`` down if it still has ``names``; whether it did."""
    try:
        with _borrowed(fd) as sock:
            if (sock.getsockname(), sock.getpeername()) != names:
                return False
            sock.shutdown(socket.SHUT_RDWR)
            return True
    except OSError:
        return False


class ConnectionGuard:
    """Counts the connections of one server socket and cuts those past the caps.

    Start it before the socket is bound (:meth:`attach`), so that no connection goes uncounted;
    :meth:`stop` it before the socket closes.
    """

    def __init__(
        self, ctx: zmq.Context[Any], settings: BrokerSettings, name: str = "curve", budget: FileBudget | None = None
    ) -> None:
        self.ctx = ctx
        self.name = name
        self.per_address = settings.max_connections_per_address
        self.most = connection_cap(name, settings.max_connections)
        self.budget = budget if budget is not None else process_budget()
        self._lock = threading.Lock()  # the counts: the guard's thread writes, others may read
        self._open: dict[int, tuple[Names, str]] = {}  # descriptor -> its names and address key
        # Descriptors counted on a listener since closed: libzmq closes them with no event.
        self._orphans: set[int] = set()
        # Connections seen with their handshake done: it stays done, so they are not looked at again.
        self._done: set[int] = set()
        self._looked = 0.0  # when the orphans were last looked at (time.monotonic)
        self._socket: zmq.Socket[Any] | None = None
        self.by_address: Counter[str] = Counter()
        self.refused = 0  # connections cut past a cap since the start
        self._logged = -_LOG_EVERY_S  # when a cut was last logged
        self._failed_logged = -_LOG_EVERY_S  # when an event not handled was
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._endpoint = ""

    @property
    def open(self) -> int:
        with self._lock:
            return len(self._open)

    def attach(self, sock: zmq.Socket[Any]) -> None:
        """Watch ``sock``'s connections from now on (call before its bind)."""
        self._endpoint = f"inproc://vledger-curve-guard-{id(self)}-{time.monotonic_ns()}"
        monitor = self.ctx.socket(zmq.PAIR)
        monitor.linger = 0
        # Unbounded: a monitor event past the high-water mark is dropped by libzmq, and a lost
        # EVENT_DISCONNECTED would count a connection for ever (an inproc pipe's mark is the sum
        # of both ends', none if either is 0).
        monitor.rcvhwm = 0
        sock.monitor(self._endpoint, _EVENTS)
        self._socket = sock
        monitor.connect(self._endpoint)
        self._thread = threading.Thread(target=self._run, args=(monitor,), name=f"{self.name}-guard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; the connections still counted give their places of the budget back
        (the socket, closed next, closes them)."""
        self._stopping.set()
        self._unmonitor()  # before the reader goes (the module says why)
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._give_back()

    def _unmonitor(self) -> None:
        """Stop libzmq's monitor of the socket: no event goes to the reader from now on.
        libzmq takes the monitor's own lock for it, so the guard's thread may call it too."""
        sock, self._socket = self._socket, None
        if sock is not None:
            with contextlib.suppress(zmq.ZMQError):  # closed with its Context: its monitor went with it
                sock.disable_monitor()

    def _give_back(self) -> None:
        """Give back the budget's places of every connection still counted (once)."""
        with self._lock:
            for _ in self._open:
                self.budget.give()
            self._open.clear()
            self._orphans.clear()
            self._done.clear()
            self.by_address.clear()

    def _run(self, monitor: zmq.Socket[Any]) -> None:
        try:
            while not self._stopping.is_set():
                if self._orphans and time.monotonic() - self._looked >= _POLL_MS / 1000:
                    self._look_at_orphans()
                if not monitor.poll(_POLL_MS, zmq.POLLIN):
                    continue
                event = recv_monitor_message(monitor)
                try:
                    self._on(event)
                except Exception:  # one odd event must not end the reader: libzmq would block on the next
                    now = time.monotonic()
                    if now - self._failed_logged >= _LOG_EVERY_S:  # a client may cause them
                        self._failed_logged = now
                        log.exception("%s guard: monitor event %r not handled", self.name, event)
        except zmq.ContextTerminated as e:  # nothing left to guard; libzmq stopped the monitor itself
            log.debug("%s guard stopped: %s", self.name, e)
        except BaseException:
            log.exception("%s guard: its reader ends, its socket unguarded", self.name)
            self._unmonitor()  # before the reader closes, as stop() does
            raise
        finally:
            monitor.close(linger=0)
            # Its socket's connections are gone with the Context: the places they held in the
            # process's budget, kept, would cut the process's other ports' connections for ever.
            self._give_back()

    def _on(self, event: Mapping[str, Any]) -> None:
        fd = int(event["value"])
        if event["event"] == zmq.EVENT_ACCEPTED:
            self._accepted(fd, event["endpoint"])
        elif event["event"] == zmq.EVENT_DISCONNECTED:
            self._disconnected(fd)
        elif event["event"] == zmq.EVENT_CLOSED:
            self._listener_closed(event["endpoint"])

    def _accepted(self, fd: int, endpoint: bytes) -> None:
        names = _names(fd)
        if names is None or not _accepted_here(names[0], endpoint):
            return  # gone, or its number another file's now: its EVENT_DISCONNECTED comes next, for nothing
        # Still counted under this number: that connection was closed with no event (an orphan
        # not yet looked at again), and the number given to this one.
        self._disconnected(fd)
        address = address_key(names[1])
        with self._lock:
            self._open[fd] = (names, address)
            self.by_address[address] += 1
            within = self.budget.add()
            scope: str | None = None  # the address whose connections may make room; None: any
            if self.by_address[address] > self.per_address:
                reason, scope = f"more than {self.per_address} connections from {address}", address
            elif len(self._open) > self.most:
                reason = f"more than {self.most} connections"
            elif not within:
                reason = f"more than {self.budget.total} connections on all the process's ports"
            else:
                return
            self.refused += 1
            cut = self._oldest_shaking_hands(scope, fd)
            if cut is None:
                cut = fd, names  # counted until libzmq says it let the descriptor go: it holds it until then
            else:
                reason += ": the oldest whose handshake was not done cut"
                # No longer counted from now: its EVENT_DISCONNECTED comes before its number can be
                # accepted again (libzmq sends the event, then closes), and finds nothing.
                self._forget(cut[0])
        _shutdown(*cut)
        self._say(reason)

    def _oldest_shaking_hands(self, scope: str | None, new: int) -> tuple[int, Names] | None:
        """The connection accepted first (``scope``'s address, or any) whose handshake is not done,
        but ``new``; None if there is none. Called with the lock held."""
        for fd, (names, address) in self._open.items():  # in the order they were accepted
            if fd == new or fd in self._done or (scope is not None and address != scope):
                continue
            if _shaking_hands(fd, names):
                return fd, names
            self._done.add(fd)
        return None

    def _listener_closed(self, endpoint: bytes) -> None:
        """A listener of the socket closed (unbound): libzmq closes the connections it accepted,
        with no EVENT_DISCONNECTED, so each is looked at again until it is seen gone."""
        with self._lock:
            self._orphans.update(fd for fd, (names, _) in self._open.items() if _accepted_here(names[0], endpoint))

    def _look_at_orphans(self) -> None:
        """Forget each orphan whose descriptor no longer names its connection (closed, or its
        number given to another file)."""
        self._looked = time.monotonic()
        with self._lock:
            orphans = [(fd, self._open[fd][0]) for fd in self._orphans]
        for fd, names in orphans:
            if _names(fd) != names:
                self._disconnected(fd)

    def _disconnected(self, fd: int) -> None:
        with self._lock:
            self._forget(fd)

    def _forget(self, fd: int) -> None:
        """Stop counting connection ``fd`` (if counted) and give its place back. Called with the lock held."""
        self._orphans.discard(fd)
        self._done.discard(fd)
        known = self._open.pop(fd, None)
        if known is None:
            return
        self.budget.give()
        address = known[1]
        self.by_address[address] -= 1
        if not self.by_address[address]:
            del self.by_address[address]

    def _say(self, reason: str) -> None:
        now = time.monotonic()
        if now - self._logged >= _LOG_EVERY_S:
            self._logged = now
            log.warning("%s: connection cut: %s (%d cut since the start)", self.name, reason, self.refused)


class CurveGuardMetrics(Collector):
    """``vledger_curve_connections{port}`` (open now, handshake done or not) and
    ``vledger_curve_connections_cut_total{port}`` (cut past a cap) of a process's guarded CURVE
    ports, by their name in ``guards`` ("request", "feed"), read at each scrape: a port bound
    after this was registered is counted from then on. A cut was only logged, at most every
    10 s, so a flood showed nowhere an operator watches; a feed's cuts showed nowhere at all."""

    def __init__(self, guards: Mapping[str, ConnectionGuard]) -> None:
        self.guards = guards

    def collect(self) -> Iterator[Metric]:
        guards = list(self.guards.items())  # copied: a port may be added while a scrape runs
        open_now = GaugeMetricFamily(
            "vledger_curve_connections", "open connections of a CURVE port (request, feed)", labels=["port"]
        )
        cut = CounterMetricFamily(
            "vledger_curve_connections_cut",
            "CURVE connections cut past max_connections_per_address, max_connections or the file budget",
            labels=["port"],
        )
        for port, guard in guards:
            open_now.add_metric([port], guard.open)
            cut.add_metric([port], guard.refused)
        yield open_now
        yield cut
