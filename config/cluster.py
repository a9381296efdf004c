"""The cluster's topology: which nodes exist, where they listen, which ledgers each is home to.

Loaded from a TOML file (config/cluster.toml is the local default) into frozen
dataclasses; every mistake is reported with the file and the key. Relative paths in the
file (the key and data directories) are relative to the file's own directory, so a
configuration works from wherever a command is run.
"""

from __future__ import annotations

import dataclasses
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

from ..node.errors import SettingsError
from ..node.note import is_valid_name
from .redis import check_redis_url
from .settings import Limits, Settings, StoreSettings, broker_settings, build_settings, check_at_most, read_toml

ROLES = ("ingest", "replica", "observer", "verifier")
SECOND_FACTOR_KEY_FILE = "second-factor.seal"  # in the keys directory, made by vledger keygen --cluster
FEED_ROLES = ("ingest", "replica")  # roles whose nodes may publish a feed (pub_port)
FOLLOWER_ROLES = ("replica", "observer")  # roles whose nodes subscribe to feeds and keep a store
STORE_ROLES = ("ingest", "replica", "observer")  # roles whose nodes keep a store a gateway can serve
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


@dataclasses.dataclass(frozen=True, slots=True)
class IngestSettings:
    """Limits and pacing of the client protocol (docs/PROTOCOL.md, section 6)."""

    max_message_bytes: int = 1024 * 1024
    page_size: int = 500
    throttle_rate: int = 2000  # requests per second per key, sustained
    throttle_burst: int = 4000
    file_chunk_bytes: int = 256 * 1024
    max_file_bytes: int = 64 * 1024 * 1024
    # Uploads no file record names yet, partial or complete, are disk an account holds on a node
    # before any record pays for it: at most this many files and bytes per account (at least
    # max_file_bytes, or the largest file could never arrive), each dropped once untouched for
    # partial_upload_expiry_ms (ingest/uploads.py).
    max_partial_uploads: int = 4
    max_partial_upload_bytes: int = 128 * 1024 * 1024
    partial_upload_expiry_ms: int = 3_600_000
    account_wait_ms: int = 2000  # how long an admin change waits for every node to apply it
    # How long a home's start waits, at most, for the other nodes' checkpoints of the ledgers it
    # homes (ingest/home_start.py): a store put back from a copy is healed before it serves.
    start_check_ms: int = 2000
    # How long that start may spend, at most, healing the ledgers found behind (fetching their
    # missing records, page by page into the store): a slow or lying source cannot hold it for ever;
    # what came in time stays, and the next start goes on from there.
    start_heal_ms: int = 120_000
    # A round of at most this many puts (what the request loop read between two flushes) is
    # committed on the loop's own thread: a lone writer's put crosses no thread. A larger round,
    # which pipelined clients make, goes to the store's committer thread, so that the loop reads
    # and checks the next round while this one's SQLite writes and fsync run without the GIL.
    inline_commit_max: int = 1


