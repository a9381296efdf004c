"""The export format: one ledger record per line, byte-exact (docs/PROTOCOL.md, "Export").

A line is ``{"ledger":...,"height":...,"hash":...,"record":...}`` exactly as
:func:`encode_line` writes it: these keys in this order, no spaces, and a final ``\\n``.
``record`` is the standard base64 (with padding) of the record's exact stored bytes, so an
export carries what the store holds, never a re-encoding of it; ``ledger``, ``height`` and
``hash`` repeat what those bytes say, so that a reader can scan a file without decoding
every record. Every value of a valid line is plain ASCII that JSON never escapes, so a line
has exactly one spelling: a reader matches it against that one form and never runs a JSON
parser on hostile bytes (no depth, no huge numbers, no repeated keys, no escapes to agree on).

A ledger's checkpoints travel in the same file as lines ``{"ledger":...,"checkpoint":...}``
(the signed note as a string), each right after the record line that completes its tree.
A note's text needs escapes (its newlines), so a checkpoint line has one spelling too: only
``"``, ``\\`` and the newline escaped, everything else as its own UTF-8 bytes.

This module only turns one line into bytes and back, checking everything a line can get
wrong. Whether the records form a valid chain is for :class:`vledger.node.verify.ChainVerifier`.
Every failure names the line number.
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass
from typing import NoReturn

from ..config.settings import Limits
from .errors import (
    FieldError,
    LineError,
    MalformedRecordError,
    NoteError,
    PayloadTooLargeError,
    RecordError,
    Where,
)
from .note import Checkpoint, parse_checkpoint, parse_note
from .record import Record, decode_record

LINE_KEYS = ("ledger", "height", "hash", "record")
_NAME = rb"[a-z0-9][a-z0-9._-]{0,63}"
# The one form of a line (its "\n" aside): the values of section 5, nothing else.
_LINE = re.compile(
    rb'\{"ledger":"(' + _NAME + rb')","height":(0|[1-9][0-9]{0,19}),"hash":"([0-9a-f]{64})",'
    rb'"record":"([A-Za-z0-9+/]*={0,2})"\}'
)
# The one form of a checkpoint line: a note's characters, only '"', '\\' and newline escaped.
_CHECKPOINT_LINE = re.compile(rb'\{"ledger":"(' + _NAME + rb')","checkpoint":"((?:[^"\\\x00-\x1f]|\\["\\n])*)"\}')
_CHECKPOINT_START = re.compile(rb'\{"ledger":"' + _NAME + rb'","checkpoint":')
_UNESCAPE = re.compile(rb'\\(["\\n])')
_UNESCAPED = {b'"': b'"', b"\\": b"\\", b"n": b"\n"}
# How a line names its ledger: the line's first bytes, as the one form begins.
_NAMED = re.compile(rb'\{"ledger":"(' + _NAME + rb')",')
_UINT_MAX = 2**64 - 1


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
    """The longest line (its ``\\n`` not counted) a record within ``limits`` can give; no
    export line of either kind may be longer (a checkpoint note vledger signs is far shorter)."""
    return limits.max_line_bytes


def encode_checkpoint_line(ledger: str, note: bytes) -> bytes:
    """The one export line of one of ``ledger``'s checkpoint notes, ``\\n`` included."""
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


def line_ledger(line: bytes) -> str | None:
    """The ledger a line names: the name it begins with as ``{"ledger":"<name>",``, else None.

    Only the first bytes are read, so that a line damaged further on (overlong, cut, a
    wrong value) still belongs to its ledger and the reader can go on with the next line.
    """
    found = _NAMED.match(line)
    return found.group(1).decode("ascii") if found else None


def decode_line(line: bytes, number: int, limits: Limits) -> StoredRecord:
    """Parse and check one export line (with or without its ``\\n``); ``number`` counts from 1.

    Checks, in the order of docs/PROTOCOL.md section 5: the length [PayloadTooLargeError],
    the one form of a line and canonical base64 [LineError], the record (step 1 of section 4,
    its own errors), then that the line's height and hash are the record's [FieldError]; the
    record's ledger is left to the chain verifier. Every message starts with ``line <number>:``.
    An error names the line's ledger when the line names one, and the record's height once
    the record was read (None before: the caller knows the position it was expected at).
    """
    body = line.removesuffix(b"\n")
    named = line_ledger(body)
    if len(body) > max_line_bytes(limits):
        _fail(PayloadTooLargeError, number, f"{len(body)} bytes is longer than any export line", named)
    if _CHECKPOINT_START.match(body):
        _fail(LineError, number, "a checkpoint line where a record line was expected", named)
    found = _LINE.fullmatch(body)
    if found is None:
        _fail(LineError, number, _why_not_a_line(body), named)
    ledger, height_text, record_hash, text = (group.decode("ascii") for group in found.groups())
    height = int(height_text)
    if height > _UINT_MAX:
        _fail(LineError, number, f"height {height} is over 2**64-1", ledger)
    data = _base64(text, number, ledger)
    record = _decode_record(data, number, limits, ledger)
    _check_agreement(record, ledger, height, record_hash, number)
    return StoredRecord(record, data)


