"""node/node_keys.py and receipts past a witness's key rotation (docs/PROTOCOL.md 14.3, 16.6): a
receipt cosigned by a witness's rotated Ed25519 key verifies offline with its generation-0 key
and the admin ledger's checkpoint key alone; the old key counts only for cosignatures stamped
before the window's end; evidence that is not proven in a checkpoint of the admin key is refused."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from vledger.node import tree
from vledger.node.cosigning import needed_witnesses, verified_fresh_ms
from vledger.node.errors import VledgerError
from vledger.node.ledger import LedgerRules
from vledger.node.node_keys import NodeKeys, node_keys_of, proven_rotations, witness_histories
from vledger.node.note import ALG_COSIGNATURE_V1, ALG_ED25519, Checkpoint, Note, SignerKey, cosign, sign
from vledger.node.receipt import (
    Receipt,
    ReceiptKeys,
    keys_from_genesis,
    parse_receipt,
    verify_receipt,
    verify_witnessed,
)
from vledger.node.record import ZERO_LINK, Content, Entry, Record
from vledger.node.rules.admin import admin_genesis_rules
from vledger.tests.unit.node.tree_oracle import hash_at_of

CLUSTER = "local"
LEDGER = "ledger-a"
ORIGIN = f"{CLUSTER}/{LEDGER}"
HOME = SignerKey(ORIGIN, ALG_ED25519, bytes(range(32)))
ADMIN_HOME = SignerKey(f"{CLUSTER}/admin", ALG_ED25519, bytes(range(32)))  # the same home signs both
FORGER = SignerKey(f"{CLUSTER}/admin", ALG_ED25519, bytes(range(2, 34)))
WITNESSES = [SignerKey(f"{CLUSTER}/witness/r{i}", ALG_COSIGNATURE_V1, bytes([i + 7]) * 32) for i in range(3)]
R0_NEW = SignerKey(WITNESSES[0].name, ALG_COSIGNATURE_V1, bytes([99]) * 32)  # r0's generation 1
T0 = 1_790_000_000_000
ROTATED_AT = T0 + 60_000  # the key_rotation record's accepted (ms)
UNTIL = ROTATED_AT + 3_600_000  # the old key's window ends (ms)
CURVE = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"


def _root(records: list[bytes]) -> bytes:
    return tree.root_at(len(records), hash_at_of([tree.leaf_hash(r) for r in records]))


def _place(kit: Any, records: list[Record], content: Content, accepted: int) -> Record:
    entry = Entry.prepare(content, 0, kit.limits)
    prev = records[-1].link if records else ZERO_LINK
    return entry.place(len(records), prev, accepted, "node-1")


def _admin(
    kit: Any, sign_hex: str, until: int = UNTIL, kind: str = "key_rotation", cosigned: dict[str, int] | None = None
) -> list[bytes]:
    genesis = admin_genesis_rules().genesis_content("admin", "root", "admin-genesis", T0)
    records = [_place(kit, [], genesis, T0 + 1)]
    account = {"account": "ops", "op": "add", "role": "writer", "enabled": True, "keys": [], "via": ""}
    records.append(_place(kit, records, Content("admin", "account", account, "root", "a-1", T0 + 2), T0 + 2))
    payload: dict[str, Any] = {"node": "r0", "curve": CURVE, "sign": sign_hex, "until": until, "via": ""}
    if cosigned is not None:
        payload["cosigned"] = cosigned
    if kind != "key_rotation":
        payload = account
    records.append(_place(kit, records, Content("admin", kind, payload, "root", "rot-1", ROTATED_AT), ROTATED_AT))
    return [r.encode() for r in records]


def _admin_note(records: list[bytes], signer: SignerKey = ADMIN_HOME) -> bytes:
    body = Checkpoint(signer.name, len(records), _root(records)).body()
    return Note(body, (sign(body, signer),)).encode()


def _ledger(kit: Any) -> list[Record]:
    rules = LedgerRules(kinds=("note",), difficulty=0, rules={"checkpoint_key": HOME.verifier().encode()})
    records = [
        Entry.prepare(rules.genesis_content(LEDGER, "admin", "c-1", T0), 0, kit.limits).place(0, ZERO_LINK, T0, "n")
    ]
    for i in range(1, 4):
        records.append(kit.extend(records[-1], kit.entry(i, ledger=LEDGER, kind="note")))
    return records


def _note(records: list[Record], cosigners: list[tuple[SignerKey, int]]) -> bytes:
    data = [r.encode() for r in records]
    body = Checkpoint(ORIGIN, len(data), _root(data)).body()
    return Note(body, (sign(body, HOME), *(cosign(body, w, t).note_signature() for w, t in cosigners))).encode()


def _receipt(records: list[Record], cosigners: list[tuple[SignerKey, int]], node_keys: NodeKeys | None) -> bytes:
    data = [r.encode() for r in records]
    proof = tree.inclusion_proof(2, len(data), hash_at_of([tree.leaf_hash(r) for r in data]))
    return Receipt.of(data[2], proof, _note(records, cosigners), node_keys=node_keys).encode()


def _keys(records: list[Record], admin: SignerKey | None = ADMIN_HOME) -> ReceiptKeys:
    keys = keys_from_genesis(records[0].encode(), LEDGER, [w.verifier() for w in WITNESSES], 3)
    return dataclasses.replace(keys, admin_key=None if admin is None else admin.verifier())


@pytest.fixture(scope="module")
def ledger(kit: Any) -> list[Record]:
    return _ledger(kit)


@pytest.fixture(scope="module")
def admin(kit: Any) -> list[bytes]:
    return _admin(kit, R0_NEW.verifier().public_key.hex())


def _after(seconds: int = 60) -> int:
    return UNTIL // 1000 + seconds


def test_a_receipt_cosigned_by_a_rotated_key_verifies_offline(ledger: list[Record], admin: list[bytes]) -> None:
    evidence = node_keys_of(admin, _admin_note(admin))
    assert evidence is not None
    assert [r.index for r in evidence.rotations] == [2]
    cosigners = [(R0_NEW, _after()), (WITNESSES[1], _after()), (WITNESSES[2], _after())]
    data = _receipt(ledger, cosigners, evidence)
    assert parse_receipt(data).encode() == data and b'"node_keys":{"checkpoint":' in data
    verified = verify_receipt(data, _keys(ledger))
    assert verified.checkpoint.witnesses == ("local/witness/r0", "local/witness/r1", "local/witness/r2")
    # Without the admin ledger's key the evidence proves nothing: r0's new key is unknown.
    with pytest.raises(VledgerError) as e:
        verify_receipt(data, _keys(ledger, admin=None))
    assert e.value.code == "no_quorum"


@pytest.mark.parametrize(("stamped", "code"), [(UNTIL // 1000 - 1, None), (UNTIL // 1000, "bad_cosignature")])
def test_the_old_key_counts_only_before_until(
    ledger: list[Record], admin: list[bytes], stamped: int, code: str | None
) -> None:
    cosigners = [(WITNESSES[0], stamped), (WITNESSES[1], stamped), (WITNESSES[2], stamped)]
    data = _receipt(ledger, cosigners, node_keys_of(admin, _admin_note(admin)))
    if code is None:
        assert len(verify_receipt(data, _keys(ledger)).checkpoint.witnesses) == 3
        return
    with pytest.raises(VledgerError) as e:
        verify_receipt(data, _keys(ledger))
    assert e.value.code == code


@pytest.mark.parametrize(
    ("cosigned", "counted"),
    [
        ({LEDGER: 4}, True),  # the receipt's checkpoint (4 records) is no larger than what r0's old key cosigned
        ({LEDGER: 3}, False),  # larger: a backdated T inside the window does not help (outsider F3)
        ({"ledger-b": 9}, False),  # a ledger the rotation does not list
        ({}, False),  # the old key had cosigned nothing
    ],
)
def test_a_replaced_key_counts_only_up_to_the_size_its_rotation_says_it_cosigned(
    kit: Any, ledger: list[Record], cosigned: dict[str, int], counted: bool
) -> None:
    admin = _admin(kit, R0_NEW.verifier().public_key.hex(), cosigned=cosigned)
    evidence = node_keys_of(admin, _admin_note(admin))
    inside = UNTIL // 1000 - 1
    data = _receipt(ledger, [(WITNESSES[0], inside), (WITNESSES[1], inside), (WITNESSES[2], inside)], evidence)
    if counted:
        assert len(verify_receipt(data, _keys(ledger)).checkpoint.witnesses) == 3
    else:
        with pytest.raises(VledgerError) as e:
            verify_receipt(data, _keys(ledger))
        assert e.value.code == "no_quorum"
        # With a quorum the two others meet, r0 is simply not counted.
        two = dataclasses.replace(_keys(ledger), quorum=2)
        assert verify_receipt(data, two).checkpoint.witnesses == ("local/witness/r1", "local/witness/r2")
    # The new key counts on any checkpoint, also on a note where the old key's line comes first.
    both = _receipt(
        ledger, [(WITNESSES[0], inside), (R0_NEW, _after()), (WITNESSES[1], 1), (WITNESSES[2], 1)], evidence
    )
    assert len(verify_receipt(both, _keys(ledger)).checkpoint.witnesses) == 3


def _forged(kit: Any, admin: list[bytes], how: str) -> tuple[NodeKeys | None, str]:
    honest = node_keys_of(admin, _admin_note(admin))
    assert honest is not None
    if how == "signed by another key":
        return node_keys_of(admin, _admin_note(admin, FORGER)), "unverified_note"
    if how == "a record changed":
        other = _admin(kit, SignerKey("x", ALG_COSIGNATURE_V1, bytes([5]) * 32).verifier().public_key.hex())
        proven = dataclasses.replace(honest.rotations[0], record=other[2])
        return dataclasses.replace(honest, rotations=(proven,)), "bad_proof"
    if how == "another kind":
        other = _admin(kit, "", kind="account")
        proven = dataclasses.replace(honest.rotations[0], record=other[2])
        return NodeKeys(_admin_note(other), (proven,)), "bad_receipt"
    if how == "of another cluster":
        elsewhere = SignerKey("elsewhere/admin", ALG_ED25519, bytes(range(32)))
        return node_keys_of(admin, _admin_note(admin, elsewhere)), "unverified_note"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["signed by another key", "a record changed", "another kind", "of another cluster"])
def test_a_rotation_without_valid_proof_is_refused(
    kit: Any, ledger: list[Record], admin: list[bytes], how: str
) -> None:
    evidence, code = _forged(kit, admin, how)
    cosigners = [(R0_NEW, _after()), (WITNESSES[1], _after()), (WITNESSES[2], _after())]
    with pytest.raises(VledgerError) as e:
        verify_receipt(_receipt(ledger, cosigners, evidence), _keys(ledger))
    assert e.value.code == code


def test_an_admin_key_of_another_cluster_is_refused(ledger: list[Record], admin: list[bytes]) -> None:
    elsewhere = SignerKey("elsewhere/admin", ALG_ED25519, bytes(range(32)))
    cosigners = [(R0_NEW, _after()), (WITNESSES[1], _after()), (WITNESSES[2], _after())]
    data = _receipt(ledger, cosigners, node_keys_of(admin, _admin_note(admin, elsewhere)))
    with pytest.raises(VledgerError) as e:
        verify_receipt(data, _keys(ledger, admin=elsewhere))
    assert e.value.code == "wrong_origin"


def test_histories_follow_only_the_witnesses_given(admin: list[bytes]) -> None:
    evidence = node_keys_of(admin, _admin_note(admin))
    assert evidence is not None
    rotations = proven_rotations(evidence, ADMIN_HOME.verifier())
    assert [(r["node"], r["accepted"], r["until"]) for r in rotations] == [("r0", ROTATED_AT, UNTIL)]
    histories = witness_histories([w.verifier() for w in WITNESSES], rotations)
    assert list(histories) == ["local/witness/r0"]
    history = histories["local/witness/r0"]
    old, new = WITNESSES[0].verifier().public_key.hex(), R0_NEW.verifier().public_key.hex()
    assert history.signs_at(new, 0) and history.signs_at(old, UNTIL - 1) and not history.signs_at(old, UNTIL)
    assert witness_histories([WITNESSES[1].verifier()], rotations) == {}


def test_node_keys_leave_out_other_nodes_and_records_past_the_checkpoint(admin: list[bytes]) -> None:
    assert node_keys_of(admin, _admin_note(admin), nodes={"r1"}) is None
    assert node_keys_of(admin, _admin_note(admin[:2])) is None


@pytest.mark.parametrize("cosigned", [{LEDGER: 4}, None])
def test_a_replaced_key_s_later_line_past_until_never_makes_the_head_fresh(
    kit: Any, ledger: list[Record], cosigned: dict[str, int] | None
) -> None:
    # r0's old key cosigned the checkpoint inside its window (counted), then its holder stamped
    # a line after until: r0's newest, and so fresh_ms (PROTOCOL 11.4), must stay the first line.
    admin = _admin(kit, R0_NEW.verifier().public_key.hex(), cosigned=cosigned)
    evidence = node_keys_of(admin, _admin_note(admin))
    inside, late = UNTIL // 1000 - 1, _after(600)
    note = _note(ledger, [(WITNESSES[0], inside), (WITNESSES[0], late), (WITNESSES[1], late), (WITNESSES[2], inside)])
    verified = verify_witnessed(note, _keys(ledger), node_keys=evidence)
    assert verified.witnesses == ("local/witness/r0", "local/witness/r1", "local/witness/r2")
    assert [c.timestamp for c in verified.newest] == [inside, late, inside]
    assert verified_fresh_ms(verified, needed_witnesses(3)) == inside * 1000
    # A later line by r0's new key is in force whatever its time: it is r0's newest.
    renewed = _note(ledger, [(WITNESSES[0], inside), (R0_NEW, late), (WITNESSES[1], late), (WITNESSES[2], inside)])
    verified = verify_witnessed(renewed, _keys(ledger), node_keys=evidence)
    assert [c.timestamp for c in verified.newest] == [late, late, inside]
    assert verified_fresh_ms(verified, needed_witnesses(3)) == late * 1000
