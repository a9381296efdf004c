"""``vledger admin log`` and ``vledger grant``: the admin ledger as a reader sees it.

The log is read like any ledger (each record checked as the next of the chain) and each
record is told as one line: when, who, through which key, what changed. The grant table
is replayed from those same records with the admin ledger's own rules (node/rules/admin.py),
never taken from a node's word.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..broker.keys import fingerprint
from ..node.ledger import LedgerRules
from ..node.record import Record
from ..node.rules.admin import ADMIN_LEDGER, ANY_KIND, ENDS_GRANTS, AdminState, removal_ends_grants
from ..node.rules.engine import RulesEngine, grant_closes
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


def inert_grants(
    rows: Iterable[tuple[str, str, list[str]]], rules_of: Callable[[str], LedgerRules | None]
) -> dict[tuple[str, str], str]:
    """Why each grant of ``rows`` that no rule applies closes nothing, by its ledger's genesis
    rules (``rules_of``; None: unknown, e.g. a ledger not created yet, whose creation the grant
    closes the kind for). A resources ledger's ``issue`` and ``transfer`` (7.3), or a kind the
    genesis does not list: ``grant add`` refuses both now, but the admin ledger keeps those a
    raw client or ``--before-create`` recorded, and listing them as in force misled (gr32).
    ``*`` closes the other kinds, so it applies."""
    inert: dict[tuple[str, str], str] = {}
    for ledger, kind, _ in rows:
        rules = rules_of(ledger) if kind != ANY_KIND else None
        if rules is None:
            continue
        if kind not in rules.kinds:
            inert[ledger, kind] = f"{ledger}'s genesis lists no kind {kind!r}"
        elif not grant_closes(rules, kind):
            inert[ledger, kind] = f"no grant closes {kind!r} on a {rules.rules.get('type')} ledger (7.3)"
    return inert


def print_grants(
    rows: list[tuple[str, str, list[str]]], *, as_json: bool, inert: Mapping[tuple[str, str], str] | None = None
) -> None:
    """The grants in force, then those recorded that close nothing (``inert``: why, by ledger and kind)."""
    inert = inert or {}
    if as_json:
        print_json(
            {
                "grants": [
                    {
                        "ledger": ledger,
                        "kind": kind,
                        "accounts": accounts,
                        "applies": (ledger, kind) not in inert,
                        "inert": inert.get((ledger, kind), ""),
                    }
                    for ledger, kind, accounts in rows
                ]
            }
        )
        return
    applied = [row for row in rows if (row[0], row[1]) not in inert]
    idle = [row for row in rows if (row[0], row[1]) in inert]
    if not applied:
        print("no grants in force: every kind of every ledger is open to writers")
    else:
        table(
            ("ledger", "kind", "accounts"),
            [(ledger, kind, ", ".join(accounts) or "(nobody)") for ledger, kind, accounts in applied],
        )
    if idle:
        print("\nrecorded, but no rule applies them (they close nothing; grant revoke removes one):")
        table(
            ("ledger", "kind", "accounts", "why"),
            [(ledger, kind, ", ".join(accounts) or "(nobody)", inert[ledger, kind]) for ledger, kind, accounts in idle],
        )
