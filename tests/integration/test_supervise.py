"""``vledger supervise`` and ``vledger demo --cluster`` on a real cluster under a real supervisord.

A cluster of its own in a short folder under /tmp (unix socket paths are short): its own
Redis on a free port, started by supervisord as ``make run`` does, two ingest nodes on free
ports. The demo runs at a low difficulty; a node killed with SIGKILL must come back by
itself; ``stop`` must leave no process behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from vledger.broker import redis_functions
from vledger.broker.client import Client
from vledger.broker.redis_server import connect, find_redis_server, free_ports
from vledger.client.session import node_address
from vledger.config.cluster import load_cluster
from vledger.node.errors import NodeUnavailableError, RedisServerError
from vledger.tools.client_session import load_client_keys
from vledger.tools.supervise import Supervisor, alive, layout_for

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "vledger.tools.cli"]
DEADLINE = 30.0


def cli(*args: str | Path, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    return subprocess.run(
        [*CLI, *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def write_config(directory: Path) -> Path:
    path = directory / "cluster.toml"
    ports = free_ports(5)
    path.write_text(
        f"""
[cluster]
name = "supervised"
keys = "keys"
data = "run/data"
redis = "redis://127.0.0.1:{ports[0]}/0"
default_home = "ingest-1"

[redis]
passwords = "keys/redis"

[nodes.ingest-1]
role = "ingest"
port = {ports[1]}
pub_port = {ports[3]}

[nodes.ingest-2]
role = "ingest"
port = {ports[2]}
pub_port = {ports[4]}

[ledgers.election-2026]
home = "ingest-1"

[ledgers.zakat]
home = "ingest-2"

