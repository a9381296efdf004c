"""Chain verification (docs/PROTOCOL.md, section 4): every tampering is caught, with the right error."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vledger.config.settings import Limits
from vledger.node import work
from vledger.node.errors import (
    BadChecksumError,
    BadGenesisError,
    BadLinkError,
    HeightGapError,
    InsufficientWorkError,
    RecordError,
    UnknownKindError,
    VledgerError,
    WrongLedgerError,
)
from vledger.node.record import ZERO_LINK, Entry, Record, checksum_of, decode_record, link_of
from vledger.node.verify import ChainVerifier, verify_entry, verify_record

LIMITS = Limits()
DIFFICULTY = 8  # enough that a stale nonce almost never still meets it (and we check it does not)


@pytest.fixture(scope="module")
def chain(kit: Any) -> list[Record]:
    return kit.chain(6, DIFFICULTY)


def verify(records: Iterable[Record], ledger: str = "ledger-a") -> ChainVerifier:
    verifier = ChainVerifier(ledger, LIMITS)
    for record in records:
        verifier.feed(record)
    return verifier


def verify_bytes(datas: Iterable[bytes], ledger: str = "ledger-a") -> ChainVerifier:
    return verify((decode_record(d, LIMITS) for d in datas), ledger)


def expect(error: type[RecordError], records: list[Record], height: int, ledger: str = "ledger-a") -> RecordError:
    """Verification fails with exactly ``error``, naming the ledger and ``height``."""
    with pytest.raises(RecordError) as info:
        verify(records, ledger)
    assert type(info.value) is error, info.value
    assert (info.value.ledger, info.value.height) == (ledger, height)
    return info.value


def through_bytes(record: Record) -> Record:
    """What a verifier receives: the record's bytes, decoded."""
    return decode_record(record.encode(), LIMITS)


def rewrite(record: Record, payload: dict[str, Any]) -> Record:
    """``record`` with new content bytes and nothing else recomputed."""
    c = dataclasses.replace(record.content, payload=payload)
    return dataclasses.replace(record, content=c, content_bytes=c.encode(LIMITS))


def recheck(record: Record) -> Record:
    return dataclasses.replace(record, checksum=checksum_of(record.content_bytes))


def rework(record: Record, difficulty: int = DIFFICULTY) -> Record:
    return dataclasses.replace(record, nonce=work.solve(record.checksum, difficulty))


def relink(record: Record) -> Record:
    r = record
    return dataclasses.replace(r, link=link_of(r.prev, r.checksum, r.height, r.nonce, r.accepted, r.origin))


def forged_payload(record: Record) -> dict[str, Any]:
    """A changed payload whose new checksum the old nonce does not satisfy."""
    for i in range(1000):
        payload = {**record.content.payload, "text": f"forged {i}"}
        checksum = checksum_of(rewrite(record, payload).content_bytes)
        if not work.meets_difficulty(checksum, record.nonce, DIFFICULTY):
            return payload
    raise AssertionError("every forged payload met the difficulty")  # pragma: no cover


# --- a valid chain ------------------------------------------------------------------


def test_a_valid_chain_verifies(chain: list[Record], kit: Any) -> None:
    verifier = verify_bytes(r.encode() for r in chain)
    assert verifier.next_height == len(chain)
    assert verifier.prev == chain[-1].link
    assert verifier.rules == kit.rules(DIFFICULTY)


@pytest.mark.parametrize("difficulty", range(9))
def test_chains_at_every_small_difficulty_verify(kit: Any, difficulty: int) -> None:
    records = kit.chain(4, difficulty)
    assert verify(records).rules.difficulty == difficulty
    assert all(work.meets_difficulty(r.checksum, r.nonce, difficulty) for r in records)


def test_check_does_not_advance_on_failure(chain: list[Record]) -> None:
    verifier = verify(chain[:3])
    with pytest.raises(HeightGapError):
        verifier.feed(chain[4])
    assert (verifier.next_height, verifier.prev) == (3, chain[2].link)
    verifier.feed(chain[3])
    assert verifier.next_height == 4


