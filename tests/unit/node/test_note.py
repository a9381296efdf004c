"""Signed notes, checkpoints, cosignatures and tlog-witness messages (node/note.py).

Checked against the published vectors in tests/vectors/note.json (Go's sumdb/note, the C2SP
specs, transparency-dev/formats and a production checkpoint cosigned by a public witness),
then against our own vectors and properties: any flipped byte fails, parse(format(x)) == x.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vledger.node import errors, note

VECTORS = Path(__file__).parents[2] / "vectors"
DATA: dict[str, Any] = json.loads((VECTORS / "note.json").read_text(encoding="utf-8"))
OUT = DATA["outside"]
OURS = DATA["vledger"]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("note_vector_generator", VECTORS / "generate_note.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _note_bytes(vector: dict[str, Any]) -> bytes:
    return bytes.fromhex(vector["note_hex"]) if "note_hex" in vector else vector["note"].encode("utf-8")


def _keys(vkeys: list[str]) -> list[note.VerifierKey]:
    return [note.parse_verifier_key(k) for k in vkeys]


# --- outside vectors ---------------------------------------------------------------------------


@pytest.mark.parametrize("pair", OUT["key_pairs"], ids=lambda p: p["vkey"].split("+")[0])
def test_signer_keys_derive_the_published_verifier_keys(pair: dict[str, Any]) -> None:
    signer = note.parse_signer_key(pair["skey"])
    assert signer.verifier().encode() == pair["vkey"]
    assert signer.encode() == pair["skey"]
    assert note.parse_verifier_key(pair["vkey"]) == signer.verifier()


@pytest.mark.parametrize("vector", OUT["verifier_keys"], ids=lambda v: v["vkey"].split("+")[0])
def test_published_verifier_keys_parse_and_encode_back(vector: dict[str, Any]) -> None:
    key = note.parse_verifier_key(vector["vkey"])
    assert key.alg == vector["alg"]
    assert key.encode() == vector["vkey"]
    assert f"{key.key_id:08x}" == vector["vkey"].split("+")[1]


@pytest.mark.parametrize("vector", OUT["bad_verifier_keys"], ids=lambda v: v["why"])
def test_published_bad_verifier_keys_are_refused(vector: dict[str, Any]) -> None:
    with pytest.raises(errors.NoteKeyError):
        note.parse_verifier_key(vector["vkey"])


def test_every_mangling_of_a_key_string_is_refused_as_go_does() -> None:
    """Go's TestNewVerifier and TestNewSigner: every proper substring, every byte plus one."""
    pair = OUT["key_pairs"][0]
    for text, parse in ((pair["vkey"], note.parse_verifier_key), (pair["skey"], note.parse_signer_key)):
        for i in range(len(text)):
            for j in range(i + 1, len(text) + 1):
                if (i, j) != (0, len(text)):
                    with pytest.raises(errors.NoteKeyError):
                        parse(text[i:j])
            with pytest.raises(errors.NoteKeyError):
                parse(text[:i] + chr(ord(text[i]) + 1) + text[i + 1 :])


@pytest.mark.parametrize("vector", OUT["notes"], ids=lambda v: f"{v['source']['path']}:{'+'.join(v['verified'])}")
def test_published_notes_open(vector: dict[str, Any]) -> None:
    opened = note.open_note(_note_bytes(vector), _keys(vector["vkeys"]))
    assert [s.name for _, s in opened.verified] == vector["verified"]
    assert len(opened.unverified) == vector["unverified"]
    assert opened.note.encode() == _note_bytes(vector)
    if "resign" in vector:  # Ed25519 is deterministic: our signature is the published one
        signer = note.parse_signer_key(vector["resign"]["skey"])
        assert note.Note(opened.note.text, (note.sign(opened.note.text, signer),)).encode() == _note_bytes(vector)


@pytest.mark.parametrize("vector", OUT["bad_notes"], ids=lambda v: v["why"])
def test_published_bad_notes_are_refused(vector: dict[str, Any]) -> None:
    with pytest.raises(errors.NoteError) as caught:
        note.open_note(_note_bytes(vector), _keys(vector["vkeys"]))
    assert caught.value.code == vector["code"]


