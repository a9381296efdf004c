"""A replica node process: `vledger replica --config config/cluster.toml --node NAME`.

It holds its own ChainStore and fills it from the feeds of the nodes it follows (CURVE
SUB, under its node key), with the Redis streams and the followed nodes' ``range``
command to fill gaps (vledger.ingest.follow), storing only what a checkpoint of the home
covers. It is a witness (vledger.ingest.witness): it cosigns, with its ``<name>.sign`` key,
the newest checkpoint its store proves and publishes the cosignature in Redis, which is
what a put's ``w`` counts; a thread of its own does that (a Cosigner), beside the follow
loop. It reports each advance to Redis (held heights: hints), serves the read commands on
its own CURVE ROUTER, and with a ``pub_port`` republishes what it stores, one hop further,
for replicas downstream.

Start-up order: the store opens and checks its heads, the SUB socket subscribes (so that
nothing published from then on is missed), the read socket binds and passes its
self-test, then the catch-up runs; until it is done, ``hello`` answers ``current: false``.
SIGTERM and SIGINT stop it cleanly.

An observer (vledger.verifier.observer) runs this same path, follow, catch-up, verify, store,
holder heights and the read socket, with a :class:`StoreWatcher` beside it. It never
republishes (an observer has no ``pub_port``); it cosigns too, but the write concern of
ingest nodes does not count it (vledger.ingest.write_concern).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Protocol

from .. import __version__
from ..broker.client import Client, NodeAddress
from ..broker.feed import FeedSource, Subscriber
from ..broker.keys import generation_name
from ..broker.replication import REDIS_ERRORS, ReplicationLedger, raise_alert
from ..broker.signing import SigningKey, load_signing_key, load_verify_key, signing_key_paths, witness_keys
from ..config.cluster import FOLLOWER_ROLES, ClusterConfig, ConfiguredFailbacks, NodeConfig, ReplicationSettings
from ..node.checkpoint_log import COSIGNED
from ..node.epoch import EpochKeys
from ..node.errors import VledgerError
from ..node.node_key_rotation import KeyHistory
from ..node.note import VerifierKey
from ..node.record import Record
from ..node.store import ChainStore
from ..node.witness import CheckpointKeys, WitnessSigner, home_key, witness_keys_in_force, witness_name
from .accounts import CachedAccounts
from .blob_copy import BlobFetcher, FileRules
from .cosignatures import KnownCosignatures, WitnessedNotes
from .epochs import EpochBook
from .follow import NOT_RELAYED, Follower, Page, own_copy_alerts
from .key_chains import ClusterChains, KeyChains
from .members import EndpointKeys, now_ms
from .metrics import (
    MeteredService,
    NodeMetrics,
    current_check,
    gauge_collector,
    redis_check,
    store_collector,
)
from .node_key_rotation import TAKEN_AFTER, taken_level
from .outbox import Outbox
from .page_check import PageChecker
from .runtime import NodeRuntime, store_options
from .service import AccountAdmin, IngestService
from .witness import Cosigner, Witness

log = logging.getLogger(__name__)

RECEIVE_SLICE_MS = 200
IN_FLIGHT_SLICE_MS = 1  # the feed polled this long while a stored run is not reported yet
RECEIVE_BATCH = 5000
SOURCE_TIMEOUT = 5.0
HEADS_EVERY = 1.0  # seconds between two checks of the targets, beside the checkpoint heartbeats


class StreamSource:
    """A ledger's records from its Redis stream."""

    name = "redis"

    def __init__(self, replication: ReplicationLedger) -> None:
        self.replication = replication

    def fetch(self, ledger: str, start: int, count: int) -> Page:
        try:
            return Page(*self.replication.read_rows(ledger, start, count))
        except REDIS_ERRORS as e:
            raise OSError(f"Redis: {e}") from e

    def checkpoints(self) -> dict[str, bytes]:
        try:
            return self.replication.checkpoints()
        except REDIS_ERRORS as e:
            raise OSError(f"Redis: {e}") from e


