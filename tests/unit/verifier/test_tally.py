"""The observer's own count and its signed snapshots: rule breakers flagged, never counted; bodies byte-exact."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vledger.broker.signing import SigningKey, new_signing_key
from vledger.broker.tallies import HISTORY_PAGE, MAX_READ_BYTES, MIN_KEPT, Published, TallyBoard
from vledger.ingest import cosignatures
from vledger.ingest.cosignatures import tallied_heights
from vledger.node.errors import FieldError, NonCanonicalError, SignatureError
from vledger.node.ledger import LedgerRules
from vledger.node.node_key_rotation import KeyHistory
from vledger.node.record import Content, Entry, Record
from vledger.node.rules.engine import RulesEngine
from vledger.node.sealed import new_seal_key, seal
from vledger.node.store import ChainStore
from vledger.tests.unit.verifier.chains import AUTHOR, LIMITS, plan_election, write_election, write_entries
from vledger.verifier.tally import (
    AGREE,
    MISMATCH,
    STILL_COUNTING,
    Snapshot,
    TallyKeeper,
    check_published,
    common_height,
    counted_hash,
    judge,
    mismatch_alert,
    observer_histories,
    read_tallies,
)

LEDGER = "poll"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChainStore]:
    opened = ChainStore(tmp_path / "store", origin="ingest-1")  # no domain rules: breakers get on the chain
    yield opened
    opened.close()


def keep(records: list[Record]) -> tuple[TallyKeeper, list[tuple[int, str]]]:
    keeper = TallyKeeper()
    flagged = []
    for record in records:
        violation = keeper.feed(record)
        if violation is not None:
            flagged.append((violation.height, violation.error.code))
    return keeper, flagged


def test_an_election_is_counted_from_the_chain_and_its_rule_breakers_are_flagged_not_counted(
    store: ChainStore,
) -> None:
    election = plan_election(LEDGER, 300, now_ms(), breakers=True)
    write_election(store, election, now_ms())
    records = list(store.range(LEDGER))
    keeper, flagged = keep(records)

    assert [code for _, code in flagged] == election.breakers
    snapshot = keeper.snapshot("observer-1", LEDGER, 123)
    tally = snapshot.tally
    assert tally["type"] == "election"
    assert tally["counts"] == dict(election.counts)  # the voters' stories, not the engine, say so
    assert (tally["registered"], tally["cast"], tally["withdrawn"]) == (
        election.registered,
        election.cast,
        election.withdrawn,
    )
    assert (tally["records"], tally["flagged"]) == (len(records) - len(election.breakers), len(election.breakers))
    assert (snapshot.height, snapshot.head) == (records[-1].height, records[-1].link)

    # counted: each counted voter's active cast, in height order, found here without the rules engine.
    breaker_heights = {height for height, _ in flagged}
    active: dict[str, Record] = {}
    withdrawn = set()
    for record in records[1:]:
        if record.height in breaker_heights:
            continue
        eid = record.content.payload.get("electronic_id")
        if record.content.kind == "cast":
            active[eid] = record
        elif record.content.kind == "uncast":
            del active[eid]
        elif record.content.kind == "withdraw":
            withdrawn.add(eid)
    counted = sorted((r for eid, r in active.items() if eid not in withdrawn), key=lambda r: r.height)
    assert snapshot.counted == hashlib.sha256(b"".join(r.link for r in counted)).digest()


def test_a_keeper_fed_in_two_runs_counts_as_one_fed_at_once(store: ChainStore) -> None:
    """What a restarted observer does: a fresh keeper over the same store ends with the same snapshot."""
    election = plan_election(LEDGER, 120, now_ms(), breakers=True)
    write_election(store, election, now_ms())
    records = list(store.range(LEDGER))
    whole, _ = keep(records)
    first, _ = keep(records[:100])
    for record in records[100:]:
        first.feed(record)
    assert first.snapshot("o", LEDGER, 1) == whole.snapshot("o", LEDGER, 1)
    assert first.next_height(LEDGER) == len(records)


def test_other_ledgers_count_every_record_that_passed_the_rules_genesis_included(store: ChainStore) -> None:
    rules = LedgerRules(("issue", "transfer"), 0, {"type": "resources", "unit": "credits", "issuers": [AUTHOR]})
    store.create_ledger(Entry.prepare(rules.genesis_content("credits", AUTHOR, "g", now_ms()), 0, LIMITS))

    def entry(i: int, kind: str, payload: dict[str, object], author: str = AUTHOR) -> Entry:
        return Entry.prepare(Content("credits", kind, payload, author, f"r{i}", now_ms()), 0, LIMITS)

    write_entries(
        store,
        [
            entry(1, "issue", {"account": "ana", "amount": 100}),
            entry(2, "issue", {"account": "ana", "amount": 5}, author="mallory"),  # not an issuer
            entry(3, "transfer", {"from": "ana", "to": "ben", "amount": 30}, author="ana"),
            entry(4, "transfer", {"from": "ben", "to": "ana", "amount": 31}, author="ben"),  # ben holds 30
        ],
    )
    records = list(store.range("credits"))
    keeper, flagged = keep(records)
    assert flagged == [(2, "not_issuer"), (4, "insufficient_funds")]
    snapshot = keeper.snapshot("o", "credits", 1)
    assert snapshot.tally == {
        "type": "resources",
        "unit": "credits",
        "balances": {"ana": 70, "ben": 30},
        "issued": 100,
        "issues": 1,
        "transfers": 1,
        "records": 3,
        "flagged": 2,
    }
    assert snapshot.counted == counted_hash(records[h].link for h in (0, 1, 3))


def test_a_charity_tally_is_a_plain_map_per_fund() -> None:
    keeper = TallyKeeper()
    rules = LedgerRules(("disbursement", "donation"), 0, {"type": "charity", "currency": "SAR", "funds": ["zakat"]})
    genesis = Entry.prepare(rules.genesis_content("fund", AUTHOR, "g", 1), 0, LIMITS).place(0, b"\0" * 32, 1, "n")
    keeper.feed(genesis)
    tally = keeper.snapshot("o", "fund", 1).tally
    assert tally == {
        "type": "charity",
        "currency": "SAR",
        "funds": {"zakat": {"donated": 0, "disbursed": 0, "donations": 0, "disbursements": 0, "balance": 0}},
        "donated": 0,
        "disbursed": 0,
        "balance": 0,
        "records": 1,
        "flagged": 0,
    }


def _zero_fund(**figures: int) -> dict[str, int]:
    return {"donated": 0, "disbursed": 0, "donations": 0, "disbursements": 0, "balance": 0} | figures


def test_a_charity_s_funds_map_is_the_one_protocol_11_2_spells(store: ChainStore) -> None:
    """Outsider o12 P1: 11.2 never said a listed fund is in the signed map at zero before any
    record names it, so a counter written from it signed another tally. PROTOCOL 7.2/11.2 now
    do: every listed fund from the genesis on, in the byte order of section 1 (not the
    genesis'); without a list, a fund from its first counted donation (a flagged one names none),
    kept at balance zero. The body's bytes are built here by hand as an outsider would."""
    listed = LedgerRules(
        ("disbursement", "donation"),
        0,
        {"type": "charity", "currency": "EUR", "funds": ["water", "Zakat", "éducation"]},
    )
    keeper = TallyKeeper()
    keeper.feed(Entry.prepare(listed.genesis_content("relief", AUTHOR, "g", 1), 0, LIMITS).place(0, b"\0" * 32, 1, "n"))
    snapshot = dataclasses.replace(keeper.snapshot("o", "relief", 7), head=bytes(32), at_ms=5)
    funds = {"Zakat": _zero_fund(), "water": _zero_fund(), "éducation": _zero_fund()}
    assert list(snapshot.tally["funds"]) == ["Zakat", "water", "éducation"]
    by_hand = {
        "at_ms": 5,
        "counted": snapshot.counted,
        "head": bytes(32),
        "height": 0,
        "ledger": "relief",
        "observer": "o",
        "tally": {
            "balance": 0,
            "currency": "EUR",
            "disbursed": 0,
            "donated": 0,
            "flagged": 0,
            "funds": {name: dict(sorted(figures.items())) for name, figures in funds.items()},
            "records": 1,
            "type": "charity",
        },
        "v": 1,
    }
    assert snapshot.body() == msgpack.packb(by_hand, use_bin_type=True)

    unlisted = LedgerRules(("disbursement", "donation"), 0, {"type": "charity", "currency": "EUR"})
    store.create_ledger(Entry.prepare(unlisted.genesis_content("gifts", AUTHOR, "g", now_ms()), 0, LIMITS))
    donor = seal(new_seal_key(), "Zoë", "gifts")

    def entry(i: int, kind: str, payload: dict[str, object]) -> Entry:
        return Entry.prepare(Content("gifts", kind, payload, AUTHOR, f"r{i}", now_ms()), 0, LIMITS)

    gift = {"donor": donor, "source": "cash", "purpose": "p"}
    write_entries(
        store,
        [
            entry(1, "disbursement", {"fund": "roof", "target": "t", "amount": 1, "purpose": "p"}),  # no such fund
            entry(2, "donation", gift | {"fund": "wells", "amount": 2**64 - 1}),
            entry(3, "donation", gift | {"fund": "bread", "amount": 1}),  # past 2**64 - 1: flagged
            entry(4, "disbursement", {"fund": "wells", "target": "t", "amount": 2**64 - 1, "purpose": "p"}),
        ],
    )
    keeper, flagged = keep(list(store.range("gifts")))
    assert flagged == [(1, "unknown_fund"), (3, "bad_payload")]
    figures = {"donated": 2**64 - 1, "disbursed": 2**64 - 1, "donations": 1, "disbursements": 1}
    assert keeper.snapshot("o", "gifts", 1).tally["funds"] == {"wells": _zero_fund(**figures)}


# --- snapshot bodies ----------------------------------------------------------------------------------

SNAPSHOT = Snapshot(
    observer="observer-1",
    ledger="poll",
    height=7,
    head=bytes(range(32)),
    tally={"type": "election", "counts": {"bob": 2, "alice": 3}, "cast": 5, "registered": 6, "withdrawn": 1},
    counted=hashlib.sha256(b"x").digest(),
    at_ms=1_790_000_000_000,
)


def test_a_body_is_the_canonical_msgpack_of_its_fields_with_sorted_keys() -> None:
    body = SNAPSHOT.body()
    # Built by hand as an outsider would: every map's keys sorted, bin for the hashes.
    expected = msgpack.packb(
        {
            "at_ms": 1_790_000_000_000,
            "counted": hashlib.sha256(b"x").digest(),
            "head": bytes(range(32)),
            "height": 7,
            "ledger": "poll",
            "observer": "observer-1",
            "tally": {
                "cast": 5,
                "counts": {"alice": 3, "bob": 2},
                "registered": 6,
                "type": "election",
                "withdrawn": 1,
            },
            "v": 1,
        },
        use_bin_type=True,
    )
    assert body == expected
    assert Snapshot.decode(body) == SNAPSHOT


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({"v": 1}, FieldError),
        ({**msgpack.unpackb(SNAPSHOT.body()), "v": 2}, FieldError),
        ({**msgpack.unpackb(SNAPSHOT.body()), "head": b"short"}, FieldError),
        ({**msgpack.unpackb(SNAPSHOT.body()), "height": -1}, FieldError),
        ({**msgpack.unpackb(SNAPSHOT.body()), "tally": []}, FieldError),
    ],
)
def test_a_body_of_another_shape_is_refused(value: dict[str, object], error: type[Exception]) -> None:
    data = msgpack.packb(dict(sorted(value.items())), use_bin_type=True)
    with pytest.raises(error):
        Snapshot.decode(data)


