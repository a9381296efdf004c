"""Seals: a home node's signature on a ledger's head, which proves that it placed the chain below.

Anyone can compute a checksum, a proof of work and a link, so a record that verifies proves
nothing about who placed it. A seal does: the home node signs (Ed25519, its ``<home>.sign``
key) the bytes

    utf8("vledger seal v1") || 0x00 || utf8(ledger) || 0x00 || utf8(home) || 0x00
    || u64be(height) || link (32 bytes)

and since a link commits to every record below it, one seal at height H vouches for the
whole chain 0..H. A follower stores records from anywhere but its home node only once a
verified seal covers them (docs/PROTOCOL.md section 10.7). On the wire a seal travels as
``[height, hash, home, signature]`` under its ledger's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import FeedError
from .record import NAME_PATTERN
from .storefile import MAX_HEIGHT

SEAL_PREFIX = b"vledger seal v1\x00"
HASH_BYTES = 32
SIGNATURE_BYTES = 64


def seal_message(ledger: str, height: int, link: bytes, home: str) -> bytes:
    """The exact bytes a home node signs for ``ledger``'s record at ``height`` with ``link``."""
    return b"".join(
        (SEAL_PREFIX, ledger.encode("utf-8"), b"\x00", home.encode("utf-8"), b"\x00", height.to_bytes(8, "big"), link)
    )


@dataclass(frozen=True, slots=True)
class Seal:
    ledger: str
    height: int
    hash: bytes  # the link of the record at ``height``
    home: str  # the node that signed: the ledger's home
    signature: bytes

    @property
    def message(self) -> bytes:
        return seal_message(self.ledger, self.height, self.hash, self.home)

    def wire(self) -> list[Any]:
        return [self.height, self.hash, self.home, self.signature]


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 64 or not NAME_PATTERN.fullmatch(value):
        raise FeedError(f"{what}: not a name")
    return value


def seal_from_wire(ledger: object, value: object) -> Seal:
    """A seal as sent, ``[height, hash, home, signature]``, checked for shape (not signature)."""
    if not isinstance(value, list) or len(value) != 4:
        raise FeedError("a seal is [height, hash, home, signature]")
    height, digest, home, signature = value
    if type(height) is not int or not 0 <= height < MAX_HEIGHT:
        raise FeedError("seal: not a height")
    if not isinstance(digest, bytes) or len(digest) != HASH_BYTES:
        raise FeedError("seal: a hash is 32 bytes")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise FeedError("seal: a signature is 64 bytes")
    return Seal(_name(ledger, "seal ledger"), height, digest, _name(home, "seal home"), signature)
