"""A ledger's rules as its genesis states them (docs/PROTOCOL.md, section 3)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from vledger.config.settings import Limits
from vledger.node.errors import BadGenesisError
from vledger.node.ledger import GENESIS_KEYS, LedgerRules
from vledger.node.record import GENESIS_KIND, Content, decode_content

LIMITS = Limits()
LEDGER = "election-2026"
RULES = LedgerRules(
    kinds=("vote", "register", "note", "vote"),
    difficulty=8,
    rules={"choices": ["alice", "bob"], "opens": 1_790_000_000_000},
)


def genesis(payload: Any = None, kind: str = GENESIS_KIND) -> Content:
    base = RULES.genesis_content(LEDGER, "admin", "create-1", 1_790_000_000_000)
    return dataclasses.replace(base, kind=kind, payload=RULES.genesis_payload() if payload is None else payload)


def with_field(key: str, value: Any) -> dict[str, Any]:
    return {**RULES.genesis_payload(), key: value}


def test_kinds_are_sorted_and_deduplicated() -> None:
    assert RULES.kinds == ("note", "register", "vote")
    assert tuple(RULES.genesis_payload()) == GENESIS_KEYS


def test_from_genesis_reads_back_the_rules_genesis_payload_states() -> None:
    assert LedgerRules.from_genesis(genesis(), LIMITS) == RULES


def test_from_genesis_reads_the_rules_from_decoded_bytes() -> None:
    content = decode_content(genesis().encode(LIMITS), LIMITS)
    assert LedgerRules.from_genesis(content, LIMITS) == RULES


@pytest.mark.parametrize("difficulty", [0, 64])
def test_difficulty_limits_are_accepted(difficulty: int) -> None:
    rules = LedgerRules.from_genesis(genesis(with_field("difficulty", difficulty)), LIMITS)
    assert rules.difficulty == difficulty


def test_a_genesis_payload_built_in_another_key_order_is_accepted() -> None:
    """Its canonical bytes are the very same as the sorted one's, so it is the same genesis.

    BUG (node/ledger.py, ``from_genesis``): ``tuple(payload) != GENESIS_KEYS`` depends on the
    insertion order of a Python dict. A client that writes ``{"kinds": ..., "difficulty": ...,
    "rules": ...}`` gets "must have exactly the fields" from ``ChainStore.create_ledger``
    (which reads the in-memory content), although the fields are exactly right.
    """
    payload = {"rules": {}, "kinds": ["note"], "difficulty": 0}
    content = genesis(payload)
    assert decode_content(content.encode(LIMITS), LIMITS) == genesis(dict(sorted(payload.items())))
    assert LedgerRules.from_genesis(content, LIMITS) == LedgerRules(kinds=("note",), difficulty=0)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param(with_field("extra", 1), "exactly the fields", id="extra-key"),
        pytest.param({"difficulty": 8, "kinds": ["note"]}, "exactly the fields", id="missing-rules"),
        pytest.param({}, "exactly the fields", id="empty"),
        pytest.param(with_field("difficulty", -1), "difficulty", id="difficulty-negative"),
        pytest.param(with_field("difficulty", 65), "difficulty", id="difficulty-65"),
        pytest.param(with_field("difficulty", True), "difficulty", id="difficulty-bool"),
        pytest.param(with_field("difficulty", "8"), "difficulty", id="difficulty-str"),
        pytest.param(with_field("difficulty", None), "difficulty", id="difficulty-nil"),
        pytest.param(with_field("kinds", []), "non-empty", id="kinds-empty"),
        pytest.param(with_field("kinds", "note"), "non-empty list", id="kinds-str"),
        pytest.param(with_field("kinds", ["vote", "note"]), "sorted", id="kinds-unsorted"),
        pytest.param(with_field("kinds", ["note", "note"]), "repeats", id="kinds-duplicate"),
        pytest.param(with_field("kinds", ["genesis"]), "genesis", id="kinds-genesis"),
        pytest.param(with_field("kinds", ["genesis", "note"]), "genesis", id="kinds-genesis-and-more"),
        pytest.param(with_field("kinds", ["Note"]), "not a valid name", id="kinds-capital"),
        pytest.param(with_field("kinds", [1]), "not a valid name", id="kinds-int"),
        pytest.param(with_field("kinds", ["x" * 65]), "not a valid name", id="kinds-too-long"),
        pytest.param(with_field("kinds", [""]), "not a valid name", id="kinds-empty-name"),
        pytest.param(with_field("rules", []), "rules must be a map", id="rules-list"),
        pytest.param(with_field("rules", "x"), "rules must be a map", id="rules-str"),
        pytest.param(with_field("rules", None), "rules must be a map", id="rules-nil"),
    ],
)
def test_from_genesis_refuses_bad_rules(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(BadGenesisError, match=message) as info:
        LedgerRules.from_genesis(genesis(payload), LIMITS)
    assert info.value.code == "bad_genesis"
    assert (info.value.ledger, info.value.height) == (LEDGER, 0)


def test_from_genesis_refuses_another_kind() -> None:
    with pytest.raises(BadGenesisError, match="'note'") as info:
        LedgerRules.from_genesis(genesis(kind="note"), LIMITS)
    assert (info.value.ledger, info.value.height) == (LEDGER, 0)


def test_kind_name_length_comes_from_limits() -> None:
    payload = with_field("kinds", ["abcdef"])
    assert LedgerRules.from_genesis(genesis(payload), Limits(max_name_length=6)).kinds == ("abcdef",)
    with pytest.raises(BadGenesisError):
        LedgerRules.from_genesis(genesis(payload), Limits(max_name_length=5))
