"""Builders for the rules tests: a ledger under construction beside the engine that judges it.

Handed out through the session fixture ``rules_kit`` (test modules cannot import a conftest
by name under ``--import-mode=importlib``); it makes a fresh :class:`Bench` per call, so
hypothesis tests can use it too.
"""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass
from typing import Any

import pytest

from vledger.config.settings import Limits
from vledger.node.errors import RuleError
from vledger.node.ledger import LedgerRules
from vledger.node.record import ZERO_LINK, Content, Entry, Record
from vledger.node.rules.engine import RulesEngine
from vledger.node.sealed import seal, siv_encrypt

LIMITS = Limits()
ORIGIN = "node-1"
T0 = 1_790_000_000_000  # ms; the genesis is accepted at T0
OPENS = T0 + 100_000
CLOSES = T0 + 200_000
CHOICES = ["alice", "bob", "carol"]
SEAL_KEY = bytes(range(64))

ELECTION = {"type": "election", "choices": CHOICES, "opens": OPENS, "closes": CLOSES}
ELECTION_KINDS = ("cast", "note", "register", "uncast", "withdraw")
CHARITY = {"type": "charity", "currency": "SAR", "funds": ["orphans", "zakat"]}
CHARITY_KINDS = ("disbursement", "donation", "note")
RESOURCES = {"type": "resources", "unit": "credits", "issuers": ["treasury"]}
RESOURCES_KINDS = ("issue", "note", "transfer")
FILES_KINDS = ("file", "note")


class Ledger:
    """A ledger being written: a genesis, then records placed one after another."""

    def __init__(self, rules: dict[str, Any], kinds: tuple[str, ...], name: str = "rules-test") -> None:
        self.name = name
        self.rules = LedgerRules(kinds=kinds, difficulty=0, rules=rules)
        content = self.rules.genesis_content(name, "admin", "genesis-1", T0)
        self.records = [Entry.prepare(content, 0, LIMITS).place(0, ZERO_LINK, T0, ORIGIN)]
        self._requests = 0

    @property
    def head(self) -> Record:
        return self.records[-1]

    def make(
        self, kind: str, payload: dict[str, Any], *, author: str = "clerk", at: int | None = None, ts: int | None = None
    ) -> Record:
        """The record placed right after the head (not appended), accepted ``at`` (default: 1 s after the head).

        The client's time ``ts`` is the acceptance time unless given.
        """
        self._requests += 1
        accepted = self.head.accepted + 1000 if at is None else at
        content = Content(self.name, kind, payload, author, f"req-{self._requests}", accepted if ts is None else ts)
        return Entry.prepare(content, 0, LIMITS).place(self.head.height + 1, self.head.link, accepted, ORIGIN)

    def push(self, record: Record) -> Record:
        self.records.append(record)
        return record

    def add(self, kind: str, payload: dict[str, Any], **kwargs: Any) -> Record:
        """Append a record whatever the rules say (a chain with rule breakers)."""
        return self.push(self.make(kind, payload, **kwargs))


@dataclass
class Bench:
    """An engine that has applied a ledger's genesis, and that ledger."""

    engine: RulesEngine
    ledger: Ledger

    @property
    def domain(self) -> Any:
        state = self.engine.state(self.ledger.name)
        assert state is not None
        return state.domain

    def submit(self, kind: str, payload: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """What ingest does: check and apply the next record, then store it."""
        record = self.ledger.make(kind, payload, **kwargs)
        values = self.engine.check_and_apply(record, self.ledger.rules)
        self.ledger.push(record)
        return values

    def refuse(self, kind: str, payload: dict[str, Any], error: type[RuleError], **kwargs: Any) -> RuleError:
        """Submit a record that must be refused with ``error``; check it names the record and changes nothing."""
        record = self.ledger.make(kind, payload, **kwargs)
        before = self.snapshot()
        with pytest.raises(error) as caught:
            self.engine.check_and_apply(record, self.ledger.rules)
        assert type(caught.value) is error
        assert (caught.value.ledger, caught.value.height) == (self.ledger.name, record.height)
        assert self.snapshot() == before
        return caught.value

    def snapshot(self) -> Any:
        state = self.engine.state(self.ledger.name)
        assert state is not None
        return state.head, copy.deepcopy(vars(state.domain))


class RulesKit:
    T0 = T0
    OPENS = OPENS
    CLOSES = CLOSES
    CHOICES = tuple(CHOICES)

    def bench(self, rules: dict[str, Any], kinds: tuple[str, ...], name: str = "rules-test") -> Bench:
        ledger = Ledger(rules, kinds, name)
        engine = RulesEngine()
        assert engine.check_and_apply(ledger.head, ledger.rules) == {}
        return Bench(engine, ledger)

    def election(self, **rules: Any) -> Bench:
        return self.bench({**ELECTION, **rules}, ELECTION_KINDS, "election-2026")

    def charity(self, **rules: Any) -> Bench:
        return self.bench({**CHARITY, **rules}, CHARITY_KINDS, "zakat-fund")

    def resources(self, **rules: Any) -> Bench:
        return self.bench({**RESOURCES, **rules}, RESOURCES_KINDS, "credits")

    def files(self, read: str = "public", **rules: Any) -> Bench:
        return self.bench({"type": "files", "read": read, **rules}, FILES_KINDS, "files")

    @staticmethod
    def donor(name: str = "Zoë", ledger: str = "zakat-fund") -> str:
        return seal(SEAL_KEY, name, ledger)

    @staticmethod
    def donor_v1(name: str = "Zoë", ledger: str = "zakat-fund") -> str:
        """An S1 id (PROTOCOL 8 version 1), as chains written before S2 hold them."""
        sealed = siv_encrypt(SEAL_KEY, name.encode(), ledger.encode())
        return "S1-" + base64.b32encode(sealed).decode("ascii").rstrip("=").lower()


@pytest.fixture(scope="session")
def rules_kit() -> RulesKit:
    return RulesKit()
