"""A follower's store whose file lost records behind its back (sqlite DELETEs, while it is open or
closed) is cut back to what it holds whole, checked, and takes the lost records again
(node/store_cut.py, ChainStore.roll_back and ``cut_back``): outsider 25, H2."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from vledger.node.errors import StoreError, TreeMismatchError
from vledger.node.record import Record
from vledger.node.store import ChainStore
from vledger.node.store_cut import Cut
from vledger.node.tree import Frontier, leaf_hash

LEDGER = "ledger-a"
RECORDS = 70  # four stored subtrees of 16 and more, a level-6 node, records past the edge
# A small hash index, filled and merged often: the cut must leave its runs as hash_runs lists them.
INDEX = {"hash_fill_at": 4, "hash_merge_step": 2}


def open_store(directory: Path, **options: Any) -> ChainStore:
    return ChainStore(directory, origin="replica-1", **INDEX, **options)


def delete(store_dir: Path, where: str, *args: int) -> None:
    """Delete records of LEDGER behind the store's back, as an outsider with sqlite3 would."""
    with sqlite3.connect(store_dir / "chain.sqlite3", timeout=30) as db:
        db.execute(f"DELETE FROM records WHERE ledger = ? AND {where}", (LEDGER, *args))


def root_of(chain: list[Record]) -> bytes:
    frontier = Frontier()
    for record in chain:
        frontier.append(leaf_hash(record.encode()))
    return frontier.root()


@pytest.fixture
def chain(kit: Any) -> list[Record]:
    records: list[Record] = kit.chain(RECORDS, ledger=LEDGER)
    return records


def test_a_tail_cut_while_open_is_rolled_back_and_stored_again(tmp_path: Path, chain: list[Record]) -> None:
    with open_store(tmp_path) as store:
        store.append_records(chain)
        assert store.roll_back(LEDGER) is None and not store.lost_records(LEDGER, holes=True)
        delete(tmp_path, "height >= ?", 37)
        assert store.lost_records(LEDGER) and store.size(LEDGER) == RECORDS  # what it placed: still in memory
        assert store.roll_back(LEDGER) == Cut(LEDGER, 37, RECORDS, 0)
        assert store.size(LEDGER) == 37 and store.root(LEDGER) == root_of(chain[:37])
        assert not store.lost_records(LEDGER, holes=True)
        store.append_records(chain[37:])  # fetched again from the home
        assert store.root(LEDGER) == root_of(chain)
        assert store.get_by_hash(chain[50].hash) == chain[50]
    with open_store(tmp_path) as again:  # every check of an open passes: tree rows, edge, hash index
        assert again.cuts == [] and again.root(LEDGER) == root_of(chain)
        assert [r.hash for r in again.range(LEDGER)] == [r.hash for r in chain]


def test_a_hole_is_found_by_a_count_and_cut_back_to_below_it(tmp_path: Path, chain: list[Record]) -> None:
    with open_store(tmp_path) as store:
        store.append_records(chain)
        delete(tmp_path, "height IN (20, 21)")
        assert not store.lost_records(LEDGER)  # the head is there: only a count sees the hole
        assert store.lost_records(LEDGER, holes=True)
        assert store.roll_back(LEDGER) == Cut(LEDGER, 20, RECORDS, RECORDS - 22)
        assert store.size(LEDGER) == 20 and store.root(LEDGER) == root_of(chain[:20])
        store.append_records(chain[20:])
    with open_store(tmp_path) as again:
        assert again.root(LEDGER) == root_of(chain)


def test_a_store_cut_while_closed_opens_only_as_a_followers(tmp_path: Path, chain: list[Record]) -> None:
    with open_store(tmp_path) as store:
        store.append_records(chain)
    delete(tmp_path, "height >= ?", 40)
    with pytest.raises(TreeMismatchError):  # a home's store: its records are the ledger, never cut back
        open_store(tmp_path)
    with open_store(tmp_path, cut_back=True) as store:
        assert store.cuts == [Cut(LEDGER, 40, RECORDS, 0)]
        assert store.size(LEDGER) == 40 and store.root(LEDGER) == root_of(chain[:40])
        store.append_records(chain[40:])
    delete(tmp_path, "height = 5")
    with pytest.raises(StoreError):
        open_store(tmp_path)
    with open_store(tmp_path, cut_back=True) as store:
        assert store.cuts == [Cut(LEDGER, 5, RECORDS, RECORDS - 6)] and store.size(LEDGER) == 5
        store.append_records(chain[5:])
    with open_store(tmp_path) as again:
        assert again.cuts == [] and again.root(LEDGER) == root_of(chain)


def test_a_ledger_that_lost_its_genesis_is_gone_and_starts_again(tmp_path: Path, chain: list[Record]) -> None:
    with open_store(tmp_path) as store:
        store.append_records(chain)
        delete(tmp_path, "height = 0")
        assert store.roll_back(LEDGER) == Cut(LEDGER, 0, RECORDS, RECORDS - 1)
        assert store.ledgers() == [] and store.size(LEDGER) == 0
        store.append_records(chain)
    with open_store(tmp_path) as again:
        assert again.root(LEDGER) == root_of(chain)


def test_a_record_changed_below_the_cut_still_fails_the_checks(tmp_path: Path, chain: list[Record]) -> None:
    with open_store(tmp_path) as store:
        store.append_records(chain)
        forged = chain[3].encode().replace(b"message 0003", b"massage 0003")
        assert forged != chain[3].encode()
        with sqlite3.connect(tmp_path / "chain.sqlite3", timeout=30) as db:
            db.execute("UPDATE records SET data = ? WHERE ledger = ? AND height = 3", (forged, LEDGER))
        delete(tmp_path, "height >= ?", 60)
        with pytest.raises(TreeMismatchError):
            store.roll_back(LEDGER)
    with pytest.raises(TreeMismatchError):
        open_store(tmp_path, cut_back=True)
