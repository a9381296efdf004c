"""Figure 8: the public gateway's requests/s, beside a bare aiohttp server, and what a voter downloads.

A store of demo ledgers (real records) is served by the gateway (verifier/gateway.py) from a
thread, as in production; 32 concurrent clients of one aiohttp ClientSession ask one route
again and again. The ceiling is the barest aiohttp application in the same setup, answering
a fixed 8,192-byte body (a full tile's size) from memory. Routes: the signed checkpoint
(``/ledgers/<l>/checkpoint``: the store's notes gathered, every signature line checked, and
kept for a second), a full hash tile, an inclusion proof. Full tiles are immutable, so past
the gateway a cache or CDN serves them.

8d is computed, not measured at that size: the bytes of a voter's check (the answer of
``/api/ledgers/<l>/voters/<eid>``: a registration and a cast, each with its receipt: record,
inclusion proof and the signed checkpoint, measured here) grown to an election of 1,000,000
records by the proof's length, ceil(log2 n) hashes of 44 base64 characters each (49 bytes with
the escaped quotes and comma of a receipt inside JSON).
"""

from __future__ import annotations

import asyncio
import math
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiohttp import ClientSession, TCPConnector, web

from vledger.broker.http import HttpThread
from vledger.config.cluster import cluster_from_mapping
from vledger.config.settings import Limits
from vledger.node.record import decode_record
from vledger.node.rules.votes import electronic_id
from vledger.node.store import ChainStore
from vledger.node.storefile import StoreReader
from vledger.node.witness import HomeSigner, home_key
from vledger.tools.demo import run_demo
from vledger.verifier.gateway import Gateway, build_app

from .fixtures import Sizes, scratch_dir
from .report import Ceiling, Figure, progress

COMMAND = ".venv/bin/python -m bench --only gateway"
CONCURRENCY = 32
ELECTION = "election-2026"
VOTERS_AT = 1_000_000
BODY = bytes(8192)
CLUSTER = "bench"
HOME_SEED = bytes(range(32))  # a bench's checkpoint key: nothing secret is signed with it


async def _load(url: str, requests: int) -> float:
    """Requests/s of ``requests`` GETs of ``url`` by CONCURRENCY clients; every answer must be 200."""
    async with ClientSession(connector=TCPConnector(limit=CONCURRENCY)) as session:
        left = requests

        async def client() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.get(url) as answer:
                    await answer.read()
                    assert answer.status == 200, (url, answer.status)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
        return requests / (time.perf_counter() - started)


def _rate(url: str, requests: int, repeats: int) -> float:
    return max(asyncio.run(_load(url, requests)) for _ in range(repeats))


@contextmanager
def _served(directory: Path) -> Iterator[str]:
    config = cluster_from_mapping(
        {
            "cluster": {"name": "bench", "data": str(directory), "keys": "keys", "default_home": "ingest-1"},
            "nodes": {
                "ingest-1": {"role": "ingest", "port": 1, "pub_port": 2},
                "replica-1": {"role": "replica", "port": 3},
            },
        },
        directory / "cluster.toml",
    )
    gateway = Gateway(config, "replica-1")
    try:
        with HttpThread(build_app(gateway), "127.0.0.1", 0, name="bench-gateway") as server:
            yield f"http://127.0.0.1:{server.port}"
    finally:
        gateway.close()


def _bare() -> web.Application:
    async def body(_: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/", body)
    return app


def run(sizes: Sizes) -> list[Figure]:
    records, requests = sizes.gateway_records, sizes.gateway_requests
    figures: list[Figure] = []
    with scratch_dir() as directory:
        progress(f"gateway: a store of {records:,} demo records")
        home = HomeSigner(CLUSTER, HOME_SEED)
        pin = lambda ledger: home_key(CLUSTER, ledger, home.key(ledger).public_key).encode()  # noqa: E731
        run_demo(directory / "replica-1", records, 1, Limits(), pin)
        with ChainStore(directory / "replica-1", origin="ingest-1") as store:  # the home's checkpoint at the head
            for ledger in store.ledgers():
                signed = home.sign(ledger, store.size(ledger), store.root(ledger, store.size(ledger)))
                store.checkpoints.keep(ledger, "signed", signed.size, signed.root, signed.note)
        with HttpThread(_bare(), "127.0.0.1", 0, name="bench-bare") as bare:
            progress(f"gateway: bare aiohttp, {requests:,} requests x {sizes.repeats}")
            ceiling = _rate(f"http://127.0.0.1:{bare.port}/", requests, sizes.repeats)
        with _served(directory) as url:
            size = StoreReader(directory / "replica-1").size(ELECTION)
            routes = (
                ("8a", "gateway: the signed checkpoint (tlog-tiles)", f"{url}/ledgers/{ELECTION}/checkpoint"),
                ("8b", "gateway: a full hash tile (8,192 bytes, immutable)", f"{url}/ledgers/{ELECTION}/tile/0/000"),
                (
                    "8c",
                    "gateway: an inclusion proof (JSON)",
                    f"{url}/api/ledgers/{ELECTION}/proof/inclusion?index={size // 2}&size={size}",
                ),
            )
            for key, name, route in routes:
                progress(f"gateway: {name}, {requests:,} requests x {sizes.repeats}")
                figures.append(
                    Figure(
                        key=key,
                        name=name,
                        value=_rate(route, requests, sizes.repeats),
                        unit="requests/s",
                        ceiling=Ceiling(
                            "bare aiohttp",
                            ceiling,
                            "requests/s",
                            f"an aiohttp app answering 8,192 fixed bytes, same {CONCURRENCY} clients and threads",
                        ),
                        command=COMMAND,
                        details={"records in the store": size, "concurrent clients": CONCURRENCY},
                    )
                )
            figures.append(_voter_bytes(directory, url, size))
    return figures


def _voter_bytes(directory: Path, url: str, size: int) -> Figure:
    reader = StoreReader(directory / "replica-1")
    registration = decode_record(reader.get(ELECTION, 1) or b"", Limits())
    with urllib.request.urlopen(f"{url}/api/ledgers/{ELECTION}/voters/{electronic_id(registration)}") as answer:
        measured = len(answer.read())
    records = 2  # a registration and a cast
    grown = measured + records * (math.ceil(math.log2(VOTERS_AT)) - math.ceil(math.log2(size))) * 49  # '\"b64\",'
    chain = reader.count(ELECTION)
    average = sum(len(d) for _, d in reader.iter_raw(ELECTION)) / chain
    return Figure(
        key="8d",
        name=f"bytes a voter's check downloads, election of {VOTERS_AT:,} records",
        value=grown,
        unit="bytes",
        higher_is_better=False,
        ceiling=Ceiling(
            "the whole chain",
            average * VOTERS_AT,
            "bytes",
            f"{VOTERS_AT:,} records of the measured mean size ({average:.0f} bytes)",
        ),
        command=COMMAND,
        details={
            "measured at": f"{size:,} records: {measured:,} bytes",
            "proof hashes per record at 1,000,000": math.ceil(math.log2(VOTERS_AT)),
        },
    )
