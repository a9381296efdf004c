"""A process that decodes and checks the contents of a round of pipelined puts (issue #15).

Under many pipelining clients the node's request thread holds the GIL for most of a put, and
the biggest single stage of it is the content's: unpack its msgpack, run the canonical and
field checks (``decode_content``) and hash it. This process does that stage for a round of
requests at once, beside the request thread, which then only builds the entries from what it
sends back (:meth:`node.record.Entry.from_checked`).

It changes no answer. The child runs the node's own checks with the node's own limits, and
sends back a content only when they accepted it: anything refused (or not a put, or a request
that does not parse) comes back as None and is decoded on the request thread as before, so its
error reply is byte for byte the one it always was. A child that is not ready, dies, or is slow
(no answer by the deadline) costs nothing but time: the round is checked on the request thread,
the child is killed and a new one started, and the loop never waits on it past the deadline:
the deadline bounds the whole exchange, the round's write to the pipe (which a child that reads
nothing would block once the pipe's buffer is full) and the answer's read as well as the wait.
Only rounds of :data:`MIN_ROUND` requests or more come here; a lone writer's put stays inline,
where a pipe round trip would only add to its latency. At most :data:`ROUND_BYTES` of a round go
to the child, its first requests; the rest are checked inline, so that the deadline, which grows
with the bytes sent, stays short while a round of large puts still fits in it.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import multiprocessing
import os
import pickle
import socket
import struct
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import msgpack

from ..config.settings import Limits
from ..node.errors import VledgerError
from ..node.record import Checked, checked_of

log = logging.getLogger(__name__)

MIN_ROUND = 8  # requests in a round, below which the pipe round trip costs more than it saves
# The wait for a round's answer: a dead child is seen at once (the pipe's end of file), so this
# only bounds a hung one. Generous: on a loaded machine a child may wait a good while for a core,
# and each restart costs a new interpreter's imports (a 50 ms deadline restarted it under load).
DEADLINE_SECONDS = 0.5
PER_REQUEST_SECONDS = 0.0005  # plus this a request: some 40 times what the child spends on a small put
# Plus this a byte sent: some 10 times the CPU time of the costliest content measured (a payload
# of many small items, 37 ns a byte); a per-request allowance alone gave a round of 1,024 such
# 60 KB puts (2.2 s of work) 1.01 s, so each one killed a healthy child and was checked twice.
PER_BYTE_SECONDS = 400e-9
# The bytes of requests sent to the child a round (the rest checked inline): bounds the deadline
# to 0.5 s + 0.5 ms a request + 0.42 s, and the request thread's wait on a hung child with it.
ROUND_BYTES = 1024 * 1024
RESTART_SECONDS = 1.0  # at most one new child a second: a child that cannot start costs no CPU
STOP_SECONDS = 2.0
ENVELOPE_BYTES = 1024  # a put request's bytes past its content's: its id, cmd, nonce, w and keys
_READY = b"ready"


def check_round(datas: Sequence[bytes], limits: Limits, max_message_bytes: int) -> list[Checked | None]:
    """Each request's content, decoded and checked, or None where the request thread must do it.

    The child's work; a function of its own so that the tests can hold it against the inline path."""
    out: list[Checked | None] = []
    for data in datas:
        # The request is read only as far as its content: the request thread parses it whole
        # (parse_request) and takes this answer only for a put it accepted, so the request's
        # own checks here, and the Request and Args made for them, were done twice.
        if len(data) > max_message_bytes:
            out.append(None)
            continue
        try:
            request = msgpack.unpackb(data, raw=False, strict_map_key=True, timestamp=0)
        except (ValueError, TypeError, msgpack.UnpackException):
            out.append(None)  # not a request: the request thread answers it
            continue
        args = request.get("args") if type(request) is dict and request.get("cmd") == "put" else None
        content_bytes = args.get("content") if type(args) is dict else None
        if type(content_bytes) is not bytes:
            out.append(None)
            continue
        try:
            out.append(checked_of(content_bytes, limits))
        except VledgerError:
            out.append(None)  # refused: the request thread finds the same error and answers it
    return out


