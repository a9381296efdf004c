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
LINES = (HERE / "ledger.jsonl").read_text(encoding="utf-8").splitlines()
VECTORS = json.loads((HERE / "vectors.json").read_text(encoding="utf-8"))
HEAD = json.loads(LINES[-1])["hash"]


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


def seal(
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


def reseal_existing(i: int, content: bytes, nonce: "int | None" = None, overrides: "dict | None" = None) -> tuple:
    """Re-seal record i of the committed ledger with new content (same placement)."""
    rec = record_map(i)
    return seal(content, rec["prev"], i, DIFFICULTY, rec["accepted"], rec["origin"], nonce, overrides)


# --------------------------------------------------------------------------------------
# The committed ledger and the vectors
# --------------------------------------------------------------------------------------


def test_committed_ledger_verifies():
    res = only(LINES)
    assert res == {"ledger": LEDGER, "records": 5, "head": HEAD, "ok": True, "error": None}
    assert VECTORS["records"][-1]["link_hex"] == HEAD
    # Also through a file object (lines keep their "\n").
    with open(HERE / "ledger.jsonl", encoding="utf-8") as handle:
        assert ov.verify_lines(handle) == [res]


def test_export_lines_are_in_the_documented_form():
    for height, text in enumerate(LINES):
        obj = json.loads(text)
        assert list(obj) == ["ledger", "height", "hash", "record"]
        assert json.dumps(obj, separators=(",", ":"), ensure_ascii=False) == text
        assert (obj["ledger"], obj["height"]) == (LEDGER, height)
        assert base64.b64encode(base64.b64decode(obj["record"], validate=True)).decode() == obj["record"]
    assert (HERE / "ledger.jsonl").read_bytes().endswith(b"\n")


def test_vectors_header_matches_genesis():
    assert VECTORS["ledger"] == LEDGER
    assert VECTORS["difficulty"] == DIFFICULTY == content_map(0)["payload"]["difficulty"]
    assert [r["height"] for r in VECTORS["records"]] == list(range(len(LINES)))


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

    data, own2 = seal(content, prev, height, DIFFICULTY, vec["accepted"], vec["origin"], nonce=vec["nonce"])
    assert own2 == own
    assert data.hex() == vec["record_hex"]
    assert record_bytes(height) == data
    assert line_obj(height)["hash"] == vec["link_hex"]
    # The module's own helpers agree with the formulas above.
    assert ov.checksum_of(content) == checksum
    assert ov.work_of(checksum, vec["nonce"]) == digest
    assert ov.link_of(prev, checksum, height, vec["nonce"], vec["accepted"], vec["origin"]) == own


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
    # The content still decodes, but its ledger now disagrees with the line's.
    expect(with_record(LINES, 3, tampered), "bad_field", 3)


def test_flip_a_byte_inside_a_multibyte_character():
    data = record_bytes(2)
    pos = data.index("ë".encode()) + 1  # the continuation byte
    tampered = data[:pos] + bytes([data[pos] ^ 0x40]) + data[pos + 1 :]
    expect(with_record(LINES, 2, tampered), "bad_encoding", 2)


@pytest.mark.parametrize("height", range(5))
def test_every_single_byte_change_is_caught_at_its_height(height):
    data = record_bytes(height)
    allowed = {"bad_encoding", "non_canonical", "bad_field", "bad_checksum", "insufficient_work", "bad_link"}
    allowed |= {"bad_genesis", "height_gap", "unknown_kind", "too_large"}
    for pos in range(len(data)):
        for mask in (0x01, 0x80):
            tampered = data[:pos] + bytes([data[pos] ^ mask]) + data[pos + 1 :]
            res = {r["ledger"]: r for r in results(with_record(LINES, height, tampered))}[LEDGER]
            assert not res["ok"], (pos, mask)
            assert res["error"]["height"] == height, (pos, mask, res)
            assert res["error"]["code"] in allowed, (pos, mask, res)


def _changed_vote() -> bytes:
    content = content_map(2)
    assert content["payload"]["choice"] == "bob"
    content["payload"]["choice"] = "alice"
    return ov.encode_canonical(content)


def test_changed_payload_with_recomputed_checksum_fails_the_work():
    content = _changed_vote()
    rec = record_map(2)
    assert not meets(work(sha(content), rec["nonce"]), DIFFICULTY)
    data, _ = reseal_existing(2, content, rec["nonce"], {"link": rec["link"]})
    expect(with_record(LINES, 2, data), "insufficient_work", 2)


def test_recomputed_work_with_stale_link_fails_its_own_link():
    content = _changed_vote()
    rec = record_map(2)
    data, own = reseal_existing(2, content, None, {"link": rec["link"]})  # new nonce, old link
    assert own != rec["link"]
    expect(with_record(LINES, 2, data), "bad_link", 2)


def test_recomputed_link_fails_the_next_records_chain():
    content = _changed_vote()
    data, own = reseal_existing(2, content)
    tampered = with_record(LINES, 2, data, own.hex())
    assert only(tampered[:3])["ok"]  # a rewritten head cannot be caught inside one copy
    expect(tampered, "bad_link", 3)


def test_rewriting_every_later_record_is_consistent_again():
    # Section 4, last bullet: rewriting the suffix up to the head yields a valid copy.
    lines = list(LINES)
    data, prev = reseal_existing(2, _changed_vote())
    lines = with_record(lines, 2, data, prev.hex())
    for i in (3, 4):
        rec = record_map(i)
        data, prev = seal(rec["content"], prev, i, DIFFICULTY, rec["accepted"], rec["origin"])
        lines = with_record(lines, i, data, prev.hex())
    res = only(lines)
    assert res["ok"] and res["records"] == 5 and res["head"] == prev.hex() != HEAD


def test_deleted_line():
    expect(LINES[:2] + LINES[3:], "height_gap", 2)


def test_deleted_genesis():
    expect(LINES[1:], "height_gap", 0)


def test_swapped_lines():
    expect([*LINES[:2], LINES[3], LINES[2], *LINES[4:]], "height_gap", 2)


def test_duplicated_line():
    expect([*LINES[:3], LINES[2], *LINES[3:]], "height_gap", 3)


def test_duplicated_head_line():
    expect([*LINES, LINES[-1]], "height_gap", 5)


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
    data, own = reseal_existing(4, with_float)  # checksum, work and link all recomputed
    expect(with_record(LINES, 4, data, own.hex()), "non_canonical", 4)


def test_float_in_the_record_map():
    data = record_bytes(1)
    accepted = record_map(1)["accepted"]
    old = b"\xa8accepted" + b"\xcf" + u64(accepted)
    assert data.startswith(b"\x88" + old)
    tampered = data.replace(old, b"\xa8accepted\xcb" + bytes(8))
    expect(with_record(LINES, 1, tampered), "non_canonical", 1)


def _encode_pairs(pairs: list) -> bytes:
    """A map in the given key order (possibly unsorted or repeated), items canonical."""
    out = bytes([0x80 | len(pairs)]) if len(pairs) < 16 else b"\xde" + len(pairs).to_bytes(2, "big")
    for key, value in pairs:
        out += ov.encode_canonical(key) + ov.encode_canonical(value)
    return out


def test_unsorted_keys_in_the_record_map():
    rec = record_map(1)
    keys = list(rec)
    assert keys == sorted(keys)
    keys[0], keys[1] = keys[1], keys[0]
    tampered = _encode_pairs([(k, rec[k]) for k in keys])
    assert msgpack.unpackb(tampered, raw=False) == rec
    expect(with_record(LINES, 1, tampered), "non_canonical", 1)


def test_repeated_key_in_the_record_map():
    rec = record_map(1)
    pairs = list(rec.items())
    tampered = _encode_pairs(pairs[:1] + pairs)
    expect(with_record(LINES, 1, tampered), "non_canonical", 1)


def test_unsorted_keys_in_the_content_map():
    content = content_map(1)
    pairs = sorted(content.items(), reverse=True)
    data, own = reseal_existing(1, _encode_pairs(pairs))
    expect(with_record(LINES, 1, data, own.hex()), "non_canonical", 1)


def test_unsorted_keys_in_a_payload_map():
    content = content_map(1)
    payload = _encode_pairs(sorted(content["payload"].items(), reverse=True))
    canonical_payload = ov.encode_canonical(content["payload"])
    body = ov.encode_canonical(content).replace(canonical_payload, payload)
    data, own = reseal_existing(1, body)
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
    data, own = reseal_existing(3, content[:-1] + b"\xcc\x01")
    expect(with_record(LINES, 3, data, own.hex()), "non_canonical", 3)


def test_non_shortest_map_header_for_the_record():
    data = record_bytes(1)
    assert data[0] == 0x88
    expect(with_record(LINES, 1, b"\xde\x00\x08" + data[1:]), "non_canonical", 1)


def test_trailing_bytes_after_the_record():
    expect(with_record(LINES, 1, record_bytes(1) + b"\xc0"), "non_canonical", 1)


@pytest.mark.parametrize(
    "bad",
    [b"V-00012\xff", b"V-000\xed\xa0\x80", b"V-0001\xc0\xb3"],
    ids=["ff", "surrogate", "overlong"],
)
def test_invalid_utf8_in_a_content_string(bad):
    content = ov.encode_canonical(content_map(1))
    data, own = reseal_existing(1, content.replace(b"V-000123", bad))
    expect(with_record(LINES, 1, data, own.hex()), "bad_encoding", 1)


def test_invalid_utf8_in_a_record_string():
    data = record_bytes(1)
    tampered = data.replace(b"\xa8ingest-1", b"\xa8ingest-\xff")
    expect(with_record(LINES, 1, tampered), "bad_encoding", 1)


def test_extension_type_in_a_payload():
    content = content_map(4)
    content["payload"]["at"] = 0
    canonical = ov.encode_canonical(content)
    timestamp = b"\xd6\xff" + (1790000004).to_bytes(4, "big")  # the timestamp extension -1
    data, own = reseal_existing(4, canonical.replace(b"\xa2at\x00", b"\xa2at" + timestamp))
    expect(with_record(LINES, 4, data, own.hex()), "bad_encoding", 4)


def test_truncated_record():
    expect(with_record(LINES, 2, record_bytes(2)[:-1]), "bad_encoding", 2)


@pytest.mark.parametrize("field", ["height", "hash", "hash_upper", "ledger_of_head"])
def test_line_fields_disagreeing_with_the_record(field):
    lines = list(LINES)
    obj = json.loads(lines[2])
    if field == "height":
        obj["height"] = 7
    elif field == "hash":
        obj["hash"] = json.loads(lines[1])["hash"]
    elif field == "hash_upper":
        obj["hash"] = obj["hash"].upper()
    if field != "ledger_of_head":
        lines[2] = json.dumps(obj, separators=(",", ":"))
        expect(lines, "bad_field", 2)
        return
    head = json.loads(lines[4])
    head["ledger"] = "election-2027"
    lines[4] = json.dumps(head, separators=(",", ":"))
    res = {r["ledger"]: r for r in results(lines)}
    assert list(res) == [LEDGER, "election-2027"]
    assert res[LEDGER]["ok"] and res[LEDGER]["records"] == 4
    assert res[LEDGER]["head"] == json.loads(LINES[3])["hash"]
    expect(lines, "bad_field", 0, ledger="election-2027")


@pytest.mark.parametrize(
    "text,code",
    [
        ("not json", "bad_encoding"),
        ("deep_json", "bad_encoding"),
        ("[1,2]", "bad_field"),
        ('{"ledger":"election-2026","height":2,"hash":"00"}', "bad_field"),
        ("extra", "bad_field"),
        ("height_bool", "bad_field"),
        ("record_int", "bad_field"),
        ("record_not_base64", "bad_encoding"),
        ("record_unpadded", "bad_encoding"),
        ("repeated_key", "bad_field"),
    ],
)
def test_malformed_lines(text, code):
    obj = json.loads(LINES[2])
    if text == "extra":
        obj["hops"] = 1
        text = json.dumps(obj)
    elif text == "height_bool":
        obj["height"] = True
        text = json.dumps(obj)
    elif text == "record_int":
        obj["record"] = 5
        text = json.dumps(obj)
    elif text == "record_not_base64":
        obj["record"] = obj["record"][:-4] + "!!!!"
        text = json.dumps(obj)
    elif text == "record_unpadded":
        obj["record"] = obj["record"][:-1]
        text = json.dumps(obj)
    elif text == "deep_json":
        text = "[" * 100_000
    elif text == "repeated_key":
        text = LINES[2][:-1] + ',"height":2}'
    expect([*LINES[:2], text, *LINES[3:]], code, 2)


def test_empty_lines_are_ignored():
    assert only([*LINES[:2], "", *LINES[2:], ""])["ok"]


# --------------------------------------------------------------------------------------
# Appending records to the committed ledger (kind checks)
# --------------------------------------------------------------------------------------


def _append(kind: str, ledger: str = LEDGER) -> list:
    content = {
        "author": "E-7f3a91",
        "kind": kind,
        "ledger": ledger,
        "payload": {"electronic_id": "E-7f3a91"},
        "request_id": "req-5",
        "ts": 1790000005000,
        "v": 1,
    }
    data, own = seal(ov.encode_canonical(content), bytes.fromhex(HEAD), 5, DIFFICULTY, 1790000005007)
    return [*LINES, make_line(LEDGER, 5, own.hex(), data)], own


def test_appended_valid_record():
    lines, own = _append("withdraw")
    assert only(lines) == {"ledger": LEDGER, "records": 6, "head": own.hex(), "ok": True, "error": None}


def test_appended_unknown_kind():
    lines, _ = _append("vote")
    expect(lines, "unknown_kind", 5)


def test_appended_genesis_after_height_0():
    lines, _ = _append("genesis")
    expect(lines, "bad_genesis", 5)


def test_record_of_another_ledger():
    lines, _ = _append("cast", ledger="fund-1")
    # In an export the line would disagree with the record ...
    expect(lines, "bad_field", 5)
    # ... in a plain list of records of one ledger, check 2 catches it.
    res = ov.verify_records(LEDGER, [base64.b64decode(json.loads(t)["record"]) for t in lines])
    assert (res["ok"], res["error"]["code"], res["error"]["height"]) == (False, "wrong_ledger", 5)
    assert res["head"] == HEAD
    res = ov.verify_records("fund-1", [record_bytes(i) for i in range(5)])
    assert (res["error"]["code"], res["error"]["height"]) == ("wrong_ledger", 0)
    assert ov.verify_records(LEDGER, [record_bytes(i) for i in range(5)])["ok"]


# --------------------------------------------------------------------------------------
# Fresh ledgers (low difficulty) for genesis, field and size rules
# --------------------------------------------------------------------------------------

NAME = "test-ledger"


def genesis_payload(**over) -> dict:
    payload = {"difficulty": 0, "kinds": ["cast", "note"], "rules": {}}
    payload.update(over)
    return {k: v for k, v in payload.items() if v is not _DROP}


class _Drop:
    def __repr__(self) -> str:
        return "DROP"


_DROP = _Drop()


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
        body = content if isinstance(content, bytes) else ov.encode_canonical(content, max_depth=None)
        extra = dict((overrides or {}).get(height, {}))
        record_prev = extra.pop("prev", prev)
        nonce = extra.pop("nonce", None)
        data, own = seal(body, record_prev, height, difficulty, 1000 + height, "ingest-1", nonce, extra)
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
        ("origin", "Ingest"),
        ("origin", ""),
        ("origin", b"ingest-1"),
    ],
    ids=str,
)
def test_bad_record_field(field, value):
    expect(chain(small(), overrides={1: {field: value}}), "bad_field", 1, ledger=NAME)


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


