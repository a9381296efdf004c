"""The Redis side of replication: count_distribution (pure), then ReplicationLedger on the real session Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from vledger.broker import redis_functions
from vledger.broker.replication import (
    OPEN_ALERTS_CAP,
    REDIS_KEY_DAMAGED,
    Alert,
    ReplicationLedger,
    StreamRecord,
    count_distribution,
    entry_height,
    entry_id,
)

LEDGER = "ledger-a"
OTHER = "ledger-b"
HOME = "ingest-1"
DEADLINE = 5.0


def naive_distribution(held: dict[str, int], size: int) -> dict[int, int]:
    """Record by record: record h is held by every node whose height is >= h."""
    counts: dict[int, int] = {}
    for height in range(size):
        holders = sum(1 for value in held.values() if value >= height)
        counts[holders] = counts.get(holders, 0) + 1
    return counts


def records(ledger: str, heights: range, origin: str = HOME, tag: str = "") -> list[StreamRecord]:
    return [StreamRecord(ledger, h, f"{ledger} {h}{tag}".encode(), origin) for h in heights]


@pytest.fixture
def repl(redis_client: Any) -> ReplicationLedger:
    return ReplicationLedger(redis_client)


# --- count_distribution ----------------------------------------------------------------------------

held_heights = st.dictionaries(
    st.text("abcdefgh", min_size=1, max_size=3), st.integers(min_value=-3, max_value=60), max_size=8
)


@given(held=held_heights, size=st.integers(min_value=0, max_value=50))
def test_counts_sum_to_the_size_and_match_a_record_by_record_count(held: dict[str, int], size: int) -> None:
    distribution = count_distribution(held, size)
    assert sum(distribution.values()) == size
    assert distribution == naive_distribution(held, size)
    assert list(distribution) == sorted(distribution)  # fewest holders first
    assert all(n > 0 for n in distribution.values())
    assert all(0 <= count <= len(held) for count in distribution)


def test_count_distribution_examples() -> None:
    assert count_distribution({}, 5) == {0: 5}
    assert count_distribution({"a": 9}, 0) == {}
    assert count_distribution({"a": -1, "b": -1}, 3) == {0: 3}
    # a: 0..9, b: 0..4, c: 0..9 (a height past the size is clamped to it)
    assert count_distribution({"a": 9, "b": 4, "c": 99}, 10) == {2: 5, 3: 5}


# --- the streams -----------------------------------------------------------------------------------


def test_entry_ids_carry_the_height() -> None:
    assert entry_id(0) == "0-1"
    assert entry_height(b"41-1") == 41 and entry_height("7-1") == 7


def test_add_counts_new_records_and_announces_the_home(repl: ReplicationLedger) -> None:
    assert repl.add([]) == 0
    assert repl.add(records(LEDGER, range(5)) + records(OTHER, range(2), origin="ingest-2")) == 7
    assert repl.last_heights([LEDGER, OTHER, "absent"]) == {LEDGER: 4, OTHER: 1, "absent": -1}
    assert repl.last_height(LEDGER) == 4 and repl.last_height("absent") == -1
    assert repl.ledgers() == {LEDGER: HOME, OTHER: "ingest-2"}
    read = repl.read(LEDGER, 0, 100)
    assert [(r.ledger, r.height, r.data, r.origin) for r in read] == [
        (LEDGER, h, f"{LEDGER} {h}".encode(), HOME) for h in range(5)
    ]


def test_add_is_idempotent_by_height(repl: ReplicationLedger) -> None:
    assert repl.add(records(LEDGER, range(5))) == 5
    assert repl.add(records(LEDGER, range(5))) == 0  # a publisher that restarted and sends again
    assert repl.add(records(LEDGER, range(3, 8))) == 3  # an overlap adds only what is new
    assert [r.height for r in repl.read(LEDGER, 0, 100)] == list(range(8))
    assert repl.client.xlen(repl.stream_key(LEDGER)) == 8


def test_a_replay_with_other_bytes_is_refused_and_the_first_record_kept(repl: ReplicationLedger) -> None:
    repl.add(records(LEDGER, range(4)))
    assert repl.add(records(LEDGER, range(2, 4), tag=" forged")) == 0
    assert repl.add(records(LEDGER, range(0, 1), origin="intruder", tag=" forged")) == 0
    assert [r.data for r in repl.read(LEDGER, 0, 10)] == [f"{LEDGER} {h}".encode() for h in range(4)]
    assert repl.ledgers() == {LEDGER: HOME}  # the first home announced stays


def test_append_continues_the_stream_and_says_where_it_ends(repl: ReplicationLedger) -> None:
    def data(heights: range, tag: str = "") -> list[bytes]:
        return [f"{LEDGER} {h}{tag}".encode() for h in heights]

    assert repl.append(LEDGER, HOME, 0, []) == -1
    assert repl.append(LEDGER, HOME, 0, data(range(3))) == 2
    assert repl.ledgers() == {LEDGER: HOME}
    assert repl.append(LEDGER, HOME, 1, data(range(1, 6))) == 5  # 1 and 2 the same: kept, 3..5 added
    assert repl.append(LEDGER, HOME, 8, data(range(8, 10))) == 5  # a gap: nothing added, the caller fills
    assert repl.append(LEDGER, HOME, 6, []) == 5
    assert repl.append(LEDGER, HOME, 6, data(range(6, 10))) == 9
    assert [(r.height, r.data, r.origin) for r in repl.read(LEDGER, 0, 100)] == [
        (h, f"{LEDGER} {h}".encode(), HOME) for h in range(10)
    ]


def test_an_append_asks_redis_once_and_loads_its_functions_when_redis_lost_them(repl: ReplicationLedger) -> None:
    """An outbox pass appends in one round trip (FCALL, nothing asked before it), and a Redis
    without access control that lost the library (restarted, FUNCTION FLUSH) gets it again from
    this client without losing the append (with access control the loader loads it:
    tests/integration/broker/test_redis_acl.py)."""

    def calls(command: str) -> int:
        stats = repl.client.info("commandstats")
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))

    def scripts() -> int:
        return sum(calls(name) for name in ("eval", "evalsha", "eval_ro", "evalsha_ro", "script|load", "script|exists"))

    before = scripts()
    repl.client.function_flush()
    assert repl.append_checked(LEDGER, HOME, 0, [b"r0"]) == (0, None)  # not found, loaded, sent again
    loads, fcalls = calls("function|load"), calls("fcall")
    assert repl.append_checked(LEDGER, HOME, 1, [b"r1"]) == (1, None)
    assert repl.append_checked(LEDGER, HOME, 2, [b"r2"]) == (2, None)
    assert (calls("function|load"), calls("fcall")) == (loads, fcalls + 2)
    assert scripts() == before
    repl.client.function_flush()
    assert repl.append_checked(LEDGER, HOME, 3, [b"r3"]) == (3, None)
    assert [r.data for r in repl.read(LEDGER, 0, 10)] == [b"r0", b"r1", b"r2", b"r3"]


def test_an_append_tells_the_held_height_in_its_own_round_trip(
    repl: ReplicationLedger, held_channel: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outbox pass's append carries its node's held height (advance's rule: it only grows,
    each growth announced) without a round trip of its own, and a Redis that lost the
    functions library gets both again without losing the append or the height."""

    def calls(command: str) -> int:
        stats = repl.client.info("commandstats")
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))

    repl.client.function_flush()
    assert repl.append_checked(LEDGER, HOME, 0, [b"r0", b"r1"], held=1) == (1, None)  # not found: loaded
    assert repl.held(LEDGER) == {HOME: 1}
    evals, loads = calls("fcall"), calls("function|load")
    alone: list[tuple[Any, ...]] = []  # commands sent on their own, outside a pipeline
    execute_command = repl.client.execute_command
    monkeypatch.setattr(
        repl.client, "execute_command", lambda *args, **kw: alone.append(args) or execute_command(*args, **kw)
    )
    assert repl.append_checked(LEDGER, HOME, 2, [b"r2"], held=2) == (2, None)
    monkeypatch.undo()
    assert alone == []  # one pipeline: HSETNX, the append and the advance
    assert (calls("fcall"), calls("function|load")) == (evals + 2, loads)
    assert repl.append_checked(LEDGER, HOME, 2, [b"r2"], held=0) == (2, None)  # a late height never lowers it
    assert repl.append_checked(LEDGER, HOME, 3, [b"r3"]) == (3, None)  # no height: none told
    assert repl.held(LEDGER) == {HOME: 2}
    assert [r.data for r in repl.read(LEDGER, 0, 10)] == [b"r0", b"r1", b"r2", b"r3"]
    assert announcements(held_channel) == [f"{HOME} {LEDGER} 1", f"{HOME} {LEDGER} 2"]


