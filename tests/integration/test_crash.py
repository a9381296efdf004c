"""Crash test: a real writer process is killed with SIGKILL at random moments, many times.

The child (crash_writer.py) appends from several threads and prints a line for every
append the store acknowledged. After each kill the parent reopens the store and checks
that every acknowledged record is there with the hash it was acknowledged with, that no
request was written twice, and that every ledger verifies from genesis without a gap.

The writer adds a run to the store's hash index every few groups and merges runs in small
steps: after each kill, every record is found by its hash, the index holds each record below
its marks exactly once, in a run hash_runs lists, and the merges killed midway go on.

The kill moments come from a seeded generator; the seed is printed, and
VLEDGER_CRASH_SEED=<seed> replays the same schedule. VLEDGER_CRASH_ROUNDS sets the number
of kills (``make soak`` runs many more than the default).
"""

from __future__ import annotations

import math
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vledger.node.store import ChainStore
from vledger.node.storefile import DB_NAME
from vledger.node.verify import ChainVerifier

WRITER = Path(__file__).with_name("crash_writer.py")
ROUNDS = int(os.environ.get("VLEDGER_CRASH_ROUNDS", "25"))
SEED = int(os.environ.get("VLEDGER_CRASH_SEED", "20240917"))
ROUNDS_PER_STORE = 25  # then start a fresh store, so that a soak's checks stay fast
SILENCE_LIMIT_S = 30.0  # a child that writes nothing for this long is stuck
MAX_ACKS = 3000  # most acknowledgements a round waits for before the kill


@dataclass(frozen=True, slots=True)
class Ack:
    """One acknowledged append, as the child reported it."""

    ledger: str
    height: int
    hash: bytes
    request_id: str

    def __str__(self) -> str:
        return f"{self.ledger} {self.height} {self.hash.hex()} ({self.request_id})"

    @classmethod
    def parse(cls, line: bytes) -> Ack:
        ledger, height, hexhash, request_id = line.decode().split(" ")
        return cls(ledger, int(height), bytes.fromhex(hexhash), request_id)


@dataclass(frozen=True, slots=True)
class KillPlan:
    """When to kill the child: after this many acknowledgements, or this long after its start."""

    acks: int | None = None
    delay_s: float | None = None

    @classmethod
    def draw(cls, rng: random.Random) -> KillPlan:
        roll = rng.random()
        if roll < 0.1:
            return cls(delay_s=rng.uniform(0.0, 0.1))  # while it starts: imports, open, genesis
        if roll < 0.2:
            return cls(acks=1)
        # Log-uniform: as many kills among the first few appends as among thousands.
        return cls(acks=int(math.exp(rng.uniform(math.log(2), math.log(MAX_ACKS)))))

    def __str__(self) -> str:
        if self.delay_s is not None:
            return f"{self.delay_s * 1000:.0f} ms after start"
        return f"after {self.acks} acks"


class WriterFailed(AssertionError):
    pass


