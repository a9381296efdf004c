"""Identifiers a person types: one normal form (NFC), no control, bidi-override or invisible characters.

Voter ids, choices, fund names, file names: a person types them, another person
reads them, and the rules compare them. Two spellings of one name (``José`` composed, or
``e`` followed by a combining accent) would register as two voters; a right-to-left
override (U+202E) makes a name print as something it is not, and an invisible character
(U+200B ZERO WIDTH SPACE) makes a second voter id that prints as the first. docs/PROTOCOL.md
section 7.5 states the rule this module checks; a ledger follows it from the genesis that says
so (``"identifiers": "nfc-visible"`` in its ``rules``, or the older ``"nfc"``, which lets the
invisible characters through), so ledgers created before keep their meaning.

Pure: the domains (node/rules/) check with :func:`identifier_fault`, the ``vledger``
command normalizes what a person types with :func:`normalize` (refusing what NFC cannot
make acceptable, with :func:`typed`) and escapes what it prints with :func:`escape`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any

# The value of the genesis ``rules`` key ``identifiers`` that turns the rule on.
IDENTIFIER_RULE_KEY = "identifiers"
NFC_RULE = "nfc"  # the first rule: NFC, no controls or bidi overrides (ledgers created before keep it)
VISIBLE_RULE = "nfc-visible"  # that and no invisible character: what new ledgers get
RULES = (NFC_RULE, VISIBLE_RULE)

# The Unicode version whose character database decides "NFC" and "unassigned". Unassigned
# code points are refused, so a later version (which may assign them, with decompositions)
# cannot change whether a string on a chain is normalized. tests/unit/node/test_identifiers.py
# fails when the interpreter's database changes, so that a change is a decision.
UNICODE_VERSION = "14.0.0"

# Explicit bidi formatting: embeddings and overrides (LRE, RLE, PDF, LRO, RLO) and isolates
# (LRI, RLI, FSI, PDI). They reorder what follows them on screen. The implicit marks
# (LRM U+200E, RLM U+200F, ALM U+061C) stay allowed: Arabic and Hebrew text needs them and
# they reorder nothing beyond themselves.
BIDI_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))

# General categories refused: controls (C0, DEL, C1), surrogates, unassigned code points,
# and the line and paragraph separators, which break a line like a control does.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Cn", "Zl", "Zp"})

# Escaped in human output: everything refused, plus format characters (zero-width ones
# included) and private use, which a terminal may show as nothing or as anything.
_ESCAPED_CATEGORIES = _REFUSED_CATEGORIES | {"Cf", "Co"}

# Default_Ignorable_Code_Point (Unicode 14.0.0, DerivedCoreProperties.txt): what a renderer
# shows as nothing when it cannot show it otherwise. Most are format characters (Cf: soft
# hyphen, zero-width space and joiners, bidi marks, word joiner, BOM, tags); the others are
# the Hangul fillers (Lo), the combining grapheme joiner and the variation selectors (Mn).
# unicodedata does not give this property: the ranges are copied from the file.
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)


def is_invisible(char: str) -> bool:
    """Whether ``char`` is a format character (category Cf) or a default-ignorable code point:
    one a person cannot see, so a string with it reads as the same string without it."""
    if unicodedata.category(char) == "Cf":
        return True
    code = ord(char)
    return any(low <= code <= high for low, high in _DEFAULT_IGNORABLE)


def character_name(char: str) -> str:
    """``U+202E RIGHT-TO-LEFT OVERRIDE``: a character as an error message names it."""
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {name}" if name else f"U+{ord(char):04X}"


def forbidden_character(value: str) -> str | None:
    """The first character of ``value`` the rule refuses, or None."""
    for char in value:
        if char in BIDI_CONTROLS or unicodedata.category(char) in _REFUSED_CATEGORIES:
            return char
    return None


def identifier_fault(value: str, rule: str = VISIBLE_RULE) -> str | None:
    """Why ``value`` breaks the identifier rule ``rule`` (one of RULES), as the end of a
    sentence; None if it does not.

    Checked in this order: a refused character (the first one; under VISIBLE_RULE an invisible
    one too), then normal form C.
    """
    if value.isascii():  # the common case: no ASCII string is changed by NFC
        for char in value:
            if char < " " or char == "\x7f":
                return f"holds {character_name(char)}, a control character"
        return None
    refused = forbidden_character(value)
    if refused is not None:
        kind = "a bidi control character" if refused in BIDI_CONTROLS else "a character identifiers may not hold"
        return f"holds {character_name(refused)}, {kind}"
    if rule == VISIBLE_RULE:
        invisible = next((char for char in value if is_invisible(char)), None)
        if invisible is not None:
            return f"holds {character_name(invisible)}, an invisible character (format or default-ignorable)"
    if not unicodedata.is_normalized("NFC", value):
        return "is not in Unicode normalization form C (NFC): send unicodedata.normalize('NFC', value)"
    return None


def rule_of(rules: dict[str, Any]) -> str:
    """The identifier rule a genesis ``rules`` map turns on (one of RULES), "" for none.

    The caller has checked the value (GenesisReader refuses any other value).
    """
    rule = rules.get(IDENTIFIER_RULE_KEY)
    return rule if rule in RULES else ""


def with_rule(rules: Mapping[str, Any]) -> dict[str, Any]:
    """``rules`` for a new ledger: a domain ledger gets ``"identifiers": "nfc-visible"``.

    A plain ledger (no ``type``, or ``"plain"``) reads no rules, so it gets nothing.
    """
    if rules.get("type", "plain") == "plain" or IDENTIFIER_RULE_KEY in rules:
        return dict(rules)
    return {**rules, IDENTIFIER_RULE_KEY: VISIBLE_RULE}


def normalize(value: str) -> str:
    """``value`` in normal form C: what a client sends for anything a person typed."""
    return unicodedata.normalize("NFC", value)


def escape(value: str, keep: str = "") -> str:
    """``value`` safe to show a person: every control, format, separator, private-use,
    surrogate or unassigned character but those in ``keep`` written as ``\\uXXXX``.

    A character past U+FFFF is written as its two UTF-16 escapes, as JSON writes it, so text
    that was JSON stays JSON with the same value. Everything else shows as it is:
    ``José-Ñúñez`` stays readable while ``\\u202e`` shows where an override was.
    """
    # isprintable() is false for every "Other" (C*) and "Separator" (Z*) but the space: when
    # it is true, nothing below would be escaped.
    if value.isprintable():
        return value
    out: list[str] = []
    for char in value:
        if char in keep or unicodedata.category(char) not in _ESCAPED_CATEGORIES:
            out.append(char)
            continue
        code = ord(char)
        if code > 0xFFFF:
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        else:
            out.append(f"\\u{code:04x}")
    return "".join(out)
