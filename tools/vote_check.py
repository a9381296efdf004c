"""``vledger vote check --electronic-id E``: a voter's own records, read from a copy of the chain and verified.

By default each record found is proven by its inclusion proof in a checkpoint the ledger's
key signed (with ``--quorum`` cosignatures): the election's records are read to find them,
but only the voter's own are verified, in O(log n) each. ``--full`` verifies and replays
every record from genesis instead (what follows describes that mode).

The voter (or anyone holding the id) asks a replica or an observer, by default the first
replica of the configuration, for the whole election with ``range``. Every record is
checked as the next of its chain from genesis to the head the node serves (the session's
ChainVerifier: checksum, proof of work, link), and replayed through the election's rules,
as an observer counts it. What it shows: the records that name the electronic id
(the registration whose id it is, and the casts, uncasts and withdrawal that carry it),
their heights and hashes, whether the vote counts, and the head that was verified.

An id without records is ``not_found`` and nothing else is said. A chain that does not
verify fails with the error of its first bad record (exit 1).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..node.errors import NotFoundError
from ..node.note import VerifiedCheckpoint
from ..node.record import Record
from ..node.rules import Ref
from ..node.rules.engine import RulesEngine
from ..node.rules.votes import ElectionState, Voter, electronic_id
from .client_output import print_json

VOTER_KINDS = ("cast", "uncast", "withdraw")  # the kinds whose payload carries an electronic id
_ELECTRONIC_ID = re.compile(r"E-[0-9a-f]{16}")


def electronic_id_arg(value: str) -> str:
    if not _ELECTRONIC_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not an electronic id (E- and 16 lower-case hex)")
    return value


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


def print_vote_check(checks: list[VoterCheck], node: str, eid: str, *, as_json: bool) -> None:
    if as_json:
        print_json({"electronic_id": eid, "node": node, "ledgers": [_check_map(c) for c in checks], "verified": True})
        return
    for check in checks:
        print(f"{check.ledger} on {node}: electronic id {eid}")
        for item in check.records:
            record = item.record
            choice = record.content.payload.get("choice") if record.content.kind == "cast" else None
            extra = f"  choice {choice}" if isinstance(choice, str) else ""
            flag = f"  NOT COUNTED: breaks the rules [{item.flagged}]" if item.flagged else ""
            print(f"  height {record.height:<8} {record.content.kind:<8} {record.link.hex()}{extra}{flag}")
        print(f"  {_standing(check.voter)}")
        print(f"  head: height {check.head.height}, hash {check.head.hash.hex()}")
        if check.proven is not None:
            print(f"  {_proof_sentence(check.proven)}")
    if all(check.proven is not None for check in checks):
        print("each record proven by inclusion in a signed checkpoint (--full verifies the whole chain)")
    else:
        print("chain verified")


def _proof_sentence(proven: VerifiedCheckpoint) -> str:
    checkpoint = proven.checkpoint
    witnesses = f", cosigned by {', '.join(proven.witnesses)}" if proven.witnesses else ""
    return f"proven in the checkpoint of {checkpoint.origin} at size {checkpoint.size}{witnesses}"


def _standing(voter: Voter | None) -> str:
    if voter is None:
        return "no valid registration for this id"
    if voter.withdrawn is not None:
        return f"withdrawn at height {voter.withdrawn.height}: no vote counts"
    if voter.vote is None:
        return "registered, no vote counts now"
    return f"your vote counts: {voter.vote.choice} (cast at height {voter.vote.record.height})"


def _ref(ref: Ref | None) -> dict[str, Any] | None:
    return None if ref is None else {"height": ref.height, "hash": ref.hash.hex()}


def _vote(voter: Voter | None) -> dict[str, Any] | None:
    """The active vote: its choice and record (it counts unless the voter withdrew)."""
    if voter is None or voter.vote is None:
        return None
    ref = voter.vote.record
    return {"choice": voter.vote.choice, "height": ref.height, "hash": ref.hash.hex()}


def _check_map(check: VoterCheck) -> dict[str, Any]:
    voter = check.voter
    return {
        "ledger": check.ledger,
        "head": _ref(check.head),
        "records": [
            {
                "height": item.record.height,
                "hash": item.record.link.hex(),
                "kind": item.record.content.kind,
                "payload": item.record.content.payload,
                "flagged": item.flagged,
            }
            for item in check.records
        ],
        "registered": voter is not None,
        "vote": _vote(voter),
        "counted": voter is not None and voter.counted,
        "withdrawn": _ref(voter.withdrawn) if voter is not None else None,
        "checkpoint": None
        if check.proven is None
        else {
            "origin": check.proven.checkpoint.origin,
            "size": check.proven.checkpoint.size,
            "root": check.proven.checkpoint.root.hex(),
            "witnesses": list(check.proven.witnesses),
        },
    }
