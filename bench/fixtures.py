"""What every benchmark needs: its sizes, a scratch folder, a timer, a ledger and entries made in advance."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vledger.config.settings import Limits
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry
from vledger.node.store import ChainStore

LEDGER = "bench"
KIND = "transfer"
AUTHOR = "bench-client"
AUTHORS = 1_000  # entries cycle through this many client accounts (names are checked per record)
ORIGIN = "bench-node"
LIMITS = Limits()
SCRATCH_ROOT = Path("/tmp")


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each benchmark does; ``QUICK`` only shows that every figure is produced."""

    sync_records: int  # one writer, one append at a time: bounded by fsync, so few
    threaded_sync_records: int  # eight writers, one append each at a time
    pipelined_records: int  # appends with many in flight
    repeats: int  # best of this many runs, for figures and ceilings alike
    fsync_writes: int
    verify_records: int
    verify_repeats: int
    verify_scale_repeats: int  # `vledger verify` runs of each 2c store, each beside its ceilings
    pow_samples: int
    hash_loop: int  # iterations of a bare hashing loop
    ingest_records: int  # puts per run from one client to a node
    ingest_client_records: int  # puts per run from each of eight client processes
    ingest_hellos: int  # round trips one at a time
    ingest_sequential: int  # puts one at a time, each waiting for its answer
    scale_records: int  # puts per step of the scale curve
    scale_steps: tuple[int, ...]  # its steps: client processes (each a fresh interpreter: ~1 CPU s to start)
    rss_clients: int  # client processes putting while the processes' resident memory is watched
    rss_records: int  # puts in all while the processes' resident memory is watched
    replication_seconds: float  # puts at the offered rate while replicas follow
    catch_up_records: int  # puts while a replica is down, per outage
    feed_messages: int  # messages per run through a bare PUB/SUB pair
    xadd_records: int  # records per run added to a Redis stream
    gateway_records: int  # demo records in the store the gateway serves
    gateway_requests: int  # requests per run against one route
    store_cache: bool  # keep the verify figures' large stores between runs (bench/stores.py)


FULL = Sizes(
    sync_records=2_000,
    threaded_sync_records=10_000,
    pipelined_records=40_000,
    repeats=5,
    fsync_writes=1_000,
    verify_records=100_000,
    verify_repeats=5,
    verify_scale_repeats=3,
    pow_samples=100,
    hash_loop=500_000,
    ingest_records=20_000,
    ingest_client_records=2_500,
    ingest_hellos=5_000,
    ingest_sequential=5_000,
    scale_records=32_000,
    scale_steps=(1, 2, 4, 8, 16),
    rss_clients=8,
    rss_records=1_000_000,
    replication_seconds=10.0,
    catch_up_records=20_000,
    feed_messages=100_000,
    xadd_records=50_000,
    gateway_records=5_000,
    gateway_requests=5_000,
    store_cache=True,
)

QUICK = Sizes(
    sync_records=50,
    threaded_sync_records=200,
    pipelined_records=1_000,
    repeats=1,
    fsync_writes=50,
    verify_records=1_000,
    verify_repeats=1,
    verify_scale_repeats=1,
    pow_samples=5,
    hash_loop=20_000,
    ingest_records=500,
    ingest_client_records=100,
    ingest_hellos=500,
    ingest_sequential=250,
    scale_records=320,
    scale_steps=(1, 2),  # the curve's code at two steps; 4-16 more interpreters showed nothing more
    rss_clients=2,
    rss_records=3_200,
    replication_seconds=1.0,
    catch_up_records=2_500,
    feed_messages=5_000,
    xadd_records=2_000,
    gateway_records=600,
    gateway_requests=500,
    store_cache=False,
)


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A fresh folder under /tmp, removed afterwards whatever happens."""
    path = Path(tempfile.mkdtemp(prefix="vledger-bench-", dir=SCRATCH_ROOT))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def timed(work: Callable[[], int]) -> float:
    """Run ``work`` (which returns how many items it did) and return items per second."""
    start = time.perf_counter()
    count = work()
    return count / (time.perf_counter() - start)


def best_rates(works: dict[str, Callable[[], int]], repeats: int) -> dict[str, float]:
    """Each work's best rate over ``repeats`` rounds, a round running every work once in turn.

    Noise on a shared machine only ever slows a run down, hence the best; interleaving lets a
    figure and its ceiling see the same load, so that their ratio holds even when others run.
    """
    best = dict.fromkeys(works, 0.0)
    for _ in range(repeats):
        for name, work in works.items():
            best[name] = max(best[name], timed(work))
    return best


def genesis(difficulty: int, author: str = AUTHOR) -> Entry:
    rules = LedgerRules(kinds=(KIND,), difficulty=difficulty)
    return Entry.prepare(rules.genesis_content(LEDGER, author, "genesis", 0), difficulty, LIMITS)


def content(i: int, author: str | None = None) -> Content:
    """The ``i``-th benchmark content: about 180 bytes, from one of ``AUTHORS`` clients or from ``author``."""
    return Content(
        LEDGER,
        KIND,
        {"amount": 1_000 + i, "memo": f"invoice {i:09d} for services rendered", "to": f"account-{i % 977}"},
        author or f"client-{i % AUTHORS:04d}",
        f"req-{i:09d}",
        1_700_000_000_000 + i,
    )


def entries(count: int, difficulty: int, author: str | None = None, first: int = 1) -> list[Entry]:
    """``count`` distinct entries of about 180 content bytes (records of about 350), from ``AUTHORS`` clients,
    or all from ``author`` (a node takes only entries of the account whose key sends them); their
    request ids count from ``first``, so that batches of one author made apart stay distinct."""
    return [Entry.prepare(content(i, author), difficulty, LIMITS) for i in range(first, first + count)]


def open_ledger(store: ChainStore, difficulty: int) -> None:
    """Create the benchmark ledger in a fresh store."""
    store.create_ledger(genesis(difficulty))
