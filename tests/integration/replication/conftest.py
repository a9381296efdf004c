"""Replication tests run clusters of real ingest and replica processes (their logs go into a
failing test's report: tests/integration/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vledger.broker.redis_server import RedisServer
from vledger.tests.integration.cluster import LocalCluster


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
