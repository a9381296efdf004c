"""The fast decoding path accepts and refuses exactly what the checks one by one do.

``decode_record`` and ``decode_content`` test a valid record's fields all at once, remember
names that matched their patterns, re-encode with a reused packer and build the dataclasses
through their slots. This file holds them against a straightforward oracle written here from
the protocol's list of checks (the code as it was before the fast path): for valid records,
for every kind of non-canonical encoding we know of, and for random byte corruptions, both
must accept the same record or raise the same error class naming the same ledger and height.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vledger.config.settings import Limits
from vledger.node import canonical, record, verify
from vledger.node.errors import FieldError, NonCanonicalError, PayloadTooLargeError, RecordError, Where
from vledger.node.ledger import LedgerRules
from vledger.node.record import (
    CONTENT_KEYS,
    FORMAT_VERSION,
    NAME_PATTERN,
    RECORD_KEYS,
    Content,
    Entry,
    Record,
    checksum_of,
    decode_content,
    decode_record,
)
from vledger.node.verify import ChainVerifier

LIMITS = Limits()
UINT_MAX = 2**64 - 1
ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]*")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]+")

# --- the oracle: every check one by one, no remembered names, fresh packer ------------------


def _name(value: object, field: str, pattern: re.Pattern[str], max_length: int, where: Where) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= max_length or not pattern.fullmatch(value):
        raise FieldError(f"{field} is not a valid name", **where)
    return value


def _uint(value: object, field: str, where: Where) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= UINT_MAX:
        raise FieldError(f"{field} is not a u64", **where)
    return value


def _digest(value: object, field: str, where: Where) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise FieldError(f"{field} is not 32 bytes", **where)
    return value


def oracle_content(data: bytes, limits: Limits) -> Content:
    if len(data) > limits.max_content_bytes:
        raise PayloadTooLargeError("content too large")
    value = canonical.decode(data, limits.max_depth)
    if not isinstance(value, dict) or tuple(value) != CONTENT_KEYS:
        raise FieldError("content fields")
    if type(value["v"]) is not int or value["v"] != FORMAT_VERSION:
        raise FieldError("version")
    ledger = _name(value["ledger"], "ledger", NAME_PATTERN, limits.max_name_length, {})
    where: Where = {"ledger": ledger}
    if not isinstance(value["payload"], dict):
        raise FieldError("payload", **where)
    _name(value["kind"], "kind", NAME_PATTERN, limits.max_name_length, where)
    _name(value["author"], "author", ACCOUNT, limits.max_name_length, where)
    _name(value["request_id"], "request_id", REQUEST_ID, limits.max_request_id_length, where)
    _uint(value["ts"], "ts", where)
    return Content(ledger, value["kind"], value["payload"], value["author"], value["request_id"], value["ts"])


def oracle_record(data: bytes, limits: Limits) -> Record:
    if len(data) > limits.max_record_bytes:
        raise PayloadTooLargeError("record too large")
    value = canonical.unpack(data)
    if canonical.structure_fault(data) is not None:  # step 1.2: an extension, a non-string or repeated key
        raise NonCanonicalError("structure")
    if not isinstance(value, dict):
        raise FieldError("not a map")
    if tuple(value) != RECORD_KEYS:
        if any(not isinstance(key, str) for key in value) or sorted(value) == sorted(RECORD_KEYS):
            raise NonCanonicalError("keys")
        raise FieldError("record fields")
    if not isinstance(value["content"], bytes):
        raise FieldError("content not binary")
    content = oracle_content(value["content"], limits)
    where: Where = {"ledger": content.ledger}
    height = _uint(value["height"], "height", where)
    where["height"] = height
    placed = Record(
        content,
        value["content"],
        _digest(value["checksum"], "checksum", where),
        _uint(value["nonce"], "nonce", where),
        height,
        _digest(value["prev"], "prev", where),
        _uint(value["accepted"], "accepted", where),
        _name(value["origin"], "origin", NAME_PATTERN, limits.max_name_length, where),
        _digest(value["link"], "link", where),
    )
    if placed.encode() != data:
        raise NonCanonicalError("record not canonical", **where)
    return placed


Outcome = tuple[Any, ...]


def outcome(decode: Callable[[bytes, Limits], Any], data: bytes, limits: Limits = LIMITS) -> Outcome:
    """What a decoder made of ``data``: the value, or the error's class, ledger and height.

    Anything but a RecordError (a TypeError, say) propagates and fails the test.
    """
    try:
        return ("accepted", decode(data, limits))
    except RecordError as e:
        return (type(e), e.ledger, e.height)


def agree(data: bytes, limits: Limits = LIMITS) -> Outcome:
    """decode_record and the oracle agree on ``data``, remembered names or not; returns the outcome."""
    first = outcome(decode_record, data, limits)  # may remember names: the next call is the fast path
    expected = outcome(oracle_record, data, limits)
    assert first == expected
    assert outcome(decode_record, data, limits) == expected
    return expected


# --- valid records ----------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers(-(2**63), UINT_MAX) | st.text(max_size=12) | st.binary(max_size=12)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
contents = st.builds(
    Content,
    ledger=st.from_regex(r"[a-z0-9][a-z0-9._-]{0,12}", fullmatch=True),
    kind=st.from_regex(r"[a-z0-9][a-z0-9._-]{0,12}", fullmatch=True),
    payload=st.dictionaries(st.text(max_size=6), values, max_size=4),
    author=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,12}", fullmatch=True),
    request_id=st.from_regex(r"[A-Za-z0-9._:-]{1,16}", fullmatch=True),
    ts=st.integers(0, UINT_MAX),
)
u64 = st.integers(0, UINT_MAX)


@st.composite
def records(draw: st.DrawFn) -> Record:
    content = draw(contents)
    data = content.encode(LIMITS)
    entry = Entry(content, data, checksum_of(data), draw(u64))
    origin = draw(st.from_regex(r"[a-z0-9][a-z0-9._-]{0,40}", fullmatch=True))
    return entry.place(draw(u64), draw(st.binary(min_size=32, max_size=32)), draw(u64), origin)


@settings(max_examples=300, deadline=None)
@given(records())
def test_a_valid_record_decodes_the_same_on_both_paths(placed: Record) -> None:
    assert agree(placed.encode()) == ("accepted", placed)


@settings(max_examples=300, deadline=None)
@given(contents)
def test_valid_content_decodes_the_same_on_both_paths(content: Content) -> None:
    data = content.encode(LIMITS)
    assert outcome(decode_content, data) == outcome(oracle_content, data) == ("accepted", content)
    assert outcome(decode_content, data) == ("accepted", content)


def test_a_valid_record_with_known_names_takes_the_fast_path(kit: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    data = kit.chain(2)[1].encode()
    decode_record(data, LIMITS)  # remembers its names

    def slow(*args: Any) -> Any:
        raise AssertionError("the one-by-one checks ran for a valid record")

    monkeypatch.setattr(record, "_checked_content", slow)
    monkeypatch.setattr(record, "_check_placement", slow)
    assert decode_record(data, LIMITS).encode() == data


# --- corruptions --------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(records(), st.data())
def test_any_changed_byte_gets_the_same_verdict_on_both_paths(placed: Record, data: st.DataObject) -> None:
    good = placed.encode()
    decode_record(good, LIMITS)  # its names are now remembered
    at = data.draw(st.integers(0, len(good) - 1))
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != good[at]))
    agree(good[:at] + bytes((byte,)) + good[at + 1 :])


@settings(max_examples=300, deadline=None)
@given(records(), st.data())
def test_an_inserted_or_removed_byte_gets_the_same_verdict(placed: Record, data: st.DataObject) -> None:
    good = placed.encode()
    decode_record(good, LIMITS)
    at = data.draw(st.integers(0, len(good) - 1))
    if data.draw(st.booleans()):
        agree(good[:at] + bytes((data.draw(st.integers(0, 255)),)) + good[at:])
    else:
        agree(good[:at] + good[at + 1 :])


# --- every non-canonical form we know, made on purpose ---------------------------------------


def _content_map(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "author": "Zoe.1",
        "kind": "note",
        "ledger": "ledger-a",
        "payload": {"n": 1000, "text": "Zoë 🗳"},
        "request_id": "req-1",
        "ts": 1_790_000_000_000,
        "v": FORMAT_VERSION,
    }
    value.update(changes)
    return value


def _record_bytes(content_bytes: bytes, **changes: Any) -> bytes:
    value: dict[str, Any] = {
        "accepted": 1_790_000_000_123,
        "checksum": checksum_of(content_bytes),
        "content": content_bytes,
        "height": 1000,
        "link": bytes(range(32)),
        "nonce": 5,
        "origin": "node-1",
        "prev": bytes(32),
    }
    value.update(changes)
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _nest(levels: int) -> Any:
    inner: Any = 1
    for _ in range(levels):
        inner = [inner]
    return inner


GOOD_CONTENT = _pack(_content_map())
CRAFTED: dict[str, bytes] = {
    "valid": _record_bytes(GOOD_CONTENT),
    # the content
    "payload float": _record_bytes(_pack(_content_map(payload={"n": 1.5}))),
    "payload float32": _record_bytes(
        _pack(_content_map(payload={"n": 1.5})).replace(b"\xcb?\xf8" + bytes(6), b"\xca?\xc0\x00\x00")
    ),
    "payload timestamp": _record_bytes(_pack(_content_map(payload={"t": msgpack.Timestamp(1, 2)}))),
    "payload extension": _record_bytes(_pack(_content_map(payload={"t": msgpack.ExtType(5, b"x")}))),
    "payload keys unsorted": _record_bytes(_pack(_content_map(payload={"text": "a", "n": 1}))),
    "payload binary key": _record_bytes(_pack(_content_map(payload={b"n": 1}))),
    "payload mixed keys": _record_bytes(_pack(_content_map(payload={b"n": 1, "m": 2}))),
    "payload int inside 15": _record_bytes(_pack(_content_map(payload={"d": _nest(13)}))),
    "payload int inside 16": _record_bytes(_pack(_content_map(payload={"d": _nest(14)}))),
    "payload int16 for a uint": _record_bytes(GOOD_CONTENT.replace(b"\xcd\x03\xe8", b"\xd1\x03\xe8")),
    "payload uint32 for a uint16": _record_bytes(GOOD_CONTENT.replace(b"\xcd\x03\xe8", b"\xce\x00\x00\x03\xe8")),
    "payload str8 for a fixstr": _record_bytes(GOOD_CONTENT.replace(b"\xa4text", b"\xd9\x04text")),
    "payload duplicate key": _record_bytes(GOOD_CONTENT.replace(b"\x82\xa1n", b"\x83\xa1n\x01\xa1n")),
    "ts int64": _record_bytes(GOOD_CONTENT.replace(b"\xcf", b"\xd3")),
    "ts negative": _record_bytes(_pack(_content_map(ts=-1))),
    "ts bool": _record_bytes(_pack(_content_map(ts=True))),
    "v true": _record_bytes(_pack(_content_map(v=True))),
    "v 2": _record_bytes(_pack(_content_map(v=2))),
    "payload list": _record_bytes(_pack(_content_map(payload=[1]))),
    "ledger bad name": _record_bytes(_pack(_content_map(ledger="Ledger"))),
    "kind bytes": _record_bytes(_pack(_content_map(kind=b"note"))),
    "author bad": _record_bytes(_pack(_content_map(author="bob smith"))),
    "request_id empty": _record_bytes(_pack(_content_map(request_id=""))),
    "content keys unsorted": _record_bytes(
        _pack({"kind": "note", **{k: v for k, v in _content_map().items() if k != "kind"}})
    ),
    "content missing key": _record_bytes(_pack({k: v for k, v in _content_map().items() if k != "ts"})),
    "content trailing byte": _record_bytes(GOOD_CONTENT + b"\x00"),
    "content invalid utf-8": _record_bytes(GOOD_CONTENT.replace("Zoë".encode(), b"Zo\xff\xfe")),
    "content surrogate": _record_bytes(GOOD_CONTENT.replace("Zoë".encode(), b"Z\xed\xa0\x80")),
    "content not a map": _record_bytes(_pack([1, 2])),
    "content a string": _record_bytes(GOOD_CONTENT, content="text"),
    # the placement
    "height int16": _record_bytes(GOOD_CONTENT).replace(b"\xa6height\xcd", b"\xa6height\xd1"),
    "height uint32": _record_bytes(GOOD_CONTENT).replace(b"\xa6height\xcd", b"\xa6height\xce\x00\x00"),
    "height negative": _record_bytes(GOOD_CONTENT, height=-1),
    "height bool": _record_bytes(GOOD_CONTENT, height=True),
    "nonce float": _record_bytes(GOOD_CONTENT, nonce=5.0),
    "accepted string": _record_bytes(GOOD_CONTENT, accepted="1"),
    "checksum 31 bytes": _record_bytes(GOOD_CONTENT, checksum=bytes(31)),
    "prev as string": _record_bytes(GOOD_CONTENT, prev="x" * 32),
    "link bin16": _record_bytes(GOOD_CONTENT).replace(b"\xa4link\xc4\x20", b"\xa4link\xc5\x00\x20"),
    "origin bad name": _record_bytes(GOOD_CONTENT, origin="Node 1"),
    "origin too long": _record_bytes(GOOD_CONTENT, origin="n" * 65),
    "origin str8": _record_bytes(GOOD_CONTENT).replace(b"\xa6origin\xa6", b"\xa6origin\xd9\x06"),
    "record keys unsorted": _pack({"prev": bytes(32), **msgpack.unpackb(_record_bytes(GOOD_CONTENT))}),
    "record binary key": _pack(
        {b"accepted": 1, **{k: v for k, v in msgpack.unpackb(_record_bytes(GOOD_CONTENT)).items() if k != "accepted"}}
    ),
    "record extra key": _record_bytes(GOOD_CONTENT, zzz=1),
    "record trailing byte": _record_bytes(GOOD_CONTENT) + b"\x00",
    "record duplicate key": _record_bytes(GOOD_CONTENT).replace(b"\x88", b"\x89", 1) + b"\xa4prev" + _pack(bytes(32)),
    "record map16 header": b"\xde\x00\x08" + _record_bytes(GOOD_CONTENT)[1:],
    "record not a map": _pack([1]),
    "record truncated": _record_bytes(GOOD_CONTENT)[:-1],
    "record empty": b"",
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_a_crafted_encoding_gets_the_same_verdict(name: str) -> None:
    verdict = agree(CRAFTED[name])
    assert (verdict[0] == "accepted") == (name in ("valid", "payload int inside 15")), verdict


def test_the_crafted_cases_are_what_they_say() -> None:
    """Each replace() above hit its target: the crafted bytes differ from the valid ones."""
    valid = CRAFTED["valid"]
    for name, data in CRAFTED.items():
        assert name == "valid" or data != valid, name


# --- limits and remembered names ------------------------------------------------------------


@pytest.mark.parametrize(
    "limits",
    [
        Limits(max_name_length=5),
        Limits(max_request_id_length=4),
        Limits(max_content_bytes=40),
        Limits(max_record_bytes=100),
        Limits(max_depth=1),
        Limits(max_depth=2),
    ],
)
def test_tighter_limits_refuse_what_looser_ones_remembered(kit: Any, limits: Limits) -> None:
    data = kit.chain(2)[1].encode()
    assert agree(data)[0] == "accepted"  # the names are remembered under the default limits
    assert agree(data, limits)[0] != "accepted"


def _record_named(ledger: str = "l", kind: str = "k", author: str = "a", origin: str = "o") -> bytes:
    content = _pack(_content_map(ledger=ledger, kind=kind, author=author))
    return _record_bytes(content, origin=origin)


@pytest.mark.parametrize("field", ["ledger", "kind", "author", "origin"])
def test_a_remembered_name_is_still_held_to_the_length_limit(field: str) -> None:
    data = _record_named(**{field: "long-6"})
    assert agree(data)[0] == "accepted"
    assert agree(data, Limits(max_name_length=5))[0] is FieldError


@pytest.mark.parametrize("field", ["ledger", "kind", "origin"])
def test_an_account_name_is_not_remembered_as_a_ledger_kind_or_node_name(field: str) -> None:
    assert agree(_record_named(author="Zoe.1@home"))[0] == "accepted"
    assert agree(_record_named(**{field: "Zoe.1@home"}))[0] is FieldError


def test_a_name_that_failed_is_never_remembered() -> None:
    for _ in range(2):
        assert agree(CRAFTED["ledger bad name"])[0] is FieldError
        assert agree(CRAFTED["origin bad name"])[0] is FieldError


# --- the dataclasses built through their slots -----------------------------------------------


def test_the_slot_builders_make_what_the_constructors_make(kit: Any) -> None:
    placed = kit.chain(2)[1]
    content_values = [getattr(placed.content, f.name) for f in dataclasses.fields(Content)]
    record_values = [getattr(placed, f.name) for f in dataclasses.fields(Record)]
    built_content = record.new_content(*content_values)
    built_record = record.new_record(*record_values)
    assert built_content == Content(*content_values) and type(built_content) is Content
    assert built_record == Record(*record_values) and type(built_record) is Record
    assert [f.name for f in dataclasses.fields(Record)] == list(record.new_record.__code__.co_varnames[:9])
    assert [f.name for f in dataclasses.fields(Content)] == list(record.new_content.__code__.co_varnames[:6])
    with pytest.raises(dataclasses.FrozenInstanceError):
        built_record.height = 3  # type: ignore[misc]


# --- whole chains ---------------------------------------------------------------------------


def _verdict(datas: list[bytes], decode: Callable[[bytes, Limits], Record]) -> Outcome:
    verifier = ChainVerifier("ledger-a", LIMITS)
    try:
        for data in datas:
            verifier.feed(decode(data, LIMITS))
    except RecordError as e:
        return (type(e), e.ledger, e.height)
    return ("accepted", verifier.next_height, verifier.prev)


@pytest.fixture(scope="module")
def chain_bytes(kit: Any) -> list[bytes]:
    return [r.encode() for r in kit.chain(5, difficulty=4)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_chain_with_one_changed_byte_gets_the_same_verdict(chain_bytes: list[bytes], data: st.DataObject) -> None:
    datas = _one_byte_changed(chain_bytes, data)
    verdict = _verdict(datas, decode_record)
    assert verdict == _verdict(datas, oracle_record)
    assert verdict[0] != "accepted"  # every byte of a record is covered by a hash or a rule


def test_an_untouched_chain_verifies_on_both_paths(chain_bytes: list[bytes]) -> None:
    assert _verdict(chain_bytes, decode_record) == _verdict(chain_bytes, oracle_record)
    assert _verdict(chain_bytes, decode_record)[:2] == ("accepted", 5)
    assert _verdict(chain_bytes, decode_record)[2] == decode_record(chain_bytes[-1], LIMITS).link


# --- ChainVerifier.feed_fast: a whole record's checks at once, or "not sure" ---------------------


def _raw_verdict(datas: list[bytes]) -> Outcome:
    """The verdict of ChainVerifier.feed_raw (feed_fast, else the checks one by one)."""
    verifier = ChainVerifier("ledger-a", LIMITS)
    try:
        for data in datas:
            verifier.feed_raw(data)
    except RecordError as e:
        return (type(e), e.ledger, e.height)
    return ("accepted", verifier.next_height, verifier.prev)


def _placed(genesis: Record, content_bytes: bytes, **changes: Any) -> bytes:
    """Record bytes of ``content_bytes`` placed right after ``genesis`` (difficulty 0) with every
    hash right, so that only the content's own rules (or ``changes``) can fail it."""
    checksum = hashlib.sha256(content_bytes).digest()
    value: dict[str, Any] = {
        "accepted": genesis.accepted + 1,
        "checksum": checksum,
        "content": content_bytes,
        "height": 1,
        "link": b"",
        "nonce": 0,
        "origin": "node-1",
        "prev": genesis.link,
    }
    value.update(changes)
    value["link"] = record.link_of(genesis.link, checksum, 1, 0, value["accepted"], "node-1")
    return _pack(value)


