"""Side by side with pyvserv (issue 15): the same figures from a pyvserv server and a vledger node, in one run.

    .venv/bin/python -m bench.pyvserv        (or: make bench-pyvserv)

Not part of `make bench` nor of `make test`. pyvserv is installed on first use into a virtualenv of
its own (.venv-pyvserv/, git-ignored; --venv elsewhere): pyvserv 1.1.0 and pyvguicom without their
dependencies (pyvguicom needs PyGObject and pyvserv playsound, for its GUI only; neither builds
without system headers, and the server and client never import them), then pyvpacker, pydbase,
pyvecc and pycryptodome. Exit status 2 if that or the server's start fails.

pyvserv runs as its README says, in a temporary data root: its keys made by its own `pyvgenkey`,
`pyvserv -r ROOT -p PORT -t -q` (test mode: a proof of one zero digit is accepted, as vledger's
bench ledger has difficulty 0; neither side does proof of work while the clock runs), the admin
user made with `uini` from loopback. Its clients are pyvserv's own client classes, run by
bench/pyvserv_side.py in pyvserv's interpreter. The vledger node is bench/ingest.py's: a redis-server,
`vledger ingest` as its own process, durable (answered once the record is fsynced), tree and
checkpoints on, w=0. Each record carries the same payload on both sides (bench/fixtures.py's
entries: amount, memo, to). Figures take turns (pyvserv, vledger, pyvserv, vledger ...) over
--rounds rounds, and the median of each is printed; the ratio says how many times vledger is
ahead (below 1: behind). Written to bench/results/pyvserv.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
import venv
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from vledger.broker.client import Client, NodeAddress
from vledger.broker.keys import KeyPair
from vledger.broker.redis_server import free_port
from vledger.node.record import Entry

from . import ingest, stores
from .fixtures import LEDGER, entries, genesis, scratch_dir
from .report import progress

REPO = Path(__file__).resolve().parent.parent
SIDE = Path(__file__).resolve().parent / "pyvserv_side.py"
RESULTS = Path(__file__).resolve().parent / "results" / "pyvserv.md"
DEFAULT_VENV = REPO / ".venv-pyvserv"
PYVSERV_VERSION = "1.1.0"
# No dependencies: pyvguicom wants PyGObject, pyvserv playsound (GUI and sound only, neither builds here).
NO_DEPS = (f"pyvserv=={PYVSERV_VERSION}", "pyvguicom")
WITH_DEPS = ("pyvpacker", "pydbase", "pyvecc", "pycryptodome")
CLIENTS = 8
WINDOW = 64
TIMEOUT = 30.0  # seconds: a start or a stop that takes longer is a failure
JOB_TIMEOUT = 1_800.0  # seconds: one pyvserv job (the rcheck of 100k records takes minutes under load)
SPAWN = multiprocessing.get_context("spawn")
EXIT_NO_PYVSERV = 2


class PyvservUnavailable(RuntimeError):
    """pyvserv could not be installed or started: the script exits with status 2."""


# --- the table ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One figure: each side's median over the rounds; ``higher_is_better`` for rates, not for times."""

    figure: str
    unit: str
    pyvserv: float
    vledger: float
    higher_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float:
        """How many times vledger is ahead: above 1 ahead, below 1 behind."""
        if self.higher_is_better:
            return self.vledger / self.pyvserv
        return self.pyvserv / self.vledger


