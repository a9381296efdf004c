"""What the verifier checks, over every copy of every ledger (vledger.verifier.process runs it).

Three checks, each catching what the others cannot:

* **New records** (a Redis consumer group on the ledger streams): each record is verified as
  the next of the stream's chain (checksum, proof of work, link), and every node that holds
  that height already must hold the same bytes (one that lacks it below its head holds none:
  the sweep names that hole). Entries are acknowledged once checked; a
  verifier that restarts re-reads its pending entries first, and takes over what a dead one
  left (``XAUTOCLAIM``).
* **Heads**: every copy's head is compared with the home node's record at the same height.
  A link commits to every record below it, so equal hashes mean equal prefixes; a different
  one is a **fork**. A copy the home does not vouch for so (the home is away, or the copy
  differs) is held against the largest checkpoint verified (vledger.verifier.copy_roots): its
  tree at that size must have the checkpoint's root, else it is a **fork** too. The home's
  word is not the last one: before a copy that differs from it is named, the home's own tree
  is held against that checkpoint, and a home that contradicts what its key signed is named
  (``store_contradicts_checkpoint``), the copies then judged by the checkpoint alone. A copy that
  still lacks a height the home reached more than ``lag_alert_ms`` ago, and was first seen
  lacking it that long ago, is **lagging**: a copy that trails a busy home by a second, however
  many records that is, raises nothing, and neither does a copy catching up, or one just cut
  short (its ``truncated`` alert names that).
* **Sweeps** (vledger.verifier.sweep): every copy re-verified from genesis, paced, resumable.
  They catch a record rewritten in a node's own store (only its link betrays it), a deleted
  or swapped record, and a chain cut short (a copy that ends below a height it answered
  holding itself, or, for the home, signed). A held height in Redis is a claim anyone who
  reaches Redis can write: it accuses no node.

Every finding names the first height at which the copy differs from the home (another
holder for the home's own copy): a sweep or a head that goes wrong at h is searched back,
by record hash, to the lowest height that differs. Every finding becomes an alert (Redis
``vledger:{alerts}``, and the open set) once; a clean sweep of a copy resolves that copy's
chain alerts, a copy no longer behind a record older than ``lag_alert_ms`` its lag alert.
Besides, each witness's newest cosignature of each ledger in Redis is dated against Redis's
clock (vledger.verifier.witness_clock): a clock far ahead is named (``witness_clock``).
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis
import zmq

from ..broker.client import Client
from ..broker.redis_keys import group_key, is_ledger_name
from ..broker.replication import (
    ALERTS_DELETED,
    REDIS_ERRORS,
    REDIS_KEY_DAMAGED,
    Alert,
    ReplicationLedger,
    entry_height,
    operator_resolves,
    stream_order,
    wrong_type,
)
from ..config.cluster import FOLLOWER_ROLES, ClusterConfig, ConfiguredFailbacks, NodeConfig, VerifierSettings
from ..config.settings import PROTOCOL_LIMITS
from ..node.conflict import told_apart
from ..node.epoch import EPOCH_KIND
from ..node.errors import NodeUnavailableError, RecordError, RemoteError, SignatureError, VledgerError
from ..node.note import VerifierKey
from ..node.record import decode_record
from ..node.verify import ChainVerifier
from ..node.witness import witness_name
from .copy_roots import CANNOT_ANSWER, LedgerCheckpoint, copy_root, heights_of, proof_hashes, size_of
from .sweep import Checkpoint, LedgerSweep, PagePool
from .witness_clock import WITNESS_CLOCK, WitnessClocks, ahead_detail

# The field of an alert the verifier put back into its own open hash from another raiser's:
# that raiser's name (PROTOCOL 10.5).
REOPENED = "reopened_from"
# The most alerts of other raisers this verifier puts back one by one into its own open hash
# (_reopen_vanished). Any node's Redis user may open and delete operator-only alerts in its own
# hash as often as it likes: put back without a bound they took the verifier's hash past
# OPEN_ALERTS_CAP, and every reader then read none of its alerts, its own findings among them
# (review r25 F2). Past it, one ``alerts_deleted`` alert per raiser counts the rest (their stream
# keeps each); far below OPEN_ALERTS_CAP, which the verifier's own findings have besides.
PUT_BACK_CAP = 1_000
# What of another raiser's alert a put-back keeps: an alert's fields (PROTOCOL 10.5), each cut
# past its length here. Its raiser writes its JSON as it likes: copied verbatim, 1,000 put-backs
# of 40 KB details were 40 MB of the verifier's own hash, which every reader read whole (review r26).
# Cut so, PUT_BACK_CAP of them stay under 3 MB, within what a reader reads (OPEN_ALERTS_BYTES).
PUT_BACK_FIELDS = ("id", "node", "ledger", "height", "what", "detail", "source", "expected", "found", "at_ms")
PUT_BACK_CHARS = 200  # a name, height, id or hash: an honest one is far shorter
PUT_BACK_DETAIL_CHARS = 1_000  # the sentence
# The longest key of another raiser's alert put back one by one (a node's and a ledger's name and
# a kind); a longer one, which no node raises, is only counted (``alerts_deleted``).
PUT_BACK_KEY_CHARS = 256

log = logging.getLogger(__name__)

GROUP = "verifier"
READ_COUNT = 500
CHAIN_FAULTS = (
    "bad_encoding",
    "non_canonical",
    "bad_field",
    "too_large",
    "unknown_kind",
    "bad_checksum",
    "insufficient_work",
    "bad_link",
    "height_gap",
    "wrong_ledger",
    "bad_genesis",
    "truncated",
)
ASK_NODES_SECONDS = 10.0  # how often a ledger's nodes are asked for a checkpoint Redis cannot give
# How often the notes in Redis are read for a handover of a ledger that may hand over while Redis
# names no later epoch (its ``epochs`` entry deleted, or never written): a witness's note proves it.
LOOK_FOR_EPOCH_SECONDS = 5.0
# How often the nodes' own ledger lists (``ledger.list``) and the stream keys that exist are read
# for ledgers Redis's ``{ledgers}`` hash does not list (any ingest node's Redis user may HDEL one).
LIST_LEDGERS_SECONDS = 30.0
# How often the stream keys that exist are looked for (SCAN): a walk of the whole keyspace, and
# only a backstop for a ledger whose home is away (its home's ``ledger.list`` finds the others),
# so at start and then seldom. Redis keeps no index of keys by pattern that is cheaper to read.
SCAN_STREAMS_SECONDS = 300.0
SCAN_COUNT = 1000  # keys per SCAN step: fewer round trips for the same walk
# How many ledgers the verifier checks that Redis's ``{ledgers}`` hash does not list (PROTOCOL
# 10.6): a home, or any ingest node's Redis user (every stream key is its to write), may name
# any number, each checked on every copy every heads round. Past it one is left out and logged.
MAX_UNLISTED_LEDGERS = 64
# How long a ledger found elsewhere may go unlisted before ``unlisted_ledger`` is raised: a new
# ledger is held by its home a moment before its first stream append lists it.
UNLISTED_GRACE_SECONDS = 10.0
# How often the observers' tallies are compared (verifier/tally_watch.py): an observer signs at most
# once per tally_interval_ms (1 s), and a forged tally stays until someone sees it.
TALLY_LOOK_SECONDS = 5.0
# How often the witnesses' notes in Redis are read for a clock run ahead (witness_clock): a
# witness's host's clock does not jump often, and its lines stay there until it cosigns again.
WITNESS_CLOCK_SECONDS = 5.0
UNLISTED = "unlisted_ledger"
HOLDER_ROLES = ("replica", "observer")  # roles that hold every ledger; an ingest node holds its own

# A node's answers to a read of a ledger it does not hold (docs/PROTOCOL.md 6.1).
NOT_HELD = frozenset(("not_home", "no_such_ledger"))
# A home's alerts that its replacement (10.9) explains: a copy no longer the ledger's is not
# behind it, nor a fork of it, and its silence stops no write of it (home_unreachable). Its
# chain faults (a record rewritten in its store) stay open.
REPLACED_RESOLVES = ("lagging", "fork", "home_unreachable")


class Stopped(Exception):
    """The verifier is stopping (SIGTERM, SIGINT): the slice of checks in hand is dropped where it
    stands, before its next read of a node or step. Not an error, and no VledgerError, so that no
    handler of a node's failure takes it for one (marking every node down, raising lag alerts on
    the way out). What the slice read and did not acknowledge is read again at the next start."""


class NodeReader:
    """One node's read commands, for the verifier; a node that does not answer is left alone a while.

    Once ``stopping`` is set every read raises :class:`Stopped` instead of asking the node: a
    slice of checks reads every copy of every ledger, and with nodes that do not answer (stopped
    with the verifier, or cut off) each read waited ``node_timeout_ms``, one after another, far
    past a supervisor's stop time (seen: 20 s, then SIGKILL). The read in flight then raises it
    too once the client's Context is ended (ETERM: vledger.verifier.process ends the readers'
    at a stop), instead of waiting out its timeout."""

    def __init__(
        self,
        node: NodeConfig,
        client: Client,
        page_size: int,
        clock: Callable[[], float],
        stopping: threading.Event | None = None,
    ) -> None:
        self.node = node
        self.client = client
        self.page_size = page_size
        self._clock = clock
        self._stopping = stopping or threading.Event()
        self.down_until = 0.0

    @property
    def name(self) -> str:
        return self.node.name

    def up(self) -> bool:
        return self._clock() >= self.down_until

    def down(self, seconds: float, error: Exception) -> None:
        if self.up():
            log.info("node %s unavailable (%s): skipped for %.0f s", self.name, error, seconds)
        self.down_until = self._clock() + seconds

    def page(self, ledger: str, start: int, limit: int) -> list[bytes]:
        """Up to ``limit`` records (at most a page) from ``start``; fewer only where the copy ends.

        A node cuts its answer at ``max_message_bytes`` and says where it stopped (``next``,
        PROTOCOL 6.1): a page of large records comes in several answers. Read as the copy's end,
        an answer cut short made every sweep of such a ledger stop early and raise ``truncated``
        against copies that held everything, while the records past the cut were never swept."""
        # Past a hole the page goes on to the records above it (an answer of none whose ``next``
        # says go on was taken for the copy's end: ``truncated`` where the sweep names the hole,
        # ``height_gap``, review r14 small28).
        return self._read(ledger, start, min(limit, self.page_size), None)

    def span(self, ledger: str, start: int, count: int) -> list[bytes]:
        """The records the copy holds at heights ``start .. start + count - 1``, over as many
        answers as it takes (each names its height: a copy lacking some gives the others)."""
        return self._read(ledger, start, count, start + count)

    def _read(self, ledger: str, start: int, wanted: int, end: int | None) -> list[bytes]:
        """Up to ``wanted`` records from ``start`` on, below height ``end`` (None: any), each
        answer asked from the ``next`` of the one before: past a hole in the copy that is more
        than the count given (asking from there re-read records, review r14 small28)."""
        held: list[bytes] = []
        at = start
        while len(held) < wanted and (end is None or at < end):
            ask = min(wanted - len(held), self.page_size, wanted if end is None else end - at)
            records, following = self._range(ledger, at, ask)
            held.extend(records)
            if following is None or following <= at:
                break  # the copy's end (or an answer that says nothing follows)
            at = following
        return held[:wanted]

    def _call(self, cmd: str, args: dict[str, Any]) -> Any:
        """The node's reply to ``cmd`` (Client.call); raises Stopped once the verifier is stopping."""
        if self._stopping.is_set():
            raise Stopped(f"not asking {self.name} for {cmd}: the verifier is stopping")
        try:
            return self.client.call(cmd, args)
        except zmq.ZMQError as e:  # ETERM: the Context was ended by the stop, the wait with it
            if not self._stopping.is_set():
                raise
            raise Stopped(f"{cmd} of {self.name} dropped: the verifier is stopping") from e

    def _range(self, ledger: str, start: int, limit: int) -> tuple[list[bytes], int | None]:
        """One ``range`` answer: its records, and the height the node said follows them (None: its end)."""
        try:
            reply = self._call("range", {"ledger": ledger, "start": start, "limit": limit})
        except RemoteError as e:
            if e.code in NOT_HELD:
                return [], None  # a copy that holds none of the ledger: its sweep ends here
            raise
        records = reply.get("records") if isinstance(reply, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, bytes) for r in records):
            raise NodeUnavailableError(f"{self.name}: range answered something else than records")
        following = reply.get("next")
        return records, following if type(following) is int else None

    def serves(self, ledger: str) -> bool:
        """Whether the node answers reads of ``ledger``: not while it answers them ``not_home`` (a
        home a newer epoch replaced, PROTOCOL 10.9), which the reads above take for holding none.
        Raises NodeUnavailableError, or the RemoteError of another refusal."""
        try:
            self._call("head", {"ledger": ledger})
        except RemoteError as e:
            if e.code == "not_home":
                return False
            if e.code not in NOT_HELD and e.code != "not_found":
                raise
        return True

    def ledgers(self) -> list[str]:
        """The names of the ledgers the node's store holds, as its ``ledger.list`` says (PROTOCOL 6.1)."""
        reply = self._call("ledger.list", {})
        entries = reply.get("ledgers") if isinstance(reply, dict) else None
        if not isinstance(entries, list):
            raise NodeUnavailableError(f"{self.name}: ledger.list answered something else")
        return [e["ledger"] for e in entries if isinstance(e, dict) and isinstance(e.get("ledger"), str)]

    def head(self, ledger: str) -> tuple[int, bytes] | None:
        """The node's head of ``ledger`` (height, hash), None if it holds none."""
        try:
            reply = self._call("head", {"ledger": ledger})
        except RemoteError as e:
            if e.code == "not_found" or e.code in NOT_HELD:
                return None
            raise
        height, digest = reply.get("height"), reply.get("hash")
        if type(height) is not int or not isinstance(digest, bytes):
            raise NodeUnavailableError(f"{self.name}: head answered something else")
        return height, digest

    def record(self, ledger: str, height: int) -> bytes | None:
        """The node's record bytes at ``height``, None if it holds none there."""
        try:
            data = self._call("get", {"ledger": ledger, "height": height}).get("record")
        except RemoteError as e:
            if e.code == "not_found" or e.code in NOT_HELD:
                return None
            raise
        if not isinstance(data, bytes):
            raise NodeUnavailableError(f"{self.name}: get answered something else")
        return data

    def hash_at(self, ledger: str, height: int) -> bytes | None:
        data = self.record(ledger, height)
        return None if data is None else decode_record(data, PROTOCOL_LIMITS).hash

    def _answer(self, cmd: str, args: dict[str, Any]) -> Any:
        """The node's reply to ``cmd``, None when it answers that its copy cannot serve it
        (CANNOT_ANSWER: it lacks the height, the tree size or the ledger). Raises RemoteError
        for any other refusal, NodeUnavailableError when it does not answer."""
        try:
            return self._call(cmd, args)
        except RemoteError as e:
            if e.code in CANNOT_ANSWER:
                return None
            raise

    def inclusion(self, ledger: str, index: int, size: int) -> list[bytes] | None:
        """The inclusion proof of leaf ``index`` in the node's tree of ``size`` leaves (PROTOCOL
        12.3), None when the node cannot give one (it lacks that size)."""
        reply = self._answer("proof.inclusion", {"ledger": ledger, "index": index, "size": size})
        if reply is None:
            return None
        proof = proof_hashes(reply)
        if proof is None:
            raise NodeUnavailableError(f"{self.name}: proof.inclusion answered something else")
        return proof

    def checkpoint(self, ledger: str) -> tuple[bytes, list[int]] | None:
        """The node's latest checkpoint note of ``ledger`` and the rotation heights below its
        size (PROTOCOL 6.1), None when it holds none."""
        reply = self._answer("checkpoint", {"ledger": ledger})
        if reply is None:
            return None
        note = reply.get("checkpoint") if isinstance(reply, dict) else None
        heights = heights_of(reply.get("rotations", []) if isinstance(reply, dict) else None)
        if not isinstance(note, bytes) or heights is None:
            raise NodeUnavailableError(f"{self.name}: checkpoint answered something else")
        return note, heights