def test_a_stream_entry_that_is_not_the_callers_record_is_found_and_rewound(repl: ReplicationLedger) -> None:
    """An entry injected ahead of the home (or another record at a height) is named, and the
    stream cut back there so the home can add its own records again; readers go back too."""
    repl.append(LEDGER, HOME, 0, [b"r0", b"r1", b"r2"])
    repl.client.xgroup_create(repl.stream_key(LEDGER), "verifier", id="0")
    repl.client.xadd(repl.stream_key(LEDGER), {"record": b"forged", "origin": HOME}, id="3-1")
    repl.client.xreadgroup("verifier", "v", {repl.stream_key(LEDGER): ">"})
    assert repl.append_checked(LEDGER, HOME, 3, [b"r3", b"r4"]) == (3, 3)  # nothing added above it
    assert repl.append_checked(LEDGER, HOME, 1, [b"r1", b"r2"]) == (3, None)  # the same bytes: fine
    assert repl.rewind(LEDGER, 3) == 1
    assert repl.append_checked(LEDGER, HOME, 3, [b"r3", b"r4"]) == (4, None)
    assert [r.data for r in repl.read(LEDGER, 0, 10)] == [b"r0", b"r1", b"r2", b"r3", b"r4"]
    again = repl.client.xreadgroup("verifier", "v", {repl.stream_key(LEDGER): ">"})
    assert [fields[b"record"] for _, fields in again[0][1]] == [b"r3", b"r4"]


def test_a_rewind_is_bounded_a_call_and_the_caller_loops(repl: ReplicationLedger) -> None:
    """Any ingest user may add a million entries to a stream: one call of ``rewind`` deleted
    them all and blocked Redis for seconds (review r31 #3). A call deletes at most its COUNT
    (checked: 1 to 10,000) from the top and says how many are left; the last one sets the
    last id and the groups back, refusing more groups than its COUNT; the caller loops."""
    key = repl.stream_key(LEDGER)
    repl.append(LEDGER, HOME, 0, [b"r%d" % h for h in range(3)])
    pipe = repl.client.pipeline(transaction=False)
    for height in range(3, 2503):
        pipe.xadd(key, {"record": b"junk", "origin": HOME}, id=f"{height}-1")
    pipe.execute()
    repl.client.xgroup_create(key, "verifier", id="2400-1")

    def call(*args: object) -> Any:
        return repl.client.execute_command(*redis_functions.command("rewind", [key], list(args)))

    assert call(3, 10) == [10, 10]  # 2,490 left: counted up to the COUNT
    assert repl.client.xlen(key) == 2493 and repl.last_height(LEDGER) == 2492
    for bad in (0, 10_001, "x"):
        with pytest.raises(redis.exceptions.ResponseError, match="count out of range"):
            call(3, bad)
    assert repl.rewind(LEDGER, 3) == 2490
    assert repl.client.xlen(key) == 3
    assert repl.client.xinfo_groups(key)[0]["last-delivered-id"] == b"2-1"  # set back below the cut
    assert repl.append_checked(LEDGER, HOME, 3, [b"r3"]) == (3, None)
    # More groups than the COUNT: the last call refuses before it deletes anything.
    for n in range(11):
        repl.client.xgroup_create(key, f"g{n}", id="0")
    with pytest.raises(redis.exceptions.ResponseError, match="consumer groups out of range"):
        call(3, 10)
    assert repl.client.xlen(key) == 4


def test_append_after_a_trim_or_a_lost_tail(repl: ReplicationLedger) -> None:
    repl.append(LEDGER, HOME, 0, [b"r"] * 10)
    repl.client.xtrim(repl.stream_key(LEDGER), maxlen=2, approximate=False)
    assert repl.append(LEDGER, HOME, 10, [b"r"]) == 10  # the last entry, not the first, is the cursor
    repl.client.delete(repl.stream_key(LEDGER))  # a Redis that lost the stream
    assert repl.append(LEDGER, HOME, 11, [b"r"]) == -1  # says so: fill from the store, from 0
    assert repl.append(LEDGER, HOME, 0, [b"r"] * 12) == 11


