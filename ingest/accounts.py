"""The ingest node's side of the account registry: who a key is, and the admin commands."""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from ..broker.accounts import (
    Account,
    AccountCache,
    AccountRegistry,
    AccountsSnapshot,
    Role,
    check_account_name,
    check_role,
    heartbeat_window,
)
from ..broker.keys import check_public_key
from ..broker.replication import REDIS_ERRORS
from ..broker.second_factor import ENROLL, RESET
from ..config.cluster import FOLLOWER_ROLES
from ..node import totp
from ..node.errors import (
    AccountError,
    AccountExistsError,
    AlreadyEnrolledError,
    ApplyTimeoutError,
    BadRequestError,
    ForbiddenError,
    KeyInUseError,
    LastAdminError,
    NodeUnavailableError,
    NoSuchAccountError,
    NoSuchKeyError,
    NoteKeyError,
    NotEnrolledError,
)
from ..node.node_key_rotation import NO_SIGN_KEY, KeyHistory, sign_key_problem
from ..node.note import ed25519_public_key
from ..node.rules.admin import ADMIN_LEDGER, MACHINERY_KINDS, SEALED_SHA256, grant_problem
from ..node.wire import Args
from .admin_ledger import AdminLedger, account_payload
from .second_factor import OWN_RESET, SecondFactors
from .service import Caller

# A rotation's window (PROTOCOL 16.6): long enough for every client to learn the new key,
# short enough that a stolen old key does not stay good for long.
MIN_ROTATION_WINDOW_MS = 1_000
MAX_ROTATION_WINDOW_MS = 30 * 86_400_000

log = logging.getLogger(__name__)


class _NoAccount(enum.Enum):
    """A key that no account holds: a member's, or nobody's (looked up at each request)."""

    KEY = 0


NO_ACCOUNT = _NoAccount.KEY


class CachedAccounts:
    """Looks keys up in the node's AccountCache: no Redis round trip per request.

    A snapshot of the accounts never changes, so each key's account Caller is worked out once
    per snapshot; a new snapshot (a key revoked, an account disabled) starts afresh. A key of
    no account is looked up in ``members`` at every request: the members change without a new
    snapshot (a node's old key leaves them when its rotation's window ends, PROTOCOL 16.6),
    and a request is judged by its key at each message. One thread.
    """

    def __init__(self, cache: AccountCache, size: int = 4096, members: dict[str, Caller] | None = None) -> None:
        self.cache = cache
        self.size = size
        self.members = members or {}  # the cluster's nodes (vledger.ingest.members), changed in place
        self._snapshot: AccountsSnapshot | None = None
        self._callers: dict[str, Caller | _NoAccount | None] = {}

    def lookup(self, key: str) -> Caller | None:
        snapshot = self.cache.snapshot
        if snapshot is not self._snapshot or len(self._callers) >= self.size:
            self._snapshot = snapshot
            self._callers = {}
        try:
            cached = self._callers[key]
        except KeyError:
            owner = snapshot.lookup(key)
            if owner is None:
                cached = NO_ACCOUNT
            else:
                cached = Caller(owner.account, owner.role.value, key) if owner.enabled else None
            self._callers[key] = cached
        return self.members.get(key) if cached is NO_ACCOUNT else cached


