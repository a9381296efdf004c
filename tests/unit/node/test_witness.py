"""node/witness.py: a home's checkpoints, whose key checks them, witnesses' cosignatures, self-checks.

Outsider checks use only hashlib, base64 and an Ed25519 library over the bytes PROTOCOL 10.7
and 13 spell out: the checkpoint body, the note's signature line, the cosignature message.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib

import pytest
from Crypto.Signature import eddsa

from vledger.node.errors import NoteError, StoreContradictsCheckpointError, VledgerError
from vledger.node.ledger import LedgerRules
from vledger.node.node_key_rotation import key_histories
from vledger.node.note import ALG_COSIGNATURE_V1, ALG_ED25519, VerifierKey, parse_note
from vledger.node.witness import (
    CheckpointKeys,
    HomeSigner,
    WitnessSigner,
    check_cosigned,
    check_cosigned_in_force,
    check_extends,
    home_key,
    pinned_key,
    witness_key,
    witness_keys_in_force,
    witness_name,
)

# RFC 8032, section 7.1, TEST 1.
SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
WITNESS_SECRET = bytes(range(32))
ROOT = hashlib.sha256(b"a root").digest()
HOME = HomeSigner("local", SECRET)
KEYS = CheckpointKeys("local", lambda ledger: home_key("local", ledger, PUBLIC))


def _key_id(name: str, alg: int, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public).digest()[:4]


def test_a_checkpoint_is_a_signed_note_an_outsider_checks_with_ed25519() -> None:
    checkpoint = HOME.sign("votes", 258, ROOT)
    body = f"local/votes\n258\n{base64.b64encode(ROOT).decode()}\n".encode()
    assert checkpoint.note.startswith(body + b"\n\xe2\x80\x94 local/votes ")  # text, blank line, em dash
    line = checkpoint.note[len(body) + 1 :].decode().rstrip("\n")
    raw = base64.b64decode(line.split(" ")[2])
    assert raw[:4] == _key_id("local/votes", ALG_ED25519, PUBLIC)
    eddsa.new(eddsa.import_public_key(PUBLIC), "rfc8032").verify(body, raw[4:])
    assert (checkpoint.ledger, checkpoint.size, checkpoint.height, checkpoint.root) == ("votes", 258, 257, ROOT)
    assert HOME.sign("votes", 258, ROOT) == checkpoint  # deterministic
    assert KEYS.check("votes", checkpoint.note) == checkpoint


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


@pytest.mark.parametrize(
    ("ledger", "note", "code"),
    [
        ("votes", _flip(HOME.sign("votes", 8, ROOT).note, 14), "bad_note_signature"),  # the size line
        ("votes", _flip(HOME.sign("votes", 8, ROOT).note, -10), "bad_note_signature"),  # the signature
        ("other", HOME.sign("votes", 8, ROOT).note, "unverified_note"),  # another ledger's key name
        ("votes", HomeSigner("elsewhere", SECRET).sign("votes", 8, ROOT).note, "unverified_note"),
        ("votes", HomeSigner("local", WITNESS_SECRET).sign("votes", 8, ROOT).note, "unverified_note"),
        ("votes", b"local/votes\n8\n", "bad_note"),
        ("votes", b"\xff" * 10, "bad_note"),
    ],
    ids=["size", "signature", "other-ledger", "other-cluster", "other-key", "unsigned", "not-text"],
)
def test_checkpoint_keys_refuse_what_the_ledger_s_key_did_not_sign(ledger: str, note: bytes, code: str) -> None:
    with pytest.raises(NoteError) as caught:
        KEYS.check(ledger, note)
    assert caught.value.code == code


def test_a_ledger_without_a_key_has_no_checkpoint_to_accept() -> None:
    with pytest.raises(NoteError) as caught:
        CheckpointKeys("local", lambda ledger: None).check("votes", HOME.sign("votes", 8, ROOT).note)
    assert caught.value.code == "bad_note_key"


def test_a_cosignature_is_the_note_plus_a_cosignature_v1_line() -> None:
    checkpoint = HOME.sign("votes", 8, ROOT)
    cosigned = WitnessSigner("replica-1", WITNESS_SECRET).cosign(checkpoint, 1_790_000_000)
    assert cosigned.startswith(checkpoint.note)
    line = parse_note(cosigned).signatures[-1]
    public = bytes(eddsa.import_private_key(WITNESS_SECRET).public_key().export_key(format="raw"))
    assert line.key_id.to_bytes(4, "big") == _key_id("replica-1", ALG_COSIGNATURE_V1, public)
    assert line.signature[:8] == (1_790_000_000).to_bytes(8, "big")
    body = parse_note(checkpoint.note).text.encode()
    message = b"cosignature/v1\ntime 1790000000\n" + body
    eddsa.new(eddsa.import_public_key(public), "rfc8032").verify(message, line.signature[8:])
    found = check_cosigned(
        cosigned, "votes", "local", home_key("local", "votes", PUBLIC), witness_key("replica-1", public)
    )
    assert (found.witness, found.ledger, found.size, found.root) == ("replica-1", "votes", 8, ROOT)
    assert found.cosignature.timestamp == 1_790_000_000


def test_a_cosignature_by_another_key_or_on_another_checkpoint_does_not_count() -> None:
    public = bytes(eddsa.import_private_key(WITNESS_SECRET).public_key().export_key(format="raw"))
    log_key, witness = home_key("local", "votes", PUBLIC), witness_key("replica-1", public)
    checkpoint = HOME.sign("votes", 8, ROOT)
    impostor = WitnessSigner("replica-1", SECRET[::-1]).cosign(checkpoint, 1)  # the name, not the key
    with pytest.raises(NoteError) as caught:
        check_cosigned(impostor, "votes", "local", log_key, witness)
    assert caught.value.code == "no_quorum"
    good = WitnessSigner("replica-1", WITNESS_SECRET).cosign(checkpoint, 1)
    note = parse_note(good)
    line = note.signatures[-1]
    changed = dataclasses.replace(line, signature=_flip(line.signature, 20))  # a bit of the Ed25519 signature
    tampered = dataclasses.replace(note, signatures=(*note.signatures[:-1], changed)).encode()
    with pytest.raises(NoteError) as caught:
        check_cosigned(tampered, "votes", "local", log_key, witness)
    assert caught.value.code == "bad_cosignature"
    unsigned = WitnessSigner("replica-1", WITNESS_SECRET).cosign(
        HomeSigner("local", WITNESS_SECRET).sign("votes", 9, ROOT), 1
    )
    with pytest.raises(NoteError) as caught:  # a checkpoint the home never signed, cosigned all the same
        check_cosigned(unsigned, "votes", "local", log_key, witness)
    assert caught.value.code == "unverified_note"
    with pytest.raises(NoteError) as caught:  # another ledger's checkpoint
        check_cosigned(good, "other", "local", home_key("local", "other", PUBLIC), witness)
    assert caught.value.code in ("unverified_note", "wrong_origin")


def test_a_genesis_pins_a_key_by_its_vkey() -> None:
    vkey = home_key("local", "votes", PUBLIC).encode()
    rules = LedgerRules(("vote",), 0, {"checkpoint_key": vkey})
    assert pinned_key("votes", rules, "local") == home_key("local", "votes", PUBLIC)
    assert pinned_key("votes", LedgerRules(("vote",), 0, {}), "local") is None


@pytest.mark.parametrize(
    "value",
    [
        7,
        "not a vkey",
        home_key("local", "other", PUBLIC).encode(),  # another ledger's name
        home_key("elsewhere", "votes", PUBLIC).encode(),  # another cluster's
        VerifierKey("local/votes", ALG_COSIGNATURE_V1, PUBLIC).encode(),  # a cosignature key
    ],
)
def test_a_genesis_that_pins_anything_else_is_a_bad_genesis(value: object) -> None:
    with pytest.raises(VledgerError) as caught:
        pinned_key("votes", LedgerRules(("vote",), 0, {"checkpoint_key": value}), "local")
    assert caught.value.code == "bad_genesis"


def test_a_store_holds_its_checkpoint_only_at_its_size_with_its_root() -> None:
    check_extends("votes", 8, ROOT, 10, ROOT)
    other = dataclasses.replace(HOME.sign("votes", 8, ROOT), root=bytes(32)).root
    for held, held_root in ((7, None), (10, other)):
        with pytest.raises(StoreContradictsCheckpointError) as caught:
            check_extends("votes", 8, ROOT, held, held_root)
        assert caught.value.code == "store_contradicts_checkpoint" and caught.value.height == 7
        # A witness's alert reads it too: it cosigned the checkpoint, it did not sign it.
        assert "signed or cosigned" in caught.value.message


def _public(seed: bytes) -> bytes:
    return bytes(eddsa.import_private_key(seed).public_key().export_key(format="raw"))


def test_a_rotated_witness_counts_by_its_new_key_and_by_its_old_one_only_before_until() -> None:
    old_seed, new_seed, stranger = WITNESS_SECRET, bytes(range(1, 33)), bytes(range(2, 34))
    rotation = {"node": "replica-1", "curve": "A" * 40, "sign": _public(new_seed).hex(), "accepted": 1_000_000,
                "until": 1_790_000_000_000, "via": ""}  # fmt: skip
    history = key_histories({"replica-1": ("A" * 40, _public(old_seed).hex())}, [rotation])["replica-1"]
    log_key = home_key("local", "votes", PUBLIC)
    checkpoint = HOME.sign("votes", 8, ROOT)
    name = witness_name("local", "replica-1")

    def check(seed: bytes, timestamp: int) -> int:
        note = WitnessSigner(name, seed).cosign(checkpoint, timestamp)
        return check_cosigned_in_force(note, "votes", "local", log_key, "replica-1", history).size

    assert check(old_seed, 1_789_999_999) == 8  # stamped in the window
    assert check(new_seed, 1_790_000_000) == 8 and check(new_seed, 1) == 8
    with pytest.raises(NoteError) as caught:  # the old key, stamped at until: refused
        check(old_seed, 1_790_000_000)
    assert caught.value.code == "bad_cosignature"
    with pytest.raises(NoteError) as caught:  # a key the witness never had, under its name
        check(stranger, 1)
    assert caught.value.code == "no_quorum"


def test_the_keys_in_force_of_rotated_witnesses_are_the_new_one_and_the_old_one_during_its_window() -> None:
    old, new = _public(WITNESS_SECRET).hex(), _public(bytes(range(1, 33))).hex()
    rotation = {"node": "replica-1", "curve": "A" * 40, "sign": new, "accepted": 1000, "until": 5000, "via": ""}
    originals = {"replica-1": ("A" * 40, old), "replica-2": ("B" * 40, "2" * 64), "ingest-1": ("C" * 40, "1" * 64)}
    histories = key_histories(originals, [rotation])
    witnesses = ["replica-1", "replica-2"]
    name = witness_name("local", "replica-1")
    assert [k.encode() for k in witness_keys_in_force("local", histories, witnesses, 4999)] == [
        witness_key(name, bytes.fromhex(new)).encode(),
        witness_key(name, bytes.fromhex(old)).encode(),
    ]  # replica-2 never rotated: its key file speaks for it
    assert [k.encode() for k in witness_keys_in_force("local", histories, witnesses, 5000)] == [
        witness_key(name, bytes.fromhex(new)).encode()
    ]
