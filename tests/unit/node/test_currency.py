"""A currency's minor unit (ISO 4217) and amounts shown in its units, exactly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vledger.node.currency import MINOR_UNIT_DIGITS, amount_text, minor_unit_digits

ISO_CODES = Path("/usr/share/iso-codes/json/iso_4217.json")  # Debian's iso-codes: the codes, not the exponents


EXPONENTS: dict[object, int | None] = {"SAR": 2, "EUR": 2, "JPY": 0, "KRW": 0, "CLF": 4, "XAU": None, "XXX": None}
EXPONENTS |= dict.fromkeys(("KWD", "BHD", "JOD", "OMR", "TND", "LYD", "IQD"), 3) | {"sar": None, 7: None}


@pytest.mark.parametrize(("currency", "digits"), EXPONENTS.items())
def test_the_exponent_of_a_code(currency: object, digits: int | None) -> None:
    assert minor_unit_digits(currency) == digits


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (2025, "SAR", "20.25"),
        (5, "SAR", "0.05"),
        (-150, "SAR", "-1.50"),
        (2025, "JPY", "2025"),
        (2025, "KWD", "2.025"),
        (5, "KWD", "0.005"),
        (-5, "OMR", "-0.005"),
        (2025, "CLF", "0.2025"),
        (2025, "points", "2025"),  # no exponent: the minor units as the records hold them
        (2**64 - 1, "KWD", "18446744073709551.615"),  # exact: a float would round it
    ],
)
def test_amounts_in_the_currency_s_units(minor: int, currency: str, text: str) -> None:
    assert amount_text(minor, currency) == text


def test_grouped_for_people() -> None:
    assert amount_text(225_000, "SAR", grouped=True) == "2,250.00"
    assert amount_text(225_000, "JPY", grouped=True) == "225,000"
    assert amount_text(-2_250_000, "BHD", grouped=True) == "-2,250.000"


@pytest.mark.skipif(not ISO_CODES.exists(), reason="no iso-codes package")
def test_every_iso_code_with_a_minor_unit_is_listed() -> None:
    # The precious metals, the SDR and the testing codes have no minor unit (ISO's "N.A.").
    without = {"XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA", "XXX"}
    codes = {entry["alpha_3"] for entry in json.loads(ISO_CODES.read_text(encoding="utf-8"))["4217"]}
    assert codes - without - set(MINOR_UNIT_DIGITS) == set()
    assert without & set(MINOR_UNIT_DIGITS) == set()


def test_the_pages_table_is_this_one() -> None:
    """verifier/web/static/vledger.js keeps the same table, so that a page shows a signed tally's
    amounts without taking the exponent from the gateway it checks."""
    script = (Path(__file__).resolve().parents[3] / "verifier" / "web" / "static" / "vledger.js").read_text("utf-8")
    table = script[script.index("const MINOR_UNIT_DIGITS = {") : script.index("};", script.index("MINOR_UNIT_DIGITS"))]
    in_page: dict[str, int] = {}
    for digits, codes in re.findall(r"(\d+): ((?:\"[A-Z ]+\"(?: \+\s*)?)+)", table):
        for code in "".join(re.findall(r"\"([A-Z ]+)\"", codes)).split():
            in_page[code] = int(digits)
    assert in_page == MINOR_UNIT_DIGITS
