"""Bad input over a real CURVE connection: every request gets an error with a documented code,
and the node goes on serving.

The last test throws random frames and random command maps at the node (hypothesis), then
checks the node still answers and its store verifies with ``vledger verify``.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vledger.broker.keys import new_keypair
from vledger.broker.redis_server import RedisServer
from vledger.ingest.service import COMMANDS
from vledger.tests.integration.cluster import (
    ADMIN,
    LocalCluster,
    Wire,
    entry,
    failing_nonce,
    genesis,
    put_args,
    raw_content,
    wait_until,
)

MAX_MESSAGE = 1024 * 1024  # the node's max_message_bytes (the default)
PROTOCOL = Path(__file__).parents[3] / "docs" / "PROTOCOL.md"
LEDGER = "fuzz"
HARD_LEDGER = "hard"  # proof of work of 16 bits
FUZZER = "fuzzer"  # an admin account of this module, so the fuzz reaches every command


def documented_codes() -> set[str]:
    """The wire codes of docs/PROTOCOL.md's error table (first column)."""
    text = PROTOCOL.read_text()
    table = text[text.index("## Error codes") :]
    return {
        code
        for line in table.splitlines()
        if line.startswith("| `")
        for code in re.findall(r"`([a-z_]+)`", line.split("|")[1])
    }


DOCUMENTED = documented_codes()


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    with LocalCluster(redis_server.url, nodes=1, accounts={"writer1": "writer", FUZZER: "admin"}) as running:
        admin = running.admin()
        admin.create_ledger(genesis(LEDGER, ADMIN, ["note"]))
        admin.create_ledger(genesis(HARD_LEDGER, ADMIN, ["note"], difficulty=16))
        yield running


@pytest.fixture
def wire(cluster: LocalCluster) -> Iterator[Wire]:
    with Wire(cluster.address(), cluster.keys["writer1"], monitor=True) as connection:
        yield connection
    # Whatever the test sent, the node still serves a fresh connection.
    assert cluster.client("writer1").hello()["node"] == "ingest-1"


def check_error(reply: dict[str, Any] | None, code: str | tuple[str, ...], request_id: Any = None) -> dict[str, Any]:
    assert reply is not None, "no reply"
    assert reply["ok"] is False, reply
    assert reply["id"] == request_id, reply
    codes = (code,) if isinstance(code, str) else code
    assert reply["error"]["code"] in codes, reply
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
    return reply["error"]  # type: ignore[no-any-return]


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def size(cluster: LocalCluster, ledger: str = LEDGER) -> int:
    return cluster.client("writer1").call("size", {"ledger": ledger})["size"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "frame",
    [
        b"\xc1",  # the reserved byte
        b"\x83\xa2id",  # truncated
        b"",
        b"\x91\x01",  # an array
        pack("hello"),
        pack(None),
        b"\x81\xa3cmd\xa5hel\xfflo",  # invalid UTF-8 in a string
        b"\x81\xc4\x03cmd\xa5hello",  # a binary map key
        pack({"cmd": "hello", "extra": 1}),
        pack({"cmd": "hello", "id": 1.5}),
        pack({"cmd": "hello", "id": -1}),
        pack({"cmd": "hello", "id": "x" * 65}),
        pack({"cmd": "HELLO!"}),
        pack({"cmd": 5}),
        pack({"id": 3}),
        pack({"cmd": "hello", "args": [1, 2]}),
        pack({"cmd": "hello"}) + b"\x00",  # bytes after the value
    ],
)
def test_a_frame_that_is_not_a_request_is_refused(wire: Wire, frame: bytes) -> None:
    wire.send(frame)
    reply = wire.recv(5.0)
    assert reply is not None and reply["ok"] is False, reply
    assert reply["error"]["code"] == "bad_request", reply


def test_the_id_of_a_readable_but_refused_request_is_echoed(wire: Wire) -> None:
    wire.send(pack({"id": "abc", "cmd": "hello", "args": "not a map"}))
    check_error(wire.recv(5.0), "bad_request", "abc")
    wire.send(pack({"id": 42, "cmd": "no.such.thing"}))
    check_error(wire.recv(5.0), "unknown_command", 42)


