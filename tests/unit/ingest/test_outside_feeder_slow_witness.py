"""review32 #1 (F5 incomplete): the feeder keeps the cluster witnesses' lines of only the
CLUSTER_SIZES_KEPT (32) largest checkpoints they cosigned, heard by EVERY outside witness's
thread. While a slow outside witness answers (one thread blocked in its post), the other
threads' turns hear the cluster cosign on; once 32 larger sizes were heard, the entry of the
size the slow witness was fed is evicted, and its answer is kept with no cluster line
(_with_cluster_lines finds nothing): the very o24 F5 failure (no_quorum for an anchored reader,
an epoch-rule failure from epoch 2) for a witness slower than ~32 cluster cosignings."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from vledger.broker.replication import ReplicationLedger
from vledger.node.note import verify_checkpoint
from vledger.node.outside import WitnessReply, outside_kind
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


def test_a_slow_witness_s_row_keeps_the_cluster_lines_while_another_thread_hears_33_sizes(
    tmp_path: Path, redis_client: Any
) -> None:
    replication = ReplicationLedger(redis_client)
    cluster = CLUSTER_WITNESSES
    keys = tuple(w.verifier() for w in cluster)
    slow = TlogWitness("witness.example/w1", secrets.token_bytes(32), {ORIGIN: LOG_KEY.encode()})
    fast = TlogWitness("witness.example/w2", secrets.token_bytes(32), {ORIGIN: LOG_KEY.encode()})
    home = Home(tmp_path / "home", slow, replication, others=(fast,), quorum=1, cluster_witnesses=keys)

    def cosigned_by_the_cluster(checkpoint: SignedCheckpoint) -> None:
        for i, w in enumerate(cluster):
            publish_cluster_cosignature(replication, checkpoint, w, 1_790_000_000 + i)

    def slowly(body: bytes) -> WitnessReply:
        # The slow witness's thread waits on its answer; the fast one's thread turns meanwhile
        # (every POLL_SECONDS) while the ledger is written and the cluster cosigns each size.
        for _ in range(33):
            cosigned_by_the_cluster(home.grow(home.store.size(LEDGER) + 1))
            home.feeder.turn((fast.name,))
        return home.spec_witness(body)

    home.answer = slowly
    try:
        cosigned_by_the_cluster(home.grow(3))
        home.feeder.turn((slow.name,))
        kept = home.store.checkpoints.latest(LEDGER, outside_kind(slow.name))
        assert kept is not None and kept.size == 3
        # The row the quorum note is joined from: a reader with the anchors asks a cluster majority.
        verify_checkpoint(kept.note, LOG_KEY, keys, 2)
    finally:
        home.store.close()
