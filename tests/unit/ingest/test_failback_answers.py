"""A failback's "does the current home still run" (ingest/server.py ``_answers``, PROTOCOL 10.9
step 1): one 2 s hello took a slow or partitioned home for stopped (review r31's concern); its
heartbeat in Redis, younger than the window, counts as running too."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from vledger.broker.accounts import AccountRegistry, heartbeat_window
from vledger.ingest import server

HOME = "ingest-2"
POLL_MS = 1000


def runtime() -> Any:
    return SimpleNamespace(
        config=SimpleNamespace(settings=SimpleNamespace(broker=SimpleNamespace(accounts_poll_ms=POLL_MS)))
    )


@pytest.fixture
def silent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """No hello answered (a loaded host, a cut link): the nodes asked."""
    asked: list[str] = []
    monkeypatch.setattr(server, "_hello_answers", lambda _runtime, node: bool(asked.append(node)))
    return asked


def test_a_home_that_answers_no_hello_but_reports_to_redis_still_runs(redis_client: Any, silent: list[str]) -> None:
    registry = AccountRegistry(redis_client)
    assert server._answers(runtime(), HOME, redis_client) is False  # never reported: the hello decides
    registry.record_applied(HOME, 1)
    assert server._answers(runtime(), HOME, redis_client) is True
    assert server._answers(runtime(), HOME) is False  # without Redis, the hello alone
    registry.record_stopped(HOME)  # a clean stop says so at once
    assert server._answers(runtime(), HOME, redis_client) is False
    seconds, _ = redis_client.time()
    registry.record_applied(HOME, 1)
    stale = int(seconds - heartbeat_window(POLL_MS / 1000) - 1) * 1000
    redis_client.hset(registry.applied_key(HOME), "seen", stale)  # killed: its heartbeat aged out
    assert server._answers(runtime(), HOME, redis_client) is False
    assert silent == [HOME] * 5


def test_a_hello_answered_needs_no_redis(silent: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "_hello_answers", lambda _runtime, _node: True)
    assert server._answers(runtime(), HOME, object()) is True  # Redis not even asked
