"""The e2e cluster (tests/e2e/helpers.py) with each node and each Redis on a host of its own.

:class:`HostsCluster` is :class:`SupervisedCluster` with its processes placed on the hosts of a
:class:`~vledger.tests.multihost.netns.Network` instead of under one supervisord: the same
cluster file (every node at its host's address), the same operator commands (``vledger
keygen --cluster``, ``vledger admin bootstrap``, ``vledger <role> --config ... --node ...``),
each started with ``ip netns exec <host>``. Redis is a primary and a replica on two hosts and
three Sentinels on three (quorum 2); every node finds the primary through the Sentinels
(``redis = "sentinel://..."``) and signs in as its role's Redis user (``[redis] passwords``,
broker/redis_acl.py): each Redis server gets the users ``keygen`` made (``redis_acl.apply``;
ACL users are a server's own, not replicated), while its default user stays for Redis'
replication and the Sentinels. The test process itself runs on the host ``client``
(:func:`~vledger.tests.multihost.netns.inside`): its clients, the writers and the ``vledger``
commands it runs reach the nodes as any client on the network would.

Everything the e2e checks read (heads, records, the stream, tallies, ``vledger verify
--cluster``) works unchanged on it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from vledger.broker import redis_acl, redis_functions
from vledger.broker.keys import load_secret
from vledger.broker.redis_server import connect, find_redis_server
from vledger.config.cluster import load_cluster
from vledger.config.supervisor import SupervisorLayout
from vledger.tests.e2e.helpers import ADMIN, ELECTION, NOTES, SupervisedCluster, environment
from vledger.tests.integration.cluster import wait_until
from vledger.tests.multihost.netns import Network

CLI = [sys.executable, "-m", "vledger.tools.cli"]
NODE_PORT = 7000
PUB_PORT = 7001
REDIS_PORT = 6379
SENTINEL_PORT = 26379
SERVICE = "vledger"
START_S = 60.0
# Sentinel's clocks: a primary silent for this long is down for one Sentinel; two agreeing
# start a failover, which a Sentinel gives up (and another tries again) after the timeout.
DOWN_AFTER_MS = 1500
FAILOVER_TIMEOUT_MS = 6000

INGEST = ("ingest-1", "ingest-2")
REPLICAS = ("replica-1", "replica-2")
OBSERVERS = ("observer-1", "observer-2")
VERIFIER = "verifier-1"
REDIS_HOSTS = ("redis-1", "redis-2")  # the first starts as the primary
SENTINEL_HOSTS = ("redis-1", "redis-2", "redis-3")
HOSTS = ("client", *INGEST, *REPLICAS, *OBSERVERS, VERIFIER, "redis-1", "redis-2", "redis-3")


class HostsCluster(SupervisedCluster):
    """Two homes, two replicas, two observers and a verifier, each on its own host; Redis behind Sentinel."""

    def __init__(self, network: Network) -> None:  # the parent's fields, none of its supervisord
        self.network = network
        self.directory = Path(tempfile.mkdtemp(prefix="vlmh-", dir="/tmp"))
        self.config_path = self.directory / "cluster.toml"
        self.run_dir = self.directory / "run"
        self.ingest = list(INGEST)
        self.replicas = list(REPLICAS)
        self.observers = list(OBSERVERS)
        self.verifier = VERIFIER
        self.homes = {ELECTION: "ingest-1", NOTES: "ingest-2"}
        self.keys = {}
        self._clients = {}
        self._programs = None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._write_config()
        self.config = load_cluster(self.config_path)
        self.layout = SupervisorLayout(run_dir=self.run_dir.resolve(), vledger=tuple(CLI), redis_server=None)
        self.layout.log_dir.mkdir(parents=True, exist_ok=True)

    @property
    def redis_url(self) -> str:
        sentinels = ",".join(f"{self.network[h].address}:{SENTINEL_PORT}" for h in SENTINEL_HOSTS)
        return f"sentinel://{sentinels}/{SERVICE}/0"

    def _write_config(self) -> None:
        lines = ["[cluster]", 'name = "multihost"', 'keys = "keys"', 'data = "data"']
        lines += [f'redis = "{self.redis_url}"', 'default_home = "ingest-1"', ""]
        lines += ["[redis]", 'passwords = "keys/redis"', ""]
        roles = {**dict.fromkeys(self.ingest, "ingest"), **dict.fromkeys(self.replicas, "replica")}
        roles |= {**dict.fromkeys(self.observers, "observer"), self.verifier: "verifier"}
        for name, role in roles.items():
            host = self.network[name].address
            lines += [f"[nodes.{name}]", f'role = "{role}"', f'host = "{host}"', f"port = {NODE_PORT}"]
            if role == "ingest":
                lines.append(f"pub_port = {PUB_PORT}")
            lines.append("")
        for ledger, home in self.homes.items():
            lines += [f"[ledgers.{ledger}]", f'home = "{home}"', ""]
        self.config_path.write_text("\n".join(lines))

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Redis and the Sentinels, keys, the admin, then every node, each waited for until it answers."""
        self.start_redis()
        admin_key = self.config.public_key_path(ADMIN)
        bootstrap = ("admin", "bootstrap", "--config", self.config_path, "--account", ADMIN, "--key", admin_key)
        for args in (("keygen", "--cluster", self.config_path), bootstrap):
            done = self.cli(*args)
            if done.returncode != 0:
                raise AssertionError(f"vledger {args[0]} exited {done.returncode}:\n{done.stdout}{done.stderr}")
            if args[0] == "keygen":
                self.apply_acl()
        self.keys[ADMIN] = load_secret(self.config.secret_key_path(ADMIN))
        for name in [*self.ingest, *self.replicas, *self.observers, self.verifier]:
            role = self.config.node(name).role
            self.launch(name, [*CLI, "--log-level", "info", role, "--config", str(self.config_path), "--node", name])
        for name in [*self.ingest, *self.replicas, *self.observers, self.verifier]:
            wait_until(lambda n=name: self._running(n) and self.answers(n), START_S, f"{name} answers", interval=0.2)
        for name in ("writer1", "writer2"):
            self.add_account(name, "writer")

    def _running(self, name: str) -> bool:
        code = self.processes[name].poll()
        if code is not None:
            raise AssertionError(f"{name} exited with status {code}:\n" + dict(self.log_tails()).get(name, ""))
        return True

    def launch(self, name: str, args: list[str], *, host: str | None = None) -> None:
        """Run ``args`` on ``host`` (default: the host called ``name``), its output in ``name``.log."""
        with (self.layout.log_dir / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                [*self.network[host or name].prefix, *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment() | {"PYTHONUNBUFFERED": "1"},
            )

    def start_redis(self) -> None:
        """The primary, its replica, and a Sentinel on each of three hosts; waits until they agree."""
        server = str(find_redis_server())
        primary = self.network[REDIS_HOSTS[0]].address
        for host in REDIS_HOSTS:
            directory = self.directory / host
            directory.mkdir()
            args = [
                server, "--bind", self.network[host].address, "127.0.0.1", "--port", str(REDIS_PORT),
                "--dir", str(directory), "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                "--protected-mode", "no",
            ]  # fmt: skip
            if host != REDIS_HOSTS[0]:
                args += ["--replicaof", primary, str(REDIS_PORT)]
            self.launch(f"redis-{host}", args, host=host)
        for host in SENTINEL_HOSTS:
            conf = self.directory / f"sentinel-{host}.conf"  # Sentinel rewrites its file: one each
            conf.write_text(
                "\n".join([
                    f"bind {self.network[host].address} 127.0.0.1",
                    f"port {SENTINEL_PORT}",
                    "protected-mode no",
                    f"sentinel monitor {SERVICE} {primary} {REDIS_PORT} 2",
                    f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
                    f"sentinel parallel-syncs {SERVICE} 1",
                    "",
                ])
            )  # fmt: skip
            self.launch(f"sentinel-{host}", [server, str(conf), "--sentinel"], host=host)
        wait_until(self._sentinels_ready, START_S, "three Sentinels that know the primary, its replica and each other")

    def apply_acl(self) -> None:
        """Every Redis server gets the users whose passwords ``keygen --cluster`` wrote, and the
        primary the functions library (as `vledger redis-functions` loads it; its replica and a
        promoted one hold it by replication)."""
        directory = self.config.redis.passwords_dir
        assert directory is not None
        nodes = self.config.redis_users()
        passwords = redis_acl.read_passwords(directory, nodes)
        writers = redis_acl.checkpoint_writers(self.config.default_home, self.config.homes, self.config.standbys)
        for host in REDIS_HOSTS:
            client = redis.Redis(self.network[host].address, REDIS_PORT, socket_timeout=5, socket_connect_timeout=5)
            try:
                redis_acl.apply(
                    client, passwords, nodes, admin_homes=(self.config.home_of("admin").name,), checkpoints=writers
                )
                if host == REDIS_HOSTS[0]:
                    redis_functions.load(client)
            finally:
                client.close()

    def _sentinels_ready(self) -> bool:
        for host in SENTINEL_HOSTS:
            client = redis.Redis(self.network[host].address, SENTINEL_PORT, socket_timeout=1, socket_connect_timeout=1)
            try:
                primary: Any = client.sentinel_master(SERVICE)  # redis-py types it loosely: a dict here
                if int(primary["num-slaves"]) < 1 or int(primary["num-other-sentinels"]) < 2:
                    return False
            except redis.exceptions.RedisError:
                return False
            finally:
                client.close()
        return True

    def primary(self) -> str:
        """The host of the primary, as the Sentinels reachable from here say ("" while they disagree)."""
        answers = set()
        for host in SENTINEL_HOSTS:
            client = redis.Redis(self.network[host].address, SENTINEL_PORT, socket_timeout=1, socket_connect_timeout=1)
            try:
                found: Any = client.sentinel_get_master_addr_by_name(SERVICE)  # (host, port), or None
                address, _ = found
                answers.add(_text(address))
            except (redis.exceptions.RedisError, TypeError):
                continue
            finally:
                client.close()
        hosts = {h.address: h.name for h in self.network.hosts.values()}
        return hosts.get(answers.pop(), "") if len(answers) == 1 else ""

    def stop(self) -> str:
        """Every process: SIGTERM, then SIGKILL past a deadline; names the ones that had to be killed."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 20
        killed = []
        for name, process in self.processes.items():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                killed.append(name)
        return f"stopped; still alive afterwards, killed: {', '.join(killed)}" if killed else "stopped"

    def redis_answers(self) -> bool:
        """Whether the primary the Sentinels name takes a write."""
        client = connect(self.config.redis_url, timeout=1.0)
        try:
            return bool(client.set("vledger:probe", "1"))
        except redis.exceptions.RedisError:
            return False
        finally:
            client.close()


HANDOVER = "handover"  # StandbyHostsCluster's ledger: homed on ingest-1, ingest-2 its standby (PROTOCOL 10.9)


class StandbyHostsCluster(HostsCluster):
    """The hosts' cluster with one more ledger, ``handover``, homed on ingest-1 with ingest-2 as
    its standby (created by the test with ``vledger ledger create``, which pins both keys)."""

    def __init__(self, network: Network) -> None:
        super().__init__(network)
        self.homes[HANDOVER] = "ingest-1"  # the lag probe follows it; no e2e writer writes it

    def _write_config(self) -> None:
        super()._write_config()
        with self.config_path.open("a") as f:
            f.write(f'\n[ledgers.{HANDOVER}]\nhome = "ingest-1"\nstandby = "ingest-2"\n')


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class LagProbe:
    """Replication lag as Redis hears it: from a home's report of holding height h (``vledger:held``,
    sent once the record is durable there) to the first report of a replica holding h or more."""

    def __init__(self, cluster: HostsCluster, replicas: tuple[str, ...]) -> None:
        self.replication = cluster.replication()
        self.replicas = replicas
        self.homes = {cluster.homes[ledger]: ledger for ledger in cluster.homes}
        self.pubsub = self.replication.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(self.replication.held_channel)
        self.home_at: dict[tuple[str, int], float] = {}  # (ledger, height) -> when its home held it
        self.lags: list[float] = []  # seconds, one per (replica, home report) pair
        self._waiting: dict[str, list[tuple[str, int, float]]] = {r: [] for r in replicas}

    def read(self, seconds: float) -> None:
        """Take in the reports of the next ``seconds``."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            message = self.pubsub.get_message(timeout=min(left, 0.2))
            if message is None:
                continue
            now = time.monotonic()
            node, ledger, height = _text(message["data"]).split()
            if self.homes.get(node) == ledger:
                for replica in self.replicas:
                    self._waiting[replica].append((ledger, int(height), now))
            elif node in self._waiting:
                left_over = []
                for item in self._waiting[node]:
                    if item[0] == ledger and item[1] <= int(height):
                        self.lags.append(now - item[2])
                    else:
                        left_over.append(item)
                self._waiting[node] = left_over

    def percentile(self, p: float) -> float:
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def close(self) -> None:
        self.pubsub.close()
        self.replication.client.close()
