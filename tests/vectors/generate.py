"""Write the protocol test vectors (docs/PROTOCOL.md) from fixed inputs.

    .venv/bin/python tests/vectors/generate.py

The vectors are committed; tests/vectors/test_vectors.py rebuilds them in memory and
fails if our code no longer produces the same bytes.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import msgpack

from vledger.config.settings import Limits
from vledger.node.export import StoredRecord, encode_checkpoint_line, encode_line
from vledger.node.key_rotation import ROTATION_KIND, rotation_message, rotation_payload
from vledger.node.ledger import LedgerRules
from vledger.node.node_keys import NodeKeys, ProvenRecord
from vledger.node.note import ALG_COSIGNATURE_V1, ALG_ED25519, Checkpoint, Note, SignerKey, cosign, sign
from vledger.node.receipt import Receipt, RotationProof
from vledger.node.record import ZERO_LINK, Content, Entry, Record, link_of
from vledger.node.rules.admin import admin_genesis_rules
from vledger.node.sealed import BUCKETS, pad, seal, siv_encrypt
from vledger.node.tree import Frontier, consistency_proof, inclusion_proof, leaf_hash, tile_path
from vledger.node.work import solve, work_digest

HERE = Path(__file__).parent
LEDGER = "election-2026"
ORIGIN = "ingest-1"
DIFFICULTY = 16
T0 = 1_790_000_000_000  # 2026-09-21, in milliseconds

RULES = LedgerRules(
    kinds=("cast", "note", "register", "uncast", "withdraw"),
    difficulty=DIFFICULTY,
    rules={"choices": ["alice", "bob", "carol"], "closes": T0 + 86_400_000, "opens": T0},
)

# Payloads chosen to exercise the canonical encoding: non-ASCII text, key order by UTF-8
# bytes ("B" < "a" < "aa" < "é"), every integer width, negative numbers, binary, nesting.
PAYLOADS: list[tuple[str, str, dict[str, Any]]] = [
    ("register", "authority", {"electronic_id": "E-7f3a91", "voter_id": "V-000123"}),
    ("cast", "E-7f3a91", {"choice": "bob", "electronic_id": "E-7f3a91", "note": "Zoë 🗳"}),
    (
        "note",
        "observer.1",
        {
            "B": None,
            "a": [True, False, -1, -33, 127, 128, 255, 256, 65535, 65536, 2**32, -(2**63), 2**64 - 1],
            "aa": {"nested": {"deeper": [b"\x00\xff", ""]}},
            "é": "x" * 40,
        },
    ),
    ("uncast", "E-7f3a91", {"electronic_id": "E-7f3a91"}),
    (
        "note",
        "observer.2",
        {
            # str16, bin16, array16 and map16 headers, and nesting to the last allowed level
            "array16": list(range(16)),
            "bin16": bytes(range(256)) + b"\x00" * 44,
            "deep": [[[[[[[[[[[[[[]]]]]]]]]]]]]],  # levels 2..15: the innermost is at 15
            "map16": {f"k{i:02d}": i for i in range(16)},
            "str16": "ü" * 150,
        },
    ),
]


def build() -> list[Record]:
    limits = Limits()
    genesis = Entry.prepare(RULES.genesis_content(LEDGER, "admin", "create-1", T0), DIFFICULTY, limits)
    records = [genesis.place(0, ZERO_LINK, T0 + 5, ORIGIN)]
    for i, (kind, author, payload) in enumerate(PAYLOADS, start=1):
        content = Content(LEDGER, kind, payload, author, f"req-{i}", T0 + 1000 * i)
        entry = Entry.prepare(content, DIFFICULTY, limits)
        records.append(entry.place(i, records[-1].link, T0 + 1000 * i + 7, ORIGIN))
    return records


def vector(record: Record) -> dict[str, Any]:
    return {
        "height": record.height,
        "content_hex": record.content_bytes.hex(),
        "checksum_hex": record.checksum.hex(),
        "nonce": record.nonce,
        "work_hex": work_digest(record.checksum, record.nonce).hex(),
        "prev_hex": record.prev.hex(),
        "accepted": record.accepted,
        "origin": record.origin,
        "link_hex": record.link.hex(),
        "record_hex": record.encode().hex(),
    }


def export_line(record: Record) -> str:
    return encode_line(StoredRecord(record, record.encode())).decode("utf-8")


# --- invalid cases ---------------------------------------------------------------------
# Each case is the valid ledger with one fault, built with raw msgpack and hashlib so that
# a fault can be non-canonical, and re-placed (checksum, work, link) as far as the case says,
# so that exactly the intended check is the first to fail.


def _raw_line(ledger: str, height: int, link: bytes, data: bytes) -> str:
    line = {"ledger": ledger, "height": height, "hash": link.hex(), "record": base64.b64encode(data).decode()}
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n"


def _outer(record: Record, **fields: Any) -> dict[str, Any]:
    value = {
        "accepted": record.accepted,
        "checksum": record.checksum,
        "content": record.content_bytes,
        "height": record.height,
        "link": record.link,
        "nonce": record.nonce,
        "origin": record.origin,
        "prev": record.prev,
    }
    value.update(fields)
    return value


def _replace_content(record: Record, content: bytes, *, work: bool = True, link: bool = True) -> dict[str, Any]:
    """The record with other content bytes: checksum always, then work and link if asked."""
    checksum = hashlib.sha256(content).digest()
    nonce = solve(checksum, DIFFICULTY) if work else record.nonce
    new_link = (
        link_of(record.prev, checksum, record.height, nonce, record.accepted, record.origin) if link else record.link
    )
    return _outer(record, content=content, checksum=checksum, nonce=nonce, link=new_link)


def _content_map(record: Record, **payload: Any) -> dict[str, Any]:
    value = record.content.to_map()
    value["payload"] = {**value["payload"], **payload}
    return value


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def invalid_cases(records: list[Record]) -> list[dict[str, Any]]:
    def export(replace: dict[int, str] | None = None, order: list[int] | None = None) -> str:
        lines = [export_line(r) for r in records]
        for height, line in (replace or {}).items():
            lines[height] = line
        return "".join(lines[i] for i in (order if order is not None else range(len(lines))))

    def with_record(height: int, value: dict[str, Any] | bytes) -> str:
        data = value if isinstance(value, bytes) else _pack(value)
        link = value["link"] if isinstance(value, dict) else records[height].link
        return export({height: _raw_line(LEDGER, height, link, data)})

    r2 = records[2]
    voted = _content_map(r2, choice="carol")
    float_content = _pack(_sorted(_content_map(r2, weight=1.5)))
    cases = [
        (
            "content-byte-flipped",
            "one byte of a string in record 2's content changed",
            with_record(2, _outer(r2, content=r2.content_bytes.replace(b"bob", b"bib"))),
            "bad_checksum",
            2,
        ),
        (
            "vote-changed-checksum-recomputed",
            "record 2's vote changed and its checksum recomputed",
            with_record(2, _replace_content(r2, _pack(_sorted(voted)), work=False, link=False)),
            "insufficient_work",
            2,
        ),
        (
            "vote-changed-work-recomputed",
            "the same with a valid proof of work: only the link betrays it",
            with_record(2, _replace_content(r2, _pack(_sorted(voted)), link=False)),
            "bad_link",
            2,
        ),
        (
            "vote-changed-link-recomputed",
            "the same with the record's own link recomputed: record 3 betrays it",
            with_record(2, _replace_content(r2, _pack(_sorted(voted)))),
            "bad_link",
            3,
        ),
        ("record-deleted", "record 2 deleted", export(order=[0, 1, 3, 4, 5]), "height_gap", 3),
        ("records-swapped", "records 2 and 3 swapped", export(order=[0, 1, 3, 2, 4, 5]), "height_gap", 3),
        ("record-repeated", "record 2 repeated", export(order=[0, 1, 2, 2, 3, 4, 5]), "height_gap", 2),
        (
            "float-in-payload",
            "a float in record 2's payload, everything re-placed",
            with_record(2, _replace_content(r2, float_content)),
            "non_canonical",
            2,
        ),
        (
            "extension-in-payload",
            "an extension type in record 2's payload, everything re-placed",
            with_record(2, _replace_content(r2, _pack(_sorted(_content_map(r2, blob=msgpack.ExtType(7, b"x")))))),
            "non_canonical",
            2,
        ),
        (
            "integer-map-key",
            "an integer map key in record 2's payload",
            with_record(2, _replace_content(r2, _pack(_sorted(_content_map(r2))).replace(b"\xa6choice", b"\x07", 1))),
            "non_canonical",
            2,
        ),
        (
            "invalid-utf8",
            "invalid UTF-8 in a string of record 2's content",
            with_record(2, _outer(r2, content=r2.content_bytes.replace(b"Zo\xc3\xab", b"Zo\xc3\x28"))),
            "bad_encoding",
            2,
        ),
        (
            "record-keys-unsorted",
            "record 2's map with its keys out of order",
            with_record(2, dict(reversed(list(_outer(r2).items())))),
            "non_canonical",
            2,
        ),
        (
            "nonce-long-form",
            "record 2's nonce as a uint64 where a shorter form fits",
            with_record(
                2, _pack(_outer(r2, nonce=0)).replace(b"\xa5nonce\x00", b"\xa5nonce\xcf" + r2.nonce.to_bytes(8, "big"))
            ),
            "non_canonical",
            2,
        ),
        (
            "version-2",
            "record 2's content says format version 2",
            with_record(
                2,
                _replace_content(r2, _pack({**r2.content.to_map(), "v": 2} | {"payload": _sorted(r2.content.payload)})),
            ),
            "bad_field",
            2,
        ),
        (
            "origin-capitals",
            "record 2's origin is not a name",
            with_record(2, _outer(r2, origin="Ingest-1")),
            "bad_field",
            2,
        ),
        (
            "line-hash-differs",
            "record 2's line names another hash",
            export({2: _raw_line(LEDGER, 2, records[3].link, r2.encode())}),
            "bad_field",
            2,
        ),
    ]
    r5 = records[5]
    kind_content = _pack(_sorted({**r5.content.to_map(), "kind": "tally"}))
    cases.append(
        (
            "kind-not-allowed",
            "the last record's kind is not one of the genesis kinds, re-placed",
            with_record(5, _replace_content(r5, kind_content)),
            "unknown_kind",
            5,
        )
    )
    genesis = records[0]
    bad_rules = {**genesis.content.to_map(), "payload": {**genesis.content.payload, "difficulty": 65}}
    cases.append(
        (
            "genesis-difficulty-65",
            "the genesis asks for 65 bits, over the limit of 64",
            with_record(0, _replace_content(genesis, _pack(_sorted(bad_rules)))),
            "bad_genesis",
            0,
        )
    )
    cases.extend(_line_and_depth_cases(records, export, with_record))
    return [
        {
            "name": name,
            "description": text,
            "export": body,
            "expect": {"ledger": LEDGER, "code": code, "height": height},
        }
        for name, text, body, code, height in cases
    ]


def tree_vector(records: list[Record]) -> dict[str, Any]:
    """The ledger's Merkle tree (PROTOCOL section 12): leaves, roots, one proof of each kind, a tile."""
    leaves = [leaf_hash(r.encode()) for r in records]
    roots = []
    levels: dict[tuple[int, int], bytes] = {}
    frontier = Frontier()
    for leaf in leaves:
        levels.update(((level, index), node) for level, index, node in frontier.append(leaf))
        roots.append(frontier.root())
    size = len(leaves)

    def hash_at(level: int, index: int) -> bytes:
        return levels[(level, index)]

    return {
        "ledger": LEDGER,
        "size": size,
        "leaf_hex": [leaf.hex() for leaf in leaves],
        "root_hex_by_size": {str(n): root.hex() for n, root in enumerate(roots, start=1)},
        "inclusion": {
            "index": 2,
            "size": size,
            "proof_hex": [h.hex() for h in inclusion_proof(2, size, hash_at)],
        },
        "consistency": {
            "old_size": 3,
            "new_size": size,
            "proof_hex": [h.hex() for h in consistency_proof(3, size, hash_at)],
        },
        "tile": {"path": tile_path(0, 0, size), "hashes_hex": b"".join(leaves).hex()},
    }


