"""Figure 9: puts per second as client processes are added, and memory over a long run.

9a-N: the node of figure 4 (a real ``vledger ingest`` with its Redis), N = 1, 2, 4, 8, 16 client
processes, each its own account, key and interpreter, 128 puts in flight each, beside the bare
CURVE echo reached by the same N processes right after (figure 4's ceiling). A curve that
stops rising before the echo does shows where the node stops taking more work.

9b/9c: the resident memory (VmRSS) of the node process and of redis-server while 8 client
processes put ``rss_records`` records (a million in ``make bench``), sampled after each tenth.
The ceiling is the same process's memory after the first tenth: a ratio near 1 says the
memory stays flat (caches bounded), a rising one that something grows with the ledger.
Redis is meant to grow until each ledger's stream holds ``stream_max_len`` records (a
million by default, about 400 bytes each), and to stay flat from there on.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from vledger.broker.client import Client
from vledger.config.cluster import ReplicationSettings

from . import ingest
from .fixtures import Sizes, entries, genesis, scratch_dir
from .report import Ceiling, Figure, progress

COMMAND = ".venv/bin/python -m bench --only scale"
STEPS = (1, 2, 4, 8, 16)  # client processes
RSS_CLIENTS = 8
RSS_SAMPLES = 10


def _rss_mb(pid: int) -> float:
    """The resident memory of process ``pid`` (VmRSS of /proc/<pid>/status), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"process {pid} reports no VmRSS")


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
    put_message = ingest._put_request(entries(1, ingest.DIFFICULTY, author="scale-0")[0])
    writers = _Writers(max(STEPS))
    curve: dict[int, tuple[float, float]] = {}
    samples: list[tuple[int, float, float]] = []  # records put so far, node MB, redis-server MB
    with scratch_dir() as directory, ExitStack() as stack:
        progress("scale: starting redis-server and an ingest node")
        node = stack.enter_context(ingest._node(directory))
        admin = stack.enter_context(Client(node.address, node.admin, timeout=ingest.TIMEOUT))
        keys = [ingest._writer(admin, name) for name in writers.names]
        admin.create_ledger(genesis(ingest.DIFFICULTY, author=ingest.ADMIN))
        echo = stack.enter_context(ingest._echo_server([node.admin.public, *(k.public for k in keys)]))
        for clients in STEPS:
            each = sizes.scale_records // clients
            progress(f"scale: 9a {clients} client processes x {each:,} puts, then the echo")
            with ingest._client_processes(keys[:clients], node.address, echo) as processes:
                rate = processes.rate(writers.jobs(clients, each))
                echo_rate = processes.rate([ingest._EchoJob(put_message, each, ingest.WINDOW)] * clients)
            curve[clients] = (rate, echo_rate)
        each = max(1, sizes.rss_records // RSS_SAMPLES // RSS_CLIENTS)
        progress(f"scale: 9b {RSS_CLIENTS} client processes put {each * RSS_CLIENTS * RSS_SAMPLES:,} records")
        with ingest._client_processes(keys[:RSS_CLIENTS], node.address, echo) as processes:
            for sample in range(1, RSS_SAMPLES + 1):
                processes.rate(writers.jobs(RSS_CLIENTS, each))
                samples.append((sample * each * RSS_CLIENTS, _rss_mb(node.pid), _rss_mb(node.redis_pid)))
                progress(
                    f"scale: {samples[-1][0]:,} records, node {samples[-1][1]:.0f} MB, redis {samples[-1][2]:.0f} MB"
                )

    figures = [
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
    details = {
        "records put": samples[-1][0],
        "client processes": RSS_CLIENTS,
        "stream_max_len (records Redis keeps per ledger)": ReplicationSettings().stream_max_len,
        "samples (records, node MB, redis-server MB)": [(n, round(a, 1), round(b, 1)) for n, a, b in samples],
    }
    for key, what, column in (("9b", "the ingest node", 1), ("9c", "redis-server", 2)):
        first = samples[0]
        figures.append(
            Figure(
                key=key,
                name=f"resident memory of {what} after {samples[-1][0]:,} records",
                value=samples[-1][column],
                unit="MB",
                ceiling=Ceiling(
                    f"{what}'s resident memory after {first[0]:,} records",
                    first[column],
                    "MB",
                    f"VmRSS of {what} after the first of {RSS_SAMPLES} equal batches of the same run",
                ),
                command=COMMAND,
                higher_is_better=False,
                details=details,
            )
        )
    return figures
