"""The export format: one ledger record per line of JSON, byte-exact (docs/PROTOCOL.md, "Export").

A line is the JSON object ``{"ledger":...,"height":...,"hash":...,"record":...}`` with its
keys in that order, no spaces, non-ASCII text unescaped and a final ``\\n``. ``record`` is the
standard base64 (with padding) of the record's exact stored bytes, so an export carries
what the store holds, never a re-encoding of it; ``ledger``, ``height`` and ``hash`` repeat
what those bytes say, so that a reader can scan a file without decoding every record.

A ledger's checkpoints travel in the same file as lines ``{"ledger":...,"checkpoint":...}``
(the signed note as a string), each right after the record line that completes its tree.

This module only turns one line into bytes and back, checking everything a line can get
wrong. Whether the records form a valid chain is for :class:`vledger.node.verify.ChainVerifier`.
Every failure names the line number.
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass
from typing import Any, NoReturn

from ..config.settings import Limits
from .errors import (
    FieldError,
    InvalidEncodingError,
    MalformedRecordError,
    NonCanonicalError,
    NoteError,
    PayloadTooLargeError,
    RecordError,
    Where,
)
from .note import MAX_NOTE_BYTES, Checkpoint, parse_checkpoint, parse_note
from .record import Record, decode_record

LINE_KEYS = ("ledger", "height", "hash", "record")
CHECKPOINT_KEYS = ("ledger", "checkpoint")
_HEX_HASH = re.compile(r"[0-9a-f]{64}")
# Room for the keys, the punctuation, a 64-character hash and a 20-digit height.
_LINE_OVERHEAD = 160


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A decoded record together with the exact bytes it is stored as (what an export carries)."""

    record: Record
    data: bytes


@dataclass(frozen=True, slots=True)
class ExportedCheckpoint:
    """A checkpoint line: the note's exact bytes and the checkpoint its text states (unverified)."""

    ledger: str
    note: bytes
    checkpoint: Checkpoint


