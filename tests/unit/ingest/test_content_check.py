"""The content-check process (ingest/content_check.py): what it sends back changes no answer.

A content it accepts becomes the very entry the request thread would have made of it; anything
it refuses comes back as None, and the put is answered by the inline path, byte for byte as
before. A dead or stopped (slow) process costs a round its checks inline, and is replaced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vledger.config.settings import Limits
from vledger.ingest import content_check
from vledger.ingest.content_check import MIN_ROUND, ContentChecker, check_round
from vledger.ingest.service import IngestService, Pending
from vledger.node.errors import VledgerError
from vledger.node.ledger import LedgerRules
from vledger.node.record import Checked, Content, Entry
from vledger.node.store import ChainStore
from vledger.node.wire import encode_request, parse_request

from .test_service import KEY, KIND, LEDGER, NODE, WRITER, NoAdmin, OneAccount, _config

# Small limits, so that the size checks are reached by what hypothesis makes.
LIMITS = Limits(max_content_bytes=300, max_depth=4, max_name_length=12, max_request_id_length=16)
MAX_MESSAGE = 4096
TIMEOUT = 60.0

names = st.one_of(st.sampled_from([LEDGER, KIND, WRITER, "x", "a" * 12, "a" * 13]), st.text(max_size=14))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=20), st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
good_maps = st.fixed_dictionaries(
    {
        "author": st.sampled_from([WRITER, "bob"]),
        "kind": st.sampled_from([KIND, "memo"]),
        "ledger": st.sampled_from([LEDGER, "books"]),
        "payload": st.dictionaries(st.text(max_size=8), values, max_size=4),
        "request_id": st.sampled_from(["r-1", "req-17", "a" * 16]),
        "ts": st.integers(0, 2**64 - 1),
        "v": st.just(1),
    }
)


@st.composite
def contents(draw: st.DrawFn) -> bytes:
    """Content bytes, valid or not: a content map (a field or more replaced by anything, a
    key added or dropped, its keys reordered), packed canonically or not, or bytes changed."""
    value: dict[str, Any] = dict(draw(good_maps))
    for field in draw(st.lists(st.sampled_from(sorted(value)), max_size=2)):
        value[field] = draw(st.one_of(values, names))
    if draw(st.integers(0, 9)) == 0:
        value[draw(st.text(max_size=6))] = draw(scalars)
    if draw(st.integers(0, 9)) == 0:
        value.pop(draw(st.sampled_from(sorted(value))), None)
    if draw(st.integers(0, 9)) == 0:
        value = dict(reversed(list(value.items())))
    data: bytes = msgpack.packb(value, use_bin_type=draw(st.integers(0, 19)) != 0)
    if data and draw(st.integers(0, 4)) == 0:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes((draw(st.integers(0, 255)),)) + data[at + 1 :]
    return data


nonces = st.one_of(st.integers(0, 2**64 - 1), st.integers(-5, 5), st.none(), st.text(max_size=3))


def _request(content: object, nonce: object, cmd: str = "put") -> bytes:
    return encode_request(1, cmd, {"content": content, "nonce": nonce})


def _inline(data: bytes) -> Entry | tuple[type[VledgerError], str]:
    """What the request thread makes of a put request: its entry, or its error."""
    try:
        args = parse_request(data, MAX_MESSAGE).args
        return Entry.from_wire(args.binary("content"), args.uint("nonce"), LIMITS)
    except VledgerError as e:
        return type(e), str(e)


def _prepared(data: bytes, checked: Checked) -> Entry | tuple[type[VledgerError], str]:
    try:
        args = parse_request(data, MAX_MESSAGE).args
        return Entry.from_checked(args.binary("content"), args.uint("nonce"), checked, LIMITS)
    except VledgerError as e:
        return type(e), str(e)


def _agree(data: bytes) -> Checked | None:
    """The child's answer for ``data`` holds against the inline path; returns it."""
    [checked] = check_round([data], LIMITS, MAX_MESSAGE)
    inline = _inline(data)
    if checked is None:
        # Refused (or not a put's content): the inline path answers. A valid content must not
        # be refused, or nothing would be gained; its nonce may still be wrong.
        if isinstance(inline, Entry):
            pytest.fail(f"a valid content was left to the request thread: {data!r}")
        return None
    assert isinstance(inline, Entry) or "nonce" in inline[1], inline  # only the nonce can be wrong
    assert _prepared(data, checked) == inline
    return checked


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contents(), nonces)
def test_a_prepared_entry_is_the_inline_one_and_a_refused_content_is_left_inline(content: bytes, nonce: object) -> None:
    _agree(_request(content, nonce))