@dataclass(frozen=True, slots=True)
class HeldBefore:
    """How far a copy held a ledger before a sweep's last page was read (-1: nothing says)."""

    said: int  # the node's own answers (CopyState.said)
    signed: int  # for the home: the largest checkpoint of its that the verifier verified, minus one
    claimed: int  # its height in Redis: a claim anyone who reaches Redis can write


@dataclass(slots=True)
class CopyState:
    """What the verifier remembers about one node's copy of one ledger."""

    sweep: LedgerSweep
    next_sweep_at: float = 0.0
    # The highest height the node itself answered holding in this run (its ``head``, a sweep's
    # end; -1: none yet). Unlike its height in Redis, which anyone who reaches Redis can write,
    # this is the node's own word over its CURVE key: the evidence a copy was cut short.
    said: int = -1
    # When the copy was first seen lacking a record the home held (None: not behind when last
    # judged), and the height it was judged at: a copy found lower than that lacks a record it
    # held, behind since then. Its lag counts from here, never from the age of the record it
    # lacks (o23: a copy cut 0.4 s before was "lagging" at once, "held for 128 s").
    behind_since: float | None = None
    judged: int = -1

    def answered(self, height: int) -> None:
        self.said = max(self.said, height)

    def behind(self, height: int, home_head: int, now: float) -> float | None:
        """When this copy, at ``height`` now, was first seen behind a home at ``home_head``
        (None: it is not behind)."""
        if height >= home_head:
            self.behind_since = None
        elif self.behind_since is None or height < self.judged:
            self.behind_since = now
        self.judged = height
        return self.behind_since


@dataclass(slots=True)
class LedgerState:
    home: str
    chain: ChainVerifier | None = None  # the stream's records, verified in order
    copies: dict[str, CopyState] = field(default_factory=dict)
    # (height, when the home was first seen holding it), heights rising: the lag clock. Only
    # the newest entry older than lag_alert_ms is kept below the window, so it stays small.
    reached: collections.deque[tuple[int, float]] = field(default_factory=collections.deque)
    checkpoint: LedgerCheckpoint | None = None  # the largest checkpoint verified, and its key chain
    # copy -> (checkpoint size, its head height, head hash) when its tree at that size was the
    # checkpoint's root: asked again only once one of them moves.
    roots: dict[str, tuple[int, int, bytes]] = field(default_factory=dict)
    ask_nodes_at: float = 0.0  # when the nodes may next be asked for a checkpoint
    look_for_epoch_at: float = 0.0  # when the notes may next be read for a handover Redis names not
    # Whether the home's own tree contradicts the largest verified checkpoint (its key signed it,
    # so its copy is no reference then), and the (checkpoint size, home head) it was decided at.
    home_contradicts: bool = False
    home_checked: tuple[int, int, bytes] | None = None
    # The newest epoch proven (10.9; (1, None): none past the genesis home's): only its
    # checkpoints are taken, and its home is the ledger's. Redis's epochs hash proves nothing.
    epoch: tuple[int, str | None] = (1, None)
    # Whether the verifier's consumer group is on the ledger's stream. A ledger only found besides
    # Redis's {ledgers} hash gets none before its stream exists: the verifier creates no key for a
    # name a node or a stream key gave it (it would find that key again after every restart).
    grouped: bool = True
    # Since when the home has answered none of this verifier's reads (None: it answered the
    # last): past lag_alert_ms it is home_unreachable (o24 F3: its Redis heartbeats go on).
    home_silent_since: float | None = None

    def judge_anew(self) -> None:
        """Forget what was decided against the checkpoint or home held: either changed."""
        self.roots.clear()
        self.home_contradicts, self.home_checked = False, None

    def home_reached(self, height: int, now: float, window: float) -> None:
        if not self.reached or height > self.reached[-1][0]:
            self.reached.append((height, now))
        while len(self.reached) > 1 and self.reached[1][1] <= now - window:
            self.reached.popleft()

    def due(self, now: float, window: float) -> tuple[int, float]:
        """The highest height the home reached at least ``window`` seconds ago (-1: none), and
        when the home first reached a height above ``due``'s copy (for the alert's text)."""
        if self.reached and self.reached[0][1] <= now - window:
            return self.reached[0]
        return -1, now

    def since(self, height: int, now: float) -> float:
        """When the home was first seen holding a height above ``height`` (a lower bound)."""
        return next((when for reached, when in self.reached if reached > height), now)