@dataclasses.dataclass(frozen=True, slots=True)
class ReplicationSettings:
    """How records travel from their home node to the replicas (docs/PROTOCOL.md, section 10)."""

    max_hops: int = 1  # 1: replicas hear only home nodes; more lets replicas relay to others
    stream_max_len: int = 1_000_000  # records kept per ledger stream (approximate trim)
    heartbeat_ms: int = 1000  # how often a publisher announces its latest checkpoints
    checkpoint_interval_ms: int = 0  # a home signs each ledger at most this often (0: after every batch)
    # An ingest node's outbox sends at most this often: what a lone writer commits meanwhile goes to
    # Redis and the feed in one round trip, off the request path (0: after every group commit). A
    # follower's relay sends each stored run at once (ingest/replica.py, relay_settings). A put
    # whose write concern waits (w >= 1) has its pass 5 ms after the last at most (OutboxProcess.hurry:
    # at once for a lone writer), so the interval delays only w=0 records: replication lag (5a).
    # 5 -> 10 (p37; p27 and p36 measured it): a lone writer's node ~70 us CPU a put less (half
    # the passes, each ~290 us: a checkpoint signed, its row kept, the heights piped), p50 ~0.1 ms
    # less at load; bench/lone_put_ab.py, and `bench --only lag` for the lag, p37's commit.
    outbox_interval_ms: int = 10
    # Records per XRANGE or range request when catching up (a range request is also capped by
    # the node's page_size), and per chunk the outbox ships. 3000 was tried: no gain on a quiet
    # machine (`bench --only catchup`, 3 interleaved pairs: 30.3k/32.5k/33.4k rec/s against
    # 31.0k/33.7k/29.2k at 1000), while a page's bytes (not capped: up to catch_up_batch x
    # max_record_bytes) and how far behind a follower may be and still be `current` triple.
    catch_up_batch: int = 1000
    # true: a follower on more than one core checks the next catch-up page in a worker process
    # (ingest/page_check.py, started with the replica, off the follower's thread) while it takes
    # one. Quiet 2-core machine, `bench --only catchup`, 3 interleaved pairs: 32.7k/28.6k/28.4k
    # rec/s on against 25.8k/24.3k/23.5k off. It needs an idle core: on a machine loaded by other
    # work (load 9-23 on 2 cores) it gained nothing and lost up to a quarter, so a replica that
    # shares its host with busy processes may want it off.
    catch_up_checker: bool = True
    write_timeout_ms: int = 5000  # how long a put with w=N waits for N replicas
    max_write_concern: int = 16
    send_hwm: int = 100_000  # messages a PUB socket queues per subscriber before it drops
    receive_hwm: int = 100_000
    # Outside witnesses ([outside_witnesses], PROTOCOL 13.9): how long one add-checkpoint may
    # take, and the longest wait between tries at a witness that failed (doubling from 1 s).
    witness_timeout_ms: int = 5000
    witness_backoff_max_ms: int = 60_000
    # A quiet ledger's checkpoint is cosigned again this long after a witness last cosigned it
    # (PROTOCOL 10.7, 13.9): how old the newest majority of cosignatures may be on a live view,
    # so that a frozen gateway's old head turns STALE (11.4) even while nothing is written.
    recosign_interval_ms: int = 300_000
    # A follower finds records deleted from its store's file behind its back and fetches them again
    # (ingest/follow.py, heal_cuts): its last ones this often (one seek a ledger), a hole below its
    # head this often (a count of each ledger's rows: a scan, ~7 ms CPU for 100,000 records).
    cut_check_ms: int = 1000
    hole_check_ms: int = 30_000
    # A verified checkpoint above a follower's head whose next record no source served for this
    # long is set aside (PROTOCOL 10.7 "Storing"): the follower serves what its store proves again
    # (a note the home's stolen key signed past its tree held it behind for ever: outsider o18 F3).
    unserved_note_ms: int = 30_000


@dataclasses.dataclass(frozen=True, slots=True)
class VerifierSettings:
    """How the verifier paces its checks (vledger.verifier.process)."""

    sweep_rate: int = 20_000  # records per second re-verified per node copy, at most
    sweep_interval_ms: int = 1000  # the least time between two sweeps of one copy
    heads_interval_ms: int = 1000  # how often every copy's head is compared with the home's
    lag_alert_ms: int = 30_000  # a copy behind the home for this long is reported lagging
    node_timeout_ms: int = 2000  # a node that does not answer within this is skipped a while
    claim_idle_ms: int = 30_000  # stream entries a dead verifier left for this long are taken over
    # Observers with no common height this long, none signing a new one, are tally_uncompared
    # (PROTOCOL 10.6 step 4): longer than an observer's replay of its store after a restart.
    tally_uncompared_ms: int = 300_000