@pytest.mark.parametrize("vector", OUT["checkpoints"], ids=lambda v: v["origin"])
def test_a_production_checkpoint_and_its_witness_cosignature_verify(vector: dict[str, Any]) -> None:
    data = vector["note"].encode("utf-8")
    log_key = note.parse_verifier_key(vector["log_vkey"])
    witnesses = _keys(vector["witness_vkeys"])
    checked = note.verify_checkpoint(data, log_key, witnesses, vector["quorum"])
    assert checked.checkpoint == note.Checkpoint(vector["origin"], vector["size"], bytes.fromhex(vector["root_hex"]))
    assert list(checked.witnesses) == vector["witnesses"]
    assert [c.timestamp for c in checked.cosignatures] == vector["timestamps"]
    # Another size under the same signatures: the log's signature fails first.
    forged = data.replace(f"\n{vector['size']}\n".encode(), b"\n42\n", 1)
    with pytest.raises(errors.NoteSignatureError, match="does not verify"):
        note.verify_checkpoint(forged, log_key, witnesses, vector["quorum"])
    # The witness key in its note form (type 0x01) has another key id: its line is unknown then.
    note_form = [note.VerifierKey(w.name, note.ALG_ED25519, w.public_key) for w in witnesses]
    opened = note.open_note(data, [log_key, *note_form])
    assert [k for k, _ in opened.verified] == [log_key]


@pytest.mark.parametrize("vector", OUT["checkpoint_bodies"], ids=lambda v: v["origin"])
def test_published_checkpoint_bodies_parse_and_format_back(vector: dict[str, Any]) -> None:
    checkpoint = note.parse_checkpoint(vector["body"])
    assert (checkpoint.origin, checkpoint.size, checkpoint.root.hex()) == (
        vector["origin"],
        vector["size"],
        vector["root_hex"],
    )
    assert list(checkpoint.extensions) == vector["extensions"]
    assert checkpoint.body() == vector["body"]


@pytest.mark.parametrize("vector", OUT["bad_checkpoint_bodies"], ids=lambda v: v["why"])
def test_published_bad_checkpoint_bodies_are_refused(vector: dict[str, Any]) -> None:
    with pytest.raises(errors.CheckpointError):
        note.parse_checkpoint(vector["body"])


@pytest.mark.parametrize("vector", OUT["cosignature_lines"], ids=lambda v: str(v["timestamp"]))
def test_published_cosignature_lines_hold_their_timestamp(vector: dict[str, Any]) -> None:
    cosig = note.Cosignature.from_note_signature(note.parse_signature_line(vector["line"]))
    assert cosig.timestamp == vector["timestamp"]
    assert f"{cosig.key_id:08x}" == vector["key_id_hex"]
    assert cosig.note_signature().line() == vector["line"] + "\n"
    if vector["message"] is not None:  # the spec's example message for this timestamp
        body = vector["message"].split("\n", 2)[2].encode()
        assert note.cosignature_message(body, cosig.timestamp) == vector["message"].encode()


@pytest.mark.parametrize("vector", OUT["witness_requests"], ids=lambda v: str(v["old_size"]))
def test_the_published_add_checkpoint_request_parses_and_encodes_back(vector: dict[str, Any]) -> None:
    body = vector["body"].encode("utf-8")
    request = note.parse_add_checkpoint(body)
    assert request.old_size == vector["old_size"]
    assert len(request.proof) == vector["proof_lines"]
    assert request.checkpoint.size == vector["size"]
    assert request.encode() == body
    assert note.add_checkpoint_request(request.old_size, request.proof, request.note) == request


@pytest.mark.parametrize("vector", OUT["witness_responses"], ids=lambda v: str(len(v["names"])))
def test_the_published_cosignature_response_parses(vector: dict[str, Any]) -> None:
    lines = note.parse_cosignature_response(vector["body"].encode("utf-8"))
    assert [s.name for s in lines] == vector["names"]
    # The spec's example lines are placeholders (their timestamps are random): syntax only.
    assert "".join(s.line() for s in lines) == vector["body"]


# --- our vectors -------------------------------------------------------------------------------


def _ours() -> tuple[note.SignerKey, list[note.SignerKey]]:
    return note.parse_signer_key(OURS["log_skey"]), [note.parse_signer_key(w["skey"]) for w in OURS["witnesses"]]


def test_the_generator_reproduces_note_json() -> None:
    gen = _generator()
    assert gen.document(gen.build()) == (VECTORS / "note.json").read_text(encoding="utf-8"), "rerun generate_note.py"


