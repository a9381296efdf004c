"""The outbox: every record a node's store makes durable goes on the feed, then to its Redis stream.

The store is the source of truth. The committer hands each group's records over (a
callback that only queues them); one thread publishes them on the node's PUB socket, then
adds them to the ledgers' streams in one round trip, then records that this node holds
them. If Redis is down the feed goes on without it, and once Redis is
back the outbox reads what the stream lacks from the store: the stream's last height is
the cursor, so nothing is lost and nothing added twice (docs/INTERNALS.md). Every
``heartbeat_ms`` it publishes its heads, so a subscriber sees a gap at the end of a burst.
It sends at most once per ``outbox_interval_ms``: a lone writer's puts, one group commit
each, then share a pass (its Redis round trips, publish and signature) instead of paying one
each while they compete with the request path for the CPU.

A home node's outbox also signs **checkpoints** (vledger.node.witness): after each batch
(at most once per ``checkpoint_interval_ms`` and ledger; a ledger left unsigned is signed
once that time has passed) the tree size and root of each ledger it wrote to, signed with
the node's Ed25519 key, kept in the store and sent after the records, on the feed and in
the stream; every heartbeat sends the latest checkpoint of every ledger. Followers store
records only under a checkpoint. A ledger whose store contradicts a checkpoint this home
signed before (``refused``) is never signed again.

A replica runs an outbox too, with ``stream=False`` and no signer: the home node's outbox
fills the streams; a relay republishes what it stored, with one more hop, and forwards the
home's checkpoints it verified.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Protocol

import redis

from ..broker.replication import HOME_REWRITTEN, REDIS_ERRORS, Alert, LastRead, ReplicationLedger
from ..config.cluster import ReplicationSettings
from ..config.settings import PROTOCOL_LIMITS
from ..node.checkpoint_log import SIGNED, CheckpointLog
from ..node.conflict import hash_of, told_apart
from ..node.epoch import epoch_proof, proven_epoch
from ..node.errors import StoreDamagedError, VledgerError
from ..node.ledger import LedgerRules
from ..node.node_keys import node_of_witness
from ..node.note import VerifierKey
from ..node.record import Record, decode_record
from ..node.storefile import disk_full
from ..node.tree import Frontier
from ..node.witness import HomeSigner, SignedCheckpoint
from .epochs import LOOK_FOR_EPOCH_SECONDS, ReadEpochs

log = logging.getLogger(__name__)

REDIS_RETRY_SECONDS = 1.0
ON_DEMAND_STEP = 256  # a range page without a kept checkpoint gets one signed at a multiple of this

Row = tuple[str, int, bytes]  # a durable record as the outbox sends it: ledger, height, its bytes


class OutboxStore(Protocol):
    """What an outbox reads of a store: a node's ChainStore, or (in the outbox's own process,
    ingest/outbox_process.py) a read-only view of the same file, which has no tree and no
    signer, so its frontier and root are not used there. ``damaged`` reports a damaged file
    (ChainStore.damaged: the node's alert, and it stops; the view's: the process's alert and
    its end with EXIT_STORE_DAMAGED)."""

    checkpoints: CheckpointLog

    def heads(self) -> dict[str, tuple[int, bytes]]: ...

    def size(self, ledger: str) -> int: ...

    def stored_size(self, ledger: str) -> int: ...

    def get(self, ledger: str, height: int) -> Record | None: ...

    def range_raw(self, ledger: str, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]: ...

    def rules(self, ledger: str) -> LedgerRules: ...

    def frontier(self, ledger: str) -> Frontier: ...

    def root(self, ledger: str, size: int | None = None) -> bytes: ...

    def damaged(self, error: BaseException) -> StoreDamagedError | None: ...


class FeedSink(Protocol):
    """Where an outbox publishes: the node's Publisher, or the outbox process's pipe to it."""

    def record(self, ledger: str, height: int, data: bytes, hops: int = 1) -> None: ...

    def checkpoints(self, checkpoints: Iterable[SignedCheckpoint]) -> None: ...


class Outbox:
    """Streams and publishes a store's new records, on a thread of its own (:meth:`start`)."""

    def __init__(
        self,
        name: str,
        store: OutboxStore,
        publisher: FeedSink | None,
        replication: ReplicationLedger | None,
        settings: ReplicationSettings,
        *,
        stream: bool = True,
        signer: HomeSigner | None = None,
        refused: Mapping[str, VledgerError] | None = None,
        epochs: Callable[[str, int], tuple[str, ...] | None] = lambda ledger, size: (),
        owns: Callable[[str], bool] = lambda ledger: True,
        witnesses: Callable[[], Iterable[VerifierKey]] = lambda: (),
        failback_allowed: Callable[[str, int, str], bool] = lambda ledger, number, home: False,
        clock: Callable[[], float] = time.monotonic,
        later: float = 0.0,
    ) -> None:
        self.name = name
        self.store = store
        self.publisher = publisher
        self.replication = replication
        self.settings = settings
        self.stream = stream and replication is not None
        self._clock = clock
        self.signer = signer  # a home node's key: it signs checkpoints of what it places
        # The epoch lines it signs a size with; None: another node's epoch (10.9), it signs none.
        self.epochs = epochs
        # Whether this node is the ledger's home now and so writes its stream: a standby that
        # follows it, or a home replaced while it was cut off, never repairs it from its store.
        self.owns = owns
        # The cluster's witness keys in force: a note in Redis proves another home's epoch only
        # with one's cosignature (10.9; none given: only the store's handover record proves it).
        self.witnesses = witnesses
        # Whether the cluster file lets a home open an epoch from 3 (10.9, config/cluster.py's
        # ConfiguredFailbacks): a note of one it does not allow proves no handover (default: none does).
        self.failback_allowed = failback_allowed
        self.refused = dict(refused or {})  # ledgers whose store contradicts a checkpoint signed before
        self.checkpoints: dict[str, SignedCheckpoint] = {}  # the latest of each ledger, sent every heartbeat
        self._interval = settings.checkpoint_interval_ms / 1000
        self._signed_at: dict[str, float] = {}  # ledger -> when its last checkpoint was signed
        self._due: dict[str, float] = {}  # ledgers with records no checkpoint covers yet -> when to sign
        self._sign_lock = threading.Lock()  # the outbox thread and the read path (on demand) both sign
        # Held through a pass (its drain, checkpoints and heartbeat), by the outbox thread or by a
        # committing thread that runs one once its commit ended (OutboxProcess.committed).
        self._pass_lock = threading.Lock()
        self._gap = settings.outbox_interval_ms / 1000
        self._passed_at = -math.inf  # when the last pass began, on whichever thread
        self.full_said = False  # a pass found the disk full, logged once (pass_failed) until one succeeds
        self._later = later  # how much longer than _gap the thread waits for a committing thread's pass
        self._signed_max: dict[str, int] = {}  # ledger -> the largest size sign() kept or found kept
        # Records are encoded on the outbox's thread (or come encoded: committed_rows), not the committer's.
        self._queue: collections.deque[tuple[Sequence[Record | Row], int, list[SignedCheckpoint]]] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        # Ends the wait for the gap before a pass: set by stop, and when the gap is made shorter (_gap_end).
        self._nudge = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported: dict[str, int] = {}  # ledger -> the height Redis knows this node holds
        # ledger -> the highest height this outbox put in the stream itself (appended or filled
        # from the store): entries up to it need not be read back to know they are its own.
        self._streamed: dict[str, int] = {}
        # ledger -> the highest height this outbox streamed in its run, never cleared (an outage
        # or a refusal undoes nothing it placed): once past its handover, no fenced home's last
        # append can come after it (:meth:`_replaced_home_of`).
        self._placed: dict[str, int] = {}
        # ledger -> the lowest height of a stream rewrite not done yet: the home's own alert
        # against ``redis`` resolves once the stream holds its records past it again.
        self._rewritten: dict[str, int] = {}
        # ledger -> the newer epoch of another home that a signed note proved (10.9): its stream is left alone
        self._left: dict[str, tuple[int, str]] = {}
        self._unproven: set[tuple[str, int, str]] = set()  # epochs Redis names that nothing proved, warned of once
        # ledger -> when the notes in Redis may next be read for a handover Redis's epochs hash does
        # not name (its entry deleted, or naming this node): the same rule as the node's (Homes).
        self._look_at: dict[str, float] = {}
        self._never_hands_over: set[str] = set()  # held ledgers whose genesis pins no standby key: no look
        self._refusals: set[str] = set()  # ledgers Redis's ACL refused this node a write of (logged once)
        # ledger -> the epoch of its own whose witnessed proof it kept, and that proof
        self._proof_kept: dict[str, tuple[int, bytes]] = {}
        self._epochs = ReadEpochs(None, store)  # the ledgers' epochs as the store holds them
        # Redis's epochs hash, as last read while any ingest user made it another type: a claim
        # either way (_replaced), and a read that failed stopped every heartbeat's sync (review17 2).
        self._named = LastRead(replication.epochs_key, replication.epochs) if replication is not None else None
        self._redis_retry_at = 0.0
        self.published = 0

    # --- any thread -------------------------------------------------------------------

    def backlog(self) -> int:
        """Commits queued and not yet streamed and published (read by the metrics, any thread)."""
        return len(self._queue)

    def committed(self, records: list[Record], hops: int = 1, checkpoints: Iterable[SignedCheckpoint] = ()) -> None:
        """Queue a group's durable records (the store's ``on_commit``), and for a relay the
        checkpoints that cover them, to go out after them: quick, never raises."""
        self._queue.append((records, hops, list(checkpoints)))
        if not self._wake.is_set():  # set already (a pass is due): Event.set would take its lock for nothing
            self._wake.set()

    def committed_rows(self, rows: list[Row], hops: int = 1, checkpoints: Iterable[SignedCheckpoint] = ()) -> None:
        """:meth:`committed` for records read back from the store as bytes (the outbox process)."""
        self._queue.append((rows, hops, list(checkpoints)))
        self._wake.set()

    def sign(self, ledger: str, size: int, *, with_commit: bool = False) -> SignedCheckpoint | None:
        """A home's checkpoint of the first ``size`` records of ``ledger``, kept in the store
        (an equal one kept before is reused); None without a signer, for a refused ledger, and
        for a size of another home's epoch (10.9). ``with_commit``: group commits are likely
        to follow (a batch's): the row may wait a moment for one to write it
        (CheckpointLog.keep). Raises VledgerError when the store cannot give the root or keep
        the checkpoint."""
        return self._sign_each({ledger: size}, with_commit=with_commit).get(ledger)

    def _sign_each(
        self, sizes: Mapping[str, int], *, with_commit: bool = False, writer_held: bool = False
    ) -> dict[str, SignedCheckpoint]:
        """:meth:`sign` of each ledger at its size in ``sizes``, those it gives None left out; the
        new rows kept together, so that a batch's ledgers wait for one group commit, not one each
        (CheckpointLog.keep_signed). ``writer_held``: the caller holds the store's writer lock
        and this outbox's sign lock (a pass on the committing thread): the rows are written at once."""
        if self.signer is None:
            return {}
        due: dict[str, tuple[int, tuple[str, ...]]] = {}
        for ledger, size in sizes.items():
            extensions = self.epochs(ledger, size) if ledger not in self.refused and size > 0 else None
            if extensions is not None:
                due[ledger] = (size, extensions)
        if writer_held:
            return self._sign_locked(due, with_commit=False, writer_held=True)
        with self._sign_lock:
            return self._sign_locked(due, with_commit=with_commit, writer_held=False)

    def _sign_locked(
        self, due: Mapping[str, tuple[int, tuple[str, ...]]], *, with_commit: bool, writer_held: bool
    ) -> dict[str, SignedCheckpoint]:
        """:meth:`_sign_each`'s signatures of ``due`` (ledger -> size and epoch lines), the caller
        holding the sign lock."""
        assert self.signer is not None
        signed: dict[str, SignedCheckpoint] = {}
        fresh: list[SignedCheckpoint] = []
        for ledger, (size, extensions) in due.items():
            frontier = self.store.frontier(ledger)  # at the head (the usual case) its root costs no read
            root = frontier.root() if frontier.size == size else self.store.root(ledger, size)
            # Past every size this outbox signed, no row can be kept yet (only this outbox keeps
            # signed rows, and its first signature of a ledger looks): the look-up, a read that
            # also let the request thread take the GIL, is spared on each batch's checkpoint.
            most = self._signed_max.get(ledger)
            if most is None or size <= most:
                kept = [c for c in self.store.checkpoints.at(ledger, SIGNED, size) if c.root == root]
                if kept:
                    self._signed_max[ledger] = max(size, most or 0)
                    signed[ledger] = SignedCheckpoint(ledger, size, root, kept[0].note)
                    continue
            signed[ledger] = self.signer.sign(ledger, size, root, extensions)
            fresh.append(signed[ledger])
        rows = [(c.ledger, c.size, c.root, c.note) for c in fresh]
        self.store.checkpoints.keep_signed(rows, with_commit=with_commit, writer_held=writer_held)
        for checkpoint in fresh:
            self._signed_max[checkpoint.ledger] = max(checkpoint.size, self._signed_max.get(checkpoint.ledger, 0))
        return signed

    def latest(self, ledger: str) -> bytes | None:
        """The latest checkpoint of ``ledger`` this outbox sends (a home signed it)."""
        checkpoint = self.checkpoints.get(ledger)
        return checkpoint.note if checkpoint is not None else None

    def covering(self, ledger: str, start: int, end: int) -> bytes | None:
        """A home's checkpoint whose size ends among the records ``start .. end - 1`` (what a
        ``range`` reply carries, so its reader can store them): the largest kept, else one
        signed now at the last multiple of ON_DEMAND_STEP among them; None if there is none,
        and for a refused ledger. Whatever pages readers ask for, a home signs on demand at
        most one checkpoint per ON_DEMAND_STEP records (each is kept and served again)."""
        if self.signer is None or ledger in self.refused:
            return None
        kept = self.store.checkpoints.latest(ledger, SIGNED, at_most=end, above=start)
        if kept is not None:
            return kept.note
        aligned = end - end % ON_DEMAND_STEP
        if not start < aligned <= self.store.size(ledger):
            return None
        checkpoint = self.sign(ledger, aligned)
        return checkpoint.note if checkpoint is not None else None

    def start(self) -> Outbox:
        self._thread = threading.Thread(target=self._run, name=f"outbox-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Publish what is queued, then stop."""
        self._stop.set()
        self._nudge.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # --- the outbox thread ----------------------------------------------------------------

    def _run(self) -> None:
        heartbeat = self.settings.heartbeat_ms / 1000
        next_beat = self._clock()  # the first pass syncs with Redis at once
        try:
            heads = self.store.heads()  # what the store held before this start
        except Exception as e:
            if self.store.damaged(e) is None:
                raise
            return  # reported (the store's damaged): nothing more can be read
        for ledger, (height, _) in heads.items():
            try:
                self._keep(self.sign(ledger, height + 1))
            except VledgerError as e:
                log.error("outbox: cannot sign a checkpoint of %s at %d: %s", ledger, height + 1, e)
        while True:
            # A pass costs Redis round trips, a publish and a signature, whatever it carries: a
            # lone writer's puts wait for the next pass together instead of one pass each (their
            # acknowledgements do not wait for it, and the pass competes with them for the CPU).
            # The gap is waited first, on _nudge (stop, or a gap made shorter: _gap_end): a put
            # committed meanwhile (committed) sets _wake and wakes no thread, where the first put
            # after a pass woke this one only for it to go back to sleep, taking the GIL from the
            # request loop as that put ended.
            while not self._stop.is_set() and self._clock() < self._gap_end():
                self._nudge.wait(self._gap_end() - self._clock())
                self._nudge.clear()  # then the loop's test again: a nudge set meanwhile is not lost
            due = min(self._due.values(), default=math.inf)
            self._await(max(0.0, min(next_beat, due) - self._clock()))
            with self._pass_lock:
                self._passed_at = self._clock()
                self._wake.clear()
                stopping = self._stop.is_set()
                try:
                    self._drain()
                    self._ship_checkpoints(self._sign_due())
                    if self._clock() >= next_beat:
                        next_beat = self._clock() + heartbeat
                        self._heartbeat()
                except Exception as e:  # the outbox must outlive any one failure: the store has it all
                    if self.store.damaged(e) is not None:
                        # Unless its file is damaged: reported (an alert, and the node or outbox
                        # process ends with EXIT_STORE_DAMAGED); tried again, it would fail for ever.
                        return
                    self.pass_failed(e)
                else:
                    self.full_said = False
            if stopping and not self._queue:
                return

    def pass_failed(self, error: BaseException) -> None:
        """Log a pass that failed: a full disk (its checkpoint rows not kept) in one line, once
        until a pass succeeds, not a traceback each heartbeat (op33; the node raises disk_full
        from its puts); anything else with its traceback."""
        if not disk_full(error):
            log.exception("outbox: publishing failed; the next heartbeat tries again")
        elif not self.full_said:
            self.full_said = True
            log.error("outbox: disk full, publishing waits for room; the next heartbeat tries again: %s", error)

    def _gap_end(self) -> float:
        """When the thread's next pass may begin: ``_later`` past the gap while a committing
        thread may run the pass itself (OutboxProcess, which also makes it sooner for a put's
        write concern)."""
        return self._passed_at + self._gap + self._later

    def _await(self, seconds: float) -> None:
        """Wait up to ``seconds`` for work (:meth:`committed` wakes it)."""
        self._wake.wait(seconds)

    def _heartbeat(self) -> None:
        """Every ``heartbeat_ms``: the latest checkpoints on the feed, the streams synced with the store."""
        if self.publisher is not None:
            self.publisher.checkpoints(self.checkpoints.values())
        self._sync_redis()

    def _drain(self) -> None:
        # A follower's outbox that neither publishes nor streams (no pub_port) only reports held
        # heights: its records are not encoded again for nothing, beside the follow loop's work.
        ships = self.publisher is not None or self.stream
        while self._queue:
            batch: list[tuple[str, int, bytes, int]] = []
            relayed: list[SignedCheckpoint] = []
            while self._queue and len(batch) < self.settings.catch_up_batch:
                records, hops, checkpoints = self._queue.popleft()
                for item in records:
                    if isinstance(item, Record):
                        batch.append((item.ledger, item.height, item.encode() if ships else b"", hops))
                    else:
                        batch.append((*item, hops))
                relayed.extend(checkpoints)
            sizes = {ledger: height + 1 for ledger, height, _, _ in batch}
            fresh = self._sign_batch(sizes) if self.signer is not None else relayed
            for checkpoint in fresh:
                self._keep(checkpoint)
            # The feed first: it is what followers wait on (replication lag), and a Redis round
            # trip before it added its whole time, and more when Redis waited for the CPU. The
            # stream is the complete path (a follower that finds it short asks the home's range).
            if self.publisher is not None:
                for ledger, height, data, hops in batch:
                    if hops <= self.settings.max_hops:
                        self.publisher.record(ledger, height, data, hops)
                        self.published += 1
                if fresh:
                    self.publisher.checkpoints(fresh)  # after the records they cover
            self._to_stream(batch)
            self._report({ledger: size - 1 for ledger, size in sizes.items()})

    def _keep(self, checkpoint: SignedCheckpoint | None) -> None:
        if checkpoint is None:
            return
        latest = self.checkpoints.get(checkpoint.ledger)
        if latest is None or checkpoint.size > latest.size:
            self.checkpoints[checkpoint.ledger] = checkpoint

    def _sign_batch(self, sizes: Mapping[str, int], *, writer_held: bool = False) -> list[SignedCheckpoint]:
        """A home's checkpoint of each ledger at its size in ``sizes`` (a batch's last record
        + 1), for the ledgers not signed within ``checkpoint_interval_ms`` (the others are due
        later). ``writer_held``: see :meth:`_sign_each`."""
        now = self._clock()
        due: dict[str, int] = {}
        for ledger, size in sizes.items():
            ready = self._signed_at.get(ledger, -math.inf) + self._interval
            if now < ready:
                self._due.setdefault(ledger, ready)
            else:
                due[ledger] = size
        signed = self._sign_each(due, with_commit=not writer_held, writer_held=writer_held)
        for ledger in signed:
            self._signed_at[ledger] = now
            self._due.pop(ledger, None)
        return list(signed.values())

    def _sign_due(self) -> list[SignedCheckpoint]:
        """Sign the ledgers whose records waited ``checkpoint_interval_ms`` for a checkpoint."""
        now = self._clock()
        fresh = []
        for ledger, when in list(self._due.items()):
            if when > now:
                continue
            del self._due[ledger]
            checkpoint = self.sign(ledger, self.store.size(ledger))
            if checkpoint is not None:
                self._signed_at[ledger] = now
                self._keep(checkpoint)
                fresh.append(checkpoint)
        return fresh

    def _ship_checkpoints(self, fresh: list[SignedCheckpoint]) -> None:
        """Send checkpoints signed without a batch of records (``_sign_due``) to Redis and the feed."""
        if fresh:
            if self.stream and self._redis_usable():
                assert self.replication is not None
                try:
                    for ledger, refusal in self.replication.set_checkpoints({c.ledger: c.note for c in fresh}).items():
                        self._refused(ledger, refusal)
                except REDIS_ERRORS as e:
                    self._redis_failed(e)
            if self.publisher is not None:
                self.publisher.checkpoints(fresh)

    def _redis_usable(self) -> bool:
        return self.replication is not None and self._clock() >= self._redis_retry_at

    def _redis_failed(self, error: Exception) -> None:
        log.warning("outbox: Redis unavailable (%s); the feed goes on, the stream catches up later", error)
        self._redis_retry_at = self._clock() + REDIS_RETRY_SECONDS
        self._streamed.clear()  # a Redis that comes back may have lost or been given entries

    def _to_stream(self, batch: list[tuple[str, int, bytes, int]]) -> None:
        """Append ``batch`` to its ledgers' streams; whatever a stream lacks below it comes from the store."""
        if not self.stream or not self._redis_usable():
            return
        runs: dict[str, list[tuple[str, int, bytes, int]]] = {}
        for item in batch:
            if self.owns(item[0]):
                runs.setdefault(item[0], []).append(item)
        try:
            for ledger, run in runs.items():
                checkpoint = self.checkpoints.get(ledger)
                note = checkpoint.note if checkpoint is not None and checkpoint.height == run[-1][1] else b""
                try:
                    self._append(ledger, run[0][1], [data for _, _, data, _ in run], note)
                    self._allowed(ledger)
                except redis.exceptions.NoPermissionError as e:
                    self._refused(ledger, e)
        except REDIS_ERRORS as e:
            self._redis_failed(e)

    def _refused(self, ledger: str, error: Exception) -> None:
        """Redis's ACL refuses this node a write of ``ledger`` (a ``redis.acl`` written before the
        cluster file named this node its home or standby: ``vledger keygen --cluster`` again):
        that ledger's stream stays behind, logged and raised as ``stream_refused`` once until a
        write of it passes (:meth:`_allowed`); the other ledgers go on (a pause of all of Redis for
        one ledger's refusal stalled every stream). An alert, not a log line alone: the stream,
        what every follower and reader takes records from, stayed behind the head while `vledger
        status` said OK (outsider o21 F1)."""
        if ledger not in self._refusals:
            advice = (
                "give Redis the redis.acl `vledger keygen --cluster` writes (run it on the operator's machine,"
                " copy redis.acl to the Redis host, restart redis-server there or run ACL LOAD as Redis's"
                " own admin user: no vledger user may)"
            )
            log.warning("outbox: Redis refuses this node's writes of %s (%s): its stream stays behind until"
                        " Redis's ACL lets it: %s", ledger, error, advice)  # fmt: skip
            alert = Alert(
                self.name, ledger, max(self.store.size(ledger) - 1, 0), "stream_refused",
                f"Redis refuses {self.name}'s writes of {ledger}'s stream, checkpoint and epoch proof (its ACL"
                f" predates the cluster file that names {self.name} a home of it): {advice}",
            )  # fmt: skip
            try:
                assert self.replication is not None
                self.replication.alert(alert)
            except REDIS_ERRORS as e:
                log.warning("outbox: the stream_refused alert of %s could not be raised: %s", ledger, e)
        self._refusals.add(ledger)
        self._streamed.pop(ledger, None)

    def _allowed(self, ledger: str) -> None:
        """A write of ``ledger`` passed: a refusal of it (:meth:`_refused`) is over, its alert resolved."""
        if ledger not in self._refusals:
            return
        self._refusals.discard(ledger)
        try:
            assert self.replication is not None
            if self.replication.resolve([f"{self.name}|{ledger}|stream_refused"]):
                log.info("outbox: Redis takes this node's writes of %s again: its stream_refused alert is resolved",
                         ledger)  # fmt: skip
        except REDIS_ERRORS as e:
            self._refusals.add(ledger)  # resolved at a later pass
            log.debug("outbox: the stream_refused alert of %s could not be resolved yet: %s", ledger, e)

    def _append(self, ledger: str, first: int, records: list[bytes], checkpoint: bytes) -> None:
        """Append a run to the stream; if the stream ends below ``first`` (a Redis outage or a
        restart that lost its tail), fill it from the store up to the run's end. The run's end
        is durable here: Redis is told this node holds it in the append's round trip (what
        :meth:`_report` then finds reported), not in one of its own."""
        assert self.replication is not None
        end = first + len(records) - 1
        held = end if self._reported.get(ledger, -1) < end else None
        last, conflict = self.replication.append_checked(ledger, self.name, first, records, checkpoint, held=held)
        if held is not None:
            self._reported[ledger] = held
        # The stream holds heights above the run: are they ours? Only those this outbox did not
        # add itself are read back. A heartbeat's fill from the store runs ahead of the queue
        # when the outbox is behind; reading that whole lead again for each run of the queue
        # made each pass slower the further behind it was, and the queue grew without bound.
        checked = max(end, self._streamed.get(ledger, -1))
        if conflict is None and last > checked:
            conflict = self._first_foreign(ledger, checked + 1, last)
        if conflict is not None:
            if self._replaced(ledger, self._named_epochs(), look=True):
                return
            last = self._repair(ledger, conflict)
        elif last >= end:
            self._streamed_to(ledger, last)
            self._rewrite_done(ledger, end)
        self._fill(ledger, last, end)

    def _streamed_to(self, ledger: str, last: int) -> None:
        """The stream holds this outbox's own records of ``ledger`` up to ``last``."""
        self._streamed[ledger] = max(last, self._streamed.get(ledger, -1))
        self._placed[ledger] = max(last, self._placed.get(ledger, -1))

    def _named_epochs(self) -> dict[str, tuple[int, str]]:
        assert self._named is not None
        return self._named()

    def _replaced(self, ledger: str, named: Mapping[str, tuple[int, str]], *, look: bool = False) -> bool:
        """Whether another node is proven the home of a newer epoch of ``ledger`` than this
        node's (10.9): the stream is that home's, never this node's to cut back or fill. The
        outbox process hears whether its node owns a ledger only from the node, so a node that
        hangs (or whose host is cut off from its clients but not from Redis) while its standby
        is promoted would otherwise rewind the new home's stream to its own store at every
        heartbeat. Redis's ``epochs`` (``named``), which every ingest node's Redis user may
        write, proves nothing either way: the proof is the store's own handover record, or a
        checkpoint of that epoch in Redis signed by the pinned key this node does not sign
        with and cosigned by a witness (:func:`~vledger.node.epoch.proven_epoch`; that key
        alone is the standby host's to sign with). Nor does its silence: with the entry
        deleted, or naming this node, the notes are read all the same, at most every
        LOOK_FOR_EPOCH_SECONDS (at once with ``look``: a foreign entry in the stream), as the
        node's Homes does. Unproven, this node keeps its stream."""
        epoch = named.get(ledger)
        claimed = epoch is not None and epoch[1] != self.name
        now = self._clock()
        proof = None
        due = ledger not in self._never_hands_over and now >= self._look_at.get(ledger, 0.0)
        if claimed or look or ledger in self._left or due:
            if not claimed:
                self._look_at[ledger] = now + LOOK_FOR_EPOCH_SECONDS
            proof = self._handover(ledger)
        if proof is None:
            self._left.pop(ledger, None)  # handed back since (or never proven): its checkpoints go out again
            if epoch is not None and claimed and (ledger, *epoch) not in self._unproven:
                self._unproven.add((ledger, *epoch))
                log.warning("outbox: Redis names %s the home of %s (epoch %d), but nothing proves it: this node"
                            " keeps the stream", epoch[1], ledger, epoch[0])  # fmt: skip
            return False
        if ledger not in self._left:
            log.warning("outbox: %s is the home of %s (epoch %d): this node leaves its stream alone%s",
                        proof[1], ledger, proof[0],
                        "" if claimed else " (Redis's epochs do not name it; a witnessed note proves it)")  # fmt: skip
        self._left[ledger] = proof
        return True

    def _handover(self, ledger: str) -> tuple[int, str] | None:
        """The newer epoch of another home that proves this node no longer homes ``ledger``, or None."""
        assert self.replication is not None
        history = self._epochs.history(ledger)
        if history is None:
            if self.store.size(ledger) > 0:
                self._never_hands_over.add(ledger)  # its genesis, held, pins no standby key
            return None  # a ledger whose genesis pins no standby key never hands over
        if history.current.home != self.name:
            return history.current.number, history.current.home  # the store holds the handover record
        left = self._left.get(ledger)
        if left is not None and left[0] > history.current.number:
            return left  # proven before (a signature does not expire), and not handed back since
        witnesses = tuple(self.witnesses())
        notes = self.replication.epoch_notes(ledger, _witness_nodes(witnesses))
        proof = proven_epoch(history, notes, witnesses, failback_allowed=self.failback_allowed)
        return proof if proof is not None and proof[1] != self.name else None

    def _keep_epoch_proof(self, ledger: str) -> None:
        """A home of an epoch from 2 on: once a witness cosigned a checkpoint of that epoch, keep
        it in ``epoch_proof`` (10.9), once per epoch. The witnesses' hash alone, which every
        witness's Redis user may write, let one compromised witness delete the proof in a loop:
        the home it replaced then never learnt it, answered w=0 writes and rewound this stream."""
        assert self.replication is not None
        history = self._epochs.history(ledger)
        if history is None or history.current.number < 2 or history.current.home != self.name:
            return
        if self._proof_kept.get(ledger, (0, b""))[0] == history.current.number:
            return
        witnesses = tuple(self.witnesses())
        cosigned = self.replication.cosignatures(ledger, _witness_nodes(witnesses))
        note = epoch_proof(history, cosigned.values(), witnesses)
        if note is None:
            return
        try:
            self.replication.keep_epoch_proof(ledger, note)
        except redis.exceptions.NoPermissionError as e:
            # A Redis user made before the key was: the rest of the sync goes on; keygen --cluster adds it.
            log.warning("outbox: the proof of %s's epoch %d cannot be kept: %s", ledger, history.current.number, e)
        self._proof_kept[ledger] = history.current.number, note

    def _keep_epoch_proofs(self, owned: Iterable[str]) -> None:
        """:meth:`_keep_epoch_proof` of each of ``owned``, and a proof kept found of another type
        set again, with ``redis_key_damaged`` (PROTOCOL 10.5): kept once per epoch, a key the
        admin's user made a hash stayed so, and every reader read none there."""
        assert self.replication is not None
        owned = list(owned)
        for ledger in owned:
            self._keep_epoch_proof(ledger)
        kept = {self.replication.epoch_proof_key(ledger): ledger for ledger in owned if ledger in self._proof_kept}
        try:
            damaged, missing = self.replication.read_back(list(kept))
            # Gone (Redis lost its data): kept again from the note held, not once per epoch only (o21
            # F5: `repl status` named the fenced home until a witness cosigned that epoch again).
            for key in missing:
                self.replication.keep_epoch_proof(kept[key], self._proof_kept[kept[key]][1])
        except redis.exceptions.NoPermissionError:
            return  # a Redis user made before the key was, as above
        for key, error in damaged.items():
            note = self._proof_kept[kept[key]][1]
            # SET replaces a key of any type (this user may not DEL it: a SET alone, PROTOCOL 10.10).
            write = functools.partial(self.replication.keep_epoch_proof, kept[key], note)
            self.replication.replace_damaged(key, error, write, delete=False)

    def _first_foreign(self, ledger: str, low: int, high: int) -> int | None:
        """The first height from ``low`` to ``high`` at which the stream's entry is not the
        store's record (another record, or one the store does not hold), None if all are."""
        assert self.replication is not None
        streamed = {r.height: r.data for r in self.replication.read(ledger, low, high - low + 1, stop=high + 1)}
        stored = dict(self.store.range_raw(ledger, low, high + 1))
        return next((h for h in range(low, high + 1) if streamed.get(h) != stored.get(h)), None)

    def _foreign_at(self, ledger: str, height: int) -> bool:
        """Whether the stream holds, at ``height``, an entry that is not the store's record (a
        height trimmed from the stream, or the store does not hold, is not)."""
        assert self.replication is not None
        entry = self.replication.read(ledger, height, 1, stop=height + 1)
        stored = dict(self.store.range_raw(ledger, height, height + 1)).get(height)
        return bool(entry) and stored is not None and entry[0].data != stored

    def _own_tail(self, ledger: str, last: int) -> int:
        """The stream's last height once what it holds up to ``last`` is this home's: a tail that
        is not (a fork this home's store signed before it was rebuilt from its followers) is cut
        back from its first foreign entry and rewritten (:meth:`_repair`). Appending the store's
        records past it made the stream a chain no link joins, and a follower whose old copy
        still took the fork's key stored the fork from it (outsider 33 F2). A fork is the
        stream's tail: the first foreign height is found by bisection, a read a step."""
        if last < 0 or not self._foreign_at(ledger, last):
            return last
        low, high = 0, last  # the first foreign height is in [low, high]
        while low < high:
            middle = (low + high) // 2
            if self._foreign_at(ledger, middle):
                high = middle
            else:
                low = middle + 1
        return self._repair(ledger, low)

    def _repair(self, ledger: str, height: int) -> int:
        """The stream's entry at ``height`` is not this home's record: the store is the truth, so
        the stream is cut back below it (its readers too) and filled again from the store; the
        finding goes to the alerts, against ``redis``. Returns the stream's last height now."""
        assert self.replication is not None
        entry = self.replication.read(ledger, height, 1, stop=height + 1)
        held = self.store.get(ledger, height)
        found = hash_of(entry[0].data) if entry else "missing"
        expected = held.hash.hex() if held is not None else ""
        sentence = (
            f"the stream's entry is not {self.name}'s record at this height: the home rewrote the stream from its store"
        )
        if entry and held is not None:
            # As the verifier names them: a record changed with its link kept showed one hash twice (sm31).
            conflict = told_apart(held.encode(), entry[0].data)
            expected, found, sentence = conflict.expected, conflict.found, conflict.said(sentence)
        replaced = self._replaced_home_of(ledger, height, entry[0].data) if entry else None
        if replaced is not None:
            log.info("outbox: the stream of %s holds %s at %d, %s's record past the handover: the fenced home's"
                     " last append, rewriting it from the store", ledger, found, height, replaced)  # fmt: skip
        else:
            log.warning("outbox: the stream of %s holds %s at %d, not this node's record: rewriting it from the"
                        " store", ledger, found, height)  # fmt: skip
            self.replication.alert(
                Alert("redis", ledger, height, "record_conflict", sentence, source=self.name, expected=expected,
                      found=found)
            )  # fmt: skip
        self.replication.rewind(ledger, height)  # after the alert: a reader of the true entries sees it
        self._rewritten[ledger] = min(height, self._rewritten.get(ledger, height))
        self._streamed[ledger] = min(height - 1, self._streamed.get(ledger, -1))
        return height - 1

    def _replaced_home_of(self, ledger: str, height: int, data: bytes) -> str | None:
        """The home this node replaced, when ``data``, the stream's entry at ``height``, is that
        home's record at or past the handover record this node placed (10.9): its outbox, which
        may run on for a moment after the node stops, appended what its store held past the
        handover height before this node's first append. Redis did not lie there: the fenced
        home's records are no part of the ledger, and this home rewrites them at once, so no
        ``record_conflict`` is raised against ``redis`` (the flake of test_standby's takeover).
        Any other foreign entry (below the handover, another origin or height, bytes that do
        not decode) is the stream's fault as before, and so is one this home finds once it
        streamed its own handover record: the fenced outbox's append came before that, so an
        old home's record found later (in this run, or past this home's handover record in the
        stream) was placed by someone writing its stream (review r15 F-B)."""
        history = self._epochs.history(ledger)
        if history is None or len(history.epochs) < 2:
            return None
        before, current = history.epochs[-2], history.epochs[-1]
        if current.home != self.name or height < current.height or self._placed.get(ledger, -1) >= current.height:
            return None
        if height > current.height and self._handover_streamed(ledger, current.height):
            return None
        try:
            record = decode_record(data, PROTOCOL_LIMITS)
        except VledgerError:
            return None
        if (record.ledger, record.height, record.origin) != (ledger, height, before.home):
            return None
        return before.home

    def _handover_streamed(self, ledger: str, handover: int) -> bool:
        """Whether the stream holds this home's own record at ``handover`` (what a restarted
        outbox, with no memory of its run, placed before)."""
        assert self.replication is not None
        entry = self.replication.read(ledger, handover, 1, stop=handover + 1)
        held = dict(self.store.range_raw(ledger, handover, handover + 1))
        return bool(entry) and entry[0].data == held.get(handover)

    def _fill(self, ledger: str, last: int, end: int) -> None:
        """Append the store's records of ``ledger`` after the stream's ``last`` height up to ``end``."""
        assert self.replication is not None
        if last < end:
            last = self._own_tail(ledger, last)
        repaired = False
        while last < end:
            stop = min(end + 1, last + 1 + self.settings.catch_up_batch)
            kept = None
            if self.signer is None:
                # An outbox that does not sign (the outbox process) ends a chunk at the largest
                # checkpoint its node kept within it, and sends that checkpoint with it.
                kept = self.store.checkpoints.latest(ledger, SIGNED, at_most=stop, above=last + 1)
                if kept is not None:
                    stop = kept.size
            fill = [data for _, data in self.store.range_raw(ledger, last + 1, stop)]
            if not fill:
                raise RuntimeError(f"the store has no {ledger} records from {last + 1}")
            log.info("outbox: stream of %s ends at %d: adding %d records from the store", ledger, last, len(fill))
            # Each chunk has its checkpoint, so a follower can store it as it comes.
            checkpoint = self.sign(ledger, last + 1 + len(fill))
            note = checkpoint.note if checkpoint is not None else b""
            if kept is not None and kept.size == last + 1 + len(fill):
                note = kept.note
            # Only the last chunk's note is the ledger's latest: an earlier one would step it back.
            final = last + len(fill) >= end
            reached, conflict = self.replication.append_checked(ledger, self.name, last + 1, fill, note, latest=final)
            if conflict is not None and not repaired:
                # The stream cannot take what follows its last entry (its tail was deleted):
                # rewound once, with the alert, then filled as before.
                repaired = True
                last = self._repair(ledger, conflict)
                continue
            if reached <= last:
                raise RuntimeError(f"the stream of {ledger} does not grow past {last}")
            last = reached
            self._streamed_to(ledger, last)
            self._rewrite_done(ledger, last)

    def _reclaim_homes(
        self, owned: Sequence[str], heads: Mapping[str, tuple[int, bytes]], named: Mapping[str, tuple[int, str]]
    ) -> None:
        """Put back each of ``owned``'s fields in ``{ledgers}`` that names another node, as the
        stream is put back (outsider43 M1: a re-homed ledger stayed so for good, and `vledger
        repair` took that home); the finding is an alert against ``redis`` that an operator
        resolves: the field is right again at once, so nothing else would show it happened."""
        assert self.replication is not None
        for ledger, named_home in sorted(self.replication.reclaim_homes(owned, self.name, named).items()):
            log.warning("outbox: Redis's ledgers hash named %s the home of %s, not this node: put back", named_home,
                        ledger)  # fmt: skip
            self.replication.alert(
                Alert("redis", ledger, heads[ledger][0], HOME_REWRITTEN,
                      f"vledger:{{ledgers}} named {named_home} the home of {ledger}, whose home is {self.name} (its"
                      " store, and the cluster file or a witnessed epoch): someone with an ingest node's Redis"
                      " password wrote it; the home put itself back", source=self.name, expected=self.name,
                      found=named_home)
            )  # fmt: skip

    def _rewrite_done(self, ledger: str, last: int, store_head: int | None = None) -> None:
        """The stream holds this node's records up to ``last``: once that is past where a
        rewrite began (or is the store's head: there was nothing to put there), the home
        resolves its own alert against ``redis`` (no other node's Redis user may; the verifier
        checks the entries itself and raises its own)."""
        assert self.replication is not None
        begun = self._rewritten.get(ledger)
        if begun is None or (last < begun and (store_head is None or last < store_head)):
            return
        del self._rewritten[ledger]
        if self.replication.resolve([f"redis|{ledger}|record_conflict"]):
            log.info("outbox: the stream of %s holds this node's records again: its alert is resolved", ledger)

    def _sync_redis(self) -> None:
        """At start, at each heartbeat and after an outage: fill each stream up to the store's head."""
        if not self._redis_usable():
            return
        assert self.replication is not None
        try:
            heads = self.store.heads()
            if self.stream:
                named = self._named_epochs()
                owned = [h for h in heads if self.owns(h) and not self._replaced(h, named)]
                # Its entries put back when the hash was of another type (replaced): a ledger
                # that gets no record was never named again once the hash was lost so (outsider 31, N1).
                self.replication.name_homes(owned, self.name)
                self._reclaim_homes(owned, heads, named)
                for ledger, streamed in self.replication.last_heights(owned).items():
                    try:
                        last = streamed
                        if streamed > heads[ledger][0]:  # only this node adds to it: the rest is not its chain
                            if ledger in self.refused:
                                # Its store is behind (or off) a checkpoint it signed: what the stream
                                # holds past it may be the records it acknowledged and lost (outsider 26).
                                continue
                            last = self._repair(ledger, heads[ledger][0] + 1)
                        if last < heads[ledger][0]:
                            self._fill(ledger, last, heads[ledger][0])
                            # Only a write that passed ends a refusal: a stream with nothing to
                            # add proves nothing, and the checkpoint set below may be refused again
                            # (its alert then raised and resolved at every heartbeat).
                            self._allowed(ledger)
                        self._rewrite_done(ledger, max(last, heads[ledger][0]), heads[ledger][0])
                    except redis.exceptions.NoPermissionError as e:
                        self._refused(ledger, e)
                self._keep_epoch_proofs(owned)
            if self.stream:  # a Redis that lost its latest checkpoints gets them back
                # Not those of a ledger another home was proven to hold: its latest is that home's.
                checkpoints = {ledger: c.note for ledger, c in self.checkpoints.items() if ledger not in self._left}
                for ledger, refusal in self.replication.set_checkpoints(checkpoints).items():
                    self._refused(ledger, refusal)
            # Each store head as its file holds it now, not only if it grew: a height written in
            # Redis by hand (the node's own Redis user may write any), left by a store since
            # repaired to fewer records, or a tail cut behind the store's back (the head it
            # placed last, in memory, is then no record it holds: PROTOCOL 10.4), is put right
            # within a heartbeat. Read after every height this thread reported, so a sound
            # store's never goes back below what was reported.
            self._reported = {
                ledger: self.replication.set_held(self.name, ledger, self.store.stored_size(ledger) - 1)
                for ledger in heads
            }
        except REDIS_ERRORS as e:
            self._redis_failed(e)

    def _report(self, heights: dict[str, int]) -> None:
        """Tell Redis how far this node holds each ledger (what replication counts are made of)."""
        if not self._redis_usable():
            return
        assert self.replication is not None
        try:
            for ledger, height in heights.items():
                if self._reported.get(ledger, -1) < height:
                    self._reported[ledger] = self.replication.advance(self.name, ledger, height)
        except REDIS_ERRORS as e:
            self._redis_failed(e)


def _witness_nodes(witnesses: Iterable[VerifierKey]) -> list[str]:
    """The nodes whose cosignature keys in Redis are read: those of the witness keys the outbox
    was given (the outbox process knows no other node's name)."""
    return [node for node in map(node_of_witness, witnesses) if node is not None]
