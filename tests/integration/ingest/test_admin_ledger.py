"""The admin ledger's home and the Redis cache (ingest/admin_ledger.py, docs/PROTOCOL.md 16.4):
every change reaches Redis from the chain, and a flushed Redis is rebuilt from it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from vledger.broker import accounts as accounts_module
from vledger.broker.accounts import AccountCache, AccountRegistry
from vledger.broker.admin_copy import FIRST_PROOF_WAIT, SignedAdminSource
from vledger.broker.curve import AllowList
from vledger.broker.keys import new_keypair
from vledger.broker.redis_keys import ledger_key
from vledger.broker.second_factor import REPLACE, SecondFactorStore
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.ingest.accounts import RegistryAdmin
from vledger.ingest.admin_ledger import AdminLedger, StoreAdminSource
from vledger.ingest.second_factor import SecondFactors
from vledger.ingest.service import Caller
from vledger.node.errors import AdminLedgerExistsError, LastAdminError, NotGrantedError
from vledger.node.ledger import LedgerRules
from vledger.node.note import ALG_ED25519, VerifierKey, origin_for, parse_checkpoint, parse_note
from vledger.node.record import Content, Entry
from vledger.node.rules.admin import ADMIN_LEDGER
from vledger.node.rules.engine import RulesEngine
from vledger.node.store import ChainStore
from vledger.node.tree import Frontier, leaf_hash
from vledger.node.wire import Args
from vledger.node.witness import HomeSigner


@pytest.fixture
def home(redis_client: Any, tmp_path: Path) -> Iterator[tuple[AccountRegistry, ChainStore, RegistryAdmin]]:
    registry = AccountRegistry(redis_client)
    registry.bootstrap_admin("root", new_keypair().public)
    store = ChainStore(tmp_path / "ingest-1", origin="ingest-1", domain=RulesEngine())
    cache = AccountCache(registry, "ingest-1", admin=StoreAdminSource(store)).start()
    yield registry, store, RegistryAdmin(registry, cache, ["ingest-1"], 2000, AdminLedger(store, registry))
    cache.stop()
    store.close()


ROOT = Caller("root", "admin", new_keypair().public)
CLUSTER = "test"
HOME_SEED = bytes(range(32))
ADMIN_KEY = VerifierKey(origin_for(CLUSTER, ADMIN_LEDGER), ALG_ED25519, bytes(SigningKey(HOME_SEED).verify_key))
DEADLINE = 30.0  # seconds; every wait on another thread is bounded


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


def test_a_bootstrap_on_a_flushed_redis_is_undone_by_the_ledger(
    home: tuple[AccountRegistry, ChainStore, RegistryAdmin], redis_client: Any
) -> None:
    """Review r10 #1: after Redis lost its data, compose's bootstrap job (or supervise start)
    found no admin ledger in it and made an admin; the home's sync then saw accounts and rebuilt
    nothing: an admin the ledger disabled was enabled again, and every other account was gone."""
    registry, store, admin = home
    deputy_key = new_keypair().public
    admin.apply("account.add", Args({"account": "deputy", "role": "admin"}), ROOT)
    admin.apply("key.add", Args({"account": "deputy", "key": deputy_key}), ROOT)
    admin.apply("account.add", Args({"account": "treasurer", "role": "writer"}), ROOT)
    admin.apply("account.disable", Args({"account": "deputy"}), ROOT)  # e.g. its key was stolen
    before = {a.name: a for a in registry.list_accounts()}
    redis_client.flushall()  # a lost Redis volume
    registry.bootstrap_admin("deputy", deputy_key)
    registry.bootstrap_admin("mallory", new_keypair().public)
    AdminLedger(store, registry).sync()
    assert {a.name: a for a in registry.list_accounts()} == before
    assert registry.admin_records() == [data for _, data in store.range_raw(ADMIN_LEDGER)]


def publish_admin_checkpoint(redis_client: Any, store: ChainStore, size: int | None = None) -> None:
    """What the home's outbox does after each commit: its signed checkpoint of the admin ledger
    (of its first ``size`` records, all by default) in Redis (vledger:{admin}:checkpoint), with
    HOME_SEED's key."""
    tree = Frontier()
    for _, data in store.range_raw(ADMIN_LEDGER, 0, size):
        tree.append(leaf_hash(data))
    signed = HomeSigner(CLUSTER, HOME_SEED).sign(ADMIN_LEDGER, tree.size, tree.root())
    redis_client.set(ledger_key("vledger", ADMIN_LEDGER, "checkpoint"), signed.note)