def test_our_checkpoint_root_is_the_rfc6962_root_of_the_vector_ledger() -> None:
    chain = json.loads((VECTORS / "vectors.json").read_text(encoding="utf-8"))
    leaves = [hashlib.sha256(b"\x00" + bytes.fromhex(r["record_hex"])).digest() for r in chain["records"]]
    # Six leaves: ((0 1) (2 3)) (4 5), by hand.
    node = [hashlib.sha256(b"\x01" + leaves[i] + leaves[i + 1]).digest() for i in (0, 2, 4)]
    left = hashlib.sha256(b"\x01" + node[0] + node[1]).digest()
    assert hashlib.sha256(b"\x01" + left + node[2]).hexdigest() == OURS["root_hex"]
    assert (
        OURS["body"]
        == f"{OURS['origin']}\n{OURS['size']}\n{base64.b64encode(bytes.fromhex(OURS['root_hex'])).decode()}\n"
    )


def test_our_cosigned_checkpoint_verifies_with_a_quorum_of_two() -> None:
    log, witnesses = _ours()
    checked = note.verify_checkpoint(OURS["cosigned"].encode(), log.verifier(), [w.verifier() for w in witnesses], 2)
    assert checked.witnesses == tuple(w.name for w in witnesses)
    assert [c.timestamp for c in checked.cosignatures] == [w["timestamp"] for w in OURS["witnesses"]]
    assert checked.note.encode() == OURS["cosigned"].encode()
    for w, vector in zip(witnesses, OURS["witnesses"], strict=True):
        cosig = note.cosign(OURS["body"], w, vector["timestamp"])
        assert cosig.note_signature().line() == vector["line"]
        assert w.verifier().verify_raw(bytes.fromhex(vector["message_hex"]), cosig.signature)


def test_the_quorum_names_the_witnesses_missing() -> None:
    log, witnesses = _ours()
    signed = OURS["signed"].encode()
    one = note.parse_note(signed).with_signatures(note.cosign(OURS["body"], witnesses[0], 7).note_signature())
    keys = [w.verifier() for w in witnesses]
    assert note.verify_checkpoint(one.encode(), log.verifier(), keys, 1).witnesses == (witnesses[0].name,)
    with pytest.raises(errors.QuorumError, match=f"1 of the 2 .*none from {witnesses[1].name}"):
        note.verify_checkpoint(one.encode(), log.verifier(), keys, 2)
    with pytest.raises(errors.QuorumError, match="can never be met"):
        note.verify_checkpoint(signed, log.verifier(), keys, 3)
    # Two lines by one witness count once.
    twice = one.with_signatures(note.cosign(OURS["body"], witnesses[0], 8).note_signature())
    assert len(twice.signatures) == 2  # replaced: same name and key id
    doubled = note.Note(one.text, (*one.signatures, note.cosign(OURS["body"], witnesses[0], 9).note_signature()))
    with pytest.raises(errors.QuorumError):
        note.verify_checkpoint(doubled.encode(), log.verifier(), keys, 2)


def test_one_witness_key_under_two_names_counts_once() -> None:
    # The name is not signed (13.4): replica-1's 72 bytes relabelled as replica-9's verify with
    # replica-1's key trusted under that second name. Two names, one key: one witness (13.5).
    log, witnesses = _ours()
    first = witnesses[0]
    alias = note.SignerKey("local/witness/alias", note.ALG_COSIGNATURE_V1, first.seed)
    line = note.cosign(OURS["body"], first, 7).note_signature()
    relabelled = note.NoteSignature(alias.name, alias.verifier().key_id, line.signature)
    doubled = note.Note(OURS["body"], (*note.parse_note(OURS["signed"].encode()).signatures, line, relabelled))
    keys = [first.verifier(), alias.verifier()]
    with pytest.raises(errors.QuorumError, match="can never be met by 1 distinct witnesses"):
        note.verify_checkpoint(doubled.encode(), log.verifier(), keys, 2)
    both = [*keys, witnesses[1].verifier()]
    with pytest.raises(errors.QuorumError, match=f"1 of the 2 .*none from {witnesses[1].name}"):
        note.verify_checkpoint(doubled.encode(), log.verifier(), both, 2)
    assert note.verify_checkpoint(doubled.encode(), log.verifier(), both, 1).witnesses == (first.name,)
    groups = note.witness_groups(both)
    assert groups[first.name] == groups[alias.name] == min(first.name, alias.name)
    assert groups[witnesses[1].name] == witnesses[1].name


