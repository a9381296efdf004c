"""Election rules (node/rules/votes.py): every rule, every error, and an exact tally."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vledger.node.errors import (
    AlreadyRegisteredError,
    AlreadyVotedError,
    BadPayloadError,
    ElectionClosedError,
    ElectronicIdTakenError,
    InvalidChoiceError,
    NoActiveVoteError,
    NotRegisteredError,
    RuleError,
    WithdrawnError,
)
from vledger.node.rules import Ref, votes
from vledger.node.rules.engine import RulesEngine
from vledger.node.rules.votes import ElectionState, electronic_id


@pytest.fixture
def election(rules_kit: Any) -> Any:
    return rules_kit.election()


def at_open(kit: Any, seconds: int = 1) -> int:
    return kit.OPENS + 1000 * seconds


def register(bench: Any, voter_id: str, **kwargs: Any) -> str:
    eid = bench.submit("register", {"voter_id": voter_id}, **kwargs)["electronic_id"]
    assert isinstance(eid, str)
    return eid


def cast(bench: Any, eid: str, choice: str, at: int) -> dict[str, Any]:
    return bench.submit("cast", {"electronic_id": eid, "choice": choice}, at=at)  # type: ignore[no-any-return]


def test_the_genesis_builds_an_election(election: Any, rules_kit: Any) -> None:
    domain = election.domain
    assert isinstance(domain, ElectionState)
    assert (domain.choices, domain.opens, domain.closes) == (rules_kit.CHOICES, rules_kit.OPENS, rules_kit.CLOSES)
    tally = domain.tally()
    assert tally.counts == {"alice": 0, "bob": 0, "carol": 0}
    assert (tally.registered, tally.cast, tally.withdrawn, tally.counted) == (0, 0, 0, ())


# --- register ----------------------------------------------------------------------------


def test_registration_returns_the_electronic_id_derived_from_the_checksum(election: Any) -> None:
    eid = register(election, "V-1001")
    record = election.ledger.head
    assert eid == "E-" + hashlib.sha256(record.content_bytes).hexdigest()[:16]
    assert eid == electronic_id(record)
    voter = election.domain.voter(eid)
    assert (voter.voter_id, voter.electronic_id, voter.registered) == ("V-1001", eid, Ref(1, record.link))
    assert (voter.vote, voter.withdrawn, voter.counted) == (None, None, False)
    assert election.domain.electronic_id_of("V-1001") == eid
    assert election.domain.tally().registered == 1


def test_the_electronic_id_is_the_same_for_every_observer(rules_kit: Any) -> None:
    first, second = rules_kit.election(), rules_kit.election()
    assert register(first, "V-1001") == register(second, "V-1001")
    # ... and depends on the content: another request id gives another id.
    assert register(first, "V-1002") != register(second, "V-1003")


def test_a_voter_id_registers_once(election: Any) -> None:
    register(election, "V-1001")
    error = election.refuse("register", {"voter_id": "V-1001"}, AlreadyRegisteredError)
    assert error.code == "already_registered"
    assert "V-1001" in str(error)


def test_a_withdrawn_voter_id_cannot_register_again(election: Any) -> None:
    eid = register(election, "V-1001")
    election.submit("withdraw", {"electronic_id": eid})
    election.refuse("register", {"voter_id": "V-1001"}, AlreadyRegisteredError)


def test_an_electronic_id_already_held_refuses_the_registration(election: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(votes, "electronic_id", lambda record: "E-0000000000000000")
    register(election, "V-1001")
    error = election.refuse("register", {"voter_id": "V-1002"}, ElectronicIdTakenError)
    assert error.code == "electronic_id_taken"


def test_registration_is_open_before_the_vote_and_closes_with_it(election: Any, rules_kit: Any) -> None:
    register(election, "V-early", at=rules_kit.T0 + 1)
    register(election, "V-last", at=rules_kit.CLOSES - 1)
    error = election.refuse("register", {"voter_id": "V-late"}, ElectionClosedError, at=rules_kit.CLOSES)
    assert error.code == "election_closed"
    # Outsider o12: the times were raw ms ("closed at 1796636018552"); ISO 8601 UTC stands beside them.
    closes = rules_kit.CLOSES
    assert f"registration closed at {closes} (2026-09-21T14:16:40.000Z); accepted at {closes} (" in error.reason


def test_a_vote_before_the_opening_names_both_times_in_iso_8601(election: Any, rules_kit: Any) -> None:
    eid = register(election, "V-1001")
    payload = {"electronic_id": eid, "choice": "alice"}
    error = election.refuse("cast", payload, ElectionClosedError, at=rules_kit.OPENS - 1)
    assert error.reason.startswith(
        f"voting opens at {rules_kit.OPENS} (2026-09-21T14:15:00.000Z); accepted at {rules_kit.OPENS - 1} "
        "(2026-09-21T14:14:59.999Z), before"
    ), error.reason


@pytest.mark.parametrize(
    "payload",
    [{}, {"voter_id": ""}, {"voter_id": 1001}, {"voter_id": "V-1", "name": "Zoë"}, {"voterid": "V-1"}],
)
def test_a_registration_payload_is_exactly_a_voter_id(election: Any, payload: dict[str, Any]) -> None:
    assert election.refuse("register", payload, BadPayloadError).code == "bad_payload"


# --- cast --------------------------------------------------------------------------------


def test_a_cast_vote_is_the_voters_active_vote_and_counts(election: Any, rules_kit: Any) -> None:
    eid = register(election, "V-1001")
    assert cast(election, eid, "bob", at_open(rules_kit)) == {}
    record = election.ledger.head
    voter = election.domain.voter(eid)
    assert (voter.vote.choice, voter.vote.record, voter.counted) == ("bob", Ref.of(record), True)
    tally = election.domain.tally()
    assert tally.counts == {"alice": 0, "bob": 1, "carol": 0}
    assert (tally.cast, tally.counted) == (1, (Ref(record.height, record.link),))


def test_an_unregistered_electronic_id_cannot_cast(election: Any, rules_kit: Any) -> None:
    payload = {"electronic_id": "E-0123456789abcdef", "choice": "alice"}
    assert election.refuse("cast", payload, NotRegisteredError, at=at_open(rules_kit)).code == "not_registered"


def test_a_voter_casts_one_active_vote(election: Any, rules_kit: Any) -> None:
    eid = register(election, "V-1001")
    cast(election, eid, "alice", at_open(rules_kit, 1))
    payload = {"electronic_id": eid, "choice": "bob"}
    assert election.refuse("cast", payload, AlreadyVotedError, at=at_open(rules_kit, 2)).code == "already_voted"


def test_a_choice_outside_the_choices_is_refused(election: Any, rules_kit: Any) -> None:
    eid = register(election, "V-1001")
    for choice in ("dave", "Alice", "alice "):
        payload = {"electronic_id": eid, "choice": choice}
        assert election.refuse("cast", payload, InvalidChoiceError, at=at_open(rules_kit)).code == "invalid_choice"


@pytest.mark.parametrize("offset", [-1, 0])
def test_the_vote_opens_at_opens_inclusive(election: Any, rules_kit: Any, offset: int) -> None:
    eid = register(election, "V-1001")
    payload = {"electronic_id": eid, "choice": "alice"}
    if offset < 0:
        election.refuse("cast", payload, ElectionClosedError, at=rules_kit.OPENS + offset)
    else:
        election.submit("cast", payload, at=rules_kit.OPENS)


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_the_vote_closes_at_closes_exclusive(election: Any, rules_kit: Any, offset: int) -> None:
    eid = register(election, "V-1001")
    payload = {"electronic_id": eid, "choice": "alice"}
    if offset < 0:
        election.submit("cast", payload, at=rules_kit.CLOSES + offset)
    else:
        election.refuse("cast", payload, ElectionClosedError, at=rules_kit.CLOSES + offset)


def test_the_time_is_the_nodes_acceptance_not_the_clients(election: Any, rules_kit: Any) -> None:
    eid = register(election, "V-1001")
    payload = {"electronic_id": eid, "choice": "alice"}
    election.refuse("cast", payload, ElectionClosedError, at=rules_kit.CLOSES, ts=at_open(rules_kit))
    election.submit("cast", payload, at=at_open(rules_kit), ts=rules_kit.CLOSES + 1)


def test_the_period_is_checked_before_the_voter(election: Any, rules_kit: Any) -> None:
    payload = {"electronic_id": "E-0123456789abcdef", "choice": "nobody"}
    election.refuse("cast", payload, ElectionClosedError, at=rules_kit.CLOSES)


@pytest.mark.parametrize(
    "payload",
    [
        {"electronic_id": "E-1"},
        {"choice": "alice"},
        {"electronic_id": "E-1", "choice": 1},
        {"electronic_id": ["E-1"], "choice": "alice"},
        {"electronic_id": "E-1", "choice": "alice", "voter_id": "V-1"},
    ],
)
def test_a_cast_payload_is_exactly_an_electronic_id_and_a_choice(
    election: Any, rules_kit: Any, payload: dict[str, Any]
) -> None:
    election.refuse("cast", payload, BadPayloadError, at=at_open(rules_kit))


# --- uncast ------------------------------------------------------------------------------


def test_uncast_removes_the_active_vote_and_allows_a_new_one(election: Any, rules_kit: Any) -> None:
    eid = register(election, "V-1001")
    cast(election, eid, "alice", at_open(rules_kit, 1))
    assert election.submit("uncast", {"electronic_id": eid}, at=at_open(rules_kit, 2)) == {}
    assert election.domain.voter(eid).vote is None
    assert election.domain.tally().cast == 0
    cast(election, eid, "carol", at_open(rules_kit, 3))
    assert election.domain.tally().counts == {"alice": 0, "bob": 0, "carol": 1}


def test_uncast_without_a_vote_is_refused(election: Any, rules_kit: Any) -> None:
    eid = register(election, "V-1001")
    error = election.refuse("uncast", {"electronic_id": eid}, NoActiveVoteError, at=at_open(rules_kit))
    assert error.code == "no_active_vote"


def test_uncast_by_an_unregistered_id_is_refused(election: Any, rules_kit: Any) -> None:
    election.refuse("uncast", {"electronic_id": "E-nobody"}, NotRegisteredError, at=at_open(rules_kit))


def test_uncast_before_the_vote_opens_is_refused(election: Any, rules_kit: Any) -> None:
    eid = register(election, "V-1001")
    election.refuse("uncast", {"electronic_id": eid}, ElectionClosedError, at=rules_kit.OPENS - 1)


def test_uncast_after_the_vote_closed_is_refused(election: Any, rules_kit: Any) -> None:
    eid = register(election, "V-1001")
    cast(election, eid, "alice", at_open(rules_kit))
    election.refuse("uncast", {"electronic_id": eid}, ElectionClosedError, at=rules_kit.CLOSES)
    assert election.domain.tally().cast == 1


# --- withdraw ----------------------------------------------------------------------------


def test_a_withdrawn_voters_vote_no_longer_counts(election: Any, rules_kit: Any) -> None:
    eid = register(election, "V-1001")
    other = register(election, "V-1002")
    cast(election, eid, "alice", at_open(rules_kit, 1))
    cast(election, other, "alice", at_open(rules_kit, 2))
    assert election.submit("withdraw", {"electronic_id": eid}, at=at_open(rules_kit, 3)) == {}
    withdrawal = election.ledger.head
    voter = election.domain.voter(eid)
    assert (voter.withdrawn, voter.counted) == (Ref.of(withdrawal), False)
    assert voter.vote is not None  # still shown to the voter, not counted
    tally = election.domain.tally()
    assert tally.counts == {"alice": 1, "bob": 0, "carol": 0}
    assert (tally.registered, tally.cast, tally.withdrawn) == (2, 1, 1)


@pytest.mark.parametrize("kind", ["cast", "uncast", "withdraw"])
def test_nothing_more_is_accepted_after_a_withdrawal(election: Any, rules_kit: Any, kind: str) -> None:
    eid = register(election, "V-1001")
    cast(election, eid, "alice", at_open(rules_kit, 1))
    election.submit("withdraw", {"electronic_id": eid}, at=at_open(rules_kit, 2))
    payload = {"electronic_id": eid, "choice": "bob"} if kind == "cast" else {"electronic_id": eid}
    assert election.refuse(kind, payload, WithdrawnError, at=at_open(rules_kit, 3)).code == "withdrawn"


def test_withdraw_needs_a_registration(election: Any) -> None:
    election.refuse("withdraw", {"electronic_id": "E-nobody"}, NotRegisteredError)


def test_withdrawal_is_allowed_before_the_vote_and_closes_with_it(election: Any, rules_kit: Any) -> None:
    early, late = register(election, "V-1001"), register(election, "V-1002")
    election.submit("withdraw", {"electronic_id": early}, at=rules_kit.OPENS - 1)
    election.refuse("withdraw", {"electronic_id": late}, ElectionClosedError, at=rules_kit.CLOSES)


def test_a_withdraw_payload_is_exactly_an_electronic_id(election: Any) -> None:
    eid = register(election, "V-1001")
    election.refuse("withdraw", {"electronic_id": eid, "reason": "moved"}, BadPayloadError)


# --- other kinds, lookups ----------------------------------------------------------------


def test_other_kinds_are_ignored_by_the_election(election: Any) -> None:
    before = election.snapshot()
    assert election.submit("note", {"text": "polling station 4 opens late", "voter_id": 7}) == {}
    assert election.snapshot()[1] == before[1]


def test_unknown_electronic_and_voter_ids_are_not_found(election: Any) -> None:
    assert election.domain.voter("E-0000000000000000") is None
    assert election.domain.electronic_id_of("V-0") is None


# --- an exact tally against an independent model ------------------------------------------

VOTERS = 4
# (kind, voter index, choice, when): when 0 = before the vote opens, 1 = open, 2 = closed.
operations = st.lists(
    st.tuples(
        st.sampled_from(["register", "cast", "uncast", "withdraw"]),
        st.integers(0, VOTERS - 1),
        st.sampled_from(["alice", "bob", "carol", "dave"]),
        st.integers(0, 2),
    ),
    max_size=40,
)


def model_outcome(kind: str, voter: dict[str, Any] | None, choice: str, when: int) -> str | None:
    """The error code the election rules give (None: accepted), written out plainly."""
    if kind == "register":
        return "election_closed" if when == 2 else "already_registered" if voter else None
    if when == 2 or (when == 0 and kind != "withdraw"):
        return "election_closed"
    if voter is None:
        return "not_registered"
    if voter["withdrawn"]:
        return "withdrawn"
    if kind == "cast":
        if choice not in ("alice", "bob", "carol"):
            return "invalid_choice"
        return "already_voted" if voter["vote"] else None
    if kind == "uncast":
        return None if voter["vote"] else "no_active_vote"
    return None


@settings(max_examples=60, deadline=None)
@given(operations)
def test_the_tally_matches_a_simple_model(rules_kit: Any, ops: list[tuple[str, int, str, int]]) -> None:
    bench = rules_kit.election()
    model: dict[int, dict[str, Any]] = {}  # voter index -> {"eid", "vote", "withdrawn"}
    # Times only go forward: each phase starts where the last one left off.
    phase_start = {0: rules_kit.T0 + 1000, 1: rules_kit.OPENS, 2: rules_kit.CLOSES}
    clock = rules_kit.T0
    for kind, index, choice, when in sorted(ops, key=lambda op: op[3]):
        clock = max(clock + 1, phase_start[when])
        voter = model.get(index)
        eid = voter["eid"] if voter else f"E-unregistered{index}"
        payload: dict[str, Any] = {"electronic_id": eid}
        if kind == "register":
            payload = {"voter_id": f"V-{index}"}
        elif kind == "cast":
            payload["choice"] = choice
        record = bench.ledger.make(kind, payload, at=clock)
        expected = model_outcome(kind, voter, choice, when)
        try:
            bench.engine.check_and_apply(record, bench.ledger.rules)
        except RuleError as e:
            assert e.code == expected, (kind, index, choice, when)
            continue
        assert expected is None, (kind, index, choice, when)
        bench.ledger.push(record)
        if kind == "register":
            model[index] = {"eid": "E-" + hashlib.sha256(record.content_bytes).hexdigest()[:16], "vote": None}
            model[index]["withdrawn"] = False
        elif kind == "cast":
            model[index]["vote"] = (choice, record.height, record.link)
        elif kind == "uncast":
            model[index]["vote"] = None
        else:
            model[index]["withdrawn"] = True
    counted = [v["vote"] for v in model.values() if v["vote"] and not v["withdrawn"]]
    tally = bench.domain.tally()
    assert tally.counts == {c: sum(1 for v in counted if v[0] == c) for c in ("alice", "bob", "carol")}
    assert tally.registered == len(model)
    assert tally.cast == len(counted)
    assert tally.withdrawn == sum(1 for v in model.values() if v["withdrawn"])
    assert list(tally.counted) == sorted((height, link) for _, height, link in counted)
    # An observer replaying the stored chain from scratch counts the same.
    observer = RulesEngine()
    assert observer.replay(bench.ledger.records) == []
    state = observer.state(bench.ledger.name)
    assert state is not None
    assert state.domain.tally() == tally


def test_an_election_may_list_outside_witnesses_beside_its_rules(rules_kit: Any) -> None:
    # PROTOCOL 3 and 13.9: the genesis fields of outside witnesses are not the domain's to refuse.
    listed = "witness.example/w1+5aee1a5a+BEL5vJqSqX4BqNIs3NFKiEoDrrn1P1x9ouN4rBAr/SPr"
    bench = rules_kit.election(witnesses=[listed], quorum=1)
    assert isinstance(bench.engine.state(bench.ledger.name).domain, ElectionState)
