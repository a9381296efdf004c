"""`vledger verify` of a store tampered with behind its node's back (outsider pass 20, F4-F7):
each a finding, never a silent OK, and the copy it checks left as it was."""

from __future__ import annotations

import base64
import shutil
import sqlite3
from pathlib import Path

import pytest

from vledger.config.settings import Limits
from vledger.node.checkpoint_log import COSIGNED, EVIDENCE, SIGNED
from vledger.node.errors import StoreError, TreeMismatchError
from vledger.node.store import ChainStore
from vledger.node.storefile import DB_NAME
from vledger.tests.unit.ingest.note_chain import append as append_notes
from vledger.tools.exporting import export_store
from vledger.tools.report import verification_json
from vledger.tools.verification import verify_store

LIMITS = Limits()
LEDGER = "ledger-a"
OTHER = "ledger-b"


def _note(ledger: str, size: int, root: bytes, *, cosigned: bool = False) -> bytes:
    """A note of the checkpoint (size, root) of ``ledger`` (no key is pinned: its signature is not
    checked), ``cosigned`` with a witness's line after the home's, as a cosigned row's note is."""
    body = f"test/{ledger}\n{size}\n{base64.b64encode(root).decode()}\n"
    names = ("test", "test/witness/home") if cosigned else ("test",)
    return (body + "\n" + "".join(f"\u2014 {name} {base64.b64encode(bytes(40)).decode()}\n" for name in names)).encode()


def _store(directory: Path, *, keep_tree: bool = True) -> None:
    """Two ledgers of 40 records, each with a signed checkpoint at 20 and a cosigned one at 40."""
    with ChainStore(directory, origin="home", keep_tree=keep_tree) as store:
        for ledger in (LEDGER, OTHER):
            append_notes(store, ledger, 40)
        store.flush()
        if keep_tree:
            for ledger in (LEDGER, OTHER):
                store.checkpoints.keep(
                    ledger, SIGNED, 20, store.root(ledger, 20), _note(ledger, 20, store.root(ledger, 20))
                )
                store.checkpoints.keep(
                    ledger,
                    COSIGNED,
                    40,
                    store.root(ledger, 40),
                    _note(ledger, 40, store.root(ledger, 40), cosigned=True),
                )


def _sql(directory: Path, *statements: str) -> None:
    with sqlite3.connect(directory / DB_NAME) as conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()


def _failures(directory: Path) -> dict[str, str]:
    result = verify_store(directory, None, LIMITS, workers=1)
    failed = {r.ledger: f"[{r.error.code}] {r.error.message}" for r in result.reports if r.error is not None}
    if result.error is not None:
        failed[""] = f"[{result.error.code}] {result.error.message}"
    return failed


def test_a_sound_store_verifies_with_its_checkpoints(tmp_path: Path) -> None:
    _store(tmp_path)
    result = verify_store(tmp_path, None, LIMITS, workers=1)
    assert result.ok and result.tree_unchecked is None
    assert [r.checkpoints for r in result.reports] == [2, 2]


@pytest.mark.parametrize(
    "meta", ["UPDATE meta SET value = 'none' WHERE key = 'tree'", "DELETE FROM meta WHERE key = 'tree'"]
)
def test_a_meta_row_that_hides_a_zeroed_tree_node_fails(tmp_path: Path, meta: str) -> None:
    _store(tmp_path)
    _sql(tmp_path, f"UPDATE tree SET hash = zeroblob(32) WHERE ledger = '{LEDGER}' AND level = 4 AND idx = 1", meta)
    failed = _failures(tmp_path)
    assert list(failed) == [""] and failed[""].startswith(f"[{TreeMismatchError.code}] ")
    assert "keeps no Merkle tree, yet it holds tree rows" in failed[""]


def test_a_store_from_before_the_tree_verifies_and_says_its_tree_was_not_checked(tmp_path: Path) -> None:
    _store(tmp_path, keep_tree=False)
    result = verify_store(tmp_path, None, LIMITS, workers=1)
    assert result.ok and result.tree_unchecked is not None and "before the tree" in result.tree_unchecked
    assert verification_json(result)["tree_unchecked"] == result.tree_unchecked


def test_a_ledger_deleted_whole_under_its_checkpoints_fails(tmp_path: Path) -> None:
    _store(tmp_path)
    _sql(tmp_path, f"DELETE FROM records WHERE ledger = '{OTHER}'")
    failed = _failures(tmp_path)
    assert list(failed) == [OTHER]
    assert "a stored signed checkpoint of size 20, but the store holds none of its records" in failed[OTHER]


