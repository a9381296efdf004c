"""StoreReader: read-only access to a store's raw records, for tools that trust nothing."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from vledger.config.settings import Limits
from vledger.node.errors import StoreError
from vledger.node.record import decode_record
from vledger.node.store import HASH_FILL_AT, ChainStore
from vledger.node.storefile import _BY_FILLED_HASH, BY_HASH, DB_NAME, StoreReader


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


def _indexes(directory: Path) -> set[str]:
    with sqlite3.connect(directory / DB_NAME) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}


def _plan(directory: Path, select: str) -> str:
    with sqlite3.connect(directory / DB_NAME) as conn:
        return " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {select}", (b"\0" * 32,)))


def _marks(directory: Path) -> dict[str, int]:
    with sqlite3.connect(directory / DB_NAME) as conn:
        return dict(conn.execute("SELECT ledger, size FROM hashes_filled"))


def test_hash_lookups_seek_record_hashes_and_tell_records_of_one_prefix_apart(store_dir: Path) -> None:
    assert "USING PRIMARY KEY (prefix=?)" in _plan(store_dir, _BY_FILLED_HASH)
    assert not {"records_by_hash", "records_by_hash_prefix"} & _indexes(store_dir)
    with ChainStore(store_dir) as store:
        records = list(store.range("ledger-a"))
    # Two rows whose hash columns share the first 8 bytes: each found by its own hash only.
    first, second = records[1], records[2]
    twin = first.link[:8] + second.link[8:]
    with sqlite3.connect(store_dir / DB_NAME) as conn:
        conn.execute("UPDATE records SET hash = ? WHERE ledger = 'ledger-a' AND height = 2", (twin,))
    for fill_at in (HASH_FILL_AT, 1):  # nothing filled yet (9 records), then all filled at the opening
        with ChainStore(store_dir, hash_fill_at=fill_at):
            pass
        reader = StoreReader(store_dir)
        try:
            assert reader.find_hash(first.link) == ("ledger-a", 1, first.encode())
            assert reader.find_hash(twin) == ("ledger-a", 2, second.encode())
            assert reader.find_hash(first.link[:8] + b"\xff" * 24) is None
        finally:
            reader.close()
    assert _marks(store_dir) == {"ledger-a": 7, "ledger-b": 2}


def test_lookups_by_hash_find_every_record_below_and_above_the_filled_marks(store_dir: Path, kit: Any) -> None:
    reader = StoreReader(store_dir)  # open all along: it reads the rows above the marks as they come
    try:
        with ChainStore(store_dir, origin="node-1", hash_fill_at=4) as store:
            seen = []
            for i in range(7, 13):  # fills at the opening (9 records), then once 4 more are written
                store.append(kit.entry(i, ledger="ledger-a"))
                records = [r for ledger in ("ledger-a", "ledger-b") for r in store.range(ledger)]
                hashes = [r.link for r in records]
                assert store.have([*hashes, b"\x07" * 32]) == hashes
                for record in records:
                    assert store.get_by_hash(record.link) == record
                    assert store.index_of(record.link) == (record.ledger, record.height)
                    assert reader.find_hash(record.link) == (record.ledger, record.height, record.encode())
                assert store.get_by_hash(b"\x07" * 32) is None and store.index_of(b"\x07" * 32) is None
                assert reader.find_hash(b"\x07" * 32) is None
                seen.append(_marks(store_dir)["ledger-a"])
            assert seen == [7, 7, 7, 11, 11, 11]  # 9 at the opening, then the 4th record after it
        with ChainStore(store_dir, hash_fill_at=None) as store, pytest.raises(StoreError, match="without its hash"):
            store.get_by_hash(records[0].link)
    finally:
        reader.close()


@pytest.mark.parametrize("old_index", ["records_by_hash", "records_by_hash_prefix"])
def test_a_store_from_before_is_looked_up_by_its_own_index_until_opened_then_filled(
    store_dir: Path, caplog: pytest.LogCaptureFixture, old_index: str
) -> None:
    with sqlite3.connect(store_dir / DB_NAME) as conn:  # the layout as an earlier version made it
        conn.execute("DROP TABLE record_hashes")
        conn.execute("DROP TABLE hashes_filled")
        column = "hash" if old_index == "records_by_hash" else "substr(hash, 1, 8)"
        conn.execute(f"CREATE INDEX {old_index} ON records ({column})")
    assert f"INDEX {old_index}" in _plan(store_dir, f"SELECT 1 FROM records WHERE {BY_HASH}")
    reader = StoreReader(store_dir)
    try:
        data = reader.get("ledger-b", 1)
        assert data is not None
        record = decode_record(data, Limits())
        assert reader.find_hash(record.link) == ("ledger-b", 1, data)
        with (
            caplog.at_level(logging.WARNING, logger="vledger.node.store"),
            ChainStore(store_dir, hash_fill_at=1) as store,
        ):
            assert store.get_by_hash(record.link) == record and store.index_of(record.link) == ("ledger-b", 1)
        assert "its hash index is built anew, once" in caplog.text  # an operator sees why it opens slowly
        assert reader.find_hash(record.link) == ("ledger-b", 1, data)
    finally:
        reader.close()
    assert old_index not in _indexes(store_dir)
    assert _marks(store_dir) == {"ledger-a": 7, "ledger-b": 2}
