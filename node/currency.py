"""How many decimals a currency's minor unit has (ISO 4217), and amounts shown in its units.

A charity ledger (PROTOCOL 7.2) counts whole minor units of the currency its genesis names:
2025 is 20.25 SAR, 2025 JPY (no minor unit) and 2.025 KWD (fils: a thousandth). Showing one
amount needs the exponent of its currency, from ISO 4217's list of active and recently
withdrawn codes below (PROTOCOL 7.2 lists the same).

A code not listed, or one ISO gives no minor unit (gold, XAU; the SDR, XDR), has no exponent:
its amounts are shown as the whole minor units the records hold, never guessed into a
currency's. Such a genesis is not refused: which ledgers are counted as charity is part of the
observers' signed tallies (11.2), and a code this table lacks (a new one ISO adds, say) must
not turn a valid ledger into an unusable one between two versions of the observers.
"""

from __future__ import annotations

from typing import Final

# ISO 4217 list one (and three, for codes withdrawn recently enough that a ledger may name them).
_DIGITS: Final[dict[int, str]] = {
    0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF",
    2: (
        "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD "
        "CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL "
        "GHS GIP GMD GTQ GYD HKD HNL HRK HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR "
        "LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB "
        "PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP "
        "SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG ZWL"
    ),
    3: "BHD IQD JOD KWD LYD OMR TND",
    4: "CLF UYW",
}

MINOR_UNIT_DIGITS: Final[dict[str, int]] = {code: digits for digits, codes in _DIGITS.items() for code in codes.split()}


def minor_unit_digits(currency: object) -> int | None:
    """The decimals of ``currency``'s minor unit (2 for SAR, 0 for JPY, 3 for KWD); None when the
    code is not an ISO 4217 one with a minor unit, so that its amounts stay whole minor units."""
    return MINOR_UNIT_DIGITS.get(currency) if isinstance(currency, str) else None


def amount_text(minor: int, currency: object, *, grouped: bool = False) -> str:
    """``minor`` units as a decimal of ``currency``'s units: 2025 -> ``"20.25"`` (SAR), ``"2025"``
    (JPY), ``"2.025"`` (KWD); for a currency without an exponent here, the minor units as they are.
    ``grouped`` puts thousands separators in the whole part (``"2,250.00"``), for people.

    Integer arithmetic: a float holds 53 bits, and an amount may be up to 2**64 - 1 minor units.
    """
    digits = minor_unit_digits(currency) or 0
    whole, fraction = divmod(abs(minor), 10**digits)
    text = f"{whole:,}" if grouped else str(whole)
    if digits:
        text += f".{fraction:0{digits}d}"
    return f"-{text}" if minor < 0 else text
