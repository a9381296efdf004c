"""docker-compose.yml and the Dockerfile, checked without Docker: the compose file against the CLI and config/.

The compose file is written in the JSON subset of YAML (its header says why), so ``json.loads``
reads it once its leading comment lines are set aside. Each command a container runs is parsed
by the real ``vledger`` argument parser; every node of config/cluster.compose.toml must have
exactly one service, with its ports, volumes and health check; and that configuration must be
the topology of config/cluster.toml with only hosts, Redis and directories changed.
"""

from __future__ import annotations

import argparse
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.redis_acl import (
    ACL_FILE,
    PASSWORD_SUFFIX,
    REPLICATION_USER,
    SENTINEL_DEFAULT_USER,
    SENTINEL_USER,
)
from vledger.config.cluster import ROLES, ClusterConfig, load_cluster
from vledger.config.redis import check_redis_url
from vledger.config.supervisor import EXIT_STORE_DAMAGED
from vledger.tools.cli import build_parser
from vledger.tools.key_bundles import FUNCTIONS, GATEWAY, REDIS, SENTINEL, bundle_names

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_CONFIG = ROOT / "config" / "cluster.compose.toml"
LOCAL_CONFIG = ROOT / "config" / "cluster.toml"
CONFIG_SOURCE = "./config/cluster.compose.toml"  # how the compose file names its configuration
ONE_SHOTS = ("keys", "bootstrap")
OPERATOR = (*ONE_SHOTS, "cli")  # the operator's services: they alone mount every key (the `keys` volume)
BUNDLES = "bundles"  # the volume of `keygen --cluster ... --bundles`: a folder per process
CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")
DEFAULT_REDIS_PORT = 6379
REDIS_SET = ("redis-replica", "sentinel-1", "sentinel-2", "sentinel-3")  # beside `redis`: its replica, the Sentinels


def read_compose(text: str) -> dict[str, Any]:
    """The compose document: comment (and blank) lines at the top, then one JSON object."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#"))
    document = json.loads("".join(lines[start:]))
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return read_compose(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def config() -> ClusterConfig:
    return load_cluster(COMPOSE_CONFIG)


def entrypoint() -> list[str]:
    """The Dockerfile's ENTRYPOINT, in its exec (JSON) form."""
    lines = [line for line in DOCKERFILE.read_text(encoding="utf-8").splitlines() if line.startswith("ENTRYPOINT ")]
    assert len(lines) == 1, "the Dockerfile has one ENTRYPOINT"
    value = json.loads(lines[0].removeprefix("ENTRYPOINT "))
    assert isinstance(value, list)
    return value


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every option of ``parser`` and of its subcommands, spelled out."""
    found: set[str] = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                found |= option_strings(command)
    return found


def vledger_args(argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed by the real ``vledger`` parser; a usage error fails the test, and so does an
    abbreviated option (argparse would take ``--nod`` for ``--node``; a file should not rely on it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"`vledger {' '.join(argv)}` is not a valid vledger command line (exit {e.code})")
    spelled = option_strings(parser)
    assert [word for word in argv if word.startswith("-") and word not in spelled] == [], argv
    return args


def is_vledger(service: dict[str, Any]) -> bool:
    return "build" in service


def node_services(services: dict[str, dict[str, Any]]) -> dict[str, tuple[dict[str, Any], argparse.Namespace]]:
    """Each service that runs a node: its name -> (the service, its parsed command)."""
    found = {}
    for name, service in services.items():
        if is_vledger(service):
            args = vledger_args(service["command"])
            if args.command in ROLES:
                found[name] = (service, args)
    return found


LONG_MOUNT = {"type", "source", "target", "read_only", "volume"}


def mounts(service: dict[str, Any]) -> list[tuple[str, str, bool, str | None]]:
    """(source, target, read-only, subpath) of each volume entry: the short syntax
    SOURCE:TARGET[:ro], or the long one for a named volume's folder (``volume: {subpath}``)."""
    result = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            assert set(entry) <= LONG_MOUNT and entry["type"] == "volume", entry
            assert set(entry.get("volume", {})) <= {"subpath"}, entry
            subpath = entry.get("volume", {}).get("subpath")
            result.append((entry["source"], entry["target"], entry.get("read_only") is True, subpath))
            continue
        assert isinstance(entry, str), f"{entry!r}: the short syntax SOURCE:TARGET[:ro], or the long one"
        source, target, *options = entry.split(":")
        assert options in ([], ["ro"]), entry
        result.append((source, target, options == ["ro"], None))
    return result


