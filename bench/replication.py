"""Figure 5: replication from a real ingest node to three real replica processes, beside bare loops.

The cluster is what production runs: a redis-server of its own, `vledger keygen --cluster`,
`vledger admin bootstrap`, a writer account added by the admin over the protocol, one
`vledger ingest` process and three `vledger replica` processes, on a ledger of difficulty 0
(entries prepared before the clock starts) so that no proof of work is measured.

* 5a, lag: one writer offers puts at a fixed rate, each sent when the schedule says (the
  loop waits on the socket until the next one is due, never a sleep that hopes), up to
  ``WINDOW`` in flight. A thread of this process follows the Redis channel ``vledger:held``
  (``<node> <ledger> <height>`` on every advance of a node's held height) and notes, on
  this host's ``time.monotonic()``, when each replica reports each height. A record's lag
  on a replica is the first report at or above its height minus the moment its put was
  acknowledged (the writer reading the node's reply, sent once the record is durable at
  home). Its ceiling: the one-way latency of a bare CURVE PUB/SUB pair, same messages,
  same offered rate, same percentile, measured in the same run. Among the details, the
  **cosignature latency**: the same, to each replica's report on ``vledger:cosigned`` of a
  checkpoint whose size covers the record (what ``put -w N`` waits for).
* 5b, catch-up: one replica is stopped (SIGTERM), records are put while it is down, the
  other replicas reach the head, then it is started again. The rate counts from its first
  answer to hello (its read socket serves, which it does just before its catch-up starts)
  to its report of the head, so that the process's start-up (interpreter, keys, sockets,
  self-tests) is left out; the rates from the start of the process and from its first
  held report are among the details. Its ceilings, taken right after each run: raw
  SQLite inserting the same rows ``catch_up_batch`` to a transaction (what the replica
  must at least write), and bare XRANGE reads of the same range in the same batches (what
  it must at least read).
* 5c, the feed's transport: a bare CURVE PUB socket in a process of its own sends real
  feed messages as fast as it can; the rate is what a bare SUB socket here receives.
  Ceiling: the same over plain TCP (no CURVE).
* 5d, the outbox's stream writes: ReplicationLedger.append (one Lua call that XADDs a run
  of records where it continues the stream) in calls of ``catch_up_batch`` real records to
  one stream. Ceiling: a bare script that only XADDs each record, same calls. Pipelined
  XADDs (redis-py's pipeline, ReplicationLedger.add; and the same commands written raw to
  the socket), which the outbox used before the Lua append, are among the details.

Ratios far from 1 are the point: they say how much of each path is the transport, and how
much is the node's own work (verification, SQLite, Python).
"""

from __future__ import annotations

import bisect
import contextlib
import math
import multiprocessing.connection
import multiprocessing.process
import os
import socket
import statistics
import struct
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq

from vledger.broker.client import Client, NodeAddress
from vledger.broker.curve import AllowList, CurveServer, curve_client, process_context
from vledger.broker.feed import FEED_DOMAIN, encode_record
from vledger.broker.keys import KeyPair, load_public, load_secret, new_keypair
from vledger.broker.redis_server import RedisServer, connect, free_port
from vledger.broker.replication import ReplicationLedger, StreamRecord, entry_id
from vledger.config.cluster import ReplicationSettings
from vledger.node.record import Entry
from vledger.node.storefile import DB_NAME
from vledger.node.storefile import connect as connect_store
from vledger.node.wire import encode_request

from .append import _sqlite_inserts
from .fixtures import LEDGER, Sizes, entries, genesis, scratch_dir, timed
from .ingest import ADMIN, CLUSTER, SPAWN, TIMEOUT, VLEDGER, _log_tail, _stop, _vledger, _wait_for_hello, _writer
from .report import Ceiling, Figure, progress

COMMAND = ".venv/bin/python -m bench --only replication"
CATCH_UP_COMMAND = ".venv/bin/python -m bench --only catchup"  # 5b alone
LAG_COMMAND = ".venv/bin/python -m bench --only lag"  # 5a alone
TARGET_LAG_P99_MS = 50.0  # issue 15
TARGET_CATCH_UP = 50_000.0  # records/s (issue 15)
OFFERED_RATE = 2_000  # puts/s of figure 5a
REPLICAS = 3
# Puts in flight at most; the schedule, not the window, sets the rate (as figure 4's clients).
# At 256 in flight the writer once waited for answers the node dropped: its reply queue's mark
# was max_queued_replies itself, which libzmq reached early (fixed: broker/curve.py reply_queue_mark).
WINDOW = 128
WARM_UP = 200  # paced puts before 5a's, not measured
DIFFICULTY = 0
NODE = "ingest-1"
WRITER = "writer-0"
OUTAGE = f"replica-{REPLICAS}"  # the replica stopped and started again in 5b
CATCH_UP_RUNS = 3  # outages in 5b (at most; one in --quick): the best catch-up counts
SETTINGS = ReplicationSettings()  # the cluster runs the defaults: the bench measures them
BATCH = SETTINGS.catch_up_batch  # records per XRANGE when catching up, per XADD pipeline in 5d
FEED_HWM = SETTINGS.receive_hwm  # both ends of the bare PUB/SUB, as the nodes set them
FEED_TOPIC = LEDGER.encode()
PROBE_TOPIC = b"*probe"
FEED_HOW = (
    "a CurveServer PUB (allow-list) in a process of its own sends feed messages "
    "(2 frames: topic, msgpack envelope of a real record) to a bare SUB in the bench process"
)
FEED_SILENCE_MS = 1_000  # the rate run ends when nothing more arrives for this long
HEAD_POLL = 0.005  # seconds between two looks at whether a replica reached the head


REPLICA = """
[nodes.{name}]
role = "replica"
host = "127.0.0.1"
port = {port}
"""


# --- this host's clock for every process, and how busy a process is ------------------------


