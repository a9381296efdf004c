"""Following a feed without losing a record, and without storing one the home node did not place.

**Nothing lost** (the ZeroMQ guide's Clone pattern, by chain height). A follower subscribes
first, then catches up: for each ledger it asks its sources (the Redis stream, then the
nodes it follows, over their ``range`` command) for every record above what it holds, in
order, up to the highest checkpoint it has heard of. A live record at or below what it
holds is a duplicate (checked to be the same bytes, else an alert); one above reveals a gap,
which it fetches first. Checkpoints arrive after each batch and every second, so a gap at
the end of a burst is seen too.

**Nothing forged.** Anyone can compute a checksum, a proof of work and a link, so a record
that verifies (docs/PROTOCOL.md section 4) proves nothing about who placed it. A record is
therefore stored only under a **checkpoint** (vledger.node.witness): the home's signed note
of a tree size and root, checked with the ledger's checkpoint key. Records from anywhere (the
feed, the stream, a relay, the home itself) wait, verified as a chain, in a pending run
above the store's head; once the Merkle tree of the stored records and the pending run has,
at a checkpoint's size, that checkpoint's root, the run up to that size is stored. A pending
run that a checkpoint contradicts is dropped and reported, and fetched again (unless a larger
checkpoint has the run's root: then the run is stored, and the smaller is judged). A checkpoint
at or below the stored size whose root is not the store's is **evidence** that the home
signed two different ledgers (an ``equivocation`` alert naming it, the notes kept verbatim)
only when another note of the home's key proves this copy (see :meth:`Follower._proof_for_copy`);
else it is this copy that changed behind its back: it blames itself and stops following the
ledger until repaired (:meth:`Follower._copy_at_fault`).
A record that fails verification is never stored either: it is reported, naming the node
it came from, and fetched from the next source instead. Nothing here touches a socket: the
replica process (vledger.ingest.replica) feeds it, and the tests drive it directly.

**Runs in flight in catch-up.** A run a checkpoint covers goes to the store (with the bytes
as received, their leaf hashes and the tree grown from them whose root is the checkpoint's,
so the store neither encodes, hashes nor grows them again)
without waiting for its group commit: catch-up fetches and checks the next pages, their
checkpoint notes included, while SQLite writes and fsyncs the ones before, up to
CATCH_UP_IN_FLIGHT runs a ledger, each standing on the one before; the runs queued while a
commit is under way go into the store's next group commit together (one transaction and one
fsync for several pages). The page after the one being taken is fetched meanwhile on a
fetch thread of the follower's (one call to a source at a time), so that the source's answer
is not waited for. The pending run then stands on the last run being stored, not on the
store's head; anything that compares with the store (a checkpoint at or below that size, a
duplicate, a chain started from the head, an alert) first waits for the runs being stored,
and every public call returns with them durable, reported stored oldest first. What the key
chains (13.8) and the epochs (10.9) read from the store never lags behind: a run that holds
a genesis, a ``checkpoint_key`` or an ``epoch`` record is waited for as soon as it is handed
over, so the next note is checked with the keys and epochs it brings. A run whose commit
fails is reported, takes the runs after it along (they stood on it), the pending run is
dropped and all their checkpoints wait again, so it is fetched and checked anew.

**Runs in flight on the live feed.** The replica's follow loop (``receive(wait=False)``) keeps
up to LIVE_IN_FLIGHT runs a ledger in the store's queue, each standing on the one before, and
checks the next batch meanwhile; each run is reported stored (``on_stored``, ``on_verified``)
once its commit is done, oldest first (:meth:`Follower.reap`). A duplicate of a height in
flight is compared with the run's bytes, and a heartbeat of a checkpoint a run covers is left
to that run, without waiting; so is an older checkpoint of the turn that handed the run over
(a replica behind gets several of the home's passes a turn): the flush noted the run's root at
the size it claims, and one with that root joins the checkpoints the run covers. A run that
fails takes the runs after it along (they stood on it): all their checkpoints wait again and
only the first failure is reported.
"""

from __future__ import annotations

import bisect
import collections
import gc
import logging
import operator
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from ..broker.feed import FeedCheckpoints, FeedMessage, FeedRecord
from ..broker.replication import COSIGNED_NOT_HELD, STORE_DAMAGED, Alert, operator_resolves
from ..config.settings import PROTOCOL_LIMITS
from ..node.checkpoint_log import COSIGNED, EVIDENCE, IMPORTED_COSIGNED, IMPORTED_SIGNED
from ..node.conflict import hash_of, told_apart
from ..node.epoch import EPOCH_KIND, EpochKeys, epoch_claim
from ..node.errors import (
    BadEpochError,
    EquivocationError,
    FailbackUnconfiguredError,
    FencedError,
    HeldBackError,
    NoteError,
    RecordConflictError,
    RetiredKeyError,
    RotationError,
    RuleError,
    StoreContradictsCheckpointError,
    TreeMismatchError,
    UnverifiedNoteError,
    VledgerError,
)
from ..node.key_rotation import ROTATION_KIND, ChainedCheckpointKeys, KeyChain
from ..node.ledger import LedgerRules
from ..node.note import Note, origin_for, parse_checkpoint, parse_note
from ..node.record import Record, RecordColumns, decode_record, record_of_checked, records_of_columns
from ..node.store import KEPT_LEAVES, ChainStore, GrownTree, Receipt, grow_kept_by
from ..node.store_cut import Cut
from ..node.tree import Frontier, leaf_hash, verify_consistency
from ..node.verify import ChainVerifier
from ..node.witness import CheckpointKeys, Contradiction, SignedCheckpoint
from .page_check import Checked, PageChecker, Start

log = logging.getLogger(__name__)

NOT_RELAYED = 255  # the hop count given to what catch-up fetched: never republished
MAX_REMEMBERED_ALERTS = 10_000  # findings already reported, not reported again
MAX_SUSPECTS = 10_000  # dropped pending records kept per ledger, to name their source later
MAX_WAITING_CHECKPOINTS = 1024  # verified checkpoints above the store's size kept per ledger
# Records of a run held back (PROTOCOL 10.7) kept in memory, about 1 KiB each: past them the run
# is verified and hashed as it comes, its rotations kept, and fetched again once released.
MAX_HELD_RECORDS = 20_000
CHAIN_FAULTS = frozenset(("bad_link", "height_gap"))  # a row that does not follow the one before it
ANY_HEIGHT = 1 << 63
# Who resolves an alert this follower raised (PROTOCOL 10.5): a refused record once the home's
# record is stored at its height; a checkpoint that did not verify once one by the home does;
# a fault of this node's own copy (a store that cannot give its root, or a copy that contradicts
# the home with nothing to prove the home wrong: store_contradicts_checkpoint), also one an
# earlier run raised (Follower.carry_over: the copy repaired or restored meanwhile), once a
# verified checkpoint at or above it has the copy's root; evidence against the home
# (equivocation), never: the operator's.
BY_RECORD, BY_CHECKPOINT, BY_COPY, BY_OPERATOR = "record", "checkpoint", "copy", "operator"
# A hold's alert (held_back, PROTOCOL 10.7): closed once the ledger is held back no more.
BY_HOLD = "hold"
OK, RETRY, BAD = "ok", "retry", "bad"  # what offering rows to the pending run came to
# Kinds whose records change how the next checkpoint is checked (the key chain, 13.8; the
# epochs, 10.9): a run holding one is never left in flight (a genesis neither: height 0).
KEY_KINDS = frozenset((ROTATION_KIND, EPOCH_KIND))
# Runs a ledger may have in the store's queue on the live feed: the follow loop verifies the
# next batch while the store commits (and fsyncs) the ones before.
LIVE_IN_FLIGHT = 4
# Runs a ledger may have in the store's queue in catch-up (a page's run each, at most): the
# store commits those queued behind a commit under way in one transaction, so the slower its
# fsync, the more pages share one; a run waited for costs the follower's thread a page of idle.
CATCH_UP_IN_FLIGHT = 4
# The rows of a store that may hold another note of the home's key, which proves this copy
# when a checkpoint contradicts it (each checked with the ledger's key again before it counts).
PROVING_KINDS = (COSIGNED, IMPORTED_SIGNED, IMPORTED_COSIGNED)
_HEIGHT_OF: Callable[[tuple[int, bytes]], int] = operator.itemgetter(0)  # a page row's height, in C
GC_PAUSE_SECONDS = 1.0  # the longest catch-up holds the cyclic collector off (see _CyclicGcPaused)
# How long catch-ups may find no source serving the height after a ledger's head, toward a
# verified checkpoint above it, before that checkpoint is set aside (PROTOCOL 10.7 "Storing",
# [replication] unserved_note_ms): a note the home's stolen key signed past its tree held the
# copy behind, serving that note, for ever on a quiet ledger (outsider o18 F3).
UNSERVED_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Page:
    """What a source answers: records by height, in order, and checkpoint notes it holds among them."""

    rows: list[tuple[int, bytes]]
    checkpoints: list[bytes] = field(default_factory=list)  # signatures not checked yet


class Source(Protocol):
    """Somewhere to fetch a ledger's records from by height."""

    name: str  # a node's name, or "redis"

    def fetch(self, ledger: str, start: int, count: int) -> Page:
        """Up to ``count`` records from ``start`` on, in order; may begin above ``start`` (a
        trimmed stream) or be empty. Raises VledgerError or OSError when it cannot answer.
        Called on the follower's thread or its fetch thread, never twice at once."""
        ...

    def checkpoints(self) -> dict[str, bytes]:
        """The latest checkpoint note of each ledger this source holds (signatures not checked yet)."""
        ...


@dataclass(slots=True)
class _Run:
    """A verified run handed to the store, whose group commit may still be under way: the
    follower checks the next page meanwhile (a few runs in flight a ledger, one writer)."""

    future: Future[list[Receipt]]
    records: list[Record]
    data: list[bytes]
    sources: list[str]
    hops: int
    covered: list[SignedCheckpoint]  # the waiting checkpoints it reaches, the largest last
    frontier: Frontier  # the tree of the stored records and this run
    end: int  # the ledger's size once it is stored
    # The root of that tree at each size inside the run the flush compared or was asked to note
    # (the sizes of the other checkpoints of the turn that handed it over): see _take_checkpoint.
    roots: dict[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Following:
    """The page at ``start`` of a source, being fetched on the follower's fetch thread."""

    start: int
    future: Future[Page]

    def drop(self) -> None:
        """Wait until the fetch is over (the source is free again) and forget its page or failure."""
        futures.wait([self.future])


@dataclass(slots=True)
class _Ledger:
    """A ledger as this follower sees it: the checkpoints heard of, and the run waiting for one."""

    best: SignedCheckpoint | None = None  # the largest verified checkpoint
    # Verified checkpoints above the store's size, by size: each may cover a prefix of the run.
    waiting: dict[int, SignedCheckpoint] = field(default_factory=dict)
    # Who sent each waiting checkpoint, by size: named with the evidence if it is judged a lie.
    heard_from: dict[int, str] = field(default_factory=dict)
    # A waiting checkpoint another note of the home's key of its size replaced, by size, with
    # who sent it: held against the store's tree once the store reaches its size (o18 F3).
    rivals: dict[int, tuple[SignedCheckpoint, str]] = field(default_factory=dict)
    # Waiting checkpoints no source served the records of for the follower's ``unserved_after``
    # (their notes): still waiting, so a run that reaches one is stored under it, but no longer
    # the ledger's target nor its best (what it serves and relays). See Follower._unserved.
    aside: set[bytes] = field(default_factory=set)
    # The head at which catch-ups found no source serving the next height, and when (monotonic
    # seconds) each waiting note above it was first found so there: emptied once a source serves
    # past the head or the head moves (Follower._unserved).
    unserved_head: int = -1
    unserved: dict[bytes, float] = field(default_factory=dict)
    pending: list[Record] = field(default_factory=list)  # verified as a chain after the store's head
    data: list[bytes] = field(default_factory=list)  # the bytes of each pending record, as received
    leaves: list[bytes] = field(default_factory=list)  # the Merkle leaf hash of each pending record
    # The page checker's hashes of complete 16-leaf subtrees of the pending records, by index
    # (see page_check.Checked.subtrees): the tree grows by them instead of their leaves.
    subtrees: dict[int, bytes] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)  # where each pending record came from
    # The pending run's genesis and checkpoint_key records, kept aside: the key chains walk
    # these (Follower.key_records), never the whole run, which a hold may make long (10.7).
    rotations: list[Record] = field(default_factory=list)
    hops: int = NOT_RELAYED  # the fewest hops among the pending records that came from a feed
    chain: ChainVerifier | None = None  # positioned after the last pending record
    # The runs being stored, oldest first, each standing on the one before: the pending run
    # stands on the last. Up to CATCH_UP_IN_FLIGHT in catch-up, LIVE_IN_FLIGHT on the live feed.
    storing: collections.deque[_Run] = field(default_factory=collections.deque)
    # Pending records dropped because another chain contradicted them, by height: (link,
    # source, bytes). Once the true record at a height is stored, a suspect there that
    # differs is reported against its source.
    suspects: dict[int, tuple[bytes, str, bytes]] = field(default_factory=dict)
    vouched: SignedCheckpoint | None = None  # the last checkpoint whose root the store was found to have
    # The note of a home checkpoint this copy contradicts with nothing to prove the home wrong:
    # the copy is at fault, and nothing more of the ledger is fetched or stored until it is
    # repaired (a node restarted on a repaired store starts afresh). None while the copy is sound.
    fault: bytes | None = None
    # The notes the cluster's witnesses cosigned last (witness -> note) that this copy's key chain
    # cannot check, of sizes above what it holds: a key a rotation it does not hold names. While
    # ``quorum`` of them stand, nothing more is stored (Follower._held_back, PROTOCOL 10.7).
    ahead: dict[str, bytes] = field(default_factory=dict)
    quorum: int = 0
    # While held: the tree of the stored records and the run (those kept and those passed over),
    # and its root at each size of those notes it reached (Follower._held_back).
    hold_tree: Frontier | None = None
    hold_roots: dict[int, bytes] = field(default_factory=dict)
    # Records of the held run verified past the pending ones (MAX_HELD_RECORDS), not kept: the
    # run goes on after them (``chain``), and they are fetched again once it is released.
    passed: int = 0
    passed_sources: set[str] = field(default_factory=set)
    # Rotations a released run held past what it kept, which the witnesses' notes proved: the
    # key chain follows them until the run is fetched up to them again (Follower.key_records).
    proven: list[Record] = field(default_factory=list)
    served: int = -1  # the highest height a source gave that stood on the chain (what target() may claim)
    # The links of a held run at each page it passed over (``passed_links``), and once a quorum's
    # notes proved it (_release), ``pins``: what it is fetched again as, whatever source serves it,
    # until stored; a run dropped keeps them (review r23 F1: a fork fetched again was stored).
    passed_links: dict[int, bytes] = field(default_factory=dict)
    pins: dict[int, bytes] = field(default_factory=dict)

    def top(self, size: int) -> int:
        """The last height of the pending run (with what a hold passed over) on ``size`` records."""
        return size - 1 + len(self.pending) + self.passed


