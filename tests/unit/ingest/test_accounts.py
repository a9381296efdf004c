"""CachedAccounts: who a key is, as of the account cache's current snapshot; and how long the
admin ledger's home waits for a checkpoint over a record before it changes the accounts."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, cast

from vledger.broker.accounts import Account, AccountCache, AccountRegistry, AccountsSnapshot, Role
from vledger.broker.keys import new_keypair
from vledger.ingest.accounts import CachedAccounts, wait_signed
from vledger.ingest.service import Caller
from vledger.node.note import ALG_ED25519, Checkpoint, Note, SignerKey, sign

ALICE = new_keypair().public
BOB = new_keypair().public
STRANGER = new_keypair().public


def snapshot(version: int, *, alice_enabled: bool = True, bob_key: bool = True) -> AccountsSnapshot:
    accounts = {
        "alice": Account("alice", Role.ADMIN, alice_enabled, (ALICE,)),
        "bob": Account("bob", Role.WRITER, True, (BOB,) if bob_key else ()),
    }
    owners = {ALICE: "alice", **({BOB: "bob"} if bob_key else {})}
    return AccountsSnapshot(version, MappingProxyType(accounts), MappingProxyType(owners))


class FakeCache:
    """The one thing CachedAccounts reads of an AccountCache: its current snapshot."""

    def __init__(self, current: AccountsSnapshot) -> None:
        self.snapshot = current


def accounts_of(cache: FakeCache, **options: Any) -> CachedAccounts:
    return CachedAccounts(cast(AccountCache, cache), **options)


def test_a_key_is_its_accounts_caller_and_an_unknown_key_is_nobody() -> None:
    accounts = accounts_of(FakeCache(snapshot(1)))
    for _ in range(2):  # the second time from what the first one worked out
        assert accounts.lookup(ALICE) == Caller("alice", "admin", ALICE)
        assert accounts.lookup(BOB) == Caller("bob", "writer", BOB)
        assert accounts.lookup(STRANGER) is None


def test_a_new_snapshot_applies_from_the_next_lookup() -> None:
    cache = FakeCache(snapshot(1))
    accounts = accounts_of(cache)
    assert accounts.lookup(ALICE) is not None
    assert accounts.lookup(BOB) is not None
    cache.snapshot = snapshot(2, alice_enabled=False, bob_key=False)  # disabled, and a key revoked
    assert accounts.lookup(ALICE) is None
    assert accounts.lookup(BOB) is None
    cache.snapshot = snapshot(3)
    assert accounts.lookup(ALICE) == Caller("alice", "admin", ALICE)


def test_many_keys_do_not_grow_the_memory_past_its_size() -> None:
    accounts = accounts_of(FakeCache(snapshot(1)), size=3)
    for _ in range(10):
        assert accounts.lookup(new_keypair().public) is None
    assert len(accounts._callers) <= 3
    assert accounts.lookup(BOB) == Caller("bob", "writer", BOB)


def test_a_member_key_that_leaves_the_members_is_refused_at_its_next_lookup_with_no_new_snapshot() -> None:
    # A node's old key leaves the members when its rotation's window ends (PROTOCOL 16.6); the
    # accounts do not change then, yet a connection made before is judged at each message.
    old, new = new_keypair().public, new_keypair().public
    members = {old: Caller("verifier-1", "replica", old), new: Caller("verifier-1", "replica", new)}
    accounts = accounts_of(FakeCache(snapshot(1)), members=members)
    assert accounts.lookup(old) == members[old] and accounts.lookup(new) == members[new]
    del members[old]
    assert accounts.lookup(old) is None
    assert accounts.lookup(new) == Caller("verifier-1", "replica", new)
    assert accounts.lookup(ALICE) == Caller("alice", "admin", ALICE)  # an account's key: as before


class NotesInRedis:
    """The admin checkpoints a home's wait_signed reads, one per look, the last one repeated."""

    def __init__(self, *notes: bytes | None) -> None:
        self.notes = list(notes)
        self.looks = 0

    def admin_checkpoint(self) -> bytes | None:
        self.looks += 1
        return self.notes.pop(0) if len(self.notes) > 1 else self.notes[0]


def _admin_note(size: int) -> bytes:
    signer = SignerKey("local/admin", ALG_ED25519, bytes(range(40, 72)))
    body = Checkpoint(signer.name, size, bytes(32)).body()
    return Note(body, (sign(body, signer),)).encode()


def test_the_home_changes_redis_only_once_a_checkpoint_covers_the_record_even_while_none_is_there() -> None:
    """The admin ledger just made: no checkpoint in Redis, then the outbox's first, signed over a
    pass that had not reached the record (3 records of 4), then one over it. Returning at the
    first look (as 8a55a6a did) let the nodes take the account unsigned, then the first note
    narrow it again after they had said they applied it."""
    notes = NotesInRedis(None, None, _admin_note(3), _admin_note(4))
    wait_signed(cast(AccountRegistry, notes), 3, timeout=60.0)
    assert notes.looks == 4 and notes.notes == [_admin_note(4)]


def test_the_home_waits_no_longer_than_its_deadline() -> None:
    notes = NotesInRedis(None)
    wait_signed(cast(AccountRegistry, notes), 3, timeout=0.05)
    assert notes.looks >= 2
