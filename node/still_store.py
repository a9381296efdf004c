"""A store that no process writes (a copy kept as evidence), read without one byte written beside it.

SQLite reads a WAL-mode file through the ``-shm`` beside it (the index of its ``-wal``), which
every reader writes, and creates when it is missing; ``immutable`` writes none but ignores the
``-wal``'s commits. :func:`storefile.connect` (``still``) opens a copy without a ``-wal``
immutable, and one with a ``-wal`` with ``readonly_shm``: its ``-shm`` opened read-only and, as
no process holds it, the index rebuilt from the ``-wal`` in SQLite's own memory (a running node's
store, whose ``-shm`` its node holds, is read through that, as any reader does). That needs a
``-shm`` to open: for a copy made without one, :func:`still_store` gives a private
folder instead: the file hard-linked (copied across file systems, or when linking is refused),
the ``-wal`` copied and an empty ``-shm`` beside them, so the copy's folder is only read. (The
link moves the file's ctime and link count while it lasts, never its bytes or mtime.)

The private folder is ``vledger-still-<pid>-*`` in the system's temporary folder (``TMPDIR``).
A process killed while it reads (``kill -9``) leaves it there, with a second name of the
evidence's file: each :func:`still_store` first removes those of this user whose process is
gone, so a leftover lasts until the next ``vledger verify`` or export of a copy. A store file
or ``-wal`` that is a symbolic link is refused: linked or copied, the file it names (anywhere
on the host) would be read, and named again in the temporary folder, as the copy's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import StoreError
from .owners import runs
from .storefile import DB_NAME, shm_of, wal_of

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StillStore:
    """Where to open a still store, and what of it is read."""

    directory: Path  # the store's folder, or the private one that stands for it
    wal_read: tuple[str, int] | None  # the name and size of the -wal whose commits are read; None: none


@contextlib.contextmanager
def still_store(directory: Path) -> Iterator[StillStore]:
    """The folder to open ``directory``'s store from (``still``), for as long as the context
    lasts: the store's own, or a private temporary folder removed at the end. Raises StoreError
    when the store's files cannot be read."""
    path = directory / DB_NAME
    wal = wal_of(path)
    try:
        linked = [p.name for p in (path, wal, shm_of(path)) if p.is_symlink()]
        size = wal.stat().st_size if wal.is_file() else None
        in_place = size is None or shm_of(path).exists()
    except OSError as e:
        raise StoreError(f"{directory}: cannot read the store's files: {e}") from e
    if linked:
        raise StoreError(f"{directory}: {', '.join(linked)} is a symbolic link: a copy is read from its own files only")
    wal_read = (wal.name, size) if size else None  # an empty one holds no commit to mention
    if in_place:
        yield StillStore(directory, wal_read)
        return
    # Named as the store is, so that what names a file of it (a failure to open it) says which.
    _remove_leftovers()
    with tempfile.TemporaryDirectory(prefix=f"{_PREFIX}{os.getpid()}-") as private:
        view = Path(private) / (directory.resolve().name or "store")
        try:
            view.mkdir()
            _link_or_copy(path, view / DB_NAME)
            shutil.copyfile(wal, wal_of(view / DB_NAME))  # SQLite only reads it, but it is evidence
            shm_of(view / DB_NAME).touch()  # ours: read-only and held by no process, as in place
        except OSError as e:
            raise StoreError(f"{directory}: cannot read the store's files: {e}") from e
        yield StillStore(view, wal_read)


_PREFIX = "vledger-still-"
_LEFTOVER = re.compile(re.escape(_PREFIX) + r"([0-9]+)-")


def _remove_leftovers() -> None:
    """Remove the private folders of this user's processes that are gone (killed while reading)."""
    try:
        entries = list(os.scandir(tempfile.gettempdir()))
    except OSError as e:
        log.warning("cannot look for leftover private folders: %s", e)
        return
    for entry in entries:
        found = _LEFTOVER.match(entry.name)
        if found is None or not entry.is_dir(follow_symlinks=False) or runs(int(found.group(1))):
            continue
        with contextlib.suppress(OSError):
            if entry.stat(follow_symlinks=False).st_uid != os.geteuid():
                continue
            shutil.rmtree(entry.path)  # names only: the evidence keeps its own
            log.info("removed %s, left by a process that is gone", entry.path)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError as e:  # another file system, or a file the kernel will not let us link
        log.info("%s: copied to read it (%s)", source, e)
        shutil.copyfile(source, target)
