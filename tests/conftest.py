"""Fixtures shared by every test package: a real redis-server for the Redis tests.

One server for the whole session, in a short directory under /tmp, flushed before and after
each test that takes ``redis_client``. Without a redis-server the tests that need one are
skipped, except in CI (``CI`` set), where that is a failure: CI must have installed one.

A session names its semaphores as vledger's and removes, at its start and its end, what
processes killed with their process groups (its own tests', an earlier session's) left in
/dev/shm (vledger.broker.shm).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from vledger.broker.redis_server import RedisServer, connect, find_redis_server
from vledger.broker.shm import remove_stale, take_ownership
from vledger.node.errors import RedisServerError

# Hypothesis's deadline per example (200 ms) is a timing assertion: on a loaded 2-core machine a
# correct example of test_sealed overran it. Speed is shown by `make bench`, never by a test.
settings.register_profile("vledger", deadline=None)
settings.load_profile("vledger")


def pytest_sessionstart(session: pytest.Session) -> None:
    take_ownership()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    remove_stale()


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    try:
        executable = find_redis_server()
    except RedisServerError as e:
        if _in_ci():
            pytest.fail(f"CI must provide a redis-server: {e}")
        pytest.skip(str(e))
    directory = Path(tempfile.mkdtemp(prefix="vledger-redis-", dir="/tmp"))
    try:
        with RedisServer(directory, executable=executable) as server:
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[Any]:
    """A client of the session's server (bytes replies), on an empty database."""
    client = connect(redis_server.url)
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture
def tmpfs_disk(tmp_path: Path) -> Iterator[Path]:
    """A directory on a real tmpfs of a few hundred KiB (root only: skipped otherwise), for the
    disk-full tests; unmounted after the test."""
    from vledger.tests.integration.replication.test_disk_full import small_disk  # a cluster's imports: only here

    directory = tmp_path / "disk"
    directory.mkdir()
    with small_disk(directory) as mounted:
        yield mounted
