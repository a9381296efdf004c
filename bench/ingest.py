"""Figure 4: a real ingest node over CURVE, beside a bare CURVE ROUTER/DEALER echo in the same run.

The node is what production runs: a redis-server (accounts), `vledger keygen --cluster`,
`vledger admin bootstrap`, writer accounts and keys added by the admin over the protocol, and
`vledger ingest` as a process of its own; each put is answered once its record is durable.
Entries are prepared before the clock starts, on a ledger of difficulty 0 so that preparing
them is fast: the figures measure the protocol, the node and its store, not proof of work.

Figure 4e/4f is the clerk's desk: one client, one put at a time, each waiting for its answer.
Its ceiling is what such a put cannot avoid: a CURVE round trip of a put's bytes plus one fsync
of a small append on the same file system, their medians (p99s) added, measured in blocks
that take turns with the puts; the node's CPU time per put is given beside it.

The ceiling of each other figure is a bare echo server in a process of its own (a CurveServer and
its allow-list, ``recv_multipart`` then ``send_multipart``), reached by bare DEALER sockets
with the same keys, messages of the same size and the same number in flight. Figure runs
and ceiling runs take turns, so that both see the same load.
"""

from __future__ import annotations

import errno
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import zmq

from vledger.broker.client import Client, NodeAddress
from vledger.broker.curve import AllowList, CurveServer, curve_client, process_context
from vledger.broker.keys import KeyPair, load_public, load_secret, new_keypair
from vledger.broker.redis_server import RedisServer, free_ports
from vledger.node.errors import NodeUnavailableError
from vledger.node.record import Entry
from vledger.node.wire import encode_request

from .fixtures import LEDGER, Sizes, entries, genesis, scratch_dir, timed
from .report import Ceiling, Figure, progress

COMMAND = ".venv/bin/python -m bench --only ingest"
DESK_COMMAND = ".venv/bin/python -m bench --only ingest-desk"
TARGET_ONE_CLIENT = 5_000.0  # records/s
TARGET_CLIENTS = 20_000.0  # records/s, durable on the home, tree and checkpoints on (issue 15)
TARGET_HELLO_MEDIAN_MS = 0.15
DIFFICULTY = 0
WINDOW = 128  # requests in flight per client
CLIENTS = 8  # client processes of figure 4b: each its own key, account, Client and interpreter
HELLO_BLOCK = 250  # round trips to the node, then as many to the echo server, in turn
SEQUENTIAL_BLOCK = 250  # puts one at a time, then as many echoes and as many fsyncs, in turn
TARGET_SEQUENTIAL_MEDIAN_MS = 0.5
SMALL_WRITE = b"\0" * 320  # about a record: what the fsync ceiling appends before each fsync
NODE = "ingest-1"
ADMIN = "admin"  # `vledger keygen --cluster` makes this key pair beside the nodes'
TIMEOUT = 30.0  # seconds: a reply, a start or a stop that takes longer is a failure
START_SECONDS_EACH = 3.0  # more seconds a client process may take to start, each (ClientProcesses.start)
VLEDGER = Path(sys.executable).parent / "vledger"
# Starts of a node on ports picked right before it, when another process took one first: a
# port free when picked is only ours once bound (bench/scale.py's followers do the same).
BIND_ATTEMPTS = 5
IN_USE = os.strerror(errno.EADDRINUSE)  # how a node's log says its port was taken ("cannot bind ...")
# Spawned, not forked: a forked child would share the parent's ZeroMQ Context.
SPAWN = multiprocessing.get_context("spawn")

CLUSTER = """\
[cluster]
name = "bench"
keys = "keys"
data = "data"
redis = "{redis}"
default_home = "{node}"

[ingest]
throttle_rate = 1000000000  # the bench measures the nodes, not the throttle
throttle_burst = 1000000000

[nodes.{node}]
role = "ingest"
host = "127.0.0.1"
port = {port}
pub_port = {pub_port}
"""


# --- the node and the echo server -------------------------------------------------------


def _vledger(env: dict[str, str], *args: str) -> None:
    done = subprocess.run([str(VLEDGER), *args], env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"vledger {args[0]} failed ({done.returncode}): {done.stderr.strip()}")


