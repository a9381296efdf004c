"""A home's start check (ingest/home_start.py): healing a store put back from an older copy,
from a source that answers from a real ChainStore (the CURVE request is the one thing left
out: tests/integration/replication/test_home_start.py runs it on real processes)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from vledger.config.cluster import ClusterConfig
from vledger.ingest.home_start import heal, signed_above
from vledger.ingest.store_sources import Sources
from vledger.node.errors import RepairRefusedError, StoreContradictsCheckpointError
from vledger.node.store import ChainStore
from vledger.node.witness import CheckpointKeys, HomeSigner, SignedCheckpoint
from vledger.tests.unit.ingest.note_chain import T0, append

LEDGER = "notes"
CLUSTER = "test"
SOURCE = "replica-1"
OTHER = "replica-2"


class StoreSource(Sources):
    """Sources whose nodes answer ``get``, ``proof.inclusion``, ``proof.consistency`` and ``range``
    from a store; ``tamper`` changes the record bytes SOURCE's ``range`` sends at one height, and
    ``pages`` is how many ``range`` pages the heal's time allows (then the deadline has passed)."""

    def __init__(self, store: ChainStore, tamper: int | None = None, pages: int | None = None) -> None:
        super().__init__(ClusterConfig.__new__(ClusterConfig), None, 1.0)  # type: ignore[arg-type]
        self.store = store
        self.tamper = tamper
        self.pages = pages
        self.asked: list[str] = []

    def call(self, name: str, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        assert name in (SOURCE, OTHER)
        self.time_left(name, cmd)
        self.asked.append(name)
        if cmd == "get":
            return {"record": dict(self.store.range_raw(LEDGER, args["height"], args["height"] + 1))[args["height"]]}
        if cmd == "proof.inclusion":
            return {"proof": self.store.inclusion_proof(LEDGER, args["index"], args["size"])}
        if cmd == "proof.consistency":
            return {"proof": self.store.consistency_proof(LEDGER, args["old"], args["new"])}
        assert cmd == "range"
        if self.pages is not None:
            self.pages -= 1
            if self.pages == 0:
                self.deadline = time.monotonic()  # the heal's time runs out as this page arrives
        start = args["start"]
        records = [data for _, data in self.store.range_raw(LEDGER, start, start + args["limit"])]
        if name == SOURCE and self.tamper is not None and start <= self.tamper < start + len(records):
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


def test_a_page_that_is_not_part_of_the_signed_tree_is_not_stored_and_the_next_source_goes_on(tmp_path: Path) -> None:
    cluster, home = _stores(tmp_path, 7, 20)
    with cluster, home:
        target = SignedCheckpoint(LEDGER, 20, cluster.root(LEDGER, 20), b"")
        with pytest.raises(StoreContradictsCheckpointError, match=f"healed to 13 of the 20 records.*{SOURCE}"):
            heal(home, StoreSource(cluster, tamper=15), [SOURCE], target, page=6)
        # The proven page 7..12 went in as it came (the gap is not held); the bad one did not.
        assert home.size(LEDGER) == 13 and home.root(LEDGER, 13) == cluster.root(LEDGER, 13)
        # A source with a bad tail is followed by the next one, from where the store is.
        sources = StoreSource(cluster, tamper=15)
        assert heal(home, sources, [SOURCE, OTHER], target, page=6) == OTHER
        assert list(home.range_raw(LEDGER)) == list(cluster.range_raw(LEDGER))


def test_a_signed_tree_no_node_has_is_told_apart_from_one_nobody_was_asked_for(tmp_path: Path) -> None:
    cluster, home = _stores(tmp_path, 7, 20)
    with cluster, home:
        target = SignedCheckpoint(LEDGER, 20, bytes(32), b"")  # signed, but not the tree anyone holds
        with pytest.raises(RepairRefusedError, match="no node holds the tree"):
            heal(home, StoreSource(cluster), [SOURCE, OTHER], target, page=6)
        assert home.size(LEDGER) == 7
        # Nobody answered the start check: no node was asked, so nothing says none holds that tree.
        with pytest.raises(StoreContradictsCheckpointError, match="no other node answered"):
            heal(home, StoreSource(cluster), [], target, page=6)


def test_the_heal_stops_at_its_deadline_keeping_what_came_in_time(tmp_path: Path) -> None:
    cluster, home = _stores(tmp_path, 7, 20)
    with cluster, home:
        target = SignedCheckpoint(LEDGER, 20, cluster.root(LEDGER, 20), b"")
        sources = StoreSource(cluster, pages=1)
        with pytest.raises(StoreContradictsCheckpointError, match="no time is left"):
            heal(home, sources, [SOURCE, OTHER], target, page=6)
        assert home.size(LEDGER) == 7  # the page that came as time ran out is not proven: not taken
        assert OTHER not in sources.asked  # time out is no proof that no node holds the tree
        sources = StoreSource(cluster, pages=2)
        with pytest.raises(StoreContradictsCheckpointError, match="healed to 13 of the 20"):
            heal(home, sources, [SOURCE], target, page=6)
        assert home.size(LEDGER) == 13


def test_only_notes_the_home_s_key_signed_count_largest_first(tmp_path: Path) -> None:
    home, stranger = HomeSigner(CLUSTER, bytes(range(32))), HomeSigner(CLUSTER, bytes(32))
    keys = CheckpointKeys(CLUSTER, lambda ledger: home.key(ledger).verifier())
    notes = [
        home.sign(LEDGER, 5, bytes(32)).note,
        stranger.sign(LEDGER, 50, bytes(32)).note,  # larger, but not this home's word
        home.sign(LEDGER, 9, bytes([1]) * 32).note,
        home.sign(LEDGER, 9, bytes([1]) * 32).note,  # the same tree again
        home.sign(LEDGER, 2, bytes(32)).note,  # not above what the store holds
        b"junk",
    ]
    found = signed_above(keys, LEDGER, notes, held=3)
    assert [(c.size, c.root) for c in found] == [(9, bytes([1]) * 32), (5, bytes(32))]
    assert signed_above(keys, LEDGER, notes[1:2], held=0) == []
