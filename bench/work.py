"""Figure 3: proof of work at 16 bits, beside the bare copy-update-digest loop it is made of.

The nonce a search returns says how many hashes it tried (nonce + 1, searching from 0), so
each sample's time is compared with the time the bare loop takes for as many hashes. Checksums
come from a fixed seed: every run searches the same nonces, and only the timing varies.
"""

from __future__ import annotations

import hashlib
import math
import random
import statistics
import time

from vledger.node.work import solve

from .fixtures import Sizes, timed
from .report import Ceiling, Figure, progress

COMMAND = ".venv/bin/python -m bench --only pow"
BITS = 16
TARGET_MEAN_MS = 40.0
SEED = 20_260_516


def _bare_hashes(count: int) -> int:
    """What a search does per nonce, at its barest: copy the checksum's state, add 8 bytes, digest."""
    base = hashlib.sha256(bytes(32))
    suffix = (123_456).to_bytes(8, "big")
    for _ in range(count):
        h = base.copy()
        h.update(suffix)
        h.digest()
    return count


def run(sizes: Sizes) -> list[Figure]:
    seeded = random.Random(SEED)
    checksums = [seeded.randbytes(32) for _ in range(sizes.pow_samples)]
    every = max(1, len(checksums) // 5)
    progress(f"pow: {len(checksums)} searches at {BITS} bits, the bare loop ({sizes.hash_loop:,} hashes) every {every}")
    # The bare loop runs before each fifth of the searches, so that it sees the load they see.
    hash_rate = 0.0
    times_ms: list[float] = []
    tries: list[int] = []
    for i, checksum in enumerate(checksums):
        if i % every == 0:
            hash_rate = max(hash_rate, timed(lambda: _bare_hashes(sizes.hash_loop)))
        start = time.perf_counter()
        nonce = solve(checksum, BITS)
        times_ms.append((time.perf_counter() - start) * 1_000)
        tries.append(nonce + 1)

    def bare(what: str, hashes: float) -> Ceiling:
        return Ceiling(
            f"bare loop, {what}",
            hashes / hash_rate * 1_000,
            "ms",
            f"sha256 state of a 32-byte checksum: copy(), update(8 bytes), digest(): {hash_rate:,.0f} hashes/s; "
            f"time = hashes / rate, for {what}",
        )

    solve_ms_per_hash = sum(times_ms) / sum(tries)
    details = {
        "samples": len(checksums),
        "bits": BITS,
        "mean tries": round(statistics.fmean(tries)),
        "median tries": round(statistics.median(tries)),
        "solve hashes/s": round(1_000 / solve_ms_per_hash),
    }
    return [
        Figure(
            key="3a",
            name=f"proof of work {BITS} bits, mean solve time",
            value=statistics.fmean(times_ms),
            unit="ms",
            ceiling=bare("these samples' mean tries", statistics.fmean(tries)),
            command=COMMAND,
            higher_is_better=False,
            target=TARGET_MEAN_MS,
            details=details,
        ),
        Figure(
            key="3b",
            name=f"proof of work {BITS} bits, median solve time",
            value=statistics.median(times_ms),
            unit="ms",
            ceiling=bare("these samples' median tries", statistics.median(tries)),
            command=COMMAND,
            higher_is_better=False,
            details=details,
        ),
        Figure(
            # The samples' luck (their mean tries vary by ~10 % over 100 searches) taken out.
            key="3c",
            name=f"proof of work {BITS} bits, expected mean (2^{BITS} x time per try)",
            value=2**BITS * solve_ms_per_hash,
            unit="ms",
            ceiling=bare(f"2^{BITS} tries", 2**BITS),
            command=COMMAND,
            higher_is_better=False,
            target=TARGET_MEAN_MS,
            details={**details, "expected median (ln 2 x mean)": round(math.log(2) * 2**BITS * solve_ms_per_hash, 2)},
        ),
    ]
