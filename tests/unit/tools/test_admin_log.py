"""`vledger admin log` (tools/admin_log.py): what each removal did to the account's grants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vledger.config.settings import Limits
from vledger.node.record import Content, Entry
from vledger.node.rules.admin import ADMIN_LEDGER, ENDS_GRANTS, admin_genesis_rules
from vledger.node.rules.engine import RulesEngine
from vledger.node.rules.moving_kinds import kind_holders
from vledger.node.store import ChainStore
from vledger.tools.admin_log import log_rows

LIMITS = Limits()


def _removal(name: str, *, ends_grants: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {"account": name, "op": "remove", "role": "", "enabled": False, "keys": [], "via": ""}
    return payload | {ENDS_GRANTS: True} if ends_grants else payload


def test_the_log_names_the_grants_a_removal_ends_or_keeps(tmp_path: Path) -> None:
    """A removal with ends_grants ends the account's grants; one written before the rule keeps them."""
    store = ChainStore(tmp_path / "store", origin="ingest-1", domain=RulesEngine())
    genesis = admin_genesis_rules([("relief", "donation", "alice"), ("polls", "register", "w9")])
    store.create_ledger(Entry.prepare(genesis.genesis_content(ADMIN_LEDGER, "root", "g", 0), 0, LIMITS))
    # Its creator, an admin, imported as the home does (16.3): the home writes admin records by admins only (16.7).
    root = {"account": "root", "op": "import", "role": "admin", "enabled": True, "keys": [], "via": ""}
    store.append(Entry.prepare(Content(ADMIN_LEDGER, "account", root, "root", "import", 0), 0, LIMITS))
    for serial, payload in enumerate((_removal("alice", ends_grants=False), _removal("w9", ends_grants=True))):
        content = Content(ADMIN_LEDGER, "account", payload, "root", f"r{serial}", 0)
        store.append(Entry.prepare(content, 0, LIMITS))
    rows = log_rows(store.range(ADMIN_LEDGER))
    store.close()
    assert [row["what"] for row in rows[2:]] == [
        f"account alice removed; its grants stay (no {ENDS_GRANTS}): 'donation' on relief",
        "account w9 removed; its grants end: 'register' on polls",
    ]


def test_kind_holders_name_each_kind_s_holders_and_those_of_every_kind() -> None:
    rows = [
        ("fund", "donation", ["admin", "alice"]),
        ("fund", "*", ["bob"]),
        ("other", "disbursement", ["carol"]),
    ]
    held = kind_holders(rows, "fund", ("donation", "disbursement"))
    assert held == {"donation": ["admin", "alice", "bob"], "disbursement": ["bob"]}
    assert kind_holders(rows, "new", ("donation",)) == {"donation": []}