def test_a_body_with_unsorted_keys_is_not_canonical() -> None:
    with pytest.raises(NonCanonicalError):
        Snapshot.decode(msgpack.packb(dict(reversed(msgpack.unpackb(SNAPSHOT.body()).items())), use_bin_type=True))


# --- checking what was published ---------------------------------------------------------------------

SIGNER = new_signing_key()


def published(snapshot: Snapshot = SNAPSHOT, *, observer: str = "observer-1", entry: str = "1-0") -> Published:
    body = snapshot.body()
    return Published(entry, observer, snapshot.height, body, SIGNER.sign(body))


def test_a_signed_entry_checks_out_with_its_observers_key() -> None:
    checked = check_published(published(), SIGNER.public, "poll")
    assert checked.ok and checked.snapshot == SNAPSHOT and checked.problem is None


@given(st.data())
def test_any_changed_byte_of_a_body_or_signature_is_caught(data: st.DataObject) -> None:
    entry = published()
    field = data.draw(st.sampled_from(["body", "signature"]))
    blob = getattr(entry, field)
    index = data.draw(st.integers(0, len(blob) - 1))
    flip = data.draw(st.integers(1, 255))
    changed = blob[:index] + bytes([blob[index] ^ flip]) + blob[index + 1 :]
    forged = Published(entry.entry_id, entry.observer, entry.height, **{**_blobs(entry), field: changed})
    checked = check_published(forged, SIGNER.public, "poll")
    assert not checked.ok and isinstance(checked.problem, SignatureError)


