"""Files to and from a node: ``file.upload`` and ``file.download`` in chunks (docs/PROTOCOL.md 6.1).

Uploading hashes the file first, then sends it in chunks to the files ledger's home node;
the node answers how much it holds (``received``), so an upload continues where the node
stands and stops as soon as the node says ``complete`` (it may hold that file already).
Only then is the ``file`` record written: name, size, SHA-256.

Downloading writes into a temporary file beside the destination and moves it into place
only after its SHA-256 matched: a half-written or corrupted download never lies under the
name asked for. The name is always the one given on the command line, never one a node
sends. A node's answers are bounded by what was asked: never more bytes than the size it
stated, never a size over the cluster's ``max_file_bytes``.

Replicas keep copies of the files (PROTOCOL 7.4): unless ``--node`` pins the node, a download
that the session's node cannot give (it does not answer, or has no sound copy: ``bad_blob``)
starts over from the next node of the configuration that serves reads, ingest nodes first.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..broker.client import NodeAddress
from ..client.session import Session, node_address, reply_field
from ..config.cluster import IngestSettings
from ..node.errors import BlobError, NodeUnavailableError, RemoteError, SourceChangedError, UsageError
from .client_payloads import file_record
from .paths import output_file
from .progress import Progress

# Room for the request map around a chunk's data (id, command, the other arguments).
REQUEST_OVERHEAD = 1024
_READ_SIZE = 1024 * 1024


def chunk_size(settings: IngestSettings) -> int:
    """The bytes per request: the node's chunk size, as long as a request stays under its message limit."""
    return max(1, min(settings.file_chunk_bytes, settings.max_message_bytes - REQUEST_OVERHEAD))


def chunks(size: int, chunk: int, start: int = 0) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` of each chunk from ``start``; an empty file is one empty chunk."""
    if size == 0:
        yield 0, 0
        return
    for offset in range(start, size, chunk):
        yield offset, min(chunk, size - offset)


@dataclass(frozen=True, slots=True)
class Upload:
    name: str
    size: int
    sha256: str
    sent: int  # bytes sent: less than size when the node already held part or all of it
    receipt: dict[str, Any]


def digest_of(f: BinaryIO) -> tuple[int, str]:
    """Size and SHA-256 (hex) of an open file, read from its start."""
    f.seek(0)
    digest = hashlib.sha256()
    size = 0
    while block := f.read(_READ_SIZE):
        digest.update(block)
        size += len(block)
    return size, digest.hexdigest()


def upload_file(
    session: Session,
    ledger: str,
    path: Path,
    name: str,
    progress: Progress,
    *,
    request_id: str | None = None,
    ts: int | None = None,
) -> Upload:
    """Upload ``path`` in chunks, then write its ``file`` record (with ``request_id`` and ``ts``, if given)."""
    settings = session.config.ingest
    node = session.ledger_node(ledger)
    with path.open("rb", buffering=0) as f:  # unbuffered: every chunk is read from the file as it is now
        size, sha256 = digest_of(f)
        if size > settings.max_file_bytes:
            raise UsageError(f"{path}: {size} bytes, over the cluster's limit of {settings.max_file_bytes}")
        progress.total = size
        step = chunk_size(settings)
        offset, sent = 0, 0
        while True:
            data = os.pread(f.fileno(), min(step, size - offset), offset)
            if offset + len(data) != min(offset + step, size):
                raise SourceChangedError(f"{path}: changed while it was being uploaded")
            args = {"sha256": sha256, "size": size, "offset": offset, "data": data}
            result = session.call("file.upload", args, node=node)
            sent += len(data)
            received = reply_field(result, "received", int)
            if reply_field(result, "complete", bool):
                progress.advance(size - progress.done)
                break
            if not offset < received <= size:
                raise NodeUnavailableError(f"file.upload: the node holds {received} bytes after offset {offset}")
            progress.advance(received - progress.done)
            offset = received
    receipt = session.put(ledger, file_record(name, size, sha256), request_id, ts)
    return Upload(name, size, sha256, sent, receipt)


def destination(out: Path, sha256: str, force: bool) -> Path:
    """Where a download goes: ``out``, or ``out/<sha256>`` for a directory; refused if taken."""
    path = out / sha256 if out.is_dir() else out
    if not force and (path.exists() or path.is_symlink()):
        raise UsageError(f"{path}: already exists; remove it first or give --force")
    return output_file(path)


def download_file(session: Session, sha256: str, out: Path, force: bool, progress: Progress) -> tuple[Path, int]:
    path = destination(out, sha256, force)
    limit = session.config.ingest.max_file_bytes
    step = chunk_size(session.config.ingest)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.part")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            size = _receive_anywhere(session, sha256, step, limit, f, progress)
            f.flush()
            os.fsync(f.fileno())
        _place(temporary, path, force)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return path, size


def _download_nodes(session: Session) -> list[NodeAddress | None]:
    """Where a download is tried, in order: the session's node (None), then, unless --node
    pinned it, every other ingest node and replica of the configuration."""
    if session.pinned:
        return [None]
    servers = [n for n in session.config.nodes.values() if n.role in ("ingest", "replica")]
    others = [n for n in servers if n.name != session.node.name]
    others.sort(key=lambda n: n.role != "ingest")  # stable: ingest nodes first, in file order
    return [None, *(node_address(session.config, n.name) for n in others)]


def _receive_anywhere(session: Session, sha256: str, step: int, limit: int, f: BinaryIO, progress: Progress) -> int:
    """The file from the first node that gives all of it; the last node's error if none does."""
    nodes = _download_nodes(session)
    for i, node in enumerate(nodes):
        try:
            return _receive(session, sha256, step, limit, f, progress, node)
        except (NodeUnavailableError, RemoteError) as e:
            if i + 1 == len(nodes) or (isinstance(e, RemoteError) and e.code != "bad_blob"):
                raise
            f.seek(0)
            f.truncate()
            progress.done = 0
    raise AssertionError("unreachable: the last node's error is raised")


def _receive(
    session: Session,
    sha256: str,
    step: int,
    limit: int,
    f: BinaryIO,
    progress: Progress,
    node: NodeAddress | None = None,
) -> int:
    digest = hashlib.sha256()
    offset = 0
    size: int | None = None
    while size is None or offset < size:
        result = session.call("file.download", {"sha256": sha256, "offset": offset, "length": step}, node=node)
        data = reply_field(result, "data", bytes)
        stated = reply_field(result, "size", int)
        if size is None:
            if stated > limit:
                raise NodeUnavailableError(f"file.download: the node states {stated} bytes, over the limit of {limit}")
            size = progress.total = stated
        elif stated != size:
            raise NodeUnavailableError(f"file.download: the file's size changed from {size} to {stated}")
        if len(data) > step or offset + len(data) > size or (not data and offset < size):
            raise NodeUnavailableError(f"file.download: {len(data)} bytes at offset {offset} of {size}")
        f.write(data)
        digest.update(data)
        offset += len(data)
        progress.advance(len(data))
    if digest.hexdigest() != sha256:
        raise BlobError(f"the {size} bytes received have SHA-256 {digest.hexdigest()}, not {sha256}: not kept")
    return size


def _place(temporary: Path, path: Path, force: bool) -> None:
    if force:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)  # fails if the name was taken meanwhile: nothing is overwritten
    except FileExistsError:
        raise UsageError(f"{path}: already exists; remove it first or give --force") from None
