"""Large stores for the verify figures (2a-2d): valid ledgers built fast, and kept between runs.

`vledger verify` is timed on stores of up to 10M records. Put one entry at a time through
ChainStore (submit_entry, the node's path) such a store takes some 17 minutes to build; here
the same records come from the same code, faster:

* worker processes make the entries, a chunk at a time: the content of height ``i`` is
  always fixtures.content(i), encoded, checksummed and given its difficulty-1 proof of work by
  Entry.prepare, as the node's clients do;
* this process places them (node.record's link_of and new_record, what Entry.place runs:
  height, prev, accepted time, origin, link), encodes each record and its Merkle leaf hash, and
  hands runs of ``RUN`` records to ChainStore.submit_records (verified, with their bytes), the
  path a replica's catch-up takes: one transaction a run, the store's own inserts and tree rows;
* the lookup index of ``records`` by request is dropped while the rows go in and made again
  from storefile.SCHEMA at the end, and the hash index is filled once at the end, as one run
  (the store is opened with ``hash_fill_at=None``): SQLite builds each by one sort instead of
  millions of inserts at random places. The file then holds what the node would have written.

Nothing here is taken on trust: each figure runs `vledger verify` over its store and fails if
the store has a fault.

A built store is kept under ``CACHE_ROOT``, named by its size and by a digest of the code
that makes it and gives its format (every source file of vledger's node/ and config/, this
module and fixtures.py): any change there gives another name, so a store of an older format
is never reused, and stores of other digests are removed once unused for ``UNUSED_SECONDS``.
A store is built in a folder of its own and renamed into place only once complete.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import multiprocessing
import os
import resource
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import closing, contextmanager
from pathlib import Path

from vledger.node.record import link_of, new_record
from vledger.node.store import HASH_FILL_AT, ChainStore, Receipt
from vledger.node.storefile import DB_NAME, SCHEMA, StoreReader, connect, fill_run
from vledger.node.tree import leaf_hash

from .fixtures import LEDGER, LIMITS, ORIGIN, SCRATCH_ROOT, content, entries, genesis, scratch_dir
from .report import progress

# Difficulty 1, not 0: at 0 the verifier skips the proof-of-work hash, but at any real
# difficulty it computes one per record. A difficulty-1 nonce costs two hashes on average.
DIFFICULTY = 1
CACHE_ROOT = SCRATCH_ROOT / "vledger-bench-stores"
UNUSED_SECONDS = 3600.0
RUN = 25_000  # records a transaction (and an entry worker's chunk)
IN_FLIGHT = 2  # runs handed to the store and not yet durable
ACCEPTED_PER_MS = 10  # records accepted in the same millisecond
LOOKUP_INDEXES = ("records_by_request",)  # storefile.SCHEMA's index on records
_PACKAGE = Path(__file__).resolve().parent.parent  # the repository root: the vledger package
_FORMAT_SOURCES = ("node", "config")  # vledger's folders whose code makes or reads a store
_BENCH_SOURCES = ("stores.py", "fixtures.py")


def _entry_parts(span: tuple[int, int]) -> list[tuple[bytes, bytes, int]]:
    """In a worker: the content bytes, checksum and nonce of the entries of heights ``span``."""
    first, stop = span
    return [(e.content_bytes, e.checksum, e.nonce) for e in entries(stop - first, DIFFICULTY, first=first)]


def build(directory: Path, count: int) -> None:
    """A store in ``directory`` holding one ledger of ``count`` records (genesis included),
    the one fixtures.genesis and fixtures.content describe. Raises what ChainStore raises
    if a run does not extend the ledger (a bug here), RuntimeError if the count is wrong."""
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    spans = [(first, min(first + RUN, count)) for first in range(1, count, RUN)]
    workers = max(1, min(len(os.sched_getaffinity(0)), len(spans)))
    with ChainStore(directory, origin=ORIGIN, hash_fill_at=None) as store:
        store.create_ledger(genesis(DIFFICULTY))
        head = store.head(LEDGER)
        assert head is not None  # just created
        with closing(connect(directory / DB_NAME)) as schema:
            for index in LOOKUP_INDEXES:
                schema.execute(f"DROP INDEX {index}")
        prev, first_accepted = head.link, head.accepted
        pending: list[Future[list[Receipt]]] = []
        # Spawned, not forked: the bench process may hold ZeroMQ contexts and threads.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            # A few chunks ahead, no more: Pool.imap would make every chunk as fast as the
            # workers can, and hold them all here while the store takes them.
            waiting = iter(spans)
            made = collections.deque(
                (span[0], pool.apply_async(_entry_parts, (span,))) for span in itertools.islice(waiting, 2 * workers)
            )
            while made:
                first, chunk = made.popleft()
                parts = chunk.get()
                following = next(waiting, None)
                if following is not None:
                    made.append((following[0], pool.apply_async(_entry_parts, (following,))))
                records, given = [], []
                for height, (content_bytes, checksum, nonce) in enumerate(parts, first):
                    accepted = first_accepted + height // ACCEPTED_PER_MS
                    link = link_of(prev, checksum, height, nonce, accepted, ORIGIN)
                    record = new_record(
                        content(height), content_bytes, checksum, nonce, height, prev, accepted, ORIGIN, link
                    )
                    data = record.encode()
                    records.append(record)
                    given.append((data, leaf_hash(data)))
                    prev = link
                pending.append(store.submit_records(records, verified=True, given=given))
                if len(pending) >= IN_FLIGHT:
                    pending.pop(0).result()
            pool.close()
            pool.join()
        for future in pending:
            future.result()
    with closing(connect(directory / DB_NAME)) as schema:
        schema.execute("PRAGMA cache_size = -262144")  # 256 MiB for the sorts
        schema.executescript(SCHEMA)  # the dropped indexes, as the store makes them
        schema.execute("BEGIN IMMEDIATE")
        fill_run(schema, {LEDGER: (0, count)}, HASH_FILL_AT)  # the hash index: one run, sorted once
        schema.execute("COMMIT")
    reader = StoreReader(directory)
    try:
        held = reader.count(LEDGER)
    finally:
        reader.close()
    if held != count:
        raise RuntimeError(f"{directory}: built {held:,} records, not {count:,}")
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_started
    progress(
        f"stores: built {count:,} records in {seconds:.1f} s ({count / seconds:,.0f} records/s), "
        f"{cpu:.1f} CPU s with the entry workers, load {os.getloadavg()[0]:.1f}"
    )


def _cpu_seconds() -> float:
    """CPU time of this process and of its children that ended (the entry workers, once joined)."""
    ours, theirs = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return ours.ru_utime + ours.ru_stime + theirs.ru_utime + theirs.ru_stime


def _written_back() -> None:
    """Wait until the kernel has written a store just built to disk: the build dirties hundreds
    of MiB (574 at 1M records), which the kernel writes back some 30 s later (dirty_expire), in
    the seconds the figures that follow are timed, on the cores they are timed on."""
    started = time.perf_counter()
    os.sync()
    progress(f"stores: written back in {time.perf_counter() - started:.1f} s")


def _code_digest() -> str:
    """A digest of every source file that makes a bench store or gives its format."""
    digest = hashlib.sha256()
    files = [path for folder in _FORMAT_SOURCES for path in (_PACKAGE / folder).rglob("*.py")]
    files += [_PACKAGE / "bench" / name for name in _BENCH_SOURCES]
    for path in sorted(files):
        digest.update(str(path.relative_to(_PACKAGE)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    digest.update(f"{DIFFICULTY} {LIMITS!r}".encode())
    return digest.hexdigest()[:16]


def _prune(keep: str) -> None:
    """Remove stores of other code digests unused for UNUSED_SECONDS, and the leftovers of
    builds whose process is gone."""
    now = time.time()
    for path in CACHE_ROOT.iterdir():
        if path.name.startswith(".build-"):
            pid = int(path.name.split("-")[1])
            gone = not Path(f"/proc/{pid}").exists()
        else:
            gone = not path.name.startswith(keep) and now - path.stat().st_mtime > UNUSED_SECONDS
        if gone:
            progress(f"stores: removing {path}")
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def ledger_store(count: int, cache: bool) -> Iterator[Path]:
    """A folder holding a store of ``count`` records (see :func:`build`): built fresh in a
    scratch folder and removed afterwards, or with ``cache`` the one kept for this code and
    count (built first if there is none). A kept store must only be read."""
    if not cache:
        with scratch_dir() as directory:
            progress(f"stores: building {count:,} records")
            build(directory, count)
            _written_back()
            yield directory
        return
    CACHE_ROOT.mkdir(exist_ok=True)
    key = _code_digest()
    _prune(key)
    kept = CACHE_ROOT / f"{key}-{count}"
    if kept.is_dir():
        progress(f"stores: {count:,} records kept in {kept}")
    else:
        building = CACHE_ROOT / f".build-{os.getpid()}-{key}-{count}"
        progress(f"stores: building {count:,} records, to keep in {kept}")
        try:
            build(building, count)
            _written_back()
            building.rename(kept)  # another run's copy of the same store may have won: ours goes
        except OSError:
            if not kept.is_dir():
                raise
        finally:
            shutil.rmtree(building, ignore_errors=True)
    os.utime(kept)  # used now: not pruned for an hour
    yield kept
