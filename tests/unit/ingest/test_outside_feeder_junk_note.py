"""review32 #2: one witness's junk note in Redis stops the outside feeder (every turn).

``WitnessFeeder._hear_cluster`` (fix32 F5) reads every cluster witness's newest note of a ledger
from Redis (``{L}:cosig:<w>``, which each witness's Redis user writes: "junk counts nowhere",
broker/redis_acl.py) and, BEFORE verifying any line, looks its size up in the store's checkpoints
table. A note stating a size from 2**63 (parse_checkpoint takes sizes to 2**64 - 1) makes SQLite's
binding raise OverflowError, which no one catches: turn() fails at that ledger on every turn of
every witness thread, so that ledger and every ledger sorted after it are fed to no outside
witness again and their quorum notes are not published (and the log gets a traceback every
0.2 s a thread)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from vledger.broker.replication import ReplicationLedger
from vledger.node.witness import HomeSigner
from vledger.tests.tlog_witness import TlogWitness
from vledger.tests.unit.ingest.test_outside_feeder import CLUSTER, CLUSTER_WITNESSES, LEDGER, LOG_KEY, ORIGIN, Home


def test_a_witness_s_note_of_a_size_past_2_63_leaves_the_feeder_feeding(tmp_path: Path, redis_client: Any) -> None:
    replication = ReplicationLedger(redis_client)
    cluster = CLUSTER_WITNESSES
    outside = TlogWitness("witness.example/w1", secrets.token_bytes(32), {ORIGIN: LOG_KEY.encode()})
    home = Home(tmp_path / "home", outside, replication, cluster_witnesses=tuple(w.verifier() for w in cluster))
    try:
        home.grow(3)
        # replica-0's Redis user (or a bug of it) publishes a note of a huge size: a junk note,
        # signed by anyone (nothing is verified before the store lookup).
        junk = HomeSigner(CLUSTER, secrets.token_bytes(32)).sign(LEDGER, 2**63, bytes(32)).note
        replication.publish_cosignature(LEDGER, "replica-0", 2**63, junk)
        home.clock.now += 10  # past witness_timeout_ms: the newest signed is due whatever the cluster did
        home.feeder.turn()  # on main: OverflowError (Python int too large to convert to SQLite INTEGER)
        home.clock.now += 10
        home.feeder.turn()
        assert outside.latest.get(ORIGIN, (0, b""))[0] == 3
    finally:
        home.store.close()
