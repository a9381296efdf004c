"""The store's write-ahead log is copied into its database by a thread of its own (node/wal_checkpoint.py)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from vledger.node.store import ChainStore
from vledger.node.storefile import wal_of
from vledger.node.wal_checkpoint import BACKSTOP_PAGES

from .conftest import LEDGER

DEADLINE = 30.0  # seconds; every wait on another thread is bounded


def wait_for(condition: Any, what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not within {DEADLINE} s: {what}")
        time.sleep(0.01)


def test_commits_are_checkpointed_beside_them_not_in_them(tmp_path: Path, kit: Any) -> None:
    """A few commits (far below SQLite's own 1,000 pages) reach the database file within the
    checkpointer's interval, and the writer's own checkpoint waits for the higher bound: no
    commit copies the log before it returns, save as a bound should the thread fall behind."""
    with ChainStore(tmp_path / "a", origin="node-1") as store:
        assert store._write.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == BACKSTOP_PAGES
        store.create_ledger(kit.genesis_entry(0))
        for i in range(1, 6):
            store.append(kit.entry(i, 0))
        wait_for(lambda: store._wal.runs >= 1, "a checkpoint after the commits")
        # What the checkpoint copied is in the database file alone: read without the log.
        copy = tmp_path / "copy.sqlite3"
        copy.write_bytes(store.path.read_bytes())
        with sqlite3.connect(copy) as conn:
            assert conn.execute("SELECT COUNT(*) FROM records WHERE ledger = ?", (LEDGER,)).fetchone()[0] == 6
    assert not wal_of(store.path).exists()  # closed after the checkpointer: the writer's close removed the log
