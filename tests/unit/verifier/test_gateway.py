"""The gateway's routes over a real store, read-only, through real HTTP (aiohttp in a thread).

Tiles are checked against the pure tree code and the outsider's algorithm: an inclusion
proof is rebuilt from the served hash tiles alone and verified against the served root.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import json
import re
import socket
import struct
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from vledger.broker.http import HttpThread
from vledger.config.settings import Limits
from vledger.node import tree
from vledger.node.currency import amount_text
from vledger.node.errors import BadRequestError, NotFoundError
from vledger.node.record import decode_record
from vledger.node.rules.votes import electronic_id
from vledger.node.storefile import DB_NAME, StoredTree, StoreReader
from vledger.tests.sqlite_faults import overwrite_pages
from vledger.tests.unit.verifier.fakes import two_nodes
from vledger.tools.demo import run_demo
from vledger.verifier import gateway as gateway_module
from vledger.verifier.gateway import Gateway, build_app, funds_json, public_alert, readiness, verdict_json
from vledger.verifier.gateway import _int as gateway_int
from vledger.verifier.gateway import _page_end as gateway_page_end
from vledger.verifier.tally import AGREE, MISMATCH, STILL_COUNTING, LedgerHead, TallyReport, Verdict

LIMITS = Limits()
RECORDS = 700  # the election gets more than 256 records: a full tile and a partial one


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    base = tmp_path_factory.mktemp("gw")
    config = two_nodes(base / "cluster.toml")
    store = base / "data" / "replica-1"
    run_demo(store, RECORDS, 1, LIMITS)
    gateway = Gateway(config, "replica-1")
    with HttpThread(build_app(gateway), "127.0.0.1", 0) as server:
        yield f"http://127.0.0.1:{server.port}", store
    gateway.close()


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get_json(url: str) -> Any:
    status, _, body = get(url)
    assert status == 200, body
    return json.loads(body)


def error_of(url: str, method: str = "GET") -> tuple[int, str]:
    status, headers, body = get(url, method)
    assert headers["Content-Type"].startswith("application/json"), body[:200]
    assert headers.get("Cache-Control") == "no-store", headers  # PROTOCOL 15: a refusal is never cached
    return status, json.loads(body)["error"]["code"]


def test_ledgers_and_records_match_the_store(served: tuple[str, Path]) -> None:
    url, store = served
    reader = StoreReader(store)
    ledgers = {entry["ledger"]: entry for entry in get_json(f"{url}/api/ledgers")["ledgers"]}
    assert set(ledgers) == set(reader.ledgers())
    for name, entry in ledgers.items():
        assert entry["size"] == reader.size(name)
        assert entry["root"] == reader.tree(name).root().hex()
    shown = get_json(f"{url}/api/ledgers/election-2026/records/5")
    data = reader.get("election-2026", 5)
    assert data is not None and base64.b64decode(shown["record"]) == data
    assert shown["hash"] == decode_record(data, LIMITS).link.hex()
    assert get_json(f"{url}/api/records/{shown['hash']}")["height"] == 5


def test_ranges_are_paged_and_bounded(served: tuple[str, Path]) -> None:
    url, _ = served
    page = get_json(f"{url}/api/ledgers/election-2026/records?start=10&limit=7")
    assert [r["height"] for r in page["records"]] == list(range(10, 17)) and page["next"] == 17
    assert error_of(f"{url}/api/ledgers/election-2026/records?limit=100000") == (400, "bad_request")
    assert error_of(f"{url}/api/ledgers/election-2026/records?start=-1") == (400, "bad_request")
    assert error_of(f"{url}/api/ledgers/election-2026/records?limit=0") == (400, "bad_request")
    size = page["size"]
    last = get_json(f"{url}/api/ledgers/election-2026/records?start={size - 2}&limit=500")
    assert len(last["records"]) == 2 and last["next"] is None


def test_hash_tiles_and_an_inclusion_proof_from_tiles_alone(served: tuple[str, Path]) -> None:
    url, store = served
    info = get_json(f"{url}/api/ledgers/election-2026")
    size, root = info["size"], bytes.fromhex(info["root"])
    assert size > 256
    status, headers, full = get(f"{url}/ledgers/election-2026/tile/0/000")
    # The demo's election pins no checkpoint key: no signed root says these are its hashes yet.
    assert status == 200 and len(full) == 8192 and headers["Cache-Control"] == "no-cache"
    assert headers["Content-Type"] == "application/octet-stream"
    width = size % 256
    status, _, partial = get(f"{url}/ledgers/election-2026/tile/0/001.p/{width}")
    assert status == 200 and len(partial) == 32 * width
    level1 = get(f"{url}/ledgers/election-2026/tile/1/000.p/1")[2]
    # Level 1 holds the root of each full level-0 tile: rebuild it from the tile's hashes.
    assert level1 == tree.root_at(256, lambda lv, i: full[32 * i : 32 * i + 32] if lv == 0 else _sub(full, lv, i))
    leaves = [full[32 * i : 32 * i + 32] for i in range(256)] + [partial[32 * i : 32 * i + 32] for i in range(width)]
    index = 300
    proof = tree.inclusion_proof(index, size, lambda lv, i: _node(leaves, lv, i))
    tree.verify_inclusion(leaves[index], index, size, proof, root)
    served_proof = get_json(f"{url}/api/ledgers/election-2026/proof/inclusion?index={index}&size={size}")
    assert [bytes.fromhex(h) for h in served_proof["proof"]] == proof
    data = StoreReader(store).get("election-2026", index)
    assert data is not None and tree.leaf_hash(data) == leaves[index]


def _sub(leaves: bytes, level: int, index: int) -> bytes:
    return _node([leaves[32 * i : 32 * i + 32] for i in range(len(leaves) // 32)], level, index)


def _node(leaves: list[bytes], level: int, index: int) -> bytes:
    if level == 0:
        return leaves[index]
    return tree.node_hash(_node(leaves, level - 1, 2 * index), _node(leaves, level - 1, 2 * index + 1))


def test_entry_bundles_hash_to_the_level_0_tile(served: tuple[str, Path]) -> None:
    url, _ = served
    status, headers, bundle = get(f"{url}/ledgers/election-2026/tile/entries/000")
    assert status == 200 and headers["Cache-Control"] == "no-cache"  # no signed root (no pinned key)
    tile = get(f"{url}/ledgers/election-2026/tile/0/000")[2]
    at, i = 0, 0
    while at < len(bundle):
        (length,) = struct.unpack(">H", bundle[at : at + 2])
        entry = bundle[at + 2 : at + 2 + length]
        assert hashlib.sha256(b"\0" + entry).digest() == tile[32 * i : 32 * i + 32]
        at, i = at + 2 + length, i + 1
    assert i == 256


def test_an_entry_bundle_varies_by_accept_encoding(served: tuple[str, Path]) -> None:
    # Gzip only when asked, under an immutable public cache header: a shared cache must key it
    # by Accept-Encoding, or a client that did not ask for gzip may be handed gzip bytes.
    url, _ = served
    request = urllib.request.Request(
        f"{url}/ledgers/election-2026/tile/entries/000", headers={"Accept-Encoding": "gzip"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.headers["Content-Encoding"] == "gzip" and answer.headers["Vary"] == "Accept-Encoding"
    _, plain, _ = get(f"{url}/ledgers/election-2026/tile/entries/000")
    assert "Content-Encoding" not in plain and plain["Vary"] == "Accept-Encoding"


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        ("gzip", "gzip"),
        ("GZIP", "gzip"),
        ("deflate, gzip", "gzip"),  # was deflate: a coding PROTOCOL 15.1 never names
        ("gzip;q=0.5, identity", "gzip"),
        ("*", "gzip"),
        ("gzip;q=0", None),  # was gzip: q=0 is "not acceptable" (RFC 9110 12.5.3)
        ("*, gzip;q=0", None),
        ("deflate", None),
        ("br", None),
        ("identity", None),
        ("gzip;q=2", None),  # no qvalue: refused rather than guessed
    ],
)
def test_an_entry_bundle_is_gzip_or_identity(served: tuple[str, Path], accept: str, coding: str | None) -> None:
    url, _ = served
    request = urllib.request.Request(
        f"{url}/ledgers/election-2026/tile/entries/000", headers={"Accept-Encoding": accept}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        body = answer.read()
        assert answer.headers["Content-Encoding"] == coding and answer.headers["Vary"] == "Accept-Encoding"
    _, _, plain = get(f"{url}/ledgers/election-2026/tile/entries/000")
    assert (gzip.decompress(body) if coding else body) == plain


def test_head_of_the_event_stream_is_a_head_alone(served: tuple[str, Path]) -> None:
    # It was the stream's first bytes after the head, and the stream went on: the next request
    # on that connection read "retry: 2000" as its status line, or waited for good.
    url, _ = served
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("HEAD", "/api/events")
        head = connection.getresponse()
        assert head.status == 200 and head.getheader("Content-Type") == "text/event-stream"
        assert head.read() == b""
        connection.request("GET", "/healthz")
        after = connection.getresponse()
        assert after.status == 200 and json.loads(after.read()) == {"ok": True}
    finally:
        connection.close()


@pytest.mark.parametrize(
    "path",
    [
        "/api/ledgers",
        "/api/ledgers/election-2026",
        "/api/ledgers/election-2026/records/0",
        "/api/ledgers/election-2026/records?start=0&limit=2",
        "/api/ledgers/election-2026/proof/inclusion?index=1",
        "/api/ledgers/nope/records/0",  # a refusal too: a page elsewhere reads its code
        "/ledgers/election-2026/tile/0/000.p/1",
    ],
)
def test_public_routes_may_be_read_from_any_origin(served: tuple[str, Path], path: str) -> None:
    # PROTOCOL 15.5: a page opened from a mirror or a local file names the gateway and reads it.
    url, _ = served
    status, headers, _ = get(f"{url}{path}")
    assert status in (200, 404) and headers.get("Access-Control-Allow-Origin") == "*"


def test_the_event_stream_may_be_read_from_any_origin(served: tuple[str, Path]) -> None:
    url, _ = served
    status, headers, _ = get(f"{url}/api/events", "HEAD")
    assert status == 200 and headers.get("Access-Control-Allow-Origin") == "*"


@pytest.mark.parametrize("path", ["/api/cluster", "/metrics", "/", "/vote.html"])
def test_other_routes_are_not_shared_with_other_origins(served: tuple[str, Path], path: str) -> None:
    # /api/cluster may hold a loopback gateway's logs: no other web site a visitor opens reads it.
    url, _ = served
    status, headers, _ = get(f"{url}{path}")
    assert status in (200, 503) and "Access-Control-Allow-Origin" not in headers  # /api/cluster: no Redis here


def test_consistency_proof_verifies(served: tuple[str, Path]) -> None:
    url, _ = served
    answer = get_json(f"{url}/api/ledgers/election-2026/proof/consistency?old=100")
    tree.verify_consistency(
        100,
        answer["new"],
        bytes.fromhex(answer["old_root"]),
        bytes.fromhex(answer["new_root"]),
        [bytes.fromhex(h) for h in answer["proof"]],
    )


def test_a_voters_records_need_a_pinned_checkpoint_key(served: tuple[str, Path]) -> None:
    # The demo's election pins no checkpoint key: there is no checkpoint to give receipts under
    # (tests/unit/verifier/test_gateway_checkpoint.py serves receipts of a ledger that pins one).
    url, store = served
    reader = StoreReader(store)
    registration = decode_record(reader.get("election-2026", 1) or b"", LIMITS)
    eid = electronic_id(registration)
    status, _, body = get(f"{url}/api/ledgers/election-2026/voters/{eid}")
    assert status == 404 and b"pins no checkpoint key" in body
    assert error_of(f"{url}/ledgers/election-2026/checkpoint") == (404, "not_found")
    assert error_of(f"{url}/api/ledgers/election-2026/voters/nonsense") == (400, "bad_request")


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/ledgers/nope", 404, "no_such_ledger"),
        ("/api/ledgers/NOPE!", 400, "bad_request"),
        # A parameter the route does not read is refused, not ignored (outsider19 F6).
        ("/api/ledgers/election-2026/checkpoint?witness=5", 400, "bad_request"),
        ("/api/ledgers/election-2026/records?START=5", 400, "bad_request"),
        ("/api/ledgers/election-2026/records?start=1&bogus=2", 400, "bad_request"),
        ("/api/ledgers/election-2026/tally?height=3", 400, "bad_request"),
        ("/api/ledgers?x=", 400, "bad_request"),
        ("/api/nope?x=1", 404, "not_found"),  # no route: not_found, whatever the query
        ("/api/ledgers/election-2026/records/99999999", 404, "not_found"),
        ("/api/ledgers/election-2026/records/01", 400, "bad_request"),
        ("/api/ledgers/election-2026/records/99999999999999999999999", 400, "bad_request"),
        ("/api/records/zz", 400, "bad_request"),
        ("/api/records/" + "0" * 64, 404, "not_found"),
        ("/ledgers/election-2026/tile/0/00", 400, "bad_request"),
        ("/ledgers/election-2026/tile/0/x000/001", 400, "bad_request"),
        ("/ledgers/election-2026/tile/0/005", 404, "bad_tree_size"),
        ("/ledgers/election-2026/tile/0/001", 404, "bad_tree_size"),
        ("/ledgers/election-2026/tile/64/000", 400, "bad_request"),
        ("/ledgers/election-2026/tile/entries/009", 404, "bad_tree_size"),
        ("/ledgers/nope/tile/0/000", 404, "no_such_ledger"),
        ("/ledgers/election-2026/tile/../../etc/passwd", 400, "bad_request"),
        ("/static/../gateway.py", 404, "not_found"),
        ("/static/%2e%2e/gateway.py", 400, "bad_request"),  # no path has a percent-escape (15)
        ("/ledgers/%65lection-2026/checkpoint", 400, "bad_request"),  # a second spelling (o16 nit 8)
        ("/static/", 404, "not_found"),  # aiohttp's 403 for a directory: PROTOCOL 15 has no 403
        ("/static/vledger.js/", 404, "not_found"),  # served as the file (outsider 20, F12): one name a file
        # aiohttp answered these 404 with an empty octet-stream body, cacheable (outsider23 F3).
        ("/static/nosuch.js", 404, "not_found"),
        ("/static/..%5cvledger.js", 400, "bad_request"),
        ("/static/%5c", 400, "bad_request"),
        ("/ledgers/election-2026/tile/0/x999/x999/x999/x999/x999/x999/x999/999", 400, "bad_request"),
        ("/../../etc/passwd", 404, "not_found"),
        ("/secret.html", 404, "not_found"),
        # The proof routes check their arguments as the CURVE commands do (PROTOCOL 14.1), with
        # their codes: bad_proof would say that a proof failed to verify.
        ("/api/ledgers/election-2026/proof/inclusion?index=999999", 404, "bad_tree_size"),
        ("/api/ledgers/election-2026/proof/inclusion?index=5&size=5", 404, "bad_tree_size"),
        ("/api/ledgers/election-2026/proof/inclusion?index=0&size=0", 404, "bad_tree_size"),
        ("/api/ledgers/election-2026/proof/inclusion?index=0&size=999999", 404, "bad_tree_size"),
        ("/api/ledgers/election-2026/proof/inclusion", 400, "bad_request"),
        ("/api/ledgers/election-2026/proof/consistency?old=5&new=4", 400, "bad_request"),
        ("/api/ledgers/election-2026/proof/consistency?old=0&new=4", 400, "bad_request"),
        ("/api/ledgers/election-2026/proof/consistency?old=999999", 404, "bad_tree_size"),
        ("/api/ledgers/election-2026/proof/consistency?old=5&new=999999", 404, "bad_tree_size"),
        ("/ledgers/election-2026/tile/entries/000.p/256", 400, "bad_request"),
        ("/nothing/here", 404, "not_found"),
        # One spelling per tile (PROTOCOL 12.6): aiohttp decodes %2F before routing, so without
        # the check these were served as tile/0/000.p/4 and an entry bundle under other names.
        ("/ledgers/election-2026/tile/0%2F000.p/4", 400, "bad_request"),
        ("/ledgers/election-2026/tile/entries%2F000.p/4", 400, "bad_request"),
        ("/ledgers/election-2026/tile/0/%30%30%30.p/4", 400, "bad_request"),
        ("/ledgers/election-2026/tile/0/000%2F..%2F..", 400, "bad_request"),
        # A parameter named twice: the route would answer for the first one only.
        ("/api/ledgers/election-2026/proof/inclusion?index=0&index=1&size=4", 400, "bad_request"),
        ("/api/ledgers/election-2026/records?start=0&start=5", 400, "bad_request"),
        # An empty value names no number (PROTOCOL 15): it is refused, not taken as the default.
        ("/api/ledgers/election-2026/records?start=", 400, "bad_request"),
        ("/api/ledgers/election-2026/records?limit", 400, "bad_request"),
        ("/api/ledgers/election-2026/proof/inclusion?index=0&size=", 400, "bad_request"),
        ("/api/ledgers/election-2026/proof/consistency?old=1&new=", 400, "bad_request"),
        ("/api/ledgers/election-2026/checkpoint?witnesses=", 400, "bad_request"),
        # Funds of a ledger that is no charity, judged from its genesis (no tally needed).
        ("/api/ledgers/election-2026/funds", 400, "bad_request"),
        ("/api/ledgers/nope/funds", 404, "no_such_ledger"),
    ],
)
def test_bad_paths_get_json_errors(served: tuple[str, Path], path: str, status: int, code: str) -> None:
    url, _ = served
    assert error_of(url + path) == (status, code)


def test_a_bad_entry_bundle_path_is_named_as_given(served: tuple[str, Path]) -> None:
    # It is parsed as a hash tile's path: the refusal must not name that path instead.
    url, _ = served
    status, _, body = get(f"{url}/ledgers/election-2026/tile/entries/000.p/256")
    message = json.loads(body)["error"]["message"]
    assert status == 400 and "tile/entries/000.p/256" in message and "tile/0/" not in message


@pytest.mark.parametrize(
    ("minor", "text"),
    [(0, "0.00"), (5, "0.05"), (2025, "20.25"), (-150, "-1.50"), (2**64 - 1, "184467440737095516.15")],
)
def test_amounts_are_exact_decimals(minor: int, text: str) -> None:
    # 2**64 - 1 through a float would read 184467440737095520.00.
    assert amount_text(minor, "SAR") == text


@pytest.mark.parametrize(
    ("currency", "decimals", "balance"),
    [("SAR", 2, "20.25"), ("JPY", 0, "2025"), ("KWD", 3, "2.025"), ("CLF", 4, "0.2025"), ("XAU", None, "2025")],
)
def test_funds_are_shown_in_the_currency_s_own_decimals(currency: str, decimals: int | None, balance: str) -> None:
    # Every currency was divided by 100: 2025 yen read "20.25", 2025 fils (2.025 dinars) "20.25".
    fund = {"donated": 2525, "disbursed": 500, "donations": 2, "disbursements": 1, "balance": 2025}
    tally = {"type": "charity", "currency": currency, "funds": {"zakat": fund}, "donated": 2525, "disbursed": 500}
    shown = funds_json("zakat", {**tally, "balance": 2025}, 9, {"status": "agree"})
    assert shown["decimals"] == decimals and shown["currency"] == currency
    assert shown["balance"] == shown["funds"]["zakat"]["balance"] == balance
    assert shown["funds"]["zakat"]["donations"] == 2  # counts stay counts


@pytest.mark.parametrize(
    ("verdict", "stale", "behind", "head_stale", "status"),
    [
        (Verdict(AGREE, 14), (), False, False, "agree"),
        (Verdict(AGREE, 14), ("observer-1", "observer-2"), False, False, "stale"),
        (Verdict(AGREE, 14), (), True, False, "stale"),
        (Verdict(STILL_COUNTING, 14), ("observer-2",), False, False, "stale"),
        (Verdict(AGREE, 14), (), False, True, "stale"),  # a head no majority of witnesses vouched for lately
        (
            Verdict(MISMATCH, 14, ("observer-2",)),
            ("observer-1",),
            False,
            True,
            "mismatch",
        ),  # a failure first, as exit 1
    ],
)
def test_the_gateway_s_verdict_says_stale_where_vledger_tally_exits_4(
    verdict: Verdict, stale: tuple[str, ...], behind: bool, head_stale: bool, status: str
) -> None:
    # Observers agreeing at height 14 while the checkpoint held 19 records: "agree" (outsider21 F3).
    head = LedgerHead(19, "ingest-1", fresh_ms=1_790_000_000_000)
    report = TallyReport("e", (), verdict, {}, head=head, stale=stale, behind=behind, head_stale=head_stale)
    shown = verdict_json(report)
    assert shown == {
        "status": status,
        "height": 14,
        "differing": list(verdict.differing),
        "recount": [],
        "checkpoint_size": 19,
        "stale": list(stale),
        "ahead": [],
        "behind": behind,
        "fresh_ms": 1_790_000_000_000,
        "head_stale": head_stale,
    }
    assert report.exit_code == {"agree": 0, "stale": 4, "mismatch": 1}[status]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_no_write_verbs(served: tuple[str, Path], method: str) -> None:
    url, _ = served
    assert error_of(f"{url}/api/ledgers", method) == (405, "bad_request")
    assert error_of(f"{url}/ledgers/election-2026/tile/0/000", method) == (405, "bad_request")
    # RFC 9110 15.5.6: a 405 names the methods that are served.
    assert get(f"{url}/api/ledgers", method)[1]["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("method", ["CONNECT", "POST", "OPTIONS", "TRACE"])
def test_every_refused_verb_under_api_ledgers_has_the_public_cors_header(served: tuple[str, Path], method: str) -> None:
    # PROTOCOL 15.2: every answer of a route under /api/ledgers, refusals included. aiohttp gives a
    # CONNECT (an authority-form target) no path: its 405 went without the header.
    url, _ = served
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(f"{method} /api/ledgers HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
    assert head.startswith("http/1.1 405") and "\r\naccess-control-allow-origin: *" in head, head


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (str(2**63), "height 9223372036854775808 is over 9223372036854775807"),
        (str(2**64 - 1), "height 18446744073709551615 is over 9223372036854775807"),  # was "not a decimal integer"
        ("9" * 5000, "height 99999999999999999999... (5000 digits) is over 9223372036854775807"),
        ("01", "height must be a decimal integer without leading zeros, not '01'"),
        ("-1", "height must be a decimal integer without leading zeros, not '-1'"),
        ("", "height must be a decimal integer without leading zeros, not ''"),
    ],
)
def test_a_number_too_large_is_told_apart_from_no_number(value: str, said: str) -> None:
    with pytest.raises(BadRequestError) as raised:
        gateway_int(value, "height")
    assert raised.value.message == said


def test_a_store_replaced_under_the_gateway_is_read_anew(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `vledger repair NODE --restart` moves the node's store aside and puts a rebuilt one in its
    # place, restarting the node only: the gateway beside it went on serving the old file for good
    # (stale sizes, a 404 checkpoint once the new store's was larger, and its damage if any).
    monkeypatch.setattr("vledger.verifier.gateway.STORE_LOOK_SECONDS", 0.0)
    gateway, store, rebuilt = _replaced_store(tmp_path)
    try:
        with HttpThread(build_app(gateway), "127.0.0.1", 0) as server:
            url = f"http://127.0.0.1:{server.port}"
            sizes = {e["ledger"]: e["size"] for e in get_json(f"{url}/api/ledgers")["ledgers"]}
            assert get(f"{url}/ledgers/election-2026/tile/0/000.p/{sizes['election-2026']}")[0] == 200
            store.rename(tmp_path / "data" / "replica-1.broken-1")  # as vledger repair does
            rebuilt.rename(store)
            reader = StoreReader(store)
            shown = {e["ledger"]: e["size"] for e in get_json(f"{url}/api/ledgers")["ledgers"]}
            assert shown == {ledger: reader.size(ledger) for ledger in reader.ledgers()} != sizes
            size = shown["election-2026"]
            assert get(f"{url}/ledgers/election-2026/tile/0/000.p/{size}")[2] == reader.tree("election-2026").tile(
                0, 0, size
            )
    finally:
        gateway.close()


def _replaced_store(tmp_path: Path) -> tuple[Gateway, Path, Path]:
    """A gateway over a store of 20 records, and a rebuilt store of 40 to put in its place."""
    config = two_nodes(tmp_path / "cluster.toml")
    store = tmp_path / "data" / "replica-1"
    run_demo(store, 20, 1, LIMITS)
    rebuilt = tmp_path / "rebuilt"
    run_demo(rebuilt, 40, 1, LIMITS)
    return Gateway(config, "replica-1"), store, rebuilt


def _swap(store: Path, rebuilt: Path) -> None:
    store.rename(store.with_name("replica-1.broken-1"))  # as vledger repair does
    rebuilt.rename(store)


TILE_LEDGER = "election-2026"


def _tile_path(store: Path) -> tuple[str, bytes]:
    """A level-0 tile both stores have (the old store's size), and its bytes in ``store``."""
    reader = StoreReader(store)
    try:
        size = StoreReader(store.with_name("replica-1.broken-1")).size(TILE_LEDGER)
        return f"tile/0/000.p/{size}", reader.tree(TILE_LEDGER).tile(0, 0, size)
    finally:
        reader.close()


def test_a_thread_on_the_old_store_does_not_refill_the_flushed_tile_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Thread A sees the store replaced and flushes the caches; thread B still holds a view of the
    # old file (it looks only every STORE_LOOK_SECONDS). B read the old tile and put it back in
    # the cache, served from then on as immutable to every thread.
    gateway, store, rebuilt = _replaced_store(tmp_path)
    a, b = ThreadPoolExecutor(1), ThreadPoolExecutor(1)  # one thread each: their views stay theirs
    try:
        monkeypatch.setattr("vledger.verifier.gateway.STORE_LOOK_SECONDS", 3600.0)
        b.submit(lambda: gateway.reader).result()  # B will not look again during the test
        monkeypatch.setattr("vledger.verifier.gateway.STORE_LOOK_SECONDS", 0.0)
        a.submit(lambda: gateway.reader).result()  # A looks at every read
        _swap(store, rebuilt)
        path, new_tile = _tile_path(store)
        a.submit(lambda: gateway.reader).result()  # A sees the new file: the caches are flushed
        assert b.submit(gateway.tile, TILE_LEDGER, path).result()[0] == new_tile
        assert a.submit(gateway.tile, TILE_LEDGER, path).result()[0] == new_tile
    finally:
        a.shutdown()
        b.shutdown()
        gateway.close()


def test_a_tile_read_while_the_store_is_replaced_is_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # B's read began on the old file; A flushes the caches before B puts its tile in: that tile
    # must not go in, or every later request gets the old file's tile under immutable headers.
    gateway, store, rebuilt = _replaced_store(tmp_path)
    a, b = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
    try:
        monkeypatch.setattr("vledger.verifier.gateway.STORE_LOOK_SECONDS", 3600.0)
        b.submit(lambda: gateway.reader).result()
        monkeypatch.setattr("vledger.verifier.gateway.STORE_LOOK_SECONDS", 0.0)
        a.submit(lambda: gateway.reader).result()
        _swap(store, rebuilt)
        path, new_tile = _tile_path(store)
        read_tree = gateway._tree

        def tree_then_flush(ledger: str) -> StoredTree:
            stored = read_tree(ledger)  # B's view: the old file
            a.submit(lambda: gateway.reader).result()  # meanwhile A sees the new file
            return stored

        monkeypatch.setattr(gateway, "_tree", tree_then_flush)
        assert b.submit(gateway.tile, TILE_LEDGER, path).result()[0] != new_tile  # the read in flight: old
        monkeypatch.setattr(gateway, "_tree", read_tree)
        assert a.submit(gateway.tile, TILE_LEDGER, path).result()[0] == new_tile
        assert b.submit(gateway.tile, TILE_LEDGER, path).result()[0] == new_tile
    finally:
        a.shutdown()
        b.shutdown()
        gateway.close()


def test_a_store_replaced_during_a_voter_lookup_is_no_deadlock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The voter index was fed from `self.reader` under the lock that opening a reader takes: a
    # store replaced just before made that thread wait on itself for good.
    monkeypatch.setattr("vledger.verifier.gateway.STORE_LOOK_SECONDS", 0.0)
    gateway, store, rebuilt = _replaced_store(tmp_path)
    # No checkpoint covers a record (the demo pins no key): the index is fed, the answer is not_found.
    monkeypatch.setattr(
        gateway,
        "checkpoint",
        lambda ledger: SimpleNamespace(gathered=SimpleNamespace(checkpoint=SimpleNamespace(size=0))),
    )
    read_size = gateway._size

    def size_then_replace(ledger: str) -> int:
        size = read_size(ledger)
        if rebuilt.exists():
            _swap(store, rebuilt)
        return size

    monkeypatch.setattr(gateway, "_size", size_then_replace)
    worker = ThreadPoolExecutor(1)
    try:
        with pytest.raises(NotFoundError):
            worker.submit(gateway.voter, TILE_LEDGER, "someone").result(timeout=30)
    finally:
        worker.shutdown(wait=False)
        gateway.close()


def test_what_a_genesis_read_while_the_store_is_replaced_lists_is_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The outside witnesses a genesis lists were cached for good and never flushed: read from a
    # damaged file that `vledger repair` replaced, a ledger's would stay unusable until a restart.
    gateway, store, rebuilt = _replaced_store(tmp_path)
    a, b = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
    try:
        monkeypatch.setattr("vledger.verifier.gateway.STORE_LOOK_SECONDS", 3600.0)
        b.submit(lambda: gateway.reader).result()
        monkeypatch.setattr("vledger.verifier.gateway.STORE_LOOK_SECONDS", 0.0)
        a.submit(lambda: gateway.reader).result()
        _swap(store, rebuilt)
        read_rules = gateway.genesis_rules

        def rules_then_flush(ledger: str) -> Any:
            rules = read_rules(ledger)  # B's view: the old file
            a.submit(lambda: gateway.reader).result()  # meanwhile A sees the new file
            return rules

        monkeypatch.setattr(gateway, "genesis_rules", rules_then_flush)
        b.submit(gateway.outside, TILE_LEDGER).result()
        assert TILE_LEDGER not in gateway._outside
        monkeypatch.setattr(gateway, "genesis_rules", read_rules)
        b.submit(gateway.outside, TILE_LEDGER).result()  # now from the new file: kept
        assert TILE_LEDGER in gateway._outside
    finally:
        a.shutdown()
        b.shutdown()
        gateway.close()


def _metric(url: str, name: str) -> float | None:
    status, _, body = get(f"{url}/metrics")
    assert status == 200, body[:200]
    lines = [line for line in body.decode().splitlines() if line.startswith(f"{name} ")]
    return float(lines[0].split()[1]) if lines else None


def test_a_damaged_store_is_a_clear_readyz_reason_and_a_metric_then_clears_once_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of the store's file overwritten under a running gateway: a read is answered 503
    store_damaged, /readyz's store check names the file and the damage, and vledger_store_damaged
    reads 1 (it said nothing: /metrics had no store series, /readyz a bare DatabaseError); a
    rebuilt store put in its place clears both."""
    monkeypatch.setattr("vledger.verifier.gateway.STORE_LOOK_SECONDS", 0.0)
    gateway, store, rebuilt = _replaced_store(tmp_path)
    try:
        checks = {"store": readiness(gateway)["store"]}
        with HttpThread(build_app(gateway, checks), "127.0.0.1", 0) as server:
            url = f"http://127.0.0.1:{server.port}"
            assert _metric(url, "vledger_store_damaged") == 0.0
            assert get(f"{url}/readyz")[0] == 200
            overwrite_pages(store / DB_NAME)
            assert error_of(f"{url}/api/ledgers/election-2026/records?start=0&limit=5") == (503, "store_damaged")
            assert _metric(url, "vledger_store_damaged") == 1.0
            status, _, body = get(f"{url}/readyz")
            reason = json.loads(body)["checks"]["store"]
            assert status == 503 and reason.startswith(f"{store / DB_NAME}: the store's file is damaged: "), reason
            store.rename(tmp_path / "data" / "replica-1.broken-1")  # as vledger repair does
            rebuilt.rename(store)
            assert _metric(url, "vledger_store_damaged") == 0.0
            assert get(f"{url}/readyz")[0] == 200
    finally:
        gateway.close()


def test_a_page_is_cut_at_its_byte_budget_and_next_says_where_to_go_on(
    served: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outsider pass 18, F0: 500 records of 60 KB made a 70 MB answer, built whole per request.
    A page stops where its records' JSON would pass PAGE_BYTES (here lowered to a few records),
    with at least one record, and ``next`` leads on to every record."""
    url, _ = served
    budget = 5000
    monkeypatch.setattr(gateway_module, "PAGE_BYTES", budget)
    page = get_json(f"{url}/api/ledgers/election-2026/records?start=0&limit=500")
    shown = [json.dumps(r, separators=(",", ":")) for r in page["records"]]
    assert 1 < len(shown) < 500 and page["next"] == len(shown)
    assert sum(len(s) + 1 for s in shown) <= budget
    heights, start = [], 0
    while start is not None:
        page = get_json(f"{url}/api/ledgers/election-2026/records?start={start}&limit=500")
        heights += [r["height"] for r in page["records"]]
        start = page["next"]
    assert heights == list(range(page["size"]))
    monkeypatch.setattr(gateway_module, "PAGE_BYTES", 10)  # less than any record: one a page
    assert len(get_json(f"{url}/api/ledgers/election-2026/records?start=3&limit=500")["records"]) == 1


def test_a_head_event_s_pages_end_where_each_says_so_the_newest_records_are_sent_too() -> None:
    """Reviewer r3: a head event's page cut at PAGE_BYTES kept the oldest new records and the
    next event started at the new size: the newest were never shown. The events now go on from
    each page's ``next`` (:func:`_page_end`) up to the size."""
    assert gateway_page_end(b'{"ledger":"v","size":9,"records":[{}],"next":4}', 9) == 4
    assert gateway_page_end(b'{"ledger":"v","size":9,"records":[{}],"next":null}', 9) == 9


def test_tallies_are_read_once_a_second_unless_an_observer_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """o6 H9: each anonymous /tally or /funds read up to 4 MiB an observer from Redis and checked
    every signature (0.5 s of the gateway's CPU for a large balance map), as fast as asked."""
    config = two_nodes(tmp_path / "cluster.toml")
    run_demo(tmp_path / "data" / "replica-1", 20, 1, LIMITS)
    latest = {"observer-1": "5-0"}
    reads: list[str] = []

    def read_tallies(board: Any, ledger: str, *args: Any, **options: Any) -> TallyReport:
        reads.append(ledger)
        return TallyReport(ledger, (), Verdict(STILL_COUNTING, None), {})

    monkeypatch.setattr(gateway_module, "read_tallies", read_tallies)
    monkeypatch.setattr(
        gateway_module.TallyBoard, "latest_ids", lambda self, ledgers, observers: {x: dict(latest) for x in ledgers}
    )
    gateway = Gateway(config, "replica-1")
    try:
        for _ in range(3):
            gateway.tally("election-2026")
        assert reads == ["election-2026"]
        latest["observer-1"] = "6-0"  # a new entry: read at once, not a second later
        gateway.tally("election-2026")
        assert reads == ["election-2026"] * 2
        monkeypatch.setattr(gateway_module, "CHECKPOINT_SECONDS", 0.0)  # and again once the second is over
        gateway.tally("election-2026")
        assert reads == ["election-2026"] * 3
    finally:
        gateway.close()


def _raw(url: str, request: bytes) -> tuple[str, bytes]:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.decode("latin-1").lower(), body


@pytest.mark.parametrize("method", ["FOO", "GETT"])
def test_a_method_aiohttp_does_not_know_is_a_405_json_refusal(served: tuple[str, Path], method: str) -> None:
    # PROTOCOL 15: any other method is 405; aiohttp's parser answered an unknown token itself,
    # 400 text/plain "Invalid method encountered".
    url, _ = served
    head, body = _raw(url, f"{method} /api/ledgers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert head.split(" ", 2)[1] == "405", head  # (HTTP/1.0: the request's version was never read)
    assert "\r\ncontent-type: application/json" in head and "\r\nallow: get, head" in head
    assert "\r\ncache-control: no-store" in head and json.loads(body)["error"]["code"] == "bad_request"


def test_no_answer_names_the_server_s_software_and_static_files_are_revalidated(served: tuple[str, Path]) -> None:
    url, _ = served
    for path in ("/static/vledger.css", "/static/vledger.js", "/api/ledgers", "/nosuch", "/healthz"):
        status, headers, _ = get(f"{url}{path}")
        assert headers["Server"] == "vledger" and headers["X-Content-Type-Options"] == "nosniff", path
    status, headers, _ = get(f"{url}/static/vledger.css")
    assert status == 200 and headers["Cache-Control"] == "no-cache"
    head, _ = _raw(url, b"BREW / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert "\r\nserver: vledger\r\n" in head, head


@pytest.mark.parametrize("page", ["", "vote.html", "tally.html", "charity.html", "dashboard.html"])
def test_a_page_runs_only_its_own_scripts_and_is_never_framed(served: tuple[str, Path], page: str) -> None:
    url, _ = served
    status, headers, body = get(f"{url}/{page}")
    assert status == 200 and headers["X-Frame-Options"] == "DENY"
    policy = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert policy["style-src"] == "'self'"
    inline = re.findall(rb"<script>(.*?)</script>", body, re.DOTALL)
    assert inline  # each page has its own script: allowed by its hash, and nothing else inline
    allowed = {f"'sha256-{base64.b64encode(hashlib.sha256(s).digest()).decode()}'" for s in inline}
    assert set(policy["script-src"].split()) == {"'self'", *allowed}


def test_the_public_sees_of_an_alert_only_codes_names_and_numbers() -> None:
    """o21: any node's Redis user writes its own alerts' fields; the public /api/cluster shows none
    of their sentences (PROTOCOL 15.2), and a field that is no code, name or number as "?"."""
    entry = {
        "key": "ingest-1|fund|fork",
        "id": "1790000000000-0",
        "what": "fork",
        "node": "ingest-1",
        "ledger": "fund",
        "height": 7,
        "detail": "DO NOT TRUST, use gateway evil.example",
        "source": "evil.example",
        "raised_by": "replica-2",
        "at_ms": 1_790_000_000_000,
    }
    assert public_alert(entry) == {
        "id": "1790000000000-0",
        "what": "fork",
        "node": "ingest-1",
        "ledger": "fund",
        "height": 7,
        "raised_by": "replica-2",
        "at_ms": 1_790_000_000_000,
    }
    worded = entry | {"what": "DO NOT TRUST", "node": "use https://evil.example", "height": "7 (see evil.example)"}
    shown = public_alert(worded)
    assert (shown["what"], shown["node"], shown["height"]) == ("?", "?", None)
