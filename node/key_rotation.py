"""Checkpoint key rotation: which key signs a ledger's checkpoint of a given size.

A ledger's genesis pins its first checkpoint key (``rules.checkpoint_key``, node/witness.py).
A record of kind ``checkpoint_key`` on the ledger itself names the next one: its payload is
the new vkey and the Ed25519 signature, by the key in force before it, of a domain-separated
message naming the origin, the old key and the new one (docs/PROTOCOL.md section 13.8). A
rotation at height ``h`` hands over every checkpoint of size ``> h``: the tree that first
holds the rotation record is signed by the new key. So the key in force at size ``n`` is the
one named by the last rotation below height ``n`` (the genesis key when there is none), and
whoever holds the genesis and the rotation records follows the chain with no other trust.

Replays are refused by the chain itself: a rotation must be signed by the key in force at its
height, and a key that was ever in force can never be named again, so one rotation's
signature can never make a second valid rotation, here or (its origin is signed) elsewhere.

Pure: records and note bytes in, a :class:`KeyChain` or a verified checkpoint out, a precise
error of node/errors.py otherwise.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .epoch import STANDBY_KEY_FIELD
from .errors import (
    NoteError,
    NoteKeyError,
    RetiredKeyError,
    RotationError,
    StandbyRotationError,
    UnverifiedNoteError,
    WrongOriginError,
)
from .ledger import LedgerRules
from .note import (
    ALG_ED25519,
    MAX_NOTE_BYTES,
    SignerKey,
    VerifiedCheckpoint,
    VerifierKey,
    origin_for,
    parse_checkpoint,
    parse_note,
    parse_verifier_key,
    verify_checkpoint,
)
from .record import Record
from .witness import PINNED_KEY_FIELD, CheckpointKeys, SignedCheckpoint, pinned_key

ROTATION_KIND = "checkpoint_key"  # the record kind of a rotation; a ledger that may rotate lists it
ROTATION_HEADER = "vledger/checkpoint-key-rotation/v1"
ROTATION_KEYS = ("key", "signature")  # the payload's fields, exactly
SIGNATURE_BYTES = 64
_ROTATION_MARK = ROTATION_KIND.encode("ascii")


def rotation_message(origin: str, old: VerifierKey, new: VerifierKey) -> bytes:
    """The bytes the old key signs: header, origin, old vkey, new vkey, each line ending in 0x0A."""
    return f"{ROTATION_HEADER}\n{origin}\n{old.encode()}\n{new.encode()}\n".encode()


def rotation_payload(old: SignerKey, new: VerifierKey) -> dict[str, Any]:
    """The payload of the record that rotates from ``old`` (the key in force) to ``new``.

    Raises NoteKeyError when either is not an Ed25519 note key (type 0x01) or their names differ.
    """
    if old.alg != ALG_ED25519 or new.alg != ALG_ED25519:
        raise NoteKeyError("a checkpoint key is an Ed25519 note key (type 0x01)")
    if old.name != new.name:
        raise NoteKeyError(f"the new checkpoint key must be named {old.name!r}, like the old one")
    signature = old.sign_raw(rotation_message(old.name, old.verifier(), new))
    return {"key": new.encode(), "signature": base64.b64encode(signature).decode("ascii")}


def pinned_checkpoint_key(ledger: str, rules: LedgerRules) -> VerifierKey | None:
    """The checkpoint key ``ledger``'s genesis rules pin, or None when they pin none. The
    cluster is read from the key's own name (``<cluster>/<ledger>``). Raises BadGenesisError
    when the field is not an Ed25519 note vkey of that name."""
    value = rules.rules.get(PINNED_KEY_FIELD)
    if value is None:
        return None
    cluster = value.partition("+")[0].rpartition("/")[0] if isinstance(value, str) else ""
    return pinned_key(ledger, rules, cluster)


def hands_over(rules: LedgerRules) -> bool:
    """Whether a genesis of ``rules`` pins a standby key (10.9): such a ledger's checkpoints are
    signed by the two keys it pins, and no rotation names a third (13.8)."""
    return STANDBY_KEY_FIELD in rules.rules


def refuse_standby_rotation(record: Record) -> StandbyRotationError:
    """The error of a rotation record on a ledger that hands over (:func:`hands_over`): a
    rotation there would move the key in force while 10.9 says no other key than the two
    pinned ever signs its checkpoints, and a checker reading 13.8 alone would follow it."""
    return StandbyRotationError(
        "the genesis pins a standby_key: the ledger's checkpoint keys are the two it pins, and it never rotates",
        ledger=record.content.ledger,
        height=record.height,
    )


def may_rotate(data: bytes) -> bool:
    """False when the record bytes ``data`` cannot be a rotation (its kind's name is not in
    them): lets a scan skip decoding nearly every record."""
    return _ROTATION_MARK in data


@dataclass(frozen=True, slots=True)
class KeyChain:
    """A ledger's checkpoint keys: ``keys[0]`` pinned in its genesis, ``keys[i]`` named by the
    rotation record at ``heights[i - 1]`` (heights increasing). ``origin`` is the keys' name."""

    ledger: str
    keys: tuple[VerifierKey, ...]
    heights: tuple[int, ...] = ()
    # Its genesis pins a standby key (:func:`hands_over`): every rotation record is refused.
    standby: bool = False

    @property
    def origin(self) -> str:
        return self.keys[0].name

    @property
    def current(self) -> VerifierKey:
        """The key named last: the one in force past the last rotation."""
        return self.keys[-1]

    @classmethod
    def from_rules(cls, ledger: str, rules: LedgerRules) -> KeyChain | None:
        """The chain of a ledger with no rotation yet, or None when its genesis pins no key.
        Raises BadGenesisError for a pinned value that is not a key of the ledger's origin."""
        key = pinned_checkpoint_key(ledger, rules)
        return None if key is None else cls(ledger, (key,), standby=hands_over(rules))

    def key_for_size(self, size: int) -> VerifierKey:
        """The key in force for a checkpoint of ``size`` records: the one named by the last
        rotation at a height below ``size``."""
        return self.keys[bisect.bisect_left(self.heights, size)]

    def after(self, record: Record) -> KeyChain:
        """This chain once ``record`` (of this ledger, above every rotation held) is read: the
        same chain unless it is a rotation, which must be valid.

        Raises StandbyRotationError [standby_rotation] for any rotation record of a ledger whose
        genesis pins a standby key, RotationError [bad_rotation] for one whose payload is not exactly
        ``key`` and ``signature``, whose key is not a vkey (type 0x01) of this origin or was in
        force before, whose signature is not the canonical base64 of 64 bytes, or does not
        verify with the key in force at its height over :func:`rotation_message`.
        """
        if record.content.kind != ROTATION_KIND:
            return self
        if self.standby:
            raise refuse_standby_rotation(record)
        height, ledger = record.height, self.ledger
        if self.heights and height <= self.heights[-1]:
            raise RotationError(f"a rotation at height {height} after one at {self.heights[-1]}", ledger=ledger)
        payload = record.content.payload
        if sorted(payload) != list(ROTATION_KEYS):
            raise RotationError(
                f"a rotation's payload has exactly the fields {list(ROTATION_KEYS)}", ledger=ledger, height=height
            )
        try:
            new = parse_verifier_key(payload["key"]) if isinstance(payload["key"], str) else None
        except NoteKeyError as e:
            raise RotationError(f"the new key: {e.message}", ledger=ledger, height=height) from None
        if new is None or new.alg != ALG_ED25519 or new.name != self.origin:
            raise RotationError(
                f"the new key must be an Ed25519 note vkey named {self.origin!r}", ledger=ledger, height=height
            )
        if any(k.public_key == new.public_key for k in self.keys):
            raise RotationError(
                "the new key was in force before: a key is never used again", ledger=ledger, height=height
            )
        signature = _signature(payload["signature"])
        if signature is None:
            raise RotationError(
                f"the signature must be the canonical base64 of {SIGNATURE_BYTES} bytes", ledger=ledger, height=height
            )
        old = self.current
        if not old.verify_raw(rotation_message(self.origin, old, new), signature):
            raise RotationError(
                f"the rotation is not signed by the key in force {old.name}+{old.key_id:08x}",
                ledger=ledger,
                height=height,
            )
        return dataclasses.replace(self, keys=(*self.keys, new), heights=(*self.heights, height))

    def following(self, records: Iterable[Record]) -> KeyChain:
        """This chain after each of ``records`` in height order (see :meth:`after`)."""
        chain = self
        for record in records:
            chain = chain.after(record)
        return chain

    def check(self, data: bytes, witnesses: Iterable[VerifierKey] = (), quorum: int = 0) -> VerifiedCheckpoint:
        """``data`` as a checkpoint of this ledger signed by the key in force at its size
        (13.5 with that key, the witness keys and ``quorum``; the origin is the keys' name).

        Raises what ``verify_checkpoint`` raises, and RetiredKeyError [retired_key] when the
        note is instead validly signed by another key of the chain (a retired key past its
        rotation, or a later key before its own): the caller keeps such a note as evidence.
        """
        note = parse_note(data)
        checkpoint = parse_checkpoint(note.text)
        size = checkpoint.size
        expected = self.key_for_size(size)
        try:
            # Parsed once: a replica catching up checks every checkpoint note of every page.
            return verify_checkpoint(data, expected, witnesses, quorum, origin=self.origin, parsed=(note, checkpoint))
        except UnverifiedNoteError:
            for other in self.keys:
                if other.public_key != expected.public_key and _signed_by(data, other, self.origin):
                    raise RetiredKeyError(
                        f"checkpoint {self.origin} at size {size} is signed by {other.name}+{other.key_id:08x}, "
                        f"not by the key in force at that size ({expected.name}+{expected.key_id:08x})"
                    ) from None
            raise


