"""Files through a real node: chunked upload, the file record, download as the read rule says.

The module's cluster takes 4 KiB chunks and files of at most 64 KiB, so that a file of a
few chunks is small.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

from vledger.broker.client import Client
from vledger.broker.redis_server import RedisServer
from vledger.tests.integration.cluster import ADMIN, DEFAULT_ACCOUNTS, LocalCluster, entry, genesis, remote_error

CHUNK = 4096
MAX_FILE = 65536
PARTIAL_UPLOADS = 2  # each account's quota on a node of uploads no record names, partial or complete
LEDGER = "files"


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    ingest = {"file_chunk_bytes": CHUNK, "max_file_bytes": MAX_FILE, "max_partial_uploads": PARTIAL_UPLOADS}
    accounts = {**DEFAULT_ACCOUNTS, "writer3": "writer"}  # writer3: the quota test's, with nothing before it
    with LocalCluster(redis_server.url, ingest=ingest, accounts=accounts) as running:
        running.admin().create_ledger(genesis(LEDGER, ADMIN, ["file"], {"type": "files", "read": "uploader"}))
        yield running


def upload(client: Client, data: bytes) -> list[dict[str, Any]]:
    """Send ``data`` in CHUNK-sized pieces (an empty file in one empty chunk); every chunk's result."""
    digest = hashlib.sha256(data).hexdigest()
    return [
        client.call(
            "file.upload",
            {"sha256": digest, "size": len(data), "offset": offset, "data": data[offset : offset + CHUNK]},
        )
        for offset in range(0, max(len(data), 1), CHUNK)
    ]


def download(client: Client, sha256: str) -> bytes:
    received = b""
    while True:
        part = client.call("file.download", {"sha256": sha256, "offset": len(received), "length": CHUNK})
        received += part["data"]
        if len(received) >= part["size"] or not part["data"]:
            assert len(received) == part["size"]
            return received


def file_record(
    client: Client, author: str, data: bytes, name: str = "report.pdf", size: int | None = None
) -> dict[str, Any]:
    payload = {"name": name, "size": len(data) if size is None else size, "sha256": hashlib.sha256(data).hexdigest()}
    return client.put(entry(LEDGER, "file", payload, author))


