"""ChainStore on a temporary directory: appends, idempotent retries, group commit, replicas, reopening."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from vledger.config.settings import Limits, StoreSettings
from vledger.node import checkpoint_log, work
from vledger.node import store as store_module
from vledger.node import verify as verify_module
from vledger.node.checkpoint_log import COSIGNED, EVIDENCE, SIGNED
from vledger.node.errors import (
    BadChecksumError,
    BadGenesisError,
    BadLinkError,
    DiskFullError,
    FieldError,
    HeightGapError,
    InsufficientWorkError,
    LedgerExistsError,
    NoSuchLedgerError,
    RecordConflictError,
    RequestConflictError,
    StoreClosedError,
    StoreDamagedError,
    StoreError,
    UnknownKindError,
    VledgerError,
)
from vledger.node.record import Entry, Record, decode_record, new_content, new_record
from vledger.node.store import ONE_STATEMENT_MIN, ChainStore, Receipt
from vledger.node.storefile import DB_NAME, SCHEMA
from vledger.node.tree import Frontier, leaf_hash, root_from_inclusion
from vledger.node.verify import ChainVerifier
from vledger.tests.sqlite_faults import malformed

LIMITS = Limits()
LEDGER = "ledger-a"
DEADLINE = 30.0  # seconds; every wait on another thread is bounded


class Clock:
    """A deterministic clock for the committer: 1 ms per call, from ``start``."""

    def __init__(self, start: int = 1_790_000_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1
        return self.now


class GatedClock(Clock):
    """Holds the committer inside its current group until released, so that appends
    submitted meanwhile are all taken together as the next group."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.released = threading.Event()
        self.released.set()

    def hold(self) -> None:
        self.entered.clear()
        self.released.clear()

    def __call__(self) -> int:
        self.entered.set()
        if not self.released.wait(DEADLINE):
            raise TimeoutError("the test never released the committer")
        return super().__call__()


OpenStore = Callable[..., ChainStore]


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[OpenStore]:
    """Opens stores (by default in tmp_path/"a", as node-1) and closes them all afterwards."""
    opened: list[ChainStore] = []

    def open_(directory: Path | None = None, **kwargs: Any) -> ChainStore:
        kwargs.setdefault("origin", "node-1")
        kwargs.setdefault("clock", Clock())
        store = ChainStore(directory or tmp_path / "a", **kwargs)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: OpenStore, kit: Any) -> ChainStore:
    """A store holding LEDGER at difficulty 0, genesis only."""
    s = open_store()
    s.create_ledger(kit.genesis_entry(0))
    return s


def fill(store: ChainStore, kit: Any, count: int, difficulty: int = 0, first: int = 1, **kwargs: Any) -> list[Receipt]:
    return [store.append(kit.entry(i, difficulty, **kwargs)) for i in range(first, first + count)]


def rows(store: ChainStore) -> int:
    """Record rows in the file, counted behind the store's back."""
    with sqlite3.connect(store.path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])


def verify_stored(store: ChainStore, ledger: str = LEDGER) -> ChainVerifier:
    verifier = ChainVerifier(ledger, store.limits)
    for _, data in store.range_raw(ledger):
        verifier.feed(decode_record(data, store.limits))
    return verifier


def results(futures: list[Future[Receipt]]) -> list[Receipt | BaseException]:
    out: list[Receipt | BaseException] = []
    for f in futures:
        error = f.exception(timeout=DEADLINE)
        out.append(error if error is not None else f.result())
    return out


# --- appends and reads ---------------------------------------------------------------


def test_create_append_and_read(open_store: OpenStore, kit: Any) -> None:
    store = open_store()
    genesis = kit.genesis_entry(4)
    created = store.create_ledger(genesis)
    assert (created.ledger, created.height, created.checksum, created.duplicate) == (LEDGER, 0, genesis.checksum, False)
    receipts = fill(store, kit, 5, difficulty=4)
    assert [r.height for r in receipts] == [1, 2, 3, 4, 5]

    records = [store.get(LEDGER, h) for h in range(6)]
    assert all(r is not None for r in records)
    assert [r.hash for r in records if r] == [created.hash] + [r.hash for r in receipts]
    assert records[3] is not None
    assert records[3].content == kit.content(3) and records[3].origin == "node-1"
    assert store.get_by_hash(receipts[2].hash) == records[3]
    assert store.head(LEDGER) == records[5]
    assert store.size(LEDGER) == 6
    assert store.rules(LEDGER) == kit.rules(4)
    assert store.ledgers() == [LEDGER]
    assert list(store.range(LEDGER)) == records
    assert list(store.range(LEDGER, 2, 4)) == records[2:4]
    assert [(h, decode_record(d, LIMITS)) for h, d in store.range_raw(LEDGER, 4)] == [(4, records[4]), (5, records[5])]
    assert store.have([receipts[0].hash, bytes(32), receipts[4].hash]) == [receipts[0].hash, receipts[4].hash]
    assert store.find_request(LEDGER, "Zoe.1", "req-2") == records[2]
    assert verify_stored(store).prev == receipts[-1].hash


def test_a_lone_record_is_one_statement_and_a_group_one_transaction(store: ChainStore, kit: Any) -> None:
    """A group of one record with nothing else to write (no tree row, edge, fill or merge due) is
    its INSERT alone, which SQLite commits as it ends (fsynced: synchronous=FULL); a group of more
    records is one BEGIN ... COMMIT, stored whole or not at all."""
    statements: list[str] = []
    # What it writes (the reads of an author's newest request id aside).
    store._write.set_trace_callback(lambda sql: None if sql.startswith("SELECT") else statements.append(sql))
    try:
        store.append(kit.entry(1))
        assert [s.split()[0] for s in statements] == ["INSERT"]
        statements.clear()
        future = store.submit_entries([kit.entry(2), kit.entry(3)], wake=False)
        store.flush()
        assert [r.height for r in future.result() if isinstance(r, Receipt)] == [2, 3]
        assert [s.split()[0] for s in statements] == ["BEGIN", "INSERT", "INSERT", "COMMIT"]
    finally:
        store._write.set_trace_callback(None)
    assert store._write.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: the lone INSERT's commit fsyncs
    assert verify_stored(store).prev == store.heads()[LEDGER][1]


def test_reads_of_what_is_not_there(store: ChainStore) -> None:
    assert store.get(LEDGER, 1) is None
    assert store.get("nope", 0) is None
    assert store.get_by_hash(bytes(32)) is None
    assert store.head("nope") is None
    assert store.size("nope") == 0
    assert list(store.range("nope")) == []
    assert store.have([]) == []
    assert store.find_request(LEDGER, "Zoe.1", "req-1") is None
    with pytest.raises(NoSuchLedgerError):
        store.rules("nope")


def test_ledgers_are_kept_apart(store: ChainStore, kit: Any) -> None:
    store.create_ledger(kit.genesis_entry(0, ledger="ledger-0"))
    fill(store, kit, 2, ledger="ledger-0")
    fill(store, kit, 3)
    assert store.ledgers() == ["ledger-0", LEDGER]
    assert (store.size("ledger-0"), store.size(LEDGER)) == (3, 4)
    # The same author and request id on two ledgers are two requests.
    assert store.find_request("ledger-0", "Zoe.1", "req-1") != store.find_request(LEDGER, "Zoe.1", "req-1")
    verify_stored(store, "ledger-0")
    verify_stored(store)


def test_accepted_times_never_go_backwards(open_store: OpenStore, kit: Any) -> None:
    times = iter([1000, 500, 400, 2000])
    store = open_store(clock=lambda: next(times))
    store.create_ledger(kit.genesis_entry(0))
    fill(store, kit, 3)
    assert [r.accepted for r in store.range(LEDGER)] == [1000, 1000, 1000, 2000]


# --- idempotent retries and conflicts ------------------------------------------------


def test_a_retried_entry_gets_the_first_receipt(store: ChainStore, kit: Any) -> None:
    entry = kit.entry(1)
    first = store.append(entry)
    again = store.append(entry)
    assert again == dataclasses.replace(first, duplicate=True)
    assert store.size(LEDGER) == 2
    assert rows(store) == 2


def test_a_retried_genesis_gets_the_first_receipt(store: ChainStore, kit: Any) -> None:
    again = store.create_ledger(kit.genesis_entry(0))
    assert (again.height, again.duplicate) == (0, True)
    assert rows(store) == 1


def test_a_request_id_reused_with_other_content_is_refused(store: ChainStore, kit: Any) -> None:
    original = store.append(kit.entry(1))
    other = Entry.prepare(dataclasses.replace(kit.content(1), payload={"n": 2}), 0, LIMITS)
    with pytest.raises(RequestConflictError) as info:
        store.append(other)
    assert info.value.code == "request_conflict"
    assert "other content" in info.value.message
    other_nonce = dataclasses.replace(kit.entry(1), nonce=7)  # valid at difficulty 0, but not the same entry
    with pytest.raises(RequestConflictError) as info:
        store.append(other_nonce)
    # The content is the same: the message names the nonce, never "other content".
    assert "other content" not in info.value.message
    assert "same content but another nonce" in info.value.message
    assert store.size(LEDGER) == 2
    assert rows(store) == 2
    found = store.find_request(LEDGER, "Zoe.1", "req-1")
    assert found is not None
    assert found.hash == original.hash


def test_the_same_request_id_from_another_author_is_another_request(store: ChainStore, kit: Any) -> None:
    store.append(kit.entry(1))
    assert store.append(kit.entry(1, author="Bob")).height == 2


def test_an_entry_for_an_unknown_ledger_is_refused(store: ChainStore, kit: Any) -> None:
    with pytest.raises(NoSuchLedgerError):
        store.append(kit.entry(1, ledger="nope"))
    assert store.ledgers() == [LEDGER]
    assert rows(store) == 1


def test_a_second_genesis_is_refused(store: ChainStore, kit: Any) -> None:
    with pytest.raises(LedgerExistsError):
        store.create_ledger(kit.genesis_entry(0, request_id="create-2"))
    assert rows(store) == 1