def number(value: float) -> str:
    """A figure as the tables print it: thousands separated, three significant digits below 100."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def render(rows: Sequence[Row], command: str, about: Sequence[str]) -> str:
    """The markdown table (figure | pyvserv | vledger | ratio) with the command line and notes."""
    lines = [
        "# vledger beside pyvserv",
        "",
        f"`{command}`",
        "",
        "| figure | pyvserv | vledger | ratio (vledger ahead ×) |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        ratio = f"{row.ratio:.2f}" if row.ratio < 1 else f"{row.ratio:.1f}"
        if row.ratio < 1:
            ratio = f"**{ratio}: behind**"
        lines.append(f"| {row.figure} ({row.unit}) | {number(row.pyvserv)} | {number(row.vledger)} | {ratio} |")
    notes = [f"- {row.figure}: {row.note}" for row in rows if row.note]
    lines += ["", *(f"- {line}" for line in about), *notes, ""]
    return "\n".join(lines)


# --- pyvserv: install, start, run a job ----------------------------------------------------------


def ensure_pyvserv(where: Path) -> Path:
    """The pyvserv virtualenv's python, installing pyvserv into ``where`` first if it is not there."""
    python = where / "bin" / "python"
    stamp = where / f".installed-pyvserv-{PYVSERV_VERSION}"  # written once both installs succeeded
    if stamp.is_file():
        return python
    progress(f"pyvserv: installing pyvserv {PYVSERV_VERSION} into {where}")
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(where)
    except (OSError, subprocess.CalledProcessError) as e:
        raise PyvservUnavailable(f"cannot make a virtualenv in {where}: {e}") from None
    for extra, packages in ((["--no-deps"], NO_DEPS), ([], WITH_DEPS)):
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *extra, *packages],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise PyvservUnavailable(f"pip install {' '.join(packages)} failed: {done.stderr.strip()[-800:]}")
    stamp.touch()
    return python


def side(python: Path, name: str, port: int, job: dict[str, Any]) -> dict[str, Any]:
    """Run one job of bench/pyvserv_side.py in pyvserv's interpreter; its JSON answer. The job runs
    in a process group of its own, killed whole (its client processes too) if this one is interrupted."""
    process = subprocess.Popen(
        [str(python), str(SIDE), name, str(port), json.dumps(job)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=JOB_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"pyvserv {name}: no answer within {JOB_TIMEOUT:g} s") from None
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # what is left of the job: nothing, once it answered
        process.wait()
    lines = stdout.strip().splitlines()
    try:
        answer: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"pyvserv {name} ({process.returncode}): {stderr.strip()[-800:]}") from None
    if "error" in answer:
        raise RuntimeError(f"pyvserv {answer['error']}")
    return answer


def _log_tail(path: Path) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-8:])
    except OSError:
        return "(no log)"


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server and the processes it forked (one per connection), then SIGKILL to what is left."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=TIMEOUT / 3)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        pass
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # a server that hung, or forked children that outlived it
    process.wait()


