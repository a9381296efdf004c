"""A ledger whose records were deleted from a follower's store file behind its back: found, and
its rows cut back to the longest run of records from the genesis that the file still holds.

A follower's copy (a replica's, an observer's) only ever holds records a checkpoint of the home
covered, so records gone from it (its last ones, or a hole in the middle, deleted with sqlite
while the node ran or was stopped) are fetched again from the home or the other copies and
stored under a checkpoint like any it lacks. What stands in the way is what the store kept of
them: tree rows and a right edge past the records (the store does not open: storefile's checks
find the cut), hash index rows of heights now empty (a merge would count them twice), a filled
mark above the head. :func:`cut_back` removes those, and the records above a hole (a chain must
run from its genesis; they come back with the rest, each verified again), inside the caller's
transaction; the caller then checks what is left as it checks a store it opens (every tree row
against the records, the records past the edge as a chain). Nothing here decides whether a cut
may be healed: a home's store is never cut back (its records are the ledger), only a follower's.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass

from . import tree
from .errors import ProofError
from .storefile import PUT_EDGE, STORED_LEVEL, StoredTree, hash_runs


@dataclass(frozen=True, slots=True)
class Cut:
    """What a ledger's file lost: ``kept`` records from the genesis on are whole, and the store had
    held (or its tree had covered) ``held``. ``dropped``: records above a hole removed with the cut."""

    ledger: str
    kept: int
    held: int
    dropped: int

    def describe(self) -> str:
        above = f", and {self.dropped} records above a hole were removed" if self.dropped else ""
        return (
            f"its store's file lost records of ledger {self.ledger!r} behind its back: it held {self.held}, "
            f"its first {self.kept} are whole{above}; the rest is fetched again and stored under the home's checkpoints"
        )


def find_cut(conn: sqlite3.Connection, ledger: str, held: int | None = None) -> Cut | None:
    """The cut of ``ledger`` in the file ``conn`` reads, or None when its records run whole from the
    genesis to as far as the store held (``held``: the size the running store placed last) and its
    tree rows and edge reach no further. Heights that are no integers are not looked at: the
    store's checks name those."""
    top, count = conn.execute(
        "SELECT MAX(height), COUNT(*) FROM records WHERE ledger = ? AND typeof(height) = 'integer'", (ledger,)
    ).fetchone()
    size = 0 if top is None else int(top) + 1
    reach = max(size, held or 0, _tree_reach(conn, ledger))
    if count == size:
        return None if size == reach else Cut(ledger, size, reach, 0)
    kept = _first_gap(conn, ledger)
    return Cut(ledger, kept, reach, count - kept)


def _tree_reach(conn: sqlite3.Connection, ledger: str) -> int:
    """How many leaves the ledger's stored tree rows and edge cover (0: none)."""
    reach = 0
    row = conn.execute("SELECT frontier FROM tree_edge WHERE ledger = ?", (ledger,)).fetchone()
    if row is not None and isinstance(row[0], bytes):
        with contextlib.suppress(ProofError):  # a damaged edge: the store's check names it
            reach = tree.Frontier.decode(row[0]).size
    level = STORED_LEVEL
    while True:  # one seek a level of the primary key (ledger, level, idx)
        (top,) = conn.execute("SELECT MAX(idx) FROM tree WHERE ledger = ? AND level = ?", (ledger, level)).fetchone()
        if top is None or type(top) is not int:
            return reach
        reach = max(reach, (top + 1) << level)
        level += 1


def _first_gap(conn: sqlite3.Connection, ledger: str) -> int:
    """The lowest height ``ledger`` lacks (its records' heights read in order, no data)."""
    expected = 0
    for (height,) in conn.execute(
        "SELECT height FROM records WHERE ledger = ? AND typeof(height) = 'integer' ORDER BY height", (ledger,)
    ):
        if height != expected:
            break
        expected += 1
    return expected


def cut_back(conn: sqlite3.Connection, cut: Cut, page_size: int) -> None:
    """Remove what ``conn``'s file holds of ``cut.ledger`` past its first ``cut.kept`` records, inside
    the caller's transaction: the records above a hole, the tree rows that cover a leaf past them,
    the edge (written again at ``cut.kept``, from the tree rows and records left), the hash index's
    rows past them and its filled mark. Raises TreeMismatchError when the rows left cannot give
    the edge (a tree row missing below the cut: a store damaged, not only cut), sqlite3.Error."""
    ledger, kept = cut.ledger, cut.kept
    conn.execute("DELETE FROM records WHERE ledger = ? AND height >= ?", (ledger, kept))
    conn.execute("DELETE FROM tree WHERE ledger = ? AND ((idx + 1) << level) > ?", (ledger, kept))
    conn.execute("DELETE FROM tree_edge WHERE ledger = ?", (ledger,))
    if kept:
        edge = tree.Frontier.at(kept, StoredTree(conn, ledger, kept, page_size).hash_at)
        conn.execute(PUT_EDGE, (ledger, edge.encode()))
    drop_hash_rows(conn, ledger, kept)


def drop_hash_rows(conn: sqlite3.Connection, ledger: str, start: int) -> None:
    """Remove the hash index's rows of ``ledger`` from height ``start`` on, and bring its filled mark
    down to ``start`` (none at 0), inside the caller's transaction, keeping ``hash_runs`` true to
    what each run holds (storefile.runs_disagree): a plain run lists fewer rows; a merge's target
    too, and its sources as many fewer between them, since the rows it holds came from them.
    One scan of the index (a rare repair, not a commit's work). Raises sqlite3.Error."""
    gone = conn.execute(
        "SELECT run, COUNT(*) FROM hash_rows WHERE ledger = ? AND height >= ? GROUP BY run", (ledger, start)
    ).fetchall()
    if gone:
        conn.execute("DELETE FROM hash_rows WHERE ledger = ? AND height >= ?", (ledger, start))
        runs = hash_runs(conn)
        for run, count in gone:
            conn.execute("UPDATE hash_runs SET rows = rows - ? WHERE run = ?", (count, run))
            if any(r.run == run and r.cursor is not None for r in runs):
                left = count
                for source in (r for r in runs if r.into_run == run):
                    take = min(left, source.rows)
                    conn.execute("UPDATE hash_runs SET rows = rows - ? WHERE run = ?", (take, source.run))
                    left -= take
    if start:
        conn.execute("UPDATE hashes_filled SET size = ? WHERE ledger = ? AND size > ?", (start, ledger, start))
    else:
        conn.execute("DELETE FROM hashes_filled WHERE ledger = ?", (ledger,))
