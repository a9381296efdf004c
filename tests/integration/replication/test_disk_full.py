"""A replica whose data directory's disk fills up, on a real tmpfs of about a megabyte.

Outsider o13: the replica crash-looped with a traceback (raising its own alert failed: its alert
journal is on the same full disk), nothing said "disk full", and it came back only once its store
was moved elsewhere. Now: one "disk full" line, a ``disk_full`` alert in Redis, the node runs on
and retries, and recovers by itself once there is room again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vledger.node.errors import RemoteError
from vledger.tests.integration.cluster import ADMIN, LocalCluster, entry, genesis, put_args, wait_until
from vledger.tests.integration.replication.test_witnessed import LEDGER, WAIT, put, repl, size, wait_cosigned

ROOM = 384 * 1024  # bytes the tmpfs holds beyond the store at the move: a few hundred records' worth


@contextlib.contextmanager
def small_disk(directory: Path) -> Iterator[Path]:
    """``directory``'s files moved onto a tmpfs mounted there, just larger than them."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    kept = directory.with_name(f"{directory.name}.before-tmpfs")
    directory.rename(kept)
    directory.mkdir()
    used = sum(p.stat().st_size for p in kept.rglob("*") if p.is_file())
    size = (used + ROOM + 4095) // 4096 * 4096
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory)], check=True)
    try:
        subprocess.run(["cp", "-a", f"{kept}/.", str(directory)], check=True)
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)
        shutil.rmtree(kept, ignore_errors=True)


