"""Internal resources or currency: issuers create units, owners move their own.

Genesis rules::

    {"type": "resources", "unit": str, "issuers": [account, ...], "max_holders": int}

``unit`` names what is counted (``"credits"``, ``"cpu-hours"``); ``issuers`` (non-empty,
distinct account names) are the only authors whose ``issue`` records create units. The
genesis ``kinds`` must include ``issue`` and ``transfer``; other kinds are ignored here.
The issuers are part of the chain, so observers judge issues exactly as ingest does.
``max_holders`` (optional, 1..MAX_HOLDERS_LIMIT) bounds the accounts holding units at once: each
observer signs and publishes the whole balance map after every write, so without a bound any
holder of one unit could grow it (and every copy of it in Redis) by a name per transfer until no
reader takes it (outsider o6 H9). A genesis without it sets no bound: ledgers created before the
bound existed hold records it would refuse, and a replay must accept what was acknowledged then
(review r11 A). New ledgers get ``DEFAULT_MAX_HOLDERS`` written out (:meth:`ResourcesState.new_rules`)
by the CLI and the Python client, and a home refuses to start one without a bound (a check at
creation only: engine.check_new_rules).

**Records**, each payload with exactly the fields shown (else ``bad_payload``), amounts
integers >= 1 (a bool or float refused), checked in this order:

* ``issue`` ``{"account": account, "amount": int}``: the record's author is an issuer
  [``not_issuer``]; ``amount`` units are added to ``account``, unless they would take the
  total ever issued past 2**64 - 1 [``bad_payload``]: a signed tally holds that total, which
  also bounds every balance, and canonical msgpack has no larger integer.
* ``transfer`` ``{"from": account, "to": account, "amount": int}``: ``from`` is the
  record's author, as only an owner moves its balance [``not_owner``]; ``from`` and ``to``
  differ [``self_transfer``]; ``from`` holds at least ``amount`` [``insufficient_funds``].

Both rules bind every unit to an account, so no grant closes ``issue`` or ``transfer``
(``bound_kinds``, PROTOCOL 16.2): a grant of them, or of ``*``, leaves each holder moving its own.

An ``issue`` or ``transfer`` that would make ``to`` (``account``) a holder beyond ``max_holders``
accounts holding units, counted after the record (a transfer of a whole balance frees its
source's place), is refused [``too_many_holders``], after the checks above.

State: one balance per account holding units (accounts at zero are dropped).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..canonical import INT_MAX
from ..errors import (
    InsufficientFundsError,
    NotIssuerError,
    NotOwnerError,
    SelfTransferError,
    TooManyHoldersError,
)
from ..ledger import LedgerRules
from ..record import ACCOUNT_PATTERN, Record
from . import Domain, GenesisReader, Plan, refuse

# What `vledger ledger create` and the Python client write into a resources genesis that names no bound: written out,
# never implied, so a later change of this default judges no existing ledger anew.
DEFAULT_MAX_HOLDERS = 10_000
# The largest bound a genesis may set: a balance map of that many entries, each a name of at most
# 64 bytes (2 of msgpack header) and an amount of at most 9, is some 3 MB, under the 4 MiB a
# reader takes of one tally entry (PROTOCOL 11.1), so the signed tally stays readable.
MAX_HOLDERS_LIMIT = 40_000


@dataclass(frozen=True, slots=True)
class ResourcesTally:
    unit: str
    balances: dict[str, int]  # every account holding units, in name order
    issued: int  # total ever issued: also the sum of the balances, as transfers only move units
    issues: int  # number of issue records
    transfers: int


class ResourcesState(Domain):
    type_name = "resources"
    kinds = frozenset({"issue", "transfer"})
    # Only the genesis issuers issue and each holder moves only its own units: no grant closes either.
    bound_kinds = kinds

    def __init__(self, genesis: Record, rules: LedgerRules) -> None:
        reader = GenesisReader(genesis, rules, type(self))
        self.identifiers = reader.identifiers
        reader.keys(("unit", "issuers"), ("max_holders",))
        self.unit = reader.text("unit")
        self.issuers = frozenset(reader.names("issuers", ACCOUNT_PATTERN))
        self.max_holders: int | None = None
        if "max_holders" in reader.rules:
            self.max_holders = reader.integer("max_holders", 1, MAX_HOLDERS_LIMIT)
        self._balances: dict[str, int] = {}
        self._issued = 0
        self._issues = 0
        self._transfers = 0

    @classmethod
    def new_rules(cls, rules: Mapping[str, Any]) -> dict[str, Any]:
        return {"max_holders": DEFAULT_MAX_HOLDERS, **rules}

    def plan(self, record: Record) -> Plan:
        match record.content.kind:
            case "issue":
                return self._issue(record)
            case "transfer":
                return self._transfer(record)
        return Plan()

    def _issue(self, record: Record) -> Plan:
        fields = self.fields(record, "account", "amount")
        account, amount = fields.account("account"), fields.amount()
        author = record.content.author
        if author not in self.issuers:
            refuse(NotIssuerError, record, f"{author!r} is not an issuer ({sorted(self.issuers)})")
        if amount > INT_MAX - self._issued:
            fields.fail(f"amount {amount} would take the units issued past 2**64 - 1 (now {self._issued})")
        self._check_room(record, account, len(self._balances))

        def commit() -> None:
            self._balances[account] = self.balance(account) + amount
            self._issued += amount
            self._issues += 1

        return Plan(commit)

    def _transfer(self, record: Record) -> Plan:
        fields = self.fields(record, "from", "to", "amount")
        source, target, amount = fields.account("from"), fields.account("to"), fields.amount()
        author = record.content.author
        if source != author:
            refuse(NotOwnerError, record, f"{author!r} cannot move the balance of {source!r}")
        if source == target:
            refuse(SelfTransferError, record, f"{source!r} transfers to itself")
        held = self.balance(source)
        if amount > held:
            refuse(InsufficientFundsError, record, f"{source!r} holds {held} {self.unit}, not {amount}")
        self._check_room(record, target, len(self._balances) - (held == amount))

        def commit() -> None:
            if held == amount:
                del self._balances[source]
            else:
                self._balances[source] = held - amount
            self._balances[target] = self.balance(target) + amount
            self._transfers += 1

        return Plan(commit)

    def _check_room(self, record: Record, account: str, holders: int) -> None:
        """Refuse a record that makes ``account`` a new holder where ``holders`` (the count once
        the record's source let go, if it does) already reach the bound."""
        if self.max_holders is not None and account not in self._balances and holders >= self.max_holders:
            refuse(
                TooManyHoldersError,
                record,
                f"{account!r} would be a holder beyond the ledger's {self.max_holders} (max_holders)",
            )

    def balance(self, account: str) -> int:
        return self._balances.get(account, 0)

    def tally(self) -> ResourcesTally:
        return ResourcesTally(
            self.unit, dict(sorted(self._balances.items())), self._issued, self._issues, self._transfers
        )
