"""Tests of outsider_verify.py, the verifier written from docs/PROTOCOL.md alone.

Only the specification and the vectors of this directory are used. Hashes are recomputed
here with hashlib directly, records are rebuilt with the verifier's own canonical encoder
(section 1), and msgpack is used as an independent decoder / encoder for cross-checks.
"""

import base64
import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

HERE = Path(__file__).resolve().parent


def _load_module():
    spec = importlib.util.spec_from_file_location("outsider_verify", HERE / "outsider_verify.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ov = _load_module()

LEDGER = "election-2026"
DIFFICULTY = 16
COUNT = 6  # records in the committed ledger
EXPORT_TEXT = (HERE / "ledger.jsonl").read_text(encoding="utf-8")
LINES = EXPORT_TEXT.splitlines()
VECTORS = json.loads((HERE / "vectors.json").read_text(encoding="utf-8"))
INVALID = json.loads((HERE / "invalid.json").read_text(encoding="utf-8"))
HEAD = json.loads(LINES[-1])["hash"]

ERROR_CODES = {
    "bad_encoding",
    "bad_line",
    "non_canonical",
    "bad_field",
    "too_large",
    "wrong_ledger",
    "height_gap",
    "bad_genesis",
    "bad_checksum",
    "unknown_kind",
    "insufficient_work",
    "bad_link",
}


# --------------------------------------------------------------------------------------
# Independent helpers (section 2 formulas written again, with hashlib only)
# --------------------------------------------------------------------------------------


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def work(checksum: bytes, nonce: int) -> bytes:
    return sha(checksum + u64(nonce))


def meets(digest: bytes, difficulty: int) -> bool:
    return int.from_bytes(digest, "big") < 1 << (256 - difficulty)


def link(prev: bytes, checksum: bytes, height: int, nonce: int, accepted: int, origin: str) -> bytes:
    return sha(prev + checksum + u64(height) + u64(nonce) + u64(accepted) + origin.encode("utf-8"))


def mine(checksum: bytes, difficulty: int) -> int:
    nonce = 0
    while not meets(work(checksum, nonce), difficulty):
        nonce += 1
    return nonce


def line_obj(i: int) -> dict:
    return json.loads(LINES[i])


def record_bytes(i: int) -> bytes:
    return base64.b64decode(line_obj(i)["record"])


def record_map(i: int) -> dict:
    return msgpack.unpackb(record_bytes(i), raw=False)


def content_map(i: int) -> dict:
    return msgpack.unpackb(record_map(i)["content"], raw=False)


def make_line(ledger: str, height: int, hash_hex: str, data: bytes) -> str:
    obj = {"ledger": ledger, "height": height, "hash": hash_hex, "record": base64.b64encode(data).decode("ascii")}
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def with_record(lines: list, i: int, data: bytes, hash_hex: "str | None" = None) -> list:
    """Replace the record of line i, keeping the line's ledger, height and (unless given) hash."""
    obj = json.loads(lines[i])
    out = list(lines)
    out[i] = make_line(obj["ledger"], obj["height"], hash_hex or obj["hash"], data)
    return out


def place(
    content: bytes,
    prev: bytes,
    height: int,
    difficulty: int,
    accepted: int = 1790000009000,
    origin: str = "ingest-1",
    nonce: "int | None" = None,
    overrides: "dict | None" = None,
) -> tuple:
    """Build record bytes around raw content bytes (which may be non-canonical on purpose)."""
    checksum = sha(content)
    if nonce is None:
        nonce = mine(checksum, difficulty)
    own = link(prev, checksum, height, nonce, accepted, origin)
    record = {
        "accepted": accepted,
        "checksum": checksum,
        "content": content,
        "height": height,
        "link": own,
        "nonce": nonce,
        "origin": origin,
        "prev": prev,
    }
    record.update(overrides or {})
    return ov.encode_canonical(record), own


def results(lines) -> list:
    return ov.verify_lines(lines)


def only(lines) -> dict:
    res = results(lines)
    assert len(res) == 1, res
    return res[0]


def expect(lines, code: str, height: int, ledger: str = LEDGER) -> dict:
    res = {r["ledger"]: r for r in results(lines)}
    got = res[ledger]
    assert got["ok"] is False, got
    assert (got["error"]["code"], got["error"]["height"]) == (code, height), got
    return got


def replace_content(i: int, content: bytes, nonce: "int | None" = None, overrides: "dict | None" = None) -> tuple:
    """Record i of the committed ledger with new content, placed again (same placement)."""
    rec = record_map(i)
    return place(content, rec["prev"], i, DIFFICULTY, rec["accepted"], rec["origin"], nonce, overrides)


def _encode_pairs(pairs: list) -> bytes:
    """A map in the given key order (possibly unsorted or repeated), items canonical."""
    out = bytes([0x80 | len(pairs)]) if len(pairs) < 16 else b"\xde" + len(pairs).to_bytes(2, "big")
    for key, value in pairs:
        out += ov.encode_canonical(key) + ov.encode_canonical(value)
    return out


# --------------------------------------------------------------------------------------
# The committed ledger and the vectors
# --------------------------------------------------------------------------------------


def test_committed_ledger_verifies():
    res = only(LINES)
    assert res == {"ledger": LEDGER, "records": COUNT, "head": HEAD, "checkpoints": 0, "ok": True, "error": None}
    assert len(VECTORS["records"]) == COUNT
    assert VECTORS["records"][-1]["link_hex"] == HEAD
    # Also through a file object (lines keep their "\n"), the whole text and its bytes.
    with open(HERE / "ledger.jsonl", encoding="utf-8") as handle:
        assert ov.verify_lines(handle) == [res]
    with open(HERE / "ledger.jsonl", "rb") as handle:
        assert ov.verify_lines(handle) == [res]
    assert ov.verify_lines(EXPORT_TEXT) == [res]
    assert ov.verify_lines(EXPORT_TEXT.encode("utf-8")) == [res]
    # Section 5: the last line's "\n" may be missing.
    assert EXPORT_TEXT.endswith("\n")
    assert ov.verify_lines(EXPORT_TEXT[:-1]) == [res]


def test_export_lines_are_in_the_documented_form():
    for height, text in enumerate(LINES):
        obj = json.loads(text)
        assert list(obj) == ["ledger", "height", "hash", "record"]
        assert json.dumps(obj, separators=(",", ":"), ensure_ascii=False) == text
        assert (obj["ledger"], obj["height"]) == (LEDGER, height)
        assert len(obj["hash"]) == 64 and obj["hash"] == obj["hash"].lower()
        assert base64.b64encode(base64.b64decode(obj["record"], validate=True)).decode() == obj["record"]
    assert (HERE / "ledger.jsonl").read_bytes().endswith(b"\n")


def test_vectors_header_matches_genesis():
    assert VECTORS["ledger"] == LEDGER
    assert VECTORS["difficulty"] == DIFFICULTY == content_map(0)["payload"]["difficulty"]
    assert [r["height"] for r in VECTORS["records"]] == list(range(len(LINES))) == list(range(COUNT))


@pytest.mark.parametrize("vec", VECTORS["records"], ids=lambda v: f"h{v['height']}")
def test_vector_record(vec):
    height = vec["height"]
    content = bytes.fromhex(vec["content_hex"])
    prev = bytes.fromhex(vec["prev_hex"])

    # Content: canonical, re-encoded identically by our encoder and by msgpack.packb.
    decoded = ov.decode_canonical(content)
    assert ov.encode_canonical(decoded) == content
    assert msgpack.packb(msgpack.unpackb(content, raw=False), use_bin_type=True) == content
    assert list(decoded) == sorted(decoded) == list(ov.CONTENT_KEYS)
    assert decoded["ledger"] == LEDGER and decoded["v"] == 1
    assert len(content) <= 65_536

    checksum = sha(content)
    assert checksum.hex() == vec["checksum_hex"]
    digest = work(checksum, vec["nonce"])
    assert digest.hex() == vec["work_hex"]
    assert meets(digest, DIFFICULTY)
    # "Our client takes the smallest such nonce from 0 upward": true of every vector.
    assert mine(checksum, DIFFICULTY) == vec["nonce"]

    own = link(prev, checksum, height, vec["nonce"], vec["accepted"], vec["origin"])
    assert own.hex() == vec["link_hex"]
    if height == 0:
        assert prev == bytes(32)
    else:
        assert vec["prev_hex"] == VECTORS["records"][height - 1]["link_hex"]

    data, own2 = place(content, prev, height, DIFFICULTY, vec["accepted"], vec["origin"], nonce=vec["nonce"])
    assert own2 == own
    assert data.hex() == vec["record_hex"]
    assert len(data) <= 81_920
    assert record_bytes(height) == data
    assert line_obj(height)["hash"] == vec["link_hex"]
    # The module's own helpers agree with the formulas above.
    assert ov.checksum_of(content) == checksum
    assert ov.work_of(checksum, vec["nonce"]) == digest
    assert ov.link_of(prev, checksum, height, vec["nonce"], vec["accepted"], vec["origin"]) == own
    record, parsed = ov.parse_record(data)
    assert parsed == decoded and record["link"] == own


def _nested(levels: int, leaf: object) -> object:
    for _ in range(levels):
        leaf = [leaf]
    return leaf


def test_record_5_uses_16_bit_forms_and_the_deepest_nesting():
    content = bytes.fromhex(VECTORS["records"][5]["content_hex"])
    payload = content_map(5)["payload"]
    # str16, bin16, array16 and map16 headers are all present and in their shortest form.
    assert b"\xda" + len(payload["str16"].encode()).to_bytes(2, "big") in content
    assert b"\xc5" + len(payload["bin16"]).to_bytes(2, "big") in content
    assert b"\xdc\x00\x10" in content and len(payload["array16"]) == 16
    assert b"\xde\x00\x10" in content and len(payload["map16"]) == 16
    assert len(payload["str16"].encode()) > 255 and len(payload["bin16"]) > 255
    # The content map is at level 0, the payload at 1, "deep" at 2: 14 arrays nested, the
    # innermost (empty) at level 15, the deepest a container may stand.
    assert payload["deep"] == _nested(13, [])
    ov.decode_canonical(content)
    # One value inside the innermost array would stand at level 16.
    assert content.count(b"\x91" * 13 + b"\x90") == 1
    deeper = content.replace(b"\x91" * 13 + b"\x90", b"\x91" * 14 + b"\x90")
    with pytest.raises(ov.VerifyError) as err:
        ov.decode_canonical(deeper)
    assert err.value.code == "non_canonical"
    data, own = replace_content(5, deeper)
    expect(with_record(LINES, 5, data, own.hex()), "non_canonical", 5)


# --------------------------------------------------------------------------------------
# invalid.json: every case names the ledger's first error exactly
# --------------------------------------------------------------------------------------


def test_invalid_cases_are_well_formed():
    names = [case["name"] for case in INVALID]
    assert len(names) == len(set(names)) and names
    for case in INVALID:
        assert set(case) >= {"name", "description", "export", "expect"}
        assert set(case["expect"]) == {"ledger", "code", "height"}
        assert case["expect"]["code"] in ERROR_CODES
        assert case["export"] != EXPORT_TEXT


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c["name"])
def test_invalid_case(case):
    want = case["expect"]
    for given in (case["export"], case["export"].encode("utf-8"), case["export"].split("\n")[:-1]):
        res = {r["ledger"]: r for r in ov.verify_lines(given)}
        got = res[want["ledger"]]
        assert got["ok"] is False, (case["name"], got)
        assert (got["error"]["code"], got["error"]["height"]) == (want["code"], want["height"]), (case["name"], got)
        # Every other ledger of the file is valid.
        assert all(r["ok"] for name, r in res.items() if name != want["ledger"])


