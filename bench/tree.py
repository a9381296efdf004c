"""Figure 7: what keeping each ledger's Merkle tree costs a durable append.

The same path as figure 1d (8 writers, 32 appends in flight each, group commit and fsync),
run with the tree and with its upkeep switched off (``ChainStore(keep_tree=False)``),
alternately in the same run so that both see the same load; beside them, the bare rate of
the tree's own work: a leaf hash per record and the frontier's appends.
"""

from __future__ import annotations

import dataclasses
import resource
import time

from vledger.node.tree import Frontier, leaf_hash

from .append import _Case, _run
from .fixtures import Sizes, entries
from .report import Ceiling, Figure, progress

COMMAND = ".venv/bin/python -m bench --only tree"
BUDGET = 0.10  # the bound: tree upkeep costs at most ~10 % of put throughput


def _hashing(datas: list[bytes]) -> float:
    """Leaves/s: leaf_hash of each record's stored bytes appended to a frontier, nothing else."""
    frontier = Frontier()
    start = time.perf_counter()
    for data in datas:
        frontier.append(leaf_hash(data))
    return len(datas) / (time.perf_counter() - start)


def run(sizes: Sizes) -> list[Figure]:
    with_tree = _Case(
        "7a", "durable append with the Merkle tree, 8 writers, 32 in flight each", 8, 32, sizes.pipelined_records
    )
    without = dataclasses.replace(with_tree, keep_tree=False)
    progress(f"tree: preparing {with_tree.records:,} entries (difficulty 0)")
    prepared = entries(with_tree.records, difficulty=0)
    on: list[float] = []
    off: list[float] = []
    # Process CPU per record: on a shared machine it varies far less than a rate does.
    cpu: dict[bool, list[float]] = {True: [], False: []}
    hashing: list[float] = []
    for i in range(sizes.repeats):
        progress(f"tree: run {i + 1} of {sizes.repeats}, {with_tree.records:,} records with and without the tree")
        # Alternate which goes first, so that neither always meets a warmer (or busier) machine.
        for case in (with_tree, without) if i % 2 == 0 else (without, with_tree):
            before = resource.getrusage(resource.RUSAGE_SELF)
            measured, rows = _run(case, prepared)
            after = resource.getrusage(resource.RUSAGE_SELF)
            used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            cpu[case.keep_tree].append(used / case.records * 1e6)
            (on if case.keep_tree else off).append(measured.rate)
        hashing.append(_hashing([row[5] for row in rows]))
    best_on, best_off = max(on), max(off)
    cost = 1 - best_on / best_off
    cpu_cost = min(cpu[True]) / min(cpu[False]) - 1
    return [
        Figure(
            key=with_tree.key,
            name=with_tree.name,
            value=best_on,
            unit="records/s",
            ceiling=Ceiling(
                "same path, tree upkeep off",
                best_off,
                "records/s",
                "the same appends into a fresh ChainStore(keep_tree=False), alternating with the runs with the tree",
            ),
            command=COMMAND,
            also=(
                Ceiling(
                    "leaf + frontier hashing",
                    max(hashing),
                    "leaves/s",
                    "leaf_hash(record bytes) then Frontier.append, over the stored records, in one thread",
                ),
            ),
            details={
                "records": with_tree.records,
                "tree cost (1 - with / without, best runs)": f"{cost:.1%}",
                "budget": f"{BUDGET:.0%}",
                "within budget": cost <= BUDGET,
                "CPU per record with / without the tree (µs, least of runs)": (
                    f"{min(cpu[True]):.1f} / {min(cpu[False]):.1f} (+{cpu_cost:.1%})"
                ),
                "runs with the tree (records/s)": [round(r) for r in on],
                "runs without the tree (records/s)": [round(r) for r in off],
            },
        )
    ]
