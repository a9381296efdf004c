"""Sweeps of a copy, alone and with worker processes checking their pages: the same findings.

A copy is a list of record bytes served a page at a time; each tampering is made to it, and
the sweep with a :class:`PagePool` must name the code and height the sequential sweep names.
"""

from __future__ import annotations

import dataclasses
import multiprocessing.process
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import msgpack
import pytest

from vledger.config.settings import Limits
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry, decode_record, link_of
from vledger.node.store import ChainStore
from vledger.node.work import meets_difficulty, solve
from vledger.verifier import sweep as sweep_module
from vledger.verifier.sweep import (
    SLOT_BYTES,
    LedgerSweep,
    PagePool,
    SweepStep,
    WorkerRunner,
    serve_pages,
    start_process,
    verify_page,
)

LIMITS = Limits()
LEDGER = "sweep-test"
RECORDS = 700
PAGE = 50
DEADLINE = 10.0  # seconds a test waits for what must happen at once
DIFFICULTY = 2  # a quarter of nonces fail: a changed nonce can be made to fail the work


class Copy:
    """A node's copy as ``range`` serves it: pages of the record bytes held."""

    def __init__(self, records: list[bytes]) -> None:
        self.records = records
        self.reads = 0

    def page(self, ledger: str, start: int, limit: int) -> list[bytes]:
        self.reads += 1
        return self.records[start : start + limit] if ledger == LEDGER else []


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    directory = tmp_path_factory.mktemp("sweep-chain")
    rules = LedgerRules(("note",), DIFFICULTY, {})
    with ChainStore(directory, origin="node-1") as store:
        store.create_ledger(Entry.prepare(rules.genesis_content(LEDGER, "clerk", "g", 1), DIFFICULTY, LIMITS))
        entries = [
            Entry.prepare(
                Content(LEDGER, "note", {"n": i, "text": f"note {i}"}, "clerk", f"r{i}", 2 + i), DIFFICULTY, LIMITS
            )
            for i in range(RECORDS - 1)
        ]
        for future in [store.submit_entry(entry) for entry in entries]:
            future.result()
        return [data for _, data in store.range_raw(LEDGER)]


