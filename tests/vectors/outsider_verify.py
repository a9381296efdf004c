"""Standalone vledger ledger verifier, written from docs/PROTOCOL.md (version 1) alone.

Only the Python standard library (hashlib, json, base64, re, sys) and ``msgpack`` are used
(Ed25519, for sections 13 and 14, is written below from RFC 8032 5.1.7 in plain Python);
the canonical msgpack decoder and encoder below are written from section 1 of the
specification, so that every encoding rule is checked explicitly.

Usage::

    python outsider_verify.py EXPORT.jsonl
    python outsider_verify.py receipt FILE (--genesis RECORD | --key VKEY) [--witness VKEY ...] [--quorum N]

prints one JSON object per ledger and exits 0 when every ledger is valid, 1 otherwise
(2 on a usage or I/O error).

Choices made where the specification is still silent or ambiguous (see the report that
came with this file) are marked "ASSUMPTION" in the comments.
"""

import base64
import hashlib
import json
import re
import sys
from typing import NamedTuple

import msgpack

# --------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------

MAX_CONTENT_BYTES = 65_536  # section 2.1: a protocol limit, the same for every verifier
MAX_RECORD_BYTES = 81_920  # section 2.4: a protocol limit, the same for every verifier
MAX_LEVEL = 16  # section 1 rule 6: no value at level 16 or deeper
U64_MAX = 2**64 - 1
I64_MIN = -(2**63)
ZERO32 = bytes(32)

RECORD_KEYS = ("accepted", "checksum", "content", "height", "link", "nonce", "origin", "prev")
CONTENT_KEYS = ("author", "kind", "ledger", "payload", "request_id", "ts", "v")
GENESIS_KEYS = ("difficulty", "kinds", "rules")
LINE_KEYS = ("ledger", "height", "hash", "record")

AUTHOR_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # ledger, kind, origin (node)
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
HASH_RE = re.compile(r"[0-9a-f]{64}")
BASE64_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


