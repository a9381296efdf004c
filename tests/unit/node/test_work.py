"""Proof of work (docs/PROTOCOL.md, 2.2), checked against a brute-force oracle written from the spec."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vledger.node import work

CHECKSUMS = [hashlib.sha256(bytes([i])).digest() for i in range(4)]
nonces = st.integers(min_value=0, max_value=work.MAX_NONCE)
checksums = st.binary(min_size=32, max_size=32)


def leading_zero_bits(checksum: bytes, nonce: int) -> int:
    digest = hashlib.sha256(checksum + nonce.to_bytes(8, "big")).digest()
    return 256 - int.from_bytes(digest, "big").bit_length()


def nonce_with_exactly(checksum: bytes, bits: int) -> int:
    return next(n for n in itertools.count() if leading_zero_bits(checksum, n) == bits)


@pytest.mark.parametrize("checksum", CHECKSUMS)
@pytest.mark.parametrize("difficulty", range(9))
def test_solve_returns_the_smallest_nonce_that_meets_the_difficulty(checksum: bytes, difficulty: int) -> None:
    expected = next(n for n in itertools.count() if leading_zero_bits(checksum, n) >= difficulty)
    assert work.solve(checksum, difficulty) == expected


@pytest.mark.parametrize("difficulty", [0, 4, 8])
def test_solve_starts_at_start(difficulty: int) -> None:
    checksum = CHECKSUMS[0]
    first = work.solve(checksum, difficulty)
    second = work.solve(checksum, difficulty, start=first + 1)
    assert second > first
    assert all(leading_zero_bits(checksum, n) < difficulty for n in range(first + 1, second))
    assert leading_zero_bits(checksum, second) >= difficulty


def test_solve_at_difficulty_zero_returns_start() -> None:
    assert work.solve(CHECKSUMS[1], 0) == 0
    assert work.solve(CHECKSUMS[1], 0, start=41) == 41


@pytest.mark.parametrize("difficulty", [-1, work.MAX_DIFFICULTY + 1, 256])
def test_solve_refuses_difficulty_out_of_range(difficulty: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        work.solve(CHECKSUMS[0], difficulty)


@settings(max_examples=100)
@given(checksums, nonces)
def test_difficulty_zero_accepts_every_nonce(checksum: bytes, nonce: int) -> None:
    assert work.meets_difficulty(checksum, nonce, 0)


@pytest.mark.parametrize("bits", range(11))
def test_a_digest_with_exactly_d_zero_bits_meets_d_and_not_d_plus_one(bits: int) -> None:
    checksum = CHECKSUMS[2]
    nonce = nonce_with_exactly(checksum, bits)
    assert work.meets_difficulty(checksum, nonce, bits)
    assert not work.meets_difficulty(checksum, nonce, bits + 1)
    assert all(work.meets_difficulty(checksum, nonce, d) for d in range(bits + 1))


@settings(max_examples=200)
@given(checksums, nonces, st.integers(min_value=0, max_value=work.MAX_DIFFICULTY))
def test_meets_difficulty_agrees_with_counting_zero_bits(checksum: bytes, nonce: int, difficulty: int) -> None:
    assert work.meets_difficulty(checksum, nonce, difficulty) == (leading_zero_bits(checksum, nonce) >= difficulty)


@pytest.mark.parametrize("nonce", [0, 1, 2**32, work.MAX_NONCE])
def test_work_digest_is_sha256_of_checksum_and_u64be_nonce(nonce: int) -> None:
    checksum = CHECKSUMS[3]
    assert work.work_digest(checksum, nonce) == hashlib.sha256(checksum + nonce.to_bytes(8, "big")).digest()


def test_work_digest_refuses_nonce_past_64_bits() -> None:
    with pytest.raises(OverflowError):
        work.work_digest(CHECKSUMS[0], work.MAX_NONCE + 1)
