"""A background part's one thread: started once, stopped and joined by :meth:`Worker.stop`.

The start/stop shape every such part shares (blob copies, the write concern's watch): the
subclass loops in :meth:`Worker._run` until :attr:`Worker.stopping` is set, waiting with
``self.stopping.wait(seconds)`` or on a condition of its own that :meth:`Worker._wake`
notifies, and frees what it holds in :meth:`Worker._stopped`, once the thread has ended.
An exception out of :meth:`Worker._run` (a bug, or wire input no check foresaw) is logged and
the loop run again after a back-off (:class:`Restarts`): a worker thread that died silently left
its node answering ready while the work stopped (outsider o8 J6, the accounts thread).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Self

log = logging.getLogger(__name__)

RESTART_FIRST_SECONDS = 1.0  # the wait before a loop runs again after a bug
RESTART_MOST_SECONDS = 60.0  # the longest such wait (each failure in a row doubles it)
# How many failures in a row make a loop "failing" (its node's /readyz says so): one is a bug that
# met one input, retried; three, with the back-off between them, a fault that retrying does not mend.
FAILING_RUNS = 3


class Worker:
    """One daemon thread named ``thread_name`` that runs :meth:`_run` until :meth:`stop`."""

    def __init__(self, thread_name: str) -> None:
        self.thread_name = thread_name
        self.stopping = threading.Event()
        self.restarts = Restarts(thread_name)
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Start the thread (once: a second start without a stop raises RuntimeError)."""
        if self._thread is not None:
            raise RuntimeError(f"{self.thread_name} is already started")
        self.stopping.clear()
        self._thread = threading.Thread(
            target=self.restarts.run, args=(self._run, self.stopping), name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the thread to end, wait until it has, then :meth:`_stopped` (also when never started)."""
        self.stopping.set()
        self._wake()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        self._stopped()

    def alive(self) -> bool:
        """Whether the thread runs (started, not stopped, and not ended)."""
        return self._thread is not None and self._thread.is_alive()

    def not_working(self) -> str | None:
        """Why the thread is not doing its work (a node's /readyz ``workers`` check): its loop
        keeps failing (:meth:`Restarts.failing`); None when it does not."""
        return self.restarts.failing()

    def _run(self) -> None:
        raise NotImplementedError

    def _wake(self) -> None:
        """Wake a thread that waits on something other than :attr:`stopping` (after it is set)."""

    def _stopped(self) -> None:
        """Free what the thread used; it has ended."""


class Restarts:
    """Runs a loop again after it failed with a bug, waiting longer after each failure in a
    row: ``first`` seconds, doubled each time, at most ``most``; a run that lasted ``most``
    or longer before it failed starts the waits again from ``first``. ``count`` is the number
    of restarts (read from any thread: a metric)."""

    def __init__(self, what: str, first: float = RESTART_FIRST_SECONDS, most: float = RESTART_MOST_SECONDS) -> None:
        self.what = what
        self.first = first
        self.most = most
        self.count = 0
        self._in_a_row = 0  # failures with no run of ``most`` seconds between them
        self._running_since: float | None = None  # monotonic; None while waiting to run again
        self._last_error = ""

    def failing(self) -> str | None:
        """Why the loop is not doing its work (a node's /readyz fails with it): FAILING_RUNS or
        more failures in a row, and no run since that has lasted ``most`` seconds; else None."""
        running_since = self._running_since
        if self._in_a_row < FAILING_RUNS:
            return None
        if running_since is not None and time.monotonic() - running_since >= self.most:
            return None
        return f"{self.what} failed {self._in_a_row} times in a row ({self._last_error})"

    def run(
        self,
        body: Callable[[], None],
        stopping: threading.Event,
        final: Callable[[Exception], object | None] = lambda error: None,
    ) -> None:
        """Call ``body`` until it returns or ``stopping`` is set, again after each exception
        (logged with its traceback) once the back-off has passed, except one for which ``final``
        returns something (reported there: ChainStore.damaged), which ends the loop. Raises
        nothing but what is not an Exception (KeyboardInterrupt, SystemExit)."""
        delay = self.first
        while not stopping.is_set():
            began = self._running_since = time.monotonic()
            try:
                body()
                return
            except Exception as e:
                self._running_since = None
                if final(e) is not None:
                    log.error("%s ended: %s (not run again)", self.what, e)
                    return
                if time.monotonic() - began >= self.most:  # it had run well: not a failure in a row
                    delay = self.first
                    self._in_a_row = 0
                self._in_a_row += 1
                self._last_error = f"{type(e).__name__}: {e}"
                self.count += 1
                log.exception("%s failed (a bug): restart %d in %.1f s", self.what, self.count, delay)
            if stopping.wait(delay):
                return
            delay = min(delay * 2, self.most)
