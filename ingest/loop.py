"""The ingest node's socket loop: receive on the CURVE ROUTER, answer through the service.

One thread, no event loop: a ``zmq.Poller`` waits on the ROUTER and on a wake-up pipe.
Cheap requests are answered as they are read. A request that waits on slow work (a put's
group commit, an admin command's Redis round trips) is parked on its Future. After each
batch of requests it read, the loop lets the service start what they queued
(:meth:`Service.flush`: the ingest node commits a lone writer's put right here, so it crosses
no thread on its way to the disk, and hands a pipelined round to the store's committer thread,
so the loop reads on meanwhile) and then answers what finished. A Future completed on the
loop's own thread (a lone put's, in flush) is answered at once, from its done callback: the
store completes it as soon as its COMMIT returned, and only then does the rest of its group
commit's work (its heads and trees, on_commit), so that work is off the put's round trip; the
next request is read once flush returned, so it finds the store past that put. A Future
completed on another thread queues its reply and writes one byte to the pipe, only if no
wake-up is pending yet, so a whole group commit wakes the loop once. Requests that wait on one
Future (a round of puts shares its group commit's) cost it one callback, not one each, and are
answered together (:meth:`Service.replies`: the Future's outcome read once, the metrics counted
once a round). At most
``max_in_flight`` requests wait at once, past which the loop stops reading and ZeroMQ's
queues push back on the clients.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Protocol

import zmq

from ..broker.curve import SenderKeys
from ..node.errors import BadRequestError, CurveError
from ..node.wire import reply_error

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 1024  # requests waiting on slow work
READ_BATCH = 1024  # messages read per round, so that finished replies go out in between
# Plain ints: OR-ing zmq's flag enums for every message would cost as much as a send.
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
# pyzmq's compiled send, without the Python wrapper of zmq.Socket.send (which only adds the
# DRAFT routing_id and group arguments, unused here): a reply costs two sends, and the wrapper
# took twice as long as the send itself (1.05 against 0.37 us a call).
_send = zmq.backend.Socket.send
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


class Waiting(Protocol):
    """A request's answer that waits on slow work: the service's ``Pending``, or a wrapper of
    it (the metrics'). The loop calls :meth:`reply` once, when the future is done."""

    @property
    def future(self) -> Future[Any]: ...

    def reply(self) -> bytes:
        """The reply's bytes; never raises."""


class Service(Protocol):
    """What the loop serves: ``IngestService``, or a stand-in in the loop's tests."""

    def prepare(self, datas: Sequence[bytes]) -> Sequence[Any] | None:
        """For a round of requests read together, something to give :meth:`handle` with each
        (in order), or None; never raises. The ingest service decodes a round's put contents
        in a process of its own here (ingest/content_check.py)."""

    def handle(self, key: str, data: bytes, checked: Any = None) -> bytes | Waiting: ...

    def flush(self) -> None:
        """Start (or do) the slow work of the requests handled since the last call; quick to
        call when there is none, and never raises."""

    def replies(self, waiting: list[Waiting]) -> list[bytes]:
        """The replies of requests :meth:`handle` answered with ``waiting`` (in that order), once
        the Future they all wait on is done; never raises."""

    def sent(self, waiting: list[Waiting], replies: list[bytes]) -> None:
        """Told once ``replies`` (what :meth:`replies` gave for ``waiting``) went out: what need
        not delay them (the metrics' counts) is done here; never raises."""


class RequestLoop:
    """Serves one ROUTER socket until :meth:`stop`; then answers what is in flight and returns.

    ``stop`` may be called from any thread or a signal handler. ``wake_fd`` is the write
    end of the wake-up pipe, for ``signal.set_wakeup_fd``: a signal that reaches another
    thread then still ends the poll at once. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        socket: zmq.Socket[Any],
        service: Service,
        *,
        max_in_flight: int = MAX_IN_FLIGHT,
        read_batch: int = READ_BATCH,
    ) -> None:
        self.socket = socket
        self.service = service
        self.max_in_flight = max_in_flight
        self.read_batch = read_batch
        self._wake_read, self.wake_fd = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self.wake_fd, False)
        self._senders = SenderKeys()
        # The requests waiting on each Future, in the order they were read: their senders'
        # identities and their answers, side by side; only the serving thread touches it. A
        # completed Future is queued in _finished (by any thread), and the serving thread
        # answers its requests.
        self._waiters: dict[Future[Any], tuple[list[bytes], list[Waiting]]] = {}
        self._finished: collections.deque[Future[Any]] = collections.deque()
        self._woken = False  # a wake-up byte is in the pipe: completions need not write another
        self._stopping = False
        self._in_flight = 0
        self._thread: int | None = None  # the serving thread: its own completions are answered at once
        self._calls: collections.deque[Callable[[], None]] = collections.deque()
        # Held while the wake pipe is written or closed: a thread that asks a call or answers a
        # request after the loop closed (a key rotation applied while a node stops) wrote to a
        # closed descriptor, or to whatever file had been given its number since. Reentrant: the
        # signal handler's stop() may run on a thread that is writing the byte.
        self._pipe_lock = threading.RLock()
        self._closed = False

    def close(self) -> None:
        with self._pipe_lock:
            self._closed = True
            os.close(self._wake_read)
            os.close(self.wake_fd)

    def __enter__(self) -> RequestLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stop(self) -> None:
        """Stop reading requests; ``serve`` returns once those in flight are answered."""
        self._stopping = True
        self._write_wake_byte()  # always: the loop may have just taken the pending one

    def call_soon(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the serving thread, which owns the socket (any thread may ask)."""
        self._calls.append(call)
        self._write_wake_byte()

    def _run_calls(self) -> None:
        while self._calls:
            call = self._calls.popleft()
            try:
                call()
            except Exception:  # one failed step must not stop the serving of requests
                log.exception("a call on the request loop failed")

    def serve(self) -> None:
        everything = zmq.Poller()
        everything.register(self.socket, zmq.POLLIN)
        everything.register(self._wake_read, zmq.POLLIN)
        wake_only = zmq.Poller()
        wake_only.register(self._wake_read, zmq.POLLIN)
        self._thread = threading.get_ident()
        try:
            while not self._stopping or self._in_flight:
                reading = not self._stopping and self._in_flight < self.max_in_flight
                for ready, _ in (everything if reading else wake_only).poll():
                    if ready is self.socket:
                        self._read()
                        self.service.flush()
                    else:
                        self._clear_wake()
                self._answer_finished()
                self._run_calls()
        finally:
            self._thread = None

    # --- requests -------------------------------------------------------------------

    def _read(self) -> None:
        """Answer what the ROUTER holds, up to a batch, until too many requests wait or a stop.

        Called when poll() found the socket readable: the first request is there. Before the
        second the socket is asked (ZMQ_EVENTS) rather than tried: a recv that finds nothing
        raises zmq.Again, and making that exception cost a lone writer's put, whose read always
        ended so, about 3 us more than the question (a quarter of its read). Past the second,
        in a pipelined round, reads are tried: one exception a round costs less than a question
        a request."""
        recv, get = self.socket.recv, self.socket.get
        # The round's requests, answered once it is read: handed to Service.prepare together
        # first. Until then they count as in flight (the content-check process holds them).
        round_: list[tuple[bytes, zmq.Frame]] = []
        for count in range(self.read_batch):
            # Checked before each read, not only after: a stop() that came while poll() waited
            # must not let the request that woke it be read (stop means no new request).
            if self._stopping or self._in_flight + len(round_) >= self.max_in_flight:
                break
            if count == 1 and not int(get(_EVENTS)) & _POLLIN:
                break
            try:
                # As bytes: only the request's own frame carries what is asked of it (its
                # sender's User-Id); a Frame object and then its bytes cost 0.5 us more a request.
                identity = recv(_NOBLOCK)
            except zmq.Again:
                break
            # A ROUTER hands a message over whole, behind its sender's identity: its frames are here.
            message = recv(_NOBLOCK, copy=False)
            if message.more:  # a DEALER request is one frame; answer anything else, and go on
                frames = 2
                while recv(_NOBLOCK, copy=False).more:
                    frames += 1
                error = BadRequestError(f"a request is one frame, not {frames}")
                self._send(identity, reply_error(None, error))
            else:
                round_.append((identity, message))
        if len(round_) < 2:  # a lone request (a clerk's put), or none: nothing to prepare
            for identity, message in round_:
                self._answer(identity, message)
            return
        prepared = self.service.prepare([message.bytes for _, message in round_])
        if prepared is None:
            for identity, message in round_:
                self._answer(identity, message)
        else:
            for (identity, message), checked in zip(round_, prepared, strict=True):
                self._answer(identity, message, checked)

    def _answer(self, identity: bytes, message: zmq.Frame, checked: Any = None) -> None:
        try:
            key = self._senders.key_of(message)
        except CurveError as e:  # never expected behind the ZAP handler: refuse to serve it
            log.warning("message dropped: %s", e)
            return
        reply = self.service.handle(key, message.bytes, checked)
        if isinstance(reply, bytes):
            self._send(identity, reply)
            return
        self._in_flight += 1
        future = reply.future
        waiters = self._waiters.get(future)
        if waiters is None:
            self._waiters[future] = ([identity], [reply])
            future.add_done_callback(self._finish)  # at once, here, if already done
        else:  # not yet answered (only this thread pops the lists): it goes out with the others
            waiters[0].append(identity)
            waiters[1].append(reply)

    def _send(self, identity: bytes, reply: bytes) -> None:
        try:
            _send(self.socket, identity, _SNDMORE_NOBLOCK)
            _send(self.socket, reply, _NOBLOCK)
        except zmq.ZMQError as e:  # the client is gone: nothing to answer
            log.debug("reply not sent: %s", e)

    # --- replies to requests that waited ----------------------------------------------

    def _finish(self, future: Future[Any]) -> None:
        """Answer a done Future's requests: at once on the serving thread (a round committed
        in flush, whose store completes it before its on_commit work: the answers go out
        first); from any other thread, queue them and wake the loop."""
        if threading.get_ident() == self._thread:
            self._answer_waiters(future)
            return
        self._finished.append(future)
        if not self._woken:
            self._woken = True
            self._write_wake_byte()

    def _write_wake_byte(self) -> None:
        with self._pipe_lock:
            if self._closed:
                return  # nothing serves any more: what was asked is dropped with the loop
            with contextlib.suppress(BlockingIOError):  # the pipe is full: the loop will wake anyway
                os.write(self.wake_fd, b"\0")

    def _clear_wake(self) -> None:
        # Empty the pipe, then say so, then (in _answer_finished) take the queue: a reply queued
        # after the queue was emptied finds no wake-up pending and writes a byte of its own.
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_read, 4096):
                pass
        self._woken = False

    def _answer_finished(self) -> None:
        finished = self._finished
        while finished:
            self._answer_waiters(finished.popleft())

    def _answer_waiters(self, future: Future[Any]) -> None:
        identities, waiting = self._waiters.pop(future)
        self._in_flight -= len(identities)
        socket = self.socket
        replies = self.service.replies(waiting)
        for identity, reply in zip(identities, replies, strict=True):
            try:  # _send, inlined: a round of pipelined puts sends a reply per put from here
                _send(socket, identity, _SNDMORE_NOBLOCK)
                _send(socket, reply, _NOBLOCK)
            except zmq.ZMQError as e:  # the client is gone: nothing to answer
                log.debug("reply not sent: %s", e)
        self.service.sent(waiting, replies)
