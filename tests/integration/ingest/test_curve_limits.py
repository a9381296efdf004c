"""The request port's limits ([settings.broker], PROTOCOL 6) on a real node process.

Silent TCP connections past ``max_connections_per_address`` are cut at once, the others at
the end of the handshake interval, and a client from another address is answered meanwhile;
a client that asks for ranges and never reads them holds at most about twice
``max_queued_replies`` answers on the node (the rest are dropped), and the node's memory stays
small, while one that keeps that many in flight loses none. Outsider
pass 21, F4: silent connections filled a node's 20,000 files in 24 s; six non-reading
connections grew it by 420 MiB.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from vledger.broker.client import NodeAddress
from vledger.broker.curve import reply_queue_mark
from vledger.broker.redis_server import RedisServer
from vledger.tests.integration.cluster import ADMIN, LocalCluster, Wire, entry, genesis, wait_until

CAP = 64  # connections from one address
HANDSHAKE_MS = 2000
QUEUED = 16  # requests a client may keep in flight: the node queues reply_queue_mark(QUEUED) answers
RECORDS = 32  # in the ledger whose ranges are asked
LEDGER = "wide"
RECORD_TEXT = 60_000  # bytes of each record's payload: a page of range is about 1 MiB
MIB = 1024 * 1024
REQUEST_CUT = 'vledger_curve_connections_cut_total{port="request"} '
FEED_CUT = 'vledger_curve_connections_cut_total{port="feed"} '


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    broker = {"max_connections_per_address": CAP, "handshake_interval_ms": HANDSHAKE_MS, "max_queued_replies": QUEUED}
    with LocalCluster(redis_server.url, nodes=1, broker=broker) as running:
        yield running


@pytest.fixture(scope="module")
def wide_ledger(cluster: LocalCluster) -> dict[str, Any]:
    """A ledger whose page of range is about 1 MiB, written with QUEUED puts in flight (a
    pipelining client loses none); its first page."""
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["note"]))
    records = [entry(LEDGER, "note", {"text": f"{i:05d}" + "x" * RECORD_TEXT}, "writer1") for i in range(RECORDS)]
    cluster.client("writer1").put_many(records, window=QUEUED)
    page = cluster.client("observer").call("range", {"ledger": LEDGER, "start": 0})
    assert sum(len(r) for r in page["records"]) > MIB // 2, "a page smaller than this test needs"
    return page  # type: ignore[no-any-return]


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def status_kib(pid: int, field: str) -> int:
    """A line of /proc/PID/status in KiB (VmRSS: resident now, VmHWM: the most it ever was)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def ranges_answered(cluster: LocalCluster, name: str) -> float:
    """The node's count of range requests answered ok (its /metrics)."""
    return cluster.metric(name, 'vledger_requests_total{code="ok",command="range"}')


def closed(sock: socket.socket) -> bool:
    """Whether the node closed this connection: what it sent (its greeting) read, then end of stream."""
    try:
        while data := sock.recv(65536):
            del data
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True
    return True


def from_address(cluster: LocalCluster, source: str, key_name: str) -> Wire:
    """A raw CURVE connection to the node from local address ``source`` (another 127.x address)."""
    node = cluster.node()
    address = NodeAddress(f"tcp://{source}:0;127.0.0.1:{node.port}", node.public_key)
    return Wire(address, cluster.keys[key_name])


def test_silent_connections_past_the_cap_are_cut_and_another_address_is_answered(cluster: LocalCluster) -> None:
    node = cluster.node()
    assert node.process is not None
    pid = node.process.pid
    files_before = open_files(pid)
    cut_before = cluster.metric(node.name, REQUEST_CUT)
    flood = [socket.create_connection(("127.0.0.1", node.port), timeout=5) for _ in range(CAP + 10)]
    try:
        started = time.monotonic()
        for sock in flood:
            sock.setblocking(False)
        # At least the ten past the cap are cut at once (fewer stay if the tests' own clients hold places).
        wait_until(lambda: sum(closed(s) for s in flood) >= 10, 5.0, "the connections past the cap cut")
        # Where an operator watches, not only in a log line every 10 s: the cuts, and what is open.
        cut = cluster.metric(node.name, REQUEST_CUT) - cut_before
        assert 10 <= cut <= sum(closed(s) for s in flood), cut
        with urllib.request.urlopen(cluster.health_url(node.name) + "metrics", timeout=5) as response:
            assert '\nvledger_curve_connections{port="request"} ' in response.read().decode()  # open now (it moves)
        # libzmq closes a cut connection's descriptor on its I/O thread, a moment after the peer sees it.
        wait_until(lambda: open_files(pid) <= files_before + CAP, 5.0, "the node's files back under its cap")
        with contextlib.closing(from_address(cluster, "127.0.0.2", ADMIN)) as honest:
            reply = honest.call("hello", timeout=3.0)
        assert reply["ok"] is True, reply
        # The others are closed by the handshake interval, not libzmq's 30 s.
        wait_until(lambda: all(closed(s) for s in flood), HANDSHAKE_MS / 1000 + 5.0, "the silent connections closed")
        assert time.monotonic() - started >= HANDSHAKE_MS / 1000 - 0.5
    finally:
        for sock in flood:
            sock.close()
    # Their places are given back: a client from the flooded address is answered again.
    assert cluster.client("writer1").hello()["node"] == node.name


