"""Uploads: chunks staged per account, and each account's quota of partial uploads on a node."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from vledger.config.cluster import IngestSettings
from vledger.ingest.uploads import Uploads
from vledger.node.blobs import BlobStore
from vledger.node.errors import UploadQuotaError

SETTINGS = IngestSettings(
    max_file_bytes=100, max_partial_uploads=2, max_partial_upload_bytes=150, partial_upload_expiry_ms=60_000
)
T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


CLOCK = Clock()


@pytest.fixture
def clock() -> Clock:
    CLOCK.now = T0
    return CLOCK


@pytest.fixture
def uploads(tmp_path: Path, clock: Clock) -> Uploads:
    return Uploads(tmp_path / "uploads", BlobStore(tmp_path / "blobs"), SETTINGS, clock=clock)


def start(uploads: Uploads, account: str, data: bytes, first: int = 10) -> str:
    """The first ``first`` bytes of ``data`` sent: a partial upload, touched at the clock's time."""
    digest = hashlib.sha256(data).hexdigest()
    assert uploads.receive(account, digest, len(data), 0, data[:first]) == (first, False)
    (part,) = [path for path in uploads.partial(account) if digest in path.name]
    os.utime(part, (CLOCK.now, CLOCK.now))  # the file system's clock is not the test's
    return digest


def test_an_account_may_hold_only_so_many_partial_uploads(uploads: Uploads) -> None:
    start(uploads, "alice", b"a" * 50)
    start(uploads, "alice", b"b" * 50)
    third = b"c" * 20
    with pytest.raises(UploadQuotaError, match="2 partial uploads already") as info:
        uploads.receive("alice", hashlib.sha256(third).hexdigest(), len(third), 0, third[:10])
    assert info.value.code == "upload_quota"
    assert len(uploads.partial("alice")) == 2  # nothing was written for the refused one
    start(uploads, "bob", b"d" * 50)  # the quota is per account


def test_continuing_or_restarting_an_upload_is_not_a_new_one(uploads: Uploads) -> None:
    first = b"a" * 50
    digest = start(uploads, "alice", first)
    start(uploads, "alice", b"b" * 50)
    assert uploads.receive("alice", digest, 50, 10, first[10:20]) == (20, False)
    assert uploads.receive("alice", digest, 50, 0, first[:5]) == (5, False)


def test_a_completed_upload_frees_its_share(uploads: Uploads) -> None:
    data = b"a" * 50
    digest = start(uploads, "alice", data)
    start(uploads, "alice", b"b" * 50)
    assert uploads.receive("alice", digest, 50, 10, data[10:]) == (50, True)
    assert uploads.completed("alice", digest)
    start(uploads, "alice", b"c" * 50)  # the freed place


def test_the_bytes_of_other_partial_uploads_and_the_announced_size_stay_within_the_quota(uploads: Uploads) -> None:
    start(uploads, "alice", b"a" * 100, first=60)  # 60 bytes held
    big = b"b" * 100
    with pytest.raises(UploadQuotaError, match=r"100 bytes beside the 60 .* quota of 150 bytes"):
        uploads.receive("alice", hashlib.sha256(big).hexdigest(), len(big), 0, big[:10])
    assert len(uploads.partial("alice")) == 1
    start(uploads, "alice", b"c" * 90)  # 60 + 90 fits
    start(uploads, "bob", big)  # another account's quota is its own


def test_an_upload_untouched_for_the_expiry_is_dropped_and_frees_its_share(uploads: Uploads, clock: Clock) -> None:
    start(uploads, "alice", b"a" * 50)
    clock.now += 30
    kept = start(uploads, "alice", b"b" * 50)
    clock.now += 31  # the first is 61 s old, the second 31 s
    start(uploads, "alice", b"c" * 50)  # the first expired on this chunk: room for the third
    remaining = {path.name.split("-", 1)[1].removesuffix(".part") for path in uploads.partial("alice")}
    assert kept in remaining and len(remaining) == 2
    clock.now += 61
    assert uploads.expire() == 2
    assert uploads.partial("alice") == {}
