"""`vledger verify` checks a store's hash index against its records (tools/hash_index.py).

A row of ``hash_rows`` changed, deleted or added behind the store's back (what makes a lookup
by hash answer nothing) fails the ledger [index_mismatch] at the first height whose row is
wrong, sequentially, in chunks and through the command line; a row no ledger's records explain
fails the store.
"""

from __future__ import annotations

import contextlib
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from vledger.config.settings import Limits
from vledger.node.errors import VledgerError
from vledger.node.ledger import LedgerRules
from vledger.node.record import ZERO_LINK, Content, Entry, Record
from vledger.node.store import ChainStore
from vledger.node.storefile import DB_NAME
from vledger.tools import cli
from vledger.tools.hash_index import IndexSum, new_key
from vledger.tools.verification import verify_store

LIMITS = Limits()


def _chain(ledger: str, count: int) -> list[Record]:
    rules = LedgerRules(kinds=("note",), difficulty=0)
    records = [Entry.prepare(rules.genesis_content(ledger, "admin", "g", 1), 0, LIMITS).place(0, ZERO_LINK, 2, "n-1")]
    for i in range(1, count):
        entry = Entry.prepare(Content(ledger, "note", {"n": i}, f"a-{i % 3}", f"r{i}", 3 + i), 0, LIMITS)
        head = records[-1]
        records.append(entry.place(head.height + 1, head.link, head.accepted + 1, "n-1"))
    return records


CHAINS = {"ledger-a": _chain("ledger-a", 70), "ledger-b": _chain("ledger-b", 9)}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Two ledgers indexed in runs of 4 (some merged, one merge under way), a few records above
    ledger-a's mark."""
    directory = tmp_path / "store"
    with ChainStore(directory, origin="n-1", hash_fill_at=4, hash_merge_step=3) as chain_store:
        for records in CHAINS.values():
            for start in range(0, len(records), 3):
                chain_store.append_records(records[start : start + 3])
    return directory


def _sql(directory: Path, *statements: str) -> None:
    with contextlib.closing(sqlite3.connect(directory / DB_NAME)) as db:
        for statement in statements:
            db.execute(statement)
        db.commit()


def _verdicts(directory: Path, pool: ThreadPoolExecutor | None = None) -> list[tuple[str, str | None, int | None]]:
    result = verify_store(directory, None, LIMITS, workers=2, chunk=8 if pool else 65_536, executor=pool)
    verdicts = [(r.ledger, r.error.code if r.error else None, r.error_height) for r in result.reports]
    if result.error is not None:
        verdicts.append(("", result.error.code, None))
    return verdicts


def test_an_intact_index_verifies_and_is_really_read(store: Path) -> None:
    with contextlib.closing(sqlite3.connect(store / DB_NAME)) as db:
        marks = dict(db.execute("SELECT ledger, size FROM hashes_filled"))
        runs = db.execute("SELECT COUNT(*), SUM(cursor IS NOT NULL) FROM hash_runs").fetchone()
    assert marks["ledger-a"] > 5 and sum(marks.values()) < 70 + 9  # some records above a mark
    assert runs[0] > 2
    with ThreadPoolExecutor(2) as pool:
        for executor in (None, pool):
            assert _verdicts(store, executor) == [("ledger-a", None, None), ("ledger-b", None, None)]


# (statement, then each ledger and height it fails at: "" for the store, None for the height below
# the mark). Height 5 of ledger-a is below its mark.
_ROW = "ledger = 'ledger-a' AND height = 5"
TAMPERED: dict[str, tuple[Any, ...]] = {
    "a changed prefix": (f"UPDATE hash_rows SET prefix = x'0102030405060708' WHERE {_ROW}", ("ledger-a", 5)),
    "a changed height": (f"UPDATE hash_rows SET height = 1000 WHERE {_ROW}", ("ledger-a", 5)),
    "a row moved to another record": (f"UPDATE hash_rows SET height = 6 WHERE {_ROW}", ("ledger-a", 5)),
    "a deleted row": (f"DELETE FROM hash_rows WHERE {_ROW}", ("ledger-a", 5)),
    "a prefix of another type": (f"UPDATE hash_rows SET prefix = 'text' WHERE {_ROW}", ("ledger-a", 5)),
    "a prefix of 7 bytes": (f"UPDATE hash_rows SET prefix = x'01020304050607' WHERE {_ROW}", ("ledger-a", 5)),
    "a row twice": (
        "INSERT INTO hash_rows SELECT (SELECT MAX(run) FROM hash_runs), prefix, ledger, height "
        f"FROM hash_rows WHERE {_ROW}",
        ("ledger-a", 5),
    ),
    "a row past the mark": (
        "INSERT INTO hash_rows SELECT run, x'00', ledger, 69 FROM hash_rows WHERE ledger = 'ledger-a' LIMIT 1",
        ("ledger-a", None),
    ),
    "the other ledger's row": (
        "UPDATE hash_rows SET ledger = 'ledger-b' WHERE ledger = 'ledger-a' AND height = 2",
        ("ledger-a", 2),
        ("ledger-b", 2),
    ),
    "a row of a ledger with no records": (
        "INSERT INTO hash_rows SELECT run, prefix, 'ghost', height FROM hash_rows LIMIT 1",
        ("", None),
    ),
    "a row of a run hash_runs does not list": (
        "INSERT INTO hash_rows SELECT 999, prefix, ledger, height FROM hash_rows LIMIT 1",
        ("", None),
    ),
}