# --------------------------------------------------------------------------------------
# Tampering with the committed ledger
# --------------------------------------------------------------------------------------


def test_flip_a_byte_inside_a_content_string():
    data = record_bytes(1)
    assert data.count(b"V-000123") == 1
    tampered = data.replace(b"V-000123", b"V-000124")
    expect(with_record(LINES, 1, tampered), "bad_checksum", 1)


def test_flip_a_byte_inside_the_content_ledger_name():
    data = record_bytes(3)
    start = data.index(b"election-2026")
    tampered = data[:start] + b"election-2027" + data[start + 13 :]
    # The content still decodes, but names another ledger than the line's, the ledger being
    # verified (section 5): step 2, before the checksum.
    expect(with_record(LINES, 3, tampered), "wrong_ledger", 3)


def test_flip_a_byte_inside_a_multibyte_character():
    data = record_bytes(2)
    pos = data.index("ë".encode()) + 1  # the continuation byte
    tampered = data[:pos] + bytes([data[pos] ^ 0x40]) + data[pos + 1 :]
    expect(with_record(LINES, 2, tampered), "bad_encoding", 2)


def _decoded_height(data: bytes) -> "int | None":
    try:
        rec = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:
        return None
    if isinstance(rec, dict) and type(rec.get("height")) is int:
        return rec["height"]
    return None


@pytest.mark.parametrize("height", range(COUNT))
def test_every_single_byte_change_is_caught_at_its_height(height):
    data = record_bytes(height)
    for pos in range(len(data)):
        for mask in (0x01, 0x80):
            tampered = data[:pos] + bytes([data[pos] ^ mask]) + data[pos + 1 :]
            res = {r["ledger"]: r for r in results(with_record(LINES, height, tampered))}[LEDGER]
            assert not res["ok"], (pos, mask)
            code, named = res["error"]["code"], res["error"]["height"]
            assert code in ERROR_CODES, (pos, mask, res)
            # The height named is the position, or the record's own height field once read.
            assert named in {height, _decoded_height(tampered)}, (pos, mask, res)
            if code == "height_gap":
                assert named == _decoded_height(tampered) != height, (pos, mask, res)


def _changed_vote() -> bytes:
    content = content_map(2)
    assert content["payload"]["choice"] == "bob"
    content["payload"]["choice"] = "alice"
    return ov.encode_canonical(content)


def test_changed_payload_with_recomputed_checksum_fails_the_work():
    content = _changed_vote()
    rec = record_map(2)
    assert not meets(work(sha(content), rec["nonce"]), DIFFICULTY)
    data, _ = replace_content(2, content, rec["nonce"], {"link": rec["link"]})
    expect(with_record(LINES, 2, data), "insufficient_work", 2)


def test_recomputed_work_with_stale_link_fails_its_own_link():
    content = _changed_vote()
    rec = record_map(2)
    data, own = replace_content(2, content, None, {"link": rec["link"]})  # new nonce, old link
    assert own != rec["link"]
    expect(with_record(LINES, 2, data), "bad_link", 2)


def test_recomputed_link_fails_the_next_records_chain():
    content = _changed_vote()
    data, own = replace_content(2, content)
    tampered = with_record(LINES, 2, data, own.hex())
    assert only(tampered[:3])["ok"]  # a rewritten head cannot be caught inside one copy
    expect(tampered, "bad_link", 3)


def test_rewriting_every_later_record_is_consistent_again():
    # Section 4: a head rewritten with everything recomputed cannot be caught in one copy.
    lines = list(LINES)
    data, prev = replace_content(2, _changed_vote())
    lines = with_record(lines, 2, data, prev.hex())
    for i in range(3, COUNT):
        rec = record_map(i)
        data, prev = place(rec["content"], prev, i, DIFFICULTY, rec["accepted"], rec["origin"])
        lines = with_record(lines, i, data, prev.hex())
    res = only(lines)
    assert res["ok"] and res["records"] == COUNT and res["head"] == prev.hex() != HEAD


def test_cut_off_end_is_still_valid():
    res = only(LINES[:3])
    assert res["ok"] and res["head"] == line_obj(2)["hash"]


# Section 4: the height an error names is the record's own height once read.


def test_deleted_line():
    got = expect(LINES[:2] + LINES[3:], "height_gap", 3)
    assert "expected height 2" in got["error"]["message"]


def test_deleted_genesis():
    expect(LINES[1:], "height_gap", 1)


def test_swapped_lines():
    expect([*LINES[:2], LINES[3], LINES[2], *LINES[4:]], "height_gap", 3)


def test_duplicated_line():
    expect([*LINES[:3], LINES[2], *LINES[3:]], "height_gap", 2)


def test_duplicated_head_line():
    expect([*LINES, LINES[-1]], "height_gap", COUNT - 1)


FLOAT_15 = b"\xcb" + bytes.fromhex("3ff8000000000000")  # 1.5 as float64
FLOAT32_15 = b"\xca" + bytes.fromhex("3fc00000")  # 1.5 as float32


@pytest.mark.parametrize("raw_float", [FLOAT_15, FLOAT32_15], ids=["float64", "float32"])
def test_float_in_a_payload(raw_float):
    content = content_map(4)
    content["payload"]["amount"] = 0
    canonical = ov.encode_canonical(content)
    assert canonical.count(b"\xa6amount\x00") == 1
    with_float = canonical.replace(b"\xa6amount\x00", b"\xa6amount" + raw_float)
    assert msgpack.unpackb(with_float, raw=False)["payload"]["amount"] == 1.5  # valid msgpack
    data, own = replace_content(4, with_float)  # checksum, work and link all recomputed
    expect(with_record(LINES, 4, data, own.hex()), "non_canonical", 4)


def test_float_in_the_record_map():
    # Step 1 lists no float for the record map itself: a float where `accepted` belongs is a
    # field of the wrong type (1.6), named at the record's height, which 1.6 read first.
    data = record_bytes(1)
    accepted = record_map(1)["accepted"]
    old = b"\xa8accepted" + b"\xcf" + u64(accepted)
    assert data.startswith(b"\x88" + old)
    tampered = data.replace(old, b"\xa8accepted\xcb" + bytes(8))
    expect(with_record(LINES, 1, tampered), "bad_field", 1)


def test_float_as_a_record_key():
    # A key that is not a string: step 1.2, before the keys are compared (1.3).
    data = record_bytes(1)
    tampered = data.replace(b"\xa8accepted", b"\xcb" + bytes(8), 1)
    assert msgpack.unpackb(tampered, raw=False, strict_map_key=False)
    expect(with_record(LINES, 1, tampered), "non_canonical", 1)


