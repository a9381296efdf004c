"""Random against time-ordered request ids: what each costs a put into a store with many records of one author.

Not a figure of `make bench`: ``.venv/bin/python -m bench.request_ids [--records N] [--rounds R]``.
The index ``records_by_request (ledger, author, request_id)`` orders an author's rows by request id:
with random ids (what the client library made before, ``secrets.token_hex(16)``) each put's row
lands on a random leaf page of that author's range; with time-ordered ids (client/session.py
``new_request_id``) on the last. Two stores are filled with ``N`` records of one author, one
with each kind of id; then, in interleaved rounds, each takes lone puts (``append``: one put a
commit, as a lone writer's) and pipelined puts (``submit_entry``, 1,000 in flight: group
commits, as many writers'). Printed a put: bytes this process wrote to disk (``/proc/self/io``
``write_bytes``: the WAL and the checkpoints into the database), CPU (all threads) and wall time.
"""

from __future__ import annotations

import argparse
import itertools
import os
import secrets
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

from vledger.client.session import new_request_id
from vledger.node.record import Content, Entry
from vledger.node.store import ChainStore, Receipt

from .fixtures import KIND, LEDGER, LIMITS, ORIGIN, open_ledger, scratch_dir

AUTHOR = "long-lived-writer"
WINDOW = 1_000  # pipelined puts in flight
LONE = 1_000  # lone puts a round
PIPELINED = 20_000  # pipelined puts a round


def _random_ids() -> Iterator[str]:
    while True:
        yield secrets.token_hex(16)


def _time_ids(start_ms: int) -> Iterator[str]:
    """The library's ids, with a clock that moves 1 ms a put from ``start_ms`` (as a writer's would)."""
    clock = itertools.count(start_ms)
    while True:
        yield new_request_id(lambda: next(clock))


def _entries(ids: Iterator[str], count: int, first: int) -> list[Entry]:
    return [
        Entry.prepare(
            Content(
                LEDGER,
                KIND,
                {"amount": 1_000 + i, "memo": f"invoice {i:09d}"},
                AUTHOR,
                next(ids),
                1_700_000_000_000 + i,
            ),
            0,
            LIMITS,
        )
        for i in range(first, first + count)
    ]


def _pipelined(store: ChainStore, entries: list[Entry]) -> None:
    pending: deque[Future[Receipt]] = deque()
    for entry in entries:
        if len(pending) >= WINDOW:
            pending.popleft().result()
        pending.append(store.submit_entry(entry))
    for future in pending:
        future.result()


def _lone(store: ChainStore, entries: list[Entry]) -> None:
    for entry in entries:
        store.append(entry)


def _written() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def _measure(
    put: Callable[[ChainStore, list[Entry]], None], store: ChainStore, entries: list[Entry]
) -> tuple[float, float, float]:
    """Bytes written, CPU us and wall us, a put."""
    bytes_before, cpu_before, wall_before = _written(), time.process_time(), time.perf_counter()
    put(store, entries)
    n = len(entries)
    return (
        (_written() - bytes_before) / n,
        (time.process_time() - cpu_before) * 1e6 / n,
        (time.perf_counter() - wall_before) * 1e6 / n,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.request_ids", description=__doc__)
    parser.add_argument("--records", type=int, default=200_000, help="records of the one author before the rounds")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    kinds = {"random": _random_ids(), "time-ordered": _time_ids(1_764_000_000_000)}
    results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    with scratch_dir() as directory:
        stores: dict[str, ChainStore] = {}
        made = {kind: 1 for kind in kinds}
        for kind, ids in kinds.items():
            store = ChainStore(directory / kind.replace("-", "_"), origin=ORIGIN)
            open_ledger(store, difficulty=0)
            started = time.perf_counter()
            for first in range(1, args.records + 1, 50_000):
                count = min(50_000, args.records + 1 - first)
                _pipelined(store, _entries(ids, count, first))
            made[kind] = args.records + 1
            print(f"{kind}: {args.records:,} records of {AUTHOR} in {time.perf_counter() - started:.0f} s", flush=True)
            stores[kind] = store
        try:
            for round_ in range(args.rounds):
                for kind in kinds if round_ % 2 == 0 else reversed(list(kinds)):
                    for name, put, count in (("lone", _lone, LONE), ("pipelined", _pipelined, PIPELINED)):
                        entries = _entries(kinds[kind], count, made[kind])
                        made[kind] += count
                        figures = _measure(put, stores[kind], entries)
                        results.setdefault((kind, name), []).append(figures)
                        print(
                            f"  round {round_ + 1} {kind:>12} {name:>9}: {figures[0]:>8,.0f} B written, "
                            f"{figures[1]:>6.1f} us CPU, {figures[2]:>7.1f} us wall a put",
                            flush=True,
                        )
        finally:
            for store in stores.values():
                store.close()
    print(f"median of {args.rounds} rounds, a put (load {os.getloadavg()[0]:.1f}):")
    for (kind, name), runs in sorted(results.items(), key=lambda item: (item[0][1], item[0][0])):
        b, cpu, wall = (statistics.median(r[i] for r in runs) for i in range(3))
        print(f"  {name:>9} {kind:>12}: {b:>8,.0f} B written, {cpu:>6.1f} us CPU, {wall:>7.1f} us wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
