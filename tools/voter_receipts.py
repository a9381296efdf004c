"""A voter's set of receipts: the gateway's ``/api/ledgers/L/voters/E`` answer saved as a file
(docs/PROTOCOL.md 15.2), read for ``vledger receipt verify``.

The answer is the gateway's word but for each record's ``"receipt"``, a receipt file (14.2) as a
string: those are what is verified, each one as a receipt file is, and each must be of the
answer's ledger and a record of its electronic id (its registration, or a cast, uncast or
withdrawal that carries it). A record listed with ``"receipt": null`` stands under no checkpoint
the gateway serves yet: it is named as pending, never taken as proven. Pure: no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..client.voters import names_voter
from ..node.errors import ReceiptError
from ..node.json_values import parse_json
from ..node.receipt import Receipt, VerifiedReceipt, parse_receipt

# The keys by which a saved JSON object is a voters answer rather than a receipt file (14.2 has neither).
VOTER_KEYS = ("electronic_id", "records")


@dataclass(frozen=True, slots=True)
class VoterReceipts:
    ledger: str
    electronic_id: str
    receipts: tuple[Receipt, ...]  # in the answer's order
    pending: tuple[int, ...]  # the heights of records listed without a receipt


def parse_voter_receipts(data: bytes) -> VoterReceipts | None:
    """``data`` read as a saved voters answer, or None when it is none (then it is read as a
    receipt file, whose own errors say what is wrong with it).

    Raises ReceiptError [bad_receipt] for a voters answer whose ``ledger``, ``records`` or a
    record's ``height`` or ``receipt`` is not of the form 15.2 gives, or whose receipt string
    is no receipt file (14.2)."""
    try:
        answer = parse_json(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(answer, dict) or not all(key in answer for key in VOTER_KEYS):
        return None
    ledger, eid, records = answer.get("ledger"), answer["electronic_id"], answer["records"]
    if not isinstance(ledger, str) or not isinstance(eid, str) or not isinstance(records, list):
        raise ReceiptError("voters answer: ledger and electronic_id must be strings, records a list (PROTOCOL 15.2)")
    receipts, pending = [], []
    for shown in records:
        if not isinstance(shown, dict) or type(shown.get("height")) is not int or "receipt" not in shown:
            raise ReceiptError(
                "voters answer: each record must have an integer height and a receipt (a string or null)"
            )
        height, receipt = shown["height"], shown["receipt"]
        if receipt is not None and not isinstance(receipt, str):
            raise ReceiptError(f"voters answer: the receipt at height {height} is neither a string nor null")
        if receipt is None:
            pending.append(height)
            continue
        parsed = parse_receipt(receipt.encode("utf-8"))
        if parsed.ledger != ledger or parsed.index != height:
            raise ReceiptError(
                f"voters answer: the receipt listed at height {height} of {ledger!r} is of height {parsed.index} "
                f"of {parsed.ledger!r}"
            )
        receipts.append(parsed)
    return VoterReceipts(ledger, eid, tuple(receipts), tuple(pending))


def check_voter_record(voter: VoterReceipts, verified: VerifiedReceipt) -> None:
    """Raise ReceiptError [bad_receipt] unless the verified record is one of the voter's: a
    gateway could list another voter's receipt, which verifies as well as the voter's own."""
    if not names_voter(verified.record, voter.electronic_id):
        raise ReceiptError(
            f"voters answer: the record at height {verified.record.height} ({verified.record.content.kind}) "
            f"is no record of {voter.electronic_id}"
        )