[ledgers.resources]
home = "ingest-2"
"""
    )
    return path


@pytest.fixture
def config(short_tmp: Path) -> Iterator[Path]:
    """A cluster configuration of free ports; whatever the test leaves running is stopped, then killed."""
    try:
        find_redis_server()
    except RedisServerError as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide a redis-server: {e}")
        pytest.skip(str(e))
    path = write_config(short_tmp)
    yield path
    layout = layout_for(load_cluster(path), None, find_redis=False)
    supervisor = Supervisor(layout.socket_path)
    if supervisor.running():
        pids = [supervisor.pid(), *(info["pid"] for info in supervisor.processes().values() if info["pid"])]
        cli("supervise", "--config", path, "stop")
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def logs(config: Path) -> str:
    folder = config.parent / "run" / "logs"
    return "\n".join(
        f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in sorted(folder.glob("*.log"))
    )


def check(done: subprocess.CompletedProcess[str], config: Path, code: int = 0) -> str:
    assert done.returncode == code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}\n{logs(config)}"
    return done.stdout


def greets(config: Path, node: str) -> bool:
    cluster = load_cluster(config)
    keys = load_client_keys(cluster.secret_key_path("admin"))
    with Client(node_address(cluster, node), keys, timeout=0.5) as client:
        try:
            return client.hello().get("node") == node
        except NodeUnavailableError:
            return False


def wait_until(condition: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {DEADLINE} s: {what}"
        time.sleep(0.05)


def tally(output: str) -> dict[str, int]:
    block = output.split("election-2026, recounted from its chain:\n", 1)[1]
    return {m[1]: int(m[2].replace(",", "")) for m in re.finditer(r"^  (\w+) +([\d,]+)$", block, re.MULTILINE)}


def test_start_demo_survive_a_kill_and_stop(config: Path) -> None:
    out = check(cli("supervise", "--config", config, "start"), config)
    assert "supervisord started" in out and "cluster supervised is up" in out
    for name in ("redis", "redis-functions", "ingest-1", "ingest-2"):
        assert re.search(rf"^  {name} +RUNNING", out, re.MULTILINE), out
    assert "keys created: ingest-1, ingest-2, admin" in out
    # Redis runs with access control: a client without the password of a user gets nothing.
    anonymous = redis.Redis.from_url(load_cluster(config).redis_url, socket_timeout=5.0)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.get("vledger:{accounts}:version")
    anonymous.close()
    status = check(cli("supervise", "--config", config, "status"), config)
    assert [line.split()[:2] for line in status.splitlines()] == [
        ["ingest-1", "RUNNING"], ["ingest-2", "RUNNING"], ["redis", "RUNNING"], ["redis-functions", "RUNNING"]
    ]  # fmt: skip
    # The supervised loader loaded the functions library; a node's user may call it, never send a script.
    node = connect(load_cluster(config).redis_access("ingest", "ingest-1"), timeout=5.0)
    assert redis_functions.present(node)
    with pytest.raises(redis.exceptions.NoPermissionError):
        node.execute_command("EVAL", "return 1", 0)
    node.close()

    out = check(cli("demo", "--cluster", config, "--voters", "20", "--difficulty", "4"), config)
    assert "created election-2026, zakat, resources" in out and "All OK." in out
    assert "registrar tried to disburse to mallory-offshore: refused, not_granted." in out
    assert "registrar tried to cast a vote: refused, not_granted." in out  # only the admin moves votes
    counts = tally(out)
    assert set(counts) == {"alice", "bob", "carol"}
    counted = re.search(r"([\d,]+) votes counted of 20 voters registered, (\d+) withdrawn: the same as before", out)
    assert counted is not None, out
    assert sum(counts.values()) == int(counted[1]) == 20 - int(counted[2])
    assert out.count(": OK,") == 4  # each ledger of each node's store verified, the admin ledger too
    # Each ledger's latest checkpoint is shown, and one voter's receipt verified with the genesis and the keys.
    assert (
        len(
            re.findall(
                r"^  (election-2026|zakat|resources) +size [\d,]+ +root [0-9a-f]{16}… +0 cosignatures$",
                out,
                re.MULTILINE,
            )
        )
        == 3
    ), out
    assert re.search(r'^  \{"v":1,"ledger":"election-2026","index":\d+,', out, re.MULTILINE), out
    assert "(vledger receipt verify --genesis G $(vledger receipt keys)): valid: in the tree of size" in out, out

    # Again on a running cluster: it says so, starts what an operator stopped, and nothing fails.
    conf_path = config.parent / "run" / "supervisord.conf"
    subprocess.run([Path(sys.executable).parent / "supervisorctl", "-c", conf_path, "stop", "ingest-2"], check=True)
    status = cli("supervise", "--config", config, "status")
    assert status.returncode == 3 and re.search(r"^ingest-2 +STOPPED", status.stdout, re.MULTILINE), status.stdout
    out = check(cli("supervise", "--config", config, "start"), config)
    assert "supervisord is already running" in out and "ingest-2 was STOPPED: starting it" in out
    assert re.search(r"^  ingest-2 +RUNNING", out, re.MULTILINE), out

    # repair --restart stops the node through supervisord; a repair it refuses (no witness here can
    # make a quorum) changes nothing and starts the node again on its own store.
    refused = cli("repair", "ingest-2", "--config", config, "--restart")
    assert refused.returncode == 1 and "repair_refused" in refused.stderr, refused.stderr
    assert "needs as many witnesses" in refused.stderr, refused.stderr
    wait_until(lambda: greets(config, "ingest-2"), "ingest-2 runs again after the refused repair")
    assert not [p for p in (config.parent / "run" / "data").iterdir() if p.name.startswith("ingest-2.")]

    # A node killed outright comes back by itself, with what it had written.
    layout = layout_for(load_cluster(config), None, find_redis=False)
    supervisor = Supervisor(layout.socket_path)
    killed = supervisor.processes()["ingest-1"]["pid"]
    os.kill(killed, signal.SIGKILL)
    wait_until(
        lambda: (info := supervisor.processes()["ingest-1"])["statename"] == "RUNNING" and info["pid"] != killed,
        "supervisord restarts ingest-1",
    )
    wait_until(lambda: greets(config, "ingest-1"), "ingest-1 answers hello again")

    out = check(cli("demo", "--cluster", config, "--voters", "5", "--difficulty", "4"), config)
    assert "its ledgers were there already" in out and "V-000021 to V-000025" in out and "All OK." in out
    assert "of 25 voters registered" in out

    pids = [supervisor.pid(), *(info["pid"] for info in supervisor.processes().values())]
    out = check(cli("supervise", "--config", config, "stop"), config)
    assert out.startswith("stopped: supervisord")
    assert not [pid for pid in pids if alive(pid)]
    assert not supervisor.running()
    assert check(cli("supervise", "--config", config, "stop"), config).startswith("the cluster is not running")
    status = cli("supervise", "--config", config, "status")
    assert status.returncode == 3 and status.stdout.startswith("the cluster is not running"), status.stdout
