"""A full sweep of one node's copy of one ledger: every record from genesis to the head, re-verified.

A sweep goes a page at a time through a :class:`PageSource` (a node's ``range`` command)
and keeps only a checkpoint: the last height verified and its link. A checkpoint is enough to
resume after a restart, because the link commits to every record below it: the sweep first
re-reads the genesis (for the ledger's rules) and then goes on from the checkpoint. Nothing
holds a whole chain in memory. When the sweep reaches the node's head it is complete, and
the next one starts again from genesis, so a record changed below an old checkpoint is
caught by the next sweep.

With a :class:`PagePool`, a step reads several pages and worker processes check them, one
page each, while the next page is read. A worker checks every record of its page as the
sequential verifier would, except the first record's ``prev``, which only the page before can
answer. The sweep joins the pages in height order; a page that is not clean, does not join, or
whose worker failed is checked again in the calling process, one record at a time, so that a
finding is the one a sequential sweep makes, code and height. A page reaches its worker packed
into a slot of the pool's shared memory (readable by this user only), named by a few dozen
bytes on the worker's own pipe, and the worker answers on it with a small summary: the sweeping
process copies each page once, no pipe carries it, and no thread of the pool's runs beside the
sweep (an executor's management and feeder threads cost the sweeping process as much CPU as
the rest of its part). A step also reads the next step's full pages and hands them to the workers before it joins its
own, so the workers do not wait at a step's end; the page that reaches the node's end is
always read by the step that ends.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import multiprocessing.process
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Protocol

import msgpack

from ..broker.shm import shared_memory, take_ownership
from ..config.settings import PROTOCOL_LIMITS
from ..node.errors import RecordError
from ..node.ledger import LedgerRules
from ..node.record import ZERO_LINK, decode_record
from ..node.verify import ChainVerifier

log = logging.getLogger(__name__)


class PageSource(Protocol):
    """A node's records of a ledger, by height."""

    def page(self, ledger: str, start: int, limit: int) -> list[bytes]:
        """Up to ``limit`` records from height ``start`` on, as the node stores them (fewer at its end)."""
        ...


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a sweep stands: the last height verified (-1: none yet) and that record's link."""

    height: int = -1
    link: bytes = ZERO_LINK
    sweeps: int = 0  # sweeps completed before this one
    started_ms: int = 0  # when this sweep began


@dataclass(frozen=True, slots=True)
class Finding:
    """A record of a node's copy that fails verification."""

    height: int  # the first height at which the copy is not what the chain must be
    code: str  # an error code of docs/PROTOCOL.md: bad_link, height_gap, bad_checksum, ...
    detail: str


@dataclass(frozen=True, slots=True)
class SweepStep:
    verified: int  # records verified by this step
    finding: Finding | None  # the first record that failed, if one did
    complete: bool  # the sweep reached the node's last record (its end) without a finding
    end: int  # the height the sweep reached (the last record verified)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class PageSummary:
    """What a worker found in a page of records from height ``start``: ``count`` of them passed
    every check but the first one's ``prev`` (all of them: ``clean``)."""

    start: int
    count: int
    clean: bool
    first_prev: bytes | None  # the first record's prev, for the caller's chain check
    last_link: bytes | None  # the link of the last record that passed


def verify_page(ledger: str, genesis: bytes, start: int, rows: Sequence[bytes]) -> PageSummary:
    """A worker's job: check ``rows``, the records of ``ledger`` from height ``start``, as the
    sequential verifier would after a record whose link is the first one's ``prev``, under the
    rules of the genesis record ``genesis``. Stops at the first failure; never raises for what
    the rows hold."""
    first_prev: bytes | None = None
    verifier: ChainVerifier | None = None
    try:
        if start == 0:
            verifier = ChainVerifier(ledger, PROTOCOL_LIMITS)
            first_prev = ZERO_LINK
        else:
            first_prev = decode_record(rows[0], PROTOCOL_LIMITS).prev if rows else None
            if first_prev is None:
                return PageSummary(start, 0, False, None, None)
            verifier = _page_verifier(ledger, genesis)
            verifier.next_height, verifier.prev = start, first_prev
        verifier.feed_many(rows)  # the lean path for valid records, the checks one by one for anything else
    except RecordError:
        if verifier is None or verifier.next_height == start:
            return PageSummary(start, 0, False, first_prev, None)
        return PageSummary(start, verifier.next_height - start, False, first_prev, verifier.prev)
    return PageSummary(start, len(rows), True, first_prev, verifier.prev)


