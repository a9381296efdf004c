"""The identifier rule's pure parts (node/identifiers.py): faults, normalizing, escaping."""

from __future__ import annotations

import json
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vledger.node import identifiers
from vledger.node.identifiers import escape, identifier_fault, normalize, with_rule

NFC = unicodedata.normalize("NFC", "José-Ñúñez")
NFD = unicodedata.normalize("NFD", "José-Ñúñez")


def test_the_unicode_database_is_the_one_the_protocol_names() -> None:
    # Another database may judge NFC or "unassigned" otherwise: upgrading it is a protocol decision.
    assert unicodedata.unidata_version == identifiers.UNICODE_VERSION


def test_nfc_passes_and_nfd_is_named_as_not_normalized() -> None:
    assert NFC != NFD
    assert identifier_fault(NFC) is None
    fault = identifier_fault(NFD)
    assert fault is not None and "NFC" in fault


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("V-1\u202eevil", "U+202E RIGHT-TO-LEFT OVERRIDE, a bidi control"),
        ("\u2067isolate", "U+2067 RIGHT-TO-LEFT ISOLATE, a bidi control"),
        ("a\u202ab", "U+202A LEFT-TO-RIGHT EMBEDDING, a bidi control"),
        ("tab\there", "U+0009, a control character"),
        ("nul\x00", "U+0000, a control character"),
        ("del\x7f", "U+007F, a control character"),
        ("c1\x85é", "U+0085, a character identifiers may not hold"),
        ("line\u2028break", "U+2028 LINE SEPARATOR"),
        ("\U000e0080", "U+E0080, a character identifiers may not hold"),  # unassigned in 14.0
    ],
)
def test_controls_bidi_overrides_separators_and_unassigned_are_refused(value: str, named: str) -> None:
    fault = identifier_fault(value)
    assert fault is not None and named in fault


@pytest.mark.parametrize("value", ["", "V-000123", "Zoë 🗳", "مركز الأيتام", "V\u2010000123", "Ω"])
def test_ordinary_text_passes_look_alikes_included(value: str) -> None:
    # U+2010 HYPHEN looks like '-' and is visible: look-alikes are not folded (7.5).
    assert identifier_fault(value) is None


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("V-000123\u200b", "U+200B ZERO WIDTH SPACE"),
        ("V-\u200c000123", "U+200C ZERO WIDTH NON-JOINER"),
        ("👨\u200d👩", "U+200D ZERO WIDTH JOINER"),
        ("\u200fRLM mark", "U+200F RIGHT-TO-LEFT MARK"),
        ("V\u2060-1", "U+2060 WORD JOINER"),
        ("\ufeffV-1", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
        ("V-1\u00ad", "U+00AD SOFT HYPHEN"),
        ("V-1\U000e0041", "U+E0041 TAG LATIN CAPITAL LETTER A"),
        ("V-1\u3164", "U+3164 HANGUL FILLER"),  # Lo, but default-ignorable
        ("V-1\ufe0f", "U+FE0F VARIATION SELECTOR-16"),  # Mn, default-ignorable
        ("V-1\u034f", "U+034F COMBINING GRAPHEME JOINER"),
        ("V-1\u180f", "U+180F MONGOLIAN FREE VARIATION SELECTOR FOUR"),
    ],
)
def test_invisible_characters_are_refused_under_the_visible_rule_only(value: str, named: str) -> None:
    # Each makes a second voter id that prints as the first: "V-000123\u200b" reads "V-000123".
    fault = identifier_fault(value, identifiers.VISIBLE_RULE)
    assert fault is not None and f"{named}, an invisible character" in fault
    assert identifier_fault(value) == fault  # the default: what the CLI checks and new ledgers get
    assert identifier_fault(value, identifiers.NFC_RULE) is None  # the older rule keeps its meaning


@given(st.characters())
def test_every_format_character_is_invisible(char: str) -> None:
    assert identifiers.is_invisible(char) or unicodedata.category(char) != "Cf"


def test_a_refused_character_is_reported_before_the_normal_form() -> None:
    fault = identifier_fault(NFD + "\u202e")
    assert fault is not None and "U+202E" in fault


@given(st.text())
def test_normalize_gives_a_string_the_rule_finds_normalized(value: str) -> None:
    fault = identifier_fault(normalize(value))
    assert fault is None or "NFC" not in fault


def test_escape_shows_controls_and_bidi_as_escapes_and_leaves_text_readable() -> None:
    assert escape(NFC) == NFC
    assert escape("V-1\u202eevil") == "V-1\\u202eevil"
    assert escape("a\nb\x1b[31m") == "a\\u000ab\\u001b[31m"
    assert escape("a\nb\tc\x85", keep="\n\t") == "a\nb\tc\\u0085"
    assert escape("zero\u200bwidth") == "zero\\u200bwidth"
    assert escape("\U000e0080") == "\\udb40\\udc80"  # as JSON writes a character past U+FFFF


def _unsafe(char: str) -> bool:
    return unicodedata.category(char)[0] == "C" or unicodedata.category(char) in ("Zl", "Zp")


@given(st.text())
def test_escaped_text_holds_nothing_unsafe(value: str) -> None:
    assert not any(_unsafe(c) for c in escape(value))


@given(st.dictionaries(st.text(), st.text()))
def test_escaped_json_is_json_of_the_same_value(value: dict[str, str]) -> None:
    assert json.loads(escape(json.dumps(value, ensure_ascii=False))) == value


def test_new_domain_ledgers_get_the_rule_and_plain_ones_do_not() -> None:
    assert with_rule({"type": "election", "choices": ["a"]})["identifiers"] == "nfc-visible"
    assert "identifiers" not in with_rule({})
    assert "identifiers" not in with_rule({"type": "plain"})
