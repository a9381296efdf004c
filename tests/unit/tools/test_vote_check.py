"""``vledger vote check``'s output: each of a voter's records with the account that wrote it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vledger.client.voters import VoterCheck, check_voter
from vledger.node.note import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    Checkpoint,
    Note,
    NoteSignature,
    SignerKey,
    cosign,
    sign,
    verify_checkpoint,
)
from vledger.node.outside import OutsideWitnesses
from vledger.node.receipt import ReceiptKeys
from vledger.node.record import Content, Entry
from vledger.node.rules import Ref
from vledger.node.store import ChainStore
from vledger.node.times import time_text
from vledger.tests.unit.verifier.chains import LIMITS, election_rules, electronic_id
from vledger.tools.vote_check import Freshness, print_vote_check

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


def _signers(witnesses: int) -> tuple[SignerKey, list[SignerKey], bytes]:
    """The ledger's home key, ``witnesses`` cluster witness keys, and a checkpoint body of 5 records."""
    origin = f"local/{LEDGER}"
    home = SignerKey(origin, ALG_ED25519, bytes(range(32)))
    keys = [SignerKey(f"local/witness/r{i}", ALG_COSIGNATURE_V1, bytes([i + 40]) * 32) for i in range(witnesses)]
    return home, keys, Checkpoint(origin, 5, bytes(32)).body()


def test_a_proven_check_says_since_when_its_witnesses_vouch_and_stale_past_the_interval(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # o4 F2: a copy no longer updated keeps serving an old checkpoint (a voter's later records
    # missing); witnesses cosign a quiet ledger again (PROTOCOL 10.7), so a majority's newest
    # line older than recosign_interval + 10 s is an old view. A forged later line never counts.
    home, witnesses, body = _signers(3)
    first, again = 1_790_000_000, 1_790_000_300
    forged = cosign(body, witnesses[2], again).note_signature()
    lines = [
        *(cosign(body, w, first).note_signature() for w in witnesses),
        *(cosign(body, w, again).note_signature() for w in witnesses[:2]),
        NoteSignature(forged.name, forged.key_id, forged.signature[:8] + bytes(64)),  # r2's, not verifying
    ]
    note = Note(body, (sign(body, home), *lines)).encode()
    proven = verify_checkpoint(note, home.verifier(), [w.verifier() for w in witnesses], 3)
    assert [c.timestamp for c in proven.cosignatures] == [first] * 3
    assert [c.timestamp for c in proven.newest] == [again, again, first]
    check = VoterCheck(LEDGER, Ref(4, bytes(32)), (), None, proven)
    for now_s, stale in ((again + 309, False), (again + 311, True)):
        freshness = Freshness(now_s * 1000, 300_000, 2)
        assert freshness.fresh_ms(proven) == again * 1000 and freshness.stale(proven) is stale
        print_vote_check([check], "replica-1", "E-0", as_json=True, freshness={LEDGER: freshness})
        shown = json.loads(capsys.readouterr().out)["ledgers"][0]["checkpoint"]
        assert (shown["fresh_ms"], shown["stale"]) == (again * 1000, stale)
        print_vote_check([check], "replica-1", "E-0", as_json=False, freshness={LEDGER: freshness})
        said = [line.strip() for line in capsys.readouterr().out.splitlines() if "last vouched" in line]
        assert said == [
            ("STALE: " if stale else "")
            + f"a majority of its witnesses last vouched for it at {time_text(again * 1000)}, {now_s - again} s ago"
            + (": an old view, which may lack later records of this id" if stale else "")
        ]


def test_the_genesis_outside_witnesses_count_among_the_trusted_as_the_client_counts_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # o8 J4's rule (15.4 step 8) in vote check: 5 cluster witnesses of which 2 cosigned the head
    # lately (the others stopped for by their old lines) and both outside witnesses the genesis
    # lists: 4 of the 7 trusted vouch now. Counting the key directory's alone called it STALE.
    home, cluster, body = _signers(5)
    outside = [SignerKey(f"outside/w{i}", ALG_COSIGNATURE_V1, bytes([i + 90]) * 32) for i in range(2)]
    old, now_s = 1_790_000_000, 1_790_001_000
    lines = [
        *(cosign(body, w, old).note_signature() for w in cluster),
        *(cosign(body, w, now_s - 5).note_signature() for w in (*cluster[:2], *outside)),
    ]
    note = Note(body, (sign(body, home), *lines)).encode()
    keys = ReceiptKeys(
        home.verifier(),
        tuple(w.verifier() for w in cluster),
        outside=OutsideWitnesses(tuple(w.verifier() for w in outside), 2),
    )
    proven = verify_checkpoint(note, home.verifier(), list(keys.witnesses), 0)
    freshness = Freshness.of(keys, now_s * 1000, 300_000)
    assert freshness.needed == 4
    assert freshness.fresh_ms(proven) == (now_s - 5) * 1000 and not freshness.stale(proven)
    check = VoterCheck(LEDGER, Ref(4, bytes(32)), (), None, proven)
    print_vote_check([check], "replica-1", "E-0", as_json=True, freshness={LEDGER: freshness})
    shown = json.loads(capsys.readouterr().out)["ledgers"][0]["checkpoint"]
    assert (shown["fresh_ms"], shown["stale"]) == ((now_s - 5) * 1000, False)
    # One outside line short, 3 of 7 vouch lately: stale, as the client would refuse it.
    fewer = verify_checkpoint(
        Note(body, (sign(body, home), *lines[:-1])).encode(), home.verifier(), list(keys.witnesses), 0
    )
    assert freshness.fresh_ms(fewer) == old * 1000 and freshness.stale(fewer)
