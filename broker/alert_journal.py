"""A node's own record of the alerts it raised, in its data directory (PROTOCOL 10.5).

Redis holds every alert a reader sees, and Redis can lose them: a ``FLUSHALL``, a restart
without its append-only file, or an insider with the node's Redis password deleting its keys
(outsider o9: open ``bad_signature`` alerts gone after a wipe, nothing left of the episode).
So each node process also keeps, in ``alerts.sqlite3`` beside its store (0600), the alerts it
holds open and a bounded history of each raise and resolve, and logs each as one line: what
Redis forgets, the node puts back (:meth:`ReplicationLedger.reassert`), and what an insider
erases there, the host's log still says. SQLite, not a file of lines: an ingest node and its
outbox process raise alerts under one name, so two processes write it.

Written only when an alert is raised or resolved, never on a record's path.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, Self

log = logging.getLogger(__name__)

ALERT_JOURNAL = "alerts.sqlite3"  # in the node's data directory, beside its store
HISTORY_ROWS = 10_000  # the raises and resolves kept; older ones are in the host's log only
# An alert put back again within this long of its last noted put back is not noted (nor logged at
# WARNING) again: an insider deleting it in a loop would write a row and a line every pass,
# evicting the history (review16 8); one a minute still says it keeps being lost.
REASSERT_NOTE_MS = 60_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS open_alerts (key TEXT PRIMARY KEY, alert TEXT NOT NULL, raised_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS history (seq INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL,
    event TEXT NOT NULL, key TEXT NOT NULL, alert TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS operator_only (key TEXT PRIMARY KEY);
"""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _height(text: str) -> int:
    """The height of an alert as the journal holds it; -1 (closed by any resolve up to a height,
    as Redis's function closes it) for one that has none."""
    try:
        alert = json.loads(text)
        return int(alert["height"]) if isinstance(alert, dict) else -1
    except (ValueError, KeyError, TypeError):
        return -1


def _at_ms(text: str) -> str | None:
    """The ``at_ms`` of an alert as the journal holds it (a string, as Redis's fields are), or
    None where there is none."""
    try:
        alert = json.loads(text)
    except ValueError:
        return None
    found = alert.get("at_ms") if isinstance(alert, dict) else None
    return found if isinstance(found, str) else None


class _Damaged(Exception):
    def __init__(self, inode: int, error: sqlite3.DatabaseError) -> None:
        super().__init__(str(error))
        self.inode = inode


def _connect(path: Path) -> sqlite3.Connection:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        inode = os.fstat(fd).st_ino
    finally:
        os.close(fd)
    os.chmod(path, 0o600)  # a file made before by another umask
    db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
    except sqlite3.DatabaseError as e:
        db.close()
        # Only a file that is no journal is moved aside: one locked a moment too long by the
        # node's other process (SQLITE_BUSY) is sound, and that process goes on writing it.
        if e.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
            raise
        raise _Damaged(inode, e) from e
    return db


