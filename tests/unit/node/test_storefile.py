"""StoreReader: read-only access to a store's raw records, for tools that trust nothing."""

from __future__ import annotations

import collections
import errno
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vledger.node import storefile
from vledger.node.errors import IndexMismatchError, StoreError
from vledger.node.record import Record
from vledger.node.store import HASH_FILL_AT, ChainStore, fill_phase
from vledger.node.storefile import _BY_RUN_HASH, BY_HASH, DB_NAME, HashRun, StoreReader, hash_runs
from vledger.tests.integration.replication.test_disk_full import fill


@pytest.fixture
def store_dir(tmp_path: Path, kit: Any) -> Path:
    directory = tmp_path / "store"
    with ChainStore(directory, origin="node-1") as store:
        for ledger, count in (("ledger-a", 7), ("ledger-b", 2)):
            store.create_ledger(kit.genesis_entry(0, ledger=ledger))
            for i in range(1, count):
                store.append(kit.entry(i, ledger=ledger))
    return directory


def test_reader_sees_every_record(store_dir: Path) -> None:
    reader = StoreReader(store_dir, page_size=2)
    try:
        assert reader.ledgers() == ["ledger-a", "ledger-b"]
        assert (reader.count(), reader.count("ledger-a"), reader.count("nope")) == (9, 7, 0)
        with ChainStore(store_dir) as store:
            expected = list(store.range_raw("ledger-a"))
        assert list(reader.iter_raw("ledger-a")) == expected
        assert [h for h, _ in reader.iter_raw("ledger-a", 1, 6)] == [1, 2, 3, 4, 5]
    finally:
        reader.close()


def test_reader_gives_every_column_page_by_page(store_dir: Path) -> None:
    reader = StoreReader(store_dir, page_size=2)
    try:
        rows = list(reader.iter_rows("ledger-a"))
        with ChainStore(store_dir) as store:
            records = list(store.range("ledger-a"))
        assert [(r.height, r.hash, r.author, r.request_id) for r in rows] == [
            (x.height, x.link, x.content.author, x.content.request_id) for x in records
        ]
        assert [r.data for r in rows] == [data for _, data in reader.iter_raw("ledger-a")]
        assert [r.height for r in reader.iter_rows("ledger-a", 1, 6)] == [1, 2, 3, 4, 5]
        assert [r.height for r in reader.iter_rows("ledger-b")] == [0, 1]
    finally:
        reader.close()


def test_reader_refuses_a_directory_without_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no vledger store"):
        StoreReader(tmp_path)


def test_reader_refuses_a_file_that_is_not_a_store(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.execute("CREATE TABLE other (x)")
    conn.close()
    with pytest.raises(StoreError, match="not a vledger store"):
        StoreReader(tmp_path)


def test_reader_refuses_another_schema_version(store_dir: Path) -> None:
    with sqlite3.connect(store_dir / DB_NAME) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    conn.close()
    with pytest.raises(StoreError, match="'99'"):
        StoreReader(store_dir)


def _indexes(directory: Path) -> set[str]:
    with sqlite3.connect(directory / DB_NAME) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}


def _plan(directory: Path, select: str) -> str:
    with sqlite3.connect(directory / DB_NAME) as conn:
        return " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {select}", (b"\0" * 32,)))


def _marks(directory: Path) -> dict[str, int]:
    with sqlite3.connect(directory / DB_NAME) as conn:
        return dict(conn.execute("SELECT ledger, size FROM hashes_filled"))


def test_hash_lookups_seek_each_run_and_tell_records_of_one_prefix_apart(store_dir: Path) -> None:
    assert "USING PRIMARY KEY (run=? AND prefix=?)" in _plan(store_dir, _BY_RUN_HASH)
    assert not {"records_by_hash", "records_by_hash_prefix"} & _indexes(store_dir)
    with ChainStore(store_dir) as store:
        records = list(store.range("ledger-a"))
    # Two rows whose hash columns share the first 8 bytes: each found by its own hash only.
    first, second = records[1], records[2]
    twin = first.link[:8] + second.link[8:]
    with sqlite3.connect(store_dir / DB_NAME) as conn:
        conn.execute("UPDATE records SET hash = ? WHERE ledger = 'ledger-a' AND height = 2", (twin,))
    for fill_at in (HASH_FILL_AT, 1):  # nothing filled yet (9 records), then all filled at the opening
        with ChainStore(store_dir, hash_fill_at=fill_at):
            pass
        reader = StoreReader(store_dir)
        try:
            assert reader.find_hash(first.link) == ("ledger-a", 1, first.encode())
            assert reader.find_hash(twin) == ("ledger-a", 2, second.encode())
            assert reader.find_hash(first.link[:8] + b"\xff" * 24) is None
        finally:
            reader.close()
    assert _marks(store_dir) == {"ledger-a": 7, "ledger-b": 2}


