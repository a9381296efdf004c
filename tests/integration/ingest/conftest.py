"""Fixtures of the ingest tests: a cluster of real ingest node processes per module.

A module that needs other settings (a throttle, a small page) defines its own ``cluster``
fixture, which overrides this one. When a test fails, the tail of each running node's log
is added to its report.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vledger.broker.redis_server import RedisServer
from vledger.tests.integration.cluster import LocalCluster

# Ledgers that the default cluster homes on its second node (every other one is on ingest-1).
REMOTE_LEDGERS = ("remote", "remote-2", "remote-files", "remote-fund")


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    with LocalCluster(
        redis_server.url, homes=dict.fromkeys(REMOTE_LEDGERS, "ingest-2"), ingest={"page_size": 50}
    ) as running:
        yield running