@pytest.mark.parametrize(
    ("cmd", "args"),
    [
        ("get", {}),
        ("get", {"ledger": LEDGER}),
        ("get", {"ledger": 5, "height": 0}),
        ("get", {"ledger": LEDGER, "height": "0"}),
        ("get", {"ledger": LEDGER, "height": -1}),
        ("get", {"ledger": LEDGER, "height": 1.0}),
        ("get", {"ledger": LEDGER, "height": True}),
        ("get", {"hash": b"short"}),
        ("get", {"hash": "00" * 32}),
        ("range", {"ledger": LEDGER}),
        ("range", {"ledger": LEDGER, "start": 0, "limit": -5}),
        ("head", {"ledger": b"fuzz"}),
        ("size", {}),
        ("have", {"hashes": b"x" * 32}),
        ("have", {"hashes": [b"x" * 31]}),
        ("put", {}),
        ("put", {"content": "text", "nonce": 0}),
        ("put", {"content": b"\x80", "nonce": -1}),
        ("file.upload", {"sha256": "ab" * 32, "size": 1, "offset": 0}),
        ("file.download", {"sha256": "ab" * 32, "offset": 0, "length": 10**9}),
        ("help", {"command": 7}),
    ],
)
def test_missing_or_mistyped_arguments_are_bad_requests(wire: Wire, cmd: str, args: dict[str, Any]) -> None:
    check_error(wire.call(cmd, args), "bad_request", wire.last_id)


def test_content_that_is_not_a_record_is_refused_and_writes_nothing(cluster: LocalCluster, wire: Wire) -> None:
    before = size(cluster)
    cases = {
        "bad_encoding": {"content": b"\xc1", "nonce": 0},
        "non_canonical": {"content": raw_content(LEDGER, "note", {"amount": 1.5}, "writer1"), "nonce": 0},
        "bad_field": {"content": pack({"author": "writer1", "kind": "note"}), "nonce": 0},
        "too_large": {"content": raw_content(LEDGER, "note", {"text": "x" * 70_000}, "writer1"), "nonce": 0},
    }
    for code, args in cases.items():
        check_error(wire.call("put", args), code, wire.last_id)
    unsorted = raw_content(LEDGER, "note", {}, "writer1")
    check_error(
        wire.call("put", {"content": pack(dict(reversed(msgpack.unpackb(unsorted).items()))), "nonce": 0}),
        "non_canonical",
        wire.last_id,
    )
    assert size(cluster) == before


def test_insufficient_proof_of_work_is_refused(cluster: LocalCluster, wire: Wire) -> None:
    good = entry(HARD_LEDGER, "note", {}, "writer1", difficulty=16)
    weak = {"content": good.content_bytes, "nonce": failing_nonce(good.content_bytes, 16)}
    check_error(wire.call("put", weak), "insufficient_work", wire.last_id)
    assert size(cluster, HARD_LEDGER) == 1
    assert wire.call("put", put_args(good))["ok"] is True
    assert size(cluster, HARD_LEDGER) == 2


def test_a_message_of_two_frames_is_refused(wire: Wire) -> None:
    wire.send([pack({"id": 1, "cmd": "hello"}), pack({"id": 2, "cmd": "hello"})])
    check_error(wire.recv(5.0), "bad_request", None)
    assert wire.recv(0.3) is None  # one answer for the one message
    assert wire.call("hello")["ok"] is True


def test_heights_past_the_sqlite_range_are_bad_requests(wire: Wire) -> None:
    """A height asked for is 0..2**63-1 (PROTOCOL 6.1: SQLite integers stop there), as an
    index is; past it, bad_request, where range took a start up to 2**64-1 for an empty page."""
    for args in ({"ledger": LEDGER, "height": 2**63}, {"ledger": LEDGER, "height": 2**64 - 1}):
        check_error(wire.call("get", args), "bad_request", wire.last_id)
    for args in ({"ledger": LEDGER, "start": 2**63}, {"ledger": LEDGER, "start": 2**64 - 1, "limit": 1}):
        check_error(wire.call("range", args), "bad_request", wire.last_id)
    reply = wire.call("range", {"ledger": LEDGER, "start": 2**63 - 1, "limit": 1})
    assert reply["ok"] and reply["result"] == {"records": [], "next": None, "checkpoint": None}