def test_a_checkpoint_without_the_log_signature_is_refused() -> None:
    log, witnesses = _ours()
    cosigned = note.parse_note(OURS["cosigned"].encode())
    only_witnesses = note.Note(cosigned.text, cosigned.signatures[1:])
    keys = [w.verifier() for w in witnesses]
    with pytest.raises(errors.UnverifiedNoteError, match=f"not signed by the log key {log.name}"):
        note.verify_checkpoint(only_witnesses.encode(), log.verifier(), keys, 0)
    with pytest.raises(errors.UnverifiedNoteError):
        note.verify_checkpoint(OURS["cosigned"].encode(), note.generate_signer_key(log.name).verifier(), [], 0)


def test_a_bad_cosignature_by_a_trusted_witness_refuses_the_note() -> None:
    log, witnesses = _ours()
    cosigned = note.parse_note(OURS["cosigned"].encode())
    good = note.Cosignature.from_note_signature(cosigned.signatures[1])
    later = note.Cosignature(good.name, good.key_id, good.timestamp + 1, good.signature)  # a replayed signature
    bad = cosigned.with_signatures(later.note_signature())
    with pytest.raises(
        errors.CosignatureError, match=f"{witnesses[0].name}\\+{witnesses[0].key_id:08x} does not verify"
    ):
        note.verify_checkpoint(bad.encode(), log.verifier(), [w.verifier() for w in witnesses], 0)
    # Without that witness trusted, the same line is ignored.
    assert note.verify_checkpoint(bad.encode(), log.verifier(), [witnesses[1].verifier()], 1).witnesses == (
        witnesses[1].name,
    )


def test_signatures_that_share_only_a_name_or_only_a_key_id_are_ignored() -> None:
    log, _ = _ours()
    text = OURS["body"]
    impostor = note.SignerKey(log.name, note.ALG_ED25519, hashlib.sha256(b"impostor").digest())
    same_id = note.NoteSignature("someone.else", log.key_id, note.sign(text, impostor).signature)
    signed = note.parse_note(OURS["signed"].encode()).with_signatures(note.sign(text, impostor), same_id)
    checked = note.verify_checkpoint(signed.encode(), log.verifier())
    assert checked.log_signature == note.parse_note(OURS["signed"].encode()).signatures[0]


def test_another_logs_checkpoint_is_refused() -> None:
    log, _ = _ours()
    with pytest.raises(errors.WrongOriginError, match="not 'local/other'"):
        note.verify_checkpoint(OURS["signed"].encode(), log.verifier(), origin="local/other")
    other = note.generate_signer_key("local/other")
    body = note.Checkpoint("local/election-2026", 1, bytes(32)).body()
    with pytest.raises(errors.WrongOriginError):
        note.verify_checkpoint(note.Note(body, (note.sign(body, other),)).encode(), other.verifier())


def test_a_signed_note_whose_body_is_not_a_checkpoint_is_refused() -> None:
    log, _ = _ours()
    text = "not a checkpoint\n"
    with pytest.raises(errors.CheckpointError):
        note.verify_checkpoint(note.Note(text, (note.sign(text, log),)).encode(), log.verifier())


def test_keys_of_the_wrong_type_are_refused() -> None:
    log, witnesses = _ours()
    with pytest.raises(errors.NoteKeyError, match="log key"):
        note.verify_checkpoint(OURS["signed"].encode(), witnesses[0].verifier())
    with pytest.raises(errors.NoteKeyError, match="not a cosignature key"):
        note.verify_checkpoint(OURS["signed"].encode(), log.verifier(), [log.verifier()])
    with pytest.raises(errors.NoteKeyError, match="not a cosignature key"):
        note.cosign(OURS["body"], log, 1)
    with pytest.raises(errors.NoteKeyError, match="not a note signing key"):
        note.sign(OURS["body"], witnesses[0])
    as_note_key = note.SignerKey(witnesses[0].name, note.ALG_ED25519, witnesses[0].seed)
    assert as_note_key.verifier().as_cosigner() == witnesses[0].verifier()
    assert as_note_key.key_id != witnesses[0].key_id  # the type byte is part of the key id


def test_a_trusted_key_listed_twice_is_one_key() -> None:
    log, _ = _ours()
    twin = note.VerifierKey(log.name, note.ALG_ED25519, log.public_key)
    assert len(note.open_note(OURS["signed"].encode(), [log.verifier(), twin]).verified) == 1


def test_the_secret_seed_is_not_in_repr() -> None:
    log, _ = _ours()
    assert log.seed.hex() not in repr(log)
    assert base64.b64encode(log.seed).decode() not in repr(log)


