"""bench/lone_put_ab.py: each side runs the code asked for, its blocks are summed up, and a tiny run reports both."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from vledger.bench import ingest, lone_put_ab
from vledger.bench.ingest import _RunningNode
from vledger.bench.lone_put_ab import Side, b_lower, code_tree


def test_a_side_sums_its_blocks_per_put() -> None:
    side = Side("A")
    side.add_block([1.0, 2.0, 3.0], {"node": 0.003, "main": 0.0015})
    side.add_block([4.0, 5.0], {"node": 0.004, "main": 0.002})

    assert side.put_ms == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert side.block_p50_ms == [2.0, 4.5]
    assert side.cpu_us == {"node": pytest.approx([1_000, 2_000]), "main": pytest.approx([500, 1_000])}
    assert side.line() == "A: p50 3.000 ms (blocks' median 3.250), CPU us a put (mean of blocks): node 1500  main 750"


def test_b_lower_counts_the_blocks_where_b_was_faster() -> None:
    a, b = Side("A"), Side("B")
    for p50_a, p50_b in ((1.0, 0.9), (1.0, 1.1), (1.0, 1.0), (2.0, 1.0)):
        a.add_block([p50_a], {})
        b.add_block([p50_b], {})
    assert b_lower(a, b) == 2


def test_the_working_tree_is_linked_and_a_revision_exported(tmp_path: Path) -> None:
    here = code_tree(".", tmp_path)
    assert (here / "vledger").resolve() == lone_put_ab.CHECKOUT

    exported = code_tree("HEAD", tmp_path)
    assert exported != here
    committed = subprocess.run(
        ["git", "-C", str(lone_put_ab.CHECKOUT), "show", "HEAD:node/store.py"], capture_output=True, check=True
    ).stdout
    assert (exported / "vledger" / "node" / "store.py").read_bytes() == committed


def test_an_unknown_revision_is_refused(tmp_path: Path) -> None:
    with pytest.raises(subprocess.CalledProcessError):
        code_tree("no-such-revision-p36", tmp_path)


def test_a_tiny_run_reports_both_sides_each_node_on_its_code_and_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started: list[tuple[Path, str]] = []  # what each node's vledger resolves to, and its cluster file, while it runs

    @contextmanager
    def node(directory: Path, **kwargs: Any) -> Iterator[_RunningNode]:
        with ingest._node(directory, **kwargs) as running:
            environ = Path(f"/proc/{running.pid}/environ").read_bytes().split(b"\0")
            path = next(v for v in environ if v.startswith(b"PYTHONPATH=")).decode().removeprefix("PYTHONPATH=")
            package = Path(path.split(os.pathsep)[0]) / "vledger"
            assert (package / "node" / "store.py").is_file()
            started.append((package.resolve(), (directory / "cluster.toml").read_text()))
            yield running

    monkeypatch.setattr(lone_put_ab, "_node", node)
    settings = "[replication]\\noutbox_interval_ms = 50"  # as typed on a command line
    args = ["--a", "HEAD", "--blocks", "2", "--block", "3", "--warm", "2", "--b-settings", settings]
    assert lone_put_ab.main(args) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("2 blocks of 3 lone puts each side")
    assert lines[2].startswith("  A: p50 ") and "node " in lines[2] and "children " in lines[2]
    assert lines[3].startswith("  B: p50 ")
    assert lines[4].startswith("  B's p50 lower in ") and lines[4].endswith(" of 2 blocks")
    (code_a, config_a), (code_b, config_b) = started
    assert code_a != lone_put_ab.CHECKOUT  # HEAD, exported
    assert code_b == lone_put_ab.CHECKOUT  # the working tree
    assert "outbox_interval_ms" not in config_a
    assert "\n[replication]\noutbox_interval_ms = 50\n" in config_b