def test_size_limits():
    at_limit = _sized_content(65_536)
    over = _sized_content(65_537)
    genesis = make_content("genesis", genesis_payload())
    assert only(chain([genesis, at_limit]))["ok"]
    expect(chain([genesis, over]), "too_large", 1, ledger=NAME)
    lines = chain([genesis, make_content("note", {"x": "x" * 1000})])
    assert only(lines)["ok"]
    size = len(base64.b64decode(json.loads(lines[1])["record"]))
    assert size - 1 > len(base64.b64decode(json.loads(lines[0])["record"]))
    res = ov.verify_lines(lines, max_record_bytes=size - 1)[0]
    assert (res["error"]["code"], res["error"]["height"]) == ("too_large", 1)


def _nested(levels: int, leaf: object) -> object:
    for _ in range(levels):
        leaf = [leaf]
    return leaf


def test_depth_limit_in_a_payload():
    genesis = make_content("genesis", genesis_payload())
    # content map + payload map + 13 arrays: the integer is inside 15 containers.
    assert only(chain([genesis, make_content("note", {"d": _nested(13, 0)})]))["ok"]
    # ... 16 nested containers (the innermost empty) is still "depth 16".
    assert only(chain([genesis, make_content("note", {"d": _nested(13, [])})]))["ok"]
    # A value inside 16 containers is refused.
    expect(chain([genesis, make_content("note", {"d": _nested(14, 0)})]), "non_canonical", 1, ledger=NAME)


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