def test_a_node_on_the_bootstrap_s_accounts_keeps_them_until_a_checkpoint_proves_all_it_saw(
    home: tuple[AccountRegistry, ChainStore, RegistryAdmin], redis_client: Any
) -> None:
    """The admin's first commands answer before the home's outbox set any checkpoint of the new
    admin ledger (its process was still starting): the other nodes let the new writer in from
    Redis's accounts. The first checkpoint then came for a prefix of the copy (a pass before the
    writer's key record), or before the home had copied the record it covers: the writer was
    refused until the next one (the e2e drill's "writer of notes stopped: forbidden")."""
    registry, home_store, admin = home
    clock = [100.0]
    source = SignedAdminSource(redis_client, ADMIN_KEY, clock=lambda: clock[0])
    other = AccountCache(registry, "ingest-2", poll_interval=0.2, admin=source).start()
    try:
        admin.apply("account.add", Args({"account": "writer", "role": "writer"}), ROOT)
        key = new_keypair().public
        added = admin.apply("key.add", Args({"account": "writer", "key": key}), ROOT)
        other.refresh()
        assert other.version >= added["version"] and other.lookup(key) is not None  # the bootstrap's accounts
        # A checkpoint of every record but the key's: the writer stays in.
        publish_admin_checkpoint(redis_client, home_store, home_store.size(ADMIN_LEDGER) - 1)
        other.refresh()
        assert other.lookup(key) is not None and other.grants is not None and not other.behind
        # One of a record the home has not copied to Redis yet (it proves nothing of the copy): the same.
        grant = {"ledger": "x", "kind": "y", "account": "writer", "via": ""}
        AdminLedger(home_store, registry)._write("grant", grant, "root")
        publish_admin_checkpoint(redis_client, home_store)
        other.refresh()
        assert other.lookup(key) is not None
        # Once one proves the whole copy, the accounts are the ledger's, and stay so.
        AdminLedger(home_store, registry)._cache()
        other.refresh()
        assert other.lookup(key) is not None and source.load().records is not None
        assert other.grants is not None and other.grants.holds("x", "y", "writer")
    finally:
        other.stop()


def test_an_admin_command_answers_once_redis_s_checkpoint_covers_its_record(redis_client: Any, tmp_path: Path) -> None:
    """Only the ingest nodes confirm an admin change; a replica takes it once the home's checkpoint
    in Redis proves its record. The home's outbox process sets it a pass after the commit, later
    when it waits for the CPU: a replica's rotation answered before it, and the replica's new key
    got no answer within the test's 5 s. The command now answers once the checkpoint is there."""
    registry = AccountRegistry(redis_client)
    registry.bootstrap_admin("root", new_keypair().public)
    store = ChainStore(tmp_path / "ingest-1", origin="ingest-1", domain=RulesEngine())
    cache = AccountCache(registry, "ingest-1", admin=StoreAdminSource(store)).start()
    admin = RegistryAdmin(registry, cache, ["ingest-1"], 5000, AdminLedger(store, registry, checkpoints=True))
    outbox = threading.Timer(0.3, publish_admin_checkpoint, (redis_client, store))  # a slow outbox pass
    try:
        outbox.start()
        added = admin.apply("account.add", Args({"account": "clerk", "role": "writer"}), ROOT)
        note = redis_client.get(ledger_key("vledger", ADMIN_LEDGER, "checkpoint"))
        assert note is not None and parse_checkpoint(parse_note(note).text).size == added["height"] + 1
        assert added["pending"] == []
    finally:
        outbox.cancel()
        cache.stop()
        store.close()