@pytest.fixture(scope="module")
def genesis0(kit: Any) -> bytes:
    return kit.chain(1, difficulty=0)[0].encode()  # type: ignore[no-any-return]


# Encodings the link does not cover (it hashes the values, not their msgpack form), on a record
# whose hashes are all right: the fast path must still refuse each, as the precise one does.
_FORMS = {
    "height int8": (b"\xa6height\x01", b"\xa6height\xd0\x01"),
    "nonce uint8": (b"\xa5nonce\x00", b"\xa5nonce\xcc\x00"),
    "origin str8": (b"\xa6origin\xa6", b"\xa6origin\xd9\x06"),
    "link bin16": (b"\xa4link\xc4\x20", b"\xa4link\xc5\x00\x20"),
    "content bin16": (b"\xa7content\xc4", b"\xa7content\xc5\x00"),
}


@pytest.mark.parametrize("name", [*CRAFTED, *_FORMS])
def test_feed_fast_gets_the_verdict_of_the_checks_one_by_one(name: str, genesis0: bytes) -> None:
    genesis = decode_record(genesis0, LIMITS)
    if name in _FORMS:
        old, new = _FORMS[name]
        good = _placed(genesis, GOOD_CONTENT)
        assert old in good
        data = good.replace(old, new, 1)
    else:
        try:
            value = msgpack.unpackb(CRAFTED[name], strict_map_key=False)
        except (ValueError, msgpack.UnpackException):
            value = None
        raw = value.get("content") if isinstance(value, dict) else None
        # A case in the content is placed with every hash right; one in the record's own
        # encoding keeps its bytes (their hashes are wrong too, so the order of checks decides).
        in_content = isinstance(raw, bytes) and (raw != GOOD_CONTENT or name == "valid")
        data = _placed(genesis, raw) if in_content else CRAFTED[name]
    datas = [genesis0, data]
    verdict = _raw_verdict(datas)
    assert verdict == _verdict(datas, oracle_record)
    assert (verdict[0] == "accepted") == (name in ("valid", "payload int inside 15")), verdict


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_content_changed_and_rehashed_gets_the_same_verdict_on_feed_fast(genesis0: bytes, data: st.DataObject) -> None:
    genesis = decode_record(genesis0, LIMITS)
    content = data.draw(contents.map(lambda c: dataclasses.replace(c, ledger="ledger-a", kind="note")))
    good = content.encode(LIMITS)
    at = data.draw(st.integers(0, len(good) - 1))
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != good[at]))
    changed = good[:at] + bytes((byte,)) + good[at + 1 :]
    for content_bytes in (good, changed):
        datas = [genesis0, _placed(genesis, content_bytes)]
        assert _raw_verdict(datas) == _verdict(datas, oracle_record)


