"""How vledger names its Redis keys, the hash slot of a key, and the move from the old names.

Every key carries a **hash tag** (the part in braces, which alone decides a key's slot in
Redis Cluster), so that every Lua script and every MULTI touches keys of one slot:

* a ledger's keys are tagged with the ledger: ``vledger:{<ledger>}:chain``, ``:held:<node>``,
  ``:checkpoint``, ``:cosig``, ``:tallies:<observer>``, ``:tally:latest:<observer>``;
* the cluster-wide keys with their group: ``vledger:{ledgers}``, ``vledger:{evidence}`` and
  each witness's ``vledger:{evidence}:<node>``, ``vledger:{alerts}`` and
  ``vledger:{alerts}:open`` (the admin's) and each node's ``vledger:{alerts}:log:<node>`` and
  ``vledger:{alerts}:open:<node>`` (per node, so that an ACL lets a node write its own only:
  broker/redis_acl.py; no rename from the shared ones is needed or made), ``vledger:{sweep}:<verifier>``, every
  account key ``vledger:{accounts}:...`` (the registry's scripts touch them together), every
  second-factor key ``vledger:{totp}:...``.

Pub/sub channels (``vledger:held``, ``vledger:cosigned``, ``vledger:accounts``,
``vledger:accounts:applied``) are no keys and keep their names.

Until this layout, keys had no tags (``vledger:chain:<ledger>``, one hash
``vledger:checkpoints`` for every ledger's checkpoint). :func:`migrate` moves a Redis of that
layout over, once (``vledger admin migrate-keys``; ``vledger supervise start`` runs it too):
it never deletes an old key before all it held is in the new one.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from ..config.settings import PROTOCOL_LIMITS
from ..node.errors import VledgerError
from ..node.record import check_ledger_name

log = logging.getLogger(__name__)

NAMESPACE = "vledger"
SLOTS = 16384


# The cluster-wide groups' hash tags. A ledger's keys are tagged with its name, so no ledger may
# be named as one (refused at ledger.create, PROTOCOL 10.10): its keys would share the group's
# slot and match the ACL patterns of the group's keys (broker/redis_acl.py).
GROUP_TAGS = frozenset(("accounts", "alerts", "evidence", "ledgers", "sweep", "totp"))


def is_ledger_name(name: str) -> bool:
    """Whether ``name`` may be a ledger's (PROTOCOL 10.10: a name, and no group's tag): what a
    reader of a list any ingest user may write (``{ledgers}``) keeps."""
    try:
        check_ledger_name(name, PROTOCOL_LIMITS)
    except VledgerError:
        return False
    return name not in GROUP_TAGS


def ledger_key(namespace: str, ledger: str, what: str) -> str:
    """A key of one ledger: ``<ns>:{<ledger>}:<what>`` (ledger names have no braces: NAME_PATTERN)."""
    return f"{namespace}:{{{ledger}}}:{what}"


def glob_escape(text: str) -> str:
    """``text`` as a SCAN pattern matches it: a pattern matches ``*?[]\\`` as a glob does (the
    braces of a tag are plain)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def group_key(namespace: str, group: str, rest: str = "") -> str:
    """A cluster-wide key of ``group``: ``<ns>:{<group>}`` or ``<ns>:{<group>}:<rest>``."""
    return f"{namespace}:{{{group}}}" + (f":{rest}" if rest else "")


