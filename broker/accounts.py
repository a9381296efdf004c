"""Accounts in Redis, shared by every ingest node, and each node's live copy of them.

Layout, for namespace ``ns`` (``vledger`` by default), every key with the hash tag
``{accounts}``, since the functions below touch them together (one Redis Cluster slot;
broker/redis_keys.py):

* ``ns:{accounts}:account:<name>``: a hash per account: ``role`` (admin, writer, observer, replica)
  and ``enabled`` (``1`` or ``0``);
* ``ns:{accounts}:names``: the set of account names;
* ``ns:{accounts}:keys``: a hash from Z85 public key to account name (one key, one account);
* ``ns:{accounts}:version``: a counter that every change bumps;
* ``ns:{accounts}:applied:<node>``: a hash per node, ``version`` (the accounts version it
  applied), ``admin`` (how many of the admin ledger's records it enforced then) and ``seen``
  (when it last said so, milliseconds by the Redis clock; ``0`` once it stopped cleanly, when
  ``stopped`` says), only that node's Redis user writes it
  (broker/redis_acl.py), so no node can say another applied a change it has not (a revoke
  would then look enforced where it is not), nor that a live one stopped; the admin's user
  (which writes every key) can: a key of another type there is replaced by the node's hash at its
  next report, and read meanwhile as a live node that applied nothing;
* ``ns:{accounts}:admin:records``: the admin ledger's record bytes, index = height (docs/PROTOCOL.md
  16.4): the accounts above are a cache of it, and nodes read their grants from it.

Every change is one call of a Redis function (broker/functions.lua): it checks, writes, bumps
the version and PUBLISHes the new version on channel ``ns:accounts``, all atomically. An
:class:`AccountCache` on each node reloads on that message, polls the version as a safety net
(a message can be lost while a connection is down), hands the new allow-list to its callback,
then records the version it applied, so that :meth:`AccountRegistry.wait_applied` can tell an
admin when every node enforces a change.

Errors here are precise (no_such_account, account_exists, ...). A server must map them to
what the asker may know: a non-admin must not learn whether an account exists.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, NamedTuple, NoReturn, Self

import redis

from ..config.settings import PROTOCOL_LIMITS
from ..node.errors import (
    AccountError,
    AccountExistsError,
    AccountNameError,
    AdminCacheConflictError,
    AdminLedgerExistsError,
    ApplyTimeoutError,
    KeyInUseError,
    NoSuchAccountError,
    NoSuchKeyError,
    RoleError,
    VledgerError,
)
from ..node.record import ACCOUNT_PATTERN, NAME_PATTERN, Record
from ..node.rules.admin import Grants
from ..node.rules.engine import RulesEngine
from .admin_copy import NO_ADMIN_LEDGER, AdminSource
from .keys import check_public_key, fingerprint
from .redis_functions import FunctionsMissingError, RedisFunction
from .redis_keys import group_key

logger = logging.getLogger(__name__)

ACCOUNTS_TAG = "accounts"
_SUBSCRIBE_TIMEOUT = 5.0
_LISTEN_SLICE = 0.25  # how long a background wait lasts before it looks at its stop flag
_RETRY_PAUSE = 1.0
# How many failed loads in a row make a node's accounts "not current" (its /readyz fails and it
# raises accounts_failing, PROTOCOL 10.5): one is a blip, retried; three, with the pauses
# between them, a fault that retrying does not mend.
FAILING_POLLS = 3
_BEHIND_POLL = 0.05  # how soon a node looks again for the checkpoint of an admin record it cannot prove yet
# How long it looks that often: the home signs right after its commit. Past it, Redis's copy holds
# what no checkpoint proves (a home down since, or records written there by hand): logged, and
# looked at again at each poll only, so a list made longer by hand costs the nodes nothing.
_BEHIND_FAST_FOR = 10.0
# How long a key an admin record just stopped letting in (removed, revoked, disabled) may stay in
# Redis's entries unreported: the admin home writes the record, then Redis's entries, and a node
# that proved the record's checkpoint in between raised unbacked_account for an honest `user
# remove` (outsider o13 F7: seven nodes did). Past it, an entry still there is reported.
_ENDED_GRACE = _BEHIND_FAST_FOR
# How often at most a key this node does not know makes it look whether the accounts moved
# (AccountCache.catch_up: two GETs): a flood of unknown keys costs Redis no more than that.
_CATCH_UP_INTERVAL = 0.1
# How long the authenticator's thread waits for that look, done on another thread: a Redis that
# stopped answering (its host cut off) held it 2 s per stranger's key, and every handshake,
# known keys' too, queued behind (r13 #5).
_CATCH_UP_WAIT = 0.1
# How long after a failed look no key makes it look again (Redis is likely still away).
_CATCH_UP_BACK_OFF = 2.0
# How long stop() waits for the thread. A call of its to a Redis that stopped answering (its host
# cut off) waits on the client's socket timeout, for ever on a client made without one: the
# process's stop waited with it, past supervisor's stop time. The thread is a daemon: left behind.
_STOP_WAIT = 3.0


def heartbeat_window(poll_seconds: float) -> float:
    """Seconds of silence after which a node whose accounts cache polls every ``poll_seconds``
    counts as gone: several missed heartbeats, and never less than 30 s (a loaded host's
    thread may miss one)."""
    return max(30.0, 6 * poll_seconds)


class Role(enum.StrEnum):
    ADMIN = "admin"
    WRITER = "writer"
    OBSERVER = "observer"
    REPLICA = "replica"


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: Role
    enabled: bool
    keys: tuple[str, ...]  # Z85 public keys, sorted

    @property
    def fingerprints(self) -> tuple[str, ...]:
        return tuple(fingerprint(k) for k in self.keys)


class KeyOwner(NamedTuple):
    account: str
    role: Role
    enabled: bool


@dataclass(frozen=True, slots=True)
class AccountsSnapshot:
    """All accounts at one version, read atomically."""

    version: int
    accounts: Mapping[str, Account]
    owners: Mapping[str, str]  # Z85 public key -> account name
    # Redis's entries left out as malformed (a key that is none, a name or role that is not valid),
    # each named for a log line and an alert: written by hand, never by a function (see snapshot_from_reply).
    malformed: tuple[str, ...] = ()
    # Redis's keys of another type, read as empty (their names): this snapshot lacks what they held.
    spoiled: tuple[str, ...] = ()

    @classmethod
    def empty(cls) -> AccountsSnapshot:
        return cls(0, MappingProxyType({}), MappingProxyType({}))

    def lookup(self, public_key: str) -> KeyOwner | None:
        name = self.owners.get(public_key)
        account = self.accounts.get(name) if name is not None else None
        return None if account is None else KeyOwner(account.name, account.role, account.enabled)

    def allowed_keys(self) -> frozenset[str]:
        """The keys that may connect: those of enabled accounts."""
        return frozenset(k for k, name in self.owners.items() if self.accounts[name].enabled)


def check_account_name(name: str) -> str:
    if (
        not isinstance(name, str)
        or not 0 < len(name) <= PROTOCOL_LIMITS.max_name_length
        or ACCOUNT_PATTERN.fullmatch(name) is None
    ):
        raise AccountNameError(
            f"account name {name!r} is not valid ({ACCOUNT_PATTERN.pattern}, at most {PROTOCOL_LIMITS.max_name_length})"
        )
    return name


def check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise RoleError(f"role {role!r} is not one of {', '.join(r.value for r in Role)}") from None


def _check_node(node: str) -> str:
    if not isinstance(node, str) or NAME_PATTERN.fullmatch(node) is None:
        raise AccountError(f"node name {node!r} is not valid ({NAME_PATTERN.pattern})")
    return node


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def admin_record_digest(data: bytes) -> str:
    """One admin record's part of :func:`admin_records_digest` (SHA-1, hex)."""
    # SHA-1: the one hash Redis's Lua offers; what matters is a second preimage of the home's
    # own records, which no one can make (a collision, two lists made alike by their author, is no harm).
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def admin_records_digest(record_digests: Sequence[str]) -> str:
    """What ``_ADMIN_RECORDS_DIGEST`` answers for a list of the records of ``record_digests``
    (each an :func:`admin_record_digest`): entry bounds count, not only the bytes."""
    return hashlib.sha1("".join(record_digests).encode("ascii"), usedforsecurity=False).hexdigest()


