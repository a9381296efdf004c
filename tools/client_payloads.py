"""What the client verbs write and show, built from the command line: pure, no I/O.

* JSON typed on the command line (``--payload``, ``--rules``) becomes a map a record can hold:
  floats are refused (money is an integer number of minor units: cents, halalas), and so are
  NaN, Infinity, repeated keys and anything but an object at the top.
* The domain verbs' payloads carry exactly the fields node/rules/ reads for each kind
  (votes.py, charity.py, resources.py, files.py); :class:`Write` pairs a kind with its payload.
* argparse types turn a mistyped amount, kind, hash or sealed id into a usage error.
* What a person types as a name or text (voter ids, choices, funds, purposes, file names) is
  sent in Unicode normal form C, and a control or bidi-override character in it is a usage
  error (docs/PROTOCOL.md 7.5): ``José`` typed with a combining accent is the same voter.
* Records and receipts become JSON-ready maps, binary values as lower-case hex.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..client.write import Write
from ..config.settings import PROTOCOL_LIMITS
from ..node import identifiers
from ..node.currency import amount_text, minor_unit_digits
from ..node.errors import UsageError, VledgerError
from ..node.json_values import jsonable, parse_json
from ..node.record import ACCOUNT_PATTERN, GENESIS_KIND, HASH_SIZE, NAME_PATTERN, Record
from ..node.rules import UINT64_MAX
from ..node.rules.charity import CharityState
from ..node.rules.files import FilesState
from ..node.rules.resources import ResourcesState
from ..node.rules.votes import ElectionState
from ..node.sealed import PREFIX as SEALED_PREFIX
from ..node.sealed import is_sealed

Payload = dict[str, Any]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_DECIMAL = re.compile(r"-?[0-9]*\.[0-9]+")
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number", bool: "a boolean"}


# --- JSON from the command line -------------------------------------------------------------


class _Refused(Exception):
    """A JSON value that parses but has no place in a record (raised from inside json.loads)."""


def _no_float(text: str) -> Any:
    raise _Refused(
        f"{text} is not an integer: records hold no floats, and amounts are whole numbers of minor "
        "units (write 1250 for 12.50 in a currency of 2 decimals)"
    )


def _no_constant(text: str) -> Any:
    raise _Refused(f"{text} is not a number a record can hold")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        repeated = sorted(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)
        raise _Refused(f"repeated keys {repeated}: each key may appear once")
    return value


def parse_json_map(text: str, what: str) -> Payload:
    """The JSON object ``text`` as a map a record can hold; UsageError naming ``what`` if not."""
    try:
        value = parse_json(text, parse_float=_no_float, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise UsageError(f"{what}: not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except _Refused as e:
        raise UsageError(f"{what}: {e}") from None
    if not isinstance(value, dict):
        kind = "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)
        raise UsageError(f"{what}: must be a JSON object ({{...}}), not {kind}")
    return value


# --- argparse types --------------------------------------------------------------------------


def _argument_type(check: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type whose refusal (a UsageError) is argparse's message, so exit 2."""

    def checked(value: str) -> Any:
        try:
            return check(value)
        except VledgerError as e:
            raise argparse.ArgumentTypeError(e.message) from e

    checked.__name__ = check.__name__
    return checked


@_argument_type
def json_map(value: str) -> Payload:
    return parse_json_map(value, "JSON")


@_argument_type
def amount(value: str) -> int:
    """A positive whole number of minor units (cents, halalas, resource units)."""
    if _DECIMAL.fullmatch(value):
        raise UsageError(
            f"{value!r} is not a whole number: amounts are integers of minor units "
            "(write 1250 for 12.50 in a currency of 2 decimals)"
        )
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= UINT64_MAX:
        raise UsageError(f"{value!r} is not an amount: a whole number of minor units, 1 to {UINT64_MAX} (2**64 - 1)")
    return int(value)


def _whole(value: str, what: str) -> int:
    if not value.isascii() or not value.isdigit() or int(value) > UINT64_MAX:
        raise UsageError(f"{value!r} is not {what}")
    return int(value)


@_argument_type
def height(value: str) -> int:
    return _whole(value, "a height (0, 1, 2, ...)")


@_argument_type
def milliseconds(value: str) -> int:
    return _whole(value, "a time in milliseconds since 1970 UTC")


@_argument_type
def seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not 0 < number < 86_400:
        raise UsageError(f"{value!r} is not a number of seconds (more than 0, less than a day)")
    return number


@_argument_type
def kind_list(value: str) -> tuple[str, ...]:
    """``a,b,c``: the record kinds a new ledger allows after its genesis."""
    kinds = tuple(kind.strip() for kind in value.split(","))
    for kind in kinds:
        if not NAME_PATTERN.fullmatch(kind) or len(kind) > PROTOCOL_LIMITS.max_name_length:
            raise UsageError(f"kind {kind!r} is not a valid name ({NAME_PATTERN.pattern}, at most 64)")
        if kind == GENESIS_KIND:
            raise UsageError(f"{GENESIS_KIND!r} is the first record's kind, never one a ledger allows after it")
    return kinds


@_argument_type
def account_name(value: str) -> str:
    if len(value) > PROTOCOL_LIMITS.max_name_length or not ACCOUNT_PATTERN.fullmatch(value):
        raise UsageError(f"{value!r} is not an account name ({ACCOUNT_PATTERN.pattern}, at most 64)")
    return value


@_argument_type
def record_hash(value: str) -> bytes:
    """A record's hash (its link): 64 hexadecimal characters."""
    text = value.lower()
    if not _SHA256.fullmatch(text):
        raise UsageError(f"{value!r} is not a record hash ({2 * HASH_SIZE} hexadecimal characters)")
    return bytes.fromhex(text)