def _one_byte_changed(chain_bytes: list[bytes], data: st.DataObject) -> list[bytes]:
    """The chain with one byte of one record changed to another value, both drawn."""
    which = data.draw(st.integers(0, len(chain_bytes) - 1))
    good = chain_bytes[which]
    at = data.draw(st.integers(0, len(good) - 1))
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != good[at]))
    return [*chain_bytes[:which], good[:at] + bytes((byte,)) + good[at + 1 :], *chain_bytes[which + 1 :]]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_chain_with_one_changed_byte_gets_the_same_verdict_on_feed_raw(
    chain_bytes: list[bytes], data: st.DataObject
) -> None:
    datas = _one_byte_changed(chain_bytes, data)
    assert _raw_verdict(datas) == _verdict(datas, oracle_record)


def _many_verdict(datas: list[bytes], page: int) -> Outcome:
    """The verdict of ChainVerifier.feed_many, ``page`` records a call (as a sweep feeds its pages)."""
    verifier = ChainVerifier("ledger-a", LIMITS)
    try:
        for start in range(0, len(datas), page):
            verifier.feed_many(datas[start : start + page])
    except RecordError as e:
        return (type(e), e.ledger, e.height)
    return ("accepted", verifier.next_height, verifier.prev)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_chain_with_one_changed_byte_gets_the_same_verdict_on_feed_many(
    chain_bytes: list[bytes], data: st.DataObject
) -> None:
    datas = _one_byte_changed(chain_bytes, data)
    page = data.draw(st.integers(1, len(datas)))
    assert _many_verdict(datas, page) == _verdict(datas, oracle_record)


