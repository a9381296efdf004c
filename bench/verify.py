"""Figure 2: full verification of a stored ledger on one core, beside a bare decode-and-hash loop.

The ledgers come from bench/stores.py: built fast with the store's own code, at difficulty 1
(at 0 the verifier would skip the proof-of-work hash), and kept between runs of `make bench`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import multiprocessing.pool
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import msgpack

from vledger.node.storefile import StoreReader
from vledger.node.verify import ChainVerifier

from .fixtures import LEDGER, LIMITS, Sizes, best_rates, timed
from .report import Ceiling, Figure, progress
from .stores import DIFFICULTY, ledger_store

COMMAND = ".venv/bin/python -m bench --only verify"
CORE_COMMAND = ".venv/bin/python -m bench --only verify-core"
TARGET_PER_CORE = 200_000.0  # records/s
TARGET_CLI = 200_000.0  # records/s, wall clock, `vledger verify` of 1M records on 2 cores
SCALE = {"2c-10k": 10_000, "2c-100k": 100_000, "2c-1M": 1_000_000}
# Set to 1 to add 10M records: a store of 5.7 GiB (1M records take 574 MiB) whose build takes
# some 500 CPU seconds (bench/stores.py), 4 to 5 minutes of a quiet 2-core machine after each change
# of the node's code, then 100 CPU seconds of verify: more than make bench can spare.
# bench/results/verify-10m.md has its last figures.
SCALE_10M = "VLEDGER_BENCH_10M"
PAGE = 500  # records a ChainVerifier.feed_many call: a sweep's range page
HASH_INPUT = bytes(range(256)) + bytes(44)  # 300 bytes, about one stored record


def _verify(rows: Iterable[tuple[int, bytes]]) -> int:
    """A ledger's full verification a page at a time, as a sweep does it (ChainVerifier.feed_many:
    the lean path for a run of records, the checks one by one for a record it does not take)."""
    verifier = ChainVerifier(LEDGER, LIMITS)
    count = 0
    it = iter(rows)
    while page := [data for _, data in itertools.islice(it, PAGE)]:
        verifier.feed_many(page)
        count += len(page)
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
    return [*_run_core(sizes), *run_scale(sizes)]


def run_core(sizes: Sizes) -> list[Figure]:
    """Only figures 2a and 2b (``--only verify-core``): no 1M store to build or verify."""
    return _run_core(sizes, CORE_COMMAND)


def _run_core(sizes: Sizes, command: str = COMMAND) -> list[Figure]:
    with ledger_store(sizes.verify_records, sizes.store_cache) as directory:
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
            command=command,
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
            command=command,
            target=TARGET_PER_CORE,
            also=(three_hashes,),
            details=details,
        ),
    ]


# `vledger verify`'s own function in a process of its own, after the command line's imports, with
# its forked workers (cmd_verify's call); the workers report their CPU time, which no rusage of
# ours would see were they a forkserver's children. What it and its workers (reaped when the
# pool closed) read from disk tells a run that found the store out of the page cache.
_VERIFY_CHILD = """
import json, resource, sys, time
from pathlib import Path
import vledger.tools.cli
from vledger.config.settings import Limits
from vledger.tools.verification import max_rss, verify_path
if __name__ == "__main__":
    result = verify_path(Path(sys.argv[1]), None, Limits(), fork=True)
    cpu = time.process_time() + result.worker_cpu
    rss = max_rss()
    read = sum(resource.getrusage(who).ru_inblock for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    print(json.dumps({"ok": result.ok, "cpu": cpu, "rss": rss, "worker_rss": result.worker_rss, "read": read}))
"""


@dataclass(frozen=True, slots=True)
class _Verified:
    """One `vledger verify` run (:func:`_cli_verify`)."""

    wall: float  # seconds
    cpu: float  # seconds, the process and its workers
    rss: int  # the verifying process's largest resident size, KiB
    worker_rss: int  # a worker's largest, KiB (0: none started)
    read_mib: float  # read from disk (not from the page cache) by the process and its workers


def _cli_verify(directory: Path) -> _Verified:
    """verify_path (what `vledger verify DIR` runs) in a process of its own."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _VERIFY_CHILD, str(directory)], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"verify failed: {done.stdout[-500:]!r} {done.stderr[-500:]!r}")
    measured = json.loads(done.stdout)
    if not measured["ok"]:
        raise RuntimeError(f"verify found a fault in the bench's own store: {done.stdout!r}")
    return _Verified(
        wall, float(measured["cpu"]), int(measured["rss"]), int(measured["worker_rss"]), measured["read"] / 2048
    )


def _bare_span(directory: str, start: int, stop: int) -> int:
    """In a pool's process: the bare loop over heights [start, stop) of the store at ``directory``."""
    reader = StoreReader(Path(directory))
    try:
        return _bare(reader.iter_raw(LEDGER, start, stop))
    finally:
        reader.close()


def _ready() -> None:
    """A pool process's start: this module is imported by now (unpickling the initializer), not
    in the first timed call."""


def _bare_at_once(pool: multiprocessing.pool.Pool, directory: Path, count: int, processes: int) -> float:
    """Records/s of the bare loop over the store in ``processes`` processes at once, a share of
    the heights each: what the cores give two busy processes together (a VM's two vCPUs may not
    give twice what one gives alone), seen under the same load as the verify run beside it."""
    shares = [(str(directory), count * i // processes, count * (i + 1) // processes) for i in range(processes)]
    started = time.perf_counter()
    done = sum(pool.starmap(_bare_span, shares))
    seconds = time.perf_counter() - started
    if done != count:  # a ceiling over fewer records than verify checked would be too high
        raise RuntimeError(f"{directory}: the bare loop read {done:,} records, not {count:,}")
    return done / seconds


@dataclass(frozen=True, slots=True)
class _ScaleRun:
    """One `vledger verify` run of a 2c store, and the ceilings measured right after it."""

    verified: _Verified
    bare: float  # the bare loop, one process (records/s)
    bare_at_once: float  # the bare loop, one process per usable core, all at once (records/s)


def _scale_runs(
    directory: Path, count: int, repeats: int, pool: multiprocessing.pool.Pool, processes: int
) -> list[_ScaleRun]:
    """``repeats`` rounds of `vledger verify` over the store, each followed by its ceilings
    (``pool``: ``processes`` processes for the bare loop at once)."""
    runs = []
    for _ in range(repeats):
        verified = _cli_verify(directory)
        reader = StoreReader(directory)
        try:
            bare = timed(lambda: _bare(reader.iter_raw(LEDGER)))  # noqa: B023 - called at once
        finally:
            reader.close()
        runs.append(_ScaleRun(verified, bare, _bare_at_once(pool, directory, count, processes)))
    return runs


def run_scale(sizes: Sizes) -> list[Figure]:
    """Figure 2c: `vledger verify` of stores of 10k, 100k and 1M records (10M on request), with
    its worker processes, beside the bare loop from the same store in as many processes at once
    as there are usable cores. Each the best of ``sizes.verify_scale_repeats`` rounds, a round
    running verify then its ceilings, as every rate of the bench (fixtures.best_rates): one
    run of a few seconds is at the mercy of whatever else the host runs in those seconds."""
    # Keys name the full size; --quick scales the counts down (at least 1,000 records).
    counts = {key: max(1_000, n * sizes.verify_records // 100_000) for key, n in SCALE.items()}
    if os.environ.get(SCALE_10M):
        counts["2c-10M"] = 10_000_000
    cores = len(os.sched_getaffinity(0))
    figures = []
    memory: list[tuple[int, int, int]] = []  # records, the verifying process's and a worker's largest RSS (KiB)
    # Spawned, not forked (the bench process may hold threads), and started before any timing.
    with multiprocessing.get_context("spawn").Pool(cores, initializer=_ready) as pool:
        for key, count in counts.items():
            with ledger_store(count, sizes.store_cache) as directory:
                runs = _scale_runs(directory, count, sizes.verify_scale_repeats, pool, cores)
            best = min((r.verified for r in runs), key=lambda v: v.wall)
            bare, at_once = max(r.bare for r in runs), max(r.bare_at_once for r in runs)
            load = os.getloadavg()
            memory.append((count, max(r.verified.rss for r in runs), max(r.verified.worker_rss for r in runs)))
            progress(
                f"verify scale: {count:,} in {best.wall:.1f} s wall, {best.cpu:.1f} s CPU (best of {len(runs)}), "
                f"bare loop {at_once:,.0f} records/s in {cores} processes, {bare:,.0f} in one, load {load[0]:.1f}"
            )
            figures.append(
                Figure(
                    key=key,
                    name=f"vledger verify of {count:,} records, {cores} cores (wall clock)",
                    value=count / best.wall,
                    unit="records/s",
                    ceiling=Ceiling(
                        f"bare loop from SQLite, {cores} processes at once",
                        at_once,
                        "records/s",
                        f"the 2a bare loop over this store, a share of its heights in each of {cores} processes "
                        "running together, after each verify run",
                    ),
                    command=COMMAND,
                    target=TARGET_CLI if key == "2c-1M" else None,
                    also=(
                        Ceiling(
                            f"bare loop from SQLite, 1 core, {count:,}",
                            bare,
                            "records/s",
                            "the 2a bare loop over this store, one process, after each verify run",
                        ),
                    ),
                    details={
                        "records": count,
                        "wall s": round(best.wall, 2),
                        "cpu s (vledger and its workers)": round(best.cpu, 2),
                        "records per cpu s": round(count / best.cpu),
                        "runs (records/s)": [round(count / r.verified.wall) for r in runs],
                        "runs (cpu s)": [round(r.verified.cpu, 2) for r in runs],
                        "runs (MiB read from disk)": [round(r.verified.read_mib, 1) for r in runs],
                        f"bare loop in {cores} processes / in one": round(at_once / bare, 2),
                        "max rss MiB (the verifying process)": round(memory[-1][1] / 1024, 1),
                        "max rss MiB (a worker; 0: none started)": round(memory[-1][2] / 1024, 1),
                        "load average 1/5/15 min": [round(x, 1) for x in load],
                    },
                )
            )
    return [*figures, *_flat_memory(memory)]


def _flat_memory(memory: list[tuple[int, int, int]]) -> list[Figure]:
    """Figures 2d: the largest resident size of `vledger verify` and of one of its workers at the
    largest store, beside the same at the smallest: a ratio near 1 says memory stays flat."""
    (small, rss0, _), (large, rss1, worker1) = memory[0], memory[-1]
    samples = [(n, round(a / 1024, 1), round(b / 1024, 1)) for n, a, b in memory]
    figures = [
        Figure(
            key="2d-verify",
            name=f"largest resident size of vledger verify, {large:,} records",
            value=rss1 / 1024,
            unit="MiB",
            ceiling=Ceiling(
                f"the same at {small:,} records", rss0 / 1024, "MiB", "VmHWM of the 2c run of the smallest store"
            ),
            command=COMMAND,
            higher_is_better=False,
            details={"samples (records, verify MiB, a worker MiB)": samples},
        )
    ]
    # The smallest store may be checked without workers (under two chunks): the first size with one is the base.
    started = [(n, w) for n, _, w in memory if w]
    if len(started) > 1 and worker1:
        figures.append(
            Figure(
                key="2d-worker",
                name=f"largest resident size of a verify worker, {large:,} records",
                value=worker1 / 1024,
                unit="MiB",
                ceiling=Ceiling(
                    f"the same at {started[0][0]:,} records",
                    started[0][1] / 1024,
                    "MiB",
                    "VmHWM of a worker in the 2c run of the smallest store with workers",
                ),
                command=COMMAND,
                higher_is_better=False,
                details={"samples (records, verify MiB, a worker MiB)": samples},
            )
        )
    return figures
