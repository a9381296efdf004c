"""review32 #5: the F5 feeder finds a cluster majority only where its polls SAW the witnesses'
newest notes at one size; under steady writes, healthy witnesses a checkpoint apart are never
seen at one size, so it waits witness_timeout_ms and then feeds the newest signed with no cluster
line: the o24 F5 failure (anchored readers: no_quorum; from epoch 2 the epoch rule) comes back
under load, while every cluster witness cosigned every checkpoint.

Each turn here the home signs three checkpoints and each of the three cluster witnesses cosigns
EVERY one of them, in order (as witnesses that keep up do); they are one checkpoint apart in
latency, so at each poll replica-0's newest note is one size, replica-1's the next, replica-2's
the next. Nothing is down or slow."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from vledger.broker.replication import ReplicationLedger
from vledger.node.note import (
    SignerKey,
    parse_verifier_key,
    verify_checkpoint,
)
from vledger.node.outside import QUORUM_NOTE, OutsideWitnesses, check_witnessed
from vledger.node.witness import SignedCheckpoint
from vledger.tests.tlog_witness import TlogWitness
from vledger.tests.unit.ingest.test_outside_feeder import (
    CLUSTER_WITNESSES,
    LEDGER,
    LOG_KEY,
    ORIGIN,
    Home,
    publish_cluster_cosignature,
)


def test_witnesses_that_cosign_every_checkpoint_a_checkpoint_apart_leave_the_quorum_note_anchored(
    tmp_path: Path, redis_client: Any
) -> None:
    replication = ReplicationLedger(redis_client)
    cluster = CLUSTER_WITNESSES
    keys = tuple(w.verifier() for w in cluster)
    witness = TlogWitness("witness.example/w1", secrets.token_bytes(32), {ORIGIN: LOG_KEY.encode()})
    home = Home(tmp_path / "home", witness, replication, cluster_witnesses=keys)
    outside = OutsideWitnesses((parse_verifier_key(witness.vkey),), 1)

    def cosigned(checkpoint: SignedCheckpoint, by: SignerKey) -> None:
        publish_cluster_cosignature(replication, checkpoint, by)

    try:
        signed: list[SignedCheckpoint] = []
        for _ in range(8):  # 8 s: past witness_timeout_ms (5 s)
            n = home.store.size(LEDGER)
            signed += [home.grow(n + k) for k in (1, 2, 3)]
            for lag, w in ((2, cluster[0]), (1, cluster[1]), (0, cluster[2])):
                for checkpoint in signed[: len(signed) - lag]:  # every one, in order, up to its lag
                    cosigned(checkpoint, w)
            home.clock.now += 1
            home.feeder.turn()
        quorum = replication.outside_cosignatures(LEDGER)[QUORUM_NOTE]
        check_witnessed(quorum, LOG_KEY, outside)
        # What a reader with the anchors asks: a majority of the cluster's witnesses.
        verify_checkpoint(quorum, LOG_KEY, keys, 2)
    finally:
        home.store.close()
