"""Soaks, run by ``make soak`` only (marker ``soak``): what CI has no time for.

On one cluster with three replicas, in order:

* a clean run: the two writers at a steady load for ``VLEDGER_SOAK_MINUTES`` (10) minutes and
  no fault; no alert may be raised at all, at any moment (checked every few seconds, so that
  the first one fails the run with its text), and afterwards every check of test_faults holds;
* ``VLEDGER_SOAK_ROUNDS`` (6) rounds of test_faults' faults, each round's victims another
  replica, observer and ingest node, every check after each round, and no alert raised.

``VLEDGER_SOAK_RATE`` sets the load, records a second per writer (150).
"""

from __future__ import annotations

import os
import time

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

pytestmark = [pytest.mark.soak, pytest.mark.slow, pytest.mark.timeout(0)]  # a soak runs for many minutes

TOPOLOGY = Topology(replicas=3)
MINUTES = float(os.environ.get("VLEDGER_SOAK_MINUTES", "10"))
ROUNDS = int(os.environ.get("VLEDGER_SOAK_ROUNDS", "6"))
RATE = float(os.environ.get("VLEDGER_SOAK_RATE", "150"))
PROGRESS = 100
HOLD_S = 15.0
CHECK_EVERY_S = 5.0  # how often the clean run looks for an alert
REPORT_EVERY_S = 60.0


def test_a_clean_run_at_load_raises_no_alert_at_all(cluster: SupervisedCluster, written: Written) -> None:
    since_ms, timeline = now_ms(), Timeline()
    table = cluster.programs
    expected = table.pids()
    load = Load(cluster, RATE).start()
    timeline(f"load of {RATE:g} records a second per writer for {MINUTES:g} minutes")
    end = time.monotonic() + MINUTES * 60
    report = time.monotonic() + REPORT_EVERY_S
    while time.monotonic() < end:
        load.progress(int(RATE * CHECK_EVERY_S))  # paces the checks; fails at once if a writer failed
        raised = alerts_since(cluster, since_ms)
        assert not raised, f"alerts raised in a clean run, {load}:\n" + "\n".join(raised)
        if time.monotonic() >= report:
            report += REPORT_EVERY_S
            timeline(f"no alert  ({load})")
    load.stop(written)
    timeline(f"load stopped  ({load}); {load.summary()}")
    check_cluster(cluster, written, timeline)
    assert table.pids() == expected, "a program restarted in a clean run"
    raised = alerts_since(cluster, since_ms)
    assert not raised, "alerts raised in a clean run:\n" + "\n".join(raised)


def test_rounds_of_faults_under_load_lose_nothing_acknowledged(cluster: SupervisedCluster, written: Written) -> None:
    timeline = Timeline()
    table = cluster.programs
    expected = table.pids()
    raised: list[str] = []
    for number in range(ROUNDS):
        since_ms = now_ms()
        timeline(f"round {number + 1} of {ROUNDS}")
        load = Load(cluster, RATE).start()
        load.progress(2 * PROGRESS)
        expected |= fault_round(cluster, load, timeline, number, progress=PROGRESS, hold_s=HOLD_S)
        load.stop(written)
        timeline(f"load stopped  ({load}); {load.summary()}")
        check_cluster(cluster, written, timeline)
        assert table.pids() == expected, "a program restarted that no fault touched"
        raised += [f"round {number + 1}: {line}" for line in alerts_since(cluster, since_ms)]
    assert not raised, "alerts raised during the faults (resolved since):\n" + "\n".join(raised)
