"""`vledger supervise status` (make status): its exit code."""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from vledger.broker import redis_functions
from vledger.broker.accounts import ACCOUNT_COMMANDS, _raise
from vledger.broker.redis_server import find_redis_server, free_ports
from vledger.config.cluster import load_cluster
from vledger.config.supervisor import EXIT_STORE_DAMAGED
from vledger.node.errors import AdminLedgerExistsError, RedisServerError
from vledger.tools import cli, supervise
from vledger.tools.supervise import EXIT_NOT_RUNNING, EXIT_OK, status_code


def test_a_process_still_starting_is_not_running_yet() -> None:
    assert status_code(0, {"redis": "RUNNING", "ingest-1": "RUNNING"}) == EXIT_OK
    assert status_code(0, {"redis": "RUNNING", "ingest-1": "STARTING"}) == EXIT_NOT_RUNNING
    assert status_code(0, {"redis": "RUNNING", "ingest-1": "BACKOFF"}) == EXIT_NOT_RUNNING
    assert status_code(0, {}) == EXIT_NOT_RUNNING  # nothing configured is nothing running
    assert status_code(3, {"ingest-1": "STOPPED"}) == 3  # supervisorctl's own answer stands


def test_make_help_names_what_make_run_starts() -> None:
    root = Path(__file__).resolve().parents[3]
    config = load_cluster(root / "config" / "cluster.toml")
    help_text = subprocess.run(["make", "-s", "help"], cwd=root, capture_output=True, text=True, check=True).stdout
    counts = {role: len(config.nodes_of(role)) for role in ("ingest", "replica", "observer", "verifier")}
    said = {
        "ingest": f"{counts['ingest']} ingest nodes",
        "replica": f"{counts['replica']} replicas",
        "observer": f"{counts['observer']} observers",
        "verifier": f"{counts['verifier']} verifier",
    }
    flat = " ".join(help_text.split())
    assert "Redis" in flat and all(text in flat for text in said.values()), (said, flat)


def test_only_fatal_or_the_store_damaged_exit_is_given_up() -> None:
    # A program that ended with any other status sits in EXITED until supervisord's next tick
    # restarts it: `supervise start` must wait for it, not fail.
    assert supervise.gave_up({"statename": "FATAL", "exitstatus": 1})
    assert supervise.gave_up({"statename": "EXITED", "exitstatus": EXIT_STORE_DAMAGED})
    assert not supervise.gave_up({"statename": "EXITED", "exitstatus": 1})
    assert not supervise.gave_up({"statename": "EXITED", "exitstatus": 0})
    assert not supervise.gave_up({"statename": "BACKOFF", "exitstatus": EXIT_STORE_DAMAGED})


def _config(directory: Path, redis_port: int | None, ports: list[int]) -> Path:
    """A cluster file on free ports; its Redis on this host (``redis_port``) or elsewhere."""
    redis = f"redis://127.0.0.1:{redis_port}/0" if redis_port else "redis://redis.invalid:6379/0"
    path = directory / "cluster.toml"
    path.write_text(
        f"""
[cluster]
name = "collide"
keys = "keys"
data = "run/data"
redis = "{redis}"
default_home = "ingest-1"

[nodes.ingest-1]
role = "ingest"
port = {ports[0]}
pub_port = {ports[1]}

[nodes.replica-1]
role = "replica"
port = {ports[2]}
http_port = {ports[3]}
"""
    )
    return path


@pytest.mark.parametrize("held", ["ingest-1.pub_port", "replica-1.http_port", "redis"])
def test_a_start_on_a_port_another_process_holds_fails_at_once_and_starts_nothing(
    held: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """As a second checkout's `make run` on the first one's fixed ports: refused before it
    writes a key, a supervisord.conf or starts anything, naming the port and what to do."""
    if held == "redis" and find_redis_server_or_none() is None:
        pytest.skip("no redis-server here: a configuration's local Redis needs one")
    ports = free_ports(5)
    index = {"redis": 4, "ingest-1.pub_port": 1, "replica-1.http_port": 3}[held]
    with tempfile.TemporaryDirectory(prefix="vl-") as tmp, socket.socket() as holder:  # short: a unix socket's path
        directory = Path(tmp)
        path = _config(directory, ports[4] if held == "redis" else None, ports)
        holder.bind(("127.0.0.1", ports[index]))
        holder.listen()
        code = cli.main(["supervise", "start", "--config", str(path), "--timeout", "5"])
        err = capsys.readouterr().err
        assert code == 1
        assert f"{held} 127.0.0.1:{ports[index]}" in err and "Nothing was started" in err and "make stop" in err
        assert sorted(p.name for p in directory.iterdir()) == ["cluster.toml"]  # no keys, no run/


def test_a_port_is_held_while_something_listens_on_it_and_free_after() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert supervise.port_held("127.0.0.1", port)
    assert not supervise.port_held("127.0.0.1", port)  # closed: free again at once
    assert not supervise.port_held("192.0.2.1", port)  # not an address of this host: not ours to check


def find_redis_server_or_none() -> Path | None:
    try:
        return find_redis_server()
    except RedisServerError:
        return None


def test_the_refusals_of_a_bootstrap_name_commands_that_exist() -> None:
    """Review r10 #7: they named `vledger key add`, which is no command (`vledger user key add` is)."""
    with pytest.raises(AdminLedgerExistsError, match=re.escape(ACCOUNT_COMMANDS)):
        _raise("admin_ledger_exists", "root", "")
    parser = cli.build_parser()
    for named in ACCOUNT_COMMANDS.split(", "):
        words = named.split()
        assert words[0] == "vledger"
        *path, last = words[1:]
        for action in last.split("/"):
            found = parser
            for word in [*path, action]:
                [commands] = [a for a in found._actions if isinstance(a, argparse._SubParsersAction)]
                assert word in commands.choices, f"{named}: no {word!r} in {found.prog}"
                found = commands.choices[word]


def test_start_waits_for_the_library_with_this_code_not_one_of_its_name(redis_client: Any) -> None:
    """o22 F1: a library of this version's name but other code answers ``ping`` as ours does;
    `supervise start` waits (before the nodes start) until the loader put this code back."""
    redis_client.function_flush()
    assert not supervise._has_functions(redis_client)
    redis_client.execute_command("FUNCTION", "LOAD", "REPLACE", redis_functions.LIBRARY + "-- tampered\n")
    assert redis_functions.present(redis_client)  # what the probe asked before
    assert not supervise._has_functions(redis_client)
    redis_functions.load(redis_client)
    assert supervise._has_functions(redis_client)
