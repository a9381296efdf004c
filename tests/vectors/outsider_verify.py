"""Standalone vledger ledger verifier, written from docs/PROTOCOL.md (version 1) alone.

Only the Python standard library (hashlib, json, base64, re, sys) and ``msgpack`` are used;
the canonical msgpack decoder and encoder below are written from section 1 of the
specification, so that every encoding rule is checked explicitly.

Usage::

    python outsider_verify.py EXPORT.jsonl

prints one JSON object per ledger and exits 0 when every ledger is valid, 1 otherwise
(2 on a usage or I/O error).

Choices made where the specification is silent or ambiguous (see the report that came
with this file) are marked "ASSUMPTION" in the comments.
"""

import base64
import hashlib
import json
import re
import sys

import msgpack

# --------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------

MAX_PAYLOAD_BYTES = 65_536  # section 2.1, node setting default (applies to content bytes)
MAX_RECORD_BYTES = 81_920  # section 2.4, node setting default
MAX_DEPTH = 16  # section 1 rule 6
U64_MAX = 2**64 - 1
I64_MIN = -(2**63)
ZERO32 = bytes(32)

RECORD_KEYS = ("accepted", "checksum", "content", "height", "link", "nonce", "origin", "prev")
CONTENT_KEYS = ("author", "kind", "ledger", "payload", "request_id", "ts", "v")
GENESIS_KEYS = ("difficulty", "kinds", "rules")
LINE_KEYS = ("ledger", "height", "hash", "record")

AUTHOR_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # kind, ledger, origin
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
BASE64_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


