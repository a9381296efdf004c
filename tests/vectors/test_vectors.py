"""Our code must reproduce the committed protocol test vectors byte for byte."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from vledger.config.settings import Limits
from vledger.node import sealed as sealed_ids
from vledger.node import tree
from vledger.node.errors import RetiredKeyError, SealError, VledgerError
from vledger.node.key_rotation import chain_of
from vledger.node.ledger import LedgerRules
from vledger.node.note import parse_verifier_key
from vledger.node.receipt import ReceiptKeys, keys_from_genesis, verify_receipt
from vledger.node.record import decode_record
from vledger.node.verify import ChainVerifier
from vledger.node.work import work_digest
from vledger.tools.verification import verify_file

HERE = Path(__file__).parent


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vector_generator", HERE / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_reproduces_committed_files() -> None:
    gen = _generator()
    for name, text in gen.documents(gen.build()).items():
        assert (HERE / name).read_text(encoding="utf-8") == text, f"{name} differs: rerun generate.py and review"


def test_committed_vectors_decode_and_verify() -> None:
    vectors = json.loads((HERE / "vectors.json").read_text(encoding="utf-8"))
    verifier = ChainVerifier(vectors["ledger"], Limits())
    for v in vectors["records"]:
        record = decode_record(bytes.fromhex(v["record_hex"]), Limits())
        verifier.feed(record)
        assert record.height == v["height"]
        assert record.content_bytes.hex() == v["content_hex"]
        assert record.checksum.hex() == v["checksum_hex"]
        assert work_digest(record.checksum, record.nonce).hex() == v["work_hex"]
        assert record.hash.hex() == v["link_hex"]
        assert record.prev.hex() == v["prev_hex"]
    assert verifier.next_height == len(vectors["records"]) == 6


def test_vectors_cover_non_ascii_and_every_integer_width() -> None:
    content = bytes.fromhex(
        json.loads((HERE / "vectors.json").read_text(encoding="utf-8"))["records"][3]["content_hex"]
    )
    assert "é".encode() in content
    for marker in (b"\xcc", b"\xcd", b"\xce", b"\xcf", b"\xd0", b"\xd3", b"\xc4"):  # uint8..64, int8/64, bin8
        assert marker in content


INVALID = json.loads((HERE / "invalid.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", INVALID, ids=[c["name"] for c in INVALID])
def test_our_verifier_reports_each_invalid_case_as_the_protocol_says(case: dict[str, Any], tmp_path: Path) -> None:
    export = tmp_path / "case.jsonl"
    export.write_text(case["export"], encoding="utf-8")
    result = verify_file(export, None, Limits())
    (report,) = result.reports
    assert result.error is None
    assert report.ledger == case["expect"]["ledger"]
    assert report.error is not None, case["description"]
    assert (report.error.code, report.error_height) == (case["expect"]["code"], case["expect"]["height"]), str(
        report.error
    )


def _mth(leaves: list[bytes]) -> bytes:
    """PROTOCOL 12.2 written out with hashlib alone: the reference the vector is checked against."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def test_tree_vector_is_the_tree_of_the_ledger_and_its_proofs_verify() -> None:
    vector = json.loads((HERE / "tree.json").read_text(encoding="utf-8"))
    records = [base64.b64decode(json.loads(line)["record"]) for line in (HERE / "ledger.jsonl").open(encoding="utf-8")]
    leaves = [hashlib.sha256(b"\x00" + data).digest() for data in records]
    assert [bytes.fromhex(x) for x in vector["leaf_hex"]] == leaves
    roots = {int(n): bytes.fromhex(r) for n, r in vector["root_hex_by_size"].items()}
    assert roots == {n: _mth(leaves[:n]) for n in range(1, len(leaves) + 1)}
    inclusion = vector["inclusion"]
    tree.verify_inclusion(
        leaves[inclusion["index"]],
        inclusion["index"],
        inclusion["size"],
        [bytes.fromhex(x) for x in inclusion["proof_hex"]],
        roots[inclusion["size"]],
    )
    consistency = vector["consistency"]
    old, new = consistency["old_size"], consistency["new_size"]
    tree.verify_consistency(old, new, roots[old], roots[new], [bytes.fromhex(x) for x in consistency["proof_hex"]])
    assert tree.parse_tile_path(vector["tile"]["path"]) == (0, 0, len(leaves))
    assert bytes.fromhex(vector["tile"]["hashes_hex"]) == b"".join(leaves)


