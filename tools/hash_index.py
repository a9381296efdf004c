"""`vledger verify`'s check of a store's hash index against its records, in flat memory.

The index (node/storefile.py: ``hash_rows``, runs listed in ``hash_runs``, each ledger's
``hashes_filled`` mark; ``record_hashes`` in a store of the layout before the runs) must hold,
for every record below its ledger's mark, exactly one row (its hash's first 8 bytes, ledger,
height), and no other row: a missing or changed row makes a lookup by hash answer nothing, an
extra one is a row nothing should hold. Rows are sorted by hash, records by height, so the two
are compared as multisets: each side sums a keyed mix of every (prefix, height) of a ledger
(:class:`IndexSum`), the records' side as they verify (the chunk workers' sums joined), the
index's in one read transaction (:func:`scan_index`, which also reads the marks the records'
side counts to: rows and marks a node writes together, so a running node's store is seen as
of one moment). The key is drawn for each run, so rows cannot be chosen to cancel out; two
different multisets agree with odds of about 2**-64. Only a ledger whose sums differ is read
again, sorted by height, to name its first wrong height (:func:`first_difference`).

Each ledger's mix works on packed integers, a 128-bit lane per row: Python does a few
operations a page, not a few a row (the index's side costs what reading its rows costs).
"""

from __future__ import annotations

import os
import sqlite3
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..node.errors import IndexMismatchError
from ..node.json_values import parse_json
from ..node.storefile import PREFIX_END, StoreRow, escaped_text, filled_marks, sqlite_type

_LANE = 128  # bits a row takes in a packed integer: its 64-bit value and room for a product
_M64 = (1 << 64) - 1
_LANE_MASK = b"\xff" * 8 + bytes(8)  # one lane's low 64 bits, as little-endian bytes
# Odd multipliers below 2**60 (a multiply-xorshift mix, as splitmix64's finalizer, each step a
# bijection of 64-bit values): below 2**60 a product costs Python two digits a lane, not three.
_C1, _C2 = 0x0B58476D1CE4E5B9, 0x04D049BB133111EB
KEY_BYTES = 16
_PAGE = 4096  # index rows summed at a time (a range of prefixes)


def new_key() -> bytes:
    """A key for one run of `vledger verify`, shared by its workers."""
    return os.urandom(KEY_BYTES)


class IndexSum:
    """The keyed sum over a multiset of (prefix, height) of one ledger, and its size.

    Each row becomes the 64-bit ``mix((p + h * k1 mod 2**64) XOR k2)``, ``p`` its prefix read as
    a native 64-bit integer, ``mix`` a multiply-xorshift bijection, and the sum is of those,
    mod 2**64. Rows are added a page at a time as lanes of one integer; the lanes are summed
    as they are (each stays far below 2**128) and folded only when :attr:`total` is read.
    """

    def __init__(self, key: bytes) -> None:
        self._k1 = int.from_bytes(key[:8], "little") >> 4 | 1  # below 2**60, as the mix's multipliers
        self._k2 = int.from_bytes(key[8:16], "little")
        self.count = 0
        self.lanes = 0
        self.damaged = False  # a row that cannot be a row of the index (a wrong type or size)
        self._masks: dict[int, tuple[int, int]] = {}

    @property
    def total(self) -> int:
        return (self.lanes % ((1 << _LANE) - 1)) & _M64

    def add_sum(self, count: int, lanes: int) -> None:
        """Another sum's (a worker's) rows, with the same key."""
        self.count += count
        self.lanes += lanes

    def add_hashes(self, hashes: Sequence[bytes], heights: Sequence[int]) -> None:
        """Records: their 32-byte hash columns (checked against the records) and heights."""
        words = array("Q")
        words.frombytes(b"".join(hashes))
        self._add(words[0::4], heights)

    def add_joined(self, prefixes: Any, heights: Any, count: int) -> None:
        """``count`` index rows as SQLite joined them: their prefixes, one blob, and their heights,
        a JSON list. A prefix that is not 8 bytes or a height that is not a 64-bit unsigned
        integer (no record's row) marks the sum damaged."""
        try:
            words = array("Q")
            words.frombytes(prefixes)
            values = array("Q", parse_json(heights))
            if len(words) != count or len(values) != count or len(prefixes) != 8 * count:
                raise ValueError("a prefix of another size")
            self._add(words, values)
        except (TypeError, ValueError, OverflowError):  # json's errors are ValueErrors
            self.damaged = True
            self.count += count

    def _add(self, prefixes: Sequence[int], heights: Sequence[int]) -> None:
        n = len(heights)
        if n == 0:
            return
        mask, key = self._patterns(n)
        slots = array("Q", bytes(16 * n))
        slots[0::2] = array("Q", prefixes)
        slots[1::2] = array("Q", heights)
        x = int.from_bytes(slots, "little")  # lane i: prefix i, then height i in its high 64 bits
        # Every lane stays below 2**128 before each mask (products of 60-bit factors): no carry
        # crosses into the next lane. Multipliers of two 30-bit digits cost half of 64-bit ones.
        x = (((x & mask) + ((x >> 64) & mask) * self._k1) & mask) ^ key
        x = (x * _C1) & mask
        x ^= (x >> 29) & mask
        x = (x * _C2) & mask
        x ^= (x >> 32) & mask
        self.lanes += x
        self.count += n

    def _patterns(self, n: int) -> tuple[int, int]:
        """The mask of each lane's low 64 bits, and k2 in each lane, for ``n`` lanes."""
        patterns = self._masks.get(n)
        if patterns is None:
            if len(self._masks) > 8:  # pages of many sizes (the index read by ranges): keep a few
                self._masks.clear()
            lane = self._k2.to_bytes(8, "little") + bytes(8)
            patterns = self._masks[n] = (
                int.from_bytes(_LANE_MASK * n, "little"),
                int.from_bytes(lane * n, "little"),
            )
        return patterns