def _line_and_depth_cases(records: list[Record], export: Any, with_record: Any) -> list[tuple[str, str, str, str, int]]:
    """Export-line faults (section 5), size limits, and the points sections 1 and 4 settle."""
    r2 = records[2]
    line2 = export_line(r2)
    line3 = export_line(records[3])
    assert line3.endswith('=="}\n')
    unused = line3[:-6] + chr(ord(line3[-6]) + 1) + line3[-5:]  # a lenient decoder reads the same bytes
    other = {**r2.content.to_map(), "ledger": "election-2027"}
    other_record = _replace_content(r2, _pack(_sorted(other)))
    payload = _pack(_sorted(_content_map(r2)))
    ext_then_bad_utf8 = payload.replace(b"\xa6choice\xa3bob", b"\xa6choice\xd4\x07\x00", 1).replace(
        b"Zo\xc3\xab", b"Zo\xc3\x28"
    )
    timestamp = payload.replace(b"\xa6choice\xa3bob", b"\xa6choice\xd4\xff\x00", 1)
    deep_nonce = _pack(_outer(r2, nonce=0)).replace(b"\xa5nonce\x00", b"\xa5nonce" + b"\x91" * 2_000 + b"\x00")
    key_in_nonce = _pack(_outer(r2, nonce=0)).replace(b"\xa5nonce\x00", b"\xa5nonce\x81\x91\x00\x00")
    repeated = b"\x89" + _pack(_outer(r2))[1:] + b"\xa6origin\xa8Ingest-1"
    return [
        (
            "record-too-large",
            "record 2 is 81,921 bytes, one over the protocol's limit",
            export({2: _raw_line(LEDGER, 2, r2.link, _pack(_outer(r2)) + bytes(81_921 - len(r2.encode())))}),
            "too_large",
            2,
        ),
        (
            "line-too-long",
            "line 3 (record 2) is longer than any record's line (109,421 bytes)",
            export({2: line2[:-3] + "A" * 109_421 + '"}\n'}),
            "too_large",
            2,
        ),
        ("line-extra-key", "line 3 has a fifth key", export({2: line2[:-2] + ',"hops":1}\n'}), "bad_line", 2),
        (
            "line-repeated-key",
            "line 3 repeats its height key",
            export({2: line2[:-2] + ',"height":2}\n'}),
            "bad_line",
            2,
        ),
        (
            "line-spaced",
            "line 3 has a space after a colon",
            export({2: line2.replace('"height":', '"height": ')}),
            "bad_line",
            2,
        ),
        ("line-crlf", "line 3 ends in CR LF", export({2: line2[:-1] + "\r\n"}), "bad_line", 2),
        (
            "line-escaped-character",
            "line 3 spells a character of its ledger as a JSON escape",
            export({2: line2.replace('"election-2026"', '"\\u0065lection-2026"')}),
            "bad_line",
            2,
        ),
        (
            "line-lone-surrogate",
            "line 3 names the ledger election-2026 followed by a lone surrogate escape",
            export({2: line2.replace('"election-2026"', '"election-2026\\ud800"')}),
            "bad_line",
            2,
        ),
        (
            "line-deep-nesting",
            "line 3 has an extra key nested 2,000 arrays deep",
            export({2: line2[:-2] + ',"x":' + "[" * 2_000 + "]" * 2_000 + "}\n"}),
            "bad_line",
            2,
        ),
        (
            "line-huge-height",
            "line 3's height has 5,000 digits",
            export({2: line2.replace('"height":2', '"height":' + "9" * 5_000)}),
            "bad_line",
            2,
        ),
        ("line-base64-unused-bits", "line 4's base64 has a non-zero unused bit", export({3: unused}), "bad_line", 3),
        ("empty-last-line", "the file ends with an empty line", export() + "\n", "bad_line", 6),
        (
            "line-height-differs",
            "line 3 says height 7; the error names the record's height",
            export({2: line2.replace('"height":2', '"height":7')}),
            "bad_field",
            2,
        ),
        (
            "record-of-another-ledger",
            "line 3 carries a record of ledger election-2027, re-placed",
            with_record(2, other_record),
            "wrong_ledger",
            2,
        ),
        ("record-key-repeated", "record 2's map repeats the key origin", with_record(2, repeated), "non_canonical", 2),
        (
            "key-inside-a-field",
            "an array as a map key inside record 2's nonce",
            with_record(2, key_in_nonce),
            "non_canonical",
            2,
        ),
        (
            "field-nested-past-2000",
            "record 2's nonce is nested 2,000 arrays deep",
            with_record(2, deep_nonce),
            "bad_field",
            2,
        ),
        (
            "invalid-utf8-after-an-extension",
            "an extension type in record 2's payload, and invalid UTF-8 after it",
            with_record(2, _replace_content(r2, ext_then_bad_utf8)),
            "bad_encoding",
            2,
        ),
        (
            "malformed-timestamp",
            "a timestamp extension with 1 byte of data in record 2's payload",
            with_record(2, _replace_content(r2, timestamp)),
            "bad_encoding",
            2,
        ),
    ]