def test_the_receipt_vector_verifies_and_each_bad_one_fails_with_its_code() -> None:
    vector = json.loads((HERE / "receipt.json").read_text(encoding="utf-8"))
    keys = ReceiptKeys(
        parse_verifier_key(vector["log_vkey"]),
        tuple(parse_verifier_key(v) for v in vector["witness_vkeys"]),
        vector["quorum"],
    )
    verified = verify_receipt(vector["receipt"].encode("utf-8"), keys)
    assert verified.record.link.hex() == vector["hash_hex"] and verified.receipt.index == vector["index"]
    for case in vector["bad"]:
        with pytest.raises(VledgerError) as e:
            verify_receipt(case["receipt"].encode("utf-8"), keys)
        assert e.value.code == case["code"], case["why"]


def test_export_checkpoint_vectors_give_their_codes(tmp_path: Path) -> None:
    vector = json.loads((HERE / "export_checkpoints.json").read_text(encoding="utf-8"))
    for number, case in enumerate(vector["cases"]):
        path = tmp_path / f"{number}.jsonl"
        path.write_text(case["export"], encoding="utf-8")
        report = verify_file(path, None, Limits()).reports[0]
        assert (report.error.code if report.error else None, report.error_height) == (
            case["code"],
            case["height"],
        ), case["why"]
        assert report.records == vector["records"] or case["code"] is not None


def test_rotation_vector_follows_the_key_chain() -> None:
    """rotation.json (PROTOCOL 13.8): our code verifies its receipt from the genesis alone,
    refuses each bad one with its code, and derives the key in force it states at each size."""
    vector = json.loads((HERE / "rotation.json").read_text(encoding="utf-8"))
    records = [decode_record(base64.b64decode(r), Limits()) for r in vector["records_b64"]]
    keys = keys_from_genesis(records[0].encode(), vector["ledger"])
    chain = chain_of(vector["ledger"], LedgerRules.from_genesis(records[0].content, Limits()), records[1:])
    assert chain is not None
    vkeys = [k["vkey"] for k in vector["keys"]]
    for size, index in vector["key_in_force"]:
        assert chain.key_for_size(size).encode() == vkeys[index]
    assert verify_receipt(vector["receipt"].encode("utf-8"), keys).checkpoint.checkpoint.size == len(records)
    with pytest.raises(RetiredKeyError):
        chain.check(vector["checkpoints"]["by_key_0"].encode("utf-8"))
    for case in vector["bad"]:
        with pytest.raises(VledgerError) as e:
            verify_receipt(case["receipt"].encode("utf-8"), keys)
        assert e.value.code == case["code"], case["why"]


def test_rotation_exports_give_their_codes(tmp_path: Path) -> None:
    """rotation.json's exports: each checkpoint is checked with the key in force at its size."""
    vector = json.loads((HERE / "rotation.json").read_text(encoding="utf-8"))
    for number, case in enumerate(vector["exports"]):
        path = tmp_path / f"{number}.jsonl"
        path.write_text(case["export"], encoding="utf-8")
        report = verify_file(path, None, Limits()).reports[0]
        assert (report.error.code if report.error else None, report.error_height) == (
            case["code"],
            case["height"],
        ), case["why"]


