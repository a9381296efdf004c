"""The verifier holds each copy's tree against the largest checkpoint it verified, home up or down.

The copies are real stores (their records, trees and proofs as a node serves them); the home's
signed note is in a real Redis, as the home's outbox leaves it. A copy forked below the
checkpoint (every record valid on its own, linked to the one before: anyone can make them) is
a fork while the home is away; an honest copy, one behind the checkpoint and one across a
checkpoint-key rotation raise nothing, and an unchanged copy is not asked again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.replication import Alert, ReplicationLedger
from vledger.config.cluster import VerifierSettings, cluster_from_mapping
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.node.key_rotation import ROTATION_KIND, rotation_payload
from vledger.node.ledger import LedgerRules
from vledger.node.note import ALG_COSIGNATURE_V1, ALG_ED25519, Checkpoint, Note, SignerKey, cosign, parse_note, sign
from vledger.node.record import Content, Entry
from vledger.node.store import ChainStore
from vledger.verifier.checks import ClusterChecks

LEDGER = "votes"
ORIGIN = f"test/{LEDGER}"
K0 = SignerKey(ORIGIN, ALG_ED25519, bytes(range(32)))  # the key the genesis pins
K1 = SignerKey(ORIGIN, ALG_ED25519, bytes(range(1, 33)))  # the key a rotation names
KS = SignerKey(ORIGIN, ALG_ED25519, bytes(range(2, 34)))  # the standby's key the genesis pins beside K0
W = SignerKey("test/witness/replica-1", ALG_COSIGNATURE_V1, bytes(range(3, 35)))  # a witness's cosignature key
VOTES = 12
FORK_AT = 6  # the forked copy's first record that is not the home's


class StoreNode:
    """A node's read commands over one store, as the verifier's NodeReader answers them."""

    def __init__(self, name: str, store: ChainStore) -> None:
        self.name = name
        self.store = store
        self.page_size = 500
        self.answering = True
        self.asked: Counter[str] = Counter()
        self.served_checkpoint: tuple[bytes, list[int]] | None = None
        self.proofs = "kept"  # "none": answers bad_tree_size; "short": a proof no tree of that size has

    def up(self) -> bool:
        return self.answering

    def down(self, seconds: float, error: Exception) -> None:
        raise AssertionError(f"{self.name} taken down: {error}")

    def head(self, ledger: str) -> tuple[int, bytes] | None:
        record = self.store.head(ledger)
        return None if record is None else (record.height, record.hash)

    def record(self, ledger: str, height: int) -> bytes | None:
        self.asked["get"] += 1
        record = self.store.get(ledger, height)
        return None if record is None else record.encode()

    def hash_at(self, ledger: str, height: int) -> bytes | None:
        record = self.store.get(ledger, height)
        return None if record is None else record.hash

    def page(self, ledger: str, start: int, limit: int) -> list[bytes]:
        return [data for _, data in self.store.range_raw(ledger, start, start + limit)]

    def span(self, ledger: str, start: int, count: int) -> list[bytes]:
        return self.page(ledger, start, count)

    def inclusion(self, ledger: str, index: int, size: int) -> list[bytes] | None:
        self.asked["proof.inclusion"] += 1
        if size > self.store.size(ledger) or self.proofs == "none":
            return None  # bad_tree_size
        proof = self.store.inclusion_proof(ledger, index, size)
        return proof[1:] if self.proofs == "short" else proof

    def checkpoint(self, ledger: str) -> tuple[bytes, list[int]] | None:
        self.asked["checkpoint"] += 1
        return self.served_checkpoint

    def ledgers(self) -> list[str]:
        return list(self.store.ledgers())


def _store(path: Path, votes: list[int], rotate_at: int | None = None) -> ChainStore:
    """A home's ledger pinning K0 and the standby's KS, then ``votes``; or, with ``rotate_at``,
    one pinning K0 alone (a ledger with a standby never rotates, 13.8) and the rotation to K1
    at that height."""
    store = ChainStore(path, origin="ingest-1")
    if rotate_at is None:  # a ledger that cannot rotate but may hand over
        rules = LedgerRules(
            ("vote", "epoch"), 0, {"checkpoint_key": K0.verifier().encode(), "standby_key": KS.verifier().encode()}
        )
    else:
        rules = LedgerRules(("vote", ROTATION_KIND), 0, {"checkpoint_key": K0.verifier().encode()})
    store.create_ledger(Entry.prepare(rules.genesis_content(LEDGER, "admin", "g", 1), 0, PROTOCOL_LIMITS))
    for i, n in enumerate(votes):
        if store.size(LEDGER) == rotate_at:
            rotation = Content(LEDGER, ROTATION_KIND, rotation_payload(K0, K1.verifier()), "admin", "rotate", 2)
            store.append(Entry.prepare(rotation, 0, PROTOCOL_LIMITS))
        _vote(store, n, f"r{i}")
    return store


def _vote(store: ChainStore, n: int, request_id: str) -> None:
    store.append(Entry.prepare(Content(LEDGER, "vote", {"n": n}, "admin", request_id, 2), 0, PROTOCOL_LIMITS))


def _copy(path: Path, source: ChainStore, size: int, forked: int = 0) -> ChainStore:
    """A follower's store: ``source``'s first ``size`` records, byte for byte, then ``forked``
    records of its own (each valid on its own and linked: a fork)."""
    store = ChainStore(path, origin="ingest-1")
    store.append_records(source.range(LEDGER, 0, size))
    for n in range(forked):
        _vote(store, -n - 1, f"forked-{n}")
    return store


def _note(store: ChainStore, size: int, key: SignerKey = K0) -> bytes:
    body = Checkpoint(ORIGIN, size, store.root(LEDGER, size)).body()
    return Note(body, (sign(body, key),)).encode()


def _made_up_note(size: int, key: SignerKey, epoch: tuple[int, str] | None = None) -> bytes:
    """A note of any tree its key's holder cares to sign: ``size`` records, a root of no store."""
    lines = () if epoch is None else (f"vledger-epoch {epoch[0]} {epoch[1]}",)
    body = Checkpoint(ORIGIN, size, bytes(range(32)), lines).body()
    return Note(body, (sign(body, key),)).encode()


