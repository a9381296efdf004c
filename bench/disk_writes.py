"""What a durable write costs this host, by its size and by where it goes: the lone put's floor.

Not a figure of `make bench`: ``.venv/bin/python -m bench.disk_writes [--count N] [--rounds R]``.
A lone put's commit is SQLite writing two WAL frames (~8.2 KB) over a log grown before, in
place, then fdatasync; figure 4e's ceiling appends 320 bytes (O_APPEND) and fsyncs. In
interleaved rounds this times each of: write + fdatasync of 8,240, 4,120, 2,096 and 300 bytes
in place in a preallocated file (a WAL commit of two 4 KB pages, one, two 1 KB pages, a bare
record), the same sizes appended, the ceiling's own append + fsync, and a real store's lone put
(queued, then ``flush`` on the timing thread, as the request loop commits one; its log grown
first). Printed for each, the median over rounds of the p50 wall time and of the mean CPU time
of the process (the host's cost inside the syscalls).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

from vledger.node.record import Entry
from vledger.node.store import ChainStore

from .fixtures import ORIGIN, entries, open_ledger, scratch_dir
from .ingest import SMALL_WRITE

SIZES = (8_240, 4_120, 2_096, 300)  # 2 frames of 4 KB pages (24-byte headers), 1, 2 of 1 KB pages, a record
PREALLOCATED = 16 << 20  # each in-place file, written over from its start again when a run reaches its end
GROW_PUTS = 1_500  # a fresh store's first lone puts extend its log (docs/INTERNALS.md): done before timing

Op = Callable[[], None]


def _in_place(path: Path, size: int, stack: ExitStack) -> Op:
    """write + fdatasync of ``size`` bytes at the next offset of a file allocated and synced before."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    stack.callback(os.close, fd)
    os.ftruncate(fd, 0)
    os.write(fd, b"\1" * PREALLOCATED)  # real blocks, not a hole: an overwrite journals no metadata
    os.fsync(fd)
    data = b"\2" * size
    offsets = itertools.cycle(range(0, PREALLOCATED - size + 1, size))

    def op() -> None:
        os.pwrite(fd, data, next(offsets))
        os.fdatasync(fd)

    return op


def _appended(path: Path, data: bytes, sync: Callable[[int], None], stack: ExitStack) -> Op:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    stack.callback(os.close, fd)

    def op() -> None:
        os.write(fd, data)
        sync(fd)

    return op


def _lone_puts(directory: Path, count: int, stack: ExitStack) -> Op:
    """A real store's lone put as the ingest node's request loop commits it (queued without
    waking the committer, then ``flush`` on this thread, answered once durable), its log grown first."""
    store = ChainStore(directory, origin=ORIGIN)
    stack.callback(store.close)
    open_ledger(store, difficulty=0)
    queued: Iterator[Entry] = iter(entries(GROW_PUTS + count, 0, author="lone-writer"))

    def op() -> None:
        future = store.submit_entries([next(queued)], wake=False)
        store.flush()
        future.result()

    for _ in range(GROW_PUTS):
        op()
    return op


def _time(op: Op, count: int) -> tuple[float, float]:
    """p50 wall and mean CPU (this process, all threads) of ``count`` calls, in microseconds."""
    walls = []
    cpu = time.process_time()
    for _ in range(count):
        start = time.perf_counter()
        op()
        walls.append(time.perf_counter() - start)
    return statistics.median(walls) * 1e6, (time.process_time() - cpu) / count * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.disk_writes", description=__doc__)
    parser.add_argument("--count", type=int, default=200, help="writes of each kind a round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    results: dict[str, list[tuple[float, float]]] = {}
    with scratch_dir() as directory, ExitStack() as stack:
        cases: dict[str, Op] = {}
        for size in SIZES:
            cases[f"in place {size:,} B + fdatasync"] = _in_place(directory / f"in_place_{size}", size, stack)
        for size in SIZES:
            data = b"\2" * size
            cases[f"appended {size:,} B + fdatasync"] = _appended(directory / f"app_{size}", data, os.fdatasync, stack)
        ceiling = f"appended {len(SMALL_WRITE)} B + fsync (4e's ceiling)"
        cases[ceiling] = _appended(directory / "ceiling", SMALL_WRITE, os.fsync, stack)
        cases["lone put (submit_entries + flush)"] = _lone_puts(directory / "store", args.count * args.rounds, stack)
        names = list(cases)
        for round_ in range(args.rounds):
            for name in names if round_ % 2 == 0 else reversed(names):  # neither order favoured
                results.setdefault(name, []).append(_time(cases[name], args.count))
    print(f"median of {args.rounds} rounds of {args.count} (load {os.getloadavg()[0]:.1f}), microseconds:")
    for name, runs in results.items():
        wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print(f"  {name:<40} wall p50 {wall:>7.0f}   CPU {cpu:>5.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
