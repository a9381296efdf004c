"""Observers' signed tally snapshots on Redis (docs/PROTOCOL.md section 11).

Keys (``vledger`` is the namespace, as in broker/replication.py), each of one observer's
name, which only that observer's Redis user writes (broker/redis_acl.py):

* ``vledger:{<ledger>}:tallies:<observer>``: a stream with one entry per snapshot the
  observer published, fields ``height`` (decimal), ``body`` (the canonical msgpack body
  that is signed) and ``signature`` (64 bytes, Ed25519). Trimmed to about
  ``stream_max_len`` entries, fewer for large bodies (``stream_max_bytes``).
* ``vledger:{<ledger>}:tally:latest:<observer>``: a string, the stream id of its latest
  entry (what a reader polls to see a new one without reading its body).

Both are written by one function call (they share the ledger's hash tag: one slot), so the latest
id never names an entry that is not in the stream. A reader takes the observer of an entry
from the key's name, never from what the entry says: an observer writes only its own keys,
but may put anything in them (a body another observer signed, say), which the signature
check then finds. Nothing here checks a signature: a reader does (vledger.verifier.tally).

The older layout's shared ``vledger:{<ledger>}:tallies`` and ``:tally:latest`` (every
observer's entries in one stream, any observer's user could write all of it) are no longer
read: each observer publishes every ledger at its head anew once it restarted and replayed
its store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from . import redis_functions
from .bounded_range import bounded_range
from .redis_functions import RedisFunction
from .redis_keys import NAMESPACE, ledger_key

HISTORY_PAGE = 500
# The bytes a reader takes in one read of a stream (PROTOCOL 11.1): an observer's Redis user may
# XADD anything to its stream, and a page of 500 bodies of any size was the verifier's read every
# time a latest id changed. One entry larger than this is read as ``oversized``, its fields left
# in Redis; an honest body is far smaller (a resources ledger's, the largest, names every account
# holding units: some 30 bytes each).
MAX_READ_BYTES = 4 * 1024 * 1024
# The fewest snapshots a stream keeps, however large each: readers compare observers at a common
# height among their recent snapshots (PROTOCOL 10.6), which a stream of one would rarely give.
MIN_KEPT = 16
_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_ID_PART_MAX = 2**64 - 1  # Redis refuses a larger part ("Invalid stream ID"), failing the whole pipeline


def _is_stream_id(text: str) -> bool:
    """Whether ``text`` is an id Redis takes: two decimal parts, each at most 2**64 - 1."""
    return _STREAM_ID.fullmatch(text) is not None and all(int(part) <= _ID_PART_MAX for part in text.split("-"))


# The entry and the latest id in one step (tally_publish), and a range read bounded in bytes
# (tally_read: at most MAX_READ_BYTES, each field counted as RESP sends it; an entry larger
# alone comes without its fields, oversized) are functions of broker/functions.lua. A user
# that may run no function reads the same way through broker/bounded_range.py.


def _range(command: str, start: str, end: str, count: int) -> list[str]:
    """tally_read's arguments: ``command`` (XRANGE or XREVRANGE) from ``start`` to ``end``, ``count`` entries."""
    return [command, start, end, str(count), str(MAX_READ_BYTES)]


@dataclass(frozen=True, slots=True)
class Published:
    """One entry of an observer's tally stream, as Redis holds it (nothing checked yet);
    ``observer`` is the one whose key holds it."""

    entry_id: str
    observer: str
    height: int
    body: bytes
    signature: bytes
    oversized: bool = False  # over MAX_READ_BYTES: not read (height -1, body and signature empty)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _published(observer: str, entry_id: Any, fields: dict[bytes, bytes] | list[bytes]) -> Published | None:
    """An entry's fields (as XRANGE or tally_read gives them), or None for an entry of another shape
    (a reader reports it as missing); with no fields, one tally_read found oversized."""
    if isinstance(fields, list):
        if not fields:
            return Published(_text(entry_id), observer, -1, b"", b"", oversized=True)
        fields = dict(zip(fields[::2], fields[1::2], strict=False))
    try:
        return Published(
            _text(entry_id), observer, int(fields[b"height"]), bytes(fields[b"body"]), bytes(fields[b"signature"])
        )
    except (KeyError, ValueError):
        return None