def named_volumes(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Named volume -> (target, read-only); bind mounts (a path as source) are left out."""
    found = [(source, target, ro) for source, target, ro, _ in mounts(service) if not source.startswith((".", "/"))]
    assert len({source for source, _, _ in found}) == len(found), "a volume mounted once per service"
    return {source: (target, ro) for source, target, ro in found}


def folder(service: dict[str, Any]) -> tuple[str, str] | None:
    """(its folder, where) of the ``bundles`` volume a service mounts read-only, if it does."""
    found = [(subpath, target) for source, target, ro, subpath in mounts(service) if source == BUNDLES and ro]
    assert all(subpath for subpath, _ in found), "a folder of the bundles volume, never the whole of it"
    return (str(found[0][0]), found[0][1]) if found else None


def config_target(service: dict[str, Any]) -> str:
    """Where the service mounts config/cluster.compose.toml: read-only, once."""
    targets = [(target, ro) for source, target, ro, _ in mounts(service) if source == CONFIG_SOURCE]
    assert len(targets) == 1, f"{service['command']}: mount {CONFIG_SOURCE} once"
    target, ro = targets[0]
    assert ro, f"{CONFIG_SOURCE} is mounted read-only"
    return target


def published(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(host port, container port) of each short-syntax published port."""
    pairs = set()
    for entry in service.get("ports", []):
        host, container = str(entry).removesuffix("/tcp").split(":")
        pairs.add((int(host), int(container)))
    return pairs


# --- the image -------------------------------------------------------------------------------------


def test_the_image_runs_the_vledger_console_script_as_a_non_root_user() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert entrypoint() == ["vledger"]
    assert "vledger" in pyproject["project"]["scripts"]
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    assert {line.split()[1] for line in lines if line.startswith("FROM ")} == {"python:3.11-slim"}
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users, "the image names its user"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert not [line for line in lines if line.startswith(("ADD ", "COPY ")) and "key" in line.lower()]


def test_the_build_context_lets_in_only_the_package() -> None:
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines() if line.strip()[:1] not in "#"
    ]
    assert patterns[0] == "*", "everything is ignored first, the package's files then let in"
    let_in = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    assert not let_in & {"run", ".venv", "tests", "bench", ".git"}


# --- every command is a vledger command ------------------------------------------------------------


def test_every_container_command_is_a_vledger_command_line(services: dict[str, dict[str, Any]]) -> None:
    ours = [name for name, service in services.items() if is_vledger(service)]
    assert set(services) - set(ours) == {"redis", *REDIS_SET}
    images = {(services[name]["image"], json.dumps(services[name]["build"], sort_keys=True)) for name in ours}
    assert len(images) == 1, "every vledger service runs the one image built from this folder"
    assert services[ours[0]]["build"] == {"context": "."}
    for name in ours:
        # A node's entry runs `vledger` too, after the image's ENTRYPOINT (test below).
        if services[name].get("entrypoint") != NODE_ENTRY:
            assert "entrypoint" not in services[name], f"{name}: the image's ENTRYPOINT (vledger) is the command"
        vledger_args(services[name]["command"])


NODE_ENTRY = ["python", "-m", "vledger.tools.container_entry", "vledger"]


