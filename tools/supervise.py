"""``vledger supervise``: run a cluster configuration's processes on this host under supervisord.

* ``start``: unless its supervisord runs already, first every port the configuration's
  processes bind must be free: one held by another process (another checkout's cluster on
  the same fixed ports, whose Redis this one's nodes would reach) fails the start
  at once, naming each such port, before anything is written or started. Then
  the first-run setup (the key pairs that are missing, the admin account), then
  ``<run>/supervisord.conf`` (config/supervisor.py), then supervisord itself unless one is
  already running there (it then takes the file's changes, as ``supervisorctl update``
  would). Returns once every program is RUNNING and answers: Redis PING, each ingest node
  ``hello`` to the admin key. A deadline bounds the wait; polls, never a fixed sleep.
* ``stop``: supervisord stops every program (SIGTERM to its process group) and exits;
  returns once none of those processes is left.
* ``status``: ``supervisorctl status``'s table; exit 0 only when every program is RUNNING,
  3 while one is not (STARTING included, which supervisorctl itself counts as running);
  3 as well, with a sentence, when no supervisord answers.
* ``conf``: print the file ``start`` writes.

Every step runs again safely: ``start`` on a running cluster says so and checks it.
supervisord starts without ``$REDIS_URL`` (and ``$VLEDGER_PASSPHRASE``) in its environment,
so that every process uses the Redis the configuration names.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import http.client
import os
import socket
import subprocess
import sys
import time
import urllib.request
import xmlrpc.client
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import redis
from supervisor.xmlrpc import SupervisorTransport

from ..broker import redis_functions
from ..broker.accounts import ACCOUNT_COMMANDS, AccountRegistry, Role, bootstrap_admin
from ..broker.client import Client
from ..broker.keys import load_public
from ..broker.redis_keys import migrate
from ..broker.redis_server import connect, find_redis_server
from ..client.session import node_address
from ..config.cluster import ClusterConfig, load_cluster
from ..config.supervisor import (
    EXIT_STORE_DAMAGED,
    FUNCTIONS_PROGRAM,
    REDIS_PROGRAM,
    Program,
    SupervisorLayout,
    cluster_programs,
    local_redis_port,
    supervisord_conf,
)
from ..node.errors import AdminLedgerExistsError, NodeUnavailableError, SupervisorError
from .args import ADMIN_KEY, config_file
from .client_session import load_client_keys
from .node_commands import ensure_cluster_keys

EXIT_OK = 0
EXIT_NOT_RUNNING = 3  # supervisorctl's (LSB) status code for a program that is not running
ADMIN_ACCOUNT = "admin"
POLL_INTERVAL = 0.05  # between two polls of supervisord's process table
ANSWER_TIMEOUT = 0.5  # how long one readiness probe (PING, hello) may wait
LOG_TAIL_LINES = 8
_HIDDEN_ENV = ("REDIS_URL", "VLEDGER_PASSPHRASE")
_GONE_STATES = frozenset({"FATAL", "EXITED", "STOPPED", "UNKNOWN"})


# --- what runs what ------------------------------------------------------------------------------


def gave_up(info: dict[str, Any]) -> bool:
    """Whether supervisord will not start this program again (``info``: its getProcessInfo):
    FATAL, it failed every start; EXITED with EXIT_STORE_DAMAGED, it said not to
    (config/supervisor.py). Any other EXITED is restarted at supervisord's next tick."""
    return info["statename"] == "FATAL" or (
        info["statename"] == "EXITED" and info.get("exitstatus") == EXIT_STORE_DAMAGED
    )


def venv_command(script: str, module: str) -> tuple[str, ...]:
    """The console script beside this Python (the virtualenv's bin/), else ``python -m module``."""
    path = Path(sys.executable).parent / script
    return (str(path),) if path.is_file() else (sys.executable, "-m", module)


