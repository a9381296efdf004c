"""The ``supervisord.conf`` that runs a cluster on one host: pure text from the cluster configuration.

One program per process, in start order:

* ``redis``, when the configuration's Redis URL names this host (127.0.0.1, localhost, ::1):
  the redis-server given in the layout on the URL's port, bound to 127.0.0.1, append-only,
  its data in ``<run>/redis``. A Redis elsewhere is not run here.
* ``redis-functions`` beside it: ``vledger redis-functions --keep``, which loads vledger's
  functions library as the loader user, and again whenever that Redis lost it (no node's user may).
* one program per node of ``[nodes]``, named as the node: ``vledger --log-level info <role>
  --config <config> --node <name>``: ingest nodes, then replicas (the verifier and
  observers join the same way, by their role).
* ``gateway-<node>`` for each node with a ``gateway_port``: ``vledger gateway --node <node>``,
  the public read-only HTTP gateway over that node's store, started last.

Paths inside the run directory are written as ``%(here)s/...`` (supervisor expands it to the
directory of the file itself), every other path absolute. Nothing secret goes in: each node
reads its own keys from the key directory its configuration names.
"""

from __future__ import annotations

import hashlib
import ipaddress
import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..node.errors import SettingsError
from .cluster import ClusterConfig

CONF_NAME = "supervisord.conf"
SOCKET_NAME = "supervisor.sock"
# A unix socket path holds at most 107 bytes, and supervisord binds "<path>.<pid>" first.
MAX_SOCKET_PATH = 96
# Only when the run directory's path is too long. supervisord makes the socket 0700 (chmod
# below), so no other user can talk to it; one could at worst take the name first.
FALLBACK_SOCKET_DIR = Path("/tmp")  # noqa: S108
REDIS_PROGRAM = "redis"
FUNCTIONS_PROGRAM = "redis-functions"  # loads vledger's functions library into that Redis, and again when it lost it
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DEFAULT_REDIS_PORT = 6379
STOP_WAIT_SECONDS = 20
START_RETRIES = 5
# The exit status of a node whose own store does not open (a changed record or tree row,
# PROTOCOL 10.5's store_damaged): expected, so supervisord leaves it EXITED rather than
# starting it again on the same store for ever (a node that fails within startsecs is
# retried START_RETRIES times, then FATAL). sysexits' EX_DATAERR. Any other exit restarts.
EXIT_STORE_DAMAGED = 65
# The exit status of a node started on a store another process holds (its node lock, PROTOCOL
# 10.5's node_running): sysexits' EX_TEMPFAIL. Not final: supervisord retries it START_RETRIES
# times (the other process may be stopping), then leaves it FATAL.
EXIT_NODE_RUNNING = 75
NODE_ROLES = frozenset({"ingest", "replica", "observer", "verifier"})  # the programs that run a node


@dataclass(frozen=True, slots=True)
class SupervisorLayout:
    """Where a cluster's supervised processes live on this host, and what runs them."""

    run_dir: Path  # absolute: this file, the socket (if short enough), logs, Redis data
    vledger: tuple[str, ...]  # the command that runs vledger, e.g. (<venv>/bin/vledger,)
    redis_server: Path | None  # the redis-server binary; None when no Redis runs here

    @property
    def conf_path(self) -> Path:
        return self.run_dir / CONF_NAME

    @property
    def socket_path(self) -> Path:
        return socket_path(self.run_dir)

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def redis_dir(self) -> Path:
        return self.run_dir / "redis"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "supervisord.pid"

    def log_path(self, program: str) -> Path:
        return self.log_dir / f"{program}.log"


@dataclass(frozen=True, slots=True)
class Program:
    """One supervised process: ``role`` is ``redis`` or the node's role."""

    name: str
    role: str
    command: tuple[str, ...]
    priority: int  # supervisord starts lower numbers first
    python: bool  # a vledger process (unbuffered output)
    url: str | None = None  # an HTTP program's address (the gateway's): it answers GET <url>healthz


def socket_path(run_dir: Path) -> Path:
    """``<run>/supervisor.sock`` if that path is short enough, else one under /tmp named after it."""
    inside = run_dir / SOCKET_NAME
    if len(str(inside).encode()) <= MAX_SOCKET_PATH:
        return inside
    digest = hashlib.sha256(str(run_dir).encode()).hexdigest()[:16]
    return FALLBACK_SOCKET_DIR / f"vledger-{digest}.sock"


