"""Charity and zakat rules (node/rules/charity.py): donations, disbursements, exact totals."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vledger.node.canonical import encode
from vledger.node.errors import BadPayloadError, InsufficientFundsError, RuleError, UnknownFundError
from vledger.node.rules.charity import CharityState, FundTotals
from vledger.node.rules.engine import RulesEngine
from vledger.verifier.tally import tally_map


@pytest.fixture
def charity(rules_kit: Any) -> Any:
    return rules_kit.charity()


def donation(kit: Any, fund: str = "zakat", amount: Any = 10_000, **fields: Any) -> dict[str, Any]:
    payload = {"donor": kit.donor(), "fund": fund, "amount": amount, "source": "salary", "purpose": "zakat al-mal"}
    return {**payload, **fields}


def disbursement(fund: str = "zakat", amount: Any = 2_500, **fields: Any) -> dict[str, Any]:
    return {"fund": fund, "target": "family 17, Riyadh", "amount": amount, "purpose": "rent", **fields}


def test_donations_and_disbursements_keep_exact_totals(charity: Any, rules_kit: Any) -> None:
    assert isinstance(charity.domain, CharityState)
    assert charity.submit("donation", donation(rules_kit, amount=10_000)) == {}
    charity.submit("donation", donation(rules_kit, amount=5_050, donor=rules_kit.donor("Omar")))
    assert charity.submit("disbursement", disbursement(amount=2_500)) == {}
    tally = charity.domain.tally()
    assert tally.currency == "SAR"
    assert tally.funds == {
        "orphans": FundTotals(),
        "zakat": FundTotals(donated=15_050, disbursed=2_500, donations=2, disbursements=1),
    }
    assert tally.funds["zakat"].balance == 12_550
    assert (tally.donated, tally.disbursed, tally.balance) == (15_050, 2_500, 12_550)


def test_a_disbursement_never_exceeds_the_funds_balance(charity: Any, rules_kit: Any) -> None:
    charity.submit("donation", donation(rules_kit, amount=1_000))
    error = charity.refuse("disbursement", disbursement(amount=1_001), InsufficientFundsError)
    assert error.code == "insufficient_funds"
    charity.submit("disbursement", disbursement(amount=1_000))
    assert charity.domain.fund("zakat").balance == 0
    charity.refuse("disbursement", disbursement(amount=1), InsufficientFundsError)


def test_funds_do_not_mix(charity: Any, rules_kit: Any) -> None:
    charity.submit("donation", donation(rules_kit, fund="zakat", amount=1_000))
    charity.refuse("disbursement", disbursement(fund="orphans", amount=1), InsufficientFundsError)


@pytest.mark.parametrize("kind", ["donation", "disbursement"])
def test_only_the_listed_funds_exist(charity: Any, rules_kit: Any, kind: str) -> None:
    payload = donation(rules_kit, fund="sadaqa") if kind == "donation" else disbursement(fund="sadaqa")
    assert charity.refuse(kind, payload, UnknownFundError).code == "unknown_fund"


def test_without_a_fund_list_a_fund_exists_from_its_first_donation(rules_kit: Any) -> None:
    bench = rules_kit.bench({"type": "charity", "currency": "USD"}, ("disbursement", "donation"))
    bench.refuse("disbursement", disbursement(fund="wells", amount=1), UnknownFundError)
    bench.submit("donation", donation(rules_kit, fund="wells", amount=700))
    bench.submit("disbursement", disbursement(fund="wells", amount=700))
    assert bench.domain.tally().funds == {"wells": FundTotals(700, 700, 1, 1)}


@pytest.mark.parametrize("amount", [1.0, 100.5, True, False, 0, -5, "100", None, [100]])
@pytest.mark.parametrize("kind", ["donation", "disbursement"])
def test_an_amount_is_a_positive_exact_integer(charity: Any, rules_kit: Any, kind: str, amount: Any) -> None:
    charity.submit("donation", donation(rules_kit, amount=1_000))
    payload = donation(rules_kit, amount=amount) if kind == "donation" else disbursement(amount=amount)
    if isinstance(amount, float):
        # Canonical msgpack has no floats: a float can only reach the rules in memory.
        record = charity.ledger.make(kind, {**payload, "amount": 1})
        record = dataclasses.replace(record, content=dataclasses.replace(record.content, payload=payload))
        before = charity.snapshot()
        with pytest.raises(BadPayloadError, match="amount must be an integer, not float"):
            charity.engine.check_and_apply(record, charity.ledger.rules)
        assert charity.snapshot() == before
    else:
        assert charity.refuse(kind, payload, BadPayloadError).code == "bad_payload"


@pytest.mark.parametrize(
    "donor",
    ["Zoë Example", "", "S1-", "S2-", "S1-ABCDEFGHIJKLMNOPQRSTUVWXYZ", 17, "S2-" + "a" * 58, "S2-" + "a" * 130],
)
def test_the_donor_is_a_sealed_id(charity: Any, rules_kit: Any, donor: Any) -> None:
    """An S2 id's length is one of its buckets' (PROTOCOL 8 step 1): 58 characters is an unpadded 36 bytes."""
    charity.refuse("donation", donation(rules_kit, donor=donor), BadPayloadError)


def test_new_s2_donors_and_s1_donors_already_on_chains_both_pass(charity: Any, rules_kit: Any) -> None:
    new, old = rules_kit.donor("Zoë Ahmed, +966 5"), rules_kit.donor_v1("Zoë Ahmed, +966 5")
    assert new.startswith("S2-") and len(new) == 131
    assert old.startswith("S1-") and len(old) == 3 + 55  # 16 + 18 bytes: its length tells the info's
    charity.submit("donation", donation(rules_kit, donor=new, amount=100))
    charity.submit("donation", donation(rules_kit, donor=old, amount=50))
    assert charity.domain.tally().funds["zakat"].donated == 150


@pytest.mark.parametrize(
    "change",
    [
        {"fund": ""},
        {"fund": 3},
        {"source": None},
        {"purpose": 1},
        {"note": "extra"},
    ],
)
def test_a_donation_payload_has_exactly_its_fields(charity: Any, rules_kit: Any, change: dict[str, Any]) -> None:
    charity.refuse("donation", donation(rules_kit, **change), BadPayloadError)


def test_missing_donation_fields_are_refused(charity: Any, rules_kit: Any) -> None:
    payload = donation(rules_kit)
    del payload["source"]
    charity.refuse("donation", payload, BadPayloadError)


def test_source_and_purpose_may_be_empty(charity: Any, rules_kit: Any) -> None:
    charity.submit("donation", donation(rules_kit, source="", purpose=""))


@pytest.mark.parametrize("change", [{"target": ""}, {"target": 5}, {"purpose": None}, {"donor": "S1-x"}])
def test_a_disbursement_payload_has_exactly_its_fields(charity: Any, rules_kit: Any, change: dict[str, Any]) -> None:
    charity.submit("donation", donation(rules_kit))
    charity.refuse("disbursement", disbursement(**change), BadPayloadError)


def test_other_kinds_are_ignored(charity: Any) -> None:
    charity.submit("note", {"amount": -1, "text": "pledged, not yet given"})
    assert charity.domain.tally().balance == 0


# --- exact totals against an independent model --------------------------------------------

operations = st.lists(
    st.tuples(
        st.sampled_from(["donation", "disbursement"]),
        st.sampled_from(["zakat", "orphans", "other"]),
        st.integers(1, 5_000),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(operations)
def test_totals_match_a_simple_model(rules_kit: Any, ops: list[tuple[str, str, int]]) -> None:
    bench = rules_kit.charity()
    ins = {"zakat": 0, "orphans": 0}
    outs = {"zakat": 0, "orphans": 0}
    counts = {"zakat": [0, 0], "orphans": [0, 0]}
    for kind, fund, amount in ops:
        payload = donation(rules_kit, fund, amount) if kind == "donation" else disbursement(fund, amount)
        record = bench.ledger.make(kind, payload)
        if fund not in ins:
            expected: str | None = "unknown_fund"
        elif kind == "disbursement" and amount > ins[fund] - outs[fund]:
            expected = "insufficient_funds"
        else:
            expected = None
        try:
            bench.engine.check_and_apply(record, bench.ledger.rules)
        except RuleError as e:
            assert e.code == expected
            continue
        assert expected is None
        bench.ledger.push(record)
        (ins if kind == "donation" else outs)[fund] += amount
        counts[fund][kind == "disbursement"] += 1
    tally = bench.domain.tally()
    for fund, donated in ins.items():
        totals = tally.funds[fund]
        assert (totals.donated, totals.disbursed, totals.balance) == (donated, outs[fund], donated - outs[fund])
        assert [totals.donations, totals.disbursements] == counts[fund]
        assert totals.balance >= 0
    observer = RulesEngine()
    assert observer.replay(bench.ledger.records) == []
    state = observer.state(bench.ledger.name)
    assert state is not None
    assert state.domain.tally() == tally


def test_donations_never_take_the_ledgers_total_past_a_canonical_integer(charity: Any, rules_kit: Any) -> None:
    # Two gifts of 2**64 - 1 once made a total no signed tally could encode (PROTOCOL 11.2):
    # every observer stopped signing the ledger for good. The second is refused instead.
    top = 2**64 - 1
    charity.submit("donation", donation(rules_kit, fund="zakat", amount=top - 5))
    error = charity.refuse("donation", donation(rules_kit, fund="orphans", amount=6), BadPayloadError)
    assert "2**64 - 1" in str(error)
    charity.submit("donation", donation(rules_kit, fund="orphans", amount=5))
    charity.refuse("donation", donation(rules_kit, fund="zakat", amount=1), BadPayloadError)
    charity.submit("disbursement", disbursement(fund="zakat", amount=top - 5))
    # What went out never comes back as room: the tally's "donated" stays the ledger's sum.
    charity.refuse("donation", donation(rules_kit, fund="zakat", amount=1), BadPayloadError)
    tally = charity.domain.tally()
    assert (tally.donated, tally.disbursed, tally.balance) == (top, top - 5, 5)
    tally_body, _ = tally_map(charity.domain)
    encode(tally_body)
