"""Shared builders for the node unit tests: valid entries, records and whole chains.

They are handed out through a session fixture (``kit``) because, with
``--import-mode=importlib``, test modules cannot import a conftest by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from vledger.config.settings import Limits
from vledger.node.ledger import LedgerRules
from vledger.node.record import ZERO_LINK, Content, Entry, Record

LEDGER = "ledger-a"
ORIGIN = "node-1"
KINDS = ("note", "vote")
T0 = 1_790_000_000_000  # milliseconds, 2026-09-21


@dataclass(frozen=True)
class ChainKit:
    """Builds valid ledgers quickly (difficulty 0..8 costs at most a few hundred hashes a record)."""

    limits: Limits = field(default_factory=Limits)
    ledger: str = LEDGER
    origin: str = ORIGIN
    kinds: tuple[str, ...] = KINDS
    t0: int = T0

    def rules(self, difficulty: int = 0, rules: dict[str, Any] | None = None) -> LedgerRules:
        return LedgerRules(kinds=self.kinds, difficulty=difficulty, rules=rules or {})

    def genesis_entry(self, difficulty: int = 0, ledger: str | None = None, request_id: str = "create-1") -> Entry:
        content = self.rules(difficulty).genesis_content(ledger or self.ledger, "admin", request_id, self.t0)
        return Entry.prepare(content, difficulty, self.limits)

    def content(
        self,
        i: int,
        *,
        ledger: str | None = None,
        kind: str = "note",
        payload: dict[str, Any] | None = None,
        author: str = "Zoe.1",
    ) -> Content:
        return Content(
            ledger=ledger or self.ledger,
            kind=kind,
            payload={"n": i, "text": f"message {i:04d} Zoë 🗳"} if payload is None else payload,
            author=author,
            request_id=f"req-{i}",
            ts=self.t0 + 1000 * i,
        )

    def entry(self, i: int, difficulty: int = 0, **kwargs: Any) -> Entry:
        return Entry.prepare(self.content(i, **kwargs), difficulty, self.limits)

    def chain(self, n: int, difficulty: int = 0, ledger: str | None = None) -> list[Record]:
        """A valid chain of ``n`` records: a genesis, then ``n - 1`` notes and votes."""
        assert n >= 1
        records = [self.genesis_entry(difficulty, ledger).place(0, ZERO_LINK, self.t0 + 5, self.origin)]
        for i in range(1, n):
            entry = self.entry(i, difficulty, ledger=ledger, kind=self.kinds[i % len(self.kinds)])
            records.append(self.extend(records[-1], entry))
        return records

    def extend(self, head: Record, entry: Entry) -> Record:
        """Place ``entry`` right after ``head``, as a home node would."""
        return entry.place(head.height + 1, head.link, head.accepted + 7, self.origin)


@pytest.fixture(scope="session")
def kit() -> ChainKit:
    return ChainKit()