class NodeSource:
    """A ledger's records from a node's ``range`` command (a home node, or a relay upstream)."""

    def __init__(self, name: str, client: Client, page_size: int) -> None:
        self.name = name
        self.client = client
        self.page_size = page_size  # the cluster's range page: a larger limit is refused

    def fetch(self, ledger: str, start: int, count: int) -> Page:
        limit = min(count, self.page_size)
        reply = self.client.call("range", {"ledger": ledger, "start": start, "limit": limit})
        records = reply.get("records") if isinstance(reply, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, bytes) for r in records):
            raise OSError(f"{self.name}: range answered something else than records")
        note = reply.get("checkpoint")
        return Page([(start + i, data) for i, data in enumerate(records)], [note] if isinstance(note, bytes) else [])

    def checkpoints(self) -> dict[str, bytes]:
        reply = self.client.call("ledger.list")
        ledgers = reply.get("ledgers") if isinstance(reply, dict) else None
        if not isinstance(ledgers, list):
            raise OSError(f"{self.name}: ledger.list answered something else")
        notes = {}
        for item in ledgers:
            if (
                isinstance(item, dict)
                and isinstance(item.get("ledger"), str)
                and isinstance(item.get("checkpoint"), bytes)
            ):
                notes[item["ledger"]] = item["checkpoint"]
        return notes


def node_source(runtime: NodeRuntime, name: str) -> NodeSource:
    """Node ``name``'s ``range`` as a catch-up source of this process: reached at its keys in
    force and with ours, through both's rotations (PROTOCOL 16.6), closed with the process."""
    client = Client(
        runtime.gates.address_of(name),
        runtime.client_keys.current,
        timeout=SOURCE_TIMEOUT,
        follow=False,  # a source's records are trusted by who sent them: never another node's
    )
    runtime.gates.keep_addressed(client, name)  # its key rotations followed
    runtime.client_keys.follow(partial(setattr, client, "keys"))  # and ours: read at its next call
    runtime.closing(client.close)
    return NodeSource(name, client, runtime.config.ingest.page_size)


def relay_settings(replication: ReplicationSettings) -> ReplicationSettings:
    """What a follower's relay outbox runs with: the cluster's settings without the outbox
    interval. The interval lets a home's lone writer's puts share one pass; a relay is handed
    whole stored runs, and its pass reports their held height (what replication lag is
    counted by), so waiting for the next pass only added up to the interval to the lag."""
    return dataclasses.replace(replication, outbox_interval_ms=0)


def _ingest_sign_keys(config: ClusterConfig) -> dict[str, bytes]:
    """The raw Ed25519 public key of every ingest node whose ``<name>.sign.pub`` exists."""
    configured: dict[str, bytes] = {}
    for node in config.ingest_nodes():
        path = signing_key_paths(config.keys_dir, node.name)[1]
        if path.is_file():
            configured[node.name] = load_verify_key(path).raw
    return configured


def configured_home_keys(config: ClusterConfig) -> Callable[[str], VerifierKey | None]:
    """Ledger -> its home's configured ``<home>.sign.pub`` as its checkpoint key (None: no such file)."""
    configured = _ingest_sign_keys(config)

    def key_of(ledger: str) -> VerifierKey | None:
        public = configured.get(config.home_of(ledger).name)
        return home_key(config.name, ledger, public) if public is not None else None

    return key_of


def checkpoint_keys(config: ClusterConfig, store: ChainStore) -> KeyChains:
    """Each ledger's checkpoint key chain (13.8): from the key its genesis pins, once this store
    holds the genesis, along its rotation records; else (no genesis here yet, or one that pins
    none) its home's configured ``<home>.sign.pub``."""
    return KeyChains(store, configured_home_keys(config))


