"""``vledger demo``: a store with an election, a zakat fund and a resource ledger, then verified.

This is what ``make run`` shows. Records carry non-ASCII names and integer cents, and get
real proof of work on every core. Running it again on the same store adds new records
instead of repeating the first run's.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from ..broker.shm import take_ownership
from ..config.settings import Limits
from ..node import identifiers
from ..node.ledger import LedgerRules
from ..node.record import Content, Entry
from ..node.store import ChainStore, Receipt
from .progress import Progress
from .verification import Verification, verify_store

DEMO_NODE = "demo-node"
NAMES = ("Zoë", "José", "Ayşe", "Łukasz", "Nguyễn Văn An", "Søren", "Chloé", "Jürgen", "Renée", "Dvořák")
CHOICES = ("alice", "bob", "carol")
_ITEMS = ("water-liters", "rice-kg", "blankets", "medicine-kits")
SITES = ("clinic-north", "school-east", "shelter-south")

# What a worker process needs to prepare one entry: the content, its difficulty, the limits.
_Job: TypeAlias = tuple[Content, int, Limits]


@dataclass(frozen=True, slots=True)
class DemoLedger:
    """A demo ledger: its genesis rules, and how to make its record number ``seq``."""

    name: str
    kinds: tuple[str, ...]
    rules: Mapping[str, Any]
    make: Callable[[int, int], Content]


@dataclass(frozen=True, slots=True)
class DemoRun:
    """What a demo run appended and how fast, and what verifying the whole store then found."""

    directory: Path
    created: list[str]
    appended: int
    hashes: int
    seconds: float
    processes: int
    verification: Verification
    verify_seconds: float


def run_demo(
    directory: Path, count: int, difficulty: int, limits: Limits, pin: Callable[[str], str] | None = None
) -> DemoRun:
    """Create the demo ledgers that are missing, append ``count`` records with real work, verify.

    ``pin(ledger)``, when given, is the checkpoint vkey each new genesis pins (rules.checkpoint_key).
    """
    with ChainStore(directory, origin=DEMO_NODE, limits=limits) as store:
        created, jobs = _demo_jobs(store, count, difficulty, limits, pin)
        started = time.monotonic()
        appended = _append(store, jobs)
        seconds = time.monotonic() - started
    started = time.monotonic()
    verification = verify_store(directory, None, limits)
    verify_seconds = time.monotonic() - started
    hashes = sum(2**job_difficulty for _, job_difficulty, _ in jobs)
    return DemoRun(directory, created, appended, hashes, seconds, worker_count(), verification, verify_seconds)


def _demo_jobs(
    store: ChainStore, count: int, difficulty: int, limits: Limits, pin: Callable[[str], str] | None = None
) -> tuple[list[str], list[_Job]]:
    """The names of the ledgers to create, and the jobs: their geneses first, then ``count`` records.

    A ledger the store already holds keeps the difficulty its genesis set.
    """
    ts = time.time_ns() // 1_000_000
    existing = set(store.ledgers())
    missing = [ledger for ledger in DEMO_LEDGERS if ledger.name not in existing]
    geneses = [
        LedgerRules(
            ledger.kinds,
            difficulty,
            identifiers.with_rule(ledger.rules) | ({} if pin is None else {"checkpoint_key": pin(ledger.name)}),
        ).genesis_content(ledger.name, "demo-admin", "genesis", ts)
        for ledger in missing
    ]
    contents = geneses + demo_contents({n: store.size(n) for n in existing}, count, ts)
    levels = {n: store.rules(n).difficulty for n in existing}
    return [ledger.name for ledger in missing], [(c, levels.get(c.ledger, difficulty), limits) for c in contents]


def _append(store: ChainStore, jobs: Sequence[_Job]) -> int:
    """Submit each entry as soon as its work is done, then wait for every receipt."""
    futures: list[Future[Receipt]] = []
    with Progress("proof of work", len(jobs)) as progress:
        futures.extend(store.submit_entry(entry) for entry in prepare_entries(jobs, progress))
    return len([f.result() for f in futures])


def prepare_entries(jobs: Sequence[_Job], progress: Progress) -> Iterator[Entry]:
    """Entries in the order of ``jobs``, their proof of work done on every core.

    Workers are spawned, not forked: the store's committer thread is running, and forking
    a process with threads can copy a held lock into the child.
    """
    context = multiprocessing.get_context("spawn")
    take_ownership()  # the pool's semaphores are named by this process; a killed one's removed
    with ProcessPoolExecutor(max_workers=worker_count(), mp_context=context) as pool:
        for entry in pool.map(_prepare, jobs, chunksize=4):
            progress.advance()
            yield entry


def _prepare(job: _Job) -> Entry:
    """Runs in a worker process: proof of work is CPU-bound, so it needs processes, not threads."""
    content, difficulty, limits = job
    return Entry.prepare(content, difficulty, limits)


def worker_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


# --- the demo's records -------------------------------------------------------------------


def demo_contents(sizes: Mapping[str, int], count: int, ts: int) -> list[Content]:
    """``count`` records over the demo ledgers, numbered on from each ledger's size, so that
    a second run adds new voters, donors and request ids instead of repeating the first."""
    next_seq = {ledger.name: max(1, sizes.get(ledger.name, 0)) for ledger in DEMO_LEDGERS}
    contents = []
    for i in range(count):
        ledger = _DEMO_MIX[i % len(_DEMO_MIX)]
        contents.append(ledger.make(next_seq[ledger.name], ts))
        next_seq[ledger.name] += 1
    return contents


def _election(seq: int, ts: int) -> Content:
    """Odd heights register a voter, the next height records their vote."""
    number = (seq + 1) // 2
    voter = f"V-{number:06d}"
    if seq % 2:
        payload: dict[str, Any] = {"voter": voter, "note": f"registered at desk {number % 7} by {_name(number - 1)}"}
        return Content("election-2026", "register", payload, voter, f"demo:{seq}", ts)
    payload = {"voter": voter, "choice": CHOICES[number % len(CHOICES)]}
    return Content("election-2026", "cast", payload, voter, f"demo:{seq}", ts)


def _zakat(seq: int, ts: int) -> Content:
    """Donations and, every fifth record, a disbursement; amounts are integer cents."""
    if seq % 5 == 0:
        payload: dict[str, Any] = {
            "recipient": f"family-{seq % 12:02d}",
            "amount": 10_000 + (seq * 37) % 20 * 500,
            "currency": "EUR",
            "note": f"approved by {_name(seq)}",
        }
        return Content("zakat", "disbursement", payload, "zakat-committee", f"demo:{seq}", ts)
    donor = f"D-{seq:06d}"
    payload = {"donor": donor, "amount": 500 + (seq * 137) % 50 * 100, "currency": "EUR", "note": f"for {_name(seq)}"}
    return Content("zakat", "donation", payload, donor, f"demo:{seq}", ts)


def _resources(seq: int, ts: int) -> Content:
    """Supplies issued into the central warehouse, then transferred to sites."""
    item = _ITEMS[seq % len(_ITEMS)]
    if seq % 4 == 1:
        payload: dict[str, Any] = {"to": "warehouse-a", "item": item, "quantity": 100 * (1 + seq % 9)}
        return Content("resources", "issue", payload, "depot-central", f"demo:{seq}", ts)
    site = SITES[seq % len(SITES)]
    payload = {"from": "warehouse-a", "to": site, "item": item, "quantity": 5 + seq % 20, "note": _name(seq)}
    return Content("resources", "transfer", payload, "warehouse-a", f"demo:{seq}", ts)


def _name(seq: int) -> str:
    return NAMES[seq % len(NAMES)]


DEMO_LEDGERS = (
    DemoLedger("election-2026", ("register", "cast", "uncast", "withdraw"), {"choices": list(CHOICES)}, _election),
    DemoLedger("zakat", ("donation", "disbursement"), {"currency": "EUR"}, _zakat),
    DemoLedger("resources", ("issue", "transfer"), {}, _resources),
)
# Half of the demo's records are votes, a quarter each donations and supplies.
_DEMO_MIX = (DEMO_LEDGERS[0], DEMO_LEDGERS[0], DEMO_LEDGERS[1], DEMO_LEDGERS[2])
