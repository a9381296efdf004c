"""The slowloris attack on an HTTP port of ours, and whether the port keeps answering meanwhile.

Not a figure of `make bench`: ``.venv/bin/python -m bench.slowloris [--python PY] [--connections N]
[--hold S] [--per-address N]``. A server process (``PY``, this venv's python by default: give another
checkout's to measure its code) serves :func:`vledger.broker.http.health_app` from an
:class:`~vledger.broker.http.HttpThread`, the class every HTTP port of ours (the gateway's too)
is served by. The attacker opens ``N`` connections from 127.0.0.2, sends on each a request line
and then one more header byte a second, never ending the head, for ``S`` seconds; it does not
reconnect. Meanwhile a prober on 127.0.0.1 asks ``/healthz`` on a new connection every 0.2 s.
Printed: how many connections the server held at each time, how many it refused (503) or closed,
the longest it held one, and the prober's latencies and failures.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

ATTACKER = "127.0.0.2"
PROBER = "127.0.0.1"
PROBE_EVERY = 0.2
BURST = 5.0  # seconds of the attacker's connects, reported apart
# The server: HttpThread with [http]'s defaults (or a per-address cap given), on a free port.
SERVER = """
import sys, threading
from prometheus_client import CollectorRegistry
from vledger.broker.http import HttpThread, health_app
kwargs = {}
if sys.argv[1] != "-":
    from vledger.config.cluster import HttpSettings
    most = max(int(sys.argv[1]), HttpSettings().max_connections)
    kwargs["settings"] = HttpSettings(max_connections=most, max_connections_per_address=int(sys.argv[1]))
with HttpThread(health_app({}, CollectorRegistry()), "0.0.0.0", 0, **kwargs) as server:
    print(server.port, flush=True)
    sys.stdin.read()
"""


async def _slow(
    start: float, port: int, hold: float, held: list[tuple[float, bool]], refused: list[int], failed: list[int]
) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACKER, 0))
    except OSError:
        failed.append(1)
        return
    connected = time.monotonic()  # held times count from here: a burst of connects queues a while
    closed: bool | None = False
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        while time.monotonic() - start < hold:
            try:
                data = await asyncio.wait_for(reader.read(256), 1.0)
            except TimeoutError:
                writer.write(b"a")
                continue
            if data.startswith(b"HTTP/1.1 503"):
                refused.append(1)
                closed = None  # answered: counted apart
                break
            if not data:
                closed = True
                break
    except OSError:
        closed = True  # reset by the server
    finally:
        if closed is not None:
            held.append((time.monotonic() - connected, closed))
        writer.close()


async def _probe(port: int, until: float, latencies: list[tuple[float, float]], failures: list[str]) -> None:
    """Ask /healthz every PROBE_EVERY s until ``until``: (when, seconds it took) of each answer."""
    while time.monotonic() < until:
        start = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(PROBER, 0))
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 5.0)
            writer.close()
            if answer.startswith(b"HTTP/1.1 200"):
                latencies.append((start, time.monotonic() - start))
            else:
                failures.append(answer[:40].decode(errors="replace"))
        except (OSError, TimeoutError) as e:
            failures.append(type(e).__name__)
        await asyncio.sleep(PROBE_EVERY)


async def _attack(port: int, connections: int, hold: float) -> None:
    held: list[tuple[float, bool]] = []
    refused: list[int] = []
    failed: list[int] = []
    latencies: list[tuple[float, float]] = []
    failures: list[str] = []
    start = time.monotonic()
    prober = asyncio.create_task(_probe(port, start + hold + 2, latencies, failures))
    slow = [asyncio.create_task(_slow(start, port, hold, held, refused, failed)) for _ in range(connections)]
    marks = [1, 5, 9, 11, 15, 20, 30, 45, 60, 90, 120]
    for mark in (m for m in marks if m <= hold):
        await asyncio.sleep(max(0.0, start + mark - time.monotonic()))
        still = sum(not task.done() for task in slow)
        print(f"  t={mark:>3} s: attacker's connections still open {still:>5}", flush=True)
    await asyncio.gather(*slow)
    await prober
    kept = [seconds for seconds, closed in held if not closed]
    closed = [seconds for seconds, closed in held if closed]
    print(
        f"  refused with 503: {len(refused)}, connect failed: {len(failed)}, held to the end ({hold:.0f} s): "
        f"{len(kept)}, closed by the server (no 503): {len(closed)}"
        + (f" (held at most {max(closed):.1f} s after connecting)" if closed else "")
    )
    print(f"  prober: failures {len(failures)} {sorted(set(failures))[:3]}")
    # The first seconds are the attacker's burst of connects (the listen queue overflows for
    # everyone: SYNs are retried after 1 s, 3 s); then what the held connections cost.
    for first, last in ((0.0, BURST), (BURST, hold)):
        ms = sorted(took * 1000 for at, took in latencies if first <= at - start < last)
        if ms:
            p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
            print(
                f"  prober t={first:.0f}-{last:.0f} s: {len(ms)} answered, p50 {statistics.median(ms):.1f} ms, "
                f"p99 {p99:.1f} ms, max {ms[-1]:.1f} ms"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slowloris", description=__doc__)
    parser.add_argument("--python", default=sys.executable, help="the server's interpreter (its checkout's code)")
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--hold", type=float, default=60.0, help="seconds the attacker keeps sending")
    parser.add_argument("--per-address", type=int, help="the server's max_connections_per_address (default: [http]'s)")
    args = parser.parse_args(argv)
    per_address = "-" if args.per_address is None else str(args.per_address)
    server = subprocess.Popen(
        [args.python, "-c", SERVER, per_address], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        print(f"server {Path(args.python).absolute().parents[2]} on port {port}, per-address cap {per_address}")
        asyncio.run(_attack(port, args.connections, args.hold))
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