def ledger_checkpoint_keys(
    config: ClusterConfig, chains: KeyChains | ClusterChains, epochs: EpochBook | None
) -> CheckpointKeys:
    """What a follower checks checkpoints with: each ledger's key chain (13.8) and, with
    ``epochs``, a ledger whose genesis pins a standby key by its epochs (10.9); before its
    genesis is held (or never, on the admin home: ClusterChains), a checkpoint with an epoch
    line by the configured standby's key file's key."""
    chained = chains.keys(config.name)
    if epochs is None:
        return chained
    configured = _ingest_sign_keys(config)

    def standby_key_of(ledger: str) -> VerifierKey | None:
        standby = config.standby_of(ledger)
        public = None if standby is None else configured.get(standby.name)
        return home_key(config.name, ledger, public) if public is not None else None

    failbacks = ConfiguredFailbacks(config)  # a failback's epoch counts only once the file allows it (10.9)
    return EpochKeys(config.name, chains.current, epochs.history, standby_key_of, chained, failbacks.allows)


class FollowerCheckpoints:
    """What a follower serves beside its records: the home's checkpoints it verified."""

    def __init__(self, follower: Follower, store: ChainStore) -> None:
        self.follower = follower
        self.store = store

    def latest(self, ledger: str) -> bytes | None:
        checkpoint = self.follower.checkpoint_of(ledger)
        return checkpoint.note if checkpoint is not None else None

    def covering(self, ledger: str, start: int, end: int) -> bytes | None:
        """The best checkpoint verified if its size ends among these records, else the largest
        this witness cosigned there (with its cosignature line: a reader ignores that one)."""
        best = self.follower.checkpoint_of(ledger)
        if best is not None and start < best.size <= end:
            return best.note
        kept = self.store.checkpoints.latest(ledger, COSIGNED, at_most=end, above=start)
        return kept.note if kept is not None else None


class _NoAdmin:
    """A replica runs no admin command (they are not among its read commands)."""

    def apply(self, command: str, args: Any, caller: Any = None) -> dict[str, Any]:
        raise AssertionError("a replica serves no admin command")

    def list_accounts(self) -> list[dict[str, Any]]:
        raise AssertionError("a replica serves no admin command")


def _followed(config: ClusterConfig, node: NodeConfig) -> list[NodeConfig]:
    return [config.node(name) for name in node.follow]


def blob_sources(
    config: ClusterConfig, me: str, address_of: Callable[[str], NodeAddress]
) -> Callable[[str], list[tuple[str, NodeAddress]]]:
    """Whom a replica asks for a ledger's file blobs: its home, then the nodes it follows, then
    every other ingest node and replica of the cluster (any of them may hold a copy), each at
    ``address_of`` its name (its keys in force now: MemberGates.address_of)."""
    node = config.node(me)
    servers = [n.name for n in config.nodes.values() if n.role in ("ingest", "replica") and n.name != me]

    def sources(ledger: str) -> list[tuple[str, NodeAddress]]:
        order = [config.home_of(ledger).name, *node.follow, *servers]
        named = [name for i, name in enumerate(order) if name != me and name not in order[:i]]
        return [(name, address_of(name)) for name in named]

    return sources


def feed_sources(
    config: ClusterConfig, node: NodeConfig, feed_address_of: Callable[[str], NodeAddress]
) -> list[FeedSource]:
    """The feeds node ``node`` subscribes to, each at ``feed_address_of`` its name (its newest
    key in force, on its ``pub_port`` and its ``feed_rotation_port``: MemberGates.feed_address_of)."""
    sources = []
    for followed in _followed(config, node):
        address = feed_address_of(followed.name)
        sources.append(FeedSource(followed.name, address.endpoint, address.key, address.also))
    return sources


