"""Redis keys of the admin cache made unusable by hand: a records list of another type, an
accounts version that is no count (outsider o9 K1, K1b). The home repairs them with an alert,
an admin command whose record is written answers so, and the other nodes reload."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from vledger.broker.accounts import NO_VERSION, AccountCache, AccountRegistry, snapshot_from_reply
from vledger.broker.admin_copy import SignedAdminSource
from vledger.broker.keys import new_keypair
from vledger.ingest.admin_ledger import ADMIN_CACHE_CONFLICT
from vledger.node.errors import AdminLedgerExistsError
from vledger.node.rules.admin import ADMIN_LEDGER
from vledger.tests.integration.cluster import wait_until

from .test_admin_insider import DEADLINE, Home
from .test_admin_ledger import ADMIN_KEY

VERSION = "vledger:{accounts}:version"


@pytest.fixture
def home(redis_client: Any, tmp_path: Path) -> Iterator[Home]:
    made = Home(redis_client, tmp_path, ["ingest-1"])
    yield made
    made.close()


def _store_records(home: Home) -> list[bytes]:
    return [data for _, data in home.store.range_raw(ADMIN_LEDGER, 0)]


def test_a_revoke_while_the_records_list_is_a_string_is_answered_applied_and_the_list_rewritten(
    home: Home, redis_client: Any
) -> None:
    """K1b: the revoke was written but answered "internal error", the key stayed a string (every
    node "WRONGTYPE ... retrying"), the revoked key kept working and a retry said no_such_key."""
    key = new_keypair().public
    home.apply("account.add", account="erin", role="writer")
    home.apply("key.add", account="erin", key=key)
    redis_client.set(home.registry.admin_records_key, "notalist")
    result = home.apply("key.revoke", key=key)
    assert result["height"] == home.store.size(ADMIN_LEDGER) - 1  # answered with its record
    assert home.registry.admin_records() == _store_records(home)
    assert home.registry.lookup(key) is None
    assert [a.what for a in home.alerts] == [ADMIN_CACHE_CONFLICT]
    assert "no list" in home.alerts[0].detail


@pytest.mark.parametrize("command", ["key.revoke", "account.disable"])
@pytest.mark.parametrize("failing", ["the-copy-s-push", "the-account-change"])
def test_a_command_whose_record_is_written_answers_so_when_redis_times_out(
    home: Home, monkeypatch: pytest.MonkeyPatch, command: str, failing: str
) -> None:
    """Review r15 F-D: k28 answered with the record only for a ResponseError. A timeout (Redis
    busy, failing over) or a dropped connection of the copy's push or of the account change, after
    the record is durable, failed the command ("network:TimeoutError"), though every node enforces
    the record; a retry of the revoke was then refused (no_such_key)."""
    erin = new_keypair().public
    home.apply("account.add", account="erin", role="writer")
    home.apply("key.add", account="erin", key=erin)
    before = home.store.size(ADMIN_LEDGER)
    names = {"the-copy-s-push": "push_admin_records", "key.revoke": "revoke_key", "account.disable": "disable"}
    name = names[failing if failing == "the-copy-s-push" else command]
    real = getattr(home.registry, name)
    calls = [0]

    def flaky(*args: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            raise (redis.exceptions.TimeoutError if command == "key.revoke" else redis.exceptions.ConnectionError)("x")
        return real(*args)

    monkeypatch.setattr(home.registry, name, flaky)
    result = home.apply(command, **({"key": erin} if command == "key.revoke" else {"account": "erin"}))
    assert calls[0] >= 1
    assert home.store.size(ADMIN_LEDGER) == before + 1 and result["height"] == before  # answered with its record
    home.cache.refresh()
    owner = home.cache.lookup(erin)
    assert owner is None or not owner.enabled  # the record is enforced


def test_the_running_home_rewrites_a_records_key_of_another_type_at_its_next_poll(
    home: Home, redis_client: Any
) -> None:
    home.apply("account.add", account="erin", role="writer")
    redis_client.delete(home.registry.admin_records_key)
    redis_client.hset(home.registry.admin_records_key, "a", "b")
    home.ledger.refill()
    assert home.registry.admin_records() == _store_records(home)
    assert [a.what for a in home.alerts] == [ADMIN_CACHE_CONFLICT]


@pytest.mark.parametrize("garbage", ["notanumber", "-3", "007", "1" * 40, "hash"])
def test_an_admin_command_resets_a_version_that_is_no_count(home: Home, redis_client: Any, garbage: str) -> None:
    """K1: every admin command failed "internal error" and nothing was written, never repaired."""
    home.apply("account.add", account="carol", role="writer")
    applied = home.registry.version()
    if garbage == "hash":
        redis_client.delete(VERSION)
        redis_client.hset(VERSION, "x", "y")
    else:
        redis_client.set(VERSION, garbage)
    result = home.apply("account.disable", account="carol")
    assert result["height"] == home.store.size(ADMIN_LEDGER) - 1
    version = home.registry.version()
    assert version > applied and version >= int(time.time() * 1000) - 60_000  # above every count
    assert result["version"] == version
    assert not {a.name: a for a in home.registry.list_accounts()}["carol"].enabled
    assert [a.what for a in home.alerts] == [ADMIN_CACHE_CONFLICT]


def test_the_running_home_resets_a_garbage_version_at_its_next_poll(home: Home, redis_client: Any) -> None:
    home.apply("account.add", account="carol", role="writer")
    redis_client.set(VERSION, "notanumber")
    home.ledger.refill()
    assert home.registry.version() > 1_000_000_000_000
    assert [a.what for a in home.alerts] == [ADMIN_CACHE_CONFLICT]
    home.ledger.refill()
    assert len(home.alerts) == 1  # repaired once


def test_another_node_reloads_on_a_garbage_version_and_again_once_the_home_reset_it(
    home: Home, redis_client: Any
) -> None:
    """A node other than the home read the version with int(): its load failed at every poll."""
    from .test_admin_ledger import publish_admin_checkpoint

    home.apply("account.add", account="carol", role="writer")
    publish_admin_checkpoint(redis_client, home.store)
    other = AccountCache(
        home.registry, "ingest-2", poll_interval=0.05, admin=SignedAdminSource(redis_client, ADMIN_KEY)
    ).start()
    try:
        wait_until(lambda: "carol" in other.snapshot.accounts, DEADLINE, "ingest-2 to load carol")
        redis_client.set(VERSION, "notanumber")
        other.refresh()  # raised ValueError
        assert other.version == -1  # NO_VERSION: never a node's
        home.ledger.refill()
        reset = home.registry.version()
        wait_until(lambda: other.version == reset, DEADLINE, "ingest-2 to reload at the reset version")
    finally:
        other.stop()


def test_an_account_without_a_role_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """o9 (low): logged at every load, 18 times a minute per node."""
    reply = [b"1", [[b"yy-once", None, None]], []]
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert "yy-once" not in snapshot_from_reply(reply).accounts
    assert sum("'yy-once' has no role" in r.getMessage() for r in caplog.records) == 1


ACCOUNTS = "vledger:{accounts}:"
# Each key of Redis's accounts set to another type by hand (k29): the snapshot script failed on
# every node ("WRONGTYPE ... retrying"), the home's own poll and commands too, and nothing repaired it.
WRONG_TYPES = {"names": "notaset", "keys": "notahash", "account:carol": "notahash", "account:root": "x"}


def _spoil(redis_client: Any, key: str, value: str) -> None:
    redis_client.delete(ACCOUNTS + key)
    redis_client.set(ACCOUNTS + key, value)


@pytest.mark.parametrize("key", sorted(WRONG_TYPES))
def test_the_running_home_rebuilds_an_accounts_key_of_another_type_at_its_next_poll(
    home: Home, redis_client: Any, key: str
) -> None:
    carol = new_keypair().public
    home.apply("account.add", account="carol", role="writer")
    home.apply("key.add", account="carol", key=carol)
    before = {a.name: a for a in home.registry.list_accounts()}
    _spoil(redis_client, key, WRONG_TYPES[key])
    home.ledger.refill()
    assert {a.name: a for a in home.registry.list_accounts()} == before
    assert [a.what for a in home.alerts] == [ADMIN_CACHE_CONFLICT]
    assert ACCOUNTS + key in home.alerts[0].detail
    home.ledger.refill()
    assert len(home.alerts) == 1  # repaired once


def test_a_revoke_while_the_names_key_is_a_string_is_answered_and_applied(home: Home, redis_client: Any) -> None:
    carol = new_keypair().public
    home.apply("account.add", account="carol", role="writer")
    home.apply("key.add", account="carol", key=carol)
    _spoil(redis_client, "names", "notaset")
    result = home.apply("key.revoke", key=carol)
    assert result["height"] == home.store.size(ADMIN_LEDGER) - 1
    assert home.registry.lookup(carol) is None
    assert "carol" in {a.name for a in home.registry.list_accounts()}
    assert [a.what for a in home.alerts] == [ADMIN_CACHE_CONFLICT]


def test_another_node_keeps_its_proven_accounts_and_follows_records_while_a_key_is_of_another_type(
    home: Home, redis_client: Any
) -> None:
    """Its load raised WRONGTYPE at every poll: a revoke made meanwhile was never enforced there."""
    from .test_admin_ledger import publish_admin_checkpoint

    carol = new_keypair().public
    home.apply("account.add", account="carol", role="writer")
    home.apply("key.add", account="carol", key=carol)
    publish_admin_checkpoint(redis_client, home.store)
    other = AccountCache(
        home.registry, "ingest-2", poll_interval=0.05, admin=SignedAdminSource(redis_client, ADMIN_KEY)
    ).start()
    try:
        wait_until(lambda: other.lookup(carol) is not None, DEADLINE, "ingest-2 to let carol in")
        _spoil(redis_client, "keys", "notahash")
        other.refresh()  # raised WRONGTYPE
        assert other.lookup(carol) is not None and other.version == NO_VERSION
        home.ledger.append("key", {"account": "carol", "op": "revoke", "key": carol, "keys": [], "via": ""}, "root")
        publish_admin_checkpoint(redis_client, home.store)
        _spoil(redis_client, "keys", "notahash")  # again, after the home's repair
        wait_until(lambda: other.lookup(carol) is None, DEADLINE, "ingest-2 to enforce the revoke")
    finally:
        other.stop()


def test_a_version_set_high_by_hand_does_not_end_the_wait_for_a_node_that_did_not_apply_the_record(
    redis_client: Any, tmp_path: Path
) -> None:
    """k29: a node that loaded while the insider's version stood high (a count, or garbage the
    home then reset to its clock, below it) reported that version; the next command's wait for
    its own, lower, version took that report for the change applied: ``pending`` was empty while
    the node still let the revoked key in. A report now counts only with the admin records it
    enforces, which no hand in Redis can make."""
    from .test_admin_ledger import publish_admin_checkpoint

    home = Home(redis_client, tmp_path, ["ingest-1", "ingest-2"])
    try:
        carol = new_keypair().public
        home.apply("account.add", account="carol", role="writer")
        home.apply("key.add", account="carol", key=carol)
        publish_admin_checkpoint(redis_client, home.store)
        # ingest-2, live but not following now (a loaded host's thread between two polls)
        other = AccountCache(home.registry, "ingest-2", admin=SignedAdminSource(redis_client, ADMIN_KEY))
        redis_client.set(VERSION, "999999999999999")
        other.refresh()
        redis_client.set(VERSION, "notanumber")  # the home resets it to its clock, far below
        result = home.apply("key.revoke", key=carol)
        assert other.lookup(carol) is not None  # ingest-2 still lets carol in: it must be named
        assert result["pending"] == ["ingest-2"]
    finally:
        home.close()


def test_the_start_s_lookup_and_bootstrap_take_a_key_owners_hash_of_another_type_as_empty(
    home: Home, redis_client: Any
) -> None:
    """k29: `vledger supervise start` looks the admin key up and bootstraps it before any node
    starts: WRONGTYPE there stopped the cluster's start, so the home never repaired the key."""
    key = new_keypair().public
    home.apply("account.add", account="carol", role="writer")
    _spoil(redis_client, "keys", "notahash")
    assert home.registry.lookup(key) is None
    with pytest.raises(AdminLedgerExistsError):
        home.registry.bootstrap_admin("root", key)
    redis_client.hset(ACCOUNTS + "account:root", "role", "wizard")  # a role written by hand: nobody's
    redis_client.delete(ACCOUNTS + "keys")
    redis_client.hset(ACCOUNTS + "keys", key, "root")
    assert home.registry.lookup(key) is None


