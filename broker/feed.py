"""The replication feed over CURVE PUB/SUB: what a node publishes, and how a subscriber reads it.

A message is two frames (docs/PROTOCOL.md, section 10):

* a record: topic = the ledger's name; body = msgpack ``{"v": 1, "ledger", "height",
  "hops", "from", "record"}``, where ``record`` is the record's bytes as stored (section 2)
  and ``hops`` counts how many nodes published it (the home node: 1). The envelope is not
  hashed: a relay raises ``hops`` without touching the record.
* checkpoints: topic ``*checkpoints``; body ``{"v": 1, "from", "checkpoints": {ledger: note}}``:
  for each ledger, the latest checkpoint the publisher holds (vledger.node.witness: the home's
  signed note of a tree size and root, which is what makes the records below it acceptable),
  its bytes as signed. A home node sends its new checkpoints after each batch of records and
  all of them every ``heartbeat_ms``; a relay forwards the checkpoints it verified. They also
  let a subscriber see a gap at the end of a burst, when no later record would reveal it.

PUB/SUB drops messages (slow joiners, full queues): the feed is only the fast path.
Subscribers find what they missed by height (vledger.ingest.follow), and every message
is validated here before anything uses it; a bad one raises FeedError and is dropped.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq
from zmq.utils.monitor import parse_monitor_message

from ..config.settings import BrokerSettings
from ..node.canonical import pack
from ..node.errors import FeedError
from ..node.note import MAX_NOTE_BYTES
from ..node.record import NAME_PATTERN
from ..node.storefile import MAX_HEIGHT
from ..node.witness import SignedCheckpoint
from .curve import AllowList, CurveServer, curve_client
from .keys import KeyPair

log = logging.getLogger(__name__)

FEED_VERSION = 1
CHECKPOINTS_TOPIC = b"*checkpoints"  # not a ledger name: those start with [a-z0-9]
FEED_DOMAIN = "feed"  # its own ZAP domain: the feed's allow-list is not the request socket's
MAX_NAME = 64
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_send_frame = zmq.backend.Socket.send  # pyzmq's compiled send, without the sugar layer's wrapper
# libzmq drops a connection whose CURVE handshake failed (the publisher's ZAP handler refused
# the key, or a protocol error) and never connects it again: the SUB socket would stay deaf for
# the life of the process. A key refused for now is often admitted soon after (an account that
# node has not applied yet, a rotated key before the admin ledger reached it), so the
# subscriber connects that endpoint again itself, after RETRY_REFUSED_S, doubled at each
# refusal up to RETRY_REFUSED_MAX_S: a stranger costs the publisher one handshake a period.
RETRY_REFUSED_S = 0.5
RETRY_REFUSED_MAX_S = 30.0
# How often a receive looks for handshake events: a look costs about 5 us (a zmq_poll), as much
# as an empty receive, and the follow loop receives at every batch.
LOOK_EVERY_S = 0.05
_GAVE_UP = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
_HANDSHAKES = _GAVE_UP | zmq.EVENT_HANDSHAKE_SUCCEEDED


@dataclass(frozen=True, slots=True)
class FeedRecord:
    ledger: str
    height: int
    hops: int
    sender: str  # the node that published this copy
    data: bytes  # the record's bytes; verified by the receiver before it is stored


@dataclass(frozen=True, slots=True)
class FeedCheckpoints:
    sender: str
    checkpoints: dict[str, bytes]  # ledger -> the latest checkpoint note the sender holds (not checked here)


FeedMessage = FeedRecord | FeedCheckpoints


def encode_record(ledger: str, height: int, hops: int, sender: str, data: bytes) -> list[bytes]:
    # canonical.pack: msgpack.packb's bytes through a kept Packer (packb makes one per call,
    # which cost the outbox process about a tenth of its time: one message a record).
    body = pack({"v": FEED_VERSION, "ledger": ledger, "height": height, "hops": hops, "from": sender, "record": data})
    return [ledger.encode("utf-8"), body]


def encode_checkpoints(sender: str, checkpoints: Iterable[SignedCheckpoint]) -> list[bytes]:
    notes = {c.ledger: c.note for c in sorted(checkpoints, key=_ledger)}
    body = msgpack.packb({"v": FEED_VERSION, "from": sender, "checkpoints": notes})
    return [CHECKPOINTS_TOPIC, body]


def _ledger(checkpoint: SignedCheckpoint) -> str:
    return checkpoint.ledger


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_NAME or not NAME_PATTERN.fullmatch(value):
        raise FeedError(f"{what}: not a name")
    return value


def _height(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value < MAX_HEIGHT:
        raise FeedError(f"{what}: not a height")
    return value


def decode_message(frames: list[bytes], max_record_bytes: int) -> FeedMessage:
    """A feed message's frames, checked field by field; FeedError for anything else."""
    if len(frames) != 2:
        raise FeedError(f"a feed message is 2 frames, not {len(frames)}")
    topic, body = frames
    try:
        message = msgpack.unpackb(body, raw=False, strict_map_key=True, max_bin_len=max_record_bytes)
    except Exception as e:  # msgpack raises many kinds: every one means a bad message
        raise FeedError(f"undecodable feed message: {type(e).__name__}") from None
    if not isinstance(message, dict) or type(message.get("v")) is not int or message["v"] != FEED_VERSION:
        raise FeedError("a feed message is a map with v = 1")
    sender = _name(message.get("from"), "from")
    if topic == CHECKPOINTS_TOPIC:
        notes = message.get("checkpoints")
        if not isinstance(notes, dict) or set(message) != {"v", "from", "checkpoints"}:
            raise FeedError("a checkpoints message has v, from and checkpoints")
        for ledger, note in notes.items():
            _name(ledger, "checkpoint ledger")
            if not isinstance(note, bytes) or not 0 < len(note) <= MAX_NOTE_BYTES:
                raise FeedError(f"a checkpoint is a note of 1 to {MAX_NOTE_BYTES} bytes")
        return FeedCheckpoints(sender, notes)
    if set(message) != {"v", "ledger", "height", "hops", "from", "record"}:
        raise FeedError("a record message has v, ledger, height, hops, from and record")
    ledger = _name(message["ledger"], "ledger")
    if topic != ledger.encode("utf-8"):
        raise FeedError("a record message's topic is its ledger")
    hops = message["hops"]
    if type(hops) is not int or not 1 <= hops <= 255:
        raise FeedError("hops: an integer from 1 to 255")
    data = message["record"]
    if not isinstance(data, bytes):
        raise FeedError("record: bytes")
    return FeedRecord(ledger, _height(message["height"], "height"), hops, sender, data)