def test_a_node_whose_store_is_damaged_is_not_restarted_in_a_loop(services: dict[str, dict[str, Any]]) -> None:
    """A node exits EXIT_STORE_DAMAGED so that nothing starts it again on its store; `restart:
    unless-stopped` would, at once and for ever. Each node runs under the entry that stays up,
    idle, after that status (tests/unit/tools/test_container_entry.py runs it)."""
    nodes = node_services(services)
    assert nodes
    for name, (service, _) in nodes.items():
        assert service["entrypoint"] == NODE_ENTRY, name
        assert service["restart"] == "unless-stopped", f"{name}: any other exit is restarted"
    others = [name for name, service in services.items() if "entrypoint" in service and name not in nodes]
    assert others == [], f"only nodes exit {EXIT_STORE_DAMAGED}: {others}"


def test_every_service_runs_under_docker_s_init(services: dict[str, dict[str, Any]]) -> None:
    """PID 1 of a container must reap the processes orphaned in it and forward signals:
    container_entry (the nodes') waits for its own child only, redis-sentinel's sh wrapper and
    the one-shot services' commands not at all, so each runs under Docker's init."""
    assert [name for name, service in services.items() if service.get("init") is not True] == []


PROBE = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)"


def test_every_health_check_asks_its_own_nodes_readyz(
    services: dict[str, dict[str, Any]], config: ClusterConfig
) -> None:
    for name, (service, _) in node_services(services).items():
        node = config.node(name)
        assert node.http_port is not None, f"{name}: an http_port for its probes"
        test = service["healthcheck"]["test"]
        assert test == ["CMD", "python", "-c", PROBE, f"http://{node.host}:{node.http_port}/readyz"], name


def test_the_gateway_serves_a_replicas_volume_and_answers_healthz(services: dict[str, dict[str, Any]]) -> None:
    gateway = services["gateway-replica-1"]
    args = vledger_args(gateway["command"])
    assert (args.command, args.node, args.host, args.port) == ("gateway", "replica-1", "0.0.0.0", 8080)
    assert published(gateway) == {(8080, 8080)}
    assert "replica-1-data" in named_volumes(gateway)
    assert folder(gateway) == (GATEWAY, "/keys"), "its own folder: public keys and its Redis password only"
    assert gateway["healthcheck"]["test"] == ["CMD", "python", "-c", PROBE, "http://127.0.0.1:8080/healthz"]
    assert gateway["depends_on"] == {"replica-1": {"condition": "service_healthy"}}


# --- the nodes --------------------------------------------------------------------------------------


def test_every_node_has_exactly_one_service_of_its_role(
    services: dict[str, dict[str, Any]], config: ClusterConfig
) -> None:
    runs: dict[str, list[str]] = {}
    for name, (service, args) in node_services(services).items():
        runs.setdefault(args.node, []).append(name)
        node = config.node(args.node)
        assert args.command == node.role, f"{name} runs node {node.name} as {args.command}, not {node.role}"
        assert args.log_level == "info"
        assert str(args.config) == config_target(service)
        assert Path(config_target(service)) == Path("/etc/vledger/cluster.toml")
    assert runs == {name: [name] for name in config.nodes}, "one service per node, named as the node"


def test_each_node_is_reached_by_its_service_name(services: dict[str, dict[str, Any]], config: ClusterConfig) -> None:
    for name, (service, _) in node_services(services).items():
        assert config.node(name).host == name
        assert service["hostname"] == name  # the name resolves to the container itself, where it binds


def test_published_ports_are_the_configured_ports(services: dict[str, dict[str, Any]], config: ClusterConfig) -> None:
    nodes = node_services(services)
    for name, (service, _) in nodes.items():
        node = config.node(name)
        wanted = {node.port} | ({node.pub_port} if node.pub_port is not None else set())
        assert published(service) == {(port, port) for port in wanted}, name
    others = [name for name, service in services.items() if name not in nodes and service.get("ports")]
    assert others == ["gateway-replica-1"], f"only nodes and the gateway publish ports (Redis stays inside): {others}"
    every = [host for service in services.values() for host, _ in published(service)]
    assert len(every) == len(set(every))


