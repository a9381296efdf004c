"""Granting the kinds that move a vote or money to a new ledger's creator (docs/PROTOCOL.md 7, 16.2).

``vledger ledger create`` (and the demo) grant those kinds (node/rules/moving_kinds.py) to the
account that creates the ledger, before the genesis is written: no record of them is ever
judged open.
"""

from __future__ import annotations

from ..client.session import Session
from ..node.errors import RemoteError
from ..node.rules.moving_kinds import MOVING_KINDS, moving_kinds

__all__ = ["MOVING_KINDS", "grant_moving_kinds", "moving_kinds"]


def grant_moving_kinds(session: Session, ledger: str, kinds: tuple[str, ...], account: str) -> list[str]:
    """Grant each of ``kinds`` of ``ledger`` to ``account`` (an admin command each); the kinds
    newly granted (one already held is skipped)."""
    granted = []
    for kind in kinds:
        try:
            session.call("grant.add", {"ledger": ledger, "kind": kind, "account": account})
        except RemoteError as e:
            if e.code != "already_granted":
                raise
            continue
        granted.append(kind)
    return granted
