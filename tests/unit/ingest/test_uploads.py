"""Uploads: chunks staged per account, and each account's quota on a node of the uploads no
file record names yet, partial or complete (outsider o23 HIGH 1: completed ones counted in none)."""

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


class Records:
    """The rules' state as the sweep asks it: the SHA-256s a file record names (None: unknown)."""

    def __init__(self) -> None:
        self.named: set[str] = set()
        self.unknown = False

    def __call__(self, sha256: str) -> bool | None:
        if sha256 in self.named:
            return True
        return None if self.unknown else False


@pytest.fixture
def records() -> Records:
    return Records()


@pytest.fixture
def uploads(tmp_path: Path, clock: Clock, records: Records) -> Uploads:
    return Uploads(tmp_path / "uploads", BlobStore(tmp_path / "blobs"), SETTINGS, clock=clock, recorded=records)


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
    with pytest.raises(UploadQuotaError, match="2 uploads no file record names already") as info:
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


def complete(uploads: Uploads, account: str, data: bytes) -> str:
    """``data`` uploaded whole in one chunk: a completed upload, at the clock's time."""
    digest = hashlib.sha256(data).hexdigest()
    assert uploads.receive(account, digest, len(data), 0, data) == (len(data), True)
    return digest


def test_a_completed_upload_no_record_names_keeps_its_share(uploads: Uploads) -> None:
    data = b"a" * 50
    digest = start(uploads, "alice", data)
    start(uploads, "alice", b"b" * 50)
    assert uploads.receive("alice", digest, 50, 10, data[10:]) == (50, True)
    assert uploads.completed("alice", digest)
    third = b"c" * 20
    with pytest.raises(UploadQuotaError, match="2 uploads no file record names already") as info:
        uploads.receive("alice", hashlib.sha256(third).hexdigest(), len(third), 0, third[:10])
    assert info.value.code == "upload_quota"
    start(uploads, "bob", third)  # the quota is per account


def test_completed_uploads_alone_reach_the_quota_in_files_and_in_bytes(uploads: Uploads) -> None:
    """o23's way: whole files sent one after another, none recorded, none ever partial for long."""
    complete(uploads, "mallory", b"a" * 100)
    big = b"b" * 60
    with pytest.raises(UploadQuotaError, match=r"60 bytes beside the 100 .* quota of 150 bytes"):
        uploads.receive("mallory", hashlib.sha256(big).hexdigest(), len(big), 0, big)
    complete(uploads, "mallory", b"c" * 50)
    with pytest.raises(UploadQuotaError, match="2 uploads no file record names already"):
        complete(uploads, "mallory", b"d")
    assert len(list(uploads.blobs.directory.glob("??/*"))) == 2  # nothing was kept of the refused ones


def test_a_file_record_naming_an_upload_frees_its_share_and_keeps_the_receipt(
    uploads: Uploads, records: Records
) -> None:
    first = complete(uploads, "alice", b"a" * 100)
    complete(uploads, "alice", b"b" * 40)
    records.named.add(first)  # a file record names it: the ledger's now
    complete(uploads, "alice", b"c" * 100)  # its place and its bytes are free again
    assert uploads.completed("alice", first)  # the author may still record it on another ledger
    assert uploads.unrecorded("alice").keys() == {
        uploads.directory / f"{Uploads._tag('alice')}-{hashlib.sha256(d).hexdigest()}.done"
        for d in (b"b" * 40, b"c" * 100)
    }


def test_an_upload_made_again_is_not_counted_twice(uploads: Uploads) -> None:
    data = b"a" * 100
    complete(uploads, "alice", data)
    complete(uploads, "alice", data)  # 100 + 100 would pass 150: its own receipt is not another one
    assert len(uploads.unrecorded("alice")) == 1


def test_a_completed_upload_no_record_names_expires_with_its_blob(uploads: Uploads, clock: Clock) -> None:
    digest = complete(uploads, "mallory", b"a" * 100)
    clock.now += 61
    start(uploads, "bob", b"b" * 50)  # any account's chunk sweeps
    assert not uploads.completed("mallory", digest)
    assert not uploads.blobs.has(digest)
    assert uploads.unrecorded("mallory") == {}
    complete(uploads, "mallory", b"c" * 100)  # its share is free


def test_a_blob_a_record_names_is_never_expired(uploads: Uploads, clock: Clock, records: Records) -> None:
    digest = complete(uploads, "alice", b"a" * 100)
    records.named.add(digest)
    clock.now += 3600
    assert uploads.expire() == 0
    assert uploads.blobs.has(digest) and uploads.completed("alice", digest)


def test_an_expired_upload_leaves_the_blob_another_account_still_holds(uploads: Uploads, clock: Clock) -> None:
    data = b"a" * 100
    digest = complete(uploads, "alice", data)
    clock.now += 30
    complete(uploads, "bob", data)
    clock.now += 31  # alice's receipt is 61 s old, bob's 31 s
    assert uploads.expire() == 1
    assert not uploads.completed("alice", digest) and uploads.completed("bob", digest)
    assert uploads.blobs.intact(digest)
    clock.now += 30
    assert uploads.expire() == 1
    assert not uploads.blobs.has(digest)


def test_nothing_is_deleted_while_the_rules_cannot_tell_whether_a_record_names_it(
    uploads: Uploads, clock: Clock, records: Records
) -> None:
    digest = complete(uploads, "alice", b"a" * 100)
    records.unknown = True
    clock.now += 61
    assert uploads.expire() == 0
    assert uploads.blobs.has(digest) and uploads.completed("alice", digest)
    records.unknown = False
    assert uploads.expire() == 1


def test_a_record_checked_as_its_upload_expires_keeps_the_blob(
    uploads: Uploads, clock: Clock, records: Records
) -> None:
    """The race: a file record is checked against its upload's receipt (claim) and queued; the
    upload's expiry passes and a sweep runs before the record is placed. The claim holds the
    blob until the record is placed, when the rules' state names the file."""
    digest = complete(uploads, "alice", b"a" * 100)
    clock.now += 61
    assert uploads.claim("alice", digest)  # the put's check, on the request thread
    assert uploads.expire() == 0  # another account's chunk, before the round is committed
    assert uploads.blobs.intact(digest) and uploads.completed("alice", digest)
    records.named.add(digest)  # the record placed: the rules' state names the file...
    uploads.release(digest)  # ...before its future completes
    assert uploads.expire() == 0
    assert uploads.blobs.intact(digest) and uploads.completed("alice", digest)


def test_a_record_refused_after_its_claim_lets_the_upload_expire(uploads: Uploads, clock: Clock) -> None:
    digest = complete(uploads, "alice", b"a" * 100)
    assert uploads.claim("alice", digest)
    clock.now += 61
    assert uploads.expire() == 0
    uploads.release(digest)  # refused (no grant, say): nothing names the file
    assert uploads.expire() == 1
    assert not uploads.blobs.has(digest) and not uploads.claim("alice", digest)


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
