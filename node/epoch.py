"""Epochs: a ledger's terms of home, and the handover from its home to its standby (PROTOCOL 10.9).

A ledger's genesis may pin, beside its home's checkpoint key (``rules.checkpoint_key``), the
key of a **standby** ingest node (``rules.standby_key``). Epoch 1 is the genesis home's term.
A handover is a record of kind ``epoch`` placed by the new home, whose payload names the
epoch's number (one more than the last), the new home (the record's own ``origin``) and the
pinned key it signs checkpoints with from then on. Every checkpoint of a size past that
record carries the extension line ``vledger-epoch <number> <home>`` and is signed by that
key; a checkpoint of an earlier epoch past the handover comes from a **fenced** home and is
refused. The key is authorised by the genesis alone, so receipts still verify offline from
it and a cluster witness's cosignature (the epoch rule, PROTOCOL 13.5 step 3: never an outside
witness's, which holds no records); which of the two pinned keys holds the pen is the chain's,
and so every witness's, to say.

Pure: records, checkpoints and keys in, an Epoch out, an error of node/errors.py otherwise.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..config.settings import PROTOCOL_LIMITS
from .cosigning import Counts, GatheredCheckpoint, gather
from .errors import (
    BadEpochError,
    CheckpointError,
    FailbackUnconfiguredError,
    FencedError,
    PromotionRefusedError,
    QuorumError,
    UnverifiedNoteError,
    VledgerError,
    Where,
)
from .ledger import LedgerRules
from .note import Checkpoint, VerifiedCheckpoint, VerifierKey, parse_checkpoint, parse_note, verify_checkpoint
from .record import NAME_PATTERN, Record
from .witness import PINNED_KEY_FIELD, CheckpointKeys, SignedCheckpoint, pinned_key

STANDBY_KEY_FIELD = "standby_key"  # the genesis rules field that pins the standby's checkpoint key
EPOCH_KIND = "epoch"  # the kind of a handover record
EPOCH_FIELDS = ("epoch", "home", "key")  # its payload's keys, exactly
EPOCH_LINE = "vledger-epoch"  # the checkpoint extension line "vledger-epoch <number> <home>"
MAX_NAME = 64


@dataclass(frozen=True, slots=True)
class Epoch:
    """One term of a ledger's home: its ``number`` (1 for the genesis home), the ``home`` node,
    the ``key`` its checkpoints are signed with (None: a genesis that pins none) and the
    ``height`` of the record that opened it (0, the genesis, for epoch 1)."""

    number: int
    home: str
    key: VerifierKey | None
    height: int

    def extensions(self) -> tuple[str, ...]:
        """The extension lines of this epoch's checkpoints: none in epoch 1 (so a ledger that
        never hands over signs exactly what it signed before), else its epoch line."""
        return () if self.number == 1 else (f"{EPOCH_LINE} {self.number} {self.home}",)


def epoch_key(number: int, checkpoint_key: VerifierKey, standby_key: VerifierKey) -> VerifierKey:
    """The pinned key that signs every checkpoint of epoch ``number``: a handover moves to the
    other pinned key (EpochHistory.next_epoch), so the genesis home's key signs the odd epochs
    and the standby's the even ones. What a checker holding only the genesis (a receipt's,
    14.3) can check of an epoch line."""
    return checkpoint_key if number % 2 else standby_key


def epoch_payload(number: int, home: str, key: VerifierKey) -> dict[str, object]:
    """The payload of the handover record that opens epoch ``number`` with ``home`` signing with ``key``."""
    return {"epoch": number, "home": home, "key": key.encode()}


def handover_request_id(number: int, taken: Callable[[str], bool]) -> str:
    """The request id of the handover record that opens epoch ``number`` (PROTOCOL 10.9 step 4):
    ``epoch-<number>``, or, when ``taken`` says its author's records of the ledger hold that id
    already, ``epoch-<number>.<n>`` for the least ``n`` >= 2 they do not. Clients may not use
    the prefix (NODE_REQUEST_PREFIXES), but a record written before that rule, or a forged one,
    would otherwise refuse every promotion to that epoch request_conflict, for good (ho32)."""
    request_id, n = f"epoch-{number}", 1
    while taken(request_id):
        n += 1
        request_id = f"epoch-{number}.{n}"
    return request_id


def epoch_claim(checkpoint: Checkpoint) -> tuple[int, str | None]:
    """The epoch a checkpoint states: (1, None) without an epoch line, else its number and home.

    Raises CheckpointError [bad_checkpoint] for more than one epoch line, or one that is not
    ``vledger-epoch``, a space, a decimal of at least 2 without leading zeros, a space and a
    node name. Other extension lines are opaque and ignored (c2sp.org/tlog-checkpoint).
    """
    found = [line for line in checkpoint.extensions if line.split(" ", 1)[0] == EPOCH_LINE]
    if not found:
        return 1, None
    if len(found) > 1:
        raise CheckpointError("checkpoint: more than one epoch line")
    parts = found[0].split(" ")
    if (
        len(parts) != 3
        or not parts[1].isascii()
        or not parts[1].isdigit()
        or parts[1].startswith("0")
        or len(parts[1]) > 20  # before int(): Python refuses to convert over 4,300 digits (a ValueError)
        or int(parts[1]) < 2
        or not _is_name(parts[2])
    ):
        raise CheckpointError(f"checkpoint: {found[0]!r} is not '{EPOCH_LINE} <number from 2> <node name>'")
    return int(parts[1]), parts[2]


def _is_name(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_NAME and NAME_PATTERN.fullmatch(value) is not None


class EpochHistory:
    """The epochs of one ledger, read from its genesis and then its handover records in height order.

    Raises BadGenesisError (from the constructor) when a pinned key field is not an Ed25519
    note key named after the ledger's origin.
    """

    def __init__(self, cluster: str, genesis: Record, rules: LedgerRules) -> None:
        self.cluster = cluster
        self.rules = rules
        self.ledger = genesis.ledger
        self.checkpoint_key = pinned_key(self.ledger, rules, cluster, PINNED_KEY_FIELD)
        self.standby_key = pinned_key(self.ledger, rules, cluster, STANDBY_KEY_FIELD)
        self.epochs: list[Epoch] = [Epoch(1, genesis.origin, self.checkpoint_key, 0)]

    @classmethod
    def from_genesis(cls, genesis: Record, rules: LedgerRules) -> EpochHistory:
        """The history of a ledger whose cluster is read from its pinned checkpoint key's name
        (``<cluster>/<ledger>``), as a checker that holds only the chain must. Raises
        BadGenesisError as the constructor."""
        value = rules.rules.get(PINNED_KEY_FIELD)
        cluster = value.partition("+")[0].rpartition("/")[0] if isinstance(value, str) else ""
        return cls(cluster, genesis, rules)

    @property
    def current(self) -> Epoch:
        return self.epochs[-1]

    def pinned(self) -> tuple[VerifierKey, ...]:
        """The keys the genesis pins, the only ones any epoch may sign with."""
        return tuple(k for k in (self.checkpoint_key, self.standby_key) if k is not None)

    def feed(self, records: Iterable[Record]) -> list[BadEpochError]:
        """Read the handover records among ``records`` (the ledger's, after the last one fed,
        in height order); other kinds are skipped. A handover record that :meth:`next_epoch`
        refuses opens no epoch (the chain stays valid, 10.9): its error is returned."""
        refused = []
        for record in records:
            if record.height > 0 and record.content.kind == EPOCH_KIND:
                try:
                    self.epochs.append(self.next_epoch(record))
                except BadEpochError as e:
                    refused.append(e)
        return refused

    def extended(self, records: Iterable[Record]) -> EpochHistory:
        """A copy of this history fed ``records`` (a run not stored yet); this one is unchanged."""
        duplicate = copy.copy(self)
        duplicate.epochs = list(self.epochs)
        duplicate.feed(records)
        return duplicate

    def next_epoch(self, record: Record) -> Epoch:
        """The epoch ``record`` opens, checked as the next one; changes nothing.

        Raises BadEpochError [bad_epoch] when the genesis pins no standby key, the payload is
        not exactly ``epoch``, ``home``, ``key``, the number is not one more than the current
        epoch's, the home is not the record's origin or is the current home, the key is not
        one of the two the genesis pins, is the current epoch's key, or signed an earlier epoch
        as another home's.
        """
        where: Where = {"ledger": self.ledger, "height": record.height}
        if self.standby_key is None or self.checkpoint_key is None:
            raise BadEpochError("a handover needs a genesis that pins checkpoint_key and standby_key", **where)
        if record.height <= self.current.height:
            raise BadEpochError(
                f"a handover at or below height {self.current.height} of epoch {self.current.number}", **where
            )
        payload = record.content.payload
        if sorted(payload) != sorted(EPOCH_FIELDS):
            raise BadEpochError(f"an epoch payload has exactly the fields {list(EPOCH_FIELDS)}", **where)
        number, home, key = payload["epoch"], payload["home"], payload["key"]
        expected = self.current.number + 1
        if type(number) is not int or number != expected:
            raise BadEpochError(f"epoch {number!r} after epoch {self.current.number}: expected {expected}", **where)
        if not _is_name(home) or home != record.origin:
            raise BadEpochError(
                f"the new home {home!r} must be the node that placed the record ({record.origin!r})", **where
            )
        if home == self.current.home:
            raise BadEpochError(f"{home!r} is already the home of epoch {self.current.number}", **where)
        pinned = {k.encode(): k for k in self.pinned()}
        if key not in pinned:
            raise BadEpochError("the epoch's key is not one of the keys the genesis pins", **where)
        # The replaced home keeps its key: were it the new epoch's, it would sign valid
        # checkpoints of that epoch (outsider o16 F5). Likewise a key is one home's for good:
        # the home of an earlier epoch that signed with it could sign for any later holder.
        chosen = pinned[key]
        if chosen == self.current.key:
            raise BadEpochError(
                f"the epoch's key is the one epoch {self.current.number} signs with, which its home"
                f" {self.current.home!r} holds: a handover moves to the other pinned key",
                **where,
            )
        earlier = next((e for e in self.epochs if e.key == chosen and e.home != home), None)
        if earlier is not None:
            raise BadEpochError(
                f"the epoch's key signed epoch {earlier.number} as the key of {earlier.home!r}, not of {home!r}",
                **where,
            )
        return Epoch(number, home, chosen, record.height)

    def epoch_at(self, size: int) -> Epoch:
        """The epoch whose home signs the checkpoint of ``size`` records: the last one opened
        by a record below that size (epoch 1 for a size that holds no handover)."""
        return next((e for e in reversed(self.epochs) if e.height < size), self.epochs[0])

    def epoch(self, number: int) -> Epoch | None:
        return self.epochs[number - 1] if 1 <= number <= len(self.epochs) else None

    def check(self, checkpoint: Checkpoint, signer: VerifierKey) -> Epoch | None:
        """The epoch a checkpoint signed by ``signer`` belongs to, by the records fed so far.

        Returns None when it states an epoch past the current one (this copy does not hold its
        handover yet): ``signer`` is then one of the pinned keys and the caller checks again
        once it stored the records up to the checkpoint's size. Raises FencedError [fenced]
        for a checkpoint of an earlier epoch past the next epoch's handover record (its home
        was replaced), BadEpochError [bad_epoch] when its signer or home is not its epoch's,
        CheckpointError for a malformed epoch line.
        """
        number, home = epoch_claim(checkpoint)
        epoch = self.epoch(number)
        if epoch is None:
            if (
                self.checkpoint_key is None
                or self.standby_key is None
                or signer != epoch_key(number, self.checkpoint_key, self.standby_key)
                or checkpoint.size <= self.current.height + 1
            ):
                raise BadEpochError(
                    f"a checkpoint of epoch {number} not signed by that epoch's pinned key, or holding"
                    f" no record past epoch {self.current.number}",
                    ledger=self.ledger,
                )
            return None
        if (number > 1 and home != epoch.home) or (epoch.key is not None and signer != epoch.key):
            raise BadEpochError(
                f"a checkpoint of epoch {number} not signed as its home {epoch.home!r} signs",
                ledger=self.ledger,
                height=epoch.height,
            )
        following = self.epoch(number + 1)
        if following is not None and checkpoint.size > following.height:
            raise FencedError(
                f"a checkpoint of epoch {number} ({epoch.home}) of size {checkpoint.size}, past the handover"
                f" to epoch {following.number} ({following.home}) at height {following.height}",
                ledger=self.ledger,
                height=following.height,
            )
        if number > 1 and checkpoint.size <= epoch.height:
            raise BadEpochError(
                f"a checkpoint of epoch {number} of size {checkpoint.size} that does not hold its handover record",
                ledger=self.ledger,
                height=epoch.height,
            )
        return epoch

    def verify(
        self, data: bytes, *, witnesses: Iterable[VerifierKey] = (), quorum: int = 0, holds: bool = False
    ) -> VerifiedCheckpoint:
        """Open a checkpoint note signed by one of the pinned keys (13.5 with that key as the
        log's) and check its epoch as :meth:`check` does; returns the verified checkpoint.
        ``holds``: this history was fed every record up to the checkpoint's size (an export's or
        a store's check), so an epoch past those it holds was opened by no record (10.9 rule 1).

        Raises the note errors of verify_checkpoint (unverified_note when neither pinned key
        signed it), and those of :meth:`check`; BadEpochError [bad_epoch] for that epoch.
        """
        witnesses = tuple(witnesses)
        keys = self.pinned() or ((self.current.key,) if self.current.key is not None else ())
        last: UnverifiedNoteError | None = None
        for key in keys:
            try:
                verified = verify_checkpoint(data, key, witnesses, quorum)
            except UnverifiedNoteError as e:
                last = e
                continue
            if self.check(verified.checkpoint, key) is None and holds:
                raise BadEpochError(
                    f"a checkpoint of epoch {epoch_claim(verified.checkpoint)[0]} of size"
                    f" {verified.checkpoint.size}, whose records open no such epoch",
                    ledger=self.ledger,
                )
            return verified
        raise last or UnverifiedNoteError(f"no checkpoint key of ledger {self.ledger!r} to check with")


def require_witness(verified: VerifiedCheckpoint, *, trusted: int, outside: Iterable[str] = ()) -> None:
    """The witness rule (10.9, stated once in 13.5 step 3) for a checkpoint of an epoch from 2,
    or signed by a pinned key that no record the checker holds gives the pen (the standby's,
    before a handover it holds): it counts only once a cluster witness cosigned it, a trusted
    witness key (``verified.witnesses``, of the ``trusted`` keys given). A cluster witness holds
    the records and applies 10.9's rules before it cosigns; the key alone, over a tree of its
    own making, would prove any record, and any epoch that no handover record opened. An
    outside witness (13.9, named in ``outside``: never counted here, whatever key it was given
    as) runs generic tlog-witness software that holds no records and applies none of 10.9: it
    cosigns any tree consistent with the last it saw, a thief's forked epoch included
    (outsider o24 F0).

    Raises QuorumError [no_quorum] when no cluster witness cosigned it, saying to give the
    cluster's witness keys when none were given."""
    names = set(outside)
    if any(name not in names for name in verified.witnesses):
        return
    if trusted == 0:
        raise QuorumError(
            "a checkpoint of an epoch from 2 (or signed by the standby key) counts only with a cosignature by one"
            " of the cluster's witnesses, and no cluster witness key was given: give the publisher's anchors"
            " (--anchors) or the cluster's witness keys (--witness); the genesis alone, or an outside witness's"
            " cosignature, does not show its epoch's handover"
        )
    raise QuorumError(
        "a checkpoint of an epoch from 2 (or signed by the standby key) counts only with a cosignature by one"
        f" of the cluster's witnesses (none of the {trusted} trusted witness keys cosigned it; an outside"
        " witness's does not count): nothing else shows its epoch's handover"
    )


def meets_epoch_rule(checkpoint: Checkpoint, cosigners: Iterable[str], cluster: Iterable[str]) -> bool:
    """Whether ``checkpoint``, whose verified cosignatures are by ``cosigners`` (names), passes
    the epoch rule (13.5 step 3) for a reader that holds no records: one stating an epoch from 2
    needs a cosignature by one of the ``cluster`` witnesses' names (an outside witness's never
    counts there). What a server filters its served notes by, so that every reader takes them
    (outsider o24 F0, F5); a malformed epoch line passes for no reader."""
    try:
        number = epoch_claim(checkpoint)[0]
    except CheckpointError:
        return False
    return number < 2 or not set(cluster).isdisjoint(cosigners)


def proven_epoch(
    history: EpochHistory,
    notes: Iterable[bytes],
    witnesses: Iterable[VerifierKey],
    *,
    failback_allowed: Callable[[str, int, str], bool],
) -> tuple[int, str] | None:
    """The newest epoch past ``history``'s current one that a note among ``notes`` proves, as
    (number, home): a checkpoint of the ledger signed by the pinned key of that epoch (the keys
    alternate, :func:`epoch_key`: epoch 2's is the one the genesis home does not sign with),
    stating an epoch past the current one and another home, and cosigned by at least one of
    ``witnesses`` (the cluster's witness keys; :func:`require_witness`). A witness cosigns a
    checkpoint of a new epoch only once its store holds the handover record that opens it; a
    pinned key alone proves nothing, since its holder (the standby's host) could sign any epoch
    line and move the ledger to itself with no promotion (outsider F6). Nor does a claim in
    Redis (``vledger:{ledgers}:epochs``), which every ingest node's Redis user may write. A note
    naming the current home proves nothing to it (its store lacks the epochs between). An epoch
    from 3 counts only when ``failback_allowed(ledger, number, home)`` (the checker's cluster
    file, :func:`may_open`), as witnesses, the verifier and ``vledger repl status`` take it: a
    thief of the home's pinned key with one compromised witness moved the ledger's writes on
    ingest nodes that read the note (fix31). None when no note proves one; a note that does not
    verify raises nothing."""
    current = history.current
    if history.checkpoint_key is None or history.standby_key is None:
        return None
    pinned = (history.checkpoint_key, history.standby_key)
    return newest_witnessed_epoch(
        notes,
        history.pinned(),
        witnesses,
        pinned=pinned,
        above=current.number,
        excluding=current.home,
        allowed=lambda number, home: may_open(history.ledger, number, home, failback_allowed),
    )


def newest_witnessed_epoch(
    notes: Iterable[bytes],
    keys: Iterable[VerifierKey],
    witnesses: Iterable[VerifierKey],
    *,
    pinned: tuple[VerifierKey, VerifierKey] | None = None,
    above: int = 1,
    excluding: str | None = None,
    allowed: Callable[[int, str], bool] = lambda number, home: True,
) -> tuple[int, str] | None:
    """The newest epoch past ``above`` (from 2) that a note among ``notes`` proves, as (number,
    home), whatever its home but ``excluding``: a checkpoint signed by one of ``keys``, stating
    that epoch, cosigned by one of ``witnesses`` (:func:`require_witness`); with ``pinned`` (the
    genesis' checkpoint_key and standby_key), only by the key that epoch signs with
    (:func:`epoch_key`: the keys alternate); only an epoch ``allowed(number, home)`` says the
    cluster file allows (:func:`may_open`: a failback the file allows).
    What a checker holding no records but the genesis (the verifier) or none (``vledger repl
    status``, with the cluster file's home's and standby's key files) takes for the home: after
    a failback (epoch 3) the home is the genesis home again, which a rule "another home than
    epoch 1's" never found. None when no note proves one; a note that does not verify raises
    nothing."""
    keys, witnesses = tuple(keys), tuple(witnesses)
    best: tuple[int, str] | None = None
    for note in notes:
        for key in keys:
            try:
                claimed, named = _witnessed_claim(note, key, witnesses)
            except VledgerError:
                continue
            if named is None or named == excluding or (pinned is not None and key != epoch_key(claimed, *pinned)):
                continue
            if not allowed(claimed, named):
                continue
            if claimed > max(above, best[0] if best else 0):
                best = (claimed, named)
    return best


def epoch_proof(history: EpochHistory, notes: Iterable[bytes], witnesses: Iterable[VerifierKey]) -> bytes | None:
    """The first of ``notes`` that proves ``history``'s current epoch to a home it replaced
    (:func:`proven_epoch`): a checkpoint signed by the key the current epoch signs with,
    stating that epoch and its home, and cosigned by one of ``witnesses``. None for epoch 1
    (nothing to prove) or when no note does."""
    current = history.current
    if current.number < 2 or current.key is None:
        return None
    witnesses = tuple(witnesses)
    for note in notes:
        try:
            if _witnessed_claim(note, current.key, witnesses) == (current.number, current.home):
                return note
        except VledgerError:
            continue
    return None


def _witnessed_claim(note: bytes, key: VerifierKey, witnesses: tuple[VerifierKey, ...]) -> tuple[int, str | None]:
    """The epoch line (:func:`epoch_claim`) of ``note``, a checkpoint signed by ``key`` and
    cosigned by one of ``witnesses`` (:func:`require_witness`); raises the VledgerError of the
    first check it fails."""
    verified = verify_checkpoint(note, key, witnesses)
    require_witness(verified, trusted=len(witnesses))
    return epoch_claim(verified.checkpoint)


def gather_in_epochs(
    notes: Iterable[bytes], history: EpochHistory, witnesses: Iterable[VerifierKey], counts: Counts | None = None
) -> list[GatheredCheckpoint]:
    """Every checkpoint among ``notes`` that one of the keys the genesis pins signed and that
    passes 10.9's epoch rules by ``history`` (the epochs of the records the caller holds), each
    with every verified cosignature by a ``witnesses`` key (node/cosigning.py's gather, whose
    notes nothing vouches for); largest first, more witnesses first at one size.

    Left out, never raised: a note no pinned key signed, a checkpoint of an epoch not signed as
    that epoch signs or not holding its handover record [bad_epoch], one of an earlier epoch
    past the next handover (a fenced home's) [fenced], a malformed epoch line, and one stating
    an epoch past the records held (it is checked once they are: until then it proves nothing
    to this holder). Raises NoteError only for unusable keys, as gather does.
    """
    notes, witnesses = list(notes), tuple(witnesses)
    found = []
    for key in history.pinned():
        for gathered in gather(notes, key, key.name, witnesses, counts):
            try:
                epoch = history.check(gathered.checkpoint, key)
            except (BadEpochError, FencedError, CheckpointError):
                continue
            if epoch is not None:
                found.append(gathered)
    found.sort(key=lambda g: (g.checkpoint.size, len(g.witnesses)), reverse=True)
    return found


class EpochKeys(CheckpointKeys):
    """CheckpointKeys for ledgers that may hand over: a ledger whose genesis pins a standby key
    is checked by its epochs (``epochs_of(ledger)``, the history of the records this checker
    stored), every other ledger with its one key as CheckpointKeys does.
    """

    def __init__(
        self,
        cluster: str,
        key_of: Callable[[str], VerifierKey | None],
        epochs_of: Callable[[str], EpochHistory | None],
        standby_key_of: Callable[[str], VerifierKey | None] = lambda ledger: None,
        base: CheckpointKeys | None = None,
        failback_allowed: Callable[[str, int, str], bool] = lambda ledger, number, home: False,
    ) -> None:
        """``standby_key_of(ledger)``: the configured standby's key, which checks a checkpoint
        of a later epoch before this checker holds the genesis that pins it. ``base`` checks
        the ledgers without a standby (default: their one key), e.g. along key chains (13.8).
        ``failback_allowed(ledger, number, home)``: whether this checker's cluster file lets
        ``home`` open epoch ``number`` from 3 (:meth:`confirm`, :func:`may_open`; default: never,
        so a checker that was given no file takes no epoch past 2 from a run)."""
        super().__init__(cluster, key_of)
        self.epochs_of = epochs_of
        self.standby_key_of = standby_key_of
        self.base = base
        self.failback_allowed = failback_allowed

    def check(self, ledger: str, data: bytes) -> SignedCheckpoint:
        """As CheckpointKeys.check; for a ledger with a standby also EpochHistory.verify's
        errors: BadEpochError [bad_epoch], FencedError [fenced]. Before the genesis is held,
        a checkpoint with an epoch line is checked with the configured standby's key, and
        again by :meth:`confirm` with the genesis its run brings."""
        history = self.epochs_of(ledger)
        if history is None:
            standby = self.standby_key_of(ledger)
            if standby is not None and EPOCH_LINE.encode() in data:
                try:
                    verified = verify_checkpoint(data, standby, origin=standby.name)
                except UnverifiedNoteError:
                    pass  # a later epoch of the home's key: checked with it below
                else:
                    return SignedCheckpoint(ledger, verified.checkpoint.size, verified.checkpoint.root, data)
        if history is None or history.standby_key is None:
            return super().check(ledger, data) if self.base is None else self.base.check(ledger, data)
        verified = history.verify(data)
        return SignedCheckpoint(ledger, verified.checkpoint.size, verified.checkpoint.root, data)

    def confirm(self, checkpoint: SignedCheckpoint, run: list[Record]) -> None:
        """Check ``checkpoint`` by the epochs of the stored records followed by ``run``: a
        checkpoint that claimed an epoch ahead of the store must now find it in the run (with
        the genesis, when the run starts with it). Raises BadEpochError or FencedError as
        EpochHistory.check, and the genesis' BadGenesisError; FailbackUnconfiguredError
        [failback_unconfigured] when the run opens an epoch from 3 that the cluster file does
        not allow (``failback_allowed``)."""
        history = self.epochs_of(checkpoint.ledger)
        claim = epoch_claim(_body(checkpoint))[0]
        if history is None and run and run[0].height == 0:
            genesis = run[0]
            history = EpochHistory(self.cluster, genesis, LedgerRules.from_genesis(genesis.content, PROTOCOL_LIMITS))
            run = run[1:]
        if history is None or history.standby_key is None:
            if claim > 1:
                raise BadEpochError(
                    "a checkpoint with an epoch line of a ledger whose genesis pins no standby key",
                    ledger=checkpoint.ledger,
                    height=checkpoint.height,
                )
            return
        ahead = history.extended(run)
        ahead.verify(checkpoint.note)  # fenced, or signed as another epoch: refused
        if claim > ahead.current.number:
            raise BadEpochError(
                f"a checkpoint of an epoch past {ahead.current.number}, the last one its records open",
                ledger=checkpoint.ledger,
                height=checkpoint.height,
            )
        opened = ahead.current
        if opened.number > history.current.number and not may_open(
            checkpoint.ledger, opened.number, opened.home, self.failback_allowed
        ):
            raise FailbackUnconfiguredError(
                f"a handover opening epoch {opened.number} at {opened.home!r}, which this node's cluster file"
                f" does not name the standby of {checkpoint.ledger!r} (nor states its epoch = {opened.number}):"
                " only the operator's swap of the file on every host gives a pinned key the pen again (a"
                " thief of it could place this record); not stored",
                ledger=checkpoint.ledger,
                height=opened.height,
            )


def may_open(ledger: str, number: int, home: str, failback_allowed: Callable[[str, int, str], bool]) -> bool:
    """Whether a checker whose cluster file answers ``failback_allowed(ledger, number, home)``
    (config/cluster.py's allows_epoch) takes epoch ``number`` of ``ledger`` at ``home``
    (PROTOCOL 10.9, "A failback"): epochs 1 and 2 always (the genesis pins epoch 2's key to
    its standby); epoch 3 and later only when the file allows it. The
    genesis pins that key too, but it held the pen before and was handed over from, perhaps
    because it was stolen: ``--key-not-stolen`` is asked of the promoting node alone, which a
    thief holding the key and a Redis password never asks. Only the newest epoch a run opens
    (the one its checkpoint states) is held to it, so that a copy catching up over epochs 3 and
    4 while the file names epoch 4's home stores both: a thief of one key signs no checkpoint
    of the other key's epochs, and one of its own key's after them is held to the file."""
    return number < 3 or failback_allowed(ledger, number, home)


def _body(checkpoint: SignedCheckpoint) -> Checkpoint:
    return parse_checkpoint(parse_note(checkpoint.note).text)


def check_promotion(ledger: str, standby: str, held: int, acknowledged: int) -> None:
    """Whether ``standby``, holding ``held`` records of ``ledger``, may become its home.

    ``acknowledged`` is the largest size a write concern acknowledged: the largest checkpoint
    a witness cosigned. Raises PromotionRefusedError [promotion_refused] when the standby holds
    fewer: promoting it would lose records a client was told are safe.
    """
    if held < acknowledged:
        raise PromotionRefusedError(
            f"{standby} holds {held} records of {ledger!r}, but {acknowledged} were acknowledged"
            " (cosigned); wait until it caught up"
        )
