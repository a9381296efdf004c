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

import collections
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from itertools import repeat
from typing import Any, NoReturn

import msgpack

from ..config.settings import Limits
from . import canonical, work
from .errors import FieldError, MalformedRecordError, NonCanonicalError, PayloadTooLargeError, Where

FORMAT_VERSION = 1
GENESIS_KIND = "genesis"
ZERO_LINK = bytes(32)
HASH_SIZE = 32

# Lower-case names for ledgers, kinds and nodes; account names also allow capitals and '@'.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")
ACCOUNT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]*")
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]+")
# Request ids a node makes for the records it places for an admin's command: a handover's
# (`epoch-`, 10.9) and a checkpoint key rotation's (`rotate-`, 13.8). A client's write may not
# start with them (PROTOCOL 6): one of its records could otherwise hold the id first.
NODE_REQUEST_PREFIXES = ("epoch-", "rotate-")

CONTENT_KEYS = ("author", "kind", "ledger", "payload", "request_id", "ts", "v")
RECORD_KEYS = ("accepted", "checksum", "content", "height", "link", "nonce", "origin", "prev")


# Names repeat from record to record (one ledger, a few kinds, authors and nodes), so the
# names a pattern has matched are remembered and a chain's verification runs each pattern
# once per distinct name. Only exact str objects go in: a subclass could hash and compare
# as it likes. The length limit is not remembered: it is checked every time.
_MATCHED: dict[re.Pattern[str], set[str]] = {NAME_PATTERN: set(), ACCOUNT_PATTERN: set()}
MATCHED_NAMES = _MATCHED[NAME_PATTERN]
MATCHED_ACCOUNTS = _MATCHED[ACCOUNT_PATTERN]
_MATCHED_MAX = 4096


def matches_name(pattern: re.Pattern[str], value: str) -> bool:
    """Whether ``value`` fully matches ``pattern``, remembering names that did (see above)."""
    matched = _MATCHED.get(pattern)
    if matched is None or type(value) is not str:
        return pattern.fullmatch(value) is not None
    if value in matched:
        return True
    if pattern.fullmatch(value) is None:
        return False
    if len(matched) >= _MATCHED_MAX:  # a flood of distinct names: start again rather than grow
        matched.clear()
    matched.add(value)
    return True


def _text(value: object, field: str, pattern: re.Pattern[str], max_length: int, where: Where) -> str:
    if not isinstance(value, str):
        raise FieldError(f"{field} must be a string, not {type(value).__name__}", **where)
    if not 0 < len(value) <= max_length or not matches_name(pattern, value):
        raise FieldError(f"{field} {value!r} is not a valid name ({pattern.pattern}, at most {max_length})", **where)
    return value


_UINT_MAX = 2**64 - 1

# A content that passed decode_content elsewhere (ingest/content_check.py): its fields (ledger,
# kind, payload, author, request_id, ts), its bytes' length and their SHA-256.
Checked = tuple[str, str, dict[str, Any], str, str, int, int, bytes]


def _uint(value: object, field: str, where: Where, maximum: int = _UINT_MAX) -> int:
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
        try:
            data = canonical.encode(self.to_map(), limits.max_depth)
        except MalformedRecordError as e:  # the payload's; say which ledger, as the field checks do
            raise type(e)(e.reason, ledger=self.ledger) from e
        _check_content_size(data, limits, self.ledger)
        return data


def _check_content_size(data: bytes, limits: Limits, ledger: str | None = None) -> None:
    if len(data) > limits.max_content_bytes:
        raise PayloadTooLargeError(
            f"content is {len(data)} bytes, over the limit of {limits.max_content_bytes}", ledger=ledger
        )


def decode_content(data: bytes, limits: Limits) -> Content:
    """Parse and validate content bytes; raises a MalformedRecordError or PayloadTooLargeError."""
    if len(data) > limits.max_content_bytes:
        _check_content_size(data, limits)
    value = canonical.unpack(data)
    if _is_valid_content(value, data, limits):
        author, kind, ledger, payload, request_id, ts, _ = value.values()
        return new_content(ledger, kind, payload, author, request_id, ts)
    return _checked_content(value, data, limits)