def decode_export_line(line: bytes, number: int, limits: Limits) -> StoredRecord | ExportedCheckpoint:
    """Parse and check one export line of either kind: a record line as :func:`decode_line`
    says, or a checkpoint line, told apart by its first bytes (its note parsed, not verified).

    For a checkpoint line: PayloadTooLargeError for an overlong one, LineError [bad_line] for
    one not in its one form, FieldError [bad_field] when its note is not a checkpoint note.
    """
    body = line.removesuffix(b"\n")
    if not _CHECKPOINT_START.match(body):
        return decode_line(line, number, limits)
    named = line_ledger(body)
    if len(body) > max_line_bytes(limits):
        _fail(PayloadTooLargeError, number, f"{len(body)} bytes is longer than any export line", named)
    found = _CHECKPOINT_LINE.fullmatch(body)
    if found is None:
        _fail(
            LineError,
            number,
            'the line is not of the form {"ledger":"<name>","checkpoint":"<note>"} with no spaces, '
            "only the quote, the backslash and the newline escaped",
            named,
        )
    ledger = found.group(1).decode("ascii")
    note = _UNESCAPE.sub(lambda m: _UNESCAPED[m.group(1)], found.group(2))
    try:
        checkpoint = parse_checkpoint(parse_note(note).text)
    except NoteError as e:
        _fail(FieldError, number, f"checkpoint is not a checkpoint note: {e.message}", ledger)
    if encode_checkpoint_line(ledger, note) != body + b"\n":  # e.g. a character JSON would escape
        _fail(LineError, number, "the checkpoint line is not in its one form (escapes)", ledger)
    return ExportedCheckpoint(ledger, note, checkpoint)


def _fail(
    error: type[RecordError], number: int, message: str, ledger: str | None, height: int | None = None
) -> NoReturn:
    raise error(f"line {number}: {message}", ledger=ledger, height=height)


def _why_not_a_line(body: bytes) -> str:
    """What is wrong with a line that is not of the one form, as far as a first look tells."""
    if not body:
        return "an empty line (an export has none)"
    if body.endswith(b"\r"):
        return "the line ends in CR LF; an export's lines end in LF alone"
    if b'"checkpoint"' in body[:100]:
        return 'the line is not of the form {"ledger":"<name>","checkpoint":"<note>"} with no spaces'
    if not body.isascii():
        return "the line holds bytes outside ASCII; a valid line never does"
    if _NAMED.match(body) is None:
        return 'the line does not begin {"ledger":"<name>", as an export line does'
    keys = b'{"ledger":"*","height":*,"hash":"*","record":"*"}'
    return (
        f"the line is not of the form {keys.decode()} with no spaces, these four keys in this order, "
        "a height of digits without leading zeros, a 64-character lower-case hex hash and base64"
    )


def _base64(text: str, number: int, ledger: str) -> bytes:
    """The record's bytes; ``text`` must be exactly their standard base64 (padded, unused bits zero)."""
    try:
        data = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as e:
        _fail(LineError, number, f"record is not standard base64: {e}", ledger)
    if binascii.b2a_base64(data, newline=False).decode("ascii") != text:
        _fail(LineError, number, "record is not canonical base64 (its unused bits are not zero)", ledger)
    return data


def _decode_record(data: bytes, number: int, limits: Limits, ledger: str) -> Record:
    """decode_record, with the line number and the line's ledger on any error; the height
    is the record's when it was read (step 1.6), else left for the caller."""
    try:
        return decode_record(data, limits)
    except (MalformedRecordError, PayloadTooLargeError) as e:
        raise type(e)(f"line {number}: {e.reason}", ledger=ledger, height=e.height) from e


def _check_agreement(record: Record, ledger: str, height: int, record_hash: str, number: int) -> None:
    """The line's height and hash must repeat what the record says, or a scan by them would lie.
    The error names the record's height: only the record is trusted. The line's ledger is the
    ledger being verified: a record of another one is the chain verifier's wrong_ledger."""
    where: Where = {"ledger": ledger, "height": record.height}
    if record.height != height:
        _fail(FieldError, number, f"the line says height {height}, the record {record.height}", **where)
    if record.hash.hex() != record_hash:
        _fail(
            FieldError, number, f"the line's hash {record_hash} is not the record's link {record.hash.hex()}", **where
        )
