"""Verification of records and chains: pure functions that raise precise errors.

The order of the checks is part of the protocol (docs/PROTOCOL.md, "Verifying a ledger"),
so that every verifier names the same first failure: structure, ledger, height, genesis,
checksum, kind, proof of work, the record's own link, then its ``prev``.

:meth:`ChainVerifier.take_fast` (and ``feed_fast``, ``feed_record_fast``, which return what
they took; ``take_many`` and ``feed_many``, a run of records in one loop; ``take_rows``, a run
of a store's rows, their index columns with them) checks a valid record's bytes all at once,
in one frame and without decoding more than its payload: the rest is matched against its only
canonical form. Whenever it is not sure it changes nothing and says so, and the caller runs
the checks one by one (``decode_record`` then :meth:`ChainVerifier.feed`), which name the
first failure. tests/unit/node/test_fastpath.py
holds the two against each other, tests/unit/node/test_verify_lean.py the fast path against
the one before it, which decoded and re-encoded the whole record.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Sequence
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
    FORMAT_VERSION,
    GENESIS_KIND,
    NAME_PATTERN,
    REQUEST_ID_PATTERN,
    ZERO_LINK,
    Content,
    Entry,
    Record,
    RecordFields,
    checksum_of,
    decode_record,
    link_of,
    new_content,
    new_record,
)
from .work import MAX_DIFFICULTY, meets_difficulty, target_of


def verify_entry(entry: Entry, rules: LedgerRules, height: int | None = None) -> None:
    """Checksum, kind and proof of work of an entry under its ledger's rules."""
    _verify_work(entry.content, entry.content_bytes, entry.checksum, entry.nonce, rules, height)


def verify_hashed_entry(entry: Entry, rules: LedgerRules) -> None:
    """Kind and proof of work of an entry whose checksum this node computed from its content
    bytes itself (Entry.from_wire, Entry.from_checked): hashing them again proves nothing, and
    cost the committer a SHA-256 a put (p39)."""
    _verify_kind_and_work(entry.content, entry.checksum, entry.nonce, rules, None)


def _verify_work(
    content: Content, content_bytes: bytes, checksum: bytes, nonce: int, rules: LedgerRules, height: int | None
) -> None:
    # The fields of an entry or a record, passed one by one: no Entry is built to check a record.
    if checksum_of(content_bytes) != checksum:
        raise BadChecksumError("checksum does not match the content", ledger=content.ledger, height=height)
    _verify_kind_and_work(content, checksum, nonce, rules, height)


