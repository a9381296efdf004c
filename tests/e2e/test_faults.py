"""The whole cluster under supervisord, under load, through one fault of each kind in turn.

Two writers run all along: voters register and cast on ``election`` (home ingest-1), notes go
to ``notes`` (home ingest-2), each put sent again with its request ids until it is answered.
Meanwhile, one at a time (helpers.fault_round): ingest-1 is killed with SIGKILL while a batch
sent to it waits for its answer, then a replica, an observer, the verifier and Redis;
supervisord brings each back. Then ingest-2 is held down for a while. Afterwards, with the load
stopped (helpers.check_cluster): every acknowledged record is on its home node and on every
replica and observer, byte for byte, at its height with its hash, and no put is there twice;
every copy's head is the home's; the Redis stream and the held heights count every record on
every node; the observers agree on each ledger's tally, which is exactly what the writers
acknowledged; no alert is left open, and none was raised; no program restarted but those the
test killed.
"""

from __future__ import annotations

import pytest

from vledger.tests.e2e.helpers import (
    Load,
    SupervisedCluster,
    Timeline,
    Topology,
    Written,
    alerts_since,
    check_cluster,
    fault_round,
)
from vledger.tests.integration.cluster import now_ms

pytestmark = pytest.mark.slow

TOPOLOGY = Topology(replicas=2)
RATE = 150  # records a second per writer: a steady load that leaves the two cores room for the faults
PROGRESS = 100  # records each writer must get acknowledged after a fault before the next one
HOLD_S = 12.0  # how long an ingest node stays down


def test_one_fault_of_each_kind_under_load_loses_nothing_acknowledged(
    cluster: SupervisedCluster, written: Written
) -> None:
    since_ms, timeline = now_ms(), Timeline()
    table = cluster.programs
    expected = table.pids()
    load = Load(cluster, RATE).start()
    load.progress(2 * PROGRESS)
    expected |= fault_round(cluster, load, timeline, 0, progress=PROGRESS, hold_s=HOLD_S)
    load.stop(written)
    timeline(f"load stopped  ({load}); {load.summary()}")
    check_cluster(cluster, written, timeline)
    assert table.pids() == expected, "a program restarted that no fault touched"
    assert cluster.supervise("status").returncode == 0
    raised = alerts_since(cluster, since_ms)
    assert not raised, "alerts raised during the faults (resolved since):\n" + "\n".join(raised)
