"""Domain rules of a ledger: elections, charity funds, internal currency, files.

A ledger's genesis ``rules`` map names its domain in ``"type"``;
:class:`~vledger.node.rules.engine.RulesEngine` keeps one domain state per ledger and runs
each record through it. Ingest nodes do so before accepting a record, observers re-run
the same rules over the chain to flag rule breakers and count on their own, so a rule may
depend on the chain alone (contents, heights, ``accepted`` times, the genesis rules),
never on a node's configuration or on account roles held outside the chain.

This module holds what every domain shares: the :class:`Domain` interface, the
:class:`Plan` a check returns (so that a record is fully checked before anything
changes), and :class:`Fields`, which reads a payload and turns a missing, unknown or
wrong-typed field into :class:`~vledger.node.errors.BadPayloadError`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, NoReturn

from ...config.settings import PROTOCOL_LIMITS
from ..errors import BadDomainRulesError, BadIdentifierError, BadPayloadError, RuleError, Where
from ..identifiers import IDENTIFIER_RULE_KEY, NFC_RULE, RULES, identifier_fault
from ..ledger import LedgerRules
from ..outside import QUORUM_FIELD, WITNESSES_FIELD
from ..record import ACCOUNT_PATTERN, Record

# Genesis rules fields a domain allows beside its own: the pinned checkpoint key (10.7) and the
# outside witnesses with their quorum (13.9).
BESIDE = ("checkpoint_key", "standby_key", WITNESSES_FIELD, QUORUM_FIELD)

# Account names as docs/PROTOCOL.md section 2 defines them, the authors' own pattern: an
# account that receives units must be able to author the record that moves them.
UINT64_MAX = 2**64 - 1


class Ref(NamedTuple):
    """Where a record stands: its height and its hash (link)."""

    height: int
    hash: bytes

    @classmethod
    def of(cls, record: Record) -> Ref:
        return cls(record.height, record.link)


def where(record: Record) -> Where:
    return {"ledger": record.content.ledger, "height": record.height}


def refuse(error: type[RuleError], record: Record, message: str) -> NoReturn:
    """Raise ``error`` naming ``record``'s ledger and height."""
    raise error(message, **where(record))


def _no_change() -> None:
    pass


@dataclass(frozen=True, slots=True)
class Plan:
    """A record that passed every check: the values for its receipt and the change it makes.

    Nothing changes until ``commit`` runs, and ``commit`` cannot fail, so a failed check
    leaves the state exactly as it was.
    """

    commit: Callable[[], None] = _no_change
    values: dict[str, Any] = field(default_factory=dict)


class Domain(ABC):
    """The rule state of one ledger, built from its genesis and fed its records in order."""

    type_name: ClassVar[str]
    # The kinds this domain reads; the genesis ``kinds`` must allow them all.
    kinds: ClassVar[frozenset[str]] = frozenset()
    # Kinds its rules already bind to who may write them (a resources ledger's, 7.3): a grant
    # would only take from every other holder what the rules give it, so none closes them (16.2).
    bound_kinds: ClassVar[frozenset[str]] = frozenset()
    # The identifier rule the ledger's genesis turned on (7.5), "" for none; set from GenesisReader.
    identifiers: str = ""

    @abstractmethod
    def __init__(self, genesis: Record, rules: LedgerRules) -> None:
        """Read and check the genesis' domain rules; raises BadDomainRulesError."""

    @classmethod
    def new_rules(cls, rules: Mapping[str, Any]) -> dict[str, Any]:
        """``rules`` for a new ledger of this domain, each default it has written out: a genesis
        keeps the rule it was created under when a later version changes the default."""
        return dict(rules)

    @classmethod
    def receipt_values(cls, record: Record) -> dict[str, Any]:
        """The values a receipt for ``record`` carries, from the record alone.

        A retried request gets the receipt of the record already stored, values included,
        without the record being checked again.
        """
        return {}

    @abstractmethod
    def plan(self, record: Record) -> Plan:
        """Check ``record`` (the next one after genesis) against the state, changing nothing.

        Raises a RuleError leaf on the first rule it breaks.
        """

    def fields(self, record: Record, *keys: str) -> Fields:
        """``record``'s payload read as :class:`Fields`, under this ledger's identifier rule."""
        return Fields(record, *keys, identifiers=self.identifiers)


