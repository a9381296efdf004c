"""Replication tests run clusters of real ingest and replica processes; a failing test's
report gets the tail of every running node's log."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vledger.broker.redis_server import RedisServer
from vledger.tests.integration.cluster import ACTIVE, LocalCluster


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    if report.failed:
        for running in ACTIVE:
            for name in running.procs:
                report.sections.append((f"log of {name} ({running.directory})", running.log_tail(name)))
    return report


@pytest.fixture
def start_cluster(redis_server: RedisServer) -> Iterator[Callable[..., LocalCluster]]:
    """``start_cluster(**options)``: a started LocalCluster (on the session's Redis unless
    ``redis_url`` is given), stopped after the test, once a failure's report took its logs."""
    started: list[LocalCluster] = []

    def start(redis_url: str | None = None, **options: Any) -> LocalCluster:
        cluster = LocalCluster(redis_url or redis_server.url, **options).start()
        started.append(cluster)
        return cluster

    yield start
    for cluster in reversed(started):
        cluster.stop()
