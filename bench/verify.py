"""Figure 2: full verification of a stored ledger on one core, beside a bare decode-and-hash loop.

The ledger is built at difficulty 1, not 0: at 0 the verifier skips the proof-of-work hash, but
at any real difficulty it computes one per record (as the ceiling does). Making a difficulty-1
nonce costs two hashes on average, so the build stays fast.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import msgpack

from vledger.node.record import decode_record
from vledger.node.store import ChainStore
from vledger.node.storefile import StoreReader
from vledger.node.verify import ChainVerifier

from .fixtures import LEDGER, LIMITS, ORIGIN, Sizes, best_rates, entries, open_ledger, scratch_dir
from .report import Ceiling, Figure, progress

COMMAND = ".venv/bin/python -m bench --only verify"
TARGET_PER_CORE = 200_000.0  # records/s
DIFFICULTY = 1
HASH_INPUT = bytes(range(256)) + bytes(44)  # 300 bytes, about one stored record


def _build(directory: Path, count: int) -> None:
    """A store holding one ledger of ``count`` records (genesis included), appended pipelined."""
    prepared = entries(count - 1, DIFFICULTY)
    with ChainStore(directory, origin=ORIGIN) as store:
        open_ledger(store, DIFFICULTY)
        for future in [store.submit_entry(entry) for entry in prepared]:
            future.result()


def _verify(rows: Iterable[tuple[int, bytes]]) -> int:
    """What `vledger verify` does per record: decode, check against the chain so far, advance."""
    verifier = ChainVerifier(LEDGER, LIMITS)
    count = 0
    for _, data in rows:
        record = decode_record(data, LIMITS)
        verifier.advance(record, verifier.check(record))
        count += 1
    return count


def _bare(rows: Iterable[tuple[int, bytes]]) -> int:
    """The least any verifier must do: unpack each record and compute its three hashes."""
    sha256 = hashlib.sha256
    count = 0
    for _, data in rows:
        m = msgpack.unpackb(data)
        checksum, nonce = m["checksum"], m["nonce"].to_bytes(8, "big")
        sha256(m["content"]).digest()
        sha256(checksum + nonce).digest()
        sha256(
            b"".join(
                (
                    m["prev"],
                    checksum,
                    m["height"].to_bytes(8, "big"),
                    nonce,
                    m["accepted"].to_bytes(8, "big"),
                    m["origin"].encode(),
                )
            )
        ).digest()
        count += 1
    return count


def _read(rows: Iterable[tuple[int, bytes]]) -> int:
    return sum(1 for _ in rows)


def _hashes(count: int) -> int:
    sha256 = hashlib.sha256
    data = HASH_INPUT
    for _ in range(count):
        sha256(data).digest()
    return count


def run(sizes: Sizes) -> list[Figure]:
    with scratch_dir() as directory:
        progress(f"verify: building a ledger of {sizes.verify_records:,} records (difficulty {DIFFICULTY})")
        _build(directory, sizes.verify_records)
        reader = StoreReader(directory)
        try:
            memory = list(reader.iter_raw(LEDGER))
            assert len(memory) == sizes.verify_records
            reps = sizes.verify_repeats
            progress(f"verify: {len(memory):,} records x {reps}, from SQLite and from memory, with ceilings")
            rates = best_rates(
                {
                    "from_store": lambda: _verify(reader.iter_raw(LEDGER)),
                    "bare_store": lambda: _bare(reader.iter_raw(LEDGER)),
                    "read_only": lambda: _read(reader.iter_raw(LEDGER)),
                    "in_memory": lambda: _verify(memory),
                    "bare_memory": lambda: _bare(memory),
                    "hashes": lambda: _hashes(sizes.hash_loop),
                },
                reps,
            )
            record_bytes = sum(len(data) for _, data in memory) / len(memory)
        finally:
            reader.close()
    hashes = rates["hashes"]

    def bare(where: str, rate: float) -> Ceiling:
        return Ceiling(
            f"bare loop, {where}",
            rate,
            "records/s",
            f"msgpack.unpackb of each row {where}, then sha256 of its content, of checksum+nonce, of its link fields",
        )

    three_hashes = Ceiling(
        "3 x sha256 of 300 B",
        hashes / 3,
        "records/s",
        f"hashlib.sha256(300 bytes).digest() in a loop: {hashes:,.0f} hashes/s, divided by 3 hashes a record",
    )
    read = Ceiling(
        "StoreReader.iter_raw alone",
        rates["read_only"],
        "records/s",
        "iterate the rows (height, bytes) a page at a time, no decoding",
    )
    details = {
        "records": sizes.verify_records,
        "mean record bytes": round(record_bytes),
        "difficulty": DIFFICULTY,
    }
    return [
        Figure(
            key="2a",
            name="full verify, read from SQLite, 1 core",
            value=rates["from_store"],
            unit="records/s",
            ceiling=bare("read with StoreReader.iter_raw", rates["bare_store"]),
            command=COMMAND,
            target=TARGET_PER_CORE,
            also=(read,),
            details=details,
        ),
        Figure(
            key="2b",
            name="full verify, bytes in memory, 1 core",
            value=rates["in_memory"],
            unit="records/s",
            ceiling=bare("in memory", rates["bare_memory"]),
            command=COMMAND,
            target=TARGET_PER_CORE,
            also=(three_hashes,),
            details=details,
        ),
    ]
