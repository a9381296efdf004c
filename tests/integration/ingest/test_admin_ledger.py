"""The admin ledger's home and the Redis cache (ingest/admin_ledger.py, docs/PROTOCOL.md 16.4):
every change reaches Redis from the chain, and a flushed Redis is rebuilt from it."""

from __future__ import annotations

import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from vledger.broker import accounts as accounts_module
from vledger.broker.accounts import AccountCache, AccountError, AccountRegistry
from vledger.broker.admin_copy import (
    FIRST_CHECKPOINT_WAIT,
    FIRST_PROOF_WAIT,
    KEPT_ADMIN_COPY,
    UNPROVEN_ADMIN_LEDGER,
    KeptAdminCopy,
    SignedAdminSource,
)
from vledger.broker.curve import AllowList
from vledger.broker.keys import fingerprint, new_keypair
from vledger.broker.redis_keys import ledger_key
from vledger.broker.second_factor import REPLACE, SecondFactorStore
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.ingest.accounts import RegistryAdmin
from vledger.ingest.admin_ledger import AdminLedger, StoreAdminSource
from vledger.ingest.second_factor import SecondFactors
from vledger.ingest.service import Caller
from vledger.node import totp
from vledger.node.errors import AdminLedgerExistsError, BadRequestError, LastAdminError, NotGrantedError
from vledger.node.ledger import LedgerRules
from vledger.node.note import ALG_ED25519, VerifierKey, origin_for, parse_checkpoint, parse_note
from vledger.node.record import Content, Entry, Record
from vledger.node.rules.admin import ADMIN_LEDGER
from vledger.node.rules.engine import RulesEngine
from vledger.node.store import ChainStore
from vledger.node.storefile import DB_NAME
from vledger.node.tree import Frontier, leaf_hash
from vledger.node.wire import Args
from vledger.node.witness import HomeSigner
from vledger.tests.integration.cluster import wait_until


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


def test_a_grant_of_a_kind_the_node_places_for_an_admin_s_command_is_refused(
    home: tuple[AccountRegistry, ChainStore, RegistryAdmin],
) -> None:
    """No grant governs ``epoch`` or ``checkpoint_key`` (16.2): granting one would close nothing,
    so the command says so instead of recording a grant that does not do what it says."""
    _, store, admin = home
    admin.apply("account.add", Args({"account": "treasurer", "role": "writer"}), ROOT)
    size = store.size(ADMIN_LEDGER)
    for kind in ("epoch", "checkpoint_key"):
        with pytest.raises(BadRequestError, match="no grant governs it"):
            admin.apply("grant.add", Args({"ledger": "zakat", "kind": kind, "account": "treasurer"}), ROOT)
    assert store.size(ADMIN_LEDGER) == size


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


def test_the_running_home_refills_what_redis_lost_at_its_next_poll(
    home: tuple[AccountRegistry, ChainStore, RegistryAdmin], redis_client: Any
) -> None:
    """Outsider26 I5: only the home's start-up sync rebuilt Redis's cache and accounts, so a Redis
    that lost its data stayed without them until someone restarted the home."""
    registry, store, admin = home
    admin.apply("account.add", Args({"account": "treasurer", "role": "writer"}), ROOT)
    admin.apply("key.add", Args({"account": "treasurer", "key": new_keypair().public}), ROOT)
    before = registry.list_accounts()
    told: list[str | None] = []
    ledger = AdminLedger(store, registry, on_lost=told.append)
    ledger.refill()
    assert told == []  # nothing lost: nothing done, nothing said
    redis_client.flushall()
    ledger.refill()
    assert registry.list_accounts() == before
    assert registry.admin_records() == [data for _, data in store.range_raw(ADMIN_LEDGER)]
    size = store.size(ADMIN_LEDGER)
    assert len(told) == 1 and f"{size} of the admin ledger's {size} records and the accounts" in told[0]
    ledger.refill()
    assert len(told) == 1  # open while no checkpoint in Redis proves the copy put back
    publish_admin_checkpoint(redis_client, store)  # the home's outbox, at its next heartbeat
    ledger.refill()
    ledger.refill()
    assert told[1:] == [None]  # resolved, once: one loss, one alert (redis28)
    redis_client.delete(registry.admin_records_key)  # the cache alone (accounts kept)
    ledger.refill()
    assert registry.admin_size() == size and len(told) == 3 and "accounts" not in str(told[2])
    ledger.refill()
    assert told[3:] == [None]  # the checkpoint stayed: resolved at the next poll


