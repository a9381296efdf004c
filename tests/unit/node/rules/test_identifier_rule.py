"""The identifier rule in the domains (docs/PROTOCOL.md 7.5): on from the genesis that says so."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest

from vledger.node.errors import BadDomainRulesError, BadIdentifierError, BadPayloadError
from vledger.node.rules.engine import RulesEngine

NFC = unicodedata.normalize("NFC", "José-Ñúñez")
NFD = unicodedata.normalize("NFD", "José-Ñúñez")
RLO = "V-1\u202eevil"


def test_an_nfd_voter_id_is_refused_so_one_person_is_one_voter(rules_kit: Any) -> None:
    election = rules_kit.election(identifiers="nfc")
    election.submit("register", {"voter_id": NFC})
    error = election.refuse("register", {"voter_id": NFD}, BadIdentifierError)
    assert error.code == "bad_identifier" and "NFC" in error.reason
    assert isinstance(error, BadPayloadError)
    assert election.domain.tally().registered == 1


def test_a_bidi_override_in_a_voter_id_is_refused_and_named(rules_kit: Any) -> None:
    election = rules_kit.election(identifiers="nfc")
    error = election.refuse("register", {"voter_id": RLO}, BadIdentifierError)
    assert "U+202E RIGHT-TO-LEFT OVERRIDE" in error.reason
    assert "\u202e" not in error.reason  # the message names it, never carries it raw


def test_a_choice_sent_in_nfd_is_refused_before_it_is_compared(rules_kit: Any) -> None:
    election = rules_kit.election(identifiers="nfc", choices=["Zoë", "bob"])
    eid = election.submit("register", {"voter_id": "V-1"})["electronic_id"]
    at = rules_kit.OPENS + 1000
    decomposed = unicodedata.normalize("NFD", "Zoë")
    election.refuse("cast", {"electronic_id": eid, "choice": decomposed}, BadIdentifierError, at=at)
    election.submit("cast", {"electronic_id": eid, "choice": "Zoë"}, at=at)
    assert election.domain.tally().counts == {"Zoë": 1, "bob": 0}


@pytest.mark.parametrize(
    ("payload_key", "value"), [("fund", "orphans\u202e"), ("purpose", NFD), ("source", "bank\x1b[2J")]
)
def test_charity_names_and_free_text_follow_the_rule(rules_kit: Any, payload_key: str, value: str) -> None:
    charity = rules_kit.charity(identifiers="nfc")
    payload = {"donor": rules_kit.donor(), "fund": "zakat", "amount": 5, "source": "bank", "purpose": NFC}
    charity.refuse("donation", {**payload, payload_key: value}, BadIdentifierError)
    charity.submit("donation", payload)


def test_a_file_name_with_a_right_to_left_override_is_refused(rules_kit: Any) -> None:
    files = rules_kit.files(identifiers="nfc")
    name = "invoice\u202efdp.exe"  # shows as "invoiceexe.pdf"
    files.refuse("file", {"name": name, "size": 1, "sha256": "a" * 64}, BadIdentifierError)


def test_a_ledger_without_the_rule_keeps_its_old_meaning(rules_kit: Any) -> None:
    # Ledgers created before the rule: what they hold is judged as it was when it was written.
    election = rules_kit.election()
    election.submit("register", {"voter_id": NFC})
    election.submit("register", {"voter_id": NFD})
    assert election.domain.tally().registered == 2
    election.submit("register", {"voter_id": RLO})


@pytest.mark.parametrize(
    ("rules", "named"),
    [
        ({"identifiers": "nfd"}, "identifiers must be one of ['nfc', 'nfc-visible']"),
        ({"identifiers": None}, "identifiers must be one of ['nfc', 'nfc-visible'] when given, not None"),
        ({"identifiers": ""}, "identifiers must be one of ['nfc', 'nfc-visible'] when given, not ''"),
        ({"identifiers": "nfc-visible", "choices": ["alice", "alice\u200b"]}, "U+200B ZERO WIDTH SPACE"),
        ({"identifiers": "nfc", "choices": ["alice", "b\u202eob"]}, "U+202E"),
        ({"identifiers": "nfc", "choices": [NFC, NFD]}, "NFC"),
    ],
)
def test_a_genesis_with_a_bad_rule_or_identifier_is_bad_rules(
    rules_kit: Any, rules: dict[str, Any], named: str
) -> None:
    with pytest.raises(BadDomainRulesError) as caught:
        rules_kit.election(**rules)
    assert named in caught.value.reason


@pytest.mark.parametrize("invisible", ["\u200b", "\u2060", "\ufeff", "\u00ad", "\u200d"])
def test_an_invisible_character_makes_no_second_voter_under_the_visible_rule(rules_kit: Any, invisible: str) -> None:
    # "V-000123" and "V-000123" + U+200B print alike: under "nfc" they were two registrations.
    election = rules_kit.election(identifiers="nfc-visible")
    election.submit("register", {"voter_id": "V-000123"})
    error = election.refuse("register", {"voter_id": "V-000123" + invisible}, BadIdentifierError)
    assert "an invisible character" in error.reason
    election.submit("register", {"voter_id": "V\u2010000123"})  # a look-alike, visible: not folded (7.5)
    assert election.domain.tally().registered == 2


def test_a_ledger_of_the_older_nfc_rule_keeps_its_meaning(rules_kit: Any) -> None:
    election = rules_kit.election(identifiers="nfc")
    election.submit("register", {"voter_id": "V-000123"})
    election.submit("register", {"voter_id": "V-000123\u200b"})
    assert election.domain.tally().registered == 2


def test_a_replay_skips_a_record_that_breaks_the_rule(rules_kit: Any) -> None:
    election = rules_kit.election(identifiers="nfc")
    election.submit("register", {"voter_id": NFC})
    election.ledger.add("register", {"voter_id": NFD})
    violations = RulesEngine().replay(election.ledger.records)
    assert [(v.height, v.error.code) for v in violations] == [(2, "bad_identifier")]


ARABIC_PURPOSE = "كفالة \u200fأيتام"  # with U+200F RIGHT-TO-LEFT MARK, as Arabic text is typed
FAMILY = "family \U0001f468\u200d\U0001f469\u200d\U0001f467"  # an emoji ZWJ sequence


@pytest.mark.parametrize("purpose", [ARABIC_PURPOSE, FAMILY])
def test_free_text_is_not_an_identifier_under_nfc_visible(rules_kit: Any, purpose: str) -> None:
    """A donation's purpose and source are text no rule compares: the marks and joiners that
    "nfc-visible" refuses in an id are part of how the text is written."""
    charity = rules_kit.charity(identifiers="nfc-visible")
    donation = {"donor": rules_kit.donor(), "fund": "zakat", "amount": 5, "source": purpose, "purpose": purpose}
    charity.submit("donation", donation)
    charity.submit("disbursement", {"fund": "zakat", "target": "orphanage", "amount": 1, "purpose": purpose})
    # An id still may not: the fund, the target.
    charity.refuse("donation", {**donation, "fund": "zakat\u200f"}, BadIdentifierError)
    charity.refuse("disbursement", {"fund": "zakat", "target": FAMILY, "amount": 1, "purpose": ""}, BadIdentifierError)
    # Nor may free text hold a bidi override or a control, or be other than NFC.
    for bad in (RLO, "bank\x1b[2J", NFD):
        charity.refuse("donation", {**donation, "purpose": bad}, BadIdentifierError)
