"""ReplicaWatch: a put's write concern, resolved from the held heights of the session's real Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from vledger.broker.redis_server import connect, free_port
from vledger.broker.replication import ReplicationLedger
from vledger.ingest.write_concern import ReplicaWatch
from vledger.node.errors import ReplicationTimeoutError
from vledger.node.store import Receipt

HOME = "ingest-1"
LEDGER = "ledger-a"
DEADLINE = 10.0
SETTLE = 0.3  # seconds given to an advance that must not resolve a waiter


def receipt(height: int, ledger: str = LEDGER) -> Receipt:
    return Receipt(ledger, height, bytes([height % 256]) * 32, b"\x01" * 32)


@pytest.fixture
def repl(redis_client: Any) -> ReplicationLedger:
    return ReplicationLedger(redis_client)


@pytest.fixture
def watch(repl: ReplicationLedger) -> Iterator[ReplicaWatch]:
    started = ReplicaWatch(HOME, repl).start()
    yield started
    started.stop()


def still_waiting(future: Future[Any]) -> bool:
    time.sleep(SETTLE)
    return not future.done()


def test_a_waiter_resolves_once_enough_other_nodes_hold_its_height(
    watch: ReplicaWatch, repl: ReplicationLedger
) -> None:
    future = watch.wait(receipt(5), replicas=2, timeout_ms=10_000)
    repl.advance(HOME, LEDGER, 9)  # the home's own copy never counts
    repl.advance("replica-1", LEDGER, 5)
    repl.advance("replica-2", LEDGER, 4)  # below the height: not yet
    assert still_waiting(future)
    repl.advance("replica-2", LEDGER, 7)
    got, holders = future.result(timeout=DEADLINE)
    assert got == receipt(5)
    assert holders == ["replica-1", "replica-2"]


def test_ignored_nodes_never_count(repl: ReplicationLedger) -> None:
    # Observers hold copies to count them, not to keep them safe: a put's w does not count them.
    watch = ReplicaWatch(HOME, repl, ignored={"observer-1"}).start()
    try:
        future = watch.wait(receipt(3), replicas=1, timeout_ms=10_000)
        repl.advance("observer-1", LEDGER, 9)
        repl.advance(HOME, LEDGER, 9)
        assert still_waiting(future)
        repl.advance("replica-1", LEDGER, 3)
        assert future.result(timeout=DEADLINE)[1] == ["replica-1"]
    finally:
        watch.stop()


def test_heights_held_before_the_wait_count_at_once(watch: ReplicaWatch, repl: ReplicationLedger) -> None:
    for node in ("replica-1", "replica-2", "replica-3"):
        repl.advance(node, LEDGER, 20)
    assert watch.wait(receipt(3), replicas=3, timeout_ms=10_000).result(timeout=DEADLINE)[1] == [
        "replica-1",
        "replica-2",
        "replica-3",
    ]
    # A ledger the watch already follows: answered from what it heard, without asking Redis.
    assert watch.wait(receipt(20), replicas=1, timeout_ms=10_000).result(timeout=DEADLINE)[1] == [
        "replica-1",
        "replica-2",
        "replica-3",
    ]


def test_waiters_of_one_ledger_resolve_each_at_its_own_height(watch: ReplicaWatch, repl: ReplicationLedger) -> None:
    low, high = (watch.wait(receipt(h), replicas=1, timeout_ms=10_000) for h in (2, 8))
    other = watch.wait(receipt(2, ledger="ledger-b"), replicas=1, timeout_ms=10_000)
    repl.advance("replica-1", LEDGER, 4)
    assert low.result(timeout=DEADLINE)[1] == ["replica-1"]
    assert still_waiting(high) and not other.done()  # another ledger's heights are not this one's
    repl.advance("replica-1", LEDGER, 8)
    assert high.result(timeout=DEADLINE)[1] == ["replica-1"]
    repl.advance("replica-1", "ledger-b", 2)
    assert other.result(timeout=DEADLINE)[1] == ["replica-1"]


def test_a_waiter_times_out_with_where_its_record_stands(watch: ReplicaWatch, repl: ReplicationLedger) -> None:
    repl.advance(HOME, LEDGER, 5)
    repl.advance("replica-1", LEDGER, 5)
    started = time.monotonic()
    future = watch.wait(receipt(5), replicas=3, timeout_ms=300)
    with pytest.raises(ReplicationTimeoutError) as caught:
        future.result(timeout=DEADLINE)
    assert time.monotonic() - started >= 0.3
    error = caught.value
    assert error.code == "replication_timeout"
    assert error.details == {"ledger": LEDGER, "height": 5, "hash": receipt(5).hash, "replicas": ["replica-1"]}
    assert error.to_wire() == {"code": "replication_timeout", "message": error.message, **error.details}
    assert "durable on ingest-1" in error.message and "1 of the 3 replicas" in error.message


def test_stop_fails_the_waiters_left(repl: ReplicationLedger) -> None:
    watch = ReplicaWatch(HOME, repl).start()
    future = watch.wait(receipt(1), replicas=1, timeout_ms=60_000)
    watch.stop()
    with pytest.raises(ReplicationTimeoutError) as caught:
        future.result(timeout=DEADLINE)
    assert caught.value.details["replicas"] == []


def test_an_unreachable_redis_lets_waiters_time_out() -> None:
    client = connect(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    watch = ReplicaWatch(HOME, ReplicationLedger(client)).start()
    try:
        future = watch.wait(receipt(1), replicas=1, timeout_ms=200)
        with pytest.raises(ReplicationTimeoutError):
            future.result(timeout=DEADLINE)
    finally:
        watch.stop()
        client.close()


def test_a_waiter_times_out_even_when_redis_answers_with_an_error(
    watch: ReplicaWatch, repl: ReplicationLedger, redis_client: Any
) -> None:
    # Found while writing these tests: an error reply (here WRONGTYPE; NOPERM under an ACL)
    # raises a ResponseError, which _follow does not catch: the thread ends, and a put with
    # w > 0 then waits for ever instead of being answered replication_timeout.
    redis_client.set(repl.held_key(LEDGER), "not a hash")
    future = watch.wait(receipt(1), replicas=1, timeout_ms=200)
    with pytest.raises(ReplicationTimeoutError):
        future.result(timeout=3.0)