def receipt_vector(records: list[Record]) -> dict[str, Any]:
    """A receipt (PROTOCOL section 14) of the record at height 2, under the checkpoint of
    note.json (``vledger``: signed by its log key, cosigned by its two witnesses), and receipts
    that each break one check, with the code a verifier reports."""
    signed = json.loads((HERE / "note.json").read_text(encoding="utf-8"))["vledger"]
    note = signed["cosigned"].encode("utf-8")
    leaves = [leaf_hash(r.encode()) for r in records]
    levels: dict[tuple[int, int], bytes] = {}
    frontier = Frontier()
    for leaf in leaves:
        levels.update(((level, index), node) for level, index, node in frontier.append(leaf))
    size = len(leaves)
    assert frontier.root().hex() == signed["root_hex"], "note.json signs another tree: rerun generate_note.py"

    def receipt(index: int, **changes: Any) -> Receipt:
        proof = inclusion_proof(index, size, lambda level, i: levels[(level, i)])
        return dataclasses.replace(Receipt.of(records[index].encode(), proof, note), **changes)

    good = receipt(2)
    text = note.decode("utf-8")
    body = text[: text.index("\n\n") + 1]
    impostor = SignerKey(signed["origin"], ALG_ED25519, bytes(range(32)))  # a forked view's signer
    forked = Note(body, (sign(body, impostor),)).encode()
    only_log = text[: text.index("\n\u2014 local/witness/")] + "\n"
    bad = [
        ("the index of another height", good.encode().replace(b'"index":2,', b'"index":3,'), "bad_receipt"),
        ("spaces after the separators", good.encode().replace(b'"v":1,', b'"v": 1,'), "bad_receipt"),
        ("the hash of another record", receipt(2, hash=records[3].link).encode(), "bad_receipt"),
        ("the proof of another leaf", receipt(2, proof=receipt(3).proof).encode(), "bad_proof"),
        ("a proof one hash short", receipt(2, proof=good.proof[:-1]).encode(), "bad_proof"),
        ("a checkpoint another key signed", receipt(2, checkpoint=forked).encode(), "unverified_note"),
        ("no witness cosigned (quorum 2)", receipt(2, checkpoint=only_log.encode()).encode(), "no_quorum"),
    ]
    return {
        "source": "tests/vectors/generate.py: receipt_vector",
        "ledger": LEDGER,
        "index": 2,
        "hash_hex": records[2].link.hex(),
        "log_vkey": signed["log_vkey"],
        "witness_vkeys": [w["vkey"] for w in signed["witnesses"]],
        "quorum": 2,
        "genesis_b64": base64.b64encode(records[0].encode()).decode("ascii"),
        "receipt": good.encode().decode("utf-8"),
        "bad": [{"why": why, "receipt": data.decode("utf-8"), "code": code} for why, data, code in bad],
    }


