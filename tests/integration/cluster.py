"""A local vledger cluster of real processes, for the integration tests.

:class:`LocalCluster` builds everything an operator would, with the operator's commands:
in a short directory under /tmp it writes a ``cluster.toml`` (ingest nodes on free ports
of 127.0.0.1, a Redis database of its own on the test session's redis-server, the homes
of its ledgers), runs ``vledger keygen --cluster`` and ``vledger admin bootstrap``, then
starts each ingest node as ``python -m vledger.tools.cli ingest`` with its stdout and
stderr in a log file, and waits until it answers ``hello`` (a deadline, never a sleep).
The writer, observer and unlisted client keys are made in memory; the accounts are added
over the protocol by the admin, as in production.

Each cluster takes a Redis database number of its own and flushes it before and after,
so clusters never see each other's accounts (the registry lives under ``vledger:`` and the
nodes read their Redis URL from the configuration's ``[cluster] redis``).

The nodes sign in to Redis as their own users (``[redis] passwords``, broker/redis_acl.py),
as under ``make run``: the session's server gets each cluster's users as it starts
(``redis_acl.apply``), with one set of passwords that every cluster on it copies into its
keys before ``keygen``. The
tests' own clients stay the server's default user, to look at and flush what they like.

Imported as ``vledger.tests.integration.cluster``: the editable install maps the package
``vledger`` onto the repository, and ``--import-mode=importlib`` puts no test folder on
``sys.path``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import msgpack
import zmq

from vledger.broker import redis_acl, redis_functions
from vledger.broker.client import Client, NodeAddress
from vledger.broker.curve import HANDSHAKE_EVENTS, curve_client, process_context, wait_for_event
from vledger.broker.feed import FeedCheckpoints, FeedRecord, FeedSource, Subscriber
from vledger.broker.keys import KeyPair, load_public, load_secret, new_keypair
from vledger.broker.redis_server import connect, free_port
from vledger.broker.signing import load_verify_key, signing_key_paths
from vledger.config.cluster import load_cluster
from vledger.config.settings import Limits
from vledger.node.errors import NodeUnavailableError, RemoteError
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry, checksum_of
from vledger.node.wire import encode_request
from vledger.node.witness import home_key
from vledger.node.work import meets_difficulty

LIMITS = Limits()
CLI = [sys.executable, "-m", "vledger.tools.cli"]
# Sets its open-file limit to its first argument and becomes the rest (the same pid): a
# preexec_fn would run between fork and exec in a process with threads.
WITH_FILE_LIMIT = [
    sys.executable,
    "-c",
    "import os, resource, sys; n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); "
    "os.execv(sys.argv[2], sys.argv[2:])",
]
ADMIN = "admin"
# Client keys every cluster makes; the first three become accounts once the nodes are up.
DEFAULT_ACCOUNTS = {"writer1": "writer", "writer2": "writer", "observer": "observer"}
STRANGER = "stranger"  # a key pair bound to no account: never on any allow-list
START_TIMEOUT = 30.0
# The [observers] settings of a cluster whose tests forge observers' latest tallies in Redis: a
# snapshot soon after each head, and the observers' read-back of which tally Redis names their
# latest (PROTOCOL 11.1), which would put their own back meanwhile, beyond any test's time.
FORGING_OBSERVERS = {"tally_interval_ms": 200, "latest_check_ms": 3_600_000}
STOP_TIMEOUT = 20.0
LOG_TAIL_LINES = 60
REDIS_PASSWORDS = "keys/redis"  # [redis] passwords, relative to the cluster file
# Per redis-server (its URL without the database): the directory of its users' passwords.
# ACL users are the server's, not a database's: clusters on one server share them.
_ACL_PASSWORDS: dict[str, Path] = {}
_ACL_NODES: dict[str, dict[str, str]] = {}  # per server: every node name -> role given a user so far
# Per server: the nodes that home some cluster's admin ledger, whose users write the accounts.
_ACL_ADMIN_HOMES: dict[str, set[str]] = {}
# Per server: node -> the ledgers whose checkpoints its user writes, in any cluster on it (their union).
_ACL_CHECKPOINTS: dict[str, dict[str, tuple[str, ...]]] = {}


def acl_passwords(server_url: str) -> Path:
    """The directory of the password files of ``server_url``'s vledger users, made on first use."""
    base = server_url.rsplit("/", 1)[0]
    directory = _ACL_PASSWORDS.get(base)
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="vl-acl-", dir="/tmp"))
        _ACL_PASSWORDS[base] = directory
    return directory


