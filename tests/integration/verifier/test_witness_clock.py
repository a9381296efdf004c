"""A witness whose clock runs a day ahead is named by the verifier (outsiders o13 F8, o14).

Under libfaketime +1 day a replica's cosignatures were dated tomorrow, counted and served, and no
alert or log line said so. The witness process has no clock setting, so its line dated a day
ahead is made here with its own key and put where it publishes (its cosig key in Redis), which
is all the verifier reads. Real nodes, a real verifier process and Redis."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import pytest

from vledger.broker.client import Client
from vledger.broker.redis_server import RedisServer, connect
from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import load_signing_key, signing_key_paths
from vledger.config.cluster import load_cluster
from vledger.node.witness import WitnessSigner, witness_name
from vledger.tests.integration.cluster import ADMIN, LocalCluster, entry, genesis, wait_until

LEDGER = "votes"
DAY = 86_400
KEY = "replica-1||witness_clock"
WAIT = 60.0


@pytest.fixture
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    with LocalCluster(redis_server.url, nodes=1, replicas=1, verifiers=1) as running:
        yield running


def test_a_cosignature_dated_a_day_ahead_raises_witness_clock_until_a_later_one_is_right(
    cluster: LocalCluster,
) -> None:
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
    writer = cluster.client("writer1")
    _put_cosigned(writer, range(3))
    replication = ReplicationLedger(connect(cluster.cluster_redis_url))
    honest = replication.cosignatures(LEDGER, ["replica-1"])["replica-1"]
    assert KEY not in replication.open_alerts()

    # The witness, stopped so that nothing else writes its key, as if its host's clock ran a day ahead.
    assert cluster.stop_node("replica-1") == 0
    config = load_cluster(cluster.config_path)
    seed = load_signing_key(signing_key_paths(config.keys_dir, "replica-1")[0]).seed
    signer = WitnessSigner(witness_name(config.name, "replica-1"), seed)
    tomorrow = int(time.time()) + DAY
    ahead = signer.cosign_again(honest, tomorrow)
    replication.publish_cosignature(LEDGER, "replica-1", 4, ahead)

    alert = wait_until(lambda: replication.open_alerts().get(KEY), WAIT, "replica-1's witness_clock alert")
    assert (alert["node"], alert["ledger"], alert["source"], alert["found"]) == (
        "replica-1",
        "",
        "replica-1",
        str(tomorrow),
    )
    assert alert["raised_by"] == "verifier-1", alert
    skew = int(alert["detail"].split(" s ahead of Redis's clock")[0].rsplit(" ", 1)[1])
    assert DAY - 60 <= skew <= DAY, alert["detail"]

    # Its clock right again, it cosigns the next checkpoint at the right time: the alert closes.
    cluster.start_node("replica-1")
    _put_cosigned(writer, range(3, 5))
    wait_until(lambda: KEY not in replication.open_alerts(), WAIT, "replica-1's witness_clock alert closed")


def _put_cosigned(writer: Client, numbers: Iterable[int]) -> None:
    """Votes answered only once replica-1 cosigned a checkpoint holding each (w=1)."""
    for n in numbers:
        e = entry(LEDGER, "vote", {"n": n}, "writer1")
        writer.call("put", {"content": e.content_bytes, "nonce": e.nonce, "w": 1})
