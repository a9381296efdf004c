"""A whole cluster under ``vledger supervise``, a load that keeps every receipt, and the faults.

:class:`SupervisedCluster` is what an operator runs: a generated ``cluster.toml`` (two ingest
nodes, each home to its own ledgers, replicas, two observers and a verifier, every port free,
its own Redis on a free port run by supervisord with its append-only file on) in a short
folder under /tmp (unix socket paths are short), started with ``vledger supervise start`` and
stopped with ``vledger supervise stop``. Its faults go through the same supervisord: a program
killed with SIGKILL (its pid from supervisord's XML-RPC) comes back by autorestart; an ingest
node held down is stopped and started through XML-RPC.

:class:`Writer` threads put records all along, paced, and keep every receipt. A put that is
not answered (:class:`NodeUnavailableError`) is sent again with the same request ids until it
is: the node answers a retry with the first receipt. So every entry a writer made is
acknowledged exactly once, and the checks can demand each of them, at its height and hash.

Imported as ``vledger.tests.e2e.helpers`` (see tests/integration/cluster.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from vledger.broker.accounts import AccountRegistry
from vledger.broker.client import Client, NodeAddress
from vledger.broker.keys import KeyPair, load_secret, new_keypair
from vledger.broker.redis_server import connect, free_port
from vledger.broker.replication import ReplicationLedger, count_distribution
from vledger.client.session import node_address
from vledger.config.cluster import ClusterConfig, RedisAccess, load_cluster
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.node.errors import NodeUnavailableError, RemoteError
from vledger.node.record import Entry, decode_record
from vledger.node.rules.votes import ElectionState
from vledger.tests.integration.cluster import entry, genesis, now_ms, wait_pending, wait_until
from vledger.tools.supervise import Supervisor, alive, layout_for

CLI = [sys.executable, "-m", "vledger.tools.cli"]
ADMIN = "admin"
ELECTION = "election"  # home ingest-1: voters register, then cast
NOTES = "notes"  # home ingest-2: a plain ledger
NOT_HELD = ("not_home", "no_such_ledger")  # a node's answers about a ledger it holds none of
CHOICES = ("alice", "bob", "carol")
RESTART_S = 30.0  # a program killed or started again must answer within this
CONVERGE_S = 90.0  # every copy at the home's head, every tally and alert settled
GIVE_UP_S = 90.0  # a writer that cannot get one batch acknowledged for this long fails
RETRYABLE = frozenset({"throttled", "store_closed", "unavailable"})
LOG_TAIL_LINES = 40


def environment() -> dict[str, str]:
    """This process's environment less what would point a command at another Redis or key."""
    return {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "VLEDGER_PASSPHRASE")}


@dataclass(frozen=True, slots=True)
class Topology:
    """How many replicas and observers; every setting is the default (config/cluster.toml's)."""

    replicas: int = 2
    observers: int = 2