# --- every change is one Redis function (broker/functions.lua: its accounts' part) ----------------


def snapshot_from_reply(reply: Any) -> AccountsSnapshot:
    """The snapshot function's answer as an AccountsSnapshot (kept pure for the unit tests).

    Every value is wire input: anyone whose Redis user writes ``{accounts}`` can put anything
    there, and one key that was none ended every node's accounts thread (outsider o8 J6), so
    later revocations were never applied. A malformed entry is left out and named in
    ``malformed``; the rest loads. A version that is no count loads as :data:`NO_VERSION`, and
    so does any when a key was of another type (named in ``spoiled`` and ``malformed``): the
    snapshot lacks what it held, so the node loads again at each poll until the home repaired it."""
    version_text, rows, flat_owners, *rest = reply
    spoiled = tuple(sorted(_wire_text(key) for key in rest[0])) if rest else ()
    malformed: list[str] = []
    owners: dict[str, str] = {}
    for i in range(0, len(flat_owners), 2):
        key, name = _wire_text(flat_owners[i]), _wire_text(flat_owners[i + 1])
        if not _is_public_key(key):
            malformed.append(f"{name[:64]!r} (not a public key: {key[:48]!r})")
        else:
            owners[key] = name
    keys_of: dict[str, list[str]] = {}
    for key, name in owners.items():
        keys_of.setdefault(name, []).append(key)
    accounts = {}
    for raw_name, raw_role, raw_enabled in rows:
        name = _wire_text(raw_name)
        if raw_role is None:  # a name without its hash: written by hand, never by a function
            _warn_once(f"account {name[:64]!r} has no role in Redis; ignored")
            continue
        role = _wire_text(raw_role)
        if not _is_account_name(name) or role not in _ROLES:
            malformed.append(f"{name[:64]!r} (not a valid account: role {role[:16]!r})")
            continue
        accounts[name] = Account(name, Role(role), _wire_text(raw_enabled) == "1", tuple(sorted(keys_of.get(name, ()))))
    owners = {key: name for key, name in owners.items() if name in accounts}
    malformed += [f"{key[:96]!r} (of another type)" for key in spoiled]
    return AccountsSnapshot(
        NO_VERSION if spoiled else parse_version(version_text),
        MappingProxyType(accounts),
        MappingProxyType(owners),
        tuple(sorted(malformed)),
        spoiled,
    )


NOT_A_LIST = -1  # what admin_size answers for a cache key of another type (written by hand)
# A node's applied key or field that cannot be read (of another type, no number): not a report.
UNREADABLE = object()
NO_VERSION = -1  # what a version that is no count reads as: never a node's, so every node reloads
_MAX_VERSION_DIGITS = 15  # the Lua functions' bound too: exact in a double, far from INCR's overflow
_warned: set[str] = set()


def parse_version(value: Any) -> int:
    """The accounts version Redis holds (missing: 0); :data:`NO_VERSION` for one that is no
    count, which only a hand can write: it reads as "changed", and the admin home resets it."""
    text = "0" if value is None else _wire_text(value)
    # No leading zero either: INCR refuses "007", so every change after its record failed.
    if not text.isascii() or not text.isdigit() or len(text) > _MAX_VERSION_DIGITS or text[:1] == "0" != text:
        return NO_VERSION
    return int(text)


def _unless_wrong_type(read: Callable[[], int], otherwise: int) -> int:
    """``read()``, or ``otherwise`` when its key is of another type (set so by hand)."""
    try:
        return read()
    except redis.exceptions.ResponseError as e:
        if "WRONGTYPE" not in str(e):
            raise
        return otherwise


def _warn_once(message: str) -> None:
    """Log ``message`` once per process: each load meets the same entry again (every poll)."""
    if message not in _warned and len(_warned) < 4096:
        _warned.add(message)
        logger.warning("%s", message)


_ROLES = frozenset(r.value for r in Role)


def _wire_text(value: Any) -> str:
    """A value read from Redis as text, bytes that are no UTF-8 included (shown replaced)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _is_public_key(text: str) -> bool:
    return _passes(check_public_key, text)


def _is_account_name(name: str) -> bool:
    return _passes(check_account_name, name)


def _passes(check: Callable[[str], str], text: str) -> bool:
    """Whether ``check`` takes ``text`` (each raises a VledgerError for one it does not)."""
    try:
        check(text)
    except VledgerError:
        return False
    return True


def ledger_snapshot(version: int, stated: Mapping[str, Mapping[str, Any]]) -> AccountsSnapshot:
    """The accounts an admin ledger states (RulesEngine.admin_accounts: name -> role, enabled,
    keys), at accounts ``version``: what a node enforces once the admin ledger exists. An
    account of no known role grants nothing; a key two accounts state goes to neither (one key,
    one account: the ledger's home never writes that, so it is nobody's)."""
    accounts: dict[str, Account] = {}
    seen: dict[str, str] = {}
    shared: set[str] = set()
    for name, state in stated.items():
        try:
            role = Role(state["role"])
        except ValueError:
            if state["role"]:
                logger.warning(
                    "account %r has the role %r on the admin ledger, which is none: ignored", name, state["role"]
                )
            continue
        keys = tuple(sorted(set(state["keys"])))
        accounts[name] = Account(name, role, state["enabled"] is True, keys)
        for key in keys:
            if seen.setdefault(key, name) != name:
                shared.add(key)
    owners = {key: name for key, name in seen.items() if key not in shared}
    return AccountsSnapshot(version, MappingProxyType(accounts), MappingProxyType(owners))


def unbacked(cached: AccountsSnapshot, enforced: AccountsSnapshot, settling: frozenset[str] = frozenset()) -> list[str]:
    """The keys Redis's accounts let in that the admin ledger does not, or with another account
    or role, each with what the node ``enforced`` does with it (``account (key fingerprint):
    refused`` or ``: let in as account (role)``, sorted), then Redis's malformed entries
    (``: malformed, ignored``): entries written into Redis by hand, which grant nothing but say
    that someone who may write Redis tried. An alert said "refused" of a key its node let in
    (outsider o8 J2): the verdict is the enforced accounts', per key. Keys of ``settling`` (a
    record just ended them; Redis's change follows) are left out."""
    found = []
    for key in cached.allowed_keys() - settling:
        owner, stated = cached.lookup(key), enforced.lookup(key)
        if owner is not None and (stated is None or not stated.enabled or stated[:2] != owner[:2]):
            did = "refused" if stated is None or not stated.enabled else f"let in as {stated.account} ({stated.role})"
            found.append(f"{owner.account} ({fingerprint(key)}): {did}")
    return sorted(found) + [f"{entry}: malformed, ignored" for entry in cached.malformed]