def checked_of(data: bytes, limits: Limits) -> Checked:
    """What :meth:`Entry.from_checked` takes for content bytes ``data``: :func:`decode_content`'s
    fields, the bytes' length and their SHA-256; raises what :func:`decode_content` raises.
    The content-check process's work (ingest/content_check.py): the same checks, its tuple
    built straight from the decoded map, without a Content made only to be taken apart."""
    if len(data) <= limits.max_content_bytes:
        value = canonical.unpack(data)
        if _is_valid_content(value, data, limits):
            author, kind, ledger, payload, request_id, ts, _ = value.values()
            return ledger, kind, payload, author, request_id, ts, len(data), hashlib.sha256(data).digest()
        content = _checked_content(value, data, limits)
    else:
        content = decode_content(data, limits)  # too large: it raises
    return (
        content.ledger,
        content.kind,
        content.payload,
        content.author,
        content.request_id,
        content.ts,
        len(data),
        hashlib.sha256(data).digest(),
    )


def _is_valid_content(value: Any, data: bytes, limits: Limits) -> bool:
    """Whether :func:`_checked_content` would accept ``value``: the same checks, run at once.

    False may also mean "not sure" (a name not yet remembered); the caller then runs the
    checks one by one, which also finds the first failure and its precise error.
    """
    if type(value) is not dict or tuple(value) != CONTENT_KEYS:
        return False
    author, kind, ledger, payload, request_id, ts, v = value.values()
    max_name = limits.max_name_length
    return (
        type(ledger) is str
        and ledger in MATCHED_NAMES
        and len(ledger) <= max_name
        and type(kind) is str
        and kind in MATCHED_NAMES
        and len(kind) <= max_name
        and type(author) is str
        and author in MATCHED_ACCOUNTS
        and len(author) <= max_name
        and type(request_id) is str
        and 0 < len(request_id) <= limits.max_request_id_length
        and REQUEST_ID_PATTERN.fullmatch(request_id) is not None
        and type(ts) is int
        and 0 <= ts <= _UINT_MAX
        and type(v) is int
        and v == FORMAT_VERSION
        and type(payload) is dict
        # The content map itself is depth 0, sorted (its keys are CONTENT_KEYS) and its other
        # values are scalars: only the payload is left to walk before re-encoding.
        and canonical.flaw(payload, 1, limits.max_depth) is None
        and canonical.packs_to(value, data)
    )


def _checked_content(value: Any, data: bytes, limits: Limits) -> Content:
    """The content checks one by one, in the protocol's order: canonical form, then fields."""
    canonical.check(value, data, limits.max_depth)
    if not isinstance(value, dict):
        raise FieldError("content must be a map")
    if tuple(value) != CONTENT_KEYS:
        missing = sorted(set(CONTENT_KEYS) - set(value))
        unknown = sorted(set(value) - set(CONTENT_KEYS))
        raise FieldError(f"content fields are wrong (missing {missing}, unknown {unknown})")
    version = value["v"]
    if type(version) is not int or version != FORMAT_VERSION:
        raise FieldError(f"format version {version!r} is not supported (expected {FORMAT_VERSION})")
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
    _text(content.author, "author", ACCOUNT_PATTERN, limits.max_name_length, where)
    _text(content.request_id, "request_id", REQUEST_ID_PATTERN, limits.max_request_id_length, where)
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
        """An entry as received: its content parsed and validated (raises what
        :func:`decode_content` raises), then its nonce range-checked (FieldError)."""
        content = decode_content(content_bytes, limits)
        # The checks of _uint at once; a value they refuse (or an int subclass) goes through it.
        checked = (
            nonce
            if type(nonce) is int and 0 <= nonce <= _UINT_MAX
            else _uint(nonce, "nonce", {"ledger": content.ledger})
        )
        # new_entry: the request thread takes one entry a put (see new_record on the cost of __init__).
        return new_entry(content, content_bytes, hashlib.sha256(content_bytes).digest(), checked)

    @classmethod
    def from_checked(cls, content_bytes: bytes, nonce: object, checked: Checked, limits: Limits) -> Entry:
        """What :meth:`from_wire` makes of ``content_bytes``, from ``checked``: the fields and
        SHA-256 that :func:`decode_content` and hashing gave for these very bytes in the node's
        content-check process (ingest/content_check.py), which sends them only for contents that
        passed every check. Their length is compared as a guard against a mix-up of requests
        (never expected): on a mismatch the content is decoded here."""
        ledger, kind, payload, author, request_id, ts, length, checksum = checked
        if length != len(content_bytes):
            return cls.from_wire(content_bytes, nonce, limits)
        content = new_content(ledger, kind, payload, author, request_id, ts)
        checked_nonce = (
            nonce if type(nonce) is int and 0 <= nonce <= _UINT_MAX else _uint(nonce, "nonce", {"ledger": ledger})
        )
        return new_entry(content, content_bytes, checksum, checked_nonce)

    def place(self, height: int, prev: bytes, accepted: int, origin: str) -> Record:
        """The record this entry becomes at ``height`` after ``prev``, accepted by ``origin``."""
        link = link_of(prev, self.checksum, height, self.nonce, accepted, origin)
        # new_record: the committer places one entry a put (see new_record on the cost of __init__).
        return new_record(
            self.content, self.content_bytes, self.checksum, self.nonce, height, prev, accepted, origin, link
        )


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
        return canonical.pack(
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
        )