class RegistryAdmin:
    """Runs an admin command: checks it against the current accounts, records it on the admin
    ledger (when this node homes it, docs/PROTOCOL.md 16.3), applies it to the registry, and
    answers once every live node of ``nodes`` (the cluster's: replicas, observers and the
    verifier enforce accounts too) applied it, so that a revoked key is refused, and a key
    added is let in, by every node from its next request."""

    def __init__(
        self,
        registry: AccountRegistry,
        cache: AccountCache,
        nodes: list[str],
        wait_ms: int,
        ledger: AdminLedger | None = None,
        factors: SecondFactors | None = None,
        node_roles: Mapping[str, str] | None = None,
        history_of: Callable[[str], KeyHistory | None] | None = None,
        cosigned_by: Callable[[str, str], dict[str, int]] | None = None,
        tallied_by: Callable[[str, str], dict[str, int]] | None = None,
    ) -> None:
        self.node_roles = dict(node_roles or {})  # the cluster's nodes: name -> role
        self.history_of = history_of  # a node's key generations (MemberGates.histories)
        # (witness, its Ed25519 key in hex) -> ledger -> the largest size that key cosigned
        # (ingest.cosignatures.largest_cosigned): what a witness's rotation states (PROTOCOL 16.6).
        self.cosigned_by = cosigned_by
        # (observer, its Ed25519 key in hex) -> ledger -> the height of its latest tally that key
        # signed (ingest.cosignatures.tallied_heights): what an observer's rotation states besides (16.6).
        self.tallied_by = tallied_by
        self.registry = registry
        self.cache = cache
        self.nodes = nodes
        self.wait_seconds = wait_ms / 1000
        self.ledger = ledger
        self.factors = factors
        # One command's check, record and change at a time: admin commands run on the node's
        # executor threads, and two admins disabling each other at once both passed the
        # last-admin check on the same snapshot, leaving no admin (reviewer r10 #5).
        self._changing = threading.Lock()

    def apply(self, command: str, args: Args, caller: Caller | None = None) -> dict[str, Any]:
        """Raises the precise account errors (no_such_account, key_in_use, ...), BadRequestError
        for bad arguments, and the admin ledger's RuleErrors (already_granted, no_such_grant)."""
        author, via = (caller.account, caller.key) if caller is not None else ("", "")
        with self._changing:  # not the wait for the nodes below: it takes up to wait_ms
            # The accounts as the command before this one left them (its refresh below runs
            # unlocked): checked on an older snapshot, two admins disabling each other would pass.
            self.cache.refresh()
            self._record_host_enrollments()
            with self.cache.changing():  # its record, then Redis's entries: no alert in between
                if command in ("grant.add", "grant.revoke"):
                    result = self._grant(command, args, author, via)
                    version = self.registry.version()
                elif command in ("totp.enroll", "totp.reset"):
                    result = self._second_factor(command, args, author, via)
                    version = self.registry.version()
                elif command == "node.rotate":
                    result = self._rotate(args, author, via)
                    version = self.registry.version()
                else:
                    result, version = self._account_change(command, args, author, via)
            # Waited for by the admin records each node enforces too, not only by the version,
            # which a hand can set: one set high ended the wait early (k29).
            admin = self.ledger.store.size(ADMIN_LEDGER) if self.ledger is not None else 0
        self.cache.refresh()
        live = self.registry.live_nodes(self.nodes, within=heartbeat_window(self.cache.poll_interval))
        deadline = time.monotonic() + self.wait_seconds
        try:
            self.registry.wait_applied(version, sorted(live), self.wait_seconds, admin)
            result["pending"] = []
        except ApplyTimeoutError as e:
            # The change is made; say which nodes have not confirmed it yet rather than fail.
            result["pending"] = sorted(e.lagging)
        # Then what the wait left for the checkpoint the nodes not live now prove the record by
        # (the live ones applied it only once proven: then it is there already).
        if self.ledger is not None and not self.ledger.wait_proven(deadline):
            log.warning("Redis's checkpoint of the admin ledger lacks its newest records after %g s", self.wait_seconds)
        result["version"] = version
        return result

    def _accounts(self) -> AccountsSnapshot:
        """The accounts as this node enforces them: the admin ledger's once it exists (Redis's
        entries are a cache of it, which may hold what no record backs), bootstrap's before."""
        return self.cache.snapshot

    def _record(self, kind: str, payload: dict[str, Any], author: str) -> int | None:
        if self.ledger is None or not author:
            return None
        return self.ledger.append(kind, payload, author).height

    def _grant(self, command: str, args: Args, author: str, via: str) -> dict[str, Any]:
        ledger = args.text("ledger", max_length=64)
        kind = args.text("kind", max_length=64)
        account = args.text("account", max_length=64)
        problem = grant_problem(ledger, kind, account)
        if problem is not None:
            raise BadRequestError(problem)
        if command == "grant.add" and kind in MACHINERY_KINDS:
            # It would close nothing (16.2); a revoke of one granted before stays possible.
            raise BadRequestError(f"kind {kind!r} is placed by the node for an admin's command: no grant governs it")
        if account not in self._accounts().accounts:
            raise NoSuchAccountError(f"no account {account!r}")
        if self.ledger is None:
            raise BadRequestError("grants are recorded on the admin ledger, which this node does not home")
        payload = {"ledger": ledger, "kind": kind, "account": account, "via": via}
        height = self._record("grant" if command == "grant.add" else "revoke", payload, author)
        return {"ledger": ledger, "kind": kind, "account": account, "height": height}

    def _rotate(self, args: Args, author: str, via: str) -> dict[str, Any]:
        """Record a rotation of a node's keys (PROTOCOL 16.6): its new CURVE key ``curve`` and
        Ed25519 key ``sign``, the old ones in force ``window_ms`` more. An ingest node rotates
        its CURVE key (``sign`` its unchanged key), a verifier its CURVE key (``sign`` empty or
        absent: it has no Ed25519 key); a replica or an observer its Ed25519 key and, unless
        ``curve`` is its CURVE key in force, its CURVE key too. Refused (bad_request) for a node
        the cluster does not have, a key that is not one (a verifier's ``sign`` other than
        empty; an Ed25519 ``sign`` that is no point or of small order), a replica's or
        observer's ``sign`` that it had before, a window out of bounds,
        or while the node's previous window is still open; a new CURVE key that an account or
        a node already uses, or an Ed25519 key another node has had, is key_in_use."""
        node = args.text("node", max_length=64)
        role = self.node_roles.get(node)
        if role is None:
            raise BadRequestError(f"no node {node!r} in the cluster")
        curve = check_public_key(args.text("curve", max_length=40))
        if role == "verifier":
            # A verifier signs nothing: its record says so with an empty sign (PROTOCOL 16.1).
            sign = args.values.get("sign", NO_SIGN_KEY)
            if sign != NO_SIGN_KEY:
                raise BadRequestError(f"{node} is a verifier, which has no Ed25519 key: sign must be empty")
        else:
            sign = args.text("sign", max_length=64)
            problem = sign_key_problem(sign)
            if problem is not None:
                raise BadRequestError(problem)
            try:
                # The record's rule takes any 64 hex digits (16.1); a key no signature can verify
                # with (no point, or of small order) would only silence the node's cosignatures.
                ed25519_public_key(bytes.fromhex(sign))
            except NoteKeyError as e:
                raise BadRequestError(f"sign {sign[:16]}...: {e.message}") from None
        window_ms = args.uint("window_ms", maximum=MAX_ROTATION_WINDOW_MS)
        if window_ms < MIN_ROTATION_WINDOW_MS:
            raise BadRequestError(f"window_ms {window_ms} is under {MIN_ROTATION_WINDOW_MS}")
        history = self.history_of(node) if self.history_of is not None else None
        keeps_curve = False
        if role in FOLLOWER_ROLES:
            # A witness's Ed25519 key rotates, with or without its CURVE key.
            if history is None:
                raise BadRequestError(f"{node}: its keys in force are unknown to this node")
            if sign in history.sign_keys():
                raise BadRequestError(f"{node} had the Ed25519 key {sign[:16]}... before: sign must be a new key")
            keeps_curve = curve == history.newest.curve
        if not keeps_curve and (self._accounts().lookup(curve) is not None or curve in self._node_keys()):
            raise KeyInUseError(f"the key {curve[:8]}... is already in use")
        holder = self._sign_holder(sign, node)
        if holder is not None:  # one host's key would cosign for two witnesses, and count twice
            raise KeyInUseError(f"the Ed25519 key {sign[:16]}... is {holder}'s")
        now = int(time.time() * 1000)
        for rotation in self.cache.key_rotations:
            if rotation["node"] == node and rotation["until"] > now:
                raise BadRequestError(
                    f"{node}'s previous rotation is still in its window (until {rotation['until']} ms): "
                    "rotate again once it ended"
                )
        if self.ledger is None:
            raise BadRequestError("key rotations are recorded on the admin ledger, which this node does not home")
        until = now + window_ms
        payload: dict[str, Any] = {"node": node, "curve": curve, "sign": sign, "until": until, "via": via}
        if role in FOLLOWER_ROLES and history is not None and history.newest.sign:
            # What the replaced key had cosigned, read now: past it that key counts for nothing,
            # whatever time its holder stamps (16.6). What the witness cosigns with it until it
            # reads this record does not count either: it cosigns again with its new key then.
            if self.cosigned_by is None:
                raise NodeUnavailableError(f"{node}: this node cannot read what its key cosigned (no Redis)")
            try:
                payload["cosigned"] = self.cosigned_by(node, history.newest.sign)
            except REDIS_ERRORS as e:
                raise NodeUnavailableError(
                    f"{node}: what its key cosigned is unreadable, Redis unavailable ({e})"
                ) from None
        if role == "observer" and history is not None and history.newest.sign:
            # And what it had tallied: past those heights its tallies count for nothing either,
            # whatever at_ms its holder stamps; the observer signs its latest counts again (16.6).
            if self.tallied_by is None:
                raise NodeUnavailableError(f"{node}: this node cannot read what its key tallied (no Redis)")
            try:
                payload["tallied"] = self.tallied_by(node, history.newest.sign)
            except redis.exceptions.NoPermissionError as e:
                # A redis.acl made before this node read tallies: its user may not. The rotation
                # goes on stating nothing tallied, so the old key's tallies count nowhere (the
                # safe side: the observer signs its counts again with the new key), since the
                # rotation of a leaked key must not wait for an ACL upgrade.
                log.warning(
                    "rotation of %s: its tallies are unreadable here (%s); the old key's count nowhere "
                    "(run vledger keygen --cluster again to let the admin home read them)",
                    node,
                    e,
                )
                payload["tallied"] = {}
            except REDIS_ERRORS as e:
                raise NodeUnavailableError(
                    f"{node}: what its key tallied is unreadable, Redis unavailable ({e})"
                ) from None
        height = self._record("key_rotation", payload, author)
        return {"node": node, "curve": curve, "sign": sign, "until": until, "height": height}

    def _sign_holder(self, sign: str, node: str) -> str | None:
        """The other node that has had the Ed25519 key ``sign`` (its key files' or a rotation's), or None."""
        if sign == NO_SIGN_KEY:
            return None
        for rotation in self.cache.key_rotations:
            if rotation["node"] != node and rotation["sign"] == sign:
                return str(rotation["node"])
        for name in self.node_roles:
            history = self.history_of(name) if self.history_of is not None and name != node else None
            if history is not None and sign in history.sign_keys():
                return name
        return None

    def _node_keys(self) -> set[str]:
        """Every CURVE key a node of the cluster has had: its key files' and the rotations'."""
        keys = {r["curve"] for r in self.cache.key_rotations}
        if self.history_of is not None:
            for name in self.node_roles:
                history = self.history_of(name)
                if history is not None:
                    keys.update(g.curve for g in history.generations)
        return keys

    def _second_factor(self, command: str, args: Args, author: str, via: str) -> dict[str, Any]:
        """A new second factor for an admin account, recorded (never its secret) on the admin
        ledger: ``totp.enroll`` for one with none (the caller's own by default), ``totp.reset``
        for another admin's (yours is reset by another admin, or on a host)."""
        if self.factors is None:
            raise BadRequestError("this node keeps no second factors")
        if command == "totp.enroll":
            account = check_account_name(args.optional_text("account", max_length=64) or author)
        else:
            account = check_account_name(args.text("account", max_length=64))
            if account == author:
                raise ForbiddenError(OWN_RESET)
        held = self._accounts().accounts.get(account)
        if held is None:
            raise NoSuchAccountError(f"no account {account!r}")
        if held.role is not Role.ADMIN:
            raise BadRequestError(f"account {account!r} is not an admin: only admins have a second factor")
        in_redis = self.factors.store.state(account) is not None
        # The admin ledger's word too: a factor deleted from Redis (any ingest node's password)
        # was enrolled again as a first one, with no reset on the ledger (outsider o16).
        enrolled = in_redis or self.factors.enrolled(account)
        if command == "totp.enroll" and enrolled:
            raise AlreadyEnrolledError(f"account {account!r} has a second factor already: reset it instead")
        if command == "totp.reset" and not enrolled:
            raise NotEnrolledError(f"account {account!r} has no second factor to reset: enroll it instead")
        op = command.removeprefix("totp.")
        # A reset of a factor Redis lost puts a first one there: it is the ledger's reset all the same.
        enrollment = self.factors.enroll(account, RESET if in_redis else ENROLL)
        payload = {"account": account, "op": op, "via": via, SEALED_SHA256: enrollment.sealed_sha256}
        height = self._record("totp", payload, author)
        return {
            "account": account,
            "uri": enrollment.uri,
            "recovery_codes": list(enrollment.recovery_codes),
            "height": height,
        }

    def record_host_enrollments(self) -> None:
        """:meth:`_record_host_enrollments` between commands (the accounts cache's poll, every
        few seconds): until recorded, a host's enrollment is refused where the ledger names
        another factor, and Redis's word where it names none (review r24 F7). Skipped while a
        command runs (it records them first itself); never raises (the poll must go on)."""
        if not self._changing.acquire(blocking=False):
            return
        try:
            self._record_host_enrollments()
        except Exception:
            log.exception("the enrollments made on a host are not recorded now; the next poll tries again")
        finally:
            self._changing.release()

    def _record_host_enrollments(self) -> None:
        """Record on the admin ledger the enrollments made on a host since the last command
        or poll (``vledger admin bootstrap --totp`` reaches Redis, not the ledger): author and
        account the enrolled admin, ``via`` empty, ``sealed_sha256`` the secret Redis holds."""
        if self.factors is None or self.ledger is None:
            return
        accounts = self._accounts().accounts
        for account in self.factors.store.unrecorded():
            held = accounts.get(account)
            state = self.factors.store.state(account)
            sealed = totp.sealed_sha256(state[0]) if state is not None else ""
            # Anyone who writes Redis can name any account there: a record would then be authored
            # by an account that never ran anything. Only an enabled admin holding a factor is
            # what a host's bootstrap --totp enrolls.
            if held is None or held.role is not Role.ADMIN or not held.enabled or state is None:
                log.warning(
                    "an enrollment on a host of %.80r, no enabled admin with a second factor: not recorded", account
                )
            elif not self.factors.host_marked(account, state[0], self.cache.second_factor_recorded_at(account)):
                # Only the admin home's and the admin's Redis users write the set, but a password is
                # not a host: a mark under the key of `second-factor.seal` says a host made it, for
                # this very sealed secret, within the hour (review r25 F1).
                log.error(
                    "an enrollment on a host of %.80r carries no mark of a host for the sealed secret Redis "
                    "holds (written by a Redis user, over an hour old, or older than its latest record): not recorded",
                    account,
                )
            elif self.cache.second_factor_seal_recorded(sealed):
                # A host seals a new random secret: one the ledger named before is an old factor a
                # Redis writer put back (and marked as a host's), which a record would make good again.
                log.error(
                    "an enrollment on a host of %.80r holds a sealed secret the admin ledger recorded before "
                    "(put back in Redis): not recorded",
                    account,
                )
            else:
                payload = {"account": account, "op": "enroll", "via": "", SEALED_SHA256: sealed}
                self.ledger.append("totp", payload, account)
            self.factors.store.recorded(account)

    def _account_change(self, command: str, args: Args, author: str, via: str) -> tuple[dict[str, Any], int]:
        registry = self.registry
        snapshot = self._accounts()
        if command == "key.revoke":
            key = _key(args)
            owner = snapshot.owners.get(key)
            if owner is None:
                raise NoSuchKeyError(f"key {key} is bound to no account")
            expected = args.optional_text("account", max_length=64)
            if expected is not None and owner != expected:  # the caller named whose key it is
                raise NoSuchKeyError(f"key {key} is not bound to account {expected!r}")
            keys = sorted(k for k in snapshot.accounts[owner].keys if k != key)
            _keep_an_admin(snapshot.accounts, owner, dataclasses.replace(snapshot.accounts[owner], keys=tuple(keys)))
            payload = {"account": owner, "op": "revoke", "key": key, "keys": keys, "via": via}
            height = self._record("key", payload, author)
            return {"key": key, "height": height}, self._cached(height, lambda: registry.revoke_key(key))
        account = check_account_name(args.text("account", max_length=64))
        held = snapshot.accounts.get(account)
        result: dict[str, Any] = {"account": account}
        if command == "account.add":
            role = check_role(args.text("role", max_length=16))
            if held is not None:
                raise AccountExistsError(f"account {account!r} already exists")
            after: Account | None = Account(account, role, True, ())
            change: Callable[[], int] = lambda: registry.add_account(account, role.value)  # noqa: E731
        elif command not in ("account.remove", "account.enable", "account.disable", "key.add"):
            raise BadRequestError(f"{command!r} is not an account command")
        elif held is None:
            raise NoSuchAccountError(f"no account {account!r}")
        elif command == "account.remove":
            after, change = None, lambda: self._remove(account)
        elif command in ("account.enable", "account.disable"):
            enabled = command == "account.enable"
            after = dataclasses.replace(held, enabled=enabled)
            change = (lambda: registry.enable(account)) if enabled else (lambda: registry.disable(account))
        else:
            key = _key(args)
            owner = snapshot.owners.get(key)
            if owner is not None and owner != account:
                raise KeyInUseError(f"key {key} is already bound to another account")
            after = dataclasses.replace(held, keys=tuple(sorted({*held.keys, key})))
            result["key"] = key
            if owner is None:
                payload = {"account": account, "op": "add", "key": key, "keys": list(after.keys), "via": via}
                result["height"] = self._record("key", payload, author)
            return result, self._cached(result.get("height"), lambda: registry.add_key(account, key))
        _keep_an_admin(snapshot.accounts, account, after)
        if after != held:  # enabling an enabled account records nothing
            op = command.removeprefix("account.")
            result["height"] = self._record("account", account_payload(op, after, account, via), author)
        return result, self._cached(result.get("height"), change)

    def _cached(self, height: int | None, change: Callable[[], int]) -> int:
        """Make ``change`` to Redis's accounts; the accounts version. Once the admin ledger holds
        the change (``height``), Redis disagreeing with it (an entry written there by hand) does
        not fail the command: the nodes enforce the record, and Redis's entry is only logged."""
        try:
            return change()
        except (AccountError, *REDIS_ERRORS) as e:
            # A Redis key of the wrong type (written by hand) fails the change like a refusal: the
            # record is the truth, the nodes enforce it, and the home's next poll repairs the key;
            # a timeout or a dropped connection too (review r15 F-D): a retry would be refused.
            if height is None:
                raise
            log.warning(
                "the admin record at %d is made, but Redis's accounts disagree with the admin ledger (%s): %s",
                height,
                getattr(e, "code", "redis"),
                getattr(e, "message", e),
            )
            return self.registry.version()

    def _remove(self, account: str) -> int:
        """Remove the account and its second factor: a new account of that name starts with none."""
        version = self.registry.remove_account(account)
        if self.factors is not None:
            self.factors.store.forget(account)
        return version

    def list_accounts(self) -> list[dict[str, Any]]:
        accounts = self._accounts().accounts
        return [
            {"account": a.name, "role": a.role.value, "enabled": a.enabled, "keys": list(a.keys)}
            for a in (accounts[name] for name in sorted(accounts))
        ]


def _admins(accounts: Mapping[str, Account]) -> list[str]:
    """The accounts that can send an admin command: enabled admins holding a key."""
    return [a.name for a in accounts.values() if a.role is Role.ADMIN and a.enabled and a.keys]


def _keep_an_admin(accounts: Mapping[str, Account], name: str, after: Account | None) -> None:
    """Refuse the change that leaves no admin able to send a command: the cluster would
    then answer nobody's admin command, and a refused key hears nothing (it looks down)."""
    changed = {**accounts, name: after} if after is not None else {k: v for k, v in accounts.items() if k != name}
    if _admins(accounts) and not _admins(changed):
        raise LastAdminError(
            f"account {name!r} is the last enabled admin holding a key: "
            "add or enable another admin (and give it a key) first"
        )


def _key(args: Args) -> str:
    return check_public_key(args.text("key", max_length=40))
