"""A background part's one thread: started once, stopped and joined by :meth:`Worker.stop`.

The start/stop shape every such part shares (blob copies, the write concern's watch): the
subclass loops in :meth:`Worker._run` until :attr:`Worker.stopping` is set, waiting with
``self.stopping.wait(seconds)`` or on a condition of its own that :meth:`Worker._wake`
notifies, and frees what it holds in :meth:`Worker._stopped`, once the thread has ended.
"""

from __future__ import annotations

import threading
from typing import Self


class Worker:
    """One daemon thread named ``thread_name`` that runs :meth:`_run` until :meth:`stop`."""

    def __init__(self, thread_name: str) -> None:
        self.thread_name = thread_name
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Start the thread (once: a second start without a stop raises RuntimeError)."""
        if self._thread is not None:
            raise RuntimeError(f"{self.thread_name} is already started")
        self.stopping.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
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

    def _run(self) -> None:
        raise NotImplementedError

    def _wake(self) -> None:
        """Wake a thread that waits on something other than :attr:`stopping` (after it is set)."""

    def _stopped(self) -> None:
        """Free what the thread used; it has ended."""
