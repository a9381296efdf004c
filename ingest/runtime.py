"""One runtime for every node process: ingest, replica, observer and verifier.

Each process used to wire its keys, Redis clients, accounts cache, CURVE request socket,
threads and signals by hand, and to undo them in a ``finally`` of its own. A
:class:`NodeRuntime` does it once: what a process starts it adds to the runtime's
``contextlib.ExitStack``, which stops and closes everything in the reverse order, whatever
happened; the process's ZeroMQ Context ends last, after every socket of it closed (with its
linger, so answers still queued go out). ``serve`` runs the request socket's loop on this
thread (an ingest node) or beside the process's own main loop (a follower, a verifier),
until SIGTERM or SIGINT; moving a part of the work into a process of its own is then done
here once, not in each process.
"""

from __future__ import annotations

import faulthandler
import functools
import logging
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

import zmq

from ..broker.accounts import AccountCache, AccountRegistry
from ..broker.admin_copy import KEPT_ADMIN_COPY, AdminSource, KeptAdminCopy, SignedAdminSource
from ..broker.alert_journal import ALERT_JOURNAL, AlertJournal
from ..broker.curve import CurveServer, process_context, stop_authenticator
from ..broker.curve_guard import ConnectionGuard, CurveGuardMetrics, raise_file_limit
from ..broker.feed import Publisher
from ..broker.http import Check, Details
from ..broker.keys import KeyPair, load_secret
from ..broker.node_lock import node_lock
from ..broker.redis_server import connect
from ..broker.replication import (
    REDIS_ERRORS,
    STORE_DAMAGED,
    Alert,
    ReplicationLedger,
    raise_alert,
    store_damaged_alert,
)
from ..broker.signing import admin_checkpoint_key
from ..config.cluster import FOLLOWER_ROLES, ClusterConfig, NodeConfig
from ..config.settings import BrokerSettings
from ..node.errors import DiskFullError, RecordError, SettingsError, StoreDamagedError, StoreError
from ..node.rules.admin import ADMIN_LEDGER
from ..node.store import HASH_FILL_AT, ChainStore, fill_phase
from ..node.storefile import damaged_file, no_room
from .admin_ledger import ADMIN_CACHE_CONFLICT
from .admin_peers import AdminPeers
from .alert_keeper import AlertKeeper
from .loop import RequestLoop, Service
from .members import MemberGates, now_ms
from .metrics import NodeMetrics, health_server
from .node_key_rotation import ClientKeys, RotatingKeys, serving_generations
from .worker import Worker

log = logging.getLogger(__name__)

# Python's default switch interval is 5 ms. A node's threads give the GIL up at each fsync and
# send; another thread that took it meanwhile keeps it up to the interval when it does not block:
# a put waiting after its fsync (sequential puts, 2 x 3,000 under load: p50 0.62 -> 0.58 and
# 0.63 -> 0.55 ms), a replica's committer or relay behind the thread verifying a batch.
GIL_SWITCH_INTERVAL_S = 0.0005

SHUTDOWN_LINGER_MS = 2000  # answers still queued in ZeroMQ get this long to go out at a stop
# Seconds a call of a node's Redis clients may wait: past it, the replication work goes on
# without Redis, and an accounts call fails rather than hang its caller on a wedged Redis.
NODE_REDIS_TIMEOUT = 2.0


DISK_FULL = DiskFullError.code  # the alert of a node whose disk has no room (PROTOCOL 10.5)
ROOM_RETRY_S = 2.0  # how often a node that cannot start for want of room tries again
_OPEN_FAILS = (StoreError, RecordError, sqlite3.DatabaseError)  # what an open raises of a file it finds damaged