@dataclasses.dataclass(frozen=True, slots=True)
class ObserverSettings:
    """How observers publish their signed tallies (docs/PROTOCOL.md, section 11)."""

    tally_interval_ms: int = 1000  # at most one snapshot per ledger and observer this often
    tally_stream_max_len: int = 10_000  # snapshots kept in each observer's stream of a ledger (approximate trim)
    # And at most about this many bytes of them: a resources ledger's body names every holder (up to
    # 40,000), so 10,000 snapshots of a big map were gigabytes of the Redis every node shares.
    tally_stream_max_bytes: int = 64 * 1024 * 1024
    # How often an observer reads back which of its snapshots Redis names its latest, and
    # publishes its own again if another was named there (PROTOCOL 11.1).
    latest_check_ms: int = 5000
    # How long after a record's accepted time an observer waits for the admin records accepted
    # before it when, by the admin copy it holds, the record breaks the grant rule (PROTOCOL 16.2):
    # the admin home's held height in Redis, which says that copy is current, is the home's word
    # as its outbox last wrote it, so a grant still in flight was flagged, and signed, as missing.
    grant_wait_ms: int = 10_000


@dataclasses.dataclass(frozen=True, slots=True)
class HttpSettings:
    """``[http]``: what one client may hold of a process's HTTP port (the gateway's, a node's
    ``http_port``): aiohttp alone sets no deadline on a request's head, so connections that send
    their headers a byte at a time were held for ever (docs/PROTOCOL.md, section 15)."""

    # A request's head (request line and headers) must be complete this long after the
    # connection opened, or, on a kept-alive connection, after its first byte; else the
    # connection is closed without an answer.
    header_timeout_ms: int = 10_000
    # A kept-alive connection with no request for this long after its last answer is closed.
    idle_timeout_ms: int = 30_000
    # Open connections in all, and from one client address (an IPv6 address counts by its /64);
    # past either, a new connection is answered 503 [throttled] and closed. Behind a reverse
    # proxy every connection comes from the proxy's address: raise the second to the first.
    max_connections: int = 8192
    max_connections_per_address: int = 64
    # Bytes of answers written but not yet taken by clients that do not read (beyond what the
    # kernel's socket buffers hold), from one address and in all: a connection whose answer
    # would pass either is closed. Sixty clients that never read a 70 MB page grew the gateway
    # to 10 GB and stopped it answering (outsider pass 18, F0).
    max_unread_bytes_per_address: int = 64 * 1024 * 1024  # above two entries bundles (16 MiB each) at once
    max_unread_bytes: int = 256 * 1024 * 1024
    # The kernel's send buffer (SO_SNDBUF) of each accepted connection: what a client that does
    # not read holds there is outside the unread caps above, and Linux grows it to 4 MiB a
    # connection by itself (tcp_wmem), 32 GiB over 8,192 connections.
    send_buffer_bytes: int = 256 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str
    role: str
    host: str
    port: int
    pub_port: int | None = None  # where the node publishes its feed (ingest: required)
    follow: tuple[str, ...] = ()  # the nodes whose feeds a replica subscribes to
    bind: str | None = None  # the address its sockets bind (e.g. 0.0.0.0), when not ``host``
    http_port: int | None = None  # /metrics, /healthz, /readyz of the node's process (local, plain HTTP)
    gateway_port: int | None = None  # the public read-only HTTP gateway beside the node (its store)
    # During a key rotation's window (PROTOCOL 16.6) the request socket also serves the new
    # CURVE key here, since a CURVE server socket has one key per bound endpoint.
    rotation_port: int | None = None
    # The same for the feed (PUB, ``pub_port``): the new key during a rotation's window.
    feed_rotation_port: int | None = None

    @property
    def endpoint(self) -> str:
        """Where others reach the node: its ``host``."""
        return f"tcp://{self.host}:{self.port}"

    @property
    def feed_endpoint(self) -> str | None:
        return None if self.pub_port is None else f"tcp://{self.host}:{self.pub_port}"

    @property
    def bind_endpoint(self) -> str:
        """Where the node's request socket binds: ``bind`` if given (a container behind NAT,
        a host with several addresses), else ``host``."""
        return f"tcp://{self.bind or self.host}:{self.port}"

    @property
    def rotation_endpoint(self) -> str | None:
        return None if self.rotation_port is None else f"tcp://{self.host}:{self.rotation_port}"

    @property
    def bind_rotation_endpoint(self) -> str | None:
        return None if self.rotation_port is None else f"tcp://{self.bind or self.host}:{self.rotation_port}"

    @property
    def bind_feed_endpoint(self) -> str | None:
        return None if self.pub_port is None else f"tcp://{self.bind or self.host}:{self.pub_port}"

    @property
    def feed_rotation_endpoint(self) -> str | None:
        return None if self.feed_rotation_port is None else f"tcp://{self.host}:{self.feed_rotation_port}"

    @property
    def bind_feed_rotation_endpoint(self) -> str | None:
        port = self.feed_rotation_port
        return None if port is None else f"tcp://{self.bind or self.host}:{port}"

    @property
    def bind_host(self) -> str:
        """The address the node's sockets, HTTP ones included, bind."""
        return self.bind or self.host

    @property
    def gateway_url(self) -> str | None:
        """Where the public reaches the gateway beside this node, if it has one."""
        return None if self.gateway_port is None else f"http://{self.host}:{self.gateway_port}/"


