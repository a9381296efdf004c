"""The standby (ingest/standby.py): its targets from Redis (what a promotion counts as
acknowledged), and its follow thread, which a bug does not end for good."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from vledger.ingest.standby import Restarts, StandbyFollow, redis_checkpoints
from vledger.node.errors import StoreDamagedError
from vledger.node.store import ChainStore
from vledger.tests.sqlite_faults import malformed


class _Redis:
    def __init__(self, latest: dict[str, bytes], cosigned: dict[str, dict[str, bytes]]) -> None:
        self.latest = latest
        self.cosigned = cosigned
        self.asked: list[str] = []

    def checkpoints(self) -> dict[str, bytes]:
        return self.latest

    def cosignatures(self, ledger: str) -> dict[str, bytes]:
        self.asked.append(ledger)
        return self.cosigned.get(ledger, {})


def test_the_home_s_latest_and_each_witness_s_cosigned_note_of_the_followed_ledgers() -> None:
    redis = _Redis(
        {"votes": b"home votes", "other": b"home other"},
        {"votes": {"replica-2": b"cosigned by 2", "replica-1": b"cosigned by 1"}, "other": {"replica-1": b"x"}},
    )
    notes = redis_checkpoints(redis, redis, {"votes"})
    assert notes == [
        ("votes", b"home votes", "redis"),
        ("votes", b"cosigned by 1", "redis:cosigned:replica-1"),
        ("votes", b"cosigned by 2", "redis:cosigned:replica-2"),
    ]
    assert redis.asked == ["votes"]  # the ledgers it does not follow are not even asked for


def test_nothing_followed_nothing_asked() -> None:
    redis = _Redis({"votes": b"home votes"}, {"votes": {"replica-1": b"n"}})
    assert redis_checkpoints(redis, redis, set()) == []
    assert redis.asked == []


class _Stopping(threading.Event):
    """A stop event whose waits return at once, each timeout noted; set after ``waits`` of them."""

    def __init__(self, waits: int) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []
        self._left = waits

    def wait(self, timeout: float | None = None) -> bool:
        self.timeouts.append(timeout)
        self._left -= 1
        if self._left <= 0:
            self.set()
        return self.is_set()


def test_a_loop_that_fails_runs_again_after_waits_that_double_up_to_a_bound(caplog: pytest.LogCaptureFixture) -> None:
    failures = iter(range(6))
    calls: list[int] = []

    def body() -> None:
        calls.append(1)
        if next(failures, None) is not None:
            raise RuntimeError("a bug")

    restarts = Restarts("the follow", first=1.0, most=5.0)
    stopping = _Stopping(waits=100)
    with caplog.at_level(logging.ERROR):
        restarts.run(body, stopping)
    assert len(calls) == 7 and restarts.count == 6  # six failures, the seventh run returned
    assert stopping.timeouts == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert sum("restart 6 in 5.0 s" in r.getMessage() for r in caplog.records) == 1
    assert all(r.exc_info is not None for r in caplog.records)  # each with its traceback


def test_a_stop_during_the_back_off_ends_the_loop() -> None:
    calls: list[int] = []

    def body() -> None:
        calls.append(1)
        raise RuntimeError("a bug")

    restarts = Restarts("the follow", first=0.5, most=8.0)
    restarts.run(body, _Stopping(waits=2))
    assert len(calls) == 2 and restarts.count == 2


class _Follower:
    """A follower whose start fails with a bug the first ``failures`` times."""

    def __init__(self, failures: int, stopping: threading.Event) -> None:
        self.failures = failures
        self.stopping = stopping
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        if self.starts <= self.failures:
            raise KeyError("a bug in the catch-up")
        self.stopping.set()  # the follow loop then ends at once


def test_the_standby_follow_runs_again_after_a_bug_and_counts_it(tmp_path: Path) -> None:
    standby: Any = object.__new__(StandbyFollow)  # only what _run uses: no sockets, no Redis
    standby.name = "ingest-2"
    standby.stopping = threading.Event()
    standby.follower = _Follower(failures=2, stopping=standby.stopping)
    standby.follower.store = ChainStore(tmp_path / "store")  # a bug is no damage: it runs again
    standby.restarts = Restarts("ingest-2: the standby follow", first=0.001, most=0.002)
    standby.ledgers = ["votes", "election-2026"]
    standby.homes = SimpleNamespace(home_of=lambda ledger: SimpleNamespace(name="ingest-1"))
    standby._compared = set(standby.ledgers)  # compared with the chain already (no former home's tail here)
    standby._thread = None
    assert standby.report() == {"ledgers": ["election-2026", "votes"], "follow_restarts": 0}
    standby.start()
    thread = standby._thread
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert standby.follower.starts == 3 and standby.restarts.count == 2
    # What hello and /readyz say of it (PROTOCOL 6, 15.3), not only the metric.
    assert standby.report() == {"ledgers": ["election-2026", "votes"], "follow_restarts": 2}
    # Promoted, it is the home of votes: no longer its standby (it listed it so still, fix27).
    standby.homes = SimpleNamespace(
        home_of=lambda ledger: SimpleNamespace(name="ingest-2" if ledger == "votes" else "x")
    )
    assert standby.report() == {"ledgers": ["election-2026"], "follow_restarts": 2}
    standby.follower.store.close()


@pytest.mark.parametrize("error", [malformed, lambda: StoreDamagedError("a commit's future: reported")])
def test_the_standby_follow_ends_on_a_damaged_store_which_reports_it(
    tmp_path: Path, error: Callable[[], Exception]
) -> None:
    """A read of a malformed file is no bug: run again, the follow failed the same way for ever
    (every 60 s at most, counted as restarts), and the node ran on with a store it could not
    read. The store is told (ChainStore.damaged: the node's alert, and it stops with 65)."""

    class Damaged(_Follower):
        def start(self) -> None:
            self.starts += 1
            raise error()

    reported: list[StoreDamagedError] = []
    with ChainStore(tmp_path / "store") as store:
        store.on_damaged = reported.append
        standby: Any = object.__new__(StandbyFollow)
        standby.name = "ingest-2"
        standby.stopping = threading.Event()
        standby.follower = Damaged(failures=0, stopping=standby.stopping)
        standby.follower.store = store
        standby.restarts = Restarts("ingest-2: the standby follow", first=0.001, most=0.002)
        standby.ledgers, standby._compared = [], set()
        standby._thread = None
        standby.start()
        standby._thread.join(timeout=10)
        assert not standby._thread.is_alive(), "the follow ended"
    assert standby.follower.starts == 1 and standby.restarts.count == 0
    assert len(reported) == (1 if error is malformed else 0)  # a StoreDamagedError was reported where found


def test_the_standby_s_follower_closes_in_redis_the_alerts_it_resolves() -> None:
    # A standby refuses a forked record a replica served during its catch-up (record_conflict,
    # PROTOCOL 10.5) and resolves that alert once the home's record is stored at its height:
    # the resolution must reach Redis, or the alert stays open for ever.
    from unittest import mock

    from vledger.ingest import standby

    resolved: list[list[str]] = []

    class Replication:
        def resolve_up_to(self, keys: list[str], upto: int) -> int:
            resolved.append(keys)
            return len(keys)

    runtime = mock.MagicMock()
    runtime.config.nodes_of.return_value = []
    with (
        mock.patch.object(standby, "Follower") as follower,
        mock.patch.object(standby, "Subscriber"),
        mock.patch.object(standby, "StreamSource"),
        mock.patch.object(standby, "checkpoint_keys"),
        mock.patch.object(standby, "ledger_checkpoint_keys"),
    ):
        standby.StandbyFollow(runtime, mock.MagicMock(), Replication(), mock.MagicMock(), mock.MagicMock(), ["votes"])  # type: ignore[arg-type]
    on_resolve = follower.call_args.kwargs["on_resolve"]
    on_resolve(["ingest-2|votes|record_conflict"], 7)
    assert resolved == [["ingest-2|votes|record_conflict"]]
