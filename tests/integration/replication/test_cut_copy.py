"""A replica whose store's file lost records behind its back (deleted with sqlite3, while it runs
or while it is stopped; its last ones or a hole) fetches them again by itself, on real processes
and a real Redis: outsider 25, H2 (it stayed behind until `vledger repair`). Its own alert names
its copy until it holds the home's records again, then resolves; the verifier's findings about
the copy resolve too, and an honest cluster is left with no open alert."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Any

import pytest

from vledger.node.storefile import DB_NAME
from vledger.tests.integration.cluster import ADMIN, LocalCluster, genesis, wait_until
from vledger.tests.integration.replication.test_witnessed import LEDGER, WAIT, alerts, put, repl, size, wait_cosigned

CUT = "replica-2"
OWN_ALERT = f"{CUT}|{LEDGER}|tree_mismatch"


def delete(cluster: LocalCluster, where: str, *args: int) -> None:
    """Delete records of LEDGER from replica-2's store file, as an outsider with sqlite3 would."""
    with sqlite3.connect(cluster.store_dir(CUT) / DB_NAME, timeout=30) as db:
        db.execute(f"DELETE FROM records WHERE ledger = ? AND {where}", (LEDGER, *args))


def hashes(cluster: LocalCluster, node: str) -> list[bytes]:
    """The SHA-256 of each record ``node`` serves, in height order."""
    return [hashlib.sha256(data).digest() for data in cluster.admin(node).records(LEDGER)]


def wait_healed(cluster: LocalCluster) -> None:
    """Until replica-2 holds every record of the home again, the same ones, and its own alert
    about its copy was raised and is resolved."""
    home = hashes(cluster, "ingest-1")
    wait_until(lambda: hashes(cluster, CUT) == home, WAIT, f"{CUT} holding the home's {len(home)} records again")
    raised = [a for a in alerts(cluster) if f"{a['node']}|{a['ledger']}|{a['what']}" == OWN_ALERT]
    assert raised and raised[0]["source"] == CUT, alerts(cluster)
    wait_until(lambda: OWN_ALERT not in repl(cluster).open_alerts(), WAIT, f"{CUT} resolving {OWN_ALERT}")


def repl_status(cluster: LocalCluster) -> tuple[int, dict[str, Any]]:
    done = cluster.cli("repl", "status", "--config", str(cluster.config_path), "--json", check=False)
    assert done.returncode in (0, 3), done.stdout + done.stderr
    [ledger] = [entry for entry in json.loads(done.stdout)["ledgers"] if entry["ledger"] == LEDGER]
    return done.returncode, {node["node"]: node for node in ledger["nodes"]}


@pytest.mark.parametrize(
    ("where", "args"),
    [("height >= ?", (30,)), ("height >= ? AND height < ?", (10, 13))],
    ids=["tail", "hole"],
)
def test_records_deleted_from_a_running_replica_are_fetched_again_by_itself(
    start_cluster: Any, where: str, args: tuple[int, ...]
) -> None:
    cluster: LocalCluster = start_cluster(
        nodes=1, replicas=2, verifiers=1, replication={"heartbeat_ms": 200, "hole_check_ms": 500}
    )
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
    put(cluster, 50)
    total = size(cluster)
    wait_cosigned(cluster, cluster.replica_names, total)
    wait_until(lambda: repl_status(cluster)[0] == 0, WAIT, "every replica current")

    delete(cluster, where, *args)
    wait_healed(cluster)
    put(cluster, 5, phase="after")  # and it follows on
    wait_cosigned(cluster, cluster.replica_names, size(cluster))
    assert hashes(cluster, CUT) == hashes(cluster, "ingest-1")
    _, nodes = wait_until(lambda: (found := repl_status(cluster))[0] == 0 and found, WAIT, "every replica current")
    assert nodes[CUT]["held"] == size(cluster) - 1
    # Whatever the verifier found in the copy while it was cut resolves once it is whole: nothing stays open.
    wait_until(
        lambda: not [key for key in repl(cluster).open_alerts() if f"|{LEDGER}|" in key],
        WAIT,
        "no open alert about the ledger",
    )


def stream_checked(cluster: LocalCluster, top: int) -> bool:
    """Whether the verifier read the stream's entries up to height ``top`` and acknowledged each:
    it compared them with every copy that answered."""
    redis = repl(cluster)
    groups = redis.client.xinfo_groups(redis.stream_key(LEDGER))  # none until the verifier makes it
    return any(group["last-delivered-id"] == f"{top}-1".encode() and group["pending"] == 0 for group in groups)


def test_a_hole_the_verifier_read_the_stream_across_resolves_once_the_copy_is_whole(start_cluster: Any) -> None:
    """The race test_records_deleted_from_a_running_replica_are_fetched_again_by_itself[hole] lost
    2 times in 4 (fresh-clone CI), made certain: the verifier compares the stream's records at the
    heights of a hole with the copy while it lacks them (the verifier was stopped while they were
    written; the replica looks for holes only at its start here). Compared by place, the records
    above the hole were taken for others, and a record_conflict that only an operator resolves
    stayed open once the copy was whole. The hole is a height_gap of the sweep, which the next
    complete sweep of the healed copy resolves."""
    unhealed = {"heartbeat_ms": 200, "hole_check_ms": 600_000, "cut_check_ms": 600_000}
    cluster: LocalCluster = start_cluster(nodes=1, replicas=2, verifiers=1, replication=unhealed)
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
    assert cluster.stop_node("verifier-1") == 0
    put(cluster, 50)
    total = size(cluster)
    wait_cosigned(cluster, cluster.replica_names, total)
    delete(cluster, "height >= ? AND height < ?", 10, 13)
    cluster.start_node("verifier-1")
    wait_until(lambda: stream_checked(cluster, total - 1), WAIT, "the verifier checking the stream's entries")
    gap = f"{CUT}|{LEDGER}|height_gap"
    wait_until(lambda: gap in repl(cluster).open_alerts(), WAIT, "the sweep naming the hole")
    found = [(a["what"], a["height"]) for a in alerts(cluster) if (a["node"], a["ledger"]) == (CUT, LEDGER)]
    assert found == [("height_gap", "10")]  # no record_conflict: a missing record differs from none

    assert cluster.restart_node(CUT) == 0  # it finds the hole at its start and fetches the records again
    wait_healed(cluster)
    # Its own cosigned_not_held of its start too (the witness cosigned 51 records, it held 10):
    # the quiet ledger's checkpoint is all that tells it the store holds them again.
    wait_until(
        lambda: not [key for key in repl(cluster).open_alerts() if f"|{LEDGER}|" in key],
        WAIT,
        "no open alert about the ledger",
    )


@pytest.mark.parametrize(
    ("where", "args"),
    [("height >= ?", (20,)), ("height = ?", (7,))],
    ids=["tail", "hole"],
)
def test_records_deleted_from_a_stopped_replica_are_fetched_again_once_it_starts(
    start_cluster: Any, where: str, args: tuple[int, ...]
) -> None:
    cluster: LocalCluster = start_cluster(nodes=1, replicas=2, replication={"heartbeat_ms": 200})
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
    put(cluster, 40)
    wait_cosigned(cluster, cluster.replica_names, size(cluster))
    assert cluster.stop_node(CUT) == 0
    delete(cluster, where, *args)
    put(cluster, 5, phase="while-down")
    cluster.start_node(CUT)  # it used to exit 65 and stay down: its tree rows reached past its records
    wait_healed(cluster)
    wait_until(lambda: repl_status(cluster)[0] == 0, WAIT, "every replica current")
