"""Where the cluster's Redis is: one server (``redis://``) or a set run by Sentinel (``sentinel://``).

A ``sentinel://`` URL names the Sentinels, the service (Sentinel's name for the primary and
its replicas) and the database, in the cluster file's ``[cluster] redis`` or ``$REDIS_URL``:

    sentinel://[user[:password]@]host:port[,host:port...]/service[/db]

The user and password are the Redis ACL user of the data nodes (the primary and its
replicas); the Sentinels themselves are asked without credentials. Every client asks a
Sentinel which server is the primary when it connects, and again after that server fails,
so a failover moves every process to the promoted replica without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ..node.errors import SettingsError

SENTINEL_SCHEME = "sentinel"
REDIS_SCHEMES = ("redis", "rediss", "unix", SENTINEL_SCHEME)
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """The primary of ``service`` as the Sentinels at ``sentinels`` (host, port) know it."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def check_redis_url(url: str, where: str = "redis") -> SentinelTarget | None:
    """Check a Redis URL; the Sentinel target of a ``sentinel://`` URL, None for a plain server.

    Raises:
        SettingsError: an unknown scheme, or a ``sentinel://`` URL without a Sentinel, with a
            host or port that cannot be read, without a service name, or with a database that
            is not a number from 0.
    """
    parts = urlsplit(url)
    if parts.scheme not in REDIS_SCHEMES:
        raise SettingsError(
            f"{where}: {parts.scheme or 'no'} scheme in the Redis URL; one of {', '.join(REDIS_SCHEMES)}"
        )
    if parts.scheme != SENTINEL_SCHEME:
        return None
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    sentinels = tuple(_host_port(item, where) for item in hosts.split(",") if item)
    if not sentinels:
        raise SettingsError(f"{where}: a sentinel:// URL names no Sentinel (sentinel://host:port,.../service)")
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise SettingsError(f"{where}: a sentinel:// URL ends in /service or /service/db, not {parts.path!r}")
    db = 0
    if len(path) == 2:
        # isascii: str.isdigit() takes "²", which int() refuses; 9 digits: no int() of 5,000 (a ValueError).
        if not path[1].isascii() or not path[1].isdigit() or len(path[1]) > 9:
            raise SettingsError(f"{where}: the database of a sentinel:// URL is a number, not {path[1]!r}")
        db = int(path[1])
    return SentinelTarget(
        sentinels=sentinels,
        service=path[0],
        db=db,
        username=unquote(username) or None,
        password=unquote(password) if password else None,
    )


def _host_port(item: str, where: str) -> tuple[str, int]:
    host, colon, port = item.rpartition(":")
    if not colon:
        host, port = item, str(DEFAULT_SENTINEL_PORT)
    host = host.strip("[]")  # an IPv6 address is written [::1]:26379
    if not host or not port.isascii() or not port.isdigit() or len(port) > 5 or not 0 < int(port) < 65536:
        raise SettingsError(f"{where}: {item!r} is not a Sentinel host:port")
    return host, int(port)
