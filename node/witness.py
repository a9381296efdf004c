"""Checkpoints and witnesses: what a home signs, whose key checks it, what a witness cosigns.

A ledger's home signs, for the first ``size`` records it holds, the C2SP checkpoint
``<cluster>/<ledger>``, ``size``, base64(tree root) (vledger.node.note) as a signed note,
with its Ed25519 key under the key name of that origin. Followers store records only under
such a checkpoint; witnesses (every replica and observer) add their cosignature/v1 line to
a checkpoint their own copy proves, and to nothing else (docs/PROTOCOL.md section 10.7).

The key that checks a ledger's checkpoints is the one **pinned in its genesis** (the rules
field ``checkpoint_key``, a vkey whose name is the ledger's origin); a ledger whose genesis
pins none falls back to its home's configured ``<home>.sign.pub``. Pure: keys and bytes in,
dataclasses out, an error of node/errors.py on anything else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .cosigning import MAX_CLOCK_SKEW_MS, Counts
from .errors import (
    BadGenesisError,
    CosignatureError,
    NoteError,
    NoteKeyError,
    QuorumError,
    StoreContradictsCheckpointError,
    Where,
)
from .ledger import LedgerRules
from .node_key_rotation import KeyHistory
from .note import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    COSIGNATURE_BYTES,
    MAX_NOTE_BYTES,
    Checkpoint,
    Cosignature,
    Note,
    NoteSignature,
    SignerKey,
    VerifierKey,
    cosign,
    origin_for,
    parse_note,
    parse_verifier_key,
    sign,
    verify_checkpoint,
)
from .record import Record

PINNED_KEY_FIELD = "checkpoint_key"  # the genesis rules field that pins a ledger's checkpoint key


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint of ``ledger`` (``size`` records, tree ``root``) and its signed note's bytes."""

    ledger: str
    size: int
    root: bytes
    note: bytes

    @property
    def height(self) -> int:
        """The height of the last record it covers."""
        return self.size - 1


def pinned_key(ledger: str, rules: LedgerRules, cluster: str, field: str = PINNED_KEY_FIELD) -> VerifierKey | None:
    """The checkpoint key ``ledger``'s genesis pins in ``field`` (``checkpoint_key``, or the
    standby's ``standby_key`` of 10.9), or None when it pins none.

    Raises BadGenesisError when the field is there but not an Ed25519 note vkey (type 0x01)
    named after the ledger's origin ``<cluster>/<ledger>``.
    """
    value = rules.rules.get(field)
    if value is None:
        return None
    where: Where = {"ledger": ledger, "height": 0}
    if not isinstance(value, str):
        raise BadGenesisError(f"rules.{field} must be a vkey string", **where)
    try:
        key = parse_verifier_key(value)
    except NoteKeyError as e:
        raise BadGenesisError(f"rules.{field}: {e.message}", **where) from None
    origin = origin_for(cluster, ledger)
    if key.alg != ALG_ED25519 or key.name != origin:
        raise BadGenesisError(f"rules.{field} must be an Ed25519 note key named {origin!r}", **where)
    return key


def home_key(cluster: str, ledger: str, public_key: bytes) -> VerifierKey:
    """A home's raw Ed25519 public key as the checkpoint key of ``ledger``."""
    return VerifierKey(origin_for(cluster, ledger), ALG_ED25519, public_key)


class HomeSigner:
    """A home node's checkpoint signatures: one note key per ledger (named by its origin), one seed."""

    def __init__(self, cluster: str, seed: bytes) -> None:
        self.cluster = cluster
        self._seed = seed
        self._keys: dict[str, SignerKey] = {}

    def key(self, ledger: str) -> SignerKey:
        key = self._keys.get(ledger)
        if key is None:
            key = self._keys[ledger] = SignerKey(origin_for(self.cluster, ledger), ALG_ED25519, self._seed)
        return key

    def sign(self, ledger: str, size: int, root: bytes, extensions: tuple[str, ...] = ()) -> SignedCheckpoint:
        """The checkpoint of ``ledger`` at ``size`` with ``root``, as a signed note; a home of
        an epoch after the first adds that epoch's line (node/epoch.py) as ``extensions``."""
        body = Checkpoint(origin_for(self.cluster, ledger), size, root, extensions).body()
        note = Note(body, (sign(body, self.key(ledger)),)).encode()
        return SignedCheckpoint(ledger, size, root, note)


