"""The checkpoints table: rows only added, signed and cosigned rows without an fsync of their own."""

from __future__ import annotations

import base64
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from vledger.node.checkpoint_log import COSIGNED, EVIDENCE, SIGNED, CheckpointLog
from vledger.node.errors import StoreDamagedError, StoreError
from vledger.node.store import ChainStore
from vledger.node.storefile import DB_NAME

ROOT = bytes(range(32))


def _note(size: int, tag: str, root: bytes = ROOT, signatures: int | None = None) -> bytes:
    """A note of ledger l's checkpoint (size, root), told apart by an extension line; its
    signatures are not verified here (syntax only), as the log reads its rows. It carries one
    signature (a home's), or two for the tag ``cosigned`` (a witness's line after it), as the
    rows of those kinds do (checkpoint_log.row_disagrees)."""
    body = f"test/l\n{size}\n{base64.b64encode(root).decode()}\n{tag}\n"
    count = (2 if tag == "cosigned" else 1) if signatures is None else signatures
    names = ["test", "test/witness/replica-1"][:count]
    return (body + "\n" + "".join(f"\u2014 {name} {base64.b64encode(bytes(40)).decode()}\n" for name in names)).encode()


def test_rows_are_added_once_and_read_back(tmp_path: Path) -> None:
    with ChainStore(tmp_path, origin="ingest-1") as store:
        log = store.checkpoints
        log.keep("l", SIGNED, 3, ROOT, _note(3, "note"))
        log.keep("l", SIGNED, 3, ROOT, _note(3, "note"))  # the same checkpoint twice: one row
        log.keep("l", SIGNED, 5, ROOT, _note(5, "note"))
        log.keep("l", COSIGNED, 5, ROOT, _note(5, "cosigned"))
        assert [(r.size, r.note) for r in log.all("l", SIGNED)] == [(3, _note(3, "note")), (5, _note(5, "note"))]
        assert log.latest("l", SIGNED, at_most=4) is not None
        assert [r.note for r in log.at("l", COSIGNED, 5)] == [_note(5, "cosigned")]
        with pytest.raises(ValueError, match="not a kind"):
            log.keep("l", "made-up", 1, ROOT, b"x")


def test_a_signed_row_leaves_the_connection_fully_synchronous(tmp_path: Path) -> None:
    """The signed row's commit skips the fsync (the store's write connection, NORMAL for that
    statement alone); every other row's, and the group commits after it, do not."""
    with ChainStore(tmp_path, origin="ingest-1") as store:
        log = store.checkpoints
        synchronous: list[int] = []
        # What the write connection runs while the row is written: NORMAL, the row, then FULL.
        store._write.set_trace_callback(lambda sql: synchronous.append(sql))
        log.keep("l", SIGNED, 1, ROOT, b"note")
        store._write.set_trace_callback(None)
        assert [s.split()[0] for s in synchronous] == ["PRAGMA", "INSERT", "PRAGMA"]
        assert synchronous[0].endswith("NORMAL") and synchronous[-1].endswith("FULL")
        assert store._write.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
        assert log._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
        assert log._unsynced is None  # no connection of its own: the writer's page cache stays valid
        # Seen at once by another connection: the row is in the file, not in a buffer.
        other = sqlite3.connect(tmp_path / DB_NAME)
        try:
            assert other.execute("SELECT note FROM checkpoints WHERE kind = 'signed'").fetchall() == [(b"note",)]
        finally:
            other.close()


def test_a_cosigned_row_skips_its_own_fsync_too_and_evidence_does_not(tmp_path: Path) -> None:
    """A witness's cosigned row goes through the unsynced connection, as a home's signed row:
    its fsync held the replica's next group commit, on the way to its held report."""
    with ChainStore(tmp_path, origin="replica-1") as store:
        log = store.checkpoints
        log.keep("l", EVIDENCE, 1, ROOT, _note(1, "evidence"))
        assert log._unsynced is None  # evidence is fsynced before keep returns
        log.keep("l", COSIGNED, 1, ROOT, _note(1, "cosigned"))
        assert log._unsynced is not None and log._unsynced.execute("PRAGMA synchronous").fetchone()[0] == 1
        assert [r.note for r in log.at("l", COSIGNED, 1)] == [_note(1, "cosigned")]


