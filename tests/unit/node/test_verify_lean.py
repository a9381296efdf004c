"""ChainVerifier's fast path against the one it replaced, old against new.

The fast path now matches a record and its content against their only canonical form with
regular expressions and decodes only the payload. The path it replaced decoded the record and
its content with msgpack, checked each field's value and re-encoded both. ``old_take`` below is
that path, kept here as it was: on valid records of every shape we make, on encodings one byte
off and on the forms at each boundary of msgpack's shortest encoding, the two must take exactly
the same records (the same content map, the same new head), and whatever either takes the checks
one by one (``decode_record`` and ``ChainVerifier.feed``) must take too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vledger.config.settings import Limits
from vledger.node import canonical, record, verify
from vledger.node.errors import RecordError
from vledger.node.ledger import LedgerRules
from vledger.node.record import (
    ACCOUNT_PATTERN,
    CONTENT_KEYS,
    FORMAT_VERSION,
    GENESIS_KIND,
    MATCHED_ACCOUNTS,
    MATCHED_NAMES,
    NAME_PATTERN,
    RECORD_KEYS,
    REQUEST_ID_PATTERN,
    Content,
    Entry,
    decode_record,
    matches_name,
)
from vledger.node.verify import ChainVerifier
from vledger.node.work import MAX_DIFFICULTY, target_of

LIMITS = Limits()
LEDGER = "ledger-a"
KINDS = ("note", "vote")
UINT_MAX = 2**64 - 1

# --- the fast path as it was (node/verify.py before the expressions) ----------------------------

_OLD_REQUEST_ID = re.compile(REQUEST_ID_PATTERN.pattern + r"\Z").match
_SCALARS = frozenset((type(None), bool, int, str, bytes))
_STR = frozenset((str,))
_U64X3 = struct.Struct(">QQQ").pack


@dataclasses.dataclass
class _OldRules:
    ledger: str | None
    kinds: frozenset[str]
    target: bytes | None
    pack: Any
    shapes: set[tuple[object, ...]]


def _old_rules(ledger: str, rules: LedgerRules, limits: Limits) -> _OldRules:
    valid = NAME_PATTERN.fullmatch(ledger) is not None and len(ledger) <= limits.max_name_length
    kinds = frozenset(
        kind
        for kind in rules.kinds
        if type(kind) is str
        and kind != GENESIS_KIND
        and len(kind) <= limits.max_name_length
        and NAME_PATTERN.fullmatch(kind) is not None
    )
    difficulty = rules.difficulty
    if difficulty > MAX_DIFFICULTY:
        kinds = frozenset()
    target = target_of(difficulty) if 0 < difficulty <= MAX_DIFFICULTY else None
    return _OldRules(ledger if valid else None, kinds, target, msgpack.Packer(use_bin_type=True).pack, set())


def _old_sorted_keys(fast: _OldRules, keys: tuple[Any, ...], limits: Limits) -> bool:
    if keys in fast.shapes:
        return True
    if not (limits.max_depth > 2 and _STR.issuperset(map(type, keys)) and list(keys) == sorted(keys)):
        return False
    fast.shapes.add(keys)
    return True


def old_take(verifier: ChainVerifier, fast: _OldRules, data: bytes) -> dict[str, Any] | None:
    """The replaced ChainVerifier._take_fast: the content map if it took ``data``, else None."""
    limits = verifier.limits
    if len(data) > limits.max_record_bytes or data[:1] != b"\x88":
        return None
    unpackb = msgpack.unpackb
    try:
        value = unpackb(data)
        if type(value) is not dict or tuple(value) != RECORD_KEYS:
            return None
        accepted, checksum, content_bytes, height, link, nonce, origin, prev = value.values()
        if (
            type(height) is not int
            or height != verifier.next_height
            or prev != verifier.prev
            or type(content_bytes) is not bytes
            or len(content_bytes) > limits.max_content_bytes
        ):
            return None
        content = unpackb(content_bytes)
    except Exception:
        return None
    if type(content) is not dict or tuple(content) != CONTENT_KEYS:
        return None
    author, kind, ledger, payload, request_id, ts, v = content.values()
    max_name = limits.max_name_length
    if not (
        ledger == fast.ledger
        and type(ledger) is str
        and type(kind) is str
        and kind in fast.kinds
        and type(author) is str
        and len(author) <= max_name
        and (author in MATCHED_ACCOUNTS or matches_name(ACCOUNT_PATTERN, author))
        and type(request_id) is str
        and 0 < len(request_id) <= limits.max_request_id_length
        and _OLD_REQUEST_ID(request_id) is not None
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
        and (origin in MATCHED_NAMES or matches_name(NAME_PATTERN, origin))
        and (
            (_SCALARS.issuperset(map(type, payload.values())) and _old_sorted_keys(fast, tuple(payload), limits))
            or canonical.flaw(payload, 1, limits.max_depth) is None
        )
        and fast.pack(content) == content_bytes
        and fast.pack(value) == data
    ):
        return None
    sha256 = hashlib.sha256
    if sha256(content_bytes).digest() != checksum:
        return None
    numbers = _U64X3(height, nonce, accepted)
    if fast.target is not None and sha256(checksum + numbers[8:16]).digest() >= fast.target:
        return None
    if sha256(b"".join((prev, checksum, numbers, origin.encode()))).digest() != link:
        return None
    verifier.next_height = height + 1
    verifier.prev = link
    return content


# --- records of every shape, placed after a genesis with every hash right --------------------------


def _genesis(difficulty: int) -> record.Record:
    rules = LedgerRules(kinds=KINDS, difficulty=difficulty)
    entry = Entry.prepare(rules.genesis_content(LEDGER, "admin", "create-1", 1), difficulty, LIMITS)
    return entry.place(0, bytes(32), 2, "node-1")


GENESIS = {difficulty: _genesis(difficulty) for difficulty in (0, 2)}

# uints at each edge of msgpack's forms (fixint, uint8, uint16, uint32, uint64)
EDGES = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, UINT_MAX]
uints = st.sampled_from(EDGES) | st.integers(0, UINT_MAX)
# names of every length the limits allow: fixstr up to 31, str8 from 32
names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,63}", fullmatch=True)
accounts = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}", fullmatch=True)
request_ids = st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), UINT_MAX)
    | st.sampled_from(EDGES)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)
payloads = st.dictionaries(st.text(max_size=8), values, max_size=6) | st.dictionaries(
    st.text(min_size=1, max_size=4),
    scalars,
    min_size=16,
    max_size=18,  # map16
)
big_payloads = st.builds(lambda text: {"text": text}, st.text(min_size=200, max_size=400))  # bin16 content


@st.composite
def placements(draw: st.DrawFn, difficulty: int = 0) -> tuple[ChainVerifier, bytes, dict[str, Any]]:
    """A verifier whose head is the genesis of ``difficulty`` (or a record as far up as a drawn
    height), the bytes of a valid record after it, and the parts, to change."""
    genesis = GENESIS[difficulty]
    content = Content(
        LEDGER,
        draw(st.sampled_from(KINDS)),
        draw(payloads | big_payloads),
        draw(accounts),
        draw(request_ids),
        draw(uints),
    )
    height = draw(st.sampled_from([1, *EDGES[2:]]) | st.integers(1, UINT_MAX))
    prev = genesis.link if height == 1 else draw(st.binary(min_size=32, max_size=32))
    rules = ChainVerifier(LEDGER, LIMITS).check(genesis)
    verifier = ChainVerifier.after(LEDGER, height - 1, prev, rules, LIMITS)
    entry = Entry.prepare(content, difficulty, LIMITS)
    placed = entry.place(height, prev, draw(uints), draw(names))
    return verifier, placed.encode(), {"content": entry.content_bytes}


def _replaced(verifier: ChainVerifier, data: bytes, content_bytes: bytes) -> bytes:
    """``data`` with its content replaced by ``content_bytes``, rehashed and relinked (nonce 0,
    at difficulty 0): only the content's own encoding and fields can fail it."""
    value = msgpack.unpackb(data)
    checksum = hashlib.sha256(content_bytes).digest()
    value.update(content=content_bytes, checksum=checksum, nonce=0)
    value["link"] = record.link_of(value["prev"], checksum, value["height"], 0, value["accepted"], value["origin"])
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _precise(verifier: ChainVerifier, data: bytes) -> tuple[Any, ...]:
    copy = ChainVerifier.after(verifier.ledger, verifier.next_height - 1, verifier.prev, verifier.rules, LIMITS)  # type: ignore[arg-type]
    try:
        copy.feed(decode_record(data, LIMITS))
    except RecordError as e:
        return (type(e),)
    return ("taken", copy.next_height, copy.prev)