class CheckpointKeys:
    """Checks that a note is a checkpoint of a ledger signed by that ledger's checkpoint key.

    ``key_of(ledger)`` names the key (pinned in the genesis, else the home's configured one)
    or None when there is none to check with.
    """

    def __init__(self, cluster: str, key_of: Callable[[str], VerifierKey | None]) -> None:
        self.cluster = cluster
        self.key_of = key_of

    def check(self, ledger: str, data: bytes) -> SignedCheckpoint:
        """The checkpoint ``data`` holds, once its log signature verified.

        Raises NoteError (or a leaf: bad_note, bad_checkpoint, wrong_origin,
        bad_note_signature, unverified_note) when it is not a checkpoint of ``ledger``
        signed by the ledger's key, or UnverifiedNoteError when no key is known.
        """
        key = self.key_of(ledger)
        if key is None:
            raise NoteKeyError(f"no checkpoint key of ledger {ledger!r} to check its checkpoints with")
        if not isinstance(data, bytes) or len(data) > MAX_NOTE_BYTES:
            raise NoteError(f"a checkpoint is a note of at most {MAX_NOTE_BYTES} bytes")
        verified = verify_checkpoint(data, key, origin=origin_for(self.cluster, ledger))
        return SignedCheckpoint(ledger, verified.checkpoint.size, verified.checkpoint.root, data)

    def confirm(self, checkpoint: SignedCheckpoint, run: list[Record]) -> None:
        """Check ``checkpoint`` again as the store would be with ``run`` (records about to be
        stored under it). One key per ledger: nothing changes with the run, nothing to do.
        node/epoch.py's EpochKeys checks there the epoch a checkpoint claimed ahead of the store."""


def witness_name(cluster: str, node: str) -> str:
    """The key name of ``node``'s cosignatures: ``<cluster>/witness/<node>`` (one key, one name)."""
    return f"{cluster}/witness/{node}"


class WitnessSigner:
    """A witness's cosignatures: its key name (:func:`witness_name`), its Ed25519 seed."""

    def __init__(self, name: str, seed: bytes) -> None:
        self.name = name
        self.key = SignerKey(name, ALG_COSIGNATURE_V1, seed)

    def cosign(self, checkpoint: SignedCheckpoint, timestamp: int) -> bytes:
        """``checkpoint``'s note with this witness's cosignature/v1 line added (at POSIX ``timestamp``)."""
        note = parse_note(checkpoint.note)
        line = cosign(note.text, self.key, timestamp).note_signature()
        return note.with_signatures(line).encode()

    def cosign_again(self, cosigned: bytes, timestamp: int) -> bytes:
        """``cosigned`` (a note this witness cosigned) cosigned again at POSIX ``timestamp``: its
        first line by this key kept, then the new one, the lines between dropped (PROTOCOL 10.7).
        The first says since when the witness vouches for the checkpoint (``since_ms``, 11.4),
        the new one that it still does (``vouched_ms``): re-cosigning a quiet ledger must not
        reset the clock of an observer stuck behind it."""
        note = parse_note(cosigned)
        # A first line dated beyond the skew ahead of this one (written while the clock ran ahead)
        # is dropped too: every reader takes a witness's largest T as its newest (11.4), so kept it
        # would keep the head "fresh" until that date whatever happens since (review r22 F2).
        mine = [
            s
            for s in note.signatures
            if (s.name, s.key_id) == (self.key.name, self.key.key_id)
            and (Cosignature.from_note_signature(s).timestamp - timestamp) * 1000 <= MAX_CLOCK_SKEW_MS
        ]
        others = tuple(s for s in note.signatures if (s.name, s.key_id) != (self.key.name, self.key.key_id))
        line = cosign(note.text, self.key, timestamp).note_signature()
        return Note(note.text, (*others, *mine[:1], line)).encode()


def last_cosignature_ms(note: bytes, name: str) -> int | None:
    """The time (ms) of witness ``name``'s last line on ``note`` (unverified), the one it wrote
    last: its note carries its first line, then its newest (PROTOCOL 10.7). Not the largest: a
    line written while its clock ran ahead stays the largest after the clock is set right."""
    times = [
        Cosignature.from_note_signature(s).timestamp * 1000
        for s in parse_note(note).signatures
        if s.name == name and len(s.signature) == COSIGNATURE_BYTES
    ]
    return times[-1] if times else None


def witness_key(name: str, public_key: bytes) -> VerifierKey:
    """A witness's raw Ed25519 public key as its cosignature (type 0x04) key."""
    return VerifierKey(name, ALG_COSIGNATURE_V1, public_key)


@dataclass(frozen=True, slots=True)
class Cosigned:
    """A cosignature that verified: ``witness`` vouches for ``ledger`` at ``size`` with ``root``."""

    witness: str
    ledger: str
    size: int
    root: bytes
    cosignature: Cosignature


def check_cosigned(data: bytes, ledger: str, cluster: str, log_key: VerifierKey, witness: VerifierKey) -> Cosigned:
    """The cosignature by ``witness`` on a checkpoint of ``ledger`` signed with ``log_key``.

    Raises NoteError (a leaf) unless ``data`` is such a note: CosignatureError
    [bad_cosignature] when the witness's line does not verify, QuorumError [no_quorum] when
    it has no line by that witness's key, NoteSignatureError or UnverifiedNoteError when the
    log's signature fails or is missing, WrongOriginError for another ledger's checkpoint.
    """
    verified = verify_checkpoint(data, log_key, (witness,), 1, origin=origin_for(cluster, ledger))
    cosignature = verified.cosignatures[0]
    return Cosigned(witness.name, ledger, verified.checkpoint.size, verified.checkpoint.root, cosignature)


