"""Elections: voters register, cast, uncast and withdraw; anyone can count the chain exactly.

Genesis rules::

    {"type": "election", "choices": [str, ...], "opens": ms, "closes": ms}

``choices`` non-empty, distinct, non-empty strings; ``opens < closes``, milliseconds since
1970 UTC. The genesis ``kinds`` must include ``cast``, ``register``, ``uncast`` and
``withdraw``; other kinds (``note``, ...) are allowed and ignored here.

**Electronic id.** A registration's electronic id is ``"E-"`` followed by the first 8 bytes
of the registration record's checksum (SHA-256 of its content bytes) as 16 lower-case hex
characters. The checksum covers the ledger, author, request id, client time and voter id,
so every observer recomputes the id from the chain and the client knows it as soon as it
has built its content. An id already held (a 2**-64 chance per pair) refuses the later
registration with ``electronic_id_taken``: the client retries with another request id.

**Records**, each payload with exactly the fields shown (else ``bad_payload``), checked in
this order; the first failed check is reported:

* ``register`` ``{"voter_id": str}``: accepted before ``closes`` [``election_closed``]; the
  voter id (the authority's; public, the person behind it known to the authority only)
  never registered before, even if withdrawn [``already_registered``]; its electronic id
  not held [``electronic_id_taken``]. Receipt values: ``{"electronic_id": ...}``.
* ``cast`` ``{"electronic_id": str, "choice": str}``: ``opens <= accepted < closes``
  [``election_closed``]; the electronic id registered [``not_registered``]; not withdrawn
  [``withdrawn``]; the choice one of ``choices`` [``invalid_choice``]; no active vote
  [``already_voted``]. The vote becomes the voter's active vote.
* ``uncast`` ``{"electronic_id": str}``: ``opens <= accepted < closes``; registered; not
  withdrawn; an active vote [``no_active_vote``], which is removed.
* ``withdraw`` ``{"electronic_id": str}``: accepted before ``closes``; registered; not
  withdrawn. Its active vote no longer counts and nothing more is accepted for the voter.

Times are the record's ``accepted`` (the home node's time, hashed into its link), never the
client's ``ts``. Registrations and withdrawals also stop at ``closes``, so the tally is
final once the election has closed.

The state holds one entry per voter (registration, active vote, withdrawal), never a
record history: memory grows with the electorate, not with the chain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from ..errors import (
    AlreadyRegisteredError,
    AlreadyVotedError,
    BadRequestError,
    ElectionClosedError,
    ElectronicIdTakenError,
    InvalidChoiceError,
    NoActiveVoteError,
    NotRegisteredError,
    WithdrawnError,
)
from ..ledger import LedgerRules
from ..record import Record
from ..times import ms_text
from . import Domain, GenesisReader, Plan, Ref, refuse

ELECTRONIC_ID_PREFIX = "E-"
ELECTRONIC_ID_BYTES = 8
ELECTRONIC_ID = re.compile(r"E-[0-9a-f]{16}")


def check_electronic_id(value: str) -> str:
    """``value``, if it is spelt as an electronic id is (E- and 16 lower-case hex); raises
    BadRequestError (bad_request) otherwise: a mistyped id is told so, never "no records"."""
    if not isinstance(value, str) or not ELECTRONIC_ID.fullmatch(value):
        raise BadRequestError(f"{str(value)[:40]!r} is not an electronic id (E- and 16 lower-case hex characters)")
    return value


def electronic_id(registration: Record) -> str:
    """The electronic id the system allocates to ``registration``: E- and 16 hex of its checksum."""
    return ELECTRONIC_ID_PREFIX + registration.checksum[:ELECTRONIC_ID_BYTES].hex()


@dataclass(frozen=True, slots=True)
class Vote:
    choice: str
    record: Ref


@dataclass(frozen=True, slots=True)
class Voter:
    """One registered voter as the chain states it: what a voter's self-check looks up."""

    voter_id: str
    electronic_id: str
    registered: Ref
    vote: Vote | None = None  # the active vote, if any
    withdrawn: Ref | None = None

    @property
    def counted(self) -> bool:
        """Whether this voter's vote is in the tally."""
        return self.vote is not None and self.withdrawn is None


@dataclass(frozen=True, slots=True)
class ElectionTally:
    """The count of an election, from the chain alone."""

    counts: dict[str, int]  # votes per choice, every choice, in the genesis order
    registered: int  # voter ids registered, withdrawn ones included
    cast: int  # votes counted: the active votes of voters who have not withdrawn
    withdrawn: int
    counted: tuple[Ref, ...]  # the cast records counted, in height order


