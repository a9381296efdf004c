"""RoundFuture keeps concurrent.futures.Future's contract for what the request loop and the store use."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

from vledger.ingest.round_future import RoundFuture


def test_outcome_and_callbacks_before_and_after_done() -> None:
    future: RoundFuture[int] = RoundFuture()
    seen: list[tuple[str, int]] = []
    future.add_done_callback(lambda f: seen.append(("before", f.result())))
    assert not future.done() and not future.running()
    assert future.set_running_or_notify_cancel() and future.running()
    future.set_result(7)
    future.add_done_callback(lambda f: seen.append(("after", f.result())))
    assert future.done() and future.result() == 7 and future.exception() is None
    assert seen == [("before", 7), ("after", 7)]
    assert isinstance(future, Future)  # where a Future is typed, it is one
    assert not future.cancel() and not future.cancelled()


def test_exception_is_raised_by_result() -> None:
    future: RoundFuture[int] = RoundFuture()
    error = ValueError("refused")
    future.set_exception(error)
    assert future.exception() is error
    with pytest.raises(ValueError, match="refused"):
        future.result()


def test_set_twice_is_refused() -> None:
    future: RoundFuture[int] = RoundFuture()
    future.set_result(1)
    with pytest.raises(RuntimeError):
        future.set_result(2)
    with pytest.raises(RuntimeError):
        future.set_running_or_notify_cancel()
    assert future.result() == 1


def test_failing_callback_is_logged_and_the_others_run(caplog: pytest.LogCaptureFixture) -> None:
    future: RoundFuture[int] = RoundFuture()
    ran: list[int] = []

    def broken(_: Future[int]) -> None:
        raise KeyError("bug")

    future.add_done_callback(broken)
    future.add_done_callback(lambda f: ran.append(f.result()))
    future.set_result(3)
    assert ran == [3]
    assert "exception calling callback" in caplog.text


def test_result_waits_for_another_thread_and_times_out() -> None:
    future: RoundFuture[str] = RoundFuture()
    with pytest.raises(TimeoutError):
        future.result(timeout=0.01)
    waiting = threading.Event()
    setter = threading.Thread(target=lambda: (waiting.wait(10), future.set_result("done")))
    setter.start()
    waiting.set()
    assert future.result(timeout=10) == "done"
    setter.join(10)


def test_a_callback_added_while_another_thread_finishes_is_never_lost() -> None:
    # The round handed to the committer thread: set_result there, callbacks added here.
    for _ in range(300):
        future: RoundFuture[int] = RoundFuture()
        calls: list[int] = []
        start = threading.Barrier(2)
        setter = threading.Thread(target=lambda f=future, s=start: (s.wait(10), f.set_result(1)))
        setter.start()
        start.wait(10)
        for _ in range(20):
            future.add_done_callback(lambda f, c=calls: c.append(f.result()))
        setter.join(10)
        assert calls == [1] * 20