def test_take_many_stops_at_the_first_record_it_does_not_take(chain_bytes: list[bytes]) -> None:
    verifier = ChainVerifier("ledger-a", LIMITS)
    assert verifier.take_many(chain_bytes) == 0  # the genesis: its rules the precise way
    verifier.feed_raw(chain_bytes[0])
    assert verifier.take_many(chain_bytes, 1) == len(chain_bytes)
    assert (verifier.next_height, verifier.prev) == (len(chain_bytes), decode_record(chain_bytes[-1], LIMITS).link)

    verifier = ChainVerifier("ledger-a", LIMITS)
    verifier.feed_raw(chain_bytes[0])
    broken = [*chain_bytes[:3], chain_bytes[3][:-1], *chain_bytes[4:]]  # height 3 truncated
    assert verifier.take_many(broken, 1) == 3
    assert (verifier.next_height, verifier.prev) == (3, decode_record(chain_bytes[2], LIMITS).link)
    assert verifier.take_many(broken, 3) == 3  # nothing taken, nothing changed
    assert (verifier.next_height, verifier.prev) == (3, decode_record(chain_bytes[2], LIMITS).link)


def test_take_rows_holds_each_column_to_its_record(chain_bytes: list[bytes]) -> None:
    records = [decode_record(data, LIMITS) for data in chain_bytes]
    rows = [
        (r.height, r.link, r.content.author, r.content.request_id, d) for r, d in zip(records, chain_bytes, strict=True)
    ]
    verifier = ChainVerifier("ledger-a", LIMITS)
    verifier.feed_raw(chain_bytes[0])
    assert verifier.take_rows(rows, 1, 3) == 3  # up to ``end`` only
    assert verifier.take_rows(rows, 3) == len(rows)
    assert (verifier.next_height, verifier.prev) == (len(rows), records[-1].link)
    # A column that says otherwise (a wrong value, or one of another type) stops the run at its row.
    wrongs = [(0, 4), (0, "3"), (1, bytes(32)), (1, records[3].link.hex()), (2, "someone-else"), (2, None),
              (2, rows[3][2].encode()), (3, "r-other"), (3, rows[3][3].encode())]  # fmt: skip
    for column, wrong in wrongs:
        changed = [list(row) for row in rows]
        changed[3][column] = wrong
        verifier = ChainVerifier("ledger-a", LIMITS)
        verifier.feed_raw(chain_bytes[0])
        assert verifier.take_rows(changed, 1) == 3, (column, wrong)
        assert (verifier.next_height, verifier.prev) == (3, records[2].link)  # nothing of row 3 taken


