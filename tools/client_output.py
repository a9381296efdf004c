"""What the client verbs print on stdout: lines for people, one JSON value for scripts.

With ``--json`` each verb prints one JSON object (``range`` prints one per record, JSON Lines),
binary values as lower-case hex. Errors never go to stdout: ``cli.main`` prints them on stderr.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..broker.keys import fingerprint
from ..node.errors import BadPublicKeyError
from ..node.json_values import jsonable
from ..node.record import Record
from .client_payloads import receipt_map, record_map, time_text


def print_json(value: Any) -> None:
    print(json.dumps(jsonable(value), ensure_ascii=False))


def _compact(value: Any) -> str:
    return json.dumps(jsonable(value), ensure_ascii=False, separators=(",", ":"))


def print_receipt(receipt: dict[str, Any], *, as_json: bool, **extra: Any) -> None:
    """A write's receipt; ``extra`` facts (an electronic id, a file's size) go with it."""
    if as_json:
        print_json({**receipt_map(receipt), **extra})
        return
    done = "already written (a retry: nothing new)" if receipt.get("duplicate") else "written"
    print(f"{done}: ledger {receipt.get('ledger')} height {receipt.get('height')}")
    print(f"hash {jsonable(receipt.get('hash'))}")
    if "replicas" in receipt:
        print(f"held by replicas: {', '.join(map(str, receipt['replicas']))}")
    for key, value in {**(receipt.get("values") or {}), **extra}.items():
        print(f"{key.replace('_', ' ')}: {jsonable(value)}")


def print_record(record: Record, *, as_json: bool) -> None:
    if as_json:
        print_json(record_map(record))
        return
    content = record.content
    rows = [
        ("ledger", content.ledger),
        ("height", str(record.height)),
        ("kind", content.kind),
        ("author", content.author),
        ("request", content.request_id),
        ("ts", f"{content.ts} ({time_text(content.ts)}, the client's clock)"),
        ("accepted", f"{record.accepted} ({time_text(record.accepted)}, by {record.origin})"),
        ("hash", record.link.hex()),
        ("prev", record.prev.hex()),
        ("payload", _compact(content.payload)),
    ]
    for label, value in rows:
        print(f"{label:<9} {value}")


def record_line(record: Record) -> str:
    """One record on one line, for ``range``: height, hash, kind, author, payload."""
    content = record.content
    return f"{record.height}\t{record.link.hex()}\t{content.kind}\t{content.author}\t{_compact(content.payload)}"


def print_hello(result: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print_json(result)
        return
    ledgers = ", ".join(result.get("ledgers") or []) or "none yet"
    print(f"node {result.get('node')}: vledger {result.get('version')}, protocol {result.get('protocol')}")
    print(f"you are {result.get('account')} ({result.get('role')})")
    print(f"home to: {ledgers}")
    standby = result.get("standby")
    if isinstance(standby, dict):
        restarts = standby.get("follow_restarts")
        print(f"standby of: {', '.join(standby.get('ledgers') or []) or 'none'} (follow restarts: {restarts})")


def print_whoami(result: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print_json(result)
        return
    key = str(result.get("key"))
    print(f"account {result.get('account')} ({result.get('role')})")
    print(f"key {key} ({_fingerprint(key)})")


def _fingerprint(key: str) -> str:
    try:
        return fingerprint(key)
    except BadPublicKeyError:
        return "not a valid key"


def print_ledgers(ledgers: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        print_json({"ledgers": ledgers})
        return
    if not ledgers:
        print("no ledgers")
        return
    header = ("LEDGER", "HOME", "SIZE", "DIFFICULTY", "TYPE", "KINDS")
    rows = [
        (
            str(entry.get("ledger")),
            str(entry.get("home")),
            str(entry.get("size")),
            str(entry.get("difficulty")),
            str(entry.get("type")),
            ",".join(entry.get("kinds") or []),
        )
        for entry in ledgers
    ]
    table(header, rows)


def print_accounts(accounts: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        print_json({"accounts": accounts})
        return
    if not accounts:
        print("no accounts")
        return
    rows = []
    for entry in accounts:
        keys = entry.get("keys") or []
        state = "enabled" if entry.get("enabled") else "disabled"
        first = _fingerprint(keys[0]) if keys else "no keys"
        rows.append((str(entry.get("account")), str(entry.get("role")), state, first))
        rows.extend(("", "", "", _fingerprint(key)) for key in keys[1:])
    table(("ACCOUNT", "ROLE", "STATE", "KEYS"), rows)


def print_account_change(result: dict[str, Any], done: str, *, as_json: bool) -> None:
    """An admin change: what changed, and the nodes that had not confirmed it in time."""
    if as_json:
        print_json(result)
        return
    account, key = result.get("account"), result.get("key")
    if key is None:
        subject = f"account {account}"
    else:
        subject = f"key {key}" if account is None else f"key {key} of account {account}"
    print(f"{subject}: {done}")
    print_pending(result)


def print_pending(result: dict[str, Any]) -> None:
    """The nodes an admin command's answer names ``pending`` (PROTOCOL 16.3), if any: the change
    is made, and those nodes had not reported applying it within the node's ``account_wait_ms``."""
    pending = result.get("pending") or []
    if pending:
        print(
            f"pending on {', '.join(map(str, pending))}: made, but not yet reported applied there within "
            f"account_wait_ms; each enforces it once it applies accounts version {result.get('version')}"
        )


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def print_enrollment(account: str, uri: str, recovery_codes: list[str]) -> None:
    """A new second factor, shown once: the otpauth:// URI (paste it, or make a QR code of it,
    into an authenticator app) and the recovery codes (each good once)."""
    print(f"second factor of {account!r}: add this URI to an authenticator app (it is shown only now):")
    print(f"  {uri}")
    print("recovery codes, each good once in place of a code (keep them offline; they are shown only now):")
    for code in recovery_codes:
        print(f"  {code}")
