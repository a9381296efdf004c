"""A ledger's rules, as its genesis record states them.

Every ledger starts with a genesis record (height 0, kind ``genesis``) whose payload names
its proof-of-work difficulty, the record kinds it accepts and its domain rules (an
election's choices, a fund's currency, ...). Whoever checks the chain reads the rules from
the chain itself, never from a node's configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config.settings import DEFAULT_DIFFICULTY, Limits
from .errors import BadGenesisError, Where
from .record import GENESIS_KIND, NAME_PATTERN, Content
from .work import MAX_DIFFICULTY

GENESIS_KEYS = ("difficulty", "kinds", "rules")


@dataclass(frozen=True, slots=True)
class LedgerRules:
    kinds: tuple[str, ...]
    difficulty: int = DEFAULT_DIFFICULTY
    rules: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(sorted(set(self.kinds))))

    def genesis_payload(self) -> dict[str, Any]:
        return {"difficulty": self.difficulty, "kinds": list(self.kinds), "rules": self.rules}

    def genesis_content(self, ledger: str, author: str, request_id: str, ts: int) -> Content:
        return Content(ledger, GENESIS_KIND, self.genesis_payload(), author, request_id, ts)

    @classmethod
    def from_genesis(cls, content: Content, limits: Limits) -> LedgerRules:
        """Read and check the rules a genesis record's content states."""
        where: Where = {"ledger": content.ledger, "height": 0}
        if content.kind != GENESIS_KIND:
            raise BadGenesisError(f"the first record has kind {content.kind!r}, not {GENESIS_KIND!r}", **where)
        payload = content.payload
        if sorted(payload) != list(GENESIS_KEYS):
            raise BadGenesisError(f"the genesis payload must have exactly the fields {list(GENESIS_KEYS)}", **where)
        difficulty, kinds, rules = payload["difficulty"], payload["kinds"], payload["rules"]
        if not isinstance(difficulty, int) or isinstance(difficulty, bool) or not 0 <= difficulty <= MAX_DIFFICULTY:
            raise BadGenesisError(f"difficulty must be an integer in 0..{MAX_DIFFICULTY}", **where)
        if not isinstance(kinds, list) or not kinds:
            raise BadGenesisError("kinds must be a non-empty list", **where)
        for kind in kinds:
            if not isinstance(kind, str) or not NAME_PATTERN.fullmatch(kind) or len(kind) > limits.max_name_length:
                raise BadGenesisError(f"kind {kind!r} is not a valid name", **where)
            if kind == GENESIS_KIND:
                raise BadGenesisError("only the first record may be a genesis record", **where)
        if kinds != sorted(set(kinds)):
            raise BadGenesisError("kinds must be sorted and without repeats", **where)
        if not isinstance(rules, dict):
            raise BadGenesisError("rules must be a map", **where)
        return cls(kinds=tuple(kinds), difficulty=difficulty, rules=rules)
