"""The gateway over a ledger whose standby was promoted (PROTOCOL 10.9).

It serves the checkpoints of epoch 2, signed by the standby key the genesis pins and
carrying the epoch line; never a checkpoint of the replaced home past the handover record
(a fenced home's), even with more cosignatures; its receipts verify with the outsider
verifier's code from the genesis alone. What only the home signed (no witness of the cluster
cosigned it) proves nothing for good there: a cut off home's tail that a handover fences.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from vledger.config.cluster import ClusterConfig, cluster_from_mapping
from vledger.config.settings import Limits
from vledger.node.epoch import EPOCH_KIND, epoch_payload
from vledger.node.errors import StoreDamagedError
from vledger.node.ledger import LedgerRules
from vledger.node.note import ALG_COSIGNATURE_V1, Note, SignerKey, cosign, parse_note
from vledger.node.record import ZERO_LINK, Content, Entry, Record
from vledger.node.store import ChainStore
from vledger.node.storefile import DB_NAME
from vledger.node.witness import HomeSigner
from vledger.verifier import gateway as gateway_module
from vledger.verifier.gateway import Gateway

sys.path.insert(0, str(Path(__file__).parents[2] / "vectors"))
import outsider_verify as ov

from vledger.tests.unit.verifier.fakes import FakeRedis

LIMITS = Limits()
CLUSTER, LEDGER = "t", "votes"
OLD, NEW = HomeSigner(CLUSTER, bytes(range(32))), HomeSigner(CLUSTER, bytes(range(1, 33)))
HANDOVER = 5  # the height of the handover record
SIZE = 9
T0 = 1_790_000_000_000
WITNESS = SignerKey(f"{CLUSTER}/witness/replica-1", ALG_COSIGNATURE_V1, bytes([7]) * 32)
OUTSIDE = SignerKey("outside.example/w", ALG_COSIGNATURE_V1, bytes([9]) * 32)


def _next(head: Record, kind: str, payload: dict[str, Any], origin: str) -> Record:
    content = Content(LEDGER, kind, payload, "admin", f"r{head.height + 1}", T0 + head.height + 1)
    return Entry.prepare(content, 0, LIMITS).place(head.height + 1, head.link, head.accepted + 1, origin)


def _cosigned(note: bytes, witness: SignerKey) -> bytes:
    parsed = parse_note(note)
    return Note(parsed.text, (*parsed.signatures, cosign(parsed.text, witness, T0 // 1000).note_signature())).encode()


def _home_and_standby(tmp_path: Path) -> ClusterConfig:
    return cluster_from_mapping(
        {
            "cluster": {"name": CLUSTER, "data": "data", "keys": "keys", "default_home": "ingest-1"},
            "nodes": {
                "ingest-1": {"role": "ingest", "port": 1, "pub_port": 2},
                "ingest-2": {"role": "ingest", "port": 5, "pub_port": 6},
                "replica-1": {"role": "replica", "port": 3, "gateway_port": 4},
            },
        },
        tmp_path / "cluster.toml",
    )


def test_the_gateway_serves_the_new_epoch_and_never_the_fenced_home(tmp_path: Path) -> None:
    config = _home_and_standby(tmp_path)
    old_key, new_key = OLD.key(LEDGER).verifier(), NEW.key(LEDGER).verifier()
    rules = LedgerRules(
        kinds=(EPOCH_KIND, "note"),
        difficulty=0,
        rules={"checkpoint_key": old_key.encode(), "standby_key": new_key.encode()},
    )
    genesis = Entry.prepare(rules.genesis_content(LEDGER, "admin", "g", T0), 0, LIMITS).place(
        0, ZERO_LINK, T0, "ingest-1"
    )
    records = [genesis]
    for i in range(1, SIZE):
        if i == HANDOVER:
            records.append(_next(records[-1], EPOCH_KIND, epoch_payload(2, "ingest-2", new_key), "ingest-2"))
        else:
            records.append(_next(records[-1], "note", {"n": i}, "ingest-1" if i < HANDOVER else "ingest-2"))
    witness = WITNESS
    with ChainStore(config.store_dir("replica-1"), origin="replica-1") as store:
        store.append_records(records)
        root, before = store.root(LEDGER, SIZE), store.root(LEDGER, HANDOVER)
        epoch_2 = _cosigned(NEW.sign(LEDGER, SIZE, root, ("vledger-epoch 2 ingest-2",)).note, witness)
        store.checkpoints.keep(LEDGER, "cosigned", SIZE, root, epoch_2)
    # The replaced home, cut off, signed past the handover with its epoch-1 key: a fenced checkpoint.
    fenced = _cosigned(OLD.sign(LEDGER, SIZE, root).note, witness)
    stale = OLD.sign(LEDGER, HANDOVER, before).note
    redis = FakeRedis({b"replica-1": epoch_2, b"ingest-1": fenced, b"ingest-2": stale})
    gateway = Gateway(config, "replica-1", redis_client=redis)
    gateway.witness_keys = {"replica-1": witness.verifier()}
    try:
        served = gateway.checkpoint(LEDGER)
        assert served.gathered.checkpoint.size == SIZE and served.log_key == new_key
        assert parse_note(served.gathered.note).text == parse_note(epoch_2).text
        assert served.gathered.witnesses == (witness.name,)
        assert gateway.checkpoint(LEDGER, 1).gathered.note == served.gathered.note
        receipt = gateway.receipt(LEDGER, 7).encode()
        data = genesis.encode()
        # The standby's key counts only with a witness's cosignature (14.3 step 7): the checker holds its key.
        trusted = [ov.parse_vkey(witness.verifier().encode())]
        got = ov.verify_receipt(receipt, ov.genesis_key(data, LEDGER), trusted, 0, data, ov.genesis_key_text(data))
        assert got["size"] == SIZE
        # The home served is the proven epoch's, not the cluster file's (outsider o6 H8).
        info = gateway.ledger_info(LEDGER)
        assert info["home"] == "ingest-2" and info.get("epoch") == 2, info
    finally:
        gateway.close()


def _fenced_and_handed(outside: SignerKey = OUTSIDE) -> tuple[list[Record], list[Record]]:
    """(the old home's copy: its records below the handover height and 5 it placed past them
    while cut off, w=0 writes, one more than the ledger as handed over holds; the ledger as
    handed over: the handover record there, 3 of the new home's). Its genesis pins both keys
    and lists ``outside`` as its outside witness."""
    rules = LedgerRules(
        kinds=(EPOCH_KIND, "note"),
        difficulty=0,
        rules={
            "checkpoint_key": OLD.key(LEDGER).verifier().encode(),
            "standby_key": NEW.key(LEDGER).verifier().encode(),
            "witnesses": [outside.verifier().encode()],
            "quorum": 1,
        },
    )
    content = rules.genesis_content(LEDGER, "admin", "g", T0)
    base = [Entry.prepare(content, 0, LIMITS).place(0, ZERO_LINK, T0, "ingest-1")]
    for i in range(1, HANDOVER):
        base.append(_next(base[-1], "note", {"n": i}, "ingest-1"))
    fenced = [*base]
    for i in range(5):
        fenced.append(_next(fenced[-1], "note", {"cut off": i}, "ingest-1"))
    handed = [*base, _next(base[-1], EPOCH_KIND, epoch_payload(2, "ingest-2", NEW.key(LEDGER).verifier()), "ingest-2")]
    for i in range(3):
        handed.append(_next(handed[-1], "note", {"after": i}, "ingest-2"))
    return fenced, handed


@contextmanager
def _over_fenced_tail(
    tmp_path: Path, signer: SignerKey, outside: SignerKey = OUTSIDE
) -> Iterator[tuple[Gateway, list[Record], bytes]]:
    """replica-1's gateway over the old home's copy (:func:`_fenced_and_handed`, listing
    ``outside``), the home's checkpoint of it in Redis cosigned by ``signer``: the gateway,
    the copy, its root."""
    config = _home_and_standby(tmp_path)
    fenced, _ = _fenced_and_handed(outside)
    with ChainStore(config.store_dir("replica-1"), origin="replica-1") as store:
        store.append_records(fenced)
        root = store.root(LEDGER, len(fenced))
    note = _cosigned(OLD.sign(LEDGER, len(fenced), root).note, signer)
    gateway = Gateway(config, "replica-1", redis_client=FakeRedis({b"ingest-1": note}))
    gateway.witness_keys = {"replica-1": WITNESS.verifier()}
    try:
        yield gateway, fenced, root
    finally:
        gateway.close()


def _heal(gateway: Gateway, scratch: Path) -> list[Record]:
    """The gateway's copy cut back to the handover height and refilled past it as handed over,
    in the same file (as a follower heals its copy: node/store_cut.py), its checkpoints gone;
    Redis then holds epoch 2's checkpoint, cosigned. Gives the records as handed over."""
    _, handed = _fenced_and_handed()
    with ChainStore(scratch, origin="replica-1") as other:
        other.append_records(handed)
        epoch_2 = NEW.sign(LEDGER, SIZE, other.root(LEDGER, SIZE), ("vledger-epoch 2 ingest-2",)).note
    db = sqlite3.connect(gateway.config.store_dir("replica-1") / DB_NAME)
    with db:
        db.execute("ATTACH ? AS b", (str(scratch / DB_NAME),))
        db.execute("DELETE FROM records WHERE ledger = ? AND height >= ?", (LEDGER, HANDOVER))
        db.execute("INSERT INTO records SELECT * FROM b.records WHERE ledger = ? AND height >= ?", (LEDGER, HANDOVER))
        for table in ("tree", "tree_edge"):
            db.execute(f"DELETE FROM {table} WHERE ledger = ?", (LEDGER,))
            db.execute(f"INSERT INTO {table} SELECT * FROM b.{table} WHERE ledger = ?", (LEDGER,))
        db.execute("DELETE FROM checkpoints WHERE ledger = ?", (LEDGER,))
    db.close()
    gateway.redis = FakeRedis({b"replica-1": _cosigned(epoch_2, WITNESS)})
    return handed


def test_a_tail_no_witness_of_the_cluster_cosigned_is_not_immutable_and_a_healed_copy_is_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The old home's w=0 tail, signed by it alone (and cosigned by an outside witness, which
    # does not say its store holds the records) before it was cut off: a handover fences it
    # (10.9), but its tiles went out immutable, for shared caches to keep a year, and were
    # served from the gateway's cache after the copy healed (review r18, finding 2).
    with _over_fenced_tail(tmp_path, OUTSIDE) as (gateway, fenced, root):
        assert gateway.checkpoint(LEDGER).gathered.checkpoint.size == len(fenced)  # served: clients judge it
        tile, proven = gateway.tile(LEDGER, f"tile/0/000.p/{len(fenced)}")
        assert not proven, "a tile no witness of the cluster vouched for went out immutable"
        _, proven = gateway.entries(LEDGER, f"tile/entries/000.p/{len(fenced)}")
        assert not proven
        assert gateway.inclusion(LEDGER, HANDOVER, None)["root"] == root.hex()  # the store's, unchecked
        handed = _heal(gateway, tmp_path / "new")
        monkeypatch.setattr(gateway_module, "CHECKPOINT_SECONDS", 0.0)
        healed, proven = gateway.tile(LEDGER, f"tile/0/000.p/{SIZE}")
        assert proven and healed != tile[: len(healed)]
        assert gateway.proven_record(LEDGER, HANDOVER)[1] == handed[HANDOVER].encode()


def test_a_copy_healed_in_place_is_proven_against_its_checkpoint_not_what_was_proven_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The old home's tail was cosigned by a witness and proven (kept), and a handover placed
    # below it anyway (a standby host broken into, 10.9): once the copy healed in place, each
    # re-proof compared it with the leaves proven before and refused it for good (review r18, 2).
    with _over_fenced_tail(tmp_path, WITNESS) as (gateway, fenced, _):
        assert gateway.tile(LEDGER, f"tile/0/000.p/{len(fenced)}")[1]
        gateway.proven_record(LEDGER, HANDOVER)
        handed = _heal(gateway, tmp_path / "new")
        monkeypatch.setattr(gateway_module, "CHECKPOINT_SECONDS", 0.0)
        with pytest.raises(StoreDamagedError):
            gateway.proven_record(LEDGER, HANDOVER)  # not the record proven: refused, then proven again
        monkeypatch.setattr(gateway_module, "REFUSAL_SECONDS", 0.0)
        assert gateway.proven_record(LEDGER, HANDOVER)[1] == handed[HANDOVER].encode()
        assert gateway.tile(LEDGER, f"tile/0/000.p/{SIZE}")[1]


def test_an_outside_witness_named_as_a_cluster_witness_does_not_make_a_fenced_tail_immutable(tmp_path: Path) -> None:
    # Review r19 4: cosigners were told apart by name, and a genesis names its outside witnesses:
    # one named as replica-1's witness key counted as the cluster's own, its cosignature proving
    # the old home's fenced tail (review r18 2 reopened for whoever writes a genesis).
    impostor = SignerKey(WITNESS.name, ALG_COSIGNATURE_V1, bytes([11]) * 32)
    with _over_fenced_tail(tmp_path, impostor, impostor) as (gateway, fenced, _):
        assert gateway.outside(LEDGER) is None  # the genesis's outside witnesses are unusable
        _, proven = gateway.tile(LEDGER, f"tile/0/000.p/{len(fenced)}")
        assert not proven, "cosigned by no witness of the cluster, yet served immutable"
