"""A verified checkpoint above the head that no source serves (outsider o18 F3 rest, PROTOCOL 10.7
"Storing"): a note the home's stolen key signed one size past its tree, set in Redis on a quiet
ledger, kept the follower behind for ever, serving that note as the ledger's checkpoint. Once
catch-ups found no source serving the next height for ``unserved_after``, the note is set aside:
the follower serves the checkpoint its store proves again, and is current; the note still waits,
so the records that reach it are stored under it, and the home's true note of its size makes it
evidence."""

from __future__ import annotations

from tests.unit.ingest import test_follow
from tests.unit.ingest.test_follow import (
    CLUSTER,
    HOME_KEY,
    LEDGER,
    MakeReplica,
    MemorySource,
    Replica,
    heads,
    held_up_to,
    live,
    signed,
)
from vledger.node.checkpoint_log import EVIDENCE
from vledger.node.record import Record
from vledger.node.witness import HomeSigner

chain = test_follow.chain  # the fixtures
make_replica = test_follow.make_replica


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _quiet(make_replica: MakeReplica, chain: list[Record], source: MemorySource) -> tuple[Replica, Clock]:
    replica = make_replica(source)
    clock = Clock()
    replica.follower.clock = clock
    replica.follower.unserved_after = 30.0
    held_up_to(replica, chain, 4)
    return replica, clock


def test_a_forged_note_no_source_serves_is_set_aside_and_the_proven_checkpoint_served_again(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    redis = MemorySource("redis", {LEDGER: chain[:5]})
    replica, clock = _quiet(make_replica, chain, redis)
    lie = HomeSigner(CLUSTER, HOME_KEY.seed).sign(LEDGER, 6, b"\x42" * 32)
    follower = replica.follower
    assert follower.take_checkpoint(LEDGER, lie.note, "redis", catch_up=False)
    follower.catch_up_all()  # no source has height 5
    assert follower.behind() == {LEDGER: 1}
    assert follower.checkpoint_of(LEDGER) == lie
    clock.now += 29.0
    follower.catch_up_all()
    assert follower.checkpoint_of(LEDGER) == lie  # not for long yet
    clock.now += 2.0
    follower.catch_up_all()
    assert follower.behind() == {}  # current again (status)
    assert follower.checkpoint_of(LEDGER) == signed(chain[4])  # what its store proves
    assert follower.checkpoints() == [signed(chain[4])]  # what a relay forwards
    fetched = len(redis.fetches)
    follower.take_checkpoint(LEDGER, lie.note, "redis", catch_up=False)  # set again in Redis
    follower.catch_up_overdue(follower.catch_up_overdue({}))
    assert follower.checkpoint_of(LEDGER) == signed(chain[4]) and len(redis.fetches) == fetched  # no ask a second
    assert replica.heights() == list(range(5)) and replica.alerts == []
    # The home writes height 5: its true note of size 6 is stored under, the set-aside one is evidence.
    redis.chains[LEDGER] = chain[:6]
    follower.receive([live(chain[5]), heads(signed(chain[5]))])
    assert replica.heights() == list(range(6))
    assert follower.checkpoint_of(LEDGER) == signed(chain[5])
    assert [(a.height, a.what) for a in replica.alerts] == [(5, "equivocation")]
    assert lie.note in [c.note for c in replica.store.checkpoints.all(LEDGER, EVIDENCE)]


def test_a_note_set_aside_is_stored_under_once_a_source_serves_its_records(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    # An honest home that went down between signing and serving: its records come at its next start.
    redis = MemorySource("redis", {LEDGER: chain[:5]})
    replica, clock = _quiet(make_replica, chain, redis)
    follower = replica.follower
    follower.take_checkpoint(LEDGER, signed(chain[7]).note, "redis", catch_up=False)
    follower.catch_up_all()
    clock.now += 31.0
    follower.catch_up_all()
    assert follower.checkpoint_of(LEDGER) == signed(chain[4]) and follower.behind() == {}
    redis.chains[LEDGER] = chain  # the home is back and refilled the stream
    follower.receive([heads(signed(chain[7]))])  # its heartbeat: the same note, byte for byte
    assert replica.heights() == list(range(8))
    assert follower.checkpoint_of(LEDGER) == signed(chain[7])
    assert replica.alerts == []


def test_a_source_that_serves_past_the_head_keeps_the_note_waiting(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    # Records served but not yet covering the note's size: not unserved, the note is no aside.
    redis = MemorySource("redis", {LEDGER: chain[:7]})
    replica, clock = _quiet(make_replica, chain, redis)
    follower = replica.follower
    follower.take_checkpoint(LEDGER, signed(chain[9]).note, "redis", catch_up=False)
    for _ in range(3):
        follower.catch_up_all()
        clock.now += 31.0
    assert follower.checkpoint_of(LEDGER) == signed(chain[9])
    assert follower.behind() == {LEDGER: 5}  # 5..9: the store holds 0..4
