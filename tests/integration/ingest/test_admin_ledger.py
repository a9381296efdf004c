"""The admin ledger's home and the Redis cache (ingest/admin_ledger.py, docs/PROTOCOL.md 16.4):
every change reaches Redis from the chain, and a flushed Redis is rebuilt from it."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.accounts import AccountCache, AccountRegistry, AdminCheck
from vledger.broker.keys import new_keypair
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.ingest.accounts import RegistryAdmin, wait_signed
from vledger.ingest.admin_ledger import AdminLedger
from vledger.ingest.service import Caller
from vledger.node.errors import KeyInUseError, NoSuchAccountError, NotGrantedError
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry
from vledger.node.rules.admin import ADMIN_LEDGER
from vledger.node.rules.engine import RulesEngine
from vledger.node.store import ChainStore
from vledger.node.wire import Args
from vledger.tests.unit.node.test_admin_accounts import ADMIN as CHECKPOINT_KEY
from vledger.tests.unit.node.test_admin_accounts import _note


@pytest.fixture
def home(redis_client: Any, tmp_path: Path) -> Iterator[tuple[AccountRegistry, ChainStore, RegistryAdmin]]:
    registry = AccountRegistry(redis_client)
    registry.bootstrap_admin("root", new_keypair().public)
    store = ChainStore(tmp_path / "ingest-1", origin="ingest-1", domain=RulesEngine())
    cache = AccountCache(registry, "ingest-1").start()
    yield registry, store, RegistryAdmin(registry, cache, ["ingest-1"], 2000, AdminLedger(store, registry))
    cache.stop()
    store.close()


ROOT = Caller("root", "admin", new_keypair().public)


def test_changes_are_cached_and_a_flushed_redis_is_rebuilt_from_the_chain(
    home: tuple[AccountRegistry, ChainStore, RegistryAdmin], redis_client: Any
) -> None:
    registry, store, admin = home
    writer_key = new_keypair().public
    admin.apply("account.add", Args({"account": "treasurer", "role": "writer"}), ROOT)
    admin.apply("key.add", Args({"account": "treasurer", "key": writer_key}), ROOT)
    admin.apply("account.add", Args({"account": "gone", "role": "observer"}), ROOT)
    admin.apply("account.remove", Args({"account": "gone"}), ROOT)
    admin.apply("account.disable", Args({"account": "treasurer"}), ROOT)
    result = admin.apply("grant.add", Args({"ledger": "zakat", "kind": "disbursement", "account": "treasurer"}), ROOT)
    assert result["height"] == store.size(ADMIN_LEDGER) - 1
    assert registry.admin_size() == store.size(ADMIN_LEDGER)
    before = {a.name: (a.role, a.enabled, a.keys) for a in registry.list_accounts()}
    redis_client.flushall()
    AdminLedger(store, registry).sync()
    after = {a.name: (a.role, a.enabled, a.keys) for a in registry.list_accounts()}
    assert after == before and "gone" not in after and after["treasurer"][1] is False
    assert registry.admin_records() == [data for _, data in store.range_raw(ADMIN_LEDGER)]


def test_another_node_reads_its_grants_from_the_cache(
    home: tuple[AccountRegistry, ChainStore, RegistryAdmin], tmp_path: Path
) -> None:
    registry, _, admin = home
    admin.apply("account.add", Args({"account": "treasurer", "role": "writer"}), ROOT)
    other = AccountCache(registry, "ingest-2").start()
    try:
        store = ChainStore(
            tmp_path / "ingest-2",
            origin="ingest-2",
            domain=RulesEngine(grants=lambda: other.grants),
            accepted_floor=other.accepted_floor,
        )
        rules = LedgerRules(("note",), 0, {})
        store.create_ledger(Entry.prepare(rules.genesis_content("fund", "root", "g", 0), 0, PROTOCOL_LIMITS))
        granted = admin.apply("grant.add", Args({"ledger": "fund", "kind": "note", "account": "treasurer"}), ROOT)
        # ingest-2 is not among the nodes the admin waits for: it learns the change from its announcement.
        assert other.wait_for_version(granted["version"], 10.0)
        assert other.grants is not None and other.grants.holds("fund", "note", "treasurer")
        with pytest.raises(NotGrantedError):
            store.append(Entry.prepare(Content("fund", "note", {}, "mallory", "m1", 0), 0, PROTOCOL_LIMITS))
        receipt = store.append(Entry.prepare(Content("fund", "note", {}, "treasurer", "t1", 0), 0, PROTOCOL_LIMITS))
        record = store.get("fund", receipt.height)
        assert record is not None and record.accepted > other.grants.last_accepted
        store.close()
    finally:
        other.stop()


SLOWED_WAIT_MS = 200  # account_wait_ms of the home whose outbox signs nothing more


@pytest.fixture
def slowed_home(
    redis_client: Any, tmp_path: Path
) -> Iterator[tuple[AccountRegistry, ChainStore, RegistryAdmin, AccountCache]]:
    """The admin ledger's home as a loaded host leaves it: its view checks the accounts against
    the admin ledger (AdminCheck, as every node's), and its outbox signed the ledger once, at
    its creation, and nothing since (starved of CPU): no later record is covered by a
    checkpoint within the command's account_wait_ms."""
    registry = AccountRegistry(redis_client)
    registry.bootstrap_admin("root", ROOT.key)
    store = ChainStore(tmp_path / "ingest-1", origin="ingest-1", domain=RulesEngine())
    cache = AccountCache(registry, "ingest-1", check=AdminCheck(CHECKPOINT_KEY.verifier(), wait_seconds=0.0)).start()
    admin = RegistryAdmin(
        registry,
        cache,
        ["ingest-1"],
        SLOWED_WAIT_MS,
        AdminLedger(store, registry),
        wait_signed=functools.partial(wait_signed, registry),
    )
    admin.apply("account.add", Args({"account": "first", "role": "observer"}), ROOT)  # creates the ledger
    redis_client.set(registry.admin_checkpoint_key, _note(registry.admin_records(), CHECKPOINT_KEY))
    cache.refresh()
    yield registry, store, admin, cache
    cache.stop()
    store.close()


def test_a_command_right_after_an_account_add_finds_the_account_while_no_checkpoint_covers_it(
    slowed_home: tuple[AccountRegistry, ChainStore, RegistryAdmin, AccountCache], redis_client: Any
) -> None:
    """account.add answered with the home itself pending (its checked view leaves the account
    out until a checkpoint covers its record), then at once key.add and grant.add of it: the
    home judged them against that checked view and answered no_such_account. It judges them
    against its own admin records now (AdminLedger.given, PROTOCOL 16.3); the nodes still
    enforce each change only under a checkpoint."""
    registry, _, admin, cache = slowed_home
    key = new_keypair().public
    added = admin.apply("account.add", Args({"account": "treasurer", "role": "writer"}), ROOT)
    assert added["pending"] == ["ingest-1"] and "treasurer" not in cache.snapshot.accounts
    bound = admin.apply("key.add", Args({"account": "treasurer", "key": key}), ROOT)
    granted = admin.apply("grant.add", Args({"ledger": "fund", "kind": "note", "account": "treasurer"}), ROOT)
    assert bound["pending"] == granted["pending"] == ["ingest-1"] and cache.lookup(key) is None
    with pytest.raises(KeyInUseError):  # the key is judged bound too, though not yet enforced
        admin.apply("key.add", Args({"account": "first", "key": key}), ROOT)
    # The outbox signs at last: the node enforces it all, and reports the version applied.
    redis_client.set(registry.admin_checkpoint_key, _note(registry.admin_records(), CHECKPOINT_KEY))
    cache.refresh()
    owner = cache.lookup(key)
    assert owner is not None and owner.account == "treasurer"
    registry.wait_applied(granted["version"], ["ingest-1"], 0.0)


def test_the_home_judges_no_command_by_an_account_only_redis_gives(
    slowed_home: tuple[AccountRegistry, ChainStore, RegistryAdmin, AccountCache],
) -> None:
    """An account a Redis user wrote into the accounts, on no admin record, is no account to
    the home's commands either (it would be recorded as given by the admin)."""
    registry, _, admin, _ = slowed_home
    registry.add_account("forged", "admin")
    with pytest.raises(NoSuchAccountError):
        admin.apply("key.add", Args({"account": "forged", "key": new_keypair().public}), ROOT)
    with pytest.raises(NoSuchAccountError):
        admin.apply("grant.add", Args({"ledger": "fund", "kind": "note", "account": "forged"}), ROOT)