class AccountRegistry:
    """The accounts in Redis: every change atomic, versioned and announced."""

    def __init__(self, client: Any, namespace: str = "vledger") -> None:
        self.client = client
        self.namespace = namespace
        self.channel = f"{namespace}:accounts"
        self.applied_channel = f"{namespace}:accounts:applied"
        # The snapshot and lookup functions build an account's key from this prefix: with the
        # tag in it, those keys are in the slot of the keys the functions are given.
        self._account_prefix = group_key(namespace, ACCOUNTS_TAG, "account:")
        self._names = group_key(namespace, ACCOUNTS_TAG, "names")
        self._owners = group_key(namespace, ACCOUNTS_TAG, "keys")
        self._version = group_key(namespace, ACCOUNTS_TAG, "version")
        self._applied_prefix = group_key(namespace, ACCOUNTS_TAG, "applied:")
        self.admin_records_key = group_key(namespace, ACCOUNTS_TAG, "admin:records")
        # Each a function of broker/functions.lua; the reads (snapshot, admin_records_digest, lookup)
        # are flagged no-writes and sent with FCALL_RO: a node whose user only reads the accounts
        # declares their keys read (broker/redis_acl.py).
        self._add_account = RedisFunction(client, "add_account")
        self._remove_account = RedisFunction(client, "remove_account")
        self._set_field = RedisFunction(client, "set_field")
        self._add_key = RedisFunction(client, "add_key")
        self._revoke_key = RedisFunction(client, "revoke_key")
        self._bootstrap_admin = RedisFunction(client, "bootstrap_admin")
        self._push_admin_records = RedisFunction(client, "push_admin_records")
        self._rewrite_admin_records = RedisFunction(client, "rewrite_admin_records")
        self._repair_version = RedisFunction(client, "repair_version")
        self._repair_account_types = RedisFunction(client, "repair_account_types")
        self._snapshot = RedisFunction(client, "snapshot")
        self._admin_records_digest = RedisFunction(client, "admin_records_digest")
        self._lookup = RedisFunction(client, "lookup")
        self._record_applied = RedisFunction(client, "record_applied")
        self._record_stopped = RedisFunction(client, "record_stopped")
        self._record_alive = RedisFunction(client, "record_alive")

    def _account(self, name: str) -> str:
        return self._account_prefix + name

    def _change(self, script: Any, keys: list[str], args: list[str], *, account: str = "", key: str = "") -> int:
        status, version = script(keys=[self._version, *keys], args=[self.channel, *args])
        status = _text(status)
        if status in ("ok", "unchanged"):
            if status == "ok":
                logger.info("accounts version %d", version)
            return int(version)
        _raise(status, account, key)

    # --- changes -----------------------------------------------------------------------------

    def add_account(self, name: str, role: str) -> int:
        """Create an enabled account with no keys; the new version."""
        check_account_name(name)
        return self._change(
            self._add_account, [self._names, self._account(name)], [name, check_role(role).value], account=name
        )

    def remove_account(self, name: str) -> int:
        """Delete an account and unbind all its keys."""
        check_account_name(name)
        return self._change(
            self._remove_account, [self._names, self._account(name), self._owners], [name], account=name
        )

    def enable(self, name: str) -> int:
        return self._set(name, "enabled", "1")

    def disable(self, name: str) -> int:
        """Its keys stay bound but can no longer connect (and every command of theirs is refused)."""
        return self._set(name, "enabled", "0")

    def set_role(self, name: str, role: str) -> int:
        return self._set(name, "role", check_role(role).value)

    def _set(self, name: str, field: str, value: str) -> int:
        check_account_name(name)
        return self._change(self._set_field, [self._names, self._account(name)], [name, field, value], account=name)

    def add_key(self, account: str, public_key: str) -> int:
        """Bind a Z85 public key to an account (again for the same account: no change)."""
        check_account_name(account)
        key = check_public_key(public_key)
        return self._change(self._add_key, [self._names, self._owners], [account, key], account=account, key=key)

    def revoke_key(self, public_key: str) -> int:
        key = check_public_key(public_key)
        return self._change(self._revoke_key, [self._owners], [key], key=key)

    def bootstrap_admin(self, account: str, public_key: str) -> int:
        """Make ``account`` an enabled admin holding ``public_key``, in one step (for the local
        first-admin command, run where Redis is reachable). Running it again changes nothing;
        an existing account with another role, or a key bound to another account, is refused,
        and so is any change once the admin ledger exists (AdminLedgerExistsError)."""
        check_account_name(account)
        key = check_public_key(public_key)
        return self._change(
            self._bootstrap_admin,
            [self._names, self._account(account), self._owners, self.admin_records_key],
            [account, key],
            account=account,
            key=key,
        )

    # --- the admin ledger's cache (docs/PROTOCOL.md 16.4) ------------------------------------

    def push_admin_record(self, height: int, data: bytes) -> int:
        """Cache the admin ledger's record at ``height``: :meth:`push_admin_records` of one."""
        return self.push_admin_records(height, [data])

    def push_admin_records(self, height: int, records: Sequence[bytes]) -> int:
        """Cache the admin ledger's ``records`` from ``height`` on, in one step (those already
        there, the same bytes: no change); the new version, announced like an account change so
        every node reloads its grants. Raises AccountError when the cache lacks the records before
        them (the caller pushes those first), and AdminCacheConflictError when it holds other
        bytes at one of their heights. One step: a node that proves all of the copy it sees
        leaves the bootstrap's accounts for it (broker/admin_copy.py), and one that loaded
        between the genesis and its import records proved a ledger of no account (fl28a)."""
        status, version = self._push_admin_records(
            keys=[self._version, self.admin_records_key], args=[self.channel, str(height), *records]
        )
        if _text(status) == "admin_gap":
            raise AccountError(f"the admin ledger cache holds {version} records, not {height}")
        if _text(status) == "admin_conflict":
            raise AdminCacheConflictError(
                f"the admin ledger cache holds another record at height {version}", height=int(version)
            )
        return int(version)

    def rewrite_admin_records(self, records: Sequence[bytes]) -> int:
        """Replace the admin ledger's cache with ``records`` (from height 0), in one step; the new
        version, announced. The home's answer to a cache that holds what its store does not."""
        return int(
            self._rewrite_admin_records(keys=[self._version, self.admin_records_key], args=[self.channel, *records])[1]
        )

    def admin_records(self, start: int = 0) -> list[bytes]:
        """The cached admin ledger's record bytes from height ``start`` on."""
        return list(self.client.lrange(self.admin_records_key, start, -1))

    def admin_records_digest(self, first: int, last: int) -> str:
        """:func:`admin_records_digest` of the cached admin ledger's entries ``first`` to ``last``
        (included), computed in Redis (one call, as long as that range: a caller pages it)."""
        return _text(self._admin_records_digest(keys=[self.admin_records_key], args=[str(first), str(last)]))

    def admin_size(self) -> int:
        """How many records the cache holds; :data:`NOT_A_LIST` when its key is of another type."""
        return _unless_wrong_type(lambda: int(self.client.llen(self.admin_records_key)), NOT_A_LIST)

    def repair_version(self) -> int | None:
        """Reset a version that is no count (announced); the new version, None when it was one."""
        status, version = self._repair_version(keys=[self._version], args=[self.channel])
        return int(version) if _text(status) == "ok" else None

    def repair_account_types(self) -> list[str]:
        """Delete (announced) each key of the accounts (their names set, key owners, an account's
        hash) that is of another type; their names, none when all were of theirs. The admin
        home rebuilds what they held from its store (ingest/admin_ledger.py)."""
        reply = self._repair_account_types(
            keys=[self._version, self._names, self._owners], args=[self.channel, self._account_prefix]
        )
        return [_text(key) for key in reply[2]] if _text(reply[0]) == "ok" else []

    # --- reads ---------------------------------------------------------------------------------

    def snapshot(self) -> AccountsSnapshot:
        reply = self._snapshot(keys=[self._version, self._names, self._owners], args=[self._account_prefix])
        return snapshot_from_reply(reply)

    def list_accounts(self) -> list[Account]:
        """Every account, by name, with its role, state and public keys (never secret material)."""
        accounts = self.snapshot().accounts
        return [accounts[name] for name in sorted(accounts)]

    def lookup(self, public_key: str) -> KeyOwner | None:
        reply = self._lookup(keys=[self._owners], args=[check_public_key(public_key), self._account_prefix])
        if not reply or reply[1] is None or _wire_text(reply[1]) not in _ROLES:  # a role written by hand too
            return None
        return KeyOwner(_text(reply[0]), Role(_text(reply[1])), _text(reply[2]) == "1")

    def allowed_keys(self) -> frozenset[str]:
        return self.snapshot().allowed_keys()

    def version(self) -> int:
        """The accounts version; :data:`NO_VERSION` for one that is no count (of another type too)."""
        return _unless_wrong_type(lambda: parse_version(self.client.get(self._version)), NO_VERSION)

    # --- which node applied what ---------------------------------------------------------------

    def applied_key(self, node: str) -> str:
        """The key where ``node`` says which version it applied (its Redis user's alone)."""
        return self._applied_prefix + _check_node(node)

    def record_applied(self, node: str, version: int, admin: int | None = None) -> bool:
        """Say that ``node`` now enforces accounts ``version`` and the first ``admin`` records of
        the admin ledger (None: Redis's accounts as they are, no admin ledger being known to it),
        and is alive: a heartbeat. True when its key was of another type, replaced (logged)."""
        enforced = "" if admin is None else str(admin)
        args = [self.applied_channel, node, str(version), enforced]
        return self._replaced(node, self._record_applied(keys=[self.applied_key(node)], args=args))

    def record_stopped(self, node: str) -> bool:
        """Say that ``node`` stopped cleanly: not live from now until its next :meth:`record_applied`
        (it applies every change before it serves again, AccountCache.start). True as there."""
        return self._replaced(
            node, self._record_stopped(keys=[self.applied_key(node)], args=[self.applied_channel, node])
        )

    def record_alive(self, node: str) -> bool:
        """Say that ``node`` is alive, not that it applied anything newer (its proof is behind).
        True as :meth:`record_applied`."""
        return self._replaced(node, self._record_alive(keys=[self.applied_key(node)], args=[]))

    def _replaced(self, node: str, reply: Any) -> bool:
        if _text(reply) != "replaced":
            return False
        logger.error("node %s: its key %s was of another type: replaced by its hash", node, self.applied_key(node))
        return True

    def _reports(self, nodes: Collection[str], field: str) -> dict[str, int | None]:
        """Each node's ``field`` from its own key; None when it never reported, or its key is
        unreadable (:data:`UNREADABLE`), which then counts as no report."""
        return {n: v if isinstance(v, int) else None for n, v in self._fields(nodes, field).items()}

    def _fields(self, nodes: Collection[str], field: str) -> dict[str, int | object | None]:
        """As :meth:`_reports`, with :data:`UNREADABLE` for a key of another type or a field that
        holds no number (the admin's user can write any node's key, a node's user its own)."""
        names = [_check_node(n) for n in nodes]
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hget(self._applied_prefix + name, field)
        found: dict[str, int | object | None] = {}
        for name, value in zip(names, pipe.execute(raise_on_error=False), strict=True):
            try:
                found[name] = value if value is None else int(_text(value))
            except ValueError:
                found[name] = UNREADABLE
        return found

    def applied(self, nodes: Collection[str]) -> dict[str, int]:
        """The version each of ``nodes`` last said it applied (those that never said: left out)."""
        return {n: v for n, v in self._reports(nodes, "version").items() if v is not None}

    def live_nodes(self, nodes: Collection[str], within: float) -> set[str]:
        """Those of ``nodes`` that reported within the last ``within`` seconds (by the Redis clock),
        and those whose heartbeat is unreadable: nothing says they are down, so an admin's command
        waits for them and names them in ``pending`` (its key set to a string by hand, a running node
        was left out, ``pending`` empty though it never reported: outsider o10 L1)."""
        seen = self._fields(nodes, "seen")
        ages = self._ages(seen)
        return {n for n, age in ages.items() if seen[n] is UNREADABLE or (age is not None and age <= within)}

    def silence(self, nodes: Collection[str]) -> dict[str, float | None]:
        """Seconds since each of ``nodes`` last said it is alive (its accounts heartbeat, by the
        Redis clock; since 1970 for one that stopped cleanly); None for one that never said so."""
        return self._ages(self._fields(nodes, "seen"))

    def _ages(self, seen: dict[str, int | object | None]) -> dict[str, float | None]:
        seconds, micros = self.client.time()
        now_ms = seconds * 1000 + micros // 1000
        return {n: (now_ms - ms) / 1000 if isinstance(ms, int) else None for n, ms in seen.items()}

    def wait_applied(self, version: int, nodes: Collection[str], timeout: float, admin: int = 0) -> dict[str, int]:
        """Wait until every node in ``nodes`` applied ``version`` or later and enforces the first
        ``admin`` records of the admin ledger or more (one that enforces Redis's accounts as they
        are, before it knows any admin ledger: by its version alone), or stopped cleanly meanwhile
        (:meth:`record_stopped`: it applies the change before it serves again); their versions.

        The version alone is Redis's word, which a hand can set: one set high made the nodes
        report it, and a later change's lower version was then "applied" by nodes that had not
        proven its record (k29); the count of admin records a node enforces is its own proof.
        Woken by each node's report rather than by polling; raises ApplyTimeoutError naming
        the nodes still behind (a node that never reported is at version 0).
        """
        names = [_check_node(n) for n in nodes]
        deadline = time.monotonic() + timeout
        pubsub = _subscribe(self.client, self.applied_channel)
        try:
            while True:
                current = {n: v or 0 for n, v in self._reports(names, "version").items()}
                # None: the node takes Redis's accounts as they are (no admin ledger known to it yet),
                # or runs a version from before the count: its version alone says.
                enforced = self._reports(names, "admin") if admin else {}
                lagging = {n: v for n, v in current.items() if v < version or _below(enforced.get(n), admin)}
                if lagging:
                    stopped = {n for n, seen in self._reports(lagging, "seen").items() if seen == 0}
                    lagging = {n: v for n, v in lagging.items() if n not in stopped}
                if not lagging:
                    return current
                left = deadline - time.monotonic()
                if left <= 0:
                    behind = ", ".join(
                        f"{n} at {v}" + (f" ({enforced.get(n)} admin records of {admin})" if admin else "")
                        for n, v in sorted(lagging.items())
                    )
                    raise ApplyTimeoutError(
                        f"accounts version {version} not applied within {timeout} s: {behind}", lagging
                    )
                pubsub.get_message(timeout=min(left, _LISTEN_SLICE * 4))
        finally:
            pubsub.close()


