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
into a slot of the pool's shared memory (readable by this user only), and the worker answers
with a small summary: the sweeping process copies each page once, and no pipe carries it. A
step also reads the next step's full pages and hands them to the workers before it joins its
own, so the workers do not wait at a step's end; the page that reaches the node's end is
always read by the step that ends.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory
from typing import Protocol

import msgpack

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


def verify_packed_page(ledger: str, genesis: bytes, start: int, packed: bytes) -> PageSummary:
    """:func:`verify_page` of the rows ``msgpack.packb`` packed into ``packed``: what a pool's
    worker is sent when its page does not fit a slot of shared memory (see :class:`PagePool`).
    Pickled, a list of 500 rows cost the sweeping process some 0.4 us a record (pickle
    memoizes every object); packed, 0.04."""
    return verify_page(ledger, genesis, start, msgpack.unpackb(packed))


def verify_shared_page(ledger: str, genesis: bytes, start: int, shared: str, offset: int, length: int) -> PageSummary:
    """:func:`verify_page` of the rows packed (``msgpack.packb``) into the ``length`` bytes at
    ``offset`` of the pool's shared memory ``shared``: what a pool's worker is sent, a few dozen
    bytes a page instead of the page itself through a pipe."""
    with _buffer(_attached(shared))[offset : offset + length] as packed:
        rows = msgpack.unpackb(packed)  # bytes objects of their own: the slot may be reused after this
    return verify_page(ledger, genesis, start, rows)


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
# Per thread: a verifier is fed by one thread at a time (a pool of threads shares this module).
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


def _worker_pool(workers: int) -> Executor:
    # forkserver: a worker never inherits the verifier's threads (its sockets) mid-flight.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(workers, mp_context=context)


class PagePool:
    """Worker processes that check a sweep's pages (:func:`verify_page`), ``pages`` of them a
    step. A pool that breaks (a worker died) is shut down and a new one made at the next submit;
    the pages it held are checked in the calling process meanwhile.

    ``make`` makes the executor (default: ``workers`` processes); the tests give threads.
    """

    def __init__(
        self,
        workers: int,
        pages: int | None = None,
        make: Callable[[], Executor] | None = None,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        if workers < 1:
            raise ValueError(f"a page pool has at least one worker, not {workers}")
        self.workers = workers
        # Four pages a worker a step: while one is checked the next are waiting; and a step hands
        # the next step's pages over before it joins its own (LedgerSweep._read_ahead), so a worker
        # does not idle at a step's end either.
        self.pages = pages or 4 * workers
        self._make = make or (lambda: _worker_pool(workers))
        self._executor: Executor | None = None
        # After a failure the caller checks alone this long: a pool that cannot start is not
        # started again for every page.
        self.retry_seconds = retry_seconds
        self._retry_at = 0.0
        self.failures = 0  # pages a worker failed to check (each checked in the caller instead)
        self.joined = 0  # pages whose worker's check the sweep took
        # Pages reach the workers through shared memory, a slot a page in flight: through the
        # executor's pipe, each page's bytes cost the sweeping process as much CPU as the rest of
        # its part of the sweep (the pipe's 64 KiB at a time, a feeder thread's wake-ups). A page
        # too large for a slot, or beyond the slots (several copies' read-ahead), goes inline.
        self._slots = 2 * self.pages + workers  # a step's pages, the next step's, one more each
        self._segment: SharedMemory | None = None
        self._free_slots: list[int] = []
        self._slots_lock = threading.Lock()

    def submit(self, ledger: str, genesis: bytes, start: int, rows: list[bytes]) -> Future[PageSummary] | None:
        """The page's check on a worker, or None if no worker can take it now."""
        try:
            if self._executor is None:
                if time.monotonic() < self._retry_at:
                    return None
                self._executor = self._make()
            packed = msgpack.packb(rows)
            slot = self._slot(len(packed))
            if slot is None:
                return self._executor.submit(verify_packed_page, ledger, genesis, start, packed)
            segment, offset = slot
            size = len(packed)
            _buffer(segment)[offset : offset + size] = packed
            future = self._executor.submit(verify_shared_page, ledger, genesis, start, segment.name, offset, size)
            # Free again once the worker has read it, or it never will: done, failed or cancelled
            # before it ran (a future that runs cannot be cancelled).
            future.add_done_callback(lambda _: self._free(segment, offset))
            return future
        except (BrokenExecutor, RuntimeError) as e:
            self.broken(e)
            return None

    def _slot(self, size: int) -> tuple[SharedMemory, int] | None:
        """A free slot of shared memory for a page of ``size`` bytes: (the segment, its offset); None if none."""
        if size > SLOT_BYTES:
            return None
        with self._slots_lock:
            if self._segment is None:
                try:
                    self._segment = SharedMemory(create=True, size=self._slots * SLOT_BYTES)
                except OSError as e:  # no /dev/shm, or full: every page goes inline
                    log.warning("no shared memory for the sweep's pages (%s); they go through pipes", e)
                    self._slots = 0
                    return None
                self._free_slots = [i * SLOT_BYTES for i in range(self._slots)]
            if not self._free_slots:
                return None
            return self._segment, self._free_slots.pop()

    def _free(self, segment: SharedMemory, offset: int) -> None:
        with self._slots_lock:
            if segment is self._segment:  # not one closed meanwhile
                self._free_slots.append(offset)

    def result(self, future: Future[PageSummary] | None) -> PageSummary | None:
        """The worker's summary; None if it failed (the pool is then replaced)."""
        if future is None:
            return None
        try:
            return future.result()
        except Exception as e:  # a worker that died, or a bug in one: the caller checks the page
            self.broken(e)
            return None

    def broken(self, error: BaseException) -> None:
        self.failures += 1
        self._retry_at = time.monotonic() + self.retry_seconds
        log.warning(
            "a sweep worker failed (%s); pages are checked in this process for %.0f s", error, self.retry_seconds
        )
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        with self._slots_lock:
            segment, self._segment = self._segment, None
            self._free_slots = []
        if segment is not None:
            segment.close()
            segment.unlink()


# A page of a step: its first height, its rows, and the check a worker runs of them (if any).
_Page = tuple[int, list[bytes], "Future[PageSummary] | None"]


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
        finally:
            _cancel(pages)  # the pages after a finding are of no more use
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
            pages, ahead = ahead[:count], ahead[count:]
            self._ahead = ahead
        else:
            _cancel(ahead)
        start = pages[-1][0] + limit if pages else verifier.next_height
        try:
            while len(pages) < count:
                rows = source.page(self.ledger, start, limit)
                if start == 0 and rows:
                    # The genesis the caller checks first in this page: its rules are the workers'.
                    self._genesis = rows[0]
                pages.append((start, rows, self._submit(start, rows)))
                if len(rows) < limit:
                    break
                start += len(rows)
        except BaseException:
            _cancel(pages)
            raise
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

    def _submit(self, start: int, rows: list[bytes]) -> Future[PageSummary] | None:
        if self.pool is None or start == 0 or not rows or self._genesis is None:
            return None
        return self.pool.submit(self.ledger, self._genesis, start, rows)

    def _drop_ahead(self) -> None:
        ahead, self._ahead = self._ahead, []
        _cancel(ahead)

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


def _cancel(pages: Sequence[_Page]) -> None:
    for _, _, future in pages:
        if future is not None:
            future.cancel()