@pytest.mark.parametrize("value", [1.5, float("nan"), object(), {1: 2}, {b"k": 1}, 2**64, -(2**63) - 1, "\ud800"])
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
        ("d4 01 00", "bad_encoding"),
        ("c7 00 01", "bad_encoding"),
        ("d6 ff 00000000", "bad_encoding"),
        ("a1 ff", "bad_encoding"),
        ("a3 eda080", "bad_encoding"),
        ("a2 c0af", "bad_encoding"),
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
        ("82 a161 00 a161 00", "non_canonical"),
        ("82 a162 00 a161 00", "non_canonical"),
        ("82 a26161 00 a161 00", "non_canonical"),
        ("00 00", "non_canonical"),
        # Precedence (assumption): anything that is not valid msgpack wins over a
        # canonical-form fault that comes earlier in the input.
        ("92 cc05 a1ff", "bad_encoding"),
        ("92 cc05 d40100", "bad_encoding"),
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
    assert ov.decode_canonical(b"\x91" * 15 + b"\x00") == _nested(15, 0)
    assert ov.decode_canonical(b"\x91" * 15 + b"\x90") == _nested(15, [])
    with pytest.raises(ov.VerifyError) as err:
        ov.decode_canonical(b"\x91" * 16 + b"\x00")
    assert err.value.code == "non_canonical"


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def _cli(path: Path) -> tuple:
    proc = subprocess.run(
        [sys.executable, str(HERE / "outsider_verify.py"), str(path)], capture_output=True, text=True, check=False
    )
    return proc.returncode, proc.stdout


def test_cli_valid(tmp_path):
    code, out = _cli(HERE / "ledger.jsonl")
    assert code == 0
    assert json.loads(out) == [{"ledger": LEDGER, "records": 5, "head": HEAD, "ok": True, "error": None}]


def test_cli_invalid(tmp_path):
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(LINES[:2] + LINES[3:]) + "\n", encoding="utf-8")
    code, out = _cli(path)
    assert code == 1
    (res,) = json.loads(out)
    assert (res["ok"], res["error"]["code"], res["error"]["height"], res["head"]) == (
        False,
        "height_gap",
        2,
        json.loads(LINES[1])["hash"],
    )


def test_cli_invalid_utf8_line(tmp_path):
    path = tmp_path / "export.jsonl"
    raw = "\n".join(LINES).encode("utf-8") + b"\n"
    path.write_bytes(raw.replace(b'"height":3,', b'"height":3,"x":"\xff",'))
    code, out = _cli(path)
    assert code == 1
    (res,) = json.loads(out)
    assert (res["error"]["code"], res["error"]["height"]) == ("bad_encoding", 3)


def test_cli_usage():
    proc = subprocess.run([sys.executable, str(HERE / "outsider_verify.py")], capture_output=True, check=False)
    assert proc.returncode == 2