class ClusterChecks:
    """The three checks over every copy; :meth:`tick` runs a slice of each. One thread.

    Once ``stopping`` is set (give the readers the same Event) a slice raises :class:`Stopped`
    before its next step: each read of a node, each ledger and each copy it goes on to. What is
    in flight ends first: a Redis call, or a read whose Context was not ended (NodeReader)."""

    def __init__(
        self,
        name: str,
        config: ClusterConfig,
        replication: ReplicationLedger,
        readers: dict[str, NodeReader],
        *,
        settings: VerifierSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        pool: PagePool | None = None,
        home_keys: Callable[[str], VerifierKey | None] = lambda ledger: None,
        witness_keys: Callable[[], Iterable[VerifierKey]] = tuple,
        tallies: Callable[[str, int | None], list[Alert]] = lambda ledger, size: [],
        tally_cleared: Callable[[str, Mapping[str, Mapping[str, Any]]], list[str]] = lambda ledger, raised: [],
        stopping: threading.Event | None = None,
    ) -> None:
        self.name = name
        # The observers of a ledger, given this verifier's open bad_signature alerts of it by
        # observer, whose entries raised then verify with the keys proven now (TallyWatch.cleared).
        self._tally_cleared = tally_cleared
        # The observers' disagreement on a ledger, given its largest verified checkpoint's size, as a
        # tally_mismatch or tally_uncompared alert, and their entries whose signature fails as
        # bad_signature (verifier/tally_watch.py).
        self._tallies = tallies
        self._next_tallies = 0.0
        self._next_clocks = 0.0
        self._clocks = WitnessClocks()
        self._stopping = stopping or threading.Event()
        # The configured checkpoint key of a ledger's home (its <home>.sign.pub), for a ledger
        # whose genesis pins none (PROTOCOL 10.7's version rule).
        self._fallback_key = home_keys
        # The cluster's witness keys now: a note the standby's key signed counts only cosigned (10.9).
        self._witness_keys = witness_keys
        self.pool = pool  # worker processes that check the sweeps' pages (None: this process alone)
        self.config = config
        self._failbacks = ConfiguredFailbacks(config)
        self.replication = replication
        self.readers = readers
        self.settings = settings or config.verifier
        self._clock = clock
        self.ledgers: dict[str, LedgerState] = {}
        # This verifier's own open alerts, key -> height: each is raised once until resolved. Only
        # its own: another raiser writes its hash's JSON, height included, as it likes.
        self.open: dict[str, int] = {}
        self._open_fields: dict[str, Any] = {}  # their fields as Redis held them at the last refresh_open
        self._mine: set[str] = set()  # the open keys this verifier raised in this run
        # The open alerts only an operator resolves, by raiser and key, as last seen in the open
        # hashes: one that vanishes without the operator's note is put back (see _reopen_vanished).
        self._operator_open: dict[tuple[str | None, str], dict[str, Any]] = {}
        # The replicas and observers: each resolves its own store_contradicts_checkpoint (operator_resolves),
        # as a ledger's standby does of its copy of that ledger (_follows).
        self._followers = frozenset(name for name, node in config.nodes.items() if node.role in FOLLOWER_ROLES)
        self._read_pending = True  # after a start: our own pending entries come first
        self._next_heads = 0.0
        self._next_claim = 0.0
        self._sweep_from = 0  # the copy the next sweep() starts at: where the last one's budget ran out
        self.checked = 0  # stream entries checked
        self.swept = 0  # records re-verified by sweeps
        self.alerts = 0
        # Looks at the observers' tallies done: when a look read the observers' keys can be told from outside.
        self.tally_looks = 0
        self._claims_logged: set[tuple[str, str, int]] = set()  # Redis heights a node denied, logged once
        self._homes_logged: set[tuple[str, str, str]] = set()  # Redis's unproven homes and epochs, logged once
        self._notes: dict[str, bytes] | None = None  # the checkpoint notes of this heads round
        # Ledgers found besides Redis's {ledgers} hash: name -> the home or standby whose ledger.list
        # names it, as of the last look (LIST_LEDGERS_SECONDS); those of a stream key (SCAN_STREAMS_
        # SECONDS); and when each found one was first seen missing from that hash (UNLISTED_GRACE_SECONDS).
        self._found: dict[str, str] = {}
        self._find_at = 0.0
        self._streams: set[str] = set()  # the ledgers whose stream key the last SCAN found
        self._scan_at = 0.0
        self._unlisted_since: dict[str, float] = {}
        # What each shared hash read last held, kept while it is of another type (_shared_read).
        self._last_read: dict[str, Any] = {}
        self._left_out: frozenset[str] = frozenset()  # found past MAX_UNLISTED_LEDGERS, as last logged
        # Names only Redis's {ledgers} hash gives (no node, stream or cluster file says so), checked
        # up to MAX_UNLISTED_LEDGERS; those left out (past it, or no ledger's name) as last logged.
        self._uncorroborated: set[str] = set()
        self._hash_left_out: frozenset[str] = frozenset()

    # --- set-up -----------------------------------------------------------------------

    @property
    def checkpoints_key(self) -> str:
        return group_key(self.replication.namespace, "sweep", self.name)

    def start(self) -> None:
        self.refresh_open()
        self.refresh_ledgers()

    def refresh_open(self) -> None:
        """This verifier's open alerts as Redis has them: an operator resolves some, and a finding
        whose alert was resolved elsewhere must be raised again. Another raiser's alert of the
        same key holds back none of its findings (PROTOCOL 10.5): its height is what that
        raiser wrote."""
        by_raiser = self.replication.open_by_raiser()
        own = self._reopen_vanished(by_raiser)
        # One put back from another raiser's hash holds that raiser's height: not the verifier's own.
        self.open = {key: _int(alert.get("height")) for key, alert in own.items() if REOPENED not in alert}
        self._open_fields = {key: alert for key, alert in own.items() if key in self.open}
        self._mine &= self.open.keys()

    def _reopen_vanished(self, by_raiser: list[tuple[str | None, dict[str, dict[str, Any]]]]) -> dict[str, Any]:
        """Put back into the open hash each alert only an operator resolves that was open in a
        raiser's hash at the last look and is gone now, unless the operator noted its resolution
        of that raiser's alert (``vledger alerts resolve``, PROTOCOL 10.5): every node's Redis user
        may delete a field of its open hash, and no user but the admin's may hide an
        equivocation or a store that contradicts its checkpoints. What was raised and deleted
        between two looks, or while this verifier was down, is not seen here. One put back from
        another raiser's hash names it (``reopened_from``). The kind is the key's (``what`` in
        the JSON is the raiser's to write, any JSON value). Returns this verifier's own open
        alerts, those put back included."""
        found = {(raiser, key): alert for raiser, alerts in by_raiser for key, alert in alerts.items()}
        own = {key: alert for (raiser, key), alert in found.items() if raiser == self.replication.node}
        vanished = [name for name in self._operator_open if name not in found]
        resolved = self.replication.operator_resolved(vanished) if vanished else {}
        room = PUT_BACK_CAP - sum(1 for alert in own.values() if REOPENED in alert)
        uncounted: dict[str, int] = {}
        for name in vanished:
            alert = self._operator_open.pop(name)
            done = resolved.get(name)
            if done is not None and stream_order(done) >= stream_order(alert.get("id")):
                continue  # the operator resolved it (or a later one of that raiser under its key)
            raiser, key = name
            if raiser != self.replication.node:
                if (room <= 0 or len(key) > PUT_BACK_KEY_CHARS) and key not in own:
                    uncounted[raiser or ""] = uncounted.get(raiser or "", 0) + 1
                    continue
                room -= key not in own
                alert = {**_put_back_fields(alert), REOPENED: raiser or ""}
            log.warning("open alert %s of %s was deleted without an operator's resolution: opened again", key, raiser)
            self.replication.reopen(key, alert)
            found[(self.replication.node, key)] = own[key] = alert
        for raiser, count in sorted(uncounted.items()):
            stand_in = self._alerts_deleted(raiser, count, own)
            own[stand_in.key] = stand_in.fields()
        for name, alert in found.items():
            if operator_resolves(*name, self._follows):
                self._operator_open[name] = alert
        return own

    def _alerts_deleted(self, raiser: str, count: int, own: dict[str, Any]) -> Alert:
        """The one alert that counts ``raiser``'s operator-only alerts deleted without an operator's
        resolution past PUT_BACK_CAP (added to those it counted before, while it is open)."""
        name = raiser or "redis"
        key = f"{name}||{ALERTS_DELETED}"
        before = own.get(key)
        total = count + (_int(before.get("height")) if before is not None else 0)
        log.warning("%d more alerts only an operator resolves were deleted from %s's open hash: counted", count, name)
        alert = Alert(
            name, "", total, ALERTS_DELETED,
            f"{total} alerts only an operator resolves were deleted from {name}'s open alerts without an "
            f"operator's resolution, past the {PUT_BACK_CAP} this verifier puts back one by one: {name}'s "
            "alert stream keeps each (vledger alerts)",
        )  # fmt: skip
        self.replication.alert(alert)
        return alert

    def _follows(self, node: str, ledger: str) -> bool:
        """Whether ``node`` follows ``ledger`` into a copy of its own, whose faults it resolves
        itself (PROTOCOL 10.5): a replica or observer, or the ledger's standby while another node
        is its home (its StandbyFollow is a Follower; once promoted, its own
        store_contradicts_checkpoint is a home's, the operator's)."""
        if node in self._followers:
            return True
        standby = self.config.standby_of(ledger)
        if standby is None or standby.name != node:
            return False
        state = self.ledgers.get(ledger)
        return (state.home if state is not None else self.config.home_of(ledger).name) != node

    def refresh_ledgers(self) -> None:
        """Pick up ledgers announced since, with a consumer group and saved sweep checkpoints,
        and the handovers (PROTOCOL 10.9) proven since: the new home's copy is the truth, and a
        home replaced is no holder any more (it answers the ledger's reads not_home; its records
        past the handover are not the ledger's), so its copy is dropped and its lag and fork
        alerts are resolved. Which node is home is never Redis's word: the ``ledgers`` and
        ``epochs`` hashes are every ingest node's Redis user's to write, so a ledger's home is
        the cluster file's until a signed note proves a later epoch (:meth:`_epoch_of`); a home
        or epoch only Redis names is logged as a claim, unproven, and changes nothing."""
        epochs = self._shared_read(self.replication.epochs_key, self.replication.epochs)
        saved = {_text(k): _text(v) for k, v in self._saved_checkpoints().items()}
        found = self._discovered(saved)
        announced = self._hash_listed(
            dict(self._shared_read(self.replication.ledgers_key, self.replication.ledgers)), found
        )
        self._unlisted(announced, found)
        for ledger, claimed in sorted(announced.items()):
            self._go_on()
            # A stream is made (MKSTREAM) only for a name more than Redis's hash gives: the group on
            # any other's waits for its stream (a home's first append), so junk HSET makes no key.
            mkstream = claimed is not None and ledger not in self._uncorroborated
            state = self.ledgers.get(ledger)
            if state is None:
                state = self.ledgers[ledger] = LedgerState(self.config.home_of(ledger).name)
                state.grouped = self._create_group(ledger, mkstream=mkstream)
                for node in self.holders(ledger):
                    checkpoint = _checkpoint(saved.get(f"{node}|{ledger}"))
                    state.copies[node] = CopyState(LedgerSweep(node, ledger, checkpoint, self.pool))
                self._read_pending = True
            elif not state.grouped and self._create_group(ledger, mkstream=mkstream):
                state.grouped = self._read_pending = True  # its stream exists now
            state.epoch = self._epoch_of(ledger, state, epochs.get(ledger))
            home = self._signer_of(ledger, state.epoch)
            if claimed is not None and claimed != home:
                self._unproven(ledger, f"names {claimed} its home", f"checking {home}'s copy as the home's")
            if state.home != home:  # its standby was promoted (PROTOCOL 10.9): the new home's is the truth
                state.home = home
                state.home_contradicts, state.home_checked = False, None  # decided of the home before
                state.home_silent_since = None
                if home not in state.copies:
                    state.copies[home] = CopyState(
                        LedgerSweep(home, ledger, _checkpoint(saved.get(f"{home}|{ledger}")), self.pool)
                    )
            if state.checkpoint is not None and state.checkpoint.enter(state.epoch):
                state.judge_anew()  # the previous epoch's checkpoint was dropped
            for node in self.replaced(ledger, home, state.epoch):
                if state.copies.pop(node, None) is not None:
                    state.roots.pop(node, None)
                    log.info("%s was replaced as the home of %s: its copy is no longer checked", node, ledger)
                self.resolve(node, ledger, REPLACED_RESOLVES)

    def _discovered(self, saved: dict[str, str]) -> dict[str, str]:
        """Every ledger known besides Redis's ``{ledgers}`` hash, and where it was found: the ones
        this verifier checked (in this run, or whose sweeps it saved); at most every
        LIST_LEDGERS_SECONDS, those a node's ``ledger.list`` names (over its CURVE key) where that
        node is the ledger's configured home or standby (the only nodes an epoch makes its home,
        10.9: any other's word would let one broken-into replica name ledgers without end); and,
        at start and every SCAN_STREAMS_SECONDS, those whose stream key exists. That hash is every
        ingest node's Redis user's to write: a ledger deleted from it must not go unchecked by a
        verifier started after."""
        found = {ledger: "verifier" for ledger in self.ledgers if ledger not in self._uncorroborated}
        for field_ in saved:
            node, _, ledger = field_.partition("|")
            if node and is_ledger_name(ledger):
                found.setdefault(ledger, "verifier")
        now = self._clock()
        if now >= self._find_at:
            self._find_at = now + LIST_LEDGERS_SECONDS
            self._found = self._listed_by_homes()
        if now >= self._scan_at:
            self._scan_at = now + SCAN_STREAMS_SECONDS
            self._streams = self._stream_keys()
        # A ledger whose consumer group exists has its stream: the group of a name only Redis's hash
        # gives is made on an existing stream alone. Found so as the SCAN finds it, without waiting
        # for the next one: a new ledger, named by the hash alone until its home's next ledger.list,
        # deleted from the hash meanwhile was forgotten, and found again only up to
        # LIST_LEDGERS_SECONDS later (its unlisted_ledger that much later; ap30).
        grouped = {ledger for ledger, state in self.ledgers.items() if state.grouped}
        streams = {ledger: "stream" for ledger in sorted(self._streams | grouped)}
        return {**found, **streams, **self._found}  # where a node or a stream says so, when they do

    def _hash_listed(self, listed: dict[str, str | None], found: dict[str, str]) -> dict[str, str | None]:
        """The ledgers of Redis's ``{ledgers}`` hash (``listed``: name -> home) that are checked.
        Every ingest node's Redis user may HSET any name there, so a name that is no ledger's
        (PROTOCOL 10.10) is left out, and of the others, those nothing else names (not the
        cluster file, not ``found``: a stream key, a home's ``ledger.list``, the verifier's own
        sweeps) are checked up to MAX_UNLISTED_LEDGERS: those checked already first (never
        dropped while listed), then by name. A home's new ledger is among them until its home
        lists it (LIST_LEDGERS_SECONDS). One no longer listed is no longer checked. Those left
        out are logged when they change, not every round."""
        for ledger in sorted(self._uncorroborated):
            if ledger not in listed or ledger in found or ledger in self.config.homes:
                self._uncorroborated.discard(ledger)
                if ledger not in listed and ledger not in found:
                    self.ledgers.pop(ledger, None)  # no longer named by anything: forgotten
        named = {ledger: home for ledger, home in listed.items() if is_ledger_name(ledger)}
        alone = sorted(
            (ledger for ledger in named if ledger not in found and ledger not in self.config.homes),
            key=lambda ledger: (ledger not in self._uncorroborated, ledger),
        )
        self._uncorroborated.update(alone[:MAX_UNLISTED_LEDGERS])
        past = set(alone[MAX_UNLISTED_LEDGERS:])
        checked = {ledger: home for ledger, home in named.items() if ledger not in past}
        left_out = frozenset(listed).difference(checked)
        if left_out and left_out != self._hash_left_out:
            shown = ", ".join(repr(ledger) for ledger in sorted(left_out)[:20]) + (" ..." if len(left_out) > 20 else "")
            log.warning(
                "Redis's ledgers hash lists %d names no node, stream or cluster file gives: %d not checked (no "
                "ledger's name, or past the %d checked so: MAX_UNLISTED_LEDGERS), no stream made for them: %s",
                len(listed) - len(named) + len(alone), len(left_out), MAX_UNLISTED_LEDGERS, shown,
            )  # fmt: skip
        self._hash_left_out = left_out
        return checked

    def _listed_by_homes(self) -> dict[str, str]:
        """Ledger -> the first node (by name) whose ``ledger.list`` names it and that is its
        configured home or standby. Only such nodes are asked: a replica's or an observer's list,
        every ledger's head and checkpoint, would be computed for nothing."""
        homes = {self.config.default_home, *self.config.homes.values(), *self.config.standbys.values()}
        looked: dict[str, str] = {}
        for name, reader in sorted(self.readers.items()):
            if name not in homes or not reader.up():
                continue
            try:
                listed = reader.ledgers()
            except NodeUnavailableError as e:
                reader.down(self.settings.node_timeout_ms / 1000, e)
                continue
            except RemoteError as e:
                log.info("cannot list the ledgers %s holds: %s", name, e)
                continue
            for ledger in listed:
                if is_ledger_name(ledger) and name in self._homes_of(ledger):
                    looked.setdefault(ledger, name)
        return looked

    def _homes_of(self, ledger: str) -> tuple[str, ...]:
        """The nodes an epoch of ``ledger`` can make its home (10.9): its configured home and standby."""
        standby = self.config.standby_of(ledger)
        return (self.config.home_of(ledger).name,) + (() if standby is None else (standby.name,))

    def _stream_keys(self) -> set[str]:
        """The ledgers whose stream key ``vledger:{<ledger>}:chain`` exists (SCAN)."""
        try:
            return self.replication.stream_ledgers(SCAN_COUNT)
        except REDIS_ERRORS as e:  # e.g. a Redis user made before the verifier could SCAN
            log.info("cannot look for the ledgers' streams: %s", e)
            self._scan_at = self._clock() + LIST_LEDGERS_SECONDS  # tried again sooner
        return set()

    def _unlisted(self, announced: dict[str, str | None], found: dict[str, str]) -> None:
        """Add each ledger found elsewhere to ``announced`` (checked anyway, its home the cluster
        file's), and raise ``unlisted_ledger`` against ``redis`` for one missing from the
        ``{ledgers}`` hash longer than UNLISTED_GRACE_SECONDS (PROTOCOL 10.5); resolved once the
        hash lists it again. At most MAX_UNLISTED_LEDGERS are checked so: those checked already
        first (never dropped), then the verifier's saved ones, the stream keys', the homes'."""
        now = self._clock()
        for ledger in list(self._unlisted_since):
            if ledger in announced:
                del self._unlisted_since[ledger]
        # Every open one, not only those raised in this run: one raised before a restart, whose
        # ledger the hash lists again by now, was never resolved.
        prefix, suffix = "redis|", f"|{UNLISTED}"
        for key in [k for k in self.open if k.startswith(prefix) and k.endswith(suffix)]:
            if key[len(prefix) : -len(suffix)] in announced:
                self.resolve("redis", key[len(prefix) : -len(suffix)], (UNLISTED,))
        unlisted = {ledger: where for ledger, where in found.items() if ledger not in announced}
        rank = {"verifier": 1, "stream": 2}
        order = sorted(unlisted, key=lambda ledger: (ledger not in self.ledgers, rank.get(unlisted[ledger], 3), ledger))
        taken = [ledger for ledger in order if ledger in self.ledgers]
        room = max(0, MAX_UNLISTED_LEDGERS - len(taken))
        taken += [ledger for ledger in order if ledger not in self.ledgers][:room]
        left_out = frozenset(unlisted).difference(taken)
        if left_out and left_out != self._left_out:
            named = ", ".join(sorted(left_out)[:20]) + (" ..." if len(left_out) > 20 else "")
            log.warning(
                "%d ledgers Redis's ledgers hash does not list are found besides it, past the %d checked so "
                "(MAX_UNLISTED_LEDGERS): %d not checked: %s",
                len(unlisted), MAX_UNLISTED_LEDGERS, len(left_out), named,
            )  # fmt: skip
        self._left_out = left_out
        for ledger in sorted(taken):
            where = unlisted[ledger]
            announced[ledger] = None
            since = self._unlisted_since.setdefault(ledger, now)
            if now - since >= UNLISTED_GRACE_SECONDS:
                self.raise_alert(
                    Alert("redis", ledger, 0, UNLISTED,
                          f"Redis's ledgers hash does not list the ledger, but {_where(where)}: deleted from it "
                          "by a Redis user that may write it (any ingest node's); checked all the same",
                          source=where)
                )  # fmt: skip

    def _shared_read(self, name: str, read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``read()`` of the shared hash ``name``, which other nodes' Redis users may write; of
        another type (WRONGTYPE), what it held at the last read instead, and ``redis_key_damaged``
        raised against ``redis`` (PROTOCOL 10.5), resolved once it reads again. A retry of the
        whole tick until someone deleted the key stopped every check (outsider 31, N1)."""
        try:
            found = read()
        except redis.exceptions.ResponseError as e:
            if not wrong_type(e):
                raise
            # Who puts it right (review17 2): the epochs hash is written only by a promotion.
            anew = ("each home names its ledgers anew at its next heartbeat" if name == self.replication.ledgers_key
                    else "the next promotion replaces it, or the admin's user deletes it (DEL)")  # fmt: skip
            detail = f"Redis key {name} is of another type ({e}): checked with what it last held; {anew}"
            self.raise_alert(Alert("redis", name, 0, REDIS_KEY_DAMAGED, detail, source="redis"))
            return dict(self._last_read.get(name, {}))
        self._last_read[name] = found
        self.resolve("redis", name, (REDIS_KEY_DAMAGED,))
        return found

    def _epoch_of(self, ledger: str, state: LedgerState, named: tuple[int, str] | None) -> tuple[int, str | None]:
        """The newest epoch of ``ledger`` proven (10.9): the one held, or a later one that a note
        in Redis proves when Redis names one later (LedgerCheckpoint.proven_epoch: a checkpoint of
        that epoch signed by the standby's pinned key and cosigned by a witness), whatever home
        Redis wrote. A signature does not expire: a proven epoch is kept whatever Redis says later.
        Redis naming none is not believed either (any ingest node's user may delete the entry): for
        a ledger whose genesis pins a standby key the notes are read at most every
        LOOK_FOR_EPOCH_SECONDS all the same, and a later epoch they prove is taken."""
        held = state.epoch
        claimed = named is not None and named[0] > held[0]
        if not claimed:
            now = self._clock()
            if now < state.look_for_epoch_at or not self._checkpoint_of(ledger, state).may_hand_over():
                return held
            state.look_for_epoch_at = now + LOOK_FOR_EPOCH_SECONDS
        try:
            notes = self.replication.epoch_notes(ledger)
        except REDIS_ERRORS as e:  # e.g. a Redis user made before the verifier read {*}:cosig
            log.warning("the notes that may prove a later epoch of %s than %d cannot be read: %s", ledger, held[0], e)
            return held
        found = self._checkpoint_of(ledger, state).proven_epoch(notes)
        if found is not None and found[0] > held[0]:
            log.info("epoch %d of %s, at %s, is proven by a signed and cosigned checkpoint", found[0], ledger, found[1])
            if not claimed:
                log.warning("Redis names no epoch of %s past %d, but a witnessed note proves epoch %d: taken",
                            ledger, held[0], found[0])  # fmt: skip
            return found
        if named is None or not claimed:
            return held
        self._unproven(
            ledger,
            f"names {named[1]} the home of epoch {named[0]}",
            "no checkpoint of that epoch signed by the standby's pinned key and cosigned by a witness proves it",
        )
        return held

    def _unproven(self, ledger: str, claim: str, why: str) -> None:
        """Log, once, a claim only Redis makes of ``ledger``'s home: not taken."""
        if (ledger, claim, why) not in self._homes_logged:
            self._homes_logged.add((ledger, claim, why))
            log.warning("Redis %s of %s: claimed, unproven (%s); not taken", claim, ledger, why)

    def replaced(self, ledger: str, home: str, epoch: tuple[int, str | None]) -> frozenset[str]:
        """The node a handover replaced as ``ledger``'s home (10.9): with an epoch from 2 on
        proven, the cluster file's home unless it is ``home`` again; else none. (The cluster
        file's standby is never replaced: it follows whoever is home.)"""
        if epoch[0] < 2:
            return frozenset()
        configured = self.config.home_of(ledger).name
        return frozenset() if configured == home else frozenset((configured,))

    def _create_group(self, ledger: str, *, mkstream: bool) -> bool:
        """Put the consumer group on ``ledger``'s stream (from its start); whether it is there. With
        ``mkstream`` false, none where the stream does not exist yet (a later round creates it)."""
        key = self.replication.stream_key(ledger)
        try:
            self.replication.client.xgroup_create(key, GROUP, id="0", mkstream=mkstream)
        except Exception as e:  # BUSYGROUP: the group exists, which is what we want
            if "BUSYGROUP" in str(e):
                self.resolve("redis", key, (REDIS_KEY_DAMAGED,))
                return True
            if not mkstream and "requires the key to exist" in str(e):
                return False
            if wrong_type(e):
                # The admin's user can SET it: its home replaces it and refills it from its store,
                # and meanwhile the other ledgers' streams are read (one XREADGROUP of all failed).
                self.raise_alert(Alert("redis", key, 0, REDIS_KEY_DAMAGED,
                                       f"Redis key {key} is of another type ({e}): the ledger's stream is not"
                                       " read until its home writes it anew", source="redis"))  # fmt: skip
                return False
            raise
        self.resolve("redis", key, (REDIS_KEY_DAMAGED,))
        return True

    def holders(self, ledger: str) -> list[str]:
        """The nodes that should hold ``ledger``: its home and its standby (10.9), every replica and observer."""
        homes = {self.config.home_of(ledger).name}
        standby = self.config.standby_of(ledger)
        if standby is not None:
            homes.add(standby.name)
        return [n.name for n in self.config.nodes.values() if n.name in homes or n.role in HOLDER_ROLES]

    # --- one slice of work ----------------------------------------------------------------

    def tick(self, block_ms: int = 100) -> None:
        """One slice of each check; raises Stopped once ``stopping`` is set (see the class)."""
        now = self._clock()
        self.refresh_open()
        self.consume(block_ms)
        if now >= self._next_heads:
            self._next_heads = now + self.settings.heads_interval_ms / 1000
            self._go_on()
            self.refresh_ledgers()
            self.compare_heads()
            self._go_on()
            self.save_checkpoints()
        if now >= self._next_claim:
            self._next_claim = now + self.settings.claim_idle_ms / 1000
            self.claim_abandoned()
        if now >= self._next_tallies:
            self._next_tallies = now + TALLY_LOOK_SECONDS
            self.compare_tallies()
        if now >= self._next_clocks:
            self._next_clocks = now + WITNESS_CLOCK_SECONDS
            self.watch_witness_clocks()
        self.sweep(budget_seconds=0.2)

    def _go_on(self) -> None:
        """Raise Stopped once the verifier is stopping: the slice in hand ends here."""
        if self._stopping.is_set():
            raise Stopped("the verifier is stopping")

    # --- new records --------------------------------------------------------------------

    def consume(self, block_ms: int) -> int:
        """Check the new stream entries (our pending ones first after a start); returns how many."""
        if not self.ledgers:
            return 0
        start = "0" if self._read_pending else ">"
        ledger_of = {
            self.replication.stream_key(ledger): ledger for ledger, state in self.ledgers.items() if state.grouped
        }
        if not ledger_of:
            return 0
        streams = dict.fromkeys(ledger_of, start)
        try:
            replies = self.replication.client.xreadgroup(
                GROUP, self.name, streams, count=READ_COUNT, block=None if self._read_pending else block_ms
            )
        except REDIS_ERRORS as e:
            if wrong_type(e):
                # One stream of another type fails the read of all: each is grouped again, which
                # finds that one (_create_group) and leaves it out until its home replaced it.
                for ledger, state in self.ledgers.items():
                    state.grouped = state.grouped and self._create_group(ledger, mkstream=False)
                self._read_pending = True
                return 0
            if "NOGROUP" not in str(e):
                raise
            # A Redis that lost the group (a replica promoted before the group reached it, a
            # restart without its append-only file): made again from the stream's start, which
            # the homes refill; checking a record twice raises nothing twice.
            log.warning("the consumer group is gone (%s); creating it again from the start of each stream", e)
            listed = self._shared_read(self.replication.ledgers_key, self.replication.ledgers)
            for ledger, state in self.ledgers.items():
                state.grouped = self._create_group(
                    ledger, mkstream=ledger in listed and ledger not in self._uncorroborated
                )
            self._read_pending = True
            return 0
        if self._read_pending and not any(entries for _, entries in replies or []):
            self._read_pending = False
        done = 0
        for stream, entries in replies or []:
            if entries:
                done += self._check_entries(ledger_of[_text(stream)], entries)
        return done

    def claim_abandoned(self) -> None:
        """Take over the entries a verifier that died left pending (XAUTOCLAIM)."""
        for ledger, state in self.ledgers.items():
            self._go_on()
            if not state.grouped:
                continue
            key = self.replication.stream_key(ledger)
            try:
                reply = self.replication.client.xautoclaim(
                    key, GROUP, self.name, min_idle_time=self.settings.claim_idle_ms, start_id="0-0", count=READ_COUNT
                )
            except REDIS_ERRORS as e:
                if not wrong_type(e):
                    raise
                state.grouped = self._create_group(ledger, mkstream=False)
                continue
            entries = [e for e in reply[1] if e and e[1] is not None] if reply else []  # 7.0 adds deleted ids
            if entries:
                log.info("took over %d entries of %s left by another verifier", len(entries), ledger)
                self._check_entries(ledger, entries)

    def _check_entries(self, ledger: str, entries: list[Any]) -> int:
        key = self.replication.stream_key(ledger)
        gone = [entry_id for entry_id, fields in entries if not fields]  # pending, then deleted (a rewind)
        if gone:
            self.replication.client.xack(key, GROUP, *gone)
        rows = [(entry_height(entry_id), bytes(fields[b"record"]), entry_id) for entry_id, fields in entries if fields]
        if not rows:
            return 0
        rows.sort()
        stream_faulty = self._verify_stream(ledger, rows)
        first, last = rows[0][0], rows[-1][0]
        streamed = {height: data for height, data, _ in rows}
        digests = {height: hashlib.sha256(data).digest() for height, data in streamed.items()}
        home = self.ledgers[ledger].home
        leftover = False  # a replaced home's record past its handover, which the home rewrites
        leftover_next = -1  # the height a run of those (from the handover on) goes on at
        agreed: dict[str, set[int]] = {}  # copy -> the heights where it holds the stream's (the home's) record
        differed: set[str] = set()  # the copies whose record differs somewhere in these entries
        home_read = False  # whether the home's records were compared with these entries
        # The home first: where its store differs from the stream, the stream is wrong (the store
        # is the truth, and the home rewrites the stream from it), and the others are compared
        # with the home's record.
        for node in sorted(self.ledgers[ledger].copies, key=lambda name: name != home):
            reader = self.readers.get(node)
            if reader is None or not reader.up():
                continue  # its sweeps and the heads check cover it once it is back
            try:
                held = reader.span(ledger, first, last - first + 1)
            except (NodeUnavailableError, RemoteError) as e:
                reader.down(self.settings.node_timeout_ms / 1000, e)
                continue
            same = agreed.setdefault(node, set())
            home_read = home_read or node == home
            for height, data, digest in _placed(held, first, digests):
                expected = digests.get(height)
                if expected is not None and digest != expected and node == home:
                    if self._fenced_leftover(ledger, streamed[height], data, goes_on=height == leftover_next):
                        leftover, leftover_next = True, height + 1
                    else:
                        stream_faulty = True
                        conflict = told_apart(data, streamed[height])
                        self.raise_alert(
                            Alert("redis", ledger, height, "record_conflict",
                                  conflict.said(f"the stream's record differs from {home}'s"), source=home,
                                  expected=conflict.expected, found=conflict.found)
                        )  # fmt: skip
                    streamed[height], digests[height] = data, digest
                elif expected is not None and digest != expected:
                    differed.add(node)
                    conflict = told_apart(streamed[height], data)
                    self.raise_alert(
                        Alert(node, ledger, height, "record_conflict",
                              conflict.said("this node's record differs from the stream's"),
                              source="redis", expected=conflict.expected, found=conflict.found)
                    )  # fmt: skip
                elif expected is not None:
                    same.add(height)
        self.replication.client.xack(key, GROUP, *[r[2] for r in rows])
        self.checked += len(rows)
        # Each side judged on its own (o13 F6: one copy's finding in a batch kept the stream's
        # alerts there open for good, as a later batch never covers those heights again).
        # A clean check of these heights: the stream's alerts there resolve. Without the home's
        # word, a copy that differs is as likely right as the stream (review r20 F2).
        if not stream_faulty and not leftover and (home_read or not differed):
            self.refresh_open()  # a home's alert of the rewrite these entries come from included
            prefix = f"redis|{ledger}|"
            self._resolve_checked(
                [
                    k
                    for k, height in self.open.items()
                    if k.startswith(prefix)
                    and first <= height <= last
                    and k.rpartition("|")[2] not in ("rollback", UNLISTED)  # not the stream's
                ]
            )
        # A copy that now holds the home's record where it held another than the stream (the
        # stream rewritten by its home, or the copy repaired) is no longer in conflict: only by the
        # home's word (r20 F2), and only where no record of it in these entries differs (r20 F1).
        self._resolve_checked(
            [
                f"{node}|{ledger}|record_conflict"
                for node, heights in agreed.items()
                if home_read
                and node not in differed
                and self.open.get(f"{node}|{ledger}|record_conflict", -1) in heights
            ]
        )
        return len(rows)

    def _conflict_over(self, ledger: str, node: str, end: int, reader: NodeReader) -> None:
        """A clean sweep just verified ``node``'s copy of ``ledger`` as a chain up to ``end``: where
        its record there is the home's, each record naming its predecessor's hash, the copy holds
        the home's records up to there, so its ``record_conflict`` with the stream at or below
        ``end`` is over. A check of the stream's entries resolves it only with the home's word in
        hand (review r20 F2); a home restarted to rewrite the stream is often still marked down for
        that check, and the heights are never checked again. Head agreement alone proves nothing
        of a copy whose record below was changed with its successor's link kept (review r21 F1)."""
        key = f"{node}|{ledger}|record_conflict"
        at = self.open.get(key)
        home = self._reference(ledger, node)
        if at is None or at > end or home is None or node == self.ledgers[ledger].home:
            return
        try:
            same = _hash_at(reader, ledger, end) == home.hash_at(ledger, end)
        except (NodeUnavailableError, RemoteError):
            return  # the next clean sweep asks again
        if same:
            self._resolve_checked([key])

    def _resolve_checked(self, fixed: list[str]) -> None:
        """Resolve this verifier's open alerts ``fixed``, whose cause a check of the stream's
        entries found gone: not opened again as vanished (:meth:`_reopen_vanished`)."""
        if not fixed:
            return
        self.replication.resolve(fixed)
        for k in fixed:
            del self.open[k]
            self._operator_open.pop((self.replication.node, k), None)
        self._mine.difference_update(fixed)
        log.info("resolved: %s", ", ".join(fixed))

    def _fenced_leftover(self, ledger: str, streamed: bytes, held: bytes, *, goes_on: bool) -> bool:
        """Whether the stream's record ``streamed`` is one the home a handover replaced placed
        where the home's record ``held`` is the current home's own (so past a handover of it,
        10.9): the fenced home's outbox, running on for a moment after its node stopped,
        appended it before the new home's first append, which rewrites it from the store at
        once (10.2). Redis did not lie: the entries come again once rewritten, and are checked
        then. That last append starts at the handover: ``held`` is the current epoch's handover
        record, or ``goes_on`` (the record below was such a leftover, in the same read). An old
        home's record anywhere else was placed later by someone writing its stream (its Redis
        user keeps its write selector: review r15 F-B). Any other record that differs is still
        the stream's ``record_conflict``."""
        state = self.ledgers[ledger]
        replaced = self.replaced(ledger, state.home, state.epoch)
        if not replaced:
            return False
        try:
            theirs, ours = decode_record(streamed, PROTOCOL_LIMITS), decode_record(held, PROTOCOL_LIMITS)
        except VledgerError:
            return False
        if not (theirs.origin in replaced and ours.origin == state.home and theirs.height == ours.height):
            return False
        return goes_on or (ours.content.kind == EPOCH_KIND and ours.content.payload.get("epoch") == state.epoch[0])

    def _verify_stream(self, ledger: str, rows: list[tuple[int, bytes, Any]]) -> bool:
        """The stream's own records, verified as a chain (its first record checked after the one below it);
        whether one failed (an alert raised)."""
        state = self.ledgers[ledger]
        for height, data, _ in rows:
            chain = state.chain
            if chain is None or chain.next_height != height:
                chain = state.chain = self._chain_before(ledger, height)
                if chain is None:
                    return False  # the records below are trimmed and the home is away: the sweeps cover it
            try:
                chain.feed(decode_record(data, PROTOCOL_LIMITS))
            except RecordError as e:
                state.chain = None
                self.raise_alert(Alert("redis", ledger, height, e.code, e.reason, source=state.home))
                return True
        return False

    def _chain_before(self, ledger: str, height: int) -> ChainVerifier | None:
        """A verifier that expects ``height``: the genesis (for the rules) and the record below it."""
        if height == 0:
            return ChainVerifier(ledger, PROTOCOL_LIMITS)
        below = {r.height: r.data for r in self.replication.read(ledger, height - 1, 1, stop=height)}
        genesis = {r.height: r.data for r in self.replication.read(ledger, 0, 1, stop=1)}
        try:
            if height - 1 not in below or 0 not in genesis:
                reader = self.readers.get(self.ledgers[ledger].home)
                if reader is None or not reader.up():
                    return None
                genesis.setdefault(0, reader.span(ledger, 0, 1)[0])
                below.setdefault(height - 1, reader.span(ledger, height - 1, 1)[0])
            rules = ChainVerifier(ledger, PROTOCOL_LIMITS).check(decode_record(genesis[0], PROTOCOL_LIMITS))
            previous = decode_record(below[height - 1], PROTOCOL_LIMITS)
        except (VledgerError, IndexError) as e:
            log.info("cannot place %s %d in its chain yet: %s", ledger, height, e)
            return None
        return ChainVerifier.after(ledger, height - 1, previous.link, rules, PROTOCOL_LIMITS)

    # --- heads ----------------------------------------------------------------------------

    def compare_heads(self) -> None:
        """Each copy's head against the home's record at its height, and each copy's tree against
        the ledger's largest verified checkpoint (the latter also while the home is away)."""
        now = self._clock()
        self._notes = None  # read from Redis once a round
        for ledger, state in self.ledgers.items():
            self._go_on()
            self._watch_latest(ledger, state)
            home = self.readers.get(state.home)
            home_head: tuple[int, bytes] | None = None
            answered = False
            if home is not None and home.up():
                try:
                    home_head = home.head(ledger)
                    answered = True
                except RemoteError as e:  # a refusal is an answer: the home is reachable
                    answered = True
                    home.down(self.settings.node_timeout_ms / 1000, e)
                except NodeUnavailableError as e:
                    home.down(self.settings.node_timeout_ms / 1000, e)
            self._home_heard(ledger, state, home is not None and answered, now, asked=home is not None)
            if home_head is not None:
                state.home_reached(home_head[0], now, self.settings.lag_alert_ms / 1000)
                if state.home in state.copies:
                    state.copies[state.home].answered(home_head[0])
            if home is not None and home_head is not None and state.home_contradicts:
                # Decided again as the home moves, until its store holds the checkpoint again.
                self._home_contradicts(ledger, state, home, home_head, now)
            heads: dict[str, tuple[int, bytes]] = {}  # the copies the home did not vouch for
            for node in state.copies:
                reader = self.readers.get(node)
                if node == state.home or reader is None:
                    continue
                if not reader.up():
                    if home_head is not None:
                        self._lag_as_reported(ledger, state, node, now)
                    continue
                try:
                    head = reader.head(ledger)
                    if head is not None:
                        state.copies[node].answered(head[0])
                    agrees = False
                    if home is not None and home_head is not None:
                        agrees = self._compare_head(ledger, state, node, head, home, home_head, now)
                except (NodeUnavailableError, RemoteError) as e:
                    reader.down(self.settings.node_timeout_ms / 1000, e)
                    continue
                except RecordError as e:  # a record that does not decode: the record checks name it
                    log.warning("cannot compare %s's head of %s with %s's: %s", node, ledger, state.home, e)
                    continue
                if head is not None and not agrees:  # one whose head is the home's record needs no proof
                    heads[node] = head
            if heads:  # only copies the home did not vouch for need a checkpoint
                self._learn_checkpoint(ledger, state, self._round_notes().get(ledger), now)
                home_compared = home_head is not None and not state.home_contradicts
                self._check_roots(ledger, state, heads, home_compared=home_compared)
            self._signed_forks(ledger, state)

    def _home_heard(self, ledger: str, state: LedgerState, answered: bool, now: float, *, asked: bool) -> None:
        """Raise ``home_unreachable`` once the home has answered none of this verifier's reads
        for ``lag_alert_ms`` (a read it skips while the home's reader rests counts as none), and
        resolve it at its next answer. What Redis hears of the home proves nothing here: a home
        cut off from its clients, not from Redis, goes on with its heartbeats (o24 F3). Such an
        alert of a node that is no longer the home (a handover since, also one made while this
        verifier was stopped: its open alerts are read back at its start) is resolved: its
        silence stops no write of the ledger any more."""
        for key in [key for key in self.open if key.endswith(f"|{ledger}|home_unreachable")]:
            node = key.split("|", 1)[0]
            if node != state.home:
                self.resolve(node, ledger, ("home_unreachable",))
        if not asked:
            return
        if answered:
            state.home_silent_since = None
            self.resolve(state.home, ledger, ("home_unreachable",))
            return
        if state.home_silent_since is None:
            state.home_silent_since = now
            return
        silent = now - state.home_silent_since
        if silent < self.settings.lag_alert_ms / 1000:
            return
        height = state.reached[-1][0] + 1 if state.reached else 0  # the first it was not seen holding
        self.raise_alert(
            Alert(state.home, ledger, height, "home_unreachable", f"{state.home}, the home of {ledger}, has answered "
                  f"none of this verifier's reads for {silent:.0f} s (stopped, or cut off from the network: its Redis "
                  "heartbeats may go on): writes of the ledger fail or wait until it answers again, or its standby "
                  "is promoted", source=state.home, expected="", found="")
        )  # fmt: skip

    def _watch_latest(self, ledger: str, state: LedgerState) -> None:
        """Redis's latest checkpoint of ``ledger`` against the largest it held before, verified
        (LedgerCheckpoint.watch_latest): a smaller one is a ``rollback`` against ``redis``, which
        this verifier resolves once Redis holds one of at least that size again (PROTOCOL 10.5)."""
        note = self._round_notes().get(ledger)
        if note is None:
            return  # deleted, or none yet: the checkpoint verified before still holds
        held = self._checkpoint_of(ledger, state)
        # A ledger that may rotate its key: a note past the rotations proven counts once they
        # are, so the nodes are asked for them (at most every ASK_NODES_SECONDS), whether or
        # not a copy needs a checkpoint this round: the watch covers every size Redis held.
        if held.awaits_rotations(note) and self._ask_nodes(ledger, state, self._clock()):
            held.asked()
        rolled = held.watch_latest(note)
        key = f"redis|{ledger}|rollback"
        if rolled is None:
            # Only a note that verified and was taken as the largest resolves it (not one that
            # merely states a size: a writer's junk with a large size would have).
            if key in self.open and held.latest is not None and held.latest_note == note:
                self.resolve("redis", ledger, ("rollback",))
            return
        before, now = rolled
        self.raise_alert(
            Alert("redis", ledger, before.size - 1, "rollback",
                  f"the ledger's latest checkpoint in Redis is of size {now.size}, below the size {before.size}"
                  " it held before: set back by a Redis user that may write it (its home's or standby's), or"
                  " lost by Redis (a failover or a restart that lost its last writes)",
                  source="redis", expected=before.root.hex(), found=now.root.hex())
        )  # fmt: skip

    def _signed_forks(self, ledger: str, state: LedgerState) -> None:
        """Raise ``signed_fork`` against the signer for each pair of checkpoints of one size, both
        verified with the ledger's key in force there and of the epoch held, with other roots
        (LedgerCheckpoint.take_forks: Redis's latest, a witness's note or a node's answer against
        the largest verified or Redis's latest before). No honest home signs two trees of one
        size: it is the strongest evidence of a lying home, so both notes are kept verbatim in
        this verifier's evidence hash, and only an operator resolves it (PROTOCOL 10.5)."""
        if state.checkpoint is None:
            return
        for fork in state.checkpoint.take_forks():
            size, signer = fork.found.size, self._signer_of(ledger, fork.found.epoch)
            evidence = {
                "checkpoint": fork.found_note.decode("utf-8", "replace"),
                "from": fork.source,
                "held_root": fork.held.root.hex(),
                "cosigned": "",
                "proved_by": fork.held_note.decode("utf-8", "replace"),
                "consistency": "",  # one size: the two roots contradict each other without a proof
            }
            try:
                self.replication.keep_evidence(self.name, ledger, size, evidence)
            except REDIS_ERRORS as e:  # e.g. a Redis user made before the verifier kept evidence
                log.warning("the evidence of %s's signed fork of %s at %d cannot be kept: %s", signer, ledger, size, e)
            self.raise_alert(
                Alert(signer, ledger, size - 1, "signed_fork",
                      f"two checkpoints of size {size} verify with the ledger's key, with roots "
                      f"{fork.held.root.hex()} and {fork.found.root.hex()} (the latter from {fork.source}): "
                      "two signed trees of one size; both notes are kept as evidence",
                      source=fork.source, expected=fork.held.root.hex(), found=fork.found.root.hex())
            )  # fmt: skip

    def _round_notes(self) -> dict[str, bytes]:
        """The ledgers' latest checkpoint notes in Redis, read once per heads round."""
        if self._notes is None:
            self._notes = self._checkpoint_notes()
        return self._notes

    def _home_contradicts(
        self, ledger: str, state: LedgerState, home: NodeReader, home_head: tuple[int, bytes], now: float
    ) -> bool:
        """Whether the home's own copy contradicts the largest checkpoint the verifier verified,
        asked when a copy's record differs from the home's: which of the two to blame. The home's
        key signed that checkpoint (and witnesses cosigned it), so a home whose tree at its size
        is not its root, or which holds fewer records, was changed behind its back: it raises
        ``store_contradicts_checkpoint`` against the home, and the checkpoint, not the home's
        copy, is the reference the copies are held against (PROTOCOL 10.6, step 2). Decided again
        only once the checkpoint or the home's head moved."""
        self._learn_checkpoint(ledger, state, self._round_notes().get(ledger), now)
        proven = None if state.checkpoint is None else state.checkpoint.proven
        if proven is None or self._signer_of(ledger, proven.epoch) != state.home:
            # Only what the home's own key signed in its own epoch can show its store changed.
            state.home_contradicts, state.home_checked = False, None
            return False
        mark = (proven.size, home_head[0], home_head[1])
        if state.home_checked == mark:
            return state.home_contradicts
        try:
            found = self._home_root(ledger, home, proven.size)
        except (NodeUnavailableError, RemoteError) as e:
            home.down(self.settings.node_timeout_ms / 1000, e)
            return True  # no reference this round: nobody is blamed on the home's word
        if found is None:
            return False  # it cannot answer for that size now (a proof it lacks): not evidence
        state.home_checked = mark
        state.home_contradicts = found != proven.root
        if state.home_contradicts:
            held = "holds fewer records" if not found else f"has root {found.hex()} there"
            self.raise_alert(
                Alert(state.home, ledger, proven.size - 1, "store_contradicts_checkpoint",
                      f"its store no longer holds the checkpoint of size {proven.size} it signed (root "
                      f"{proven.root.hex()}): its tree {held}; its copy is not the reference for the others",
                      source=state.home, expected=proven.root.hex(), found=found.hex())
            )  # fmt: skip
        return state.home_contradicts

    def _signer_of(self, ledger: str, epoch: tuple[int, str | None]) -> str:
        """The home whose key signs ``ledger``'s checkpoints of ``epoch`` (10.9): its epoch line's
        home, or for epoch 1 the home the cluster file names (the genesis' origin)."""
        return epoch[1] if epoch[1] is not None else self.config.home_of(ledger).name

    def _home_root(self, ledger: str, home: NodeReader, size: int) -> bytes | None:
        """The home's tree root at ``size`` (b"" when it answers that it holds fewer records), None
        when it cannot give one for another reason."""
        fresh = home.head(ledger)  # asked again: the checkpoint may be newer than the head read before it
        if fresh is None or fresh[0] + 1 < size:
            return b""
        return copy_root(home, ledger, size)

    def _checkpoint_notes(self) -> dict[str, bytes]:
        """Each ledger's latest checkpoint note as Redis has it (its home wrote it; unverified)."""
        try:
            notes, damaged = self.replication.checkpoint_reads(self.ledgers)  # {ledgers} may be of another type
        except REDIS_ERRORS:
            return {}  # Redis away: the checkpoints verified before still hold
        for ledger in self.ledgers:
            key = self.replication.checkpoint_key(ledger)
            error = damaged.get(key)
            if error is None:
                self.resolve("redis", key, (REDIS_KEY_DAMAGED,))
            else:  # its home SETs it again at its next heartbeat; the nodes are asked meanwhile
                self.raise_alert(Alert("redis", key, 0, REDIS_KEY_DAMAGED,
                                       f"Redis key {key} is of another type ({error}): read as no checkpoint until"
                                       " the ledger's home writes it anew", source="redis"))  # fmt: skip
        return notes

    def _learn_checkpoint(self, ledger: str, state: LedgerState, note: bytes | None, now: float) -> None:
        """Take a larger verified checkpoint of ``ledger``: Redis's note, else (at most every
        ``ASK_NODES_SECONDS``, when Redis's is none or does not verify with the keys known, e.g.
        signed by a key a rotation named) a node's ``checkpoint`` answer with its rotations proven."""
        held = self._checkpoint_of(ledger, state)
        if note is not None and (held.offer(note) or size_of(note) <= held.size):
            return  # Redis's note taken, or no larger than the one held (the home is away, or idle)
        if note is not None and held.keys is not None and held.keys.standby_key is not None:
            # The latest note of a standby's key counts only cosigned (10.9): a witness's note may.
            try:
                cosigned = list(self.replication.cosignatures(ledger).values())
            except REDIS_ERRORS:
                cosigned = []
            for other in sorted(cosigned, key=size_of, reverse=True):
                if held.offer(other) or size_of(other) <= held.size:  # one of the size held: a fork?
                    break
        if self._ask_nodes(ledger, state, now):
            held.asked()

    def _ask_nodes(self, ledger: str, state: LedgerState, now: float) -> bool:
        """At most every ASK_NODES_SECONDS: a larger checkpoint of ``ledger`` with its rotations
        proven from a node's ``checkpoint`` answer (the home first; LedgerCheckpoint.learn_from).
        True when the nodes were asked."""
        held = self._checkpoint_of(ledger, state)
        if now < state.ask_nodes_at:
            return False
        state.ask_nodes_at = now + ASK_NODES_SECONDS
        for reader in self._copies_up(state):
            try:
                if held.learn_from(reader):
                    break
            except (NodeUnavailableError, RemoteError) as e:
                log.info("no checkpoint of %s from %s: %s", ledger, reader.name, e)
        return True

    def _checkpoint_of(self, ledger: str, state: LedgerState) -> LedgerCheckpoint:
        """The ledger's LedgerCheckpoint, made on first use and taking its proven epoch's notes."""
        if state.checkpoint is None:
            state.checkpoint = LedgerCheckpoint(
                ledger,
                lambda: self._genesis(ledger),
                lambda: self._fallback_key(ledger),
                self._witness_keys,
                self._failbacks.allows,  # a failback's epoch counts once the file allows it (10.9)
            )
            state.checkpoint.enter(state.epoch)
        return state.checkpoint

    def _copies_up(self, state: LedgerState) -> Iterator[NodeReader]:
        """The readers of the ledger's copies that answer, the home's first."""
        for name in sorted(state.copies, key=lambda n: n != state.home):
            reader = self.readers.get(name)
            if reader is not None and reader.up():
                yield reader

    def recount_read(self, ledger: str, start: int, limit: int) -> list[bytes]:
        """Up to ``limit`` records of ``ledger`` from ``start``, from the first copy that answers
        with any (the home's first), for the verifier's recount of the observers' tallies
        (verifier/tally_recount.py, which verifies them as a chain); [] when none does."""
        state = self.ledgers.get(ledger)
        if state is None:
            return []
        for reader in self._copies_up(state):
            try:
                records = reader.page(ledger, start, limit)
            except VledgerError as e:
                reader.down(self.settings.node_timeout_ms / 1000, e)
                continue
            if records:
                return records
        return []

    def _genesis(self, ledger: str) -> bytes | None:
        """``ledger``'s genesis as the stream has it, else as its home serves it, else as a holder does
        (a copy forked at its genesis pins another key, under which no note of the home verifies)."""
        try:
            rows = self.replication.read(ledger, 0, 1, stop=1)
        except REDIS_ERRORS:
            rows = []
        if rows:
            return rows[0].data
        for reader in self._copies_up(self.ledgers[ledger]):
            try:
                page = reader.span(ledger, 0, 1)
            except (NodeUnavailableError, RemoteError):
                continue
            if page:
                return page[0]
        return None

    def _check_roots(
        self, ledger: str, state: LedgerState, heads: dict[str, tuple[int, bytes]], *, home_compared: bool
    ) -> None:
        """Each copy of ``heads`` that reaches the ledger's largest verified checkpoint: its tree at
        that size must be the checkpoint's root, else it is a fork. Asked again only when the
        checkpoint or the copy's head moved. The forks are named once every copy was asked, so
        that a copy just proven can be the reference whose records the search compares."""
        proven = None if state.checkpoint is None else state.checkpoint.proven
        if proven is None:
            return
        forked = []
        for node, head in heads.items():
            if head[0] + 1 < proven.size:
                continue  # behind the checkpoint: nothing to hold it against yet
            mark = (proven.size, head[0], head[1])
            if state.roots.get(node) == mark:
                continue
            reader = self.readers[node]
            try:
                root = copy_root(reader, ledger, proven.size)
            except (NodeUnavailableError, RemoteError) as e:
                reader.down(self.settings.node_timeout_ms / 1000, e)
                continue
            if root is None:
                continue  # it cannot answer: as a copy behind, not a fork
            if root == proven.root:
                state.roots[node] = mark
                if not home_compared and self.open.get(f"{node}|{ledger}|fork", proven.size) < proven.size:
                    self.resolve(node, ledger, ("fork",))  # its records below the checkpoint are the home's
            else:
                state.roots.pop(node, None)
                forked.append((node, reader, root))
        for node, reader, root in forked:
            try:
                self._root_fork(ledger, state, node, reader, root, proven.size, proven.root)
            except (NodeUnavailableError, RemoteError) as e:
                reader.down(self.settings.node_timeout_ms / 1000, e)  # raised at its next answer
            except RecordError as e:  # a reference's record that does not decode: the record checks name it
                log.warning("cannot name the fork of %s's %s: %s", node, ledger, e)

    def _root_fork(
        self, ledger: str, state: LedgerState, node: str, reader: NodeReader, root: bytes, size: int, expected: bytes
    ) -> None:
        """Raise ``node``'s fork: its tree at ``size`` has ``root``, not the checkpoint's ``expected``.
        Named at the first height at which its record differs from a reference copy's (the home,
        or a copy whose tree at ``size`` is the checkpoint's), searched once; at ``size - 1``
        without one."""
        top = first = size - 1
        theirs: bytes | None = None
        ours: bytes | None = None
        reference = self._reference(ledger, node) or self._proven_copy(ledger, state, node, size)
        if reference is not None:
            try:
                theirs, ours = _hash_at(reference, ledger, top), _hash_at(reader, ledger, top)
            except (NodeUnavailableError, RemoteError) as e:
                log.info("cannot compare %s %s with %s: %s", node, ledger, reference.name, e)
                theirs = ours = None
            if theirs is not None and theirs == ours:
                # Its records are the home's; only the proof it serves is not: no fork of the chain.
                log.warning(
                    "%s serves a tree of %s at %d that is not its records' (root %s)", node, ledger, size, root.hex()
                )
                return
            if theirs is not None and f"{node}|{ledger}|fork" not in self._mine:
                first = self._first_difference(ledger, node, reader, top, differs=True, reference=reference)
                if first != top:
                    try:
                        theirs, ours = _hash_at(reference, ledger, first), _hash_at(reader, ledger, first)
                    except (NodeUnavailableError, RemoteError) as e:
                        log.info("cannot compare %s %s with %s at %d: %s", node, ledger, reference.name, first, e)
        elif f"{node}|{ledger}|fork" not in self._mine:
            ours = _hash_at(reader, ledger, top)
        self.raise_alert(
            Alert(node, ledger, first, "fork",
                  f"its tree at size {size} has root {root.hex()}, not that of {state.home}'s checkpoint "
                  f"({expected.hex()}): its record at {first} is not the home's",
                  source=state.home, expected=(theirs or b"").hex(), found=(ours or b"").hex())
        )  # fmt: skip

    def _proven_copy(self, ledger: str, state: LedgerState, node: str, size: int) -> NodeReader | None:
        """A copy other than ``node`` whose tree at ``size`` was found to be the checkpoint's."""
        for name, (proven_size, _, _) in sorted(state.roots.items()):
            reader = self.readers.get(name)
            if name != node and proven_size == size and reader is not None and reader.up():
                return reader
        return None

    def _lagging(
        self, ledger: str, state: LedgerState, node: str, height: int | None, now: float, how: str = ""
    ) -> bool:
        """Raise ``node``'s lagging alert if ``height`` (None: it never said, so below anything)
        is below what the home held ``lag_alert_ms`` ago and the copy was first seen behind the
        home at least that long ago. False once it holds what the home held then (its alert is
        resolved); True while it does not, raised or not yet (an alert open stays)."""
        window = self.settings.lag_alert_ms / 1000
        due, reached = state.due(now, window)
        known = -1 if height is None else height
        home_head = state.reached[-1][0] if state.reached else -1
        copy = state.copies.get(node)
        first_seen = copy.behind(known, home_head, now) if copy is not None else None
        if known >= due:
            return False
        # Behind since the later of: the home held the height the copy lacks, the copy was seen lacking it.
        behind = max(state.since(known, now), now if first_seen is None else first_seen)
        if now - behind < window:
            return True
        if height is None:
            # Said as what is known, no height of it (outsider o11: "lacks height 0" of a node
            # that had never answered, a height invented); found empty, at the first height.
            self.raise_alert(
                Alert(node, ledger, 0, "lagging", "it does not answer, and has not said it holds any record of it "
                      f"since this verifier started: what it holds is unknown; {state.home} has held height {due} "
                      f"for {now - max(reached, behind):.0f} s", source=state.home, expected=str(due), found="")
            )  # fmt: skip
            return True
        self.raise_alert(
            Alert(node, ledger, height + 1, "lagging", f"{how} height {height + 1}, which {state.home} holds: "
                  f"behind it for {now - behind:.0f} s", source=state.home, expected=str(due), found=str(height))
        )  # fmt: skip
        return True

    def _lag_as_reported(self, ledger: str, state: LedgerState, node: str, now: float) -> None:
        """A copy that does not answer (cut off, stopped) is judged by the height it last answered
        holding itself: one that stays away longer than ``lag_alert_ms`` while the home goes on is
        lagging. Not by its height in Redis, which anyone who reaches Redis can raise to hide the
        lag. Nothing is resolved here; that waits until the copy answers again."""
        said = state.copies[node].said
        self._lagging(
            ledger, state, node, said if said >= 0 else None, now, "it does not answer, and last answered lacking"
        )

    def _compare_head(
        self,
        ledger: str,
        state: LedgerState,
        node: str,
        head: tuple[int, bytes] | None,
        home: NodeReader,
        home_head: tuple[int, bytes],
        now: float,
    ) -> bool:
        """Raise or resolve ``node``'s lagging and fork alerts by the home; True when the copy's
        head is the home's record at its height (so its whole prefix is the home's)."""
        reader = self.readers[node]
        height = -1 if head is None else head[0]
        if not self._lagging(ledger, state, node, height, now, "it lacks"):
            self.resolve(node, ledger, ("lagging",))
        if head is None:
            return False
        reference = home_head[1] if height == home_head[0] else home.hash_at(ledger, height)
        if (
            reference is not None
            and reference != head[1]
            and self._home_contradicts(ledger, state, home, home_head, now)
        ):
            return False  # the home is the one changed: the copy is held against the checkpoint instead
        if reference is not None and reference != head[1]:
            # Named at the first height that differs, searched once (not while the fork is open).
            first = height
            if f"{node}|{ledger}|fork" not in self._mine:
                first = self._first_difference(ledger, node, reader, height, differs=True)
            theirs: bytes | None = reference
            ours: bytes | None = head[1]
            if first != height:
                theirs, ours = home.hash_at(ledger, first), _hash_at(reader, ledger, first)
            self.raise_alert(
                Alert(node, ledger, first, "fork", f"its record at {first} differs from {state.home}'s (head {height})",
                      source=state.home, expected=(theirs or b"").hex(), found=(ours or b"").hex())
            )  # fmt: skip
        elif reference is not None:
            self.resolve(node, ledger, ("fork",))
            return True
        return False

    def _reference(self, ledger: str, node: str) -> NodeReader | None:
        """The copy another copy is compared with: the home's, or for the home's own copy another holder's."""
        state = self.ledgers[ledger]
        if node != state.home and state.home_contradicts:
            return None  # a home that contradicts its own checkpoint is no reference: a proven copy is
        names = [state.home] if node != state.home else [n for n in state.copies if n != node]
        for name in names:
            reader = self.readers.get(name)
            if reader is not None and reader.up():
                return reader
        return None

    def _first_difference(
        self,
        ledger: str,
        node: str,
        reader: NodeReader,
        top: int,
        *,
        differs: bool,
        reference: NodeReader | None = None,
    ) -> int:
        """The lowest height at or below ``top`` at which ``node``'s record differs from the
        reference copy's (a binary search by record hash); ``top + 1`` when they agree at ``top``
        (``differs`` says they are known to differ there). When the reference cannot say, the
        answer is ``top`` if ``differs`` else ``top + 1``: the height the caller found.

        Where two copies agree at a height, linked chains agree everywhere below it (a link
        commits to every record below), so the search is sound over records that are linked
        up to ``top``: a sweep verified just that below its finding."""
        low, high = -1, top  # the copies agree at low (or it is -1); they differ at high once checked
        found = top if differs else top + 1
        reference = reference or self._reference(ledger, node)
        if reference is None:
            return found
        try:
            if not differs:
                theirs = reference.hash_at(ledger, top)
                if theirs is None or _hash_at(reader, ledger, top) == theirs:
                    return found
            while high - low > 1:
                middle = (low + high) // 2
                theirs = reference.hash_at(ledger, middle)
                if theirs is None:
                    return found
                if _hash_at(reader, ledger, middle) == theirs:
                    low = middle
                else:
                    high = middle
        except (NodeUnavailableError, RemoteError) as e:
            log.info("cannot search %s %s back for its first difference: %s", node, ledger, e)
            return found
        return high

    # --- sweeps ---------------------------------------------------------------------------

    def sweep(self, budget_seconds: float) -> int:
        """Sweep copies for up to ``budget_seconds``, each at most ``sweep_rate`` records a second.

        Each call starts at the copy where the last one's budget ran out: started at the first
        ledger every time, a budget spent on the ledgers listed first left the last ones unswept
        for as long as the others kept it busy (seen: a ledger created last, in a verifier of 16,
        not swept whole in 30 s under load)."""
        deadline = self._clock() + budget_seconds
        done = 0
        copies = [(ledger, node, copy) for ledger, state in self.ledgers.items() for node, copy in state.copies.items()]
        first = self._sweep_from % len(copies) if copies else 0
        for index in range(first, first + len(copies)):
            ledger, node, copy = copies[index % len(copies)]
            self._go_on()
            if self._clock() >= deadline:
                self._sweep_from = index % len(copies)
                return done
            reader = self.readers.get(node)
            if reader is None or not reader.up() or self._clock() < copy.next_sweep_at:
                continue
            done += self._sweep_copy(ledger, node, copy, reader)
        self._sweep_from = first
        return done

    def _sweep_copy(self, ledger: str, node: str, copy: CopyState, reader: NodeReader) -> int:
        started = self._clock()
        # Before the page is read: the copy held at least this much then. Read after it, the
        # height would count records stored meanwhile, and a growing copy would look cut short.
        held = self._held_before(ledger, node, copy)
        try:
            step = copy.sweep.step(reader, reader.page_size)
        except (NodeUnavailableError, RemoteError) as e:
            reader.down(self.settings.node_timeout_ms / 1000, e)
            return 0
        self.swept += step.verified
        # Pace: a page of n records may not come sooner than n / sweep_rate seconds after the last.
        copy.next_sweep_at = started + step.verified / self.settings.sweep_rate
        if step.finding is not None:
            finding = step.finding
            height = finding.height
            if f"{node}|{ledger}|{finding.code}" not in self._mine and height > 0:
                # The sweep verified the copy below the finding as a chain: if its record below
                # differs from the home's, a record was rewritten whole (fresh link and all)
                # further down, and that is the height to name.
                height = self._first_difference(ledger, node, reader, height - 1, differs=False)
            self.raise_alert(Alert(node, ledger, height, finding.code, finding.detail))
            copy.next_sweep_at = self._clock() + self.settings.sweep_interval_ms / 1000
        elif step.complete:
            copy.next_sweep_at = self._clock() + self.settings.sweep_interval_ms / 1000
            self._sweep_complete(ledger, node, step.end, held, reader)
        return step.verified

    def _held_before(self, ledger: str, node: str, copy: CopyState) -> HeldBefore:
        """What shows that ``node`` held ``ledger`` up to a height: its own answers, and for the
        home the largest checkpoint it signed that the verifier verified (it signs only what its
        store holds); and, apart, its height in Redis, a claim that proves nothing."""
        state = self.ledgers[ledger]
        proven = None if state.checkpoint is None else state.checkpoint.proven
        signed = proven.size - 1 if proven is not None and node == state.home else -1
        return HeldBefore(copy.said, signed, self._claimed(ledger, node))

    def _claimed(self, ledger: str, node: str) -> int:
        """The height up to which Redis says ``node`` holds ``ledger`` (-1: none, not a number, or Redis away)."""
        try:
            held = self.replication.client.get(self.replication.held_key(ledger, node))
        except REDIS_ERRORS:
            return -1
        return -1 if held is None else _int(held)

    def _sweep_complete(self, ledger: str, node: str, end: int, held: HeldBefore, reader: NodeReader) -> None:
        """A clean sweep to ``end``: unless the node had held more before its last page was read (a
        chain cut short: it said so itself, or signed it), its chain alerts resolve. A height only
        Redis claims accuses nobody (anyone who reaches Redis can write it): the node is asked, and
        its answer is logged against the claim."""
        if max(held.said, held.signed) > end and not self._still_served(ledger, node, reader):
            return
        self.ledgers[ledger].copies[node].answered(end)
        if max(held.said, held.signed) > end:
            said = held.said >= held.signed
            how = "it answered holding up to" if said else "it signed a checkpoint of its records up to"
            top = max(held.said, held.signed)
            self.raise_alert(
                Alert(node, ledger, end + 1, "truncated", f"the copy ends at {end}, but {how} {top}",
                      expected=str(top), found=str(end))
            )  # fmt: skip
            return
        if held.claimed > end:
            self._unconfirmed_claim(ledger, node, end, held.claimed, reader)
        self.resolve(node, ledger, CHAIN_FAULTS)
        self._conflict_over(ledger, node, end, reader)

    def _still_served(self, ledger: str, node: str, reader: NodeReader) -> bool:
        """Before a sweep's short end is called a truncation: whether the node still serves the
        ledger. A home replaced by a promotion answers its reads not_home at once, which ended
        the sweep as a copy that holds none, while the new epoch's proof reaches this verifier a
        moment later (outsider 20, F13: a routine `ledger promote` left a false `truncated` open).
        A node that cannot be asked now is swept again at the next round."""
        try:
            if reader.serves(ledger):
                return True
        except (NodeUnavailableError, RemoteError) as e:
            log.info(
                "%s's sweep of %s ended short, and the node cannot be asked now (%s): swept again", node, ledger, e
            )
            return False
        log.info("%s answers reads of %s not_home: its copy is not judged while its epoch is learnt", node, ledger)
        return False

    def _unconfirmed_claim(self, ledger: str, node: str, end: int, claimed: int, reader: NodeReader) -> None:
        """Redis says ``node`` held more than its sweep found: ask the node, the only party that can
        confirm or deny it. A head above ``end`` is a copy that grew meanwhile; one at or below it
        denies the claim, written by someone else. Either way nothing is raised on a claim."""
        try:
            head = reader.head(ledger)
        except (NodeUnavailableError, RemoteError) as e:
            log.info("%s does not confirm its held height of %s in Redis (%d): %s", node, ledger, claimed, e)
            return
        height = -1 if head is None else head[0]
        if height > end:
            return
        key = (ledger, node, claimed)
        if key not in self._claims_logged:
            self._claims_logged.add(key)
            log.warning(
                "Redis says %s holds %s up to %d, but the node answers that it ends at %d: a claim it did not "
                "make (anyone who reaches Redis can write vledger:{%s}:held), not an alert",
                node,
                ledger,
                claimed,
                height,
                ledger,
            )

    def save_checkpoints(self) -> None:
        values = {
            f"{node}|{ledger}": _checkpoint_text(copy.sweep.checkpoint)
            for ledger, state in self.ledgers.items()
            if ledger not in self._uncorroborated  # saved, a name only Redis gave would be found for good
            for node, copy in state.copies.items()
        }
        if values:
            # Of another type (the admin's user can SET it), it is replaced: every tick failed on it.
            try:
                self.replication.own_write(self.checkpoints_key, partial(self._save, values))
            except redis.exceptions.NoPermissionError as e:  # a redis.acl written before it may DEL it
                log.warning("sweep checkpoints not saved (%s): write redis.acl anew (vledger keygen --cluster)", e)

    def _save(self, values: dict[str, str]) -> Any:
        return self.replication.client.hset(self.checkpoints_key, mapping=values)

    def _saved_checkpoints(self) -> dict[Any, Any]:
        """This verifier's saved sweep checkpoints; none while the key is of another type (the
        next save replaces it): every tick failed on it, no check ran (outsider 31, N1)."""
        try:
            return dict(self.replication.client.hgetall(self.checkpoints_key))
        except redis.exceptions.ResponseError as e:
            if not wrong_type(e):
                raise
            log.warning("Redis key %s is of another type (%s): sweeps start from the start", self.checkpoints_key, e)
            return {}

    # --- the observers' tallies -----------------------------------------------------------

    def compare_tallies(self) -> None:
        """Each checked ledger's observers' latest tallies compared at their newest common height
        (PROTOCOL 11.4): a disagreement is raised as ``tally_mismatch``, observers never compared
        as ``tally_uncompared`` (which only an operator resolves; resolved while still so, raised
        again), an entry whose signature fails as ``bad_signature``, resolved here once the entries
        it was raised for verify with the keys proven now (checked with a key view set back, they
        were honest: outsider o8 J5)."""
        for ledger, state in sorted(self.ledgers.items()):
            self._go_on()
            size = (state.checkpoint.size or None) if state.checkpoint is not None else None
            for alert in self._tallies(ledger, size):
                self.raise_alert(alert)
            raised = {}
            for key in self.open:
                observer, _, rest = key.partition("|")
                of, _, what = rest.rpartition("|")
                if of == ledger and what == SignatureError.code:
                    fields = self._open_fields.get(key)
                    raised[observer] = fields if isinstance(fields, Mapping) else {}
            for observer in self._tally_cleared(ledger, raised):
                self.resolve(observer, ledger, (SignatureError.code,))
        self.tally_looks += 1

    def watch_witness_clocks(self) -> None:
        """Each witness's newest verified cosignature of each checked ledger in Redis against
        Redis's clock (``TIME``): one dated more than the clock skew ahead raises ``witness_clock``
        about that witness (``ledger`` empty: one host, one clock), resolved here once its newest
        line of every ledger is within the skew again. Freshness already ignores such a date
        (PROTOCOL 11.4) and counting is left as it is: this only tells the operator, whom nothing
        told (outsiders o13 F8, o14). A witness whose lines all vanished keeps its alert open:
        nothing shows its clock right."""
        keys: dict[str, list[VerifierKey]] = {}
        names = {
            witness_name(self.config.name, n): n for n, node in self.config.nodes.items() if node.role in FOLLOWER_ROLES
        }
        for key in self._witness_keys():
            if key.name in names:
                keys.setdefault(names[key.name], []).append(key)
        if not keys or not self.ledgers:
            return
        try:
            notes, now_ms = self.replication.witness_notes(sorted(self.ledgers), sorted(keys))
        except REDIS_ERRORS as e:
            log.info("the witnesses' cosignatures cannot be read (%s): their clocks are looked at later", e)
            return
        for verdict in self._clocks.look(notes, keys, now_ms):
            if verdict.ahead is not None:
                self.raise_alert(
                    Alert(verdict.witness, "", 0, WITNESS_CLOCK, ahead_detail(verdict.ahead, now_ms),
                          source=verdict.witness, expected=str(now_ms // 1000), found=str(verdict.ahead.timestamp))
                )  # fmt: skip
            elif verdict.lines:
                self.resolve(verdict.witness, "", (WITNESS_CLOCK,))

    # --- alerts ---------------------------------------------------------------------------

    def raise_alert(self, alert: Alert) -> None:
        """Add ``alert`` unless this verifier's own alert of its key is open already at its
        height or below (one at a higher height, e.g. a fork at its checkpoint, gets the first
        height). Another raiser's alert of the key does not count: it chose its height."""
        if self.open.get(alert.key, alert.height + 1) <= alert.height:
            return
        log.warning(
            "ALERT %s: node %s ledger %s height %d: %s",
            alert.what,
            alert.node,
            alert.ledger,
            alert.height,
            alert.detail,
        )
        self.replication.alert(alert)
        self.open[alert.key] = alert.height
        self._mine.add(alert.key)
        self.alerts += 1

    def resolve(self, node: str, ledger: str, kinds: tuple[str, ...]) -> None:
        keys = [f"{node}|{ledger}|{what}" for what in kinds if f"{node}|{ledger}|{what}" in self.open]
        if keys:
            self.replication.resolve(keys)
            for key in keys:
                del self.open[key]
            self._mine.difference_update(keys)
            log.info("resolved: %s", ", ".join(keys))

    def status(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "swept": self.swept,
            "tally_looks": self.tally_looks,
            "open_alerts": sorted(self.open),
            "copies": {
                f"{node}|{ledger}": {
                    "sweeps": copy.sweep.checkpoint.sweeps,
                    "at": copy.sweep.checkpoint.height,
                    "last_complete_ms": copy.sweep.last_complete_ms,
                    "records": copy.sweep.last_records,
                }
                for ledger, state in sorted(self.ledgers.items())
                for node, copy in sorted(state.copies.items())
            },
        }


def _placed(held: list[bytes], first: int, digests: dict[int, bytes]) -> Iterator[tuple[int, bytes, bytes]]:
    """A copy's records read from height ``first`` on (:meth:`NodeReader.span`), each with its height and
    SHA-256. A record stands at its place in the answer while it is the stream's record there or
    names that height itself (or does not decode: a record that differs where it stands). A copy
    that lacks heights (deleted behind its back) answers the records above them in their place:
    from the first record that names another height, each is placed at the height it names, so
    a missing record is compared with nothing (the sweep names the hole, ``height_gap``, and
    resolves it once the copy is whole again) rather than with the stream's record at its place
    (a ``record_conflict``, which only an operator resolves, against an honest copy that fetches
    its records again). A record that does not decode past that point is the sweep's to name."""
    for offset, data in enumerate(held):
        height, digest = first + offset, hashlib.sha256(data).digest()
        if digest == digests.get(height) or _height_named(data) in (None, height):
            yield height, data, digest
            continue
        for moved in held[offset:]:
            named = _height_named(moved)
            if named is not None:
                yield named, moved, hashlib.sha256(moved).digest()
        return


def _height_named(data: bytes) -> int | None:
    """The height a record's bytes name, None when they do not decode."""
    try:
        return decode_record(data, PROTOCOL_LIMITS).height
    except VledgerError:
        return None


def _hash_at(reader: NodeReader, ledger: str, height: int) -> bytes | None:
    """A copy's record hash at ``height``; a record that does not decode differs from every other."""
    try:
        return reader.hash_at(ledger, height)
    except RecordError:
        return b""


def _where(source: str) -> str:
    """Where a ledger Redis does not list was found, as the alert says it."""
    if source == "verifier":
        return "this verifier checked it before (its own state)"
    if source == "stream":
        return "its stream key exists in Redis"
    return f"node {source} holds it (its ledger.list)"


def _put_back_fields(alert: dict[str, Any]) -> dict[str, Any]:
    """``alert`` (as another raiser wrote it) as a put-back keeps it: PUT_BACK_FIELDS, each as
    written unless longer than PUT_BACK_CHARS (``detail``: PUT_BACK_DETAIL_CHARS; a value that is
    no text: its JSON), then that text cut there (said by a trailing ``...``)."""
    kept = {}
    for name in PUT_BACK_FIELDS:
        if name not in alert:
            continue
        value, most = alert[name], PUT_BACK_DETAIL_CHARS if name == "detail" else PUT_BACK_CHARS
        text = value if isinstance(value, str) else json.dumps(value)
        kept[name] = value if len(text) <= most else text[:most] + "..."
    return kept


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _checkpoint_text(cp: Checkpoint) -> str:
    return f"{cp.height}:{cp.link.hex()}:{cp.sweeps}:{cp.started_ms}"


def _checkpoint(text: str | None) -> Checkpoint | None:
    if not text:
        return None
    try:
        height, link, sweeps, started = text.split(":")
        return Checkpoint(int(height), bytes.fromhex(link), int(sweeps), int(started))
    except ValueError:
        return None  # a damaged checkpoint: sweep from genesis