def test_create_ledger_refuses_an_entry_that_is_not_a_genesis(open_store: OpenStore, kit: Any) -> None:
    """A note offered as a new ledger's first record is a bad genesis (PROTOCOL.md error codes).

    BUG (node/store.py, ``ChainStore.create_ledger``): raises LedgerExistsError, whose code
    ``ledger_exists`` tells the client the ledger already exists, which it does not.
    """
    store = open_store()
    with pytest.raises(BadGenesisError):
        store.create_ledger(kit.entry(1))
    assert store.ledgers() == []


def test_a_bad_genesis_is_refused_and_nothing_written(open_store: OpenStore, kit: Any) -> None:
    store = open_store()
    genesis = kit.genesis_entry(8)
    lazy = next(n for n in range(10_000) if not work.meets_difficulty(genesis.checksum, n, 8))
    with pytest.raises(InsufficientWorkError):
        store.create_ledger(dataclasses.replace(genesis, nonce=lazy))
    bad_rules = dataclasses.replace(genesis.content, payload={"difficulty": 0, "kinds": [], "rules": {}})
    with pytest.raises(BadGenesisError):
        store.create_ledger(Entry.prepare(bad_rules, 0, LIMITS))
    assert store.ledgers() == []
    assert rows(store) == 0


def test_failed_entries_in_a_group_commit_leave_the_others_written(open_store: OpenStore, kit: Any) -> None:
    clock = GatedClock()
    store = open_store(clock=clock)
    store.create_ledger(kit.genesis_entry(8))
    good = [kit.entry(i, 8) for i in range(1, 5)]
    lazy_nonce = next(n for n in range(10_000) if not work.meets_difficulty(kit.entry(10, 8).checksum, n, 8))
    no_work = dataclasses.replace(kit.entry(10, 8), nonce=lazy_nonce)
    bad_kind = kit.entry(11, 8, kind="other")

    clock.hold()
    first = store.submit_entry(good[0])
    assert clock.entered.wait(DEADLINE)  # the committer is inside the first group
    group = [store.submit_entry(e) for e in (good[1], no_work, good[2], bad_kind, good[3], good[1])]
    clock.released.set()

    assert first.result(DEADLINE).height == 1
    out = results(group)
    assert isinstance(out[1], InsufficientWorkError)
    assert isinstance(out[3], UnknownKindError)
    receipts = [out[0], out[2], out[4], out[5]]
    assert all(isinstance(r, Receipt) for r in receipts)
    assert [r.height for r in receipts if isinstance(r, Receipt)] == [2, 3, 4, 2]
    assert out[5] == dataclasses.replace(out[0], duplicate=True)  # a retry inside the same group
    assert store.size(LEDGER) == 5
    assert rows(store) == 5
    assert store.find_request(LEDGER, "Zoe.1", "req-10") is None
    assert store.find_request(LEDGER, "Zoe.1", "req-11") is None
    verify_stored(store)


def test_a_group_finds_stored_requests_of_each_author_beside_new_ones(open_store: OpenStore, kit: Any) -> None:
    """A group looks up its request ids together (per ledger and author): retries of stored
    requests, conflicts with them and new requests must still each get their own answer."""
    clock = GatedClock()
    store = open_store(clock=clock)
    store.create_ledger(kit.genesis_entry(0))
    stored = [store.append(kit.entry(1)), store.append(kit.entry(2)), store.append(kit.entry(1, author="Bob"))]
    conflict = Entry.prepare(dataclasses.replace(kit.content(2), payload={"n": 99}), 0, LIMITS)

    clock.hold()
    first = store.submit_entry(kit.entry(3))
    assert clock.entered.wait(DEADLINE)  # the committer is inside the first group
    batch = [kit.entry(2), kit.entry(4), kit.entry(1, author="Bob"), conflict, kit.entry(4), kit.entry(1)]
    group = [store.submit_entry(e) for e in batch]
    clock.released.set()

    assert first.result(DEADLINE).height == 4
    out = results(group)
    assert out[0] == dataclasses.replace(stored[1], duplicate=True)
    assert isinstance(out[1], Receipt) and (out[1].height, out[1].duplicate) == (5, False)
    assert out[2] == dataclasses.replace(stored[2], duplicate=True)
    assert isinstance(out[3], RequestConflictError)
    assert out[4] == dataclasses.replace(out[1], duplicate=True)  # a new request, retried in its group
    assert out[5] == dataclasses.replace(stored[0], duplicate=True)
    assert store.size(LEDGER) == 6
    assert rows(store) == 6
    verify_stored(store)


def test_request_ids_in_any_order_are_each_placed_once(store: ChainStore, kit: Any) -> None:
    """The newest stored request id of an author spares a lookup only for ids after it: one that
    sorts before it ("req-10" < "req-9") is looked up, a new one placed, a retry found."""
    nine, ten = store.append(kit.entry(9)), store.append(kit.entry(10))
    assert (nine.height, ten.height) == (1, 2)
    assert store.append(kit.entry(9)) == dataclasses.replace(nine, duplicate=True)
    assert store.append(kit.entry(10)) == dataclasses.replace(ten, duplicate=True)
    assert store.append(kit.entry(1)).height == 3  # before both in order, but new
    assert store.append(kit.entry(99)).height == 4
    with pytest.raises(RequestConflictError):
        store.append(Entry.prepare(dataclasses.replace(kit.content(99), payload={"n": 0}), 0, LIMITS))
    assert rows(store) == 5


def test_a_followed_record_raises_its_authors_newest_request_id(store: ChainStore, kit: Any) -> None:
    """A record stored as a follower's (a standby's, before it places entries again) counts as
    stored for its author: the same request sent later as an entry is its duplicate, not a new record."""
    store.append(kit.entry(1))  # the store now remembers Zoe's newest id: req-1
    followed = kit.extend(store.head(LEDGER), kit.entry(5))
    assert store.append_record(followed).height == 2
    again = store.append(kit.entry(5))
    assert (again.height, again.hash, again.duplicate) == (2, followed.hash, True)
    assert rows(store) == 3


def test_newest_requests_forget_past_their_bound_and_read_again(tmp_path: Path, kit: Any) -> None:
    conn = sqlite3.connect(tmp_path / "ids.sqlite3")
    conn.executescript(SCHEMA)
    conn.execute(
        "INSERT INTO records (ledger, height, hash, author, request_id, data) VALUES (?, ?, ?, ?, ?, ?)",
        (LEDGER, 1, b"h" * 32, "Zoe.1", "req-7", b""),
    )
    newest = store_module.NewestRequests(most=2)
    assert newest.of(conn, LEDGER, "Zoe.1") == "req-7"
    assert newest.of(conn, LEDGER, "Bob") == ""
    newest.committed([kit.extend(kit.chain(1)[0], kit.entry(8))])  # Zoe's req-8: raised in memory only
    assert newest.of(conn, LEDGER, "Zoe.1") == "req-8"
    assert newest.of(conn, LEDGER, "Ann") == ""  # a third author: the memory was dropped, then refilled
    assert newest.of(conn, LEDGER, "Zoe.1") == "req-7"  # read again from the table
    conn.close()


def test_concurrent_appends_are_placed_once_each_without_gaps(store: ChainStore, kit: Any) -> None:
    threads_n, per_thread = 8, 200
    entries = [[kit.entry(i, author=f"writer-{t}") for i in range(per_thread)] for t in range(threads_n)]
    receipts: list[list[Receipt]] = [[] for _ in range(threads_n)]
    failures: list[BaseException] = []

    def write(t: int) -> None:
        try:
            for entry in entries[t]:
                receipts[t].append(store.append(entry))
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
        assert not thread.is_alive()
    assert failures == []

    heights = sorted(r.height for rs in receipts for r in rs)
    assert heights == list(range(1, threads_n * per_thread + 1))
    assert not any(r.duplicate for rs in receipts for r in rs)
    for t, rs in enumerate(receipts):
        assert [r.height for r in rs] == sorted(r.height for r in rs)  # one writer's appends keep their order
        for entry, receipt in zip(entries[t], rs, strict=True):
            record = store.get(LEDGER, receipt.height)
            assert record is not None
            assert (record.hash, record.checksum, record.content) == (receipt.hash, entry.checksum, entry.content)
    assert store.size(LEDGER) == rows(store) == threads_n * per_thread + 1
    assert verify_stored(store).next_height == threads_n * per_thread + 1


def test_close_finishes_the_appends_already_queued(store: ChainStore, kit: Any) -> None:
    futures = [store.submit_entry(kit.entry(i)) for i in range(1, 31)]
    store.close()
    assert all(f.done() for f in futures)
    assert sorted(f.result().height for f in futures) == list(range(1, 31))


def test_flush_commits_on_the_calling_thread_in_one_group(open_store: OpenStore, kit: Any) -> None:
    committed_on: list[tuple[int, int]] = []  # (thread, records) per group
    store = open_store(on_commit=lambda records: committed_on.append((threading.get_ident(), len(records))))
    store.create_ledger(kit.genesis_entry(0))
    committed_on.clear()
    futures = [store.submit_entry(kit.entry(i), wake=False) for i in range(1, 11)]
    assert not any(f.done() for f in futures)  # the committer was not woken for them
    store.flush()
    assert all(f.done() for f in futures)
    assert [f.result().height for f in futures] == list(range(1, 11))  # in the order they were queued
    assert committed_on == [(threading.get_ident(), 10)]


def test_flush_completes_a_group_before_on_commit_and_the_committer_after_it(open_store: OpenStore, kit: Any) -> None:
    """flush() (a request loop's lone put) completes the futures as soon as COMMIT returned, so
    their callbacks answer before the store's bookkeeping and on_commit's work, and flush
    returns once both are done; the committer thread does both first, for threads that act on
    a future at once. Either way the group is durable before any future is done. ``answered``
    tells on_commit which (an outbox runs a due pass there only when it delays no answer)."""
    seen: list[tuple[str, int, int]] = []  # what each step saw: ("on_commit" | "done", stored size, size)
    answered: list[bool] = []  # store.answered as on_commit saw it
    store = open_store(
        on_commit=lambda records: (
            seen.append(("on_commit", store.stored_size(LEDGER), store.size(LEDGER))),
            answered.append(store.answered),
        )
    )
    store.create_ledger(kit.genesis_entry(0))
    seen.clear()

    def done_then(future: Future[Any]) -> None:
        seen.append(("done", store.stored_size(LEDGER), store.size(LEDGER)))

    inline = store.submit_entry(kit.entry(1), wake=False)
    inline.add_done_callback(done_then)
    store.flush()
    # Answered when durable (the file holds 2 records), before the heads moved (size 1 yet).
    assert seen == [("done", 2, 1), ("on_commit", 2, 2)]
    assert answered == [False, True] and not store.answered  # the genesis's group: the committer's
    assert store.size(LEDGER) == 2 and store.head(LEDGER) is not None  # what the loop's next request reads
    seen.clear()
    called = threading.Event()
    committed = store.submit_entry(kit.entry(2))
    committed.add_done_callback(lambda future: (done_then(future), called.set()))
    assert committed.result(DEADLINE).height == 2
    # result() returns once the future is done, which wakes its waiters before its callbacks run.
    assert called.wait(DEADLINE)
    assert seen == [("on_commit", 3, 3), ("done", 3, 3)]
    assert answered == [False, True, False]