def test_valid_records_past_the_genesis_take_the_fast_path(chain_bytes: list[bytes]) -> None:
    verifier = ChainVerifier("ledger-a", LIMITS)
    assert verifier.feed_fast(chain_bytes[0]) is None  # the genesis: its rules the precise way
    verifier.feed_raw(chain_bytes[0])
    for data in chain_bytes[1:]:
        decode_record(data, LIMITS)  # its names are remembered
        content = verifier.feed_fast(data)
        assert content == decode_record(data, LIMITS).content.to_map()
    assert _raw_verdict(chain_bytes) == _verdict(chain_bytes, oracle_record)


def test_feed_fast_changes_nothing_when_not_sure(chain_bytes: list[bytes]) -> None:
    verifier = ChainVerifier("ledger-a", LIMITS)
    verifier.feed_raw(chain_bytes[0])
    before = (verifier.next_height, verifier.prev)
    assert verifier.feed_fast(chain_bytes[2]) is None  # not the next record
    assert verifier.feed_fast(chain_bytes[1][:-1]) is None  # truncated
    assert (verifier.next_height, verifier.prev) == before


def _chained(genesis: Record, payloads: list[dict[str, Any]]) -> list[bytes]:
    """Records of ``payloads`` after ``genesis`` (difficulty 0), each linked to the one before."""
    datas, prev, accepted = [], genesis.link, genesis.accepted
    for i, payload in enumerate(payloads, start=1):
        content_bytes = _pack(_content_map(payload=payload, request_id=f"req-{i}"))
        checksum = hashlib.sha256(content_bytes).digest()
        accepted += 1
        link = record.link_of(prev, checksum, i, 0, accepted, "node-1")
        datas.append(
            _pack({"accepted": accepted, "checksum": checksum, "content": content_bytes, "height": i,
                   "link": link, "nonce": 0, "origin": "node-1", "prev": prev})
        )  # fmt: skip
        prev = link
    return datas