def open_node_store(node: str, directory: Path, replication: ReplicationLedger, **options: Any) -> ChainStore:
    """Node ``node``'s ChainStore at ``directory`` (``options`` as ChainStore takes them).

    A store that fails a check made when it opens (a changed record or tree row, a head that
    is not its record: a StoreError or RecordError; a file SQLite finds malformed) is logged,
    raises the ``store_damaged`` alert naming the node, the check's code and where (PROTOCOL
    10.5), and then StoreDamagedError, which ends the process with EXIT_STORE_DAMAGED:
    supervisord does not start it again on the same store (config/supervisor.py). A store that opens resolves the
    node's ``store_damaged`` alert (it was repaired or restored). Redis down costs only the
    alert or its resolution (the log keeps what happened).
    """
    try:
        store = ChainStore(directory, **options)
    except _OPEN_FAILS as e:
        alert = _damaged(node, directory, e)
        if alert is None:
            raise
        log.error("node %s: its store does not open, the node does not start: %s", node, alert.detail)
        raise_alert(replication, alert)
        raise StoreDamagedError(alert.detail) from e
    try:
        if replication.resolve_node(node, "", [STORE_DAMAGED]):
            log.info("node %s: its store opens again: its %s alert is resolved", node, STORE_DAMAGED)
    except REDIS_ERRORS as e:
        # Not "stays open": a node new to the cluster has none (outsider o21 F6).
        log.warning("node %s: Redis unavailable (%s): a %s alert an earlier start may have left open is not"
                    " resolved", node, e, STORE_DAMAGED)  # fmt: skip
    return store


def store_options(config: ClusterConfig, name: str) -> dict[str, Any]:
    """What node ``name`` opens its store with (ChainStore's options), as far as the checks of
    an open go: an ingest node's records are its own (``origin``); a follower's file that lost
    records is cut back to those it holds whole (``cut_back``; a home's is never)."""
    options: dict[str, Any] = {"limits": config.settings.limits, "settings": config.settings.store}
    if config.node(name).role in FOLLOWER_ROLES:
        options["cut_back"] = True
    else:
        options["origin"] = name
    return options


def start_refusal(node: str, directory: Path, **options: Any) -> str | None:
    """Why node ``node``'s start would refuse its store at ``directory`` now (the detail of the
    ``store_damaged`` alert :func:`open_node_store` raises), None when it opens: the same open
    and checks, with the node's ``options``, then closed; nothing is raised in Redis. Does to the
    file what the node's next start does (a follower's ``cut_back``); its node must be stopped."""
    try:
        with ChainStore(directory, **options):
            return None
    except _OPEN_FAILS as e:
        alert = _damaged(node, directory, e)
        if alert is None:
            raise
        return alert.detail


def _damaged(node: str, directory: Path, error: StoreError | RecordError | sqlite3.DatabaseError) -> Alert | None:
    """The ``store_damaged`` alert of a store whose open raised ``error``, None when the error
    says nothing of the file (the caller raises it again)."""
    # The store wraps SQLite's errors (storefile.connect), and some come through bare.
    cause = error if isinstance(error, sqlite3.Error) else error.__cause__
    if isinstance(cause, sqlite3.OperationalError) and damaged_file(cause) is None:
        return None  # locked, busy, out of space or file handles: what the moment holds, not the file
    # Else a check failed, or the file is "not a database" / "malformed": a damaged file.
    if isinstance(error, sqlite3.Error):
        return store_damaged_alert(node, StoreError(f"{directory}: the store's file is damaged: {error}"))
    return store_damaged_alert(node, error)


UNBACKED_ACCOUNT = "unbacked_account"  # the alert of Redis's account entries no admin record backs (10.5)
_UNBACKED_NAMED = 20  # how many of them an alert names


def unbacked_alerts(node: str, replication: ReplicationLedger) -> Callable[[list[str]], None]:
    """What node ``node`` does with the keys Redis's accounts let in that no admin record does
    (``account (fingerprint)``, broker/accounts.py ``unbacked``): raise ``unbacked_account``
    naming them and what the node does with each (PROTOCOL 10.5), or resolve it once none is
    left. Raises Redis's errors: the accounts cache reports again at its next heartbeat (an
    alert left open once Redis was right again stayed open, outsider o8 J2)."""

    def report(found: list[str]) -> None:
        if not found:
            replication.resolve_node(node, "", [UNBACKED_ACCOUNT])
            return
        named = ", ".join(found[:_UNBACKED_NAMED]) + (", ..." if len(found) > _UNBACKED_NAMED else "")
        detail = f"Redis's accounts hold {len(found)} entr(y/ies) that no admin record backs: {named}"
        replication.alert(Alert(node, "", 0, UNBACKED_ACCOUNT, detail, source="redis"))

    return report