def _signed_by(data: bytes, key: VerifierKey, origin: str) -> bool:
    try:
        verify_checkpoint(data, key, origin=origin)
    except (UnverifiedNoteError, NoteKeyError):
        return False
    except Exception:  # any other refusal: a signature by that key did not verify either
        return False
    return True


def _signature(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    if len(raw) != SIGNATURE_BYTES or base64.b64encode(raw).decode("ascii") != value:
        return None
    return raw


def chain_of(ledger: str, rules: LedgerRules, records: Iterable[Record]) -> KeyChain | None:
    """The key chain of ``ledger`` (genesis ``rules``) after ``records`` (above its genesis,
    in height order), or None when its genesis pins no key. Raises RotationError when one of
    them is a record of kind ``checkpoint_key`` and the genesis pins no key, or it is no
    valid rotation; BadGenesisError for a pinned value that is not a key."""
    chain = KeyChain.from_rules(ledger, rules)
    if chain is None:
        for record in records:
            if record.content.kind == ROTATION_KIND:
                raise RotationError("the genesis pins no checkpoint key to rotate", ledger=ledger, height=record.height)
        return None
    return chain.following(records)


class ChainedCheckpointKeys(CheckpointKeys):
    """:class:`CheckpointKeys` that follow each ledger's key chain: a checkpoint must be signed
    by the key in force at its size. ``chain_of(ledger)`` is the chain as far as the caller
    holds the ledger (None: no key known)."""

    def __init__(self, cluster: str, chain_of: Callable[[str], KeyChain | None]) -> None:
        super().__init__(cluster, lambda ledger: _current(chain_of(ledger)))
        self.chain_of = chain_of

    def check(self, ledger: str, data: bytes) -> SignedCheckpoint:
        """The checkpoint ``data`` holds, once the key in force at its size verified it.

        Raises NoteKeyError when no key is known, NoteError (or a leaf) as
        :meth:`CheckpointKeys.check`, and RetiredKeyError [retired_key] for a checkpoint signed
        by another key of the chain than the one in force at its size (evidence)."""
        chain = self.chain_of(ledger)
        if chain is None:
            raise NoteKeyError(f"no checkpoint key of ledger {ledger!r} to check its checkpoints with")
        if not isinstance(data, bytes) or len(data) > MAX_NOTE_BYTES:
            raise NoteError(f"a checkpoint is a note of at most {MAX_NOTE_BYTES} bytes")
        origin = origin_for(self.cluster, ledger)
        if chain.origin != origin:
            raise WrongOriginError(f"the checkpoint key of {ledger!r} is named {chain.origin!r}, not {origin!r}")
        verified = chain.check(data)
        return SignedCheckpoint(ledger, verified.checkpoint.size, verified.checkpoint.root, data)

    def key_for(self, ledger: str, data: bytes) -> VerifierKey | None:
        """The key that must have signed the checkpoint note ``data`` (the one in force at the
        size it states, unverified), or None when none is known or it is no checkpoint."""
        chain = self.chain_of(ledger)
        if chain is None:
            return None
        try:
            return chain.key_for_size(parse_checkpoint(parse_note(data).text).size)
        except NoteError:
            return None


def _current(chain: KeyChain | None) -> VerifierKey | None:
    return None if chain is None else chain.current