REDIS_URL_ENV = "REDIS_URL"


@dataclasses.dataclass(frozen=True, slots=True)
class RedisAccess:
    """How one process reaches Redis: the URL, and with access control its user and password file.

    ``password_file`` holds the password (0600, made by ``vledger keygen --cluster``); it is
    read when the client connects, never kept in a setting or logged. ``ca_file`` is the CA
    that signed the server's certificate, for a ``rediss://`` URL.
    """

    url: str
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RedisSettings:
    """``[redis]``: a user per node and for the gateway and the admin (``passwords``: the
    directory of their password files and of ``redis.acl``; none: no access control) and
    ``ca``, a CA file for ``rediss://``."""

    passwords_dir: Path | None = None
    ca_file: Path | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterConfig:
    path: Path
    name: str
    keys_dir: Path
    data_dir: Path
    redis_url: str
    default_home: str
    nodes: dict[str, NodeConfig]
    homes: dict[str, str]  # ledger -> its home ingest node
    standbys: dict[str, str] = dataclasses.field(default_factory=dict)  # ledger -> its standby (PROTOCOL 10.9)
    # ledger -> its `epoch`: the newest epoch from 3 the operator opened, kept by a file whose
    # `home` and `standby` were swapped back since (PROTOCOL 10.9, a failback)
    epochs: dict[str, int] = dataclasses.field(default_factory=dict)
    # [cluster] production: every admin command needs a second factor (docs/PROTOCOL.md 16.5)
    production: bool = False
    settings: Settings = dataclasses.field(default_factory=Settings)
    ingest: IngestSettings = dataclasses.field(default_factory=IngestSettings)
    replication: ReplicationSettings = dataclasses.field(default_factory=ReplicationSettings)
    verifier: VerifierSettings = dataclasses.field(default_factory=VerifierSettings)
    observers: ObserverSettings = dataclasses.field(default_factory=ObserverSettings)
    redis: RedisSettings = dataclasses.field(default_factory=RedisSettings)
    http: HttpSettings = dataclasses.field(default_factory=HttpSettings)
    # [outside_witnesses]: an outside witness's key name (as a genesis lists it) -> the URL
    # prefix of its add-checkpoint (c2sp.org/tlog-witness's submission prefix)
    outside_witnesses: dict[str, str] = dataclasses.field(default_factory=dict)

    def redis_access(self, role: str, node: str | None = None) -> RedisAccess:
        """How a process reaches Redis: ``$REDIS_URL`` or ``[cluster] redis``, and with
        ``[redis] passwords`` as its own user: node ``node``'s (``vledger-node-<node>``, which
        writes only the per-node keys of its name, broker/redis_acl.py), or for ``gateway`` and
        ``admin`` (the ``vledger`` command) the role's (``vledger-<role>``)."""
        url = os.environ.get(REDIS_URL_ENV) or self.redis_url
        directory = self.redis.passwords_dir
        if directory is None:
            return RedisAccess(url, ca_file=self.redis.ca_file)
        user = f"vledger-node-{node}" if node is not None else f"vledger-{role}"
        return RedisAccess(url, user, directory / f"{user}.redis_password", self.redis.ca_file)

    def redis_users(self) -> dict[str, str]:
        """Each node's name -> its role: the nodes that get a Redis user of their own."""
        return {name: node.role for name, node in self.nodes.items()}

    def node(self, name: str) -> NodeConfig:
        try:
            return self.nodes[name]
        except KeyError:
            raise SettingsError(f"{self.path}: no node {name!r} (nodes: {', '.join(sorted(self.nodes))})") from None

    def home_of(self, ledger: str) -> NodeConfig:
        return self.nodes[self.homes.get(ledger, self.default_home)]

    def standby_of(self, ledger: str) -> NodeConfig | None:
        """The ingest node that may take ``ledger`` over from its home (PROTOCOL 10.9), if any."""
        name = self.standbys.get(ledger)
        return None if name is None else self.nodes[name]

    def allows_epoch(self, ledger: str, number: int, home: str) -> bool:
        """Whether this file lets ``home`` open epoch ``number`` (from 3: a failback) of
        ``ledger`` (PROTOCOL 10.9): it names ``home`` the ledger's standby (the swap before the
        promotion), or states an ``epoch`` of the ledger at least ``number`` (an epoch made,
        kept once the file is swapped back)."""
        return self.standbys.get(ledger) == home or number <= self.epochs.get(ledger, 0)

    def ingest_nodes(self) -> list[NodeConfig]:
        return [n for n in self.nodes.values() if n.role == "ingest"]

    def nodes_of(self, role: str) -> list[NodeConfig]:
        return [n for n in self.nodes.values() if n.role == role]

    def public_key_path(self, name: str) -> Path:
        return self.keys_dir / f"{name}.key"

    def secret_key_path(self, name: str) -> Path:
        return self.keys_dir / f"{name}.key_secret"

    def second_factor_key_path(self) -> Path:
        """The cluster's second-factor key: an AES-SIV key (0600) that seals admins' TOTP secrets."""
        return self.keys_dir / SECOND_FACTOR_KEY_FILE

    def store_dir(self, node: str) -> Path:
        return self.data_dir / node


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SettingsError(f"{where}: [{key}] must be a table")
    return value