def local_redis_port(url: str) -> int | None:
    """The port of a Redis URL that names this host; None for a Redis elsewhere (or a unix socket)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or parts.hostname not in LOCAL_HOSTS:
        return None
    try:
        return parts.port or DEFAULT_REDIS_PORT
    except ValueError as e:
        raise SettingsError(f"redis URL {url!r}: {e}") from None


def cluster_programs(cluster: ClusterConfig, layout: SupervisorLayout) -> list[Program]:
    """Every process the cluster runs on this host, Redis first."""
    programs = []
    port = local_redis_port(cluster.redis_url)
    if port is not None and layout.redis_server is not None:
        redis: tuple[str, ...] = (
            str(layout.redis_server),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--appendonly", "yes",
            "--dir", str(layout.redis_dir),
        )  # fmt: skip
        if cluster.redis.passwords_dir is not None:  # access control: the users keygen --cluster wrote
            redis += ("--aclfile", str(cluster.redis.passwords_dir / "redis.acl"))
        programs.append(Program(REDIS_PROGRAM, REDIS_PROGRAM, redis, 100, python=False))
        loader = (*layout.vledger, "--log-level", "info", FUNCTIONS_PROGRAM, "--config", str(cluster.path), "--keep")
        programs.append(Program(FUNCTIONS_PROGRAM, FUNCTIONS_PROGRAM, loader, 150, python=True))
    for node in sorted(cluster.nodes.values(), key=lambda n: n.name):
        if node.name in (REDIS_PROGRAM, FUNCTIONS_PROGRAM):
            raise SettingsError(f"{cluster.path}: a node may not be called {node.name!r} (a supervised program)")
        command = (
            *layout.vledger,
            "--log-level", "info",
            node.role,
            "--config", str(cluster.path),
            "--node", node.name,
        )  # fmt: skip
        # Home nodes first (a replica's start-up catch-up asks them), the verifier last (it reads them all).
        priority = {"ingest": 200, "verifier": 400}.get(node.role, 300)
        programs.append(Program(node.name, node.role, command, priority, python=True))
        if node.gateway_port is not None:
            # The dashboard shows the processes' log tails to whoever reaches the gateway: only
            # where that is this host alone.
            logs = ("--logs", str(layout.log_dir)) if _loopback(node.bind or node.host) else ()
            gateway = (
                *layout.vledger,
                "--log-level", "info",
                "gateway",
                "--config", str(cluster.path),
                "--node", node.name,
                *logs,
            )  # fmt: skip
            program = Program(gateway_program(node.name), "gateway", gateway, 500, python=True, url=node.gateway_url)
            programs.append(program)
    return programs


def _loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is this host only: 127.0.0.0/8, ::1, localhost."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def gateway_program(node: str) -> str:
    """The supervised program that serves ``node``'s store over HTTP."""
    return f"gateway-{node}"


def supervisord_conf(cluster: ClusterConfig, layout: SupervisorLayout) -> str:
    """The whole ``supervisord.conf`` for ``cluster``, to be written at ``layout.conf_path``."""
    _check_no_percent(cluster, layout)
    here = _Here(layout.run_dir)
    socket = here(layout.socket_path)
    lines = [
        f"; Written by `vledger supervise` from {cluster.path}: change that file, not this one.",
        "",
        "[unix_http_server]",
        f"file={socket}",
        "chmod=0700",
        "",
        "[supervisord]",
        f"logfile={here(layout.log_dir / 'supervisord.log')}",
        f"pidfile={here(layout.pid_file)}",
        f"childlogdir={here(layout.log_dir)}",
        f"directory={here(layout.run_dir)}",
        f"identifier=vledger-{cluster.name}",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{socket}",
    ]
    for program in cluster_programs(cluster, layout):
        lines += ["", *_program_lines(program, layout, here)]
    return "\n".join(lines) + "\n"


def _program_lines(program: Program, layout: SupervisorLayout, here: _Here) -> list[str]:
    lines = [
        f"[program:{program.name}]",
        "command=" + " ".join(here.argument(arg) for arg in program.command),
        f"directory={here(layout.run_dir)}",
        f"priority={program.priority}",
        "autostart=true",
        *_restart_lines(program),
        "startsecs=1",
        f"startretries={START_RETRIES}",
        "stopsignal=TERM",
        f"stopwaitsecs={STOP_WAIT_SECONDS}",
        "stopasgroup=true",
        "killasgroup=true",
        "redirect_stderr=true",
        f"stdout_logfile={here(layout.log_path(program.name))}",
        "stdout_logfile_maxbytes=10MB",
        "stdout_logfile_backups=3",
    ]
    if program.python:
        lines.append('environment=PYTHONUNBUFFERED="1"')
    return lines


def _restart_lines(program: Program) -> tuple[str, ...]:
    """A node is started again after any exit but EXIT_STORE_DAMAGED's; Redis and a gateway after any."""
    if program.role in NODE_ROLES:
        return "autorestart=unexpected", f"exitcodes={EXIT_STORE_DAMAGED}"
    return ("autorestart=true",)


def _check_no_percent(cluster: ClusterConfig, layout: SupervisorLayout) -> None:
    """supervisor expands ``%(...)s`` in its values, some of them twice: a path with ``%`` breaks."""
    for path in (layout.run_dir, cluster.path, *(Path(word) for word in layout.vledger), layout.redis_server):
        if path is not None and "%" in str(path):
            raise SettingsError(f"{path}: supervisor cannot take a path with '%' in it; use another folder")


class _Here:
    """Paths for the file: ``%(here)s/...`` inside the run directory, absolute elsewhere."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def __call__(self, path: Path) -> str:
        if path == self.run_dir:
            return "%(here)s"
        if path.is_relative_to(self.run_dir):
            return "%(here)s/" + path.relative_to(self.run_dir).as_posix()
        return str(path)

    def argument(self, arg: str) -> str:
        """One word of a command line, quoted for supervisor's shlex split (which follows expansion)."""
        path = Path(arg)
        return shlex.quote(self(path) if path.is_absolute() else arg)
