"""The checkpoints a node signed, cosigned or found contradicted, kept in its store's file.

Three kinds of row, one table (``checkpoints`` in the store's SQLite file, docs/PROTOCOL.md
section 10.7):

* ``signed``: every checkpoint this node signed as a ledger's home. On open the home checks
  its tree against the latest one and refuses writes when they differ.
* ``cosigned``: every checkpoint this node cosigned as a witness, with its cosignature line.
  A witness cosigns only what is consistent with the latest one.
* ``evidence``: a checkpoint signed with a home's key that contradicts this node's copy,
  kept verbatim (the note exactly as received).
* ``outside:<witness>``: on a home, each checkpoint it signed that the outside witness
  ``<witness>`` (a key name a genesis lists) cosigned, with that cosignature line verified.
* ``imported:signed`` and ``imported:cosigned``: a checkpoint line of an export that
  ``vledger import`` verified (its root, its note with the ledger's key), as a home signed
  it or with a witness's cosignature lines. Never read as what this node signed or cosigned:
  only served and exported again beside its own (storefile.StoreReader.latest_checkpoints).

Rows are only ever added: nothing here is rewritten to "fix" a contradiction.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .errors import StoreDamagedError, StoreError, VledgerError
from .note import parse_checkpoint, parse_note
from .outside import OUTSIDE_KIND_PREFIX
from .storefile import MAX_HEIGHT, connect

SIGNED, COSIGNED, EVIDENCE = "signed", "cosigned", "evidence"
_T = TypeVar("_T")

IMPORTED_SIGNED, IMPORTED_COSIGNED = "imported:signed", "imported:cosigned"
KINDS = (SIGNED, COSIGNED, EVIDENCE, IMPORTED_SIGNED, IMPORTED_COSIGNED)
_INSERT = "INSERT OR IGNORE INTO checkpoints (ledger, kind, size, root, note, at_ms) VALUES (?, ?, ?, ?, ?, ?)"
_RENEW = "UPDATE checkpoints SET note = ? WHERE ledger = ? AND kind = ? AND size = ? AND root = ?"
# Rows written without an fsync of their own, made durable by the store's next group commit
# (see CheckpointLog.keep): a note over records the store already made durable.
UNSYNCED_KINDS = frozenset((SIGNED, COSIGNED))
GIVE_WAY_SECONDS = 1.0  # the most a store's committer waits between two groups for rows to be written
# The most a signed row handed to the store's next group commit waits to be taken (see keep,
# with_commit): a lone writer's puts commit every half millisecond or so; past this no commit
# comes soon, and the row is written on its own (the file is then free).
HANDOVER_SECONDS = 0.003


@dataclass(frozen=True, slots=True)
class KeptCheckpoint:
    """One row: a checkpoint of ``ledger`` at ``size`` with tree ``root``, and its note's bytes."""

    ledger: str
    kind: str
    size: int
    root: bytes
    note: bytes
    at_ms: int


def is_kind(kind: object) -> bool:
    """Whether ``kind`` names a kind of row this log writes (KINDS, or ``outside:<witness>``)."""
    return type(kind) is str and (
        kind in KINDS or (kind.startswith(OUTSIDE_KIND_PREFIX) and len(kind) > len(OUTSIDE_KIND_PREFIX))
    )


