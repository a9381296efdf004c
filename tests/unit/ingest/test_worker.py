"""The worker base: one named thread, stopped and joined, woken where it waits on its own condition."""

from __future__ import annotations

import threading

import pytest

from vledger.ingest.worker import FAILING_RUNS, Worker
from vledger.tests.integration.cluster import wait_until


class Waiting(Worker):
    """Waits on a condition of its own, as BlobFetcher does: only _wake ends its wait."""

    def __init__(self) -> None:
        super().__init__("waiting-1")
        self.cond = threading.Condition()
        self.running = threading.Event()
        self.thread_names: list[str] = []
        self.freed = 0

    def _run(self) -> None:
        self.thread_names.append(threading.current_thread().name)
        with self.cond:
            self.running.set()
            while not self.stopping.is_set():
                self.cond.wait()

    def _wake(self) -> None:
        with self.cond:
            self.cond.notify()

    def _stopped(self) -> None:
        assert not any(t.name == "waiting-1" for t in threading.enumerate())  # after the join
        self.freed += 1


def test_stop_wakes_joins_and_frees() -> None:
    worker = Waiting().start()
    assert worker.running.wait(5)
    worker.stop()
    assert worker.thread_names == ["waiting-1"] and worker.freed == 1


def test_a_second_start_is_refused_and_a_stopped_worker_starts_again() -> None:
    worker = Waiting().start()
    with pytest.raises(RuntimeError, match="already started"):
        worker.start()
    worker.stop()
    worker.running.clear()
    worker.start()
    assert worker.running.wait(5)
    worker.stop()
    assert worker.freed == 2


def test_stop_without_start_frees_and_returns() -> None:
    worker = Waiting()
    worker.stop()
    assert worker.freed == 1 and worker.thread_names == []


class Failing(Worker):
    """Fails its first ``failures`` runs (a bug, or wire input no check foresaw), then works."""

    def __init__(self, failures: int) -> None:
        super().__init__("failing-1")
        self.restarts.first = self.restarts.most = 0.001
        self.failures = failures
        self.runs = 0
        self.working = threading.Event()

    def _run(self) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise ValueError("junk read from Redis")
        self.working.set()
        self.stopping.wait()


def test_a_worker_outlives_an_exception_of_its_loop() -> None:
    # outsider o8 J6: one exception ended a node's accounts thread for good, silently.
    worker = Failing(failures=3).start()
    try:
        assert worker.working.wait(5), "the loop never ran again after it failed"
        assert worker.alive() and worker.restarts.count == 3 and worker.runs == 4
    finally:
        worker.stop()
    assert not worker.alive()


def test_a_worker_whose_loop_keeps_failing_says_so_until_a_run_lasts() -> None:
    # review r14 F4: restarted for ever, a worker failing on every run left its node ready.
    worker = Failing(failures=10**9)
    worker.restarts.most = 0.3  # a run this long is no failure in a row
    assert worker.not_working() is None
    worker.start()
    try:
        problem = wait_until(worker.not_working, 5, "the worker reported failing")
        assert worker.restarts.count >= FAILING_RUNS
        assert problem.startswith("failing-1 failed ") and "(ValueError: junk read from Redis)" in problem
        worker.failures = 0  # mended: its next run works
        assert worker.working.wait(5)
        wait_until(lambda: worker.not_working() is None, 5, "ready again once a run lasts")
    finally:
        worker.stop()


def test_failures_spread_out_do_not_make_a_worker_failing() -> None:
    worker = Failing(failures=FAILING_RUNS)
    worker.restarts.most = 0.0  # every run lasted long enough: each failure starts the count again
    worker.start()
    try:
        assert worker.working.wait(5)
        assert worker.restarts.count == FAILING_RUNS and worker.not_working() is None
    finally:
        worker.stop()