def test_unsorted_keys_in_the_record_map():
    rec = record_map(1)
    keys = list(rec)
    assert keys == sorted(keys)
    keys[0], keys[1] = keys[1], keys[0]
    tampered = _encode_pairs([(k, rec[k]) for k in keys])
    assert msgpack.unpackb(tampered, raw=False) == rec
    expect(with_record(LINES, 1, tampered), "non_canonical", 1)


def test_unsorted_keys_win_over_a_bad_field():
    # 1.3 (keys all there, merely unsorted) comes before 1.6 (origin is not a name).
    rec = record_map(1)
    rec["origin"] = "Ingest-1"
    tampered = _encode_pairs(sorted(rec.items(), reverse=True))
    expect(with_record(LINES, 1, tampered), "non_canonical", 1)


def test_missing_key_wins_over_unsorted_keys():
    rec = record_map(1)
    del rec["nonce"]
    tampered = _encode_pairs(sorted(rec.items(), reverse=True))
    expect(with_record(LINES, 1, tampered), "bad_field", 1)


def test_repeated_key_in_the_record_map():
    rec = record_map(1)
    pairs = list(rec.items())
    tampered = _encode_pairs(pairs[:1] + pairs)
    expect(with_record(LINES, 1, tampered), "non_canonical", 1)


def test_bad_field_wins_over_a_longer_form_but_not_over_a_repeated_key():
    # 1.2 (a repeated key, refused outright) comes before 1.6 (origin is not a name), which
    # comes before 1.7 (a longer form).
    rec = record_map(1)
    rec["origin"] = "Ingest-1"
    pairs = list(rec.items())
    expect(with_record(LINES, 1, _encode_pairs(pairs[:1] + pairs)), "non_canonical", 1)
    data = ov.encode_canonical(rec)
    assert data.count(b"\xa6height\x01") == 1
    expect(with_record(LINES, 1, data.replace(b"\xa6height\x01", b"\xa6height\xcc\x01")), "bad_field", 1)


def test_content_fault_wins_over_a_longer_form_in_the_record():
    # 1.5 (content v is 2) comes before 1.7 (the record's height in a longer form).
    content = content_map(1)
    content["v"] = 2
    data, own = replace_content(1, ov.encode_canonical(content))
    assert data.count(b"\xa6height\x01") == 1
    data = data.replace(b"\xa6height\x01", b"\xa6height\xcc\x01")
    got = expect(with_record(LINES, 1, data, own.hex()), "bad_field", 1)
    assert "v is 2" in got["error"]["message"]


def test_unsorted_keys_in_the_content_map():
    content = content_map(1)
    pairs = sorted(content.items(), reverse=True)
    data, own = replace_content(1, _encode_pairs(pairs))
    expect(with_record(LINES, 1, data, own.hex()), "non_canonical", 1)


def test_unsorted_keys_in_a_payload_map():
    content = content_map(1)
    payload = _encode_pairs(sorted(content["payload"].items(), reverse=True))
    canonical_payload = ov.encode_canonical(content["payload"])
    body = ov.encode_canonical(content).replace(canonical_payload, payload)
    data, own = replace_content(1, body)
    expect(with_record(LINES, 1, data, own.hex()), "non_canonical", 1)


def test_content_non_canonical_wins_over_a_bad_content_field():
    # Step 1.5: "any other rule of section 1" before "not a map with exactly the keys".
    content = content_map(1)
    content["extra"] = 1
    pairs = sorted(content.items(), reverse=True)
    data, own = replace_content(1, _encode_pairs(pairs))
    expect(with_record(LINES, 1, data, own.hex()), "non_canonical", 1)


@pytest.mark.parametrize(
    "old,new",
    [
        (b"\xa6height\x02", b"\xa6height\xcc\x02"),  # uint8 for a fixint
        (b"\xa6height\x02", b"\xa6height\xd0\x02"),  # int8 for a non-negative value
        (b"\xa5nonce\xcd\x68\x47", b"\xa5nonce\xce\x00\x00\x68\x47"),  # uint32 for a uint16
        (b"\xa6origin\xa8", b"\xa6origin\xd9\x08"),  # str8 for a fixstr
        (b"\xa4link\xc4\x20", b"\xa4link\xc5\x00\x20"),  # bin16 for a bin8
    ],
    ids=["uint8", "int8", "uint32", "str8", "bin16"],
)
def test_non_shortest_forms_in_the_record(old, new):
    data = record_bytes(2)
    assert data.count(old) == 1
    expect(with_record(LINES, 2, data.replace(old, new)), "non_canonical", 2)


def test_non_shortest_integer_in_the_content():
    content = ov.encode_canonical(content_map(3))
    assert content.endswith(b"\xa1v\x01")
    data, own = replace_content(3, content[:-1] + b"\xcc\x01")
    expect(with_record(LINES, 3, data, own.hex()), "non_canonical", 3)


def test_non_shortest_map_header_for_the_record():
    data = record_bytes(1)
    assert data[0] == 0x88
    expect(with_record(LINES, 1, b"\xde\x00\x08" + data[1:]), "non_canonical", 1)


def test_trailing_bytes_after_the_record():
    expect(with_record(LINES, 1, record_bytes(1) + b"\xc0"), "non_canonical", 1)


def test_trailing_bytes_win_over_a_bad_field():
    # 1.2 (bytes after the value) before 1.6 (origin is not a name).
    rec = record_map(1)
    rec["origin"] = "Ingest-1"
    expect(with_record(LINES, 1, ov.encode_canonical(rec) + b"\x00"), "non_canonical", 1)


@pytest.mark.parametrize(
    "bad",
    [b"V-00012\xff", b"V-000\xed\xa0\x80", b"V-0001\xc0\xb3"],
    ids=["ff", "surrogate", "overlong"],
)
def test_invalid_utf8_in_a_content_string(bad):
    content = ov.encode_canonical(content_map(1))
    data, own = replace_content(1, content.replace(b"V-000123", bad))
    expect(with_record(LINES, 1, data, own.hex()), "bad_encoding", 1)


def test_invalid_utf8_in_a_record_string():
    data = record_bytes(1)
    tampered = data.replace(b"\xa8ingest-1", b"\xa8ingest-\xff")
    expect(with_record(LINES, 1, tampered), "bad_encoding", 1)


def _payload_with(raw_value: bytes) -> bytes:
    content = content_map(4)
    content["payload"]["at"] = 0
    canonical = ov.encode_canonical(content)
    assert canonical.count(b"\xa2at\x00") == 1
    return canonical.replace(b"\xa2at\x00", b"\xa2at" + raw_value)


@pytest.mark.parametrize(
    "raw_value,code",
    [
        (b"\xd4\x07\x78", "non_canonical"),  # fixext 1, application type 7
        (b"\xd6\xff" + (1790000004).to_bytes(4, "big"), "non_canonical"),  # timestamp 32
        (b"\xc7\x0c\xff" + bytes(12), "non_canonical"),  # timestamp 96
        (b"\xd4\xfe\x00", "non_canonical"),  # a reserved type (-2): still an extension type
        (b"\xd4\xff\x00", "bad_encoding"),  # timestamp with 1 byte of data: malformed
        (b"\xd7\xff" + (0x3FFFFFFF << 34).to_bytes(8, "big"), "bad_encoding"),  # ns > 999999999
        (b"\xc7\x0c\xff" + (10**9).to_bytes(4, "big") + bytes(8), "bad_encoding"),  # ns = 10**9
    ],
    ids=["ext7", "ts32", "ts96", "ext-2", "ts-1byte", "ts64-ns", "ts96-ns"],
)
def test_extension_types_in_a_payload(raw_value, code):
    data, own = replace_content(4, _payload_with(raw_value))
    expect(with_record(LINES, 4, data, own.hex()), code, 4)


def test_extension_type_in_the_record_map():
    # 1.2 (an extension type) before 1.6 (accepted is not an integer).
    data = record_bytes(1)
    accepted = record_map(1)["accepted"]
    old = b"\xa8accepted" + b"\xcf" + u64(accepted)
    tampered = data.replace(old, b"\xa8accepted\xd7\x05" + bytes(8))
    expect(with_record(LINES, 1, tampered), "non_canonical", 1)


def test_invalid_utf8_wins_over_an_extension_type():
    # ASSUMPTION (open in step 1.2): not msgpack / invalid UTF-8 wins wherever it lies.
    body = _payload_with(b"\xd4\x07\x78")
    # The payload's "electronic_id" value (its last occurrence) comes after the extension.
    head, sep, tail = body.rpartition(b"\xa8E-7f3a91")
    assert sep and head.index(b"\xd4\x07\x78") > head.index(b"payload")
    body = head + b"\xa8E-7f3a9\xff" + tail
    data, own = replace_content(4, body)
    expect(with_record(LINES, 4, data, own.hex()), "bad_encoding", 4)


def test_truncated_record():
    expect(with_record(LINES, 2, record_bytes(2)[:-1]), "bad_encoding", 2)


