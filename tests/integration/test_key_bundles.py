"""docker-compose.yml's Redis set and key folders, run here without Docker.

What the compose file does with containers, done with processes on 127.0.0.1: ``vledger keygen
--cluster FILE --bundles DIR`` (the ``keys`` service); a Redis primary and its replica that load
the ``redis`` folder's ACL file and sign in to each other as the replication user; a Sentinel
whose default user may only ask where the primary is, signing in to the servers as its own user
(the ``sentinel`` folder); then an ingest node, a replica, the verifier and the gateway, each given
as its key directory its own folder alone (a cluster file that differs from the operator's in
``[cluster] keys`` only, as a container mounts its folder at /keys). A record written with
``-w 1`` proves the replica verified the home's checkpoint and cosigned it; the gateway serves it
with that cosignature, read from Redis as its own user. Nobody reaches Redis as the default user.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from vledger.broker import redis_acl, redis_functions
from vledger.broker.redis_server import find_redis_server, free_ports
from vledger.tests.integration.cluster import wait_until

CLI = [sys.executable, "-m", "vledger.tools.cli"]
SERVICE = "vledger"
START_S = 60.0
NODES = ("ingest-1", "replica-1", "verifier-1")


class Processes:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str]) -> None:
        with (self.directory / f"{name}.log").open("ab") as log:
            self.running[name] = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory
            )

    def alive(self, name: str) -> bool:
        code = self.running[name].poll()
        if code is not None:
            log = (self.directory / f"{name}.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"{name} exited with status {code}:\n{log}")
        return True

    def stop_all(self) -> None:
        for process in reversed(self.running.values()):
            process.terminate()
        for process in self.running.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def processes(short_tmp: Path) -> Iterator[Processes]:
    running = Processes(short_tmp)
    try:
        yield running
    finally:
        running.stop_all()


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise AssertionError(
            f"vledger {' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return done


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status, answer.read()
    except OSError:
        return 0, b""


def test_each_process_runs_from_its_own_key_folder_behind_a_redis_set_without_a_default_user(
    short_tmp: Path, processes: Processes
) -> None:
    primary, replica, sentinel, *ports = free_ports(11)
    ingest, pub, ingest_http, replica_port, replica_http, verifier, verifier_http, gateway = ports
    text = f"""
[cluster]
name = "bundled"
keys = "{{keys}}"
data = "data"
redis = "sentinel://127.0.0.1:{sentinel}/{SERVICE}/0"
default_home = "ingest-1"

[redis]
passwords = "{{keys}}/redis"

[nodes.ingest-1]
role = "ingest"
host = "127.0.0.1"
port = {ingest}
pub_port = {pub}
http_port = {ingest_http}

[nodes.replica-1]
role = "replica"
host = "127.0.0.1"
port = {replica_port}
http_port = {replica_http}