def _crc16(data: bytes) -> int:
    # CRC-16/XMODEM (polynomial 0x1021, initial 0), the one Redis Cluster hashes keys with.
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def hash_slot(key: str | bytes) -> int:
    """The Redis Cluster slot of ``key``: CRC16 of its hash tag (the text between the first
    ``{`` and the next ``}``, when not empty), else of the whole key, modulo 16384."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return _crc16(data) % SLOTS


# --- the move from the untagged layout ------------------------------------------------------------

_PER_LEDGER = {"chain": "chain", "held": "held", "cosig": "cosig", "outside": "outside", "tallies": "tallies",
               "tally:latest": "tally:latest"}  # fmt: skip
# ``epochs`` shares the ``{ledgers}`` slot: a promotion's script writes both (PROTOCOL 10.9).
_GROUPS = {"ledgers": ("ledgers", ""), "epochs": ("ledgers", "epochs"), "evidence": ("evidence", ""),
           "alerts": ("alerts", ""), "alerts:open": ("alerts", "open")}  # fmt: skip
# (old prefix, its group, the new name's prefix): ``account:alice`` -> ``{accounts}:account:alice``.
_PREFIXED = (
    ("sweep:", "sweep", ""),
    ("account:", "accounts", "account:"),
    ("accounts:", "accounts", ""),
    ("admin:records", "accounts", "admin:records"),
    ("totp:", "totp", ""),
)
_OLD_CHECKPOINTS = "checkpoints"  # one hash of every ledger's checkpoint; now a key per ledger


def new_name(key: str, namespace: str = NAMESPACE) -> str | None:
    """The tagged name of an old, untagged key of ``namespace``; None for a key that is not
    one (already tagged, another namespace, or the old checkpoints hash, which is split)."""
    prefix = namespace + ":"
    if not key.startswith(prefix) or "{" in key:
        return None
    rest = key[len(prefix) :]
    if rest in _GROUPS:
        return group_key(namespace, *_GROUPS[rest])
    for old, what in _PER_LEDGER.items():
        if rest.startswith(old + ":") and re.fullmatch(r"[a-z0-9][a-z0-9._-]*", rest[len(old) + 1 :]):
            return ledger_key(namespace, rest[len(old) + 1 :], what)
    for old, group, new in _PREFIXED:
        if rest.startswith(old):
            return group_key(namespace, group, new + rest[len(old) :])
    return None


@dataclass
class Migration:
    """What :func:`migrate` did: keys moved, and old keys kept because their new name holds
    something else (an operator looks at those: nothing was deleted)."""

    moved: dict[str, str] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def migrate(client: Any, namespace: str = NAMESPACE) -> Migration:
    """Move every key of the untagged layout to its tagged name, on a Redis reached as the admin.

    A key whose new name is free is renamed (RENAMENX: a stream keeps its entries, ids and
    consumer groups). Where the new name exists already (a process of the new layout wrote
    it first): a hash gets the old fields it lacks, a set the old members, the accounts
    version counter the larger value, and the old key goes only when nothing of it differs;
    a stream or a list whose new key exists is kept under its old name and reported. The old
    ``checkpoints`` hash becomes one ``{<ledger>}:checkpoint`` key per ledger (the newer one
    kept where both exist: the homes write them again at every heartbeat). Running it again
    changes nothing.
    """
    done = Migration()
    for raw in client.scan_iter(match=f"{namespace}:*", count=500):
        old = _text(raw)
        if old == f"{namespace}:{_OLD_CHECKPOINTS}":
            for ledger, note in client.hgetall(old).items():
                client.set(ledger_key(namespace, _text(ledger), "checkpoint"), note, nx=True)
            client.delete(old)
            done.moved[old] = ledger_key(namespace, "*", "checkpoint")
            continue
        new = new_name(old, namespace)
        if new is None:
            continue
        if client.renamenx(old, new) or _merge(client, old, new):
            done.moved[old] = new
        else:
            done.kept[old] = new
    for old, new in done.kept.items():
        log.warning("Redis key %s kept: %s exists already and holds other data", old, new)
    return done


def _merge(client: Any, old: str, new: str) -> bool:
    """Put what ``old`` holds into the existing ``new``; deletes ``old`` and returns True when
    all of it is there, else leaves it and returns False."""
    kind = _text(client.type(old))
    if kind != _text(client.type(new)):
        return False
    if kind == "hash":
        clash = False
        for name, value in client.hgetall(old).items():
            if not client.hsetnx(new, name, value) and client.hget(new, name) != value:
                clash = True
        if clash:
            return False
    elif kind == "set":
        members = client.smembers(old)
        if members:
            client.sadd(new, *members)
    elif kind == "string" and new.endswith(":version"):
        client.set(new, max(int(client.get(old) or 0), int(client.get(new) or 0)))
    else:
        return False
    client.delete(old)
    return True


def wrong_type_message(error: Exception) -> str:
    """A WRONGTYPE reply as a sentence: Redis answered (it is not away), but does not say which key."""
    return (
        f"a Redis key this command reads or writes is of another type (WRONGTYPE): someone with a Redis"
        f" password that may write it changed it; its writer replaces it, or an admin deletes it ({error})"
    )


def refused_login_message(error: Exception) -> str:
    """What a refused sign-in (an AuthenticationError: Redis answered, no user or password it
    knows) says: the user, never the password, and what gives Redis that user (outsider o21 F6:
    "does not answer" sent an operator looking for a server that was up)."""
    user = _login_user(error)
    who = f"the login of {user!r}" if user is not None else "this process's login"
    return (
        f"refused {who} ({error}): Redis has loaded no such user, or another password for it; give the"
        " Redis host the redis.acl `vledger keygen --cluster` writes and restart redis-server there"
        " (the password file under [redis] passwords is the one this host must hold)"
    )


def _login_user(error: BaseException) -> str | None:
    """The user name the connection that was refused signed in as, found on its traceback
    (redis-py's exception names none): the innermost frame of a redis-py connection."""
    user = None
    trace = error.__traceback__
    while trace is not None:
        holder = trace.tb_frame.f_locals.get("self")
        name = getattr(holder, "username", None) if type(holder).__module__.startswith("redis.") else None
        if isinstance(name, str) and name:
            user = name
        trace = trace.tb_next
    return user