def test_a_refill_that_fails_leaves_the_accounts_thread_alive(
    home: tuple[AccountRegistry, ChainStore, RegistryAdmin], redis_client: Any, tmp_path: Path
) -> None:
    """Redis28 review: the refill runs on the accounts cache's thread, whose loop survives only
    Redis errors: a store found damaged (or a Redis flushed again mid-way) ended the thread, and
    the home followed no account change nor told the admins it applied one from then on."""
    registry, store, admin = home
    admin.apply("account.add", Args({"account": "treasurer", "role": "writer"}), ROOT)
    with sqlite3.connect(tmp_path / "ingest-1" / DB_NAME) as db:  # a record's bytes tampered into TEXT
        db.execute("UPDATE records SET data = CAST(data AS TEXT) WHERE ledger = ? AND height = 1", (ADMIN_LEDGER,))
    redis_client.flushall()
    ledger = AdminLedger(store, registry)
    polls: list[int] = []
    cache = AccountCache(registry, "ingest-9", poll_interval=0.05)
    cache.upkeep = lambda: (polls.append(1), ledger.refill())[0]
    with cache:
        wait_until(lambda: len(polls) >= 3, DEADLINE, "the accounts cache to poll again after a failed refill")
        assert cache._thread is not None and cache._thread.is_alive()


