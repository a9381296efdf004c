"""Each ledger's checkpoint key chain as a node's store holds it (docs/PROTOCOL.md 13.8).

The chain starts at the key the genesis pins (else, by the version rule of 10.7, the home's
configured key) and follows every ``checkpoint_key`` record of the ledger. It is derived
from the store, never kept apart from it, so a restarted node knows which key is in force
from its records alone. Records are scanned once: a cache per ledger remembers how far it
read, and only records whose bytes hold the kind's name are decoded.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import redis

from ..broker.replication import ReplicationLedger, wrong_type
from ..broker.signing import checkpoint_key_name
from ..config.settings import PROTOCOL_LIMITS
from ..node.errors import NoteKeyError, NotFoundError, RotationError, VledgerError
from ..node.key_rotation import ROTATION_KIND, ChainedCheckpointKeys, KeyChain, may_rotate, rotation_payload
from ..node.ledger import LedgerRules
from ..node.note import ALG_ED25519, Checkpoint, Note, SignerKey, VerifierKey, origin_for, sign
from ..node.record import Content, Entry, Record, decode_record
from ..node.store import Receipt
from ..node.storefile import MAX_HEIGHT
from ..node.witness import HomeSigner, SignedCheckpoint


class ChainRows(Protocol):
    """What a key chain is read from: a store, or a read-only view of one (the gateway's)."""

    def size(self, ledger: str) -> int: ...

    def rules(self, ledger: str) -> LedgerRules: ...

    def range_raw(self, ledger: str, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]: ...


@dataclass(frozen=True, slots=True)
class RowsRead:
    """How far a ledger's rows were read: up to ``height`` (excluded), the last of them the one
    whose bytes hash to ``last`` (None: none read yet, or never anything to read)."""

    height: int = 0
    last: bytes | None = None

    def still_there(self, rows: ChainRows, ledger: str) -> bool:
        """Whether ``rows`` still hold what was read: the last record read, the same bytes (and so,
        through its ``prev``, every one before it). A copy cut back and refilled past where it was
        read between two looks is as large or larger, and its records below may be others: a
        handover or a rotation among them was never read (review r18, finding 4). One row read."""
        if self.height in (0, MAX_HEIGHT):
            return self.height == MAX_HEIGHT
        found = next(iter(rows.range_raw(ledger, self.height - 1, self.height)), None)
        return found is not None and found[0] == self.height - 1 and _digest(found[1]) == self.last

    def read_on(
        self, rows: ChainRows, ledger: str, size: int, wanted: Callable[[bytes], bool]
    ) -> tuple[list[Record], RowsRead]:
        """The records from ``height`` up to ``size`` whose bytes ``wanted`` picks (the only ones
        decoded; never the genesis, whose bytes list the kinds), and how far that read."""
        picked: list[Record] = []
        if self.height >= size:  # nothing new (or never anything to read): no query
            return picked, self
        last: tuple[int, bytes] | None = None
        for height, data in rows.range_raw(ledger, self.height, size):
            last = (height, data)
            if height > 0 and wanted(data):
                picked.append(decode_record(data, PROTOCOL_LIMITS))
        return picked, (self if last is None else RowsRead(last[0] + 1, _digest(last[1])))


# Nothing ever to read of a ledger (its genesis allows no record that matters, and never changes).
NOTHING_TO_READ = RowsRead(MAX_HEIGHT)
MISSING_RECHECK_S = 5.0  # HomeKeys.missing reads a ledger's chain again after this long


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class KeyChains:
    """The key chains of the ledgers of ``store``; any thread.

    ``fallback(ledger)`` is the key of a ledger whose genesis pins none, or that this store
    does not hold yet (None: none known). ``pending(ledger)`` gives records a follower holds
    above its store, verified as the chain's next but not stored yet: a rotation among them
    is followed too (it must still be valid), so a checkpoint that the new key signed over
    them can be checked before they are stored. Only a genesis and the rotations among them
    matter: a follower gives those alone (Follower.key_records), whatever the run's length.
    """

    def __init__(
        self,
        store: ChainRows,
        fallback: Callable[[str], VerifierKey | None],
        pending: Callable[[str], Iterable[Record]] = lambda ledger: (),
    ) -> None:
        self.store = store
        self.fallback = fallback
        self.pending = pending
        self._lock = threading.Lock()
        # ledger -> its chain, how far its records were read, whether its genesis pins a key
        self._read: dict[str, tuple[KeyChain | None, RowsRead, bool]] = {}

    def stored(self, ledger: str) -> KeyChain | None:
        """The chain of the records stored. Raises RotationError when one of them is a
        ``checkpoint_key`` record that is no valid rotation (the store holds it: say so)."""
        size = self.store.size(ledger)
        if size == 0:
            return self._start(ledger, None)[0]
        with self._lock:
            chain, read, pinned = self._read.get(ledger, (None, RowsRead(), False))
            # First look, or the copy was cut back since (a ledger that cannot rotate: never).
            if not read.still_there(self.store, ledger):
                rules = self.store.rules(ledger)
                chain, pinned = self._start(ledger, rules)
                # A ledger whose genesis lists no kind checkpoint_key holds no rotation (section 4,
                # step 6): nothing to read, ever.
                read = RowsRead() if ROTATION_KIND in rules.kinds else NOTHING_TO_READ
            rotations, read = read.read_on(self.store, ledger, size, may_rotate)
            for record in rotations:
                chain = _follow(chain, pinned, record)
            self._read[ledger] = (chain, read, pinned)
            return chain

    def chain(self, ledger: str) -> KeyChain | None:
        """The chain of the stored records and the pending ones (a genesis among them included);
        a pending record that is no valid rotation ends it there (its run will be refused)."""
        pending = list(self.pending(ledger))
        if pending and pending[0].height == 0 and self.store.size(ledger) == 0:
            try:
                chain, pinned = self._start(ledger, LedgerRules.from_genesis(pending[0].content, PROTOCOL_LIMITS))
            except VledgerError:
                return self._start(ledger, None)[0]
            pending = pending[1:]
        else:
            chain = self.stored(ledger)
            pinned = self._read.get(ledger, (None, RowsRead(), False))[2]
        for record in pending:
            try:
                chain = _follow(chain, pinned, record)
            except RotationError:
                break
        return chain

    def _start(self, ledger: str, rules: LedgerRules | None) -> tuple[KeyChain | None, bool]:
        """The chain a genesis of ``rules`` starts (None: not held yet), and whether it pins it."""
        chain = KeyChain.from_rules(ledger, rules) if rules is not None else None
        if chain is not None:
            return chain, True
        key = self.fallback(ledger)
        return (None if key is None else KeyChain(ledger, (key,))), False

    def keys(self, cluster: str) -> ChainedCheckpointKeys:
        """Checkpoint keys that follow these chains."""
        return ChainedCheckpointKeys(cluster, self.chain)

    def current(self, ledger: str) -> VerifierKey | None:
        """The key in force past the stored records (None: none known, or the stored chain
        holds a rotation that is no valid one, which the follower reported when it came)."""
        try:
            chain = self.stored(ledger)
        except VledgerError:
            return None
        return None if chain is None else chain.current


class StreamRows:
    """A ledger's records as the Redis stream holds them, for :class:`KeyChains`: from the
    genesis, or not at all (a trimmed stream raises NotFoundError). Every ingest node may write
    any ledger's stream: what is read from it is trusted only as far as a key the reader
    already trusts signs it (:class:`ClusterChains`), and a stream that cannot be read (an
    entry with no record, a key of another type) is NotFoundError, never another exception."""

    PAGE = 1000

    def __init__(self, replication: ReplicationLedger) -> None:
        self.replication = replication

    def size(self, ledger: str) -> int:
        with _unreadable(ledger):
            return self.replication.last_height(ledger) + 1

    def rules(self, ledger: str) -> LedgerRules:
        with _unreadable(ledger):
            genesis = self.replication.read(ledger, 0, 1)
        if not genesis or genesis[0].height != 0:
            raise NotFoundError(f"the Redis stream of {ledger!r} no longer holds its genesis")
        return LedgerRules.from_genesis(decode_record(genesis[0].data, PROTOCOL_LIMITS).content, PROTOCOL_LIMITS)

    def range_raw(self, ledger: str, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        at = start
        while stop is None or at < stop:
            with _unreadable(ledger):
                rows, _ = self.replication.read_rows(ledger, at, self.PAGE)
            for height, data in rows:
                if stop is not None and height >= stop:
                    return
                if height != at:
                    raise NotFoundError(f"the Redis stream of {ledger!r} no longer holds height {at}")
                yield height, data
                at += 1
            if len(rows) < self.PAGE:
                return


@contextlib.contextmanager
def _unreadable(ledger: str) -> Iterator[None]:
    """An entry any ingest node's user wrote that is no record, or the key SET to another type:
    NotFoundError (the stream proves nothing); Redis's other errors propagate."""
    try:
        yield
    except (KeyError, ValueError, TypeError) as e:
        raise NotFoundError(f"the Redis stream of {ledger!r} holds an entry that is no record ({e!r})") from None
    except redis.exceptions.ResponseError as e:
        if not wrong_type(e):
            raise
        raise NotFoundError(f"the Redis key of {ledger!r}'s stream is of another type") from None


class ClusterChains:
    """The key chain (13.8) of any ledger of the cluster, wherever it is homed: for a node that
    must check notes of ledgers it does not hold (the admin home, writing what a witness's
    replaced key had cosigned, PROTOCOL 16.6). Any thread.

    A ledger ``store`` holds is read there (its genesis and rotations were checked when stored;
    ``configured(ledger)``, its home's key file's key, where the genesis pins none). Any other
    is read from the Redis ``stream``, which every ingest node may write: its chain counts only
    when its genesis pins ``configured(ledger)``, the operator's trust (each rotation after it
    is signed by the key before, 13.8); a stream trimmed past its genesis, or pinning another
    key, leaves that key alone, which a rotated key's notes then fail (errs toward trusting
    less). None when no key is known.
    """

    def __init__(self, store: ChainRows, stream: ChainRows, configured: Callable[[str], VerifierKey | None]) -> None:
        self.store = store
        self.configured = configured
        self.held = KeyChains(store, configured)
        self.streamed = KeyChains(stream, lambda ledger: None)

    def chain(self, ledger: str) -> KeyChain | None:
        """The ledger's chain as far as the store (or else the stream) holds it."""
        if self.store.size(ledger) > 0:
            try:
                return self.held.stored(ledger)
            except VledgerError:
                return None  # a rotation the store holds that is no valid one: nothing to trust
        configured = self.configured(ledger)
        if configured is None:
            return None
        try:
            chain = self.streamed.stored(ledger)
        except VledgerError:
            chain = None
        if chain is None or chain.keys[0].public_key != configured.public_key:
            return KeyChain(ledger, (configured,))
        return chain

    def keys(self, cluster: str) -> ChainedCheckpointKeys:
        """Checkpoint keys that follow these chains."""
        return ChainedCheckpointKeys(cluster, self.chain)

    def current(self, ledger: str) -> VerifierKey | None:
        """The key in force past what the store (or the stream) holds (None: none known)."""
        chain = self.chain(ledger)
        return None if chain is None else chain.current


class StreamedKeys:
    """The rotated checkpoint keys (13.8) of ledgers as their Redis streams hold them, for the
    operator's tools that hold no store (``repl status``, ``status``, ``verify --cluster``):
    ``vledger ledger rotate-key`` writes the new key's file on the home's host alone, so a key
    directory elsewhere lacks it, while the rotation record proves it from the genesis (o21 F3:
    every such tool said "no checkpoint that verifies" of a rotated ledger, and status OK).
    A chain counts only from a key the caller trusts (a key file's), each rotation signed by the
    key before; a stream trimmed past its genesis, or that cannot be read, adds nothing. Read
    incrementally (:class:`KeyChains`): a tool's ``--watch`` reads each record once."""

    def __init__(self, replication: ReplicationLedger) -> None:
        self._chains = KeyChains(StreamRows(replication), lambda ledger: None)

    def after(self, ledger: str, trusted: Iterable[VerifierKey]) -> list[VerifierKey]:
        """The keys ``ledger``'s rotations named that are not among ``trusted``, when its
        stream's chain starts at one of ``trusted``; else []. Redis's errors count as nothing read."""
        try:
            chain = self._chains.stored(ledger)
        except (VledgerError, redis.exceptions.RedisError, OSError):
            return []
        known = {key.public_key for key in trusted}
        if chain is None or chain.keys[0].public_key not in known:
            return []
        return [key for key in chain.keys[1:] if key.public_key not in known]


def _follow(chain: KeyChain | None, pinned: bool, record: Record) -> KeyChain | None:
    """``chain`` after ``record``; a rotation where the genesis pins no key is RotationError."""
    if record.content.kind != ROTATION_KIND:
        return chain
    if chain is None or not pinned:
        raise RotationError("the genesis pins no checkpoint key to rotate", ledger=record.ledger, height=record.height)
    return chain.after(record)


class HomeKeys(HomeSigner):
    """A home's checkpoint signatures along each ledger's key chain (13.8), and its rotations.

    ``seeds`` are the private keys it holds: its node key and every rotated key file
    (:func:`vledger.broker.signing.load_checkpoint_keys`). A checkpoint of size ``n`` is
    signed only with the key in force at ``n``; with none of its seeds, nothing is signed.
    """

    def __init__(
        self,
        cluster: str,
        seed: bytes,
        chains: KeyChains,
        seeds: Iterable[bytes] = (),
        make_seed: Callable[[], bytes] | None = None,
        drop_seed: Callable[[bytes], None] | None = None,
        home: str = "home",
        on_missing: Callable[[str, str | None], None] | None = None,
    ) -> None:
        super().__init__(cluster, seed)
        self.chains = chains
        self.home = home  # this node's name: its rotated key files are named after it
        self._missing: dict[str, tuple[float, str | None]] = {}  # ledger -> when :meth:`missing` looked, and why
        # Told each ledger's first finding and each change of it (its alert raised, or resolved).
        self._on_missing = on_missing
        self._seeds = {SignerKey("k", ALG_ED25519, s).public_key: s for s in (seed, *seeds)}
        self._make_seed = make_seed  # writes a new key file (0600) and gives its seed
        self._drop_seed = drop_seed  # removes the key file of a made seed's raw public key
        self._rotating = threading.Lock()
        # Built once per (name, public key): deriving a key from its seed costs as much as a signature.
        self._signers: dict[tuple[str, bytes], SignerKey] = {}

    def key_at(self, ledger: str, size: int) -> SignerKey:
        """The private key in force for a checkpoint of ``ledger`` at ``size``.

        Raises NoteKeyError when this home holds no private key of it (a key file gone)."""
        chain = self.chains.stored(ledger)
        if chain is None:
            return self.key(ledger)
        wanted = chain.key_for_size(size)
        seed = self._seeds.get(wanted.public_key)
        if seed is None:
            raise NoteKeyError(
                f"this home holds no private key of {wanted.name}+{wanted.key_id:08x}, in force at size {size}"
            )
        signer = self._signers.get((wanted.name, wanted.public_key))
        if signer is None:
            signer = self._signers[wanted.name, wanted.public_key] = SignerKey(wanted.name, ALG_ED25519, seed)
        return signer

    def missing(self, ledger: str) -> str | None:
        """Why this home could sign no checkpoint of ``ledger``'s next records: the key in force
        is a rotated one (13.8) of which it holds no private key (its ``.ckpt-`` file gone: a key
        folder put back from a copy made before the rotation, outsider o21 F2); None when it
        holds it, or the chain names no rotation (its node key then signs, or the checks of the
        write refuse it). Read again at most every :data:`MISSING_RECHECK_S` per ledger: it is
        asked at each write."""
        now = time.monotonic()
        known = self._missing.get(ledger)
        if known is not None and now - known[0] < MISSING_RECHECK_S:
            return known[1]
        try:
            chain = self.chains.stored(ledger)
        except VledgerError:
            chain = None
        why = None
        if chain is not None and len(chain.keys) > 1 and chain.current.public_key not in self._seeds:
            wanted = chain.current
            why = (
                f"this home holds no private key of {ledger!r}'s checkpoint key in force, {wanted.name}+"
                f"{wanted.key_id:08x}: its key file {checkpoint_key_name(self.home, wanted.public_key)}.sign"
                " (which `vledger ledger rotate-key` wrote on this host only) is not in its key directory; put it"
                " back from a copy and restart the node: until then the ledger's writes are refused"
            )
        self._missing[ledger] = (now, why)
        if self._on_missing is not None and (known is None or known[1] != why):
            self._on_missing(ledger, why)
        return why

    def sign(self, ledger: str, size: int, root: bytes, extensions: tuple[str, ...] = ()) -> SignedCheckpoint:
        """The checkpoint of ``ledger`` at ``size`` with ``root``, signed by the key in force there;
        a standby promoted (an epoch line in ``extensions``, 10.9) signs with its own pinned key."""
        if extensions:
            return super().sign(ledger, size, root, extensions)
        body = Checkpoint(origin_for(self.cluster, ledger), size, root).body()
        note = Note(body, (sign(body, self.key_at(ledger, size)),)).encode()
        return SignedCheckpoint(ledger, size, root, note)

    def rotate(self, ledger: str, author: str, append: Callable[[Entry], Receipt]) -> Receipt:
        """Rotate ``ledger``'s checkpoint key: a new key file, then the rotation record signed by
        the key in force, appended (durable) by ``append``. One rotation at a time, so each is
        signed by the key in force at its height.

        Raises RotationError [bad_rotation] for a ledger whose genesis pins no key, NoteKeyError
        when this home lacks the private key in force or cannot make keys, and what ``append``
        raises (a refusal: the new key's file is removed, and the key forgotten)."""
        if self._make_seed is None:
            raise NoteKeyError("this node makes no checkpoint keys")
        with self._rotating:
            rules = self.chains.store.rules(ledger)
            if KeyChain.from_rules(ledger, rules) is None:
                raise RotationError(f"the genesis of {ledger!r} pins no checkpoint key to rotate", ledger=ledger)
            if ROTATION_KIND not in rules.kinds:
                raise RotationError(f"the genesis of {ledger!r} lists no kind {ROTATION_KIND!r}", ledger=ledger)
            # Only rotations change the key and they are one at a time: the key in force past
            # the stored records is the one in force at the height this record will get.
            old = self.key_at(ledger, self.chains.store.size(ledger) + 1)
            seed = self._make_seed()  # durable before the record names it: no record names a lost key
            new = SignerKey(old.name, ALG_ED25519, seed)
            self._seeds[new.public_key] = seed
            ts = time.time_ns() // 1_000_000
            content = Content(
                ledger,
                ROTATION_KIND,
                rotation_payload(old, new.verifier()),
                author,
                f"rotate-{new.key_id:08x}",
                ts,
            )
            entry = Entry.prepare(content, rules.difficulty, PROTOCOL_LIMITS)
            try:
                return append(entry)
            except VledgerError:
                # Refused, or its commit failed: no record names the key, so its file would only
                # be a stray private key on disk, loaded as a checkpoint key at every start.
                del self._seeds[new.public_key]
                if self._drop_seed is not None:
                    self._drop_seed(new.public_key)
                raise
