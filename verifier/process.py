"""The verifier process: `vledger verifier --config config/cluster.toml --node NAME`.

One thread runs the checks of vledger.verifier.checks in slices (new records, heads, paced
sweeps); another serves ``hello``, ``ver`` and ``status`` on the verifier's CURVE ROUTER, so
that supervise and ``vledger status`` can ask it how far it got. It reads every node with
its node key (the nodes admit the cluster's members), and writes alerts, checkpoints and its
consumer group's acknowledgements to Redis. SIGTERM and SIGINT stop it after the slice in
hand; what it read and did not acknowledge is read again at the next start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import __version__
from ..broker.accounts import AccountRegistry
from ..broker.client import Client, NodeAddress
from ..broker.curve import CurveServer, process_context, stop_authenticator
from ..broker.keys import KeyPair, load_public, load_secret
from ..broker.redis_server import connect
from ..broker.replication import REDIS_ERRORS, ReplicationLedger
from ..config.cluster import ClusterConfig
from ..ingest.accounts import CachedAccounts
from ..ingest.loop import RequestLoop, stopped_by_signals
from ..ingest.members import MemberGates
from ..ingest.metrics import (
    MeteredService,
    NodeMetrics,
    alerts_collector,
    counter_collector,
    health_server,
    redis_check,
)
from ..ingest.server import REPLICATION_REDIS_TIMEOUT, SHUTDOWN_LINGER_MS
from ..node.errors import BadRequestError, ForbiddenError, SettingsError, UnknownCommandError, VledgerError
from ..node.wire import PROTOCOL_VERSION, parse_request, reply_error, reply_ok, request_id_of
from .checks import ClusterChecks, NodeReader

log = logging.getLogger(__name__)

RETRY_PAUSE = 1.0
MAX_REQUEST_BYTES = 64 * 1024


class StatusService:
    """What the verifier's socket answers: who it is and how far its checks got (read-only)."""

    def __init__(self, name: str, accounts: CachedAccounts, status: Callable[[], dict[str, Any]]) -> None:
        self.name = name
        self.accounts = accounts
        self.status = status

    def handle(self, key: str, data: bytes) -> bytes:
        request_id = None
        try:
            request = parse_request(data, MAX_REQUEST_BYTES)
            request_id = request.id
            caller = self.accounts.lookup(key)
            if caller is None:
                raise ForbiddenError("this key may not use this node")
            if request.cmd == "hello":
                result: object = {
                    "node": self.name,
                    "version": __version__,
                    "protocol": PROTOCOL_VERSION,
                    "ledgers": [],
                    "account": caller.account,
                    "role": caller.role,
                    "node_role": "verifier",
                }
            elif request.cmd == "ver":
                result = {"version": __version__, "protocol": PROTOCOL_VERSION}
            elif request.cmd == "status":
                result = self.status()
            else:
                raise UnknownCommandError(f"unknown command {request.cmd!r}; a verifier answers hello, ver, status")
            return reply_ok(request_id, result)
        except VledgerError as e:
            return reply_error(request_id if request_id is not None else request_id_of(data), e)
        except Exception:  # a bug: answer, log, keep serving
            log.exception("status request failed")
            return reply_error(request_id, BadRequestError("the verifier could not answer; it logged why"))


def node_readers(
    config: ClusterConfig, keys: KeyPair, timeout: float, clock: Callable[[], float]
) -> dict[str, NodeReader]:
    readers = {}
    for node in config.nodes.values():
        if node.role == "verifier":
            continue
        client = Client(
            NodeAddress(node.endpoint, load_public(config.public_key_path(node.name))),
            keys,
            timeout=timeout,
            follow=False,  # each node's own copy is checked, never its home's in its place
        )
        readers[node.name] = NodeReader(node, client, config.ingest.page_size, clock)
    return readers


def run_verifier(config: ClusterConfig, name: str, passphrase: str | None = None) -> None:
    node = config.node(name)
    if node.role != "verifier":
        raise SettingsError(f"{config.path}: node {name!r} is a {node.role} node, not a verifier")
    keys = load_secret(config.secret_key_path(name), passphrase)
    redis_access = config.redis_access("verifier")
    registry = AccountRegistry(connect(redis_access))
    replication = ReplicationLedger(connect(redis_access, timeout=REPLICATION_REDIS_TIMEOUT))
    gates = MemberGates(config, name)  # the verifier has no feed: only its request list is used
    members, allow_list = gates.members, gates.requests
    cache = gates.account_cache(registry, name, config.settings.broker.accounts_poll_ms / 1000)
    readers = node_readers(config, keys, config.verifier.node_timeout_ms / 1000, time.monotonic)
    checks = ClusterChecks(name, config, replication, readers)
    ctx = process_context()
    stopping = threading.Event()
    try:
        cache.start()
        metrics = NodeMetrics(node)
        metrics.collect_with(alerts_collector(replication))
        for series, text, read in (
            ("vledger_checked_records", "stream entries checked on every copy", lambda: checks.checked),
            ("vledger_swept_records", "records re-verified by sweeps", lambda: checks.swept),
            ("vledger_alerts_raised", "alerts this verifier raised", lambda: checks.alerts),
        ):
            metrics.collect_with(counter_collector(series, text, read))
        with (
            health_server(node, metrics, {"redis": redis_check(replication)}),
            CurveServer(keys, node.bind_endpoint, allow_list, settings=config.settings.broker) as server,
        ):
            server.self_test()
            service = StatusService(name, CachedAccounts(cache, members=members), checks.status)
            with RequestLoop(server.socket, MeteredService(service, metrics)) as loop:
                answering = threading.Thread(target=loop.serve, name=f"status-{name}", daemon=True)
                answering.start()
                with stopped_by_signals(stopping, loop):
                    log.info("verifier %s checking %d nodes; status on %s", name, len(readers), server.endpoint)
                    _check(checks, stopping)
                loop.stop()
                answering.join()
            server.close(linger_ms=SHUTDOWN_LINGER_MS)
    finally:
        for reader in readers.values():
            reader.client.close()
        cache.stop()
        stop_authenticator(ctx)
        ctx.destroy(linger=0)
        log.info("verifier %s stopped", name)


def _check(checks: ClusterChecks, stopping: threading.Event) -> None:
    started = False
    while not stopping.is_set():
        try:
            if not started:
                checks.start()
                started = True
            checks.tick()
        except REDIS_ERRORS as e:
            log.warning("Redis unavailable (%s); retrying", e)
            stopping.wait(RETRY_PAUSE)
