"""Requests and replies of the client protocol (docs/PROTOCOL.md, section 6), as bytes.

Pure: a request's bytes become a :class:`Request` whose arguments are read through typed
accessors, each refusing a missing or wrong-typed argument with a ``bad_request`` error that
names it. Nothing from the wire is used before it has been checked here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

import msgpack

from .canonical import pack, unpack_reason
from .errors import BadRequestError, MessageTooLargeError, VledgerError

PROTOCOL_VERSION = 1
_UINT_MAX = 2**64 - 1
_MAX_ID_LENGTH = 64
_COMMAND = re.compile(r"[a-z][a-z.]{0,31}")

RequestId = int | str | None


def _check_id(value: object) -> RequestId:
    if type(value) is int and 0 <= value <= _UINT_MAX:
        return value
    if type(value) is str and len(value) <= _MAX_ID_LENGTH:
        return value
    raise BadRequestError(f"id must be an integer 0..2**64-1 or a string of at most {_MAX_ID_LENGTH} characters")


@dataclass(frozen=True, slots=True)
class Args:
    """A request's arguments, read only through checking accessors."""

    values: dict[str, Any]

    def _get(self, name: str, default: object) -> object:
        value = self.values.get(name, default)
        if value is _MISSING:
            raise BadRequestError(f"argument {name!r} is missing")
        return value

    def text(self, name: str, *, max_length: int = 256) -> str:
        value = self._get(name, _MISSING)
        if type(value) is not str or not 0 < len(value) <= max_length:
            raise BadRequestError(f"argument {name!r} must be a string of 1..{max_length} characters")
        return value

    def optional_text(self, name: str, *, max_length: int = 256) -> str | None:
        if self.values.get(name) is None:
            return None
        return self.text(name, max_length=max_length)

    def uint(self, name: str, *, default: int | None = None, maximum: int = _UINT_MAX) -> int:
        value = self._get(name, _MISSING if default is None else default)
        if type(value) is not int or not 0 <= value <= maximum:
            raise BadRequestError(f"argument {name!r} must be an integer 0..{maximum}")
        return value

    def binary(self, name: str, *, size: int | None = None, max_size: int | None = None) -> bytes:
        value = self._get(name, _MISSING)
        if type(value) is not bytes:
            raise BadRequestError(f"argument {name!r} must be binary")
        if size is not None and len(value) != size:
            raise BadRequestError(f"argument {name!r} must be {size} bytes")
        if max_size is not None and len(value) > max_size:
            raise BadRequestError(f"argument {name!r} must be at most {max_size} bytes")
        return value

    def binary_list(self, name: str, *, size: int, max_items: int) -> list[bytes]:
        value = self._get(name, _MISSING)
        if type(value) is not list or len(value) > max_items:
            raise BadRequestError(f"argument {name!r} must be a list of at most {max_items} items")
        for item in value:
            if type(item) is not bytes or len(item) != size:
                raise BadRequestError(f"argument {name!r} must hold {size}-byte binary values")
        return value

    def flag(self, name: str) -> bool:
        """A boolean argument that may be left out (then False)."""
        value = self.values.get(name, False)
        if type(value) is not bool:
            raise BadRequestError(f"argument {name!r} must be true or false")
        return value

    def has(self, name: str) -> bool:
        return self.values.get(name) is not None


_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class Request:
    id: RequestId
    cmd: str
    args: Args


def request_id_of(data: bytes) -> RequestId:
    """The id of a request that failed to parse, if it can still be read (for the error reply)."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False)
        return _check_id(value.get("id")) if isinstance(value, dict) else None
    except (VledgerError, ValueError, TypeError, msgpack.UnpackException, AttributeError):
        return None


def parse_request(data: bytes, max_bytes: int) -> Request:
    """Check a request's bytes; raises a RequestError (bad_request or too_large)."""
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
    if not _REQUEST_FIELDS.issuperset(value):
        raise BadRequestError(f"request has unknown fields {sorted(set(value) - _REQUEST_FIELDS)}")
    request_id = _check_id(value.get("id"))
    cmd = value.get("cmd")
    if type(cmd) is not str or (cmd not in _COMMANDS_SEEN and not _is_command(cmd)):
        raise BadRequestError("cmd must be a command name such as 'hello' or 'ledger.list'")
    args = value.get("args", {})
    if type(args) is not dict:
        raise BadRequestError("args must be a map")
    # Through the slots: a frozen dataclass's __init__ costs twice as much, and every request
    # makes these two (node/record.py's new_record says more).
    request: Request = object.__new__(Request)
    arguments: Args = object.__new__(Args)
    _set_args_values(arguments, args)
    _set_request_id(request, request_id)
    _set_request_cmd(request, cmd)
    _set_request_args(request, arguments)
    return request


_REQUEST_FIELDS = frozenset(("id", "cmd", "args"))
_set_args_values = Args.__dict__["values"].__set__
_set_request_id, _set_request_cmd, _set_request_args = (Request.__dict__[f.name].__set__ for f in fields(Request))
# Command names that matched _COMMAND (a client sends few): each is matched once. Bounded, as
# a client may send many names that match and are no command.
_COMMANDS_SEEN: set[str] = set()
_COMMANDS_KEPT = 256


def _is_command(cmd: str) -> bool:
    """Whether ``cmd`` (a str) matches _COMMAND; remembers it if so."""
    if _COMMAND.fullmatch(cmd) is None:
        return False
    if len(_COMMANDS_SEEN) < _COMMANDS_KEPT:
        _COMMANDS_SEEN.add(cmd)
    return True


def encode_request(request_id: RequestId, cmd: str, args: dict[str, Any] | None = None) -> bytes:
    return pack({"id": request_id, "cmd": cmd, "args": args or {}})


def reply_ok(request_id: RequestId, result: object) -> bytes:
    return pack({"id": request_id, "ok": True, "result": result})


def reply_error(request_id: RequestId, error: VledgerError) -> bytes:
    return pack({"id": request_id, "ok": False, "error": error.to_wire()})