class VerifyError(Exception):
    """A failed check: ``code`` is one of the error codes of the specification.

    ``height`` is the height the error names (section 4, last paragraph) when it is
    already known where the error is raised, else None (the caller fills in the position).
    """

    def __init__(self, code: str, message: str, height: "int | None" = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.height = height


def _fullmatch(pattern: "re.Pattern[str]", value: object) -> bool:
    # re.fullmatch, not "$": "$" would accept a trailing newline.
    return type(value) is str and pattern.fullmatch(value) is not None


def is_name(value: object) -> bool:
    """Section 2: ledger, kind and node names."""
    return _fullmatch(NAME_RE, value)


# --------------------------------------------------------------------------------------
# Section 1: canonical msgpack encoder
# --------------------------------------------------------------------------------------


def _int_bytes(n: int) -> bytes:
    if type(n) is not int:
        raise TypeError("not an integer")
    if 0 <= n <= 0x7F:
        return bytes([n])
    if -32 <= n < 0:
        return bytes([n & 0xFF])
    if n >= 0:
        if n <= 0xFF:
            return b"\xcc" + n.to_bytes(1, "big")
        if n <= 0xFFFF:
            return b"\xcd" + n.to_bytes(2, "big")
        if n <= 0xFFFF_FFFF:
            return b"\xce" + n.to_bytes(4, "big")
        if n <= U64_MAX:
            return b"\xcf" + n.to_bytes(8, "big")
        raise ValueError("integer above 2**64-1")
    if n >= -0x80:
        return b"\xd0" + n.to_bytes(1, "big", signed=True)
    if n >= -0x8000:
        return b"\xd1" + n.to_bytes(2, "big", signed=True)
    if n >= -0x8000_0000:
        return b"\xd2" + n.to_bytes(4, "big", signed=True)
    if n >= I64_MIN:
        return b"\xd3" + n.to_bytes(8, "big", signed=True)
    raise ValueError("integer below -2**63")


def _str_header(length: int) -> bytes:
    if length <= 31:
        return bytes([0xA0 | length])
    if length <= 0xFF:
        return b"\xd9" + length.to_bytes(1, "big")
    if length <= 0xFFFF:
        return b"\xda" + length.to_bytes(2, "big")
    if length <= 0xFFFF_FFFF:
        return b"\xdb" + length.to_bytes(4, "big")
    raise ValueError("string too long")


def _bin_header(length: int) -> bytes:
    if length <= 0xFF:
        return b"\xc4" + length.to_bytes(1, "big")
    if length <= 0xFFFF:
        return b"\xc5" + length.to_bytes(2, "big")
    if length <= 0xFFFF_FFFF:
        return b"\xc6" + length.to_bytes(4, "big")
    raise ValueError("binary too long")


def _array_header(count: int) -> bytes:
    if count <= 15:
        return bytes([0x90 | count])
    if count <= 0xFFFF:
        return b"\xdc" + count.to_bytes(2, "big")
    if count <= 0xFFFF_FFFF:
        return b"\xdd" + count.to_bytes(4, "big")
    raise ValueError("array too long")


def _map_header(count: int) -> bytes:
    if count <= 15:
        return bytes([0x80 | count])
    if count <= 0xFFFF:
        return b"\xde" + count.to_bytes(2, "big")
    if count <= 0xFFFF_FFFF:
        return b"\xdf" + count.to_bytes(4, "big")
    raise ValueError("map too large")


def encode_canonical(value: object, max_level: "int | None" = MAX_LEVEL) -> bytes:
    """Canonical msgpack encoding of ``value`` (section 1).

    Accepts None, bool, int, str, bytes/bytearray, list/tuple and dict with str keys (sorted
    here by their UTF-8 bytes).  Floats and every other type are refused (TypeError).  A value
    at level ``max_level`` or deeper (default 16, rule 6) is refused (ValueError); pass None
    to lift that limit (only useful to build deliberately invalid test input).
    """
    out: list[bytes] = []
    _encode(value, out, 0, max_level)
    return b"".join(out)


def _encode(value: object, out: list, level: int, max_level: "int | None") -> None:
    if max_level is not None and level >= max_level:
        raise ValueError(f"a value at level {level} (limit: below {max_level})")
    if value is None:
        out.append(b"\xc0")
    elif value is True:
        out.append(b"\xc3")
    elif value is False:
        out.append(b"\xc2")
    elif type(value) is int:
        out.append(_int_bytes(value))
    elif type(value) is str:
        raw = value.encode("utf-8")  # strict: refuses lone surrogates
        out.append(_str_header(len(raw)))
        out.append(raw)
    elif type(value) in (bytes, bytearray):
        out.append(_bin_header(len(value)))
        out.append(bytes(value))
    elif type(value) in (list, tuple):
        out.append(_array_header(len(value)))
        for item in value:
            _encode(item, out, level + 1, max_level)
    elif type(value) is dict:
        items = []
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError("map key is not a string")
            items.append((key.encode("utf-8"), key, item))
        items.sort(key=lambda entry: entry[0])  # bytewise UTF-8 order
        out.append(_map_header(len(items)))
        for _raw, key, item in items:
            _encode(key, out, level + 1, max_level)
            _encode(item, out, level + 1, max_level)
    else:
        raise TypeError(f"type {type(value).__name__} is not allowed in canonical msgpack")


# --------------------------------------------------------------------------------------
# Section 1: strict msgpack decoder that records every canonical-form fault
# --------------------------------------------------------------------------------------
#
# The decoder raises bad_encoding at once for bytes that are not msgpack at all (truncated,
# the reserved byte 0xc1, a malformed timestamp) and for invalid UTF-8 in a string.  Every
# other breach of section 1 is recorded as a _Fault (kind, level, message), in byte order,
# and decoding goes on: the callers then apply the order of section 4 step 1.
#
# Section 1: when one input holds both a bad_encoding fault and a non_canonical one,
# bad_encoding is reported, wherever the two faults lie.  A malformed timestamp is an
# extension of type -1 whose data is not 4, 8 or 12 bytes long, or whose nanoseconds are
# 1,000,000,000 or more.  Every other extension type, the reserved negative types
# -128..-2 included, is valid msgpack and so "an extension type" [non_canonical].

FAULT_KINDS = ("ext", "key_type", "float", "unsorted", "repeated", "long_form", "level")


class _Fault(NamedTuple):
    kind: str  # one of FAULT_KINDS
    level: int  # the level of the offending value (section 1 rule 6)
    message: str


class _Placeholder:
    """A decoded float or extension (never part of a canonical value)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


class _Frame:
    __slots__ = ("is_map", "key", "key_ok", "last_key", "left", "seen", "value", "want_key")

    def __init__(self, is_map: bool, count: int) -> None:
        self.is_map = is_map
        self.value: object = {} if is_map else []
        self.left = count  # items still to read (keys and values count separately)
        self.key: object = None
        self.want_key = is_map
        self.last_key: bytes | None = None
        self.seen: set = set()
        self.key_ok = True


def _check_timestamp(data: bytes) -> bool:
    """True when ``data`` is a well-formed msgpack timestamp (extension type -1)."""
    if len(data) == 4:
        return True
    if len(data) == 8:
        return int.from_bytes(data, "big") >> 34 <= 999_999_999
    if len(data) == 12:
        return int.from_bytes(data[:4], "big") <= 999_999_999
    return False


def _decode(data: bytes, what: str) -> tuple:
    """Decode the first msgpack value of ``data``.

    Returns (value, faults, end): ``faults`` lists the canonical-form faults in byte order,
    ``end`` is the offset just after the value.  Raises VerifyError(bad_encoding).
    """
    size = len(data)
    pos = 0
    faults: list[_Fault] = []
    stack: list[_Frame] = []

    def bad(msg: str, at: int) -> VerifyError:
        return VerifyError("bad_encoding", f"{what}: {msg} at byte {at}")

    def take(count: int, at: int) -> bytes:
        nonlocal pos
        if count > size - pos:
            raise bad("truncated input", at)
        chunk = data[pos : pos + count]
        pos += count
        return chunk

    while True:
        if pos >= size:
            raise bad("truncated input", pos)
        start = pos
        marker = data[pos]
        pos += 1
        level = len(stack)  # the top-level value is at level 0
        if level >= MAX_LEVEL:
            faults.append(
                _Fault("level", level, f"a value at level {level} (limit: below {MAX_LEVEL}) at byte {start}")
            )
        container: _Frame | None = None
        value: object
        if marker <= 0x7F:
            value = marker
        elif marker >= 0xE0:
            value = marker - 0x100
        elif 0x80 <= marker <= 0x8F:
            container = _Frame(True, 2 * (marker & 0x0F))
        elif 0x90 <= marker <= 0x9F:
            container = _Frame(False, marker & 0x0F)
        elif 0xA0 <= marker <= 0xBF or marker in (0xD9, 0xDA, 0xDB):
            if marker <= 0xBF:
                length = marker & 0x1F
            else:
                width = {0xD9: 1, 0xDA: 2, 0xDB: 4}[marker]
                length = int.from_bytes(take(width, start), "big")
            if data[start:pos] != _str_header(length):
                faults.append(_Fault("long_form", level, f"string header not in its shortest form at byte {start}"))
            raw = take(length, start)
            try:
                value = raw.decode("utf-8")  # strict: no surrogates, no overlong forms
            except UnicodeDecodeError:
                raise bad("string is not valid UTF-8", start) from None
        elif marker == 0xC0:
            value = None
        elif marker == 0xC1:
            raise bad("reserved byte 0xc1", start)
        elif marker == 0xC2:
            value = False
        elif marker == 0xC3:
            value = True
        elif marker in (0xC4, 0xC5, 0xC6):
            width = {0xC4: 1, 0xC5: 2, 0xC6: 4}[marker]
            length = int.from_bytes(take(width, start), "big")
            if data[start:pos] != _bin_header(length):
                faults.append(_Fault("long_form", level, f"binary header not in its shortest form at byte {start}"))
            value = take(length, start)
        elif marker in (0xC7, 0xC8, 0xC9) or 0xD4 <= marker <= 0xD8:
            if marker >= 0xD4:
                length = 1 << (marker - 0xD4)  # fixext 1, 2, 4, 8, 16
            else:
                width = {0xC7: 1, 0xC8: 2, 0xC9: 4}[marker]
                length = int.from_bytes(take(width, start), "big")
            ext_type = int.from_bytes(take(1, start), "big", signed=True)
            body = take(length, start)
            if ext_type == -1 and not _check_timestamp(body):
                raise bad(f"malformed timestamp ({length} bytes)", start)
            faults.append(_Fault("ext", level, f"extension type {ext_type} at byte {start}"))
            value = _Placeholder(f"ext {ext_type}")
        elif marker in (0xCA, 0xCB):
            take(4 if marker == 0xCA else 8, start)
            faults.append(_Fault("float", level, f"float at byte {start}"))
            value = _Placeholder("float")
        elif 0xCC <= marker <= 0xD3:
            width = 1 << ((marker - 0xCC) & 3)
            value = int.from_bytes(take(width, start), "big", signed=marker >= 0xD0)
            if data[start:pos] != _int_bytes(value):
                faults.append(_Fault("long_form", level, f"integer not in its shortest form at byte {start}"))
        elif marker in (0xDC, 0xDD, 0xDE, 0xDF):
            width = 2 if marker in (0xDC, 0xDE) else 4
            count = int.from_bytes(take(width, start), "big")
            is_map = marker >= 0xDE
            header = _map_header(count) if is_map else _array_header(count)
            if data[start:pos] != header:
                kind = "map" if is_map else "array"
                faults.append(_Fault("long_form", level, f"{kind} header not in its shortest form at byte {start}"))
            container = _Frame(is_map, 2 * count if is_map else count)
        else:  # pragma: no cover - every byte value is handled above
            raise bad(f"unknown marker 0x{marker:02x}", start)

        if container is not None:
            if container.left:
                stack.append(container)
                continue
            value = container.value

        # Attach the finished value to its parents (closing those that are complete).
        while stack:
            frame = stack[-1]
            if frame.is_map and frame.want_key:
                key_level = len(stack)
                if type(value) is not str:
                    faults.append(_Fault("key_type", key_level, f"map key is not a string at byte {start}"))
                    frame.key_ok = False
                else:
                    raw_key = value.encode("utf-8")
                    if raw_key in frame.seen:
                        faults.append(_Fault("repeated", key_level, f"repeated map key {value!r} at byte {start}"))
                    elif frame.last_key is not None and raw_key < frame.last_key:
                        faults.append(_Fault("unsorted", key_level, f"unsorted map key {value!r} at byte {start}"))
                    frame.seen.add(raw_key)
                    frame.last_key = raw_key
                    frame.key_ok = True
                frame.key = value
                frame.want_key = False
            elif frame.is_map:
                if frame.key_ok:
                    # A repeated key keeps its first place and takes its last value, as a
                    # Python dict (and msgpack.unpackb) does.
                    frame.value[frame.key] = value  # type: ignore[index]
                frame.want_key = True
            else:
                frame.value.append(value)  # type: ignore[union-attr]
            frame.left -= 1
            if frame.left:
                break
            stack.pop()
            value = frame.value
        else:
            break  # the top-level value is complete
    return value, faults, pos


def _reencode_check(value: object, data: bytes, what: str) -> None:
    # Belt and braces: the recipe of section 1 (re-encode with a shortest-form encoder and
    # compare), both with the encoder above and with msgpack.packb as the specification says.
    try:
        again = encode_canonical(value)
    except (TypeError, ValueError) as exc:  # pragma: no cover - excluded by the fault checks
        raise VerifyError("non_canonical", f"{what}: {exc}") from None
    if again != data or msgpack.packb(value, use_bin_type=True) != data:  # pragma: no cover
        raise VerifyError("non_canonical", f"{what}: re-encoding differs")


def decode_canonical(data: bytes, what: str = "value") -> object:
    """Decode ``data`` as one canonical msgpack value (section 1), or raise VerifyError.

    bad_encoding: not msgpack, invalid UTF-8, a malformed timestamp; non_canonical: every
    other rule of section 1 (the first fault in byte order is named, bytes after the value
    last).
    """
    data = bytes(data)
    value, faults, end = _decode(data, what)
    if faults:
        raise VerifyError("non_canonical", f"{what}: {faults[0].message}")
    if end != len(data):
        raise VerifyError("non_canonical", f"{what}: {len(data) - end} byte(s) after the top-level value")
    _reencode_check(value, data, what)
    return value


# --------------------------------------------------------------------------------------
# Sections 2 and 3: hashes and field rules
# --------------------------------------------------------------------------------------


def u64be(n: int) -> bytes:
    return n.to_bytes(8, "big")


def checksum_of(content: bytes) -> bytes:
    return hashlib.sha256(content).digest()


def work_of(checksum: bytes, nonce: int) -> bytes:
    return hashlib.sha256(checksum + u64be(nonce)).digest()


def meets(work: bytes, difficulty: int) -> bool:
    return int.from_bytes(work, "big") < (1 << (256 - difficulty))


def link_of(prev: bytes, checksum: bytes, height: int, nonce: int, accepted: int, origin: str) -> bytes:
    return hashlib.sha256(
        prev + checksum + u64be(height) + u64be(nonce) + u64be(accepted) + origin.encode("utf-8")
    ).digest()


def _is_u64(value: object) -> bool:
    return type(value) is int and 0 <= value <= U64_MAX


def _is_bin32(value: object) -> bool:
    return type(value) is bytes and len(value) == 32


def _exact_keys(obj: dict, keys: tuple, what: str, code: str = "bad_field") -> None:
    missing = [k for k in keys if k not in obj]
    unknown = sorted(repr(k) for k in obj if k not in keys)
    if missing or unknown:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if unknown:
            parts.append("unknown " + ", ".join(unknown))
        raise VerifyError(code, f"{what}: {'; '.join(parts)}")


def parse_content(data: bytes) -> dict:
    """Step 1.5 of section 4: the content bytes (section 2.1). Returns the content map."""
    if len(data) > MAX_CONTENT_BYTES:
        raise VerifyError("too_large", f"content: {len(data)} bytes > {MAX_CONTENT_BYTES}")
    content = decode_canonical(data, "content")
    if type(content) is not dict:
        raise VerifyError("bad_field", "content: not a map")
    _exact_keys(content, CONTENT_KEYS, "content")
    if type(content["v"]) is not int or content["v"] != 1:
        raise VerifyError("bad_field", f"content: v is {content['v']!r}, not the integer 1")
    if not is_name(content["ledger"]):
        raise VerifyError("bad_field", "content: ledger is not a name")
    if type(content["payload"]) is not dict:
        raise VerifyError("bad_field", "content: payload is not a map")
    if not is_name(content["kind"]):
        raise VerifyError("bad_field", "content: kind is not a name")
    if not _fullmatch(AUTHOR_RE, content["author"]):
        raise VerifyError("bad_field", "content: author is not an account name")
    if not _fullmatch(REQUEST_ID_RE, content["request_id"]):
        raise VerifyError("bad_field", "content: request_id is not a request id")
    if not _is_u64(content["ts"]):
        raise VerifyError("bad_field", "content: ts is not an integer 0..2**64-1")
    return content


def parse_record(data: bytes) -> tuple:
    """Step 1 of section 4 (structure), its sub-steps in their order. Returns (record, content).

    A VerifyError raised once step 1.6 has read the record's height carries that height;
    before that its ``height`` is None (the caller names the record's position).
    """
    data = bytes(data)
    # 1.1
    if len(data) > MAX_RECORD_BYTES:
        raise VerifyError("too_large", f"record: {len(data)} bytes > {MAX_RECORD_BYTES}")
    # 1.2
    # ASSUMPTION: step 1 names no float and no nesting for the record map itself; both can
    # only stand where a field of another type belongs, so they are that field's bad_field
    # (1.4 or 1.6), as the list is written, not non_canonical.
    record, faults, end = _decode(data, "record")  # raises bad_encoding
    for fault in faults:
        # Section 4 step 1.2: an extension, a non-string key or a repeated key, at any depth.
        if fault.kind in ("ext", "key_type", "repeated"):
            raise VerifyError("non_canonical", f"record: {fault.message}")
    if end != len(data):
        raise VerifyError("non_canonical", f"record: {len(data) - end} byte(s) after the top-level value")
    # 1.3
    if type(record) is not dict:
        raise VerifyError("bad_field", "record: not a map")
    _exact_keys(record, RECORD_KEYS, "record")
    top = [f for f in faults if f.level == 1 and f.kind == "unsorted"]
    if top:  # 1.3: keys all there, merely unsorted (repeated keys were refused at 1.2)
        raise VerifyError("non_canonical", f"record: {top[0].message}")
    # 1.4
    if type(record["content"]) is not bytes:
        raise VerifyError("bad_field", "record: content is not binary")
    # 1.5
    content = parse_content(record["content"])
    # 1.6
    if not _is_u64(record["height"]):
        raise VerifyError("bad_field", "record: height is not an integer 0..2**64-1")
    height = record["height"]  # from here on, errors name this height
    if not _is_bin32(record["checksum"]):
        raise VerifyError("bad_field", "record: checksum is not 32 bytes of binary", height)
    if not _is_u64(record["nonce"]):
        raise VerifyError("bad_field", "record: nonce is not an integer 0..2**64-1", height)
    if not _is_bin32(record["prev"]):
        raise VerifyError("bad_field", "record: prev is not 32 bytes of binary", height)
    if not _is_u64(record["accepted"]):
        raise VerifyError("bad_field", "record: accepted is not an integer 0..2**64-1", height)
    if not is_name(record["origin"]):
        raise VerifyError("bad_field", "record: origin is not a name", height)
    if not _is_bin32(record["link"]):
        raise VerifyError("bad_field", "record: link is not 32 bytes of binary", height)
    # 1.7 (a longer form, a repeated key; nothing else can be left once 1.2-1.6 passed)
    if faults:
        raise VerifyError("non_canonical", f"record: {faults[0].message}", height)
    try:
        _reencode_check(record, data, "record")
    except VerifyError as exc:  # pragma: no cover - excluded by the fault checks
        exc.height = height
        raise
    return record, content


def genesis_rules(record: dict, content: dict) -> dict:
    """Step 4 at height 0 (section 3). Returns the payload (difficulty, kinds, rules)."""
    height = record["height"]
    if record["prev"] != ZERO32:
        raise VerifyError("bad_genesis", "genesis: prev is not 32 zero bytes", height)
    if content["kind"] != "genesis":
        raise VerifyError("bad_genesis", f"genesis: kind is {content['kind']!r}, not 'genesis'", height)
    payload = content["payload"]
    try:
        _exact_keys(payload, GENESIS_KEYS, "genesis payload", code="bad_genesis")
    except VerifyError as exc:
        exc.height = height
        raise
    difficulty = payload["difficulty"]
    if type(difficulty) is not int or not 0 <= difficulty <= 64:
        raise VerifyError("bad_genesis", "genesis: difficulty is not an integer 0..64", height)
    kinds = payload["kinds"]
    if type(kinds) is not list or not kinds:
        raise VerifyError("bad_genesis", "genesis: kinds is not a non-empty array", height)
    for kind in kinds:
        if not is_name(kind) or kind == "genesis":
            raise VerifyError("bad_genesis", f"genesis: invalid kind {kind!r}", height)
    raw = [k.encode("utf-8") for k in kinds]
    if any(raw[i] >= raw[i + 1] for i in range(len(raw) - 1)):
        raise VerifyError("bad_genesis", "genesis: kinds are not sorted without repeats", height)
    if type(payload["rules"]) is not dict:
        raise VerifyError("bad_genesis", "genesis: rules is not a map", height)
    return payload


# --------------------------------------------------------------------------------------
# Section 4: verifying a ledger
# --------------------------------------------------------------------------------------


class LedgerVerifier:
    """Section 4, fed one record at a time; keeps only the previous link and the rules."""

    def __init__(self, ledger: str) -> None:
        self.ledger = ledger
        self.height = 0  # records verified so far = the height the next record must have
        self.prev_link: bytes | None = None
        self.difficulty: int | None = None
        self.kinds: frozenset | None = None

    def feed(self, data: bytes, line: "dict | None" = None) -> bytes:
        """Verify the next record; return its link or raise VerifyError (with its height set).

        ``line`` is the export line the record came from (section 5): its ledger, height and
        hash must then equal the record's, checked right after step 1.
        """
        try:
            return self._feed(data, line)
        except VerifyError as exc:
            if exc.height is None:
                exc.height = self.height  # the record's height could not be read
            raise

    def _feed(self, data: bytes, line: "dict | None") -> bytes:
        # 1. Structure.
        record, content = parse_record(data)
        height = record["height"]
        # Section 5, check 5 (after step 1): the line's height and hash are the record's.
        # The line's ledger is the ledger being verified: another one is step 2's wrong_ledger.
        if line is not None:
            if line["height"] != height:
                raise VerifyError("bad_field", "line: height differs from the record's", height)
            if line["hash"] != record["link"].hex():
                raise VerifyError("bad_field", "line: hash differs from the record's link", height)
        # 2. Ledger.
        if content["ledger"] != self.ledger:
            raise VerifyError("wrong_ledger", f"record of ledger {content['ledger']!r}", height)
        # 3. Height.
        if height != self.height:
            raise VerifyError("height_gap", f"height {height}, expected height {self.height}", height)
        # 4. Genesis.
        if height == 0:
            rules = genesis_rules(record, content)
            difficulty, kinds = rules["difficulty"], frozenset(rules["kinds"])
        else:
            if content["kind"] == "genesis":
                raise VerifyError("bad_genesis", "a genesis record after height 0", height)
            difficulty, kinds = self.difficulty, self.kinds
        # 5. Checksum.
        if record["checksum"] != checksum_of(record["content"]):
            raise VerifyError("bad_checksum", "checksum is not SHA-256 of the content", height)
        # 6. Kind.
        if height > 0 and content["kind"] not in kinds:  # type: ignore[operator]
            raise VerifyError("unknown_kind", f"kind {content['kind']!r} not allowed by the genesis", height)
        # 7. Proof of work.
        if not meets(work_of(record["checksum"], record["nonce"]), difficulty):  # type: ignore[arg-type]
            raise VerifyError("insufficient_work", f"work does not meet difficulty {difficulty}", height)
        # 8. Own link.
        link = link_of(
            record["prev"], record["checksum"], height, record["nonce"], record["accepted"], record["origin"]
        )
        if record["link"] != link:
            raise VerifyError("bad_link", "link does not match the record", height)
        # 9. Chain.
        if height > 0 and record["prev"] != self.prev_link:
            raise VerifyError("bad_link", "prev does not match the previous record's link", height)
        if height == 0:
            self.difficulty, self.kinds = difficulty, kinds
        self.prev_link = link
        self.height += 1
        return link


def _result(
    ledger: "str | None", count: int, head: "bytes | None", error: "VerifyError | None", checkpoints: int = 0
) -> dict:
    return {
        "ledger": ledger,
        "records": count,
        "head": head.hex() if head is not None else None,
        "checkpoints": checkpoints,
        "ok": error is None,
        "error": None
        if error is None
        else {
            "code": error.code,
            "height": error.height,
            "line": getattr(error, "line", None),
            "message": error.message,
        },
    }


def verify_records(ledger: str, records: "list[bytes]") -> dict:
    """Verify the record bytes of one ledger, in height order (section 4 only)."""
    verifier = LedgerVerifier(ledger)
    head = None
    for data in records:
        try:
            head = verifier.feed(data)
        except VerifyError as exc:
            return _result(ledger, len(records), head, exc)
    return _result(ledger, len(records), head, None)


# --------------------------------------------------------------------------------------
# Section 5: export format
# --------------------------------------------------------------------------------------


# Section 5: a line is exactly one form, matched byte for byte; no JSON parser is needed.
LINE_RE = re.compile(
    r'\{"ledger":"([a-z0-9][a-z0-9._-]{0,63})","height":(0|[1-9][0-9]{0,19}),"hash":"([0-9a-f]{64})",'
    r'"record":"([A-Za-z0-9+/]*={0,2})"\}'
)
NAMED_RE = re.compile(r'\{"ledger":"([a-z0-9][a-z0-9._-]{0,63})",')
MAX_LINE_BYTES = 109_421  # section 5: a line, its "\n" not counted


def _text(line: "str | bytes") -> "str | None":
    """The line as text when it is ASCII (every valid line is), else None."""
    if type(line) is bytes:
        return line.decode("ascii") if line.isascii() else None
    return line if line.isascii() else None  # type: ignore[return-value]


def line_ledger(line: "str | bytes") -> "str | None":
    """Section 5: the ledger a line names by its first bytes, or None."""
    head = line[:80]
    text = head.decode("ascii", errors="replace") if type(head) is bytes else head
    found = NAMED_RE.match(text)  # type: ignore[arg-type]
    return found.group(1) if found else None


def parse_line(line: "str | bytes") -> tuple:
    """Checks 1 to 3 of section 5 on one line (without its "\\n").

    Returns (data, height, hash, error): the record bytes and the line's height and hash, or
    a VerifyError (its height not yet set).
    """
    size = len(line if type(line) is bytes else line.encode("utf-8", errors="surrogatepass"))  # type: ignore[union-attr]
    if size > MAX_LINE_BYTES:
        return None, None, None, VerifyError("too_large", f"line: {size} bytes > {MAX_LINE_BYTES}")
    text = _text(line)
    found = LINE_RE.fullmatch(text) if text is not None else None
    if found is None:
        return None, None, None, VerifyError("bad_line", "line: not the one form of an export line")
    _ledger, height_text, hash_hex, text64 = found.groups()
    height = int(height_text)
    if height > U64_MAX:
        return None, None, None, VerifyError("bad_line", "line: height over 2**64-1")
    try:
        data = base64.b64decode(text64, validate=True)
    except ValueError:
        return None, None, None, VerifyError("bad_line", "line: record is not standard base64")
    if base64.b64encode(data).decode("ascii") != text64:
        return None, None, None, VerifyError("bad_line", "line: record is not canonical base64")
    return data, height, hash_hex, None


# Section 5, checkpoint lines: one form too; the note's text with only '"', '\\' and newline escaped.
CHECKPOINT_LINE_RE = re.compile(
    r'\{"ledger":"([a-z0-9][a-z0-9._-]{0,63})","checkpoint":"((?:[^"\\\x00-\x1f]|\\["\\n])*)"\}'
)
CHECKPOINT_START_RE = re.compile(r'\{"ledger":"[a-z0-9][a-z0-9._-]{0,63}","checkpoint":')
_UNESCAPES = {'"': '"', "\\": "\\", "n": "\n"}


def is_checkpoint_line(line: "str | bytes") -> bool:
    """Section 5: a line whose first bytes are those of a checkpoint line."""
    head = line[:100]
    text = head.decode("ascii", errors="replace") if type(head) is bytes else head
    return CHECKPOINT_START_RE.match(text) is not None  # type: ignore[arg-type]


def parse_checkpoint_line(line: "str | bytes") -> tuple:
    """Section 5, checkpoint lines, first bullet, on one line (without its "\\n").

    Returns (note, error): the note's bytes, or a VerifyError (its height not yet set).
    """
    size = len(line if type(line) is bytes else line.encode("utf-8", errors="surrogatepass"))  # type: ignore[union-attr]
    if size > MAX_LINE_BYTES:
        return None, VerifyError("too_large", f"checkpoint line: {size} bytes > {MAX_LINE_BYTES}")
    try:
        text = line.decode("utf-8") if type(line) is bytes else line  # type: ignore[union-attr]
        text.encode("utf-8")  # type: ignore[union-attr]  # lone surrogates are not UTF-8
    except UnicodeError:
        return None, VerifyError("bad_line", "checkpoint line: not UTF-8")
    found = CHECKPOINT_LINE_RE.fullmatch(text)  # type: ignore[arg-type]
    if found is None:
        return None, VerifyError("bad_line", "checkpoint line: not the one form of a checkpoint line")
    ledger, escaped = found.groups()
    note = re.sub(r'\\(["\\n])', lambda m: _UNESCAPES[m.group(1)], escaped)
    if json.dumps({"ledger": ledger, "checkpoint": note}, separators=(",", ":"), ensure_ascii=False) != text:
        return None, VerifyError("bad_line", "checkpoint line: not the one form of a checkpoint line")
    try:
        note_text, _ = parse_note(note.encode("utf-8"))
        parse_checkpoint(note_text)
    except VerifyError as exc:
        return None, VerifyError("bad_field", f"checkpoint line: not a checkpoint note ({exc})")
    return note.encode("utf-8"), None


def split_export(text: "str | bytes") -> list:
    """The lines of a whole export file, each with its "\\n" (the last one may have none)."""
    newline = b"\n" if type(text) is bytes else "\n"
    parts = text.split(newline)  # type: ignore[arg-type]
    lines = [part + newline for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def verify_lines(lines) -> "list[dict]":
    """Verify every ledger of an export (section 5).

    ``lines`` is either a whole export file (str or bytes) or an iterable of its lines (str or
    bytes, each with or without its "\\n", e.g. an open file).

    Returns one dict per ledger, in order of first appearance:
    {"ledger", "records" (lines that belong to it), "head" (hex link of the last verified
    record, or None), "ok", "error": None or {"code", "height", "line", "message"}}. A failure
    of the file itself (a first line that names no ledger, CR LF line endings) is a dict whose
    "ledger" is None.
    """
    if type(lines) in (str, bytes):
        lines = split_export(lines)
    ledgers: dict = {}  # name -> [verifier, lines, head, failure]
    file_failure = None
    current = None
    for number, raw in enumerate(lines, start=1):
        newline = b"\n" if type(raw) is bytes else "\n"
        cr = b"\r" if type(raw) is bytes else "\r"
        line = raw[:-1] if raw.endswith(newline) else raw
        if number == 1 and raw.endswith(newline) and line.endswith(cr):
            # Section 5: a CR LF file gets one answer, and nothing else is checked.
            error = VerifyError("bad_line", "the file's lines end in CR LF")
            return [_file_result(error, 1)]
        current = line_ledger(line) or current
        if current is None:
            if file_failure is None:
                data, _height, _hash, error = parse_line(line)
                file_failure = (error or VerifyError("bad_line", "line: names no ledger"), number)
            continue
        # [verifier, record lines, head, failure, leaf hashes (section 12), key chain (13.8), checkpoints]
        state = ledgers.setdefault(current, [LedgerVerifier(current), 0, None, None, [], None, 0])
        checkpoint_line = is_checkpoint_line(line)
        if not checkpoint_line:
            state[1] += 1  # ASSUMPTION: "records" counts record lines only (a checkpoint line counts none)
        if state[3] is not None:
            continue  # after its first failure a ledger's lines prove nothing more
        verifier = state[0]
        try:
            if checkpoint_line:
                note, error = parse_checkpoint_line(line)
                if error is not None:
                    raise error  # the line was never read: it names the next record's position
                _check_checkpoint_line(note, current, state[4], state[5])
                state[6] += 1
                continue
            data, height, hash_hex, error = parse_line(line)
            if error is not None:
                raise error  # the record was never read: feed() names its position
            state[2] = verifier.feed(data, {"height": height, "hash": hash_hex})
            state[4].append(leaf_hash(data))
            record, content = parse_record(data)
            if verifier.height == 1:
                rules = genesis_rules(record, content)["rules"]
                state[5] = pinned_keys(rules, record, content)
                if state[5] is not None:
                    state[5]["chain"] = KeyChain(parse_vkey(state[5]["checkpoint"]), state[5]["checkpoint"])
            elif content["kind"] == ROTATION_KIND:
                if state[5] is None:
                    raise VerifyError("bad_rotation", "the genesis pins no checkpoint key", record["height"])
                if state[5]["standby"] is not None:  # 13.8: a ledger with a standby never rotates
                    raise VerifyError("standby_rotation", "the genesis pins a standby key", record["height"])
                state[5]["chain"].rotate(record["height"], content)
            elif state[5] is not None and state[5]["standby"] is not None:
                follow_epochs(state[5], record, content)
        except VerifyError as exc:
            if exc.height is None:
                exc.height = verifier.height
            exc.line = number  # type: ignore[attr-defined]
            state[3] = exc
    results = [
        _result(name, count, head, failure, checkpoints)
        for name, (_v, count, head, failure, _leaves, _pinned, checkpoints) in ledgers.items()
    ]
    if file_failure is not None:
        results.insert(0, _file_result(*file_failure))
    return results


def _file_result(error: VerifyError, number: int) -> dict:
    error.line = number  # type: ignore[attr-defined]
    return _result(None, 0, None, error)


def pinned_keys(rules: dict, record: dict, content: dict) -> "dict | None":
    """Section 3 and 10.9: the keys a genesis pins, and epoch 1 (the genesis home's)."""
    key = rules.get("checkpoint_key")
    if key is None:
        return None
    standby = rules.get("standby_key")
    return {"checkpoint": key, "standby": standby, "epochs": [(1, record["origin"], key, 0)]}


def follow_epochs(pinned: dict, record: dict, content: dict) -> None:
    """10.9: a valid handover record opens the next epoch; any other record (or an invalid
    handover, which opens none) changes nothing."""
    if content["kind"] != "epoch":
        return
    number, home, current_key, height = pinned["epochs"][-1]
    payload = content["payload"]
    if (
        type(payload) is dict
        and sorted(payload) == ["epoch", "home", "key"]
        and type(payload["epoch"]) is int
        and payload["epoch"] == number + 1
        and payload["home"] == record["origin"]
        and payload["home"] != home
        and payload["key"] in (pinned["checkpoint"], pinned["standby"])
        and payload["key"] != current_key  # the replaced home keeps its key: not the new epoch's
        and all(h == payload["home"] for _n, h, k, _h in pinned["epochs"] if k == payload["key"])
        and record["height"] > height
    ):
        pinned["epochs"].append((payload["epoch"], payload["home"], payload["key"], record["height"]))


def check_epoch(note: bytes, pinned: dict, size: int, extensions: list) -> None:
    """10.9, the two rules of a checkpoint of a ledger that pins a standby key."""
    claims = [line.split(" ") for line in extensions if line.split(" ", 1)[0] == "vledger-epoch"]
    if len(claims) > 1 or any(
        len(c) != 3 or not c[1].isdigit() or c[1].startswith("0") or int(c[1]) < 2 or not is_name(c[2]) for c in claims
    ):
        raise VerifyError("bad_checkpoint", "an epoch line that is not one", size - 1)
    number = int(claims[0][1]) if claims else 1
    epochs = pinned["epochs"]
    if number > len(epochs):
        raise VerifyError("bad_epoch", f"a checkpoint of epoch {number}, which no record opened", size - 1)
    _n, home, key, height = epochs[number - 1]
    if (claims and claims[0][2] != home) or (number > 1 and size <= height):
        raise VerifyError("bad_epoch", f"a checkpoint not of epoch {number}'s home", size - 1)
    try:
        verify_checkpoint(note, parse_vkey(key), [], 0)
    except VerifyError as exc:
        other = [k for k in (pinned["checkpoint"], pinned["standby"]) if k is not None and k != key]
        if exc.code == "unverified_note" and other:
            try:
                verify_checkpoint(note, parse_vkey(other[0]), [], 0, origin=parse_vkey(key).name)
            except VerifyError:
                pass
            else:
                exc = VerifyError("bad_epoch", f"a checkpoint of epoch {number} signed by another key")
        exc.height = size - 1
        raise exc from None
    if number < len(epochs) and size > epochs[number][3]:
        raise VerifyError(
            "fenced", f"a checkpoint of epoch {number} past the handover at {epochs[number][3]}", size - 1
        )


def _check_checkpoint_line(note: bytes, ledger: str, leaves: list, pinned: object) -> None:
    """Section 5, checkpoint lines, bullets 2 to 4."""
    text, _ = parse_note(note)
    _, size, root, extensions = parse_checkpoint(text)
    if size != len(leaves):
        raise VerifyError("bad_field", f"a checkpoint of size {size} after {len(leaves)} records", max(size - 1, 0))
    if mth(leaves) != root:
        raise VerifyError("tree_mismatch", "the checkpoint's root is not the tree of the records", size - 1)
    if isinstance(pinned, dict) and pinned["standby"] is not None:
        check_epoch(note, pinned, size, extensions)
    elif isinstance(pinned, dict):
        try:
            pinned["chain"].check_checkpoint(note, [], 0)  # 13.8: the key in force at its size
        except VerifyError as exc:
            exc.height = size - 1
            raise


# --------------------------------------------------------------------------------------
# Section 12: the Merkle tree (RFC 9162 / RFC 6962)
# --------------------------------------------------------------------------------------

MAX_PROOF_HASHES = 64  # 12.3
MAX_INDEX = 2**63 - 1  # 12.3: sizes and indexes


def leaf_hash(record_bytes: bytes) -> bytes:
    """12.1: SHA-256(0x00 || record bytes)."""
    return hashlib.sha256(b"\x00" + bytes(record_bytes)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """12.2: the largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: "list[bytes]") -> bytes:
    """12.2: MTH over a list of leaf hashes."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def _check_proof_shape(path: list, *hashes: bytes) -> None:
    """12.3: refused before any other work."""
    if len(path) > MAX_PROOF_HASHES:
        raise VerifyError("bad_proof", f"a proof of {len(path)} hashes (more than {MAX_PROOF_HASHES})")
    for h in [*path, *hashes]:
        if type(h) is not bytes or len(h) != 32:
            raise VerifyError("bad_proof", "a hash that is not 32 bytes")


def _shift(a: int, b: int) -> tuple:
    return a >> 1, b >> 1


def verify_inclusion(hash_: bytes, m: int, n: int, path: list, root: bytes) -> None:
    """12.4, step by step. Raises VerifyError('bad_proof')."""
    _check_proof_shape(path, hash_, root)
    # ASSUMPTION: sizes and indexes out of 0..2**63-1 (12.3) are refused like step 1.
    if not (0 <= m <= MAX_INDEX and 0 <= n <= MAX_INDEX):
        raise VerifyError("bad_proof", "an index or size out of 0..2**63-1")
    if m >= n:  # 1
        raise VerifyError("bad_proof", "step 1: index not below the size")
    fn, sn, r = m, n - 1, hash_  # 2
    for p in path:  # 3
        if sn == 0:  # 3.1
            raise VerifyError("bad_proof", "step 3.1: the proof is too long")
        if fn & 1 == 1 or fn == sn:  # 3.2
            r = node_hash(p, r)
            if fn & 1 == 0:
                while not (fn & 1 == 1 or fn == 0):
                    fn, sn = _shift(fn, sn)
        else:
            r = node_hash(r, p)
        fn, sn = _shift(fn, sn)  # 3.3
    if sn != 0:  # 4
        raise VerifyError("bad_proof", "step 4: the proof is too short")
    if r != root:
        raise VerifyError("bad_proof", "step 4: the proof leads to another root")


def verify_consistency(m: int, n: int, old_root: bytes, new_root: bytes, path: list) -> None:
    """12.5, step by step. Raises VerifyError('bad_proof')."""
    _check_proof_shape(path, old_root, new_root)
    if not (0 <= m <= MAX_INDEX and 0 <= n <= MAX_INDEX):
        raise VerifyError("bad_proof", "a size out of 0..2**63-1")
    if m > n or m == 0:  # 1
        raise VerifyError("bad_proof", "step 1: old size 0 or above the new size")
    if m == n:  # 2
        if path or old_root != new_root:
            raise VerifyError("bad_proof", "step 2: equal sizes need an empty proof and equal roots")
        return
    if not path:  # 3
        raise VerifyError("bad_proof", "step 3: empty proof")
    path = list(path)
    if m & (m - 1) == 0:  # 4
        path.insert(0, old_root)
    fn, sn = m - 1, n - 1  # 5
    while fn & 1 == 1:
        fn, sn = _shift(fn, sn)
    fr = sr = path[0]  # 6
    for c in path[1:]:  # 7
        if sn == 0:
            raise VerifyError("bad_proof", "step 7.1: the proof is too long")
        if fn & 1 == 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if fn & 1 == 0:
                while not (fn & 1 == 1 or fn == 0):
                    fn, sn = _shift(fn, sn)
        else:
            sr = node_hash(sr, c)
        fn, sn = _shift(fn, sn)
    if sn != 0:  # 8
        raise VerifyError("bad_proof", "step 8: the proof is too short")
    if fr != old_root or sr != new_root:
        raise VerifyError("bad_proof", "step 8: the proof leads to other roots")


# --------------------------------------------------------------------------------------
# Ed25519 verification (RFC 8032 section 5.1.7), pure Python, for section 13
# --------------------------------------------------------------------------------------

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _add(a: tuple, b: tuple) -> tuple:
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % _P
    bb = (y1 + x1) * (y2 + x2) % _P
    cc = 2 * t1 * t2 * _D % _P
    dd = 2 * z1 * z2 % _P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _mul(k: int, point: tuple) -> tuple:
    result = (0, 1, 1, 0)
    while k:
        if k & 1:
            result = _add(result, point)
        point = _add(point, point)
        k >>= 1
    return result


def _encode_point(point: tuple) -> bytes:
    x, y, z, _ = point
    zi = pow(z, _P - 2, _P)
    x, y = x * zi % _P, y * zi % _P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def _decode_point(data: bytes) -> "tuple | None":
    """RFC 8032 5.1.3; None for bytes that are not a point."""
    if len(data) != 32:
        return None
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if x2 == 0:
        if sign:
            return None
        x = 0
    else:
        x = pow(x2, (_P + 3) // 8, _P)
        if (x * x - x2) % _P != 0:
            x = x * _SQRT_M1 % _P
        if (x * x - x2) % _P != 0:
            return None
        if x & 1 != sign:
            x = _P - x
    return (x, y, 1, x * y % _P)


_GY = 4 * pow(5, _P - 2, _P) % _P
_BASE = _decode_point(_GY.to_bytes(32, "little"))


_IDENTITY = (0, 1, 1, 0)


def _small_order(point: tuple) -> bool:
    """13.2: one of the eight points P with [8]P the identity."""
    return _encode_point(_mul(8, point)) == _encode_point(_IDENTITY)


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """RFC 8032 5.1.7 (PureEdDSA): [S]B = R + [k]A, compared as encodings; A and R of small
    order refused (13.2)."""
    if len(signature) != 64:
        return False
    a = _decode_point(public)
    r = _decode_point(signature[:32])
    if a is None or r is None or _small_order(a) or _small_order(r):
        return False
    s_ = int.from_bytes(signature[32:], "little")
    if s_ >= _L:
        return False
    k = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % _L
    left = _mul(s_, _BASE)
    right = _add(r, _mul(k, a))
    return _encode_point(left) == _encode_point(right)


# --------------------------------------------------------------------------------------
# Section 13: keys, signed notes, checkpoints, cosignatures, the quorum
# --------------------------------------------------------------------------------------

MAX_NOTE_BYTES = 65_536
MAX_SIGNATURE_LINES = 100
TYPE_NOTE, TYPE_COSIGNATURE = 0x01, 0x04
EM_DASH_PREFIX = "\u2014 "
_WHITE_SPACE = set("\u0009\u000a\u000b\u000c\u000d\u0020\u0085\u00a0\u1680\u2028\u2029\u202f\u205f\u3000") | {
    chr(c) for c in range(0x2000, 0x200B)
}
_HEX8 = re.compile(r"[0-9a-f]{8}")


class NoteKey(NamedTuple):
    name: str
    type: int
    public: bytes

    @property
    def key_id(self) -> int:
        return note_key_id(self.name, self.type, self.public)


def is_key_name(name: object) -> bool:
    """13.1: 1 to 255 bytes of UTF-8, no white space, no '+', nothing below U+0020."""
    if type(name) is not str:
        return False
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return False
    return 1 <= size <= 255 and not any(c in _WHITE_SPACE or c == "+" or c < " " for c in name)


def note_key_id(name: str, type_: int, public: bytes) -> int:
    """13.1: u32be of SHA-256(name || 0x0A || type || public key)[0:4]."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([type_]) + public).digest()[:4], "big")


def _canonical_b64(text: str) -> "bytes | None":
    """Standard base64 with padding, and only the canonical spelling of its bytes."""
    if not BASE64_RE.fullmatch(text):
        return None
    raw = base64.b64decode(text)
    return raw if base64.b64encode(raw).decode("ascii") == text else None


def parse_vkey(text: str) -> NoteKey:
    """13.1: <name>+<hex8 key id>+base64(type || public key). Raises VerifyError('bad_note_key')."""
    # The base64 may hold "+" itself: split at the first two (13.1: a name holds none).
    parts = text.split("+", 2) if type(text) is str else []
    if len(parts) != 3 or not is_key_name(parts[0]) or not _HEX8.fullmatch(parts[1]):
        raise VerifyError("bad_note_key", f"not a verifier key: {str(text)[:60]!r}")
    raw = _canonical_b64(parts[2])
    if raw is None or len(raw) != 33:
        raise VerifyError("bad_note_key", "the key is not the canonical base64 of 33 bytes")
    if raw[0] not in (TYPE_NOTE, TYPE_COSIGNATURE):
        raise VerifyError("bad_note_key", f"key type {raw[0]:#04x}")
    point = _decode_point(raw[1:])
    if point is None:
        raise VerifyError("bad_note_key", "the public key is not an Ed25519 point")
    if _small_order(point):
        raise VerifyError("bad_note_key", "the public key is an Ed25519 point of small order")
    key = NoteKey(parts[0], raw[0], raw[1:])
    if key.key_id != int(parts[1], 16):
        raise VerifyError("bad_note_key", "the key id is not the one of this name, type and key")
    return key


class NoteLine(NamedTuple):
    name: str
    key_id: int
    signature: bytes  # the bytes after the key id


def parse_note(data: bytes) -> tuple:
    """13.2: (text, [NoteLine]); raises VerifyError('bad_note')."""
    data = bytes(data)
    if len(data) > MAX_NOTE_BYTES:
        raise VerifyError("bad_note", f"a note of {len(data)} bytes")
    try:
        message = data.decode("utf-8")
    except UnicodeDecodeError:
        raise VerifyError("bad_note", "not UTF-8") from None
    if any(c < " " and c != "\n" for c in message):
        raise VerifyError("bad_note", "a character below U+0020 other than newline")
    split = message.rfind("\n\n")
    if split < 0:
        raise VerifyError("bad_note", "no blank line")
    text, rest = message[: split + 1], message[split + 2 :]
    if not rest or not rest.endswith("\n"):
        raise VerifyError("bad_note", "no signature line, or one without its newline")
    lines = rest[:-1].split("\n")
    if len(lines) > MAX_SIGNATURE_LINES:
        raise VerifyError("bad_note", f"{len(lines)} signature lines")
    parsed = []
    for line in lines:
        if not line.startswith(EM_DASH_PREFIX):
            raise VerifyError("bad_note", "a line after the blank line that is not a signature line")
        name, space, b64 = line[len(EM_DASH_PREFIX) :].partition(" ")
        raw = _canonical_b64(b64) if space else None
        if not is_key_name(name) or raw is None or len(raw) < 5:
            raise VerifyError("bad_note", "a malformed signature line")
        parsed.append(NoteLine(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    return text, parsed


def cosigned_message(body: bytes, t: int) -> bytes:
    """13.4: "cosignature/v1" 0x0A "time " decimal(T) 0x0A body."""
    return b"cosignature/v1\ntime " + str(t).encode("ascii") + b"\n" + body


def line_verifies(text: str, line: NoteLine, key: NoteKey) -> bool:
    """13.2 / 13.4: one signature line by ``key`` (its name and key id already matched)."""
    body = text.encode("utf-8")
    if key.type == TYPE_NOTE:
        return ed25519_verify(key.public, body, line.signature)
    if len(line.signature) != 8 + 64:  # 76 bytes with the key id
        return False
    t = int.from_bytes(line.signature[:8], "big")
    if t > 2**63 - 1:
        return False
    return ed25519_verify(key.public, cosigned_message(body, t), line.signature[8:])


def open_note(data: bytes, keys: "list[NoteKey]") -> tuple:
    """13.2 "to open a note": (text, [(key, line)] verified). Raises VerifyError."""
    table: dict = {}
    for key in keys:
        if table.setdefault((key.name, key.key_id), key) != key:
            raise VerifyError("bad_note_key", "two trusted keys with one name and key id")
    text, lines = parse_note(data)
    verified = []
    seen = set()
    for line in lines:
        key = table.get((line.name, line.key_id))
        if key is None or (line.name, line.key_id) in seen:
            continue
        seen.add((line.name, line.key_id))
        if not line_verifies(text, line, key):
            code = "bad_cosignature" if key.type == TYPE_COSIGNATURE else "bad_note_signature"
            raise VerifyError(code, f"the signature by {key.name} does not verify")
        verified.append((key, line))
    if not verified:
        raise VerifyError("unverified_note", "no signature by a trusted key")
    return text, verified


_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def parse_checkpoint(text: str) -> tuple:
    """13.3: (origin, size, root, extensions). Raises VerifyError('bad_checkpoint')."""
    if not text.endswith("\n"):
        raise VerifyError("bad_checkpoint", "the body does not end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise VerifyError("bad_checkpoint", "fewer than three lines")
    origin, size, root, *extensions = lines
    for line in [origin, *extensions]:
        if not line or any(c < " " for c in line):
            raise VerifyError("bad_checkpoint", "an empty origin or extension line, or a control character")
    if not _DECIMAL.fullmatch(size) or int(size) > 2**64 - 1:
        raise VerifyError("bad_checkpoint", "the size is not decimal without leading zeros, at most 2^64 - 1")
    raw = _canonical_b64(root)
    if raw is None or len(raw) != 32:
        raise VerifyError("bad_checkpoint", "the root is not the canonical base64 of 32 bytes")
    return origin, int(size), raw, extensions


def verify_checkpoint(
    data: bytes, log_key: NoteKey, witnesses: "list[NoteKey]", q: int, origin=None, counts=None
) -> dict:
    """13.5, steps 1 to 5. Returns {origin, size, root, witnesses: {name: T}}. ``counts(key, T,
    size)`` (14.3 step 7, 16.6) says whether a verified cosignature line counts; one it refuses
    is skipped, and a later line of that witness may count."""
    names = {w.name for w in witnesses}
    if type(q) is not int or not 0 <= q <= len(names):  # 1
        raise VerifyError("no_quorum", f"a quorum of {q} with {len(names)} witnesses")
    if log_key.type != TYPE_NOTE or any(w.type != TYPE_COSIGNATURE for w in witnesses):
        raise VerifyError("bad_note_key", "the log key must be type 0x01, each witness key type 0x04")
    text, verified = open_note(data, [log_key, *witnesses])  # 2
    if not any(key == log_key for key, _ in verified):  # 3
        raise VerifyError("unverified_note", "no verified signature by the log key")
    cp_origin, size, root, _ = parse_checkpoint(text)  # 4
    if cp_origin != (log_key.name if origin is None else origin):
        raise VerifyError("wrong_origin", f"origin {cp_origin!r}")
    counted: dict = {}  # 5
    signers: dict = {}  # name -> the key whose line counted
    for key, line in verified:
        if key.type == TYPE_COSIGNATURE and key.name not in counted:
            stamped = int.from_bytes(line.signature[:8], "big")
            if counts is not None and not counts(key, stamped, size):
                continue
            counted[key.name] = stamped
            signers[key.name] = key
    if len(counted) < q:
        raise VerifyError("no_quorum", f"{len(counted)} of {q} cosignatures; missing {sorted(names - set(counted))}")
    return {"origin": cp_origin, "size": size, "root": root, "witnesses": counted, "signers": signers}


# --------------------------------------------------------------------------------------
# Section 14: receipts
# --------------------------------------------------------------------------------------

MAX_RECEIPT_BYTES = 262_144
RECEIPT_KEYS = ("v", "ledger", "index", "hash", "record", "proof", "checkpoint")
ROTATION_ITEM_KEYS = ("index", "record", "proof")
MAX_ROTATIONS = 32


class _JsonObject(dict):
    """A JSON object that remembers its repeated keys."""

    repeated: list


def _object_pairs(pairs: list) -> _JsonObject:
    obj = _JsonObject()
    obj.repeated = []
    for key, value in pairs:
        if key in obj:
            obj.repeated.append(key)
        obj[key] = value
    return obj


class _NotJson(ValueError):
    pass


def _reject_constant(name: str) -> None:
    raise _NotJson(f"{name} is not JSON")


def _receipt_bytes(obj: dict) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def parse_receipt(data: bytes) -> dict:
    """14.2: the receipt's values, the binary ones decoded. Raises VerifyError('bad_receipt')."""
    data = bytes(data)
    if len(data) > MAX_RECEIPT_BYTES:
        raise VerifyError("bad_receipt", f"{len(data)} bytes")
    try:
        obj = json.loads(data.decode("utf-8"), object_pairs_hook=_object_pairs, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, _NotJson):
        raise VerifyError("bad_receipt", "not UTF-8 JSON") from None
    orders = [(*RECEIPT_KEYS, *more) for more in ((), ("rotations",), ("node_keys",), ("rotations", "node_keys"))]
    if type(obj) is not _JsonObject or tuple(obj) not in orders:
        raise VerifyError("bad_receipt", "not an object with exactly the receipt's keys in order")
    if type(obj["v"]) is not int or obj["v"] != 1 or type(obj["ledger"]) is not str:
        raise VerifyError("bad_receipt", "v or ledger")
    if type(obj["index"]) is not int or not 0 <= obj["index"] <= MAX_INDEX:
        raise VerifyError("bad_receipt", "index")
    if not _fullmatch(HASH_RE, obj["hash"]):
        raise VerifyError("bad_receipt", "hash")
    record = _canonical_b64(obj["record"]) if type(obj["record"]) is str else None
    proof = obj["proof"]
    if record is None or type(proof) is not list or len(proof) > MAX_PROOF_HASHES:
        raise VerifyError("bad_receipt", "record or proof")
    hashes = [_canonical_b64(p) if type(p) is str else None for p in proof]
    if any(h is None for h in hashes) or type(obj["checkpoint"]) is not str:
        raise VerifyError("bad_receipt", "a proof hash or the checkpoint")
    try:
        again = _receipt_bytes(dict(obj))
    except UnicodeEncodeError:
        raise VerifyError("bad_receipt", "a lone surrogate") from None
    if again != data:
        raise VerifyError("bad_receipt", "not the canonical form of the file")
    rotations = _parse_rotations(obj.get("rotations"))
    node_keys = _parse_node_keys(obj.get("node_keys"))
    return {
        **obj,
        "record": record,
        "proof": hashes,
        "checkpoint": obj["checkpoint"].encode("utf-8"),
        "rotations": rotations,
        "node_keys": node_keys,
    }


def _parse_node_keys(value: object) -> "tuple | None":
    """14.2: the optional node keys, (admin checkpoint note bytes, [(index, record, [proof])])."""
    if value is None:
        return None
    if type(value) is not _JsonObject or tuple(value) != ("checkpoint", "rotations") or value.repeated:
        raise VerifyError("bad_receipt", "node_keys is an object with exactly checkpoint, rotations")
    if type(value["checkpoint"]) is not str:
        raise VerifyError("bad_receipt", "node_keys checkpoint")
    return value["checkpoint"].encode("utf-8"), _parse_rotations(value["rotations"])


def _parse_rotations(value: object) -> list:
    """14.2: the optional rotations, [(index, record bytes, [proof hashes])]."""
    if value is None:
        return []
    if type(value) is not list or not 1 <= len(value) <= MAX_ROTATIONS:
        raise VerifyError("bad_receipt", "rotations: 1 to 32 items when present")
    found = []
    for item in value:
        if type(item) is not _JsonObject or tuple(item) != ROTATION_ITEM_KEYS or item.repeated:
            raise VerifyError("bad_receipt", "a rotation is an object with exactly index, record, proof")
        index, record, proof = item["index"], item["record"], item["proof"]
        if type(index) is not int or not 0 <= index <= MAX_INDEX:
            raise VerifyError("bad_receipt", "a rotation's index")
        raw = _canonical_b64(record) if type(record) is str else None
        if raw is None or type(proof) is not list or len(proof) > MAX_PROOF_HASHES:
            raise VerifyError("bad_receipt", "a rotation's record or proof")
        hashes = [_canonical_b64(p) if type(p) is str else None for p in proof]
        if any(h is None for h in hashes):
            raise VerifyError("bad_receipt", "a rotation's proof hash")
        found.append((index, raw, hashes))
    return found


# --------------------------------------------------------------------------------------
# Section 13.8: checkpoint key rotation
# --------------------------------------------------------------------------------------

ROTATION_KIND = "checkpoint_key"
ROTATION_HEADER = "vledger/checkpoint-key-rotation/v1"


class KeyChain:
    """13.8: the keys K0..Km (with their vkey strings) and the rotation heights h1..hm."""

    def __init__(self, first: NoteKey, first_text: str) -> None:
        self.keys = [(first, first_text)]
        self.heights: list = []

    def in_force(self, size: int) -> NoteKey:
        """The key in force at size n: K_i, i = the number of rotation heights below n."""
        return self.keys[sum(1 for h in self.heights if h < size)][0]

    def rotate(self, height: int, content: dict) -> None:
        """Take the rotation record at ``height`` (its content map). Raises VerifyError('bad_rotation')."""
        if self.heights and height <= self.heights[-1]:
            raise VerifyError("bad_rotation", "rotations out of height order", height)
        payload = content["payload"]
        if type(payload) is not dict or sorted(payload) != ["key", "signature"]:
            raise VerifyError("bad_rotation", "the payload has exactly key and signature", height)
        text = payload["key"]
        try:
            new = parse_vkey(text)
        except VerifyError:
            raise VerifyError("bad_rotation", "the new key is not a vkey", height) from None
        old, old_text = self.keys[-1]
        if new.type != TYPE_NOTE or new.name != old.name:
            raise VerifyError("bad_rotation", "the new key is not a type 0x01 key of the origin", height)
        if any(k.public == new.public for k, _ in self.keys):
            raise VerifyError("bad_rotation", "a key used before", height)
        signature = _canonical_b64(payload["signature"]) if type(payload["signature"]) is str else None
        if signature is None or len(signature) != 64:
            raise VerifyError("bad_rotation", "the signature is not the canonical base64 of 64 bytes", height)
        message = f"{ROTATION_HEADER}\n{old.name}\n{old_text}\n{text}\n".encode()
        if not ed25519_verify(old.public, message, signature):
            raise VerifyError("bad_rotation", "not signed by the key in force", height)
        self.keys.append((new, text))
        self.heights.append(height)

    def check_checkpoint(self, data: bytes, witnesses: "list[NoteKey]", q: int, counts=None) -> dict:
        """A checkpoint must be signed by the key in force at its size; another key of the
        chain is 'retired_key'."""
        text, _ = parse_note(data)
        _, size, _, _ = parse_checkpoint(text)
        expected = self.in_force(size)
        try:
            return verify_checkpoint(data, expected, witnesses, q, counts=counts)
        except VerifyError as exc:
            if exc.code != "unverified_note":
                raise
            for key, _ in self.keys:
                if key != expected:
                    try:
                        verify_checkpoint(data, key, [], 0)
                    except VerifyError:
                        continue
                    raise VerifyError(
                        "retired_key", f"signed by another key of the chain than the one at {size}"
                    ) from None
            raise


def verify_receipt(
    data: bytes,
    log_key: NoteKey,
    witnesses=(),
    q: int = 0,
    genesis: "bytes | None" = None,
    log_key_text: "str | None" = None,
    admin_key: "NoteKey | None" = None,
) -> dict:
    """14.3, steps 1 to 8. Returns the verified checkpoint (verify_checkpoint's result).
    ``log_key_text`` is the checkpoint key's vkey string (needed to follow rotations);
    ``admin_key`` the admin ledger's checkpoint key (needed to follow rotated witness keys)."""
    receipt = parse_receipt(data)  # 1
    ledger = receipt["ledger"]
    _check_receipt_record(receipt["record"], receipt["index"], receipt["hash"], ledger, genesis)  # 2, 3
    if not log_key.name.endswith("/" + ledger):  # 4
        raise VerifyError("wrong_origin", "the checkpoint key is of another ledger")
    indexes = [index for index, _, _ in receipt["rotations"]]  # 5
    if indexes != sorted(set(indexes)):
        raise VerifyError("bad_receipt", "rotations not in increasing index order")
    chain = KeyChain(log_key, log_key_text if log_key_text is not None else "")
    for index, raw, _ in receipt["rotations"]:
        _, content = _check_receipt_record(raw, index, None, ledger, genesis)
        if content["kind"] != ROTATION_KIND:
            raise VerifyError("bad_receipt", "a rotation that is not of kind checkpoint_key")
        chain.rotate(index, content)
    witnesses, histories = list(witnesses), {}
    if receipt["node_keys"] is not None and admin_key is not None:  # 6
        histories = node_key_histories(receipt["node_keys"], admin_key, log_key, witnesses)
        witnesses += [
            NoteKey(name, TYPE_COSIGNATURE, public)
            for name, gens in histories.items()
            for public, _, _ in gens[1:]
            if public
        ]

    def counts(key: NoteKey, stamped: int, size: int) -> bool:  # 7: a replaced key (16.6)
        gens = histories.get(key.name, [])
        if not gens or key.public == gens[-1][0]:
            return True  # the newest generation's key (the key given may be it), or no rotation
        for i, (public, _, _) in enumerate(gens[:-1]):
            if key.public != public:
                continue
            _, until, cosigned = gens[i + 1]
            if stamped * 1000 >= until:
                raise VerifyError("bad_cosignature", f"{key.name}: a replaced key, stamped at or after its until")
            return cosigned is None or size <= cosigned.get(ledger, 0)
        return True

    try:  # 7
        checkpoint = chain.check_checkpoint(receipt["checkpoint"], list(witnesses), q, counts)
        signer = chain.in_force(checkpoint["size"])
    except VerifyError as exc:
        standby = _standby_key(genesis) if exc.code == "unverified_note" and genesis is not None else None
        if standby is None:
            raise
        signer = standby
        checkpoint = verify_checkpoint(
            receipt["checkpoint"], standby, list(witnesses), q, origin=log_key.name, counts=counts
        )
        _, _, _, extensions = parse_checkpoint(parse_note(receipt["checkpoint"])[0])
        epochs = [line.split(" ") for line in extensions if line.split(" ", 1)[0] == "vledger-epoch"]
        if len(epochs) != 1 or len(epochs[0]) != 3 or not epochs[0][1].isdigit() or int(epochs[0][1]) < 2:
            raise VerifyError("bad_epoch", "signed by the standby key without an epoch line") from None
    outside = genesis_outside(genesis, log_key.name.rpartition("/")[0]) if genesis is not None else None
    if outside is not None:  # 7, the outside witnesses a genesis lists and their quorum (13.9)
        checkpoint["outside"] = verify_checkpoint(
            receipt["checkpoint"], signer, outside[0], outside[1], origin=log_key.name
        )["witnesses"]
    _, _, _, extensions = parse_checkpoint(parse_note(receipt["checkpoint"])[0])
    later = any(line.split(" ", 1)[0] == "vledger-epoch" for line in extensions)  # an epoch from 2
    listed = {key.name for key in outside[0]} if outside is not None else set()
    cluster = [name for name in checkpoint["witnesses"] if name not in listed]  # whatever key it was given as
    if (signer is not chain.in_force(checkpoint["size"]) or later) and not cluster:
        # 13.5 step 3, the epoch rule: a cluster witness's cosignature; an outside one's never counts there
        raise VerifyError("no_quorum", "an epoch from 2, and no cluster witness cosigned it")
    verify_inclusion(  # 8
        leaf_hash(receipt["record"]), receipt["index"], checkpoint["size"], receipt["proof"], checkpoint["root"]
    )
    for index, raw, proof in receipt["rotations"]:
        verify_inclusion(leaf_hash(raw), index, checkpoint["size"], proof, checkpoint["root"])
    return checkpoint


Z85_KEY_RE = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")
SIGN_HEX_RE = re.compile(r"[0-9a-f]{64}")


def node_key_histories(node_keys: tuple, admin_key: NoteKey, log_key: NoteKey, witnesses: list) -> dict:
    """14.3 step 6 (16.6): {witness key name: [(public key, until ms, cosigned), ...]}, generation
    0 first (the witness key given, 0, None), then each key_rotation of its node (its ``sign``,
    the ``until`` of that rotation, when the generation before it stops, and its ``cosigned``:
    ledger -> the largest size the generation before it had cosigned, or None)."""
    cluster, _, ledger = admin_key.name.rpartition("/")
    if admin_key.type != TYPE_NOTE or ledger != "admin" or cluster != log_key.name.rpartition("/")[0]:
        raise VerifyError("wrong_origin", "the admin key is not <cluster>/admin of the checkpoint key's cluster")
    note, rotations = node_keys
    checkpoint = verify_checkpoint(note, admin_key, [], 0)
    indexes = [index for index, _, _ in rotations]
    if indexes != sorted(set(indexes)):
        raise VerifyError("bad_receipt", "node_keys rotations not in increasing index order")
    histories: dict = {}
    by_node = {w.name.rpartition("/witness/")[2]: w for w in witnesses if "/witness/" in w.name}
    for index, raw, proof in rotations:
        record, content = _check_receipt_record(raw, index, None, "admin", None)
        if content["kind"] != "key_rotation":
            raise VerifyError("bad_receipt", "a node_keys record that is not a key_rotation")
        payload = content["payload"]
        cosigned = payload.get("cosigned") if type(payload) is dict else None
        tallied = payload.get("tallied") if type(payload) is dict else None  # an observer's tallies: no receipt's part
        if (
            type(payload) is not dict
            or sorted(k for k in payload if k not in ("cosigned", "tallied"))
            != ["curve", "node", "sign", "until", "via"]
            or not (
                "cosigned" not in payload
                or (
                    type(cosigned) is dict
                    and all(is_name(k) and type(v) is int and v >= 1 for k, v in cosigned.items())
                )
            )
            or not (
                "tallied" not in payload
                or (type(tallied) is dict and all(is_name(k) and type(v) is int and v >= 0 for k, v in tallied.items()))
            )
            or not is_name(payload["node"])
            or not _fullmatch(Z85_KEY_RE, payload["curve"])
            or not (payload["sign"] == "" or _fullmatch(SIGN_HEX_RE, payload["sign"]))  # "": no Ed25519 key
            or type(payload["until"]) is not int
            or payload["until"] <= record["accepted"]
            or type(payload["via"]) is not str
        ):
            raise VerifyError("bad_payload", "a key_rotation payload of another form than 16.1")
        verify_inclusion(leaf_hash(raw), index, checkpoint["size"], proof, checkpoint["root"])
        witness = by_node.get(payload["node"])
        if witness is not None:
            gens = histories.setdefault(witness.name, [(witness.public, 0, None)])
            # A generation without an Ed25519 key (sign "") signs nothing, yet its until ends the one before.
            gens.append((bytes.fromhex(payload["sign"]), payload["until"], cosigned))
    return histories


def _check_receipt_record(data: bytes, index: int, hash_hex: "str | None", ledger: str, genesis) -> tuple:
    """14.3 steps 2 and 3 for one record the receipt places at ``index``."""
    record, content = parse_record(data)  # 2
    if content["ledger"] != ledger:
        raise VerifyError("wrong_ledger", "the record's ledger")
    if record["height"] != index or (hash_hex is not None and record["link"].hex() != hash_hex):
        raise VerifyError("bad_receipt", "the record's height or link is not the receipt's")
    if genesis is not None:  # 3, with the genesis
        if record["height"] == 0:
            if bytes(genesis) != data:
                raise VerifyError("bad_link", "not the genesis given")
        else:
            gen_record, gen_content = parse_record(genesis)
            rules = genesis_rules(gen_record, gen_content)
            verifier = LedgerVerifier(ledger)
            verifier.height = record["height"]
            verifier.prev_link = record["prev"]
            verifier.difficulty, verifier.kinds = rules["difficulty"], frozenset(rules["kinds"])
            verifier.feed(data)
    else:  # 3, without
        if record["checksum"] != checksum_of(record["content"]):
            raise VerifyError("bad_checksum", "checksum")
        link = link_of(
            record["prev"], record["checksum"], record["height"], record["nonce"], record["accepted"], record["origin"]
        )
        if link != record["link"]:
            raise VerifyError("bad_link", "own link")
    return record, content


def genesis_key_text(genesis: bytes) -> str:
    """The vkey string a genesis pins (the first key of the chain, 13.8), as written there."""
    record, content = parse_record(genesis)
    return genesis_rules(record, content)["rules"]["checkpoint_key"]


def genesis_outside(genesis: bytes, cluster: str) -> "tuple[list[NoteKey], int] | None":
    """Section 3: the outside witnesses (type 0x04 keys) and quorum a genesis of ``cluster``'s
    lists, or None."""
    record, content = parse_record(genesis)
    rules = genesis_rules(record, content)["rules"]
    listed, quorum = rules.get("witnesses"), rules.get("quorum")
    if listed is None and quorum is None:
        return None
    if type(listed) is not list or not 1 <= len(listed) <= 32:
        raise VerifyError("bad_genesis", "rules.witnesses is not an array of 1 to 32 vkeys", 0)
    keys = []
    for value in listed:
        try:
            key = parse_vkey(value)
        except VerifyError as exc:
            raise VerifyError("bad_genesis", exc.message, 0) from None
        if key.type != TYPE_COSIGNATURE or any(k.name == key.name or k.public == key.public for k in keys):
            raise VerifyError("bad_genesis", "rules.witnesses: a key not of type 0x04, or a repeated name or key", 0)
        if key.name.startswith(cluster + "/witness/"):
            raise VerifyError("bad_genesis", f"rules.witnesses: {key.name} is named as a witness of the cluster", 0)
        keys.append(key)
    pinned = rules.get("checkpoint_key")
    if type(pinned) is str and any(k.public == parse_vkey(pinned).public for k in keys):
        raise VerifyError("bad_genesis", "rules.witnesses lists the checkpoint key's public key", 0)
    if type(quorum) is not int or not 1 <= quorum <= len(keys):
        raise VerifyError("bad_genesis", "rules.quorum is not an integer 1..len(witnesses)", 0)
    return keys, quorum


def _standby_key(genesis: bytes) -> "NoteKey | None":
    """14.3 step 5 and 10.9: the standby key a genesis pins in rules.standby_key, if any."""
    value = genesis_rules(*parse_record(genesis))["rules"].get("standby_key")
    return parse_vkey(value) if type(value) is str else None


def genesis_key(genesis: bytes, ledger: str) -> NoteKey:
    """14.3: the checkpoint key a genesis record pins in rules.checkpoint_key."""
    record, content = parse_record(genesis)
    if content["ledger"] != ledger or record["height"] != 0:
        raise VerifyError("wrong_ledger", "not this ledger's genesis")
    rules = genesis_rules(record, content)["rules"]
    value = rules.get("checkpoint_key")
    if type(value) is not str:
        raise VerifyError("bad_receipt", "the genesis pins no checkpoint key")
    try:
        key = parse_vkey(value)
    except VerifyError as exc:
        raise VerifyError("bad_genesis", exc.message, 0) from None
    if key.type != TYPE_NOTE or not key.name.endswith("/" + ledger):
        raise VerifyError("bad_genesis", "the pinned key is not a type 0x01 key named <cluster>/<ledger>", 0)
    return key


def main_receipt(argv: "list[str]") -> int:
    """receipt FILE (--genesis FILE | --key VKEY) [--witness VKEY ...] [--quorum N]"""
    args = argv[2:]
    options: dict = {"--witness": []}  # and --admin-key VKEY: follow rotated witness keys (14.3 step 6)
    try:
        path = args.pop(0)
        while args:
            flag, value = args.pop(0), args.pop(0)
            if flag == "--witness":
                options[flag].append(value)
            elif flag in ("--genesis", "--key", "--quorum", "--admin-key"):
                options[flag] = value
            else:
                raise IndexError(flag)
        with open(path, "rb") as handle:
            data = handle.read(MAX_RECEIPT_BYTES + 1)
        genesis = None
        if "--genesis" in options:
            with open(options["--genesis"], "rb") as handle:
                genesis = handle.read(MAX_RECORD_BYTES + 1)
    except (IndexError, OSError) as exc:
        print(
            f"usage: python outsider_verify.py receipt FILE (--genesis RECORD | --key VKEY) ... ({exc})",
            file=sys.stderr,
        )
        return 2
    try:
        ledger = parse_receipt(data)["ledger"]
        key = genesis_key(genesis, ledger) if genesis is not None else parse_vkey(options["--key"])
        text = genesis_key_text(genesis) if genesis is not None else options["--key"]
        witnesses = [parse_vkey(w) for w in options["--witness"]]
        admin = parse_vkey(options["--admin-key"]) if "--admin-key" in options else None
        checkpoint = verify_receipt(data, key, witnesses, int(options.get("--quorum", "0")), genesis, text, admin)
    except (VerifyError, KeyError, ValueError) as exc:
        code = exc.code if isinstance(exc, VerifyError) else "usage"
        print(json.dumps({"ok": False, "error": {"code": code, "message": str(exc)}}))
        return 1
    print(json.dumps({"ok": True, "size": checkpoint["size"], "witnesses": sorted(checkpoint["witnesses"])}))
    return 0


def main(argv: "list[str]") -> int:
    if len(argv) >= 2 and argv[1] == "receipt":
        return main_receipt(argv)
    if len(argv) != 2:
        print("usage: python outsider_verify.py EXPORT.jsonl | receipt FILE ...", file=sys.stderr)
        return 2
    try:
        with open(argv[1], "rb") as handle:
            blob = handle.read()
    except OSError as exc:
        print(f"cannot read {argv[1]}: {exc}", file=sys.stderr)
        return 2
    results = verify_lines(blob)  # bytes: each line is decoded (strictly) on its own
    print(json.dumps(results, indent=2, ensure_ascii=False))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
