"""Follower: a replica's ChainStore brought up to each ledger's latest checkpoint from feed messages and sources.

The records are real: a home ChainStore (origin "home", difficulty 0) places them, and the
checkpoints are real C2SP signed notes by the home's key (node.witness.HomeSigner) over the
Merkle root of the chain up to them. The sources are in memory, and the feed messages are
built directly, as the replica process would hand them over after decode_message. Nothing
is stored, whatever its source (the home included), until a verified checkpoint covers it.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import gc
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from vledger.broker.feed import FeedCheckpoints, FeedRecord
from vledger.broker.replication import Alert
from vledger.broker.signing import SigningKey, new_signing_key
from vledger.config.settings import PROTOCOL_LIMITS, Limits
from vledger.ingest import follow
from vledger.ingest.follow import CATCH_UP_IN_FLIGHT, LIVE_IN_FLIGHT, NOT_RELAYED, OK, Follower, Page, _records_on_chain
from vledger.ingest.page_check import Checked, PageChecker
from vledger.node.checkpoint_log import COSIGNED, EVIDENCE
from vledger.node.errors import StoreError, TreeMismatchError
from vledger.node.key_rotation import ROTATION_KIND
from vledger.node.ledger import LedgerRules
from vledger.node.note import parse_note
from vledger.node.record import Content, Entry, Record, columns_of_fields, decode_record, fields_of_checked
from vledger.node.store import ChainStore, Receipt, grow_kept
from vledger.node.storefile import DB_NAME
from vledger.node.tree import Frontier, leaf_hash, subtree_hashes, verify_consistency
from vledger.node.witness import CheckpointKeys, Contradiction, HomeSigner, SignedCheckpoint, WitnessSigner, home_key

LIMITS = Limits()
T0 = 1_790_000_000_000
CLUSTER = "test"
LEDGER = "ledger-a"
OTHER = "ledger-b"
HOME = "home"  # every ledger's home node here
PEER = "ingest-2"  # another node of the cluster, with a signing key of its own: not these ledgers' home
EVIL = "ingest-evil"
REPLICA = "replica-1"
HOME_KEY = new_signing_key()
PEER_KEY = new_signing_key()
KEYS = CheckpointKeys(CLUSTER, lambda ledger: home_key(CLUSTER, ledger, HOME_KEY.public.raw))
KNOWN: dict[bytes, Record] = {}  # every record made here, by hash: a checkpoint's tree follows prev links


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
        records = list(store.range(ledger))
    KNOWN.update((r.hash, r) for r in records)
    return records


def forged(record: Record, prev: bytes = b"\x11" * 32) -> Record:
    """The same entry placed after another record: well formed, checksummed, but not on this chain."""
    placed = record.entry().place(record.height, prev, record.accepted, record.origin)
    KNOWN[placed.hash] = placed
    return placed


def minted(after: Record, origin: str = EVIL) -> Record:
    """A record a peer placed itself right after ``after``: valid checksum, work and link; not the home's."""
    content = Content(after.ledger, "note", {"n": 999}, "Mallory.1", "minted-1", T0 + 999)
    placed = Entry.prepare(content, 0, LIMITS).place(after.height + 1, after.link, after.accepted + 1, origin)
    KNOWN[placed.hash] = placed
    return placed


def root_up_to(record: Record) -> bytes:
    """The Merkle root of the chain that ends at ``record`` (its records found by their prev links)."""
    prefix = [record]
    while prefix[-1].height > 0:
        prefix.append(KNOWN[prefix[-1].prev])
    frontier = Frontier()
    for r in reversed(prefix):
        frontier.append(leaf_hash(r.encode()))
    return frontier.root()


def signed(record: Record, key: SigningKey = HOME_KEY, cluster: str = CLUSTER) -> SignedCheckpoint:
    """``key``'s checkpoint of the chain up to ``record``, signed for ``cluster``'s origin."""
    return HomeSigner(cluster, key.seed).sign(record.ledger, record.height + 1, root_up_to(record))


def flipped(s: SignedCheckpoint) -> SignedCheckpoint:
    """``s`` with one bit of its signature changed."""
    note = parse_note(s.note)
    (line,) = note.signatures
    changed = dataclasses.replace(line, signature=bytes([line.signature[0] ^ 1]) + line.signature[1:])
    return dataclasses.replace(s, note=dataclasses.replace(note, signatures=(changed,)).encode())


def resized(s: SignedCheckpoint, size: int) -> SignedCheckpoint:
    """``s``'s signature under a body that claims another size."""
    note = parse_note(s.note)
    origin, _, root, _ = note.text.split("\n")
    text = f"{origin}\n{size}\n{root}\n"
    return SignedCheckpoint(s.ledger, size, base64.b64decode(root), dataclasses.replace(note, text=text).encode())


def heads(*checkpoints: SignedCheckpoint, sender: str = HOME) -> FeedCheckpoints:
    return FeedCheckpoints(sender, {c.ledger: c.note for c in checkpoints})


def live(record: Record, sender: str = HOME, hops: int = 1, height: int | None = None) -> FeedRecord:
    return FeedRecord(record.ledger, record.height if height is None else height, hops, sender, record.encode())


class MemorySource:
    """A source in memory: serves ``chains`` from ``first`` on (a trimmed stream), or fails.

    ``signed`` are the checkpoints it holds: a page carries those whose size ends among its
    rows (as a stream entry or a ``range`` reply does), and :meth:`checkpoints` the largest of
    each ledger.
    """

    def __init__(
        self,
        name: str,
        chains: dict[str, list[Record]],
        *,
        first: int = 0,
        fail: bool = False,
        signed: list[SignedCheckpoint] | None = None,
    ) -> None:
        self.name = name
        self.chains = chains
        self.first = first
        self.fail = fail
        self.signed = list(signed or [])
        self.fetches: list[tuple[str, int, int]] = []

    def fetch(self, ledger: str, start: int, count: int) -> Page:
        self.fetches.append((ledger, start, count))
        if self.fail:
            raise OSError(f"{self.name} is down")
        rows = [(r.height, r.encode()) for r in self.chains.get(ledger, []) if r.height >= max(start, self.first)]
        rows = rows[:count]
        heights = {height for height, _ in rows}
        return Page(rows, [s.note for s in self.signed if s.ledger == ledger and s.height in heights])

    def checkpoints(self) -> dict[str, bytes]:
        if self.fail:
            raise OSError(f"{self.name} is down")
        best: dict[str, SignedCheckpoint] = {}
        for s in self.signed:
            if s.ledger not in best or s.size > best[s.ledger].size:
                best[s.ledger] = s
        return {ledger: s.note for ledger, s in best.items()}


@dataclasses.dataclass
class Replica:
    store: ChainStore
    follower: Follower
    stored: list[tuple[list[int], int]]  # (heights, hops) of each on_stored call
    alerts: list[Alert]
    verified: list[SignedCheckpoint]  # each on_verified call: what a witness may cosign
    resolved: list[str] = dataclasses.field(default_factory=list)  # keys the follower closed

    def heights(self, ledger: str = LEDGER) -> list[int]:
        return [r.height for r in self.store.range(ledger)]

    def found(self) -> list[tuple[int, str, str]]:
        """Each alert as (height, what, source)."""
        return [(a.height, a.what, a.source) for a in self.alerts]


MakeReplica = Callable[..., Replica]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    return home_chain(tmp_path_factory.mktemp("home-a"), LEDGER, 12)