@contextlib.contextmanager
def _opening(path: Path) -> Iterator[None]:
    """Held (an flock on ``<journal>.lock``) while a process opens the journal, moving a damaged
    one aside: the node and its outbox process open it at the same start, and one renamed the
    other's fresh WAL aside between its own renames (review17 6). Released when the fd closes."""
    fd = os.open(path.with_name(f"{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _move_aside(path: Path, failed: int) -> Path | None:
    """Rename the damaged journal ``path`` (and its WAL) to ``<name>.damaged-<UTC time>``, unless
    the file there is no longer the one that failed (inode ``failed``), or none is: the node's
    other process (its outbox) moved it first and began a fresh one, which is not to be moved
    again. Returns where it went, None then. The caller holds :func:`_opening`."""
    try:
        if os.stat(path).st_ino != failed:
            return None
    except FileNotFoundError:
        return None
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    if aside.exists():  # two journals damaged within a second: keep both
        aside = aside.with_name(f"{aside.name}-{failed}")
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, aside)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    return aside


class AlertJournal:
    """The open alerts of one raiser (``raiser``: the node whose Redis keys hold them) and the
    last HISTORY_ROWS raises and resolves, in the SQLite file ``path`` (made 0600)."""

    def __init__(self, path: Path, raiser: str) -> None:
        self.path = path
        self.raiser = raiser
        # What this run (this object) raised: an operator's resolution of an alert some earlier
        # run raised is final, one of this run's only for the kinds an operator resolves.
        self.started_ms = _now_ms()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one connection, used from every thread that raises
        self._put_back_noted: dict[str, int] = {}  # key -> when its last put back was noted (ms)
        with _opening(path):
            try:
                self._db = _connect(path)
            except _Damaged as e:
                # Not the node's store: a journal that does not open must not stop the node, its
                # outbox or `vledger repair` (review16 7). Kept aside for whoever looks into it;
                # what it held open, Redis still shows, and the host's log keeps every line.
                aside = _move_aside(path, e.inode)
                if aside is not None:
                    log.error("alert journal %s does not open (%s): moved to %s, a fresh one started", path, e, aside)
                self._db = _connect(path)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def changes(self) -> int:
        """How many rows this journal's writes changed so far: a call that moved it wrote; a
        read, or a resolve that found nothing open, did not (ReplicationLedger._journaled)."""
        with self._lock:
            return self._db.total_changes

    def open_alerts(self) -> dict[str, tuple[dict[str, Any], int]]:
        """Every open alert: key -> (its fields and stream ``id``, when this node raised it, ms)."""
        with self._lock:
            rows = self._db.execute("SELECT key, alert, raised_ms FROM open_alerts").fetchall()
        found: dict[str, tuple[dict[str, Any], int]] = {}
        for key, text, raised_ms in rows:
            with contextlib.suppress(ValueError):
                alert = json.loads(text)
                if isinstance(alert, dict):
                    found[key] = (alert, raised_ms)
        return found

    def operator_only(self) -> set[str]:
        """The keys of the open alerts that only an operator resolves, whatever their kind (raised
        so: Alert.operator_only), in this run or an earlier one."""
        with self._lock:
            return {key for (key,) in self._db.execute("SELECT key FROM operator_only").fetchall()}

    def open_alert(self, key: str) -> dict[str, Any] | None:
        """The fields (and stream ``id``) of the alert open under ``key``, None when none is."""
        with self._lock:
            return _open_row(self._db, key)

    def history(self) -> list[tuple[int, str, str, dict[str, Any]]]:
        """The raises and resolves kept, oldest first: (at_ms, event, key, alert)."""
        with self._lock:
            rows = self._db.execute("SELECT at_ms, event, key, alert FROM history ORDER BY seq").fetchall()
        return [(at_ms, event, key, json.loads(text)) for at_ms, event, key, text in rows]

    def raised(
        self, key: str, alert: dict[str, Any], event: str = "raised", *, operator_only: bool = False
    ) -> dict[str, Any]:
        """``alert`` (its fields, and its stream ``id`` or "" before Redis gave one) is open
        under ``key``; ``event`` says how: ``raised``, or ``reopened`` (the verifier's, of an
        alert deleted without an operator's resolution, kept as it was). Raised while an alert
        is open under ``key`` already, it keeps that one's ``at_ms``: its raiser found the cause
        again (the verifier, after Redis lost the alert), and when the cause was first seen is
        what an operator needs (PROTOCOL 10.5; a wipe gave bad_checksum a new time, outsider
        o11). ``operator_only``: only an operator resolves it, whatever its kind (Alert.operator_only),
        until it is resolved. Returns ``alert`` as kept."""
        now = _now_ms()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT alert FROM open_alerts WHERE key = ?", (key,)).fetchone()
            first = _at_ms(row[0]) if row is not None and event == "raised" else None
            if first is not None and "at_ms" in alert:
                alert = {**alert, "at_ms": first}
            text = json.dumps(alert, sort_keys=True)
            self._db.execute(
                "INSERT INTO open_alerts (key, alert, raised_ms) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE"
                " SET alert = excluded.alert, raised_ms = CASE WHEN ? THEN excluded.raised_ms ELSE raised_ms END",
                (key, text, now, event == "raised"),
            )
            if operator_only:
                self._db.execute("INSERT OR IGNORE INTO operator_only (key) VALUES (?)", (key,))
            self._note(now, event, key, text)
        log.warning("alert %s by %s: %s %s", event, self.raiser, key, text)
        return alert

    def put_back(self, key: str, alert: dict[str, Any], put: Callable[[], dict[str, Any]]) -> bool:
        """If ``key``'s open alert is still ``alert``, call ``put`` (which puts it into Redis and
        returns it as Redis holds it now, its new stream id included) and keep what it returns;
        returns whether it did. The journal stays locked meanwhile, against this process's
        threads and the node's other process: a resolve that began after ``alert`` was read
        either closed it before (nothing is put back) or closes it after (it is gone from Redis
        too), never in between, where Redis would keep an alert the journal no longer holds."""
        now = _now_ms()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT alert FROM open_alerts WHERE key = ?", (key,)).fetchone()
            if row is None or row[0] != json.dumps(alert, sort_keys=True):
                return False
            text = json.dumps(put(), sort_keys=True)
            self._db.execute("UPDATE open_alerts SET alert = ? WHERE key = ?", (text, key))
            noted = now - self._put_back_noted.get(key, now - REASSERT_NOTE_MS) >= REASSERT_NOTE_MS
            if noted:
                self._put_back_noted[key] = now
                self._note(now, "reasserted", key, text)
        if noted:
            log.warning("alert reasserted by %s: %s %s", self.raiser, key, text)
        else:
            log.info("alert reasserted by %s again within %d s: %s", self.raiser, REASSERT_NOTE_MS // 1000, key)
        return True

    def recorded(self, key: str, alert: dict[str, Any]) -> None:
        """Redis holds ``key``'s open alert as ``alert`` (with the stream id it gave): what
        :meth:`ReplicationLedger.reassert` compares and puts back. Neither noted nor logged:
        the raise was."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("UPDATE open_alerts SET alert = ? WHERE key = ?", (json.dumps(alert, sort_keys=True), key))

    def resolved(self, keys: Iterable[str], by: str = "raiser", upto: int | None = None) -> int:
        """These keys' alerts are no longer open: resolved by this raiser, or (``by``
        ``operator``) by an operator's ``vledger alerts resolve``; with ``upto``, only those
        raised at a height up to it (ReplicationLedger.resolve_up_to's rule). Returns how many
        were open."""
        names = list(keys)
        with self._lock:  # most calls find none open (a poll that finds the cause gone again): no write then
            names = [
                key for key in names if self._db.execute("SELECT 1 FROM open_alerts WHERE key = ?", (key,)).fetchone()
            ]
        if not names:
            return 0
        closed = 0
        now = _now_ms()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for key in names:
                row = self._db.execute("SELECT alert FROM open_alerts WHERE key = ?", (key,)).fetchone()
                if row is None or (upto is not None and _height(row[0]) > upto):
                    continue
                self._db.execute("DELETE FROM open_alerts WHERE key = ?", (key,))
                self._db.execute("DELETE FROM operator_only WHERE key = ?", (key,))
                log.warning("alert resolved by %s (%s's): %s", by, self.raiser, key)
                self._note(now, f"resolved by {by}", key, row[0])
                closed += 1
        return closed

    def _note(self, now: int, event: str, key: str, text: str) -> None:
        seq = self._db.execute(
            "INSERT INTO history (at_ms, event, key, alert) VALUES (?, ?, ?, ?)", (now, event, key, text)
        ).lastrowid
        if seq is not None and seq % 100 == 0:  # trimmed now and then, not at every note
            self._db.execute("DELETE FROM history WHERE seq <= ?", (seq - HISTORY_ROWS,))


def _open_row(db: sqlite3.Connection, key: str) -> dict[str, Any] | None:
    """The alert ``db``'s journal holds open under ``key`` (None: none, or a row that is no object)."""
    row = db.execute("SELECT alert FROM open_alerts WHERE key = ?", (key,)).fetchone()
    with contextlib.suppress(ValueError):
        alert = json.loads(row[0]) if row is not None else None
        return alert if isinstance(alert, dict) else None
    return None


def journal_open_alert(path: Path, key: str) -> dict[str, Any] | Literal[False] | None:
    """The alert the journal at ``path`` holds open under ``key``, read without creating or
    changing the journal (its node is stopped: `vledger repair`); False when the journal reads
    and holds none open there (its node resolved it: its last start opened the store), and
    None when there is no journal or it does not open, so that Redis's open alerts
    are what is left to ask (review18 1: a sound journal's "resolved" was taken for "unknown")."""
    if not path.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            alert = _open_row(db, key)
    except sqlite3.DatabaseError:
        return None
    return False if alert is None else alert


def carry_journal(old: Path, new: Path) -> bool:
    """Copy the alert journal of the store directory ``old`` into ``new`` (a repair's rebuilt
    store, which then takes ``old``'s place): the node's open alerts outlive its store's file.
    Returns whether ``old`` had one that opened: a damaged one is left where it is, with a
    warning (the node starts a fresh journal), not the end of a repair meant for a damaged disk."""
    source = old / ALERT_JOURNAL
    if not source.is_file():
        return False
    target = new / ALERT_JOURNAL
    os.close(os.open(target, os.O_RDWR | os.O_CREAT, 0o600))
    try:
        with contextlib.closing(sqlite3.connect(source)) as src, contextlib.closing(sqlite3.connect(target)) as dst:
            src.backup(dst)  # what a WAL beside it holds too
    except sqlite3.DatabaseError as e:
        log.warning("alert journal %s does not open (%s): not carried, the node starts a fresh one", source, e)
        target.unlink()
        return False
    return True
