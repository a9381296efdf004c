"""The store's write-ahead log is copied into its database by a thread of its own (node/wal_checkpoint.py)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from vledger.node.store import ChainStore
from vledger.node.storefile import wal_of
from vledger.node.wal_checkpoint import BACKSTOP_PAGES, WalCheckpointer

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


class _CloseAsItClears(threading.Event):
    """The checkpointer's ``due``: its first clear() waits until a close() has begun (its stop and due set)."""

    def __init__(self, stopping: threading.Event) -> None:
        super().__init__()
        self.stopping = stopping
        self.cleared = threading.Event()

    def clear(self) -> None:
        if not self.cleared.is_set():
            self.cleared.set()
            assert self.stopping.wait(DEADLINE)
            assert super().wait(DEADLINE)  # close() set it: the clear below takes it back
        super().clear()


def test_a_close_between_the_wait_and_the_clear_ends_the_thread(tmp_path: Path) -> None:
    """close() sets stop, then due, then joins: a thread that had just found stop clear and then
    cleared due must still end (it waited on due for ever: a test's teardown hung there)."""
    path = tmp_path / "x.sqlite3"
    sqlite3.connect(path).close()
    checkpointer = WalCheckpointer(path, interval=0.0)
    due, first = _CloseAsItClears(checkpointer._stop), checkpointer.due
    checkpointer.due = due
    due.set()
    first.set()  # wakes the thread, which waits on the first
    assert due.cleared.wait(DEADLINE)
    closing = threading.Thread(target=checkpointer.close, daemon=True)
    closing.start()
    closing.join(DEADLINE)
    assert not closing.is_alive(), "close() never returned: the thread waits on a due it cleared"
