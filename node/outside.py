"""Outside witnesses: keys a genesis lists beside the cluster's, and the tlog-witness replies they send.

A ledger's genesis may list, in ``rules.witnesses``, the cosignature keys (C2SP vkeys of
type 0x04) of witnesses outside the cluster, and in ``rules.quorum`` how many of them must
cosign a checkpoint for it to count as **witnessed** (docs/PROTOCOL.md 13.9). The home feeds
them the way c2sp.org/tlog-witness says (an add-checkpoint request: old size, consistency
proof, checkpoint); this module reads their answers and believes none that does not verify
with the key the genesis pins. Pure: rules, bytes and keys in, dataclasses out, an error of
node/errors.py otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import BadGenesisError, CosignatureError, NoteError, NoteKeyError, QuorumError, WitnessRequestError
from .note import (
    ALG_COSIGNATURE_V1,
    SIZE_CONTENT_TYPE,
    Cosignature,
    VerifiedCheckpoint,
    VerifierKey,
    parse_cosignature_response,
    parse_note,
    parse_size_response,
    parse_verifier_key,
    verify_checkpoint,
    verify_signature,
    with_newest,
)
from .witness import witness_name

WITNESSES_FIELD = "witnesses"  # genesis rules: the outside witnesses' cosignature vkeys
QUORUM_FIELD = "quorum"  # genesis rules: how many of them make a checkpoint witnessed
MAX_OUTSIDE_WITNESSES = 32
OUTSIDE_KIND_PREFIX = "outside:"  # checkpoint log rows: an outside witness's verified cosignature
# The field of the Redis hash vledger:{<ledger>}:outside beside the witnesses' own: the largest
# checkpoint a quorum of them cosigned, their lines together (no key name holds a "+", 13.2).
QUORUM_NOTE = "+quorum"
MAX_REPLY_BYTES = 64 * 1024  # a reply body read past this is not a witness's (100 lines fit in 20 KiB)


@dataclass(frozen=True, slots=True)
class OutsideWitnesses:
    """The outside witnesses a genesis lists (``keys``, type 0x04, distinct names and public
    keys) and the ``quorum`` (1..len(keys)) of them a checkpoint needs to be witnessed."""

    keys: tuple[VerifierKey, ...]
    quorum: int

    def key(self, name: str) -> VerifierKey | None:
        """The key listed under ``name``, or None."""
        return next((k for k in self.keys if k.name == name), None)


def outside_witnesses(ledger: str, rules: Mapping[str, Any], cluster: str | None) -> OutsideWitnesses | None:
    """The outside witnesses a genesis' ``rules`` map lists, or None when it lists none: of
    cluster ``cluster``'s ledger, which every reader that counts them knows (its cluster file,
    or the pinned checkpoint key's name ``<cluster>/<ledger>``); None only where none is known
    and nothing is counted (a check of the fields alone).

    Raises BadGenesisError [bad_genesis] when ``witnesses`` is not a list of 1 to
    MAX_OUTSIDE_WITNESSES vkey strings of type 0x04 with distinct names and distinct public
    keys, when one has the public key of the pinned checkpoint key, when ``quorum`` is not an
    integer 1..len(witnesses), or when one of the two fields is there without the other; and
    when one is named as a witness of ``cluster`` (``<cluster>/witness/...``): cosigners are
    told apart by name, so its lines would count as that witness's (review r19 4).
    """
    where: dict[str, Any] = {"ledger": ledger, "height": 0}
    listed, quorum = rules.get(WITNESSES_FIELD), rules.get(QUORUM_FIELD)
    if listed is None and quorum is None:
        return None
    if listed is None or quorum is None:
        raise BadGenesisError(f"rules.{WITNESSES_FIELD} and rules.{QUORUM_FIELD} go together", **where)
    if not isinstance(listed, list) or not 0 < len(listed) <= MAX_OUTSIDE_WITNESSES:
        raise BadGenesisError(
            f"rules.{WITNESSES_FIELD} must be a list of 1 to {MAX_OUTSIDE_WITNESSES} witness vkeys", **where
        )
    keys: list[VerifierKey] = []
    for i, value in enumerate(listed):
        if not isinstance(value, str):
            raise BadGenesisError(f"rules.{WITNESSES_FIELD}[{i}] must be a vkey string", **where)
        try:
            key = parse_verifier_key(value)
        except NoteKeyError as e:
            raise BadGenesisError(f"rules.{WITNESSES_FIELD}[{i}]: {e.message}", **where) from None
        if key.alg != ALG_COSIGNATURE_V1:
            raise BadGenesisError(f"rules.{WITNESSES_FIELD}[{i}] must be a cosignature key (type 0x04)", **where)
        if any(k.name == key.name or k.public_key == key.public_key for k in keys):
            # One witness key must never serve two names (13.4), nor one name two keys.
            raise BadGenesisError(f"rules.{WITNESSES_FIELD}[{i}] repeats a name or a public key", **where)
        if cluster is not None and key.name.startswith(witness_name(cluster, "")):
            # Cosigners are told apart by name: this key's cosignatures would count as the
            # cluster witness's, which says its store holds the records (review r19 4).
            raise BadGenesisError(
                f"rules.{WITNESSES_FIELD}[{i}] is named as a witness of cluster {cluster!r}: {key.name!r}", **where
            )
        keys.append(key)
    log_key = rules.get("checkpoint_key")
    if isinstance(log_key, str):
        try:
            pinned = parse_verifier_key(log_key).public_key
        except NoteKeyError:
            pinned = b""  # the checkpoint_key rule reports its own error
        if any(k.public_key == pinned for k in keys):
            raise BadGenesisError(f"rules.{WITNESSES_FIELD} lists the checkpoint key's own public key", **where)
    if type(quorum) is not int or not 1 <= quorum <= len(keys):
        raise BadGenesisError(f"rules.{QUORUM_FIELD} must be an integer 1..{len(keys)}", **where)
    return OutsideWitnesses(tuple(keys), quorum)


def check_witnessed(
    data: bytes, log_key: VerifierKey, outside: OutsideWitnesses, origin: str | None = None
) -> VerifiedCheckpoint:
    """That the checkpoint note ``data`` is signed by ``log_key`` and cosigned by at least
    ``outside.quorum`` of the outside witnesses (13.5 with their keys and quorum).

    Raises what verify_checkpoint raises; QuorumError [no_quorum] names the witnesses missing.
    """
    try:
        return verify_checkpoint(data, log_key, outside.keys, outside.quorum, origin=origin)
    except QuorumError as e:
        raise QuorumError(f"outside witnesses (the genesis asks {outside.quorum}): {e.message}") from None


def quorum_note(notes: Iterable[bytes]) -> bytes:
    """One note of a checkpoint with every signature line of ``notes`` (each the checkpoint with
    one outside witness's cosignature, as a home keeps them, 13.9), each line once: what a quorum
    of them cosigned, readable where the witnesses' newest notes have moved past it. Raises
    NoteError when there is no note or their texts differ."""
    found = list(notes)
    if not found:
        raise NoteError("no note to join")
    joined = found[0]
    for note in found[1:]:
        joined = with_newest(joined, note)
    return joined


def outside_kind(witness: str) -> str:
    """The checkpoint log kind of the cosignatures of outside witness ``witness``."""
    return OUTSIDE_KIND_PREFIX + witness


# --- a witness's add-checkpoint replies ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WitnessReply:
    """An HTTP answer to add-checkpoint: its ``status``, ``content_type`` (lower case, without
    parameters) and ``body`` (at most MAX_REPLY_BYTES)."""

    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Cosigned:
    """A 200 whose cosignature by the witness verified: ``note`` is the checkpoint note with
    that one line added (the other lines of the reply are dropped)."""

    note: bytes
    cosignature: Cosignature


@dataclass(frozen=True, slots=True)
class Conflict:
    """A 409: the witness's latest cosigned ``size`` is not the old size sent."""

    size: int


@dataclass(frozen=True, slots=True)
class Refused:
    """Any other status: the witness will not cosign (422: the proof or the roots do not
    match what it saw, 403/404: it does not know the key or the origin, 400: malformed)."""

    status: int
    reason: str


WitnessOutcome = Cosigned | Conflict | Refused


def read_reply(reply: WitnessReply, note: bytes, witness: VerifierKey) -> WitnessOutcome:
    """What a witness's answer to an add-checkpoint of ``note`` (the home's signed checkpoint)
    means, believing only what verifies with ``witness`` (the key the genesis lists).

    Raises WitnessRequestError [bad_witness_message] for a 409 whose content type is not
    text/x.tlog.size or whose body is not a size, and for a 200 whose body is not signature
    lines or holds no line by the witness's name and key id; CosignatureError
    [bad_cosignature] for a 200 whose line by the witness's key does not verify over the
    checkpoint or has the timestamp 0 (tlog-witness: it must not be zero).
    """
    if reply.status == 409:
        if reply.content_type != SIZE_CONTENT_TYPE:
            raise WitnessRequestError(f"a 409 answer is of type {SIZE_CONTENT_TYPE}, not {reply.content_type!r:.60}")
        return Conflict(parse_size_response(reply.body))
    if reply.status != 200:
        text = reply.body[:200].decode("utf-8", "replace")
        reason = "".join(c if c.isprintable() else " " for c in text).strip()
        return Refused(reply.status, reason)
    lines = parse_cosignature_response(reply.body)
    checkpoint = parse_note(note)
    mine = next((line for line in lines if line.is_by(witness)), None)
    if mine is None:
        raise WitnessRequestError(f"the answer holds no cosignature by {witness.name}+{witness.key_id:08x}")
    cosignature = Cosignature.from_note_signature(mine)
    if cosignature.timestamp == 0 or not verify_signature(checkpoint.text, mine, witness):
        raise CosignatureError(f"the cosignature by {witness.name} does not verify over the checkpoint sent")
    return Cosigned(checkpoint.with_signatures(mine).encode(), cosignature)
