"""node/admin_accounts.py: the accounts cache is believed only as far as the admin ledger's
records, verified as a chain under a checkpoint the admin key signed, give it; what no record
ever gave is forged (outsider17 F1), what only the unsigned tail gives is pending, and a
revoke in the tail narrows at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from vledger.config.settings import PROTOCOL_LIMITS
from vledger.node import tree
from vledger.node.admin_accounts import CachedAccount, judge, verify_admin_copy
from vledger.node.note import ALG_ED25519, Checkpoint, Note, SignerKey, sign
from vledger.node.record import Content, Entry
from vledger.node.rules.admin import ADMIN_LEDGER, admin_genesis_rules
from vledger.node.rules.engine import RulesEngine
from vledger.node.store import ChainStore

ADMIN = SignerKey("local/admin", ALG_ED25519, bytes(range(40, 72)))
OTHER = SignerKey("local/admin", ALG_ED25519, bytes(range(80, 112)))
ROOT_KEY, WRITER_KEY, EVIL_KEY, NEW_KEY = (zmq.curve_keypair()[0].decode() for _ in range(4))


def _note(records: list[bytes], signer: SignerKey = ADMIN) -> bytes:
    frontier = tree.Frontier()
    for record in records:
        frontier.append(tree.leaf_hash(record))
    body = Checkpoint(signer.name, len(records), frontier.root()).body()
    return Note(body, (sign(body, signer),)).encode()


class Chain:
    """An admin ledger in a real store, written as the home writes it (ingest/admin_ledger.py)."""

    def __init__(self, directory: Path) -> None:
        self.store = ChainStore(directory, origin="ingest-1", domain=RulesEngine())
        genesis = admin_genesis_rules().genesis_content(ADMIN_LEDGER, "root", "admin-genesis", 1)
        self.store.create_ledger(Entry.prepare(genesis, 0, PROTOCOL_LIMITS))
        self.n = 0

    def add(self, kind: str, payload: dict[str, Any]) -> None:
        self.n += 1
        content = Content(ADMIN_LEDGER, kind, {**payload, "via": ""}, "root", f"r{self.n}", 1 + self.n)
        self.store.append(Entry.prepare(content, 0, PROTOCOL_LIMITS))

    def account(self, name: str, op: str, role: str, enabled: bool, keys: list[str]) -> None:
        self.add("account", {"account": name, "op": op, "role": role, "enabled": enabled, "keys": sorted(keys)})

    def key(self, name: str, op: str, key: str, keys: list[str]) -> None:
        self.add("key", {"account": name, "op": op, "key": key, "keys": sorted(keys)})

    def raw(self) -> list[bytes]:
        return [data for _, data in self.store.range_raw(ADMIN_LEDGER)]


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    made = Chain(tmp_path / "store")
    made.account("root", "import", "admin", True, [ROOT_KEY])
    made.account("alice", "add", "writer", True, [])
    made.key("alice", "add", WRITER_KEY, [WRITER_KEY])
    yield made
    made.store.close()


def _cache(**accounts: CachedAccount) -> dict[str, CachedAccount]:
    return dict(accounts)


def test_a_forged_key_in_the_cache_is_not_enforced_and_is_named(chain: Chain) -> None:
    raw = chain.raw()
    admin = verify_admin_copy(raw, [_note(raw)], ADMIN.verifier())
    assert (admin.signed, admin.problem) == (len(raw), None)
    # F1: a key HSET into the owners' hash under the admin account, which no key record bound.
    cache = _cache(
        root=("admin", True, frozenset({ROOT_KEY, EVIL_KEY})), alice=("writer", True, frozenset({WRITER_KEY}))
    )
    judged = judge(cache, admin)
    assert judged.enforced == {
        "root": ("admin", True, frozenset({ROOT_KEY})),
        "alice": ("writer", True, frozenset({WRITER_KEY})),
    }
    assert judged.forged == (f"account root: key {EVIL_KEY}, which no admin record bound to it",)
    # An account no record made, and a role no record gave: neither enforced, both named.
    cache = _cache(
        root=("admin", True, frozenset({ROOT_KEY})),
        alice=("admin", True, frozenset({WRITER_KEY})),
        mallory=("admin", True, frozenset({EVIL_KEY})),
    )
    judged = judge(cache, admin)
    assert set(judged.enforced) == {"root"}
    assert [line.split(":")[0] for line in judged.forged] == ["account alice", "account mallory"]
    # The cache as the records give it: all enforced, nothing forged.
    honest = _cache(root=("admin", True, frozenset({ROOT_KEY})), alice=("writer", True, frozenset({WRITER_KEY})))
    assert judge(honest, admin).enforced == honest and judge(honest, admin).forged == ()


def test_the_unsigned_tail_narrows_at_once_and_widens_only_once_signed(chain: Chain) -> None:
    signed = chain.raw()
    chain.key("alice", "revoke", WRITER_KEY, [])
    chain.account("bob", "add", "writer", True, [])
    chain.key("bob", "add", NEW_KEY, [NEW_KEY])
    raw = chain.raw()
    cache = _cache(
        root=("admin", True, frozenset({ROOT_KEY})),
        alice=("writer", True, frozenset({WRITER_KEY})),  # the revoke not yet in Redis
        bob=("writer", True, frozenset({NEW_KEY})),
    )
    admin = verify_admin_copy(raw, [_note(signed)], ADMIN.verifier())
    assert admin.signed == len(signed) and len(admin.records) == len(raw)
    judged = judge(cache, admin)
    assert judged.enforced == {"root": ("admin", True, frozenset({ROOT_KEY})), "alice": ("writer", True, frozenset())}
    assert judged.forged == () and judged.pending == 1  # bob waits for a checkpoint; nothing forged
    judged = judge(cache, verify_admin_copy(raw, [_note(raw)], ADMIN.verifier()))
    assert judged.enforced["bob"] == ("writer", True, frozenset({NEW_KEY})) and judged.pending == 0
    assert judged.enforced["alice"] == ("writer", True, frozenset())


def test_a_note_of_another_key_another_tree_or_a_broken_copy_signs_nothing(chain: Chain) -> None:
    raw = chain.raw()
    cache = _cache(root=("admin", True, frozenset({ROOT_KEY})), alice=("writer", True, frozenset({WRITER_KEY})))
    for note, problem in (
        (_note(raw, OTHER), "unverified_note"),
        (_note([*raw[:-1], raw[0]]), "bad_proof"),  # signed over other records
        (None, "no checkpoint"),
    ):
        admin = verify_admin_copy(raw, [note], ADMIN.verifier())
        assert admin.signed == 0 and problem in (admin.problem or "")
        # Without a checkpoint that verifies, the verified chain alone: still not the forged key.
        forged = {**cache, "root": ("admin", True, frozenset({ROOT_KEY, EVIL_KEY}))}
        assert judge(forged, admin).enforced == cache and len(judge(forged, admin).forged) == 1
    assert verify_admin_copy(raw, [_note(raw)], None).signed == 0
    # A record changed in the copy: the chain stops before it, and a note over the honest copy
    # then covers more than the copy verifies.
    bad = [*raw[:2], raw[2][:-1] + bytes([raw[2][-1] ^ 1]), *raw[3:]]
    admin = verify_admin_copy(bad, [_note(raw)], ADMIN.verifier())
    assert len(admin.records) == 2 and admin.signed == 0 and "height 2" in (admin.problem or "")
    # A newer note in Redis before the records it covers: the last note taken still counts.
    older = raw[:-1]
    admin = verify_admin_copy(older, [_note(raw), _note(older[:2])], ADMIN.verifier())
    assert admin.signed == 2 and len(admin.records) == len(older)


def test_before_the_admin_ledger_exists_the_cache_is_all_there_is() -> None:
    cache = _cache(root=("admin", True, frozenset({ROOT_KEY})))
    judged = judge(cache, verify_admin_copy([], [None], ADMIN.verifier()))
    assert judged.enforced == cache and judged.forged == ()


def test_a_note_over_the_genesis_alone_still_gives_the_accounts_it_imported(chain: Chain) -> None:
    """The home appends a new admin ledger's genesis and its import records one by one, and its
    outbox may sign after the genesis: the imported admin (enforced before the ledger existed)
    stays enforced under that note, while an account the ledger added still waits for one."""
    raw = chain.raw()
    cache = _cache(root=("admin", True, frozenset({ROOT_KEY})), alice=("writer", True, frozenset({WRITER_KEY})))
    judged = judge(cache, verify_admin_copy(raw, [_note(raw[:1])], ADMIN.verifier()))
    assert judged.enforced == {"root": ("admin", True, frozenset({ROOT_KEY}))}
    assert judged.forged == () and judged.pending == 1  # alice, added after the imports
    # Only the run right after the genesis: a later record of op import is no carried-over account.
    chain.account("late", "import", "admin", True, [EVIL_KEY])
    raw = chain.raw()
    late = {**cache, "late": ("admin", True, frozenset({EVIL_KEY}))}
    judged = judge(late, verify_admin_copy(raw, [_note(raw[:1])], ADMIN.verifier()))
    assert "late" not in judged.enforced and judged.pending == 2
