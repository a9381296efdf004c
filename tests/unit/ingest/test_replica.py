"""The replica process's pieces that run without its sockets: what its relay outbox runs with."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from vledger.broker.replication import ReplicationLedger
from vledger.config.cluster import ReplicationSettings
from vledger.ingest.outbox import Outbox
from vledger.ingest.replica import relay_settings
from vledger.node.store import ChainStore
from vledger.tests.unit.ingest.note_chain import T0
from vledger.tests.unit.ingest.note_chain import append as append_notes

NAME = "replica-1"
LEDGER = "ledger-a"
# The cluster's outbox interval, long beside what a held report may take: a relay that waited
# for it between two stored runs would report the second only after it.
CLUSTER = ReplicationSettings(heartbeat_ms=60_000, outbox_interval_ms=5_000)
DEADLINE = CLUSTER.outbox_interval_ms / 2000  # seconds: half the interval


def test_relay_settings_drop_only_the_outbox_interval() -> None:
    settings = relay_settings(CLUSTER)
    assert settings.outbox_interval_ms == 0
    assert settings == ReplicationSettings(heartbeat_ms=60_000, outbox_interval_ms=0)


def _store_run(store: ChainStore, count: int) -> list[Any]:
    """``count`` more records on LEDGER (its genesis first), durable on return, in order."""
    start = store.size(LEDGER)
    append_notes(store, LEDGER, count)
    return list(store.range(LEDGER, start))


def _held(replication: ReplicationLedger, height: int) -> float:
    """Seconds until Redis says this node holds ``height`` of LEDGER (at most DEADLINE)."""
    started = time.monotonic()
    while replication.held(LEDGER).get(NAME, -1) < height:
        if time.monotonic() - started > DEADLINE:
            break
        time.sleep(0.005)
    return time.monotonic() - started


def test_a_relay_reports_each_stored_run_without_waiting_for_the_outbox_interval(
    redis_client: Any, tmp_path: Path
) -> None:
    """The held height of each run a follower stores goes to Redis as soon as the relay has it
    (the replication lag is counted by it), not one outbox interval after the run before."""
    replication = ReplicationLedger(redis_client)
    with ChainStore(tmp_path / NAME, origin="home", clock=lambda: T0) as store:
        relay = Outbox(NAME, store, None, replication, relay_settings(CLUSTER), stream=False).start()
        try:
            first = _store_run(store, 3)
            relay.committed(first, 2)
            assert _held(replication, first[-1].height) < DEADLINE
            second = _store_run(store, 2)
            relay.committed(second, 2)
            waited = _held(replication, second[-1].height)
        finally:
            relay.stop()
    assert replication.held(LEDGER)[NAME] == second[-1].height
    assert waited < DEADLINE, f"the second run was reported after {waited:.2f} s"