def add_record_page(index: IndexSum, page: Sequence[tuple[Any, ...]], mark: int) -> None:
    """Rows of ``records`` (StoreRow's columns, verified, in height order) below ``mark``."""
    if not page or page[0][0] >= mark:
        return
    rows = page if page[-1][0] < mark else [row for row in page if row[0] < mark]
    index.add_hashes([row[1] for row in rows], [row[0] for row in rows])


@dataclass(slots=True)
class IndexScan:
    """The index as one read transaction saw it: each ledger's mark and the sum of its rows,
    and what belongs to no ledger's rows: rows of runs ``hash_runs`` does not list."""

    layout: str  # "runs", "filled" (record_hashes) or "none" (an index on the hash column: nothing to check)
    marks: dict[str, int] = field(default_factory=dict)
    sums: dict[str, IndexSum] = field(default_factory=dict)
    unlisted: list[int] = field(default_factory=list)


def index_layout(conn: sqlite3.Connection) -> str:
    tables = {
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('record_hashes', 'hash_runs')"
        )
    }
    return "filled" if "record_hashes" in tables else "runs" if "hash_runs" in tables else "none"


def scan_index(conn: sqlite3.Connection, key: bytes, on_marks: Callable[[str, dict[str, int]], None]) -> IndexScan:
    """Read the marks, then sum every index row by ledger, in one read transaction of ``conn``
    (read-only). ``on_marks(layout, marks)`` is called once the marks are read, before the rows."""
    conn.execute("BEGIN")
    try:
        layout = index_layout(conn)
        scan = IndexScan(layout)
        if layout != "none":
            scan.marks = filled_marks(conn)
        on_marks(layout, scan.marks)
        if layout == "runs":
            listed = [run for (run,) in conn.execute("SELECT run FROM hash_runs ORDER BY run")]
            scan.unlisted = [run for run in _runs_with_rows(conn) if run not in set(listed)]
            for run in listed:
                _sum_run(conn, scan, key, "hash_rows", "run = ? AND ", (run,))
        elif layout == "filled":
            _sum_run(conn, scan, key, "record_hashes", "", ())
        return scan
    finally:
        conn.execute("COMMIT")


def _runs_with_rows(conn: sqlite3.Connection) -> Iterator[int]:
    """Each run id that has rows in hash_rows: one seek a run."""
    run = -(2**63)
    while (row := conn.execute("SELECT MIN(run) FROM hash_rows WHERE run > ?", (run,)).fetchone())[0] is not None:
        run = row[0]
        yield run


