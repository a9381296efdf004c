"""The one error tree of vledger.

Every error has a stable ``code`` (the string that crosses the wire, documented in
docs/PROTOCOL.md) and a sentence that says what failed. Errors about a record name the
ledger and the height they concern, so that an alert or a report can point at it.
"""

from __future__ import annotations

from typing import TypedDict


class Where(TypedDict, total=False):
    """Where a record error happened, passed on as ``**where`` to a RecordError."""

    ledger: str | None
    height: int | None


class VledgerError(Exception):
    """Base of every error vledger raises on purpose."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_wire(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


# --- records and chains ---------------------------------------------------------------


class RecordError(VledgerError):
    """A record, or a chain of records, failed a check. Names the ledger and height."""

    code = "bad_record"

    def __init__(self, message: str, *, ledger: str | None = None, height: int | None = None) -> None:
        self.ledger = ledger
        self.height = height
        where = _where(ledger, height)
        super().__init__(f"{where}: {message}" if where else message)
        self.reason = message


def _where(ledger: str | None, height: int | None) -> str:
    parts = []
    if ledger is not None:
        parts.append(f"ledger {ledger!r}")
    if height is not None:
        parts.append(f"height {height}")
    return " ".join(parts)


class MalformedRecordError(RecordError):
    """The bytes are not a record: undecodable, a missing or unknown field, a wrong type."""

    code = "malformed"


class InvalidEncodingError(MalformedRecordError):
    """Invalid msgpack or invalid UTF-8."""

    code = "bad_encoding"


class NonCanonicalError(MalformedRecordError):
    """Decodable, but not the one canonical encoding (unsorted keys, a float, ...)."""

    code = "non_canonical"


class FieldError(MalformedRecordError):
    """A field is missing, unknown, of the wrong type or out of range."""

    code = "bad_field"


class PayloadTooLargeError(RecordError):
    code = "too_large"


class UnknownKindError(RecordError):
    code = "unknown_kind"


class BadChecksumError(RecordError):
    code = "bad_checksum"


class InsufficientWorkError(RecordError):
    code = "insufficient_work"


class BadLinkError(RecordError):
    code = "bad_link"


class HeightGapError(RecordError):
    """Heights are not 0, 1, 2, ... without a gap or a repeat."""

    code = "height_gap"


class WrongLedgerError(RecordError):
    code = "wrong_ledger"


class BadGenesisError(RecordError):
    code = "bad_genesis"


# --- stores --------------------------------------------------------------------------


class StoreError(VledgerError):
    code = "store_error"


class LedgerExistsError(StoreError):
    code = "ledger_exists"


class UnknownLedgerError(StoreError):
    code = "unknown_ledger"


class RequestConflictError(StoreError):
    """A request id was used again with other content: retries must be identical."""

    code = "request_conflict"


class RecordConflictError(StoreError):
    """A record already stored at this height differs from the one offered."""

    code = "record_conflict"


class StoreClosedError(StoreError):
    code = "store_closed"


class BlobError(StoreError):
    code = "bad_blob"


class SettingsError(VledgerError):
    """A settings file or value is invalid; the message names the file and the key."""

    code = "bad_settings"


# --- the vledger command ----------------------------------------------------------------


class UsageError(VledgerError):
    """The command line names something that cannot be used (exit 2, like argparse's own errors)."""

    code = "usage"


class SourceChangedError(VledgerError):
    """An export file changed between the import's verifying pass and its appending pass.

    Not a StoreError: the store is sound, it is the file being read that can no longer be
    trusted to hold what was verified.
    """

    code = "source_changed"


class IndexMismatchError(RecordError):
    """A store's lookup column (hash, author, request id) disagrees with the record's own bytes.

    The record itself may be valid, but a lookup by that column would find the wrong record.
    """

    code = "index_mismatch"