# Decoding makes a Content and a Record for every record read (an Entry for every put). A frozen dataclass's __init__
# sets each field through object.__setattr__; setting the slots through their descriptors
# takes half the time. These two make exactly what Content(...) and Record(...) make (the
# classes have no __post_init__ or defaults to apply); tests/unit/node/test_fastpath.py
# compares them.
_CONTENT_SLOTS = tuple(Content.__dict__[f.name].__set__ for f in fields(Content))
_ENTRY_SLOTS = tuple(Entry.__dict__[f.name].__set__ for f in fields(Entry))
_RECORD_SLOTS = tuple(Record.__dict__[f.name].__set__ for f in fields(Record))


def new_content(ledger: str, kind: str, payload: dict[str, Any], author: str, request_id: str, ts: int) -> Content:
    set_ledger, set_kind, set_payload, set_author, set_request_id, set_ts = _CONTENT_SLOTS
    content: Content = object.__new__(Content)
    set_ledger(content, ledger)
    set_kind(content, kind)
    set_payload(content, payload)
    set_author(content, author)
    set_request_id(content, request_id)
    set_ts(content, ts)
    return content


def new_entry(content: Content, content_bytes: bytes, checksum: bytes, nonce: int) -> Entry:
    set_content, set_content_bytes, set_checksum, set_nonce = _ENTRY_SLOTS
    entry: Entry = object.__new__(Entry)
    set_content(entry, content)
    set_content_bytes(entry, content_bytes)
    set_checksum(entry, checksum)
    set_nonce(entry, nonce)
    return entry


def new_record(
    content: Content,
    content_bytes: bytes,
    checksum: bytes,
    nonce: int,
    height: int,
    prev: bytes,
    accepted: int,
    origin: str,
    link: bytes,
) -> Record:
    (
        set_content,
        set_content_bytes,
        set_checksum,
        set_nonce,
        set_height,
        set_prev,
        set_accepted,
        set_origin,
        set_link,
    ) = _RECORD_SLOTS
    record: Record = object.__new__(Record)
    set_content(record, content)
    set_content_bytes(record, content_bytes)
    set_checksum(record, checksum)
    set_nonce(record, nonce)
    set_height(record, height)
    set_prev(record, prev)
    set_accepted(record, accepted)
    set_origin(record, origin)
    set_link(record, link)
    return record


