"""What the e2e and the multihost fixtures share: a module's cluster, stopped always, its folder
kept and its logs put in the report of a failing test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest


class Cluster(Protocol):
    """SupervisedCluster (tests/e2e/helpers.py) and HostsCluster (tests/multihost/hosts.py)."""

    directory: Path
    layout: Any  # a SupervisorLayout: its log_dir

    def log_tails(self) -> list[tuple[str, str]]: ...

    def stop(self) -> str: ...


C = TypeVar("C", bound=Cluster)

RUNNING: list[Cluster] = []  # clusters started and not yet stopped
FAILED: set[str] = set()  # the folders of clusters that saw a failure: kept for their logs


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test's report gets the end of every running cluster's program logs (imported
    by each conftest that starts clusters, so it serves the tests of its folder)."""
    report = yield
    if report.failed:
        for cluster in RUNNING:
            FAILED.add(str(cluster.directory))
            for program, tail in cluster.log_tails():
                report.sections.append((f"log of {program} ({cluster.layout.log_dir})", tail))
    return report


@contextmanager
def kept_on_failure(cluster: C) -> Iterator[C]:
    """``cluster`` (not started yet) for the block; then stopped, and its folder removed unless a
    test failed while it ran (then kept and named). A process still alive after the stop fails."""
    RUNNING.append(cluster)
    try:
        yield cluster
    finally:
        RUNNING.remove(cluster)
        stopped = cluster.stop()
        if str(cluster.directory) in FAILED:
            print(f"\nthe failed cluster's folder is kept: {cluster.directory} (logs in {cluster.layout.log_dir})")
        else:
            shutil.rmtree(cluster.directory, ignore_errors=True)
    assert "still alive" not in stopped, stopped
