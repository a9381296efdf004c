"""An ingest node process: `vledger ingest --config config/cluster.toml --node NAME`.

Start-up order matters for safety: the store opens (and checks its heads), the accounts
load, the CURVE socket binds with the allow-list already in place, and the node proves
that an unlisted key is refused before it answers anyone. SIGTERM and SIGINT stop it
cleanly: no new requests, the ones in flight answered, the store's queue committed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import zmq
import zmq.asyncio

from .. import __version__
from ..broker.accounts import AccountCache, AccountRegistry
from ..broker.curve import AllowList, CurveServer
from ..broker.keys import load_public, load_secret
from ..broker.redis_server import connect
from ..config.cluster import ClusterConfig
from ..config.settings import BrokerSettings
from ..node.errors import SettingsError
from ..node.rules.engine import RulesEngine
from ..node.store import ChainStore
from .accounts import CachedAccounts, RegistryAdmin
from .loop import serve
from .service import IngestService

log = logging.getLogger(__name__)


def node_keys(config: ClusterConfig) -> dict[str, str]:
    """The public keys of the ingest nodes this node can name in a not_home answer."""
    keys = {}
    for node in config.ingest_nodes():
        path = config.public_key_path(node.name)
        if path.is_file():
            keys[node.name] = load_public(path)
    return keys


def run_ingest(config: ClusterConfig, name: str, passphrase: str | None = None) -> None:
    node = config.node(name)
    if node.role != "ingest":
        raise SettingsError(f"{config.path}: node {name!r} is a {node.role} node, not an ingest node")
    keys = load_secret(config.secret_key_path(name), passphrase)
    registry = AccountRegistry(connect(os.environ.get("REDIS_URL") or config.redis_url))
    broker = BrokerSettings(max_message_bytes=2 * config.ingest.max_message_bytes)
    domain = RulesEngine()
    store = ChainStore(
        config.store_dir(name),
        origin=name,
        limits=config.settings.limits,
        settings=config.settings.store,
        domain=domain,
    )
    allow_list = AllowList()
    cache = AccountCache(registry, name, on_change=allow_list.replace, poll_interval=broker.accounts_poll_ms / 1000)
    executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"{name}-admin")
    try:
        cache.start()
        with CurveServer(keys, f"tcp://{node.host}:{node.port}", allow_list, settings=broker) as server:
            server.self_test()
            admin = RegistryAdmin(
                registry, cache, [n.name for n in config.ingest_nodes()], config.ingest.account_wait_ms
            )
            service = IngestService(
                config, node, store, CachedAccounts(cache), admin, node_keys(config), domain, executor, __version__
            )
            log.info("ingest node %s serving on %s", name, server.endpoint)
            asyncio.run(_serve(server, service))
    finally:
        cache.stop()
        executor.shutdown(wait=True)
        store.close()
        log.info("ingest node %s stopped", name)


async def _serve(server: CurveServer, service: IngestService) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # The authenticated socket lives in the process's synchronous Context (where the ZAP
    # handler runs); an asyncio shadow of that same socket keeps the authentication.
    socket = zmq.asyncio.Socket.from_socket(server.socket)
    await serve(socket, service, stop)
