"""TrustedState: the largest verified checkpoint per ledger, kept owner-only and refused when it is not one."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from vledger.client.state import Seen, TrustedState
from vledger.node.errors import SettingsError

ROOT = bytes(range(32))


def test_kept_in_memory_without_a_file() -> None:
    state = TrustedState()
    assert state.get("a") is None
    state.put("a", Seen(3, ROOT))
    assert state.get("a") == Seen(3, ROOT)


def test_written_whole_owner_only_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "trusted.json"
    state = TrustedState(path)
    state.put("a", Seen(3, ROOT))
    state.put("b", Seen(9, bytes(32)))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text())["ledgers"]["a"] == {"size": 3, "root": ROOT.hex()}
    assert [p.name for p in tmp_path.iterdir()] == ["trusted.json"]  # no temporary file left behind
    assert TrustedState(path).get("b") == Seen(9, bytes(32))


def test_an_epoch_after_the_first_is_kept_with_its_home(tmp_path: Path) -> None:
    path = tmp_path / "trusted.json"
    TrustedState(path).put("a", Seen(3, ROOT, 2, "ingest-2"))
    entry = {"size": 3, "root": ROOT.hex(), "epoch": 2, "home": "ingest-2"}
    assert json.loads(path.read_text())["ledgers"]["a"] == entry
    assert TrustedState(path).get("a") == Seen(3, ROOT, 2, "ingest-2")


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"version": 2, "ledgers": {}}',
        '{"version": 1, "ledgers": {"a": {"size": true, "root": "' + "00" * 32 + '"}}}',
        '{"version": 1, "ledgers": {"a": {"size": 1, "root": "00"}}}',
        '{"version": 1, "ledgers": {"a": {"size": 1, "root": "' + "zz" * 32 + '"}}}',
        '{"version": 1, "ledgers": {"../x": {"size": 1, "root": "' + "00" * 32 + '"}}}',
        '{"version": 1, "ledgers": {"a": {"size": 1, "root": "' + "00" * 32 + '", "epoch": 1, "home": "n"}}}',
        '{"version": 1, "ledgers": {"a": {"size": 1, "root": "' + "00" * 32 + '", "epoch": 2}}}',
        '{"version": 1, "ledgers": {"a": {"size": 1, "root": "' + "00" * 32 + '", "epoch": 2, "home": "a b"}}}',
        '{"version": 1, "ledgers": {"a": {"size": 1, "root": "' + "00" * 32 + '", "epoch": true, "home": "n"}}}',
        "[" * 100_000 + "]" * 100_000,  # deeper than json can read: its RecursionError is no ValueError
    ],
)
def test_a_file_that_is_not_one_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "trusted.json"
    path.write_text(text)
    with pytest.raises(SettingsError, match="not a trusted-state file"):
        TrustedState(path)