def _blobs(entry: Published) -> dict[str, bytes]:
    return {"body": entry.body, "signature": entry.signature}


def test_another_observers_key_a_missing_key_or_a_misfiled_entry_fail() -> None:
    other = new_signing_key()
    assert isinstance(check_published(published(), other.public, "poll").problem, SignatureError)
    assert isinstance(check_published(published(), None, "poll").problem, SignatureError)
    # Validly signed, but filed under another observer, ledger or height than the body states.
    assert isinstance(check_published(published(observer="observer-2"), SIGNER.public, "poll").problem, FieldError)
    assert isinstance(check_published(published(), SIGNER.public, "other").problem, FieldError)


def test_the_newest_common_height_and_the_verdicts() -> None:
    assert common_height({"a": [5, 3, 1], "b": [4, 3, 1]}) == 3
    assert common_height({"a": [5], "b": [4]}) is None
    assert common_height({}) is None
    same = {"a": SNAPSHOT, "b": Snapshot("b", **_rest(SNAPSHOT, at_ms=1))}
    assert judge(same, ["a", "b"]).status == AGREE
    assert judge({"a": SNAPSHOT}, ["a", "b"]).status == STILL_COUNTING
    assert judge({}, ["a", "b"]).status == STILL_COUNTING
    other = Snapshot("b", **_rest(SNAPSHOT, tally={**SNAPSHOT.tally, "cast": 6}))
    # Two that disagree: nobody can say who is right, so both are named (the first is no reference).
    verdict = judge({"a": SNAPSHOT, "b": other}, ["a", "b"])
    assert (verdict.status, verdict.height, verdict.differing) == (MISMATCH, 7, ("a", "b"))
    assert judge({"a": other, "b": SNAPSHOT}, ["a", "b"]).differing == ("a", "b")