def both(verifier: ChainVerifier, data: bytes) -> tuple[Any, ...]:
    """Run the old and the new fast path on ``data`` from the same head; they must agree, and
    whatever they take the checks one by one take too. Returns the new path's verdict."""
    assert verifier.rules is not None
    old = ChainVerifier.after(verifier.ledger, verifier.next_height - 1, verifier.prev, verifier.rules, LIMITS)
    new = ChainVerifier.after(verifier.ledger, verifier.next_height - 1, verifier.prev, verifier.rules, LIMITS)
    old_content = old_take(old, _old_rules(old.ledger, verifier.rules, LIMITS), data)
    new_content = new.feed_fast(data)
    assert old_content == new_content
    assert (old.next_height, old.prev) == (new.next_height, new.prev)
    if new_content is None:
        assert (new.next_height, new.prev) == (verifier.next_height, verifier.prev)  # nothing changed
        return ("not sure",)
    verdict = ("taken", new.next_height, new.prev)
    assert _precise(verifier, data) == verdict
    return verdict


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(placements())
def test_a_valid_record_is_taken_by_both_paths(placement: tuple[ChainVerifier, bytes, dict[str, Any]]) -> None:
    verifier, data, _ = placement
    assert both(verifier, data)[0] == "taken"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(placements(difficulty=2))
