"""The per-key token bucket of a real node: a burst past it is throttled, then served again.

The module's node allows 4 requests a second per key, in bursts of 8.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from vledger.broker.redis_server import RedisServer
from vledger.node.errors import RemoteError
from vledger.tests.integration.cluster import ADMIN, LocalCluster, Wire, entry, genesis, put_args, wait_until

RATE = 4
BURST = 8
LEDGER = "throttled"


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    with LocalCluster(
        redis_server.url,
        nodes=1,
        ingest={"throttle_rate": RATE, "throttle_burst": BURST},
        accounts={"writer1": "writer", "observer": "observer", "patient": "observer", "hasty": "observer"},
    ) as running:
        running.admin().create_ledger(genesis(LEDGER, ADMIN, ["note"]))
        yield running


def burst(wire: Wire, requests: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Send every request at once; the replies, in request order."""
    ids = [wire.request(cmd, args) for cmd, args in requests]
    replies = {}
    for _ in ids:
        reply = wire.recv(10.0)
        assert reply is not None, "a request of the burst got no answer"
        replies[reply["id"]] = reply
    return [replies[i] for i in ids]


def test_a_burst_past_the_bucket_is_throttled_then_served_again(cluster: LocalCluster) -> None:
    wire = cluster.wire("observer")
    replies = burst(wire, [("hello", {})] * (3 * BURST))
    served = [r for r in replies if r["ok"]]
    throttled = [r["error"] for r in replies if not r["ok"]]
    # The bucket holds BURST tokens and refills at RATE a second while the burst is read.
    assert BURST <= len(served) <= BURST + 2, replies
    assert replies[:BURST] == served[:BURST]
    assert {e["code"] for e in throttled} == {"throttled"}
    for error in throttled:
        assert isinstance(error["retry_after_ms"], int)
        assert 0 < error["retry_after_ms"] <= 1000 // RATE + 1, error
    # Served again once a token is back: within a second, and not for ever throttled.
    wait_until(lambda: wire.call("hello")["ok"], timeout=5.0, what="the observer is served again")


def test_a_throttled_key_does_not_slow_another(cluster: LocalCluster) -> None:
    observer = cluster.wire("observer")
    assert any(not r["ok"] for r in burst(observer, [("ver", {})] * (2 * BURST)))
    assert cluster.wire("writer1").call("ver")["ok"] is True


def test_a_throttled_put_writes_nothing(cluster: LocalCluster) -> None:
    wire = cluster.wire("writer1")
    entries = [entry(LEDGER, "note", {"i": i}, "writer1") for i in range(3 * BURST)]
    replies = burst(wire, [("put", put_args(e)) for e in entries])
    written = [r["result"]["height"] for r in replies if r["ok"]]
    assert any(not r["ok"] and r["error"]["code"] == "throttled" for r in replies)
    assert sorted(written) == list(range(1, len(written) + 1))
    size = wait_until(
        lambda: (r := wire.call("size", {"ledger": LEDGER}))["ok"] and r["result"]["size"],
        timeout=5.0,
        what="a size request gets through the throttle",
    )
    assert size == 1 + len(written)


def test_the_client_waits_out_the_throttle_and_gets_every_answer(cluster: LocalCluster) -> None:
    # Twice the burst at once: the second half is throttled, and the client sends it again after
    # the retry_after_ms the node asks for, so the caller sees every request answered.
    client = cluster.client("patient", timeout=10.0)
    results = client.call_many([("size", {"ledger": LEDGER})] * (2 * BURST))
    assert len(results) == 2 * BURST
    assert all(r["size"] >= 1 for r in results), results


def test_the_client_gives_up_on_the_throttle_after_its_timeout(cluster: LocalCluster) -> None:
    # With less patience than the bucket needs to refill, the refusal reaches the caller.
    client = cluster.client("hasty", timeout=0.2)
    with pytest.raises(RemoteError) as refused:
        client.call_many([("ver", {})] * (4 * BURST))
    assert refused.value.code == "throttled"
    assert isinstance(refused.value.details["retry_after_ms"], int)
