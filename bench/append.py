"""Figure 1: durable appends into a fresh ChainStore, beside raw SQLite and raw fsync.

Entries are prepared (and their proof of work done, at difficulty 0) before the clock starts,
so that only the store is measured: placement, group commit and fsync.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

from vledger.node.record import Entry
from vledger.node.store import ChainStore, Receipt
from vledger.node.storefile import DB_NAME, SCHEMA, SCHEMA_VERSION, connect

from .fixtures import LEDGER, ORIGIN, Sizes, entries, open_ledger, scratch_dir, timed
from .report import Ceiling, Figure, progress

COMMAND = ".venv/bin/python -m bench --only append"
TARGET_GROUP_COMMIT = 20_000.0  # records/s, 8 writers with 32 in flight each
SMALL_WRITE = b"x" * 320  # about one record

_INSERT = "INSERT INTO records (ledger, height, hash, author, request_id, data) VALUES (?, ?, ?, ?, ?, ?)"
Row = tuple[str, int, bytes, str, str, bytes]


@dataclass(frozen=True, slots=True)
class _Case:
    key: str
    name: str
    threads: int
    window: int  # appends in flight per thread; 1 = synchronous ``append``
    records: int
    target: float | None = None
    keep_tree: bool = True  # False only to weigh the Merkle tree's upkeep (bench/tree.py)


@dataclass(frozen=True, slots=True)
class _Run:
    rate: float
    mean_group: float


def _write(store: ChainStore, part: list[Entry], window: int) -> None:
    if window == 1:
        for entry in part:
            store.append(entry)
        return
    pending: deque[Future[Receipt]] = deque()
    for entry in part:
        if len(pending) >= window:
            pending.popleft().result()
        pending.append(store.submit_entry(entry))
    for future in pending:
        future.result()


def _run(case: _Case, prepared: list[Entry]) -> tuple[_Run, list[Row]]:
    """One timed run of ``case`` into a fresh store; returns its rate and mean group, and its rows."""
    with scratch_dir() as directory:
        store = ChainStore(directory, origin=ORIGIN, keep_tree=case.keep_tree)
        try:
            open_ledger(store, difficulty=0)
            before = dataclasses.replace(store.stats)
            parts = [prepared[i :: case.threads] for i in range(case.threads)]
            start_line = threading.Barrier(case.threads + 1)
            failures: list[BaseException] = []

            def writer(part: list[Entry]) -> None:
                start_line.wait()
                try:
                    _write(store, part, case.window)
                except BaseException as e:
                    failures.append(e)

            threads = [threading.Thread(target=writer, args=(part,)) for part in parts]
            for thread in threads:
                thread.start()
            start_line.wait()
            start = time.perf_counter()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - start
        finally:
            store.close()
        if failures:
            raise failures[0]
        mean_group = (store.stats.appends - before.appends) / (store.stats.groups - before.groups)
        conn = connect(directory / DB_NAME, readonly=True)
        rows: list[Row] = conn.execute(
            "SELECT ledger, height, hash, author, request_id, data FROM records"
            " WHERE ledger = ? AND height > 0 ORDER BY height",
            (LEDGER,),
        ).fetchall()
        conn.close()
    assert len(rows) == len(prepared), f"{case.key}: stored {len(rows)} of {len(prepared)} records"
    return _Run(len(prepared) / elapsed, mean_group), rows


def _sqlite_inserts(rows: list[Row], group: int) -> float:
    """Rows/s inserting ``rows`` into a fresh database of the store's schema and settings, ``group`` a transaction.

    As in the store's runs, creating the file and its WAL (and a first commit) is not timed.
    """
    with scratch_dir() as directory:
        conn = connect(directory / DB_NAME)
        try:
            conn.executescript(SCHEMA)
            conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            start = time.perf_counter()
            for i in range(0, len(rows), group):
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(_INSERT, rows[i : i + group])
                conn.execute("COMMIT")
            elapsed = time.perf_counter() - start
        finally:
            conn.close()
    return len(rows) / elapsed


def _fsyncs(count: int) -> int:
    """Append a small write and fsync it, ``count`` times."""
    with scratch_dir() as directory:
        fd = os.open(directory / "fsync.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for _ in range(count):
                os.write(fd, SMALL_WRITE)
                os.fsync(fd)
        finally:
            os.close(fd)
    return count


def run(sizes: Sizes) -> list[Figure]:
    cases = [
        _Case("1a", "durable append, 1 writer, synchronous", 1, 1, sizes.sync_records),
        _Case("1b", "durable append, 1 writer, 256 in flight", 1, 256, sizes.pipelined_records),
        _Case("1c", "durable append, 8 writers, synchronous", 8, 1, sizes.threaded_sync_records),
        _Case(
            "1d", "durable append, 8 writers, 32 in flight each", 8, 32, sizes.pipelined_records, TARGET_GROUP_COMMIT
        ),
    ]
    progress(f"append: preparing {max(c.records for c in cases):,} entries (difficulty 0)")
    prepared = entries(max(c.records for c in cases), difficulty=0)

    # Each store run is followed by its raw-SQLite ceiling and an fsync loop, so that all three
    # see the same load; the ceiling's transactions are as large as the store's first run's.
    fsync_rates: list[float] = []
    measured: list[tuple[_Case, list[_Run], int, float]] = []
    for case in cases:
        progress(f"append: {case.key} {case.name}, {case.records:,} records x {sizes.repeats}, with ceilings")
        runs: list[_Run] = []
        group = 0
        sqlite_rate = 0.0
        for _ in range(sizes.repeats):
            run_, rows = _run(case, prepared[: case.records])
            runs.append(run_)
            group = group or max(1, round(run_.mean_group))
            sqlite_rate = max(sqlite_rate, _sqlite_inserts(rows, group))
            fsync_rates.append(timed(lambda: _fsyncs(sizes.fsync_writes)))
        measured.append((case, runs, group, sqlite_rate))

    fsync = Ceiling(
        "fsync",
        max(fsync_rates),
        "fsync/s",
        f"os.write of {len(SMALL_WRITE)} bytes (O_APPEND) then os.fsync, {sizes.fsync_writes:,} times, "
        "after each store run",
    )
    figures = []
    for case, runs, group, sqlite_rate in measured:
        best = max(runs, key=lambda r: r.rate)
        ceiling = Ceiling(
            f"raw SQLite, {group} row{'' if group == 1 else 's'}/txn",
            sqlite_rate,
            "records/s",
            "executemany INSERT of the store's own rows into its schema, WAL, synchronous=FULL, "
            f"BEGIN IMMEDIATE..COMMIT around each {group} row{'' if group == 1 else 's'}, after each store run",
        )
        figures.append(
            Figure(
                key=case.key,
                name=case.name,
                value=best.rate,
                unit="records/s",
                ceiling=ceiling,
                command=COMMAND,
                target=case.target,
                also=(fsync,) if case.window == 1 else (),
                details={
                    "records": case.records,
                    "threads": case.threads,
                    "in flight per thread": case.window,
                    "store mean group (best run)": round(best.mean_group, 1),
                    "runs (records/s)": [round(r.rate) for r in runs],
                },
            )
        )
    return figures