def test_each_node_has_its_own_data_volume_and_reads_its_own_keys_only(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], config: ClusterConfig
) -> None:
    data_volumes = []
    for name, (service, _) in node_services(services).items():
        volumes = named_volumes(service)
        data = [volume for volume, (target, _) in volumes.items() if Path(target) == config.data_dir]
        assert len(data) == 1, f"{name}: one volume at {config.data_dir}"
        assert not volumes[data[0]][1], f"{name}: its data volume is writable"
        data_volumes.append(data[0])
        keys = [volume for volume, (target, _) in volumes.items() if Path(target) == config.keys_dir]
        assert keys == [BUNDLES], f"{name}: a folder of the bundles volume at {config.keys_dir}"
        assert folder(service) == (name, str(config.keys_dir)), f"{name}: its own folder, read-only"
        assert service["restart"] == "unless-stopped"
    assert len(set(data_volumes)) == len(data_volumes), "no two nodes share a data volume"
    for volume in data_volumes:
        users = [name for name, service in services.items() if volume in named_volumes(service)]
        # The gateway reads its node's store (SQLite mode=ro: it never writes, WAL needs the folder).
        expected = [volume.removesuffix("-data"), "gateway-replica-1"] if volume == "replica-1-data" else users[:1]
        assert users == expected, f"{volume} is mounted by {users}"


def test_every_named_volume_is_declared_and_used(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    used = {volume for service in services.values() for volume in named_volumes(service)}
    assert used == set(compose["volumes"])


# --- redis, keys, bootstrap ----------------------------------------------------------------------------


def shell_script(service: dict[str, Any]) -> str:
    """The script of a ``["sh", "-c", SCRIPT]`` command, as the shell sees it (Compose's ``$$`` is ``$``)."""
    command = service["command"]
    assert command[:2] == ["sh", "-c"] and len(command) == 3, command
    script: str = command[2]
    return script.replace("$$", "$")


# How the Redis services read the password files of their folder (mounted at RUN): as root,
# before docker-entrypoint.sh hands the server to the image's `redis` user.
RUN = "/run/vledger"
PASSWORD = '"$(cat ' + RUN + "/{user}" + PASSWORD_SUFFIX + ')"'


def test_redis_keeps_its_append_only_file_on_a_volume(
    services: dict[str, dict[str, Any]], config: ClusterConfig
) -> None:
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    script = shell_script(redis)
    server = "exec docker-entrypoint.sh redis-server /tmp/redis.conf "
    assert server in script
    command = script.split(server, 1)[1].split()
    options = dict(zip(command[::2], command[1::2], strict=True))
    assert options["--appendonly"] == "yes"
    directory = options.get("--dir", "/data")
    data = {volume: target for volume, (target, _) in named_volumes(redis).items() if volume != BUNDLES}
    assert list(data.values()) == [directory]
    assert redis["restart"] == "unless-stopped"
    replica = services["redis-replica"]
    replicaof = f" --replicaof redis {options.get('--port', str(DEFAULT_REDIS_PORT))}"
    assert shell_script(replica) == script + replicaof, "the replica keeps its append-only file as the primary does"
    assert set(data).isdisjoint(named_volumes(replica)), "a data volume each"


def test_redis_loads_the_acl_file_and_lets_no_one_in_as_the_default_user(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], config: ClusterConfig
) -> None:
    """The servers take their users from the ACL file of `keygen --cluster` (broker/redis_acl.py:
    the default user has no password) and sign in to each other as the replication user; the
    Sentinels sign in to them as theirs, and answer anyone only where the primary is."""
    assert config.redis.passwords_dir == config.keys_dir / "redis", "[redis] passwords, inside the key directory"
    assert services["redis"]["depends_on"] == {"keys": {"condition": "service_completed_successfully"}}
    for name in ("redis", "redis-replica"):
        service = services[name]
        script = shell_script(service)
        assert folder(service) == (REDIS, RUN)
        assert f"cp {RUN}/{ACL_FILE} /tmp/redis.acl" in script and "aclfile /tmp/redis.acl" in script, name
        assert f"masteruser {REPLICATION_USER}" in script, name
        assert f"masterauth %s\\n' {PASSWORD.format(user=REPLICATION_USER)} > /tmp/redis.conf" in script, name
        assert script.startswith("umask 077 && "), f"{name}: its files in /tmp are private"
        assert "nopass" not in script and "requirepass" not in script, name
        ping = service["healthcheck"]["test"]
        assert ping[0] == "CMD-SHELL" and f"--user {REPLICATION_USER} ping" in ping[1], f"{name}: asked as a user"
    for name in [n for n in REDIS_SET if n.startswith("sentinel-")]:
        service = services[name]
        script = shell_script(service)
        assert folder(service) == (SENTINEL, RUN)
        assert f"\\n{SENTINEL_DEFAULT_USER}\\n" in script, f"{name}: anyone may only ask where the primary is"
        assert f"sentinel auth-user vledger {SENTINEL_USER}" in script
        assert "sentinel auth-pass vledger %s\\n" in script and PASSWORD.format(user=SENTINEL_USER) in script
        assert script.endswith("exec docker-entrypoint.sh redis-server /tmp/sentinel.conf --sentinel"), name
    # Compose reads ${NAME} and $NAME as its own variables: every $ for the shell is written $$.
    document = json.dumps(compose)
    assert "$$(cat" in document and re.findall(r"\$", document.replace("$$", "")) == []