def _log_tail(path: Path, lines: int = 10) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_for_hello(process: subprocess.Popen[bytes], node: NodeAddress, keys: KeyPair, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    with Client(node, keys, timeout=0.5) as client:
        while True:
            code = process.poll()
            if code is not None:
                raise RuntimeError(f"the ingest node exited with status {code}: {_log_tail(log)}")
            try:
                client.hello()
                return
            except NodeUnavailableError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the ingest node did not answer hello within {TIMEOUT:g} s: {_log_tail(log)}"
                    ) from None


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the node answers what is in flight and commits its queue), SIGKILL if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True, slots=True)
class _RunningNode:
    address: NodeAddress
    admin: KeyPair
    pid: int
    redis_pid: int

    def cpu_seconds(self) -> float:
        """CPU time of the node process so far, all its threads (user + system, from /proc)."""
        return _cpu_seconds(self.pid)

    def outbox_pids(self) -> list[int]:
        """The node's child processes (its outbox process), from /proc."""
        return _children(self.pid)


def _cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid`` so far, all its threads (user + system, from /proc); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (every thread's children, from /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            continue  # a thread that ended meanwhile
    return found


@contextmanager
def _node(directory: Path, nodes: str = "", *, settings: str = "", code: Path | None = None) -> Iterator[_RunningNode]:
    """A cluster in ``directory`` of one ingest node, answering hello, and of ``nodes`` (more
    ``[nodes.NAME]`` tables, for the caller to start: their keys are made with the node's).
    ``settings``: more tables of the cluster file (``[replication]``, ...); ``code``: a folder
    holding the ``vledger`` package the node runs instead of this one (bench/lone_put_ab.py).

    The node's ports are picked right before it starts (after the keys and the admin, which
    take two interpreters' start-up), and picked afresh, for at most BIND_ATTEMPTS starts,
    when its log says another process took one before it bound it."""
    if not VLEDGER.is_file():
        raise RuntimeError(f"no {VLEDGER}: run the bench with the virtualenv's python (.venv/bin/python -m bench)")
    with RedisServer(directory / "redis") as redis:
        config = directory / "cluster.toml"
        port, pub_port = free_ports(2)  # placeholders until the node starts
        config.write_text(CLUSTER.format(redis=redis.url, node=NODE, port=port, pub_port=pub_port) + nodes + settings)
        env = {**os.environ, "REDIS_URL": redis.url, "PYTHONUNBUFFERED": "1"}
        if code is not None:  # first on the path: the vledger imported is the one in ``code``
            env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(code), os.environ.get("PYTHONPATH"))))
        keys = directory / "keys"
        _vledger(env, "keygen", "--cluster", str(config))
        _vledger(
            env, "admin", "bootstrap", "--config", str(config), "--account", ADMIN, "--key", str(keys / f"{ADMIN}.key")
        )
        admin = load_secret(keys / f"{ADMIN}.key_secret")
        log = directory / "node.log"
        others = {table["port"] for name, table in tomllib.loads(config.read_text())["nodes"].items() if name != NODE}
        for _ in range(BIND_ATTEMPTS):
            placeholder = _node_table(port, pub_port)
            while (fresh := free_ports(2)) and others & set(fresh):
                pass
            port, pub_port = fresh
            config.write_text(config.read_text().replace(placeholder, _node_table(port, pub_port)))
            with log.open("ab") as out:
                process = subprocess.Popen(
                    [str(VLEDGER), "ingest", "--config", str(config), "--node", NODE],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            node = NodeAddress(f"tcp://127.0.0.1:{port}", load_public(keys / f"{NODE}.key"))
            try:
                _wait_for_hello(process, node, admin, log)
                break
            except RuntimeError:
                _stop(process)
                if not port_taken(log, port, pub_port):
                    raise
                progress(f"ingest: port {port} or {pub_port} taken before the node bound it; starting it again")
        else:
            raise RuntimeError(f"the ingest node's ports were taken before it bound them, {BIND_ATTEMPTS} times")
        try:
            assert redis.process is not None  # started by the with statement
            yield _RunningNode(node, admin, process.pid, redis.process.pid)
        finally:
            _stop(process)


def _node_table(port: int, pub_port: int) -> str:
    return CLUSTER.split("[nodes.{node}]")[1].format(port=port, pub_port=pub_port)


def port_taken(log: Path, *ports: int) -> bool:
    """Whether a node's ``log`` says it could not bind one of ``ports``: another process took
    it after it was picked (a node binds with SO_REUSEADDR: only a listener takes it)."""
    text = log.read_text(errors="replace")
    return any(f"127.0.0.1:{port}: {IN_USE}" in text for port in ports)


def _echo_serve(keys: KeyPair, allowed: list[str], endpoint: multiprocessing.connection.Connection) -> None:
    """The echo server process: every message straight back to its sender, until terminated."""
    with CurveServer(keys, "tcp://127.0.0.1:0", AllowList(allowed)) as server:
        server.self_test()
        endpoint.send(server.connect_endpoint)
        socket = server.socket
        while True:
            socket.send_multipart(socket.recv_multipart(copy=False), copy=False)


@contextmanager
def _echo_server(allowed: list[str]) -> Iterator[NodeAddress]:
    keys = new_keypair()
    ours, theirs = SPAWN.Pipe()
    process = SPAWN.Process(target=_echo_serve, args=(keys, allowed, theirs), name="bench-echo", daemon=True)
    process.start()
    try:
        if not ours.poll(TIMEOUT):
            raise RuntimeError(f"the echo server did not start within {TIMEOUT:g} s")
        try:
            endpoint = ours.recv()
        except EOFError:
            raise RuntimeError(f"the echo server exited with status {process.exitcode}") from None
        yield NodeAddress(endpoint, keys.public)
    finally:
        process.terminate()
        process.join(TIMEOUT)
        if process.is_alive():
            process.kill()
            process.join()


# --- the client side: one loop for the node, one for the echo -----------------------------


def _echo_socket(echo: NodeAddress, keys: KeyPair) -> zmq.Socket[Any]:
    socket = curve_client(process_context(), zmq.DEALER, echo.key, keys)
    socket.connect(echo.endpoint)
    return socket


def _echoes(socket: zmq.Socket[Any], message: bytes, count: int, window: int) -> int:
    """``count`` round trips of ``message``, up to ``window`` in flight, as Client.call_many keeps them."""
    sent = received = 0
    while received < count:
        while sent < count and sent - received < window:
            socket.send(message)
            sent += 1
        if not socket.poll(int(TIMEOUT * 1000)):
            raise RuntimeError(f"the echo server did not answer within {TIMEOUT:g} s")
        socket.recv()
        received += 1
    return count


def _puts(client: Client, batch: list[Entry], window: int) -> int:
    receipts = client.put_many(batch, window=window)
    fresh = sum(1 for r in receipts if not r["duplicate"])
    if fresh != len(batch):
        raise RuntimeError(f"{len(batch) - fresh} of {len(batch)} puts were duplicates: the runs overlap")
    return len(batch)


def _put_request(entry: Entry) -> bytes:
    """A put's bytes, as the client sends them: the echo's message, so that both carry as much."""
    return encode_request(1, "put", {"content": entry.content_bytes, "nonce": entry.nonce})


@dataclass(frozen=True, slots=True)
class _PutJob:
    batch: list[Entry]
    window: int


@dataclass(frozen=True, slots=True)
class _EchoJob:
    message: bytes
    count: int
    window: int


@dataclass(frozen=True, slots=True)
class _Done:
    start: float  # time.monotonic(): one clock for every process of this machine
    end: float
    count: int
    error: str = ""
    cpu: float = 0.0  # the process's CPU seconds from start to end (all its threads: its ZeroMQ I/O's too)


def _client_process(
    keys: KeyPair,
    node: NodeAddress,
    echo: NodeAddress,
    jobs: Queue[_PutJob | _EchoJob | None],
    results: Queue[_Done],
    start_line: Barrier,
) -> None:
    """One of figure 4b's clients: says it is connected, then runs each job it is given (all the
    clients start it together) until it gets None. Every job, and the start, gets one answer."""
    with Client(node, keys, timeout=TIMEOUT) as client:
        socket = _echo_socket(echo, keys)
        try:
            job: _PutJob | _EchoJob | None = None
            while True:
                try:
                    start = end = time.monotonic()
                    cpu = 0.0
                    if job is None:  # the start: both CURVE handshakes before any clock starts
                        client.hello()
                        count = _echoes(socket, b"ready", 1, 1)
                    else:
                        start_line.wait(TIMEOUT)
                        start, cpu = time.monotonic(), time.process_time()
                        if isinstance(job, _PutJob):
                            count = _puts(client, job.batch, job.window)
                        else:
                            count = _echoes(socket, job.message, job.count, job.window)
                        end, cpu = time.monotonic(), time.process_time() - cpu
                    results.put(_Done(start, end, count, cpu=cpu))
                except Exception as e:
                    results.put(_Done(0.0, 0.0, 0, repr(e)))
                if (job := jobs.get()) is None:
                    return
        finally:
            socket.close(linger=0)


class _ClientProcesses:
    """Figure 4b's client processes, started once and given a job per run."""

    def __init__(self, keys: Sequence[KeyPair], node: NodeAddress, echo: NodeAddress) -> None:
        self._results: Queue[_Done] = SPAWN.Queue()
        self._jobs: list[Queue[_PutJob | _EchoJob | None]] = [SPAWN.Queue() for _ in keys]
        self.last_cpu = 0.0  # the CPU seconds all processes spent on their last job (each measures its own)
        self._start_line = SPAWN.Barrier(len(keys))  # kept: the children rebuild it from this one
        self._processes = [
            SPAWN.Process(
                target=_client_process,
                args=(pair, node, echo, jobs, self._results, self._start_line),
                name=f"bench-client-{i}",
                daemon=True,
            )
            for i, (pair, jobs) in enumerate(zip(keys, self._jobs, strict=True))
        ]

    def start(self) -> None:
        for process in self._processes:
            process.start()
        # Each says it is connected. Every fresh interpreter imports the client first (about a
        # CPU second each): 16 of them on a loaded 2-core host took longer than one TIMEOUT.
        self._collect(TIMEOUT + START_SECONDS_EACH * len(self._processes))

    def _collect(self, timeout: float = TIMEOUT) -> list[_Done]:
        """One answer from each process; a process that died or went silent fails the run."""
        done: list[_Done] = []
        deadline = time.monotonic() + timeout
        while len(done) < len(self._processes):
            try:
                done.append(self._results.get(timeout=0.5))
            except queue.Empty:
                dead = [p.name for p in self._processes if p.exitcode is not None]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(f"client processes {dead or 'all alive'} did not answer") from None
        failed = [d.error for d in done if d.error]
        if failed:
            raise RuntimeError(f"{len(failed)} client process(es) failed: {failed[0]}")
        return done

    def rate(self, jobs: Sequence[_PutJob | _EchoJob]) -> float:
        """Run one job in each process, all starting together; their total count per second."""
        for jobs_in, job in zip(self._jobs, jobs, strict=True):
            jobs_in.put(job)
        done = self._collect()
        self.last_cpu = sum(d.cpu for d in done)
        return sum(d.count for d in done) / (max(d.end for d in done) - min(d.start for d in done))

    def close(self, at_once: bool = False) -> None:
        """Let each process finish and exit; ``at_once`` (after a failure) terminates them instead."""
        for jobs_in in self._jobs:
            jobs_in.put(None)
        for process in self._processes:
            if process.pid is None:
                continue  # never started
            if at_once:
                process.terminate()
            process.join(TIMEOUT)
            if process.is_alive():
                process.kill()
                process.join()


@contextmanager
def _client_processes(keys: Sequence[KeyPair], node: NodeAddress, echo: NodeAddress) -> Iterator[_ClientProcesses]:
    processes = _ClientProcesses(keys, node, echo)
    try:
        processes.start()
        yield processes
    except BaseException:
        processes.close(at_once=True)
        raise
    processes.close()


# --- the figures ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _PutRun:
    rate: float  # records/s
    node_cores: float  # the node's CPU seconds per second of the run (all its threads)
    # CPU microseconds per put of each process of the machine that took part (the node, its
    # outbox process, redis-server, the clients): where the machine's two cores went.
    us_per_put: dict[str, float] = field(default_factory=dict)


def _machine_cpu(node: _RunningNode) -> dict[str, float]:
    """CPU seconds so far of each server process that takes part in a put, by role."""
    return {
        "node": node.cpu_seconds(),
        "outbox process": sum(_cpu_seconds(pid) for pid in node.outbox_pids()),
        "redis-server": _cpu_seconds(node.redis_pid),
    }


def _watching(
    node: _RunningNode, work: Callable[[], float], count: int, clients: _ClientProcesses | None = None
) -> _PutRun:
    """``work``'s rate (of ``count`` puts), how busy the node was meanwhile, and the CPU time per
    put of each process that took part. The clients' is what ``clients`` measured of their puts
    (not of taking their job: unpickling its entries), or this process's (None: it put them)."""
    cpu, own, start = _machine_cpu(node), time.process_time(), time.perf_counter()
    rate = work()
    elapsed, own = time.perf_counter() - start, time.process_time() - own
    after = _machine_cpu(node)
    us = {role: (after[role] - cpu[role]) / count * 1e6 for role in cpu}
    us["clients"] = (clients.last_cpu if clients is not None else own) / count * 1e6
    us["all"] = sum(us.values())
    return _PutRun(rate, (after["node"] - cpu["node"]) / elapsed, us)


def _batches(author: str, size: int, count: int) -> list[list[Entry]]:
    """``count`` batches of ``size`` distinct entries of ``author``, one batch per run."""
    prepared = entries(size * count, DIFFICULTY, author=author)
    return [prepared[i * size : (i + 1) * size] for i in range(count)]


def _writer(admin: Client, account: str) -> KeyPair:
    """A new writer account and key pair, made by the admin over the protocol."""
    keys = new_keypair()
    admin.call("account.add", {"account": account, "role": "writer"})
    admin.call("key.add", {"account": account, "key": keys.public})
    return keys


def _round_trips_ms(call: Callable[[], object], count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1_000)
    return times


def _fsyncs_ms(path: Path, count: int) -> list[float]:
    """``count`` times: append a small write to ``path`` and fsync it; the time of each, in ms."""
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(count):
            start = time.perf_counter()
            os.write(fd, SMALL_WRITE)
            os.fsync(fd)
            times.append((time.perf_counter() - start) * 1_000)
    finally:
        os.close(fd)
    return times


@dataclass(slots=True)
class _Sequential:
    """Figure 4e/4f's samples: puts one at a time, and the echoes and fsyncs taken in turn."""

    put_ms: list[float] = field(default_factory=list)
    echo_ms: list[float] = field(default_factory=list)
    fsync_ms: list[float] = field(default_factory=list)
    node_cpu_seconds: float = 0.0
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def ceiling_ms(self, quantile: Callable[[list[float]], float]) -> float:
        return quantile(self.echo_ms) + quantile(self.fsync_ms)


def _sequential(
    node: _RunningNode, client: Client, echo: zmq.Socket[Any], batch: list[Entry], put_message: bytes, scratch: Path
) -> _Sequential:
    """Figure 4e/4f: ``batch`` put one at a time, in blocks that take turns with as many bare
    echoes of a put's bytes and as many fsyncs, so that all three see the same load."""
    measured = _Sequential()
    for block in range(0, len(batch), SEQUENTIAL_BLOCK):
        entries_ = batch[block : block + SEQUENTIAL_BLOCK]
        cpu = node.cpu_seconds()
        for entry in entries_:
            start = time.perf_counter()
            receipt = client.put(entry)
            measured.put_ms.append((time.perf_counter() - start) * 1_000)
            if receipt["duplicate"]:
                raise RuntimeError("a sequential put was a duplicate: the runs overlap")
        measured.node_cpu_seconds += node.cpu_seconds() - cpu
        measured.echo_ms += _round_trips_ms(partial(_echoes, echo, put_message, 1, 1), len(entries_))
        measured.fsync_ms += _fsyncs_ms(scratch / "fsync.bin", len(entries_))
    measured.load = os.getloadavg()
    return measured


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


@dataclass(frozen=True, slots=True)
class _Measured:
    solo: list[_PutRun]
    solo_echo: list[float]
    clients: list[_PutRun]
    clients_echo: list[float]
    hello_ms: list[float]
    echo_ms: list[float]
    sequential: _Sequential
    proofs: list[float]  # proof.inclusion replies/s, one per run
    proofs_echo: list[float]
    proof_tree: int  # the tree size the proofs were asked in
    proof_message: bytes


def _measure(sizes: Sizes, directory: Path, put_message: bytes, hello_message: bytes) -> _Measured:
    """Set up the node, its writers and the echo server, then run every figure beside its ceiling."""
    reps = sizes.repeats
    progress(
        f"ingest: preparing {(sizes.ingest_records + CLIENTS * sizes.ingest_client_records) * reps:,} entries "
        f"(difficulty {DIFFICULTY})"
    )
    solo_batches = _batches("writer-0", sizes.ingest_records, reps)
    client_batches = [_batches(f"writer-{i}", sizes.ingest_client_records, reps) for i in range(1, CLIENTS + 1)]
    sequential_batch = entries(sizes.ingest_sequential, DIFFICULTY, author="writer-seq")
    with ExitStack() as stack:
        progress("ingest: starting redis-server and an ingest node")
        node = stack.enter_context(_node(directory))
        admin = stack.enter_context(Client(node.address, node.admin, timeout=TIMEOUT))
        solo_keys = _writer(admin, "writer-0")
        client_keys = [_writer(admin, f"writer-{i}") for i in range(1, CLIENTS + 1)]
        sequential_keys = _writer(admin, "writer-seq")
        admin.create_ledger(genesis(DIFFICULTY, author=ADMIN))
        allowed = [node.admin.public, solo_keys.public, sequential_keys.public, *(k.public for k in client_keys)]
        echo = stack.enter_context(_echo_server(allowed))
        solo = stack.enter_context(Client(node.address, solo_keys, timeout=TIMEOUT))
        solo_echo = _echo_socket(echo, solo_keys)
        stack.callback(solo_echo.close, 0)
        solo.hello()  # both CURVE handshakes before any clock starts
        _echoes(solo_echo, b"ready", 1, 1)

        progress(f"ingest: 4a {sizes.ingest_records:,} puts, 1 client, {WINDOW} in flight x {reps}, with the echo")
        solo_runs, solo_echo_runs = [], []
        for batch in solo_batches:
            solo_runs.append(_watching(node, partial(timed, partial(_puts, solo, batch, WINDOW)), len(batch)))
            solo_echo_runs.append(timed(partial(_echoes, solo_echo, put_message, len(batch), WINDOW)))

        progress(
            f"ingest: 4e {sizes.ingest_sequential:,} puts one at a time, in blocks of {SEQUENTIAL_BLOCK} "
            "with the echo and fsync"
        )
        sequential_client = stack.enter_context(Client(node.address, sequential_keys, timeout=TIMEOUT))
        sequential_client.hello()
        sequential_echo = _echo_socket(echo, sequential_keys)
        stack.callback(sequential_echo.close, 0)
        _echoes(sequential_echo, b"ready", 1, 1)
        sequential = _sequential(node, sequential_client, sequential_echo, sequential_batch, put_message, directory)

        progress(
            f"ingest: 4b {CLIENTS} client processes x {sizes.ingest_client_records:,} puts, {WINDOW} in flight each "
            f"x {reps}, with the echo"
        )
        client_runs, client_echo_runs = [], []
        echo_jobs = [_EchoJob(put_message, sizes.ingest_client_records, WINDOW)] * CLIENTS
        with _client_processes(client_keys, node.address, echo) as clients:
            for run_ in range(reps):
                put_jobs = [_PutJob(batches[run_], WINDOW) for batches in client_batches]
                client_runs.append(
                    _watching(node, partial(clients.rate, put_jobs), CLIENTS * sizes.ingest_client_records, clients)
                )
                client_echo_runs.append(clients.rate(echo_jobs))

        progress(f"ingest: 4c {sizes.ingest_hellos:,} hellos one at a time, in blocks of {HELLO_BLOCK} with the echo")
        hello_ms: list[float] = []
        echo_ms: list[float] = []
        for block in range(0, sizes.ingest_hellos, HELLO_BLOCK):
            count = min(HELLO_BLOCK, sizes.ingest_hellos - block)
            hello_ms += _round_trips_ms(solo.hello, count)
            echo_ms += _round_trips_ms(partial(_echoes, solo_echo, hello_message, 1, 1), count)

        stored = admin.call("size", {"ledger": LEDGER})["size"]
        expected = 1 + reps * (sizes.ingest_records + CLIENTS * sizes.ingest_client_records) + sizes.ingest_sequential
        if stored != expected:
            raise RuntimeError(f"the node holds {stored} records of {LEDGER!r}, not {expected}")

        progress(f"ingest: 4g {sizes.ingest_records:,} proof.inclusion in a tree of {stored:,}, {WINDOW} in flight")
        proof_message = encode_request(1, "proof.inclusion", {"ledger": LEDGER, "index": stored // 2, "size": stored})
        proof_runs, proof_echo_runs = [], []
        for run_ in range(reps):
            requests = _proof_requests(stored, sizes.ingest_records, seed=run_)
            proof_runs.append(timed(partial(_proofs, solo, requests, stored)))
            proof_echo_runs.append(timed(partial(_echoes, solo_echo, proof_message, len(requests), WINDOW)))
    return _Measured(
        solo_runs,
        solo_echo_runs,
        client_runs,
        client_echo_runs,
        hello_ms,
        echo_ms,
        sequential,
        proof_runs,
        proof_echo_runs,
        stored,
        proof_message,
    )


def _measure_desk(sizes: Sizes, directory: Path, put_message: bytes) -> tuple[_Sequential, list[float], list[float]]:
    """Figures 4c-4f alone, on a node that holds only the ledger's genesis (the whole section's
    4e runs after 4a's puts): the sequential puts beside the echo and fsync, then the hellos."""
    sequential_batch = entries(sizes.ingest_sequential, DIFFICULTY, author="writer-seq")
    hello_message = encode_request(1, "hello", {})
    with ExitStack() as stack:
        progress("ingest: starting redis-server and an ingest node")
        node = stack.enter_context(_node(directory))
        admin = stack.enter_context(Client(node.address, node.admin, timeout=TIMEOUT))
        sequential_keys = _writer(admin, "writer-seq")
        admin.create_ledger(genesis(DIFFICULTY, author=ADMIN))
        echo = stack.enter_context(_echo_server([node.admin.public, sequential_keys.public]))
        client = stack.enter_context(Client(node.address, sequential_keys, timeout=TIMEOUT))
        client.hello()  # both CURVE handshakes before any clock starts
        echo_socket = _echo_socket(echo, sequential_keys)
        stack.callback(echo_socket.close, 0)
        _echoes(echo_socket, b"ready", 1, 1)
        progress(f"ingest: 4e {sizes.ingest_sequential:,} puts one at a time, with the echo and fsync")
        sequential = _sequential(node, client, echo_socket, sequential_batch, put_message, directory)
        progress(f"ingest: 4c {sizes.ingest_hellos:,} hellos one at a time, with the echo")
        hello_ms: list[float] = []
        echo_ms: list[float] = []
        for block in range(0, sizes.ingest_hellos, HELLO_BLOCK):
            count = min(HELLO_BLOCK, sizes.ingest_hellos - block)
            hello_ms += _round_trips_ms(client.hello, count)
            echo_ms += _round_trips_ms(partial(_echoes, echo_socket, hello_message, 1, 1), count)
    return sequential, hello_ms, echo_ms


def _proof_requests(size: int, count: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """``count`` proof.inclusion requests for indexes spread over a tree of ``size`` (a fixed stride)."""
    stride = 7919 + seed  # a prime: the indexes visit the whole tree, not one subtree's cached paths
    return [("proof.inclusion", {"ledger": LEDGER, "index": (i * stride) % size, "size": size}) for i in range(count)]


def _proofs(client: Client, requests: list[tuple[str, dict[str, Any]]], size: int) -> int:
    """Send the requests with WINDOW in flight; each reply must be a proof of the asked tree's size."""
    depth = max(1, (size - 1).bit_length())
    for reply in client.call_many(requests, window=WINDOW):
        proof = reply.get("proof") if isinstance(reply, dict) else None
        if reply.get("size") != size or not isinstance(proof, list) or not 0 < len(proof) <= depth:
            raise RuntimeError(f"proof.inclusion: not a proof in a tree of {size}: {reply!r}")
    return len(requests)


def _desk_figures(
    seq: _Sequential,
    hello_ms: list[float],
    echo_ms: list[float],
    put_message: bytes,
    hello_message: bytes,
    command: str,
) -> list[Figure]:
    """Figures 4c-4f: the hello round trip and the sequential put, each beside its ceiling."""

    def echo_time(what: str, value: float) -> Ceiling:
        return Ceiling(
            f"CURVE echo round trip, {what}",
            value,
            "ms",
            f"bare DEALER send, poll, recv of a {len(hello_message)}-byte message (a hello request) to the "
            f"same echo process, one in flight, {HELLO_BLOCK} after each {HELLO_BLOCK} hellos",
        )

    def sequential_ceiling(what: str, quantile: Callable[[list[float]], float]) -> Ceiling:
        return Ceiling(
            f"CURVE echo round trip + fsync, {what}",
            seq.ceiling_ms(quantile),
            "ms",
            f"the {what} of a bare DEALER send, poll, recv of a {len(put_message)}-byte message (a put request) "
            f"to the echo process, plus the {what} of os.write of {len(SMALL_WRITE)} bytes (O_APPEND) then "
            f"os.fsync in the scratch folder, {SEQUENTIAL_BLOCK} of each after each {SEQUENTIAL_BLOCK} puts",
        )

    sequential_details = {
        "puts": len(seq.put_ms),
        "w": 0,
        "node CPU per put ms (all its threads)": round(seq.node_cpu_seconds / len(seq.put_ms) * 1_000, 3),
        "put mean ms": round(statistics.fmean(seq.put_ms), 3),
        "echo round trip p50/p99 ms": [round(statistics.median(seq.echo_ms), 3), round(_p99(seq.echo_ms), 3)],
        "fsync p50/p99 ms": [round(statistics.median(seq.fsync_ms), 3), round(_p99(seq.fsync_ms), 3)],
        "load average after the run (1, 5, 15 min)": [round(load, 2) for load in seq.load],
    }
    hello_details = {
        "samples": len(hello_ms),
        "hello mean ms": round(statistics.fmean(hello_ms), 3),
        "hello max ms": round(max(hello_ms), 3),
    }
    return [
        Figure(
            key="4c",
            name="hello round trip, 1 in flight, median",
            value=statistics.median(hello_ms),
            unit="ms",
            ceiling=echo_time("median", statistics.median(echo_ms)),
            command=command,
            higher_is_better=False,
            target=TARGET_HELLO_MEDIAN_MS,
            details=hello_details,
        ),
        Figure(
            key="4d",
            name="hello round trip, 1 in flight, p99",
            value=_p99(hello_ms),
            unit="ms",
            ceiling=echo_time("p99", _p99(echo_ms)),
            command=command,
            higher_is_better=False,
            details=hello_details,
        ),
        Figure(
            key="4e",
            name="durable put, 1 client, 1 in flight (each waits for its answer), median",
            value=statistics.median(seq.put_ms),
            unit="ms",
            ceiling=sequential_ceiling("median", statistics.median),
            command=command,
            higher_is_better=False,
            target=TARGET_SEQUENTIAL_MEDIAN_MS,
            details=sequential_details,
        ),
        Figure(
            key="4f",
            name="durable put, 1 client, 1 in flight (each waits for its answer), p99",
            value=_p99(seq.put_ms),
            unit="ms",
            ceiling=sequential_ceiling("p99", _p99),
            command=command,
            higher_is_better=False,
            details=sequential_details,
        ),
    ]


def run_desk(sizes: Sizes) -> list[Figure]:
    """Only figures 4c-4f (``--only ingest-desk``): a minute instead of the section's many."""
    put_message = _put_request(entries(1, DIFFICULTY, author="writer-0")[0])
    with scratch_dir() as directory:
        seq, hello_ms, echo_ms = _measure_desk(sizes, directory, put_message)
    return _desk_figures(seq, hello_ms, echo_ms, put_message, encode_request(1, "hello", {}), DESK_COMMAND)


def run(sizes: Sizes) -> list[Figure]:
    put_message = _put_request(entries(1, DIFFICULTY, author="writer-0")[0])
    hello_message = encode_request(1, "hello", {})
    with scratch_dir() as directory:
        m = _measure(sizes, directory, put_message, hello_message)

    def echo(clients: str, rate: float) -> Ceiling:
        return Ceiling(
            f"CURVE echo, {clients}, {WINDOW} in flight",
            rate,
            "round trips/s",
            f"bare DEALER of {clients} to a CurveServer ROUTER process (allow-list, recv_multipart then "
            f"send_multipart), {len(put_message)}-byte messages (a put request), {WINDOW} in flight, "
            "after each put run",
        )

    def put_details(records: int, runs: list[_PutRun], echoes: list[float]) -> dict[str, Any]:
        return {
            "records per run": records,
            "entries": f"prepared before timing, difficulty {DIFFICULTY} (no proof of work to do)",
            "node CPU in cores (best run)": round(max(runs, key=lambda r: r.rate).node_cores, 2),
            "CPU us per put by process (median of runs)": {
                role: round(statistics.median(r.us_per_put[role] for r in runs), 1) for role in runs[0].us_per_put
            },
            "runs (records/s)": [round(r.rate) for r in runs],
            "echo runs (round trips/s)": [round(r) for r in echoes],
        }

    return [
        Figure(
            key="4a",
            name=f"durable put over CURVE, 1 client, {WINDOW} in flight",
            value=max(r.rate for r in m.solo),
            unit="records/s",
            ceiling=echo("1 client", max(m.solo_echo)),
            command=COMMAND,
            target=TARGET_ONE_CLIENT,
            details=put_details(sizes.ingest_records, m.solo, m.solo_echo),
        ),
        Figure(
            key="4b",
            name=f"durable put over CURVE, {CLIENTS} client processes, {WINDOW} in flight each",
            value=max(r.rate for r in m.clients),
            unit="records/s",
            ceiling=echo(f"{CLIENTS} client processes", max(m.clients_echo)),
            command=COMMAND,
            target=TARGET_CLIENTS,
            details=put_details(CLIENTS * sizes.ingest_client_records, m.clients, m.clients_echo),
        ),
        *_desk_figures(m.sequential, m.hello_ms, m.echo_ms, put_message, hello_message, COMMAND),
        Figure(
            key="4g",
            name=f"proof.inclusion served over CURVE, 1 client, {WINDOW} in flight",
            value=max(m.proofs),
            unit="proofs/s",
            ceiling=Ceiling(
                f"CURVE echo, 1 client, {WINDOW} in flight",
                max(m.proofs_echo),
                "round trips/s",
                f"bare DEALER to the same CurveServer ROUTER echo process, {len(m.proof_message)}-byte messages "
                f"(a proof.inclusion request; the node's reply also carries ~{(m.proof_tree - 1).bit_length()} "
                f"hashes of 32 bytes), {WINDOW} in flight, after each proof run",
            ),
            command=COMMAND,
            details={
                "proofs per run": sizes.ingest_records,
                "tree size": m.proof_tree,
                "indexes": "spread over the whole tree by a prime stride; each reply's size and depth checked",
                "runs (proofs/s)": [round(r) for r in m.proofs],
                "echo runs (round trips/s)": [round(r) for r in m.proofs_echo],
            },
        ),
    ]
