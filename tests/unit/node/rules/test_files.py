"""File ledger rules (node/rules/files.py): upload records and the read rules."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from vledger.node.errors import BadPayloadError, FileConflictError, FileTooLargeError
from vledger.node.rules import Ref
from vledger.node.rules.files import FilesState, may_read

REPORT = hashlib.sha256(b"annual report").hexdigest()
MINUTES = hashlib.sha256(b"minutes").hexdigest()


def upload(name: str = "report.pdf", size: Any = 13, sha256: Any = REPORT) -> dict[str, Any]:
    return {"name": name, "size": size, "sha256": sha256}


@pytest.fixture
def files(rules_kit: Any) -> Any:
    return rules_kit.files()


def test_an_upload_is_recorded_with_its_uploader(files: Any) -> None:
    assert isinstance(files.domain, FilesState)
    assert files.submit("file", upload(), author="Zoe.1") == {}
    stored = files.domain.file(REPORT)
    assert (stored.sha256, stored.size, stored.first, stored.uploaders) == (
        REPORT,
        13,
        Ref.of(files.ledger.head),
        frozenset({"Zoe.1"}),
    )
    tally = files.domain.tally()
    assert (tally.files, tally.bytes, tally.uploads, tally.authors) == (1, 13, 1, 2)  # admin wrote the genesis


def test_the_same_file_again_adds_its_uploader(files: Any) -> None:
    files.submit("file", upload(), author="Zoe.1")
    files.submit("file", upload(name="copy of report.pdf"), author="omar")
    files.submit("file", upload(), author="omar")
    stored = files.domain.file(REPORT)
    assert stored.uploaders == {"Zoe.1", "omar"}
    assert stored.first.height == 1
    assert (files.domain.tally().files, files.domain.tally().uploads) == (1, 3)


def test_one_sha256_has_one_size(files: Any) -> None:
    files.submit("file", upload(size=13))
    assert files.refuse("file", upload(size=14), FileConflictError).code == "file_conflict"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "reports/2026.pdf",
        "/etc/passwd",
        "..",
        ".",
        "a\\b.pdf",
        "nul\x00.pdf",
        "line\nbreak.pdf",
        "tab\t.pdf",
        "del\x7f.pdf",
        "c1\x85.pdf",
        "x" * 256,
        7,
    ],
)
def test_a_name_is_a_display_name_never_a_path(files: Any, name: Any) -> None:
    assert files.refuse("file", upload(name=name), BadPayloadError).code == "bad_payload"


@pytest.mark.parametrize("name", ["x" * 255, "Zoë's ballot 🗳.pdf", "...", "a..b", ".hidden", "r\u00e9sum\u00e9"])
def test_display_names_may_be_any_other_text(files: Any, name: str) -> None:
    files.submit("file", upload(name=name))


@pytest.mark.parametrize("size", [-1, True, "13", None])
def test_a_size_is_a_non_negative_integer(files: Any, size: Any) -> None:
    files.refuse("file", upload(size=size), BadPayloadError)


def test_a_float_size_is_refused(files: Any) -> None:
    record = files.ledger.make("file", upload())
    content = dataclasses.replace(record.content, payload=upload(size=13.0))
    with pytest.raises(BadPayloadError):
        files.engine.check(dataclasses.replace(record, content=content), files.ledger.rules)


def test_an_empty_file_is_a_file(files: Any) -> None:
    files.submit("file", upload(size=0, sha256=hashlib.sha256(b"").hexdigest()))


def test_max_size_bounds_the_size(rules_kit: Any) -> None:
    bench = rules_kit.files(max_size=100)
    bench.submit("file", upload(size=100))
    error = bench.refuse("file", upload(size=101, sha256=MINUTES), FileTooLargeError)
    assert error.code == "file_too_large"


@pytest.mark.parametrize("sha256", [REPORT.upper(), REPORT[:-1], REPORT + "0", "g" * 64, "", 5])
def test_a_sha256_is_64_lower_case_hex(files: Any, sha256: Any) -> None:
    files.refuse("file", upload(sha256=sha256), BadPayloadError)


@pytest.mark.parametrize("payload", [{"name": "a", "size": 1}, {**upload(), "path": "/tmp/a"}])
def test_a_file_payload_has_exactly_its_fields(files: Any, payload: dict[str, Any]) -> None:
    files.refuse("file", payload, BadPayloadError)


# --- reading -----------------------------------------------------------------------------


def test_public_files_are_readable_by_anyone(files: Any) -> None:
    files.submit("file", upload(), author="Zoe.1")
    assert may_read(files.domain, REPORT, "Zoe.1")
    assert may_read(files.domain, REPORT, "stranger")
    assert may_read(files.domain, REPORT, None)
    assert not may_read(files.domain, MINUTES, "Zoe.1")  # never uploaded


def test_uploader_files_are_readable_by_their_uploaders_only(rules_kit: Any) -> None:
    bench = rules_kit.files(read="uploader")
    bench.submit("file", upload(), author="Zoe.1")
    bench.submit("file", upload(name="minutes.txt", size=7, sha256=MINUTES), author="omar")
    assert may_read(bench.domain, REPORT, "Zoe.1")
    assert not may_read(bench.domain, REPORT, "omar")
    assert not may_read(bench.domain, REPORT, "admin")  # the genesis author is no uploader
    assert not may_read(bench.domain, REPORT, None)
    assert may_read(bench.domain, MINUTES, "omar")
    bench.submit("file", upload(name="mine too.pdf"), author="omar")
    assert may_read(bench.domain, REPORT, "omar")


def test_authors_files_are_readable_by_any_author_of_the_ledger(rules_kit: Any) -> None:
    bench = rules_kit.files(read="authors")
    bench.submit("file", upload(), author="Zoe.1")
    assert may_read(bench.domain, REPORT, "Zoe.1")
    assert may_read(bench.domain, REPORT, "admin")  # wrote the genesis
    assert not may_read(bench.domain, REPORT, "omar")
    assert not may_read(bench.domain, REPORT, None)
    bench.submit("note", {"text": "hello"}, author="omar")
    assert may_read(bench.domain, REPORT, "omar")
    assert not may_read(bench.domain, MINUTES, "omar")


def test_a_refused_upload_makes_no_author(rules_kit: Any) -> None:
    bench = rules_kit.files(read="authors")
    bench.submit("file", upload(), author="Zoe.1")
    bench.refuse("file", upload(name="a/b"), BadPayloadError, author="mallory")
    assert not may_read(bench.domain, REPORT, "mallory")