def test_a_node_whose_proof_is_behind_redis_s_checkpoint_lets_in_a_key_just_added_at_its_first_handshake(
    home: tuple[AccountRegistry, ChainStore, RegistryAdmin], redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The admin's command answered once Redis's checkpoint covered the writer's key record; the
    replica, polling every 50 ms while behind, took it 17 ms after the writer's first handshake,
    which it refused, and ZeroMQ never retries a refused handshake: writer1 heard nothing for 5 s
    (test_node_key_rotation, under load). A key it does not know now makes a node look whether
    the checkpoint moved, and take it, before it decides; a stranger is refused all the same,
    and a flood of them reaches Redis once per _CATCH_UP_INTERVAL at most."""
    registry, home_store, admin = home
    # The flood's bound, made long enough to be seen.
    monkeypatch.setattr(accounts_module, "_CATCH_UP_INTERVAL", 3600.0, raising=False)
    # Its look runs on another thread, waited for 100 ms: a loaded host's may take longer.
    monkeypatch.setattr(accounts_module, "_CATCH_UP_WAIT", 30.0)
    admin.apply("account.add", Args({"account": "writer", "role": "writer"}), ROOT)
    publish_admin_checkpoint(redis_client, home_store)
    requests = AllowList()
    # Never started: no announcement nor poll reaches it, its proof stays where refresh() left it.
    replica = AccountCache(
        registry, "replica-1", poll_interval=3600, admin=SignedAdminSource(redis_client, ADMIN_KEY),
        on_change=requests.replace,
    )  # fmt: skip
    requests.on_unknown(replica.catch_up)
    replica.refresh()
    assert replica.snapshot.accounts["writer"].keys == () and not replica.behind  # proven, no key yet
    key = new_keypair().public
    admin.apply("key.add", Args({"account": "writer", "key": key}), ROOT)
    publish_admin_checkpoint(redis_client, home_store)
    assert key not in requests  # what the replica enforced before the writer's first request
    assert requests.callback("global", key.encode())
    assert replica.lookup(key) is not None and not replica.behind
    assert not requests.callback("global", new_keypair().public.encode())  # a stranger: refused
    # Within the interval, unknown keys do not make it look again, even once something moved.
    later = new_keypair().public
    admin.apply("key.add", Args({"account": "writer", "key": later}), ROOT)
    publish_admin_checkpoint(redis_client, home_store)
    assert not requests.callback("global", later.encode()) and replica.lookup(later) is None


def test_a_copy_never_proven_whole_is_left_for_its_proven_records_after_a_while(
    home: tuple[AccountRegistry, ChainStore, RegistryAdmin], redis_client: Any
) -> None:
    """Records written into Redis's copy by hand keep a node on Redis's accounts FIRST_PROOF_WAIT at most."""
    registry, home_store, admin = home
    clock = [100.0]
    source = SignedAdminSource(redis_client, ADMIN_KEY, clock=lambda: clock[0])
    # On the bootstrap's accounts before the first command (a node whose first load finds records
    # and no checkpoint takes none of Redis's accounts: test_admin_insider.py).
    other = AccountCache(registry, "ingest-2", poll_interval=0.2, admin=source).start()
    admin.apply("account.add", Args({"account": "writer", "role": "writer"}), ROOT)
    key = new_keypair().public
    admin.apply("key.add", Args({"account": "writer", "key": key}), ROOT)
    try:
        other.refresh()
        assert other.lookup(key) is not None and source.load().records is None
        publish_admin_checkpoint(redis_client, home_store, home_store.size(ADMIN_LEDGER) - 1)
        other.refresh()
        assert source.load().records is None
        clock[0] += FIRST_PROOF_WAIT
        other.refresh()
        proven = source.load().records
        assert proven is not None and len(proven) == home_store.size(ADMIN_LEDGER) - 1
        assert other.lookup(key) is None and other.behind  # its key record awaits its checkpoint
    finally:
        other.stop()


def test_another_node_reads_its_grants_from_the_cache_once_the_home_s_checkpoint_proves_them(
    home: tuple[AccountRegistry, ChainStore, RegistryAdmin], tmp_path: Path, redis_client: Any
) -> None:
    registry, home_store, admin = home
    admin.apply("account.add", Args({"account": "treasurer", "role": "writer"}), ROOT)
    publish_admin_checkpoint(redis_client, home_store)
    other = AccountCache(registry, "ingest-2", poll_interval=0.2, admin=SignedAdminSource(redis_client, ADMIN_KEY))
    other.start()
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
        # ingest-2 is not among the nodes the admin waits for: it learns the change from its announcement,
        # but takes the record only once a checkpoint its home signed proves it.
        assert other.wait_for_version(granted["version"], 10.0)
        assert other.behind and other.grants is not None and not other.grants.holds("fund", "note", "treasurer")
        publish_admin_checkpoint(redis_client, home_store)
        deadline = time.monotonic() + 10.0
        while other.behind and time.monotonic() < deadline:
            time.sleep(0.05)
        assert other.grants is not None and other.grants.holds("fund", "note", "treasurer")
        with pytest.raises(NotGrantedError):
            store.append(Entry.prepare(Content("fund", "note", {}, "mallory", "m1", 0), 0, PROTOCOL_LIMITS))
        receipt = store.append(Entry.prepare(Content("fund", "note", {}, "treasurer", "t1", 0), 0, PROTOCOL_LIMITS))
        record = store.get("fund", receipt.height)
        assert record is not None and record.accepted > other.grants.last_accepted
        store.close()
    finally:
        other.stop()


def test_bootstrap_changes_no_admin_once_the_admin_ledger_exists(
    home: tuple[AccountRegistry, ChainStore, RegistryAdmin],
) -> None:
    registry, _, admin = home
    deputy_key = new_keypair().public
    admin.apply("account.add", Args({"account": "deputy", "role": "admin"}), ROOT)
    admin.apply("key.add", Args({"account": "deputy", "key": deputy_key}), ROOT)
    admin.apply("account.disable", Args({"account": "deputy"}), ROOT)
    version = registry.version()
    # A new admin no record adds, and a disabled one revived while the ledger says disabled.
    with pytest.raises(AdminLedgerExistsError):
        registry.bootstrap_admin("mallory", new_keypair().public)
    with pytest.raises(AdminLedgerExistsError):
        registry.bootstrap_admin("deputy", deputy_key)
    with pytest.raises(AdminLedgerExistsError):
        registry.bootstrap_admin("root", new_keypair().public)
    accounts = {a.name: a for a in registry.list_accounts()}
    assert "mallory" not in accounts and accounts["deputy"].enabled is False
    assert registry.version() == version
    # What a restart does (supervise start) and what a host's --totp needs: the no-op.
    root_key = accounts["root"].keys[0]
    assert registry.bootstrap_admin("root", root_key) == version


def test_the_last_admin_able_to_send_a_command_is_kept(
    home: tuple[AccountRegistry, ChainStore, RegistryAdmin], redis_client: Any
) -> None:
    registry, store, admin = home
    (root_key,) = {a.name: a for a in registry.list_accounts()}["root"].keys
    admin.apply("account.add", Args({"account": "keyless", "role": "admin"}), ROOT)  # an admin no key can act as
    height = store.size(ADMIN_LEDGER)
    for command, args in (
        ("account.disable", {"account": "root"}),
        ("account.remove", {"account": "root"}),
        ("key.revoke", {"key": root_key}),
    ):
        with pytest.raises(LastAdminError):
            admin.apply(command, Args(args), ROOT)
    assert store.size(ADMIN_LEDGER) == height  # refused before anything is recorded
    root = {a.name: a for a in registry.list_accounts()}["root"]
    assert root.enabled and root.keys == (root_key,)
    # With another admin able to act, the caller may step down.
    admin.apply("key.add", Args({"account": "keyless", "key": new_keypair().public}), ROOT)
    admin.apply("account.disable", Args({"account": "root"}), ROOT)
    assert {a.name: a for a in registry.list_accounts()}["root"].enabled is False


def test_a_host_enrollment_is_recorded_only_for_an_enabled_admin_with_a_factor(
    redis_client: Any, tmp_path: Path
) -> None:
    """``{totp}:unrecorded`` is Redis's: whoever writes it could have the home write admin
    records in any account's name. The home records only the enabled admins holding a factor."""
    registry = AccountRegistry(redis_client)
    registry.bootstrap_admin("root", new_keypair().public)
    store = ChainStore(tmp_path / "ingest-1", origin="ingest-1", domain=RulesEngine())
    cache = AccountCache(registry, "ingest-1", admin=StoreAdminSource(store)).start()
    factors = SecondFactors(SecondFactorStore(redis_client), bytes(64), production=False, issuer="vledger test")
    admin = RegistryAdmin(registry, cache, ["ingest-1"], 2000, AdminLedger(store, registry), factors)
    try:
        admin.apply("account.add", Args({"account": "clerk", "role": "writer"}), ROOT)
        factors.store.enroll("root", b"sealed", (), REPLACE)  # what a host's bootstrap --totp does
        redis_client.sadd("vledger:{totp}:unrecorded", "clerk", "mallory")  # written by hand
        admin.apply("account.add", Args({"account": "auditor", "role": "observer"}), ROOT)
        totp = [
            (r.content.author, r.content.payload["account"])
            for r in store.range(ADMIN_LEDGER)
            if r.content.kind == "totp"
        ]
        assert totp == [("root", "root")]
        assert factors.store.unrecorded() == []
    finally:
        cache.stop()
        store.close()


def test_two_admins_disabling_each_other_at_once_leave_one_able_to_act(
    home: tuple[AccountRegistry, ChainStore, RegistryAdmin], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review r10 #5: admin commands run on 4 executor threads, and each checked the last-admin
    rule on its own snapshot: two admins disabling each other at once both passed, and the
    cluster was left with no admin. The second one's check now sees the first's change."""
    registry, _, admin = home
    admin.apply("account.add", Args({"account": "deputy", "role": "admin"}), ROOT)
    admin.apply("key.add", Args({"account": "deputy", "key": new_keypair().public}), ROOT)
    deputy = Caller("deputy", "admin", new_keypair().public)
    first_changing, second_read = threading.Event(), threading.Event()
    snapshot, disable = registry.snapshot, registry.disable

    def read(*args: Any) -> Any:
        if threading.current_thread().name == "deputy":  # not the node's account cache, which polls
            second_read.set()
        return snapshot(*args)

    def disabled(account: str) -> int:
        if not first_changing.is_set():  # the first: checked and recorded, about to change
            first_changing.set()
            # Long enough for the second to read its snapshot, had nothing kept it from it.
            second_read.wait(2.0)
        return disable(account)

    monkeypatch.setattr(registry, "snapshot", read)
    monkeypatch.setattr(registry, "disable", disabled)
    outcomes: dict[str, object] = {}

    def run(name: str, caller: Caller, target: str) -> None:
        try:
            outcomes[name] = admin.apply("account.disable", Args({"account": target}), caller)
        except LastAdminError as e:
            outcomes[name] = e

    first = threading.Thread(target=run, args=("root", ROOT, "deputy"), name="root")
    first.start()
    assert first_changing.wait(DEADLINE)
    second = threading.Thread(target=run, args=("deputy", deputy, "root"), name="deputy")
    second.start()
    first.join(DEADLINE)
    second.join(DEADLINE)
    assert isinstance(outcomes["root"], dict) and isinstance(outcomes["deputy"], LastAdminError)
    accounts = {a.name: a for a in registry.list_accounts()}
    assert accounts["root"].enabled and not accounts["deputy"].enabled
