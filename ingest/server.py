"""An ingest node process: `vledger ingest --config config/cluster.toml --node NAME`.

Start-up order matters for safety: the store opens (and checks its heads), the accounts
load, the CURVE socket binds with the allow-list already in place, and the node proves
that an unlisted key is refused before it answers anyone. SIGTERM and SIGINT stop it
cleanly: no new requests, the ones in flight answered, the store's queue committed.
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor

from .. import __version__
from ..broker.feed import Publisher
from ..broker.replication import REDIS_ERRORS, ReplicationLedger, raise_alert
from ..broker.signing import load_signing_key, load_verify_key, signing_key_paths
from ..config.cluster import FOLLOWER_ROLES, ClusterConfig
from ..node.checkpoint_log import SIGNED
from ..node.note import VerifierKey
from ..node.rules.admin import ADMIN_LEDGER
from ..node.rules.engine import RulesEngine
from ..node.store import ChainStore
from ..node.witness import CheckpointKeys, HomeSigner, home_key, witness_key, witness_name
from .accounts import CachedAccounts, RegistryAdmin
from .admin_ledger import AdminLedger
from .cosignatures import KnownCosignatures
from .members import EndpointKeys
from .metrics import MeteredService, NodeMetrics, gauge_collector, redis_check, store_collector
from .outbox import Outbox
from .runtime import SHUTDOWN_LINGER_MS, NodeRuntime
from .second_factor import cluster_second_factors
from .service import IngestService
from .witness import check_published, contradiction_alert, self_check
from .write_concern import CosignatureWatch

log = logging.getLogger(__name__)


def witness_keys(config: ClusterConfig) -> dict[str, VerifierKey]:
    """The cosignature key of every replica and observer whose ``<name>.sign.pub`` exists."""
    keys = {}
    for node in config.nodes.values():
        path = signing_key_paths(config.keys_dir, node.name)[1]
        if node.role in FOLLOWER_ROLES and path.is_file():
            keys[node.name] = witness_key(witness_name(config.name, node.name), load_verify_key(path).raw)
    return keys


def _published(replication: ReplicationLedger, ledger: str) -> list[bytes]:
    """The checkpoint notes of ``ledger`` Redis holds: the home's latest and the witnesses' (unchecked)."""
    latest = replication.checkpoints().get(ledger)
    return [*([latest] if latest is not None else []), *replication.cosignatures(ledger).values()]


def run_ingest(config: ClusterConfig, name: str, passphrase: str | None = None) -> None:
    with NodeRuntime.open(config, name, ("ingest",), passphrase) as runtime:
        _run_ingest(runtime, passphrase)


def _run_ingest(runtime: NodeRuntime, passphrase: str | None) -> None:
    config, node, name = runtime.config, runtime.node, runtime.name
    signing = load_signing_key(signing_key_paths(config.keys_dir, name)[0], passphrase)
    signer = HomeSigner(config.name, signing.seed)
    registry = runtime.registry()
    factors = cluster_second_factors(config, registry.client)  # production without its key: refused here
    replication = runtime.replication(stream_max_len=config.replication.stream_max_len)
    # The cluster file's [settings.broker], with ZMQ_MAXMSGSIZE at twice the protocol's message
    # limit: requests in between get a message_too_large answer rather than a cut connection.
    broker = dataclasses.replace(config.settings.broker, max_message_bytes=2 * config.ingest.max_message_bytes)
    # The accounts cache, started below once the admin ledger filled Redis (it reads grants there).
    cache = runtime.gates.account_cache(registry, name, config.settings.broker.accounts_poll_ms / 1000)
    # Grants: the engine judges by the admin ledger it holds (on its home), else by the
    # cache's copy of it; records placed here come after the last admin record applied.
    domain = RulesEngine(grants=lambda: cache.grants)
    store = ChainStore(
        config.store_dir(name),
        origin=name,
        limits=config.settings.limits,
        settings=config.settings.store,
        domain=domain,
        accepted_floor=cache.accepted_floor,
    )
    runtime.closing(store.close)  # last of what follows: the queue committed once nothing else writes
    # A store that no longer holds a checkpoint this home signed is refused writes, ledger by
    # ledger, and said so at once: it is never "fixed" by signing what it holds now.
    # So is one that does not hold a checkpoint it signed that Redis still has (its latest, and
    # those its witnesses cosigned): its own table of them may have gone with the store.
    public = signing.public.raw
    refused = self_check(store, SIGNED)
    try:
        published = {ledger: _published(replication, ledger) for ledger in store.ledgers()}
    except REDIS_ERRORS as e:
        log.warning("ingest node %s: Redis unavailable (%s): its store is checked against its own table only", name, e)
        published = {}
    own = CheckpointKeys(config.name, lambda ledger: home_key(config.name, ledger, public))
    for ledger, error in check_published(store, own, published).items():
        refused.setdefault(ledger, error)
    for ledger, error in refused.items():
        log.error("ingest node %s refuses writes to %s: %s", name, ledger, error)
        kept = store.checkpoints.latest(ledger, SIGNED)
        raise_alert(replication, contradiction_alert(name, kept.root if kept is not None else None, error))
    admin_ledger = AdminLedger(store, registry) if config.home_of(ADMIN_LEDGER).name == name else None
    executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"{name}-admin")
    runtime.closing(lambda: executor.shutdown(wait=True))
    if admin_ledger is not None:
        admin_ledger.sync()  # Redis is a cache of the admin ledger: fill or rebuild it first
    runtime.started(cache)
    witnesses = witness_keys(config)
    assert node.bind_feed_endpoint is not None  # the configuration requires it of an ingest node
    publisher = Publisher(
        name, runtime.keys, node.bind_feed_endpoint, runtime.gates.feed, broker, config.replication.send_hwm
    )
    # Closed after the outbox stopped (added before it): what the last group commits made
    # durable goes out before the feed closes.
    runtime.closing(lambda: publisher.close(linger_ms=SHUTDOWN_LINGER_MS))
    publisher.self_test()
    outbox = Outbox(name, store, publisher, replication, config.replication, signer=signer, refused=refused)
    store.on_commit = outbox.committed
    runtime.started(outbox)
    metrics = NodeMetrics(node)
    metrics.collect_with(store_collector(store, config, name, None))
    metrics.collect_with(gauge_collector("vledger_outbox_backlog", "commits not yet published", outbox.backlog))
    runtime.health(metrics, {"store": lambda: None, "redis": redis_check(replication)})
    watch = runtime.started(
        CosignatureWatch(
            name,
            replication,
            store.checkpoints,
            cluster=config.name,
            witnesses=witnesses,
            log_key_of=lambda ledger: home_key(config.name, ledger, public),
            on_alert=lambda alert: raise_alert(replication, alert),
            ignored=[n.name for n in config.nodes_of("observer")],
        )
    )
    # The authenticated socket of the process's one Context, where the ZAP handler runs; closed
    # first at the end, with a linger: answers still queued in ZeroMQ go out.
    server = runtime.request_server(broker)
    admin = RegistryAdmin(
        registry,
        cache,
        [n.name for n in config.ingest_nodes()],
        config.ingest.account_wait_ms,
        admin_ledger,
        factors,
        {n.name: n.role for n in config.nodes.values()},
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
            config.name, store, replication, witnesses, lambda ledger: home_key(config.name, ledger, public)
        ),
        second_factor=factors,
    )
    runtime.serve(server, MeteredService(service, metrics))