def ledger_size(client: Client) -> int:
    return client.call("size", {"ledger": LEDGER})["size"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def uploaded(cluster: LocalCluster) -> bytes:
    """A file of three chunks that writer1 uploaded and recorded."""
    data = os.urandom(2 * CHUNK + 1000)
    writer = cluster.client("writer1")
    results = upload(writer, data)
    assert results == [
        {"received": CHUNK, "complete": False},
        {"received": 2 * CHUNK, "complete": False},
        {"received": len(data), "complete": True},
    ]
    receipt = file_record(writer, "writer1", data)
    assert receipt["duplicate"] is False
    return data


def test_the_uploader_downloads_the_same_bytes(cluster: LocalCluster, uploaded: bytes) -> None:
    assert download(cluster.client("writer1"), hashlib.sha256(uploaded).hexdigest()) == uploaded


def test_an_empty_file_goes_through(cluster: LocalCluster, uploaded: bytes) -> None:
    writer = cluster.client("writer1")
    assert upload(writer, b"") == [{"received": 0, "complete": True}]
    file_record(writer, "writer1", b"", name="empty.txt")
    assert download(writer, hashlib.sha256(b"").hexdigest()) == b""


def test_reading_past_the_end_gives_no_bytes(cluster: LocalCluster, uploaded: bytes) -> None:
    writer = cluster.client("writer1")
    digest = hashlib.sha256(uploaded).hexdigest()
    tail = writer.call("file.download", {"sha256": digest, "offset": len(uploaded) - 10, "length": CHUNK})
    assert tail == {"data": uploaded[-10:], "size": len(uploaded)}
    for offset in (len(uploaded), 2**63 - 1, 2**63, 2**64 - 1):
        wire = cluster.wire("writer1")
        reply = wire.call("file.download", {"sha256": digest, "offset": offset, "length": CHUNK})
        if reply["ok"]:
            assert reply["result"] == {"data": b"", "size": len(uploaded)}, offset
        else:
            assert reply["error"]["code"] == "bad_request", (offset, reply)


def test_others_get_not_found_just_as_for_a_file_that_does_not_exist(cluster: LocalCluster, uploaded: bytes) -> None:
    digest = hashlib.sha256(uploaded).hexdigest()
    for key_name in ("writer2", "observer", ADMIN):
        client = cluster.client(key_name)
        theirs = remote_error(client.call, "file.download", {"sha256": digest, "offset": 0, "length": CHUNK})
        nothing = remote_error(client.call, "file.download", {"sha256": "ab" * 32, "offset": 0, "length": CHUNK})
        assert theirs.code == "not_found", key_name
        assert (theirs.code, theirs.reason, theirs.details) == (nothing.code, nothing.reason, nothing.details)


def test_a_file_record_before_its_upload_is_not_found(cluster: LocalCluster, uploaded: bytes) -> None:
    writer = cluster.client("writer2")
    before = ledger_size(writer)
    assert remote_error(file_record, writer, "writer2", os.urandom(100)).code == "not_found"
    assert ledger_size(writer) == before


def test_a_record_of_another_size_than_the_upload_is_refused(cluster: LocalCluster, uploaded: bytes) -> None:
    writer = cluster.client("writer2")
    data = os.urandom(500)
    upload(writer, data)
    before = ledger_size(writer)
    assert remote_error(file_record, writer, "writer2", data, size=501).code == "bad_request"
    assert ledger_size(writer) == before


def test_an_upload_that_does_not_match_its_sha256_is_refused(cluster: LocalCluster, uploaded: bytes) -> None:
    writer = cluster.client("writer2")
    data = os.urandom(CHUNK + 10)
    claimed = hashlib.sha256(b"something else").hexdigest()
    writer.call("file.upload", {"sha256": claimed, "size": len(data), "offset": 0, "data": data[:CHUNK]})
    last = {"sha256": claimed, "size": len(data), "offset": CHUNK, "data": data[CHUNK:]}
    assert remote_error(writer.call, "file.upload", last).code == "bad_blob"
    # Nothing was kept: the claimed file cannot be recorded.
    payload = {"name": "fake.bin", "size": len(data), "sha256": claimed}
    assert remote_error(writer.put, entry(LEDGER, "file", payload, "writer2")).code == "not_found"


def test_chunks_must_continue_the_upload(cluster: LocalCluster, uploaded: bytes) -> None:
    writer = cluster.client("writer2")
    data = os.urandom(3 * CHUNK)
    digest = hashlib.sha256(data).hexdigest()

    def chunk(offset: int, piece: bytes) -> dict[str, Any]:
        return writer.call("file.upload", {"sha256": digest, "size": len(data), "offset": offset, "data": piece})

    assert chunk(0, data[:CHUNK])["received"] == CHUNK
    assert remote_error(chunk, 2 * CHUNK, data[2 * CHUNK :]).code == "bad_request"  # a gap
    assert remote_error(chunk, CHUNK - 1, data[CHUNK - 1 : 2 * CHUNK - 1]).code == "bad_request"  # an overlap
    assert remote_error(chunk, CHUNK, data[CHUNK:]).code == "bad_request"  # more than one chunk
    # The refusals left the upload where it was: it continues from CHUNK and completes.
    assert chunk(CHUNK, data[CHUNK : 2 * CHUNK])["received"] == 2 * CHUNK
    assert chunk(2 * CHUNK, data[2 * CHUNK :]) == {"received": 3 * CHUNK, "complete": True}
    file_record(writer, "writer2", data, name="three.bin")
    assert download(writer, digest) == data


def test_uploads_over_the_limits_are_refused(cluster: LocalCluster, uploaded: bytes) -> None:
    writer = cluster.client("writer2")
    digest = "cd" * 32
    too_big = {"sha256": digest, "size": MAX_FILE + 1, "offset": 0, "data": b"x"}
    assert remote_error(writer.call, "file.upload", too_big).code == "bad_request"
    past_size = {"sha256": digest, "size": 3, "offset": 0, "data": b"four"}
    assert remote_error(writer.call, "file.upload", past_size).code == "bad_request"
    big_chunk = {"sha256": digest, "size": MAX_FILE, "offset": 0, "data": b"x" * (CHUNK + 1)}
    assert remote_error(writer.call, "file.upload", big_chunk).code == "bad_request"
    not_hex = {"sha256": "../../etc/passwd", "size": 1, "offset": 0, "data": b"x"}
    assert remote_error(writer.call, "file.upload", not_hex).code == "bad_blob"


def test_knowing_a_hash_is_not_enough_to_claim_a_file(cluster: LocalCluster, uploaded: bytes) -> None:
    """uploads.py: "knowing a file's hash must not be enough to claim to have uploaded it".

    writer2 never uploaded writer1's file; a record of it by writer2 must be refused like any
    record of a file not uploaded, or writer2 becomes an uploader and may read the file.
    """
    thief = cluster.client("writer2")
    before = ledger_size(thief)
    digest = hashlib.sha256(uploaded).hexdigest()
    claimed = remote_error(file_record, thief, "writer2", uploaded, name="mine-now.pdf")
    assert claimed.code == "not_found"
    assert ledger_size(thief) == before
    denied = remote_error(thief.call, "file.download", {"sha256": digest, "offset": 0, "length": CHUNK})
    assert denied.code == "not_found"


def test_the_uploader_still_reads_the_file_after_a_restart(cluster: LocalCluster, uploaded: bytes) -> None:
    assert cluster.restart_node("ingest-1") == 0
    writer = cluster.client("writer1")
    assert download(writer, hashlib.sha256(uploaded).hexdigest()) == uploaded


def first_chunk(client: Client, data: bytes) -> Any:
    chunk = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "offset": 0, "data": data[:CHUNK]}
    return client.call("file.upload", chunk)