def serve_pages(conn: Connection) -> None:
    """A pool worker's loop (see :class:`PagePool`): each message a page to check, each answer
    its :class:`PageSummary` packed, in the order the pages came; returns when the pool closes
    its end. A page that cannot be read or checked (a bug) is answered with the error's text."""
    with conn:
        while True:
            try:
                message = conn.recv_bytes()
            except (EOFError, OSError):
                return
            try:
                answer = _check_message(message)
            except Exception as e:  # the pool hears of it and checks the page itself
                # Cut short: an answer must fit the pipe's buffer (see IN_FLIGHT_MAX).
                answer = msgpack.packb([f"{type(e).__name__}: {e}"[:FAILURE_TEXT_MAX]])
            try:
                conn.send_bytes(answer)
            except OSError:
                return


def _check_message(message: bytes) -> bytes:
    """The packed summary of the page ``message`` names (:meth:`PagePool.submit`): its rows
    packed (``msgpack.packb``), there or in the pool's shared memory."""
    ledger, genesis, start, shared, offset, length, inline = msgpack.unpackb(message)
    if shared is None:
        rows = msgpack.unpackb(inline)
    else:
        with _buffer(_attached(shared))[offset : offset + length] as packed:
            rows = msgpack.unpackb(packed)  # bytes objects of their own: the slot may be reused after this
    summary = verify_page(ledger, genesis, start, rows)
    answer: bytes = msgpack.packb([summary.start, summary.count, summary.clean, summary.first_prev, summary.last_link])
    return answer


_SHARED_MAX = 4  # segments a worker keeps attached: a pool made anew after a failure has a new one
_shared: dict[str, SharedMemory] = {}
_shared_lock = threading.Lock()


def _buffer(segment: SharedMemory) -> memoryview:
    buffer = segment.buf
    if buffer is None:
        raise ValueError(f"shared memory {segment.name} is closed")
    return buffer


def _attached(name: str) -> SharedMemory:
    """The pool's shared memory ``name``, attached once per worker."""
    with _shared_lock:
        segment = _shared.get(name)
        if segment is None:
            if len(_shared) >= _SHARED_MAX:
                for old in _shared.values():
                    old.close()
                _shared.clear()
            segment = _shared[name] = SharedMemory(name)
        return segment


# A worker's verifiers by the genesis record whose rules they hold: each page of a sweep brings
# the same genesis, read once per worker rather than once a page, and the verifier's fast path
# keeps what it worked out of those rules. Each page sets the verifier's head before it starts.
# Per thread: a verifier is fed by one thread at a time (the tests' workers are threads of one process).
_verifiers = threading.local()
_VERIFIERS_MAX = 16


def _page_verifier(ledger: str, genesis: bytes) -> ChainVerifier:
    """A verifier of ``ledger`` under the rules of its genesis record ``genesis`` (raises the
    genesis's first failure), its head to be set by the caller."""
    try:
        verifiers: dict[tuple[str, bytes], ChainVerifier] = _verifiers.by_genesis
    except AttributeError:
        verifiers = _verifiers.by_genesis = {}
    verifier = verifiers.get((ledger, genesis))
    if verifier is None:
        rules = ChainVerifier(ledger, PROTOCOL_LIMITS).check(decode_record(genesis, PROTOCOL_LIMITS))
        verifier = ChainVerifier.after(ledger, 0, ZERO_LINK, rules, PROTOCOL_LIMITS)
        if len(verifiers) >= _VERIFIERS_MAX:
            verifiers.clear()
        verifiers[(ledger, genesis)] = verifier
    return verifier