def test_heights_trimmed_from_the_stream_are_no_conflict(repl: ReplicationLedger) -> None:
    """An outbox behind a heartbeat's fill from the store appends runs the stream has already
    trimmed (MAXLEN): nothing is held there to disagree with, so nothing is rewound. (It was
    taken for a foreign entry: the home rewound the whole stream and stalled on an empty one
    whose last id was above it; test_relays' one-hop test, stream_max_len = 100.)"""
    repl.append(LEDGER, HOME, 0, [b"r%d" % h for h in range(10)])
    repl.client.xtrim(repl.stream_key(LEDGER), maxlen=3, approximate=False)
    assert repl.append_checked(LEDGER, HOME, 2, [b"r2", b"r3"]) == (9, None)
    assert repl.append_checked(LEDGER, HOME, 5, [b"r5", b"r6", b"r7", b"r8", b"r9", b"r10"]) == (10, None)
    # A held entry is still compared, and one missing inside what the stream holds is no trim.
    assert repl.append_checked(LEDGER, HOME, 6, [b"r6", b"r7", b"forged"]) == (10, 8)
    repl.client.xdel(repl.stream_key(LEDGER), "9-1")
    assert repl.append_checked(LEDGER, HOME, 8, [b"r8", b"r9"]) == (10, 9)
    assert [r.height for r in repl.read(LEDGER, 0, 100)] == [7, 8, 10]


def test_a_tail_deleted_from_the_stream_is_a_conflict_not_an_error(repl: ReplicationLedger) -> None:
    """XDEL leaves a stream's last id where it was: an append after the entries that are left
    would be refused by Redis for ever (the home's outbox logged it as Redis unavailable every
    heartbeat and its held heights froze). It is a conflict at the first height the stream
    cannot take, nothing of the run is added, and a rewind makes the stream take it again."""
    repl.append(LEDGER, HOME, 0, [b"r%d" % h for h in range(6)])
    repl.client.xdel(repl.stream_key(LEDGER), "4-1", "5-1")
    assert repl.append_checked(LEDGER, HOME, 4, [b"r4", b"r5", b"r6"]) == (3, 4)
    assert [r.height for r in repl.read(LEDGER, 0, 100)] == [0, 1, 2, 3]
    repl.rewind(LEDGER, 4)
    assert repl.append_checked(LEDGER, HOME, 4, [b"r4", b"r5", b"r6"]) == (6, None)
    assert [r.data for r in repl.read(LEDGER, 0, 100)] == [b"r%d" % h for h in range(7)]


def test_read_ranges(repl: ReplicationLedger) -> None:
    repl.add(records(LEDGER, range(10)))

    def heights(start: int, count: int, stop: int | None = None) -> list[int]:
        return [r.height for r in repl.read(LEDGER, start, count, stop)]

    assert heights(0, 100) == list(range(10))
    assert heights(3, 2) == [3, 4]
    assert heights(3, 100, stop=6) == [3, 4, 5]
    assert heights(9, 5) == [9]
    assert heights(10, 5) == []
    assert heights(5, 5, stop=5) == [] and heights(5, 5, stop=2) == []
    assert heights(0, 5, stop=1) == [0]
    assert repl.read("absent", 0, 10) == []


def test_read_rows_gives_what_read_gives_as_a_catch_up_page(repl: ReplicationLedger) -> None:
    """Heights and bytes as read() has them, and each checkpoint in stream order (on the
    last record of each append that had one), from ``start`` on; nothing of an absent stream."""
    repl.append(LEDGER, HOME, 0, [b"r0", b"r1", b"r2"], b"note-3")
    repl.append(LEDGER, HOME, 3, [b"r3", b"r4"])
    repl.append(LEDGER, HOME, 5, [b"r5"], b"note-6")
    assert repl.read_rows(LEDGER, 0, 100) == (
        [(r.height, r.data) for r in repl.read(LEDGER, 0, 100)],
        [b"note-3", b"note-6"],
    )
    assert repl.read_rows(LEDGER, 1, 3) == ([(1, b"r1"), (2, b"r2"), (3, b"r3")], [b"note-3"])
    assert repl.read_rows(LEDGER, 3, 2) == ([(3, b"r3"), (4, b"r4")], [])
    assert repl.read_rows("absent", 0, 10) == ([], [])


def test_read_rows_takes_an_entry_by_its_fields_whatever_their_order(repl: ReplicationLedger) -> None:
    """The usual entry (record, origin) is read by its fields' places; one added in another
    order, or with a checkpoint, by their names: the same rows either way."""
    key = repl.stream_key(LEDGER)
    repl.client.xadd(key, {"record": b"r0", "origin": HOME}, id="0-1")
    repl.client.xadd(key, {"origin": HOME, "record": b"r1"}, id="1-1")
    repl.client.xadd(key, {"checkpoint": b"note-3", "record": b"r2", "origin": HOME}, id="2-1")
    repl.client.xadd(key, {"record": b"r3", "checkpoint": b""}, id="3-1")
    assert repl.read_rows(LEDGER, 0, 10) == ([(0, b"r0"), (1, b"r1"), (2, b"r2"), (3, b"r3")], [b"note-3"])


def test_a_trimmed_stream_reads_from_its_first_entry_and_still_refuses_replays(repl: ReplicationLedger) -> None:
    repl.add(records(LEDGER, range(10)))
    repl.client.xtrim(repl.stream_key(LEDGER), maxlen=3, approximate=False)
    assert [r.height for r in repl.read(LEDGER, 0, 100)] == [7, 8, 9]  # above start: the caller checks
    assert [r.height for r in repl.read(LEDGER, 2, 2)] == [7, 8]
    assert repl.read(LEDGER, 0, 100, stop=7) == []
    assert repl.last_height(LEDGER) == 9
    # Redis remembers the last id: a trimmed height is not taken again.
    assert repl.add(records(LEDGER, range(0, 3), tag=" again")) == 0
    assert repl.add(records(LEDGER, range(10, 12))) == 2


def test_streams_are_trimmed_to_about_their_maximum_length(redis_client: Any) -> None:
    repl = ReplicationLedger(redis_client, stream_max_len=10)
    for start in range(0, 1000, 100):
        repl.add(records(LEDGER, range(start, start + 100)))
    assert redis_client.xlen(repl.stream_key(LEDGER)) < 1000  # approximate: whole stream nodes go
    first = repl.read(LEDGER, 0, 1)
    assert first and first[0].height > 0
    assert repl.last_height(LEDGER) == 999