def _verify_kind_and_work(
    content: Content, checksum: bytes, nonce: int, rules: LedgerRules, height: int | None
) -> None:
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

    def feed_raw(self, data: bytes) -> None:
        """Decode and check the record bytes ``data`` as the next record and take it as the head.
        Raises exactly what ``decode_record`` then :meth:`feed` raise."""
        if not self._take_run((data,), 0)[0]:
            self.feed(decode_record(data, self.limits))

    def feed_record_fast(self, data: bytes) -> Record | None:
        """:meth:`take_fast` that returns the record itself: the Record ``decode_record(data)``
        gives, built once the bytes are known good; None when not sure, with nothing changed
        (the caller then runs ``decode_record`` and :meth:`feed`)."""
        found = self._take(data)
        if found is None:
            return None
        groups = found.groups()
        content_bytes = groups[_CONTENT]
        author, kind, ledger, payload, request_id, ts, _ = msgpack.unpackb(content_bytes).values()
        return new_record(
            new_content(ledger, kind, payload, author, request_id, ts),
            content_bytes,
            groups[_CHECKSUM],
            int.from_bytes(_uint_at(groups, _NONCE), "big"),
            int.from_bytes(_uint_at(groups, _HEIGHT), "big"),
            groups[_PREV],
            int.from_bytes(_uint_at(groups, _ACCEPTED), "big"),
            groups[_ORIGIN].decode(),
            groups[_LINK],
        )

    def feed_fast(self, data: bytes) -> dict[str, Any] | None:
        """:meth:`take_fast` that returns the record's content map (its fields as decoded); None
        when not sure, with nothing changed."""
        found = self._take(data)
        if found is None:
            return None
        return msgpack.unpackb(found.group(_CONTENT + 1))  # type: ignore[no-any-return]

    def take_fast(self, data: bytes) -> bool:
        """Take the record bytes ``data`` as the next record if every check of section 4 passes
        (True); False when not sure, with nothing changed: the caller then runs the checks one
        by one to name the failure, if any. Genesis records and every fault take the False way."""
        return self._take_run((data,), 0)[0] == 1

    def feed_many(self, rows: Sequence[bytes]) -> None:
        """:meth:`feed_raw` of each of the record bytes ``rows`` in turn: the lean path for a run
        of valid records, the checks one by one for a record it does not take. Raises what
        ``feed_raw`` raises at the first record that fails, the records before it taken."""
        taken = self._take_run(rows, 0)[0]
        while taken < len(rows):
            self.feed(decode_record(rows[taken], self.limits))
            taken = self._take_run(rows, taken + 1)[0]

    def take_many(self, rows: Sequence[bytes], begin: int = 0) -> int:
        """:meth:`take_fast` of ``rows[begin:]`` one after another, up to the first it does not
        take: that record's index (``len(rows)`` when it took them all). Nothing of the record
        not taken is changed: the caller runs the checks one by one on it."""
        return self._take_run(rows, begin)[0]

    def take_rows(self, rows: Sequence[Sequence[Any]], begin: int = 0, end: int | None = None) -> int:
        """:meth:`take_many` of a store's rows ``rows[begin:end]``, each (height, hash, author,
        request_id, data), storefile.StoreRow's columns: the record bytes ``data`` as take_fast
        checks them, and the row's other columns held to what the record says (its height, link,
        author and request id: what check_index_columns asks, with the height check of
        `vledger verify`'s rows). The index of the first row not taken (``end`` when it took
        them all); nothing of that row is changed: the caller runs the checks one by one on it.
        A page of rows in one loop, the author and request id compared as the expression
        captured them: a call a row (feed_fast) and the content decoded again to compare them
        cost a worker of `vledger verify` 30% of its CPU (12.6 us a record, now 8.8)."""
        return self._take_run(rows, begin, len(rows) if end is None else end, stored=True)[0]

    def take_values(self, rows: Sequence[bytes], names: dict[bytes, str]) -> list[RecordFields]:
        """:meth:`take_many` of ``rows``, with the values of each record taken, in order: what
        ``decode_record`` would give (vledger.node.record.RecordFields), read from the match that
        checked it and the payload it decoded, not from decoding the record's two maps again (a
        follower's page checker: 3.4 us a record on its core to decode them, ~1 us this way).
        ``names``: the names read so far by their bytes, each decoded once (a page's ledger,
        kinds, authors and origin repeat: the pickle to the follower then sends each once)."""
        matched: list[tuple[re.Match[bytes], Any]] = []
        self._take_run(rows, 0, matched=matched)
        ledger = self.ledger
        from_bytes = int.from_bytes
        values: list[RecordFields] = []
        for found, payload in matched:
            (
                a1, a2, a3, a4, a5,
                checksum,
                _,
                _,
                content,
                author,
                _,
                _,
                request_id,
                h1, h2, h3, h4, h5,
                link,
                n1, n2, n3, n4, n5,
                origin,
                prev,
            ) = found.groups()  # fmt: skip
            data = found.string
            # The kind, not a group of its own: the name right after its key.
            at = found.end(_AUTHOR + 1) + _KIND_KEY
            # str8: a length byte after the marker; fixstr: the marker holds the length.
            start, size = (at + 2, data[at + 1]) if data[at] == _STR8 else (at + 1, data[at] - _FIXSTR)
            kind = data[start : start + size]
            # ts: the uint between its key and the content's last key, in its shortest form.
            ts = data[found.end(_REQUEST_ID + 1) + _TS_KEY : found.end(_CONTENT + 1) - _VERSION_ITEM]
            values.append(
                (
                    ledger,
                    names.get(kind) or names.setdefault(kind, kind.decode()),
                    payload,
                    names.get(author) or names.setdefault(author, author.decode()),
                    request_id.decode(),
                    ts[0] if len(ts) == 1 else from_bytes(ts[1:], "big"),
                    content,
                    checksum,
                    from_bytes(n1 or n2 or n3 or n4 or n5, "big"),
                    from_bytes(h1 or h2 or h3 or h4 or h5, "big"),
                    prev,
                    from_bytes(a1 or a2 or a3 or a4 or a5, "big"),
                    names.get(origin) or names.setdefault(origin, origin.decode()),
                    link,
                )
            )
        return values

    def _take(self, data: bytes) -> re.Match[bytes] | None:
        """The fast path's checks of one record: its match (see _matcher) if it was taken, else None."""
        taken, found = self._take_run((data,), 0)
        return found if taken else None

    def _take_run(
        self,
        rows: Sequence[Any],
        begin: int,
        end: int | None = None,
        *,
        stored: bool = False,
        matched: list[tuple[re.Match[bytes], Any]] | None = None,
    ) -> tuple[int, re.Match[bytes] | None]:
        """The fast path's checks of ``rows[begin:end]`` (record bytes, or with ``stored`` a
        store's rows, see :meth:`take_rows`) in turn, up to the first record not taken: that
        record's index, and the last record taken's match (see _matcher), if any. ``matched``:
        each record taken's match and decoded payload are appended to it (:meth:`take_values`).

        Each record, its content included, is matched against its only canonical form by one
        regular expression (see _matcher), which leaves no room for another encoding of the
        same values: only the payload is decoded. A payload of scalars the expression matched
        item by item (_SCALARS_MAP) is left with its keys' order and count to check; any other
        is held to canonical form by canonical.flaw and its own re-encoding. Nothing but the
        fields the hashes need is converted to Python values.
        The run is one loop over the rows: what the checks use is looked up once a run (a
        call and a dozen attribute lookups a record were ~8% of a record's time).
        """
        fast = self._fast
        if fast is None or fast.rules is not self.rules:
            if self.rules is None:
                return begin, None  # the genesis: its rules are read the precise way
            fast = self._fast = _FastRules(self.ledger, self.rules, self.limits)
        match_record, pack, shapes = fast.record, fast.pack, fast.shapes
        max_record, max_content, target = fast.max_record, fast.max_content, fast.target
        sha256, unpackb, from_bytes, scalars = hashlib.sha256, msgpack.unpackb, int.from_bytes, _SCALARS
        next_height, prev = self.next_height, self.prev
        shape = None  # the key order of the last payload taken: its records' usual one
        found = None
        end = len(rows) if end is None else end
        for index in range(begin, end):  # else: all of them taken
            row = rows[index]
            data = row[_DATA_COLUMN] if stored else row
            if data.__class__ is not bytes or len(data) > max_record:  # a column tampered into TEXT, say
                break
            found_here = match_record(data)  # the whole record, in one call
            if found_here is None:
                break
            # Each uint as five groups, one per form, of which the one that matched holds the
            # value's big-endian bytes (the marker left out): a branch per form costs the
            # expression less than one group after lookbehinds at the marker.
            (
                a1, a2, a3, a4, a5,
                checksum,
                length8,
                length16,
                content,
                author,
                scalars_payload,
                other_payload,
                request_id,
                h1, h2, h3, h4, h5,
                link,
                n1, n2, n3, n4, n5,
                origin,
                record_prev,
            ) = found_here.groups()  # fmt: skip
            # The expression found where the content's own form ends; the bin's length must agree.
            size = len(content)
            if (length8[0] if length8 else from_bytes(length16, "big")) != size or size > max_content:
                break
            height = h1 or h2 or h3 or h4 or h5
            if from_bytes(height, "big") != next_height or record_prev != prev:
                break
            # The payload as one of two groups (see _matcher): the other holds the next key's marker too.
            payload_bytes = other_payload[:-1] if scalars_payload is None else scalars_payload
            try:
                payload = unpackb(payload_bytes)  # a map: the expression saw its marker
            except Exception:  # not one msgpack value: the precise path names the fault
                break
            # A payload of scalars under sorted string keys is canonical.flaw's common case,
            # tested here without the call (its keys as the last record's key order, or one
            # remembered, compared without hashing them); anything else goes through it.
            if scalars_payload is not None:
                # The expression matched each of its items in canonical form (_SCALARS_MAP): left
                # are the keys' order and a repeated key, which the map would hold fewer than
                # its marker counts; decoding checked the strings' UTF-8.
                if len(payload) != payload_bytes[0] - 0x80 or not (
                    (keys := tuple(payload)) == shape or keys in shapes or fast.sorted_keys(keys)
                ):
                    break
                shape = keys
            else:
                if scalars.issuperset(map(type, payload.values())) and (
                    (keys := tuple(payload)) == shape or keys in shapes or fast.sorted_keys(keys)
                ):
                    shape = keys
                elif canonical.flaw(payload, 1, fast.max_depth) is not None:
                    break
                # Re-encoding finds longer forms and repeated keys.
                if pack(payload) != payload_bytes:
                    break
            if sha256(content).digest() != checksum:
                break
            nonce = (n1 or n2 or n3 or n4 or n5).rjust(8, b"\0")
            if target is not None and sha256(checksum + nonce).digest() >= target:
                break
            accepted = (a1 or a2 or a3 or a4 or a5).rjust(8, b"\0")
            if sha256(b"".join((prev, checksum, height.rjust(8, b"\0"), nonce, accepted, origin))).digest() != link:
                break
            # A store's row: its columns must say what the record says. The author and request id
            # are the expression's ASCII characters (_name), so decode() gives what decoding the
            # content would; a column of another type is simply unequal.
            if stored and (
                row[0] != next_height or row[1] != link or row[2] != author.decode() or row[3] != request_id.decode()
            ):
                break
            next_height += 1
            prev = link
            found = found_here
            if matched is not None:
                matched.append((found_here, payload))
        else:
            index = end
        self.next_height, self.prev = next_height, prev
        return index, found


