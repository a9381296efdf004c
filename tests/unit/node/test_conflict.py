"""How an alert names two records at one height that differ (node/conflict.py, PROTOCOL 10.5)."""

from __future__ import annotations

import dataclasses
import hashlib

from vledger.config.settings import PROTOCOL_LIMITS
from vledger.node import tree
from vledger.node.conflict import hash_of, told_apart
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry, Record, decode_record

LEDGER = "votes"


def _record(payload: dict[str, int], nonce: int = 0) -> Record:
    genesis = Entry.prepare(LedgerRules(("vote",), 0, {}).genesis_content(LEDGER, "admin", "g", 1), 0, PROTOCOL_LIMITS)
    entry = Entry.prepare(Content(LEDGER, "vote", payload, "admin", "r1", 2), 0, PROTOCOL_LIMITS)
    link = b"L" * 32  # not the link these fields make: told_apart compares, it does not verify
    return Record(entry.content, entry.content_bytes, entry.checksum, nonce, 1, genesis.checksum, 5, "ingest-1", link)


def test_records_with_other_links_are_named_by_their_links() -> None:
    ours = _record({"n": 1})
    theirs = dataclasses.replace(_record({"n": 2}), link=b"M" * 32)
    conflict = told_apart(ours.encode(), theirs.encode())
    assert (conflict.expected, conflict.found, conflict.how) == ((b"L" * 32).hex(), (b"M" * 32).hex(), "")
    assert told_apart(ours.encode(), b"junk").found == "sha256:" + hashlib.sha256(b"junk").hexdigest()
    assert hash_of(b"junk") == "sha256:" + hashlib.sha256(b"junk").hexdigest()


def test_records_that_claim_one_link_are_named_by_their_leaf_hashes_and_the_fields_that_differ() -> None:
    ours = _record({"n": 1})
    changed = dataclasses.replace(ours, content_bytes=_record({"n": 2}).content_bytes, nonce=7)
    conflict = told_apart(ours.encode(), changed.encode())
    assert conflict.expected == "leaf:" + tree.leaf_hash(ours.encode()).hex()
    assert conflict.found == "leaf:" + tree.leaf_hash(changed.encode()).hex()
    assert conflict.how == "the same link, another content, nonce (expected and found: their leaf hashes)"
    assert decode_record(changed.encode(), PROTOCOL_LIMITS).hash == ours.hash