class StoreWatcher(Protocol):
    """What an observer runs beside the follow path, on the follow thread."""

    def stored(self, records: list[Record]) -> None:
        """``records`` (of one ledger, in height order) were just verified and stored."""
        ...

    def turn(self) -> None:
        """One turn of the follow loop: at least every RECEIVE_SLICE_MS, and after each batch of the feed."""
        ...

    def signs_with(self, signing: SigningKey) -> None:
        """The node's Ed25519 key rotated (PROTOCOL 16.6): sign with ``signing`` from now on."""
        ...


# Builds the watcher once the store and Redis are open, before the follow loop starts.
WatcherFactory = Callable[[ChainStore, ReplicationLedger], StoreWatcher]


def run_replica(config: ClusterConfig, name: str, passphrase: str | None = None) -> None:
    run_follower(config, name, passphrase)


def run_follower(
    config: ClusterConfig, name: str, passphrase: str | None = None, *, observe: WatcherFactory | None = None
) -> None:
    """Run a replica node, or with ``observe`` an observer node (docstring above)."""
    role = "replica" if observe is None else "observer"
    # The second core checks the next catch-up page while this process takes one (ingest/page_check.py),
    # when the cluster turns it on. Its process is started first, on a thread of its own, so
    # that it starts while this one opens its runtime and store: a start-up catch-up checks
    # its pages itself until the worker is ready, which took 0.4 to 0.9 s of a loaded
    # machine when it was started once the store was open, half of a 20,000-record catch-up.
    use_checker = config.replication.catch_up_checker and len(os.sched_getaffinity(0)) > 1
    checker = PageChecker() if use_checker else None
    if checker is not None:
        checker.begin()
    try:
        with NodeRuntime.open(config, name, (role,), passphrase) as runtime:
            _run_follower(runtime, passphrase, observe, checker)
    finally:
        if checker is not None:
            checker.close()