def test_node_keys_vector_follows_a_rotated_witness() -> None:
    """node_keys.json (PROTOCOL 14.3 step 6, 16.6): our code verifies its receipt, cosigned by a
    rotated witness key, with the admin key, and refuses each bad case with its code."""
    vector = json.loads((HERE / "node_keys.json").read_text(encoding="utf-8"))
    genesis = base64.b64decode(vector["genesis_b64"])
    witnesses = [parse_verifier_key(w) for w in vector["witnesses"]]
    keys = keys_from_genesis(genesis, vector["ledger"], witnesses, vector["quorum"])
    keys = dataclasses.replace(keys, admin_key=parse_verifier_key(vector["admin_key"]))
    verified = verify_receipt(vector["receipt"].encode("utf-8"), keys)
    assert sorted(verified.checkpoint.witnesses) == sorted(w.name for w in witnesses)
    for case in vector["cases"]:
        if case["code"] is None:
            assert verify_receipt(case["receipt"].encode("utf-8"), keys), case["why"]
            continue
        with pytest.raises(VledgerError) as e:
            verify_receipt(case["receipt"].encode("utf-8"), keys)
        assert e.value.code == case["code"], case["why"]


def _open_from_the_spec(key: bytes, text: str, context: str) -> str | int:
    """PROTOCOL 8 written out with AES-SIV and base64 alone (not vledger.node.sealed): the
    information, or the number of the step that refuses the id (1 also for a wrong spelling)."""
    from Crypto.Cipher import AES

    prefix, body = text[:3], text[3:]
    if prefix not in ("S1-", "S2-") or not re.fullmatch(r"[a-z2-7]*", body):
        return 1
    try:
        sealed = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except ValueError:
        return 1
    if base64.b32encode(sealed).decode().rstrip("=").lower() != body or len(sealed) < 16:
        return 1
    buckets = (64, 128, 256, 512, 1024)
    if prefix == "S2-" and len(sealed) - 16 not in buckets:
        return 1
    cipher = AES.new(key, AES.MODE_SIV)
    cipher.update(context.encode())
    try:
        plaintext = cipher.decrypt_and_verify(sealed[16:], sealed[:16])
    except ValueError:
        return 2
    info = plaintext
    if prefix == "S2-":
        stripped = plaintext.rstrip(b"\x00")
        if not stripped.endswith(b"\x80"):
            return 3
        info = stripped[:-1]
        if len(plaintext) != min(b for b in buckets if b > len(info)):
            return 3
    try:
        return info.decode("utf-8")
    except UnicodeDecodeError:
        return 4


def test_sealed_vector_opens_from_the_spec_alone_and_with_our_code() -> None:
    """sealed.json (PROTOCOL 8): each id opens to its info and each refused one fails at its step,
    by the specification's steps written out here and by node/sealed.py; the S2 ids are what we seal."""
    vector = json.loads((HERE / "sealed.json").read_text(encoding="utf-8"))
    key, context = bytes.fromhex(vector["key_hex"]), vector["context"]
    assert {v["version"] for v in vector["ids"]} == {1, 2}
    for v in vector["ids"]:
        sealed = bytes.fromhex(v["sealed_hex"])
        prefix = f"S{v['version']}-"
        assert v["id"] == prefix + base64.b32encode(sealed).decode().rstrip("=").lower()
        assert _open_from_the_spec(key, v["id"], context) == v["info"]
        assert sealed_ids.is_sealed(v["id"]) and sealed_ids.unseal(key, v["id"], context) == v["info"]
        if v["version"] == 2:
            assert len(bytes.fromhex(v["padded_hex"])) + 16 == len(sealed) and len(sealed) - 16 in vector["buckets"]
            assert sealed_ids.seal(key, v["info"], context) == v["id"]
    lengths = {len(v["id"]) for v in vector["ids"] if v["version"] == 2 and len(v["info"].encode()) < 64}
    assert lengths == {131}
    assert {case["step"] for case in vector["refused"]} == {1, 2, 3, 4}
    for case in vector["refused"]:
        assert _open_from_the_spec(key, case["id"], case["context"]) == case["step"], case["why"]
        assert sealed_ids.is_sealed(case["id"]) == (case["step"] != 1), case["why"]
        with pytest.raises(SealError):
            sealed_ids.unseal(key, case["id"], case["context"])