def _check_keys(table: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise SettingsError(f"{where}.{key}: unknown key (known: {', '.join(allowed)})")


def _text(table: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value:
        raise SettingsError(f"{where}.{key}: expected a non-empty string")
    return value


def _name(value: str, where: str) -> str:
    if not _NAME.fullmatch(value):
        raise SettingsError(f"{where}: {value!r} is not a valid name ([a-z0-9][a-z0-9._-], at most 64)")
    return value


def _nodes(table: dict[str, Any], where: str) -> dict[str, NodeConfig]:
    nodes: dict[str, NodeConfig] = {}
    endpoints: dict[tuple[str, int], str] = {}
    for name, spec in table.items():
        at = f"{where}: nodes.{_name(name, f'{where}: nodes')}"
        if not isinstance(spec, dict):
            raise SettingsError(f"{at}: must be a table")
        known = (
            "role", "host", "port", "pub_port", "follow", "bind", "http_port", "gateway_port", "rotation_port",
            "feed_rotation_port",
        )  # fmt: skip
        _check_keys(spec, known, at)
        role = _text(spec, "role", at)
        if role not in ROLES:
            raise SettingsError(f"{at}.role: {role!r} is not one of {', '.join(ROLES)}")
        host = _text(spec, "host", at, "127.0.0.1")
        port = _port(spec, "port", at)
        pub_port = _port(spec, "pub_port", at) if "pub_port" in spec else None
        if role == "ingest" and pub_port is None:
            raise SettingsError(f"{at}.pub_port: an ingest node publishes its records: give it a port")
        if pub_port is not None and role not in FEED_ROLES:
            raise SettingsError(f"{at}.pub_port: only ingest and replica nodes publish a feed, not the {role} role")
        http_port = _port(spec, "http_port", at) if "http_port" in spec else None
        gateway_port = _port(spec, "gateway_port", at) if "gateway_port" in spec else None
        if gateway_port is not None and role not in STORE_ROLES:
            raise SettingsError(f"{at}.gateway_port: a gateway serves a node's store; the {role} role keeps none")
        rotation_port = _port(spec, "rotation_port", at) if "rotation_port" in spec else None
        feed_rotation_port = _port(spec, "feed_rotation_port", at) if "feed_rotation_port" in spec else None
        if feed_rotation_port is not None and pub_port is None:
            raise SettingsError(f"{at}.feed_rotation_port: only a node with a pub_port publishes a feed")
        ports = (
            ("port", port),
            ("pub_port", pub_port),
            ("http_port", http_port),
            ("gateway_port", gateway_port),
            ("rotation_port", rotation_port),
            ("feed_rotation_port", feed_rotation_port),
        )
        for key, value in ports:
            if value is None:
                continue
            if (host, value) in endpoints:
                raise SettingsError(f"{at}.{key}: {host}:{value} is already used by {endpoints[host, value]}")
            endpoints[host, value] = f"{name}.{key}"
        follow = spec.get("follow", [])
        if not isinstance(follow, list) or not all(isinstance(f, str) for f in follow):
            raise SettingsError(f"{at}.follow: expected a list of node names")
        if follow and role not in FOLLOWER_ROLES:
            raise SettingsError(f"{at}.follow: only a replica or an observer follows other nodes")
        bind = _text(spec, "bind", at) if "bind" in spec else None
        nodes[name] = NodeConfig(
            name, role, host, port, pub_port, tuple(follow), bind, http_port, gateway_port, rotation_port,
            feed_rotation_port,
        )  # fmt: skip
    if not any(n.role == "ingest" for n in nodes.values()):
        raise SettingsError(f"{where}: [nodes] has no ingest node")
    ingest = tuple(sorted(n.name for n in nodes.values() if n.role == "ingest"))
    for node in list(nodes.values()):
        at = f"{where}: nodes.{node.name}.follow"
        for followed in node.follow:
            if followed == node.name:
                raise SettingsError(f"{at}: a node cannot follow itself")
            if followed not in nodes or nodes[followed].pub_port is None:
                raise SettingsError(f"{at}: {followed!r} is not a node of [nodes] with a pub_port")
        if node.role in FOLLOWER_ROLES and not node.follow:
            nodes[node.name] = dataclasses.replace(node, follow=ingest)  # the default: every home node
    return nodes


def _port(spec: dict[str, Any], key: str, at: str) -> int:
    port = spec.get(key)
    if type(port) is not int or not 1 <= port <= 65535:
        raise SettingsError(f"{at}.{key}: expected a port number, got {port!r}")
    return port


def cluster_from_mapping(data: dict[str, Any], path: Path) -> ClusterConfig:
    where = str(path)
    tables = (
        "cluster",
        "settings",
        "ingest",
        "replication",
        "verifier",
        "observers",
        "nodes",
        "ledgers",
        "redis",
        "http",
        "outside_witnesses",
    )
    _check_keys(data, tables, where)
    cluster = _table(data, "cluster", where)
    _check_keys(cluster, ("name", "keys", "data", "redis", "default_home", "production"), f"{where}: cluster")
    production = cluster.get("production", False)
    if not isinstance(production, bool):
        raise SettingsError(f"{where}: cluster.production: expected true or false, got {production!r}")
    nodes = _nodes(_table(data, "nodes", where), where)
    base = path.parent
    default_home = _text(cluster, "default_home", f"{where}: cluster")
    homes: dict[str, str] = {}
    standbys: dict[str, str] = {}
    epochs: dict[str, int] = {}
    for ledger, spec in _table(data, "ledgers", where).items():
        at = f"{where}: ledgers.{_name(ledger, f'{where}: ledgers')}"
        if not isinstance(spec, dict):
            raise SettingsError(f"{at}: must be a table")
        _check_keys(spec, ("home", "standby", "epoch"), at)
        homes[ledger] = _text(spec, "home", at)
        if "standby" in spec:
            standbys[ledger] = _text(spec, "standby", at)
            if standbys[ledger] == homes[ledger]:
                raise SettingsError(f"{at}.standby: the standby must be another node than the home")
        if "epoch" in spec:
            epoch = spec["epoch"]
            if type(epoch) is not int or not 3 <= epoch < 2**63 or ledger not in standbys:
                raise SettingsError(
                    f"{at}.epoch: expected the number (from 3) of the newest epoch a failback opened,"
                    f" beside a standby, got {epoch!r}"
                )
            epochs[ledger] = epoch
    for at, home in (
        [(f"{where}: cluster.default_home", default_home)]
        + [(f"{where}: ledgers.{ledger}.home", home) for ledger, home in homes.items()]
        + [(f"{where}: ledgers.{ledger}.standby", node) for ledger, node in standbys.items()]
    ):
        if home not in nodes or nodes[home].role != "ingest":
            raise SettingsError(f"{at}: {home!r} is not an ingest node of [nodes]")
    witnessed = any(node.role in FOLLOWER_ROLES for node in nodes.values())
    for ledger in standbys if not witnessed else ():
        # Its epoch counts only with a witness's cosignature (10.9): with none, a promotion
        # could never be proven, and the old home, back, would go on as the ledger's home.
        raise SettingsError(
            f"{where}: ledgers.{ledger}.standby: a standby needs at least one witness (a replica"
            " or observer in [nodes]) to cosign its epoch's checkpoints, and this cluster has none"
        )
    settings_table = _table(data, "settings", where)
    _check_keys(settings_table, ("limits", "store", "broker"), f"{where}: settings")
    redis_table = _table(data, "redis", where)
    _check_keys(redis_table, ("passwords", "ca"), f"{where}: redis")
    passwords, ca = redis_table.get("passwords"), redis_table.get("ca")
    for key, value in (("passwords", passwords), ("ca", ca)):
        if value is not None and (not isinstance(value, str) or not value):
            raise SettingsError(f"{where}: redis.{key}: expected a path, got {value!r}")
    return ClusterConfig(
        path=path,
        name=_name(_text(cluster, "name", f"{where}: cluster", "local"), f"{where}: cluster.name"),
        keys_dir=(base / _text(cluster, "keys", f"{where}: cluster", "keys")).resolve(),
        data_dir=(base / _text(cluster, "data", f"{where}: cluster", "data")).resolve(),
        redis_url=_redis_url(_text(cluster, "redis", f"{where}: cluster", "redis://127.0.0.1:6379/0"), where),
        default_home=default_home,
        nodes=nodes,
        homes=homes,
        standbys=standbys,
        epochs=epochs,
        production=production,
        settings=Settings(
            limits=build_settings(Limits, settings_table.get("limits", {}), f"{where}: settings.limits"),
            store=build_settings(StoreSettings, settings_table.get("store", {}), f"{where}: settings.store"),
            broker=broker_settings(settings_table.get("broker", {}), f"{where}: settings.broker"),
        ),
        ingest=_ingest_settings(data.get("ingest", {}), f"{where}: ingest"),
        replication=build_settings(ReplicationSettings, data.get("replication", {}), f"{where}: replication"),
        verifier=build_settings(VerifierSettings, data.get("verifier", {}), f"{where}: verifier"),
        observers=build_settings(ObserverSettings, data.get("observers", {}), f"{where}: observers"),
        redis=RedisSettings(
            passwords_dir=None if passwords is None else (base / passwords).resolve(),
            ca_file=None if ca is None else (base / ca).resolve(),
        ),
        http=_http_settings(data.get("http", {}), f"{where}: http"),
        outside_witnesses=_outside_witnesses(_table(data, "outside_witnesses", where), f"{where}: outside_witnesses"),
    )


def _outside_witnesses(table: dict[str, Any], where: str) -> dict[str, str]:
    """[outside_witnesses]: key names (13.1) to http(s) URL prefixes with a host, no query or fragment."""
    urls = {}
    for name, url in table.items():
        if not is_valid_name(name):
            raise SettingsError(f"{where}: {name!r:.80} is not a witness key name (13.1)")
        if not isinstance(url, str):
            raise SettingsError(f"{where}.{name}: expected a URL string")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise SettingsError(f"{where}.{name}: {url!r:.120} is not an http(s) URL prefix with a host")
        urls[name] = url.rstrip("/")
    return urls


def _ingest_settings(table: Any, where: str) -> IngestSettings:
    """[ingest], whose partial-upload quota must hold at least one file of the largest size."""
    ingest = build_settings(IngestSettings, table, where)
    if ingest.max_partial_upload_bytes < ingest.max_file_bytes:
        raise SettingsError(
            f"{where}.max_partial_upload_bytes: {ingest.max_partial_upload_bytes} is below"
            f" max_file_bytes ({ingest.max_file_bytes}): a file of the largest size could never be uploaded"
        )
    return ingest


def _http_settings(table: Any, where: str) -> HttpSettings:
    """[http], whose cap per address is at most the cap in all (a larger one could never be reached)."""
    http = build_settings(HttpSettings, table, where)
    http = check_at_most(http, table, "max_connections_per_address", "max_connections", where)
    return check_at_most(http, table, "max_unread_bytes_per_address", "max_unread_bytes", where)


def load_cluster(path: Path) -> ClusterConfig:
    return cluster_from_mapping(read_toml(path), path.resolve())


def _redis_url(url: str, where: str) -> str:
    """``url``, once :func:`check_redis_url` read it (a bad sentinel:// URL fails at load, not at first use)."""
    check_redis_url(url, f"{where}: cluster.redis")
    return url


class ConfiguredFailbacks:
    """Whether the cluster file lets a node open an epoch from 3 of a ledger (a failback,
    PROTOCOL 10.9): :meth:`ClusterConfig.allows_epoch`, read again when the running config does
    not allow it and the file changed since. A witness, the verifier and `vledger repl status`
    take such a handover only so: the operator's swap on every host, not the pinned key alone.
    A witness meets the record after the operator swapped the file and promoted, without a
    restart: one ``stat`` then tells whether reading the file again can change the answer."""

    def __init__(self, config: ClusterConfig | None, path: Path | None = None) -> None:
        """``config`` as the process read it, or None with ``path``: the file read at the first
        question (an ingest node's outbox process, which has no config of its own)."""
        if config is not None:
            self.path = config.path
        elif path is not None:
            self.path = path
        else:
            raise ValueError("ConfiguredFailbacks needs a config or its file's path")
        self._config = config
        self._seen: tuple[int, ...] | None = None  # the file's stat when last read; None: not read since start

    def allows(self, ledger: str, number: int, home: str) -> bool:
        if self._config is not None and self._config.allows_epoch(ledger, number, home):
            return True
        try:
            stat = self.path.stat()
            seen = (stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size)  # a swap keeps the size
            if seen == self._seen:
                return False
            self._config = load_cluster(self.path)
            self._seen = seen
        except (OSError, ValueError, SettingsError):
            # An unreadable or half-written file: the one read last still stands, and the next
            # meeting reads it again (its stat is not marked seen).
            return False
        return self._config.allows_epoch(ledger, number, home)