def _run_follower(
    runtime: NodeRuntime, passphrase: str | None, observe: WatcherFactory | None, checker: PageChecker | None
) -> None:
    config, node, name = runtime.config, runtime.node, runtime.name
    registry = runtime.registry()
    replication = runtime.replication()
    broker = dataclasses.replace(config.settings.broker, max_message_bytes=2 * config.ingest.max_message_bytes)
    # Every follower is a witness: it cosigns with its own Ed25519 key, made by keygen --cluster.
    signing = load_signing_key(signing_key_paths(config.keys_dir, name)[0], passphrase)
    # A ledger whose file lost records while the node was down opens cut back to what it holds
    # whole, and is fetched again (Follower.start); a home's store is never cut back.
    store = runtime.store(replication, **store_options(config, name))
    cache = runtime.accounts(registry, replication)
    epochs = EpochBook(config.name, store)
    # It connects to the others with its newest CURVE key from the record on (PROTOCOL 16.6).
    keys = runtime.client_keys.current
    subscriber = Subscriber(
        runtime.ctx,
        keys,
        feed_sources(config, node, runtime.gates.feed_address_of),
        receive_hwm=config.replication.receive_hwm,
        max_message_bytes=broker.max_message_bytes,
        max_record_bytes=config.settings.limits.max_record_bytes,
    )
    runtime.closing(subscriber.close)
    # Its own key and the feeds' keys (a rotation's record, a window's end): the next receive
    # subscribes anew when either changed (a gap meanwhile is fetched by height).
    runtime.gates.on_rotation(
        lambda _: subscriber.retarget(
            runtime.client_keys.current, feed_sources(config, node, runtime.gates.feed_address_of)
        )
    )
    # A relay's feed, closed after the relay stopped; its key follows the node's rotations (16.6).
    publisher = runtime.publisher(broker, config.replication.send_hwm) if node.bind_feed_endpoint is not None else None
    relay = runtime.started(
        Outbox(name, store, publisher, replication, relay_settings(config.replication), stream=False)
    )
    watcher = None if observe is None else observe(store, replication)
    witness = Witness(
        name,
        store,
        WitnessSigner(witness_name(config.name, name), signing.seed),
        replication,
        lambda alert: raise_alert(replication, alert),
        epochs_of=epochs.history,
        recosign_ms=config.replication.recosign_interval_ms,
        heartbeat_ms=config.replication.heartbeat_ms,
    )
    # A replica keeps the files its ledgers record (PROTOCOL 7.4, 10.8); an observer keeps records only.
    files = FileRules(store) if observe is None else None
    fetcher: BlobFetcher | None = None
    if files is not None:
        fetcher = BlobFetcher(
            name,
            store.blobs,
            keys,
            blob_sources(config, name, runtime.gates.address_of),
            chunk_bytes=config.ingest.file_chunk_bytes,
            max_message_bytes=broker.max_message_bytes,
            on_alert=lambda alert: raise_alert(replication, alert),
            damaged=store.damaged,
        )
        fetcher.want(files.files())  # those recorded before a restart, or lost from the disk
        runtime.client_keys.follow(partial(setattr, fetcher, "keys"))  # its next connections use ours
        runtime.started(fetcher)

    def stored(records: list[Record], hops: int) -> None:
        epochs.stored(records)  # before the next checkpoint is checked by them
        # Held heights, what a relay republishes, and after them the checkpoints that cover them.
        ledgers = {r.ledger for r in records}
        checkpoints = [c for ledger in ledgers if (c := follower.checkpoint_of(ledger)) is not None]
        relay.committed(records, hops + 1, checkpoints)
        if watcher is not None:
            watcher.stored(records)
        if files is not None and fetcher is not None:
            fetcher.want(files.stored(records))

    sources: list[Any] = [StreamSource(replication)]
    sources.extend(node_source(runtime, followed.name) for followed in _followed(config, node))
    chains = checkpoint_keys(config, store)
    ledger_keys = ledger_checkpoint_keys(config, chains, epochs)
    follower = Follower(
        name,
        store,
        sources,
        keys=ledger_keys,
        home_of=lambda ledger: config.home_of(ledger).name,
        on_stored=stored,
        on_alert=lambda alert: raise_alert(replication, alert),
        on_resolve=lambda keys, upto: resolve_alerts(replication, keys, upto),
        on_evidence=witness.evidence,
        on_verified=witness.verified,
        batch=config.replication.catch_up_batch,
        stopping=runtime.stopping.is_set,
        checker=checker,
        unserved_after=config.replication.unserved_note_ms / 1000,
        witnessed=WitnessedNotes(
            config.name,
            replication,
            witness_keys(config),
            name,
            rotated=lambda: witness_keys_in_force(
                config.name,
                runtime.gates.histories,
                [n.name for n in config.nodes.values() if n.role in FOLLOWER_ROLES],
                now_ms(),
            ),
            histories=lambda: runtime.gates.histories,
        ),
    )
    chains.pending = follower.key_records  # a rotation not stored yet names the key of the checkpoint over it
    earlier = own_open_alerts_of(replication, name)
    follower.carry_over(own_copy_alerts(name, earlier))
    witness.carry_over(earlier)
    metrics = NodeMetrics(node)
    metrics.collect_with(store_collector(store, config, name, replication))
    metrics.collect_with(gauge_collector("vledger_outbox_backlog", "commits not yet published", relay.backlog))
    runtime.health(
        metrics,
        {
            "store": lambda: None,  # open: the process got this far, and closes it only on its way out
            "redis": redis_check(replication),
            "current": current_check(store, config, name, replication, config.replication.catch_up_batch),
        },
    )
    server = runtime.request_server(broker, metrics)
    # After request_server, which sets the hook for the CURVE key: the witness follows its own
    # Ed25519 key's rotations too (PROTOCOL 16.6), from the generation in force now on.
    follow_own_key = witness_key_follower(
        config, name, passphrase, witness, signing.public.public_hex, None if watcher is None else watcher.signs_with
    )
    follow_own_key(runtime.gates.histories)
    runtime.gates.on_rotation(follow_own_key)
    admin: AccountAdmin = _NoAdmin()
    service = IngestService(
        config,
        node,
        store,
        CachedAccounts(cache, members=runtime.gates.members),
        admin,
        EndpointKeys(runtime.gates, [n.name for n in config.ingest_nodes()]),
        domain=files.engine if files is not None else None,
        version=__version__,
        status=follower.status,
        checkpoints=FollowerCheckpoints(follower, store),
        cosignatures=KnownCosignatures(
            config.name,
            store,
            replication,
            witness_keys(config),
            chains.current,
            rotated=lambda: witness_keys_in_force(
                config.name,
                runtime.gates.histories,
                [n.name for n in config.nodes.values() if n.role in FOLLOWER_ROLES],
                now_ms(),
            ),
            epochs_of=epochs.history,
            histories=lambda: runtime.gates.histories,
        ),
        chains=chains.stored,
        refetch=None if files is None or fetcher is None else _refetcher(files, fetcher),
    )
    log.info("%s %s following %s", node.role, name, ", ".join(node.follow))
    runtime.serve(
        server,
        MeteredService(service, metrics),
        main=partial(
            _follow,
            follower,
            witness,
            subscriber,
            runtime.stopping,
            watcher,
            relay,
            config.replication.cut_check_ms / 1000,
            config.replication.hole_check_ms / 1000,
        ),
    )


