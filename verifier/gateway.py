"""The public read-only HTTP gateway: `vledger gateway --config FILE --node NAME`.

It runs beside a node that keeps a store (a replica, an observer, an ingest node) and reads
that store **read-only** (node/storefile.py's reader): it never writes, needs no account and
serves no write verb. Routes (docs/PROTOCOL.md section 15 gives the bytes):

* the C2SP tlog-tiles layout of every ledger under ``/ledgers/<ledger>/``: ``checkpoint`` (the
  latest checkpoint the home signed, with every witness cosignature that verifies, gathered
  line by line from the store and Redis: node/cosigning.py), ``tile/<L>/<N>[.p/<W>]``
  (hash tiles, from the store's Merkle tree) and ``tile/entries/<N>[.p/<W>]`` (entry bundles:
  each record's exact bytes behind a big-endian uint16 length). Both never change once
  served, so they are cached for a year (``immutable``).
* JSON under ``/api/``: ledgers, a ledger's rules, a record by height or hash, ranges (paged,
  at most ``MAX_PAGE`` records), the checkpoint with its keys, inclusion and consistency
  proofs, receipts (node/receipt.py: a record, its proof and the cosigned checkpoint), a
  voter's records by electronic id (with their receipts), the observers' signed tallies (with each
  signature checked and the bytes it signs, so a browser can check it again), fund balances
  in currency units, and the cluster's state for the operators' dashboard.
* ``/api/events``: Server-Sent Events: ``head`` when a ledger grows (with its new records,
  up to ``EVENT_RECORDS``), ``checkpoint`` when the checkpoint served for a ledger changes
  (a larger one, more cosignatures, or a quiet ledger's cosigned again), ``tally`` when an
  observer signs a new tally.
* the web pages (verifier/pages.py: one layout around each page of ``verifier/web/``) and
  ``/healthz``, ``/readyz``, ``/metrics``.

Every refusal is JSON with a code of PROTOCOL's table and a 4xx status (broker/http.py).
It lives in ``verifier/`` because it checks the observers' tallies (verifier/tally.py) and
imports only go down (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import os
import re
import signal
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import redis
from aiohttp import ClientSession, ClientTimeout, web
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..broker.http import HttpThread, add_health_routes, from_this_host, json_errors, json_response, plain_headers
from ..broker.redis_server import connect
from ..broker.replication import ReplicationLedger, numbered, wrong_type
from ..broker.signing import admin_checkpoint_key, witness_keys
from ..broker.tallies import TallyBoard
from ..config.cluster import ClusterConfig
from ..config.settings import PROTOCOL_LIMITS
from ..ingest.epochs import ReadEpochs
from ..ingest.key_chains import KeyChains
from ..node import tree
from ..node.cosigning import GatheredCheckpoint, gather, needed_witnesses
from ..node.currency import amount_text, minor_unit_digits
from ..node.epoch import gather_in_epochs, meets_epoch_rule
from ..node.errors import (
    BadRequestError,
    NoSuchLedgerError,
    NotFoundError,
    PayloadTooLargeError,
    ProofError,
    RecordError,
    SettingsError,
    StoreDamagedError,
    TreeMismatchError,
    TreeSizeError,
    VledgerError,
)
from ..node.json_values import jsonable
from ..node.key_rotation import KeyChain
from ..node.ledger import LedgerRules
from ..node.node_key_rotation import KeyHistory
from ..node.node_keys import NodeKeys
from ..node.note import Checkpoint, VerifierKey
from ..node.outside import OutsideWitnesses, outside_witnesses
from ..node.receipt import Receipt, RotationProof
from ..node.record import NAME_PATTERN, Record, decode_record
from ..node.rules.admin import ADMIN_LEDGER
from ..node.rules.votes import check_electronic_id, electronic_id
from ..node.storefile import DB_NAME, StoredTree, StoreReader, damaged_file
from ..node.tally_body import Snapshot
from ..node.verify import ChainVerifier
from ..node.witness import cosignatures_in_force, witness_key, witness_keys_in_force
from .node_keys import follow_copy, witness_histories_of
from .pages import PAGES, WEB_DIR, render, security_headers
from .tally import (
    AGREE,
    LOOK_PAGE,
    LOOK_PAGES,
    MISMATCH,
    RECOSIGN_MS,
    STILL_COUNTING,
    LedgerHead,
    TallyReport,
    agreement_behind,
    ahead_observers,
    head_stale,
    observer_keys,
    open_recounts,
    read_tallies,
    snapshot_fields,
    stale_observers,
    with_recounts,
)

log = logging.getLogger(__name__)
MAX_PAGE = 500  # records in one range answer
PAGE_BYTES = 1024 * 1024  # the JSON of one page's records, at most (PROTOCOL 15.2)
MAX_ENTRY = 0xFFFF  # an entry bundle's uint16 length prefix
EVENT_RECORDS = 50  # new records sent with one head event; past that, only the head
POLL_SECONDS = 0.25  # how often the store's heads are read for the event stream
TALLY_POLL_SECONDS = 1.0
CLUSTER_CACHE_SECONDS = 0.5
# A checkpoint gathered (every signature line verified) serves the requests of this long:
# under load the Ed25519 checks and the Redis read happen once, not once per request.
CHECKPOINT_SECONDS = 1.0
REDIS_WARN_SECONDS = 60.0  # how often a ledger's "Redis unavailable" is logged while it lasts
STORE_LOOK_SECONDS = 1.0  # how often a thread looks whether the store's file was replaced
# How long a ledger found contradicting its tree is refused before the tile found so is proven
# again: a follower heals its copy in place (node/store_cut.py), in the same file.
REFUSAL_SECONDS = 10.0
PROBE_TIMEOUT = 1.0  # a node's /readyz that does not answer in this is shown down
TILE_CACHE = 1024  # tiles kept in memory (8 MiB at most): served again without a read
ROOTS_KEPT = 4  # checkpoints per ledger whose root the store's tree was found to lead to
PROVEN_ROOTS = 1024  # roots of past sizes proven to a signed root, kept (~150 KiB with their keys)
LOG_LINES = 20
LOG_TAIL_BYTES = 8192
CLIENT_QUEUE = 256  # events queued per event-stream client; a client this far behind is dropped
# Bytes of events queued per event-stream client, the same way: an event may be a checkpoint's
# JSON of up to ~1 MiB, so 256 of them were a quarter GiB held for one client that does not
# read. The events are shared by every client's queue: the slowest client's bound is the gateway's.
CLIENT_QUEUE_BYTES = 4 * 1024 * 1024
IMMUTABLE = "public, max-age=31536000, immutable"
QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")  # RFC 9110 12.4.2
CHECKPOINT_CACHE = "public, max-age=2"  # tlog-tiles: a mutable resource, cached a few seconds at most
VOTER_KINDS = ("cast", "uncast", "withdraw")  # the kinds whose payload carries an electronic id
# The alerts that say a node's copy of a ledger is damaged: the gateway of that node checks the
# tile of the height they name before it serves the ledger's checkpoint (Gateway._check_flagged).
DAMAGE_ALERTS = frozenset({"bad_checksum", "store_contradicts_checkpoint", "store_damaged", "tree_mismatch"})


def record_json(record: Record, data: bytes, leaf: bytes | None = None) -> dict[str, Any]:
    """A record for people and scripts: its fields, and its exact bytes (base64) to check them by
    (``leaf``: its leaf hash, if computed already)."""
    content = record.content
    return {
        "ledger": content.ledger,
        "height": record.height,
        "hash": record.link.hex(),
        "leaf_hash": (leaf or tree.leaf_hash(data)).hex(),
        "kind": content.kind,
        "author": content.author,
        "request_id": content.request_id,
        "ts": content.ts,
        "accepted": record.accepted,
        "origin": record.origin,
        "payload": jsonable(content.payload),
        "record": base64.b64encode(data).decode(),
    }


# One encoder for every record of a page: json.dumps with arguments makes a new one each call.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _json_bytes(value: Any) -> bytes:
    """``value`` as the compact UTF-8 JSON that json_response sends."""
    return _COMPACT.encode(value).encode()


def _ledger(request: web.Request) -> str:
    name = request.match_info["ledger"]
    if not NAME_PATTERN.fullmatch(name) or len(name) > PROTOCOL_LIMITS.max_name_length:
        raise BadRequestError(f"{name[:80]!r} is not a ledger name")
    return name


def _int(value: str | None, what: str, default: int | None = None, maximum: int = tree.MAX_TREE_SIZE) -> int:
    # Only an absent parameter takes the default: "?size=" names no number (PROTOCOL 15), and
    # answering it as the default would serve the tree's current size to a client that sent one.
    if value is None:
        if default is None:
            raise BadRequestError(f"{what} is required")
        return default
    if not value.isascii() or not value.isdigit() or (len(value) > 1 and value[0] == "0"):
        raise BadRequestError(f"{what} must be a decimal integer without leading zeros, not {value[:40]!r}")
    # Over 19 digits it is over any maximum: said so without converting a number of any length.
    if len(value) > len(str(maximum)) or int(value) > maximum:
        shown = value if len(value) <= 40 else f"{value[:20]}... ({len(value)} digits)"
        raise BadRequestError(f"{what} {shown} is over {maximum}")
    return int(value)


def _refused(why: str) -> StoreDamagedError:
    """The error for every answer made of a ledger's records once they were found damaged."""
    return StoreDamagedError(f"{why}: nothing of this ledger is served from this store until it is repaired")


def _file_identity(path: Path) -> tuple[int, int] | None:
    """Which file ``path`` names now (device, inode); None while nothing is there."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


@dataclass(slots=True)
class VoterIndex:
    """One election's electronic ids -> the heights of the records naming them, fed in height order."""

    next_height: int = 0
    heights: dict[str, list[int]] = field(default_factory=dict)

    def feed(self, record: Record) -> None:
        kind = record.content.kind
        eid: object = None
        if kind == "register":
            eid = electronic_id(record)
        elif kind in VOTER_KINDS:
            eid = record.content.payload.get("electronic_id")
        if isinstance(eid, str):
            self.heights.setdefault(eid, []).append(record.height)
        self.next_height = record.height + 1


@dataclass(frozen=True, slots=True)
class ServedCheckpoint:
    """The checkpoint the gateway serves for a ledger, and the keys it was checked with."""

    ledger: str
    gathered: GatheredCheckpoint
    log_key: VerifierKey  # the key in force at its size (PROTOCOL 13.8)
    witness_keys: dict[str, VerifierKey]  # node name -> its cosignature key
    outside: OutsideWitnesses | None = None  # the outside witnesses the genesis lists (13.9)
    rotations: tuple[RotationProof, ...] = ()  # the key chain from the genesis key to log_key, proven
    node_keys: NodeKeys | None = None  # the witnesses' rotated keys, proven on the admin ledger (16.6)
    recosign_ms: int = RECOSIGN_MS  # how often the witnesses cosign a quiet ledger again (10.7)

    def json(self) -> dict[str, Any]:
        checkpoint = self.gathered.checkpoint
        return {
            "ledger": self.ledger,
            "size": checkpoint.size,
            "root": checkpoint.root.hex(),
            "note": self.gathered.note.decode("utf-8"),
            "log_key": self.log_key.encode(),
            "cosigned_by": list(self.gathered.witnesses),
            "witness_keys": {key.name: key.encode() for key in self.witness_keys.values()},
            "outside_witnesses": None
            if self.outside is None
            else {"keys": [key.encode() for key in self.outside.keys], "quorum": self.outside.quorum},
            "rotations": [
                {"index": r.index, "record": base64.b64encode(r.record).decode("ascii")} for r in self.rotations
            ],
            "node_keys": None if self.node_keys is None else self.node_keys.json(),
            "since_ms": self.gathered.since_ms,
            "fresh_ms": self.gathered.fresh_ms,
            "recosign_interval_ms": self.recosign_ms,
        }


class _GatewayRows:
    """The gateway's read-only store as the rows a key chain is read from (ingest/key_chains.py)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def size(self, ledger: str) -> int:
        return self.gateway.reader.size(ledger)

    def rules(self, ledger: str) -> LedgerRules:
        return self.gateway.genesis_rules(ledger)

    def range_raw(self, ledger: str, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        return self.gateway.reader.iter_raw(ledger, start, stop)


class GatewayMetrics:
    """The gateway's own series: requests by route and status, event-stream clients, and per
    ledger the served checkpoint's age and cosignatures (set when a checkpoint is read)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "vledger_gateway_requests", "HTTP requests answered", ["route", "status"], registry=registry
        )
        self.event_clients = Gauge("vledger_gateway_event_clients", "open event streams", registry=registry)
        self.event_clients_dropped = Counter(
            "vledger_gateway_event_clients_dropped",
            "event streams ended for falling too far behind (events or bytes queued for them)",
            registry=registry,
        )
        self.checkpoint_size = Gauge(
            "vledger_checkpoint_size", "size of the latest served checkpoint", ["ledger"], registry=registry
        )
        self.checkpoint_lag = Gauge(
            "vledger_checkpoint_lag_records",
            "records of the store not yet covered by the latest served checkpoint",
            ["ledger"],
            registry=registry,
        )
        self.checkpoint_age = Gauge(
            "vledger_checkpoint_age_seconds",
            "seconds since the served checkpoint's size last grew (as this gateway saw it)",
            ["ledger"],
            registry=registry,
        )
        self.cosignatures = Gauge(
            "vledger_checkpoint_cosignatures",
            "verified witness cosignatures on the latest served checkpoint",
            ["ledger"],
            registry=registry,
        )
        self._grown: dict[str, tuple[int, float]] = {}

    def saw(self, ledger: str, size: int, store_size: int, witnesses: int) -> None:
        seen = self._grown.get(ledger)
        now = time.monotonic()
        if seen is None or size > seen[0]:
            self._grown[ledger] = seen = (size, now)
        self.checkpoint_size.labels(ledger).set(size)
        self.checkpoint_lag.labels(ledger).set(max(0, store_size - size))
        self.checkpoint_age.labels(ledger).set(now - seen[1])
        self.cosignatures.labels(ledger).set(witnesses)


