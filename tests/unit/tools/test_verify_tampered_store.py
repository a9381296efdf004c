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
from vledger.tools.report import verification_json
from vledger.tools.verification import verify_store

LIMITS = Limits()
LEDGER = "ledger-a"
OTHER = "ledger-b"


def _note(ledger: str, size: int, root: bytes) -> bytes:
    """A note of the checkpoint (size, root) of ``ledger`` (no key is pinned: its signature is not checked)."""
    body = f"test/{ledger}\n{size}\n{base64.b64encode(root).decode()}\n"
    return f"{body}\n\u2014 test {base64.b64encode(bytes(40)).decode()}\n".encode()


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
                    ledger, COSIGNED, 40, store.root(ledger, 40), _note(ledger, 40, store.root(ledger, 40))
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
        shutil.copytree(live, copy)  # the commits are in its -wal: never merged while the store is open
    return live, copy


def test_verify_writes_nothing_into_the_copy_it_checks(tmp_path: Path) -> None:
    _, copy = _copy_while_open(tmp_path)
    # The database and its -wal (the -shm is SQLite's index of the -wal, which any reader rebuilds).
    kept = (DB_NAME, f"{DB_NAME}-wal")
    before = [(copy / name).read_bytes() for name in kept]
    assert verify_store(copy, None, LIMITS, workers=1).ok
    assert [(copy / name).read_bytes() for name in kept] == before
    closed = tmp_path / "live"  # closed: no -wal left; reading it creates none
    assert verify_store(closed, None, LIMITS, workers=1).ok
    assert sorted(p.name for p in closed.iterdir() if p.is_file()) == [DB_NAME]


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
