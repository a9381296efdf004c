"""Stand-ins the gateway tests share (imported as ``vledger.tests.unit.verifier.fakes``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vledger.config.cluster import ClusterConfig, cluster_from_mapping


class FakeRedis:
    """Redis's witness notes by node name: each witness's key ``...:cosig:<node>`` (``mget``),
    and an outside witnesses' hash (``hgetall``) holding them all."""

    def __init__(self, notes: dict[bytes, bytes]) -> None:
        self.notes = notes

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        return self.notes

    def mget(self, keys: list[str]) -> list[bytes | None]:
        return [self.notes.get(key.rpartition(":cosig:")[2].encode()) for key in keys]

    def pipeline(self, transaction: bool = True) -> Any:
        # The open alerts the gateway reads through a pipeline: none readable, as with Redis down.
        raise ConnectionError("this fake holds witness notes only")


class NoRedis:
    """A Redis that is down: the gateway serves the store's notes alone."""

    def hgetall(self, key: str) -> Any:
        raise ConnectionError("redis is down")

    def hrandfield(self, key: str, count: int, withvalues: bool = False) -> Any:  # how open alerts are read
        raise ConnectionError("redis is down")

    def memory_usage(self, key: str, samples: int | None = None) -> Any:  # each open hash sized first
        raise ConnectionError("redis is down")

    def eval_ro(self, script: str, numkeys: int, *keys_and_args: Any) -> Any:  # or sized and read in one step
        raise ConnectionError("redis is down")

    def mget(self, keys: list[str]) -> Any:
        raise ConnectionError("redis is down")

    def get(self, key: str) -> Any:
        raise ConnectionError("redis is down")

    def pipeline(self, transaction: bool = True) -> NoRedis:
        # The live-events poller reads the tally heads through a pipeline (a slow machine reaches
        # its first tally poll within a test; this cluster has no observers, so it asks nothing
        # yet): its first command fails as a down Redis would.
        return self


def two_nodes(path: Path) -> ClusterConfig:
    """A home and the replica whose store the gateway serves: the cluster file of the gateway tests."""
    return cluster_from_mapping(
        {
            "cluster": {"name": "t", "data": "data", "keys": "keys", "default_home": "ingest-1"},
            "nodes": {
                "ingest-1": {"role": "ingest", "port": 1, "pub_port": 2},
                "replica-1": {"role": "replica", "port": 3, "gateway_port": 4},
            },
        },
        path,
    )
