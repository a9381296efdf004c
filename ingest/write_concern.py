"""Write concern by proof: answer a put with ``w=N`` once N witnesses cosigned a checkpoint covering it.

A witness (a replica) cosigns a checkpoint only once its own store holds it
(vledger.ingest.witness) and publishes the cosigned note in Redis, in
``vledger:{<ledger>}:cosig``. Redis is open to whoever reaches it, so nothing there is
believed: for each note under a known witness's name, this home checks the witness's
cosignature with that witness's key (``<witness>.sign.pub``), its own signature, and that
the checkpoint is one it signed itself (kept in its store). A record at height h counts a
witness once that witness's verified cosignature is of a checkpoint whose size is > h.

One thread follows the ``vledger:cosigned`` channel: a message there only says which
ledger to read again (and every ``RECHECK_SECONDS`` each ledger with waiters is read
again, since pub/sub drops messages). A note under a known witness's name that fails these
checks raises a ``bad_cosignature`` alert naming that witness, once per note. A waiter
that passes its deadline fails with ``replication_timeout``: its record is durable on the
home node all the same, and the error says so. If Redis is unreachable, waiters time out.

A ledger this node no longer homes (a newer epoch named its standby, PROTOCOL 10.9) is not
read, and a note that fails is not reported when it proves that handover itself
(``handed_over``: a checkpoint of a newer epoch signed by the pinned key this home does not
sign with and cosigned by a witness, or a store that holds the handover record): its witnesses now cosign the new
home's checkpoints, which this node's key never signed, so every one of them would be
reported as a forgery after an honest handover. Its waiters time out: the new home's
witnesses never cover what this node placed past it. Redis's word alone (``epochs``, which
every ingest node's Redis user may write) silences no report.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..broker.replication import REDIS_ERRORS, Alert, ReplicationLedger
from ..node.checkpoint_log import SIGNED, CheckpointLog
from ..node.errors import CosignatureError, NoteError, NoteKeyError, QuorumError, ReplicationTimeoutError
from ..node.node_key_rotation import KeyHistory
from ..node.note import VerifierKey
from ..node.store import Receipt
from ..node.witness import check_cosigned, check_cosigned_in_force
from .worker import Worker

log = logging.getLogger(__name__)

LISTEN_SLICE = 0.05  # seconds between two deadline checks
RETRY_PAUSE = 0.5
RECHECK_SECONDS = 0.5  # how often the cosignatures of ledgers with waiters are read without a message
MAX_REMEMBERED_NOTES = 10_000


@dataclass(slots=True)
class _Waiter:
    receipt: Receipt
    replicas: int
    deadline: float
    future: Future[tuple[Receipt, list[str]]]
    timeout_ms: int


@dataclass(slots=True)
class _Ledger:
    covered: dict[str, int] = field(default_factory=dict)  # witness -> the largest size it verifiably cosigned
    waiters: list[_Waiter] = field(default_factory=list)


class CosignatureWatch(Worker):
    """Waits for witness cosignatures on behalf of the ingest node ``home``.

    ``witnesses`` maps each witness the cluster knows to its cosignature key; those in
    ``ignored`` (the observers: they cosign, but hold copies to count, not to keep them
    safe) never count. ``histories()`` gives the nodes' key generations from the admin ledger
    (docs/PROTOCOL.md 16.6): a witness whose Ed25519 key rotated counts by its new key, and by
    its old one only for a cosignature stamped before the rotation's ``until``.
    ``log_key_of(ledger, note)`` is this home's checkpoint key that must have signed
    ``note`` (the one in force at its size, 13.8), ``checkpoints`` its store's kept checkpoints.
    ``owns(ledger)`` says whether this node is the ledger's home now (10.9);
    ``handed_over(ledger, note)`` whether ``note`` (or this home's store) proves that another
    node homes a newer epoch of ``ledger`` (ingest/epochs.py handed_over);
    ``earlier_epoch(ledger, note, key)`` whether ``note``, verified with ``key``, is a checkpoint
    an earlier epoch's home signed below the handover to this one, of the records this home
    holds (ingest/epochs.py earlier_epoch): counted, never reported.
    """

    def __init__(
        self,
        home: str,
        replication: ReplicationLedger,
        checkpoints: CheckpointLog,
        *,
        cluster: str,
        witnesses: Mapping[str, VerifierKey],
        log_key_of: Callable[[str, bytes], VerifierKey | None],
        on_alert: Callable[[Alert], None],
        ignored: Collection[str] = (),
        clock: Callable[[], float] = time.monotonic,
        histories: Callable[[], Mapping[str, KeyHistory]] | None = None,
        owns: Callable[[str], bool] = lambda ledger: True,
        handed_over: Callable[[str, bytes], bool] = lambda ledger, note: False,
        earlier_epoch: Callable[[str, bytes, VerifierKey], bool] = lambda ledger, note, key: False,
        hurry: Callable[[str, int], None] = lambda ledger, height: None,
    ) -> None:
        super().__init__(f"write-concern-{home}")
        # Asks the outbox for the pass that signs and ships a waiter's record now, not at the end
        # of outbox_interval_ms (OutboxProcess.hurry): the witnesses cosign only what it ships.
        self.hurry = hurry
        self.home = home
        self.replication = replication
        self.checkpoints = checkpoints
        self.cluster = cluster
        self.witnesses = {name: key for name, key in witnesses.items() if name != home}
        self.log_key_of = log_key_of
        self.histories = histories
        self.owns = owns
        self.handed_over = handed_over
        self.earlier_epoch = earlier_epoch
        self.on_alert = on_alert
        self.ignored = frozenset(ignored) | {home}
        self._clock = clock
        self._lock = threading.Lock()
        self._ledgers: dict[str, _Ledger] = {}
        self._dirty: set[str] = set()  # ledgers whose cosignatures must be read again
        self._seen: dict[tuple[str, str], bytes] = {}  # (ledger, witness) -> the last note checked
        self._reported: set[bytes] = set()  # digests of notes already reported as bad

    def wait(self, receipt: Receipt, replicas: int, timeout_ms: int) -> Future[tuple[Receipt, list[str]]]:
        """A future of (receipt, the witnesses that cosigned past it), or of a ReplicationTimeoutError."""
        future: Future[tuple[Receipt, list[str]]] = Future()
        waiter = _Waiter(receipt, replicas, self._clock() + timeout_ms / 1000, future, timeout_ms)
        with self._lock:
            ledger = self._ledgers.get(receipt.ledger)
            if ledger is None:
                ledger = self._ledgers[receipt.ledger] = _Ledger()
            ledger.waiters.append(waiter)
            self._dirty.add(receipt.ledger)
            self._settle(ledger)
        if not future.done():
            self.hurry(receipt.ledger, receipt.height)
        return future

    def never_met(self, replicas: int) -> str | None:
        """Why a write concern of ``replicas`` can never be met here, or None when it can: more
        than the witnesses that count (replicas other than the home, one a key). A put asking
        for it is refused before it is written (outsider o15 #3: it was written, then answered
        replication_timeout after write_timeout_ms)."""
        histories = self.histories() if self.histories is not None else {}
        countable = len({self._current_key(name, histories) for name in self.witnesses if name not in self.ignored})
        if replicas <= countable:
            return None
        return (
            f"w={replicas} can never be met here: only {countable} witnesses count for w "
            "(replicas other than the home; observers cosign but are not counted)"
        )

    def _stopped(self) -> None:
        with self._lock:
            for ledger in self._ledgers.values():
                for waiter in ledger.waiters:
                    self._fail(waiter)
                ledger.waiters.clear()

    # --- the watch thread ---------------------------------------------------------------------

    def _run(self) -> None:
        pubsub: Any = None
        next_recheck = self._clock()
        while not self.stopping.is_set():
            try:
                if pubsub is None:
                    pubsub = self.replication.client.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self.replication.cosigned_channel)
                    with self._lock:  # what moved while we were not listening
                        self._dirty.update(self._ledgers)
                if self._clock() >= next_recheck:
                    next_recheck = self._clock() + RECHECK_SECONDS
                    with self._lock:
                        self._dirty.update(name for name, ledger in self._ledgers.items() if ledger.waiters)
                self._read_dirty()
                message = pubsub.get_message(timeout=LISTEN_SLICE)
                if message is not None and message.get("type") in ("message", b"message"):
                    self._heard(message["data"])
                self._expire()
            except REDIS_ERRORS as e:
                log.warning("write concern: Redis unavailable (%s); retrying", e)
                if pubsub is not None:
                    pubsub.close()
                    pubsub = None
                self._expire()
                self.stopping.wait(RETRY_PAUSE)
        if pubsub is not None:
            pubsub.close()

    def _heard(self, data: bytes | str) -> None:
        """A hint that a witness cosigned: read that ledger's cosignatures again (if anyone waits)."""
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        parts = text.split(" ")
        if len(parts) != 3:
            # Any node's Redis user may publish there: junk is only noise, never logged loud.
            log.debug("write concern: a message on the cosigned channel that is no hint, ignored: %.40r", text)
            return
        with self._lock:
            if parts[1] in self._ledgers:
                self._dirty.add(parts[1])

    def _read_dirty(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        for name in dirty:
            if not self.owns(name):
                continue
            notes = self.replication.cosignatures(name)
            found = {}
            for witness, note in notes.items():
                size = self._check(name, witness, note)
                if size is not None:
                    found[witness] = size
            with self._lock:
                ledger = self._ledgers[name]
                for witness, size in found.items():
                    ledger.covered[witness] = max(size, ledger.covered.get(witness, 0))
                self._settle(ledger)

    def _check(self, ledger: str, witness: str, note: bytes) -> int | None:
        """The size ``witness`` verifiably cosigned in ``note``, or None (a bad note is reported)."""
        key = self.witnesses.get(witness)
        if key is None:
            return None  # not a witness of this cluster: nothing to check it with, it never counts
        if self._seen.get((ledger, witness)) == note:
            return None  # checked before; what it proved is in ``covered`` already
        if len(self._seen) >= MAX_REMEMBERED_NOTES:
            self._seen.clear()
        self._seen[(ledger, witness)] = note
        try:
            log_key = self.log_key_of(ledger, note)
            if log_key is None:
                raise NoteKeyError(f"no checkpoint key of {ledger!r} for this note")
            history = self.histories().get(witness) if self.histories is not None else None
            if history is not None and len(history.generations) > 1:
                cosigned = check_cosigned_in_force(note, ledger, self.cluster, log_key, witness, history)
            else:
                cosigned = check_cosigned(note, ledger, self.cluster, log_key, key)
        except NoteError as e:
            if isinstance(e, QuorumError) and e.past_replaced_key:
                log.info("write concern: %s (16.6: not counted, no alert)", e.message)
            elif not self.handed_over(ledger, note):
                self._report(ledger, witness, note, 0, f"does not verify: {e.code}: {e.message}")
            return None
        signed = self.checkpoints.at(ledger, SIGNED, cosigned.size)
        if not any(c.root == cosigned.root for c in signed):
            if self.earlier_epoch(ledger, note, log_key):
                # The previous home's checkpoint below the handover, of the records this home holds:
                # a witness's old cosignature (a store rebuilt republishes one), not a forgery.
                log.info(
                    "write concern: %s's cosignature on %s at %d is of an earlier epoch", witness, ledger, cosigned.size
                )
                return cosigned.size
            self._report(ledger, witness, note, cosigned.size, "is of a checkpoint this home never signed")
            return None
        return cosigned.size

    def _report(self, ledger: str, witness: str, note: bytes, size: int, why: str) -> None:
        digest = hashlib.sha256(note).digest()
        if digest in self._reported:
            return
        if len(self._reported) >= MAX_REMEMBERED_NOTES:
            self._reported.clear()
        self._reported.add(digest)
        error = CosignatureError(f"the cosignature of {witness} on {ledger} in Redis {why}")
        log.warning("write concern: %s", error.message)
        self.on_alert(
            Alert(
                node=self.home,
                ledger=ledger,
                height=max(0, size - 1),
                what=error.code,
                detail=error.message,
                source=witness,
                found="sha256:" + digest.hex(),
            )
        )

    def _settle(self, ledger: _Ledger) -> None:
        """Resolve the waiters that enough witnesses now satisfy (the lock is held)."""
        if not ledger.waiters:
            return
        waiting = []
        keys = self._current_keys(ledger)  # once for every waiter: many wait under pipelined puts
        for waiter in ledger.waiters:
            holders = self._holders(ledger, waiter, keys)
            if len(holders) >= waiter.replicas:
                waiter.future.set_result((waiter.receipt, holders))
            else:
                waiting.append(waiter)
        ledger.waiters = waiting

    def _holders(self, ledger: _Ledger, waiter: _Waiter, keys: Mapping[str, bytes] | None = None) -> list[str]:
        height = waiter.receipt.height
        holders: list[str] = []
        counted: set[bytes] = set()
        keys = self._current_keys(ledger) if keys is None else keys
        for w in sorted(w for w, size in ledger.covered.items() if size > height and w not in self.ignored):
            key = keys[w]
            if key not in counted:
                counted.add(key)
                holders.append(w)
        return holders

    def _current_keys(self, ledger: _Ledger) -> dict[str, bytes]:
        histories = self.histories() if self.histories is not None else {}
        return {w: self._current_key(w, histories) for w in ledger.covered}

    def _current_key(self, witness: str, histories: Mapping[str, KeyHistory]) -> bytes:
        """The Ed25519 key ``witness`` signs with now: witnesses with one key are one witness
        (PROTOCOL 13.4: the name is not signed, so either signs for both), counted once under
        the first of their names. Its newest generation's, not the key it had when this
        started: a rotation to another node's key would otherwise make one host count twice."""
        history = histories.get(witness)
        if history is not None and history.newest.sign:
            return bytes.fromhex(history.newest.sign)
        return self.witnesses[witness].public_key if witness in self.witnesses else witness.encode()

    def _expire(self) -> None:
        now = self._clock()
        with self._lock:
            for ledger in self._ledgers.values():
                if not ledger.waiters:
                    continue
                late = [w for w in ledger.waiters if w.deadline <= now]
                if late:
                    ledger.waiters = [w for w in ledger.waiters if w.deadline > now]
                    for waiter in late:
                        self._fail(waiter, self._holders(ledger, waiter))

    def _fail(self, waiter: _Waiter, holders: list[str] | None = None) -> None:
        receipt = waiter.receipt
        holders = holders or []
        # "2 of the 5 asked for" reads as two slow witnesses; with three replicas it never could be
        # 5 (a put asking that is refused, but witnesses may have come to share a key since).
        never = self.never_met(waiter.replicas)
        waiter.future.set_exception(
            ReplicationTimeoutError(
                f"the record is durable on {self.home} (ledger {receipt.ledger!r} height {receipt.height}), "
                f"but {len(holders)} of the {waiter.replicas} witnesses asked for cosigned a checkpoint "
                f"covering it within {waiter.timeout_ms} ms{'; ' + never if never else ''}",
                ledger=receipt.ledger,
                height=receipt.height,
                hash=receipt.hash,
                replicas=holders,
            )
        )
