"""The verifier's page reader against a node whose ``range`` answers are cut at a byte budget.

A node stops a ``range`` answer before ``max_message_bytes`` and says where it stopped
(``next``, PROTOCOL 6.1). Outsider pass 18 (F0b): the reader took such an answer for the copy's
end, so the sweeps of a ledger of 60 KB records stopped at height 17 and blamed every copy.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, cast

import pytest
import zmq

from vledger.broker.client import Client
from vledger.config.cluster import NodeConfig
from vledger.config.settings import Limits
from vledger.node.errors import RemoteError
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry
from vledger.node.store import ChainStore
from vledger.verifier.checks import NodeReader, Stopped
from vledger.verifier.sweep import LedgerSweep

PAGE = 500
LIMITS = Limits()


class CuttingNode:
    """``range`` as a node serves it: at most ``cut`` records an answer, ``next`` where it stopped."""

    def __init__(self, records: list[bytes], cut: int, *, says_next: bool = True) -> None:
        self.records = records
        self.cut = cut
        self.says_next = says_next
        self.asked: list[tuple[int, int]] = []

    def call(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        assert command == "range"
        if args["ledger"] != "big":
            raise RemoteError("no_such_ledger", "no such ledger", {})
        start, limit = args["start"], args["limit"]
        assert 0 < limit <= PAGE  # never more than the node's page
        self.asked.append((start, limit))
        records = self.records[start : start + min(limit, self.cut)]
        end = start + len(records)
        following = end if end < len(self.records) and self.says_next else None
        return {"records": records, "next": following, "checkpoint": None}


def _reader(node: CuttingNode) -> NodeReader:
    return NodeReader(NodeConfig("replica-1", "replica", "127.0.0.1", 1), cast(Client, node), PAGE, lambda: 0.0)


@pytest.mark.parametrize(("held", "cut"), [(1200, 17), (40, 17), (34, 17), (17, 17), (3, 17), (600, 500)])
def test_a_page_cut_by_the_node_is_read_on_from_where_it_stopped(held: int, cut: int) -> None:
    records = [b"%d" % i for i in range(held)]
    node = CuttingNode(records, cut)
    reader = _reader(node)
    assert reader.page("big", 0, PAGE) == records[:PAGE]
    assert reader.page("big", 20, 30) == records[20:50]  # a smaller limit is one too
    assert reader.page("big", held, PAGE) == []  # past the end: nothing, one question
    assert node.asked[-1] == (held, PAGE)


def test_the_reader_stops_at_an_answer_that_says_nothing_follows() -> None:
    """An answer without ``next`` (nil: the node's head) ends the page even if it is short."""
    node = CuttingNode([b"%d" % i for i in range(100)], 17, says_next=False)
    assert _reader(node).page("big", 0, PAGE) == [b"%d" % i for i in range(17)]
    assert node.asked == [(0, PAGE)]


class HoledNode:
    """``range`` over a store lacking heights 5..9: the records held in the height window
    ``start..start + limit - 1`` (at most ``cut`` heights), ``next`` after the last one given."""

    def __init__(self, size: int, cut: int, records: list[bytes] | None = None) -> None:
        chain = records or [b"%d" % height for height in range(size)]
        self.held = {height: data for height, data in enumerate(chain) if not 5 <= height <= 9}
        self.size, self.cut = len(chain), cut
        self.asked: list[int] = []

    def call(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        start, window = args["start"], min(args["limit"], self.cut)
        self.asked.append(start)
        heights = [h for h in range(start, start + window) if h in self.held]
        end = heights[-1] + 1 if heights else start + window
        return {"records": [self.held[h] for h in heights], "next": end if end < self.size else None}


def test_a_page_over_a_hole_in_the_copy_reads_on_from_the_node_s_next() -> None:
    """small28: a node's ``next`` over a hole is the height after the last record given (it was
    ``start`` plus their count, which re-read records). Asking on from ``start`` plus the count
    held, or stopping where ``next`` is not that, made a short page: the copy seemed to end."""
    node = HoledNode(40, 10)
    assert _reader(node).page("big", 0, 30) == [b"%d" % h for h in (*range(5), *range(10, 35))]
    assert node.asked == [0, 5, 15, 25]  # no height asked twice


def test_a_page_whose_first_window_is_wholly_in_a_hole_reads_on_from_the_node_s_next() -> None:
    """review r14 small28: an answer of no record whose ``next`` says go on was taken for the
    copy's end: the sweep called a copy with a hole ``truncated`` where it lacks heights."""
    node = HoledNode(40, 10)
    assert _reader(node).page("big", 5, 5) == [b"%d" % h for h in range(10, 15)]
    assert node.asked == [5, 10]


def test_a_span_over_a_hole_gives_the_records_of_its_heights_asking_no_height_twice() -> None:
    """review r14 small28: the stream check's read asked again from ``start`` plus the count
    held, re-reading records past the hole, and went past the heights it wanted."""
    node = HoledNode(40, 4)
    assert _reader(node).span("big", 3, 10) == [b"%d" % h for h in (3, 4, 10, 11, 12)]
    assert node.asked == [3, 5, 9]  # each from the one before's next
    node.asked.clear()
    assert _reader(node).span("big", 5, 1) == []  # a height in the hole: nothing, not the next record
    assert _reader(node).span("big", 38, 5) == [b"38", b"39"]  # the copy's end


def test_a_sweep_names_the_hole_a_step_starts_in(tmp_path: Path) -> None:
    """A step whose page was wholly in the hole ended the sweep there, complete (then the copy
    was called ``truncated``): the records past the hole say ``height_gap`` at its first height."""
    chain = _chain(tmp_path, 20)
    reader = NodeReader(
        NodeConfig("replica-1", "replica", "127.0.0.1", 1), cast(Client, HoledNode(0, 5, chain)), 5, lambda: 0.0
    )
    sweep = LedgerSweep("replica-1", "big")
    first = sweep.step(reader, 5)
    assert first.finding is None and not first.complete
    second = sweep.step(reader, 5)
    assert second.finding is not None and (second.finding.height, second.finding.code) == (5, "height_gap")


def test_a_copy_that_holds_none_of_the_ledger_is_an_empty_page() -> None:
    assert _reader(CuttingNode([], 17)).page("other", 0, PAGE) == []


def _chain(directory: Path, count: int) -> list[bytes]:
    """The bytes of a ledger ``big``: its genesis and ``count`` notes."""
    rules = LedgerRules(("note",), 0, {})
    with ChainStore(directory, origin="node-1") as store:
        store.create_ledger(Entry.prepare(rules.genesis_content("big", "clerk", "g", 1), 0, LIMITS))
        placed = [
            store.submit_entry(Entry.prepare(Content("big", "note", {"n": i}, "clerk", f"r{i}", 2 + i), 0, LIMITS))
            for i in range(count)
        ]
        for receipt in placed:  # flush() returns at once while the committer thread commits: wait for each
            receipt.result(timeout=30)
        return [data for _, data in store.range_raw("big")]


def test_a_sweep_of_a_copy_whose_pages_are_cut_reaches_its_end(tmp_path: Path) -> None:
    """The sweep's step takes a short page for the copy's end: the reader must not give it one."""
    chain = _chain(tmp_path, 120)
    assert len(chain) == 121
    node = CuttingNode(chain, 7)
    reader = NodeReader(NodeConfig("replica-1", "replica", "127.0.0.1", 1), cast(Client, node), 50, lambda: 0.0)
    sweep = LedgerSweep("replica-1", "big")
    steps = [sweep.step(reader, 50)]
    while not steps[-1].complete:
        assert steps[-1].finding is None
        steps.append(sweep.step(reader, 50))
    assert steps[-1].end == len(chain) - 1 and sweep.last_records == len(chain)


class HeadRefusing:
    """``head`` answered with one error code, or a head."""

    def __init__(self, code: str | None) -> None:
        self.code = code

    def call(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        assert command == "head"
        if self.code is not None:
            raise RemoteError(self.code, "refused", {})
        return {"height": 3, "hash": b"\0" * 32}


@pytest.mark.parametrize(("code", "serves"), [(None, True), ("no_such_ledger", True), ("not_home", False)])
def test_a_node_that_answers_not_home_does_not_serve_the_ledger(code: str | None, serves: bool) -> None:
    # The sweep takes a not_home page for a copy that holds none; serves() tells the two apart.
    reader = NodeReader(
        NodeConfig("ingest-1", "ingest", "127.0.0.1", 1), cast(Client, HeadRefusing(code)), PAGE, lambda: 0.0
    )
    assert reader.serves("big") is serves


def test_another_refusal_of_head_is_raised() -> None:
    reader = NodeReader(
        NodeConfig("ingest-1", "ingest", "127.0.0.1", 1), cast(Client, HeadRefusing("forbidden")), PAGE, lambda: 0.0
    )
    with pytest.raises(RemoteError):
        reader.serves("big")


class EndedNode:
    """A node whose read in flight ends as a ZeroMQ Context ended by a stop makes it end (ETERM)."""

    def __init__(self, stopping: threading.Event) -> None:
        self.stopping = stopping
        self.asked: list[str] = []

    def call(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        self.asked.append(command)
        self.stopping.set()  # the signal came while this read waited
        raise zmq.ContextTerminated()


def test_a_stopping_verifier_s_reader_asks_nothing_more_and_drops_the_read_in_flight() -> None:
    stopping = threading.Event()
    node = EndedNode(stopping)
    config = NodeConfig("replica-1", "replica", "127.0.0.1", 1)
    reader = NodeReader(config, cast(Client, node), PAGE, lambda: 0.0, stopping)
    with pytest.raises(Stopped):  # not NodeUnavailableError: no handler takes the node for down
        reader.head("big")
    for read in (lambda: reader.head("big"), lambda: reader.page("big", 0, 10), reader.ledgers):
        with pytest.raises(Stopped):
            read()
    assert node.asked == ["head"]
    assert reader.up()


def test_a_context_ended_without_a_stop_is_no_stop() -> None:
    node = EndedNode(threading.Event())
    reader = NodeReader(NodeConfig("replica-1", "replica", "127.0.0.1", 1), cast(Client, node), PAGE, lambda: 0.0)
    node.stopping = threading.Event()  # set by the call, but not the reader's: a bug, raised as it is
    with pytest.raises(zmq.ContextTerminated):
        reader.head("big")