def test_a_remembered_key_order_lets_no_other_order_through(genesis0: bytes) -> None:
    # feed_fast remembers the key orders it found sorted; the same keys unsorted are still refused.
    genesis = decode_record(genesis0, LIMITS)
    datas = [genesis0, *_chained(genesis, [{"n": 1, "text": "a"}, {"n": 2, "text": "b"}, {"text": "c", "n": 3}])]
    verifier = ChainVerifier("ledger-a", LIMITS)
    for data in datas[:3]:
        verifier.feed_raw(data)
    assert verifier.feed_fast(datas[3]) is None
    verdict = _raw_verdict(datas)
    assert verdict == _verdict(datas, oracle_record)
    assert verdict[0] is NonCanonicalError


def test_a_flood_of_key_orders_keeps_the_verdicts(genesis0: bytes) -> None:
    # More key orders than feed_fast remembers: it starts its set again and every record still verifies.
    genesis = decode_record(genesis0, LIMITS)
    datas = [genesis0, *_chained(genesis, [{f"k{i:04d}": i} for i in range(600)])]
    verdict = _raw_verdict(datas)
    assert verdict == ("accepted", 601, decode_record(datas[-1], LIMITS).link)
    assert verdict == _verdict(datas, oracle_record)


@pytest.mark.parametrize("max_depth", [1, 2])
def test_a_depth_limit_too_low_for_a_payload_of_scalars_is_held_on_the_fast_path(
    genesis0: bytes, max_depth: int
) -> None:
    limits = dataclasses.replace(LIMITS, max_depth=max_depth)
    genesis = decode_record(genesis0, LIMITS)
    datas = [genesis0, *_chained(genesis, [{"n": 1}])]
    rules = ChainVerifier("ledger-a", LIMITS).check(genesis)
    verifier = ChainVerifier.after("ledger-a", 0, genesis.link, rules, limits)
    assert verifier.feed_fast(datas[1]) is None  # the checks one by one refuse it: nested too deep
    with pytest.raises(NonCanonicalError):
        verifier.feed_raw(datas[1])


# --- ChainVerifier.feed_record_fast: the fast path's fields as the Record decode_record gives ------


def _record_verdict(datas: list[bytes]) -> Outcome:
    """The verdict of feed_record_fast, else the checks one by one (as the follower runs them),
    each record the fast path returns held against decode_record's."""
    verifier = ChainVerifier("ledger-a", LIMITS)
    try:
        for data in datas:
            returned = verifier.feed_record_fast(data)
            if returned is None:
                verifier.feed(decode_record(data, LIMITS))
            else:
                assert returned == decode_record(data, LIMITS)
                assert returned.encode() == data
    except RecordError as e:
        return (type(e), e.ledger, e.height)
    return ("accepted", verifier.next_height, verifier.prev)


def test_feed_record_fast_returns_the_record_decode_record_gives(chain_bytes: list[bytes]) -> None:
    verifier = ChainVerifier("ledger-a", LIMITS)
    assert verifier.feed_record_fast(chain_bytes[0]) is None  # the genesis: its rules the precise way
    verifier.feed(decode_record(chain_bytes[0], LIMITS))
    assert verifier.feed_record_fast(chain_bytes[2]) is None  # not the next record: nothing changed
    assert verifier.next_height == 1
    for data in chain_bytes[1:]:
        decode_record(data, LIMITS)  # its names are remembered: the fast path builds the record
        returned = verifier.feed_record_fast(data)
        expected = decode_record(data, LIMITS)
        assert returned is not None
        assert returned == expected and type(returned) is Record and type(returned.content) is Content
        assert returned.content.payload == expected.content.payload
    assert _record_verdict(chain_bytes) == _verdict(chain_bytes, oracle_record)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_chain_with_one_changed_byte_gets_the_same_verdict_on_feed_record_fast(
    chain_bytes: list[bytes], data: st.DataObject
) -> None:
    datas = _one_byte_changed(chain_bytes, data)
    assert _record_verdict(datas) == _verdict(datas, oracle_record)


# --- a payload of scalars, matched item by item (verify._SCALARS_MAP) ---------------------------


def _int_forms(value: int) -> list[bytes]:
    """Every msgpack encoding of the integer ``value``: each marker whose range holds it."""
    forms = []
    if 0 <= value <= 0x7F or -32 <= value < 0:
        forms.append(value.to_bytes(1, "big", signed=True))
    for marker, size in ((0xCC, 1), (0xCD, 2), (0xCE, 4), (0xCF, 8)):
        if 0 <= value < 1 << (8 * size):
            forms.append(bytes((marker,)) + value.to_bytes(size, "big"))
    for marker, size in ((0xD0, 1), (0xD1, 2), (0xD2, 4), (0xD3, 8)):
        if -(1 << (8 * size - 1)) <= value < 1 << (8 * size - 1):
            forms.append(bytes((marker,)) + value.to_bytes(size, "big", signed=True))
    return forms


def _sized_forms(data: bytes, fixed: int | None, markers: tuple[int, int, int]) -> list[bytes]:
    """Every msgpack encoding of a string's (``fixed``: its fixstr base) or binary's ``data``."""
    n = len(data)
    forms = [bytes((fixed + n,)) + data] if fixed is not None and n < 32 else []
    for marker, size in zip(markers, (1, 2, 4), strict=True):
        if n < 1 << (8 * size):
            forms.append(bytes((marker,)) + n.to_bytes(size, "big") + data)
    return forms


