"""review32 #3 (low): tests/vectors/outsider_verify.py, the independent verifier, applies the
epoch rule (PROTOCOL 13.5 step 3, fix32) by the witness keys it was GIVEN: an outside witness's
key passed among them (--witness) makes its line count for an epoch from 2. PROTOCOL says
"never ... whatever key name it was given as", and node/receipt.py refuses the same receipt
(tests/unit/node/test_receipt.py "Given as a --witness key by mistake")."""

from __future__ import annotations

from typing import Any

import pytest

from vledger.node import tree
from vledger.node.errors import VledgerError
from vledger.node.receipt import Receipt, keys_from_genesis, verify_receipt
from vledger.tests.unit.node.test_receipt import HOME, LEDGER, OUTSIDE, _note, _outside_genesis, _outsider
from vledger.tests.unit.node.tree_oracle import hash_at_of


def test_an_outside_line_given_as_a_witness_key_makes_no_epoch_count_for_the_outsider_verifier(kit: Any) -> None:
    records = _outside_genesis(kit, OUTSIDE)  # both listed, quorum 2
    leaves = [tree.leaf_hash(r.encode()) for r in records]
    root = tree.root_at(4, hash_at_of(leaves))
    proof = tree.inclusion_proof(2, 4, hash_at_of(leaves))
    # The genesis key, stating epoch 5 (a thief's forged epoch), cosigned by the outside witnesses only.
    receipt = Receipt.of(
        records[2].encode(), proof, _note(4, root, witnesses=OUTSIDE, extensions=("vledger-epoch 5 n",))
    )
    mistaken = keys_from_genesis(records[0].encode(), LEDGER, [w.verifier() for w in OUTSIDE], 0)
    with pytest.raises(VledgerError) as e:
        verify_receipt(receipt, mistaken)
    assert e.value.code == "no_quorum"  # the node's rule
    ov = _outsider()
    given = [ov.parse_vkey(w.verifier().encode()) for w in OUTSIDE]
    with pytest.raises(ov.VerifyError) as refused:
        ov.verify_receipt(receipt.encode(), ov.parse_vkey(HOME.verifier().encode()), given, 0, records[0].encode())
    assert refused.value.code == "no_quorum"
