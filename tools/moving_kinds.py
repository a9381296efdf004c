"""The kinds that move a vote or money, closed to a new ledger's creator (docs/PROTOCOL.md 7, 16.2).

A kind is open, writable by any writer, until a grant names it (16.2). On an election or a
charity ledger an open kind lets any writer register voters, cast, uncast or withdraw another
voter's vote (an electronic id is public), or record gifts under any donor's sealed id and pay
out the fund. So ``vledger ledger create`` (and the demo) grant those kinds to the account that
creates the ledger, before the genesis is written: no record of them is ever judged open.
A resources ledger needs none: its rules already bind ``issue`` to the genesis issuers and a
``transfer`` to its author's own units (7.3). Files ledgers move neither.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..client.session import Session
from ..node.errors import RemoteError

MOVING_KINDS: Mapping[str, tuple[str, ...]] = {
    "election": ("register", "cast", "uncast", "withdraw"),
    "charity": ("donation", "disbursement"),
}


def moving_kinds(rules: Mapping[str, object]) -> tuple[str, ...]:
    """The kinds of a ledger with these genesis rules that move a vote or money (none: ())."""
    kind = rules.get("type")
    return MOVING_KINDS.get(kind, ()) if isinstance(kind, str) else ()


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
