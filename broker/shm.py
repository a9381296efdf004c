"""Our POSIX shared memory and semaphores named by their owner's pid, and those of dead owners removed.

multiprocessing names a SharedMemory ``/dev/shm/psm_<random>`` and each semaphore of a spawn or
forkserver context (its queues', locks' and barriers') ``/dev/shm/sem.mp-<random>``. Its
resource tracker, a process of the owner's process group, unlinks what the owner leaves; but a
group killed with SIGKILL (a test's or the bench's clean-up, an operator's ``kill -9``) takes
the tracker with it, the files stay until the machine restarts, and nothing tells whose they
were. Ours are named ``vledger-<pid>-<random>`` and ``sem.vledger-<pid>-<random>``, ``<pid>``
the process that made them; each owner (a sweep's page pool, ``vledger verify``'s worker
processes, a node's page checker, the bench) removes at its start those whose process no longer
runs (:func:`take_ownership`). A process that still runs keeps its files, whoever runs it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import secrets
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

from ..node.owners import runs

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")  # noqa: S108 - where Linux keeps POSIX shared memory and named semaphores (we only list and unlink)
PREFIX = "vledger-"
# A name of ours: the owner's pid (1 to 10 digits, no leading zero), then a random part.
_OURS = re.compile(r"(?:sem\.)?" + re.escape(PREFIX) + r"([1-9][0-9]{0,9})-[0-9A-Za-z_]{1,32}")
_NAME_TRIES = 100  # random names tried before giving up (a clash is one in 2**32)


def take_ownership(directory: Path = SHM_DIR) -> list[str]:
    """Name this process's semaphores from now on as ours (:func:`name_semaphores`), then
    remove the stale files of dead owners (:func:`remove_stale`): what an owner calls at its
    start. Returns the names removed; never raises."""
    name_semaphores()
    return remove_stale(directory)


def name_semaphores() -> None:
    """The semaphores this process makes from now on are ``sem.vledger-<its pid>-<random>``.

    multiprocessing takes the prefix from its process object's private ``_config`` (its
    default ``/mp``): there is no public setting, and no other way to tell our semaphores
    apart. A forked child keeps its parent's prefix until it calls this itself."""
    config = multiprocessing.current_process()._config  # type: ignore[attr-defined]
    config["semprefix"] = f"/{PREFIX}{os.getpid()}"


def shared_memory(size: int) -> SharedMemory:
    """New shared memory of ``size`` bytes named ``vledger-<this pid>-<random>``. Raises
    OSError when it cannot be made (no /dev/shm, or full), ValueError for a size below 1."""
    for _ in range(_NAME_TRIES):
        try:
            return SharedMemory(f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}", create=True, size=size)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free shared memory name after {_NAME_TRIES} tries")


def remove_stale(directory: Path = SHM_DIR) -> list[str]:
    """Unlink the files of ``directory`` named as ours whose owner's pid runs no process; the
    names removed. Files of a process that runs (even another user's) and every name not ours
    are left. Never raises: a directory that cannot be read removes nothing, and a file that
    another removed first is skipped."""
    try:
        names = os.listdir(directory)
    except OSError as e:
        log.debug("cannot list %s: %s", directory, e)
        return []
    removed = []
    for name in names:
        found = _OURS.fullmatch(name)
        if found is None or runs(int(found.group(1))):
            continue
        try:
            (directory / name).unlink()
        except FileNotFoundError:
            continue
        except OSError as e:
            log.debug("cannot remove %s: %s", directory / name, e)
            continue
        removed.append(name)
    if removed:
        log.info("removed %d shared memory files of processes that no longer run from %s", len(removed), directory)
    return removed