def test_the_running_home_appends_nothing_to_a_cache_that_is_not_its_store_s(
    home: tuple[AccountRegistry, ChainStore, RegistryAdmin], redis_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis28 review: the refill appended the store's records after whatever Redis's cache held,
    so a cache someone else wrote (or a Redis restored from another cluster) became a copy that
    the home's store does not back, under its name. It is rewritten from the store instead, as
    at a start (small28: it was left as it is until the next admin command)."""
    registry, store, admin = home
    admin.apply("account.add", Args({"account": "treasurer", "role": "writer"}), ROOT)
    told: list[str | None] = []
    ledger = AdminLedger(store, registry, on_lost=told.append)
    redis_client.flushall()
    registry.push_admin_record(0, b"not the home's genesis")
    ledger.refill()
    ledger.refill()
    assert registry.admin_records() == [data for _, data in store.range_raw(ADMIN_LEDGER)]
    assert len(told) == 1 and "the accounts" in str(told[0])  # flushed with it: rebuilt
    rewrites = [r for r in caplog.records if "held what this home's store does not from height 0" in r.getMessage()]
    assert len(rewrites) == 1  # once: the next poll finds the store's copy


def test_a_node_keeps_what_it_proved_and_takes_it_back_at_a_start_while_redis_lost_it(
    home: tuple[AccountRegistry, ChainStore, RegistryAdmin], redis_client: Any, tmp_path: Path
) -> None:
    """Outsider26 I5: a node restarted while Redis was empty enforced no account at all."""
    _, home_store, admin = home
    admin.apply("account.add", Args({"account": "treasurer", "role": "writer"}), ROOT)
    publish_admin_checkpoint(redis_client, home_store)
    kept = KeptAdminCopy(tmp_path / "replica-1" / KEPT_ADMIN_COPY)
    source = SignedAdminSource(redis_client, ADMIN_KEY, kept=kept)
    proven = source.load().records
    assert proven is not None and len(proven) == home_store.size(ADMIN_LEDGER) and not kept.path.exists()
    source.keep()  # once the node enforces them
    assert stat.S_IMODE(kept.path.stat().st_mode) == 0o600
    redis_client.flushall()
    restarted = SignedAdminSource(redis_client, ADMIN_KEY, kept=kept).load()
    assert restarted.records == proven
    # What the file holds is proven again: a record changed there gives nothing (logged): no admin
    # ledger is known then, and Redis's accounts (none here) are all there is.
    records, note = kept.load() or ([], b"")
    records[-1] = records[-1].replace(b"treasurer", b"treasurex")
    kept.save(records, note)
    assert SignedAdminSource(redis_client, ADMIN_KEY, kept=kept).load().records is None


def _kept_with_a_key(
    admin: RegistryAdmin, redis_client: Any, home_store: ChainStore, tmp_path: Path
) -> tuple[str, KeptAdminCopy, tuple[Record, ...]]:
    """A writer given a key (to be stolen), proven and kept by replica-1: the key, the file, its records."""
    stolen = new_keypair().public
    admin.apply("account.add", Args({"account": "treasurer", "role": "writer"}), ROOT)
    admin.apply("key.add", Args({"account": "treasurer", "key": stolen}), ROOT)
    publish_admin_checkpoint(redis_client, home_store)
    kept = KeptAdminCopy(tmp_path / "replica-1" / KEPT_ADMIN_COPY)
    source = SignedAdminSource(redis_client, ADMIN_KEY, kept=kept)
    before = source.load().records
    source.keep()
    assert before is not None and kept.load() is not None
    return stolen, kept, before


def test_a_kept_copy_older_than_redis_s_checkpoint_never_brings_back_a_revoked_key(
    home: tuple[AccountRegistry, ChainStore, RegistryAdmin], redis_client: Any, tmp_path: Path
) -> None:
    """Redis28 review: a node down while its key was revoked kept a file that still lets it in;
    restarted while Redis held the home's newer checkpoint but not the records (lost, not yet put
    back), it enforced that file: the revoked key was let in again."""
    registry, home_store, admin = home
    stolen, kept, before = _kept_with_a_key(admin, redis_client, home_store, tmp_path)
    # The node is down: the key is revoked, and the home's checkpoint proves it.
    admin.apply("key.revoke", Args({"key": stolen}), ROOT)
    publish_admin_checkpoint(redis_client, home_store)
    size = home_store.size(ADMIN_LEDGER)
    redis_client.delete(registry.admin_records_key)  # Redis lost the records; the checkpoint stayed
    restarted = SignedAdminSource(redis_client, ADMIN_KEY, kept=kept)
    assert restarted.load().records == ()  # nothing from the file: as a node without one, none proven yet
    AdminLedger(home_store, registry).refill()  # the home puts the records back
    after = restarted.load().records
    assert after is not None and len(after) == size and after[-1].content.payload["keys"] == []
    restarted.keep()
    # A file newer than Redis's checkpoint (an older one, a Redis put back from a backup) is used.
    publish_admin_checkpoint(redis_client, home_store, len(before))
    redis_client.delete(registry.admin_records_key)
    again = SignedAdminSource(redis_client, ADMIN_KEY, kept=kept).load().records
    assert again is not None and [r.link for r in again] == [r.link for r in after]


def test_a_kept_copy_is_not_used_without_a_checkpoint_while_redis_s_copy_holds_more(
    home: tuple[AccountRegistry, ChainStore, RegistryAdmin], redis_client: Any, tmp_path: Path
) -> None:
    """Review r14 F1: a node down while its key was revoked, restarted while an insider deletes
    Redis's checkpoint of the admin ledger (r13 #1's loop), enforced its older file: the revoked
    key was let in again, though Redis's copy plainly held the revocation."""
    registry, home_store, admin = home
    stolen, kept, before = _kept_with_a_key(admin, redis_client, home_store, tmp_path)
    admin.apply("key.revoke", Args({"key": stolen}), ROOT)  # while the node is down
    note_key = ledger_key("vledger", ADMIN_LEDGER, "checkpoint")
    redis_client.delete(note_key)
    assert SignedAdminSource(redis_client, ADMIN_KEY, kept=kept).load() == UNPROVEN_ADMIN_LEDGER
    # Redis's copy no longer than the file, the file's own first records: the file is used (a
    # Redis cut short, or emptied, is what it is kept for).
    redis_client.ltrim(registry.admin_records_key, 0, len(before) - 2)
    again = SignedAdminSource(redis_client, ADMIN_KEY, kept=kept).load().records
    assert again is not None and [r.link for r in again] == [r.link for r in before]
    # One that holds another record than the file's at a height: not used.
    redis_client.lset(registry.admin_records_key, 1, b"junk")
    assert SignedAdminSource(redis_client, ADMIN_KEY, kept=kept).load() == UNPROVEN_ADMIN_LEDGER