def fill(directory: Path) -> Path:
    """A file that takes every byte left on ``directory``'s disk."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return filler


def test_a_replica_on_a_full_disk_says_so_runs_on_and_recovers_once_there_is_room(start_cluster: Any) -> None:
    cluster: LocalCluster = start_cluster(nodes=1, replicas=1)
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
    put(cluster, 5)
    wait_cosigned(cluster, cluster.replica_names, size(cluster))
    assert cluster.stop_node("replica-1") == 0
    with small_disk(cluster.store_dir("replica-1")) as store:
        cluster.start_node("replica-1")
        starts = cluster.node("replica-1").starts
        filler = fill(store)
        put(cluster, 200, phase="full")
        key = f"replica-1|{LEDGER}|disk_full"
        alert = wait_until(lambda: repl(cluster).open_alerts().get(key), WAIT, "replica-1's disk_full alert")
        assert alert["detail"].startswith(f"disk full: {store}"), alert
        assert cluster.node("replica-1").running()  # it waits, not crash-loops
        log = cluster.log_text("replica-1")
        assert log.count("disk full: ") >= 1 and "Traceback" not in log, log[-4000:]
        assert cluster.own_size("replica-1", LEDGER) < size(cluster)

        filler.unlink()  # room again: it catches up by itself, and closes its alert
        total = size(cluster)
        wait_until(lambda: cluster.own_size("replica-1", LEDGER) == total, WAIT, "replica-1 catching up")
        wait_until(lambda: key not in repl(cluster).open_alerts(), WAIT, "replica-1 resolving its disk_full")
        assert cluster.node("replica-1").running() and cluster.node("replica-1").starts == starts
        assert "Traceback" not in cluster.log_text("replica-1")
        cluster.stop_node("replica-1")


def test_a_home_on_a_full_disk_refuses_puts_disk_full_raises_its_alert_and_resolves_it(start_cluster: Any) -> None:
    """op33: the home's puts were answered disk_full, but only a follower raised the alert. The
    home raises ``<home>|<ledger>|disk_full`` (its journal on the same full disk: Redis takes it)
    and resolves it once a put is stored again."""
    cluster: LocalCluster = start_cluster(nodes=1, replicas=1)
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
    put(cluster, 5)
    assert cluster.stop_node("ingest-1") == 0
    with small_disk(cluster.store_dir("ingest-1")) as store:
        cluster.start_node("ingest-1")
        put(cluster, 1, phase="started")
        filler = fill(store)
        writer = cluster.client("writer1", follow=False)

        def refused() -> RemoteError | None:  # a put may still find room in the WAL's frames: the next one
            try:
                writer.call("put", put_args(entry(LEDGER, "vote", {"x": "y" * 4000}, "writer1")))
            except RemoteError as e:
                assert e.code == "disk_full", e  # never acknowledged while there is no room
                return e
            return None

        refusal = wait_until(refused, WAIT, "a put refused disk_full")
        assert refusal.reason.startswith(f"disk full: {store}"), refusal
        key = f"ingest-1|{LEDGER}|disk_full"
        alert = wait_until(lambda: repl(cluster).open_alerts().get(key), WAIT, "ingest-1's disk_full alert")
        assert alert["detail"].startswith(f"disk full: {store}") and alert["source"] == "ingest-1", alert
        assert cluster.node("ingest-1").running()

        filler.unlink()  # room again: the next put is stored and the alert closes
        stored = wait_until(lambda: _stored(writer), WAIT, "a put stored again")
        assert stored["height"] >= 6
        wait_until(lambda: key not in repl(cluster).open_alerts(), WAIT, "ingest-1 resolving its disk_full")
        assert "Traceback" not in cluster.log_text("ingest-1")
        cluster.stop_node("ingest-1")


def _stored(writer: Any) -> dict[str, Any] | None:
    try:
        receipt: dict[str, Any] = writer.call("put", put_args(entry(LEDGER, "vote", {"after": 1}, "writer1")))
    except RemoteError as e:
        if e.code != "disk_full":
            raise
        return None
    return receipt


@pytest.mark.parametrize("node", ["replica-1", "ingest-1"])
def test_a_node_started_on_a_full_disk_says_so_waits_and_starts_once_there_is_room(
    start_cluster: Any, node: str
) -> None:
    # outsider34 #1: SQLite says "disk I/O error" (not SQLITE_FULL) when it cannot make the
    # alert journal's or the store's -shm: the node exited 1 with a traceback every few seconds
    # under supervisord, never said "disk full", and raised no alert. A replica and a home alike.
    cluster: LocalCluster = start_cluster(nodes=1, replicas=1)
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
    put(cluster, 5)
    wait_cosigned(cluster, cluster.replica_names, size(cluster))
    assert cluster.stop_node(node) == 0
    with small_disk(cluster.store_dir(node)) as store:
        for leftover in store.glob("*-shm"):  # as after a reboot: SQLite makes them anew at open
            leftover.unlink()
        filler = fill(store)
        cluster._launch(node)
        key = f"{node}||disk_full"
        alert = wait_until(lambda: repl(cluster).open_alerts().get(key), WAIT, f"{node}'s disk_full alert")
        assert alert["detail"].startswith(f"disk full: {store}"), alert
        assert cluster.node(node).running()  # it waits, not crash-loops
        log = cluster.log_text(node)
        assert log.count("disk full: ") == 1 and "Traceback" not in log, log[-4000:]
        if node == "ingest-1":  # outsider o15 #5c: its writers were told to check their key
            key = str(cluster.directory / "keys" / "admin.key_secret")
            write = ["put", LEDGER, "vote", "--payload", '{"waiting": 1}', "--config", str(cluster.config_path)]
            refused = cluster.cli(*write, "--key", key, "--timeout", "2", check=False)
            assert refused.returncode != 0 and "nothing accepts a connection at" in refused.stderr, refused.stderr
            assert "your key" not in refused.stderr and "vledger status" in refused.stderr, refused.stderr

        filler.unlink()  # room again: it starts by itself, and closes its alert
        cluster.wait_ready(node)
        wait_until(lambda: key not in repl(cluster).open_alerts(), WAIT, f"{node} resolving its disk_full")
        put(cluster, 3, phase="after")
        wait_cosigned(cluster, cluster.replica_names, size(cluster))
        assert "Traceback" not in cluster.log_text(node)
        cluster.stop_node(node)