class StoreDamageCollector(Collector):
    """``vledger_store_damaged``: 1 while the store the gateway reads is found damaged (a read at
    the scrape, or any since its file was opened), else 0. Never raises: a scrape answers."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterable[Any]:
        try:
            damaged = self.gateway.store_damage() is not None
        except Exception as e:  # not damage (locked, not there yet): what the reads before said
            log.debug("the store probe of a scrape failed: %s", e)
            damaged = self.gateway.known_damage() is not None
        yield GaugeMetricFamily(STORE_DAMAGED_METRIC, STORE_DAMAGED_HELP, value=1 if damaged else 0)

    def describe(self) -> Iterable[Any]:
        yield GaugeMetricFamily(STORE_DAMAGED_METRIC, STORE_DAMAGED_HELP)


STORE_DAMAGED_METRIC = "vledger_store_damaged"
STORE_DAMAGED_HELP = "1 while the store this gateway reads is found damaged (its file malformed), else 0"


class Gateway:
    """The routes over one store (read-only), the cluster's Redis and its key directory."""

    def __init__(
        self,
        config: ClusterConfig,
        node: str,
        *,
        redis_client: Any = None,
        logs_dir: Path | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.node = config.node(node)
        self.store_dir = config.store_dir(node)
        self._local = threading.local()  # one read-only connection per thread (sqlite3 connections stay in theirs)
        self._readers: list[StoreReader] = []
        self.redis = redis_client
        self.logs_dir = logs_dir
        self.registry = registry or CollectorRegistry()
        self.metrics = GatewayMetrics(self.registry)
        self.observer_keys = observer_keys(config)
        self.witness_keys = witness_keys(config)  # generation 0: each follower's key file
        self._admin_key = admin_checkpoint_key(config)
        self._node_keys: tuple[float, NodeKeys | None, dict[str, KeyHistory]] | None = None
        self._outside: dict[str, OutsideWitnesses | None] = {}  # the outside witnesses each genesis lists
        self._chains = self._key_chains()
        self._epochs = ReadEpochs(config.name, _GatewayRows(self))  # a ledger with a standby's epochs (10.9)
        self._checkpoints: dict[tuple[str, int | None, bool], tuple[float, ServedCheckpoint]] = {}
        # ledger -> when its tallies were read, under which latest ids and key histories, and the report
        self._tally_reports: dict[str, tuple[float, tuple[object, ...], TallyReport]] = {}
        self._voters: dict[str, VoterIndex] = {}
        self._clients: set[EventStream] = set()
        self._cluster_cache: tuple[float, dict[str, Any]] | None = None
        self._voters_lock = threading.Lock()  # the voter indexes, the tile cache, the list of readers
        self._tiles: dict[tuple[str, int, int, int], bytes] = {}
        # (ledger, tile index) -> its first leaves that lead to a served checkpoint's root (at
        # most TILE_CACHE tiles): what an entry bundle, a record, a receipt or a proof serves is
        # compared with them, so a store whose record bytes were changed never has them served (M1).
        self._proven: dict[tuple[str, int], bytes] = {}
        # ledger -> the (size, root) of the newest checkpoints (ROOTS_KEPT, the served one and the
        # largest among them) the store's tree was found to lead to: one a served checkpoint grew
        # this set forever (review r16).
        self._roots_checked: dict[str, list[tuple[int, bytes]]] = {}
        # (ledger, size) -> the root of that many leaves, proven by a consistency proof to a
        # signed root (at most PROVEN_ROOTS): what an inclusion or consistency proof of that
        # size is verified against before it goes out, the rows it is made of being the store's.
        self._roots_proven: dict[tuple[str, int], bytes] = {}
        # ledger -> ((tile index, the ledger's size), its leaves) of the last tile that no signed
        # root proved yet (the newest): each request near the head re-read and hashed up to 256
        # records; compared with as proven ones are, so a record changed since is found too.
        self._unproven: dict[str, tuple[tuple[int, int], list[bytes]]] = {}
        # ledger -> (why, the check that found it so, since when), once its records or tree rows
        # were found not to lead to its tree or signed root: every answer made of that store's
        # copy of the ledger is refused (store_damaged) until the file is replaced or that check
        # passes again (REFUSAL_SECONDS).
        self._contradicted: dict[str, tuple[str, Callable[[], object], float]] = {}
        # When the open alerts were read, and the heights they name of this node's ledgers.
        self._flagged: tuple[float, dict[str, set[int]]] | None = None
        # Counts the store files seen replaced. A thread reads only through a reader of the
        # current generation, and what it read goes into the shared caches only if the
        # generation did not change meanwhile: else a thread still on the old file (it looks
        # only every STORE_LOOK_SECONDS) would put back what another thread's flush removed.
        self._generation = 0
        # When each ledger's "Redis unavailable" was last logged: once a minute, not once a read
        # (a store-only gateway, or Redis down, logged a line per request).
        self._redis_warned: dict[str, float] = {}
        # (the file's identity, why, the ledger a contradiction found or None) once a read found
        # the store's file damaged (damaged_file) or a ledger's records not leading to its tree:
        # true until another file is there (repaired), or that ledger's tile proves again, shown
        # by /readyz and vledger_store_damaged.
        self._damage: tuple[tuple[int, int] | None, str, str | None] | None = None
        self._damage_lock = threading.Lock()  # its own: the event loop's middleware takes it
        self.registry.register(StoreDamageCollector(self))

    # --- the store ----------------------------------------------------------------------------------

    def note_damaged(self, error: BaseException) -> str | None:
        """Why the store is damaged, if ``error`` says its file is (damaged_file), else None; the
        first time for a store file, logged at error level. A request that met it is answered 503
        ``store_damaged`` by json_errors; its node raises the alert (PROTOCOL 10.5)."""
        cause = damaged_file(error)
        if cause is None:
            return None
        identity = _file_identity(self.store_dir / DB_NAME)
        why = f"{self.store_dir / DB_NAME}: the store's file is damaged: {cause}"
        if self._first_damage(identity, why, None):
            log.error(
                "gateway of %s: %s (its node raises store_damaged; repair it: vledger repair)", self.node.name, why
            )
        return why

    def store_damage(self) -> str | None:
        """Why the store's file is damaged (a read now, or any read of that same file before,
        found it so), or None: what /readyz's ``store`` check and ``vledger_store_damaged`` say.
        Raises what a read raises for anything else (locked, missing: the moment's)."""
        try:
            self.reader.ledgers()
        except Exception as e:
            if self.note_damaged(e) is None:
                raise
        return self.known_damage()

    def contradiction(
        self, ledger: str, why: str, generation: int, index: int, again: Callable[[], object] | None = None
    ) -> StoreDamagedError:
        """The error for a store whose records do not lead to the tree they must (a record's bytes
        changed in the file), found in tile ``index`` by reads begun at ``generation``, or whose
        tree rows do not lead to a signed root (a tile of level 1 and up, a proof: ``again`` is
        then the check that found it): logged the first time for a store file, and shown by
        /readyz and ``vledger_store_damaged`` until another file is there (`vledger repair`) or
        the check passes again (:meth:`_check_ledger`). Recorded only if no other file was found
        meanwhile: the reads may have been the old one's."""
        why = f"ledger {ledger!r} on {self.node.name}: {why}"
        # The file this thread read, not the one there now: within STORE_LOOK_SECONDS of a
        # swap they differ, and the new file would be marked for what the old one held.
        identity = getattr(self._local, "identity", None)
        with self._voters_lock:
            if generation != self._generation:
                return StoreDamagedError(why)
            if again is None:
                again = functools.partial(self._reprove_leaves, ledger, index)
            found = self._contradicted.setdefault(ledger, (why, again, time.monotonic()))
        if self._first_damage(identity, why, ledger):
            log.error(
                "gateway of %s: %s (its node raises bad_checksum; repair it: vledger repair)", self.node.name, why
            )
        return _refused(found[0])

    def _first_damage(self, identity: tuple[int, int] | None, why: str, ledger: str | None) -> bool:
        """Record ``why`` the store file ``identity`` is damaged (for ``ledger``, None: the whole
        file) unless damage of that same file is recorded already; whether it was the first."""
        with self._damage_lock:
            first = self._damage is None or self._damage[0] != identity
            if first:
                self._damage = (identity, why, ledger)
        return first

    def _check_ledger(self, ledger: str) -> None:
        """Raise the refusal of ``ledger`` once its records were found damaged; once it is
        REFUSAL_SECONDS old, prove the tile found so again first: the node may have healed its
        copy in place (cut back and fetched again, node/store_cut.py), or rows been put back."""
        found = self._contradicted.get(ledger)
        if found is None:
            return
        why, again, since = found
        if time.monotonic() - since < REFUSAL_SECONDS:
            raise _refused(why)
        with self._voters_lock:
            mine = self._contradicted.get(ledger) is found
            if mine:  # this thread proves it again; the others' reads are checked as ever meanwhile
                del self._contradicted[ledger]
        if mine:
            self._reprove(ledger, again)

    def _reprove(self, ledger: str, again: Callable[[], object]) -> None:
        """Run the check that found ``ledger``'s copy damaged again (it raises StoreDamagedError,
        refused anew, if it still fails); if it passes, the store's damage that ledger showed is over.
        So too when what it checked is no longer there (a cut back copy, another checkpoint): what
        is served is proven at each request, and the request that ran the check asked for another.
        What was proven of the ledger before goes first: a copy healed in place is proven against
        the checkpoint it holds now, and compared with the leaves proven of the one before, it
        stayed refused for good (review r18, 2)."""
        self._forget_proven(ledger)
        try:
            again()
        except StoreDamagedError:
            raise
        except VledgerError as e:
            log.info(
                "gateway of %s: the check that found ledger %r damaged checks nothing now: %s",
                self.node.name,
                ledger,
                e,
            )
        identity = getattr(self._local, "identity", None)
        with self._voters_lock:
            other = next(iter(self._contradicted.items()), None)  # still refused: still shown
        with self._damage_lock:
            if self._damage is not None and self._damage[2] == ledger:
                self._damage = None if other is None else (identity, other[1][0], other[0])
        log.warning("gateway of %s: ledger %r proves again: served again", self.node.name, ledger)

    def _forget_proven(self, ledger: str) -> None:
        """Drop what was proven of ``ledger`` (its tiles, leaves, roots, checkpoints): read again,
        it is proven again against the checkpoint the store leads to now."""
        caches: tuple[dict[Any, Any], ...] = (self._tiles, self._proven, self._roots_proven, self._checkpoints)
        with self._voters_lock:
            for cache in caches:  # each keyed by (ledger, ...)
                for key in [key for key in cache if key[0] == ledger]:
                    del cache[key]
            self._roots_checked.pop(ledger, None)
            self._unproven.pop(ledger, None)

    def _reprove_leaves(self, ledger: str, index: int) -> None:
        """Prove tile ``0/index`` of ``ledger`` again, as read now (StoreDamagedError if it does not)."""
        generation = self._generation
        first = index * tree.TILE_WIDTH
        size = self._size(ledger)
        end = min(first + tree.TILE_WIDTH, size)
        rows = list(self.reader.iter_raw(ledger, first, end))
        if [height for height, _ in rows] != list(range(first, end)):
            raise self.contradiction(ledger, f"records of heights {first}.. are missing", generation, index)
        self.check_leaves(ledger, first, [tree.leaf_hash(data) for _, data in rows], size)

    def known_damage(self) -> str | None:
        """Why the store's file is damaged, if a read of the file there now found it so."""
        damage = self._damage
        return damage[1] if damage is not None and damage[0] == _file_identity(self.store_dir / DB_NAME) else None

    @property
    def reader(self) -> StoreReader:
        """This thread's read-only view of the store, opened when first needed (the node may
        create the store after the gateway starts: until then every read is a store_error),
        and opened again when the store's file is another than the one it opened, whichever
        thread saw it first."""
        reader: StoreReader | None = getattr(self._local, "reader", None)
        if reader is not None and self._local.generation != self._generation:
            self._close_reader(reader)  # another thread saw the file replaced and flushed the caches
            reader = None
        now = time.monotonic()
        if reader is not None and now >= self._local.look_at:
            self._local.look_at = now + STORE_LOOK_SECONDS
            if _file_identity(reader.path) != self._local.identity:
                self._drop_reader(reader)
                reader = None
        if reader is None:
            generation = self._generation  # before opening, as the identity: a race opens it once more
            identity = _file_identity(self.store_dir / DB_NAME)
            reader = StoreReader(self.store_dir, page_size=MAX_PAGE)
            self._local.reader, self._local.identity, self._local.generation = reader, identity, generation
            self._local.look_at = now + STORE_LOOK_SECONDS
            with self._voters_lock:
                self._readers.append(reader)
        return reader

    def _key_chains(self) -> KeyChains:
        """Key chains read anew from the store. A genesis that pins no key has none, but the admin
        ledger's, whose genesis pins none by rule (16.1): its home's key, which the anchors' admin
        line carries (15.5), so its head is public."""
        admin_key = self._admin_key
        return KeyChains(_GatewayRows(self), lambda ledger: admin_key if ledger == ADMIN_LEDGER else None)

    def _drop_reader(self, reader: StoreReader) -> None:
        """Close a view of a store file that is no longer the store's: `vledger repair` moved
        it aside (kept as evidence, maybe damaged) and put a rebuilt one in its place, or an
        operator put a copy back. Served on, the old file would be stale or wrong for good.
        What was read from it (tiles, checkpoints, voters, outside witnesses, node keys, key
        chains, epochs) goes with it, and the new generation makes every other thread drop its
        view too."""
        with self._voters_lock:
            # Two threads may see the same replacement: the second finds the flush done.
            first = self._local.generation == self._generation
            if first:
                self._generation += 1
                self._tiles.clear()
                self._proven.clear()
                self._roots_checked.clear()
                self._roots_proven.clear()
                self._unproven.clear()
                self._contradicted.clear()
                with self._damage_lock:  # what was found was the old file's
                    self._damage = None
                self._checkpoints.clear()
                self._voters.clear()
                self._outside.clear()
                self._node_keys = None
                self._chains = self._key_chains()  # the admin key too: else its head was 404 until a restart
                self._epochs = ReadEpochs(self.config.name, _GatewayRows(self))
        if first:
            log.warning("the store of %s at %s was replaced: reading the new one", self.node.name, self.store_dir)
        self._close_reader(reader)

    def _close_reader(self, reader: StoreReader) -> None:
        self._local.reader = None
        with self._voters_lock, contextlib.suppress(ValueError):
            self._readers.remove(reader)
        with contextlib.suppress(Exception):
            reader.close()

    def close(self) -> None:
        with self._voters_lock:
            for reader in self._readers:
                with contextlib.suppress(Exception):  # a connection of another thread: closed at exit anyway
                    reader.close()

    def _tree(self, ledger: str) -> StoredTree:
        """The ledger's tree as of the records it covers (written in their transaction)."""
        try:
            return self.reader.tree(ledger)
        except TreeSizeError:
            raise NoSuchLedgerError(f"no ledger {ledger!r} on {self.node.name}") from None

    def _size(self, ledger: str) -> int:
        return self._tree(ledger).size

    def _record(self, ledger: str, height: int) -> tuple[Record, bytes]:
        data = self.reader.get(ledger, height)
        if data is None:
            self._size(ledger)  # an unknown ledger is no_such_ledger, a height past the head not_found
            raise NotFoundError(f"no record at height {height} of {ledger!r} on {self.node.name}")
        return decode_record(data, PROTOCOL_LIMITS), data

    def ledgers(self) -> list[dict[str, Any]]:
        """The index (PROTOCOL 15.2): each ledger as :meth:`listed` shows it."""
        return [self.listed(ledger) for ledger in self.reader.ledgers()]

    def listed(self, ledger: str) -> dict[str, Any]:
        """``ledger``'s index entry: only what the gateway serves of it. The size and root of its
        served checkpoint (the largest verified, its records proven to lead there), else, for a
        ledger with none to serve, the store's as ``/api/ledgers/L`` says them (``signed`` false);
        a ledger refused as damaged shows the refusal alone. The store's own root was listed even
        while every route of that ledger answered store_damaged (outsider o11): a forged tree's."""
        try:
            served = self._served(ledger)
            # The checkpoint served (``checkpoint``), which a reader pairs this entry with: the one
            # proving records may be larger (the cluster's, past the outside quorum's; outsider o24 F6).
            shown = None if served is None else self._shown(ledger)
        except StoreDamagedError as e:
            return {"ledger": ledger, "size": None, "root": None, "type": None, "signed": False, "refused": e.to_wire()}
        if shown is None:
            stored = self.reader.tree(ledger)
            size, root = stored.size, stored.root()
        else:
            size, root = shown.size, shown.root
        genesis = self.reader.get(ledger, 0)
        rules = decode_record(genesis, PROTOCOL_LIMITS).content.payload if genesis is not None else {}
        kind = rules.get("rules", {}).get("type") if isinstance(rules.get("rules"), dict) else None
        signed = served is not None
        return {"ledger": ledger, "size": size, "root": root.hex(), "type": kind, "signed": signed, "refused": None}

    def _shown(self, ledger: str) -> Checkpoint | None:
        """The checkpoint ``checkpoint`` serves of ``ledger``, or None when it has none this moment:
        its cache ages apart from :meth:`_served`'s, and one ledger's race must not fail the whole
        index (review r32)."""
        try:
            return self.checkpoint(ledger).gathered.checkpoint
        except NotFoundError:
            return None

    def ledger_info(self, ledger: str) -> dict[str, Any]:
        self._served(ledger)  # a store that contradicts the served checkpoint has no root to show
        size = self._size(ledger)
        genesis, _ = self._record(ledger, 0)
        return {
            "ledger": ledger,
            "size": size,
            "root": self.reader.tree(ledger).root(size).hex(),
            **self.home(ledger),
            "node": self.node.name,
            "genesis": jsonable(genesis.content.payload),
        }

    def home(self, ledger: str) -> dict[str, Any]:
        """``{"home", "epoch"}``: the node that places the ledger's records now, as the node's copy
        proves it: the home of the last epoch a handover record there opened (10.9; a follower
        stores a record only under a checkpoint it verified, 10.7), else the cluster file's home
        (epoch 1). The cluster file's home stayed served after a promotion (outsider o6 H8)."""
        history = self._epochs.history(ledger)
        if history is None or history.current.number == 1:
            return {"home": self.config.home_of(ledger).name, "epoch": 1}
        return {"home": history.current.home, "epoch": history.current.number}

    def record_page(self, ledger: str, start: int, limit: int, proving: bool = True) -> bytes:
        """The JSON of at most ``limit`` records from ``start``, fewer where their JSON would pass
        :data:`PAGE_BYTES` (at least one): a page of 500 records of 60 KB was 70 MB, built whole
        in memory per request (outsider pass 18, F0). ``next`` says where to go on. Each record
        is serialized once, as the page's bytes are assembled: measured apart, the JSON cost
        half as much again. ``proving``: they are checked first (:meth:`check_leaves`);
        the event stream's pages of the newest records, which no checkpoint covers yet, are not."""
        size = self._size(ledger)
        records: list[bytes] = []
        leaves: list[bytes] = []
        budget = PAGE_BYTES
        for _, data in self.reader.iter_raw(ledger, start, min(size, start + limit)):
            leaf = tree.leaf_hash(data)
            record = _json_bytes(record_json(decode_record(data, PROTOCOL_LIMITS), data, leaf))
            if records and len(record) + 1 > budget:
                break
            budget -= len(record) + 1
            records.append(record)
            leaves.append(leaf)
        if proving:
            self.check_leaves(ledger, start, leaves, size)
        after = start + len(records)
        following = b"%d" % after if after < size else b"null"
        return b'{"ledger":%s,"size":%d,"records":[%s],"next":%s}' % (
            _json_bytes(ledger),
            size,
            b",".join(records),
            following,
        )

    def by_hash(self, record_hash: bytes) -> dict[str, Any]:
        found = self.reader.find_hash(record_hash)
        if found is None:
            raise NotFoundError(f"no record with hash {record_hash.hex()} on {self.node.name}")
        record = decode_record(found[2], PROTOCOL_LIMITS)
        if record.link != record_hash:  # the column is an index; only the record's own link names it
            raise NotFoundError(f"no record with hash {record_hash.hex()} on {self.node.name}")
        self.proven_record(record.content.ledger, record.height)
        return record_json(record, found[2])

    def _proving(
        self, ledger: str, what: str, generation: int, again: Callable[[], object], check: Callable[[], object]
    ) -> None:
        """Run ``check``, the verification of what the store's tree rows gave for ``what``
        against a signed root; when it fails (ProofError, TreeMismatchError: a row missing),
        raise the refusal of ``ledger`` (:meth:`contradiction`, read at ``generation``), which
        ``again`` ends once it passes."""
        try:
            check()
        except (ProofError, TreeMismatchError) as e:
            raise self.contradiction(ledger, f"{what} ({e})", generation, 0, again) from e

    def inclusion(self, ledger: str, index: int, size: int | None) -> dict[str, Any]:
        """Leaf ``index``'s inclusion proof in the tree of ``size`` leaves (default: the served
        checkpoint's size, so that a client pairing it with ``checkpoint`` verifies it, outsider
        o24 B4; the whole tree while none is served).

        The arguments are checked as the CURVE command's (PROTOCOL 14.1), with its codes: a size
        past the tree or an index not below the size is TreeSizeError (bad_tree_size), never
        bad_proof, which says that a proof did not verify.
        """
        stored = self._tree(ledger)
        at = stored.size if size is None else size
        # No checkpoint to serve (none pinned or verified yet): the store's tree.
        with contextlib.suppress(NotFoundError):
            if size is None:
                at = min(self.checkpoint(ledger).gathered.checkpoint.size, stored.size)
        if at > stored.size:
            raise TreeSizeError(f"ledger {ledger!r}: size {at} is past the {stored.size} records of {self.node.name}")
        if index >= at:
            raise TreeSizeError(f"ledger {ledger!r}: record {index} is not in the tree of size {at}")
        generation = self._generation  # before the reads
        # Its leaf, and the last of the proof's tree (its last records' tile is in the proof).
        leaf = stored.leaf(index)
        self.check_leaves(ledger, index, [leaf], stored.size)
        self.check_leaves(ledger, at - 1, [stored.leaf(at - 1)], stored.size)
        proof = stored.inclusion_proof(index, at)
        # The proof is the store's tree rows: it goes out only if it leads to a root a signed one
        # proves (every hash of it counts); past the largest signed root nothing proves it yet.
        root = self._root_verifying(
            ledger,
            at,
            generation,
            f"its tree's inclusion proof of record {index} in the tree of size {at} is wrong",
            functools.partial(self.inclusion, ledger, index, size),
            lambda root: tree.verify_inclusion(leaf, index, at, proof, root),
        )
        return {
            "ledger": ledger,
            "index": index,
            "size": at,
            "leaf_hash": leaf.hex(),
            "root": root.hex(),
            "proof": [h.hex() for h in proof],
        }

    def consistency(self, ledger: str, old: int, new: int | None) -> dict[str, Any]:
        """The proof that the tree of ``new`` leaves (default: the whole tree) extends that of ``old``.

        Checked as the CURVE command (PROTOCOL 14.1): a size past the tree is TreeSizeError
        (bad_tree_size), then sizes other than ``0 < old <= new`` BadRequestError (bad_request).
        """
        stored = self._tree(ledger)
        at = stored.size if new is None else new
        for name, value in (("old", old), ("new", at)):
            if value > stored.size:
                raise TreeSizeError(
                    f"ledger {ledger!r}: {name} size {value} is past the {stored.size} records of {self.node.name}"
                )
        if not 0 < old <= at:
            raise BadRequestError(f"a consistency proof needs 0 < old <= new, not old {old} and new {at}")
        generation = self._generation  # before the reads
        self._check_ledger(ledger)
        proof = stored.consistency_proof(old, at)
        old_root = stored.root(old)
        # As an inclusion proof: every hash of the proof, and the old root, lead to the new root
        # (RFC 9162 2.1.4.2), which a signed root must prove; past it, nothing proves them yet.
        new_root = self._root_verifying(
            ledger,
            at,
            generation,
            f"its tree's consistency proof from size {old} to {at} is wrong",
            functools.partial(self.consistency, ledger, old, new),
            lambda root: tree.verify_consistency(old, at, old_root, root, proof),
        )
        return {
            "ledger": ledger,
            "old": old,
            "new": at,
            "old_root": old_root.hex(),
            "new_root": new_root.hex(),
            "proof": [h.hex() for h in proof],
        }

    def _root_verifying(
        self,
        ledger: str,
        size: int,
        generation: int,
        what: str,
        again: Callable[[], object],
        verify: Callable[[bytes], object],
    ) -> bytes:
        """The root of ``ledger``'s first ``size`` leaves to serve beside a proof of the store's
        tree rows: one a signed root proves (:meth:`_proven_root`), which ``verify(root)`` must
        pass (else the refusal of :meth:`_proving`, for ``what``), or past the largest signed
        root, where nothing proves either yet, the store's own."""
        stored = self._tree(ledger)
        root = self._proven_root(ledger, size, stored, generation)
        if root is None:
            return stored.root(size)
        self._proving(ledger, what, generation, again, functools.partial(verify, root))
        return root

    def _proven_root(self, ledger: str, size: int, stored: StoredTree, generation: int) -> bytes | None:
        """The root of ``ledger``'s first ``size`` leaves as a signed root proves it: the largest
        verified checkpoint's own (:meth:`_served`), or below it the store's root of ``size``
        with the store's consistency proof to it, verified (kept, at most PROVEN_ROOTS: a root of
        a past size never changes); None past it, or with no checkpoint. Raises
        StoreDamagedError when that proof fails: the store's tree rows are not the ledger's."""
        served = self._served(ledger)
        if served is None or size > served.gathered.checkpoint.size:
            return None
        checkpoint = served.gathered.checkpoint
        if size == checkpoint.size:
            return checkpoint.root
        key = (ledger, size)
        kept = self._roots_proven.get(key)
        if kept is not None:
            return kept
        root = stored.root(size)
        self._proving(
            ledger,
            f"its tree's root of size {size} does not lead to the checkpoint of size {checkpoint.size}",
            generation,
            lambda: self._proven_root(ledger, size, self._tree(ledger), self._generation),
            lambda: tree.verify_consistency(
                size, checkpoint.size, root, checkpoint.root, stored.consistency_proof(size, checkpoint.size)
            ),
        )
        with self._voters_lock:
            if generation == self._generation:
                self._roots_proven[key] = root
                if len(self._roots_proven) > PROVEN_ROOTS:
                    del self._roots_proven[next(iter(self._roots_proven))]
        return root

    def tile(self, ledger: str, path: str) -> tuple[bytes, bool]:
        """Hash tile ``path`` (``tile/<L>/<N>[.p/<W>]``) and whether it is proven: a level-0 tile
        is hashed from the store's records, checked as an entry bundle is (:meth:`proven_leaves`);
        a higher one is the store's tree rows, proven as :meth:`_proven_tile` says. Only a proven
        tile is cached, and served from the cache only while the ledger is not refused."""
        level, index, width = tree.parse_tile_path(path)
        self._check_ledger(ledger)  # a refused ledger's cached tiles were served 200 immutable (review r18 5)
        key = (ledger, level, index, width)
        cached = self._tiles.get(key)
        if cached is not None:
            return cached, True
        generation = self._generation  # before the read: a file replaced meanwhile keeps it out
        if level > 0:
            return self._hash_tile(ledger, level, index, width, generation)
        found = self._tree(ledger).tile(level, index, width)
        leaves = [found[i : i + tree.HASH_SIZE] for i in range(0, len(found), tree.HASH_SIZE)]
        if not self.proven_leaves(ledger, index, leaves, generation):
            return found, False
        self._keep_tile(key, found, generation)
        return found, True

    def _keep_tile(self, key: tuple[str, int, int, int], found: bytes, generation: int) -> None:
        with self._voters_lock:
            if generation == self._generation:
                self._tiles[key] = found
                if len(self._tiles) > TILE_CACHE:  # a tile never changes: the oldest goes first
                    del self._tiles[next(iter(self._tiles))]

    def _hash_tile(self, ledger: str, level: int, index: int, width: int, generation: int) -> tuple[bytes, bool]:
        """Tile ``<level>/<index>`` (level 1 and up) of ``width`` hashes, and whether it is proven:
        its hashes that the largest verified checkpoint covers are proven (:meth:`_proven_tile`)
        and served as proven; those past it are the store's, which no signature says yet."""
        self._check_ledger(ledger)
        served = self._served(ledger)
        checkpoint = None if served is None else served.gathered.checkpoint
        signed = 0 if checkpoint is None else tree.tile_width(level, index, checkpoint.size)
        proven = b""
        if signed and checkpoint is not None:
            proven = self._tiles.get((ledger, level, index, signed)) or self._proven_tile(
                ledger, level, index, checkpoint.size, checkpoint.root, generation
            )
            if width <= signed:
                found = proven[: width * tree.HASH_SIZE]
                self._keep_tile((ledger, level, index, width), found, generation)
                return found, True
        found = self._tree(ledger).tile(level, index, width)
        if not found.startswith(proven):
            raise self.contradiction(
                ledger,
                f"its tree's tile {level}/{index} is not the one proven",
                generation,
                index << (tree.TILE_HEIGHT * level),
                lambda: self._hash_tile(ledger, level, index, width, self._generation),
            )
        return found, False

    def _proven_tile(self, ledger: str, level: int, index: int, size: int, root: bytes, generation: int) -> bytes:
        """The hashes of tile ``<level>/<index>`` (level 1 and up) in the tree of ``size`` leaves
        (a verified checkpoint's), as the store's tree rows give them, proven to lead to that
        checkpoint's ``root`` (tree.verify_tile: one inclusion path of its first hash, its
        subtrees computed from the tile's hashes) and kept as a tile of that width. Raises
        StoreDamagedError when they do not: the rows are not the ledger's."""
        stored = self._tree(ledger)
        width = tree.tile_width(level, index, size)
        try:
            found = stored.tile(level, index, width)
            hashes = [found[i : i + tree.HASH_SIZE] for i in range(0, len(found), tree.HASH_SIZE)]
            tree.verify_tile(hashes, level, index, size, root, stored.hash_at)
        except (ProofError, TreeMismatchError) as e:
            raise self.contradiction(
                ledger,
                f"its tree's tile {level}/{index} does not lead to the root of the checkpoint of size {size} ({e})",
                generation,
                index << (tree.TILE_HEIGHT * level),
                lambda: self._proven_tile(ledger, level, index, size, root, self._generation),
            ) from e
        self._keep_tile((ledger, level, index, width), found, generation)
        return found

    def _served(self, ledger: str) -> ServedCheckpoint | None:
        """The checkpoint whose signed root proves records (what is served ``immutable`` and kept
        as proven), or None when there is none (no pinned key, none verified yet); a store that
        contradicts it raises StoreDamagedError. Of a ledger whose genesis pins no standby key,
        the largest verified (any cosignatures: no other home can ever place its records, so its
        home's signature is what proves them); not only the most cosigned one, which can be far
        behind: the tiles between would be served ``no-cache`` for nothing. Of one that may hand
        over, the largest that one of the cluster's witnesses cosigned: a promotion keeps what
        that covers (10.9 step 1), while the records past it that only its home signed are those
        of a home that may be cut off and fenced, and were served immutable (review r18, 2)."""
        try:
            if self._epochs.history(ledger) is not None:
                return self.checkpoint(ledger, 1, own_witnesses=True)
            return self.checkpoint(ledger, 0)
        except StoreDamagedError:
            raise
        except VledgerError:
            return None

    def proven_leaves(self, ledger: str, index: int, leaves: list[bytes], generation: int | None = None) -> bool:
        """Check the first ``len(leaves)`` leaf hashes of tile ``0/index``, as the store's records
        give them now, before anything made of those records is served: the part the served
        checkpoint covers must lead to its root (tree.verify_leaf_tile; the leaves proven are
        kept, and later reads are compared with them, a record changed since included), a full
        tile's leaves beyond it to the store's tree row of the tile. True when all of them are
        proven so, False when some are covered by neither (the newest records, before a
        checkpoint covers them: not to be cached for good). Raises StoreDamagedError on a
        mismatch: a record of that tile is not the one the tree holds."""
        key, first = (ledger, index), index * tree.TILE_WIDTH
        self._check_ledger(ledger)
        # Before the reads (the caller's too): a file replaced meanwhile keeps it out of the caches.
        generation = self._generation if generation is None else generation
        joined = b"".join(leaves)
        proven = self._proven.get(key, b"")
        if len(proven) >= len(joined):
            if proven[: len(joined)] != joined:
                raise self.contradiction(
                    ledger,
                    f"a record of heights {first}..{first + len(leaves) - 1} changed since it was proven",
                    generation,
                    index,
                )
            return True
        served = self._served(ledger)
        stored = self._tree(ledger)
        covered = 0
        if served is not None and served.gathered.checkpoint.size > first:
            checkpoint = served.gathered.checkpoint
            covered = min(tree.TILE_WIDTH, checkpoint.size - first)
            checked = leaves[:covered]
            if len(checked) < covered:  # a bundle narrower than what the checkpoint covers: the rest too
                rest = self.reader.iter_raw(ledger, first + len(checked), first + covered)
                checked += [tree.leaf_hash(d) for _, d in rest]
            try:
                tree.verify_tile(checked, 0, index, checkpoint.size, checkpoint.root, stored.hash_at)
            except (ProofError, TreeMismatchError) as e:
                raise self.contradiction(
                    ledger,
                    f"the records at heights {first}..{first + covered - 1} do not lead to the root of the "
                    f"checkpoint of size {checkpoint.size} ({e})",
                    generation,
                    index,
                ) from e
            self._keep_proven(key, b"".join(checked), generation)
        if len(leaves) <= covered:
            return True
        if len(leaves) < tree.TILE_WIDTH:
            return False
        try:
            row = stored.hash_at(tree.TILE_HEIGHT, index)
        except TreeMismatchError as e:
            raise self.contradiction(ledger, str(e), generation, index) from e
        if tree.subtree_hashes(leaves, tree.TILE_HEIGHT)[0] != row:
            raise self.contradiction(
                ledger,
                f"the records at heights {first}..{first + tree.TILE_WIDTH - 1} do not hash to its tree's row",
                generation,
                index,
            )
        # The row is in the same file as the records: whoever changed a record could change it
        # too (review r16). It finds a damaged store, but only a signed root proves the bytes.
        return False

    def _keep_proven(self, key: tuple[str, int], leaves: bytes, generation: int) -> None:
        with self._voters_lock:
            if generation == self._generation and len(leaves) > len(self._proven.get(key, b"")):
                self._proven.pop(key, None)  # to the newest end: the oldest goes first
                self._proven[key] = leaves
                if len(self._proven) > TILE_CACHE:
                    del self._proven[next(iter(self._proven))]

    def proven_record(self, ledger: str, height: int) -> tuple[Record, bytes]:
        """The record at ``height`` (as :meth:`_record`), checked first (:meth:`check_leaves`):
        a record is served only as the tree holds it."""
        found = self._record(ledger, height)
        self.check_leaves(ledger, height, [tree.leaf_hash(found[1])])
        return found

    def check_leaves(self, ledger: str, start: int, leaves: list[bytes], size: int | None = None) -> None:
        """Check the leaf hashes of the records from ``start`` on, as about to be served, against
        their tiles' proven leaves (:meth:`proven_leaves`, each tile read and proven the first
        time); ``size``: the ledger's, if read already. Raises StoreDamagedError."""
        self._check_ledger(ledger)
        if not leaves:
            return
        generation = self._generation  # the caller's reads may be older: a contradiction then only refuses
        stop = start + len(leaves)
        for index in range(start // tree.TILE_WIDTH, (stop - 1) // tree.TILE_WIDTH + 1):
            first = index * tree.TILE_WIDTH
            low, high = max(start, first), min(stop, first + tree.TILE_WIDTH)
            mine = leaves[low - start : high - start]
            proven = self._proven.get((ledger, index), b"")
            part = slice((low - first) * tree.HASH_SIZE, (high - first) * tree.HASH_SIZE)
            if len(proven) < (high - first) * tree.HASH_SIZE:
                size = self._size(ledger) if size is None else size
                cached = self._unproven.get(ledger)
                if cached is not None and cached[0] == (index, size):
                    proven = b"".join(cached[1])
                    if proven[part] != b"".join(mine):  # a refill, or a record changed in place
                        proven = self._store_tile(ledger, index, size, generation, cached[1])
                else:
                    proven = self._store_tile(ledger, index, size, generation)
            if proven[part] != b"".join(mine):
                raise self.contradiction(
                    ledger, f"a record of heights {low}..{high - 1} is not the one proven", generation, index
                )

    def _store_tile(
        self, ledger: str, index: int, size: int, generation: int, before: list[bytes] | None = None
    ) -> bytes:
        """The leaves of tile ``index`` as the store holds them for a ledger of ``size``: proven
        (:meth:`proven_leaves`), or kept as the newest unproven tile; raises StoreDamagedError.
        ``before``: its unproven leaves read earlier at that size. No signed root proved them, so
        other records now are no damage if they chain on from the first one that differs, each
        sound: a follower cut back past its last signed root and fetched another tail (a
        handover), and was refused as damaged (review17 5). A record changed in place is not so."""
        first = index * tree.TILE_WIDTH
        rows = [data for _, data in self.reader.iter_raw(ledger, first, min(first + tree.TILE_WIDTH, size))]
        tile = [tree.leaf_hash(data) for data in rows]
        changed = next((i for i, (old, new) in enumerate(zip(before or tile, tile, strict=False)) if old != new), None)
        if changed is not None:
            height = first + changed
            try:
                link = self._record(ledger, height - 1)[0].link if height > 0 else b""
                chain = ChainVerifier.after(ledger, height - 1, link, self.genesis_rules(ledger), PROTOCOL_LIMITS)
                for data in rows[changed:]:
                    chain.feed_raw(data)
            except (RecordError, NotFoundError) as e:
                why = f"record {height} of the newest tile changed since it was read ({e})"
                raise self.contradiction(ledger, why, generation, index) from e
        if not self.proven_leaves(ledger, index, tile, generation):
            with self._voters_lock:
                if generation == self._generation:
                    self._unproven[ledger] = ((index, size), tile)
        return b"".join(tile)  # what was just proven, or the store's own, unprovable yet

    def entries(self, ledger: str, path: str) -> tuple[bytes, bool]:
        """Entry bundle ``path`` (``tile/entries/<N>[.p/<W>]``): each record as u16be(length) || bytes,
        and whether they are proven (:meth:`proven_leaves`; StoreDamagedError when they contradict the tree)."""
        if not path.startswith("tile/entries/"):
            raise BadRequestError(f"{path[:100]!r} is not an entry bundle path")
        try:
            _, index, width = tree.parse_tile_path("tile/0/" + path.removeprefix("tile/entries/"))
        except BadRequestError:  # its message would name the hash tile path it was parsed as
            raise BadRequestError(
                f"{path[:100]!r} is not an entry bundle path (tile/entries/<N>[.p/<W>], W 1..255)"
            ) from None
        generation = self._generation  # before the reads
        size = self._size(ledger)
        if tree.tile_width(0, index, size) < width:
            raise TreeSizeError(
                f"ledger {ledger!r}: a tree of {size} leaves has no entry bundle {index} of width {width}"
            )
        first = index * tree.TILE_WIDTH
        parts = []
        leaves = []
        for height, data in self.reader.iter_raw(ledger, first, first + width):
            if len(data) > MAX_ENTRY:
                raise PayloadTooLargeError(
                    f"record {height} of {ledger!r} is {len(data)} bytes, over an entry bundle's {MAX_ENTRY}; "
                    f"read it at /api/ledgers/{ledger}/records/{height}"
                )
            parts.append(struct.pack(">H", len(data)) + data)
            leaves.append(tree.leaf_hash(data))
        return b"".join(parts), self.proven_leaves(ledger, index, leaves, generation)

    def genesis_rules(self, ledger: str) -> LedgerRules:
        """``ledger``'s rules, its genesis checked as section 4 checks a height 0 (raises its error)."""
        genesis, _ = self._record(ledger, 0)
        return ChainVerifier(ledger, PROTOCOL_LIMITS).check(genesis)

    def key_chain(self, ledger: str) -> KeyChain | None:
        """The checkpoint key chain of ``ledger`` (PROTOCOL 13.8): the key its genesis pins and
        each rotation's; None if it pins none. Raises RotationError for a rotation that is none."""
        return self._chains.stored(ledger)

    def outside(self, ledger: str) -> OutsideWitnesses | None:
        """The outside witnesses ``ledger``'s genesis lists (13.9), None if none or unusable."""
        if ledger in self._outside:
            return self._outside[ledger]
        generation = self._generation  # before the read: a file replaced meanwhile keeps it out of the cache
        found: OutsideWitnesses | None = None
        try:
            # One named as a witness of this cluster too: its cosignatures would count as that
            # witness's, which proves the records (checkpoint's ``own``, review r19 4).
            found = outside_witnesses(ledger, self.genesis_rules(ledger).rules, self.config.name)
        except VledgerError as e:  # a chain may hold one (section 4 does not check it): none usable
            log.warning("the genesis of %s lists outside witnesses that cannot be used: %s", ledger, e)
        with self._voters_lock:
            if generation == self._generation:
                self._outside[ledger] = found
        return found

    def checkpoint(self, ledger: str, witnesses: int | None = None, *, own_witnesses: bool = False) -> ServedCheckpoint:
        """The checkpoint served for ``ledger``: among the store's latest signed and cosigned
        checkpoints and the witnesses' notes in Redis, every line checked on its own with the
        pinned key and the cluster's witness keys (forged lines dropped), the one with the most
        cosignatures, the largest of those (of a ledger whose genesis lists outside witnesses,
        among those a quorum of them cosigned when there is one); with ``witnesses``, the largest
        with at least that many, so too (``own_witnesses``: of the cluster's own witnesses, not
        the outside ones, 13.9, which do not say that their store holds the records).

        Raises NotFoundError when the ledger pins no checkpoint key or no checkpoint verifies
        (yet), NoSuchLedgerError for a ledger this store does not hold.
        """
        self._check_ledger(ledger)
        cached = self._checkpoints.get((ledger, witnesses, own_witnesses))
        if cached is not None and time.monotonic() - cached[0] < CHECKPOINT_SECONDS:
            return cached[1]
        generation = self._generation  # before the reads: a file replaced meanwhile keeps it out of the cache
        store_size = self._size(ledger)
        chain = self.key_chain(ledger)
        if chain is None:
            raise NotFoundError(f"the genesis of {ledger!r} pins no checkpoint key: it has no checkpoints to serve")
        outside = self.outside(ledger)
        notes = [note for _, note in self.reader.latest_checkpoints(ledger)]
        try:
            replication = ReplicationLedger(self._redis(), raisers=sorted(self.config.nodes))
            notes.extend(replication.cosignatures(ledger).values())
            if outside is not None:
                notes.extend(replication.outside_cosignatures(ledger).values())
        except (redis.RedisError, OSError) as e:  # the store's own notes are still served
            now = time.monotonic()
            if now - self._redis_warned.get(ledger, -REDIS_WARN_SECONDS) >= REDIS_WARN_SECONDS:
                self._redis_warned[ledger] = now
                log.warning("checkpoint of %s: Redis unavailable (%s); serving what the store holds", ledger, e)
        # Each note with the key in force at its size only (13.8); the origin is the keys' name.
        # A witness whose key rotated: its keys in force now too (16.6), proven on the admin ledger.
        node_keys, histories = self.node_keys()
        rotated = witness_keys_in_force(self.config.name, histories, histories, time.time_ns() // 1_000_000)
        trusted = (*self.witness_keys.values(), *rotated, *(outside.keys if outside is not None else ()))
        # A ledger that may hand over: each note by the epochs its records open (10.9), so
        # that a promoted standby's are served and a fenced home's are not.
        epochs = self._epochs.history(ledger)
        # A rotated witness's replaced keys (its key file's among them) only as 16.6 allows.
        counts = cosignatures_in_force(self.config.name, histories)
        if epochs is not None:
            gathered = gather_in_epochs(notes, epochs, trusted, counts)
        else:
            gathered = [
                g
                for key in chain.keys
                for g in gather(notes, key, chain.origin, trusted, counts)
                if chain.key_for_size(g.checkpoint.size) == key
            ]
            gathered.sort(key=lambda g: (g.checkpoint.size, len(g.witnesses)), reverse=True)
        # Only what this store holds: a checkpoint past it (the witnesses' in Redis, while this
        # node lags) was answered "no checkpoint yet" although the store's own verified one was there.
        gathered = [g for g in gathered if g.checkpoint.size <= store_size]
        own = {key.name for key in (*self.witness_keys.values(), *rotated)}
        # The epoch rule (13.5 step 3): a checkpoint of an epoch from 2 counts for a reader only
        # with a cluster witness's line, never an outside one's alone (outsider o24 F0, F5):
        # serving one without would answer every receipt and page check no_quorum.
        gathered = [g for g in gathered if meets_epoch_rule(g.checkpoint, g.witnesses, own)]

        def counted(g: GatheredCheckpoint) -> int:
            return sum(w in own for w in g.witnesses) if own_witnesses else len(g.witnesses)

        # A ledger whose genesis lists outside witnesses: readers count their quorum (13.9), so
        # the checkpoint they cosigned is served while one of them lags behind the others (each
        # then carries lines of a size the other did not cosign: outsider o20 F1).
        listed = {key.name for key in outside.keys} if outside is not None else set()
        needed = outside.quorum if outside is not None else 0
        quorum = [g for g in gathered if needed and len(listed.intersection(g.witnesses)) >= needed]
        if witnesses is None:
            best = max(quorum or gathered, key=lambda g: (len(g.witnesses), g.checkpoint.size), default=None)
        else:
            enough = [g for g in quorum if counted(g) >= witnesses]
            best = next((g for g in enough or gathered if counted(g) >= witnesses), None)
        if best is None:
            more = "" if witnesses is None else f" with {witnesses} cosignatures"
            raise NotFoundError(f"no checkpoint of {ledger!r}{more} on {self.node.name} yet")
        if witnesses is None:  # the gauges are the served checkpoint's, not a quorum's asked for
            self.metrics.saw(ledger, best.checkpoint.size, store_size, len(best.witnesses))
        size = best.checkpoint.size
        stored = self._tree(ledger)
        # Its last tile is kept as proven only under a checkpoint that proves records (_served).
        proves = epochs is None or any(w in own for w in best.witnesses)
        self._check_root(ledger, best.checkpoint.size, best.checkpoint.root, proves)
        rotations = tuple(
            RotationProof(h, self._record(ledger, h)[1], tuple(stored.inclusion_proof(h, size)))
            for h in chain.heights
            if h < size
        )
        for rotation in rotations:  # the store's record and tree rows: a client would refuse the key they prove
            self._proving(
                ledger,
                f"its rotation record {rotation.index} and tree do not lead to the checkpoint of size {size}",
                generation,
                functools.partial(self.checkpoint, ledger, witnesses, own_witnesses=own_witnesses),
                functools.partial(
                    tree.verify_inclusion,
                    tree.leaf_hash(rotation.record),
                    rotation.index,
                    size,
                    rotation.proof,
                    best.checkpoint.root,
                ),
            )
        shown = dict(self.witness_keys)
        for node, history in histories.items():
            if node in shown:
                shown[node] = witness_key(shown[node].name, bytes.fromhex(history.newest.sign))
        # The key of the checkpoint's epoch (a history is kept only of a genesis that pins both keys).
        log_key = (epochs.epoch_at(size).key if epochs is not None else None) or chain.key_for_size(size)
        served = ServedCheckpoint(
            ledger, best, log_key, shown, outside, rotations, node_keys, self.config.replication.recosign_interval_ms
        )
        with self._voters_lock:
            if generation == self._generation:
                self._checkpoints[(ledger, witnesses, own_witnesses)] = (time.monotonic(), served)
        self._check_flagged(ledger)
        return served

    def _check_flagged(self, ledger: str) -> None:
        """Prove the tiles of the heights an open alert names of this node's copy of ``ledger``
        (bad_checksum, store_contradicts_checkpoint, ...: DAMAGE_ALERTS), once a served checkpoint
        is read: the node or the verifier found a record there damaged, and the gateway must not
        serve the checkpoint, the root or the verdict while a request for another tile has not
        found it yet (outsider o10). An alert is only a hint, whoever raised it: what is refused is
        what the check finds (raises StoreDamagedError), and once repaired the tile proves again."""
        now = time.monotonic()
        if self._flagged is None or now - self._flagged[0] >= CHECKPOINT_SECONDS:
            flagged: dict[str, set[int]] = {}
            try:
                alerts = ReplicationLedger(self._redis(), raisers=sorted(self.config.nodes)).open_entries()
            except (redis.RedisError, OSError):
                alerts = []  # the store's own checks still hold
            for alert in alerts:  # every raiser's: one raiser's alert of a key hides no other's height
                node, _, named = alert["key"].partition("|")
                what = named.rpartition("|")[2]
                at = str(alert.get("height", ""))
                if node == self.node.name and what in DAMAGE_ALERTS and at.isascii() and at.isdigit():
                    flagged.setdefault(alert.get("ledger", ""), set()).add(int(at))
            self._flagged = (now, flagged)
        for height in sorted(self._flagged[1].get(ledger, ())):
            data = self.reader.get(ledger, height)
            if data is not None:
                self.check_leaves(ledger, height, [tree.leaf_hash(data)])

    def _check_root(self, ledger: str, size: int, root: bytes, proves: bool = True) -> None:
        """Raise StoreDamagedError unless the store's tree at ``size`` leads to ``root`` (a served
        checkpoint's): its last tile's records, with the tree rows left of them, must (proofs,
        receipts and roots from it would lead elsewhere). Once a checkpoint; the tile is then
        proven, if the checkpoint ``proves`` records for good (:meth:`_served`)."""
        if (size, root) in self._roots_checked.get(ledger, ()) or size == 0:
            return
        generation = self._generation
        index = (size - 1) // tree.TILE_WIDTH
        first = index * tree.TILE_WIDTH
        leaves = [tree.leaf_hash(d) for _, d in self.reader.iter_raw(ledger, first, size)]
        try:
            tree.verify_tile(leaves, 0, index, size, root, self._tree(ledger).hash_at)
        except (ProofError, TreeMismatchError) as e:
            raise self.contradiction(
                ledger,
                f"its records and tree do not lead to the root of the checkpoint of size {size} ({e})",
                generation,
                index,
            ) from e
        with self._voters_lock:
            if generation == self._generation:
                kept = self._roots_checked.setdefault(ledger, [])
                kept.append((size, root))
                del kept[:-ROOTS_KEPT]
        if proves:
            self._keep_proven((ledger, index), b"".join(leaves), generation)

    def receipt(self, ledger: str, height: int, served: ServedCheckpoint | None = None) -> Receipt:
        """The receipt (PROTOCOL 14) of the record at ``height`` under the served checkpoint.

        Raises NotFoundError when no served checkpoint covers that height yet (or no record is there).
        """
        served = served or self.checkpoint(ledger)
        size = served.gathered.checkpoint.size
        _, data = self.proven_record(ledger, height)
        if height >= size:
            raise NotFoundError(
                f"record {height} of {ledger!r} is not covered by the latest checkpoint (size {size}) yet"
            )
        generation = self._generation  # before the reads
        proof = self._tree(ledger).inclusion_proof(height, size)
        self._proving(  # the store's tree rows: a receipt that does not verify is never handed out
            ledger,
            f"its tree's inclusion proof of record {height} in the checkpoint of size {size} is wrong",
            generation,
            functools.partial(self.receipt, ledger, height),
            functools.partial(
                tree.verify_inclusion, tree.leaf_hash(data), height, size, proof, served.gathered.checkpoint.root
            ),
        )
        return Receipt.of(data, proof, served.gathered.note, served.rotations, served.node_keys)

    def node_keys(self) -> tuple[NodeKeys | None, dict[str, KeyHistory]]:
        """The followers' rotated Ed25519 keys (PROTOCOL 16.6), by node: proven by this store's copy
        of the admin ledger under the largest of its checkpoints (the store's and the witnesses'
        in Redis) that verifies with the admin ledger's key (its home's key file), with that
        evidence for receipts; none before the first rotation. Read again at most once per
        CHECKPOINT_SECONDS."""
        cached = self._node_keys
        if cached is not None and time.monotonic() - cached[0] < CHECKPOINT_SECONDS:
            return cached[1], cached[2]
        generation = self._generation  # before the reads: a file replaced meanwhile keeps them out of the cache
        evidence: NodeKeys | None = None
        histories: dict[str, KeyHistory] = {}
        if self._admin_key is not None and ADMIN_LEDGER in self.reader.ledgers():
            records = [data for _, data in self.reader.iter_raw(ADMIN_LEDGER, 0, self.reader.size(ADMIN_LEDGER))]
            notes = [note for _, note in self.reader.latest_checkpoints(ADMIN_LEDGER)]
            try:
                replication = ReplicationLedger(self._redis(), raisers=sorted(self.config.nodes))
                notes.extend(replication.cosignatures(ADMIN_LEDGER).values())
            except (redis.RedisError, OSError) as e:
                log.warning("the admin ledger's cosigned checkpoints: Redis unavailable (%s)", e)
            evidence, rotations = follow_copy(records, notes, self._admin_key, self.witness_keys)
            histories = witness_histories_of(self.witness_keys, rotations)
        with self._voters_lock:
            if generation == self._generation:
                self._node_keys = (time.monotonic(), evidence, histories)
        return evidence, histories

    def voter(self, ledger: str, eid: str) -> dict[str, Any]:
        """The records naming ``eid``, each with its receipt under the served checkpoint (a
        record the checkpoint does not cover yet is listed with ``"receipt": null``)."""
        generation = self._generation  # before the reads: a file replaced meanwhile keeps them out of the index
        served = self.checkpoint(ledger)
        size = served.gathered.checkpoint.size
        newest = self._size(ledger)
        reader = self.reader  # outside the lock: opening a reader takes it
        with self._voters_lock:
            # Of another generation, the records are indexed for this answer alone.
            index = self._voters.setdefault(ledger, VoterIndex()) if generation == self._generation else VoterIndex()
            # Up to the store's head, not the served checkpoint's size: the most cosigned checkpoint
            # may be older than a voter's registration, which is still listed (without a receipt).
            for _, data in reader.iter_raw(ledger, index.next_height, newest):
                index.feed(decode_record(data, PROTOCOL_LIMITS))
            heights = [h for h in index.heights.get(eid, []) if h < newest]
        if not heights:
            raise NotFoundError(f"no record names the electronic id {eid} in {ledger!r}")
        records = []
        for height in heights:
            record, data = self.proven_record(ledger, height)
            shown = record_json(record, data)
            shown["receipt"] = self.receipt(ledger, height, served).encode().decode("utf-8") if height < size else None
            records.append(shown)
        return {"ledger": ledger, "electronic_id": eid, "checkpoint": served.json(), "records": records}

    def heads(self) -> dict[str, int]:
        return {ledger: self.reader.size(ledger) for ledger in self.reader.ledgers()}

    # --- Redis: tallies and the cluster's state -------------------------------------------------------

    def _redis(self) -> Any:
        if self.redis is None:
            # As the read-only gateway user (broker/redis_acl.py): what faces the internet
            # cannot change what it shows.
            self.redis = connect(self.config.redis_access("gateway"), timeout=2.0)
        return self.redis

    def _tally_report(self, ledger: str) -> tuple[TallyReport, dict[str, KeyHistory]]:
        """The observers' signed tallies of ``ledger`` as read at most CHECKPOINT_SECONDS ago: each
        read takes up to 4 MiB an observer from Redis (its latest entry, then each page back for a
        common height) and checks every signature, and anyone may
        ask /tally or /funds as fast as they like (outsider o6 H9: 0.5 s of the gateway's CPU an
        anonymous request). The verdict is judged anew each time (_judged)."""
        # Its user calls no function (broker/redis_acl.py): each read stops at the bytes tally_read takes.
        board = TallyBoard(self._redis(), stream_max_len=self.config.observers.tally_stream_max_len, scripts=False)
        histories = self.node_keys()[1]  # an observer whose key rotated (16.6)
        at = time.monotonic()
        # What the report was read under: a new entry (or a latest id moved back) reads it anew at once.
        under = (tuple(sorted(board.latest_ids([ledger], self.observer_keys)[ledger].items())), id(histories))
        cached = self._tally_reports.get(ledger)
        if cached is not None and cached[1] == under and at - cached[0] < CHECKPOINT_SECONDS:
            return cached[2], histories
        # Back at most LOOK_PAGES small pages an observer, as the verifier's look: with no common
        # height near the streams' heads (one observer long behind), each request read every page.
        report = read_tallies(board, ledger, self.observer_keys, histories, pages=LOOK_PAGES, page=LOOK_PAGE)
        if all(t.checked is None for t in report.observers) and ledger not in self.reader.ledgers():
            raise NoSuchLedgerError(f"no ledger {ledger!r} on {self.node.name}")
        # A verifier's recount that contradicts an observer's tally makes the verdict a mismatch
        # while its alert is open (o21 F4: one observer's stolen key published invented balances,
        # and with one observer nothing compared them). Read with the report: cached as long.
        report = with_recounts(report, open_recounts(self._redis(), self.config, ledger))
        if len(self._tally_reports) > len(self.reader.ledgers()):
            self._tally_reports.clear()  # ledgers gone: never more entries than there are ledgers
        self._tally_reports[ledger] = (at, under, report)
        return report, histories

    def tally(self, ledger: str) -> dict[str, Any]:
        report, histories = self._tally_report(ledger)
        report = self._judged(ledger, report)
        shown = tally_json(report, self.observer_keys, histories)
        for entry, t in zip(shown["observers"], report.observers, strict=True):
            snapshot = None if t.checked is None else t.checked.snapshot
            entry["head_ok"] = None if snapshot is None else self._head_ok(ledger, snapshot)
            entry["stale"] = t.observer in report.stale
            entry["ahead"] = t.observer in report.ahead
        return shown

    def _judged(self, ledger: str, report: TallyReport) -> TallyReport:
        """``report`` judged against the checkpoint this gateway serves, read after the tallies,
        as `vledger tally` judges against the ledger's head (PROTOCOL 11.4, its default
        --stale-after, this host's clock): observers agreeing at a height the checkpoint left
        behind were answered "agree" while the command said STALE (outsider21 F3, F9)."""
        try:
            served = self.checkpoint(ledger)
            gathered = served.gathered
            head = LedgerHead(
                gathered.checkpoint.size,
                served.log_key.name,
                since_ms=gathered.since_ms,
                fresh_ms=gathered.fresh_ms,
                needed=needed_witnesses(gathered.trusted),
            )
        except StoreDamagedError:  # a store contradicting the checkpoint judges nothing: refused, not "agree"
            raise
        except VledgerError as e:  # none served (yet): nobody is judged, as the command does
            head = LedgerHead(None, problem=e.message)
        now = time.time_ns() // 1_000_000
        return replace(
            report,
            head=head,
            stale=stale_observers(report.observers, head, now),
            ahead=ahead_observers(report.observers, head),
            behind=agreement_behind(report.verdict, report.compared, report.observers, head, now),
            head_stale=head_stale(head, now, recosign_ms=self.config.replication.recosign_interval_ms),
        )

    def _head_ok(self, ledger: str, snapshot: Snapshot) -> bool | None:
        """Whether ``snapshot``'s head is the hash of the record at its height in this store (None:
        the store does not hold that height yet): a signature says only who signed a body, and
        one observer's key can sign any height and head."""
        data = self.reader.get(ledger, snapshot.height)
        if data is None:
            return None
        return decode_record(data, PROTOCOL_LIMITS).link == snapshot.head

    def funds(self, ledger: str) -> dict[str, Any]:
        # The genesis says first what the ledger is: without it an election with no verified tally
        # yet was answered as a charity whose funds are not counted yet.
        declared = self.genesis_rules(ledger).rules.get("type")
        if declared != "charity":
            raise BadRequestError(f"{ledger!r} is not a charity ledger: its genesis type is {declared!r}")
        report, _ = self._tally_report(ledger)
        report = self._judged(ledger, report)
        verdict = verdict_json(report)
        # The observers' agreement when there is one; while they are still counting, the newest
        # body; when they disagree, none: either only when its head is the record at its height
        # in this store. "The newest body" alone let one observer's key publish any balance at a
        # height no record has (outsider19 F1), or, signing a body unlike the others' at every
        # height they sign, keep them from agreeing and have its own shown (reviewer r4 3).
        candidates: list[Snapshot] = []
        if report.verdict.status == AGREE:
            candidates = list(report.compared.values())[:1]
        elif report.verdict.status != MISMATCH:
            candidates = sorted(
                (t.checked.snapshot for t in report.observers if t.checked is not None and t.checked.snapshot),
                key=lambda s: s.height,
                reverse=True,
            )
        shown = next((s for s in candidates if self._head_ok(ledger, s)), None)
        if shown is None:
            return {"ledger": ledger, "funds": None, "verdict": verdict}
        if shown.tally.get("type") != "charity":
            raise BadRequestError(f"{ledger!r} is not a charity ledger: its type is {shown.tally.get('type')!r}")
        return funds_json(ledger, jsonable(shown.tally), shown.height, verdict)

    def tally_heads(self) -> dict[str, dict[str, str]]:
        """Each ledger's latest tally entry ids, by configured observer (what changes when one signs anew)."""
        # No MULTI/EXEC: the gateway's Redis user reads only (broker/redis_acl.py), and a MULTI
        # would span the ledgers' slots; one round trip all the same.
        return TallyBoard(self._redis()).latest_ids(self.reader.ledgers(), self.observer_keys)

    def cluster_state(self) -> dict[str, Any]:
        """Heights, alerts and logs (Redis and files); the nodes' health is probed by the caller."""
        # Every configured node's alerts (the gateway's user may not SCAN for them).
        replication = ReplicationLedger(self._redis(), raisers=sorted(self.config.nodes))
        try:
            ledgers = sorted(self._genesis_backed(replication.ledgers()))
        except redis.exceptions.ResponseError as e:
            if not wrong_type(e):
                raise
            # The admin's user can SET it, until a home replaces it: the ledgers this replica holds.
            log.warning("Redis key %s is of another type (%s): the ledgers of this copy are shown",
                        replication.ledgers_key, e)  # fmt: skip
            ledgers = sorted(self.reader.ledgers())
        held = {ledger: replication.held(ledger) for ledger in ledgers}
        alerts = [numbered(entry) for entry in replication.open_entries()]
        return {
            "cluster": self.config.name,
            "ledgers": {ledger: {**self.home(ledger), "held": held[ledger]} for ledger in ledgers},
            "alerts": alerts,
            "logs": {name: self._log_tail(name) for name in sorted(self.config.nodes)},
        }

    def _genesis_backed(self, announced: Iterable[str]) -> list[str]:
        """Of the ledgers Redis's ``{ledgers}`` names, those this gateway's copy holds a genesis
        of (its node verified it as it followed the home): any ingest node's Redis user may add
        a field there, and ``ghost`` was listed to the public (outsider43 M1). With the copy
        unreadable (damaged: its answers say so), Redis's names (ledger names only) as before."""
        try:
            held = set(self.reader.ledgers())
        except Exception as e:
            if self.note_damaged(e) is None:
                raise
            return list(announced)
        return [ledger for ledger in announced if ledger in held]

    def _log_tail(self, program: str) -> list[str]:
        """The last lines of ``<logs>/<program>.log``; ``program`` is a node name of the configuration."""
        if self.logs_dir is None:
            return []
        path = self.logs_dir / f"{program}.log"
        try:
            with path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - LOG_TAIL_BYTES))
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []
        return lines[-LOG_LINES:]


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header accepts gzip (RFC 9110 12.5.3): ``gzip`` (or ``x-gzip``)
    listed with a weight above 0, or, with neither listed, ``*`` so. An entry bundle is gzip
    or identity only (PROTOCOL 15.1): a client written from that page reads no other coding."""
    weights: dict[str, float] = {}
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.partition(";")
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                weight = float(value) if QVALUE.fullmatch(value) else 0.0
        weights.setdefault(coding.strip(), weight)
    listed = [weights[c] for c in ("gzip", "x-gzip") if c in weights]
    if listed:
        return max(listed) > 0
    return weights.get("*", 0.0) > 0


AMOUNT_KEYS = ("donated", "disbursed", "balance")


def funds_json(ledger: str, tally: dict[str, Any], height: int, verdict: Any) -> dict[str, Any]:
    """A charity tally's funds with its amounts as decimal strings of its currency's units, by the
    currency's ISO 4217 exponent (``"decimals"``; None for a code without one, whose amounts stay
    whole minor units: node/currency.py)."""
    currency = tally.get("currency")
    funds = {
        name: {key: amount_text(v, currency) if key in AMOUNT_KEYS else v for key, v in fund.items()}
        for name, fund in tally.get("funds", {}).items()
    }
    return {
        "ledger": ledger,
        "currency": currency,
        "decimals": minor_unit_digits(currency),
        "funds": funds,
        **{key: amount_text(tally.get(key, 0), currency) for key in AMOUNT_KEYS},
        "height": height,
        "verdict": verdict,
    }


def tally_json(
    report: TallyReport, keys: dict[str, Any], histories: dict[str, KeyHistory] | None = None
) -> dict[str, Any]:
    """Each observer's latest signed tally: the bytes signed, the signature, the key (its newest
    generation's once it rotated), and what they say."""
    observers = []
    for t in report.observers:
        key = keys.get(t.observer)
        history = (histories or {}).get(t.observer)
        public = history.newest.sign if history is not None else None if key is None else key.public_hex
        entry: dict[str, Any] = {"observer": t.observer, "public_key": public}
        checked = t.checked
        entry |= {
            "signature_ok": checked is not None and checked.ok,
            "body": None if checked is None else checked.published.body.hex(),
            "signature": None if checked is None else checked.published.signature.hex(),
            "error": None
            if checked is None or checked.problem is None
            else {"code": checked.problem.code, "message": checked.problem.message},
            "snapshot": None if checked is None or checked.snapshot is None else snapshot_fields(checked.snapshot),
        }
        observers.append(entry)
    return {"ledger": report.ledger, "observers": observers, "verdict": verdict_json(report)}


