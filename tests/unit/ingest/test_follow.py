"""Follower: a replica's ChainStore brought up to each ledger's head from feed messages and sources.

The records are real: a home ChainStore (origin "home", difficulty 0) places them. The
sources are in memory, and the feed messages are built directly, as the replica process
would hand them over after decode_message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vledger.broker.feed import FeedHeads, FeedRecord
from vledger.broker.replication import Alert
from vledger.config.settings import Limits
from vledger.ingest.follow import NOT_RELAYED, Follower
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry, Record
from vledger.node.store import ChainStore

LIMITS = Limits()
T0 = 1_790_000_000_000
LEDGER = "ledger-a"
OTHER = "ledger-b"
HOME = "home"
REPLICA = "replica-1"


def home_chain(directory: Path, ledger: str, count: int) -> list[Record]:
    """``count`` records of ``ledger`` as its home node places them: a genesis, then notes."""
    with ChainStore(directory, origin=HOME, clock=lambda: T0) as store:
        rules = LedgerRules(("note",), 0, {})
        store.create_ledger(Entry.prepare(rules.genesis_content(ledger, "admin", "create-1", T0), 0, LIMITS))
        futures = [
            store.submit_entry(Entry.prepare(Content(ledger, "note", {"n": i}, "Zoe.1", f"r-{i}", T0 + i), 0, LIMITS))
            for i in range(1, count)
        ]
        for future in futures:
            future.result()
        return list(store.range(ledger))


def forged(record: Record, prev: bytes = b"\x11" * 32) -> Record:
    """The same entry placed after another record: well formed, checksummed, but not on this chain."""
    return record.entry().place(record.height, prev, record.accepted, record.origin)


def live(record: Record, sender: str = HOME, hops: int = 1, height: int | None = None) -> FeedRecord:
    return FeedRecord(record.ledger, record.height if height is None else height, hops, sender, record.encode())


class MemorySource:
    """A source in memory: serves ``chains`` from ``first`` on (a trimmed stream), or fails."""

    def __init__(self, name: str, chains: dict[str, list[Record]], *, first: int = 0, fail: bool = False) -> None:
        self.name = name
        self.chains = chains
        self.first = first
        self.fail = fail
        self.fetches: list[tuple[str, int, int]] = []

    def fetch(self, ledger: str, start: int, count: int) -> list[tuple[int, bytes]]:
        self.fetches.append((ledger, start, count))
        if self.fail:
            raise OSError(f"{self.name} is down")
        rows = [(r.height, r.encode()) for r in self.chains.get(ledger, []) if r.height >= max(start, self.first)]
        return rows[:count]

    def heads(self) -> dict[str, int]:
        if self.fail:
            raise OSError(f"{self.name} is down")
        return {ledger: len(chain) - 1 for ledger, chain in self.chains.items()}


@dataclasses.dataclass
class Replica:
    store: ChainStore
    follower: Follower
    stored: list[tuple[list[int], int]]  # (heights, hops) of each on_stored call
    alerts: list[Alert]

    def heights(self, ledger: str = LEDGER) -> list[int]:
        return [r.height for r in self.store.range(ledger)]


MakeReplica = Callable[..., Replica]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    return home_chain(tmp_path_factory.mktemp("home-a"), LEDGER, 12)


@pytest.fixture(scope="module")
def other_chain(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    return home_chain(tmp_path_factory.mktemp("home-b"), OTHER, 4)


@pytest.fixture
def make_replica(tmp_path: Path) -> Iterator[MakeReplica]:
    made: list[ChainStore] = []

    def make(*sources: MemorySource, batch: int = 1000) -> Replica:
        store = ChainStore(tmp_path / f"replica-{len(made)}")
        made.append(store)
        stored: list[tuple[list[int], int]] = []
        alerts: list[Alert] = []
        follower = Follower(
            REPLICA,
            store,
            sources,
            on_stored=lambda records, hops: stored.append(([r.height for r in records], hops)),
            on_alert=alerts.append,
            batch=batch,
        )
        return Replica(store, follower, stored, alerts)

    yield make
    for store in made:
        store.close()


# --- the live feed ---------------------------------------------------------------------------------


def test_records_in_order_are_stored_as_they_come(make_replica: MakeReplica, chain: list[Record]) -> None:
    source = MemorySource("redis", {LEDGER: chain})
    replica = make_replica(source)
    replica.follower.receive([live(r) for r in chain[:3]])
    replica.follower.receive([live(r, hops=2) for r in chain[3:5]])
    assert replica.heights() == [0, 1, 2, 3, 4]
    assert [replica.store.get(LEDGER, h) for h in range(5)] == chain[:5]
    assert replica.stored == [([0, 1, 2], 1), ([3, 4], 2)]
    assert source.fetches == [] and replica.alerts == []
    assert replica.follower.stored == 5


def test_a_batch_out_of_order_is_stored_in_order(make_replica: MakeReplica, chain: list[Record]) -> None:
    replica = make_replica(MemorySource("redis", {}))
    replica.follower.receive([live(chain[h]) for h in (2, 0, 3, 1)])
    assert replica.heights() == [0, 1, 2, 3]
    assert replica.alerts == []


def test_duplicates_are_dropped(make_replica: MakeReplica, chain: list[Record]) -> None:
    replica = make_replica(MemorySource("redis", {LEDGER: chain}))
    replica.follower.receive([live(r) for r in chain[:4]])
    replica.follower.receive([live(r, sender="replica-9", hops=2) for r in chain[:4]])  # by another path
    replica.follower.receive([live(chain[1]), live(chain[1]), live(chain[4]), live(chain[4])])  # twice in a batch
    assert replica.heights() == [0, 1, 2, 3, 4]
    assert replica.stored == [([0, 1, 2, 3], 1), ([4], 1)]  # nothing stored twice, so nothing relayed twice
    assert replica.follower.duplicates == 5
    assert replica.alerts == []


def test_a_gap_is_filled_from_the_first_source(make_replica: MakeReplica, chain: list[Record]) -> None:
    first, second = MemorySource("redis", {LEDGER: chain}), MemorySource(HOME, {LEDGER: chain})
    replica = make_replica(first, second)
    replica.follower.receive([live(r) for r in chain[:3]])
    replica.follower.receive([live(chain[7]), live(chain[8])])
    assert replica.heights() == list(range(9))
    assert first.fetches == [(LEDGER, 3, 4)]  # heights 3..6, what the gap lacks
    assert second.fetches == []
    assert replica.stored == [([0, 1, 2], 1), ([3, 4, 5, 6], NOT_RELAYED), ([7, 8], 1)]
    assert replica.alerts == []


def test_a_trimmed_first_source_falls_back_to_the_second(make_replica: MakeReplica, chain: list[Record]) -> None:
    trimmed = MemorySource("redis", {LEDGER: chain}, first=4)
    home = MemorySource(HOME, {LEDGER: chain})
    replica = make_replica(trimmed, home, batch=3)
    replica.follower.receive([live(chain[6])])
    assert replica.heights() == list(range(7))
    assert trimmed.fetches == [(LEDGER, 0, 3)]  # began above 0: ask the next source
    assert home.fetches == [(LEDGER, 0, 3), (LEDGER, 3, 3)]
    assert replica.alerts == []


def test_a_source_that_fails_falls_back_to_the_next(make_replica: MakeReplica, chain: list[Record]) -> None:
    down, home = MemorySource("redis", {LEDGER: chain}, fail=True), MemorySource(HOME, {LEDGER: chain})
    replica = make_replica(down, home)
    replica.follower.receive([live(chain[3])])
    assert replica.heights() == [0, 1, 2, 3]
    assert down.fetches == [(LEDGER, 0, 3)] and home.fetches == [(LEDGER, 0, 3)]


def test_a_gap_no_source_can_fill_stays_until_one_can(make_replica: MakeReplica, chain: list[Record]) -> None:
    source = MemorySource("redis", {LEDGER: chain[:2]})
    replica = make_replica(source)
    replica.follower.receive([live(chain[5])])
    assert replica.heights() == [0, 1]  # 5 is not stored over a gap
    assert replica.follower.behind() == {LEDGER: 4}
    source.chains[LEDGER] = chain
    replica.follower.receive([FeedHeads(HOME, {LEDGER: (5, chain[5].hash)})])
    assert replica.heights() == list(range(6))
    assert replica.follower.behind() == {}


def test_a_forged_record_on_the_feed_is_refused_alerted_and_the_true_one_fetched(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    source = MemorySource("redis", {LEDGER: chain})
    replica = make_replica(source)
    replica.follower.receive([live(r) for r in chain[:3]])
    fake = forged(chain[3])
    assert fake.hash != chain[3].hash
    replica.follower.receive([live(fake, sender="ingest-evil"), live(chain[4])])

    assert replica.heights() == [0, 1, 2, 3, 4]
    assert replica.store.get(LEDGER, 3) == chain[3]  # the true record, from the source
    (alert,) = replica.alerts
    assert (alert.node, alert.ledger, alert.height, alert.what, alert.source) == (
        REPLICA,
        LEDGER,
        3,
        "bad_link",
        "ingest-evil",
    )
    assert alert.detail and alert.expected == ""  # nothing was held at height 3 when it came
    assert source.fetches == [(LEDGER, 3, 2)]  # the whole run, 3 and 4, from the source
    # Sent again, it now meets the true record at a held height: a conflict, reported once per run.
    replica.follower.receive([live(fake, sender="ingest-evil")])
    replica.follower.receive([live(fake, sender="ingest-evil")])
    assert [(a.height, a.what, a.source, a.expected) for a in replica.alerts[1:]] == [
        (3, "record_conflict", "ingest-evil", chain[3].hash.hex())
    ]
    assert replica.store.get(LEDGER, 3) == chain[3]


def test_a_forged_record_from_a_source_is_alerted_and_the_next_source_asked(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    bad = MemorySource("redis", {LEDGER: [*chain[:2], forged(chain[2]), *chain[3:6]]})
    good = MemorySource(HOME, {LEDGER: chain[:6]})
    replica = make_replica(bad, good)
    replica.follower.receive([live(chain[0])])
    replica.follower.receive([FeedHeads(HOME, {LEDGER: (5, chain[5].hash)})])
    assert replica.heights() == list(range(6))
    assert [replica.store.get(LEDGER, h) for h in range(6)] == chain[:6]
    (alert,) = replica.alerts
    assert (alert.height, alert.what, alert.source) == (2, "bad_link", "redis")
    assert replica.stored == [([0], 1), ([1], NOT_RELAYED), ([2, 3, 4, 5], NOT_RELAYED)]


def test_an_envelope_that_lies_about_the_height_is_refused(make_replica: MakeReplica, chain: list[Record]) -> None:
    replica = make_replica(MemorySource("redis", {LEDGER: chain[:3]}))
    replica.follower.receive([live(r) for r in chain[:2]])
    replica.follower.receive([live(chain[1], sender="ingest-evil", height=2)])  # record 1 said to be 2
    assert replica.heights() == [0, 1, 2]  # 2 fetched from the source
    (alert,) = replica.alerts
    assert (alert.height, alert.what, alert.source) == (2, "record_conflict", "ingest-evil")


def test_a_conflicting_record_at_a_held_height_raises_a_record_conflict_alert(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    replica = make_replica(MemorySource("redis", {LEDGER: chain}))
    replica.follower.receive([live(r) for r in chain[:4]])
    other = chain[2].entry().place(2, chain[1].hash, chain[2].accepted + 1, HOME)  # a valid next record, not this one
    assert other.encode() != chain[2].encode()
    replica.follower.receive([live(other, sender="ingest-2")])
    assert replica.heights() == [0, 1, 2, 3]
    assert replica.store.get(LEDGER, 2) == chain[2]  # what is held stays
    (alert,) = replica.alerts
    assert (alert.node, alert.ledger, alert.height, alert.what, alert.source) == (
        REPLICA,
        LEDGER,
        2,
        "record_conflict",
        "ingest-2",
    )
    assert alert.expected == chain[2].hash.hex()
    replica.follower.receive([live(other, sender="ingest-2")])
    assert len(replica.alerts) == 1  # reported once


# --- heads and catch-up ----------------------------------------------------------------------------


def test_a_heads_message_above_the_head_triggers_catch_up(
    make_replica: MakeReplica, chain: list[Record], other_chain: list[Record]
) -> None:
    source = MemorySource("redis", {LEDGER: chain, OTHER: other_chain})
    replica = make_replica(source)
    replica.follower.receive([live(r) for r in chain[:2]])
    heads = {LEDGER: (7, chain[7].hash), OTHER: (3, other_chain[3].hash)}
    replica.follower.receive([FeedHeads(HOME, heads)])
    assert replica.heights(LEDGER) == list(range(8))
    assert replica.heights(OTHER) == [0, 1, 2, 3]  # a ledger not held before: from its genesis
    fetched = list(source.fetches)
    replica.follower.receive([FeedHeads(HOME, {LEDGER: (5, chain[5].hash)})])  # below the head: nothing to do
    assert source.fetches == fetched


def test_start_catches_up_to_the_heads_the_sources_report(
    make_replica: MakeReplica, chain: list[Record], other_chain: list[Record]
) -> None:
    down = MemorySource("node-x", {}, fail=True)  # cannot say its heads: skipped
    source = MemorySource("redis", {LEDGER: chain, OTHER: other_chain})
    replica = make_replica(down, source)
    assert replica.follower.status() == {"current": False, "behind": {}}  # before the start-up catch-up
    replica.follower.start()
    assert replica.heights(LEDGER) == list(range(12)) and replica.heights(OTHER) == [0, 1, 2, 3]
    assert replica.follower.caught_up
    assert replica.follower.status() == {"current": True, "behind": {}}


def test_status_says_how_far_behind(make_replica: MakeReplica, chain: list[Record]) -> None:
    source = MemorySource("redis", {LEDGER: chain[:5]})
    replica = make_replica(source)
    replica.follower.start()
    assert replica.follower.status() == {"current": True, "behind": {}}
    replica.follower.receive([FeedHeads(HOME, {LEDGER: (9, chain[9].hash)})])  # no source has 5..9 yet
    assert replica.heights() == list(range(5))
    assert replica.follower.status() == {"current": False, "behind": {LEDGER: 5}}
    source.chains[LEDGER] = chain
    replica.follower.catch_up_all()
    assert replica.follower.status() == {"current": True, "behind": {}}


def test_stopping_ends_a_catch_up_early(tmp_path: Path, chain: list[Record]) -> None:
    source = MemorySource("redis", {LEDGER: chain})
    with ChainStore(tmp_path / "replica") as store:
        follower = Follower(
            REPLICA,
            store,
            [source],
            on_stored=lambda records, hops: None,
            on_alert=lambda a: None,
            stopping=lambda: True,
        )
        assert follower.catch_up(LEDGER, 10) is False
        assert store.size(LEDGER) == 0 and source.fetches == []
