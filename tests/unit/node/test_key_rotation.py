"""node/key_rotation.py: the key chain follows only rotations signed by the key in force, never a
key twice; a checkpoint verifies only with the key in force at its size (retired_key otherwise);
a receipt past a rotation verifies from the genesis alone, with its rotation records proven."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from vledger.config.settings import PROTOCOL_LIMITS as _LIMITS
from vledger.node import tree
from vledger.node.errors import (
    ProofError,
    ReceiptError,
    RetiredKeyError,
    RotationError,
    RuleError,
    StandbyRotationError,
    UnverifiedNoteError,
    VledgerError,
)
from vledger.node.key_rotation import (
    ROTATION_KIND,
    KeyChain,
    chain_of,
    rotation_message,
    rotation_payload,
)
from vledger.node.ledger import LedgerRules
from vledger.node.note import ALG_ED25519, Checkpoint, Note, SignerKey, sign
from vledger.node.receipt import Receipt, RotationProof, keys_from_genesis, parse_receipt, verify_receipt
from vledger.node.record import ZERO_LINK, Entry, Record
from vledger.node.rules.engine import RulesEngine
from vledger.tests.unit.node.tree_oracle import hash_at_of

LEDGER = "ledger-a"
ORIGIN = f"local/{LEDGER}"
K0 = SignerKey(ORIGIN, ALG_ED25519, bytes(range(32)))
K1 = SignerKey(ORIGIN, ALG_ED25519, bytes(range(1, 33)))
K2 = SignerKey(ORIGIN, ALG_ED25519, bytes(range(2, 34)))
T0 = 1_790_000_000_000


def _genesis(kit: Any, pin: SignerKey | None = K0) -> Record:
    rules = LedgerRules(
        kinds=(ROTATION_KIND, "note"),
        difficulty=0,
        rules={} if pin is None else {"checkpoint_key": pin.verifier().encode()},
    )
    entry = Entry.prepare(rules.genesis_content(LEDGER, "admin", "create-1", T0), 0, kit.limits)
    return entry.place(0, ZERO_LINK, T0 + 5, "node-1")


def _append(kit: Any, records: list[Record], kind: str = "note", payload: dict[str, Any] | None = None) -> Record:
    i = len(records)
    entry = kit.entry(i, 0, ledger=LEDGER, kind=kind, payload=payload)
    records.append(kit.extend(records[-1], entry))
    return records[-1]


def _rotate(kit: Any, records: list[Record], old: SignerKey, new: SignerKey) -> Record:
    return _append(kit, records, ROTATION_KIND, rotation_payload(old, new.verifier()))


@pytest.fixture
def rotated(kit: Any) -> list[Record]:
    """genesis (K0), notes 1..3, rotation to K1 at 4, notes 5..6, rotation to K2 at 7, note 8."""
    records = [_genesis(kit)]
    for _ in range(3):
        _append(kit, records)
    _rotate(kit, records, K0, K1)
    _append(kit, records)
    _append(kit, records)
    _rotate(kit, records, K1, K2)
    _append(kit, records)
    return records


def _chain(records: list[Record]) -> KeyChain:
    chain = chain_of(LEDGER, LedgerRules.from_genesis(records[0].content, _LIMITS), records[1:])
    assert chain is not None
    return chain


def _note(size: int, root: bytes, key: SignerKey) -> bytes:
    body = Checkpoint(ORIGIN, size, root).body()
    return Note(body, (sign(body, key),)).encode()


def _leaves(records: list[Record]) -> list[bytes]:
    return [tree.leaf_hash(r.encode()) for r in records]


def test_the_key_in_force_changes_right_after_each_rotation(rotated: list[Record]) -> None:
    chain = _chain(rotated)
    assert chain.heights == (4, 7)
    assert [k.public_key for k in chain.keys] == [k.public_key for k in (K0.verifier(), K1.verifier(), K2.verifier())]
    # The tree that first holds the rotation (size height + 1) is the new key's.
    assert [chain.key_for_size(n) for n in range(10)] == [K0.verifier()] * 5 + [K1.verifier()] * 3 + [K2.verifier()] * 2


def test_only_the_key_in_force_signs_a_checkpoint(rotated: list[Record]) -> None:
    chain = _chain(rotated)
    root = bytes(32)
    assert chain.check(_note(4, root, K0)).checkpoint.size == 4
    assert chain.check(_note(5, root, K1)).checkpoint.size == 5
    assert chain.check(_note(9, root, K2)).checkpoint.size == 9
    with pytest.raises(RetiredKeyError) as retired:  # the old key past its rotation: evidence
        chain.check(_note(5, root, K0))
    assert retired.value.code == "retired_key"
    with pytest.raises(RetiredKeyError):  # a new key before its rotation
        chain.check(_note(4, root, K1))
    stranger = SignerKey(ORIGIN, ALG_ED25519, bytes([9]) * 32)
    with pytest.raises(UnverifiedNoteError):
        chain.check(_note(9, root, stranger))


def test_a_rotation_signed_by_a_retired_or_foreign_key_is_refused(kit: Any) -> None:
    records = [_genesis(kit)]
    _rotate(kit, records, K0, K1)
    forged = [_genesis(kit)]
    _rotate(kit, forged, K1, K2)  # signed by a key that is not in force: a forgery
    rules = LedgerRules.from_genesis(records[0].content, _LIMITS)
    with pytest.raises(RotationError) as e:
        chain_of(LEDGER, rules, forged[1:])
    assert e.value.code == "bad_rotation" and e.value.height == 1
    # After K0 -> K1, a rotation still signed by K0 is no longer valid.
    _rotate(kit, records, K0, K2)
    with pytest.raises(RotationError, match="not signed by the key in force"):
        chain_of(LEDGER, rules, records[1:])


def test_a_replayed_rotation_is_refused(kit: Any) -> None:
    records = [_genesis(kit)]
    first = _rotate(kit, records, K0, K1)
    _rotate(kit, records, K1, K0)  # back to a key that was in force: never
    rules = LedgerRules.from_genesis(records[0].content, _LIMITS)
    with pytest.raises(RotationError, match="in force before"):
        chain_of(LEDGER, rules, records[1:])
    # The first rotation's payload copied at a later height: signed by K0, no longer in force.
    replay = [_genesis(kit)]
    _rotate(kit, replay, K0, K1)
    _append(kit, replay, ROTATION_KIND, dict(first.content.payload))
    with pytest.raises(RotationError):
        chain_of(LEDGER, rules, replay[1:])


def test_the_signed_message_names_origin_old_and_new_key() -> None:
    message = rotation_message(ORIGIN, K0.verifier(), K1.verifier())
    assert message == (
        b"vledger/checkpoint-key-rotation/v1\n"
        + ORIGIN.encode()
        + b"\n"
        + K0.verifier().encode().encode()
        + b"\n"
        + K1.verifier().encode().encode()
        + b"\n"
    )
    # Another ledger's origin: the same keys' signature does not carry over.
    other = SignerKey("local/ledger-b", ALG_ED25519, K0.seed)
    assert (
        rotation_payload(other, SignerKey("local/ledger-b", ALG_ED25519, K1.seed).verifier())["signature"]
        != (rotation_payload(K0, K1.verifier())["signature"])
    )


@pytest.mark.parametrize(
    "payload",
    [
        {"key": "not a key", "signature": "AAAA"},
        {"key": K1.verifier().encode()},
        {"key": SignerKey("local/other", ALG_ED25519, K1.seed).verifier().encode(), "signature": ""},
    ],
)
def test_a_malformed_rotation_is_refused(kit: Any, payload: dict[str, Any]) -> None:
    records = [_genesis(kit)]
    _append(kit, records, ROTATION_KIND, payload)
    rules = LedgerRules.from_genesis(records[0].content, _LIMITS)
    with pytest.raises(RotationError):
        chain_of(LEDGER, rules, records[1:])


def test_a_ledger_that_pins_no_key_cannot_rotate(kit: Any) -> None:
    records = [_genesis(kit, pin=None)]
    _rotate(kit, records, K0, K1)
    rules = LedgerRules.from_genesis(records[0].content, _LIMITS)
    with pytest.raises(RotationError, match="pins no checkpoint key"):
        chain_of(LEDGER, rules, records[1:])


def _receipt(records: list[Record], index: int, key: SignerKey, rotations: tuple[int, ...]) -> Receipt:
    leaves = _leaves(records)
    size = len(records)
    hash_at = hash_at_of(leaves)
    note = _note(size, tree.root_at(size, hash_at), key)
    proofs = [RotationProof(h, records[h].encode(), tuple(tree.inclusion_proof(h, size, hash_at))) for h in rotations]
    return Receipt.of(records[index].encode(), tree.inclusion_proof(index, size, hash_at), note, proofs)


def test_a_receipt_past_two_rotations_verifies_from_the_genesis_alone(rotated: list[Record]) -> None:
    keys = keys_from_genesis(rotated[0].encode(), LEDGER)
    receipt = _receipt(rotated, 8, K2, (4, 7))
    data = receipt.encode()
    assert parse_receipt(data) == receipt
    assert verify_receipt(data, keys).checkpoint.checkpoint.size == 9
    # Without the rotations the genesis key does not lead to K2.
    with pytest.raises(UnverifiedNoteError):
        verify_receipt(dataclasses.replace(receipt, rotations=()), keys)
    # A chain cut short: K2 is no key of the chain it leads to.
    with pytest.raises(UnverifiedNoteError):
        verify_receipt(dataclasses.replace(receipt, rotations=receipt.rotations[:1]), keys)


def test_a_receipt_signed_by_a_retired_key_past_its_rotation_is_refused(rotated: list[Record]) -> None:
    keys = keys_from_genesis(rotated[0].encode(), LEDGER)
    with pytest.raises(RetiredKeyError):
        verify_receipt(_receipt(rotated, 8, K0, (4,)), keys)
    with pytest.raises(RetiredKeyError):
        verify_receipt(_receipt(rotated, 8, K1, (4, 7)), keys)


def test_a_receipts_rotation_must_stand_in_the_checkpoint(rotated: list[Record], kit: Any) -> None:
    keys = keys_from_genesis(rotated[0].encode(), LEDGER)
    receipt = _receipt(rotated, 8, K2, (4, 7))
    bad_proof = dataclasses.replace(receipt.rotations[0], proof=receipt.rotations[1].proof)
    with pytest.raises(ProofError):
        verify_receipt(dataclasses.replace(receipt, rotations=(bad_proof, receipt.rotations[1])), keys)
    with pytest.raises(ReceiptError, match="increasing"):
        verify_receipt(dataclasses.replace(receipt, rotations=receipt.rotations[::-1]), keys)
    note = RotationProof(5, rotated[5].encode(), receipt.rotations[0].proof)
    with pytest.raises(ReceiptError, match="not a key rotation"):
        verify_receipt(dataclasses.replace(receipt, rotations=(receipt.rotations[0], note, receipt.rotations[1])), keys)


def test_a_receipt_without_rotations_keeps_its_old_form(rotated: list[Record]) -> None:
    data = _receipt(rotated, 2, K0, ()).encode()
    assert b'"rotations"' not in data
    # An empty list is not the canonical form of "no rotation".
    with pytest.raises(ReceiptError):
        parse_receipt(data[:-2] + b',"rotations":[]}\n')


def test_the_rules_engine_passes_over_a_rotation_in_an_election(kit: Any) -> None:
    """A rotation is the log's record, not the domain's (PROTOCOL 3): an election replays past
    it with no violation, and its height is taken."""
    from vledger.node.rules.engine import RulesEngine

    election = {"type": "election", "choices": ["a", "b"], "opens": 0, "closes": 2**40}
    kinds = (ROTATION_KIND, "cast", "register", "uncast", "withdraw")
    rules = LedgerRules(kinds=kinds, difficulty=0, rules={**election, "checkpoint_key": K0.verifier().encode()})
    entry = Entry.prepare(rules.genesis_content(LEDGER, "admin", "create-1", T0), 0, kit.limits)
    records = [entry.place(0, ZERO_LINK, T0 + 5, "node-1")]
    _rotate(kit, records, K0, K1)
    engine = RulesEngine()
    assert engine.replay(records) == []
    state = engine.state(LEDGER)
    assert state is not None and state.next_height == len(records)


def _standby_ledger(kit: Any, rotation: bool = True) -> list[Record]:
    """A genesis pinning K0 and a standby key (10.9) that lists the rotation kind (as geneses
    written before 13.8's rule on such ledgers do), notes 1..3, then a rotation to K1 at 4
    signed by K0: valid by 13.8's first rules alone (outsider o16 F4)."""
    rules = LedgerRules(
        kinds=(ROTATION_KIND, "epoch", "note"),
        difficulty=0,
        rules={"checkpoint_key": K0.verifier().encode(), "standby_key": K2.verifier().encode()},
    )
    entry = Entry.prepare(rules.genesis_content(LEDGER, "admin", "create-1", T0), 0, kit.limits)
    records = [entry.place(0, ZERO_LINK, T0 + 5, "node-1")]
    for _ in range(3):
        _append(kit, records)
    if rotation:
        _rotate(kit, records, K0, K1)
    _append(kit, records)
    return records


def test_a_ledger_with_a_standby_never_rotates_for_any_checker(kit: Any) -> None:
    """PROTOCOL 13.8, 10.9: a rotation record on a ledger whose genesis pins a standby key is
    refused [standby_rotation] by the key chain (followers, exports, the gateway), by a receipt's
    check, and by the rules engine (observers, the home); the key in force stays K0."""
    records = _standby_ledger(kit)
    rules = LedgerRules.from_genesis(records[0].content, _LIMITS)
    with pytest.raises(StandbyRotationError) as caught:
        chain_of(LEDGER, rules, records[1:])
    assert (caught.value.code, caught.value.height) == ("standby_rotation", 4)
    assert isinstance(caught.value, RotationError) and isinstance(caught.value, RuleError)
    # The receipt's check, from the genesis alone: the rotation is refused, not followed.
    keys = keys_from_genesis(records[0].encode(), LEDGER)
    with pytest.raises(VledgerError) as refused:
        verify_receipt(_receipt(records, 5, K1, (4,)), keys)
    assert refused.value.code == "standby_rotation"
    # Observers replay with the rules engine: the record is a rule breaker, at its height.
    violations = RulesEngine().replay(records)
    assert [(v.height, v.error.code) for v in violations] == [(4, "standby_rotation")]
    # An honest ledger with a standby (no rotation) passes all three; one without a standby rotates.
    honest = _standby_ledger(kit, rotation=False)
    assert chain_of(LEDGER, rules, honest[1:]) == KeyChain(LEDGER, (K0.verifier(),), standby=True)
    assert verify_receipt(_receipt(honest, 4, K0, ()), keys).record == honest[4]
    assert RulesEngine().replay(honest) == []
    plain = [_genesis(kit)]
    _append(kit, plain)
    _rotate(kit, plain, K0, K1)
    assert RulesEngine().replay(plain) == []
    assert _chain(plain).current == K1.verifier()
