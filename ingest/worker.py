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
            began = time.monotonic()
            try:
                body()
                return
            except Exception as e:
                if final(e) is not None:
                    log.error("%s ended: %s (not run again)", self.what, e)
                    return
                if time.monotonic() - began >= self.most:  # it had run well: not a failure in a row
                    delay = self.first
                self.count += 1
                log.exception("%s failed (a bug): restart %d in %.1f s", self.what, self.count, delay)
            if stopping.wait(delay):
                return
            delay = min(delay * 2, self.most)