@pytest.fixture(scope="module")
def other_chain(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    return home_chain(tmp_path_factory.mktemp("home-b"), OTHER, 4)


@pytest.fixture
def make_replica(tmp_path: Path, checker: PageChecker | None) -> Iterator[MakeReplica]:
    made: list[ChainStore] = []

    def make(
        *sources: MemorySource,
        batch: int = 1000,
        keys: CheckpointKeys = KEYS,
        stopping: Callable[[], bool] = lambda: False,
    ) -> Replica:
        store = ChainStore(tmp_path / f"replica-{len(made)}")
        made.append(store)
        stored: list[tuple[list[int], int]] = []
        alerts: list[Alert] = []
        verified: list[SignedCheckpoint] = []
        resolved: list[str] = []
        follower = Follower(
            REPLICA,
            store,
            sources,
            keys=keys,
            home_of=lambda ledger: HOME,
            on_stored=lambda records, hops: stored.append(([r.height for r in records], hops)),
            on_alert=alerts.append,
            on_resolve=lambda keys, upto: resolved.extend(keys),
            on_verified=verified.append,
            batch=batch,
            stopping=stopping,
            checker=checker,
        )
        return Replica(store, follower, stored, alerts, verified, resolved)

    yield make
    for store in made:
        store.close()


def held_up_to(replica: Replica, chain: list[Record], height: int) -> None:
    """Bring ``replica`` to ``chain[:height + 1]`` over the feed, checkpointed; check that nothing else happened."""
    replica.follower.receive([*(live(r) for r in chain[: height + 1]), heads(signed(chain[height]))])
    assert replica.heights() == list(range(height + 1))
    assert replica.alerts == []


# --- the live feed, checkpointed -------------------------------------------------------------------------


def test_records_in_order_are_stored_once_their_checkpoint_comes(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    source = MemorySource("redis", {LEDGER: chain})
    replica = make_replica(source)
    replica.follower.receive([live(r) for r in chain[:3]])
    assert replica.heights() == [] and replica.stored == []  # anyone can compute these: they wait
    replica.follower.receive([heads(signed(chain[2]))])
    replica.follower.receive(
        [*(live(r, hops=2) for r in chain[3:5]), heads(signed(chain[4]))]
    )  # records, then checkpoint
    assert replica.heights() == [0, 1, 2, 3, 4]
    assert [replica.store.get(LEDGER, h) for h in range(5)] == chain[:5]
    assert replica.stored == [([0, 1, 2], 1), ([3, 4], 2)]
    assert source.fetches == [] and replica.alerts == []
    assert replica.follower.stored == 5
    assert replica.follower.checkpoint_of(LEDGER) == signed(chain[4]) and replica.follower.checkpoints() == [
        signed(chain[4])
    ]


def test_a_checkpoint_vouches_for_the_whole_verified_run_below_it(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    replica = make_replica(MemorySource("redis", {}))
    replica.follower.receive([live(r) for r in chain[:8]])
    assert replica.heights() == []
    replica.follower.receive([heads(signed(chain[5]))])  # inside the run: what is above it still waits
    assert replica.heights() == list(range(6))
    assert replica.stored == [([0, 1, 2, 3, 4, 5], 1)]
    replica.follower.receive([heads(signed(chain[7]))])
    assert replica.heights() == list(range(8))
    assert replica.stored == [([0, 1, 2, 3, 4, 5], 1), ([6, 7], 1)]
    assert replica.alerts == []


def test_a_home_checkpoint_relayed_by_another_node_is_as_good(make_replica: MakeReplica, chain: list[Record]) -> None:
    replica = make_replica(MemorySource("redis", {}))
    replica.follower.receive([*(live(r, sender=PEER, hops=2) for r in chain[:3]), heads(signed(chain[2]), sender=PEER)])
    assert replica.heights() == [0, 1, 2]
    assert replica.stored == [([0, 1, 2], 2)] and replica.alerts == []


def test_a_batch_out_of_order_is_stored_in_order(make_replica: MakeReplica, chain: list[Record]) -> None:
    replica = make_replica(MemorySource("redis", {}))
    replica.follower.receive([heads(signed(chain[3])), *(live(chain[h]) for h in (2, 0, 3, 1))])
    assert replica.heights() == [0, 1, 2, 3]
    assert replica.stored == [([0, 1, 2, 3], 1)]
    assert replica.alerts == []


def test_duplicates_are_dropped(make_replica: MakeReplica, chain: list[Record]) -> None:
    replica = make_replica(MemorySource("redis", {LEDGER: chain}))
    held_up_to(replica, chain, 3)
    replica.follower.receive([live(r, sender="replica-9", hops=2) for r in chain[:4]])  # by another path
    replica.follower.receive([live(chain[1]), live(chain[1]), live(chain[4]), live(chain[4])])  # twice in a batch
    replica.follower.receive([live(chain[4], sender="replica-9", hops=2)])  # already pending
    replica.follower.receive([heads(signed(chain[4]))])
    assert replica.heights() == [0, 1, 2, 3, 4]
    assert replica.stored == [([0, 1, 2, 3], 1), ([4], 1)]  # nothing stored twice, so nothing relayed twice
    assert replica.follower.duplicates == 6
    assert replica.alerts == []


def test_a_gap_is_filled_from_the_first_source_up_to_the_checkpoint(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    first, second = MemorySource("redis", {LEDGER: chain}), MemorySource(HOME, {LEDGER: chain})
    replica = make_replica(first, second)
    held_up_to(replica, chain, 2)
    replica.follower.receive([live(chain[7]), live(chain[8])])
    assert replica.heights() == [0, 1, 2] and first.fetches == []  # a live height is no target: the checkpoint is
    replica.follower.receive([heads(signed(chain[8]))])
    assert replica.heights() == list(range(9))
    assert first.fetches == [(LEDGER, 3, 6)]  # heights 3..8, what the checkpoint says the chain has
    assert second.fetches == []
    assert replica.stored == [([0, 1, 2], 1), ([3, 4, 5, 6, 7, 8], NOT_RELAYED)]
    assert replica.alerts == []


def test_a_trimmed_first_source_falls_back_to_the_second(make_replica: MakeReplica, chain: list[Record]) -> None:
    trimmed = MemorySource("redis", {LEDGER: chain}, first=4)
    home = MemorySource(HOME, {LEDGER: chain})
    replica = make_replica(trimmed, home, batch=3)
    replica.follower.receive([live(chain[6]), heads(signed(chain[6]))])
    assert replica.heights() == list(range(7))
    assert trimmed.fetches == [(LEDGER, 0, 3)]  # began above 0: ask the next source
    assert home.fetches == [(LEDGER, 0, 3), (LEDGER, 3, 3), (LEDGER, 6, 1)]
    assert replica.alerts == []


def test_a_source_that_fails_falls_back_to_the_next(make_replica: MakeReplica, chain: list[Record]) -> None:
    down, home = MemorySource("redis", {LEDGER: chain}, fail=True), MemorySource(HOME, {LEDGER: chain})
    replica = make_replica(down, home)
    replica.follower.receive([heads(signed(chain[3]))])
    assert replica.heights() == [0, 1, 2, 3]
    assert down.fetches == [(LEDGER, 0, 4)] and home.fetches == [(LEDGER, 0, 4)]


def test_a_gap_no_source_can_fill_stays_until_one_can(make_replica: MakeReplica, chain: list[Record]) -> None:
    source = MemorySource("redis", {LEDGER: chain[:2]}, signed=[signed(chain[1])])
    replica = make_replica(source)
    replica.follower.start()
    assert replica.heights() == [0, 1]
    replica.follower.receive([live(chain[5])])
    assert replica.follower.behind() == {}  # a live record above a gap is no target
    replica.follower.receive([heads(signed(chain[5]))])
    assert replica.heights() == [0, 1]  # nobody has 2..5 yet
    assert replica.follower.behind() == {LEDGER: 4}
    assert replica.follower.status() == {"current": False, "behind": {LEDGER: 4}}
    source.chains[LEDGER] = chain
    replica.follower.receive([heads(signed(chain[5]))])
    assert replica.heights() == list(range(6))
    assert replica.follower.behind() == {}
    assert replica.follower.status() == {"current": True, "behind": {}}


# --- what is not the home's chain ------------------------------------------------------------------


def test_a_forged_record_on_the_feed_is_refused_alerted_and_the_true_one_fetched(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    source = MemorySource("redis", {LEDGER: chain})
    replica = make_replica(source)
    held_up_to(replica, chain, 2)
    fake = forged(chain[3])
    assert fake.hash != chain[3].hash
    replica.follower.receive([live(fake, sender=EVIL), live(chain[4])])
    assert replica.heights() == [0, 1, 2]
    (alert,) = replica.alerts
    assert (alert.node, alert.ledger, alert.height, alert.what, alert.source) == (REPLICA, LEDGER, 3, "bad_link", EVIL)
    assert alert.detail and alert.expected == ""  # nothing was held at height 3 when it came
    assert alert.found == fake.hash.hex()
    replica.follower.receive([heads(signed(chain[4]))])
    assert replica.heights() == [0, 1, 2, 3, 4]
    assert replica.store.get(LEDGER, 3) == chain[3]  # the true record, from the source
    assert source.fetches == [(LEDGER, 3, 2)]  # the whole run, 3 and 4, from the source
    # Sent again, it now meets the true record at a held height: a conflict, reported once.
    replica.follower.receive([live(fake, sender=EVIL)])
    replica.follower.receive([live(fake, sender=EVIL)])
    assert [(a.height, a.what, a.source, a.expected) for a in replica.alerts[1:]] == [
        (3, "record_conflict", EVIL, chain[3].hash.hex())
    ]
    assert replica.store.get(LEDGER, 3) == chain[3]


def test_a_forged_record_from_a_source_is_alerted_and_the_next_source_asked(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    bad = MemorySource("redis", {LEDGER: [*chain[:2], forged(chain[2]), *chain[3:6]]})
    good = MemorySource(HOME, {LEDGER: chain[:6]})
    replica = make_replica(bad, good)
    held_up_to(replica, chain, 1)
    replica.follower.receive([heads(signed(chain[5]))])
    assert replica.heights() == list(range(6))
    assert [replica.store.get(LEDGER, h) for h in range(6)] == chain[:6]
    assert replica.found() == [(2, "bad_link", "redis")]
    assert bad.fetches == [(LEDGER, 2, 4)] and good.fetches == [(LEDGER, 2, 4)]
    assert replica.stored == [([0, 1], 1), ([2, 3, 4, 5], NOT_RELAYED)]


def test_an_envelope_that_lies_about_the_height_is_refused(make_replica: MakeReplica, chain: list[Record]) -> None:
    source = MemorySource("redis", {LEDGER: chain[:3]})
    replica = make_replica(source)
    held_up_to(replica, chain, 1)
    replica.follower.receive([live(chain[1], sender=EVIL, height=2)])  # record 1 said to be 2
    assert replica.heights() == [0, 1]
    assert replica.found() == [(2, "record_conflict", EVIL)]
    assert replica.follower.behind() == {} and source.fetches == []
    replica.follower.receive([heads(signed(chain[2]))])
    assert replica.heights() == [0, 1, 2]  # 2 fetched from the source
    assert replica.store.get(LEDGER, 2) == chain[2]


def test_a_conflicting_record_at_a_held_height_raises_a_record_conflict_alert(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    replica = make_replica(MemorySource("redis", {LEDGER: chain}))
    held_up_to(replica, chain, 3)
    other = chain[2].entry().place(2, chain[1].hash, chain[2].accepted + 1, HOME)  # a valid next record, not this one
    assert other.encode() != chain[2].encode()
    replica.follower.receive([live(other, sender=PEER)])
    assert replica.heights() == [0, 1, 2, 3]
    assert replica.store.get(LEDGER, 2) == chain[2]  # what is held stays
    (alert,) = replica.alerts
    assert (alert.node, alert.ledger, alert.height, alert.what, alert.source) == (
        REPLICA,
        LEDGER,
        2,
        "record_conflict",
        PEER,
    )
    assert alert.expected == chain[2].hash.hex() and alert.found == other.hash.hex()
    replica.follower.receive([live(other, sender=PEER)])
    assert len(replica.alerts) == 1  # reported once


def test_a_record_changed_with_its_link_kept_is_named_by_its_leaf_hash(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    """sm31: a follower's record_conflict named both records by the link they claim, the same one
    for a record whose content was changed and its link kept: the alert showed no difference.
    Named as the verifier's are (node/conflict.py): their leaf hashes, and what differs."""
    replica = make_replica(MemorySource("redis", {LEDGER: chain}))
    held_up_to(replica, chain, 3)
    changed = dataclasses.replace(chain[2], content_bytes=chain[3].content_bytes)
    replica.follower.receive([live(changed, sender=PEER)])
    assert replica.store.get(LEDGER, 2) == chain[2]
    (alert,) = replica.alerts
    assert (alert.height, alert.what, alert.source) == (2, "record_conflict", PEER)
    assert alert.expected == "leaf:" + leaf_hash(chain[2].encode()).hex() != alert.found
    assert alert.found == "leaf:" + leaf_hash(changed.encode()).hex()
    assert alert.detail.endswith(": the same link, another content (expected and found: their leaf hashes)")


@pytest.mark.parametrize("true_checkpoint_at", [3, 4], ids=["checkpointed-at-its-height", "checkpointed-above-it"])
def test_a_minted_record_at_head_plus_one_is_never_stored_and_reported_once_the_true_one_is(
    make_replica: MakeReplica, chain: list[Record], true_checkpoint_at: int
) -> None:
    source = MemorySource("redis", {LEDGER: chain})
    replica = make_replica(source)
    replica.follower.start()
    held_up_to(replica, chain, 2)
    fake = minted(chain[2])
    assert fake.height == 3 and fake.prev == chain[2].link and fake.hash != chain[3].hash  # it verifies as the next
    replica.follower.receive([live(fake, sender=EVIL, hops=1)])
    replica.follower.receive([heads(signed(chain[2]))])  # the home's checkpoint below it: no help
    replica.follower.receive([heads(signed(fake, key=PEER_KEY), sender=EVIL)])  # its maker's "checkpoint"
    assert replica.heights() == [0, 1, 2]
    assert replica.found() == [(3, "unverified_note", EVIL)]
    assert replica.follower.status() == {"current": True, "behind": {}}  # a pending record is no target
    assert source.fetches == []

    replica.follower.receive([heads(signed(chain[true_checkpoint_at]))])  # the home's chain goes on
    assert replica.heights() == list(range(true_checkpoint_at + 1))
    assert replica.store.get(LEDGER, 3) == chain[3]
    assert replica.store.get_by_hash(fake.hash) is None
    conflict = replica.alerts[-1]
    assert (conflict.height, conflict.what, conflict.source) == (3, "record_conflict", EVIL)
    assert conflict.found == fake.hash.hex() and conflict.expected == chain[3].hash.hex()
    assert replica.found()[1:] == [(3, "record_conflict", EVIL)]  # and nothing else
    # Offered again, it meets the true record at a held height: the same finding, not told twice.
    replica.follower.receive([live(fake, sender=EVIL)])
    assert len(replica.alerts) == 2


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        pytest.param(lambda r: flipped(signed(r)), "bad_note_signature", id="a-changed-signature"),
        pytest.param(lambda r: resized(signed(r), r.height + 2), "bad_note_signature", id="another-size"),
        pytest.param(lambda r: dataclasses.replace(signed(r), ledger=OTHER), "unverified_note", id="another-ledger"),
        pytest.param(lambda r: signed(r, key=PEER_KEY), "unverified_note", id="signed-with-a-key-not-the-homes"),
        pytest.param(lambda r: signed(r, cluster="other"), "unverified_note", id="the-homes-key-another-origin"),
    ],
)
def test_a_checkpoint_that_does_not_verify_is_refused_and_changes_no_target(
    make_replica: MakeReplica, chain: list[Record], bad: Callable[[Record], SignedCheckpoint], code: str
) -> None:
    source = MemorySource("redis", {LEDGER: chain})
    replica = make_replica(source)
    replica.follower.start()
    held_up_to(replica, chain, 2)
    replica.follower.receive([live(r) for r in chain[3:6]])  # pending, waiting for a checkpoint
    forgery = bad(chain[5])
    replica.follower.receive([heads(forgery, sender=EVIL)])
    assert [(a.ledger, a.height, a.what, a.source) for a in replica.alerts] == [
        (forgery.ledger, forgery.height, code, EVIL)
    ]
    assert replica.heights() == [0, 1, 2]  # the pending run stays unstored
    assert replica.follower.checkpoint_of(LEDGER) == signed(chain[2]) and replica.follower.checkpoint_of(OTHER) is None
    assert replica.follower.target(LEDGER) == 2 and replica.follower.target(OTHER) == -1
    assert replica.follower.status() == {"current": True, "behind": {}}
    assert source.fetches == []
    replica.follower.receive([heads(signed(chain[5]))])  # the true checkpoint still works
    assert replica.heights() == list(range(6))


def test_a_checkpoint_of_a_home_without_a_key_is_refused(make_replica: MakeReplica, chain: list[Record]) -> None:
    keys = CheckpointKeys(CLUSTER, lambda ledger: None)  # the home's .sign.pub is missing, no genesis pins one
    replica = make_replica(MemorySource("redis", {LEDGER: chain}), keys=keys)
    replica.follower.receive([*(live(r) for r in chain[:3]), heads(signed(chain[2]))])
    assert replica.heights() == []
    assert replica.found() == [(2, "bad_note_key", HOME)]
    assert replica.follower.target(LEDGER) == -1


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(FeedRecord(LEDGER, 10**12, 2, EVIL, b"\x80"), id="far-height-no-record"),
        pytest.param(FeedRecord(OTHER, 10**12, 2, EVIL, b"\x80"), id="far-height-unknown-ledger"),
        pytest.param(FeedRecord(LEDGER, 3, 2, EVIL, b"\x80"), id="next-height-no-record"),
        pytest.param(FeedRecord(LEDGER, 3, 2, EVIL, b"garbage"), id="next-height-garbage"),
    ],
)
def test_a_forged_feed_height_creates_no_target(
    make_replica: MakeReplica, chain: list[Record], message: FeedRecord
) -> None:
    source = MemorySource("redis", {LEDGER: chain[:3]}, signed=[signed(chain[2])])
    replica = make_replica(source)
    replica.follower.start()
    assert replica.heights() == [0, 1, 2]
    fetched = list(source.fetches)
    replica.follower.receive([message])
    replica.follower.receive([live(chain[1], sender=EVIL, height=10**12)])  # a true record at a false height
    assert replica.follower.status() == {"current": True, "behind": {}}
    assert replica.follower.target(LEDGER) == 2 and replica.follower.target(OTHER) == -1
    assert source.fetches == fetched
    assert replica.heights() == [0, 1, 2] and OTHER not in replica.store.ledgers()
    assert all(a.source == EVIL for a in replica.alerts)  # a record at the next height is reported


def test_a_checkpoint_of_another_tree_at_a_held_size_is_evidence_against_the_home(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    replica = make_replica(MemorySource("redis", {LEDGER: chain}))
    held_up_to(replica, chain, 4)
    other = minted(chain[1], origin=HOME)  # another record on the same prefix
    lie = signed(other)  # the home's key on a tree of size 3 whose last leaf is another record
    replica.follower.receive([heads(lie, sender=PEER)])
    (alert,) = replica.alerts
    assert (alert.ledger, alert.height, alert.what, alert.source) == (LEDGER, 2, "equivocation", HOME)
    assert alert.expected == root_up_to(chain[2]).hex() and alert.found == lie.root.hex()
    kept = replica.store.checkpoints.all(LEDGER, EVIDENCE)
    assert [c.note for c in kept] == [lie.note, signed(chain[4]).note]  # both notes, verbatim
    assert replica.heights() == [0, 1, 2, 3, 4] and replica.store.get(LEDGER, 2) == chain[2]
    assert replica.follower.checkpoint_of(LEDGER) == signed(chain[4])  # the best checkpoint stays
    replica.follower.receive([heads(signed(chain[2]))])  # the home's checkpoint of what is held: all is well
    assert len(replica.alerts) == 1
    assert replica.verified[-1] == signed(chain[2])  # and a witness may cosign it


def test_a_forged_note_one_size_ahead_gives_way_to_the_home_s_true_note_of_that_size(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    # Outsider o18 F3: with the home's key, a note of the next size with another root, taken first,
    # kept the follower waiting on it ("no checkpoint covers height N yet") until the next write.
    replica = make_replica(MemorySource("redis", {LEDGER: chain}))
    held_up_to(replica, chain, 4)
    lie = HomeSigner(CLUSTER, HOME_KEY.seed).sign(LEDGER, 7, b"\x42" * 32)
    replica.follower.receive([heads(lie, sender=PEER)])
    replica.follower.receive([live(chain[5]), live(chain[6])])
    assert replica.heights() == list(range(5))  # nothing vouches for 5 and 6 yet
    replica.follower.receive([heads(signed(chain[6]))])  # the home's true note of size 7
    assert replica.heights() == list(range(7))
    assert replica.follower.checkpoint_of(LEDGER) == signed(chain[6])
    # Two notes of one size signed with the home's key: the one its tree does not have is evidence.
    assert [(a.height, a.what) for a in replica.alerts] == [(6, "equivocation")]
    assert lie.note in [c.note for c in replica.store.checkpoints.all(LEDGER, EVIDENCE)]


# --- no source is trusted --------------------------------------------------------------------------


def test_even_the_home_node_s_records_wait_for_a_checkpoint(make_replica: MakeReplica, chain: list[Record]) -> None:
    home = MemorySource(HOME, {LEDGER: chain})
    replica = make_replica(home, batch=3)
    assert replica.follower.catch_up(LEDGER, 5) is False
    assert replica.heights() == [] and replica.stored == []
    home.signed = [signed(chain[2]), signed(chain[4])]  # a range page carries the checkpoint among its records
    replica2 = make_replica(home, batch=3)
    assert replica2.follower.catch_up(LEDGER, 5) is True
    assert replica2.stored == [([0, 1, 2], NOT_RELAYED), ([3, 4], NOT_RELAYED)]  # stored page by page
    assert replica2.verified == [signed(chain[2]), signed(chain[4])] and replica2.alerts == []


def test_another_source_without_a_checkpoint_stores_nothing(make_replica: MakeReplica, chain: list[Record]) -> None:
    relay = MemorySource(PEER, {LEDGER: chain})
    replica = make_replica(relay)
    assert replica.follower.catch_up(LEDGER, 5) is False
    assert replica.heights() == [] and replica.stored == []  # verified, and waiting for a checkpoint
    replica.follower.catch_up_all()  # no checkpoint known: no target, nothing fetched
    assert relay.fetches == [(LEDGER, 0, 5)]
    relay.signed = [signed(chain[4])]
    replica.follower.start()  # the relay now holds the home's checkpoint: what waited is stored
    assert replica.heights() == [0, 1, 2, 3, 4]
    assert relay.fetches == [(LEDGER, 0, 5)]  # not fetched again
    assert replica.stored == [([0, 1, 2, 3, 4], NOT_RELAYED)] and replica.alerts == []


def test_the_home_is_checked_all_the_same(make_replica: MakeReplica, chain: list[Record]) -> None:
    home = MemorySource(HOME, {LEDGER: [*chain[:2], forged(chain[2]), *chain[3:5]]}, signed=[signed(chain[1])])
    replica = make_replica(home)
    assert replica.follower.catch_up(LEDGER, 5) is False
    assert replica.heights() == [0, 1]  # what its checkpoint covers before the forged row is stored
    assert replica.found() == [(2, "bad_link", HOME)]


# --- checkpoints and catch-up ----------------------------------------------------------------------------


def test_a_checkpoint_above_the_head_triggers_catch_up(
    make_replica: MakeReplica, chain: list[Record], other_chain: list[Record]
) -> None:
    source = MemorySource("redis", {LEDGER: chain, OTHER: other_chain})
    replica = make_replica(source)
    held_up_to(replica, chain, 1)
    replica.follower.receive([heads(signed(chain[7]), signed(other_chain[3]))])
    assert replica.heights(LEDGER) == list(range(8))
    assert replica.heights(OTHER) == [0, 1, 2, 3]  # a ledger not held before: from its genesis
    fetched = list(source.fetches)
    replica.follower.receive([heads(signed(chain[5]))])  # below the head, and of what is held: nothing to do
    assert source.fetches == fetched
    assert replica.follower.checkpoint_of(LEDGER) == signed(chain[7])
    assert replica.alerts == []


def test_start_catches_up_to_the_checkpoints_the_sources_hold(
    make_replica: MakeReplica, chain: list[Record], other_chain: list[Record]
) -> None:
    down = MemorySource("node-x", {}, fail=True)  # cannot say its checkpoints: skipped
    source = MemorySource(
        "redis",
        {LEDGER: chain, OTHER: other_chain},
        signed=[signed(chain[4]), signed(chain[11]), signed(other_chain[3])],
    )
    replica = make_replica(down, source)
    assert replica.follower.status() == {"current": False, "behind": {}}  # before the start-up catch-up
    replica.follower.start()
    assert replica.heights(LEDGER) == list(range(12)) and replica.heights(OTHER) == [0, 1, 2, 3]
    assert replica.follower.caught_up
    assert replica.follower.status() == {"current": True, "behind": {}}
    assert replica.follower.checkpoints() == [signed(chain[11]), signed(other_chain[3])]
    assert replica.alerts == []


def test_start_without_any_checkpoint_stays_where_it_is(make_replica: MakeReplica, chain: list[Record]) -> None:
    source = MemorySource("redis", {LEDGER: chain})  # records, but no checkpoint: nothing says they are the home's
    replica = make_replica(source)
    replica.follower.start()
    assert replica.heights() == [] and source.fetches == []
    assert replica.follower.status() == {"current": True, "behind": {}}


def test_status_says_how_far_behind(make_replica: MakeReplica, chain: list[Record]) -> None:
    source = MemorySource("redis", {LEDGER: chain[:5]}, signed=[signed(chain[4])])
    replica = make_replica(source)
    replica.follower.start()
    assert replica.heights() == list(range(5))
    assert replica.follower.status() == {"current": True, "behind": {}}
    replica.follower.receive([heads(signed(chain[9]))])  # no source has 5..9 yet
    assert replica.heights() == list(range(5))
    assert replica.follower.status() == {"current": False, "behind": {LEDGER: 5}}
    source.chains[LEDGER] = chain
    replica.follower.catch_up_all()
    assert replica.heights() == list(range(10))
    assert replica.follower.status() == {"current": True, "behind": {}}


def test_the_safety_net_leaves_the_feed_a_check_s_time(make_replica: MakeReplica, chain: list[Record]) -> None:
    redis = MemorySource("redis", {LEDGER: chain})
    replica = make_replica(redis)
    held_up_to(replica, chain, 1)
    replica.follower.take_checkpoint(LEDGER, signed(chain[4]).note, "redis", catch_up=False)  # Redis is ahead
    owed = replica.follower.catch_up_overdue({})
    assert replica.heights() == [0, 1] and redis.fetches == []  # 2..4 may still be on their way on the feed
    assert owed == {LEDGER: 4}
    replica.follower.receive([live(r) for r in chain[2:4]])  # the feed brings 2 and 3, and loses 4
    replica.follower.take_checkpoint(LEDGER, signed(chain[7]).note, "redis", catch_up=False)
    owed = replica.follower.catch_up_overdue(owed)
    assert replica.heights() == [0, 1, 2, 3, 4]  # what was owed a check ago: the lost 4 alone is fetched
    assert redis.fetches == [(LEDGER, 4, 1)]
    assert owed == {LEDGER: 7}
    replica.follower.catch_up_overdue(owed)
    assert replica.heights() == list(range(8))
    assert replica.follower.duplicates == 0 and replica.alerts == []


def test_the_safety_net_fetches_at_once_a_page_or_more_behind(make_replica: MakeReplica, chain: list[Record]) -> None:
    redis = MemorySource("redis", {LEDGER: chain})
    replica = make_replica(redis, batch=3)
    held_up_to(replica, chain, 1)
    replica.follower.receive([live(chain[2])])  # received, waiting for a checkpoint
    replica.follower.take_checkpoint(LEDGER, signed(chain[4]).note, "redis", catch_up=False)
    assert replica.follower.catch_up_overdue({}) == {LEDGER: 4}  # 2 ahead of what it received: left to the feed
    assert replica.heights() == [0, 1] and redis.fetches == []
    replica.follower.take_checkpoint(LEDGER, signed(chain[5]).note, "redis", catch_up=False)
    assert replica.follower.catch_up_overdue({}) == {LEDGER: 5}  # 3 ahead, a page: the feed is not keeping up
    assert replica.heights() == list(range(6))
    assert redis.fetches == [(LEDGER, 3, 3)]
    assert replica.alerts == []


def test_stopping_ends_a_catch_up_early(tmp_path: Path, chain: list[Record]) -> None:
    source = MemorySource("redis", {LEDGER: chain})
    with ChainStore(tmp_path / "replica") as store:
        follower = Follower(
            REPLICA,
            store,
            [source],
            keys=KEYS,
            home_of=lambda ledger: HOME,
            on_stored=lambda records, hops: None,
            on_alert=lambda a: None,
            stopping=lambda: True,
        )
        assert follower.catch_up(LEDGER, 10) is False
        assert store.size(LEDGER) == 0 and source.fetches == []


class StoppingSource(MemorySource):
    """A source that does not answer ``checkpoints`` (its timeout) while the process is told to stop."""

    def __init__(self, name: str, stop: list[bool]) -> None:
        super().__init__(name, {})
        self.stop = stop
        self.asked = 0

    def checkpoints(self) -> dict[str, bytes]:
        self.asked += 1
        self.stop.append(True)  # SIGTERM came while this source kept the start waiting
        raise OSError(f"{self.name}: no answer within 5 s")


def test_stopping_while_starting_asks_no_source_more(make_replica: MakeReplica) -> None:
    stop: list[bool] = []
    first, second = StoppingSource(HOME, stop), StoppingSource("relay-1", stop)
    replica = make_replica(first, second, stopping=lambda: bool(stop))
    replica.follower.start()
    assert (first.asked, second.asked) == (1, 0)
    assert first.fetches == [] and second.fetches == []


# --- catch-up never spins on one source --------------------------------------------------------------
#
# Found while writing these tests, and fixed: a source whose own chain breaks, or whose rows the
# checkpoint contradicts, is left for the next one (not asked again for ever); and a checkpoint below the
# highest one heard of still stores the run it covers.


def test_a_source_whose_own_rows_do_not_link_is_left_for_the_next(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    bad = MemorySource("redis", {LEDGER: [*chain[:2], forged(chain[2]), *chain[3:6]]})
    good = MemorySource(HOME, {LEDGER: chain[:6]})
    replica = make_replica(bad, good, stopping=lambda: len(bad.fetches) >= 20)
    replica.follower.receive([heads(signed(chain[5]))])
    assert bad.fetches == [(LEDGER, 0, 6)]
    assert replica.heights() == list(range(6))
    assert replica.found() == [(2, "bad_link", "redis")]


def test_a_source_that_serves_another_chain_than_the_checkpointed_one_is_left_for_the_next(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    fake = minted(chain[2])
    bad = MemorySource("redis", {LEDGER: [*chain[:3], fake]})  # verifies as a chain: not the home's
    good = MemorySource(HOME, {LEDGER: chain})
    replica = make_replica(bad, good, stopping=lambda: len(bad.fetches) >= 20)
    held_up_to(replica, chain, 2)
    replica.follower.receive([heads(signed(chain[3]))])
    assert bad.fetches == [(LEDGER, 3, 1)]
    assert replica.heights() == [0, 1, 2, 3] and replica.store.get(LEDGER, 3) == chain[3]
    (alert,) = replica.alerts
    assert (alert.height, alert.what, alert.source, alert.found) == (3, "record_conflict", "redis", fake.hash.hex())


def test_a_checkpoint_inside_the_pending_run_stores_it_even_when_a_higher_one_is_known(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    down = MemorySource("redis", {}, fail=True)  # no source can fetch 5..9: only the feed brings records
    replica = make_replica(down)
    replica.follower.receive([heads(signed(chain[9]))])  # a heartbeat, or Redis's latest checkpoint, came first
    replica.follower.receive([*(live(r) for r in chain[:5]), heads(signed(chain[4]))])  # a batch and its checkpoint
    assert replica.heights() == [0, 1, 2, 3, 4]
    assert replica.follower.behind() == {LEDGER: 5}


# --- when a follower's alerts resolve (PROTOCOL 10.5) ---------------------------------------------


def test_a_refused_record_alert_resolves_once_the_homes_record_is_stored_at_its_height(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    replica = make_replica(MemorySource("redis", {LEDGER: chain}))
    held_up_to(replica, chain, 2)
    replica.follower.receive([live(forged(chain[3]), sender=EVIL)])
    assert replica.found() == [(3, "bad_link", EVIL)] and replica.resolved == []
    replica.follower.receive([heads(signed(chain[4]))])  # the true 3 and 4 are stored
    assert replica.resolved == [f"{REPLICA}|{LEDGER}|bad_link"]


def test_a_refused_checkpoint_resolves_once_one_by_the_home_verifies_but_equivocation_stays_open(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    replica = make_replica(MemorySource("redis", {LEDGER: chain}))
    held_up_to(replica, chain, 4)
    replica.follower.receive([heads(flipped(signed(chain[4])), sender=EVIL)])
    assert [a.what for a in replica.alerts] == ["bad_note_signature"] and replica.resolved == []
    lie = signed(minted(chain[1], origin=HOME))  # the home's key on another tree of size 3: it verifies
    replica.follower.receive([heads(lie, sender=PEER)])
    assert [a.what for a in replica.alerts] == ["bad_note_signature", "equivocation"]
    assert replica.resolved == [f"{REPLICA}|{LEDGER}|bad_note_signature"]
    replica.follower.receive([heads(signed(chain[3]))])  # vouches for this copy, but the home signed both
    assert replica.resolved == [f"{REPLICA}|{LEDGER}|bad_note_signature"]  # the evidence is the operator's


def test_a_fault_of_the_own_copy_resolves_once_a_checkpoint_at_or_above_it_has_the_copy_s_root(
    make_replica: MakeReplica, chain: list[Record], monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = make_replica(MemorySource("redis", {LEDGER: chain}))
    held_up_to(replica, chain, 4)
    root = replica.store.root

    def damaged(ledger: str, size: int | None = None) -> bytes:
        raise TreeMismatchError("the stored subtrees are not those of the records")

    monkeypatch.setattr(replica.store, "root", damaged)  # rows gone under the store
    replica.follower.receive([heads(signed(chain[3]))])
    assert replica.found() == [(3, "tree_mismatch", REPLICA)] and replica.resolved == []
    monkeypatch.setattr(replica.store, "root", root)  # repaired
    replica.follower.receive([heads(signed(chain[2]))])  # below the fault: says nothing of height 3
    assert replica.resolved == []
    replica.follower.receive([heads(signed(chain[3]))])  # the home vouches for this copy up to 3
    assert replica.resolved == [f"{REPLICA}|{LEDGER}|tree_mismatch"]


# --- who is blamed when a copy and a checkpoint disagree ------------------------------------------------

WITNESS = WitnessSigner(f"{CLUSTER}/witness/{REPLICA}", new_signing_key().seed)


def cosigned_up_to(replica: Replica, chain: list[Record], *heights: int) -> None:
    """Keep in ``replica``'s store its cosignature of the home's checkpoint at each of ``heights``,
    as its witness does (the home's note with a cosignature line)."""
    for height in heights:
        checkpoint = signed(chain[height])
        note = WITNESS.cosign(checkpoint, T0 // 1000)
        replica.store.checkpoints.keep(LEDGER, COSIGNED, checkpoint.size, checkpoint.root, note)


def restarted(replica: Replica, *sources: MemorySource, change: Callable[[Path], None] = lambda path: None) -> Replica:
    """``replica``'s node stopped, its store's file changed by ``change``, then started again: a
    follower that remembers nothing of its earlier run, on the store as it now opens."""
    directory = replica.store.directory
    replica.store.close()
    change(directory / DB_NAME)
    store = ChainStore(directory, cut_back=True)  # as a follower's node opens it (ingest/replica.py)
    again = Replica(store, replica.follower, [], [], [])
    proofs: list[Contradiction | None] = []
    again.follower = Follower(
        REPLICA,
        store,
        sources,
        keys=KEYS,
        home_of=lambda ledger: HOME,
        on_stored=lambda records, hops: again.stored.append(([r.height for r in records], hops)),
        on_alert=again.alerts.append,
        on_resolve=lambda keys, upto: again.resolved.extend(keys),
        on_evidence=lambda checkpoint, source, proof: proofs.append(proof),
        on_verified=again.verified.append,
    )
    again.proofs = proofs  # type: ignore[attr-defined]
    return again


def rewrite_tail(start: int, *, forget_checkpoints: bool) -> Callable[[Path], None]:
    """Re-make a store's records from ``start`` on, consistently (other content, fresh checksums,
    work and links, each on the forged one before; the tree rebuilt when it opens), and maybe
    delete the checkpoint rows that covered them, as whoever rewrote it would."""

    def change(path: Path) -> None:
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT height, data FROM records WHERE ledger = ? ORDER BY height", (LEDGER,)).fetchall()
            prev = decode_record(rows[start - 1][1], PROTOCOL_LIMITS)
            for height, data in rows[start:]:
                true = decode_record(data, PROTOCOL_LIMITS)
                content = Content(LEDGER, "note", {"forged": height}, "Zoe.1", f"forged-{height}", T0 + height)
                record = Entry.prepare(content, 0, LIMITS).place(height, prev.link, true.accepted, true.origin)
                db.execute(
                    "UPDATE records SET data = ?, hash = ?, request_id = ? WHERE ledger = ? AND height = ?",
                    (record.encode(), record.hash, f"forged-{height}", LEDGER, height),
                )
                prev = record
            db.execute("DELETE FROM tree")
            db.execute("DELETE FROM meta WHERE key = 'tree'")
            if forget_checkpoints:
                db.execute("DELETE FROM checkpoints WHERE size > ?", (start,))

    return change


@pytest.mark.parametrize("forget_checkpoints", [True, False], ids=["rows-deleted", "rows-kept"])
def test_a_copy_whose_tail_was_rewritten_blames_itself_never_the_home_and_takes_nothing_more(
    make_replica: MakeReplica, chain: list[Record], forget_checkpoints: bool
) -> None:
    source = MemorySource(HOME, {LEDGER: chain}, signed=[signed(chain[9])])
    replica = make_replica()
    held_up_to(replica, chain, 7)
    cosigned_up_to(replica, chain, 3, 5, 7)
    replica = restarted(replica, source, change=rewrite_tail(6, forget_checkpoints=forget_checkpoints))
    assert replica.heights() == list(range(8)) and replica.store.get(LEDGER, 6) != chain[6]

    replica.follower.receive([heads(signed(chain[7]))])  # the home's honest checkpoint of what it holds
    (alert,) = replica.alerts
    assert (alert.node, alert.source, alert.what, alert.height) == (REPLICA, REPLICA, "store_contradicts_checkpoint", 7)
    assert alert.expected == signed(chain[7]).root.hex() and alert.found == replica.store.root(LEDGER, 8).hex()
    assert replica.store.checkpoints.all(LEDGER, EVIDENCE) == [] and replica.proofs == []  # type: ignore[attr-defined]

    # Until repaired it takes nothing: the home's next records do not link on the rewritten head,
    # and that is no fault of the home's; nor does it fetch, or call itself current.
    replica.follower.receive([live(chain[8]), live(chain[9]), heads(signed(chain[9])), heads(signed(chain[7]))])
    assert replica.follower.catch_up(LEDGER, 10) is False
    assert len(replica.alerts) == 1 and source.fetches == [] and replica.heights() == list(range(8))
    assert replica.follower.status() == {"current": False, "behind": {LEDGER: 2}}


def copied(frm: Path, to: Path) -> Callable[[Path], None]:
    """A change that copies a stopped store's file (with its -wal and -shm) from ``frm`` to ``to``
    (``cp -a``: a backup kept, or one put back)."""

    def change(path: Path) -> None:
        to.mkdir(exist_ok=True)
        for file in to.glob(f"{DB_NAME}*"):  # a -wal left there would be replayed over the copy
            file.unlink()
        for file in frm.glob(f"{DB_NAME}*"):
            shutil.copy2(file, to / file.name)

    return change


def test_a_copy_that_blamed_itself_resolves_its_alert_once_repaired_and_started_again(
    make_replica: MakeReplica, chain: list[Record], tmp_path: Path
) -> None:
    """outsider 25, H1: README's repair ("Started again, the node catches up past the checkpoint
    like any follower, and the next clean sweep resolves the alert") left the replica's own
    store_contradicts_checkpoint open for good: an earlier run raised it, and a follower resolved
    only its own run's. The run that opens the repaired store finds it in its open hash."""
    source = MemorySource(HOME, {LEDGER: chain}, signed=[signed(chain[9])])
    replica = make_replica()
    held_up_to(replica, chain, 7)
    directory, backup = replica.store.directory, tmp_path / "backup"
    replica = restarted(replica, change=copied(directory, backup))
    replica = restarted(replica, change=rewrite_tail(6, forget_checkpoints=True))
    replica.follower.receive([heads(signed(chain[7]))])
    (alert,) = replica.alerts
    assert (alert.what, alert.source) == ("store_contradicts_checkpoint", REPLICA)
    open_hash = {alert.key: {"id": "1-0", **alert.fields()}}

    still = restarted(replica)  # not repaired: its copy still contradicts the home, nothing resolves
    still.follower.carry_over(follow.own_copy_alerts(REPLICA, open_hash))
    still.follower.receive([heads(signed(chain[7]))])
    assert still.resolved == [] and still.found() == [(7, "store_contradicts_checkpoint", REPLICA)]

    repaired = restarted(still, source, change=copied(backup, directory))  # put back from a sound copy
    repaired.follower.carry_over(follow.own_copy_alerts(REPLICA, open_hash))
    repaired.follower.start()  # the home's checkpoint of 10 records vouches for the copy up to 7 and past it
    assert repaired.resolved == [alert.key] and repaired.alerts == []
    assert repaired.heights() == list(range(10))
    repaired.store.close()


def test_a_record_an_earlier_run_refused_is_resolved_once_the_home_s_checkpoint_vouches_for_the_copy(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    """outsider o13 F6: replica-2's bad_link of a forked record stayed open after `vledger repair
    replica-2 --restart`: a follower resolved only the refusals of its own run."""
    source = MemorySource(HOME, {LEDGER: chain}, signed=[signed(chain[9])])
    replica = make_replica()
    held_up_to(replica, chain, 7)
    key = f"{REPLICA}|{LEDGER}|bad_link"
    fields = {"id": "1-0", "node": REPLICA, "ledger": LEDGER, "what": "bad_link", "source": EVIL, "height": "5"}
    again = restarted(replica, source)
    again.follower.carry_over(follow.own_copy_alerts(REPLICA, {key: fields}))
    again.follower.start()  # the home's checkpoint of 10 records vouches for the copy past 5
    assert again.resolved == [key] and again.alerts == []
    again.store.close()


def test_only_a_nodes_own_alerts_about_its_own_copy_are_carried_over() -> None:
    def alert(node: str, ledger: str, what: str, source: str, height: object = "4") -> tuple[str, dict[str, object]]:
        return f"{node}|{ledger}|{what}", {
            "node": node,
            "ledger": ledger,
            "what": what,
            "source": source,
            "height": height,
        }

    alerts = dict(
        [
            alert(REPLICA, LEDGER, "store_contradicts_checkpoint", REPLICA, "7"),
            alert(REPLICA, OTHER, "tree_mismatch", REPLICA),
            alert(REPLICA, LEDGER, "bad_link", EVIL),  # a record it refused: resolved by the true one
            alert(REPLICA, OTHER, "equivocation", HOME),  # evidence against the home: the operator's
            alert(REPLICA, "", "store_damaged", REPLICA),  # the whole store: its opening resolves it
            alert(HOME, LEDGER, "equivocation", HOME),  # about the home
            alert(REPLICA, "zakat", "tree_mismatch", REPLICA, "four"),  # no height: the operator's
        ]
    )
    assert follow.own_copy_alerts(REPLICA, alerts) == {
        f"{REPLICA}|{LEDGER}|store_contradicts_checkpoint": 7,
        f"{REPLICA}|{OTHER}|tree_mismatch": 4,
        f"{REPLICA}|{LEDGER}|bad_link": 4,
    }


def test_a_checkpoint_that_contradicts_a_copy_the_store_proves_is_equivocation_even_after_a_restart(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    replica = make_replica()
    held_up_to(replica, chain, 7)
    cosigned_up_to(replica, chain, 7)
    replica = restarted(replica)  # nothing in memory: only the kept cosignature proves this copy
    lie = signed(minted(chain[4], origin=HOME))  # the home's key on another tree of size 6
    replica.follower.receive([heads(lie, sender=PEER)])
    (alert,) = replica.alerts
    assert (alert.node, alert.source, alert.what, alert.height) == (REPLICA, HOME, "equivocation", 5)
    assert alert.expected == root_up_to(chain[5]).hex() and alert.found == lie.root.hex()
    (proof,) = replica.proofs  # type: ignore[attr-defined]
    assert proof is not None and proof.checkpoint.size == 8 and proof.checkpoint.root == signed(chain[7]).root
    # Anyone can check it without this copy: the consistency proof leads from the copy's root at 6
    # to the root the home signed at 8, so no tree of the lie's root at 6 is a prefix of that one.
    verify_consistency(6, 8, root_up_to(chain[5]), signed(chain[7]).root, proof.proof)
    kept = {c.note for c in replica.store.checkpoints.all(LEDGER, EVIDENCE)}
    assert kept == {lie.note, proof.checkpoint.note}
    replica.follower.receive([heads(lie, sender=PEER)])  # again: told once
    assert len(replica.alerts) == 1


def test_two_checkpoints_of_one_size_and_two_roots_are_equivocation(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    replica = make_replica()
    held_up_to(replica, chain, 7)
    cosigned_up_to(replica, chain, 7)
    replica = restarted(replica)
    lie = signed(minted(chain[6], origin=HOME))  # another tree of size 8, the size the copy cosigned
    replica.follower.receive([heads(lie, sender=PEER)])
    assert [(a.what, a.source) for a in replica.alerts] == [("equivocation", HOME)]
    (proof,) = replica.proofs  # type: ignore[attr-defined]
    assert proof is not None and proof.checkpoint.size == 8 and proof.proof == []


def test_a_copy_that_keeps_no_note_of_the_home_at_or_above_the_size_blames_itself(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    replica = make_replica()
    held_up_to(replica, chain, 7)
    cosigned_up_to(replica, chain, 4)  # below the lie's size: it shows nothing of the tree at 6
    replica = restarted(replica)
    lie = signed(minted(chain[4], origin=HOME))
    replica.follower.receive([heads(lie, sender=PEER)])
    assert replica.found() == [(5, "store_contradicts_checkpoint", REPLICA)]


# --- catch-up in pages, with and without a page checker -------------------------------------------------


class CountingKeys(CheckpointKeys):
    """The home's key, counting each note it checks: which notes a follower checked."""

    def __init__(self) -> None:
        super().__init__(CLUSTER, lambda ledger: home_key(CLUSTER, ledger, HOME_KEY.public.raw))
        self.checked: list[bytes] = []

    def check(self, ledger: str, data: bytes) -> SignedCheckpoint:
        self.checked.append(data)
        return super().check(ledger, data)


class TamperedSource(MemorySource):
    """A MemorySource that serves other bytes at some heights."""

    def __init__(self, name: str, chains: dict[str, list[Record]], served: dict[int, bytes], **kwargs: object) -> None:
        super().__init__(name, chains, **kwargs)  # type: ignore[arg-type]
        self.served = served

    def fetch(self, ledger: str, start: int, count: int) -> Page:
        page = super().fetch(ledger, start, count)
        return Page([(h, self.served.get(h, data)) for h, data in page.rows], page.checkpoints)


@pytest.fixture(scope="module")
def long_chain(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    return home_chain(tmp_path_factory.mktemp("home-long"), LEDGER, 40)


def test_a_catch_up_in_pages_checks_every_note_its_pages_bring(
    make_replica: MakeReplica, long_chain: list[Record], checker: PageChecker | None
) -> None:
    """Runs go to the store while the next page is checked, yet no note is left unchecked:
    each one a page carries is a claim of the home's, checked with its key."""
    notes = [signed(r) for r in long_chain if r.height % 3 == 2]
    keys = CountingKeys()
    replica = make_replica(MemorySource("redis", {LEDGER: long_chain}, signed=notes), batch=4, keys=keys)
    passed = checker.passed if checker is not None else 0
    assert replica.follower.catch_up(LEDGER, notes[-1].size)
    assert replica.heights() == list(range(notes[-1].size))
    assert replica.store.root(LEDGER) == notes[-1].root and replica.alerts == []
    assert sorted(set(keys.checked)) == sorted(n.note for n in notes)
    assert replica.verified[-1] == notes[-1]  # what a witness may cosign now
    if checker is not None:  # all but the first page (the genesis, checked here) passed the checker
        assert checker.passed - passed >= notes[-1].size - 4


class GcWatchingSource(MemorySource):
    """A MemorySource that notes, at each fetch, whether Python's cyclic collector is on."""

    def __init__(self, name: str, chains: dict[str, list[Record]], **kwargs: object) -> None:
        super().__init__(name, chains, **kwargs)  # type: ignore[arg-type]
        self.collecting: list[bool] = []

    def fetch(self, ledger: str, start: int, count: int) -> Page:
        self.collecting.append(gc.isenabled())
        return super().fetch(ledger, start, count)


@pytest.mark.parametrize("pause", [0.0, 3600.0])
def test_the_collector_stays_off_from_page_to_page_and_collects_the_younger_generations_after_its_pause(
    make_replica: MakeReplica, long_chain: list[Record], monkeypatch: pytest.MonkeyPatch, pause: float
) -> None:
    """Turned on between two pages, the collector walked every object of the pages in flight:
    it stays off for the whole catch-up, and the two younger generations are collected between
    two pages once it has been off GC_PAUSE_SECONDS (cycles other threads make wait that long)."""
    monkeypatch.setattr(follow, "GC_PAUSE_SECONDS", pause)
    notes = [signed(r) for r in long_chain if r.height % 5 == 4]
    replica = make_replica(MemorySource("redis", {LEDGER: long_chain}, signed=notes), batch=5)
    paused: list[int] = []  # the generation of each collection made while the collector is off

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and not gc.isenabled():
            paused.append(info["generation"])

    assert gc.isenabled()
    gc.callbacks.append(watch)
    try:
        assert replica.follower.catch_up(LEDGER, notes[-1].size)
    finally:
        gc.callbacks.remove(watch)
    assert gc.isenabled()
    assert replica.heights() == list(range(notes[-1].size)) and replica.alerts == []
    pages = notes[-1].size // 5
    assert paused == ([] if pause else [1] * pages)


@pytest.mark.parametrize("on_before", [True, False])
def test_the_cyclic_collector_is_paused_for_each_page_and_left_as_it_was(
    make_replica: MakeReplica, long_chain: list[Record], on_before: bool
) -> None:
    """Each page is fetched and taken with the collector off (its many objects are freed by
    their counts); it is on again afterwards, unless something else had turned it off."""
    notes = [signed(r) for r in long_chain if r.height % 5 == 4]
    source = GcWatchingSource("redis", {LEDGER: long_chain}, signed=notes)
    replica = make_replica(source, batch=5)
    was = gc.isenabled()
    if not on_before:
        gc.disable()
    try:
        assert replica.follower.catch_up(LEDGER, notes[-1].size)
        assert gc.isenabled() is on_before
    finally:
        if was:
            gc.enable()
    assert replica.heights() == list(range(notes[-1].size)) and replica.alerts == []
    assert len(source.collecting) == notes[-1].size // 5 and not any(source.collecting)


class ThreadWatchingSource(MemorySource):
    """A MemorySource that notes which thread asks it for each page, fails (OSError) from
    height ``fail_at`` on, and fails the test if it is ever asked twice at once."""

    def __init__(
        self, name: str, chains: dict[str, list[Record]], fail_at: int | None = None, **kwargs: object
    ) -> None:
        super().__init__(name, chains, **kwargs)  # type: ignore[arg-type]
        self.fail_at = fail_at
        self.threads: list[str] = []
        self.busy = threading.Lock()

    def fetch(self, ledger: str, start: int, count: int) -> Page:
        assert self.busy.acquire(blocking=False), "asked for a page while answering another"
        try:
            self.threads.append(threading.current_thread().name)
            time.sleep(0.001)  # an answer takes a while: a second call would overlap it
            if self.fail_at is not None and start >= self.fail_at:
                self.fetches.append((ledger, start, count))
                raise OSError(f"{self.name} is down")
            return super().fetch(ledger, start, count)
        finally:
            self.busy.release()


def test_the_next_page_is_fetched_on_the_fetch_thread_while_one_is_taken(
    make_replica: MakeReplica, long_chain: list[Record], checker: PageChecker | None
) -> None:
    """Each page after the first is asked for on the fetch thread (with a page checker, and
    handed to it there), one at a time, and every one of them is taken."""
    notes = [signed(r) for r in long_chain if r.height % 5 == 4]
    source = ThreadWatchingSource("redis", {LEDGER: long_chain}, signed=notes)
    replica = make_replica(source, batch=5)
    passed = checker.passed if checker is not None else 0
    assert replica.follower.catch_up(LEDGER, notes[-1].size)
    assert replica.heights() == list(range(notes[-1].size)) and replica.alerts == []
    assert source.fetches == [(LEDGER, start, 5) for start in range(0, notes[-1].size, 5)]  # none twice, none lost
    assert source.threads[0] == threading.current_thread().name
    assert all(name.startswith(f"fetch:{REPLICA}") for name in source.threads[1:])
    if checker is not None:  # all but the first page (the genesis, checked here) passed the checker
        assert checker.passed - passed >= notes[-1].size - 5


def test_a_page_the_fetch_thread_cannot_get_is_asked_of_the_next_source(
    make_replica: MakeReplica, long_chain: list[Record], checker: PageChecker | None
) -> None:
    notes = [signed(r) for r in long_chain if r.height % 5 == 4]
    failing = ThreadWatchingSource("redis", {LEDGER: long_chain}, fail_at=10, signed=notes)
    home = ThreadWatchingSource(HOME, {LEDGER: long_chain}, signed=notes)
    replica = make_replica(failing, home, batch=5)
    assert replica.follower.catch_up(LEDGER, notes[-1].size)
    assert replica.heights() == list(range(notes[-1].size)) and replica.alerts == []
    # The failure ends its turn (a page fetched ahead for the checker that failed is asked again).
    again = [(LEDGER, 10, 5)] if checker is not None else []
    assert failing.fetches == [(LEDGER, 0, 5), (LEDGER, 5, 5), (LEDGER, 10, 5), *again]
    assert home.fetches[0] == (LEDGER, 10, 5)


def test_a_bad_record_mid_page_is_refused_and_fetched_from_the_next_source(
    make_replica: MakeReplica, long_chain: list[Record], checker: PageChecker | None
) -> None:
    """A changed byte in a record in the middle of a page (the checker passes the rows before
    it, and no further): the record is named, nothing from its source past the last
    checkpoint before it is stored, and the true one comes from the next source."""
    data = bytearray(long_chain[13].encode())
    data[data.index(b"Zoe")] = ord("X")
    notes = [signed(r) for r in long_chain if r.height % 5 == 4]
    evil = TamperedSource(EVIL, {LEDGER: long_chain}, {13: bytes(data)}, signed=notes)
    home = MemorySource(HOME, {LEDGER: long_chain}, signed=notes)
    replica = make_replica(evil, home, batch=4)
    assert replica.follower.catch_up(LEDGER, 30)
    assert replica.found() == [(13, "bad_checksum", EVIL)]
    assert replica.heights() == list(range(30)) and replica.store.get(LEDGER, 13) == long_chain[13]
    assert replica.store.root(LEDGER) == notes[5].root
    assert home.fetches[0] == (LEDGER, 10, 4)  # what the evil source gave up to the checkpoint at 10 stayed


def test_a_bad_note_in_a_page_is_refused_and_stores_nothing(
    make_replica: MakeReplica, long_chain: list[Record], checker: PageChecker | None
) -> None:
    """A page's note with one bit of its signature changed is reported and covers nothing: the
    records above the last good checkpoint wait."""
    good = [signed(long_chain[4]), signed(long_chain[9])]
    bad = flipped(signed(long_chain[14]))
    replica = make_replica(MemorySource("redis", {LEDGER: long_chain}, signed=[*good, bad]), batch=4)
    assert not replica.follower.catch_up(LEDGER, 15)
    assert replica.heights() == list(range(10))
    assert [(a.height, a.what) for a in replica.alerts] == [(14, "bad_note_signature")]
    assert replica.follower.pending(LEDGER) == long_chain[10:15]


@pytest.mark.parametrize("decoded", [False, True], ids=["rows decoded here", "rows decoded by the checker"])
def test_the_checked_rows_are_taken_only_where_they_stand_on_the_followers_chain(
    make_replica: MakeReplica, long_chain: list[Record], other_chain: list[Record], decoded: bool
) -> None:
    """The rows the page checker passed join the pending run as one piece with its leaves, each
    tied to the follower's chain: a row that stands elsewhere (here a record of another chain,
    as a lying checker would pass it) stops the piece and is checked from its bytes (refused).
    The same whether the follower decodes the rows or takes the checker's values of them."""

    def checked(leaves: list[bytes], rows: list[tuple[int, bytes]]) -> Checked:
        names: dict[str, str] = {}
        values = [fields_of_checked(data, names) for _, data in rows[: len(leaves)]]
        return Checked(leaves, columns_of_fields(values) if decoded else None)

    marked = [bytes([h]) * 32 for h in range(10)]  # the follower's trust in the checker, made visible
    replica = make_replica(MemorySource("redis", {LEDGER: long_chain}))
    follower = replica.follower
    assert follower._offer(LEDGER, [(0, long_chain[0].encode())], "redis", NOT_RELAYED) == OK  # the genesis
    rows = [(r.height, r.encode()) for r in long_chain[1:10]]
    assert follower._offer(LEDGER, rows, "redis", NOT_RELAYED, checked(marked[1:6], rows)) == OK
    assert follower.pending(LEDGER) == long_chain[:10]
    assert [r.encode() for r in follower.pending(LEDGER)] == [r.encode() for r in long_chain[:10]]
    assert follower.ledgers[LEDGER].leaves == [
        leaf_hash(long_chain[0].encode()),
        *marked[1:6],
        *[leaf_hash(r.encode()) for r in long_chain[6:10]],  # past what the checker passed: worked out here
    ]
    assert follower.ledgers[LEDGER].data == [r.encode() for r in long_chain[:10]]
    chain = follower.ledgers[LEDGER].chain
    assert chain is not None and chain.next_height == 10 and chain.prev == long_chain[9].link

    replica = make_replica(MemorySource("redis", {LEDGER: long_chain}))
    follower = replica.follower
    assert follower._offer(LEDGER, [(0, long_chain[0].encode())], "redis", NOT_RELAYED) == OK
    stranger = (3, other_chain[3].encode())  # "passed" by the checker, yet not on this chain
    lied = [*rows[:2], stranger, *rows[3:]]
    assert follower._offer(LEDGER, lied, "redis", NOT_RELAYED, checked(marked[1:10], lied)) != OK
    assert [a.height for a in replica.alerts] == [3]
    assert follower.pending(LEDGER) in ([], long_chain[:3])  # nothing of the stranger or after it


def test_a_page_checkers_subtrees_grow_the_tree_its_leaves_would(
    make_replica: MakeReplica, long_chain: list[Record], checker: PageChecker | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checker hashes the page's complete 16-leaf subtrees; the follower grows its tree by
    each one whose leaves all lie between two checkpoints (here heights 16 to 31), and stores
    the tree and kept subtrees its leaves alone would have made."""
    notes = [signed(long_chain[4]), signed(long_chain[39])]
    replica = make_replica(MemorySource("redis", {LEDGER: long_chain}, signed=notes))
    held_up_to(replica, long_chain, 0)  # the genesis held: the next page goes to the checker
    taken: list[bytes] = []
    grow_level = Frontier.grow_level

    def spied(frontier: Frontier, nodes: list[bytes], level: int) -> list[tuple[int, int, bytes]]:
        taken.extend(nodes)
        return grow_level(frontier, nodes, level)

    monkeypatch.setattr(Frontier, "grow_level", spied)
    assert replica.follower.catch_up(LEDGER, 40)
    expected = Frontier()
    kept = grow_kept(expected, [leaf_hash(r.encode()) for r in long_chain])
    with contextlib.closing(sqlite3.connect(replica.store.directory / DB_NAME)) as db:
        rows = db.execute("SELECT level, idx, hash FROM tree WHERE ledger = ? ORDER BY level, idx", (LEDGER,))
        assert rows.fetchall() == sorted(kept)
    assert replica.store.frontier(LEDGER).encode() == expected.encode() and replica.alerts == []
    assert taken == ([subtree_hashes([leaf_hash(r.encode()) for r in long_chain[16:32]], 4)[0]] if checker else [])


@pytest.mark.parametrize("lie", ["none", "sent height", "height", "prev", "ledger", "kind", "first prev"])
def test_the_checkers_values_are_built_up_to_the_first_row_off_the_followers_chain(
    long_chain: list[Record], lie: str
) -> None:
    """The Records of the checker's columns are what decoding the rows gives, up to the first row
    whose values (or the height it was sent as) do not stand on the chain, or that is a
    ``checkpoint_key`` record: here the fifth of nine, or the first for a false first prev."""
    records = long_chain[1:10]
    rows = [(r.height, r.encode()) for r in records]
    values = [list(fields_of_checked(data, {})) for _, data in rows]
    at = 0 if lie == "first prev" else 4
    if lie == "sent height":
        rows[at] = (rows[at][0] + 1, rows[at][1])
    changed = {"height": (9, 99), "prev": (10, bytes(32)), "ledger": (0, "other"), "kind": (1, ROTATION_KIND)}
    if lie in changed:
        index, value = changed[lie]
        values[at][index] = value
    if lie == "first prev":
        values[at][10] = bytes(32)
    columns = columns_of_fields([tuple(v) for v in values])  # type: ignore[misc]
    built = _records_on_chain(columns, rows, 0, len(rows), 1, long_chain[0].link, LEDGER)
    assert built == (records if lie == "none" else records[:at])
    assert _records_on_chain(columns, rows, 2, 2, 3, long_chain[2].link, LEDGER) == []


class Distrusting(PageChecker):
    """A page checker never started, that notes what the follower found false of its answers."""

    def __init__(self) -> None:
        super().__init__()
        self.distrusted: list[str] = []

    def distrust(self, why: str) -> None:
        self.distrusted.append(why)


@pytest.mark.parametrize("lie", [False, True], ids=["true subtrees", "a false subtree"])
def test_a_false_subtree_from_the_checker_blames_the_checker_not_the_run(
    make_replica: MakeReplica, long_chain: list[Record], lie: bool
) -> None:
    """Subtree hashes that give another root than the checkpoint's: the tree is grown again from
    the leaves alone, and when that has the root, the run is stored, nobody is alerted, and the
    checker is not trusted any more (the follower then checks everything itself)."""
    replica = make_replica(MemorySource("redis", {LEDGER: long_chain}))
    held_up_to(replica, long_chain, 0)
    follower = replica.follower
    follower.checker = checker = Distrusting()
    assert follower._take_checkpoint(LEDGER, signed(long_chain[39]).note, HOME, catch_up=False)
    rows = [(r.height, r.encode()) for r in long_chain[1:40]]
    leaves = [leaf_hash(data) for _, data in rows]
    subtrees = [bytes(32)] if lie else subtree_hashes(leaves[15:31], 4)
    names: dict[str, str] = {}
    checked = Checked(leaves, columns_of_fields([fields_of_checked(data, names) for _, data in rows]), subtrees, 1)
    assert follower._offer(LEDGER, rows, HOME, NOT_RELAYED, checked) == OK
    follower.settle()
    assert replica.heights() == list(range(40)) and replica.store.root(LEDGER) == signed(long_chain[39]).root
    assert replica.alerts == [] and len(checker.distrusted) == (1 if lie else 0)


class Unstarted(PageChecker):
    """A page checker whose process has not said it started: never to be handed a page."""

    def ready(self, timeout: float = 0.0) -> bool:
        return False

    def submit(self, ledger: str, rows: list[bytes], start: object) -> None:
        raise AssertionError("a page was handed to a checker that has not started")


def test_a_page_checker_that_has_not_started_is_not_waited_for(tmp_path: Path, long_chain: list[Record]) -> None:
    notes = [signed(r) for r in long_chain if r.height % 3 == 2]
    checker = Unstarted()
    try:
        with ChainStore(tmp_path / "replica") as store:
            follower = Follower(
                REPLICA,
                store,
                [MemorySource("redis", {LEDGER: long_chain}, signed=notes)],
                keys=KEYS,
                home_of=lambda ledger: HOME,
                on_stored=lambda records, hops: None,
                on_alert=lambda alert: None,
                batch=4,
                checker=checker,
            )
            assert follower.catch_up(LEDGER, notes[-1].size)
            assert store.size(LEDGER) == notes[-1].size and store.root(LEDGER) == notes[-1].root
    finally:
        checker.close()


# --- the live feed with runs in flight (receive(wait=False), the replica's follow loop) ------------------


class HeldCommits:
    """Stands between a follower and its store's submit_records: each run is queued here, its
    commit not done, until :meth:`release` commits it for real. The future handed to the
    follower fails the test if it is ever waited for before that (the live path must not)."""

    def __init__(self, store: ChainStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.submit = store.submit_records
        self.held: list[tuple[list[Record], dict[str, object], Future[list[Receipt]]]] = []
        monkeypatch.setattr(store, "submit_records", self._hold)

    def _hold(self, records: list[Record], **kwargs: object) -> Future[list[Receipt]]:
        future: Future[list[Receipt]] = _NeverWaited()
        self.held.append((list(records), kwargs, future))
        return future

    def heights(self) -> list[list[int]]:
        """The heights of each run handed over and not released yet."""
        return [[r.height for r in records] for records, _, future in self.held if not future.done()]

    def release(self, *, fail: bool = False) -> None:
        """Commit the oldest run still held (or fail it as the store would: nothing stored)."""
        records, kwargs, future = next(held for held in self.held if not held[2].done())
        if fail:
            future.set_exception(StoreError("disk full"))
        else:
            future.set_result(self.submit(records, **kwargs).result())  # type: ignore[arg-type]


class _NeverWaited(Future[list[Receipt]]):
    def result(self, timeout: float | None = None) -> list[Receipt]:
        assert self.done(), "the follower waited for a commit that was not done"
        return super().result(timeout)


def test_the_live_path_checks_the_next_batch_while_runs_commit_and_reports_them_in_order(
    make_replica: MakeReplica, chain: list[Record], monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = make_replica(MemorySource("redis", {}))
    held_up_to(replica, chain, 0)  # a genesis is always waited for: the rules come with it
    held = HeldCommits(replica.store, monkeypatch)
    follower = replica.follower
    follower.receive([*(live(r) for r in chain[1:4]), heads(signed(chain[3]))], wait=False)
    follower.receive([*(live(r) for r in chain[4:7]), heads(signed(chain[6]))], wait=False)
    # Both runs handed over, the second standing on the first, neither reported yet.
    assert held.heights() == [[1, 2, 3], [4, 5, 6]] and follower.in_flight()
    assert replica.stored == [([0], 1)] and replica.verified == [signed(chain[0])] and replica.heights() == [0]
    assert follower.target(LEDGER) == 6
    # Duplicates of a stored and of an in-flight height, and a heartbeat of a covered checkpoint,
    # do not wait for the commits.
    duplicates = [live(chain[0], sender="replica-9", hops=2), live(chain[2], sender="replica-9", hops=2)]
    follower.receive([*duplicates, heads(signed(chain[3]))], wait=False)
    assert replica.alerts == [] and follower.duplicates == 2
    held.release()
    follower.reap()
    assert replica.stored == [([0], 1), ([1, 2, 3], 1)] and replica.verified[1:] == [signed(chain[3])]
    follower.reap()  # the second is still committing: nothing more
    assert replica.stored == [([0], 1), ([1, 2, 3], 1)] and follower.in_flight()
    held.release()
    follower.reap()
    assert replica.stored == [([0], 1), ([1, 2, 3], 1), ([4, 5, 6], 1)]
    assert replica.verified[1:] == [signed(chain[3]), signed(chain[6])]
    assert replica.heights() == list(range(7)) and not follower.in_flight() and replica.alerts == []


def test_a_different_record_at_an_in_flight_height_is_alerted(
    make_replica: MakeReplica, chain: list[Record], other_chain: list[Record], monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = make_replica(MemorySource("redis", {}))
    held_up_to(replica, chain, 0)
    held = HeldCommits(replica.store, monkeypatch)
    replica.follower.receive([*(live(r) for r in chain[1:3]), heads(signed(chain[2]))], wait=False)
    forged_two = forged(chain[2])
    held.release()  # the alert names what is stored there: the run is waited for
    replica.follower.receive([FeedRecord(LEDGER, 2, 2, EVIL, forged_two.encode())], wait=False)
    assert replica.found() == [(2, "record_conflict", EVIL)]
    assert replica.alerts[0].expected == chain[2].hash.hex()


def test_the_live_path_keeps_a_bounded_number_of_runs_in_flight(
    make_replica: MakeReplica, chain: list[Record], monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = make_replica(MemorySource("redis", {}))
    held_up_to(replica, chain, 0)
    held = HeldCommits(replica.store, monkeypatch)
    for height in range(1, LIVE_IN_FLIGHT + 1):
        replica.follower.receive([live(chain[height]), heads(signed(chain[height]))], wait=False)
    assert len(held.heights()) == LIVE_IN_FLIGHT
    # One more needs room: the oldest must be done first (the follower would wait for it).
    held.release()
    nxt = chain[LIVE_IN_FLIGHT + 1]
    replica.follower.receive([live(nxt), heads(signed(nxt))], wait=False)
    assert len(held.heights()) == LIVE_IN_FLIGHT and replica.stored == [([0], 1), ([1], 1)]
    after = chain[nxt.height + 1]
    with pytest.raises(AssertionError, match="waited for a commit"):
        replica.follower.receive([live(after), heads(signed(after))], wait=False)


class CommitsOnWait:
    """Stands between a follower and its store's submit_records: each run is held, its commit not
    begun, until the follower waits for one; then the runs held up to it are committed, oldest
    first. ``waited_with`` says how many runs were held each time the follower waited."""

    def __init__(self, store: ChainStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.submit = store.submit_records
        self.held: list[tuple[list[Record], dict[str, object], Future[list[Receipt]]]] = []
        self.waited_with: list[int] = []
        monkeypatch.setattr(store, "submit_records", self._hold)

    def _hold(self, records: list[Record], **kwargs: object) -> Future[list[Receipt]]:
        future = _CommittedOnWait(self)
        self.held.append((list(records), kwargs, future))
        return future

    def commit_up_to(self, future: Future[list[Receipt]]) -> None:
        self.waited_with.append(len(self.held))
        while self.held:
            records, kwargs, held = self.held.pop(0)
            held.set_result(self.submit(records, **kwargs).result())  # type: ignore[arg-type]
            if held is future:
                return


class _CommittedOnWait(Future[list[Receipt]]):
    def __init__(self, commits: CommitsOnWait) -> None:
        super().__init__()
        self._commits = commits

    def result(self, timeout: float | None = None) -> list[Receipt]:
        if not self.done():
            self._commits.commit_up_to(self)
        return super().result(timeout)


def test_a_catch_up_keeps_its_pages_runs_in_flight_and_reports_them_in_order(
    make_replica: MakeReplica, chain: list[Record], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkpoint ends each page of two: six runs, heights 1-2, 3-4, ..., 9-10 and 11.
    notes = [signed(chain[height]) for height in (2, 4, 6, 8, 10, 11)]
    replica = make_replica(MemorySource("redis", {LEDGER: chain}, signed=notes), batch=2)
    held_up_to(replica, chain, 0)
    commits = CommitsOnWait(replica.store, monkeypatch)
    replica.follower.take_checkpoint(LEDGER, notes[-1].note, "redis", catch_up=False)
    assert replica.follower.catch_up(LEDGER, 12)
    # The follower waited only with CATCH_UP_IN_FLIGHT runs in the store's queue, then for the
    # last ones at the end (the catch-up returns with them durable).
    runs = len(notes)
    assert commits.waited_with == [CATCH_UP_IN_FLIGHT] * (runs - CATCH_UP_IN_FLIGHT) + list(
        range(CATCH_UP_IN_FLIGHT, 0, -1)
    )
    assert replica.heights() == list(range(12)) and replica.alerts == []
    assert replica.stored == [([0], 1), *(([h, h + 1], NOT_RELAYED) for h in (1, 3, 5, 7, 9)), ([11], NOT_RELAYED)]
    assert replica.verified[1:] == notes and not replica.follower.in_flight()


def test_a_failed_commit_drops_the_runs_after_it_and_they_are_fetched_again(
    make_replica: MakeReplica, chain: list[Record], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = MemorySource("redis", {LEDGER: chain})
    replica = make_replica(source)
    held_up_to(replica, chain, 0)
    held = HeldCommits(replica.store, monkeypatch)
    follower = replica.follower
    follower.receive([*(live(r) for r in chain[1:4]), heads(signed(chain[3]))], wait=False)
    follower.receive([*(live(r) for r in chain[4:7]), heads(signed(chain[6]))], wait=False)
    follower.receive([*(live(r) for r in chain[7:9])], wait=False)  # pending above the runs
    assert held.heights() == [[1, 2, 3], [4, 5, 6]]
    held.release(fail=True)  # the first fails; the second cannot stand on it
    held.release(fail=True)
    follower.reap()
    assert replica.found() == [(1, "store_error", HOME)]  # told once, for the run that failed
    assert replica.stored == [([0], 1)] and replica.verified == [signed(chain[0])] and not follower.in_flight()
    assert follower.pending(LEDGER) == [] and follower.target(LEDGER) == 6 and replica.heights() == [0]
    monkeypatch.undo()  # the store works again: the next heartbeat fetches what was dropped
    follower.receive([heads(signed(chain[6]))], wait=False)
    follower.settle()
    assert replica.heights() == list(range(7))
    assert source.fetches[0][1] == 1


def test_checkpoints_taken_without_waiting_leave_the_runs_in_flight(
    make_replica: MakeReplica, chain: list[Record], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replica's check of Redis's checkpoints (take_checkpoint(wait=False)), and a heartbeat of
    a checkpoint the store holds, do not wait for the runs being stored: one a stored size holds
    is compared with the store at once, a newer one lets the pending run it covers go in flight."""
    replica = make_replica(MemorySource("redis", {}))
    held_up_to(replica, chain, 0)
    follower = replica.follower
    follower.receive([*(live(r) for r in chain[1:3]), heads(signed(chain[2]))])  # stored: 0-2
    held = HeldCommits(replica.store, monkeypatch)
    follower.receive([*(live(r) for r in chain[3:5]), heads(signed(chain[4]))], wait=False)
    follower.receive([*(live(r) for r in chain[5:7])], wait=False)  # pending: no checkpoint yet
    assert held.heights() == [[3, 4]]
    # A stored size's checkpoint, on the feed and from Redis: compared with the store, no wait.
    follower.receive([heads(signed(chain[2]))], wait=False)
    assert follower.take_checkpoint(LEDGER, signed(chain[2]).note, "redis", catch_up=False, wait=False)
    # Redis's newer checkpoint covers the pending run: it goes in flight beside the first.
    assert follower.take_checkpoint(LEDGER, signed(chain[6]).note, "redis", catch_up=False, wait=False)
    assert held.heights() == [[3, 4], [5, 6]] and replica.alerts == []
    held.release()
    held.release()
    follower.reap()
    assert replica.heights() == list(range(7)) and not follower.in_flight() and replica.alerts == []


def _passes(chain: list[Record], *ends: int) -> list[FeedRecord | FeedCheckpoints]:
    """The home's passes up to each of ``ends`` in one turn, as a replica behind receives them:
    each pass's records, then its checkpoint."""
    turn: list[FeedRecord | FeedCheckpoints] = []
    start = 1
    for end in ends:
        turn += [*(live(r) for r in chain[start : end + 1]), heads(signed(chain[end]))]
        start = end + 1
    return turn


def test_a_turn_of_several_passes_compares_the_older_checkpoints_with_the_run_in_flight(
    make_replica: MakeReplica, chain: list[Record], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica behind gets several of the home's passes in one turn: the newest checkpoint hands
    the whole run over, and each older one, inside it, is compared with the run's tree there
    without waiting for its commit (HeldCommits fails the test if the follower waits)."""
    replica = make_replica(MemorySource("redis", {}))
    held_up_to(replica, chain, 0)
    held = HeldCommits(replica.store, monkeypatch)
    follower = replica.follower
    follower.receive(_passes(chain, 2, 4, 6), wait=False)
    assert held.heights() == [[1, 2, 3, 4, 5, 6]] and follower.in_flight()
    # Nothing reported held before the commit is done.
    assert replica.stored == [([0], 1)] and replica.verified == [signed(chain[0])]
    held.release()
    follower.reap()
    assert replica.heights() == list(range(7)) and replica.alerts == [] and not follower.in_flight()
    assert replica.stored == [([0], 1), ([1, 2, 3, 4, 5, 6], 1)] and replica.verified[1:] == [signed(chain[6])]
    assert follower.ledgers[LEDGER].waiting == {}


def test_the_older_checkpoints_of_a_turn_wait_again_when_the_run_s_commit_fails(
    make_replica: MakeReplica, chain: list[Record], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = MemorySource("redis", {LEDGER: chain})
    replica = make_replica(source)
    held_up_to(replica, chain, 0)
    held = HeldCommits(replica.store, monkeypatch)
    follower = replica.follower
    follower.receive(_passes(chain, 2, 4, 6), wait=False)
    held.release(fail=True)
    follower.reap()
    assert replica.found() == [(1, "store_error", HOME)] and replica.heights() == [0]
    assert replica.verified == [signed(chain[0])]  # none of the three reported
    assert sorted(follower.ledgers[LEDGER].waiting) == [3, 5, 7]
    monkeypatch.undo()  # the store works again: the next heartbeat fetches what was dropped
    follower.receive([heads(signed(chain[6]))])
    assert replica.heights() == list(range(7)) and follower.ledgers[LEDGER].waiting == {}


def test_an_older_checkpoint_of_a_turn_that_contradicts_the_run_is_equivocation(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    """The newest checkpoint stores the run; an older one of the same turn with another root at
    its size is judged against the store, as before: the home signed two trees."""
    replica = make_replica(MemorySource("redis", {}))
    held_up_to(replica, chain, 0)
    lie = signed(minted(chain[3], origin=HOME))  # the home's key on another tree of size 5
    replica.follower.receive([*(live(r) for r in chain[1:7]), heads(lie), heads(signed(chain[6]))], wait=False)
    replica.follower.settle()
    assert replica.heights() == list(range(7))
    (alert,) = replica.alerts
    assert (alert.what, alert.height, alert.source) == ("equivocation", 4, HOME)
    assert alert.expected == root_up_to(chain[4]).hex() and alert.found == lie.root.hex()
    kept = {c.note for c in replica.store.checkpoints.all(LEDGER, EVIDENCE)}
    assert kept == {lie.note, signed(chain[6]).note}


def test_a_run_handed_over_in_a_turn_is_reported_as_soon_as_its_commit_is_done(
    make_replica: MakeReplica, chain: list[Record], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not after the signature checks of the turn's other checkpoints: its commit ends while the
    second checkpoint is checked, and it is reported before the third is."""
    keys = CountingKeys()
    replica = make_replica(MemorySource("redis", {}), keys=keys)
    held_up_to(replica, chain, 0)
    held = HeldCommits(replica.store, monkeypatch)
    reported_at_check: list[int] = []

    def check(ledger: str, data: bytes) -> SignedCheckpoint:
        reported_at_check.append(len(replica.verified))
        if len(reported_at_check) == 2:  # the newest handed the run over: its commit ends now
            held.release()
        return CountingKeys.check(keys, ledger, data)

    monkeypatch.setattr(keys, "check", check)
    replica.follower.receive(_passes(chain, 2, 4, 6), wait=False)
    # The second, checked once the commit is done, is compared with the store and reported at
    # once; the run's own checkpoint is reported right after it, before the third is checked.
    assert reported_at_check == [1, 1, 3]
    assert replica.verified[1:] == [signed(chain[4]), signed(chain[6]), signed(chain[2])]
    assert replica.heights() == list(range(7)) and replica.alerts == [] and not replica.follower.in_flight()


def test_an_older_checkpoint_that_comes_before_its_records_and_contradicts_the_run_a_newer_vouches_for_is_equivocation(
    make_replica: MakeReplica, chain: list[Record]
) -> None:
    """The home's lie at size 5 waits for its records; the home's true checkpoint at 7 comes next.
    The run the true one vouches for is stored, and the lie is judged against it (the home signed
    two trees): before, the lie dropped the run at each fetch, and the ledger stayed behind with
    no alert."""
    source = MemorySource("redis", {LEDGER: chain})
    replica = make_replica(source)
    held_up_to(replica, chain, 0)
    evidence: list[tuple[bytes, str, Contradiction | None]] = []
    replica.follower.on_evidence = lambda checkpoint, sender, proof: evidence.append((checkpoint.note, sender, proof))
    lie = signed(minted(chain[3], origin=HOME))  # the home's key on another tree of size 5
    replica.follower.receive([heads(lie, sender=PEER)])  # the true records are fetched: they cannot have its root
    assert replica.heights() == [0] and replica.alerts == []
    replica.follower.receive([heads(signed(chain[6]))])
    assert replica.heights() == list(range(7))
    ((note, sender, proof),) = evidence
    assert (note, sender) == (lie.note, PEER) and proof is not None and proof.checkpoint == signed(chain[6])
    (alert,) = replica.alerts
    assert (alert.what, alert.height, alert.source) == ("equivocation", 4, HOME)
    assert alert.expected == root_up_to(chain[4]).hex() and alert.found == lie.root.hex()
    kept = {c.note for c in replica.store.checkpoints.all(LEDGER, EVIDENCE)}
    assert kept == {lie.note, signed(chain[6]).note}
    assert replica.follower.ledgers[LEDGER].waiting == {}
    replica.follower.receive([heads(lie), heads(signed(chain[6]))])  # again: told once, nothing dropped
    assert len(replica.alerts) == 1 and replica.heights() == list(range(7))


# --- records deleted from the copy's file behind its back (outsider 25, H2) ---------------------------------

CUT_CHAIN = 40  # long_chain's records: two stored subtrees of 16, and records past them


def deleted(where: str) -> Callable[[Path], None]:
    """A change that deletes records of LEDGER from a store's file, as an outsider with sqlite3 would."""

    def change(path: Path) -> None:
        with sqlite3.connect(path, timeout=30) as db:
            db.execute(f"DELETE FROM records WHERE ledger = ? AND {where}", (LEDGER,))

    return change


def healed(replica: Replica, chain: list[Record]) -> None:
    """``replica`` holds ``chain`` again, the home's records, and said what it lost until then."""
    assert [r.hash for r in replica.store.range(LEDGER)] == [r.hash for r in chain]
    assert replica.store.root(LEDGER) == signed(chain[-1]).root
    assert replica.found() == [(len(chain) - 1, "tree_mismatch", REPLICA)]
    assert replica.resolved == [f"{REPLICA}|{LEDGER}|tree_mismatch"]
    assert replica.follower.status() == {"current": replica.follower.caught_up, "behind": {}}


@pytest.mark.parametrize("where", ["height >= 30", "height >= 5", "height IN (20, 21)"], ids=["tail", "most", "hole"])
def test_records_deleted_while_it_runs_are_fetched_again_and_the_alert_resolves_once_healed(
    make_replica: MakeReplica, long_chain: list[Record], where: str
) -> None:
    source = MemorySource("redis", {LEDGER: long_chain}, signed=[signed(long_chain[-1])])
    replica = make_replica(source)
    held_up_to(replica, long_chain, CUT_CHAIN - 1)
    deleted(where)(replica.store.path)
    hole = "IN" in where
    replica.follower.heal_cuts()  # the check every second: the head, one seek a ledger
    assert replica.alerts == [] if hole else replica.alerts != []
    if hole:
        assert replica.follower.behind() == {}  # the hole is below the head: only a count finds it
        replica.follower.heal_cuts(holes=True)
    healed(replica, long_chain)
    replica.follower.heal_cuts(holes=True)  # healed: nothing more to find
    assert len(replica.alerts) == 1 and len(replica.resolved) == 1


@pytest.mark.parametrize("where", ["height >= 30", "height IN (20, 21)"], ids=["tail", "hole"])
def test_the_same_records_lost_again_are_told_again(
    make_replica: MakeReplica, long_chain: list[Record], where: str
) -> None:
    """A quiet ledger's second loss is cut at the same height as its first: told again, not
    healed silently as a repeat of an alert already resolved (review r12, 1)."""
    source = MemorySource("redis", {LEDGER: long_chain}, signed=[signed(long_chain[-1])])
    replica = make_replica(source)
    held_up_to(replica, long_chain, CUT_CHAIN - 1)
    for times in (1, 2):
        deleted(where)(replica.store.path)
        replica.follower.heal_cuts(holes=True)
        assert [r.hash for r in replica.store.range(LEDGER)] == [r.hash for r in long_chain]
        assert replica.found() == [(CUT_CHAIN - 1, "tree_mismatch", REPLICA)] * times
        assert replica.resolved == [f"{REPLICA}|{LEDGER}|tree_mismatch"] * times


@pytest.mark.parametrize("where", ["height >= 30", "height IN (20, 21)"], ids=["tail", "hole"])
def test_records_deleted_while_it_was_stopped_are_fetched_again_at_its_start(
    make_replica: MakeReplica, long_chain: list[Record], where: str
) -> None:
    source = MemorySource("redis", {LEDGER: long_chain}, signed=[signed(long_chain[-1])])
    replica = make_replica()
    held_up_to(replica, long_chain, CUT_CHAIN - 1)
    replica = restarted(replica, source, change=deleted(where))
    assert replica.store.size(LEDGER) in (20, 30)  # cut back as it opened
    replica.follower.start()
    healed(replica, long_chain)


def test_a_copy_cut_and_changed_below_the_cut_stops_the_node_as_damaged(
    make_replica: MakeReplica, long_chain: list[Record]
) -> None:
    replica = make_replica(MemorySource("redis", {LEDGER: long_chain}, signed=[signed(long_chain[-1])]))
    held_up_to(replica, long_chain, CUT_CHAIN - 1)
    damage: list[str] = []
    replica.store.on_damaged = lambda error: damage.append(error.message)
    forged_record = forged(long_chain[3])  # well formed, on another chain
    with sqlite3.connect(replica.store.path, timeout=30) as db:
        db.execute("UPDATE records SET data = ? WHERE ledger = ? AND height = 3", (forged_record.encode(), LEDGER))
    deleted("height >= 30")(replica.store.path)
    replica.follower.heal_cuts()
    assert len(damage) == 1 and "[tree_mismatch]" in damage[0]
    assert replica.store.size(LEDGER) == 30  # nothing fetched onto a prefix that fails its checks


@pytest.mark.parametrize("what", ["not_granted", "not_admin_author", "already_voted"])
def test_an_observer_s_flag_of_a_record_the_home_placed_is_not_carried_over(
    make_replica: MakeReplica, chain: list[Record], what: str
) -> None:
    """review r20 F3: an observer runs this follower (ingest/replica.py) and flags a record of the
    home's chain that breaks the rules (verifier/observer.py _flag: node itself, source the record's
    origin). fix19a carried over every alert of a kind operator_resolves does not name, whatever its
    source: after a restart the first verified checkpoint over the flagged record, which an honest
    copy always holds, resolved the evidence against the home (a false all-clear)."""
    source = MemorySource(HOME, {LEDGER: chain}, signed=[signed(chain[9])])
    replica = make_replica()
    held_up_to(replica, chain, 9)
    key = f"{REPLICA}|{LEDGER}|{what}"
    fields = {"id": "1-0", "node": REPLICA, "ledger": LEDGER, "what": what, "source": HOME, "height": "5"}
    again = restarted(replica, source)
    again.follower.carry_over(follow.own_copy_alerts(REPLICA, {key: fields}))
    again.follower.start()
    assert again.resolved == []  # the record is still there and still breaks the rules
    again.store.close()
