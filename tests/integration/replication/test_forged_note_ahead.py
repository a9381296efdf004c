"""A note one size ahead of the ledger, signed with the home's stolen key and set in Redis
(outsider o18 F3), on real processes and a real Redis: the followers took it first and then
waited on a tree no source serves ("no checkpoint covers height N yet") until the ledger's
next write, though the home's true note of that size came; on a quiet ledger, for ever. They set
it aside once no source served its records for ``unserved_note_ms`` (current again, serving the
checkpoint their store proves), store the next record under the home's true note of that size,
and keep the forged one as evidence (``equivocation``).
"""

from __future__ import annotations

from typing import Any

from vledger.broker.signing import load_signing_key, signing_key_paths
from vledger.node.witness import HomeSigner
from vledger.tests.integration.cluster import ADMIN, LocalCluster, genesis, wait_until
from vledger.tests.integration.replication.test_witnessed import (
    CLUSTER,
    LEDGER,
    WAIT,
    alerts,
    put,
    repl,
    size,
    wait_cosigned,
)

HOME = "ingest-1"
UNSERVED_MS = 3000  # [replication] unserved_note_ms: how long the forged note is waited for


def test_followers_set_a_forged_note_aside_then_store_the_next_record_under_the_home_s_true_note(
    start_cluster: Any,
) -> None:
    cluster: LocalCluster = start_cluster(nodes=1, replicas=2, replication={"unserved_note_ms": UNSERVED_MS})
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
    put(cluster, 3)
    total = size(cluster)
    wait_cosigned(cluster, cluster.replica_names, total)
    seed = load_signing_key(signing_key_paths(cluster.directory / "keys", HOME)[0], None).seed
    forged = HomeSigner(CLUSTER, seed).sign(LEDGER, total + 1, b"\x42" * 32).note
    marks = {r: len(cluster.log_text(r)) for r in cluster.replica_names}
    waiting = f"{LEDGER} stays at {total - 1}: no checkpoint covers height {total} yet"

    def forging() -> bool:
        # The home sets its own note again at each heartbeat, and a follower reads Redis's once a
        # second: set alone, the forged note was read by one, both or none (the racy first step
        # this test was skipped for). The thief holding the home's Redis password sets it again
        # until every follower took it, each telling so in its log.
        repl(cluster).set_checkpoints({LEDGER: forged})
        return all(waiting in cluster.log_text(r)[marks[r] :] for r in cluster.replica_names)

    wait_until(forging, WAIT, "each replica waiting on the forged note", interval=0.05)
    # No source serves it for unserved_note_ms: set aside, each serves the checkpoint it proves again.
    aside = f"no source served height {total} for"
    for replica in cluster.replica_names:
        wait_until(lambda r=replica: aside in cluster.log_text(r)[marks[r] :], WAIT, f"{replica} setting it aside")
        wait_until(lambda r=replica: cluster.admin(r).hello()["behind"] == {}, WAIT, f"{replica} current again")
        assert int(cluster.admin(replica).call("checkpoint", {"ledger": LEDGER})["size"]) == total
    put(cluster, 1, phase="after the forged note")  # the home's true note of size total + 1 follows
    for replica in cluster.replica_names:
        wait_until(lambda r=replica: size(cluster, r) == total + 1, WAIT, f"{replica} stores the next record")
    wait_until(
        lambda: {a["node"] for a in alerts(cluster) if a["what"] == "equivocation"} >= set(cluster.replica_names),
        WAIT,
        "the forged note reported as equivocation by each replica",
    )