def test_appended_runs_are_trimmed_to_about_the_maximum_length(redis_client: Any) -> None:
    """The outbox's append trims with the run's last entry only (p38): still trimmed."""
    repl = ReplicationLedger(redis_client, stream_max_len=10)
    for start in range(0, 1000, 100):
        run = [f"{LEDGER} {h}".encode() for h in range(start, start + 100)]
        assert repl.append(LEDGER, HOME, start, run) == start + 99
    assert redis_client.xlen(repl.stream_key(LEDGER)) < 1000  # approximate: whole stream nodes go
    first = repl.read(LEDGER, 0, 1)
    assert first and first[0].height > 0
    assert repl.last_height(LEDGER) == 999


def test_a_namespace_sees_only_its_own_keys(redis_client: Any, repl: ReplicationLedger) -> None:
    other = ReplicationLedger(redis_client, namespace="elsewhere")
    repl.add(records(LEDGER, range(3)))
    repl.advance("replica-1", LEDGER, 2)
    assert other.ledgers() == {} and other.held(LEDGER) == {} and other.read(LEDGER, 0, 10) == []
    assert other.stream_key(LEDGER) == "elsewhere:{ledger-a}:chain"


# --- who holds what --------------------------------------------------------------------------------


@pytest.fixture
def held_channel(redis_client: Any, repl: ReplicationLedger) -> Iterator[Any]:
    """A subscription to the held channel, confirmed before the test publishes."""
    pubsub = redis_client.pubsub()
    pubsub.subscribe(repl.held_channel)
    confirmation = pubsub.get_message(timeout=DEADLINE)
    assert confirmation is not None and confirmation["type"] == "subscribe"
    yield pubsub
    pubsub.close()


def announcements(pubsub: Any, wait: float = 0.3) -> list[str]:
    """What the channel carried, waiting ``wait`` seconds after the last message."""
    seen = []
    while (message := pubsub.get_message(timeout=wait)) is not None:
        if message["type"] == "message":
            seen.append(message["data"].decode())
    return seen


def test_advance_only_grows_and_announces_each_growth(repl: ReplicationLedger, held_channel: Any) -> None:
    assert repl.advance("replica-1", LEDGER, 0) == 0
    assert repl.advance("replica-1", LEDGER, 5) == 5
    assert repl.advance("replica-1", LEDGER, 3) == 5  # a late report never lowers it
    assert repl.advance("replica-1", LEDGER, 5) == 5  # a repeated one changes nothing
    assert repl.advance("replica-1", LEDGER, -1) == 5
    assert repl.advance("replica-2", LEDGER, 2) == 2
    assert repl.advance("replica-1", OTHER, 1) == 1
    assert repl.held(LEDGER) == {"replica-1": 5, "replica-2": 2}
    assert repl.held(OTHER) == {"replica-1": 1}
    assert repl.held("absent") == {}
    assert announcements(held_channel) == [
        "replica-1 ledger-a 0",
        "replica-1 ledger-a 5",
        "replica-2 ledger-a 2",
        "replica-1 ledger-b 1",
    ]


def test_advance_from_nothing_starts_at_minus_one(repl: ReplicationLedger, held_channel: Any) -> None:
    assert repl.advance("replica-1", LEDGER, -1) == -1  # no record held: nothing to record
    assert repl.held(LEDGER) == {}
    assert announcements(held_channel) == []


def test_a_held_value_that_is_no_height_is_left_out(repl: ReplicationLedger) -> None:
    # A node's own Redis user writes its key: "-5" was served as a held height (outsider19 F8).
    repl.advance("replica-1", LEDGER, 3)
    for node, value in (("replica-2", "-5"), ("replica-3", "junk"), ("replica-4", "-1")):
        repl.client.set(repl.held_key(LEDGER, node), value)
    assert repl.held(LEDGER) == {"replica-1": 3, "replica-4": -1}


def test_a_held_value_past_the_largest_height_is_no_height(repl: ReplicationLedger) -> None:
    # Set by hand with the node's own password (outsider 20, F9): served as is, and it held the
    # node's own reports back for ever, since an advance only grows.
    forged = "99999999999999999999999"
    repl.client.set(repl.held_key(LEDGER, "replica-1"), forged)
    repl.client.set(repl.held_key(LEDGER, "replica-2"), str(2**63))
    assert repl.held(LEDGER) == {}
    assert repl.advance("replica-1", LEDGER, 4) == 4
    assert repl.held(LEDGER) == {"replica-1": 4}


def test_set_held_puts_the_store_s_head_in_place_of_any_value(repl: ReplicationLedger, held_channel: Any) -> None:
    repl.client.set(repl.held_key(LEDGER, "replica-1"), "99999")  # within range, yet no store holds it
    assert repl.set_held("replica-1", LEDGER, 7) == 7
    assert repl.held(LEDGER) == {"replica-1": 7}
    assert repl.set_held("replica-1", LEDGER, 7) == 7  # unchanged: announced once
    assert repl.set_held("replica-1", LEDGER, 3) == 3  # a store repaired to fewer records
    assert repl.held(LEDGER) == {"replica-1": 3}
    assert announcements(held_channel) == ["replica-1 ledger-a 7", "replica-1 ledger-a 3"]


def test_holders_are_the_nodes_at_or_above_a_height(repl: ReplicationLedger) -> None:
    repl.advance(HOME, LEDGER, 9)
    repl.advance("replica-1", LEDGER, 9)
    repl.advance("replica-2", LEDGER, 4)
    assert repl.holders(LEDGER, 0) == [HOME, "replica-1", "replica-2"]
    assert repl.holders(LEDGER, 4) == [HOME, "replica-1", "replica-2"]
    assert repl.holders(LEDGER, 5) == [HOME, "replica-1"]
    assert repl.holders(LEDGER, 10) == []
    assert repl.holders("absent", 0) == []
    # The counts agree with the holders, record by record.
    held = repl.held(LEDGER)
    assert count_distribution(held, 10) == {3: 5, 2: 5}
    assert all(len(repl.holders(LEDGER, h)) == sum(1 for v in held.values() if v >= h) for h in range(12))


# --- alerts ----------------------------------------------------------------------------------------


def test_alerts_come_back_oldest_first_with_every_field(repl: ReplicationLedger) -> None:
    before = time.time_ns() // 1_000_000
    first = Alert("replica-1", LEDGER, 3, "bad_link", "the link does not match", source="ingest-1", expected="ab")
    second = Alert("replica-2", LEDGER, 4, "record_conflict", "a different record", source="redis", found="cd")
    ids = [repl.alert(first), repl.alert(second)]
    assert repl.alerts() == repl.alerts(count=10)
    one, two = repl.alerts()
    assert [one["id"], two["id"]] == ids
    assert {k: v for k, v in one.items() if k not in ("id", "at_ms")} == {
        "node": "replica-1",
        "ledger": LEDGER,
        "height": "3",
        "what": "bad_link",
        "detail": "the link does not match",
        "source": "ingest-1",
        "expected": "ab",
        "found": "",
    }
    assert two["what"] == "record_conflict" and two["found"] == "cd" and two["source"] == "redis"
    assert before <= int(one["at_ms"]) <= int(two["at_ms"]) <= time.time_ns() // 1_000_000


