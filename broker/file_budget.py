"""One budget of connections for all the guarded ports of a process.

Each port's guard caps its own connections (``max_connections``, lowered to the file limit less
:data:`FILES_KEPT`), but the file limit is the process's: a node's request port, feed and HTTP
port could each have held nearly all of it, and silent connections to two of them then left
nothing for accept() or the store's next SQLite open (EMFILE). Every guard of a process (the
CURVE guards of broker/curve_guard.py, the HTTP guards of broker/http.py) also takes a place
here for each connection it holds, and cuts or refuses a connection past the budget.
"""

from __future__ import annotations

import functools
import logging
import resource
import threading

log = logging.getLogger(__name__)

# Files a process keeps for itself beside its guarded connections (store, Redis, logs, sockets,
# a refused connection's last moments): the budget, and each cap, is the file limit less these.
FILES_KEPT = 256
UNLIMITED = 1 << 62  # the budget of a process whose file limit is infinite


def connection_cap(name: str, wanted: int) -> int:
    """``wanted`` connections in all, lowered (and said) to the file limit less FILES_KEPT."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft - FILES_KEPT >= wanted:
        return wanted
    most = max(1, soft - FILES_KEPT)
    log.warning("%s: at most %d connections (max_connections %d, but the file limit is %d)", name, most, wanted, soft)
    return most


class FileBudget:
    """The connections that the guards of one process hold together (any thread)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        with self._lock:
            return self._held

    def take(self) -> bool:
        """Take a place if one is left; whether it did."""
        with self._lock:
            if self._held >= self.total:
                return False
            self._held += 1
            return True

    def add(self) -> bool:
        """Count a connection already open (a CURVE guard learns of it once libzmq accepted it):
        whether it is within the budget. Counted either way, as its descriptor is held until
        :meth:`give` says it was closed."""
        with self._lock:
            self._held += 1
            return self._held <= self.total

    def give(self) -> None:
        with self._lock:
            self._held -= 1


_budget_lock = threading.Lock()  # the guards of a process are made on several threads


def process_budget() -> FileBudget:
    """This process's budget: its soft file limit when first asked (after a node raised it to
    its hard limit, which it does before it opens a port), less FILES_KEPT."""
    with _budget_lock:
        return _first_budget()


@functools.cache
def _first_budget() -> FileBudget:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return FileBudget(UNLIMITED if soft == resource.RLIM_INFINITY else max(1, soft - FILES_KEPT))
