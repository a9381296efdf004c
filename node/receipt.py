"""Receipts: one record, proven to stand in a ledger that a home signed and witnesses cosigned.

A receipt holds the record's bytes, its index (height), an inclusion proof and a cosigned
checkpoint note. Anyone holding the ledger's genesis record (or the checkpoint key it pins)
checks it offline, with no node to ask (docs/PROTOCOL.md section 14): the record's own
checks, its leaf hash, the inclusion proof to the checkpoint's root, the home's signature
and, given witness keys, a quorum of their cosignatures. A receipt for a forked view (a
checkpoint not signed by the pinned key, or a root the record is not in) is refused.

Names: :class:`Receipt` is this file form; ``vledger.node.store.Receipt`` is what a node
answers a ``put`` with (the record's height and hash, before any proof exists).
Pure: bytes and keys in, a dataclass out, a precise error of node/errors.py otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..config.settings import PROTOCOL_LIMITS
from .epoch import STANDBY_KEY_FIELD, epoch_claim, epoch_key, require_witness
from .errors import (
    BadChecksumError,
    BadEpochError,
    BadLinkError,
    ReceiptError,
    UnverifiedNoteError,
    WrongLedgerError,
    WrongOriginError,
)
from .json_values import parse_json
from .key_rotation import ROTATION_KIND, KeyChain, pinned_checkpoint_key
from .ledger import LedgerRules
from .node_key_rotation import KeyHistory
from .node_keys import (
    NodeKeys,
    ProvenRecord,
    admin_origin_cluster,
    b64,
    check_cosignatures_in_force,
    merged_rotations,
    parse_node_keys,
    proof_hashes,
    proven_records,
    rotated_witness_keys,
    unb64,
    witness_histories,
)
from .note import (
    MAX_NOTE_BYTES,
    VerifiedCheckpoint,
    VerifierKey,
    verify_checkpoint,
)
from .outside import OutsideWitnesses, check_witnessed, outside_witnesses
from .record import Record, checksum_of, decode_record, link_of
from .rules.admin import ADMIN_LEDGER
from .tree import HASH_SIZE, leaf_hash, verify_inclusion
from .verify import ChainVerifier
from .witness import PINNED_KEY_FIELD, pinned_key

RECEIPT_VERSION = 1
RECEIPT_KEYS = ("v", "ledger", "index", "hash", "record", "proof", "checkpoint")
ROTATIONS_KEY = "rotations"  # after RECEIPT_KEYS, only when the checkpoint's key is not the genesis key
NODE_KEYS_KEY = "node_keys"  # last, only when a witness's Ed25519 key rotated (16.6)
MAX_ROTATIONS = 32
RotationProof = ProvenRecord  # a key rotation record (13.8) at its index, proven in the receipt's checkpoint
# The largest receipt: a record (81,920 bytes, 109,228 in base64), 64 proof hashes (46
# characters each with quotes and comma) and a note (each newline escaped as two bytes).
MAX_RECEIPT_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Receipt:
    """A receipt: ``record`` (its bytes, 2.4) at ``index`` of ``ledger``, the inclusion
    ``proof`` (leaf side first) and the cosigned ``checkpoint`` note the proof leads to."""

    ledger: str
    index: int
    hash: bytes  # the record's link as the receipt states it; verify_receipt compares them
    record: bytes
    proof: tuple[bytes, ...]
    checkpoint: bytes
    rotations: tuple[RotationProof, ...] = ()  # the key chain from the genesis key to the checkpoint's
    node_keys: NodeKeys | None = None  # the witnesses' rotated Ed25519 keys, proven on the admin ledger

    @classmethod
    def of(
        cls,
        record: bytes,
        proof: Sequence[bytes],
        checkpoint: bytes,
        rotations: Sequence[RotationProof] = (),
        node_keys: NodeKeys | None = None,
    ) -> Receipt:
        """The receipt of ``record`` (bytes of a valid record: its ledger, height and link
        are read from it). Raises the record's structure error when it is not one."""
        decoded = decode_record(record, PROTOCOL_LIMITS)
        return cls(
            decoded.ledger, decoded.height, decoded.link, record, tuple(proof), checkpoint, tuple(rotations), node_keys
        )

    def encode(self) -> bytes:
        """The receipt file's bytes: one JSON object, keys in RECEIPT_KEYS order (then
        ``rotations`` when there are any, then ``node_keys`` when given), no spaces, non-ASCII
        characters as they are, then a newline (docs/PROTOCOL.md section 14.2)."""
        return _encode(
            self.ledger,
            self.index,
            self.hash.hex(),
            self.record,
            self.proof,
            self.checkpoint,
            self.rotations,
            self.node_keys,
        )


