"""``vledger vote check``'s output: each of a voter's records with the account that wrote it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vledger.client.voters import check_voter
from vledger.node.record import Content, Entry
from vledger.node.store import ChainStore
from vledger.tests.unit.verifier.chains import LIMITS, election_rules, electronic_id
from vledger.tools.vote_check import print_vote_check

LEDGER = "council"


def test_each_record_shows_its_author_so_a_voter_sees_who_moved_their_vote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ts = 1_790_000_000_000
    rules = election_rules(ts)
    serial = iter(range(1, 100))

    def entry(kind: str, payload: dict[str, object], author: str) -> Entry:
        return Entry.prepare(Content(LEDGER, kind, payload, author, f"r{next(serial)}", ts), 0, LIMITS)

    store = ChainStore(tmp_path / "store", origin="node-1")
    try:
        store.create_ledger(Entry.prepare(rules.genesis_content(LEDGER, "clerk", "g", ts), 0, LIMITS))
        registration = entry("register", {"voter_id": "V-1"}, "clerk")
        eid = electronic_id(registration)
        for written in (
            registration,
            entry("cast", {"electronic_id": eid, "choice": "bob"}, "clerk"),
            entry("uncast", {"electronic_id": eid}, "mallory"),  # another writer moved the vote
            entry("cast", {"electronic_id": eid, "choice": "alice"}, "mallory"),
        ):
            store.append(written)
        check = check_voter(LEDGER, list(store.range(LEDGER)), eid)
    finally:
        store.close()

    print_vote_check([check], "replica-1", eid, as_json=True)
    records = json.loads(capsys.readouterr().out)["ledgers"][0]["records"]
    assert [(r["kind"], r["author"]) for r in records] == [
        ("register", "clerk"),
        ("cast", "clerk"),
        ("uncast", "mallory"),
        ("cast", "mallory"),
    ]

    print_vote_check([check], "replica-1", eid, as_json=False)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.lstrip().startswith("height")]
    assert [("by mallory" in line) for line in lines] == [False, False, True, True]
    assert all("by clerk" in line for line in lines[:2])
