"""vledger's Lua steps as one Redis Functions library (broker/functions.lua), and how to call them.

Nodes never send a script: their Redis users may run FCALL / FCALL_RO of these functions alone
(broker/redis_acl.py), so no node password can make Redis run a loop of its own choosing (a
script that wrote cannot be SCRIPT KILLed: Redis stayed BUSY for everyone until a restart,
outsider o18 F2). The library is loaded by the loader user (:data:`LOADER_USER`), whose password
is on the Redis host only: by ``vledger redis-functions`` (supervised beside a local Redis, a
service of its own in docker-compose.yml), which loads it again whenever Redis lost it or holds
other code under its name. That user may load any code (FUNCTION LOAD REPLACE: an ACL cannot
forbid the argument), a function that writes then loops too, which a ``ping`` of ours cannot
tell: the loader compares the code itself (:func:`ensure`, outsider o22 F1).

The library's name and every function's carry :data:`VERSION`, a digest of the file: function
names are global in Redis, so two code versions' libraries coexist while a cluster is upgraded
node by node, each node calling its own.

A call that finds its function missing (Redis restarted without its data, a FUNCTION FLUSH, a
new server) raises :class:`FunctionsMissingError`, a ResponseError: the replication paths take
it as Redis refusing (REDIS_ERRORS) and retry, and nothing is acknowledged that was not
recorded. A client of a Redis without access control (no user name: the tests', a developer's)
loads the library itself, since its user may do anything anyway.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from .redis_acl import LOADER_USER

logger = logging.getLogger(__name__)

LIBRARY_FILE = Path(__file__).with_name("functions.lua")
_SOURCE = LIBRARY_FILE.read_text(encoding="utf-8")
VERSION = hashlib.sha256(_SOURCE.encode()).hexdigest()[:16]
LIBRARY = _SOURCE.replace("@VERSION@", VERSION)
LIBRARY_NAME = f"vledger_{VERSION}"
LIBRARY_PREFIX = "vledger_"  # every version's library (and function) name starts so
# short name -> whether it only reads (flagged no-writes: FCALL_RO)
FUNCTIONS: dict[str, bool] = {
    name: kind == "READ" for name, kind in re.findall(r"^register\('(\w+)', (READ|WRITE),", _SOURCE, re.M)
}
_MISSING = "function not found"  # Redis 7.0's and Valkey 9's answer to an FCALL of no such function
_WARN_EVERY = 30.0  # seconds between two log lines about the library missing, per process
_warned_at = [-_WARN_EVERY]
_warn_lock = threading.Lock()


class FunctionsMissingError(redis.exceptions.ResponseError):
    """Redis does not hold this code's functions library (it lost it, or nobody loaded it yet)."""


def function_name(name: str) -> str:
    """The Redis name of the library's function ``name`` (KeyError for none of :data:`FUNCTIONS`)."""
    FUNCTIONS[name]  # a name that is none fails here, not in Redis
    return f"{LIBRARY_NAME}_{name}"