STALE = "stale"  # the gateway's verdict on a count the ledger's checkpoint left behind (PROTOCOL 15.2)

# What of an open alert /api/cluster shows the public (PROTOCOL 15.2): its code, node, ledger and
# height as names and a number, never its raiser's sentences. Any node's Redis user writes its own
# alerts' fields as it likes; a name holds no sentence and no address with a scheme.
PUBLIC_ALERT_FIELDS = ("id", "what", "node", "ledger", "height", "raised_by", "at_ms")
_ALERT_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_ALERT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ALERT_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
UNNAMED = "?"  # a field that is no code, name or number, as the public sees it


def public_alert(entry: Mapping[str, Any]) -> dict[str, Any]:
    """``entry`` (an open alert, as ``numbered``) as the public sees it: PUBLIC_ALERT_FIELDS only,
    each a code, a name or a number, else UNNAMED (its ``raised_by`` is where Redis keeps it)."""
    shown: dict[str, Any] = {}
    for name in PUBLIC_ALERT_FIELDS:
        value = entry.get(name)
        if name in ("height", "at_ms"):
            shown[name] = value if type(value) is int else None
        elif name == "raised_by":
            shown[name] = (
                value if value is None or (isinstance(value, str) and _ALERT_NAME.fullmatch(value)) else UNNAMED
            )
        else:
            pattern = {"what": _ALERT_CODE, "id": _ALERT_ID}.get(name, _ALERT_NAME)
            ok = isinstance(value, str) and (value == "" or pattern.fullmatch(value))
            shown[name] = value if ok else UNNAMED
    return shown