def checkpoint_export_vector() -> dict[str, Any]:
    """Exports with checkpoint lines (PROTOCOL section 5) of a small ledger whose genesis pins
    its checkpoint key: one valid file, and files that each break one check, with its code."""
    limits = Limits()
    ledger = "audit"
    key = SignerKey(f"local/{ledger}", ALG_ED25519, bytes(range(32)))
    witness = SignerKey("local/witness/replica-1", ALG_COSIGNATURE_V1, bytes(range(32, 64)))
    rules = LedgerRules(kinds=("note",), difficulty=0, rules={"checkpoint_key": key.verifier().encode()})
    genesis = Entry.prepare(rules.genesis_content(ledger, "admin", "create-1", T0), 0, limits)
    records = [genesis.place(0, ZERO_LINK, T0 + 5, ORIGIN)]
    for i in range(1, 4):
        entry = Entry.prepare(Content(ledger, "note", {"n": i}, "admin", f"req-{i}", T0 + i), 0, limits)
        records.append(entry.place(i, records[-1].link, T0 + i + 7, ORIGIN))
    frontier = Frontier()
    roots = []
    for r in records:
        frontier.append(leaf_hash(r.encode()))
        roots.append(frontier.root())

    def note(size: int, root: bytes, signer: SignerKey = key, cosigned: bool = False) -> bytes:
        body = Checkpoint(f"local/{ledger}", size, root).body()
        lines = [sign(body, signer)] + ([cosign(body, witness, 1_790_000_000).note_signature()] if cosigned else [])
        return Note(body, tuple(lines)).encode()

    def export(after: dict[int, bytes]) -> str:
        out = []
        for r in records:
            out.append(export_line(r))
            if r.height in after:
                out.append(encode_checkpoint_line(ledger, after[r.height]).decode("utf-8"))
        return "".join(out)

    good = {2: note(3, roots[2]), 3: note(4, roots[3], cosigned=True)}
    spaced = export(good).replace('","checkpoint":', '", "checkpoint":', 1)
    not_checkpoint = Note("not a checkpoint\n", (sign("not a checkpoint\n", key),)).encode()
    cases = [
        ("valid, two checkpoints (the second cosigned)", export(good), None, None),
        ("a checkpoint before the record that completes its tree", export({1: note(3, roots[2])}), "bad_field", 2),
        ("a root that is not the tree of the records", export({2: note(3, roots[1])}), "tree_mismatch", 2),
        (
            "signed by another key than the pinned one",
            export({2: note(3, roots[2], signer=witness_log())}),
            "unverified_note",
            2,
        ),
        # A fault of the line itself names the position the next record was expected at.
        ("a space after a separator", spaced, "bad_line", 3),
        ("the note's em dash written as a JSON escape", export(good).replace("\u2014", "\\u2014", 1), "bad_line", 3),
        ("a note whose text is not a checkpoint", export({2: not_checkpoint}), "bad_field", 3),
    ]
    return {
        "source": "tests/vectors/generate.py: checkpoint_export_vector",
        "ledger": ledger,
        "records": len(records),
        "checkpoint_vkey": key.verifier().encode(),
        "cases": [{"why": why, "export": text, "code": code, "height": height} for why, text, code, height in cases],
    }


