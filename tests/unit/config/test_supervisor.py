"""The supervisord.conf of a cluster: pure text, read back here by supervisor's own parser."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
from supervisor.datatypes import RestartUnconditionally, RestartWhenExitUnexpected
from supervisor.options import ServerOptions

from vledger.broker.keys import generate
from vledger.config.cluster import ClusterConfig, cluster_from_mapping
from vledger.config.supervisor import (
    EXIT_STORE_DAMAGED,
    MAX_SOCKET_PATH,
    SupervisorLayout,
    cluster_programs,
    local_redis_port,
    socket_path,
    supervisord_conf,
)
from vledger.node.errors import SettingsError

VLEDGER = ("/opt/venv/bin/vledger",)
REDIS = Path("/usr/bin/redis-server")


def cluster(base: Path, redis: str = "redis://127.0.0.1:6390/0", nodes: dict[str, int] | None = None) -> ClusterConfig:
    data: dict[str, Any] = {
        "cluster": {"name": "local", "keys": "keys", "data": "run/data", "redis": redis, "default_home": "ingest-1"},
        "nodes": {
            name: {"role": "ingest", "port": port, "pub_port": port + 1000}
            for name, port in (nodes or {"ingest-1": 7101, "ingest-2": 7102}).items()
        },
    }
    return cluster_from_mapping(data, base / "cluster.toml")


def layout(run_dir: Path, redis: Path | None = REDIS) -> SupervisorLayout:
    return SupervisorLayout(run_dir=run_dir, vledger=VLEDGER, redis_server=redis)


def parsed(conf: str, run_dir: Path) -> ServerOptions:
    """The file as supervisord reads it, every expansion done (it wants the log folder to exist)."""
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    path = run_dir / "supervisord.conf"
    path.write_text(conf)
    options = ServerOptions()
    options.realize(args=["-c", str(path)])
    return options


def programs_of(options: ServerOptions) -> dict[str, Any]:
    return {p.name: p for group in options.process_group_configs for p in group.process_configs}


def test_every_process_is_a_program_redis_first(tmp_path: Path) -> None:
    config = cluster(tmp_path, nodes={"ingest-1": 7101, "ingest-2": 7102, "ingest-3": 7103})
    run_dir = tmp_path / "run"
    programs = programs_of(parsed(supervisord_conf(config, layout(run_dir)), run_dir))
    assert set(programs) == {"redis", "redis-functions", "ingest-1", "ingest-2", "ingest-3"}
    assert programs["redis"].priority < programs["redis-functions"].priority < programs["ingest-1"].priority
    # The loader of the functions library, as its own user: no node's may (broker/redis_functions.py).
    loader = shlex.split(programs["redis-functions"].command)
    assert loader == [*VLEDGER, "--log-level", "info", "redis-functions", "--config", str(config.path), "--keep"]
    assert programs["redis-functions"].autorestart is RestartUnconditionally
    redis = shlex.split(programs["redis"].command)
    assert redis == [str(REDIS), "--port", "6390", "--bind", "127.0.0.1", "--appendonly", "yes",
                     "--dir", str(run_dir / "redis")]  # fmt: skip
    ingest = shlex.split(programs["ingest-2"].command)
    assert ingest == [*VLEDGER, "--log-level", "info", "ingest", "--config", str(config.path), "--node", "ingest-2"]
    for program in programs.values():
        assert program.stopasgroup and program.killasgroup
        assert program.startsecs == 1 and program.stopsignal == 15
        assert program.stdout_logfile == str(run_dir / "logs" / f"{program.name}.log")
        assert program.redirect_stderr
    assert programs["ingest-1"].environment == {"PYTHONUNBUFFERED": "1"}


def test_a_node_whose_store_does_not_open_is_not_started_again(tmp_path: Path) -> None:
    """A node ends with EXIT_STORE_DAMAGED when its store fails its open checks: supervisord
    takes that status as expected and leaves it EXITED (it used to restart it for ever); every
    other exit of a node, 0 included, and any exit of Redis still restarts it."""
    run_dir = tmp_path / "run"
    programs = programs_of(parsed(supervisord_conf(cluster(tmp_path), layout(run_dir)), run_dir))
    for name in ("ingest-1", "ingest-2"):
        assert programs[name].autorestart is RestartWhenExitUnexpected
        assert programs[name].exitcodes == [EXIT_STORE_DAMAGED]
    assert programs["redis"].autorestart is RestartUnconditionally


def test_every_path_is_absolute_and_under_the_run_directory_or_given(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    options = parsed(supervisord_conf(cluster(tmp_path), layout(run_dir)), run_dir)
    paths = [Path(options.logfile), Path(options.pidfile), Path(options.childlogdir)]
    paths += [Path(server["file"]) for server in options.server_configs]
    for program in programs_of(options).values():
        paths += [Path(program.stdout_logfile), Path(program.directory)]
        paths += [Path(word) for word in shlex.split(program.command) if "/" in word]
    for path in paths:
        assert path.is_absolute(), path
        assert path.is_relative_to(run_dir) or path in (REDIS, Path(VLEDGER[0]), tmp_path / "cluster.toml"), path


def test_the_file_holds_no_secret(tmp_path: Path) -> None:
    config = cluster(tmp_path, redis="redis://:hunter2-password@127.0.0.1:6390/0")
    pairs = [generate(config.keys_dir, name) for name in ("ingest-1", "ingest-2", "admin")]
    conf = supervisord_conf(config, layout(tmp_path / "run"))
    assert "hunter2" not in conf and "redis://" not in conf
    for pair in pairs:
        assert pair.secret not in conf
    assert "key_secret" not in conf and str(config.keys_dir) not in conf


def test_a_long_run_directory_gets_a_short_socket_under_tmp(tmp_path: Path) -> None:
    short = Path("/srv/vledger/run")
    assert socket_path(short) == short / "supervisor.sock"
    long = Path("/srv") / ("deep-folder-" * 9) / "run"
    fallback = socket_path(long)
    assert fallback.parent == Path("/tmp") and len(str(fallback)) <= MAX_SOCKET_PATH
    assert fallback == socket_path(long) != socket_path(long.parent / "run2")  # stable, one per run directory
    conf = supervisord_conf(cluster(tmp_path), layout(long))
    assert f"file={fallback}" in conf and f"serverurl=unix://{fallback}" in conf


def test_the_socket_inside_the_run_directory_is_written_relative_to_the_file(tmp_path: Path) -> None:
    conf = supervisord_conf(cluster(tmp_path), layout(tmp_path / "run"))
    assert "file=%(here)s/supervisor.sock" in conf and "serverurl=unix://%(here)s/supervisor.sock" in conf
    assert all(len(line) < 300 for line in conf.splitlines())


def test_a_redis_elsewhere_is_not_run_here(tmp_path: Path) -> None:
    assert local_redis_port("redis://127.0.0.1/0") == 6379
    assert local_redis_port("redis://localhost:6390/2") == 6390
    assert local_redis_port("redis://10.0.0.5:6390/0") is None
    assert local_redis_port("unix:///run/redis.sock") is None
    names = [p.name for p in cluster_programs(cluster(tmp_path, redis="redis://10.0.0.5:6390/0"), layout(tmp_path))]
    assert names == ["ingest-1", "ingest-2"]
    names = [p.name for p in cluster_programs(cluster(tmp_path), layout(tmp_path, redis=None))]
    assert names == ["ingest-1", "ingest-2"]


def test_a_percent_sign_in_a_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="a path with '%'"):
        supervisord_conf(cluster(tmp_path), layout(tmp_path / "100%" / "run"))
    with pytest.raises(SettingsError, match="a path with '%'"):
        supervisord_conf(cluster(tmp_path / "100%"), layout(tmp_path / "run"))


def test_a_node_may_not_take_the_redis_program_name(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="may not be called 'redis'"):
        cluster_programs(cluster(tmp_path, nodes={"ingest-1": 7101, "redis": 7102}), layout(tmp_path))


def test_a_node_with_a_gateway_port_gets_its_gateway_program_last(tmp_path: Path) -> None:
    data: dict[str, Any] = {
        "cluster": {"name": "local", "keys": "keys", "data": "run/data", "default_home": "ingest-1"},
        "nodes": {
            "ingest-1": {"role": "ingest", "port": 7101, "pub_port": 7201},
            "replica-1": {"role": "replica", "port": 7111, "gateway_port": 8080, "http_port": 7311},
        },
    }
    config = cluster_from_mapping(data, tmp_path / "cluster.toml")
    run_dir = tmp_path / "run"
    programs = programs_of(parsed(supervisord_conf(config, layout(run_dir)), run_dir))
    assert set(programs) == {"redis", "redis-functions", "ingest-1", "replica-1", "gateway-replica-1"}
    gateway = shlex.split(programs["gateway-replica-1"].command)
    assert gateway == [*VLEDGER, "--log-level", "info", "gateway", "--config", str(config.path),
                       "--node", "replica-1", "--logs", str(run_dir / "logs")]  # fmt: skip
    assert programs["gateway-replica-1"].priority > max(
        p.priority for n, p in programs.items() if n != "gateway-replica-1"
    )


@pytest.mark.parametrize(
    ("bind", "shown"), [("127.0.0.2", True), ("localhost", True), ("0.0.0.0", False), ("10.0.0.5", False)]
)
def test_the_dashboard_shows_log_tails_only_on_a_gateway_this_host_alone_reaches(
    tmp_path: Path, bind: str, shown: bool
) -> None:
    data: dict[str, Any] = {
        "cluster": {"name": "local", "default_home": "ingest-1"},
        "nodes": {
            "ingest-1": {"role": "ingest", "port": 7101, "pub_port": 7201},
            "replica-1": {"role": "replica", "port": 7111, "gateway_port": 8080, "bind": bind},
        },
    }
    config = cluster_from_mapping(data, tmp_path / "cluster.toml")
    run_dir = tmp_path / "run"
    programs = programs_of(parsed(supervisord_conf(config, layout(run_dir)), run_dir))
    assert ("--logs" in shlex.split(programs["gateway-replica-1"].command)) is shown


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"role": "verifier", "port": 7131, "gateway_port": 8080}, "keeps none"),
        ({"role": "replica", "port": 7111, "http_port": 7101}, "already used"),
        ({"role": "replica", "port": 7111, "gateway_port": 0}, "port number"),
    ],
)
def test_gateway_and_http_ports_are_checked(tmp_path: Path, spec: dict[str, Any], message: str) -> None:
    data: dict[str, Any] = {
        "cluster": {"name": "local", "default_home": "ingest-1"},
        "nodes": {"ingest-1": {"role": "ingest", "port": 7101, "pub_port": 7201}, "other": spec},
    }
    with pytest.raises(SettingsError, match=message):
        cluster_from_mapping(data, tmp_path / "cluster.toml")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"role": "ingest", "port": 7102, "pub_port": 7202, "rotation_port": 7101}, "already used"),
        ({"role": "observer", "port": 7111, "feed_rotation_port": 7112}, "only a node with a pub_port"),
        ({"role": "ingest", "port": 7102, "pub_port": 7202, "feed_rotation_port": 7201}, "already used"),
    ],
)
def test_rotation_ports_are_of_nodes_whose_keys_rotate(tmp_path: Path, spec: dict[str, Any], message: str) -> None:
    data: dict[str, Any] = {
        "cluster": {"name": "local", "default_home": "ingest-1"},
        "nodes": {"ingest-1": {"role": "ingest", "port": 7101, "pub_port": 7201}, "other": spec},
    }
    with pytest.raises(SettingsError, match=message):
        cluster_from_mapping(data, tmp_path / "cluster.toml")
    data["nodes"]["ingest-1"] |= {"rotation_port": 7301, "feed_rotation_port": 7302}
    data["nodes"]["other"] = {"role": "replica", "port": 7111, "rotation_port": 7112}
    node = cluster_from_mapping(data, tmp_path / "c.toml")
    assert node.node("ingest-1").rotation_endpoint == "tcp://127.0.0.1:7301"
    assert node.node("ingest-1").feed_rotation_endpoint == "tcp://127.0.0.1:7302"
    assert node.node("other").rotation_endpoint == "tcp://127.0.0.1:7112"
    assert node.node("other").feed_rotation_endpoint is None
    data["nodes"]["verifier-1"] = {"role": "verifier", "port": 7131, "rotation_port": 7132}  # every role rotates
    assert (
        cluster_from_mapping(data, tmp_path / "c.toml").node("verifier-1").rotation_endpoint == "tcp://127.0.0.1:7132"
    )