_DATA_COLUMN = 4  # the record bytes in a store's row (storefile.StoreRow)
_SCALARS = frozenset((type(None), bool, int, str, bytes))  # canonical.flaw's, nothing nested
_STR = frozenset((str,))
_SHAPES_MAX = 256  # payload key orders remembered per ledger

# The canonical msgpack forms the fast path's expression accepts (docs/PROTOCOL.md, "Canonical
# encoding"): a uint in its shortest form (a positive fixint, or uint8/16/32/64 holding a value
# too large for the form below it); a 32-byte digest as bin8.
_UINT = rb"(?:[\x00-\x7f]|\xcc[\x80-\xff]|\xcd[\x01-\xff].|\xce(?!\x00\x00)....|\xcf(?!\x00{4}).{8})"
# The same, the value's big-endian bytes (the byte itself for a fixint, else those after the
# marker) in one of five groups, the widest forms first: only the one that matched is not None.
_UINT_VALUE = rb"(?:\xcf(?!\x00{4})(.{8})|\xce(?!\x00\x00)(....)|\xcd([\x01-\xff].)|\xcc([\x80-\xff])|([\x00-\x7f]))"
_DIGEST = rb"\xc4\x20(.{32})"


def _sized(marker: bytes, lengths: range) -> bytes:
    """An expression for ``marker``, a length byte n in ``lengths``, then n bytes."""
    return marker + b"(?:" + b"|".join(re.escape(bytes((n,))) + b".{%d}" % n for n in lengths) + b")"