def test_a_node_that_takes_redis_s_accounts_as_they_are_keeps_its_last_while_a_key_is_of_another_type(
    redis_client: Any,
) -> None:
    """Before any admin ledger (the bootstrap) Redis's accounts are all there is: read as empty,
    a names key set to a string would refuse everyone, and its load raised WRONGTYPE before."""
    registry = AccountRegistry(redis_client)
    carol = new_keypair().public
    registry.add_account("carol", "writer")
    registry.add_key("carol", carol)
    cache = AccountCache(registry, "ingest-2")
    cache.refresh()
    loaded = cache.version
    _spoil(redis_client, "names", "notaset")
    cache.refresh()
    assert cache.lookup(carol) is not None and cache.version == loaded  # the last ones stand
    assert registry.applied(["ingest-2"]) == {"ingest-2": loaded}  # nothing newer said applied
    redis_client.delete(ACCOUNTS + "names")
    redis_client.sadd(ACCOUNTS + "names", "carol")
    registry.revoke_key(carol)
    cache.refresh()
    assert cache.lookup(carol) is None


# A node's applied key SET to a string by the admin's user (outsider o10 L1, addendum): the running
# node logged "following accounts failed (WRONGTYPE ...)" every second, an admin command answered
# ``pending: []`` though it never reported, and its restart crash-looped until someone DEL'd the key.
APPLIED_2 = ACCOUNTS + "applied:ingest-2"


