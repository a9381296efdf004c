"""Verification of records and chains: pure functions that raise precise errors.

The order of the checks is part of the protocol (docs/PROTOCOL.md, "Verifying a ledger"),
so that every verifier names the same first failure: structure, ledger, height, genesis,
checksum, kind, proof of work, the record's own link, then its ``prev``.

:meth:`ChainVerifier.feed_fast` checks a valid record's bytes all at once, in one frame and
without building a Record; whenever it is not sure it changes nothing and says so, and the
caller runs the checks one by one (``decode_record`` then :meth:`ChainVerifier.feed`), which
name the first failure. tests/unit/node/test_fastpath.py holds the two against each other.
"""

from __future__ import annotations

import hashlib
import re
import struct
from typing import Any

import msgpack

from ..config.settings import Limits
from . import canonical
from .errors import (
    BadChecksumError,
    BadGenesisError,
    BadLinkError,
    HeightGapError,
    InsufficientWorkError,
    UnknownKindError,
    WrongLedgerError,
)
from .ledger import LedgerRules
from .record import (
    ACCOUNT_PATTERN,
    CONTENT_KEYS,
    FORMAT_VERSION,
    GENESIS_KIND,
    MATCHED_ACCOUNTS,
    MATCHED_NAMES,
    NAME_PATTERN,
    RECORD_KEYS,
    REQUEST_ID_PATTERN,
    ZERO_LINK,
    Content,
    Entry,
    Record,
    checksum_of,
    decode_record,
    link_of,
    matches_name,
    record_of_maps,
)
from .work import MAX_DIFFICULTY, meets_difficulty, target_of


def verify_entry(entry: Entry, rules: LedgerRules, height: int | None = None) -> None:
    """Checksum, kind and proof of work of an entry under its ledger's rules."""
    _verify_work(entry.content, entry.content_bytes, entry.checksum, entry.nonce, rules, height)


def _verify_work(
    content: Content, content_bytes: bytes, checksum: bytes, nonce: int, rules: LedgerRules, height: int | None
) -> None:
    # The fields of an entry or a record, passed one by one: no Entry is built to check a record.
    if checksum_of(content_bytes) != checksum:
        raise BadChecksumError("checksum does not match the content", ledger=content.ledger, height=height)
    if height != 0 and content.kind not in rules.kinds:
        raise UnknownKindError(
            f"kind {content.kind!r} is not one of this ledger's kinds {list(rules.kinds)}",
            ledger=content.ledger,
            height=height,
        )
    if not meets_difficulty(checksum, nonce, rules.difficulty):
        raise InsufficientWorkError(
            f"proof of work does not meet {rules.difficulty} bits", ledger=content.ledger, height=height
        )


def verify_record(record: Record, rules: LedgerRules) -> None:
    """Everything about one record that does not need its neighbours."""
    _verify_work(record.content, record.content_bytes, record.checksum, record.nonce, rules, record.height)
    expected = link_of(record.prev, record.checksum, record.height, record.nonce, record.accepted, record.origin)
    if expected != record.link:
        raise BadLinkError(
            f"link {record.link.hex()} does not match the record's fields (expected {expected.hex()})",
            ledger=record.content.ledger,
            height=record.height,
        )


