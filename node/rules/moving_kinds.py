"""The kinds that move a vote or money, and who holds them before a ledger exists (PROTOCOL 7, 16.2).

A kind is open, writable by any writer, until a grant names it (16.2). On an election or a
charity ledger an open kind lets any writer register voters, cast, uncast or withdraw another
voter's vote (an electronic id is public), or record gifts under any donor's sealed id and pay
out the fund. A resources ledger needs none: its rules already bind ``issue`` to the genesis
issuers and a ``transfer`` to its author's own units (7.3). Files ledgers move neither.

A grant may name a ledger before it exists, so an account may hold one of those kinds of a
ledger nobody created yet: whoever creates it must know (:func:`refuse_other_holders`, the
home's check at ``ledger.create``). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..errors import AlreadyGrantedError
from .admin import ANY_KIND

MOVING_KINDS: Mapping[str, tuple[str, ...]] = {
    "election": ("register", "cast", "uncast", "withdraw"),
    "charity": ("donation", "disbursement"),
}


def moving_kinds(rules: Mapping[str, object]) -> tuple[str, ...]:
    """The kinds of a ledger with these genesis rules that move a vote or money (none: ())."""
    kind = rules.get("type")
    return MOVING_KINDS.get(kind, ()) if isinstance(kind, str) else ()


def kind_holders(rows: Iterable[tuple[str, str, list[str]]], ledger: str, kinds: Iterable[str]) -> dict[str, list[str]]:
    """Who holds each of ``kinds`` on ``ledger`` by the grant table ``rows`` (Grants.table's): its
    grant holders and those of ``*`` on the ledger, which may write every kind (PROTOCOL 16.2)."""
    held: dict[str, set[str]] = {}
    for name, kind, accounts in rows:
        if name == ledger:
            held.setdefault(kind, set()).update(accounts)
    every = held.get(ANY_KIND, set())
    return {kind: sorted(held.get(kind, set()) | every) for kind in kinds}


def held_by_others(holders: Mapping[str, list[str]], account: str) -> dict[str, list[str]]:
    """The kinds of ``holders`` (kind_holders') that an account other than ``account`` holds, with those accounts."""
    others = {kind: [a for a in accounts if a != account] for kind, accounts in holders.items()}
    return {kind: accounts for kind, accounts in others.items() if accounts}


def holders_text(held: Mapping[str, list[str]]) -> str:
    """``{"cast": ["mallory"]}`` as ``mallory holds 'cast'``."""
    return "; ".join(
        f"{', '.join(accounts)} {'holds' if len(accounts) == 1 else 'hold'} {kind!r}" for kind, accounts in held.items()
    )


def refuse_other_holders(
    rows: Iterable[tuple[str, str, list[str]]], ledger: str, rules: Mapping[str, object], author: str
) -> None:
    """Raise AlreadyGrantedError when an account other than ``author`` holds, by the grant table
    ``rows``, a kind of ``ledger`` that moves a vote or money under its genesis ``rules`` (or ``*``)."""
    others = held_by_others(kind_holders(rows, ledger, moving_kinds(rules)), author)
    if others:
        raise AlreadyGrantedError(
            f"{holders_text(others)} on {ledger}, granted before the ledger exists: revoke them "
            f"(vledger grant revoke {ledger} KIND ACCOUNT) or create it with them (keep_grants; "
            "vledger ledger create --keep-grants)"
        )
