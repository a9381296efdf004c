"""A replica's copies of file blobs: fetched by SHA-256 from the nodes that hold them (PROTOCOL 7.4).

When a replica stores a ``file`` record, the blob it names is queued here. A thread of its
own (record replication never waits for it) asks for the bytes with ``file.download`` over
CURVE, with the node's key (a cluster member may read every file its ledgers record), the
ledger's home first and then every other node of the cluster that serves reads. The bytes go
through the blob area's temporary file, fsync and rename, and are kept only if they hash to
the SHA-256 on the chain and are the size the record says. A source that sends other bytes is
reported (alert ``bad_blob`` naming it) and the next is asked; a blob no source could give is
asked again later, with a backoff doubling from RETRY_FIRST_S up to RETRY_MAX_S.

The replica also keeps its own rules engine, fed the records it stores, so that it applies
each files ledger's read rule exactly as the home does when it serves ``file.download``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ..broker.client import Client, NodeAddress
from ..broker.keys import KeyPair
from ..broker.replication import Alert
from ..node.blobs import BlobStore
from ..node.errors import BlobError, RulesOutOfSyncError, VledgerError
from ..node.record import Record
from ..node.rules.engine import RulesEngine
from ..node.rules.files import FilesState
from ..node.store import ChainStore
from .worker import Worker

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
FETCH_TIMEOUT_S = 5.0
FILE_KIND = "file"


@dataclass(frozen=True, slots=True)
class Wanted:
    """A blob a file record names: where the record is, and what its bytes must be."""

    sha256: str
    size: int
    ledger: str
    height: int


class FileRules:
    """The replica's rules engine, kept at its store's heads, for the files' read rules.

    Fed on the follow thread; the reads thread only looks states up (single dict lookups,
    which CPython makes atomic), as the home's service does with its store's engine.
    """

    def __init__(self, store: ChainStore) -> None:
        self.store = store
        self.engine = RulesEngine()
        for ledger in store.ledgers():
            self._rebuild(ledger)

    def _rebuild(self, ledger: str) -> None:
        self.engine.forget(ledger)
        violations = self.engine.replay(self.store.range(ledger))
        if violations:
            log.warning("ledger %s holds %d records that break its rules", ledger, len(violations))

    def stored(self, records: list[Record]) -> list[Wanted]:
        """Apply the stored ``records`` (of one ledger, in height order); the blobs they name."""
        if not records:
            return []
        try:
            self.engine.replay(records)
        except RulesOutOfSyncError:
            # Records the engine did not see (a repaired or truncated store): start over from the chain.
            self._rebuild(records[0].ledger)
        return [w for r in records if (w := wanted_of(r)) is not None]

    def find(self, sha256: str) -> Wanted | None:
        """The blob ``sha256`` if a files ledger here records it (lookups only: any thread may ask)."""
        for ledger in self.store.ledgers():
            state = self.engine.state(ledger)
            if state is not None and isinstance(state.domain, FilesState):
                f = state.domain.file(sha256)
                if f is not None:
                    return Wanted(f.sha256, f.size, ledger, f.first.height)
        return None

    def files(self) -> Iterator[Wanted]:
        """Every blob the files ledgers of the store record."""
        for ledger in self.store.ledgers():
            state = self.engine.state(ledger)
            if state is not None and isinstance(state.domain, FilesState):
                for f in state.domain.files():
                    yield Wanted(f.sha256, f.size, ledger, f.first.height)


def wanted_of(record: Record) -> Wanted | None:
    """The blob a well-formed file record names, else None (its ledger's rules judge it)."""
    if record.content.kind != FILE_KIND:
        return None
    payload = record.content.payload
    sha256, size = payload.get("sha256"), payload.get("size")
    if not isinstance(sha256, str) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return None
    return Wanted(sha256, size, record.ledger, record.height)


class Connection(Protocol):
    """What the fetcher needs of a :class:`vledger.broker.client.Client` (tests give a simulator)."""

    def call(self, cmd: str, args: dict[str, Any] | None = None) -> Any: ...

    def close(self) -> None: ...


class BlobFetcher(Worker):
    """Fetches the blobs it is asked for, from ``sources(ledger)`` in order, on its own thread.

    ``want`` may be called from any thread; the fetch never blocks its caller.
    """

    def __init__(
        self,
        node: str,
        blobs: BlobStore,
        keys: KeyPair,
        sources: Callable[[str], list[tuple[str, NodeAddress]]],
        *,
        chunk_bytes: int,
        max_message_bytes: int,
        on_alert: Callable[[Alert], None],
        damaged: Callable[[BaseException], object | None] = lambda error: None,
        clock: Callable[[], float] = time.monotonic,
        connect: Callable[[NodeAddress], Connection] | None = None,
    ) -> None:
        super().__init__(f"blobs-{node}")
        self.node = node
        self.blobs = blobs
        self.keys = keys
        self.sources = sources
        self.chunk_bytes = chunk_bytes
        self.max_message_bytes = max_message_bytes
        self.on_alert = on_alert
        # The node store's damaged() (ChainStore.damaged): something for an error found while
        # fetching that says the store is damaged, which it reported (the node stops with 65).
        self.damaged = damaged
        self._clock = clock
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, Wanted, float]] = []  # (when, tie, blob, next delay)
        self._queued: set[str] = set()
        self._ties = itertools.count()
        self._connect = connect or self._client
        self._clients: dict[str, Connection] = {}
        self.fetched = 0  # blobs copied here since the start

    def want(self, wanted: Iterable[Wanted]) -> None:
        """Queue these blobs unless held or already queued."""
        with self._cond:
            for w in wanted:
                try:
                    if w.sha256 in self._queued or self.blobs.has(w.sha256):
                        continue
                except BlobError:
                    continue  # not a digest: the ledger's rules refuse such a record
                self._queued.add(w.sha256)
                heapq.heappush(self._due, (self._clock(), next(self._ties), w, RETRY_FIRST_S))
            self._cond.notify()

    def refetch(self, wanted: Wanted) -> None:
        """Queue a blob again at once (its copy here was found damaged and discarded)."""
        self.want([wanted])

    def pending(self) -> int:
        with self._cond:
            return len(self._queued)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def _stopped(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self.stopping.is_set() and (not self._due or self._due[0][0] > self._clock()):
                    self._cond.wait(None if not self._due else max(0.0, self._due[0][0] - self._clock()))
                if self.stopping.is_set():
                    return
                _, _, wanted, delay = heapq.heappop(self._due)
            try:
                done = self.fetch(wanted)
            except Exception as e:  # the thread goes on; the blob is asked for again later
                if self.damaged(e) is not None:  # unless the store is damaged: reported, the node stops
                    log.error("blob copies of %s end: the store is damaged: %s", self.node, e)
                    return
                log.exception("fetching blob %s failed", wanted.sha256)
                done = False
            with self._cond:
                if done:
                    self._queued.discard(wanted.sha256)
                else:
                    again = (self._clock() + delay, next(self._ties), wanted, min(delay * 2, RETRY_MAX_S))
                    heapq.heappush(self._due, again)

    def fetch(self, wanted: Wanted) -> bool:
        """Copy one blob from the first source that gives the right bytes; whether it is held now."""
        if self.blobs.has(wanted.sha256):
            return True
        for name, address in self.sources(wanted.ledger):
            try:
                self.blobs.put(self._chunks(name, address, wanted), expected=wanted.sha256, max_size=wanted.size)
            except BlobError as e:
                if isinstance(e.__cause__, (VledgerError, OSError)):
                    continue  # the source did not serve it (not there yet, down): ask the next
                self.on_alert(
                    Alert(
                        self.node,
                        wanted.ledger,
                        wanted.height,
                        "bad_blob",
                        f"{name} served other bytes for file {wanted.sha256}: {e}",
                        source=name,
                        expected=wanted.sha256,
                    )
                )
                log.warning("blob %s from %s refused: %s", wanted.sha256, name, e)
                continue
            except VledgerError as e:
                log.debug("blob %s not fetched from %s: %s", wanted.sha256, name, e)
                continue
            except OSError as e:
                # Not the source's (its failures come as BlobError): this node's blob area could
                # not take the bytes (a full or failing disk). Every source would meet the same:
                # said once, at error level, and the blob asked for again after the back-off.
                log.error("blob %s not kept: this node's blob area failed: %s", wanted.sha256, e)
                return False
            self.fetched += 1
            log.info("file blob %s (%d bytes) copied from %s", wanted.sha256, wanted.size, name)
            return True
        return False

    def _client(self, address: NodeAddress) -> Connection:
        return Client(
            address,
            self.keys,
            timeout=FETCH_TIMEOUT_S,
            max_message_bytes=self.max_message_bytes,
            follow=False,  # ask exactly the node named; the next source is tried on a refusal
        )

    def _connection(self, address: NodeAddress) -> Connection:
        key = f"{address.endpoint} {address.key} {self.keys.public}"  # ours rotates too (PROTOCOL 16.6)
        connection = self._clients.get(key)
        if connection is None:
            connection = self._clients[key] = self._connect(address)
        return connection

    def _chunks(self, name: str, address: NodeAddress, wanted: Wanted) -> Iterator[bytes]:
        """The source's bytes of the blob, chunk by chunk; a refusal or unreachable source raises
        BlobError caused by it, and a stated size other than the record's raises BlobError."""
        client = self._connection(address)
        offset = 0
        while True:
            try:
                reply: Any = client.call(
                    "file.download", {"sha256": wanted.sha256, "offset": offset, "length": self.chunk_bytes}
                )
            except (VledgerError, OSError) as e:
                raise BlobError(f"{name}: {e}") from e
            data, size = (reply.get("data"), reply.get("size")) if isinstance(reply, dict) else (None, None)
            if not isinstance(data, bytes) or not isinstance(size, int):
                raise BlobError(f"{name} answered file.download with something else than data and size")
            if size != wanted.size:
                raise BlobError(f"{name} states {size} bytes, the record says {wanted.size}")
            if offset + len(data) > size or (not data and offset < size):
                raise BlobError(f"{name} sent {len(data)} bytes at offset {offset} of {size}")
            if data:
                yield data
            offset += len(data)
            if offset >= size:
                return