def witness_key_follower(
    config: ClusterConfig,
    name: str,
    passphrase: str | None,
    witness: Witness,
    sign_hex: str,
    signs_with: Callable[[SigningKey], None] | None = None,
) -> Callable[[Mapping[str, KeyHistory]], None]:
    """A hook for the key histories (MemberGates.on_rotation) that makes ``witness`` cosign with
    the newest Ed25519 key the admin ledger names for node ``name`` (docs/PROTOCOL.md 16.6),
    read from ``<name>@<g>.sign``, and hands it to ``signs_with`` (an observer signs its tallies
    with it); ``sign_hex`` is the key it signs with now. A key file that
    is missing, unreadable or holds another key is logged, and the witness keeps its key: its
    cosignatures then stop counting at the window's end, which the write concern shows."""
    current = [sign_hex]
    failed = [False]  # an error logged since the key last taken

    def follow(histories: Mapping[str, KeyHistory]) -> None:
        history = histories.get(name)
        if history is None or history.newest.sign in ("", current[0]):
            return
        newest = history.newest
        path = signing_key_paths(config.keys_dir, generation_name(name, newest.number))[0]
        try:
            signing = load_signing_key(path, passphrase)
        except VledgerError as e:
            failed[0] = True
            log.error("node %s: cannot load its Ed25519 key generation %d: %s", name, newest.number, e)
            return
        if signing.public.public_hex != newest.sign:
            failed[0] = True
            log.error("node %s: %s is not the Ed25519 key the admin ledger names for generation %d",
                      name, path.name, newest.number)  # fmt: skip
            return
        witness.sign_with(WitnessSigner(witness_name(config.name, name), signing.seed))
        if signs_with is not None:
            signs_with(signing)
        current[0] = newest.sign
        log.log(taken_level(failed[0]), "node %s: cosigns with its Ed25519 key generation %d (%s)%s", name,
                newest.number, newest.sign[:16], TAKEN_AFTER if failed[0] else "")  # fmt: skip
        failed[0] = False

    return follow


def _refetcher(files: FileRules, fetcher: BlobFetcher) -> Callable[[str], None]:
    def refetch(sha256: str) -> None:
        wanted = files.find(sha256)
        if wanted is not None:
            fetcher.refetch(wanted)

    return refetch


