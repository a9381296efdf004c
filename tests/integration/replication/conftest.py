"""Replication tests run clusters of real ingest and replica processes; a failing test's
report gets the tail of every running node's log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from vledger.tests.integration.cluster import ACTIVE


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    if report.failed:
        for running in ACTIVE:
            for name in running.procs:
                report.sections.append((f"log of {name} ({running.directory})", running.log_tail(name)))
    return report