def test_alerts_count_keeps_the_latest(repl: ReplicationLedger) -> None:
    for height in range(5):
        repl.alert(Alert("replica-1", LEDGER, height, "bad_checksum", "changed"))
    assert [a["height"] for a in repl.alerts(count=2)] == ["3", "4"]
    assert repl.alerts() == repl.alerts(count=5)
    assert ReplicationLedger(repl.client, namespace="elsewhere").alerts() == []


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (b"not json", {}),
        (b"[1, 2]", {}),
        (b'"text"', {}),
        (b"\xff\xfe", {}),
        (b"[" * 100_000, {}),  # deeper than the parser goes
        (b'{"id": [1]}', {"id": [1]}),  # an object, but its id no stream id
    ],
)
def test_an_open_alert_that_is_not_json_is_still_resolved(
    repl: ReplicationLedger, value: bytes, shown: dict[str, Any]
) -> None:
    # Any node's Redis user may write the open hash: a value that is no alert of ours must not
    # make `vledger alerts` or `vledger alerts resolve` fail with a traceback.
    kept = Alert("replica-1", LEDGER, 3, "bad_link", "the link does not match")
    repl.alert(kept)
    repl.client.hset(repl.open_alerts_key, "replica-2|x|bad_link", value)
    assert repl.open_alerts()["replica-2|x|bad_link"] == shown
    assert repl.open_alerts()[kept.key]["what"] == "bad_link"
    assert repl.resolve_as_operator(["replica-2|x|bad_link", kept.key]) == 2
    assert repl.open_alerts() == {}
    resolved = repl.operator_resolved([(None, "replica-2|x|bad_link"), (None, kept.key)])
    assert resolved[(None, "replica-2|x|bad_link")] == "" and resolved[(None, kept.key)] != ""


def test_an_open_alerts_id_past_the_servers_clock_is_shown_empty_and_noted_for_its_raiser_alone(
    redis_client: Any,
) -> None:
    # Each raiser writes its own open hash's JSON, id included: an id no stream of this server
    # made (past its clock) must neither hide another raiser's alert of the key nor, once an
    # operator resolves the key, count as the resolution of another raiser's.
    honest = ReplicationLedger(redis_client, node="replica-1")
    alert = Alert("ingest-1", LEDGER, 3, "equivocation", "two roots", source="ingest-1")
    raised = honest.alert(alert)
    forged = {"id": "9999999999999-0", "height": "0", "node": "ingest-1", "ledger": LEDGER, "what": "lag"}
    redis_client.hset(honest.open_alerts_key_of("replica-3"), alert.key, json.dumps(forged))
    reader = ReplicationLedger(redis_client, raisers=["replica-3", "replica-1"])
    shown = [(e["key"], e["raised_by"], e["id"], e["what"]) for e in reader.open_entries()]
    assert shown == [(alert.key, "replica-1", raised, "equivocation"), (alert.key, "replica-3", "", "lag")]
    theirs = dict(reader.open_by_raiser())["replica-3"][alert.key]
    assert theirs == {**forged, "id": ""}  # shown, but with no id: no stream made it
    assert reader.resolve_as_operator([alert.key]) == 1 and reader.open_alerts() == {}
    pairs = [("replica-1", alert.key), ("replica-3", alert.key), (None, alert.key)]
    assert reader.operator_resolved(pairs) == {("replica-1", alert.key): raised, ("replica-3", alert.key): ""}


def test_one_raisers_open_key_of_another_type_hides_no_other_raisers_alerts(redis_client: Any) -> None:
    # A node's own Redis user can make its open hash a stream; every reader (`vledger alerts`,
    # the gateway, the verifier) failed WRONGTYPE, all raisers' alerts hidden (review16 2b).
    honest = ReplicationLedger(redis_client, node="verifier-1")
    alert = Alert("ingest-1", LEDGER, 3, "signed_fork", "two roots", source="redis")
    honest.alert(alert)
    redis_client.xadd(honest.open_alerts_key_of("replica-1"), {"x": "y"})
    reader = ReplicationLedger(redis_client, raisers=["verifier-1", "replica-1"])
    shown = reader.open_alerts()
    assert shown[alert.key]["raised_by"] == "verifier-1"
    damaged = shown["replica-1||alert_keys_damaged"]
    assert (damaged["node"], damaged["source"], damaged["id"]) == ("replica-1", "redis", "")
    assert "WRONGTYPE" in damaged["detail"]
    assert dict(reader.open_by_raiser())["replica-1"] == {}
    assert reader.resolve_as_operator([alert.key]) == 1
    assert list(reader.open_alerts()) == ["replica-1||alert_keys_damaged"]


def test_a_raisers_open_hash_past_the_cap_is_not_read_but_shown_as_one_entry(redis_client: Any) -> None:
    # Review r24 F5: a node's own Redis user filled its open hash with 1M fields; every reader
    # (the gateway each second, status, verify --cluster, the verifier) then read 60 MB, 21-26 s.
    honest = ReplicationLedger(redis_client, node="verifier-1")
    alert = Alert("ingest-1", LEDGER, 3, "signed_fork", "two roots", source="redis")
    honest.alert(alert)
    huge, full = honest.open_alerts_key_of("replica-1"), honest.open_alerts_key_of("replica-2")
    pipe = redis_client.pipeline(transaction=False)
    for key, size in ((huge, OPEN_ALERTS_CAP + 1), (full, OPEN_ALERTS_CAP)):
        for start in range(0, size, 5000):
            pipe.hset(key, mapping={f"x|{i}|lag": '{"id": "1-0"}' for i in range(start, min(size, start + 5000))})
    pipe.execute()
    reader = ReplicationLedger(redis_client, raisers=["verifier-1", "replica-1", "replica-2"])
    by_raiser = dict(reader.open_by_raiser())
    assert by_raiser["replica-1"] == {} and len(by_raiser["replica-2"]) == OPEN_ALERTS_CAP
    shown = reader.open_alerts()
    assert shown[alert.key]["raised_by"] == "verifier-1"
    damaged = shown["replica-1||alert_keys_damaged"]
    assert (damaged["node"], damaged["source"], damaged["id"]) == ("replica-1", "redis", "")
    assert damaged["detail"] == f"{huge}: more than the {OPEN_ALERTS_CAP} open alerts a reader reads"
    assert "replica-2||alert_keys_damaged" not in shown
    # The operator's resolution of another raiser's alert still works; the stand-in stays.
    assert reader.resolve_as_operator([alert.key]) == 1
    assert "replica-1||alert_keys_damaged" in reader.open_alerts() and alert.key not in reader.open_alerts()


