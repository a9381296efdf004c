"""File uploads in chunks, staged per account until complete, then kept as a blob.

A partial upload lives in ``uploads/<account tag>-<sha256>.part``: the account tag is a
hash of the account name and the digest is checked hex, so no client string ever becomes
a path. The last chunk moves the file into the content-addressed blob area only if its
SHA-256 is the one announced, and leaves a receipt, ``<account tag>-<sha256>.done``, that
lets the account record the file. Every upload is made in full, even of a blob the node
already holds: knowing a file's hash must not be enough to claim to have uploaded it.

An upload is disk an account holds before any record accounts for it, complete or not: a
completed one that no ``file`` record names had no grant and no proof of work behind it
(outsider o23 filled a home's disk with them, 80 MB in 3.5 s). So each account has a quota on
this node ([ingest] in the cluster file) over its partial uploads and its completed ones no
record names yet: at most ``max_partial_uploads`` of them, and at most
``max_partial_upload_bytes`` counting each other one's bytes (a completed one's: its blob's)
and the announced size of the one being sent (so no write ever takes the account past it).
A completed upload stops counting once a ``file`` record of a ledger this node holds names
its SHA-256: it is then the ledger's (the record's grant and proof of work paid for it), and
its receipt becomes ``<account tag>-<sha256>.recorded``. One untouched for
``partial_upload_expiry_ms`` is deleted by the next chunk any account sends: a partial file,
or a completed upload's receipt and, unless something else still needs it, its blob.

A blob a record names is never deleted: a record checked against a receipt holds it
(:meth:`Uploads.claim`) until the record was placed, when the rules' state names the file, or
refused; the sweep decides under the lock the claim takes, and asks the rules' state only for
what no claim holds.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from ..config.cluster import IngestSettings
from ..node.blobs import BlobStore, check_digest, fsync_dir
from ..node.errors import BadRequestError, BlobError, UploadQuotaError

PART = ".part"
DONE = ".done"  # a completed upload no record is known to name: it counts, and expires
RECORDED = ".recorded"  # a completed upload a file record named: the ledger's, kept

# Whether a file record of a ledger the node holds names a SHA-256; None when that cannot be
# told now (the rules are reading a files ledger again): nothing is deleted on a None.
Recorded = Callable[[str], "bool | None"]


def _never_recorded(sha256: str) -> bool:
    return False


class Uploads:
    def __init__(
        self,
        directory: Path,
        blobs: BlobStore,
        settings: IngestSettings,
        clock: Callable[[], float] = time.time,
        recorded: Recorded = _never_recorded,
    ) -> None:
        self.directory = directory
        self.blobs = blobs
        self.max_file_bytes = settings.max_file_bytes
        self.max_files = settings.max_partial_uploads
        self.max_bytes = settings.max_partial_upload_bytes
        self.expiry_s = settings.partial_upload_expiry_ms / 1000
        self._clock = clock
        self._recorded = recorded
        # Held by the sweep's decisions, a claim's check and a completion's blob and receipt, so
        # that none of them sees the others half done. Only the request loop's thread takes it.
        self._lock = threading.Lock()
        # SHA-256 -> how many records checked against a receipt are not placed (or refused) yet.
        # Released from the store's committer thread: a lock of its own, never held long.
        self._claims: Counter[str] = Counter()
        self._claims_lock = threading.Lock()
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
        return self._sizes(self.directory.glob(f"{self._tag(account)}-*{PART}"))

    def unrecorded(self, account: str) -> dict[Path, int]:
        """The account's completed uploads on this node that no record names (their receipts),
        and the bytes of each one's blob. One a record names now becomes ``.recorded`` here."""
        held: dict[Path, int] = {}
        for receipt in self.directory.glob(f"{self._tag(account)}-*{DONE}"):
            sha256 = _digest_of(receipt)
            if sha256 is None:
                continue
            if self._claimed(sha256):
                held[receipt] = self._blob_size(sha256)  # not placed yet: it may still be refused
            elif self._recorded(sha256) is True:
                self._mark_recorded(receipt)
            elif receipt.exists():
                held[receipt] = self._blob_size(sha256)
        return held

    def _sizes(self, paths: Iterator[Path]) -> dict[Path, int]:
        held: dict[Path, int] = {}
        for path in paths:
            try:
                held[path] = path.stat().st_size
            except FileNotFoundError:  # completed or expired meanwhile
                continue
        return held

    def _blob_size(self, sha256: str) -> int:
        try:
            return self.blobs.path_of(sha256).stat().st_size
        except FileNotFoundError:
            return 0

    def _mark_recorded(self, receipt: Path) -> None:
        try:
            os.replace(receipt, receipt.with_suffix(RECORDED))
        except FileNotFoundError:
            return

    def expire(self) -> int:
        """Delete every upload, of any account, untouched for the expiry and named by no record:
        partial files, and completed uploads' receipts and blobs (a blob only once no receipt,
        claim or record needs it). Returns how many uploads were dropped."""
        cutoff = self._clock() - self.expiry_s
        dropped = 0
        with self._lock:
            for path in self.directory.glob(f"*{PART}"):
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        dropped += 1
                except FileNotFoundError:
                    continue
            for receipt in self.directory.glob(f"*{DONE}"):
                try:
                    if receipt.stat().st_mtime >= cutoff:
                        continue
                except FileNotFoundError:
                    continue
                sha256 = _digest_of(receipt)
                if sha256 is None:
                    continue
                if self._claimed(sha256):
                    continue  # a record of it is on its way: its outcome decides
                named = self._recorded(sha256)
                if named is True:
                    self._mark_recorded(receipt)
                    continue
                if named is None:
                    continue  # cannot be told now: the next sweep decides
                receipt.unlink(missing_ok=True)
                dropped += 1
                if not self._needed(sha256):
                    self.blobs.discard(sha256)
        return dropped

    def _needed(self, sha256: str) -> bool:
        """Whether another account's receipt of the blob, or a claim, still needs it."""
        if self._claimed(sha256):
            return True
        return any(True for _ in self.directory.glob(f"*-{sha256}{DONE}")) or any(
            True for _ in self.directory.glob(f"*-{sha256}{RECORDED}")
        )

    def _claimed(self, sha256: str) -> bool:
        with self._claims_lock:
            return self._claims[sha256] > 0

    def claim(self, account: str, sha256: str) -> bool:
        """Whether ``account`` uploaded the whole file ``sha256`` to this node; if so its blob is
        held (never expired) until :meth:`release`, which the record's placing or refusal calls."""
        with self._lock:
            if not self.completed(account, sha256) or not self.blobs.has(sha256):
                return False
            with self._claims_lock:
                self._claims[sha256] += 1
            return True

    def release(self, sha256: str) -> None:
        """End a :meth:`claim`: the record was placed (the rules' state names the file now) or refused."""
        with self._claims_lock:
            self._claims[sha256] -= 1
            if self._claims[sha256] <= 0:
                del self._claims[sha256]

    def _check_quota(self, account: str, part: Path, size: int) -> None:
        """Raises UploadQuotaError if this upload would take the account past its quota."""
        with self._lock:
            mine = {**self.partial(account), **self.unrecorded(account)}
        done = part.with_suffix(DONE)
        others = {path: held for path, held in mine.items() if path not in (part, done)}
        if part not in mine and done not in mine and len(others) >= self.max_files:
            raise UploadQuotaError(
                f"{len(others)} uploads no file record names already (partial or complete), the most an"
                " account may have on this node: record or finish one, or wait until one expires"
            )
        held = sum(others.values())
        if held + size > self.max_bytes:
            raise UploadQuotaError(
                f"{size} bytes beside the {held} of your other uploads no file record names would pass"
                f" this node's quota of {self.max_bytes} bytes: record or finish one, or wait until one expires"
            )

    def _receipt(self, account: str, sha256: str) -> Path:
        return self.directory / f"{self._name(account, sha256)}{DONE}"

    def completed(self, account: str, sha256: str) -> bool:
        """Whether ``account`` uploaded the whole file ``sha256`` to this node (and it has not expired)."""
        try:
            receipt = self._receipt(account, sha256)
        except BlobError:
            return False
        return receipt.is_file() or receipt.with_suffix(RECORDED).is_file()

    def receive(self, account: str, sha256: str, size: int, offset: int, data: bytes) -> tuple[int, bool]:
        """Add a chunk at ``offset``; returns (bytes received, complete). Offset 0 starts over.

        Raises BlobError for a size over ``max_file_bytes``, a malformed digest or bytes that do
        not hash to it; BadRequestError for an offset that does not continue the upload or a
        chunk past ``size``; UploadQuotaError when the account's uploads no record names would
        pass the quota (nothing is written then).
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
        with self._lock:  # no sweep drops the blob between its writing and its receipt's
            try:
                self.blobs.put(_chunks(part), expected=sha256, max_size=self.max_file_bytes)
            finally:
                part.unlink(missing_ok=True)
            receipt = self._receipt(account, sha256)
            if receipt.with_suffix(RECORDED).is_file():
                return received, True  # recorded before: the ledger's already, nothing to count
            # Durable before the answer: the file record that follows is accepted on it. Touched:
            # an upload made again starts its expiry again.
            fd = os.open(receipt, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                now = self._clock()
                os.utime(fd, (now, now))
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(self.directory)
        return received, True


def _digest_of(receipt: Path) -> str | None:
    """The SHA-256 a receipt's name holds (``<account tag>-<sha256>.<state>``); None for a name
    this module did not make."""
    try:
        return check_digest(receipt.name.partition("-")[2].partition(".")[0])
    except BlobError:
        return None


def _chunks(path: Path, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(chunk_size):
            yield chunk