def test_the_feeds_cuts_are_counted_apart_from_the_request_ports(cluster: LocalCluster) -> None:
    # The feed is guarded as the request port is, but its cuts once showed nowhere on /metrics.
    node = cluster.node()
    assert node.pub_port
    feed_before, request_before = cluster.metric(node.name, FEED_CUT), cluster.metric(node.name, REQUEST_CUT)
    flood = [socket.create_connection(("127.0.0.1", node.pub_port), timeout=5) for _ in range(CAP + 10)]
    try:
        for sock in flood:
            sock.setblocking(False)
        wait_until(lambda: sum(closed(s) for s in flood) >= 10, 5.0, "the feed's connections past the cap cut")
        assert cluster.metric(node.name, FEED_CUT) - feed_before >= 10
        assert cluster.metric(node.name, REQUEST_CUT) == request_before
        # Before their handshake, the feed's connections are bounded by time too, as the request port's.
        wait_until(lambda: all(closed(s) for s in flood), HANDSHAKE_MS / 1000 + 5.0, "the feed's silent ones closed")
    finally:
        for sock in flood:
            sock.close()


def test_a_client_that_never_reads_its_ranges_holds_little_of_the_node(
    cluster: LocalCluster, wide_ledger: dict[str, Any]
) -> None:
    node = cluster.node()
    assert node.process is not None
    pid = node.process.pid
    page = wide_ledger
    answered = ranges_answered(cluster, node.name)
    rss_before = status_kib(pid, "VmRSS")
    # It takes into its own queue one answer and a small kernel buffer: the rest waits on the node.
    reader = cluster.wire("writer2", options={zmq.RCVHWM: 1, zmq.RCVBUF: 64 * 1024})
    asked = 160  # about 160 MiB of answers, had the node kept them all: twice the bound below
    for _ in range(asked):
        reader.request("range", {"ledger": LEDGER, "start": 0})
    # Every one answered (those past the queue dropped), by the node's count of answered ranges.
    wait_until(lambda: ranges_answered(cluster, node.name) >= answered + asked, 60.0, "the ranges answered")
    observer = cluster.client("observer")
    assert observer.hello()["node"] == node.name
    grown_mib = (status_kib(pid, "VmHWM") - rss_before) / 1024
    bound = reply_queue_mark(QUEUED) + 48
    assert grown_mib < bound, f"the node grew by {grown_mib:.0f} MiB for a client that does not read"
    # Another client is served, a page of range included, while the reader still holds its connection.
    assert len(observer.call("range", {"ledger": LEDGER, "start": 0})["records"]) == len(page["records"])
    reader.close()


def test_a_slow_reader_with_max_queued_replies_in_flight_loses_no_answer(
    cluster: LocalCluster, wide_ledger: dict[str, Any]
) -> None:
    # PROTOCOL 6's promise, to the letter: exactly QUEUED ranges in flight, read only once all
    # are answered, through small buffers (the answers wait on the node). Before them the
    # connection read a few answers the node's queue has not heard of yet: libzmq's reader
    # tells its writer of its reads only every half-mark (compute_lwm: (mark + 1) // 2), so
    # they still count as queued. With ZMQ_SNDHWM at QUEUED the node dropped as many ranges as
    # hellos read before them; below and near the half-mark of both queues are tried.
    node = cluster.node()
    half_marks = ((QUEUED + 1) // 2, (reply_queue_mark(QUEUED) + 1) // 2)
    for unheard in sorted({n for half in half_marks for n in (half // 2, half - 1)}):
        reader = cluster.wire("writer2", options={zmq.RCVHWM: 1, zmq.RCVBUF: 64 * 1024})
        try:
            for _ in range(unheard):  # read at once: small answers, through the same queue
                assert reader.call("hello")["ok"] is True
            target = ranges_answered(cluster, node.name) + QUEUED
            asked = {reader.request("range", {"ledger": LEDGER, "start": 0}) for _ in range(QUEUED)}
            wait_until(lambda t=target: ranges_answered(cluster, node.name) >= t, 60.0, "the ranges answered")
            while asked:
                reply = reader.recv(10.0)
                assert reply is not None, f"after {unheard} read: {len(asked)} of {QUEUED} ranges never answered"
                assert reply.get("ok") is True, reply
                assert len(reply["result"]["records"]) == len(wide_ledger["records"])
                asked.remove(reply["id"])
        finally:
            reader.close()