def test_no_process_but_the_operator_s_sees_another_s_secrets(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], config: ClusterConfig
) -> None:
    """Every key is in the `keys` volume, which only the operator's services mount (the one-shot
    `keys` and `bootstrap`, and `cli`, run by hand); each other service gets its own folder of
    the `bundles` volume (tools/key_bundles.py says what each holds), read-only."""
    keys = [name for name, service in services.items() if "keys" in named_volumes(service)]
    assert keys == list(OPERATOR)
    expected = {
        **{name: name for name in config.nodes},
        "gateway-replica-1": GATEWAY,
        "redis": REDIS,
        "redis-replica": REDIS,
        **{name: SENTINEL for name in REDIS_SET if name.startswith("sentinel-")},
        "redis-functions": FUNCTIONS,
    }
    found = {name: f[0] for name, service in services.items() if (f := folder(service)) is not None}
    assert found == expected
    assert set(found.values()) == set(bundle_names(config)), "every folder keygen writes is somebody's"
    assert [name for name in services if BUNDLES in named_volumes(services[name]) and name not in found] == ["keys"]


def test_every_node_finds_the_primary_through_three_sentinels(
    services: dict[str, dict[str, Any]], config: ClusterConfig
) -> None:
    target = check_redis_url(config.redis_url)
    assert target is not None, "the compose cluster's Redis is a sentinel:// URL"
    sentinels = [name for name in REDIS_SET if name.startswith("sentinel-")]
    assert [host for host, _ in target.sentinels] == sentinels
    for name in sentinels:
        script = services[name]["command"][-1]
        assert f"sentinel monitor {target.service} redis {DEFAULT_REDIS_PORT} 2" in script, name
        assert "resolve-hostnames yes" in script, f"{name}: the primary and replica are named, not numbered"
        assert services[name]["restart"] == "unless-stopped"


def test_the_keys_service_makes_the_cluster_keys_and_is_the_only_writer(
    services: dict[str, dict[str, Any]], config: ClusterConfig
) -> None:
    keys = services["keys"]
    args = vledger_args(keys["command"])
    assert args.command == "keygen"
    assert str(args.cluster) == config_target(keys)
    assert named_volumes(keys) == {"keys": (str(config.keys_dir), False), BUNDLES: (str(args.bundles), False)}
    for volume in ("keys", BUNDLES):
        writers = [name for name, service in services.items() if not named_volumes(service).get(volume, ("", True))[1]]
        assert writers == ["keys"], volume


