"""Canonical msgpack: one value, one byte string, in any language.

The rules (docs/PROTOCOL.md, "Canonical encoding"): nil, booleans, integers in
[-2**63, 2**64 - 1], UTF-8 strings, binary, arrays and maps whose keys are strings; every
map's keys sorted by their UTF-8 bytes; every item in its shortest msgpack form; no floats,
no extension types. Decoding checks the rules by encoding again and comparing bytes, which
also rejects duplicate map keys, non-shortest forms and trailing bytes.
"""

from __future__ import annotations

import threading
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
        return msgpack.packb(_normalize(value, 0, max_depth), use_bin_type=True)  # type: ignore[no-any-return]
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
            return f"map key {key!r} is not a string"
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

    Checks nothing about canonical form: use :func:`decode` for that.
    """
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            # Keys of any scalar type come through so that flaw() refuses them as
            # non-canonical, like every other valid msgpack that breaks our rules.
            strict_map_key=False,
            use_list=True,
            ext_hook=_refuse_ext,
            # Timestamps (extension -1) bypass ext_hook; they come back as Timestamp
            # objects, which flaw() then refuses.
            timestamp=0,
        )
    except NonCanonicalError:
        raise
    except UnicodeDecodeError as e:
        raise InvalidEncodingError(f"string is not valid UTF-8: {e.reason}") from e
    except msgpack.ExtraData as e:
        raise NonCanonicalError("trailing bytes after the value") from e
    except TypeError as e:  # an array or map as a map key: valid msgpack, unhashable here
        raise NonCanonicalError(f"a map key is not a string: {e}") from e
    except (ValueError, msgpack.UnpackException) as e:
        raise InvalidEncodingError(f"not valid msgpack: {e}") from e


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


def packs_to(value: Value, data: bytes) -> bool:
    """Whether msgpack's shortest encoding of ``value`` (as decoded, keys in their order) is ``data``.

    A Packer is costly to make, so each thread keeps its own. Threads must not share one:
    packing a Timestamp calls back into Python, where another thread could start packing
    into the same buffer.
    """
    try:
        packer: msgpack.Packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(value) == data  # type: ignore[no-any-return]


def _refuse_ext(code: int, data: bytes) -> Any:
    raise NonCanonicalError(f"msgpack extension type {code} is not allowed")
