"""The feed's connection caps and one file budget for all of a node's ports, on a real node.

The feed (``pub_port``) had no guard, only the handshake interval, and each guarded port's cap
was its own, up to the file limit less 256, while the file limit is the process's: silent
connections to the request port and the feed together could hold every file of the node,
and then its accepts and its store's opens failed (r8). Here the node runs with 512 files, so
its ports share a budget of 256 connections, and the handshake interval is long enough that
only the guards can be what closes a silent connection. A real replica follows the node
throughout: a flood must never cut the cluster's own subscribers.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest

from vledger.broker.file_budget import FILES_KEPT
from vledger.broker.redis_server import RedisServer
from vledger.tests.integration.cluster import FeedTap, LocalCluster, entry, genesis, wait_until
from vledger.tests.unit.broker.test_curve_guard import GREETING

from .test_curve_limits import FEED_CUT, closed, open_files

CAP = 64  # connections from one address, on each port
FILE_LIMIT = 512
BUDGET = FILE_LIMIT - FILES_KEPT
HANDSHAKE_MS = 60_000
LEDGER = "budget"


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    broker = {"max_connections_per_address": CAP, "handshake_interval_ms": HANDSHAKE_MS}
    with LocalCluster(redis_server.url, nodes=1, replicas=1, broker=broker, file_limit=FILE_LIMIT) as running:
        running.admin().create_ledger(genesis(LEDGER, "admin", ["note"]))
        yield running


@contextlib.contextmanager
def silent(port: int, sources: list[str], each: int) -> Iterator[list[socket.socket]]:
    """``each`` connections to ``port`` from each local address of ``sources``, that send nothing."""
    flood: list[socket.socket] = []
    try:
        for source in sources:
            for _ in range(each):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
                sock.setblocking(False)
                flood.append(sock)
        yield flood
    finally:
        for sock in flood:
            sock.close()


def published(tap: FeedTap, height: int) -> bool:
    """Whether ``tap`` has received the record of LEDGER at ``height`` (reading what arrived)."""
    tap.read(0.1)
    return any(r.ledger == LEDGER and r.height == height for r in tap.records)


def test_silent_connections_to_the_feed_past_the_cap_are_cut_and_its_subscribers_still_served(
    cluster: LocalCluster,
) -> None:
    node = cluster.node()
    assert node.process is not None
    writer = cluster.client("writer1")
    first = writer.put(entry(LEDGER, "note", {"n": "before"}, "writer1"))["height"]
    wait_until(lambda: cluster.own_size("replica-1", LEDGER) > first, 20.0, "the replica following")
    files_before, cut_before = open_files(node.process.pid), cluster.metric(node.name, FEED_CUT)
    with silent(node.pub_port, ["127.0.0.2"], CAP + 10) as flood:
        wait_until(lambda: sum(closed(s) for s in flood) >= 10, 10.0, "the feed's connections past the cap cut")
        assert sum(closed(s) for s in flood) == 10  # the others are held until the handshake interval
        tap = cluster.tap(node.name)  # a subscriber from another address gets in meanwhile
        tap.wait_beats(1)
        during = writer.put(entry(LEDGER, "note", {"n": "during"}, "writer1"))["height"]
        wait_until(lambda: published(tap, during), 10.0, "the record published on the flooded feed")
        wait_until(lambda: cluster.own_size("replica-1", LEDGER) > during, 20.0, "the replica holding it")
    # Only the flood's connections were cut: not the replica's, not the tap's.
    assert cluster.metric(node.name, FEED_CUT) - cut_before == 10
    wait_until(lambda: open_files(node.process.pid) <= files_before + 4, 10.0, "the node's files given back")


def test_the_request_port_and_the_feed_share_one_budget_of_files(cluster: LocalCluster) -> None:
    node = cluster.node()
    assert node.process is not None
    pid = node.process.pid
    files_before = open_files(pid)
    writer = cluster.client("writer1")  # connected before the flood: its place is held
    first = writer.put(entry(LEDGER, "note", {"n": 0}, "writer1"))["height"]
    sources = [f"127.0.0.{i}" for i in range(2, 6)]
    each = CAP - 14  # under each port's cap per address: only the budget can cut them
    with silent(node.port, sources, each) as requests, silent(node.pub_port, sources, each) as feed:
        flood = requests + feed
        assert len(flood) > BUDGET + 100
        wait_until(lambda: sum(closed(s) for s in flood) >= len(flood) - BUDGET, 10.0, "the flood cut to the budget")
        assert open_files(pid) < FILE_LIMIT - 64, "the node's own files were not left to it"
        receipt = writer.put(entry(LEDGER, "note", {"n": 1}, "writer1"))  # its store still opens and writes
        assert receipt["height"] == first + 1
        # A new subscriber still gets in, in the place of a silent connection: the flood's
        # addresses need not be its own to keep it out of a budget they filled.
        cluster.tap(node.name).wait_beats(1, timeout=10.0)
        assert sum(closed(s) for s in flood) >= len(flood) - BUDGET + 1
    wait_until(lambda: open_files(pid) <= files_before + 8, 10.0, "the node's files given back")
    assert cluster.client("writer2").hello()["node"] == node.name  # and its places


def test_connections_that_never_shake_hands_from_a_subscriber_s_address_never_keep_it_off_the_feed(
    cluster: LocalCluster,
) -> None:
    """The caps counted connections before their CURVE handshake: anyone sharing a replica's
    address (a NAT, the host itself) who held max_connections_per_address TCP connections that
    never finish it (silent, or stalled after a greeting), each as long as the handshake
    interval, had every new connection of the replica cut, a reconnect after a restart or a
    network cut among them. A connection past a cap now takes the place of the oldest whose
    handshake is not done."""
    node = cluster.node()
    writer = cluster.client("writer1")
    cut_before = cluster.metric(node.name, FEED_CUT)
    with silent(node.pub_port, ["127.0.0.1"], CAP + 10) as flood:
        for sock in flood:  # they speak ZMTP, and stall there: not silent, never done
            with contextlib.suppress(OSError):  # one already cut
                sock.sendall(GREETING)
        wait_until(lambda: sum(closed(s) for s in flood) >= 10, 10.0, "the flood cut to the cap")
        tap = cluster.tap(node.name)  # from the flood's address, the replicas' own Subscriber
        tap.wait_beats(1, timeout=10.0)
        during = writer.put(entry(LEDGER, "note", {"n": "shared address"}, "writer1"))["height"]
        wait_until(lambda: published(tap, during), 10.0, "the record published to the new subscriber")
        wait_until(lambda: cluster.own_size("replica-1", LEDGER) > during, 20.0, "the replica still following")
        assert not closed(flood[-1])  # the newest of the flood holds its place: the oldest made room
    assert cluster.metric(node.name, FEED_CUT) - cut_before >= 11
