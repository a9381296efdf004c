"""Figure 9: puts per second as client processes are added, and memory over a long run.

9a-N: the node of figure 4 (a real ``vledger ingest`` with its Redis), N = 1, 2, 4, 8, 16 client
processes (1 and 2 with --quick), each its own account, key and interpreter, 128 puts in flight each, beside the bare
CURVE echo reached by the same N processes right after (figure 4's ceiling). A curve that
stops rising before the echo does shows where the node stops taking more work.

9b-9f: the resident memory (VmRSS) of each process kind of a cluster while 8 client processes (2 with --quick)
put ``rss_records`` records (a million in ``make bench``) to its ingest node: the node (9b),
its redis-server (9c), and a replica (9d), an observer (9e) and the verifier (9f) that follow
it, in a cluster of their own started after 9a (so that 9a's puts share the cores with no
follower). Sampled after each tenth, once the followers hold every record put so far (the
replica and the observer report the height, the verifier's consumer group has nothing left
to read or acknowledge). The ceiling is the same process's memory after the first tenth: a
ratio near 1 says the memory stays flat (caches bounded), a rising one that something grows
with the ledger. The children of each process (the node's outbox process, worker processes)
are in the details. Redis is meant to grow until each ledger's stream holds
``stream_max_len`` records (a million by default, about 400 bytes each), and to stay flat
from there on.
"""

from __future__ import annotations

import os
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from vledger.broker.client import Client, NodeAddress
from vledger.broker.keys import load_public
from vledger.broker.redis_server import connect, free_ports
from vledger.broker.replication import ReplicationLedger
from vledger.config.cluster import ReplicationSettings
from vledger.verifier.checks import GROUP

from . import ingest
from .fixtures import LEDGER, Sizes, entries, genesis, scratch_dir
from .report import Ceiling, Figure, progress

COMMAND = ".venv/bin/python -m bench --only scale"
RSS_SAMPLES = 10
CATCH_UP_SECONDS = 300.0  # the most the followers may take to hold what was put, at a sample
POLL = 0.05  # seconds between looks at the followers' progress
# The followers of 9d-9f: their [nodes] tables, and which figure shows each.
FOLLOWERS = {"replica-1": ("replica", "9d"), "observer-1": ("observer", "9e"), "verifier-1": ("verifier", "9f")}
FOLLOWER_NODE = """
[nodes.{name}]
role = "{role}"
host = "127.0.0.1"
port = {port}
"""


def _follower_tables(ports: dict[str, int]) -> str:
    return "".join(
        FOLLOWER_NODE.format(name=name, role=role, port=ports[name]) for name, (role, _) in FOLLOWERS.items()
    )