def test_a_node_starts_and_reports_though_its_applied_key_is_of_another_type(home: Home, redis_client: Any) -> None:
    from .test_admin_ledger import publish_admin_checkpoint

    home.apply("account.add", account="carol", role="writer")
    publish_admin_checkpoint(redis_client, home.store)
    redis_client.set(APPLIED_2, "x")
    replaced: list[str] = []
    other = AccountCache(
        home.registry, "ingest-2", poll_interval=0.05, admin=SignedAdminSource(redis_client, ADMIN_KEY)
    )
    other.on_replaced = replaced.append
    other.start()  # raised WRONGTYPE ... @user_script
    try:
        assert home.registry.applied(["ingest-2"]) == {"ingest-2": other.version}
        assert replaced == [f"{APPLIED_2} was of another type: replaced by node ingest-2's hash"]
        redis_client.delete(APPLIED_2)
        redis_client.set(APPLIED_2, "x")  # again, while it runs: its next heartbeat replaces it
        wait_until(lambda: len(replaced) == 2, DEADLINE, "ingest-2 to replace its applied key")
        assert other.not_current() is None
        wait_until(
            lambda: home.registry.applied(["ingest-2"]) == {"ingest-2": other.version}, DEADLINE, "ingest-2's report"
        )
    finally:
        other.stop()
    assert redis_client.hget(APPLIED_2, "seen") == b"0"  # its clean stop said


def test_an_admin_command_names_a_node_whose_applied_key_is_of_another_type_in_pending(
    redis_client: Any, tmp_path: Path
) -> None:
    """It was read as a node that never reported, so not live, and left out: ``pending`` was empty."""
    home = Home(redis_client, tmp_path, ["ingest-1", "ingest-2"])
    try:
        home.apply("account.add", account="carol", role="writer")
        redis_client.set(APPLIED_2, "x")
        assert home.apply("account.add", account="dave", role="writer")["pending"] == ["ingest-2"]
    finally:
        home.close()
