"""File uploads in chunks, staged per account until complete, then kept as a blob.

A partial upload lives in ``uploads/<account tag>-<sha256>.part``: the account tag is a
hash of the account name and the digest is checked hex, so no client string ever becomes
a path. The last chunk moves the file into the content-addressed blob area only if its
SHA-256 is the one announced. Every upload is made in full, even of a blob the node already
holds: knowing a file's hash must not be enough to claim to have uploaded it.

Partial files are disk an account holds before any record accounts for it, so each account
has a quota on this node ([ingest] in the cluster file): at most ``max_partial_uploads``
files, and at most ``max_partial_upload_bytes`` counting each other partial file's bytes and
the announced size of the one being sent (so no write ever takes the account past it). A
completed upload frees its share at once; one untouched for ``partial_upload_expiry_ms`` is
deleted by the next chunk any account sends.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..config.cluster import IngestSettings
from ..node.blobs import BlobStore, check_digest, fsync_dir
from ..node.errors import BadRequestError, BlobError, UploadQuotaError

PART = ".part"


class Uploads:
    def __init__(
        self, directory: Path, blobs: BlobStore, settings: IngestSettings, clock: Callable[[], float] = time.time
    ) -> None:
        self.directory = directory
        self.blobs = blobs
        self.max_file_bytes = settings.max_file_bytes
        self.max_files = settings.max_partial_uploads
        self.max_bytes = settings.max_partial_upload_bytes
        self.expiry_s = settings.partial_upload_expiry_ms / 1000
        self._clock = clock
        directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _tag(account: str) -> str:
        return hashlib.sha256(account.encode()).hexdigest()[:32]

    def _name(self, account: str, sha256: str) -> str:
        return f"{self._tag(account)}-{check_digest(sha256)}"

    def _part(self, account: str, sha256: str) -> Path:
        return self.directory / f"{self._name(account, sha256)}{PART}"

    def partial(self, account: str) -> dict[Path, int]:
        """The account's partial uploads on this node and the bytes each holds."""
        held: dict[Path, int] = {}
        for path in self.directory.glob(f"{self._tag(account)}-*{PART}"):
            try:
                held[path] = path.stat().st_size
            except FileNotFoundError:  # completed or expired meanwhile
                continue
        return held

    def expire(self) -> int:
        """Delete every partial upload, of any account, untouched for the expiry; returns how many."""
        cutoff = self._clock() - self.expiry_s
        dropped = 0
        for path in self.directory.glob(f"*{PART}"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    dropped += 1
            except FileNotFoundError:
                continue
        return dropped

    def _check_quota(self, account: str, part: Path, size: int) -> None:
        """Raises UploadQuotaError if this upload would take the account past its quota."""
        mine = self.partial(account)
        others = {path: held for path, held in mine.items() if path != part}
        if part not in mine and len(others) >= self.max_files:
            raise UploadQuotaError(
                f"{len(others)} partial uploads already, the most an account may have on this node:"
                " finish one, or wait until an abandoned one expires"
            )
        held = sum(others.values())
        if held + size > self.max_bytes:
            raise UploadQuotaError(
                f"{size} bytes beside the {held} of your other partial uploads would pass this node's"
                f" quota of {self.max_bytes} bytes: finish one, or wait until an abandoned one expires"
            )

    def _receipt(self, account: str, sha256: str) -> Path:
        return self.directory / f"{self._name(account, sha256)}.done"

    def completed(self, account: str, sha256: str) -> bool:
        """Whether ``account`` uploaded the whole file ``sha256`` to this node."""
        try:
            return self._receipt(account, sha256).is_file()
        except BlobError:
            return False

    def receive(self, account: str, sha256: str, size: int, offset: int, data: bytes) -> tuple[int, bool]:
        """Add a chunk at ``offset``; returns (bytes received, complete). Offset 0 starts over.

        Raises BlobError for a size over ``max_file_bytes``, a malformed digest or bytes that do
        not hash to it; BadRequestError for an offset that does not continue the upload or a
        chunk past ``size``; UploadQuotaError when the account's partial uploads would pass the
        quota (nothing is written then).
        """
        if size > self.max_file_bytes:
            raise BlobError(f"a file may be at most {self.max_file_bytes} bytes")
        self.expire()
        part = self._part(account, sha256)
        self._check_quota(account, part, size)
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