def rotation_vector() -> dict[str, Any]:
    """A ledger that rotates its checkpoint key twice (PROTOCOL 13.8): its records, the
    rotation messages, a checkpoint by each key, a receipt past both rotations, and receipts
    that each break one check, with the code a verifier reports."""
    limits = Limits()
    ledger = "audit-keys"
    origin = f"local/{ledger}"
    keys = [SignerKey(origin, ALG_ED25519, bytes(range(i, i + 32))) for i in (100, 140, 180)]
    rules = LedgerRules(
        kinds=(ROTATION_KIND, "note"), difficulty=0, rules={"checkpoint_key": keys[0].verifier().encode()}
    )
    genesis = Entry.prepare(rules.genesis_content(ledger, "admin", "create-1", T0), 0, limits)
    records = [genesis.place(0, ZERO_LINK, T0 + 5, ORIGIN)]

    def append(kind: str, payload: dict[str, Any], on: list[Record]) -> Record:
        i = len(on)
        content = Content(ledger, kind, payload, "admin", f"req-{i}", T0 + 1000 * i)
        record = Entry.prepare(content, 0, limits).place(i, on[-1].link, T0 + 1000 * i + 5, ORIGIN)
        on.append(record)
        return record

    for i in (1, 2):
        append("note", {"n": i}, records)
    append(ROTATION_KIND, rotation_payload(keys[0], keys[1].verifier()), records)  # height 3
    append("note", {"n": 4}, records)
    append(ROTATION_KIND, rotation_payload(keys[1], keys[2].verifier()), records)  # height 5
    append("note", {"n": 6}, records)
    size = len(records)
    leaves = [leaf_hash(r.encode()) for r in records]
    levels: dict[tuple[int, int], bytes] = {}
    frontier = Frontier()
    for leaf in leaves:
        levels.update(((level, index), node) for level, index, node in frontier.append(leaf))
    root = frontier.root()

    def proof(index: int) -> tuple[bytes, ...]:
        return tuple(inclusion_proof(index, size, lambda level, i: levels[(level, i)]))

    def note(key: SignerKey) -> bytes:
        body = Checkpoint(origin, size, root).body()
        return Note(body, (sign(body, key),)).encode()

    rotations = (RotationProof(3, records[3].encode(), proof(3)), RotationProof(5, records[5].encode(), proof(5)))
    good = Receipt.of(records[6].encode(), proof(6), note(keys[2]), rotations)
    forged = records[:5]
    append(ROTATION_KIND, rotation_payload(keys[0], keys[2].verifier()), forged)  # by a retired key
    replayed = records[:5]
    append(ROTATION_KIND, dict(records[3].content.payload), replayed)  # K0 -> K1 once more
    swapped = (rotations[1], rotations[0])
    bad = [
        (
            "signed by the key of size 5, retired at 6",
            dataclasses.replace(good, checkpoint=note(keys[1])),
            "retired_key",
        ),
        ("the rotations left out", dataclasses.replace(good, rotations=()), "unverified_note"),
        ("rotations out of order", dataclasses.replace(good, rotations=swapped), "bad_receipt"),
        (
            "a rotation signed by a retired key",
            dataclasses.replace(good, rotations=(rotations[0], RotationProof(5, forged[5].encode(), proof(5)))),
            "bad_rotation",
        ),
        (
            "a rotation replayed",
            dataclasses.replace(good, rotations=(rotations[0], RotationProof(5, replayed[5].encode(), proof(5)))),
            "bad_rotation",
        ),
        (
            "a rotation's proof of another leaf",
            dataclasses.replace(good, rotations=(rotations[0], RotationProof(5, records[5].encode(), proof(4)))),
            "bad_proof",
        ),
    ]

    def export(chain: list[Record], after: dict[int, bytes]) -> str:
        out = []
        for r in chain:
            out.append(export_line(r))
            if r.height in after:
                out.append(encode_checkpoint_line(ledger, after[r.height]).decode("utf-8"))
        return "".join(out)

    frontier = Frontier()
    roots = []
    for r in records:
        frontier.append(leaf_hash(r.encode()))
        roots.append(frontier.root())

    def at(size: int, key: SignerKey) -> bytes:
        body = Checkpoint(origin, size, roots[size - 1]).body()
        return Note(body, (sign(body, key),)).encode()

    exports = [
        (
            "valid: a checkpoint by each key, each at a size where it is in force",
            export(records, {2: at(3, keys[0]), 3: at(4, keys[1]), 6: at(7, keys[2])}),
            None,
            None,
        ),
        ("the old key past its rotation", export(records, {3: at(4, keys[0])}), "retired_key", 3),
        (
            "the new key before its rotation, not known yet there",
            export(records, {2: at(3, keys[1])}),
            "unverified_note",
            2,
        ),
        ("a rotation signed by a retired key", export(forged, {}), "bad_rotation", 5),
        ("a rotation replayed", export(replayed, {}), "bad_rotation", 5),
    ]
    return {
        "source": "tests/vectors/generate.py: rotation_vector",
        "exports": [
            {"why": why, "export": text, "code": code, "height": height} for why, text, code, height in exports
        ],
        "ledger": ledger,
        "keys": [{"vkey": k.verifier().encode(), "skey": k.encode()} for k in keys],
        "records_b64": [base64.b64encode(r.encode()).decode("ascii") for r in records],
        "rotations": [
            {"height": h, "message_hex": rotation_message(origin, keys[i].verifier(), keys[i + 1].verifier()).hex()}
            for i, h in enumerate((3, 5))
        ],
        # [checkpoint size, index of the key in force at that size]
        "key_in_force": [[0, 0], [3, 0], [4, 1], [5, 1], [6, 2], [7, 2]],
        "checkpoints": {"by_key_2": note(keys[2]).decode("utf-8"), "by_key_0": note(keys[0]).decode("utf-8")},
        "receipt": good.encode().decode("utf-8"),
        "bad": [{"why": why, "receipt": r.encode().decode("utf-8"), "code": code} for why, r, code in bad],
    }