# --------------------------------------------------------------------------------------
# Export lines (section 5)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["height", "hash", "ledger_of_head"])
def test_line_fields_disagreeing_with_the_record(field):
    lines = list(LINES)
    obj = json.loads(lines[2])
    if field == "height":
        obj["height"] = 7
    elif field == "hash":
        obj["hash"] = json.loads(lines[1])["hash"]
    if field != "ledger_of_head":
        lines[2] = json.dumps(obj, separators=(",", ":"))
        expect(lines, "bad_field", 2)
        return
    head = json.loads(lines[-1])
    head["ledger"] = "election-2027"
    lines[-1] = json.dumps(head, separators=(",", ":"))
    res = {r["ledger"]: r for r in results(lines)}
    assert list(res) == [LEDGER, "election-2027"]
    assert res[LEDGER]["ok"] and res[LEDGER]["records"] == COUNT - 1
    assert res[LEDGER]["head"] == json.loads(LINES[-2])["hash"]
    # The line's ledger is the one being verified: the record of election-2026 is step 2's
    # wrong_ledger, at the record's own height, not its position (0).
    expect(lines, "wrong_ledger", COUNT - 1, ledger="election-2027")


@pytest.mark.parametrize(
    "text,code",
    [
        ('{"ledger":"election-2026","height":2,"hash":"00"}', "bad_line"),
        ("extra", "bad_line"),
        ("height_bool", "bad_line"),
        ("height_negative", "bad_line"),
        ("height_float", "bad_line"),
        ("hash_upper", "bad_line"),
        ("hash_short", "bad_line"),
        ("record_int", "bad_line"),
        ("record_not_base64", "bad_line"),
        ("record_unpadded", "bad_line"),
        ("record_padding_bits", "bad_line"),
        ("record_line_break", "bad_line"),
        ("repeated_key", "bad_line"),
        ("ledger_not_a_name", "bad_line"),
    ],
)
def test_malformed_lines_that_name_their_ledger(text, code):
    # Records 2 (321 bytes) has no base64 padding; record 3 (400 bytes) ends in "==".
    at = 3 if text in ("record_unpadded", "record_padding_bits") else 2
    obj = json.loads(LINES[at])
    if text == "extra":
        obj["hops"] = 1
    elif text == "height_bool":
        obj["height"] = True
    elif text == "height_negative":
        obj["height"] = -2
    elif text == "height_float":
        obj["height"] = 2.0
    elif text == "hash_upper":
        obj["hash"] = obj["hash"].upper()
    elif text == "hash_short":
        obj["hash"] = obj["hash"][:-2]
    elif text == "record_int":
        obj["record"] = 5
    elif text == "record_not_base64":
        obj["record"] = obj["record"][:-4] + "!!!!"
    elif text == "record_unpadded":
        assert obj["record"].endswith("==")
        obj["record"] = obj["record"].rstrip("=")
    elif text == "record_padding_bits":
        rec = obj["record"]
        assert rec.endswith("==")
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        last = alphabet.index(rec[-3])
        assert last & 0b1111 == 0  # the 4 padding bits are zero in a standard encoding
        obj["record"] = rec[:-3] + alphabet[last | 1] + "=="
        assert base64.b64decode(obj["record"]) == base64.b64decode(rec)  # a lenient decoder agrees
    elif text == "record_line_break":
        obj["record"] = obj["record"][:76] + "\n" + obj["record"][76:]
    elif text == "ledger_not_a_name":
        obj["ledger"] = "Election-2026"
    if text == "repeated_key":
        text = LINES[at][:-1] + ',"height":2}'
    elif not text.startswith("{"):
        text = json.dumps(obj, separators=(",", ":"))
    lines = [*LINES[:at], text, *LINES[at + 1 :]]
    # A line that does not begin with a name (Election-2026) belongs to the ledger before it.
    expect(lines, code, at)
    # Every line is read: the ledger's lines after the bad one still belong to it.
    (res,) = results(lines)
    assert res["records"] == COUNT and res["error"]["line"] == at + 1


@pytest.mark.parametrize(
    "text,code",
    [
        ("not json", "bad_line"),
        ("", "bad_line"),  # an export has no empty lines
        ('{"ledger":"election-2026","height":NaN,"hash":"","record":""}', "bad_line"),
        ('{"ledger":"election-2026","height":Infinity,"hash":"","record":""}', "bad_line"),
        ("[" * 100_000, "bad_line"),
        ('{"ledger":"election-2026"', "bad_line"),
        ("[1,2]", "bad_line"),
        ('"election-2026"', "bad_line"),
        ('{"height":2,"hash":"","record":""}', "bad_line"),
        ('{"ledger":5,"height":2,"hash":"","record":""}', "bad_line"),
    ],
    ids=["not-json", "empty", "nan", "infinity", "deep", "cut", "array", "string", "no-ledger", "ledger-int"],
)
def test_a_line_that_names_no_ledger_belongs_to_the_one_before(text, code):
    assert code == "bad_line"
    other = chain(small())  # a second, valid ledger after the bad line
    lines = [*LINES[:2], text, *LINES[2:], *other]
    res = results(lines)
    # The bad line fails the ledger before it, at its position; reading goes on.
    assert [r["ledger"] for r in res] == [LEDGER, NAME]
    assert res[0]["head"] == line_obj(1)["hash"] and res[0]["error"]["line"] == 3
    assert res[1]["ok"]
    expect(lines, "bad_line", 2)
    if ov.line_ledger(text) == LEDGER:  # NaN, Infinity: the line begins with its ledger's name
        (first,) = results([text, *LINES])
        assert (first["error"]["code"], first["error"]["height"]) == ("bad_line", 0)
        return
    # As the first line of a file, the error belongs to no ledger: the file's own failure.
    first = results([text, *LINES])
    assert [r["ledger"] for r in first] == [None, LEDGER] and first[1]["ok"]
    assert (first[0]["error"]["code"], first[0]["error"]["line"]) == ("bad_line", 1)


def test_invalid_utf8_in_a_line():
    raw = EXPORT_TEXT.encode("utf-8").replace(b'"height":3,', b'"height":3,"x":"\xff",')
    res = results(raw)
    assert len(res) == 1 and res[0]["records"] == COUNT
    assert (res[0]["error"]["code"], res[0]["error"]["height"]) == ("bad_line", 3)
    # The same line given as a str with a lone surrogate (what surrogateescape yields).
    lines = raw.decode("utf-8", errors="surrogateescape").split("\n")[:-1]
    expect(lines, "bad_line", 3)


def test_empty_line_at_the_end():
    assert only(EXPORT_TEXT)["ok"]
    expect(EXPORT_TEXT + "\n", "bad_line", COUNT)
    expect([*LINES, ""], "bad_line", COUNT)


def test_a_crlf_file_gets_one_answer():
    text = EXPORT_TEXT.replace("\n", "\r\n")
    for given in (text, text.encode()):
        (res,) = results(given)
        assert res["ledger"] is None
        assert (res["error"]["code"], res["error"]["line"]) == ("bad_line", 1)


def test_two_ledgers_in_one_file():
    other = chain(small())
    res = results([*LINES, *other])
    assert [(r["ledger"], r["ok"], r["records"]) for r in res] == [(LEDGER, True, COUNT), (NAME, True, 2)]


def test_line_spacing_and_key_order_are_checked():
    # Section 5: lines are byte-exact; any other spelling of the same values is bad_line.
    obj = json.loads(LINES[2])
    text = json.dumps({"record": obj["record"], "hash": obj["hash"], "height": 2, "ledger": LEDGER}, indent=None)
    assert " " in text
    expect([*LINES[:2], text, *LINES[3:]], "bad_line", 2)
    expect([*LINES[:2], LINES[2].replace('"height":2', '"height": 2'), *LINES[3:]], "bad_line", 2)


# --------------------------------------------------------------------------------------
# Appending records to the committed ledger (kind checks)
# --------------------------------------------------------------------------------------


def _append(kind: str, ledger: str = LEDGER) -> tuple:
    content = {
        "author": "E-7f3a91",
        "kind": kind,
        "ledger": ledger,
        "payload": {"electronic_id": "E-7f3a91"},
        "request_id": "req-6",
        "ts": 1790000006000,
        "v": 1,
    }
    data, own = place(ov.encode_canonical(content), bytes.fromhex(HEAD), COUNT, DIFFICULTY, 1790000006007)
    return [*LINES, make_line(LEDGER, COUNT, own.hex(), data)], own


def test_appended_valid_record():
    lines, own = _append("withdraw")
    assert only(lines) == {
        "ledger": LEDGER,
        "records": COUNT + 1,
        "head": own.hex(),
        "checkpoints": 0,
        "ok": True,
        "error": None,
    }


def test_appended_unknown_kind():
    lines, _ = _append("vote")
    expect(lines, "unknown_kind", COUNT)


def test_appended_genesis_after_height_0():
    lines, _ = _append("genesis")
    expect(lines, "bad_genesis", COUNT)


def test_record_of_another_ledger():
    lines, _ = _append("cast", ledger="fund-1")
    # In an export the line's ledger is the one being verified: step 2 ...
    expect(lines, "wrong_ledger", COUNT)
    # ... in a plain list of records of one ledger, step 2 catches it.
    res = ov.verify_records(LEDGER, [base64.b64decode(json.loads(t)["record"]) for t in lines])
    assert (res["ok"], res["error"]["code"], res["error"]["height"]) == (False, "wrong_ledger", COUNT)
    assert res["head"] == HEAD
    res = ov.verify_records("fund-1", [record_bytes(i) for i in range(COUNT)])
    assert (res["error"]["code"], res["error"]["height"]) == ("wrong_ledger", 0)
    assert ov.verify_records(LEDGER, [record_bytes(i) for i in range(COUNT)])["ok"]