class GenesisReader:
    """Reads a genesis ``rules`` map; every fault is a BadDomainRulesError at height 0.

    Also reads the identifier rule (``"identifiers": "nfc-visible"`` or ``"nfc"``, any other
    value refused) into :attr:`identifiers`; with it on, every string the reader returns must
    follow it.
    """

    def __init__(self, genesis: Record, rules: LedgerRules, domain: type[Domain]) -> None:
        self.where = where(genesis)
        self.rules = rules.rules
        self.type_name = domain.type_name
        missing = sorted(domain.kinds - set(rules.kinds))
        if missing:
            self.fail(f"an {self.type_name!r} ledger needs the kinds {missing} in its genesis kinds")
        # Present with any other value, null included, is bad_rules (7.5): read as "no rule", a
        # null would switch off the lookalike check a new ledger gets by default, and a counter
        # written from PROTOCOL alone would call the ledger unusable while the observers count it.
        rule = self.rules.get(IDENTIFIER_RULE_KEY, None)
        if IDENTIFIER_RULE_KEY in self.rules and rule not in RULES:
            self.fail(f"{IDENTIFIER_RULE_KEY} must be one of {list(RULES)} when given, not {rule!r}")
        self.identifiers: str = rule or ""

    def _check_identifier(self, key: str, value: str) -> None:
        fault = identifier_fault(value, self.identifiers) if self.identifiers else None
        if fault is not None:
            self.fail(f"{key}: {value!r} {fault}")

    def fail(self, message: str) -> NoReturn:
        raise BadDomainRulesError(f"{self.type_name} rules: {message}", **self.where)

    def keys(self, required: Collection[str], optional: Collection[str] = ()) -> None:
        missing = sorted(set(required) - set(self.rules))
        # Beside the domain's own fields: its type, the checkpoint keys a genesis may pin (the
        # home's, 10.7, and its standby's, 10.9), the outside witnesses it may list (13.9) and
        # its identifier rule (7.5).
        unknown = sorted(set(self.rules) - set(required) - set(optional) - {"type", IDENTIFIER_RULE_KEY, *BESIDE})
        if missing or unknown:
            self.fail(f"missing fields {missing}, unknown fields {unknown}")

    def text(self, key: str) -> str:
        value = self.rules[key]
        if not isinstance(value, str) or not value:
            self.fail(f"{key} must be a non-empty string")
        self._check_identifier(key, value)
        return value

    def integer(self, key: str, minimum: int = 0, maximum: int = UINT64_MAX) -> int:
        """An exact integer in ``minimum..maximum``, the range the message names whichever end failed."""
        value = self.rules[key]
        if not _is_int(value) or not minimum <= value <= maximum:
            self.fail(f"{key} must be an integer in {minimum}..{maximum}")
        return int(value)

    def names(self, key: str, pattern: re.Pattern[str] | None = None) -> tuple[str, ...]:
        """A non-empty list of distinct non-empty strings (matching ``pattern`` if given)."""
        value = self.rules[key]
        if not isinstance(value, list) or not value:
            self.fail(f"{key} must be a non-empty list")
        for item in value:
            if not isinstance(item, str) or not item or (pattern is not None and not _is_account(item, pattern)):
                self.fail(f"{key}: {item!r} is not a valid entry")
            self._check_identifier(key, item)
        if len(set(value)) != len(value):
            self.fail(f"{key} has repeated entries")
        return tuple(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_account(value: str, pattern: re.Pattern[str]) -> bool:
    return len(value) <= PROTOCOL_LIMITS.max_name_length and pattern.fullmatch(value) is not None


class Fields:
    """A payload whose keys are exactly those named; typed reads raise BadPayloadError.

    With ``identifiers`` (the ledger's genesis turned the rule of 7.5 on), every string read
    must follow the identifier rule, else BadIdentifierError.
    """

    def __init__(self, record: Record, *keys: str, identifiers: str = "") -> None:
        self.record = record
        self.identifiers = identifiers
        self.payload = record.content.payload
        if set(self.payload) != set(keys):
            missing = sorted(set(keys) - set(self.payload))
            unknown = sorted(set(self.payload) - set(keys))
            kind = record.content.kind
            self.fail(f"a {kind!r} payload has the fields {sorted(keys)} (missing {missing}, unknown {unknown})")

    def fail(self, message: str) -> NoReturn:
        refuse(BadPayloadError, self.record, message)

    def text(self, key: str, *, allow_empty: bool = False) -> str:
        value = self.payload[key]
        if not isinstance(value, str):
            self.fail(f"{key} must be a string, not {type(value).__name__}")
        if not value and not allow_empty:
            self.fail(f"{key} must not be empty")
        fault = identifier_fault(value, self.identifiers) if self.identifiers else None
        if fault is not None:
            refuse(BadIdentifierError, self.record, f"{key} {value!r} {fault}")
        return value

    def free_text(self, key: str) -> str:
        """A string no rule compares (a donation's ``purpose``): under either identifier rule it
        follows ``"nfc"`` only, so an Arabic purpose may hold U+200F RIGHT-TO-LEFT MARK and an
        emoji sequence its U+200D ZERO WIDTH JOINER, which ``"nfc-visible"`` refuses in an id."""
        value = self.payload[key]
        if not isinstance(value, str):
            self.fail(f"{key} must be a string, not {type(value).__name__}")
        fault = identifier_fault(value, NFC_RULE) if self.identifiers else None
        if fault is not None:
            refuse(BadIdentifierError, self.record, f"{key} {value!r} {fault}")
        return value

    def account(self, key: str) -> str:
        """An account name (docs/PROTOCOL.md section 2): one that can author a record to move what it gets."""
        value = self.text(key)
        if not _is_account(value, ACCOUNT_PATTERN):
            self.fail(f"{key} {value!r} is not an account name")
        return value

    def integer(self, key: str, minimum: int) -> int:
        """An exact integer ``>= minimum``; a bool or a float is refused, whatever its value."""
        value = self.payload[key]
        if not _is_int(value):
            self.fail(f"{key} must be an integer, not {type(value).__name__}")
        if value < minimum:
            self.fail(f"{key} must be at least {minimum}, not {value}")
        return int(value)

    def amount(self, key: str = "amount") -> int:
        """A positive whole number of minor units (cents, halalas, resource units)."""
        return self.integer(key, 1)
