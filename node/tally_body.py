"""An observer's signed tally body (docs/PROTOCOL.md 11.2): what it signs, byte for byte.

    {"v": 1, "observer": str, "ledger": str, "height": int, "head": bin (32),
     "tally": map, "counted": bin (32), "at_ms": int}

as canonical msgpack (section 1). Pure: the body's bytes and fields, no signature and no I/O
(vledger.verifier.tally counts, signs and checks; the admin home reads what a rotated observer
key had tallied, ingest/cosignatures.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import canonical
from .errors import FieldError

BODY_VERSION = 1
# How long an observer may sign nothing newer while behind the checkpoint before it is stale: an
# observer publishes at most once per tally_interval_ms (1 s by default) once it counted what it
# holds, so a live one on a busy ledger is always a little behind, never for long.
STALE_AFTER_MS = 10_000
BODY_KEYS = ("at_ms", "counted", "head", "height", "ledger", "observer", "tally", "v")
HASH_BYTES = 32


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One observer's count of one ledger at one height: what it signs."""

    observer: str
    ledger: str
    height: int
    head: bytes  # the hash of the record at ``height``
    tally: dict[str, Any]
    counted: bytes
    at_ms: int

    def body(self) -> bytes:
        """The canonical msgpack bytes that are signed."""
        return canonical.encode(
            {
                "v": BODY_VERSION,
                "observer": self.observer,
                "ledger": self.ledger,
                "height": self.height,
                "head": self.head,
                "tally": self.tally,
                "counted": self.counted,
                "at_ms": self.at_ms,
            }
        )

    @classmethod
    def decode(cls, body: bytes) -> Snapshot:
        """A body read back; raises a VledgerError (bad_encoding, non_canonical, bad_field) if it is not one."""
        value = canonical.decode(body)
        if not isinstance(value, dict) or sorted(value) != list(BODY_KEYS):
            raise FieldError(f"a tally body is a map of exactly {list(BODY_KEYS)}")
        if value["v"] != BODY_VERSION:
            raise FieldError(f"tally body version {value['v']!r}, not {BODY_VERSION}")
        for key, kind in (("observer", str), ("ledger", str), ("tally", dict), ("head", bytes), ("counted", bytes)):
            if not isinstance(value[key], kind):
                raise FieldError(f"tally body field {key!r} must be a {kind.__name__}")
        for key in ("height", "at_ms"):
            if type(value[key]) is not int or value[key] < 0:
                raise FieldError(f"tally body field {key!r} must be an integer >= 0")
        for key in ("head", "counted"):
            if len(value[key]) != HASH_BYTES:
                raise FieldError(f"tally body field {key!r} must be {HASH_BYTES} bytes")
        return cls(
            value["observer"],
            value["ledger"],
            value["height"],
            value["head"],
            value["tally"],
            value["counted"],
            value["at_ms"],
        )

    def stating(self, observer: str, ledger: str, height: int) -> Snapshot:
        """This body, when it states ``observer``, ``ledger`` and ``height``: those of the entry
        that holds it (its observer's keys, its stream's ledger, its ``height`` field, 11.3).

        Raises FieldError [bad_field] otherwise.
        """
        stated = (self.observer, self.ledger, self.height)
        if stated != (observer, ledger, height):
            raise FieldError(
                f"the signed body says {stated}, the entry in its observer's keys {(observer, ledger, height)}"
            )
        return self

    def same_count(self, other: Snapshot) -> bool:
        """Whether ``other`` states the same chain and the same count (who and when aside)."""
        return (self.ledger, self.height, self.head, self.tally, self.counted) == (
            other.ledger,
            other.height,
            other.head,
            other.tally,
            other.counted,
        )
