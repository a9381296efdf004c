"""How an alert names records that should be one and are not (PROTOCOL 10.5: ``expected``, ``found``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..config.settings import PROTOCOL_LIMITS
from .errors import VledgerError
from .record import Record, decode_record
from .tree import leaf_hash

# A record's fields as its encoding names them (2.4), compared in this order.
_FIELDS = ("content", "checksum", "nonce", "height", "prev", "accepted", "origin")


def hash_of(data: bytes) -> str:
    """The hash (link) a record claims, hex; for bytes that are no record, ``sha256:<hex>``."""
    try:
        return decode_record(data, PROTOCOL_LIMITS).hash.hex()
    except VledgerError:
        return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class Conflict:
    """Two records at one height that differ, as an alert shows them."""

    expected: str
    found: str
    how: str  # how they differ, to end the alert's detail with ("" where the hashes say it)

    def said(self, sentence: str) -> str:
        """An alert's detail: ``sentence``, ended with :attr:`how` where the hashes do not say it."""
        return f"{sentence}: {self.how}" if self.how else sentence


def told_apart(expected: bytes, found: bytes) -> Conflict:
    """``expected`` and ``found`` (two records' bytes that differ) as an alert names them: each
    one's hash (:func:`hash_of`). Where both claim the same link (a record whose content or
    another field was changed, its link kept), the links would show no difference (outsider
    o11: a record_conflict with the same hash twice): their leaf hashes (12.1, what the tree
    commits to) as ``leaf:<hex>`` instead, and ``how`` names the fields that differ."""
    links = hash_of(expected), hash_of(found)
    if links[0] != links[1]:
        return Conflict(*links, "")
    ours, theirs = decode_record(expected, PROTOCOL_LIMITS), decode_record(found, PROTOCOL_LIMITS)
    differ = [name for name in _FIELDS if _field(ours, name) != _field(theirs, name)]
    how = f"the same link, another {', '.join(differ) or 'encoding'} (expected and found: their leaf hashes)"
    return Conflict("leaf:" + leaf_hash(expected).hex(), "leaf:" + leaf_hash(found).hex(), how)


def _field(record: Record, name: str) -> object:
    return record.content_bytes if name == "content" else getattr(record, name)
