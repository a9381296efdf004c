"""End-to-end fixtures: one cluster under ``vledger supervise`` per module, its logs on failure.

``cluster`` starts the module's topology (``TOPOLOGY`` in the module, else the default one)
with ``vledger supervise start`` and stops it with ``vledger supervise stop`` after the last
test of the module. A failing test's report gets the end of every program's log; the run
folder (configuration, keys, stores, logs) is then kept and named, else removed.

Tests marked ``soak`` run only when asked for (``pytest -m soak``, which ``make soak`` does):
``make test`` collects them and reports them skipped.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator, Iterator

import pytest

from vledger.broker.redis_server import find_redis_server
from vledger.node.errors import RedisServerError
from vledger.tests.e2e.helpers import SupervisedCluster, Topology, Written, create_ledgers

RUNNING: list[SupervisedCluster] = []  # clusters started and not yet stopped
FAILED: set[str] = set()  # the folders of clusters that saw a failure: kept for their logs


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "soak" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="a soak: make soak runs it (pytest -m soak)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for cluster in RUNNING:
            FAILED.add(str(cluster.directory))
            for program, tail in cluster.log_tails():
                report.sections.append((f"log of {program} ({cluster.layout.log_dir})", tail))
    return report


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[SupervisedCluster]:
    try:
        find_redis_server()
    except RedisServerError as e:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"CI must provide a redis-server: {e}")
        pytest.skip(str(e))
    running = SupervisedCluster(getattr(request.module, "TOPOLOGY", Topology()))
    RUNNING.append(running)
    try:
        running.start()
        yield running
    finally:
        RUNNING.remove(running)
        stopped = running.stop()
        if str(running.directory) in FAILED:
            print(f"\nthe failed cluster's folder is kept: {running.directory} (logs in {running.layout.log_dir})")
        else:
            shutil.rmtree(running.directory, ignore_errors=True)
    assert "still alive" not in stopped, stopped


@pytest.fixture(scope="module")
def written(cluster: SupervisedCluster) -> Written:
    """The module's ledgers, created on their homes, and what its tests' writers acknowledged on them."""
    return create_ledgers(cluster)