@settings(max_examples=200, deadline=None)
@given(good_maps, st.integers(0, 2**64 - 1))
def test_every_valid_content_is_prepared(value: dict[str, Any], nonce: int) -> None:
    fields = {name: value[name] for name in ("ledger", "kind", "payload", "author", "request_id", "ts")}
    try:
        data = Content(**fields).encode(LIMITS)  # canonical: its map keys sorted
    except VledgerError:
        return  # too large or too deep for LIMITS
    assert _agree(_request(data, nonce)) is not None


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",  # not msgpack
        encode_request(1, "get", {"content": b"x"}),
        _request("not bytes", 1),
        _request(b"\x80", 1),
        _request(b"x" * (LIMITS.max_content_bytes + 1), 1),
        encode_request(1, "put", {"nonce": 1}),
        b"\x91" + b"\x90" * 10,
    ],
)
def test_what_is_not_a_valid_put_content_is_left_inline(data: bytes) -> None:
    assert check_round([data], LIMITS, MAX_MESSAGE) == [None]


# --- the process -------------------------------------------------------------------------------


def _round(count: int, start: int = 0) -> list[bytes]:
    """Valid puts, a refused one every third."""
    datas = []
    for i in range(start, start + count):
        content = Content(LEDGER, KIND, {"n": i}, WRITER, f"req-{i}", 1_700_000_000_000 + i)
        data = Entry.prepare(content, 0, LIMITS).content_bytes
        datas.append(_request(data if i % 3 else data + b"\x00", i))
    return datas


@pytest.fixture
def checker() -> Iterator[ContentChecker]:
    started = ContentChecker(LIMITS, MAX_MESSAGE).start()
    assert started.ready(TIMEOUT)  # the node never waits for it: the tests do
    yield started
    started.stop()


def test_the_process_answers_as_check_round_does(checker: ContentChecker) -> None:
    datas = _round(40)
    assert checker.check(datas) == check_round(datas, LIMITS, MAX_MESSAGE)


def test_a_request_too_large_for_a_valid_content_is_not_sent_and_left_inline(checker: ContentChecker) -> None:
    datas = _round(MIN_ROUND)
    datas[1] = _request(b"\x80" * (LIMITS.max_content_bytes + content_check.ENVELOPE_BYTES), 1)
    answer = checker.check(datas)
    assert answer is not None and answer[1] is None
    assert answer == check_round(datas, LIMITS, MAX_MESSAGE)


def test_a_round_smaller_than_min_round_is_left_inline(checker: ContentChecker) -> None:
    assert checker.check(_round(MIN_ROUND - 1)) is None
    assert checker.check(_round(MIN_ROUND)) is not None


def test_a_killed_process_costs_a_round_its_checks_inline_and_is_restarted(checker: ContentChecker) -> None:
    pid = checker.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert checker.check(_round(MIN_ROUND)) is None  # checked inline, and no wait past the deadline
    assert checker.ready(TIMEOUT)
    assert checker.pid != pid and checker.restarts == 1
    datas = _round(MIN_ROUND, 100)
    assert checker.check(datas) == check_round(datas, LIMITS, MAX_MESSAGE)


def test_a_slow_process_is_not_waited_for_past_the_deadline_and_is_replaced(checker: ContentChecker) -> None:
    pid = checker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # alive, but answers nothing
    try:
        assert checker.check(_round(MIN_ROUND)) is None
    finally:
        with contextlib.suppress(ProcessLookupError):  # killed, as it should be
            os.kill(pid, signal.SIGCONT)
    assert checker.ready(TIMEOUT)
    assert checker.pid != pid
    datas = _round(MIN_ROUND, 200)  # the stopped child's late answer, if any, is not taken for this
    assert checker.check(datas) == check_round(datas, LIMITS, MAX_MESSAGE)


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def _no_files_left(err: int) -> Any:
    def fail(*args: object, **kwargs: object) -> Any:
        raise OSError(err, os.strerror(err))

    return fail