def verdict_json(report: TallyReport) -> dict[str, Any]:
    """The observers' verdict (11.4's comparison) with what `vledger tally` says of it against the
    checkpoint served (``report.head``): ``"stale"`` for an agreement or a count still going on
    while an observer is stale or the agreement is behind (the command exits 4), the height and
    differing observers kept; the stale and ahead observers named, whether the agreement is behind."""
    shown = report.verdict.json()
    if shown["status"] in (AGREE, STILL_COUNTING) and (report.stale or report.behind or report.head_stale):
        shown["status"] = STALE
    head = report.head
    return shown | {
        "checkpoint_size": None if head is None else head.size,
        "stale": list(report.stale),
        "ahead": list(report.ahead),
        "behind": report.behind,
        "fresh_ms": None if head is None else head.fresh_ms,
        "head_stale": report.head_stale,
    }


# --- HTTP --------------------------------------------------------------------------------------------


# The query parameters each /api route reads (PROTOCOL 15.2); every other /api route reads none.
API_QUERY: dict[str, frozenset[str]] = {
    "/api/ledgers/{ledger}/records": frozenset({"start", "limit"}),
    "/api/ledgers/{ledger}/checkpoint": frozenset({"witnesses"}),
    "/api/ledgers/{ledger}/proof/inclusion": frozenset({"index", "size"}),
    "/api/ledgers/{ledger}/proof/consistency": frozenset({"old", "new"}),
}