# An enrolled admin's factor gone from Redis, or not the one the ledger records (10.5).
SECOND_FACTOR_MISSING = "second_factor_missing"


def missing_factor_alerts(node: str, replication: ReplicationLedger) -> Callable[[list[str]], None]:
    """What node ``node`` does with the accounts the admin ledger records as enrolled whose
    second factor Redis lacks (someone who writes Redis deleted it: their admin commands are
    refused meanwhile, ingest/second_factor.py): raise ``second_factor_missing`` on the admin
    ledger naming them, or resolve it once each was found again (``[]``). Redis down costs
    the alert (the node's log keeps the finding)."""

    def report(missing: list[str]) -> None:
        try:
            if not missing:
                replication.resolve_node(node, ADMIN_LEDGER, [SECOND_FACTOR_MISSING])
                return
            detail = (
                f"the admin ledger records a second factor for {', '.join(missing)}, which Redis lacks "
                "(or holds another one, put back or not yet recorded): "
                "their admin commands are refused until an admin resets it (vledger admin totp reset) "
                "or a host enrolls it again (vledger admin bootstrap --totp)"
            )
            replication.alert(Alert(node, ADMIN_LEDGER, 0, SECOND_FACTOR_MISSING, detail, source="redis"))
        except REDIS_ERRORS as e:
            log.error("node %s: second_factor_missing for %s not recorded in Redis (%s)", node, missing, e)

    return report


REDIS_LOST = "redis_lost"  # the alert of what Redis lost while the admin home ran (10.5)


def redis_lost_alert(node: str, replication: ReplicationLedger) -> Callable[[str | None], None]:
    """What the admin home ``node`` does once it put back what Redis lost of the admin ledger's
    cache or the accounts (``detail``, AdminLedger.refill): raise ``redis_lost`` about ``redis``
    (PROTOCOL 10.5); and resolve it (``detail`` None) once Redis holds them again with a
    checkpoint that proves them, so that one loss is one alert, open while a node cannot prove
    Redis's copy. Redis down costs the alert (the node's log keeps the finding)."""

    def report(detail: str | None) -> None:
        if detail is not None:
            raise_alert(replication, Alert("redis", ADMIN_LEDGER, 0, REDIS_LOST, detail, source=node))
            return
        try:
            replication.resolve_node("redis", ADMIN_LEDGER, [REDIS_LOST])
        except REDIS_ERRORS as e:
            log.warning("node %s: its %s alert is not resolved, Redis unavailable (%s)", node, REDIS_LOST, e)

    return report


ADMIN_UNPROVEN = "admin_unproven"  # the alert of a node whose proof of Redis's admin copy is stuck (10.5)


def unproven_alerts(node: str, replication: ReplicationLedger) -> Callable[[str | None], None]:
    """What node ``node`` does when Redis's copy of the admin ledger has held records it cannot
    prove for a while (``problem``; broker/accounts.py): raise ``admin_unproven``, or resolve it
    once it proves the whole copy again (None). Redis down costs the alert (the log keeps it)."""
    return problem_alerts(node, replication, ADMIN_LEDGER, ADMIN_UNPROVEN, "redis")


def replaced_applied_alert(node: str, replication: ReplicationLedger) -> Callable[[str], None]:
    """What node ``node`` does once it replaced its applied key, found of another type: raise
    ``admin_cache_conflict`` about ``redis`` (``height`` 0, PROTOCOL 10.5), the evidence that
    someone who may write Redis wrote there; an operator resolves it."""

    def report(detail: str) -> None:
        raise_alert(replication, Alert("redis", ADMIN_LEDGER, 0, ADMIN_CACHE_CONFLICT, detail, source=node))

    return report


