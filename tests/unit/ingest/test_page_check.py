"""ingest/page_check.py: a worker process checks catch-up pages as a chain, ahead of the follower.

Real records from a real home store (difficulty 0) and a real worker process; what it answers
is held against ChainVerifier in this process. Its word only spares the follower work: a
worker that is gone answers nothing, and the follower (tests/unit/ingest/test_follow.py) then
checks every row itself.
"""

from __future__ import annotations

import decimal
import multiprocessing
import threading
from pathlib import Path

import pytest

from vledger.config.settings import PROTOCOL_LIMITS
from vledger.ingest.page_check import MARSHALLED, Checked, PageChecker, Start, _decode, _encode, check_page
from vledger.node.ledger import LedgerRules
from vledger.node.record import (
    Content,
    Entry,
    Record,
    columns_of_fields,
    decode_record,
    fields_of_checked,
    new_content,
    new_record,
    record_of_checked,
    records_of_columns,
)
from vledger.node.store import ChainStore
from vledger.node.tree import leaf_hash
from vledger.node.verify import ChainVerifier

T0 = 1_790_000_000_000
LEDGER = "ledger-a"


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    with ChainStore(tmp_path_factory.mktemp("home"), origin="home", clock=lambda: T0) as store:
        rules = LedgerRules(("note",), 0, {})
        store.create_ledger(Entry.prepare(rules.genesis_content(LEDGER, "admin", "c-1", T0), 0, PROTOCOL_LIMITS))
        for i in range(1, 12):
            content = Content(LEDGER, "note", {"n": i}, "Zoe.1", f"r-{i}", T0 + i)
            store.submit_entry(Entry.prepare(content, 0, PROTOCOL_LIMITS)).result()
        return list(store.range(LEDGER))


def _start(chain: list[Record], height: int) -> Start:
    rules = LedgerRules.from_genesis(chain[0].content, PROTOCOL_LIMITS)
    return Start(height, chain[height - 1].link, rules)


def _changed(record: Record) -> bytes:
    data = bytearray(record.encode())
    data[data.index(b"Zoe")] = ord("X")  # the checksum no longer matches
    return bytes(data)


