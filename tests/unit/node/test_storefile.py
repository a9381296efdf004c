"""StoreReader: read-only access to a store's raw records, for tools that trust nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from vledger.node.errors import StoreError
from vledger.node.store import ChainStore
from vledger.node.storefile import DB_NAME, StoreReader


@pytest.fixture
def store_dir(tmp_path: Path, kit: Any) -> Path:
    directory = tmp_path / "store"
    with ChainStore(directory, origin="node-1") as store:
        for ledger, count in (("ledger-a", 7), ("ledger-b", 2)):
            store.create_ledger(kit.genesis_entry(0, ledger=ledger))
            for i in range(1, count):
                store.append(kit.entry(i, ledger=ledger))
    return directory


def test_reader_sees_every_record(store_dir: Path) -> None:
    reader = StoreReader(store_dir, page_size=2)
    try:
        assert reader.ledgers() == ["ledger-a", "ledger-b"]
        assert (reader.count(), reader.count("ledger-a"), reader.count("nope")) == (9, 7, 0)
        with ChainStore(store_dir) as store:
            expected = list(store.range_raw("ledger-a"))
        assert list(reader.iter_raw("ledger-a")) == expected
        assert [h for h, _ in reader.iter_raw("ledger-a", 1, 6)] == [1, 2, 3, 4, 5]
    finally:
        reader.close()


def test_reader_gives_every_column_page_by_page(store_dir: Path) -> None:
    reader = StoreReader(store_dir, page_size=2)
    try:
        rows = list(reader.iter_rows("ledger-a"))
        with ChainStore(store_dir) as store:
            records = list(store.range("ledger-a"))
        assert [(r.height, r.hash, r.author, r.request_id) for r in rows] == [
            (x.height, x.link, x.content.author, x.content.request_id) for x in records
        ]
        assert [r.data for r in rows] == [data for _, data in reader.iter_raw("ledger-a")]
        assert [r.height for r in reader.iter_rows("ledger-a", 1, 6)] == [1, 2, 3, 4, 5]
        assert [r.height for r in reader.iter_rows("ledger-b")] == [0, 1]
    finally:
        reader.close()


def test_reader_refuses_a_directory_without_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no vledger store"):
        StoreReader(tmp_path)


def test_reader_refuses_a_file_that_is_not_a_store(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.execute("CREATE TABLE other (x)")
    conn.close()
    with pytest.raises(StoreError, match="not a vledger store"):
        StoreReader(tmp_path)


def test_reader_refuses_another_schema_version(store_dir: Path) -> None:
    with sqlite3.connect(store_dir / DB_NAME) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    conn.close()
    with pytest.raises(StoreError, match="'99'"):
        StoreReader(store_dir)
