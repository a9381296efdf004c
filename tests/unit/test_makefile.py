"""`make test`, the README's and CI's test command, runs the suite on two pytest-xdist workers."""

from __future__ import annotations

import shlex
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _test_command() -> list[str]:
    # -n: print what make would run without running it; -W: as if the install stamp were fresh.
    done = subprocess.run(
        ["make", "-n", "-W", ".venv/.installed", "test"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    (line,) = [line for line in done.stdout.splitlines() if " -m pytest" in line]
    return shlex.split(line)


def test_make_test_runs_on_two_workers_a_module_at_a_time() -> None:
    command = _test_command()
    assert command[command.index("-n") + 1] == "2"
    # Module-scoped clusters, and tests that build on the ones before them in their module.
    assert command[command.index("--dist") + 1] == "loadscope"


def test_xdist_is_a_dev_dependency() -> None:
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"][
        "dev"
    ]
    assert any(requirement.startswith("pytest-xdist") for requirement in dev)
