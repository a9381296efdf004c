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

from vledger.tests.integration.cluster import ADMIN, LocalCluster, genesis, wait_until
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

        filler.unlink()  # room again: it starts by itself, and closes its alert
        cluster.wait_ready(node)
        wait_until(lambda: key not in repl(cluster).open_alerts(), WAIT, f"{node} resolving its disk_full")
        put(cluster, 3, phase="after")
        wait_cosigned(cluster, cluster.replica_names, size(cluster))
        assert "Traceback" not in cluster.log_text(node)
        cluster.stop_node(node)
