"""Gathering a checkpoint's cosignatures from places nothing vouches for (Redis, peers, files).

Each witness publishes the latest checkpoint it cosigned as a note of its own: the home's
signature line and its cosignature line. Anyone can write where those notes are kept, so
:func:`gather` believes nothing it is given: per checkpoint text it keeps the first log
signature that verifies with the ledger's checkpoint key, and each trusted witness's first
cosignature line that verifies **on its own** (``verify_signature``). A bad line is dropped,
never a reason to drop the good ones: ``verify_checkpoint`` refuses a whole note for one bad
cosignature by a trusted witness, which is right for a client checking a note it was handed,
and wrong for a node assembling one from many sources. Pure: bytes and keys in, notes out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .errors import NoteError
from .note import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    Checkpoint,
    Cosignature,
    Note,
    NoteSignature,
    VerifiedCheckpoint,
    VerifierKey,
    parse_checkpoint,
    parse_note,
    verify_signature,
    witness_groups,
)

# How far a signed time (an observer's snapshot at_ms, a witness's cosignature T) may run ahead of
# the reader's clock (clocks of honest hosts differ a little): one dated further ahead says nothing
# of when it was made (a clock that ran ahead, or a key's holder re-signing an old count with a date
# to come), so it never shows an observer current (PROTOCOL 11.4), and names the witness (10.5).
MAX_CLOCK_SKEW_MS = 60_000

# Whether a cosignature line that verified with a witness key counts on a checkpoint: a
# replaced key's only as its rotation allows (node/witness.py's cosignatures_in_force, 16.6).
Counts = Callable[[NoteSignature, VerifierKey, Checkpoint], bool]


@dataclass(frozen=True, slots=True)
class GatheredCheckpoint:
    """A checkpoint whose log signature verified, with the cosignatures that verified one by one.

    ``note`` holds the log's signature line, then per ``witnesses`` name (in name order) its
    oldest cosignature line and, when it cosigned again later (a quiet ledger, PROTOCOL 10.7),
    its newest: a note that ``verify_checkpoint`` accepts with those witnesses' keys, which
    reads the first line of each (the oldest).
    """

    checkpoint: Checkpoint
    note: bytes
    witnesses: tuple[str, ...]
    # How many distinct witnesses the gatherer trusts (keys it holds): a head's age is judged
    # over a majority of these, never over the lines a note happens to carry (11.4).
    trusted: int = 0

    def _by_witness(self, pick: Callable[[int, int], int]) -> dict[str, int]:
        """Each witness's cosignature time (ms) on this checkpoint that ``pick`` (min, max) keeps."""
        found: dict[str, int] = {}
        for line in parse_note(self.note).signatures[1:]:
            at_ms = Cosignature.from_note_signature(line).timestamp * 1000
            found[line.name] = pick(at_ms, found.get(line.name, at_ms))
        return found

    @property
    def cosigned_ms(self) -> dict[str, int]:
        """Each witness's first cosignature time (ms) on this checkpoint, by witness name."""
        return self._by_witness(min)

    @property
    def vouched_ms(self) -> dict[str, int]:
        """Each witness's newest cosignature time (ms) on this checkpoint, by witness name."""
        return self._by_witness(max)

    @property
    def since_ms(self) -> int | None:
        """When a majority of the trusted witnesses had cosigned this checkpoint
        (:func:`quorum_since_ms`; None: fewer did)."""
        return quorum_since_ms(self.cosigned_ms.values(), needed_witnesses(self.trusted))

    @property
    def fresh_ms(self) -> int | None:
        """Since when a majority of the trusted witnesses have vouched for this checkpoint
        (:func:`quorum_fresh_ms`; None: fewer did)."""
        return quorum_fresh_ms(self.vouched_ms.values(), needed_witnesses(self.trusted))


def distinct_witnesses(keys: Iterable[VerifierKey]) -> int:
    """How many witnesses ``keys`` are (13.5 step 1: names sharing a public key are one, and a
    name's generations one)."""
    return len(set(witness_groups(keys).values()))


