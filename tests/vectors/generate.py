"""Write the protocol test vectors (docs/PROTOCOL.md) from fixed inputs.

    .venv/bin/python tests/vectors/generate.py

The vectors are committed; tests/vectors/test_vectors.py rebuilds them in memory and
fails if our code no longer produces the same bytes.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from vledger.config.settings import Limits
from vledger.node.ledger import LedgerRules
from vledger.node.record import ZERO_LINK, Content, Entry, Record
from vledger.node.work import work_digest

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
    line = {
        "ledger": record.ledger,
        "height": record.height,
        "hash": record.hash.hex(),
        "record": base64.b64encode(record.encode()).decode("ascii"),
    }
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n"


def documents(records: list[Record]) -> dict[str, str]:
    """File name -> exact text, so the test can compare what is committed."""
    vectors = {"ledger": LEDGER, "difficulty": DIFFICULTY, "records": [vector(r) for r in records]}
    return {
        "vectors.json": json.dumps(vectors, indent=2, ensure_ascii=False) + "\n",
        "ledger.jsonl": "".join(export_line(r) for r in records),
    }


def main() -> None:
    for name, text in documents(build()).items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