def record_of_checked(data: bytes) -> Record:
    """The Record of bytes that ChainVerifier's fast path already took, in another process
    (a follower's page checker, vledger.ingest.page_check): decoded, nothing checked again.

    Only for such bytes: anything else may give a Record that is not what :func:`decode_record`
    gives, or raise anything msgpack or the unpacking raises. Its caller still ties each record
    to its own chain (height and prev)."""
    value = msgpack.unpackb(data)
    return record_of_maps(value, msgpack.unpackb(value["content"]))


# A record's values as plain Python values, in the order new_content then new_record take them
# (ledger, kind, payload, author, request_id, ts; content_bytes, checksum, nonce, height, prev,
# accepted, origin, link): what a follower's page checker reads of each row it passed (sent to
# the follower as RecordColumns), so that the follower builds the Record without decoding the
# bytes again (ingest/page_check.py).
RecordFields = tuple[str, str, dict[str, Any], str, str, int, bytes, bytes, int, int, bytes, int, str, bytes]


def fields_of_checked(data: bytes, names: dict[str, str]) -> RecordFields:
    """The :data:`RecordFields` of bytes that ChainVerifier's fast path already took (as
    :func:`record_of_checked`, nothing checked again). ``names``: the names seen so far, each
    kept once (the ledger, kind, author and origin repeat a page long: pickled once a page,
    they are unpickled once, not once a record)."""
    accepted, checksum, content_bytes, height, link, nonce, origin, prev = msgpack.unpackb(data).values()
    author, kind, ledger, payload, request_id, ts, _ = msgpack.unpackb(content_bytes).values()
    keep = names.setdefault
    return (
        keep(ledger, ledger),
        keep(kind, kind),
        payload,
        keep(author, author),
        request_id,
        ts,
        content_bytes,
        checksum,
        nonce,
        height,
        prev,
        accepted,
        keep(origin, origin),
        link,
    )


# The same values a column each, in the same order (column i holds value i of every record):
# what the page checker sends for a page's passed rows. Columns cost both sides less than a
# tuple a row (a page's 14 sequences, not 1,000 tuples, to write, read and take apart), and the
# follower builds the Records a column at a time (records_of_columns).
RecordColumns = tuple[
    tuple[str, ...], tuple[str, ...], tuple[dict[str, Any], ...], tuple[str, ...], tuple[str, ...], tuple[int, ...],
    tuple[bytes, ...], tuple[bytes, ...], tuple[int, ...], tuple[int, ...], tuple[bytes, ...], tuple[int, ...],
    tuple[str, ...], tuple[bytes, ...],
]  # fmt: skip
_drain = collections.deque[object](maxlen=0).extend  # runs an iterator to its end, keeping nothing


def columns_of_fields(values: Sequence[RecordFields]) -> RecordColumns:
    """``values`` (a :data:`RecordFields` a record) as :data:`RecordColumns`."""
    if not values:
        return ((), (), (), (), (), (), (), (), (), (), (), (), (), ())
    columns: RecordColumns = tuple(zip(*values, strict=True))  # type: ignore[assignment]
    return columns


def records_of_columns(columns: RecordColumns, begin: int, end: int) -> list[Record]:
    """The Records of rows ``begin`` to ``end`` - 1 of ``columns``: what new_record(new_content(...),
    ...) makes of each row's values (tests/unit/node/test_fastpath.py compares them).

    A slot at a time for every record (each slot setter mapped over its column, in C), not a
    record at a time: 1.13 against 1.64 us a record for the interpreter (a page of 1,000)."""
    count = end - begin
    new = object.__new__
    contents: list[Content] = list(map(new, repeat(Content, count)))
    for set_slot, column in zip(_CONTENT_SLOTS, columns[:6], strict=True):
        _drain(map(set_slot, contents, column[begin:end]))
    records: list[Record] = list(map(new, repeat(Record, count)))
    _drain(map(_RECORD_SLOTS[0], records, contents))
    for set_slot, column in zip(_RECORD_SLOTS[1:], columns[6:], strict=True):
        _drain(map(set_slot, records, column[begin:end]))
    return records