# --- each tampering, and the error it gives ---------------------------------------------


def test_a_changed_content_byte_is_a_bad_checksum(chain: list[Record]) -> None:
    data = chain[3].encode()
    assert data.count(b"message 0003") == 1
    tampered = decode_record(data.replace(b"message 0003", b"massage 0003"), LIMITS)
    expect(BadChecksumError, [*chain[:3], tampered, *chain[4:]], 3)


def test_new_content_with_its_checksum_lacks_the_work(chain: list[Record]) -> None:
    tampered = through_bytes(recheck(rewrite(chain[3], forged_payload(chain[3]))))
    expect(InsufficientWorkError, [*chain[:3], tampered, *chain[4:]], 3)


def test_new_content_checksum_and_work_break_the_records_own_link(chain: list[Record]) -> None:
    tampered = through_bytes(rework(recheck(rewrite(chain[3], forged_payload(chain[3])))))
    error = expect(BadLinkError, [*chain[:3], tampered, *chain[4:]], 3)
    assert "does not match the record's fields" in str(error)


def test_a_fully_recomputed_record_breaks_the_next_records_prev(kit: Any, chain: list[Record]) -> None:
    tampered = through_bytes(relink(rework(recheck(rewrite(chain[3], forged_payload(chain[3]))))))
    verify_record(tampered, kit.rules(DIFFICULTY))  # valid on its own
    error = expect(BadLinkError, [*chain[:3], tampered, *chain[4:]], 4)
    assert "prev" in str(error)


def test_a_recomputed_head_is_not_caught_inside_one_copy(chain: list[Record]) -> None:
    """PROTOCOL.md 4: a rewritten head verifies; only comparing copies (its hash) shows it."""
    tampered = through_bytes(relink(rework(recheck(rewrite(chain[-1], forged_payload(chain[-1]))))))
    verifier = verify([*chain[:-1], tampered])
    assert verifier.prev != chain[-1].link


@pytest.mark.parametrize("field", ["height", "nonce", "accepted", "origin", "prev"])
def test_a_changed_placement_field_breaks_the_link(chain: list[Record], field: str) -> None:
    value = {"height": 3, "nonce": work.solve(chain[2].checksum, DIFFICULTY, chain[2].nonce + 1)}
    value |= {"accepted": chain[2].accepted + 1, "origin": "node-9", "prev": chain[0].link}
    tampered = dataclasses.replace(chain[2], **{field: value[field]})
    records = [*chain[:2], through_bytes(tampered), *chain[3:]]
    if field == "height":
        expect(HeightGapError, records, 3)
    else:
        expect(BadLinkError, records, 2)


def test_a_deleted_record_is_a_height_gap(chain: list[Record]) -> None:
    error = expect(HeightGapError, [*chain[:2], *chain[3:]], 3)
    assert "expected height 2" in str(error)


def test_swapped_records_are_a_height_gap(chain: list[Record]) -> None:
    expect(HeightGapError, [*chain[:2], chain[3], chain[2], *chain[4:]], 3)


def test_a_repeated_height_is_a_height_gap(chain: list[Record]) -> None:
    expect(HeightGapError, [*chain[:3], chain[2], *chain[3:]], 2)


def test_a_record_from_a_forked_copy_breaks_the_chain(kit: Any, chain: list[Record]) -> None:
    fork = dataclasses.replace(kit, t0=kit.t0 + 1).chain(4, DIFFICULTY)
    assert fork[2].link != chain[2].link
    expect(BadLinkError, [*chain[:2], fork[2], *chain[3:]], 2)


def test_a_record_of_another_ledger_is_refused(kit: Any, chain: list[Record]) -> None:
    other = kit.entry(3, DIFFICULTY, ledger="ledger-b")
    intruder = kit.extend(chain[2], other)
    expect(WrongLedgerError, [*chain[:3], intruder], 3)
    expect(WrongLedgerError, kit.chain(2, 0, ledger="ledger-b"), 0)


