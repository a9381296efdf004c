"""Verification of records and chains: pure functions that raise precise errors.

The order of the checks is part of the protocol (docs/PROTOCOL.md, "Verifying a ledger"),
so that every verifier names the same first failure: structure, ledger, height, genesis,
checksum, kind, proof of work, the record's own link, then its ``prev``.
"""

from __future__ import annotations

from ..config.settings import Limits
from .errors import (
    BadChecksumError,
    BadGenesisError,
    BadLinkError,
    HeightGapError,
    InsufficientWorkError,
    UnknownKindError,
    WrongLedgerError,
)
from .ledger import LedgerRules
from .record import GENESIS_KIND, ZERO_LINK, Content, Entry, Record, checksum_of, link_of
from .work import meets_difficulty


def verify_entry(entry: Entry, rules: LedgerRules, height: int | None = None) -> None:
    """Checksum, kind and proof of work of an entry under its ledger's rules."""
    _verify_work(entry.content, entry.content_bytes, entry.checksum, entry.nonce, rules, height)


def _verify_work(
    content: Content, content_bytes: bytes, checksum: bytes, nonce: int, rules: LedgerRules, height: int | None
) -> None:
    # The fields of an entry or a record, passed one by one: no Entry is built to check a record.
    if checksum_of(content_bytes) != checksum:
        raise BadChecksumError("checksum does not match the content", ledger=content.ledger, height=height)
    if height != 0 and content.kind not in rules.kinds:
        raise UnknownKindError(
            f"kind {content.kind!r} is not one of this ledger's kinds {list(rules.kinds)}",
            ledger=content.ledger,
            height=height,
        )
    if not meets_difficulty(checksum, nonce, rules.difficulty):
        raise InsufficientWorkError(
            f"proof of work does not meet {rules.difficulty} bits", ledger=content.ledger, height=height
        )


def verify_record(record: Record, rules: LedgerRules) -> None:
    """Everything about one record that does not need its neighbours."""
    _verify_work(record.content, record.content_bytes, record.checksum, record.nonce, rules, record.height)
    expected = link_of(record.prev, record.checksum, record.height, record.nonce, record.accepted, record.origin)
    if expected != record.link:
        raise BadLinkError(
            f"link {record.link.hex()} does not match the record's fields (expected {expected.hex()})",
            ledger=record.content.ledger,
            height=record.height,
        )


class ChainVerifier:
    """Checks one ledger's records in height order, holding only the last link and the rules.

    Start it empty to check from genesis, or with :meth:`after` to resume from a record
    already checked (a store's head, a sweep's checkpoint).
    """

    def __init__(self, ledger: str, limits: Limits) -> None:
        self.ledger = ledger
        self.limits = limits
        self.next_height = 0
        self.prev = ZERO_LINK
        self.rules: LedgerRules | None = None

    @classmethod
    def after(cls, ledger: str, height: int, link: bytes, rules: LedgerRules, limits: Limits) -> ChainVerifier:
        """A verifier that expects the record after ``height``, whose link was ``link``."""
        verifier = cls(ledger, limits)
        verifier.next_height = height + 1
        verifier.prev = link
        verifier.rules = rules
        return verifier

    def check(self, record: Record) -> LedgerRules:
        """Raise the first failure of ``record`` as the next record; return the ledger's rules."""
        # Errors name this verifier's ledger and the record's height, passed as they are
        # raised: building a `where` for every record that passes costs more than a check.
        ledger, height, content = self.ledger, record.height, record.content
        if content.ledger != ledger:
            raise WrongLedgerError(f"record belongs to ledger {content.ledger!r}", ledger=ledger, height=height)
        if height != self.next_height:
            raise HeightGapError(f"expected height {self.next_height}, found {height}", ledger=ledger, height=height)
        rules = self.rules
        if rules is None:
            if record.prev != ZERO_LINK:
                raise BadGenesisError("the genesis record's prev must be 32 zero bytes", ledger=ledger, height=height)
            rules = LedgerRules.from_genesis(content, self.limits)
        elif content.kind == GENESIS_KIND:
            raise BadGenesisError("a genesis record may only stand at height 0", ledger=ledger, height=height)
        verify_record(record, rules)
        if record.prev != self.prev:
            raise BadLinkError(
                f"prev {record.prev.hex()} is not the link of height {height - 1} ({self.prev.hex()})",
                ledger=ledger,
                height=height,
            )
        return rules

    def advance(self, record: Record, rules: LedgerRules) -> None:
        """Take ``record`` (already checked) as the new head."""
        self.rules = rules
        self.next_height = record.height + 1
        self.prev = record.link

    def feed(self, record: Record) -> None:
        self.advance(record, self.check(record))
