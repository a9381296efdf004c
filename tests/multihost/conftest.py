"""Fixtures across hosts: the network of namespaces and the cluster on it, one per module, torn down always.

Without root (or ``ip``/``nft``, or a kernel that refuses namespaces) the tests skip with the
reason, except in CI (``CI`` set), where they fail: CI runs them as root (.ci/run installs
iproute2 and nftables). Namespaces a crashed run left behind are removed first.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator, Iterator

import pytest

from vledger.tests.e2e.helpers import Written, create_ledgers
from vledger.tests.multihost.hosts import HOSTS, HostsCluster
from vledger.tests.multihost.netns import Network, clean_leftovers, inside, missing

RUNNING: list[HostsCluster] = []
FAILED: set[str] = set()


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


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
def network() -> Iterator[Network]:
    why = missing()
    if why is not None:
        if in_ci():
            pytest.fail(f"CI must run the tests across hosts: {why}")
        pytest.skip(why)
    left = clean_leftovers()
    if left:
        print(f"removed namespaces a crashed run left: {', '.join(left)}")
    net = Network(HOSTS)
    try:
        yield net.open()
    finally:
        net.close()


@pytest.fixture(scope="module")
def cluster(network: Network) -> Iterator[HostsCluster]:
    running = HostsCluster(network)
    RUNNING.append(running)
    try:
        with inside(network["client"]):
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
def written(cluster: HostsCluster) -> Written:
    return create_ledgers(cluster)
