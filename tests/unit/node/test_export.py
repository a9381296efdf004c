"""The export line format: byte-exact encoding, and a precise error for every way a line is wrong."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vledger.config.settings import Limits
from vledger.node.errors import (
    FieldError,
    InvalidEncodingError,
    MalformedRecordError,
    NonCanonicalError,
    PayloadTooLargeError,
    RecordError,
)
from vledger.node.export import StoredRecord, decode_line, encode_line, max_line_bytes
from vledger.node.record import Record
from vledger.node.verify import ChainVerifier

LIMITS = Limits()


@pytest.fixture(scope="module")
def chain(kit: Any) -> list[Record]:
    return kit.chain(3)  # type: ignore[no-any-return]


def line_of(record: Record) -> bytes:
    return encode_line(StoredRecord(record, record.encode()))


def fields_of(record: Record) -> dict[str, Any]:
    return json.loads(line_of(record))  # type: ignore[no-any-return]


def dumps(value: Any) -> bytes:
    return (json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def test_a_line_has_the_specified_bytes(chain: list[Record]) -> None:
    record = chain[1]
    data = record.encode()
    expected = (
        '{"ledger":"' + record.ledger + '","height":1,"hash":"' + record.hash.hex() + '",'
        '"record":"' + base64.b64encode(data).decode() + '"}\n'
    ).encode()
    assert line_of(record) == expected


def test_round_trip_keeps_the_exact_bytes(chain: list[Record]) -> None:
    for number, record in enumerate(chain, start=1):
        stored = decode_line(line_of(record), number, LIMITS)
        assert stored.record == record
        assert stored.data == record.encode()
        assert encode_line(stored) == line_of(record)


def test_the_final_newline_is_optional(chain: list[Record]) -> None:
    assert decode_line(line_of(chain[0]).rstrip(b"\n"), 1, LIMITS).record == chain[0]


def expect(error: type[RecordError], line: bytes, number: int = 7) -> RecordError:
    with pytest.raises(error) as caught:
        decode_line(line, number, LIMITS)
    assert caught.value.message.startswith(f"line {number}: ") or f": line {number}: " in caught.value.message
    return caught.value


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"\xff\xfe\n", InvalidEncodingError),
        (b"{not json}\n", InvalidEncodingError),
        (b"\n", InvalidEncodingError),
        (b'["ledger", 1]\n', FieldError),
        (b'{"ledger":"a","height":NaN,"hash":"00","record":""}\n', InvalidEncodingError),
        (b'{"ledger":"a","height":1}\n', FieldError),
    ],
)
def test_lines_that_are_not_an_object_of_the_four_keys(line: bytes, error: type[RecordError]) -> None:
    found = expect(error, line)
    assert found.ledger is None  # nothing in the line can be trusted to name a ledger


def test_an_extra_key_is_refused(chain: list[Record]) -> None:
    expect(FieldError, dumps({**fields_of(chain[0]), "note": "x"}))


def test_a_repeated_key_is_refused(chain: list[Record]) -> None:
    line = line_of(chain[0]).replace(b'{"ledger":', b'{"ledger":"other","ledger":', 1)
    assert "more than once" in expect(FieldError, line).message


@pytest.mark.parametrize(
    "change",
    [
        {"ledger": 5},
        {"height": "1"},
        {"height": 1.0},
        {"height": True},
        {"height": -1},
        {"hash": None},
        {"hash": "AB" * 32},
        {"hash": "ab" * 31},
        {"record": ["x"]},
    ],
)
def test_fields_of_the_wrong_type_or_form(chain: list[Record], change: dict[str, Any]) -> None:
    expect(FieldError, dumps({**fields_of(chain[1]), **change}))


@pytest.mark.parametrize("text", ["not base64!", "=iKh", "iKhhY2NlcHRlZA", "iKhh\nY2Nl", "iKhhY2NlcHRlZA===="])
def test_record_must_be_strict_base64(chain: list[Record], text: str) -> None:
    expect(InvalidEncodingError, dumps({**fields_of(chain[1]), "record": text}))


def test_record_bytes_that_are_not_a_record(chain: list[Record]) -> None:
    found = expect(MalformedRecordError, dumps({**fields_of(chain[1]), "record": base64.b64encode(b"\x01").decode()}))
    assert (found.ledger, found.height) == (chain[1].ledger, 1)


@pytest.mark.parametrize(
    ("field", "value"),
    [("ledger", "another-ledger"), ("height", 2), ("hash", "00" * 32)],
)
def test_fields_must_agree_with_the_record(chain: list[Record], field: str, value: Any) -> None:
    found = expect(FieldError, dumps({**fields_of(chain[1]), field: value}))
    assert found.ledger is not None and found.height is not None


def test_a_record_of_another_line_is_caught_by_its_fields(chain: list[Record]) -> None:
    expect(FieldError, dumps({**fields_of(chain[1]), "record": fields_of(chain[2])["record"]}))


@pytest.mark.parametrize(
    "rewrite",
    [
        lambda f: json.dumps(f, ensure_ascii=False).encode() + b"\n",  # spaces after separators
        lambda f: dumps(dict(reversed(list(f.items())))),  # keys in another order
        lambda f: dumps(f).replace(b'"height":1', b'"height":1e0'),  # a float, not the integer
        lambda f: dumps(f)[:-1] + b"\r\n",  # a CR LF line ending
    ],
)
def test_only_the_canonical_form_is_accepted(chain: list[Record], rewrite: Any) -> None:
    line = rewrite(fields_of(chain[1]))
    with pytest.raises(MalformedRecordError):
        decode_line(line, 7, LIMITS)


def test_a_non_canonical_spelling_of_valid_fields(chain: list[Record]) -> None:
    found = expect(NonCanonicalError, dumps(fields_of(chain[1])).replace(b'{"ledger":"', b'{"ledger": "'))
    assert found.height == 1


def test_an_overlong_line_is_refused_before_parsing() -> None:
    found = expect(PayloadTooLargeError, b"x" * (max_line_bytes(LIMITS) + 1))
    assert found.ledger is None


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_changed_byte_is_detected(kit: Any, data: st.DataObject) -> None:
    """decode_line and a chain verifier together refuse a line with any single byte changed."""
    genesis = kit.chain(1)[0]
    line = bytearray(line_of(genesis))
    index = data.draw(st.integers(0, len(line) - 2), label="index")  # not the final newline
    value = data.draw(st.integers(0, 255).filter(lambda b: b != line[index]), label="value")
    line[index] = value
    with pytest.raises(RecordError):
        stored = decode_line(bytes(line), 1, LIMITS)
        ChainVerifier(stored.record.ledger, LIMITS).feed(stored.record)