def content_check_child(pid: int) -> int:
    """The pid of node ``pid``'s content-check process: its spawned child started last (after
    the outbox process, ingest/server.py), of a node that has restarted neither."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(child) for child in f.read().split()]
    spawned = []
    for child in found:
        with open(f"/proc/{child}/cmdline", "rb") as f:
            if b"spawn_main" in f.read():  # not the resource tracker
                spawned.append(child)
    assert len(spawned) == 2, found  # the outbox and content-check processes
    return max(spawned)


def test_a_killed_content_check_process_is_restarted_and_counted_in_metrics(cluster: LocalCluster) -> None:
    """Its restarts were only logged: /metrics counts them (vledger_content_check_restarts_total),
    and the rounds of pipelined puts are answered meanwhile (checked inline)."""
    node = cluster.node()
    assert node.process is not None
    restarts = "vledger_content_check_restarts_total "
    before = cluster.metric(node.name, restarts)
    os.kill(content_check_child(node.process.pid), signal.SIGKILL)
    writer = cluster.client("writer1")
    count = iter(range(10**6))

    def restarted() -> bool:  # a round that finds the child dead drops it; a later one starts another
        puts = [entry(LEDGER, "note", {"n": next(count)}, "writer1") for _ in range(32)]
        assert len(writer.put_many(puts, window=32)) == len(puts)
        return cluster.metric(node.name, restarts) >= before + 1

    wait_until(restarted, 60.0, "the restart counted", interval=0.5)


def test_an_oversize_message_is_answered_and_a_huge_one_cuts_the_connection(cluster: LocalCluster, wire: Wire) -> None:
    wire.send(pack({"id": 7, "cmd": "hello", "args": {"pad": b"x" * (MAX_MESSAGE + 100)}}))
    check_error(wire.recv(10.0), ("too_large", "message_too_large"), 7)
    assert wire.call("hello")["ok"] is True

    wire.send(b"\x00" * (2 * MAX_MESSAGE + 100))
    assert wire.event(zmq.EVENT_DISCONNECTED, 10.0) == zmq.EVENT_DISCONNECTED
    assert wire.recv(0.5) is None
    # Others are served meanwhile (the wire fixture also checks a fresh connection).
    assert cluster.client("writer1").hello()["node"] == "ingest-1"


def test_a_float_in_a_payload_is_refused(cluster: LocalCluster, wire: Wire) -> None:
    before = size(cluster)
    content = raw_content(LEDGER, "note", {"nested": {"ratio": 0.5}}, "writer1")
    check_error(wire.call("put", {"content": content, "nonce": 0}), "non_canonical", wire.last_id)
    assert size(cluster) == before


# --- the fuzz -----------------------------------------------------------------------------

# The arguments each command reads (ingest/service.py), so that random requests often get past
# the first check; any other name may turn up too.
COMMAND_ARGS = {
    "get": ("ledger", "height", "hash"),
    "range": ("ledger", "start", "limit"),
    "head": ("ledger",),
    "size": ("ledger",),
    "have": ("hashes",),
    "help": ("command",),
    "put": ("content", "nonce"),
    "ledger.create": ("content", "nonce"),
    "account.add": ("account", "role"),
    "account.remove": ("account",),
    "account.enable": ("account",),
    "account.disable": ("account",),
    "key.add": ("account", "key"),
    "key.revoke": ("key", "account"),
    "totp.enroll": ("account", "otp"),
    "totp.reset": ("account", "otp"),
    "file.upload": ("sha256", "size", "offset", "data"),
    "file.download": ("sha256", "offset", "length"),
}
RANDOM_KEY = new_keypair().public
INTEGER_ARGS = ("height", "start", "limit", "nonce", "size", "offset", "length")
uints = st.integers(0, 2**64 - 1) | st.sampled_from([0, 1, 499, 500, 501, 2**63 - 1, 2**63, 2**64 - 1])
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=80)
    | st.binary(max_size=80)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
typed = {
    "ledger": st.sampled_from([LEDGER, HARD_LEDGER, "no-such"]),
    "hash": st.binary(min_size=32, max_size=32),
    "hashes": st.lists(st.binary(min_size=32, max_size=32), max_size=3),
    "command": st.sampled_from(sorted(COMMANDS)),
    "content": st.binary(max_size=200),
    "account": st.sampled_from(["fuzz-account", "writer1-x", "a" * 65, "bad name"]),
    "role": st.sampled_from(["writer", "observer", "admin", "replica", "king"]),
    "key": st.sampled_from([RANDOM_KEY, "x" * 40, "short"]),
    "sha256": st.sampled_from(["ab" * 32, "AB" * 32, "../" * 21 + "a"]),
    "data": st.binary(max_size=100),
    "otp": st.sampled_from(["123456", "abcd-efgh-ijkl-mnop", "1" * 33]),
    **dict.fromkeys(INTEGER_ARGS, uints),
}


@st.composite
def request_maps(draw: st.DrawFn) -> dict[str, Any]:
    cmd = draw(
        st.sampled_from(sorted(COMMANDS))
        | st.sampled_from(sorted(COMMANDS))
        | st.from_regex(r"[a-z][a-z.]{0,31}", fullmatch=True)
        | st.text(max_size=40)
    )
    names = COMMAND_ARGS.get(cmd, ())
    args = {name: draw(typed[name] | values) for name in names if draw(st.integers(0, 9)) > 0}
    args.update(draw(st.dictionaries(st.text(max_size=10), values, max_size=2)))
    request: dict[str, Any] = {"cmd": cmd, "args": args}
    if draw(st.integers(0, 9)) == 0:
        request["args"] = draw(values)
    if draw(st.integers(0, 9)) > 0:
        request["id"] = draw(st.integers(0, 2**64 - 1) | st.text(max_size=64))
    elif draw(st.booleans()):
        request["id"] = draw(values)
    if draw(st.integers(0, 19)) == 0:
        request["junk"] = draw(values)
    return request


def mentions(value: Any, names: set[str]) -> bool:
    if isinstance(value, str):
        return value in names
    if isinstance(value, dict):
        return any(mentions(k, names) or mentions(v, names) for k, v in value.items())
    if isinstance(value, list):
        return any(mentions(v, names) for v in value)
    return False


def test_random_frames_and_commands_never_break_the_node(cluster: LocalCluster) -> None:
    fuzz_wire = cluster.wire(FUZZER)
    seen_codes: set[str] = set()
    answered = 0

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def throw(data: st.DataObject) -> None:
        thing = data.draw(st.one_of(st.binary(max_size=300), request_maps(), request_maps(), st.none()), label="frame")
        if isinstance(thing, bytes):
            frame = thing
        elif isinstance(thing, dict):
            if mentions(thing, {ADMIN, FUZZER}):  # the fuzz must not lock its own accounts out
                return
            args = thing["args"]
            if thing["cmd"] == "totp.enroll" and not (isinstance(args, dict) and isinstance(args.get("account"), str)):
                return  # the fuzzer's own second factor: every admin command of it would then need a code
            frame = pack(thing)
        else:
            frame = pack(valid_put(data))
        fuzz_wire.send(frame)
        reply = fuzz_wire.recv(15.0)
        assert reply is not None, f"no reply to {frame[:200]!r}"
        assert set(reply) in ({"id", "ok", "result"}, {"id", "ok", "error"}), reply
        if reply["ok"] is True:
            nonlocal answered
            answered += 1
        else:
            assert reply["ok"] is False, reply
            code = reply["error"]["code"]
            seen_codes.add(code)
            assert code in DOCUMENTED, f"undocumented code {code!r} for {frame[:200]!r}"
            assert code != "error", f"internal error for {frame[:200]!r}: see the node's log"

    throw()
    assert cluster.client("writer1").hello()["node"] == "ingest-1"
    assert answered > 0, "no random request was served: the fuzz tested only the parser"
    assert "bad_request" in seen_codes, seen_codes
    assert cluster.stop_node("ingest-1") == 0
    verified = cluster.verify_store()
    assert verified.returncode == 0, verified.stdout + verified.stderr
    cluster.start_node("ingest-1")


def valid_put(data: st.DataObject) -> dict[str, Any]:
    """A real put of the fuzzer (new, retried or conflicting), sometimes with a byte changed."""
    n = data.draw(st.integers(0, 20), label="n")
    request_id = f"fz-{data.draw(st.integers(0, 20), label='request id')}"
    made = entry(LEDGER, "note", {"n": n}, FUZZER, request_id=request_id, ts=n)
    content = bytearray(made.content_bytes)
    if data.draw(st.booleans(), label="flip"):
        content[data.draw(st.integers(0, len(content) - 1), label="at")] ^= data.draw(st.integers(1, 255), label="by")
    nonce = data.draw(st.integers(0, 3), label="nonce")
    return {
        "id": data.draw(st.integers(0, 1000), label="id"),
        "cmd": "put",
        "args": {"content": bytes(content), "nonce": nonce},
    }
