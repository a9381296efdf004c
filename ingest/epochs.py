"""Each ledger's epochs as a node's own store holds them (PROTOCOL 10.9), for its checks.

A follower checks a checkpoint of a ledger that may hand over by the epochs of the records
it stored (node/epoch.py); a home signs with its epoch's line and refuses writes once its
store names another home. This book builds a ledger's history from its store on first use
(only a ledger whose genesis pins a standby key is scanned, and only its records that can
be handover records are decoded) and is told of every record stored after that.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from ..broker.replication import REDIS_ERRORS, LastRead, ReplicationLedger
from ..broker.signing import home_checkpoint_publics
from ..config.cluster import ClusterConfig, ConfiguredFailbacks, NodeConfig, load_cluster
from ..config.settings import PROTOCOL_LIMITS
from ..node.epoch import (
    EPOCH_KIND,
    EpochHistory,
    check_promotion,
    epoch_key,
    epoch_payload,
    handover_request_id,
    may_open,
    newest_witnessed_epoch,
    proven_epoch,
)
from ..node.errors import BadGenesisError, NoSuchLedgerError, PromotionRefusedError, VledgerError
from ..node.note import VerifierKey, parse_checkpoint, parse_note
from ..node.record import Content, Entry, Record, decode_record
from ..node.rules.admin import Grants
from ..node.rules.engine import check_grant
from ..node.store import ChainStore
from ..node.witness import home_key
from .key_chains import NOTHING_TO_READ, ChainRows, RowsRead
from .worker import Restarts

log = logging.getLogger(__name__)
_Placed = TypeVar("_Placed")  # what a promotion's placement of its handover answers

# The kind's msgpack string (fixstr of 5 bytes): a record without these bytes is no handover.
_EPOCH_MARK = b"\xa5" + EPOCH_KIND.encode()


class EpochBook:
    """The epochs of every ledger ``store`` holds. Thread-safe (the follow thread feeds it,
    the request loop and the outbox read it)."""

    def __init__(self, cluster: str, store: ChainStore) -> None:
        self.cluster = cluster
        self.store = store
        self._lock = threading.Lock()
        self._histories: dict[str, EpochHistory | None] = {}
        # Counts the changes to a ledger's epochs that stored() saw: what a cache of homes
        # (Homes) compares to know its answers still hold.
        self.changes = 0

    def history(self, ledger: str) -> EpochHistory | None:
        """The ledger's epochs up to the store's head; None while it holds no genesis, or when
        the genesis pins keys that are not this cluster's (then only the pinned key checks)."""
        with self._lock:
            if ledger in self._histories:
                return self._histories[ledger]
            genesis = self.store.get(ledger, 0)
            if genesis is None:
                return None
            try:
                history: EpochHistory | None = EpochHistory(self.cluster, genesis, self.store.rules(ledger))
            except BadGenesisError as e:
                log.warning("no epochs of %s: %s", ledger, e.message)
                history = None
            if history is not None and history.standby_key is not None:
                for error in history.feed(self._handovers(ledger)):
                    log.warning("%s", error.message)
            self._histories[ledger] = history
            return history

    def stored(self, records: Iterable[Record]) -> None:
        """Records just stored (each ledger's in height order): the handovers among them open epochs."""
        # Called with every group commit's records: one comprehension finds the few that matter.
        notable = [r for r in records if r.height == 0 or r.content.kind == EPOCH_KIND]
        if not notable:
            return
        with self._lock:
            for record in notable:
                if record.height == 0:
                    self._histories.pop(record.ledger, None)  # built from the genesis when asked
                    self.changes += 1
                    continue
                history = self._histories.get(record.ledger)
                # Already read, when the history was built from the store after it was stored.
                if history is not None and record.content.kind == EPOCH_KIND and record.height > history.current.height:
                    for error in history.feed([record]):
                        log.warning("%s", error.message)
                    self.changes += 1

    def forget(self, ledger: str) -> None:
        """Records of ``ledger`` were removed from the store (a tail set aside): its epochs are
        read from the store again when next asked."""
        with self._lock:
            self._histories.pop(ledger, None)
            self.changes += 1

    def _handovers(self, ledger: str) -> Iterable[Record]:
        for _, data in self.store.range_raw(ledger, 1):
            if _EPOCH_MARK in data:
                yield decode_record(data, PROTOCOL_LIMITS)

    def signing(self, ledger: str, size: int, node: str) -> tuple[str, ...] | None:
        """The extension lines ``node`` signs the checkpoint of ``size`` records of ``ledger``
        with (none in epoch 1), or None when another node is that epoch's home: a standby that
        follows a ledger, or a home it replaced, signs nothing of it."""
        history = self.history(ledger)
        if history is None:
            return ()  # a ledger this node places from its genesis on: epoch 1, its own
        epoch = history.epoch_at(size)
        return epoch.extensions() if epoch.home == node else None


