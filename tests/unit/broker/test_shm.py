"""Our shared memory and semaphores carry their owner's pid; a dead owner's are removed, a live one's kept."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vledger.broker import shm


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_only_our_names_of_processes_that_no_longer_run_are_removed(tmp_path: Path) -> None:
    dead, alive = _dead_pid(), os.getpid()
    names = {
        f"vledger-{dead}-0a1b2c3d": True,
        f"sem.vledger-{dead}-k_x9ab12": True,
        f"vledger-{alive}-0a1b2c3d": False,  # its owner runs: still in use
        f"sem.vledger-{alive}-abcdefgh": False,
        f"vledger-{dead}": False,  # not of our form: not ours to judge
        "psm_0a1b2c3d": False,  # multiprocessing's names: nothing says whose they are
        f"sem.mp-{dead}-abc": False,
        f"vledger-0{dead}-abc": False,
    }
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    removed = shm.remove_stale(tmp_path)
    assert sorted(removed) == sorted(n for n, stale in names.items() if stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for n, stale in names.items() if not stale)


def test_a_directory_that_cannot_be_read_removes_nothing(tmp_path: Path) -> None:
    assert shm.remove_stale(tmp_path / "missing") == []


def test_shared_memory_is_named_by_its_owner() -> None:
    segment = shm.shared_memory(4096)
    try:
        assert segment.name.startswith(f"vledger-{os.getpid()}-") and segment.size >= 4096
        assert (shm.SHM_DIR / segment.name).exists()
        assert segment.name not in shm.remove_stale()  # its owner runs
    finally:
        segment.close()
        segment.unlink()


def test_a_spawn_context_s_semaphores_are_named_by_their_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    config = multiprocessing.current_process()._config  # type: ignore[attr-defined]
    monkeypatch.setitem(config, "semprefix", "/mp")  # put back after the test
    shm.name_semaphores()
    lock = multiprocessing.get_context("spawn").Lock()
    name = lock._semlock.name  # type: ignore[attr-defined]
    assert name.startswith(f"/vledger-{os.getpid()}-")
    assert (shm.SHM_DIR / f"sem.{name[1:]}").exists()