def test_a_mismatch_names_the_minority_whoever_comes_first() -> None:
    b = Snapshot("b", **_rest(SNAPSHOT, at_ms=1))
    c = Snapshot("c", **_rest(SNAPSHOT, at_ms=2))
    liar = Snapshot("a", **_rest(SNAPSHOT, tally={**SNAPSHOT.tally, "cast": 106}))
    verdict = judge({"a": liar, "b": b, "c": c}, ["a", "b", "c"])
    assert (verdict.status, verdict.differing) == (MISMATCH, ("a",))
    # Three counts among three observers, or two against two: no group is larger, all are named.
    third = Snapshot("c", **_rest(SNAPSHOT, tally={**SNAPSHOT.tally, "cast": 9}))
    assert judge({"a": liar, "b": b, "c": third}, ["a", "b", "c"]).differing == ("a", "b", "c")
    d = Snapshot("d", **_rest(liar, at_ms=3))
    assert judge({"a": liar, "b": b, "c": c, "d": d}, ["a", "b", "c", "d"]).differing == ("a", "b", "c", "d")
    # One silent observer: the two that signed still disagree, and both are named.
    assert judge({"a": liar, "b": b}, ["a", "b", "c"]).differing == ("a", "b")


def _rest(snapshot: Snapshot, **changes: object) -> dict[str, object]:
    fields = {
        "ledger": snapshot.ledger,
        "height": snapshot.height,
        "head": snapshot.head,
        "tally": snapshot.tally,
        "counted": snapshot.counted,
        "at_ms": snapshot.at_ms,
    }
    return {**fields, **changes}


def test_a_replay_by_the_rules_engine_agrees_with_the_keeper(store: ChainStore) -> None:
    """The recount an outsider makes from an export (RulesEngine.replay) is the keeper's count."""
    election = plan_election(LEDGER, 200, now_ms(), seed=7, breakers=True)
    write_election(store, election, now_ms())
    engine = RulesEngine()
    violations = engine.replay(store.range(LEDGER))
    keeper, flagged = keep(list(store.range(LEDGER)))
    assert [(v.height, v.error.code) for v in violations] == flagged
    state = engine.state(LEDGER)
    assert state is not None
    assert keeper.snapshot("o", LEDGER, 0).tally["counts"] == state.domain.tally().counts  # type: ignore[attr-defined]


# --- an observer whose Ed25519 key rotated (PROTOCOL 16.6) ---------------------------------------------

NEW_SIGNER = new_signing_key()
ROTATED_AT, UNTIL = SNAPSHOT.at_ms - 60_000, SNAPSHOT.at_ms + 60_000


def _rotated_history() -> dict[str, KeyHistory]:
    rotation = {"node": "observer-1", "curve": "", "sign": NEW_SIGNER.public.public_hex, "until": UNTIL}
    other = {"node": "observer-9", "curve": "", "sign": NEW_SIGNER.public.public_hex, "until": UNTIL}
    return observer_histories({"observer-1": SIGNER.public}, [dict(rotation, accepted=ROTATED_AT), other])


def _signed(snapshot: Snapshot, signer: SigningKey) -> Published:
    body = snapshot.body()
    return Published("1-0", "observer-1", snapshot.height, body, signer.sign(body))


