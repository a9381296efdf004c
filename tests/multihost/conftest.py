"""Fixtures across hosts: the network of namespaces and the cluster on it, one per module, torn down always.

Without root (or ``ip``/``nft``, or a kernel that refuses namespaces) the tests skip with the
reason, except in CI (``CI`` set), where they fail: CI runs them as root (.ci/run installs
iproute2 and nftables). Namespaces a crashed run left behind are removed first.
"""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from vledger.tests.e2e.helpers import Written, create_ledgers
from vledger.tests.e2e.running import (
    in_ci,
    kept_on_failure,
    pytest_runtest_makereport,  # noqa: F401 (a hook: pytest finds it here by name)
)
from vledger.tests.multihost.hosts import HOSTS, HostsCluster
from vledger.tests.multihost.netns import Network, clean_leftovers, inside, missing

# One network of namespaces at a time on this machine: two clusters of ten processes with
# Sentinels on 2 cores (the two xdist workers each on a module here) starved each other into
# Sentinel timeouts. The lock is held for the module's whole run.
LOCK_FILE = Path(tempfile.gettempdir()) / "vledger-multihost.lock"


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    why = missing()
    if why is not None:
        if in_ci():
            pytest.fail(f"CI must run the tests across hosts: {why}")
        pytest.skip(why)
    with LOCK_FILE.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, after the network
        yield from _network()


def _network() -> Iterator[Network]:
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
    # Started from the client's namespace, stopped (by kept_on_failure) from the host's.
    with kept_on_failure(HostsCluster(network)) as running, inside(network["client"]):
        running.start()
        yield running


@pytest.fixture(scope="module")
def written(cluster: HostsCluster) -> Written:
    return create_ledgers(cluster)
