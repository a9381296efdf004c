"""BlobFetcher: a blob is kept only with the chain's SHA-256 and size; a source serving other bytes is reported."""

from __future__ import annotations

import errno
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.client import NodeAddress
from vledger.broker.keys import new_keypair
from vledger.broker.replication import Alert
from vledger.ingest.blob_copy import BlobFetcher, Wanted
from vledger.node.blobs import BlobStore
from vledger.node.errors import NodeUnavailableError, RemoteError
from vledger.node.storefile import damaged_file
from vledger.tests.sqlite_faults import malformed

CHUNK = 10
DATA = bytes(range(37))
WANTED = Wanted(hashlib.sha256(DATA).hexdigest(), len(DATA), "papers", 3)


class Source:
    """A node's file.download as a simulator: ``serve`` gives its bytes, or raises."""

    def __init__(self, serve: Callable[[], bytes]) -> None:
        self.serve = serve
        self.calls = 0

    def call(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        assert cmd == "file.download" and args is not None and args["sha256"] == WANTED.sha256
        self.calls += 1
        data = self.serve()
        offset = args["offset"]
        return {"data": data[offset : offset + args["length"]], "size": len(data)}

    def close(self) -> None:
        pass


def _fetcher(tmp_path: Path, sources: dict[str, Source]) -> tuple[BlobFetcher, list[Alert]]:
    alerts: list[Alert] = []
    addresses = [(name, NodeAddress(f"tcp://{name}", "k" * 40)) for name in sources]
    fetcher = BlobFetcher(
        "replica-1",
        BlobStore(tmp_path / "blobs"),
        new_keypair(),
        lambda ledger: addresses,
        chunk_bytes=CHUNK,
        max_message_bytes=1 << 20,
        on_alert=alerts.append,
        connect=lambda address: sources[address.endpoint.removeprefix("tcp://")],
    )
    return fetcher, alerts


def _wait(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.01)


def _down() -> bytes:
    raise NodeUnavailableError("no answer")


def _refused() -> bytes:
    raise RemoteError("not_found", "no such file", {})


def test_the_blob_is_copied_in_chunks_from_the_first_source(tmp_path: Path) -> None:
    home, other = Source(lambda: DATA), Source(lambda: DATA)
    fetcher, alerts = _fetcher(tmp_path, {"ingest-1": home, "replica-2": other})
    assert fetcher.fetch(WANTED)
    assert fetcher.blobs.path_of(WANTED.sha256).read_bytes() == DATA
    assert (home.calls, other.calls, alerts) == (4, 0, [])


def test_a_source_down_or_without_the_file_is_skipped_silently(tmp_path: Path) -> None:
    fetcher, alerts = _fetcher(tmp_path, {"ingest-1": Source(_down), "a": Source(_refused), "b": Source(lambda: DATA)})
    assert fetcher.fetch(WANTED)
    assert fetcher.blobs.has(WANTED.sha256)
    assert alerts == []


@pytest.mark.parametrize("served", [DATA[:-1] + b"X", DATA + b"more"], ids=["other bytes", "another size"])
def test_a_source_serving_other_bytes_is_reported_and_the_next_asked(tmp_path: Path, served: bytes) -> None:
    fetcher, alerts = _fetcher(tmp_path, {"ingest-1": Source(lambda: served), "replica-2": Source(lambda: DATA)})
    assert fetcher.fetch(WANTED)
    assert fetcher.blobs.path_of(WANTED.sha256).read_bytes() == DATA
    assert [(a.what, a.source, a.ledger, a.height, a.expected) for a in alerts] == [
        ("bad_blob", "ingest-1", "papers", 3, WANTED.sha256)
    ]
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []  # nothing of the bad bytes is kept


def test_no_source_with_the_right_bytes_keeps_nothing(tmp_path: Path) -> None:
    fetcher, alerts = _fetcher(tmp_path, {"ingest-1": Source(lambda: DATA[::-1]), "b": Source(_down)})
    assert not fetcher.fetch(WANTED)
    assert not fetcher.blobs.has(WANTED.sha256)
    assert len(alerts) == 1


def test_the_thread_asks_again_until_a_source_has_it(tmp_path: Path) -> None:
    ready = threading.Event()
    home = Source(lambda: DATA if ready.is_set() else _refused())
    fetcher, _ = _fetcher(tmp_path, {"ingest-1": home})
    fetcher.start()
    try:
        fetcher.want([WANTED])
        _wait(lambda: home.calls > 0, "the first attempt")
        assert fetcher.pending() == 1  # refused: still wanted
        ready.set()
        _wait(lambda: fetcher.pending() == 0, "the retry after the backoff")
        assert fetcher.blobs.path_of(WANTED.sha256).read_bytes() == DATA
    finally:
        fetcher.stop()


def test_a_held_blob_is_not_asked_for(tmp_path: Path) -> None:
    home = Source(lambda: DATA)
    fetcher, _ = _fetcher(tmp_path, {"ingest-1": home})
    fetcher.blobs.put_bytes(DATA)
    fetcher.want([WANTED])
    assert fetcher.pending() == 0
    assert home.calls == 0


class _FailingBlobs(BlobStore):
    """A blob area whose ``has`` or ``put`` raises ``error`` (a store file's damage, a disk's)."""

    def __init__(self, directory: Path, error: Callable[[], Exception], where: str) -> None:
        super().__init__(directory)
        self.error, self.where = error, where

    def has(self, digest: str) -> bool:
        if self.where == "has":
            raise self.error()
        return super().has(digest)

    def put(self, chunks: Any, *, expected: str | None = None, max_size: int | None = None) -> tuple[str, int]:
        if self.where == "put":
            list(chunks)  # the source's bytes came
            raise self.error()
        return super().put(chunks, expected=expected, max_size=max_size)


def test_a_damaged_store_met_while_fetching_is_reported_and_ends_the_copies(tmp_path: Path) -> None:
    """The store's damaged() says it (the node's store_damaged alert, and it stops with 65): asked
    again, the blob met the same damage for ever, logged as a bug with a back-off."""
    reported: list[BaseException] = []

    def damaged(error: BaseException) -> object | None:
        if damaged_file(error) is None:
            return None
        reported.append(error)
        return error

    home = Source(lambda: DATA)
    fetcher, alerts = _fetcher(tmp_path, {"ingest-1": home})
    fetcher.blobs = _FailingBlobs(tmp_path / "failing", malformed, "has")
    fetcher.damaged = damaged
    fetcher._due.append((0.0, 0, WANTED, 0.001))  # queued as want() queues it (want asks has() itself)
    fetcher._queued.add(WANTED.sha256)
    fetcher.start()
    thread = fetcher._thread
    assert thread is not None
    thread.join(timeout=10)
    assert not thread.is_alive(), "the copies ended"
    assert len(reported) == 1 and alerts == []
    fetcher.stop()


def test_a_blob_area_that_cannot_take_the_bytes_is_said_once_not_blamed_on_the_sources(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Logged at debug as "not fetched from <source>", each source in turn, for ever.
    home, other = Source(lambda: DATA), Source(lambda: DATA)
    fetcher, alerts = _fetcher(tmp_path, {"ingest-1": home, "replica-2": other})
    fetcher.blobs = _FailingBlobs(tmp_path / "failing", lambda: OSError(errno.EIO, "Input/output error"), "put")
    with caplog.at_level(logging.ERROR):
        assert not fetcher.fetch(WANTED)
    assert other.calls == 0 and alerts == []
    assert [r.getMessage() for r in caplog.records] == [
        f"blob {WANTED.sha256} not kept: this node's blob area failed: [Errno 5] Input/output error"
    ]
