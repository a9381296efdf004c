"""A voter's records in an election: found by replaying the election, each record as verified as its caller read it.

:func:`check_voter` replays records (verified as they come, by the caller) through the
election's rules, as an observer counts them, and keeps those that name one electronic id
(the registration whose id it is, and the casts, uncasts and withdrawal that carry it), with
the rule each breaks, and the voter's standing at the last record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..node.errors import NotFoundError
from ..node.note import VerifiedCheckpoint
from ..node.record import Record
from ..node.rules import Ref
from ..node.rules.engine import RulesEngine
from ..node.rules.votes import ElectionState, Voter, electronic_id

VOTER_KINDS = ("cast", "uncast", "withdraw")  # the kinds whose payload carries an electronic id


@dataclass(frozen=True, slots=True)
class VoterRecord:
    record: Record
    flagged: str | None  # the rule it breaks (an observer does not count it), else None


@dataclass(frozen=True, slots=True)
class VoterCheck:
    """One election as read and verified, and what it holds of one electronic id."""

    ledger: str
    head: Ref
    records: tuple[VoterRecord, ...]
    voter: Voter | None  # the voter as the rules state it at the head (None: no valid registration)
    proven: VerifiedCheckpoint | None = None  # set when each record was proven in this checkpoint


def names_voter(record: Record, eid: str) -> bool:
    """Whether ``record`` is the registration of ``eid`` or a vote record that carries it."""
    kind = record.content.kind
    if kind == "register":
        return electronic_id(record) == eid
    return kind in VOTER_KINDS and record.content.payload.get("electronic_id") == eid


def check_voter(ledger: str, records: Iterable[Record], eid: str) -> VoterCheck:
    """Replay ``records`` (verified as they come) through the rules; the voter's records, flagged or not."""
    engine = RulesEngine()
    found = []
    head: Ref | None = None
    for record in records:
        violations = engine.replay([record])
        head = Ref.of(record)
        if names_voter(record, eid):
            found.append(VoterRecord(record, violations[0].error.code if violations else None))
    state = engine.state(ledger)
    if head is None or state is None:
        raise NotFoundError(f"no ledger {ledger!r} on this node")
    voter = state.domain.voter(eid) if isinstance(state.domain, ElectionState) else None
    return VoterCheck(ledger, head, tuple(found), voter)