RETRY_SECONDS = 10.0
SLOT_BYTES = 512 * 1024  # shared memory a page in flight (a 500-record page packs to ~180 KB)
STOP_WAIT = 5.0  # seconds a closing pool gives each worker to end before it is terminated
# Pages a worker may hold unanswered: past this, a submit first waits for its oldest answer. Its
# answers (~120 bytes each, a failure's text at most FAILURE_TEXT_MAX characters) then always
# fit the pipe's buffer, so a worker never blocks writing one while the pool blocks writing it
# a page.
IN_FLIGHT_MAX = 128
FAILURE_TEXT_MAX = 200  # characters of a failure's text a worker answers (a bug's message may be long)


class WorkerRunner(Protocol):
    """A started worker (a process, or in the tests a thread) running :func:`serve_pages`."""

    def join(self, timeout: float | None = None) -> None: ...

    def is_alive(self) -> bool: ...


def start_process(conn: Connection) -> WorkerRunner:
    """A worker process (forkserver) serving ``conn``'s other end: the pool's default."""
    # forkserver: a worker never inherits the verifier's threads (its sockets) mid-flight.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # the server imports the checks once, not each worker
    process = context.Process(target=serve_pages, args=(conn,), name="vledger-sweep-worker", daemon=True)
    try:
        process.start()
    finally:
        conn.close()  # the worker holds its own: the pipe ends when the worker does
    return process


@dataclass(slots=True)
class PageJob:
    """A page handed to a worker: its answer once the pool has read it."""

    start: int
    worker: _Worker
    offset: int | None  # its slot of shared memory, None: sent inline
    answered: bool = False
    summary: PageSummary | None = None  # None once answered: the worker failed to check it


@dataclass(slots=True)
class _Worker:
    conn: Connection  # the pool's end of the worker's pipe
    runner: WorkerRunner
    jobs: collections.deque[PageJob]  # sent and not yet answered, oldest first: a worker answers in order


