"""Files survive their home: a replica copies each file's blob and serves it (PROTOCOL 7.4).

A real cluster of one ingest node and two replicas, 4 KiB chunks so that a file takes a
few of them. The file is uploaded to the home and recorded; each replica copies the blob
by itself; with the home stopped, ``vledger file get`` from a replica gives the same bytes.
A replica's copy damaged on disk is never served: the replica answers ``bad_blob``, drops it,
copies it again from another node, and serves the right bytes once it has; one lost while the
replica was down is copied again when it starts.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from vledger.broker.client import Client
from vledger.broker.keys import generate, key_paths
from vledger.node.blobs import digest_of_file
from vledger.tests.integration.cluster import ADMIN, LocalCluster, entry, genesis, remote_error, wait_until

CHUNK = 4096
LEDGER = "papers"
COPY_TIMEOUT = 30.0


def _cluster(start_cluster: Callable[..., LocalCluster], read: str) -> LocalCluster:
    cluster = start_cluster(nodes=1, replicas=2, ingest={"file_chunk_bytes": CHUNK, "max_file_bytes": 65536})
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["file"], {"type": "files", "read": read}))
    return cluster


def _put_file(cluster: LocalCluster, data: bytes, account: str = "writer1") -> str:
    """``account`` uploads ``data`` to the home and records it; its SHA-256."""
    digest = hashlib.sha256(data).hexdigest()
    writer = cluster.client(account)
    for offset in range(0, max(len(data), 1), CHUNK):
        writer.call(
            "file.upload",
            {"sha256": digest, "size": len(data), "offset": offset, "data": data[offset : offset + CHUNK]},
        )
    writer.put(entry(LEDGER, "file", {"name": "paper.pdf", "size": len(data), "sha256": digest}, account))
    return digest


def _blob(cluster: LocalCluster, node: str, digest: str) -> Path:
    return cluster.store_dir(node) / "blobs" / digest[:2] / digest


def _download(client: Client, digest: str) -> bytes:
    received = b""
    while True:
        part = client.call("file.download", {"sha256": digest, "offset": len(received), "length": CHUNK})
        received += part["data"]
        if len(received) >= part["size"]:
            return received


def _file_get(cluster: LocalCluster, key: Path, digest: str, out: Path, *options: str) -> tuple[int, str]:
    done = cluster.cli(
        "file",
        "get",
        digest,
        "-o",
        str(out),
        "--config",
        str(cluster.config_path),
        "--key",
        str(key),
        *options,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def test_a_file_is_read_from_a_replica_once_its_home_is_gone(
    start_cluster: Callable[..., LocalCluster], tmp_path: Path
) -> None:
    cluster = _cluster(start_cluster, "uploader")
    cluster.add_account("author", "writer", generate(tmp_path, "author"))  # a key file for the CLI
    data = os.urandom(3 * CHUNK + 123)
    digest = _put_file(cluster, data, "author")
    for replica in cluster.replica_names:
        wait_until(lambda r=replica: _blob(cluster, r, digest).is_file(), COPY_TIMEOUT, f"{replica} holds the blob")
    cluster.stop_node("ingest-1")

    key = key_paths(tmp_path, "author")[1]
    pinned = tmp_path / "pinned.pdf"
    code, output = _file_get(cluster, key, digest, pinned, "--node", "replica-1")
    assert code == 0, output
    assert pinned.read_bytes() == data
    # Unpinned, the download starts at the default home, which does not answer, and goes on to a replica.
    out = tmp_path / "paper.pdf"
    code, output = _file_get(cluster, key, digest, out, "--timeout", "2")
    assert code == 0, output
    assert out.read_bytes() == data
    assert _download(cluster.client("author", "replica-2", follow=False), digest) == data
    # A replica applies the home's read rule: an account that did not upload the file is refused.
    other = cluster.client("writer1", "replica-2", follow=False)
    error = remote_error(other.call, "file.download", {"sha256": digest, "offset": 0, "length": CHUNK})
    assert error.code == "not_found"


def test_a_damaged_copy_is_refused_then_copied_again(start_cluster: Callable[..., LocalCluster]) -> None:
    cluster = _cluster(start_cluster, "public")
    data = os.urandom(2 * CHUNK + 7)
    digest = _put_file(cluster, data)
    blob = _blob(cluster, "replica-1", digest)
    wait_until(blob.is_file, COPY_TIMEOUT, "replica-1 holds the blob")
    damaged = bytearray(blob.read_bytes())
    damaged[100] ^= 0xFF
    blob.write_bytes(bytes(damaged))

    reader = cluster.client("writer2", "replica-1", follow=False)
    error = remote_error(reader.call, "file.download", {"sha256": digest, "offset": 0, "length": CHUNK})
    assert error.code == "bad_blob"
    assert "damaged" in str(error)
    # The copy is fetched again (from the home or the other replica) and is whole once more.
    wait_until(lambda: blob.is_file() and digest_of_file(blob) == digest, COPY_TIMEOUT, "replica-1 copied it again")
    assert _download(reader, digest) == data

    # A copy lost while the replica was down is copied again when it starts.
    cluster.stop_node("replica-1")
    blob.unlink()
    cluster.start_node("replica-1")
    wait_until(blob.is_file, COPY_TIMEOUT, "replica-1 copied it again after its restart")
    assert digest_of_file(blob) == digest
