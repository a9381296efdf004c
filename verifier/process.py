"""The verifier process: `vledger verifier --config config/cluster.toml --node NAME`.

One thread runs the checks of vledger.verifier.checks in slices (new records, heads, paced
sweeps; with two cores or more, worker processes check the sweeps' pages); another serves
``hello``, ``ver`` and ``status`` on the verifier's CURVE ROUTER, so that supervise and
``vledger status`` can ask it how far it got. It reads every node with
its node key (the nodes admit the cluster's members); when that key rotates (``vledger key
rotate``, PROTOCOL 16.6) it reads with the new one from the record on and serves its ROUTER
as every node does (the old key on ``port`` and the new on ``rotation_port`` during the
window, the new on both after it). It writes alerts, checkpoints and its
consumer group's acknowledgements to Redis. SIGTERM and SIGINT stop it at once: the read of
a node in hand is dropped (its readers' ZeroMQ Context is ended, :class:`ReadersContext`),
and the slice of checks with it, however many nodes it had left to read; only a Redis call in
hand is waited for. What it read and did not acknowledge is read again at the next start.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import zmq

from .. import __version__
from ..broker.accounts import AccountCache
from ..broker.client import Client
from ..broker.replication import REDIS_ERRORS
from ..broker.signing import load_verify_key, signing_key_paths, witness_keys
from ..config.cluster import ClusterConfig
from ..ingest.accounts import CachedAccounts
from ..ingest.loop import Waiting
from ..ingest.members import MemberGates
from ..ingest.metrics import MeteredService, NodeMetrics, alerts_collector, counter_collector, redis_check
from ..ingest.node_key_rotation import ClientKeys
from ..ingest.runtime import NodeRuntime
from ..node.errors import BadRequestError, ForbiddenError, UnknownCommandError, VledgerError
from ..node.note import VerifierKey
from ..node.wire import PROTOCOL_VERSION, parse_request, reply_error, reply_ok, request_id_of
from ..node.witness import home_key
from .checks import ClusterChecks, NodeReader, Stopped
from .node_keys import ProvenRotations, rotated_witness_keys_now
from .sweep import PagePool
from .tally_recount import TallyRecount
from .tally_watch import TallyWatch

log = logging.getLogger(__name__)

RETRY_PAUSE = 1.0
READERS_END_WAIT = 2.0  # seconds a stop waits for the readers' Context to end once their sockets closed
WITNESS_KEYS_FOR_S = 60.0  # how long the witnesses' rotated keys read from Redis are kept
MAX_REQUEST_BYTES = 64 * 1024


class StatusService:
    """What the verifier's socket answers: who it is and how far its checks got (read-only)."""

    def __init__(self, name: str, accounts: CachedAccounts, status: Callable[[], dict[str, Any]]) -> None:
        self.name = name
        self.accounts = accounts
        self.status = status

    def prepare(self, datas: Sequence[bytes]) -> None:
        """Nothing to prepare: each request is handled as it is."""

    def handle(self, key: str, data: bytes, checked: object = None) -> bytes:
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

    def flush(self) -> None:
        """Nothing of this service waits on slow work: every answer was given at once."""

    def replies(self, waiting: list[Waiting]) -> list[bytes]:
        """Never called with any: :meth:`handle` answers at once."""
        return [each.reply() for each in waiting]

    def sent(self, waiting: list[Waiting], replies: list[bytes]) -> None:
        """Never called with any: :meth:`handle` answers at once."""


def node_readers(
    config: ClusterConfig,
    keys: ClientKeys,
    timeout: float,
    clock: Callable[[], float],
    gates: MemberGates,
    stopping: threading.Event | None = None,
    ctx: zmq.Context[Any] | None = None,
) -> dict[str, NodeReader]:
    """A reader of every node's copy, kept on the node's newest key through its key rotations,
    and on the verifier's own newest client key through its rotations (PROTOCOL 16.6); each
    reads nothing more once ``stopping`` is set (NodeReader). Their sockets are of ``ctx``
    (default: the process's Context)."""
    readers = {}
    for node in config.nodes.values():
        if node.role == "verifier":
            continue
        client = Client(
            gates.address_of(node.name),
            keys.current,
            timeout=timeout,
            follow=False,  # each node's own copy is checked, never its home's in its place
            ctx=ctx,
        )
        gates.keep_addressed(client, node.name)
        # Read by the client at its next call, which then connects anew with the new key.
        keys.follow(partial(setattr, client, "keys"))
        readers[node.name] = NodeReader(node, client, config.ingest.page_size, clock, stopping)
    return readers


class ReadersContext:
    """The ZeroMQ Context of the verifier's readers, apart from the process's (whose request
    socket answers to the end). A stop ends it (:meth:`interrupt`, from the signal handler):
    libzmq's term makes a receive in flight return at once (ETERM), which the readers raise as
    Stopped, where the read would have waited out ``node_timeout_ms``. The term returns once the
    readers' sockets are closed, so it runs on a thread of its own; :meth:`close` waits for it."""

    def __init__(self) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self._ending: threading.Thread | None = None

    def interrupt(self) -> None:
        """End the Context: every wait on its sockets returns (ETERM). Does not block."""
        if self._ending is None:
            self._ending = threading.Thread(target=self.ctx.term, name="readers-end", daemon=True)
            self._ending.start()

    def close(self) -> None:
        """Once the readers' sockets are closed: the Context ended (a socket left open is closed)."""
        if self._ending is None:
            self.ctx.destroy(linger=0)
            return
        self._ending.join(READERS_END_WAIT)
        if self._ending.is_alive():
            log.warning("the readers' ZeroMQ Context did not end within %g s of the stop", READERS_END_WAIT)