def _below(enforced: int | None, admin: int) -> bool:
    """Whether a node that enforces ``enforced`` admin records (None: no count) lacks some of ``admin``."""
    return enforced is not None and enforced < admin


# The admin's commands that change an account once the admin ledger exists (not bootstrap): the
# refusals name them (tools/supervise.py too).
ACCOUNT_COMMANDS = "vledger user add/enable, vledger user key add"


def _raise(code: str, account: str, key: str) -> NoReturn:
    if code == "account_exists":
        raise AccountExistsError(f"account {account!r} already exists")
    if code == "not_admin":
        raise AccountExistsError(f"account {account!r} already exists with another role than admin")
    if code == "no_such_account":
        raise NoSuchAccountError(f"no account {account!r}")
    if code == "key_in_use":
        raise KeyInUseError(f"key {key} is already bound to another account")
    if code == "no_such_key":
        raise NoSuchKeyError(f"key {key} is bound to no account")
    if code == "admin_ledger_exists":
        raise AdminLedgerExistsError(
            f"the admin ledger exists: account {account!r} is changed by an admin's command "
            f"({ACCOUNT_COMMANDS}), which the admin ledger records; "
            "admin bootstrap only makes the first admin"
        )
    if code == "wrong_type":
        raise AccountError(
            "Redis's accounts keys are of another type (set so by hand): the admin ledger's home "
            "rebuilds them at its start; before the admin ledger exists, delete them"
        )
    raise AccountError(f"unexpected answer from Redis: {code!r}")