def test_verify_records_names_heights_like_an_export():
    records = [record_bytes(i) for i in range(COUNT)]
    res = ov.verify_records(LEDGER, records[:2] + records[3:])
    assert (res["error"]["code"], res["error"]["height"]) == ("height_gap", 3)
    res = ov.verify_records(LEDGER, [*records[:2], b"\xc1", *records[3:]])
    assert (res["error"]["code"], res["error"]["height"]) == ("bad_encoding", 2)


# --------------------------------------------------------------------------------------
# Fresh ledgers (low difficulty) for genesis, field and size rules
# --------------------------------------------------------------------------------------

NAME = "test-ledger"


class _Drop:
    def __repr__(self) -> str:
        return "DROP"


_DROP = _Drop()


def genesis_payload(**over) -> dict:
    payload = {"difficulty": 0, "kinds": ["cast", "note"], "rules": {}}
    payload.update(over)
    return {k: v for k, v in payload.items() if v is not _DROP}


def make_content(kind: str, payload: object, over: "dict | None" = None) -> dict:
    content = {
        "author": "tester",
        "kind": kind,
        "ledger": NAME,
        "payload": payload,
        "request_id": "r-1",
        "ts": 1,
        "v": 1,
    }
    content.update(over or {})
    return {k: v for k, v in content.items() if v is not _DROP}


def chain(contents: list, difficulty: int = 0, overrides: "dict | None" = None) -> list:
    """Export lines of a ledger made of the given content maps (or raw bytes)."""
    lines = []
    prev = bytes(32)
    for height, content in enumerate(contents):
        body = content if isinstance(content, bytes) else ov.encode_canonical(content, max_level=None)
        extra = dict((overrides or {}).get(height, {}))
        record_prev = extra.pop("prev", prev)
        nonce = extra.pop("nonce", None)
        data, own = place(body, record_prev, height, difficulty, 1000 + height, "ingest-1", nonce, extra)
        lines.append(make_line(NAME, height, own.hex(), data))
        prev = own
    return lines


def small(**over) -> list:
    return [make_content("genesis", genesis_payload()), make_content("note", {"n": 1}, over)]


def test_fresh_ledger_is_valid():
    res = only(chain(small()))
    assert res["ok"] and res["records"] == 2


@pytest.mark.parametrize(
    "payload",
    [
        {"difficulty": 65},
        {"difficulty": -1},
        {"difficulty": True},
        {"difficulty": "0"},
        {"kinds": []},
        {"kinds": ["note", "cast"]},
        {"kinds": ["cast", "cast"]},
        {"kinds": ["cast", "genesis"]},
        {"kinds": ["Cast"]},
        {"kinds": [1]},
        {"kinds": "cast"},
        {"rules": []},
        {"rules": _DROP},
        {"difficulty": _DROP},
        {"extra": 1},
    ],
    ids=str,
)
def test_bad_genesis_payload(payload):
    expect(chain([make_content("genesis", genesis_payload(**payload))]), "bad_genesis", 0, ledger=NAME)


def test_genesis_of_another_kind():
    expect(chain([make_content("note", genesis_payload())]), "bad_genesis", 0, ledger=NAME)


def test_genesis_with_nonzero_prev():
    lines = chain([make_content("genesis", genesis_payload())], overrides={0: {"prev": b"\x01" * 32}})
    expect(lines, "bad_genesis", 0, ledger=NAME)


def test_genesis_boundaries_are_accepted():
    assert only(chain([make_content("genesis", genesis_payload(kinds=["a"], rules={"x": [1]}))]))["ok"]
    assert only(chain([make_content("genesis", genesis_payload(difficulty=4))], difficulty=4))["ok"]
    assert only(chain([make_content("genesis", genesis_payload(kinds=["a" * 64, "b"]))]))["ok"]


def test_genesis_needs_its_own_work():
    genesis = make_content("genesis", genesis_payload(difficulty=12))
    body = ov.encode_canonical(genesis)
    assert not meets(work(sha(body), 0), 12)
    expect(chain([genesis], overrides={0: {"nonce": 0}}), "insufficient_work", 0, ledger=NAME)
    assert only(chain([genesis], difficulty=12))["ok"]


def test_kind_check_comes_after_checksum():
    lines = chain([make_content("genesis", genesis_payload()), make_content("vote", {})])
    expect(lines, "unknown_kind", 1, ledger=NAME)
    lines = chain(
        [make_content("genesis", genesis_payload()), make_content("vote", {})], overrides={1: {"checksum": bytes(32)}}
    )
    expect(lines, "bad_checksum", 1, ledger=NAME)


@pytest.mark.parametrize(
    "over",
    [
        {"author": ""},
        {"author": "-x"},
        {"author": "a" * 65},
        {"author": "a b"},
        {"author": 5},
        {"kind": "Note"},
        {"kind": ""},
        {"ledger": 5},
        {"ledger": "Test-ledger"},
        {"payload": []},
        {"request_id": ""},
        {"request_id": "r" * 129},
        {"request_id": "r/1"},
        {"ts": -1},
        {"ts": True},
        {"v": 2},
        {"v": True},
        {"v": "1"},
        {"v": _DROP},
        {"extra": 1},
    ],
    ids=str,
)
def test_bad_content_field(over):
    expect(chain(small(**over)), "bad_field", 1, ledger=NAME)


@pytest.mark.parametrize(
    "over,named",
    [
        ({"v": 2, "ledger": 5}, "v is"),
        ({"ledger": 5, "payload": []}, "ledger"),
        ({"payload": [], "kind": "X"}, "payload"),
        ({"kind": "X", "author": ""}, "kind"),
        ({"author": "", "request_id": ""}, "author"),
        ({"request_id": "", "ts": -1}, "request_id"),
    ],
    ids=str,
)
def test_content_fields_are_checked_in_the_documented_order(over, named):
    # Step 1.5: v, then ledger, payload, kind, author, request_id, ts.
    got = expect(chain(small(**over)), "bad_field", 1, ledger=NAME)
    assert named in got["error"]["message"], got


@pytest.mark.parametrize(
    "over",
    [{"author": "a" * 64}, {"author": "0@x.y-z_"}, {"request_id": ":" * 128}, {"ts": 2**64 - 1}, {"payload": {}}],
    ids=str,
)
def test_content_field_boundaries(over):
    assert only(chain(small(**over)))["ok"]


@pytest.mark.parametrize(
    "field,value",
    [
        ("checksum", bytes(31)),
        ("checksum", "x" * 32),
        ("prev", bytes(33)),
        ("link", None),
        ("content", "text"),
        ("accepted", -1),
        ("nonce", True),
        ("height", "1"),
        ("height", -1),
        ("origin", "Ingest"),
        ("origin", ""),
        ("origin", b"ingest-1"),
        ("origin", "i" * 65),
    ],
    ids=str,
)
def test_bad_record_field(field, value):
    expect(chain(small(), overrides={1: {field: value}}), "bad_field", 1, ledger=NAME)


@pytest.mark.parametrize(
    "fields,named",
    [
        ({"height": "1", "checksum": b""}, "height"),
        ({"checksum": b"", "nonce": True}, "checksum"),
        ({"nonce": True, "prev": b""}, "nonce"),
        ({"prev": b"", "accepted": -1}, "prev"),
        ({"accepted": -1, "origin": ""}, "accepted"),
        ({"origin": "", "link": b""}, "origin"),
    ],
    ids=str,
)
def test_placement_fields_are_checked_in_the_documented_order(fields, named):
    got = expect(chain(small(), overrides={1: fields}), "bad_field", 1, ledger=NAME)
    assert got["error"]["message"].startswith(f"record: {named} "), got


def test_the_height_named_once_it_is_read():
    # A record at position 1 that says it is at height 7.
    lines = chain(small(), overrides={1: {"height": 7, "checksum": bytes(31)}})
    expect(lines, "bad_field", 7, ledger=NAME)  # 1.6 read the height before the checksum
    lines = chain(small(), overrides={1: {"height": 7, "content": "text"}})
    expect(lines, "bad_field", 1, ledger=NAME)  # 1.4: the height is not read yet
    lines = chain(small(v=2), overrides={1: {"height": 7}})
    expect(lines, "bad_field", 1, ledger=NAME)  # 1.5: the height is not read yet
    lines = chain(small(), overrides={1: {"height": "7"}})
    expect(lines, "bad_field", 1, ledger=NAME)  # a height that cannot be read
    lines = chain(small(), overrides={1: {"height": 7}})
    expect(lines, "bad_field", 7, ledger=NAME)  # the line says 1: section 5, after step 1
    lines = chain(small(), overrides={1: {"height": 7}})
    data = base64.b64decode(json.loads(lines[1])["record"])
    res = ov.verify_records(NAME, [base64.b64decode(json.loads(lines[0])["record"]), data])
    assert (res["error"]["code"], res["error"]["height"]) == ("height_gap", 7)


def test_record_and_content_not_maps():
    lines = chain(small())
    expect(with_record(lines, 1, ov.encode_canonical([1, 2])), "bad_field", 1, ledger=NAME)
    lines = chain([make_content("genesis", genesis_payload()), ov.encode_canonical(["x"])])
    expect(lines, "bad_field", 1, ledger=NAME)


