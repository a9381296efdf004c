"""What a client has verified before: the largest checkpoint of each ledger, kept in a small file.

A log only grows. A client that remembers the largest checkpoint it verified (its size and
root) asks for a consistency proof from it to every new one, and refuses a smaller one
(``rollback``): so a server cannot show it one tree today and a rewritten one tomorrow.
It also remembers that checkpoint's epoch (docs/PROTOCOL.md 10.9), so that a home a handover
replaced is refused (``fenced``) however the client meets it again. Without a file the memory
lasts as long as the :class:`TrustedState`.

The file (docs/PROTOCOL.md 15.4) is UTF-8 JSON, written whole to a temporary file beside it
(mode 0600), flushed and renamed over it, so that a crash leaves the old or the new one:

    {"version": 1, "ledgers": {"<ledger>": {"size": <int>, "root": "<64 hex>"}}}

and, for a checkpoint of an epoch after the first, ``"epoch": <int from 2>, "home": "<node>"``
in its ledger's map (absent: epoch 1, which a file from before epochs holds).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ..node.anchors import is_valid_name
from ..node.errors import SettingsError
from ..node.json_values import parse_json
from ..node.record import NAME_PATTERN
from ..node.tree import HASH_SIZE, MAX_TREE_SIZE

STATE_VERSION = 1
MAX_STATE_BYTES = 4 * 1024 * 1024  # a few thousand ledgers; refuse a file far larger before reading it


@dataclass(frozen=True, slots=True)
class Seen:
    """The largest checkpoint verified for a ledger: its tree size and root, and the epoch it
    states (10.9: 1 and no home without an epoch line)."""

    size: int
    root: bytes
    epoch: int = 1
    home: str | None = None


class TrustedState:
    """The largest verified checkpoint per ledger, in memory and, with ``path``, in that file.

    Raises SettingsError when ``path`` exists but is not a trusted-state file (bad JSON, a
    field of the wrong type, another version), rather than starting over from nothing.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: dict[str, Seen] = {} if path is None else _load(path)

    def get(self, ledger: str) -> Seen | None:
        with self._lock:
            return self._seen.get(ledger)

    def put(self, ledger: str, seen: Seen) -> None:
        """Remember ``seen`` for ``ledger`` (the caller verified it extends what was there)."""
        with self._lock:
            if self._seen.get(ledger) == seen:
                return
            self._seen[ledger] = seen
            if self.path is not None:
                _save(self.path, self._seen)


def _load(path: Path) -> dict[str, Seen]:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise SettingsError(f"{path}: cannot read the trusted state: {e.strerror}") from None
    if len(data) > MAX_STATE_BYTES:
        raise SettingsError(f"{path}: over {MAX_STATE_BYTES} bytes: not a trusted-state file")
    try:
        value = parse_json(data)
        if value.get("version") != STATE_VERSION or not isinstance(value.get("ledgers"), dict):
            raise ValueError(f"not version {STATE_VERSION} with a map of ledgers")
        return {ledger: _seen(ledger, entry) for ledger, entry in value["ledgers"].items()}
    except (ValueError, AttributeError, TypeError) as e:
        raise SettingsError(f"{path}: not a trusted-state file: {e}") from None


def _seen(ledger: str, entry: object) -> Seen:
    if not NAME_PATTERN.fullmatch(ledger):
        raise ValueError(f"{ledger[:80]!r} is not a ledger name")
    if not isinstance(entry, dict):
        raise ValueError(f"ledger {ledger!r}: not a map")
    size, root = entry.get("size"), entry.get("root")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_TREE_SIZE:
        raise ValueError(f"ledger {ledger!r}: size is not a tree size")
    if not isinstance(root, str) or len(root) != 2 * HASH_SIZE:
        raise ValueError(f"ledger {ledger!r}: root is not {2 * HASH_SIZE} hex characters")
    if "epoch" not in entry and "home" not in entry:
        return Seen(size, bytes.fromhex(root))
    epoch, home = entry.get("epoch"), entry.get("home")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 2:
        raise ValueError(f"ledger {ledger!r}: epoch is not an epoch number from 2")
    if not isinstance(home, str) or not is_valid_name(home):
        raise ValueError(f"ledger {ledger!r}: an epoch's home is not a node name")
    return Seen(size, bytes.fromhex(root), epoch, home)


def _entry(seen: Seen) -> dict[str, object]:
    entry: dict[str, object] = {"size": seen.size, "root": seen.root.hex()}
    if seen.epoch > 1:
        entry.update(epoch=seen.epoch, home=seen.home)
    return entry


def _save(path: Path, seen: dict[str, Seen]) -> None:
    text = json.dumps(
        {
            "version": STATE_VERSION,
            "ledgers": {ledger: _entry(s) for ledger, s in sorted(seen.items())},
        },
        indent=1,
    )
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
