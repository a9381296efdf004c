"""File uploads in chunks, staged per account until complete, then kept as a blob.

A partial upload lives in ``uploads/<account tag>-<sha256>.part``: the account tag is a
hash of the account name and the digest is checked hex, so no client string ever becomes
a path. The last chunk moves the file into the content-addressed blob area only if its
SHA-256 is the one announced. Every upload is made in full, even of a blob the node already
holds: knowing a file's hash must not be enough to claim to have uploaded it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..node.blobs import BlobStore, check_digest, fsync_dir
from ..node.errors import BadRequestError, BlobError


class Uploads:
    def __init__(self, directory: Path, blobs: BlobStore, max_file_bytes: int) -> None:
        self.directory = directory
        self.blobs = blobs
        self.max_file_bytes = max_file_bytes
        directory.mkdir(parents=True, exist_ok=True)

    def _name(self, account: str, sha256: str) -> str:
        tag = hashlib.sha256(account.encode()).hexdigest()[:32]
        return f"{tag}-{check_digest(sha256)}"

    def _part(self, account: str, sha256: str) -> Path:
        return self.directory / f"{self._name(account, sha256)}.part"

    def _receipt(self, account: str, sha256: str) -> Path:
        return self.directory / f"{self._name(account, sha256)}.done"

    def completed(self, account: str, sha256: str) -> bool:
        """Whether ``account`` uploaded the whole file ``sha256`` to this node."""
        try:
            return self._receipt(account, sha256).is_file()
        except BlobError:
            return False

    def receive(self, account: str, sha256: str, size: int, offset: int, data: bytes) -> tuple[int, bool]:
        """Add a chunk at ``offset``; returns (bytes received, complete). Offset 0 starts over."""
        if size > self.max_file_bytes:
            raise BlobError(f"a file may be at most {self.max_file_bytes} bytes")
        part = self._part(account, sha256)
        have = part.stat().st_size if part.exists() else 0
        if offset not in (0, have):
            raise BadRequestError(f"offset {offset} does not continue this upload, which holds {have} bytes")
        if offset + len(data) > size:
            raise BadRequestError(f"chunk ends at {offset + len(data)}, past the announced size {size}")
        with part.open("r+b" if offset else "wb") as f:
            f.truncate(offset)
            f.seek(offset)
            f.write(data)
        received = offset + len(data)
        if received < size:
            return received, False
        try:
            self.blobs.put(_chunks(part), expected=sha256, max_size=self.max_file_bytes)
        finally:
            part.unlink(missing_ok=True)
        # Durable before the answer: the file record that follows is accepted on it.
        receipt = self._receipt(account, sha256)
        fd = os.open(receipt, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.directory)
        return received, True


def _chunks(path: Path, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(chunk_size):
            yield chunk