class CrashedWriter:
    """One run of the child, from its start to its death by SIGKILL."""

    def __init__(self, directory: Path, run: int, log: Path) -> None:
        self.log = log
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(WRITER), str(directory), str(run)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        assert self.process.stdout is not None
        self.fd = self.process.stdout.fileno()
        self.started = time.monotonic()
        self.lines: list[bytes] = []
        self._partial = b""

    def fail(self, why: str) -> WriterFailed:
        stderr = self.log.read_text(errors="replace").strip() or "(nothing)"
        return WriterFailed(f"{why}; exit status {self.process.poll()}; its stderr:\n{stderr}")

    def _read(self, timeout_s: float) -> bool:
        """Take what the pipe holds within timeout_s; False at end of file."""
        ready, _, _ = select.select([self.fd], [], [], max(timeout_s, 0.0))
        if ready:
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return False
            *complete, self._partial = (self._partial + chunk).split(b"\n")
            self.lines.extend(complete)
        return True

    def run_until(self, plan: KillPlan) -> None:
        """Read acknowledgements until the plan says kill; the child must not die first."""
        kill_at = self.started + plan.delay_s if plan.delay_s is not None else math.inf
        heard = self.started
        while plan.acks is None or len(self.lines) < plan.acks:
            now = time.monotonic()
            if now >= kill_at:
                return
            if now - heard > SILENCE_LIMIT_S:
                raise self.fail(f"the writer wrote nothing for {SILENCE_LIMIT_S:.0f} s")
            before = len(self.lines)
            if not self._read(min(kill_at, heard + SILENCE_LIMIT_S) - now):
                raise self.fail(f"the writer exited before it was killed, after {len(self.lines)} acks")
            if len(self.lines) > before:
                heard = time.monotonic()

    def kill(self) -> list[Ack]:
        """SIGKILL, then every line it wrote before it died: each one was acknowledged."""
        os.kill(self.process.pid, signal.SIGKILL)
        deadline = time.monotonic() + SILENCE_LIMIT_S
        while self._read(deadline - time.monotonic()):
            if time.monotonic() > deadline:
                raise self.fail("the writer's pipe stayed open after SIGKILL")
        status = self.process.wait(timeout=SILENCE_LIMIT_S)
        if status != -signal.SIGKILL:
            raise self.fail("the writer did not die of our SIGKILL")
        if self._partial:
            raise self.fail(f"the writer left half a line: {self._partial!r}")
        return [Ack.parse(line) for line in self.lines]

    def reap(self) -> None:
        """Leave no child and no open pipe behind, whatever happened."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@dataclass(slots=True)
class Acknowledged:
    """Everything acknowledged so far in one store, by place and by request."""

    by_place: dict[tuple[str, int], Ack] = field(default_factory=dict)
    by_request: dict[tuple[str, str], Ack] = field(default_factory=dict)
    lines: int = 0

    def add(self, acks: list[Ack]) -> None:
        """Record acks; the same place or the same request must always get the same answer."""
        for ack in acks:
            self.lines += 1
            at_place = self.by_place.setdefault((ack.ledger, ack.height), ack)
            of_request = self.by_request.setdefault((ack.ledger, ack.request_id), ack)
            for earlier in (at_place, of_request):
                assert earlier == ack, f"two acknowledgements disagree: {earlier} and {ack}"


def check_store(directory: Path, acknowledged: Acknowledged) -> tuple[int, int]:
    """Reopen the store after a crash; check it whole. Returns how many records it holds and how
    many merges of its hash index's runs were left midway."""
    chains: dict[str, list[tuple[bytes, str]]] = {}  # per ledger, (hash, request id) by height
    with ChainStore(directory) as store:
        for ledger in store.ledgers():
            verifier = ChainVerifier(ledger, store.limits)
            chain = chains[ledger] = []
            placed: dict[tuple[str, str], int] = {}
            for record in store.range(ledger):
                verifier.feed(record)  # raises at a gap, a bad link, a bad record
                chain.append((record.hash, record.content.request_id))
                request = (record.content.author, record.content.request_id)
                height = placed.setdefault(request, record.height)
                assert height == record.height, f"{ledger}: {request} is stored twice: {height}, {record.height}"
            assert len(chain) == store.size(ledger), f"{ledger}: {len(chain)} records, but its head is higher"
        hashes = [h for chain in chains.values() for h, _ in chain]
        assert store.have(hashes) == hashes, "a record is not found by its hash"
        for ledger, chain in chains.items():
            for height, (record_hash, _) in enumerate(chain):
                assert store.index_of(record_hash) == (ledger, height), f"{ledger} {height}: found elsewhere"
    with closing(sqlite3.connect(directory / DB_NAME)) as db:
        marks = sum(size for (size,) in db.execute("SELECT size FROM hashes_filled"))
        indexed = db.execute("SELECT COUNT(*) FROM hash_rows").fetchone()[0]
        below = db.execute(
            "SELECT COUNT(*) FROM records AS r JOIN hashes_filled AS f ON f.ledger = r.ledger AND r.height < f.size "
            "JOIN hash_rows AS h ON h.prefix = substr(r.hash, 1, 8) AND h.ledger = r.ledger AND h.height = r.height"
        ).fetchone()[0]
        unlisted = db.execute("SELECT COUNT(*) FROM hash_rows WHERE run NOT IN (SELECT run FROM hash_runs)").fetchone()
        merging = db.execute("SELECT COUNT(*) FROM hash_runs WHERE cursor IS NOT NULL").fetchone()[0]
    assert marks == indexed == below, f"hash_rows holds {indexed} rows, {below} of the {marks} below its marks"
    assert unlisted == (0,), f"{unlisted[0]} rows of the hash index are in runs hash_runs does not list"
    for (ledger, height), ack in acknowledged.by_place.items():
        chain = chains.get(ledger, [])
        assert height < len(chain), f"acknowledged {ack} is lost: ledger {ledger} has {len(chain)} records"
        assert chain[height] == (ack.hash, ack.request_id), f"acknowledged {ack} is now {chain[height]}"
    return sum(len(chain) for chain in chains.values()), merging


@pytest.mark.slow
def test_kill_9_never_loses_an_acknowledged_append(short_tmp: Path) -> None:
    rng = random.Random(SEED)
    print(f"crash test: seed {SEED} (VLEDGER_CRASH_SEED={SEED} replays it), {ROUNDS} rounds")
    started = time.monotonic()
    stores: list[Acknowledged] = []
    midway = 0  # kills that left a merge of the hash index's runs midway
    for round_ in range(ROUNDS):
        store_number, run = divmod(round_, ROUNDS_PER_STORE)
        if run == 0:
            stores.append(Acknowledged())
        directory = short_tmp / f"store{store_number}"
        plan = KillPlan.draw(rng)
        context = f"seed {SEED}, round {round_} (store {store_number}, run {run}), killed {plan}"
        writer = CrashedWriter(directory, run, short_tmp / f"writer{round_}.log")
        try:
            writer.run_until(plan)
            acks = writer.kill()
            stores[-1].add(acks)
            held, merging = check_store(directory, stores[-1])
            midway += merging > 0
        except Exception as e:
            raise AssertionError(f"{context}: {e}") from e
        finally:
            writer.reap()
        print(f"{context}: {len(acks)} acks, {held} records verified")
    checked = sum(len(acknowledged.by_place) for acknowledged in stores)
    lines = sum(acknowledged.lines for acknowledged in stores)
    print(
        f"crash test: {ROUNDS} kills, {checked} acknowledged records ({lines} acks with retries) all present, "
        f"{time.monotonic() - started:.1f} s, {midway} with a merge of the hash index midway"
    )
    assert checked > ROUNDS, "the writer acknowledged too little for the test to mean anything"