def test_a_valid_record_with_work_is_taken_by_both_paths(
    placement: tuple[ChainVerifier, bytes, dict[str, Any]],
) -> None:
    verifier, data, _ = placement
    assert both(verifier, data)[0] == "taken"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(placements(), st.data())
def test_a_changed_byte_in_the_record_gets_the_same_answer(
    placement: tuple[ChainVerifier, bytes, dict[str, Any]], data: st.DataObject
) -> None:
    verifier, good, _ = placement
    at = data.draw(st.integers(0, len(good) - 1))
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != good[at]))
    assert both(verifier, good[:at] + bytes((byte,)) + good[at + 1 :])[0] == "not sure"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(placements(), st.data())
def test_a_changed_content_rehashed_gets_the_same_answer(
    placement: tuple[ChainVerifier, bytes, dict[str, Any]], data: st.DataObject
) -> None:
    # The hashes are all right: only the content's canonical form and its fields decide.
    verifier, good, parts = placement
    content = parts["content"]
    at = data.draw(st.integers(0, len(content) - 1))
    how = data.draw(st.sampled_from(["change", "insert", "remove"]))
    byte = bytes((data.draw(st.integers(0, 255)),))
    changed = {
        "change": content[:at] + byte + content[at + 1 :],
        "insert": content[:at] + byte + content[at:],
        "remove": content[:at] + content[at + 1 :],
    }[how]
    both(verifier, _replaced(verifier, good, changed))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(placements(), st.data())
def test_a_value_in_a_longer_form_gets_the_same_answer(
    placement: tuple[ChainVerifier, bytes, dict[str, Any]], data: st.DataObject
) -> None:
    # Every uint and string of the record and of its content, one at a time, in a longer form
    # than its shortest (the hashes cover values, not forms): neither path may take it.
    verifier, good, parts = placement
    value = msgpack.unpackb(good)
    content = msgpack.unpackb(parts["content"])
    where = data.draw(st.sampled_from(["accepted", "height", "nonce", "origin", "content.ts", "content.author",
                                        "content.request_id", "content.kind"]))  # fmt: skip
    inner = where.startswith("content.")
    target = content if inner else value
    key = where.removeprefix("content.")
    assume(not (isinstance(target[key], int) and target[key] >= 2**32))  # uint64 is its shortest form
    form = _longer(target[key])
    encoded = _pack_with(target, key, form)
    assert both(verifier, _replaced(verifier, good, encoded) if inner else encoded)[0] == "not sure"


def _longer(item: int | str) -> bytes:
    """``item`` packed one form longer than msgpack's shortest (uint64 or str16 at most)."""
    if isinstance(item, int):
        return b"\xcf" + item.to_bytes(8, "big")
    raw = item.encode()
    return b"\xda" + len(raw).to_bytes(2, "big") + raw


def _pack_with(value: dict[str, Any], key: str, form: bytes) -> bytes:
    """``value`` packed as a map in its order, ``key``'s value given as the bytes ``form``."""
    out = bytearray(msgpack.packb(len(value)) if len(value) > 15 else bytes((0x80 + len(value),)))
    for k, v in value.items():
        out += msgpack.packb(k) + (form if k == key else msgpack.packb(v, use_bin_type=True))
    return bytes(out)


@pytest.mark.parametrize(
    "limits",
    [Limits(max_name_length=5), Limits(max_request_id_length=4), Limits(max_content_bytes=40), Limits(max_depth=2)],
)
def test_tighter_limits_are_held_alike(limits: Limits) -> None:
    genesis = GENESIS[0]
    content = Content(LEDGER, "note", {"n": [1]}, "author-6", "req-12", 3)
    data = Entry.prepare(content, 0, LIMITS).place(1, genesis.link, 5, "node-1").encode()
    rules = ChainVerifier(LEDGER, LIMITS).check(genesis)
    verifier = ChainVerifier.after(LEDGER, 0, genesis.link, rules, limits)
    old = ChainVerifier.after(LEDGER, 0, genesis.link, rules, limits)
    assert verifier.feed_fast(data) is None
    assert old_take(old, _old_rules(LEDGER, rules, limits), data) is None
    assert ChainVerifier.after(LEDGER, 0, genesis.link, rules, LIMITS).feed_fast(data) is not None


def test_a_name_pattern_the_fast_path_cannot_match_on_bytes_is_refused() -> None:
    # A dot or \w matches otherwise in bytes than in text: the fast path must not guess.
    for pattern in (r"[a-z].*", r"\w+", r"[a-z]+$"):
        with pytest.raises(ValueError):
            verify._name(re.compile(pattern), 8, b"\xa4kind")
    for pattern in (NAME_PATTERN, ACCOUNT_PATTERN, REQUEST_ID_PATTERN):
        verify._name(pattern, 8, b"\xa4kind")
