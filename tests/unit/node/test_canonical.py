"""Canonical msgpack (docs/PROTOCOL.md, section 1): one value, one byte string."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vledger.node import canonical
from vledger.node.errors import InvalidEncodingError, MalformedRecordError, NonCanonicalError, VledgerError

ints = st.integers(min_value=canonical.INT_MIN, max_value=canonical.INT_MAX)
# st.text() never draws surrogates, so every string has a UTF-8 form.
texts = st.text(max_size=12) | st.sampled_from(["Zoë", "🗳", "é", "日本語", "\uffff", "\U0001f600", ""])
scalars = st.none() | st.booleans() | ints | texts | st.binary(max_size=12)


def values(depth: int = 4) -> st.SearchStrategy[Any]:
    """Canonical values nested at most ``depth`` containers deep (well inside the limit)."""
    if depth == 0:
        return scalars
    children = values(depth - 1)
    return st.one_of(
        scalars,
        st.lists(children, max_size=3),
        st.dictionaries(texts, children, max_size=3),
    )


def tagged(value: Any) -> Any:
    """A comparable form that keeps types apart (True != 1) and map key order."""
    if isinstance(value, dict):
        return ("map", [(k, tagged(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return ("array", [tagged(v) for v in value])
    return (type(value).__name__, value)


def sorted_tagged(value: Any) -> Any:
    """``tagged`` of the value as canonical encoding must return it: every map in key order."""
    if isinstance(value, dict):
        return ("map", [(k, sorted_tagged(value[k])) for k in sorted(value, key=lambda k: k.encode())])
    if isinstance(value, (list, tuple)):
        return ("array", [sorted_tagged(v) for v in value])
    return (type(value).__name__, value)


def nest(levels: int, inner: Any) -> Any:
    for _ in range(levels):
        inner = [inner]
    return inner


# --- round trip -----------------------------------------------------------------------


@settings(max_examples=300)
@given(values())
def test_round_trip_of_every_allowed_value(value: Any) -> None:
    data = canonical.encode(value)
    decoded = canonical.decode(data)
    assert tagged(decoded) == sorted_tagged(value)
    assert canonical.encode(decoded) == data


@settings(max_examples=200)
@given(st.dictionaries(texts, st.none(), max_size=8))
def test_encode_sorts_map_keys_by_their_utf8_bytes(value: dict[str, None]) -> None:
    decoded = canonical.decode(canonical.encode(value))
    assert list(decoded) == sorted(value, key=lambda k: k.encode())


def test_key_order_is_code_point_order_not_utf16_order() -> None:
    # UTF-16 would put the emoji (a surrogate pair, 0xD83D...) before U+FFFF; UTF-8 bytes do not.
    value = {"\U0001f600": 1, "\uffff": 2, "é": 3, "z": 4, "aa": 5, "a": 6, "B": 7}
    data = canonical.encode(value)
    assert list(canonical.decode(data)) == ["B", "a", "aa", "z", "é", "\uffff", "\U0001f600"]
    assert data.startswith(b"\x87\xa1B\x07\xa1a\x06\xa2aa\x05")


def test_encode_gives_the_shortest_forms() -> None:
    assert canonical.encode({"b": 1, "a": [None, True]}) == b"\x82\xa1a\x92\xc0\xc3\xa1b\x01"
    assert canonical.encode(127) == b"\x7f"
    assert canonical.encode(128) == b"\xcc\x80"
    assert canonical.encode(-32) == b"\xe0"
    assert canonical.encode(-33) == b"\xd0\xdf"
    assert canonical.encode(b"\x00") == b"\xc4\x01\x00"  # binary, never the string family
    assert canonical.encode("Zoë") == b"\xa4Zo\xc3\xab"


def test_tuples_encode_as_arrays() -> None:
    assert canonical.encode((1, "x")) == canonical.encode([1, "x"])


@pytest.mark.parametrize("value", [canonical.INT_MIN, canonical.INT_MAX, -1, 0, 2**32, -(2**31) - 1])
def test_integer_range_limits_round_trip(value: int) -> None:
    assert canonical.decode(canonical.encode(value)) == value


# --- what encode refuses --------------------------------------------------------------


@pytest.mark.parametrize("value", [1.5, 0.0, float("nan"), {"x": 2.0}, [1, [float("inf")]]])
def test_encode_refuses_floats(value: Any) -> None:
    with pytest.raises(NonCanonicalError, match="float"):
        canonical.encode(value)


@pytest.mark.parametrize("value", [canonical.INT_MIN - 1, canonical.INT_MAX + 1, {"x": [2**70]}])
def test_encode_refuses_integers_out_of_range(value: Any) -> None:
    with pytest.raises(NonCanonicalError, match="64-bit range"):
        canonical.encode(value)


@pytest.mark.parametrize("key", [1, b"k", None, True, (1,)])
def test_encode_refuses_non_string_map_keys(key: Any) -> None:
    with pytest.raises(NonCanonicalError, match="not a string"):
        canonical.encode({"ok": 1, "nested": {key: 1}})


@pytest.mark.parametrize("value", [{1, 2}, object(), bytearray(b"x"), 1j])
def test_encode_refuses_other_types(value: Any) -> None:
    with pytest.raises(NonCanonicalError, match="not allowed"):
        canonical.encode(value)


@pytest.mark.parametrize("value", ["\ud800", ["ok", "a\udc00b"], {"\udfff": 1}, {"k": "\ud83d"}])
def test_encode_refuses_lone_surrogates(value: Any) -> None:
    with pytest.raises(InvalidEncodingError) as info:
        canonical.encode(value)
    assert info.value.code == "bad_encoding"


def test_encode_refuses_too_deep_nesting() -> None:
    with pytest.raises(NonCanonicalError, match="deeper"):
        canonical.encode(nest(40, 1))
    with pytest.raises(NonCanonicalError, match="deeper"):
        canonical.encode(nest(3, 1), max_depth=2)
    assert canonical.encode(nest(1, 1), max_depth=2) == b"\x91\x01"


# --- what decode refuses --------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x82\xa1b\x01\xa1a\x02", id="unsorted-keys"),
        pytest.param(b"\x81\xa1x\x82\xa1c\x01\xa2bb\x02", id="unsorted-nested-keys"),
        pytest.param(b"\x82\xa2\xc3\xa9\x01\xa1z\x02", id="unsorted-non-ascii-keys"),
        pytest.param(b"\x82\xa1a\x01\xa1a\x02", id="duplicate-keys"),
        pytest.param(b"\x82\xa1a\x01\xa1a\x01", id="duplicate-identical-entries"),
        pytest.param(b"\xcc\x01", id="uint8-for-fixint"),
        pytest.param(b"\xcd\x00\x80", id="uint16-for-uint8"),
        pytest.param(b"\xcf" + (5).to_bytes(8, "big"), id="uint64-for-fixint"),
        pytest.param(b"\xd0\xff", id="int8-for-negative-fixint"),
        pytest.param(b"\xd0\x05", id="int8-for-positive-fixint"),
        pytest.param(b"\xd1\xff\x80", id="int16-for-int8"),
        pytest.param(b"\xd9\x01a", id="str8-for-fixstr"),
        pytest.param(b"\xda\x00\x01a", id="str16-for-fixstr"),
        pytest.param(b"\xc5\x00\x01x", id="bin16-for-bin8"),
        pytest.param(b"\xdc\x00\x01\x01", id="array16-for-fixarray"),
        pytest.param(b"\xde\x00\x00", id="map16-for-fixmap"),
        pytest.param(b"\x01\x02", id="trailing-byte"),
        pytest.param(b"\x80\xc0", id="trailing-nil"),
        pytest.param(b"\xca" + struct.pack(">f", 1.5), id="float32"),
        pytest.param(b"\xcb" + struct.pack(">d", 1.0), id="float64"),
        pytest.param(b"\x81\xa1a\x91\xcb" + struct.pack(">d", 2.0), id="nested-float64"),
        pytest.param(msgpack.packb(msgpack.Timestamp(1, 0)), id="timestamp"),
        pytest.param(msgpack.packb({"t": [msgpack.Timestamp(2**40, 5)]}), id="nested-timestamp"),
    ],
)
def test_decode_refuses_non_canonical_bytes(data: bytes) -> None:
    with pytest.raises(NonCanonicalError) as info:
        canonical.decode(data)
    assert info.value.code == "non_canonical"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xa2\xc3\x28", id="bad-continuation"),
        pytest.param(b"\xa2\xc0\xaf", id="overlong"),
        pytest.param(b"\xa3\xed\xa0\x80", id="encoded-surrogate"),
        pytest.param(b"\x81\xa1\xff\x01", id="invalid-key"),
        pytest.param(b"\x91\xa4\xf4\x90\x80\x80", id="beyond-u10ffff"),
    ],
)
def test_decode_refuses_invalid_utf8(data: bytes) -> None:
    with pytest.raises(InvalidEncodingError, match="UTF-8"):
        canonical.decode(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xd4\x05\x00", id="fixext1"),
        pytest.param(b"\xc7\x02\x7f\x00\x00", id="ext8"),
        pytest.param(b"\x81\xa1e\xd5\x01\x00\x00", id="nested-fixext2"),
        pytest.param(b"\x81\x01\x01", id="integer-key"),
        pytest.param(b"\x81\x91\x01\x01", id="array-key"),
    ],
)
def test_decode_refuses_valid_msgpack_outside_the_canonical_types(data: bytes) -> None:
    """Extension types and non-string keys are valid msgpack, so they are non_canonical."""
    with pytest.raises(NonCanonicalError) as info:
        canonical.decode(data)
    assert info.value.code == "non_canonical"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(b"\x92\x01", id="truncated-array"),
        pytest.param(b"\xa5ab", id="truncated-str"),
        pytest.param(b"\xd4\xff\x00", id="malformed-timestamp"),
        pytest.param(b"\x92" + b"\x91" * 100_000 + b"\xc0\xc1", id="invalid-after-nesting-past-the-parser-stack"),
        # Invalid bytes win over a canonical-form fault met before them (PROTOCOL.md, section 1).
        pytest.param(b"\x92\xd4\x01\x00\xa1\xff", id="invalid-utf8-after-an-extension"),
        pytest.param(b"\x92\x81\x91\x00\x00\xa1\xff", id="invalid-utf8-after-an-array-key"),
        pytest.param(b"\x92\xd4\x01\x00\xd4\xff\x00", id="malformed-timestamp-after-an-extension"),
    ],
)
def test_decode_refuses_invalid_msgpack(data: bytes) -> None:
    with pytest.raises(InvalidEncodingError) as info:
        canonical.decode(data)
    assert info.value.message  # a sentence, never an empty message


@pytest.mark.parametrize("levels", [1_100, 81_000])
def test_nesting_past_the_parser_stack_is_only_too_deep(levels: int) -> None:
    """Valid msgpack nested deeper than msgpack-c's stack of 1,024 is non_canonical (rule 6),
    with a message, whatever the depth: no RecursionError, no empty bad_encoding."""
    with pytest.raises(NonCanonicalError, match="deeper than 16 levels"):
        canonical.decode(b"\x91" * levels + b"\xc0")
    with pytest.raises(NonCanonicalError):
        canonical.decode(b"\x91" * levels + b"\xd4\x05\x00")


def test_decode_refuses_too_deep_nesting() -> None:
    with pytest.raises(NonCanonicalError, match="deeper"):
        canonical.decode(msgpack.packb(nest(30, 1)))
    with pytest.raises(NonCanonicalError, match="deeper"):
        canonical.decode(msgpack.packb({"a": nest(5, [])}), max_depth=3)


def test_the_nesting_limit_is_the_protocols() -> None:
    """PROTOCOL.md section 1 rule 6: "a value inside 16 containers is refused".

    tests/vectors/outsider_verify.py (written from the spec) refuses it; our codec does not.
    BUG (node/canonical.py): ``_normalize`` refuses only a value inside 17 containers
    (``depth > max_depth``), and ``_check_decoded`` never looks at a scalar's depth, so decode
    accepts a value inside 17. Our verifier and an outsider's would disagree on such a record.
    """
    assert canonical.decode(canonical.encode(nest(15, 1))) == nest(15, 1)
    assert canonical.decode(canonical.encode(nest(15, []))) == nest(15, [])  # the [] is inside 15
    with pytest.raises(NonCanonicalError):
        canonical.encode(nest(16, 1))
    with pytest.raises(NonCanonicalError):
        canonical.decode(msgpack.packb(nest(16, 1)))


@pytest.mark.parametrize("levels", range(13, 20))
def test_encode_and_decode_agree_on_the_nesting_limit(levels: int) -> None:
    """A value one side accepts the other must accept too, or a stored record cannot be re-made.

    BUG (node/canonical.py): ``_normalize`` counts a scalar as a level, ``_check_decoded`` does
    not, so 17 arrays around an integer decode but do not encode.
    """
    value = nest(levels, 1)
    data = msgpack.packb(value)
    try:
        canonical.encode(value)
        encodes = True
    except NonCanonicalError:
        encodes = False
    try:
        canonical.decode(data)
        decodes = True
    except NonCanonicalError:
        decodes = False
    assert encodes == decodes


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x81\xc4\x01a\x01", id="binary-key"),
        pytest.param(b"\x82\xa1a\x01\xc4\x01b\x02", id="string-and-binary-keys"),
        pytest.param(b"\x81\xa1m\x82\xc4\x01a\x01\xa1b\x02", id="nested-mixed-keys"),
    ],
)
def test_decode_refuses_binary_map_keys(data: bytes) -> None:
    """Map keys are strings (rule 5); encode refuses binary keys, so decode must too (msgpack's
    ``strict_map_key`` lets bytes keys through, and mixed str and bytes keys cannot be sorted)."""
    with pytest.raises(NonCanonicalError):
        canonical.decode(data)


# --- properties -------------------------------------------------------------------------


@settings(max_examples=300)
@given(st.binary(max_size=48))
def test_decode_of_arbitrary_bytes_returns_or_raises_our_error(data: bytes) -> None:
    try:
        value = canonical.decode(data)
    except VledgerError as e:
        assert isinstance(e, MalformedRecordError)
        assert e.code in {"bad_encoding", "non_canonical"}
    else:
        assert canonical.encode(value) == data


@settings(max_examples=200)
@given(values(), st.data())
def test_a_flipped_bit_gives_an_error_or_another_canonical_value(value: Any, data: st.DataObject) -> None:
    encoded = canonical.encode(value)
    bit = data.draw(st.integers(0, len(encoded) * 8 - 1))
    mutated = bytearray(encoded)
    mutated[bit // 8] ^= 1 << (bit % 8)
    try:
        decoded = canonical.decode(bytes(mutated))
    except MalformedRecordError:
        return
    assert canonical.encode(decoded) == bytes(mutated) != encoded


@given(values(), st.sampled_from(["\udc80", 1.5j, object()]))
def test_pack_gives_packbs_bytes_also_after_a_refused_value(value: Any, unpackable: Any) -> None:
    # pack() reuses one Packer per thread: a value it refused half-way must leave nothing behind.
    with pytest.raises((TypeError, UnicodeEncodeError)):
        canonical.pack([value, unpackable])
    assert canonical.pack(value) == msgpack.packb(value, use_bin_type=True)


def test_the_reserved_byte_s_refusal_names_it() -> None:
    # msgpack's FormatError has no message: the refusal read "not valid msgpack: " and stopped.
    with pytest.raises(InvalidEncodingError, match="not valid msgpack: the reserved byte 0xc1"):
        canonical.unpack(b"\x92\x01\xc1")