# The files the static route serves: read once, as the pages are (they do not change under a running gateway).
STATIC_FILES = frozenset(p.name for p in (WEB_DIR / "static").iterdir() if p.is_file())


@web.middleware
async def _query_once(request: web.Request, handler: Any) -> web.StreamResponse:
    """Refuse a query that names a parameter twice (bad_request): the routes read the first of
    them, so ``?index=0&index=1`` would be answered for 0 while a cache or a log sees both.
    Refuse one an /api route does not read, too: ``checkpoint?witness=5`` (for ``witnesses``)
    was answered with the latest checkpoint, whatever its cosignatures, and no error; a misspelt
    option is never done without, as on the CURVE side (PROTOCOL 6.1). The pages read their own
    query in the browser, so only /api routes are held to it. And a static path must name one of
    the static files: aiohttp's static route served ``/static/vledger.js/`` as the file, and
    answered a missing one 404 with an empty body and no Cache-Control (a cache may keep it,
    RFC 9111 4.2.2), which PROTOCOL 15 promises as a JSON refusal, never cached."""
    repeated = sorted({key for key in request.query if len(request.query.getall(key)) > 1})
    if repeated:
        raise BadRequestError(f"query parameter {repeated[0][:40]!r} given more than once")
    resource = request.match_info.route.resource
    if request.path.startswith("/api/") and request.query and resource is not None:  # no route: its 404 first
        allowed = API_QUERY.get(resource.canonical, frozenset())
        unknown = sorted(key for key in request.query if key not in allowed)
        if unknown:
            takes = f"it takes {', '.join(sorted(allowed))}" if allowed else "it takes none"
            raise BadRequestError(f"query parameter {unknown[0][:40]!r} is not one this route reads: {takes}")
    static = request.path.startswith("/static/")
    if static and request.path.removeprefix("/static/") not in STATIC_FILES:
        raise web.HTTPNotFound()
    response: web.StreamResponse = await handler(request)
    if static:  # as every answer (15.2): a cache asks again, and a new release's files are seen
        response.headers["Cache-Control"] = "no-cache"
    return response


