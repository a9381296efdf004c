"""Figure 6: the verifier and the observers, each beside the raw SHA-256 rate measured in the same run.

* 6a: a sweep of one copy (vledger.verifier.sweep) with its worker processes, one per usable
  core, as the verifier runs it: pages of a stored ledger re-verified from genesis, records/s,
  beside the bare loop (unpack and three SHA-256 a record) over the same pages times the cores;
  6a-1 the same sweep in one process, beside the bare loop on one core. The target is half the
  ceiling. Also shown: the bare hashing a verifier cannot avoid (``sha256 rate / 3``).
* 6b: from a tampered byte to its alert, with real processes: an ingest node, a replica and
  the verifier (its default pacing), a vote rewritten in the replica's SQLite with a fresh
  checksum and proof of work (only its link betrays it), then Redis's alerts stream polled. The
  ceiling is the time the verifier's pacing allows for noticing it: one sweep interval plus
  the copy's size at the sweep rate.
* 6c: tally updates, what an observer does per record: an election's records fed one by one
  to a rules engine (vledger.node.rules), records/s, beside ``sha256 rate / 3`` again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sqlite3
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from vledger.broker.client import Client, NodeAddress
from vledger.broker.keys import load_public, load_secret
from vledger.broker.redis_server import RedisServer, connect, free_port
from vledger.broker.replication import ReplicationLedger
from vledger.config.cluster import VerifierSettings
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry, Record, decode_record
from vledger.node.rules.engine import RulesEngine
from vledger.node.store import ChainStore
from vledger.node.storefile import DB_NAME
from vledger.verifier.sweep import LedgerSweep, PagePool

from .fixtures import LEDGER, ORIGIN, Sizes, entries, open_ledger, scratch_dir
from .ingest import ADMIN, CLUSTER, TIMEOUT, VLEDGER, _log_tail, _stop, _vledger, _wait_for_hello
from .report import Ceiling, Figure, progress
from .verify import _bare

COMMAND = ".venv/bin/python -m bench --only verifier"
SWEEP_COMMAND = ".venv/bin/python -m bench --only sweep"
TARGET_SWEEP_RATIO = 0.5  # of the bare loop over the same pages, on as many cores (issue 15)
TARGET_ALERT_S = 5.0
RECORD_BYTES = 300  # about one stored record, as bench/verify.py hashes
PAGE = 500  # records per range page, the cluster's default
SETTINGS = VerifierSettings()  # the verifier runs its defaults: the bench measures them
POLL = 0.005
ALERT_KEY = f"replica-1|{LEDGER}|bad_link"  # the open alert a rewritten vote in replica-1 raises

NODES = """
[nodes.replica-1]
role = "replica"
host = "127.0.0.1"
port = {replica}

