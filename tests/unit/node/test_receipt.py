"""node/receipt.py: a receipt is checked with only the genesis (or its pinned keys), and refused
at the first check that fails, with that check's code; any flipped byte of the file fails."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vledger.node import tree
from vledger.node.errors import VledgerError
from vledger.node.ledger import LedgerRules
from vledger.node.note import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    Checkpoint,
    Note,
    SignerKey,
    cosign,
    sign,
)
from vledger.node.receipt import Receipt, ReceiptKeys, keys_from_genesis, parse_receipt, verify_receipt
from vledger.node.record import ZERO_LINK, Entry, Record
from vledger.tests.unit.node.tree_oracle import hash_at_of

LEDGER = "ledger-a"
ORIGIN = f"local/{LEDGER}"
HOME = SignerKey(ORIGIN, ALG_ED25519, bytes(range(32)))
OTHER_HOME = SignerKey(ORIGIN, ALG_ED25519, bytes(range(1, 33)))  # a forked view's signer
WITNESSES = [SignerKey(f"local/witness/r{i}", ALG_COSIGNATURE_V1, bytes([i + 7]) * 32) for i in range(3)]
OUTSIDE = [SignerKey(f"witness.example/w{i}", ALG_COSIGNATURE_V1, bytes([i + 70]) * 32) for i in range(2)]
T0 = 1_790_000_000_000


def _chain(kit: Any, n: int, home: SignerKey = HOME) -> list[Record]:
    rules = LedgerRules(kinds=("note",), difficulty=4, rules={"checkpoint_key": home.verifier().encode()})
    genesis = Entry.prepare(rules.genesis_content(LEDGER, "admin", "create-1", T0), 4, kit.limits)
    records = [genesis.place(0, ZERO_LINK, T0 + 5, "node-1")]
    for i in range(1, n):
        records.append(kit.extend(records[-1], kit.entry(i, 4, ledger=LEDGER, kind="note")))
    return records


def _note(
    size: int,
    root: bytes,
    home: SignerKey = HOME,
    witnesses: list[SignerKey] = WITNESSES,
    extensions: tuple[str, ...] = (),
) -> bytes:
    body = Checkpoint(ORIGIN, size, root, extensions).body()
    lines = [sign(body, home), *(cosign(body, w, 1_790_000_000 + i).note_signature() for i, w in enumerate(witnesses))]
    return Note(body, tuple(lines)).encode()


def _receipt(records: list[Record], index: int, home: SignerKey = HOME, extensions: tuple[str, ...] = ()) -> Receipt:
    leaves = [tree.leaf_hash(r.encode()) for r in records]
    size = len(records)
    proof = tree.inclusion_proof(index, size, hash_at_of(leaves))
    note = _note(size, tree.root_at(size, hash_at_of(leaves)), home, extensions=extensions)
    return Receipt.of(records[index].encode(), proof, note)


def _keys(records: list[Record], quorum: int = 2) -> ReceiptKeys:
    return keys_from_genesis(records[0].encode(), LEDGER, [w.verifier() for w in WITNESSES], quorum)


@pytest.fixture(scope="module")
def chain(kit: Any) -> list[Record]:
    return _chain(kit, 7)


def test_a_receipt_verifies_with_only_the_genesis(chain: list[Record]) -> None:
    for index in range(len(chain)):
        data = _receipt(chain, index).encode()
        verified = verify_receipt(data, _keys(chain, quorum=3))
        assert verified.record == chain[index]
        assert verified.checkpoint.checkpoint.size == len(chain)
        assert verified.checkpoint.witnesses == tuple(w.name for w in WITNESSES)


def test_the_file_form_is_byte_exact(chain: list[Record]) -> None:
    receipt = _receipt(chain, 3)
    data = receipt.encode()
    assert data.endswith(b"}\n") and b": " not in data and "\u2014".encode() in data
    assert list(json.loads(data)) == ["v", "ledger", "index", "hash", "record", "proof", "checkpoint"]
    assert parse_receipt(data) == receipt
    spaced = json.dumps(json.loads(data)).encode() + b"\n"  # the same object, other spacing
    with pytest.raises(VledgerError) as e:
        parse_receipt(spaced)
    assert e.value.code == "bad_receipt"


def test_a_forked_view_is_refused(kit: Any, chain: list[Record]) -> None:
    # The same records, but a checkpoint signed by a key the genesis does not pin.
    with pytest.raises(VledgerError) as e:
        verify_receipt(_receipt(chain, 2, OTHER_HOME).encode(), _keys(chain))
    assert e.value.code == "unverified_note"
    # A rewritten tail under the right key: the record is not in the root the key signed.
    forked = chain[:4] + _chain(kit, 7)[4:]
    forked[4] = kit.extend(chain[3], kit.entry(99, 4, ledger=LEDGER, kind="note"))
    honest_note = _receipt(chain, 4).checkpoint
    lying = dataclasses.replace(_receipt(forked[:5], 4), checkpoint=honest_note)
    with pytest.raises(VledgerError) as e:
        verify_receipt(lying, _keys(chain))
    assert e.value.code == "bad_proof"


# A genesis's rules that pin the home's and the standby's checkpoint keys (PROTOCOL 10.9).
STANDBY_PINNED = {"checkpoint_key": HOME.verifier().encode(), "standby_key": OTHER_HOME.verifier().encode()}


def _standby_chain(kit: Any) -> list[Record]:
    """A genesis pinning the home's and the standby's checkpoint keys, and 4 notes."""
    rules = LedgerRules(kinds=("epoch", "note"), difficulty=4, rules=STANDBY_PINNED)
    records = [
        Entry.prepare(rules.genesis_content(LEDGER, "admin", "c", T0), 4, kit.limits).place(0, ZERO_LINK, T0, "n")
    ]
    for i in range(1, 5):
        records.append(kit.extend(records[-1], kit.entry(i, 4, ledger=LEDGER, kind="note")))
    return records


def test_a_receipt_of_the_standby_s_epoch_verifies_with_only_the_genesis(kit: Any) -> None:
    # PROTOCOL 10.9: the genesis pins the standby's key; its checkpoints carry their epoch line.
    records = _standby_chain(kit)
    keys = keys_from_genesis(records[0].encode(), LEDGER, [w.verifier() for w in WITNESSES], 2)
    assert keys.standby_key == OTHER_HOME.verifier()
    assert verify_receipt(_receipt(records, 3, OTHER_HOME, ("vledger-epoch 2 node-2",)), keys).record == records[3]
    assert verify_receipt(_receipt(records, 3), keys).record == records[3]  # epoch 1, the home's key
    with pytest.raises(VledgerError) as e:
        verify_receipt(_receipt(records, 3, OTHER_HOME), keys)  # the standby's key, but no epoch line
    assert e.value.code == "bad_epoch"
    # Outsider o16 F5: the keys alternate (epoch 2 is the standby's), so the genesis alone says
    # the home's key signs no checkpoint of epoch 2: the replaced home cannot pass one off.
    with pytest.raises(VledgerError) as e:
        verify_receipt(_receipt(records, 3, HOME, ("vledger-epoch 2 node-2",)), keys)
    assert e.value.code == "bad_epoch"
    assert verify_receipt(_receipt(records, 3, HOME, ("vledger-epoch 3 n",)), keys).record == records[3]


def test_a_checkpoint_of_the_standby_s_key_counts_only_with_a_cluster_witness_s_cosignature(kit: Any) -> None:
    # PROTOCOL 10.9, 14.3 step 7: the standby's key alone could sign a tree of its own making,
    # with a handover record and any record in it; only a witness, holding the records, shows
    # that its epoch was opened. So whatever the quorum asked, one cosignature must verify.
    records = _standby_chain(kit)
    keys = keys_from_genesis(records[0].encode(), LEDGER, [w.verifier() for w in WITNESSES], 0)
    epoch = ("vledger-epoch 2 node-2",)

    def cosigned_by(signer: SignerKey, witnesses: list[SignerKey], extensions: tuple[str, ...] = ()) -> Receipt:
        made = _receipt(records, 3, signer, extensions)
        text = made.checkpoint.decode().split("\n\n")[0] + "\n"
        lines = [sign(text, signer), *(cosign(text, w, 1_790_000_000).note_signature() for w in witnesses)]
        return dataclasses.replace(made, checkpoint=Note(text, tuple(lines)).encode())

    with pytest.raises(VledgerError) as e:
        verify_receipt(cosigned_by(OTHER_HOME, [], epoch), keys)
    assert e.value.code == "no_quorum"
    with pytest.raises(VledgerError) as e:  # a witness key the checker does not trust proves nothing
        verify_receipt(cosigned_by(OTHER_HOME, WITNESSES, epoch), dataclasses.replace(keys, witnesses=()))
    assert e.value.code == "no_quorum"
    assert verify_receipt(cosigned_by(OTHER_HOME, WITNESSES[:1], epoch), keys).record == records[3]
    assert verify_receipt(cosigned_by(HOME, []), keys).record == records[3]  # the home's key: q = 0 is the caller's
    # A failback's epoch 3 is the genesis key's, which epoch 2 may have fenced as stolen: that
    # key alone could state epoch 3 over a tree of its own, so it too counts only witnessed.
    with pytest.raises(VledgerError) as e:
        verify_receipt(cosigned_by(HOME, [], ("vledger-epoch 3 node-1",)), keys)
    assert e.value.code == "no_quorum"
    assert verify_receipt(cosigned_by(HOME, WITNESSES[:1], ("vledger-epoch 3 node-1",)), keys).record == records[3]
    # An outside witness the genesis lists counts as a witness for the standby's key too.
    outside = SignerKey("example.org/w1", ALG_COSIGNATURE_V1, bytes([42]) * 32)
    listed = {**STANDBY_PINNED, "witnesses": [outside.verifier().encode()], "quorum": 1}
    genesis = Entry.prepare(
        LedgerRules(kinds=("epoch", "note"), difficulty=4, rules=listed).genesis_content(LEDGER, "admin", "c", T0),
        4,
        kit.limits,
    ).place(0, ZERO_LINK, T0, "n")
    records[0] = genesis
    for i in range(1, 5):
        records[i] = kit.extend(records[i - 1], kit.entry(i, 4, ledger=LEDGER, kind="note"))
    # Outsider o24 F0: an outside witness runs generic tlog-witness software that holds no records
    # and applies none of 10.9: it cosigns any tree consistent with the last it saw. So its line
    # never makes an epoch from 2 count (13.5 step 3), whatever key signed it; only toward the
    # outside quorum. With the genesis alone (no cluster witness key) such a receipt is refused
    # with a message that says to give the anchors.
    alone = keys_from_genesis(genesis.encode(), LEDGER, (), 0)
    for signer, extension in ((OTHER_HOME, epoch), (HOME, ("vledger-epoch 5 node-1",))):
        with pytest.raises(VledgerError) as e:
            verify_receipt(cosigned_by(signer, [outside], extension), alone)
        assert e.value.code == "no_quorum" and "--anchors" in e.value.message
    keys = keys_from_genesis(genesis.encode(), LEDGER, [w.verifier() for w in WITNESSES], 0)
    with pytest.raises(VledgerError) as e:  # cluster keys known: the outside line still does not count
        verify_receipt(cosigned_by(HOME, [outside], ("vledger-epoch 5 node-1",)), keys)
    assert e.value.code == "no_quorum" and "outside" in e.value.message
    # Given as a --witness key by mistake, an outside witness's line still does not count here.
    mistaken = dataclasses.replace(keys, witnesses=(*keys.witnesses, outside.verifier()))
    with pytest.raises(VledgerError) as e:
        verify_receipt(cosigned_by(HOME, [outside], ("vledger-epoch 5 node-1",)), mistaken)
    assert e.value.code == "no_quorum"
    both = cosigned_by(OTHER_HOME, [WITNESSES[0], outside], epoch)
    assert verify_receipt(both, keys).outside == (outside.name,)


def test_the_quorum_and_the_witness_keys(chain: list[Record]) -> None:
    receipt = _receipt(chain, 1)
    text = receipt.checkpoint.decode().split("\n\n")[0] + "\n"
    one = dataclasses.replace(receipt, checkpoint=Note(text, (sign(text, HOME),)).encode())  # no cosignature
    verify_receipt(one, _keys(chain, quorum=0))
    with pytest.raises(VledgerError) as e:
        verify_receipt(one, _keys(chain, quorum=1))
    assert e.value.code == "no_quorum"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda r: dataclasses.replace(r, index=r.index + 1), "bad_receipt"),
        (lambda r: dataclasses.replace(r, hash=bytes(32)), "bad_receipt"),
        (lambda r: dataclasses.replace(r, ledger="other"), "wrong_ledger"),
        (lambda r: dataclasses.replace(r, proof=r.proof[:-1]), "bad_proof"),
        (lambda r: dataclasses.replace(r, proof=(*r.proof, bytes(32))), "bad_proof"),
    ],
)
def test_each_check_names_its_failure(chain: list[Record], change: Any, code: str) -> None:
    with pytest.raises(VledgerError) as e:
        verify_receipt(change(_receipt(chain, 2)), _keys(chain))
    assert e.value.code == code


def test_a_genesis_that_pins_no_key_needs_the_key_given(kit: Any) -> None:
    genesis = kit.chain(1)[0]
    with pytest.raises(VledgerError) as e:
        keys_from_genesis(genesis.encode(), kit.ledger)
    assert e.value.code == "bad_receipt"


def test_without_the_genesis_the_record_is_still_checked(chain: list[Record]) -> None:
    receipt = _receipt(chain, 5)
    keys = ReceiptKeys(HOME.verifier(), tuple(w.verifier() for w in WITNESSES), 3)
    verify_receipt(receipt, keys)
    wrong_key = ReceiptKeys(SignerKey("local/other", ALG_ED25519, bytes(32)).verifier())
    with pytest.raises(VledgerError) as e:
        verify_receipt(receipt, wrong_key)
    assert e.value.code == "wrong_origin"


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_flipped_byte_fails(chain: list[Record], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(chain) - 1))
    encoded = _receipt(chain, index).encode()
    position = data.draw(st.integers(0, len(encoded) - 1))
    bit = data.draw(st.integers(0, 7))
    flipped = encoded[:position] + bytes([encoded[position] ^ (1 << bit)]) + encoded[position + 1 :]
    with pytest.raises(VledgerError):
        verify_receipt(flipped, _keys(chain, quorum=3))


def _outsider() -> Any:
    """tests/vectors/outsider_verify.py, the verifier written from docs/PROTOCOL.md alone."""
    path = Path(__file__).resolve().parents[2] / "vectors" / "outsider_verify.py"
    spec = importlib.util.spec_from_file_location("outsider_verify", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outside_genesis(kit: Any, outside: list[SignerKey]) -> list[Record]:
    """A chain of 4 records whose genesis lists ``outside`` as outside witnesses, a quorum of 2."""
    rules = {"checkpoint_key": HOME.verifier().encode(), "witnesses": [w.verifier().encode() for w in outside]}
    genesis = Entry.prepare(
        LedgerRules(("note",), 4, {**rules, "quorum": 2}).genesis_content(LEDGER, "admin", "c-2", T0), 4, kit.limits
    )
    records = [genesis.place(0, ZERO_LINK, T0 + 5, "node-1")]
    for i in range(1, 4):
        records.append(kit.extend(records[-1], kit.entry(i, 4, ledger=LEDGER, kind="note")))
    return records


def test_a_genesis_with_outside_witnesses_asks_their_quorum(kit: Any) -> None:
    outside = OUTSIDE  # listed in the genesis; WITNESSES[0] stays a cluster witness
    records = _outside_genesis(kit, outside)
    leaves = [tree.leaf_hash(r.encode()) for r in records]
    root = tree.root_at(4, hash_at_of(leaves))
    proof = tree.inclusion_proof(2, 4, hash_at_of(leaves))
    keys = keys_from_genesis(records[0].encode(), LEDGER)
    assert keys.outside is not None and keys.outside.quorum == 2
    ov = _outsider()
    log_key = ov.parse_vkey(HOME.verifier().encode())
    for cosigners, missing in (([WITNESSES[0], outside[0]], outside[1].name), ([WITNESSES[0], *outside], None)):
        receipt = Receipt.of(records[2].encode(), proof, _note(4, root, witnesses=cosigners))
        if missing is None:
            assert verify_receipt(receipt, keys).outside == (outside[0].name, outside[1].name)
            got = ov.verify_receipt(receipt.encode(), log_key, genesis=records[0].encode())
            assert sorted(got["outside"]) == sorted(w.name for w in outside)
            continue
        with pytest.raises(VledgerError) as e:  # one outside cosignature of the two the genesis asks
            verify_receipt(receipt, keys)
        assert e.value.code == "no_quorum" and missing in e.value.message
        with pytest.raises(ov.VerifyError) as refused:
            ov.verify_receipt(receipt.encode(), log_key, genesis=records[0].encode())
        assert refused.value.code == "no_quorum"
        # Given only the key, no outside quorum is asked (14.3 step 5).
        verify_receipt(receipt, ReceiptKeys(HOME.verifier()))


def test_a_genesis_naming_an_outside_witness_as_the_cluster_s_own_checks_no_receipt(kit: Any) -> None:
    """fix19c left the receipt check out: an outside witness named ``<cluster>/witness/...`` (the
    cluster of the pinned key's name ``local/ledger-a``) counted, by name, as that cluster
    witness's cosignature. The genesis is bad_genesis wherever its outside witnesses are used (3),
    for the receipt check as for the outsider's; another cluster's witness name is an outside one."""
    posing = SignerKey("local/witness/r1", ALG_COSIGNATURE_V1, bytes([99]) * 32)
    records = _outside_genesis(kit, [OUTSIDE[0], posing])
    with pytest.raises(VledgerError) as e:
        keys_from_genesis(records[0].encode(), LEDGER)
    assert e.value.code == "bad_genesis" and "local/witness/r1" in e.value.message
    leaves = [tree.leaf_hash(r.encode()) for r in records]
    receipt = Receipt.of(
        records[2].encode(),
        tree.inclusion_proof(2, 4, hash_at_of(leaves)),
        _note(4, tree.root_at(4, hash_at_of(leaves)), witnesses=[WITNESSES[0], OUTSIDE[0], posing]),
    )
    ov = _outsider()
    with pytest.raises(ov.VerifyError) as refused:
        ov.verify_receipt(receipt.encode(), ov.parse_vkey(HOME.verifier().encode()), genesis=records[0].encode())
    assert refused.value.code == "bad_genesis"
    elsewhere = SignerKey("other/witness/r1", ALG_COSIGNATURE_V1, bytes([99]) * 32)
    listed = keys_from_genesis(_outside_genesis(kit, [OUTSIDE[0], elsewhere])[0].encode(), LEDGER).outside
    assert listed is not None and [k.name for k in listed.keys] == [OUTSIDE[0].name, elsewhere.name]
