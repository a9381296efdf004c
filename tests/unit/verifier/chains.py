"""Elections planned ahead, with rule breakers, for the observer tests (unit and integration).

:func:`plan_election` gives every entry of an election in the order it must be written
(registrations, first casts, uncasts and withdrawals, casts again) and what an honest
count must find, computed from the voters' stories alone, never by the rules engine.
With ``breakers`` it mixes in records that break a rule: an ingest node refuses those,
so they reach a chain only when written into a store that has no domain rules
(:func:`write_entries`), which is how the observers' flagging is tested.

Imported as ``vledger.tests.unit.verifier.chains`` (``--import-mode=importlib``).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from vledger.config.settings import Limits
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry
from vledger.node.rules.votes import ELECTRONIC_ID_BYTES, ELECTRONIC_ID_PREFIX
from vledger.node.store import ChainStore

LIMITS = Limits()
AUTHOR = "clerk"
CHOICES = ("alice", "bob", "carol")
KINDS = ("cast", "register", "uncast", "withdraw")
DAY_MS = 86_400_000


def election_rules(now_ms: int) -> LedgerRules:
    """An election open since a minute ago, for a day."""
    rules = {"type": "election", "choices": list(CHOICES), "opens": now_ms - 60_000, "closes": now_ms + DAY_MS}
    return LedgerRules(KINDS, 0, rules)


@dataclass
class Election:
    """Every entry of an election, phase by phase, and what an honest count finds."""

    ledger: str
    rules: LedgerRules
    author: str = AUTHOR
    phases: list[list[Entry]] = field(default_factory=lambda: [[], [], [], []])
    counts: Counter[str] = field(default_factory=Counter)
    registered: int = 0
    withdrawn: int = 0
    breakers: list[str] = field(default_factory=list)  # the codes the breakers must be flagged with, in order
    eids: list[str] = field(default_factory=list)  # each voter's electronic id, by voter number
    _serial: int = 0

    def genesis(self, ts: int) -> Entry:
        content = self.rules.genesis_content(self.ledger, self.author, f"{self.ledger}-genesis", ts)
        return Entry.prepare(content, 0, LIMITS)

    def add(self, phase: int, kind: str, payload: dict[str, Any], ts: int) -> Entry:
        self._serial += 1
        content = Content(self.ledger, kind, payload, self.author, f"{self.ledger}-{self._serial}", ts)
        entry = Entry.prepare(content, 0, LIMITS)
        self.phases[phase].append(entry)
        return entry

    def breaker(self, code: str, phase: int, kind: str, payload: dict[str, Any], ts: int) -> None:
        self.add(phase, kind, payload, ts)
        self.breakers.append(code)

    @property
    def entries(self) -> list[Entry]:
        return [entry for phase in self.phases for entry in phase]

    @property
    def cast(self) -> int:
        return sum(self.counts.values())


def electronic_id(entry: Entry) -> str:
    return ELECTRONIC_ID_PREFIX + entry.checksum[:ELECTRONIC_ID_BYTES].hex()


def plan_election(
    ledger: str, voters: int, now_ms: int, *, seed: int = 1, breakers: bool = False, author: str = AUTHOR
) -> Election:
    """``voters`` voters: about 10 % uncast and cast another choice, 5 % withdraw; the rest vote once."""
    rng = random.Random(seed)
    election = Election(ledger, election_rules(now_ms), author)
    ts = now_ms
    for number in range(voters):
        voter_id = f"{ledger}-V{number:06d}"
        eid = electronic_id(election.add(0, "register", {"voter_id": voter_id}, ts))
        election.eids.append(eid)
        election.registered += 1
        first = rng.choice(CHOICES)
        election.add(1, "cast", {"electronic_id": eid, "choice": first}, ts)
        draw = rng.random()
        if draw < 0.10:
            second = rng.choice([c for c in CHOICES if c != first])
            election.add(2, "uncast", {"electronic_id": eid}, ts)
            election.add(3, "cast", {"electronic_id": eid, "choice": second}, ts)
            election.counts[second] += 1
        elif draw < 0.15:
            election.add(2, "withdraw", {"electronic_id": eid}, ts)
            election.withdrawn += 1
        else:
            election.counts[first] += 1
    election.counts.update(dict.fromkeys(CHOICES, 0))  # every choice present, zeros included
    if breakers and voters >= 2:
        steady, withdrawn = _steady_voter(election), _withdrawn_voter(election)
        election.breaker("already_registered", 1, "register", {"voter_id": f"{ledger}-V000000"}, ts)
        election.breaker("not_registered", 1, "cast", {"electronic_id": "E-0000000000000000", "choice": "bob"}, ts)
        election.breaker("invalid_choice", 1, "cast", {"electronic_id": election.eids[0], "choice": "mallory"}, ts)
        election.breaker("bad_payload", 1, "cast", {"electronic_id": election.eids[0]}, ts)
        if steady is not None:
            election.breaker("already_voted", 2, "cast", {"electronic_id": steady, "choice": "carol"}, ts)
        if withdrawn is not None:
            election.breaker("withdrawn", 3, "cast", {"electronic_id": withdrawn, "choice": "alice"}, ts)
            election.breaker("withdrawn", 3, "uncast", {"electronic_id": withdrawn}, ts)
    return election


def _steady_voter(election: Election) -> str | None:
    """A voter who cast once and did nothing else."""
    touched = {e.content.payload["electronic_id"] for e in election.phases[2]}
    return next((eid for eid in election.eids if eid not in touched), None)


def _withdrawn_voter(election: Election) -> str | None:
    return next((e.content.payload["electronic_id"] for e in election.phases[2] if e.content.kind == "withdraw"), None)


def write_entries(store: ChainStore, entries: list[Entry]) -> None:
    """Place ``entries`` in order in a store (rules or none), sharing group commits; every one must be placed."""
    futures = [store.submit_entry(entry) for entry in entries]
    for future in futures:
        future.result()


def write_election(store: ChainStore, election: Election, ts: int) -> None:
    """The whole election into ``store``: its genesis, then phase after phase."""
    store.create_ledger(election.genesis(ts))
    for phase in election.phases:
        write_entries(store, phase)