def apply_acl(server_url: str, nodes: Mapping[str, str] | None = None) -> None:
    """Give ``server_url`` the vledger users of ``nodes`` (name -> role; None: every node's
    whose password was made for it so far) again (ACL SETUSER): a restarted server lost them,
    having no ACL file (its default user serves the tests)."""
    directory = acl_passwords(server_url)
    base = server_url.rsplit("/", 1)[0]
    if nodes is None:
        nodes = _ACL_NODES.get(base, {})
    homes = _ACL_ADMIN_HOMES.get(base, set())
    writers = _ACL_CHECKPOINTS.get(base, {})
    # Those it lacks; the others kept.
    redis_acl.write_passwords(directory, nodes, admin_homes=homes, checkpoints=writers)
    client = connect(server_url)
    try:
        passwords = redis_acl.read_passwords(directory, nodes)
        redis_acl.apply(client, passwords, nodes, admin_homes=homes, checkpoints=writers)
        # The nodes' users may only call the functions: the tests' default user loads them, as the
        # loader would (a server restarted without its data lost them with the users).
        redis_functions.load(client)
    finally:
        client.close()


def copy_acl_passwords(
    server_url: str,
    keys_dir: Path,
    nodes: Mapping[str, str],
    admin_home: str,
    checkpoints: Mapping[str, Iterable[str]],
) -> Path:
    """Put the passwords of ``nodes``' users and the gateway's and admin's (0600) where
    ``[redis] passwords`` names them, so that ``vledger keygen --cluster`` keeps them rather
    than make new ones the server lacks; the server gets those users (a node's rules follow
    its role: clusters on one server that name a node alike give it one role, a node that
    homes one's admin ledger writes the accounts in all, and a node writes the checkpoints of
    the ledgers it may home in any of them: ``checkpoints``, redis_acl.checkpoint_writers)."""
    base = server_url.rsplit("/", 1)[0]
    known = _ACL_NODES.setdefault(base, {})
    known.update(nodes)
    _ACL_ADMIN_HOMES.setdefault(base, set()).add(admin_home)
    _ACL_CHECKPOINTS[base] = redis_acl.merge_writers(
        _ACL_CHECKPOINTS.get(base, {}), {node: tuple(ledgers) for node, ledgers in checkpoints.items()}
    )
    apply_acl(server_url, nodes)
    source = acl_passwords(server_url)
    target = keys_dir / "redis"
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    for user in redis_acl.users(nodes):
        shutil.copy2(redis_acl.password_path(source, user), redis_acl.password_path(target, user))
    return target


# Clusters started and not yet stopped: conftest shows their node logs when a test fails.
ACTIVE: list[LocalCluster] = []

_databases = itertools.count(1)  # Redis database numbers 1..15, one per cluster in turn


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_request_ids = itertools.count(1)


def new_request_id(prefix: str = "r") -> str:
    return f"{prefix}-{os.getpid()}-{time.monotonic_ns()}-{next(_request_ids)}"


def entry(
    ledger: str,
    kind: str,
    payload: dict[str, Any],
    author: str,
    *,
    request_id: str | None = None,
    difficulty: int = 0,
    ts: int | None = None,
) -> Entry:
    """A client's entry, with its proof of work done for ``difficulty``."""
    content = Content(ledger, kind, payload, author, request_id or new_request_id(), now_ms() if ts is None else ts)
    return Entry.prepare(content, difficulty, LIMITS)


def genesis(
    ledger: str,
    author: str,
    kinds: Iterable[str],
    rules: dict[str, Any] | None = None,
    *,
    difficulty: int = 0,
    request_id: str | None = None,
) -> Entry:
    """A genesis entry (docs/PROTOCOL.md section 3), its work done for its own difficulty."""
    ledger_rules = LedgerRules(kinds=tuple(kinds), difficulty=difficulty, rules=rules or {})
    content = ledger_rules.genesis_content(ledger, author, request_id or new_request_id("g"), now_ms())
    return Entry.prepare(content, difficulty, LIMITS)


def raw_content(ledger: str, kind: str, payload: Any, author: str, request_id: str | None = None) -> bytes:
    """Content bytes as a careless client would pack them: sorted keys, but floats and all."""
    content = {
        "author": author,
        "kind": kind,
        "ledger": ledger,
        "payload": payload,
        "request_id": request_id or new_request_id(),
        "ts": now_ms(),
        "v": 1,
    }
    return msgpack.packb(content, use_bin_type=True)  # type: ignore[no-any-return]


def failing_nonce(content_bytes: bytes, difficulty: int) -> int:
    """A nonce that does not meet ``difficulty`` for this content."""
    checksum = checksum_of(content_bytes)
    return next(n for n in itertools.count() if not meets_difficulty(checksum, n, difficulty))


def put_args(e: Entry) -> dict[str, Any]:
    return {"content": e.content_bytes, "nonce": e.nonce}


