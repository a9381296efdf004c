"""Open alerts outlive Redis (outsider o9, "Redis wiped": every open alert erased). A real home
raises ``bad_cosignature`` (a note under a witness's name its key did not sign), an alert only an
operator resolves; a FLUSHALL, a deletion of its alert keys, a restart of the home with Redis
wiped meanwhile: each time it is back in Redis within a deadline, as it was raised. Once an
operator resolved it, it never comes back (docs/PROTOCOL.md 10.5)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

from vledger.broker.alert_journal import ALERT_JOURNAL
from vledger.broker.redis_server import connect
from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import load_verify_key, new_signing_key, signing_key_paths
from vledger.node.witness import CheckpointKeys, WitnessSigner, home_key, witness_name
from vledger.tests.integration.cluster import ADMIN, LocalCluster, entry, genesis, remote_error, wait_until

StartCluster = Callable[..., LocalCluster]
CLUSTER = "test"  # LocalCluster's [cluster] name
LEDGERS = ("votes", "polls")
RECHECK_MS = 300
WAIT = 30.0  # a cluster's start, a loaded host; the re-assert itself takes RECHECK_MS


def _forge_cosignature(cluster: LocalCluster, replication: ReplicationLedger, ledger: str) -> None:
    """A note under replica-1's name that another key signed, then a put that waits for witnesses:
    the home reads the note and raises ``bad_cosignature`` against replica-1."""
    home = load_verify_key(signing_key_paths(cluster.directory / "keys", "ingest-1")[1]).raw
    keys = CheckpointKeys(CLUSTER, lambda name: home_key(CLUSTER, name, home))
    checkpoint = keys.check(ledger, replication.checkpoints()[ledger])
    wrong = WitnessSigner(witness_name(CLUSTER, "replica-1"), new_signing_key().seed)
    replication.publish_cosignature(ledger, "replica-1", 99_999_999, wrong.cosign(checkpoint, int(time.time())))
    late = entry(ledger, "vote", {"late": 1}, "writer1")
    error = remote_error(
        cluster.client("writer1").call, "put", {"content": late.content_bytes, "nonce": late.nonce, "w": 1}
    )
    assert error.code == "replication_timeout"


def _journal_open(cluster: LocalCluster) -> set[str]:
    with closing(sqlite3.connect(cluster.store_dir("ingest-1") / ALERT_JOURNAL)) as db:
        return {key for (key,) in db.execute("SELECT key FROM open_alerts")}


def _same(alert: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in alert.items() if k != "id"}


def test_open_alerts_come_back_after_redis_loses_them_and_an_operators_resolution_is_final(
    start_cluster: StartCluster,
) -> None:
    cluster = start_cluster(
        nodes=1, replicas=1, replication={"write_timeout_ms": 1000}, broker={"alerts_recheck_ms": RECHECK_MS}
    )
    for ledger in LEDGERS:
        cluster.admin().create_ledger(genesis(ledger, ADMIN, ["vote"]))
        cluster.client("writer1").put_many([entry(ledger, "vote", {"n": 1}, "writer1")])
    redis = connect(cluster.cluster_redis_url)
    replication = ReplicationLedger(redis)
    wait_until(lambda: set(LEDGERS) <= set(replication.checkpoints()), WAIT, "a checkpoint of each ledger in Redis")
    assert cluster.stop_node("replica-1") == 0  # else its true cosignature soon replaces the forged note
    for ledger in LEDGERS:
        _forge_cosignature(cluster, replication, ledger)
    keys = [f"ingest-1|{ledger}|bad_cosignature" for ledger in LEDGERS]

    def open_ones() -> dict[str, dict[str, str]] | None:
        found = replication.open_alerts()
        return found if all(key in found for key in keys) else None

    raised = {key: _same(alert) for key, alert in wait_until(open_ones, WAIT, "both bad_cosignature alerts").items()}
    assert {alert["raised_by"] for alert in raised.values()} == {"ingest-1"}

    # Redis wiped: the home puts them back, as they were raised (at_ms included).
    redis.flushall()
    back = wait_until(open_ones, WAIT, "the alerts back after a FLUSHALL")
    assert {key: _same(back[key]) for key in keys} == raised
    # In the raiser's stream again. The wipe also cost the admin ledger's cache, so the home may
    # raise redis_lost about "redis" meanwhile (PROTOCOL 10.5): only ingest-1's own alerts count here.
    assert {a["what"] for a in replication.alerts() if a["node"] == "ingest-1"} == {"bad_cosignature"}

    # An insider with the node's Redis password deletes its alert keys.
    redis.delete(replication.open_alerts_key_of("ingest-1"), replication.alerts_key_of("ingest-1"))
    back = wait_until(open_ones, WAIT, "the alerts back after their keys were deleted")
    assert {key: _same(back[key]) for key in keys} == raised
    # Or makes its open hash a stream (HDEL and XADD are its own commands there, review16 2): the
    # home replaces the key, and meanwhile readers show that one raiser's key is damaged.
    redis.delete(replication.open_alerts_key_of("ingest-1"))
    redis.xadd(replication.open_alerts_key_of("ingest-1"), {"x": "y"})
    back = wait_until(open_ones, WAIT, "the alerts back after their open hash was made a stream")
    assert {key: _same(back[key]) for key in keys} == raised
    assert "ingest-1||alert_keys_damaged" not in back

    # The home restarts while Redis is wiped again: its data directory still holds them.
    assert cluster.stop_node("ingest-1") == 0
    redis.flushall()
    cluster.start_node("ingest-1")
    back = wait_until(open_ones, WAIT, "the alerts back after the home restarted")
    assert {key: _same(back[key]) for key in keys} == raised

    # An operator resolves one: the home closes it in its journal, and a wipe brings only the other back.
    gone, kept = keys
    assert replication.resolve_as_operator([gone]) == 1
    wait_until(lambda: _journal_open(cluster) == {kept}, WAIT, "the home to take the operator's resolution")
    redis.flushall()
    back = wait_until(lambda: replication.open_alerts().get(kept), WAIT, "the other alert back after a FLUSHALL")
    assert _same(back) == raised[kept]
    assert gone not in replication.open_alerts()
    # The host's log says each raise, what Redis lost and what the operator resolved.
    log = cluster.log_text("ingest-1")
    assert f"alert raised by ingest-1: {gone} " in log and f"alert reasserted by ingest-1: {kept} " in log
    assert f"alert resolved by operator (ingest-1's): {gone}" in log
