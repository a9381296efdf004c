"""The ingest node's side of the account registry: who a key is, and the admin commands."""

from __future__ import annotations

from typing import Any

from ..broker.accounts import AccountCache, AccountRegistry, AccountsSnapshot
from ..broker.keys import check_public_key
from ..node.errors import ApplyTimeoutError, BadRequestError
from ..node.wire import Args
from .service import Caller


class CachedAccounts:
    """Looks keys up in the node's AccountCache: no Redis round trip per request.

    A snapshot of the accounts never changes, so each key's Caller is worked out once per
    snapshot; a new snapshot (a key revoked, an account disabled) starts afresh. One thread.
    """

    def __init__(self, cache: AccountCache, size: int = 4096, members: dict[str, Caller] | None = None) -> None:
        self.cache = cache
        self.size = size
        self.members = members or {}  # the cluster's other nodes (vledger.ingest.members)
        self._snapshot: AccountsSnapshot | None = None
        self._callers: dict[str, Caller | None] = {}

    def lookup(self, key: str) -> Caller | None:
        snapshot = self.cache.snapshot
        if snapshot is not self._snapshot or len(self._callers) >= self.size:
            self._snapshot = snapshot
            self._callers = {}
        try:
            return self._callers[key]
        except KeyError:
            pass
        owner = snapshot.lookup(key)
        if owner is None:
            caller = self.members.get(key)
        else:
            caller = Caller(owner.account, owner.role.value, key) if owner.enabled else None
        self._callers[key] = caller
        return caller


class RegistryAdmin:
    """Runs an admin command on the registry and answers once every live ingest node applied it,
    so that a revoked key is refused on every node from its next request."""

    def __init__(self, registry: AccountRegistry, cache: AccountCache, nodes: list[str], wait_ms: int) -> None:
        self.registry = registry
        self.cache = cache
        self.nodes = nodes
        self.wait_seconds = wait_ms / 1000

    def apply(self, command: str, args: Args) -> dict[str, Any]:
        registry = self.registry
        if command == "key.revoke":
            key = _key(args)
            version = registry.revoke_key(key)
            result: dict[str, Any] = {"key": key}
        else:
            account = args.text("account", max_length=64)
            result = {"account": account}
            if command == "account.add":
                version = registry.add_account(account, args.text("role", max_length=16))
            elif command == "account.remove":
                version = registry.remove_account(account)
            elif command == "account.enable":
                version = registry.enable(account)
            elif command == "account.disable":
                version = registry.disable(account)
            elif command == "key.add":
                key = _key(args)
                version = registry.add_key(account, key)
                result["key"] = key
            else:
                raise BadRequestError(f"{command!r} is not an account command")
        self.cache.refresh()
        live = registry.live_nodes(within=max(30.0, 6 * self.cache.poll_interval)) & set(self.nodes)
        try:
            registry.wait_applied(version, sorted(live), self.wait_seconds)
            result["pending"] = []
        except ApplyTimeoutError as e:
            # The change is made; say which nodes have not confirmed it yet rather than fail.
            result["pending"] = sorted(e.lagging)
        result["version"] = version
        return result

    def list_accounts(self) -> list[dict[str, Any]]:
        return [
            {"account": a.name, "role": a.role.value, "enabled": a.enabled, "keys": list(a.keys)}
            for a in self.registry.list_accounts()
        ]


def _key(args: Args) -> str:
    return check_public_key(args.text("key", max_length=40))
