"""Canonical msgpack: one value, one byte string, in any language.

The rules (docs/PROTOCOL.md, "Canonical encoding"): nil, booleans, integers in
[-2**63, 2**64 - 1], UTF-8 strings, binary, arrays and maps whose keys are strings; every
map's keys sorted by their UTF-8 bytes; every item in its shortest msgpack form; no floats,
no extension types. Decoding checks the rules by encoding again and comparing bytes, which
also rejects duplicate map keys, non-shortest forms and trailing bytes.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .errors import InvalidEncodingError, NonCanonicalError

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

# A canonical value: None | bool | int | str | bytes | list[Value] | dict[str, Value].
Value = Any


def _normalize(value: Value, depth: int, max_depth: int) -> Value:
    """Check types and return the value with every map rebuilt in sorted key order."""
    if depth > max_depth:
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
        return msgpack.packb(_normalize(value, 0, max_depth), use_bin_type=True)  # type: ignore[no-any-return]
    except UnicodeEncodeError as e:  # a lone surrogate in a str has no UTF-8 form
        raise InvalidEncodingError(f"string is not valid Unicode: {e.reason}") from e


_SCALARS = (type(None), bool, int, str, bytes)


def _check_decoded(value: Value, depth: int, max_depth: int) -> None:
    """Refuse what msgpack can carry but our encoding does not: floats, timestamps, unsorted maps."""
    if depth > max_depth:
        raise NonCanonicalError(f"nested deeper than {max_depth} levels")
    if isinstance(value, dict):
        keys = list(value)
        if keys != sorted(keys):
            raise NonCanonicalError("map keys are not in sorted order")
        items: Any = value.values()
    elif isinstance(value, list):
        items = value
    elif isinstance(value, float):
        raise NonCanonicalError(f"float {value!r} is not allowed (money is an integer of minor units)")
    elif isinstance(value, _SCALARS):
        return
    else:
        raise NonCanonicalError(f"type {type(value).__name__} is not allowed")
    for item in items:
        if not isinstance(item, _SCALARS):
            _check_decoded(item, depth + 1, max_depth)


def unpack(data: bytes) -> Value:
    """Decode msgpack from outside, mapping every failure to one of our errors.

    Checks nothing about canonical form: use :func:`decode` for that.
    """
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_refuse_ext,
            # Timestamps (extension -1) bypass ext_hook; they come back as Timestamp
            # objects, which the type checks then refuse.
            timestamp=0,
        )
    except InvalidEncodingError:
        raise
    except UnicodeDecodeError as e:
        raise InvalidEncodingError(f"string is not valid UTF-8: {e.reason}") from e
    except msgpack.ExtraData as e:
        raise NonCanonicalError("trailing bytes after the value") from e
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise InvalidEncodingError(f"not valid msgpack: {e}") from e


def decode(data: bytes, max_depth: int = 16) -> Value:
    """Decode canonical bytes; anything else raises InvalidEncodingError or NonCanonicalError."""
    value = unpack(data)
    _check_decoded(value, 0, max_depth)
    # Same types and sorted maps: re-encoding must give the very same bytes, or the input
    # used a longer form than needed or repeated a map key.
    if msgpack.packb(value, use_bin_type=True) != data:
        raise NonCanonicalError("not the shortest encoding, or a repeated map key")
    return value


def _refuse_ext(code: int, data: bytes) -> Any:
    raise InvalidEncodingError(f"msgpack extension type {code} is not allowed")
