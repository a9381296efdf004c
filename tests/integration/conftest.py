"""Fixtures of every integration test; a failing test's report gets the tail of the log of
every node of every cluster still running (tests/integration/cluster.py)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vledger.tests.integration.cluster import ACTIVE


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A fresh directory with a short path under /tmp (socket paths are limited to ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="vledger-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    if report.failed:
        for running in ACTIVE:
            for name in running.procs:
                report.sections.append((f"log of {name} ({running.directory})", running.log_tail(name)))
    return report