@pytest.mark.parametrize(
    ("signer", "at_ms", "ok"),
    [
        (NEW_SIGNER, UNTIL + 1, True),  # the newest key, whatever the time
        (NEW_SIGNER, ROTATED_AT - 1, True),
        (SIGNER, UNTIL - 1, True),  # the old key, stamped before the window's end
        (SIGNER, UNTIL, False),  # ... and at it or later
    ],
)
def test_a_rotated_observer_s_tally_counts_by_its_key_in_force_at_at_ms(
    signer: SigningKey, at_ms: int, ok: bool
) -> None:
    histories = _rotated_history()
    assert list(histories) == ["observer-1"]  # a rotation of a node that is no observer given is left out
    snapshot = dataclasses.replace(SNAPSHOT, at_ms=at_ms)
    checked = check_published(_signed(snapshot, signer), SIGNER.public, "poll", histories["observer-1"])
    assert checked.ok is ok
    if not ok:
        assert isinstance(checked.problem, SignatureError) and "replaced" in checked.problem.message
    # Without the history (a checker that does not follow rotations), only the key file's key counts.
    assert check_published(_signed(snapshot, signer), SIGNER.public, "poll").ok is (signer is SIGNER)


def test_a_key_the_observer_never_had_is_refused_with_its_history() -> None:
    checked = check_published(
        _signed(SNAPSHOT, new_signing_key()), SIGNER.public, "poll", _rotated_history()["observer-1"]
    )
    assert isinstance(checked.problem, SignatureError)


def _stating_history(tallied: dict[str, int] | None) -> KeyHistory:
    """observer-1's history after a rotation that states what its replaced key had ``tallied``
    (16.6; None: a rotation written before it did), beside what it had cosigned."""
    rotation = {"node": "observer-1", "curve": "", "sign": NEW_SIGNER.public.public_hex, "until": UNTIL}
    rotation |= {"cosigned": {"poll": 100}} | ({} if tallied is None else {"tallied": tallied})
    return observer_histories({"observer-1": SIGNER.public}, [dict(rotation, accepted=ROTATED_AT)])["observer-1"]


@pytest.mark.parametrize(
    ("signer", "height", "tallied", "ok"),
    [
        (SIGNER, 7, {"poll": 7}, True),  # the old key, at the height its rotation says it tallied
        (SIGNER, 3, {"poll": 7}, True),  # ... or below
        (SIGNER, 8, {"poll": 7}, False),  # past it: whatever at_ms it claims inside the window
        (SIGNER, 0, {"other": 9}, False),  # of a ledger the rotation does not list
        (SIGNER, 0, {}, False),  # a rotation saying the key tallied nothing
        (SIGNER, 10**9, None, True),  # a rotation stating no heights: the window alone, as before
        (NEW_SIGNER, 10**9, {"poll": 7}, True),  # the newest key: any height
    ],
)
def test_a_replaced_observer_key_counts_only_up_to_the_height_its_rotation_says_it_tallied(
    signer: SigningKey, height: int, tallied: dict[str, int] | None, ok: bool
) -> None:
    # What a thief of the replaced key makes: a tally at any height, at_ms inside the window.
    snapshot = dataclasses.replace(SNAPSHOT, height=height, at_ms=UNTIL - 1)
    checked = check_published(_signed(snapshot, signer), SIGNER.public, "poll", _stating_history(tallied))
    assert checked.ok is ok
    if not ok:
        assert isinstance(checked.problem, SignatureError) and "tallied" in checked.problem.message


# --- the observers' keys on a real Redis (broker/tallies.py) -----------------------------------------

OTHER_SIGNER = new_signing_key()
KEYS = {"observer-1": SIGNER.public, "observer-2": OTHER_SIGNER.public}


def _publish(board: TallyBoard, observer: str, height: int, signer: SigningKey | None = None) -> str:
    snapshot = dataclasses.replace(SNAPSHOT, observer=observer, height=height)
    signer = signer or (SIGNER if observer == "observer-1" else OTHER_SIGNER)
    return board.publish(LEDGER, observer, height, snapshot.body(), signer.sign(snapshot.body()))


def test_observers_at_different_heights_are_compared_where_both_published_even_pages_back(
    redis_client: Any,
) -> None:
    board = TallyBoard(redis_client)
    for height in (0, 10):
        _publish(board, "observer-2", height)
    for height in range(HISTORY_PAGE + 20):  # height 10 is on observer-1's second page back
        _publish(board, "observer-1", height)
    report = read_tallies(board, LEDGER, KEYS)
    assert [t.checked.snapshot.height for t in report.observers if t.checked and t.checked.snapshot] == [
        HISTORY_PAGE + 19,
        10,
    ]
    assert report.verdict.status == AGREE and report.verdict.height == 10
    assert [c.published.observer for c in report.older] == ["observer-1"] and report.problems == []


