"""A copy of the admin ledger counts as far as its signed checkpoint proves it (node/admin_copy.py)."""

from __future__ import annotations

from typing import Any

import pytest

from vledger.config.settings import PROTOCOL_LIMITS
from vledger.node.admin_copy import proven_admin_records
from vledger.node.errors import BadLinkError, HeightGapError, ProofError, UnverifiedNoteError, WrongOriginError
from vledger.node.note import ALG_ED25519, VerifierKey, origin_for
from vledger.node.record import ZERO_LINK, Content, Entry, Record, decode_record
from vledger.node.rules.admin import ADMIN_LEDGER, admin_genesis_rules
from vledger.node.tree import Frontier, leaf_hash
from vledger.node.witness import HomeSigner

CLUSTER = "test"
SEED = bytes(range(32))
SIGNER = HomeSigner(CLUSTER, SEED)
ADMIN_KEY = VerifierKey(origin_for(CLUSTER, ADMIN_LEDGER), ALG_ED25519, SIGNER.key(ADMIN_LEDGER).public_key)


def admin_records(count: int) -> list[bytes]:
    """An admin ledger of a genesis and ``count - 1`` account records, as record bytes."""
    genesis = admin_genesis_rules().genesis_content(ADMIN_LEDGER, "root", "g", 1)
    contents = [genesis] + [
        Content(ADMIN_LEDGER, "account", _account(f"user{i}"), "root", f"r{i}", 1 + i) for i in range(1, count)
    ]
    records: list[Record] = []
    for height, content in enumerate(contents):
        prev = records[-1].link if records else ZERO_LINK
        records.append(Entry.prepare(content, 0, PROTOCOL_LIMITS).place(height, prev, 1 + height, "ingest-1"))
    return [r.encode() for r in records]


def _account(name: str) -> dict[str, Any]:
    return {"account": name, "op": "add", "role": "writer", "enabled": True, "keys": [], "via": ""}


def note_of(records: list[bytes], size: int, signer: HomeSigner = SIGNER) -> bytes:
    tree = Frontier()
    for data in records[:size]:
        tree.append(leaf_hash(data))
    return signer.sign(ADMIN_LEDGER, size, tree.root()).note


def test_the_records_the_checkpoint_covers_are_proven_and_those_past_it_wait() -> None:
    records = admin_records(5)
    proven = proven_admin_records(records, note_of(records, 3), ADMIN_KEY)
    assert [r.height for r in proven] == [0, 1, 2]
    assert [r.encode() for r in proven] == records[:3]
    assert len(proven_admin_records(records, note_of(records, 5), ADMIN_KEY)) == 5


def test_a_record_written_into_the_copy_is_not_proven() -> None:
    records = admin_records(4)
    note = note_of(records, 4)
    # Another valid record in place of height 3 (its own checks and links hold): the tree differs.
    mallory = Entry.prepare(Content(ADMIN_LEDGER, "account", _account("mallory"), "root", "x", 9), 0, PROTOCOL_LIMITS)
    after = decode_record(records[2], PROTOCOL_LIMITS).link
    forged = [*admin_records(3), mallory.place(3, after, 9, "ingest-1").encode()]
    with pytest.raises(ProofError):
        proven_admin_records(forged, note, ADMIN_KEY)
    # A checkpoint made over the forged copy with another key proves nothing either.
    with pytest.raises(UnverifiedNoteError):
        proven_admin_records(forged, note_of(forged, 4, HomeSigner(CLUSTER, bytes(32))), ADMIN_KEY)


def test_a_broken_chain_a_short_copy_and_a_wrong_key_are_refused() -> None:
    records = admin_records(3)
    skipped = [records[0], records[2]]
    with pytest.raises(HeightGapError):
        proven_admin_records(skipped, note_of(skipped, 2), ADMIN_KEY)
    unlinked = [*records[:2], decode_record(records[2], PROTOCOL_LIMITS).entry().place(2, bytes(32), 3, "x").encode()]
    with pytest.raises(BadLinkError):
        proven_admin_records(unlinked, note_of(unlinked, 3), ADMIN_KEY)
    with pytest.raises(ProofError):
        proven_admin_records(records[:2], note_of(records, 3), ADMIN_KEY)
    other_ledger = VerifierKey(origin_for(CLUSTER, "notes"), ALG_ED25519, ADMIN_KEY.public_key)
    with pytest.raises(WrongOriginError):
        proven_admin_records(records, note_of(records, 3), other_ledger)
    with pytest.raises(UnverifiedNoteError):
        proven_admin_records(records, note_of(records, 3, HomeSigner(CLUSTER, bytes(32))), ADMIN_KEY)