class Publisher:
    """A node's feed: a CURVE PUB socket whose subscribers must be on ``allow_list``.

    Never blocks: past ``send_hwm`` queued messages a subscriber's copies are dropped, and
    it catches up by height. One thread only (ZeroMQ sockets are not thread-safe).
    """

    def __init__(
        self, name: str, keys: KeyPair, endpoint: str, allow_list: AllowList, settings: BrokerSettings, send_hwm: int
    ) -> None:
        self.name = name
        # The high-water mark is set before the bind: libzmq copies it to each subscriber's pipe then.
        # Guarded as a request port is: silent connections to an unguarded feed held the node's
        # files until accepts and its store's opens failed (r8).
        self.server = CurveServer(
            keys,
            endpoint,
            allow_list,
            socket_type=zmq.PUB,
            settings=settings,
            domain=FEED_DOMAIN,
            options={zmq.SNDHWM: send_hwm},
            guarded=True,
        )
        self.socket = self.server.socket
        self.sent = 0
        # Steps other threads hand the socket's owner (a key rotation's re-binds, PROTOCOL 16.6):
        # run before the next message goes out, on the thread that sends (a heartbeat at least).
        self._soon: deque[Callable[[], None]] = deque()

    def call_soon(self, step: Callable[[], None]) -> None:
        """Run ``step`` on the sending thread before its next message (any thread may call)."""
        self._soon.append(step)

    def self_test(self) -> None:
        self.server.self_test()

    def record(self, ledger: str, height: int, data: bytes, hops: int = 1) -> None:
        self._send(encode_record(ledger, height, hops, self.name, data))

    def checkpoints(self, checkpoints: Iterable[SignedCheckpoint]) -> None:
        self._send(encode_checkpoints(self.name, checkpoints))

    def _send(self, frames: list[bytes]) -> None:
        while self._soon:
            step = self._soon.popleft()
            try:
                step()
            except Exception:  # a re-bind that failed is the rotation's to report; the feed goes on
                log.exception("feed %s: a step of its key rotation failed", self.name)
        try:
            _send_frame(self.socket, frames[0], _SNDMORE_NOBLOCK)
            _send_frame(self.socket, frames[1], _NOBLOCK)
            self.sent += 1
        except zmq.Again:  # PUB never says so for a full queue; a busy socket is the same loss
            log.debug("feed message dropped")

    def close(self, linger_ms: int = 0) -> None:
        self.server.close(linger_ms)