def test_a_restart_that_cannot_start_a_process_leaves_the_round_inline_and_is_tried_later(
    checker: ContentChecker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed restart once raised out of check(), through the service's prepare, and stopped
    the node's request loop (EMFILE from Process.start)."""
    pid = checker.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    starts: list[object] = []
    real_start = content_check.multiprocessing.get_context("spawn").Process.start

    def start(process: Any) -> None:
        starts.append(process)
        raise OSError(24, os.strerror(24))

    monkeypatch.setattr(content_check.multiprocessing.get_context("spawn").Process, "start", start)
    # Until it has died the child is not replaced; from then on its round is checked inline.
    deadline = time.monotonic() + TIMEOUT
    while not starts and time.monotonic() < deadline:
        assert checker.check(_round(MIN_ROUND)) is None
    assert len(starts) == 1
    assert checker.check(_round(MIN_ROUND)) is None
    assert len(starts) == 1, "a failed start tried again at once, each round"
    monkeypatch.setattr(content_check.multiprocessing.get_context("spawn").Process, "start", real_start)
    assert checker.ready(TIMEOUT)
    datas = _round(MIN_ROUND, 300)
    assert checker.check(datas) == check_round(datas, LIMITS, MAX_MESSAGE)


def test_a_restart_whose_dup_fails_leaves_no_process_nor_file(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _open_files()
    checker = ContentChecker(LIMITS, MAX_MESSAGE).start()
    try:
        assert checker.ready(TIMEOUT)
        pid = checker.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        started: list[int | None] = []
        real_start = content_check.multiprocessing.get_context("spawn").Process.start

        def start(process: Any) -> None:
            real_start(process)
            started.append(process.pid)

        monkeypatch.setattr(content_check.multiprocessing.get_context("spawn").Process, "start", start)
        monkeypatch.setattr(content_check.os, "dup", _no_files_left(24))
        deadline = time.monotonic() + TIMEOUT
        while not started and time.monotonic() < deadline:
            assert checker.check(_round(MIN_ROUND)) is None
        assert len(started) == 1 and started[0] is not None
        with pytest.raises(ProcessLookupError):  # killed and reaped
            os.kill(started[0], 0)
        assert _open_files() == before, "the new child's pipe or sentinel left open"
        assert checker.check(_round(MIN_ROUND)) is None
        assert len(started) == 1, "a failed start tried again at once, each round"
    finally:
        checker.stop()


# Puts as large as the node's own limits let them be, of the costliest kind to check: a payload
# of many small items (~37 ns a byte, against ~1 ns for one long string).
NODE_LIMITS = Limits()
NODE_MAX_MESSAGE = 1024 * 1024


def _large_round(count: int) -> list[bytes]:
    content = Content(LEDGER, KIND, {"a": [j % 100 for j in range(60_000)]}, WRITER, "req-large", 1_700_000_000_000)
    data = Entry.prepare(content, 0, NODE_LIMITS).content_bytes
    return [_request(data, i) for i in range(count)]


@pytest.fixture
def node_checker() -> Iterator[ContentChecker]:
    started = ContentChecker(NODE_LIMITS, NODE_MAX_MESSAGE).start()
    assert started.ready(TIMEOUT)
    yield started
    started.stop()


def test_a_stopped_process_does_not_hold_a_round_larger_than_its_pipe(node_checker: ContentChecker) -> None:
    """The deadline bounds the round's write too: a child that reads nothing once held the
    request thread in ``send`` for as long as it stayed stopped (r8: 16 puts of 60 KB)."""
    datas = _large_round(16)  # ~1 MB, far past a socket pair's buffer
    pid = node_checker.pid
    assert pid is not None
    answers: list[object] = []
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        worker = threading.Thread(target=lambda: answers.append(node_checker.check(datas)), daemon=True)
        worker.start()
        worker.join(10.0)  # the deadline is under a second; the 9 s more are the loaded machine's
        took = time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):  # killed, as it should be
            os.kill(pid, signal.SIGCONT)
    assert not worker.is_alive(), "check() held the request thread past its deadline"
    assert answers == [None], took
    assert node_checker.ready(TIMEOUT) and node_checker.pid != pid


def test_a_round_of_large_puts_is_answered_by_a_healthy_process_within_its_deadline(
    node_checker: ContentChecker,
) -> None:
    """Only the round's first ROUND_BYTES go to the child, with a deadline that grows with their
    bytes: a deadline that grew only with the requests killed a healthy child on every such
    round (1,024 of these puts, 2.2 s of work against 1.01 s), and checked the round twice."""
    datas = _large_round(1024)
    pid = node_checker.pid
    answer = node_checker.check(datas)
    assert answer is not None, "a healthy child was taken for a hung one"
    assert node_checker.pid == pid and node_checker.restarts == 0
    sent = content_check.ROUND_BYTES // len(datas[0])
    assert sent >= MIN_ROUND
    assert answer[:sent] == check_round(datas[:sent], NODE_LIMITS, NODE_MAX_MESSAGE)
    assert all(answer[:sent]) and answer[sent:] == [None] * (len(datas) - sent)  # the rest: inline


# --- through the service: the same replies ------------------------------------------------------


def _service(tmp_path: Path, name: str, checker: ContentChecker | None) -> tuple[IngestService, ChainStore]:
    store = ChainStore(tmp_path / name, origin=NODE)
    genesis = LedgerRules(kinds=(KIND,), difficulty=0).genesis_content(LEDGER, WRITER, "genesis", 0)
    store.create_ledger(Entry.prepare(genesis, 0, LIMITS))
    config = _config(tmp_path, 1024)
    config = dataclasses.replace(config, settings=dataclasses.replace(config.settings, limits=LIMITS))
    return IngestService(config, config.nodes[NODE], store, OneAccount(), NoAdmin(), {}, content_check=checker), store


def _replies(service: IngestService, datas: list[bytes], prepared: list[Checked | None] | None) -> list[bytes]:
    answers = [service.handle(KEY, data, prepared[i] if prepared else None) for i, data in enumerate(datas)]
    service.flush()
    replies = []
    for answer in answers:
        if isinstance(answer, Pending):
            answer.future.result(TIMEOUT)
            replies.append(answer.reply())
        else:
            replies.append(answer)
    return replies


def test_a_prepared_round_gets_the_replies_of_an_inline_one(tmp_path: Path, checker: ContentChecker) -> None:
    datas = _round(30)
    datas += [_request(b"\x80", 1), _request(_round(1)[0], -1), encode_request(2, "put", {"content": b"", "x": 1})]
    with_checker, store_a = _service(tmp_path, "a", checker)
    inline, store_b = _service(tmp_path, "b", None)
    try:
        prepared = with_checker.prepare(datas)
        assert prepared is not None and any(prepared) and None in prepared
        got = _replies(with_checker, datas, list(prepared))
        expected = _replies(inline, datas, None)
        for data, mine, theirs in zip(datas, got, expected, strict=True):
            mine_value, theirs_value = msgpack.unpackb(mine), msgpack.unpackb(theirs)
            if "error" in theirs_value:
                assert mine == theirs, data  # a refusal: byte for byte
            else:  # a receipt: its acceptance time differs between the two nodes
                assert mine_value["result"]["height"] == theirs_value["result"]["height"]
        assert store_a.size(LEDGER) == store_b.size(LEDGER) > 1
        for height in range(store_a.size(LEDGER)):
            a, b = store_a.get(LEDGER, height), store_b.get(LEDGER, height)
            assert a is not None and b is not None
            assert (a.content, a.content_bytes, a.checksum, a.nonce) == (
                b.content,
                b.content_bytes,
                b.checksum,
                b.nonce,
            )
    finally:
        store_a.close()
        store_b.close()


def test_without_a_process_or_for_a_small_round_nothing_is_prepared(tmp_path: Path, checker: ContentChecker) -> None:
    service, store = _service(tmp_path, "a", None)
    try:
        assert service.prepare(_round(MIN_ROUND)) is None
    finally:
        store.close()
    service, store = _service(tmp_path, "b", checker)
    try:
        assert service.prepare(_round(MIN_ROUND - 1)) is None
    finally:
        store.close()
