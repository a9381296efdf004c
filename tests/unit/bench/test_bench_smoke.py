"""`python -m bench --quick` produces every figure, as numbers, in both result files.

Speed itself is never asserted here (the project's rule): only that the bench runs and reports.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from vledger.bench import __main__ as bench_main
from vledger.bench.__main__ import SECTIONS

REPO = Path(__file__).resolve().parents[3]
# Across hosts (bench/hosts.py): network namespaces need root; elsewhere the section says why and skips.
HOSTS_FIGURES = ("10a-p50", "10a-p99", "10b")
FIGURES = {
    *("1a", "1b", "1c", "1d", "2a", "2b", "2c-10k", "2c-100k", "2c-1M", "2d-verify", "3a", "3b", "3c"),
    *("4a", "4b", "4c", "4d", "4e", "4f", "4g"),
    *("5a-p50", "5a-p99", "5b", "5c", "5d"),
    *("6a", "6a-1", "6b", "6c"),  # 2d-worker only when the curve's stores are large enough for workers
    "7a",
    *("8a", "8b", "8c", "8d"),
    *("9a-1", "9a-2", "9b", "9c", "9d", "9e", "9f"),  # 9a-4 to 9a-16: the same loop, in make bench only
    *HOSTS_FIGURES,
}


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_quick_bench_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results"
    # Every section but the one across hosts: its cluster of network namespaces, started beside
    # tests/multihost's on the other worker, starved both on 2 cores (Sentinel timeouts). Its
    # figures come from `make bench` and the paths it drives are tests/multihost's own.
    # The narrower runs (NARROW: part of a section, by --only alone) are left to their own tests.
    only = [arg for name in SECTIONS if name != "hosts" for arg in ("--only", name)]
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), *only],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr

    report = json.loads((out / "latest.json").read_text())
    figures = {f["key"]: f for f in report["figures"]}
    expected = FIGURES - set(HOSTS_FIGURES)
    assert set(figures) == expected
    for key, figure in figures.items():
        assert _finite(figure["value"]), key
        assert _finite(figure["ceiling"]["value"]), key
        assert _finite(figure["ratio"]), key
        assert figure["unit"] and figure["ceiling"]["name"], key
        assert figure["target"] is None or _finite(figure["target"]), key
        assert figure["met"] in (True, False, None), key
        for also in figure["also"]:
            assert _finite(also["value"]) and _finite(also["ratio"]), key
    assert report["environment"]["quick"] is True

    table = (out / "latest.md").read_text()
    assert "| figure | value | unit | ceiling | ratio | target | met |" in table
    for key in expected:
        assert f"| {key} " in table, key
    assert done.stdout == table


@pytest.mark.parametrize(
    ("only", "sections"),
    [
        (["ingest-desk"], {"4c": "ingest-desk", "4d": "ingest-desk", "4e": "ingest-desk", "4f": "ingest-desk"}),
        (["sweep", "verify-core"], {"2a": "verify-core", "2b": "verify-core", "6a": "sweep", "6a-1": "sweep"}),
    ],
    ids=["ingest-desk", "sweep+verify-core"],
)
def test_a_narrow_run_writes_only_its_figures(tmp_path: Path, only: list[str], sections: dict[str, str]) -> None:
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), *(a for o in only for a in ("--only", o))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    figures = {f["key"]: f for f in json.loads((out / "latest.json").read_text())["figures"]}
    assert set(figures) == set(sections)
    for key, figure in figures.items():
        assert _finite(figure["value"]) and _finite(figure["ceiling"]["value"]), key
        assert figure["command"].endswith(f"--only {sections[key]}"), key


def test_a_narrow_run_leaves_the_full_runs_table_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full, partial = tmp_path / "results", tmp_path / "results" / "partial"
    monkeypatch.setattr(bench_main, "RESULTS", full)
    monkeypatch.setattr(bench_main, "PARTIAL", partial)
    assert bench_main.main(["--quick", "--only", "verify-core"]) == 0
    assert (partial / "latest.md").is_file() and not (full / "latest.md").exists()