class Follower:
    """Brings ``store`` up to every ledger's latest checkpoint and keeps it there.

    ``on_stored(records, hops)`` hears of every record stored (to relay it and report it
    held); ``on_alert`` of every finding; ``on_verified`` of every checkpoint the store now
    holds (the tree of the stored records has its root at its size: what a witness may
    cosign). ``keys`` checks each checkpoint with its ledger's key. One thread.
    """

    def __init__(
        self,
        name: str,
        store: ChainStore,
        sources: Iterable[Source],
        *,
        keys: CheckpointKeys,
        home_of: Callable[[str], str],
        on_stored: Callable[[list[Record], int], None],
        on_alert: Callable[[Alert], None],
        on_resolve: Callable[[list[str], int], None] = lambda keys, upto: None,
        on_evidence: Callable[[SignedCheckpoint, str, Contradiction | None], None] = lambda c, source, proof: None,
        on_verified: Callable[[SignedCheckpoint], None] = lambda checkpoint: None,
        batch: int = 1000,
        stopping: Callable[[], bool] = lambda: False,
        checker: PageChecker | None = None,
        witnessed: Callable[[Mapping[str, int]], Mapping[str, tuple[Mapping[str, bytes], int]] | None] | None = None,
        max_held: int = MAX_HELD_RECORDS,
        unserved_after: float = UNSERVED_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.store = store
        self.sources = list(sources)
        self.keys = keys
        self.home_of = home_of
        self.on_stored = on_stored
        self.on_alert = on_alert
        # Closes open alerts (their keys) whose cause is gone up to a height (PROTOCOL 10.5): one of
        # those keys raised at a greater height since (another part of the node may) stays open.
        self.on_resolve = on_resolve
        # The alerts this run raised and left open: key -> (highest height, who resolves it).
        self._open: dict[str, tuple[int, str]] = {}
        self.on_evidence = on_evidence  # the note, who sent it and what proves it wrong: kept by the caller
        self.on_verified = on_verified
        self.batch = batch
        self.stopping = stopping  # a long catch-up, or the start's asking of each source, ends early once this says so
        self.checker = checker  # checks the next catch-up page in its own process (ingest/page_check.py)
        # Given ledgers and the size this copy holds of each: per ledger, the notes of larger sizes
        # its witnesses cosigned last (witness -> note, each one's line verified, the log's
        # signature not) and how many witnesses make a quorum; None: unknown now (Redis down).
        self.witnessed = witnessed
        self.max_held = max(max_held, 1)  # records of a held run kept in memory (see _pass_over)
        self.unserved_after = unserved_after  # see _unserved
        self.clock = clock
        self._fetcher: ThreadPoolExecutor | None = None  # fetches the next catch-up page (made when first needed)
        self.ledgers: dict[str, _Ledger] = {}
        self.caught_up = False  # the start-up catch-up reached every checkpoint heard of
        self._alerted: set[tuple[str, int, str, str]] = set()
        self.stored = 0
        self.duplicates = 0
        self._in_flight = 1  # runs a ledger may have in the store's queue now (see CATCH_UP_IN_FLIGHT)

    # --- status ---------------------------------------------------------------------

    def target(self, ledger: str) -> int:
        """The highest height this follower knows the home placed (checkpointed, or held here)."""
        state = self.ledgers.get(ledger)
        checkpointed = state.best.height if state is not None and state.best is not None else -1
        # A quorum of witnesses holds what their notes state, past a rotation this copy lacks; but
        # their notes are read unchecked, so they claim no more than some source served (r21 F3:
        # a note of size 2**40 said this copy lacked 1.1e12 records).
        witnessed = min(self._witnessed_height(ledger), state.served) if state is not None else -1
        return max(checkpointed, witnessed, self._head(ledger))

    def _witnessed_height(self, ledger: str) -> int:
        """The largest height the notes holding ``ledger`` back claim (-1: not held back)."""
        state = self.ledgers.get(ledger)
        return max((_claimed_height(note) for note in state.ahead.values()), default=-1) if state else -1

    def _goal(self, ledger: str) -> int:
        """The height a catch-up fetches up to: the target, and while held back the notes'
        (asking a source for more than it holds costs a page that comes back short)."""
        return max(self.target(ledger), self._witnessed_height(ledger))

    def behind(self) -> dict[str, int]:
        """Per ledger, how many records this node lacks of the highest checkpoint, counted
        from what its store's file holds: a copy cut short behind the store's back is behind."""
        behind = {}
        for ledger in sorted(self.ledgers):
            lacks = self.target(ledger) + 1 - self.store.stored_size(ledger)
            if lacks > 0:
                behind[ledger] = lacks
        return behind

    def status(self) -> dict[str, object]:
        """What ``hello`` says of this follower (PROTOCOL 10.4): never current while behind."""
        behind = self.behind()
        return {"current": self.caught_up and not behind, "behind": behind}

    def checkpoints(self) -> list[SignedCheckpoint]:
        """The best verified checkpoint of each ledger: what a relay forwards."""
        return [state.best for _, state in sorted(self.ledgers.items()) if state.best is not None]

    def checkpoint_of(self, ledger: str) -> SignedCheckpoint | None:
        state = self.ledgers.get(ledger)
        return state.best if state is not None else None

    def carry_over(self, alerts: Mapping[str, int]) -> None:
        """Take as this run's the open alerts an earlier run of this node raised about its own
        copy or a record it refused (key -> height: :func:`own_copy_alerts`), so that the first
        verified checkpoint at or above each whose root the copy has resolves it. Called before :meth:`start`: a
        store repaired or restored while the node was stopped (`vledger repair`) is vouched for
        by the home as soon as this run compares it, and its blame was never resolved, since
        no earlier run is left to see it vouched for (outsider 25, H1)."""
        for key, height in alerts.items():
            if key.startswith(f"{self.name}|"):
                by = BY_HOLD if key.endswith(f"|{HeldBackError.code}") else BY_COPY
                self._open[key] = (max(height, self._open.get(key, (-1, ""))[0]), by)

    # --- a store cut behind this follower's back ---------------------------------------

    def heal_cuts(self, *, holes: bool = False) -> None:
        """Fetch again what this copy's file lost behind its back: each ledger whose last records
        (or, with ``holes``, any below its head: a count of its rows) were deleted is cut back to
        those it still holds whole (ChainStore.roll_back: checked as an open checks them), and
        caught up from there like a follower that was down: every record verified again and
        stored only under the home's checkpoint, which proves the records kept too. The other
        ledgers wait meanwhile, as for any catch-up. What is left failing the checks is a
        damaged store: the node stops (ChainStore.found_damaged), as when it does not open."""
        for ledger in sorted(self.ledgers):
            try:
                lost = self.store.lost_records(ledger, holes=holes)
            except (VledgerError, sqlite3.Error) as e:
                log.warning("%s: cannot look for records lost from %s: %s", self.name, ledger, e)
                continue
            if not lost:
                continue
            self._settle(ledger)  # its runs in flight first: the store is rolled back between runs
            try:
                cut = self.store.roll_back(ledger)
            except VledgerError as e:
                self.store.found_damaged(f"{self.store.path}: the store's file is damaged: [{e.code}] {e.message}")
                return
            if cut is not None:
                self._cut_back(cut)
                self.catch_up(ledger, self.target(ledger) + 1)

    def _cut_back(self, cut: Cut) -> None:
        """``cut.ledger`` holds only ``cut.kept`` records now: what this follower built on the
        lost ones goes, the largest checkpoint heard of waits again for its records, and an
        alert names this copy (resolved once a verified checkpoint at or above what it held
        vouches for the copy again: healed)."""
        state = self._state(cut.ledger)
        self._drop_pending(state)
        state.vouched = None
        if state.best is not None and state.best.size > cut.kept:
            state.waiting.setdefault(state.best.size, state.best)
        error = TreeMismatchError(f"{self.name}: {cut.describe()}")
        # Each cut is a new loss, never a repeat of one already told: a quiet ledger loses the
        # same tail again under the same key, which would otherwise be healed with no alert.
        self._alerted.discard((cut.ledger, cut.held - 1, error.code, self.name))
        self._alert(cut.ledger, cut.held - 1, error, self.name, b"", expected="", resolved_by=BY_COPY)

    def set_aside(self, ledger: str, kept: int, home: str) -> None:
        """Move this store's records of ``ledger`` from ``kept`` on into a file beside it
        (ChainStore.set_aside) and follow the chain from there: a former home's records past the
        handover that ``home``'s chain does not hold (10.9, a failback). An alert
        [record_conflict] at ``kept`` names them and the file; an operator resolves it."""
        self._settle(ledger)
        aside = self.store.set_aside(ledger, kept)
        if aside is None:
            return
        state = self._state(ledger)
        self._drop_pending(state)
        state.vouched, state.fault = None, None
        error = RecordConflictError(
            f"{self.name}: its {aside.count} records of {ledger!r} from height {kept} on are not on the chain of"
            f" {home}, its home now (placed here past the handover, e.g. acknowledged with w=0 while cut off):"
            f" set aside in {aside.path}, kept for an operator; it follows the chain from height {kept}"
        )
        # Each set-aside is new evidence (a file of its own), never a repeat of one already told.
        self._alerted.discard((ledger, kept, error.code, home))
        self._alert(ledger, kept, error, home, b"", expected="", found="", resolved_by=BY_OPERATOR)

    # --- catching up ----------------------------------------------------------------

    def start(self) -> None:
        """The start-up catch-up: the checkpoints the sources hold, then every record up to them
        (a ledger the store cut back as it opened is named in an alert first: :meth:`_cut_back`)."""
        for ledger in self.store.ledgers():
            self._state(ledger)
        for cut in self.store.cuts:
            self._cut_back(cut)
        for source in self.sources:
            if self.stopping():
                return  # a stop while starting: no source more is asked, each maybe its whole timeout
            try:
                for ledger, note in source.checkpoints().items():
                    self.take_checkpoint(ledger, note, source.name, catch_up=False)
            except (VledgerError, OSError) as e:
                log.warning("%s: cannot ask %s for its checkpoints: %s", self.name, source.name, e)
        self.refresh_witnessed()  # before any record is stored: a copy put back may predate a rotation
        self.catch_up_all()
        for ledger, state in self.ledgers.items():
            if not state.ahead:
                self._hold_ended(ledger)  # an earlier run's hold (carry_over)
        self.caught_up = True
        log.info("%s: caught up: %s", self.name, self._summary())

    def refresh_witnessed(self, *, unsettled_only: bool = False) -> None:
        """Read, through the ``witnessed`` hook, what the cluster's witnesses cosigned last of each
        ledger whose key may rotate (13.8), or whose genesis this copy does not hold yet (an empty
        copy, new or wiped, would take the retired key's fork too: review r21 F2): when a quorum
        of those notes are of sizes above what this copy holds and signed by a key its key chain
        does not know (a rotation it does not hold names it), it stores nothing more of the ledger
        until fewer than a quorum stand against its pending run: they verify along the rotation it
        brought, or are of its tree (:meth:`_held_back`); a ledger held back is judged again
        against the notes read now (released if they are gone). Called at start, and by the
        replica every few moments with ``unsettled_only``: then only for the ledgers with records
        pending, behind a target or held back (a current copy holds every rotation it heard of,
        and reading every ledger's notes each second cost Redis as many keys as witnesses). A
        hook that cannot tell (Redis down) leaves things as they were."""
        if self.witnessed is None:
            return
        held = {
            ledger: self._size(ledger)
            for ledger, state in sorted(self.ledgers.items())
            if state.fault is None
            and (not unsettled_only or state.pending or state.ahead or self._head(ledger) < self.target(ledger))
            and self._may_rotate(ledger)  # one not held yet too: a copy started empty is before every rotation
        }
        found = self.witnessed(held) if held else None
        if found is None:
            return
        for ledger, size in held.items():
            state = self._state(ledger)
            notes, state.quorum = found.get(ledger, ({}, 0))
            if state.ahead:
                # Held back: the run is judged again against the notes read now (_held_back), and
                # released there, each note that verifies now a checkpoint to store it under.
                state.ahead = {witness: note for witness, note in notes.items() if (_claimed_size(note) or 0) > size}
                if state.ahead and state.quorum > 0:
                    self._flush(ledger)
                else:
                    self._release(ledger, state, self._size(ledger), {})
                continue
            ahead = {witness: note for witness, note in notes.items() if self._beyond_keys(ledger, note, size)}
            if 0 < state.quorum <= len(ahead) and not state.ahead:
                log.warning(
                    "%s: %s: %d witness(es) cosigned it up to size %d with a key this copy's key chain does not "
                    "know (a rotation above its %d records): it stores none of it until it holds that rotation",
                    self.name,
                    ledger,
                    len(ahead),
                    max(_claimed_height(note) + 1 for note in ahead.values()),
                    size,
                )
            state.ahead = ahead if 0 < state.quorum <= len(ahead) else {}

    def catch_up_all(self) -> None:
        for ledger in sorted(self.ledgers):
            if self._head(ledger) < self._goal(ledger):
                self.catch_up(ledger, self._goal(ledger) + 1)

    def catch_up_overdue(self, owed: Mapping[str, int]) -> dict[str, int]:
        """The safety net beside a live feed, called every few moments: fetch each ledger up
        to the target it had at the call before (``owed``, which that call returned), never
        past its target now; returns every ledger's target now, for the next call.

        A checkpoint read from Redis is usually ahead of the feed by the records still on
        their way here (the home publishes a batch, then appends it to the stream): fetching
        up to it at once took from the stream what the feed was bringing (a tenth of 5a's
        records came twice, the feed's copy then checked as a duplicate) and held the follow
        loop for that catch-up, tens of milliseconds (hundreds on a loaded machine): the
        slowest lags. A record the feed lost is fetched one call later; one that a checkpoint
        on the feed shows missing is still fetched at once (:meth:`receive`). A follower a
        catch-up page or more behind what it received is fetched up to its target at once, as
        before: the feed is not keeping up with it (its queue drops), and the stream's pages
        cost less a record than the feed's messages."""
        for ledger in sorted(self.ledgers):
            target = self._goal(ledger)
            received = self.ledgers[ledger].top(self._size(ledger))
            stop = target if target - received >= self.batch else min(owed.get(ledger, -1), target)
            if self._head(ledger) < stop:
                self.catch_up(ledger, stop + 1)
        return {ledger: self._goal(ledger) for ledger in self.ledgers}

    def catch_up(self, ledger: str, stop: int) -> bool:
        """Fetch ``ledger`` from the sources in turn until it holds every height below ``stop``.
        Returns with what it stored durable."""
        if self._state(ledger).fault is not None:
            return False  # a copy at fault fetches nothing (see _copy_at_fault)
        in_flight, self._in_flight = self._in_flight, CATCH_UP_IN_FLIGHT  # see _flush
        try:
            return self._catch_up(ledger, stop)
        finally:
            self._in_flight = in_flight

    def _catch_up(self, ledger: str, stop: int) -> bool:
        state = self._state(ledger)
        for source in self.sources:
            # With a checker, the page after the one being taken is fetched on the fetch thread and
            # handed to the checker's process there, meanwhile: each with whether the checker has
            # it, None if the source could not serve it (it is asked again when it is its turn).
            ahead: collections.deque[Future[tuple[Page, bool] | None]] = collections.deque()
            # Without one, the page after it is fetched on the fetch thread meanwhile.
            following: _Following | None = None
            try:
                with _CyclicGcPaused() as collector:  # see _CyclicGcPaused
                    while (start := state.top(self._size(ledger)) + 1) < stop and not self.stopping():
                        collector.between_pages()
                        taken = ahead.popleft().result() if ahead else None
                        if taken is None:
                            try:
                                page = self._fetch(source, ledger, start, stop, following)
                            except (VledgerError, OSError) as e:
                                log.info("%s: %s cannot serve %s from %d: %s", self.name, source.name, ledger, start, e)
                                break
                            finally:
                                following = None
                            taken = (page, False)
                        page, handed = taken
                        if not handed and page.rows and page.rows[0][0] == start:
                            handed = self._hand_over(ledger, page, self._start_of(ledger, start))
                        if handed:
                            self._fetch_ahead(ledger, source, page, stop, ahead)
                        elif not ahead:
                            following = self._fetch_next(source, ledger, page, start, stop)
                        checked = self.checker.result() if handed and self.checker is not None else None
                        for note in page.checkpoints:  # every one checked: each is a claim to hold the home to
                            self._take_checkpoint(ledger, note, source.name, catch_up=False)
                        if not page.rows or page.rows[0][0] != start:
                            break  # this source lacks them (or was trimmed past them): ask the next
                        outcome = self._offer(ledger, page.rows, source.name, NOT_RELAYED, checked)
                        if outcome != OK or state.top(self._size(ledger)) < page.rows[-1][0]:
                            # they stood on rows that were not taken, or a hold released cut the run back
                            self._discard(ahead)
                        if outcome == BAD:
                            self._drop_pending(state)  # what this source gave cannot be trusted: ask the next
                            break
                        # RETRY: the pending run was dropped, this source is asked again from the head
            finally:
                if following is not None:  # the source is never asked twice at once, nor left asked
                    following.drop()
                self._discard(ahead)
            self._settle(ledger)  # stored (or failed, then asked again) before the next source
            if self._head(ledger) + 1 >= stop:
                return True
        if state.ahead and not self.stopping():
            self._held_back_alert(ledger)
        if self._head(ledger) + 1 < stop:
            log.info(
                "%s: %s stays at %d: no checkpoint covers height %d yet",
                self.name,
                ledger,
                self._head(ledger),
                self._head(ledger) + 1,
            )
            self._unserved(ledger, state)
        return False

    def _unserved(self, ledger: str, state: _Ledger) -> None:
        """A catch-up asked every source and none served the height after the head: a checkpoint
        waiting above it that catch-ups found so for ``unserved_after`` at one head is set aside
        (PROTOCOL 10.7 "Storing"). An honest home serves what it signed (it signs only records
        already durable), so such a note is its stolen key's or a home's gone down since it
        signed; either way this copy serves and cosigns what its store proves, not a target no
        source reaches (o18 F3: behind for ever on a quiet ledger, serving the forged note). A
        note set aside still waits: a run that reaches it is stored under it, and another note
        of its size replaces it as any rival (then judged against the stored tree)."""
        if state.pending or state.passed or state.ahead or state.fault is not None or self.stopping():
            state.unserved.clear()  # a source served something, a hold decides, or a stop cut the ask short
            return
        head, now, size = self._head(ledger), self.clock(), self._size(ledger)
        if state.unserved_head != head:
            state.unserved.clear()
            state.unserved_head = head
        # Each note its own time: a new one (another size, or a rival) is not set aside at once.
        notes = [c for s, c in sorted(state.waiting.items()) if s > size and c.note not in state.aside]
        due = [c for c in notes if now - state.unserved.setdefault(c.note, now) >= self.unserved_after]
        if not due:
            return
        state.aside.update(c.note for c in due)
        state.best = self._proven_best(state)
        log.warning(
            "%s: %s: no source served height %d for %.0f s, toward checkpoint(s) of size %s signed with its home's "
            "key: set aside (the home's key may sign trees it does not serve); this copy serves its checkpoint of "
            "size %d",
            self.name,
            ledger,
            head + 1,
            now - min(state.unserved[c.note] for c in due),
            ", ".join(str(c.size) for c in due),
            state.best.size if state.best is not None else 0,
        )

    @staticmethod
    def _proven_best(state: _Ledger) -> SignedCheckpoint | None:
        """The largest checkpoint that is not set aside: one waiting, or the last the store proved."""
        kept = [c for c in state.waiting.values() if c.note not in state.aside]
        if state.vouched is not None:
            kept.append(state.vouched)
        return max(kept, key=_size_of, default=None)

    def _fetch(self, source: Source, ledger: str, start: int, stop: int, following: _Following | None) -> Page:
        """The page at ``start``: the one being fetched on the fetch thread if it starts there
        (its failure raised here), else fetched now, once that one is done with."""
        if following is not None:
            if following.start == start:
                return following.future.result()
            following.drop()
        return source.fetch(ledger, start, min(self.batch, stop - start))

    def _fetch_next(self, source: Source, ledger: str, page: Page, start: int, stop: int) -> _Following | None:
        """Start fetching the page after ``page`` (the one at ``start``, about to be taken) on the
        fetch thread, so that Redis or the node answers while this thread checks and stores
        ``page``: waiting for the answer cost the catch-up a fifth of its time. None when there
        is no next page to ask for (``page`` is not a whole run of heights from ``start``, or
        reaches ``stop``)."""
        rows = page.rows
        after = start + len(rows)
        if not rows or rows[0][0] != start or rows[-1][0] != after - 1 or after >= stop:
            return None
        if self._fetcher is None:
            self._fetcher = ThreadPoolExecutor(1, thread_name_prefix=f"fetch:{self.name}")
        return _Following(after, self._fetcher.submit(source.fetch, ledger, after, min(self.batch, stop - after)))

    def _start_of(self, ledger: str, start: int) -> Start | None:
        """Where the checker starts a page at ``start``: the end of this follower's own chain
        (None without a checker that has started, or before the genesis is held: that is
        checked here)."""
        if self.checker is None or not self.checker.ready():
            return None
        state = self._state(ledger)
        chain = state.chain or self._chain_after_head(ledger)
        state.chain = chain
        if chain.rules is None or chain.next_height != start:
            return None
        return Start(chain.next_height, chain.prev, chain.rules)

    def _hand_over(self, ledger: str, page: Page, start: Start | None, *, after: bool = False) -> bool:
        """Give ``page``'s rows to the checker, from ``start`` or ``after`` the page handed over
        before; whether it has them (its answer is then taken, once, in order)."""
        if self.checker is None or not self.checker.ready() or not page.rows or (start is None and not after):
            return False
        self.checker.submit(ledger, [data for _, data in page.rows], start)
        return True

    def _fetch_ahead(
        self,
        ledger: str,
        source: Source,
        page: Page,
        stop: int,
        ahead: collections.deque[Future[tuple[Page, bool] | None]],
    ) -> None:
        """``page`` is with the checker: fetch the page after it on the fetch thread and hand it
        over there too, so that Redis or the node answers and the checker's process works on it
        while this thread takes ``page`` (fetched here, the answer's wait and its parsing cost
        this thread a sixth of its time)."""
        if ahead:
            return
        after = page.rows[-1][0] + 1
        if page.rows[0][0] + len(page.rows) != after or after >= stop:
            return  # not a run of heights, or the last one needed
        if self._fetcher is None:
            self._fetcher = ThreadPoolExecutor(1, thread_name_prefix=f"fetch:{self.name}")
        ahead.append(self._fetcher.submit(self._fetch_handed, ledger, source, after, min(self.batch, stop - after)))

    def _fetch_handed(self, ledger: str, source: Source, start: int, count: int) -> tuple[Page, bool] | None:
        """On the fetch thread: the page at ``start`` and whether the checker has it (handed over
        after the page before, which it got first); None if the source cannot serve it (it is
        asked again, and its failure told, when it is that page's turn)."""
        try:
            page = source.fetch(ledger, start, count)
        except (VledgerError, OSError):
            return None
        if not page.rows or page.rows[0][0] != start:
            return None
        return page, self._hand_over(ledger, page, None, after=True)

    def _discard(self, ahead: collections.deque[Future[tuple[Page, bool] | None]]) -> None:
        """Forget the pages fetched ahead (once their fetch is over: the source is free again),
        and the checker's answers for them."""
        while ahead:
            taken = ahead.popleft().result()
            if taken is not None and taken[1]:
                assert self.checker is not None
                self.checker.result()

    # --- the live feed ------------------------------------------------------------------

    def receive(self, messages: Iterable[FeedMessage], *, wait: bool = True) -> None:
        """Apply a batch of feed messages: records ledger by ledger, then the checkpoints that cover them.

        ``wait=False`` (the replica's follow loop): the runs they let this follower store stay
        in the store's queue, up to LIVE_IN_FLIGHT a ledger, so that the next batch is checked
        while they commit; each is reported stored (``on_stored``, ``on_verified``) once its
        commit is done, in order, by a later call or :meth:`reap`. Else returns with them durable."""
        self.reap()
        self._in_flight = LIVE_IN_FLIGHT
        try:
            self._receive(messages)
        finally:
            self._in_flight = 1
        if wait:
            self.settle()
        else:
            self.reap()

    def in_flight(self) -> bool:
        """Whether a run handed to the store has not been reported stored (or failed) yet."""
        return any(state.storing for state in self.ledgers.values())

    def reap(self) -> None:
        """Report the runs whose commit is done, oldest first, without waiting for the others."""
        for ledger in list(self.ledgers):
            self._reap(ledger)

    def _reap(self, ledger: str) -> None:
        """Report ``ledger``'s runs whose commit is done, oldest first, without waiting."""
        state = self._state(ledger)
        while state.storing and state.storing[0].future.done():
            if not self._settle_oldest(ledger):
                break

    def settle(self) -> None:
        """Wait for every run handed to the store, and report it."""
        for ledger in list(self.ledgers):
            self._settle(ledger)

    def _receive(self, messages: Iterable[FeedMessage]) -> None:
        live: dict[str, dict[int, FeedRecord]] = {}
        notes: dict[str, list[tuple[bytes, str]]] = {}
        for message in messages:
            if isinstance(message, FeedCheckpoints):
                for ledger, note in message.checkpoints.items():
                    notes.setdefault(ledger, []).append((note, message.sender))
            else:
                live.setdefault(message.ledger, {}).setdefault(message.height, message)
        for ledger, records in live.items():
            self._apply(ledger, [records[h] for h in sorted(records)])
        # Each checkpoint costs a signature check: the same note from several senders, once.
        for ledger, candidates in notes.items():
            seen: set[bytes] = set()
            # A replica behind takes several of the home's passes in one turn: the newest
            # checkpoint hands the run over, and each older one falls inside that run, still
            # being committed. The flush notes the run's root at the sizes the older notes
            # claim (read unchecked: only where to note a root), so that each is compared with
            # the run in memory instead of waiting for its commit and reading the stored tree.
            passing = (
                frozenset(size for note, _ in candidates if (size := _claimed_size(note)) is not None)
                if len(candidates) > 1
                else frozenset()
            )
            for note, sender in reversed(candidates):  # the newest first
                if note not in seen:
                    seen.add(note)
                    self._take_checkpoint(ledger, note, sender, catch_up=True, passing=passing)
                    # Nothing waits for the run the newest handed over: it is reported as soon as
                    # its commit is done, not after the signature checks of the rest of the turn.
                    self._reap(ledger)

    def _apply(self, ledger: str, records: list[FeedRecord]) -> None:
        state = self._state(ledger)
        if state.fault is not None:
            return  # a copy at fault takes nothing, nor blames a sender for what its own store lacks
        # The records that follow the pending run go to it together, a run of heights from one
        # sender at a time: offered one by one, each paid _offer's set-up and a _flush that
        # found no checkpoint to store under (the home sends a pass's records before its note).
        run: list[tuple[int, bytes]] = []
        sender, hops = "", NOT_RELAYED
        for record in records:
            if run:
                if record.height == run[-1][0] + 1 and record.sender == sender and record.hops == hops:
                    run.append((record.height, record.data))
                    continue
                self._offer(ledger, run, sender, hops)
                run = []
            top = state.top(self._size(ledger))
            if record.height <= self._head(ledger):
                self._check_duplicate(state, record)
            elif record.height <= top:
                self.duplicates += 1  # already pending: the checkpoint decides which copy is true
            elif record.height == top + 1:
                run = [(record.height, record.data)]
                sender, hops = record.sender, record.hops
            # above top + 1: a gap, fetched once a checkpoint says how far the chain goes
        if run:
            self._offer(ledger, run, sender, hops)
        if self._head(ledger) < self.target(ledger) and not state.pending:
            self.catch_up(ledger, self.target(ledger) + 1)

    def take_checkpoint(
        self, ledger: str, note: bytes, source: str, *, catch_up: bool = True, wait: bool = True
    ) -> bool:
        """A checkpoint note from ``source``: checked with the ledger's key, then what it covers is
        stored, or it is evidence against the home. False if it does not verify (reported).
        Returns with what it stored durable; with ``wait=False`` (the replica's follow loop, as
        :meth:`receive`) the run it lets this follower store may stay in the store's queue, and
        the runs being stored are reported as their commits are done (:meth:`reap`)."""
        in_flight = self._in_flight
        if not wait:
            self._in_flight = LIVE_IN_FLIGHT
        try:
            return self._take_checkpoint(ledger, note, source, catch_up=catch_up)
        finally:
            self._in_flight = in_flight
            if wait:
                self._settle(ledger)
            else:
                self.reap()

    def _take_checkpoint(
        self, ledger: str, note: bytes, source: str, *, catch_up: bool, passing: Collection[int] = ()
    ) -> bool:
        """take_checkpoint, leaving a run the store is committing in flight (catch-up's pages).
        ``passing``: sizes at which a run this checkpoint hands over notes its tree's root (see
        :meth:`_flush`), the sizes of the other checkpoints that came with it."""
        state = self._state(ledger)
        known = state.best if state.best is not None and state.best.note == note else None
        known = known or next((c for c in state.waiting.values() if c.note == note), None)
        if known is not None:  # the best one comes again with every heartbeat: checked once
            checkpoint = known
        else:
            try:
                checkpoint = self.keys.check(ledger, note)
            except RetiredKeyError as e:
                self._retired(ledger, note, e, source)
                return False
            except UnverifiedNoteError as e:
                claimed = _claimed_height(note)
                if claimed > state.top(self._size(ledger)) and self._may_be_rotated(ledger, note):
                    # Perhaps a key a rotation this copy does not hold yet names (13.8): the
                    # records up to it are fetched (each verified), and its next heartbeat is
                    # checked again. Nothing is stored under it meanwhile.
                    if catch_up:
                        self.catch_up(ledger, claimed + 1)
                    return False
                self._alert(ledger, claimed, e, source, b"", resolved_by=BY_CHECKPOINT)
                return False
            except (NoteError, BadEpochError, FencedError) as e:  # fenced: a replaced home's (10.9)
                self._alert(ledger, _claimed_height(note), e, source, b"", resolved_by=BY_CHECKPOINT)
                return False
        self._resolve(ledger, BY_CHECKPOINT, ANY_HEIGHT)  # the home's checkpoints get through again
        if checkpoint.size == 0:
            return True  # the empty tree: nothing to store, nothing to contradict
        previous = state.best
        if (state.best is None or checkpoint.size > state.best.size) and checkpoint.note not in state.aside:
            state.best = checkpoint
        if any(checkpoint in run.covered for run in state.storing):
            return True  # its run's commit decides: vouched once stored, waits again if it fails
        in_flight: _Run | None = None
        if self.store.size(ledger) < checkpoint.size <= self._size(ledger):
            # Inside a run being stored whose tree had this root at its size (noted by the flush
            # that handed it over: an older checkpoint of the same turn, see _receive): the same
            # comparison as with the stored tree, without waiting for the run's commit.
            in_flight = next((run for run in state.storing if run.roots.get(checkpoint.size) == checkpoint.root), None)
            if in_flight is None:
                # What it covers is compared with the store's own tree: once the runs being stored
                # are. One of a size the store holds is compared at once: the replica's check of
                # Redis's checkpoints every second waited here for the commits under way.
                self._settle(ledger)
        held = self.store.size(ledger)
        if in_flight is not None or checkpoint.size <= held:
            # Runs holding a handover are never left in flight: the store's epochs are those of
            # a run in flight too.
            if not self._of_stored_epochs(checkpoint, source):
                state.best = previous if state.best is checkpoint else state.best
                return False
            if in_flight is not None:
                # One of the checkpoints the run covers now (the largest stays last, the one
                # vouched for): reported once the commit is done, waits again if it fails.
                bisect.insort(in_flight.covered, checkpoint, key=_size_of)
                return True
            self._compare_held(checkpoint, source)
            return True
        if state.fault is not None:
            return True  # a copy at fault stores nothing more
        if checkpoint.size not in state.waiting:
            state.waiting[checkpoint.size] = checkpoint
            state.heard_from[checkpoint.size] = source
            if len(state.waiting) > MAX_WAITING_CHECKPOINTS:  # the nearest ones are needed first
                farthest = max(state.waiting)
                del state.waiting[farthest]
                state.heard_from.pop(farthest, None)
        elif state.waiting[checkpoint.size].root != checkpoint.root:
            # Two notes of one size signed with the home's key (its key stolen, outsider o18 F3):
            # the one taken first kept the copy waiting on a tree no source serves until the next
            # write. The newer waits now; once the records are stored under it, the other is held
            # against their tree (an equivocation when it is not theirs). Each comes again with
            # its source's next heartbeat, so the true one is never left out for long.
            rival = state.rivals[checkpoint.size] = (
                state.waiting[checkpoint.size],
                state.heard_from.get(checkpoint.size, source),
            )
            if len(state.rivals) > MAX_WAITING_CHECKPOINTS:  # as many as the checkpoints waiting, the nearest
                del state.rivals[max(state.rivals)]
            log.warning(
                "%s: %s: two checkpoints of size %d signed with its home's key, roots %s (from %s) and %s "
                "(from %s): the records are stored under the one their tree has, the other is evidence",
                self.name,
                ledger,
                checkpoint.size,
                rival[0].root.hex()[:16],
                rival[1],
                checkpoint.root.hex()[:16],
                source,
            )
            state.waiting[checkpoint.size] = checkpoint
            state.heard_from[checkpoint.size] = source
            if state.best is rival[0]:
                state.best = checkpoint
        self._flush(ledger, passing)
        if catch_up and self._head(ledger) < checkpoint.height:
            self.catch_up(ledger, checkpoint.size)
        return True

    def _compare_held(self, checkpoint: SignedCheckpoint, source: str) -> None:
        """``checkpoint``, of a size the store holds, vouches for this copy up to there, or
        contradicts it (:meth:`_contradicted`)."""
        ledger = checkpoint.ledger
        try:
            held_root = self.store.root(ledger, checkpoint.size)
        except VledgerError as e:  # this node's own store is damaged (rows gone under it): say so
            self._alert(ledger, checkpoint.height, e, self.name, b"", resolved_by=BY_COPY)
            return
        if held_root != checkpoint.root:
            # The rare contradiction is judged with the runs being stored in the store: the
            # note that proves this copy may be the one a run in flight is stored under.
            self._settle(ledger)
            self._contradicted(checkpoint, source, held_root)
        else:
            self._vouched(checkpoint)

    def _of_stored_epochs(self, checkpoint: SignedCheckpoint, source: str) -> bool:
        """Whether ``checkpoint``, of a size the store holds, is of an epoch its records open
        (10.9). A note that claimed an epoch ahead of the store passed the key check only for
        records not stored yet; at a size the store holds, every handover it could state is
        stored, so one it lacks was never placed (the standby's key signing as a home before
        any handover), and the note is refused [bad_epoch] rather than held against the copy,
        which it would blame, or the home. Checked once a note (the one vouched for is not again)."""
        vouched = self._state(checkpoint.ledger).vouched
        if vouched is not None and vouched.note == checkpoint.note:
            return True
        try:
            self.keys.confirm(checkpoint, [])
        except (BadEpochError, FencedError) as e:
            self._alert(checkpoint.ledger, checkpoint.height, e, source, b"", resolved_by=BY_CHECKPOINT)
            return False
        return True

    def _may_rotate(self, ledger: str) -> bool:
        """Whether ``ledger``'s key may rotate (13.8: its genesis pins a key and lists
        ``checkpoint_key``), or its genesis is not held yet."""
        if self.store.size(ledger) == 0:
            return True
        rules = self.store.rules(ledger)
        try:
            return ROTATION_KIND in rules.kinds and KeyChain.from_rules(ledger, rules) is not None
        except VledgerError:  # a pinned value that is no key: nothing can rotate
            return False

    def _beyond_keys(self, ledger: str, note: bytes, held: int) -> bool:
        """Whether ``note`` states a size above ``held`` and is signed by a key no rotation this
        copy holds (stored or pending) names, as far as it can tell (:meth:`_may_be_rotated`)."""
        size = _claimed_size(note)
        if size is None or size <= held:
            return False
        try:
            self.keys.check(ledger, note)
        except UnverifiedNoteError:
            return self._may_be_rotated(ledger, note)
        except VledgerError:
            return False
        return False

    def _may_be_rotated(self, ledger: str, note: bytes) -> bool:
        """Whether ``note`` may be signed by a key a rotation this copy does not hold yet names
        (13.8): ``ledger`` may rotate (or its genesis is not held yet) and a signature line is
        named its origin with a key id of no key this copy knows."""
        if not self._may_rotate(ledger):
            return False
        chain = self.keys.chain_of(ledger) if isinstance(self.keys, ChainedCheckpointKeys) else None
        known = {key.key_id for key in chain.keys} if chain is not None else set()
        try:
            lines = parse_note(note).signatures
            origin = origin_for(self.keys.cluster, ledger)
        except NoteError:
            return False
        return any(line.name == origin and line.key_id not in known for line in lines)

    def _retired(self, ledger: str, note: bytes, error: RetiredKeyError, source: str) -> None:
        """A checkpoint validly signed by a key of the chain that is not in force at its size
        (13.8): kept verbatim as evidence against whoever holds that key, reported once."""
        checkpoint = parse_checkpoint(parse_note(note).text)
        kept = self.store.checkpoints.at(ledger, EVIDENCE, checkpoint.size)
        if any(c.note == note for c in kept):
            return
        self.store.checkpoints.keep(ledger, EVIDENCE, checkpoint.size, checkpoint.root, note)
        self.on_evidence(SignedCheckpoint(ledger, checkpoint.size, checkpoint.root, note), source, None)
        home = self.home_of(ledger)
        self._alert(
            ledger, max(checkpoint.size - 1, 0), error, home, b"", found=checkpoint.root.hex(), resolved_by=BY_OPERATOR
        )

    def _contradicted(self, checkpoint: SignedCheckpoint, source: str, held_root: bytes) -> None:
        """A verified checkpoint at a size this copy holds whose root is not the copy's there
        (``held_root``): ``equivocation`` against the home only when another note of the home's
        key proves this copy (:meth:`_proof_for_copy`), else this copy is at fault."""
        state = self._state(checkpoint.ledger)
        if state.fault == checkpoint.note:
            return  # it comes again with every heartbeat: judged and told already
        kept = self.store.checkpoints.at(checkpoint.ledger, EVIDENCE, checkpoint.size)
        if any(c.note == checkpoint.note for c in kept):
            return  # kept and told already
        proof = self._proof_for_copy(checkpoint, held_root)
        if proof is None:
            self._copy_at_fault(checkpoint, held_root)
        else:
            self._equivocation(checkpoint, source, held_root, proof)

    def _proof_for_copy(self, checkpoint: SignedCheckpoint, held_root: bytes) -> Contradiction | None:
        """Another checkpoint of the home's key, of a size at least ``checkpoint``'s, whose root
        this copy's tree still has, with the consistency proof (from this tree) that its tree
        at ``checkpoint``'s size has ``held_root``: the home signed two trees that cannot both be
        true. None when this copy keeps no such note: then nothing shows the home wrong.

        Taken from what this run verified (the last checkpoint the store was found to hold, the
        largest one heard of) and from the notes the store keeps (cosigned, imported): those
        are checked with the ledger's key again, since a store's rows prove nothing by
        themselves. Only the rare contradiction comes here."""
        ledger, size = checkpoint.ledger, checkpoint.size
        state = self._state(ledger)
        held = self.store.size(ledger)
        epoch = _epoch_of(checkpoint.note)
        candidates = [(c, False) for c in (state.vouched, state.best) if c is not None]
        for kind in PROVING_KINDS:
            rows = [*self.store.checkpoints.at(ledger, kind, size)]
            latest = self.store.checkpoints.latest(ledger, kind, at_most=held, above=size)
            rows += [latest] if latest is not None else []
            candidates += [(SignedCheckpoint(ledger, r.size, r.root, r.note), True) for r in rows]
        for found, unchecked in candidates:
            if not size <= found.size <= held or found.note == checkpoint.note:
                continue
            if _epoch_of(found.note) != epoch:
                # Two epochs' homes, or keys, signing two trees is no home signing both: the
                # copy may hold a fenced home's tail, vouched for before its handover was known.
                continue
            try:
                other = self.keys.check(ledger, found.note) if unchecked else found
                if not size <= other.size <= held or self.store.root(ledger, other.size) != other.root:
                    continue  # this copy no longer holds that one either
                self.keys.confirm(other, [])  # of an epoch its records open, not fenced (10.9)
                proof = self.store.consistency_proof(ledger, size, other.size) if other.size > size else []
                verify_consistency(size, other.size, held_root, other.root, proof)
            except VledgerError:
                continue  # not the home's, or this store cannot prove it: no evidence
            return Contradiction(other, proof)
        return None

    def _copy_at_fault(self, checkpoint: SignedCheckpoint, held_root: bytes) -> None:
        """This copy's tree at ``checkpoint``'s size is not the home's, and nothing it keeps shows
        the home signed another: its store changed behind its back (a rewritten or cut tail, and
        the checkpoints that covered it gone), or the note that would prove the home wrong is
        lost. Either way this copy cannot be trusted: it says so naming itself, and takes
        nothing more of the ledger (a record the home sends after its true head does not link
        on a rewritten one, and would blame the home) until it is repaired."""
        ledger = checkpoint.ledger
        state = self._state(ledger)
        state.fault = checkpoint.note
        self._drop_pending(state)
        state.waiting.clear()
        state.heard_from.clear()
        home = self.home_of(ledger)
        error = StoreContradictsCheckpointError(
            f"{self.name}: ledger {ledger!r}: its tree of size {checkpoint.size} has another root than the "
            f"checkpoint {home} signed at that size, and it keeps no checkpoint of {home} at or above that size "
            "that its tree still has: its store changed (a rewritten or cut tail), or lost the note that would "
            "prove the home signed two trees; it fetches and stores no more of the ledger until it is repaired",
            ledger=ledger,
            height=checkpoint.height,
        )
        self._alert(
            ledger,
            checkpoint.height,
            error,
            self.name,
            b"",
            expected=checkpoint.root.hex(),
            found=held_root.hex(),
            resolved_by=BY_COPY,
        )

    def _equivocation(self, checkpoint: SignedCheckpoint, source: str, held_root: bytes, proof: Contradiction) -> None:
        """A checkpoint by the ledger's key that this copy contradicts, and ``proof`` that the
        home signed the copy's tree: both notes kept, reported (once)."""
        home = self.home_of(checkpoint.ledger)
        other = proof.checkpoint
        how = "the same size" if other.size == checkpoint.size else f"size {other.size}, which this copy's extends"
        error = EquivocationError(
            f"a checkpoint signed with the key of {home} at size {checkpoint.size} has another root than this "
            f"copy, whose tree is that of another checkpoint of {home}'s key at {how} (both notes kept as evidence)",
            ledger=checkpoint.ledger,
            height=checkpoint.height,
        )
        for note in (other, checkpoint):
            self.store.checkpoints.keep(note.ledger, EVIDENCE, note.size, note.root, note.note)
        self.on_evidence(checkpoint, source, proof)
        self._alert(
            checkpoint.ledger,
            checkpoint.height,
            error,
            home,
            b"",
            expected=held_root.hex(),
            found=checkpoint.root.hex(),
            resolved_by=BY_OPERATOR,
        )

    def _vouched(self, checkpoint: SignedCheckpoint) -> None:
        """``checkpoint`` verified and this store has its root at its size: the home vouches for
        this copy up to there, so its own faults below are gone. A rival note of a size it now
        holds is judged as one it holds: its epoch, then its tree (:meth:`_take_checkpoint`)."""
        state = self._state(checkpoint.ledger)
        state.vouched = checkpoint
        if state.best is None or checkpoint.size > state.best.size:
            state.best = checkpoint  # a note set aside that a run reached after all (_unserved)
        self._resolve(checkpoint.ledger, BY_COPY, checkpoint.height)
        for size in sorted(s for s in state.rivals if s <= checkpoint.size):
            rival, source = state.rivals.pop(size)
            # As any note of a size the store holds: its epoch first (10.7). A fenced home's note
            # held against the tree without it found no proof of the same epoch and blamed the
            # copy, which then stored no more of the ledger (review r28).
            if self._of_stored_epochs(rival, source):
                self._compare_held(rival, source)
        self.on_verified(checkpoint)

    def _check_duplicate(self, state: _Ledger, record: FeedRecord) -> None:
        """A live record at a height held (or being stored): the same bytes, else an alert."""
        self.duplicates += 1
        for run in state.storing:
            first = run.records[0].height
            if first <= record.height < run.end:
                # Checked against the run's bytes, as received: the run is the home's chain (a
                # checkpoint's root covers it) whether or not its commit is done yet.
                if run.data[record.height - first] == record.data:
                    return
                self._settle(record.ledger)  # the alert names what is stored there
                break
        # Below the runs in flight: in the store already (they stand on its head).
        held = self.store.get(record.ledger, record.height)
        if held is not None and held.encode() != record.data:
            self._alert(
                record.ledger,
                record.height,
                RecordConflictError("a different record is already stored at this height"),
                record.sender,
                record.data,
            )

    # --- verifying and storing -------------------------------------------------------------

    def _offer(
        self, ledger: str, rows: list[tuple[int, bytes]], source: str, hops: int, checked: Checked | None = None
    ) -> str:
        """Take ``rows`` (which start right above what is held or pending) into the pending run,
        each verified as the chain's next; store what a checkpoint covers.

        OK if every row was taken. A row that does not follow the pending run may be the true
        one: the run is dropped (kept as suspects) and RETRY says to fetch again from the head.
        BAD at a row that fails on its own, or that does not follow the stored head: reported.

        ``checked``: the leaf hashes of the leading rows the page checker passed (see
        ingest/page_check.py); each is taken only if it stands on this follower's chain."""
        state = self._state(ledger)
        leaves = checked.leaves if checked is not None else []
        passed = len(leaves)
        top = state.top(self._size(ledger))  # grows by one with each row taken below
        begin = 0
        if checked is not None and passed:
            begin = self._take_checked(ledger, state, rows, checked, top, source, hops)
            top = state.top(self._size(ledger))
        for index in range(begin, len(rows)):
            height, data = rows[index]
            if height <= top:
                continue
            record = None
            leaf = None
            try:
                chain = state.chain or self._chain_after_head(ledger)
                if index < passed:
                    record = _on_chain(chain, height, data)
                    leaf = leaves[index] if record is not None else None
                # All checks at once when the record is sure to pass (it then says this height);
                # else one by one, which name the first failure.
                if record is None and height == chain.next_height:
                    record = chain.feed_record_fast(data)
                if record is None:
                    record = decode_record(data, PROTOCOL_LIMITS)
                    if record.height != height:
                        raise RecordConflictError(f"the record says height {record.height}, it was sent as {height}")
                    chain.feed(record)
                if record.content.kind == ROTATION_KIND:
                    self._check_rotation(ledger, record)
            except VledgerError as e:
                state.chain = None
                self._flush(ledger)
                # A row that does not follow a run another source gave: the run or the row is
                # wrong, a checkpoint will tell. One that breaks its own source's run is just wrong.
                if state.pending and state.sources[-1] != source and e.code in CHAIN_FAULTS and record is not None:
                    self._drop_pending(state, suspect=True)
                    if len(state.suspects) < MAX_SUSPECTS:
                        state.suspects.setdefault(height, (record.link, source, data))
                    return RETRY
                self._alert(ledger, height, e, source, data)
                return BAD
            state.chain = chain
            state.pending.append(record)
            if height == 0 or record.content.kind == ROTATION_KIND:
                state.rotations.append(record)
            state.data.append(data)
            state.leaves.append(leaf if leaf is not None else leaf_hash(data))
            state.sources.append(source)
            state.hops = min(state.hops, hops)
            top += 1
        state.served = max(state.served, top)
        dropped = self._flush(ledger)
        if source in dropped:
            return BAD  # the home's checkpoint contradicts what this source gave: ask the next one
        return RETRY if dropped else OK

    def _take_checked(
        self,
        ledger: str,
        state: _Ledger,
        rows: list[tuple[int, bytes]],
        checked: Checked,
        top: int,
        source: str,
        hops: int,
    ) -> int:
        """Take the leading ``rows`` the page checker passed (their leaf hashes, ``checked``)
        into the pending run as one piece, each only if it stands on this follower's chain (see
        :func:`_on_chain`); the index of the first row left to :meth:`_offer`'s own loop.

        Rows at or below ``top`` (held or pending) are passed over, as that loop does. A
        ``checkpoint_key`` record, and every row after it, is left to that loop (its rotation
        is checked there). The run's lists are extended once, not appended to a row at a time."""
        chain = state.chain or self._chain_after_head(ledger)
        rules = chain.rules
        if rules is None:
            return 0  # the genesis is not held: the loop checks it
        leaves = checked.leaves
        index, stop = 0, len(leaves)
        while index < stop and rows[index][0] <= top:
            index += 1
        begin = index
        expected, prev = chain.next_height, chain.prev
        records: list[Record] = []
        if checked.fields is None:
            for height, data in rows[begin:stop]:
                record = record_of_checked(data)
                content = record.content
                if height != expected or record.height != expected or record.prev != prev or content.ledger != ledger:
                    break
                if content.kind == ROTATION_KIND:
                    break
                records.append(record)
                expected += 1
                prev = record.link
        else:
            records = _records_on_chain(checked.fields, rows, begin, stop, expected, prev, ledger)
        if not records:
            state.chain = chain
            return begin
        chain.advance(records[-1], rules)
        state.chain = chain
        end = begin + len(records)
        state.pending.extend(records)
        state.data.extend([data for _, data in rows[begin:end]])
        state.leaves.extend(leaves[begin:end])
        state.sources.extend([source] * len(records))
        state.hops = min(state.hops, hops)
        if checked.subtrees:
            # The checker's subtrees whose 16 leaves are all among the rows taken.
            first, low, high = checked.first_subtree, records[0].height, records[-1].height + 1
            lowest = max(first, -(-low // KEPT_LEAVES))
            highest = min(first + len(checked.subtrees), high // KEPT_LEAVES)
            if lowest < highest:
                state.subtrees.update(
                    zip(range(lowest, highest), checked.subtrees[lowest - first : highest - first], strict=True)
                )
        return end

    def pending(self, ledger: str) -> list[Record]:
        """The records held above the store, verified as the chain's next, not stored yet."""
        state = self.ledgers.get(ledger)
        return [] if state is None else list(state.pending)

    def key_records(self, ledger: str) -> list[Record]:
        """Of the pending records, those a key chain follows (KeyChains.pending): the genesis
        and the ``checkpoint_key`` records. Walking the whole run instead cost each note checked
        while a run is held back (10.7) a pass over it: quadratic in the run (review r21 F5)."""
        state = self.ledgers.get(ledger)
        if state is None:
            return []
        if not state.proven:
            return list(state.rotations)
        # Those a released run passed over (see _release) until it is fetched up to them again.
        top = state.top(self._size(ledger))
        return [*state.rotations, *(record for record in state.proven if record.height > top)]

    def _check_rotation(self, ledger: str, record: Record) -> None:
        """A ``checkpoint_key`` record must be a valid rotation of the key chain held so far
        (13.8); raises RotationError [bad_rotation] otherwise, StandbyRotationError
        [standby_rotation] on a ledger whose genesis pins a standby key (10.9)."""
        proven = next((r for r in self._state(ledger).proven if r.height == record.height), None)
        if proven is not None:
            # The key chain follows it already (key_records): the run must bring that very one.
            if proven.encode() != record.encode():
                raise RotationError(
                    "not the rotation the witnesses' notes proved at this height", ledger=ledger, height=record.height
                )
            return
        chained = self._chained()
        if chained is not None:
            chain = chained.chain_of(ledger)
            if chain is None:
                raise RotationError("no checkpoint key is known to rotate", ledger=ledger, height=record.height)
            chain.after(record)

    def _chained(self) -> ChainedCheckpointKeys | None:
        """The key chains this follower checks by, also under the epochs of the ledgers that
        hand over (a standby's or a replica's EpochKeys): a rotation there is checked too."""
        keys = self.keys.base if isinstance(self.keys, EpochKeys) else self.keys
        return keys if isinstance(keys, ChainedCheckpointKeys) else None

    def _chain_after_head(self, ledger: str) -> ChainVerifier:
        """A verifier that expects the record after the store's head (or a genesis)."""
        self._settle(ledger)
        head = self.store.head(ledger)
        if head is None:
            return ChainVerifier(ledger, PROTOCOL_LIMITS)
        return ChainVerifier.after(ledger, head.height, head.link, self.store.rules(ledger), PROTOCOL_LIMITS)

    def _flush(self, ledger: str, passing: Collection[int] = ()) -> set[str]:
        """Store the pending records up to the largest checkpoint whose root the tree of the
        stored (or being stored) and pending records has at its size. The run handed over keeps
        the tree's root at each waiting size it reaches and each of ``passing`` inside it.

        A checkpoint inside the run whose root differs means the run is not the home's
        chain: it is dropped (kept as suspects) and its sources returned; else an empty set.
        Unless a larger checkpoint in the run has its root there: the run is the home's chain
        up to that one, and is stored under it; each one that differs below is then judged
        against the store like any checkpoint of a size it holds (:meth:`_contradicted`: the
        home signed two trees). Dropped instead, the run was fetched and dropped again and
        again, and the ledger stayed behind with no alert.
        The run goes to the store without waiting for its commit (see :meth:`_settle`),
        unless it holds a record the key chains or epochs read (``KEY_KINDS``, a genesis)."""
        state = self._state(ledger)
        base = self._size(ledger)  # the size of the stored tree, with the run being stored
        for size in [size for size in state.waiting if size <= base]:
            del state.waiting[size]
            state.heard_from.pop(size, None)
        if state.aside or state.unserved:  # those no longer waiting (stored under, replaced by a rival, dropped)
            notes = {c.note for c in state.waiting.values()}
            state.aside &= notes
            state.unserved = {note: since for note, since in state.unserved.items() if note in notes}
        if not state.pending and not state.ahead:
            return set()
        if state.pins:
            state.pins = {height: link for height, link in state.pins.items() if height >= base}
            unlike = next(
                (
                    height
                    for height, link in state.pins.items()
                    if not state.passed
                    and height < base + len(state.pending)
                    and state.pending[height - base].link != link
                ),
                None,
            )
            if unlike is not None:
                i = unlike - base
                error = RecordConflictError(
                    f"height {unlike}: not the record of the run a quorum of the witnesses' notes proved there"
                )
                self._alert(ledger, unlike, error, state.sources[i], state.data[i])
                dropped = set(state.sources)
                self._drop_pending(state, suspect=True)
                return dropped
        if state.ahead:
            held = self._held_back(ledger, state, base)
            if held is not None:
                return held  # nothing past a rotation this copy does not hold: the run waits, or goes
        top = base + len(state.pending)  # the size of the tree with the run
        sizes = sorted(size for size in state.waiting if size <= top)
        if any(height >= top for height in state.pins):
            # Stored only up to a pin the run matched: the records below it are the proven ones.
            limit = max((height + 1 for height in state.pins if height < top), default=base)
            sizes = [size for size in sizes if size <= limit]
        if not sizes:
            return set()  # no checkpoint reaches into the run yet: it waits
        if state.storing:
            frontier = state.storing[-1].frontier.copy()
        else:
            frontier = self.store.frontier(ledger) if base else Frontier()
        kept: list[tuple[int, int, bytes]] = []  # the subtrees the store keeps, handed to it with the run
        roots: dict[int, bytes] = {}
        # The tree passes these sizes anyway: a root there costs a few hashes, against a wait for
        # the run's commit and a read of the stored tree for the checkpoint that claims it.
        noted = [size for size in passing if base < size < sizes[-1] and size not in state.waiting]
        contradicted: list[SignedCheckpoint] = []  # those whose root the run's tree has not
        for size in sorted([*sizes, *noted]) if noted else sizes:
            if frontier.size < size:
                # One call for the leaves up to this checkpoint, not one a leaf.
                kept.extend(grow_kept_by(frontier, state.leaves[frontier.size - base : size - base], state.subtrees))
            root = roots[size] = frontier.root()
            checkpoint = state.waiting.get(size)
            if checkpoint is not None and root != checkpoint.root:
                contradicted.append(checkpoint)
        if contradicted:
            if contradicted[-1].size == sizes[-1]:  # no checkpoint above vouches for the run
                if state.subtrees:
                    # The checker's subtrees may be what is wrong, not the run: again from the
                    # leaves alone. If the run then stands, the checker's word is worth nothing.
                    state.subtrees.clear()
                    dropped = self._flush(ledger, passing)
                    if not dropped and self.checker is not None:
                        self.checker.distrust(f"its subtree hashes of {ledger} gave another root than its leaves")
                    return dropped
                dropped = set(state.sources[: contradicted[0].size - base])
                self._drop_pending(state, suspect=True)  # not the home's chain; told once the true one is in
                return dropped
            sizes = [size for size in sizes if state.waiting[size] not in contradicted]
        covered = state.waiting[sizes[-1]]
        count = covered.size - base
        try:
            # A checkpoint that claimed an epoch ahead of the store must find its handover in the run.
            self.keys.confirm(covered, state.pending[:count])
        except (BadEpochError, FencedError) as e:
            # A failback the cluster file does not allow may be a thief's (10.9): the home's next
            # checkpoint getting through says nothing of it, so it stays open for an operator.
            by = BY_OPERATOR if isinstance(e, FailbackUnconfiguredError) else BY_CHECKPOINT
            # Raised at the handover's height: each later checkpoint of that epoch meets the same
            # refusal, and at its own height was a new alert each time (o24 F2: 56 in 35 s).
            at = e.height if by == BY_OPERATOR and e.height is not None else covered.height
            self._alert(ledger, at, e, self.home_of(ledger), b"", resolved_by=by)
            for size in sizes:
                del state.waiting[size]
            dropped = set(state.sources[:count])
            self._drop_pending(state, suspect=True)
            return dropped
        # At most self._in_flight runs in flight (CATCH_UP_IN_FLIGHT in catch-up, LIVE_IN_FLIGHT
        # on the live feed, else one). If one failed, the pending run that stood on it is gone
        # and its checkpoints wait again.
        if not self._make_room(ledger):
            return set()
        records, state.pending = state.pending[:count], state.pending[count:]
        if state.rotations:
            state.rotations = [record for record in state.rotations if record.height >= covered.size]
        if state.proven:
            state.proven = [record for record in state.proven if record.height >= covered.size]
        data, state.data = state.data[:count], state.data[count:]
        leaves, state.leaves = state.leaves[:count], state.leaves[count:]
        sources, state.sources = state.sources[:count], state.sources[count:]
        hops = state.hops
        if not state.pending:
            state.hops = NOT_RELAYED
        if state.subtrees:  # those below the run's end are in its tree now
            after = covered.size // KEPT_LEAVES
            state.subtrees = {index: node for index, node in state.subtrees.items() if index >= after}
        try:
            # The tree just grown (its root is the checkpoint's) goes along: the store does not grow it again.
            future = self.store.submit_records(
                records,
                verified=True,
                given=list(zip(data, leaves, strict=True)),
                grown=GrownTree(frontier, kept),
                receipts=False,  # only duplicates matter here: a run stored whole has none
            )
        except VledgerError as e:  # the store is closed: nothing of it stored
            self._drop_pending(state)
            self._alert(ledger, records[0].height, e, sources[0], data[0])
            return set()
        state.storing.append(
            _Run(
                future,
                records,
                data,
                sources,
                hops,
                [state.waiting.pop(size) for size in sizes],
                frontier,
                covered.size,
                roots,
            )
        )
        for size in sizes:
            state.heard_from.pop(size, None)
        if records[0].height == 0 or any(record.content.kind in KEY_KINDS for record in records):
            self._settle(ledger)  # the key chains and the epochs read it from the store before the next note
        if contradicted:
            self._judge_stored(ledger, contradicted)
        return set()

    def _held_back(self, ledger: str, state: _Ledger, base: int) -> set[str] | None:
        """Whether the pending run waits for a rotation it does not hold yet (None: it does not):
        a quorum of the witnesses' notes (``state.ahead``, :meth:`refresh_witnessed`) are still
        signed by a key the key chain with the pending run does not name, and are not of a tree
        this run has. Meanwhile a checkpoint the old key signs verifies here, also one past the
        rotation (a home put back from a copy older than its ``rotate-key`` signs its fork so)
        and would store the fork: nothing is stored.

        The run's tree is compared with each note it reaches: one of its root there is the
        witnesses' word for this run (review r21 F3: their notes are read unchecked, so a quorum
        of witness keys alone held an honest run back, or had it dropped, by a note of a key
        nobody holds). A run that reaches a quorum of notes whose root it has not is not their
        chain: it is dropped as :meth:`_flush` drops a contradicted one (its sources returned),
        else it would wait for ever on a fork longer than the true chain. A run kept waiting
        past MAX_HELD_RECORDS is passed over rather than kept (:meth:`_pass_over`).

        Once the run holds the rotation, those notes verify: each waits like any checkpoint (its
        home's line alone), to store the run once its tree has their root; the checkpoints waiting
        are checked again along the chain (the retired key's past its rotation is evidence, 13.8)."""
        tree = self._hold_tree(ledger, state, base)
        still = {witness: note for witness, note in state.ahead.items() if self._beyond_keys(ledger, note, base)}
        against = differs = 0
        for note in still.values():
            claimed = _claimed_tree(note)
            if claimed is None or claimed[0] > tree.size:
                against += 1  # not reached yet
            elif state.hold_roots.get(claimed[0]) != claimed[1]:
                against += 1  # a root not noted (a note changed to a size passed) is none of this run's either
                differs += 1
        if against >= state.quorum:
            state.ahead = still
            if differs < state.quorum:
                self._pass_over(state)
                return set()
            dropped = set(state.sources) | state.passed_sources
            self._drop_pending(state, suspect=True)  # told once the true records are stored
            return dropped
        self._release(ledger, state, base, still)
        return None

    def _hold_tree(self, ledger: str, state: _Ledger, base: int) -> Frontier:
        """The tree of the stored records and the held run, grown by the pending records it has
        not taken yet, its root noted at each size of the notes holding the run back that it
        passes: a few hashes a record, once (the run's tree at the notes' sizes, grown afresh at
        each flush, cost a pass over the run each time)."""
        tree = state.hold_tree
        if tree is None:
            if state.storing:
                tree = state.storing[-1].frontier.copy()
            else:
                tree = self.store.frontier(ledger) if base else Frontier()
            state.hold_tree = tree
            state.hold_roots.clear()
        start = tree.size - base - state.passed  # the first pending record it lacks
        if start < len(state.pending):
            sizes = sorted({size for note in state.ahead.values() if (size := _claimed_size(note)) is not None})
            end = base + state.passed + len(state.pending)
            for size in [*(size for size in sizes if tree.size < size <= end), end]:
                tree.grow(state.leaves[tree.size - base - state.passed : size - base - state.passed])
                if size in sizes:
                    state.hold_roots[size] = tree.root()
        return tree

    def _pass_over(self, state: _Ledger) -> None:
        """Keep at most ``max_held`` records of a held run (about 1 KiB each in memory): those past
        it are verified (its chain goes on after them), their tree grown and rotations kept, and
        are forgotten; fetched again once the run is released (review r21 F5: a fresh copy of a
        ledger of a million records rotated near its head held a gigabyte). The records taken
        after them (``pending[max_held:]``) stand at heights ``passed`` above their index."""
        keep = self.max_held
        if len(state.pending) <= keep:
            return
        state.passed_links[state.pending[-1].height] = state.pending[-1].link
        state.passed += len(state.pending) - keep
        state.passed_sources.update(state.sources[keep:])
        del state.pending[keep:], state.data[keep:], state.leaves[keep:], state.sources[keep:]
        state.subtrees.clear()  # the run's tree is grown from its leaves once released

    def _release(self, ledger: str, state: _Ledger, base: int, still: Mapping[str, bytes]) -> None:
        """The hold ends: fewer than a quorum of the notes stand against the run. The notes that
        verify now wait as checkpoints (their home line alone), those waiting are checked again
        along the key chain the run brings. Records passed over are fetched again from the last
        one kept: their rotations stay in the key chain (``state.proven``) if a quorum of the
        notes proved the run (verified, or its root), so a fork of the retired key fetched
        meanwhile is refused as before."""
        proven = {witness: note for witness, note in state.ahead.items() if witness not in still}
        by_proof = len(state.ahead) - len(still) + self._matched(state, still) >= state.quorum
        state.ahead = {}
        if by_proof:
            state.pins.update(state.passed_links)
            if state.pending:
                state.pins[state.pending[-1].height] = state.pending[-1].link
        state.passed_links.clear()
        if state.passed:
            # Those taken after the ones passed over go too: all is fetched again after the kept.
            del state.pending[self.max_held :], state.data[self.max_held :]
            del state.leaves[self.max_held :], state.sources[self.max_held :]
            state.subtrees.clear()
            kept = base + len(state.pending)  # the height after the last record kept
            passed = [record for record in state.rotations if record.height >= kept]
            state.rotations = [record for record in state.rotations if record.height < kept]
            if by_proof:
                state.proven = sorted([*state.proven, *passed], key=lambda record: record.height)
            state.chain = None
            if state.pending:
                last, rules = state.pending[-1], self._chain_rules(ledger, state)
                state.chain = ChainVerifier.after(ledger, last.height, last.link, rules, PROTOCOL_LIMITS)
            state.passed = 0
            state.passed_sources.clear()
        state.hold_tree = None
        state.hold_roots.clear()
        self._hold_ended(ledger)
        for size, waiting in list(state.waiting.items()):
            try:
                self.keys.check(ledger, waiting.note)
                continue
            except RetiredKeyError as e:
                self._retired(ledger, waiting.note, e, state.heard_from.get(size, self.home_of(ledger)))
            except VledgerError:
                pass
            del state.waiting[size]
            state.heard_from.pop(size, None)
        origin = origin_for(self.keys.cluster, ledger)
        for witness, note in proven.items():
            try:
                checkpoint = self.keys.check(ledger, _home_lines(note, origin))
            except VledgerError:
                continue  # the key chain the run brings does not name its key either
            if state.best is None or checkpoint.size > state.best.size:
                state.best = checkpoint
            if checkpoint.size > base and checkpoint.size not in state.waiting:
                state.waiting[checkpoint.size] = checkpoint
                state.heard_from[checkpoint.size] = witness

    def _matched(self, state: _Ledger, notes: Mapping[str, bytes]) -> int:
        """How many of ``notes`` are of a tree the held run has (its root at their size)."""
        return sum(
            1
            for note in notes.values()
            if (claimed := _claimed_tree(note)) is not None and state.hold_roots.get(claimed[0]) == claimed[1]
        )

    def _chain_rules(self, ledger: str, state: _Ledger) -> LedgerRules:
        """The ledger's rules for the pending run: its genesis's when it holds it, else the store's."""
        if state.pending and state.pending[0].height == 0:
            return LedgerRules.from_genesis(state.pending[0].content, PROTOCOL_LIMITS)
        return self.store.rules(ledger)

    def _hold_ended(self, ledger: str) -> None:
        """Close this ledger's held_back alert (raised again if it is held back again)."""
        self._alerted = {key for key in self._alerted if not (key[0] == ledger and key[2] == HeldBackError.code)}
        self._resolve(ledger, BY_HOLD, ANY_HEIGHT)

    def _held_back_alert(self, ledger: str) -> None:
        """Every source was asked and the run is still held back: say so (the notes kept in the
        alert), so that a quorum of witness keys holding a follower back is seen, whoever is
        wrong (review r21 F3). Once a catch-up, at the height the run reached."""
        state = self._state(ledger)
        top = state.top(self._size(ledger))
        largest = max(state.ahead.values(), key=lambda note: _claimed_size(note) or 0)
        claimed = _claimed_tree(largest)
        size, root = claimed if claimed is not None else (0, b"")
        found = state.hold_roots.get(size)
        error = HeldBackError(
            f"{self.name}: {len(state.ahead)} of the other witnesses ({', '.join(sorted(state.ahead))}; a quorum is "
            f"{state.quorum}) cosigned ledger {ledger!r} up to size {size} with a key its key chain does not know, "
            f"and its sources gave it {top + 1} records without the rotation that names that key"
            + ("" if found is None else ", whose tree at that size has another root")
            + ": it stores none of them until it holds that rotation or the witnesses' notes change",
            ledger=ledger,
            height=top,
        )
        self._alert(
            ledger,
            max(top, 0),
            error,
            self.name,
            b"",
            expected=root.hex(),
            found="" if found is None else found.hex(),
            resolved_by=BY_HOLD,
        )

    def _judge_stored(self, ledger: str, contradicted: list[SignedCheckpoint]) -> None:
        """Judge ``contradicted``, checkpoints inside the run just handed over whose root its tree
        has not, against the store once the run is stored (a larger checkpoint vouches for it:
        the home signed two trees, unless this copy cannot prove it). Rare: it waits for the
        commit. If the commit fails they wait again, with the checkpoints of the run."""
        state = self._state(ledger)
        senders = {c.size: state.heard_from.pop(c.size, self.home_of(ledger)) for c in contradicted}
        for checkpoint in contradicted:
            del state.waiting[checkpoint.size]
        if not self._settle(ledger):
            for checkpoint in contradicted:
                state.waiting.setdefault(checkpoint.size, checkpoint)
            return
        for checkpoint in contradicted:
            source = senders[checkpoint.size]
            if self._of_stored_epochs(checkpoint, source):
                self._compare_held(checkpoint, source)

    def _settle(self, ledger: str) -> bool:
        """Wait for the runs being stored, if any, and act on each in order: False if the store
        failed one (reported; the checkpoints of it and of the runs after it wait again, and
        the pending run is dropped).

        Each run was checked by this follower's ChainVerifier from the store's head on, so
        the store checks only that it still stands on its head (ChainStore.submit_records)."""
        state = self._state(ledger)
        while state.storing:
            if not self._settle_oldest(ledger):
                return False
        return True

    def _make_room(self, ledger: str) -> bool:
        """Report the runs whose commit is done, then wait for the oldest ones until fewer than
        ``self._in_flight`` are in flight; False if one failed (see :meth:`_settle`)."""
        state = self._state(ledger)
        while state.storing and (state.storing[0].future.done() or len(state.storing) >= self._in_flight):
            if not self._settle_oldest(ledger):
                return False
        return True

    def _settle_oldest(self, ledger: str) -> bool:
        """Wait for the oldest run being stored and act on it (see :meth:`_settle`)."""
        state = self._state(ledger)
        run = state.storing.popleft()
        try:
            receipts = run.future.result()
        except VledgerError as e:  # verified already: only a store failure gets here
            # The runs after it stood on it: none can extend the store's head now. Once the
            # store is done with them, their checkpoints wait again too, and all is fetched anew.
            later = list(state.storing)
            state.storing.clear()
            futures.wait([after.future for after in later])
            for failed in [run, *later]:
                for checkpoint in failed.covered:
                    state.waiting.setdefault(checkpoint.size, checkpoint)
            at = getattr(e, "height", None)
            index = next((i for i, r in enumerate(run.records) if r.height == at), 0)
            self._drop_pending(state)
            self._alert(ledger, run.records[index].height, e, run.sources[index], run.data[index])
            return False
        # [] for a run stored whole on the head (none a duplicate: submit_records' receipts=False).
        stored = (
            [record for record, receipt in zip(run.records, receipts, strict=True) if not receipt.duplicate]
            if receipts
            else run.records
        )
        if stored:
            self.stored += len(stored)
            self._expose(ledger, stored)
            self.on_stored(stored, run.hops)
            # What was refused at these heights is moot now that the home's records are stored there.
            self._resolve(ledger, BY_RECORD, stored[-1].height)
        self._vouched(run.covered[-1])
        return True

    def _expose(self, ledger: str, stored: list[Record]) -> None:
        """Report the suspects that differ from the true records now stored at their heights."""
        suspects = self._state(ledger).suspects
        if not suspects:  # the usual case: no loop over a catch-up page's records
            return
        for record in stored:
            suspect = suspects.pop(record.height, None)
            if suspect is not None and suspect[0] != record.link:
                _, source, data = suspect
                error = RecordConflictError("a record that is not the one its home placed at this height")
                self._alert(ledger, record.height, error, source, data)

    def _drop_pending(self, state: _Ledger, *, suspect: bool = False) -> None:
        if suspect:
            for record, source, data in zip(state.pending, state.sources, state.data, strict=True):
                if len(state.suspects) < MAX_SUSPECTS:
                    state.suspects[record.height] = (record.link, source, data)
        state.pending, state.data, state.leaves, state.sources = [], [], [], []
        state.rotations = []
        state.hold_tree, state.passed = None, 0
        state.hold_roots.clear()
        state.passed_sources.clear()
        state.passed_links.clear()
        state.subtrees.clear()
        state.chain, state.hops = None, NOT_RELAYED

    # --- helpers ----------------------------------------------------------------------

    def _state(self, ledger: str) -> _Ledger:
        state = self.ledgers.get(ledger)
        if state is None:
            state = self.ledgers[ledger] = _Ledger()
        return state

    def _head(self, ledger: str) -> int:
        return self._size(ledger) - 1

    def _size(self, ledger: str) -> int:
        """The ledger's size once the run being stored is: what the pending run stands on."""
        state = self.ledgers.get(ledger)
        if state is not None and state.storing:
            return state.storing[-1].end
        return self.store.size(ledger)

    def _alert(
        self,
        ledger: str,
        height: int,
        error: VledgerError,
        source: str,
        offered: bytes,
        *,
        expected: str | None = None,
        found: str | None = None,
        resolved_by: str = BY_RECORD,
    ) -> None:
        key = (ledger, height, error.code, source)
        if key in self._alerted:
            return
        if len(self._alerted) >= MAX_REMEMBERED_ALERTS:
            self._alerted.clear()
        self._alerted.add(key)
        open_key = f"{self.name}|{ledger}|{error.code}"
        self._open[open_key] = (max(height, self._open.get(open_key, (-1, ""))[0]), resolved_by)
        log.warning("%s: refused %s height %d from %s: %s: %s", self.name, ledger, height, source, error.code, error)
        detail = str(error)
        if expected is None:
            self._settle(ledger)
            held = self.store.get(ledger, height)
            expected = held.hash.hex() if held is not None else ""
            if held is not None and offered and found is None and held.encode() != offered:
                # Named as the verifier names them: a record changed with its link kept showed
                # the same hash twice (sm31, as outsider o11 found of the verifier's).
                conflict = told_apart(held.encode(), offered)
                expected, found, detail = conflict.expected, conflict.found, conflict.said(detail)
        self.on_alert(
            Alert(
                node=self.name,
                ledger=ledger,
                height=height,
                what=error.code,
                detail=detail,
                source=source,
                expected=expected,
                found=found if found is not None else hash_of(offered) if offered else "",
                operator_only=resolved_by == BY_OPERATOR,
            )
        )

    def _resolve(self, ledger: str, by: str, upto: int) -> None:
        """Close this run's open alerts of ``ledger`` that ``by`` resolves (one of the ``BY_``
        rules above) raised at heights up to ``upto``."""
        prefix = f"{self.name}|{ledger}|"
        keys = [
            key
            for key, (height, resolved_by) in self._open.items()
            if key.startswith(prefix) and height <= upto and resolved_by == by
        ]
        if keys:
            for key in keys:
                del self._open[key]
            log.info("%s: resolved %s", self.name, ", ".join(keys))
            self.on_resolve(keys, upto)

    def _summary(self) -> str:
        return ", ".join(f"{ledger} at {self._head(ledger)}" for ledger in sorted(self.ledgers)) or "no ledgers"


class _CyclicGcPaused:
    """Python's cyclic garbage collector held off while catch-up takes its pages.

    A page makes tens of thousands of objects (rows, records, their maps, receipts) that
    live until the page is stored and are then freed by their reference counts: collections
    triggered every 700 of them traversed them again and again, a fifth of a replica's time
    for a page. Held off for a catch-up's pages together, not page by page: turned on between
    two pages, the collector's first collection walked every object of the pages in flight
    (up to CATCH_UP_IN_FLIGHT of them, each record's Record, Content and receipt), each time:
    some 5 us a record, measured. Cycles that other threads make meanwhile wait GC_PAUSE_SECONDS
    at most: then the two younger generations are collected between two pages. Left as it is
    when something else turned the collector off."""

    def __init__(self) -> None:
        self._paused = False
        self._since = 0.0

    def __enter__(self) -> _CyclicGcPaused:
        if gc.isenabled():
            gc.disable()
            self._paused, self._since = True, time.monotonic()
        return self

    def between_pages(self) -> None:
        """Collect the younger generations if the collector has been off GC_PAUSE_SECONDS."""
        if self._paused and (now := time.monotonic()) - self._since >= GC_PAUSE_SECONDS:
            gc.collect(1)
            self._since = now

    def __exit__(self, *exc: object) -> None:
        if self._paused:
            self._paused = False
            gc.enable()


def _records_on_chain(
    columns: RecordColumns, rows: list[tuple[int, bytes]], begin: int, stop: int, height: int, prev: bytes, ledger: str
) -> list[Record]:
    """The Records of rows ``begin`` to ``stop`` - 1 built from the worker's decoding of these very
    bytes (``columns``, page_check.Checked.fields), up to the first that does not stand on this
    follower's chain: that says another height than ``height`` onwards, or the height it was
    sent as, another ``prev`` than the link of the record before (``prev`` for the first), or
    another ledger; and up to the first ``checkpoint_key`` record (its rotation is checked by
    the follower's own loop).

    The usual page stands whole: that is checked a column at a time (each a comparison in C)
    and its Records built a column at a time (records_of_columns); a page that does not is
    cut where a row-by-row look finds the first row that fails, and built up to there."""
    (ledgers, kinds, _, _, _, _, _, _, _, heights, prevs, _, _, links) = columns  # fmt: skip
    end = stop
    wanted = range(height, height + stop - begin)
    if not (
        list(map(_HEIGHT_OF, rows[begin:stop])) == list(wanted)
        and list(heights[begin:stop]) == list(wanted)
        and (begin == stop or prevs[begin] == prev)
        and list(prevs[begin + 1 : stop]) == list(links[begin : stop - 1])
        and list(ledgers[begin:stop]).count(ledger) == stop - begin
        and ROTATION_KIND not in kinds[begin:stop]
    ):
        end = begin
        for (sent, _), own, kind, r_ledger, r_prev, link in zip(
            rows[begin:stop],
            heights[begin:stop],
            kinds[begin:stop],
            ledgers[begin:stop],
            prevs[begin:stop],
            links[begin:stop],
            strict=True,
        ):
            if sent != height or own != height or r_prev != prev or r_ledger != ledger or kind == ROTATION_KIND:
                break
            end += 1
            height += 1
            prev = link
    return records_of_columns(columns, begin, end)


def _on_chain(chain: ChainVerifier, height: int, data: bytes) -> Record | None:
    """The record of bytes the page checker passed, taken as ``chain``'s next if it says the
    height it was sent as, of ``chain``'s ledger, and stands on the chain's last link; else
    None (nothing changed)."""
    record = record_of_checked(data)
    if (
        record.height != height
        or height != chain.next_height
        or record.prev != chain.prev
        or record.content.ledger != chain.ledger
        or chain.rules is None
    ):
        return None
    chain.advance(record, chain.rules)
    return record


def own_copy_alerts(name: str, alerts: Mapping[str, Mapping[str, object]]) -> dict[str, int]:
    """Of node ``name``'s open alerts (its own hash: key -> the alert's fields), those it raised
    about its own copy of a ledger or about a record or note it refused, by key -> height:
    ``node`` itself and a ledger named, and none an operator resolves (``equivocation``,
    ``retired_key``, ...: :func:`operator_resolves`). ``store_damaged``, of the whole store, is
    resolved by the store's opening (ingest/runtime.py); ``cosigned_not_held``, of the tree its
    witness cosigned, by the witness (Witness.carry_over). A refusal is taken too (o13 F6: a
    replica's ``bad_link`` of a forked record stayed open after its repair and restart): a
    verified checkpoint above its height that has the copy's root shows the copy holds the
    home's records there, as storing them does in the run that refused. A height that is no
    integer leaves the alert the operator's."""
    found = {}
    for key, alert in alerts.items():
        node, _, rest = key.partition("|")
        ledger, _, what = rest.rpartition("|")
        height = alert.get("height")
        if node != name or not ledger or what in ("", STORE_DAMAGED, COSIGNED_NOT_HELD):
            continue
        if alert.get("source") != name and (operator_resolves(name, key, _follows_every_ledger) or what in _RULE_CODES):
            continue
        try:
            found[key] = int(str(height))
        except ValueError:
            continue
    return found


def _codes(error: type[RuleError]) -> frozenset[str]:
    return frozenset((error.code,)).union(*(_codes(sub) for sub in error.__subclasses__()))


# An observer's flag of a record the home placed that breaks a domain rule (verifier/observer.py):
# the record stays in the chain a checkpoint vouches for, so no checkpoint resolves the flag.
_RULE_CODES = _codes(RuleError)


def _follows_every_ledger(node: str, ledger: str) -> bool:
    return True


def _claimed_size(note: bytes) -> int | None:
    """The size a checkpoint note's second line claims (its body: origin, size, root), read
    without parsing or checking the note (2.5 us, parse_note 33 us, measured): only a hint of
    where a run notes its root (see Follower._receive); None if there is no such line."""
    lines = note.split(b"\n", 2)
    size = lines[1] if len(lines) == 3 else b""
    return int(size) if 0 < len(size) <= 20 and size.isdigit() else None


def _home_lines(data: bytes, origin: str) -> bytes:
    """The note ``data`` with only its lines named ``origin`` (the log's): a witness's note
    without the cosignatures, as its home sent it."""
    note = parse_note(data)
    return Note(note.text, tuple(line for line in note.signatures if line.name == origin)).encode()


def _size_of(checkpoint: SignedCheckpoint) -> int:
    return checkpoint.size


def _claimed_tree(note: bytes) -> tuple[int, bytes] | None:
    """The size and root a checkpoint note states, read without checking it; None if unreadable."""
    try:
        checkpoint = parse_checkpoint(parse_note(note).text)
    except NoteError:
        return None
    return checkpoint.size, checkpoint.root


def _claimed_height(note: bytes) -> int:
    """The last height a checkpoint note claims to cover, read without checking it; 0 if unreadable."""
    try:
        return max(0, parse_checkpoint(parse_note(note).text).size - 1)
    except NoteError:
        return 0


def _epoch_of(note: bytes) -> tuple[int, str | None] | None:
    """The epoch checkpoint ``note`` states (PROTOCOL 10.9: (1, None) without an epoch line), None when unreadable."""
    try:
        return epoch_claim(parse_checkpoint(parse_note(note).text))
    except VledgerError:
        return None