def test_a_kept_copy_judged_while_redis_s_list_is_unreadable_is_judged_again_at_the_next_load(
    home: tuple[AccountRegistry, ChainStore, RegistryAdmin], redis_client: Any, tmp_path: Path
) -> None:
    """Review r15 F-G: the kept file was marked read before the Redis read that judges it (is
    Redis's list its prefix?). A list of another type (vledger-admin may SET it) raised WRONGTYPE
    out of the node's first load (its start failed: a crash loop until the home repaired the list),
    and a load retried found the file consumed: the copy that defends against a deleted
    checkpoint was never read. Now the file is not used while the list is unreadable, and judged
    again once it is readable."""
    registry, _, admin = home
    _, kept, before = _kept_with_a_key(admin, redis_client, home[1], tmp_path)
    redis_client.delete(ledger_key("vledger", ADMIN_LEDGER, "checkpoint"))  # the file is then judged by the list
    records = registry.admin_records()
    redis_client.delete(registry.admin_records_key)
    redis_client.set(registry.admin_records_key, "notalist")
    restarted = SignedAdminSource(redis_client, ADMIN_KEY, kept=kept)
    assert restarted.load() == UNPROVEN_ADMIN_LEDGER  # no crash; the file not used meanwhile
    redis_client.delete(registry.admin_records_key)
    redis_client.rpush(registry.admin_records_key, *records[:2])  # the home's refill, under way
    again = restarted.load().records
    assert again is not None and [r.link for r in again] == [r.link for r in before]


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


class LoadsAtEachCopy(AccountRegistry):
    """The home's registry, with ``node`` loading right after each change of Redis's copy of the
    admin ledger, as that change's announcement makes it: a scripted interleaving."""

    def __init__(self, client: Any, node: AccountCache) -> None:
        super().__init__(client)
        self.node = node
        self.loads = 0

    def push_admin_records(self, height: int, records: Sequence[bytes]) -> int:
        version = super().push_admin_records(height, records)
        self.node.refresh()
        self.loads += 1
        return version


