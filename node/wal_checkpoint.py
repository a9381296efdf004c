"""Checkpoints of a store's write-ahead log, run beside its commits rather than inside one.

SQLite checkpoints a WAL database itself, in the commit that takes its log past
``wal_autocheckpoint`` pages, before that commit returns: a lone put (two to five pages) met
one every ~250 puts and paid, before its answer, ~1-2 ms of copying pages into the database,
its fsync and, as the file grows, a journal commit of its size (p29's strace of the request
loop). Here a thread of its own, on a connection of its own, copies the log into the database
a moment after commits (a PASSIVE checkpoint: it never waits for a writer nor blocks one, nor
a reader). The writer keeps SQLite's checkpoint at a higher mark, a bound on the log. SQLite
starts its log over only at a write that finds every frame copied, and under a lone writer a
commit nearly always lands during the thread's checkpoint (its fsync): the log still reaches
that bound (p29's look at the -shm: 4-5 restarts in 4,000 puts, each at ~4,000 frames), where
the writer's own checkpoint copies only the frames since the thread's last, once every ~1,300
puts instead of a full one every ~250-330.

Durability is SQLite's either way: a commit is durable once its frames are fsynced in the log
(synchronous=FULL); a checkpoint only moves them, and a crash in one is recovered from the log.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from .errors import StoreError
from .storefile import connect

log = logging.getLogger(__name__)

# The writer's own checkpoint, a bound should the thread fall behind: four times SQLite's
# default (pages of 4 KiB: a log of up to ~16 MiB, reused once it has grown there).
BACKSTOP_PAGES = 4000
# A checkpoint at most this often while commits come: at 1,700 lone puts a second, about the
# 1,000 pages SQLite's default waited for; each one fsyncs the database file once.
CHECKPOINT_INTERVAL_SECONDS = 0.2


class WalCheckpointer:
    """Copies a store's log into its database on a thread of its own, after :attr:`due` is set.

    The committer sets :attr:`due` (an Event: only when it is clear, so a commit pays no lock)
    after each commit; nothing runs while no commit comes. :meth:`close` before the writer's
    connection closes: the last connection to close checkpoints all and removes the log."""

    def __init__(self, path: Path, interval: float = CHECKPOINT_INTERVAL_SECONDS) -> None:
        self.path = path
        self.interval = interval
        self.due = threading.Event()
        self.runs = 0  # checkpoints run, for tests and the curious
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"wal-checkpoint:{path.parent.name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self.due.set()
        self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None  # opened at the first checkpoint: a store may see none
        try:
            while True:
                self.due.wait()
                # Commits meanwhile ride along: one checkpoint an interval, however many came.
                if self._stop.wait(self.interval):
                    return
                self.due.clear()
                if self._stop.is_set():  # close() came between the two: its due is the one just cleared
                    return
                try:
                    if conn is None:
                        conn = connect(self.path)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except (sqlite3.Error, StoreError) as e:  # the commits and their own checkpoint go on: said, not fatal
                    log.warning("%s: checkpoint of the write-ahead log failed: %s", self.path, e)
                self.runs += 1
        finally:
            if conn is not None:
                conn.close()