def command(name: str, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
    """The FCALL (or FCALL_RO, for a function that only reads) of ``name``, as a pipeline sends it."""
    verb = "FCALL_RO" if FUNCTIONS[name] else "FCALL"
    return (verb, function_name(name), len(keys), *keys, *args)


def is_missing(error: BaseException) -> bool:
    """Whether ``error`` is Redis's answer to a call of a function it does not hold."""
    return isinstance(error, redis.exceptions.ResponseError) and _MISSING in str(error).lower()


def missing(error: BaseException) -> FunctionsMissingError:
    """The error a call raises for Redis's "Function not found", logged (at most every 30 s)."""
    message = (
        f"Redis lacks the functions library {LIBRARY_NAME} of this code (restarted without its data, "
        "FUNCTION FLUSH, a new server, or not loaded yet): `vledger redis-functions` loads it as the "
        "loader user; retrying until then"
    )
    with _warn_lock:
        now = time.monotonic()
        if now - _warned_at[0] >= _WARN_EVERY:
            _warned_at[0] = now
            logger.warning("%s (%s)", message, error)
    return FunctionsMissingError(message)


def _listed(client: Any, pattern: str, *, code: bool = False) -> dict[str, str]:
    """FUNCTION LIST (which the loader user may run) of the libraries matching ``pattern``:
    name -> code (with ``code``, WITHCODE) or "" (without)."""
    found: dict[str, str] = {}
    for library in (
        client.execute_command("FUNCTION", "LIST", "LIBRARYNAME", pattern, *(("WITHCODE",) if code else ())) or ()
    ):
        fields = library if isinstance(library, dict) else dict(zip(library[::2], library[1::2], strict=False))
        name, text = (fields.get(k.encode(), fields.get(k)) for k in ("library_name", "library_code"))
        found[_text(name)] = _text(text) if code else ""
    return found


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _holders_of_our_names(client: Any) -> list[str]:
    """The libraries but ours that register a function named as one of this version's."""
    held: list[str] = []
    for library in client.execute_command("FUNCTION", "LIST") or ():
        fields = library if isinstance(library, dict) else dict(zip(library[::2], library[1::2], strict=False))
        name = _text(fields.get(b"library_name", fields.get("library_name")))
        functions = fields.get(b"functions", fields.get("functions")) or ()
        for function in functions:
            info = function if isinstance(function, dict) else dict(zip(function[::2], function[1::2], strict=False))
            if name != LIBRARY_NAME and _text(info.get(b"name", info.get("name"))).startswith(LIBRARY_NAME + "_"):
                held.append(name)
                break
    return held


def libraries(client: Any, pattern: str = LIBRARY_PREFIX + "*") -> list[str]:
    """The names of the libraries Redis holds that match ``pattern`` (FUNCTION LIST, which the
    loader user may run): every vledger version's by default."""
    return sorted(_listed(client, pattern))


def loaded_code(client: Any) -> str | None:
    """The code Redis holds under this version's library name (``FUNCTION LIST LIBRARYNAME
    <name> WITHCODE``, which the loader user may run), None when it holds none by that name."""
    # LIBRARYNAME is a pattern, matched here by name: LIBRARY_NAME has no glob characters, but
    # only the library of exactly this name is ours.
    return _listed(client, LIBRARY_NAME, code=True).get(LIBRARY_NAME)


def loaded(client: Any) -> bool:
    """Whether Redis holds this code's library with exactly this code: a library of its name
    but other code (loaded with the loader's password, outsider o22 F1) is not it, though its
    ``ping`` may answer the same version."""
    return loaded_code(client) == LIBRARY


def present(client: Any) -> bool:
    """Whether Redis holds this code's library, asked as any user that may call its functions
    (FCALL_RO of its ``ping``, no key); other errors (Redis away, NOPERM) are raised."""
    try:
        RedisFunction(client, "ping")()
    except FunctionsMissingError:
        return False
    except redis.exceptions.ResponseError as e:
        if is_missing(e):
            return False
        raise
    return True


def load(client: Any) -> None:
    """Load (again) this code's library: FUNCTION LOAD REPLACE, the same text each time, so two
    loaders at once do no harm. Other versions' libraries are kept (a rolling upgrade)."""
    client.execute_command("FUNCTION", "LOAD", "REPLACE", LIBRARY)
    logger.info("Redis functions library %s loaded", LIBRARY_NAME)


def ensure(client: Any) -> str:
    """Load this code's library unless Redis holds it with exactly this code, as the loader
    user: "kept", "loaded" (Redis held none of its name) or "replaced" (Redis held other code
    under its name, which only the loader's password, or whoever runs the Redis host, can load:
    tampering, logged as an ERROR; outsider o22 F1)."""
    code = loaded_code(client)
    foreign = _holders_of_our_names(client)
    if code == LIBRARY and not foreign:
        return "kept"
    for library in foreign:
        # Function names are global: another library holding ours makes every node call its
        # code, and FUNCTION LOAD of ours fails while it does (review r31 #1).
        logger.error(
            "Redis library %s registers this version's function names (%s*): tampered with by someone"
            " holding the loader's Redis password (%s) or the Redis host; deleted, and ours loaded again;"
            " change the loader's password (README, Redis access control)",
            library,
            LIBRARY_NAME + "_",
            LOADER_USER,
        )
        client.execute_command("FUNCTION", "DELETE", library)
    load(client)
    if code is None:
        return "loaded"
    # Not the code itself: it is someone else's text, of any size.
    digest = hashlib.sha256(code.encode()).hexdigest()[:16]
    logger.error(
        "Redis held other code under the functions library name %s (%d characters, SHA-256 %s...), "
        "not this version's: tampered with by someone holding the loader's Redis password (%s) or the Redis "
        "host (FUNCTION LOAD REPLACE); this code's library is loaded again, but the nodes may "
        "have run that code meanwhile: change the loader's password (README, Redis access control)",
        LIBRARY_NAME,
        len(code),
        digest,
        LOADER_USER,
    )
    return "replaced"


def prune(client: Any) -> list[str]:
    """Delete every ``vledger_*`` library but this version's (FUNCTION DELETE, which the loader
    user may run); returns their names. Function names carry their version, so an older
    library's functions stay callable by every node's user after an upgrade, its bugs with them
    (a fixed ``rewind`` or ``read_open`` bypassed by calling the old one: review r31 #5). Run
    once every node runs this code: a node still on an older version finds its functions gone
    and retries until it is upgraded (``FunctionsMissingError``)."""
    old = [name for name in libraries(client) if name != LIBRARY_NAME]
    for name in old:
        client.execute_command("FUNCTION", "DELETE", name)
        logger.info("Redis functions library %s deleted (not this version's)", name)
    return old


def may_load(client: Any) -> bool:
    """Whether ``client`` signs in as no user: a Redis without access control, where any client may
    load the library (with access control only the loader user may, and a node never tries)."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    return isinstance(kwargs, dict) and kwargs.get("username") is None


class RedisFunction:
    """One function of the library on one client, called as redis-py's Script is:
    ``function(keys=[...], args=[...])``."""

    def __init__(self, client: Any, name: str) -> None:
        function_name(name)  # a name the library lacks fails here, at construction
        self.client = client
        self.name = name

    def __call__(self, *, keys: Sequence[str] = (), args: Sequence[Any] = ()) -> Any:
        try:
            return self.client.execute_command(*command(self.name, keys, args))
        except redis.exceptions.ResponseError as e:
            if not is_missing(e):
                raise
            if not may_load(self.client):
                raise missing(e) from None
            load(self.client)
            return self.client.execute_command(*command(self.name, keys, args))


def reloaded(replies: Sequence[Any], client: Any) -> bool:
    """For a pipeline's replies (raise_on_error False): False when none is Redis's "Function not
    found"; else True after loading the library where ``client`` may (the caller sends again:
    nothing of a missing function ran), and :class:`FunctionsMissingError` where it may not."""
    for reply in replies:
        if isinstance(reply, BaseException) and is_missing(reply):
            if not may_load(client):
                raise missing(reply) from None
            load(client)
            return True
    return False


def keep_loaded(client: Any, stop: threading.Event, interval: float) -> None:
    """Load the library now and whenever Redis lost it or holds other code under its name
    (:func:`ensure`, looked at every ``interval`` seconds), until ``stop`` is set: what
    ``vledger redis-functions --keep`` runs beside the server. A Redis away or refusing is
    logged (once until it answers again) and asked again."""
    failing = ""
    while not stop.is_set():
        try:
            ensure(client)
            if failing:
                logger.info("Redis answers again")
            failing = ""
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ResponseError) as e:
            if str(e) != failing:
                logger.warning("cannot load the functions library %s yet: %s; trying again", LIBRARY_NAME, e)
            failing = str(e)
        stop.wait(interval)