class PagePool:
    """Worker processes that check a sweep's pages (:func:`verify_page`), ``pages`` of them a
    step, each over a pipe of its own; the caller (one thread at a time, :meth:`close` included)
    drives them, with no thread of the pool's: a page goes to the worker with the fewest in
    hand as a few dozen bytes naming its slot of shared memory, and the answers are read from
    the pipe when the caller asks for one (:meth:`result`, then those before it) or hands a
    page over (those ready). A page handed over is checked even if the sweep drops it (after
    a finding): its answer is read and dropped, which frees its slot. A pool that breaks (a
    worker died) is closed and a new one made at the next submit; the pages it held are
    checked in the calling process meanwhile.

    ``start_worker`` starts a worker on a pipe's end (default: a process); the tests give threads.
    """

    def __init__(
        self,
        workers: int,
        pages: int | None = None,
        start_worker: Callable[[Connection], WorkerRunner] = start_process,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        if workers < 1:
            raise ValueError(f"a page pool has at least one worker, not {workers}")
        take_ownership()  # its slots' shared memory is named by this process; a killed one's removed
        self.workers = workers
        # Four pages a worker a step: while one is checked the next are waiting; and a step hands
        # the next step's pages over before it joins its own (LedgerSweep._read_ahead), so a worker
        # does not idle at a step's end either.
        self.pages = pages or 4 * workers
        self._start_worker = start_worker
        self._workers: list[_Worker] = []
        # After a failure the caller checks alone this long: a pool that cannot start is not
        # started again for every page.
        self.retry_seconds = retry_seconds
        self._retry_at = 0.0
        self.failures = 0  # pages a worker failed to check (each checked in the caller instead)
        self.joined = 0  # pages whose worker's check the sweep took
        # Pages reach the workers through shared memory, a slot a page in flight: through a pipe,
        # each page's bytes cost the sweeping process as much CPU as the rest of its part of the
        # sweep. A page too large for a slot, or beyond the slots (several copies' read-ahead),
        # goes inline.
        self._slots = 2 * self.pages + workers  # a step's pages, the next step's, one more each
        self._segment: SharedMemory | None = None
        self._free_slots: list[int] = []
        # Packs each page straight into its slot: its buffer is kept from page to page, where
        # packb made a new one and a bytes object of a page's size for each (the sweeping
        # process's time in the kernel, zeroing fresh pages of memory, went up by as much).
        self._packer = msgpack.Packer(autoreset=False)

    def submit(self, ledger: str, genesis: bytes, start: int, rows: list[bytes]) -> PageJob | None:
        """Hand the page ``rows`` (of ``ledger`` from height ``start``, under the rules of the
        genesis record ``genesis``) to a worker; None if no worker can take it now."""
        workers = self._workers
        try:
            if not workers:
                if time.monotonic() < self._retry_at:
                    return None
                self._start()
            for worker in workers:  # answers ready free their slots
                self._answers(worker, None)
            worker = min(workers, key=lambda w: len(w.jobs))
            while len(worker.jobs) >= IN_FLIGHT_MAX:
                self._answers(worker, worker.jobs[0])
            packer = self._packer
            packer.pack(rows)
            try:
                with packer.getbuffer() as packed:
                    slot = self._slot(len(packed))
                    if slot is None:
                        message = [ledger, genesis, start, None, 0, 0, bytes(packed)]
                    else:
                        segment, offset = slot
                        _buffer(segment)[offset : offset + len(packed)] = packed
                        message = [ledger, genesis, start, segment.name, offset, len(packed), None]
            finally:
                packer.reset()
            job = PageJob(start, worker, None if slot is None else slot[1])
            worker.jobs.append(job)  # before the send: a worker that fails it frees the slot too
            worker.conn.send_bytes(msgpack.packb(message))
            return job
        except (OSError, EOFError, ValueError, RuntimeError) as e:  # a worker gone (its pipe broken), or none started
            self.broken(e)
            return None

    def _start(self) -> None:
        for _ in range(self.workers):
            ours, theirs = multiprocessing.Pipe()
            try:
                runner = self._start_worker(theirs)
            except BaseException:
                ours.close()
                theirs.close()
                raise
            self._workers.append(_Worker(ours, runner, collections.deque()))

    def _answers(self, worker: _Worker, until: PageJob | None) -> None:
        """Read ``worker``'s answers in order, up to ``until``'s (None: those ready); raises
        EOFError or OSError if it is gone."""
        conn, jobs = worker.conn, worker.jobs
        while jobs and (until is not None or conn.poll()):
            reply = msgpack.unpackb(conn.recv_bytes())
            job = jobs.popleft()
            self._free(job.offset)
            job.answered = True
            if len(reply) == 1:  # a page the worker could not check: the caller checks it
                self.failures += 1
                log.warning("a sweep worker failed to check the page from %d: %s", job.start, reply[0])
            else:
                job.summary = PageSummary(*reply)
            if job is until:
                return

    def _slot(self, size: int) -> tuple[SharedMemory, int] | None:
        """A free slot of shared memory for a page of ``size`` bytes: (the segment, its offset); None if none."""
        if size > SLOT_BYTES:
            return None
        if self._segment is None:
            if self._slots == 0:
                return None
            try:
                self._segment = shared_memory(self._slots * SLOT_BYTES)
            except OSError as e:  # no /dev/shm, or full: every page goes inline
                log.warning("no shared memory for the sweep's pages (%s); they go through pipes", e)
                self._slots = 0
                return None
            self._free_slots = [i * SLOT_BYTES for i in range(self._slots)]
        if not self._free_slots:
            return None
        return self._segment, self._free_slots.pop()

    def _free(self, offset: int | None) -> None:
        if offset is not None:
            self._free_slots.append(offset)

    def result(self, job: PageJob | None) -> PageSummary | None:
        """The worker's summary of ``job``'s page; None if it failed (a worker gone: the pool is
        then made anew at the next submit)."""
        if job is None:
            return None
        if not job.answered:
            try:
                self._answers(job.worker, job)
            except (OSError, EOFError, ValueError) as e:
                self.broken(e)
        return job.summary

    def broken(self, error: BaseException) -> None:
        """A worker failed (``error``): the pool's workers are ended and every page they held
        answered with nothing (the caller checks those); the caller checks alone for
        ``retry_seconds``, then a new pool is made."""
        self.failures += 1
        self._retry_at = time.monotonic() + self.retry_seconds
        log.warning(
            "a sweep worker failed (%s); pages are checked in this process for %.0f s", error, self.retry_seconds
        )
        self._stop_workers()

    def _stop_workers(self) -> None:
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.conn.close()  # a worker reads the end of its pipe and returns
        for worker in workers:
            worker.runner.join(STOP_WAIT)
            if worker.runner.is_alive() and isinstance(worker.runner, multiprocessing.process.BaseProcess):
                worker.runner.kill()
                worker.runner.join()
            for job in worker.jobs:  # answered with nothing; no worker reads their slots any more
                job.answered = True
                self._free(job.offset)
            worker.jobs.clear()

    def close(self) -> None:
        """End the workers (each finishes its page) and remove the shared memory."""
        self._stop_workers()
        segment, self._segment = self._segment, None
        self._free_slots = []
        if segment is not None:
            segment.close()
            segment.unlink()


# A page of a step: its first height, its rows, and the check a worker runs of them (if any).
_Page = tuple[int, list[bytes], "PageJob | None"]


class LedgerSweep:
    """Sweeps of ``node``'s copy of ``ledger``, one after another, from a checkpoint."""

    def __init__(
        self, node: str, ledger: str, checkpoint: Checkpoint | None = None, pool: PagePool | None = None
    ) -> None:
        self.node = node
        self.ledger = ledger
        self.checkpoint = checkpoint or Checkpoint(started_ms=_now_ms())
        self.pool = pool
        self._verifier: ChainVerifier | None = None
        self._genesis: bytes | None = None  # the genesis record's bytes, for the pool's workers
        self._ahead: list[_Page] = []  # full pages read and handed to the workers for the next step
        self._ahead_limit = 0  # the page size they were read with
        self.last_complete_ms = 0  # when the last sweep without a finding ended
        self.last_records = 0  # how many records that sweep verified

    def step(self, source: PageSource, limit: int) -> SweepStep:
        """Verify up to ``limit`` records (a page; with a pool, up to ``pool.pages`` pages); a
        finding ends this sweep and starts a new one. With a pool, the next step's pages are read
        and handed to the workers before this step's are joined (see :meth:`_read_ahead`)."""
        cp = self.checkpoint
        height, link = cp.height, cp.link
        short = False
        pages: list[_Page] = []
        try:
            verifier = self._verifier or self._resume(source)
            pages = self._pages(source, verifier, limit)
            if pages and len(pages[-1][1]) == limit:
                self._read_ahead(source, pages[-1][0] + limit, limit)
            for start, rows, future in pages:
                summary = self.pool.result(future) if self.pool is not None else None
                if (
                    summary is not None
                    and summary.clean
                    and summary.start == verifier.next_height
                    and summary.first_prev == verifier.prev
                    and summary.last_link is not None
                ):
                    verifier.next_height, verifier.prev = start + len(rows), summary.last_link
                    self.pool.joined += 1  # type: ignore[union-attr]  # a summary comes only from a pool
                    height, link = verifier.next_height - 1, verifier.prev
                else:
                    try:
                        verifier.feed_many(rows)  # the lean path, or the checks one by one
                    finally:  # a finding's height: the record after the last one that verified
                        height, link = verifier.next_height - 1, verifier.prev
                short = len(rows) < limit
        except RecordError as e:
            # The finding names the first height at which this copy goes wrong: where the next
            # record should stand (a deleted record's height, not that of the one after it).
            finding = Finding(height + 1, e.code, e.reason)
            self._restart()
            return SweepStep(height - cp.height, finding, False, height)
        except BaseException:
            self._drop_ahead()  # the next step starts from the checkpoint, as if nothing was read
            raise
        verified = height - cp.height
        if short:  # the node's end: this sweep is complete
            self.last_complete_ms = _now_ms()
            self.last_records = height + 1
            self.checkpoint = Checkpoint(sweeps=cp.sweeps + 1, started_ms=self.last_complete_ms)
            self._verifier = None
            self._drop_ahead()
            return SweepStep(verified, None, True, height)
        self.checkpoint = Checkpoint(height, link, cp.sweeps, cp.started_ms)
        return SweepStep(verified, None, False, height)

    def _pages(self, source: PageSource, verifier: ChainVerifier, limit: int) -> list[_Page]:
        """This step's pages, in height order up to the node's end: (first height, rows, the check
        a worker runs of them, if any). The pages the last step read ahead come first, if they
        start where the verifier stands and are of this ``limit``; the rest are read now, each
        going to a worker as soon as it is read, so the workers check while the next page is
        read. The genesis page stays in the caller: it sets the rules."""
        pool = self.pool
        count = 1 if pool is None else pool.pages
        pages: list[_Page] = []
        ahead, self._ahead = self._ahead, []
        if ahead and self._ahead_limit == limit and ahead[0][0] == verifier.next_height:
            self._ahead = ahead[count:]
            pages = ahead[:count]
        start = pages[-1][0] + limit if pages else verifier.next_height
        while len(pages) < count:
            rows = source.page(self.ledger, start, limit)
            if start == 0 and rows:
                # The genesis the caller checks first in this page: its rules are the workers'.
                self._genesis = rows[0]
            pages.append((start, rows, self._submit(start, rows)))
            if len(rows) < limit:
                break
            start += len(rows)
        return pages

    def _read_ahead(self, source: PageSource, start: int, limit: int) -> None:
        """Read the next step's pages from height ``start`` (up to ``pool.pages`` of them, counting
        those read ahead already) and hand them to the workers now, so that they check them while
        this step's pages are joined and no worker idles at a step's end. Only full pages are
        kept: the page that reaches the node's end is read again by the step that ends the sweep,
        so a sweep's end is the node's end when that step began (the verifier compares it with the
        height the node held then: a copy that grew meanwhile is not one cut short)."""
        pool = self.pool
        if pool is None or self._genesis is None:
            return
        ahead = self._ahead
        if ahead:
            start = ahead[-1][0] + limit
        self._ahead_limit = limit
        while len(ahead) < pool.pages:
            rows = source.page(self.ledger, start, limit)
            if len(rows) < limit:
                return
            ahead.append((start, rows, self._submit(start, rows)))
            start += limit

    def _submit(self, start: int, rows: list[bytes]) -> PageJob | None:
        if self.pool is None or start == 0 or not rows or self._genesis is None:
            return None
        return self.pool.submit(self.ledger, self._genesis, start, rows)

    def _drop_ahead(self) -> None:
        self._ahead = []  # their workers' answers are read and dropped by the pool

    def _resume(self, source: PageSource) -> ChainVerifier:
        cp = self.checkpoint
        self._genesis = None
        self._drop_ahead()  # read under another verifier
        if cp.height < 0:
            self._verifier = ChainVerifier(self.ledger, PROTOCOL_LIMITS)
            return self._verifier
        rows = source.page(self.ledger, 0, 1)
        if not rows:
            raise RecordError("the node no longer has a genesis record", ledger=self.ledger, height=0)
        genesis = decode_record(rows[0], PROTOCOL_LIMITS)
        rules: LedgerRules = ChainVerifier(self.ledger, PROTOCOL_LIMITS).check(genesis)
        self._genesis = rows[0]
        self._verifier = ChainVerifier.after(self.ledger, cp.height, cp.link, rules, PROTOCOL_LIMITS)
        return self._verifier

    def _restart(self) -> None:
        self.checkpoint = Checkpoint(sweeps=self.checkpoint.sweeps, started_ms=_now_ms())
        self._verifier = None
        self._drop_ahead()
