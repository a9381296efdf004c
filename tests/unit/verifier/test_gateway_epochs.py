"""The gateway over a ledger whose standby was promoted (PROTOCOL 10.9).

It serves the checkpoints of epoch 2, signed by the standby key the genesis pins and
carrying the epoch line; never a checkpoint of the replaced home past the handover record
(a fenced home's), even with more cosignatures; its receipts verify with the outsider
verifier's code from the genesis alone.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from vledger.config.cluster import cluster_from_mapping
from vledger.config.settings import Limits
from vledger.node.epoch import EPOCH_KIND, epoch_payload
from vledger.node.ledger import LedgerRules
from vledger.node.note import ALG_COSIGNATURE_V1, Note, SignerKey, cosign, parse_note
from vledger.node.record import ZERO_LINK, Content, Entry, Record
from vledger.node.store import ChainStore
from vledger.node.witness import HomeSigner
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


def _next(head: Record, kind: str, payload: dict[str, Any], origin: str) -> Record:
    content = Content(LEDGER, kind, payload, "admin", f"r{head.height + 1}", T0 + head.height + 1)
    return Entry.prepare(content, 0, LIMITS).place(head.height + 1, head.link, head.accepted + 1, origin)


def _cosigned(note: bytes, witness: SignerKey) -> bytes:
    parsed = parse_note(note)
    return Note(parsed.text, (*parsed.signatures, cosign(parsed.text, witness, T0 // 1000).note_signature())).encode()


def test_the_gateway_serves_the_new_epoch_and_never_the_fenced_home(tmp_path: Path) -> None:
    config = cluster_from_mapping(
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
    witness = SignerKey(f"{CLUSTER}/witness/replica-1", ALG_COSIGNATURE_V1, bytes([7]) * 32)
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
