"""KnownCosignatures: the outside witnesses a genesis lists count beside the cluster's, from the
home's store, and only their lines that verify with the listed key."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.replication import ReplicationLedger
from vledger.config.settings import Limits
from vledger.ingest.cosignatures import KnownCosignatures, WitnessedNotes, largest_cosigned
from vledger.ingest.epochs import EpochBook
from vledger.ingest.key_chains import ClusterChains
from vledger.node.checkpoint_log import COSIGNED
from vledger.node.epoch import EPOCH_KIND, EpochKeys, epoch_payload
from vledger.node.ledger import LedgerRules
from vledger.node.note import ALG_COSIGNATURE_V1, SignerKey, cosign, parse_note
from vledger.node.outside import outside_kind
from vledger.node.record import Content, Entry
from vledger.node.store import ChainStore
from vledger.node.witness import HomeSigner, home_key

CLUSTER, LEDGER, T0 = "test", "votes", 1_790_000_000_000
HOME = HomeSigner(CLUSTER, secrets.token_bytes(32))
LOG_KEY = home_key(CLUSTER, LEDGER, HOME.key(LEDGER).public_key)
LISTED = SignerKey("witness.example/w1", ALG_COSIGNATURE_V1, secrets.token_bytes(32))
IMPOSTOR = SignerKey(LISTED.name, ALG_COSIGNATURE_V1, secrets.token_bytes(32))


def test_outside_cosignatures_are_gathered_with_the_keys_the_genesis_lists(tmp_path: Path) -> None:
    with ChainStore(tmp_path, origin="home", clock=lambda: T0) as store:
        rules = {"checkpoint_key": LOG_KEY.encode(), "witnesses": [LISTED.verifier().encode()], "quorum": 1}
        store.create_ledger(
            Entry.prepare(LedgerRules(("n",), 0, rules).genesis_content(LEDGER, "a", "g", T0), 0, Limits())
        )
        for i in range(1, 4):
            store.append(Entry.prepare(Content(LEDGER, "n", {"i": i}, "Zoe.1", f"r{i}", T0 + i), 0, Limits()))
        known = KnownCosignatures(CLUSTER, store, None, {}, lambda ledger: LOG_KEY)
        assert known.outside_names(LEDGER) == frozenset({LISTED.name})
        latest = HOME.sign(LEDGER, 4, store.root(LEDGER, 4)).note
        for size, signer, found in ((2, LISTED, [(4, ()), (2, (LISTED.name,))]), (4, IMPOSTOR, [(4, ())])):
            signed = HOME.sign(LEDGER, size, store.root(LEDGER, size))
            note = parse_note(signed.note)
            cosigned = note.with_signatures(cosign(note.text, signer, T0 // 1000).note_signature()).encode()
            store.checkpoints.keep(LEDGER, outside_kind(LISTED.name), size, signed.root, cosigned)
            # The latest kept of the witness is gathered; the impostor's line (the listed name,
            # another key) verifies with no listed key and is dropped.
            assert [(g.checkpoint.size, g.witnesses) for g in known.gathered(LEDGER, latest)] == found


def test_a_genesis_naming_an_outside_witness_as_the_cluster_s_own_lists_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """fix19c left the ingest node's list out: an outside witness named ``<cluster>/witness/...``
    was gathered under that name, the cluster witness's, whose line says its store holds the
    records (a ledger created before the home refused such a genesis, or a copy of a forging
    home's). None of that genesis's outside witnesses counts here, as at the gateway; logged."""
    posing = SignerKey(f"{CLUSTER}/witness/replica-1", ALG_COSIGNATURE_V1, secrets.token_bytes(32))
    with ChainStore(tmp_path, origin="home", clock=lambda: T0) as store:
        listed = [LISTED.verifier().encode(), posing.verifier().encode()]
        rules = {"checkpoint_key": LOG_KEY.encode(), "witnesses": listed, "quorum": 1}
        store.create_ledger(
            Entry.prepare(LedgerRules(("n",), 0, rules).genesis_content(LEDGER, "a", "g", T0), 0, Limits())
        )
        known = KnownCosignatures(CLUSTER, store, None, {}, lambda ledger: LOG_KEY)
        assert known.outside_names(LEDGER) == frozenset()
        assert "lists outside witnesses that cannot be used" in caplog.text and posing.name in caplog.text
        signed = HOME.sign(LEDGER, 1, store.root(LEDGER, 1))
        note = parse_note(signed.note)
        cosigned = note.with_signatures(cosign(note.text, posing, T0 // 1000).note_signature()).encode()
        store.checkpoints.keep(LEDGER, outside_kind(posing.name), 1, signed.root, cosigned)
        assert [(g.checkpoint.size, g.witnesses) for g in known.gathered(LEDGER, signed.note)] == [(1, ())]


def test_a_promoted_standby_s_checkpoints_are_gathered_by_the_epochs_and_a_fenced_home_s_are_not(
    tmp_path: Path,
) -> None:
    """A replica checks a ledger's notes with its genesis key chain, which never names the
    standby's key: by the epochs of its records (10.9) epoch 2 counts, the old home past it does not."""
    standby = HomeSigner(CLUSTER, secrets.token_bytes(32))
    standby_key = home_key(CLUSTER, LEDGER, standby.key(LEDGER).public_key)
    witness = SignerKey(f"{CLUSTER}/witness/replica-1", ALG_COSIGNATURE_V1, secrets.token_bytes(32))
    with ChainStore(tmp_path, origin="ingest-1", clock=lambda: T0) as store:
        rules = {"checkpoint_key": LOG_KEY.encode(), "standby_key": standby_key.encode()}
        genesis = LedgerRules((EPOCH_KIND, "n"), 0, rules).genesis_content(LEDGER, "a", "g", T0)
        store.create_ledger(Entry.prepare(genesis, 0, Limits()))
        store.append(Entry.prepare(Content(LEDGER, "n", {"i": 1}, "Zoe.1", "r1", T0 + 1), 0, Limits()))
        head = store.head(LEDGER)
        assert head is not None
        handover = Content(LEDGER, EPOCH_KIND, epoch_payload(2, "ingest-2", standby_key), "a", "epoch-2", T0 + 2)
        store.append_record(Entry.prepare(handover, 0, Limits()).place(2, head.link, T0 + 2, "ingest-2"))
        size, root = 3, store.root(LEDGER, 3)

        def cosigned(signer: HomeSigner, extensions: tuple[str, ...] = ()) -> bytes:
            note = parse_note(signer.sign(LEDGER, size, root, extensions).note)
            return note.with_signatures(cosign(note.text, witness, T0 // 1000).note_signature()).encode()

        epoch_2, fenced = cosigned(standby, ("vledger-epoch 2 ingest-2",)), cosigned(HOME)
        store.checkpoints.keep(LEDGER, COSIGNED, size, root, epoch_2)
        book = EpochBook(CLUSTER, store)
        known = KnownCosignatures(CLUSTER, store, None, {"replica-1": witness.verifier()}, lambda ledger: LOG_KEY)
        assert known.gathered(LEDGER, epoch_2) == []  # the genesis key alone: nothing of epoch 2
        known.epochs_of = book.history
        assert [(g.checkpoint.size, g.witnesses) for g in known.gathered(LEDGER, epoch_2)] == [(3, (witness.name,))]
        # The old home's note of the same size past the handover (signed while cut off) is dropped.
        texts = [parse_note(g.note).text for g in known.gathered(LEDGER, fenced)]
        assert texts == [parse_note(epoch_2).text]


def test_witnessed_notes_read_each_other_witness_s_larger_note_in_one_round_trip(redis_client: Any) -> None:
    """A follower's view of what the witnesses cosigned (PROTOCOL 10.7): per ledger, each other
    witness's note above the size it holds whose line verifies, whatever key signed the tree; its
    own note is never read (a store put back republishes its old one), nor counted in the quorum."""
    witnesses = {
        f"replica-{i}": SignerKey(f"{CLUSTER}/witness/replica-{i}", ALG_COSIGNATURE_V1, bytes([i]) * 32)
        for i in (1, 2, 3)
    }
    rotated = HomeSigner(CLUSTER, secrets.token_bytes(32))  # a key no reader's chain knows
    replication = ReplicationLedger(redis_client)

    def publish(ledger: str, witness: str, size: int, signer: SignerKey | None = None) -> bytes:
        note = parse_note(rotated.sign(ledger, size, bytes([size]) * 32).note)
        line = cosign(note.text, signer or witnesses[witness], T0 // 1000).note_signature()
        cosigned = note.with_signatures(line).encode()
        replication.publish_cosignature(ledger, witness, size, cosigned)
        return cosigned

    one = publish(LEDGER, "replica-1", 9)
    publish(LEDGER, "replica-2", 5)  # not above what the reader holds
    publish(
        LEDGER, "replica-3", 9, witnesses["replica-1"]
    )  # replica-1's key under replica-3's name: no line of replica-3
    other = publish("other", "replica-3", 3)
    publish("other", "replica-1", 3)
    witnessed = WitnessedNotes(CLUSTER, replication, {n: k.verifier() for n, k in witnesses.items()}, "replica-1")
    found = witnessed({LEDGER: 6, "other": 0, "empty": 0})
    # 2 others of 3 witnesses: a quorum of 2; replica-1's notes (the reader's own) are not read.
    assert found == {LEDGER: ({}, 2), "other": ({f"{CLUSTER}/witness/replica-3": other}, 2)}
    assert WitnessedNotes(CLUSTER, replication, {n: k.verifier() for n, k in witnesses.items()}, "replica-2")(
        {LEDGER: 6}
    ) == {LEDGER: ({f"{CLUSTER}/witness/replica-1": one}, 2)}


def test_a_rotation_states_each_ledger_s_cosigned_size_by_that_ledger_s_own_key_whatever_its_home(
    redis_client: Any, tmp_path: Path
) -> None:
    """largest_cosigned (PROTOCOL 16.6, outsider o19 F1): the admin home checks a ledger homed
    elsewhere by that ledger's own chain (here read from another node's rows, as from its Redis
    stream) and a promoted standby's note by the standby's key; a note its own key signed, or
    without the replaced key's line, leaves its ledger out."""
    replaced = SignerKey(f"{CLUSTER}/witness/observer-1", ALG_COSIGNATURE_V1, secrets.token_bytes(32))
    other = SignerKey(replaced.name, ALG_COSIGNATURE_V1, secrets.token_bytes(32))
    admin_home = HomeSigner(CLUSTER, secrets.token_bytes(32))  # the key the admin home used for every ledger
    standby = HomeSigner(CLUSTER, secrets.token_bytes(32))
    replication = ReplicationLedger(redis_client)
    with (
        ChainStore(tmp_path / "ingest-2", origin="ingest-2", clock=lambda: T0) as elsewhere,
        ChainStore(tmp_path / "admin-home", origin="ingest-1", clock=lambda: T0) as here,
    ):
        rules = LedgerRules(("n",), 0, {"checkpoint_key": LOG_KEY.encode()})
        elsewhere.create_ledger(Entry.prepare(rules.genesis_content(LEDGER, "a", "g", T0), 0, Limits()))
        for i in range(1, 4):
            elsewhere.append(Entry.prepare(Content(LEDGER, "n", {"i": i}, "Zoe.1", f"r{i}", T0 + i), 0, Limits()))

        def publish(
            ledger: str, signer: HomeSigner, size: int, by: SignerKey | None, extensions: tuple[str, ...] = ()
        ) -> None:
            note = parse_note(signer.sign(ledger, size, bytes([size]) * 32, extensions).note)
            lines = () if by is None else (cosign(note.text, by, T0 // 1000).note_signature(),)
            replication.publish_cosignature(ledger, "observer-1", size, note.with_signatures(*lines).encode())

        publish(LEDGER, HOME, 4, replaced)
        publish("taken", standby, 9, replaced, ("vledger-epoch 2 ingest-3",))
        publish("mine", admin_home, 5, replaced)  # not the ledger's key: the old check's
        publish("bare", HOME, 6, other)  # a line by another key of that witness only
        redis_client.hset(
            replication.ledgers_key,
            mapping={LEDGER: "ingest-2", "taken": "ingest-3", "mine": "ingest-2", "bare": "ingest-2"},
        )
        chains = ClusterChains(here, elsewhere, lambda ledger: home_key(CLUSTER, ledger, HOME.key(ledger).public_key))
        standby_of = {"taken": home_key(CLUSTER, "taken", standby.key("taken").public_key)}
        keys = EpochKeys(CLUSTER, chains.current, lambda ledger: None, standby_of.get, base=chains.keys(CLUSTER))
        stated = largest_cosigned(replication, CLUSTER, keys, "observer-1", replaced.public_key.hex())
        assert stated == {LEDGER: 4, "taken": 9}