def test_lookups_by_hash_find_every_record_below_and_above_the_filled_marks(store_dir: Path, kit: Any) -> None:
    reader = StoreReader(store_dir)  # open all along: it reads the rows above the marks as they come
    try:
        with ChainStore(store_dir, origin="node-1", hash_fill_at=4) as store:
            seen = []
            for i in range(7, 13):  # fills at the opening (9 records), then once 4 more are written
                store.append(kit.entry(i, ledger="ledger-a"))
                records = [r for ledger in ("ledger-a", "ledger-b") for r in store.range(ledger)]
                hashes = [r.link for r in records]
                assert store.have([*hashes, b"\x07" * 32]) == hashes
                for record in records:
                    assert store.get_by_hash(record.link) == record
                    assert store.index_of(record.link) == (record.ledger, record.height)
                    assert reader.find_hash(record.link) == (record.ledger, record.height, record.encode())
                assert store.get_by_hash(b"\x07" * 32) is None and store.index_of(b"\x07" * 32) is None
                assert reader.find_hash(b"\x07" * 32) is None
                seen.append(_marks(store_dir)["ledger-a"])
            assert seen == [7, 7, 7, 11, 11, 11]  # 9 at the opening, then the 4th record after it
        with ChainStore(store_dir, hash_fill_at=None) as store, pytest.raises(StoreError, match="without its hash"):
            store.get_by_hash(records[0].link)
    finally:
        reader.close()


def _runs(directory: Path) -> list[HashRun]:
    with closing(sqlite3.connect(directory / DB_NAME)) as conn:
        return hash_runs(conn)


def _index_rows(directory: Path) -> list[tuple[int, bytes, str, int]]:
    with closing(sqlite3.connect(directory / DB_NAME)) as conn:
        return [(run, bytes(p), ledger, height) for run, p, ledger, height in conn.execute("SELECT * FROM hash_rows")]


def _check_index(directory: Path, records: list[Record]) -> None:
    """Every record below its mark is in exactly one run, every run with rows is listed, each
    run's rows are counted, and both a store and a reader find every record by its hash."""
    marks, rows, runs = _marks(directory), _index_rows(directory), _runs(directory)
    below = sorted((r.link[:8], r.ledger, r.height) for r in records if r.height < marks.get(r.ledger, 0))
    assert sorted(row[1:] for row in rows) == below
    counts = collections.Counter(row[0] for row in rows)
    listed = {run.run: run for run in runs}
    assert set(counts) <= set(listed)
    for run in runs:
        if run.cursor is None and run.into_run is None:  # a plain run: counted exactly
            assert counts[run.run] == run.rows, run
    reader = StoreReader(directory)
    try:
        for record in records:
            assert reader.find_hash(record.link) == (record.ledger, record.height, record.encode())
    finally:
        reader.close()


def test_runs_are_merged_eight_into_one_in_steps_and_every_record_is_found_meanwhile(tmp_path: Path, kit: Any) -> None:
    chain = kit.chain(8 * 6 + 3)
    directory = tmp_path / "store"
    with ChainStore(directory, origin="node-1", hash_fill_at=6, hash_merge_step=10**9) as store:
        for start in range(0, len(chain), 6):  # a group of 6 a time: each fills a run of level 0
            store.append_records(chain[start : start + 6])
    runs = _runs(directory)
    assert [(run.level, run.rows, run.into_run, run.cursor) for run in runs] == [(0, 6, None, None)] * 8
    assert _index_rows(directory) == sorted(_index_rows(directory))  # each run's rows at the right edge
    _check_index(directory, chain)
    states = []
    with ChainStore(directory, origin="node-1", hash_fill_at=6, hash_merge_step=3) as store:
        extra = kit.chain(len(chain) + 40)[len(chain) :]
        for record in extra:  # each record owes 6 rows of merging: a step of ~6 rows a record
            store.append_record(record)
            chain.append(record)
            states.append([(run.level, run.into_run is not None, run.cursor is not None) for run in _runs(directory)])
            for held in chain:
                assert store.get_by_hash(held.link) == held
            _check_index(directory, chain)
    merging = [(0, True, False)] * 8 + [(1, False, True)]
    assert states[0] == merging  # started by the first group, 6 rows moved of 48
    assert sum((1, False, True) in state for state in states) >= 6  # moved over as many records' groups
    levels = [run.level for run in _runs(directory)]
    assert levels[0] == 1 and levels[1:] == [0] * (len(levels) - 1)  # one run of 48 rows, then the new fills
    assert _runs(directory)[0].rows == 48