def test_an_unknown_kind_is_refused(kit: Any, chain: list[Record]) -> None:
    stray = kit.extend(chain[2], kit.entry(3, DIFFICULTY, kind="other"))
    error = expect(UnknownKindError, [*chain[:3], stray], 3)
    assert "'other'" in str(error)


def test_a_chain_must_start_with_a_genesis(kit: Any) -> None:
    note = kit.entry(1).place(0, ZERO_LINK, kit.t0, kit.origin)
    expect(BadGenesisError, [note], 0)


def test_a_genesis_prev_must_be_zero(kit: Any) -> None:
    genesis = kit.genesis_entry().place(0, b"\x01" * 32, kit.t0, kit.origin)
    error = expect(BadGenesisError, [genesis], 0)
    assert "zero" in str(error)


def test_a_second_genesis_is_refused(kit: Any, chain: list[Record]) -> None:
    second = kit.extend(chain[2], kit.genesis_entry(DIFFICULTY, request_id="create-2"))
    expect(BadGenesisError, [*chain[:3], second], 3)


def test_a_genesis_with_bad_rules_is_refused(kit: Any) -> None:
    content = dataclasses.replace(
        kit.genesis_entry().content, payload={"difficulty": 65, "kinds": ["note"], "rules": {}}
    )
    genesis = Entry.prepare(content, 0, LIMITS).place(0, ZERO_LINK, kit.t0, kit.origin)
    expect(BadGenesisError, [genesis], 0)


def test_the_genesis_needs_the_work_it_states(kit: Any, chain: list[Record]) -> None:
    lazy = chain[0]
    nonce = next(n for n in range(10_000) if not work.meets_difficulty(lazy.checksum, n, DIFFICULTY))
    expect(InsufficientWorkError, [relink(dataclasses.replace(lazy, nonce=nonce))], 0)


# --- which failure comes first (PROTOCOL.md 4 fixes the order) -------------------------------


def test_the_first_failure_in_protocol_order_is_reported(kit: Any, chain: list[Record]) -> None:
    other = kit.extend(chain[2], kit.entry(9, DIFFICULTY, ledger="ledger-b"))
    expect(WrongLedgerError, [*chain[:3], dataclasses.replace(other, height=7)], 7)  # ledger before height
    bad_everything = dataclasses.replace(rewrite(chain[3], {"x": 1}), nonce=0, link=bytes(32))
    expect(BadChecksumError, [*chain[:3], bad_everything], 3)  # checksum before work and link
    stray = kit.extend(chain[2], dataclasses.replace(kit.entry(3, 0, kind="other"), nonce=0))
    assert not work.meets_difficulty(stray.checksum, stray.nonce, DIFFICULTY)
    expect(UnknownKindError, [*chain[:3], stray], 3)  # kind before work


def test_verify_entry_checks_the_kind_when_the_height_is_unknown(kit: Any) -> None:
    rules = kit.rules(0)
    with pytest.raises(UnknownKindError):
        verify_entry(kit.entry(1, kind="other"), rules)
    verify_entry(kit.genesis_entry(), rules, 0)
    with pytest.raises(UnknownKindError):
        verify_entry(kit.genesis_entry(), rules)


# --- resuming ---------------------------------------------------------------------------


def test_after_resumes_from_a_checked_record(chain: list[Record], kit: Any) -> None:
    rules = kit.rules(DIFFICULTY)
    verifier = ChainVerifier.after("ledger-a", 2, chain[2].link, rules, LIMITS)
    for record in chain[3:]:
        verifier.feed(record)
    assert (verifier.next_height, verifier.prev) == (len(chain), chain[-1].link)