def start_thread(conn: Connection) -> WorkerRunner:
    """A pool's worker as a thread of the test's process: the same loop, no process to start."""
    thread = threading.Thread(target=serve_pages, args=(conn,), daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def threads() -> Iterator[PagePool]:
    pool = PagePool(2, pages=4, start_worker=start_thread)  # 4 pages a step: several steps a sweep
    yield pool
    pool.close()


def sweep_to_end(copy: Copy, pool: PagePool | None) -> tuple[LedgerSweep, list[SweepStep]]:
    sweep = LedgerSweep("node-1", LEDGER, pool=pool)
    steps = []
    while True:
        steps.append(sweep.step(copy, PAGE))
        if steps[-1].complete or steps[-1].finding is not None:
            return sweep, steps


def _forged(data: bytes, payload: dict[str, object], *, relink: bool) -> bytes:
    """The record with another payload, a fresh checksum and proof of work; its own link
    recomputed too when ``relink`` (then only the next record's prev betrays it)."""
    original = decode_record(data, LIMITS)
    content = dataclasses.replace(original.content, payload=payload)
    entry = Entry.prepare(content, DIFFICULTY, LIMITS)
    forged = dataclasses.replace(
        original, content=entry.content, content_bytes=entry.content_bytes, checksum=entry.checksum, nonce=entry.nonce
    )
    if relink:
        link = link_of(forged.prev, forged.checksum, forged.height, forged.nonce, forged.accepted, forged.origin)
        forged = dataclasses.replace(forged, link=link)
    return forged.encode()


def _bad_work(data: bytes) -> bytes:
    record = decode_record(data, LIMITS)
    nonce = next(
        n
        for n in range(record.nonce + 1, record.nonce + 10_000)
        if not meets_difficulty(record.checksum, n, DIFFICULTY)
    )
    return dataclasses.replace(record, nonce=nonce).encode()


def _bad_checksum(data: bytes) -> bytes:
    record = decode_record(data, LIMITS)
    content_bytes = record.content_bytes.replace(b"note ", b"NOTE ", 1)
    return dataclasses.replace(record, content_bytes=content_bytes).encode()


TAMPERINGS: dict[str, tuple[Callable[[list[bytes], int], list[bytes]], str, int]] = {
    # name: (what is done to the copy at height h, the code found, the height named minus h)
    "bad checksum": (lambda r, h: [*r[:h], _bad_checksum(r[h]), *r[h + 1 :]], "bad_checksum", 0),
    "bad proof of work": (lambda r, h: [*r[:h], _bad_work(r[h]), *r[h + 1 :]], "insufficient_work", 0),
    "rewritten, link kept": (lambda r, h: [*r[:h], _forged(r[h], {"n": -1}, relink=False), *r[h + 1 :]], "bad_link", 0),
    "rewritten whole (a diverging copy)": (
        lambda r, h: [*r[:h], _forged(r[h], {"n": -1}, relink=True), *r[h + 1 :]],
        "bad_link",
        1,
    ),
    "record deleted": (lambda r, h: [*r[:h], *r[h + 1 :]], "height_gap", 0),
}


@pytest.mark.parametrize("height", [137, 150, 199, 649])  # inside a page, a page's first, a page's last
@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_a_worker_page_names_the_record_a_sequential_sweep_names(
    chain: list[bytes], threads: PagePool, name: str, height: int
) -> None:
    tamper, code, offset = TAMPERINGS[name]
    copy = tamper(chain, height)
    _, alone = sweep_to_end(Copy(copy), None)
    joined = threads.joined
    _, pooled = sweep_to_end(Copy(copy), threads)
    assert threads.joined - joined == (height + offset) // PAGE - 1  # the pages below the finding, but the genesis page
    finding = alone[-1].finding
    assert finding is not None and (finding.code, finding.height) == (code, height + offset)
    assert pooled[-1].finding == finding
    assert sum(s.verified for s in pooled) == sum(s.verified for s in alone) == height + offset


def test_a_clean_copy_is_swept_to_its_end_a_few_pages_a_step(chain: list[bytes], threads: PagePool) -> None:
    joined = threads.joined
    sweep, steps = sweep_to_end(Copy(chain), threads)
    assert steps[-1].complete and steps[-1].end == RECORDS - 1
    assert threads.joined - joined == RECORDS // PAGE - 1  # every full page but the genesis's, by a worker
    assert sum(s.verified for s in steps) == RECORDS
    assert all(s.verified == PAGE * threads.pages for s in steps[:-1])  # each step did its pages
    assert sweep.checkpoint.sweeps == 1 and sweep.last_records == RECORDS
    # The next sweep starts again from genesis, resumes from its checkpoint as before.
    again = sweep.step(Copy(chain), PAGE)
    assert again.end == PAGE * threads.pages - 1 and not again.complete
    resumed = LedgerSweep("node-1", LEDGER, sweep.checkpoint, pool=threads)
    assert resumed.step(Copy(chain), PAGE).end == 2 * PAGE * threads.pages - 1


class LoggedCopy(Copy):
    """A copy that notes the first height of each page read."""

    def __init__(self, records: list[bytes]) -> None:
        super().__init__(records)
        self.starts: list[int] = []

    def page(self, ledger: str, start: int, limit: int) -> list[bytes]:
        self.starts.append(start)
        return super().page(ledger, start, limit)


def test_a_step_hands_the_next_steps_pages_to_the_workers_before_it_joins_its_own(chain: list[bytes]) -> None:
    pool = PagePool(2, pages=2, start_worker=start_thread)
    try:
        copy = LoggedCopy(chain)
        sweep = LedgerSweep("node-1", LEDGER, pool=pool)
        first = sweep.step(copy, PAGE)
        # Its own two pages, then the next step's two, read and submitted: only its own are verified.
        assert copy.starts == [0, 50, 100, 150] and first.verified == 2 * PAGE and first.end == 99
        second = sweep.step(copy, PAGE)
        assert copy.starts[4:] == [200, 250] and second.verified == 2 * PAGE and second.end == 199
        joined = pool.joined
        steps = [first, second]
        while not steps[-1].complete:
            steps.append(sweep.step(copy, PAGE))
        assert sum(s.verified for s in steps) == RECORDS and steps[-1].end == RECORDS - 1
        assert pool.joined - joined == (RECORDS - 200) // PAGE  # each page read ahead was checked by a worker
        assert len(copy.starts) == len(set(copy.starts)) + 1  # read once each, but the end (see below)
    finally:
        pool.close()


def test_the_step_that_ends_a_sweep_reads_the_nodes_end_itself(chain: list[bytes]) -> None:
    # A page read ahead that reaches the node's end is not kept: the copy may grow before the next
    # step, and a sweep that ended where the node stood a step ago would call a grown copy short.
    pool = PagePool(2, pages=2, start_worker=start_thread)
    try:
        copy = Copy(chain[:180])  # pages from 0, 50 and 100 full; the one from 150 holds 30 records
        sweep = LedgerSweep("node-1", LEDGER, pool=pool)
        assert sweep.step(copy, PAGE).end == 99  # read ahead: 100 (kept) and 150 (short: dropped)
        copy.records = chain[:250]  # the node stored 70 more meanwhile
        steps = [sweep.step(copy, PAGE)]
        while not steps[-1].complete:
            steps.append(sweep.step(copy, PAGE))
        assert steps[-1].end == 249 and sum(s.verified for s in steps) == 150
    finally:
        pool.close()


def test_a_finding_drops_the_pages_read_ahead(chain: list[bytes]) -> None:
    pool = PagePool(2, pages=2, start_worker=start_thread)
    try:
        copy = Copy(TAMPERINGS["bad checksum"][0](chain, 120))
        sweep = LedgerSweep("node-1", LEDGER, pool=pool)
        assert sweep.step(copy, PAGE).finding is None
        found = sweep.step(copy, PAGE).finding  # the pages from 100 and 150 were read ahead
        assert found is not None and (found.code, found.height) == ("bad_checksum", 120)
        copy.records = chain  # mended: the next sweep starts from genesis, nothing kept from before
        again = sweep.step(copy, PAGE)
        assert again.finding is None and again.end == 99 and sweep.checkpoint.height == 99
        steps = [again]
        while not steps[-1].complete:
            steps.append(sweep.step(copy, PAGE))
        assert steps[-1].finding is None and steps[-1].end == RECORDS - 1
    finally:
        pool.close()


def test_a_page_that_does_not_join_is_checked_in_the_caller(chain: list[bytes]) -> None:
    # A worker checks a page whose first prev is its own: only the caller can tell that it does not join.
    later = verify_page(LEDGER, chain[0], 300, chain[300:350])
    assert later.clean and later.count == 50 and later.first_prev == decode_record(chain[300], LIMITS).prev
    copy = [*chain[:300], *chain[301:]]  # a page from 300 on starts with record 301, clean by itself
    assert verify_page(LEDGER, chain[0], 300, copy[300:350]).count == 0  # its height is not 300
    # Record 299 rewritten whole: both pages around it are clean alone; the one at 300 does not join.
    spliced = [*chain[:299], _forged(chain[299], {"n": -2}, relink=True), *chain[300:]]
    assert verify_page(LEDGER, chain[0], 250, spliced[250:300]).clean
    assert verify_page(LEDGER, chain[0], 300, spliced[300:350]).clean
    _, steps = sweep_to_end(Copy(spliced), PagePool(2, start_worker=start_thread))
    assert steps[-1].finding is not None and (steps[-1].finding.code, steps[-1].finding.height) == ("bad_link", 300)


def test_a_tampered_genesis_is_found_before_any_worker_trusts_its_rules(chain: list[bytes], threads: PagePool) -> None:
    genesis = decode_record(chain[0], LIMITS)
    forged = dataclasses.replace(genesis, nonce=solve(genesis.checksum, DIFFICULTY, genesis.nonce + 1)).encode()
    copy = [forged, *chain[1:]]
    _, alone = sweep_to_end(Copy(copy), None)
    _, pooled = sweep_to_end(Copy(copy), threads)
    assert alone[-1].finding is not None and alone[-1].finding.height == 0
    assert pooled[-1].finding == alone[-1].finding


def _processes(made: list[WorkerRunner]) -> Callable[[Connection], WorkerRunner]:
    """The default worker processes, each noted in ``made``."""

    def start(conn: Connection) -> WorkerRunner:
        made.append(start_process(conn))
        return made[-1]

    return start


def test_worker_processes_find_what_the_sweep_alone_finds(chain: list[bytes]) -> None:
    made: list[WorkerRunner] = []
    pool = PagePool(2, start_worker=_processes(made))
    try:
        _, steps = sweep_to_end(Copy(chain), pool)
        assert steps[-1].complete and sum(s.verified for s in steps) == RECORDS
        copy = TAMPERINGS["rewritten, link kept"][0](chain, 333)
        _, steps = sweep_to_end(Copy(copy), pool)
        assert steps[-1].finding is not None and (steps[-1].finding.code, steps[-1].finding.height) == ("bad_link", 333)
        assert pool.failures == 0 and len(made) == 2 and pool.joined > 0
    finally:
        pool.close()
    assert not any(worker.is_alive() for worker in made)  # closing the pool ends its workers


def test_a_worker_that_dies_leaves_the_sweep_right_and_the_pool_is_made_again(chain: list[bytes]) -> None:
    made: list[WorkerRunner] = []
    # Two pages a step: the pages read ahead by the first step are not the whole copy, so some are
    # handed to the pool after it broke.
    pool = PagePool(2, pages=2, start_worker=_processes(made), retry_seconds=0)
    copy = TAMPERINGS["bad checksum"][0](chain, 420)
    try:
        sweep = LedgerSweep("node-1", LEDGER, pool=pool)
        first = sweep.step(Copy(copy), PAGE)  # pool made, its workers started
        assert first.finding is None and len(made) == 2
        dying = made[0]
        assert isinstance(dying, multiprocessing.process.BaseProcess) and dying.pid is not None
        os.kill(dying.pid, signal.SIGKILL)  # a worker dies: the pool breaks
        dying.join(60)
        steps = [first]
        while steps[-1].finding is None:
            steps.append(sweep.step(Copy(copy), PAGE))
        finding = steps[-1].finding
        assert finding is not None and (finding.code, finding.height) == ("bad_checksum", 420)
        assert pool.failures >= 1 and len(made) >= 4  # broken once, made again for the next pages
        _, clean = sweep_to_end(Copy(chain), pool)
        assert clean[-1].complete and sum(s.verified for s in clean) == RECORDS
    finally:
        pool.close()
    assert not any(worker.is_alive() for worker in made)


def test_a_pool_that_failed_is_not_made_again_before_its_pause(chain: list[bytes]) -> None:
    tries: list[Connection] = []

    def start(conn: Connection) -> WorkerRunner:
        tries.append(conn)
        raise OSError("no process can be started")  # every start fails

    pool = PagePool(2, start_worker=start, retry_seconds=3600)
    _, steps = sweep_to_end(Copy(chain), pool)
    assert steps[-1].complete and sum(s.verified for s in steps) == RECORDS  # checked in the caller
    assert len(tries) == 1 and pool.failures == 1 and tries[0].closed


def test_a_page_a_worker_cannot_check_is_checked_in_the_caller(
    chain: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker that fails on a page (a bug) answers with the error: the caller checks that page.
    real = sweep_module.verify_page

    def failing(ledger: str, genesis: bytes, start: int, rows: list[bytes]) -> object:
        if start == 500:
            raise RuntimeError("a bug")
        return real(ledger, genesis, start, rows)

    monkeypatch.setattr(sweep_module, "verify_page", failing)  # the workers are threads: they see it
    pool = PagePool(1, pages=2, start_worker=start_thread)
    try:
        sweep, steps = sweep_to_end(Copy(chain), pool)
        assert steps[-1].complete and steps[-1].end == RECORDS - 1 and sweep.last_records == RECORDS
        assert pool.failures == 1 and pool.joined == RECORDS // PAGE - 2  # all but the genesis page and 500's
        assert len(pool._workers) == 1  # the pool went on
    finally:
        pool.close()


def test_a_pool_has_a_worker() -> None:
    with pytest.raises(ValueError):
        PagePool(0)


def test_the_default_pool_starts_worker_processes(chain: list[bytes], tmp_path: Path) -> None:
    pool = PagePool(2)
    try:
        _, steps = sweep_to_end(Copy(chain), pool)
        assert steps[-1].complete and pool.failures == 0 and pool.joined == RECORDS // PAGE - 1
        assert all(isinstance(w.runner, multiprocessing.process.BaseProcess) for w in pool._workers)
    finally:
        pool.close()


def test_a_worker_keeps_its_verifier_and_each_page_sets_its_head(chain: list[bytes]) -> None:
    # A worker reuses one verifier per genesis across pages; pages in any order, a faulty one
    # between them, each is checked from its own first record.
    genesis = chain[0]
    later, earlier = verify_page(LEDGER, genesis, 101, chain[101:151]), verify_page(LEDGER, genesis, 1, chain[1:51])
    faulty = verify_page(LEDGER, genesis, 51, [*chain[51:60], _bad_checksum(chain[60]), *chain[61:101]])
    again = verify_page(LEDGER, genesis, 51, chain[51:101])
    assert (earlier.clean, later.clean, again.clean) == (True, True, True)
    assert earlier.last_link == decode_record(chain[50], LIMITS).link
    assert later.first_prev == decode_record(chain[100], LIMITS).link
    assert later.last_link == decode_record(chain[150], LIMITS).link
    assert (faulty.clean, faulty.count, faulty.last_link) == (False, 9, decode_record(chain[59], LIMITS).link)
    assert again.first_prev == decode_record(chain[50], LIMITS).link == earlier.last_link


@pytest.mark.parametrize("slot_bytes", [0, 13_800, sweep_module.SLOT_BYTES], ids=["inline", "some fit", "shared"])
def test_pages_inline_or_in_shared_memory_get_the_same_findings(
    chain: list[bytes], slot_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A page goes to its worker in a slot of shared memory when it fits one and one is free,
    # inline otherwise (a 50-record page packs to 13.5-14 KB here: at 13,800 bytes the short ones
    # fit). Two copies swept turn about share the pool: more pages in flight than its slots.
    monkeypatch.setattr(sweep_module, "SLOT_BYTES", slot_bytes)
    pool = PagePool(2, pages=4)
    copies = {"clean": Copy(chain), "tampered": Copy(TAMPERINGS["bad proof of work"][0](chain, 377))}
    sweeps = {name: LedgerSweep("node-1", LEDGER, pool=pool) for name in copies}
    steps: dict[str, list[SweepStep]] = {name: [] for name in copies}
    try:
        while any(not s or not (s[-1].complete or s[-1].finding) for s in steps.values()):
            for name, sweep in sweeps.items():
                if not steps[name] or not (steps[name][-1].complete or steps[name][-1].finding):
                    steps[name].append(sweep.step(copies[name], PAGE))
        assert steps["clean"][-1].complete and sum(s.verified for s in steps["clean"]) == RECORDS
        finding = steps["tampered"][-1].finding
        assert finding is not None and (finding.code, finding.height) == ("insufficient_work", 377)
        assert pool.failures == 0 and pool.joined > 0
        # The test looks inside: every slot is free again once no page is in flight (once the
        # pool has read every answer), and the segment is removed with the pool.
        _drop_ahead(sweeps.values(), pool)
        segment = pool._segment
        every_slot = [i * slot_bytes for i in range(pool._slots)]
        assert segment is None or sorted(pool._free_slots) == every_slot
        assert (segment is not None) == (slot_bytes > 0)
        sizes = {len(msgpack.packb(chain[start : start + PAGE])) for start in range(0, RECORDS, PAGE)}
        assert slot_bytes != 13_800 or min(sizes) <= slot_bytes < max(sizes)
    finally:
        pool.close()
    if segment is not None:
        with pytest.raises(FileNotFoundError):
            SharedMemory(segment.name)


def _drop_ahead(sweeps: Iterable[LedgerSweep], pool: PagePool) -> None:
    """Drop the pages the sweeps read ahead, and wait out every page in flight (the pages a
    finding dropped included): the pool has read all their answers."""
    for sweep in sweeps:
        sweep._ahead = []
    for worker in pool._workers:
        if worker.jobs:
            pool.result(worker.jobs[-1])  # the answers come in order: the last one's reads all
        assert not worker.jobs


class _SendWatch:
    """The pool's end of a worker's pipe, setting ``big_send`` as a page too large for a slot
    starts out on it (inline)."""

    def __init__(self, conn: Connection, big_send: threading.Event) -> None:
        self._conn, self._big_send = conn, big_send

    def send_bytes(self, data: bytes) -> None:
        if len(data) > SLOT_BYTES:
            self._big_send.set()
        self._conn.send_bytes(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


def test_a_long_failure_answer_never_blocks_a_worker_while_the_pool_sends_it_a_page(
    chain: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pool reads answers only between its sends: a worker must never need it to read
    # while it writes one. Its summaries are small; a failure's text must be too, or a long
    # one fills the pipe while the pool writes an inline page the worker no longer reads.
    big_send = threading.Event()

    def failing(ledger: str, genesis: bytes, start: int, rows: list[bytes]) -> object:
        assert big_send.wait(DEADLINE)  # the pool has polled for answers and is sending a big page
        raise RuntimeError("x" * (4 << 20))

    monkeypatch.setattr(sweep_module, "verify_page", failing)  # the workers are threads: they see it
    pool = PagePool(1, pages=1, start_worker=start_thread)
    summaries: list[object] = []

    def run() -> None:
        first = pool.submit(LEDGER, chain[0], 1, chain[1:3])
        worker = pool._workers[0]
        worker.conn = _SendWatch(worker.conn, big_send)  # type: ignore[assignment]
        second = pool.submit(LEDGER, chain[0], 3, [b"r" * 1000] * (SLOT_BYTES // 900))  # inline
        summaries.extend([pool.result(first), pool.result(second)])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(DEADLINE)
    assert not thread.is_alive(), "the pool and its worker wait on each other"
    try:
        assert summaries == [None, None] and pool.failures == 2  # the caller checks both pages
    finally:
        pool.close()
