"""CPU time of the gateway's own work per request, in process: what proving a route costs.

Figure 8's requests/s are wall-clock, and on a shared host mostly noise; this measures the
process's CPU time (``time.process_time``) of ``Gateway`` calls over a demo store with the
home's checkpoint at its head, no HTTP: the routes of 8b and 8c, a level-1 tile, a consistency
proof, an inclusion proof of a past size and a receipt, each called ``--calls`` times after a
warm-up (their tiles and roots proven and kept, as in a running gateway), and two cold ones: an
inclusion proof of a size not asked before at each call, and a level-1 tile proven anew at each
call. One JSON line of microseconds a call. For an A/B of two checkouts, run this file with
``PYTHONPATH`` set to the other's parent folder (a folder holding it as ``vledger``), in turns.

    .venv/bin/python -m bench.gateway_cpu [--records 20000] [--calls 3000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import vledger
from vledger.bench.fixtures import scratch_dir
from vledger.bench.gateway import CLUSTER, ELECTION, HOME_SEED
from vledger.config.cluster import cluster_from_mapping
from vledger.config.settings import Limits
from vledger.node.store import ChainStore
from vledger.node.witness import HomeSigner, home_key
from vledger.tools.demo import run_demo
from vledger.verifier.gateway import Gateway

WARM = 50  # calls before the timed ones


class _NoRedis:
    """No Redis: the gateway serves what the store holds (its checkpoint), as with Redis down."""

    def __getattr__(self, name: str) -> Any:
        raise OSError("no Redis in this measure")


def _gateway(directory: Path, records: int) -> Gateway:
    home = HomeSigner(CLUSTER, HOME_SEED)
    pin = lambda ledger: home_key(CLUSTER, ledger, home.key(ledger).public_key).encode()  # noqa: E731
    run_demo(directory / "replica-1", records, 1, Limits(), pin)
    with ChainStore(directory / "replica-1", origin="ingest-1") as store:
        size = store.size(ELECTION)
        signed = home.sign(ELECTION, size, store.root(ELECTION, size))
        store.checkpoints.keep(ELECTION, "signed", signed.size, signed.root, signed.note)
    config = cluster_from_mapping(
        {
            "cluster": {"name": CLUSTER, "data": str(directory), "keys": "keys", "default_home": "ingest-1"},
            "nodes": {
                "ingest-1": {"role": "ingest", "port": 1, "pub_port": 2},
                "replica-1": {"role": "replica", "port": 3},
            },
        },
        directory / "cluster.toml",
    )
    return Gateway(config, "replica-1", redis_client=_NoRedis())


def measure(gateway: Gateway, calls: int) -> dict[str, float]:
    """Microseconds of CPU a call of each route (see the module's docstring)."""
    size = gateway.reader.size(ELECTION)
    level_1 = f"tile/1/000.p/{min(size >> 8, 255)}"
    fresh = iter(range(size // 2, size))

    def tile_anew() -> object:
        gateway._tiles.clear()
        return gateway.tile(ELECTION, level_1)

    routes: dict[str, Callable[[], object]] = {
        "8b tile/0/000": lambda: gateway.tile(ELECTION, "tile/0/000"),
        "8c inclusion at the head": lambda: gateway.inclusion(ELECTION, size // 2, size),
        level_1: lambda: gateway.tile(ELECTION, level_1),
        "consistency from size/3": lambda: gateway.consistency(ELECTION, size // 3, size),
        "inclusion at size/2": lambda: gateway.inclusion(ELECTION, size // 4, size // 2),
        "receipt": lambda: gateway.receipt(ELECTION, size // 2),
        "cold: inclusion at a new size": lambda: gateway.inclusion(ELECTION, 7, next(fresh)),
        f"cold: {level_1} proven anew": tile_anew,
    }
    spent = {}
    for name, route in routes.items():
        for _ in range(WARM):
            route()
        started = time.process_time()
        for _ in range(calls):
            route()
        spent[name] = round((time.process_time() - started) / calls * 1e6, 1)
    return spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_cpu", description=__doc__)
    parser.add_argument("--records", type=int, default=20_000, help="demo records in the store")
    parser.add_argument("--calls", type=int, default=3_000, help="timed calls of each route (under size/2)")
    args = parser.parse_args(argv)
    with scratch_dir() as directory:
        gateway = _gateway(directory, args.records)
        try:
            spent = measure(gateway, min(args.calls, gateway.reader.size(ELECTION) // 2 - WARM))
        finally:
            gateway.close()
    print(json.dumps({"code": str(Path(vledger.__file__).parent), "records": args.records, "us_per_call": spent}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
