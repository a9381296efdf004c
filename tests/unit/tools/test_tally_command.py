"""How `vledger tally` shows a tally: amounts in currency units for people, minor units only in --json."""

from __future__ import annotations

import pytest

from vledger.tools.tally_command import snapshot_json, tally_lines
from vledger.verifier.tally import Snapshot

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