class SupervisedCluster:
    """One cluster of real processes under one supervisord, in a folder of its own under /tmp."""

    def __init__(self, topology: Topology) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="vle-", dir="/tmp"))
        self.config_path = self.directory / "cluster.toml"
        self.run_dir = self.directory / "run"
        self.ingest = ["ingest-1", "ingest-2"]
        self.replicas = [f"replica-{i}" for i in range(1, topology.replicas + 1)]
        self.observers = [f"observer-{i}" for i in range(1, topology.observers + 1)]
        self.verifier = "verifier-1"
        self.homes = {ELECTION: "ingest-1", NOTES: "ingest-2"}
        self.keys: dict[str, KeyPair] = {}
        self._clients: dict[tuple[str, str], Client] = {}
        self._write_config()
        self.config: ClusterConfig = load_cluster(self.config_path)
        self.layout = layout_for(self.config, self.run_dir, find_redis=False)
        self._programs: Programs | None = None

    @property
    def followers(self) -> list[str]:
        """The nodes that hold every ledger: replicas and observers."""
        return [*self.replicas, *self.observers]

    def _write_config(self) -> None:
        ports: set[int] = set()

        def port() -> int:
            while (found := free_port()) in ports:
                pass
            ports.add(found)
            return found

        lines = [
            "[cluster]",
            'name = "e2e"',
            'keys = "keys"',
            'data = "data"',
            f'redis = "redis://127.0.0.1:{port()}/0"',
            'default_home = "ingest-1"',
            "",
            # Redis access control, as make run has it: supervise runs redis-server with the
            # ACL file keygen writes, and each process signs in as its role's user.
            "[redis]",
            'passwords = "keys/redis"',
            "",
        ]
        roles = {**dict.fromkeys(self.ingest, "ingest"), **dict.fromkeys(self.replicas, "replica")}
        roles |= {**dict.fromkeys(self.observers, "observer"), self.verifier: "verifier"}
        for name, role in roles.items():
            lines += [f"[nodes.{name}]", f'role = "{role}"', 'host = "127.0.0.1"', f"port = {port()}"]
            if role == "ingest":
                lines.append(f"pub_port = {port()}")
            lines.append("")
        for ledger, home in self.homes.items():
            lines += [f"[ledgers.{ledger}]", f'home = "{home}"', ""]
        self.config_path.write_text("\n".join(lines))

    # --- life cycle ----------------------------------------------------------------------

    def cli(self, *args: str | Path, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *map(str, args)], env=environment(), capture_output=True, text=True, timeout=timeout, check=False
        )

    def supervise(self, action: str) -> subprocess.CompletedProcess[str]:
        return self.cli("supervise", "--config", self.config_path, "--run-dir", self.run_dir, action)

    def start(self) -> None:
        done = self.supervise("start")
        if done.returncode != 0:
            raise AssertionError(f"supervise start exited {done.returncode}:\n{done.stdout}{done.stderr}")
        self._programs = Programs(self.layout.socket_path)
        self.keys[ADMIN] = load_secret(self.config.secret_key_path(ADMIN))
        for name in ("writer1", "writer2"):
            self.add_account(name, "writer")

    def stop(self) -> str:
        """``supervise stop``; whatever is still alive afterwards is killed, and named in the answer."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        supervisor = Programs(self.layout.socket_path)
        if not supervisor.running():
            return "no supervisord was running"
        pids = {"supervisord": supervisor.pid()} | supervisor.pids()
        done = self.supervise("stop")
        left = [f"{name} (pid {pid})" for name, pid in pids.items() if pid and alive(pid)]
        for pid in pids.values():
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)
        outcome = f"supervise stop exited {done.returncode}: {done.stdout.strip()}{done.stderr.strip()}"
        return outcome + (f"; still alive afterwards, killed: {', '.join(left)}" if left else "")

    def add_account(self, name: str, role: str) -> None:
        pair = new_keypair()
        admin = self.client(ADMIN, "ingest-1")
        changes = (("account.add", {"account": name, "role": role}), ("key.add", {"account": name, "key": pair.public}))
        client = connect(self.redis_access(), timeout=5.0)
        try:
            for cmd, args in changes:
                # A node pending at the answer (a loaded host) is waited on, as LocalCluster does.
                wait_pending(AccountRegistry(client), cmd, args, admin.call(cmd, args), self.log_tail)
        finally:
            client.close()
        self.keys[name] = pair

    # --- clients -------------------------------------------------------------------------

    def address(self, node: str) -> NodeAddress:
        return node_address(self.config, node)

    def client(self, key_name: str, node: str, *, timeout: float = 5.0) -> Client:
        """A client of ``node`` under key ``key_name``, kept until the cluster stops (main thread only).

        It does not follow not_home: what it reads is ``node``'s own copy."""
        if (key_name, node) not in self._clients:
            self._clients[key_name, node] = Client(
                self.address(node), self.keys[key_name], timeout=timeout, follow=False
            )
        return self._clients[key_name, node]

    def answers(self, name: str) -> bool:
        """Whether program ``name`` answers: Redis a PING, a node hello with its own name."""
        if name == "redis":
            client = connect(self.redis_access(), timeout=0.5)
            try:
                return bool(client.ping())
            except redis.exceptions.RedisError:
                return False
            finally:
                client.close()
        with Client(self.address(name), self.keys[ADMIN], timeout=0.5) as client:
            try:
                return client.hello().get("node") == name
            except NodeUnavailableError:
                return False

    def redis_access(self) -> RedisAccess:
        """The admin's Redis user on this cluster's server (not ``$REDIS_URL``'s)."""
        return dataclasses.replace(self.config.redis_access("admin"), url=self.config.redis_url)

    def replication(self) -> ReplicationLedger:
        return ReplicationLedger(connect(self.redis_access(), timeout=5.0))

    # --- faults --------------------------------------------------------------------------

    @property
    def programs(self) -> Programs:
        """supervisord's XML-RPC: the programs, their states and pids."""
        assert self._programs is not None, "the cluster is not started"
        return self._programs

    def kill(self, name: str, *, frozen_until: Callable[[], object] | None = None) -> tuple[int, int]:
        """SIGKILL program ``name``; returns once supervisord restarted it and it answers: (old pid, new pid).

        With ``frozen_until``, the program is stopped (SIGSTOP) first and killed once that
        condition holds: a client's requests sent meanwhile die with it, never answered.
        """
        table = self.programs
        info = table.processes()[name]
        assert info["statename"] == "RUNNING", f"{name} is {info['statename']} before the kill"
        killed = int(info["pid"])
        if frozen_until is not None:
            os.kill(killed, signal.SIGSTOP)
            try:
                wait_until(frozen_until, RESTART_S, f"the condition to kill {name} on", interval=0.01)
            finally:
                os.kill(killed, signal.SIGKILL)
        else:
            os.kill(killed, signal.SIGKILL)
        wait_until(lambda: not alive(killed), RESTART_S, f"{name} (pid {killed}) gone after SIGKILL")

        def restarted() -> int:
            now = table.processes()[name]
            return int(now["pid"]) if now["statename"] == "RUNNING" and now["pid"] != killed else 0

        pid = wait_until(restarted, RESTART_S, f"supervisord restarts {name}", interval=0.05)
        wait_until(lambda: self.answers(name), RESTART_S, f"{name} answers again after its restart", interval=0.1)
        return killed, int(pid)

    @contextmanager
    def held_down(self, name: str) -> Iterator[None]:
        """``name`` stopped (SIGTERM, through supervisord) for the block, then started and answering."""
        table = self.programs
        table.stop_process(name)
        assert table.processes()[name]["statename"] == "STOPPED"
        try:
            yield
        finally:
            table.start_process(name)
            wait_until(lambda: self.answers(name), RESTART_S, f"{name} answers after its start", interval=0.1)

    # --- what the nodes hold ---------------------------------------------------------------

    def size(self, node: str, ledger: str) -> int:
        try:
            return int(self.client(ADMIN, node).call("size", {"ledger": ledger})["size"])
        except RemoteError as e:
            if e.code in NOT_HELD:
                return 0
            raise

    def head(self, node: str, ledger: str) -> tuple[int, bytes] | None:
        try:
            reply = self.client(ADMIN, node).call("head", {"ledger": ledger})
        except RemoteError as e:
            if e.code == "not_found" or e.code in NOT_HELD:
                return None
            raise
        return int(reply["height"]), bytes(reply["hash"])

    def records(self, node: str, ledger: str) -> list[bytes]:
        return list(self.client(ADMIN, node).records(ledger))

    # --- logs --------------------------------------------------------------------------------

    def log_tail(self, program: str, lines: int = LOG_TAIL_LINES) -> str:
        """The end of ``program``'s log."""
        path = self.layout.log_path(program)
        if not path.is_file():
            return f"(no log {path})"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def log_tails(self, lines: int = LOG_TAIL_LINES) -> list[tuple[str, str]]:
        """(program, the end of its log) for every log file of the run."""
        tails = []
        for path in sorted(self.layout.log_dir.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            tails.append((path.stem, "\n".join(text)))
        return tails

    def error_lines(self) -> list[str]:
        """Every line logged at level error (or a traceback) by any program, prefixed with the program."""
        found = []
        for path in sorted(self.layout.log_dir.glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if "level=error" in line or line.startswith("Traceback"):
                    found.append(f"{path.stem}: {line}")
        return found


class Programs(Supervisor):
    """supervisord's XML-RPC, with the two calls a hold needs beside what ``vledger supervise`` uses."""

    def pids(self) -> dict[str, int]:
        return {name: int(info["pid"]) for name, info in self.processes().items()}

    def stop_process(self, name: str) -> None:
        self._proxy.supervisor.stopProcess(name, True)

    def start_process(self, name: str) -> None:
        self._proxy.supervisor.startProcess(name, True)


# --- the load ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ack:
    """One acknowledged put: where its home placed the record, and its hash."""

    ledger: str
    height: int
    hash: bytes


class Writer:
    """Puts batches on one ledger from a thread of its own, ``rate`` records a second at most.

    Every batch is sent again, same entries and request ids, until it is acknowledged; every
    receipt is kept by request id. ``stop`` ends after the batch in hand is acknowledged.
    """

    def __init__(self, cluster: SupervisedCluster, ledger: str, account: str, *, rate: float, batch: int = 20) -> None:
        self.ledger = ledger
        self.account = account
        self.address = cluster.address(cluster.homes[ledger])
        self.keys = cluster.keys[account]
        self.rate = rate
        self.batch = batch
        self.acks: dict[str, Ack] = {}
        self.retries: Counter[str] = Counter()  # why a batch was sent again
        self.error: BaseException | None = None
        self._sent_at: float | None = None  # when the batch in hand was first sent
        self.longest_wait = 0.0  # seconds, the longest it took to get one batch acknowledged
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"writer-{ledger}", daemon=True)
        self._client: Client | None = None
        self._serial = 0

    def start(self) -> Writer:
        self._thread.start()
        return self

    @property
    def acked(self) -> int:
        with self._lock:
            return len(self.acks)

    def waiting(self, seconds: float = 0.2) -> bool:
        """Whether a batch was sent at least ``seconds`` ago and is not answered yet."""
        sent = self._sent_at
        return sent is not None and time.monotonic() - sent >= seconds

    def wait_for(self, more: int, timeout: float = 60.0) -> None:
        """Return once ``more`` records beyond those acknowledged now are acknowledged."""
        goal = self.acked + more

        def reached() -> bool:
            if not self._thread.is_alive():
                raise AssertionError(f"writer of {self.ledger} stopped: {self.error!r}")
            return self.acked >= goal

        wait_until(reached, timeout, f"{goal} puts on {self.ledger} acknowledged (now {self.acked})", interval=0.05)

    def stop(self, timeout: float = GIVE_UP_S + 30) -> list[Ack]:
        """Stop after the batch in hand; every acknowledgement, by height."""
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"writer of {self.ledger} did not stop"
        if self.error is not None:
            raise AssertionError(f"writer of {self.ledger} failed: {self.error!r}") from self.error
        return sorted(self.acks.values(), key=lambda a: a.height)

    def _run(self) -> None:
        started = time.monotonic()
        written = 0
        try:
            with Client(self.address, self.keys, timeout=3.0) as self._client:
                while not self._stop.is_set():
                    written += self.write_batch()
                    self._stop.wait(max(0.0, started + written / self.rate - time.monotonic()))
        except BaseException as e:  # reported by wait_for and stop
            self.error = e

    def write_batch(self) -> int:
        """One batch written and acknowledged; how many records."""
        entries = [self.make(self._next()) for _ in range(self.batch)]
        self.put(entries)
        return len(entries)

    def _next(self) -> int:
        self._serial += 1
        return self._serial

    def make(self, n: int) -> Entry:
        return entry(self.ledger, "note", {"n": n, "text": f"note {n}"}, self.account)

    def put(self, entries: list[Entry]) -> list[dict[str, Any]]:
        """Acknowledged receipts of ``entries``, sent again (the same) until they are."""
        assert self._client is not None
        first = self._sent_at = time.monotonic()
        while True:
            try:
                receipts = self._client.put_many(entries)
                break
            except NodeUnavailableError:
                self.retries["no answer"] += 1
            except RemoteError as e:
                if e.code not in RETRYABLE:
                    raise
                self.retries[e.code] += 1
                time.sleep(0.1)
            if time.monotonic() - first > GIVE_UP_S:
                raise AssertionError(f"{self.ledger}: a batch not acknowledged within {GIVE_UP_S} s: {self.retries}")
        self._sent_at = None
        self.longest_wait = max(self.longest_wait, time.monotonic() - first)
        with self._lock:
            for put, receipt in zip(entries, receipts, strict=True):
                ack = Ack(receipt["ledger"], receipt["height"], bytes(receipt["hash"]))
                earlier = self.acks.setdefault(put.content.request_id, ack)
                assert earlier == ack, f"{put.content.request_id} acknowledged as {earlier} and as {ack}"
        return receipts


class ElectionWriter(Writer):
    """Voters register, then each casts one vote: ``counts`` is what an honest tally must say."""

    def __init__(self, cluster: SupervisedCluster, account: str, *, rate: float, batch: int = 20) -> None:
        super().__init__(cluster, ELECTION, account, rate=rate, batch=batch)
        self.voters = f"V-{account}-{time.time_ns()}"  # a prefix of voter ids no other writer uses
        self.registered = 0
        self.counts: Counter[str] = Counter()

    def write_batch(self) -> int:
        numbers = [self._next() for _ in range(self.batch // 2)]
        registrations = [entry(ELECTION, "register", {"voter_id": f"{self.voters}-{n}"}, self.account) for n in numbers]
        receipts = self.put(registrations)
        choices = [CHOICES[n * 7 % 11 % len(CHOICES)] for n in numbers]
        casts = [
            entry(ELECTION, "cast", {"electronic_id": r["values"]["electronic_id"], "choice": c}, self.account)
            for r, c in zip(receipts, choices, strict=True)
        ]
        self.put(casts)
        self.registered += len(numbers)
        self.counts.update(choices)
        return 2 * len(numbers)


@dataclass(slots=True)
class Written:
    """Everything a module's writers had acknowledged: what the chains and the tallies must show."""

    acks: dict[str, list[Ack]] = field(default_factory=lambda: {ELECTION: [], NOTES: []})
    registered: int = 0
    counts: Counter[str] = field(default_factory=Counter)


def create_ledgers(cluster: SupervisedCluster) -> Written:
    election = {"type": ElectionState.type_name, "choices": list(CHOICES), "opens": now_ms() - 60_000}
    election["closes"] = now_ms() + 86_400_000
    cluster.client(ADMIN, "ingest-1").create_ledger(genesis(ELECTION, ADMIN, sorted(ElectionState.kinds), election))
    cluster.client(ADMIN, "ingest-2").create_ledger(genesis(NOTES, ADMIN, ["note"]))
    return Written()


class Load:
    """The two writers: votes on ingest-1's election, notes on ingest-2, ``rate`` records a second each."""

    def __init__(self, cluster: SupervisedCluster, rate: float) -> None:
        self.votes = ElectionWriter(cluster, "writer1", rate=rate)
        self.notes = Writer(cluster, NOTES, "writer2", rate=rate)
        self.writers: list[Writer] = [self.votes, self.notes]
        self.by_home = {cluster.homes[w.ledger]: w for w in self.writers}

    def start(self) -> Load:
        for writer in self.writers:
            writer.start()
        return self

    def progress(self, records: int) -> None:
        """Until each writer got ``records`` more acknowledged."""
        for writer in self.writers:
            writer.wait_for(records)

    def stop(self, written: Written) -> None:
        """Both writers stopped; what they had acknowledged added to ``written``."""
        for writer in self.writers:
            written.acks[writer.ledger] = sorted([*written.acks[writer.ledger], *writer.stop()], key=lambda a: a.height)
        written.registered += self.votes.registered
        written.counts.update(self.votes.counts)

    def __str__(self) -> str:
        return f"acks {self.votes.acked} + {self.notes.acked}"

    def summary(self) -> str:
        retries = {w.ledger: dict(w.retries) for w in self.writers}
        longest = {w.ledger: round(w.longest_wait, 1) for w in self.writers}
        return f"retries {retries}; the longest wait for a batch's receipts (s) {longest}"


class Timeline:
    """What happened when, from the start of a test: printed, so live under ``pytest -s`` (make
    soak) and in a failed test's captured output."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, what: str) -> None:
        print(f"{time.monotonic() - self.started:7.1f} s  {what}", flush=True)


def fault_round(
    cluster: SupervisedCluster, load: Load, timeline: Timeline, number: int, *, progress: int, hold_s: float
) -> dict[str, int]:
    """One fault of each kind in turn, the load running: SIGKILL an ingest node (a batch sent to it
    and unanswered), a replica, an observer, the verifier and Redis, then hold the other ingest
    node down ``hold_s`` seconds. ``number`` picks the victims. Returns the pids it left."""
    table = cluster.programs
    killed_home = cluster.ingest[number % 2]
    held_home = cluster.ingest[(number + 1) % 2]
    victims = [
        killed_home,
        cluster.replicas[number % len(cluster.replicas)],
        cluster.observers[number % len(cluster.observers)],
        cluster.verifier,
        "redis",
    ]
    writer = load.by_home[killed_home]
    no_answer = writer.retries["no answer"]
    pids: dict[str, int] = {}
    for name in victims:
        # The home node is frozen until its writer has a batch in flight, then killed: that
        # batch is never answered and must be sent again.
        waiting = writer.waiting if name == killed_home else None
        killed, pids[name] = cluster.kill(name, frozen_until=waiting)
        timeline(f"{name} killed (pid {killed}), back as pid {pids[name]}  ({load})")
        load.progress(progress)
    assert writer.retries["no answer"] > no_answer, f"no put was in flight when {killed_home} was killed"
    with cluster.held_down(held_home):
        timeline(f"{held_home} stopped  ({load})")
        held = time.monotonic()
        load.by_home[killed_home].wait_for(progress)  # the other home goes on meanwhile
        time.sleep(max(0.0, hold_s - (time.monotonic() - held)))  # the length of the fault, not a wait for a state
    pids[held_home] = table.pids()[held_home]
    timeline(f"{held_home} started again after {time.monotonic() - held:.1f} s, pid {pids[held_home]}  ({load})")
    load.progress(2 * progress)
    return pids


# --- the checks --------------------------------------------------------------------------------


def check_cluster(cluster: SupervisedCluster, written: Written, timeline: Timeline) -> None:
    """With the load stopped: every copy holds every acknowledged record (:func:`assert_every_copy_holds`),
    each ledger holds each put once, the observers agree on tallies that are exactly what was
    written, and no alert is left open."""
    stopped = time.monotonic()
    for ledger in written.acks:
        wait_at_home_head(cluster, ledger)
    timeline(f"every copy at its home's head {time.monotonic() - stopped:.1f} s after the load stopped")
    checking = time.monotonic()
    sizes = {ledger: assert_every_copy_holds(cluster, ledger, acks) for ledger, acks in written.acks.items()}
    timeline(
        f"every copy holds every acknowledged record ({time.monotonic() - checking:.1f} s to compare): "
        + ", ".join(f"{ledger} {size} records" for ledger, size in sizes.items())
    )
    # Each ledger has its own writers: its genesis and each put once, however often a put was sent.
    assert sizes == {ledger: len(acks) + 1 for ledger, acks in written.acks.items()}

    election = wait_for_tally(cluster, ELECTION)
    tally = election["compared"][cluster.observers[0]]["tally"]
    assert tally["counts"] == {choice: written.counts[choice] for choice in tally["counts"]}, written.counts
    assert (tally["registered"], tally["cast"], tally["flagged"]) == (written.registered, written.counts.total(), 0)
    notes = wait_for_tally(cluster, NOTES)
    tally = notes["compared"][cluster.observers[0]]["tally"]
    assert (tally["records"], tally["flagged"]) == (sizes[NOTES], 0), tally
    timeline(f"the observers agree, every signature checked: {ELECTION} {dict(written.counts)}, {NOTES}")

    settled = wait_no_open_alert(cluster)
    timeline(f"vledger verify --cluster: no open alert ({settled:.1f} s after the tallies)")
    errors = cluster.error_lines()
    timeline(f"{len(errors)} lines logged at level error so far" + "".join(f"\n    {line}" for line in errors[:5]))


def wait_at_home_head(cluster: SupervisedCluster, ledger: str) -> None:
    """Until every replica and observer has the home's head of ``ledger`` (height and hash)."""
    home = cluster.homes[ledger]
    head = cluster.head(home, ledger)

    def at_head() -> bool:
        return all(cluster.head(node, ledger) == head for node in cluster.followers)

    wait_until(at_head, CONVERGE_S, f"every copy of {ledger} at {home}'s head {head}", interval=0.1)


def assert_every_copy_holds(cluster: SupervisedCluster, ledger: str, acks: list[Ack]) -> int:
    """Every replica and observer at the home's head; every copy the home's bytes; every
    acknowledged (height, hash) in it; the stream and the held heights complete. The size."""
    home = cluster.homes[ledger]
    size = cluster.size(home, ledger)
    assert acks and size >= acks[-1].height + 1, f"{ledger}: the home holds {size}, acknowledged up to {acks[-1]}"
    wait_at_home_head(cluster, ledger)
    chain = cluster.records(home, ledger)
    assert len(chain) == size
    for node in cluster.followers:
        assert cluster.records(node, ledger) == chain, f"{node} holds other bytes of {ledger} than {home}"
    hashes = [decode_record(data, PROTOCOL_LIMITS).hash for data in chain]
    lost = [a for a in acks if a.ledger != ledger or a.height >= size or hashes[a.height] != a.hash]
    assert not lost, f"{len(lost)} acknowledged records of {ledger} are not in its chain, e.g. {lost[:3]}"
    assert len({a.height for a in acks}) == len(acks), f"{ledger}: two acknowledgements of one height"

    replication = cluster.replication()
    try:
        wait_until(
            lambda: replication.last_height(ledger) == size - 1, CONVERGE_S, f"the {ledger} stream up to {size - 1}"
        )
        streamed = replication.read(ledger, 0, size + 10)
        assert [r.height for r in streamed] == list(range(size)), f"the {ledger} stream has gaps or repeats"
        assert [r.data for r in streamed] == chain, f"the {ledger} stream holds other bytes than {home}"
        nodes = 1 + len(cluster.followers)
        wait_until(
            lambda: count_distribution(replication.held(ledger), size) == {nodes: size},
            CONVERGE_S,
            f"every record of {ledger} counted on {nodes} nodes: {replication.held(ledger)}",
        )
    finally:
        replication.client.close()
    return size


def wait_for_tally(cluster: SupervisedCluster, ledger: str) -> dict[str, Any]:
    """``vledger tally`` exits 0, every observer's signature good and all agreeing at the home's head; its report."""
    head = cluster.size(cluster.homes[ledger], ledger) - 1
    last: dict[str, Any] = {}

    def agreed() -> bool:
        done = cluster.cli("tally", ledger, "--config", cluster.config_path, "--json")
        last.clear()
        last.update(json.loads(done.stdout) if done.stdout.strip() else {"stderr": done.stderr})
        last["exit"] = done.returncode
        return done.returncode == 0 and last["verdict"]["height"] == head

    try:
        wait_until(agreed, CONVERGE_S, f"vledger tally {ledger}: agreement at height {head}", interval=0.5)
    except AssertionError as e:
        raise AssertionError(f"{e}; the last report: {last}") from None
    assert [o["signature"] for o in last["observers"]] == ["ok"] * len(cluster.observers), last
    return last


def wait_no_open_alert(cluster: SupervisedCluster) -> float:
    """Until ``vledger verify --cluster`` exits 0; the seconds it took (AssertionError with its output)."""
    started = time.monotonic()
    last: list[subprocess.CompletedProcess[str]] = []

    def clean() -> bool:
        last[:] = [cluster.cli("verify", "--cluster", cluster.config_path)]
        return last[0].returncode == 0

    try:
        wait_until(clean, CONVERGE_S, "vledger verify --cluster exits 0", interval=0.5)
    except AssertionError as e:
        raise AssertionError(f"{e}:\n{last[0].stdout}{last[0].stderr}") from None
    return time.monotonic() - started


def alerts_since(cluster: SupervisedCluster, since_ms: int) -> list[str]:
    """Every alert of the stream raised at or after ``since_ms``, one line each."""
    replication = cluster.replication()
    try:
        alerts = [a for a in replication.alerts(100_000) if int(a.get("at_ms", "0")) >= since_ms]
    finally:
        replication.client.close()
    return [
        f"{a.get('what')} node {a.get('node')} ledger {a.get('ledger')} height {a.get('height')}: {a.get('detail')}"
        for a in alerts
    ]
