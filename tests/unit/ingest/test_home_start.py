"""A home's start check (ingest/home_start.py): healing a store put back from an older copy,
from a source that answers from a real ChainStore (the CURVE request is the one thing left
out: tests/integration/replication/test_home_start.py runs it on real processes)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from vledger.config.cluster import ClusterConfig
from vledger.ingest.home_start import heal, largest_signed
from vledger.ingest.store_sources import Sources
from vledger.node.errors import StoreContradictsCheckpointError
from vledger.node.store import ChainStore
from vledger.node.witness import CheckpointKeys, HomeSigner, SignedCheckpoint
from vledger.tests.unit.ingest.note_chain import T0, append

LEDGER = "notes"
CLUSTER = "test"
SOURCE = "replica-1"


class StoreSource(Sources):
    """Sources whose one node answers ``get``, ``proof.inclusion`` and ``range`` from a store;
    ``tamper`` changes the record bytes its ``range`` sends at one height."""

    def __init__(self, store: ChainStore, tamper: int | None = None) -> None:
        super().__init__(ClusterConfig.__new__(ClusterConfig), None, 1.0)  # type: ignore[arg-type]
        self.store = store
        self.tamper = tamper

    def call(self, name: str, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        assert name == SOURCE
        if cmd == "get":
            return {"record": dict(self.store.range_raw(LEDGER, args["height"], args["height"] + 1))[args["height"]]}
        if cmd == "proof.inclusion":
            return {"proof": self.store.inclusion_proof(LEDGER, args["index"], args["size"])}
        assert cmd == "range"
        start = args["start"]
        records = [data for _, data in self.store.range_raw(LEDGER, start, start + args["limit"])]
        if self.tamper is not None and start <= self.tamper < start + len(records):
            other = dict(self.store.range_raw(LEDGER, self.tamper - 1, self.tamper))[self.tamper - 1]
            records[self.tamper - start] = other  # a record of the chain, at the wrong height
        return {"records": records}


def _stores(tmp_path: Path, held: int, total: int) -> tuple[ChainStore, ChainStore]:
    """The cluster's copy of LEDGER (``total`` records) and the home's copy put back (its first ``held``)."""
    with ChainStore(tmp_path / "cluster", origin="ingest-1", clock=lambda: T0) as store:
        append(store, LEDGER, held)
    shutil.copytree(tmp_path / "cluster", tmp_path / "home")
    cluster = ChainStore(tmp_path / "cluster", origin="ingest-1", clock=lambda: T0)
    append(cluster, LEDGER, total - held)
    return cluster, ChainStore(tmp_path / "home", origin="ingest-1", clock=lambda: T0)


def test_a_store_behind_a_signed_checkpoint_is_healed_from_a_source_that_proves_it(tmp_path: Path) -> None:
    cluster, home = _stores(tmp_path, 7, 20)
    with cluster, home:
        target = SignedCheckpoint(LEDGER, 20, cluster.root(LEDGER, 20), b"")
        assert heal(home, StoreSource(cluster), [SOURCE], target, page=6) == SOURCE
        assert home.size(LEDGER) == 20 and home.root(LEDGER, 20) == target.root
        assert list(home.range_raw(LEDGER)) == list(cluster.range_raw(LEDGER))


def test_records_that_do_not_make_the_signed_tree_are_not_stored(tmp_path: Path) -> None:
    cluster, home = _stores(tmp_path, 7, 20)
    with cluster, home:
        target = SignedCheckpoint(LEDGER, 20, cluster.root(LEDGER, 20), b"")
        with pytest.raises(StoreContradictsCheckpointError, match="do not make the tree"):
            heal(home, StoreSource(cluster, tamper=12), [SOURCE], target, page=6)
        assert home.size(LEDGER) == 7  # nothing taken


def test_only_notes_the_home_s_key_signed_count_and_the_largest_wins(tmp_path: Path) -> None:
    home, stranger = HomeSigner(CLUSTER, bytes(range(32))), HomeSigner(CLUSTER, bytes(32))
    keys = CheckpointKeys(CLUSTER, lambda ledger: home.key(ledger).verifier())
    notes = [
        home.sign(LEDGER, 5, bytes(32)).note,
        stranger.sign(LEDGER, 50, bytes(32)).note,  # larger, but not this home's word
        home.sign(LEDGER, 9, bytes([1]) * 32).note,
        b"junk",
    ]
    best = largest_signed(keys, LEDGER, notes)
    assert best is not None and (best.size, best.root) == (9, bytes([1]) * 32)
    assert largest_signed(keys, LEDGER, notes[1:2]) is None
