"""Many writers at once, and a SIGTERM in the middle of their writes, on a real node.

Every acknowledged put must be in the store exactly once, at the height and with the hash
of its receipt, on a chain without gaps that verifies; a node stopped with SIGTERM answers
what it took in, exits 0, and loses none of it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import zmq

from vledger.broker.client import Client
from vledger.broker.redis_server import RedisServer
from vledger.node.record import Entry, decode_record
from vledger.node.verify import ChainVerifier
from vledger.tests.integration.cluster import (
    ADMIN,
    LIMITS,
    LocalCluster,
    Wire,
    entry,
    genesis,
    now_ms,
    put_args,
    wait_until,
)

CLIENTS = 8
PUTS = 1000
WINDOW = 64
WRITERS = [f"load-{i}" for i in range(CLIENTS)]


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    with LocalCluster(redis_server.url, nodes=1, accounts=dict.fromkeys(WRITERS, "writer")) as running:
        yield running


def chain_of(client: Client, ledger: str) -> dict[int, tuple[bytes, str, str]]:
    """The ledger read back through ``range``, verified from genesis: height -> (hash, author, request id)."""
    verifier = ChainVerifier(ledger, LIMITS)
    chain = {}
    for data in client.records(ledger):
        record = decode_record(data, LIMITS)
        verifier.feed(record)  # raises at a gap, a bad link or a bad record
        chain[record.height] = (record.hash, record.content.author, record.content.request_id)
    assert sorted(chain) == list(range(len(chain))), "heights are not 0..n-1"
    return chain


def check_receipts(chain: dict[int, tuple[bytes, str, str]], receipts: list[tuple[Entry, dict[str, Any]]]) -> None:
    """Each receipt names its entry's place on the chain, and each request stands there once."""
    places = [(r["height"], r["hash"]) for _, r in receipts if not r["duplicate"]]
    assert len(set(places)) == len(places), "two puts were acknowledged at the same place"
    for made, receipt in receipts:
        held = chain.get(receipt["height"])
        assert held is not None, f"acknowledged {receipt} is not in the store"
        assert held == (receipt["hash"], made.content.author, made.content.request_id), f"{receipt} is now {held}"
    requests = [(author, request_id) for _, author, request_id in chain.values()]
    assert len(set(requests)) == len(requests), "a request was written twice"


def test_concurrent_writers_get_distinct_receipts_on_one_gapless_chain(cluster: LocalCluster) -> None:
    ledger = "crowd"
    cluster.admin().create_ledger(genesis(ledger, ADMIN, ["note"], difficulty=0))
    batches = {name: [entry(ledger, "note", {"i": i}, name) for i in range(PUTS)] for name in WRITERS}
    receipts: dict[str, list[dict[str, Any]]] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(CLIENTS)

    def write(name: str) -> None:
        try:
            with Client(cluster.address(), cluster.keys[name], timeout=30.0) as client:
                start.wait()
                receipts[name] = client.put_many(batches[name], window=WINDOW)
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=write, args=(name,), name=name) for name in WRITERS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), f"{thread.name} is still writing after 2 minutes"
    assert not failures, failures

    acknowledged = [(made, r) for name in WRITERS for made, r in zip(batches[name], receipts[name], strict=True)]
    assert len(acknowledged) == CLIENTS * PUTS
    assert not any(r["duplicate"] for _, r in acknowledged)
    observer = cluster.client(WRITERS[0])
    chain = chain_of(observer, ledger)
    assert len(chain) == 1 + CLIENTS * PUTS
    check_receipts(chain, acknowledged)
    # Each writer's own puts keep their order on the chain (one connection, answered in order of placing).
    for name in WRITERS:
        heights = [r["height"] for r in receipts[name]]
        assert heights == sorted(heights), f"{name}'s puts were placed out of order"

    assert cluster.stop_node("ingest-1") == 0
    verified = cluster.verify_store()
    assert verified.returncode == 0, verified.stdout + verified.stderr
    cluster.start_node("ingest-1")


