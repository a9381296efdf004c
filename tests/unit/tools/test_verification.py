"""Chunked store verification names the first failure the sequential verifier names, code and height.

verify_store splits a long ledger into chunks checked by workers and joins them (tools/
verification.py). Here the chunks run on threads (the same code, without the cost of starting
processes for every hypothesis example) and, once, on real worker processes; each verdict is
compared with scan_ledger's, the records checked one by one from genesis.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vledger.config.settings import Limits
from vledger.node.errors import RecordError, TreeMismatchError, UsageError
from vledger.node.ledger import LedgerRules
from vledger.node.record import ZERO_LINK, Content, Entry, Record
from vledger.node.store import ChainStore
from vledger.node.storefile import DB_NAME, SCHEMA, SCHEMA_VERSION, StoreReader
from vledger.node.tree import Frontier, leaf_hash
from vledger.node.witness import HomeSigner, home_key
from vledger.tools.verification import (
    CHUNK_RECORDS,
    MIN_CHUNK_RECORDS,
    TAIL_SHRINK,
    _worker_context,
    chunk_size,
    chunk_spans,
    scan_ledger,
    verify_store,
)

LIMITS = Limits()
LEDGER = "ledger-a"
VECTORS = Path(__file__).resolve().parents[2] / "vectors"

Row = tuple[str, int, bytes, str, str, bytes]  # ledger, height, hash, author, request_id, data


def _chain(count: int) -> list[Record]:
    rules = LedgerRules(kinds=("note",), difficulty=1)
    records = [Entry.prepare(rules.genesis_content(LEDGER, "admin", "g", 1), 1, LIMITS).place(0, ZERO_LINK, 2, "n-1")]
    for i in range(1, count):
        entry = Entry.prepare(Content(LEDGER, "note", {"n": i}, f"a-{i % 3}", f"r{i}", 3 + i), 1, LIMITS)
        head = records[-1]
        records.append(entry.place(head.height + 1, head.link, head.accepted + 1, "n-1"))
    return records


def _row(record: Record) -> Row:
    return (LEDGER, record.height, record.link, record.content.author, record.content.request_id, record.encode())


def _write(directory: Path, rows: list[Row]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / DB_NAME).unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(directory / DB_NAME)) as db:
        db.executescript(SCHEMA)
        db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        db.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?)", rows)
        db.commit()
    return directory


def _sequential(directory: Path) -> list[tuple[str, int, Any, Any]]:
    """Each ledger's verdict from scan_ledger alone: (ledger, records, code, height)."""
    verdicts = []
    with contextlib.closing(StoreReader(directory)) as reader:
        for ledger in reader.ledgers():
            count, code, height = 0, None, None
            try:
                for _ in scan_ledger(reader, ledger, LIMITS):
                    count += 1
            except RecordError as e:
                code, height = e.code, e.height
            verdicts.append((ledger, count, code, height))
    return verdicts


def _chunked(directory: Path, chunk: int, pool: ThreadPoolExecutor | None = None) -> list[tuple[str, int, Any, Any]]:
    result = verify_store(directory, None, LIMITS, workers=2, chunk=chunk, executor=pool)
    return [
        (r.ledger, r.records, r.error.code if r.error is not None else None, r.error_height) for r in result.reports
    ]


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as executor:
        yield executor


CHAIN = _chain(13)


