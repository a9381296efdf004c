"""Records: what a client writes (content), what a node adds (height, link), and their bytes.

A record has two parts (docs/PROTOCOL.md, "Records"):

* the **content**, built and hashed by the client: ledger, kind, payload, author, request
  id and the client's timestamp. Its canonical bytes give the **checksum**; the client
  finds a **nonce** whose work digest meets the ledger's difficulty. Together these make
  an :class:`Entry`, which the client can prepare before it knows where it will land.
* the **placement**, added by the ledger's home node: height, the previous record's link,
  the time it was accepted and the node's name. The **link** hashes all of these with the
  checksum and nonce, so that it commits to the record and, through ``prev``, to every
  record before it. The link is the record's **hash**, its name everywhere else.

Replication bookkeeping (counts, hops) is never part of a record.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import msgpack

from ..config.settings import Limits
from . import canonical, work
from .errors import FieldError, NonCanonicalError, PayloadTooLargeError, Where

FORMAT_VERSION = 1
GENESIS_KIND = "genesis"
ZERO_LINK = bytes(32)
HASH_SIZE = 32

# Lower-case names for ledgers, kinds and nodes; account names also allow capitals and '@'.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")
_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]*")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]+")

CONTENT_KEYS = ("author", "kind", "ledger", "payload", "request_id", "ts", "v")
RECORD_KEYS = ("accepted", "checksum", "content", "height", "link", "nonce", "origin", "prev")


def _text(value: object, field: str, pattern: re.Pattern[str], max_length: int, where: Where) -> str:
    if not isinstance(value, str):
        raise FieldError(f"{field} must be a string, not {type(value).__name__}", **where)
    if not 0 < len(value) <= max_length or not pattern.fullmatch(value):
        raise FieldError(f"{field} {value!r} is not a valid name ({pattern.pattern}, at most {max_length})", **where)
    return value


def _uint(value: object, field: str, where: Where, maximum: int = 2**64 - 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise FieldError(f"{field} must be an integer, not {type(value).__name__}", **where)
    if not 0 <= value <= maximum:
        raise FieldError(f"{field} {value} is out of range 0..{maximum}", **where)
    return value


def _digest(value: object, field: str, where: Where) -> bytes:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise FieldError(f"{field} must be {HASH_SIZE} bytes of binary", **where)
    return value


def check_ledger_name(name: object, limits: Limits) -> str:
    return _text(name, "ledger", NAME_PATTERN, limits.max_name_length, {})


def check_node_name(name: object, limits: Limits) -> str:
    return _text(name, "origin", NAME_PATTERN, limits.max_name_length, {})


@dataclass(frozen=True, slots=True)
class Content:
    """The part of a record the client writes; its canonical bytes are checksummed."""

    ledger: str
    kind: str
    payload: dict[str, Any]
    author: str
    request_id: str
    ts: int

    def to_map(self) -> dict[str, Any]:
        return {
            "author": self.author,
            "kind": self.kind,
            "ledger": self.ledger,
            "payload": self.payload,
            "request_id": self.request_id,
            "ts": self.ts,
            "v": FORMAT_VERSION,
        }

    def encode(self, limits: Limits) -> bytes:
        """Validate every field and return the canonical bytes."""
        validate_content(self, limits)
        data = canonical.encode(self.to_map(), limits.max_depth)
        _check_content_size(data, limits)
        return data


def _check_content_size(data: bytes, limits: Limits) -> None:
    if len(data) > limits.max_payload_bytes:
        raise PayloadTooLargeError(f"content is {len(data)} bytes, over the limit of {limits.max_payload_bytes}")


def decode_content(data: bytes, limits: Limits) -> Content:
    """Parse and validate content bytes; raises a MalformedRecordError or PayloadTooLargeError."""
    _check_content_size(data, limits)
    value = canonical.decode(data, limits.max_depth)
    if not isinstance(value, dict):
        raise FieldError("content must be a map")
    if tuple(value) != CONTENT_KEYS:
        missing = sorted(set(CONTENT_KEYS) - set(value))
        unknown = sorted(set(value) - set(CONTENT_KEYS))
        raise FieldError(f"content fields are wrong (missing {missing}, unknown {unknown})")
    if value["v"] != FORMAT_VERSION:
        raise FieldError(f"format version {value['v']!r} is not supported (expected {FORMAT_VERSION})")
    content = Content(
        ledger=value["ledger"],
        kind=value["kind"],
        payload=value["payload"],
        author=value["author"],
        request_id=value["request_id"],
        ts=value["ts"],
    )
    return validate_content(content, limits)


def validate_content(content: Content, limits: Limits) -> Content:
    """Check the content's field values (types and syntax); returns it unchanged."""
    ledger = _text(content.ledger, "ledger", NAME_PATTERN, limits.max_name_length, {})
    where: Where = {"ledger": ledger}
    if not isinstance(content.payload, dict):
        raise FieldError(f"payload must be a map, not {type(content.payload).__name__}", **where)
    _text(content.kind, "kind", NAME_PATTERN, limits.max_name_length, where)
    _text(content.author, "author", _ACCOUNT, limits.max_name_length, where)
    _text(content.request_id, "request_id", _REQUEST_ID, limits.max_request_id_length, where)
    _uint(content.ts, "ts", where)
    return content


