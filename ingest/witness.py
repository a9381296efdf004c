"""A witness: a replica or observer that cosigns the home's checkpoints its own copy proves.

The follower (vledger.ingest.follow) reports each checkpoint whose size the store now holds
with the checkpoint's root (``verified``). On each turn of the follow loop the witness
cosigns, per ledger, only the newest of them (older ones it skips: at most one cosignature
per ledger in flight), and only when it is consistent with the last checkpoint it cosigned:
its store holds that one's size, and the tree there still has that one's root, so the
store itself proves the old tree is a prefix of the new one. It keeps every cosignature in
its store and publishes the latest in Redis (``vledger:{<ledger>}:cosig``, docs/PROTOCOL.md
section 10.7), where the ingest nodes count them for ``w``. The follower reports the home's
checkpoint again at each heartbeat: on a quiet ledger the witness cosigns the one it cosigned
last again once its newest line there is ``recosign_interval_ms`` old, its first line kept, so
that a live view's head stays fresh and a frozen one's ages (11.4).

On start, and before each cosignature, a store that no longer holds the last checkpoint it
cosigned (shorter, or another root) is reported naming this node (``cosigned_not_held``) and
the ledger is cosigned no more until it does again, which resolves the alert; one an earlier
run raised is resolved once the store holds the checkpoint it names (:meth:`Witness.carry_over`).

A follower node runs the witness's turns on a thread of its own (:class:`Cosigner`): a
cosignature costs a signature, an fsync of its row and a Redis round trip, which the follow
loop used to wait for after each batch before it received the next (replication lag).
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from ..broker.replication import COSIGNED_NOT_HELD, REDIS_ERRORS, Alert, ReplicationLedger
from ..config.cluster import ReplicationSettings
from ..node.checkpoint_log import COSIGNED, SIGNED, KeptCheckpoint
from ..node.cosigning import MAX_CLOCK_SKEW_MS, recosign_due_ms
from ..node.epoch import EpochHistory, epoch_claim
from ..node.errors import NoteError, StoreContradictsCheckpointError, VledgerError
from ..node.note import open_note, parse_checkpoint, parse_note, verify_signature
from ..node.outside import WITNESSES_FIELD
from ..node.store import ChainStore
from ..node.witness import (
    CheckpointKeys,
    Contradiction,
    SignedCheckpoint,
    WitnessSigner,
    check_extends,
    last_cosignature_ms,
)
from .worker import Worker

log = logging.getLogger(__name__)

PUBLISH_RETRY_SECONDS = 1.0  # a Cosigner's turn at least this often: a cosignature Redis missed goes again
# How often a witness reads back its own cosignature keys: one made of another type by the admin's
# user reads as none to everyone (MGET), and a quiet ledger's is written again only every
# recosign_interval_ms (PROTOCOL 10.5).
OWN_KEYS_CHECK_SECONDS = 5.0


def self_check(store: ChainStore, kind: str) -> dict[str, StoreContradictsCheckpointError]:
    """The ledgers whose store no longer holds the latest checkpoint this node kept of ``kind``
    (SIGNED for a home, COSIGNED for a witness), each with the error that says how."""
    found = {}
    for ledger in sorted({*store.ledgers(), *store.checkpoints.ledgers(kind)}):
        latest = store.checkpoints.latest(ledger, kind)
        if latest is None:
            continue
        try:
            check_holds(store, latest)
        except StoreContradictsCheckpointError as e:
            found[ledger] = e
    return found


def check_published(
    store: ChainStore, keys: CheckpointKeys, notes: Mapping[str, Iterable[bytes]]
) -> dict[str, StoreContradictsCheckpointError]:
    """The ledgers whose store does not hold a checkpoint published elsewhere (``notes``: the
    home's latest in Redis, the witnesses' cosigned ones) that ``keys`` verifies: one this home
    signed, even if its own table of them was lost with its store. Notes that do not verify
    prove nothing and are skipped."""
    found = {}
    for ledger, published in sorted(notes.items()):
        for note in published:
            try:
                checkpoint = keys.check(ledger, note)
            except NoteError:
                continue
            kept = KeptCheckpoint(ledger, SIGNED, checkpoint.size, checkpoint.root, note, 0)
            try:
                check_holds(store, kept)
            except StoreContradictsCheckpointError as e:
                found[ledger] = e
                break
    return found


def _root_or_error(store: ChainStore, ledger: str, size: int) -> str:
    try:
        return store.root(ledger, size).hex()
    except VledgerError as e:
        return f"{e.code}: {e.message}"


def check_holds(store: ChainStore, kept: KeptCheckpoint) -> None:
    """Raise StoreContradictsCheckpointError unless ``store`` holds ``kept``; a store that cannot
    even give its root there (rows gone under it) holds nothing."""
    held = store.size(kept.ledger)
    try:
        held_root = store.root(kept.ledger, kept.size) if held >= kept.size else None
    except VledgerError as e:
        raise StoreContradictsCheckpointError(
            f"ledger {kept.ledger!r}: the store cannot give its tree root at size {kept.size}: {e.message}",
            ledger=kept.ledger,
            height=kept.size - 1,
        ) from e
    check_extends(kept.ledger, kept.size, kept.root, held, held_root)


def contradiction_alert(
    node: str, expected: bytes | None, error: StoreContradictsCheckpointError, what: str | None = None
) -> Alert:
    """The alert that names ``node`` as holding a store its own checkpoint contradicts, of kind
    ``what`` (the error's code unless given)."""
    return Alert(
        node=node,
        ledger=error.ledger or "",
        height=error.height if error.height is not None else 0,
        what=what or error.code,
        detail=f"{node}: {error.reason}",
        source=node,
        expected=expected.hex() if expected is not None else "",
    )


class Witness:
    """Cosigns what the follower verified: :meth:`verified` on the follow loop's thread,
    :meth:`turn` on one thread (a :class:`Cosigner`'s, or the same)."""

    def __init__(
        self,
        name: str,
        store: ChainStore,
        signer: WitnessSigner,
        replication: ReplicationLedger,
        on_alert: Callable[[Alert], None],
        *,
        clock: Callable[[], float] = time.time,
        epochs_of: Callable[[str], EpochHistory | None] = lambda ledger: None,
        recosign_ms: int = ReplicationSettings().recosign_interval_ms,
        heartbeat_ms: int = ReplicationSettings().heartbeat_ms,
    ) -> None:
        self.name = name
        # A quiet ledger's last checkpoint is cosigned again once this witness's newest line on
        # it is this old (PROTOCOL 10.7): the home sends it every heartbeat, and its head stays
        # fresh on a live view while a frozen one turns STALE (11.4). Asked once a heartbeat, it
        # cosigns a little early (recosign_due_ms) so that no live line is older than the interval.
        self.recosign_ms = recosign_ms
        self.recosign_due_ms = recosign_due_ms(recosign_ms, heartbeat_ms)
        # A ledger's epochs by the store's records (ingest/epochs.py EpochBook.history; None:
        # no handover is possible, one home's key for ever).
        self.epochs_of = epochs_of
        self.store = store
        self.signer = signer
        self.replication = replication
        self.on_alert = on_alert
        self._clock = clock
        self._newest: dict[str, SignedCheckpoint] = {}  # verified, not cosigned yet: the newest per ledger
        self._newest_lock = threading.Lock()  # verified() and turn() may run on two threads
        self.wake: Callable[[], None] = lambda: None  # told of each verified checkpoint (a Cosigner)
        self._last: dict[str, KeptCheckpoint] = {}  # the last checkpoint cosigned, per ledger
        self._unpublished: dict[str, KeptCheckpoint] = {}  # cosigned, not in Redis yet
        self._blocked: set[str] = set()  # ledgers whose store contradicts the last cosignature
        # An earlier run's open cosigned_not_held per ledger, as (size, root) of the checkpoint it
        # names: resolved once the store holds that one (carry_over).
        self._carried: dict[str, tuple[int, bytes]] = {}
        self._signer_changed = False  # a new key to cosign the last checkpoints with again (16.6)
        # Ledgers whose own published note (Redis) was compared with the store's last cosigned row
        # in this run: a store lost or rebuilt below it no longer knows what this witness vouched for.
        self._asked: set[str] = set()
        # Of those, the ledgers whose last cosigned is that note and whose store is still shorter than
        # it (wiped, repaired, put back): blocked without an alert while it catches up.
        self._adopted: set[str] = set()
        # Of those, the size the follower last verified below it: the same size again is the home
        # resting there (a heartbeat), not a catch-up on its way, and the silence ends (review r23).
        self._below: dict[str, int] = {}
        # Redis failed a read of an own note in this start or turn: the other ledgers wait for the
        # next turn rather than a timeout each (review r23: N ledgers, N timeouts, at start).
        self._redis_failed = False
        self._keys_checked_at = -float("inf")
        self.cosigned = 0

    def carry_over(self, alerts: Mapping[str, Mapping[str, object]]) -> None:
        """Take as this run's the open ``cosigned_not_held`` alerts an earlier run of this witness
        raised (``alerts``: its own open hash, key -> the alert's fields), each resolved once the
        store holds the checkpoint it names (``height`` + 1 records, tree root ``expected``): a
        store repaired or restored while the node was stopped. Called before :meth:`start`.

        The store's last cosigned row is no criterion: a repair drops one its new copy does not
        prove, and a copy refilled from a home that signed another tree at that size is vouched
        for by that home, but holds no more what this witness cosigned (review 11 C). An alert
        whose height or root is not one stays the operator's."""
        for key, alert in alerts.items():
            node, _, rest = key.partition("|")
            ledger, _, what = rest.rpartition("|")
            if node != self.name or not ledger or what != COSIGNED_NOT_HELD or alert.get("source") != self.name:
                continue
            try:
                size, root = int(str(alert.get("height"))) + 1, bytes.fromhex(str(alert.get("expected")))
            except ValueError:
                continue
            if size > 0 and len(root) == 32:
                self._carried[ledger] = (size, root)

    def start(self) -> None:
        """Check the store against the last checkpoint cosigned of each ledger; republish those
        of the ledger's current epoch (10.9): one of an epoch whose home was replaced since (a
        promotion) stays only what later cosignatures must extend. Redis's cosignature key of
        the ledger then waits for this witness's first of the new home's checkpoints."""
        self._redis_failed = False
        for ledger in self.store.checkpoints.ledgers(COSIGNED):
            last = self.store.checkpoints.latest(ledger, COSIGNED)
            if last is None:
                continue
            self._last[ledger] = last
            # Redis's note first: republishing the store's row would set back a larger one a store
            # rebuilt below it lost (review r22 F1); unasked (Redis away), nothing is republished.
            asked = self._published_last(ledger)
            last = self._last[ledger]
            if asked and self._of_current_epoch(last):
                self._unpublished[ledger] = last
            else:
                log.info("%s: the last cosignature of %s (size %d) is of a replaced home: not republished",
                         self.name, ledger, last.size)  # fmt: skip
            self._holds(last)
        self._settle_carried()
        self._publish()

    def _replace_damaged(self) -> None:
        """At most every OWN_KEYS_CHECK_SECONDS: this witness's cosignature keys found of another
        type are published again (SET replaces them), with ``redis_key_damaged`` raised and resolved;
        and those found gone (Redis lost its data, or someone deleted them) are published again
        from what it holds, when of the ledger's current epoch as at a start (o21 F5: a quiet
        ledger's key came back only at the next recosign, and every reader said STALE for minutes)."""
        now = self._clock()
        if now < self._keys_checked_at + OWN_KEYS_CHECK_SECONDS:
            return
        self._keys_checked_at = now
        ledgers = {self.replication.cosig_key(ledger, self.name): ledger for ledger in self._last}
        try:
            damaged, missing = self.replication.read_back(list(ledgers))
            for key in missing:
                kept = self._last[ledgers[key]]
                if kept.ledger in self._unpublished or not self._of_current_epoch(kept):
                    continue
                log.info("%s: its cosignature of %s (size %d) is gone from Redis: published again",
                         self.name, kept.ledger, kept.size)  # fmt: skip
                self._unpublished[kept.ledger] = kept
            for key, error in damaged.items():
                kept = self._last[ledgers[key]]
                write = functools.partial(self.replication.publish_cosignature, kept.ledger, self.name, kept.size,
                                          kept.note, recent=self._outside_listed(kept.ledger))  # fmt: skip
                self.replication.replace_damaged(key, error, write, delete=False)
                self._unpublished.pop(kept.ledger, None)
        except REDIS_ERRORS as e:
            log.warning("%s: its cosignature keys not read back, Redis unavailable (%s)", self.name, e)

    def _of_current_epoch(self, kept: KeptCheckpoint) -> bool:
        """Whether the cosigned note ``kept`` states the ledger's current epoch (its number and
        home) and carries its home's verified signature, by the epochs the store's records prove."""
        history = self.epochs_of(kept.ledger)
        if history is None:
            return True
        current = history.current
        try:
            number, home = epoch_claim(parse_checkpoint(parse_note(kept.note).text))
            if current.key is not None:
                open_note(kept.note, (current.key,))  # raises unless the home's key signed it
        except VledgerError:
            return False
        return number == current.number and (number == 1 or home == current.home)

    def verified(self, checkpoint: SignedCheckpoint) -> None:
        """The follower's report: the store now holds ``checkpoint`` (root checked at its size)."""
        with self._newest_lock:
            newest = self._newest.get(checkpoint.ledger)
            if newest is None or checkpoint.size > newest.size:
                self._newest[checkpoint.ledger] = checkpoint
        self.wake()

    def sign_with(self, signer: WitnessSigner) -> None:
        """Cosign with ``signer`` from now on (any thread), and cosign again with it the last
        checkpoint of each ledger (on the next turn's thread): a key rotation states the sizes
        the replaced key had cosigned when the admin home read Redis, and a cosignature by it
        made since, of a larger checkpoint, counts for nothing (PROTOCOL 16.6)."""
        with self._newest_lock:
            self.signer = signer
            self._signer_changed = True
        self.wake()

    def turn(self) -> None:
        """Cosign the newest verified checkpoint of each ledger, then publish what Redis lacks."""
        with self._newest_lock:
            newest, self._newest = self._newest, {}
            again, self._signer_changed = self._signer_changed, False
        self._redis_failed = False
        if again:
            self._cosign_again()
        for checkpoint in newest.values():
            try:
                self._cosign(checkpoint)
            except VledgerError as e:
                log.error("%s: cannot cosign %s at %d: %s", self.name, checkpoint.ledger, checkpoint.size, e)
        self._settle_carried()
        self._replace_damaged()
        self._publish()

    def evidence(self, checkpoint: SignedCheckpoint, source: str, proof: Contradiction | None = None) -> None:
        """Keep in Redis a checkpoint by the home's key that this copy contradicts, verbatim, beside
        what this witness cosigned last and, for an equivocation, the home's other note that this
        copy's tree has with the consistency proof from the contradicted size to it (base64 lines):
        anyone can check both notes with the home's key and the proof, without this copy."""
        last = self._last.get(checkpoint.ledger)
        record = {
            "checkpoint": checkpoint.note.decode("utf-8"),
            "from": source,
            "held_root": _root_or_error(self.store, checkpoint.ledger, checkpoint.size),
            "cosigned": last.note.decode("utf-8") if last is not None else "",
            "proved_by": proof.checkpoint.note.decode("utf-8") if proof is not None else "",
            "consistency": "\n".join(base64.b64encode(h).decode("ascii") for h in proof.proof) if proof else "",
        }
        try:
            self.replication.keep_evidence(self.name, checkpoint.ledger, checkpoint.size, record)
        except REDIS_ERRORS as e:
            log.error("%s: evidence not kept in Redis (%s): %s", self.name, e, json.dumps(record))

    def _holds(self, last: KeptCheckpoint) -> bool:
        """Whether the store still holds ``last``; if not, the ledger is blocked and reported once."""
        if last.ledger in self._adopted:
            if self.store.size(last.ledger) < last.size:
                return False  # still catching up to its own published note: nothing said yet
            self._adopted.discard(last.ledger)
        try:
            check_holds(self.store, last)
        except StoreContradictsCheckpointError as e:
            if last.ledger not in self._blocked:
                self._blocked.add(last.ledger)
                self._carried.pop(last.ledger, None)  # its field now holds this one, resolved as below
                log.error("%s: %s; cosigning no more of %s", self.name, e, last.ledger)
                self.on_alert(contradiction_alert(self.name, last.root, e, COSIGNED_NOT_HELD))
            return False
        if last.ledger in self._blocked:
            self._blocked.discard(last.ledger)
            self._resolve_contradiction(last)
        return True

    def _resolve_contradiction(self, last: KeptCheckpoint) -> None:
        """The store holds ``last`` again (refilled with the home's records): the alert that said it
        did not is resolved (PROTOCOL 10.5), unless raised since at a greater height."""
        self._resolve_held(last.ledger, last.size)

    def _resolve_held(self, ledger: str, size: int) -> bool:
        """Resolve this witness's ``cosigned_not_held`` of ``ledger`` raised at heights below
        ``size``; False if Redis did not answer (it stays open)."""
        key = f"{self.name}|{ledger}|{COSIGNED_NOT_HELD}"
        try:
            if self.replication.resolve_up_to([key], size - 1):
                log.info("%s: its store holds what it cosigned of %s again: %s resolved", self.name, ledger, key)
        except REDIS_ERRORS as e:
            log.warning("%s: alert not resolved in Redis (%s): %s", self.name, e, key)
            return False
        return True

    def _settle_carried(self) -> None:
        """Resolve each alert :meth:`carry_over` took whose checkpoint the store now holds."""
        for ledger, (size, root) in list(self._carried.items()):
            if self.store.size(ledger) < size or _root_or_error(self.store, ledger, size) != root.hex():
                continue
            if self._resolve_held(ledger, size):
                del self._carried[ledger]

    def _published_last(self, ledger: str) -> bool:
        """Before this run's first cosignature of ``ledger``: the note this witness published last
        (Redis), when its own line verifies with its key and it is larger than the store's last
        cosigned row, becomes the last cosigned (kept as a row), so that a store lost, or rebuilt
        by a repair below it, never leads it to cosign another tree (review r22 F1). False while
        Redis does not answer: nothing is cosigned before it is asked."""
        if ledger in self._asked:
            return True
        if self._redis_failed:
            return False
        try:
            note = self.replication.cosignatures(ledger, [self.name]).get(self.name)
        except REDIS_ERRORS as e:
            self._redis_failed = True
            log.warning("%s: its published cosignature of %s not read (%s): not cosigning yet", self.name, ledger, e)
            return False
        self._asked.add(ledger)
        if note is None:
            return True
        try:
            parsed = parse_note(note)
            checkpoint = parse_checkpoint(parsed.text)
        except NoteError:
            return True
        mine = self.signer.key.verifier()
        if checkpoint.origin.rpartition("/")[2] != ledger or not any(
            verify_signature(parsed.text, line, mine) for line in parsed.signatures
        ):
            return True
        last = self._last.get(ledger)
        if last is not None and last.size >= checkpoint.size:
            return True
        self.store.checkpoints.keep(ledger, COSIGNED, checkpoint.size, checkpoint.root, note)
        self._last[ledger] = KeptCheckpoint(ledger, COSIGNED, checkpoint.size, checkpoint.root, note, 0)
        self._adopted.add(ledger)
        log.warning("%s: its store lacked its published cosignature of %s at %d: taken as the last one",
                    self.name, ledger, checkpoint.size)  # fmt: skip
        return True

    def _cosign(self, checkpoint: SignedCheckpoint) -> None:
        ledger = checkpoint.ledger
        if not self._published_last(ledger):
            return
        last = self._last.get(ledger)
        if last is not None:
            if checkpoint.size == last.size:
                self._cosign_quiet(checkpoint, last)
                return
            if checkpoint.size < last.size:
                if ledger in self._adopted and self._below.get(ledger) == checkpoint.size:
                    self._adopted.discard(ledger)  # its home rests below its own note: say so
                    self._holds(last)
                self._below[ledger] = checkpoint.size
                return  # older than what this witness vouched for already
            if not self._holds(last):
                return
        if self.store.size(ledger) < checkpoint.size or self.store.root(ledger, checkpoint.size) != checkpoint.root:
            return  # the follower verified it; a store that changed since is not vouched for
        note = self.signer.cosign(checkpoint, int(self._clock()))
        self.store.checkpoints.keep(ledger, COSIGNED, checkpoint.size, checkpoint.root, note)
        kept = KeptCheckpoint(ledger, COSIGNED, checkpoint.size, checkpoint.root, note, int(self._clock() * 1000))
        self._last[ledger] = self._unpublished[ledger] = kept
        self.cosigned += 1

    def _cosign_quiet(self, checkpoint: SignedCheckpoint, last: KeptCheckpoint) -> None:
        """The home's checkpoint again at the size this witness cosigned last: cosigned once more,
        at a fresh time, when its newest line there is ``recosign_ms`` old and the root is the one
        it cosigned (another root at that size is the home signing two trees: never cosigned,
        the follower keeps the evidence, 10.7). The store's row of that checkpoint keeps the
        note as published: the first line, then the newest (:meth:`CheckpointLog.renew`)."""
        ledger = checkpoint.ledger
        if checkpoint.root != last.root:
            log.error("%s: %s at size %d has another root than the checkpoint cosigned there: not cosigned",
                      self.name, ledger, checkpoint.size)  # fmt: skip
            return
        # A blocked ledger is looked at again on every report of the size it cosigned, not only
        # when a cosignature is due: a quiet ledger's home reports no larger one, and a store
        # fetched whole again (a hole filled) left its alert open and the ledger uncosigned.
        if ledger in self._blocked and not self._holds(last):
            return
        now = self._clock()
        # The line written last, not the largest, and one dated beyond the clock skew ahead is due
        # too: written while this host's clock ran ahead, it stayed the newest until the clock
        # caught up (a day: outsider o15, the witness_clock alert open all along), keeping no
        # head fresh meanwhile (11.4).
        newest = last_cosignature_ms(last.note, self.signer.name)
        ahead = newest is not None and newest - now * 1000 > MAX_CLOCK_SKEW_MS
        if newest is not None and now * 1000 - newest < self.recosign_due_ms and not ahead:
            return
        if not self._holds(last):
            return
        again = self.signer.cosign_again(last.note, int(now))
        # Kept before it is published, as a first cosignature is: started again, the witness goes
        # on from this line (no re-cosigning at once) and publishes what readers saw.
        self.store.checkpoints.renew(ledger, last.size, last.root, again)
        self._last[ledger] = self._unpublished[ledger] = replace(last, note=again, at_ms=int(now * 1000))
        self.cosigned += 1

    def _cosign_again(self) -> None:
        """The last checkpoint cosigned of each ledger, cosigned with the signer now (its line
        replacing this witness's earlier ones on the note), kept and published."""
        for ledger, last in list(self._last.items()):
            if not self._holds(last):  # a blocked one too: a store that holds it again is unblocked
                continue
            note = parse_note(last.note)
            home_only = type(note)(note.text, tuple(s for s in note.signatures if s.name != self.signer.name))
            signed = SignedCheckpoint(ledger, last.size, last.root, home_only.encode())
            again = self.signer.cosign(signed, int(self._clock()))
            self.store.checkpoints.keep(ledger, COSIGNED, last.size, last.root, again)
            kept = KeptCheckpoint(ledger, COSIGNED, last.size, last.root, again, int(self._clock() * 1000))
            self._last[ledger] = self._unpublished[ledger] = kept

    def _outside_listed(self, ledger: str) -> bool:
        """Whether ``ledger``'s genesis lists outside witnesses: its home then looks among this
        witness's recent notes for a checkpoint a majority cosigned (PROTOCOL 13.9), which the
        other ledgers leave out of Redis."""
        try:
            return WITNESSES_FIELD in self.store.rules(ledger).rules
        except VledgerError:
            return False

    def _publish(self) -> None:
        for ledger, kept in list(self._unpublished.items()):
            try:
                self.replication.publish_cosignature(
                    ledger, self.name, kept.size, kept.note, recent=self._outside_listed(ledger)
                )
            except REDIS_ERRORS as e:
                log.warning("%s: cosignature of %s not published, Redis unavailable (%s)", self.name, ledger, e)
                return
            del self._unpublished[ledger]


class Cosigner(Worker):
    """Runs ``witness``'s turns on a thread of its own: woken by each checkpoint the follower
    verified, and at least every PUBLISH_RETRY_SECONDS (a cosignature Redis did not take is
    published again). Start it after :meth:`Witness.start`; :meth:`stop` runs a last turn."""

    def __init__(self, witness: Witness) -> None:
        super().__init__(f"cosign-{witness.name}")
        self.witness = witness
        self._event = threading.Event()
        witness.wake = self._event.set

    def _run(self) -> None:
        while not self.stopping.is_set():
            self._event.wait(PUBLISH_RETRY_SECONDS)
            self._event.clear()
            self._turn()
        self._turn()  # what was verified before the stop is cosigned (its store is still open)

    def _turn(self) -> None:
        try:
            self.witness.turn()
        except Exception as e:  # the next checkpoint is cosigned anyway: the thread must outlive one failure
            if self.witness.store.damaged(e) is None:  # damaged: logged, and the node stops (runtime)
                log.exception("%s: a cosigning turn failed", self.witness.name)

    def _wake(self) -> None:
        self._event.set()