def bootstrap_admin(registry: AccountRegistry, account: str, public_key: str) -> int:
    """The local first-admin command's step: see :meth:`AccountRegistry.bootstrap_admin`."""
    return registry.bootstrap_admin(account, public_key)


def _subscribe(client: Any, channel: str) -> Any:
    """A PubSub subscribed to ``channel``, returned only once Redis confirmed it: whatever is
    read after this cannot miss a message published after that read."""
    pubsub = client.pubsub()
    try:
        pubsub.subscribe(channel)
        deadline = time.monotonic() + _SUBSCRIBE_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            message = pubsub.get_message(timeout=left)
            if message is not None and message["type"] in ("subscribe", b"subscribe"):
                return pubsub
        raise redis.exceptions.TimeoutError(f"no confirmation of SUBSCRIBE {channel}")
    except BaseException:
        pubsub.close()
        raise


class AccountCache:
    """A node's copy of the accounts: thread-safe reads, kept current in the background.

    ``start()`` subscribes, loads, and starts one thread that reloads on each announced
    change, polls the version every ``poll_interval`` seconds (and then also records the
    node as alive), and recovers from a lost connection by subscribing and loading again.
    After each change it calls ``on_change(allowed_keys)`` (wire it to the CurveServer's
    ``AllowList.replace``) and then records the applied version in Redis.
    """

    def __init__(
        self,
        registry: AccountRegistry,
        node: str,
        *,
        on_change: Callable[[frozenset[str]], None] | None = None,
        poll_interval: float = 5.0,
        admin: AdminSource | None = None,
        on_unbacked: Callable[[list[str]], None] | None = None,
        on_unproven: Callable[[str | None], None] | None = None,
    ) -> None:
        # Run at each poll, before the version is compared (the admin home's AdminLedger.refill:
        # what Redis lost of the admin ledger is put back without waiting for a restart).
        self.upkeep: Callable[[], None] | None = None
        self.registry = registry
        self.node = _check_node(node)
        self.on_change = on_change
        self.poll_interval = poll_interval
        # Where the admin ledger comes from (broker/admin_copy.py); None: nowhere (a tool's or a
        # test's cache of a Redis without one), so Redis's accounts are all there is.
        self.admin = admin
        self._behind = False  # Redis's copy of the admin ledger is ahead of what this node enforces
        self._unproven_since: float | None = None  # since when Redis's copy holds records not proven here
        self._waiting = ""  # what the admin copy waits for, when not a checkpoint of Redis's copy (AdminCopy)
        # Told, at each change, which of Redis's entries let a key in that the admin ledger does not
        # (:func:`unbacked`; empty once none is left): a node raises or resolves its alert.
        self.on_unbacked = on_unbacked
        # Told what Redis's copy holds that this node could not prove for _BEHIND_FAST_FOR, and
        # None once it proves all of it again: a node raises or resolves its alert (r13 #3: a
        # junk entry in the copy froze a node's accounts for good, silently).
        self.on_unproven = on_unproven
        # True at first: the first load that proves the whole copy resolves an alert an earlier
        # run of the node left open.
        self._unproven_reported = True
        # Told why the accounts are not current once FAILING_POLLS loads in a row failed
        # unexpectedly, and None once one succeeds again: a node raises or resolves its alert
        # (review r14 F4: a load that raised on every poll left the node ready, its accounts frozen).
        self.on_failing: Callable[[str | None], None] | None = None
        self._failing: tuple[int, float, str] | None = None  # failures in a row, since (wall), last error
        # True at first: the first load that succeeds resolves an alert an earlier run left open.
        self._failing_reported = True
        # Told, with a sentence, that this node's applied key was of another type and replaced by its
        # hash: someone who may write Redis wrote there (a node raises admin_cache_conflict).
        self.on_replaced: Callable[[str], None] | None = None
        # How many admin commands are changing the accounts now (:meth:`changing`).
        self._changes = 0
        self._stated: dict[str, dict[str, Any]] | None = None  # the admin ledger's accounts
        self._unbacked: list[str] | None = None  # what was last reported of Redis's entries the ledger lacks
        # Keys the admin ledger stopped letting in (or changed) at a load here, and when: not
        # reported as unbacked for _ENDED_GRACE, while Redis's entries catch up with the record.
        self._ended: dict[str, float] = {}
        self._malformed: tuple[str, ...] = ()  # Redis's malformed entries at the last load (logged once)
        self._snapshot = AccountsSnapshot.empty()
        self._unapplied = True  # on_change has not yet seen the snapshot we hold
        self._changed = threading.Condition()
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pubsub: Any = None
        self._grants: Grants | None = None
        self._key_rotations: tuple[dict[str, Any], ...] = ()
        self._second_factors: Mapping[str, str | None] = {}
        self._seals: frozenset[str] = frozenset()
        self._factor_times: Mapping[str, int] = {}
        self._admin_size = 0
        self._catch_up_lock = threading.Lock()
        self._next_catch_up = 0.0
        self._catch_up_thread: threading.Thread | None = None
        self._catch_up_asked = threading.Event()
        self._catch_up_busy = False
        self._catch_ups = 0  # looks asked for, and (under _changed) done and whether they reloaded
        self._caught_up: tuple[int, bool] = (0, False)

    # --- reads (any thread) ----------------------------------------------------------------------

    @property
    def snapshot(self) -> AccountsSnapshot:
        """The accounts as last loaded: a new object at each load, never one changed in place,
        so reading the one reference needs no lock (an ingest node reads it at every request)."""
        return self._snapshot

    @property
    def version(self) -> int:
        return self.snapshot.version

    def lookup(self, public_key: str) -> KeyOwner | None:
        return self.snapshot.lookup(public_key)

    @property
    def grants(self) -> Grants | None:
        """The grants of the cached admin ledger (None while there is none); a new object
        after each change, never one changed in place, so any thread may read it."""
        return self._grants

    @property
    def key_rotations(self) -> tuple[dict[str, Any], ...]:
        """The cached admin ledger's ``key_rotation`` payloads (each with its ``accepted``), a
        new tuple after each change (node/node_key_rotation.py makes the nodes' keys of them)."""
        return self._key_rotations

    def second_factor_enrolled(self, account: str) -> bool:
        """Whether the admin ledger, as proven here, records ``account`` as enrolled in a
        second factor (False while no admin ledger is proven: the bootstrap has only Redis)."""
        return account in self._second_factors

    def second_factor_seal(self, account: str) -> str | None:
        """The SHA-256 (hex) of the sealed secret the admin ledger, as proven here, last recorded
        for ``account`` (PROTOCOL 16.1 ``sealed_sha256``), or None: no such record, or one made
        before records named it."""
        return self._second_factors.get(account)

    def second_factor_recorded_at(self, account: str) -> int:
        """The accepted time of the admin ledger's latest ``totp`` record of ``account``, as
        proven here (-1: none)."""
        return self._factor_times.get(account, -1)

    def second_factor_seal_recorded(self, sealed_sha256: str) -> bool:
        """Whether a ``totp`` record of the admin ledger, as proven here, ever named ``sealed_sha256``."""
        return sealed_sha256 in self._seals

    def accepted_floor(self) -> int:
        """The least accepted time a record placed now may have (PROTOCOL 16.2)."""
        grants = self._grants
        return 0 if grants is None else grants.last_accepted + 1

    def allowed_keys(self) -> frozenset[str]:
        return self.snapshot.allowed_keys()

    def wait_for_version(self, version: int, timeout: float) -> bool:
        """True once this cache holds ``version`` or a later one and has handed it to
        ``on_change`` (or tried to), False at the deadline."""
        with self._changed:
            return self._changed.wait_for(lambda: self._snapshot.version >= version, timeout)

    # --- loading -------------------------------------------------------------------------------

    @property
    def behind(self) -> bool:
        """Whether Redis's copy of the admin ledger holds records this node has not proven yet."""
        return self._behind

    def refresh(self) -> int:
        """Load the accounts now (the node that made a change calls this before answering).

        Once an admin ledger exists, the accounts are the ones its records state, and Redis's
        (its hashes and key owners) only announce a change: an entry there that no record
        backs grants nothing, and is logged. The version counts as applied only once every
        record Redis's copy holds is proven here, so an admin's command answers once each node
        enforces it."""
        with self._reload_lock:
            cached = self.registry.snapshot()
            # Redis's entries as the bootstrap took them are no record's: none of them settles.
            stated_before = self._stated is not None
            # Its key rotations change the members (on_change) without changing any account.
            grown = self._load_admin()
            if self._stated is None and cached.spoiled:
                # Redis's accounts are all there is and they lack what those keys held: the last
                # ones stand, loaded again at each poll (_unapplied) until the keys are whole.
                _warn_once(f"node {self.node}: Redis's accounts keys {', '.join(cached.spoiled)} are of another type")
                self._unapplied = True
                return self.version
            snapshot = cached if self._stated is None else ledger_snapshot(cached.version, self._stated)
            settling = self._settling(self._snapshot if stated_before else snapshot, snapshot)
            if self._stated is not None and not self._awaiting_proof() and not self._changes:
                self._report_unbacked(unbacked(cached, snapshot, settling))
            elif self._stated is None and cached.malformed and cached.malformed != self._malformed:
                named = ", ".join(cached.malformed)
                logger.warning("node %s: Redis's accounts hold malformed entries, ignored: %s", self.node, named)
            self._malformed = cached.malformed
            with self._changed:
                previous, self._snapshot = self._snapshot, snapshot
            try:
                if (self._unapplied or grown or snapshot != previous) and not self._hand_over(snapshot):
                    return snapshot.version
            finally:
                with self._changed:
                    self._changed.notify_all()
                if self.admin is not None:
                    self.admin.keep()  # once enforced
            if not self._behind and not self._stop.is_set():  # once stopped, a late refresh says nothing
                self._reported(self.registry.record_applied(self.node, snapshot.version, self._enforced()))
            return snapshot.version

    def _load_without_functions(self) -> None:
        """At start while Redis lacks the functions library (its accounts are read by one of
        them): enforce the accounts of the admin ledger as far as this node proves it without them
        (Redis's copy and its own kept copy, PROTOCOL 16.4), none while it proves none (nor Redis's
        bootstrap entries, which only a function reads whole). Nothing is recorded as applied and
        no unbacked entry is judged: the accounts thread loads again once the library is back."""
        with self._reload_lock:
            self._load_admin()
            stated = self._stated
            snapshot = AccountsSnapshot.empty() if stated is None else ledger_snapshot(0, stated)
            with self._changed:
                self._snapshot = snapshot
            try:
                self._hand_over(snapshot)
            finally:
                with self._changed:
                    self._changed.notify_all()
                if self.admin is not None:
                    self.admin.keep()
        self._unapplied = True  # recorded as applied by the first load that reads Redis's accounts

    def _settling(self, before: AccountsSnapshot, after: AccountsSnapshot) -> frozenset[str]:
        """The keys ``before`` let in that ``after`` no longer does as it did, noted now, with
        those noted less than _ENDED_GRACE ago: Redis's entries may still hold them a moment."""
        now = time.monotonic()
        for key in before.allowed_keys():
            if before.lookup(key) != after.lookup(key):
                self._ended.setdefault(key, now)
        self._ended = {key: at for key, at in self._ended.items() if now - at < _ENDED_GRACE}
        return frozenset(self._ended)

    def _enforced(self) -> int | None:
        """How many admin records the accounts this node enforces come from; None while it takes
        Redis's as they are (no admin ledger known to it yet: the bootstrap, PROTOCOL 16.4)."""
        return None if self._stated is None else self._admin_size

    def changing(self) -> _Changing:
        """While an admin command changes an account (its record, then Redis's entries), a
        reload in between reports no ``unbacked_account``: Redis still lets in what the record
        just ended, for a moment, on an honest cluster (r13 #8). The command reloads after."""
        return _Changing(self)

    def catch_up(self) -> bool:
        """Reload now if Redis's accounts version or the admin ledger's checkpoint moved since the
        last load; whether it reloaded. Called (on the ZAP thread) for a key the node does not let
        in, before it is refused: a key an admin has just added was refused, silently, while this
        node's announcement, poll or proof of the new checkpoint lagged on a loaded host (acct27).
        At most once per _CATCH_UP_INTERVAL, never raises (anyone can offer unknown keys, and a
        refusal must look the same whether it looked or not), and never calls Redis: a thread of
        its own looks, and this one waits _CATCH_UP_WAIT at most, not at all while a look is
        still under way or for _CATCH_UP_BACK_OFF after one failed."""
        now = time.monotonic()
        with self._catch_up_lock:
            if now < self._next_catch_up or self._catch_up_busy:
                return False
            self._next_catch_up = now + _CATCH_UP_INTERVAL
            self._catch_up_busy = True
            self._catch_ups += 1
            asked = self._catch_ups
            if self._catch_up_thread is None or not self._catch_up_thread.is_alive():
                self._catch_up_thread = threading.Thread(
                    target=self._catching_up, name=f"accounts-catch-up-{self.node}", daemon=True
                )
                self._catch_up_thread.start()
        self._catch_up_asked.set()
        with self._changed:
            self._changed.wait_for(lambda: self._caught_up[0] >= asked, _CATCH_UP_WAIT)
            done, reloaded = self._caught_up
        return done >= asked and reloaded

    def _catching_up(self) -> None:
        """The looks :meth:`catch_up` asks for, one at a time, until the cache stops."""
        while not self._stop.is_set():
            if not self._catch_up_asked.wait(_LISTEN_SLICE):
                continue
            self._catch_up_asked.clear()
            with self._catch_up_lock:
                asked = self._catch_ups
            reloaded = False
            try:
                if self.registry.version() != self.version or (self.admin is not None and self.admin.moved()):
                    self.refresh()
                    reloaded = True
            except Exception as e:  # this thread must live on: the next stranger's key asks again
                logger.warning("node %s: looking for newer accounts failed (%s)", self.node, e)
                with self._catch_up_lock:
                    self._next_catch_up = time.monotonic() + _CATCH_UP_BACK_OFF
            with self._catch_up_lock:
                self._catch_up_busy = False
            with self._changed:
                self._caught_up = (asked, reloaded)
                self._changed.notify_all()

    def _load_admin(self) -> bool:
        """Replay the admin ledger again when it grew (it is small, changes are rare); whether it did."""
        copy = self.admin.load() if self.admin is not None else NO_ADMIN_LEDGER
        # Before any admin ledger is proven, the bootstrap's accounts are enforced (and applied)
        # while the first checkpoint is awaited.
        self._behind = copy.unproven and copy.records is not None
        self._waiting = copy.waiting
        if not copy.unproven:
            self._unproven_since = None
        elif self._unproven_since is None:
            self._unproven_since = time.monotonic()
        if not self._behind and self._unproven_reported:
            self._unproven_reported = False
            if self.on_unproven is not None:
                self.on_unproven(None)
        records = copy.records
        if records is None:
            # The bootstrap: Redis's accounts, and the grants of Redis's copy if there is one.
            self._grants = _replayed(copy.unchecked, self.node).grants() if copy.unchecked else None
            self._key_rotations, self._stated, self._admin_size = (), None, 0
            return False
        if len(records) == self._admin_size and self._stated is not None:
            return False
        engine = _replayed(records, self.node)
        self._grants = engine.grants()
        self._key_rotations = tuple(engine.key_rotations())
        self._second_factors = engine.admin_second_factors() or {}
        self._seals = engine.admin_recorded_seals()
        self._factor_times = engine.admin_factor_times()
        self._stated = engine.admin_accounts() or {}
        self._admin_size = len(records)
        return True

    def _awaiting_proof(self) -> bool:
        """Whether Redis's copy holds admin records whose checkpoint is still on its way
        (_BEHIND_FAST_FOR): the accounts they add are in Redis's entries before they are proven
        here, so every honest ``account.add`` would raise ``unbacked_account`` for that second
        (they are refused meanwhile all the same). Past it they are reported."""
        since = self._unproven_since
        return self._behind and since is not None and since > 0 and time.monotonic() - since < _BEHIND_FAST_FOR

    def _report_unbacked(self, found: list[str]) -> None:
        """Log, once for each new set, the accounts Redis lets in that the admin ledger does not
        (public keys' fingerprints only: nothing secret), and tell ``on_unbacked``."""
        if found == self._unbacked:
            return
        if found:
            logger.warning(
                "node %s: Redis's accounts hold %d entr(y/ies) that no admin record backs: %s",
                self.node,
                len(found),
                ", ".join(found),
            )
        if self.on_unbacked is not None:
            try:
                self.on_unbacked(found)
            except Exception as e:  # Redis down: not reported yet, so the next heartbeat tries again
                logger.warning("node %s: the unbacked accounts are not reported (%s); tried again", self.node, e)
                self._unbacked = None
                return
        self._unbacked = found

    def _hand_over(self, snapshot: AccountsSnapshot) -> bool:
        """Give the new allow-list to ``on_change``; False if that failed."""
        logger.info("node %s: accounts version %d loaded", self.node, snapshot.version)
        self._unapplied = True
        if self.on_change is not None:
            try:
                self.on_change(snapshot.allowed_keys())
            except Exception:
                # Not recorded as applied, so an admin waiting on this node sees it lag;
                # the next poll tries again.
                logger.exception("node %s: applying accounts version %d failed", self.node, snapshot.version)
                return False
        self._unapplied = False
        return True

    def _looking_again(self) -> bool:
        """Whether the checkpoint of an admin record Redis holds is awaited soon (see _BEHIND_FAST_FOR)."""
        since = self._unproven_since
        if since is None:
            return False
        if time.monotonic() - since < _BEHIND_FAST_FOR:
            return True
        if since > 0:  # once per stretch
            problem = (
                f"{self._waiting} after {_BEHIND_FAST_FOR:g} s; no account is admitted here"
                if self._waiting
                else f"Redis's copy of the admin ledger holds records no checkpoint of its home proves after "
                f"{_BEHIND_FAST_FOR:g} s ({self._admin_size} proven here); their accounts are not enforced here"
            )
            logger.warning("node %s: %s", self.node, problem)
            self._unproven_since = -1.0
            if self._behind and self.on_unproven is not None:
                self._unproven_reported = True
                self.on_unproven(problem)
        return False

    def _heartbeat(self) -> None:
        """The safety net: reload if the version moved unannounced (or the admin ledger's
        newest records await their checkpoint), else say we are alive."""
        if self.upkeep is not None:
            self.upkeep()
        # Its report failed, keys left out of it while they settle are to be judged, or it names
        # entries (whoever removes them need not move the version: o16 7, its alert stayed open
        # until the next change of the accounts): again.
        unreported = self._stated is not None and (self._unbacked is None or bool(self._unbacked) or bool(self._ended))
        if unreported or self._unapplied or self._unproven_since is not None or self.registry.version() != self.version:
            self.refresh()
            if self._behind:  # not applied, yet alive: an admin's command names it in pending
                self._reported(self.registry.record_alive(self.node))
        else:
            self._reported(self.registry.record_applied(self.node, self.version, self._enforced()))

    def _reported(self, replaced: bool) -> None:
        if not replaced or self.on_replaced is None:
            return
        try:
            self.on_replaced(
                f"{self.registry.applied_key(self.node)} was of another type: replaced by node {self.node}'s hash"
            )
        except Exception:  # the alert is lost (the log keeps it), never this thread
            logger.exception("node %s: could not report its replaced applied key", self.node)

    def start(self) -> Self:
        if self._thread is not None:
            raise AccountError("this AccountCache is already started")
        self._stop.clear()
        self._pubsub = _subscribe(self.registry.client, self.registry.channel)
        try:
            self.refresh()
        except FunctionsMissingError:
            # As while it runs, not an exit: what it proves of the admin ledger without them,
            # and the thread loads again until the loader put the library back (fix31).
            self._pubsub.close()
            self._pubsub = None
            self._load_without_functions()
        except BaseException:
            self._pubsub.close()
            self._pubsub = None
            raise
        self._thread = threading.Thread(target=self._follow, name=f"accounts-{self.node}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread, within _STOP_WAIT: one still in a Redis call then is left to it; once
        it ended, say in Redis that this node stopped (:meth:`AccountRegistry.record_stopped`)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(_STOP_WAIT)
            if thread.is_alive():
                logger.warning(
                    "node %s: the accounts thread is still in a call to Redis %g s after the stop: left to it",
                    self.node,
                    _STOP_WAIT,
                )
                return  # its subscription is in its hands: closed under it, the call could fail anywhere
            self._say_stopped()
        if self._pubsub is not None:
            self._pubsub.close()
            self._pubsub = None

    def _say_stopped(self) -> None:
        """After the thread's last heartbeat, never before it (one after would make the node live
        again); a Redis that fails then leaves the node live for its window, as a kill does."""
        try:
            self._reported(self.registry.record_stopped(self.node))
        except (redis.exceptions.RedisError, OSError) as e:
            logger.warning("node %s: could not say in Redis that it stopped (%s)", self.node, e)

    def _follow(self) -> None:
        next_poll = time.monotonic() + self.poll_interval
        failures = 0
        while not self._stop.is_set():
            try:
                if self._pubsub is None:
                    self._pubsub = _subscribe(self.registry.client, self.registry.channel)
                    self.refresh()  # whatever was announced while we were away
                # Soon again while the checkpoint of an admin record is on its way: an admin's
                # command waits for this node to enforce its record.
                pause = min(self.poll_interval, _BEHIND_POLL) if self._looking_again() else self.poll_interval
                next_poll = min(next_poll, time.monotonic() + pause)
                wait = max(0.0, min(_LISTEN_SLICE, next_poll - time.monotonic()))
                message = self._pubsub.get_message(timeout=wait)
                announced = message is not None and message["type"] in ("message", b"message")
                if announced and _announced_version(message["data"]) not in (None, self.version):
                    self.refresh()
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + self.poll_interval
                    self._heartbeat()
                failures = 0
                self._note_success()
            except (redis.exceptions.RedisError, OSError, ValueError) as e:
                failures += 1
                logger.warning("node %s: following accounts failed (%s); retrying", self.node, e)
                self._recover(failures)
            except Exception as e:
                # Nothing Redis holds may end this thread: one malformed entry did, on every node,
                # and the revocations after it were never applied (outsider o8 J6).
                failures += 1
                logger.exception("node %s: following accounts failed unexpectedly; retrying", self.node)
                self._note_failure(e)
                self._recover(max(failures, 2))

    def _recover(self, failures: int) -> None:
        """Subscribe and load afresh; after a second failure in a row, after a pause."""
        if self._pubsub is not None:
            self._pubsub.close()
            self._pubsub = None
        if failures > 1:  # a dropped connection is retried at once, a dead server slowly
            self._stop.wait(_RETRY_PAUSE)

    def _note_failure(self, error: Exception) -> None:
        """Count an unexpected failure; at the FAILING_POLLS-th in a row, tell ``on_failing``.
        Redis's errors are not counted: Redis down has its own check and alert."""
        count, since, _ = self._failing or (0, time.time(), "")
        self._failing = (count + 1, since, f"{type(error).__name__}: {error}")
        if self._failing_reported or count + 1 < FAILING_POLLS:
            return
        self._failing_reported = True
        self._tell_failing(self.not_current())

    def _note_success(self) -> None:
        self._failing = None
        if self._failing_reported:
            self._failing_reported = False
            self._tell_failing(None)

    def _tell_failing(self, problem: str | None) -> None:
        if self.on_failing is None:
            return
        try:
            self.on_failing(problem)
        except Exception:  # the alert is lost (the log keeps it), never this thread
            logger.exception("node %s: could not report that its accounts are not current", self.node)

    def not_current(self) -> str | None:
        """Why the accounts this node enforces may be out of date (a node's /readyz fails with
        it): the thread that follows them stopped, or its last FAILING_POLLS loads or more failed;
        None when neither."""
        if not self.alive():
            return "the accounts thread is not running"
        failing = self._failing
        if failing is None or failing[0] < FAILING_POLLS:
            return None
        count, since, error = failing
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
        return f"the accounts are not current: {count} loads in a row failed since {at} ({error})"

    def alive(self) -> bool:
        """Whether the thread that keeps the accounts current runs."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _Changing:
    """:meth:`AccountCache.changing`'s context: reloads report no unbacked entry meanwhile."""

    def __init__(self, cache: AccountCache) -> None:
        self.cache = cache

    def __enter__(self) -> None:
        with self.cache._reload_lock:
            self.cache._changes += 1

    def __exit__(self, *exc: object) -> None:
        with self.cache._reload_lock:
            self.cache._changes -= 1


def _replayed(records: Iterable[Record], node: str) -> RulesEngine:
    """A rules engine that replayed the admin ledger's ``records``."""
    engine = RulesEngine()
    violations = engine.replay(records)
    if violations:
        logger.warning("node %s: the admin ledger holds %d refused records", node, len(violations))
    return engine


def _announced_version(data: Any) -> int | None:
    """The version an announcement names, or None for one that names none. Every node's Redis
    user may publish on the channel (Redis's channel rights do not tell PUBLISH from SUBSCRIBE):
    junk is ignored, quietly, and a number is only a hint to re-read the version from Redis."""
    try:
        return int(_text(data))
    except (ValueError, UnicodeDecodeError):
        logger.debug("an accounts announcement that names no version, ignored: %.40r", data)
        return None