def max_line_bytes(limits: Limits) -> int:
    """The longest line a record within ``limits`` (or a checkpoint note) can give: readers cap
    their reads with it."""
    record = 4 * ((limits.max_record_bytes + 2) // 3) + limits.max_name_length + _LINE_OVERHEAD
    # A note's newlines are written as two characters each.
    return max(record, 2 * MAX_NOTE_BYTES + limits.max_name_length + _LINE_OVERHEAD)


def encode_checkpoint_line(ledger: str, note: bytes) -> bytes:
    """The export line of one of ``ledger``'s checkpoint notes, ``\n`` included."""
    line = {"ledger": ledger, "checkpoint": note.decode("utf-8")}
    return (json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def encode_line(stored: StoredRecord) -> bytes:
    """The one export line of a record, ``\\n`` included, in UTF-8."""
    record = stored.record
    line = {
        "ledger": record.ledger,
        "height": record.height,
        "hash": record.hash.hex(),
        "record": binascii.b2a_base64(stored.data, newline=False).decode("ascii"),
    }
    return (json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def decode_line(line: bytes, number: int, limits: Limits) -> StoredRecord:
    """Parse and check one export line (with or without its ``\\n``); ``number`` counts from 1.

    Raises a MalformedRecordError subclass (or PayloadTooLargeError for an overlong line)
    whose message starts with ``line <number>:`` and that names the ledger and height as
    far as the line states them.
    """
    decoded = decode_export_line(line, number, limits)
    if not isinstance(decoded, StoredRecord):
        _fail(FieldError, number, "a checkpoint line where a record line was expected", {"ledger": decoded.ledger})
    return decoded


def decode_export_line(line: bytes, number: int, limits: Limits) -> StoredRecord | ExportedCheckpoint:
    """Parse and check one export line of either kind: a record line as :func:`decode_line`
    says, or a checkpoint line (its note parsed as a checkpoint, nothing verified).

    Raises what :func:`decode_line` raises; for a checkpoint line FieldError [bad_field] when
    the note is not a checkpoint note, NonCanonicalError for a line not in canonical form.
    """
    if len(line) > max_line_bytes(limits):
        raise PayloadTooLargeError(f"line {number}: {len(line)} bytes is longer than any export line")
    body = line.removesuffix(b"\n")
    fields = _parse_object(body, number)
    if tuple(fields) == CHECKPOINT_KEYS:
        return _checkpoint_line(fields, body, number)
    if set(fields) != set(LINE_KEYS):
        missing = sorted(set(LINE_KEYS) - set(fields))
        unknown = sorted(set(fields) - set(LINE_KEYS))
        _fail(FieldError, number, f"line fields are wrong (missing {missing}, unknown {unknown})", {})
    where: Where = {}
    ledger = _field(fields, "ledger", str, number, where)
    where["ledger"] = ledger
    height = _field(fields, "height", int, number, where)
    if isinstance(height, bool) or height < 0:
        _fail(FieldError, number, "height must be a non-negative integer", where)
    where["height"] = height
    record_hash = _field(fields, "hash", str, number, where)
    if not _HEX_HASH.fullmatch(record_hash):
        _fail(FieldError, number, "hash must be 64 lower-case hexadecimal characters", where)
    data = _base64(_field(fields, "record", str, number, where), number, where)
    stored = StoredRecord(_decode_record(data, number, limits, where), data)
    _check_agreement(stored.record, ledger, height, record_hash, number, where)
    if encode_line(stored) != body + b"\n":
        _fail(NonCanonicalError, number, "the line is not in canonical form (key order, spacing or escapes)", where)
    return stored


def _fail(error: type[RecordError], number: int, message: str, where: Where) -> NoReturn:
    raise error(f"line {number}: {message}", **where)


def _parse_object(body: bytes, number: int) -> dict[str, Any]:
    """The line's JSON object; refuses invalid UTF-8, invalid JSON, repeated keys and constants."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        _fail(InvalidEncodingError, number, f"not valid UTF-8: {e.reason}", {})
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_refuse_constant)
    except _RepeatedKeyError as e:
        _fail(FieldError, number, str(e), {})
    except ValueError as e:
        _fail(InvalidEncodingError, number, f"not valid JSON: {e}", {})
    if not isinstance(value, dict):
        _fail(FieldError, number, f"a line must be a JSON object, not {type(value).__name__}", {})
    return value


def _checkpoint_line(fields: dict[str, Any], body: bytes, number: int) -> ExportedCheckpoint:
    ledger = _field(fields, "ledger", str, number, {})
    where: Where = {"ledger": ledger}
    text = _field(fields, "checkpoint", str, number, where)
    try:
        note = text.encode("utf-8")
        checkpoint = parse_checkpoint(parse_note(note).text)
    except (UnicodeEncodeError, NoteError) as e:
        _fail(FieldError, number, f"checkpoint is not a checkpoint note: {getattr(e, 'message', e)}", where)
    if encode_checkpoint_line(ledger, note) != body + b"\n":
        _fail(NonCanonicalError, number, "the line is not in canonical form (key order, spacing or escapes)", where)
    return ExportedCheckpoint(ledger, note, checkpoint)


class _RepeatedKeyError(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A repeated key would let two readers see two different lines in the same bytes.
    value: dict[str, Any] = {}
    for key, item in pairs:
        if key in value:
            raise _RepeatedKeyError(f"key {key!r} appears more than once")
        value[key] = item
    return value


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _field(fields: dict[str, Any], key: str, kind: type[Any], number: int, where: Where) -> Any:
    value = fields[key]
    if not isinstance(value, kind):
        _fail(FieldError, number, f"{key} must be a {kind.__name__}, not {type(value).__name__}", where)
    return value


def _base64(text: str, number: int, where: Where) -> bytes:
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as e:
        _fail(InvalidEncodingError, number, f"record is not strict base64: {e}", where)


def _decode_record(data: bytes, number: int, limits: Limits, where: Where) -> Record:
    """decode_record, with the line number and the line's ledger and height on any error."""
    try:
        return decode_record(data, limits)
    except (MalformedRecordError, PayloadTooLargeError) as e:
        located: Where = {
            "ledger": e.ledger if e.ledger is not None else where.get("ledger"),
            "height": e.height if e.height is not None else where.get("height"),
        }
        raise type(e)(f"line {number}: {e.reason}", **located) from e


def _check_agreement(record: Record, ledger: str, height: int, record_hash: str, number: int, where: Where) -> None:
    """The line's own fields must repeat what the record says, or a scan by them would lie."""
    if record.ledger != ledger:
        _fail(FieldError, number, f"the line says ledger {ledger!r}, the record {record.ledger!r}", where)
    if record.height != height:
        _fail(FieldError, number, f"the line says height {height}, the record {record.height}", where)
    if record.hash.hex() != record_hash:
        _fail(FieldError, number, f"the line's hash {record_hash} is not the record's link {record.hash.hex()}", where)
