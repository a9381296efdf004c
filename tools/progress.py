"""A small progress bar for long commands: count, rate and, when the total is known, an ETA.

The rate behind the ETA is measured from the first piece of work done, not from the start
(which includes start-up: worker processes, a first connection), and only once it has run for
RATE_AFTER seconds: before that the ETA shows ``--:--`` rather than a guess of hours.

It draws on stderr, and only when stderr is a terminal, so that scripts, pipes and logs
never see control characters. Redraws are throttled, so counting every record costs little.
A command whose wait is long enough to need reassurance in a log too (the cluster demo)
asks for ``lines_every``: off a terminal it then writes a plain line at most that often,
and a last one when it closes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

_BAR_WIDTH = 24
RATE_AFTER = 1.0  # seconds of work after the first piece before a rate (and an ETA) is known


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def render(label: str, done: int, total: int | None, elapsed: float, rate: float | None = None) -> str:
    """One line of progress, without a line ending: pure, so that it can be tested alone.

    ``rate`` is the measured rate (per second), None while it is not known: the line then
    shows the average since the start and no ETA."""
    shown = rate if rate is not None else (done / elapsed if elapsed > 0 else 0.0)
    if total is None or total <= 0:
        return f"{label} {done} ({shown:,.1f}/s)"
    filled = min(_BAR_WIDTH, _BAR_WIDTH * done // total)
    bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
    return f"{label} [{bar}] {done}/{total} ({shown:,.1f}/s, ETA {_eta(total - done, rate)})"


def _eta(left: int, rate: float | None) -> str:
    if left <= 0:
        return "0:00"
    return _duration(left / rate) if rate is not None and rate > 0 else "--:--"


class Progress:
    """Counts work done and redraws one line on a terminal; elsewhere silent, or plain lines (``lines_every``)."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 0.1,
        lines_every: float | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = self._stream.isatty() if enabled is None else enabled
        self._lines = not self._enabled and lines_every is not None
        self._clock = clock
        self._interval = lines_every if self._lines and lines_every is not None else interval
        self._start = clock()
        # A bar shows at once; the first plain line waits its turn, so that a short job writes one.
        self._last_draw = self._start if self._lines else float("-inf")
        self._width = 0
        self._drawn = -1  # the count of the last plain line
        self._first: tuple[float, int] | None = None  # when the first work was done, and how much

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self._enabled or self._lines:
            now = self._clock()
            if self._first is None:
                self._first = (now, self.done)
            if now - self._last_draw >= self._interval:
                self._draw(now)

    def rate(self, now: float) -> float | None:
        """Work per second since the first piece done, once measured over RATE_AFTER seconds."""
        if self._first is None:
            return None
        since, first = self._first
        if now - since < RATE_AFTER or self.done <= first:
            return None
        return (self.done - first) / (now - since)

    def close(self) -> None:
        """Draw the final state and end the line, so that what follows starts on its own line."""
        if self._enabled:
            self._draw(self._clock())
            self._stream.write("\n")
            self._stream.flush()
            self._enabled = False
        elif self._lines:
            if self._drawn != self.done:
                self._draw(self._clock())
            self._lines = False

    def _draw(self, now: float) -> None:
        self._last_draw = now
        text = render(self.label, self.done, self.total, now - self._start, self.rate(now))
        if self._lines:
            self._stream.write(text + "\n")
            self._stream.flush()
            self._drawn = self.done
            return
        # Pad over the previous line's tail: a shorter line must not leave old characters.
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()
        self._width = len(text)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
