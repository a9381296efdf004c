"""bench/scale.py's followers: a port another process took between its pick and the follower's
bind costs a new start on fresh ports, not the bench (CI's "Address already in use")."""

from __future__ import annotations

import contextlib
import socket
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vledger.bench import ingest, scale
from vledger.broker.client import Client, NodeAddress
from vledger.broker.keys import load_public
from vledger.broker.redis_server import free_ports


@contextlib.contextmanager
def _thief() -> Iterator[int]:
    """Another process listening on a port, as another test worker's node did: the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as thief:
        thief.bind(("127.0.0.1", 0))
        thief.listen()
        yield thief.getsockname()[1]


def _picker(stolen: int, at: int) -> tuple[Callable[[int], list[int]], list[list[int]]]:
    """A ``free_ports`` whose pick number ``at`` (from 0) starts with the ``stolen`` port, and
    the picks it made."""
    picks: list[list[int]] = []

    def pick(count: int) -> list[int]:
        ports = free_ports(count)
        if len(picks) == at:
            ports[0] = stolen
        picks.append(ports)
        return ports

    return pick, picks


def test_a_follower_whose_port_was_taken_starts_again_on_a_fresh_one(tmp_path: Path) -> None:
    placeholders = scale._follower_tables(dict(zip(scale.FOLLOWERS, free_ports(len(scale.FOLLOWERS)), strict=True)))
    with _thief() as stolen, ingest._node(tmp_path, placeholders) as node:
        pick, picks = _picker(stolen, at=0)
        with scale._followers(tmp_path, node, pick) as pids:
            assert len(picks) == 2 and set(pids) == set(scale.FOLLOWERS)
            first = next(iter(scale.FOLLOWERS))
            assert f"127.0.0.1:{stolen}: {ingest.IN_USE}" in (tmp_path / f"{first}.log").read_text()
            ports = {name: table["port"] for name, table in _nodes(tmp_path).items() if name in scale.FOLLOWERS}
            assert ports == dict(zip(scale.FOLLOWERS, picks[1], strict=True))
            for name, port in ports.items():  # each serves on the port the cluster file now names
                address = NodeAddress(f"tcp://127.0.0.1:{port}", load_public(tmp_path / "keys" / f"{name}.key"))
                with Client(address, node.admin, timeout=ingest.TIMEOUT) as client:
                    assert client.hello()["node"] == name


def _nodes(directory: Path) -> dict[str, dict[str, int]]:
    nodes: dict[str, dict[str, int]] = tomllib.loads((directory / "cluster.toml").read_text())["nodes"]
    return nodes


def test_an_ingest_node_whose_port_was_taken_starts_again_on_a_fresh_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _thief() as stolen:
        pick, picks = _picker(stolen, at=1)  # the first pick is the placeholders, the second the node's start
        monkeypatch.setattr(ingest, "free_ports", pick)
        with ingest._node(tmp_path) as node:
            assert len(picks) == 3 and node.address.endpoint == f"tcp://127.0.0.1:{picks[2][0]}"
            assert ingest.port_taken(tmp_path / "node.log", stolen)
            with Client(node.address, node.admin, timeout=ingest.TIMEOUT) as client:
                assert client.hello()["node"] == ingest.NODE