def _scalar_forms(value: Any) -> list[bytes]:
    if type(value) is int:
        return _int_forms(value)
    if type(value) is str:
        return _sized_forms(value.encode(), 0xA0, (0xD9, 0xDA, 0xDB))
    return _sized_forms(value, None, (0xC4, 0xC5, 0xC6))


_INT_EDGES = sorted({e + d for e in (0, 32, 128, 256, 1 << 15, 1 << 16, 1 << 31, 1 << 32, 1 << 63) for d in (-1, 0, 1)})
scalar_values = (
    st.sampled_from([*_INT_EDGES, *(-e for e in _INT_EDGES if e <= 1 << 63), UINT_MAX])
    | st.integers(-(1 << 63), UINT_MAX)
    | st.text(max_size=300)
    | st.binary(max_size=300)
    | st.sampled_from(["", "x" * 31, "x" * 32, "x" * 255, "x" * 256, b"", b"x" * 255, b"x" * 256])
)
_SCALAR_FORM = re.compile(verify._SCALAR_FORM, re.DOTALL).fullmatch


@settings(max_examples=400, deadline=None)
@given(scalar_values)
def test_the_scalar_form_takes_exactly_a_scalar_s_canonical_encoding(value: Any) -> None:
    canonical_form = _pack(value)
    for form in _scalar_forms(value):
        # str16 and bin16 are left to the expression's other form, canonical or not.
        expected = form == canonical_form and not (type(value) is not int and len(form) > 257)
        assert (_SCALAR_FORM(form) is not None) == expected, form[:12]


@pytest.mark.parametrize(
    "form",
    [b"\xc0", b"\xc2", b"\xc3", _pack(1.5), _pack(1.5).replace(b"\xcb?\xf8" + bytes(6), b"\xca?\xc0\x00\x00"),
     _pack(msgpack.Timestamp(1, 2)), _pack(msgpack.ExtType(5, b"x")), _pack([]), _pack([1]), _pack({}),
     _pack({"a": 1}), b"\xc1"],
)  # fmt: skip
def test_the_scalar_form_takes_nil_and_booleans_and_nothing_else(form: bytes) -> None:
    assert (_SCALAR_FORM(form) is not None) == (form in (b"\xc0", b"\xc2", b"\xc3"))


def _with_payload_item(form: bytes) -> bytes:
    """Content bytes whose payload is {"a": the item ``form``, "b": 1}, whatever ``form`` is."""
    good = _pack(_content_map(payload={"a": 0, "b": 1}))
    return good.replace(b"\x82\xa1a\x00\xa1b\x01", b"\x82\xa1a" + form + b"\xa1b\x01", 1)


def _takes_scalars_form(data: bytes) -> bool:
    found = verify._matcher("ledger-a", frozenset({"note"}), LIMITS.max_name_length, LIMITS.max_request_id_length)(data)
    return found is not None and found.groups()[verify._SCALARS_PAYLOAD] is not None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scalar_values, st.data())
def test_a_payload_item_in_any_form_gets_the_verdict_of_the_checks_one_by_one(
    genesis0: bytes, value: Any, data: st.DataObject
) -> None:
    genesis = decode_record(genesis0, LIMITS)
    form = data.draw(st.sampled_from(_scalar_forms(value)))
    datas = [genesis0, _placed(genesis, _with_payload_item(form))]
    verdict = _raw_verdict(datas)
    assert verdict == _verdict(datas, oracle_record)
    canonical_form = form == _pack(value)  # st.text draws no lone surrogate: every value has one
    assert (verdict[0] == "accepted") == canonical_form
    # An item goes through the item-by-item form exactly when the scalar form takes it.
    assert _takes_scalars_form(datas[1]) == (_SCALAR_FORM(form) is not None)


@pytest.mark.parametrize(
    ("name", "payload", "accepted", "scalars_form"),
    [
        ("scalars", {"a": -40000, "b": b"\xff", "c": None, "d": True, "e": "é"}, True, True),
        ("empty", {}, True, True),
        ("a key named request_id", {"a": 1, "request_id": "r", "z": 2}, True, False),
        ("a nested map", {"a": {"b": 1}}, True, False),
        ("a list", {"a": [1]}, True, False),
        ("a string of 256 bytes", {"a": "x" * 256}, True, False),
        ("sixteen keys", {f"k{i:02d}": i for i in range(16)}, True, False),
        ("a key of 32 bytes", {"k" * 32: 1}, True, False),
        ("a value of 32 bytes", {"k": "v" * 32}, True, True),
        ("keys unsorted", {"b": 1, "a": 2}, False, True),
    ],
)
def test_a_payload_takes_the_form_it_may_and_the_checks_verdict(
    genesis0: bytes, name: str, payload: dict[str, Any], accepted: bool, scalars_form: bool
) -> None:
    genesis = decode_record(genesis0, LIMITS)
    datas = [genesis0, *_chained(genesis, [payload])]
    verdict = _raw_verdict(datas)
    assert verdict == _verdict(datas, oracle_record)
    assert (verdict[0] == "accepted") == accepted, name
    assert _takes_scalars_form(datas[1]) == scalars_form, name


@pytest.mark.parametrize("repeated", [b"\x83\xa1a\x01\xa1a\x02\xa1b\x03", b"\x83\xa1a\x01\xa1b\x02\xa1b\x03"])
def test_a_repeated_payload_key_is_refused_though_each_item_is_canonical(genesis0: bytes, repeated: bytes) -> None:
    genesis = decode_record(genesis0, LIMITS)
    good = _pack(_content_map(payload={"a": 1, "b": 3}))
    content_bytes = good.replace(b"\x82\xa1a\x01\xa1b\x03", repeated, 1)
    datas = [genesis0, _placed(genesis, content_bytes)]
    assert _takes_scalars_form(datas[1])  # the expression cannot see the repeat: the decoded map does
    verdict = _raw_verdict(datas)
    assert verdict == _verdict(datas, oracle_record)
    assert verdict[0] is NonCanonicalError


