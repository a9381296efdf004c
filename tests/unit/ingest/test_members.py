"""MemberGates through a key rotation: who is admitted, and how the other nodes are reached."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

from vledger.broker.accounts import AccountCache, AccountsSnapshot
from vledger.broker.client import Client, NodeAddress
from vledger.broker.keys import generate, new_keypair
from vledger.config.cluster import ClusterConfig, cluster_from_mapping
from vledger.ingest.members import EndpointKeys, MemberGates, now_ms


class FakeCache:
    """What MemberGates reads of an AccountCache: the snapshot and the key rotations."""

    def __init__(self) -> None:
        self.snapshot = AccountsSnapshot.empty()
        self.key_rotations: tuple[dict[str, Any], ...] = ()


def config(tmp_path: Path) -> ClusterConfig:
    data: dict[str, Any] = {
        "cluster": {"name": "local", "default_home": "ingest-1", "keys": "keys"},
        "nodes": {
            "ingest-1": {
                "role": "ingest",
                "port": 7101,
                "pub_port": 7201,
                "rotation_port": 7301,
                "feed_rotation_port": 7401,
            },
            "replica-1": {"role": "replica", "port": 7111},
        },
    }
    made = cluster_from_mapping(data, tmp_path / "cluster.toml")
    for name in made.nodes:
        generate(made.keys_dir, name)
    return made


def test_during_a_window_both_keys_are_members_and_after_it_only_the_new_one(tmp_path: Path) -> None:
    cluster = config(tmp_path)
    gates = MemberGates(cluster, "replica-1")
    old = gates.address_of("ingest-1")
    assert old == NodeAddress("tcp://127.0.0.1:7101", old.key)  # no rotation: no second endpoint
    cache = FakeCache()
    gates.follow(cast(AccountCache, cache))
    client = Client(old, new_keypair())
    gates.keep_addressed(client, "ingest-1")
    endpoint_keys = EndpointKeys(gates, ["ingest-1"])
    heard: list[str] = []
    gates.on_rotation(lambda histories: heard.append(histories["ingest-1"].newest.curve))
    assert gates.feed_address_of("ingest-1") == NodeAddress("tcp://127.0.0.1:7201", old.key)
    new = new_keypair().public
    until = now_ms() + 600
    rotation = {"node": "ingest-1", "curve": new, "sign": "1" * 64, "until": until, "accepted": now_ms()}
    cache.key_rotations = (rotation,)
    try:
        gates.apply()
        assert {old.key, new} <= gates.members.keys() and {old.key, new} <= gates.requests.keys()
        assert gates.members[new].account == "ingest-1"
        # A client of the node: the new key, on both endpoints; a not_home answer names the old
        # key, the one its endpoint still serves.
        assert client.node == NodeAddress("tcp://127.0.0.1:7101", new, ("tcp://127.0.0.1:7301",))
        assert dict(endpoint_keys) == {"ingest-1": old.key}
        # Its feed likewise: the new key on its pub_port and its feed_rotation_port.
        assert gates.feed_address_of("ingest-1") == NodeAddress("tcp://127.0.0.1:7201", new, ("tcp://127.0.0.1:7401",))
        assert heard == [new]  # every hook hears each change
        deadline = time.monotonic() + 5  # the timer at the window's end drops the old key
        while old.key in gates.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert old.key not in gates.requests
        assert time.time() * 1000 >= until
        assert old.key not in gates.members and new in gates.members and new in gates.feed
        assert dict(endpoint_keys) == {"ingest-1": new}
        # Its feed on pub_port alone again: on both, every message would come twice.
        assert gates.feed_address_of("ingest-1") == NodeAddress("tcp://127.0.0.1:7201", new)
        assert heard[-1] == new and len(heard) >= 2  # the hooks heard the window's end too
        assert gates.address_of("replica-1").also == ()  # the other node's keys did not move
    finally:
        gates.stop()
        client.close()