def _answer(rows: list[bytes], first: int = 1) -> Checked:
    """The answer for ``rows`` passed, the first at height ``first``: their leaf hashes, the
    values decoding them gives (and no 16-leaf subtree: too few rows)."""
    return Checked(
        [leaf_hash(data) for data in rows],
        columns_of_fields([fields_of_checked(data, {}) for data in rows]),
        [],
        -(-first // 16),
    )


def test_check_page_passes_the_leading_rows_that_verify_with_their_leaf_hashes(chain: list[Record]) -> None:
    start = _start(chain, 1)
    rows = [r.encode() for r in chain[1:]]
    verifier = ChainVerifier.after(LEDGER, 0, start.prev, start.rules, PROTOCOL_LIMITS)
    assert check_page(verifier, rows) == (_answer(rows), True)
    verifier = ChainVerifier.after(LEDGER, 0, start.prev, start.rules, PROTOCOL_LIMITS)
    assert check_page(verifier, [*rows[:4], _changed(chain[5]), *rows[5:]]) == (_answer(rows[:4]), False)
    verifier = ChainVerifier.after(LEDGER, 0, start.prev, start.rules, PROTOCOL_LIMITS)
    assert check_page(verifier, rows[1:]) == (_answer([]), False)  # not the next height: nothing passed
    assert check_page(None, rows) == (Checked([], columns_of_fields([])), False)


def test_record_of_checked_gives_what_decode_record_gives(chain: list[Record]) -> None:
    for record in chain[1:]:
        built = record_of_checked(record.encode())
        assert built == decode_record(record.encode(), PROTOCOL_LIMITS) == record
        assert built.encode() == record.encode()


def test_the_values_of_checked_rows_build_what_decode_record_gives(chain: list[Record]) -> None:
    names: dict[str, str] = {}
    values = [fields_of_checked(record.encode(), names) for record in chain[1:]]
    for record, fields in zip(chain[1:], values, strict=True):
        built = new_record(new_content(*fields[:6]), *fields[6:])
        assert built == decode_record(record.encode(), PROTOCOL_LIMITS) == record
        assert built.encode() == record.encode()
    # Each name kept once a page: the pickle to the follower sends it once.
    assert len({id(fields[0]) for fields in values}) == len({id(fields[3]) for fields in values}) == 1


def test_an_answer_goes_to_the_follower_as_it_was_and_pickled_when_marshal_cannot_write_it(
    chain: list[Record],
) -> None:
    rows = [r.encode() for r in chain[1:]]
    answer = check_page(ChainVerifier.after(LEDGER, 0, chain[0].link, _start(chain, 1).rules, PROTOCOL_LIMITS), rows)[0]
    sent = _encode(answer)
    assert sent.startswith(MARSHALLED) and _decode(sent) == answer
    fields = answer.fields
    assert fields is not None
    payloads = ({"n": decimal.Decimal(1)},)
    odd = Checked(answer.leaves[:1], (*[column[:1] for column in fields[:2]], payloads, *[c[:1] for c in fields[3:]]))
    sent = _encode(odd)  # a value marshal does not write: pickled, as every answer was before
    assert not sent.startswith(MARSHALLED) and _decode(sent) == odd
    assert _decode(_encode(Checked([]))) == Checked([])


def test_the_worker_answers_in_order_and_continues_only_after_a_whole_page(chain: list[Record], tmp_path: Path) -> None:
    rows = [r.encode() for r in chain]
    checker = PageChecker()
    try:
        checker.submit(LEDGER, rows[1:4], _start(chain, 1))
        checker.submit(LEDGER, rows[4:7], None)  # continues where the page before ended
        checker.submit(LEDGER, [rows[7], _changed(chain[8]), rows[9]], None)
        checker.submit(LEDGER, rows[10:], None)  # after a page that did not pass whole: nothing
        checker.submit(LEDGER, rows[10:], _start(chain, 10))  # a start of its own: checked
        checker.submit("ledger-b", rows[10:], None)  # another ledger never continues this one
        checked = [checker.result() for _ in range(6)]
        for answer in checked:  # with each passed row's values, as decode_record gives them
            assert answer.fields is not None
            built = records_of_columns(answer.fields, 0, len(answer.leaves))
            assert [leaf_hash(record.encode()) for record in built] == answer.leaves
            assert built == [decode_record(record.encode(), PROTOCOL_LIMITS) for record in built]
        answers = [answer.leaves for answer in checked]
        assert answers == [
            [leaf_hash(d) for d in rows[1:4]],
            [leaf_hash(d) for d in rows[4:7]],
            [leaf_hash(rows[7])],
            [],
            [leaf_hash(d) for d in rows[10:]],
            [],
        ]
        assert checker.passed == 3 + 3 + 1 + 2 and not checker.waiting() and not checker.broken
        checker.submit(LEDGER, rows[1:4], _start(chain, 1))
        checker.discard()
        assert not checker.waiting()
    finally:
        checker.close()
    # Gone: it answers nothing (the follower then checks every row itself), and raises nothing.
    checker.submit(LEDGER, rows[1:4], _start(chain, 1))
    assert checker.broken and checker.result().leaves == []


def test_the_worker_starts_at_the_first_page_not_with_the_follower(chain: list[Record]) -> None:
    checker = PageChecker()
    try:
        assert checker.pid is None  # a follower that never catches up never pays for a process
        assert checker.ready(timeout=60) and checker.pid is not None
        checker.submit(LEDGER, [chain[1].encode()], _start(chain, 1))
        assert checker.result().leaves == [leaf_hash(chain[1].encode())]
    finally:
        checker.close()
    unused = PageChecker()
    unused.close()  # never started: nothing to stop, and it says it is of no use
    unused.submit(LEDGER, [chain[1].encode()], _start(chain, 1))
    assert unused.pid is None and unused.broken and unused.result().leaves == []


class HeldStart(PageChecker):
    """A page checker whose process is started only once ``go`` is set (a slow start)."""

    def __init__(self, go: threading.Event) -> None:
        super().__init__()
        self.go = go

    def _launch(self) -> None:
        assert self.go.wait(60)
        super()._launch()


def test_the_worker_is_started_off_the_callers_thread(chain: list[Record]) -> None:
    go = threading.Event()
    checker = HeldStart(go)
    try:
        # Its start is held back: the caller (the follower's thread, which takes the live feed
        # too) is answered at once, and checks its pages itself meanwhile.
        assert not checker.ready() and not checker.ready(timeout=0.05)
        assert checker.pid is None and not checker.broken
        go.set()
        assert checker.ready(timeout=60) and checker.pid is not None
        checker.submit(LEDGER, [chain[1].encode()], _start(chain, 1))
        assert checker.result().leaves == [leaf_hash(chain[1].encode())]
    finally:
        checker.close()


def test_a_checker_closed_while_its_worker_starts_stops_it(chain: list[Record]) -> None:
    go = threading.Event()
    checker = HeldStart(go)
    assert not checker.ready()
    go.set()
    checker.close()  # waits for the start under way, then stops the process it started
    assert checker.pid is not None and checker._process is not None and not checker._process.is_alive()


def test_begin_starts_the_worker_without_waiting_for_it(chain: list[Record]) -> None:
    go = threading.Event()
    checker = HeldStart(go)
    try:
        checker.begin()  # a replica at its start: returns at once, the worker starts meanwhile
        assert checker._starting is not None and checker._starting.is_alive() and checker.pid is None
        go.set()
        assert checker.ready(timeout=60) and checker.pid is not None
        checker.begin()  # started already: nothing more
        checker.submit(LEDGER, [chain[1].encode()], _start(chain, 1))
        assert checker.result().leaves == [leaf_hash(chain[1].encode())]
    finally:
        checker.close()


@pytest.mark.parametrize("cut", ["a row's values fewer", "a column fewer"])
def test_an_answer_whose_values_do_not_match_its_leaves_breaks_the_checker(chain: list[Record], cut: str) -> None:
    """Values for another count of rows than the leaves, or a column missing: the checker is
    broken (the follower then checks everything itself), nothing of the answer is used."""
    rows = [r.encode() for r in chain[1:4]]
    answer = _answer(rows)
    assert answer.fields is not None
    fields = tuple(column[:-1] for column in answer.fields) if cut == "a row's values fewer" else answer.fields[:-1]
    ours, theirs = multiprocessing.Pipe()
    checker = PageChecker()
    checker._conn, checker._ready = ours, True  # as a started worker's
    checker._waiting.append(len(rows))
    theirs.send_bytes(_encode(Checked(answer.leaves, fields)))  # type: ignore[arg-type]
    assert checker.result() == Checked([]) and checker.broken
    ours.close()
    theirs.close()