def test_uploads_no_record_names_are_refused_past_the_quota_until_one_is_recorded(cluster: LocalCluster) -> None:
    """Completed uploads count until a file record names them (outsider o23 HIGH 1: completed ones
    counted nowhere, so one writer filled the home's disk with files no record named)."""
    writer, other = cluster.client("writer3"), cluster.client("writer1")
    files = [os.urandom(2 * CHUNK) for _ in range(PARTIAL_UPLOADS + 1)]
    assert first_chunk(writer, files[0]) == {"received": CHUNK, "complete": False}
    assert upload(writer, files[1])[-1] == {"received": 2 * CHUNK, "complete": True}
    refused = remote_error(first_chunk, writer, files[-1])
    assert refused.code == "upload_quota" and "no file record names" in refused.message
    assert first_chunk(other, files[-1]) == {"received": CHUNK, "complete": False}  # a quota of its own
    # Completing the partial one frees nothing: no record names it yet.
    assert upload(writer, files[0])[-1] == {"received": 2 * CHUNK, "complete": True}
    assert remote_error(first_chunk, writer, files[-1]).code == "upload_quota"
    # Recording one makes it the ledger's: its place is free, and the others still record.
    assert file_record(writer, "writer3", files[1], name="second.bin")["duplicate"] is False
    assert upload(writer, files[-1])[-1]["complete"] is True
    assert upload(other, files[-1])[-1]["complete"] is True
    for data in (files[0], files[-1]):
        file_record(writer, "writer3", data, name="more.bin")
    assert download(writer, hashlib.sha256(files[1]).hexdigest()) == files[1]
