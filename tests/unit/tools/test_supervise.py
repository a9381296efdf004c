"""`vledger supervise status` (make status): its exit code."""

from __future__ import annotations

import subprocess
from pathlib import Path

from vledger.config.cluster import load_cluster
from vledger.config.supervisor import EXIT_STORE_DAMAGED
from vledger.tools import supervise
from vledger.tools.supervise import EXIT_NOT_RUNNING, EXIT_OK, status_code


def test_a_process_still_starting_is_not_running_yet() -> None:
    assert status_code(0, {"redis": "RUNNING", "ingest-1": "RUNNING"}) == EXIT_OK
    assert status_code(0, {"redis": "RUNNING", "ingest-1": "STARTING"}) == EXIT_NOT_RUNNING
    assert status_code(0, {"redis": "RUNNING", "ingest-1": "BACKOFF"}) == EXIT_NOT_RUNNING
    assert status_code(0, {}) == EXIT_NOT_RUNNING  # nothing configured is nothing running
    assert status_code(3, {"ingest-1": "STOPPED"}) == 3  # supervisorctl's own answer stands


def test_make_help_names_what_make_run_starts() -> None:
    root = Path(__file__).resolve().parents[3]
    config = load_cluster(root / "config" / "cluster.toml")
    help_text = subprocess.run(["make", "-s", "help"], cwd=root, capture_output=True, text=True, check=True).stdout
    counts = {role: len(config.nodes_of(role)) for role in ("ingest", "replica", "observer", "verifier")}
    said = {
        "ingest": f"{counts['ingest']} ingest nodes",
        "replica": f"{counts['replica']} replicas",
        "observer": f"{counts['observer']} observers",
        "verifier": f"{counts['verifier']} verifier",
    }
    flat = " ".join(help_text.split())
    assert "Redis" in flat and all(text in flat for text in said.values()), (said, flat)


def test_only_fatal_or_the_store_damaged_exit_is_given_up() -> None:
    # A program that ended with any other status sits in EXITED until supervisord's next tick
    # restarts it: `supervise start` must wait for it, not fail.
    assert supervise.gave_up({"statename": "FATAL", "exitstatus": 1})
    assert supervise.gave_up({"statename": "EXITED", "exitstatus": EXIT_STORE_DAMAGED})
    assert not supervise.gave_up({"statename": "EXITED", "exitstatus": 1})
    assert not supervise.gave_up({"statename": "EXITED", "exitstatus": 0})
    assert not supervise.gave_up({"statename": "BACKOFF", "exitstatus": EXIT_STORE_DAMAGED})
