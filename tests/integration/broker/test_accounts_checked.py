"""A node's accounts cache checked against the admin ledger, in a real Redis: the order in which
the home's record, its checkpoint and the account change reach Redis, and what a node says it
applied meanwhile (PROTOCOL 16.4).

The home is played by hand, in its order: the record into ``admin:records``, the checkpoint
note over it, then the accounts. A node must not report a version applied (which ends an admin
command's wait, ingest/accounts.py) while its checked view still leaves out what that version
added: the revert of 5b1ed0d came from exactly that (a client got ``no_such_account`` for an
account an admin had just been told was applied everywhere). Every wait is on a condition
with a deadline.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.accounts import AccountCache, AccountRegistry, AdminCheck
from vledger.broker.redis_server import RedisServer, connect
from vledger.node.errors import AccountError, ApplyTimeoutError
from vledger.tests.integration.cluster import wait_pending, wait_until
from vledger.tests.unit.node.test_admin_accounts import ADMIN, EVIL_KEY, NEW_KEY, ROOT_KEY, WRITER_KEY, Chain, _note

DEADLINE = 5.0
NOT_APPLIED_S = 0.3  # how long a node is watched not reporting a version it does not enforce whole


class Home:
    """The admin ledger's home as far as Redis sees it: its records, its checkpoint, the accounts."""

    def __init__(self, directory: Path, registry: AccountRegistry, client: Any) -> None:
        self.chain = Chain(directory)
        self.registry = registry
        self.client = client

    def push(self) -> int:
        """Cache what of the chain Redis lacks (each push is announced as a version)."""
        version = self.registry.version()
        raw = self.chain.raw()
        for height in range(self.registry.admin_size(), len(raw)):
            version = self.registry.push_admin_record(height, raw[height])
        return version

    def sign(self) -> None:
        """The outbox's checkpoint over every record the chain holds now."""
        self.client.set(self.registry.admin_checkpoint_key, _note(self.chain.raw()))


@pytest.fixture
def home(tmp_path: Path, redis_client: Any, redis_server: RedisServer) -> Iterator[Home]:
    client = connect(redis_server.url)
    made = Home(tmp_path / "store", AccountRegistry(client), client)
    made.chain.account("root", "import", "admin", True, [ROOT_KEY])
    made.chain.account("alice", "add", "writer", True, [])
    made.chain.key("alice", "add", WRITER_KEY, [WRITER_KEY])
    made.push()
    made.sign()
    made.registry.add_account("root", "admin")
    made.registry.add_key("root", ROOT_KEY)
    made.registry.add_account("alice", "writer")
    made.registry.add_key("alice", WRITER_KEY)
    yield made
    made.chain.store.close()
    client.close()


@pytest.fixture
def forged() -> list[tuple[str, ...]]:
    return []


@pytest.fixture
def node(home: Home, redis_server: RedisServer, forged: list[tuple[str, ...]]) -> Iterator[AccountCache]:
    """A node's cache on a connection of its own, following in the background; its loads wait
    for a checkpoint up to twice the test's deadline, so a test sees it waiting."""
    client = connect(redis_server.url)
    check = AdminCheck(ADMIN.verifier(), forged.append, wait_seconds=2 * DEADLINE)
    cache = AccountCache(AccountRegistry(client), "node-1", poll_interval=60, check=check).start()
    yield cache
    cache.stop()
    client.close()


def _applied(registry: AccountRegistry) -> int:
    return registry.applied(["node-1"]).get("node-1", 0)


def test_an_account_whose_record_no_checkpoint_covers_is_not_reported_applied_until_one_does(
    home: Home, node: AccountCache
) -> None:
    assert node.snapshot.accounts["alice"].keys == (WRITER_KEY,)
    home.chain.account("bob", "add", "writer", True, [])
    home.push()  # the record, but no checkpoint over it yet (the home's wait ran out; the outbox is slow)
    version = home.registry.add_account("bob", "writer")
    with pytest.raises(ApplyTimeoutError):
        home.registry.wait_applied(version, ["node-1"], NOT_APPLIED_S)
    # Below the version, at most its record's push (version - 1): a loaded node may have read
    # both announcements at once and loaded the accounts once, reporting neither.
    assert "bob" not in node.snapshot.accounts and _applied(home.registry) < version
    home.sign()  # the outbox's next pass: the node, waiting for it, takes bob and says so
    assert home.registry.wait_applied(version, ["node-1"], DEADLINE) == {"node-1": version}
    assert node.snapshot.accounts["bob"].enabled


