"""Per-key token buckets: a client may burst, then is held to a sustained rate."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class Throttle:
    """``take(key)`` returns 0 when the request may go ahead, else the milliseconds to wait."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str) -> int:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0
        return max(1, math.ceil((1 - bucket.tokens) / self.rate * 1000))

    def forget_idle(self) -> None:
        """Drop full buckets, so that many keys seen once do not grow memory for ever."""
        now = self._clock()
        for key in [k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * self.rate >= self.burst]:
            del self._buckets[key]
