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
the child is killed and a new one started, and the loop never waits on it past the deadline.
Only rounds of :data:`MIN_ROUND` requests or more come here; a lone writer's put stays inline,
where a pipe round trip would only add to its latency.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from ..config.settings import Limits
from ..node.errors import VledgerError
from ..node.record import Checked, decode_content
from ..node.wire import parse_request

log = logging.getLogger(__name__)

MIN_ROUND = 8  # requests in a round, below which the pipe round trip costs more than it saves
# The wait for a round's answer: a dead child is seen at once (the pipe's end of file), so this
# only bounds a hung one. Generous: on a loaded machine a child may wait a good while for a core,
# and each restart costs a new interpreter's imports (a 50 ms deadline restarted it under load).
DEADLINE_SECONDS = 0.5
PER_REQUEST_SECONDS = 0.0005  # plus this a request: some 40 times what the child spends on a small put
RESTART_SECONDS = 1.0  # at most one new child a second: a child that cannot start costs no CPU
STOP_SECONDS = 2.0
ENVELOPE_BYTES = 1024  # a put request's bytes past its content's: its id, cmd, nonce, w and keys
_READY = b"ready"


def check_round(datas: Sequence[bytes], limits: Limits, max_message_bytes: int) -> list[Checked | None]:
    """Each request's content, decoded and checked, or None where the request thread must do it.

    The child's work; a function of its own so that the tests can hold it against the inline path."""
    out: list[Checked | None] = []
    for data in datas:
        try:
            request = parse_request(data, max_message_bytes)
            content_bytes = request.args.values.get("content") if request.cmd == "put" else None
            if type(content_bytes) is not bytes:
                out.append(None)
                continue
            c = decode_content(content_bytes, limits)
        except VledgerError:
            out.append(None)  # refused: the request thread finds the same error and answers it
            continue
        digest = hashlib.sha256(content_bytes).digest()
        out.append((c.ledger, c.kind, c.payload, c.author, c.request_id, c.ts, len(content_bytes), digest))
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
        conn.send(answer)


class ContentChecker:
    """The node's content-check process: started and stopped by its runtime, asked (only) by
    the request thread through :meth:`check`."""

    def __init__(self, limits: Limits, max_message_bytes: int, *, deadline: float = DEADLINE_SECONDS) -> None:
        self.limits = limits
        self.max_message_bytes = max_message_bytes
        self.deadline = deadline
        self.restarts = 0  # children started after the first: each one died, was slow, or hung
        self._conn: Connection | None = None
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
        """The child's answer for a round of request bytes (as :func:`check_round`), or None when
        the round is to be checked inline: too small, the child not ready, dead or past the deadline."""
        if len(datas) < MIN_ROUND or not self._usable():
            return None
        conn = self._conn
        assert conn is not None
        try:
            # A request too large to hold a valid content is not sent (b"" comes back None): a
            # round of large refused requests would otherwise be copied through the pipe for nothing.
            largest = self.limits.max_content_bytes + ENVELOPE_BYTES
            conn.send([data if len(data) <= largest else b"" for data in datas])
            if conn.poll(self.deadline + PER_REQUEST_SECONDS * len(datas)):
                answer: list[Checked | None] = conn.recv()
                if len(answer) == len(datas):
                    return answer
        except (EOFError, OSError) as e:
            log.warning("content check process %s failed: %s; checked inline, restarting it", self.pid, e)
        else:
            # Past its deadline: its answer, if it ever comes, would be taken for the next round's.
            log.warning("content check process %s was slow; checked inline, restarting it", self.pid)
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
                self._spawn()
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
        context = multiprocessing.get_context("spawn")  # never fork a process with threads and sockets
        here, there = context.Pipe()
        child = context.Process(
            target=_serve, args=(there, self.limits, self.max_message_bytes), name="vledger-content-check", daemon=True
        )
        child.start()
        there.close()
        self._conn, self._child, self._ready = here, child, False
        self._started_at = time.monotonic()

    def _kill(self) -> None:
        child = self._child
        if child is not None and child.is_alive():
            child.kill()
            child.join(STOP_SECONDS)
        self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._child is not None:
            with contextlib.suppress(ValueError):  # not yet joined
                self._child.close()
        self._conn, self._child, self._ready = None, None, False