def layout_for(config: ClusterConfig, run_dir: Path | None, *, find_redis: bool = True) -> SupervisorLayout:
    """Where the cluster's processes live: by default beside its data directory (run/ for
    config/cluster.toml). The redis-server is looked for when the file is to be written and
    the configuration's Redis is on this host."""
    local_redis = find_redis and local_redis_port(config.redis_url) is not None
    return SupervisorLayout(
        run_dir=(run_dir or config.data_dir.parent).resolve(),
        vledger=venv_command("vledger", "vledger.tools.cli"),
        redis_server=find_redis_server() if local_redis else None,
    )


def redis_client(config: ClusterConfig) -> Any:
    """The admin's client of the configuration's Redis (not ``$REDIS_URL``: the processes
    supervisord starts never see it), one that gives up quickly: a probe asks again rather
    than hang on a server not up yet."""
    access = dataclasses.replace(config.redis_access("admin"), url=config.redis_url)
    return connect(access, timeout=ANSWER_TIMEOUT)


# --- talking to supervisord -----------------------------------------------------------------------


class Supervisor:
    """supervisord's XML-RPC interface on the cluster's unix socket."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._proxy = self._connect()

    def _connect(self) -> Any:
        transport = SupervisorTransport(None, None, f"unix://{self.socket_path}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def running(self) -> bool:
        """Whether a supervisord answers on the socket and is not shutting down."""
        try:
            return bool(self._proxy.supervisor.getState()["statename"] == "RUNNING")
        except (OSError, xmlrpc.client.Error, http.client.HTTPException):
            # The transport keeps its connection, even one that failed: the next try needs a new one.
            self._proxy = self._connect()
            return False

    def pid(self) -> int:
        return int(self._proxy.supervisor.getPID())

    def processes(self) -> dict[str, dict[str, Any]]:
        """Each program's state (``statename``, ``pid``, ...) by name."""
        return {info["name"]: info for info in self._proxy.supervisor.getAllProcessInfo()}

    def start_process(self, name: str) -> None:
        self._proxy.supervisor.startProcess(name, False)

    def stop_process(self, name: str) -> None:
        """Stop program ``name`` and return once supervisord saw it exit (a stopped one is left as it is)."""
        try:
            self._proxy.supervisor.stopProcess(name, True)
        except xmlrpc.client.Fault as e:
            if "NOT_RUNNING" not in e.faultString:
                raise

    def update(self) -> list[str]:
        """Apply the file's changes as ``supervisorctl update`` does; what changed, one line each."""
        [[added, changed, removed]] = self._proxy.supervisor.reloadConfig()
        for name in (*removed, *changed):
            self._proxy.supervisor.stopProcessGroup(name)
            self._proxy.supervisor.removeProcessGroup(name)
        for name in (*changed, *added):
            self._proxy.supervisor.addProcessGroup(name)
        changes = {"added": added, "changed": changed, "removed": removed}
        return [f"{name}: {what}" for what, names in changes.items() for name in names]

    def shutdown(self) -> None:
        self._proxy.supervisor.shutdown()


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a daemon's parent may never reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: kill(0) is all we know
    return stat.rpartition(")")[2].split()[0] != "Z"


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return "\n".join(f"    | {line}" for line in tail) or f"(empty log {path})"


# --- start ------------------------------------------------------------------------------------------


