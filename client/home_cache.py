"""Which ledgers' configured homes a client found silent, remembered between its processes.

A ledger whose home does not answer is read and written through its standby (PROTOCOL 10.9),
but each new ``vledger`` process learnt that again by waiting out the home's timeout first.
A session therefore notes, in a small file beside the caller's key, each ledger whose
configured home did not answer, with the standby it turned to and when; the next process
with the same cluster file asks that standby first, for :data:`SILENT_SECONDS` from the note
(then the home once more: one timeout at most per ledger and period while it stays silent).

Nothing here is trusted beyond the cluster file: a noted node is used only while the file
makes it the ledger's standby (the session checks), a noted standby that does not answer
sends the request to the configured home after all, and a configured home that answers
(a write the standby names it the home of, say) ends the note. The file's name comes from
a digest of the cluster file's path, never from a ledger's name or anything a node sent; it is
written 0600, replaced whole, and one that does not read as a note is taken as empty. It is
an optimisation: a file that cannot be read or written costs the timeout again, never the command.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

SILENT_SECONDS = 600.0  # how long a note sends a new process to the standby first
MAX_NOTES = 256  # ledgers noted at most (the oldest notes go first)
VERSION = 1


def cache_path(key: Path, config: Path) -> Path:
    """The note file for cluster file ``config``, beside the caller's key file ``key``."""
    digest = hashlib.sha256(str(config.resolve()).encode()).hexdigest()[:16]
    return key.resolve().parent / f".vledger-homes-{digest}.json"


class HomeCache:
    """The notes of one cluster file: ledger -> (the standby asked in its home's place, when)."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time, keep: float = SILENT_SECONDS) -> None:
        self.path = path
        self.clock = clock
        self.keep = keep

    @classmethod
    def beside(cls, key: Path, config: Path) -> HomeCache:
        return cls(cache_path(key, config))

    def silent(self) -> dict[str, str]:
        """ledger -> the standby noted for it, for the notes younger than ``keep``."""
        now = self.clock()
        return {ledger: node for ledger, (node, at) in self._read().items() if 0 <= now - at < self.keep}

    def home_silent(self, ledger: str, standby: str) -> None:
        """Note that ``ledger``'s configured home did not answer and ``standby`` was asked."""
        notes = self._read()
        notes[ledger] = (standby, self.clock())
        self._write(notes)

    def home_answered(self, ledgers: Iterable[str]) -> None:
        """End the notes of ``ledgers``: their configured home answers."""
        notes = self._read()
        if any(notes.pop(ledger, None) is not None for ledger in list(ledgers)):
            self._write(notes)

    def _read(self) -> dict[str, tuple[str, float]]:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.debug("home notes %s not read: %s", self.path, e)
            return {}
        notes: dict[str, tuple[str, float]] = {}
        if not isinstance(document, dict) or document.get("version") != VERSION:
            return notes
        entries = document.get("silent")
        for ledger, entry in (entries if isinstance(entries, dict) else {}).items():
            if isinstance(entry, dict) and isinstance(entry.get("standby"), str):
                at = entry.get("at")
                if isinstance(at, (int, float)) and not isinstance(at, bool):
                    notes[ledger] = (entry["standby"], float(at))
        return notes

    def _write(self, notes: dict[str, tuple[str, float]]) -> None:
        kept = sorted(notes.items(), key=lambda item: item[1][1])[-MAX_NOTES:]
        document = {"version": VERSION, "silent": {ledger: {"standby": n, "at": at} for ledger, (n, at) in kept}}
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            temporary.unlink(missing_ok=True)  # one a killed process left: made anew, 0600
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(document, out, sort_keys=True)
            os.replace(temporary, self.path)  # whole, never half a file for another process to read
        except OSError as e:
            log.debug("home notes %s not written: %s", self.path, e)
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