@contextmanager
def pyvserv_server(python: Path, root: Path) -> Iterator[int]:
    """A pyvserv server on a free port with data root ``root`` (made if new), its admin user set; its port."""
    bin_dir = python.parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "keys").is_dir() or not any((root / "keys").iterdir()):
        done = subprocess.run(
            [str(bin_dir / "pyvgenkey"), "-q", "-m", str(root)],
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        if done.returncode != 0 or not any((root / "keys").glob("*.pub")):
            raise PyvservUnavailable(f"pyvgenkey made no key ({done.returncode}): {done.stderr.strip()[-500:]}")
    port = free_port()
    log = root.parent / f"pyvserv-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(bin_dir / "pyvserv"), "-r", str(root), "-p", str(port), "-t", "-q"],
            env=env,
            cwd=root.parent,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group: the server and its per-connection children
        )
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            if process.poll() is not None:
                raise PyvservUnavailable(f"pyvserv exited with status {process.returncode}: {_log_tail(log)}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise PyvservUnavailable(f"pyvserv did not listen within {TIMEOUT:g} s: {_log_tail(log)}") from None
                time.sleep(0.1)
        try:
            side(python, "setup", port, {})
        except RuntimeError as e:
            raise PyvservUnavailable(f"pyvserv started but its admin user could not be made: {e}") from None
        yield port
    finally:
        _stop_group(process)


# --- vledger: client processes, hello, verify -----------------------------------------------------


def _vledger_client(
    keys: KeyPair,
    node: NodeAddress,
    batch: list[Entry],
    window: int,
    start_line: Barrier,
    results: Queue[tuple[float, float, int, str]],
) -> None:
    """One client process: connect, wait for the others, put its batch; (start, end, count, error)."""
    try:
        with Client(node, keys, timeout=TIMEOUT) as client:
            client.hello()  # the CURVE handshake before the clock starts
            start_line.wait(TIMEOUT * 4)
            start = time.monotonic()
            _vledger_puts(client, batch, window)
            results.put((start, time.monotonic(), len(batch), ""))
    except Exception as e:
        results.put((0.0, 0.0, 0, repr(e)))


def _vledger_puts(client: Client, batch: list[Entry], window: int) -> int:
    receipts = [client.put(entry) for entry in batch] if window <= 1 else client.put_many(batch, window=window)
    if any(r["duplicate"] for r in receipts):
        raise RuntimeError("a put was a duplicate: the runs overlap")
    return len(batch)


def vledger_rate(keys: Sequence[KeyPair], node: NodeAddress, batches: Sequence[list[Entry]], window: int) -> float:
    """One process per batch, all starting together; records/s over the whole span."""
    results: Queue[tuple[float, float, int, str]] = SPAWN.Queue()
    start_line = SPAWN.Barrier(len(batches))
    processes = [
        SPAWN.Process(target=_vledger_client, args=(pair, node, batch, window, start_line, results), daemon=True)
        for pair, batch in zip(keys, batches, strict=True)
    ]
    for process in processes:
        process.start()
    failed = True
    try:
        done: list[tuple[float, float, int, str]] = []
        deadline = time.monotonic() + JOB_TIMEOUT
        while len(done) < len(processes):
            try:
                done.append(results.get(timeout=1.0))
            except queue.Empty:
                if time.monotonic() > deadline or any(p.exitcode not in (None, 0) for p in processes):
                    raise RuntimeError("a vledger client process died or went silent") from None
        errors = [d[3] for d in done if d[3]]
        if errors:
            raise RuntimeError(f"vledger client: {errors[0]}")
        failed = False
        return sum(d[2] for d in done) / (max(d[1] for d in done) - min(d[0] for d in done))
    finally:
        for process in processes:
            if failed:  # interrupted or a client failed: the others need not finish their batches
                process.terminate()
            process.join(TIMEOUT)
            if process.is_alive():
                process.kill()
                process.join()


def round_trips_ms(call: Callable[[], object], count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1_000)
    return times


def vledger_verify_seconds(directory: Path) -> float:
    """`vledger verify DIR` as a command, wall clock from its start to its exit."""
    started = time.perf_counter()
    done = subprocess.run([str(ingest.VLEDGER), "verify", str(directory)], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"vledger verify failed ({done.returncode}): {done.stdout[-300:]} {done.stderr[-300:]}")
    return wall


# --- the run --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sizes:
    sequential: int  # puts of the one sequential client, per run
    solo: int  # puts of the one pipelined client, per run
    each_sequential: int  # puts of each of the 8 sequential client processes, per run
    each: int  # puts of each of the 8 pipelined client processes, per run
    hellos: int  # per run
    verify: int  # records in each side's store for the verification figure


FULL = Sizes(sequential=1_000, solo=3_000, each_sequential=250, each=500, hellos=2_000, verify=100_000)
QUICK = Sizes(sequential=50, solo=200, each_sequential=20, each=50, hellos=100, verify=2_000)


def _entries_by_run(author: str, per_run: int, rounds: int, first: int) -> list[list[Entry]]:
    made = entries(per_run * rounds, ingest.DIFFICULTY, author=author, first=first)
    return [made[i * per_run : (i + 1) * per_run] for i in range(rounds)]


def measure(python: Path, sizes: Sizes, rounds: int, directory: Path) -> tuple[list[Row], list[str]]:
    """Every figure, pyvserv and vledger taking turns, ``rounds`` times; the rows and notes on the run."""
    samples: dict[str, tuple[list[float], list[float]]] = {}

    def take(name: str, pyv: float, vl: float) -> None:
        samples.setdefault(name, ([], []))
        samples[name][0].append(pyv)
        samples[name][1].append(vl)

    progress("pyvserv: preparing vledger entries")
    seq_batches = _entries_by_run("writer-seq", sizes.sequential, rounds, 1)
    solo_batches = _entries_by_run("writer-0", sizes.solo, rounds, 1)
    seq_client_batches = [
        _entries_by_run(f"writer-{i}", sizes.each_sequential, rounds, 1) for i in range(1, CLIENTS + 1)
    ]
    client_batches = [
        _entries_by_run(f"writer-{i}", sizes.each, rounds, 1 + sizes.each_sequential * rounds)
        for i in range(1, CLIENTS + 1)
    ]
    hello_ms: tuple[list[float], list[float]] = ([], [])
    with ExitStack() as stack:
        progress("pyvserv: starting a pyvserv server and a vledger ingest node")
        port = stack.enter_context(pyvserv_server(python, directory / "pyvserv" / "root"))
        node = stack.enter_context(ingest._node(directory / "vledger"))
        admin = stack.enter_context(Client(node.address, node.admin, timeout=TIMEOUT))
        seq_keys = ingest._writer(admin, "writer-seq")
        solo_keys = ingest._writer(admin, "writer-0")
        client_keys = [ingest._writer(admin, f"writer-{i}") for i in range(1, CLIENTS + 1)]
        admin.create_ledger(genesis(ingest.DIFFICULTY, author=ingest.ADMIN))
        hello_client = stack.enter_context(Client(node.address, solo_keys, timeout=TIMEOUT))
        hello_client.hello()

        def pyv_rate(clients: int, count: int, window: int, run_: int) -> float:
            job = {"clients": clients, "count": count, "window": window, "salt": f"r{run_}"}
            return float(side(python, "put", port, job)["rate"])

        for run_ in range(rounds):
            progress(f"pyvserv: round {run_ + 1} of {rounds}")
            take(
                "seq1",
                pyv_rate(1, sizes.sequential, 1, run_),
                vledger_rate([seq_keys], node.address, [seq_batches[run_]], 1),
            )
            take(
                "win1",
                pyv_rate(1, sizes.solo, WINDOW, run_),
                vledger_rate([solo_keys], node.address, [solo_batches[run_]], WINDOW),
            )
            take(
                "seq8",
                pyv_rate(CLIENTS, sizes.each_sequential, 1, run_),
                vledger_rate(client_keys, node.address, [b[run_] for b in seq_client_batches], 1),
            )
            take(
                "win8",
                pyv_rate(CLIENTS, sizes.each, WINDOW, run_),
                vledger_rate(client_keys, node.address, [b[run_] for b in client_batches], WINDOW),
            )
            pyv_hello = side(python, "hello", port, {"count": sizes.hellos})["ms"]
            vl_hello = round_trips_ms(hello_client.hello, sizes.hellos)
            hello_ms[0].extend(pyv_hello)
            hello_ms[1].extend(vl_hello)
            take("hello", statistics.median(pyv_hello), statistics.median(vl_hello))
        stored = admin.call("size", {"ledger": LEDGER})["size"]
        expected = 1 + rounds * (sizes.sequential + sizes.solo + CLIENTS * (sizes.each_sequential + sizes.each))
        if stored != expected:
            raise RuntimeError(f"the vledger node holds {stored} records, not {expected}")

    progress(f"pyvserv: building a pyvserv chain and a vledger store of {sizes.verify:,} records each")
    pyv_root = directory / "verify-pyvserv" / "root"
    pyv_root.mkdir(parents=True)
    side(python, "fill", 0, {"root": str(pyv_root), "size": sizes.verify})
    vl_store = directory / "verify-vledger"
    vl_store.mkdir()
    stores.build(vl_store, sizes.verify)
    rcheck_modes: dict[str, list[float]] = {}
    with pyvserv_server(python, pyv_root) as verify_port:
        for run_ in range(rounds):
            progress(f"pyvserv: verification, round {run_ + 1} of {rounds}")
            checked = side(python, "rcheck", verify_port, {})
            if checked["size"] != sizes.verify:
                raise RuntimeError(f"pyvserv's rcheck saw {checked['size']} records, not {sizes.verify}")
            for mode, seconds in checked["seconds"].items():
                rcheck_modes.setdefault(mode, []).append(seconds)
            take("verify", sizes.verify / checked["wall"], sizes.verify / vledger_verify_seconds(vl_store))

    def median(name: str, side_: int) -> float:
        return statistics.median(samples[name][side_])

    def row(name: str, figure: str, unit: str, note: str = "", higher: bool = True) -> Row:
        runs = " / ".join(", ".join(number(v) for v in samples[name][i]) for i in (0, 1))
        note = f"{note + '; ' if note else ''}runs (pyvserv / vledger): {runs}"
        return Row(figure, unit, median(name, 0), median(name, 1), higher, note)

    rows = [
        row("seq1", "put, 1 client, sequential (1 in flight)", "rec/s", f"{sizes.sequential:,} puts a run"),
        row(
            "win1",
            f"put, 1 client, {WINDOW} in flight",
            "rec/s",
            f"{sizes.solo:,} puts a run; pyvserv's CliSup has no window of its own: its requests are "
            "written ahead on the socket and the replies read in order",
        ),
        row(
            "seq8",
            f"put, {CLIENTS} client processes, sequential each",
            "rec/s",
            f"{sizes.each_sequential:,} puts each a run",
        ),
        row("win8", f"put, {CLIENTS} client processes, {WINDOW} in flight each", "rec/s", f"{sizes.each:,} puts each"),
        row(
            "hello",
            "hello round trip, median",
            "ms",
            f"{sizes.hellos:,} a run; pyvserv's inside its AES session, vledger's over CURVE; all samples' "
            f"p99: {number(_p99(hello_ms[0]))} / {number(_p99(hello_ms[1]))} ms",
            higher=False,
        ),
        row(
            "verify",
            f"full-chain verification of {sizes.verify:,} records",
            "rec/s",
            "pyvserv: `rcheck vote data`, `hash`, `proof` (what pyvcli_rcheck runs: the store's "
            "checksums, each record's hash, its proof) from connecting to the last reply, median seconds "
            + ", ".join(f"{mode} {statistics.median(s):.1f}" for mode, s in rcheck_modes.items())
            + "; vledger: `vledger verify DIR` wall clock including start-up (hashes, links, signatures, tree)",
        ),
    ]
    load = os.getloadavg()
    about = [
        f"{datetime.now(UTC).isoformat(timespec='seconds')}, pyvserv {PYVSERV_VERSION}, {rounds} rounds taking "
        f"turns, medians; {os.cpu_count()} cores, load average after the run {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} (1/5/15 min): on a busy machine read the ratios, not the figures",
        "the same payload on both sides (amount, memo, to: bench/fixtures.py); no proof of work while timed",
        "vledger: one ingest node, each put answered once fsynced, tree and checkpoints on, w=0; "
        "pyvserv: one server (a forked process per connection), each rput answered once written and "
        "flushed (pydbase flushes, it does not fsync)",
    ]
    return rows, about


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pyvserv",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every figure, taking turns (3)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: shows that every figure is produced")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help=f"pyvserv's virtualenv ({DEFAULT_VENV})")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"the markdown table ({RESULTS})")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 9:
        parser.error("--rounds must be 1 to 9")
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join([".venv/bin/python", "-m", "bench.pyvserv", *given])
    sizes = QUICK if args.quick else FULL
    # SIGTERM as Ctrl-C (and Ctrl-C even where a shell started us ignoring it): the with
    # statements then stop the server, the node and their children.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        python = ensure_pyvserv(args.venv.resolve())
        with scratch_dir() as directory:
            rows, about = measure(python, sizes, args.rounds, directory)
    except PyvservUnavailable as e:
        print(f"bench.pyvserv: pyvserv unavailable: {e}", file=sys.stderr)
        return EXIT_NO_PYVSERV
    except KeyboardInterrupt:
        print("bench.pyvserv: interrupted; processes stopped", file=sys.stderr)
        return 130
    text = render(rows, command, about)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