def checksum_of(content_bytes: bytes) -> bytes:
    return hashlib.sha256(content_bytes).digest()


def link_of(prev: bytes, checksum: bytes, height: int, nonce: int, accepted: int, origin: str) -> bytes:
    """SHA-256(prev || checksum || u64be(height) || u64be(nonce) || u64be(accepted) || origin)."""
    return hashlib.sha256(
        b"".join(
            (
                prev,
                checksum,
                height.to_bytes(8, "big"),
                nonce.to_bytes(8, "big"),
                accepted.to_bytes(8, "big"),
                origin.encode(),
            )
        )
    ).digest()


@dataclass(frozen=True, slots=True)
class Entry:
    """Content with its checksum and a nonce: what a client submits for a ledger."""

    content: Content
    content_bytes: bytes
    checksum: bytes
    nonce: int

    @classmethod
    def prepare(cls, content: Content, difficulty: int, limits: Limits) -> Entry:
        """Encode the content and do its proof of work (about 2**difficulty hashes)."""
        data = content.encode(limits)
        checksum = checksum_of(data)
        return cls(content, data, checksum, work.solve(checksum, difficulty))

    @classmethod
    def from_wire(cls, content_bytes: bytes, nonce: object, limits: Limits) -> Entry:
        """An entry as received: its content parsed and validated, its nonce range-checked."""
        content = decode_content(content_bytes, limits)
        _uint(nonce, "nonce", {"ledger": content.ledger})
        assert isinstance(nonce, int)
        return cls(content, content_bytes, checksum_of(content_bytes), nonce)

    def place(self, height: int, prev: bytes, accepted: int, origin: str) -> Record:
        """The record this entry becomes at ``height`` after ``prev``, accepted by ``origin``."""
        link = link_of(prev, self.checksum, height, self.nonce, accepted, origin)
        return Record(self.content, self.content_bytes, self.checksum, self.nonce, height, prev, accepted, origin, link)


@dataclass(frozen=True, slots=True)
class Record:
    """A placed record, exactly as stored and sent between nodes."""

    content: Content
    content_bytes: bytes
    checksum: bytes
    nonce: int
    height: int
    prev: bytes
    accepted: int
    origin: str
    link: bytes

    @property
    def hash(self) -> bytes:
        """The record's name: its link, which commits to it and to everything before it."""
        return self.link

    @property
    def ledger(self) -> str:
        return self.content.ledger

    def entry(self) -> Entry:
        return Entry(self.content, self.content_bytes, self.checksum, self.nonce)

    def encode(self) -> bytes:
        return msgpack.packb(  # type: ignore[no-any-return]
            {
                "accepted": self.accepted,
                "checksum": self.checksum,
                "content": self.content_bytes,
                "height": self.height,
                "link": self.link,
                "nonce": self.nonce,
                "origin": self.origin,
                "prev": self.prev,
            },
            use_bin_type=True,
        )


def decode_record(data: bytes, limits: Limits) -> Record:
    """Parse a stored record's bytes: structure, types and canonical form, not its hashes.

    Use :func:`vledger.node.verify.verify_record` for the hashes and proof of work.
    """
    if len(data) > limits.max_record_bytes:
        raise PayloadTooLargeError(f"record is {len(data)} bytes, over the limit of {limits.max_record_bytes}")
    value = canonical.unpack(data)
    if not isinstance(value, dict):
        raise FieldError("a record must be a map")
    if tuple(value) != RECORD_KEYS:
        if sorted(value) == sorted(RECORD_KEYS):
            raise NonCanonicalError("record keys are not in sorted order")
        missing = sorted(set(RECORD_KEYS) - set(value))
        unknown = sorted(set(value) - set(RECORD_KEYS))
        raise FieldError(f"record fields are wrong (missing {missing}, unknown {unknown})")
    content_bytes = value["content"]
    if not isinstance(content_bytes, bytes):
        raise FieldError("content must be binary (the content's canonical bytes)")
    content = decode_content(content_bytes, limits)
    where: Where = {"ledger": content.ledger}
    height = _uint(value["height"], "height", where)
    where["height"] = height
    record = Record(
        content=content,
        content_bytes=content_bytes,
        checksum=_digest(value["checksum"], "checksum", where),
        nonce=_uint(value["nonce"], "nonce", where),
        height=height,
        prev=_digest(value["prev"], "prev", where),
        accepted=_uint(value["accepted"], "accepted", where),
        origin=_text(value["origin"], "origin", NAME_PATTERN, limits.max_name_length, where),
        link=_digest(value["link"], "link", where),
    )
    if record.encode() != data:
        raise NonCanonicalError("record is not in its canonical encoding", **where)
    return record