def test_concurrent_writes_see_the_domain_rules_in_one_order(cluster: LocalCluster) -> None:
    """Rules are checked where records are placed, one at a time: racing writers cannot both win."""
    now = now_ms()
    admin = cluster.admin()
    admin.create_ledger(
        genesis(
            "race-vote",
            ADMIN,
            ["cast", "register", "uncast", "withdraw"],
            {"type": "election", "choices": ["yes"], "opens": now - 60_000, "closes": now + 3_600_000},
        )
    )
    registrations = {name: entry("race-vote", "register", {"voter_id": "V-same"}, name) for name in WRITERS}
    outcomes: dict[str, str] = {}
    start = threading.Barrier(CLIENTS)

    def register(name: str) -> None:
        wire = cluster.wire(name)
        start.wait()
        reply = wire.call("put", put_args(registrations[name]))
        outcomes[name] = "ok" if reply["ok"] else reply["error"]["code"]

    threads = [threading.Thread(target=register, args=(name,)) for name in WRITERS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30.0)
    assert sorted(outcomes.values()) == ["already_registered"] * (CLIENTS - 1) + ["ok"], outcomes

    admin.create_ledger(
        genesis(
            "race-coins",
            ADMIN,
            ["issue", "transfer"],
            {"type": "resources", "unit": "coin", "issuers": [ADMIN], "max_holders": 100},
        )
    )
    admin.put(entry("race-coins", "issue", {"account": WRITERS[0], "amount": 100}, ADMIN))
    spender = cluster.wire(WRITERS[0])
    transfers = [
        entry("race-coins", "transfer", {"from": WRITERS[0], "to": WRITERS[1 + i % 3], "amount": 15}, WRITERS[0])
        for i in range(10)
    ]
    ids = [spender.request("put", put_args(made)) for made in transfers]  # all in flight at once
    replies = {}
    for _ in ids:
        reply = spender.recv(10.0)
        assert reply is not None
        replies[reply["id"]] = reply
    codes = ["ok" if replies[i]["ok"] else replies[i]["error"]["code"] for i in ids]
    assert codes == ["ok"] * 6 + ["insufficient_funds"] * 4, codes  # 6 x 15 = 90 of 100
    assert cluster.client(WRITERS[0]).call("size", {"ledger": "race-coins"})["size"] == 1 + 1 + 6