ACCOUNTS_FAILING = "accounts_failing"  # the alert of a node whose loads of the accounts keep failing (10.5)


def problem_alerts(
    node: str, replication: ReplicationLedger, ledger: str, what: str, source: str = ""
) -> Callable[[str | None], None]:
    """Raise node ``node``'s alert ``what`` about ``ledger``, a problem's sentence its detail,
    or resolve it (None). Redis down costs the alert (the log keeps it)."""

    def report(problem: str | None) -> None:
        if problem is None:
            try:
                replication.resolve_node(node, ledger, [what])
            except REDIS_ERRORS as e:
                log.warning("node %s: its %s alert is not resolved, Redis unavailable (%s)", node, what, e)
            return
        raise_alert(replication, Alert(node, ledger, 0, what, problem, source=source))

    return report


class Startable(Protocol):
    def start(self) -> object: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=Startable)
T = TypeVar("T")


@contextmanager
def stopped_by_signals(
    loop: RequestLoop, stopping: threading.Event | None = None, on_stop: Callable[[], None] | None = None
) -> Iterator[None]:
    """While inside: SIGTERM and SIGINT stop ``loop``, set ``stopping`` (a process's own main
    loop, if it has one) and call ``on_stop``, at once even when another thread receives them:
    the signal's byte on the loop's wake-up pipe ends its poll. Python runs the handler on the
    main thread, inside the call it was waiting in when that call is interrupted (a ZeroMQ
    receive, which then waits on): ``on_stop`` may end such a wait (NodeRuntime.on_stop).
    Restores the old handlers on the way out."""

    def stop(*_: object) -> None:
        if stopping is not None:
            stopping.set()
        if on_stop is not None:
            on_stop()
        loop.stop()

    handlers = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    wakeup_fd = signal.set_wakeup_fd(loop.wake_fd, warn_on_full_buffer=False)
    # An operator's `kill -USR1 PID` writes every thread's stack to the process's log (stderr):
    # what a node that stopped answering is waiting on, without stopping it.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        yield
    finally:
        faulthandler.unregister(signal.SIGUSR1)
        signal.set_wakeup_fd(wakeup_fd)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def _end_context(ctx: zmq.Context[Any]) -> None:
    stop_authenticator(ctx)  # its ZAP socket first: a Context with a socket open never ends
    ctx.destroy(linger=0)