# Every canonical scalar but a string or binary of 256 bytes or more (str16/bin16: no expression
# can count so far). A string's bytes are any here: decoding the map checks their UTF-8.
# Each form starts with a marker byte of its own (their first bytes are disjoint), so the order
# of the alternatives changes nothing that matches, only how many sre tries first: it tries
# them in turn, and a payload's usual values (ints, then strings) come first. A uint stood
# behind 35 forms of string and one of binary, a str8 behind 32 of fixstr: with both, 0.1 us
# (7%) of the expression's time a bench record, 1,100 of its 15,000 instructions (callgrind).
_FIXSTR_FORM = b"(?:" + b"|".join(re.escape(bytes((0xA0 + n,))) + b".{%d}" % n for n in range(32)) + b")"
# str8 for 32 bytes or more, else fixstr: str8's one marker first, not behind fixstr's 32 forms.
_STR_FORM = b"(?:" + _sized(rb"\xd9", range(32, 256)) + b"|" + _FIXSTR_FORM + b")"
_SCALAR_FORM = (
    rb"(?:[\x00-\x7f\xe0-\xff]|\xcc[\x80-\xff]|\xcd[\x01-\xff].|\xce(?!\x00\x00)....|\xcf(?!\x00{4}).{8}"
    + b"|" + _STR_FORM + rb"|[\xc0\xc2\xc3]|" + _sized(rb"\xc4", range(256))  # str; nil, false, true; bin8
    # int8/16/32/64 only for a value below the form before it: -33 and less, -129 and less, ...
    + rb"|\xd0[\x80-\xdf]|\xd1(?:[\x80-\xfe].|\xff[\x00-\x7f])"
    + rb"|\xd2(?:[\x80-\xfe]...|\xff(?:[\x00-\xfe]..|\xff[\x00-\x7f].))"
    + rb"|\xd3(?:[\x80-\xfe].{7}|\xff(?:[\x00-\xfe].{6}|\xff(?:[\x00-\xfe].{5}"
    + rb"|\xff(?:[\x00-\xfe].{4}|\xff[\x00-\x7f]...)))))"
)  # fmt: skip
# A payload as a fixmap of string keys (fixstr: a key of 32 bytes or more takes the other form,
# and the expression compiles in half the time) and such scalars. Its items are matched one
# after the other, never backtracked (possessive), and stop before the next key, request_id: a
# payload that has a key of that name takes the expression's other form. Whether the marker
# counts as many items as were matched, the caller asks of the decoded map.
_SCALARS_MAP = rb"[\x80-\x8f](?:(?!\xaarequest_id)" + _FIXSTR_FORM + _SCALAR_FORM + rb")*+"
_Matcher = Callable[..., "re.Match[bytes] | None"]
# Where the record expression's groups stand in its groups() (see _matcher); a uint takes five.
_ACCEPTED, _CHECKSUM, _CONTENT, _AUTHOR = 0, 5, 8, 9
_SCALARS_PAYLOAD = 10  # the payload's group when it took the _SCALARS_MAP form
_REQUEST_ID, _HEIGHT, _LINK, _NONCE, _ORIGIN, _PREV = 12, 13, 18, 19, 24, 25
# Where take_values finds what the expression does not capture: the kind after its key (which
# follows the author's group), ts between its key (after the request id's group) and the last
# item of the content, the format version.
_KIND_KEY = len(msgpack.packb("kind"))
_TS_KEY = len(msgpack.packb("ts"))
_VERSION_ITEM = len(msgpack.packb("v") + msgpack.packb(FORMAT_VERSION))
_FIXSTR, _STR8 = 0xA0, 0xD9  # a name's markers: fixstr holds its length, str8 has a length byte


