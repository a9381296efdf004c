"""An ingest node process: `vledger ingest --config config/cluster.toml --node NAME`.

Start-up order matters for safety: the store opens (and checks its heads), the accounts
load, the CURVE socket binds with the allow-list already in place, and the node proves
that an unlisted key is refused before it answers anyone. SIGTERM and SIGINT stop it
cleanly: no new requests, the ones in flight answered, the store's queue committed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import __version__
from ..broker.accounts import AccountCache, AccountRegistry, Role, heartbeat_window
from ..broker.client import Client
from ..broker.redis_functions import FunctionsMissingError
from ..broker.replication import REDIS_ERRORS, Alert, ReplicationLedger, raise_alert, store_damaged_alert
from ..broker.signing import (
    admin_checkpoint_key,
    generate_checkpoint_key,
    load_checkpoint_keys,
    load_signing_key,
    remove_checkpoint_key,
    signing_key_paths,
    witness_keys,
)
from ..broker.tallies import TallyBoard
from ..config.cluster import FOLLOWER_ROLES, ClusterConfig, ConfiguredFailbacks
from ..node.checkpoint_log import SIGNED
from ..node.epoch import EPOCH_LINE, epoch_claim
from ..node.errors import (
    CheckpointKeyMissingError,
    NodeUnavailableError,
    StoreContradictsCheckpointError,
    StoreDamagedError,
    StoreError,
    VledgerError,
)
from ..node.key_rotation import ChainedCheckpointKeys
from ..node.note import VerifierKey, parse_checkpoint, parse_note
from ..node.record import Record
from ..node.rules.admin import ADMIN_LEDGER
from ..node.rules.engine import RulesEngine
from ..node.witness import home_key, witness_keys_in_force
from .accounts import CachedAccounts, RegistryAdmin
from .admin_ledger import AdminLedger, StoreAdminSource
from .content_check import ContentChecker
from .cosignatures import KnownCosignatures, largest_cosigned, tallied_heights
from .disk_alerts import DiskFullAlerts
from .epochs import EpochBook, Homes, HomesRefresh, Promotion, earlier_epoch, handed_over, standby_ledgers
from .home_start import published_without, start_check
from .key_chains import ClusterChains, HomeKeys, KeyChains, StreamRows
from .members import EndpointKeys, now_ms
from .metrics import MeteredService, NodeMetrics, counter_collector, gauge_collector, redis_check, store_collector
from .outbox_process import OutboxProcess
from .outside_feeder import FEEDER_METRICS, WitnessFeeder
from .replica import configured_home_keys, ledger_checkpoint_keys
from .runtime import NodeRuntime, missing_factor_alerts, redis_lost_alert, store_options
from .second_factor import cluster_second_factors
from .service import IngestService
from .standby import StandbyFollow, standby_report
from .store_sources import listening
from .witness import check_published, contradiction_alert, self_check
from .write_concern import CosignatureWatch

log = logging.getLogger(__name__)

# Net allocations of tracked objects between two collections of the cyclic collector's youngest
# generation (CPython's default is 700). Pipelined puts keep up to MAX_IN_FLIGHT requests'
# objects alive (each its reply's future, entry and payload): at the default a young collection
# ran every few dozen puts and moved them on to older generations, which cost more to collect.
GC_YOUNG_THRESHOLD = 20_000


def _settle_heap() -> None:
    """Keep the cyclic collector off what start-up built (the store's heads and trees, the
    accounts, the rules' state): it lives as long as the node, and every older-generation
    collection would walk it again. Only objects made after this are ever collected."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


FAILBACK_ANSWER_TIMEOUT = 2.0  # seconds a failback waits for its current home's hello (Promotion)


def _answers(runtime: NodeRuntime, node: str, redis_client: Any = None) -> bool:
    """Whether ``node`` still runs, for a failback's current home (Promotion: PROTOCOL 10.9
    step 1): it answers ``hello`` asked with this node's client keys within
    FAILBACK_ANSWER_TIMEOUT (a refusal is an answer too), or, with ``redis_client``, its
    heartbeat in Redis (the accounts cache's ``seen``) is younger than heartbeat_window. One
    2 s hello alone took a slow host (2 cores under load) or one cut off from the standby only
    for stopped, and it went on acknowledging puts the handover may lose (review r31); such a
    host still reports to Redis. A home stopped cleanly says so there at once, a killed one's
    heartbeat ages out in that window. No key of it to ask with, or Redis unreadable: the hello
    decides (logged)."""
    if _hello_answers(runtime, node):
        return True
    if redis_client is None:
        return False
    try:
        age = AccountRegistry(redis_client).silence([node]).get(node)
    except REDIS_ERRORS as e:
        log.warning("cannot read %s's heartbeat in Redis: %s", node, e)
        return False
    window = heartbeat_window(runtime.config.settings.broker.accounts_poll_ms / 1000)
    if age is not None and age <= window:
        log.warning(
            "%s does not answer hello, but its heartbeat in Redis is %.1f s old (under %.0f s): taken as running",
            node,
            age,
            window,
        )
        return True
    return False


def _hello_answers(runtime: NodeRuntime, node: str) -> bool:
    """Whether ``node`` answers ``hello`` within FAILBACK_ANSWER_TIMEOUT. Nobody holding its port,
    no answer in time, or no key of it to ask with, is none (the last logged)."""
    try:
        address = runtime.gates.address_of(node)
        endpoint = runtime.config.node(node).endpoint
    except VledgerError as e:
        log.warning("cannot ask %s whether it still runs: %s", node, e)
        return False
    if not listening(endpoint, FAILBACK_ANSWER_TIMEOUT):
        return False
    with Client(address, runtime.client_keys.current, timeout=FAILBACK_ANSWER_TIMEOUT, follow=False) as client:
        try:
            client.hello()
        except NodeUnavailableError:
            return False
        except VledgerError:
            return True
    return True


def _signing_key(
    cluster: str, chains: ChainedCheckpointKeys, public: bytes, book: EpochBook, ledger: str, note: bytes
) -> VerifierKey | None:
    """The key the checkpoint ``note`` (a witness's cosigned one) was signed with: a checkpoint
    of a later epoch (10.9) with that epoch's pinned key as this store's records name it (a
    witness's last note of epoch 2, when this home failed back into epoch 3, is epoch 2's home's:
    checked with this home's own key, it was reported a forgery), else, an epoch this store does
    not hold, with this home's own node key (only a promoted standby signs those); else the key
    in force at its size along the ledger's key chain (13.8)."""
    if (EPOCH_LINE + " ").encode() in note:
        history = book.history(ledger) if book.store.size(ledger) > 0 else None
        if history is not None:
            with contextlib.suppress(VledgerError, ValueError):
                epoch = history.epoch(epoch_claim(parse_checkpoint(parse_note(note).text))[0])
                if epoch is not None and epoch.key is not None:
                    return epoch.key
        return home_key(cluster, ledger, public)
    return chains.key_for(ledger, note)


def _published(replication: ReplicationLedger, ledger: str) -> list[bytes]:
    """The checkpoint notes of ``ledger`` Redis holds: the home's latest and the witnesses' (unchecked)."""
    latest = replication.checkpoints().get(ledger)
    return [
        *([latest] if latest is not None else []),
        *replication.cosignatures(ledger).values(),
        *replication.outside_cosignatures(ledger).values(),
    ]


def _sync_admin_cache(name: str, admin_ledger: AdminLedger) -> None:
    """Fill or rebuild Redis's cache of the admin ledger at start (AdminLedger.sync). While Redis
    lacks the functions library the home starts all the same, as it goes on when the library is
    lost while it runs: its accounts thread's upkeep (AdminLedger.refill) fills the cache once the
    loader put the library back (fix31: the node exited here)."""
    try:
        admin_ledger.sync()
    except FunctionsMissingError as e:
        log.warning("ingest node %s: Redis's admin ledger cache is filled once the library is loaded (%s)", name, e)


def run_ingest(config: ClusterConfig, name: str, passphrase: str | None = None) -> None:
    with NodeRuntime.open(config, name, ("ingest",), passphrase) as runtime:
        _run_ingest(runtime, passphrase)


def _run_ingest(runtime: NodeRuntime, passphrase: str | None) -> None:
    config, node, name = runtime.config, runtime.node, runtime.name
    signing = load_signing_key(signing_key_paths(config.keys_dir, name)[0], passphrase)
    registry = runtime.registry()
    factors = cluster_second_factors(config, registry.client)  # production without its key: refused here
    replication = runtime.replication(stream_max_len=config.replication.stream_max_len)
    # The cluster file's [settings.broker], with ZMQ_MAXMSGSIZE at twice the protocol's message
    # limit: requests in between get a message_too_large answer rather than a cut connection.
    broker = dataclasses.replace(config.settings.broker, max_message_bytes=2 * config.ingest.max_message_bytes)
    cache: AccountCache  # made once the store is (its home reads the admin ledger there)
    # Grants: the engine judges by the admin ledger it holds (on its home), else by the
    # cache's proven copy of it; records placed here come after the last admin record applied.
    domain = RulesEngine(grants=lambda: cache.grants)
    # Closed last of what follows: the queue committed once nothing else writes.
    store = runtime.store(
        replication,
        **store_options(config, name),
        domain=domain,
        accepted_floor=lambda: cache.accepted_floor(),  # noqa: PLW0108 (cache is made below)
    )
    store.on_full = disk_alerts = DiskFullAlerts(name, replication)  # a home's puts refused disk_full raise its alert
    if disk_alerts.adopt():
        store.full_before()
    homes_admin = config.home_of(ADMIN_LEDGER).name == name
    # The accounts cache, started below once the admin ledger filled Redis. It enforces the
    # accounts of the admin ledger: its home's own store, or Redis's copy as far as the home's
    # signed checkpoint proves it (PROTOCOL 16.4), never Redis's account entries alone.
    cache = runtime.account_cache(
        registry, StoreAdminSource(store) if homes_admin else runtime.signed_admin(registry), replication
    )
    # Whether an admin is enrolled is the admin ledger's word, not Redis's: any ingest node's
    # password deletes a factor there (outsider o16).
    factors.enrolled = cache.second_factor_enrolled
    factors.recorded_seal = cache.second_factor_seal  # and which factor: a reset's old one written back opens not
    factors.on_missing = missing_factor_alerts(name, replication)
    # A store that no longer holds a checkpoint this home signed is refused writes, ledger by
    # ledger, and said so at once: it is never "fixed" by signing what it holds now.
    # So is one that does not hold a checkpoint it signed that Redis still has (its latest, and
    # those its witnesses cosigned): its own table of them may have gone with the store.
    public = signing.public.raw
    # The checkpoint key in force is derived from each ledger's chain (PROTOCOL 13.8): the
    # genesis key, then each rotation's, whose private keys are files beside the node key.
    chains = KeyChains(store, lambda ledger: home_key(config.name, ledger, public))
    signer = HomeKeys(
        config.name,
        signing.seed,
        chains,
        [key.seed for key in load_checkpoint_keys(config.keys_dir, name, passphrase)],
        make_seed=lambda: generate_checkpoint_key(config.keys_dir, name, passphrase).seed,
        drop_seed=lambda public_key: remove_checkpoint_key(config.keys_dir, name, public_key),
        home=name,
        on_missing=functools.partial(_checkpoint_key_alert, replication, name),
    )
    own = chains.keys(config.name)
    witnesses = witness_keys(config)
    followers = [n.name for n in config.nodes.values() if n.role in FOLLOWER_ROLES]

    def witness_keys_now() -> list[VerifierKey]:
        # Each witness's key file's key and, once it rotated, those in force now (16.6): what a
        # note in Redis must be cosigned by to prove another home's epoch (10.9).
        return [*witnesses.values(), *witness_keys_in_force(config.name, runtime.gates.histories, followers, now_ms())]

    # Each ledger's epochs (PROTOCOL 10.9): the outbox signs only its own epochs' sizes, with their
    # line; writes go to the home of the newest epoch this store names, or Redis names and a
    # witnessed note proves (never Redis's word, nor the standby key's alone).
    book = EpochBook(config.name, store)
    # A failback's epoch from 3 counts only as this node's cluster file allows (10.9), as the
    # witnesses and the verifier take it: one rule for Homes, the outbox and the write concern.
    failbacks = ConfiguredFailbacks(config)
    homes = Homes(config, book, replication, witnesses=witness_keys_now, failback_allowed=failbacks.allows)
    admin_ledger = (
        AdminLedger(
            store,
            registry,
            checkpoints=True,
            on_lost=redis_lost_alert(name, replication),
            admin_key=admin_checkpoint_key(config),
            on_alert=lambda alert: raise_alert(replication, alert),
        )
        if homes_admin
        else None
    )
    try:
        # Before accounts are rebuilt or a record placed: how far the cluster says its ledgers
        # went, a store put back from a copy healed (or refused), never a second tree signed.
        # With the key it will connect with: after a rotation's window the others refuse the first one.
        check, start = start_check(config, name, runtime.client_keys.candidates(), store, own, replication)
        if admin_ledger is not None:
            _sync_admin_cache(name, admin_ledger)  # Redis is a cache of the admin ledger: fill or rebuild it first
            cache.upkeep = admin_ledger.refill  # and again whenever Redis loses it while this node runs
    except StoreDamagedError as e:
        log.error("ingest node %s: its store is behind the cluster and not healed, the node stops: %s", name, e.message)
        raise_alert(replication, store_damaged_alert(name, StoreError(e.message)))
        raise
    refused: dict[str, StoreContradictsCheckpointError] = dict(start.refused)
    for ledger, error in self_check(store, SIGNED).items():
        refused.setdefault(ledger, error)
    executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"{name}-admin")
    runtime.closing(lambda: executor.shutdown(wait=True))
    runtime.started(cache)
    if homes_admin:
        try:  # once: the older recovery digests are of a running cluster before this version
            factors.drop_old_recovery_codes(a.name for a in cache.snapshot.accounts.values() if a.role is Role.ADMIN)
        except REDIS_ERRORS as e:
            log.warning("ingest node %s: older recovery codes not looked for, Redis unavailable (%s)", name, e)
    # Only once the cache started: it loads the key rotations, and a witness's rotated key
    # (witness_keys_now) may be what cosigned the note proving this home was replaced.
    homes.refresh()
    # And the other nodes' notes: a Redis that lost its data holds no proof of a handover, which
    # a witness's answer carries; until a witness cosigns again this old home took writes as home.
    homes.take_notes(check.notes)
    # Only the ledgers it is home of: a standby that was away is behind its home's checkpoints,
    # signed with the home's key (which its chain names), and catches up; refused, it could
    # never take over.
    homed = [ledger for ledger in store.ledgers() if homes.home_of(ledger).name == name]
    # The other nodes' notes too (a Redis that lost its data holds none); not a note of a fork the start check replaced.
    answered = published_without(check.notes, start.set_aside)
    try:
        published = {ledger: [*_published(replication, ledger), *answered.get(ledger, ())] for ledger in homed}
    except REDIS_ERRORS as e:
        log.warning("ingest node %s: Redis unavailable (%s): its store is checked against its own table only", name, e)
        published = {ledger: list(answered.get(ledger, ())) for ledger in homed}
    for ledger, error in check_published(store, own, published).items():
        refused.setdefault(ledger, error)
    for ledger, error in refused.items():
        log.error("ingest node %s refuses writes to %s: %s", name, ledger, error)
        kept = store.checkpoints.latest(ledger, SIGNED)
        raise_alert(replication, contradiction_alert(name, kept.root if kept is not None else None, error))
    # Closed after the outbox stopped (added before it): what the last group commits made
    # durable goes out before the feed closes. Its key follows the node's rotations (16.6) once
    # the outbox's feed proxy, the thread that owns the socket from then on, runs (below).
    publisher = runtime.publisher(broker, config.replication.send_hwm, attach=False)
    # Its streams and feed are shipped by a process of its own (ingest/outbox_process.py): this
    # process keeps the request loop, the group commits and the checkpoints' signatures.
    outbox = OutboxProcess(
        name,
        store,
        publisher,
        runtime.redis_access,
        config.replication,
        stream_max_len=config.replication.stream_max_len,
        signer=signer,
        refused=refused,
        # A home that Redis says was replaced (it was cut off during the handover) signs nothing more.
        epochs=lambda ledger, size: None if homes.home_of(ledger).name != name else book.signing(ledger, size, name),
        owns=lambda ledger: homes.home_of(ledger).name == name,
        witnesses=witness_keys_now,
        cluster_file=config.path,
    )

    def committed(records: list[Record]) -> None:
        book.stored(records)  # a handover placed or followed here: before its checkpoint is signed
        outbox.committed(records)

    store.on_commit = committed
    # Redis's epochs first: a home replaced while it was down must not sign or "repair" the
    # stream from its stale store when its outbox starts.
    runtime.started(HomesRefresh(homes))
    runtime.started(outbox)
    # No thread of this process publishes (Publisher.call_soon would never run): the re-binds
    # of a key rotation go to the proxy's thread, which runs them even when nothing is sent.
    assert runtime.feed_rotation is not None
    runtime.feed_rotation.attach(publisher.socket, outbox.feed_call_soon)
    feeder = runtime.started(
        WitnessFeeder(
            name,
            store,
            lambda: dict(outbox.checkpoints),
            config.outside_witnesses,
            replication,
            config.replication,
            on_alert=lambda alert: raise_alert(replication, alert),
            cluster=config.name,
            witnesses=witness_keys_now,  # their lines ride in the outside witnesses' notes (13.9)
        )
    )
    metrics = NodeMetrics(node)
    metrics.collect_with(store_collector(store, config, name, None))
    metrics.collect_with(gauge_collector("vledger_outbox_backlog", "commits not yet published", outbox.backlog))
    for what, text in FEEDER_METRICS.items():
        metrics.collect_with(
            gauge_collector(f"vledger_outside_witness_{what}", text, functools.partial(feeder.count, what))
        )
    followed = standby_ledgers(config, name)
    standby: StandbyFollow | None = None  # made once the service is

    def standby_fields() -> dict[str, Any]:
        # A standby's follow restarts where an operator looks (hello, vledger status, /readyz), not only in metrics.
        if not followed:
            return {}
        return {"standby": standby.report() if standby is not None else standby_report(followed, 0)}

    runtime.health(
        metrics,
        {
            "store": lambda: None,
            "redis": redis_check(replication),
            "outbox": lambda: None if outbox.alive() else "the outbox process is not running",
        },
        standby_fields,
    )
    watch = runtime.started(
        CosignatureWatch(
            name,
            replication,
            store.checkpoints,
            cluster=config.name,
            witnesses=witnesses,
            log_key_of=functools.partial(_signing_key, config.name, own, public, book),
            on_alert=lambda alert: raise_alert(replication, alert),
            ignored=[n.name for n in config.nodes_of("observer")],
            histories=lambda: runtime.gates.histories,  # a witness's rotated keys (PROTOCOL 16.6)
            owns=lambda ledger: homes.home_of(ledger).name == name,
            handed_over=functools.partial(
                handed_over, book, name, witnesses=witness_keys_now, failback_allowed=failbacks.allows
            ),
            earlier_epoch=functools.partial(earlier_epoch, book, name),
            hurry=outbox.hurry,
        )
    )
    # The authenticated socket of the process's one Context, where the ZAP handler runs; closed
    # first at the end, with a linger: answers still queued in ZeroMQ go out.
    server = runtime.request_server(broker, metrics)
    # The checkpoint keys of every ledger of the cluster, held here or not: a witness's rotation
    # states what its replaced key had cosigned of each (16.6).
    any_ledger_keys = ledger_checkpoint_keys(
        config, ClusterChains(store, StreamRows(replication), configured_home_keys(config)), book
    )
    # The observers' tallies, read when an observer's key rotates (its record states what it tallied, 16.6).
    tallies = TallyBoard(replication.client, replication.namespace)
    admin = RegistryAdmin(
        registry,
        cache,
        # Every node that enforces accounts, not only the ingest nodes: a key an admin has just
        # added was refused by a replica still proving its record, silently (a refused key gets
        # no answer), after `user add` had answered (acct27).
        list(config.nodes),
        config.ingest.account_wait_ms,
        admin_ledger,
        factors,
        {n.name: n.role for n in config.nodes.values()},
        # A lambda: MemberGates replaces its histories at each change, never changes them in place.
        history_of=lambda node: runtime.gates.histories.get(node),  # noqa: PLW0108
        # Each ledger's notes checked with that ledger's own key chain and epochs (13.8, 10.9),
        # whichever node homes it, from this store or else the Redis stream (outsider o19 F1).
        cosigned_by=functools.partial(largest_cosigned, replication, config.name, any_ledger_keys),
        # The ledgers its own store holds first: Redis's hash may hold any name an ingest user put there.
        tallied_by=lambda node, sign: tallied_heights(tallies, [*store.ledgers(), *replication.ledgers()], node, sign),
    )
    if admin_ledger is not None:
        refill = admin_ledger.refill

        def upkeep() -> None:
            refill()
            # A host's enrollment recorded within a poll, not at the next admin command: until
            # then its factor is Redis's word, or refused where the ledger names another (r24 F7).
            admin.record_host_enrollments()

        cache.upkeep = upkeep

    def signing_key_now(ledger: str) -> VerifierKey | None:
        # A standby promoted signs its epochs with its own key (10.9); any other home along the
        # ledger's key chain (13.8).
        standby = config.standby_of(ledger)
        if standby is not None and standby.name == name and homes.home_of(ledger).name == name:
            return home_key(config.name, ledger, public)
        return chains.current(ledger)

    # A round of pipelined puts has its contents decoded and checked by a process of its own
    # (ingest/content_check.py), with the node's limits: off the request thread's GIL.
    content_check = runtime.started(ContentChecker(config.settings.limits, config.ingest.max_message_bytes))
    metrics.collect_with(
        counter_collector(
            "vledger_content_check_restarts",
            "content-check processes started again after one died, hung or was slow",
            lambda: content_check.restarts,
        )
    )
    service = IngestService(
        config,
        node,
        store,
        CachedAccounts(cache, members=runtime.gates.members),
        admin,
        EndpointKeys(runtime.gates, [n.name for n in config.ingest_nodes()]),
        domain,
        executor,
        __version__,
        replicas=watch,
        checkpoints=outbox,
        refused=refused,
        checkpoint_key=public,
        cosignatures=KnownCosignatures(
            config.name,
            store,
            replication,
            witnesses,
            signing_key_now,
            rotated=lambda: witness_keys_in_force(config.name, runtime.gates.histories, followers, now_ms()),
            epochs_of=book.history,
            histories=lambda: runtime.gates.histories,
        ),
        keys=signer,
        chains=chains.stored,
        second_factor=factors,
        homes=homes.home_of,
        replaced=functools.partial(homes.replaced, name=name),
        promotion=Promotion(
            config,
            name,
            homes,
            replication,
            witnesses,
            public,
            grants=domain.grants,
            answers=functools.partial(_answers, runtime, redis_client=replication.client),
        ),
        status=standby_fields,
        content_check=content_check,
    )
    if followed:
        follow = runtime.started(StandbyFollow(runtime, store, replication, book, homes, followed))
        standby = follow
        metrics.collect_with(
            counter_collector(
                "vledger_standby_follow_restarts",
                "times the standby follow ran again after a bug",
                lambda: follow.restarts.count,
            )
        )
        log.info("ingest node %s is the standby of %s", name, ", ".join(followed))
    _settle_heap()
    runtime.serve(server, MeteredService(service, metrics))


def _checkpoint_key_alert(replication: ReplicationLedger, name: str, ledger: str, why: str | None) -> None:
    """A home that lacks the private key in force for ``ledger`` (``why``) raises
    ``no_checkpoint_key`` against itself (outsider o21 F2: the alerts blamed the replicas as
    lagging); one that holds it resolves it (a file put back, the node restarted)."""
    key = f"{name}|{ledger}|{CheckpointKeyMissingError.code}"
    if why is None:
        try:
            if replication.resolve([key]):
                log.info("%s holds the checkpoint key in force for %s again: its alert is resolved", name, ledger)
        except REDIS_ERRORS as e:
            log.warning("the %s alert could not be resolved in Redis: %s", key, e)
        return
    log.error("%s refuses the writes of %s: %s", name, ledger, why)
    raise_alert(replication, Alert(name, ledger, 0, CheckpointKeyMissingError.code, why, source=name))
