"""KnownCosignatures: the outside witnesses a genesis lists count beside the cluster's, from the
home's store, and only their lines that verify with the listed key."""

from __future__ import annotations

import secrets
from pathlib import Path

from vledger.config.settings import Limits
from vledger.ingest.cosignatures import KnownCosignatures
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
