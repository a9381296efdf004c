"""The lock that keeps one process on a node's store at a time.

A second process on a running node's store (started by hand beside supervisord's, or on another
host mounting the same volume) opened the store, started workers, then read the other's half-made
writes as damage: a false ``store_damaged`` and a node left down (outsider o13). A node therefore
holds an exclusive flock on ``<store>/node.lock`` for its whole life, taken before it opens anything
of the store; ``vledger repair`` takes the same lock, so neither runs under the other. The lock is
the kernel's: a process that dies for any reason (kill -9 too) lets it go, and the file itself
stays (removing it would let a third process lock a new file beside a holder of the old one).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from ..node.errors import NodeRunningError

NODE_LOCK = "node.lock"


@contextlib.contextmanager
def node_lock(store: Path, holder: str) -> Iterator[None]:
    """Hold ``store``'s node lock (the directory is made if missing) while the block runs.

    ``holder`` says who takes it ("node replica-2", "repair of replica-2"), for the message of
    the one refused. Raises NodeRunningError at once, without waiting, when another process
    holds it."""
    store.mkdir(parents=True, exist_ok=True)
    path = store / NODE_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NodeRunningError(
                f"{path} is locked: another process runs on this store (the node itself, or a `vledger repair` "
                f"of it): the {holder} does not start; stop the other first"
            ) from None
        yield
    finally:
        os.close(fd)