def test_after_with_a_wrong_link_or_height_fails(chain: list[Record], kit: Any) -> None:
    rules = kit.rules(DIFFICULTY)
    with pytest.raises(BadLinkError) as info:
        ChainVerifier.after("ledger-a", 2, chain[1].link, rules, LIMITS).feed(chain[3])
    assert info.value.height == 3
    with pytest.raises(HeightGapError):
        ChainVerifier.after("ledger-a", 3, chain[2].link, rules, LIMITS).feed(chain[3])
    with pytest.raises(BadGenesisError):
        ChainVerifier.after("ledger-a", 2, chain[2].link, rules, LIMITS).feed(
            kit.extend(chain[2], kit.genesis_entry(request_id="again"))
        )


def test_after_uses_the_rules_it_is_given(chain: list[Record], kit: Any) -> None:
    stricter = kit.rules(DIFFICULTY + 16)
    with pytest.raises(InsufficientWorkError):
        ChainVerifier.after("ledger-a", 2, chain[2].link, stricter, LIMITS).feed(chain[3])


# --- properties ---------------------------------------------------------------------------


def flip(data: bytes, bit: int) -> bytes:
    mutated = bytearray(data)
    mutated[bit // 8] ^= 1 << (bit % 8)
    return bytes(mutated)


def assert_detected(datas: list[bytes], head: bytes) -> None:
    """Decoding and verifying ``datas`` raises one of our errors, or ends at another head."""
    try:
        verifier = verify_bytes(datas)
    except VledgerError:
        return
    raise AssertionError(f"undetected: verified to {verifier.prev.hex()} (original head {head.hex()})")


def test_every_single_bit_flip_of_a_small_chain_is_detected(kit: Any) -> None:
    records = kit.chain(3, 4)
    datas = [r.encode() for r in records]
    for i, data in enumerate(datas):
        for bit in range(len(data) * 8):
            assert_detected([*datas[:i], flip(data, bit), *datas[i + 1 :]], records[-1].link)


payload_values = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=6) | st.binary(max_size=6)
)
payloads = st.dictionaries(st.text(max_size=4), payload_values, max_size=3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payloads, min_size=1, max_size=4), st.integers(0, 6), st.data())
def test_any_bit_flip_in_any_record_is_detected(
    kit: Any, payload_list: list[dict[str, Any]], difficulty: int, data: st.DataObject
) -> None:
    records = kit.chain(1, difficulty)
    for i, payload in enumerate(payload_list, start=1):
        content = dataclasses.replace(kit.content(i), payload=payload)
        records.append(kit.extend(records[-1], Entry.prepare(content, difficulty, LIMITS)))
    datas = [r.encode() for r in records]
    verify_bytes(datas)
    index = data.draw(st.integers(0, len(datas) - 1), label="record")
    bit = data.draw(st.integers(0, len(datas[index]) * 8 - 1), label="bit")
    assert_detected([*datas[:index], flip(datas[index], bit), *datas[index + 1 :]], records[-1].link)


@settings(max_examples=300)
@given(st.lists(st.integers(0, 5), max_size=8))
def test_only_the_original_order_verifies(chain: list[Record], order: list[int]) -> None:
    """Deleting, repeating, swapping or reordering records: a height gap, or (only for a
    truncated tail, which one copy cannot show) a head that is not the original head."""
    records = chain
    if order == list(range(len(order))):
        verifier = verify(records[i] for i in order)
        assert verifier.next_height == len(order)
        assert (verifier.prev == records[-1].link) == (len(order) == len(records))
        return
    first_wrong = next(k for k, i in enumerate(order) if i != k)
    with pytest.raises(HeightGapError) as info:
        verify(records[i] for i in order)
    assert info.value.height == order[first_wrong]


def test_a_record_whose_content_is_not_its_content_bytes_is_a_bad_checksum(chain: list[Record]) -> None:
    # The in-memory record says one thing, its bytes another: the bytes are what is checked.
    lying = dataclasses.replace(chain[1], content_bytes=chain[2].content_bytes)
    expect(BadChecksumError, [chain[0], lying], 1)