def row_disagrees(row: KeptCheckpoint) -> str | None:
    """What of ``row``'s columns its own note does not say, or that no row the log writes holds
    (None when all agree): the ledger, size and root columns are copies the node selects and
    compares by, the note is what was signed; the kind says whose signatures the note carries (a
    signed row's one, its home's, a cosigned row's one more at least: a cosigned row relabelled
    signed would count as a checkpoint this node signed, and twice in ``vledger verify``), and
    ``at_ms`` orders the rows of a size. Syntax only: the note's signatures were verified when
    the row was written."""
    if type(row.at_ms) is not int or row.at_ms < 0:
        return f"its at_ms is {row.at_ms!r}, no time in milliseconds"
    if not is_kind(row.kind):
        return f"its kind {row.kind!r} is none that a node writes"
    try:
        note = parse_note(row.note)
        body = parse_checkpoint(note.text)
    except VledgerError as e:
        return f"its note does not parse ({e.message})"
    if not body.origin.endswith("/" + row.ledger):
        return f"its note is of origin {body.origin!r}"
    if body.size != row.size:
        return f"its note says size {body.size}"
    if body.root != row.root:
        return "its note says another root"
    signatures = len(note.signatures)
    if row.kind in (SIGNED, IMPORTED_SIGNED) and signatures != 1:
        return f"its note carries {signatures} signatures, where a home signs with one"
    if row.kind in (COSIGNED, IMPORTED_COSIGNED) and signatures < 2:
        return "its note carries no cosignature, only its home's signature"
    witness = row.kind[len(OUTSIDE_KIND_PREFIX) :]
    if row.kind.startswith(OUTSIDE_KIND_PREFIX) and all(s.name != witness for s in note.signatures):
        return f"its note carries no signature by {witness}"
    return None


class HandedRow:
    """A SIGNED row handed to the store's next group commit (CheckpointLog.keep, with_commit).
    ``state``: waiting (to be taken), taken (by a group commit under way), written (``added``:
    whether its INSERT added it), or failed (its group rolled back: the row is written on its own)."""

    __slots__ = ("added", "state", "values")

    def __init__(self, values: tuple[str, str, int, bytes, bytes, int]) -> None:
        self.values = values
        self.state = "waiting"
        self.added = False