def test_a_cosigned_row_is_renewed_in_place_by_the_same_checkpoint_cosigned_again(tmp_path: Path) -> None:
    """A quiet ledger's re-cosignature (PROTOCOL 10.7) replaces the note of its checkpoint's row,
    one row still, ordered by its first time; no row of another root or size is touched."""
    with ChainStore(tmp_path, origin="replica-1") as store:
        log = store.checkpoints
        log.keep("l", COSIGNED, 5, ROOT, _note(5, "cosigned"))
        (first,) = log.at("l", COSIGNED, 5)
        again = _note(5, "cosigned again", signatures=2)  # another note of (5, ROOT): the renewed one
        assert log.renew("l", 5, ROOT, again) and not log.renew("l", 5, bytes(32), again)
        assert not log.renew("l", 6, ROOT, _note(6, "cosigned"))
        (renewed,) = log.at("l", COSIGNED, 5)
        assert (renewed.note, renewed.at_ms, renewed.kind) == (again, first.at_ms, COSIGNED)
        assert log.at("l", COSIGNED, 6) == [] and log._unsynced is not None


def test_a_renewed_row_is_written_through_the_fsynced_connection(tmp_path: Path) -> None:
    """Review r12 finding 9: renew went through the connection without fsyncs, and the witness
    publishes the newest line once it returns: a power loss brought the older line back, and
    readers' fresh_ms jumped back. The UPDATE is made on the synchronous=FULL connection now."""
    with ChainStore(tmp_path, origin="replica-1") as store:
        log = store.checkpoints
        log.keep("l", COSIGNED, 5, ROOT, _note(5, "cosigned"))  # a first row: unsynced, as before
        assert log._unsynced is not None
        made: dict[str, list[str]] = {"synced": [], "unsynced": []}
        log._conn.set_trace_callback(made["synced"].append)
        log._unsynced.set_trace_callback(made["unsynced"].append)
        assert log.renew("l", 5, ROOT, _note(5, "cosigned again", signatures=2))
        assert any(sql.startswith("UPDATE checkpoints") for sql in made["synced"]), made
        assert not any(sql.startswith("UPDATE") for sql in made["unsynced"]), made
        assert log._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


@pytest.mark.parametrize("kind", [SIGNED, COSIGNED])
def test_an_unsynced_row_outlives_a_kill_of_its_process(tmp_path: Path, kind: str) -> None:
    """SIGKILL right after keep returns: the row is in the WAL, which the next open reads."""
    notes = 2 if kind == COSIGNED else 1
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from vledger.node.store import ChainStore
        store = ChainStore(Path({str(tmp_path)!r}), origin="ingest-1")
        store.checkpoints.keep("l", {kind!r}, 7, bytes(range(32)), {_note(7, "kill", signatures=notes)!r})
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    assert os.path.exists(tmp_path / f"{DB_NAME}-wal")  # never checkpointed: the kill came first
    with ChainStore(tmp_path, origin="ingest-1") as store:
        kept = store.checkpoints.latest("l", kind)
        assert kept is not None and kept.note == _note(7, "kill", signatures=notes)


def test_a_log_opened_on_its_own_reads_what_the_store_kept(tmp_path: Path) -> None:
    with ChainStore(tmp_path, origin="ingest-1") as store:
        store.checkpoints.keep("l", SIGNED, 2, ROOT, _note(2, "two"))
    log = CheckpointLog(tmp_path / DB_NAME)
    try:
        assert [r.size for r in log.all("l", SIGNED)] == [2]
    finally:
        log.close()


def test_signed_rows_kept_by_the_writer_lock_s_holder_are_written_at_once_without_an_fsync(tmp_path: Path) -> None:
    """A committing thread's outbox pass (writer_held) writes its rows itself, while it holds
    the store's writer lock, in one transaction without an fsync: no group commit to hand them to
    (it is that commit's thread), and the writer lock taken again would never be given."""
    with ChainStore(tmp_path, origin="ingest-1") as store:
        log = store.checkpoints
        log.keep("l", SIGNED, 1, ROOT, _note(1, "note"))
        statements: list[str] = []
        store._write.set_trace_callback(statements.append)
        rows = [("l", 1, ROOT, _note(1, "note")), ("l", 2, ROOT, _note(2, "note")), ("l", 3, ROOT, _note(3, "note"))]
        with store._committing:  # what the committing thread holds when its on_commit runs the pass
            assert log.keep_signed(rows, writer_held=True) == [False, True, True]  # the first was kept before
        store._write.set_trace_callback(None)
        words = [s.split()[0] for s in statements]
        assert words == ["PRAGMA", "BEGIN", "INSERT", "INSERT", "INSERT", "COMMIT", "PRAGMA"]
        assert statements[0].endswith("NORMAL") and statements[-1].endswith("FULL")
        assert [r.size for r in log.all("l", SIGNED)] == [1, 2, 3]


