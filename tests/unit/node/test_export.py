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
    LineError,
    MalformedRecordError,
    PayloadTooLargeError,
    RecordError,
    WrongLedgerError,
)
from vledger.node.export import StoredRecord, decode_line, encode_line, line_ledger, max_line_bytes
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
    "line",
    [
        b"\xff\xfe\n",
        b"{not json}\n",
        b"\n",
        b'["ledger", 1]\n',
        b'{"ledger":"a","height":NaN,"hash":"00","record":""}\n',
        b'{"ledger":"a","height":1}\n',
        b'{"height":1,"ledger":"a","hash":"00","record":""}\n',
    ],
)
def test_lines_that_are_not_an_object_of_the_four_keys(line: bytes) -> None:
    expect(LineError, line)


def test_an_extra_key_is_refused(chain: list[Record]) -> None:
    found = expect(LineError, dumps({**fields_of(chain[0]), "note": "x"}))
    assert found.ledger == chain[0].ledger  # the line's first bytes still name its ledger


def test_a_repeated_key_is_refused(chain: list[Record]) -> None:
    expect(LineError, line_of(chain[0]).replace(b'{"ledger":', b'{"ledger":"other","ledger":', 1))
    expect(LineError, line_of(chain[0])[:-2] + b',"height":0}\n')


@pytest.mark.parametrize(
    "change",
    [
        {"ledger": 5},
        {"height": "1"},
        {"height": 1.0},
        {"height": True},
        {"height": -1},
        {"height": 2**64},
        {"hash": None},
        {"hash": "AB" * 32},
        {"hash": "ab" * 31},
        {"record": ["x"]},
    ],
)
def test_fields_of_the_wrong_type_or_form(chain: list[Record], change: dict[str, Any]) -> None:
    expect(LineError, dumps({**fields_of(chain[1]), **change}))


@pytest.mark.parametrize("text", ["not base64!", "=iKh", "iKhhY2NlcHRlZA", "iKhh\nY2Nl", "iKhhY2NlcHRlZA===="])
def test_record_must_be_strict_base64(chain: list[Record], text: str) -> None:
    expect(LineError, dumps({**fields_of(chain[1]), "record": text}))


def test_base64_with_unused_bits_set_is_refused(chain: list[Record]) -> None:
    """A lenient decoder reads the same bytes, but the line has one spelling only."""
    fields = next(f for f in map(fields_of, chain) if f["record"].endswith("="))
    text = fields["record"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    pad = len(text) - len(text.rstrip("="))
    last = len(text) - pad - 1
    changed = text[:last] + alphabet[alphabet.index(text[last]) | 1] + text[last + 1 :]
    assert base64.b64decode(changed) == base64.b64decode(text)
    assert "unused bits" in expect(LineError, dumps({**fields, "record": changed})).message


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b'{"ledger":"election\\ud800","height":0,"hash":"","record":""}\n', id="lone-surrogate"),
        pytest.param(b'{"ledger":"election","height":0,"x":' + b"[" * 40_000 + b"]" * 40_000 + b"}\n", id="deep-40000"),
        pytest.param(b'{"ledger":"election","height":0,"x":' + b"[" * 1_024 + b"]" * 1_024 + b"}\n", id="deep-1024"),
        pytest.param(b'{"ledger":"election","height":' + b"9" * 5_000 + b"}\n", id="huge-integer"),
        pytest.param(b'{"ledger":"election","height":1e999,"hash":"","record":""}\n', id="huge-float"),
    ],
)
def test_hostile_lines_get_a_code_and_a_message(line: bytes) -> None:
    """No JSON parser ever sees a line: nothing in it can raise past the reader."""
    found = expect(LineError, line)
    assert found.reason.removeprefix("line 7: ")


def test_record_bytes_that_are_not_a_record(chain: list[Record]) -> None:
    found = expect(MalformedRecordError, dumps({**fields_of(chain[1]), "record": base64.b64encode(b"\x01").decode()}))
    # The record's height was never read: the reader names the position, not the line's claim.
    assert (found.ledger, found.height) == (chain[1].ledger, None)


@pytest.mark.parametrize(
    ("field", "value"),
    [("height", 2), ("hash", "00" * 32)],
)
def test_fields_must_agree_with_the_record(chain: list[Record], field: str, value: Any) -> None:
    found = expect(FieldError, dumps({**fields_of(chain[1]), field: value}))
    assert found.height == 1  # the record's height, whatever the line says


def test_a_record_of_another_line_is_caught_by_its_fields(chain: list[Record]) -> None:
    expect(FieldError, dumps({**fields_of(chain[1]), "record": fields_of(chain[2])["record"]}))


@pytest.mark.parametrize(
    "rewrite",
    [
        lambda f: json.dumps(f, ensure_ascii=False).encode() + b"\n",  # spaces after separators
        lambda f: dumps(dict(reversed(list(f.items())))),  # keys in another order
        lambda f: dumps(f).replace(b'"height":1', b'"height":1e0'),  # a float, not the integer
        lambda f: dumps(f)[:-1] + b"\r\n",  # a CR LF line ending
        lambda f: dumps(f)[:-1] + b" \n",  # a trailing space
        lambda f: dumps(f).replace(b'"height":1', b'"height":01'),  # a leading zero
    ],
)
def test_only_the_canonical_form_is_accepted(chain: list[Record], rewrite: Any) -> None:
    """Other spellings of the same values are bad_line, never non_canonical (kept for msgpack)."""
    expect(LineError, rewrite(fields_of(chain[1])))


def test_a_non_canonical_spelling_of_valid_fields(chain: list[Record]) -> None:
    found = expect(LineError, dumps(fields_of(chain[1])).replace(b'"height":1', b'"height": 1'))
    assert found.ledger == chain[1].ledger and found.height is None
    escaped = (
        dumps(fields_of(chain[1])).replace(b'"record":"', b'"record":"\\u0069', 1).replace(b'"\\u0069i', b'"\\u0069')
    )
    expect(LineError, escaped)


def test_an_overlong_line_is_refused_before_parsing(chain: list[Record]) -> None:
    found = expect(PayloadTooLargeError, b"x" * (max_line_bytes(LIMITS) + 1))
    assert found.ledger is None
    named = line_of(chain[1])[:-3] + b"A" * max_line_bytes(LIMITS) + b'"}\n'
    assert expect(PayloadTooLargeError, named).ledger == chain[1].ledger


def test_the_line_limit_is_the_longest_line_of_a_record() -> None:
    """PROTOCOL.md section 5: 109,421 bytes, exactly the line of the largest record."""
    assert max_line_bytes(LIMITS) == 109_421
    longest = dumps(
        {"ledger": "x" * 64, "height": 2**64 - 1, "hash": "0" * 64, "record": base64.b64encode(bytes(81_920)).decode()}
    )
    assert len(longest) - 1 == max_line_bytes(LIMITS)


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
        ChainVerifier(line_ledger(bytes(line)) or "", LIMITS).feed(stored.record)


def test_a_record_of_another_ledger_is_left_to_the_chain_verifier(chain: list[Record]) -> None:
    """The line's ledger is the one being verified: another record's ledger is wrong_ledger."""
    stored = decode_line(dumps({**fields_of(chain[1]), "ledger": "another-ledger"}), 7, LIMITS)
    verifier = ChainVerifier("another-ledger", LIMITS)
    with pytest.raises(WrongLedgerError):
        verifier.feed(stored.record)