class ElectionState(Domain):
    type_name = "election"
    kinds = frozenset({"register", "cast", "uncast", "withdraw"})

    def __init__(self, genesis: Record, rules: LedgerRules) -> None:
        reader = GenesisReader(genesis, rules, type(self))
        self.identifiers = reader.identifiers
        reader.keys(("choices", "opens", "closes"))
        self.choices = reader.names("choices")
        self.opens = reader.integer("opens")
        self.closes = reader.integer("closes")
        if self.opens >= self.closes:
            reader.fail(f"opens ({ms_text(self.opens)}) must be before closes ({ms_text(self.closes)})")
        self._voters: dict[str, Voter] = {}  # by electronic id
        self._electronic_ids: dict[str, str] = {}  # voter id -> electronic id
        self._withdrawn = 0

    @classmethod
    def receipt_values(cls, record: Record) -> dict[str, Any]:
        return {"electronic_id": electronic_id(record)} if record.content.kind == "register" else {}

    def plan(self, record: Record) -> Plan:
        match record.content.kind:
            case "register":
                return self._register(record)
            case "cast":
                return self._cast(record)
            case "uncast":
                return self._uncast(record)
            case "withdraw":
                return self._withdraw(record)
        return Plan()

    def _register(self, record: Record) -> Plan:
        voter_id = self.fields(record, "voter_id").text("voter_id")
        self._check_time(record, "registration", need_open=False)
        if voter_id in self._electronic_ids:
            refuse(AlreadyRegisteredError, record, f"voter id {voter_id!r} is already registered")
        eid = electronic_id(record)
        if eid in self._voters:
            refuse(
                ElectronicIdTakenError, record, f"electronic id {eid} is already held: retry with another request id"
            )
        voter = Voter(voter_id, eid, Ref.of(record))

        def commit() -> None:
            self._voters[eid] = voter
            self._electronic_ids[voter_id] = eid

        return Plan(commit, {"electronic_id": eid})

    def _cast(self, record: Record) -> Plan:
        fields = self.fields(record, "electronic_id", "choice")
        eid, choice = fields.text("electronic_id"), fields.text("choice")
        self._check_time(record, "voting", need_open=True)
        voter = self._active_voter(record, eid)
        if choice not in self.choices:
            refuse(InvalidChoiceError, record, f"choice {choice!r} is not one of {list(self.choices)}")
        if voter.vote is not None:
            refuse(AlreadyVotedError, record, f"{eid} already has a vote at height {voter.vote.record.height}")
        return self._update(replace(voter, vote=Vote(choice, Ref.of(record))))

    def _uncast(self, record: Record) -> Plan:
        eid = self.fields(record, "electronic_id").text("electronic_id")
        self._check_time(record, "uncasting", need_open=True)
        voter = self._active_voter(record, eid)
        if voter.vote is None:
            refuse(NoActiveVoteError, record, f"{eid} has no vote to uncast")
        return self._update(replace(voter, vote=None))

    def _withdraw(self, record: Record) -> Plan:
        eid = self.fields(record, "electronic_id").text("electronic_id")
        self._check_time(record, "withdrawal", need_open=False)
        voter = self._active_voter(record, eid)
        plan = self._update(replace(voter, withdrawn=Ref.of(record)))

        def commit() -> None:
            plan.commit()
            self._withdrawn += 1

        return Plan(commit)

    def _check_time(self, record: Record, what: str, *, need_open: bool) -> None:
        accepted = record.accepted
        if need_open and accepted < self.opens:
            refuse(
                ElectionClosedError,
                record,
                f"{what} opens at {ms_text(self.opens)}; accepted at {ms_text(accepted)}, before",
            )
        if accepted >= self.closes:
            refuse(
                ElectionClosedError, record, f"{what} closed at {ms_text(self.closes)}; accepted at {ms_text(accepted)}"
            )

    def _active_voter(self, record: Record, eid: str) -> Voter:
        voter = self._voters.get(eid)
        if voter is None:
            refuse(NotRegisteredError, record, f"electronic id {eid!r} is not registered")
        if voter.withdrawn is not None:
            refuse(WithdrawnError, record, f"{eid} withdrew at height {voter.withdrawn.height}")
        return voter

    def _update(self, voter: Voter) -> Plan:
        def commit() -> None:
            self._voters[voter.electronic_id] = voter

        return Plan(commit)

    def voter(self, electronic_id: str) -> Voter | None:
        """A voter's registration, active vote and withdrawal (heights and hashes), for self-checks."""
        return self._voters.get(electronic_id)

    def electronic_id_of(self, voter_id: str) -> str | None:
        return self._electronic_ids.get(voter_id)

    def tally(self) -> ElectionTally:
        counts = dict.fromkeys(self.choices, 0)
        counted: list[Ref] = []
        for voter in self._voters.values():
            if voter.counted:
                assert voter.vote is not None
                counts[voter.vote.choice] += 1
                counted.append(voter.vote.record)
        counted.sort()
        return ElectionTally(
            counts=counts,
            registered=len(self._voters),
            cast=len(counted),
            withdrawn=self._withdrawn,
            counted=tuple(counted),
        )