def _cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid`` so far, all its threads (user + system, from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(samples: Sequence[float], p: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[p - 1]


# --- the cluster ------------------------------------------------------------------------


class _HeldListener:
    """Every advance of a held height of ``LEDGER``, as Redis publishes it, with its arrival time.

    On ``vledger:cosigned`` (``<witness> <ledger> <size>``), ``offset`` -1 turns each cosigned
    size into the last height it covers."""

    def __init__(self, redis_url: str, channel: str, offset: int = 0) -> None:
        self._offset = offset
        self._client = connect(redis_url)
        self._pubsub = self._client.pubsub()
        self._pubsub.subscribe(channel)
        deadline = time.monotonic() + TIMEOUT
        while True:  # subscribed before any put, so that no advance goes unheard
            message = self._pubsub.get_message(timeout=0.5)
            if message is not None and message["type"] == "subscribe":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no subscription to {channel} within {TIMEOUT:g} s")
        self.advances: dict[str, list[tuple[float, int]]] = {}  # node -> [(monotonic, height)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-held", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.1)
            if message is None or message["type"] != "message":
                continue
            now = time.monotonic()
            node, ledger, height = bytes(message["data"]).decode().split(" ")
            if ledger == LEDGER:
                self.advances.setdefault(node, []).append((now, int(height) + self._offset))

    def held(self, node: str) -> int:
        advances = self.advances.get(node)
        return advances[-1][1] if advances else -1

    def wait_for(self, nodes: Sequence[str], height: int, what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while any(self.held(n) < height for n in nodes):
            if time.monotonic() > deadline:
                held = {n: self.held(n) for n in nodes}
                raise RuntimeError(f"{what}: not every node reported height {height} within {TIMEOUT:g} s: {held}")
            time.sleep(HEAD_POLL)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._pubsub.close()
        self._client.close()


@dataclass
class _Cluster:
    directory: Path
    config: Path
    redis_url: str
    env: dict[str, str]
    node: NodeAddress
    admin: KeyPair
    replica_ports: dict[str, int]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    exits: list[str] = field(default_factory=list)  # replicas that did not stop with status 0

    def log(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    def start(self, name: str, role: str) -> subprocess.Popen[bytes]:
        with self.log(name).open("ab") as out:
            process = subprocess.Popen(
                [str(VLEDGER), role, "--config", str(self.config), "--node", name],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.processes[name] = process
        return process

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        _stop(process)
        if process.returncode != 0:
            self.exits.append(f"{name} exited with status {process.returncode}: {_log_tail(self.log(name))}")

    def wait_ready(self, name: str) -> None:
        """Until the node answers hello (a replica answers while its start-up catch-up runs)."""
        keys = load_public(self.directory / "keys" / f"{name}.key")
        port = self.replica_ports.get(name)
        address = self.node if port is None else NodeAddress(f"tcp://127.0.0.1:{port}", keys)
        _wait_for_hello(self.processes[name], address, self.admin, self.log(name))

    def answered_at(self, name: str) -> float:
        """When a starting node first answers hello (its read socket serves: its start-up is over).

        A bare DEALER that retries its connection every few milliseconds, not ZeroMQ's 100.
        """
        port = self.replica_ports[name]
        key = load_public(self.directory / "keys" / f"{name}.key")
        sock = curve_client(process_context(), zmq.DEALER, key, self.admin)
        try:
            sock.reconnect_ivl = 2
            sock.connect(f"tcp://127.0.0.1:{port}")
            deadline = time.monotonic() + TIMEOUT
            while True:
                sock.send(encode_request(1, "hello", {}))  # again now and then: a refused handshake loses it
                if sock.poll(250):
                    answered = time.monotonic()
                    sock.recv()
                    return answered
                if self.processes[name].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not answer hello after its start: {_log_tail(self.log(name))}")
        finally:
            sock.close(linger=0)

    @property
    def replicas(self) -> list[str]:
        return list(self.replica_ports)

    def store_db(self, name: str) -> Path:
        return self.directory / "data" / name / DB_NAME


@contextmanager
def _cluster(directory: Path) -> Iterator[_Cluster]:
    """One ingest node and ``REPLICAS`` replicas in ``directory``, each answering hello."""
    if not VLEDGER.is_file():
        raise RuntimeError(f"no {VLEDGER}: run the bench with the virtualenv's python (.venv/bin/python -m bench)")
    with RedisServer(directory / "redis") as redis:
        config = directory / "cluster.toml"
        port = free_port()
        replica_ports = {f"replica-{i}": free_port() for i in range(1, REPLICAS + 1)}
        text = CLUSTER.format(redis=redis.url, node=NODE, port=port, pub_port=free_port())
        text += "".join(REPLICA.format(name=name, port=p) for name, p in replica_ports.items())
        config.write_text(text)
        env = {**os.environ, "REDIS_URL": redis.url, "PYTHONUNBUFFERED": "1"}
        keys = directory / "keys"
        _vledger(env, "keygen", "--cluster", str(config))
        _vledger(
            env, "admin", "bootstrap", "--config", str(config), "--account", ADMIN, "--key", str(keys / f"{ADMIN}.key")
        )
        cluster = _Cluster(
            directory,
            config,
            redis.url,
            env,
            NodeAddress(f"tcp://127.0.0.1:{port}", load_public(keys / f"{NODE}.key")),
            load_secret(keys / f"{ADMIN}.key_secret"),
            replica_ports,
        )
        try:
            cluster.start(NODE, "ingest")
            for name in replica_ports:  # all start together: their interpreters load side by side
                cluster.start(name, "replica")
            for name in [NODE, *replica_ports]:
                cluster.wait_ready(name)
            yield cluster
        finally:
            for name in list(cluster.processes):
                if name != NODE:
                    cluster.stop(name)
            if NODE in cluster.processes:
                _stop(cluster.processes.pop(NODE))


# --- 5a: a paced writer ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Paced:
    sent: list[float]  # monotonic, per put
    acked: list[float]
    heights: list[int]
    slip_ms: float  # the most a put was sent after its time in the schedule


def _put_messages(batch: Sequence[Entry], first_id: int) -> list[bytes]:
    return [
        encode_request(first_id + i, "put", {"content": e.content_bytes, "nonce": e.nonce}) for i, e in enumerate(batch)
    ]


def _paced_puts(node: NodeAddress, keys: KeyPair, batch: Sequence[Entry], rate: float) -> _Paced:
    """Put ``batch`` at ``rate`` a second, each put at its time in the schedule, ``WINDOW`` in flight at most."""
    count = len(batch)
    first_id = 1_000
    messages = _put_messages(batch, first_id)
    sent, acked, heights = [0.0] * count, [0.0] * count, [-1] * count
    sock = curve_client(process_context(), zmq.DEALER, node.key, keys)
    try:
        sock.connect(node.endpoint)
        sock.send(encode_request(1, "hello", {}))  # the CURVE handshake before the schedule starts
        if not sock.poll(int(TIMEOUT * 1000)):
            raise RuntimeError(f"the ingest node did not answer hello within {TIMEOUT:g} s")
        sock.recv()
        start = time.monotonic() + 0.01
        slip = 0.0
        next_put = done = in_flight = 0
        while done < count:
            now = time.monotonic()
            while next_put < count and in_flight < WINDOW and start + next_put / rate <= now:
                sock.send(messages[next_put])
                sent[next_put] = now = time.monotonic()
                slip = max(slip, now - (start + next_put / rate))
                next_put += 1
                in_flight += 1
            if next_put < count and in_flight < WINDOW:  # wake when the next put is due, or on a reply
                wait_ms = max(1, math.ceil((start + next_put / rate - time.monotonic()) * 1000))
            else:
                wait_ms = int(TIMEOUT * 1000)
            if not sock.poll(wait_ms):
                if wait_ms >= TIMEOUT * 1000:
                    raise RuntimeError(f"the ingest node did not answer a put within {TIMEOUT:g} s")
                continue
            while True:
                try:
                    data = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                now = time.monotonic()
                reply = msgpack.unpackb(data, raw=False)
                if reply.get("ok") is not True:
                    raise RuntimeError(f"a put was refused: {reply.get('error')}")
                index = reply["id"] - first_id
                acked[index], heights[index] = now, reply["result"]["height"]
                if reply["result"]["duplicate"]:
                    raise RuntimeError("a put was answered as a duplicate: the runs overlap")
                done += 1
                in_flight -= 1
    finally:
        sock.close(linger=0)
    return _Paced(sent, acked, heights, slip * 1000)


def _lags_ms(times: Sequence[float], heights: Sequence[int], advances: Sequence[tuple[float, int]]) -> list[float]:
    """Per record, the first advance at or above its height minus ``times`` of the record, in ms."""
    advance_heights = [h for _, h in advances]
    lags = []
    for at, height in zip(times, heights, strict=True):
        i = bisect.bisect_left(advance_heights, height)
        if i == len(advances):
            raise RuntimeError(f"no advance reached height {height}")
        lags.append((advances[i][0] - at) * 1000)
    return lags


@dataclass(frozen=True, slots=True)
class _Lag:
    lags_ms: list[float]  # every (record, replica) pair
    details: dict[str, Any]


def _lag_run(
    cluster: _Cluster, listener: _HeldListener, cosigned: _HeldListener, writer: KeyPair, batch: Sequence[Entry]
) -> _Lag:
    warm_up, batch = batch[:WARM_UP], batch[WARM_UP:]
    warm = _paced_puts(cluster.node, writer, warm_up, OFFERED_RATE)  # first uses (caches, buffers) go unmeasured
    listener.wait_for(cluster.replicas, max(warm.heights), "5a, the warm-up")
    pids = {name: process.pid for name, process in cluster.processes.items()}
    cpu = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    paced = _paced_puts(cluster.node, writer, batch, OFFERED_RATE)
    head = max(paced.heights)
    listener.wait_for(cluster.replicas, head, "5a")
    elapsed = time.monotonic() - started
    cosigned.wait_for(cluster.replicas, head, "5a, the cosignatures")
    busy = {name: round((_cpu_seconds(pid) - cpu[name]) / elapsed, 2) for name, pid in pids.items()}

    per_replica = {name: _lags_ms(paced.acked, paced.heights, listener.advances[name]) for name in cluster.replicas}
    lags = [lag for values in per_replica.values() for lag in values]
    all_three = [max(values) for values in zip(*per_replica.values(), strict=True)]
    from_send = [
        lag for name in cluster.replicas for lag in _lags_ms(paced.sent, paced.heights, listener.advances[name])
    ]
    home = _lags_ms(paced.acked, paced.heights, listener.advances[NODE])
    ack_ms = [(a - s) * 1000 for s, a in zip(paced.sent, paced.acked, strict=True)]
    reports = {name: sum(1 for t, _ in listener.advances[name] if t >= started) for name in cluster.replicas}
    per_witness = {name: _lags_ms(paced.acked, paced.heights, cosigned.advances[name]) for name in cluster.replicas}
    all_cosigned = [max(values) for values in zip(*per_witness.values(), strict=True)]

    def p50_p99(values: Sequence[float]) -> list[float]:
        return [round(_percentile(values, 50), 2), round(_percentile(values, 99), 2)]

    details = {
        "lag": "from the put's acknowledgement (the writer reading the node's reply) to the bench reading the "
        "replica's vledger:held report of a height at or above the record's; both on this host's monotonic clock",
        "records": len(batch),
        "samples (records x replicas)": len(lags),
        "offered rate (puts/s, achieved)": round((len(batch) - 1) / (paced.sent[-1] - paced.sent[0])),
        "schedule slip max ms": round(paced.slip_ms, 2),
        "lag p50/p99 ms per replica": {name: p50_p99(values) for name, values in per_replica.items()},
        "lag p50/p99 ms until all 3 replicas hold it": p50_p99(all_three),
        "lag max ms": round(max(lags), 1),
        "lag min ms": round(min(lags), 2),
        "lag from the put's sending p50/p99 ms": p50_p99(from_send),
        "put acknowledgement p50/p99 ms (send to reply)": p50_p99(ack_ms),
        "home node's own held report p50/p99 ms after the ack": p50_p99(home),
        "held reports per replica": reports,
        "cosignature": "from the put's acknowledgement to the bench reading the replica's vledger:cosigned "
        "report of a checkpoint whose size covers the record (what a put's w waits for, before the home checks it)",
        "cosignature p50/p99 ms per replica": {name: p50_p99(values) for name, values in per_witness.items()},
        "cosignature p50/p99 ms until all 3 replicas cosigned (w=3)": p50_p99(all_cosigned),
        "cosignatures per replica": {
            name: sum(1 for t, _ in cosigned.advances[name] if t >= started) for name in cluster.replicas
        },
        "CPU in cores during the run": busy,
    }
    return _Lag(lags, details)


# --- 5b: catch-up after an outage -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _CatchUp:
    rate: float  # records/s from the replica's first hello answer after its restart to its report of the head
    details: dict[str, Any]


def _catch_up_run(
    cluster: _Cluster, listener: _HeldListener, writer: Client, batch: Sequence[Entry]
) -> tuple[_CatchUp, tuple[int, int]]:
    """Stop ``OUTAGE``, put ``batch``, let the others reach the head, start it and time its catch-up."""
    cluster.stop(OUTAGE)
    before = listener.held(OUTAGE)
    receipts = writer.put_many(batch, window=128)
    head = max(r["height"] for r in receipts)
    others = [name for name in cluster.replicas if name != OUTAGE]
    listener.wait_for([NODE, *others], head, "5b, the others")  # alone on the machine for its catch-up
    count_from = len(listener.advances.get(OUTAGE, []))
    started = time.monotonic()
    process = cluster.start(OUTAGE, "replica")
    ready = cluster.answered_at(OUTAGE)
    cpu_ready = _cpu_seconds(process.pid)
    listener.wait_for([OUTAGE], head, "5b")
    cpu_ended = _cpu_seconds(process.pid)
    after = [a for a in listener.advances[OUTAGE][count_from:] if a[1] > before]
    (first_at, first_height), ended = after[0], after[-1][0]
    records = head - before
    rate = records / (ended - ready)
    details = {
        "records missed": records,
        "measured": "from the restarted replica's first answer to hello (its read socket serves, the catch-up "
        "starts) to its vledger:held report of the head",
        "start-up s (process start to hello)": round(ready - started, 3),
        "records/s from the process's start": round(records / (ended - started)),
        "records/s from its first held report": (
            round((head - first_height) / (ended - first_at)) if ended > first_at else "one report only"
        ),
        "held reports during the catch-up": len(after),
        "replica CPU in cores while measured (all its threads)": round((cpu_ended - cpu_ready) / (ended - ready), 2),
    }
    return _CatchUp(rate, details), (before + 1, head + 1)


def _rows(cluster: _Cluster, start: int, stop: int) -> list[tuple[str, int, bytes, str, str, bytes]]:
    """The home node's stored rows of ``LEDGER`` at heights ``start`` to ``stop`` - 1."""
    conn = connect_store(cluster.store_db(NODE), readonly=True)
    try:
        rows: list[tuple[str, int, bytes, str, str, bytes]] = conn.execute(
            "SELECT ledger, height, hash, author, request_id, data FROM records"
            " WHERE ledger = ? AND height >= ? AND height < ? ORDER BY height",
            (LEDGER, start, stop),
        ).fetchall()
    finally:
        conn.close()
    if len(rows) != stop - start:
        raise RuntimeError(f"the home node holds {len(rows)} of heights {start} to {stop - 1}")
    return rows


def _xranges(redis_url: str, start: int, stop: int) -> int:
    """Read heights ``start`` to ``stop`` - 1 of the ledger's stream, ``BATCH`` at a time (bare XRANGE)."""
    client = connect(redis_url)
    key = ReplicationLedger(client).stream_key(LEDGER)
    read = 0
    try:
        while start + read < stop:
            entries_ = client.xrange(key, min=entry_id(start + read), max=entry_id(stop - 1), count=BATCH)
            if not entries_:
                raise RuntimeError(f"the stream lacks height {start + read}")
            read += len(entries_)
    finally:
        client.close()
    return read


# --- 5c: bare PUB/SUB ---------------------------------------------------------------------------


def _feed_serve(keys: KeyPair, allowed: str, frames: list[bytes], pipe: multiprocessing.connection.Connection) -> None:
    """The publisher process: a CURVE PUB (with its allow-list) and a plain PUB; runs the jobs it is sent."""
    ctx = process_context()
    with CurveServer(keys, "tcp://127.0.0.1:0", AllowList([allowed]), socket_type=zmq.PUB, domain=FEED_DOMAIN) as srv:
        srv.self_test()
        # libzmq copies a socket's options into each listener when it binds: a high-water mark set
        # after CurveServer bound applies to no connection of that endpoint, hence a second one.
        srv.socket.sndhwm = FEED_HWM
        curve_port = srv.socket.bind_to_random_port("tcp://127.0.0.1")
        plain = ctx.socket(zmq.PUB)
        plain.linger = 0
        plain.sndhwm = FEED_HWM
        plain_port = plain.bind_to_random_port("tcp://127.0.0.1")
        pipe.send((f"tcp://127.0.0.1:{curve_port}", f"tcp://127.0.0.1:{plain_port}"))
        topic, body = frames
        while (job := pipe.recv()) is not None:
            kind, curve, count, rate = job
            sock = srv.socket if curve else plain
            if kind == "probe":  # until the subscriber says it hears them (ZeroMQ's slow joiner)
                while not pipe.poll(0.005):
                    sock.send_multipart([PROBE_TOPIC, b""])
                pipe.recv()
                pipe.send("stopped")
            elif kind == "burst":
                for _ in range(count):
                    sock.send(topic, zmq.SNDMORE)
                    sock.send(body)
                pipe.send("sent")
            else:  # "paced": each message carries the moment it was sent
                start = time.monotonic() + 0.01
                tail = body[8:]
                for i in range(count):
                    due = start + i / rate
                    if (wait := due - time.monotonic()) > 0:
                        time.sleep(wait)
                    sock.send(topic, zmq.SNDMORE)
                    sock.send(struct.pack("<d", time.monotonic()) + tail)
                pipe.send("sent")
        plain.close()


class _Feed:
    """The bench's side of the bare PUB/SUB: a SUB on each of the publisher process's sockets."""

    def __init__(self, stack: ExitStack, frames: list[bytes]) -> None:
        server_keys, keys = new_keypair(), new_keypair()
        self._pipe, theirs = SPAWN.Pipe()
        process = SPAWN.Process(
            target=_feed_serve, args=(server_keys, keys.public, frames, theirs), name="bench-feed", daemon=True
        )
        process.start()
        stack.callback(self._end, process)
        if not self._pipe.poll(TIMEOUT):
            raise RuntimeError(f"the feed publisher did not start within {TIMEOUT:g} s")
        curve_endpoint, plain_endpoint = self._pipe.recv()
        ctx = process_context()
        self.sockets: dict[bool, zmq.Socket[Any]] = {
            True: curve_client(ctx, zmq.SUB, server_keys.public, keys),
            False: ctx.socket(zmq.SUB),
        }
        for curve, endpoint in ((True, curve_endpoint), (False, plain_endpoint)):
            sock = self.sockets[curve]
            stack.callback(sock.close, 0)
            sock.linger = 0
            sock.rcvhwm = FEED_HWM
            sock.setsockopt(zmq.SUBSCRIBE, PROBE_TOPIC)
            sock.setsockopt(zmq.SUBSCRIBE, FEED_TOPIC)
            sock.connect(endpoint)
            self._job("probe", curve)
            if not sock.poll(int(TIMEOUT * 1000)):
                raise RuntimeError(f"no message from the feed publisher within {TIMEOUT:g} s")
            sock.setsockopt(zmq.UNSUBSCRIBE, PROBE_TOPIC)  # late probes are now dropped here
            self._pipe.send("stop")
            self._answer()
            while sock.poll(0):
                sock.recv_multipart()

    def _job(self, kind: str, curve: bool, count: int = 0, rate: float = 0.0) -> None:
        self._pipe.send((kind, curve, count, rate))

    def _answer(self) -> None:
        if not self._pipe.poll(TIMEOUT):
            raise RuntimeError(f"the feed publisher did not answer within {TIMEOUT:g} s")
        self._pipe.recv()

    def _end(self, process: multiprocessing.process.BaseProcess) -> None:
        with contextlib.suppress(OSError):  # unless it is gone already
            self._pipe.send(None)
        process.join(TIMEOUT)
        if process.is_alive():
            process.kill()
            process.join()

    def rate(self, curve: bool, count: int) -> tuple[float, int]:
        """Messages/s received of a burst of ``count``, from the first to the last; and how many arrived."""
        sock = self.sockets[curve]
        self._job("burst", curve, count)
        if not sock.poll(int(TIMEOUT * 1000)):
            raise RuntimeError(f"no message from the feed publisher within {TIMEOUT:g} s")
        sock.recv_multipart()
        first = last = time.perf_counter()
        received = 1
        sock.rcvtimeo = FEED_SILENCE_MS  # a blocking receive, no poll per message: the barest loop
        try:
            while received < count:
                sock.recv_multipart()
                received += 1
                last = time.perf_counter()
        except zmq.Again:
            pass  # some were dropped (a high-water mark): the rate counts those that came
        finally:
            sock.rcvtimeo = -1
        self._answer()
        return (received - 1) / (last - first), received

    def latencies_ms(self, count: int, rate: float) -> list[float]:
        """One-way latency of ``count`` messages sent at ``rate`` a second over CURVE, in ms."""
        sock = self.sockets[True]
        self._job("paced", True, count, rate)
        latencies: list[float] = []
        while len(latencies) < count and sock.poll(int(TIMEOUT * 1000)):
            _, body = sock.recv_multipart()
            latencies.append((time.monotonic() - struct.unpack_from("<d", body)[0]) * 1000)
        self._answer()
        if len(latencies) < count:
            raise RuntimeError(f"{count - len(latencies)} of {count} paced feed messages were lost")
        return latencies


# --- 5d: stream appends -------------------------------------------------------------------------

# The barest script doing what ReplicationLedger.append's does for a run that continues the
# stream: one XADD per record, no look at the stream's end, no gap check, no HSETNX.
_BARE_APPEND = """
local first = tonumber(ARGV[2])
for i = 4, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], (first + i - 4) .. '-1', 'record', ARGV[i], 'origin', ARGV[3])
end
return #ARGV - 3
"""


CHECKPOINT = bytes(160)  # about a checkpoint note (PROTOCOL 10.7): the outbox puts one on each call's last record


def _runs(data: Sequence[bytes], count: int) -> Iterator[tuple[int, list[bytes]]]:
    """Heights 0 to ``count`` - 1 in runs of ``BATCH``: (first height, the records' bytes)."""
    for first in range(0, count, BATCH):
        yield first, [data[h % len(data)] for h in range(first, min(first + BATCH, count))]


def _appends(ledger: ReplicationLedger, stream: str, data: Sequence[bytes], count: int) -> int:
    """ReplicationLedger.append (the outbox's call) of ``count`` records to a new stream, ``BATCH`` a call."""
    for first, records in _runs(data, count):
        last = ledger.append(stream, NODE, first, records, CHECKPOINT)
        if last != first + len(records) - 1:
            raise RuntimeError(f"append of heights {first}.. left the stream at {last}")
    return count


def _bare_appends(script: Any, key: str, data: Sequence[bytes], count: int) -> int:
    for first, records in _runs(data, count):
        script(keys=[key], args=[SETTINGS.stream_max_len, first, NODE, *records])
    return count


def _pipelined_adds(ledger: ReplicationLedger, stream: str, data: Sequence[bytes], count: int) -> int:
    """ReplicationLedger.add (redis-py's pipeline of XADDs) of ``count`` records, ``BATCH`` a round trip."""
    added = 0
    for first, records in _runs(data, count):
        added += ledger.add([StreamRecord(stream, first + i, r, NODE) for i, r in enumerate(records)])
    if added != count:
        raise RuntimeError(f"XADD added {added} of {count}")
    return count


def _resp(*parts: bytes) -> bytes:
    return b"".join([b"*%d\r\n" % len(parts), *(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)])


def _raw_batches(key: str, data: Sequence[bytes], count: int) -> list[tuple[bytes, int]]:
    """The XADD commands ReplicationLedger.add sends (bar its HSETNX), as bytes, ``BATCH`` a write."""
    head = [b"XADD", key.encode(), b"MAXLEN", b"~", b"%d" % SETTINGS.stream_max_len]
    origin = [b"origin", NODE.encode()]
    batches = []
    for first, records in _runs(data, count):
        commands = [_resp(*head, entry_id(first + i).encode(), b"record", r, *origin) for i, r in enumerate(records)]
        batches.append((b"".join(commands), len(records)))
    return batches


def _raw_adds(address: tuple[str, int], batches: Sequence[tuple[bytes, int]]) -> int:
    """Write each batch of encoded XADDs to the server's socket, then read its replies (one id each)."""
    added = 0
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for commands, count in batches:
            sock.sendall(commands)
            replies = b""
            while replies.count(b"\r\n") < 2 * count:  # "$<length>" then the id, per reply
                chunk = sock.recv(1 << 16)
                if not chunk:
                    raise RuntimeError("redis-server closed the connection")
                replies += chunk
                if replies.startswith(b"-") or b"\r\n-" in replies:
                    raise RuntimeError(f"XADD refused: {replies[:200]!r}")
            added += count
    return added


# --- the figures ----------------------------------------------------------------------------------


@dataclass
class _CatchUps:
    """5b's runs, and the ceilings measured after each."""

    runs: list[_CatchUp] = field(default_factory=list)
    sqlite_rates: list[float] = field(default_factory=list)
    xrange_rates: list[float] = field(default_factory=list)


@dataclass
class _Measured:
    lag: _Lag
    feed_latency_ms: list[float]
    catch_up: _CatchUps = field(default_factory=_CatchUps)
    curve_rates: list[float] = field(default_factory=list)
    plain_rates: list[float] = field(default_factory=list)
    received: list[int] = field(default_factory=list)
    append_rates: list[float] = field(default_factory=list)
    bare_append_rates: list[float] = field(default_factory=list)
    add_rates: list[float] = field(default_factory=list)
    raw_add_rates: list[float] = field(default_factory=list)
    feed_bytes: int = 0
    feed_sent: int = 0  # messages per run of 5c
    xadd_records: int = 0  # records per run of 5d
    record_bytes: float = 0.0  # mean size of the records of 5d
    exits: list[str] = field(default_factory=list)


def _catch_up_runs(
    cluster: _Cluster, listener: _HeldListener, writer: Client, prepared: Sequence[Entry], each: int, m: _CatchUps
) -> None:
    """5b: an outage while ``each`` of ``prepared`` at a time are put, then its ceilings, into ``m``."""
    for first in range(0, len(prepared) - each + 1, each):
        caught_up, (start, stop) = _catch_up_run(cluster, listener, writer, prepared[first : first + each])
        m.runs.append(caught_up)
        rows = _rows(cluster, start, stop)
        m.sqlite_rates.append(_sqlite_inserts(rows, BATCH))
        m.xrange_rates.append(timed(lambda: _xranges(cluster.redis_url, start, stop)))  # noqa: B023


@dataclass(frozen=True, slots=True)
class _Started:
    """A replication cluster with its ledger created and every node holding its genesis."""

    cluster: _Cluster
    admin: Client
    writer_keys: KeyPair
    writer: Client
    replication: ReplicationLedger
    listener: _HeldListener  # the held reports
    cosigned: _HeldListener  # the cosigned reports


def _start(stack: ExitStack, directory: Path, what: str) -> _Started:
    """Start the cluster in ``directory`` (closed with ``stack``), create the ledger and wait for its genesis."""
    progress(f"{what}: starting redis-server, an ingest node and {REPLICAS} replicas")
    cluster = stack.enter_context(_cluster(directory))
    admin = stack.enter_context(Client(cluster.node, cluster.admin, timeout=TIMEOUT))
    writer_keys = _writer(admin, WRITER)
    writer = stack.enter_context(Client(cluster.node, writer_keys, timeout=TIMEOUT))
    replication = ReplicationLedger(stack.enter_context(connect(cluster.redis_url)))
    listener = _HeldListener(cluster.redis_url, replication.held_channel)
    stack.callback(listener.close)
    cosigned = _HeldListener(cluster.redis_url, replication.cosigned_channel, offset=-1)
    stack.callback(cosigned.close)
    admin.create_ledger(genesis(DIFFICULTY, author=ADMIN))
    listener.wait_for([NODE, *cluster.replicas], 0, "genesis")
    writer.hello()
    return _Started(cluster, admin, writer_keys, writer, replication, listener, cosigned)


def _measure(sizes: Sizes, directory: Path) -> _Measured:
    lag_records = round(OFFERED_RATE * sizes.replication_seconds) + WARM_UP
    catch_up_runs = min(CATCH_UP_RUNS, sizes.repeats)
    progress(f"replication: preparing {lag_records + catch_up_runs * sizes.catch_up_records:,} entries (difficulty 0)")
    prepared = entries(lag_records + catch_up_runs * sizes.catch_up_records, DIFFICULTY, author=WRITER)
    with ExitStack() as stack:
        started = _start(stack, directory, "replication")
        cluster, admin, writer_keys, writer = started.cluster, started.admin, started.writer_keys, started.writer
        replication, listener, cosigned = started.replication, started.listener, started.cosigned

        record = _rows(cluster, 0, 1)[0][5]
        frames = encode_record(LEDGER, 1, 1, NODE, record)
        feed = _Feed(stack, frames)

        progress(
            f"replication: 5a {lag_records - WARM_UP:,} puts (after {WARM_UP} unmeasured) at {OFFERED_RATE:,}/s to "
            f"1 ingest node and {REPLICAS} replicas, "
            "then the bare CURVE PUB/SUB at the same rate"
        )
        lag = _lag_run(cluster, listener, cosigned, writer_keys, prepared[:lag_records])
        feed_latency = feed.latencies_ms(max(500, round((lag_records - WARM_UP) / 4)), OFFERED_RATE)
        m = _Measured(lag, feed_latency, feed_bytes=sum(len(f) for f in frames), feed_sent=sizes.feed_messages)

        progress(
            f"replication: 5b {OUTAGE} down while {sizes.catch_up_records:,} records are put, then its catch-up "
            f"x {catch_up_runs}, with raw SQLite and XRANGE"
        )
        _catch_up_runs(cluster, listener, writer, prepared[lag_records:], sizes.catch_up_records, m.catch_up)

        progress(
            f"replication: 5c {sizes.feed_messages:,} feed messages over CURVE PUB/SUB, then plain, x {sizes.repeats}"
        )
        for _ in range(sizes.repeats):
            rate, received = feed.rate(True, sizes.feed_messages)
            m.curve_rates.append(rate)
            m.received.append(received)
            m.plain_rates.append(feed.rate(False, sizes.feed_messages)[0])

        progress(
            f"replication: 5d {sizes.xadd_records:,} records appended to a stream {BATCH} a call, with a bare script "
            f"and pipelined XADDs, x {sizes.repeats}"
        )
        data = [row[5] for row in _rows(cluster, 1, min(1 + 1_000, 1 + lag_records))]
        m.xadd_records, m.record_bytes = sizes.xadd_records, statistics.fmean(len(d) for d in data)
        client = stack.enter_context(connect(cluster.redis_url))
        streams = ReplicationLedger(client, namespace="bench-5d")
        bare = client.register_script(_BARE_APPEND)
        address = (client.connection_pool.connection_kwargs["host"], client.connection_pool.connection_kwargs["port"])
        for run_ in range(sizes.repeats):
            keys = [streams.stream_key(f"{kind}-{run_}") for kind in ("append", "bare", "add", "raw")]
            m.append_rates.append(
                timed(lambda: _appends(streams, f"append-{run_}", data, sizes.xadd_records))  # noqa: B023
            )
            m.bare_append_rates.append(timed(lambda: _bare_appends(bare, keys[1], data, sizes.xadd_records)))  # noqa: B023
            m.add_rates.append(timed(lambda: _pipelined_adds(streams, f"add-{run_}", data, sizes.xadd_records)))  # noqa: B023
            batches = _raw_batches(keys[3], data, sizes.xadd_records)
            m.raw_add_rates.append(timed(lambda: _raw_adds(address, batches)))  # noqa: B023
            if any(client.xlen(key) != sizes.xadd_records for key in keys):
                raise RuntimeError(f"5d: a stream does not hold {sizes.xadd_records} records")
            client.delete(*keys)

        held = replication.held(LEDGER)
        head = admin.call("size", {"ledger": LEDGER})["size"] - 1
        if any(held.get(name, -1) != head for name in [NODE, *cluster.replicas]):
            raise RuntimeError(f"not every node holds the head {head}: {held}")
        m.exits = cluster.exits
    if m.exits:
        raise RuntimeError(f"a replica did not stop cleanly: {m.exits[0]}")
    return m


def _catch_up_figure(m: _CatchUps, command: str = COMMAND) -> Figure:
    """Figure 5b: the best catch-up, beside raw SQLite and bare XRANGE."""
    best_catch_up = max(m.runs, key=lambda c: c.rate)
    sqlite = Ceiling(
        f"raw SQLite, {BATCH} rows/txn",
        max(m.sqlite_rates),
        "records/s",
        "executemany INSERT of the missed records' rows (read from the home node's store) into a fresh database "
        f"of the store's schema, WAL, synchronous=FULL, BEGIN IMMEDIATE..COMMIT around each {BATCH}, after each "
        "catch-up",
    )
    xrange = Ceiling(
        f"XRANGE, {BATCH} a read",
        max(m.xrange_rates),
        "records/s",
        f"redis-py xrange of the missed heights from the ledger's stream, count={BATCH}, after each catch-up",
    )
    return Figure(
        key="5b",
        name="catch-up of a replica after an outage (from its start-up's end to the head)",
        value=best_catch_up.rate,
        unit="records/s",
        ceiling=sqlite,
        command=command,
        target=TARGET_CATCH_UP,
        also=(xrange,),
        details={
            **best_catch_up.details,
            "runs (records/s)": [round(c.rate) for c in m.runs],
            "SQLite runs (records/s)": [round(r) for r in m.sqlite_rates],
            "XRANGE runs (records/s)": [round(r) for r in m.xrange_rates],
        },
    )


def _lag_figures(lag: _Lag, feed_latency_ms: Sequence[float], command: str = COMMAND) -> list[Figure]:
    """Figures 5a-p50 and 5a-p99, each beside the bare CURVE PUB/SUB's one-way latency."""

    def one_way(p: int) -> Ceiling:
        return Ceiling(
            f"CURVE PUB/SUB one-way latency, p{p}",
            _percentile(feed_latency_ms, p),
            "ms",
            f"{FEED_HOW}, {len(feed_latency_ms):,} at {OFFERED_RATE:,}/s, each stamped with time.monotonic() when "
            "sent; received minus sent, right after 5a's puts",
        )

    return [
        Figure(
            key="5a-p50",
            name=f"replication lag to {REPLICAS} replicas at {OFFERED_RATE:,} puts/s, p50 (from the put's ack)",
            value=_percentile(lag.lags_ms, 50),
            unit="ms",
            ceiling=one_way(50),
            command=command,
            higher_is_better=False,
            details=lag.details,
        ),
        Figure(
            key="5a-p99",
            name=f"replication lag to {REPLICAS} replicas at {OFFERED_RATE:,} puts/s, p99 (from the put's ack)",
            value=_percentile(lag.lags_ms, 99),
            unit="ms",
            ceiling=one_way(99),
            command=command,
            higher_is_better=False,
            target=TARGET_LAG_P99_MS,
            details={"see": "5a-p50"},
        ),
    ]


def run(sizes: Sizes) -> list[Figure]:
    with scratch_dir() as directory:
        m = _measure(sizes, directory)

    feed_how = FEED_HOW.replace("feed messages", f"feed messages of {m.feed_bytes} bytes")

    plain = Ceiling(
        "plain PUB/SUB",
        max(m.plain_rates),
        "msgs/s",
        f"{feed_how.replace('a CurveServer PUB (allow-list)', 'a plain PUB (no CURVE)')}, same count, after each "
        "CURVE run; rate from the first message received to the last",
    )
    bare_append = Ceiling(
        f"bare Lua XADD loop, {BATCH} a call",
        max(m.bare_append_rates),
        "records/s",
        f"one EVALSHA per {BATCH} records of a script that only XADDs each (MAXLEN ~, id <height>-1, record and "
        "origin): no look at the stream's end, no gap check, no checkpoint, no HSETNX; after each "
        "ReplicationLedger.append run (which is given a 160-byte checkpoint, as the outbox gives one per call)",
    )
    return [
        *_lag_figures(m.lag, m.feed_latency_ms),
        _catch_up_figure(m.catch_up),
        Figure(
            key="5c",
            name="CURVE PUB/SUB, bare sockets, subscriber side",
            value=max(m.curve_rates),
            unit="msgs/s",
            ceiling=plain,
            command=COMMAND,
            details={
                "message bytes": m.feed_bytes,
                "sent per run": m.feed_sent,
                "runs (msgs/s)": [round(r) for r in m.curve_rates],
                "received per run": m.received,
                "high-water marks": FEED_HWM,
            },
        ),
        Figure(
            key="5d",
            name=f"stream append, {BATCH} records a call (ReplicationLedger.append, the outbox's Lua script)",
            value=max(m.append_rates),
            unit="records/s",
            ceiling=bare_append,
            command=COMMAND,
            details={
                "records per run": m.xadd_records,
                "record bytes": round(m.record_bytes),
                "runs (records/s)": [round(r) for r in m.append_rates],
                "bare script runs (records/s)": [round(r) for r in m.bare_append_rates],
                f"pipelined XADD, {BATCH} a round trip, redis-py (ReplicationLedger.add) runs (records/s)": [
                    round(r) for r in m.add_rates
                ],
                f"pipelined XADD, {BATCH} a write, raw RESP on a socket runs (records/s)": [
                    round(r) for r in m.raw_add_rates
                ],
            },
        ),
    ]


def run_catch_up(sizes: Sizes) -> list[Figure]:
    """Figure 5b alone (``--only catchup``, not part of ``make bench``): the same cluster and
    outages as in the replication section, without 5a, 5c and 5d before and after them."""
    runs = min(CATCH_UP_RUNS, sizes.repeats)
    progress(f"catch-up: preparing {runs * sizes.catch_up_records:,} entries (difficulty 0)")
    prepared = entries(runs * sizes.catch_up_records, DIFFICULTY, author=WRITER)
    m = _CatchUps()
    with scratch_dir() as directory, ExitStack() as stack:
        started = _start(stack, directory, "catch-up")
        cluster, listener, writer = started.cluster, started.listener, started.writer
        progress(f"catch-up: 5b {OUTAGE} down while {sizes.catch_up_records:,} records are put, its catch-up x {runs}")
        _catch_up_runs(cluster, listener, writer, prepared, sizes.catch_up_records, m)
        exits = cluster.exits
    if exits:
        raise RuntimeError(f"a replica did not stop cleanly: {exits[0]}")
    return [_catch_up_figure(m, CATCH_UP_COMMAND)]


def run_lag(sizes: Sizes) -> list[Figure]:
    """Figures 5a alone (``--only lag``, not part of ``make bench``): the same cluster, warm-up and
    paced puts as in the replication section, and the bare PUB/SUB's latency right after, without
    5b, 5c and 5d."""
    lag_records = round(OFFERED_RATE * sizes.replication_seconds) + WARM_UP
    progress(f"lag: preparing {lag_records:,} entries (difficulty 0)")
    prepared = entries(lag_records, DIFFICULTY, author=WRITER)
    with scratch_dir() as directory, ExitStack() as stack:
        started = _start(stack, directory, "lag")
        cluster, listener, cosigned = started.cluster, started.listener, started.cosigned
        feed = _Feed(stack, encode_record(LEDGER, 1, 1, NODE, _rows(cluster, 0, 1)[0][5]))
        progress(f"lag: 5a {lag_records - WARM_UP:,} puts (after {WARM_UP} unmeasured) at {OFFERED_RATE:,}/s")
        lag = _lag_run(cluster, listener, cosigned, started.writer_keys, prepared)
        feed_latency = feed.latencies_ms(max(500, round((lag_records - WARM_UP) / 4)), OFFERED_RATE)
        exits = cluster.exits
    if exits:
        raise RuntimeError(f"a replica did not stop cleanly: {exits[0]}")
    return _lag_figures(lag, feed_latency, LAG_COMMAND)
