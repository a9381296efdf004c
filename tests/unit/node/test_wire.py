"""parse_request: what it accepts and refuses, held against the checks written out one by one.

parse_request builds its Request and Args through their slots and remembers command names
that matched; the oracle here is the straightforward version (the code before that), and
both must give the same Request or the same error and message, for valid requests and for
hostile ones (unknown fields, ids and commands of every type, args that are no map).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vledger.node import wire
from vledger.node.canonical import unpack_reason
from vledger.node.errors import BadRequestError, MessageTooLargeError, VledgerError
from vledger.node.wire import Args, Request, encode_request, parse_request

MAX_BYTES = 4096
COMMAND = re.compile(r"[a-z][a-z.]{0,31}")


def oracle(data: bytes, max_bytes: int) -> Request:
    if len(data) > max_bytes:
        raise MessageTooLargeError(f"request is {len(data)} bytes, over the limit of {max_bytes}")
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, timestamp=0)
    except UnicodeDecodeError as e:
        raise BadRequestError(f"request holds invalid UTF-8: {e.reason}") from e
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise BadRequestError(f"request is not valid msgpack: {unpack_reason(e)}") from e
    if type(value) is not dict:
        raise BadRequestError("request must be a msgpack map")
    unknown = set(value) - {"id", "cmd", "args"}
    if unknown:
        raise BadRequestError(f"request has unknown fields {sorted(unknown)}")
    request_id = value.get("id")
    if not (
        (type(request_id) is int and 0 <= request_id <= 2**64 - 1)
        or (type(request_id) is str and len(request_id) <= 64)
    ):
        raise BadRequestError("id must be an integer 0..2**64-1 or a string of at most 64 characters")
    cmd = value.get("cmd")
    if type(cmd) is not str or not COMMAND.fullmatch(cmd):
        raise BadRequestError("cmd must be a command name such as 'hello' or 'ledger.list'")
    args = value.get("args", {})
    if type(args) is not dict:
        raise BadRequestError("args must be a map")
    return Request(request_id, cmd, Args(args))


def outcome(data: bytes) -> tuple[Any, ...]:
    try:
        return ("accepted", parse_request(data, MAX_BYTES))
    except VledgerError as e:
        return (type(e), e.code, str(e))


def oracle_outcome(data: bytes) -> tuple[Any, ...]:
    try:
        return ("accepted", oracle(data, MAX_BYTES))
    except VledgerError as e:
        return (type(e), e.code, str(e))


scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=40) | st.binary(max_size=8)
commands = st.sampled_from(["put", "hello", "ledger.list", "Put", "put!", "", "p" * 32, "p" * 33, "x.y"]) | st.text(
    max_size=34
)
requests = st.dictionaries(
    st.sampled_from(["id", "cmd", "args", "extra", "ID"]),
    scalars | commands | st.dictionaries(st.text(max_size=5), scalars, max_size=3) | st.lists(scalars, max_size=2),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(requests)
def test_a_request_map_gets_the_oracle_s_request_or_error(value: dict[str, Any]) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    # Twice: the second time the command name may be remembered.
    assert outcome(data) == oracle_outcome(data)
    assert outcome(data) == oracle_outcome(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_get_the_oracle_s_request_or_error(data: bytes) -> None:
    assert outcome(data) == oracle_outcome(data)


def test_a_put_parses_to_the_request_the_constructors_make() -> None:
    data = encode_request(7, "put", {"content": b"\x80", "nonce": 3})
    parsed = parse_request(data, MAX_BYTES)
    assert parsed == Request(7, "put", Args({"content": b"\x80", "nonce": 3}))
    assert type(parsed) is Request and type(parsed.args) is Args
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.cmd = "get"  # type: ignore[misc]


def test_remembered_command_names_are_bounded_and_a_bad_one_is_never_remembered() -> None:
    wire._COMMANDS_SEEN.clear()
    with pytest.raises(BadRequestError):
        parse_request(encode_request(1, "Bad"), MAX_BYTES)
    assert "Bad" not in wire._COMMANDS_SEEN
    for i in range(wire._COMMANDS_KEPT + 10):
        name = "c" + "".join(chr(ord("a") + int(d)) for d in str(i))
        assert parse_request(encode_request(1, name), MAX_BYTES).cmd == name
    assert len(wire._COMMANDS_SEEN) == wire._COMMANDS_KEPT


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"\xc1", "reserved byte 0xc1"), (b"\x91" * 5000 + b"\xc0", "nested deeper"), (b"\x81\xa2id", "incomplete input")],
)
def test_an_unreadable_request_s_refusal_says_why(data: bytes, reason: str) -> None:
    # msgpack raises some of its errors with no message: the reply named no reason at all.
    with pytest.raises(BadRequestError) as refused:
        parse_request(data, len(data))
    assert str(refused.value).startswith("request is not valid msgpack: ") and reason in str(refused.value)
