"""A content-addressed blob area for files: named by SHA-256, written atomically.

A blob is written to a temporary file, fsynced, renamed to ``<first two hex>/<hex>`` and
its directory fsynced, so a crash leaves either the whole blob or none. Blobs are found by
their digest only, checked as 64 lower-case hex characters: no client string ever becomes
a path.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from .errors import BlobError

_DIGEST = re.compile(r"[0-9a-f]{64}")


def check_digest(digest: object) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise BlobError("a blob digest is 64 lower-case hexadecimal characters")
    return digest


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._tmp = directory / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path_of(self, digest: str) -> Path:
        digest = check_digest(digest)
        return self.directory / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self.path_of(digest).is_file()

    def put(
        self, chunks: Iterable[bytes], *, expected: str | None = None, max_size: int | None = None
    ) -> tuple[str, int]:
        """Store the concatenated chunks durably; returns (digest, size).

        With ``expected``, a blob whose digest differs is refused and nothing is kept.
        """
        if expected is not None:
            check_digest(expected)
        h = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    size += len(chunk)
                    if max_size is not None and size > max_size:
                        raise BlobError(f"blob is over the limit of {max_size} bytes")
                    h.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            digest = h.hexdigest()
            if expected is not None and digest != expected:
                raise BlobError(f"blob digest is {digest}, not the expected {expected}")
            final = self.path_of(digest)
            if not final.parent.is_dir():
                final.parent.mkdir(exist_ok=True)
                fsync_dir(self.directory)
            os.replace(tmp, final)
            fsync_dir(final.parent)
            return digest, size
        finally:
            tmp.unlink(missing_ok=True)

    def intact(self, digest: str) -> bool:
        """Whether the blob is held and its bytes still hash to its name (False if absent)."""
        try:
            return digest_of_file(self.path_of(digest)) == digest
        except FileNotFoundError:
            return False

    def discard(self, digest: str) -> None:
        """Remove the blob (a damaged copy), if held."""
        self.path_of(digest).unlink(missing_ok=True)

    def put_bytes(self, data: bytes) -> str:
        return self.put([data])[0]

    def open(self, digest: str) -> BinaryIO:
        try:
            return self.path_of(digest).open("rb")
        except FileNotFoundError as e:
            raise BlobError(f"no blob {digest}") from e

    def read_chunks(self, digest: str, chunk_size: int = 1 << 20) -> Iterable[bytes]:
        with self.open(digest) as f:
            while chunk := f.read(chunk_size):
                yield chunk


def digest_of_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """The SHA-256 (hex) of the file's bytes as they are on disk now."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()