class VerifyError(Exception):
    """A failed check: ``code`` is one of the error codes of the specification."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _fullmatch(pattern: "re.Pattern[str]", value: str) -> bool:
    # re.fullmatch, not "$": "$" would accept a trailing newline.
    return pattern.fullmatch(value) is not None


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


def encode_canonical(value: object, max_depth: "int | None" = MAX_DEPTH) -> bytes:
    """Canonical msgpack encoding of ``value`` (section 1).

    Accepts None, bool, int, str, bytes/bytearray, list/tuple and dict with str keys.
    Floats and every other type are refused (TypeError).  With ``max_depth`` (default 16),
    a value inside ``max_depth`` containers is refused (ValueError); pass None to lift that
    limit (only useful to build deliberately invalid test input).
    """
    out: list[bytes] = []
    _encode(value, out, 0, max_depth)
    return b"".join(out)


def _encode(value: object, out: list, depth: int, max_depth: "int | None") -> None:
    if max_depth is not None and depth >= max_depth:
        raise ValueError(f"nesting deeper than {max_depth}")
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
            _encode(item, out, depth + 1, max_depth)
    elif type(value) is dict:
        items = []
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError("map key is not a string")
            items.append((key.encode("utf-8"), key, item))
        items.sort(key=lambda entry: entry[0])  # bytewise UTF-8 order
        out.append(_map_header(len(items)))
        for _raw, key, item in items:
            _encode(key, out, depth + 1, max_depth)
            _encode(item, out, depth + 1, max_depth)
    else:
        raise TypeError(f"type {type(value).__name__} is not allowed in canonical msgpack")


# --------------------------------------------------------------------------------------
# Section 1: strict canonical msgpack decoder
# --------------------------------------------------------------------------------------
#
# ASSUMPTION (precedence inside the structure check): faults that make the input "not valid
# msgpack" in the sense of the error table (truncation, the reserved byte 0xc1, an extension
# type, invalid UTF-8) are reported as bad_encoding wherever they occur in the input; only a
# valid msgpack input can be reported non_canonical (error table: "valid msgpack, but not the
# canonical encoding").  This is the precedence the specification's own recipe gives
# (decode first, then check types/keys, then re-encode and compare).  Among several
# non_canonical faults, the first in byte order is reported; trailing bytes come last.
# ASSUMPTION: a non-string map key, a value nested too deep and trailing bytes are
# non_canonical (section 1 gives them no code of their own).


class _FloatSeen:
    """Placeholder for a decoded float (never part of a canonical value)."""


_FLOAT = _FloatSeen()


class _Frame:
    __slots__ = ("is_map", "key", "key_ok", "last_key", "left", "value", "want_key")

    def __init__(self, is_map: bool, count: int) -> None:
        self.is_map = is_map
        self.value: object = {} if is_map else []
        self.left = count  # items still to read (keys and values count separately)
        self.key: object = None
        self.want_key = is_map
        self.last_key: bytes | None = None
        self.key_ok = True


def decode_canonical(data: bytes, what: str = "value") -> object:
    """Decode ``data`` as one canonical msgpack value (section 1), or raise VerifyError."""
    data = bytes(data)
    size = len(data)
    pos = 0
    fault: str | None = None
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
        depth = len(stack)  # number of containers this value is inside
        if depth >= MAX_DEPTH and fault is None:
            fault = f"a value inside {depth} containers (limit: fewer than {MAX_DEPTH}) at byte {start}"
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
            if data[start:pos] != _str_header(length) and fault is None:
                fault = f"string header not in its shortest form at byte {start}"
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
            if data[start:pos] != _bin_header(length) and fault is None:
                fault = f"binary header not in its shortest form at byte {start}"
            value = take(length, start)
        elif marker in (0xC7, 0xC8, 0xC9) or 0xD4 <= marker <= 0xD8:
            raise bad(f"extension type 0x{marker:02x}", start)
        elif marker in (0xCA, 0xCB):
            take(4 if marker == 0xCA else 8, start)
            if fault is None:
                fault = f"float at byte {start}"
            value = _FLOAT
        elif 0xCC <= marker <= 0xD3:
            width = 1 << ((marker - 0xCC) & 3)
            value = int.from_bytes(take(width, start), "big", signed=marker >= 0xD0)
            if data[start:pos] != _int_bytes(value) and fault is None:
                fault = f"integer not in its shortest form at byte {start}"
        elif marker in (0xDC, 0xDD, 0xDE, 0xDF):
            width = 2 if marker in (0xDC, 0xDE) else 4
            count = int.from_bytes(take(width, start), "big")
            is_map = marker >= 0xDE
            header = _map_header(count) if is_map else _array_header(count)
            if data[start:pos] != header and fault is None:
                fault = f"{'map' if is_map else 'array'} header not in its shortest form at byte {start}"
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
                if type(value) is not str:
                    if fault is None:
                        fault = f"map key is not a string at byte {start}"
                    frame.key_ok = False
                else:
                    raw_key = value.encode("utf-8")
                    if frame.last_key is not None and raw_key <= frame.last_key and fault is None:
                        kind = "repeated" if raw_key == frame.last_key else "unsorted"
                        fault = f"{kind} map key {value!r} at byte {start}"
                    frame.last_key = raw_key
                    frame.key_ok = True
                frame.key = value
                frame.want_key = False
            elif frame.is_map:
                if frame.key_ok:
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

    if fault is not None:
        raise VerifyError("non_canonical", f"{what}: {fault}")
    if pos != size:
        raise VerifyError("non_canonical", f"{what}: {size - pos} byte(s) after the top-level value")
    # Belt and braces: the recipe of section 1 (re-encode with a shortest-form encoder and
    # compare), both with the encoder above and with msgpack.packb as the specification says.
    try:
        again = encode_canonical(value)
    except (TypeError, ValueError) as exc:  # pragma: no cover - excluded by the checks above
        raise VerifyError("non_canonical", f"{what}: {exc}") from None
    if again != data or msgpack.packb(value, use_bin_type=True) != data:  # pragma: no cover
        raise VerifyError("non_canonical", f"{what}: re-encoding differs")
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
    return int.from_bytes(work, "big") < 2 ** (256 - difficulty)


def link_of(prev: bytes, checksum: bytes, height: int, nonce: int, accepted: int, origin: str) -> bytes:
    return hashlib.sha256(
        prev + checksum + u64be(height) + u64be(nonce) + u64be(accepted) + origin.encode("utf-8")
    ).digest()


def _is_u64(value: object) -> bool:
    return type(value) is int and 0 <= value <= U64_MAX


def _exact_keys(obj: dict, keys: tuple, what: str, code: str = "bad_field") -> None:
    missing = [k for k in keys if k not in obj]
    unknown = sorted(k for k in obj if k not in keys)
    if missing or unknown:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if unknown:
            parts.append("unknown " + ", ".join(map(str, unknown)))
        raise VerifyError(code, f"{what}: {'; '.join(parts)}")


def parse_record(
    data: bytes,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    max_record_bytes: int = MAX_RECORD_BYTES,
) -> tuple:
    """Check 1 of section 4 (structure). Returns (record map, content map)."""
    record = decode_canonical(data, "record")
    if type(record) is not dict:
        # ASSUMPTION: bad_field (step 1 lists no `malformed`).
        raise VerifyError("bad_field", "record: not a map")
    _exact_keys(record, RECORD_KEYS, "record")
    for key in ("accepted", "height", "nonce"):
        if not _is_u64(record[key]):
            raise VerifyError("bad_field", f"record: {key} is not an integer 0..2**64-1")
    for key in ("checksum", "link", "prev"):
        if type(record[key]) is not bytes or len(record[key]) != 32:
            raise VerifyError("bad_field", f"record: {key} is not 32 bytes of binary")
    if type(record["content"]) is not bytes:
        raise VerifyError("bad_field", "record: content is not binary")
    origin = record["origin"]
    if type(origin) is not str or not _fullmatch(NAME_RE, origin):
        # ASSUMPTION: the syntax of 2.3 ("syntax as ledger") is checked here.
        raise VerifyError("bad_field", "record: origin is not a valid node name")

    content = decode_canonical(record["content"], "content")
    if type(content) is not dict:
        raise VerifyError("bad_field", "content: not a map")
    _exact_keys(content, CONTENT_KEYS, "content")
    if type(content["author"]) is not str or not _fullmatch(AUTHOR_RE, content["author"]):
        raise VerifyError("bad_field", "content: invalid author")
    if type(content["kind"]) is not str or not _fullmatch(NAME_RE, content["kind"]):
        raise VerifyError("bad_field", "content: invalid kind")
    if type(content["ledger"]) is not str or not _fullmatch(NAME_RE, content["ledger"]):
        raise VerifyError("bad_field", "content: invalid ledger")
    if type(content["payload"]) is not dict:
        raise VerifyError("bad_field", "content: payload is not a map")
    if type(content["request_id"]) is not str or not _fullmatch(REQUEST_ID_RE, content["request_id"]):
        raise VerifyError("bad_field", "content: invalid request_id")
    if not _is_u64(content["ts"]):
        raise VerifyError("bad_field", "content: ts is not an integer 0..2**64-1")
    if type(content["v"]) is not int:
        raise VerifyError("bad_field", "content: v is not an integer")
    if content["v"] != 1:
        raise VerifyError("bad_field", f"content: unsupported version v={content['v']}")

    if len(record["content"]) > max_payload_bytes:
        raise VerifyError(
            "too_large", f"content: {len(record['content'])} bytes > max_payload_bytes {max_payload_bytes}"
        )
    if len(data) > max_record_bytes:
        raise VerifyError("too_large", f"record: {len(data)} bytes > max_record_bytes {max_record_bytes}")
    return record, content


def genesis_rules(record: dict, content: dict) -> dict:
    """Check 4 at height 0 (section 3). Returns the payload (difficulty, kinds, rules)."""
    if record["prev"] != ZERO32:
        raise VerifyError("bad_genesis", "genesis: prev is not 32 zero bytes")
    if content["kind"] != "genesis":
        raise VerifyError("bad_genesis", f"genesis: kind is {content['kind']!r}, not 'genesis'")
    payload = content["payload"]
    _exact_keys(payload, GENESIS_KEYS, "genesis payload", code="bad_genesis")
    difficulty = payload["difficulty"]
    if type(difficulty) is not int or not 0 <= difficulty <= 64:
        raise VerifyError("bad_genesis", "genesis: difficulty is not an integer 0..64")
    kinds = payload["kinds"]
    if type(kinds) is not list or not kinds:
        raise VerifyError("bad_genesis", "genesis: kinds is not a non-empty array")
    for kind in kinds:
        if type(kind) is not str or not _fullmatch(NAME_RE, kind) or kind == "genesis":
            raise VerifyError("bad_genesis", f"genesis: invalid kind {kind!r}")
    raw = [k.encode("utf-8") for k in kinds]
    if any(raw[i] >= raw[i + 1] for i in range(len(raw) - 1)):
        raise VerifyError("bad_genesis", "genesis: kinds are not sorted without repeats")
    if type(payload["rules"]) is not dict:
        raise VerifyError("bad_genesis", "genesis: rules is not a map")
    return payload


# --------------------------------------------------------------------------------------
# Section 4: verifying a ledger
# --------------------------------------------------------------------------------------


class LedgerVerifier:
    """Section 4, fed one record at a time; keeps only the previous link and the rules."""

    def __init__(
        self,
        ledger: str,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        self.ledger = ledger
        self.max_payload_bytes = max_payload_bytes
        self.max_record_bytes = max_record_bytes
        self.height = 0  # the height the next record must have
        self.prev_link: bytes | None = None
        self.difficulty: int | None = None
        self.kinds: frozenset | None = None

    def feed(self, data: bytes, line: "dict | None" = None) -> bytes:
        """Verify the record at position ``self.height``; return its link or raise."""
        # 1. Structure.
        record, content = parse_record(data, self.max_payload_bytes, self.max_record_bytes)
        # Section 5: the line's fields must equal the record's.  ASSUMPTION: this is checked
        # right after check 1 (once the record decodes), before checks 2-9; so in an export a
        # disagreeing ledger name gives bad_field, and wrong_ledger needs verify_records().
        if line is not None:
            if line["ledger"] != content["ledger"]:
                raise VerifyError("bad_field", "line: ledger differs from the record's")
            if line["height"] != record["height"]:
                raise VerifyError("bad_field", "line: height differs from the record's")
            if line["hash"] != record["link"].hex():
                raise VerifyError("bad_field", "line: hash differs from the record's link")
        # 2. Ledger.
        if content["ledger"] != self.ledger:
            raise VerifyError("wrong_ledger", f"record of ledger {content['ledger']!r}")
        # 3. Height.
        if record["height"] != self.height:
            raise VerifyError("height_gap", f"height {record['height']}, expected {self.height}")
        # 4. Genesis.
        if self.height == 0:
            rules = genesis_rules(record, content)
            difficulty, kinds = rules["difficulty"], frozenset(rules["kinds"])
        else:
            if content["kind"] == "genesis":
                raise VerifyError("bad_genesis", "a genesis record after height 0")
            difficulty, kinds = self.difficulty, self.kinds
        # 5. Checksum.
        if record["checksum"] != checksum_of(record["content"]):
            raise VerifyError("bad_checksum", "checksum is not SHA-256 of the content")
        # 6. Kind.
        if self.height > 0 and content["kind"] not in kinds:  # type: ignore[operator]
            raise VerifyError("unknown_kind", f"kind {content['kind']!r} not allowed by the genesis")
        # 7. Proof of work.
        if not meets(work_of(record["checksum"], record["nonce"]), difficulty):  # type: ignore[arg-type]
            raise VerifyError("insufficient_work", f"work does not meet difficulty {difficulty}")
        # 8. Own link.
        link = link_of(
            record["prev"], record["checksum"], record["height"], record["nonce"], record["accepted"], record["origin"]
        )
        if record["link"] != link:
            raise VerifyError("bad_link", "link does not match the record")
        # 9. Chain.
        if self.height > 0 and record["prev"] != self.prev_link:
            raise VerifyError("bad_link", "prev does not match the previous record's link")
        if self.height == 0:
            self.difficulty, self.kinds = difficulty, kinds
        self.prev_link = link
        self.height += 1
        return link


def _result(ledger: "str | None", count: int, head: "bytes | None", error: "dict | None") -> dict:
    return {
        "ledger": ledger,
        "records": count,
        "head": head.hex() if head is not None else None,
        "ok": error is None,
        "error": error,
    }


def verify_records(
    ledger: str,
    records: "list[bytes]",
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    max_record_bytes: int = MAX_RECORD_BYTES,
) -> dict:
    """Verify the record bytes of one ledger, in height order (section 4 only)."""
    verifier = LedgerVerifier(ledger, max_payload_bytes, max_record_bytes)
    head = None
    for position, data in enumerate(records):
        try:
            head = verifier.feed(data)
        except VerifyError as exc:
            return _result(ledger, len(records), head, {"code": exc.code, "height": position, "message": exc.message})
    return _result(ledger, len(records), head, None)


# --------------------------------------------------------------------------------------
# Section 5: export format
# --------------------------------------------------------------------------------------


def _reject_duplicates(pairs: list) -> dict:
    obj: dict = {}
    for key, value in pairs:
        if key in obj:
            raise VerifyError("bad_field", f"line: repeated key {key!r}")
        obj[key] = value
    return obj


def _reject_constant(name: str) -> None:
    raise VerifyError("bad_encoding", f"line: {name} is not JSON")


def parse_line(text: str) -> tuple:
    """Parse one export line. Returns (line object or None, record bytes or None, VerifyError or None).

    The object is returned whenever its ``ledger`` could be read, so that the line can be
    attributed to its ledger even when a later check fails.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None, None, VerifyError("bad_encoding", "line: not valid UTF-8")
    try:
        obj = json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except VerifyError as exc:
        return None, None, exc
    except (ValueError, RecursionError) as exc:
        return None, None, VerifyError("bad_encoding", f"line: not JSON ({type(exc).__name__})")
    if type(obj) is not dict:
        return None, None, VerifyError("bad_field", "line: not a JSON object")
    partial = obj if type(obj.get("ledger")) is str else None
    try:
        _exact_keys(obj, LINE_KEYS, "line")
    except VerifyError as exc:
        return partial, None, exc
    if type(obj["ledger"]) is not str:
        return None, None, VerifyError("bad_field", "line: ledger is not a string")
    if type(obj["height"]) is not int:
        return obj, None, VerifyError("bad_field", "line: height is not an integer")
    if type(obj["hash"]) is not str:
        return obj, None, VerifyError("bad_field", "line: hash is not a string")
    if type(obj["record"]) is not str:
        return obj, None, VerifyError("bad_field", "line: record is not a string")
    text64 = obj["record"]
    if not _fullmatch(BASE64_RE, text64):
        return obj, None, VerifyError("bad_encoding", "line: record is not standard padded base64")
    data = base64.b64decode(text64, validate=True)
    if base64.b64encode(data).decode("ascii") != text64:
        # ASSUMPTION: non-zero padding bits make the base64 non-standard.
        return obj, None, VerifyError("bad_encoding", "line: record is not canonical base64")
    return obj, data, None


