"""The cluster's own nodes as callers: a replica reads from its home nodes with its node key.

Every node named in the configuration whose public key is in the key directory may use
the read commands of every other node and subscribe to every feed, without an account in
the registry: the configuration and its key directory are what make a host a member. A node
whose keys rotated (the admin ledger's ``key_rotation`` records, docs/PROTOCOL.md 16.6) is
admitted with its new key, and with its old one until the rotation's window ends.
Other subscribers (an observer run by a third party) are accounts of the ``replica`` or
``observer`` role, added by an admin like any other account.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from ..broker.accounts import AccountCache, AccountRegistry, AccountsSnapshot, Role
from ..broker.admin_copy import AdminSource
from ..broker.client import Client, NodeAddress
from ..broker.curve import AllowList
from ..broker.keys import load_public
from ..broker.signing import load_verify_key, signing_key_paths
from ..config.cluster import ClusterConfig
from ..node.errors import KeyMaterialError, SettingsError
from ..node.node_key_rotation import KeyHistory, key_histories
from .service import Caller

log = logging.getLogger(__name__)

FEED_ROLES = frozenset((Role.REPLICA, Role.OBSERVER))


def original_keys(config: ClusterConfig) -> dict[str, tuple[str, str]]:
    """node -> its generation-0 keys from the key directory: (Z85 CURVE key, hex Ed25519 key or
    ``""`` for a node that signs nothing); a node without a usable ``.key`` file is left out."""
    keys = {}
    for node in config.nodes.values():
        try:
            curve = load_public(config.public_key_path(node.name))
        except KeyMaterialError as e:
            log.warning("node %s: no usable public key (%s); it cannot reach this node", node.name, e)
            continue
        sign_path = signing_key_paths(config.keys_dir, node.name)[1]
        try:
            sign = load_verify_key(sign_path).public_hex if sign_path.is_file() else ""
        except KeyMaterialError:
            sign = ""
        keys[node.name] = (curve, sign)
    return keys


def member_callers(histories: Mapping[str, KeyHistory], now_ms: int) -> dict[str, Caller]:
    """z85 public key -> the Caller of each node of the configuration (role ``replica``), for
    every CURVE key of the node in force at ``now_ms`` (two during a rotation's window).

    The node itself is one of them, so that a health check on its host can ask it ``hello``
    with the node's own key, and no other secret need be there.
    """
    return {
        key: Caller(node, Role.REPLICA.value, key)
        for node, history in histories.items()
        for key in history.curve_keys(now_ms)
    }


def feed_keys(snapshot: AccountsSnapshot, members: Mapping[str, Caller]) -> frozenset[str]:
    """Who may subscribe to a feed: the members, and enabled accounts of the replica or observer role."""
    accounts = {key for key in snapshot.allowed_keys() if (owner := snapshot.lookup(key)) and owner.role in FEED_ROLES}
    return frozenset(members) | accounts


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class MemberGates:
    """A node's two allow-lists, kept current from the account registry and the admin
    ledger's key rotations: its request socket admits every enabled account and the members
    (each node's keys in force); its feed, the members and the accounts of the replica or
    observer role (:func:`feed_keys`). When a rotation's window ends, a timer drops the old key.

    Each hook added by :meth:`on_rotation` hears every node's KeyHistory after each change.
    """

    def __init__(self, config: ClusterConfig, me: str) -> None:
        self.config = config
        self.me = me
        self._clients: list[tuple[Client, str]] = []  # clients of other nodes, kept on their newest key
        self.originals = original_keys(config)
        self.histories = key_histories(self.originals, ())
        # Changed in place, never replaced: CachedAccounts holds this very dict.
        self.members = member_callers(self.histories, now_ms())
        self.requests = AllowList()
        self.feed = AllowList()
        self._hooks: list[Callable[[Mapping[str, KeyHistory]], None]] = []
        self._cache: AccountCache | None = None
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._stopped = False

    def address_of(self, name: str) -> NodeAddress:
        """How to reach node ``name`` now: its newest CURVE key in force, on its endpoint and,
        once its keys rotated, its rotation endpoint (docs/PROTOCOL.md 16.6).

        Raises SettingsError for a node the configuration does not have, KeyMaterialError for
        one whose key is in neither the key directory nor the admin ledger.
        """
        node = self.config.node(name)
        return self._reach(name, node.endpoint, node.rotation_endpoint)

    def feed_address_of(self, name: str) -> NodeAddress:
        """Where to subscribe to node ``name``'s feed now (PROTOCOL 10.1, 16.6): its newest CURVE
        key in force on its ``pub_port`` and, during a rotation's window, its
        ``feed_rotation_port``; only during it, since a subscriber on both gets every message
        twice once both serve the new key. Raises as :meth:`address_of`, and SettingsError for a
        node without a feed."""
        node = self.config.node(name)
        if node.feed_endpoint is None:
            raise SettingsError(f"node {name} publishes no feed")
        return self._reach(name, node.feed_endpoint, node.feed_rotation_endpoint, window_only=True)

    def _reach(
        self, name: str, endpoint: str, rotation_endpoint: str | None, *, window_only: bool = False
    ) -> NodeAddress:
        history = self.histories.get(name)
        if history is None:
            raise KeyMaterialError(f"node {name}: no public key in {self.config.keys_dir} nor on the admin ledger")
        now = now_ms()
        newest = history.in_force(now)[0]
        rotated = history.newest_curve_generation(now) > 0 and (not window_only or history.window_end(now) is not None)
        also = (rotation_endpoint,) if rotated and rotation_endpoint is not None else ()
        return NodeAddress(endpoint, newest.curve, also)

    def on_rotation(self, hook: Callable[[Mapping[str, KeyHistory]], None]) -> None:
        """Call ``hook`` with every node's KeyHistory after each change (any thread), in the
        order the hooks were added."""
        self._hooks.append(hook)

    def keep_addressed(self, client: Client, name: str) -> None:
        """Point ``client`` at node ``name`` now and after each of its key rotations."""
        client.node = self.address_of(name)
        with self._lock:
            self._clients.append((client, name))

    def account_cache(
        self,
        registry: AccountRegistry,
        node: str,
        poll_interval: float,
        admin: AdminSource,
        on_unbacked: Callable[[list[str]], None] | None = None,
        on_unproven: Callable[[str | None], None] | None = None,
    ) -> AccountCache:
        """The node's AccountCache, enforcing the accounts of the admin ledger ``admin`` gives,
        wired to replace both lists at each change of the accounts (``on_unbacked``,
        ``on_unproven``: see AccountCache)."""

        def changed(keys: frozenset[str]) -> None:
            self.apply()

        cache = AccountCache(
            registry,
            node,
            on_change=changed,
            poll_interval=poll_interval,
            admin=admin,
            on_unbacked=on_unbacked,
            on_unproven=on_unproven,
        )
        self.requests.on_unknown(cache.catch_up)
        return self.follow(cache)

    def follow(self, cache: AccountCache) -> AccountCache:
        """Take the accounts and key rotations from ``cache`` (whose changes call :meth:`apply`)."""
        self._cache = cache
        return cache

    def apply(self) -> None:
        """Make both lists and the members what the accounts and key rotations say now."""
        with self._lock:
            if self._stopped:
                return
            cache = self._cache
            rotations = cache.key_rotations if cache is not None else ()
            now = now_ms()
            self.histories = key_histories(self.originals, rotations)
            members = member_callers(self.histories, now)
            self.members.update(members)  # the new keys first, then the old ones go
            for key in [k for k in self.members if k not in members]:
                del self.members[key]
            if cache is not None:
                self.requests.replace(cache.snapshot.allowed_keys() | self.members.keys())
                self.feed.replace(feed_keys(cache.snapshot, self.members))
            self._schedule(now)
            histories = self.histories
            for client, name in self._clients:
                # Read by the client's own thread at its next call: it then connects anew.
                client.node = self.address_of(name)
        for hook in list(self._hooks):
            hook(histories)

    def _schedule(self, now: int) -> None:
        ends = [end for history in self.histories.values() if (end := history.window_end(now)) is not None]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if ends:
            # A little after the end, so that the old key is out of force when the timer runs.
            self._timer = threading.Timer((min(ends) - now + 1) / 1000, self.apply)
            self._timer.daemon = True
            self._timer.start()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None


class EndpointKeys(Mapping[str, str]):
    """node name -> the CURVE key its endpoint serves now (the old key during a rotation's
    window, PROTOCOL 16.6), for the nodes ``names``: what a not_home answer names, so that a
    client that follows it reaches the node on that endpoint with that key."""

    def __init__(self, gates: MemberGates, names: Iterable[str]) -> None:
        self.gates = gates
        self.names = tuple(names)

    def __getitem__(self, name: str) -> str:
        history = self.gates.histories.get(name) if name in self.names else None
        if history is None:
            raise KeyError(name)
        return history.in_force(now_ms())[-1].curve

    def __iter__(self) -> Iterator[str]:
        return iter(n for n in self.names if n in self.gates.histories)

    def __len__(self) -> int:
        return sum(1 for _ in self)
