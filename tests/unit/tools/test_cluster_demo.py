"""The cluster demo's plan (pure): a batch that every domain rule accepts, and a tally known in advance."""

from __future__ import annotations

import io
import itertools
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pytest

from vledger.config.settings import Limits
from vledger.node.record import ZERO_LINK, Content, Entry, Record
from vledger.node.rules.charity import CharityState
from vledger.node.rules.engine import RulesEngine
from vledger.node.rules.resources import ResourcesState
from vledger.node.rules.votes import ElectionState, electronic_id
from vledger.node.sealed import seal
from vledger.tools import cli, cluster_demo
from vledger.tools.cluster_demo import (
    ELECTION,
    LEDGERS,
    RESOURCES,
    ZAKAT,
    BatchInput,
    electronic_id_of,
    ledger_rules,
    next_voter_numbers,
    plan_batch,
    plan_voters,
    share_second_factor,
)
from vledger.tools.demo import CHOICES
from vledger.tools.progress import Progress

LIMITS = Limits()
T0 = 1_790_000_000_000
ADMIN = "admin"
SEAL_KEY = bytes(range(64))


def batch_input(numbers: Iterable[int], resources: bool = True) -> BatchInput:
    numbers = list(numbers)
    return BatchInput(
        account=ADMIN,
        ts=T0,
        voters=plan_voters(numbers, CHOICES, seed=numbers[0] if numbers else 0),
        seal_donor=lambda info: seal(SEAL_KEY, info, ZAKAT),
        resources=resources,
        serial=numbers[0] if numbers else 1,
    )


class Chains:
    """The demo's three ledgers, placed as their home nodes would, and the engine that replays them."""

    def __init__(self) -> None:
        self.records: dict[str, list[Record]] = {}
        self.engine = RulesEngine()
        ids = (f"r-{n}" for n in itertools.count())
        for ledger in LEDGERS:
            genesis = ledger_rules(ledger, ADMIN, 0, T0).genesis_content(ledger, ADMIN, next(ids), T0)
            self.place(genesis)

    def place(self, content: Content) -> None:
        chain = self.records.setdefault(content.ledger, [])
        prev = chain[-1].link if chain else ZERO_LINK
        accepted = T0 + len(chain)  # inside the election's times: it opened a minute before T0
        chain.append(Entry.prepare(content, 0, LIMITS).place(len(chain), prev, accepted, "ingest-1"))

    def replay(self) -> list[object]:
        return self.engine.replay(r for ledger in LEDGERS for r in self.records[ledger])

    def domain(self, ledger: str) -> object:
        state = self.engine.state(ledger)
        assert state is not None
        return state.domain


def test_every_record_of_a_batch_keeps_the_rules_and_the_tally_is_known_in_advance() -> None:
    batch = plan_batch(batch_input(range(1, 201)), LIMITS)
    chains = Chains()
    for phase in batch.phases:
        for content in phase:
            chains.place(content)
    assert chains.replay() == []
    election = chains.domain(ELECTION)
    assert isinstance(election, ElectionState)
    tally = election.tally()
    assert tally.counts == {choice: batch.counted()[choice] for choice in CHOICES}
    assert tally.registered == 200 and tally.withdrawn == sum(v.withdraws for v in batch.voters)
    assert len(set(tally.counts.values())) == 3  # the demo's voters lean: no tie
    charity = chains.domain(ZAKAT)
    assert isinstance(charity, CharityState)
    assert charity.tally().disbursed > 0 and charity.tally().balance > 0
    resources = chains.domain(RESOURCES)
    assert isinstance(resources, ResourcesState)
    assert resources.tally().transfers == 3 and resources.balance(ADMIN) > 0


def test_each_phase_holds_only_records_that_need_an_earlier_phase() -> None:
    batch = plan_batch(batch_input(range(1, 101)), LIMITS)
    kinds = [Counter(c.kind for c in phase) for phase in batch.phases]
    assert set(kinds[0]) == {"register", "donation", "issue"}
    assert set(kinds[1]) == {"cast", "disbursement", "transfer"}
    assert set(kinds[2]) <= {"uncast", "withdraw"} and set(kinds[3]) <= {"cast"}
    assert kinds[2]["uncast"] == kinds[3]["cast"] > 0
    assert batch.size == sum(batch.written.values())
    assert all(c.author == ADMIN for phase in batch.phases for c in phase)
    assert len({c.request_id for phase in batch.phases for c in phase}) == batch.size


def test_shares_of_a_thousand_voters() -> None:
    voters = plan_voters(range(1, 1001), CHOICES, seed=1)
    changed, withdrawn = sum(v.second is not None for v in voters), sum(v.withdraws for v in voters)
    assert 60 < changed < 140 and 10 < withdrawn < 50
    assert all(v.second != v.first for v in voters if v.second is not None)
    assert not any(v.second is not None and v.withdraws for v in voters)
    assert voters == plan_voters(range(1, 1001), CHOICES, seed=1)  # the same for a seed


