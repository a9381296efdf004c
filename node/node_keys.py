"""A node's rotated Ed25519 keys, proven from the admin ledger to a checker that holds no copy of it.

A replica's or an observer's Ed25519 key rotates through a ``key_rotation`` record of the admin
ledger (docs/PROTOCOL.md 16.6). The nodes of the cluster read those records from their own
copy; a checker that holds only the key directory (a receipt checked offline, the observers'
signed tallies, the gateway, ``vledger.client``) knows each node's generation-0 key from its
``<node>.sign.pub`` and learns the later ones from **node-key evidence** (:class:`NodeKeys`):
the admin ledger's ``key_rotation`` records, each with its inclusion proof in one admin-ledger
checkpoint that the admin ledger's checkpoint key signed. Nothing is believed for where it
comes from: :func:`proven_rotations` checks the checkpoint's signature, each record's own
checks, kind and payload, and each inclusion proof, and only then hands the rotations to
:func:`vledger.node.node_key_rotation.key_histories`.

What it cannot prove, as for checkpoint keys (13.8): that no rotation is missing. A rotation
the evidence leaves out keeps an older key counting longer (until the window of the rotation
shown after it, or for good when it was the last); only a checkpoint that covers it shows it.

Pure: bytes and keys in, rotations and key histories out, a precise error of node/errors.py
otherwise.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..config.settings import PROTOCOL_LIMITS
from .errors import (
    BadChecksumError,
    BadLinkError,
    CosignatureError,
    ProofError,
    QuorumError,
    ReceiptError,
    WrongLedgerError,
    WrongOriginError,
)
from .node_key_rotation import KeyHistory, key_histories
from .note import (
    ALG_ED25519,
    Cosignature,
    VerifiedCheckpoint,
    VerifierKey,
    parse_checkpoint,
    parse_note,
    verify_checkpoint,
    verify_signature,
)
from .record import Record, checksum_of, decode_record, link_of
from .rules.admin import ADMIN_LEDGER, check_admin_payload
from .tree import MAX_PROOF_HASHES, HashAt, leaf_hash, node_hash, verify_inclusion
from .tree import inclusion_proof as tree_inclusion_proof
from .witness import witness_key

ROTATION_RECORD_KIND = "key_rotation"  # the admin ledger's record kind (16.1)
NODE_KEYS_FIELDS = ("checkpoint", "rotations")
PROVEN_FIELDS = ("index", "record", "proof")
MAX_NODE_ROTATIONS = 32
WITNESS_PART = "/witness/"  # a witness's key name is <cluster>/witness/<node> (10.7)


@dataclass(frozen=True, slots=True)
class ProvenRecord:
    """A record at ``index`` of a ledger and its inclusion ``proof`` in a checkpoint's tree."""

    index: int
    record: bytes
    proof: tuple[bytes, ...]

    def json(self) -> dict[str, Any]:
        return {"index": self.index, "record": b64(self.record), "proof": [b64(p) for p in self.proof]}