class NodeRuntime:
    """A node process's keys, Redis, Context, accounts and request socket, closed in order.

    Use :meth:`open` as a context manager; everything added through the runtime (or to
    ``stack``) is stopped or closed when it exits, the last added first.
    """

    def __init__(
        self, config: ClusterConfig, node: NodeConfig, keys: KeyPair, stack: ExitStack, passphrase: str | None = None
    ) -> None:
        self.config = config
        self.node = node
        self.name = node.name
        self.keys = keys
        self.stack = stack
        # The request socket's keys through a rotation (made by request_server).
        self.rotation: RotatingKeys | None = None
        # The feed socket's keys through a rotation (made by publisher).
        self.feed_rotation: RotatingKeys | None = None
        self._passphrase = passphrase  # opens the key generations a rotation adds
        # Its own Redis user (broker/redis_acl.py), at $REDIS_URL or the cluster file's URL.
        self.redis_access = config.redis_access(node.role, node.name)
        self.ctx = process_context()
        self.stopping = threading.Event()  # set by SIGTERM or SIGINT while serving
        self.gates = MemberGates(config, node.name)
        # The guards of its CURVE ports by name ("request", "feed"), as /metrics reports them.
        self.curve_guards: dict[str, ConnectionGuard] = {}
        # The key pair it connects to other nodes with: its newest CURVE generation (PROTOCOL 16.6).
        self.client_keys = ClientKeys(node.name, config.keys_dir, passphrase, keys)
        self.gates.on_rotation(self.client_keys.update)
        # Set once a read or write of the running node's store found its file damaged: the
        # node stops, and serve() then raises it (the process ends with EXIT_STORE_DAMAGED).
        self.damaged: StoreDamagedError | None = None
        self._loop: RequestLoop | None = None  # the request loop while serve() runs it
        self._on_stop: list[Callable[[], None]] = []  # called by SIGTERM and SIGINT (on_stop)
        self._store: ChainStore | None = None  # the node's store, once opened (store())
        self._accounts: AccountCache | None = None  # the accounts cache, once account_cache() made it
        self.workers: list[Worker] = []  # the background threads started(): /readyz's workers check
        self._alert_journal: AlertJournal | None = None  # opened by the first replication(), with its keeper

    @classmethod
    @contextmanager
    def open(
        cls, config: ClusterConfig, name: str, roles: tuple[str, ...], passphrase: str | None = None
    ) -> Iterator[Self]:
        """The runtime of node ``name``, which must have one of ``roles``.

        Raises SettingsError for a node of another role, KeyMaterialError for a key file
        that cannot be read (or a wrong passphrase), NodeRunningError when another process
        holds the node's store (the process then ends with EXIT_NODE_RUNNING).
        """
        node = config.node(name)
        if node.role not in roles:
            raise SettingsError(f"{config.path}: node {name!r} is a {node.role} node, not a {' or '.join(roles)}")
        keys = load_secret(config.secret_key_path(name), passphrase)
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        raise_file_limit()  # each connection of its CURVE and HTTP ports is a descriptor
        with ExitStack() as stack:
            # Before anything of the store is opened, and held to the process's end (broker/node_lock.py).
            stack.enter_context(node_lock(config.store_dir(name), f"node {name}"))
            # "ingest node ingest-1 stopped", "replica replica-1 stopped": what operators grep for.
            stack.callback(log.info, "%s %s stopped", "ingest node" if node.role == "ingest" else node.role, name)
            runtime = cls(config, node, keys, stack, passphrase)
            stack.callback(_end_context, runtime.ctx)  # after every socket added later was closed
            yield runtime

    # --- what a process adds -------------------------------------------------------------

    def registry(self) -> AccountRegistry:
        """The account registry on a Redis client of its own, whose calls give up after
        NODE_REDIS_TIMEOUT: without one, a Redis that took the connection and never answered
        held the accounts thread, an admin's account command and a node's start for ever.
        Waits on its channels are bounded by their own timeouts, not this one."""
        return AccountRegistry(connect(self.redis_access, timeout=NODE_REDIS_TIMEOUT))

    def replication(self, **options: Any) -> ReplicationLedger:
        """A ReplicationLedger on a Redis client of its own, whose calls give up after
        NODE_REDIS_TIMEOUT (the replication work goes on without Redis). It raises alerts
        and keeps evidence in this node's own keys, and reads every configured node's. Each
        keeps the node's alerts in its alert journal too, which a thread started with the first
        puts back into Redis when Redis lost them (PROTOCOL 10.5)."""
        options.setdefault("node", self.name)
        options.setdefault("raisers", sorted(self.config.nodes))
        if options["node"] != self.name:
            return ReplicationLedger(connect(self.redis_access, timeout=NODE_REDIS_TIMEOUT), **options)
        first = self._alert_journal is None
        if self._alert_journal is None:
            path = self.config.store_dir(self.name) / ALERT_JOURNAL
            self._alert_journal = self._with_room(path.parent, "alert journal", lambda: AlertJournal(path, self.name))
            self.closing(self._alert_journal.close)  # after the keeper and every part made later stopped
        client = connect(self.redis_access, timeout=NODE_REDIS_TIMEOUT)
        replication = ReplicationLedger(client, journal=self._alert_journal, **options)
        if first:
            interval = self.config.settings.broker.alerts_recheck_ms / 1000
            self.started(AlertKeeper(replication, interval))
        return replication

    def store(self, replication: ReplicationLedger, **options: Any) -> ChainStore:
        """The node's ChainStore in its store directory (``options`` as ChainStore takes them),
        closed when the runtime closes; see :func:`open_node_store` for what a damaged one does."""
        # The copies on one host fill apart, each at a phase below the fill size it was given
        # (no hash index, hash_fill_at=None: nothing to fill, phase 0).
        fill_at = options.get("hash_fill_at", HASH_FILL_AT)
        options.setdefault("hash_fill_phase", 0 if fill_at is None else fill_phase(self.name, fill_at))
        directory = self.config.store_dir(self.name)
        store = self._with_room(
            directory, "store", lambda: open_node_store(self.name, directory, replication, **options), replication
        )
        self.closing(store.close)
        store.on_damaged = functools.partial(self._store_damaged, replication)
        self._store = store
        return store

    def _with_room(
        self, directory: Path, what: str, open_: Callable[[], T], replication: ReplicationLedger | None = None
    ) -> T:
        """``open_()``'s result (``what`` the node opens in ``directory``), waited for while it
        fails for want of room on the disk (:func:`no_room`). A node started on a full disk
        crash-looped with a traceback every few seconds and never said so (outsider34 #1:
        SQLite says "disk I/O error" when it cannot make a -wal or -shm). Now it logs one
        "disk full:" line, raises the node's ``disk_full`` alert (through ``replication``, else
        straight to Redis: the alert journal may be what does not open), tries again every
        ROOM_RETRY_S and, once it opens, resolves the alert and starts. Anything else raises."""
        alert: Alert | None = None
        while True:
            try:
                opened = open_()
            except (sqlite3.Error, OSError, StoreError) as e:
                if not no_room(directory, e):
                    raise
                if alert is None:
                    log.error("disk full: %s: node %s cannot open its %s: it starts once there is room (%s)",
                              directory, self.name, what, e)  # fmt: skip
                    replication = replication or self._without_journal()
                    alert = Alert(self.name, "", 0, DISK_FULL, f"disk full: {directory}: {e}", source=self.name)
                    raise_alert(replication, alert)
                time.sleep(ROOM_RETRY_S)
                continue
            if alert is not None:
                log.warning("disk space back: %s: node %s opened its %s", directory, self.name, what)
            if replication is not None:  # also an earlier run's, which waited and was restarted (review r21 F4)
                try:
                    replication.resolve_node(self.name, "", [DISK_FULL])
                except REDIS_ERRORS as e:
                    log.warning("node %s: Redis unavailable (%s): a %s alert an earlier start may have left open"
                                " is not resolved", self.name, e, DISK_FULL)  # fmt: skip
            return opened

    def _without_journal(self) -> ReplicationLedger:
        """A ReplicationLedger that raises this node's alerts in Redis only."""
        client = connect(self.redis_access, timeout=NODE_REDIS_TIMEOUT)
        return ReplicationLedger(client, node=self.name, raisers=sorted(self.config.nodes))

    def _store_damaged(self, replication: ReplicationLedger, error: StoreDamagedError) -> None:
        """The store's file was found damaged while the node runs (ChainStore.damaged, on
        whichever thread read or wrote it): raise ``store_damaged`` as a store that does not
        open does (PROTOCOL 10.5), then stop. The requests in flight are answered (the one that
        found it, and any write of the failed commit, with ``store_damaged``: not acknowledged),
        and :meth:`serve` raises ``error``, which ends the process with EXIT_STORE_DAMAGED."""
        alert = store_damaged_alert(self.name, StoreError(error.message))
        log.error("node %s: its store is damaged while it runs, the node stops: %s", self.name, alert.detail)
        raise_alert(replication, alert)
        self.damaged = error
        self.stopping.set()
        loop = self._loop
        if loop is not None:
            loop.stop()

    def started(self, part: S) -> S:
        """``part`` started now and stopped when the runtime closes."""
        part.start()
        self.stack.callback(part.stop)
        if isinstance(part, Worker):
            self.workers.append(part)
        return part

    def closing(self, close: Callable[[], object]) -> None:
        """Call ``close`` when the runtime closes (in reverse order of what was added)."""
        self.stack.callback(close)

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` from the signal handler when SIGTERM or SIGINT stops :meth:`serve`,
        right after ``stopping`` is set: what ends a wait ``main`` may be in (the verifier ends
        its readers' ZeroMQ Context). It must not block: it runs on the main thread, maybe
        inside the very call it is to end."""
        self._on_stop.append(callback)

    def _stopped(self) -> None:
        for callback in self._on_stop:
            callback()

    def accounts(self, registry: AccountRegistry, replication: ReplicationLedger) -> AccountCache:
        """The accounts cache, started: it keeps ``gates`` (the request and feed allow-lists)
        current with the accounts of Redis's copy of the admin ledger, as far as its home's
        signed checkpoint proves it (:meth:`signed_admin`), and raises in ``replication`` the
        alert of Redis's entries no admin record backs (:meth:`account_cache`)."""
        self.stack.callback(self.gates.stop)  # its timer of key rotations, after the cache stopped
        return self.started(self.account_cache(registry, self.signed_admin(registry), replication))

    def account_cache(
        self, registry: AccountRegistry, admin: AdminSource, replication: ReplicationLedger
    ) -> AccountCache:
        """The node's accounts cache (not started), enforcing the accounts of the admin ledger
        ``admin`` gives; it raises ``unbacked_account`` (PROTOCOL 10.5) while Redis's accounts let
        in a key that no admin record does, and resolves it once none is left."""
        poll = self.config.settings.broker.accounts_poll_ms / 1000
        cache = self.gates.account_cache(
            registry,
            self.name,
            poll,
            admin,
            unbacked_alerts(self.name, replication),
            unproven_alerts(self.name, replication),
        )
        cache.on_failing = problem_alerts(self.name, replication, "", ACCOUNTS_FAILING)
        cache.on_replaced = replaced_applied_alert(self.name, replication)
        self._accounts = cache
        return cache

    def signed_admin(self, registry: AccountRegistry) -> SignedAdminSource:
        """Redis's copy of the admin ledger as far as its home's checkpoint proves it (PROTOCOL 16.4),
        what the node proved of it kept in its data directory for a start while Redis lost it, and
        the copies of the nodes that hold it, asked at its start (Redis's silence proves nothing)."""
        kept = KeptAdminCopy(self.config.store_dir(self.name) / KEPT_ADMIN_COPY)
        admin_key = admin_checkpoint_key(self.config)
        peers = AdminPeers(self.config, self.name, self.client_keys.candidates, admin_key)
        return SignedAdminSource(registry.client, admin_key, registry.namespace, kept=kept, peers=peers)

    def request_server(self, settings: BrokerSettings, metrics: NodeMetrics | None = None) -> CurveServer:
        """The node's CURVE request socket on its endpoint, admitting ``gates.requests``, once
        it has proved that an unlisted key is refused (AuthSelfTestError otherwise); its
        connection guard's counts go to ``metrics`` when given (PROTOCOL 15.3).

        It serves the key generation the admin ledger says is in force on its endpoint (the
        accounts cache, started before, has read it), and follows the node's key rotations
        from then on (ingest/node_key_rotation.py). Raises KeyMaterialError when that generation's
        secret key file is missing or holds another key.
        """
        rotation, keys = self._rotating(None)
        self.rotation = rotation
        server = CurveServer(
            keys, self.node.bind_endpoint, self.gates.requests, settings=settings, ctx=self.ctx, guarded=True
        )
        self.stack.callback(server.close, SHUTDOWN_LINGER_MS)
        if server.guard is not None:
            self.curve_guards["request"] = server.guard
        if metrics is not None:
            metrics.registry.register(CurveGuardMetrics(self.curve_guards))
        server.self_test()
        return server

    def publisher(self, settings: BrokerSettings, send_hwm: int, *, attach: bool = True) -> Publisher:
        """The node's feed (PROTOCOL 10.1) on its ``pub_port``, admitting ``gates.feed``, once it has
        proved that an unlisted key is refused; closed (with its linger) when the runtime closes.

        Like the request socket it serves the key generation in force on ``pub_port``, and during
        a rotation's window the new one on ``feed_rotation_port`` (PROTOCOL 16.6); its re-binds
        run on the thread that publishes (``Publisher.call_soon``). With ``attach`` false another
        thread will own the socket (an ingest node's feed proxy): the caller then attaches
        :attr:`feed_rotation` to that thread once it runs. Raises KeyMaterialError as
        :meth:`request_server`.
        """
        node = self.node
        assert node.bind_feed_endpoint is not None  # the caller publishes only with a pub_port
        rotation, keys = self._rotating((node.bind_feed_endpoint, node.bind_feed_rotation_endpoint))
        self.feed_rotation = rotation
        publisher = Publisher(self.name, keys, node.bind_feed_endpoint, self.gates.feed, settings, send_hwm)
        if publisher.server.guard is not None:  # on /metrics with the request port's (PROTOCOL 15.3)
            self.curve_guards["feed"] = publisher.server.guard
        # Closed after what publishes stopped (added before it): what was made durable goes out.
        self.closing(lambda: publisher.close(linger_ms=SHUTDOWN_LINGER_MS))
        publisher.self_test()
        if attach:
            rotation.attach(publisher.socket, publisher.call_soon)
        return publisher

    def _rotating(self, endpoints: tuple[str, str | None] | None) -> tuple[RotatingKeys, KeyPair]:
        """A RotatingKeys for a server socket of the node's (its request socket's endpoints unless
        given), following the key histories, and the key pair the socket binds with now."""
        rotation = RotatingKeys(self.node, self.config.keys_dir, self._passphrase, 0, endpoints)
        rotation.update(self.gates.histories)
        serving, _ = serving_generations(self.gates.histories.get(self.name), now_ms())
        keys = self.keys if serving == 0 else rotation.keys_of(serving)
        rotation.serving = serving
        self.gates.on_rotation(rotation.update)
        return rotation, keys

    def health(self, metrics: NodeMetrics, checks: Mapping[str, Check], details: Details | None = None) -> None:
        """Serve ``/metrics``, ``/healthz`` and ``/readyz`` (with ``details``' fields) on the node's
        ``http_port`` (if it has one) until the runtime closes. Once :meth:`account_cache` made the
        accounts cache, an ``accounts`` check fails if its thread is gone: a node whose thread had
        ended answered ready while it never applied a revocation again (outsider o8 J6)."""
        cache = self._accounts
        if cache is not None:
            checks = {**checks, "accounts": cache.not_current}
        # Read at each request: the workers started after this call count too (review r14 F4).
        checks = {**checks, "workers": self._workers_check}
        self.stack.enter_context(health_server(self.node, metrics, checks, self.config.http, details))

    def _workers_check(self) -> str | None:
        return "; ".join(p for p in (w.not_working() for w in self.workers) if p is not None) or None

    # --- serving --------------------------------------------------------------------------

    def serve(self, server: CurveServer, service: Service, main: Callable[[], None] | None = None) -> None:
        """Answer requests on ``server`` until SIGTERM or SIGINT; then answer those in flight.

        Without ``main`` the loop runs on this thread. With it, the loop runs on a thread of
        its own while ``main`` runs here; ``main`` must return soon after ``stopping`` is set.
        Raises the StoreDamagedError of a store found damaged meanwhile (:meth:`store`), once
        the requests in flight were answered.
        """
        with (
            RequestLoop(server.socket, service) as loop,
            stopped_by_signals(loop, self.stopping, self._stopped),
        ):
            log.info("%s %s serving on %s", self.node.role, self.name, server.endpoint)
            self._loop = loop
            if self.damaged is not None:  # found before the loop was there to stop
                loop.stop()
            if self.rotation is not None:
                self.rotation.attach(server.socket, loop.call_soon)
            if main is None:
                loop.serve()
            else:
                serving = threading.Thread(target=loop.serve, name=f"requests-{self.name}", daemon=True)
                serving.start()
                try:
                    main()
                except Exception as e:  # a read of the main loop's (a follower's) met a damaged file
                    if self._store is None or self._store.damaged(e) is None:
                        raise
                finally:
                    loop.stop()
                    serving.join()
            self._loop = None
        if self.damaged is not None:
            raise self.damaged