@pytest.mark.parametrize("signed", [1, None], ids=["the genesis signed alone", "all signed before any is copied"])
def test_a_node_on_the_bootstrap_s_accounts_keeps_the_admin_s_key_while_the_ledger_s_creation_comes(
    redis_client: Any, tmp_path: Path, signed: int | None
) -> None:
    """The fresh-clone CIs (fl28a): the first admin command made the ledger, its genesis then one
    import record per account Redis held, each its own commit, and a replica and the verifier
    refused the bootstrap admin's own key and raised ``unbacked_account`` for it. The home's
    outbox had signed the genesis alone; the home then copied the records to Redis one at a
    time, and the replica, loading at the first one's announcement, proved all of a one-record
    copy that states no account. Or the checkpoint came before the home copied any record, and
    the node, whose last load had seen no copy, was not counted as on the bootstrap: it took the
    empty proof. The home now copies a command's records in one step, and a node whose earlier
    load let the bootstrap's accounts in waits for a proof of all it sees, whatever it saw then.
    A key Redis lets in that the proven ledger does not back is still refused, and reported."""
    reported: list[list[str]] = []
    source = SignedAdminSource(redis_client, ADMIN_KEY)
    # Never started: it loads exactly where the script below says.
    replica = AccountCache(
        AccountRegistry(redis_client), "replica-2", poll_interval=3600, admin=source, on_unbacked=reported.append
    )
    registry = LoadsAtEachCopy(redis_client, replica)
    root = new_keypair().public
    registry.bootstrap_admin("root", root)
    store = ChainStore(tmp_path / "ingest-1", origin="ingest-1", domain=RulesEngine())
    try:
        replica.refresh()  # the first run: no admin ledger anywhere, Redis's accounts as they are
        home = AdminLedger(store, registry)
        home._create("root")  # the genesis, then root's import record
        publish_admin_checkpoint(redis_client, store, signed)  # the outbox's pass
        replica.refresh()  # a poll: the checkpoint proves nothing of an empty copy
        assert replica.lookup(root) is not None and reported == []
        home._cache()  # the replica loads at each change of the copy
        assert registry.loads >= 1 and replica.lookup(root) is not None and reported in ([], [[]])
        publish_admin_checkpoint(redis_client, store)
        replica.refresh()
        proven = source.load().records
        assert proven is not None and len(proven) == store.size(ADMIN_LEDGER)
        assert replica.lookup(root) is not None and reported == [[]]  # on the ledger's accounts: none unbacked
        forged = new_keypair().public
        registry.add_key("root", forged)  # written into Redis by hand
        replica.refresh()
        assert replica.lookup(forged) is None and reported == [[], [f"root ({fingerprint(forged)}): refused"]]
    finally:
        store.close()


def test_the_admin_ledger_s_records_are_copied_to_redis_in_one_step_from_where_the_copy_ends(
    redis_client: Any,
) -> None:
    registry = AccountRegistry(redis_client)
    version = registry.push_admin_records(0, [b"genesis", b"import"])
    assert registry.admin_records() == [b"genesis", b"import"]
    # Records already there change nothing; of a batch, only those past the copy are appended.
    assert registry.push_admin_records(0, [b"genesis"]) == version
    assert registry.push_admin_records(1, [b"import", b"grant"]) == version + 1
    assert registry.admin_records() == [b"genesis", b"import", b"grant"]
    with pytest.raises(AccountError, match="holds 3 records, not 4"):
        registry.push_admin_records(4, [b"past a gap"])
    assert registry.admin_size() == 3


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


def test_a_node_on_the_bootstrap_s_accounts_leaves_them_after_a_while_with_no_checkpoint_at_all(
    home: tuple[AccountRegistry, ChainStore, RegistryAdmin], redis_client: Any
) -> None:
    """Review r14 F5: the wait started at the first checkpoint seen, so one deleted in a loop kept
    a node on Redis's (forgeable) accounts for good; it starts when the list first holds records."""
    registry, _, admin = home
    clock = [100.0]
    source = SignedAdminSource(redis_client, ADMIN_KEY, clock=lambda: clock[0])
    assert source.load().records is None  # the bootstrap's accounts, the list empty
    admin.apply("account.add", Args({"account": "writer", "role": "writer"}), ROOT)
    assert registry.admin_size() > 0 and redis_client.get(ledger_key("vledger", ADMIN_LEDGER, "checkpoint")) is None
    assert source.load().records is None
    clock[0] += FIRST_CHECKPOINT_WAIT - 1
    assert source.load().records is None
    clock[0] += 1
    assert source.load() == UNPROVEN_ADMIN_LEDGER
    clock[0] += FIRST_CHECKPOINT_WAIT
    assert source.load() == UNPROVEN_ADMIN_LEDGER