def node_keys_vector() -> dict[str, Any]:
    """A witness whose Ed25519 key rotated (PROTOCOL 16.6, 14.2, 14.3): the admin ledger with its
    key_rotation record and an admin checkpoint, a receipt cosigned by the witness's new key and
    another witness that verifies with the admin key, and receipts that each break one check."""
    limits = Limits()
    cluster, ledger = "local", "audit-witnessed"
    origin = f"{cluster}/{ledger}"
    home = SignerKey(origin, ALG_ED25519, bytes(range(200, 232)))
    admin_home = SignerKey(f"{cluster}/admin", ALG_ED25519, bytes(range(200, 232)))  # the same home key
    w0 = SignerKey(f"{cluster}/witness/replica-1", ALG_COSIGNATURE_V1, bytes([21]) * 32)
    w0_new = SignerKey(w0.name, ALG_COSIGNATURE_V1, bytes([22]) * 32)
    w1 = SignerKey(f"{cluster}/witness/observer-1", ALG_COSIGNATURE_V1, bytes([23]) * 32)
    rotated_at, until = T0 + 60_000, T0 + 3_660_000

    def chain(name: str, genesis: Content, rest: list[tuple[str, dict[str, Any], int]]) -> list[Record]:
        records = [Entry.prepare(genesis, 0, limits).place(0, ZERO_LINK, T0 + 5, ORIGIN)]
        for kind, payload, accepted in rest:
            content = Content(name, kind, payload, "admin", f"req-{len(records)}", accepted - 5)
            records.append(Entry.prepare(content, 0, limits).place(len(records), records[-1].link, accepted, ORIGIN))
        return records

    def tree_of(records: list[Record]) -> tuple[bytes, Any]:
        levels: dict[tuple[int, int], bytes] = {}
        frontier = Frontier()
        for r in records:
            levels.update(((level, index), node) for level, index, node in frontier.append(leaf_hash(r.encode())))
        size = len(records)
        return frontier.root(), lambda index: tuple(inclusion_proof(index, size, lambda lv, i: levels[(lv, i)]))

    rotation = {"node": "replica-1", "curve": "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7", "via": ""}
    rotation |= {"sign": w0_new.verifier().public_key.hex(), "until": until}
    account = {"account": "ops", "op": "add", "role": "writer", "enabled": True, "keys": [], "via": ""}
    admin = chain(
        "admin",
        admin_genesis_rules().genesis_content("admin", "admin", "admin-genesis", T0),
        [("account", account, T0 + 1000), ("key_rotation", rotation, rotated_at)],
    )
    admin_root, admin_proof = tree_of(admin)
    admin_body = Checkpoint(admin_home.name, len(admin), admin_root).body()
    admin_note = Note(admin_body, (sign(admin_body, admin_home),)).encode()
    forged_body = Checkpoint(admin_home.name, len(admin), admin_root).body()
    impostor = SignerKey(admin_home.name, ALG_ED25519, bytes(range(1, 33)))
    forged_note = Note(forged_body, (sign(forged_body, impostor),)).encode()
    evidence = NodeKeys(admin_note, (ProvenRecord(2, admin[2].encode(), admin_proof(2)),))

    rules = LedgerRules(kinds=("note",), difficulty=0, rules={"checkpoint_key": home.verifier().encode()})
    records = chain(
        ledger,
        rules.genesis_content(ledger, "admin", "create-1", T0),
        [("note", {"n": i}, until + 1000 * i) for i in (1, 2, 3)],
    )
    root, proof = tree_of(records)
    body = Checkpoint(origin, len(records), root).body()
    after = until // 1000 + 10

    def note(*cosigners: tuple[SignerKey, int]) -> bytes:
        return Note(body, (sign(body, home), *(cosign(body, w, t).note_signature() for w, t in cosigners))).encode()

    def receipt(cosigned: bytes, node_keys: NodeKeys | None = evidence) -> Receipt:
        return Receipt.of(records[3].encode(), proof(3), cosigned, node_keys=node_keys)

    good = receipt(note((w0_new, after), (w1, after)))
    other_account = chain("admin", admin[0].content, [("account", account, T0 + 1000), ("account", account, T0 + 2000)])
    changed = chain(
        "admin",
        admin[0].content,
        [("account", account, T0 + 1000), ("key_rotation", rotation | {"until": until + 1}, rotated_at)],
    )
    # A verifier's CURVE key rotated too: its record's sign is "" (it has no Ed25519 key, 16.1).
    verifier_rotation = {"node": "verifier-1", "curve": "Hx?2QXp-sVk=5CrG}n4LbT$]8a@e9Ww{M6&hJ<u%", "via": ""}
    verifier_rotation |= {"sign": "", "until": until}

    def with_second_rotation(second: dict[str, Any]) -> NodeKeys:
        """The evidence of an admin ledger with one more key_rotation, ``second``, after the witness's."""
        longer = chain(
            "admin", admin[0].content, [("account", account, T0 + 1000), ("key_rotation", rotation, rotated_at),
                                        ("key_rotation", second, rotated_at + 1000)],
        )  # fmt: skip
        longer_root, longer_proof = tree_of(longer)
        longer_body = Checkpoint(admin_home.name, len(longer), longer_root).body()
        longer_note = Note(longer_body, (sign(longer_body, admin_home),)).encode()
        return NodeKeys(longer_note, tuple(ProvenRecord(i, longer[i].encode(), longer_proof(i)) for i in (2, 3)))

    bad = [
        ("the old key, stamped before until", receipt(note((w0, until // 1000 - 1), (w1, after))), None),
        ("the old key, stamped at until", receipt(note((w0, until // 1000), (w1, after))), "bad_cosignature"),
        ("the node keys left out", receipt(good.checkpoint, None), "no_quorum"),
        (
            "the admin checkpoint by another key",
            receipt(good.checkpoint, NodeKeys(forged_note, evidence.rotations)),
            "unverified_note",
        ),
        (
            "a rotation record changed",
            receipt(good.checkpoint, NodeKeys(admin_note, (ProvenRecord(2, changed[2].encode(), admin_proof(2)),))),
            "bad_proof",
        ),
        (
            "a record that is no key_rotation",
            receipt(
                good.checkpoint, NodeKeys(admin_note, (ProvenRecord(2, other_account[2].encode(), admin_proof(2)),))
            ),
            "bad_receipt",
        ),
        (
            "a record of the ledger itself",
            receipt(good.checkpoint, NodeKeys(admin_note, (ProvenRecord(2, records[2].encode(), admin_proof(2)),))),
            "wrong_ledger",
        ),
    ]

    def stated(cosigned: Any) -> NodeKeys:
        """The evidence of an admin ledger whose witness rotation states what the old key had
        ``cosigned`` (ledger -> size, 16.6)."""
        stating = chain(
            "admin", admin[0].content, [("account", account, T0 + 1000),
                                        ("key_rotation", rotation | {"cosigned": cosigned}, rotated_at)],
        )  # fmt: skip
        stating_root, stating_proof = tree_of(stating)
        stating_body = Checkpoint(admin_home.name, len(stating), stating_root).body()
        stating_note = Note(stating_body, (sign(stating_body, admin_home),)).encode()
        return NodeKeys(stating_note, (ProvenRecord(2, stating[2].encode(), stating_proof(2)),))

    backdated = note((w0, until // 1000 - 1), (w1, after))  # the old key, stamped inside its window
    bad += [
        ("the old key, on a checkpoint its rotation says it cosigned", receipt(backdated, stated({ledger: 4})), None),
        (
            "the old key, on a larger checkpoint than its rotation says it cosigned",
            receipt(backdated, stated({ledger: 3})),
            "no_quorum",
        ),
        ("the old key, on a ledger its rotation does not list", receipt(backdated, stated({"other": 9})), "no_quorum"),
        ("the old key, its rotation saying it cosigned nothing", receipt(backdated, stated({})), "no_quorum"),
        (
            "the new key beside the old one's uncounted line",
            receipt(note((w0, until // 1000 - 1), (w0_new, after), (w1, after)), stated({})),
            None,
        ),
        ("a rotation whose cosigned size is 0", receipt(good.checkpoint, stated({ledger: 0})), "bad_payload"),
        ("a rotation whose cosigned is a list", receipt(good.checkpoint, stated([[ledger, 4]])), "bad_payload"),
    ]
    bad += [
        (
            "a verifier's rotation (sign empty) beside the witness's",
            receipt(good.checkpoint, with_second_rotation(verifier_rotation)),
            None,
        ),
        (
            "a rotation whose sign is null",
            receipt(good.checkpoint, with_second_rotation(verifier_rotation | {"sign": None})),
            "bad_payload",
        ),
        (
            "a rotation whose sign is upper-case hex",
            receipt(good.checkpoint, with_second_rotation(verifier_rotation | {"sign": "AB" * 32})),
            "bad_payload",
        ),
    ]
    # An observer's rotation states what its replaced key had tallied besides what it cosigned
    # (16.1, 16.6): tallies are no part of a receipt, so only its form is checked here. Its window
    # is still open at `after`, and its old key's line counts on this checkpoint, no larger than
    # the size stated.
    w1_new = SignerKey(w1.name, ALG_COSIGNATURE_V1, bytes([24]) * 32)
    observer_rotation = {"node": "observer-1", "curve": "Qp5^x!Lk8Zr$2Wm@Nv7&Tb4Hc9Jd3Fg6Ys1Ue0Ra", "via": ""}
    observer_rotation |= {"sign": w1_new.verifier().public_key.hex(), "until": (after + 3600) * 1000}
    observer_rotation |= {"cosigned": {ledger: 4}, "tallied": {ledger: 3, "admin": 0}}
    bad += [
        (
            "an observer's rotation stating what its old key tallied",
            receipt(good.checkpoint, with_second_rotation(observer_rotation)),
            None,
        ),
        (
            "a rotation whose tallied height is negative",
            receipt(good.checkpoint, with_second_rotation(observer_rotation | {"tallied": {ledger: -1}})),
            "bad_payload",
        ),
        (
            "a rotation whose tallied is null",
            receipt(good.checkpoint, with_second_rotation(observer_rotation | {"tallied": None})),
            "bad_payload",
        ),
        (
            "a rotation whose tallied is a list",
            receipt(good.checkpoint, with_second_rotation(observer_rotation | {"tallied": [[ledger, 3]]})),
            "bad_payload",
        ),
    ]
    return {
        "source": "tests/vectors/generate.py: node_keys_vector",
        "ledger": ledger,
        "genesis_b64": base64.b64encode(records[0].encode()).decode("ascii"),
        "admin_key": admin_home.verifier().encode(),
        "witnesses": [w0.verifier().encode(), w1.verifier().encode()],
        "rotated_witness_key": w0_new.verifier().encode(),
        "quorum": 2,
        "admin_records_b64": [base64.b64encode(r.encode()).decode("ascii") for r in admin],
        "until": until,
        "receipt": good.encode().decode("utf-8"),
        "cases": [{"why": why, "receipt": r.encode().decode("utf-8"), "code": code} for why, r, code in bad],
    }


def witness_log() -> SignerKey:
    """A log key of the right name that the genesis does not pin (a forked view's signer)."""
    return SignerKey("local/audit", ALG_ED25519, bytes(range(64, 96)))


SEAL_KEY = bytes(range(64))
SEAL_CONTEXT = "zakat"


def _spelt(prefix: str, sealed: bytes) -> str:
    return prefix + base64.b32encode(sealed).decode("ascii").rstrip("=").lower()


def sealed_vector() -> dict[str, Any]:
    """PROTOCOL 8: S2 ids as vledger writes them, S1 ids as chains hold them, and ids sealed with
    the same key and context that must not open (each authentic, so only the strict checks refuse it)."""
    context = SEAL_CONTEXT.encode()
    ids: list[dict[str, Any]] = []
    for info in ("", "A", "Zoë Ahmed, +966 5 0123 4567", "x" * 63, "x" * 64, "é" * 100):
        padded = pad(info.encode())
        sealed = siv_encrypt(SEAL_KEY, padded, context)
        assert _spelt("S2-", sealed) == seal(SEAL_KEY, info, SEAL_CONTEXT)
        ids.append(
            {
                "version": 2,
                "info": info,
                "padded_hex": padded.hex(),
                "sealed_hex": sealed.hex(),
                "id": _spelt("S2-", sealed),
            }
        )
    for info in ("A", "Zoë Ahmed, +966 5 0123 4567"):
        sealed = siv_encrypt(SEAL_KEY, info.encode(), context)
        ids.append({"version": 1, "info": info, "sealed_hex": sealed.hex(), "id": _spelt("S1-", sealed)})
    s2 = bytes.fromhex(ids[1]["sealed_hex"])
    looks_padded = ("x" * 61 + "Ā" + "\x00").encode()  # valid S1 info: Ā is c4 80, so it ends 80 00
    flipped = bytes([s2[0] ^ 1]) + s2[1:]
    refused = [
        ("S2: a bucket larger than the info needs", 3, "S2-", b"A\x80" + bytes(126), SEAL_CONTEXT),
        ("S2: a non-zero byte after the 0x80", 3, "S2-", b"A\x80" + bytes(61) + b"\x01", SEAL_CONTEXT),
        ("S2: no 0x80 mark, only zeros after the info", 3, "S2-", b"A" + bytes(63), SEAL_CONTEXT),
        ("S2: 0x81 for the mark", 3, "S2-", b"A\x81" + bytes(62), SEAL_CONTEXT),
        ("S2: information not UTF-8", 4, "S2-", b"\xff\x80" + bytes(62), SEAL_CONTEXT),
        ("S2: 65 bytes padded, not a bucket", 1, "S2-", b"A\x80" + bytes(63), SEAL_CONTEXT),
        ("S2 body given the S1 prefix: 0x80 after whole UTF-8", 4, "S1-", pad(b"A"), SEAL_CONTEXT),
        ("S1 body given the S2 prefix: its 0x80 ends inside a character", 4, "S2-", looks_padded, SEAL_CONTEXT),
        ("S2 id of 'A' under another context", 2, "S2-", pad(b"A"), "zakat-2"),
    ]
    bad = [
        {"why": why, "step": step, "context": ctx, "id": _spelt(prefix, siv_encrypt(SEAL_KEY, plain, context))}
        for why, step, prefix, plain, ctx in refused
    ]
    bad.append(
        {
            "why": "S2 id of 'A' with one bit of V changed",
            "step": 2,
            "context": SEAL_CONTEXT,
            "id": _spelt("S2-", flipped),
        }
    )
    return {
        "key_hex": SEAL_KEY.hex(),
        "context": SEAL_CONTEXT,
        "buckets": list(BUCKETS),
        "ids": ids,
        "refused": bad,
    }


def documents(records: list[Record]) -> dict[str, str]:
    """File name -> exact text, so the test can compare what is committed."""
    vectors = {"ledger": LEDGER, "difficulty": DIFFICULTY, "records": [vector(r) for r in records]}
    return {
        "vectors.json": json.dumps(vectors, indent=2, ensure_ascii=False) + "\n",
        "tree.json": json.dumps(tree_vector(records), indent=2) + "\n",
        "ledger.jsonl": "".join(export_line(r) for r in records),
        "invalid.json": json.dumps(invalid_cases(records), indent=1, ensure_ascii=False) + "\n",
        "receipt.json": json.dumps(receipt_vector(records), indent=1, ensure_ascii=False) + "\n",
        "export_checkpoints.json": json.dumps(checkpoint_export_vector(), indent=1, ensure_ascii=False) + "\n",
        "rotation.json": json.dumps(rotation_vector(), indent=1, ensure_ascii=False) + "\n",
        "node_keys.json": json.dumps(node_keys_vector(), indent=1, ensure_ascii=False) + "\n",
        "sealed.json": json.dumps(sealed_vector(), indent=1, ensure_ascii=False) + "\n",
    }


def main() -> None:
    for name, text in documents(build()).items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