def test_a_checkpoint_row_of_a_ledger_that_never_existed_fails(tmp_path: Path) -> None:
    _store(tmp_path)
    _sql(
        tmp_path,
        "INSERT INTO checkpoints SELECT 'ghost', kind, size, root, note, at_ms FROM checkpoints "
        f"WHERE ledger = '{LEDGER}' AND size = 40",
    )
    failed = _failures(tmp_path)
    assert list(failed) == ["ghost"] and "its note is of origin 'test/ledger-a'" in failed["ghost"]


def test_evidence_of_a_ledger_without_records_is_no_finding(tmp_path: Path) -> None:
    _store(tmp_path)
    with ChainStore(tmp_path) as store:
        root = store.root(LEDGER, 20)
        store.checkpoints.keep("gone", EVIDENCE, 20, root, _note("gone", 20, root))
    assert _failures(tmp_path) == {}


@pytest.mark.parametrize(
    ("change", "wrong"),
    [
        ("size = 999", "its note says size 40"),
        ("size = 39", "its note says size 40"),
        ("root = zeroblob(32)", "its note says another root"),
    ],
)
def test_a_checkpoint_row_whose_columns_its_note_contradicts_fails(tmp_path: Path, change: str, wrong: str) -> None:
    _store(tmp_path)
    _sql(tmp_path, f"UPDATE checkpoints SET {change} WHERE ledger = '{LEDGER}' AND kind = 'cosigned'")
    failed = _failures(tmp_path)
    assert LEDGER in failed and wrong in failed[LEDGER]


def _copy_while_open(tmp_path: Path) -> tuple[Path, Path]:
    live, copy = tmp_path / "live", tmp_path / "copy"
    with ChainStore(live, origin="home") as store:
        append_notes(store, LEDGER, 40)
        store.flush()
        shutil.copytree(
            live, copy
        )  # the commits are in its -wal (copied into the file, kept there till the log restarts)
    return live, copy


def _files(directory: Path) -> dict[str, tuple[int, int, bytes]]:
    """Each entry of a folder: its size, mtime and (a file's) bytes: what evidence kept aside must keep."""
    return {
        p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
        for p in directory.iterdir()
    }


@pytest.mark.parametrize("shm", [True, False], ids=["with-its-shm", "without-a-shm"])
def test_verify_leaves_a_copy_with_its_wal_as_it_was_and_says_it_read_the_wal(tmp_path: Path, shm: bool) -> None:
    # A forensic copy (outsider 25, H10): verifying it rewrote its -shm, or made one.
    _, copy = _copy_while_open(tmp_path)
    if not shm:
        (copy / f"{DB_NAME}-shm").unlink()
    before = _files(copy)
    result = verify_store(copy, None, LIMITS, workers=2, chunk=8)  # the workers open it too
    assert result.ok and [r.records for r in result.reports] == [40]  # every record is in the -wal
    assert _files(copy) == before
    wal = (copy / f"{DB_NAME}-wal").stat().st_size
    assert result.wal_read == (f"{DB_NAME}-wal", wal)
    assert verification_json(result)["wal"] == {"file": f"{DB_NAME}-wal", "bytes": wal}


@pytest.mark.parametrize("shm", [True, False], ids=["with-its-shm", "without-a-shm"])
def test_export_leaves_a_copy_with_its_wal_as_it_was(tmp_path: Path, shm: bool) -> None:
    # As verify (outsider 25, H10): exporting a forensic copy rewrote its -shm, or made one.
    _, copy = _copy_while_open(tmp_path)
    if not shm:
        (copy / f"{DB_NAME}-shm").unlink()
    before = _files(copy)
    summary = export_store(copy, None, tmp_path / "out.jsonl", LIMITS)
    assert summary.records == 40  # every record is in the -wal
    assert _files(copy) == before


def test_verify_writes_nothing_into_a_closed_store(tmp_path: Path) -> None:
    live, _ = _copy_while_open(tmp_path)  # closed: no -wal left; reading it creates none
    result = verify_store(live, None, LIMITS, workers=1)
    assert result.ok and result.wal_read is None
    assert sorted(p.name for p in live.iterdir() if p.is_file()) == [DB_NAME]


def test_verify_reads_a_running_stores_newest_commits(tmp_path: Path) -> None:
    # What the cluster demo does: the node's own -shm is live, and read as a reader does.
    with ChainStore(tmp_path / "live", origin="home") as store:
        append_notes(store, LEDGER, 40)
        store.flush()
        first = verify_store(tmp_path / "live", None, LIMITS, workers=1)
        append_notes(store, LEDGER, 10)
        store.flush()
        second = verify_store(tmp_path / "live", None, LIMITS, workers=1)
    assert first.ok and second.ok
    assert [r.records for r in first.reports] == [40] and [r.records for r in second.reports] == [50]


