"""What the client verbs print on stdout: lines for people, one JSON value for scripts.

With ``--json`` each verb prints one JSON object (``range`` its records in a list of it, a line
each as they are checked), binary values as lower-case hex. Errors go to stderr, and with
``--json`` as ``{"error": {"code", "message"}}`` on stdout too (``cli.main``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from ..broker.keys import fingerprint
from ..node.errors import BadPublicKeyError, RemoteError, VledgerError
from ..node.json_values import error_json, jsonable
from ..node.record import Record
from ..node.times import time_text
from .client_payloads import receipt_map, record_map


def print_json(value: Any) -> None:
    print(json.dumps(jsonable(value), ensure_ascii=False))


def print_json_list(head: dict[str, Any], key: str, items: Iterable[Any]) -> None:
    """One JSON object, ``head`` with ``items`` in a list under ``key``, printed an item a line as
    they come: a long ledger's records are never held whole, and a script still reads one object
    (JSON Lines failed ``json.load``, outsider26 I2). A failure part-way ends the list and the
    object with the failure's ``"error"`` beside what came before it, then is raised."""
    print(json.dumps(jsonable(head), ensure_ascii=False)[:-1] + (", " if head else "") + f'"{key}": [', flush=True)
    before = ""
    try:
        for item in items:
            print(before + json.dumps(jsonable(item), ensure_ascii=False), end="", flush=True)
            before = ",\n"
    except VledgerError as e:
        failed = (
            error_json(e.code, e.reason, e.details) if isinstance(e, RemoteError) else error_json(e.code, e.message)
        )
        print("\n], " + json.dumps(failed, ensure_ascii=False, default=str)[1:], flush=True)
        raise
    print("\n]}", flush=True)


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
    pending = result.get("pending") or []
    if pending:
        print(f"not yet confirmed by {', '.join(map(str, pending))}: they apply it when they catch up")


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
