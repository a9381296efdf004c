"""A node whose loads of the accounts keep failing says so: its /readyz check and an alert.

Review r14 F4: the accounts thread retries every exception (one malformed entry had ended it
for good, outsider o8 J6), so "is the thread alive" no longer failed: a load that raised on
every poll left the node ready, enforcing accounts frozen at the last good load, no alert.
"""

from __future__ import annotations

from typing import Any

import pytest

from vledger.broker import accounts
from vledger.broker.accounts import FAILING_POLLS, AccountCache, AccountRegistry
from vledger.tests.integration.cluster import wait_until


def test_loads_failing_in_a_row_make_the_accounts_not_current_until_one_succeeds(
    redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accounts, "_RETRY_PAUSE", 0.05)
    registry = AccountRegistry(redis_client)
    told: list[str | None] = []
    cache = AccountCache(registry, "ingest-2", poll_interval=0.05)
    cache.on_failing = told.append
    loads: list[int] = []
    real_load = accounts.snapshot_from_reply

    def broken(reply: Any) -> Any:  # a bug that raises on every load, as an unforeseen entry may
        loads.append(1)
        raise RuntimeError("a bug on every load")

    with cache:
        assert cache.not_current() is None
        wait_until(lambda: told == [None], 5, "an earlier run's alert resolved at the first good load")
        told.clear()
        monkeypatch.setattr(accounts, "snapshot_from_reply", broken)
        registry.add_account("late", "writer")  # a change the node cannot apply
        problem = wait_until(cache.not_current, 10, "the accounts reported not current")
        assert len(loads) >= FAILING_POLLS
        assert cache.alive()  # the thread retries: alive alone said ready
        assert "loads in a row failed since" in problem and "RuntimeError: a bug on every load" in problem
        wait_until(lambda: told, 5, "the alert raised")
        assert told[0] is not None and "a bug on every load" in told[0]
        assert len(told) == 1  # once, not at every failed poll
        monkeypatch.setattr(accounts, "snapshot_from_reply", real_load)
        wait_until(lambda: cache.not_current() is None and len(told) == 2, 10, "ready again once a load succeeds")
        assert told[1] is None
        assert "late" in cache.snapshot.accounts
