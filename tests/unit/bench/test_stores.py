"""bench/stores.py: the verify figures' stores are valid ledgers, and a kept store is reused
only by the same code."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from vledger.bench import stores
from vledger.bench.fixtures import LEDGER, ORIGIN, content
from vledger.config.settings import Limits
from vledger.node.record import decode_record
from vledger.node.store import ChainStore
from vledger.node.storefile import DB_NAME, StoreReader
from vledger.tools.verification import verify_path


def test_a_built_store_verifies_and_opens_like_the_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stores, "RUN", 300)  # several transactions, the last one short
    stores.build(tmp_path, 1_000)

    assert verify_path(tmp_path, None, Limits()).ok
    reader = StoreReader(tmp_path)
    try:
        assert reader.count(LEDGER) == 1_000
        stored = reader.get(LEDGER, 777)
    finally:
        reader.close()
    assert stored is not None
    record = decode_record(stored, Limits())
    assert record.content == content(777) and record.origin == ORIGIN
    with closing(sqlite3.connect(tmp_path / DB_NAME)) as db:
        indexes = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        filled = db.execute("SELECT size, (SELECT COUNT(*) FROM hash_rows) FROM hashes_filled").fetchall()
    assert set(stores.LOOKUP_INDEXES) <= indexes
    assert filled == [(1_000, 1_000)]  # every record in the hash index, as the store fills it
    # Opening checks every ledger's head and its whole stored tree against the records.
    with ChainStore(tmp_path, origin=ORIGIN) as store:
        assert store.size(LEDGER) == 1_000
        assert store.get_by_hash(record.link) == record


def test_a_kept_store_is_reused_by_the_same_code_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stores, "CACHE_ROOT", tmp_path)
    built: list[Path] = []
    build = stores.build

    def counting(directory: Path, count: int) -> None:
        built.append(directory)
        build(directory, count)

    monkeypatch.setattr(stores, "build", counting)
    with stores.ledger_store(100, cache=True) as first:
        pass
    with stores.ledger_store(100, cache=True) as again:
        assert again == first and len(built) == 1
    assert verify_path(first, None, Limits()).ok

    # Another digest of the code: a store of its own; the old one goes once unused for an hour.
    os.utime(first, (0, 0))
    dead_build = tmp_path / ".build-999999999-0123456789abcdef-100"  # no such process
    dead_build.mkdir()
    monkeypatch.setattr(stores, "_code_digest", lambda: "0" * 16)
    with stores.ledger_store(100, cache=True) as other:
        assert other != first and len(built) == 2
    assert not first.exists() and not dead_build.exists()
    assert [path.name for path in tmp_path.iterdir()] == [other.name]  # no build folder left


def test_a_failed_build_leaves_nothing_to_reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stores, "CACHE_ROOT", tmp_path)

    def failing(directory: Path, count: int) -> None:
        (directory / DB_NAME).parent.mkdir(parents=True)
        (directory / DB_NAME).write_bytes(b"half a store")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(stores, "build", failing)
    with pytest.raises(RuntimeError, match="interrupted"), stores.ledger_store(100, cache=True):
        pass
    assert list(tmp_path.iterdir()) == []