class Starter:
    """One ``start``: first-run setup, supervisord, then a deadline for every program to answer."""

    def __init__(self, config: ClusterConfig, layout: SupervisorLayout, timeout: float) -> None:
        self.config = config
        self.layout = layout
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.supervisor = Supervisor(layout.socket_path)
        self.programs = cluster_programs(config, layout)
        self._width = max(len(p.name) for p in self.programs)

    def run(self) -> None:
        started = time.monotonic()
        print(f"cluster {self.config.name} from {self.config.path}")
        if not self.supervisor.running():  # else its own processes hold the ports
            self._ports_free()
        self._keys()
        self._write_conf()
        self._supervisord()
        names = ", ".join(p.name for p in self.programs)
        print(f"  waiting for {names} to answer (up to {self.timeout:g} s)")
        first = (REDIS_PROGRAM, FUNCTIONS_PROGRAM)  # the admin's bootstrap calls the functions
        self._wait([p for p in self.programs if p.name in first])
        self._admin()
        self._wait([p for p in self.programs if p.name not in first])
        print(f"cluster {self.config.name} is up ({time.monotonic() - started:.1f} s); logs in {self.layout.log_dir}")

    def _ports_free(self) -> None:
        """Raise SupervisorError, before anything is written or started, if a port this cluster's
        processes bind is held already: else supervisord would start them to fail to bind one
        by one, and its nodes would meanwhile reach the Redis that holds its Redis port."""
        busy = held_ports(self.config, self.layout)
        if busy:
            ports = ", ".join(f"{what} {host}:{port}" for what, host, port in busy)
            raise SupervisorError(
                f"port{'s' if len(busy) > 1 else ''} in use by another process: {ports}. Nothing was started. "
                "Is another checkout's cluster running on the same ports? Stop it there (make stop, or "
                "vledger supervise stop --config FILE), or give this configuration other ports."
            )

    def _keys(self) -> None:
        made, kept = ensure_cluster_keys(self.config)
        for entries, what in ((made, "created"), (kept, "kept")):
            if entries:
                print(f"  keys {what}: {', '.join(e['name'] for e in entries)} in {self.config.keys_dir}")

    def _write_conf(self) -> None:
        for directory in (self.layout.run_dir, self.layout.log_dir, self.layout.redis_dir):
            directory.mkdir(parents=True, exist_ok=True)
        text = supervisord_conf(self.config, self.layout)
        path = self.layout.conf_path
        temporary = path.with_name(path.name + ".new")
        temporary.write_text(text)
        temporary.replace(path)

    def _supervisord(self) -> None:
        if self.supervisor.running():
            print(f"  supervisord is already running (pid {self.supervisor.pid()}): the cluster stays as it is")
            for line in self.supervisor.update():
                print(f"  {line} (from the configuration)")
            for name, info in self.supervisor.processes().items():
                if info["statename"] in _GONE_STATES:
                    print(f"  {name} was {info['statename']}: starting it")
                    self.supervisor.start_process(name)
            return
        command = [*venv_command("supervisord", "supervisor.supervisord"), "-c", str(self.layout.conf_path)]
        env = {k: v for k, v in os.environ.items() if k not in _HIDDEN_ENV}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=self.timeout, check=False)
        if done.returncode != 0:
            output = (done.stderr or done.stdout).strip()
            raise SupervisorError(
                f"supervisord did not start (exit {done.returncode}): {output}\n"
                + log_tail(self.layout.log_path("supervisord"))
            )
        self._until(self.supervisor.running, "supervisord to answer on its socket")
        print(f"  supervisord started (pid {self.supervisor.pid()}): {self.layout.conf_path}")

    def _admin(self) -> None:
        """The admin account holds the cluster's admin key: made once, found again every later start."""
        key = load_public(self.config.public_key_path(ADMIN_KEY))
        client = redis_client(self.config)
        try:
            self._until(lambda: _pings(client), f"Redis at {self.config.redis_url} to answer PING")
            # A Redis kept from before the hash tags: its keys move over before the accounts are read.
            moved = migrate(client)
            if moved.moved or moved.kept:
                print(f"  Redis keys of the older layout: {len(moved.moved)} moved, {len(moved.kept)} kept")
            registry = AccountRegistry(client)
            owner = registry.lookup(key)
            account = owner.account if owner is not None and owner.role == Role.ADMIN else ADMIN_ACCOUNT
            try:
                bootstrap_admin(registry, account, key)
            except AdminLedgerExistsError:
                # The admin ledger said otherwise (the key revoked, the account disabled): the
                # cluster starts all the same, and the ledger's word stands.
                print(f"  admin account {account!r} does not hold {self.config.public_key_path(ADMIN_KEY)}")
                print(f"  (the admin ledger says so; another admin can change it: {ACCOUNT_COMMANDS})")
                return
        finally:
            client.close()
        print(f"  admin account {account!r} holds {self.config.public_key_path(ADMIN_KEY)}")

    def _wait(self, programs: list[Program]) -> None:
        """Until each program is RUNNING and answers; a program that gave up fails at once, with its log."""
        probes = {p.name: self._probe(p) for p in programs}
        pending = [p.name for p in programs]
        try:
            while pending:
                table = self.supervisor.processes()
                for name in list(pending):
                    info = table.get(name)
                    if info is None:
                        raise SupervisorError(f"{name}: supervisord does not know it (is another conf running?)")
                    if gave_up(info):
                        raise SupervisorError(
                            f"{name} could not start ({info['statename']}); the end of its log:\n"
                            + log_tail(self.layout.log_path(name))
                        )
                    answer, close = probes[name]
                    if info["statename"] == "RUNNING" and answer():
                        print(f"  {name:<{self._width}}  RUNNING  pid {info['pid']:<7}  {_what(name, self.config)}")
                        pending.remove(name)
                        close()
                if pending and time.monotonic() > self.deadline:
                    states = ", ".join(f"{n} {table[n]['statename']}" for n in pending)
                    raise SupervisorError(
                        f"not answering within {self.timeout:g} s: {states}; the end of {pending[0]}'s log:\n"
                        + log_tail(self.layout.log_path(pending[0]))
                    )
                if pending:
                    time.sleep(POLL_INTERVAL)
        finally:
            for name in pending:
                probes[name][1]()

    def _probe(self, program: Program) -> tuple[Callable[[], bool], Callable[[], None]]:
        """A check that ``program`` answers, and how to close what it opened."""
        if program.name == REDIS_PROGRAM:
            client = redis_client(self.config)
            return (lambda: _pings(client)), client.close
        if program.name == FUNCTIONS_PROGRAM:
            # As the loader, whose password is on this host (it runs here): only its user may
            # read the code Redis holds, and a library of our name with other code is not ours.
            access = dataclasses.replace(self.config.redis_access("functions"), url=self.config.redis_url)
            client = connect(access, timeout=ANSWER_TIMEOUT)
            return (lambda: _has_functions(client)), client.close
        if program.role in ("ingest", "replica", "observer", "verifier"):
            keys = load_client_keys(self.config.secret_key_path(ADMIN_KEY))
            node = Client(node_address(self.config, program.name), keys, timeout=ANSWER_TIMEOUT)
            return (lambda: _greets(node, program.name)), node.close
        if program.url is not None:
            url = program.url
            return (lambda: _healthy(url)), lambda: None
        return (lambda: True), lambda: None

    def _until(self, condition: Callable[[], bool], what: str) -> None:
        while not condition():
            if time.monotonic() > self.deadline:
                raise SupervisorError(f"waited {self.timeout:g} s for {what}")
            time.sleep(POLL_INTERVAL)


