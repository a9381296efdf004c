"""The cluster's own nodes as callers: a replica reads from its home nodes with its node key.

Every node named in the configuration whose public key is in the key directory may use
the read commands of every other node and subscribe to every feed, without an account in
the registry: the configuration and its key directory are what make a host a member.
Other subscribers (an observer run by a third party) are accounts of the ``replica`` or
``observer`` role, added by an admin like any other account.
"""

from __future__ import annotations

import logging

from ..broker.accounts import AccountCache, AccountRegistry, AccountsSnapshot, Role
from ..broker.curve import AllowList
from ..broker.keys import load_public
from ..config.cluster import ClusterConfig
from ..node.errors import KeyMaterialError
from .service import Caller

log = logging.getLogger(__name__)

FEED_ROLES = frozenset((Role.REPLICA, Role.OBSERVER))


def member_callers(config: ClusterConfig, me: str) -> dict[str, Caller]:
    """z85 public key -> the Caller of each node of the configuration (role ``replica``).

    The node itself is one of them (``me`` is kept for the log), so that a health check on its
    host can ask it ``hello`` with the node's own key, and no other secret need be there.
    """
    callers = {}
    for node in config.nodes.values():
        path = config.public_key_path(node.name)
        try:
            key = load_public(path)
        except KeyMaterialError as e:
            log.warning("node %s: no usable public key (%s); it cannot reach this node", node.name, e)
            continue
        callers[key] = Caller(node.name, Role.REPLICA.value, key)
    return callers


def feed_keys(snapshot: AccountsSnapshot, members: dict[str, Caller]) -> frozenset[str]:
    """Who may subscribe to a feed: the members, and enabled accounts of the replica or observer role."""
    accounts = {key for key in snapshot.allowed_keys() if (owner := snapshot.lookup(key)) and owner.role in FEED_ROLES}
    return frozenset(members) | accounts


class MemberGates:
    """A node's two allow-lists, kept current from the account registry: its request socket
    admits every enabled account and the members; its feed, the members and the accounts of
    the replica or observer role (:func:`feed_keys`)."""

    def __init__(self, config: ClusterConfig, me: str) -> None:
        self.members = member_callers(config, me)
        self.requests = AllowList()
        self.feed = AllowList()

    def account_cache(self, registry: AccountRegistry, node: str, poll_interval: float) -> AccountCache:
        """The node's AccountCache, wired to replace both lists at each change of the accounts."""

        def changed(keys: frozenset[str]) -> None:
            self.requests.replace(keys | self.members.keys())
            self.feed.replace(feed_keys(cache.snapshot, self.members))

        cache = AccountCache(registry, node, on_change=changed, poll_interval=poll_interval)
        return cache


def node_keys(config: ClusterConfig) -> dict[str, str]:
    """The public keys of the ingest nodes this node can name in a not_home answer."""
    keys = {}
    for node in config.ingest_nodes():
        path = config.public_key_path(node.name)
        if path.is_file():
            keys[node.name] = load_public(path)
    return keys