@dataclass(frozen=True, slots=True)
class FeedSource:
    name: str
    endpoint: str
    key: str  # the publisher's z85 public key
    # More endpoints of the same feed and key: its rotation endpoint, which serves a new key
    # while ``endpoint`` still serves the old one (PROTOCOL 16.6); the copies are deduplicated by height.
    also: tuple[str, ...] = ()


@dataclass(eq=False, slots=True)
class _Link:
    """One endpoint's SUB socket and the monitor of its handshakes.

    A socket per endpoint, because libzmq names a connection in its events by the address the
    connection was made to, and once a connection it made was lost it makes the next one to the
    address it resolved: after a publisher's restart the events of ``tcp://replica-1:7111`` say
    ``tcp://172.18.0.5:7111``. Every event of this link's monitor is its endpoint's, however spelt.
    """

    endpoint: str  # as configured: a host name is resolved again at each connection
    key: str  # the publisher's z85 public key
    socket: zmq.Socket[Any]
    monitor: zmq.Socket[Any]
    delay: float = 0.0  # the wait after its last refusal; 0 once a handshake succeeded
    retry_at: float | None = None  # when to connect it again, after a refusal


class Subscriber:
    """SUB sockets on the feeds of ``sources``, CURVE-authenticated with ``keys`` (one thread).

    :meth:`retarget` (any thread) replaces the keys or the sources after a key rotation: the
    next :meth:`receive` connects new sockets before it closes the old ones. What is published
    meanwhile may be missed, as on any PUB/SUB: the follower fetches gaps by height.
    An endpoint whose handshake failed (its publisher refused the key) is connected again by
    :meth:`receive`, after :data:`RETRY_REFUSED_S` and longer each time it is refused again.
    """

    def __init__(
        self,
        ctx: zmq.Context[Any],
        keys: KeyPair,
        sources: Iterable[FeedSource],
        *,
        receive_hwm: int,
        max_message_bytes: int,
        max_record_bytes: int,
        clock: Callable[[], float] = time.monotonic,  # when a refused endpoint is tried again
    ) -> None:
        self.ctx = ctx
        self.receive_hwm = receive_hwm
        self.max_message_bytes = max_message_bytes
        self.max_record_bytes = max_record_bytes
        self.rejected = 0
        self.refusals = 0  # handshakes that failed, each followed by a new connection in time
        self.target = (keys, tuple(sources))
        self._clock = clock
        self._lock = threading.Lock()
        self._next: tuple[KeyPair, tuple[FeedSource, ...]] | None = None
        self._look_at = 0.0  # when receive next looks at the handshake events (time.monotonic)
        self._links = self._connect(*self.target)
        self.sockets = tuple(link.socket for link in self._links)  # one an endpoint, in the sources' order
        self._poller = self._poller_of(self.sockets)

    def _connect(self, keys: KeyPair, sources: tuple[FeedSource, ...]) -> tuple[_Link, ...]:
        links: list[_Link] = []
        try:
            for source in sources:
                for endpoint in (source.endpoint, *source.also):
                    socket = curve_client(self.ctx, zmq.SUB, source.key, keys)
                    links.append(_Link(endpoint, source.key, socket, self._watch(socket)))
                    socket.rcvhwm = self.receive_hwm
                    socket.maxmsgsize = self.max_message_bytes
                    socket.setsockopt(zmq.SUBSCRIBE, b"")
                    socket.connect(endpoint)
        except BaseException:  # an endpoint libzmq cannot parse: no socket left open behind
            self._close_links(links)
            raise
        return tuple(links)

    @staticmethod
    def _poller_of(sockets: tuple[zmq.Socket[Any], ...]) -> zmq.Poller:
        poller = zmq.Poller()
        for socket in sockets:
            poller.register(socket, zmq.POLLIN)
        return poller

    def _watch(self, socket: zmq.Socket[Any]) -> zmq.Socket[Any]:
        """A PAIR socket that hears ``socket``'s handshakes (connected before any connection is)."""
        address = f"inproc://vledger-feed-monitor-{id(socket)}-{time.monotonic_ns()}"
        socket.monitor(address, _HANDSHAKES)
        monitor: zmq.Socket[Any] = self.ctx.socket(zmq.PAIR)
        monitor.linger = 0
        monitor.connect(address)
        return monitor

    @staticmethod
    def _close_links(links: Iterable[_Link]) -> None:
        for link in links:
            link.socket.disable_monitor()
            link.monitor.close(linger=0)
            link.socket.close(linger=0)

    def retarget(self, keys: KeyPair, sources: Iterable[FeedSource]) -> None:
        """Subscribe with ``keys`` to ``sources`` from the next :meth:`receive` on, if either changed."""
        target = (keys, tuple(sources))
        with self._lock:
            self._next = target if target != self.target else None

    def _switch(self) -> None:
        with self._lock:
            target, self._next = self._next, None
        if target is None:
            return
        old = self._links
        self._links = self._connect(*target)
        self.sockets = tuple(link.socket for link in self._links)
        self._poller = self._poller_of(self.sockets)
        self.target = target
        self._close_links(old)
        log.info("feed subscription now with key %s to %s", target[0].fingerprint,
                 ", ".join(f"{s.name} ({s.key[:8]}...)" for s in target[1]))  # fmt: skip

    def _handshakes(self) -> None:
        """Take the handshake events, and connect again each refused endpoint whose wait is over."""
        for link in self._links:
            while True:
                try:
                    event = parse_monitor_message(link.monitor.recv_multipart(_NOBLOCK))
                except zmq.Again:
                    break
                kind = zmq.Event(event["event"])
                if kind & _GAVE_UP:
                    self.refusals += 1
                    delay = min(2 * link.delay, RETRY_REFUSED_MAX_S) if link.delay else RETRY_REFUSED_S
                    if not link.delay:
                        # Once per run of refusals: a stranger's every retry would fill the log.
                        log.warning("feed %s refused this subscriber's handshake (%s): connecting again in %.1f s, "
                                    "then less often while it refuses", link.endpoint, kind.name, delay)  # fmt: skip
                    link.delay = delay
                    link.retry_at = self._clock() + delay
                elif link.delay:
                    link.delay = 0.0
                    log.info("feed %s admits this subscriber now", link.endpoint)
            if link.retry_at is not None and link.retry_at <= self._clock():
                link.retry_at = None
                with contextlib.suppress(zmq.ZMQError):  # libzmq still names it: then it is the only connection
                    link.socket.disconnect(link.endpoint)
                link.socket.connect(link.endpoint)

    def receive(self, timeout_ms: int, max_messages: int) -> list[FeedMessage]:
        """What arrived, waiting up to ``timeout_ms`` for the first message; bad ones dropped."""
        if self._next is not None:
            self._switch()
        if (now := time.monotonic()) >= self._look_at:
            self._look_at = now + LOOK_EVERY_S
            self._handshakes()
        if not self.sockets:
            return []
        ready = [socket for socket, _ in self._poller.poll(timeout_ms)]
        messages: list[FeedMessage] = []
        left = max_messages
        # In turns, a share each, as one socket takes from its connections: a busy feed does not
        # crowd the others out of a batch while their queues fill and drop.
        while ready and left > 0:
            share = max(1, left // len(ready))
            for socket in tuple(ready):
                want = min(share, left)
                taken = self._take(socket, want, messages)
                left -= taken
                if taken < want:
                    ready.remove(socket)
        return messages

    def _take(self, socket: zmq.Socket[Any], count: int, messages: list[FeedMessage]) -> int:
        """Up to ``count`` messages from ``socket`` into ``messages``; how many it took, bad ones too."""
        for taken in range(count):
            try:
                frames = socket.recv_multipart(_NOBLOCK)
            except zmq.Again:
                return taken
            try:
                messages.append(decode_message(frames, self.max_record_bytes))
            except FeedError as e:
                self.rejected += 1
                log.warning("feed message dropped: %s", e)
        return count

    def close(self) -> None:
        links, self._links, self.sockets = self._links, (), ()
        self._close_links(links)