@pytest.mark.parametrize("change", list(TAMPERED))
def test_a_damaged_index_row_fails_its_ledger_at_its_height(store: Path, change: str) -> None:
    statement, *where = TAMPERED[change]
    _sql(store, statement)
    mark = _mark(store, "ledger-a")
    expected = [
        (ledger, "index_mismatch", mark - 1 if ledger and height is None else height) for ledger, height in where
    ]
    with ThreadPoolExecutor(2) as pool:
        for executor in (None, pool):  # in the calling process, then in chunks of 8 records
            verdicts = _verdicts(store, executor)
            assert [v for v in verdicts if v[1] is not None] == expected


def _mark(directory: Path, ledger: str) -> int:
    with contextlib.closing(sqlite3.connect(directory / DB_NAME)) as db:
        return int(db.execute("SELECT size FROM hashes_filled WHERE ledger = ?", (ledger,)).fetchone()[0])


def test_the_command_names_the_row_and_exits_1(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _sql(store, f"UPDATE hash_rows SET prefix = x'0102030405060708' WHERE {_ROW}")
    assert cli.main(["verify", str(store)]) == 1
    out = capsys.readouterr().out
    assert (
        "ledger-a: FAILED at height 5 [index_mismatch]: the hash index's row for record 5 holds 0102030405060708" in out
    )
    assert "(5 records before it verified)" in out
    assert "ledger-b: OK" in out


def test_a_store_without_the_index_layout_is_not_checked_for_it(store: Path) -> None:
    """A store from before any index (its hash column's own SQLite index) has nothing to compare."""
    _sql(store, "DROP TABLE hash_rows", "DROP TABLE hash_runs", "DROP TABLE hashes_filled")
    assert _verdicts(store) == [("ledger-a", None, None), ("ledger-b", None, None)]


def test_the_sum_tells_apart_rows_swapped_between_heights() -> None:
    """The sum binds each prefix to its height: two rows' heights swapped change it."""
    key = new_key()
    prefixes, heights = [bytes([i]) * 8 for i in range(4)], [10, 11, 12, 13]
    sums = []
    for order in (heights, [11, 10, 12, 13]):
        index = IndexSum(key)
        index.add_joined(b"".join(prefixes), str(order), 4)
        sums.append((index.count, index.total, index.damaged))
    records = IndexSum(key)
    records.add_hashes([p + bytes(24) for p in prefixes], heights)
    assert sums[0] == (records.count, records.total, False)
    assert sums[1][:1] == sums[0][:1] and sums[1][1] != sums[0][1]


@pytest.mark.parametrize(
    ("change", "wrong"),
    [
        # Each passed before: verify read only the runs' ids, while the node refuses such a store.
        ("level = 'x'", "its level is stored as TEXT, not as an integer"),
        ("rows = 'x'", "its rows is stored as TEXT, not as an integer"),
        ("rows = 2.5", "its rows is stored as REAL, not as an integer"),
        ("cursor = 5", "its cursor is stored as INTEGER, not as a BLOB"),
        ("into_run = X'01'", "its into_run is stored as BLOB, not as an integer"),
        ("rows = rows + 1", "rows, hash_runs says"),
    ],
)
def test_a_hash_runs_row_the_node_refuses_fails_the_store(store: Path, change: str, wrong: str) -> None:
    _sql(store, f"UPDATE hash_runs SET {change} WHERE run = (SELECT MIN(run) FROM hash_runs WHERE into_run IS NULL)")
    result = verify_store(store, None, LIMITS, workers=1)
    assert [r.error for r in result.reports] == [None, None]
    assert result.error is not None and result.error.code == "index_mismatch" and wrong in result.error.message
    with pytest.raises(VledgerError):  # the node's open refuses it the same (store_damaged)
        ChainStore(store, origin="n-1", hash_fill_at=4, hash_merge_step=3)