def verify_lines(
    lines,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    max_record_bytes: int = MAX_RECORD_BYTES,
) -> "list[dict]":
    """Verify every ledger of an export (an iterable of lines, with or without "\\n").

    Returns one dict per ledger, in order of first appearance:
    {"ledger", "records", "head" (hex link of the last verified record, or None), "ok",
    "error": None or {"code", "height", "message"}}.
    """
    groups: dict = {}
    order: list = []
    current = None
    for raw in lines:
        text = raw[:-1] if raw.endswith("\n") else raw
        if text.endswith("\r"):
            text = text[:-1]
        if text == "":
            continue  # ASSUMPTION: empty lines carry no record and are skipped.
        obj, data, error = parse_line(text)
        if obj is not None:
            current = obj["ledger"]
        # ASSUMPTION: a line whose ledger cannot be read belongs to the ledger of the line before.
        if current not in groups:
            groups[current] = []
            order.append(current)
        groups[current].append((obj, data, error))

    results = []
    for ledger in order:
        entries = groups[ledger]
        verifier = LedgerVerifier(ledger, max_payload_bytes, max_record_bytes)
        head = None
        failure = None
        for position, (obj, data, error) in enumerate(entries):
            try:
                if error is not None:
                    raise error
                head = verifier.feed(data, obj)
            except VerifyError as exc:
                # ASSUMPTION: the reported height is the position in the ledger (the height
                # the record should have), which equals the record's height up to the failure.
                failure = {"code": exc.code, "height": position, "message": exc.message}
                break
        results.append(_result(ledger, len(entries), head, failure))
    return results


def main(argv: "list[str]") -> int:
    if len(argv) != 2:
        print("usage: python outsider_verify.py EXPORT.jsonl", file=sys.stderr)
        return 2
    try:
        with open(argv[1], "rb") as handle:
            blob = handle.read()
    except OSError as exc:
        print(f"cannot read {argv[1]}: {exc}", file=sys.stderr)
        return 2
    # Invalid UTF-8 survives as lone surrogates and is reported per line (bad_encoding).
    lines = blob.decode("utf-8", errors="surrogateescape").split("\n")
    results = verify_lines(lines)
    print(json.dumps(results, indent=2))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