def _rss_mb(pid: int) -> float:
    """The resident memory of process ``pid`` (VmRSS of /proc/<pid>/status), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"process {pid} reports no VmRSS")


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (their parent id, from /proc/<child>/stat)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _rss_of(pid: int) -> tuple[float, list[float]]:
    """The resident memory of ``pid`` and of each of its children, in MiB."""
    children = []
    for child in _children(pid):
        try:
            children.append(round(_rss_mb(child), 1))
        except (OSError, RuntimeError):  # ended meanwhile
            continue
    return _rss_mb(pid), children


@contextmanager
def _followers(
    directory: Path, node: ingest._RunningNode, pick: Callable[[int], list[int]] = free_ports
) -> Iterator[dict[str, int]]:
    """Start the FOLLOWERS of the cluster in ``directory`` (made by ingest._node with their
    tables) and yield their pids by name once each answers hello; stop them afterwards.

    Their ports are picked (``pick(count)``) right before they start, and written into their
    tables: the ports the tables held while the ingest node started are only placeholders (it
    never connects to them: they subscribe to its feed). A port can still be taken between its
    pick and its bind, by any other process on the host (another test worker's node or
    Redis): a follower that exits saying so is started again with all the followers, on
    fresh ports, at most ingest.BIND_ATTEMPTS times. Any other failure is raised."""
    config = directory / "cluster.toml"
    settings = tomllib.loads(config.read_text())
    redis_url = settings["cluster"]["redis"]
    # The ingest node's own ports: the cluster file refuses a port named twice.
    ours = {settings["nodes"][ingest.NODE][key] for key in ("port", "pub_port")}
    placeholders = {name: settings["nodes"][name]["port"] for name in FOLLOWERS}
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}
    for attempt in range(1, ingest.BIND_ATTEMPTS + 1):
        ports = _fresh_ports(pick, ours)
        config.write_text(config.read_text().replace(_follower_tables(placeholders), _follower_tables(ports)))
        placeholders = ports
        processes = _start_followers(directory, config, env)
        try:
            taken = _wait_for_hellos(processes, node, ports, directory)
        except BaseException:
            _stop_all(processes)
            raise
        if not taken:
            break
        _stop_all(processes)
        progress(f"scale: port {', '.join(map(str, taken))} taken before a follower bound it; attempt {attempt + 1}")
    else:
        raise RuntimeError(f"the followers' ports were taken before they bound them, {ingest.BIND_ATTEMPTS} times")
    try:
        yield {name: process.pid for name, process in processes.items()}
    finally:
        _stop_all(processes)


def _fresh_ports(pick: Callable[[int], list[int]], taken: set[int]) -> dict[str, int]:
    """A port for each follower, none of ``taken`` (the ingest node's)."""
    ports: list[int] = []
    while len(ports) < len(FOLLOWERS):
        ports += [port for port in pick(len(FOLLOWERS) - len(ports)) if port not in taken and port not in ports]
    return dict(zip(FOLLOWERS, ports, strict=True))


def _start_followers(directory: Path, config: Path, env: dict[str, str]) -> dict[str, subprocess.Popen[bytes]]:
    processes: dict[str, subprocess.Popen[bytes]] = {}
    for name, (role, _) in FOLLOWERS.items():  # all start together: their interpreters load side by side
        with (directory / f"{name}.log").open("ab") as out:
            processes[name] = subprocess.Popen(
                [str(ingest.VLEDGER), role, "--config", str(config), "--node", name],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
    return processes


def _wait_for_hellos(
    processes: dict[str, subprocess.Popen[bytes]], node: ingest._RunningNode, ports: dict[str, int], directory: Path
) -> list[int]:
    """Until every follower answers hello: [] then. The ports of those that exited because
    their port was taken, once every other one answered or exited too (all start again);
    raises RuntimeError for any other failure."""
    taken = []
    for name, process in processes.items():
        log = directory / f"{name}.log"
        address = NodeAddress(f"tcp://127.0.0.1:{ports[name]}", load_public(directory / "keys" / f"{name}.key"))
        try:
            ingest._wait_for_hello(process, address, node.admin, log)
        except RuntimeError:
            if process.poll() is None or not ingest.port_taken(log, ports[name]):
                raise
            taken.append(ports[name])
    return taken


def _stop_all(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        ingest._stop(process)


def _wait_for_followers(replication: ReplicationLedger, height: int, directory: Path) -> float:
    """Until the replica and the observer hold ``height`` and the verifier has read and
    acknowledged every stream entry; returns the seconds waited. Raises RuntimeError after
    CATCH_UP_SECONDS."""
    started = time.monotonic()
    stream = replication.stream_key(LEDGER)
    while True:
        held = replication.held(LEDGER)
        groups = {g["name"]: g for g in replication.client.xinfo_groups(stream)}
        checked = groups.get(GROUP.encode())
        if (
            all(held.get(name, -1) >= height for name, (role, _) in FOLLOWERS.items() if role != "verifier")
            and checked is not None
            and checked["lag"] == 0
            and checked["pending"] == 0
        ):
            return time.monotonic() - started
        if time.monotonic() - started > CATCH_UP_SECONDS:
            logs = {name: ingest._log_tail(directory / f"{name}.log", 3) for name in FOLLOWERS}
            raise RuntimeError(
                f"the followers did not reach height {height:,} in {CATCH_UP_SECONDS:g} s: held {held}, "
                f"verifier group {checked}; logs {logs}"
            )
        time.sleep(POLL)


class _Writers:
    """The scale writers' entries, made batch by batch with request ids that never repeat."""

    def __init__(self, count: int) -> None:
        self.names = [f"scale-{i}" for i in range(count)]
        self._next = dict.fromkeys(self.names, 1)

    def jobs(self, clients: int, each: int) -> list[ingest._PutJob]:
        jobs = []
        for name in self.names[:clients]:
            jobs.append(
                ingest._PutJob(entries(each, ingest.DIFFICULTY, author=name, first=self._next[name]), ingest.WINDOW)
            )
            self._next[name] += each
        return jobs


def run(sizes: Sizes) -> list[Figure]:
    return [*_curve(sizes), *_memory(sizes)]


def _curve(sizes: Sizes) -> list[Figure]:
    """Figures 9a: puts per second as client processes are added, beside the CURVE echo."""
    put_message = ingest._put_request(entries(1, ingest.DIFFICULTY, author="scale-0")[0])
    writers = _Writers(max(sizes.scale_steps))
    curve: dict[int, tuple[float, float]] = {}
    with scratch_dir() as directory, ExitStack() as stack:
        progress("scale: starting redis-server and an ingest node")
        node = stack.enter_context(ingest._node(directory))
        admin = stack.enter_context(Client(node.address, node.admin, timeout=ingest.TIMEOUT))
        keys = [ingest._writer(admin, name) for name in writers.names]
        admin.create_ledger(genesis(ingest.DIFFICULTY, author=ingest.ADMIN))
        echo = stack.enter_context(ingest._echo_server([node.admin.public, *(k.public for k in keys)]))
        for clients in sizes.scale_steps:
            each = sizes.scale_records // clients
            progress(f"scale: 9a {clients} client processes x {each:,} puts, then the echo")
            with ingest._client_processes(keys[:clients], node.address, echo) as processes:
                rate = processes.rate(writers.jobs(clients, each))
                echo_rate = processes.rate([ingest._EchoJob(put_message, each, ingest.WINDOW)] * clients)
            curve[clients] = (rate, echo_rate)
    return [
        Figure(
            key=f"9a-{clients}",
            name=f"durable put over CURVE, {clients} client process{'es' if clients > 1 else ''}, "
            f"{ingest.WINDOW} in flight each",
            value=rate,
            unit="records/s",
            ceiling=Ceiling(
                f"CURVE echo, {clients} client processes, {ingest.WINDOW} in flight",
                echo_rate,
                "round trips/s",
                f"bare DEALERs of the same {clients} processes to a CurveServer ROUTER process, "
                f"{len(put_message)}-byte messages, {ingest.WINDOW} in flight each, right after the puts",
            ),
            command=COMMAND,
            details={"records": sizes.scale_records // clients * clients},
        )
        for clients, (rate, echo_rate) in curve.items()
    ]


def _memory(sizes: Sizes) -> list[Figure]:
    """Figures 9b-9f: each process's resident memory as the ledger grows (see the module's doc)."""
    clients = sizes.rss_clients
    writers = _Writers(clients)
    each = max(1, sizes.rss_records // RSS_SAMPLES // clients)
    # records put so far, then per process (its MiB, its children's MiB), and the seconds waited for the followers
    samples: list[tuple[int, dict[str, tuple[float, list[float]]], float]] = []
    nodes = _follower_tables(dict(zip(FOLLOWERS, free_ports(len(FOLLOWERS)), strict=True)))  # placeholders
    with scratch_dir() as directory, ExitStack() as stack:
        progress("scale: starting a cluster: redis-server, an ingest node, a replica, an observer, the verifier")
        node = stack.enter_context(ingest._node(directory, nodes))
        admin = stack.enter_context(Client(node.address, node.admin, timeout=ingest.TIMEOUT))
        keys = [ingest._writer(admin, name) for name in writers.names]
        admin.create_ledger(genesis(ingest.DIFFICULTY, author=ingest.ADMIN))
        echo = stack.enter_context(ingest._echo_server([node.admin.public, *(k.public for k in keys)]))
        followers = stack.enter_context(_followers(directory, node))
        pids = {"node": node.pid, "redis-server": node.redis_pid, **followers}
        redis_url = tomllib.loads((directory / "cluster.toml").read_text())["cluster"]["redis"]
        replication = ReplicationLedger(connect(redis_url))
        progress(f"scale: 9b {clients} client processes put {each * clients * RSS_SAMPLES:,} records")
        with ingest._client_processes(keys, node.address, echo) as processes:
            for sample in range(1, RSS_SAMPLES + 1):
                processes.rate(writers.jobs(clients, each))
                put = sample * each * clients
                waited = _wait_for_followers(replication, put, directory)
                samples.append((put, {name: _rss_of(pid) for name, pid in pids.items()}, waited))
                progress(
                    f"scale: {put:,} records, "
                    + ", ".join(f"{name} {mib:.0f} MiB" for name, (mib, _) in samples[-1][1].items())
                    + f" (waited {waited:.1f} s for the followers)"
                )

    first, last = samples[0], samples[-1]
    common = {
        "records put": last[0],
        "client processes": clients,
        "seconds waited for the followers, per sample": [round(w, 1) for _, _, w in samples],
    }
    kinds = {
        "9b": ("node", "the ingest node"),
        "9c": ("redis-server", "redis-server"),
        **{key: (name, f"the {role} ({name})") for name, (role, key) in FOLLOWERS.items()},
    }

    def details(name: str) -> dict[str, object]:
        ours: dict[str, object] = {
            **common,
            "samples (records, MiB)": [(n, round(rss[name][0], 1)) for n, rss, _ in samples],
            "its children's MiB (first sample, last)": (first[1][name][1], last[1][name][1]),
        }
        if name == "redis-server":
            ours["stream_max_len (records Redis keeps per ledger)"] = ReplicationSettings().stream_max_len
        return ours

    return [
        Figure(
            key=key,
            name=f"resident memory of {what} after {last[0]:,} records",
            value=last[1][name][0],
            unit="MiB",
            ceiling=Ceiling(
                f"{what}'s resident memory after {first[0]:,} records",
                first[1][name][0],
                "MiB",
                f"VmRSS of {what} after the first of {RSS_SAMPLES} equal batches of the same run",
            ),
            command=COMMAND,
            higher_is_better=False,
            details=details(name),
        )
        for key, (name, what) in kinds.items()
    ]
