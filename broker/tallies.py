"""Observers' signed tally snapshots on Redis (docs/PROTOCOL.md section 11).

Keys (``vledger`` is the namespace, as in broker/replication.py):

* ``vledger:{<ledger>}:tallies``: a stream with one entry per snapshot any observer published,
  fields ``observer`` (its node name), ``height`` (decimal), ``body`` (the canonical msgpack
  body that is signed) and ``signature`` (64 bytes, Ed25519). Trimmed to about
  ``stream_max_len`` entries.
* ``vledger:{<ledger>}:tally:latest``: a hash, observer -> the stream id of its latest entry.

Both are written by one script (they share the ledger's hash tag: one slot), so the hash
never names an entry that is not in the stream (unless the trim took it since).
Nothing here checks a signature: a reader does (vledger.verifier.tally).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .redis_keys import NAMESPACE, ledger_key

HISTORY_PAGE = 500

# The entry and the latest pointer in one step: the hash never names an entry not yet in the stream.
_PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
  'observer', ARGV[2], 'height', ARGV[3], 'body', ARGV[4], 'signature', ARGV[5])
redis.call('HSET', KEYS[2], ARGV[2], id)
return id
"""


@dataclass(frozen=True, slots=True)
class Published:
    """One entry of a ledger's tally stream, as Redis holds it (nothing checked yet)."""

    entry_id: str
    observer: str
    height: int
    body: bytes
    signature: bytes


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _published(entry_id: Any, fields: dict[bytes, bytes]) -> Published | None:
    """An entry's fields, or None for an entry of another shape (a reader reports it as missing)."""
    try:
        return Published(
            _text(entry_id),
            _text(fields[b"observer"]),
            int(fields[b"height"]),
            bytes(fields[b"body"]),
            bytes(fields[b"signature"]),
        )
    except (KeyError, ValueError):
        return None


class TallyBoard:
    """The tally streams on one Redis (``client`` from ``redis_server.connect``: bytes replies)."""

    def __init__(self, client: Any, namespace: str = NAMESPACE, *, stream_max_len: int = 10_000) -> None:
        self.client = client
        self.namespace = namespace
        self.stream_max_len = stream_max_len
        self._publish = client.register_script(_PUBLISH)

    def stream_key(self, ledger: str) -> str:
        return ledger_key(self.namespace, ledger, "tallies")

    def latest_key(self, ledger: str) -> str:
        return ledger_key(self.namespace, ledger, "tally:latest")

    def publish(self, ledger: str, observer: str, height: int, body: bytes, signature: bytes) -> str:
        """Add a snapshot to the ledger's stream and make it ``observer``'s latest; its entry id."""
        keys = [self.stream_key(ledger), self.latest_key(ledger)]
        return _text(self._publish(keys=keys, args=[self.stream_max_len, observer, height, body, signature]))

    def latest(self, ledger: str) -> dict[str, Published | None]:
        """observer -> its latest entry (None if the hash names an entry no longer in the stream)."""
        ids = {_text(k): _text(v) for k, v in self.client.hgetall(self.latest_key(ledger)).items()}
        pipe = self.client.pipeline(transaction=False)
        for entry_id in ids.values():
            pipe.xrange(self.stream_key(ledger), min=entry_id, max=entry_id, count=1)
        found: dict[str, Published | None] = {}
        for observer, entries in zip(ids, pipe.execute(), strict=True):
            found[observer] = _published(*entries[0]) if entries else None
        return found

    def history(self, ledger: str, before: str | None = None, count: int = HISTORY_PAGE) -> list[Published]:
        """Up to ``count`` entries older than the id ``before`` (None: from the newest), newest first."""
        top = "+" if before is None else f"({before}"
        entries = self.client.xrevrange(self.stream_key(ledger), max=top, min="-", count=count)
        return [p for key, fields in entries if (p := _published(key, fields)) is not None]