def _sized_content(size: int) -> dict:
    base = len(ov.encode_canonical(make_content("note", {"x": ""})))
    # str32/str16 headers: grow the string until the encoding has exactly `size` bytes.
    fill = size - base
    for extra in range(0, 6):
        content = make_content("note", {"x": "x" * (fill - extra)})
        if len(ov.encode_canonical(content)) == size:
            return content
    raise AssertionError("no exact size")


def test_content_size_limit():
    at_limit = _sized_content(65_536)
    over = _sized_content(65_537)
    genesis = make_content("genesis", genesis_payload())
    assert only(chain([genesis, at_limit]))["ok"]
    expect(chain([genesis, over]), "too_large", 1, ledger=NAME)
    # The size is checked before the content is decoded (1.5) ...
    expect(chain([genesis, b"\xc1" * 65_537]), "too_large", 1, ledger=NAME)
    expect(chain([genesis, b"\xc1" * 65_536]), "bad_encoding", 1, ledger=NAME)
    # ... and after the record's keys (1.3): unsorted record keys win.
    line = chain([genesis, over])[1]
    rec = msgpack.unpackb(base64.b64decode(json.loads(line)["record"]), raw=False)
    unsorted = _encode_pairs(sorted(rec.items(), reverse=True))
    expect(with_record(chain([genesis, over]), 1, unsorted), "non_canonical", 1, ledger=NAME)


def _record_of_size(size: int) -> bytes:
    """Record bytes of exactly ``size`` bytes: a valid content, a too long origin."""
    body = ov.encode_canonical(make_content("note", {"x": "x" * 60_000}))
    fill = size - len(place(body, bytes(32), 1, 0, origin="")[0])
    for extra in range(0, 6):
        data, _ = place(body, bytes(32), 1, 0, origin="o" * (fill - extra))
        if len(data) == size:
            return data
    raise AssertionError("no exact size")


def test_record_size_limit():
    lines = chain(small())
    at_limit = _record_of_size(81_920)
    over = _record_of_size(81_921)
    # At the limit, step 1 goes on and finds the origin too long (1.6).
    got = expect(with_record(lines, 1, at_limit), "bad_field", 1, ledger=NAME)
    assert "origin" in got["error"]["message"]
    # Over it, too_large comes first (1.1), named at the position, even if not msgpack.
    expect(with_record(lines, 1, over), "too_large", 1, ledger=NAME)
    expect(with_record(lines, 1, over[:-2] + b"\xc1\xc1"), "too_large", 1, ledger=NAME)
    expect(with_record(lines, 1, b"\xc1" * 81_921), "too_large", 1, ledger=NAME)
    expect(with_record(lines, 1, b"\xc1" * 81_920), "bad_encoding", 1, ledger=NAME)


def test_limits_are_protocol_constants():
    assert (ov.MAX_CONTENT_BYTES, ov.MAX_RECORD_BYTES) == (65_536, 81_920)
    with pytest.raises(TypeError):
        ov.verify_lines(LINES, max_record_bytes=1)  # type: ignore[call-arg]


def test_depth_limit_in_a_payload():
    genesis = make_content("genesis", genesis_payload())
    # content map (level 0) > payload map (1) > "d" (2) > 13 arrays: the integer at level 15.
    assert only(chain([genesis, make_content("note", {"d": _nested(13, 0)})]))["ok"]
    # ... 14 arrays, the innermost empty at level 15: still allowed.
    assert only(chain([genesis, make_content("note", {"d": _nested(13, [])})]))["ok"]
    # A value at level 16 is refused.
    expect(chain([genesis, make_content("note", {"d": _nested(14, 0)})]), "non_canonical", 1, ledger=NAME)
    expect(chain([genesis, make_content("note", {"d": _nested(14, [])})]), "non_canonical", 1, ledger=NAME)
    # A map key counts as a value too.
    deep_key = make_content("note", {"d": _nested(12, {"k": 0})})
    assert only(chain([genesis, deep_key]))["ok"]
    deeper_key = make_content("note", {"d": _nested(13, {"k": 0})})
    expect(chain([genesis, deeper_key]), "non_canonical", 1, ledger=NAME)


# --------------------------------------------------------------------------------------
# The canonical codec (section 1) on its own
# --------------------------------------------------------------------------------------

INTS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]
INTS += [-1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63)]


@pytest.mark.parametrize(
    "value",
    [
        *INTS,
        None,
        True,
        False,
        "",
        "x" * 31,
        "x" * 32,
        "x" * 255,
        "x" * 256,
        "x" * 65536,
        "Zoë 🗳",
        b"",
        b"\x00" * 256,
        b"\x00" * 65536,
        list(range(15)),
        list(range(16)),
        list(range(65536)),
        {str(i): i for i in range(15)},
        {str(i): i for i in range(16)},
        {"\U00010000": 1, "\uffff": 2, "a": 3, "aa": 4, "B": 5, "é": 6},
    ],
    ids=lambda v: repr(v)[:20],
)
def test_encoder_agrees_with_msgpack_and_round_trips(value):
    encoded = ov.encode_canonical(value)
    if isinstance(value, dict):
        ordered = dict(sorted(value.items(), key=lambda kv: kv[0].encode("utf-8")))
        assert msgpack.packb(ordered, use_bin_type=True) == encoded
    else:
        assert msgpack.packb(value, use_bin_type=True) == encoded
    assert ov.decode_canonical(encoded) == value


def test_keys_sort_by_utf8_bytes():
    encoded = ov.encode_canonical({"\U00010000": 1, "\uffff": 2})
    assert encoded.index("\uffff".encode()) < encoded.index("\U00010000".encode())
    swapped = _encode_pairs([("\U00010000", 1), ("\uffff", 2)])
    with pytest.raises(ov.VerifyError) as err:
        ov.decode_canonical(swapped)
    assert err.value.code == "non_canonical"


@pytest.mark.parametrize(
    "value",
    [1.5, float("nan"), object(), {1: 2}, {b"k": 1}, 2**64, -(2**63) - 1, "\ud800", _nested(16, 0)],
    # Named, not repr: an object's repr holds its address, different in every collection.
    ids=["float", "nan", "object", "int-key", "bytes-key", "2**64", "-2**63-1", "surrogate", "16-nested-lists"],
)
def test_encoder_refuses(value):
    with pytest.raises((TypeError, ValueError)):
        ov.encode_canonical(value)


@pytest.mark.parametrize(
    "hexdata,code",
    [
        ("", "bad_encoding"),
        ("c1", "bad_encoding"),
        ("a561", "bad_encoding"),
        ("92 01", "bad_encoding"),
        ("cd 00", "bad_encoding"),
        ("d4 01", "bad_encoding"),  # extension cut short
        ("c7 05 01 00", "bad_encoding"),
        ("a1 ff", "bad_encoding"),
        ("a3 eda080", "bad_encoding"),
        ("a2 c0af", "bad_encoding"),
        # Malformed timestamps (extension type -1).
        ("d4 ff 00", "bad_encoding"),
        ("d5 ff 0000", "bad_encoding"),
        ("d8 ff 00000000000000000000000000000000", "bad_encoding"),
        ("c7 00 ff", "bad_encoding"),
        ("d7 ff ffffffff00000000", "bad_encoding"),
        ("c7 0c ff 3b9aca00 0000000000000000", "bad_encoding"),
        # Extension types (well-formed): valid msgpack, not canonical.
        ("d4 01 00", "non_canonical"),
        ("c7 00 01", "non_canonical"),
        ("d6 ff 00000000", "non_canonical"),
        ("d7 ff 0000000000000000", "non_canonical"),
        ("c7 0c ff 3b9ac9ff 0000000000000000", "non_canonical"),
        ("c7 04 ff 00000000", "non_canonical"),
        ("d4 80 00", "non_canonical"),
        ("81 d40100 00", "non_canonical"),
        # Floats, longer forms, keys, nesting, trailing bytes.
        ("ca 00000000", "non_canonical"),
        ("cb 0000000000000000", "non_canonical"),
        ("cc 05", "non_canonical"),
        ("cd 00ff", "non_canonical"),
        ("ce 0000ffff", "non_canonical"),
        ("cf 00000000ffffffff", "non_canonical"),
        ("d0 05", "non_canonical"),
        ("d0 e0", "non_canonical"),
        ("d1 ff80", "non_canonical"),
        ("d2 ffff8000", "non_canonical"),
        ("d3 ffffffff80000000", "non_canonical"),
        ("d3 0000000000000000", "non_canonical"),
        ("d9 01 61", "non_canonical"),
        ("da 0001 61", "non_canonical"),
        ("c5 0001 61", "non_canonical"),
        ("dc 0001 00", "non_canonical"),
        ("de 0001 a161 00", "non_canonical"),
        ("81 01 02", "non_canonical"),
        ("81 c40161 00", "non_canonical"),
        ("81 c0 00", "non_canonical"),
        ("81 90 00", "non_canonical"),
        ("82 a161 00 a161 00", "non_canonical"),
        ("82 a162 00 a161 00", "non_canonical"),
        ("82 a26161 00 a161 00", "non_canonical"),
        ("83 a161 00 a162 00 a161 00", "non_canonical"),
        ("00 00", "non_canonical"),
        ("00 c1", "non_canonical"),  # bytes after the value are not decoded
        # Precedence (assumption): anything that is not valid msgpack wins over a
        # canonical-form fault that comes earlier in the input.
        ("92 cc05 a1ff", "bad_encoding"),
        ("92 d40100 a1ff", "bad_encoding"),
        ("92 d40100 d4ff00", "bad_encoding"),
        ("92 cc05 d40100", "non_canonical"),
    ],
)
def test_decoder_rejects(hexdata, code):
    with pytest.raises(ov.VerifyError) as err:
        ov.decode_canonical(bytes.fromhex(hexdata.replace(" ", "")))
    assert err.value.code == code