class CheckpointLog:
    """The ``checkpoints`` table of a store (any thread: one connection behind a lock).

    ``writer``: the lock the store's committer holds while it commits groups (ChainStore's). A
    row is written holding it, and the committer lets waiting rows go first between two groups
    (:meth:`give_way`): the two writers of the file take turns, each woken at once. Without it,
    a row that met a group commit waited in SQLite's busy handler, which sleeps (1, 2, 5 ...
    100 ms) and looks again only when it wakes: under load, with group commits back to back, a
    home's checkpoint waited hundreds of milliseconds for its row, and the replicas for the
    checkpoint (the slowest 1% of 5a's lags)."""

    def __init__(
        self, path: Path, writer: threading.Lock | None = None, shared: sqlite3.Connection | None = None
    ) -> None:
        self.path = path
        self._conn = connect(path, shared=True)
        self._unsynced: sqlite3.Connection | None = None  # UNSYNCED_KINDS rows' (see keep), opened at the first
        # The store's write connection (only with ``writer``, which guards it): SIGNED rows go
        # through it, not a connection of their own. In WAL mode a commit by any other connection
        # makes the writer drop its whole page cache at its next transaction: with a home's row
        # signed every outbox pass (~every 5 lone puts), the next put read its B-tree paths back
        # from the file, 6-9 preads of the WAL (strace), before it could insert.
        self._shared = shared if writer is not None else None
        self._lock = threading.Lock()
        self._writer = writer
        self._turns = threading.Condition()  # wakes a committer that gave way (see give_way)
        self._waiting = 0  # keep calls waiting for (or holding) the writer lock
        self._brief = 0  # UNSYNCED_KINDS rows' keep calls waiting for (or holding) the writer lock (see holds_briefly)
        self._handed: list[HandedRow] = []  # signed rows waiting for a group commit to take them (see keep)
        # Set by the ChainStore that owns the log (its found_damaged): a row read whose columns its
        # note contradicts stops the node as a damaged store, not as a contradicted checkpoint.
        self.found_damaged: Callable[[str], StoreDamagedError] | None = None

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            if self._unsynced is not None:
                self._unsynced.close()

    def keep(self, ledger: str, kind: str, size: int, root: bytes, note: bytes, *, with_commit: bool = False) -> bool:
        """Add a row; the same checkpoint kept twice is one row: True when this call added it.
        Raises ValueError for an unknown ``kind``, StoreError when the row cannot be written.

        A row is durable on return, except a SIGNED or COSIGNED one: that one is in the file
        on return (a crash of the process keeps it) and fsynced with the store's next group
        commit. A home signs only records already durable, and signs deterministically: a row
        lost with the machine costs only its signature made again (the same bytes) when it is
        next needed, and the store still holds every checkpoint that went out. A witness
        cosigns only a checkpoint its store's durable records prove: a row lost with the
        machine leaves the one before it as the last cosigned, which those records prove too,
        so the next cosignature is checked against a checkpoint consistent with the lost one
        (PROTOCOL 10.7). Without its own fsync the row holds the file's write lock (and the
        store's ``writer`` lock, which it waits on for a group commit under way) for
        microseconds, not for an fsync that a group commit would wait for: a replica's
        cosignature of each stored run held its next run's commit for that fsync, on the way
        to its held report. SIGNED rows go through the store's write connection (``shared``),
        set to NORMAL for the row's statement and back to FULL before the writer lock is let go;
        COSIGNED rows (and SIGNED ones of a log without it) through a connection of their own,
        set so once: one statement per row (each call into SQLite lets a home's request thread
        take the GIL from its signing thread).

        ``with_commit`` (a SIGNED row of a store's log: a home's outbox signing a batch that
        group commits just made durable, while more are likely to follow): the row is handed to
        the store's next group commit, which writes it in its own transaction (fsynced with it)
        and returns, and only past HANDOVER_SECONDS without one is it written as above. Written
        on its own, the row held the store's lock right when a lone writer's next put came
        (the outbox signs as a commit ends), and that put waited for its three statements and
        for the signing thread's turns at the GIL, a quarter of a millisecond; in the put's own
        transaction it costs that put one INSERT."""
        if not is_kind(kind):
            raise ValueError(f"not a kind of kept checkpoint: {kind!r}")
        if with_commit and kind == SIGNED:
            return self.keep_signed([(ledger, size, root, note)], with_commit=True)[0]
        return self._keep_alone(ledger, kind, size, root, note)

    def keep_signed(
        self, rows: Sequence[tuple[str, int, bytes, bytes]], *, with_commit: bool = False, writer_held: bool = False
    ) -> list[bool]:
        """:meth:`keep` of SIGNED rows ``(ledger, size, root, note)``, for each whether it added it.
        Raises StoreError when a row cannot be written.

        With ``with_commit`` the rows are handed over together and wait once, for the group
        commit that takes them all (:meth:`take_handed` takes every row handed before it). Handed
        one by one, each row of a home's batch waited up to HANDOVER_SECONDS or its own group's
        fsync: a batch over 50 ledgers waited some 190 ms (review r11 H).

        ``writer_held``: the caller holds the store's writer lock, between two group commits (a
        home's outbox pass run by the committing thread once a commit ended, ingest/outbox.py):
        the rows are written at once through the store's write connection, in a transaction of
        their own without an fsync, as a lone put's group writes the rows handed to it."""
        if writer_held and self._shared is not None:
            handed = [HandedRow((ledger, SIGNED, size, root, note, time.time_ns() // 1_000_000))
                      for ledger, size, root, note in rows]  # fmt: skip
            try:
                CheckpointLog.write_handed_unsynced(self._shared, handed)
            except sqlite3.Error as e:
                raise StoreError(f"{self.path}: cannot keep a checkpoint: {e}") from e
            return [row.added for row in handed]
        added: list[bool | None] = [None] * len(rows)
        if with_commit and rows and self._writer is not None and self._shared is not None:
            at_ms = time.time_ns() // 1_000_000
            added = self._hand_over([(ledger, SIGNED, size, root, note, at_ms) for ledger, size, root, note in rows])
        return [
            self._keep_alone(ledger, SIGNED, size, root, note) if done is None else done
            for done, (ledger, size, root, note) in zip(added, rows, strict=True)
        ]

    def _keep_alone(self, ledger: str, kind: str, size: int, root: bytes, note: bytes) -> bool:
        """:meth:`keep` without a handover: the row written now, in a transaction of its own."""
        if self._writer is None:
            return self._insert(ledger, kind, size, root, note)
        return self._turn(kind in UNSYNCED_KINDS, lambda: self._insert(ledger, kind, size, root, note))

    def renew(self, ledger: str, size: int, root: bytes, note: bytes) -> bool:
        """Replace the note of the COSIGNED row of ``ledger`` at ``size`` and ``root`` by
        ``note``: the same checkpoint cosigned again on a quiet ledger (PROTOCOL 10.7), its first
        line kept and its newest after it, so that a witness started again goes on from its
        newest line (not cosigning again at once) and publishes what readers saw before. The
        row's other columns stay (``at_ms`` still orders it as the first cosignature). Durable
        on return (its own fsync), unlike a first COSIGNED row: the witness publishes the newest
        line once this returns, and a row lost with the machine brought the older line back, so
        readers' ``fresh_ms`` jumped back after a restart (review r12, 9). It comes once per
        ``recosign_interval_ms`` per quiet ledger, so its fsync under the writer lock is rare.
        True when the row was there (none: nothing written). Raises StoreError when it cannot
        be written."""
        if self._writer is None:
            return self._renew(ledger, size, root, note)
        return self._turn(False, lambda: self._renew(ledger, size, root, note))

    def _turn(self, brief: bool, write: Callable[[], bool]) -> bool:
        """``write()``, holding the store's writer lock, counted as a row waiting for it (see
        :meth:`give_way`) and, when ``brief`` (no fsync), as one :meth:`holds_briefly` reports."""
        assert self._writer is not None
        with self._turns:
            self._waiting += 1
            self._brief += brief
        try:
            # The store's lock first, as its committer takes them (it may read rows while it holds it).
            with self._writer:
                return write()
        finally:
            with self._turns:
                self._waiting -= 1
                self._brief -= brief
                self._turns.notify_all()

    def _hand_over(self, values: list[tuple[str, str, int, bytes, bytes, int]]) -> list[bool | None]:
        """For each row, whether a group commit added it (False: it was there already), or None
        when none took it within HANDOVER_SECONDS, or its group failed: the caller writes it."""
        handed = [HandedRow(row) for row in values]
        with self._turns:
            # Listed at once, under the condition take_handed takes them by: one group takes all.
            self._handed.extend(handed)
            if not self._turns.wait_for(lambda: all(h.state != "waiting" for h in handed), HANDOVER_SECONDS):
                for row in handed:
                    if row.state == "waiting":  # still waiting, so still listed: withdrawn
                        self._handed.remove(row)
            # Taken: its group commit is under way. Past GIVE_WAY_SECONDS (a bug that stopped
            # it before it said how it ended) the row is written here: INSERT OR IGNORE.
            self._turns.wait_for(lambda: all(h.state != "taken" for h in handed), GIVE_WAY_SECONDS)
        return [row.added if row.state == "written" else None for row in handed]

    def take_handed(self) -> list[HandedRow]:
        """For the store's group commit, holding the writer lock: the signed rows handed to it
        (:meth:`keep` with ``with_commit``), to write with :meth:`write_handed` in its
        transaction and to report with :meth:`handed_done`. Never raises."""
        if not self._handed:  # read without the condition: a row handed just now goes with the next group
            return []
        with self._turns:
            taken, self._handed = self._handed, []
            for handed in taken:
                handed.state = "taken"
        return taken

    @staticmethod
    def write_handed(conn: sqlite3.Connection, rows: list[HandedRow]) -> None:
        """INSERT ``rows`` through ``conn`` (the store's write connection, inside its group
        commit's transaction). Raises sqlite3.Error."""
        for row in rows:
            row.added = conn.execute(_INSERT, row.values).rowcount > 0

    def handed_done(self, rows: list[HandedRow], committed: bool) -> None:
        """Tell the keep calls of ``rows`` their group's outcome: written (``committed``), else
        rolled back, and each writes its row on its own. Never raises."""
        if not rows:
            return
        with self._turns:
            for row in rows:
                row.state = "written" if committed else "failed"
            self._turns.notify_all()

    def holds_briefly(self) -> bool:
        """Whether a SIGNED or COSIGNED row's keep waits for or holds the writer lock: an INSERT without an
        fsync, which lets go of it within microseconds. Counted from before it asks for the lock,
        so a keep that was just given the lock and waits for the GIL counts too. Read without a
        lock: a hint, not a promise."""
        return self._brief > 0

    def give_way(self) -> None:
        """For the store's committer, between two groups, holding the writer lock: if a row
        waits for that lock, let it go first, and return once none waits (or after
        GIVE_WAY_SECONDS). A committer with groups queued back to back would otherwise take the
        lock again before the waiting thread wakes, group after group."""
        if self._writer is None or not self._waiting:  # read without the condition: a late one waits a group
            return
        self._writer.release()
        try:
            with self._turns:
                self._turns.wait_for(lambda: self._waiting == 0, GIVE_WAY_SECONDS)
        finally:
            self._writer.acquire()

    def _insert(self, ledger: str, kind: str, size: int, root: bytes, note: bytes) -> bool:
        if kind == SIGNED and self._shared is not None:
            return self._insert_shared(self._shared, ledger, size, root, note)
        values = (ledger, kind, size, root, note, time.time_ns() // 1_000_000)
        return self._execute(kind in UNSYNCED_KINDS, _INSERT, values) > 0

    def _renew(self, ledger: str, size: int, root: bytes, note: bytes) -> bool:
        return self._execute(False, _RENEW, (note, ledger, COSIGNED, size, root)) > 0

    def _execute(self, unsynced: bool, sql: str, values: tuple[object, ...]) -> int:
        """``sql`` run with ``values`` (committed: autocommit), through the connection of rows
        written without an fsync of their own when ``unsynced``; its rowcount."""
        try:
            with self._lock:
                conn = self._conn
                if unsynced:
                    if self._unsynced is None:
                        self._unsynced = connect(self.path, shared=True)
                        self._unsynced.execute("PRAGMA synchronous=NORMAL")  # WAL: no fsync at its commits
                    conn = self._unsynced
                return conn.execute(sql, values).rowcount
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot keep a checkpoint: {e}") from e

    def _insert_shared(self, conn: sqlite3.Connection, ledger: str, size: int, root: bytes, note: bytes) -> bool:
        """A SIGNED row through the store's write connection, whose writer lock the caller holds,
        committed without an fsync (:func:`_unsynced`)."""
        values = (ledger, SIGNED, size, root, note, time.time_ns() // 1_000_000)
        try:
            return _unsynced(conn, lambda: conn.execute(_INSERT, values).rowcount > 0)
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot keep a checkpoint: {e}") from e

    @staticmethod
    def write_handed_unsynced(conn: sqlite3.Connection, rows: list[HandedRow]) -> None:
        """:meth:`write_handed` in a transaction of their own, committed without an fsync
        (:func:`_unsynced`), through the store's write connection, whose writer lock the caller
        holds: a lone put's group commit writes its record alone and, once it has answered,
        these, which the next group commit makes durable. Raises sqlite3.Error (rolled back)."""

        def write() -> None:
            if len(rows) == 1:  # one statement, its own transaction
                CheckpointLog.write_handed(conn, rows)
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                CheckpointLog.write_handed(conn, rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        _unsynced(conn, write)

    def latest(self, ledger: str, kind: str, *, at_most: int = MAX_HEIGHT, above: int = -1) -> KeptCheckpoint | None:
        """The row of ``kind`` with the largest size in ``above < size <= at_most``, or None."""
        return self._one(
            "WHERE ledger = ? AND kind = ? AND size > ? AND size <= ? ORDER BY size DESC, at_ms DESC LIMIT 1",
            (ledger, kind, above, min(at_most, MAX_HEIGHT)),
        )

    def at(self, ledger: str, kind: str, size: int) -> list[KeptCheckpoint]:
        """Every row of ``kind`` at exactly ``size`` (one for a consistent signer)."""
        return self._all("WHERE ledger = ? AND kind = ? AND size = ? ORDER BY at_ms", (ledger, kind, size))

    def shared(self, ledger: str, kinds: Sequence[str], count: int, *, above: int = -1) -> list[KeptCheckpoint]:
        """The rows of the largest checkpoint (size and root) above ``above`` that at least ``count``
        of ``kinds`` hold a row of, one per kind (its first); none when no checkpoint has that many.
        Outside witnesses cosign at their own pace: a quorum of them may meet only below the
        newest each cosigned (PROTOCOL 13.9), in rows the newest notes say nothing of."""
        if not kinds or count < 1:
            return []
        marks = ", ".join("?" * len(kinds))
        try:
            with self._lock:
                found = self._conn.execute(
                    f"SELECT size, root FROM checkpoints WHERE ledger = ? AND kind IN ({marks}) AND size > ? "
                    "GROUP BY size, root HAVING COUNT(DISTINCT kind) >= ? ORDER BY size DESC LIMIT 1",
                    (ledger, *kinds, above, count),
                ).fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot read the checkpoints: {e}") from e
        if found is None:
            return []
        size, root = found[0], bytes(found[1])
        # One row per kind at a size and root (the table's key): each witness's first cosignature.
        return self._all(
            f"WHERE ledger = ? AND kind IN ({marks}) AND size = ? AND root = ? ORDER BY kind",
            (ledger, *kinds, size, root),
        )

    def ledgers(self, kind: str) -> list[str]:
        """The ledgers with rows of ``kind``."""
        try:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT DISTINCT ledger FROM checkpoints WHERE kind = ? ORDER BY ledger", (kind,)
                ).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot read the checkpoints: {e}") from e
        return [r[0] for r in rows]

    def all(self, ledger: str, kind: str) -> list[KeptCheckpoint]:
        return self._all("WHERE ledger = ? AND kind = ? ORDER BY size, at_ms", (ledger, kind))

    def _one(self, where: str, args: tuple[object, ...]) -> KeptCheckpoint | None:
        found = self._all(where, args)
        return found[0] if found else None

    def _all(self, where: str, args: tuple[object, ...]) -> list[KeptCheckpoint]:
        try:
            with self._lock:
                rows = self._conn.execute(
                    f"SELECT ledger, kind, size, root, note, at_ms FROM checkpoints {where}", args
                ).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot read the checkpoints: {e}") from e
        kept = [KeptCheckpoint(r[0], r[1], r[2], bytes(r[3]), bytes(r[4]), r[5]) for r in rows]
        for row in kept:
            wrong = row_disagrees(row)
            if wrong is not None:
                message = (
                    f"{self.path}: the checkpoints table's {row.kind} row of ledger {row.ledger!r} at size "
                    f"{row.size} is no row the node wrote: {wrong}; the store was changed behind the node's back"
                )
                raise StoreError(message) if self.found_damaged is None else self.found_damaged(message)
        return kept

    def check_latest(self) -> None:
        """Check the row of each ledger and kind the node reads first (the largest size) against
        its note: a size or root column changed behind the node's back raises StoreError here, at
        open, before anything compares the store with it (a size raised 1 -> 999 made a replica
        find its own store contradicting a checkpoint it never cosigned). An older row matters to
        the node only once it reads it (a range's latest for a write concern or a catch-up, the
        row at a size an outbox signs again or a follower holds as evidence), and every read
        goes through :meth:`_all`, which checks each row it returns as this does: so none is
        trusted unchecked, and the open does not parse every note kept (a witness keeps one per
        checkpoint it cosigned). ``vledger verify`` checks every row."""
        try:
            with self._lock:
                pairs = self._conn.execute("SELECT DISTINCT ledger, kind FROM checkpoints").fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot read the checkpoints: {e}") from e
        for ledger, kind in pairs:
            self.latest(ledger, kind)


def _unsynced(conn: sqlite3.Connection, write: Callable[[], _T]) -> _T:
    """``write()`` through the store's write connection (the caller holds its writer lock), its
    commit without an fsync (NORMAL: the WAL is fsynced by the next group commit), then FULL
    again before the lock is let go, so that no group commit is made without its fsync. If FULL
    cannot be set again the connection is closed: the group commits then fail, none is
    acknowledged undurable. Raises sqlite3.Error."""
    try:
        conn.execute("PRAGMA synchronous=NORMAL")
        return write()
    finally:
        try:
            conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error:
            conn.close()
            raise
