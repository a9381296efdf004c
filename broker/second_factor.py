"""Admins' second factors in Redis, shared by every ingest node (docs/PROTOCOL.md 16.5).

Layout, for namespace ``ns`` (``vledger`` by default), every key with the hash tag ``{totp}``
(the enrollment script and the transaction that forgets a factor touch an account's keys and
the unrecorded set together: one Redis Cluster slot; broker/redis_keys.py):

* ``ns:{totp}:account:<account>``: a hash: ``secret``, the account's TOTP secret sealed with the
  cluster's second-factor key (vledger.node.totp.seal_secret; never the secret itself), and
  ``last``, the last time step a code of it was accepted (-1: none yet);
* ``ns:{totp}:recovery:<account>``: the set of the digests (HMACs under a key only the ingest
  nodes' hosts hold, vledger.node.totp.recovery_digest) of its unused recovery codes;
* ``ns:{totp}:unrecorded``: accounts enrolled on a host (``vledger admin bootstrap --totp``)
  whose enrollment the admin ledger's home has not recorded yet, each member ``<account>
  <mark>`` (vledger.node.totp.host_mark; a bare ``<account>`` is of before the mark);
* ``ns:{totp}:failures:<account>``: how many wrong six-digit codes it sent since the first of
  them, expiring that many seconds after the first (vledger.node.totp.FAILURE_WINDOW_SECONDS);
* ``ns:{totp}:session:<digest>``: a second-factor session (``totp.session``) by the SHA-256 of
  its token (vledger.node.totp.session_digest), a hash of the ``account`` and the CURVE
  ``key`` it was opened for, the ``secret`` (sealed) its code was checked against, when it
  ``expires`` (ms) and the ``mac`` of all these (vledger.node.totp.session_mac), expiring
  with the session (vledger.node.totp.SESSION_SECONDS).

Every ingest node's Redis user writes these keys: what the nodes trust of them is what a host
key vouches for (the sealed secret, recovery digests and session MACs) or the admin ledger
states (whether an account is enrolled, ingest/second_factor.py). A Redis writer can still
deny service (lock an account's codes out, delete its factor): docs/PROTOCOL.md 16.5.

Every step that must not happen twice is one atomic Redis operation, because two ingest
nodes may receive the same code at once: accepting a time step is a Lua script that moves
``last`` forward only if the step is later (and the secret is still the one the code was
checked against), consuming a recovery code is one SREM. Nothing here logs a secret.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..node.errors import AccountError, AlreadyEnrolledError, NotEnrolledError
from .redis_functions import RedisFunction
from .redis_keys import group_key

ENROLL = "enroll"  # a first second factor: refused if the account has one
RESET = "reset"  # a new second factor in place of the account's: refused if it has none
REPLACE = "replace"  # either (the host's bootstrap: the way back in)
SESSION_FIELDS = ("account", "key", "secret", "expires", "mac")

# The atomic steps (totp_enroll, totp_use_step, totp_failures, totp_failed) are functions of
# broker/functions.lua (broker/redis_functions.py).


class SecondFactorStore:
    """The sealed TOTP secrets, used steps and recovery digests of every admin account."""

    def __init__(self, client: Any, namespace: str = "vledger") -> None:
        self.client = client
        self._prefix = group_key(namespace, "totp", "account:")
        self._recovery_prefix = group_key(namespace, "totp", "recovery:")
        self._unrecorded = group_key(namespace, "totp", "unrecorded")
        self._failures_prefix = group_key(namespace, "totp", "failures:")
        self._session_prefix = group_key(namespace, "totp", "session:")
        self._enroll = RedisFunction(client, "totp_enroll")
        self._use_step = RedisFunction(client, "totp_use_step")
        self._failed = RedisFunction(client, "totp_failed")
        self._failures = RedisFunction(client, "totp_failures")

    def _keys(self, account: str) -> list[str]:
        return [
            self._prefix + account,
            self._recovery_prefix + account,
            self._unrecorded,
            self._failures_prefix + account,
        ]

    def enroll(self, account: str, sealed: bytes, digests: tuple[str, ...], mode: str, mark: str = "") -> None:
        """Give ``account`` this sealed secret and these recovery digests, forgetting any it had
        (and its used steps). ``mode`` :data:`ENROLL` raises AlreadyEnrolledError when it has
        one, :data:`RESET` NotEnrolledError when it has none, :data:`REPLACE` takes either and
        marks the account as enrolled on a host (not yet on the admin ledger), with ``mark``."""
        member = f"{account} {mark}" if mark else account
        status = self._enroll(keys=self._keys(account), args=[sealed, mode, member, *digests])
        status = status.decode() if isinstance(status, bytes) else str(status)
        if status == "already_enrolled":
            raise AlreadyEnrolledError(f"account {account!r} has a second factor already: reset it instead")
        if status == "not_enrolled":
            raise NotEnrolledError(f"account {account!r} has no second factor to reset: enroll it instead")
        if status != "ok":
            raise AccountError(f"unexpected answer from Redis: {status!r}")

    def state(self, account: str) -> tuple[bytes, int] | None:
        """The account's sealed secret and last used step, or None when it has no second factor."""
        sealed, last = self.client.hmget(self._prefix + account, ["secret", "last"])
        if sealed is None:
            return None
        return bytes(sealed), int(last if last is not None else -1)

    def use_step(self, account: str, sealed: bytes, step: int) -> bool:
        """Accept ``step`` for ``account``, atomically: False when a code of this step or a later
        one was accepted already (a replay, on this node or another) or the secret changed."""
        return bool(self._use_step(keys=[self._prefix + account], args=[sealed, str(step)]))

    def failures(self, account: str, window_seconds: int) -> int:
        """How many wrong codes the account sent in its current failure window (at most
        ``window_seconds`` long, whatever was written there)."""
        return int(self._failures(keys=[self._failures_prefix + account], args=[str(window_seconds)]))

    def failed(self, account: str, window_seconds: int) -> int:
        """Count one more wrong code (the window starts at the first); the count."""
        return int(self._failed(keys=[self._failures_prefix + account], args=[str(window_seconds)]))

    def succeeded(self, account: str) -> None:
        self.client.delete(self._failures_prefix + account)

    def use_recovery(self, account: str, digest: str) -> bool:
        """Consume the recovery code whose digest is ``digest``: True once, False after."""
        return bool(self.client.srem(self._recovery_prefix + account, digest))

    def drop_recovery(self, account: str, keep: Callable[[str], bool]) -> int:
        """Remove the account's recovery digests that ``keep`` refuses; how many."""
        key = self._recovery_prefix + account
        members = [bytes(m).decode("utf-8", "replace") for m in self.client.smembers(key)]
        dropped = [m for m in members if not keep(m)]
        return int(self.client.srem(key, *dropped)) if dropped else 0

    def recovery_left(self, account: str) -> int:
        return int(self.client.scard(self._recovery_prefix + account))

    def open_session(self, digest: str, fields: dict[str, bytes | str], seconds: int) -> None:
        """Keep the session whose token has ``digest`` for ``seconds``: its ``fields`` (account,
        key, secret, expires, mac: what vledger.ingest.second_factor checks)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self._session_prefix + digest, mapping=fields)
        pipe.expire(self._session_prefix + digest, seconds)
        pipe.execute()

    def session(self, digest: str) -> dict[str, bytes] | None:
        """The fields of the session whose token has ``digest``, None when none is kept (or
        one lacks a field): checked by the caller, since anyone who writes Redis may write them."""
        values = self.client.hmget(self._session_prefix + digest, SESSION_FIELDS)
        if any(value is None for value in values):
            return None
        return {name: bytes(value) for name, value in zip(SESSION_FIELDS, values, strict=True)}

    def forget(self, account: str) -> bool:
        """Remove the account's second factor (the account was removed); whether it had one."""
        members = self._members().get(account, [])
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self._prefix + account, self._recovery_prefix + account, self._failures_prefix + account)
        if members:
            pipe.srem(self._unrecorded, *members)
        removed, *_ = pipe.execute()
        return bool(removed)

    def unrecorded(self) -> list[str]:
        """The accounts enrolled on a host since the admin ledger last recorded them, sorted."""
        return sorted(self._members())

    def marks(self, account: str) -> list[str]:
        """The marks (vledger.node.totp.host_mark) beside ``account`` in the unrecorded set."""
        return [member.partition(" ")[2] for member in self._members().get(account, []) if " " in member]

    def recorded(self, account: str) -> None:
        members = self._members().get(account, [])
        if members:
            self.client.srem(self._unrecorded, *members)

    def _members(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for raw in self.client.smembers(self._unrecorded):
            member = raw.decode() if isinstance(raw, bytes) else str(raw)
            found.setdefault(member.partition(" ")[0], []).append(member)
        return found
