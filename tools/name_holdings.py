"""What an account name holds on the resources ledgers: units, and the right to issue (PROTOCOL 7.3).

A grant is the account's and ends with it (16.2), but units and a genesis's ``issuers`` are
keyed by the name alone: an account added again under a removed account's name, or under a
name that units were sent to before any account had it, moves those units and issues. So
``vledger user remove`` says what the name keeps, and ``vledger user add`` of a name that holds
any refuses unless told ``--reuse-name`` (outsider o6 H6). Each resources ledger is replayed
here through its rules from its chain, checked record by record, as ``grant list`` replays the
admin ledger: no node's word on a balance is taken.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ..client.session import Session
from ..node.errors import NodeUnavailableError, RemoteError
from ..node.rules.engine import RulesEngine
from ..node.rules.resources import ResourcesState


@dataclass(frozen=True, slots=True)
class Holding:
    """What ``account`` holds on one resources ledger: ``units`` of ``unit``, and whether it issues."""

    ledger: str
    unit: str
    units: int
    issuer: bool

    def text(self) -> str:
        held = [f"{self.units:,} {self.unit}"] if self.units else []
        return f"{' and '.join([*held, *(['the right to issue'] if self.issuer else [])])} on {self.ledger}"


def holding_on(session: Session, ledger: str, account: str) -> Holding | None:
    """``account``'s holding on the resources ledger ``ledger`` (None: no units, no issuer)."""
    engine = RulesEngine()
    engine.replay(session.records(ledger))
    state = engine.state(ledger)
    if state is None or not isinstance(state.domain, ResourcesState):
        return None
    domain = state.domain
    units, issuer = domain.balance(account), account in domain.issuers
    return Holding(ledger, domain.unit, units, issuer) if units or issuer else None


def holdings(session: Session, account: str) -> list[Holding]:
    """What ``account`` holds on every resources ledger of the cluster, in ledger order."""
    found = []
    for entry in session.ledgers():
        ledger = entry.get("ledger")
        if entry.get("type") == "resources" and isinstance(ledger, str):
            held = holding_on(session, ledger, account)
            if held is not None:
                found.append(held)
    return found


def checked_holdings(session: Session, account: str) -> list[Holding] | None:
    """As :func:`holdings`; None, with a warning on stderr, when a ledger could not be read: an
    account command goes on rather than wait for every resources ledger's home."""
    try:
        return holdings(session, account)
    except (NodeUnavailableError, RemoteError) as e:
        print(
            f"vledger: warning: could not read what the name {account} holds on the resources ledgers ({e})",
            file=sys.stderr,
        )
        return None


def holdings_text(account: str, held: list[Holding]) -> str:
    return f"the name {account} holds {'; '.join(h.text() for h in held)}"
