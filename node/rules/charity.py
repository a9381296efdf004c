"""Charity and zakat funds: public donations and disbursements, never more out than in.

Genesis rules::

    {"type": "charity", "currency": str, "funds": [str, ...]}   # "funds" optional

``currency`` names the unit of every amount (``"SAR"``, an ISO 4217 code); amounts are whole
numbers of its minor unit (halalas, cents; yen, which have none; fils, a thousandth of a dinar),
counted as such: how many decimals a unit has matters only to show them (node/currency.py).
With ``funds`` (non-empty, distinct), only those funds exist; without it, a fund exists from
its first donation. The genesis ``kinds`` must include
``donation`` and ``disbursement``; other kinds are ignored here.

**Records**, each payload with exactly the fields shown (else ``bad_payload``), checked in
this order:

* ``donation`` ``{"donor": sealed id, "fund": str, "amount": int, "source": str, "purpose": str}``:
  ``donor`` spelt as a sealed id (node/sealed.py: who gave stays private, yet the same
  donor is always the same id) and ``amount`` an integer >= 1, a bool or float refused
  [``bad_payload``]; the fund one of ``funds`` when those are listed [``unknown_fund``].
  ``source`` and ``purpose`` are free text, possibly empty. A donation that would take the
  ledger's total donated past 2**64 - 1 is ``bad_payload``: a signed tally holds that total,
  and canonical msgpack has no larger integer, so two huge gifts would stop every observer's
  tallies of the ledger for good.
* ``disbursement`` ``{"fund": str, "target": str, "amount": int, "purpose": str}``: the
  fund exists [``unknown_fund``]; the amount at most the fund's balance
  [``insufficient_funds``].

Who may write to the ledger is the ingest node's business; the rules judge what is written.
State: one running total per fund.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..canonical import INT_MAX
from ..errors import InsufficientFundsError, UnknownFundError
from ..ledger import LedgerRules
from ..record import Record
from ..sealed import is_sealed
from . import Domain, GenesisReader, Plan, refuse


@dataclass(frozen=True, slots=True)
class FundTotals:
    donated: int = 0
    disbursed: int = 0
    donations: int = 0  # number of donation records
    disbursements: int = 0

    @property
    def balance(self) -> int:
        return self.donated - self.disbursed


@dataclass(frozen=True, slots=True)
class CharityTally:
    currency: str
    funds: dict[str, FundTotals]  # by fund name, in name order

    @property
    def donated(self) -> int:
        return sum(fund.donated for fund in self.funds.values())

    @property
    def disbursed(self) -> int:
        return sum(fund.disbursed for fund in self.funds.values())

    @property
    def balance(self) -> int:
        return self.donated - self.disbursed


class CharityState(Domain):
    type_name = "charity"
    kinds = frozenset({"donation", "disbursement"})

    def __init__(self, genesis: Record, rules: LedgerRules) -> None:
        reader = GenesisReader(genesis, rules, type(self))
        self.identifiers = reader.identifiers
        reader.keys(("currency",), optional=("funds",))
        self.currency = reader.text("currency")
        self.listed = "funds" in rules.rules
        self._funds: dict[str, FundTotals] = dict.fromkeys(reader.names("funds"), FundTotals()) if self.listed else {}
        self._donated = 0  # every fund's donations: the tally's largest figure

    def plan(self, record: Record) -> Plan:
        match record.content.kind:
            case "donation":
                return self._donation(record)
            case "disbursement":
                return self._disbursement(record)
        return Plan()

    def _donation(self, record: Record) -> Plan:
        fields = self.fields(record, "donor", "fund", "amount", "source", "purpose")
        donor = fields.text("donor")
        if not is_sealed(donor):
            fields.fail(f"donor {donor!r} is not a sealed id")
        fund, amount = fields.text("fund"), fields.amount()
        fields.free_text("source")
        fields.free_text("purpose")
        totals = self._funds.get(fund)
        if totals is None:
            if self.listed:
                refuse(UnknownFundError, record, f"fund {fund!r} is not one of {sorted(self._funds)}")
            totals = FundTotals()
        # The ledger's total bounds every fund's (and the balances): checking it keeps every
        # figure of the tally a canonical integer (PROTOCOL 7.2, 11.2).
        if amount > INT_MAX - self._donated:
            fields.fail(f"amount {amount} would take the ledger's donations past 2**64 - 1 (now {self._donated})")
        return self._update(
            fund, replace(totals, donated=totals.donated + amount, donations=totals.donations + 1), donated=amount
        )

    def _disbursement(self, record: Record) -> Plan:
        fields = self.fields(record, "fund", "target", "amount", "purpose")
        fund = fields.text("fund")
        fields.text("target")
        amount = fields.amount()
        fields.free_text("purpose")
        totals = self._funds.get(fund)
        if totals is None:
            refuse(UnknownFundError, record, f"fund {fund!r} has no donations and is not listed")
        if amount > totals.balance:
            refuse(
                InsufficientFundsError,
                record,
                f"fund {fund!r} holds {totals.balance} {self.currency} (minor units), not {amount}",
            )
        return self._update(
            fund, replace(totals, disbursed=totals.disbursed + amount, disbursements=totals.disbursements + 1)
        )

    def _update(self, fund: str, totals: FundTotals, *, donated: int = 0) -> Plan:
        def commit() -> None:
            self._funds[fund] = totals
            self._donated += donated

        return Plan(commit)

    def fund(self, name: str) -> FundTotals | None:
        return self._funds.get(name)

    def tally(self) -> CharityTally:
        return CharityTally(self.currency, dict(sorted(self._funds.items())))
