"""End-to-end fixtures: one cluster under ``vledger supervise`` per module, its logs on failure.

``cluster`` starts the module's topology (``TOPOLOGY`` in the module, else the default one)
with ``vledger supervise start`` and stops it with ``vledger supervise stop`` after the last
test of the module. A failing test's report gets the end of every program's log; the run
folder (configuration, keys, stores, logs) is then kept and named, else removed.

Tests marked ``soak`` run only when asked for (``pytest -m soak``, which ``make soak`` does):
``make test`` collects them and reports them skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vledger.broker.redis_server import find_redis_server
from vledger.node.errors import RedisServerError
from vledger.tests.e2e.helpers import SupervisedCluster, Topology, Written, create_ledgers
from vledger.tests.e2e.running import (
    in_ci,
    kept_on_failure,
    pytest_runtest_makereport,  # noqa: F401 (a hook: pytest finds it here by name)
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "soak" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="a soak: make soak runs it (pytest -m soak)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[SupervisedCluster]:
    try:
        find_redis_server()
    except RedisServerError as e:
        if in_ci():
            pytest.fail(f"CI must provide a redis-server: {e}")
        pytest.skip(str(e))
    with kept_on_failure(SupervisedCluster(getattr(request.module, "TOPOLOGY", Topology()))) as running:
        running.start()
        yield running


@pytest.fixture(scope="module")
def written(cluster: SupervisedCluster) -> Written:
    """The module's ledgers, created on their homes, and what its tests' writers acknowledged on them."""
    return create_ledgers(cluster)
