"""Records flow from their home node to every replica, counted in Redis, read back from any copy."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from vledger.broker.redis_server import RedisServer, connect
from vledger.broker.replication import ReplicationLedger, count_distribution
from vledger.tests.integration.cluster import (
    ADMIN,
    LocalCluster,
    entry,
    genesis,
    remote_error,
    wait_until,
)
from vledger.tests.integration.cluster import put_args as _put_args

LEDGER = "votes"


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    with LocalCluster(redis_server.url, nodes=1, replicas=3, replication={"write_timeout_ms": 1500}) as running:
        running.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
        yield running


def sizes(cluster: LocalCluster, ledger: str) -> dict[str, int]:
    return {name: cluster.admin(name).call("size", {"ledger": ledger})["size"] for name in cluster.procs}


def replication(cluster: LocalCluster) -> ReplicationLedger:
    return ReplicationLedger(connect(cluster.cluster_redis_url))


def test_every_replica_holds_every_record_with_the_same_head(cluster: LocalCluster) -> None:
    writer = cluster.client("writer1")
    writer.put_many([entry(LEDGER, "vote", {"n": i}, "writer1") for i in range(600)], window=64)
    size = cluster.admin().call("size", {"ledger": LEDGER})["size"]
    wait_until(lambda: set(sizes(cluster, LEDGER).values()) == {size}, 20, "every replica at the home's size")
    heads = {name: cluster.admin(name).call("head", {"ledger": LEDGER})["hash"] for name in cluster.procs}
    assert len(set(heads.values())) == 1, heads
    records = [list(cluster.admin(name).records(LEDGER)) for name in cluster.procs]
    assert all(r == records[0] for r in records)
    # The replication count of every record: the home node and the three replicas.
    repl = replication(cluster)
    wait_until(lambda: count_distribution(repl.held(LEDGER), size) == {4: size}, 10, "counts of 4")
    assert repl.holders(LEDGER, size - 1) == ["ingest-1", "replica-1", "replica-2", "replica-3"]


def test_the_stream_holds_each_record_once_by_height(cluster: LocalCluster) -> None:
    repl = replication(cluster)
    size = cluster.admin().call("size", {"ledger": LEDGER})["size"]
    wait_until(lambda: repl.last_height(LEDGER) == size - 1, 10, "the stream at the head")
    stored = list(cluster.admin().records(LEDGER))
    streamed = repl.read(LEDGER, 0, size + 10)
    assert [r.height for r in streamed] == list(range(size))
    assert [r.data for r in streamed] == stored


def test_a_put_with_a_write_concern_answers_once_replicas_hold_it(cluster: LocalCluster) -> None:
    writer = cluster.client("writer1")
    result = writer.call("put", {**_put_args(entry(LEDGER, "vote", {"w": 3}, "writer1")), "w": 3})
    assert len(result["replicas"]) >= 3
    for name in cluster.replica_names:
        record = cluster.admin(name).call("get", {"ledger": LEDGER, "height": result["height"]})["record"]
        assert record  # readable on every replica the moment the put answered


def test_a_write_concern_no_replica_can_meet_is_refused_before_the_record_is_written(cluster: LocalCluster) -> None:
    # outsider o15 #3: it was written, then answered replication_timeout after write_timeout_ms.
    writer = cluster.client("writer1")
    e = entry(LEDGER, "vote", {"w": 4}, "writer1")
    before = cluster.own_size("ingest-1", LEDGER)
    error = remote_error(writer.call, "put", {**_put_args(e), "w": 4})  # only three replicas exist
    assert error.code == "bad_request"
    assert "w=4 can never be met here: only 3 witnesses count for w" in error.message
    assert cluster.own_size("ingest-1", LEDGER) == before  # nothing written: the same request is new below
    retry = writer.call("put", _put_args(e))
    assert retry["height"] == before and retry["duplicate"] is False
    wait_until(  # the module's next tests read the replicas: this test leaves them holding what it wrote
        lambda: all(cluster.own_size(name, LEDGER) > before for name in cluster.replica_names),
        30,
        "every replica holding the put written without w",
    )


def test_a_replica_answers_reads_and_refers_writes_to_the_home_node(cluster: LocalCluster) -> None:
    replica = cluster.admin("replica-1")
    hello = replica.hello()
    assert hello["node"] == "replica-1" and hello["node_role"] == "replica" and hello["current"] is True
    e = entry(LEDGER, "vote", {"via": "replica"}, "writer1")
    writer = cluster.client("writer1", "replica-1")
    result = writer.put(e)  # answered not_home by the replica; the client follows to ingest-1
    assert cluster.admin().call("get", {"ledger": LEDGER, "height": result["height"]})["record"]
    error = remote_error(replica.call, "account.list")
    assert error.code == "forbidden"


def test_the_put_command_takes_a_write_concern(cluster: LocalCluster) -> None:
    common = ["--config", str(cluster.config_path), "--key", str(cluster.directory / "keys" / "admin.key_secret")]
    done = cluster.cli("put", LEDGER, "vote", "--payload", '{"cli": 1}', "-w", "2", "--json", *common)
    receipt = json.loads(done.stdout)
    assert len(receipt["replicas"]) >= 2 and set(receipt["replicas"]) <= set(cluster.replica_names)
    failed = cluster.cli("put", LEDGER, "vote", "--payload", '{"cli": 2}', "-w", "9", *common, check=False)
    assert failed.returncode == 1 and "w=9 can never be met here" in failed.stderr, failed.stderr
