"""``vledger admin log`` and ``vledger grant``: the admin ledger as a reader sees it.

The log is read like any ledger (each record checked as the next of the chain) and each
record is told as one line: when, who, through which key, what changed. The grant table
is replayed from those same records with the admin ledger's own rules (node/rules/admin.py),
never taken from a node's word.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

from ..broker.keys import fingerprint
from ..node.record import Record
from ..node.rules.admin import ADMIN_LEDGER, ENDS_GRANTS, AdminState, removal_ends_grants
from ..node.rules.engine import RulesEngine
from .client_output import print_json, table


def _when(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def describe(record: Record, held: Iterable[tuple[str, str]] = ()) -> str:
    """What one admin record did, in words; ``held``: the grants a removed account held, which
    its removal ends, or keeps when the record has no ``ends_grants`` (PROTOCOL 16.2)."""
    payload: dict[str, Any] = record.content.payload
    kind = record.content.kind
    if kind == "genesis":
        rules = payload.get("rules", {})
        grants = rules.get("grants", []) if isinstance(rules, dict) else []
        return f"admin ledger created ({len(grants)} grants in its genesis)"
    if kind == "account":
        state = "enabled" if payload.get("enabled") else "disabled"
        if payload.get("op") == "remove":
            grants = ", ".join(f"{kind!r} on {ledger}" for ledger, kind in held)
            if not grants:
                return f"account {payload.get('account')} removed"
            if removal_ends_grants(payload):
                return f"account {payload.get('account')} removed; its grants end: {grants}"
            # Written before removals ended grants: an account added again under the name holds them.
            return f"account {payload.get('account')} removed; its grants stay (no {ENDS_GRANTS}): {grants}"
        keys = len(payload.get("keys", []))
        return f"account {payload.get('account')} {payload.get('op')}: role {payload.get('role')}, {state}, {keys} keys"
    if kind == "key":
        return f"key {_short(payload.get('key'))} {payload.get('op')} for account {payload.get('account')}"
    if kind in ("grant", "revoke"):
        verb = "may now write" if kind == "grant" else "may no longer write"
        return f"{payload.get('account')} {verb} {payload.get('kind')!r} on {payload.get('ledger')}"
    if kind == "key_rotation":
        until = _when(int(payload.get("until", 0)))
        return f"node {payload.get('node')} rotated its keys to {_short(payload.get('curve'))}; old keys until {until}"
    if kind == "totp":
        return f"second factor of {payload.get('account')}: {payload.get('op')}"
    return kind


def _grants_held(engine: RulesEngine, record: Record) -> list[tuple[str, str]]:
    """The grants of the account ``record`` removes, if it removes one, by the records before it."""
    payload = record.content.payload
    if record.content.kind != "account" or not isinstance(payload, dict) or payload.get("op") != "remove":
        return []
    grants = engine.grants()
    return [] if grants is None else grants.held_by(str(payload.get("account")))


def _short(key: object) -> str:
    if isinstance(key, str) and len(key) == 40:
        try:
            return fingerprint(key)
        except Exception:  # not a key after all: show it as it is
            return key
    return str(key)


def log_rows(records: Iterable[Record]) -> list[dict[str, Any]]:
    rows = []
    # Replayed as it goes, to name the grants each removal ends or keeps (PROTOCOL 16.2): no record says them.
    engine = RulesEngine()
    for record in records:
        held = _grants_held(engine, record)
        engine.replay([record])
        via = record.content.payload.get("via", "") if isinstance(record.content.payload, dict) else ""
        rows.append(
            {
                "height": record.height,
                "accepted": record.accepted,
                "when": _when(record.accepted),
                "author": record.content.author,
                "via": via,
                "kind": record.content.kind,
                "what": describe(record, held),
                "hash": record.link.hex(),
            }
        )
    return rows


def print_log(records: Iterable[Record], *, as_json: bool) -> None:
    rows = log_rows(records)
    if as_json:
        print_json({"ledger": ADMIN_LEDGER, "records": rows})
        return
    if not rows:
        print("the admin ledger is empty")
        return
    table(
        ("height", "accepted (UTC)", "by", "via key", "what"),
        [(str(r["height"]), r["when"], r["author"], _short(r["via"]) or "-", r["what"]) for r in rows],
    )


def grant_table(records: Iterable[Record]) -> list[tuple[str, str, list[str]]]:
    """The grants in force after ``records`` (the admin ledger from its genesis)."""
    engine = RulesEngine()
    engine.replay(records)
    held = engine.state(ADMIN_LEDGER)
    if held is None or not isinstance(held.domain, AdminState):
        return []
    return held.domain.tally().grants


def print_grants(rows: list[tuple[str, str, list[str]]], *, as_json: bool) -> None:
    if as_json:
        print_json(
            {"grants": [{"ledger": ledger, "kind": kind, "accounts": accounts} for ledger, kind, accounts in rows]}
        )
        return
    if not rows:
        print("no grants: every kind of every ledger is open to writers")
        return
    table(
        ("ledger", "kind", "accounts"),
        [(ledger, kind, ", ".join(accounts) or "(nobody)") for ledger, kind, accounts in rows],
    )