# --- an entry as a put brings it: content bytes and a nonce -----------------------------------


def oracle_entry(data: bytes, nonce: object, limits: Limits) -> Entry:
    content = oracle_content(data, limits)
    checked = record._uint(nonce, "nonce", {"ledger": content.ledger})  # the message a client gets
    return Entry(content, data, hashlib.sha256(data).digest(), checked)


class _Nonce(int):
    """An int subclass: what isinstance accepts and an exact type test does not."""


nonces = (
    st.integers(-3, UINT_MAX + 3)
    | st.sampled_from([0, UINT_MAX, UINT_MAX + 1, -1, True, False, None, 1.0, "1", b"\x01", _Nonce(5), _Nonce(-1)])
    | st.floats()
)


def _told(call: Callable[[], Entry]) -> Outcome:
    """The entry, or the error's class, code, message, ledger and height."""
    try:
        return ("accepted", call())
    except RecordError as e:
        return (type(e), e.code, e.message, e.ledger, e.height)


@settings(max_examples=200, deadline=None)
@given(contents, nonces)
def test_an_entry_from_the_wire_is_the_oracle_s_whatever_the_nonce(content: Content, nonce: object) -> None:
    data = content.encode(LIMITS)
    expected = _told(lambda: oracle_entry(data, nonce, LIMITS))
    assert _told(lambda: Entry.from_wire(data, nonce, LIMITS)) == expected
    if expected[0] == "accepted":
        entry = Entry.from_wire(data, nonce, LIMITS)
        assert type(entry) is Entry and entry.nonce is nonce


@settings(max_examples=200, deadline=None)
@given(contents, u64, st.data())
def test_an_entry_with_a_changed_byte_gets_the_oracle_s_verdict(
    content: Content, nonce: int, data: st.DataObject
) -> None:
    raw = bytearray(content.encode(LIMITS))
    raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    changed = bytes(raw)
    expected = outcome(lambda d, limits: oracle_entry(d, nonce, limits), changed)
    assert outcome(lambda d, limits: Entry.from_wire(d, nonce, limits), changed) == expected
    assert outcome(lambda d, limits: Entry.from_wire(d, nonce, limits), changed) == expected  # names remembered


def test_the_entry_slot_builder_makes_what_the_constructor_makes() -> None:
    content = Content("l", "k", {"a": 1}, "Zoe", "r-1", 5)
    data = content.encode(LIMITS)
    built = record.new_entry(content, data, checksum_of(data), 7)
    assert built == Entry(content, data, checksum_of(data), 7) and type(built) is Entry
    assert [f.name for f in dataclasses.fields(Entry)] == list(record.new_entry.__code__.co_varnames[:4])
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.nonce = 3  # type: ignore[misc]


# --- ChainVerifier.take_values: a page checker's values, read from the expression's match --------

long_names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,40}", fullmatch=True)  # 32 bytes and more: str8


def _taken_values(content: Content, nonce: int, height: int, prev: bytes, accepted: int, origin: str) -> list[Any]:
    """What take_values gives for ``content`` placed at ``height`` (difficulty 0), each checked
    against what decoding the record gives; [] when the fast path is not sure of it."""
    data = content.encode(LIMITS)
    placed = Entry(content, data, checksum_of(data), nonce).place(height, prev, accepted, origin)
    encoded = placed.encode()
    rules = LedgerRules((content.kind,), 0, {})
    verifier = ChainVerifier.after(content.ledger, height - 1, prev, rules, LIMITS)
    values = verifier.take_values([encoded], {})
    for fields in values:
        assert fields == record.fields_of_checked(encoded, {})
        assert record.new_record(record.new_content(*fields[:6]), *fields[6:]) == decode_record(encoded, LIMITS)
    if values:  # built a column at a time, between two other records: the same Record
        other = record.fields_of_checked(decode_record(encoded, LIMITS).encode(), {})
        (built,) = record.records_of_columns(record.columns_of_fields([other, *values, other]), 1, 2)
        assert built == decode_record(encoded, LIMITS) and type(built) is Record and type(built.content) is Content
    if values:
        assert (verifier.next_height, verifier.prev) == (height + 1, placed.link)
    return values


@settings(max_examples=300, deadline=None)
@given(
    contents.map(lambda c: dataclasses.replace(c, ledger="ledger-a")),
    long_names,
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,40}", fullmatch=True),
    u64,
    st.integers(1, UINT_MAX),
    u64,
    long_names,
)
def test_take_values_gives_what_decoding_the_record_gives(
    content: Content, kind: str, author: str, nonce: int, height: int, accepted: int, origin: str
) -> None:
    content = dataclasses.replace(content, kind=kind, author=author)
    _taken_values(content, nonce, height, b"\x07" * 32, accepted, origin)


@pytest.mark.parametrize("ts", [0, 127, 128, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, UINT_MAX])
@pytest.mark.parametrize("kind", ["k", "k" * 31, "k" * 32, "k" * 40])
def test_take_values_reads_each_form_of_ts_and_kind(ts: int, kind: str) -> None:
    content = Content("ledger-a", kind, {"n": 1, "s": "x"}, "a" * 33, "r-1", ts)
    (fields,) = _taken_values(content, 5, 9, b"\x01" * 32, 300, "o" * 32)
    assert (fields[1], fields[5], fields[3], fields[12]) == (kind, ts, "a" * 33, "o" * 32)