def remote_error(call: Any, *args: Any, **kwargs: Any) -> RemoteError:
    """The RemoteError that ``call(*args, **kwargs)`` raises (an AssertionError if it succeeds)."""
    try:
        result = call(*args, **kwargs)
    except RemoteError as e:
        return e
    raise AssertionError(f"expected a refusal, got {result!r}")


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``condition()`` until it returns something true; its value, or AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(interval)


SEND_TIMEOUT = 10.0  # seconds a Wire waits for its socket to take a message


class Wire:
    """A raw CURVE DEALER connection to one node: any frames out, decoded replies in.

    For what the client library will not send (bad msgpack, several frames, oversize
    messages) and for watching the handshake: with ``monitor``, the socket's monitor
    reports handshake and disconnection events (shared/NOTES.md: prove refusal both ways).
    """

    def __init__(
        self, address: NodeAddress, keys: KeyPair, *, monitor: bool = False, options: Mapping[int, int] | None = None
    ) -> None:
        ctx = process_context()
        self.address = address
        self.socket = curve_client(ctx, zmq.DEALER, address.key, keys)
        for option, value in (options or {}).items():  # socket options (RCVHWM, RCVBUF, ...) before connecting
            self.socket.setsockopt(option, value)
        self.monitor: zmq.Socket[Any] | None = None
        if monitor:
            endpoint = f"inproc://wire-monitor-{id(self)}-{time.monotonic_ns()}"
            self.socket.monitor(endpoint, HANDSHAKE_EVENTS | zmq.EVENT_DISCONNECTED)
            self.monitor = ctx.socket(zmq.PAIR)
            self.monitor.linger = 0
            self.monitor.connect(endpoint)
        self.socket.connect(address.endpoint)
        self._ids = itertools.count(1)
        self.last_id = 0

    def send(self, data: bytes | list[bytes], timeout: float = SEND_TIMEOUT) -> None:
        """Queue ``data`` (one frame or several) within ``timeout`` seconds, else AssertionError:
        a DEALER with no peer to take it blocks, forever to a node that refused its key (a whole
        test run hung so: shared/NOTES.md), so the send is never a blocking one."""
        frames = [data] if isinstance(data, bytes) else data
        if not self.socket.poll(int(timeout * 1000), zmq.POLLOUT):
            raise AssertionError(
                f"{self.address}: could not send within {timeout} s (no connected peer takes it: "
                "was this key refused, or is the node down?)"
            )
        self.socket.send_multipart(frames, flags=zmq.NOBLOCK)

    def request(self, cmd: str, args: dict[str, Any] | None = None) -> int:
        """Send one well-formed request; its id."""
        self.last_id = request_id = next(self._ids)
        self.send(encode_request(request_id, cmd, args))
        return request_id

    def recv(self, timeout: float) -> dict[str, Any] | None:
        """The next reply, decoded, or None if none comes within ``timeout`` seconds."""
        if not self.socket.poll(int(timeout * 1000)):
            return None
        reply = msgpack.unpackb(self.socket.recv(), raw=False)
        assert isinstance(reply, dict), f"a reply that is not a map: {reply!r}"
        return reply

    def call(self, cmd: str, args: dict[str, Any] | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """One request and its reply map (ok or not); AssertionError if none comes."""
        request_id = self.request(cmd, args)
        reply = self.recv(timeout)
        assert reply is not None, f"{self.address}: no reply to {cmd} within {timeout} s"
        assert reply.get("id") == request_id, f"reply {reply!r} to request {request_id}"
        return reply

    def event(self, events: int, timeout: float) -> int | None:
        """The first monitor event among ``events`` within ``timeout``, else None."""
        assert self.monitor is not None, "this Wire has no monitor"
        found = wait_for_event(self.monitor, events, timeout)
        return None if found is None else int(found["event"])

    def handshake(self, timeout: float = 5.0) -> int | None:
        """EVENT_HANDSHAKE_SUCCEEDED, EVENT_HANDSHAKE_FAILED_AUTH (or another failure), or None."""
        return self.event(HANDSHAKE_EVENTS, timeout)

    def close(self) -> None:
        if self.monitor is not None:
            self.socket.disable_monitor()
            self.monitor.close(linger=0)
        self.socket.close(linger=0)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FeedTap:
    """The test's own subscriber to one node's feed: every message it published that got here.

    Built on the replicas' own :class:`Subscriber` (CURVE SUB, under a key the feed's
    allow-list holds: a member node's or an observer account's). PUB/SUB forgets what was
    sent before the subscription took: :meth:`wait_beats` proves it took, by the checkpoint heartbeats.
    """

    def __init__(self, source: FeedSource, keys: KeyPair, *, receive_hwm: int = 100_000) -> None:
        self.source = source
        self.subscriber = Subscriber(
            process_context(),
            keys,
            [source],
            receive_hwm=receive_hwm,
            max_message_bytes=2 * LIMITS.max_record_bytes,
            max_record_bytes=LIMITS.max_record_bytes,
        )
        self.records: list[FeedRecord] = []
        self.beats: list[FeedCheckpoints] = []

    def read(self, timeout: float = 0.0) -> int:
        """Take in what arrived (waiting up to ``timeout`` s for the first message); how many."""
        messages = self.subscriber.receive(int(timeout * 1000), 100_000)
        for message in messages:
            if isinstance(message, FeedRecord):
                self.records.append(message)
            else:
                self.beats.append(message)
        return len(messages)

    def wait_beats(self, count: int = 1, timeout: float = 30.0) -> None:
        """Read until ``count`` more heartbeats arrived: the subscription is live since the first.

        30 s: a tap made right after ``add_account`` may reach a replica that has not applied the
        account yet (the admin waits for the ingest nodes only); refused, the Subscriber connects
        again after 0.5, 1, 2, 4, 8 s... A passing run waits no longer."""
        goal = len(self.beats) + count
        wait_until(
            lambda: self.read(0.05) >= 0 and len(self.beats) >= goal,
            timeout,
            f"{count} checkpoint heartbeats from {self.source.name}",
        )

    def heights(self, ledger: str) -> list[int]:
        """The heights of ``ledger`` this feed carried, in the order they came (repeats included)."""
        return [r.height for r in self.records if r.ledger == ledger]

    def close(self) -> None:
        self.subscriber.close()


@dataclass
class NodeProcess:
    name: str
    port: int
    log: Path
    public_key: str = ""
    pub_port: int = 0
    role: str = "ingest"
    follow: tuple[str, ...] = ()  # a replica's followed nodes; () = every ingest node
    relay: bool = False  # a replica that republishes (has a pub_port)
    http_port: int = 0  # /metrics, /healthz, /readyz
    gateway_port: int = 0  # the public gateway over its store, when the cluster runs one
    rotation_port: int = 0  # a node's second request endpoint during a key rotation
    feed_rotation_port: int = 0  # and its feed's (ingest nodes and relays)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def address(self) -> NodeAddress:
        return NodeAddress(self.endpoint, self.public_key)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass(repr=False)
class LocalCluster:
    """Ingest nodes as real processes, with their keys, accounts and a Redis database.

    ``homes`` names the ledgers homed on a node other than the first (the default home);
    ``ingest`` and ``replication`` override settings of those tables of the configuration.
    ``replicas`` adds replica nodes ``replica-1``...; ``follow`` names what a replica
    follows (default: every ingest node) and ``relays`` the replicas that republish.
    ``verifiers`` adds verifier nodes ``verifier-1``..., started last, with the settings
    of ``verifier`` in the configuration's ``[verifier]`` table.
    ``observers`` adds observer nodes ``observer-1``... (started after the replicas), with
    the settings of ``observing`` in the ``[observers]`` table.
    ``production`` sets ``[cluster] production``: the bootstrapped admin then gets a second
    factor (``admin bootstrap --totp``), its URI and recovery codes in ``enrollment``, and
    every admin command needs a code (so ``accounts`` is best left empty).
    """

    redis_url: str  # the session's server; the cluster picks its own database on it
    nodes: int = 2
    homes: Mapping[str, str] = field(default_factory=dict)
    standbys: Mapping[str, str] = field(default_factory=dict)  # ledger -> its standby ingest node
    ingest: Mapping[str, int] = field(default_factory=dict)
    accounts: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ACCOUNTS))
    replicas: int = 0
    verifiers: int = 0
    verifier: Mapping[str, int] = field(default_factory=dict)
    observers: int = 0
    observing: Mapping[str, int] = field(default_factory=dict)
    replication: Mapping[str, int] = field(default_factory=dict)
    broker: Mapping[str, int] = field(default_factory=dict)  # [settings.broker]: the CURVE sockets' limits
    follow: Mapping[str, Iterable[str]] = field(default_factory=dict)
    relays: Iterable[str] = ()
    production: bool = False
    gateways: Iterable[str] = ()  # nodes with a gateway_port, whose gateway start() runs last
    # Replicas and observers with a rotation_port: their CURVE keys rotate (ingest nodes always have one).
    rotating: Iterable[str] = ()
    outside_witnesses: Mapping[str, str] = field(default_factory=dict)  # key name -> URL prefix
    # The processes reach Redis over TLS: the server's rediss:// URL and the CA in the
    # cluster file; the tests' own clients keep the plain ``redis_url``.
    redis_tls: tuple[str, Path] | None = None
    # The nodes' open-file limit (soft and hard), lower than the tests' own: a node raises its
    # soft limit to its hard one, so only a lower hard limit makes its file budget small.
    file_limit: int | None = None

    def __post_init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="vl-", dir="/tmp"))
        self.config_path = self.directory / "cluster.toml"
        base = self.redis_url.rsplit("/", 1)[0]
        self.database = next(_databases) % 15 + 1
        self.cluster_redis_url = f"{base}/{self.database}"
        tls_base = None if self.redis_tls is None else self.redis_tls[0].rsplit("/", 1)[0]
        self.processes_redis_url = self.cluster_redis_url if tls_base is None else f"{tls_base}/{self.database}"
        self.node_names = [f"ingest-{i}" for i in range(1, self.nodes + 1)]
        self.replica_names = [f"replica-{i}" for i in range(1, self.replicas + 1)]
        self.procs = {name: NodeProcess(name, 0, self.directory / f"{name}.log") for name in self.node_names}
        relays = set(self.relays)
        for name in self.replica_names:
            follow = tuple(self.follow.get(name, ()))
            self.procs[name] = NodeProcess(
                name, 0, self.directory / f"{name}.log", role="replica", follow=follow, relay=name in relays
            )
        self.observer_names = [f"observer-{i}" for i in range(1, self.observers + 1)]
        for name in self.observer_names:
            follow = tuple(self.follow.get(name, ()))
            self.procs[name] = NodeProcess(name, 0, self.directory / f"{name}.log", role="observer", follow=follow)
        self.verifier_names = [f"verifier-{i}" for i in range(1, self.verifiers + 1)]
        for name in self.verifier_names:
            self.procs[name] = NodeProcess(name, 0, self.directory / f"{name}.log", role="verifier")
        self.keys: dict[str, KeyPair] = {}
        self._clients: list[Client] = []
        self._wires: list[Wire] = []
        self._taps: list[FeedTap] = []
        self._admins: dict[str, Client] = {}
        self._inspectors: dict[str, Client] = {}
        self.enrollment: dict[str, Any] = {}  # production: the admin's {"uri", "recovery_codes"}
        self.gateway_procs: dict[str, subprocess.Popen[bytes]] = {}

    def __repr__(self) -> str:
        return f"LocalCluster({self.directory}, nodes {', '.join(self.node_names)}, redis db {self.database})"

    # --- life cycle ------------------------------------------------------------------

    def start(self) -> Self:
        ACTIVE.append(self)
        try:
            self._flush_redis()
            self._write_config()
            keys_dir = self.directory / "keys"
            roles = {name: proc.role for name, proc in self.procs.items()}
            default = self.node_names[0]
            writers = redis_acl.checkpoint_writers(
                default,
                {ledger: self.homes.get(ledger, default) for ledger in {*self.homes, *self.standbys}},
                self.standbys,
            )
            copy_acl_passwords(self.redis_url, keys_dir, roles, self.homes.get("admin", default), writers)
            self.cli("keygen", "--cluster", str(self.config_path))
            self.keys[ADMIN] = load_secret(keys_dir / f"{ADMIN}.key_secret")
            for proc in self.procs.values():
                proc.public_key = load_public(keys_dir / f"{proc.name}.key")
            bootstrapped = self.cli(
                "admin",
                "bootstrap",
                "--config",
                str(self.config_path),
                "--account",
                ADMIN,
                "--key",
                str(keys_dir / f"{ADMIN}.key"),
                *(("--totp", "--json") if self.production else ()),
            )
            if self.production:
                self.enrollment = json.loads(bootstrapped.stdout)
            for tier in self._tiers():
                self.start_nodes(tier)
            for name, role in self.accounts.items():
                self.add_account(name, role)
            self.keys[STRANGER] = new_keypair()
            for name in self.gateways:
                self.start_gateway(name)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL past a deadline), close clients, forget Redis.

        A node that had to be killed or exited with an error fails the caller, after every
        node is stopped; the directory is then kept, with the logs, and named.
        """
        for client in self._clients:
            client.close()
        self._clients.clear()
        self._admins.clear()
        self._inspectors.clear()
        for wire in self._wires:
            wire.close()
        self._wires.clear()
        for tap in self._taps:
            tap.close()
        self._taps.clear()
        problems = []
        for gateway in self.gateway_procs.values():
            gateway.terminate()
        for name, gateway in self.gateway_procs.items():
            try:
                if gateway.wait(STOP_TIMEOUT) != 0:
                    problems.append(f"the gateway of {name} exited with status {gateway.returncode} on SIGTERM")
            except subprocess.TimeoutExpired:
                gateway.kill()
                problems.append(f"the gateway of {name} had to be killed")
        self.gateway_procs.clear()
        # The last started first: verifiers, observers, replicas, then homes; a tier's nodes at
        # once (each stop is mostly waiting: its threads and its outbox process wind down).
        for tier in reversed(self._tiers()):
            running = [name for name in reversed(tier) if self.procs[name].running()]
            for name in running:
                self._terminate(name)
            for name in running:
                try:
                    status = self._reap(name, STOP_TIMEOUT)
                except AssertionError as e:
                    problems.append(str(e))
                else:
                    if status != 0:
                        problems.append(f"{name} exited with status {status} on SIGTERM" + self.log_tail(name))
        self._flush_redis()
        if self in ACTIVE:
            ACTIVE.remove(self)
        if problems:
            raise AssertionError(f"stopping the cluster in {self.directory}:\n" + "\n".join(problems))
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _flush_redis(self) -> None:
        client = connect(self.cluster_redis_url)
        try:
            client.flushdb()
        finally:
            client.close()

    def _write_config(self) -> None:
        lines = [
            "[cluster]",
            'name = "test"',
            'keys = "keys"',
            'data = "data"',
            f'redis = "{self.processes_redis_url}"',
            f'default_home = "{self.node_names[0]}"',
            f"production = {'true' if self.production else 'false'}",
            "",
            "[ingest]",
            *(f"{key} = {value}" for key, value in self.ingest.items()),
            "",
            "[replication]",
            *(f"{key} = {value}" for key, value in self.replication.items()),
            "",
            "[verifier]",
            *(f"{key} = {value}" for key, value in self.verifier.items()),
            "",
            "[observers]",
            *(f"{key} = {value}" for key, value in self.observing.items()),
            "",
            "[redis]",
            f'passwords = "{REDIS_PASSWORDS}"',
            *([f'ca = "{self.redis_tls[1]}"'] if self.redis_tls is not None else []),
            "",
            "[outside_witnesses]",
            *(f'"{name}" = "{url}"' for name, url in self.outside_witnesses.items()),
            "",
            "[settings.broker]",
            *(f"{key} = {value}" for key, value in self.broker.items()),
            "",
        ]
        taken: set[int] = set()

        def distinct_port() -> int:
            # free_port() may hand out a port again once its probe socket closed: the cluster
            # file refuses two nodes on one port, so no two of ours may share one.
            while (port := free_port()) in taken:
                pass
            taken.add(port)
            return port

        for proc in self.procs.values():
            proc.port = distinct_port()
            proc.pub_port = distinct_port() if proc.role == "ingest" or proc.relay else 0
            proc.http_port = distinct_port()
            proc.gateway_port = distinct_port() if proc.name in set(self.gateways) else 0
            proc.rotation_port = distinct_port() if proc.role == "ingest" or proc.name in set(self.rotating) else 0
            proc.feed_rotation_port = distinct_port() if proc.pub_port else 0
            lines += [
                f"[nodes.{proc.name}]",
                f'role = "{proc.role}"',
                'host = "127.0.0.1"',
                f"port = {proc.port}",
                f"http_port = {proc.http_port}",
            ]
            if proc.gateway_port:
                lines.append(f"gateway_port = {proc.gateway_port}")
            if proc.rotation_port:
                lines.append(f"rotation_port = {proc.rotation_port}")
            if proc.pub_port:
                lines.append(f"pub_port = {proc.pub_port}")
            if proc.feed_rotation_port:
                lines.append(f"feed_rotation_port = {proc.feed_rotation_port}")
            if proc.follow:
                lines.append("follow = [" + ", ".join(f'"{name}"' for name in proc.follow) + "]")
            lines.append("")
        for ledger in sorted({*self.homes, *self.standbys}):
            lines += [f"[ledgers.{ledger}]", f'home = "{self.homes.get(ledger, self.node_names[0])}"']
            if ledger in self.standbys:
                lines.append(f'standby = "{self.standbys[ledger]}"')
            lines.append("")
        self.config_path.write_text("\n".join(lines))

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "VLEDGER_PASSPHRASE", "VLEDGER_OTP")}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def cli(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a ``vledger`` command; with ``check``, a failure raises with its output."""
        done = subprocess.run(
            [*CLI, *args],
            stdin=subprocess.DEVNULL,  # never a terminal to ask on (a passphrase, a one-time code)
            capture_output=True,
            text=True,
            env=self.environment(),
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"vledger {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return done

    # --- nodes -----------------------------------------------------------------------

    def node(self, name: str | None = None) -> NodeProcess:
        return self.procs[name or self.node_names[0]]

    def address(self, name: str | None = None) -> NodeAddress:
        return self.node(name).address

    def store_dir(self, name: str | None = None) -> Path:
        return self.directory / "data" / self.node(name).name

    def _tiers(self) -> list[list[str]]:
        """The nodes in the order they start: homes, replicas, observers, verifiers."""
        return [self.node_names, self.replica_names, self.observer_names, self.verifier_names]

    def start_node(self, name: str, timeout: float = START_TIMEOUT) -> None:
        """Start node ``name`` and return once it answers ``hello``."""
        self.start_nodes([name], timeout)

    def start_nodes(self, names: Iterable[str], timeout: float = START_TIMEOUT) -> None:
        """Start nodes ``names`` at once and return once each answers ``hello``: their start-ups
        (imports, stores, Redis, sockets) overlap instead of adding up. ``timeout`` is each
        node's, as when they started one after another: the last may use what the others left."""
        names = list(names)
        deadline = time.monotonic() + timeout * len(names)
        for name in names:
            self._launch(name)
        for name in names:
            self.wait_ready(name, max(0.0, deadline - time.monotonic()))

    def _launch(self, name: str) -> None:
        proc = self.procs[name]
        assert not proc.running(), f"{name} is already running"
        proc.starts += 1
        with proc.log.open("ab") as log:
            log.write(f"--- start {proc.starts} ---\n".encode())
            log.flush()
            limit = [] if self.file_limit is None else [*WITH_FILE_LIMIT, str(self.file_limit)]
            proc.process = subprocess.Popen(
                [*limit, *CLI, "--log-level", "info", proc.role, "--config", str(self.config_path), "--node", name],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
            )

    def start_gateway(self, name: str, timeout: float = START_TIMEOUT) -> str:
        """Start the gateway over node ``name``'s store; its URL once it answers /healthz."""
        log = self.directory / f"gateway-{name}.log"
        with log.open("ab") as out:
            self.gateway_procs[name] = subprocess.Popen(
                [*CLI, "--log-level", "info", "gateway", "--config", str(self.config_path), "--node", name,
                 "--logs", str(self.directory)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.environment(),
            )  # fmt: skip
        url = self.gateway_url(name)

        def answers() -> bool:
            try:
                with urllib.request.urlopen(url + "healthz", timeout=1) as answer:
                    return bool(answer.status == 200)
            except OSError:
                assert self.gateway_procs[name].poll() is None, f"the gateway exited:\n{log.read_text()[-3000:]}"
                return False

        wait_until(answers, timeout, f"the gateway of {name} to answer", interval=0.1)
        return url

    def gateway_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.procs[name].gateway_port}/"

    def health_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.procs[name].http_port}/"

    def metric(self, name: str, sample: str) -> float:
        """The sum of the values of process ``name``'s /metrics lines that start with ``sample``
        (a series name and a space, or a name and the start of its labels); 0 when none does."""
        with urllib.request.urlopen(self.health_url(name) + "metrics", timeout=5) as response:
            text = response.read().decode()
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(sample))

    def wait_ready(self, name: str, timeout: float = START_TIMEOUT) -> None:
        proc = self.procs[name]
        deadline = time.monotonic() + timeout
        with Client(proc.address, self.keys[ADMIN], timeout=0.25) as client:
            while True:
                if not proc.running():
                    raise AssertionError(
                        f"{name} exited with status {proc.process and proc.process.poll()}" + self.log_tail(name)
                    )
                try:
                    if client.hello()["node"] == name:
                        return
                except NodeUnavailableError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{name} did not answer hello within {timeout} s" + self.log_tail(name))

    def stop_node(self, name: str, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM and wait; SIGKILL if it has not exited by the deadline. Its exit status."""
        self._terminate(name)
        return self._reap(name, timeout)

    def _terminate(self, name: str) -> None:
        """SIGTERM to node ``name`` if it runs: once only (a node that has left its serving loop
        has its default handler back, and a second SIGTERM would kill it)."""
        proc = self.procs[name]
        assert proc.process is not None, f"{name} was never started"
        if proc.process.poll() is None:
            proc.process.send_signal(signal.SIGTERM)

    def _reap(self, name: str, timeout: float) -> int:
        """The exit status of node ``name``, sent SIGTERM; SIGKILL if it has not exited within ``timeout``."""
        process = self.procs[name].process
        assert process is not None, f"{name} was never started"
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"{name} did not exit within {timeout} s of SIGTERM" + self.log_tail(name)) from None

    def kill_node(self, name: str) -> None:
        proc = self.procs[name]
        assert proc.process is not None and proc.running(), f"{name} is not running"
        proc.process.kill()
        proc.process.wait(timeout=STOP_TIMEOUT)

    def restart_node(self, name: str) -> int:
        """Stop (SIGTERM) and start again; the exit status of the stop."""
        status = self.stop_node(name)
        self.start_node(name)
        return status

    def signal_node(self, name: str, signum: int) -> None:
        """Send ``signum`` to a running node (SIGSTOP and SIGCONT freeze and thaw it)."""
        proc = self.procs[name]
        assert proc.process is not None and proc.running(), f"{name} is not running"
        os.kill(proc.process.pid, signum)

    def sizes(self, ledger: str, names: Iterable[str] | None = None) -> dict[str, int]:
        """How many records of ``ledger`` each node (default: every running node) holds."""
        names = [n for n in self.procs if self.procs[n].running()] if names is None else list(names)
        return {name: self.own_size(name, ledger) for name in names}

    def own_size(self, name: str, ledger: str) -> int:
        """How many records of ``ledger`` node ``name`` itself holds (0 if none: a node that holds
        none refers a reader to the home, or says no_such_ledger on the home itself)."""
        if name not in self._inspectors:
            self._inspectors[name] = self.client(ADMIN, name, follow=False)
        try:
            return self._inspectors[name].call("size", {"ledger": ledger})["size"]  # type: ignore[no-any-return]
        except RemoteError as e:
            if e.code in ("not_home", "no_such_ledger"):
                return 0
            raise

    def tap(self, name: str, key_name: str = "observer", *, receive_hwm: int = 100_000) -> FeedTap:
        """The test's own subscriber to node ``name``'s feed, under key ``key_name`` (closed with the cluster)."""
        proc = self.procs[name]
        assert proc.pub_port, f"{name} publishes no feed"
        tap = FeedTap(
            FeedSource(name, f"tcp://127.0.0.1:{proc.pub_port}", proc.public_key),
            self.keys[key_name],
            receive_hwm=receive_hwm,
        )
        self._taps.append(tap)
        return tap

    def verify_store(self, name: str | None = None) -> subprocess.CompletedProcess[str]:
        """``vledger verify`` on a node's store; the node must be stopped (it is the only writer)."""
        assert not self.node(name).running(), "stop the node before verifying its store"
        return self.cli("verify", str(self.store_dir(name)), check=False)

    def log_text(self, name: str) -> str:
        try:
            return self.procs[name].log.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, name: str, lines: int = LOG_TAIL_LINES) -> str:
        tail = self.log_text(name).splitlines()[-lines:]
        return f"\n--- last {len(tail)} lines of {name}'s log ---\n" + "\n".join(tail)

    def checkpoint_pin(self, ledger: str, home: str = "ingest-1") -> dict[str, str]:
        """The genesis rule pinning ``home``'s checkpoint key for ``ledger``, as ``vledger ledger
        create`` writes it (PROTOCOL 3)."""
        config = load_cluster(self.config_path)
        public = load_verify_key(signing_key_paths(config.keys_dir, home)[1]).raw
        return {"checkpoint_key": home_key(config.name, ledger, public).encode()}

    def pinned(self, ledger: str, rules: LedgerRules, home: str = "ingest-1") -> LedgerRules:
        """``rules`` with ``home``'s checkpoint key pinned for ``ledger``."""
        return dataclasses.replace(rules, rules={**rules.rules, **self.checkpoint_pin(ledger, home)})

    # --- clients and accounts --------------------------------------------------------

    def client(
        self, key_name: str = ADMIN, node: str | None = None, *, timeout: float = 10.0, follow: bool = True
    ) -> Client:
        """A protocol client with the key pair ``key_name``, talking first to ``node`` (following
        not_home answers to the home unless ``follow`` is False)."""
        client = Client(self.address(node), self.keys[key_name], timeout=timeout, follow=follow)
        self._clients.append(client)
        return client

    def wire(
        self,
        key_name: str = ADMIN,
        node: str | None = None,
        *,
        monitor: bool = False,
        options: Mapping[int, int] | None = None,
    ) -> Wire:
        wire = Wire(self.address(node), self.keys[key_name], monitor=monitor, options=options)
        self._wires.append(wire)
        return wire

    def admin(self, node: str | None = None) -> Client:
        """The admin's client of ``node`` (one per node, kept for the cluster's life)."""
        name = self.node(node).name
        if name not in self._admins:
            self._admins[name] = self.client(ADMIN, name)
        return self._admins[name]

    def add_account(self, name: str, role: str, key: KeyPair | None = None) -> KeyPair:
        """Create account ``name`` with ``role`` and bind a key to it (new unless given), through
        the admin; returns once every node applied the change. The key is kept as ``name``."""
        pair = key or new_keypair()
        admin = self.admin()
        for cmd, args in (
            ("account.add", {"account": name, "role": role}),
            ("key.add", {"account": name, "key": pair.public}),
        ):
            result = admin.call(cmd, args)
            assert result["pending"] == [], f"{cmd} {name}: not applied on {result['pending']}"
        self.keys[name] = pair
        return pair
