"""Figure 10: the cluster across hosts (network namespaces: tests/multihost), beside bare loops.

Needs root (``ip netns``, nftables): without it the section is skipped and says why, and its
figures are missing from the table. The cluster is the multihost tests' (each node, each Redis
and each Sentinel on a host of its own) with the ledger ``handover``, homed on ingest-1 with
ingest-2 as its standby (PROTOCOL 10.9).

* 10a, replication lag across a 200 ms +- 50 ms link (between both replicas and both homes; the
  userspace relay where the kernel has no netem): a writer on the client host puts at a paced
  rate; the lag is, as Redis hears it, from the home's report of holding a height to each
  replica's first report at or above it (tests/multihost/hosts.py LagProbe). Ceiling: the
  one-way latency of a bare TCP echo across the same link (round trip / 2, same percentile),
  from a process on replica-1's host to one on ingest-1's, measured right after.
* 10b, the write pause of a promotion: a writer puts with w=1 on ingest-1; its host is cut off;
  ``vledger ledger promote handover ingest-2`` is run at once and again until it succeeds; the
  pause is from the last put acknowledged before the cut to the first acknowledged by
  ingest-2. Ceiling: one bare ``vledger hello --node ingest-2`` (the interpreter's start, the
  CURVE handshake, one round trip), the least any operator command costs, in the same run.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time

from vledger.broker.client import Client
from vledger.node.record import Content, Entry
from vledger.tests.e2e.helpers import ADMIN
from vledger.tests.integration.cluster import LIMITS, now_ms, wait_until
from vledger.tests.multihost.hosts import HANDOVER, HOSTS, INGEST, REPLICAS, LagProbe, StandbyHostsCluster
from vledger.tests.multihost.netns import Network, clean_leftovers, inside, missing

from .fixtures import Sizes
from .report import Ceiling, Figure, progress

COMMAND = "python -m bench --only hosts"
DELAY_MS, JITTER_MS = 200, 50
ECHO_PORT = 7990
WAIT = 120.0
_ECHO_SERVER = (
    "import socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', {port})); s.listen(1); c, _ = s.accept()\n"
    "c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n"
    "while (d := c.recv(64)):\n    c.sendall(d)\n"
)
_ECHO_CLIENT = (
    "import socket, time\n"
    "deadline = time.monotonic() + 30\n"
    # Until one byte comes back: the link accepts at once and drops a connection it cannot pass on.
    "while True:\n"
    "    try:\n"
    "        c = socket.create_connection(('{host}', {port}), timeout=10)\n"
    "        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n"
    "        c.sendall(b'x')\n"
    "        if c.recv(64): break\n"
    "    except OSError:\n"
    "        pass\n"
    "    if time.monotonic() > deadline: raise SystemExit('no echo across the link')\n"
    "    time.sleep(0.05)\n"
    "for _ in range({count}):\n"
    "    t = time.monotonic(); c.sendall(b'x'); c.recv(64); print((time.monotonic() - t) / 2 * 1000)\n"
)


def _percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def _put(client: Client, n: int, w: int) -> dict[str, object]:
    content = Content(HANDOVER, "vote", {"n": n}, "writer1", f"b-{n}-{now_ms()}", now_ms())
    entry = Entry.prepare(content, 0, LIMITS)
    reply: dict[str, object] = client.call("put", {"content": entry.content_bytes, "nonce": entry.nonce, "w": w})
    return reply


def _cli(cluster: StandbyHostsCluster, *args: str, node: str) -> subprocess.CompletedProcess[str]:
    key = str(cluster.config.secret_key_path(ADMIN))
    return cluster.cli(*args, "--config", str(cluster.config_path), "--key", key, "--node", node)


def _lag(cluster: StandbyHostsCluster, records: int, rate: float) -> list[float]:
    """10a: the lags (ms) of ``records`` puts at ``rate`` a second across the slow link. A thread
    writes; this one reads the reports as they come (a report read late would shorten a lag)."""
    probe = LagProbe(cluster, REPLICAS)
    done = threading.Event()
    failed: list[BaseException] = []

    def write() -> None:  # in the client host's namespace, its creator's
        client = Client(cluster.address(INGEST[0]), cluster.keys["writer1"], timeout=10.0, follow=False)
        start = time.monotonic()
        try:
            for n in range(records):
                _put(client, n, 0)
                due = start + (n + 1) / rate
                while (left := due - time.monotonic()) > 0:
                    done.wait(left)  # the pace: the next put is due then
        except BaseException as e:
            failed.append(e)
        finally:
            client.close()
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while not done.is_set():
            probe.read(0.2)
        probe.read(3 * DELAY_MS / 1000 + 1.0)  # the last records' reports, across the link
        writer.join()
        if failed:
            raise RuntimeError(f"the paced writer failed: {failed[0]!r}")
        return [lag * 1000 for lag in probe.lags]
    finally:
        probe.close()


def _echo(cluster: StandbyHostsCluster, count: int) -> list[float]:
    """10a's ceiling: one-way latencies (ms) of a bare TCP echo from replica-1's host to ingest-1's
    (the direction the replicas connect in, which the userspace link relays)."""
    network = cluster.network
    server = subprocess.Popen(
        [*network[INGEST[0]].prefix, sys.executable, "-c", _ECHO_SERVER.format(port=ECHO_PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        code = _ECHO_CLIENT.format(host=network[INGEST[0]].address, port=ECHO_PORT, count=count)
        done = subprocess.run(
            [*network[REPLICAS[0]].prefix, sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=WAIT + count,  # each ping a round trip across the link: well under a second
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the echo across the link failed: {done.stderr}")
        return [float(line) for line in done.stdout.split()]
    finally:
        server.kill()
        server.wait()


def _promotion(cluster: StandbyHostsCluster) -> tuple[float, float, int]:
    """10b: (the write pause in s, the time promote took to succeed in s, how many tries)."""
    acked: list[float] = []
    stop = threading.Event()

    def write() -> None:  # this thread starts in the client host's namespace, its creator's
        client = Client(cluster.address(INGEST[0]), cluster.keys["writer1"], timeout=2.0, follow=False)
        n = 100_000
        try:
            while not stop.is_set():
                n += 1
                try:
                    _put(client, n, 1)
                except Exception:
                    continue  # cut off: not acknowledged
                acked.append(time.monotonic())
        finally:
            client.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_until(lambda: len(acked) >= 50, WAIT, "50 puts acknowledged before the cut", interval=0.1)
        cluster.network.cut_off(INGEST[0])
        cut = time.monotonic()
    finally:
        stop.set()
        writer.join()
    last = max(acked)
    tries = 0
    try:
        while True:
            tries += 1
            if _cli(cluster, "ledger", "promote", HANDOVER, INGEST[1], node=INGEST[1]).returncode == 0:
                break
            if time.monotonic() - cut > WAIT:
                raise RuntimeError("vledger ledger promote did not succeed")
        promoted = time.monotonic()
        client = Client(cluster.address(INGEST[1]), cluster.keys["writer1"], timeout=10.0, follow=False)
        try:
            _put(client, 1, 1)
        finally:
            client.close()
        first = time.monotonic()
    finally:
        cluster.network.heal(INGEST[0])
    return first - last, promoted - cut, tries


def run(sizes: Sizes) -> list[Figure]:
    why = missing()
    if why is not None:
        progress(f"hosts: figures 10a and 10b skipped: {why} (they need root: ip netns, nftables)")
        return []
    clean_leftovers()
    quick = sizes.replication_seconds < 5
    records, rate, pings = (60, 20.0, 30) if quick else (600, 50.0, 150)  # a ping costs a round trip, ~0.4 s
    network = Network(HOSTS).open()
    try:
        cluster = StandbyHostsCluster(network)
        with inside(network["client"]):
            try:
                cluster.start()
                done = _cli(
                    cluster, "ledger", "create", HANDOVER, "--kinds", "vote", "--difficulty", "0", node=INGEST[0]
                )
                if done.returncode != 0:
                    raise RuntimeError(f"vledger ledger create {HANDOVER}: {done.stdout}{done.stderr}")
                wait_until(lambda: cluster.size(INGEST[1], HANDOVER) >= 1, WAIT, "the standby follows", interval=0.2)
                for replica in REPLICAS:
                    cluster.network.degrade(replica, INGEST, delay_ms=DELAY_MS, jitter_ms=JITTER_MS, loss_percent=0)
                try:
                    lags = _lag(cluster, records, rate)
                    echo = _echo(cluster, pings)
                finally:
                    for replica in REPLICAS:
                        cluster.network.heal(replica)
                pause, promote_s, tries = _promotion(cluster)
                started = time.monotonic()
                hello = _cli(cluster, "hello", node=INGEST[1])
                bare_cli = time.monotonic() - started
                if hello.returncode != 0:
                    raise RuntimeError(f"vledger hello: {hello.stdout}{hello.stderr}")
            finally:
                cluster.stop()
    finally:
        network.close()
    how = "tc netem" if network.netem else "the userspace relay and nftables (no netem in this kernel)"
    link = f"{DELAY_MS} ms +- {JITTER_MS} ms each way between {', '.join(REPLICAS)} and {', '.join(INGEST)}, by {how}"

    def one_way(p: int) -> Ceiling:
        return Ceiling(
            f"bare TCP echo across the link, one way, p{p}",
            _percentile(echo, p),
            "ms",
            f"{len(echo)} one-byte pings from replica-1's host to ingest-1's over {link}; round trip / 2",
        )

    details = {
        "link": link,
        "puts": records,
        "offered rate (puts/s)": rate,
        "lag reports": len(lags),
        "mean lag (ms)": round(statistics.fmean(lags), 1) if lags else None,
    }
    return [
        Figure(
            key="10a-p50",
            name=f"replication lag across a {DELAY_MS} ms link, p50 (home's held report to each replica's)",
            value=_percentile(lags, 50),
            unit="ms",
            ceiling=one_way(50),
            command=COMMAND,
            higher_is_better=False,
            details=details,
        ),
        Figure(
            key="10a-p99",
            name=f"replication lag across a {DELAY_MS} ms link, p99",
            value=_percentile(lags, 99),
            unit="ms",
            ceiling=one_way(99),
            command=COMMAND,
            higher_is_better=False,
            details={"see": "10a-p50"},
        ),
        Figure(
            key="10b",
            name="write pause of a promotion: last ack on the cut-off home to first ack on its standby",
            value=pause,
            unit="s",
            ceiling=Ceiling(
                "one bare vledger hello",
                bare_cli,
                "s",
                "vledger hello --node ingest-2 from the client host: interpreter start, CURVE handshake, one round "
                "trip; right after the promotion",
            ),
            command=COMMAND,
            higher_is_better=False,
            details={
                "promote succeeded after (s)": round(promote_s, 2),
                "vledger ledger promote runs": tries,
                "cut": "every packet to and from ingest-1's host dropped (nftables)",
            },
        ),
    ]