class TallyBoard:
    """The tally streams on one Redis (``client`` from ``redis_server.connect``: bytes replies)."""

    def __init__(
        self,
        client: Any,
        namespace: str = NAMESPACE,
        *,
        stream_max_len: int = 10_000,
        stream_max_bytes: int = 64 * 1024 * 1024,
        scripts: bool = True,
    ) -> None:
        """Entries are read at most MAX_READ_BYTES a read, a larger one alone without its fields:
        through tally_read, or with ``scripts`` False, for a user that may call no function (the
        gateway's), by a reply read that stops there (broker/bounded_range.py)."""
        self.client = client
        self.namespace = namespace
        self.stream_max_len = stream_max_len
        self.stream_max_bytes = stream_max_bytes
        self.scripts = scripts
        self._publish = RedisFunction(client, "tally_publish")
        self._read = RedisFunction(client, "tally_read")  # FCALL_RO: the readers' users only read these keys

    def stream_key(self, ledger: str, observer: str) -> str:
        """``observer``'s stream of snapshots of ``ledger``: only its Redis user writes it."""
        return ledger_key(self.namespace, ledger, f"tallies:{observer}")

    def latest_key(self, ledger: str, observer: str) -> str:
        """The id of ``observer``'s latest entry in its stream of ``ledger``: only its Redis user writes it."""
        return ledger_key(self.namespace, ledger, f"tally:latest:{observer}")

    def publish(self, ledger: str, observer: str, height: int, body: bytes, signature: bytes) -> str:
        """Add a snapshot to ``observer``'s stream of ``ledger`` and make it its latest; its entry id."""
        keys = [self.stream_key(ledger, observer), self.latest_key(ledger, observer)]
        return _text(self._publish(keys=keys, args=[self.kept(len(body)), height, body, signature]))

    def kept(self, body_bytes: int) -> int:
        """The snapshots a stream keeps once one of ``body_bytes`` is added: ``stream_max_len``, fewer
        when that many bodies of this size would pass ``stream_max_bytes``, never below MIN_KEPT."""
        return max(MIN_KEPT, min(self.stream_max_len, self.stream_max_bytes // max(1, body_bytes)))

    def latest_ids(self, ledgers: Iterable[str], observers: Iterable[str]) -> dict[str, dict[str, str]]:
        """ledger -> observer -> the id of its latest entry (observers that published none left out):
        one round trip, no body read."""
        names = list(observers)
        found: dict[str, dict[str, str]] = {ledger: {} for ledger in ledgers}
        pairs = [(ledger, observer) for ledger in found for observer in names]
        if not pairs:  # a cluster without observers asks Redis nothing
            return found
        pipe = self.client.pipeline(transaction=False)
        for ledger, observer in pairs:
            pipe.get(self.latest_key(ledger, observer))
        # An answer that is an error (a key of another type) fails its observer only, as no snapshot;
        # a refusal (NOPERM) is raised: this reader may not know, which is not "none published".
        for (ledger, observer), entry_id in zip(pairs, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(entry_id, redis.exceptions.NoPermissionError):
                raise entry_id
            if isinstance(entry_id, (bytes, str)):
                found[ledger][observer] = _text(entry_id)
        return found

    def latest(self, ledger: str, observers: Iterable[str]) -> dict[str, Published | None]:
        """Each of ``observers`` that published a snapshot of ``ledger`` -> its latest entry (None
        if its latest id is no stream id or names no entry of its stream, or one of another shape)."""
        ids = self.latest_ids([ledger], observers)[ledger]
        found: dict[str, Published | None] = dict.fromkeys(ids)
        # An observer writes its latest id itself: one that is no id must not fail the others' reads.
        readable = {observer: entry_id for observer, entry_id in ids.items() if _is_stream_id(entry_id)}
        if not readable:
            return found
        replies = self._latest_entries(ledger, readable)
        if self.scripts and redis_functions.reloaded(replies, self.client):  # Redis lost the library
            replies = self._latest_entries(ledger, readable)
        for observer, entries in zip(readable, replies, strict=True):
            good = isinstance(entries, list) and entries
            found[observer] = _published(observer, *entries[0]) if good else None
        return found

    def latest_entry(self, ledger: str, observer: str) -> Published | None:
        """``observer``'s latest entry of ``ledger``, as :meth:`latest` reads it, but with every
        Redis error raised (a NOPERM among them): for a reader that must tell "none" from "not
        allowed to read" (the admin home stating what a rotated key had tallied, PROTOCOL 16.6)."""
        entry_id = self.client.get(self.latest_key(ledger, observer))
        return None if entry_id is None else self.entry(ledger, observer, _text(entry_id))

    def entry(self, ledger: str, observer: str, entry_id: str) -> Published | None:
        """``observer``'s entry ``entry_id`` of ``ledger`` (None: not there, or no entry id)."""
        if not _is_stream_id(entry_id):
            return None
        entries = self._range(ledger, observer, "XRANGE", entry_id, entry_id, 1)
        return _published(observer, *entries[0]) if entries else None

    def history(
        self, ledger: str, observer: str, before: str | None = None, count: int = HISTORY_PAGE
    ) -> list[Published]:
        """Up to ``count`` of ``observer``'s entries older than the id ``before`` (None: from the
        newest), newest first."""
        top = "+" if before is None else f"({before}"
        entries = self._range(ledger, observer, "XREVRANGE", top, "-", count)
        return [p for key, fields in entries if (p := _published(observer, key, fields)) is not None]

    def _range(self, ledger: str, observer: str, command: str, start: str, end: str, count: int) -> Any:
        """``command`` (XRANGE or XREVRANGE) of ``observer``'s stream, from ``start`` to ``end``."""
        key = self.stream_key(ledger, observer)
        if self.scripts:
            return self._read(keys=[key], args=_range(command, start, end, count))
        return bounded_range(self.client, command, key, start, end, count, MAX_READ_BYTES)

    def _latest_entries(self, ledger: str, ids: dict[str, str]) -> list[Any]:
        """The entry of each observer's id in ``ids`` as tally_read gives it (or the error), in one round
        trip with functions, else one each."""
        if not self.scripts:
            return [self._bounded_or_error(ledger, observer, entry_id) for observer, entry_id in ids.items()]
        pipe = self.client.pipeline(transaction=False)
        for observer, entry_id in ids.items():
            key = self.stream_key(ledger, observer)
            pipe.execute_command(*redis_functions.command("tally_read", [key], _range("XRANGE", entry_id, entry_id, 1)))
        return list(pipe.execute(raise_on_error=False))

    def _bounded_or_error(self, ledger: str, observer: str, entry_id: str) -> Any:
        """As one answer of _latest_entries' pipeline: the entry, or the error Redis answered."""
        try:
            return self._range(ledger, observer, "XRANGE", entry_id, entry_id, 1)
        except redis.exceptions.ResponseError as e:
            return e
