"""Proof of work: cheap to check, costly to make, so that writers are rate-limited.

A nonce meets a difficulty of d bits when SHA-256(checksum || u64be(nonce)) starts with at
least d zero bits (docs/PROTOCOL.md, "Proof of work").
"""

from __future__ import annotations

import hashlib

MAX_DIFFICULTY = 64
MAX_NONCE = 2**64 - 1


def work_digest(checksum: bytes, nonce: int) -> bytes:
    return hashlib.sha256(checksum + nonce.to_bytes(8, "big")).digest()


def _target(difficulty: int) -> bytes:
    # A digest meets the difficulty exactly when, read as a big-endian number, it is below
    # 2**(256 - d); comparing 32-byte strings compares those numbers.
    return (1 << (256 - difficulty)).to_bytes(32, "big")


# Every difficulty a ledger may set, worked out once rather than for each record checked.
_TARGETS = {difficulty: _target(difficulty) for difficulty in range(1, MAX_DIFFICULTY + 1)}


def target_of(difficulty: int) -> bytes:
    """The 32 bytes a work digest must be below to meet ``difficulty`` (1..MAX_DIFFICULTY) bits."""
    return _TARGETS.get(difficulty) or _target(difficulty)


def meets_difficulty(checksum: bytes, nonce: int, difficulty: int) -> bool:
    if difficulty <= 0:
        return True
    target = target_of(difficulty)
    return work_digest(checksum, nonce) < target


def solve(checksum: bytes, difficulty: int, start: int = 0) -> int:
    """The smallest nonce >= start that meets the difficulty (2**difficulty tries on average)."""
    if not 0 <= difficulty <= MAX_DIFFICULTY:
        raise ValueError(f"difficulty {difficulty} is outside 0..{MAX_DIFFICULTY}")
    if difficulty == 0:
        return start
    target = _target(difficulty)
    base = hashlib.sha256(checksum)
    for nonce in range(start, MAX_NONCE + 1):
        h = base.copy()
        h.update(nonce.to_bytes(8, "big"))
        if h.digest() < target:
            return nonce
    raise ValueError("no nonce meets the difficulty")  # pragma: no cover - 2**64 tries