def test_a_fill_phase_brings_the_first_fill_early_then_every_fill_comes_a_fill_apart(tmp_path: Path, kit: Any) -> None:
    """Copies of one ledger count the same heights: a node's phase (fill_phase of its name) moves
    its fills off the others', so that the home and its replicas on one host do not stall together."""
    chain = kit.chain(1 + 5 + 8 + 8 + 3)
    directory = tmp_path / "store"
    sizes = []
    with ChainStore(directory, origin="node-1", hash_fill_at=8, hash_fill_phase=3, hash_merge_step=10**9) as store:
        for record in chain:
            store.append_record(record)
            sizes.append(sum(run.rows for run in _runs(directory)))
    # One record a group: the first fill at 5 records (8 - 3), then at 8 more each time.
    assert [
        i + 1 for i, (before, after) in enumerate(zip([0, *sizes[:-1]], sizes, strict=True)) if after != before
    ] == [5, 13, 21]
    _check_index(directory, chain)
    with pytest.raises(ValueError, match="fill phase"):
        ChainStore(tmp_path / "other", hash_fill_at=8, hash_fill_phase=8)
    assert {fill_phase(f"replica-{n}") for n in range(1, 4)} | {fill_phase("ingest-1")} != {fill_phase("ingest-1")}
    assert all(0 <= fill_phase(f"node-{n}") < HASH_FILL_AT // 2 for n in range(100))


@pytest.mark.parametrize("old_index", ["records_by_hash", "records_by_hash_prefix", "record_hashes"])
def test_a_store_of_an_earlier_layout_is_read_as_it_is_until_opened_then_converted(
    store_dir: Path, caplog: pytest.LogCaptureFixture, old_index: str
) -> None:
    with sqlite3.connect(store_dir / DB_NAME) as conn:  # the layout as an earlier version made it
        conn.execute("DROP TABLE hash_rows")
        conn.execute("DROP TABLE hash_runs")
        if old_index == "record_hashes":  # one table sorted by prefix, ledger-a filled to 5
            conn.execute(
                "CREATE TABLE record_hashes (prefix BLOB NOT NULL, ledger TEXT NOT NULL, height INTEGER NOT NULL, "
                "PRIMARY KEY (prefix, ledger, height)) WITHOUT ROWID"
            )
            conn.execute(
                "INSERT INTO record_hashes SELECT substr(hash, 1, 8), ledger, height FROM records "
                "WHERE ledger = 'ledger-a' AND height < 5"
            )
            conn.execute("INSERT INTO hashes_filled VALUES ('ledger-a', 5)")
        else:
            conn.execute("DROP TABLE hashes_filled")
            column = "hash" if old_index == "records_by_hash" else "substr(hash, 1, 8)"
            conn.execute(f"CREATE INDEX {old_index} ON records ({column})")
    if old_index != "record_hashes":
        assert f"INDEX {old_index}" in _plan(store_dir, f"SELECT 1 FROM records WHERE {BY_HASH}")
    reader = StoreReader(store_dir)  # open across the conversion
    try:
        with (
            caplog.at_level(logging.WARNING, logger="vledger.node.store"),
            ChainStore(store_dir, hash_fill_at=HASH_FILL_AT, hash_merge_step=1) as store,
        ):
            records = [r for ledger in ("ledger-a", "ledger-b") for r in store.range(ledger)]
        # An operator sees why it opens slowly.
        assert ("converted to runs" if old_index == "record_hashes" else "built anew, once") in caplog.text
        for record in records:
            assert reader.find_hash(record.link) == (record.ledger, record.height, record.encode())
        reader.close()
        reader = StoreReader(store_dir)  # before: one of the old layouts; now the runs
        with ChainStore(store_dir, hash_fill_at=1) as store:
            for record in records:
                assert store.get_by_hash(record.link) == record
                assert store.index_of(record.link) == (record.ledger, record.height)
        for record in records:
            assert reader.find_hash(record.link) == (record.ledger, record.height, record.encode())
    finally:
        reader.close()
    assert not {old_index} & _indexes(store_dir)
    assert _marks(store_dir) == {"ledger-a": 7, "ledger-b": 2}
    _check_index(store_dir, records)


def test_a_mark_above_a_chain_cut_short_comes_down_so_its_new_records_are_found(store_dir: Path, kit: Any) -> None:
    with ChainStore(store_dir, origin="node-1", hash_fill_at=1):  # every record filled at the opening
        pass
    with sqlite3.connect(store_dir / DB_NAME) as conn:  # an older copy put back behind the store's back
        conn.execute("DELETE FROM records WHERE ledger = 'ledger-a' AND height >= 4")
        conn.execute("DELETE FROM records WHERE ledger = 'ledger-b'")
        conn.execute("DELETE FROM tree")
        conn.execute("DELETE FROM meta WHERE key = 'tree'")
    with ChainStore(store_dir, origin="node-1", hash_fill_at=3) as store:
        assert _marks(store_dir) == {"ledger-a": 4}
        for i in range(40, 45):  # other records at the heights the index held before
            store.append(kit.entry(i, ledger="ledger-a"))
        records = list(store.range("ledger-a"))
        for record in records:
            assert store.get_by_hash(record.link) == record
    assert _marks(store_dir)["ledger-a"] >= 7
    reader = StoreReader(store_dir)
    try:
        for record in records:
            assert reader.find_hash(record.link) == (record.ledger, record.height, record.encode())
    finally:
        reader.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(
        st.one_of(st.tuples(st.integers(1, 40), st.integers(1, 8)), st.just("reopen")),
        min_size=1,
        max_size=12,
    ),
    fill_at=st.integers(2, 8),
    merge_step=st.integers(1, 12),
)
def test_any_sequence_of_fills_merge_steps_and_reopens_keeps_every_hash_findable(
    kit: Any, steps: list[tuple[int, int] | str], fill_at: int, merge_step: int
) -> None:
    """Each step appends k records in groups of g (a group's records owe its merging), or reopens."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "store"
        chains = {ledger: kit.chain(12 * 40, ledger=ledger) for ledger in ("ledger-a", "ledger-b")}
        held: list[Record] = []
        store = ChainStore(directory, origin="node-1", hash_fill_at=fill_at, hash_merge_step=merge_step)
        try:
            for n, step in enumerate(steps):
                if step == "reopen":
                    store.close()
                    store = ChainStore(directory, origin="node-1", hash_fill_at=fill_at, hash_merge_step=merge_step)
                    continue
                assert isinstance(step, tuple)
                chain = chains["ledger-a" if n % 3 else "ledger-b"]
                start, (k, g) = store.size(chain[0].ledger), step
                for first in range(start, start + k, g):
                    store.append_records(chain[first : min(first + g, start + k)])
                held.extend(chain[start : start + k])
                for record in held:
                    assert store.get_by_hash(record.link) == record
        finally:
            store.close()
        _check_index(directory, held)


@pytest.mark.parametrize(
    ("statement", "says"),
    [
        ("DELETE FROM hash_rows WHERE height = 3", "holds 8 rows, hash_runs says 9"),
        ("INSERT INTO hash_rows SELECT run, x'00', ledger, 1000 FROM hash_rows LIMIT 1", "holds 10 rows"),
        ("INSERT INTO hash_rows SELECT 99, prefix, ledger, height FROM hash_rows LIMIT 1", "run 99, which"),
    ],
)
def test_a_store_whose_index_lost_or_gained_a_row_does_not_open(store_dir: Path, statement: str, says: str) -> None:
    with ChainStore(store_dir, origin="node-1", hash_fill_at=1):  # every record in one run at the opening
        pass
    assert [(run.rows, run.into_run) for run in _runs(store_dir)] == [(9, None)]
    with closing(sqlite3.connect(store_dir / DB_NAME)) as conn:
        conn.execute(statement)
        conn.commit()
    with pytest.raises(IndexMismatchError, match=says):
        ChainStore(store_dir, origin="node-1", hash_fill_at=1)


def test_the_store_file_and_its_wal_and_shm_are_private_whatever_the_umask(tmp_path: Path, kit: Any) -> None:
    # outsider o13: chain.sqlite3 was 0644 beside 0600 keys and journals (SQLite follows the umask).
    old = os.umask(0o022)
    try:
        with ChainStore(tmp_path / "new", origin="node-1") as store:
            store.create_ledger(kit.genesis_entry(0))
            made = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "new").glob(f"{DB_NAME}*")}
        assert set(made) >= {DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"}
        assert set(made.values()) == {0o600}
        old_store = tmp_path / "old"  # one made before, under the umask: made private when opened
        old_store.mkdir()
        sqlite3.connect(old_store / DB_NAME).close()
        assert stat.S_IMODE((old_store / DB_NAME).stat().st_mode) == 0o644
        with ChainStore(old_store, origin="node-1"):
            assert stat.S_IMODE((old_store / DB_NAME).stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_making_a_store_private_again_keeps_the_locks_of_this_process_s_open_connections(tmp_path: Path) -> None:
    # Closing any descriptor of a file drops every POSIX lock the process holds on it: opening
    # and closing the store file to make it private released the locks of the connections this
    # process had open, and another process closing its own connection took itself for the
    # last one, checkpointed and removed the -wal under them (bench 6b read a record back old).
    path = tmp_path / DB_NAME
    with closing(storefile.connect(path)) as held:
        held.execute("CREATE TABLE t (x)")
        held.execute("INSERT INTO t VALUES (1)")
        storefile.connect(path).close()  # another connection of this process: makes it private
        other = (
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('SELECT 1 FROM t').fetchall(); c.close()"
        )
        subprocess.run([sys.executable, "-c", other, str(path)], check=True, timeout=60)
        assert storefile.wal_of(path).exists()  # still in use here: no other process's to remove
        assert held.execute("SELECT x FROM t").fetchall() == [(1,)]


def _sqlite_error(code: int) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("disk I/O error")
    error.sqlite_errorcode = code  # as SQLite sets it
    return error


def test_an_io_error_at_open_is_no_room_only_while_the_disk_is_all_but_full(tmp_path: Path, tmpfs_disk: Path) -> None:
    # outsider34 #1: SQLite says "disk I/O error" (SQLITE_IOERR_SHMSIZE and kin), not SQLITE_FULL,
    # for a -shm it cannot make on a full disk. Review r21 F7: low free space alone is no proof:
    # another fault on a nearly full disk made the node wait for room for ever, the cause hidden.
    disk = tmpfs_disk
    wrapped = StoreError("cannot open the store")
    wrapped.__cause__ = _sqlite_error(sqlite3.SQLITE_IOERR | (19 << 8))
    assert not storefile.no_room(tmp_path, wrapped)  # room enough: a disk fault, not a full disk
    assert storefile.no_room(tmp_path, _sqlite_error(sqlite3.SQLITE_FULL))

    (disk / DB_NAME).mkdir()  # a fault that is not the room: the store's file name taken by a directory
    with pytest.raises(StoreError) as raised:  # from SQLite's SQLITE_CANTOPEN
        storefile.connect(disk / DB_NAME)
    room = os.statvfs(disk)
    assert 128 * 1024 < room.f_bavail * room.f_frsize < storefile.LOW_ROOM_BYTES  # room for a store's first pages
    assert not storefile.no_room(disk, raised.value), raised.value
    assert not storefile.no_room(disk, wrapped) and not storefile.no_room(disk, OSError(errno.EIO, "EIO"))

    fill(disk)  # really full: the same errors are now the disk's having no room
    assert storefile.no_room(disk, wrapped) and storefile.no_room(disk, OSError(errno.EIO, "EIO"))
    assert not storefile.no_room(disk, _sqlite_error(sqlite3.SQLITE_CORRUPT))  # damage is damage
    assert sorted(p.name for p in disk.iterdir()) == [DB_NAME, "filler"]  # no probe left behind