def test_a_row_waits_for_the_stores_group_commit_on_its_lock(tmp_path: Path) -> None:
    """A row met by a group commit waits on the store's lock (woken as the group ends), never in
    SQLite's busy handler, which sleeps up to 100 ms between looks: with the busy timeout at
    0, meeting the group's write lock in SQLite would fail at once."""
    with ChainStore(tmp_path, origin="ingest-1") as store:
        log = store.checkpoints
        log.keep("l", SIGNED, 1, ROOT, _note(1, "note"))
        for conn in (log._conn, store._write):  # the signed rows go through the store's write connection
            conn.execute("PRAGMA busy_timeout=0")
        failures: list[BaseException] = []

        def keep_both() -> None:
            try:
                log.keep("l", SIGNED, 2, ROOT, _note(2, "note"))
                log.keep("l", COSIGNED, 2, ROOT, _note(2, "cosigned"))
            except BaseException as e:  # reported to the test's thread
                failures.append(e)

        with store._committing:  # what a group commit holds, from before its BEGIN to after its COMMIT
            store._write.execute("BEGIN IMMEDIATE")
            store._write.execute("INSERT INTO meta VALUES ('test', 'a group in progress')")
            keeper = threading.Thread(target=keep_both)
            keeper.start()
            keeper.join(0.2)
            assert keeper.is_alive() and not failures  # waiting for the group, not failed in SQLite
            store._write.execute("COMMIT")
        keeper.join(30)
        assert not keeper.is_alive() and not failures
        assert [r.size for r in log.all("l", SIGNED)] == [1, 2]
        assert [r.note for r in log.at("l", COSIGNED, 2)] == [_note(2, "cosigned")]


@pytest.mark.parametrize(
    ("column", "value", "wrong"),
    [("size", 999, "its note says size 1"), ("root", bytes(32), "its note says another root")],
)
def test_a_row_whose_column_its_note_contradicts_does_not_open(
    tmp_path: Path, column: str, value: object, wrong: str
) -> None:
    """Outsider pass 20, F6: a cosigned row's size column raised 1 -> 999 made the replica find
    its own store short of a checkpoint it never cosigned (store_contradicts_checkpoint against
    itself), while the note in that row still said size 1. Now the store does not open."""
    with ChainStore(tmp_path, origin="replica-1") as store:
        store.checkpoints.keep("l", COSIGNED, 1, ROOT, _note(1, "cosigned"))
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.execute(f"UPDATE checkpoints SET {column} = ?", (value,))
    conn.close()
    with pytest.raises(StoreError, match=f"cosigned row of ledger 'l' at size .* is no row the node wrote: {wrong}"):
        ChainStore(tmp_path, origin="replica-1")


@pytest.mark.parametrize(
    ("kind", "change", "wrong"),
    [
        # Read as a checkpoint this node signed: a home's self-check, its outbox's note (F6).
        (COSIGNED, "kind = 'signed'", "its note carries 2 signatures, where a home signs with one"),
        (SIGNED, "kind = 'cosigned'", "its note carries no cosignature"),
        (COSIGNED, "kind = 'bogus'", "its kind 'bogus' is none that a node writes"),
        (COSIGNED, "at_ms = -1", "its at_ms is -1, no time in milliseconds"),
    ],
)
def test_a_row_whose_kind_or_time_no_node_writes_does_not_open(
    tmp_path: Path, kind: str, change: str, wrong: str
) -> None:
    with ChainStore(tmp_path, origin="replica-1") as store:
        store.checkpoints.keep("l", kind, 1, ROOT, _note(1, kind))
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.execute(f"UPDATE checkpoints SET {change}")
    conn.close()
    with pytest.raises(StoreError, match=f"row of ledger 'l' at size 1 is no row the node wrote: {wrong}"):
        ChainStore(tmp_path, origin="replica-1")


def test_an_older_row_contradicted_by_its_note_stops_the_running_node(tmp_path: Path) -> None:
    found: list[StoreDamagedError] = []
    with ChainStore(tmp_path, origin="ingest-1") as store:
        store.on_damaged = found.append
        store.checkpoints.keep("l", SIGNED, 1, ROOT, _note(1, "note"))
        store.checkpoints.keep("l", SIGNED, 2, ROOT, _note(2, "note"))
        store._write.execute("UPDATE checkpoints SET root = zeroblob(32) WHERE size = 1")
        with pytest.raises(StoreDamagedError, match="signed row of ledger 'l' at size 1 is no row the node wrote"):
            store.checkpoints.at("l", SIGNED, 1)
        assert len(found) == 1 and "another root" in found[0].message
