"""The gateway over a ledger whose checkpoint key was rotated (PROTOCOL 13.8).

It serves the checkpoint of the key in force at its size, with the rotation records and
their proofs; a note the retired key signed past its rotation is never served; its receipts
verify with the outsider verifier's code from the genesis alone.
"""

from __future__ import annotations

import base64
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from vledger.config.cluster import ClusterConfig
from vledger.config.settings import Limits
from vledger.node.errors import StoreDamagedError
from vledger.node.key_rotation import ROTATION_KIND, rotation_payload
from vledger.node.ledger import LedgerRules
from vledger.node.note import ALG_ED25519, Checkpoint, Note, SignerKey, sign
from vledger.node.record import Content, Entry, Record
from vledger.node.store import ChainStore
from vledger.node.storefile import DB_NAME
from vledger.verifier.gateway import Gateway

sys.path.insert(0, str(Path(__file__).parents[2] / "vectors"))
import outsider_verify as ov

from vledger.tests.unit.verifier.fakes import FakeRedis, NoRedis, two_nodes

LIMITS = Limits()
LEDGER = "votes"
ORIGIN = f"t/{LEDGER}"
OLD = SignerKey(ORIGIN, ALG_ED25519, bytes(range(32)))
NEW = SignerKey(ORIGIN, ALG_ED25519, bytes(range(1, 33)))
ROTATED_AT = 5
SIZE = 10


def _note(key: SignerKey, size: int, root: bytes) -> bytes:
    body = Checkpoint(ORIGIN, size, root).body()
    return Note(body, (sign(body, key),)).encode()


def _rotated(tmp_path: Path, size: int) -> tuple[ClusterConfig, bytes, Record]:
    """replica-1's store: the ledger of ``size`` records, rotated at ROTATED_AT, signed at its size
    by the new key; with that root and the genesis."""
    config = two_nodes(tmp_path / "cluster.toml")
    pinned = OLD.verifier().encode()
    with ChainStore(config.store_dir("replica-1"), origin="ingest-1") as store:
        rules = LedgerRules(kinds=(ROTATION_KIND, "note"), difficulty=0, rules={"checkpoint_key": pinned})
        store.create_ledger(Entry.prepare(rules.genesis_content(LEDGER, "admin", "g", 1), 0, LIMITS))
        for i in range(1, size):
            kind, payload = (
                (ROTATION_KIND, rotation_payload(OLD, NEW.verifier())) if i == ROTATED_AT else ("note", {"n": i})
            )
            store.append(Entry.prepare(Content(LEDGER, kind, payload, "admin", f"r{i}", 1), 0, LIMITS))
        root = store.root(LEDGER, size)
        store.checkpoints.keep(LEDGER, "signed", size, root, _note(NEW, size, root))
        genesis = store.get(LEDGER, 0)
        assert genesis is not None
    return config, root, genesis


def test_the_gateway_serves_the_key_in_force_and_proves_the_rotation(tmp_path: Path) -> None:
    config, root, genesis = _rotated(tmp_path, SIZE)
    retired = _note(OLD, SIZE, root)  # valid signature, retired key: must never be served
    gateway = Gateway(config, "replica-1", redis_client=FakeRedis({b"replica-1": retired}))
    try:
        served = gateway.checkpoint(LEDGER)
        assert served.log_key == NEW.verifier() and served.gathered.note == _note(NEW, SIZE, root)
        shown: dict[str, Any] = served.json()
        assert [r["index"] for r in shown["rotations"]] == [ROTATED_AT]
        assert base64.b64decode(shown["rotations"][0]["record"]) == gateway.reader.get(LEDGER, ROTATED_AT)
        receipt = gateway.receipt(LEDGER, 8).encode()
        data = genesis.encode()
        got = ov.verify_receipt(receipt, ov.genesis_key(data, LEDGER), [], 0, data, ov.genesis_key_text(data))
        assert got["size"] == SIZE
    finally:
        gateway.close()


def test_a_rotation_whose_proof_the_store_s_tree_rows_break_is_never_served(tmp_path: Path) -> None:
    # The rotation's proof in the checkpoint of 40 takes the store's row of leaves 16..31, which
    # proving the checkpoint's one tile (from its records) does not read: the checkpoint went out
    # with a proof no client accepts, so with a key chain that does not verify (gw31).
    config, _, _ = _rotated(tmp_path, 40)
    with sqlite3.connect(config.store_dir("replica-1") / DB_NAME) as db:
        db.execute("UPDATE tree SET hash = zeroblob(32) WHERE ledger = ? AND level = 4 AND idx = 1", (LEDGER,))
    db.close()
    gateway = Gateway(config, "replica-1", redis_client=NoRedis())
    try:
        with pytest.raises(StoreDamagedError, match="rotation record 5"):
            gateway.checkpoint(LEDGER)
    finally:
        gateway.close()
