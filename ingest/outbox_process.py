"""An ingest node's outbox in a process of its own, so that the request loop keeps the GIL.

In one process the outbox's Redis round trips, feed envelopes and publishes took the GIL
from the request loop, whose group commits and replies are what a client waits for. Here
the node keeps only what needs its key and its store's writer: :class:`OutboxProcess`, an
:class:`~vledger.ingest.outbox.Outbox` whose thread signs each batch's checkpoints (kept
in the store, as before) and hands the child, over a pipe, each ledger's new heights, whether
this node owns the ledger's stream, and those checkpoints: a few bytes per pass, never a
record. The child (:func:`ship`, a ``spawn``-ed process) reads the records from the store's
file (SQLite WAL lets a reader run beside the writer, and ``on_commit`` runs only after
COMMIT, so every height it is told of is there), then runs the same ``Outbox`` code as
before, without a signer: streams, holder heights, repairs and fills from the store, the
heartbeat. It publishes into a PUSH socket over ``ipc://`` in a private directory (mode
0700); a thread of the node runs libzmq's proxy (no GIL) from there into the node's CURVE
PUB socket, where the feed's ZAP allow-list (the accounts, rotated keys) already lives.

Nothing in the guarantees moves: the store is still the only truth, acknowledged before
anything is sent, and the child fills each stream from it at start and every heartbeat, so
a child that dies (the node starts another at its next heartbeat) or a node killed while
heights were in the pipe (the child ships what it was told, then ends at the pipe's end)
costs only latency. Records and checkpoints go out in the order the node signed them:
one pipe, one PUSH socket, one proxy.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import faulthandler
import logging
import math
import multiprocessing
import os
import select
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgpack
import zmq

from ..broker.alert_journal import ALERT_JOURNAL, AlertJournal
from ..broker.feed import Publisher, encode_checkpoints, encode_record
from ..broker.logs import LEVELS, configure_logging
from ..broker.redis_server import connect
from ..broker.replication import ReplicationLedger, raise_alert, store_damaged_alert
from ..config.cluster import ConfiguredFailbacks, RedisAccess, ReplicationSettings
from ..config.settings import PROTOCOL_LIMITS
from ..config.supervisor import EXIT_STORE_DAMAGED
from ..node.checkpoint_log import CheckpointLog
from ..node.errors import StoreContradictsCheckpointError, StoreDamagedError, StoreError, VledgerError
from ..node.ledger import LedgerRules
from ..node.note import VerifierKey, parse_verifier_key
from ..node.record import Record, decode_record
from ..node.store import ChainStore
from ..node.storefile import DB_NAME, StoreReader, damaged_file, not_blob_message
from ..node.tree import Frontier
from ..node.witness import HomeSigner, SignedCheckpoint
from .outbox import Outbox, Row

log = logging.getLogger(__name__)

# Pipe messages (msgpack lists), node to outbox process.
SHIP = 0  # [SHIP, [[ledger, first, last, owns], ...], [[ledger, size, root, note], ...]]
# [BEAT, {ledger: owns}, [[ledger, size, root, note], ...], [witness vkey, ...]]: every ledger, every
# heartbeat, and the witness keys in force (a key may rotate) that a proof of another home's epoch needs
BEAT = 1
STOP = 2  # [STOP]: ship what was sent, then end
CHILD_STOP_SECONDS = 30.0  # a stopping node waits this long for the outbox process to ship its queue
PROXY_LINGER_MS = 2000  # what the outbox process pushed at its end gets this long to reach the proxy
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_send_frame = zmq.backend.Socket.send  # without the sugar layer's wrapper: one call a frame
REDIS_TIMEOUT = 2.0  # seconds, as the node's own replication client (runtime.NODE_REDIS_TIMEOUT)
# How much nicer than its node the outbox process runs (os.nice). Each pass of it (every
# outbox_interval_ms under a lone writer) is a burst of Python, SQLite reads and Redis round
# trips that, at the node's priority, took the core from the request thread or preempted it:
# the puts that met one waited. Nicer, the scheduler lets the request thread run first (CFS
# weights 1024 against 335) and the passes take what it leaves; only on a saturated host do
# they wait longer (replication lag, figure 5a). At 10 the clerk's put gained more (p50 -40 us
# against -24 us, same host) and the passes would starve sooner on a busy host.
OUTBOX_NICENESS = 5
# How long past ``outbox_interval_ms`` the outbox thread leaves a due pass to the next group
# commit, whose thread runs it once it has answered (OutboxProcess.committed): a lone writer's
# puts commit every half millisecond or so; past this no commit is coming, and the thread passes.
INLINE_PASS_GRACE_SECONDS = 0.002
# The gap after a pass (at most ``outbox_interval_ms``) before the pass a put's write concern
# waits for (OutboxProcess.hurry): a lone w >= 1 writer's put, which waits longer than this for its
# cosignatures, passes at once; many w >= 1 puts share a pass as often as before p37 (5 ms was
# the interval then), not one a group commit, each ~0.3 ms of the node's CPU and ~0.6 of its child's.
HURRIED_PASS_GAP_SECONDS = 0.005


def _checkpoint_rows(checkpoints: Iterable[SignedCheckpoint]) -> list[list[Any]]:
    return [[c.ledger, c.size, c.root, c.note] for c in checkpoints]


def _checkpoints(rows: Iterable[list[Any]]) -> list[SignedCheckpoint]:
    return [SignedCheckpoint(str(ledger), int(size), bytes(root), bytes(note)) for ledger, size, root, note in rows]


def _witness_keys(vkeys: Iterable[str]) -> tuple[VerifierKey, ...]:
    """The witness keys the node sent (its own vkeys: one that does not parse is a bug, logged)."""
    keys = []
    for vkey in vkeys:
        try:
            keys.append(parse_verifier_key(str(vkey)))
        except VledgerError as e:
            log.error("outbox process: a witness key from the node does not parse: %s", e.message)
    return tuple(keys)


@dataclass(frozen=True, slots=True)
class ShipperSetup:
    """What the outbox process is started with (pickled by ``spawn``; no secret: the Redis
    password stays in its file, which the process reads itself)."""

    name: str
    store_dir: Path
    read_page_size: int
    redis: RedisAccess
    stream_max_len: int
    settings: ReplicationSettings
    feed_endpoint: str  # the node's proxy, ipc:// in a private directory
    send_hwm: int
    log_level: int
    witnesses: tuple[str, ...] = ()  # the witness keys in force (vkeys), until a heartbeat brings newer ones
    refused: tuple[str, ...] = ()  # the ledgers the node refuses: their longer streams are left alone
    cluster_file: Path | None = None  # read for a failback's epoch from 3 (ConfiguredFailbacks); None: none allowed


class StoreView:
    """The read side of a node's store file, as the outbox process's :class:`Outbox` reads it:
    one read-only connection per thread (the pipe reader and the outbox thread), and the
    checkpoints table. It has no tree and signs nothing: :meth:`frontier` and :meth:`root`
    raise StoreError."""

    def __init__(self, directory: Path, page_size: int) -> None:
        self.directory = directory
        self.page_size = page_size
        self._local = threading.local()
        self._readers: list[StoreReader] = []
        self._lock = threading.Lock()
        self.checkpoints = CheckpointLog(directory / DB_NAME)
        # Called once, the first time a read finds the file damaged (ship: the alert).
        self.on_damaged: Callable[[StoreDamagedError], None] | None = None
        self.found_damaged: StoreDamagedError | None = None

    def _reader(self) -> StoreReader:
        reader: StoreReader | None = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._local.reader = StoreReader(self.directory, self.page_size)
            with self._lock:
                self._readers.append(reader)
        return reader

    def close(self) -> None:
        self.checkpoints.close()
        with self._lock:
            for reader in self._readers:
                # Another thread's connection cannot be closed from here: it ends with the process.
                with contextlib.suppress(sqlite3.ProgrammingError):
                    reader.close()

    def damaged(self, error: BaseException) -> StoreDamagedError | None:
        """As ChainStore.damaged: the StoreDamagedError that ``error`` is, if it says the file is
        damaged (damaged_file), else None; the first calls :attr:`on_damaged`."""
        if isinstance(error, StoreDamagedError):
            return error  # reported where it was found (a commit's future raises it again)
        cause = damaged_file(error)
        if cause is None:
            return None
        return self._found(f"{self.directory / DB_NAME}: the store's file is damaged: {cause}")

    def damaged_cell(self, ledger: object, height: object, data: object) -> StoreDamagedError:
        """As ChainStore.damaged_cell: a record's data read as another type than BLOB."""
        return self._found(not_blob_message(self.directory / DB_NAME, ledger, height, data))

    def _found(self, message: str) -> StoreDamagedError:
        """The first damage found, said in ``message`` (the first call calls :attr:`on_damaged`)."""
        with self._lock:
            first = self.found_damaged is None
            if first:
                self.found_damaged = StoreDamagedError(message)
            found = self.found_damaged
            assert found is not None
        if first:
            log.error("%s", found.message)
            if self.on_damaged is not None:
                self.on_damaged(found)
        return found

    def heads(self) -> dict[str, tuple[int, bytes]]:
        """Every ledger's highest height in the file and that record's hash."""
        reader = self._reader()
        heads = {}
        for ledger in reader.ledgers():
            height = reader.size(ledger) - 1
            data = reader.get(ledger, height, self.damaged_cell)
            heads[ledger] = (height, decode_record(data, PROTOCOL_LIMITS).hash if data is not None else b"")
        return heads

    def size(self, ledger: str) -> int:
        return self._reader().size(ledger)

    stored_size = size  # it reads the file: what the file holds now

    def get(self, ledger: str, height: int) -> Record | None:
        data = self._reader().get(ledger, height, self.damaged_cell)
        return decode_record(data, PROTOCOL_LIMITS) if data is not None else None

    def range_raw(self, ledger: str, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        return self._reader().iter_blobs(ledger, start, stop, self.damaged_cell)

    def rules(self, ledger: str) -> LedgerRules:
        """The rules of ``ledger``'s genesis (what its epochs are read with). Raises StoreError
        while the file holds no genesis of it."""
        genesis = self.get(ledger, 0)
        if genesis is None:
            raise StoreError(f"{self.directory}: no genesis of {ledger!r}")
        return LedgerRules.from_genesis(genesis.content, PROTOCOL_LIMITS)

    def frontier(self, ledger: str) -> Frontier:
        raise StoreError(f"{self.directory}: the outbox process reads no tree (it signs nothing)")

    def root(self, ledger: str, size: int | None = None) -> bytes:
        raise StoreError(f"{self.directory}: the outbox process reads no tree (it signs nothing)")


class FeedPusher:
    """The outbox process's feed: a PUSH socket into the node's proxy to its PUB socket. Like
    the PUB socket, it never blocks: a message the proxy cannot take now is dropped (the
    subscribers catch up by height)."""

    def __init__(self, context: zmq.Context[Any], name: str, endpoint: str, send_hwm: int) -> None:
        self.name = name
        self.socket = context.socket(zmq.PUSH)
        self.socket.setsockopt(zmq.SNDHWM, send_hwm)
        self.socket.connect(endpoint)
        self.dropped = 0

    def record(self, ledger: str, height: int, data: bytes, hops: int = 1) -> None:
        self._send(encode_record(ledger, height, hops, self.name, data))

    def checkpoints(self, checkpoints: Iterable[SignedCheckpoint]) -> None:
        self._send(encode_checkpoints(self.name, checkpoints))

    def _send(self, frames: list[bytes]) -> None:
        # Frame by frame with int flags, as Publisher sends: send_multipart's Python loop and
        # its flag enums cost more than the send itself, once a record.
        try:
            _send_frame(self.socket, frames[0], _SNDMORE_NOBLOCK)
            _send_frame(self.socket, frames[1], _NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            log.debug("feed message dropped: the node's proxy is behind")

    def close(self, linger_ms: int) -> None:
        self.socket.close(linger=linger_ms)


class FeedProxy:
    """Forwards what the outbox process pushes to the node's PUB socket, in a thread that runs
    libzmq's proxy (it holds no GIL). From :meth:`start` on, that thread owns the PUB socket:
    a step that must touch it (a key rotation's re-bind, PROTOCOL 16.6) is handed over with
    :meth:`call_soon`, which ends the current proxy run; the thread runs the step between two
    runs, and what was pushed meanwhile waits in the PULL socket."""

    def __init__(self, publisher: Publisher, send_hwm: int) -> None:
        self._publisher = publisher
        context = publisher.socket.context
        # mkdtemp: a directory only this user can enter, so no other user can push feed messages.
        self.directory = Path(tempfile.mkdtemp(prefix="vledger-outbox-"))
        self.endpoint = f"ipc://{self.directory}/feed"
        self._pull = context.socket(zmq.PULL)
        self._pull.setsockopt(zmq.RCVHWM, send_hwm)
        self._pull.bind(self.endpoint)
        control = f"inproc://outbox-proxy-{id(self)}"
        self._control = context.socket(zmq.PAIR)
        self._control.bind(control)
        self._steer = context.socket(zmq.PAIR)
        self._steer.connect(control)
        self._steer_lock = threading.Lock()  # any thread may steer; a socket is one thread's at a time
        self._steps: collections.deque[Callable[[], None]] = collections.deque()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> FeedProxy:
        self._thread = threading.Thread(target=self._run, name="outbox-proxy", daemon=True)
        self._thread.start()
        return self

    def call_soon(self, step: Callable[[], None]) -> None:
        """Run ``step`` on the thread that owns the PUB socket, before it forwards more (any
        thread). It runs at once, whether or not messages flow: the proxy run ends for it. After
        :meth:`stop` the step is dropped (the socket is closing; a key rotation has nothing to
        serve any more)."""
        with self._steer_lock:
            if self._stopping:
                log.debug("feed proxy stopped: a step on the PUB socket dropped")
                return
            self._steps.append(step)
            self._steer.send(b"TERMINATE")  # ends this proxy run; the next one starts after the step

    def _run(self) -> None:
        while True:
            while self._steps:
                step = self._steps.popleft()
                try:
                    step()
                except Exception:  # a re-bind that failed is the rotation's to report; the feed goes on
                    log.exception("feed proxy: a step on the PUB socket failed")
            if self._stopping:
                return
            zmq.proxy_steerable(self._pull, self._publisher.socket, None, self._control)

    def stop(self) -> None:
        """End the proxy (after what it holds was forwarded) and remove its directory."""
        if self._thread is not None:
            with self._steer_lock:
                self._stopping = True
                self._steer.send(b"TERMINATE")
            self._thread.join()
            self._thread = None
        for socket in (self._pull, self._control, self._steer):
            socket.close(linger=0)
        shutil.rmtree(self.directory, ignore_errors=True)


class OutboxProcess(Outbox):
    """An ingest node's outbox whose shipping runs in a process of its own (see the module).

    Here, on the outbox thread: the checkpoints (signed per batch, kept in the store; ``sign``,
    ``latest`` and ``covering`` as in :class:`Outbox`), and the hand-off to the child. The
    committer's ``on_commit`` (:meth:`committed`) notes each ledger's heights, and runs a due pass
    itself after a round committed and answered by flush (:meth:`_pass_here`)."""

    def __init__(
        self,
        name: str,
        store: ChainStore,
        publisher: Publisher,
        redis: RedisAccess,
        settings: ReplicationSettings,
        *,
        stream_max_len: int,
        signer: HomeSigner | None = None,
        refused: Mapping[str, VledgerError] | None = None,
        epochs: Callable[[str, int], tuple[str, ...] | None] = lambda ledger, size: (),
        owns: Callable[[str], bool] = lambda ledger: True,
        witnesses: Callable[[], Iterable[VerifierKey]] = lambda: (),
        cluster_file: Path | None = None,
    ) -> None:
        self._cluster_file = cluster_file  # the outbox process's failback rule reads it (10.9)
        super().__init__(
            name,
            store,
            None,
            None,
            settings,
            stream=False,
            signer=signer,
            refused=refused,
            epochs=epochs,
            owns=owns,
            later=INLINE_PASS_GRACE_SECONDS,
        )
        # Read by the outbox process, which leaves a stream alone only on a witnessed proof (10.9).
        self.witnesses = witnesses
        self._store = store
        self._publisher = publisher
        self._redis = redis
        self._stream_max_len = stream_max_len
        self._spans: collections.deque[dict[str, tuple[int, int]]] = collections.deque()
        # ledger -> the highest height a put's write concern waits for and no pass handed over
        # yet (:meth:`hurry`): the next commit or the thread passes at once, not after the gap.
        self._hurried: dict[str, int] = {}
        self._hurry_lock = threading.Lock()
        self._handed: dict[str, int] = {}  # ledger -> the highest height handed to the outbox process
        self._noted: dict[str, int] = {}  # ledger -> the highest height committed noted
        self._proxy: FeedProxy | None = None
        self._proxy_stopped = False
        self._child: multiprocessing.process.BaseProcess | None = None
        self._pipe: Connection | None = None
        self.restarts = 0

    def backlog(self) -> int:
        return len(self._spans)

    def committed(self, records: list[Record], hops: int = 1, checkpoints: Iterable[SignedCheckpoint] = ()) -> None:
        """Note a group's durable heights per ledger (the store's ``on_commit``): quick, never raises."""
        # Each ledger's records come in height order: its first and its last height, each
        # found by a comprehension (this runs on the committer, once a put).
        last = {record.content.ledger: record.height for record in records}
        first = {record.content.ledger: record.height for record in reversed(records)}
        self._spans.append({ledger: (first[ledger], height) for ledger, height in last.items()})
        self._noted.update(last)  # before the look at _hurried: hurry looks at them the other way round
        hurried = bool(self._hurried)
        gap = min(self._gap, HURRIED_PASS_GAP_SECONDS) if hurried else self._gap
        if self._store.answered and self._clock() >= self._passed_at + gap and self._pass_here():
            return
        if not self._wake.is_set():  # as Outbox.committed: the lock of Event.set only when it wakes
            self._wake.set()
        if hurried:
            self._nudge.set()

    def hurry(self, ledger: str, height: int) -> None:
        """A put's write concern waits for a checkpoint covering ``height`` of ``ledger``
        (CosignatureWatch.wait, any thread): its pass runs once HURRIED_PASS_GAP_SECONDS passed
        since the last (at once, for a lone writer), not at the end of ``outbox_interval_ms``,
        so that a longer interval spares a lone writer's ``w=0`` puts passes without making a
        ``w >= 1`` put wait longer. On the request loop's thread this comes
        before the round's ``on_commit`` (its answers' callbacks run first), which then passes
        itself (:meth:`committed`); after it (the committer thread's groups), the thread is woken."""
        if self._handed.get(ledger, -1) >= height:
            return  # a pass handed it over already
        with self._hurry_lock:
            self._hurried[ledger] = max(height, self._hurried.get(ledger, -1))
        if self._noted.get(ledger, -1) >= height:  # noted already: no on_commit to come for it, the thread passes
            self._nudge.set()

    def _gap_end(self) -> float:
        if self._hurried and self._spans:  # a put's write concern waits for what is noted: no grace
            return self._passed_at + min(self._gap, HURRIED_PASS_GAP_SECONDS)
        return super()._gap_end()

    def _pass_here(self) -> bool:
        """Run the pass that is due on this committing thread, which holds the store's writer
        lock and has answered its group, with no other queued behind it (ChainStore.answered: a
        round committed by flush, whose answers go out before on_commit): sign, keep the rows at
        once (no group commit to wait for) and hand the heights to the outbox process. Under a
        lone writer the outbox thread's pass cost each put that met it its wake-ups and turns at
        the GIL, and its checkpoint row a wait for the next put's commit and one more wake-up
        (p31). Never on the store's committer thread, whose groups' answers wait for on_commit,
        nor with groups queued, which would wait for the writer lock through the pass's turns at
        the GIL. False when the outbox thread or the read path holds a lock the pass needs (the
        thread passes then), or the outbox is not running."""
        if self._thread is None or self._stop.is_set() or not self._pass_lock.acquire(blocking=False):
            return False
        try:
            # Never waited for here: the read path signs (covering) holding it while it waits
            # for the store's writer lock, which this thread holds.
            if not self._sign_lock.acquire(blocking=False):
                return False
            try:
                self._passed_at = self._clock()
                self._drain(writer_held=True)
            finally:
                self._sign_lock.release()
        except Exception as e:  # as the thread's pass: the store has it all, the heartbeat ships it
            if self._store.damaged(e) is None:
                self.pass_failed(e)
        else:
            self.full_said = False
        finally:
            self._pass_lock.release()
        return True

    def start(self) -> OutboxProcess:
        # What the store held before this start goes out at the first heartbeat, not a pass: a
        # put's write concern waits for none (a repeated put's receipt may name such a height).
        self._handed = {ledger: height for ledger, (height, _) in self._store.heads().items()}
        self._noted = dict(self._handed)
        self._proxy = FeedProxy(self._publisher, self.settings.send_hwm).start()
        self._start_child()
        super().start()
        return self

    def stop(self) -> None:
        """Hand over what is queued, let the outbox process ship it and end, then stop the proxy."""
        super().stop()
        if self._pipe is not None:
            self._send([STOP])
        if self._child is not None:
            self._child.join(CHILD_STOP_SECONDS)
            if self._child.is_alive():
                log.error("outbox process %d did not stop in %.0f s: killed", self._child.pid, CHILD_STOP_SECONDS)
                self._child.kill()
                self._child.join()
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None
        if self._proxy is not None:
            self._proxy_stopped = True
            self._proxy.stop()
            self._proxy = None

    def feed_call_soon(self, step: Callable[[], None]) -> None:
        """Run ``step`` on the thread that owns the node's PUB socket (the feed proxy's), before
        it forwards more: what a key rotation's re-bind of the feed must use (any thread).
        Raises RuntimeError before :meth:`start`; after :meth:`stop` the step is dropped."""
        proxy = self._proxy
        if proxy is None:
            if self._proxy_stopped:  # a rotation's timer at shutdown: the feed is closing
                log.debug("outbox stopped: a step on the feed socket dropped")
                return
            raise RuntimeError("the outbox process is not started: its feed proxy owns no socket yet")
        proxy.call_soon(step)

    @property
    def pid(self) -> int | None:
        """The outbox process's id, None before :meth:`start`."""
        return self._child.pid if self._child is not None else None

    @property
    def feed_directory(self) -> Path | None:
        """The private directory of the proxy's ipc endpoint while it runs."""
        return self._proxy.directory if self._proxy is not None else None

    def alive(self) -> bool:
        """Whether the outbox process runs (a readiness check)."""
        return self._child is not None and self._child.is_alive()

    # --- the outbox thread ----------------------------------------------------------------

    def _start_child(self) -> None:
        assert self._proxy is not None
        setup = ShipperSetup(
            self.name,
            self._store.directory,
            self._store.settings.read_page_size,
            self._redis,
            self._stream_max_len,
            self.settings,
            self._proxy.endpoint,
            self.settings.send_hwm,
            logging.getLogger("vledger").getEffectiveLevel(),
            self._witness_vkeys(),
            tuple(sorted(self.refused)),
            self._cluster_file,
        )
        context = multiprocessing.get_context("spawn")  # never fork a process with threads and sockets
        ours, theirs = context.Pipe(duplex=False)
        child = context.Process(target=ship, args=(setup, ours), name=f"outbox-{self.name}", daemon=True)
        child.start()
        ours.close()
        self._child, self._pipe = child, theirs
        log.info("outbox process %d started for %s", child.pid, self.name)

    def _witness_vkeys(self) -> tuple[str, ...]:
        return tuple(key.encode() for key in self.witnesses())

    def _send(self, message: list[Any]) -> None:
        if self._pipe is None:  # the outbox process found the store damaged: the node is stopping
            return
        try:
            self._pipe.send_bytes(msgpack.packb(message))
        except OSError as e:  # the outbox process died: the next heartbeat starts another
            log.warning("outbox process unreachable (%s): the next heartbeat starts another", e)

    def _drain(self, writer_held: bool = False) -> None:
        spans: dict[str, tuple[int, int]] = {}
        while self._spans:
            for ledger, (first, last) in self._spans.popleft().items():
                span = spans.get(ledger)
                spans[ledger] = (span[0] if span is not None else first, last)
        if not spans:
            self._handed_over()
            return
        fresh = self._sign_batch({ledger: last + 1 for ledger, (_, last) in spans.items()}, writer_held=writer_held)
        for checkpoint in fresh:
            self._keep(checkpoint)
        self._send(
            [
                SHIP,
                [[ledger, first, last, self.owns(ledger)] for ledger, (first, last) in spans.items()],
                _checkpoint_rows(fresh),
            ]
        )
        for ledger, (_, last) in spans.items():
            self._handed[ledger] = last
        self._handed_over()

    def _handed_over(self) -> None:
        """Forget the hurried heights a pass handed over (the pass lock held)."""
        if self._hurried:
            with self._hurry_lock:
                for ledger, height in list(self._hurried.items()):
                    if self._handed.get(ledger, -1) >= height:
                        del self._hurried[ledger]

    def _ship_checkpoints(self, fresh: list[SignedCheckpoint]) -> None:
        if fresh:
            self._send([SHIP, [], _checkpoint_rows(fresh)])

    def _heartbeat(self) -> None:
        if self._child is not None and self._child.exitcode == EXIT_STORE_DAMAGED:
            # It found the store's file damaged and raised the alert: another would fail the
            # same way. The node's store is that file: it stops as a read of its own would.
            if self._pipe is not None:
                self._pipe.close()
                self._pipe = None
            self._store.found_damaged(
                f"{self._store.path}: the outbox process {self._child.pid} found the store's file damaged "
                f"(its exit code {EXIT_STORE_DAMAGED}; its log says where)"
            )
            return
        if self._child is not None and not self._child.is_alive():
            # The store holds everything: a new process fills the streams from it as it starts.
            log.error("outbox process %d ended (exit code %s): starting another", self._child.pid, self._child.exitcode)
            self.restarts += 1
            if self._pipe is not None:
                self._pipe.close()
            self._start_child()
        owns = {ledger: self.owns(ledger) for ledger in self._store.ledgers()}
        self._send([BEAT, owns, _checkpoint_rows(self.checkpoints.values()), list(self._witness_vkeys())])


# --- the outbox process ---------------------------------------------------------------------


class ShippingOutbox(Outbox):
    """The outbox process's Outbox: told each ledger's new heights over the pipe from the node,
    it reads the records from the store only as it sends them, ``catch_up_batch`` at a time.
    What waits is a span of heights and the latest checkpoint per ledger, never the records:
    however far Redis or the proxy fall behind, its memory stays flat (the lesson of putperf's
    node, whose queue of records grew without bound under 8 pipelining clients).

    It runs on the process's one thread (:meth:`serve`), which reads the pipe itself where an
    outbox waits for work: a reader thread that woke it cost each batch a hand-off between two
    threads of a process that waits for the CPU, and their turns at the GIL."""

    def __init__(self, pipe: Connection, *args: Any, witness_keys: Iterable[str] = (), **kwargs: Any) -> None:
        self._owned: dict[str, bool] = {}  # ledger -> whether the node owns its stream (it says so)
        self._witness_keys = _witness_keys(witness_keys)  # as the node last sent them
        super().__init__(*args, owns=self._owns_stream, witnesses=lambda: self._witness_keys, **kwargs)
        self._pipe = pipe
        # One poller for the process's life: Connection.poll builds, registers and closes a
        # selector at each call, two or more a pass (a profile's share of the child's time).
        self._poller = select.poll()
        self._poller.register(pipe.fileno(), select.POLLIN)
        self._spans: dict[str, tuple[int, int]] = {}  # ledger -> (first, last) heights not yet read
        self._waiting: dict[str, SignedCheckpoint] = {}  # ledger -> the latest checkpoint not yet sent

    def _owns_stream(self, ledger: str) -> bool:
        return self._owned.get(ledger, False)

    def serve(self) -> None:
        """Ship what the node says is durable until it says stop or its end of the pipe closes
        (the node ended, even by kill -9), then ship what is told and end (on this thread)."""
        self._run()

    def _await(self, seconds: float) -> None:
        """Wait up to ``seconds`` for the node's next message, then take every one that came."""
        # A closed pipe polls ready too (POLLHUP): its read then raises EOFError, handled below.
        if self._stop.is_set() or not self._poller.poll(math.ceil(seconds * 1000)):
            return
        while not self._stop.is_set() and self._poller.poll(0):
            try:
                message = msgpack.unpackb(self._pipe.recv_bytes())
            except (EOFError, OSError):
                log.warning("the node's end of the outbox pipe closed: shipping what it was told, then ending")
                self._stop.set()
                return
            self._take_message(message)

    def _take_message(self, message: list[Any]) -> None:
        kind = message[0]
        if kind == STOP:
            self._stop.set()
        elif kind == BEAT:
            self._owned.update(message[1])
            self._witness_keys = _witness_keys(message[3])
            self.told([], _checkpoints(message[2]))  # those signed at the node's start
        else:
            spans = []
            for ledger, first, last, owns in message[1]:
                self._owned[ledger] = owns
                spans.append((str(ledger), int(first), int(last)))
            self.told(spans, _checkpoints(message[2]))

    def told(self, spans: Iterable[tuple[str, int, int]], checkpoints: Iterable[SignedCheckpoint]) -> None:
        """Note durable heights and the checkpoints that cover them."""
        for ledger, first, last in spans:
            span = self._spans.get(ledger)
            self._spans[ledger] = (span[0] if span is not None else first, max(last, span[1] if span else last))
        for checkpoint in checkpoints:
            # A heartbeat's are mostly sent already.
            sent = self.checkpoints.get(checkpoint.ledger)
            waiting = self._waiting.get(checkpoint.ledger)
            if all(c is None or c.size < checkpoint.size for c in (sent, waiting)):
                self._waiting[checkpoint.ledger] = checkpoint

    def backlog(self) -> int:
        return sum(last - first + 1 for first, last in self._spans.values())

    def _drain(self) -> None:
        while self._take():
            super()._drain()

    def _take(self) -> bool:
        """Queue the next page of told records (from the store) and the checkpoints they reach;
        False when nothing was told."""
        if not self._spans and not self._waiting:
            return False
        page: tuple[str, int, int] | None = None
        if self._spans:
            ledger, (first, last) = next(iter(self._spans.items()))
            stop = min(last + 1, first + self.settings.catch_up_batch)
            page = (ledger, first, stop)
            if stop > last:
                del self._spans[ledger]
            else:
                self._spans[ledger] = (stop, last)
        # A checkpoint goes once every record below its size is queued: after them.
        ready = [
            c for ledger, c in self._waiting.items() if ledger not in self._spans or c.size <= self._spans[ledger][0]
        ]
        for checkpoint in ready:
            del self._waiting[checkpoint.ledger]
        rows: list[Row] = []
        if page is not None:
            ledger, first, stop = page
            rows = [(ledger, height, bytes(data)) for height, data in self.store.range_raw(ledger, first, stop)]
            if len(rows) != stop - first:  # cannot be: on_commit runs after COMMIT
                log.error("the store's file lacks %s below %d: the heartbeat fills the stream", ledger, stop)
        self._queue.append((rows, 1, ready))
        return True


def ship(setup: ShipperSetup, pipe: Connection) -> None:
    """The outbox process's body: ship what the node says is durable until it says stop or
    its end of the pipe closes (the node ended, even by kill -9), then ship what is queued."""
    # The node stops it through the pipe; a terminal's Ctrl-C or a group's SIGTERM must not
    # cut it short before it shipped what it was told.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.nice(OUTBOX_NICENESS)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: every thread's stack to the log
    level = logging.getLevelName(setup.log_level).lower()  # the node's, in the node's form (logfmt)
    configure_logging(level if level in LEVELS else "warning")
    logging.getLogger("vledger").setLevel(setup.log_level)  # the node's own, also outside the four names
    view = StoreView(setup.store_dir, setup.read_page_size)
    # The node's alert journal (its thread puts back what Redis lost of this process's alerts too).
    journal = AlertJournal(setup.store_dir / ALERT_JOURNAL, setup.name)
    replication = ReplicationLedger(
        connect(setup.redis, timeout=REDIS_TIMEOUT),
        stream_max_len=setup.stream_max_len,
        node=setup.name,
        raisers=(),
        journal=journal,
    )
    context: zmq.Context[Any] = zmq.Context()
    pusher = FeedPusher(context, setup.name, setup.feed_endpoint, setup.send_hwm)
    # The node's outbox thread already sends at most once per outbox_interval_ms: a second wait
    # here would only add to the replication lag.
    settings = dataclasses.replace(setup.settings, outbox_interval_ms=0)
    refused = {
        ledger: StoreContradictsCheckpointError("refused by its node", ledger=ledger) for ledger in setup.refused
    }
    # The node's own rule for a failback's epoch (10.9), read from its cluster file here.
    allowed = ConfiguredFailbacks(None, setup.cluster_file).allows if setup.cluster_file is not None else None
    outbox = ShippingOutbox(
        pipe,
        setup.name,
        view,
        pusher,
        replication,
        settings,
        witness_keys=setup.witnesses,
        refused=refused,
        **({"failback_allowed": allowed} if allowed is not None else {}),
    )
    # A damaged file is the node's store_damaged, raised here as the node raises it (PROTOCOL 10.5).
    view.on_damaged = lambda error: raise_alert(replication, store_damaged_alert(setup.name, StoreError(error.message)))
    try:
        outbox.serve()
    finally:
        pusher.close(PROXY_LINGER_MS)
        context.term()
        view.close()
        with contextlib.suppress(Exception):
            replication.client.close()
        journal.close()
    if view.found_damaged is not None:
        # Not started again by the node (OutboxProcess._heartbeat), which stops for it.
        sys.exit(EXIT_STORE_DAMAGED)