def build_app(gateway: Gateway, checks: dict[str, Callable[[], str | None]] | None = None) -> web.Application:
    """The gateway's aiohttp application (routes in the module's docstring)."""
    app = web.Application(
        middlewares=[_public_cors, _counted(gateway.metrics), json_errors, _noting_damage(gateway), _query_once]
    )
    r = app.router

    async def in_thread(call: Callable[[], Any]) -> Any:
        # SQLite and Redis block: off the event loop, which keeps serving the other requests.
        return await asyncio.get_running_loop().run_in_executor(None, call)

    rendered = {name: render(name) for name in PAGES}  # once: the files do not change under a running gateway
    guarded = {name: security_headers(body) for name, body in rendered.items()}

    async def page(request: web.Request) -> web.Response:
        name = request.match_info.get("page", "index")
        if name not in rendered:
            raise NotFoundError(f"no page {name[:60]!r}")
        return web.Response(
            body=rendered[name],
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-cache", **guarded[name]},
        )

    async def ledgers(_: web.Request) -> web.Response:
        return json_response({"node": gateway.node.name, "ledgers": await in_thread(gateway.ledgers)})

    async def ledger_info(request: web.Request) -> web.Response:
        ledger = _ledger(request)
        return json_response(await in_thread(lambda: gateway.ledger_info(ledger)))

    async def records(request: web.Request) -> web.Response:
        ledger = _ledger(request)
        start = _int(request.query.get("start"), "start", 0)
        limit = _int(request.query.get("limit"), "limit", 100, maximum=MAX_PAGE)
        if limit == 0:
            raise BadRequestError(f"limit must be 1..{MAX_PAGE}")
        page = await in_thread(lambda: gateway.record_page(ledger, start, limit))
        return web.Response(
            body=page, content_type="application/json", charset="utf-8", headers={"Cache-Control": "no-cache"}
        )

    async def record(request: web.Request) -> web.Response:
        ledger = _ledger(request)
        height = _int(request.match_info["height"], "height")
        found, data = await in_thread(lambda: gateway.proven_record(ledger, height))
        return json_response(record_json(found, data))

    async def by_hash(request: web.Request) -> web.Response:
        text = request.match_info["hash"]
        if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
            raise BadRequestError("a record hash is 64 lower-case hex characters")
        return json_response(await in_thread(lambda: gateway.by_hash(bytes.fromhex(text))))

    async def inclusion(request: web.Request) -> web.Response:
        ledger = _ledger(request)
        index = _int(request.query.get("index"), "index")
        size = _int(request.query.get("size"), "size", -1)
        answer = await in_thread(lambda: gateway.inclusion(ledger, index, None if size < 0 else size))
        return json_response(answer)

    async def consistency(request: web.Request) -> web.Response:
        ledger = _ledger(request)
        old = _int(request.query.get("old"), "old")
        new = _int(request.query.get("new"), "new", -1)
        return json_response(await in_thread(lambda: gateway.consistency(ledger, old, None if new < 0 else new)))

    async def tile(request: web.Request) -> web.Response:
        ledger = _ledger(request)
        path = request.match_info["path"]
        if "%" in request.raw_path:
            # aiohttp decodes %2F to "/" before routing: tile/0%2F000 would be served as tile/0/000,
            # a second name for an immutable object. A tile has one spelling (PROTOCOL 12.6).
            raise BadRequestError(f"{request.raw_path[:100]!r}: a tile path is spelt without percent-escapes")
        if path.startswith("tile/entries/"):
            body, proven = await in_thread(lambda: gateway.entries(ledger, path))
            response = web.Response(body=body, content_type="application/octet-stream")
            # Gzip or not by the client's Accept-Encoding, never another coding: aiohttp's own
            # choice served deflate to "deflate, gzip" and gzip to "gzip;q=0". Under an immutable
            # public cache header: without Vary a shared cache would hand gzip bytes to a client
            # that did not ask.
            if accepts_gzip(request.headers.get("Accept-Encoding", "")):
                response.enable_compression(web.ContentCoding.gzip)
            response.headers["Vary"] = "Accept-Encoding"
        else:
            body, proven = await in_thread(lambda: gateway.tile(ledger, path))
            response = web.Response(body=body, content_type="application/octet-stream")
        # Immutable only once proven (Gateway.proven_leaves): the newest records, which no
        # checkpoint covers yet, would else be kept a year by any cache, whatever they turn out to be.
        response.headers["Cache-Control"] = IMMUTABLE if proven else "no-cache"
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    async def checkpoint_text(request: web.Request) -> web.Response:
        ledger = _ledger(request)
        served = await in_thread(lambda: gateway.checkpoint(ledger))
        response = web.Response(body=served.gathered.note, content_type="text/plain", charset="utf-8")
        response.headers["Cache-Control"] = CHECKPOINT_CACHE
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    async def checkpoint_json(request: web.Request) -> web.Response:
        ledger = _ledger(request)
        witnesses = request.query.get("witnesses")
        wanted = None
        if witnesses is not None:  # the outside witnesses the genesis lists are counted too (11.4)
            outside = await in_thread(lambda: gateway.outside(ledger))
            listed = len(outside.keys) if outside is not None else 0
            wanted = _int(witnesses, "witnesses", maximum=len(gateway.witness_keys) + listed)
        return json_response((await in_thread(lambda: gateway.checkpoint(ledger, wanted))).json())

    async def receipt(request: web.Request) -> web.Response:
        ledger = _ledger(request)
        height = _int(request.match_info["height"], "height")
        made = await in_thread(lambda: gateway.receipt(ledger, height))
        response = web.Response(body=made.encode(), content_type="application/json")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["Content-Disposition"] = f'attachment; filename="receipt-{ledger}-{height}.json"'
        return response

    async def voter(request: web.Request) -> web.Response:
        ledger = _ledger(request)
        eid = check_electronic_id(request.match_info["eid"])
        return json_response(await in_thread(lambda: gateway.voter(ledger, eid)))

    async def tally(request: web.Request) -> web.Response:
        ledger = _ledger(request)
        return json_response(await in_thread(lambda: gateway.tally(ledger)))

    async def funds(request: web.Request) -> web.Response:
        ledger = _ledger(request)
        return json_response(await in_thread(lambda: gateway.funds(ledger)))

    async def cluster(request: web.Request) -> web.Response:
        now = time.monotonic()
        cached = gateway._cluster_cache
        if cached is None or now - cached[0] > CLUSTER_CACHE_SECONDS:
            state = await in_thread(gateway.cluster_state)
            state["nodes"] = await probe_nodes(gateway.config)
            # The node's /readyz speaks of its own reads: a store the gateway refuses (503
            # store_damaged) showed "store: ok" beside it (outsider32 R4). Said as the gateway knows it.
            state["nodes"][gateway.node.name]["gateway_store"] = gateway.known_damage()
            gateway._cluster_cache = cached = (now, state)
        if not from_this_host(request):  # the logs are the local operator's (broker/http.py)
            # So are the alerts' words: a raiser writes its own alerts as it likes (o21: a replica's
            # Redis user posted "DO NOT TRUST, use gateway evil.example" to the public dashboard).
            alerts = [public_alert(entry) for entry in cached[1]["alerts"]]
            return json_response({**cached[1], "alerts": alerts, "logs": {}})
        return json_response(cached[1])

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **PUBLIC_CORS}
        )
        await response.prepare(request)
        if request.method == "HEAD":
            # The head alone: aiohttp would send what is written after it, a body a HEAD answer
            # must not have, and the stream would then hold the connection for good.
            await response.write_eof()
            return response
        stream = EventStream(request.transport)
        gateway._clients.add(stream)
        gateway.metrics.event_clients.inc()
        try:
            await response.write(b"retry: 2000\n\n")
            while (message := await stream.next()) is not None:
                await response.write(message)
        except ConnectionError as e:  # aiohttp's ClientConnectionResetError is one
            # A visitor who left: no bug of the gateway's, and anyone could fill the log with them.
            log.debug("an event stream's client went away: %s", e)
        finally:
            gateway._clients.discard(stream)
            gateway.metrics.event_clients.dec()
        return response

    r.add_get("/", page)
    r.add_get("/{page:[a-z]+}.html", page)
    r.add_static("/static/", WEB_DIR / "static", follow_symlinks=False)
    r.add_get("/api/ledgers", ledgers)
    r.add_get("/api/ledgers/{ledger}", ledger_info)
    r.add_get("/api/ledgers/{ledger}/records", records)
    r.add_get("/api/ledgers/{ledger}/records/{height}", record)
    r.add_get("/api/records/{hash}", by_hash)
    r.add_get("/api/ledgers/{ledger}/checkpoint", checkpoint_json)
    r.add_get("/api/ledgers/{ledger}/receipts/{height}", receipt)
    r.add_get("/api/ledgers/{ledger}/proof/inclusion", inclusion)
    r.add_get("/api/ledgers/{ledger}/proof/consistency", consistency)
    r.add_get("/api/ledgers/{ledger}/voters/{eid}", voter)
    r.add_get("/api/ledgers/{ledger}/tally", tally)
    r.add_get("/api/ledgers/{ledger}/funds", funds)
    r.add_get("/api/cluster", cluster)
    r.add_get("/api/events", events)
    r.add_get("/ledgers/{ledger}/checkpoint", checkpoint_text)
    r.add_get("/ledgers/{ledger}/{path:tile/.+}", tile)
    add_health_routes(app, checks or {}, gateway.registry)
    plain_headers(app)
    app.cleanup_ctx.append(_watcher(gateway))
    app.on_shutdown.append(lambda _: _end_streams(gateway))
    return app