[nodes.verifier-1]
role = "verifier"
host = "127.0.0.1"
port = {verifier}
http_port = {verifier_http}
"""
    operator = short_tmp / "cluster.toml"
    operator.write_text(text.format(keys="keys"))
    bundles = short_tmp / "bundles"
    cli("keygen", "--cluster", operator, "--bundles", bundles)

    # Redis as the compose file runs it: the redis folder's ACL file, the replication user's password.
    server = str(find_redis_server())
    acl = bundles / "redis"
    masterauth = redis_acl.read_password(acl / f"{redis_acl.REPLICATION_USER}{redis_acl.PASSWORD_SUFFIX}")
    for name, port in (("redis", primary), ("redis-replica", replica)):
        (short_tmp / name).mkdir()
        args = [
            server, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(short_tmp / name), "--save", "",
            "--appendonly", "yes", "--aclfile", str(acl / redis_acl.ACL_FILE),
            "--masteruser", redis_acl.REPLICATION_USER, "--masterauth", masterauth,
        ]  # fmt: skip
        processes.start(name, [*args, *(["--replicaof", "127.0.0.1", str(primary)] if port == replica else [])])
    auth_pass = redis_acl.read_password(bundles / "sentinel" / f"{redis_acl.SENTINEL_USER}{redis_acl.PASSWORD_SUFFIX}")
    conf = short_tmp / "sentinel.conf"
    conf.write_text(
        "\n".join([
            "bind 127.0.0.1",
            f"port {sentinel}",
            redis_acl.SENTINEL_DEFAULT_USER,
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 1",
            f"sentinel auth-user {SERVICE} {redis_acl.SENTINEL_USER}",
            f"sentinel auth-pass {SERVICE} {auth_pass}",
            f"sentinel down-after-milliseconds {SERVICE} 5000",
            "",
        ])
    )  # fmt: skip
    processes.start("sentinel", [server, str(conf), "--sentinel"])
    asker = redis.Redis("127.0.0.1", sentinel, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)

    def sentinel_sees_the_replica() -> bool:
        processes.alive("sentinel")
        try:
            found: Any = asker.sentinel_master(SERVICE)
        except redis.exceptions.RedisError:
            return False
        return int(found["num-slaves"]) == 1 and "s_down" not in found["flags"]  # it signed in to both

    wait_until(sentinel_sees_the_replica, START_S, "the Sentinel signed in to the primary and found its replica")
    # Whoever reaches the Sentinel learns where the primary is, and can change nothing there.
    for command in (
        ("SENTINEL", "SET", SERVICE, "quorum", "2"),
        ("SENTINEL", "REMOVE", SERVICE),
        ("SENTINEL", "MONITOR", "other", "127.0.0.1", str(replica), "1"),
        ("SENTINEL", "FAILOVER", SERVICE),
        ("PUBLISH", "__sentinel__:hello", "x"),
        ("ACL", "LIST"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            asker.execute_command(*command)
    asker.close()
    for port in (primary, replica):
        anonymous = redis.Redis("127.0.0.1", port, socket_timeout=2)
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous.get("vledger:{accounts}:version")
        anonymous.close()

    # The functions library, loaded as compose's redis-functions service does: from its own folder
    # (the loader's password alone), through the Sentinel; Redis hands it to its replica too.
    (short_tmp / "redis-functions.toml").write_text(text.format(keys="bundles/redis-functions"))
    assert "loaded vledger_" in cli("redis-functions", "--config", short_tmp / "redis-functions.toml").stdout
    copy = redis.Redis("127.0.0.1", replica, username=redis_acl.LOADER_USER, socket_timeout=2,
                       password=redis_acl.read_password(bundles / "redis-functions" / "redis" / (
                           f"{redis_acl.LOADER_USER}{redis_acl.PASSWORD_SUFFIX}")))  # fmt: skip
    wait_until(lambda: redis_functions.loaded(copy), START_S, "the replica to hold the library")
    copy.close()
    cli("admin", "bootstrap", "--config", operator, "--account", "admin", "--key", short_tmp / "keys" / "admin.key")
    # Each process: a cluster file naming its own folder as the key directory, and nothing else.
    for name in (*NODES, "gateway"):
        (short_tmp / f"{name}.toml").write_text(text.format(keys=f"bundles/{name}"))
    for name in NODES:
        role = name.split("-")[0]
        processes.start(name, [*CLI, "--log-level", "info", role, "--config", f"{name}.toml", "--node", name])
    processes.start(
        "gateway",
        [
            *CLI,
            "gateway",
            "--config",
            "gateway.toml",
            "--node",
            "replica-1",
            "--host",
            "127.0.0.1",
            "--port",
            str(gateway),
        ],
    )
    for name, port in (("ingest-1", ingest_http), ("replica-1", replica_http), ("verifier-1", verifier_http)):
        wait_until(lambda n=name, p=port: processes.alive(n) and get(f"http://127.0.0.1:{p}/readyz")[0] == 200,
                   START_S, f"{name} ready")  # fmt: skip

    admin = ["--config", operator, "--key", short_tmp / "keys" / "admin.key_secret"]
    cli("ledger", "create", "notes", "--kinds", "note", "--difficulty", "0", *admin)
    cli("put", "notes", "note", "--payload", '{"n": 1}', "-w", "1", *admin)  # replica-1 cosigned it

    def served() -> dict[str, Any] | None:
        processes.alive("gateway")
        status, body = get(f"http://127.0.0.1:{gateway}/api/ledgers/notes/checkpoint")
        found = json.loads(body) if status == 200 else None
        return found if found is not None and found["size"] == 2 and found["cosigned_by"] else None

    checkpoint = wait_until(served, START_S, "the gateway serves the checkpoint replica-1 cosigned")
    assert checkpoint["cosigned_by"] == list(checkpoint["witness_keys"]) == ["bundled/witness/replica-1"]
    for name in (*NODES, "gateway"):
        assert processes.alive(name)
    logs = "".join((short_tmp / f"{name}.log").read_text(errors="replace") for name in (*NODES, "gateway"))
    assert "NOPERM" not in logs and "WRONGPASS" not in logs
