"""A replica serving a forked tail is a fork while the home is stopped (PROTOCOL 10.6, step 2).

A real cluster (home, two replicas, the verifier, Redis): a ledger whose checkpoint key was
rotated (13.8) holds records on every copy; the home stops; one replica's store is rebuilt
as a valid fork (the same records up to a height, then others, each valid on its own and
linked, with a tree that matches them: it opens and serves as any store) and the replica
starts again. Nothing can be compared with the home, yet the verifier raises `fork` on that
replica within the deadline, named at the first height that differs (searched against the
honest replica, whose tree at the checkpoint's size it proved), and nothing on the honest one.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from vledger.broker.redis_server import RedisServer, connect
from vledger.broker.replication import ReplicationLedger
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.node.record import Content, Entry, decode_record
from vledger.node.store import ChainStore
from vledger.tests.integration.cluster import LocalCluster, entry, wait_until

LEDGER = "keyed"
HOME, HONEST, LIAR = "ingest-1", "replica-1", "replica-2"
FORKED = 4  # the liar's last records that are not the home's
DETECTION_SECONDS = 10.0  # the verifier's heartbeat is 1 s: a few of them


def _size(cluster: LocalCluster, node: str) -> int:
    return int(cluster.admin(node).call("size", {"ledger": LEDGER})["size"])


def _checkpoint_size(cluster: LocalCluster, node: str) -> int:
    return int(cluster.admin(node).call("checkpoint", {"ledger": LEDGER})["size"])


def _rebuild_as_fork(directory: Path, keep: int) -> None:
    """The store in ``directory`` rebuilt: its first ``keep`` records byte for byte, then
    ``FORKED`` votes of its own, placed and linked as a home places them (a valid chain)."""
    honest = directory.with_name(directory.name + ".honest")
    shutil.move(directory, honest)
    with closing(sqlite3.connect(f"file:{honest / 'chain.sqlite3'}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT data FROM records WHERE ledger = ? ORDER BY height", (LEDGER,)).fetchall()
    store = ChainStore(directory, origin=HOME)
    try:
        store.append_records(decode_record(row[0], PROTOCOL_LIMITS) for row in rows[:keep])
        for n in range(FORKED):
            content = Content(LEDGER, "vote", {"forked": n}, "writer1", f"forked-{n}", int(time.time() * 1000))
            store.append(Entry.prepare(content, 0, PROTOCOL_LIMITS))
    finally:
        store.close()


def test_a_replica_forked_while_the_home_is_stopped_is_a_fork_and_the_honest_one_raises_nothing(
    redis_server: RedisServer,
) -> None:
    settings = {"sweep_interval_ms": 200}
    with LocalCluster(redis_server.url, nodes=1, replicas=2, verifiers=1, verifier=settings) as cluster:
        keys = cluster.directory / "keys"
        common = ["--config", str(cluster.config_path), "--key", str(keys / "admin.key_secret")]
        cluster.cli("ledger", "create", LEDGER, "--kinds", "vote", "--difficulty", "0", *common)
        writer = cluster.client("writer1")
        writer.put_many([entry(LEDGER, "vote", {"n": n}, "writer1") for n in range(20)])
        cluster.cli("ledger", "rotate-key", LEDGER, *common)  # the checkpoints past it: the new key's
        writer.put_many([entry(LEDGER, "vote", {"m": n}, "writer1") for n in range(20)])
        size = _size(cluster, HOME)
        wait_until(
            lambda: all(_checkpoint_size(cluster, n) == size for n in cluster.replica_names),
            20,
            "both replicas hold every record under the home's checkpoint",
        )
        repl = ReplicationLedger(connect(cluster.cluster_redis_url))
        assert repl.open_alerts() == {}

        assert cluster.stop_node(HOME) == 0
        assert cluster.stop_node(LIAR) == 0
        _rebuild_as_fork(cluster.store_dir(LIAR), size - FORKED)
        started = time.monotonic()
        cluster.start_node(LIAR)
        answered = time.monotonic()

        def fork_alert() -> dict[str, str] | None:
            return next(
                (a for a in repl.alerts(1000) if (a["node"], a["ledger"], a["what"]) == (LIAR, LEDGER, "fork")), None
            )

        alert: dict[str, str] = wait_until(fork_alert, DETECTION_SECONDS, "a fork alert for the liar, home stopped")
        now = time.monotonic()
        print(f"fork alert {now - started:.1f} s after the liar was started, {now - answered:.1f} s after it answered")
        assert int(alert["height"]) == size - FORKED and alert["source"] == HOME
        honest_record = cluster.admin(HONEST).call("get", {"ledger": LEDGER, "height": size - FORKED})["record"]
        # Searched back against the honest copy, whose tree at the checkpoint's size it proved.
        assert alert["expected"] == decode_record(honest_record, PROTOCOL_LIMITS).hash.hex()
        assert not cluster.procs[HOME].running()
        assert [a for a in repl.alerts(1000) if a["node"] == HONEST] == []
