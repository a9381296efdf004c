"""ingest/key_chains.py and the follower along a rotated key chain (PROTOCOL 13.8), on real stores.

The home rotates with HomeKeys and signs each size with the key in force there, also after a
restart (derived from its store); a follower stores a run whose checkpoint the new key signed
(the rotation still pending), refuses a forged rotation in a run, and keeps a checkpoint the
retired key signed past its rotation as evidence, raising retired_key against the home.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.feed import FeedCheckpoints, FeedRecord
from vledger.broker.replication import Alert
from vledger.broker.signing import generate_checkpoint_key, load_checkpoint_keys, remove_checkpoint_key
from vledger.config.settings import Limits
from vledger.ingest.epochs import EpochBook
from vledger.ingest.follow import MAX_HELD_RECORDS, Follower, Page
from vledger.ingest.key_chains import ClusterChains, HomeKeys, KeyChains
from vledger.ingest.page_check import PageChecker
from vledger.node import tree
from vledger.node.checkpoint_log import EVIDENCE
from vledger.node.epoch import EpochKeys
from vledger.node.errors import NoteError, NoteKeyError, PayloadTooLargeError, RotationError
from vledger.node.key_rotation import ROTATION_KIND, KeyChain, rotation_payload
from vledger.node.ledger import LedgerRules
from vledger.node.note import ALG_ED25519, Checkpoint, Note, SignerKey, sign
from vledger.node.record import Content, Entry, Record
from vledger.node.store import ChainStore
from vledger.node.storefile import DB_NAME
from vledger.node.witness import CheckpointKeys, SignedCheckpoint, WitnessSigner, witness_name
from vledger.tests.unit.node.tree_oracle import hash_at_of

LIMITS = Limits()
T0 = 1_790_000_000_000
CLUSTER = "test"
LEDGER = "ledger-a"
ORIGIN = f"{CLUSTER}/{LEDGER}"
SEED0, SEED1 = bytes(range(32)), bytes(range(1, 33))
K0, K1 = SignerKey(ORIGIN, ALG_ED25519, SEED0), SignerKey(ORIGIN, ALG_ED25519, SEED1)
K2 = SignerKey(ORIGIN, ALG_ED25519, bytes(range(2, 34)))


def _home(directory: Path, *, pin: bool = True, notes: int = 3, standby: bool = False) -> ChainStore:
    store = ChainStore(directory, origin="home", clock=lambda: T0)
    pinned = {"checkpoint_key": K0.verifier().encode()} if pin else {}
    if standby:  # a genesis pinning a standby's key (10.9), written when create still listed the kind
        pinned["standby_key"] = K2.verifier().encode()
    rules = LedgerRules((ROTATION_KIND, "epoch", "note") if standby else (ROTATION_KIND, "note"), 0, pinned)
    store.create_ledger(Entry.prepare(rules.genesis_content(LEDGER, "admin", "create-1", T0), 0, LIMITS))
    _notes(store, 1, notes)
    return store


def _notes(store: ChainStore, first: int, count: int) -> None:
    for i in range(first, first + count):
        store.append(Entry.prepare(Content(LEDGER, "note", {"n": i}, "Zoe.1", f"r-{i}", T0 + i), 0, LIMITS))


def _keys(store: ChainStore, seeds: tuple[bytes, ...] = (), make: bytes | None = SEED1) -> HomeKeys:
    chains = KeyChains(store, lambda ledger: None)
    return HomeKeys(CLUSTER, SEED0, chains, seeds, make_seed=None if make is None else (lambda: make))


def test_the_home_signs_each_size_with_the_key_in_force_also_after_a_restart(tmp_path: Path) -> None:
    with _home(tmp_path / "home") as store:
        keys = _keys(store)
        receipt = keys.rotate(LEDGER, "admin", store.append)
        height = receipt.height
        assert height == 4
        _notes(store, 5, 2)
        assert keys.key_at(LEDGER, height).public_key == K0.public_key  # the rotation's own size: the old key
        assert keys.key_at(LEDGER, height + 1).public_key == K1.public_key
        chain = keys.chains.stored(LEDGER)
        assert chain is not None and chain.heights == (height,)
        for size in (height, height + 1, store.size(LEDGER)):
            chain.check(keys.sign(LEDGER, size, store.root(LEDGER, size)).note)  # the key in force signed it
    with ChainStore(tmp_path / "home", origin="home") as store:
        again = _keys(store, (SEED1,), make=None)  # a restart: the chain says which key is in force
        assert again.key_at(LEDGER, store.size(LEDGER)).public_key == K1.public_key
        without = _keys(store, (), make=None)  # the rotated key file is gone: nothing is signed
        with pytest.raises(NoteKeyError):
            without.sign(LEDGER, store.size(LEDGER), store.root(LEDGER))
        with pytest.raises(NoteKeyError):
            again.rotate(LEDGER, "admin", store.append)  # this one makes no keys


def test_a_refused_rotation_leaves_no_key_file_behind(tmp_path: Path) -> None:
    """Outsider 32 R3: a rotation the home refused left its new private key on disk, a stray
    ``.ckpt-*.sign`` that every start loads as a checkpoint key. Here the store refuses the
    rotation record for its size (this store's limit is below it)."""
    keys_dir = tmp_path / "keys"
    store = ChainStore(tmp_path / "home", origin="home", clock=lambda: T0, limits=Limits(max_content_bytes=250))
    with store:
        rules = LedgerRules((ROTATION_KIND, "note"), 0, {"checkpoint_key": K0.verifier().encode()})
        store.create_ledger(Entry.prepare(rules.genesis_content(LEDGER, "admin", "create-1", T0), 0, LIMITS))
        keys = HomeKeys(
            CLUSTER,
            SEED0,
            KeyChains(store, lambda ledger: None),
            make_seed=lambda: generate_checkpoint_key(keys_dir, "home").seed,
            drop_seed=lambda public_key: remove_checkpoint_key(keys_dir, "home", public_key),
        )
        with pytest.raises(PayloadTooLargeError):
            keys.rotate(LEDGER, "admin", store.append)
        assert store.size(LEDGER) == 1
        assert load_checkpoint_keys(keys_dir, "home") == [] and list(keys_dir.iterdir()) == []
        assert keys.key_at(LEDGER, 2).public_key == K0.public_key


def test_a_ledger_that_pins_no_key_is_not_rotated(tmp_path: Path) -> None:
    with _home(tmp_path / "home", pin=False) as store:
        with pytest.raises(RotationError):
            _keys(store).rotate(LEDGER, "admin", store.append)
        assert store.size(LEDGER) == 4


def test_a_chain_follows_a_copy_cut_back_and_refilled_past_where_it_was_read(tmp_path: Path) -> None:
    # A follower's copy of 6 records with no rotation, cut back to 4 (node/store_cut.py) and
    # refilled to 7 with a rotation at 4 between two looks: the chain restarted only for a copy
    # smaller than what was read, so the rotation was never read (review r18, finding 4).
    with _home(tmp_path / "rotated") as home:
        _keys(home).rotate(LEDGER, "admin", home.append)
        _notes(home, 5, 2)
        rotated = list(home.range(LEDGER))
    with _home(tmp_path / "other") as other:
        _notes(other, 4, 2)
        unrotated = list(other.range(LEDGER))
    assert rotated[:4] == unrotated[:4]
    with ChainStore(tmp_path / "copy") as copy:
        copy.append_records(unrotated)
        chains = KeyChains(copy, lambda ledger: None)
        before = chains.stored(LEDGER)
        assert before is not None and before.heights == ()
        with sqlite3.connect(tmp_path / "copy" / DB_NAME) as db:
            db.execute("DELETE FROM records WHERE ledger = ? AND height >= 4", (LEDGER,))
        db.close()
        assert copy.roll_back(LEDGER) is not None
        copy.append_records(rotated[4:])
        after = chains.stored(LEDGER)
        assert after is not None and after.heights == (4,) and after.current.public_key == K1.public_key


def test_a_ledger_held_elsewhere_is_checked_along_the_chain_the_stream_holds_from_the_configured_key(
    tmp_path: Path,
) -> None:
    # The admin home checks witness notes of a ledger another ingest node homes (16.6, outsider
    # o19 F1): read from the stream (here the home's own rows), its rotation followed, but only
    # from a genesis pinning the home's key file's key; what the node holds is read there.
    with _home(tmp_path / "home") as home, ChainStore(tmp_path / "admin-home") as here:
        _keys(home).rotate(LEDGER, "admin", home.append)
        _notes(home, 5, 2)
        root = b"\x07" * 32
        after = _note(K1, 7, root)  # signed past the rotation (height 4) by the new key
        retired = _note(K0, 7, root)
        chains = ClusterChains(here, home, lambda ledger: K0.verifier())
        chain = chains.chain(LEDGER)
        assert chain is not None and chain.heights == (4,) and chains.current(LEDGER) == K1.verifier()
        keys = chains.keys(CLUSTER)
        assert keys.check(LEDGER, after).size == 7
        with pytest.raises(NoteError):  # the retired key past its rotation
            keys.check(LEDGER, retired)
        # A stream whose genesis pins a key other than the configured one proves nothing: the
        # configured key alone, which did not sign the note.
        forged = ClusterChains(here, home, lambda ledger: K2.verifier())
        assert forged.chain(LEDGER) == KeyChain(LEDGER, (K2.verifier(),))
        with pytest.raises(NoteError):
            forged.keys(CLUSTER).check(LEDGER, after)
        assert ClusterChains(here, home, lambda ledger: None).chain(LEDGER) is None
        # Held here (a copy of the same records): the store's chain, whatever the stream holds.
        here.append_records(list(home.range(LEDGER)))
        with ChainStore(tmp_path / "empty") as empty:
            held = ClusterChains(here, empty, lambda ledger: K2.verifier())
            assert held.keys(CLUSTER).check(LEDGER, after).size == 7


def _note(key: SignerKey, size: int, root: bytes) -> bytes:
    body = Checkpoint(ORIGIN, size, root).body()
    return Note(body, (sign(body, key),)).encode()


class _Pages:
    """A stream in memory: the home's records by height, each page with the notes of the sizes
    that end among its rows (as the outbox puts a checkpoint on a stream entry)."""

    name = "redis"

    def __init__(self, records: list[Record], notes: list[tuple[int, bytes]], name: str = "redis") -> None:
        self.name = name
        self.records = records
        self.notes = notes
        self.latest: dict[str, bytes] = {}  # as Redis's checkpoint key, read at start

    def fetch(self, ledger: str, start: int, count: int) -> Page:
        rows = [(r.height, r.encode()) for r in self.records[start : start + count]]
        return Page(rows, [note for size, note in self.notes if start < size <= start + len(rows)])

    def checkpoints(self) -> dict[str, bytes]:
        return dict(self.latest)


class _Replica:
    def __init__(
        self,
        directory: Path,
        sources: list[_Pages] | None = None,
        checker: PageChecker | None = None,
        witnessed: Callable[[str], tuple[Mapping[str, bytes], int]] | None = None,
        max_held: int = MAX_HELD_RECORDS,
        epochs: bool = False,
    ) -> None:
        self.store = ChainStore(directory, origin="replica-1")
        self.alerts: list[Alert] = []
        self.resolved: list[str] = []
        self.evidence: list[Any] = []
        self.chains = KeyChains(self.store, lambda ledger: None)
        keys: CheckpointKeys = self.chains.keys(CLUSTER)
        if epochs:  # as a replica or standby follows (ingest/replica.py ledger_checkpoint_keys)
            keys = EpochKeys(CLUSTER, self.chains.current, EpochBook(CLUSTER, self.store).history, base=keys)
        self.follower = Follower(
            "replica-1",
            self.store,
            sources or [],
            keys=keys,
            home_of=lambda ledger: "home",
            on_stored=lambda records, hops: None,
            on_alert=self.alerts.append,
            on_resolve=lambda keys, upto: self.resolved.extend(keys),
            on_evidence=lambda checkpoint, source, proof: self.evidence.append(checkpoint),
            batch=3,
            checker=checker,
            witnessed=None if witnessed is None else (lambda held: {ledger: witnessed(ledger) for ledger in held}),
            max_held=max_held,
        )
        self.chains.pending = self.follower.key_records

    def feed(self, records: list[Record], note: bytes) -> None:
        self.follower.receive([FeedRecord(LEDGER, r.height, 1, "home", r.encode()) for r in records])
        self.follower.receive([FeedCheckpoints("home", {LEDGER: note})])


def test_a_follower_stores_under_the_new_key_and_keeps_a_retired_keys_checkpoint_as_evidence(tmp_path: Path) -> None:
    with _home(tmp_path / "home") as home:
        _keys(home).rotate(LEDGER, "admin", home.append)
        _notes(home, 5, 3)
        records, size, root = list(home.range(LEDGER)), home.size(LEDGER), home.root(LEDGER)
    replica = _Replica(tmp_path / "replica")
    with replica.store:
        # The rotation is still pending when the checkpoint over it, by the new key, arrives.
        replica.feed(records, _note(K1, size, root))
        assert replica.store.size(LEDGER) == size and replica.alerts == []
        # The retired key signs the same true tree past its rotation: refused, kept, the home named.
        retired = _note(K0, size, root)
        replica.follower.receive([FeedCheckpoints("home", {LEDGER: retired})])
        assert [(a.what, a.source) for a in replica.alerts] == [("retired_key", "home")]
        assert [c.note for c in replica.store.checkpoints.all(LEDGER, EVIDENCE)] == [retired]
        assert len(replica.evidence) == 1


def test_a_follower_refuses_a_rotation_the_key_in_force_did_not_sign(tmp_path: Path) -> None:
    with _home(tmp_path / "home") as home:
        records = list(home.range(LEDGER))
        forged = Entry.prepare(
            Content(LEDGER, ROTATION_KIND, rotation_payload(K1, K0.verifier()), "admin", "rot", T0), 0, LIMITS
        ).place(len(records), records[-1].link, T0 + 99, "home")
    replica = _Replica(tmp_path / "replica")
    with replica.store:
        replica.feed([*records, forged], _note(K0, len(records) + 1, bytes(32)))
        assert replica.store.size(LEDGER) < len(records) + 1
        assert "bad_rotation" in [a.what for a in replica.alerts]


def test_a_follower_under_epochs_refuses_any_rotation_of_a_ledger_with_a_standby(tmp_path: Path) -> None:
    """Outsider o16 F4: a rotation signed by the key in force, on a ledger whose genesis pins a
    standby key, is refused [standby_rotation] by a replica or standby (EpochKeys), whose run
    under a true checkpoint of the home's key was stored with it unchecked before."""
    with _home(tmp_path / "home", standby=True) as home:
        records = list(home.range(LEDGER))
    forged = Entry.prepare(
        Content(LEDGER, ROTATION_KIND, rotation_payload(K0, K1.verifier()), "admin", "rot", T0), 0, LIMITS
    ).place(len(records), records[-1].link, T0 + 99, "home")
    run = [*records, forged]
    replica = _Replica(tmp_path / "replica", epochs=True)
    with replica.store:
        replica.feed(run, _note(K0, len(run), _root(run)))
        assert replica.store.size(LEDGER) < len(run)
        assert "standby_rotation" in [a.what for a in replica.alerts]
        replica.feed(records, _note(K0, len(records), _root(records)))  # the honest run: stored
        assert replica.store.size(LEDGER) == len(records)


def _root(records: list[Record]) -> bytes:
    return tree.root_at(len(records), hash_at_of([tree.leaf_hash(r.encode()) for r in records]))


def test_a_catch_up_through_a_rotation_checks_each_later_note_with_the_new_key(
    tmp_path: Path, checker: PageChecker | None
) -> None:
    """Pages of 3, a note over every size past the first page: the run holding the rotation goes to the store
    before the next page's notes (by the new key) are checked, so they verify, and a note the
    retired key signed over the true tree past the rotation is evidence, as on the feed."""
    with _home(tmp_path / "home") as home:
        keys = _keys(home)
        keys.rotate(LEDGER, "admin", home.append)  # height 4
        _notes(home, 5, 6)
        records, size = list(home.range(LEDGER)), home.size(LEDGER)
        # From the second page on: the first page's notes would come before the genesis that pins the key.
        notes = [(n, keys.sign(LEDGER, n, home.root(LEDGER, n)).note) for n in range(4, size + 1)]
        retired = _note(K0, size, home.root(LEDGER))
    replica = _Replica(tmp_path / "replica", [_Pages(records, [*notes, (size, retired)])], checker)
    with replica.store:
        assert replica.follower.catch_up(LEDGER, size)
        assert list(replica.store.range(LEDGER)) == records
        assert [(a.what, a.source) for a in replica.alerts] == [("retired_key", "home")]
        assert [c.note for c in replica.store.checkpoints.all(LEDGER, EVIDENCE)] == [retired]


WITNESSES = [WitnessSigner(witness_name(CLUSTER, f"replica-{i}"), bytes([i + 50]) * 32) for i in range(3)]


def _rotated_and_forked(
    tmp_path: Path, forked_records: int = 4
) -> tuple[list[Record], list[tuple[int, bytes]], list[Record], bytes]:
    """The true chain: 4 records, a rotation at 4, 5 more (a note by the key in force over every
    size from 4 on); a fork of it from 4 as a home put back from a copy older than its rotation
    makes: 4 other records under a note by the old key K0, which a chain without the rotation
    takes for the home's."""
    with _home(tmp_path / "home") as home:
        keys = _keys(home)
        keys.rotate(LEDGER, "admin", home.append)
        _notes(home, 5, 5)
        records = list(home.range(LEDGER))
        notes = [(n, keys.sign(LEDGER, n, home.root(LEDGER, n)).note) for n in range(4, home.size(LEDGER) + 1)]
    with _home(tmp_path / "fork") as fork:
        _notes(fork, 4, forked_records)
        forked = list(fork.range(LEDGER))
        fork_note = _note(K0, fork.size(LEDGER), fork.root(LEDGER))
    assert forked[:4] == records[:4] and forked[4] != records[4]
    return records, notes, forked, fork_note


def _witnessed(note: bytes, *witnesses: WitnessSigner) -> dict[str, bytes]:
    """Each witness's note in Redis: ``note`` with its cosignature line."""
    checkpoint = SignedCheckpoint(LEDGER, 0, b"", note)  # cosign reads the note only
    return {w.name: w.cosign(checkpoint, 1_790_000_000) for w in witnesses}


def _put_back(directory: Path, records: list[Record]) -> None:
    """A copy of the replica's store from before the rotation: the first 4 records."""
    with ChainStore(directory, origin="replica-1") as copy:
        copy.append_records(records[:4])


def test_a_copy_put_back_before_a_rotation_never_stores_a_fork_the_old_key_signed_and_takes_the_true_chain(
    tmp_path: Path, checker: PageChecker | None
) -> None:
    """Outsider o13 F2 (PROTOCOL 10.7): a replica put back from a copy older than `rotate-key`
    read from Redis a fork signed by the old key past the rotation, stored it and cosigned it.
    A quorum of the witnesses' notes (by the new key, which its chain cannot check) now holds it
    back: the fork waits, the next source's true chain brings the rotation, and the witnessed
    note proves it. The fork's note is then the retired key's (kept, told, 13.8),
    and each fork record is told against the source that gave it."""
    records, notes, forked, fork_note = _rotated_and_forked(tmp_path)
    size = len(records)
    redis = _Pages(forked, [(len(forked), fork_note)])
    redis.latest = {LEDGER: fork_note}  # the fork's home set it
    peer = _Pages(records, notes, name="replica-2")
    seen: list[str] = []

    def witnessed(ledger: str) -> tuple[Mapping[str, bytes], int]:
        seen.append(ledger)
        return _witnessed(notes[-1][1], *WITNESSES[:2]), 2  # 2 of the 3 witnesses hold the true tree

    _put_back(tmp_path / "replica", records)
    replica = _Replica(tmp_path / "replica", [redis, peer], checker, witnessed)
    with replica.store:
        replica.follower.start()
        assert seen == [LEDGER]
        assert list(replica.store.range(LEDGER)) == records  # never a record of the fork
        assert replica.follower.status() == {"current": True, "behind": {}}
        replica.follower.refresh_witnessed(unsettled_only=True)  # the replica's each second
        assert seen == [LEDGER]  # a current copy: Redis is not asked
        checkpoint = replica.follower.checkpoint_of(LEDGER)
        assert checkpoint is not None and checkpoint.size == size
        assert [c.note for c in replica.store.checkpoints.all(LEDGER, EVIDENCE)] == [fork_note]
        # The old key's note past the rotation names the home; each fork record the source that gave it.
        assert sorted((a.what, a.source, a.height) for a in replica.alerts) == [
            ("record_conflict", "redis", height) for height in range(4, 8)
        ] + [("retired_key", "home", 7)]


def test_a_copy_held_back_stores_nothing_while_no_source_brings_the_rotation(tmp_path: Path) -> None:
    """Only the fork to fetch (the other sources down): it stays pending, the copy says it is
    behind up to what its sources served (the witnesses' notes are read unchecked: they alone
    claim nothing, review r21 F3) and raises held_back about itself, every source asked; once a
    source of the true chain answers, that is stored and the alert closed."""
    records, notes, forked, fork_note = _rotated_and_forked(tmp_path)
    redis = _Pages(forked, [(len(forked), fork_note)])
    redis.latest = {LEDGER: fork_note}
    _put_back(tmp_path / "replica", records)
    replica = _Replica(tmp_path / "replica", [redis], None, lambda ledger: (_witnessed(notes[-1][1], *WITNESSES), 2))
    with replica.store:
        replica.follower.start()
        assert replica.store.size(LEDGER) == 4
        assert replica.follower.status() == {"current": False, "behind": {LEDGER: len(forked) - 4}}
        assert [(a.what, a.source, a.height) for a in replica.alerts] == [("held_back", "replica-1", len(forked) - 1)]
        replica.follower.sources.append(_Pages(records, notes, name="ingest-1"))
        replica.follower.catch_up_all()
        assert list(replica.store.range(LEDGER)) == records
        assert "replica-1|ledger-a|held_back" in replica.resolved


def test_fewer_witnesses_than_a_quorum_hold_nothing_back(tmp_path: Path) -> None:
    """One witness's note alone is no quorum of 2: the copy goes on as before (here it takes
    the fork its chain verifies, which the witnesses then refuse to cosign)."""
    records, notes, forked, fork_note = _rotated_and_forked(tmp_path)
    redis = _Pages(forked, [(len(forked), fork_note)])
    redis.latest = {LEDGER: fork_note}
    _put_back(tmp_path / "replica", records)
    replica = _Replica(tmp_path / "replica", [redis], None, lambda ledger: (_witnessed(notes[-1][1], WITNESSES[0]), 2))
    with replica.store:
        replica.follower.start()
        assert list(replica.store.range(LEDGER)) == forked


def test_a_fork_longer_than_the_witnessed_chain_is_dropped_once_it_reaches_their_notes(tmp_path: Path) -> None:
    """The old key's fork goes past the size the witnesses cosigned (a quiet true chain): once
    the pending run reaches their notes without the rotation they need, it is not their chain.
    It is dropped, its source left for the next, and the true chain stored; held for ever, the
    copy never asked another source."""
    records, notes, forked, fork_note = _rotated_and_forked(tmp_path, forked_records=9)
    assert len(forked) > len(records)
    redis = _Pages(forked, [(len(forked), fork_note)])
    redis.latest = {LEDGER: fork_note}
    _put_back(tmp_path / "replica", records)
    sources = [redis, _Pages(records, notes, name="replica-2")]
    replica = _Replica(tmp_path / "replica", sources, None, lambda ledger: (_witnessed(notes[-1][1], *WITNESSES), 2))
    with replica.store:
        replica.follower.start()
        assert list(replica.store.range(LEDGER)) == records
        assert {(a.what, a.source) for a in replica.alerts} == {("record_conflict", "redis"), ("retired_key", "home")}
