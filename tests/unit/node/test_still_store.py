"""The private folder a copy kept as evidence is read from when it has a -wal and no -shm
(node/still_store.py): where it lives, who removes it, what it may name."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from vledger.node import still_store as still_module
from vledger.node.errors import StoreError
from vledger.node.still_store import still_store
from vledger.node.store import ChainStore
from vledger.node.storefile import DB_NAME, StoreReader, shm_of, wal_of
from vledger.tests.unit.ingest.note_chain import append as append_notes

LEDGER = "ledger-a"


@pytest.fixture
def copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy taken while its store was open (its commits in its -wal), without its -shm; the
    system's temporary folder is one of this test's own."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    live, taken = tmp_path / "live", tmp_path / "copy"
    with ChainStore(live, origin="home") as store:
        append_notes(store, LEDGER, 10)
        store.flush()
        shutil.copytree(live, taken)
    shm_of(taken / DB_NAME).unlink()
    assert wal_of(taken / DB_NAME).stat().st_size > 0
    return taken


def _private(temp: Path) -> list[Path]:
    return sorted(temp.glob("vledger-still-*"))


def test_a_folder_left_by_a_reader_killed_mid_read_is_removed_by_the_next_read(copy: Path) -> None:
    """kill -9 while verifying left the private folder, a second name of the evidence's file
    (its link count 2 for ever), in the temporary folder, which nothing removed."""
    temp = Path(tempfile.gettempdir())
    code = (
        "import sys, time; from pathlib import Path; from vledger.node.still_store import still_store\n"
        "with still_store(Path(sys.argv[1])) as still:\n"
        "    print(still.directory, flush=True); time.sleep(60)\n"
    )
    reader = subprocess.Popen([sys.executable, "-c", code, str(copy)], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None
        view = Path(reader.stdout.readline().strip())
        assert view.parent.parent == temp and (view / DB_NAME).is_file()
        assert (copy / DB_NAME).stat().st_nlink == 2  # hard-linked, as on one file system
    finally:
        reader.send_signal(signal.SIGKILL)
        reader.wait(timeout=30)
    assert _private(temp) == [view.parent]  # left behind: nobody's to remove but the next reader's
    with still_store(copy) as still:
        assert still.directory.parent.name.startswith(f"vledger-still-{os.getpid()}-")
        assert _private(temp) == [still.directory.parent]  # the dead reader's is gone
    assert _private(temp) == []
    assert (copy / DB_NAME).stat().st_nlink == 1


def test_a_folder_of_a_reader_still_running_is_left_alone(copy: Path) -> None:
    temp = Path(tempfile.gettempdir())
    running = temp / f"vledger-still-{os.getppid()}-abc"  # the process that started these tests
    running.mkdir()
    with still_store(copy):
        pass
    assert _private(temp) == [running]


@pytest.mark.parametrize("name", [DB_NAME, f"{DB_NAME}-wal"])
def test_a_store_file_that_is_a_symbolic_link_is_refused_and_what_it_names_never_linked(
    copy: Path, tmp_path: Path, name: str
) -> None:
    """A copy whose file is a symbolic link had the file it names, anywhere, hard-linked (or
    copied) into the temporary folder and read as the copy's."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (copy / name).rename(outside / name)
    (copy / name).symlink_to(outside / name)
    with pytest.raises(StoreError, match=f"{name} is a symbolic link"), still_store(copy):
        pass
    assert (outside / name).stat().st_nlink == 1
    assert _private(Path(tempfile.gettempdir())) == []


def test_a_link_refused_across_file_systems_is_a_copy_and_leaves_nothing(
    copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cross_device(source: object, target: object, **options: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(still_module.os, "link", cross_device)
    with still_store(copy) as still:
        assert (copy / DB_NAME).stat().st_nlink == 1  # a copy, not a second name
        reader = StoreReader(still.directory, still=True)
        try:
            assert reader.size(LEDGER) == 10
        finally:
            reader.close()
    assert _private(Path(tempfile.gettempdir())) == []
