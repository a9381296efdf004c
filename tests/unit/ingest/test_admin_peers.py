"""Which nodes a node asks for the admin ledger (ingest/admin_peers.py, docs/PROTOCOL.md 16.4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vledger.config.cluster import cluster_from_mapping
from vledger.ingest.admin_peers import admin_holders


def _config(tmp_path: Path, follow: dict[str, list[str]]) -> Any:
    nodes: dict[str, Any] = {
        "ingest-1": {"role": "ingest", "port": 7101, "pub_port": 8101},
        "ingest-2": {"role": "ingest", "port": 7102, "pub_port": 8102},
        "verifier-1": {"role": "verifier", "port": 7103},
    }
    for port, (name, followed) in enumerate(follow.items(), start=7201):
        observer = name.startswith("observer")
        nodes[name] = {"role": "observer" if observer else "replica", "port": port, "follow": followed}
        if not observer:
            nodes[name]["pub_port"] = port + 1000  # a relay's feed
    data = {
        "cluster": {"name": "t", "keys": "keys", "data": "data", "redis": "redis://127.0.0.1:6390/0",
                    "default_home": "ingest-1"},
        "nodes": nodes,
    }  # fmt: skip
    return cluster_from_mapping(data, tmp_path / "cluster.toml")


def test_the_holders_are_the_admin_home_and_its_followers_through_relays(tmp_path: Path) -> None:
    """A follower of another home only holds no admin ledger: its "none" must not count (16.4)."""
    config = _config(
        tmp_path,
        {
            "replica-1": ["ingest-1"],
            "replica-2": ["ingest-2"],  # follows another home only
            "replica-3": ["replica-1"],  # through a relay
            "observer-1": [],  # every ingest node by default
        },
    )
    assert admin_holders(config, "ingest-2") == ["ingest-1", "observer-1", "replica-1", "replica-3"]
    assert admin_holders(config, "replica-1") == ["ingest-1", "observer-1", "replica-3"]
    assert admin_holders(config, "verifier-1") == ["ingest-1", "observer-1", "replica-1", "replica-3"]
