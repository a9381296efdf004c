"""bench/disk_writes.py: each kind of durable write is timed, and the in-place ones never extend their file."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from vledger.bench import disk_writes


def test_an_in_place_write_overwrites_the_preallocated_file_without_extending_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(disk_writes, "PREALLOCATED", 64 * 1024)
    path = tmp_path / "in_place"
    with ExitStack() as stack:
        op = disk_writes._in_place(path, 8_240, stack)
        for _ in range(5):
            op()
        assert path.read_bytes() == b"\2" * (5 * 8_240) + b"\1" * (64 * 1024 - 5 * 8_240)
        for _ in range(5):  # 7 writes fill the file: the 8th goes back to its start
            op()
    assert path.read_bytes() == b"\2" * (7 * 8_240) + b"\1" * (64 * 1024 - 7 * 8_240)  # never extended


def test_every_kind_of_write_gets_its_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(disk_writes, "PREALLOCATED", 256 * 1024)
    monkeypatch.setattr(disk_writes, "GROW_PUTS", 3)

    assert disk_writes.main(["--count", "3", "--rounds", "2"]) == 0

    lines = capsys.readouterr().out.splitlines()[1:]
    names = [f"in place {size:,} B + fdatasync" for size in disk_writes.SIZES]
    names += [f"appended {size:,} B + fdatasync" for size in disk_writes.SIZES]
    names += ["appended 320 B + fsync (4e's ceiling)", "lone put (submit_entries + flush)"]
    assert [line.split(" wall")[0].strip() for line in lines] == names
    assert all(float(line.split()[-3]) > 0 for line in lines)  # each took time: it ran