class _GrowingRaiser:
    """A reader's client past whose every round trip a raiser grows its open hash ``key`` to
    ``grown`` fields (once), keeping each reply the reader got: review r25 F4's race, made to
    happen every time."""

    def __init__(self, client: Any, key: str, grown: int) -> None:
        self.client, self.key, self.grown = client, key, grown
        self.replies: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def pipeline(self, transaction: bool = True) -> Any:
        inner = self.client.pipeline(transaction=transaction)
        owner = self

        class Pipe:
            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

            def execute(self, raise_on_error: bool = True) -> list[Any]:
                replies: list[Any] = inner.execute(raise_on_error=raise_on_error)
                owner.replies.extend(replies)
                owner.grow()
                return replies

        return Pipe()

    def grow(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        for start in range(0, self.grown, 5000):
            pipe.hset(self.key, mapping={f"x|{i}|lag": "{}" for i in range(start, min(self.grown, start + 5000))})
        pipe.execute()


def _fields_read(reply: Any) -> int:
    """How many hash fields a reply carries: HGETALL's map, HRANDFIELD WITHVALUES's flat list."""
    if isinstance(reply, dict):
        return len(reply)
    return len(reply) // 2 if isinstance(reply, list) else 0


def test_a_raiser_growing_its_open_hash_while_it_is_read_is_never_read_past_the_cap(redis_client: Any) -> None:
    # Review r25 F4: a reader sized the hash (HLEN, within the cap) and then read it whole
    # (HGETALL); a raiser that grew it in between was read whole, 20 s for 1M fields.
    raiser = ReplicationLedger(redis_client, node="replica-1")
    raiser.alert(Alert("ingest-1", LEDGER, 3, "bad_link", "refused"))
    client = _GrowingRaiser(redis_client, raiser.open_alerts_key, 2 * OPEN_ALERTS_CAP)
    reader = ReplicationLedger(client, raisers=["replica-1"])
    first = dict(reader.open_by_raiser())["replica-1"]
    assert len(first) <= OPEN_ALERTS_CAP
    shown = reader.open_alerts()
    assert max(_fields_read(reply) for reply in client.replies) <= OPEN_ALERTS_CAP + 1
    damaged = shown["replica-1||alert_keys_damaged"]
    assert damaged["detail"].endswith(f"more than the {OPEN_ALERTS_CAP} open alerts a reader reads")


@pytest.mark.parametrize(("refused", "past_the_cap_read"), [("-hrandfield", False), ("-hrandfield -hlen", True)])
def test_a_reader_whose_acl_predates_hrandfield_reads_as_before(
    redis_client: Any, refused: str, past_the_cap_read: bool
) -> None:
    # An ACL file written before readers were granted HRANDFIELD (until `vledger keygen
    # --cluster`): alerts are still shown, not a refusal; a hash past the cap is sized by HLEN
    # and not read, or read whole where the file predates HLEN too.
    honest = ReplicationLedger(redis_client, node="replica-1")
    raised = honest.alert(Alert("ingest-1", LEDGER, 3, "bad_link", "refused"))
    huge = honest.open_alerts_key_of("replica-2")
    redis_client.hset(huge, mapping={f"x|{i}|lag": "{}" for i in range(OPEN_ALERTS_CAP + 1)})
    redis_client.execute_command("ACL", "SETUSER", "old-acl", "on", ">pw", "~*", "+@all", *refused.split())
    kwargs = redis_client.connection_pool.connection_kwargs
    user = redis.Redis(host=kwargs["host"], port=kwargs["port"], username="old-acl", password="pw")
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.hrandfield(honest.open_alerts_key, 1)
        reader = ReplicationLedger(user, raisers=["replica-1", "replica-2"])
        assert len(dict(reader.open_by_raiser())["replica-2"]) == (OPEN_ALERTS_CAP + 1 if past_the_cap_read else 0)
        shown = reader.open_alerts()
        assert shown["ingest-1|" + LEDGER + "|bad_link"]["id"] == raised
        assert ("replica-2||alert_keys_damaged" in shown) is not past_the_cap_read
    finally:
        user.close()
        redis_client.execute_command("ACL", "DELUSER", "old-acl")


def test_open_alerts_are_read_by_a_user_whose_acl_predates_time(redis_client: Any) -> None:
    # A gateway's user from an ACL file written before it was granted TIME: open alerts are
    # still shown (ids checked against this host's clock), not a refusal.
    honest = ReplicationLedger(redis_client, node="replica-1")
    alert = Alert("ingest-1", LEDGER, 3, "bad_link", "refused")
    raised = honest.alert(alert)
    forged = {"id": "9999999999999-0", "what": "lag"}
    redis_client.hset(honest.open_alerts_key_of("replica-3"), alert.key, json.dumps(forged))
    redis_client.execute_command("ACL", "SETUSER", "no-time", "on", ">pw", "~*", "+@all", "-time")
    kwargs = redis_client.connection_pool.connection_kwargs
    user = redis.Redis(host=kwargs["host"], port=kwargs["port"], username="no-time", password="pw")
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.time()
        shown = ReplicationLedger(user, raisers=["replica-1", "replica-3"]).open_alerts()[alert.key]
        assert (shown["raised_by"], shown["id"]) == ("replica-1", raised)
    finally:
        user.close()
        redis_client.execute_command("ACL", "DELUSER", "no-time")


def test_each_raisers_alert_of_one_key_is_its_own_entry_whatever_id_or_fields_another_wrote(
    redis_client: Any,
) -> None:
    # Outsider o16 2: a node raising the verifier's key in its own keys with a later id (any
    # Redis user's stream makes one) showed in its place. And the JSON is its raiser's to write:
    # a "key" or "raised_by" field in it names neither the entry's key nor its raiser.
    verifier = ReplicationLedger(redis_client, node="verifier-1")
    found = Alert("redis", LEDGER, 0, "unlisted_ledger", "deleted from the ledgers hash", source="ingest-1")
    raised = verifier.alert(found)
    later = ReplicationLedger(redis_client, node="ingest-2").alert(
        Alert("redis", LEDGER, 0, "unlisted_ledger", "benign: nothing to do", source="ingest-1")
    )
    disguised = {"id": "", "key": found.key, "raised_by": "verifier-1", "detail": "benign too"}
    redis_client.hset(verifier.open_alerts_key_of("replica-1"), "replica-1|x|lag", json.dumps(disguised))
    reader = ReplicationLedger(redis_client, raisers=["verifier-1", "replica-1", "ingest-2"])
    shown = [(e["key"], e["raised_by"], e["id"], e["detail"]) for e in reader.open_entries()]
    assert shown == [
        (found.key, "ingest-2", later, "benign: nothing to do"),
        (found.key, "verifier-1", raised, "deleted from the ledgers hash"),
        ("replica-1|x|lag", "replica-1", "", "benign too"),
    ]


def test_an_append_not_of_the_latest_checkpoint_carries_it_on_its_entry_only(repl: ReplicationLedger) -> None:
    # A refill's earlier chunks (ingest/outbox.py _fill) carry older checkpoints: the ledger's
    # latest never steps back to them, which readers would report (rollback, PROTOCOL 10.5).
    repl.append(LEDGER, HOME, 0, [b"r0", b"r1"], checkpoint=b"note 2")
    assert repl.append_checked(LEDGER, HOME, 2, [b"r2"], b"note 3", latest=False) == (2, None)
    assert repl.checkpoints() == {LEDGER: b"note 2"}
    assert repl.read_rows(LEDGER, 2, 1)[1] == [b"note 3"]
    assert repl.append_checked(LEDGER, HOME, 3, [b"r3"], b"note 4") == (3, None)
    assert repl.checkpoints() == {LEDGER: b"note 4"}


def test_evidence_that_is_not_json_reads_as_none(repl: ReplicationLedger) -> None:
    # A node's Redis user writes its own evidence fields: what one wrote there must not stop
    # `vledger alerts` or the verifier reading everyone's (json's RecursionError included).
    repl.keep_evidence("replica-1", LEDGER, 3, {"checkpoint": "a note"})
    repl.client.hset(repl.evidence_key, "replica-2|x|4", b"[" * 100_000)
    repl.client.hset(repl.evidence_key, "replica-2|x|5", b"not json")
    assert repl.evidence() == {
        f"replica-1|{LEDGER}|3": {"checkpoint": "a note"},
        "replica-2|x|4": {},
        "replica-2|x|5": {},
    }


@pytest.mark.parametrize("forged_id", ["\u00b2-0", "9" * 5000 + "-0"])
def test_an_open_alerts_id_of_digits_int_refuses_is_no_stream_id_not_a_crash(redis_client: Any, forged_id: str) -> None:
    # "²" is a str.isdigit() digit that int() refuses, as it refuses 5,000 digits: both ValueErrors
    # stopped `vledger alerts` for everyone, from one raiser's own open hash.
    honest = ReplicationLedger(redis_client, node="replica-1")
    alert = Alert("ingest-1", LEDGER, 3, "equivocation", "two roots", source="ingest-1")
    raised = honest.alert(alert)
    forged = {"id": forged_id, "height": "0", "node": "ingest-1", "ledger": LEDGER, "what": "lag"}
    redis_client.hset(honest.open_alerts_key_of("replica-3"), alert.key, json.dumps(forged))
    reader = ReplicationLedger(redis_client, raisers=["replica-1", "replica-3"])
    shown = [(e["raised_by"], e["id"], e["what"]) for e in reader.open_entries()]
    assert shown == [("replica-1", raised, "equivocation"), ("replica-3", forged_id, "lag")]
    assert [a["what"] for a in reader.alerts()] == ["equivocation"]


def test_a_follower_closes_only_the_alerts_raised_up_to_the_height_whose_cause_is_gone(redis_client: Any) -> None:
    """A follower resolves its own copy's alert once a checkpoint at or above it vouches for the
    copy, also one an earlier run raised (outsider 25, H1); the same key raised since at a greater
    height (the witness, another part of the node, may) must stay open, its cause past that."""
    replica = ReplicationLedger(redis_client, node="replica-1")
    copy = Alert("replica-1", "votes", 9, "store_contradicts_checkpoint", "its copy", source="replica-1")
    replica.alert(copy)
    assert replica.resolve_up_to([copy.key], 5) == 0 and copy.key in replica.own_open_alerts()
    assert replica.resolve_up_to([copy.key, "replica-1|votes|bad_link"], 9) == 1
    assert replica.own_open_alerts() == {}
    redis_client.hset(replica.open_alerts_key, copy.key, "[1]")  # no alert: its own user's junk
    assert replica.resolve_up_to([copy.key], 0) == 1 and replica.own_open_alerts() == {}
    replica.alert(copy)
    assert replica.resolve_up_to([copy.key], 2**63) == 1  # past the largest height: every one


def test_after_one_home_replaced_the_ledgers_hash_every_home_names_its_quiet_ledgers_again_once(
    repl: ReplicationLedger,
) -> None:
    # Replaced by one home (made a string), the hash lost the other homes' entries, and a home
    # named its ledgers again only when the hash was of another type or at its ledger's next
    # append: a quiet ledger stayed unlisted (wt31, after c3eea34).
    repl.name_homes([OTHER], "ingest-2")
    repl.client.set(repl.ledgers_key, "x")
    repl.name_homes([LEDGER], HOME)  # replaces it
    assert repl.ledgers() == {LEDGER: HOME}
    repl.name_homes([OTHER], "ingest-2")
    assert repl.ledgers() == {LEDGER: HOME, OTHER: "ingest-2"}
    # A plain HDEL is left as it is for the verifier's unlisted_ledger: no home names it again.
    repl.client.hdel(repl.ledgers_key, OTHER, LEDGER)
    repl.name_homes([OTHER], "ingest-2")
    repl.name_homes([LEDGER], HOME)
    assert repl.ledgers() == {}


def test_a_ledgers_keys_of_another_type_are_read_as_none_and_replaced_by_their_owners(redis_client: Any) -> None:
    # The admin's user may make any ledger's key another type (wt31): one checkpoint key failed
    # every ledger's checkpoint read, one held key the ledger's held heights and every report of
    # its node, one stream every append of its home.
    repl = ReplicationLedger(redis_client, node=HOME)
    assert repl.append(LEDGER, HOME, 0, [b"r0", b"r1"], b"note") == 1
    assert repl.append(OTHER, HOME, 0, [b"o0"], b"other") == 0
    repl.advance("replica-1", LEDGER, 1)
    repl.client.delete(repl.checkpoint_key(LEDGER), repl.held_key(LEDGER, HOME))
    repl.client.hset(repl.checkpoint_key(LEDGER), "x", "1")
    repl.client.hset(repl.held_key(LEDGER, HOME), "x", "1")
    notes, damaged = repl.checkpoint_reads()
    assert notes == {OTHER: b"other"} and list(damaged) == [repl.checkpoint_key(LEDGER)]
    assert repl.held(LEDGER) == {"replica-1": 1}
    assert list(repl.wrong_typed([repl.held_key(LEDGER, HOME), repl.held_key(LEDGER, "replica-1")])) == [
        repl.held_key(LEDGER, HOME)
    ]
    assert repl.set_held(HOME, LEDGER, 1) == 1 and repl.held(LEDGER)[HOME] == 1
    repl.client.set(repl.stream_key(LEDGER), "x")
    assert repl.last_heights([LEDGER, OTHER]) == {LEDGER: -1, OTHER: 0}
    # Its home's next append finds it: an empty stream, which the home fills from its store.
    assert repl.append_checked(LEDGER, HOME, 2, [b"r2"], b"note", held=2) == (-1, None)
    assert repl.append(LEDGER, HOME, 0, [b"r0", b"r1", b"r2"], b"note") == 2
    # The outside witnesses' notes a home keeps: read as none (vledger tally, the gateway failed), replaced by it.
    repl.client.set(repl.outside_key(LEDGER), "x")
    assert repl.outside_cosignatures(LEDGER) == {}
    repl.publish_outside_cosignature(LEDGER, "outside-1", 3, b"note")
    assert repl.outside_cosignatures(LEDGER) == {"outside-1": b"note"}
    raised = [(a["ledger"], a["what"]) for a in repl.alerts()]
    assert raised == [
        (repl.held_key(LEDGER, HOME), REDIS_KEY_DAMAGED),
        (repl.stream_key(LEDGER), REDIS_KEY_DAMAGED),
        (repl.outside_key(LEDGER), REDIS_KEY_DAMAGED),
    ]
    assert repl.own_open_alerts() == {}  # resolved once written anew


def test_a_homes_append_replaces_a_ledgers_hash_of_another_type_and_names_itself(repl: ReplicationLedger) -> None:
    # Any ingest node's Redis user may make {ledgers} a string: every home's append failed
    # WRONGTYPE on its HSETNX, so no stream grew again until someone deleted it (outsider 31, N1).
    repl.client.set(repl.ledgers_key, "x")
    assert repl.append(LEDGER, HOME, 0, [b"r0", b"r1"]) == 1
    assert repl.ledgers() == {LEDGER: HOME}
    repl.client.delete(repl.ledgers_key)
    repl.client.set(repl.ledgers_key, "x")
    repl.name_homes([LEDGER, OTHER], HOME)  # a home's heartbeat: each ledger it homes, named again
    assert repl.ledgers() == {LEDGER: HOME, OTHER: HOME}
    repl.client.hset(repl.ledgers_key, OTHER, "ingest-2")
    repl.name_homes([OTHER], HOME)
    assert repl.ledgers()[OTHER] == "ingest-2"  # a name there is no home's to overwrite


def test_an_operators_resolution_replaces_a_resolved_key_of_another_type(repl: ReplicationLedger) -> None:
    # `vledger alerts resolve` failed HSET WRONGTYPE for good once {alerts}:resolved was a string.
    raised = repl.alert(Alert("replica-1", LEDGER, 3, "signed_fork", "two roots", source="redis"))
    repl.client.set(repl.resolved_alerts_key, "x")
    key = f"replica-1|{LEDGER}|signed_fork"
    assert repl.operator_resolved([(None, key)]) == {}  # read as no resolution, no failure
    assert repl.resolve_as_operator([key]) == 1
    assert repl.open_alerts() == {}
    assert repl.operator_resolved([(None, key)]) == {(None, key): raised}


def test_an_alerts_stream_of_another_type_hides_no_other_raisers_alerts(redis_client: Any) -> None:
    # `vledger alerts` failed XREVRANGE WRONGTYPE for every raiser once the shared stream was a string.
    honest = ReplicationLedger(redis_client, node="verifier-1")
    honest.alert(Alert("ingest-1", LEDGER, 3, "signed_fork", "two roots", source="redis"))
    redis_client.set(honest.alerts_key_of(None), "x")
    redis_client.set(honest.alerts_key_of("replica-1"), "x")
    reader = ReplicationLedger(redis_client, raisers=["verifier-1", "replica-1"])
    (shown,) = reader.alerts()
    assert (shown["what"], shown["raised_by"]) == ("signed_fork", "verifier-1")


def test_a_wrongtype_reply_is_said_to_be_a_key_of_another_type_not_a_redis_that_does_not_answer() -> None:
    # o11's `verify --cluster` said "Redis ... does not answer: WRONGTYPE" when Redis had answered.
    from vledger.broker.replication import redis_failed
    from vledger.tools.cli import _redis_failure

    error = redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
    for failed in (redis_failed("redis://:secret@127.0.0.1:1", error), _redis_failure(error)):
        assert failed is not None and failed.code == "redis_server"
        assert "does not answer" not in str(failed) and "is of another type (WRONGTYPE)" in str(failed)
        assert "secret" not in str(failed)
    assert "does not answer" in str(redis_failed("redis://127.0.0.1:1", redis.exceptions.ConnectionError("refused")))


def test_a_refused_login_is_said_to_be_refused_naming_the_user_not_a_redis_that_does_not_answer(
    redis_server: Any,
) -> None:
    # Outsider o21 F6: a node added across hosts, its user not in the redis.acl Redis loaded,
    # exited "Redis does not answer: invalid username-password pair": Redis had answered.
    from vledger.broker.replication import redis_failed
    from vledger.tools.cli import _redis_failure

    client = redis.Redis.from_url(redis_server.url, username="vledger-node-observer-9", password="hunter2-secret")
    with pytest.raises(redis.exceptions.AuthenticationError) as refused:
        client.ping()
    for failed in (redis_failed(redis_server.url, refused.value), _redis_failure(refused.value)):
        assert failed is not None and failed.code == "redis_server"
        assert "does not answer" not in str(failed)
        assert "refused the login of 'vledger-node-observer-9'" in str(failed) and "redis.acl" in str(failed)
        assert "hunter2" not in str(failed)