def _epoch_note(store: ChainStore, size: int, home: str) -> bytes:
    """The standby's key's note of ``store``'s tree at ``size``, stating epoch 2 with ``home``."""
    body = Checkpoint(ORIGIN, size, store.root(LEDGER, size), (f"vledger-epoch 2 {home}",)).body()
    return Note(body, (sign(body, KS),)).encode()


def _cosigned(note: bytes, witness: SignerKey = W) -> bytes:
    """``note`` with ``witness``'s cosignature line added."""
    parsed = parse_note(note)
    return Note(
        parsed.text, (*parsed.signatures, cosign(parsed.text, witness, 1_790_000_000).note_signature())
    ).encode()


class Cluster:
    """A home and two replicas as stores, and the verifier's checks over them."""

    def __init__(self, redis_client: Any, tmp_path: Path, rotate_at: int | None = None) -> None:
        home = _store(tmp_path / "home", list(range(VOTES)), rotate_at)
        size = home.size(LEDGER)
        self.stores = {
            "ingest-1": home,
            "replica-1": _copy(tmp_path / "r1", home, size),
            "replica-2": _copy(tmp_path / "r2", home, FORK_AT, size - FORK_AT),  # heights FORK_AT.. differ
        }
        self.nodes = {name: StoreNode(name, store) for name, store in self.stores.items()}
        config = cluster_from_mapping(
            {
                "cluster": {"name": "test", "default_home": "ingest-1"},
                "nodes": {
                    "ingest-1": {"role": "ingest", "port": 7001, "pub_port": 7101},
                    "replica-1": {"role": "replica", "port": 7011},
                    "replica-2": {"role": "replica", "port": 7012},
                },
            },
            tmp_path / "cluster.toml",
        )
        self.repl = ReplicationLedger(redis_client)
        self.repl.client.hset(self.repl.ledgers_key, LEDGER, "ingest-1")
        self.checks = ClusterChecks(
            "verifier-1",
            config,
            self.repl,
            self.nodes,  # type: ignore[arg-type]
            settings=VerifierSettings(),
            clock=lambda: 1000.0,
            witness_keys=lambda: (W.verifier(),),
        )
        self.checks.start()

    @property
    def size(self) -> int:
        return self.stores["ingest-1"].size(LEDGER)

    def home_down(self) -> None:
        self.nodes["ingest-1"].answering = False

    def publish(self, note: bytes) -> None:
        self.repl.set_checkpoints({LEDGER: note})

    def cosigned_by_witness(self, note: bytes) -> None:
        """``note`` as replica-1's cosigned note in Redis (any ingest user may write it there too)."""
        self.repl.publish_cosignature(LEDGER, "replica-1", 0, note)

    def alerts(self) -> list[dict[str, str]]:
        return [a for a in self.repl.alerts(100) if a["ledger"] == LEDGER]

    def close(self) -> None:
        for store in self.stores.values():
            store.close()


