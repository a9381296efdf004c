"""The worker base: one named thread, stopped and joined, woken where it waits on its own condition."""

from __future__ import annotations

import threading

import pytest

from vledger.ingest.worker import Worker


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
