"""The verifier compares the observers' signed tallies: a forged one is an alert without anyone running `vledger tally`.

Outsider 21, F6: a tally signed with observer-1's stolen key and added to its own stream was
noticed by nothing automatic, and `vledger tally`, once run, blamed the honest observer (the
first by name was the reference). Real processes: an ingest node, three observers and a verifier.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest

from vledger.broker.redis_server import RedisServer, connect
from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import load_signing_key, signing_key_paths
from vledger.broker.tallies import Published, TallyBoard
from vledger.node.tally_body import Snapshot
from vledger.tests.integration.cluster import ADMIN, FORGING_OBSERVERS, LocalCluster, entry, genesis, wait_until

LEDGER = "council"
OBSERVERS = ("observer-1", "observer-2", "observer-3")
KEY = f"vledger-tally|{LEDGER}|tally_mismatch"
RECOUNT_KEY = f"observer-1|{LEDGER}|tally_recount"
ALERT_SECONDS = 20.0  # the verifier compares every 5 s; the tallies may first need a common height


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    with LocalCluster(redis_server.url, nodes=1, observers=3, verifiers=1, observing=FORGING_OBSERVERS) as running:
        running.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
        running.client("writer1").put_many([entry(LEDGER, "vote", {"n": i}, "writer1") for i in range(5)])
        yield running


def _agreed(board: TallyBoard) -> dict[str, Published]:
    """Every observer's latest tally once all three are at the ledger's head (height 5)."""

    def there() -> dict[str, Published] | None:
        latest = board.latest(LEDGER, OBSERVERS)
        found = {name: p for name, p in latest.items() if p is not None and p.height == 5}
        return found if len(found) == len(OBSERVERS) else None

    return wait_until(there, 30, "the three observers' tallies at the head")  # type: ignore[no-any-return]


def _forge(cluster: LocalCluster, board: TallyBoard, observer: str, honest: Published, cast: int) -> None:
    """What a thief of ``observer``'s key and Redis password does: a count of its own, at the same height."""
    snapshot = Snapshot.decode(honest.body)
    forged = dataclasses.replace(snapshot, tally={**snapshot.tally, "records": cast}, counted=bytes([cast]) * 32)
    key = load_signing_key(signing_key_paths(cluster.directory / "keys", observer)[0])
    board.publish(LEDGER, observer, forged.height, forged.body(), key.sign(forged.body()))


def test_a_forged_tally_is_the_verifier_s_alert_naming_the_minority_only(cluster: LocalCluster) -> None:
    board = TallyBoard(connect(cluster.cluster_redis_url))
    replication = ReplicationLedger(connect(cluster.cluster_redis_url))
    honest = _agreed(board)
    assert KEY not in replication.open_alerts()
    _forge(cluster, board, "observer-1", honest["observer-1"], 104)
    try:
        alert = wait_until(lambda: replication.open_alerts().get(KEY), ALERT_SECONDS, "the verifier's tally_mismatch")
        assert alert["raised_by"] == "verifier-1" and alert["height"] == "5"
        assert alert["source"] == "observer-1, observer-2, observer-3"
        honest_count = Snapshot.decode(honest["observer-2"].body).counted.hex()
        assert (alert["expected"], alert["found"]) == (honest_count, "68" * 32)  # the honest majority's count
        assert alert["detail"] == "at height 5, observer-1 signed another tally than observer-2, observer-3"
        # vledger tally says the same, naming the minority alone.
        done = cluster.cli("tally", LEDGER, "--config", str(cluster.config_path), "--json", check=False)
        assert done.returncode == 1
        assert json.loads(done.stdout)["verdict"]["differing"] == ["observer-1"]
        # o21 F4: the verifier's own count of the copies contradicts observer-1's, whoever else signs.
        recount = wait_until(lambda: replication.open_alerts().get(RECOUNT_KEY), ALERT_SECONDS, "tally_recount")
        assert (recount["raised_by"], recount["height"], recount["source"]) == ("verifier-1", "5", "vledger-verifier")
        assert (recount["expected"], recount["found"]) == (honest_count, "68" * 32)
        done = cluster.cli("tally", LEDGER, "--config", str(cluster.config_path), "--json", check=False)
        assert json.loads(done.stdout)["verdict"]["recount"] == ["observer-1"]
    finally:
        for name, published in honest.items():
            board.client.set(board.latest_key(LEDGER, name), published.entry_id)
    # Only an operator resolves it; with the observers agreeing again it stays resolved.
    cluster.cli("alerts", "resolve", KEY, RECOUNT_KEY, "--config", str(cluster.config_path))
    assert KEY not in replication.open_alerts()
    assert RECOUNT_KEY not in replication.open_alerts()
    done = cluster.cli("tally", LEDGER, "--config", str(cluster.config_path), "--json", check=False)
    assert json.loads(done.stdout)["verdict"]["status"] == "agree", done.stdout


def test_with_two_against_each_other_no_observer_is_the_reference(cluster: LocalCluster) -> None:
    board = TallyBoard(connect(cluster.cluster_redis_url))
    replication = ReplicationLedger(connect(cluster.cluster_redis_url))
    honest = _agreed(board)
    _forge(cluster, board, "observer-1", honest["observer-1"], 104)
    _forge(cluster, board, "observer-3", honest["observer-3"], 105)
    try:
        alert = wait_until(lambda: replication.open_alerts().get(KEY), ALERT_SECONDS, "the verifier's tally_mismatch")
        assert alert["raised_by"] == "verifier-1" and alert["expected"] == ""
        assert alert["found"] == ", ".join(
            ["68" * 32, Snapshot.decode(honest["observer-2"].body).counted.hex(), "69" * 32]
        )
    finally:
        for name, published in honest.items():
            board.client.set(board.latest_key(LEDGER, name), published.entry_id)
    cluster.cli("alerts", "resolve", KEY, "--config", str(cluster.config_path))