def _may_hand_over(data: bytes) -> bool:
    return _EPOCH_MARK in data


class ReadEpochs:
    """The epochs of the ledgers of rows a process only reads (the gateway's view of a node's
    store), which grow without telling it: each call reads the records stored since the last
    one (only those whose bytes can be a handover are decoded). Any thread; a history handed
    out is never changed afterwards (a newer call makes a new one)."""

    def __init__(self, cluster: str | None, rows: ChainRows) -> None:
        self.cluster = cluster  # None: read from the pinned checkpoint key's name (EpochHistory.from_genesis)
        self.rows = rows
        self._lock = threading.Lock()
        self._read: dict[str, tuple[EpochHistory | None, RowsRead]] = {}  # ledger -> its history, how far read

    def history(self, ledger: str) -> EpochHistory | None:
        """The ledger's epochs up to the rows' head, None while they hold no genesis, or when
        its genesis pins no standby key (a ledger that never hands over) or keys of another
        cluster. Raises what the rows raise."""
        known = self._read.get(ledger)
        if known is not None and known[1] is NOTHING_TO_READ:  # no query: the gateway asks at each proof
            return None
        size = self.rows.size(ledger)
        if size == 0:
            return None
        with self._lock:
            history, read = self._read.get(ledger, (None, RowsRead()))
            if not read.still_there(self.rows, ledger):  # first look, or a copy cut back since
                history = self._start(ledger)
                # From the genesis on; with no standby key, nothing to follow, ever: the
                # genesis does not change.
                read = RowsRead() if history is not None else NOTHING_TO_READ
            if history is not None:
                handovers, read = read.read_on(self.rows, ledger, size, _may_hand_over)
                if handovers:
                    history = history.extended(handovers)  # a copy: histories handed out stay as they were
            self._read[ledger] = (history, read)
            return history

    def _start(self, ledger: str) -> EpochHistory | None:
        genesis_data = next(iter(self.rows.range_raw(ledger, 0, 1)), None)
        if genesis_data is None:
            return None
        genesis = decode_record(genesis_data[1], PROTOCOL_LIMITS)
        try:
            if self.cluster is None:
                history = EpochHistory.from_genesis(genesis, self.rows.rules(ledger))
            else:
                history = EpochHistory(self.cluster, genesis, self.rows.rules(ledger))
        except BadGenesisError as e:
            log.warning("no epochs of %s: %s", ledger, e.message)
            return None
        return history if history.standby_key is not None else None