def test_decoder_accepts_canonical_forms():
    assert ov.decode_canonical(bytes.fromhex("82a16100a2616101")) == {"a": 0, "aa": 1}
    assert ov.decode_canonical(bytes.fromhex("93c0c2c3")) == [None, False, True]
    assert ov.decode_canonical(bytes.fromhex("d0df")) == -33
    # Section 1 rule 6: 16 arrays nested, allowed when the innermost is empty ...
    assert ov.decode_canonical(b"\x91" * 15 + b"\x90") == _nested(15, [])
    assert ov.decode_canonical(b"\x91" * 15 + b"\x00") == _nested(15, 0)
    # ... refused when it holds anything.
    for data in (b"\x91" * 16 + b"\x00", b"\x91" * 16 + b"\x90", b"\x91" * 15 + b"\x81\xa1k\x00"):
        with pytest.raises(ov.VerifyError) as err:
            ov.decode_canonical(data)
        assert err.value.code == "non_canonical"


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def _cli(path: Path) -> tuple:
    proc = subprocess.run(
        [sys.executable, str(HERE / "outsider_verify.py"), str(path)], capture_output=True, text=True, check=False
    )
    return proc.returncode, proc.stdout


def test_cli_valid():
    code, out = _cli(HERE / "ledger.jsonl")
    assert code == 0
    assert json.loads(out) == [
        {"ledger": LEDGER, "records": COUNT, "head": HEAD, "checkpoints": 0, "ok": True, "error": None}
    ]


def test_cli_invalid(tmp_path):
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(LINES[:2] + LINES[3:]) + "\n", encoding="utf-8")
    code, out = _cli(path)
    assert code == 1
    (res,) = json.loads(out)
    assert (res["ok"], res["error"]["code"], res["error"]["height"], res["head"]) == (
        False,
        "height_gap",
        3,
        json.loads(LINES[1])["hash"],
    )


@pytest.mark.parametrize("case", INVALID[:3] + INVALID[-3:], ids=lambda c: c["name"])
def test_cli_invalid_cases(tmp_path, case):
    path = tmp_path / "export.jsonl"
    path.write_text(case["export"], encoding="utf-8")
    code, out = _cli(path)
    assert code == 1
    res = {r["ledger"]: r for r in json.loads(out)}[case["expect"]["ledger"]]
    assert (res["error"]["code"], res["error"]["height"]) == (case["expect"]["code"], case["expect"]["height"])


def test_cli_invalid_utf8_line(tmp_path):
    path = tmp_path / "export.jsonl"
    raw = EXPORT_TEXT.encode("utf-8")
    path.write_bytes(raw.replace(b'"height":3,', b'"height":3,"x":"\xff",'))
    code, out = _cli(path)
    assert code == 1
    (res,) = json.loads(out)
    assert (res["error"]["code"], res["error"]["height"], res["records"]) == ("bad_line", 3, COUNT)


def test_cli_usage():
    proc = subprocess.run([sys.executable, str(HERE / "outsider_verify.py")], capture_output=True, check=False)
    assert proc.returncode == 2


# --------------------------------------------------------------------------------------
# Sections 12 to 14: the tree, checkpoints and cosignatures, receipts (outsider code only)
# --------------------------------------------------------------------------------------

RFC6962 = json.loads((HERE / "rfc6962.json").read_text(encoding="utf-8"))
TREE = json.loads((HERE / "tree.json").read_text(encoding="utf-8"))
NOTES = json.loads((HERE / "note.json").read_text(encoding="utf-8"))
RECEIPT = json.loads((HERE / "receipt.json").read_text(encoding="utf-8"))


def _hx(values: list) -> list:
    return [bytes.fromhex(v) for v in values]


def test_outsider_mth_gives_the_reference_roots() -> None:
    leaves = [ov.leaf_hash(bytes.fromhex(leaf)) for leaf in RFC6962["leaves"]]
    for size, root in enumerate(RFC6962["roots"]):
        assert ov.mth(leaves[:size]).hex() == root


def test_outsider_proofs_agree_with_the_reference_vectors() -> None:
    for case in RFC6962["inclusion"]:
        args = (bytes.fromhex(case["leafHash"]), case["leafIdx"], case["treeSize"], _hx(case["proof"]))
        if case["wantErr"]:
            with pytest.raises(ov.VerifyError):
                ov.verify_inclusion(*args, bytes.fromhex(case["root"]))
        else:
            ov.verify_inclusion(*args, bytes.fromhex(case["root"]))
    for case in RFC6962["consistency"]:
        args = (case["size1"], case["size2"], bytes.fromhex(case["root1"]), bytes.fromhex(case["root2"]))
        # 12.3: a root that is not 32 bytes is refused before anything else, though Go's
        # verifier only compares the roots of equal sizes ("don't care" placeholders).
        if case["wantErr"] or len(args[2]) != 32:
            with pytest.raises(ov.VerifyError):
                ov.verify_consistency(*args, _hx(case["proof"]))
        else:
            ov.verify_consistency(*args, _hx(case["proof"]))


def test_outsider_tree_of_the_committed_ledger() -> None:
    records = [base64.b64decode(json.loads(line)["record"]) for line in LINES]
    leaves = [ov.leaf_hash(r) for r in records]
    assert [leaf.hex() for leaf in leaves] == TREE["leaf_hex"]
    for size, root in TREE["root_hex_by_size"].items():
        assert ov.mth(leaves[: int(size)]).hex() == root
    inc, con = TREE["inclusion"], TREE["consistency"]
    root = bytes.fromhex(TREE["root_hex_by_size"][str(inc["size"])])
    ov.verify_inclusion(leaves[inc["index"]], inc["index"], inc["size"], _hx(inc["proof_hex"]), root)
    old, new = (bytes.fromhex(TREE["root_hex_by_size"][str(con[k])]) for k in ("old_size", "new_size"))
    ov.verify_consistency(con["old_size"], con["new_size"], old, new, _hx(con["proof_hex"]))
    flipped = _hx(con["proof_hex"])
    flipped[0] = bytes([flipped[0][0] ^ 1]) + flipped[0][1:]
    with pytest.raises(ov.VerifyError, match="bad_proof"):
        ov.verify_consistency(con["old_size"], con["new_size"], old, new, flipped)


def test_outsider_keys_notes_and_checkpoints_from_outside() -> None:
    outside = NOTES["outside"]
    for case in outside["verifier_keys"]:
        assert ov.parse_vkey(case["vkey"]).type == case["alg"]
    for case in outside["bad_verifier_keys"]:
        with pytest.raises(ov.VerifyError, match="bad_note_key"):
            ov.parse_vkey(case["vkey"])
    for case in outside["notes"]:
        keys = [ov.parse_vkey(v) for v in case["vkeys"]]
        _, verified = ov.open_note(case["note"].encode("utf-8"), keys)
        assert [k.name for k, _ in verified] == case["verified"]
    for case in outside["bad_notes"]:
        data = bytes.fromhex(case["note_hex"]) if "note_hex" in case else case["note"].encode("utf-8")
        with pytest.raises(ov.VerifyError) as e:
            ov.open_note(data, [ov.parse_vkey(v) for v in case["vkeys"]])
        assert e.value.code == case["code"], case["why"]
    for case in outside["checkpoint_bodies"]:
        origin, size, root, extensions = ov.parse_checkpoint(case["body"])
        assert (origin, size, root.hex(), extensions) == (
            case["origin"],
            case["size"],
            case["root_hex"],
            case["extensions"],
        )
    for case in outside["bad_checkpoint_bodies"]:
        with pytest.raises(ov.VerifyError, match="bad_checkpoint"):
            ov.parse_checkpoint(case["body"])
    for case in outside["checkpoints"]:  # a production checkpoint and a public witness's cosignature
        witnesses = [ov.parse_vkey(v) for v in case["witness_vkeys"]]
        got = ov.verify_checkpoint(
            case["note"].encode("utf-8"), ov.parse_vkey(case["log_vkey"]), witnesses, case["quorum"]
        )
        assert (got["origin"], got["size"], got["root"].hex()) == (case["origin"], case["size"], case["root_hex"])
        assert list(got["witnesses"]) == case["witnesses"]
        assert list(got["witnesses"].values()) == case["timestamps"]