@_argument_type
def sha256_hex(value: str) -> str:
    text = value.lower()
    if not _SHA256.fullmatch(text):
        raise UsageError(f"{value!r} is not a SHA-256 (64 hexadecimal characters)")
    return text


# --- what a person types ----------------------------------------------------------------------


def typed(value: str, what: str) -> str:
    """``value`` as a person typed it, in normal form C; UsageError naming ``what`` if NFC cannot
    make it an identifier (a control, bidi-override or unassigned character in it)."""
    normal = identifiers.normalize(value)
    fault = identifiers.identifier_fault(normal)
    if fault is not None:
        raise UsageError(f"{what} {normal!r} {fault}: identifiers may not hold it")
    return normal


def typed_text(value: str, what: str) -> str:
    """Free text a person typed (a donation's purpose), in normal form C: the ledger compares
    none of it, so it may hold what ids may not (an RLM in Arabic, an emoji's ZWJ), but
    neither a control nor a bidi override (docs/PROTOCOL.md 7.5)."""
    normal = identifiers.normalize(value)
    fault = identifiers.identifier_fault(normal, identifiers.NFC_RULE)
    if fault is not None:
        raise UsageError(f"{what} {normal!r} {fault}: text may not hold it")
    return normal


def typed_rules(rules: Payload) -> Payload:
    """A new domain ledger's rules with every string in them (choices, funds, ...) :func:`typed`."""

    def each(value: Any, what: str) -> Any:
        if isinstance(value, str):
            return typed(value, what)
        if isinstance(value, list):
            return [each(item, what) for item in value]
        if isinstance(value, dict):
            return {key: each(item, f"rules {key}") for key, item in value.items()}
        return value

    return dict(each(rules, "rules"))


# --- domain payloads (node/rules/) -------------------------------------------------------------


ELECTION = ElectionState.type_name
CHARITY = CharityState.type_name
RESOURCES = ResourcesState.type_name
FILES = FilesState.type_name


def register(voter_id: str) -> Write:
    return Write("register", {"voter_id": typed(voter_id, "voter id")}, ELECTION)


def cast(electronic_id: str, choice: str) -> Write:
    eid, choice = typed(electronic_id, "electronic id"), typed(choice, "choice")
    return Write("cast", {"electronic_id": eid, "choice": choice}, ELECTION)


def uncast(electronic_id: str) -> Write:
    return Write("uncast", {"electronic_id": typed(electronic_id, "electronic id")}, ELECTION)


def withdraw(electronic_id: str) -> Write:
    return Write("withdraw", {"electronic_id": typed(electronic_id, "electronic id")}, ELECTION)


def donation(donor: str, fund: str, amount: int, source: str, purpose: str) -> Write:
    """``donor`` is a sealed id: who gave stays private, the same donor is always the same id."""
    if not is_sealed(donor):
        raise UsageError(
            f"donor {donor!r} is not a sealed id ({SEALED_PREFIX}...): give --donor-info with --seal-key instead"
        )
    fund, source, purpose = typed(fund, "fund"), typed_text(source, "source"), typed_text(purpose, "purpose")
    return Write(
        "donation", {"donor": donor, "fund": fund, "amount": amount, "source": source, "purpose": purpose}, CHARITY
    )


def disbursement(fund: str, target: str, amount: int, purpose: str) -> Write:
    fund, target, purpose = typed(fund, "fund"), typed(target, "target"), typed_text(purpose, "purpose")
    return Write("disbursement", {"fund": fund, "target": target, "amount": amount, "purpose": purpose}, CHARITY)


def issue(account: str, amount: int) -> Write:
    return Write("issue", {"account": account, "amount": amount}, RESOURCES)


def transfer(source: str, target: str, amount: int) -> Write:
    """Only an owner moves its balance, so ``source`` is the caller's own account."""
    return Write("transfer", {"from": source, "to": target, "amount": amount}, RESOURCES)


def file_record(name: str, size: int, sha256: str) -> Write:
    return Write("file", {"name": typed(name, "file name"), "size": size, "sha256": sha256}, FILES)


# --- what is shown ---------------------------------------------------------------------------------


def record_map(record: Record) -> dict[str, Any]:
    content = record.content
    return {
        "ledger": content.ledger,
        "height": record.height,
        "kind": content.kind,
        "author": content.author,
        "request_id": content.request_id,
        "ts": content.ts,
        "accepted": record.accepted,
        "origin": record.origin,
        "payload": jsonable(content.payload),
        "hash": record.link.hex(),
        "prev": record.prev.hex(),
        "checksum": record.checksum.hex(),
        "nonce": record.nonce,
    }


def receipt_map(receipt: dict[str, Any]) -> dict[str, Any]:
    """A receipt (docs/PROTOCOL.md section 6) with its hashes as hex; with a write concern, the replicas."""
    keys = ("ledger", "height", "hash", "checksum", "duplicate", "values")
    return {key: jsonable(receipt.get(key)) for key in (*keys, *(("replicas",) if "replicas" in receipt else ()))}


def money_text(minor_units: int, currency: object) -> str:
    """An amount in minor units as people read it in ``currency``: 225000 SAR -> "2,250.00 SAR",
    225000 JPY -> "225,000 JPY", 225000 KWD -> "225.000 KWD" (ISO 4217's decimals, node/currency.py);
    a code without an exponent there keeps its whole minor units and says so."""
    text = f"{amount_text(minor_units, currency, grouped=True)} {currency}"
    return text if minor_unit_digits(currency) is not None else f"{text} (minor units)"