def test_bootstrap_binds_the_admin_public_key_once_redis_and_keys_are_ready(
    services: dict[str, dict[str, Any]], config: ClusterConfig
) -> None:
    bootstrap = services["bootstrap"]
    args = vledger_args(bootstrap["command"])
    assert (args.command, args.admin_action) == ("admin", "bootstrap")
    assert str(args.config) == config_target(bootstrap)
    assert args.key == config.public_key_path("admin")
    assert args.once  # every `up` runs it: past the first, the admin ledger decides who the admins are
    assert bootstrap["depends_on"] == {
        **{name: {"condition": "service_healthy"} for name in REDIS_SET if name.startswith("sentinel-")},
        "redis-functions": {"condition": "service_healthy"},  # its FCALLs need the library loaded
        "keys": {"condition": "service_completed_successfully"},
    }


def test_the_functions_loader_keeps_the_library_loaded_with_its_own_password_alone(
    services: dict[str, dict[str, Any]], config: ClusterConfig
) -> None:
    loader = services["redis-functions"]
    args = vledger_args(loader["command"])
    assert (args.command, args.keep) == ("redis-functions", True)
    assert str(args.config) == config_target(loader)
    assert vledger_args(loader["healthcheck"]["test"][2:]).command == "redis-functions"  # loaded, or loads it
    assert loader["restart"] == "unless-stopped"


def test_start_order_follows_the_supervised_one(services: dict[str, dict[str, Any]], config: ClusterConfig) -> None:
    """Nodes after bootstrap; replicas and observers after the nodes they follow; the verifier last."""
    for name in ONE_SHOTS:
        assert services[name]["restart"] == "no", f"{name} runs once per `up`"
    for name, service in services.items():
        for other, dependency in service.get("depends_on", {}).items():
            assert other in services, f"{name} depends on {other}, which is no service"
            condition = dependency["condition"]
            assert condition in CONDITIONS
            if condition == "service_healthy":
                assert "healthcheck" in services[other], f"{other} has no health check for {name} to wait for"
            if condition == "service_completed_successfully":
                assert other in ONE_SHOTS
    for name, (service, _) in node_services(services).items():
        node = config.node(name)
        depends = service["depends_on"]
        assert depends["bootstrap"] == {"condition": "service_completed_successfully"}
        healthy = {other for other, d in depends.items() if d["condition"] == "service_healthy"}
        if node.role == "verifier":
            assert healthy == set(config.nodes) - {name}
        else:
            assert healthy == set(node.follow)


# --- the same cluster as config/cluster.toml -------------------------------------------------------------


def test_the_compose_cluster_is_the_local_cluster(config: ClusterConfig) -> None:
    local = load_cluster(LOCAL_CONFIG)

    def topology(cluster: ClusterConfig) -> dict[str, Any]:
        return {
            name: (node.role, node.port, node.pub_port, node.follow) for name, node in sorted(cluster.nodes.items())
        }

    assert topology(config) == topology(local)
    assert (config.homes, config.default_home, config.standbys) == (local.homes, local.default_home, local.standbys)
    assert all(config.node(n).role == "ingest" for n in config.standbys.values())  # a standby is an ingest service
    assert config.settings == local.settings
    assert config.ingest == local.ingest
    assert config.replication == local.replication
    assert config.verifier == local.verifier
    assert config.observers == local.observers
    assert (config.keys_dir, config.data_dir) == (Path("/keys"), Path("/data"))


def test_read_compose_takes_only_a_comment_header() -> None:
    assert read_compose('# a comment\n\n{"services": {}}\n') == {"services": {}}
    with pytest.raises(json.JSONDecodeError):
        read_compose("# a comment\nservices:\n  redis: {}\n# trailing\n")