def test_flush_answers_early_only_its_callers_puts_not_those_other_threads_queued(
    open_store: OpenStore, kit: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A put another thread queued (wake=True: a standby's follower, the admin ledger) that the
    loop's flush happens to take is answered only once the heads and trees moved: its waiter
    acts at once, on another thread, and reads the store (r10 #2: it found size 1 and no tree at
    size 2, and raised a false alert against its own copy)."""
    store = open_store()
    store.create_ledger(kit.genesis_entry(0))
    seen: dict[str, Any] = {}

    def theirs_done(_: Future[Any]) -> None:
        # A done callback runs where the future is completed: what a waiter woken then reads.
        seen["theirs"] = (store.size(LEDGER), store.tree_size(LEDGER))

    class Unheard(threading.Event):
        def set(self) -> None:
            """Its committer thread had not run yet when the flush took the lock."""

    # Queued just before the flush took the lock. The committer thread, if it goes back to sleep
    # on this event meanwhile (create_ledger's group), is woken once the flush is done.
    unheard = Unheard()
    with monkeypatch.context() as m:
        m.setattr(store, "_work", unheard)
        theirs = store.submit_entry(kit.entry(1), wake=True)
    theirs.add_done_callback(theirs_done)
    ours = store.submit_entry(kit.entry(2), wake=False)
    ours.add_done_callback(lambda _: seen.setdefault("ours", (store.size(LEDGER), theirs.done())))
    store.flush()
    threading.Event.set(unheard)
    assert [theirs.result(0).height, ours.result(0).height] == [1, 2]  # one group, in queue order
    assert seen["ours"] == (1, False)  # the caller's own put: answered before the bookkeeping
    assert seen["theirs"] == (3, 3)  # the other thread's: once the heads and trees moved


def test_flush_answers_a_put_that_writes_no_tree_row_before_its_tree_grows(
    open_store: OpenStore, kit: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """15 lone puts of 16 complete no stored subtree: flush answers them before it grows the
    ledger's tree (off the round trip), the 16th once its rows are in its transaction. Either
    way the tree is the records' once flush returned, and the same read back from the file."""
    store = open_store()
    store.create_ledger(kit.genesis_entry(0))
    leaves = [leaf_hash(store.get(LEDGER, 0).encode())]  # type: ignore[union-attr]
    answered: list[Future[Any]] = []
    grown_after_answer: list[bool] = []  # per group: was its put answered when its tree grew?
    grow = store._grow_trees

    def watched(*args: Any) -> Any:
        grown_after_answer.append(answered[-1].done())
        return grow(*args)

    monkeypatch.setattr(store, "_grow_trees", watched)
    for height in range(1, 40):
        answered.append(store.submit_entry(kit.entry(height), wake=False))
        store.flush()
        leaves.append(leaf_hash(store.get(LEDGER, height).encode()))  # type: ignore[union-attr]
        assert store.tree_size(LEDGER) == height + 1
        assert store.root(LEDGER) == Frontier.of_leaves(leaves).root()
    # Grown before the answer only where the size reaches a multiple of 16 (its rows written).
    assert grown_after_answer == [(height + 1) % 16 != 0 for height in range(1, 40)]
    store.close()
    reopened = open_store()
    assert reopened.root(LEDGER) == Frontier.of_leaves(leaves).root()
    proof = reopened.inclusion_proof(LEDGER, 17, 40)  # read from the tree rows the 16th and 32nd wrote
    assert root_from_inclusion(leaves[17], 17, 40, proof) == Frontier.of_leaves(leaves).root()


def test_flush_during_a_commit_on_another_thread_leaves_the_queue_to_the_committer(
    open_store: OpenStore, kit: Any
) -> None:
    clock = GatedClock()
    store = open_store(clock=clock)
    store.create_ledger(kit.genesis_entry(0))
    clock.hold()
    first = store.submit_entry(kit.entry(1))  # the committer takes it and waits inside its group
    assert clock.entered.wait(DEADLINE)
    later = [store.submit_entry(kit.entry(i), wake=False) for i in range(2, 6)]
    store.flush()  # returns at once: it does not wait for the committer's group
    assert not first.done() and not any(f.done() for f in later)
    clock.released.set()
    assert [r.height for r in results([first, *later])] == [1, 2, 3, 4, 5]  # type: ignore[union-attr]


@pytest.mark.parametrize("hashed", [False, True])
def test_a_run_of_hashed_entries_is_not_hashed_again(
    open_store: OpenStore, kit: Any, monkeypatch: pytest.MonkeyPatch, hashed: bool
) -> None:
    """submit_entries(hashed=True): the caller (the request loop, whose Entry.from_wire and
    from_checked hash each content) made the checksums, so placing hashes no content again;
    kind and proof of work are still checked. Without it every checksum is checked."""
    store = open_store()
    store.create_ledger(kit.genesis_entry(8))
    good = [kit.entry(i, 8) for i in range(1, 4)]
    lazy_nonce = next(n for n in range(10_000) if not work.meets_difficulty(kit.entry(10, 8).checksum, n, 8))
    no_work = dataclasses.replace(kit.entry(10, 8), nonce=lazy_nonce)
    hashed_contents: list[bytes] = []
    checksum_of = verify_module.checksum_of
    monkeypatch.setattr(verify_module, "checksum_of", lambda data: hashed_contents.append(data) or checksum_of(data))

    out = store.submit_entries([good[0], no_work, good[1], good[2]], hashed=hashed).result(DEADLINE)

    assert isinstance(out[1], InsufficientWorkError)
    assert [r.height for r in out if isinstance(r, Receipt)] == [1, 2, 3]
    assert hashed_contents == ([] if hashed else [e.content_bytes for e in (good[0], no_work, good[1], good[2])])


def test_a_run_of_entries_unhashed_refuses_a_wrong_checksum(open_store: OpenStore, kit: Any) -> None:
    """A caller that did not hash the entries (the default) has each checksum checked."""
    store = open_store()
    store.create_ledger(kit.genesis_entry(0))
    wrong = dataclasses.replace(kit.entry(1, 0), checksum=bytes(32))
    out = store.submit_entries([wrong, kit.entry(2, 0)]).result(DEADLINE)
    assert isinstance(out[0], BadChecksumError)
    assert isinstance(out[1], Receipt) and out[1].height == 1


def test_a_run_of_entries_places_each_on_its_own_under_one_future(open_store: OpenStore, kit: Any) -> None:
    """submit_entries (the request loop's round of puts): each entry gets its own receipt or
    error, in order, and one refused entry keeps none of the others out."""
    committed: list[int] = []
    store = open_store(on_commit=lambda records: committed.append(len(records)))
    store.create_ledger(kit.genesis_entry(8))
    good = [kit.entry(i, 8) for i in range(1, 5)]
    lazy_nonce = next(n for n in range(10_000) if not work.meets_difficulty(kit.entry(10, 8).checksum, n, 8))
    no_work = dataclasses.replace(kit.entry(10, 8), nonce=lazy_nonce)
    elsewhere = Entry.prepare(dataclasses.replace(kit.content(12), ledger="no-such-ledger"), 0, LIMITS)
    committed.clear()
    appends_before = store.stats.appends

    run = store.submit_entries([good[0], no_work, good[1], elsewhere, good[2], good[0], good[3]], wake=False)
    assert not run.done()  # the committer was not woken for it
    store.flush()
    out = run.result(DEADLINE)
    assert isinstance(out[1], InsufficientWorkError)
    assert isinstance(out[3], NoSuchLedgerError)
    receipts = [out[0], out[2], out[4], out[5], out[6]]
    assert all(isinstance(r, Receipt) for r in receipts)
    assert [r.height for r in receipts if isinstance(r, Receipt)] == [1, 2, 3, 1, 4]
    assert out[5] == dataclasses.replace(out[0], duplicate=True)  # a retry inside the same run
    assert committed == [4]  # one group, its four new records
    assert store.size(LEDGER) == rows(store) == 5
    assert store.stats.appends - appends_before == 7  # a run counts as its entries
    again = store.submit_entries([good[2]]).result(DEADLINE)  # a retry of a stored request, later
    assert again == [dataclasses.replace(out[4], duplicate=True)]
    verify_stored(store)


def test_a_run_of_entries_is_accepted_at_one_clock_reading(open_store: OpenStore, kit: Any) -> None:
    """A round's records are accepted at one moment: the clock (1 ms a call here) is read
    once for the run, the next run reads it again; the accepted floor (16.2) is read for each
    record, just before its grants are."""
    floor_reads: list[int] = []
    store = open_store(accepted_floor=lambda: floor_reads.append(1) or 0)
    store.create_ledger(kit.genesis_entry(0))
    floor_reads.clear()
    for run in ((1, 2, 3, 4), (5, 6, 7)):
        assert all(isinstance(r, Receipt) for r in store.submit_entries([kit.entry(i) for i in run]).result(DEADLINE))
    accepted = [r.accepted for r in store.range(LEDGER, 1)]
    assert len(set(accepted[:4])) == 1 and len(set(accepted[4:])) == 1
    assert accepted[4] > accepted[0]
    assert len(floor_reads) == 7
    verify_stored(store)


def test_a_run_of_entries_is_one_group_and_counts_as_its_entries(open_store: OpenStore, kit: Any) -> None:
    """A run is never split between groups; beside it, group_commit_max counts its entries."""
    committed: list[int] = []
    store = open_store(
        settings=StoreSettings(group_commit_max=4), on_commit=lambda records: committed.append(len(records))
    )
    store.create_ledger(kit.genesis_entry(0))
    committed.clear()
    groups_before = store.stats.groups
    singles = [store.submit_entry(kit.entry(i), wake=False) for i in (1, 2)]
    run = store.submit_entries([kit.entry(i) for i in range(3, 9)], wake=False)  # six: more than a group
    last = store.submit_entry(kit.entry(9), wake=False)
    store.flush()
    assert committed == [2, 6, 1]
    assert store.stats.groups - groups_before == 3
    assert [f.result(DEADLINE).height for f in singles] == [1, 2]
    assert [r.height for r in run.result(DEADLINE) if isinstance(r, Receipt)] == list(range(3, 9))
    assert last.result(DEADLINE).height == 9


def test_a_run_of_entries_whose_group_fails_is_refused_whole(open_store: OpenStore, kit: Any, tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    store.create_ledger(kit.genesis_entry(0))
    # Another connection holds the write lock past the busy timeout: the next group fails.
    blocker = sqlite3.connect(tmp_path / "s" / DB_NAME, isolation_level=None, timeout=0)
    store._write.execute("PRAGMA busy_timeout=50")
    blocker.execute("BEGIN IMMEDIATE")
    try:
        run = store.submit_entries([kit.entry(1), kit.entry(2)])
        with pytest.raises(StoreError, match="write failed"):
            run.result(DEADLINE)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.size(LEDGER) == rows(store) == 1
    assert [r.height for r in store.submit_entries([kit.entry(1), kit.entry(2)]).result(DEADLINE)] == [1, 2]  # type: ignore[union-attr]


def test_a_full_disk_refuses_the_group_as_disk_full_said_once_and_the_store_writes_again_after(
    store: ChainStore, kit: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Outsider o13: a full disk was a `store_error` "write failed", logged at every retry, and
    nothing said "disk full". SQLite's max_page_count gives its SQLITE_FULL as a full disk does."""
    (pages,) = store._write.execute("PRAGMA page_count").fetchone()
    store._write.execute(f"PRAGMA max_page_count = {pages}")
    entries = [kit.entry(i, payload={"pad": "x" * 3000}) for i in range(1, 4)]
    with caplog.at_level("DEBUG", logger="vledger.node.store"):
        for _ in range(3):
            with pytest.raises(DiskFullError, match=f"^disk full: {store.path.parent}: ") as failed:
                store.submit_entries(entries).result(DEADLINE)
            assert failed.value.code == "disk_full"
        said = [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "WARNING")]
        assert said == [f"disk full: {store.path.parent}: writes to the store fail until there is room "
                        "(database or disk is full)"]  # fmt: skip
        assert store.size(LEDGER) == rows(store) == 1  # nothing of it written
        store._write.execute("PRAGMA max_page_count = 1000000")  # room again
        assert [r.height for r in store.submit_entries(entries).result(DEADLINE)] == [1, 2, 3]  # type: ignore[union-attr]
        assert caplog.records[-1].getMessage() == f"disk space back: {store.path.parent}: the store writes again"


def test_a_closed_store_refuses_a_run_of_entries(store: ChainStore, kit: Any) -> None:
    store.close()
    with pytest.raises(StoreClosedError):
        store.submit_entries([kit.entry(1)])


def test_a_receipt_built_for_a_record_is_what_its_constructor_makes(store: ChainStore, kit: Any) -> None:
    """Receipt.of sets the slots itself (a receipt per append): the same receipt, still frozen."""
    receipt = store.append(kit.entry(1))
    record = store.get(LEDGER, 1)
    assert record is not None
    for duplicate, values in ((False, None), (True, {"electronic_id": "E-1"})):
        built = Receipt.of(record, duplicate=duplicate, values=values)
        expected = Receipt(LEDGER, 1, record.link, record.checksum, duplicate, values or {})
        assert (built, repr(built), hash((built.ledger, built.hash))) == (
            expected,
            repr(expected),
            hash((LEDGER, record.link)),
        )
    assert Receipt.of(record) == receipt
    with pytest.raises(dataclasses.FrozenInstanceError):
        receipt.height = 2  # type: ignore[misc]


# --- reopening -------------------------------------------------------------------------


def test_reopening_keeps_everything(open_store: OpenStore, tmp_path: Path, kit: Any) -> None:
    store = open_store(tmp_path / "s")
    store.create_ledger(kit.genesis_entry(3))
    receipts = fill(store, kit, 4, difficulty=3)
    before = list(store.range_raw(LEDGER))
    store.close()

    again = open_store(tmp_path / "s")
    assert list(again.range_raw(LEDGER)) == before
    assert (again.size(LEDGER), again.rules(LEDGER), again.ledgers()) == (5, kit.rules(3), [LEDGER])
    head = again.head(LEDGER)
    assert head is not None
    assert head.hash == receipts[-1].hash
    retry = again.append(kit.entry(2, 3))
    assert (retry.height, retry.duplicate) == (2, True)
    new = again.append(kit.entry(5, 3))
    record = again.get(LEDGER, new.height)
    assert (new.height, record and record.prev) == (5, receipts[-1].hash)
    verify_stored(again)


def tamper(store_dir: Path, height: int, change: Callable[[bytes, bytes], bytes]) -> None:
    """Rewrite the ``data`` of one row with sqlite3, as an attacker with the file would."""
    with sqlite3.connect(store_dir / DB_NAME) as conn:
        data = conn.execute("SELECT data FROM records WHERE ledger = ? AND height = ?", (LEDGER, height)).fetchone()[0]
        below = conn.execute(
            "SELECT data FROM records WHERE ledger = ? AND height = ?", (LEDGER, height - 1)
        ).fetchone()
        changed = change(bytes(data), bytes(below[0]) if below else b"")
        conn.execute("UPDATE records SET data = ? WHERE ledger = ? AND height = ?", (changed, LEDGER, height))
    conn.close()


def a_store_on_disk(open_store: OpenStore, directory: Path, kit: Any, count: int = 4) -> None:
    store = open_store(directory)
    store.create_ledger(kit.genesis_entry(4))
    fill(store, kit, count - 1, difficulty=4)
    store.close()


def test_a_byte_changed_on_the_disk_behind_sqlite_s_back_is_read_within_a_second(
    open_store: OpenStore, tmp_path: Path, kit: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read connection keeps its pages while no write changes the WAL's index: without
    dropping them, a node serves a rotted (or hand-edited) record from memory and its sweeps
    never see it. Here every read drops them (READ_CACHE_SECONDS 0: the store's is 1 s)."""
    monkeypatch.setattr(store_module, "READ_CACHE_SECONDS", 0.0)
    a_store_on_disk(open_store, tmp_path / "s", kit)
    store = open_store(tmp_path / "s")
    first = dict(store.range_raw(LEDGER))[2]  # its page is now in the read connection's cache
    path = tmp_path / "s" / DB_NAME
    disk = path.read_bytes()
    at = disk.index(b"message 0002")
    path.write_bytes(disk[:at] + b"massage 0002" + disk[at + 12 :])  # no SQLite on the way
    assert dict(store.range_raw(LEDGER))[2] == first.replace(b"message 0002", b"massage 0002")


@pytest.mark.parametrize("value", ["'hello'", "42", "4.5"])  # valid UTF-8: read as a str
def test_a_record_of_another_type_than_blob_under_a_running_store_is_damage_to_every_range_reader(
    store: ChainStore, kit: Any, value: str
) -> None:
    """range_raw gave a cell of another type as it was read (the epochs', key chains', admin
    ledger's and outbox's reads took TEXT as a record's bytes) until the next open checked it:
    now no row of its page is given, and on_damaged hears of it once, naming the cell."""
    fill(store, kit, 5)
    heard: list[StoreDamagedError] = []
    store.on_damaged = heard.append
    with contextlib.closing(sqlite3.connect(store.path)) as conn, conn:
        conn.execute(f"UPDATE records SET data = {value} WHERE ledger = ? AND height = 4", (LEDGER,))
    given: list[int] = []
    with pytest.raises(StoreDamagedError, match=f"not blob \\(ledger '{LEDGER}' at 4\\)"):
        given.extend(height for height, _ in store.range_raw(LEDGER, 1))
    assert given == []  # not even the page's rows below it
    assert [height for height, _ in store.range_raw(LEDGER, 0, 4)] == [0, 1, 2, 3]  # another page: read
    with pytest.raises(StoreDamagedError):
        list(store.range(LEDGER))
    assert len(heard) == 1


@pytest.mark.parametrize(
    ("height", "change", "error"),
    [
        pytest.param(3, lambda d, _: d.replace(b"message 0003", b"massage 0003"), "bad_checksum", id="content-byte"),
        pytest.param(3, lambda d, _: d[:-1], "bad_encoding", id="truncated"),
        pytest.param(3, lambda d, _: d + b"\x00", "non_canonical", id="trailing-byte"),
        pytest.param(3, lambda d, _: b"", "bad_encoding", id="empty"),
        pytest.param(0, lambda d, _: d.replace(b"create-1", b"create-2"), "bad_checksum", id="genesis"),
    ],
)
def test_a_tampered_head_or_genesis_fails_at_open(
    open_store: OpenStore, tmp_path: Path, kit: Any, height: int, change: Callable[[bytes, bytes], bytes], error: str
) -> None:
    a_store_on_disk(open_store, tmp_path / "s", kit)
    tamper(tmp_path / "s", height, change)
    with pytest.raises(VledgerError) as info:
        ChainStore(tmp_path / "s", origin="node-1")
    assert info.value.code == error


@pytest.mark.parametrize(
    ("height", "change", "column", "found"),
    [
        # 40 records: 20 is below the stored edge (32), 35 past it, 39 the head, 0 the genesis.
        (20, "data = CAST(data AS TEXT)", "data", "text"),  # the same bytes, not UTF-8
        (35, "data = CAST(data AS TEXT)", "data", "text"),
        (39, "data = CAST(data AS TEXT)", "data", "text"),
        (0, "data = CAST(data AS TEXT)", "data", "text"),
        (20, "data = 'hello'", "data", "text"),
        (20, "data = 5", "data", "integer"),
        (20, "hash = CAST(hash AS TEXT)", "hash", "text"),
        (20, "hash = 5", "hash", "integer"),
        (38, "hash = 2.5", "hash", "real"),
        (20, "author = CAST(author AS BLOB)", "author", "blob"),
        (39, "request_id = CAST(request_id AS BLOB)", "request_id", "blob"),
        (20, "height = 'abc'", "height", "text"),
        (20, "height = 19.5", "height", "real"),
        (20, "height = X'14'", "height", "blob"),
        (20, "ledger = CAST(ledger AS BLOB)", "ledger", "blob"),
    ],
)
def test_a_records_cell_of_another_type_fails_the_open_naming_its_column(
    open_store: OpenStore, tmp_path: Path, kit: Any, height: int, change: str, column: str, found: str
) -> None:
    """The open's one scan of the records checks every column the node reads, as it reads them
    (storefile.CHECKED_RECORD_PAGE and _load_heads), and names the cell as a scan of its own did."""
    store = open_store(tmp_path / "s")
    store.create_ledger(kit.genesis_entry(0))
    fill(store, kit, 39)
    store.close()
    with sqlite3.connect(tmp_path / "s" / DB_NAME) as conn:
        conn.execute(f"UPDATE records SET {change} WHERE ledger = ? AND height = ?", (LEDGER, height))
    conn.close()
    kind = {"ledger": "text", "height": "integer", "author": "text", "request_id": "text"}.get(column, "blob")
    with pytest.raises(StoreError, match=rf"the records table's {column} column holds a {found} value, not {kind}"):
        ChainStore(tmp_path / "s", origin="node-1")


def test_a_store_refused_for_a_cell_s_type_is_left_as_it_was(tmp_path: Path, kit: Any) -> None:
    """Reviewer r6 #6: the hash index's open (adopt hashes, fill a run) came before the records'
    type check and wrote a tampered hash's TEXT prefix into hash_rows of a store then refused:
    the evidence kept was changed by the failed open."""
    with ChainStore(tmp_path / "s", origin="node-1", hash_fill_at=None) as store:  # nothing indexed yet
        store.create_ledger(kit.genesis_entry(0))
        fill(store, kit, 39)
    with sqlite3.connect(tmp_path / "s" / DB_NAME) as conn:
        conn.execute("UPDATE records SET hash = CAST(hash AS TEXT) WHERE ledger = ? AND height = 7", (LEDGER,))
    conn.close()

    def index_rows() -> list[Any]:
        with contextlib.closing(sqlite3.connect(tmp_path / "s" / DB_NAME)) as conn:
            return [
                conn.execute(f"SELECT * FROM {table}").fetchall()
                for table in ("hash_rows", "hash_runs", "hashes_filled")
            ]

    before = index_rows()
    with pytest.raises(StoreError, match="the records table's hash column holds a text value"):
        ChainStore(tmp_path / "s", origin="node-1", hash_fill_at=8)
    assert index_rows() == before


def test_a_head_row_holding_another_valid_record_fails_at_open(open_store: OpenStore, tmp_path: Path, kit: Any) -> None:
    """The head row's bytes are the record below it: valid on their own, but not the head.

    BUG (node/store.py, ``_load_heads``): the head is checked with ``verify_record`` only, never
    against the row it was read from (ledger, height), so the store opens with a head one
    lower than the file holds, and its next append fails with "UNIQUE constraint failed".
    """
    a_store_on_disk(open_store, tmp_path / "s", kit)
    tamper(tmp_path / "s", 3, lambda _, below: below)
    try:
        store = open_store(tmp_path / "s")
    except VledgerError:
        return
    # It opened: show what the damage does next, then fail.
    with pytest.raises(StoreError, match="UNIQUE"):
        store.append(kit.entry(9, 4))
    pytest.fail(f"opened with its head at height {store.size(LEDGER) - 1} while the file holds height 3")


# --- placed records: replicas and imports ------------------------------------------------


def test_a_replica_copy_is_byte_identical(open_store: OpenStore, tmp_path: Path, kit: Any) -> None:
    home = open_store(tmp_path / "home")
    home.create_ledger(kit.genesis_entry(4))
    fill(home, kit, 6, difficulty=4)
    home.create_ledger(kit.genesis_entry(0, ledger="ledger-b"))
    fill(home, kit, 2, ledger="ledger-b")

    replica = open_store(tmp_path / "replica", origin=None)
    for ledger in home.ledgers():
        receipts = replica.append_records(home.range(ledger))
        assert [r.hash for r in receipts] == [r.hash for r in home.range(ledger)]
        assert not any(r.duplicate for r in receipts)
        assert list(replica.range_raw(ledger)) == list(home.range_raw(ledger))
        assert replica.rules(ledger) == home.rules(ledger)
    assert replica.ledgers() == home.ledgers()
    # Re-sending what the replica holds is a duplicate, not an error (feeds may repeat).
    again = home.get(LEDGER, 3)
    assert again is not None
    assert replica.append_record(again) == dataclasses.replace(Receipt.of(again), duplicate=True)
    assert [r.duplicate for r in replica.append_records(home.range(LEDGER, 5))] == [True, True]
    assert rows(replica) == rows(home) == 10


@pytest.fixture
def replica(open_store: OpenStore, tmp_path: Path, kit: Any) -> tuple[ChainStore, list[Record]]:
    records = kit.chain(5, 2)
    store = open_store(tmp_path / "replica", origin=None)
    store.append_records(records)
    return store, records


def test_a_different_record_at_a_stored_height_is_a_conflict(
    replica: tuple[ChainStore, list[Record]], kit: Any
) -> None:
    store, records = replica
    fork = dataclasses.replace(kit, t0=kit.t0 + 1).chain(3, 2)
    for record in (fork[2], fork[0], kit.extend(records[1], kit.entry(7, 2))):
        with pytest.raises(RecordConflictError) as info:
            store.append_record(record)
        assert info.value.code == "record_conflict"
    assert list(store.range(LEDGER)) == records


def test_a_record_that_does_not_extend_the_head_is_refused(replica: tuple[ChainStore, list[Record]], kit: Any) -> None:
    store, records = replica
    head = records[-1]
    skipping = kit.entry(9, 2).place(head.height + 2, head.link, head.accepted, "node-1")
    with pytest.raises(HeightGapError):
        store.append_record(skipping)
    unlinked = kit.entry(9, 2).place(head.height + 1, records[-2].link, head.accepted, "node-1")
    with pytest.raises(BadLinkError):
        store.append_record(unlinked)
    tampered = dataclasses.replace(kit.extend(head, kit.entry(9, 2)), nonce=head.nonce + 1)
    with pytest.raises(VledgerError):
        store.append_record(tampered)
    headless = kit.chain(3, 0, ledger="ledger-b")[1:]
    with pytest.raises(HeightGapError):
        store.append_records(headless)
    assert store.ledgers() == [LEDGER]
    assert store.size(LEDGER) == rows(store) == len(records)
    assert store.append_record(kit.extend(head, kit.entry(9, 2))).height == head.height + 1


def test_a_run_of_records_is_stored_whole_under_one_future(open_store: OpenStore, tmp_path: Path, kit: Any) -> None:
    records = kit.chain(8, 2)
    store = open_store(tmp_path / "replica", origin=None)
    for verified in (False, True):
        first = store.submit_records(records[:5], verified=verified)  # verified: the genesis is still checked
        again = store.submit_records(records[3:], verified=verified)  # two held already: duplicates
        assert [r.height for r in first.result(DEADLINE)] == [0, 1, 2, 3, 4]
        assert [(r.height, r.duplicate) for r in again.result(DEADLINE)] == [
            (3, True),
            (4, True),
            (5, False),
            (6, False),
            (7, False),
        ]
        assert list(store.range(LEDGER)) == records
        assert verify_stored(store).next_height == len(records)
        store.close()
        store = open_store(tmp_path / "replica-2", origin=None)


@pytest.mark.parametrize("statement_bytes", [store_module.ONE_STATEMENT_BYTES, 1_000])
def test_a_big_group_is_written_in_one_statement_as_each_row_on_its_own(
    open_store: OpenStore, tmp_path: Path, kit: Any, monkeypatch: pytest.MonkeyPatch, statement_bytes: int
) -> None:
    # 1,000 bytes: a few records a statement, so a group takes several.
    monkeypatch.setattr(store_module, "ONE_STATEMENT_BYTES", statement_bytes)
    chains = [kit.chain(ONE_STATEMENT_MIN + 9, 0), kit.chain(ONE_STATEMENT_MIN + 1, 0, ledger="ledger-b")]
    store = open_store(tmp_path / "replica", origin=None)
    for chain in chains:
        given = [(record.encode(), leaf_hash(record.encode())) for record in chain]
        store.submit_records(chain[:1]).result(DEADLINE)
        store.submit_records(chain[1:], verified=True, given=given[1:]).result(DEADLINE)
    expected = sorted(
        (
            *(r.ledger, "text", r.height, "integer", r.link, "blob"),
            *(r.content.author, "text", r.content.request_id, "text", r.encode(), "blob"),
        )
        for chain in chains
        for r in chain
    )
    with sqlite3.connect(store.path) as conn:
        held = conn.execute(
            "SELECT ledger, typeof(ledger), height, typeof(height), hash, typeof(hash), author, typeof(author), "
            "request_id, typeof(request_id), data, typeof(data) FROM records ORDER BY ledger, height"
        ).fetchall()
    assert held == expected
    assert [r.height for r in store.range("ledger-b")] == list(range(ONE_STATEMENT_MIN + 1))


@pytest.mark.parametrize(
    ("texts", "row_by_row"),
    [
        (['quote " back \\ slash', "line\nbreak\x1f", "Zoë ünïcode", "emoji \U0001f600", "é" * 300], False),
        (["a NUL \x00 inside"], True),  # SQLite's JSON would cut it there
    ],
)
def test_one_statement_gives_back_any_text_json_escapes(
    tmp_path: Path, kit: Any, monkeypatch: pytest.MonkeyPatch, texts: list[str], row_by_row: bool
) -> None:
    # Names and request ids never hold such text (node/record.py's patterns): the insert does not rely on it.
    records = []
    for i, record in enumerate(kit.chain(ONE_STATEMENT_MIN, 0)):
        c = record.content
        text = texts[i % len(texts)]
        content = new_content(c.ledger, c.kind, c.payload, text, f"{text}-{i}", c.ts)
        records.append(
            new_record(
                *(content, record.content_bytes, record.checksum, record.nonce, record.height, record.prev),
                *(record.accepted, record.origin, record.link),
            )
        )
    encoded = [record.encode() for record in records]
    each: list[int] = []
    insert_each = store_module._insert_each
    monkeypatch.setattr(store_module, "_insert_each", lambda *args: each.append(1) or insert_each(*args))
    with sqlite3.connect(tmp_path / DB_NAME, isolation_level=None) as conn:
        conn.executescript(SCHEMA)
        store_module._insert_records(conn, records, encoded)
        held = conn.execute("SELECT height, author, request_id, data FROM records ORDER BY height").fetchall()
    expected = [(r.height, r.content.author, r.content.request_id, e) for r, e in zip(records, encoded, strict=True)]
    assert held == expected
    assert bool(each) == row_by_row


@pytest.mark.parametrize("verified", [False, True])
def test_a_run_with_one_bad_record_stores_none_of_it(
    replica: tuple[ChainStore, list[Record]], kit: Any, verified: bool
) -> None:
    store, records = replica
    head = records[-1]
    good = kit.extend(head, kit.entry(9, 2))
    after = kit.extend(good, kit.entry(10, 2))
    unlinked = dataclasses.replace(after, prev=head.link)  # its prev skips the run's first record
    gap = kit.extend(after, kit.entry(11, 2))
    for run, error in (([good, unlinked], BadLinkError), ([good, gap], HeightGapError)):
        with pytest.raises(error):
            store.submit_records(run, verified=verified).result(DEADLINE)
        assert store.size(LEDGER) == rows(store) == len(records)  # the good first record was not kept
    assert [r.height for r in store.submit_records([good, after], verified=verified).result(DEADLINE)] == [
        head.height + 1,
        head.height + 2,
    ]


def test_a_verified_run_is_not_hashed_again_by_the_store(replica: tuple[ChainStore, list[Record]], kit: Any) -> None:
    """The caller's word that it ran a ChainVerifier over the run stands for the record's own
    hashes and work (not for where the run stands): a record whose nonce was changed after it
    was placed is refused unless the caller says it verified it."""
    store, records = replica
    tampered = dataclasses.replace(kit.extend(records[-1], kit.entry(9, 2)), nonce=records[-1].nonce + 1)
    with pytest.raises(VledgerError):
        store.submit_records([tampered]).result(DEADLINE)
    assert store.submit_records([tampered], verified=True).result(DEADLINE)[0].height == tampered.height


def test_a_verified_run_is_written_with_the_bytes_and_leaf_hashes_its_caller_gives(
    replica: tuple[ChainStore, list[Record]], kit: Any
) -> None:
    """A follower hands over each record's bytes (as received, checked canonical) and leaf hash:
    the store writes those, and grows its tree with those leaves, instead of working them out."""
    store, records = replica
    run = [kit.extend(records[-1], kit.entry(9, 2))]
    run.append(kit.extend(run[-1], kit.entry(10, 2)))
    given = [(r.encode(), leaf_hash(r.encode())) for r in run]
    with pytest.raises(ValueError):
        store.submit_records(run, given=given)  # only for a run its caller verified
    with pytest.raises(ValueError):
        store.submit_records(run, verified=True, given=given[:1])  # a pair for each record
    marked = (given[0][0], b"\x01" * 32)  # the store's trust in its caller, made visible
    overlapping = [records[-1], *run]  # the held record is a duplicate: the pairs still line up
    given = [(records[-1].encode(), leaf_hash(records[-1].encode())), marked, given[1]]
    receipts = store.submit_records(overlapping, verified=True, given=given).result(DEADLINE)
    assert [(r.height, r.duplicate) for r in receipts] == [(4, True), (5, False), (6, False)]
    assert [data for _, data in store.range_raw(LEDGER, 5)] == [r.encode() for r in run]
    more = kit.extend(run[-1], kit.entry(11, 2))
    store.submit_records([more], verified=True).result(DEADLINE)  # none given: worked out here
    expected = Frontier()
    for leaf in [leaf_hash(r.encode()) for r in records] + [b"\x01" * 32, given[2][1], leaf_hash(more.encode())]:
        expected.append(leaf)
    assert store.frontier(LEDGER).root() == expected.root()


def test_a_run_stored_whole_on_its_head_answers_no_receipts_when_none_are_asked_for(
    replica: tuple[ChainStore, list[Record]], kit: Any
) -> None:
    """receipts=False (a follower's catch-up page): a run taken whole right on the head answers
    [] (none of it can be a duplicate); one that overlaps what is held takes the record-by-record
    way and answers its receipts, duplicates marked, as ever."""
    store, records = replica
    run = [kit.extend(records[-1], kit.entry(9, 2))]
    for i in range(10, 13):
        run.append(kit.extend(run[-1], kit.entry(i, 2)))
    given = [(r.encode(), leaf_hash(r.encode())) for r in run]
    assert store.submit_records(run[:2], verified=True, given=given[:2], receipts=False).result(DEADLINE) == []
    receipts = store.submit_records(run[1:], verified=True, given=given[1:], receipts=False).result(DEADLINE)
    assert [(r.height, r.duplicate) for r in receipts] == [(6, True), (7, False), (8, False)]
    assert [data for _, data in store.range_raw(LEDGER, 5)] == [data for data, _ in given]


def test_verified_runs_in_one_group_find_each_others_records(
    replica: tuple[ChainStore, list[Record]], kit: Any
) -> None:
    """Runs a follower hands over are staged whole (no lookup entry a record): a run in the
    same group that overlaps one still finds its records there, as duplicates if the same and
    refused if not; the group writes each record once, in order, and tells on_commit so."""
    store, records = replica
    committed: list[list[int]] = []
    store.on_commit = lambda staged: committed.append([r.height for r in staged])
    run = [kit.extend(records[-1], kit.entry(9, 2))]
    for i in range(10, 13):
        run.append(kit.extend(run[-1], kit.entry(i, 2)))
    given = [(r.encode(), leaf_hash(r.encode())) for r in run]
    other = kit.extend(run[1], kit.entry(99, 2))  # a different record at run[2]'s height
    with store._committing:  # the committer waits: all four jobs make one group
        first = store.submit_records(run[:3], verified=True, given=given[:3])
        again = store.submit_records(run[1:], verified=True, given=given[1:])  # two staged above
        conflict = store.submit_records([run[1], other], verified=True, given=[given[1], (other.encode(), b"x" * 32)])
        alone = store.submit_records([run[0]], verified=True)
    store.flush()
    assert [r.height for r in first.result(DEADLINE)] == [5, 6, 7]
    assert [(r.height, r.duplicate) for r in again.result(DEADLINE)] == [(6, True), (7, True), (8, False)]
    with pytest.raises(RecordConflictError):
        conflict.result(DEADLINE)
    assert alone.result(DEADLINE)[0].duplicate
    assert committed == [[5, 6, 7, 8]]
    assert [data for _, data in store.range_raw(LEDGER, 5)] == [data for data, _ in given]
    expected = Frontier()
    for leaf in [leaf_hash(r.encode()) for r in [*records, *run]]:
        expected.append(leaf)
    assert store.frontier(LEDGER).root() == expected.root()


def test_a_store_without_a_node_name_cannot_place_entries(open_store: OpenStore, kit: Any) -> None:
    store = open_store(origin=None)
    with pytest.raises(StoreError, match="no node name"):
        store.create_ledger(kit.genesis_entry(0))


def test_a_bad_node_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FieldError, match="origin"):
        ChainStore(tmp_path / "x", origin="Node 1")


# --- paging and closing -----------------------------------------------------------------


def test_range_reads_in_pages(open_store: OpenStore, kit: Any) -> None:
    store = open_store(settings=StoreSettings(read_page_size=3))
    store.create_ledger(kit.genesis_entry(0))
    fill(store, kit, 9)
    assert [r.height for r in store.range(LEDGER)] == list(range(10))
    assert [h for h, _ in store.range_raw(LEDGER, 2, 9)] == list(range(2, 9))
    assert [r.height for r in store.range(LEDGER, 8)] == [8, 9]
    assert list(store.range(LEDGER, 10)) == []

    # Each page is its own read: records appended while a scan is paused show up in it.
    scan = store.range(LEDGER)
    first_page = [next(scan).height for _ in range(3)]
    fill(store, kit, 2, first=10)
    assert first_page + [r.height for r in scan] == list(range(12))


def test_a_closed_store_refuses_appends(store: ChainStore, kit: Any) -> None:
    head = store.head(LEDGER)
    assert head is not None
    store.close()
    store.close()  # closing twice is harmless
    for append in (
        lambda: store.append(kit.entry(1)),
        lambda: store.submit_entry(kit.entry(1)),
        lambda: store.create_ledger(kit.genesis_entry(0, ledger="ledger-b")),
        lambda: store.append_record(head),
        lambda: store.append_records([head]),
    ):
        with pytest.raises(StoreClosedError) as info:
            append()
        assert info.value.code == "store_closed"


def test_a_closed_store_refuses_reads_from_a_new_thread(store: ChainStore) -> None:
    store.close()
    caught: list[BaseException] = []

    def read() -> None:
        try:
            store.get(LEDGER, 0)
        except BaseException as e:
            caught.append(e)

    thread = threading.Thread(target=read)
    thread.start()
    thread.join(DEADLINE)
    assert len(caught) == 1
    assert isinstance(caught[0], StoreClosedError)


def test_a_closed_store_refuses_reads_from_a_thread_that_read_before(store: ChainStore) -> None:
    """BUG (node/store.py, ``_reader``): the ``_closed`` check runs only when a thread opens its
    first connection; a thread that read before gets sqlite3.ProgrammingError ("Cannot operate
    on a closed database") instead of StoreClosedError."""
    assert store.get(LEDGER, 0) is not None
    store.close()
    with pytest.raises(StoreClosedError):
        store.get(LEDGER, 0)


def test_close_after_reads_from_other_threads(store: ChainStore) -> None:
    """BUG (node/store.py, ``close`` with ``_reader``): read connections are opened with
    ``check_same_thread=True`` in each reading thread, then closed by the thread calling
    close(), which raises sqlite3.ProgrammingError and leaves the remaining connections open.
    Any node that serves reads from worker threads cannot shut its store down cleanly."""
    read: list[Record | None] = []
    thread = threading.Thread(target=lambda: read.append(store.get(LEDGER, 0)))
    thread.start()
    thread.join(DEADLINE)
    assert read and read[0] is not None
    store.close()
    with pytest.raises(StoreClosedError):
        store.append_record(read[0])


def test_heights_past_sqlites_integers_are_absent_not_errors(tmp_path: Path) -> None:
    from vledger.config.settings import Limits
    from vledger.node.ledger import LedgerRules

    with ChainStore(tmp_path / "s", origin="n1") as store:
        store.create_ledger(
            Entry.prepare(LedgerRules(kinds=("note",), difficulty=0).genesis_content("l", "a", "g", 1), 0, Limits())
        )
        assert store.get("l", 2**63) is None
        assert store.get("l", 2**64 - 1) is None
        assert list(store.range_raw("l", 0, 2**64)) == list(store.range_raw("l", 0))
        assert list(store.range_raw("l", 2**63, 2**64)) == []


def test_the_domain_rules_are_replayed_when_a_store_opens(tmp_path: Path) -> None:
    """Readers ask the rules too (may this account read this file?), not only the next append."""
    from vledger.config.settings import Limits
    from vledger.node.ledger import LedgerRules
    from vledger.node.record import Content
    from vledger.node.rules.engine import RulesEngine

    rules = LedgerRules(
        kinds=("cast", "register", "uncast", "withdraw"),
        difficulty=0,
        rules={"type": "election", "choices": ["a", "b"], "opens": 0, "closes": 2**62},
    )
    with ChainStore(tmp_path / "s", origin="n1", domain=RulesEngine()) as store:
        store.create_ledger(Entry.prepare(rules.genesis_content("vote", "auth", "g", 1), 0, Limits()))
        store.append(Entry.prepare(Content("vote", "register", {"voter_id": "V-1"}, "auth", "r1", 2), 0, Limits()))
    engine = RulesEngine()
    with ChainStore(tmp_path / "s", origin="n1", domain=engine):
        state = engine.state("vote")
        assert state is not None and state.next_height == 2


def test_the_domain_rules_follow_records_stored_from_another_home(tmp_path: Path) -> None:
    """A standby stores its home's records (appended, not placed); once promoted it places the
    next record under rules that saw them all, with or without the rules read before."""
    from vledger.config.settings import Limits
    from vledger.node.ledger import LedgerRules
    from vledger.node.record import Content
    from vledger.node.rules.engine import RulesEngine
    from vledger.node.rules.votes import electronic_id

    rules = LedgerRules(
        kinds=("cast", "register", "uncast", "withdraw"),
        difficulty=0,
        rules={"type": "election", "choices": ["a", "b"], "opens": 0, "closes": 2**62},
    )

    def entry(kind: str, payload: dict[str, Any], n: int) -> Entry:
        return Entry.prepare(Content("vote", kind, payload, "auth", f"r{n}", n + 1), 0, Limits())

    with ChainStore(tmp_path / "home", origin="home") as home:
        home.create_ledger(Entry.prepare(rules.genesis_content("vote", "auth", "g", 1), 0, Limits()))
        home.append(entry("register", {"voter_id": "V-1"}, 1))
        home.append(entry("register", {"voter_id": "V-2"}, 2))
        records = list(home.range("vote"))
    engine = RulesEngine()
    with ChainStore(tmp_path / "standby", origin="standby", domain=engine) as standby:
        standby.append_records(records[:2])
        voter1, voter2 = electronic_id(records[1]), electronic_id(records[2])
        standby.append(entry("cast", {"electronic_id": voter1, "choice": "a"}, 3))  # rules read from the chain
    with ChainStore(tmp_path / "standby2", origin="standby") as standby:
        standby.append_records(records[:2])
    engine = RulesEngine()
    with ChainStore(tmp_path / "standby2", origin="standby", domain=engine) as standby:  # the rules read it
        standby.append_records(records[2:])  # then follow what comes after
        state = engine.state("vote")
        assert state is not None and state.next_height == 3
        receipt = standby.append(entry("cast", {"electronic_id": voter2, "choice": "b"}, 3))
        assert receipt.height == 3
        with pytest.raises(VledgerError, match="already"):  # the rules saw V-2 registered, then its vote
            standby.append(entry("cast", {"electronic_id": voter2, "choice": "a"}, 4))


def test_rules_that_fail_on_followed_records_leave_the_commit_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the domain rules while they follow stored records (not a VledgerError) must
    not leave the group's futures unanswered (the follower would wait forever) nor skip
    on_commit: the records are durable. The rules read the ledger again from its chain."""
    from vledger.config.settings import Limits
    from vledger.node.ledger import LedgerRules
    from vledger.node.record import Content
    from vledger.node.rules.engine import RulesEngine

    rules = LedgerRules(
        kinds=("register",), difficulty=0, rules={"type": "election", "choices": ["a"], "opens": 0, "closes": 2**62}
    )
    with ChainStore(tmp_path / "home", origin="home") as home:
        home.create_ledger(Entry.prepare(rules.genesis_content("vote", "auth", "g", 1), 0, Limits()))
        home.append(Entry.prepare(Content("vote", "register", {"voter_id": "V-1"}, "auth", "r1", 2), 0, Limits()))
        records = list(home.range("vote"))
    with ChainStore(tmp_path / "standby", origin="standby") as standby:
        standby.append_records(records[:1])
    engine = RulesEngine()
    with ChainStore(tmp_path / "standby", origin="standby", domain=engine) as standby:
        assert engine.state("vote") is not None  # the rules read the ledger at open: they follow it

        def broken(_records: object, *_: object) -> list[object]:
            raise RuntimeError("a bug in the rules")

        committed: list[int] = []
        standby.on_commit = lambda stored: committed.extend(r.height for r in stored)
        monkeypatch.setattr(engine, "replay", broken)
        future = standby.submit_records(records[1:])
        assert [r.height for r in future.result(timeout=10)] == [1]
        assert committed == [1]
        assert engine.state("vote") is None  # forgotten: read again from the chain when needed


def test_followed_records_reach_the_rules_admin_ledger_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A group of followed records of several ledgers goes into the rules admin ledger first,
    whatever order the records came in (then by name, as placements and the opening replay
    take them): a grant among the admin records may be what another ledger's records need."""
    from vledger.config.settings import Limits
    from vledger.node.ledger import LedgerRules
    from vledger.node.record import Content
    from vledger.node.rules.admin import ADMIN_LEDGER, admin_genesis_rules
    from vledger.node.rules.engine import RulesEngine

    notes = LedgerRules(kinds=("note",), difficulty=0)
    ledgers = {"zzz": notes, ADMIN_LEDGER: admin_genesis_rules(), "aaa": notes}
    with ChainStore(tmp_path / "home", origin="home") as home:  # no rules: it places what it is given
        for ledger, rules in ledgers.items():
            home.create_ledger(Entry.prepare(rules.genesis_content(ledger, "auth", "g", 1), 0, Limits()))
        for ledger, kind in (("zzz", "note"), (ADMIN_LEDGER, "account"), ("aaa", "note")):
            home.append(Entry.prepare(Content(ledger, kind, {"n": 1}, "auth", "r1", 2), 0, Limits()))
        records = {ledger: list(home.range(ledger)) for ledger in ledgers}
    with ChainStore(tmp_path / "standby", origin="standby") as standby:
        standby.append_records(run[0] for run in records.values())
    engine = RulesEngine()
    with ChainStore(tmp_path / "standby", origin="standby", domain=engine) as standby:
        assert all(engine.state(ledger) is not None for ledger in ledgers)  # read at open: they follow them
        replayed: list[str] = []
        replay = engine.replay

        def recording(run: list[Record], *args: Any) -> Any:
            replayed.append(run[0].ledger)
            return replay(run, *args)

        monkeypatch.setattr(engine, "replay", recording)
        group = [run[1] for run in records.values()]  # in arrival order zzz, admin, aaa: one group
        assert [r.height for r in standby.submit_records(group).result(timeout=10)] == [1, 1, 1]
        assert replayed == [ADMIN_LEDGER, "aaa", "zzz"]


def test_a_checkpoint_row_goes_between_two_groups_of_a_busy_committer(open_store: OpenStore, kit: Any) -> None:
    """A committer with groups queued back to back lets a checkpoint row waiting for the file
    go first, between two groups: it does not wait for the queue to be empty."""
    clock = GatedClock()
    store = open_store(clock=clock)
    store.create_ledger(kit.genesis_entry(0))
    seen_at_second: list[bool] = []

    def on_commit(records: list[Record]) -> None:
        if records[0].height == 2:  # the second group: is the row in the file by now?
            with sqlite3.connect(store.path) as conn:
                seen_at_second.append(conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0] == 1)

    store.on_commit = on_commit
    clock.hold()
    first = store.submit_entry(kit.entry(1))
    assert clock.entered.wait(DEADLINE)  # the committer is inside the first group, holding the file
    second = store.submit_entry(kit.entry(2))  # queued: the committer's next group
    keeper = threading.Thread(target=store.checkpoints.keep, args=(LEDGER, SIGNED, 2, bytes(32), b"note"))
    keeper.start()
    deadline = time.monotonic() + DEADLINE
    while store.checkpoints._waiting == 0:  # the row waits for the file
        assert time.monotonic() < deadline
        time.sleep(0.001)
    clock.released.set()
    assert first.result(DEADLINE).height == 1 and second.result(DEADLINE).height == 2
    keeper.join(DEADLINE)
    assert not keeper.is_alive()
    assert seen_at_second == [True]


def test_a_committer_that_gave_way_finds_the_queue_taken_by_a_flush(
    open_store: OpenStore, kit: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the committer gives way to a checkpoint row, a flush on another thread may take the
    lock and commit the queue: the committer then finds it empty, and commits what comes next."""
    monkeypatch.setattr(checkpoint_log, "GIVE_WAY_SECONDS", DEADLINE)
    clock = GatedClock()
    store = open_store(clock=clock)
    store.create_ledger(kit.genesis_entry(0))
    log = store.checkpoints
    clock.hold()
    first = store.submit_entry(kit.entry(1))
    assert clock.entered.wait(DEADLINE)  # the committer is inside the first group
    second = store.submit_entry(kit.entry(2))
    with log._turns:
        log._waiting += 1  # as a row waiting for the file: the committer gives way before the next group
    clock.released.set()
    assert first.result(DEADLINE).height == 1
    deadline = time.monotonic() + DEADLINE
    while store._committing.locked():  # it gave way: the lock is free
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert not second.done()  # the committer waits, its next group not taken
    store.flush()  # this thread takes the lock and commits the queue
    assert second.done() and second.result().height == 2
    with log._turns:
        log._waiting -= 1
        log._turns.notify_all()
    assert store.submit_entry(kit.entry(3)).result(DEADLINE).height == 3  # the committer still commits


class HeldRow:
    """A checkpoint row of ``kind`` whose INSERT waits, holding the store's commit lock, until
    ``release`` is set (on a thread of its own, as an outbox keeps a signed row)."""

    def __init__(self, store: ChainStore, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.inside, self.release = threading.Event(), threading.Event()
        insert = store.checkpoints._insert

        def held_insert(*args: Any) -> None:
            self.inside.set()
            assert self.release.wait(DEADLINE)
            insert(*args)

        monkeypatch.setattr(store.checkpoints, "_insert", held_insert)
        self.thread = threading.Thread(target=store.checkpoints.keep, args=(LEDGER, kind, 2, bytes(32), b"note"))
        self.thread.start()
        assert self.inside.wait(DEADLINE)  # it holds the lock

    def join(self) -> None:
        self.release.set()
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive()


@pytest.mark.parametrize("kind", [SIGNED, COSIGNED])
def test_flush_waits_for_a_signed_row_rather_than_hand_its_put_to_the_committer(
    open_store: OpenStore, kit: Any, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A home's signed checkpoint row, or a witness's cosigned row (no fsync), holds the lock
    for microseconds: a lone put's flush waits for it and commits on its own thread; a row that
    is fsynced (evidence) is not waited for, the committer thread takes the put once the row is
    written."""
    monkeypatch.setattr(store_module, "BRIEF_WAIT_SECONDS", DEADLINE)
    committed_on: list[int] = []
    store = open_store(on_commit=lambda records: committed_on.append(threading.get_ident()))
    store.create_ledger(kit.genesis_entry(0))
    committed_on.clear()
    row = HeldRow(store, kind, monkeypatch)
    waited = store.submit_entry(kit.entry(1), wake=False)
    threading.Timer(0.05, row.release.set).start()  # lets go while flush waits (or before: the same outcome)
    store.flush()
    row.join()
    assert waited.done() and waited.result().height == 1
    assert committed_on == [threading.get_ident()]

    row = HeldRow(store, EVIDENCE, monkeypatch)
    handed = store.submit_entry(kit.entry(2), wake=False)
    store.flush()  # returns at once: the row may wait for an fsync
    assert not handed.done()
    row.join()
    assert handed.result(DEADLINE).height == 2
    assert committed_on[1] != threading.get_ident()  # the committer thread committed it


class HandedRow:
    """A home's signed row kept ``with_commit`` on a thread of its own, as its outbox keeps the
    checkpoint of a batch: handed to the store's next group commit."""

    def __init__(self, store: ChainStore) -> None:
        self.store = store
        self.added: list[bool] = []
        self.thread = threading.Thread(target=self._keep)
        self.thread.start()

    def _keep(self) -> None:
        self.added.append(self.store.checkpoints.keep(LEDGER, SIGNED, 2, bytes(32), b"note", with_commit=True))

    def wait_handed(self) -> None:
        deadline = time.monotonic() + DEADLINE
        while not self.store.checkpoints._handed:  # not yet handed over
            assert time.monotonic() < deadline and self.thread.is_alive()
            time.sleep(0.001)

    def join(self) -> bool:
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive()
        return self.added == [True]


def _signed_rows(store: ChainStore) -> list[bytes]:
    """The signed rows in the file, read behind the store's back."""
    with contextlib.closing(sqlite3.connect(store.path)) as conn:
        return [bytes(note) for (note,) in conn.execute("SELECT note FROM checkpoints WHERE kind = 'signed'")]


def test_a_signed_row_kept_with_commit_is_written_once_the_next_lone_put_has_answered(
    store: ChainStore, kit: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone put's flush neither waits for the outbox's signed row nor lets it hold the lock
    first, nor writes it before its answer: its record is its one statement (fsynced), then,
    answered, the row is committed without an fsync of its own (the next group commit's makes
    it durable), and the keep returns."""
    monkeypatch.setattr(checkpoint_log, "HANDOVER_SECONDS", DEADLINE)
    row = HandedRow(store)
    row.wait_handed()
    statements: list[tuple[str, bool]] = []
    put = store.submit_entry(kit.entry(1), wake=False)
    store._write.set_trace_callback(lambda statement: statements.append((statement, put.done())))
    store.flush()
    store._write.set_trace_callback(None)
    assert put.done() and put.result().height == 1
    assert row.join()
    writes = [(s, done) for s, done in statements if not s.startswith("SELECT")]  # the put's request-id look-up
    assert [s.split()[0] for s, _ in writes] == ["INSERT", "PRAGMA", "INSERT", "PRAGMA"]
    assert "INTO records" in writes[0][0] and not writes[0][1]
    assert "INTO checkpoints" in writes[2][0] and writes[2][1]  # after the put's answer
    assert [s for s, _ in writes[1::2]] == ["PRAGMA synchronous=NORMAL", "PRAGMA synchronous=FULL"]
    assert _signed_rows(store) == [b"note"]


def test_a_signed_row_whose_write_after_a_lone_put_fails_is_written_on_its_own(
    store: ChainStore, kit: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row's commit after a lone put's answer fails: the put stands, and the keep writes
    the row itself."""
    monkeypatch.setattr(checkpoint_log, "HANDOVER_SECONDS", DEADLINE)

    def failing(*args: Any) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(checkpoint_log.CheckpointLog, "write_handed_unsynced", staticmethod(failing))
    row = HandedRow(store)
    row.wait_handed()
    put = store.submit_entry(kit.entry(1), wake=False)
    store.flush()
    assert put.result(DEADLINE).height == 1
    assert row.join()
    assert _signed_rows(store) == [b"note"]


def test_a_signed_row_no_commit_takes_is_written_on_its_own(store: ChainStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """No put comes within HANDOVER_SECONDS: the keep writes its row itself, as without a handover."""
    monkeypatch.setattr(checkpoint_log, "HANDOVER_SECONDS", 0.01)
    row = HandedRow(store)
    assert row.join()
    assert _signed_rows(store) == [b"note"] and not store.checkpoints._handed


def test_a_signed_row_whose_group_commit_fails_is_written_on_its_own(
    store: ChainStore, kit: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group commit that took the row rolls back: its put is refused, and the row is kept
    all the same, written on its own."""
    monkeypatch.setattr(checkpoint_log, "HANDOVER_SECONDS", DEADLINE)

    def failing(*args: Any) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(store_module, "_insert_records", failing)
    row = HandedRow(store)
    row.wait_handed()
    # Two puts: a lone put's group writes its row after it (the test above), not in its transaction.
    puts = [store.submit_entry(kit.entry(height), wake=False) for height in (1, 2)]
    store.flush()
    for put in puts:
        with pytest.raises(StoreError, match="write failed"):
            put.result(DEADLINE)
    assert row.join()
    assert _signed_rows(store) == [b"note"]


def test_a_bug_in_a_group_commit_answers_its_appends_and_the_committer_goes_on(
    store: ChainStore, kit: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever escapes a group commit, its appends are answered (with StoreError) and the
    committer thread takes the next group: no write hangs behind a dead thread."""
    commit = store._commit
    calls = []

    def failing_once(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        commit(*args, **kwargs)

    monkeypatch.setattr(store, "_commit", failing_once)
    first = store.submit_entry(kit.entry(1), wake=True)
    with pytest.raises(StoreError, match="failed unexpectedly: a bug"):
        first.result(10)
    second = store.submit_entry(kit.entry(2), wake=True)
    assert second.result(10).height == 1


def test_a_file_damaged_under_a_running_store_fails_its_writes_as_store_damaged_and_says_so_once(
    store: ChainStore, kit: Any
) -> None:
    """Pages overwritten in place while the store runs: a write that meets them is refused
    store_damaged (not acknowledged, not a bug's error), and on_damaged hears of it once."""
    fill(store, kit, 40)
    heard: list[StoreDamagedError] = []
    store.on_damaged = heard.append
    with sqlite3.connect(store.path) as conn:
        # Busy (1) while the store's own checkpointer copies the log (a loaded host): again.
        deadline = time.monotonic() + DEADLINE
        while conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] != 0:
            assert time.monotonic() < deadline, "the write-ahead log never emptied"
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    with store.path.open("r+b") as file:
        pages = file.seek(0, 2) // page_size
        for page in range(1, pages):
            file.seek(page * page_size)
            file.write(b"\xa5" * page_size)
    store._write.execute("PRAGMA shrink_memory")  # its cached pages are the good ones
    for i in (41, 42):
        with pytest.raises(StoreDamagedError, match=r"the store's file is damaged: .*malformed"):
            store.submit_entry(kit.entry(i)).result(DEADLINE)
    assert store.size(LEDGER) == 41
    assert [e.message for e in heard] == [
        f"{store.path}: the store's file is damaged: database disk image is malformed"
    ]
    # A read that met the damage is told apart from a bug, and from what the moment holds.
    assert store.damaged(malformed()) is not None
    assert store.damaged(sqlite3.OperationalError("database is locked")) is None
    assert store.damaged(sqlite3.ProgrammingError("Cannot operate on a closed database.")) is None  # a bug's
    assert store.damaged(sqlite3.IntegrityError("UNIQUE constraint failed: tree.ledger")) is None
    assert store.damaged(sqlite3.DatabaseError("database disk image is malformed")) is None  # no code: not SQLite's
    assert store.damaged(StoreError("x")) is None
    assert len(heard) == 1