def needed_witnesses(trusted: int, quorum: int = 0) -> int:
    """How many of ``trusted`` distinct witnesses a head's age is judged over (PROTOCOL 11.4):
    ``quorum`` or a majority of them, the larger; 0 when none is trusted (nothing is judged).
    Counting the lines a note carries instead let a server pick them: 5 witnesses, a note with
    2 colluders' fresh lines and 1 honest old one had a fresh median (review r12, 2)."""
    return max(quorum, trusted // 2 + 1) if trusted > 0 else 0


def quorum_since_ms(times: Iterable[int], needed: int) -> int | None:
    """The time (ms) by which ``needed`` (:func:`needed_witnesses`) trusted witnesses, whose
    cosignature times (one each, ms) are ``times``, had cosigned a checkpoint (PROTOCOL 11.4):
    the ``needed``-th oldest; None for fewer times (or ``needed`` 0). The tree had its records by
    then, as that many witnesses say: fewer than ``needed`` clocks (a slow one made honest,
    current observers STALE, outsider24 G5) never decide where the others cosigned."""
    ordered = sorted(times)
    return ordered[needed - 1] if 0 < needed <= len(ordered) else None


def quorum_fresh_ms(times: Iterable[int], needed: int) -> int | None:
    """The time (ms) since which ``needed`` (:func:`needed_witnesses`) trusted witnesses, whose
    newest cosignature times (one each, ms) are ``times``, have vouched for a checkpoint
    (PROTOCOL 11.4): the ``needed``-th newest; None for fewer times (or ``needed`` 0). A view
    whose witnesses cosign a quiet ledger again every ``recosign_interval_ms`` keeps it that
    recent; a frozen one's grows old, and fewer than ``needed`` colluding clocks never keep it
    young, whatever lines the server leaves out."""
    ordered = sorted(times, reverse=True)
    return ordered[needed - 1] if 0 < needed <= len(ordered) else None


def verified_fresh_ms(verified: VerifiedCheckpoint, needed: int) -> int | None:
    """:func:`quorum_fresh_ms` of a checkpoint a client verified (13.5): over each counted
    witness's newest verified line (``verified.newest``); None when fewer than ``needed`` counted."""
    return quorum_fresh_ms((c.timestamp * 1000 for c in verified.newest), needed)


def vouched_by(
    verified: VerifiedCheckpoint, witnesses: Iterable[VerifierKey], outside: Iterable[VerifierKey] = ()
) -> dict[str, int]:
    """Each trusted witness's newest verified cosignature time (ms) on ``verified``, by witness
    (:func:`witness_groups` over ``witnesses`` and ``outside``: names sharing a key are one,
    13.5 step 1): the lines 13.5 counted with ``witnesses`` (``verified.newest``, in force, 14.3
    step 7) and each line of an ``outside`` key (the outside witnesses a genesis lists, 13.9)
    that verifies on its own. A line of a ``witnesses`` key that 13.5 did not count is not
    taken here either (a replaced key's out of force)."""
    listed = tuple(outside)
    groups = witness_groups((*witnesses, *listed))
    found: dict[str, int] = {}

    def keep(name: str, timestamp: int) -> None:
        witness = groups.get(name, name)
        found[witness] = max(timestamp * 1000, found.get(witness, 0))

    for cosignature in verified.newest:
        keep(cosignature.name, cosignature.timestamp)
    keys = {(key.name, key.key_id): key for key in listed if key.alg == ALG_COSIGNATURE_V1}
    text = verified.note.text
    for line in verified.note.signatures:
        key = keys.get((line.name, line.key_id))
        if key is not None and verify_signature(text, line, key):
            keep(line.name, Cosignature.from_note_signature(line).timestamp)
    return found


def recosign_due_ms(recosign_ms: int, heartbeat_ms: int) -> int:
    """How old a witness's newest line on a quiet ledger's checkpoint is when it cosigns it again
    (PROTOCOL 10.7): ``recosign_ms`` less a heartbeat and 2 s (at most half the interval). The
    home asks once a heartbeat and a line's ``T`` is whole seconds, so a witness that waited the
    full interval left readers a live line up to ~2 s older than it, and ``vledger tally
    --stale-after 1`` flapped STALE on an honest quiet ledger (review r11 F)."""
    return recosign_ms - min(recosign_ms // 2, heartbeat_ms + 2000)


def stale_since(fresh_ms: int | None, now_ms: int, recosign_ms: int, after_ms: int, needed: int) -> bool:
    """Whether a head whose ``fresh_ms`` (:func:`quorum_fresh_ms` over ``needed`` witnesses) it
    is is **stale** at ``now_ms`` (PROTOCOL 11.4): more than ``recosign_ms`` (how often witnesses
    cosign a quiet ledger again, 10.7) plus ``after_ms`` before it, or None while ``needed`` is
    not 0: fewer trusted witnesses vouched for it than are needed, so a server stripping lines
    is judged too. With no witness trusted (``needed`` 0) nothing is judged."""
    if needed == 0:
        return False
    # A fresh_ms dated beyond the skew ahead says nothing of when those lines were made (clocks run or
    # steered ahead): no head is kept fresh by it (PROTOCOL 10.5, review r22 F2).
    return fresh_ms is None or now_ms - fresh_ms > recosign_ms + after_ms or fresh_ms - now_ms > MAX_CLOCK_SKEW_MS


def _witness_table(
    witnesses: Iterable[VerifierKey],
) -> tuple[dict[tuple[str, int], VerifierKey], Mapping[str, str]]:
    """The witness keys by (name, key id), and each name's group (:func:`witness_groups`).
    Raises NoteError for a key not of type 0x04."""
    keys = {}
    for key in witnesses:
        if key.alg != ALG_COSIGNATURE_V1:
            raise NoteError(f"witness key {key.name!r} is not a cosignature key (type 0x04)")
        keys[(key.name, key.key_id)] = key
    return keys, witness_groups(keys.values())


def gather(
    notes: Iterable[bytes],
    log_key: VerifierKey,
    origin: str,
    witnesses: Iterable[VerifierKey],
    counts: Counts | None = None,
) -> list[GatheredCheckpoint]:
    """Every checkpoint of ``origin`` signed by ``log_key`` among ``notes``, each with every
    verified cosignature by one of the ``witnesses`` keys (type 0x04) found on any note of
    the same text; largest size first (more witnesses first at one size). With ``counts``, a
    line it refuses is skipped as a bad one is (a later line of that witness may count).

    Never raises for what ``notes`` hold: a malformed note, a text that is no checkpoint of
    ``origin``, a forged log signature or cosignature line is skipped. Raises NoteError only
    for unusable keys (a log key not of type 0x01, a witness key not of type 0x04).
    """
    if log_key.alg != ALG_ED25519:
        raise NoteError("the log key must be an Ed25519 note key (type 0x01)")
    keys, groups = _witness_table(witnesses)
    lines: dict[str, list[NoteSignature]] = {}
    for data in notes:
        try:
            note = parse_note(data)
        except NoteError:
            continue
        lines.setdefault(note.text, []).extend(note.signatures)
    found = []
    for text, signatures in lines.items():
        gathered = _gather_text(text, signatures, log_key, origin, keys, groups, counts)
        if gathered is not None:
            found.append(gathered)
    found.sort(key=lambda g: (g.checkpoint.size, len(g.witnesses)), reverse=True)
    return found


def _gather_text(
    text: str,
    signatures: list[NoteSignature],
    log_key: VerifierKey,
    origin: str,
    keys: Mapping[tuple[str, int], VerifierKey],
    groups: Mapping[str, str],
    counts: Counts | None = None,
) -> GatheredCheckpoint | None:
    try:
        checkpoint = parse_checkpoint(text)
    except NoteError:
        return None
    if checkpoint.origin != origin:
        return None
    log_line = next((s for s in signatures if verify_signature(text, s, log_key)), None)
    if log_line is None:
        return None
    # Per witness (names sharing a public key are one, 13.4: the first name that verified) its
    # oldest line and its newest: since when it vouches for the checkpoint, and until when.
    lines: dict[str, list[NoteSignature]] = {}  # witness group -> verified lines of its one name
    for sig in dict.fromkeys(signatures):
        key = keys.get((sig.name, sig.key_id))
        if key is None:
            continue
        held = lines.get(groups[sig.name])
        if held is not None and held[0].name != sig.name:
            continue
        if verify_signature(text, sig, key) and (counts is None or counts(sig, key, checkpoint)):
            lines.setdefault(groups[sig.name], []).append(sig)
    cosigned = {}
    for held in lines.values():
        by_time = sorted(held, key=lambda s: Cosignature.from_note_signature(s).timestamp)
        cosigned[held[0].name] = [by_time[0]] if by_time[0] == by_time[-1] else [by_time[0], by_time[-1]]
    names = tuple(sorted(cosigned))
    note = Note(text, (log_line, *(line for n in names for line in cosigned[n]))).encode()
    return GatheredCheckpoint(checkpoint, note, names, len(set(groups.values())))


def cosigned_by_witness(
    notes: Iterable[bytes],
    origin: str,
    witnesses: Iterable[VerifierKey],
    counts: Counts | None = None,
    above: int = -1,
) -> dict[str, bytes]:
    """Each witness (by the name standing for it, :func:`witness_groups`) -> the largest note of
    ``origin`` among ``notes`` that carries a cosignature line of it that verifies (and that
    ``counts`` allows). The log's signature is NOT checked: a cosignature signs the checkpoint's
    text, so a witness's word on a tree is read even by one that cannot check the key that
    signed the tree (a follower whose key chain lacks a rotation, PROTOCOL 10.7). A note of a
    size at most ``above`` is passed over before any signature is checked.

    Never raises for what ``notes`` hold (a malformed note or line is skipped); NoteError only
    for a witness key not of type 0x04."""
    keys, groups = _witness_table(witnesses)
    largest: dict[str, tuple[int, bytes]] = {}
    for data in notes:
        try:
            note = parse_note(data)
            checkpoint = parse_checkpoint(note.text)
        except NoteError:
            continue
        if checkpoint.origin != origin or checkpoint.size <= above:
            continue
        for sig in note.signatures:
            known = keys.get((sig.name, sig.key_id))
            if known is None or not verify_signature(note.text, sig, known):
                continue
            if counts is not None and not counts(sig, known, checkpoint):
                continue
            group = groups[sig.name]
            if checkpoint.size > largest.get(group, (-1, b""))[0]:
                largest[group] = (checkpoint.size, data)
    return {group: data for group, (_, data) in largest.items()}


def newest(gathered: Iterable[GatheredCheckpoint], min_witnesses: int = 0) -> GatheredCheckpoint | None:
    """The largest checkpoint with at least ``min_witnesses`` cosignatures, or None."""
    return next((g for g in gathered if len(g.witnesses) >= min_witnesses), None)
