"""The cluster configuration: topology, feeds and followers, and errors that name the file and key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from vledger.config.cluster import HttpSettings, ReplicationSettings, cluster_from_mapping, load_cluster
from vledger.node.errors import SettingsError

REPO_CONFIG = Path(__file__).resolve().parents[3] / "config" / "cluster.toml"

BASE: dict[str, Any] = {
    "cluster": {"name": "t", "keys": "keys", "data": "data", "default_home": "in-1"},
    "nodes": {
        "in-1": {"role": "ingest", "port": 7001, "pub_port": 7101},
        "in-2": {"role": "ingest", "port": 7002, "pub_port": 7102},
        "rep-1": {"role": "replica", "port": 7011},
    },
}


def config(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    for path, value in changes.items():
        table = data
        *parents, last = path.split("__")
        for key in parents:
            table = table.setdefault(key, {})
        if value is None:
            del table[last]
        else:
            table[last] = value
    return data


def load(data: dict[str, Any]) -> Any:
    return cluster_from_mapping(data, Path("/etc/vledger/cluster.toml"))


def refused(data: dict[str, Any]) -> str:
    with pytest.raises(SettingsError) as caught:
        load(data)
    message = str(caught.value)
    assert message.startswith("/etc/vledger/cluster.toml"), message
    return message


def test_the_local_default_topology_loads() -> None:
    cluster = load_cluster(REPO_CONFIG)
    assert [n.name for n in cluster.nodes_of("ingest")] == ["ingest-1", "ingest-2"]
    assert [n.name for n in cluster.nodes_of("replica")] == ["replica-1", "replica-2", "replica-3"]
    assert all(n.feed_endpoint is not None for n in cluster.nodes_of("ingest"))
    assert all(n.follow == ("ingest-1", "ingest-2") for n in cluster.nodes_of("replica"))
    assert cluster.replication.max_hops == 1


def test_a_replica_follows_every_ingest_node_by_default() -> None:
    cluster = load(config())
    assert cluster.node("rep-1").follow == ("in-1", "in-2")
    assert cluster.node("rep-1").feed_endpoint is None
    assert cluster.node("in-1").feed_endpoint == "tcp://127.0.0.1:7101"
    assert cluster.replication == ReplicationSettings()


def test_a_relay_publishes_and_others_follow_it() -> None:
    cluster = load(
        config(
            **{
                "nodes__rep-2": {"role": "replica", "port": 7012, "follow": ["rep-1"]},
                "nodes__rep-1__pub_port": 7111,
                "replication": {"max_hops": 2},
            }
        )
    )
    assert cluster.node("rep-2").follow == ("rep-1",)
    assert cluster.node("rep-1").feed_endpoint == "tcp://127.0.0.1:7111"
    assert cluster.replication.max_hops == 2


def test_a_node_may_bind_another_address_than_the_one_others_dial() -> None:
    cluster = load(config(**{"nodes__in-1__bind": "0.0.0.0"}))
    node = cluster.node("in-1")
    assert node.endpoint == "tcp://127.0.0.1:7001" and node.bind_endpoint == "tcp://0.0.0.0:7001"
    assert node.bind_feed_endpoint == "tcp://0.0.0.0:7101"
    assert cluster.node("in-2").bind_endpoint == cluster.node("in-2").endpoint


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"nodes__in-1__pub_port": None}, "nodes.in-1.pub_port: an ingest node publishes"),
        ({"nodes__in-1__pub_port": 7002}, "nodes.in-2.port: 127.0.0.1:7002 is already used by in-1.pub_port"),
        ({"nodes__in-1__pub_port": 0}, "nodes.in-1.pub_port: expected a port number"),
        ({"nodes__rep-1__follow": ["nobody"]}, "nodes.rep-1.follow: 'nobody' is not a node"),
        ({"nodes__rep-1__follow": ["rep-1"]}, "nodes.rep-1.follow: a node cannot follow itself"),
        ({"nodes__rep-1__follow": "in-1"}, "nodes.rep-1.follow: expected a list"),
        ({"nodes__in-2__follow": ["in-1"]}, "nodes.in-2.follow: only a replica or an observer follows"),
        (
            {"nodes__rep-1__role": "observer", "nodes__rep-1__pub_port": 7111},
            "only ingest and replica nodes publish a feed, not the observer role",
        ),
        (
            {"nodes__rep-2": {"role": "replica", "port": 7012, "follow": ["rep-1"]}},
            "rep-1' is not a node of [nodes] with a pub_port",
        ),
        ({"nodes__rep-1__role": "auditor"}, "nodes.rep-1.role: 'auditor' is not one of"),
        ({"replication": {"max_hops": 0}}, "replication.max_hops: expected a positive integer"),
        ({"replication": {"hops": 2}}, "replication.hops: unknown key"),
        ({"replication": {"catch_up_checker": 1}}, "replication.catch_up_checker: expected true or false, got 1"),
        ({"cluster__production": "yes"}, "cluster.production: expected true or false, got 'yes'"),
        ({"ledgers": {"votes": {"home": "in-1", "standby": "in-1"}}}, "votes.standby: the standby must be another"),
        ({"ledgers": {"votes": {"home": "in-1", "standby": "rep-1"}}}, "votes.standby: 'rep-1' is not an ingest node"),
        ({"ledgers": {"votes": {"home": "in-1", "standby": "in-2", "epoch": 2}}}, "votes.epoch: expected the number"),
        ({"ledgers": {"votes": {"home": "in-1", "standby": "in-2", "epoch": "3"}}}, "votes.epoch: expected the number"),
        (
            {"ledgers": {"votes": {"home": "in-1", "standby": "in-2", "epoch": True}}},
            "votes.epoch: expected the number",
        ),
        ({"ledgers": {"votes": {"home": "in-1", "epoch": 3}}}, "votes.epoch: expected the number"),
        (
            {"ingest": {"max_file_bytes": 2000, "max_partial_upload_bytes": 1999}},
            "ingest.max_partial_upload_bytes: 1999 is below max_file_bytes (2000)",
        ),
        ({"http": {"header_timeout_ms": 0}}, "http.header_timeout_ms: expected a positive integer, got 0"),
        ({"http": {"read_timeout_ms": 10}}, "http.read_timeout_ms: unknown key"),
        (
            {"http": {"max_connections": 10, "max_connections_per_address": 11}},
            "http.max_connections_per_address: 11 is over max_connections (10)",
        ),
        (
            {"settings": {"broker": {"max_connections": 100, "max_connections_per_address": 101}}},
            "settings.broker.max_connections_per_address: 101 is over max_connections (100)",
        ),
    ],
)
def test_mistakes_are_named_with_the_file_and_key(changes: dict[str, Any], named: str) -> None:
    assert named in refused(config(**changes))


def test_http_limits_have_defaults_and_may_be_set() -> None:
    assert load(config()).http == HttpSettings()
    assert HttpSettings().header_timeout_ms == 10_000  # the default PROTOCOL 15 states
    http = load(config(http={"header_timeout_ms": 5000, "max_connections_per_address": 8})).http
    assert (http.header_timeout_ms, http.max_connections_per_address) == (5000, 8)
    assert http.idle_timeout_ms == HttpSettings().idle_timeout_ms


def test_a_cap_in_all_under_a_default_per_address_cap_lowers_that_one() -> None:
    """Cluster files that lowered only a cap in all, below its per-address default, still load."""
    loaded = load(
        config(http={"max_connections": 10, "max_unread_bytes": 1000}, settings={"broker": {"max_connections": 100}})
    )
    assert (loaded.http.max_connections_per_address, loaded.http.max_unread_bytes_per_address) == (10, 1000)
    assert loaded.settings.broker.max_connections_per_address == 100


def test_production_mode_is_off_unless_the_cluster_file_says_so() -> None:
    assert load(config()).production is False
    assert load(config(cluster__production=True)).production is True
    assert load(config()).second_factor_key_path() == Path("/etc/vledger/keys/second-factor.seal")


def test_outside_witnesses_map_key_names_to_url_prefixes() -> None:
    urls = {"witness.example/w1": "https://witness.example/w1/", "w2": "http://10.0.0.7:8080"}
    loaded = load(config(outside_witnesses=urls))
    assert loaded.outside_witnesses == {
        "witness.example/w1": "https://witness.example/w1",
        "w2": "http://10.0.0.7:8080",
    }
    assert load(config()).outside_witnesses == {}
    assert load(config()).replication.witness_timeout_ms == 5000


@pytest.mark.parametrize(
    ("urls", "named"),
    [
        ({"a b": "https://w.example"}, "is not a witness key name"),
        ({"w+1": "https://w.example"}, "is not a witness key name"),
        ({"w1": "file:///etc/passwd"}, "outside_witnesses.w1: 'file:///etc/passwd' is not an http(s) URL"),
        ({"w1": "https://"}, "is not an http(s) URL prefix with a host"),
        ({"w1": "https://w.example/?x=1"}, "is not an http(s) URL prefix with a host"),
        ({"w1": 7}, "outside_witnesses.w1: expected a URL string"),
    ],
)
def test_unusable_outside_witnesses_are_refused(urls: dict[str, Any], named: str) -> None:
    assert named in refused(config(outside_witnesses=urls))


def test_a_ledger_may_name_a_standby_ingest_node() -> None:
    cluster = load(config(ledgers={"votes": {"home": "in-1", "standby": "in-2"}}))
    assert cluster.standby_of("votes").name == "in-2"
    assert cluster.standby_of("other") is None
    assert cluster.allows_epoch("votes", 3, "in-2") and not cluster.allows_epoch("votes", 3, "in-1")
    stated = load(config(ledgers={"votes": {"home": "in-1", "standby": "in-2", "epoch": 3}}))
    assert stated.allows_epoch("votes", 3, "in-1") and not stated.allows_epoch("votes", 5, "in-1")


def test_a_standby_with_no_witness_to_prove_its_epoch_is_refused() -> None:
    data = config(ledgers={"votes": {"home": "in-1", "standby": "in-2"}}, **{"nodes__rep-1": None})
    assert "ledgers.votes.standby: a standby needs at least one witness" in refused(data)
    load(config(**{"nodes__rep-1": None}))  # a cluster with no witness and no standby loads