def test_a_reader_takes_the_observer_from_the_key_not_from_the_body(redis_client: Any) -> None:
    # observer-2's own signed tally, put in observer-1's keys (observer-1's user may write them).
    board = TallyBoard(redis_client)
    _publish(board, "observer-2", 7)
    stolen = board.latest(LEDGER, ["observer-2"])["observer-2"]
    assert stolen is not None
    board.publish(LEDGER, "observer-1", 7, stolen.body, stolen.signature)
    report = read_tallies(board, LEDGER, KEYS)
    [problem] = report.problems
    assert problem.published.observer == "observer-1" and isinstance(problem.problem, SignatureError)
    # Signed by observer-1 but naming observer-2 in its body: its signature holds, its body does not.
    _publish(board, "observer-1", 8, SIGNER)
    named = dataclasses.replace(SNAPSHOT, observer="observer-2", height=9)
    board.publish(LEDGER, "observer-1", 9, named.body(), SIGNER.sign(named.body()))
    [problem] = read_tallies(board, LEDGER, KEYS).problems
    assert isinstance(problem.problem, FieldError) and "observer-2" in problem.problem.message


def test_a_read_of_a_stream_takes_at_most_its_bytes_and_an_entry_over_them_stays_in_redis(redis_client: Any) -> None:
    """Review r9 #4: an observer's Redis user may XADD entries of any size, and every reader took
    them whole (the verifier 2 x 500 of them a look). A read stops at MAX_READ_BYTES; an entry
    larger alone is read without its fields: a problem when it is the latest, passed over when
    older, the search for a common height going on past it."""
    board = TallyBoard(redis_client)
    _publish(board, "observer-2", 3)
    _publish(board, "observer-1", 3)
    stream = board.stream_key(LEDGER, "observer-1")
    third = b"\x00" * (MAX_READ_BYTES // 3)
    for _ in range(6):  # older junk, each a third of a read
        redis_client.xadd(stream, {"height": 4, "body": third, "signature": b"s"})
    huge = b"\x00" * (MAX_READ_BYTES + 1)
    redis_client.xadd(stream, {"height": 5, "body": huge, "signature": b"s"})
    latest = redis_client.xadd(stream, {"height": huge, "body": b"", "signature": b""})
    redis_client.set(board.latest_key(LEDGER, "observer-1"), latest)

    def sent() -> int:
        return int(redis_client.info("stats")["total_net_output_bytes"])

    before = sent()
    report = read_tallies(board, LEDGER, KEYS)
    assert sent() - before < 4096  # the latest, huge, left in Redis
    [problem] = report.problems
    assert isinstance(problem.problem, FieldError) and f"over {MAX_READ_BYTES} bytes" in problem.problem.message
    assert problem.published.observer == "observer-1" and problem.published.oversized
    before = sent()
    page = board.history(LEDGER, "observer-1", count=100)
    assert sent() - before < MAX_READ_BYTES + 4096  # one read's worth of junk
    assert [p.height for p in page] == [-1, -1, 4, 4]  # the huge two, then the junk up to one read
    _publish(board, "observer-1", 6)  # a valid latest: the common height 3, read past all of them
    report = read_tallies(board, LEDGER, KEYS)
    assert report.verdict.status == AGREE and report.verdict.height == 3
    assert report.problems == []  # the junk passed over, never a count


def test_a_reader_that_may_run_no_script_leaves_an_entry_over_a_read_s_bytes_unread(redis_client: Any) -> None:
    """The gateway's Redis user runs no script, and it read entries whole: one of 64 MiB that an
    observer's user added went out of Redis on every request for the ledger's tally. Its reads
    stop before the field that would pass MAX_READ_BYTES and drop the connection: Redis writes
    what the socket buffers take (about 4 MiB here), not the entry; the search for a common
    height goes on past it as the scripted read's does."""
    board = TallyBoard(redis_client, scripts=False)
    _publish(board, "observer-2", 3)
    _publish(board, "observer-1", 3)
    stream = board.stream_key(LEDGER, "observer-1")
    third = b"\x00" * (MAX_READ_BYTES // 3)
    for _ in range(6):  # older junk, two of them a read (with their field names, three pass it)
        redis_client.xadd(stream, {"height": 4, "body": third, "signature": b"s"})
    huge = b"\x00" * (64 * 1024 * 1024)
    redis_client.xadd(stream, {"height": 5, "body": huge, "signature": b"s"})
    latest = redis_client.xadd(stream, {"height": 6, "body": huge, "signature": b""})
    redis_client.set(board.latest_key(LEDGER, "observer-1"), latest)

    def sent() -> int:
        return int(redis_client.info("stats")["total_net_output_bytes"])

    before = sent()
    report = read_tallies(board, LEDGER, KEYS)
    assert sent() - before < len(huge) // 4  # the latest, huge, left unread
    [problem] = report.problems
    assert isinstance(problem.problem, FieldError) and f"over {MAX_READ_BYTES} bytes" in problem.problem.message
    assert problem.published.observer == "observer-1" and problem.published.oversized
    pages, before_id = [], None
    while page := board.history(LEDGER, "observer-1", before_id, count=100):
        read = sent()
        pages.append([p.height for p in page])
        assert sent() - read < len(huge) // 4
        before_id = page[-1].entry_id
    assert pages == [[-1], [-1], [4, 4], [4, 4], [4, 4, 3]]  # each huge one alone, unread
    _publish(board, "observer-1", 7)  # a valid latest: the common height 3, read past all of them
    report = read_tallies(board, LEDGER, KEYS)
    assert report.verdict.status == AGREE and report.verdict.height == 3
    assert report.problems == []


@pytest.mark.parametrize("scripts", [True, False])
def test_an_entry_of_many_empty_fields_counts_the_bytes_redis_sends_for_them(redis_client: Any, scripts: bool) -> None:
    """Empty strings counted as nothing: an entry of 3 million empty fields (18 MB as sent) was no
    larger than an empty one to either read, and went out of Redis whole. Without a script Redis
    still writes what the socket buffers take (about 4 MB here) before the dropped connection stops it."""
    board = TallyBoard(redis_client, scripts=scripts)
    _publish(board, "observer-1", 3)
    fields = 3_000_000
    redis_client.execute_command("XADD", board.stream_key(LEDGER, "observer-1"), "*", *[b""] * fields)
    before = int(redis_client.info("stats")["total_net_output_bytes"])
    assert board.history(LEDGER, "observer-1")[0].oversized  # read alone, without its fields
    assert int(redis_client.info("stats")["total_net_output_bytes"]) - before < fields * len(b"$0\r\n\r\n") // 2


@pytest.mark.parametrize("junk", ["not an id", "99999999999999999999-0", "1-18446744073709551616"])
def test_a_latest_id_that_is_no_stream_id_fails_only_its_observer(redis_client: Any, junk: str) -> None:
    # The two larger ones match the id's pattern but pass 2**64 - 1: Redis's "Invalid stream ID"
    # failed the pipeline, and so every observer's read (a reviewer's finding).
    board = TallyBoard(redis_client)
    _publish(board, "observer-1", 7)
    _publish(board, "observer-2", 7)
    redis_client.set(board.latest_key(LEDGER, "observer-2"), junk)
    report = read_tallies(board, LEDGER, KEYS)
    assert [t.checked is not None and t.checked.ok for t in report.observers] == [True, False]
    assert report.verdict.status == STILL_COUNTING
    assert board.latest_ids([LEDGER, "other"], KEYS) == {
        LEDGER: {
            "observer-1": board.latest_ids([LEDGER], ["observer-1"])[LEDGER]["observer-1"],
            "observer-2": junk,
        },
        "other": {},
    }


def test_a_latest_key_of_another_type_fails_only_its_observer(redis_client: Any) -> None:
    board = TallyBoard(redis_client)
    _publish(board, "observer-1", 7)
    redis_client.delete(board.latest_key(LEDGER, "observer-2"))
    redis_client.rpush(board.latest_key(LEDGER, "observer-2"), "x")  # WRONGTYPE for GET
    assert list(board.latest(LEDGER, KEYS)) == ["observer-1"] and board.latest(LEDGER, KEYS)["observer-1"]


def test_what_a_rotated_observer_key_tallied_is_its_latest_entry_s_height_where_that_key_signed_it(
    redis_client: Any,
) -> None:
    # What the admin home states as a rotation's tallied (PROTOCOL 16.6).
    board = TallyBoard(redis_client)
    for height in (3, 9, 5):  # the latest entry counts, not the largest height of the stream
        _publish(board, "observer-1", height)
    other = dataclasses.replace(SNAPSHOT, observer="observer-1", ledger="funds", height=4)
    board.publish("funds", "observer-1", 4, other.body(), OTHER_SIGNER.sign(other.body()))  # another key's
    lying = dataclasses.replace(SNAPSHOT, observer="observer-1", ledger="files", height=4)
    board.publish("files", "observer-1", 8, lying.body(), SIGNER.sign(lying.body()))  # the entry says 8
    found = tallied_heights(board, [LEDGER, "funds", "files", "quiet"], "observer-1", SIGNER.public.public_hex)
    assert found == {LEDGER: 5}
    assert tallied_heights(board, [LEDGER], "observer-2", SIGNER.public.public_hex) == {}


def test_what_a_key_tallied_is_read_of_ledger_names_only_each_once_and_at_most_a_bound(
    redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any ingest user may HSET any name into {ledgers}: the rotation read each, one by one.
    board = TallyBoard(redis_client)
    _publish(board, "observer-1", 5)
    asked: list[str] = []
    read = board.latest_entry
    monkeypatch.setattr(board, "latest_entry", lambda ledger, observer: asked.append(ledger) or read(ledger, observer))
    monkeypatch.setattr(cosignatures, "MAX_TALLIED_LEDGERS", 3)
    junk = ["Bad Name", "{accounts}", "x" * 300, LEDGER, "a", LEDGER, "b", "c", "d"]
    assert tallied_heights(board, junk, "observer-1", SIGNER.public.public_hex) == {LEDGER: 5}
    assert asked == [LEDGER, "a", "b"]


def test_a_mismatch_alert_holds_the_majoritys_count_or_none() -> None:
    b = Snapshot("b", **_rest(SNAPSHOT, at_ms=1))
    liar = Snapshot("a", **_rest(SNAPSHOT, tally={**SNAPSHOT.tally, "cast": 106}, counted=b"\x07" * 32))
    three = {"a": liar, "b": b, "c": Snapshot("c", **_rest(SNAPSHOT, at_ms=2))}
    alert = mismatch_alert("poll", judge(three, ["a", "b", "c"]), three)
    assert (alert.node, alert.what, alert.height, alert.source) == ("vledger-tally", "tally_mismatch", 7, "a, b, c")
    assert (alert.expected, alert.found) == (SNAPSHOT.counted.hex(), "07" * 32)
    assert alert.detail == "at height 7, a signed another tally than b, c"
    two = {"a": liar, "b": b}
    alert = mismatch_alert("poll", judge(two, ["a", "b"]), two)
    assert (alert.expected, alert.found) == ("", f"{'07' * 32}, {SNAPSHOT.counted.hex()}")
    assert alert.detail == "at height 7, a, b signed different tallies, none agreed by more observers"


def test_a_stream_of_large_bodies_keeps_fewer_of_them_so_its_bytes_stay_bounded(redis_client: Any) -> None:
    """o6 H9: 10,000 snapshots of a big balance map were gigabytes of the Redis every node shares."""
    board = TallyBoard(redis_client, stream_max_len=10_000, stream_max_bytes=1024 * 1024)
    stream = board.stream_key(LEDGER, "observer-1")
    for height in range(40):
        board.publish(LEDGER, "observer-1", height, bytes([height]) * 100_000, b"s" * 64)
    assert MIN_KEPT <= redis_client.xlen(stream) <= MIN_KEPT + 2  # 1 MiB / 100 kB is below the floor
    assert int(redis_client.memory_usage(stream)) < 3 * 1024 * 1024
    small = board.stream_key(LEDGER, "observer-2")
    for height in range(40):  # small bodies: only stream_max_len trims them
        board.publish(LEDGER, "observer-2", height, b"b" * 100, b"s" * 64)
    assert redis_client.xlen(small) == 40


def test_a_snapshot_published_after_the_latest_were_read_is_not_compared_in_their_place(redis_client: Any) -> None:
    """/tally showed both observers agreeing at the election's head with every count 0: the latest
    read of observer-1 was its tally before the casts, it published at the head before its stream
    was read back, and the read back, from the stream's newest entry, found that one: the verdict
    compared it while the bodies shown (each observer's latest read) were the older."""

    class PublishedMeanwhile(TallyBoard):
        def history(self, ledger: str, observer: str, before: str | None = None, count: int = HISTORY_PAGE) -> Any:
            if not self.ahead:
                self.ahead = [_publish(self, "observer-1", 90)]  # between the latest read and this read back
            return super().history(ledger, observer, before, count)

    board = PublishedMeanwhile(redis_client)
    board.ahead = []
    _publish(board, "observer-1", 40)
    for height in (40, 90):
        _publish(board, "observer-2", height)
    report = read_tallies(board, LEDGER, KEYS)
    assert board.ahead
    shown = {t.observer: t.checked.snapshot.height for t in report.observers if t.checked and t.checked.snapshot}
    assert shown == {"observer-1": 40, "observer-2": 90}
    assert report.verdict.status == AGREE and report.verdict.height == 40
    assert all(snapshot.height <= shown[name] for name, snapshot in report.compared.items())