def test_key_names_follow_go_rules() -> None:
    for bad in ["", "a b", "a+b", "a\tb", "a\u00a0b", "a\u2003b", "a\u3000b", "x" * 256, "a\x01b"]:
        assert not note.is_valid_name(bad), repr(bad)
    for good in ["a", "example.com/log", "é/ü", "x" * 255, "transparency.dev/DEV:witness-little-garden"]:
        assert note.is_valid_name(good), good
    with pytest.raises(errors.NoteKeyError):
        note.generate_signer_key("a b")


def test_origin_for_a_ledger() -> None:
    assert note.origin_for("local", "election-2026") == "local/election-2026"
    with pytest.raises(errors.CheckpointError):
        note.origin_for("local", "a b")


# --- limits and the witness protocol -----------------------------------------------------------


def test_note_limits() -> None:
    log, _ = _ours()
    sig = note.parse_note(OURS["signed"].encode()).signatures[0]
    with pytest.raises(errors.NoteError, match="1 to 100 signatures, not 101"):
        note.Note(OURS["body"], (sig,) * 101)
    with pytest.raises(errors.NoteError, match="1 to 100"):
        note.Note(OURS["body"], ())
    with pytest.raises(errors.NoteError, match="at most 65536 bytes"):
        note.parse_note(b"x" * (note.MAX_NOTE_BYTES + 1))
    big = "x\n" * (note.MAX_NOTE_BYTES // 2)
    with pytest.raises(errors.NoteError, match="at most 65536 bytes"):
        note.Note(big, (sig,)).encode()
    with pytest.raises(errors.NoteError, match="newline"):
        note.sign("no newline", log)
    with pytest.raises(errors.NoteError, match="control character"):
        note.sign("a\rb\n", log)
    with pytest.raises(errors.NoteError, match="canonical base64"):
        note.parse_signature_line("— a AAAAAB==")  # the last character's unused bits are not zero


def test_checkpoint_fields_are_bounded() -> None:
    root = base64.b64encode(bytes(32)).decode()
    assert note.parse_checkpoint(f"o\n{2**64 - 1}\n{root}\n").size == 2**64 - 1
    for body in [f"o\n{2**64}\n{root}\n", f"o\n01\n{root}\n", f"o\n+1\n{root}\n", f"o\n1 \n{root}\n",
                 f"o\n１\n{root}\n", f"o\n1\n{root}\n\n", f"o\n1\n {root}\n", f"o\n1\n{root[:-1]}\n"]:  # fmt: skip
        with pytest.raises(errors.CheckpointError):
            note.parse_checkpoint(body)
    assert note.parse_checkpoint(f"o\n0\n{root}\next 1\next 2\n").extensions == ("ext 1", "ext 2")


def _request(old: str, proof: list[str], note_text: str) -> bytes:
    return ("".join(f"{x}\n" for x in [old, *proof]) + "\n" + note_text).encode("utf-8")


def test_add_checkpoint_requests_are_checked_before_any_work() -> None:
    signed = OURS["signed"]
    h = base64.b64encode(bytes(32)).decode()
    cases: list[tuple[bytes, str, int]] = [
        (b"x" * (note.MAX_ADD_CHECKPOINT_BYTES + 1), "at most", 400),
        (_request("old 1", [h] * 64, signed), "at most 63", 400),
        (_request("old 01", [h], signed), "leading zeros", 400),
        (_request("new 1", [h], signed), "starts with 'old <size>'", 400),
        (_request("old 1", ["AAAA"], signed), "32 bytes", 400),
        (_request("old 7", [h], signed), "over the checkpoint's size 6", 400),
        (_request("old 0", [h], signed), "no consistency proof", 422),
        (_request("old 1", [h], "not a note"), "add-checkpoint: ", 400),
        (b"old 1\n" + h.encode() + b"\n", "blank line", 400),
    ]
    for body, message, status in cases:
        with pytest.raises(errors.WitnessRequestError, match=message) as caught:
            note.parse_add_checkpoint(body)
        assert caught.value.status == status, message
    log, _ = _ours()
    empty = note.Checkpoint(log.name, 0, bytes(32)).body()
    with pytest.raises(errors.WitnessRequestError, match="SHA-256 of nothing") as caught:
        note.parse_add_checkpoint(_request("old 0", [], note.Note(empty, (note.sign(empty, log),)).encode().decode()))
    assert caught.value.status == 422
    assert note.parse_add_checkpoint(OURS["add_checkpoint"].encode()).note == OURS["cosigned"].encode()


def test_size_responses() -> None:
    assert note.parse_size_response(note.encode_size_response(20852163)) == 20852163
    for body in [b"", b"12", b"012\n", b"-1\n", b"1 \n", str(2**64).encode() + b"\n"]:
        with pytest.raises(errors.WitnessRequestError):
            note.parse_size_response(body)
    with pytest.raises(errors.WitnessRequestError):
        note.parse_cosignature_response(b"")
    with pytest.raises(errors.WitnessRequestError):
        note.parse_cosignature_response(b"not a line\n")
    with pytest.raises(errors.WitnessRequestError):
        note.encode_cosignature_response([])


EDGES = OURS["edges"]


@pytest.mark.parametrize("vkey", EDGES["small_order_vkeys"])
def test_keys_of_small_order_are_refused(vkey: str) -> None:
    """13.1: anyone can make signatures that such a key verifies; libsodium refuses them too."""
    public = base64.b64decode(vkey.split("+", 2)[2])[1:]
    assert note.is_small_order(public)
    with pytest.raises(errors.NoteKeyError, match="small order"):
        note.parse_verifier_key(vkey)
    with pytest.raises(errors.NoteKeyError, match="small order"):
        note.VerifierKey("small", note.ALG_COSIGNATURE_V1, public)


@pytest.mark.parametrize("vector", EDGES["bad_signatures"], ids=lambda v: v["why"][:30])
def test_signatures_only_a_lenient_verifier_accepts_are_refused(vector: dict[str, Any]) -> None:
    """13.2: an R of small order (which Go's verifier accepts) and an R with a part of order 8
    (which a cofactored verifier, pycryptodome's, accepts) refuse the note."""
    with pytest.raises(errors.NoteError) as e:
        note.open_note(vector["note"].encode("utf-8"), _keys([vector["vkey"]]))
    assert e.value.code == vector["code"]


def test_a_signer_keys_public_key_and_key_id_are_derived_once_and_right() -> None:
    log, _ = _ours()
    assert log.public_key is log.public_key  # cached, not derived per signature
    assert log.key_id == note.key_id(log.name, log.alg, log.public_key) == log.verifier().key_id
    assert log.verifier().encode() == OURS["log_vkey"]


# --- properties --------------------------------------------------------------------------------

_COSIGNED = OURS["cosigned"].encode()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(_COSIGNED) - 1), st.integers(1, 255))
def test_any_flipped_byte_fails_verification(index: int, mask: int) -> None:
    log, witnesses = _ours()
    data = bytearray(_COSIGNED)
    data[index] ^= mask
    with pytest.raises(errors.NoteError):
        note.verify_checkpoint(bytes(data), log.verifier(), [w.verifier() for w in witnesses], 2)