@dataclass
class Pump:
    """One connection putting entries with a window in flight until the node stops answering."""

    wire: Wire
    entries: list[Entry]
    window: int = 32
    receipts: list[tuple[Entry, dict[str, Any]]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    unanswered: list[Entry] = field(default_factory=list)

    def run(self) -> None:
        pending: dict[int, Entry] = {}
        queue = iter(self.entries)
        exhausted = False
        while True:
            while len(pending) < self.window and not exhausted:
                made = next(queue, None)
                if made is None:
                    exhausted = True
                    break
                pending[self.wire.request("put", put_args(made))] = made
            if not pending:
                return
            reply = self.wire.recv(3.0)
            if reply is None:  # the node is gone
                self.unanswered = list(pending.values())
                return
            made = pending.pop(reply["id"])
            if reply["ok"]:
                self.receipts.append((made, reply["result"]))
            else:
                self.errors.append(reply["error"])


def interrupt_writers(cluster: LocalCluster, ledger: str, names: list[str], stop: Callable[[], None]) -> list[Pump]:
    """Writers put on ``ledger`` until ``stop()`` (called once 400 puts are acknowledged) ends the node."""
    cluster.admin().create_ledger(genesis(ledger, ADMIN, ["note"], difficulty=0))
    pumps = [
        Pump(cluster.wire(name), [entry(ledger, "note", {"i": i}, name) for i in range(1500)], window=64)
        for name in names
    ]
    threads = [threading.Thread(target=pump.run) for pump in pumps]
    for thread in threads:
        thread.start()
    wait_until(lambda: sum(len(p.receipts) for p in pumps) >= 400, timeout=30.0, what="400 puts acknowledged")
    stop()
    for thread in threads:
        thread.join(timeout=30.0)
        assert not thread.is_alive()
    assert [e for pump in pumps for e in pump.errors] == []
    assert any(p.unanswered for p in pumps), "every put was answered before the node stopped: nothing was in flight"
    return pumps


def check_after_restart(cluster: LocalCluster, ledger: str, pumps: list[Pump], names: list[str]) -> None:
    """Restart the node: every acknowledged put is there; a retry of the others settles each, once."""
    cluster.start_node("ingest-1")
    acknowledged = [item for pump in pumps for item in pump.receipts]
    client = cluster.client(names[0])
    check_receipts(chain_of(client, ledger), acknowledged)
    retried = []
    for pump, name in zip(pumps, names, strict=True):
        retried += zip(pump.unanswered, cluster.client(name).put_many(pump.unanswered), strict=True)
    chain = chain_of(client, ledger)
    check_receipts(chain, [*acknowledged, *retried])
    # Nothing else is on the chain: the genesis, the acknowledged puts and the retried ones.
    assert len(chain) == 1 + len(acknowledged) + len(retried)


def test_sigterm_while_puts_are_in_flight_loses_no_acknowledged_put(cluster: LocalCluster) -> None:
    process = cluster.node("ingest-1").process
    assert process is not None

    def terminate() -> None:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30.0) == 0, cluster.log_tail("ingest-1")

    pumps = interrupt_writers(cluster, "interrupted", WRITERS, terminate)
    assert "ingest node ingest-1 stopped" in cluster.log_text("ingest-1")
    check_after_restart(cluster, "interrupted", pumps, WRITERS)


def test_sigkill_while_puts_are_in_flight_loses_no_acknowledged_put(cluster: LocalCluster) -> None:
    """A put is answered only once durable: even kill -9 keeps every acknowledged one."""
    pumps = interrupt_writers(cluster, "killed", WRITERS, lambda: cluster.kill_node("ingest-1"))
    check_after_restart(cluster, "killed", pumps, WRITERS)


def test_replies_still_queued_at_sigterm_are_delivered(cluster: LocalCluster) -> None:
    """server.py: on SIGTERM "the ones in flight answered". Here 20 puts are written, their replies
    queued behind large range replies that the client has not read yet; the client reads on at
    once, and every put must be answered, not merely written."""
    ledger = "slow-reader"
    cluster.admin().create_ledger(genesis(ledger, ADMIN, ["note"], difficulty=0))
    filler = [entry(ledger, "note", {"i": i, "pad": "x" * 1000}, WRITERS[0]) for i in range(499)]
    cluster.client(WRITERS[0]).put_many(filler)
    # A client that takes its replies in slowly: one message in its queue, a small TCP buffer.
    slow = cluster.wire(WRITERS[1], options={zmq.RCVHWM: 1, zmq.RCVBUF: 256 * 1024})
    for _ in range(20):  # 20 pages of about 500 KiB each: more than the TCP buffers hold
        slow.request("range", {"ledger": ledger, "start": 0})
    late = {
        slow.request("put", put_args(made)): made
        for made in (entry(ledger, "note", {"late": i}, WRITERS[1]) for i in range(20))
    }
    observer = cluster.client(WRITERS[0])
    wait_until(lambda: observer.call("size", {"ledger": ledger})["size"] == 520, 30.0, "the 20 late puts written")

    process = cluster.node("ingest-1").process
    assert process is not None
    process.send_signal(signal.SIGTERM)
    answered = []
    while (reply := slow.recv(3.0)) is not None:
        if reply["id"] in late:
            assert reply["ok"] is True, reply
            answered.append(reply["id"])
    assert process.wait(timeout=30.0) == 0
    cluster.start_node("ingest-1")
    assert len(answered) == len(late), (
        f"{len(late) - len(answered)} of {len(late)} puts were written but never answered: "
        "the node closed its socket without letting queued replies out"
    )