[nodes.verifier-1]
role = "verifier"
host = "127.0.0.1"
port = {verifier}
"""


def _sha256_rate(count: int) -> float:
    data = os.urandom(RECORD_BYTES)
    sha256 = hashlib.sha256
    started = time.perf_counter()
    for _ in range(count):
        sha256(data).digest()
    return count / (time.perf_counter() - started)


class _Pages:
    """A copy's ``range`` pages, read from a store beforehand: the sweep's own cost is what is timed."""

    def __init__(self, store: ChainStore, size: int) -> None:
        self.pages = {
            start: [data for _, data in store.range_raw(LEDGER, start, start + PAGE)] for start in range(0, size, PAGE)
        }

    def page(self, ledger: str, start: int, limit: int) -> list[bytes]:
        return self.pages.get(start, [])


def _bare_rate(store: ChainStore, size: int) -> float:
    """The bare loop of figure 2 over the same pages: unpack and three SHA-256 a record."""
    pages = _Pages(store, size)
    rows = [(0, data) for page in pages.pages.values() for data in page]
    started = time.perf_counter()
    _bare(rows)
    return len(rows) / (time.perf_counter() - started)


def _sweep_rate(store: ChainStore, size: int, pool: PagePool | None = None) -> float:
    sweep = LedgerSweep("bench", LEDGER, pool=pool)
    pages = _Pages(store, size)
    started = time.perf_counter()
    verified = 0
    while True:
        step = sweep.step(pages, PAGE)
        verified += step.verified
        if step.complete or step.finding is not None:
            break
    if verified != size:
        raise RuntimeError(f"the sweep verified {verified} of {size} records")
    return verified / (time.perf_counter() - started)


def _election_records(count: int) -> list[Record]:
    """An election's register and cast records, as a home node places them (difficulty 0)."""
    rules = LedgerRules(("cast", "register", "uncast", "withdraw"), 0, {"type": "election", "choices": ["a", "b"],
                        "opens": 0, "closes": 2**62})  # fmt: skip
    with scratch_dir() as directory, ChainStore(directory, origin=ORIGIN, domain=RulesEngine()) as store:
        genesis = Entry.prepare(rules.genesis_content("vote", "admin", "g", 1), 0, PROTOCOL_LIMITS)
        store.create_ledger(genesis)
        records: list[Record] = []
        registered = []
        for i in range(count // 2):
            content = Content("vote", "register", {"voter_id": f"V-{i:07d}"}, "admin", f"r{i}", 2)
            receipt = store.submit_entry(Entry.prepare(content, 0, PROTOCOL_LIMITS)).result()
            registered.append(receipt.values["electronic_id"])
        for i, eid in enumerate(registered):
            content = Content("vote", "cast", {"electronic_id": eid, "choice": "ab"[i % 2]}, "admin", f"c{i}", 3)
            store.submit_entry(Entry.prepare(content, 0, PROTOCOL_LIMITS)).result()
        records.extend(store.range("vote"))
    return records


def _tally_rate(records: list[Record]) -> float:
    engine = RulesEngine()
    started = time.perf_counter()
    engine.replay(records)
    return len(records) / (time.perf_counter() - started)


@contextmanager
def _cluster(directory: Path) -> Iterator[tuple[Client, Path, ReplicationLedger, dict[str, subprocess.Popen[bytes]]]]:
    with RedisServer(directory / "redis") as redis:
        config = directory / "cluster.toml"
        ports = {"ingest": free_port(), "pub": free_port(), "replica": free_port(), "verifier": free_port()}
        cluster = CLUSTER.format(redis=redis.url, node="ingest-1", port=ports["ingest"], pub_port=ports["pub"])
        config.write_text(cluster + NODES.format(**ports))
        env = {**os.environ, "REDIS_URL": redis.url, "PYTHONUNBUFFERED": "1"}
        keys = directory / "keys"
        _vledger(env, "keygen", "--cluster", str(config))
        _vledger(
            env, "admin", "bootstrap", "--config", str(config), "--account", ADMIN, "--key", str(keys / f"{ADMIN}.key")
        )
        admin = load_secret(keys / f"{ADMIN}.key_secret")
        processes: dict[str, subprocess.Popen[bytes]] = {}
        try:
            nodes = [("ingest-1", "ingest"), ("replica-1", "replica"), ("verifier-1", "verifier")]
            for name, role in nodes:
                port = ports[role]
                log = directory / f"{name}.log"
                with log.open("ab") as out:
                    processes[name] = subprocess.Popen(
                        [str(VLEDGER), role, "--config", str(config), "--node", name],
                        env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    )  # fmt: skip
                address = NodeAddress(f"tcp://127.0.0.1:{port}", load_public(keys / f"{name}.key"))
                _wait_for_hello(processes[name], address, admin, log)
            home = NodeAddress(f"tcp://127.0.0.1:{ports['ingest']}", load_public(keys / "ingest-1.key"))
            with Client(home, admin, timeout=TIMEOUT) as client:
                yield (
                    client,
                    directory / "data" / "replica-1" / DB_NAME,
                    ReplicationLedger(connect(redis.url)),
                    processes,
                )
        finally:
            for name in ("verifier-1", "replica-1", "ingest-1"):
                if name in processes:
                    _stop(processes[name])


def _until(condition: Callable[[], bool], what: str, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"waited {TIMEOUT:g} s for {what}: {_log_tail(log)}")
        time.sleep(POLL)


def _alert_seconds(directory: Path, size: int, rounds: int) -> list[float]:
    """Seconds from a rewritten vote in the replica's store to the verifier's alert, per round."""
    times = []
    with _cluster(directory) as (client, replica_db, repl, _):
        client.create_ledger(Entry.prepare(LedgerRules(("vote",), 0, {}).genesis_content(LEDGER, ADMIN, "g", 1), 0,
                                           PROTOCOL_LIMITS))  # fmt: skip
        batch = [
            Entry.prepare(Content(LEDGER, "vote", {"n": i}, ADMIN, f"v{i}", 2), 0, PROTOCOL_LIMITS)
            for i in range(size - 1)
        ]
        client.put_many(batch, window=128)
        log = directory / "verifier-1.log"
        _until(lambda: repl.held(LEDGER).get("replica-1", -1) >= size - 1, "the replica to hold every record", log)
        for round_ in range(rounds):
            height = 1 + (round_ * 7919) % (size - 1)
            with closing(sqlite3.connect(replica_db, isolation_level=None)) as db:
                (data,) = db.execute(
                    "SELECT data FROM records WHERE ledger = ? AND height = ?", (LEDGER, height)
                ).fetchone()
                original = decode_record(data, PROTOCOL_LIMITS)
                forged = Entry.prepare(dataclasses.replace(original.content, payload={"n": -1}), 0, PROTOCOL_LIMITS)
                tampered = dataclasses.replace(original, content=forged.content, content_bytes=forged.content_bytes,
                                               checksum=forged.checksum, nonce=forged.nonce)  # fmt: skip
                started = time.monotonic()
                db.execute(
                    "UPDATE records SET data = ? WHERE ledger = ? AND height = ?", (tampered.encode(), LEDGER, height)
                )
                _until(lambda: ALERT_KEY in repl.open_alerts(), "the alert", log)
                times.append(time.monotonic() - started)
                db.execute("UPDATE records SET data = ? WHERE ledger = ? AND height = ?", (data, LEDGER, height))
                _until(lambda: ALERT_KEY not in repl.open_alerts(), "the alert to resolve", log)
    return times


def _sweep_figures(sizes: Sizes, per_record: Ceiling, command: str) -> list[Figure]:
    """Figures 6a and 6a-1: the sweep with its workers and alone, beside the bare loop."""
    cores = len(os.sched_getaffinity(0))
    with scratch_dir() as directory, ChainStore(directory, origin=ORIGIN) as store:
        open_ledger(store, 1)
        for future in [store.submit_entry(e) for e in entries(sizes.verify_records - 1, 1)]:
            future.result()
        pool = PagePool(cores)  # as the verifier process makes it
        try:
            _sweep_rate(store, sizes.verify_records, pool)  # its workers started, as in a running verifier
            sweep, pooled, bare = 0.0, 0.0, 0.0
            for _ in range(sizes.verify_repeats):  # interleaved, so that all see the same load
                pooled = max(pooled, _sweep_rate(store, sizes.verify_records, pool))
                sweep = max(sweep, _sweep_rate(store, sizes.verify_records))
                bare = max(bare, _bare_rate(store, sizes.verify_records))
        finally:
            pool.close()
    progress(f"verifier: sweep {pooled:,.0f} records/s with {cores} workers, {sweep:,.0f} alone, bare loop {bare:,.0f}")
    bare_loop = Ceiling(
        "bare loop over the sweep's pages",
        bare,
        "records/s",
        "msgpack.unpackb of each record of the same range pages, then sha256 of its content, of checksum+nonce, "
        "of its link fields",
    )
    return [
        Figure(
            "6a", f"sweep of one copy, re-verified from genesis, {cores} worker processes", pooled, "records/s",
            Ceiling(f"bare loop over the sweep's pages x {cores} cores", bare * cores, "records/s",
                    "the 6a-1 bare loop times the usable cores"),
            command, target=TARGET_SWEEP_RATIO * bare * cores,
            also=(bare_loop,),
            details={"records": sizes.verify_records, "pages per step": pool.pages, "page": PAGE,
                     "of the 1-core bare loop": round(pooled / bare, 2)},
        ),
        Figure(
            "6a-1", "sweep of one copy, re-verified from genesis, 1 core (no workers)", sweep, "records/s", bare_loop,
            command, target=TARGET_SWEEP_RATIO * bare, also=(per_record,), details={"records": sizes.verify_records},
        ),
    ]  # fmt: skip


def _per_record(sizes: Sizes) -> Ceiling:
    sha_rate = _sha256_rate(sizes.hash_loop)
    return Ceiling("SHA-256 rate / 3", sha_rate / 3, "records/s", "hashlib.sha256 of 300 bytes in a loop, 3 per record")


def run_sweep(sizes: Sizes) -> list[Figure]:
    """Only figures 6a and 6a-1 (``--only sweep``): no cluster, a minute instead of the section's several."""
    return _sweep_figures(sizes, _per_record(sizes), SWEEP_COMMAND)


def run(sizes: Sizes) -> list[Figure]:
    per_record = _per_record(sizes)
    sweeps = _sweep_figures(sizes, per_record, COMMAND)
    records = _election_records(max(200, sizes.verify_records // 5))
    tally = max(_tally_rate(records) for _ in range(sizes.verify_repeats))
    progress(f"verifier: tally {tally:,.0f} records/s")
    size = min(2_000, sizes.verify_records)
    rounds = 3 if sizes.verify_repeats > 1 else 1
    with scratch_dir() as directory:
        alerts = _alert_seconds(directory, size, rounds)
    bound = SETTINGS.sweep_interval_ms / 1000 + size / SETTINGS.sweep_rate
    pacing = Ceiling("verifier pacing", bound, "s", "sweep_interval_ms + copy size / sweep_rate: its designed bound")
    return [
        *sweeps,
        Figure(
            "6b", f"tampered byte to alert, median of {len(alerts)} (copy of {size:,} records)",
            statistics.median(alerts), "s", pacing, COMMAND, higher_is_better=False, target=TARGET_ALERT_S,
            details={"seconds": alerts},
        ),
        Figure(
            "6c", "tally updates (rules re-run per record, as an observer)", tally, "records/s", per_record, COMMAND,
            details={"records": len(records)},
        ),
    ]  # fmt: skip