def _serve(conn: Connection, limits: Limits, max_message_bytes: int) -> None:
    """The child: answer each round sent until the pipe closes (or None comes)."""
    conn.send_bytes(_READY)
    while True:
        try:
            datas = conn.recv()
        except (EOFError, OSError):
            return
        if datas is None:
            return
        try:
            answer = check_round(datas, limits, max_message_bytes)
        except Exception:  # a bug: the node checks the round itself
            log.exception("content check failed on a round of %d requests", len(datas))
            answer = [None] * len(datas)
        # marshal, not a Connection's pickle: the answer is str, int, bytes, bool, None, lists
        # and maps (the payloads), which it writes and reads in two thirds of pickle's time.
        conn.send_bytes(marshal.dumps(answer))


class ContentChecker:
    """The node's content-check process: started and stopped by its runtime, asked (only) by
    the request thread through :meth:`check`."""

    def __init__(self, limits: Limits, max_message_bytes: int, *, deadline: float = DEADLINE_SECONDS) -> None:
        self.limits = limits
        self.max_message_bytes = max_message_bytes
        self.deadline = deadline
        self.restarts = 0  # children started after the first: each one died, was slow, or hung
        self._conn: Connection | None = None
        self._sock: socket.socket | None = None
        self._child: BaseProcess | None = None
        self._ready = False
        self._started_at = 0.0
        self._stopped = False

    def start(self) -> ContentChecker:
        self._spawn()
        return self

    def stop(self) -> None:
        self._stopped = True
        conn, child = self._conn, self._child
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
        if child is not None:
            child.join(STOP_SECONDS)
            if child.is_alive():
                child.kill()
                child.join()
        self._drop()

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the child to be ready (the tests do; the request
        thread never waits for it: :meth:`check` answers None until it is)."""
        deadline = time.monotonic() + timeout
        while not self._usable():
            if time.monotonic() >= deadline:
                return False
            conn = self._conn
            if conn is not None:
                with contextlib.suppress(EOFError, OSError):
                    conn.poll(0.05)
            else:
                time.sleep(0.05)  # between restarts (at most one a RESTART_SECONDS)
        return True

    def check(self, datas: Sequence[bytes]) -> list[Checked | None] | None:
        """The child's answer for a round of request bytes (as :func:`check_round`; None for each
        request past its first ROUND_BYTES), or None when the round is to be checked inline: too
        small, the child not ready, dead or past the deadline, which no wait here outlasts."""
        if len(datas) < MIN_ROUND or not self._usable():
            return None
        sock = self._sock
        assert sock is not None
        sent = _first_bytes(datas, self.limits.max_content_bytes + ENVELOPE_BYTES)
        if len(sent) < MIN_ROUND:
            return None
        size = sum(map(len, sent))
        until = time.monotonic() + self.deadline + PER_REQUEST_SECONDS * len(sent) + PER_BYTE_SECONDS * size
        try:
            _send_within(sock, pickle.dumps(sent, pickle.HIGHEST_PROTOCOL), until)
            answer: list[Checked | None] = marshal.loads(_recv_within(sock, until))  # noqa: S302 - our own child
            if len(answer) == len(sent):
                return answer + [None] * (len(datas) - len(sent))
            log.warning("content check process %s answered %d of %d; restarting it", self.pid, len(answer), len(sent))
        except TimeoutError:
            # Past its deadline: its answer, if it ever comes, would be taken for the next round's.
            log.warning("content check process %s was slow; checked inline, restarting it", self.pid)
        except (EOFError, OSError, ValueError, TypeError) as e:  # marshal's bad data: ValueError, EOFError
            log.warning("content check process %s failed: %s; checked inline, restarting it", self.pid, e)
        self._kill()
        return None

    def _usable(self) -> bool:
        if self._ready:
            return True
        if self._stopped:
            return False
        child, conn = self._child, self._conn
        if child is None or conn is None or not child.is_alive():
            if time.monotonic() - self._started_at >= RESTART_SECONDS:
                self._kill()
                try:
                    self._spawn()
                except OSError as e:  # no file or process left (EMFILE, EAGAIN): never the loop's error
                    log.warning("content check process not restarted: %s; rounds checked inline", e)
                    return False
                self.restarts += 1
            return False
        # Still importing: not waited for, the rounds until it says so are checked inline.
        try:
            if conn.poll(0) and conn.recv_bytes() == _READY:
                self._ready = True
        except (EOFError, OSError):
            self._kill()
        return self._ready

    def _spawn(self) -> None:
        """Start a child, or raise OSError having left nothing behind (no file, no process)."""
        # First: a start that fails is tried again RESTART_SECONDS later, not on the next round.
        self._started_at = time.monotonic()
        context = multiprocessing.get_context("spawn")  # never fork a process with threads and sockets
        here, there = context.Pipe()
        try:
            child = context.Process(
                target=_serve,
                args=(there, self.limits, self.max_message_bytes),
                name="vledger-content-check",
                daemon=True,
            )
            try:
                child.start()
            finally:
                there.close()
            try:
                # The request thread's own view of its end, for writes and reads bounded by a deadline
                # (a Connection's send and recv have none); the same socket, so the same byte stream.
                sock = socket.socket(fileno=os.dup(here.fileno()))
            except OSError:
                child.kill()
                child.join(STOP_SECONDS)
                with contextlib.suppress(ValueError):  # still running: its files go with the object
                    child.close()
                raise
        except BaseException:
            here.close()
            raise
        self._sock, self._conn, self._child, self._ready = sock, here, child, False

    def _kill(self) -> None:
        child = self._child
        if child is not None and child.is_alive():
            child.kill()
            child.join(STOP_SECONDS)
        self._drop()

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
        if self._conn is not None:
            self._conn.close()
        if self._child is not None:
            with contextlib.suppress(ValueError):  # not yet joined
                self._child.close()
        self._conn, self._child, self._ready, self._sock = None, None, False, None


def _first_bytes(datas: Sequence[bytes], largest: int) -> list[bytes]:
    """The requests of a round that go to the child: its first ones, up to ROUND_BYTES.

    A request too large to hold a valid content is not sent (b"" comes back None): a round of
    large refused requests would otherwise be copied through the pipe for nothing."""
    sent: list[bytes] = []
    size = 0
    for data in datas:
        kept = data if len(data) <= largest else b""
        size += len(kept)
        if size > ROUND_BYTES:
            break
        sent.append(kept)
    return sent


def _send_within(sock: socket.socket, payload: bytes, until: float) -> None:
    """Write ``payload`` as one message of a Connection (what the child's ``recv`` reads), or
    raise TimeoutError at ``until``: a socket's timeout bounds the whole of a ``sendall``."""
    for part in (struct.pack("!i", len(payload)), payload):  # ROUND_BYTES is far below 2**31
        sock.settimeout(_left(until))
        sock.sendall(part)


def _recv_within(sock: socket.socket, until: float) -> bytes:
    """Read one message the child's Connection ``send`` wrote, or raise TimeoutError at ``until``
    (EOFError if the child closed its end)."""
    (size,) = struct.unpack("!i", _read_exactly(sock, 4, until))
    if size == -1:  # a Connection's header for a message of 2 GiB or more
        (size,) = struct.unpack("!Q", _read_exactly(sock, 8, until))
    return _read_exactly(sock, size, until)


def _read_exactly(sock: socket.socket, size: int, until: float) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        sock.settimeout(_left(until))
        count = sock.recv_into(view[got:])
        if not count:
            raise EOFError("the content check process closed its pipe")
        got += count
    return bytes(buffer)


def _left(until: float) -> float:
    """The time left until ``until``; a socket timeout of 0 would make it non-blocking instead."""
    left = until - time.monotonic()
    if left <= 0:
        raise TimeoutError("past the deadline")
    return left
