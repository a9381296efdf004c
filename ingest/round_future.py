"""A round of puts' Future, without a Condition of its own (the request loop makes one a round).

``concurrent.futures.Future`` builds a Condition (an RLock and its bound methods) for every
future, and takes it in each of ``set_running_or_notify_cancel``, ``set_result``,
``add_done_callback`` and ``result``, then wakes waiters that a round's future never has: the
request loop's own thread makes it, adds its callbacks, commits it (a lone writer's put, in
flush) and reads its outcome once done. That cost a lone put about a tenth of its Python work.

:class:`RoundFuture` keeps the same contract with one lock shared by every round future, held
for a few attribute writes, and an Event made only if a thread ever blocks in :meth:`result`
(none does today: the loop reads done futures). It cannot be cancelled: a round is never
withdrawn once queued. Other futures of the process stay ``concurrent.futures.Future``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
# Held while a state changes or a callback is added: a callback added on one thread while the
# outcome is set on another (a round handed to the store's committer thread) is never lost.
_LOCK = threading.Lock()
_PENDING, _RUNNING, _FINISHED = 0, 1, 2


class RoundFuture(Future[T]):
    """A :class:`concurrent.futures.Future` that never cancels, for one round of the request loop."""

    def __init__(self) -> None:  # no super().__init__(): no Condition (see the module docstring)
        self._state_ = _PENDING
        self._result_: Any = None
        self._exception_: BaseException | None = None
        self._callbacks: list[Callable[[Future[T]], object]] = []
        self._event: threading.Event | None = None

    def __repr__(self) -> str:
        state = ("pending", "running", "finished")[self._state_]
        return f"<{type(self).__name__} at {id(self):#x} state={state}>"

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return self._state_ == _RUNNING

    def done(self) -> bool:
        return self._state_ == _FINISHED

    def set_running_or_notify_cancel(self) -> bool:
        with _LOCK:
            if self._state_ != _PENDING:
                raise RuntimeError(f"future in unexpected state: {self!r}")
            self._state_ = _RUNNING
        return True

    def set_result(self, result: T) -> None:
        self._finish(result, None)

    def set_exception(self, exception: BaseException | None) -> None:
        self._finish(None, exception)

    def _finish(self, result: Any, exception: BaseException | None) -> None:
        with _LOCK:
            if self._state_ == _FINISHED:
                raise RuntimeError(f"future already finished: {self!r}")  # as Future's InvalidStateError
            self._result_, self._exception_ = result, exception
            self._state_ = _FINISHED
            callbacks, self._callbacks = self._callbacks, []
            event = self._event
        if event is not None:
            event.set()
        self._call(callbacks)

    def _call(self, callbacks: list[Callable[[Future[T]], object]]) -> None:
        for callback in callbacks:
            try:
                callback(self)
            except Exception:  # as Future does: one failing callback must not keep the others from running
                log.exception("exception calling callback for %r", self)

    def add_done_callback(self, fn: Callable[[Future[T]], object]) -> None:
        with _LOCK:
            if self._state_ != _FINISHED:
                self._callbacks.append(fn)
                return
        self._call([fn])

    def _wait(self, timeout: float | None) -> None:
        with _LOCK:
            if self._state_ == _FINISHED:
                return
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        if not event.wait(timeout):
            raise TimeoutError

    def result(self, timeout: float | None = None) -> T:
        if self._state_ != _FINISHED:
            self._wait(timeout)
        if self._exception_ is not None:
            raise self._exception_
        return self._result_  # type: ignore[no-any-return]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state_ != _FINISHED:
            self._wait(timeout)
        return self._exception_
