"""review31 #4: an ingest node that holds no copy of a ledger takes its home from witnessed notes
in Redis (ingest/epochs.py Homes._proven_unheld) WITHOUT the cluster-file rule for epochs >= 3
(PROTOCOL 10.9 "Who may open epoch 3 and later"), which `vledger repl status` and the verifier
apply: a note of epoch 3 at the genesis home (its key stolen: review r30 F1) cosigned by one
witness moves the ledger's home for every such node while the file names no failback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import witness_keys
from vledger.config.cluster import load_cluster
from vledger.ingest.epochs import EpochBook, Homes
from vledger.node.store import ChainStore
from vledger.tests.unit.tools.test_repl_commands import (  # noqa: F401 (fixtures)
    ELECTION,
    config,
    ledger,
    repl,
    run,
    stream,
    with_standby,
)


def test_a_node_without_the_ledger_holds_epoch_3_to_the_cluster_file_as_repl_status_does(
    capsys: pytest.CaptureFixture[str],
    config: Path,  # noqa: F811
    repl: ReplicationLedger,  # noqa: F811
    tmp_path: Path,
) -> None:
    old, new, replica_1, replica_2 = with_standby(config)  # home ingest-1, standby ingest-2: no swap
    stream(repl, ELECTION, "ingest-2", 12)
    assert repl.promote(ELECTION, 2, "ingest-2") is None
    epoch_2 = new.sign(ELECTION, 12, bytes(range(2, 34)), ("vledger-epoch 2 ingest-2",))
    repl.set_checkpoints({ELECTION: epoch_2.note})
    repl.publish_cosignature(ELECTION, "replica-1", 12, replica_1.cosign(epoch_2, 1_790_000_000))
    repl.publish_cosignature(ELECTION, "replica-2", 12, replica_2.cosign(epoch_2, 1_790_000_000))
    # The genesis home's key (stolen) signs epoch 3, and one witness cosigns it.
    assert repl.promote(ELECTION, 3, "ingest-1") is None
    epoch_3 = old.sign(ELECTION, 14, bytes(range(3, 35)), ("vledger-epoch 3 ingest-1",))
    repl.publish_cosignature(ELECTION, "replica-1", 14, replica_1.cosign(epoch_3, 1_790_000_000))
    shown = ledger(json.loads(run(capsys, "repl", "status", "--config", config, "--json")[1]), ELECTION)
    assert (shown["home"], shown["epoch"]) == ("ingest-2", 2)  # repl status: no failback the file allows

    cluster = load_cluster(config)
    keys: Any = list(witness_keys(cluster).values())
    with ChainStore(tmp_path / "holds-nothing") as store:
        homes = Homes(cluster, EpochBook(cluster.name, store), repl, witnesses=lambda: keys)
        homes.refresh()
        assert (homes.epoch_of(ELECTION), homes.home_of(ELECTION).name) == ((2, "ingest-2"), "ingest-2")