def test_a_copy_without_its_wal_says_so(tmp_path: Path) -> None:
    _, copy = _copy_while_open(tmp_path)
    (copy / f"{DB_NAME}-wal").unlink()
    (copy / f"{DB_NAME}-shm").unlink()
    with pytest.raises(StoreError, match=r"not a vledger store: .*no chain\.sqlite3-wal beside it"):
        verify_store(copy, None, LIMITS, workers=1)
    assert sorted(p.name for p in copy.iterdir() if p.is_file()) == [DB_NAME]


def test_a_checkpoint_note_stored_as_text_is_its_ledgers_finding_not_a_crash(tmp_path: Path) -> None:
    _store(tmp_path)
    _sql(tmp_path, f"UPDATE checkpoints SET note = CAST(note AS TEXT) WHERE ledger = '{OTHER}' AND kind = 'cosigned'")
    failed = _failures(tmp_path)
    assert list(failed) == [OTHER]


@pytest.mark.parametrize(
    ("kind", "change", "wrong"),
    [
        # A cosigned row relabelled signed counted as a second checkpoint (outsider pass 20, F6).
        ("cosigned", "kind = 'signed'", "its note carries 2 signatures, where a home signs with one"),
        ("cosigned", "kind = 'imported:signed'", "its note carries 2 signatures, where a home signs with one"),
        ("signed", "kind = 'cosigned'", "its note carries no cosignature, only its home's signature"),
        ("signed", "kind = 'imported:cosigned'", "its note carries no cosignature, only its home's signature"),
        ("cosigned", "kind = 'outside:someone'", "its note carries no signature by someone"),
        ("cosigned", "kind = 'bogus'", "its kind 'bogus' is none that a node writes"),
        ("cosigned", "kind = CAST(kind AS BLOB)", "its kind b'cosigned' is none that a node writes"),
        ("cosigned", "at_ms = 'soon'", "its at_ms is 'soon', no time in milliseconds"),
        ("cosigned", "at_ms = 1.5", "its at_ms is 1.5, no time in milliseconds"),
        ("cosigned", "at_ms = -1", "its at_ms is -1, no time in milliseconds"),
        ("signed", "size = 'twenty'", "its size is stored as TEXT, not as an integer"),
    ],
)
def test_a_checkpoint_row_whose_kind_or_time_is_none_a_node_writes_fails(
    tmp_path: Path, kind: str, change: str, wrong: str
) -> None:
    _store(tmp_path)
    _sql(tmp_path, f"UPDATE checkpoints SET {change} WHERE ledger = '{LEDGER}' AND kind = '{kind}'")
    failed = _failures(tmp_path)
    assert list(failed) == [LEDGER] and wrong in failed[LEDGER]


def test_an_older_checkpoint_row_is_compared_with_its_note_too(tmp_path: Path) -> None:
    # Not the latest signed row (30 is), which is all a node reads of its signed rows at open.
    _store(tmp_path)
    with ChainStore(tmp_path) as store:
        root = store.root(LEDGER, 30)
        store.checkpoints.keep(LEDGER, SIGNED, 30, root, _note(LEDGER, 30, root))
    _sql(tmp_path, f"UPDATE checkpoints SET root = zeroblob(32) WHERE ledger = '{LEDGER}' AND size = 20")
    failed = _failures(tmp_path)
    assert list(failed) == [LEDGER] and "signed row at size 20: its note says another root" in failed[LEDGER]


def test_a_checkpoint_row_whose_ledger_is_no_text_fails_the_store(tmp_path: Path) -> None:
    _store(tmp_path)
    _sql(
        tmp_path, f"UPDATE checkpoints SET ledger = CAST(ledger AS BLOB) WHERE ledger = '{LEDGER}' AND kind = 'signed'"
    )
    failed = _failures(tmp_path)
    assert list(failed) == [""] and "its ledger is stored as BLOB, not as TEXT" in failed[""]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("height = 'abc'", "a row of the ledger holds its height as TEXT ('abc'), not as an integer"),
        ("height = X'1e'", "a row of the ledger holds its height as BLOB (b'\\x1e'), not as an integer"),
        ("ledger = CAST(ledger AS BLOB)", "the row at height 30 holds its ledger as BLOB (b'ledger-a'), not as TEXT"),
    ],
)
def test_a_height_missing_for_a_column_of_another_type_says_so(tmp_path: Path, change: str, why: str) -> None:
    # Reported as a bare gap before: the pages read a ledger's rows by their integer heights.
    _store(tmp_path)
    _sql(tmp_path, f"UPDATE records SET {change} WHERE ledger = '{LEDGER}' AND height = 30")
    failed = _failures(tmp_path)
    assert failed[LEDGER].startswith("[height_gap] ") and failed[LEDGER].endswith(why)