_NAMES = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="+\x85"),
    min_size=1,
    max_size=20,
)
_LINE = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30), max_size=6),
    st.lists(st.tuples(_NAMES, st.integers(0, 2**32 - 1), st.binary(min_size=1, max_size=80)), min_size=1, max_size=5),
)
def test_parse_of_format_is_identity_for_notes(lines: list[str], sigs: list[tuple[str, int, bytes]]) -> None:
    value = note.Note("".join(f"{x}\n" for x in lines) or "\n", tuple(note.NoteSignature(*s) for s in sigs))
    assert note.parse_note(value.encode()) == value


@settings(max_examples=100, deadline=None)
@given(_LINE, st.integers(0, 2**64 - 1), st.binary(min_size=32, max_size=32), st.lists(_LINE, max_size=3))
def test_parse_of_format_is_identity_for_checkpoints(origin: str, size: int, root: bytes, ext: list[str]) -> None:
    value = note.Checkpoint(origin, size, root, tuple(ext))
    assert note.parse_checkpoint(value.body()) == value


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(0, 2**63 - 1), st.integers(1, 2**40))
def test_a_cosignature_verifies_only_over_its_own_checkpoint(seed: bytes, timestamp: int, size: int) -> None:
    witness = note.SignerKey("w.example/1", note.ALG_COSIGNATURE_V1, seed)
    body = note.Checkpoint("o.example/log", size, hashlib.sha256(seed).digest()).body()
    line = note.cosign(body, witness, timestamp).note_signature()
    assert note.verify_signature(body, line, witness.verifier())
    assert not note.verify_signature(body.replace(f"\n{size}\n", f"\n{size + 1}\n"), line, witness.verifier())
    assert note.parse_signature_line(line.line()[:-1]) == line