class Homes:
    """Which node is each ledger's home now: the newest epoch that this store's records or
    Redis's ``epochs`` hash name (a home cut off during a promotion finds it in Redis: it has
    no handover record), else the cluster file's home. Thread-safe; :meth:`refresh` reads Redis
    (a thread calls it every second, and a promotion after it named itself).

    Every ingest node's Redis user may write ``epochs``, so an epoch it names past the store's
    counts only once a note in Redis proves it (:func:`~vledger.node.epoch.proven_epoch`: a
    checkpoint of that epoch signed by the pinned key the store's epoch does not sign with and
    cosigned by one of ``witnesses()``, the cluster's witness keys in force: a witness's note
    in ``cosig``): else a node could make another node's ledger's home leave its stream and
    stop answering its writes with one HSET, and the standby's host, which holds the other
    pinned key, could sign the proof itself and make its own node place the ledger's records
    with no promotion and no handover record (outsider F6).
    A ledger this store does not hold (whose writes such a node only sends on: ``not_home``
    names its home) has no genesis here to check by: its home is the cluster file's until a
    witness's note in Redis proves a handover, as for ``vledger repl status`` (node/epoch.py
    newest_witnessed_epoch: signed by the cluster-file standby's or home's checkpoint key file,
    ``<node>.sign.pub``, stating an epoch from 2, cosigned by a witness); a claim nothing proves
    (or with no key file at hand) leaves it there, and the client's own fallback to the
    standby (PROTOCOL 10.9) reaches a new home all the same.

    Nor does Redis's silence count: an epoch proven is kept when its entry is deleted, and for
    each held ledger with a cluster-file standby the notes are read every
    LOOK_FOR_EPOCH_SECONDS whether or not ``epochs`` names a later epoch (a home cut off that
    starts again after any ingest user deleted the entry finds it so), as the verifier does.

    Each held ledger's home is kept until what it was found from changes (the book's epochs,
    Redis's): every put asks, and finding it anew cost a put ~4% of the request thread."""

    def __init__(
        self,
        config: ClusterConfig,
        book: EpochBook,
        replication: ReplicationLedger | None,
        *,
        witnesses: Callable[[], Iterable[VerifierKey]],
        failback_allowed: Callable[[str, int, str], bool] | None = None,
    ) -> None:
        self.config = config
        self.book = book
        self.replication = replication
        self.witnesses = witnesses  # read at each proof: a witness's key may rotate (16.6)
        # Whether the cluster file lets a home open an epoch from 3 (a failback, 10.9): as the
        # witnesses and the verifier ask it (default: this config's file, read again once swapped).
        self.failback_allowed = failback_allowed or ConfiguredFailbacks(config).allows
        self._named: dict[str, tuple[int, str]] = {}  # what refresh() found proven (or not held)
        self._read: dict[str, tuple[int, str]] = {}  # what Redis named at the last refresh()
        # Of another type (any ingest user may SET it), the hash reads as it last did and the notes
        # are looked for all the same: a refresh that stopped there never found a handover it
        # names no more, and let a home that came back during it place records (review17 2).
        self._named_read = LastRead(replication.epochs_key, replication.epochs) if replication is not None else None
        self._promoted: dict[str, tuple[int, str]] = {}  # this node's own promotions (named())
        self._unproven: set[tuple[str, int, str]] = set()  # claims warned of, once each
        self._look_at = 0.0  # when the notes are next read for an epoch Redis does not name (monotonic)
        # Each held ledger's home as of the book's ``changes`` in _found_at. Read without the
        # lock; filled and emptied under it, so that no answer found before a change is kept after.
        self._lock = threading.Lock()
        self._homes: dict[str, NodeConfig] = {}
        self._found_at = -1

    def refresh(self) -> None:
        """Read the epochs Redis names; on a Redis error keep the last ones (logged)."""
        if self._named_read is None:
            return
        try:
            named = self._named_read()
        except REDIS_ERRORS as e:
            log.debug("epochs unavailable in Redis: %s", e)
            return
        # Unchanged and all proven: nothing to read. Else each claim not proven yet is read
        # again (the new home's first checkpoint may come a moment after it named itself).
        now = time.monotonic()
        look = now >= self._look_at
        if not look and named == self._read and all(self._named.get(ledger) == e for ledger, e in named.items()):
            return
        try:
            proven = self._proven(named)
            if look:
                proven.update(self._unnamed(named, proven))
        except REDIS_ERRORS as e:
            log.debug("epoch notes unavailable in Redis: %s", e)
            return
        if look:
            self._look_at = now + LOOK_FOR_EPOCH_SECONDS
        for ledger, epoch in self._named.items():  # a signature does not expire: a deleted entry changes nothing
            if epoch[0] > proven.get(ledger, (0, ""))[0]:
                proven[ledger] = epoch
        self._read = named
        if proven != self._named:
            with self._lock:
                self._named = proven
                self._homes = {}

    def take_notes(self, notes: Mapping[str, Iterable[bytes]]) -> None:
        """Take the epochs past the store's that ``notes`` (ledger -> checkpoint notes: what the
        other nodes answered a home's start check) prove, as :meth:`refresh` takes those of the
        notes in Redis, and keep them so. A Redis that lost its data (or its keys deleted by the
        admin's user) holds no proof of a handover, and an old home that started then took the
        ledger's writes as home on a fenced fork until a witness cosigned again (review r19 5);
        the witnesses' own answers still carry the new epoch's witnessed checkpoint. Called
        before :class:`HomesRefresh` starts (it replaces what :meth:`refresh` found)."""
        found: dict[str, tuple[int, str]] = {}
        for ledger, given in notes.items():
            history = self.book.history(ledger) if self.book.store.size(ledger) > 0 else None
            epoch = self._proven_epoch(history, given) if history is not None else None
            if epoch is not None and epoch[0] > self._named.get(ledger, (0, ""))[0]:
                log.warning("the other nodes' notes prove epoch %d of %s at %s, which Redis does not: taken",
                            epoch[0], ledger, epoch[1])  # fmt: skip
                found[ledger] = epoch
        if found:
            with self._lock:
                self._named = {**self._named, **found}
                self._homes = {}

    def _proven(self, named: Mapping[str, tuple[int, str]]) -> dict[str, tuple[int, str]]:
        """The epochs among ``named`` that count (see the class): past the store's, proven by a
        witnessed note in Redis (the proven epoch, whatever Redis wrote); of a ledger not held,
        past the cluster file's home, proven as :meth:`_proven_unheld` says."""
        assert self.replication is not None
        proven = {}
        for ledger, epoch in named.items():
            if self._named.get(ledger) == epoch:
                proven[ledger] = epoch  # proven at an earlier refresh: a signature does not expire
                continue
            if self.book.store.size(ledger) == 0:
                found = self._proven_unheld(ledger)
            else:
                history = self.book.history(ledger)
                if history is None or epoch[0] <= history.current.number:
                    continue  # no newer epoch than the store's: the store's records name the home
                found = self._proven_epoch(history, self.replication.epoch_notes(ledger))
            if found is not None:
                proven[ledger] = found
            elif (ledger, *epoch) not in self._unproven:
                self._unproven.add((ledger, *epoch))
                log.warning(
                    "Redis names %s the home of %s (epoch %d), but no checkpoint of that epoch signed by"
                    " the other pinned key and cosigned by a witness proves it: not taken",
                    epoch[1],
                    ledger,
                    epoch[0],
                )
        return proven

    def _unnamed(
        self, named: Mapping[str, tuple[int, str]], proven: Mapping[str, tuple[int, str]]
    ) -> dict[str, tuple[int, str]]:
        """The epochs past the store's that a note in Redis proves (as :meth:`_proven` takes
        them) of the held ledgers with a cluster-file standby for which Redis names none later
        than the store's, or nothing proven yet."""
        assert self.replication is not None
        found = {}
        for ledger in self.config.standbys:
            if ledger in proven or ledger in self._named or self.book.store.size(ledger) == 0:
                continue
            history = self.book.history(ledger)
            claimed = named.get(ledger)
            if history is None or (claimed is not None and claimed[0] > history.current.number):
                continue  # a claim, which _proven checked
            epoch = self._proven_epoch(history, self.replication.epoch_notes(ledger))
            if epoch is not None:
                log.warning("Redis names no epoch of %s past %d, but a witnessed note proves epoch %d at %s: taken",
                            ledger, history.current.number, epoch[0], epoch[1])  # fmt: skip
                found[ledger] = epoch
        return found

    def _proven_unheld(self, ledger: str) -> tuple[int, str] | None:
        """The newest epoch of a ledger this store does not hold that a note in Redis proves
        (see the class), None when none does or the cluster file names it no standby."""
        assert self.replication is not None
        standby = self.config.standby_of(ledger)
        if standby is None:
            return None
        try:
            publics = home_checkpoint_publics(self.config.keys_dir, standby.name)
        except VledgerError:
            return None
        keys = [home_key(self.config.name, ledger, public) for public in publics]
        if not keys:
            return None
        home = self.config.home_of(ledger).name
        with contextlib.suppress(VledgerError):  # the home's key file too: it signs a failback's epoch 3
            keys += [
                home_key(self.config.name, ledger, public)
                for public in home_checkpoint_publics(self.config.keys_dir, home)
            ]
        return newest_witnessed_epoch(
            self.replication.epoch_notes(ledger),
            keys,
            self.witnesses(),
            allowed=lambda number, home: may_open(ledger, number, home, self.failback_allowed),
        )

    def _proven_epoch(self, history: EpochHistory, notes: Iterable[bytes]) -> tuple[int, str] | None:
        """:func:`~vledger.node.epoch.proven_epoch` with the cluster's witnesses and this file's
        failback rule: an epoch from 3 the file does not allow is no home's (fix31)."""
        return proven_epoch(history, notes, self.witnesses(), failback_allowed=self.failback_allowed)

    def named(self, ledger: str, epoch: int, home: str) -> None:
        """Redis now names ``home`` for ``epoch`` (this node promoted itself)."""
        with self._lock:
            self._promoted = {**self._promoted, ledger: (epoch, home)}
            self._homes = {}

    def epoch_of(self, ledger: str) -> tuple[int, str]:
        """The newest epoch known of ``ledger`` and its home."""
        history = self.book.history(ledger) if self.book.store.size(ledger) > 0 else None
        stored = (history.current.number, history.current.home) if history is not None else None
        named = self._named.get(ledger)
        promoted = self._promoted.get(ledger)
        candidates = [c for c in (stored, named, promoted) if c is not None]
        if not candidates:
            return 1, self.config.home_of(ledger).name
        return max(candidates, key=lambda c: c[0])

    def home_of(self, ledger: str) -> NodeConfig:
        """The node of the ledger's newest epoch (a name the cluster file does not know: its home)."""
        if self._found_at == self.book.changes:
            found = self._homes.get(ledger)
            if found is not None:
                return found
        with self._lock:
            # Read before the epochs are: a change made while they are read makes this answer stale.
            changes = self.book.changes
            if changes != self._found_at:
                self._homes = {}
                self._found_at = changes
            held = self.book.store.size(ledger) > 0  # a ledger not held yet: its genesis changes nothing here
            home = self.epoch_of(ledger)[1]
            found = self.config.nodes.get(home) or self.config.home_of(ledger)
            if held and len(self._homes) < _HOMES_KEPT:
                self._homes[ledger] = found
            return found

    def replaced(self, ledger: str, name: str) -> bool:
        """Whether ``name`` holds ``ledger`` only as a home a newer epoch replaced (10.9): an
        epoch from 2 on names another home, and ``name`` is not the cluster file's standby
        (which follows the home as a replica does). Its copy is then not the ledger's."""
        if self.home_of(ledger).name == name:  # the home's question, answered from the cache
            return False
        standby = self.config.standby_of(ledger)
        return (standby is None or standby.name != name) and self.epoch_of(ledger)[0] >= 2


