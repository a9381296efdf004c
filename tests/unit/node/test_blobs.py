"""The content-addressed blob area: digests as names, atomic writes, nothing left on refusal."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from vledger.node.blobs import BlobStore, check_digest
from vledger.node.errors import BlobError

DATA = "Zoë 🗳 ".encode() * 1000
DIGEST = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def files(blobs: BlobStore) -> list[Path]:
    return sorted(p for p in blobs.directory.rglob("*") if p.is_file())


def test_put_bytes_stores_under_the_digest(blobs: BlobStore) -> None:
    assert not blobs.has(DIGEST)
    assert blobs.put_bytes(DATA) == DIGEST
    assert blobs.has(DIGEST)
    assert files(blobs) == [blobs.directory / DIGEST[:2] / DIGEST]
    with blobs.open(DIGEST) as f:
        assert f.read() == DATA


def test_put_streams_chunks(blobs: BlobStore) -> None:
    chunks = [DATA[i : i + 700] for i in range(0, len(DATA), 700)]
    assert blobs.put(iter(chunks), expected=DIGEST, max_size=len(DATA)) == (DIGEST, len(DATA))
    read = list(blobs.read_chunks(DIGEST, chunk_size=4096))
    assert b"".join(read) == DATA
    assert all(len(c) == 4096 for c in read[:-1])
    assert 0 < len(read[-1]) <= 4096


def test_putting_the_same_blob_twice_keeps_one_file(blobs: BlobStore) -> None:
    blobs.put_bytes(DATA)
    assert blobs.put([DATA[:10], DATA[10:]]) == (DIGEST, len(DATA))
    assert len(files(blobs)) == 1


def test_an_empty_blob(blobs: BlobStore) -> None:
    empty = hashlib.sha256(b"").hexdigest()
    assert blobs.put([]) == (empty, 0)
    assert list(blobs.read_chunks(empty)) == []


def test_a_digest_mismatch_is_refused_and_nothing_kept(blobs: BlobStore) -> None:
    other = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(BlobError, match="not the expected") as info:
        blobs.put([DATA], expected=other)
    assert info.value.code == "bad_blob"
    assert not blobs.has(DIGEST)
    assert not blobs.has(other)
    assert files(blobs) == []
    assert list((blobs.directory / "tmp").iterdir()) == []


def test_a_blob_over_max_size_is_refused_and_nothing_kept(blobs: BlobStore) -> None:
    with pytest.raises(BlobError, match="over the limit"):
        blobs.put([DATA[:100], DATA[100:]], max_size=len(DATA) - 1)
    assert files(blobs) == []
    assert blobs.put([DATA], max_size=len(DATA)) == (DIGEST, len(DATA))


def test_a_failing_source_leaves_no_temporary_file(blobs: BlobStore) -> None:
    def broken() -> Iterator[bytes]:
        yield DATA
        raise ConnectionError("peer went away")

    with pytest.raises(ConnectionError):
        blobs.put(broken())
    assert files(blobs) == []


def test_a_missing_blob(blobs: BlobStore) -> None:
    with pytest.raises(BlobError, match="no blob"):
        blobs.open(DIGEST)
    with pytest.raises(BlobError, match="no blob"):
        list(blobs.read_chunks(DIGEST))


BAD_DIGESTS = [
    "../etc/passwd",
    "../" + "a" * 61,
    DIGEST.upper(),
    DIGEST[:63],
    DIGEST + "0",
    DIGEST + "\n",
    "g" * 64,
    "",
    DIGEST.encode(),
    None,
    int(DIGEST, 16),
]


@pytest.mark.parametrize("digest", BAD_DIGESTS)
def test_check_digest_refuses_anything_but_64_lower_case_hex(digest: object) -> None:
    with pytest.raises(BlobError, match="64 lower-case"):
        check_digest(digest)


@pytest.mark.parametrize("digest", ["../etc/passwd", "/etc/passwd", DIGEST.upper()])
def test_no_client_string_becomes_a_path(blobs: BlobStore, digest: str) -> None:
    for use in (blobs.has, blobs.open, blobs.path_of):
        with pytest.raises(BlobError):
            use(digest)
    with pytest.raises(BlobError):
        blobs.put([DATA], expected=digest)
    assert files(blobs) == []


def test_check_digest_returns_a_good_digest() -> None:
    assert check_digest(DIGEST) == DIGEST
