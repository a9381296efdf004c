"""How `vledger tally` shows a tally: amounts in currency units for people, minor units only in --json."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vledger.broker.tallies import Published
from vledger.tools.tally_command import report_json, report_lines, snapshot_json, tally_lines
from vledger.verifier.tally import (
    AGREE,
    EXIT_STALE,
    MISMATCH,
    Checked,
    LedgerHead,
    ObserverTally,
    Snapshot,
    TallyReport,
    Verdict,
    stale_observers,
)

CHARITY = {
    "type": "charity",
    "currency": "SAR",
    "funds": {
        "zakat": {"donated": 300_000, "disbursed": 75_000, "donations": 3, "disbursements": 1, "balance": 225_000}
    },
    "donated": 300_000,
    "disbursed": 75_000,
    "balance": 225_000,
    "records": 5,
    "flagged": 0,
}


def test_a_charity_tally_shows_amounts_in_its_currency() -> None:
    lines = tally_lines(CHARITY)
    assert "  balance: 2,250.00 SAR" in lines
    assert "  donated: 3,000.00 SAR" in lines and "  disbursed: 750.00 SAR" in lines
    assert (
        "  funds: zakat (donated 3,000.00 SAR, disbursed 750.00 SAR, donations 3, disbursements 1, "
        "balance 2,250.00 SAR)"
    ) in lines
    assert "  records: 5" in lines  # counts stay counts
    assert not any("225,000" in line for line in lines)


@pytest.mark.parametrize(
    ("currency", "balance", "per_unit"),
    [("JPY", "225,000 JPY", 1), ("KWD", "225.000 KWD", 1000), ("points", "225,000 points (minor units)", None)],
)
def test_a_charity_tally_uses_its_currency_s_decimals(currency: str, balance: str, per_unit: int | None) -> None:
    # Every currency was shown as hundredths: 225,000 yen read "2,250.00 JPY".
    tally = {**CHARITY, "currency": currency}
    assert f"  balance: {balance}" in tally_lines(tally)
    shown = snapshot_json(Snapshot("observer-1", "zakat", 4, bytes(32), tally, bytes(32), 0))
    assert shown["amounts"] == {"unit": "minor", "currency": currency, "per_unit": per_unit}


def test_other_tallies_show_plain_numbers() -> None:
    lines = tally_lines({"type": "resources", "unit": "credits", "balances": {"alice": 1_500}, "issued": 2_000})
    assert lines == ["  unit: credits", "  balances: alice 1,500", "  issued: 2,000"]


def test_json_keeps_the_signed_minor_units_and_labels_them() -> None:
    snapshot = Snapshot("observer-1", "zakat", 4, bytes(32), CHARITY, bytes(32), 0)
    shown = snapshot_json(snapshot)
    assert shown["tally"]["balance"] == 225_000
    assert shown["amounts"] == {"unit": "minor", "currency": "SAR", "per_unit": 100}
    other = Snapshot("observer-1", "res", 4, bytes(32), {"type": "resources"}, bytes(32), 0)
    assert "amounts" not in snapshot_json(other)


# --- stale observers: behind the ledger's signed checkpoint, and silent ---------------------------

NOW = 1_800_000_000_000


def _observer(name: str, height: int, at_ms: int) -> ObserverTally:
    snapshot = Snapshot(name, "council", height, bytes(32), {"type": "plain", "records": height + 1}, bytes(32), at_ms)
    return ObserverTally(name, Checked(Published("1-0", name, height, b"", b""), snapshot, None))


def test_an_observer_behind_the_checkpoint_and_silent_is_stale_and_the_command_exits_4() -> None:
    fresh = _observer("observer-1", 99, NOW - 500)  # at the head
    stuck = _observer("observer-2", 40, NOW - 60_000)  # behind, a minute ago
    busy = _observer("observer-3", 97, NOW - 300)  # behind, but signed a moment ago: counting, not stuck
    head = LedgerHead(100, "ingest-1")
    stale = stale_observers((fresh, stuck, busy), head, NOW)
    assert stale == ("observer-2",)
    assert stale_observers((fresh, stuck), LedgerHead(None, problem="no checkpoint"), NOW) == ()
    assert stale_observers((fresh, stuck), LedgerHead(41, "ingest-1"), NOW) == ()  # at the head, however old

    assert fresh.checked is not None and fresh.checked.snapshot is not None
    compared = {"observer-1": fresh.checked.snapshot}
    agreeing = TallyReport("council", (fresh, stuck), Verdict(AGREE, 40), compared, head=head, stale=stale)
    assert agreeing.exit_code == EXIT_STALE == 4
    shown = report_json(agreeing)
    assert shown["stale"] == ["observer-2"] and shown["head"] == {"size": 100, "signer": "ingest-1", "problem": None}
    assert [o["stale"] for o in shown["observers"]] == [False, True]
    assert shown["ok"] is False
    text = report_lines(agreeing)
    assert any(line.startswith("STALE: observer-2") for line in text)
    assert any("observer-2" in line and line.endswith("STALE") for line in text)
    assert "ledger head: a checkpoint of 100 records, signed by ingest-1 (verified)" in text
    assert replace(agreeing, stale=()).exit_code == 0
    assert replace(agreeing, verdict=Verdict(MISMATCH, 40, ("observer-2",))).exit_code == 1  # a mismatch first