@dataclass(frozen=True, slots=True)
class Contradiction:
    """What makes a checkpoint evidence of equivocation: ``checkpoint``, another note of the
    home's key (of the contradicted one's size or larger) whose root this copy's tree has, and
    ``proof``, the consistency proof from this tree at the contradicted size to it (empty for
    equal sizes). Both notes verify with the home's key and the proof leads from the copy's
    root to ``checkpoint``'s: no tree of the contradicted root is a prefix of it."""

    checkpoint: SignedCheckpoint
    proof: list[bytes]


def check_extends(ledger: str, size: int, root: bytes, held_size: int, held_root: bytes | None) -> None:
    """That a copy of ``held_size`` records whose root at ``size`` is ``held_root`` still holds the
    checkpoint (``size``, ``root``) it signed or cosigned.

    Raises StoreContradictsCheckpointError [store_contradicts_checkpoint] when the copy is
    shorter than ``size`` or has another root there.
    """
    if held_size < size:
        raise StoreContradictsCheckpointError(
            f"ledger {ledger!r}: the store holds {held_size} records, fewer than the {size} of a checkpoint "
            "this node signed or cosigned",
            ledger=ledger,
            height=size - 1,
        )
    if held_root != root:
        raise StoreContradictsCheckpointError(
            f"ledger {ledger!r}: the store's tree of size {size} has another root than the checkpoint this "
            "node signed or cosigned at that size",
            ledger=ledger,
            height=size - 1,
        )


def witness_keys_in_force(
    cluster: str, histories: Mapping[str, KeyHistory], witnesses: Iterable[str], now_ms: int
) -> list[VerifierKey]:
    """The cosignature keys of the witness nodes ``witnesses`` whose Ed25519 key rotated
    (docs/PROTOCOL.md 16.6), in force at ``now_ms``: each one's newest key and, during its
    window, the one before it. A node that never rotated is left out (its key file says it)."""
    keys = []
    for node in witnesses:
        history = histories.get(node)
        if history is None or len(history.generations) < 2:
            continue
        name = witness_name(cluster, node)
        keys += [witness_key(name, bytes.fromhex(s)) for s in history.sign_keys() if history.signs_at(s, now_ms)]
    return keys


def cosignatures_in_force(cluster: str, histories: Mapping[str, KeyHistory]) -> Counts:
    """node/cosigning.py's ``counts`` for the witness nodes of ``histories`` (by node) whose
    Ed25519 key rotated (docs/PROTOCOL.md 16.6): a line by one of their keys counts only when
    :meth:`KeyHistory.cosigns` says so for its timestamp and the checkpoint's ledger and size
    (a key it never had, never); any other witness's line counts."""
    rotated = {witness_name(cluster, node): h for node, h in histories.items() if len(h.generations) > 1}

    def counts(line: NoteSignature, key: VerifierKey, checkpoint: Checkpoint) -> bool:
        history = rotated.get(key.name)
        if history is None:
            return True
        timestamp = Cosignature.from_note_signature(line).timestamp
        ledger = checkpoint.origin.rpartition("/")[2]
        return history.cosigns(key.public_key.hex(), timestamp * 1000, ledger, checkpoint.size)

    return counts


def check_cosigned_in_force(
    data: bytes, ledger: str, cluster: str, log_key: VerifierKey, node: str, history: KeyHistory
) -> Cosigned:
    """The cosignature by witness node ``node`` on a checkpoint of ``ledger`` signed with
    ``log_key``, by one of the Ed25519 keys of ``history`` (its key generations on the admin
    ledger, docs/PROTOCOL.md 16.6) that was in force at the cosignature's timestamp: the
    newest key always, an older one only for a timestamp before the ``until`` of the rotation
    that replaced it and, when that rotation states what the key had ``cosigned``, only on a
    checkpoint no larger than the size it lists for ``ledger``.

    Raises what :func:`check_cosigned` raises (QuorumError [no_quorum] when no key of the
    node made a line that counts), and CosignatureError [bad_cosignature] for a line by a key that was
    out of force at its timestamp.
    """
    name = witness_name(cluster, node)
    missing: NoteError = QuorumError(f"no cosignature by any key of {node}")
    for sign_hex in history.sign_keys():
        try:
            cosigned = check_cosigned(data, ledger, cluster, log_key, witness_key(name, bytes.fromhex(sign_hex)))
        except QuorumError as e:
            missing = e  # no line by this key: maybe by another generation's
            continue
        timestamp = cosigned.cosignature.timestamp
        if not history.signs_at(sign_hex, timestamp * 1000):
            raise CosignatureError(
                f"the cosignature of {node} is by its key {sign_hex[:16]}..., out of force at its timestamp {timestamp}"
            )
        if not history.cosigns(sign_hex, timestamp * 1000, ledger, cosigned.size):
            # Its rotation states the sizes this key had cosigned: a larger checkpoint (an honest
            # witness's before it read the rotation, or a thief's) does not count.
            missing = QuorumError(
                f"the cosignature of {node} is by its replaced key {sign_hex[:16]}..., on a checkpoint of size "
                f"{cosigned.size}, larger than its rotation says that key cosigned"
            )
            missing.past_replaced_key = True
            continue
        return cosigned
    raise missing