def record_of_maps(value: dict[str, Any], content: dict[str, Any]) -> Record:
    """The Record of a record's map and its content's map as msgpack decoded them from
    canonical bytes (keys in canonical order), nothing checked: for the fast paths, whose
    bytes were checked already."""
    accepted, checksum, content_bytes, height, link, nonce, origin, prev = value.values()
    author, kind, ledger, payload, request_id, ts, _ = content.values()
    return new_record(
        new_content(ledger, kind, payload, author, request_id, ts),
        content_bytes,
        checksum,
        nonce,
        height,
        prev,
        accepted,
        origin,
        link,
    )


# The types of a record's fields: a record whose values are all of these holds nothing nested.
_PLAIN = frozenset((int, bytes, str))


def decode_record(data: bytes, limits: Limits) -> Record:
    """Parse a stored record's bytes: structure, types and canonical form, not its hashes.

    Use :func:`vledger.node.verify.verify_record` for the hashes and proof of work.
    """
    if len(data) > limits.max_record_bytes:
        raise PayloadTooLargeError(f"record is {len(data)} bytes, over the limit of {limits.max_record_bytes}")
    value = canonical.unpack(data)
    if not (type(value) is dict and data[:1] == b"\x88" and _PLAIN.issuperset(map(type, value.values()))):
        # Not 8 scalar fields: look for what step 1.2 refuses at any depth (an extension,
        # a key that is not a string, a repeated key) before any field is looked at.
        fault = canonical.structure_fault(data)
        if fault is not None:
            raise NonCanonicalError(fault)
    if not isinstance(value, dict):
        raise FieldError("a record must be a map")
    if tuple(value) != RECORD_KEYS:
        _refuse_record_keys(value)
    accepted, checksum, content_bytes, height, link, nonce, origin, prev = value.values()
    if not isinstance(content_bytes, bytes):
        raise FieldError("content must be binary (the content's canonical bytes)")
    content = decode_content(content_bytes, limits)
    # All placement fields at once; if one is off (or the origin is a name not yet
    # remembered), the checks one by one find the first failure.
    if not (
        type(height) is int
        and 0 <= height <= _UINT_MAX
        and type(checksum) is bytes
        and len(checksum) == HASH_SIZE
        and type(nonce) is int
        and 0 <= nonce <= _UINT_MAX
        and type(prev) is bytes
        and len(prev) == HASH_SIZE
        and type(accepted) is int
        and 0 <= accepted <= _UINT_MAX
        and type(origin) is str
        and origin in MATCHED_NAMES
        and len(origin) <= limits.max_name_length
        and type(link) is bytes
        and len(link) == HASH_SIZE
    ):
        _check_placement(value, content.ledger, limits)
    # The values are the decoded ones, keys in RECORD_KEYS order: packing them again is
    # exactly Record.encode().
    if not canonical.packs_to(value, data):
        raise NonCanonicalError(
            "record is not in its canonical encoding (a longer form than needed)", ledger=content.ledger, height=height
        )
    return new_record(content, content_bytes, checksum, nonce, height, prev, accepted, origin, link)


def _refuse_record_keys(value: dict[Any, Any]) -> NoReturn:
    for key in value:
        if not isinstance(key, str):  # msgpack lets binary keys through; they cannot be sorted with strings
            raise NonCanonicalError(f"map key {key!r} is not a string")
    if sorted(value) == sorted(RECORD_KEYS):
        raise NonCanonicalError("record keys are not in sorted order")
    missing = sorted(set(RECORD_KEYS) - set(value))
    unknown = sorted(set(value) - set(RECORD_KEYS))
    raise FieldError(f"record fields are wrong (missing {missing}, unknown {unknown})")


def _check_placement(value: dict[str, Any], ledger: str, limits: Limits) -> None:
    """The placement fields' checks one by one, in order; raises the first failure."""
    where: Where = {"ledger": ledger}
    where["height"] = _uint(value["height"], "height", where)
    _digest(value["checksum"], "checksum", where)
    _uint(value["nonce"], "nonce", where)
    _digest(value["prev"], "prev", where)
    _uint(value["accepted"], "accepted", where)
    _text(value["origin"], "origin", NAME_PATTERN, limits.max_name_length, where)
    _digest(value["link"], "link", where)