def _sum_run(
    conn: sqlite3.Connection, scan: IndexScan, key: bytes, table: str, run: str, params: tuple[int, ...]
) -> None:
    """Add one run's rows to ``scan.sums`` (``table`` and ``run``, a condition ending in AND,
    are this module's constants). With one ledger marked, the usual case, its rows are read
    without a GROUP BY (which sorts each range), then any other ledger's, if the count says
    there are some."""
    rows = int(conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {run}1", params).fetchone()[0])
    where: tuple[str, tuple[str, ...]] = (" GROUP BY ledger", ())
    if len(scan.marks) == 1:
        (ledger,) = scan.marks
        rows -= _sum_ranges(
            conn,
            scan,
            key,
            rows,
            f"SELECT ?, {_JOINED} FROM {table} WHERE {run}",
            (ledger, *params),
            " AND ledger = ?",
            (ledger,),
        )
        where = (" AND ledger != ? GROUP BY ledger", (ledger,))
    if rows > 0:
        _sum_ranges(conn, scan, key, rows, f"SELECT ledger, {_JOINED} FROM {table} WHERE {run}", params, *where)


# A range's rows of one ledger: how many, their prefixes joined into one blob, their heights a JSON list.
# A prefix of another type than BLOB is left out of the join (its bytes could be a BLOB's, and
# the node's lookups, by a BLOB, never find it): the joined prefixes are short, the sum damaged.
_JOINED = (
    "COUNT(*), CAST(group_concat(iif(typeof(prefix) = 'blob', prefix, NULL), '') AS BLOB), "
    "'[' || group_concat(height) || ']'"
)


def _sum_ranges(
    conn: sqlite3.Connection,
    scan: IndexScan,
    key: bytes,
    rows: int,
    select: str,
    params: tuple[Any, ...],
    tail: str,
    tail_params: tuple[Any, ...],
) -> int:
    """Run ``select`` (its WHERE left open after AND) over ranges of prefixes of about _PAGE
    rows each (of ``rows``, prefixes being uniform), ``tail`` closing it; add each (ledger,
    count, prefixes, heights) it gives to ``scan.sums``. Returns the rows added. SQLite joins
    the values, so Python handles no row. The first range has no lower bound and the last no
    upper one: a prefix of another type (which sorts before every blob) is read too, and
    fails its ledger's sum."""
    step = -(-PREFIX_END // max(1, rows // _PAGE))
    added = 0
    for low in range(0, PREFIX_END, step):
        high = low + step
        bounds = ("prefix >= ?" if low else "1") + (" AND prefix < ?" if high < PREFIX_END else "")
        values = [v.to_bytes(8, "big") for v, on in ((low, low > 0), (high, high < PREFIX_END)) if on]
        for ledger, count, prefixes, heights in conn.execute(select + bounds + tail, (*params, *values, *tail_params)):
            if not count:
                continue  # an aggregate without GROUP BY gives a row for no rows
            added += count
            index = scan.sums.get(ledger)
            if index is None:
                index = scan.sums[ledger] = IndexSum(key)
            index.add_joined(prefixes, heights, count)
    return added


def first_difference(
    conn: sqlite3.Connection, layout: str, ledger: str, mark: int, records: Iterator[StoreRow], size: int
) -> IndexMismatchError:
    """Where ``ledger``'s index rows and its records below ``mark`` first differ: its rows read
    sorted by height (SQLite's sort, in bounded memory) beside ``records`` (from height 0, their
    hash columns checked), the lowest height that lacks its row, has another or has two; else a
    row past the records below the mark. Called only for a ledger whose sums differ."""
    if layout == "runs":
        query = (
            "SELECT height, prefix FROM hash_rows WHERE run IN (SELECT run FROM hash_runs) AND ledger = ? "
            "ORDER BY height, prefix"
        )
    else:
        query = "SELECT height, prefix FROM record_hashes WHERE ledger = ? ORDER BY height, prefix"
    # A prefix tampered into TEXT that is not UTF-8 is read as text all the same (escaped), to be
    # named as the row of another type it is, rather than fail the read.
    factory = conn.text_factory
    conn.text_factory = escaped_text
    try:
        return _first_difference(conn.execute(query, (ledger,)), ledger, mark, records, size)
    finally:
        conn.text_factory = factory


def _first_difference(
    rows: sqlite3.Cursor, ledger: str, mark: int, records: Iterator[StoreRow], size: int
) -> IndexMismatchError:
    row = rows.fetchone()
    below = min(mark, size)
    for record in records:
        height = record.height
        if height >= below:
            break
        if row is not None and not (isinstance(row[0], int) and row[0] >= height):
            return _error(ledger, height, f"the hash index holds a row for height {row[0]!r}, which no record has")
        found = []
        while row is not None and row[0] == height:
            found.append(row[1])
            row = rows.fetchone()
        want = record.hash[:8]
        if not found:
            return _error(ledger, height, f"the hash index has no row for record {height} (hash {want.hex()}…)")
        other = next((p for p in found if p != want), None)
        if other is not None:
            kind = sqlite_type(other)
            shown = other.hex() if isinstance(other, bytes) else f"a value stored as {kind}, not as a BLOB"
            return _error(
                ledger, height, f"the hash index's row for record {height} holds {shown}, its hash starts {want.hex()}"
            )
        if len(found) > 1:
            return _error(ledger, height, f"the hash index holds record {height}'s hash {len(found)} times")
    last = max(below - 1, 0)
    if row is not None:
        return _error(
            ledger, last, f"the hash index holds a row for height {row[0]!r}, past the {below} records it indexes"
        )
    return _error(ledger, last, "the hash index does not match the records")  # the sums differed: nothing else


def _error(ledger: str, height: int, message: str) -> IndexMismatchError:
    return IndexMismatchError(message, ledger=ledger, height=height)