def test_an_honest_first_checkpoint_late_by_more_than_the_proof_wait_leaves_the_accounts_enforced(
    home: tuple[AccountRegistry, ChainStore, RegistryAdmin], redis_client: Any
) -> None:
    """Review r15 F-F: the wait from the first records was FIRST_PROOF_WAIT (10 s) with no
    checkpoint at all too, so a new cluster whose home's outbox process was slow to start (1 to
    5 s, more on a loaded host) left every other node with no account: the admin's own key and
    every writer refused there until the first checkpoint came. With none at all the wait is
    FIRST_CHECKPOINT_WAIT, and from the first checkpoint FIRST_PROOF_WAIT as before (one that
    proves a prefix, the rest signed at the outbox's next pass)."""
    registry, home_store, admin = home
    clock = [100.0]
    source = SignedAdminSource(redis_client, ADMIN_KEY, clock=lambda: clock[0])
    root_key = registry.list_accounts()[0].keys[0]
    other = AccountCache(registry, "ingest-2", poll_interval=60, admin=source).start()
    try:
        assert other.lookup(root_key) is not None  # the bootstrap's admin, before any admin command
        admin.apply("account.add", Args({"account": "writer", "role": "writer"}), ROOT)  # no checkpoint yet
        other.refresh()
        clock[0] += FIRST_PROOF_WAIT + 1  # the home's outbox process still starting
        other.refresh()
        assert other.lookup(root_key) is not None, "the admin's own key refused on an honest cluster"
        # Its first checkpoint, of a prefix (the outbox signs per pass): FIRST_PROOF_WAIT from it.
        publish_admin_checkpoint(redis_client, home_store, home_store.size(ADMIN_LEDGER) - 1)
        other.refresh()
        assert source.load().records is None
        clock[0] += 1
        publish_admin_checkpoint(redis_client, home_store)
        other.refresh()
        proven = source.load().records
        assert proven is not None and len(proven) == home_store.size(ADMIN_LEDGER)
        assert other.lookup(root_key) is not None
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


def _host_mark(account: str, sealed: bytes) -> str:
    """The mark a host's bootstrap --totp leaves beside its enrollment, under the test key bytes(64)."""
    return totp.host_mark(totp.mac_key(bytes(64)), account, sealed, int(time.time() * 1000))


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
        factors.store.enroll("root", b"sealed", (), REPLACE, _host_mark("root", b"sealed"))  # a host's bootstrap --totp
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


def test_a_host_enrollment_is_recorded_at_the_home_s_poll_naming_its_sealed_secret_once(
    redis_client: Any, tmp_path: Path
) -> None:
    """r24 F7: recorded between commands (the accounts cache's poll calls record_host_enrollments),
    each naming its sealed secret; F3: one whose sealed secret a record named before (an old
    factor written back and marked as a host's) is not recorded, and Redis's mark is cleared."""
    registry = AccountRegistry(redis_client)
    registry.bootstrap_admin("root", new_keypair().public)
    store = ChainStore(tmp_path / "ingest-1", origin="ingest-1", domain=RulesEngine())
    cache = AccountCache(registry, "ingest-1", admin=StoreAdminSource(store)).start()
    factors = SecondFactors(SecondFactorStore(redis_client), bytes(64), production=False, issuer="vledger test")
    admin = RegistryAdmin(registry, cache, ["ingest-1"], 2000, AdminLedger(store, registry), factors)

    def recorded() -> list[str]:
        return [r.content.payload["sealed_sha256"] for r in store.range(ADMIN_LEDGER) if r.content.kind == "totp"]

    try:
        admin.apply("account.add", Args({"account": "clerk", "role": "writer"}), ROOT)
        for sealed in (b"sealed-1", b"sealed-2"):  # a host's bootstrap --totp, twice (the way back in)
            factors.store.enroll("root", sealed, (), REPLACE, _host_mark("root", sealed))
            admin.record_host_enrollments()
            cache.refresh()
        assert recorded() == [totp.sealed_sha256(b"sealed-1"), totp.sealed_sha256(b"sealed-2")]
        # The old one put back, marked as a host's (even with a mark a host made: r25 F1 refuses one without).
        factors.store.enroll("root", b"sealed-1", (), REPLACE, _host_mark("root", b"sealed-1"))
        admin.record_host_enrollments()
        assert len(recorded()) == 2 and factors.store.unrecorded() == []
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