def _uint_at(groups: tuple[Any, ...], first: int) -> bytes:
    """The value bytes of the uint whose five groups (see _UINT_VALUE) start at ``first``."""
    a, b, c, d, e = groups[first : first + 5]
    return a or b or c or d or e  # type: ignore[no-any-return]


_MAX_STR8 = 255  # longer names take str16: left to the precise path
_CLASSES_ONLY = re.compile(r"(?:\[[A-Za-z0-9._@:-]+\][*+]?)+")


def _name(pattern: re.Pattern[str], max_length: int, before: bytes, capture: bool = False) -> bytes:
    """An expression for a string of 1..``max_length`` characters matching ``pattern`` in its
    shortest form (fixstr, else str8), then the bytes ``before`` (the next key). The lookahead
    ties the length the marker states to where ``before`` starts; the pattern (ASCII classes
    only, so never ``before``'s first byte, 0xa0 or above) then covers each byte between."""
    # Bracketed ASCII classes match the same characters in bytes as in text; a pattern with
    # anything else (a dot, \w) might not, and would make this path take what the checks refuse.
    if _CLASSES_ONLY.fullmatch(pattern.pattern) is None:
        raise ValueError(f"the fast path cannot match {pattern.pattern!r} on bytes")
    lengths = range(1, min(max_length, _MAX_STR8) + 1)
    fixstr = [re.escape(bytes((0xA0 + n,))) + b".{%d}" % n for n in lengths if n < 32]
    str8 = [re.escape(bytes((n,))) + b".{%d}" % n for n in lengths if n >= 32]
    forms = b"|".join(fixstr + ([b"\xd9(?:" + b"|".join(str8) + b")"] if str8 else []))
    text = pattern.pattern.encode("ascii")
    text = b"(" + text + b")" if capture else b"(?:" + text + b")"
    return b"(?=(?:" + forms + b")" + re.escape(before) + b")(?:[\xa1-\xbf]|\xd9.)" + text + re.escape(before)