def _follow(
    follower: Follower,
    witness: Witness,
    subscriber: Subscriber,
    stopping: threading.Event,
    watcher: StoreWatcher | None,
    relay: Outbox,
    cut_every: float,
    hole_every: float,
) -> None:
    witness.start()
    cosigner = Cosigner(witness).start()  # cosigns beside this loop, which goes on receiving
    # What the process made to get here (its modules, runtime, store and sockets: some 67,000
    # objects, a full collection of ~30 ms CPU on a loaded machine) lives as long as it does:
    # frozen, out of the cyclic collector's sight, so that a full collection walks only what was
    # made since. One came at the end of a catch-up, when the collector is turned on again (the
    # pages' objects that catch-up's younger collections kept pushed it past its threshold), and
    # walked everything before the last runs were reported held: in an in-process catch-up of
    # 20,000 records under load ~40, 150-390 ms of 3-4 s, 2 times in 6; with the freeze, none
    # in 6. Only cycles among those objects are never collected: start-up leaves none that matter.
    gc.freeze()
    try:
        follower.start()
        relay.committed([], NOT_RELAYED, follower.checkpoints())  # a relay's heartbeat forwards them
        next_check = time.monotonic() + HEADS_EVERY
        next_cuts = time.monotonic() + cut_every
        next_holes = time.monotonic() + hole_every
        owed: dict[str, int] = {}  # each ledger's target at the last check: the feed had a check's time to bring it
        while not stopping.is_set():
            if watcher is not None:
                watcher.turn()
            # While runs are in the store's queue, the feed is polled briefly so that each is
            # reported stored (held, relayed, cosigned) soon after its commit is done.
            in_flight = follower.in_flight()
            messages = subscriber.receive(IN_FLIGHT_SLICE_MS if in_flight else RECEIVE_SLICE_MS, RECEIVE_BATCH)
            if messages:
                follower.receive(messages, wait=False)  # checks the next batch while the store commits
            elif in_flight:
                follower.reap()
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + HEADS_EVERY
                if next_check >= next_cuts:  # records deleted from its file: fetched again
                    next_cuts = time.monotonic() + cut_every
                    holes = next_check >= next_holes
                    if holes:
                        next_holes = time.monotonic() + hole_every
                    follower.heal_cuts(holes=holes)
                # No settle() here: the runs under way are reaped as their commits are done. Waiting
                # for them each second held the feed up to a commit's time (the slowest lags).
                _refresh_checkpoints(follower)
                owed = follower.catch_up_overdue(owed)
                relay.committed([], NOT_RELAYED, follower.checkpoints())
        follower.settle()  # what is in the store's queue is reported before the store closes
    finally:
        cosigner.stop()


def _refresh_checkpoints(follower: Follower) -> None:
    """The checkpoints Redis holds: a safety net when none gets through on the feed; and what
    the witnesses cosigned, which holds back a copy whose key chain lacks a rotation (10.7)."""
    follower.refresh_witnessed(unsettled_only=True)
    source = follower.sources[0] if follower.sources else None
    if isinstance(source, StreamSource):
        try:
            for ledger, note in source.checkpoints().items():
                follower.take_checkpoint(ledger, note, source.name, catch_up=False, wait=False)
        except OSError as e:
            log.debug("checkpoints from Redis unavailable: %s", e)


def own_open_alerts_of(replication: ReplicationLedger, name: str) -> dict[str, dict[str, Any]]:
    """This node's open alerts, an earlier run's among them, of which the follower and the witness
    take those about its own copy (follow.own_copy_alerts, Witness.carry_over); if Redis is
    down, none: they stay open, and are the operator's."""
    try:
        return replication.own_open_alerts()
    except REDIS_ERRORS as e:
        log.warning("%s: its open alerts could not be read (%s): those about its own copy stay open", name, e)
        return {}


def resolve_alerts(replication: ReplicationLedger, keys: list[str], upto: int) -> None:
    """Close open alerts whose cause is gone up to height ``upto``; if Redis is down they stay
    open (an operator resolves them)."""
    try:
        replication.resolve_up_to(keys, upto)
    except REDIS_ERRORS as e:
        log.warning("alerts not resolved in Redis (%s): %s", e, ", ".join(keys))