def home_sign_key(config: ClusterConfig, ledger: str) -> VerifierKey | None:
    """The checkpoint key of ``ledger``'s home as the key directory has it (``<home>.sign.pub``),
    None without that file: what checks a ledger whose genesis pins no key (PROTOCOL 10.7)."""
    path = signing_key_paths(config.keys_dir, config.home_of(ledger).name)[1]
    if not path.is_file():
        return None
    return home_key(config.name, ledger, load_verify_key(path).raw)


class WitnessKeys:
    """The cluster's witness keys now: each witness's key file and, when its key rotated, the
    keys in force that the admin ledger proves (PROTOCOL 16.6): ``rotations`` (the verifier's
    own proven copy, :func:`proven_copy_rotations`), or the admin ledger's cache in Redis by
    default; read again at most every WITNESS_KEYS_FOR_S, never fewer rotations than proven
    before (ProvenRotations). What a note the standby's key signed must be cosigned by (10.9); a
    Redis that cannot say leaves the key files' alone."""

    def __init__(
        self,
        config: ClusterConfig,
        client: Any,
        rotations: Callable[[], Iterable[Mapping[str, Any]]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.client = client
        self._clock = clock
        self._files = tuple(witness_keys(config).values())
        self._rotations = ProvenRotations.of(config, client, rotations)
        self._read: tuple[float, tuple[VerifierKey, ...]] | None = None

    def __call__(self) -> tuple[VerifierKey, ...]:
        now = self._clock()
        if self._read is None or now - self._read[0] >= WITNESS_KEYS_FOR_S:
            try:
                rotated = tuple(rotated_witness_keys_now(self.config, self._rotations(), time.time_ns() // 1_000_000))
            except (*REDIS_ERRORS, VledgerError) as e:
                log.info("the witnesses' rotated keys cannot be read (%s): their key files alone", e)
                rotated = () if self._read is None else self._read[1]
            self._read = (now, rotated)
        return (*self._files, *self._read[1])


def proven_copy_rotations(cache: AccountCache) -> Callable[[], tuple[dict[str, Any], ...]]:
    """The key rotations of the admin ledger as ``cache`` (the verifier's accounts) proved it:
    the records its home's checkpoints proved, never fewer than before in this process, and at a
    start those its admin_copy.json proves (broker/admin_copy.py, PROTOCOL 16.4). Read afresh from
    Redis instead, an older, genuine checkpoint set back there by an insider (and the list cut to
    match) showed fewer rotations: a restarted verifier (or one whose keys were read before an
    observer's rotation) checked the observer's honest tallies by its replaced key and raised
    bad_signature on every ledger, while its accounts kept the rotation (outsider o9 J5)."""
    return lambda: cache.key_rotations


def run_verifier(config: ClusterConfig, name: str, passphrase: str | None = None) -> None:
    with NodeRuntime.open(config, name, ("verifier",), passphrase) as runtime:
        replication = runtime.replication()
        cache = runtime.accounts(runtime.registry(), replication)  # the verifier has no feed: only its request list
        reading = ReadersContext()
        runtime.closing(reading.close)  # after the readers' clients closed their sockets
        runtime.on_stop(reading.interrupt)
        timeout = config.verifier.node_timeout_ms / 1000
        readers = node_readers(
            config, runtime.client_keys, timeout, time.monotonic, runtime.gates, runtime.stopping, reading.ctx
        )
        for reader in readers.values():
            runtime.closing(reader.client.close)
        # The sweeps' pages are checked by worker processes, one per usable core, when there are two.
        cores = len(os.sched_getaffinity(0))
        pool = PagePool(cores) if cores > 1 else None
        if pool is not None:
            runtime.closing(pool.close)
        rotations = proven_copy_rotations(cache)
        tallies = TallyWatch(config, replication.client, rotations=rotations)
        checks = ClusterChecks(
            name,
            config,
            replication,
            readers,
            pool=pool,
            home_keys=partial(home_sign_key, config),
            witness_keys=WitnessKeys(config, replication.client, rotations=rotations),
            tallies=tallies,
            tally_cleared=tallies.cleared,
            stopping=runtime.stopping,
        )
        # The verifier counts each ledger itself from the copies it reads (o21 F4).
        tallies.recount = TallyRecount(checks.recount_read, config.observers.grant_wait_ms)
        metrics = NodeMetrics(runtime.node)
        metrics.collect_with(alerts_collector(replication))
        for series, text, read in (
            ("vledger_checked_records", "stream entries checked on every copy", lambda: checks.checked),
            ("vledger_swept_records", "records re-verified by sweeps", lambda: checks.swept),
            ("vledger_alerts_raised", "alerts this verifier raised", lambda: checks.alerts),
        ):
            metrics.collect_with(counter_collector(series, text, read))
        runtime.health(metrics, {"redis": redis_check(replication)})
        server = runtime.request_server(config.settings.broker, metrics)
        service = StatusService(name, CachedAccounts(cache, members=runtime.gates.members), checks.status)
        log.info("verifier %s checking %d nodes", name, len(readers))
        runtime.serve(server, MeteredService(service, metrics), main=lambda: _check(checks, runtime.stopping))


def _check(checks: ClusterChecks, stopping: threading.Event) -> None:
    started = False
    while not stopping.is_set():
        try:
            if not started:
                checks.start()
                started = True
            checks.tick()
        except Stopped:
            return
        except REDIS_ERRORS as e:
            log.warning("Redis unavailable (%s); retrying", e)
            stopping.wait(RETRY_PAUSE)