def test_outsider_vledger_checkpoint_and_cosignatures() -> None:
    ours = NOTES["vledger"]
    log_key = ov.parse_vkey(ours["log_vkey"])
    witnesses = [ov.parse_vkey(w["vkey"]) for w in ours["witnesses"]]
    records = [base64.b64decode(json.loads(line)["record"]) for line in LINES]
    got = ov.verify_checkpoint(ours["cosigned"].encode("utf-8"), log_key, witnesses, 2)
    assert got["root"] == ov.mth([ov.leaf_hash(r) for r in records]) and got["size"] == len(records)
    for w in ours["witnesses"]:
        assert ov.cosigned_message(ours["body"].encode("utf-8"), w["timestamp"]).hex() == w["message_hex"]
    with pytest.raises(ov.VerifyError, match="no_quorum"):
        ov.verify_checkpoint(ours["signed"].encode("utf-8"), log_key, witnesses, 1)
    # One changed byte of a trusted witness's cosignature refuses the whole note (13.2).
    line = ours["witnesses"][0]["line"].rstrip("\n")
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[-1] ^= 1
    bad_line = " ".join([*line.split(" ")[:2], base64.b64encode(bytes(raw)).decode()])
    tampered = ours["cosigned"].replace(line, bad_line)
    with pytest.raises(ov.VerifyError, match="bad_cosignature"):
        ov.verify_checkpoint(tampered.encode("utf-8"), log_key, witnesses, 2)

    # 13.1 and 13.2 at the edges where Ed25519 verifiers differ.
    for vkey in ours["edges"]["small_order_vkeys"]:
        with pytest.raises(ov.VerifyError, match="bad_note_key"):
            ov.parse_vkey(vkey)
    for case in ours["edges"]["bad_signatures"]:
        with pytest.raises(ov.VerifyError) as e:
            ov.open_note(case["note"].encode("utf-8"), [ov.parse_vkey(case["vkey"])])
        assert e.value.code == case["code"], case["why"]


def test_outsider_receipt_vector() -> None:
    log_key = ov.parse_vkey(RECEIPT["log_vkey"])
    witnesses = [ov.parse_vkey(v) for v in RECEIPT["witness_vkeys"]]
    genesis = base64.b64decode(RECEIPT["genesis_b64"])
    data = RECEIPT["receipt"].encode("utf-8")
    got = ov.verify_receipt(data, log_key, witnesses, RECEIPT["quorum"], genesis)
    assert got["size"] == COUNT and len(got["witnesses"]) == 2
    assert ov.parse_receipt(data)["hash"] == RECEIPT["hash_hex"]
    for case in RECEIPT["bad"]:
        with pytest.raises(ov.VerifyError) as e:
            ov.verify_receipt(case["receipt"].encode("utf-8"), log_key, witnesses, RECEIPT["quorum"], genesis)
        assert e.value.code == case["code"], case["why"]


def test_outsider_receipt_command_line(tmp_path: Path) -> None:
    path = tmp_path / "r.receipt"
    path.write_text(RECEIPT["receipt"], encoding="utf-8")
    witness_args = [a for v in RECEIPT["witness_vkeys"] for a in ("--witness", v)]
    run = subprocess.run(
        [
            sys.executable,
            str(HERE / "outsider_verify.py"),
            "receipt",
            str(path),
            "--key",
            RECEIPT["log_vkey"],
            *witness_args,
            "--quorum",
            "2",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0 and json.loads(run.stdout)["ok"], run.stdout + run.stderr
    path.write_text(RECEIPT["bad"][0]["receipt"], encoding="utf-8")
    run = subprocess.run(
        [sys.executable, str(HERE / "outsider_verify.py"), "receipt", str(path), "--key", RECEIPT["log_vkey"]],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1 and json.loads(run.stdout)["error"]["code"] == "bad_receipt"


def test_outsider_export_with_checkpoint_lines() -> None:
    vector = json.loads((HERE / "export_checkpoints.json").read_text(encoding="utf-8"))
    for case in vector["cases"]:
        (result,) = ov.verify_lines(case["export"])
        error = result["error"]
        assert (error["code"] if error else None, error["height"] if error else None) == (
            case["code"],
            case["height"],
        ), case["why"]
        if case["code"] is None:
            assert result["records"] == vector["records"] and result["checkpoints"] == 2


ROTATION = json.loads((HERE / "rotation.json").read_text(encoding="utf-8"))


def test_outsider_follows_a_rotated_key_chain() -> None:
    """13.8 from the specification alone: the rotation messages, the key in force at each
    size, a receipt past two rotations from the genesis alone, and each bad receipt's code."""
    records = [base64.b64decode(r) for r in ROTATION["records_b64"]]
    genesis = records[0]
    ledger = ROTATION["ledger"]
    key, text = ov.genesis_key(genesis, ledger), ov.genesis_key_text(genesis)
    chain = ov.KeyChain(key, text)
    for rotation in ROTATION["rotations"]:
        _, content = ov.parse_record(records[rotation["height"]])
        chain.rotate(rotation["height"], content)
        old, new = chain.keys[-2][1], chain.keys[-1][1]
        message = f"vledger/checkpoint-key-rotation/v1\nlocal/{ledger}\n{old}\n{new}\n".encode()
        assert message.hex() == rotation["message_hex"]
    vkeys = [k["vkey"] for k in ROTATION["keys"]]
    for size, index in ROTATION["key_in_force"]:
        assert chain.in_force(size) == ov.parse_vkey(vkeys[index])
    assert chain.check_checkpoint(ROTATION["checkpoints"]["by_key_2"].encode("utf-8"), [], 0)["size"] == len(records)
    with pytest.raises(ov.VerifyError, match="retired_key"):
        chain.check_checkpoint(ROTATION["checkpoints"]["by_key_0"].encode("utf-8"), [], 0)
    got = ov.verify_receipt(ROTATION["receipt"].encode("utf-8"), key, [], 0, genesis, text)
    assert got["size"] == len(records)
    for case in ROTATION["bad"]:
        with pytest.raises(ov.VerifyError) as e:
            ov.verify_receipt(case["receipt"].encode("utf-8"), key, [], 0, genesis, text)
        assert e.value.code == case["code"], case["why"]


def test_outsider_receipt_command_line_past_rotations(tmp_path: Path) -> None:
    receipt, genesis = tmp_path / "r.receipt", tmp_path / "genesis.bin"
    receipt.write_text(ROTATION["receipt"], encoding="utf-8")
    genesis.write_bytes(base64.b64decode(ROTATION["records_b64"][0]))
    run = subprocess.run(
        [sys.executable, str(HERE / "outsider_verify.py"), "receipt", str(receipt), "--genesis", str(genesis)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(run.stdout)["size"] == len(ROTATION["records_b64"])


def test_outsider_rotation_exports() -> None:
    for case in ROTATION["exports"]:
        (result,) = ov.verify_lines(case["export"])
        error = result["error"]
        assert (error["code"] if error else None, error["height"] if error else None) == (
            case["code"],
            case["height"],
        ), case["why"]


NODE_KEYS = json.loads((HERE / "node_keys.json").read_text(encoding="utf-8"))


def test_outsider_follows_a_rotated_witness_key() -> None:
    """14.3 step 6 from the specification alone: a receipt cosigned by a rotated witness key
    verifies with the admin key, and each bad case gives its code."""
    genesis = base64.b64decode(NODE_KEYS["genesis_b64"])
    ledger = NODE_KEYS["ledger"]
    key, text = ov.genesis_key(genesis, ledger), ov.genesis_key_text(genesis)
    witnesses = [ov.parse_vkey(w) for w in NODE_KEYS["witnesses"]]
    admin = ov.parse_vkey(NODE_KEYS["admin_key"])
    q = NODE_KEYS["quorum"]
    got = ov.verify_receipt(NODE_KEYS["receipt"].encode("utf-8"), key, witnesses, q, genesis, text, admin)
    assert sorted(got["witnesses"]) == sorted(w.name for w in witnesses)
    with pytest.raises(ov.VerifyError, match="no_quorum"):  # without the admin key
        ov.verify_receipt(NODE_KEYS["receipt"].encode("utf-8"), key, witnesses, q, genesis, text)
    for case in NODE_KEYS["cases"]:
        data = case["receipt"].encode("utf-8")
        if case["code"] is None:
            assert ov.verify_receipt(data, key, witnesses, q, genesis, text, admin)["size"] == got["size"]
            continue
        with pytest.raises(ov.VerifyError) as e:
            ov.verify_receipt(data, key, witnesses, q, genesis, text, admin)
        assert e.value.code == case["code"], case["why"]


def test_outsider_receipt_command_line_with_the_admin_key(tmp_path: Path) -> None:
    receipt, genesis = tmp_path / "r.receipt", tmp_path / "genesis.bin"
    receipt.write_text(NODE_KEYS["receipt"], encoding="utf-8")
    genesis.write_bytes(base64.b64decode(NODE_KEYS["genesis_b64"]))
    witnesses = [arg for w in NODE_KEYS["witnesses"] for arg in ("--witness", w)]
    run = subprocess.run(
        [sys.executable, str(HERE / "outsider_verify.py"), "receipt", str(receipt), "--genesis", str(genesis),
         *witnesses, "--quorum", "2", "--admin-key", NODE_KEYS["admin_key"]],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(run.stdout)["witnesses"] == sorted(ov.parse_vkey(w).name for w in NODE_KEYS["witnesses"])