@dataclass(frozen=True, slots=True)
class NodeKeys:
    """Node-key evidence: the admin ledger's ``key_rotation`` records (in increasing index
    order) proven in the admin-ledger ``checkpoint`` note (docs/PROTOCOL.md 16.6)."""

    checkpoint: bytes
    rotations: tuple[ProvenRecord, ...]

    def json(self) -> dict[str, Any]:
        """The evidence as the JSON values of a receipt's ``node_keys`` (14.2)."""
        return {"checkpoint": self.checkpoint.decode("utf-8"), "rotations": [r.json() for r in self.rotations]}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def unb64(text: object, what: str) -> bytes:
    """Canonical standard base64 with padding; raises ReceiptError [bad_receipt] otherwise."""
    if not isinstance(text, str):
        raise ReceiptError(f"receipt: {what} must be a base64 string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ReceiptError(f"receipt: {what} is not standard base64") from None
    if b64(raw) != text:
        raise ReceiptError(f"receipt: {what} is not canonical base64")
    return raw


def proof_hashes(value: object, what: str) -> tuple[bytes, ...]:
    """A JSON list of at most MAX_PROOF_HASHES base64 hashes; raises ReceiptError otherwise."""
    if not isinstance(value, list) or len(value) > MAX_PROOF_HASHES:
        raise ReceiptError(f"receipt: {what} must be a list of at most {MAX_PROOF_HASHES} hashes")
    return tuple(unb64(p, f"{what} hash {i}") for i, p in enumerate(value))


def proven_records(value: object, what: str, most: int) -> tuple[ProvenRecord, ...]:
    """A JSON list of 1 to ``most`` objects with exactly the keys index, record, proof (in that
    order); raises ReceiptError [bad_receipt] otherwise. Syntax only."""
    if not isinstance(value, list) or not 1 <= len(value) <= most:
        raise ReceiptError(f"receipt: {what} must be a list of 1 to {most} records when given")
    found = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or tuple(item) != PROVEN_FIELDS:
            raise ReceiptError(f"receipt: {what} {i} is an object with exactly the keys {', '.join(PROVEN_FIELDS)}")
        index = item["index"]
        if type(index) is not int or not 0 <= index <= 2**63 - 1:
            raise ReceiptError(f"receipt: {what} {i}: index must be an integer 0..2**63-1")
        found.append(
            ProvenRecord(
                index, unb64(item["record"], f"{what} {i} record"), proof_hashes(item["proof"], f"{what} {i} proof")
            )
        )
    return tuple(found)


def parse_node_keys(value: object) -> NodeKeys:
    """Read node-key evidence from its JSON values (a receipt's ``node_keys``, 14.2): an object
    with exactly the keys checkpoint (a string) and rotations (1 to MAX_NODE_ROTATIONS proven
    records), in that order. Syntax only (:func:`proven_rotations` verifies).

    Raises ReceiptError [bad_receipt] when it is not one.
    """
    if not isinstance(value, dict) or tuple(value) != NODE_KEYS_FIELDS:
        raise ReceiptError(f"receipt: node_keys is an object with exactly the keys {', '.join(NODE_KEYS_FIELDS)}")
    note = value["checkpoint"]
    if not isinstance(note, str):
        raise ReceiptError("receipt: node_keys checkpoint must be a note")
    try:
        note_bytes = note.encode("utf-8")
    except UnicodeEncodeError:
        raise ReceiptError("receipt: node_keys checkpoint is not UTF-8 text") from None
    return NodeKeys(note_bytes, proven_records(value["rotations"], "node_keys rotation", MAX_NODE_ROTATIONS))


MAX_NODE_KEYS_TEXT = 1024 * 1024  # a --node-keys argument is far smaller: refused before decoding


def encode_node_keys(evidence: NodeKeys) -> str:
    """Node-key evidence as one word of a command line (``receipt verify --node-keys``, 14.3):
    the standard base64, with padding, of the UTF-8 JSON of its ``node_keys`` object (14.2) as a
    receipt carries it (its keys in that order, no spaces)."""
    return b64(json.dumps(evidence.json(), separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def decode_node_keys(text: str) -> NodeKeys:
    """The evidence :func:`encode_node_keys` wrote. Syntax only, as :func:`parse_node_keys`.

    Raises ReceiptError [bad_receipt] for text that is not one.
    """
    if len(text) > MAX_NODE_KEYS_TEXT:
        raise ReceiptError(f"node keys: over {MAX_NODE_KEYS_TEXT} characters")
    raw = unb64(text, "node keys")
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ReceiptError("node keys: not the base64 of a JSON object") from None
    return parse_node_keys(value)


def admin_origin_cluster(admin_key: VerifierKey) -> str:
    """The cluster of the admin ledger's checkpoint key ``<cluster>/admin``.

    Raises WrongOriginError [wrong_origin] for a key of another ledger or of another type.
    """
    cluster, _, ledger = admin_key.name.rpartition("/")
    if admin_key.alg != ALG_ED25519 or ledger != ADMIN_LEDGER or not cluster:
        raise WrongOriginError(f"the key {admin_key.name!r} is not the checkpoint key of an admin ledger")
    return cluster


def proven_rotations(evidence: NodeKeys, admin_key: VerifierKey) -> tuple[dict[str, Any], ...]:
    """The ``key_rotation`` payloads (each with its record's ``accepted``), in ledger order, that
    ``evidence`` proves to stand in the admin ledger whose checkpoints ``admin_key`` signs.

    Checks, in this order (docs/PROTOCOL.md 16.6): the admin key is a type 0x01 key named
    ``<cluster>/admin`` [wrong_origin]; the checkpoint note verifies with it (13.5, quorum 0,
    its codes); the indexes are strictly increasing [bad_receipt]; each record decodes (2.4, its
    codes), is of the admin ledger [wrong_ledger] at its index [bad_receipt], has its checksum
    [bad_checksum] and own link [bad_link], is of kind ``key_rotation`` [bad_receipt] with a
    payload of 16.1 [bad_payload]; its inclusion proof leads to the checkpoint's root [bad_proof].
    """
    admin_origin_cluster(admin_key)
    verified = verify_checkpoint(evidence.checkpoint, admin_key)
    checkpoint = verified.checkpoint
    indexes = [r.index for r in evidence.rotations]
    if indexes != sorted(set(indexes)):
        raise ReceiptError("node keys: the rotations must be in increasing index order")
    rotations = []
    for proven in evidence.rotations:
        record = admin_record(proven.record, proven.index)
        if record.content.kind != ROTATION_RECORD_KIND:
            raise ReceiptError(f"node keys: the admin record at {proven.index} is not a key_rotation")
        check_admin_payload(record)
        verify_inclusion(leaf_hash(proven.record), proven.index, checkpoint.size, proven.proof, checkpoint.root)
        rotations.append(dict(record.content.payload, accepted=record.accepted))
    return tuple(rotations)


def merged_rotations(evidence: Iterable[NodeKeys], admin_key: VerifierKey) -> tuple[dict[str, Any], ...]:
    """The rotations that each of ``evidence`` proves (:func:`proven_rotations`, its checks and
    codes), as the one admin ledger's, in index order: a checker's own evidence (``vledger
    receipt keys`` prints it) and a receipt's together. Raises ReceiptError [bad_receipt] when
    two prove different records at one index (the admin key signed two trees: neither is taken)."""
    by_index: dict[int, tuple[bytes, dict[str, Any]]] = {}
    for one in evidence:
        for proven, rotation in zip(one.rotations, proven_rotations(one, admin_key), strict=True):
            known = by_index.setdefault(proven.index, (proven.record, rotation))
            if known[0] != proven.record:
                raise ReceiptError(f"node keys: two different admin records are proven at index {proven.index}")
    return tuple(rotation for _, (_, rotation) in sorted(by_index.items()))


def admin_record(data: bytes, index: int) -> Record:
    """An admin-ledger record's own checks (section 4 steps 1, 5 and 7: its structure, its
    checksum, its own link; difficulty is 0 on the admin ledger, 16.1), at height ``index``."""
    record = decode_record(data, PROTOCOL_LIMITS)
    if record.ledger != ADMIN_LEDGER:
        raise WrongLedgerError(f"node keys: a record of ledger {record.ledger!r}, not {ADMIN_LEDGER!r}")
    if record.height != index:
        raise ReceiptError(f"node keys: the record stands at height {record.height}, the evidence says {index}")
    if checksum_of(record.content_bytes) != record.checksum:
        raise BadChecksumError("checksum does not match the content", ledger=ADMIN_LEDGER, height=index)
    expected = link_of(record.prev, record.checksum, record.height, record.nonce, record.accepted, record.origin)
    if expected != record.link:
        raise BadLinkError("the record's link does not match its fields", ledger=ADMIN_LEDGER, height=index)
    return record


def node_keys_of(records: Sequence[bytes], note: bytes, nodes: Collection[str] | None = None) -> NodeKeys | None:
    """The evidence for the key rotations among ``records`` (a copy of the admin ledger from
    height 0, index = height) below the size of checkpoint ``note``, of the nodes ``nodes`` (all
    when None); None when there is none. The last MAX_NODE_ROTATIONS at most. Builds only (the
    note is parsed, not verified: :func:`proven_rotations` does).

    Raises the note's parse errors (bad_note, bad_checkpoint), ProofError [bad_proof] when the
    copy is shorter than the checkpoint, and the record's structure errors.
    """
    size = parse_checkpoint(parse_note(note).text).size
    if size > len(records):
        raise ProofError(f"the admin checkpoint's size {size} is past the {len(records)} records held")
    leaves = [leaf_hash(r) for r in records[:size]]
    hash_at = _hash_at(leaves)
    proven = []
    for height in range(size):
        record = decode_record(records[height], PROTOCOL_LIMITS)
        if record.content.kind != ROTATION_RECORD_KIND:
            continue
        node = record.content.payload.get("node") if isinstance(record.content.payload, dict) else None
        if nodes is None or node in nodes:
            proven.append(ProvenRecord(height, records[height], tuple(tree_inclusion_proof(height, size, hash_at))))
    return NodeKeys(note, tuple(proven[-MAX_NODE_ROTATIONS:])) if proven else None


def _hash_at(leaves: list[bytes]) -> HashAt:
    # Complete subtrees only (tree.inclusion_proof asks for nothing else), each hashed once.
    cache: dict[tuple[int, int], bytes] = {}

    def hash_at(level: int, index: int) -> bytes:
        found = cache.get((level, index))
        if found is None:
            if level == 0:
                found = leaves[index]
            else:
                found = node_hash(hash_at(level - 1, 2 * index), hash_at(level - 1, 2 * index + 1))
            cache[(level, index)] = found
        return found

    return hash_at


# --- what the rotations say about witnesses and signers -----------------------------------------


def node_of_witness(key: VerifierKey) -> str | None:
    """The node of a witness key named ``<cluster>/witness/<node>``, or None for another name."""
    cluster, part, node = key.name.rpartition(WITNESS_PART)
    return node if part and cluster and "/" not in node else None


def witness_histories(
    witnesses: Iterable[VerifierKey], rotations: Iterable[Mapping[str, Any]]
) -> dict[str, KeyHistory]:
    """The key histories of the witnesses whose key ``rotations`` rotated, by witness key name:
    generation 0 is the key given (its ``.sign.pub``), each rotation of its node the next."""
    by_node = {node: key for key in witnesses if (node := node_of_witness(key)) is not None}
    original = {node: ("", key.public_key.hex()) for node, key in by_node.items()}
    histories = key_histories(original, [r for r in rotations if r.get("node") in by_node])
    return {by_node[node].name: h for node, h in histories.items() if len(h.generations) > 1}


def rotated_witness_keys(histories: Mapping[str, KeyHistory]) -> list[VerifierKey]:
    """Every later generation's cosignature key of ``histories`` (by witness key name)."""
    return [
        witness_key(name, bytes.fromhex(sign))
        for name, history in histories.items()
        for sign in history.sign_keys()[:-1]  # the last is generation 0, already trusted
    ]


def check_cosignatures_in_force(
    verified: VerifiedCheckpoint, histories: Mapping[str, KeyHistory], quorum: int = 0
) -> VerifiedCheckpoint:
    """``verified`` counting only the cosignatures in force (docs/PROTOCOL.md 16.6) of the
    witnesses of ``histories`` (by witness key name): a line by the newest generation's key
    always; by a replaced one's only when ``T`` x 1000 is before the ``until`` of the rotation
    that replaced it and, when that rotation states what the key had ``cosigned``, only on a
    checkpoint of a ledger listed there no larger than its size. A witness whose counted line
    is not in force is counted by another of its lines that is, or not at all. Each witness's
    ``newest`` is its newest line in force (11.4's fresh_ms): a later line by a replaced key,
    stamped past its ``until`` or on a checkpoint past what it had cosigned, is not counted.

    Raises CosignatureError [bad_cosignature] for a line by a replaced key stamped at or after
    its ``until`` before the witness's first line in force, QuorumError [no_quorum] when fewer
    than ``quorum`` witnesses are left.
    """
    checkpoint = verified.checkpoint
    ledger = checkpoint.origin.rpartition("/")[2]
    newest = dict(zip((c.name for c in verified.cosignatures), verified.newest, strict=False))
    kept: list[tuple[Cosignature, Cosignature]] = []
    for cosignature in verified.cosignatures:
        history = histories.get(cosignature.name)
        if history is None:
            kept.append((cosignature, newest.get(cosignature.name, cosignature)))
            continue
        found = _lines_in_force(verified, cosignature.name, history, ledger)
        if found is not None:
            kept.append(found)
    if len(kept) < quorum:
        dropped = sorted({c.name for c in verified.cosignatures} - {c.name for c, _ in kept})
        raise QuorumError(
            f"checkpoint {checkpoint.origin} at size {checkpoint.size}: {len(kept)} of the {quorum} witness "
            f"cosignatures needed (by a replaced key past what its rotation says it cosigned: {', '.join(dropped)})"
        )
    return replace(verified, cosignatures=tuple(c for c, _ in kept), newest=tuple(n for _, n in kept))


def _lines_in_force(
    verified: VerifiedCheckpoint, name: str, history: KeyHistory, ledger: str
) -> tuple[Cosignature, Cosignature] | None:
    """The first cosignature line of witness ``name`` on ``verified``'s note, in note order,
    that verifies with a key of ``history`` in force for this checkpoint, and its newest such
    line (by ``T``), or None. Raises CosignatureError for one by a replaced key stamped at or
    after its ``until`` before the first in force; past it, such a line is only not counted:
    whoever holds a replaced key must not keep an old checkpoint looking fresh (review r11 D)."""
    keys = {witness_key(name, bytes.fromhex(sign)).key_id: sign for sign in history.sign_keys()}
    text, size = verified.note.text, verified.checkpoint.size
    first: Cosignature | None = None
    newest: Cosignature | None = None
    for line in verified.note.signatures:
        sign = keys.get(line.key_id) if line.name == name else None
        if sign is None or not verify_signature(text, line, witness_key(name, bytes.fromhex(sign))):
            continue
        cosignature = Cosignature.from_note_signature(line)
        if first is None and not history.signs_at(sign, cosignature.timestamp * 1000):
            raise CosignatureError(
                f"the cosignature of {name} is by its key {sign[:16]}..., replaced before its timestamp "
                f"{cosignature.timestamp}"
            )
        if history.cosigns(sign, cosignature.timestamp * 1000, ledger, size):
            first = first or cosignature
            newest = cosignature if newest is None or cosignature.timestamp > newest.timestamp else newest
    return None if first is None or newest is None else (first, newest)
