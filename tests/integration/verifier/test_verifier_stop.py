"""A verifier stops at once on SIGTERM while nodes it reads do not answer.

Its checks read every copy of every ledger, one after another, each read waiting up to
``node_timeout_ms`` for a node that does not answer. A stop waited for the slice of checks in
hand: with the nodes cut off (or stopping with it), read after read timed out, and supervisor's
20 s stop time ran out before the verifier exited (SIGKILL; seen in the tests across hosts).
Here both replicas are frozen (SIGSTOP: their sockets stay open and answer nothing, as a host
cut off does), with a node timeout far longer than the stop may take.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator

import pytest

from vledger.broker.redis_server import RedisServer
from vledger.tests.integration.cluster import LocalCluster, wait_until

NODE_TIMEOUT_MS = 8_000  # each read of a frozen replica: longer than the stop may take
STOP_SECONDS = 5.0  # from SIGTERM to the exit, well within supervisor's 20 s
VERIFIER = "verifier-1"
# The verifier's log line once a read of a frozen replica has timed out: its checks then go
# on to the other one, whose read is in flight when the signal comes.
TIMED_OUT = re.compile(r"node replica-\d unavailable")


@pytest.fixture
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    settings = {"node_timeout_ms": NODE_TIMEOUT_MS}
    with LocalCluster(redis_server.url, nodes=1, replicas=2, verifiers=1, verifier=settings) as running:
        yield running


def test_a_verifier_stops_at_once_while_the_nodes_it_reads_do_not_answer(cluster: LocalCluster) -> None:
    verifier = cluster.admin(VERIFIER)
    wait_until(lambda: len(verifier.call("status")["copies"]) >= 3, 30, "the verifier checks every copy")
    before = len(TIMED_OUT.findall(cluster.log_text(VERIFIER)))
    for replica in cluster.replica_names:
        cluster.signal_node(replica, signal.SIGSTOP)
    try:
        wait_until(
            lambda: len(TIMED_OUT.findall(cluster.log_text(VERIFIER))) > before,
            NODE_TIMEOUT_MS / 1000 + 30,
            "a read of a frozen replica timed out (the next is in flight)",
            interval=0.05,
        )
        signalled = time.monotonic()
        status = cluster.stop_node(VERIFIER, timeout=2 * NODE_TIMEOUT_MS / 1000)
        took = time.monotonic() - signalled
    finally:
        for replica in cluster.replica_names:
            cluster.signal_node(replica, signal.SIGCONT)
    assert status == 0, cluster.log_tail(VERIFIER)
    assert took < STOP_SECONDS, f"the verifier exited {took:.1f} s after SIGTERM" + cluster.log_tail(VERIFIER)
    assert "verifier verifier-1 stopped" in cluster.log_text(VERIFIER)