async def _end_streams(gateway: Gateway) -> None:
    """End every open event stream, so that shutting down does not wait for their clients to leave."""
    for stream in list(gateway._clients):
        stream.end()


# The ledgers' routes are public and take no cookies: a page opened from another origin (a
# mirror, a local file, PROTOCOL 15.5) may read them. Not /api/cluster (a loopback gateway's
# answer holds the nodes' logs), nor /metrics: what any web site a visitor opens could read.
PUBLIC_CORS = {"Access-Control-Allow-Origin": "*"}
PUBLIC_PREFIXES = ("/api/ledgers", "/api/records/", "/api/events", "/ledgers/")


@web.middleware
async def _public_cors(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)
    # A CONNECT's target is an authority (RFC 9110 9.3.6): aiohttp gives it no path, only a raw one.
    path = request.path or request.raw_path
    if path.startswith(PUBLIC_PREFIXES) and not response.prepared:
        response.headers.update(PUBLIC_CORS)
    return response


def _noting_damage(gateway: Gateway) -> Any:
    """Inside json_errors, which answers a damaged store 503 ``store_damaged``: the gateway notes
    it for /readyz and its metric."""

    @web.middleware
    async def noting(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except Exception as e:
            gateway.note_damaged(e)
            raise
        return response

    return noting


def _counted(metrics: GatewayMetrics) -> Any:
    @web.middleware
    async def counted(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        metrics.requests.labels(name, str(response.status)).inc()
        return response

    return counted


async def probe_nodes(config: ClusterConfig) -> dict[str, dict[str, Any]]:
    """Each node's role and whether its ``/readyz`` answers ready (nodes without an http_port: unknown)."""
    nodes: dict[str, dict[str, Any]] = {}
    async with ClientSession(timeout=ClientTimeout(total=PROBE_TIMEOUT)) as session:

        async def probe(name: str, port: int, host: str) -> None:
            try:
                async with session.get(f"http://{host}:{port}/readyz") as answer:
                    body = await answer.json()
                    nodes[name]["state"] = "ready" if answer.status == 200 else "not_ready"
                    nodes[name]["checks"] = body.get("checks")
            except Exception as e:  # refused, timed out, not JSON: down as far as anyone can tell
                nodes[name]["state"] = "down"
                nodes[name]["checks"] = {"probe": type(e).__name__}

        probes = []
        for node in sorted(config.nodes.values(), key=lambda n: n.name):
            nodes[node.name] = {"role": node.role, "state": "unknown", "checks": None}
            if node.http_port is not None:
                probes.append(probe(node.name, node.http_port, node.host))
        await asyncio.gather(*probes)
    return nodes


def _event(kind: str, value: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(value, separators=(',', ':'))}\n\n".encode()


# What tells a served checkpoint from the one before: its size, its cosigners and its fresh_ms.
Served = tuple[int, tuple[str, ...], int | None]


def _watcher(gateway: Gateway) -> Callable[[web.Application], AsyncIterator[None]]:
    """The background task that turns new heads and new tallies into events for every open stream."""

    async def watch(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_watch(gateway))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return watch


async def _watch(gateway: Gateway) -> None:
    loop = asyncio.get_running_loop()
    heads: dict[str, int] | None = None
    tallies: dict[str, dict[str, str]] | None = None
    checkpoints: dict[str, tuple[Served, dict[str, Any]]] | None = None
    last_tally = 0.0
    while True:
        await asyncio.sleep(POLL_SECONDS)
        try:
            now = await loop.run_in_executor(None, gateway.heads)
        except VledgerError:
            continue  # no store yet: the node has not created it
        if heads is not None:
            for ledger, size in now.items():
                start = max(heads.get(ledger, 0), size - EVENT_RECORDS)
                while start < size:  # pages cut at PAGE_BYTES: an event each, the newest records too
                    page = await loop.run_in_executor(None, gateway.record_page, ledger, start, size - start, False)
                    _broadcast(gateway, b"event: head\ndata: " + page + b"\n\n")
                    start = _page_end(page, size)
        heads = now
        if time.monotonic() - last_tally >= TALLY_POLL_SECONDS:
            last_tally = time.monotonic()
            served = await loop.run_in_executor(None, _served_checkpoints, gateway, list(now))
            if checkpoints is not None:
                for ledger, (seen, shown) in served.items():
                    if seen != checkpoints.get(ledger, (None, None))[0]:
                        _broadcast(gateway, _event("checkpoint", shown))
            checkpoints = served
            try:
                latest = await loop.run_in_executor(None, gateway.tally_heads)
            except (redis.RedisError, OSError):
                continue
            if tallies is not None:
                for ledger, ids in latest.items():
                    if ids != tallies.get(ledger):
                        _broadcast(gateway, _event("tally", {"ledger": ledger}))
            tallies = latest


def _served_checkpoints(gateway: Gateway, ledgers: list[str]) -> dict[str, tuple[Served, dict[str, Any]]]:
    """Each ledger's served checkpoint: its (size, cosigners, fresh_ms), what tells a new one, and
    its JSON. A quiet ledger's witnesses cosign it again (PROTOCOL 10.7): its fresh_ms moves, and
    a page or a client following the stream hears that the head is still vouched for. A ledger
    without one (no pinned key, none verified yet, a store error) is left out."""
    served = {}
    for ledger in ledgers:
        try:
            checkpoint = gateway.checkpoint(ledger)
        except VledgerError:
            continue
        gathered = checkpoint.gathered
        served[ledger] = ((gathered.checkpoint.size, tuple(gathered.witnesses), gathered.fresh_ms), checkpoint.json())
    return served


class EventStream:
    """The events queued for one event-stream client (on the loop's thread): at most
    CLIENT_QUEUE of them and CLIENT_QUEUE_BYTES in all; ``transport`` its connection."""

    def __init__(self, transport: asyncio.Transport | None = None) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.queued_bytes = 0
        self.transport = transport

    def offer(self, message: bytes) -> bool:
        """Queue ``message``; False, queuing nothing, when it would pass either bound."""
        if self._queue.qsize() >= CLIENT_QUEUE or self.queued_bytes + len(message) > CLIENT_QUEUE_BYTES:
            return False
        self._queue.put_nowait(message)
        self.queued_bytes += len(message)
        return True

    def end(self) -> None:
        """End the stream after the event being written: what is queued is let go at once."""
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                self._queue.get_nowait()
        self.queued_bytes = 0
        self._queue.put_nowait(None)

    def drop(self) -> None:
        """End the stream and close its connection now: a client that does not read would keep
        the event being written (and its connection) until the unread timeout."""
        self.end()
        if self.transport is not None:
            self.transport.abort()

    async def next(self) -> bytes | None:
        """The next event, or None when the stream ends."""
        message = await self._queue.get()
        if message is not None:
            self.queued_bytes -= len(message)
        return message


def _broadcast(gateway: Gateway, message: bytes) -> None:
    for stream in list(gateway._clients):
        if not stream.offer(message):  # the slowest: it reconnects (retry: 2000) and reads what it missed
            gateway._clients.discard(stream)
            stream.drop()
            gateway.metrics.event_clients_dropped.inc()


# --- the process ----------------------------------------------------------------------------------------


def readiness(gateway: Gateway) -> dict[str, Callable[[], str | None]]:
    def store() -> str | None:
        return gateway.store_damage()

    def redis_up() -> str | None:
        gateway._redis().ping()
        return None

    return {"store": store, "redis": redis_up}


def run_gateway(
    config: ClusterConfig, name: str, logs_dir: Path | None = None, host: str | None = None, port: int | None = None
) -> None:
    """Serve the gateway of node ``name`` on its ``gateway_port`` (or ``host``:``port``) until SIGTERM or SIGINT.

    Raises SettingsError when the node keeps no store or has no gateway port.
    """
    node = config.node(name)
    bind_port = port if port is not None else node.gateway_port
    if bind_port is None:
        raise SettingsError(f"{config.path}: node {name!r} has no gateway_port")
    gateway = Gateway(config, name, logs_dir=logs_dir)
    app = build_app(gateway, readiness(gateway))
    stopping = threading.Event()
    handlers = {s: signal.signal(s, lambda *_: stopping.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with HttpThread(
            app,
            host or node.bind_host,
            bind_port,
            name=f"gateway-{name}",
            settings=config.http,
            registry=gateway.registry,
        ) as server:
            log.info("gateway of %s serving http://%s:%d/", name, node.host, server.port)
            stopping.wait()
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
        gateway.close()
        log.info("gateway of %s stopped", name)


def _page_end(page: bytes, size: int) -> int:
    """Where a :meth:`Gateway.record_page` answer ends: its ``next``, or ``size`` when it has none."""
    following = page.rsplit(b'"next":', 1)[1].rstrip(b"}")
    return int(following) if following.isdigit() else size