def test_a_valid_store_verifies_in_chunks(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    directory = _write(tmp_path / "s", [_row(r) for r in CHAIN])
    for chunk in (1, 2, 4, 8, 16):
        assert _chunked(directory, chunk, pool) == _sequential(directory) == [(LEDGER, 13, None, None)]


_CHANGES = (
    "byte", "delete", "height column", "swap", "hash column", "duplicate", "author column", "request_id column", "cut"
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_changed_store_gets_the_sequential_verdict_in_chunks(
    tmp_path: Path, pool: ThreadPoolExecutor, data: st.DataObject
) -> None:
    rows = [list(_row(r)) for r in CHAIN]
    for _ in range(data.draw(st.integers(1, 2))):
        change = data.draw(st.sampled_from(_CHANGES))
        at = data.draw(st.integers(0, len(rows) - 1))
        row = rows[at]
        if change == "byte":
            blob: bytes = row[5]
            i = data.draw(st.integers(0, len(blob) - 1))
            row[5] = blob[:i] + bytes((blob[i] ^ data.draw(st.integers(1, 255)),)) + blob[i + 1 :]
        elif change == "delete" and len(rows) > 1:
            del rows[at]
        elif change == "height column":
            heights = {r[1] for r in rows}
            row[1] = data.draw(st.sampled_from([h for h in range(21) if h not in heights]))
        elif change == "swap":
            other = rows[data.draw(st.integers(0, len(rows) - 1))]
            row[5], other[5] = other[5], row[5]
        elif change == "hash column":
            row[2] = bytes(32)
        elif change == "author column":
            row[3] = "someone-else"
        elif change == "request_id column":
            row[4] = "r-other"
        elif change == "duplicate":
            rows.append([*row[:1], max(r[1] for r in rows) + 1, *row[2:]])
        elif change == "cut":
            del rows[at:]
            if not rows:
                rows = [list(_row(CHAIN[0]))]
    directory = _write(tmp_path / "s", [tuple(r) for r in rows])  # type: ignore[misc]
    chunk = data.draw(st.sampled_from((1, 2, 4)))
    assert _chunked(directory, chunk, pool) == _sequential(directory)


def _vector_rows(case: dict[str, Any]) -> list[Row] | None:
    """A store holding an invalid case's records as its rows, or None for a case of the export's
    own lines (a store has no lines)."""
    rows: list[Row] = []
    for line in case["export"].splitlines():
        try:
            fields = json.loads(line)
            data = base64.b64decode(fields["record"], validate=True)
            height, ledger = int(fields["height"]), str(fields["ledger"])
            ledger.encode()  # a lone surrogate: a fault of the line itself
        except (ValueError, KeyError, TypeError, RecursionError):
            return None
        try:
            content = msgpack.unpackb(msgpack.unpackb(data)["content"])
            author, request_id = str(content["author"]), str(content["request_id"])
        except Exception:  # a record too broken to say: the columns are unchecked copies anyway
            author, request_id = "", ""
        link = bytes.fromhex(fields["hash"]) if isinstance(fields.get("hash"), str) else bytes(32)
        rows.append((ledger, height, link, author, request_id, data))
    keys = [(r[0], r[1]) for r in rows]
    return rows if len(set(keys)) == len(keys) else None


INVALID = json.loads((VECTORS / "invalid.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", INVALID, ids=[c["name"] for c in INVALID])
def test_each_invalid_vector_in_a_store_gets_the_sequential_verdict_in_chunks(
    case: dict[str, Any], tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    rows = _vector_rows(case)
    if rows is None:
        pytest.skip("a fault of the export's lines, which a store does not have")
    directory = _write(tmp_path / "s", rows)
    sequential = _sequential(directory)  # a store orders rows by height: a swap in a file may heal here
    for chunk in (1, 2, 4):
        assert _chunked(directory, chunk, pool) == sequential


def test_worker_processes_find_the_first_failure_the_sequential_verifier_finds(tmp_path: Path) -> None:
    chain = _chain(40)
    rows = [_row(r) for r in chain]
    late = rows[33]
    rows[33] = (*late[:5], late[5].replace(b"\xa1n", b"\xa1m", 1))  # content changed: bad_checksum at 33
    early = rows[9]
    rows[9] = (*early[:2], bytes(32), *early[3:])  # a wrong hash column at 9, in another chunk
    directory = _write(tmp_path / "s", rows)
    expected = _sequential(directory)
    assert expected == [(LEDGER, 9, "index_mismatch", 9)]
    assert _chunked(directory, 8) == expected  # real processes: executor None, workers=2


def _flip_last(data: bytes, field: bytes) -> bytes:
    """The record bytes with the last byte of its 32-byte ``field`` (b"link", b"prev") changed."""
    at = data.index(b"\xa4" + field + b"\xc4\x20") + len(field) + 3 + 31
    return data[:at] + bytes((data[at] ^ 1,)) + data[at + 1 :]


def test_a_record_changed_on_either_side_of_a_boundary_between_workers_fails_where_it_stands(
    tmp_path: Path,
) -> None:
    """The last record of a chunk (its link) and the first of the next (its prev), each checked
    by another worker process: the failure names that record, as the sequential checks do."""
    chain = _chain(40)
    starts = [start for start, _ in chunk_spans(len(chain), 2, 8) if start][:2]
    assert starts == [8, 16]  # two boundaries between chunks of real worker processes
    for start in starts:
        for height, field in ((start - 1, b"link"), (start, b"prev")):
            rows = [_row(r) for r in chain]
            row = rows[height]
            rows[height] = (*row[:5], _flip_last(row[5], field))
            directory = _write(tmp_path / f"s{height}", rows)
            expected = _sequential(directory)
            assert expected == [(LEDGER, height, "bad_link", height)]
            result = verify_store(directory, None, LIMITS, workers=2, chunk=8, fork=True)
            verdicts = [
                (r.ledger, r.records, r.error.code if r.error else None, r.error_height) for r in result.reports
            ]
            assert verdicts == expected, (height, field)


# --- a store's checkpoints and kept tree, checked against the records' tree ----------------

PINNED = "votes"
SEED = bytes(range(32))


def _signed_store(directory: Path, records: int, sizes: dict[str, int], *, signer_seed: bytes = SEED) -> Path:
    """A real store of ``records`` records whose genesis pins the home key of SEED, holding a
    checkpoint signed with ``signer_seed`` for each (kind, size) of ``sizes``."""
    public = HomeSigner("local", SEED).key(PINNED).public_key
    rules = LedgerRules(
        kinds=("note",), difficulty=0, rules={"checkpoint_key": home_key("local", PINNED, public).encode()}
    )
    with ChainStore(directory, origin="node-1") as store:
        store.create_ledger(Entry.prepare(rules.genesis_content(PINNED, "admin", "g", 1), 0, LIMITS))
        for i in range(1, records):
            store.append(Entry.prepare(Content(PINNED, "note", {"n": i}, "admin", f"r{i}", 1), 0, LIMITS))
        for kind, size in sizes.items():
            signed = HomeSigner("local", signer_seed).sign(PINNED, size, store.root(PINNED, size))
            store.checkpoints.keep(PINNED, kind, size, signed.root, signed.note)
    return directory


def _sql(directory: Path, statement: str, *args: Any) -> None:
    with contextlib.closing(sqlite3.connect(directory / DB_NAME)) as db:
        db.execute(statement, args)
        db.commit()


def _verdicts(directory: Path, pool: ThreadPoolExecutor) -> set[tuple[str, int, Any, Any, int]]:
    """The one verdict of every way to check ``directory``: sequential, and chunks of 1 to 32."""
    verdicts = set()
    for chunk in (1, 2, 4, 8, 32):
        for r in verify_store(directory, None, LIMITS, workers=2, chunk=chunk, executor=pool).reports:
            verdicts.add(
                (r.ledger, r.records, r.error.code if r.error is not None else None, r.error_height, r.checkpoints)
            )
    return verdicts


def test_a_stores_checkpoints_verify_in_chunks_and_alone(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    directory = _signed_store(tmp_path / "s", 21, {"signed": 16, "cosigned": 3})
    assert _verdicts(directory, pool) == {(PINNED, 21, None, None, 2)}


def test_a_checkpoint_whose_root_is_not_the_records_tree_fails_at_its_last_record(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    directory = _signed_store(tmp_path / "s", 21, {"cosigned": 3})
    with ChainStore(directory) as store:  # a checkpoint of size 13 whose root is the tree of 12
        wrong = HomeSigner("local", SEED).sign(PINNED, 13, store.root(PINNED, 12))
        store.checkpoints.keep(PINNED, "signed", 13, wrong.root, wrong.note)
    assert _verdicts(directory, pool) == {(PINNED, 13, "tree_mismatch", 12, 1)}


def test_a_record_fault_before_a_checkpoint_is_the_first_failure(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    directory = _signed_store(tmp_path / "s", 21, {"signed": 13, "cosigned": 3})
    _sql(directory, "UPDATE records SET data = CAST(REPLACE(data, X'a16e', X'a16d') AS BLOB) WHERE height = 9")
    assert _verdicts(directory, pool) == {(PINNED, 9, "bad_checksum", 9, 1)}


def test_a_checkpoint_by_another_key_or_past_the_records_fails(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    other = _signed_store(tmp_path / "other", 21, {"signed": 5}, signer_seed=SEED[::-1])
    assert _verdicts(other, pool) == {(PINNED, 5, "unverified_note", 4, 0)}
    directory = _signed_store(tmp_path / "s", 21, {"signed": 16})
    _sql(directory, "DELETE FROM records WHERE height >= 12")
    _sql(directory, "DELETE FROM tree_edge")
    assert _verdicts(directory, pool) == {(PINNED, 12, "bad_field", 15, 0)}
    junk = _signed_store(tmp_path / "junk", 21, {})
    _sql(junk, "INSERT INTO checkpoints VALUES (?, 'signed', 5, ?, ?, 0)", PINNED, bytes(32), b"not a note")
    assert _verdicts(junk, pool) == {(PINNED, 21, "bad_field", 21, 0)}


def test_a_stored_tree_edge_that_is_not_the_records_tree_fails(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    directory = _signed_store(tmp_path / "s", 21, {})
    with contextlib.closing(StoreReader(directory)) as reader:
        edge = reader.tree_edge(PINNED)
    # Lone puts: the edge was last written by the put that completed the first stored subtree.
    assert edge is not None and edge.size == 16
    _sql(directory, "UPDATE tree_edge SET frontier = ?", Frontier(16, [bytes(32)]).encode())
    assert _verdicts(directory, pool) == {(PINNED, 16, "tree_mismatch", 15, 0)}
    cut = _signed_store(tmp_path / "cut", 21, {})
    _sql(cut, "DELETE FROM records WHERE height >= 12")  # the tail cut below the edge: the chain alone cannot tell
    assert _verdicts(cut, pool) == {(PINNED, 12, "tree_mismatch", 15, 0)}


def test_a_tail_cut_past_the_edge_shows_only_against_a_stored_checkpoint(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    """The records past the edge (at most 15, completing no stored subtree) are what a cut may
    take unseen at rest, unless a stored signed checkpoint covers them."""
    signed = _signed_store(tmp_path / "signed", 21, {"signed": 21})
    _sql(signed, "DELETE FROM records WHERE height >= 17")
    assert _verdicts(signed, pool) == {(PINNED, 17, "bad_field", 20, 0)}
    bare = _signed_store(tmp_path / "bare", 21, {})
    _sql(bare, "DELETE FROM records WHERE height >= 17")
    assert _verdicts(bare, pool) == {(PINNED, 17, None, None, 0)}
    ChainStore(bare).close()  # the node too: 17 records, the edge of 16 theirs


def _edge_at(directory: Path, size: int) -> bytes:
    """The encoded tree of the store's first ``size`` records (an edge a node may have written)."""
    with contextlib.closing(StoreReader(directory)) as reader:
        frontier = Frontier()
        for _, data in reader.iter_raw(PINNED, 0, size):
            frontier.append(leaf_hash(data))
    return frontier.encode()


def test_an_edge_at_every_commit_or_below_a_subtree_the_records_complete(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    old = _signed_store(tmp_path / "old", 21, {"signed": 19})
    _sql(old, "UPDATE tree_edge SET frontier = ?", _edge_at(old, 21))  # as a node wrote it before: every commit
    assert _verdicts(old, pool) == {(PINNED, 21, None, None, 1)}
    ChainStore(old).close()
    _sql(old, "DELETE FROM records WHERE height >= 20")
    assert _verdicts(old, pool) == {(PINNED, 20, "tree_mismatch", 20, 1)}
    below = _signed_store(tmp_path / "below", 21, {})
    # The records past an edge of 12 complete the subtree of 16: no node leaves its edge there.
    _sql(below, "UPDATE tree_edge SET frontier = ?", _edge_at(below, 12))
    assert _verdicts(below, pool) == {(PINNED, 21, "tree_mismatch", 20, 0)}
    with pytest.raises(TreeMismatchError, match="right edge covers 12 records, yet the records past it"):
        ChainStore(below)


def test_worker_processes_check_checkpoints_as_the_sequential_verifier_does(tmp_path: Path) -> None:
    directory = _signed_store(tmp_path / "s", 40, {"cosigned": 9})
    with ChainStore(directory) as store:
        wrong = HomeSigner("local", SEED).sign(PINNED, 27, store.root(PINNED, 26))
        store.checkpoints.keep(PINNED, "signed", 27, wrong.root, wrong.note)
    [report] = verify_store(directory, None, LIMITS, workers=2, chunk=8).reports  # real processes
    [alone] = verify_store(directory, None, LIMITS, workers=1).reports
    for r in (report, alone):
        assert (r.records, r.error.code if r.error else None, r.error_height, r.checkpoints) == (
            27,
            "tree_mismatch",
            26,
            1,
        )


def test_a_chunk_is_a_power_of_two(tmp_path: Path) -> None:
    directory = _write(tmp_path / "s", [_row(r) for r in CHAIN])
    with pytest.raises(UsageError):
        verify_store(directory, None, LIMITS, chunk=3)


def test_a_shorter_ledger_gets_smaller_chunks_so_that_every_worker_has_several() -> None:
    assert chunk_size(1_000_000, 2) == CHUNK_RECORDS  # 15 chunks and a part
    assert chunk_size(100_000, 2) == MIN_CHUNK_RECORDS  # 6 and a part, not 1 and a part
    assert chunk_size(300_000, 2) == 32_768
    assert chunk_size(13, 2, 4) == 4  # a chunk asked for below the smallest is kept


@pytest.mark.parametrize(
    ("count", "workers", "chunk"), [(1_000_000, 2, CHUNK_RECORDS), (100_000, 2, 16_384), (13, 2, 8)]
)
def test_chunks_halve_towards_the_end_and_each_is_a_complete_subtree(count: int, workers: int, chunk: int) -> None:
    spans = list(chunk_spans(count, workers, chunk))
    assert [start for start, _ in spans] == [0, *(stop for _, stop in spans[:-1])] and spans[-1][1] == count
    sizes = [stop - start for start, stop in spans]
    assert sizes[0] == (chunk if count > 4 * workers * chunk else sizes[0]) <= chunk
    assert sizes == sorted(sizes, reverse=True)
    for start, stop in spans[:-1]:
        size = stop - start
        assert size & (size - 1) == 0 and start % size == 0  # a power of two at a multiple of itself
    last = spans[-1][0] - spans[-2][0]  # the last chunk's full size: it starts at a multiple of it
    assert spans[-1][0] % last == 0 and sizes[-1] <= last
    # The tail is in chunks of a sixteenth: workers taking chunks in turn end within one of those.
    assert max(sizes[-2:]) <= max(chunk // TAIL_SHRINK, 1)


def test_a_row_far_above_the_others_gets_the_sequential_verdict_at_once(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    # The chunks cover heights up to the highest row's: handed out a few at a time, the first
    # that finds its rows missing ends them, whatever the height (2**60 chunks, were all made).
    rows = [_row(r) for r in CHAIN]
    rows[-1] = (rows[-1][0], 2**60, *rows[-1][2:])
    directory = _write(tmp_path / "s", rows)
    sequential = _sequential(directory)
    assert sequential == [(LEDGER, 12, "height_gap", 2**60)]
    for chunk in (1, 4):
        assert _chunked(directory, chunk, pool) == sequential


def test_the_worker_processes_of_the_command_line_are_forked(tmp_path: Path) -> None:
    directory = _write(tmp_path / "s", [_row(r) for r in CHAIN])
    forked = verify_store(directory, None, LIMITS, workers=2, chunk=8, fork=True)
    served = verify_store(directory, None, LIMITS, workers=2, chunk=8)
    assert [(r.records, r.head, r.error) for r in forked.reports] == [
        (r.records, r.head, r.error) for r in served.reports
    ]
    assert forked.reports[0].records == len(CHAIN)
    # fork only where no other thread can be caught mid-flight; the forkserver when not asked.
    alone = threading.active_count() == 1
    assert _worker_context(True).get_start_method() == ("fork" if alone else "forkserver")
    assert _worker_context(False).get_start_method() == "forkserver"
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert _worker_context(True).get_start_method() == "forkserver"
    finally:
        stop.set()
        other.join()


# --- the stored tree rows: what the node checks when it opens the store ------------------------


def _tree_row(directory: Path, level: int, index: int) -> bytes:
    with contextlib.closing(sqlite3.connect(directory / DB_NAME)) as db:
        row = db.execute("SELECT hash FROM tree WHERE level = ? AND idx = ?", (level, index)).fetchone()
    return bytes(row[0])


@pytest.mark.parametrize(("level", "index"), [(4, 0), (4, 2), (5, 1), (6, 0)])
def test_a_changed_tree_row_fails_at_the_record_that_completes_it(
    tmp_path: Path, pool: ThreadPoolExecutor, level: int, index: int
) -> None:
    """A stored subtree changed under a stopped node: the node refuses the store (tree_mismatch),
    and so does verify, naming the row, at its last record, sequentially and in chunks."""
    directory = _signed_store(tmp_path / "s", 100, {})
    good = _tree_row(directory, level, index)
    _sql(directory, "UPDATE tree SET hash = ? WHERE level = ? AND idx = ?", good[::-1], level, index)
    last = ((index + 1) << level) - 1
    assert _verdicts(directory, pool) == {(PINNED, last + 1, "tree_mismatch", last, 0)}
    [report] = verify_store(directory, None, LIMITS, workers=1).reports
    assert report.error is not None
    assert f"ledger {PINNED!r}: the stored tree's node at level {level}, index {index} does not match" in str(
        report.error.message
    )
    with pytest.raises(TreeMismatchError, match=f"level {level}, index {index}"):
        ChainStore(directory).close()  # what the node says of the same store


def test_a_missing_or_extra_tree_row_fails(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    directory = _signed_store(tmp_path / "s", 100, {})
    _sql(directory, "DELETE FROM tree WHERE level = 4 AND idx = 3")
    assert _verdicts(directory, pool) == {(PINNED, 64, "tree_mismatch", 63, 0)}
    extra = _signed_store(tmp_path / "extra", 100, {})
    _sql(extra, "INSERT INTO tree VALUES (?, 4, 6, ?)", PINNED, bytes(32))  # 6 * 16 + 16 > 100 records
    assert _verdicts(extra, pool) == {(PINNED, 100, "tree_mismatch", 99, 0)}
    above = _signed_store(tmp_path / "above", 100, {})
    _sql(above, "INSERT INTO tree VALUES (?, 7, 0, ?)", PINNED, bytes(32))  # a level 100 records do not reach
    [report] = verify_store(above, None, LIMITS, workers=1).reports
    assert report.error is not None and "level 7, index 0 past its 100 records" in report.error.message
    gone = _signed_store(tmp_path / "gone", 100, {})
    _sql(gone, "DELETE FROM tree_edge")
    assert _verdicts(gone, pool) == {(PINNED, 100, "tree_mismatch", 99, 0)}


def test_worker_processes_check_the_tree_rows_of_their_chunks(tmp_path: Path) -> None:
    """Chunks of 16 and more (real processes) return their subtrees: the same verdict."""
    directory = _signed_store(tmp_path / "s", 200, {})
    _sql(directory, "UPDATE tree SET hash = ? WHERE level = 4 AND idx = 9", bytes(32))
    for chunk in (16, 32):
        [report] = verify_store(directory, None, LIMITS, workers=2, chunk=chunk).reports
        assert (report.records, report.error.code if report.error else None, report.error_height) == (
            160,
            "tree_mismatch",
            159,
        )


# --- columns of another type: a tampered store is a finding, never a traceback ------------------


def _loosen(directory: Path, table: str, column: str) -> None:
    """Drop the NOT NULL of ``table.column`` from the schema, as a tamperer may: NULL can then be stored."""
    with contextlib.closing(sqlite3.connect(directory / DB_NAME)) as db:
        (kind,) = db.execute("SELECT type FROM pragma_table_info(?) WHERE name = ?", (table, column)).fetchone()
        db.execute("PRAGMA writable_schema = ON")
        db.execute(
            "UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE name = ?",
            (f"{column} {kind} NOT NULL", f"{column} {kind}", table),
        )
        db.commit()


# (table, column, the value stored: SQL, the row's condition) -> (records verified, code, height, message part).
TYPE_TAMPERED = [
    ("records", "data", "CAST(data AS TEXT)", "height = 5", (5, "malformed", 5, "data column is stored as TEXT")),
    ("records", "data", "1.5", "height = 5", (5, "malformed", 5, "data column is stored as REAL")),
    ("records", "data", "7", "height = 5", (5, "malformed", 5, "data column is stored as INTEGER")),
    ("records", "data", "NULL", "height = 5", (5, "malformed", 5, "data column is stored as NULL")),
    (
        "records",
        "hash",
        "CAST(hash AS TEXT)",
        "height = 5",
        (5, "index_mismatch", 5, "hash column holds a value stored as TEXT"),
    ),
    ("records", "hash", "NULL", "height = 5", (5, "index_mismatch", 5, "stored as NULL, not as BLOB")),
    ("records", "author", "X'61646d696e'", "height = 5", (5, "index_mismatch", 5, "stored as BLOB, not as TEXT")),
    ("records", "request_id", "NULL", "height = 5", (5, "index_mismatch", 5, "stored as NULL, not as TEXT")),
    ("records", "height", "'x'", "height = 5", (5, "height_gap", 6, "expected height 5")),
    ("records", "height", "X'05'", "height = 5", (5, "height_gap", 6, "expected height 5")),
    ("records", "ledger", "CAST(ledger AS BLOB)", "height = 5", (5, "height_gap", 6, "expected height 5")),
    (
        "tree",
        "hash",
        "CAST(hash AS TEXT)",
        "level = 4 AND idx = 1",
        (32, "tree_mismatch", 31, "index 1 is stored as TEXT"),
    ),
    ("tree", "hash", "2.5", "level = 4 AND idx = 1", (32, "tree_mismatch", 31, "index 1 is stored as REAL")),
    ("tree", "hash", "9", "level = 4 AND idx = 1", (32, "tree_mismatch", 31, "index 1 is stored as INTEGER")),
    ("tree", "hash", "NULL", "level = 4 AND idx = 1", (32, "tree_mismatch", 31, "index 1 is stored as NULL")),
    ("tree_edge", "frontier", "CAST(frontier AS TEXT)", "1", (40, "tree_mismatch", 39, "edge is stored as TEXT")),
    ("tree_edge", "frontier", "0.5", "1", (40, "tree_mismatch", 39, "edge is stored as REAL")),
    ("tree_edge", "frontier", "NULL", "1", (40, "tree_mismatch", 39, "edge is stored as NULL")),
    ("checkpoints", "note", "CAST(note AS TEXT)", "kind = 'signed'", (40, "bad_field", 40, "stored as another type")),
    ("checkpoints", "note", "3", "kind = 'signed'", (40, "bad_field", 40, "stored as another type")),
    ("checkpoints", "note", "NULL", "kind = 'signed'", (40, "bad_field", 40, "stored as another type")),
]


@pytest.mark.parametrize(("table", "column", "value", "where", "expected"), TYPE_TAMPERED)
def test_a_column_of_another_type_is_a_finding_of_its_ledger(
    tmp_path: Path, pool: ThreadPoolExecutor, table: str, column: str, value: str, where: str, expected: Any
) -> None:
    """A column a tamperer stored as another type (`UPDATE ... SET col = CAST(col AS TEXT)`, a
    number, NULL) fails its ledger with the code of a changed value there, at its record,
    sequentially and in chunks: before, a TEXT tree row or record was a TypeError (or SQLite's
    UTF-8 error) and a traceback of `vledger verify`."""
    directory = _signed_store(tmp_path / "s", 40, {"signed": 16, "cosigned": 20})
    _loosen(directory, table, column)
    _sql(directory, f"UPDATE {table} SET {column} = {value} WHERE {where}")
    records, code, height, message = expected
    checked = 2 if table != "checkpoints" else 1
    assert _verdicts(directory, pool) == {(PINNED, records, code, height, checked if records >= 20 else 0)}
    [report] = verify_store(directory, None, LIMITS, workers=1).reports
    assert report.error is not None and message in report.error.message, report.error.message


@pytest.mark.parametrize("value", ["CAST(prefix AS TEXT)", "3"])
def test_a_hash_index_row_of_another_type_is_an_index_mismatch(tmp_path: Path, value: str) -> None:
    """A prefix stored as TEXT with the very bytes of the BLOB: the node's lookups (by a BLOB)
    never find it, so it fails as a wrong row (before, its bytes summed as the right ones)."""
    directory = _signed_store(tmp_path / "s", 1030, {})  # past the first run of the index
    _sql(directory, f"UPDATE hash_rows SET prefix = {value} WHERE height = 7")
    [report] = verify_store(directory, None, LIMITS, workers=1).reports
    assert (report.records, report.error.code if report.error else None, report.error_height) == (
        7,
        "index_mismatch",
        7,
    )
    assert report.error is not None and "holds a value stored as" in report.error.message


@pytest.mark.parametrize("value", ["'zz'", "2.5", "X'01'"])
def test_a_filled_mark_of_another_type_fails_the_store(tmp_path: Path, value: str) -> None:
    directory = _signed_store(tmp_path / "s", 1030, {})
    _sql(directory, f"UPDATE hashes_filled SET size = {value}")
    with pytest.raises(RecordError, match="filled mark of ledger 'votes' is stored as") as raised:
        verify_store(directory, None, LIMITS, workers=1)
    assert raised.value.code == "index_mismatch"
