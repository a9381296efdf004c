"""Canonical msgpack: one value, one byte string, in any language.

The rules (docs/PROTOCOL.md, "Canonical encoding"): nil, booleans, integers in
[-2**63, 2**64 - 1], UTF-8 strings, binary, arrays and maps whose keys are strings; every
map's keys sorted by their UTF-8 bytes; every item in its shortest msgpack form; no floats,
no extension types. Decoding checks the rules by encoding again and comparing bytes, which
also rejects duplicate map keys, non-shortest forms and trailing bytes.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from typing import Any

import msgpack

from .errors import InvalidEncodingError, NonCanonicalError

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

# A canonical value: None | bool | int | str | bytes | list[Value] | dict[str, Value].
Value = Any


def _normalize(value: Value, depth: int, max_depth: int) -> Value:
    """Check types and return the value with every map rebuilt in sorted key order."""
    if depth >= max_depth:
        raise NonCanonicalError(f"nested deeper than {max_depth} levels")
    if value is None or isinstance(value, (bool, str, bytes)):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise NonCanonicalError(f"integer {value} is out of the 64-bit range")
        return value
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise NonCanonicalError(f"map key {key!r} is not a string")
        return {k: _normalize(value[k], depth + 1, max_depth) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_normalize(v, depth + 1, max_depth) for v in value]
    if isinstance(value, float):
        raise NonCanonicalError(f"float {value!r} is not allowed (money is an integer of minor units)")
    raise NonCanonicalError(f"type {type(value).__name__} is not allowed")


def encode(value: Value, max_depth: int = 16) -> bytes:
    """The canonical bytes of ``value``; raises NonCanonicalError for a value with no encoding."""
    try:
        return pack(_normalize(value, 0, max_depth))
    except UnicodeEncodeError as e:  # a lone surrogate in a str has no UTF-8 form
        raise InvalidEncodingError(f"string is not valid Unicode: {e.reason}") from e


# Exact types: unpack yields no subclasses, and an exact test is what excludes a Timestamp.
_SCALARS = frozenset((type(None), bool, int, str, bytes))
_STR = frozenset((str,))


def flaw(value: Value, depth: int, max_depth: int) -> str | None:
    """What :func:`unpack` may give but our encoding refuses (None if nothing): floats,
    timestamps, binary map keys, unsorted maps, values nested deeper than ``max_depth`` levels.

    ``depth`` counts the containers around ``value``: 0 for a whole decoded value, whose
    items are at 1, and so on; a value at ``max_depth`` is one level too deep. Re-encoding
    (see :func:`check`) then finds what is left: longer forms than needed, repeated map keys.
    """
    if depth >= max_depth:
        return f"nested deeper than {max_depth} levels"
    kind = type(value)
    if kind is dict:
        if not _STR.issuperset(map(type, value)):
            key = next(k for k in value if type(k) is not str)
            return f"map key {key.value if type(key) is ContainerKey else key!r} is not a string"
        keys = list(value)
        if keys != sorted(keys):
            return "map keys are not in sorted order"
        items: Any = value.values()
    elif kind is list:
        items = value
    elif kind is float:
        return f"float {value!r} is not allowed (money is an integer of minor units)"
    elif kind in _SCALARS:
        return None
    elif kind is Ext or kind is msgpack.Timestamp:
        return f"msgpack extension type {getattr(value, 'code', -1)} is not allowed"
    elif kind is ContainerKey:
        return f"map key {value.value!r} is not a string"
    else:
        return f"type {kind.__name__} is not allowed"
    if value and depth + 1 >= max_depth:  # its items, scalars included, would sit too deep
        return f"nested deeper than {max_depth} levels"
    if _SCALARS.issuperset(map(type, items)):  # the common case, tested in C
        return None
    for item in items:
        if type(item) not in _SCALARS:
            found = flaw(item, depth + 1, max_depth)
            if found is not None:
                return found
    return None


def unpack(data: bytes) -> Value:
    """Decode msgpack from outside, mapping every failure to one of our errors.

    Checks nothing about canonical form (use :func:`decode` for that), but may raise
    NonCanonicalError for an extension type or bytes after the value. Whatever
    the bytes, the code is the protocol's (docs/PROTOCOL.md, section 1): InvalidEncodingError
    when the first value cannot be decoded, wherever that fault lies, even after a
    canonical-form fault; values nested deeper than msgpack's own stack still decode.
    """
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            # Keys of any scalar type come through so that flaw() refuses them as
            # non-canonical, like every other valid msgpack that breaks our rules.
            strict_map_key=False,
            use_list=True,
            ext_hook=refuse_ext,
            # Timestamps (extension -1) bypass ext_hook; they come back as Timestamp
            # objects, which flaw() then refuses.
            timestamp=0,
        )
    except (NonCanonicalError, TypeError, msgpack.StackError) as e:
        # An extension type, a container as a key (unhashable here) or nesting past the C
        # decoder's stack: the fast decoder stopped before the end, where invalid bytes
        # may still lie, and bad_encoding wins over non_canonical. The slow decoder reads on.
        value, end, _ = walk(data)
        if end != len(data):
            raise NonCanonicalError("trailing bytes after the value") from e
        return value
    except UnicodeDecodeError as e:
        raise InvalidEncodingError(f"string is not valid UTF-8: {e.reason}") from e
    except msgpack.ExtraData as e:
        raise NonCanonicalError("trailing bytes after the value") from e
    except (ValueError, msgpack.UnpackException) as e:
        raise InvalidEncodingError(f"not valid msgpack: {unpack_reason(e)}") from e


# msgpack raises these with an empty message; an exception object is true even then.
_SILENT_ERRORS: dict[type[Exception], str] = {
    msgpack.FormatError: "the reserved byte 0xc1",
    msgpack.StackError: "values nested deeper than the decoder's stack",
}


def unpack_reason(error: Exception) -> str:
    """Why msgpack refused some bytes, as a phrase: its message, or one for the errors it raises without."""
    return str(error) or _SILENT_ERRORS.get(type(error), type(error).__name__)


@dataclass(frozen=True, slots=True)
class Ext:
    """An extension value (a timestamp included) as :func:`walk` decodes it: never canonical."""

    code: int
    data: bytes


@dataclass(frozen=True, eq=False, slots=True)
class ContainerKey:
    """An array or map used as a map key (valid msgpack, never canonical), as :func:`walk` keeps it."""

    value: Any


def structure_fault(data: bytes) -> str | None:
    """The first fault of step 1.2 of the record checks in ``data``'s first value, in byte
    order: an extension type, a map key that is not a string, a repeated map key, at any
    depth (None if none). Raises InvalidEncodingError when the value cannot be decoded."""
    return walk(data)[2]


_FIXED = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xC7: 1, 0xC8: 2, 0xC9: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}
_NUMBERS = {
    0xCA: ">f", 0xCB: ">d", 0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
    0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q",
}  # fmt: skip


def walk(data: bytes) -> tuple[Value, int, str | None]:
    """Decode the first msgpack value of ``data`` without recursion, whatever its depth.

    Returns the value (maps keep a repeated key's first place and last value, as msgpack
    does; extensions are :class:`Ext`, container keys :class:`ContainerKey`), the offset
    just after it, and the first extension, non-string key or repeated key met (or None).
    Raises InvalidEncodingError for what is not msgpack: truncated, the byte 0xc1, a string
    that is not UTF-8, a malformed timestamp. The slow path, for input msgpack-c refuses.
    """
    pos, size = 0, len(data)
    fault: str | None = None
    # Each open container: [items left, value, is a map, key waiting for its value or _NO_KEY].
    stack: list[list[Any]] = []

    def take(count: int) -> bytes:
        nonlocal pos
        if count > size - pos:
            raise InvalidEncodingError("not valid msgpack: the data ends inside a value")
        pos += count
        return data[pos - count : pos]

    while True:
        marker = take(1)[0]
        value: Any = None
        opened: list[Any] | None = None
        if marker <= 0x7F:
            value = marker
        elif marker >= 0xE0:
            value = marker - 0x100
        elif marker <= 0x8F:
            opened = [2 * (marker & 0x0F), {}, True, _NO_KEY]
        elif marker <= 0x9F:
            opened = [marker & 0x0F, [], False, _NO_KEY]
        elif marker <= 0xBF or marker in (0xD9, 0xDA, 0xDB):
            length = marker & 0x1F if marker <= 0xBF else int.from_bytes(take(_FIXED[marker]), "big")
            try:
                value = take(length).decode("utf-8")
            except UnicodeDecodeError as e:
                raise InvalidEncodingError(f"string is not valid UTF-8: {e.reason}") from e
        elif marker in (0xC0, 0xC2, 0xC3):
            value = {0xC0: None, 0xC2: False, 0xC3: True}[marker]
        elif marker == 0xC1:
            raise InvalidEncodingError("not valid msgpack: the reserved byte 0xc1")
        elif marker in (0xC4, 0xC5, 0xC6):
            value = take(int.from_bytes(take(_FIXED[marker]), "big"))
        elif marker in (0xC7, 0xC8, 0xC9) or 0xD4 <= marker <= 0xD8:
            length = 1 << (marker - 0xD4) if marker >= 0xD4 else int.from_bytes(take(_FIXED[marker]), "big")
            code = int.from_bytes(take(1), "big", signed=True)
            value = Ext(code, take(length))
            if code == -1 and not _is_timestamp(value.data):
                raise InvalidEncodingError(f"not valid msgpack: a malformed timestamp ({length} bytes)")
            fault = fault or f"msgpack extension type {code} is not allowed"
        elif marker in _NUMBERS:
            fmt = _NUMBERS[marker]
            value = struct.unpack(fmt, take(struct.calcsize(fmt)))[0]
        else:  # 0xdc..0xdf: array16/32, map16/32
            count = int.from_bytes(take(2 if marker in (0xDC, 0xDE) else 4), "big")
            is_map = marker >= 0xDE
            opened = [2 * count if is_map else count, {} if is_map else [], is_map, _NO_KEY]
        if opened is not None:
            if opened[0]:
                stack.append(opened)
                continue
            value = opened[1]
        # Attach the finished value to the open containers, closing those now complete.
        while stack:
            frame = stack[-1]
            items_left, container, is_map, key = frame
            if not is_map:
                container.append(value)
            elif key is _NO_KEY:
                if type(value) is not str:
                    fault = fault or f"map key {value!r} is not a string"
                    if isinstance(value, (list, dict)):
                        value = ContainerKey(value)
                elif value in container:
                    fault = fault or f"map key {value!r} appears more than once"
                frame[3] = value
            else:
                container[key] = value
                frame[3] = _NO_KEY
            frame[0] = items_left - 1
            if frame[0]:
                break
            stack.pop()
            value = container
        else:
            return value, pos, fault


_NO_KEY = object()


def _is_timestamp(data: bytes) -> bool:
    """Whether ``data`` is the body of a msgpack timestamp: 4, 8 or 12 bytes, nanoseconds < 10**9."""
    if len(data) == 8:
        return int.from_bytes(data, "big") >> 34 < 10**9
    if len(data) == 12:
        return int.from_bytes(data[:4], "big") < 10**9
    return len(data) == 4


def decode(data: bytes, max_depth: int = 16) -> Value:
    """Decode canonical bytes.

    Raises InvalidEncodingError for what is not msgpack at all or holds invalid UTF-8, and
    NonCanonicalError for valid msgpack that breaks a rule of the canonical encoding.
    """
    value = unpack(data)
    check(value, data, max_depth)
    return value


def check(value: Value, data: bytes, max_depth: int) -> None:
    """Raise NonCanonicalError unless ``data``, which :func:`unpack` made ``value`` of, is canonical."""
    found = flaw(value, 0, max_depth)
    if found is not None:
        raise NonCanonicalError(found)
    # Same types and sorted maps: re-encoding must give the very same bytes, or the input
    # used a longer form than needed or repeated a map key.
    if not packs_to(value, data):
        raise NonCanonicalError("not the shortest encoding, or a repeated map key")


_packers = threading.local()


def pack(value: Value) -> bytes:
    """``msgpack.packb(value, use_bin_type=True)``, the same bytes, through this thread's Packer.

    A Packer is costly to make (``packb`` makes one per call: half the time of packing a
    record), so each thread keeps its own. Threads must not share one: packing a Timestamp
    calls back into Python, where another thread could start packing into the same buffer.
    Raises what ``packb`` raises (TypeError for a type msgpack has no form for, ...); the
    Packer then starts empty again.
    """
    try:
        packer: msgpack.Packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(value)  # type: ignore[no-any-return]


def packs_to(value: Value, data: bytes) -> bool:
    """Whether msgpack's shortest encoding of ``value`` (as decoded, keys in their order) is ``data``."""
    return pack(value) == data


def refuse_ext(code: int, data: bytes) -> Any:
    """msgpack's ``ext_hook``: every extension type is refused (NonCanonicalError)."""
    raise NonCanonicalError(f"msgpack extension type {code} is not allowed")