def test_the_electronic_id_is_the_one_the_ledger_allocates() -> None:
    content = Content(ELECTION, "register", {"voter_id": "V-000001"}, ADMIN, "r-1", T0)
    record = Entry.prepare(content, 0, LIMITS).place(1, bytes(32), T0, "ingest-1")
    assert electronic_id_of(content, LIMITS) == electronic_id(record)


def test_next_voter_numbers_skip_the_registered() -> None:
    taken = {"V-000003", "V-000004", "V-000007"}
    assert next_voter_numbers(taken.__contains__, 3, 4) == [5, 6, 8, 9]
    assert next_voter_numbers(taken.__contains__, 1, 0) == []


def test_without_issuing_rights_no_resource_records() -> None:
    batch = plan_batch(batch_input(range(1, 11), resources=False), LIMITS)
    assert not any(c.ledger == RESOURCES for phase in batch.phases for c in phase)


def test_a_new_election_is_open_now_and_for_thirty_days() -> None:
    rules = ledger_rules(ELECTION, ADMIN, 16, T0)
    assert rules.difficulty == 16 and set(rules.kinds) == ElectionState.kinds
    assert rules.rules["opens"] < T0 < rules.rules["closes"] == T0 + 30 * 86_400_000
    resources = ledger_rules(RESOURCES, ADMIN, 16, T0).rules
    assert resources["issuers"] == [ADMIN] and resources["max_holders"] == 10_000


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--cluster", "c.toml", "--store", "s"],
        ["demo", "--cluster", "c.toml", "--voters", "0"],
    ],
)
def test_demo_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert "usage: vledger demo" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--cluster", "c.toml", "--records", "5"], "--records is for --store"),
        (["demo", "--store", "s", "--voters", "5"], "--voters is for --cluster"),
    ],
)
def test_demo_options_of_the_other_kind_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([*argv[:2], str(tmp_path / argv[2]), *argv[3:]]) == 2
    assert message in capsys.readouterr().err


def test_progress_off_a_terminal_can_write_plain_lines() -> None:
    stream = io.StringIO()
    ticks = iter([0.0, 1.0, 6.0, 7.0, 9.0, 14.0])  # start, four advances, close
    with Progress("records", 4, stream=stream, clock=lambda: next(ticks), lines_every=5.0) as progress:
        for _ in range(4):
            progress.advance()
    lines = stream.getvalue().splitlines()
    assert lines == [
        "records [############------------] 2/4 (0.2/s, ETA 0:10)",  # 5 s after the start; rate since the first
        "records [########################] 4/4 (0.2/s, ETA 0:00)",  # at close
    ]
    assert "\r" not in stream.getvalue()


# --- the admin's second factor (outsider o18 F4) -------------------------------------------


def test_demo_takes_otp_from_the_flag_or_vledger_otp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    given: list[str | None] = []

    class Ran:
        ok = True

    def fake_run(path: Path, voters: int, difficulty: int, say: object, otp: str | None = None, **_: object) -> Ran:
        given.append(otp)
        return Ran()

    monkeypatch.setattr(cluster_demo, "run_cluster_demo", fake_run)
    monkeypatch.setattr(cli, "print_cluster_demo", lambda run: None)
    config = tmp_path / "cluster.toml"
    config.write_text("")
    monkeypatch.delenv("VLEDGER_OTP", raising=False)
    assert cli.main(["demo", "--cluster", str(config), "--otp", "123456"]) == 0
    monkeypatch.setenv("VLEDGER_OTP", "654321")
    assert cli.main(["demo", "--cluster", str(config)]) == 0
    assert given == ["123456", "654321"]


def test_one_code_is_traded_for_a_session_every_ingest_node_takes() -> None:
    class FakeSession:
        def __init__(self) -> None:
            self.otp: str | None = None
            self.traded = 0

        def second_factor(self, otp: str | None, ask: object) -> None:
            self.otp = otp

        def second_factor_session(self) -> None:
            self.traded += 1
            self.otp = "session-token"

    sessions = [FakeSession(), FakeSession()]
    share_second_factor(sessions, "123456", None)  # type: ignore[arg-type]
    assert [s.otp for s in sessions] == ["session-token", "session-token"]
    assert [s.traded for s in sessions] == [1, 0]  # a code works once: only the first node sees it
    untouched = [FakeSession()]
    share_second_factor(untouched, None, None)  # type: ignore[arg-type]
    assert untouched[0].otp is None and untouched[0].traded == 0