@pytest.fixture
def cluster(redis_client: Any, tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(redis_client, tmp_path)
    yield running
    running.close()


def test_with_the_home_away_a_copy_forked_below_the_checkpoint_is_a_fork_named_where_it_starts(
    cluster: Cluster,
) -> None:
    cluster.home_down()
    cluster.publish(_note(cluster.stores["ingest-1"], cluster.size))
    cluster.checks.compare_heads()
    (alert,) = cluster.alerts()
    honest, forked = cluster.stores["replica-1"], cluster.stores["replica-2"]
    assert (alert["node"], alert["what"], alert["height"], alert["source"]) == (
        "replica-2",
        "fork",
        str(FORK_AT),
        "ingest-1",
    )
    assert alert["expected"] == honest.get(LEDGER, FORK_AT).hash.hex()  # type: ignore[union-attr]
    assert alert["found"] == forked.get(LEDGER, FORK_AT).hash.hex()  # type: ignore[union-attr]
    assert set(cluster.repl.open_alerts()) == {f"replica-2|{LEDGER}|fork"}


def test_honest_copies_raise_nothing_one_behind_is_not_asked_and_an_unchanged_copy_is_asked_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.home_down()
    cluster.stores["replica-2"].close()
    cluster.stores["replica-2"] = _copy(
        tmp_path / "behind", cluster.stores["ingest-1"], cluster.size - 2
    )  # behind the checkpoint
    cluster.nodes["replica-2"].store = cluster.stores["replica-2"]
    cluster.publish(_note(cluster.stores["ingest-1"], cluster.size))
    for _ in range(3):
        cluster.checks.compare_heads()
    assert cluster.alerts() == []
    assert cluster.nodes["replica-1"].asked == Counter({"get": 1, "proof.inclusion": 1})
    assert cluster.nodes["replica-2"].asked == Counter()
    # A larger checkpoint (a record more on the home and replica-1): asked again, once.
    _vote(cluster.stores["ingest-1"], 99, "late")
    cluster.stores["replica-1"].append_records([cluster.stores["ingest-1"].head(LEDGER)])  # type: ignore[list-item]
    cluster.publish(_note(cluster.stores["ingest-1"], cluster.size))
    cluster.checks.compare_heads()
    assert cluster.alerts() == [] and cluster.nodes["replica-1"].asked["proof.inclusion"] == 2


def test_a_fork_found_by_the_checkpoint_resolves_once_the_copy_holds_its_tree_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.home_down()
    cluster.publish(_note(cluster.stores["ingest-1"], cluster.size))
    cluster.checks.compare_heads()
    assert set(cluster.repl.open_alerts()) == {f"replica-2|{LEDGER}|fork"}
    cluster.stores["replica-2"].close()
    cluster.stores["replica-2"] = _copy(
        tmp_path / "repaired", cluster.stores["ingest-1"], cluster.size
    )  # rebuilt from an honest copy
    cluster.nodes["replica-2"].store = cluster.stores["replica-2"]
    cluster.checks.compare_heads()
    assert cluster.repl.open_alerts() == {}


@pytest.mark.parametrize("proofs", ["none", "short"])
def test_a_copy_that_cannot_prove_its_tree_is_not_a_fork(cluster: Cluster, proofs: str) -> None:
    cluster.home_down()
    cluster.nodes["replica-2"].proofs = proofs
    cluster.publish(_note(cluster.stores["ingest-1"], cluster.size))
    cluster.checks.compare_heads()
    assert cluster.alerts() == []
    assert cluster.nodes["replica-2"].asked["proof.inclusion"] == 1


def test_with_the_home_up_a_copy_it_vouches_for_is_not_asked_and_a_fork_is_raised_once(cluster: Cluster) -> None:
    cluster.publish(_note(cluster.stores["ingest-1"], cluster.size))
    cluster.checks.compare_heads()
    cluster.checks.compare_heads()
    (alert,) = cluster.alerts()
    assert (alert["node"], alert["what"], alert["height"]) == ("replica-2", "fork", str(FORK_AT))
    assert cluster.nodes["replica-1"].asked == Counter()  # its head is the home's record: its prefix is too


def test_a_note_that_does_not_verify_proves_nothing(cluster: Cluster) -> None:
    cluster.home_down()
    cluster.publish(_note(cluster.stores["replica-2"], cluster.size, K1))  # the fork's tree, by a key never pinned
    cluster.checks.compare_heads()
    assert cluster.alerts() == []
    assert cluster.nodes["replica-1"].asked["proof.inclusion"] == 0


def test_across_a_key_rotation_the_checkpoint_of_the_new_key_is_proven_and_the_retired_key_s_is_not(
    redis_client: Any, tmp_path: Path
) -> None:
    rotated = Cluster(redis_client, tmp_path, rotate_at=3)
    try:
        home = rotated.stores["ingest-1"]
        rotated.home_down()
        # The retired key signs the forked tree past the rotation: refused, nothing raised on it.
        rotated.publish(_note(rotated.stores["replica-2"], rotated.size, K0))
        rotated.checks.compare_heads()
        assert rotated.alerts() == []
        # The key in force's note: its rotation is learned from a node's checkpoint answer (the
        # record, a valid rotation, proven included in the checkpoint's tree).
        note = _note(home, rotated.size, K1)
        rotated.publish(note)
        rotated.nodes["replica-1"].served_checkpoint = (note, [3])
        rotated.checks.ledgers[LEDGER].ask_nodes_at = 0.0
        rotated.checks.compare_heads()
        (alert,) = rotated.alerts()
        assert (alert["node"], alert["what"], alert["height"]) == ("replica-2", "fork", str(FORK_AT))
    finally:
        rotated.close()


def _swap(cluster: Cluster, name: str, store: ChainStore) -> None:
    cluster.stores[name].close()
    cluster.stores[name] = store
    cluster.nodes[name].store = store


def test_a_home_that_contradicts_its_verified_checkpoint_is_named_not_the_copies_that_hold_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Finding 5: the home's tail rewritten (records and tree) after it signed a checkpoint that
    the replicas hold. The home's word is not the reference, the checkpoint its key signed is:
    the home is named (store_contradicts_checkpoint), the honest copies are not, and a fork an
    earlier verifier raised against one on the home's word resolves."""
    size = cluster.size
    cluster.publish(_note(cluster.stores["ingest-1"], size))  # signed while the home was intact
    honest = cluster.stores["ingest-1"]
    _swap(cluster, "replica-2", _copy(tmp_path / "r2-honest", honest, size))
    cluster.stores["ingest-1"] = _copy(tmp_path / "home-rewritten", honest, FORK_AT, size - FORK_AT)
    cluster.nodes["ingest-1"].store = cluster.stores["ingest-1"]
    cluster.stores["replica-1"], old = _copy(tmp_path / "r1-honest", honest, size), cluster.stores["replica-1"]
    cluster.nodes["replica-1"].store = cluster.stores["replica-1"]
    old.close()
    honest.close()
    cluster.checks.raise_alert(Alert("replica-1", LEDGER, FORK_AT, "fork", "raised on the home's word"))
    cluster.checks.compare_heads()
    cluster.checks.compare_heads()
    rewritten = cluster.stores["ingest-1"].root(LEDGER, size)
    raised = [a for a in cluster.alerts() if a["what"] != "fork"]
    assert [(a["node"], a["what"], a["height"], a["source"], a["found"]) for a in raised] == [
        ("ingest-1", "store_contradicts_checkpoint", str(size - 1), "ingest-1", rewritten.hex())
    ]
    assert set(cluster.repl.open_alerts()) == {f"ingest-1|{LEDGER}|store_contradicts_checkpoint"}
    # A copy that really forks is still named, against a copy proven to hold the checkpoint.
    _swap(
        cluster,
        "replica-2",
        _copy(tmp_path / "r2-forked", cluster.stores["replica-1"], FORK_AT + 2, size - FORK_AT - 2),
    )
    cluster.checks.compare_heads()
    fork = next(a for a in cluster.alerts() if a["what"] == "fork" and a["node"] == "replica-2")
    assert fork["height"] == str(FORK_AT + 2)
    assert fork["expected"] == cluster.stores["replica-1"].get(LEDGER, FORK_AT + 2).hash.hex()  # type: ignore[union-attr]
    # The home's store restored: it is the reference again (the alert is the operator's to resolve).
    _swap(cluster, "ingest-1", _copy(tmp_path / "home-restored", cluster.stores["replica-1"], size))
    cluster.checks.compare_heads()
    assert cluster.checks.ledgers[LEDGER].home_contradicts is False


def _blamed(cluster: Cluster) -> list[str]:
    return [a["node"] for a in cluster.alerts() if a["what"] == "store_contradicts_checkpoint"]


def test_a_standby_s_note_before_any_handover_blames_no_home_and_proves_no_copy(cluster: Cluster) -> None:
    """Reviewer's sequence A: the standby's pinned key signs an epoch-2 note, far past the home's
    head and of any root, while Redis names no handover (anyone with the ingest user can put it
    in the checkpoint key). It is no checkpoint of the ledger's epoch: the honest home is not
    named, and the forked copy is a fork by the home's word, as without the note."""
    cluster.publish(_made_up_note(cluster.size + 1000, KS, (2, "standby-1")))
    cluster.checks.compare_heads()
    cluster.checks.compare_heads()
    assert _blamed(cluster) == []
    assert [(a["node"], a["what"], a["height"]) for a in cluster.alerts()] == [("replica-2", "fork", str(FORK_AT))]
    assert cluster.checks.ledgers[LEDGER].checkpoint.proven is None  # type: ignore[union-attr]


def test_after_a_handover_only_the_new_epoch_s_notes_are_held_and_a_fenced_one_blames_nobody(
    cluster: Cluster,
) -> None:
    """Reviewer's sequence B, the handover proven: the standby's key signed a checkpoint of
    epoch 2 and a witness cosigned it. The epoch-1 checkpoint held is dropped (an earlier
    home's note may lie past the handover), a larger epoch-1 note (a fenced home's, of a tree
    the new epoch never had) is not taken and blames no one, and the new epoch's note is."""
    size = cluster.size
    cluster.publish(_note(cluster.stores["ingest-1"], size))
    cluster.checks.compare_heads()
    held = cluster.checks.ledgers[LEDGER].checkpoint
    assert held is not None and held.proven is not None and held.proven.size == size
    cluster.repl.client.hset(cluster.repl.epochs_key, LEDGER, "2 standby-1")
    epoch_2 = _cosigned(_epoch_note(cluster.stores["ingest-1"], size, "standby-1"))
    cluster.cosigned_by_witness(epoch_2)
    cluster.checks.refresh_ledgers()
    state = cluster.checks.ledgers[LEDGER]
    assert (state.epoch, state.home, held.proven) == ((2, "standby-1"), "standby-1", None)
    assert "ingest-1" not in state.copies  # replaced: its copy is no longer the ledger's
    cluster.publish(_made_up_note(size + 1000, K0))  # the epoch-1 key, fenced: any tree
    cluster.checks.compare_heads()
    cluster.checks.compare_heads()
    assert _blamed(cluster) == []
    assert held.proven is not None and (held.proven.size, held.proven.epoch) == (size, (2, "standby-1"))


def _taken(cluster: Cluster) -> tuple[int, bytes] | None:
    held = cluster.checks.ledgers[LEDGER].checkpoint
    return None if held is None or held.proven is None else (held.proven.size, held.proven.root)


def test_a_standby_s_note_no_witness_cosigned_is_no_root_and_proves_no_epoch(cluster: Cluster) -> None:
    """PROTOCOL 10.9, 14.3 step 7, as clients apply it: a checkpoint the standby's key signed
    counts only with a witness's verified cosignature. Redis names epoch 2 at the standby and
    holds its note of a made-up root, uncosigned, then with a cosignature line forged in the
    witness's name (another key): the verifier proves no epoch from either, keeps the home
    and the checkpoint of epoch 1 it verified, and no copy or home is held against that root."""
    size = cluster.size
    cluster.publish(_note(cluster.stores["ingest-1"], size))
    cluster.checks.compare_heads()
    assert _taken(cluster) == (size, cluster.stores["ingest-1"].root(LEDGER, size))
    forger = SignerKey(W.name, ALG_COSIGNATURE_V1, bytes(range(4, 36)))
    for forged in (
        _made_up_note(size + 5, KS, (2, "standby-1")),
        _cosigned(_made_up_note(size + 5, KS, (2, "standby-1")), forger),
    ):
        cluster.repl.client.hset(cluster.repl.epochs_key, LEDGER, "2 standby-1")
        cluster.publish(forged)
        cluster.cosigned_by_witness(forged)
        cluster.checks.refresh_ledgers()
        state = cluster.checks.ledgers[LEDGER]
        assert (state.epoch, state.home) == ((1, None), "ingest-1")
        assert "ingest-1" in state.copies
        held = state.checkpoint
        assert held is not None and held.proven_epoch([forged]) is None
        assert held.offer(forged) is False  # not the root held: as a note that does not verify today
        cluster.checks.compare_heads()
        assert _taken(cluster) == (size, cluster.stores["ingest-1"].root(LEDGER, size))
    assert _blamed(cluster) == []
    # The same note, cosigned by the witness's own key, is taken: epoch 2 proven, its root held.
    cosigned = _cosigned(_epoch_note(cluster.stores["ingest-1"], size, "standby-1"))
    cluster.cosigned_by_witness(cosigned)
    cluster.checks.refresh_ledgers()
    assert cluster.checks.ledgers[LEDGER].epoch == (2, "standby-1")
    held = cluster.checks.ledgers[LEDGER].checkpoint
    assert held is not None and held.offer(cosigned)
    assert _taken(cluster) == (size, cluster.stores["ingest-1"].root(LEDGER, size))


def test_a_home_or_epoch_only_redis_names_changes_nothing(cluster: Cluster) -> None:
    """Every ingest node's Redis user writes vledger:{ledgers} and its epochs hash: one HSET of
    each (a replica named home, a made-up epoch) neither makes the verifier blame the real home
    nor take the named one's copy as the reference, nor drops the home's copy."""
    state = cluster.checks.ledgers[LEDGER]
    cluster.repl.client.hset(cluster.repl.ledgers_key, LEDGER, "replica-2")
    cluster.repl.client.hset(cluster.repl.epochs_key, LEDGER, "7 replica-2")
    cluster.checks.refresh_ledgers()
    assert (state.home, state.epoch) == ("ingest-1", (1, None))
    assert set(state.copies) == {"ingest-1", "replica-1", "replica-2"}
    cluster.publish(_note(cluster.stores["ingest-1"], cluster.size))
    cluster.checks.compare_heads()
    alerts = [(a["node"], a["what"]) for a in cluster.alerts()]
    assert alerts == [("replica-2", "fork")]  # the forked copy, by the real home's word


def test_a_home_named_anew_is_not_held_to_what_was_decided_of_the_one_before(cluster: Cluster) -> None:
    """Whether the home contradicts the checkpoint is the old home's verdict: a new home (a
    handover proven) starts clean."""
    state = cluster.checks.ledgers[LEDGER]
    state.home_contradicts, state.home_checked = True, (cluster.size, cluster.size - 1, b"x" * 32)
    cluster.repl.client.hset(cluster.repl.epochs_key, LEDGER, "2 replica-1")
    cluster.cosigned_by_witness(_cosigned(_epoch_note(cluster.stores["ingest-1"], cluster.size, "replica-1")))
    cluster.checks.refresh_ledgers()
    assert (state.home, state.home_contradicts, state.home_checked) == ("replica-1", False, None)


def test_redis_s_latest_checkpoint_set_back_to_an_older_signed_one_is_a_rollback_until_it_is_back(
    cluster: Cluster,
) -> None:
    """Only a ledger's home and standby write its latest checkpoint (broker/redis_acl.py), and
    they never step it back: a smaller one, however well signed, was set back. The verifier
    keeps the larger one, raises ``rollback`` against ``redis`` (PROTOCOL 10.5), and resolves it
    once Redis holds one at least as large again; a deleted one is no rollback."""
    home = cluster.stores["ingest-1"]
    size = cluster.size
    cluster.publish(_note(home, size))
    cluster.checks.compare_heads()
    assert cluster.checks.ledgers[LEDGER].checkpoint.latest.size == size  # type: ignore[union-attr]
    cluster.publish(_note(home, size - 3))
    cluster.checks.compare_heads()
    cluster.checks.compare_heads()
    (alert,) = [a for a in cluster.alerts() if a["what"] == "rollback"]
    assert (alert["node"], alert["height"], alert["source"]) == ("redis", str(size - 1), "redis")
    assert (alert["expected"], alert["found"]) == (home.root(LEDGER, size).hex(), home.root(LEDGER, size - 3).hex())
    assert f"redis|{LEDGER}|rollback" in cluster.repl.open_alerts()
    assert _taken(cluster) == (size, home.root(LEDGER, size))  # still the larger one
    cluster.publish(_made_up_note(size + 100, K1))  # states a larger size, verifies with no key of the ledger
    cluster.checks.compare_heads()
    assert f"redis|{LEDGER}|rollback" in cluster.repl.open_alerts()  # resolved by no unverified note (r3)
    cluster.publish(_note(home, size))
    cluster.checks.compare_heads()
    assert f"redis|{LEDGER}|rollback" not in cluster.repl.open_alerts()
    cluster.repl.client.delete(cluster.repl.checkpoint_key(LEDGER))
    cluster.publish(_made_up_note(size - 5, K1))  # signed by no key of the ledger: proves nothing, no rollback
    cluster.checks.compare_heads()
    assert f"redis|{LEDGER}|rollback" not in cluster.repl.open_alerts()


def test_a_handover_whose_epochs_entry_was_deleted_is_found_from_the_witnesses_notes(cluster: Cluster) -> None:
    """Any ingest node's Redis user may delete the ledger's entry in ``epochs``: a verifier
    that starts after that still reads the notes in Redis now and then (a ledger whose genesis
    pins a standby key), takes the epoch a witness's cosigned note proves, and checks the new
    home's checkpoints; an uncosigned note of the standby's key proves nothing so either."""
    size = cluster.size
    clock = [1000.0]
    cluster.checks._clock = lambda: clock[0]
    cluster.publish(_made_up_note(size + 5, KS, (2, "standby-1")))  # not cosigned: no proof
    clock[0] += 10
    cluster.checks.refresh_ledgers()
    assert cluster.checks.ledgers[LEDGER].epoch == (1, None)
    cluster.cosigned_by_witness(_cosigned(_epoch_note(cluster.stores["ingest-1"], size, "standby-1")))
    assert cluster.repl.epochs() == {}
    cluster.checks.refresh_ledgers()  # read no sooner than LOOK_FOR_EPOCH_SECONDS after the last look
    assert cluster.checks.ledgers[LEDGER].epoch == (1, None)
    clock[0] += 10
    cluster.checks.refresh_ledgers()
    state = cluster.checks.ledgers[LEDGER]
    assert (state.epoch, state.home) == ((2, "standby-1"), "standby-1")
    assert "ingest-1" not in state.copies
    cluster.publish(_epoch_note(cluster.stores["ingest-1"], size, "standby-1"))  # the new home's latest
    cluster.cosigned_by_witness(_cosigned(_epoch_note(cluster.stores["ingest-1"], size, "standby-1")))
    held = state.checkpoint
    assert held is not None and held.offer(_cosigned(_epoch_note(cluster.stores["ingest-1"], size, "standby-1")))
    assert _taken(cluster) == (size, cluster.stores["ingest-1"].root(LEDGER, size))


def test_a_failback_s_epoch_3_names_the_genesis_home_again(cluster: Cluster) -> None:
    """A failback (10.9): epoch 3 is the genesis home's again, signed with the genesis key. The
    verifier took a later epoch only from the standby's key naming another home than the
    genesis', and so kept epoch 2's home (or the cluster file's, swapped by then) as the home
    and the home of epoch 3 as no copy. A witnessed note of epoch 3 by its own key is taken,
    once the verifier's cluster file names its home the standby (review r30 F1: else it is the
    stolen genesis key's, which witnesses refuse too); one the standby's key signed stating
    epoch 3 proves nothing (the keys alternate)."""
    size = cluster.size
    clock = [1000.0]
    cluster.checks._clock = lambda: clock[0]
    cluster.cosigned_by_witness(_cosigned(_epoch_note(cluster.stores["ingest-1"], size, "standby-1")))
    clock[0] += 10
    cluster.checks.refresh_ledgers()
    assert cluster.checks.ledgers[LEDGER].epoch == (2, "standby-1")
    cluster.cosigned_by_witness(_cosigned(_made_up_note(size + 2, KS, (3, "ingest-1"))))  # not epoch 3's key
    clock[0] += 10
    cluster.checks.refresh_ledgers()
    assert cluster.checks.ledgers[LEDGER].epoch == (2, "standby-1")
    cluster.cosigned_by_witness(_cosigned(_made_up_note(size + 2, K0, (3, "ingest-1"))))
    clock[0] += 10
    cluster.checks.refresh_ledgers()
    assert cluster.checks.ledgers[LEDGER].epoch == (2, "standby-1")  # the file names no failback
    _failback_file(cluster.checks.config.path)  # the operator's swap, read again without a restart
    clock[0] += 10
    cluster.checks.refresh_ledgers()
    state = cluster.checks.ledgers[LEDGER]
    assert (state.epoch, state.home) == ((3, "ingest-1"), "ingest-1")


def _failback_file(path: Path) -> None:
    """The cluster file of a failback to ingest-1: its home and standby swapped."""
    path.write_text(
        """[cluster]
name = "test"
default_home = "ingest-1"
[nodes.ingest-1]
role = "ingest"
port = 7001
pub_port = 7101
[nodes.standby-1]
role = "ingest"
port = 7002
pub_port = 7102
[nodes.replica-1]
role = "replica"
port = 7011
[nodes.replica-2]
role = "replica"
port = 7012
[ledgers.votes]
home = "standby-1"
standby = "ingest-1"
""",
        encoding="utf-8",
    )


def test_a_signed_note_of_the_size_held_with_another_root_is_a_signed_fork_against_the_signer(
    cluster: Cluster,
) -> None:
    """Redis's latest checkpoint of the same size as the largest verified one but another root
    raised nothing: two trees of one size signed by the ledger's key, the strongest evidence of
    a lying home. It is ``signed_fork`` against the signer, both notes kept as evidence, and
    raised once; a note of that size that does not verify is junk, as before."""
    home, forked = cluster.stores["ingest-1"], cluster.stores["replica-2"]
    size = cluster.size
    honest = _note(home, size)
    cluster.publish(honest)
    cluster.checks.compare_heads()
    cluster.publish(_note(forked, size, K1))  # the fork's tree by a key the ledger never pinned: junk
    cluster.checks.compare_heads()
    assert not [a for a in cluster.alerts() if a["what"] == "signed_fork"]
    lying = _note(forked, size)  # the fork's tree, signed by the ledger's own key
    cluster.publish(lying)
    cluster.checks.compare_heads()
    cluster.checks.compare_heads()
    (alert,) = [a for a in cluster.alerts() if a["what"] == "signed_fork"]
    assert (alert["node"], alert["height"], alert["source"]) == ("ingest-1", str(size - 1), "redis")
    assert (alert["expected"], alert["found"]) == (home.root(LEDGER, size).hex(), forked.root(LEDGER, size).hex())
    assert f"ingest-1|{LEDGER}|signed_fork" in cluster.repl.open_alerts()
    evidence = cluster.repl.evidence()[f"verifier-1|{LEDGER}|{size}"]
    assert (evidence["checkpoint"].encode(), evidence["proved_by"].encode()) == (lying, honest)
    assert evidence["held_root"] == home.root(LEDGER, size).hex()
    assert _taken(cluster) == (size, home.root(LEDGER, size))  # the one verified first is kept
    assert not [a for a in cluster.alerts() if a["what"] == "rollback"]
    cluster.publish(honest)  # the home's note again resolves nothing: a signed contradiction stays one
    cluster.checks.compare_heads()
    assert f"ingest-1|{LEDGER}|signed_fork" in cluster.repl.open_alerts()


def test_a_nodes_checkpoint_of_the_size_held_with_another_root_is_a_signed_fork(cluster: Cluster) -> None:
    """The same from a node's ``checkpoint`` answer: one node proved the largest checkpoint, and
    another serves a note of that size, signed by the ledger's key, of another tree."""
    home, forked = cluster.stores["ingest-1"], cluster.stores["replica-2"]
    size = cluster.size
    cluster.home_down()  # nothing in Redis: the nodes are asked
    cluster.nodes["replica-1"].served_checkpoint = (_note(home, size), [])
    cluster.checks.compare_heads()
    assert _taken(cluster) == (size, home.root(LEDGER, size))
    cluster.nodes["replica-1"].served_checkpoint = None
    cluster.nodes["replica-2"].served_checkpoint = (_note(forked, size), [])
    cluster.checks.ledgers[LEDGER].ask_nodes_at = 0.0
    cluster.checks.compare_heads()
    (alert,) = [a for a in cluster.alerts() if a["what"] == "signed_fork"]
    assert (alert["node"], alert["source"]) == ("ingest-1", "replica-2")


def test_a_rotatable_ledger_s_latest_checkpoint_set_back_from_past_the_rotations_proven_is_a_rollback(
    redis_client: Any, tmp_path: Path
) -> None:
    """For a ledger that may rotate its key, a note in Redis past the size whose rotations the
    verifier proved was dropped by the rollback watch, and the nodes were asked for rotations
    only when a copy needed a checkpoint: Redis's latest set back from such a size raised
    nothing. The note is held apart until the nodes prove the rotations up to it, then counts."""
    rotated = Cluster(redis_client, tmp_path, rotate_at=3)
    try:
        home = rotated.stores["ingest-1"]
        size = rotated.size
        note = _note(home, size, K1)
        rotated.publish(note)
        rotated.checks.compare_heads()  # no node proves the rotation yet: held apart, nothing raised
        rotated.publish(_note(home, size - 3, K1))  # set back
        rotated.checks.compare_heads()
        assert not [a for a in rotated.alerts() if a["what"] == "rollback"]
        rotated.nodes["ingest-1"].served_checkpoint = (note, [3])
        rotated.checks.ledgers[LEDGER].ask_nodes_at = 0.0
        rotated.checks.compare_heads()
        rotated.checks.compare_heads()
        (alert,) = [a for a in rotated.alerts() if a["what"] == "rollback"]
        assert (alert["height"], alert["expected"]) == (str(size - 1), home.root(LEDGER, size).hex())
        assert alert["found"] == home.root(LEDGER, size - 3).hex()
    finally:
        rotated.close()


def test_a_retired_key_s_note_past_the_rotations_proven_never_counts_as_redis_s_latest(
    redis_client: Any, tmp_path: Path
) -> None:
    """The other side: a note of a size past the proven rotations signed by the key a rotation
    retired below it verifies with the last key known then, but not along the rotations once
    they are proven: it is dropped, and the home's smaller notes that follow are no rollback."""
    rotated = Cluster(redis_client, tmp_path, rotate_at=3)
    try:
        home = rotated.stores["ingest-1"]
        size = rotated.size
        rotated.publish(_made_up_note(size, K0))  # the retired key, a tree of its own making
        rotated.checks.compare_heads()
        rotated.publish(_note(home, size - 3, K1))  # the home's, smaller
        rotated.checks.compare_heads()
        rotated.nodes["ingest-1"].served_checkpoint = (_note(home, size, K1), [3])
        rotated.checks.ledgers[LEDGER].ask_nodes_at = 0.0
        rotated.checks.compare_heads()
        rotated.checks.compare_heads()
        assert not [a for a in rotated.alerts() if a["what"] in ("rollback", "signed_fork")]
        held = rotated.checks.ledgers[LEDGER].checkpoint
        assert held is not None and held.latest is not None and held.latest.size == size - 3
    finally:
        rotated.close()
