"""A witness keeps its recent cosignatures in Redis only of ledgers whose genesis lists outside
witnesses (PROTOCOL 10.7, 13.9): their home looks there for a size a majority cosigned."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import new_signing_key
from vledger.config.settings import Limits
from vledger.ingest.witness import Witness
from vledger.node.ledger import LedgerRules
from vledger.node.note import parse_checkpoint, parse_note
from vledger.node.record import Content, Entry
from vledger.node.store import ChainStore
from vledger.node.witness import HomeSigner, WitnessSigner, home_key
from vledger.tests.tlog_witness import TlogWitness

LIMITS = Limits()
T0 = 1_790_000_000_000
CLUSTER = "test"
HOME = HomeSigner(CLUSTER, new_signing_key().seed)


def test_only_a_ledger_with_outside_witnesses_gets_the_witness_s_recent_notes(
    tmp_path: Path, redis_client: Any
) -> None:
    store = ChainStore(tmp_path / "copy", origin="copy", clock=lambda: T0)
    try:
        for ledger in ("listed", "plain"):
            rules: dict[str, Any] = {}
            if ledger == "listed":
                log_key = home_key(CLUSTER, ledger, HOME.key(ledger).public_key).encode()
                outside = TlogWitness("witness.example/w1", secrets.token_bytes(32), {f"{CLUSTER}/{ledger}": log_key})
                rules = {"checkpoint_key": log_key, "witnesses": [outside.vkey], "quorum": 1}
            genesis = LedgerRules(("note",), 0, rules).genesis_content(ledger, "a", "g", T0)
            store.create_ledger(Entry.prepare(genesis, 0, LIMITS))
            for i in range(1, 4):
                store.append(Entry.prepare(Content(ledger, "note", {"n": i}, "Zoe.1", f"r-{i}", T0 + i), 0, LIMITS))
        repl = ReplicationLedger(redis_client)
        signer = WitnessSigner(f"{CLUSTER}/witness/replica-1", new_signing_key().seed)
        witness = Witness("replica-1", store, signer, repl, lambda alert: None)
        witness.start()
        for size in (2, 4):
            for ledger in ("listed", "plain"):
                witness.verified(HOME.sign(ledger, size, store.root(ledger, size)))
            witness.turn()
        recent = repl.recent_cosignatures("listed", ["replica-1"])["replica-1"]
        assert [parse_checkpoint(parse_note(note).text).size for note in recent] == [4, 4, 2]  # newest, then the list
        assert repl.recent_cosignatures("plain", ["replica-1"])["replica-1"] == [
            repl.cosignatures("plain")["replica-1"]
        ]
        assert not redis_client.exists(repl.cosig_recent_key("plain", "replica-1"))
    finally:
        store.close()