@functools.lru_cache(maxsize=64)
def _matcher(ledger: str, kinds: frozenset[str], max_name: int, max_request_id: int) -> _Matcher:
    """The fast path's expression for a whole record of a ledger whose records may have
    ``kinds`` (valid names). Groups (their places in groups(): _ACCEPTED and the others):
    accepted (five, see _UINT_VALUE), checksum, the content's length as bin8 and as bin16 (one
    of them None), the content, the author's characters, the payload as two groups (one of
    them None): in the _SCALARS_MAP form, else any map with the marker of the key after it,
    the request id's characters (the author and request id for take_rows' column checks),
    then height (five), link, nonce (five), the origin's characters and prev. The latter takes
    that marker in: a group that closed right after its ``.*`` would cost the expression its
    quick scan for the byte that follows (sre's literal check after a repeat). Made once per ledger and limits,
    not per verifier. One expression, not one for the record up to its content's end and one
    for the rest: a call and its match object less a record.

    The content's end is where its own form ends (the next key, height, must follow): its
    bin length, which no expression can count, is held to it afterwards."""
    tail = (
        rb"\xa6height" + _UINT_VALUE + rb"\xa4link" + _DIGEST + rb"\xa5nonce" + _UINT_VALUE + rb"\xa6origin"
        + _name(NAME_PATTERN, max_name, b"\xa4prev", capture=True) + _DIGEST
    )  # fmt: skip
    if kinds:
        record = (
            rb"\x88\xa8accepted" + _UINT_VALUE + rb"\xa8checksum" + _DIGEST
            + rb"\xa7content(?:\xc4(.)|\xc5([\x01-\xff].))"  # bin8, or bin16 for 256 bytes or more
            + rb"(\x87\xa6author" + _name(ACCOUNT_PATTERN, max_name, b"\xa4kind", capture=True)
            + b"(?:" + b"|".join(re.escape(msgpack.packb(kind)) for kind in sorted(kinds)) + b")"
            + rb"\xa6ledger" + re.escape(msgpack.packb(ledger))
            + rb"\xa7payload(?:(" + _SCALARS_MAP + rb")\xaa|([\x80-\x8f\xde\xdf].*\xaa))request_id"
            + _name(REQUEST_ID_PATTERN, max_request_id, b"\xa2ts", capture=True) + _UINT
            + rb"\xa1v" + re.escape(msgpack.packb(FORMAT_VERSION))
            + b")" + tail
        )  # fmt: skip
    else:
        record = b"(?!)"  # nothing the fast path may take
    return re.compile(record, re.DOTALL).fullmatch


class _FastRules:
    """What the fast path needs of a ledger's rules and limits, worked out once: its matcher
    (which holds the kinds it may take without looking further), the proof-of-work target (None:
    no work required), the limits as plain numbers, a packer of its own and the payload key
    orders already found sorted.

    It belongs to one ChainVerifier, which one thread feeds at a time (its head changes with
    every record), so its packer is never shared between threads (see canonical.packs_to).
    """

    __slots__ = (
        "max_content",
        "max_depth",
        "max_record",
        "pack",
        "record",
        "rules",
        "shapes",
        "target",
    )

    def __init__(self, ledger: str, rules: LedgerRules, limits: Limits) -> None:
        self.rules = rules
        self.max_record = limits.max_record_bytes
        self.max_content = limits.max_content_bytes
        self.max_depth = limits.max_depth
        self.pack = msgpack.Packer(use_bin_type=True).pack
        self.shapes: set[tuple[object, ...]] = set()
        max_name = limits.max_name_length
        # Only names the precise checks accept may stand in the matcher: a ledger or kind given
        # here that is not a valid name leaves every record to the precise path.
        kinds = frozenset(
            kind
            for kind in rules.kinds
            if type(kind) is str
            and kind != GENESIS_KIND
            and len(kind) <= max_name
            and NAME_PATTERN.fullmatch(kind) is not None
        )
        valid = type(ledger) is str and NAME_PATTERN.fullmatch(ledger) is not None and len(ledger) <= max_name
        difficulty = rules.difficulty
        self.target = target_of(difficulty) if 0 < difficulty <= MAX_DIFFICULTY else None
        if not valid or difficulty > MAX_DIFFICULTY:  # the latter unreachable from a checked genesis
            kinds = frozenset()
        self.record = _matcher(ledger if valid else "", kinds, max_name, limits.max_request_id_length)

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