_HOMES_KEPT = 100_000  # ledgers whose home is kept; past that, the others' is found each time
# How often the notes in Redis are read for a handover of a held ledger that Redis's epochs hash
# does not name (its entry deleted, or written after this node looked): a witness's note proves it.
LOOK_FOR_EPOCH_SECONDS = 5.0


class HomesRefresh:
    """Reads the epochs Redis names every ``interval`` seconds, on a thread of its own."""

    def __init__(self, homes: Homes, interval: float = 1.0) -> None:
        self.homes = homes
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.homes.refresh()
        self._thread = threading.Thread(target=self._run, name="homes-refresh", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Redis's epochs are wire input: a failure no check foresaw must not end the refresh for good.
        Restarts("homes-refresh").run(self._refresh, self._stop)

    def _refresh(self) -> None:
        while not self._stop.wait(self.interval):
            self.homes.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class Promotion:
    """What ``ledger.promote`` does on the standby (PROTOCOL 10.9): checks that this store holds
    everything a witness cosigned and that the handover record passes every rule it will meet,
    names this node the home of the next epoch in Redis (a compare-and-set: one winner per
    epoch), then places the handover record; should that fail, it undoes what it named.

    ``witnesses``: every witness's cosignature key by node name; ``public``: this node's raw
    checkpoint key, the one the genesis must pin as ``standby_key``; ``grants``: the grant
    table its records are placed by (the committer's, PROTOCOL 16.2); ``answers(node)``:
    whether that node answers ``hello`` (a short timeout), which a failback's current home may
    not (:meth:`_handover`).
    """

    def __init__(
        self,
        config: ClusterConfig,
        name: str,
        homes: Homes,
        replication: ReplicationLedger,
        witnesses: Mapping[str, VerifierKey],
        public: bytes,
        grants: Callable[[], Grants | None] = lambda: None,
        answers: Callable[[str], bool] = lambda node: False,
    ) -> None:
        self.config = config
        self.answers = answers
        self.name = name
        self.homes = homes
        self.book = homes.book
        self.replication = replication
        self.witnesses = dict(witnesses)
        self.public = public
        self.grants = grants

    def promote(
        self,
        ledger: str,
        author: str,
        now_ms: int,
        place: Callable[[Entry], _Placed],
        *,
        key_not_stolen: bool = False,
    ) -> _Placed:
        """Make this node the home of ``ledger`` in its next epoch: what ``place`` returns for
        the handover entry, which it must place and return once durable. ``key_not_stolen``:
        the admin confirmed that this node's checkpoint key was not stolen, which a failback
        (an epoch from 3, whose key signed an earlier epoch of this node's) needs: it gives
        that key the pen again.

        Raises NoSuchLedgerError [no_such_ledger] when no ledger has that name: this store
        holds none of it and no home announced it in Redis (``vledger:{ledgers}``);
        PromotionRefusedError [promotion_refused] when this node is not the ledger's standby,
        the key the next epoch signs with (epoch_key: the genesis pins ``standby_key`` for an
        even epoch, ``checkpoint_key`` for an odd one) is not this node's, a failback was not
        confirmed (``key_not_stolen``) or the current epoch's home of a failback still answers
        ``hello``, this store holds fewer records than a witness
        cosigned (or another tree at that size), or Redis names another home for this epoch, or a
        later epoch a witnessed note proves (see :meth:`_name`); the error of the
        rule the handover record would break (bad_epoch, not_granted, payload_too_large, ...),
        before Redis is written; and what ``place`` raises, after Redis is put back.

        Until its store holds the handover record this node is not the home, whatever Redis
        says: a promotion refused at placement left a standby that answered the ledger's
        writes on a fork of its own (outsider 32 R1). So the handover is checked before Redis
        names this node, and a placement that fails anyway is undone in Redis (only while it
        still names this promotion); when even that fails, Redis names an epoch no witnessed
        note proves, which no node takes (Homes), this one included: it goes on answering the
        ledger's writes not_home, naming the home its store holds, until a promotion succeeds.
        """
        entry, history, held, acknowledged = self._handover(ledger, author, now_ms, key_not_stolen)
        number = history.current.number + 1
        try:
            self._refuse_proven(ledger, history)
            self._name(ledger, history, number)
        except REDIS_ERRORS as e:
            raise PromotionRefusedError(f"Redis could not name the new epoch: {e}") from e
        try:
            placed = place(entry)
        except BaseException as e:
            self._undo(ledger, number, (history.current.number, history.current.home), e)
            raise
        self.homes.named(ledger, number, self.name)
        log.warning(
            "%s promoted to home of %s, epoch %d, at size %d (%d cosigned)",
            self.name,
            ledger,
            number,
            held,
            acknowledged,
        )
        return placed

    def _refuse_proven(self, ledger: str, history: EpochHistory) -> None:
        """Raise :class:`PromotionRefusedError` when a witnessed note in Redis proves an epoch
        of ``ledger`` past ``history``'s (:func:`proven_epoch`): a handover this store lacks.

        Checked whatever Redis's epochs entry says (review r19 1): a store put back from a copy
        older than this node's own handover finds its own ``"<e> <node>"`` there, which the
        promote function that :meth:`_name` calls takes as this very promotion, and would open epoch ``e`` again
        on another tree than the one a witness cosigned (records acknowledged in it then lost)."""
        # Whatever the file allows: a refusal is the safe side (a promotion is asked again).
        notes = self.replication.epoch_notes(ledger)
        proof = proven_epoch(history, notes, self.homes.witnesses(), failback_allowed=lambda *_: True)
        if proof is not None:
            raise PromotionRefusedError(
                f"a witnessed note proves epoch {proof[0]} of {ledger!r} at {proof[1]}, which this store lacks"
            )

    def _name(self, ledger: str, history: EpochHistory, number: int) -> None:
        """Have Redis name this node the home of ``ledger`` in epoch ``number`` (10.9 step 3).

        Redis's entry is a claim any ingest node's Redis user may write (review18 3): one past
        ``number`` that no witnessed note proves (:func:`proven_epoch`, as :class:`Homes` takes
        epochs) is replaced, by a compare-and-set on exactly that entry, so that of two
        promotions that both found it, one wins. One of ``number`` itself is respected unproven
        only if it names a node that could open this epoch (:meth:`_may_open`): it is what
        another promotion of it writes before its handover is cosigned. One naming any other
        node is no promotion (fix18a: a made-up ``"<next epoch> <other node>"`` refused every
        failover), and is replaced so."""
        named = self.replication.promote(ledger, number, self.name)
        if named is not None and (named[0] > number or not self._may_open(history, named[1])):
            self._refuse_proven(ledger, history)  # again: a proof may have come since
            log.warning(
                "Redis names epoch %d of %s at %s, which no witnessed note proves: replaced by epoch %d at %s",
                named[0], ledger, named[1], number, self.name,
            )  # fmt: skip
            named = self.replication.promote(ledger, number, self.name, replacing=named)
        if named is not None:
            raise PromotionRefusedError(f"Redis names epoch {named[0]} of {ledger!r} at {named[1]} already")

    def _may_open(self, history: EpochHistory, node: str) -> bool:
        """Whether ``node`` could be another promotion of the next epoch of ``history``'s ledger:
        a promotion passes step 1 only on the node whose checkpoint key the genesis pins as the
        next epoch's (``standby_key`` for an even epoch, ``checkpoint_key`` for an odd one:
        :meth:`_handover`), and only that key signs the new epoch's checkpoints, which a witness
        must cosign. ``node``'s key files (``<node>.sign.pub``, its rotated keys) must hold it: a
        node without them could place no handover any witness cosigns."""
        try:
            publics = home_checkpoint_publics(self.config.keys_dir, node)
        except VledgerError:
            return False  # not a node name, or no key file of it to check: no promotion of ours
        if history.checkpoint_key is None or history.standby_key is None:
            return False
        wanted = epoch_key(history.current.number + 1, history.checkpoint_key, history.standby_key)
        return any(home_key(self.config.name, history.ledger, public) == wanted for public in publics)

    def _handover(
        self, ledger: str, author: str, now_ms: int, key_not_stolen: bool = False
    ) -> tuple[Entry, EpochHistory, int, int]:
        """The handover entry, the epochs it follows, the size held and the size a witness
        cosigned, once every check passed (see :meth:`promote`)."""
        self._check_exists(ledger)
        standby = self.config.standby_of(ledger)
        if standby is None or standby.name != self.name:
            raise PromotionRefusedError(self._not_standby(ledger))
        history = self.book.history(ledger) if self.book.store.size(ledger) > 0 else None
        if history is None:
            raise PromotionRefusedError(f"{self.name} holds no record of {ledger!r}")
        key = home_key(self.config.name, ledger, self.public)
        if history.current.home == self.name:
            raise PromotionRefusedError(
                f"{self.name} is the home of {ledger!r} already (epoch {history.current.number})"
            )
        number = history.current.number + 1
        if history.checkpoint_key is None or history.standby_key is None:
            raise PromotionRefusedError(f"the genesis of {ledger!r} pins no standby_key: it never hands over")
        # The keys alternate (10.9): the standby's signs epoch 2, the genesis home's epoch 3 (a
        # failback), and so on; each key stays its node's.
        field = "standby_key" if number % 2 == 0 else "checkpoint_key"
        if epoch_key(number, history.checkpoint_key, history.standby_key) != key:
            raise PromotionRefusedError(
                f"epoch {number} of {ledger!r} signs with the key its genesis pins as {field},"
                f" which is not {self.name}'s"
            )
        if number >= 3 and not key_not_stolen:
            earlier = next((e.number for e in history.epochs if e.key == key), number - 2)
            raise PromotionRefusedError(
                f"{self.name} held the pen of {ledger!r} in epoch {earlier}: a failback gives its key the pen again."
                " Confirm that key was not stolen (key_not_stolen, `vledger ledger promote --key-not-stolen`);"
                " if it was, do not fail back: make a new ledger"
            )
        if number >= 3 and self.answers(history.current.home):
            # A failback is planned, its current home alive: that home goes on acknowledging
            # w>=1 puts until it reads the witnessed epoch, and a witness that cosigned one above
            # the handover before it stored the handover refuses the new epoch's record there
            # (review r30 F4): acknowledged, and not on the new chain. Stopped, it acknowledges
            # nothing past what this store is then checked to hold.
            raise PromotionRefusedError(
                f"{history.current.home}, the home of epoch {history.current.number} of {ledger!r}, still answers:"
                f" stop it first (it would go on acknowledging writes the handover may lose), then promote"
                f" {self.name}; start it again afterwards as the standby"
            )
        acknowledged, root = self.acknowledged(ledger, history)
        store = self.book.store
        head = store.head(ledger)
        held = store.size(ledger)
        check_promotion(ledger, self.name, held, acknowledged)
        if acknowledged and store.root(ledger, acknowledged) != root:
            raise PromotionRefusedError(f"{self.name}'s tree of {ledger!r} at {acknowledged} is not the cosigned one")
        request_id = handover_request_id(number, lambda taken: store.find_request(ledger, author, taken) is not None)
        content = Content(ledger, EPOCH_KIND, epoch_payload(number, self.name, key), author, request_id, now_ms)
        entry = Entry.prepare(content, store.rules(ledger).difficulty, PROTOCOL_LIMITS)
        # The rules the committer will judge the record by, on the head it will most likely
        # follow: whatever would refuse it there refuses the promotion before Redis is written.
        store.check_entry(entry)
        if head is not None:
            # At the time the store will place it: past every admin record this node applied
            # (16.2), so a standby whose clock is behind the admin home's judges its admin as
            # observers will, not as no admin yet.
            record = entry.place(head.height + 1, head.link, max(now_ms, store.next_accepted(ledger)), self.name)
            history.next_epoch(record)
            check_grant(self.grants(), record)
        return entry, history, held, acknowledged

    def _not_standby(self, ledger: str) -> str:
        """Why this node, which the cluster file it started with does not name ``ledger``'s
        standby, refuses its promotion. The file is read again (outsider o21 F1: a ledger named
        on every host after its standby started was refused "not the standby" for as long as its
        home was dead, with nothing saying why): a node follows only the ledgers its file named
        at its start, so one the file names now needs a restart first, and is told so."""
        said = f"{self.name} is not the standby of {ledger!r} in the cluster file"
        try:
            now = load_cluster(self.config.path).standby_of(ledger)
        except (VledgerError, OSError, ValueError) as e:
            log.debug("the cluster file %s could not be read again: %s", self.config.path, e)
            return said
        if now is None or now.name != self.name:
            return said
        return (
            f"the cluster file {self.config.path} named {self.name} the standby of {ledger!r} after it started:"
            f" restart {self.name} (a standby follows the ledgers its cluster file names at its start), let it"
            f" catch up (`vledger hello --node {self.name}` lists it as standby of {ledger!r}), then promote"
        )

    def _undo(self, ledger: str, number: int, before: tuple[int, str], error: BaseException) -> None:
        """Put back in Redis the epoch ``before`` that a promotion to ``number`` replaced, whose
        handover record was not placed (``error``); logged either way."""
        history = self.book.history(ledger)
        if history is not None and history.current.number >= number:
            return  # the store holds the handover after all (placed, then its answer failed)
        reason = error.message if isinstance(error, VledgerError) else repr(error)
        try:
            undone = self.replication.unpromote(ledger, number, self.name, before)
        except REDIS_ERRORS as e:
            log.error(
                "%s could not place the handover record of %s (epoch %d: %s), and Redis could not be put back"
                " (%s): it names this node, unproven; this node answers the ledger's writes not_home naming %s"
                " until a promotion succeeds",
                self.name, ledger, number, reason, e, before[1],
            )  # fmt: skip
            return
        log.warning(
            "%s could not place the handover record of %s (epoch %d: %s): %s; %s stays its home",
            self.name, ledger, number, reason,
            "Redis names the previous epoch again" if undone else "Redis names another promotion now, left as it is",
            before[1],
        )  # fmt: skip

    def _check_exists(self, ledger: str) -> None:
        """Raises NoSuchLedgerError when neither this store nor Redis's ledgers hash knows
        ``ledger``: a misspelt name was refused as if the standby were not ready. Redis down
        proves nothing either way: the checks after this one then refuse the promotion."""
        if self.book.store.size(ledger) > 0:
            return
        try:
            announced = ledger in self.replication.ledgers()
        except REDIS_ERRORS as e:
            log.debug("the ledgers Redis lists are unavailable: %s", e)
            return
        if not announced:
            raise NoSuchLedgerError(f"no ledger {ledger!r}: no home announced it")

    def acknowledged(self, ledger: str, history: EpochHistory) -> tuple[int, bytes]:
        """The size and root of the largest checkpoint of ``ledger`` a witness cosigned (what a
        write concern may have acknowledged), by the notes in Redis that verify; (0, b"") if none.
        Raises PromotionRefusedError when Redis cannot be read: nothing proves what is safe."""
        try:
            notes = self.replication.cosignatures(ledger)
        except REDIS_ERRORS as e:
            raise PromotionRefusedError(f"Redis could not give the cosignatures of {ledger!r}: {e}") from e
        best = (0, b"")
        for witness, note in notes.items():
            key = self.witnesses.get(witness)
            if key is None:
                continue
            try:
                verified = history.verify(note, witnesses=(key,), quorum=1)
            except VledgerError as e:
                log.info("a cosignature of %s by %s does not count: %s", ledger, witness, e.message)
                continue
            if verified.checkpoint.size > best[0]:
                best = (verified.checkpoint.size, verified.checkpoint.root)
        return best


def handed_over(
    book: EpochBook,
    node: str,
    ledger: str,
    note: bytes,
    *,
    witnesses: Callable[[], Iterable[VerifierKey]],
    failback_allowed: Callable[[str, int, str], bool],
) -> bool:
    """Whether ``node``'s store (``book``) or ``note`` proves that another node homes a newer
    epoch of ``ledger`` than ``node``'s own (10.9): the store holds the handover record, or
    ``note`` is a checkpoint of a later epoch signed by the pinned key ``node`` does not sign
    with and cosigned by one of ``witnesses()``, of an epoch from 3 only as ``failback_allowed``
    (the cluster file) allows (proven_epoch). What a home's write concern asks before it calls a
    note a forgery."""
    history = book.history(ledger) if book.store.size(ledger) > 0 else None
    if history is None:
        return False
    if history.current.home != node:
        return True
    proof = proven_epoch(history, [note], witnesses(), failback_allowed=failback_allowed)
    return proof is not None and proof[1] != node


def earlier_epoch(book: EpochBook, node: str, ledger: str, note: bytes, signer: VerifierKey) -> bool:
    """Whether ``note``, a checkpoint verified with ``signer``, is one of an epoch before the one
    ``node`` homes now, signed by that epoch's pinned key, not past its handover (10.9: not
    fenced), and of the records ``node``'s store holds (its tree has the note's root at its
    size): a witness's genuine cosignature of the previous home's checkpoint, which this home
    never signed, and no forgery. A note that no key of the ledger's epochs signed stays one."""
    history = book.history(ledger) if book.store.size(ledger) > 0 else None
    if history is None or history.current.home != node or history.current.number < 2:
        return False
    try:
        checkpoint = parse_checkpoint(parse_note(note).text)
        epoch = history.check(checkpoint, signer)
        if epoch is None or epoch.number >= history.current.number or checkpoint.size > book.store.size(ledger):
            return False
        return book.store.root(ledger, checkpoint.size) == checkpoint.root
    except (VledgerError, ValueError):
        return False


def standby_ledgers(config: ClusterConfig, name: str) -> list[str]:
    """The ledgers whose cluster-file standby is ``name``."""
    return sorted(ledger for ledger, node in config.standbys.items() if node == name)