def _encode(
    ledger: str,
    index: int,
    hash_hex: str,
    record: bytes,
    proof: Sequence[bytes],
    note: bytes,
    rotations: Sequence[RotationProof] = (),
    node_keys: NodeKeys | None = None,
) -> bytes:
    obj: dict[str, Any] = {
        "v": RECEIPT_VERSION,
        "ledger": ledger,
        "index": index,
        "hash": hash_hex,
        "record": b64(record),
        "proof": [b64(p) for p in proof],
        "checkpoint": note.decode("utf-8"),
    }
    if rotations:
        obj[ROTATIONS_KEY] = [r.json() for r in rotations]
    if node_keys is not None:
        obj[NODE_KEYS_KEY] = node_keys.json()
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


_KEY_ORDERS = (
    RECEIPT_KEYS,
    (*RECEIPT_KEYS, ROTATIONS_KEY),
    (*RECEIPT_KEYS, NODE_KEYS_KEY),
    (*RECEIPT_KEYS, ROTATIONS_KEY, NODE_KEYS_KEY),
)


def _refuse_constant(name: str) -> Any:
    raise ReceiptError(f"receipt: {name} is not JSON")


def parse_receipt(data: bytes) -> Receipt:
    """Read a receipt file. Syntax only: nothing is verified (use :func:`verify_receipt`).

    Raises ReceiptError [bad_receipt] unless ``data`` is at most MAX_RECEIPT_BYTES of UTF-8
    JSON, an object with exactly the keys of RECEIPT_KEYS in that order, ``v`` 1, ``index`` an
    integer 0..2**63-1, ``hash`` 64 lower-case hex, ``record`` and each ``proof`` item
    canonical base64 (at most 64 items), ``checkpoint`` a string, and ``data`` is byte for
    byte the encoding :meth:`Receipt.encode` gives of what it holds (a newline at the end).
    """
    if not isinstance(data, bytes) or len(data) > MAX_RECEIPT_BYTES:
        raise ReceiptError(f"receipt: a receipt file is at most {MAX_RECEIPT_BYTES} bytes")
    try:
        obj = parse_json(data.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ReceiptError("receipt: the file is not UTF-8 JSON") from None
    if not isinstance(obj, dict) or tuple(obj) not in _KEY_ORDERS:
        raise ReceiptError(
            f"receipt: an object with exactly the keys {', '.join(RECEIPT_KEYS)} (then {ROTATIONS_KEY}, "
            f"{NODE_KEYS_KEY}, each when given), in that order"
        )
    if type(obj["v"]) is not int or obj["v"] != RECEIPT_VERSION:
        raise ReceiptError(f"receipt: v must be {RECEIPT_VERSION}")
    ledger, index, hash_hex = obj["ledger"], obj["index"], obj["hash"]
    if not isinstance(ledger, str) or not ledger:
        raise ReceiptError("receipt: ledger must be a ledger name")
    if type(index) is not int or not 0 <= index <= 2**63 - 1:
        raise ReceiptError("receipt: index must be an integer 0..2**63-1")
    if not isinstance(hash_hex, str) or len(hash_hex) != 2 * HASH_SIZE or hash_hex.strip("0123456789abcdef"):
        raise ReceiptError("receipt: hash must be 64 lower-case hex characters")
    record = unb64(obj["record"], "record")
    proof = obj["proof"]
    hashes = proof_hashes(proof, "proof")
    rotations = () if ROTATIONS_KEY not in obj else proven_records(obj[ROTATIONS_KEY], "rotation", MAX_ROTATIONS)
    node_keys = None if NODE_KEYS_KEY not in obj else parse_node_keys(obj[NODE_KEYS_KEY])
    note = obj["checkpoint"]
    if not isinstance(note, str) or len(note.encode("utf-8", "surrogatepass")) > MAX_NOTE_BYTES:
        raise ReceiptError(f"receipt: checkpoint must be a note of at most {MAX_NOTE_BYTES} bytes")
    try:
        note_bytes = note.encode("utf-8")
    except UnicodeEncodeError:
        raise ReceiptError("receipt: checkpoint is not UTF-8 text") from None
    if _encode(ledger, index, hash_hex, record, hashes, note_bytes, rotations, node_keys) != data:
        raise ReceiptError("receipt: the file is not in its canonical form (key order, spacing, escapes, newline)")
    return Receipt(ledger, index, bytes.fromhex(hash_hex), record, hashes, note_bytes, rotations, node_keys)


@dataclass(frozen=True, slots=True)
class ReceiptKeys:
    """What a receipt is checked with: the ledger's checkpoint key (type 0x01), trusted witness
    keys (type 0x04), how many of them must have cosigned, the genesis rules when known, and
    the outside witnesses that genesis lists (a quorum of them must have cosigned too)."""

    log_key: VerifierKey
    witnesses: tuple[VerifierKey, ...] = ()
    quorum: int = 0
    genesis: Record | None = None
    outside: OutsideWitnesses | None = None
    standby_key: VerifierKey | None = None  # the standby's key the genesis pins (10.9), if any
    admin_key: VerifierKey | None = None  # the admin ledger's checkpoint key: follows rotated witness keys (16.6)
    # The checker's own node-key evidence (``vledger receipt keys``' --node-keys): the rotations
    # it knows of, counted whatever a receipt carries or leaves out (14.3 step 6).
    node_keys: NodeKeys | None = None

    @property
    def trusted(self) -> tuple[VerifierKey, ...]:
        """Every witness key a head's age is judged over (PROTOCOL 11.4, 15.4 step 8): the
        caller's and the outside witnesses the genesis lists, as the gateway and the pages count
        them; a reader counting the caller's alone called a live head cosigned by a majority of
        these stale (outsider o8 J4)."""
        return (*self.witnesses, *(self.outside.keys if self.outside is not None else ()))

    def key_chain(self, ledger: str) -> KeyChain:
        """The key chain of ``ledger`` before any rotation: the genesis key, which no rotation
        may follow when the genesis pins a standby key too (13.8, 10.9)."""
        return KeyChain(ledger, (self.log_key,), standby=self.standby_key is not None)

    def following(self, node_keys: NodeKeys | None) -> tuple[ReceiptKeys, dict[str, KeyHistory]]:
        """These keys with the witnesses' later generations that ``node_keys`` (a receipt's) and
        the keys' own :attr:`node_keys` prove (none without evidence or without ``admin_key``),
        and those witnesses' key histories by name.

        Raises WrongOriginError [wrong_origin] when ``admin_key`` is not ``<cluster>/admin`` of
        the checkpoint key's cluster, and what :func:`merged_rotations` raises.
        """
        evidence = [one for one in (self.node_keys, node_keys) if one is not None]
        if not evidence or self.admin_key is None:
            return self, {}
        if admin_origin_cluster(self.admin_key) != self.log_key.name.rpartition("/")[0]:
            raise WrongOriginError(
                f"the admin key {self.admin_key.name!r} is of another cluster than {self.log_key.name!r}"
            )
        histories = witness_histories(self.witnesses, merged_rotations(evidence, self.admin_key))
        return replace(self, witnesses=(*self.witnesses, *rotated_witness_keys(histories))), histories


def keys_from_genesis(
    genesis: bytes,
    ledger: str,
    witnesses: Iterable[VerifierKey] = (),
    quorum: int = 0,
    admin_key: VerifierKey | None = None,
) -> ReceiptKeys:
    """The keys a ledger's genesis record pins, to check its receipts with; for the admin
    ledger, whose genesis pins none by rule (16.1), ``admin_key`` (the anchors' admin line,
    15.5: its home's key, which signs its checkpoints), when given.

    Raises the record's own error when ``genesis`` is not a valid genesis record of
    ``ledger`` (section 4 at height 0), BadGenesisError when its pinned checkpoint key is
    not an Ed25519 note key named ``<cluster>/<ledger>``, and ReceiptError when it pins none
    (and it is not the admin ledger's given ``admin_key``).
    """
    record = decode_record(genesis, PROTOCOL_LIMITS)
    rules = ChainVerifier(ledger, PROTOCOL_LIMITS).check(record)
    key = pinned_checkpoint_key(ledger, rules)
    if key is None and admin_key is not None and ledger == ADMIN_LEDGER and rules.rules.get("type") == "admin":
        return ReceiptKeys(admin_key, tuple(witnesses), quorum, record, admin_key=admin_key)
    if key is None:
        raise ReceiptError(
            f"the genesis of {ledger!r} pins no checkpoint key (rules.{PINNED_KEY_FIELD}); give the key explicitly"
        )
    cluster = key.name.rpartition("/")[0]
    standby = pinned_key(ledger, rules, cluster, STANDBY_KEY_FIELD)
    return ReceiptKeys(key, tuple(witnesses), quorum, record, outside_witnesses(ledger, rules.rules, cluster), standby)


@dataclass(frozen=True, slots=True)
class VerifiedReceipt:
    """A receipt whose every check passed: its record, the checkpoint it stands in, and the
    outside witnesses (of those its genesis lists) whose cosignature verified."""

    receipt: Receipt
    record: Record
    checkpoint: VerifiedCheckpoint
    outside: tuple[str, ...] = ()


def verify_receipt(data: bytes | Receipt, keys: ReceiptKeys) -> VerifiedReceipt:
    """Check a receipt with ``keys`` alone, in the order of docs/PROTOCOL.md section 14.2.

    Raises, at the first failed check: ReceiptError [bad_receipt] for a malformed file or a
    record whose height or hash is not the file's index or hash; the record's own error for
    its structure (bad_encoding, non_canonical, bad_field, too_large); WrongLedgerError
    [wrong_ledger] for a record of another ledger; BadChecksumError, BadLinkError (its own
    link), and with the genesis known UnknownKindError and InsufficientWorkError; the note
    errors of ``verify_checkpoint`` (bad_note, unverified_note for a checkpoint the key did
    not sign, bad_note_signature, bad_cosignature, bad_checkpoint, no_quorum);
    WrongOriginError [wrong_origin] for a checkpoint of another log or ledger; QuorumError
    [no_quorum] also when the genesis lists outside witnesses and fewer than its quorum of
    them cosigned, or when the standby's key signed the checkpoint and no witness cosigned it; for the
    rotations it carries (13.8), ReceiptError for one out of order or not of kind
    ``checkpoint_key``, RotationError [bad_rotation] for one not signed by the key in force
    before it, RetiredKeyError [retired_key] for a checkpoint signed by another key of the
    chain than the one in force at its size; ProofError [bad_proof] when the index is not
    below the checkpoint's size or a proof (the record's, a rotation's) does not lead from
    its leaf hash to the checkpoint's root.
    """
    receipt = data if isinstance(data, Receipt) else parse_receipt(data)
    record = _check_record(receipt, receipt.index, receipt.hash, receipt.record, keys)
    log_key = keys.log_key
    if not log_key.name.endswith("/" + receipt.ledger):
        raise WrongOriginError(f"the checkpoint key {log_key.name!r} is not a key of ledger {receipt.ledger!r}")
    chain = keys.key_chain(receipt.ledger)
    indexes = [r.index for r in receipt.rotations]
    if indexes != sorted(set(indexes)):
        raise ReceiptError("receipt: rotations must be in increasing index order")
    for rotation in receipt.rotations:
        # Each rotation is signed by the key in force before it (13.8): the chain from the
        # genesis key cannot be forged without a key of it. Its place is proven below.
        rotated = _check_record(receipt, rotation.index, None, rotation.record, keys)
        if rotated.content.kind != ROTATION_KIND:
            raise ReceiptError(f"receipt: the record at rotation index {rotation.index} is not a key rotation")
        chain = chain.after(rotated)
    # A witness's rotated Ed25519 keys, proven on the admin ledger (16.6), count as its own.
    keys, histories = keys.following(receipt.node_keys)
    verified, signer = _checked_checkpoint(receipt.checkpoint, keys, chain)
    verified = check_cosignatures_in_force(verified, histories, keys.quorum)
    outside = _outside_cosigners(receipt.checkpoint, keys, signer)
    _witnessed_if_standby(verified, keys, signer)
    checkpoint = verified.checkpoint
    verify_inclusion(leaf_hash(receipt.record), receipt.index, checkpoint.size, receipt.proof, checkpoint.root)
    for rotation in receipt.rotations:
        verify_inclusion(leaf_hash(rotation.record), rotation.index, checkpoint.size, rotation.proof, checkpoint.root)
    return VerifiedReceipt(receipt, record, verified, outside)


def verify_witnessed(
    note: bytes, keys: ReceiptKeys, chain: KeyChain | None = None, node_keys: NodeKeys | None = None
) -> VerifiedCheckpoint:
    """Check the checkpoint ``note`` with ``keys`` (13.5 with the key in force at its size along
    ``chain``, default the genesis key alone, or a standby's epoch key; the witness keys and
    quorum, with the rotated witness keys ``node_keys`` proves when ``keys`` hold the admin
    key, each cosignature by a key in force at its time, 16.6), then, when the genesis lists
    outside witnesses, that a quorum of them cosigned (13.9); one the standby's key signed, that
    a witness cosigned it (10.9). The result counts the cluster's witnesses. Raises what
    verify_ledger_checkpoint, ReceiptKeys.following, check_cosignatures_in_force and
    check_witnessed raise, and QuorumError [no_quorum] for the standby's key uncosigned."""
    keys, histories = keys.following(node_keys)
    verified, signer = _checked_checkpoint(note, keys, chain)
    verified = check_cosignatures_in_force(verified, histories, keys.quorum)
    _outside_cosigners(note, keys, signer)
    _witnessed_if_standby(verified, keys, signer)
    return verified


def verify_ledger_checkpoint(note: bytes, keys: ReceiptKeys, chain: KeyChain | None = None) -> VerifiedCheckpoint:
    """13.5 with the key in force at the checkpoint's size along ``chain`` (13.8; default: the
    ledger's genesis key alone), else (10.9) the standby key the genesis pins, whose
    checkpoints must state an epoch after the first and, whatever ``keys.quorum``, carry a
    verified cosignature by a ``keys.witnesses`` key, a cluster witness's (13.5 step 3, the
    rule verify_witnessed and verify_receipt apply; an outside witness's never counts there,
    and the outside witnesses' own quorum is not asked here). What a checker that holds no
    records (the verifier) takes a checkpoint by. Raises verify_checkpoint's errors,
    RetiredKeyError [retired_key] for a key of the chain not in force at that size,
    BadEpochError [bad_epoch] for the standby's key without an epoch line, and QuorumError
    [no_quorum] for the standby's key uncosigned."""
    verified, signer = _checked_checkpoint(note, keys, chain)
    _witnessed_if_standby(verified, keys, signer)
    return verified


def _checked_checkpoint(
    note: bytes, keys: ReceiptKeys, chain: KeyChain | None
) -> tuple[VerifiedCheckpoint, VerifierKey]:
    """verify_ledger_checkpoint, with the key that signed."""
    if chain is None:
        chain = keys.key_chain(keys.log_key.name.rpartition("/")[2])
    ledger = keys.log_key.name.rpartition("/")[2]
    try:
        verified = chain.check(note, keys.witnesses, keys.quorum)
        signer = chain.key_for_size(verified.checkpoint.size)
    except UnverifiedNoteError:
        if keys.standby_key is None:
            raise
        verified = verify_checkpoint(note, keys.standby_key, keys.witnesses, keys.quorum, origin=keys.log_key.name)
        signer = keys.standby_key
        if epoch_claim(verified.checkpoint)[0] < 2:
            raise BadEpochError("a checkpoint signed by the standby key without an epoch line", ledger=ledger) from None
    if keys.standby_key is not None:
        number = epoch_claim(verified.checkpoint)[0]
        if signer != epoch_key(number, keys.log_key, keys.standby_key):
            raise BadEpochError(
                f"a checkpoint of epoch {number} not signed by that epoch's pinned key (10.9: the keys alternate)",
                ledger=ledger,
            )
    return verified, signer


def _witnessed_if_standby(verified: VerifiedCheckpoint, keys: ReceiptKeys, signer: VerifierKey) -> None:
    """Raise QuorumError [no_quorum] when the standby's key signed ``verified``, or it states an
    epoch from 2 whichever key signed it, and no cluster witness (a ``keys.witnesses`` key, never
    an outside witness of the genesis) cosigned it, whatever the quorum asked (13.5 step 3, 10.9).
    That key is held by a node that is no home until a handover, and a failback's epoch 3 is the
    genesis key's, which may be the key epoch 2 fenced (a stolen one): only the records show
    whether a handover opened that epoch, and only a cluster witness holds them and applies
    10.9's rules before it cosigns. An outside witness cosigns any tree consistent with the last
    it saw: it cosigned a thief's forged epoch 5 (outsider o24 F0)."""
    by_standby = keys.standby_key is not None and signer == keys.standby_key and signer != keys.log_key
    if not by_standby and epoch_claim(verified.checkpoint)[0] < 2:
        return
    outside = () if keys.outside is None else tuple(key.name for key in keys.outside.keys)
    require_witness(verified, trusted=len(keys.witnesses), outside=outside)


def _outside_cosigners(note: bytes, keys: ReceiptKeys, signer: VerifierKey) -> tuple[str, ...]:
    """The outside witnesses that cosigned ``note`` signed by ``signer`` (13.9), a quorum of
    them checked; none when the genesis lists none. Raises what check_witnessed raises."""
    if keys.outside is None:
        return ()
    return check_witnessed(note, signer, keys.outside, origin=keys.log_key.name).witnesses


def _check_record(receipt: Receipt, index: int, link: bytes | None, data: bytes, keys: ReceiptKeys) -> Record:
    """Steps 2 and 3 of 14.3 for the record ``data`` the receipt places at ``index`` (with the
    hash ``link`` it states, None for a rotation's, which states none)."""
    record = decode_record(data, PROTOCOL_LIMITS)
    ledger = receipt.ledger
    if record.ledger != ledger:
        raise WrongLedgerError(f"the receipt's record belongs to ledger {record.ledger!r}", ledger=ledger)
    if record.height != index:
        raise ReceiptError(f"receipt: the record stands at height {record.height}, the receipt says {index}")
    if link is not None and link != record.link:
        raise ReceiptError(f"receipt: the record's hash is {record.link.hex()}, the receipt says {link.hex()}")
    genesis = keys.genesis
    if genesis is not None and genesis.ledger != ledger:
        raise WrongLedgerError(f"the genesis given is of ledger {genesis.ledger!r}", ledger=ledger)
    if genesis is not None and record.height == 0:
        if data != genesis.encode():
            raise BadLinkError("the receipt's genesis record is not the genesis given", ledger=ledger, height=0)
        return record
    if genesis is not None:
        # The record's own checks of section 4 (5 to 8) under the genesis rules; its prev is
        # taken as given: the inclusion proof, not a neighbour, places it in the ledger.
        rules = LedgerRules.from_genesis(genesis.content, PROTOCOL_LIMITS)
        ChainVerifier.after(ledger, record.height - 1, record.prev, rules, PROTOCOL_LIMITS).check(record)
        return record
    # Without the genesis the difficulty and kinds are unknown: checksum and own link only.
    if checksum_of(record.content_bytes) != record.checksum:
        raise BadChecksumError("checksum does not match the content", ledger=ledger, height=record.height)
    expected = link_of(record.prev, record.checksum, record.height, record.nonce, record.accepted, record.origin)
    if expected != record.link:
        raise BadLinkError(
            f"link {record.link.hex()} does not match the record's fields (expected {expected.hex()})",
            ledger=ledger,
            height=record.height,
        )
    return record
