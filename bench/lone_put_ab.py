"""Lone puts on two ingest nodes side by side, A and B, in blocks that take turns: an A/B on a shared host.

Not a figure of `make bench`: ``.venv/bin/python -m bench.lone_put_ab [--a REV] [--b REV]
[--a-settings TOML] [--b-settings TOML] [--blocks N] [--block N] [--warm N]``.
Each side is a code tree (a git revision of this checkout, exported to a scratch folder, or
``.``: the working tree as it is) and cluster settings (tables added to its cluster file, as
``[replication]\\noutbox_interval_ms = 10``). Both nodes are started as figure 4e's (bench/ingest.py),
each with its own redis-server and store, given ``--warm`` lone puts first (a fresh store's log
grows during its first ~1,000, docs/INTERNALS.md); then ``--blocks`` blocks of ``--block`` puts,
one at a time, go to A and B in turn, their order swapped each block, so that both see the
same load from whatever else runs on the host. Printed for each side: the p50 of its puts, the
median of its blocks' p50s, its node process's CPU per put (all threads; the main thread; the
ZeroMQ I/O thread; its child processes, the outbox process among them), and in how many blocks
B's p50 was the lower. CPU comes from /proc in clock ticks (10 ms): blocks of 250 lone puts
are ~100 ms of node CPU each, so compare means over 20 or more blocks.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from vledger.broker.client import Client

from .fixtures import entries, genesis, scratch_dir
from .ingest import ADMIN, DIFFICULTY, TIMEOUT, _children, _cpu_seconds, _node, _RunningNode, _writer

CHECKOUT = Path(__file__).resolve().parents[1]
WRITER = "writer-ab"


@dataclass(slots=True)
class Side:
    """One side's samples: each put's wall time and, per block, CPU microseconds per put."""

    label: str
    put_ms: list[float] = field(default_factory=list)
    block_p50_ms: list[float] = field(default_factory=list)
    cpu_us: dict[str, list[float]] = field(default_factory=dict)  # "node", "main", "zmq io", "children"

    def add_block(self, put_ms: Sequence[float], cpu_seconds: dict[str, float]) -> None:
        self.put_ms.extend(put_ms)
        self.block_p50_ms.append(statistics.median(put_ms))
        for what, seconds in cpu_seconds.items():
            self.cpu_us.setdefault(what, []).append(seconds / len(put_ms) * 1e6)

    def line(self) -> str:
        cpu = "  ".join(f"{what} {statistics.mean(us):.0f}" for what, us in self.cpu_us.items())
        return (
            f"{self.label}: p50 {statistics.median(self.put_ms):.3f} ms (blocks' median "
            f"{statistics.median(self.block_p50_ms):.3f}), CPU us a put (mean of blocks): {cpu}"
        )


def b_lower(a: Side, b: Side) -> int:
    """In how many blocks B's p50 was lower than A's (the blocks were taken in turn)."""
    return sum(1 for p50_a, p50_b in zip(a.block_p50_ms, b.block_p50_ms, strict=True) if p50_b < p50_a)


def code_tree(revision: str, scratch: Path) -> Path:
    """A new folder in ``scratch`` holding a ``vledger`` package of ``revision`` (``.``: the working tree)."""
    root = Path(tempfile.mkdtemp(prefix="code-", dir=scratch))
    if revision == ".":
        (root / "vledger").symlink_to(CHECKOUT)
        return root
    archive = subprocess.run(
        ["git", "-C", str(CHECKOUT), "archive", "--format=tar", revision], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root / "vledger", filter="data")
    return root


def _thread_cpu(pid: int, tid: int) -> float:
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _zmq_io_cpu(pid: int) -> float:
    """CPU seconds of the process's ZeroMQ I/O threads (named ZMQbg/IO/N by libzmq)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if task.joinpath("comm").read_text().startswith("ZMQbg/IO"):
                total += _thread_cpu(pid, int(task.name))
        except OSError:
            continue  # a thread that ended meanwhile
    return total


def _cpu(node: _RunningNode) -> dict[str, float]:
    return {
        "node": node.cpu_seconds(),
        "main": _thread_cpu(node.pid, node.pid),
        "zmq io": _zmq_io_cpu(node.pid),
        "children": sum(_cpu_seconds(child) for child in _children(node.pid)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lone_put_ab", description=__doc__)
    parser.add_argument("--a", default="HEAD", help="A's code: a git revision, or . (default HEAD)")
    parser.add_argument("--b", default=".", help="B's code: a git revision, or . for the working tree (default)")
    parser.add_argument("--a-settings", default="", help="tables added to A's cluster file")
    parser.add_argument("--b-settings", default="", help="tables added to B's cluster file")
    parser.add_argument("--blocks", type=int, default=24, help="blocks of puts each side takes (default 24)")
    parser.add_argument("--block", type=int, default=250, help="lone puts a block (default 250)")
    parser.add_argument("--warm", type=int, default=1_500, help="lone puts each node takes before timing")
    args = parser.parse_args(argv)
    batch = entries(args.warm + args.blocks * args.block, DIFFICULTY, author=WRITER)
    sides = [Side("A"), Side("B")]
    with ExitStack() as stack:
        scratch = stack.enter_context(scratch_dir())
        running: list[tuple[Side, _RunningNode, Client]] = []
        for side, revision, settings in zip(sides, (args.a, args.b), (args.a_settings, args.b_settings), strict=True):
            code = code_tree(revision, scratch)
            (scratch / side.label).mkdir()
            text = settings.replace("\\n", "\n")  # one line on a command line
            node = stack.enter_context(_node(scratch / side.label, settings=f"\n{text}\n", code=code))
            admin = stack.enter_context(Client(node.address, node.admin, timeout=TIMEOUT))
            keys = _writer(admin, WRITER)
            admin.create_ledger(genesis(DIFFICULTY, author=ADMIN))
            client = stack.enter_context(Client(node.address, keys, timeout=TIMEOUT))
            for entry in batch[: args.warm]:
                client.put(entry)
            running.append((side, node, client))
        for block in range(args.blocks):
            start = args.warm + block * args.block
            for side, node, client in running if block % 2 == 0 else running[::-1]:
                before = _cpu(node)
                put_ms = []
                for entry in batch[start : start + args.block]:
                    began = time.perf_counter()
                    if client.put(entry)["duplicate"]:
                        raise RuntimeError("a put was a duplicate: the blocks overlap")
                    put_ms.append((time.perf_counter() - began) * 1_000)
                after = _cpu(node)
                side.add_block(put_ms, {what: after[what] - before[what] for what in before})
    print(f"{args.blocks} blocks of {args.block} lone puts each side (load {os.getloadavg()[0]:.1f}):")
    print(f"  A = {args.a} {args.a_settings!r}; B = {args.b} {args.b_settings!r}")
    for side in sides:
        print("  " + side.line())
    print(f"  B's p50 lower in {b_lower(*sides)} of {args.blocks} blocks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