class ChainVerifier:
    """Checks one ledger's records in height order, holding only the last link and the rules.

    Start it empty to check from genesis, or with :meth:`after` to resume from a record
    already checked (a store's head, a sweep's checkpoint).
    """

    def __init__(self, ledger: str, limits: Limits) -> None:
        self.ledger = ledger
        self.limits = limits
        self.next_height = 0
        self.prev = ZERO_LINK
        self.rules: LedgerRules | None = None
        self._fast: _FastRules | None = None  # feed_fast's view of ``rules``, made when first needed

    @classmethod
    def after(cls, ledger: str, height: int, link: bytes, rules: LedgerRules, limits: Limits) -> ChainVerifier:
        """A verifier that expects the record after ``height``, whose link was ``link``."""
        verifier = cls(ledger, limits)
        verifier.next_height = height + 1
        verifier.prev = link
        verifier.rules = rules
        return verifier

    def check(self, record: Record) -> LedgerRules:
        """Raise the first failure of ``record`` as the next record; return the ledger's rules."""
        # Errors name this verifier's ledger and the record's height, passed as they are
        # raised: building a `where` for every record that passes costs more than a check.
        ledger, height, content = self.ledger, record.height, record.content
        if content.ledger != ledger:
            raise WrongLedgerError(f"record belongs to ledger {content.ledger!r}", ledger=ledger, height=height)
        if height != self.next_height:
            raise HeightGapError(f"expected height {self.next_height}, found {height}", ledger=ledger, height=height)
        rules = self.rules
        if rules is None:
            if record.prev != ZERO_LINK:
                raise BadGenesisError("the genesis record's prev must be 32 zero bytes", ledger=ledger, height=height)
            rules = LedgerRules.from_genesis(content, self.limits)
        elif content.kind == GENESIS_KIND:
            raise BadGenesisError("a genesis record may only stand at height 0", ledger=ledger, height=height)
        verify_record(record, rules)
        if record.prev != self.prev:
            raise BadLinkError(
                f"prev {record.prev.hex()} is not the link of height {height - 1} ({self.prev.hex()})",
                ledger=ledger,
                height=height,
            )
        return rules

    def advance(self, record: Record, rules: LedgerRules) -> None:
        """Take ``record`` (already checked) as the new head."""
        self.rules = rules
        self.next_height = record.height + 1
        self.prev = record.link

    def feed(self, record: Record) -> None:
        """Check ``record`` as the next one and take it as the head; raises its first failure."""
        self.advance(record, self.check(record))

    def feed_raw(self, data: bytes) -> dict[str, Any]:
        """Decode and check the record bytes ``data`` as the next record and take it as the head;
        return its content map. Raises exactly what ``decode_record`` then :meth:`feed` raise."""
        content = self.feed_fast(data)
        if content is None:
            record = decode_record(data, self.limits)
            self.feed(record)
            content = record.content.to_map()
        return content

    def feed_record_fast(self, data: bytes) -> Record | None:
        """:meth:`feed_fast` that returns the record itself: the Record ``decode_record(data)``
        gives, built from the fields the fast path decoded; None when not sure, with nothing
        changed (the caller then runs ``decode_record`` and :meth:`feed`)."""
        taken = self._take_fast(data)
        if taken is None:
            return None
        value, content = taken
        return record_of_maps(value, content)

    def feed_fast(self, data: bytes) -> dict[str, Any] | None:
        """Take the record bytes ``data`` as the next record if every check of section 4 passes,
        and return its content map (its fields as decoded); None when not sure, with nothing
        changed: the caller then runs the checks one by one to name the failure, if any.

        Genesis records, names not yet remembered and every fault take the None way.
        """
        taken = self._take_fast(data)
        return taken[1] if taken is not None else None

    def _take_fast(self, data: bytes) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """feed_fast's checks: the record's map and its content's map as decoded, or None."""
        fast = self._fast
        if fast is None or fast.rules is not self.rules:
            if self.rules is None:
                return None  # the genesis: its rules are read the precise way
            fast = self._fast = _FastRules(self.ledger, self.rules, self.limits)
        if len(data) > fast.max_record or data[:1] != b"\x88":
            return None
        unpackb = msgpack.unpackb
        try:
            # msgpack's defaults, not canonical.unpack's options, which cost a third of the call:
            # what they let through differently (an extension, a binary map key) fails a type
            # check or the re-encoding below. Any failure to decode is a fault whose code the
            # precise checks find.
            value = unpackb(data)
            if type(value) is not dict or tuple(value) != RECORD_KEYS:
                return None
            accepted, checksum, content_bytes, height, link, nonce, origin, prev = value.values()
            if (
                type(height) is not int
                or height != self.next_height
                or prev != self.prev
                or type(content_bytes) is not bytes
                or len(content_bytes) > fast.max_content
            ):
                return None
            content = unpackb(content_bytes)
        except Exception:  # see above: the precise path names it
            return None
        if type(content) is not dict or tuple(content) != CONTENT_KEYS:
            return None
        author, kind, ledger, payload, request_id, ts, v = content.values()
        max_name = fast.max_name
        # msgpack decodes no integer above 2**64 - 1: a type check and ">= 0" hold an int to a uint64.
        if not (
            ledger == fast.ledger
            and type(ledger) is str
            and type(kind) is str
            and kind in fast.kinds  # valid names, none of them "genesis"
            and type(author) is str
            and len(author) <= max_name
            and (author in _ACCOUNTS or matches_name(ACCOUNT_PATTERN, author))
            and type(request_id) is str
            and 0 < len(request_id) <= fast.max_request_id
            and _REQUEST_ID(request_id) is not None
            and type(ts) is int
            and ts >= 0
            and type(v) is int
            and v == FORMAT_VERSION
            and type(payload) is dict
            and type(nonce) is int
            and nonce >= 0
            and type(accepted) is int
            and accepted >= 0
            and type(origin) is str
            and len(origin) <= max_name
            and (origin in _NAMES or matches_name(NAME_PATTERN, origin))
            # A payload of scalars under sorted string keys is canonical.flaw's common case,
            # tested here without the call (its keys as a remembered shape); anything else
            # goes through it.
            and (
                (
                    _SCALARS.issuperset(map(type, payload.values()))
                    and ((keys := tuple(payload)) in fast.shapes or fast.sorted_keys(keys))
                )
                or canonical.flaw(payload, 1, fast.max_depth) is None
            )
            and fast.pack(content) == content_bytes
            and fast.pack(value) == data
        ):
            return None
        sha256 = hashlib.sha256
        # A digest is 32 bytes: equal to one, the checksum and the link are 32 bytes of binary.
        if sha256(content_bytes).digest() != checksum:
            return None
        numbers = _U64X3(height, nonce, accepted)
        target = fast.target
        if target is not None and sha256(checksum + numbers[8:16]).digest() >= target:
            return None
        if sha256(b"".join((prev, checksum, numbers, origin.encode()))).digest() != link:
            return None
        self.next_height = height + 1
        self.prev = link
        return value, content


