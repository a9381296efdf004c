"""An account an admin removes is no ``unbacked_account`` while Redis's entries catch up (o13 F7).

The admin ledger's home writes the removal's record, then Redis's entries: a node that proves the
record's checkpoint in between found Redis letting in a key the ledger no longer does, and raised
``unbacked_account`` (seven nodes did at one honest ``vledger user remove``). An entry left there
longer than the grace, or one no record ever let in, is still reported.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vledger.broker import accounts as accounts_module
from vledger.broker import redis_functions
from vledger.broker.accounts import ACCOUNTS_TAG, AccountCache, AccountRegistry
from vledger.broker.admin_copy import AdminCopy
from vledger.broker.keys import new_keypair
from vledger.broker.redis_keys import group_key
from vledger.broker.redis_server import RedisServer, connect
from vledger.config.settings import Limits
from vledger.node.record import Content, Entry
from vledger.node.rules.admin import ADMIN_LEDGER, admin_genesis_rules
from vledger.node.rules.engine import RulesEngine
from vledger.node.store import ChainStore
from vledger.tests.integration.cluster import wait_until

DEADLINE = 5.0


class StoreAdmin:
    """The admin ledger of a real store, taken as proven: what a node enforces once the home's
    checkpoint of it came (the proof itself is broker/admin_copy.py's, tested on its own)."""

    def __init__(self, path: Path) -> None:
        self.store = ChainStore(path, origin="ingest-1", domain=RulesEngine())
        self.serial = 0
        genesis = admin_genesis_rules().genesis_content(ADMIN_LEDGER, "root", "g", 0)
        self.store.create_ledger(Entry.prepare(genesis, 0, Limits()))
        self.account("root", "import", "admin")

    def account(self, name: str, op: str, role: str = "", key: str = "") -> None:
        self.serial += 1
        removed = op == "remove"
        payload = {
            "account": name,
            "op": op,
            "role": "" if removed else role,
            "enabled": not removed,
            "keys": [key] if key and not removed else [],
            "via": "",
        }
        if removed:
            payload["ends_grants"] = True
        content = Content(ADMIN_LEDGER, "account", payload, "root", f"r{self.serial}", 0)
        self.store.append(Entry.prepare(content, 0, Limits()))

    def load(self) -> AdminCopy:
        return AdminCopy(tuple(self.store.range(ADMIN_LEDGER)), False)

    def keep(self) -> None:
        pass

    def moved(self) -> bool:
        return True


@pytest.fixture
def registry(redis_server: RedisServer) -> Iterator[AccountRegistry]:
    client = connect(redis_server.url)
    client.flushall()
    yield AccountRegistry(client)
    client.close()


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[StoreAdmin]:
    source = StoreAdmin(tmp_path / "store")
    yield source
    source.store.close()


def _cache(registry: AccountRegistry, admin: StoreAdmin, reports: list[list[str]]) -> AccountCache:
    return AccountCache(registry, "replica-1", poll_interval=0.1, admin=admin, on_unbacked=reports.append).start()


def _node_account(registry: AccountRegistry, admin: StoreAdmin, name: str) -> str:
    key = new_keypair().public
    admin.account(name, "add", "replica", key)
    registry.add_account(name, "replica")
    registry.add_key(name, key)
    return key


def test_a_removal_proven_before_redis_s_entries_change_raises_nothing(
    registry: AccountRegistry, admin: StoreAdmin
) -> None:
    _node_account(registry, admin, "replica-4")
    reports: list[list[str]] = []
    cache = _cache(registry, admin, reports)
    try:
        admin.account("replica-4", "remove")
        cache.refresh()  # the record proven here, Redis's entries not changed yet
        assert cache.lookup(registry.snapshot().accounts["replica-4"].keys[0]) is None  # refused at once
        registry.remove_account("replica-4")
        cache.refresh()
        assert [found for found in reports if found] == []
    finally:
        cache.stop()


def test_an_entry_redis_keeps_past_the_grace_is_reported(
    registry: AccountRegistry, admin: StoreAdmin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accounts_module, "_ENDED_GRACE", 0.5)
    _node_account(registry, admin, "replica-4")
    reports: list[list[str]] = []
    cache = _cache(registry, admin, reports)
    try:
        admin.account("replica-4", "remove")
        cache.refresh()
        assert [found for found in reports if found] == []
        # Redis's change never came (written back by hand, or lost): the heartbeat judges it again.
        wait_until(lambda: any(found for found in reports), DEADLINE, "the unbacked entry reported")
        assert reports[-1][0].startswith("replica-4 (") and reports[-1][0].endswith("): refused")
    finally:
        cache.stop()


def test_a_key_no_record_let_in_is_reported_at_once(registry: AccountRegistry, admin: StoreAdmin) -> None:
    reports: list[list[str]] = []
    cache = _cache(registry, admin, reports)
    try:
        registry.add_account("mallory", "admin")
        registry.add_key("mallory", new_keypair().public)
        cache.refresh()
        assert any(found and found[0].startswith("mallory (") for found in reports)
    finally:
        cache.stop()


def test_an_unbacked_entry_removed_by_hand_is_cleared_at_the_next_poll_with_no_new_version(
    registry: AccountRegistry, admin: StoreAdmin
) -> None:
    # Outsider o16 7: junk HDEL'd from Redis's accounts (no INCR of the version, no announce)
    # kept every node's unbacked_account open until the next honest change of the accounts.
    reports: list[list[str]] = []
    cache = _cache(registry, admin, reports)
    try:
        key = new_keypair().public
        registry.add_account("mallory", "admin")
        registry.add_key("mallory", key)
        cache.refresh()
        assert reports and reports[-1][0].startswith("mallory (")
        version = registry.version()
        client = registry.client
        client.hdel(group_key("vledger", ACCOUNTS_TAG, "keys"), key)
        client.srem(group_key("vledger", ACCOUNTS_TAG, "names"), "mallory")
        client.delete(group_key("vledger", ACCOUNTS_TAG, "account:mallory"))
        wait_until(lambda: reports[-1] == [], DEADLINE, "the unbacked entry cleared at a poll")
        assert registry.version() == version
    finally:
        cache.stop()


def test_a_node_started_while_redis_lacks_the_functions_library_enforces_what_it_proves(
    registry: AccountRegistry, admin: StoreAdmin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis's accounts are read by a function: started while Redis lacks the library, a node
    exited (fix31). It now enforces the accounts the admin ledger proves without it, judges no
    entry of Redis's unbacked meanwhile, and loads Redis's accounts once the library is back."""
    key = _node_account(registry, admin, "replica-4")
    intruder = new_keypair().public  # an entry no record backs
    registry.add_account("intruder", "replica")
    registry.add_key("intruder", intruder)

    def missing() -> None:
        raise redis_functions.FunctionsMissingError("Redis lacks the functions library")

    monkeypatch.setattr(registry, "snapshot", missing)
    reports: list[list[str]] = []
    cache = _cache(registry, admin, reports)
    try:
        assert cache.lookup(key) is not None and cache.lookup(intruder) is None
        assert reports == []  # Redis's entries were not read: nothing judged
        monkeypatch.undo()  # the loader put the library back
        wait_until(lambda: cache.version == registry.version(), DEADLINE, "Redis's accounts loaded")
        assert cache.lookup(key) is not None and cache.lookup(intruder) is None
        wait_until(lambda: reports and reports[-1], DEADLINE, "the unbacked entry reported")
    finally:
        cache.stop()
