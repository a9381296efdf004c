"""The rules engine (node/rules/engine.py): domains by genesis type, sync, check vs apply, replay."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from vledger.config.settings import Limits
from vledger.node import errors
from vledger.node.epoch import EPOCH_KIND
from vledger.node.errors import (
    AlreadyVotedError,
    BadDomainRulesError,
    BadEpochError,
    BadGenesisError,
    InsufficientFundsError,
    NotRegisteredError,
    RecordError,
    RuleError,
    RulesOutOfSyncError,
)
from vledger.node.ledger import LedgerRules
from vledger.node.record import ZERO_LINK, Entry
from vledger.node.rules import Ref
from vledger.node.rules.admin import Grants
from vledger.node.rules.charity import CharityState
from vledger.node.rules.engine import PlainState, RulesEngine, UnusableState, Violation
from vledger.node.rules.files import FilesState
from vledger.node.rules.resources import ResourcesState
from vledger.node.rules.votes import ElectionState

ELECTION_KINDS = ("cast", "register", "uncast", "withdraw")
LIMITS = Limits()


def genesis_error(rules_kit: Any, rules: dict[str, Any], kinds: tuple[str, ...] = ELECTION_KINDS) -> RuleError:
    with pytest.raises(BadDomainRulesError) as caught:
        rules_kit.bench(rules, kinds)
    return caught.value


# --- domains -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "kinds", "domain"),
    [
        ({"type": "election", "choices": ["yes", "no"], "opens": 1, "closes": 2}, ELECTION_KINDS, ElectionState),
        ({"type": "charity", "currency": "SAR"}, ("disbursement", "donation"), CharityState),
        ({"type": "resources", "unit": "h", "issuers": ["ops"]}, ("issue", "transfer"), ResourcesState),
        ({"type": "files", "read": "public"}, ("file",), FilesState),
        ({"type": "plain"}, ("note",), PlainState),
        ({}, ("note",), PlainState),
        ({"motto": "free-form rules of a plain ledger are not read"}, ("note",), PlainState),
    ],
)
def test_the_genesis_type_selects_the_domain(
    rules_kit: Any, rules: dict[str, Any], kinds: tuple[str, ...], domain: type
) -> None:
    bench = rules_kit.bench(rules, kinds)
    assert type(bench.domain) is domain
    state = bench.engine.state(bench.ledger.name)
    assert (state.rules, state.head, state.next_height) == (bench.ledger.rules, (0, bench.ledger.head.link), 1)


def test_a_plain_ledger_accepts_every_record(rules_kit: Any) -> None:
    bench = rules_kit.bench({}, ("cast", "note"))
    assert bench.submit("cast", {"electronic_id": "E-nobody", "choice": "x"}) == {}
    assert bench.submit("note", {}) == {}
    assert bench.engine.state(bench.ledger.name).next_height == 3


def test_a_plain_ledger_still_checks_height_rules_and_protocol_kinds_on_apply(rules_kit: Any) -> None:
    # check_and_apply takes a short way for a plain ledger's next record: it must refuse
    # what the full way refuses, and change nothing when it does.
    bench = rules_kit.bench({}, ("note", EPOCH_KIND))
    bench.submit("note", {})
    record = bench.ledger.make("note", {})
    for height in (1, 3):
        with pytest.raises(RulesOutOfSyncError, match="expects height 2"):
            bench.engine.check_and_apply(dataclasses.replace(record, height=height), bench.ledger.rules)
    other = dataclasses.replace(bench.ledger.rules, kinds=("note",))
    with pytest.raises(RulesOutOfSyncError):
        bench.engine.check_and_apply(record, other)
    assert bench.engine.state(bench.ledger.name).next_height == 2
    bench.refuse(EPOCH_KIND, {}, BadEpochError)  # a handover is the protocol's, whatever the domain
    equal = LedgerRules(bench.ledger.rules.kinds, 0, dict(bench.ledger.rules.rules))
    assert bench.engine.check_and_apply(record, equal) == {}  # an equal copy takes the full way
    bench.ledger.push(record)
    assert bench.submit("note", {}) == {}
    assert bench.engine.state(bench.ledger.name).head == (3, bench.ledger.head.link)


@pytest.mark.parametrize("kind", ["lottery", "Election", 1, None, True])
def test_an_unknown_type_is_a_bad_genesis(rules_kit: Any, kind: Any) -> None:
    error = genesis_error(rules_kit, {"type": kind})
    assert error.code == "bad_rules"
    assert isinstance(error, BadGenesisError)
    assert (error.ledger, error.height) == ("rules-test", 0)


@pytest.mark.parametrize(
    ("rules", "kinds"),
    [
        # election
        ({"type": "election", "choices": ["a"], "opens": 1, "closes": 2}, ("cast", "register", "withdraw")),
        ({"type": "election", "choices": [], "opens": 1, "closes": 2}, ELECTION_KINDS),
        ({"type": "election", "choices": ["a", "a"], "opens": 1, "closes": 2}, ELECTION_KINDS),
        ({"type": "election", "choices": ["a", ""], "opens": 1, "closes": 2}, ELECTION_KINDS),
        ({"type": "election", "choices": "ab", "opens": 1, "closes": 2}, ELECTION_KINDS),
        ({"type": "election", "choices": ["a", 1], "opens": 1, "closes": 2}, ELECTION_KINDS),
        ({"type": "election", "choices": ["a"], "opens": 2, "closes": 2}, ELECTION_KINDS),
        ({"type": "election", "choices": ["a"], "opens": 3, "closes": 2}, ELECTION_KINDS),
        ({"type": "election", "choices": ["a"], "opens": True, "closes": 2}, ELECTION_KINDS),
        ({"type": "election", "choices": ["a"], "opens": -1, "closes": 2}, ELECTION_KINDS),
        ({"type": "election", "choices": ["a"], "opens": 1}, ELECTION_KINDS),
        ({"type": "election", "choices": ["a"], "opens": 1, "closes": 2, "turnout": 5}, ELECTION_KINDS),
        # charity
        ({"type": "charity"}, ("disbursement", "donation")),
        ({"type": "charity", "currency": ""}, ("disbursement", "donation")),
        ({"type": "charity", "currency": "SAR", "funds": []}, ("disbursement", "donation")),
        ({"type": "charity", "currency": "SAR", "funds": ["a", "a"]}, ("disbursement", "donation")),
        ({"type": "charity", "currency": "SAR", "funds": "zakat"}, ("disbursement", "donation")),
        ({"type": "charity", "currency": "SAR"}, ("donation",)),
        # resources
        ({"type": "resources", "unit": "h", "issuers": []}, ("issue", "transfer")),
        ({"type": "resources", "unit": "h", "issuers": ["bad name"]}, ("issue", "transfer")),
        ({"type": "resources", "unit": "h"}, ("issue", "transfer")),
        ({"type": "resources", "unit": 5, "issuers": ["ops"]}, ("issue", "transfer")),
        ({"type": "resources", "unit": "h", "issuers": ["ops"]}, ("transfer",)),
        # files
        ({"type": "files", "read": "everyone"}, ("file",)),
        ({"type": "files"}, ("file",)),
        ({"type": "files", "read": "public", "max_size": -1}, ("file",)),
        ({"type": "files", "read": "public", "max_size": "1"}, ("file",)),
        ({"type": "files", "read": "public"}, ("note",)),
    ],
)
def test_invalid_domain_rules_are_a_bad_genesis(rules_kit: Any, rules: dict[str, Any], kinds: tuple[str, ...]) -> None:
    error = genesis_error(rules_kit, rules, kinds)
    assert isinstance(error, BadGenesisError)
    assert error.height == 0


# --- check, apply, sync ------------------------------------------------------------------


def test_check_changes_nothing_and_apply_moves_on(rules_kit: Any) -> None:
    bench = rules_kit.election()
    record = bench.ledger.make("register", {"voter_id": "V-1"})
    before = bench.snapshot()
    values = bench.engine.check(record, bench.ledger.rules)
    assert bench.engine.check(record, bench.ledger.rules) == values
    assert bench.snapshot() == before
    assert bench.engine.check_and_apply(record, bench.ledger.rules) == values
    assert bench.engine.state(bench.ledger.name).head == (1, record.link)
    with pytest.raises(RulesOutOfSyncError):  # applied: the engine now expects height 2
        bench.engine.check(record, bench.ledger.rules)


def test_a_refused_record_leaves_the_height_free_for_the_next(rules_kit: Any) -> None:
    bench = rules_kit.election()
    bench.refuse("withdraw", {"electronic_id": "E-nobody"}, NotRegisteredError)
    bench.submit("register", {"voter_id": "V-1"})
    assert bench.ledger.head.height == 1


def test_the_receipt_values_are_a_copy(rules_kit: Any) -> None:
    bench = rules_kit.election()
    record = bench.ledger.make("register", {"voter_id": "V-1"})
    bench.engine.check(record, bench.ledger.rules)["electronic_id"] = "E-forged"
    assert bench.engine.check_and_apply(record, bench.ledger.rules)["electronic_id"] != "E-forged"


def test_a_record_at_the_wrong_height_is_out_of_sync(rules_kit: Any) -> None:
    bench = rules_kit.election()
    bench.submit("register", {"voter_id": "V-1"})
    record = bench.ledger.make("register", {"voter_id": "V-2"})
    for height in (1, 3):
        with pytest.raises(RulesOutOfSyncError, match="expects height 2") as caught:
            bench.engine.check(dataclasses.replace(record, height=height), bench.ledger.rules)
        assert caught.value.code == "rules_out_of_sync"
        assert not isinstance(caught.value, RuleError)


def test_a_ledger_without_state_expects_its_genesis(rules_kit: Any) -> None:
    bench = rules_kit.election()
    bench.submit("register", {"voter_id": "V-1"})
    bench.engine.forget(bench.ledger.name)
    assert bench.engine.state(bench.ledger.name) is None
    record = bench.ledger.make("register", {"voter_id": "V-2"})
    with pytest.raises(RulesOutOfSyncError, match="expects height 0"):
        bench.engine.check(record, bench.ledger.rules)
    bench.engine.forget("no-such-ledger")  # forgetting nothing is fine


def test_rules_that_differ_from_the_genesis_are_out_of_sync(rules_kit: Any) -> None:
    bench = rules_kit.election()
    record = bench.ledger.make("register", {"voter_id": "V-1"})
    other = dataclasses.replace(bench.ledger.rules, rules={**bench.ledger.rules.rules, "choices": ["mallory"]})
    with pytest.raises(RulesOutOfSyncError):
        bench.engine.check(record, other)
    equal = LedgerRules(bench.ledger.rules.kinds, 0, dict(bench.ledger.rules.rules))
    bench.engine.check(record, equal)  # an equal copy is fine


def test_a_genesis_must_match_the_rules_given(rules_kit: Any) -> None:
    bench = rules_kit.election()
    engine = RulesEngine()
    with pytest.raises(RulesOutOfSyncError):
        engine.check(bench.ledger.records[0], LedgerRules(("note",), 0, {}))
    with pytest.raises(RulesOutOfSyncError):  # a second genesis for a ledger held
        bench.engine.check(bench.ledger.records[0], bench.ledger.rules)


def test_ledgers_are_independent(rules_kit: Any) -> None:
    a = rules_kit.election()
    b = rules_kit.bench(a.ledger.rules.rules, ELECTION_KINDS, "other")
    engine = RulesEngine()
    for bench in (a, b):
        engine.check_and_apply(bench.ledger.records[0], bench.ledger.rules)
    record = a.ledger.make("register", {"voter_id": "V-1"})
    engine.check_and_apply(record, a.ledger.rules)
    other = b.ledger.make("register", {"voter_id": "V-1"})  # same voter id, another ledger
    engine.check_and_apply(other, b.ledger.rules)
    assert engine.state(a.ledger.name).domain.tally().registered == 1
    assert engine.state(b.ledger.name).domain.tally().registered == 1


# --- replay ------------------------------------------------------------------------------


def chain_with_rule_breakers(rules_kit: Any) -> Any:
    """An election chain as a rogue home node might write it: valid links, broken rules."""
    bench = rules_kit.election()
    ledger = bench.ledger
    eid = bench.submit("register", {"voter_id": "V-1"})["electronic_id"]  # 1
    at = rules_kit.OPENS + 1000
    ledger.add("cast", {"electronic_id": "E-nobody", "choice": "alice"}, at=at)  # 2: not registered
    bench.engine.forget(ledger.name)  # the bench's engine no longer follows: the chain is rogue
    ledger.add("cast", {"electronic_id": eid, "choice": "alice"}, at=at + 1)  # 3: counted
    ledger.add("cast", {"electronic_id": eid, "choice": "bob"}, at=at + 2)  # 4: already voted
    ledger.add("note", {"text": "fine"}, at=at + 3)  # 5
    ledger.add("register", {"voter_id": "V-1"}, at=at + 4)  # 6: already registered
    return ledger


def test_replay_skips_rule_breakers_and_reports_each_with_its_height(rules_kit: Any) -> None:
    ledger = chain_with_rule_breakers(rules_kit)
    engine = RulesEngine()
    violations = engine.replay(ledger.records)
    assert [(v.height, v.error.code, type(v.error)) for v in violations] == [
        (2, "not_registered", NotRegisteredError),
        (4, "already_voted", AlreadyVotedError),
        (6, "already_registered", errors.AlreadyRegisteredError),
    ]
    assert all(v.ledger == ledger.name and v.error.height == v.height for v in violations)
    state = engine.state(ledger.name)
    assert state.head == (6, ledger.head.link)  # skipped records still take their height
    tally = state.domain.tally()
    assert tally.counts == {"alice": 1, "bob": 0, "carol": 0}
    assert tally.counted == ((3, ledger.records[3].link),)


def test_replay_continues_from_the_state_held(rules_kit: Any) -> None:
    ledger = chain_with_rule_breakers(rules_kit)
    engine = RulesEngine()
    first = engine.replay(ledger.records[:3])
    rest = engine.replay(ledger.records[3:])
    whole = RulesEngine()
    assert [v.height for v in first + rest] == [v.height for v in whole.replay(ledger.records)]
    assert engine.state(ledger.name).domain.tally() == whole.state(ledger.name).domain.tally()


def test_forget_then_replay_rebuilds_the_same_state(rules_kit: Any) -> None:
    bench = rules_kit.charity()
    bench.submit("donation", {"donor": rules_kit.donor(), "fund": "zakat", "amount": 900, "source": "", "purpose": ""})
    bench.refuse("disbursement", {"fund": "zakat", "target": "t", "amount": 901, "purpose": ""}, InsufficientFundsError)
    bench.submit("disbursement", {"fund": "zakat", "target": "t", "amount": 900, "purpose": ""})
    tally = bench.domain.tally()
    bench.engine.forget(bench.ledger.name)
    assert bench.engine.replay(bench.ledger.records) == []
    assert bench.domain.tally() == tally
    bench.submit("donation", {"donor": rules_kit.donor(), "fund": "zakat", "amount": 1, "source": "", "purpose": ""})


def test_replay_takes_interleaved_ledgers(rules_kit: Any) -> None:
    a = chain_with_rule_breakers(rules_kit)
    b = rules_kit.resources().ledger
    b.add("issue", {"account": "ops", "amount": 5}, author="treasury")
    b.add("issue", {"account": "ops", "amount": 5}, author="ops")  # not an issuer
    mixed = [a.records[0], b.records[0], *a.records[1:4], *b.records[1:], *a.records[4:]]
    violations = RulesEngine().replay(mixed)
    assert [(v.ledger, v.height, v.error.code) for v in violations] == [
        (a.name, 2, "not_registered"),
        (b.name, 2, "not_issuer"),
        (a.name, 4, "already_voted"),
        (a.name, 6, "already_registered"),
    ]


def test_replay_of_a_ledger_with_invalid_domain_rules_reports_every_record(rules_kit: Any) -> None:
    rules = LedgerRules((*ELECTION_KINDS, "note"), 0, {"type": "election", "choices": [], "opens": 1, "closes": 2})
    genesis = rules.genesis_content("bad-election", "admin", "g", rules_kit.T0)
    records = [Entry.prepare(genesis, 0, LIMITS).place(0, ZERO_LINK, rules_kit.T0, "node-1")]
    for i in (1, 2):
        content = dataclasses.replace(genesis, kind="note", payload={"i": i}, request_id=f"r{i}")
        records.append(Entry.prepare(content, 0, LIMITS).place(i, records[-1].link, rules_kit.T0 + i, "node-1"))
    engine = RulesEngine()
    violations = engine.replay(records)
    assert [(v.height, v.error.code) for v in violations] == [(h, "bad_rules") for h in (0, 1, 2)]
    assert all(isinstance(v.error, BadDomainRulesError) for v in violations)
    assert "choices must be a non-empty list" in str(violations[2].error)
    assert isinstance(engine.state("bad-election").domain, UnusableState)


def test_replay_needs_a_gapless_chain(rules_kit: Any) -> None:
    ledger = chain_with_rule_breakers(rules_kit)
    with pytest.raises(RulesOutOfSyncError, match="expects height 3"):
        RulesEngine().replay([*ledger.records[:3], *ledger.records[4:]])
    with pytest.raises(RulesOutOfSyncError, match="expects height 0"):
        RulesEngine().replay(ledger.records[1:])


def test_a_plain_ledger_s_replay_refuses_what_apply_refuses(rules_kit: Any) -> None:
    # replay takes check_and_apply's short way for a plain ledger's next record: a gap, a
    # handover it cannot judge and an audit of grants still take the full way.
    bench = rules_kit.bench({}, ("note", EPOCH_KIND))
    for _ in range(4):
        bench.ledger.add("note", {})
    records = bench.ledger.records
    engine = RulesEngine()
    assert engine.replay(records[:3]) == [] and engine.state(bench.ledger.name).head == Ref.of(records[2])
    with pytest.raises(RulesOutOfSyncError, match="expects height 3"):
        engine.replay(records[4:])
    assert engine.replay(records[3:]) == [] and engine.state(bench.ledger.name).next_height == len(records)
    handover = bench.ledger.make(EPOCH_KIND, {})
    assert [(v.height, v.error.code) for v in engine.replay([handover])] == [(handover.height, "bad_epoch")]
    grants = Grants()
    grants.add(bench.ledger.name, "note", "someone-else", True, 0)  # notes closed to their author
    audited = RulesEngine(grants=lambda: grants, audit_grants=True)
    assert [(v.height, v.error.code) for v in audited.replay(records)] == [(h, "not_granted") for h in (1, 2, 3, 4)]


def test_a_plain_ledger_s_run_replays_as_its_records_one_by_one(rules_kit: Any) -> None:
    # replay takes a list of a plain ledger's next records whole (a replica replays each run
    # it stores): a handover among them, a gap or another ledger's record sends the list the
    # way a record at a time, which ends where that way ends.
    bench = rules_kit.bench({}, ("note", EPOCH_KIND))
    other = rules_kit.bench({}, ("note",), name="rules-other")
    for _ in range(3):
        bench.ledger.add("note", {})
    bench.ledger.add(EPOCH_KIND, {})
    for _ in range(3):
        bench.ledger.add("note", {})
    other.ledger.add("note", {})
    records, name = bench.ledger.records, bench.ledger.name
    whole, each = RulesEngine(), RulesEngine()
    runs = [records[:1], records[1:4], records[4:], [*other.ledger.records[:1]], other.ledger.records[1:]]
    for run in runs:
        found = whole.replay(run)
        assert [(v.height, v.error.code) for v in found] == [
            (v.height, v.error.code)
            for v in each.replay(iter(run))  # not a list: a record at a time
        ]
    assert whole.state(name).head == each.state(name).head == Ref.of(records[-1])
    assert whole.state(other.ledger.name).head == Ref.of(other.ledger.records[-1])
    assert [(v.height, v.error.code) for v in RulesEngine().replay(records)] == [(4, "bad_epoch")]
    engine = RulesEngine()
    engine.replay(records[:2])
    with pytest.raises(RulesOutOfSyncError, match="expects height 2"):
        engine.replay(records[3:5])  # a gap: nothing taken
    assert engine.state(name).head == Ref.of(records[1])
    mixed = [records[2], other.ledger.records[0], records[3]]  # another ledger amid: each its own way
    assert engine.replay(mixed) == [] and engine.state(name).head == Ref.of(records[3])


def test_replay_raises_a_protocol_genesis_error(rules_kit: Any) -> None:
    ledger = rules_kit.election().ledger
    content = dataclasses.replace(ledger.records[0].content, payload={"difficulty": 0, "kinds": [], "rules": {}})
    record = Entry.prepare(content, 0, LIMITS).place(0, ZERO_LINK, rules_kit.T0, "node-1")
    with pytest.raises(BadGenesisError) as caught:
        RulesEngine().replay([record])
    assert not isinstance(caught.value, RuleError)


def test_a_violation_is_a_height_and_an_error() -> None:
    error = NotRegisteredError("x", ledger="l", height=4)
    height, caught = Violation(4, error)
    assert (height, caught, Violation(4, error).ledger) == (4, error, "l")


# --- the error tree ----------------------------------------------------------------------

CODES = {
    "RuleError": "rule_violation",
    "BadDomainRulesError": "bad_rules",
    "BadPayloadError": "bad_payload",
    "BadIdentifierError": "bad_identifier",
    "AlreadyRegisteredError": "already_registered",
    "ElectronicIdTakenError": "electronic_id_taken",
    "NotRegisteredError": "not_registered",
    "WithdrawnError": "withdrawn",
    "AlreadyVotedError": "already_voted",
    "NoActiveVoteError": "no_active_vote",
    "InvalidChoiceError": "invalid_choice",
    "ElectionClosedError": "election_closed",
    "UnknownFundError": "unknown_fund",
    "InsufficientFundsError": "insufficient_funds",
    "NotIssuerError": "not_issuer",
    "NotOwnerError": "not_owner",
    "SelfTransferError": "self_transfer",
    "TooManyHoldersError": "too_many_holders",
    "FileTooLargeError": "file_too_large",
    "FileConflictError": "file_conflict",
    "NotGrantedError": "not_granted",
    "NotAdminAuthorError": "not_admin_author",
    "AlreadyGrantedError": "already_granted",
    "NoSuchGrantError": "no_such_grant",
    "NotGrantableError": "not_grantable",
    "NodeKeyInUseError": "node_key_in_use",
    "BadEpochError": "bad_epoch",
    "FailbackUnconfiguredError": "failback_unconfigured",
    "StandbyRotationError": "standby_rotation",
}


@pytest.mark.parametrize(("name", "code"), CODES.items())
def test_rule_errors_have_stable_codes_and_name_ledger_and_height(name: str, code: str) -> None:
    cls = getattr(errors, name)
    assert issubclass(cls, RuleError)
    assert issubclass(cls, RecordError)
    assert cls.code == code
    error = cls("broke a rule", ledger="votes", height=9)
    assert str(error) == "ledger 'votes' height 9: broke a rule"
    assert error.to_wire() == {"code": code, "message": str(error)}


def test_every_rule_error_is_listed() -> None:
    leaves = {name for name, value in vars(errors).items() if isinstance(value, type) and issubclass(value, RuleError)}
    assert leaves == set(CODES)
    assert errors.RulesOutOfSyncError.code == "rules_out_of_sync"


# --- receipt values of a stored record (a retried request) ---------------------------------


def test_values_of_repeats_the_receipt_values_without_checking(rules_kit: Any) -> None:
    bench = rules_kit.election()
    eid = bench.submit("register", {"voter_id": "V-1"})["electronic_id"]
    registration = bench.ledger.head
    bench.submit("note", {"text": "later"})
    engine = bench.engine
    assert engine.values_of(registration, bench.ledger.rules) == {"electronic_id": eid}
    assert RulesEngine().values_of(registration, bench.ledger.rules) == {"electronic_id": eid}  # no state needed
    assert engine.values_of(bench.ledger.head, bench.ledger.rules) == {}
    assert engine.values_of(bench.ledger.records[0], bench.ledger.rules) == {}


@pytest.mark.parametrize("rules", [{}, {"type": "charity", "currency": "SAR"}, {"type": "lottery"}, {"type": 3}])
def test_values_of_other_domains_is_empty(rules_kit: Any, rules: dict[str, Any]) -> None:
    ledger = rules_kit.election().ledger
    record = ledger.make("register", {"voter_id": "V-1"})
    assert RulesEngine().values_of(record, LedgerRules(ledger.rules.kinds, 0, rules)) == {}