_NODE_PORTS = ("port", "pub_port", "http_port", "gateway_port", "rotation_port", "feed_rotation_port")


def held_ports(config: ClusterConfig, layout: SupervisorLayout) -> list[tuple[str, str, int]]:
    """(what, host, port) of each port the cluster's processes bind on this host (its local
    Redis's, each node's at its bind address) that something already listens on."""
    wanted: list[tuple[str, str, int]] = []
    redis_port = local_redis_port(config.redis_url)
    if redis_port is not None and layout.redis_server is not None:
        wanted.append((REDIS_PROGRAM, "127.0.0.1", redis_port))
    for node in sorted(config.nodes.values(), key=lambda n: n.name):
        for key in _NODE_PORTS:
            port = getattr(node, key)
            if port is not None:
                wanted.append((f"{node.name}.{key}", node.bind or node.host, port))
    return [(what, host, port) for what, host, port in wanted if port_held(host, port)]


def port_held(host: str, port: int) -> bool:
    """Whether binding ``host:port`` fails because it is in use. SO_REUSEADDR, as ZeroMQ and
    redis-server bind: a port a stopped cluster left in TIME_WAIT is free. An address that is
    not this host's (a configuration for several hosts) is not ours to check: not held."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError:
        return False
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


def _pings(client: Any) -> bool:
    try:
        return bool(client.ping())
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError):
        return False


def _greets(client: Client, name: str) -> bool:
    try:
        return client.hello().get("node") == name
    except NodeUnavailableError:
        return False


def _has_functions(client: Any) -> bool:
    try:
        return redis_functions.loaded(client)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ResponseError):
        return False


def _healthy(url: str) -> bool:
    try:
        # url is the configuration's http://host:port/ (NodeConfig.gateway_url), never outside text
        with urllib.request.urlopen(url + "healthz", timeout=ANSWER_TIMEOUT) as answer:  # noqa: S310
            return bool(answer.status == 200)
    except OSError:
        return False


def _what(name: str, config: ClusterConfig) -> str:
    if name == REDIS_PROGRAM:
        return f"answers PING at {config.redis_url}"
    if name == FUNCTIONS_PROGRAM:
        return f"loaded the functions library into {config.redis_url}"
    if name not in config.nodes:
        return "answers GET /healthz"
    return f"answers hello at {config.node(name).endpoint}"


# --- stop and status -------------------------------------------------------------------------------


def stop(layout: SupervisorLayout, timeout: float) -> None:
    supervisor = Supervisor(layout.socket_path)
    if not supervisor.running():
        print(f"the cluster is not running (no supervisord answers on {layout.socket_path})")
        return
    table = supervisor.processes()
    pids = {"supervisord": supervisor.pid()} | {name: info["pid"] for name, info in table.items() if info["pid"]}
    supervisor.shutdown()
    deadline = time.monotonic() + timeout
    while left := [name for name, pid in pids.items() if alive(pid)]:
        if time.monotonic() > deadline:
            raise SupervisorError(f"still running {timeout:g} s after shutdown: {_named(left, pids)}")
        time.sleep(POLL_INTERVAL)
    print(f"stopped: {_named(pids, pids)}")


def _named(names: Iterable[str], pids: dict[str, int]) -> str:
    return ", ".join(f"{name} (pid {pids[name]})" for name in names)


def status(layout: SupervisorLayout) -> int:
    """supervisorctl's table; exit 0 only when every program is RUNNING (status_code), and
    when no supervisord answers, a sentence and exit 3."""
    supervisor = Supervisor(layout.socket_path)
    if not supervisor.running():
        print(f"the cluster is not running (no supervisord answers on {layout.socket_path})")
        return EXIT_NOT_RUNNING
    command = [*venv_command("supervisorctl", "supervisor.supervisorctl"), "-c", str(layout.conf_path), "status"]
    returncode = subprocess.run(command, check=False).returncode
    try:
        states = {name: str(info.get("statename")) for name, info in supervisor.processes().items()}
    except (OSError, xmlrpc.client.Error, http.client.HTTPException):
        return EXIT_NOT_RUNNING  # it stopped answering meanwhile
    return status_code(returncode, states)


def status_code(returncode: int, states: dict[str, str]) -> int:
    """``supervisorctl status``'s exit code, made strict: a program still STARTING (or in
    BACKOFF, which supervisorctl also counts as running) is not up yet, so 3 until all are RUNNING."""
    if returncode != 0:
        return returncode
    return EXIT_OK if states and all(state == "RUNNING" for state in states.values()) else EXIT_NOT_RUNNING


# --- the command -----------------------------------------------------------------------------------


def cmd_supervise(args: argparse.Namespace) -> int:
    config = load_cluster(config_file(args.config))
    layout = layout_for(config, args.run_dir, find_redis=args.action in ("start", "conf"))
    match args.action:
        case "start":
            Starter(config, layout, args.timeout).run()
        case "stop":
            stop(layout, args.timeout)
        case "status":
            return status(layout)
        case "conf":
            print(supervisord_conf(config, layout), end="")
    return EXIT_OK