def test_a_key_waits_for_its_checkpoint_and_a_revoke_meanwhile_counts_at_once(home: Home, node: AccountCache) -> None:
    home.chain.key("alice", "add", NEW_KEY, [WRITER_KEY, NEW_KEY])
    home.push()
    added = home.registry.add_key("alice", NEW_KEY)
    home.chain.key("alice", "revoke", WRITER_KEY, [NEW_KEY])
    home.push()
    home.registry.revoke_key(WRITER_KEY)  # unsigned too, but it only narrows
    wait_until(lambda: node.lookup(WRITER_KEY) is None, DEADLINE, "the revoke enforced before any checkpoint")
    assert node.lookup(NEW_KEY) is None  # the new key is not, and the version is not reported
    with pytest.raises(ApplyTimeoutError):
        home.registry.wait_applied(added, ["node-1"], NOT_APPLIED_S)
    home.sign()
    home.registry.wait_applied(home.registry.version(), ["node-1"], DEADLINE)
    owner = node.lookup(NEW_KEY)
    assert owner is not None and owner.account == "alice"


def test_a_checkpoint_in_redis_before_the_records_it_covers_is_waited_out(home: Home, node: AccountCache) -> None:
    """The outbox signs what the store holds, which may be ahead of ``admin:records`` (another
    command's record, stored, not yet cached): a note over more records than the node's copy
    is not taken, and the node reads the records again until it can take it."""
    home.chain.account("bob", "add", "writer", True, [])
    home.push()
    version = home.registry.add_account("bob", "writer")
    home.chain.account("carol", "add", "writer", True, [])
    home.sign()  # over bob's record and carol's, which Redis does not hold yet
    with pytest.raises(ApplyTimeoutError):
        home.registry.wait_applied(version, ["node-1"], NOT_APPLIED_S)
    assert "bob" not in node.snapshot.accounts
    home.push()
    home.registry.wait_applied(home.registry.version(), ["node-1"], DEADLINE)
    assert "bob" in node.snapshot.accounts


def test_a_key_forged_into_redis_is_not_enforced_and_named(
    home: Home, node: AccountCache, forged: list[tuple[str, ...]]
) -> None:
    """outsider17 F1: a key HSET into the key owners under the admin account, the version bumped
    and announced. It is refused, named, and (a forgery awaits no checkpoint) the version is
    reported applied: what the node enforces is all that any record gave."""
    home.client.hset("vledger:{accounts}:keys", EVIL_KEY, "root")
    version = int(home.client.incr("vledger:{accounts}:version"))
    home.client.publish("vledger:accounts", version)
    home.registry.wait_applied(version, ["node-1"], DEADLINE)
    assert node.lookup(EVIL_KEY) is None
    owner = node.lookup(ROOT_KEY)
    assert owner is not None and owner.account == "root"
    assert forged and any(EVIL_KEY in line for line in forged[-1])


def test_a_run_of_admin_records_reaches_redis_in_one_step(home: Home, redis_server: RedisServer) -> None:
    """A node reads the list whole or not at all for each push: a new admin ledger's genesis
    is never seen without the import records the home appended with it (PROTOCOL 16.4)."""
    client = connect(redis_server.url)
    try:
        pubsub = client.pubsub()
        pubsub.subscribe(home.registry.channel)
        wait_until(lambda: pubsub.get_message(timeout=0.1) is not None, DEADLINE, "the subscription")
        size = home.registry.admin_size()
        home.chain.account("bob", "add", "writer", True, [])
        home.chain.key("bob", "add", NEW_KEY, [NEW_KEY])
        raw = home.chain.raw()
        version = home.registry.push_admin_records(size - 1, raw[size - 1 :])  # one held already
        assert home.registry.admin_records() == raw and version == home.registry.version()
        announced = [m["data"] for m in iter(lambda: pubsub.get_message(timeout=0.5), None) if m["type"] == "message"]
        assert announced == [str(version).encode()]  # one version for the two records
        assert home.registry.push_admin_records(size, raw[size:]) == version  # held: no change
        with pytest.raises(AccountError):
            home.registry.push_admin_records(len(raw) + 1, [raw[0]])
        pubsub.close()
    finally:
        client.close()


def test_a_test_cluster_waits_on_the_nodes_an_admin_answer_names_pending(redis_client: Any) -> None:
    """LocalCluster and the e2e cluster (tests/e2e/helpers.py add_account, which failed on any
    pending) wait on a pending node's report (wait_pending): it passes once the node reports
    the version, and fails naming the node and its log when it never does."""
    registry = AccountRegistry(redis_client)
    answer = {"pending": ["node-2"], "version": 7}
    registry.record_applied("node-2", 7)
    wait_pending(registry, "key.add", {"account": "a"}, answer, lambda name: "")
    with pytest.raises(AssertionError, match=r"(?s)pending on \['node-3'\].*node-3 at 0.*the end of node-3's log"):
        wait_pending(registry, "key.add", {}, answer | {"pending": ["node-3"]}, lambda n: f"the end of {n}'s log", 0.2)
