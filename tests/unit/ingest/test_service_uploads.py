"""file.upload and file records through IngestService, in process over a real ChainStore and rules.

Outsider o23 (HIGH 1) filled a home's disk with completed uploads no record named; they now
count against the account's quota until a record names them, and expire like partial ones. A
record may arrive just as its upload expires: checked against the receipt, queued, and a sweep
(another account's chunk) runs before the round is committed. The record must then find its
blob kept, never a record naming a file the node deleted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from vledger.config.cluster import IngestSettings
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.ingest.service import Caller, IngestService
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry
from vledger.node.rules.engine import RulesEngine
from vledger.node.store import ChainStore
from vledger.node.wire import encode_request
from vledger.tests.unit.ingest.test_service import NODE, NoAdmin, _answer, _config, _pending

LEDGER = "docs"
KEYS = {"k" * 40: "alice", "m" * 40: "mallory"}
ALICE, MALLORY = "k" * 40, "m" * 40
EXPIRY_MS = 60_000


class Writers:
    def lookup(self, key: str) -> Caller | None:
        account = KEYS.get(key)
        return Caller(account, "writer", key) if account is not None else None


@pytest.fixture
def engine() -> RulesEngine:
    return RulesEngine()


@pytest.fixture
def store(tmp_path: Path, engine: RulesEngine) -> Iterator[ChainStore]:
    with ChainStore(tmp_path / "store", origin=NODE, domain=engine) as opened:
        rules = LedgerRules(kinds=("file",), difficulty=0, rules={"type": "files", "read": "public"})
        opened.create_ledger(Entry.prepare(rules.genesis_content(LEDGER, "alice", "genesis", 0), 0, PROTOCOL_LIMITS))
        yield opened


@pytest.fixture(params=[1, 0], ids=["inline", "committer thread"])
def service(tmp_path: Path, store: ChainStore, engine: RulesEngine, request: pytest.FixtureRequest) -> IngestService:
    """A node whose lone put is committed on the request thread, or on the store's committer
    thread (inline_commit_max 0), which then releases the claim while the request thread sweeps."""
    config = _config(tmp_path, inline_commit_max=request.param)
    ingest = IngestSettings(max_partial_uploads=2, partial_upload_expiry_ms=EXPIRY_MS)
    config = dataclasses.replace(config, ingest=ingest)
    return IngestService(config, config.nodes[NODE], store, Writers(), NoAdmin(), {}, domain=engine)


def call(service: IngestService, key: str, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
    reply = service.handle(key, encode_request(1, cmd, args))
    assert isinstance(reply, bytes), reply
    answer: dict[str, Any] = msgpack.unpackb(reply, raw=False)
    return answer


def upload(service: IngestService, key: str, data: bytes) -> dict[str, Any]:
    args = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "offset": 0, "data": data}
    return call(service, key, "file.upload", args)


def age(service: IngestService, account: str, data: bytes) -> None:
    """The account's receipt of ``data`` made older than the expiry (the file system's clock)."""
    tag = hashlib.sha256(account.encode()).hexdigest()[:32]
    receipt = service.uploads.directory / f"{tag}-{hashlib.sha256(data).hexdigest()}.done"
    old = time.time() - 2 * EXPIRY_MS / 1000
    os.utime(receipt, (old, old))


def file_put(data: bytes, author: str = "alice") -> bytes:
    payload = {"name": "minutes.pdf", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    content = Content(LEDGER, "file", payload, author, f"file-{payload['sha256'][:8]}", 1_700_000_000_000)
    entry = Entry.prepare(content, 0, PROTOCOL_LIMITS)
    return encode_request(7, "put", {"content": entry.content_bytes, "nonce": entry.nonce})


def test_a_record_arriving_as_its_upload_expires_keeps_its_blob(service: IngestService) -> None:
    data = os.urandom(300)
    digest = hashlib.sha256(data).hexdigest()
    assert upload(service, ALICE, data)["result"] == {"received": 300, "complete": True}
    age(service, "alice", data)
    pending = _pending(service.handle(ALICE, file_put(data)))  # checked, queued in the round
    # Another account's chunk in the same round sweeps before the round is committed.
    assert upload(service, MALLORY, b"x" * 10)["ok"]
    service.flush()
    while not pending.future.done():  # the committer thread's round: the request thread sweeps on
        service.uploads.expire()
    assert _answer(pending)["ok"]
    assert service.store.blobs.intact(digest)
    assert service.file_recorded(digest) is True
    assert service.uploads.expire() == 0  # a record names it: never dropped
    assert service.store.blobs.intact(digest) and service.uploads.completed("alice", digest)
    read = call(service, MALLORY, "file.download", {"sha256": digest, "offset": 0, "length": 1000})
    assert read["result"] == {"data": data, "size": 300}


def test_completed_uploads_no_record_names_fill_the_quota_then_expire(service: IngestService) -> None:
    """o23: whole uploads, no grant, no proof of work, none recorded: the third is refused."""
    first, second = os.urandom(100), os.urandom(100)
    assert upload(service, MALLORY, first)["ok"] and upload(service, MALLORY, second)["ok"]
    refused = upload(service, MALLORY, os.urandom(100))
    assert refused["error"]["code"] == "upload_quota", refused
    age(service, "mallory", first)
    assert upload(service, MALLORY, os.urandom(100))["ok"]  # the first expired on this chunk, blob and all
    assert not service.store.blobs.has(hashlib.sha256(first).hexdigest())
    assert service.store.blobs.has(hashlib.sha256(second).hexdigest())


def test_a_recorded_upload_frees_its_share(service: IngestService) -> None:
    files = [os.urandom(100) for _ in range(3)]
    assert upload(service, ALICE, files[0])["ok"] and upload(service, ALICE, files[1])["ok"]
    pending = _pending(service.handle(ALICE, file_put(files[0])))
    service.flush()
    assert _answer(pending)["ok"]
    assert upload(service, ALICE, files[2])["ok"]