# REQUEST_ID_PATTERN.fullmatch, a third cheaper as a match to the end (the same strings).
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN.pattern + r"\Z").match
_SCALARS = frozenset((type(None), bool, int, str, bytes))  # canonical.flaw's, nothing nested
_STR = frozenset((str,))
_ACCOUNTS = MATCHED_ACCOUNTS  # names known to match: a set lookup instead of a call
_NAMES = MATCHED_NAMES
_SHAPES_MAX = 256  # payload key orders remembered per ledger
_U64X3 = struct.Struct(">QQQ").pack  # height, nonce, accepted: contiguous in the link's input


class _FastRules:
    """What feed_fast needs of a ledger's rules and limits, worked out once: the kinds it may
    accept without looking further, the proof-of-work target (None: no work required), the
    limits as plain numbers, a packer of its own and the payload key orders already found sorted.

    It belongs to one ChainVerifier, which one thread feeds at a time (its head changes with
    every record), so its packer is never shared between threads (see canonical.packs_to).
    """

    __slots__ = (
        "kinds",
        "ledger",
        "max_content",
        "max_depth",
        "max_name",
        "max_record",
        "max_request_id",
        "pack",
        "rules",
        "shapes",
        "target",
    )

    def __init__(self, ledger: str, rules: LedgerRules, limits: Limits) -> None:
        self.rules = rules
        self.max_record = limits.max_record_bytes
        self.max_content = limits.max_content_bytes
        self.max_name = limits.max_name_length
        self.max_request_id = limits.max_request_id_length
        self.max_depth = limits.max_depth
        self.pack = msgpack.Packer(use_bin_type=True).pack
        self.shapes: set[tuple[object, ...]] = set()
        # Only names the precise checks accept reach the fast path's comparisons: a ledger or
        # kind given here that is not a valid name leaves every record to the precise path.
        valid = NAME_PATTERN.fullmatch(ledger) is not None and len(ledger) <= limits.max_name_length
        self.ledger: str | None = ledger if valid else None
        self.kinds = frozenset(
            kind
            for kind in rules.kinds
            if type(kind) is str
            and kind != GENESIS_KIND
            and len(kind) <= limits.max_name_length
            and NAME_PATTERN.fullmatch(kind) is not None
        )
        difficulty = rules.difficulty
        self.target = target_of(difficulty) if 0 < difficulty <= MAX_DIFFICULTY else None
        if difficulty > MAX_DIFFICULTY:  # unreachable from a checked genesis; refuse everything fast
            self.kinds = frozenset()

    def sorted_keys(self, keys: tuple[object, ...]) -> bool:
        """Whether a payload's ``keys`` are strings in sorted order with room for scalars under
        them (max_depth above 2): what canonical.flaw asks of a map of scalars. A key order found
        so is remembered; a ledger's records use few, and a flood of them starts the set again."""
        if keys in self.shapes:
            return True
        if not (self.max_depth > 2 and _STR.issuperset(map(type, keys)) and list(keys) == sorted(keys)):  # type: ignore[type-var]
            return False
        if len(self.shapes) >= _SHAPES_MAX:
            self.shapes.clear()
        self.shapes.add(keys)
        return True
