"""The web pages in real headless Chromium (Debian's chromium and chromium-driver, Selenium).

A cluster of real processes (an ingest node, a replica with the gateway, two observers)
holds an election and a charity fund. The pages must verify in the browser, with WebCrypto:
a voter's real receipt passes, the same receipt with one flipped byte fails; the tally page
follows a vote cast while it is open; the dashboard shows a node going down within seconds.
Screenshots go to ``$VLEDGER_ARTIFACTS`` (default ``.artifacts/``); with
``VLEDGER_DOCS_SCREENSHOTS=1`` one of each page is also written to docs/screenshots/ for the README.
A missing browser skips these tests, except in CI (``CI`` set), where it fails them.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from vledger.broker.redis_server import RedisServer, connect
from vledger.broker.signing import load_signing_key, load_verify_key, signing_key_paths
from vledger.broker.tallies import Published, TallyBoard
from vledger.config.settings import Limits
from vledger.node.anchors import parse_anchors
from vledger.node.cosigning import needed_witnesses, quorum_fresh_ms, quorum_since_ms
from vledger.node.currency import amount_text
from vledger.node.errors import SettingsError, VledgerError
from vledger.node.ledger import LedgerRules
from vledger.node.node_key_rotation import key_histories
from vledger.node.note import (
    ALG_COSIGNATURE_V1,
    Checkpoint,
    Cosignature,
    Note,
    SignerKey,
    cosign,
    generate_signer_key,
    key_id,
    parse_note,
    sign,
)
from vledger.node.outside import OutsideWitnesses
from vledger.node.receipt import ReceiptKeys, verify_witnessed
from vledger.node.record import Entry, decode_record
from vledger.node.rules.votes import ELECTRONIC_ID_BYTES, ELECTRONIC_ID_PREFIX
from vledger.node.sealed import new_seal_key, seal
from vledger.node.store import ChainStore
from vledger.node.storefile import StoreReader
from vledger.node.witness import HomeSigner, home_key
from vledger.tests.integration.cluster import ADMIN, FORGING_OBSERVERS, LocalCluster, entry, now_ms, wait_until
from vledger.tests.unit.tools.test_anchors import REFUSED
from vledger.tests.unit.verifier.chains import Election, plan_election
from vledger.verifier.pages import WEB_DIR, render
from vledger.verifier.tally import Snapshot

ELECTION = "election-2026"
FUND = "zakat"
REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = Path(os.environ.get("VLEDGER_ARTIFACTS", REPO / ".artifacts")) / "screenshots"
DOCS = REPO / "docs" / "screenshots"
WAIT = 20.0  # seconds a page may take to show what it must


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        missing = f"selenium is not installed: {e}"
    else:
        missing = "" if chromium and driver else "Debian's chromium and chromium-driver are not installed"
    if missing:
        if _in_ci():
            pytest.fail(f"CI must provide the browser tests' tools (.ci/run installs them): {missing}")
        pytest.skip(missing)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium  # type: ignore[assignment]
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    session = webdriver.Chrome(options=options, service=Service(driver))
    session.set_page_load_timeout(WAIT)
    try:
        yield session
    finally:
        session.quit()


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    with LocalCluster(
        redis_server.url,
        nodes=1,
        replicas=1,
        observers=2,
        gateways=["replica-1"],
        observing=FORGING_OBSERVERS,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def election(cluster: LocalCluster) -> Election:
    planned = plan_election(ELECTION, 30, now_ms(), seed=7, author="writer1")
    rules = cluster.pinned(ELECTION, planned.rules)
    cluster.admin().create_ledger(Entry.prepare(rules.genesis_content(ELECTION, ADMIN, "g", now_ms()), 0, Limits()))
    writer = cluster.client("writer1")
    for phase in planned.phases:
        writer.put_many(phase)
    rules = cluster.pinned(
        FUND, LedgerRules(("donation", "disbursement"), 0, {"type": "charity", "currency": "SAR", "funds": ["zakat"]})
    )
    cluster.admin().create_ledger(Entry.prepare(rules.genesis_content(FUND, ADMIN, "g", now_ms()), 0, Limits()))
    key = new_seal_key()
    for i, amount in enumerate((250_000, 12_550)):
        payload = {"donor": seal(key, f"d{i}"), "fund": "zakat", "amount": amount, "source": "bank", "purpose": "zakat"}
        writer.put(entry(FUND, "donation", payload, "writer1"))
    writer.put(
        entry(
            FUND,
            "disbursement",
            {"fund": "zakat", "target": "family-07", "amount": 40_000, "purpose": "rent"},
            "writer1",
        )
    )
    return planned


def shot(browser: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    if os.environ.get("VLEDGER_DOCS_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(DOCS / f"{name}.png"))


def text_of(browser: Any, selector: str) -> str:
    # One script reads the text: the pages replace their rows as they update (no stale elements).
    script = "return Array.from(document.querySelectorAll(arguments[0]), (e) => e.innerText).join(' ')"
    return str(browser.execute_script(script, selector))


def wait_text(browser: Any, selector: str, wanted: str, what: str) -> str:
    return wait_until(lambda: wanted in text_of(browser, selector) and text_of(browser, selector), WAIT, what, 0.1)


def receipt(cluster: LocalCluster, eid: str) -> dict[str, Any]:
    """The voter's records with their receipts, once a checkpoint a witness cosigned covers them all."""
    url = f"{cluster.gateway_url('replica-1')}api/ledgers/{ELECTION}/voters/{eid}"

    def covered() -> dict[str, Any] | None:
        if _status(url) != 200:
            return None
        with urllib.request.urlopen(url, timeout=10) as answer:
            shown: dict[str, Any] = json.loads(answer.read())
        done = shown["checkpoint"]["cosigned_by"] and all(r["receipt"] for r in shown["records"])
        return shown if done else None

    return wait_until(covered, WAIT, "a cosigned checkpoint covering the voter's records")  # type: ignore[no-any-return]


def _json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_the_voter_page_verifies_a_real_receipt_and_refuses_a_flipped_byte(
    browser: Any, cluster: LocalCluster, election: Election, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    eid = election.eids[4]
    good = receipt(cluster, eid)
    browser.get(f"{cluster.gateway_url('replica-1')}vote.html?eid={eid}")
    wait_text(browser, "#verdict", f"Verified: {len(good['records'])} records of {eid}", "the looked-up vote verified")
    checks = text_of(browser, "#checks")
    assert "✗" not in checks and good["checkpoint"]["log_key"] in checks
    assert "Ed25519 signature by the pinned key valid" in checks and "/witness/" in checks and ": valid" in checks
    # Each row names the account that wrote the record, read from its proven bytes.
    script = "return Array.from(document.querySelectorAll('#records tbody tr'), (r) => r.cells[3].textContent)"
    assert browser.execute_script(script) == ["writer1"] * len(good["records"])
    shot(browser, "vote")

    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(good))
    browser.get(f"{cluster.gateway_url('replica-1')}vote.html")
    browser.find_element(By.ID, "file").send_keys(str(path))
    wait_text(
        browser,
        "#verdict",
        f"records of {eid} in the signed checkpoint of {good['checkpoint']['size']} records (receipt receipt.json)",
        "the receipt",
    )

    # One byte of the record flipped inside the receipt file (the record shown left as it was omitted).
    first = json.loads(good["records"][0]["receipt"])
    record = bytearray(base64.b64decode(first["record"]))
    record[len(record) // 2] ^= 0x01
    first["record"] = base64.b64encode(bytes(record)).decode()
    changed = json.dumps(first, separators=(",", ":"), ensure_ascii=False) + "\n"
    shown = {k: v for k, v in good["records"][0].items() if k != "record"}
    bad = dict(good, records=[dict(shown, receipt=changed)])
    flipped = tmp_path / "flipped.json"
    flipped.write_text(json.dumps(bad))
    browser.get(f"{cluster.gateway_url('replica-1')}vote.html")
    browser.find_element(By.ID, "file").send_keys(str(flipped))
    wait_text(browser, "#verdict", "Verification FAILED", "the flipped byte refused")
    assert "does not lead to the root" in text_of(browser, "#checks")
    shot(browser, "vote-flipped-byte")


def test_the_tally_page_follows_a_vote_cast_while_it_is_open(
    browser: Any, cluster: LocalCluster, election: Election
) -> None:
    browser.get(f"{cluster.gateway_url('replica-1')}tally.html?ledger={ELECTION}")
    cast = sum(election.counts.values())
    wait_text(browser, "#verdict", "The 2 observers agree", "the observers' agreement")
    before = text_of(browser, "#observers tbody")
    wait_until(lambda: all(_total(row) == cast for row in _rows(browser)), WAIT, f"{cast} votes counted by both")
    assert before  # the page showed the signed counts, each signature checked
    assert text_of(browser, "#observers tbody").count("✓ Ed25519 valid") == 2

    writer = cluster.client("writer1")
    registration = entry(ELECTION, "register", {"voter_id": "live-voter"}, "writer1")
    writer.put(registration)
    eid = ELECTRONIC_ID_PREFIX + registration.checksum[:ELECTRONIC_ID_BYTES].hex()
    writer.put(entry(ELECTION, "cast", {"electronic_id": eid, "choice": "alice"}, "writer1"))
    wait_until(lambda: all(_total(row) == cast + 1 for row in _rows(browser)), WAIT, "the new vote on the open page")
    wait_text(browser, "#verdict", "The 2 observers agree", "the observers' agreement after the vote")
    shot(browser, "tally")


def forge(cluster: LocalCluster, tallies: TallyBoard, ledger: str, **changes: Any) -> tuple[Published, Snapshot]:
    """What a thief of observer-1's key does: its latest body of ``ledger`` with ``changes`` (``tally``
    merged into the honest one), signed and published as its latest. Returns the honest entry (to
    name the latest again afterwards) and its body."""
    original = tallies.latest(ledger, ["observer-1"])["observer-1"]
    assert original is not None
    honest = Snapshot.decode(original.body)
    lie = dataclasses.replace(honest, **{**changes, "tally": {**honest.tally, **changes.get("tally", {})}})
    key = load_signing_key(signing_key_paths(cluster.directory / "keys", "observer-1")[0])
    tallies.publish(ledger, "observer-1", lie.height, lie.body(), key.sign(lie.body()))
    return original, honest


def test_the_tally_page_judges_an_observer_claiming_records_no_checkpoint_shows_apart(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str
) -> None:
    # An outsider with observer-1's key signed its body at height 1,000,000 with counts of its
    # choosing: the page compared only the latest bodies and said "Still counting" for ever.
    tallies = TallyBoard(connect(cluster.cluster_redis_url))
    original, _ = forge(cluster, tallies, ELECTION, height=1_000_000, tally={"counts": {"mallory": 999_999}})
    try:
        for fragment in (f"#anchors={anchors}", ""):
            browser.get(f"{cluster.gateway_url('replica-1')}tally.html?ledger={ELECTION}{fragment}")
            verdict = wait_text(browser, "#verdict", "no count is agreed meanwhile", "observer-1 judged apart")
            assert "Still counting" in verdict and "agree" not in verdict.replace("agreed", ""), verdict
            assert "observer-1 cannot be checked: counts records past the checkpoint verified here" in verdict
            assert browser.execute_script("return document.getElementById('verdict').className") == "warn"
            row = text_of(browser, "tr[data-observer='observer-1']")
            assert "1000000" in row and "cannot be checked" in row and "✓ Ed25519 valid" in row
            assert "mallory" not in text_of(browser, "#observers tbody")
            assert "alice" in text_of(browser, "tr[data-observer='observer-2']")
        shot(browser, "tally-observer-ahead")
    finally:
        tallies.client.set(tallies.latest_key(ELECTION, "observer-1"), original.entry_id)
    browser.get(f"{cluster.gateway_url('replica-1')}tally.html?ledger={ELECTION}#anchors={anchors}")
    wait_text(browser, "#verdict", "The 2 observers agree", "the observers' agreement once the lie is gone")


def test_a_gateway_listing_a_stolen_key_s_body_twice_beside_the_honest_one_is_a_mismatch_on_both_pages(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str
) -> None:
    """outsider24 G1, as found: observer-1's stolen key signs other figures at the height observer-2
    signed, and the gateway lists observer-1's body twice beside observer-2's. tally.html said
    "Still counting…" over both rows and charity.html showed the forged balance as "observer-1's
    word alone": a mismatch must never turn calm by adding rows."""
    tallies = TallyBoard(connect(cluster.cluster_redis_url))
    gateway = cluster.gateway_url("replica-1")
    for ledger in (ELECTION, FUND):  # forged beside the honest latest, not before a newer one is signed
        wait_until(functools.partial(_settled, tallies, gateway, ledger), WAIT, f"both observers at {ledger}'s head")
    forged = [
        forge(cluster, tallies, ELECTION, tally={"counts": {"mallory": 999_999}}),
        forge(cluster, tallies, FUND, tally={"balance": 99_999_999}),
    ]
    # The forged entries leave the stream afterwards: at the head's height, `vledger tally` would
    # find them in observer-1's history and the later tests a mismatch there.
    lies = {ledger: tallies.latest_ids([ledger], ["observer-1"])[ledger]["observer-1"] for ledger in (ELECTION, FUND)}

    def twice(path: str, body: Any) -> Any:
        if not path.partition("?")[0].endswith("/tally"):
            return None
        first = next(o for o in body["observers"] if o["observer"] == "observer-1")
        return body | {"observers": [first, *body["observers"]]}

    try:
        with Lying(gateway, twice) as lying:
            fresh(browser, f"{lying.url}tally.html?ledger={ELECTION}#anchors={anchors}")
            verdict = wait_text(browser, "#verdict", "MISMATCH", "the forged count beside the honest one")
            assert "Still counting" not in verdict and "The gateway listed observer-1 twice" in verdict, verdict
            assert browser.execute_script("return document.getElementById('verdict').className") == "bad"
            fresh(browser, f"{lying.url}charity.html?ledger={FUND}#anchors={anchors}")
            summary = wait_text(browser, "#summary", "DISAGREE", "the forged balance beside the honest one")
            assert "The gateway listed observer-1 twice" in summary, summary
            assert amount_text(99_999_999, "SAR") not in text_of(browser, "body"), summary
            assert browser.execute_script("return document.getElementById('summary').className") == "bad"
    finally:
        for ledger, (original, _) in zip((ELECTION, FUND), forged, strict=True):
            tallies.client.set(tallies.latest_key(ledger, "observer-1"), original.entry_id)
            tallies.client.xdel(tallies.stream_key(ledger, "observer-1"), lies[ledger])


OBSERVERS = ("observer-1", "observer-2")


def _settled(tallies: TallyBoard, gateway: str, ledger: str) -> int | None:
    """The checkpoint's size once both observers signed at the last record it holds (None before,
    and while the gateway's store does not hold the ledger yet)."""
    try:
        size = int(_json(f"{gateway}api/ledgers/{ledger}/checkpoint")["size"])
    except urllib.error.HTTPError:
        return None
    latest = tallies.latest(ledger, OBSERVERS)
    return size if all(p is not None and p.height == size - 1 for p in latest.values()) else None


def test_the_tally_and_charity_pages_and_the_gateway_say_a_count_the_checkpoint_left_behind_is_stale(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str
) -> None:
    """outsider21 F3: observers stopped at an old height (or a gateway serving their old signed
    tallies) were shown agreeing, green, with no word that the checkpoint the page verified held
    more records; the gateway's verdict said "agree" where `vledger tally` said STALE (exit 4).
    Both observers' latest tallies are here genuine bodies two records behind the checkpoint,
    made a minute ago: each page and the gateway's verdict say STALE, as the command does."""
    tallies = TallyBoard(connect(cluster.cluster_redis_url))
    gateway = cluster.gateway_url("replica-1")
    observers = OBSERVERS
    originals = {}
    try:
        for ledger in (ELECTION, FUND):
            size = wait_until(
                lambda ledger=ledger: _settled(tallies, gateway, ledger),
                WAIT,
                f"both observers at the head of {ledger}",
            )
            for name in observers:
                original = tallies.latest(ledger, [name])[name]
                assert original is not None
                originals[(ledger, name)] = original.entry_id
                honest = Snapshot.decode(original.body)
                old = dataclasses.replace(honest, height=size - 3, at_ms=now_ms() - 60_000)
                key = load_signing_key(signing_key_paths(cluster.directory / "keys", name)[0])
                tallies.publish(ledger, name, old.height, old.body(), key.sign(old.body()))

            shown = _json(f"{gateway}api/ledgers/{ledger}/tally")
            assert shown["verdict"]["status"] == "stale" and shown["verdict"]["height"] == size - 3, shown["verdict"]
            assert shown["verdict"]["stale"] == list(observers) and shown["verdict"]["checkpoint_size"] == size
            assert shown["verdict"]["behind"] is False and shown["verdict"]["ahead"] == []
            assert [o["stale"] for o in shown["observers"]] == [True, True]
            done = cluster.cli("tally", ledger, "--config", str(cluster.config_path), check=False)
            assert done.returncode == 4 and "STALE: observer-1" in done.stdout, done.stdout + done.stderr

        fresh(browser, f"{gateway}tally.html?ledger={ELECTION}#anchors={anchors}")
        verdict = wait_text(
            browser, "#verdict", "STALE: observer-1, observer-2", "the stale observers on the tally page"
        )
        size = _json(f"{gateway}api/ledgers/{ELECTION}/checkpoint")["size"]
        assert f"The 2 observers agree at height {size - 3}." in verdict, verdict
        assert f"the checkpoint verified here holds {size} records" in verdict, verdict
        assert f"the agreement at height {size - 3} is NOT the ledger's count now" in verdict, verdict
        assert browser.execute_script("return document.getElementById('verdict').className") == "warn"
        assert "STALE" in text_of(browser, "tr[data-observer='observer-1']")
        shot(browser, "tally-stale")

        fresh(browser, f"{gateway}charity.html?ledger={FUND}#anchors={anchors}")
        summary = wait_text(
            browser, "#summary", "STALE: observer-1, observer-2", "the stale observers on the charity page"
        )
        assert "signed alike by 2 observer(s)" in summary and "is NOT the fund's now" in summary, summary
        assert browser.execute_script("return document.getElementById('summary').className") == "warn"
    finally:
        for (ledger, name), entry_id in originals.items():
            tallies.client.set(tallies.latest_key(ledger, name), entry_id)
    fresh(browser, f"{gateway}tally.html?ledger={ELECTION}#anchors={anchors}")
    verdict = wait_text(browser, "#verdict", "The 2 observers agree", "the observers' agreement once current again")
    assert (
        "STALE" not in verdict and browser.execute_script("return document.getElementById('verdict').className") == "ok"
    )


def _witness_times(note: str) -> dict[str, list[int]]:
    """Each witness's cosignature times (ms) on a served note: its first and, once it cosigned a
    quiet ledger again (10.7), its newest."""
    times: dict[str, list[int]] = {}
    for line in parse_note(note.encode()).signatures[1:]:
        times.setdefault(line.name, []).append(Cosignature.from_note_signature(line).timestamp * 1000)
    return times


def _cosigned_since(gateway: str, ledger: str) -> tuple[int, int]:
    """The served checkpoint's size and when a majority of the trusted witnesses had cosigned it (11.4)."""
    shown = _json(f"{gateway}api/ledgers/{ledger}/checkpoint")
    needed = needed_witnesses(len(shown["witness_keys"]))
    since = quorum_since_ms((min(t) for t in _witness_times(shown["note"]).values()), needed)
    assert since is not None, shown
    return int(shown["size"]), since


def test_a_count_dated_ahead_or_behind_a_long_cosigned_checkpoint_is_stale_on_the_pages_gateway_and_cli(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str
) -> None:
    """outsider23 F1: observer-1's key re-signed a body behind the checkpoint with at_ms ten years
    ahead: `vledger tally` said "agree", exit 0, the gateway's verdict stale: [], the pages no
    STALE, while the checkpoint held more records (7,777 SAR hidden from the "agreed" balance).
    Then the same count dated 30 s ahead (within the skew) behind a checkpoint the witnesses
    cosigned more than --stale-after ago: its date is the key holder's word, theirs is not."""
    tallies = TallyBoard(connect(cluster.cluster_redis_url))
    gateway = cluster.gateway_url("replica-1")
    key = load_signing_key(signing_key_paths(cluster.directory / "keys", "observer-1")[0])
    originals = {}

    def quiet(ledger: str) -> int | None:
        """The checkpoint's size once both observers are at it and its witnesses cosigned it 12 s ago."""
        size, since = _cosigned_since(gateway, ledger)
        latest = tallies.latest(ledger, ["observer-1", "observer-2"])
        at_head = all(p is not None and p.height == size - 1 for p in latest.values())
        return size if at_head and now_ms() - since > 12_000 else None

    def restore() -> None:
        for ledger, entry_id in originals.items():
            tallies.client.set(tallies.latest_key(ledger, "observer-1"), entry_id)
        originals.clear()

    try:
        for at_ms in (now_ms() + 10 * 365 * 86_400_000, None):  # None: 30 s ahead, within the skew
            for ledger in (ELECTION, FUND):
                size = wait_until(lambda ledger=ledger: quiet(ledger), WAIT + 15, f"{ledger} quiet at its head")
                original = tallies.latest(ledger, ["observer-1"])["observer-1"]
                assert original is not None
                originals.setdefault(ledger, original.entry_id)
                dated = at_ms if at_ms is not None else now_ms() + 30_000
                old = dataclasses.replace(Snapshot.decode(original.body), height=size - 3, at_ms=dated)
                tallies.publish(ledger, "observer-1", old.height, old.body(), key.sign(old.body()))
                verdict = _json(f"{gateway}api/ledgers/{ledger}/tally")["verdict"]
                assert verdict["stale"] == ["observer-1"] and verdict["status"] != "agree", verdict
                done = cluster.cli("tally", ledger, "--config", str(cluster.config_path), check=False)
                assert done.returncode == 4 and "STALE: observer-1" in done.stdout, done.stdout + done.stderr
            # One page each (the pages judge with one function, vledger.js's staleObservers).
            if at_ms is not None:
                fresh(browser, f"{gateway}tally.html?ledger={ELECTION}#anchors={anchors}")
                wait_text(browser, "#verdict", "STALE: observer-1", "the count dated ahead, stale on the tally page")
                assert "STALE" in text_of(browser, "tr[data-observer='observer-1']")
                # outsider24 G5: the pages' since is a majority's time, as the CLI's and the gateway's.
                # Review r12: over `needed` of the trusted witnesses, not over the lines shown.
                for times in ([], [7], [9, 3], [4, 1, 3, 2], [100, 85, 99]):
                    for needed in range(len(times) + 2):
                        shown_since = browser.execute_script(f"return window.vledger.quorumSinceMs({times}, {needed})")
                        assert shown_since == quorum_since_ms(times, needed), times
                        assert browser.execute_script(f"return window.vledger.quorumFreshMs({times}, {needed})") == (
                            quorum_fresh_ms(times, needed)
                        ), times
                for trusted, quorum in ((0, 0), (1, 0), (2, 0), (5, 0), (5, 4), (4, 1)):
                    assert browser.execute_script(
                        f"return window.vledger.neededWitnesses({trusted}, {quorum})"
                    ) == needed_witnesses(trusted, quorum)
                # outsider23 F2: the page showed no time at all; since when a majority vouch for it now (o4 F2).
                shown = _json(f"{gateway}api/ledgers/{ELECTION}/checkpoint")
                needed = needed_witnesses(len(shown["witness_keys"]))
                vouched = quorum_fresh_ms((max(t) for t in _witness_times(shown["note"]).values()), needed)
                assert vouched is not None and vouched == shown["fresh_ms"], shown
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(vouched // 1000))
                cosigned = text_of(browser, "#cosigned")
                assert f"holds {shown['size']} records; a majority of its witnesses last vouched for it at {stamp}" in (
                    cosigned
                ), cosigned
            else:
                fresh(browser, f"{gateway}charity.html?ledger={FUND}#anchors={anchors}")
                wait_text(browser, "#summary", "STALE: observer-1", "the count behind, stale on the charity page")
            restore()
    finally:
        restore()


def test_the_charity_page_never_shows_the_balance_of_a_body_claiming_records_no_checkpoint_shows(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str
) -> None:
    """An outsider with observer-1's key signs the fund's body at height 1,000,000 with a balance
    of its choosing: the charity page showed it as the newest tally ("one observer's word alone"),
    where tally.html judges such a body ahead (15.4 step 6) and never shows its figures."""
    tallies = TallyBoard(connect(cluster.cluster_redis_url))
    original, honest = forge(cluster, tallies, FUND, height=1_000_000, tally={"balance": 99_999_999}, at_ms=now_ms())
    try:
        fresh(browser, f"{cluster.gateway_url('replica-1')}charity.html?ledger={FUND}#anchors={anchors}")
        summary = wait_text(browser, "#summary", "observer-1 cannot be checked", "observer-1 judged apart")
        assert "no balance is agreed meanwhile" in summary and "signed alike" not in summary, summary
        assert "NOT agreed: observer-2's word alone, still counting" in summary, summary
        assert amount_text(99_999_999, "SAR") not in summary and amount_text(honest.tally["balance"], "SAR") in summary
        assert browser.execute_script("return document.getElementById('summary').className") == "warn"
    finally:
        tallies.client.set(tallies.latest_key(FUND, "observer-1"), original.entry_id)


def test_an_old_checkpoint_served_never_makes_a_stolen_key_s_tally_agreed(
    browser: Any, cluster: LocalCluster, election: Election
) -> None:
    """Review r8, finding 2: which observer is ahead is the served checkpoint's word. A gateway
    serving an older checkpoint, validly signed, made the honest observer-2 ahead, and the body
    observer-1's stolen key signed at a height that checkpoint holds was then "signed alike by 1
    observer(s)" on the charity page (the tally page, which shows elections, judged alike: the
    test above), the honest one blamed."""
    fund = "sadaqa"  # a fund of its own: the other tests' figures stay as they are
    rules = LedgerRules(("donation", "disbursement"), 0, {"type": "charity", "currency": "SAR", "funds": [fund]})
    genesis = cluster.pinned(fund, rules).genesis_content(fund, ADMIN, "g", now_ms())
    cluster.admin().create_ledger(Entry.prepare(genesis, 0, Limits()))
    tallies = TallyBoard(connect(cluster.cluster_redis_url))
    gateway = cluster.gateway_url("replica-1")
    writer = cluster.client("writer1")
    old: Any = None
    for size, donor in ((2, "d1"), (3, "d2")):
        payload = {"donor": seal(new_seal_key(), donor), "fund": fund, "amount": 100, "source": "bank", "purpose": "x"}
        writer.put(entry(fund, "donation", payload, "writer1"))
        wait_until(lambda size=size: _settled(tallies, gateway, fund) == size, WAIT, f"both observers at size {size}")
        old = old or _json(f"{gateway}api/ledgers/{fund}/checkpoint")
    assert int(old["size"]) == 2
    # The thief signs at a height the old checkpoint holds (its last), a balance of its choosing.
    original, _ = forge(cluster, tallies, fund, height=1, tally={"balance": 77_777_777}, at_ms=now_ms())

    def older_checkpoint(path: str, body: Any) -> Any:
        return old if path.startswith(f"/api/ledgers/{fund}/checkpoint") else None

    try:
        with Lying(gateway, older_checkpoint) as lying:
            fresh(browser, f"{lying.url}charity.html?ledger={fund}")
            summary = wait_text(
                browser, "#summary", "observer-2 cannot be checked", "observer-2 ahead of the old checkpoint"
            )
            assert "signed alike" not in summary and "no balance is agreed meanwhile" in summary, summary
            assert "NOT agreed: observer-1's word alone, still counting" in summary, summary
            assert browser.execute_script("return document.getElementById('summary').className") == "warn"
            shot(browser, "charity-old-checkpoint")
    finally:
        tallies.client.set(tallies.latest_key(fund, "observer-1"), original.entry_id)


class Hostile:
    """A hostile gateway in front of the real one (PROTOCOL 15.5's threat): it serves a forked
    genesis of the election pinning its own checkpoint key, re-signs the checkpoint of every
    receipt with that key (the witnesses' cosignatures kept: they sign the body only) beside a
    false decoded choice, and serves observer-1's tally of the election and of the fund signed
    with a key of its own, stated as observer-1's, with false decoded counts, balance and verdict
    beside the signed bodies. Everything else is forwarded."""

    def __init__(self, real: str, origin: str, store: Path) -> None:
        self.real = real
        self.forged = generate_signer_key(origin)
        rules = LedgerRules(("note",), 0, {"checkpoint_key": self.forged.verifier().encode()})
        with ChainStore(store, origin="ingest-1") as chain:
            chain.create_ledger(Entry.prepare(rules.genesis_content(ELECTION, ADMIN, "g", now_ms()), 0, Limits()))
        with contextlib.closing(StoreReader(store)) as reader:
            self.genesis = reader.get(ELECTION, 0) or b""
        self.tally_key = nacl.signing.SigningKey.generate()
        self.bare = False  # when set, the fund's checkpoint is served without its cosignatures
        hostile = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, kind, body = hostile.answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _sign(self, note: str) -> str:
        text, lines = note.split("\n\n", 1)
        text += "\n"
        key = self.forged
        line = f"— {key.name} " + base64.b64encode(struct.pack(">I", key.key_id) + key.sign_raw(text.encode())).decode()
        kept = [x for x in lines.splitlines() if not x.startswith(f"— {key.name} ")]
        return text + "\n" + "\n".join([line, *kept]) + "\n"

    def answer(self, path: str) -> tuple[int, str, bytes]:
        if path.startswith("/api/events"):
            return 404, "application/json", b"{}"  # no stream: the pages ask again on their own
        if path == f"/api/ledgers/{ELECTION}/records/0":
            return 200, "application/json", json.dumps({"record": base64.b64encode(self.genesis).decode()}).encode()
        try:
            with urllib.request.urlopen(self.real + path.lstrip("/"), timeout=10) as got:
                status, kind, body = got.status, got.headers["Content-Type"], got.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers["Content-Type"], e.read()
        if path == f"/api/ledgers/{ELECTION}":
            shown = json.loads(body)
            shown["genesis"]["rules"]["checkpoint_key"] = self.forged.verifier().encode()
            body = json.dumps(shown).encode()
        elif path.startswith(f"/api/ledgers/{ELECTION}/voters/"):
            shown = json.loads(body)
            for r in shown["records"]:
                if isinstance(r.get("payload"), dict) and "choice" in r["payload"]:
                    r["payload"]["choice"] = "mallory"  # its decoding: the page reads the proven bytes
                if r["receipt"]:
                    made = json.loads(r["receipt"])
                    made["checkpoint"] = self._sign(made["checkpoint"])
                    r["receipt"] = json.dumps(made)
            body = json.dumps(shown).encode()
        elif path.split("?", maxsplit=1)[0] == f"/api/ledgers/{FUND}/checkpoint" and self.bare:
            shown = json.loads(body)
            text, lines = shown["note"].split("\n\n", 1)
            origin = text.split("\n", 1)[0]
            kept = [line for line in lines.splitlines() if line.startswith(f"— {origin} ")]  # the home's line only
            shown["note"] = text + "\n\n" + "\n".join(kept) + "\n"
            body = json.dumps(shown).encode()
        elif path in (f"/api/ledgers/{ELECTION}/tally", f"/api/ledgers/{FUND}/tally"):
            shown = json.loads(body)
            shown["verdict"] = {"status": "mismatch", "height": 0, "differing": ["observer-2"]}
            for o in shown["observers"]:
                if o["snapshot"]:  # its decoding of the signed body: the pages read the bytes
                    o["snapshot"]["tally"]["counts"] = {"mallory": 999}
                    o["snapshot"]["tally"]["balance"] = 1
                if o["observer"] == "observer-1" and o["body"]:
                    o["signature"] = self.tally_key.sign(bytes.fromhex(o["body"])).signature.hex()
                    o["public_key"] = self.tally_key.verify_key.encode().hex()
            body = json.dumps(shown).encode()
        return status, kind, body


@pytest.fixture(scope="module")
def anchors(cluster: LocalCluster, election: Election) -> str:
    """The publisher's anchors as ``vledger anchors`` prints them, base64url for a page's fragment."""
    done = cluster.cli("anchors", "--config", str(cluster.config_path), "--store", str(cluster.store_dir("ingest-1")))
    assert f"ledger {ELECTION} " in done.stdout and "observer observer-1 " in done.stdout
    return base64.urlsafe_b64encode(done.stdout.encode()).decode().rstrip("=")


@pytest.fixture(scope="module")
def hostile(cluster: LocalCluster, election: Election, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    real = cluster.gateway_url("replica-1")
    with urllib.request.urlopen(f"{real}api/ledgers/{ELECTION}/checkpoint", timeout=10) as answer:
        origin = json.loads(answer.read())["log_key"].split("+", 1)[0]
    served = Hostile(real, origin, tmp_path_factory.mktemp("fork") / "store")
    try:
        yield served
    finally:
        served.close()


def test_a_key_forged_by_the_gateway_is_shown_unanchored_without_anchors_and_refused_with_them(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str, hostile: Hostile
) -> None:
    eid = election.eids[5]
    good = receipt(cluster, eid)
    forged = hostile.forged.verifier().encode()
    # Without anchors, the hostile gateway's own key verifies its own signature: the page says
    # whose word the keys are.
    browser.get(f"{hostile.url}vote.html?eid={eid}")
    verdict = wait_text(
        browser, "#verdict", f"Verified: {len(good['records'])} records of {eid}", "the unanchored check"
    )
    assert "NOT checked against the publisher's anchors" in verdict and forged in text_of(browser, "#checks")
    assert "Not checked against the publisher's anchors" in text_of(browser, "#anchors")
    rows = text_of(browser, "#records tbody")
    assert "mallory" not in rows and any(c in rows for c in ("alice", "bob", "carol"))
    shot(browser, "vote-unanchored")

    # The same gateway named from a copy of the page the voter trusts, with the publisher's
    # anchors: the forked genesis is refused, and no key of the gateway's is used.
    page = f"{cluster.gateway_url('replica-1')}vote.html?eid={eid}#gateway={urllib.parse.quote(hostile.url, safe='')}"
    browser.get(f"{page}&anchors={anchors}")
    verdict = wait_text(browser, "#verdict", "Verification FAILED", "the forked genesis refused")
    assert "is not the anchored one" in verdict and "Checked against the anchors from the page's address" in text_of(
        browser, "#anchors"
    )
    # Anchors in a link are whoever wrote the link's (an outsider's phishing link called them the
    # publisher's): the banner shows their SHA-256 to compare, and the gateway the link names.
    published = hashlib.sha256(base64.urlsafe_b64decode(anchors + "=" * (-len(anchors) % 4))).hexdigest()
    assert text_of(browser, "#anchors-sha256") == published
    assert text_of(browser, "#anchors-gateway") == hostile.url.rstrip("/")
    shot(browser, "vote-forged-key-refused")

    # Observer-1's tally signed by a key the gateway states as its own.
    browser.get(f"{hostile.url}tally.html?ledger={ELECTION}")
    verdict = wait_text(browser, "#verdict", "observers agree", "the unanchored tally")
    assert "NOT checked against the publisher's anchors" in verdict
    shown = text_of(browser, "#observers tbody")
    assert shown.count("✓ Ed25519 valid") == 2 and "mallory" not in shown and "alice" in shown
    named = f"#gateway={urllib.parse.quote(hostile.url, safe='')}&anchors={anchors}"
    browser.get(f"{cluster.gateway_url('replica-1')}tally.html?ledger={ELECTION}{named}")
    wait_text(
        browser,
        "#verdict",
        "1 observer signature(s) did NOT verify with the publisher's anchors",
        "the forged tally key",
    )
    assert "✗ INVALID" in text_of(browser, "tr[data-observer='observer-1']")


def test_the_charity_page_and_the_dashboard_check_against_anchors_a_gateway_forging_keys(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str, hostile: Hostile
) -> None:
    """As vote.html and tally.html: without anchors the hostile gateway's observer key verifies
    its own signature and the pages say whose word the keys are; with the publisher's anchors
    its forged tally and its forked genesis of the election are refused."""
    browser.get(f"{hostile.url}charity.html?ledger={FUND}")
    summary = wait_text(browser, "#summary", "2225.50 SAR", "the unanchored balance")
    assert "NOT checked against the publisher's anchors" in summary and "Not checked" in text_of(browser, "#anchors")
    assert "2225.50 SAR" in text_of(browser, "#funds td.balance")  # from the signed bytes, not the forged decoding
    real = cluster.gateway_url("replica-1")
    named = f"#gateway={urllib.parse.quote(hostile.url, safe='')}&anchors={anchors}"
    browser.get(f"{real}charity.html?ledger={FUND}{named}")
    wait_text(
        browser, "#summary", "1 observer signature(s) did NOT verify with the publisher's anchors", "the forged key"
    )
    assert "observer-1: INVALID" in text_of(browser, "#summary") and text_of(browser, "#funds tbody") == ""
    shot(browser, "charity-forged-key-refused")

    browser.get(f"{real}dashboard.html{named}")
    refused = wait_text(browser, f"tr[data-ledger='{ELECTION}']", "is not the anchored one", "the forked genesis")
    assert "✓" not in refused
    wait_text(browser, f"tr[data-ledger='{FUND}']", "✓ ", "the fund's checkpoint checked with the anchors")


def test_a_checkpoint_no_witness_cosigned_is_a_warning_never_shown_as_checked(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str, hostile: Hostile
) -> None:
    """The hostile gateway serves the fund's checkpoint without its cosignatures: only the
    home's key vouches for it. The dashboard showed "none" in green, the charity page its
    records proven in green; both now say so as a warning."""
    real = cluster.gateway_url("replica-1")
    named = f"#gateway={urllib.parse.quote(hostile.url, safe='')}&anchors={anchors}"
    hostile.bare = True
    try:
        browser.get(f"{real}dashboard.html{named}")
        wait_text(browser, f"tr[data-ledger='{FUND}']", "none", "the fund's checkpoint with no cosignature")
        script = "return Array.from(document.querySelectorAll(arguments[0]), (e) => e.className)"
        cells = browser.execute_script(script, f"tr[data-ledger='{FUND}'] td")
        assert cells[4] == "warn"  # ledger, size, root, signature, then the cosignatures
        browser.get(f"{real}charity.html?ledger={FUND}{named}")
        proven = wait_text(browser, "#proven", "cosigned by NO witness", "the fund's checkpoint with no cosignature")
        assert "with the publisher's anchors" in proven
        assert browser.execute_script(script, "#proven") == ["warn"]
    finally:
        hostile.bare = False


def test_the_voter_page_says_when_no_witness_cosigned_the_checkpoint(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str, tmp_path: Path
) -> None:
    """A voter's real receipts with their checkpoint's cosignature lines taken out (the home's
    signature is over the body alone: it still verifies): verified, but only as a warning that
    names it (before, the verdict was as green as a cosigned one's)."""
    from selenium.webdriver.common.by import By

    eid = election.eids[7]
    good = receipt(cluster, eid)
    records = []
    for r in good["records"]:
        made = json.loads(r["receipt"])
        text, lines = made["checkpoint"].split("\n\n", 1)
        home = [line for line in lines.splitlines() if line.startswith(f"— {text.split(chr(10), 1)[0]} ")]
        made["checkpoint"] = text + "\n\n" + "\n".join(home) + "\n"
        records.append(dict(r, receipt=json.dumps(made, separators=(",", ":"), ensure_ascii=False) + "\n"))
    path = tmp_path / "bare.json"
    path.write_text(json.dumps(dict(good, records=records)))
    browser.get(f"{cluster.gateway_url('replica-1')}vote.html#anchors={anchors}")
    browser.find_element(By.ID, "file").send_keys(str(path))
    # Outsider o18 F5: the headline said "Verified:" where the Python client refuses the same data.
    verdict = wait_text(
        browser, "#verdict", f"NOT verified (too few witness cosignatures): {len(records)} records of {eid}", "bare"
    )
    assert "NO witness cosigned" in verdict and "no witness cosigned this checkpoint" in text_of(browser, "#checks")
    assert not verdict.startswith("Verified")
    assert browser.execute_script("return document.getElementById('verdict').className") == "bad"


def test_the_voter_page_asks_a_majority_of_the_anchored_witnesses_and_names_the_missing_ones(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str, tmp_path: Path
) -> None:
    """outsider23 F6: a proxy that kept one witness's cosignature line of five had the page say
    "Verified", all green: a home's key and one witness key showed voters a forked view as
    verified, and no line named the witnesses missing. Here one line of the three anchored
    witnesses is kept: a warning naming the two missing; two of three is a majority, green."""
    from selenium.webdriver.common.by import By

    eid = election.eids[8]
    good = receipt(cluster, eid)
    first = json.loads(good["records"][0]["receipt"])["checkpoint"]
    origin = first.split("\n", 1)[0]
    witnesses = sorted(
        line.split(" ")[1] for line in first.split("\n\n", 1)[1].splitlines() if line.split(" ")[1] != origin
    )
    assert len(witnesses) == 3, witnesses  # every anchored witness (replica-1, observer-1, observer-2)
    for kept, verdict_class in ((1, "bad"), (2, "ok")):
        records = []
        for r in good["records"]:
            made = json.loads(r["receipt"])
            text, lines = made["checkpoint"].split("\n\n", 1)
            home = [line for line in lines.splitlines() if line.startswith(f"— {origin} ")]
            cosigned = [line for line in lines.splitlines() if line.split(" ")[1] in witnesses[:kept]]
            assert len(cosigned) == kept, lines
            made["checkpoint"] = text + "\n\n" + "\n".join(home + cosigned) + "\n"
            records.append(dict(r, receipt=json.dumps(made, separators=(",", ":"), ensure_ascii=False) + "\n"))
        path = tmp_path / f"kept-{kept}.json"
        path.write_text(json.dumps(dict(good, records=records)))
        fresh(browser, f"{cluster.gateway_url('replica-1')}vote.html#anchors={anchors}")
        browser.find_element(By.ID, "file").send_keys(str(path))
        headline = "NOT verified (too few witness cosignatures)" if kept == 1 else "Verified"  # o18 F5
        verdict = wait_text(browser, "#verdict", f"{headline}: {len(records)} records of {eid}", f"kept {kept}")
        checks = text_of(browser, "#checks")
        assert browser.execute_script("return document.getElementById('verdict').className") == verdict_class, verdict
        missing = ", ".join(witnesses[kept:])
        if kept == 1:
            assert "FEWER than a majority of the anchored witnesses" in verdict, verdict
            assert (
                f"cosigned by only 1 of the 3 anchored witnesses, fewer than a majority (2): NOT by {missing}" in checks
            )
        else:
            assert "majority" not in verdict, verdict
            assert f"cosigned by 2 of the 3 anchored witnesses (a majority, 2, is needed); not by {missing}" in checks


def serve(answer: Any) -> tuple[http.server.ThreadingHTTPServer, str]:
    """A server on 127.0.0.1 answering each GET's path with ``answer(path)``: (status, type, body)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, kind, body = answer(self.path)
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


class Lying:
    """A gateway in front of the real one that rewrites what ``lie(path, body)`` chooses of the
    real answers (a JSON body, parsed; returning None forwards it as it is), as outsider21's
    lying_gateway.py does: the pages and their scripts are the real gateway's."""

    def __init__(self, real: str, lie: Any) -> None:
        def answer(path: str) -> tuple[int, str, bytes]:
            if path.startswith("/api/events"):
                return 404, "application/json", b"{}"
            return self.answer(real, lie, path)

        self.server, self.url = serve(answer)

    @staticmethod
    def answer(real: str, lie: Any, path: str) -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(real + path.lstrip("/"), timeout=10) as got:
                status, kind, body = got.status, got.headers["Content-Type"], got.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers["Content-Type"], e.read()
        told = lie(path, json.loads(body)) if kind.startswith("application/json") else None
        return status, kind, body if told is None else json.dumps(told).encode()

    def __enter__(self) -> Lying:
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _frozen(cluster: LocalCluster, note: str, then: int) -> str:
    """``note`` as a gateway frozen since ``then`` (POSIX s) serves it: the home's line, and each of
    its witnesses' cosignature made at ``then`` (with the witness's own key), none since."""
    parsed = parse_note(note.encode())
    origin = parsed.text.split("\n", 1)[0]
    home = [line for line in parsed.signatures if line.name == origin]
    lines = []
    for name in dict.fromkeys(line.name for line in parsed.signatures if line.name != origin):
        seed = load_signing_key(signing_key_paths(cluster.directory / "keys", name.rsplit("/", 1)[1])[0]).seed
        lines.append(cosign(parsed.text, SignerKey(name, ALG_COSIGNATURE_V1, seed), then).note_signature())
    return Note(parsed.text, (*home, *lines)).encode().decode()


def test_a_frozen_gateway_s_checkpoint_turns_stale_on_the_tally_and_voter_pages(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str
) -> None:
    """o4 F2: witnesses cosigned only as the ledger grew, so on a quiet ledger a gateway frozen
    (or lying by omission) kept serving its old checkpoint, counts and voter records, and nobody
    could tell it from a live one. They cosign a quiet ledger's checkpoint again every
    recosign_interval_ms (PROTOCOL 10.7): a view whose majority of witnesses last vouched more
    than that plus 10 s ago is STALE on the pages; the live gateway's is not."""
    eid = election.eids[3]
    receipt(cluster, eid)
    then = int(time.time()) - 400  # its witnesses vouched last 400 s ago: past 300 s + 10 s

    def frozen(path: str, body: Any) -> Any:
        if path.startswith(f"/api/ledgers/{ELECTION}/checkpoint"):
            return dict(body, note=_frozen(cluster, body["note"], then))
        if path.startswith(f"/api/ledgers/{ELECTION}/voters/"):
            records = []
            for r in body["records"]:
                made = json.loads(r["receipt"]) if r["receipt"] else None
                if made is not None:
                    made["checkpoint"] = _frozen(cluster, made["checkpoint"], then)
                records.append(dict(r, receipt=None if made is None else json.dumps(made)))
            return dict(body, records=records)
        return None

    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(then))
    with Lying(cluster.gateway_url("replica-1"), frozen) as lying:
        fresh(browser, f"{lying.url}tally.html?ledger={ELECTION}#anchors={anchors}")
        verdict = wait_text(browser, "#verdict", "no majority of the witnesses vouched", "the frozen view, stale")
        assert "this gateway shows an old view" in verdict, verdict
        assert browser.execute_script("return document.getElementById('verdict').className") == "warn"
        cosigned = text_of(browser, "#cosigned")
        assert (
            cosigned.startswith("STALE:") and f"a majority of its witnesses last vouched for it at {stamp}" in cosigned
        )
        shot(browser, "tally-frozen-gateway")

        fresh(browser, f"{lying.url}vote.html?eid={eid}#anchors={anchors}")
        verdict = wait_text(browser, "#verdict", f"records of {eid}", "the voter's records from the frozen view")
        assert verdict.startswith("Verified") and "STALE: no majority of the witnesses vouched" in verdict, verdict
        assert browser.execute_script("return document.getElementById('verdict').className") == "warn"
        assert "STALE: The checkpoint verified here" in text_of(browser, "#checks")

    live = cluster.gateway_url("replica-1")
    fresh(browser, f"{live}tally.html?ledger={ELECTION}#anchors={anchors}")
    cosigned = wait_text(browser, "#cosigned", "last vouched for it at", "the live view's witnesses")
    assert "STALE" not in cosigned and "no majority" not in text_of(browser, "#verdict"), cosigned
    fresh(browser, f"{live}vote.html?eid={eid}#anchors={anchors}")
    verdict = wait_text(browser, "#verdict", "Verified", "the voter's records from the live view")
    assert "STALE" not in verdict and "last vouched for it at" in text_of(browser, "#checks"), verdict


def test_a_head_is_judged_over_a_majority_of_the_trusted_witnesses_not_the_lines_a_gateway_shows(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str
) -> None:
    """Review r12 finding 2: fresh_ms was the median of the lines shown, so with 5 witnesses a
    gateway showing 2 colluders' fresh lines and 1 honest old one was fresh, and one stripping
    every line was never judged. Now a majority of the trusted witnesses (the anchors') must
    vouch: the stripped view is STALE on the tally page, and the 2-of-5 view is too."""
    now = int(time.time())
    seen = {
        "checkpoint": {"origin": f"local/{ELECTION}", "size": 9},
        "needed": 3,
        "recosign": 300_000,
        "cosigned": [
            *({"name": f"w{i}", "ok": True, "key": {}, "times": [now - 400, now]} for i in range(2)),
            {"name": "w2", "ok": True, "key": {}, "times": [now - 400]},
        ],
    }
    head = browser.execute_script("return window.vledger.vouched(arguments[0])", seen)
    assert head["fresh"] == (now - 400) * 1000, head  # the median of the 3 shown was `now`
    assert browser.execute_script("return window.vledger.headStale(arguments[0])", head) is True

    def strip(path: str, body: Any) -> Any:
        if not path.startswith(f"/api/ledgers/{ELECTION}/checkpoint"):
            return None
        parsed = parse_note(body["note"].encode())
        return dict(body, note=Note(parsed.text, parsed.signatures[:1]).encode().decode())

    with Lying(cluster.gateway_url("replica-1"), strip) as lying:
        fresh(browser, f"{lying.url}tally.html?ledger={ELECTION}#anchors={anchors}")
        cosigned = wait_text(browser, "#cosigned", "STALE: fewer than", "the stripped view, stale")
        assert "of the trusted witnesses vouched for the checkpoint verified here" in cosigned, cosigned
        verdict = text_of(browser, "#verdict")
        assert "no majority of the witnesses vouched" in verdict, verdict
        assert browser.execute_script("return document.getElementById('verdict').className") == "warn"


def test_an_anchored_observer_the_gateway_withholds_is_named_on_the_tally_and_charity_pages(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str
) -> None:
    """outsider26 I3: a gateway leaving observer-2 out of both ledgers' tallies (and stating
    "agree") had tally.html say "Still counting…" and charity.html "observer-1's word alone" for
    ever, with no word that an observer the anchors require signed nothing there (PROTOCOL 15.5).
    Both name it now, as a warning, never green; the live gateway's pages do not."""

    def withhold(path: str, body: Any) -> Any:
        if path.split("?", maxsplit=1)[0] not in (f"/api/ledgers/{ELECTION}/tally", f"/api/ledgers/{FUND}/tally"):
            return None
        kept = [o for o in body["observers"] if o["observer"] != "observer-2"]
        assert len(kept) == len(body["observers"]) - 1, body  # observer-2 was there to withhold
        return dict(body, observers=kept, verdict=dict(body["verdict"], status="agree"))

    said = "observer-2 (anchored) signed no tally here: the gateway withheld it or it is behind."
    with Lying(cluster.gateway_url("replica-1"), withhold) as lying:
        fresh(browser, f"{lying.url}tally.html?ledger={ELECTION}#anchors={anchors}")
        verdict = wait_text(browser, "#verdict", said, "the withheld observer named on the tally page")
        assert verdict.startswith("Still counting"), verdict
        assert browser.execute_script("return document.getElementById('verdict').className") == "warn"
        assert "observer-2" not in text_of(browser, "#observers tbody")  # the gateway's answer, as it came
        shot(browser, "tally-observer-withheld")

        fresh(browser, f"{lying.url}charity.html?ledger={FUND}#anchors={anchors}")
        summary = wait_text(browser, "#summary", said, "the withheld observer named on the charity page")
        assert "observer-1's word alone" in summary, summary
        assert browser.execute_script("return document.getElementById('summary').className") == "warn"

    live = cluster.gateway_url("replica-1")
    fresh(browser, f"{live}tally.html?ledger={ELECTION}#anchors={anchors}")
    verdict = wait_text(browser, "#verdict", "observers agree", "the live gateway's tally")
    assert "signed no tally here" not in verdict, verdict
    fresh(browser, f"{live}charity.html?ledger={FUND}#anchors={anchors}")
    summary = wait_text(browser, "#summary", "signed alike by 2 observer(s)", "the live gateway's balance")
    assert "signed no tally here" not in summary, summary


def test_a_frozen_gateway_s_checkpoint_is_stale_on_the_charity_page_and_the_dashboard_by_the_anchors_interval(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str
) -> None:
    """fresh25 left charity.html and the dashboard without a judgement of the head: a frozen (or
    lying) gateway's balance and checkpoints showed as current. They judge it as tally.html does
    (PROTOCOL 11.4), by the interval the anchors state (their recosign_interval_ms line, else the
    default 300 s): the gateway stating a longer one keeps nothing fresh, while anchors stating a
    longer one make the same 400 s-old view current (before, pages hard-coded 300 s, so a cluster
    with a longer interval showed honest heads STALE)."""
    then = int(time.time()) - 400

    def frozen(path: str, body: Any) -> Any:
        if path.startswith(f"/api/ledgers/{FUND}/checkpoint"):
            return dict(body, note=_frozen(cluster, body["note"], then), recosign_interval_ms=10**9)
        return None

    text = base64.urlsafe_b64decode(anchors + "=" * (-len(anchors) % 4)).decode()
    longer = base64.urlsafe_b64encode((text + "recosign_interval_ms 600000\n").encode()).decode().rstrip("=")
    row = f"#checkpoints tr[data-ledger='{FUND}']"
    with Lying(cluster.gateway_url("replica-1"), frozen) as lying:
        fresh(browser, f"{lying.url}charity.html?ledger={FUND}#anchors={anchors}")
        summary = wait_text(browser, "#summary", "no majority of the witnesses vouched", "the frozen fund, stale")
        assert summary.startswith("Balance") and "within 310 s" in summary and "old view" in summary, summary
        assert browser.execute_script("return document.getElementById('summary').className") == "warn"
        shot(browser, "charity-frozen-gateway")
        fresh(browser, f"{lying.url}dashboard.html#anchors={anchors}")
        stale = wait_text(browser, row, "STALE:", "the frozen checkpoint on the dashboard")
        assert re.search(r"\b4[0-9]{2} s ago: no majority of the witnesses vouched for it within 310 s", stale), stale

        fresh(browser, f"{lying.url}charity.html?ledger={FUND}#anchors={longer}")
        summary = wait_text(browser, "#summary", "Balance", "the same view under the anchors' 600 s")
        assert "no majority" not in summary and "old view" not in summary, summary
        fresh(browser, f"{lying.url}dashboard.html#anchors={longer}")
        current = wait_text(browser, row, " s ago", "the same checkpoint under the anchors' 600 s")
        assert "STALE" not in current, current

    live = cluster.gateway_url("replica-1")
    fresh(browser, f"{live}charity.html?ledger={FUND}#anchors={anchors}")
    summary = wait_text(browser, "#summary", "Balance", "the live fund")
    assert "no majority" not in summary, summary
    fresh(browser, f"{live}dashboard.html#anchors={anchors}")
    assert "STALE" not in wait_text(browser, row, " s ago", "the live checkpoint on the dashboard")


def test_the_voter_page_checks_every_record_against_the_id_the_voter_typed(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str
) -> None:
    """outsider21 F1: a gateway answered a voter's id with another voter's (genuine, proven)
    records under the typed id with a zero-width space appended; the page compared the records
    with the answer's id only when that id was well-formed, and showed them green, "Verified",
    as the voter's. Every record is now compared with the id typed (as voter_receipts() does)."""
    victim, other = election.eids[1], election.eids[2]
    theirs = receipt(cluster, other)
    receipt(cluster, victim)

    suffix = ["\u200b"]  # what the gateway appends to the id it states

    def lie(path: str, body: Any) -> Any:
        if path.startswith(f"/api/ledgers/{ELECTION}/voters/{victim}"):
            return dict(theirs, electronic_id=body["electronic_id"] + suffix[0])
        return None

    with Lying(cluster.gateway_url("replica-1"), lie) as lying:
        fresh(browser, f"{lying.url}vote.html?eid={victim}#anchors={anchors}")
        verdict = wait_text(browser, "#verdict", f"Verification FAILED for {victim} (fetched now)", "the other id")
        assert "the answer is for another electronic id" in verdict and "Verified" not in verdict, verdict
        assert browser.execute_script("return document.getElementById('verdict').className") == "bad"
        assert text_of(browser, "#records tbody") == ""
        shot(browser, "vote-another-voters-records")

        suffix[0] = ""  # the typed id exactly: each record must name it
        fresh(browser, f"{lying.url}vote.html?eid={victim}#anchors={anchors}")
        wait_text(browser, "#verdict", f"Verification FAILED for {victim}", "another voter's records under the id")
        assert f"does not name {victim}" in text_of(browser, "#checks")

    # What the voter types is taken as an id only when it is one (7.1): no request is made else.
    fresh(browser, f"{cluster.gateway_url('replica-1')}vote.html?eid={victim}%E2%80%8B#anchors={anchors}")
    verdict = wait_text(browser, "#verdict", "Not an electronic id", "the typed id with a zero-width space")
    assert browser.execute_script("return document.getElementById('verdict').className") == "bad"


def test_the_voter_page_says_the_list_of_records_is_not_proven_complete(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str
) -> None:
    """outsider21 F2: a gateway that left out a voter's later records (an uncast and a recast)
    had the old vote shown green, "Verified", as if it were the voter's standing. The page proves
    each record, not the list (PROTOCOL 15.4 step 5): its verdict says so, and how to prove it."""
    moved = [e.content.payload["electronic_id"] for e in election.phases[2] if e.content.kind == "uncast"]
    assert moved, "the planned election has a voter whose vote was uncast and cast again"
    eid = moved[0]
    good = receipt(cluster, eid)
    assert [r["kind"] for r in good["records"]] == ["register", "cast", "uncast", "cast"]

    def lie(path: str, body: Any) -> Any:
        if path.startswith(f"/api/ledgers/{ELECTION}/voters/{eid}"):
            return dict(good, records=good["records"][:2])  # the uncast and the recast left out
        return None

    size = good["checkpoint"]["size"]
    with Lying(cluster.gateway_url("replica-1"), lie) as lying:
        fresh(browser, f"{lying.url}vote.html?eid={eid}#anchors={anchors}")
        verdict = wait_text(browser, "#verdict", f"Verified: 2 records of {eid}", "the first two records")
        assert f"in the signed checkpoint of {size} records" in verdict, verdict
        assert f"NOT proven: that they are all the records of {eid}" in verdict, verdict
        note = text_of(browser, "#completeness")
        assert "can leave out a later record" in note and f"vledger vote check --electronic-id {eid}" in note
        assert "voter_records()" in note
        shot(browser, "vote-records-left-out")
    # The honest answer says the same of its list: no page can tell the two apart.
    fresh(browser, f"{cluster.gateway_url('replica-1')}vote.html?eid={eid}#anchors={anchors}")
    verdict = wait_text(browser, "#verdict", f"Verified: 4 records of {eid}", "the four records")
    assert "NOT proven: that they are all the records" in verdict and text_of(browser, "#completeness")


def test_a_copy_of_the_pages_opened_from_a_file_verifies_the_real_gateway_with_anchors(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str, tmp_path: Path
) -> None:
    # A page from another origin reads the gateway's public routes (CORS) and trusts the anchors only.
    for name in ("vote", "tally", "charity", "dashboard"):
        (tmp_path / f"{name}.html").write_bytes(render(name))
    shutil.copytree(WEB_DIR / "static", tmp_path / "static")
    eid = election.eids[6]
    good = receipt(cluster, eid)
    fragment = f"#gateway={urllib.parse.quote(cluster.gateway_url('replica-1'), safe='')}&anchors={anchors}"
    browser.get(f"{(tmp_path / 'vote.html').as_uri()}?eid={eid}{fragment}")
    verdict = wait_text(browser, "#verdict", f"Verified: {len(good['records'])} records of {eid}", "the anchored check")
    checks = text_of(browser, "#checks")
    assert "NOT checked" not in verdict and "✗" not in checks and "the publisher's anchors give" in checks
    assert good["checkpoint"]["log_key"] in checks and ": valid" in checks
    shot(browser, "vote-anchored")
    browser.get(f"{(tmp_path / 'tally.html').as_uri()}?ledger={ELECTION}{fragment}")
    verdict = wait_text(browser, "#verdict", "The 2 observers agree", "the anchored tally")
    assert "NOT checked" not in verdict and text_of(browser, "#observers tbody").count("✓ Ed25519 valid") == 2

    browser.get(f"{(tmp_path / 'charity.html').as_uri()}?ledger={FUND}{fragment}")
    summary = wait_text(browser, "#summary", "Balance 2225.50 SAR", "the anchored balance")
    assert "NOT checked" not in summary and "signed alike by 2 observer(s)" in summary
    proven = wait_text(browser, "#proven", "with the publisher's anchors", "the fund's anchored checkpoint")
    assert "NOT" not in proven
    wait_until(lambda: text_of(browser, "#latest tbody").count("✓ in the tree") >= 3, WAIT, "the records proven")
    shot(browser, "charity-anchored")
    browser.get(f"{(tmp_path / 'dashboard.html').as_uri()}{fragment}")
    row = wait_text(browser, f"tr[data-ledger='{ELECTION}']", "✓ ", "the election's anchored checkpoint")
    assert "NOT" not in row and "/witness/" in row and "✗" not in text_of(browser, "#checkpoints")


def test_the_pages_parse_anchors_as_vledger_does(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str
) -> None:
    """The pages' parseAnchors (verifier/web/static/vledger.js) takes and refuses what
    node/anchors.py does (PROTOCOL 15.5): the printed anchors and each refused case of its tests."""
    printed = base64.urlsafe_b64decode(anchors + "=" * (-len(anchors) % 4)).decode()
    lines = printed.splitlines(keepends=True)
    timed = printed + "recosign_interval_ms 600000\n"
    texts = [printed, lines[0] + "".join(reversed(lines[1:])), timed, *REFUSED]
    browser.get(f"{cluster.gateway_url('replica-1')}vote.html")
    got = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const parsed = (t) => window.vledger.parseAnchors(t).then(() => true, () => false);"
        "Promise.all(arguments[0].map(parsed)).then(done);",
        texts,
    )
    wanted = []
    for text in texts:
        try:
            parse_anchors(text.encode())
            wanted.append(True)
        except SettingsError:
            wanted.append(False)
    assert got == wanted and wanted[:3] == [True, True, True] and not any(wanted[3:])
    script = (
        "const done = arguments[arguments.length - 1];"
        "window.vledger.parseAnchors(arguments[0]).then((a) => done(a.recosign));"
    )
    assert browser.execute_async_script(script, timed) == 600_000


# (rotations of observer "o" as (until, tallied), the generation whose key signed, at_ms, ledger, height):
# the pages' outOfForce must count what node/node_key_rotation.py's KeyHistory.tallies counts (16.6).
UNTIL = 1_790_000_000_000
IN_FORCE_CASES = [
    (((UNTIL, {"votes": 5}),), g, at, ledger, height)
    for g in (0, 1)
    for at in (0, UNTIL - 1, UNTIL, UNTIL + 1)
    for ledger, height in (("votes", 4), ("votes", 5), ("votes", 6), ("zakat", 0))
] + [
    (((UNTIL, None),), 0, UNTIL - 1, "votes", 10**9),
    (((UNTIL, None),), 0, UNTIL, "votes", 0),
    (((UNTIL, {}),), 0, 0, "votes", 0),
    (((UNTIL, {"votes": 5}), (UNTIL + 10, {"votes": 7})), 1, UNTIL + 9, "votes", 7),
    (((UNTIL, {"votes": 5}), (UNTIL + 10, {"votes": 7})), 1, UNTIL + 9, "votes", 8),
    (((UNTIL, {"votes": 5}), (UNTIL + 10, {"votes": 7})), 1, UNTIL + 10, "votes", 1),
    (((UNTIL, {"votes": 5}), (UNTIL + 10, {"votes": 7})), 0, UNTIL - 1, "votes", 5),
    (((UNTIL, {"votes": 5}), (UNTIL + 10, {"votes": 7})), 2, 2**63, "zakat", 2**40),
]


def test_the_pages_count_a_rotated_observer_s_tally_as_vledger_tally_does(
    browser: Any, cluster: LocalCluster, election: Election
) -> None:
    """outOfForce (verifier/web/static/vledger.js) against KeyHistory.tallies, case by case: the
    window (at_ms before the replacing rotation's until) and its tallied heights (16.6)."""
    signs = [f"{i:064x}" for i in range(1, 4)]
    wanted, cases = [], []
    for rotations, signer, at_ms, ledger, height in IN_FORCE_CASES:
        payloads = [
            {"node": "o", "curve": "", "sign": signs[i + 1], "accepted": 0, "until": until}
            | ({} if tallied is None else {"tallied": tallied})
            for i, (until, tallied) in enumerate(rotations)
        ]
        history = key_histories({"o": ("", signs[0])}, payloads)["o"]
        wanted.append(history.tallies(signs[signer], at_ms, ledger, height))
        stated = [{"until": str(until), "tallied": tallied} for until, tallied in rotations]
        cases.append([stated, signer, str(at_ms), ledger, str(height)])
    browser.get(f"{cluster.gateway_url('replica-1')}vote.html")
    got = browser.execute_script(
        "const heights = (t) => t === null ? null : new Map(Object.entries(t).map(([l, h]) => [l, BigInt(h)]));"
        "return arguments[0].map(([stated, signer, at, ledger, height]) => window.vledger.outOfForce("
        "{ at_ms: BigInt(at), height: BigInt(height) }, ledger,"
        " stated.map((r, index) => ({ index, until: BigInt(r.until), tallied: heights(r.tallied) })), signer) === '');",
        cases,
    )
    assert got == wanted and any(wanted) and not all(wanted)


def test_the_voter_page_counts_a_rotated_witness_s_cosignature_as_receipt_verify_does(
    browser: Any, cluster: LocalCluster, election: Election
) -> None:
    """cosignatureOutOfForce (verifier/web/static/vledger.js) against KeyHistory.cosigns, the
    rule of 14.3 step 7 and the write concern, on the same cases with `cosigned` for `tallied`
    and a checkpoint's size for a height (its time in seconds: a line's T)."""
    signs = [f"{i:064x}" for i in range(1, 4)]
    wanted, cases = [], []
    for rotations, signer, at_ms, ledger, size in IN_FORCE_CASES:
        seconds = at_ms // 1000
        payloads = [
            {"node": "o", "curve": "", "sign": signs[i + 1], "accepted": 0, "until": until}
            | ({} if cosigned is None else {"cosigned": cosigned})
            for i, (until, cosigned) in enumerate(rotations)
        ]
        history = key_histories({"o": ("", signs[0])}, payloads)["o"]
        wanted.append(history.cosigns(signs[signer], seconds * 1000, ledger, size))
        stated = [{"until": str(until), "cosigned": cosigned} for until, cosigned in rotations]
        cases.append([stated, signer, str(seconds), ledger, str(size)])
    browser.get(f"{cluster.gateway_url('replica-1')}vote.html")
    got = browser.execute_script(
        "const sizes = (t) => t === null ? null : new Map(Object.entries(t).map(([l, n]) => [l, BigInt(n)]));"
        "const judge = window.vledger.cosignatureOutOfForce;"
        "return arguments[0].map(([stated, signer, time, ledger, size]) => Object.keys(judge(BigInt(time),"
        " BigInt(size), ledger,"
        " stated.map((r, index) => ({ index, until: BigInt(r.until), cosigned: sizes(r.cosigned) })), signer))"
        ".length === 0);",
        cases,
    )
    assert got == wanted and any(wanted) and not all(wanted)


def test_the_voter_page_follows_only_the_rotations_of_witnesses_it_holds(
    browser: Any, cluster: LocalCluster, election: Election
) -> None:
    """Reviewer r6 #1: an ingest node's key_rotation states its own signing key, which the page
    named <cluster>/witness/<node> and counted as a witness's later key: whoever held the home's
    key cosigned its own forged checkpoint. Only rotations of held witnesses are followed, as
    node_keys.py's witness_histories does."""
    browser.get(f"{cluster.gateway_url('replica-1')}vote.html")
    kept = browser.execute_script(
        "const key = (node) => ({ node, key: { name: `test/witness/${node}` } });"
        "return window.vledger.heldWitnessRotations([key('ingest-2'), key('replica-1'), key('replica-9')],"
        " [{ name: 'test/witness/replica-1' }, { name: 'test/witness/observer-1' }]).map((l) => l.node);"
    )
    assert kept == ["replica-1"]


@contextlib.contextmanager
def scripts_page() -> Iterator[str]:
    """A page holding the pages' vledger.js alone, served on 127.0.0.1 (WebCrypto wants a secure
    origin): its functions judged on answers no real gateway would give, without a cluster."""
    script = (WEB_DIR / "static" / "vledger.js").read_bytes()
    server, url = serve(
        lambda path: (200, *(("text/javascript", script) if path == "/vledger.js" else ("text/html", PAGE)))
    )
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


PAGE = b'<!doctype html><meta charset="utf-8"><script src="/vledger.js"></script>'
# What checkTallies and checkedVerdict say of a (crafted) tally answer, the anchors listing
# observer-1 and observer-2 by their keys; arguments: the keys, the answer, the later keys of a
# rotation the node keys state but do not prove ({observer: key hex}).
JUDGE = """
const done = arguments[arguments.length - 1];
const v = window.vledger, [keys, answer, rotated] = arguments;
const anchored = Object.entries(keys).map(([o, k]) => [o, { publicKey: v.bytesOfHex(k) }]);
const anchors = { admin: null, observers: new Map(anchored) };
const later = Object.entries(rotated).map(([node, k], index) => ({ node, index, key: { publicKey: v.bytesOfHex(k) } }));
const rotations = { proven: false, problem: "no anchors carry the admin ledger's key", later };
v.checkTallies("fund", answer, anchors, rotations).then((checked) => done({
  checked: checked.map((c) => [c.observer, c.ok, c.problem, c.unproven !== ""]),
  status: v.checkedVerdict(checked, anchors.observers.size, () => false).status,
}), (e) => done({ error: String(e) }));
"""


def _tally_entry(observer: str, key: nacl.signing.SigningKey, balance: int) -> dict[str, Any]:
    tally = {"type": "charity", "currency": "SAR", "balance": balance, "funds": {}, "donated": balance}
    body = Snapshot(
        observer,
        "fund",
        9,
        b"\x01" * 32,
        tally | {"disbursed": 0, "records": 10, "flagged": 0},
        b"\x02" * 32,
        1_800_000_000_000,
    ).body()
    return {
        "observer": observer,
        "body": body.hex(),
        "signature": key.sign(body).signature.hex(),
        "public_key": key.verify_key.encode().hex(),
    }


def test_a_gateway_never_makes_a_stolen_key_s_tally_agreed_by_listing_it_twice_or_stating_a_rotation(
    browser: Any,
) -> None:
    """Review r9 #1 and #2, with the anchors listing both observers: a gateway listing observer-1's
    forged body twice and leaving observer-2 out made two bodies for two observers, "agree"; and
    one stating a key_rotation of observer-2 the page cannot prove made observer-2 unproven,
    wanted one observer, and observer-1's forged body alone "agreed". Neither is agreed now."""
    one, two = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    keys = {"observer-1": one.verify_key.encode().hex(), "observer-2": two.verify_key.encode().hex()}
    forged, honest = _tally_entry("observer-1", one, 999_999_999), _tally_entry("observer-2", two, 100)
    made_up = nacl.signing.SigningKey.generate().verify_key.encode().hex()
    with scripts_page() as page:
        browser.get(page)
        both = browser.execute_async_script(JUDGE, keys, {"observers": [forged, honest]}, {})
        twice = browser.execute_async_script(JUDGE, keys, {"observers": [forged, forged]}, {})
        rotated = browser.execute_async_script(JUDGE, keys, {"observers": [forged, honest]}, {"observer-2": made_up})
    assert both["status"] == "mismatch", both  # the two bodies differ: the fixture can fail
    assert twice["checked"] == [
        ["observer-1", True, "", False],
        ["observer-1", False, "listed twice by the gateway: not counted", False],
    ], twice
    assert twice["status"] != "agree", twice
    assert rotated["checked"] == [["observer-1", True, "", False], ["observer-2", None, "", True]], rotated
    assert rotated["status"] == "still_counting", rotated


def test_the_pages_never_count_one_observer_listed_twice_as_two(browser: Any) -> None:
    """tallyVerdict itself (review r9 #1): two alike bodies of one observer are not two observers."""
    with scripts_page() as page:
        browser.get(page)
        got = browser.execute_script(
            "const s = (observer) => ({ observer, ledger: 'fund', height: 9, head: 'h', tally: {}, counted: 'c' });"
            "const v = window.vledger.tallyVerdict;"
            "return [v([s('observer-1'), s('observer-1')], 2).status, v([s('observer-1'), s('observer-2')], 2).status];"
        )
    assert got == ["still_counting", "agree"]


def test_the_pages_take_an_agreement_away_where_the_gateway_says_a_verifier_s_recount_contradicts_it(
    browser: Any,
) -> None:
    """o21 F4: one observer alone agrees with itself; the gateway's verdict names the observers a
    verifier's tally_recount alert contradicts, and the pages show no agreement then. A name the
    answer does not list, or no list at all, changes nothing (unsigned: it only takes away)."""
    with scripts_page() as page:
        browser.get(page)
        got = browser.execute_script(
            "const s = { observer: 'observer-1', ledger: 'fund', height: 9, head: 'h', tally: {}, counted: 'c' };"
            "const c = [{ observer: 'observer-1', ok: true, snapshot: s, unproven: '' }];"
            "const v = (served) => window.vledger.checkedVerdict(c, 1, () => false, served);"
            "return [v(null).status, v({ recount: ['observer-9', 5] }).status, v({ recount: ['observer-1'] })];"
        )
    assert got == [
        "agree",
        "agree",
        {"status": "mismatch", "height": 9, "differing": ["observer-1"], "recount": ["observer-1"]},
    ]


def test_the_pages_count_two_names_sharing_one_key_as_one_witness(browser: Any) -> None:
    """Review r13 #9: w3 is w1's key under another name (13.5 step 1: one witness, as Python's
    witness_groups says). Its lines were a second witness's times toward a head's majority, and
    a second outside witness toward the genesis' quorum of them."""
    with scripts_page() as page:
        browser.get(page)
        got = browser.execute_script(
            """
const v = window.vledger;
const key = (name, byte) => ({ name, publicKey: new Uint8Array(32).fill(byte) });
const keys = [key("w1", 1), key("w2", 2), key("w3", 1)];
const groups = v.witnessGroups(keys);
const line = (name, times) => ({ name, ok: true, times: times.map(BigInt), key: key(name, 1) });
const cosigned = [line("w1", [100]), line("w3", [200])];
const entries = cosigned.map((c) => v.witnessEntry(c, { proven: false, later: [] }));
const inForce = [...v.linesInForce(entries, 5, "fund", groups)]
  .map(([n, t]) => [n, Number(t.oldest), Number(t.newest)]);
const seen = { checkpoint: { origin: "local/fund", size: 5 }, cosigned, needed: 2, groups, recosign: 1000 };
const age = v.vouched(seen);
let outside = "counted";
try {
  v.witnessedEnough(seen, { witnesses: keys, outside: { names: new Set(["w1", "w2", "w3"]), quorum: 2 } }, false);
} catch (e) { outside = e.message; }
return [v.distinctWitnesses(keys), [...groups], inForce, age.since, age.fresh, outside];
"""
        )
    distinct, groups, in_force, since, fresh, outside = got
    assert distinct == 2 and groups == [["w1", "w1"], ["w2", "w2"], ["w3", "w1"]]
    assert in_force == [["w1", 100, 200]]  # one witness: its oldest and newest line, whatever name each carries
    assert since is None and fresh is None  # one of the 2 needed vouched: no majority's time
    assert outside.startswith("1 of the outside witnesses the genesis lists cosigned") and "[no_quorum]" in outside


def test_the_pages_refuse_a_genesis_naming_an_outside_witness_as_the_cluster_s_own(browser: Any) -> None:
    """fix19c left the pages out: a genesis listing ``<cluster>/witness/...`` as an outside witness
    had its lines counted by the cluster witness's name. bad_genesis, as the receipt check says
    (13.9, section 3); another cluster's witness name is an outside one."""
    with scripts_page() as page:
        browser.get(page)
        got = browser.execute_script(
            """
const v = window.vledger;
const log = { name: "local/fund" };
const named = (name) => ({ name, publicKey: new Uint8Array(32).fill(1) });
const judged = (name) => {
  try { return [...v.outsideOf("fund", { quorum: 1 }, [named("example.org/w1"), named(name)], log).names]; }
  catch (e) { return e.message; }
};
return [judged("local/witness/replica-1"), judged("other/witness/replica-1")];
"""
        )
    posing, elsewhere = got
    assert "local/witness/replica-1" in posing and posing.endswith("[bad_genesis]"), posing
    assert elsewhere == ["example.org/w1", "other/witness/replica-1"]


def _rows(browser: Any) -> list[str]:
    script = "return Array.from(document.querySelectorAll('#observers td.counts'), (e) => e.innerText)"
    return list(browser.execute_script(script)) or [""]


def _total(counts: str) -> int:
    """The votes a row's counts add up to; -1 for a row that shows none (an observer judged ahead
    of the checkpoint served for a moment, until the page looks again)."""
    try:
        return sum(int(part.rsplit(" ", 1)[1]) for part in counts.split(", ") if part)
    except (ValueError, IndexError):
        return -1


def test_the_charity_page_shows_balances_in_currency_units(
    browser: Any, cluster: LocalCluster, election: Election
) -> None:
    browser.get(f"{cluster.gateway_url('replica-1')}charity.html?ledger={FUND}")
    wait_text(browser, "#funds td.balance", "2225.50 SAR", "the fund's balance")
    latest = wait_text(browser, "#latest", "family-07", "the latest records")
    assert "2500.00" in latest and "125.50" in latest and "400.00" in latest  # as the funds' strings
    shot(browser, "charity")


@pytest.mark.parametrize(("currency", "decimals"), [("SAR", 2), ("JPY", 0), ("KWD", 3), ("CLF", 4), ("XAU", None)])
def test_amounts_are_shown_from_their_digits_as_the_gateway_writes_them(
    browser: Any, currency: str, decimals: int | None
) -> None:
    """The pages' amountText (verifier/web/static/vledger.js) gives the gateway's amount_text
    for any amount in the currency's decimals: 2**53 + 1 minor units divided as a float would
    show 90071992547409.92."""
    script = (REPO / "verifier" / "web" / "static" / "vledger.js").read_text(encoding="utf-8")
    amounts = [0, 5, 99, 2025, -2025, -1, 40_000, 2**53 + 1, 2**64 - 1]
    browser.get("about:blank")
    shown = browser.execute_script(
        script + "\nconst d = window.vledger.minorUnitDigits(arguments[1]);\nreturn [d, arguments[0].map((a) =>"
        " [window.vledger.amountText(BigInt(a), d),"
        " Math.abs(Number(a)) <= Number.MAX_SAFE_INTEGER ? window.vledger.amountText(Number(a), d) : null])];",
        [str(a) for a in amounts],
        currency,
    )
    digits, shown = shown
    assert digits == decimals  # the page's table is node/currency.py's
    assert [big for big, _ in shown] == [amount_text(a, currency) for a in amounts]
    assert [small for _, small in shown][:7] == [amount_text(a, currency) for a in amounts[:7]]
    if currency == "SAR":
        assert shown[7][0] == "90071992547409.93"


def test_the_dashboard_shows_a_node_going_down_within_seconds(
    browser: Any, cluster: LocalCluster, election: Election
) -> None:
    browser.get(f"{cluster.gateway_url('replica-1')}dashboard.html")
    wait_text(browser, "tr[data-node='observer-2'] td.state", "READY", "observer-2 ready")
    shot(browser, "dashboard")
    assert cluster.stop_node("observer-2") == 0
    started = time.monotonic()
    try:
        wait_text(browser, "tr[data-node='observer-2'] td.state", "DOWN", "observer-2 shown down")
        assert time.monotonic() - started < 5.0
        shot(browser, "dashboard-node-down")
    finally:
        cluster.start_node("observer-2")
    wait_text(browser, "tr[data-node='observer-2'] td.state", "READY", "observer-2 ready again")


def test_the_pages_take_a_later_epoch_s_checkpoint_by_the_standby_key_as_a_receipt_check_does(
    browser: Any, cluster: LocalCluster, election: Election
) -> None:
    """verifyLedgerNote (verifier/web/static/vledger.js) takes and refuses the notes that
    verify_witnessed does for a ledger whose genesis pins a standby key (PROTOCOL 14.3 step 7,
    10.9): the home's, the standby's with an epoch line from 2 and a trusted witness's
    cosignature; not the standby's with none (its key alone could sign a tree of its own
    making: the pages took it, shown green), nor the genesis key's stating epoch 3 with none
    (a failback's, which a fenced stolen key could claim), without an epoch line, with epoch 1's, or with two,
    nor a key the genesis does not pin; and, when the genesis lists outside witnesses, only a
    note its quorum of them cosigned (13.9: the pages never asked for it), and an outside witness's
    line never as the cluster witness's an epoch from 2 needs (outsider o24 F0)."""
    home, standby, stranger = (HomeSigner("t", bytes(range(i, 32 + i))) for i in (0, 1, 2))
    witness, untrusted, outside = (
        SignerKey(name, ALG_COSIGNATURE_V1, bytes([i]) * 32)
        for i, name in ((7, "t/witness/replica-1"), (8, "t/witness/replica-9"), (9, "example.org/w1"))
    )
    keys = ReceiptKeys(
        home_key("t", FUND, home.key(FUND).public_key),
        witnesses=(witness.verifier(), outside.verifier()),
        standby_key=home_key("t", FUND, standby.key(FUND).public_key),
    )
    listing = dataclasses.replace(keys, outside=OutsideWitnesses((outside.verifier(),), 1))
    root = bytes(range(32))
    epoch_2 = ("vledger-epoch 2 ingest-2",)
    signed = [  # (signer, epoch lines, cosigners, whether the genesis lists the outside witness)
        (home, (), (), False),
        (standby, epoch_2, (), False),
        (standby, epoch_2, (witness,), False),
        (standby, ("vledger-epoch 12 ingest-3",), (witness,), False),
        (standby, epoch_2, (untrusted,), False),
        (standby, (), (witness,), False),
        (standby, ("vledger-epoch 1 ingest-2",), (witness,), False),
        (standby, (*epoch_2, "vledger-epoch 3 ingest-1"), (witness,), False),
        (standby, ("vledger-epoch 3 ingest-1",), (witness,), False),  # epoch 3 is the genesis key's (10.9)
        (home, epoch_2, (witness,), False),  # the replaced home's key, epoch 2's line (outsider o16 F5)
        (home, ("vledger-epoch 3 ingest-1",), (), False),  # a failback's epoch: only witnessed (14.3 step 7)
        (stranger, epoch_2, (witness,), False),
        (home, (), (witness,), True),
        (home, (), (outside,), True),
        # Outsider o24 F0: an outside witness's line never makes an epoch from 2 count (13.5 step 3).
        (standby, epoch_2, (outside,), True),
        (home, ("vledger-epoch 5 ingest-1",), (outside,), True),
        (standby, epoch_2, (witness, outside), True),
    ]
    notes = []
    for signer, lines, cosigners, _ in signed:
        body = Checkpoint(f"t/{FUND}", 9, root, lines).body()
        cosigned = (cosign(body, w, 1_790_000_000).note_signature() for w in cosigners)
        notes.append(Note(body, (sign(body, signer.key(FUND)), *cosigned)).encode().decode())
    wanted = []
    for (signer, _, _, listed), note in zip(signed, notes, strict=True):
        try:
            verify_witnessed(note.encode(), listing if listed else keys)
            wanted.append("home" if signer is home else "standby")
        except VledgerError:
            wanted.append("refused")
    browser.get(f"{cluster.gateway_url('replica-1')}vote.html")
    got = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const [notes, listed, log, standby, witnesses, outside] = arguments;"
        "(async () => {"
        "  const v = window.vledger, out = [];"
        "  const keys = { witnesses: await Promise.all(witnesses.map(v.parseVkey)),"
        "                 standby: await v.parseVkey(standby) };"
        "  const listing = { ...keys, outside: { names: new Set([outside]), quorum: 1 } };"
        "  const logKey = await v.parseVkey(log);"
        "  for (const [i, note] of notes.entries()) {"
        "    try {"
        "      const seen = await v.verifyLedgerNote(note, logKey, listed[i] ? listing : keys);"
        "      out.push(!seen.logOk ? 'refused' : seen.logKey.vkey === log ? 'home' : 'standby');"
        "    } catch (e) { out.push('refused'); }"
        "  }"
        "  return out;"
        "})().then(done, (e) => done(String(e)));",
        notes,
        [listed for *_, listed in signed],
        keys.log_key.encode(),
        keys.standby_key.encode() if keys.standby_key else "",
        [k.encode() for k in keys.witnesses],
        outside.name,
    )
    assert got == wanted
    assert wanted == ["home", "refused", "standby", "standby", *["refused"] * 9, "home", *["refused"] * 2, "standby"]


@contextlib.contextmanager
def _election_of_its_own(redis_server: RedisServer, seed: int) -> Iterator[tuple[LocalCluster, Election, Any]]:
    """A cluster of its own (a home, replica-1, observer-1, a gateway on replica-1), holding an
    election of 4 voters: for a test that rotates a witness's key, which the module's cluster
    must not see. Yields it, the election planned and its writer's client."""
    with LocalCluster(
        redis_server.url, nodes=1, replicas=1, observers=1, gateways=["replica-1"], observing=FORGING_OBSERVERS
    ) as rotated:
        planned = plan_election(ELECTION, 4, now_ms(), seed=seed, author="writer1")
        rules = rotated.pinned(ELECTION, planned.rules)
        rotated.admin().create_ledger(Entry.prepare(rules.genesis_content(ELECTION, ADMIN, "g", now_ms()), 0, Limits()))
        writer = rotated.client("writer1")
        for phase in planned.phases:
            writer.put_many(phase)
        yield rotated, planned, writer


def _rotate_replica(rotated: LocalCluster) -> Path:
    """`vledger key rotate replica-1 --window 2`; the cluster's key directory."""
    keys = Path(rotated.directory) / "keys"
    common = ["--config", str(rotated.config_path), "--key", str(keys / "admin.key_secret")]
    rotated.cli("key", "rotate", "replica-1", "--window", "2", *common)
    return keys


def test_the_voter_page_takes_receipts_with_node_keys_and_says_which_cosignature_it_cannot_count(
    browser: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    """After `vledger key rotate replica-1`, every receipt ends with its node keys (PROTOCOL
    14.2), and vote.html refused each ("not a receipt (14.2)"): every voter's check failed. With
    anchors that carry the admin ledger's key the page proves the rotation and counts each line
    as 14.3 step 7 says (the later key's; the replaced key's only inside its window and up to the
    size it had cosigned); with anchors that lack it, it shows the later key's cosignature as not
    counted, counting the others; without anchors, the later key is the gateway's word."""
    from selenium.webdriver.common.by import By

    with _election_of_its_own(redis_server, seed=3) as (rotated, planned, writer):
        keys = _rotate_replica(rotated)
        writer.put(entry(ELECTION, "register", {"voter_id": "after-the-rotation"}, "writer1"))  # a checkpoint to cosign
        size = int(rotated.admin().call("size", {"ledger": ELECTION})["size"])
        eid = planned.eids[0]
        gateway = rotated.gateway_url("replica-1")
        replica = "test/witness/replica-1"

        def rotated_receipts() -> dict[str, Any] | None:
            with urllib.request.urlopen(f"{gateway}api/ledgers/{ELECTION}/voters/{eid}", timeout=10) as answer:
                shown: dict[str, Any] = json.loads(answer.read())
            served = shown["checkpoint"]
            done = served["size"] >= size and replica in served["cosigned_by"] and len(served["cosigned_by"]) == 2
            return shown if done and all('"node_keys":' in (r["receipt"] or "") for r in shown["records"]) else None

        good = wait_until(rotated_receipts, WAIT, "receipts under a checkpoint replica-1's new key cosigned")
        count = len(good["records"])
        printed = rotated.cli(
            "anchors", "--config", str(rotated.config_path), "--store", str(rotated.store_dir("ingest-1"))
        ).stdout
        anchored = base64.urlsafe_b64encode(printed.encode()).decode().rstrip("=")
        without_admin = "".join(line for line in printed.splitlines(keepends=True) if not line.startswith("admin "))
        bare = base64.urlsafe_b64encode(without_admin.encode()).decode().rstrip("=")

        # With the admin ledger's key in the anchors the node keys are proven: replica-1's later
        # key's cosignature counts, as `vledger receipt verify --admin-key` counts it.
        browser.get(f"{gateway}vote.html?eid={eid}#anchors={anchored}")
        verdict = wait_text(browser, "#verdict", f"Verified: {count} records of {eid}", "the proven rotation")
        assert "NOT counted" not in verdict and "NOT checked" not in verdict, verdict
        checks = text_of(browser, "#checks")
        assert "✗" not in checks and "node keys: 1 key rotation(s) of replica-1 on the admin ledger" in checks
        assert "signed by the admin ledger's key of the publisher's anchors: proven" in checks
        assert f"cosigned by {replica} at" in checks and "with its key of generation 1: valid" in checks
        assert browser.execute_script("return document.getElementById('verdict').className") == "ok"

        # With anchors that lack it: replica-1's generation-0 key is the anchored one; its later
        # key's cosignature is shown, not counted; observer-1's counts, one of two: too few to say
        # verified, as the Python client with those anchors refuses it (o18 F5).
        fresh(browser, f"{gateway}vote.html?eid={eid}#anchors={bare}")
        verdict = wait_text(
            browser,
            "#verdict",
            f"NOT verified (too few witness cosignatures): {count} records of {eid}",
            "the rotated witness's receipts",
        )
        assert "1 cosignature(s) by a rotated witness key NOT counted" in verdict and "NOT checked" not in verdict
        checks = text_of(browser, "#checks")
        assert "✗" not in checks and "cosigned by test/witness/observer-1 at" in checks
        assert f"cosigned by {replica} at" in checks and "signature valid, NOT counted" in checks
        assert "node keys: 1 key rotation(s) of replica-1 on the admin ledger" in checks
        # One counted of the two anchored witnesses is no majority (outsider23 F6): a warning
        # that names the one missing, no longer green.
        assert "FEWER than a majority of the anchored witnesses" in verdict, verdict
        assert f"cosigned by only 1 of the 2 anchored witnesses, fewer than a majority (2): NOT by {replica}" in checks
        assert browser.execute_script("return document.getElementById('verdict').className") == "bad"
        shot(browser, "vote-rotated-witness")

        # Without anchors the keys are the gateway's word, its newest key of replica-1 among them.
        browser.get(f"{gateway}vote.html?eid={eid}")
        verdict = wait_text(browser, "#verdict", f"Verified: {count} records of {eid}", "the unanchored check")
        assert "NOT checked against the publisher's anchors" in verdict and "NOT counted" not in verdict
        assert f"cosigned by {replica} at" in text_of(browser, "#checks")

        # "Drop a receipt file here": one receipt file as the gateway serves it, and the saved answer.
        height = good["records"][0]["height"]
        with urllib.request.urlopen(f"{gateway}api/ledgers/{ELECTION}/receipts/{height}", timeout=10) as answer:
            single = tmp_path / "receipt.json"
            single.write_bytes(answer.read())
        saved = tmp_path / "voter.json"
        saved.write_text(json.dumps(good))
        for path, wanted in (
            (single, f"NOT verified (too few witness cosignatures): 1 records of record {height}"),
            (saved, f"NOT verified (too few witness cosignatures): {count} records"),
        ):
            fresh(browser, f"{gateway}vote.html#anchors={bare}")
            browser.find_element(By.ID, "file").send_keys(str(path))
            verdict = wait_text(browser, "#verdict", wanted, f"the dropped {path.name}")
            assert "NOT counted" in verdict and "✗" not in text_of(browser, "#checks")

        # Whoever holds replica-1's replaced (anchored) key adds its line to the receipt's
        # checkpoint: stamped at the rotation's until it is refused, inside the window on a
        # checkpoint larger than the rotation says that key had cosigned it is not counted (14.3
        # step 7); with anchors that lack the admin key, it counts as the anchored key's, as before.
        made = json.loads(single.read_text())
        carried = made["node_keys"]["rotations"]
        payloads = [decode_record(base64.b64decode(r["record"]), Limits()).content.payload for r in carried]
        rotation = next(p for p in payloads if p["node"] == "replica-1")
        size_now = int(made["checkpoint"].split("\n")[1])
        assert rotation["cosigned"][ELECTION] < size_now
        old = load_signing_key(signing_key_paths(keys, "replica-1")[0])
        signer = SignerKey(replica, ALG_COSIGNATURE_V1, old.seed)
        for stamp, shown, fails in (
            (rotation["until"] // 1000 + 1, "stamped at or after that rotation's until [bad_cosignature]", True),
            (rotation["until"] // 1000 - 1, f"past the {rotation['cosigned'][ELECTION]} its rotation says", False),
        ):
            note = parse_note(made["checkpoint"].encode())
            line = cosign(note.text, signer, stamp).note_signature()
            forged = tmp_path / f"forged-{stamp}.json"
            forged.write_text(json.dumps({**made, "checkpoint": note.with_signatures(line).encode().decode()}))
            fresh(browser, f"{gateway}vote.html#anchors={anchored}")
            browser.find_element(By.ID, "file").send_keys(str(forged))
            verdict = wait_text(browser, "#verdict", "FAILED" if fails else "Verified", f"the line stamped {stamp}")
            assert shown in text_of(browser, "#checks")
            assert fails or "1 cosignature(s) by a rotated witness key NOT counted" in verdict, verdict


def test_a_replaced_witness_key_s_later_line_never_keeps_a_frozen_view_fresh_on_the_tally_and_voter_pages(
    browser: Any, redis_server: RedisServer
) -> None:
    """Review r11 D: a witness that cosigns a quiet ledger again leaves its first and its newest
    line on a note, and only the first was held to its key's rotation (16.6, 14.3 step 7). On a
    frozen gateway's old checkpoint, replica-1's replaced key's first line is inside its window on
    a size the rotation says it had cosigned (it counts), and whoever holds that key adds a line
    stamped after the rotation's until: the pages took it as replica-1's newest, so with
    observer-1 still vouching the view looked fresh. It is not counted (11.4): STALE, on the
    dashboard too."""
    with _election_of_its_own(redis_server, seed=5) as (rotated, planned, writer):
        eid, gateway, replica = planned.eids[0], rotated.gateway_url("replica-1"), "test/witness/replica-1"

        def receipts(rotated_too: bool) -> dict[str, Any] | None:
            try:
                shown: dict[str, Any] = _json(f"{gateway}api/ledgers/{ELECTION}/voters/{eid}")
            except urllib.error.HTTPError as e:  # not_found until the replica holds the voter's records
                if e.code == 404:
                    return None
                raise
            made = [r["receipt"] for r in shown["records"]]
            done = len(shown["checkpoint"]["cosigned_by"]) == 2 and all(made)
            return shown if done and all(('"node_keys":' in r) == rotated_too for r in made) else None

        # The view a gateway freezes: receipts under a checkpoint both witnesses cosigned, before
        # replica-1's key rotates (the rotation then says that key had cosigned this size).
        before = wait_until(lambda: receipts(False), WAIT, "receipts under a checkpoint both witnesses cosigned")
        keys = _rotate_replica(rotated)
        writer.put(entry(ELECTION, "register", {"voter_id": "after-the-rotation"}, "writer1"))
        after = wait_until(lambda: receipts(True), WAIT, "receipts with the node keys of replica-1's rotation")
        node_keys = json.loads(after["records"][0]["receipt"])["node_keys"]
        carried = [
            decode_record(base64.b64decode(r["record"]), Limits()).content.payload for r in node_keys["rotations"]
        ]
        rotation = next(p for p in carried if p["node"] == "replica-1")
        checkpoint = parse_note(json.loads(before["records"][0]["receipt"])["checkpoint"].encode())
        assert int(checkpoint.text.split("\n")[1]) <= rotation["cosigned"][ELECTION]

        def signer(name: str, node: str) -> SignerKey:
            return SignerKey(name, ALG_COSIGNATURE_V1, load_signing_key(signing_key_paths(keys, node)[0]).seed)

        # Each witness vouched 400 s ago (past 300 s + 10 s); observer-1 vouches again now, and the
        # replaced key's holder stamps replica-1's line after until: were it counted, a majority
        # (both) would vouch now.
        then, late = int(time.time()) - 400, max(rotation["until"] // 1000 + 1, int(time.time()))
        old, observer = signer(replica, "replica-1"), signer("test/witness/observer-1", "observer-1")
        home = [line for line in checkpoint.signatures if line.name == checkpoint.text.split("\n", 1)[0]]
        stamped = [(old, then), (old, late), (observer, then), (observer, int(time.time()))]
        lines = [cosign(checkpoint.text, key, at).note_signature() for key, at in stamped]
        forged = Note(checkpoint.text, (*home, *lines)).encode().decode()

        served = [
            dict(r, receipt=json.dumps(dict(json.loads(r["receipt"]), checkpoint=forged, node_keys=node_keys)))
            for r in before["records"]
        ]

        def frozen(path: str, body: Any) -> Any:
            if path.startswith(f"/api/ledgers/{ELECTION}/checkpoint"):
                return dict(body, note=forged)
            return dict(before, records=served) if path.startswith(f"/api/ledgers/{ELECTION}/voters/") else None

        printed = rotated.cli(
            "anchors", "--config", str(rotated.config_path), "--store", str(rotated.store_dir("ingest-1"))
        ).stdout
        anchored = base64.urlsafe_b64encode(printed.encode()).decode().rstrip("=")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(then))
        with Lying(gateway, frozen) as lying:
            fresh(browser, f"{lying.url}tally.html?ledger={ELECTION}#anchors={anchored}")
            cosigned = wait_text(browser, "#cosigned", "last vouched for it at", "the frozen view's witnesses")
            assert cosigned.startswith("STALE:") and f"last vouched for it at {stamp}" in cosigned, cosigned
            fresh(browser, f"{lying.url}dashboard.html#anchors={anchored}")
            row = f"#checkpoints tr[data-ledger='{ELECTION}']"
            assert "no majority of the witnesses vouched" in wait_text(
                browser, row, "STALE:", "the frozen dashboard row"
            )

            fresh(browser, f"{lying.url}vote.html?eid={eid}#anchors={anchored}")
            verdict = wait_text(browser, "#verdict", f"records of {eid}", "the voter's records from the frozen view")
            assert verdict.startswith("Verified") and "STALE: no majority of the witnesses vouched" in verdict, verdict
            checks = text_of(browser, "#checks")
            assert f"cosigned by {replica} at {stamp}: valid" in checks and "✗" not in checks, checks
            assert "STALE: The checkpoint verified here holds" in checks and f"at {stamp}" in checks, checks


def test_every_page_counts_the_cosignatures_of_3_of_5_witnesses_whose_keys_rotated(
    browser: Any, redis_server: RedisServer
) -> None:
    """Outsider45: after `vledger key rotate` of 3 of 5 witnesses, tally.html, charity.html and
    dashboard.html, opened with the publisher's anchors, checked the checkpoint with the anchored
    generation-0 keys alone: the 3 rotated witnesses' lines by their new keys were not counted and
    every live checkpoint was STALE ("fewer than 3 of the trusted witnesses vouched"), a false
    tamper alarm, while vote.html proved the rotations with the anchors' admin key and counted
    them (PROTOCOL 15.5). Every page now shares vote.html's rule (vledger.witnessedNote)."""
    with LocalCluster(
        redis_server.url, nodes=1, replicas=3, observers=2, gateways=["replica-1"], observing=FORGING_OBSERVERS
    ) as rotated:
        planned = plan_election(ELECTION, 4, now_ms(), seed=11, author="writer1")
        rules = rotated.pinned(ELECTION, planned.rules)
        rotated.admin().create_ledger(Entry.prepare(rules.genesis_content(ELECTION, ADMIN, "g", now_ms()), 0, Limits()))
        writer = rotated.client("writer1")
        for phase in planned.phases:
            writer.put_many(phase)
        fund = rotated.pinned(
            FUND,
            LedgerRules(("donation", "disbursement"), 0, {"type": "charity", "currency": "SAR", "funds": ["zakat"]}),
        )
        rotated.admin().create_ledger(Entry.prepare(fund.genesis_content(FUND, ADMIN, "g", now_ms()), 0, Limits()))
        keys = rotated.directory / "keys"
        common = ["--config", str(rotated.config_path), "--key", str(keys / "admin.key_secret")]
        moved = ("replica-1", "observer-1", "replica-2")
        for node in moved:
            rotated.cli("key", "rotate", node, "--window", "2", *common)
        writer.put(entry(ELECTION, "register", {"voter_id": "after-the-rotations"}, "writer1"))
        payload = {"donor": seal(new_seal_key(), "d"), "fund": "zakat", "amount": 10_000, "source": "s", "purpose": "p"}
        writer.put(entry(FUND, "donation", payload, "writer1"))
        gateway = rotated.gateway_url("replica-1")
        newest = {
            f"test/witness/{n}": key_id(
                f"test/witness/{n}",
                ALG_COSIGNATURE_V1,
                bytes.fromhex(load_verify_key(signing_key_paths(keys, f"{n}@1")[1]).public_hex),
            )
            for n in moved
        }
        sizes = {ledger: int(rotated.admin().call("size", {"ledger": ledger})["size"]) for ledger in (ELECTION, FUND)}

        def by_new_keys(ledger: str) -> bool:
            # The checkpoint served covers the writes, all 5 cosigned it and the 3 rotated ones by
            # their new keys only (the page must follow the node keys to count them).
            with urllib.request.urlopen(f"{gateway}api/ledgers/{ledger}/checkpoint", timeout=10) as answer:
                served = json.loads(answer.read())
            lines = parse_note(served["note"].encode()).signatures[1:]
            return (
                served["size"] >= sizes[ledger]
                and len(served["cosigned_by"]) == 5
                and served["node_keys"] is not None
                and served["fresh_ms"] is not None
                and {line.name for line in lines if line.name in newest} == set(newest)
                and all(line.key_id == newest[line.name] for line in lines if line.name in newest)
            )

        for ledger in (ELECTION, FUND):
            wait_until(functools.partial(by_new_keys, ledger), 5 * WAIT, f"{ledger}'s checkpoint by the new keys")
        printed = rotated.cli(
            "anchors", "--config", str(rotated.config_path), "--store", str(rotated.store_dir("ingest-1"))
        ).stdout
        assert "\nadmin test/admin+" in printed
        anchored = base64.urlsafe_b64encode(printed.encode()).decode().rstrip("=")

        browser.get(f"{gateway}tally.html?ledger={ELECTION}#anchors={anchored}")
        cosigned = wait_text(browser, "#cosigned", "last vouched for it at", "the rotated witnesses' lines counted")
        assert "STALE" not in cosigned and "STALE" not in text_of(browser, "#verdict"), cosigned

        fresh(browser, f"{gateway}charity.html?ledger={FUND}#anchors={anchored}")
        proven = wait_text(browser, "#proven", "cosigned by 5 witness(es)", "the charity page's checkpoint")
        assert "with the publisher's anchors" in proven, proven
        summary = wait_text(browser, "#summary", "Balance", "the fund's balance")
        assert "STALE" not in summary, summary

        fresh(browser, f"{gateway}dashboard.html#anchors={anchored}")
        row = wait_text(browser, f"tr[data-ledger='{ELECTION}']", " s ago", "the dashboard's row of the election")
        assert "STALE" not in row and "NOT counted" not in row and "✗" not in row, row
        for node in moved:
            assert f"✓ test/witness/{node} (key of generation 1)" in row, row

        eid = planned.eids[0]
        fresh(browser, f"{gateway}vote.html?eid={eid}#anchors={anchored}")
        verdict = wait_text(browser, "#verdict", f"records of {eid}", "the voter page")
        assert verdict.startswith("Verified") and "STALE" not in verdict and "NOT counted" not in verdict, verdict
        assert text_of(browser, "#checks").count("with its key of generation 1: valid") >= 3
        shot(browser, "pages-rotated-witnesses")


def test_the_tally_and_charity_pages_judge_an_observer_s_rotated_keys_as_vledger_tally_does(
    browser: Any, redis_server: RedisServer
) -> None:
    """After `vledger key rotate observer-2`, its tallies are signed with its new key: with the
    publisher's anchors (its generation-0 key), tally.html said "1 observer signature(s) did NOT
    verify", as for a forgery, for good, and charity.html showed no balance. Anchors carrying the
    admin ledger's key prove the rotation (PROTOCOL 15.5, 16.6): the new key counts, and the
    replaced one only inside its window and `tallied` height. Without that key the pages say the
    rotated observer is unproven and judge the others among themselves."""
    with LocalCluster(
        redis_server.url,
        nodes=1,
        replicas=1,
        observers=2,
        gateways=["replica-1"],
        observing=FORGING_OBSERVERS,
    ) as rotated:
        planned = plan_election(ELECTION, 4, now_ms(), seed=5, author="writer1")
        rules = rotated.pinned(ELECTION, planned.rules)
        rotated.admin().create_ledger(Entry.prepare(rules.genesis_content(ELECTION, ADMIN, "g", now_ms()), 0, Limits()))
        writer = rotated.client("writer1")
        for phase in planned.phases:
            writer.put_many(phase)
        fund = rotated.pinned(
            FUND,
            LedgerRules(("donation", "disbursement"), 0, {"type": "charity", "currency": "SAR", "funds": ["zakat"]}),
        )
        rotated.admin().create_ledger(Entry.prepare(fund.genesis_content(FUND, ADMIN, "g", now_ms()), 0, Limits()))
        sealing = new_seal_key()

        def donate(amount: int) -> None:
            payload = {
                "donor": seal(sealing, str(amount)),
                "fund": "zakat",
                "amount": amount,
                "source": "s",
                "purpose": "p",
            }
            writer.put(entry(FUND, "donation", payload, "writer1"))

        donate(10_000)
        keys = rotated.directory / "keys"
        common = ["--config", str(rotated.config_path), "--key", str(keys / "admin.key_secret")]
        rotated.cli("key", "rotate", "observer-2", "--window", "2", *common)
        newest = load_verify_key(signing_key_paths(keys, "observer-2@1")[1]).public_hex
        writer.put(entry(ELECTION, "register", {"voter_id": "after-the-rotation"}, "writer1"))  # a tally to sign
        donate(2_025)
        head = int(rotated.admin().call("size", {"ledger": ELECTION})["size"]) - 1
        gateway = rotated.gateway_url("replica-1")

        def signed_anew(ledger: str, height: int) -> bool:
            with urllib.request.urlopen(f"{gateway}api/ledgers/{ledger}/tally", timeout=10) as answer:
                shown = json.loads(answer.read())
            with urllib.request.urlopen(f"{gateway}api/ledgers/{ledger}/checkpoint", timeout=10) as answer:
                served = json.loads(answer.read())
            by = {o["observer"]: o for o in shown["observers"]}
            return (
                served["size"] > height
                and served["node_keys"] is not None
                and by["observer-2"]["public_key"] == newest
                and all(o["signature_ok"] and o["snapshot"]["height"] == height for o in by.values())
            )

        for ledger, height in ((ELECTION, head), (FUND, 2)):
            wait_until(
                functools.partial(signed_anew, ledger, height), WAIT, f"the observers' tallies of {ledger} at its head"
            )
        printed = rotated.cli(
            "anchors", "--config", str(rotated.config_path), "--store", str(rotated.store_dir("ingest-1"))
        ).stdout
        assert "\nadmin test/admin+" in printed  # the admin home's key, with which the pages prove rotations
        anchored = base64.urlsafe_b64encode(printed.encode()).decode().rstrip("=")
        without_admin = "".join(line for line in printed.splitlines(keepends=True) if not line.startswith("admin "))
        bare = base64.urlsafe_b64encode(without_admin.encode()).decode().rstrip("=")

        # With the admin ledger's key in the anchors, the node keys are proven: observer-2's new key counts.
        browser.get(f"{gateway}tally.html?ledger={ELECTION}#anchors={anchored}")
        verdict = wait_text(browser, "#verdict", f"The 2 observers agree at height {head}.", "observer-2's proven key")
        assert "NOT" not in verdict, verdict
        assert browser.execute_script("return document.getElementById('verdict').className") == "ok"
        row = text_of(browser, "tr[data-observer='observer-2']")
        # The key shown is the one that verified the body, not the anchored one it replaced (outsider24 G6).
        assert "✓ Ed25519 valid" in row and newest[:16] in row, row
        browser.get(f"{gateway}charity.html?ledger={FUND}#anchors={anchored}")
        summary = wait_text(browser, "#summary", "Balance 120.25 SAR", "the fund's balance by both observers")
        assert "signed alike by 2 observer(s)" in summary and "NOT" not in summary, summary
        assert browser.execute_script("return document.getElementById('summary').className") == "ok"

        # Anchors without it (as before they could carry one): the rotation is stated, not proven,
        # and observer-1 alone is never agreed (review r9: a gateway may make up that rotation).
        browser.get(f"{gateway}tally.html?ledger={ELECTION}#anchors={bare}")
        verdict = wait_text(browser, "#verdict", "NOT every observer's", "observer-2's rotated key said unproven")
        assert verdict.startswith("Still counting") and "agree" not in verdict, verdict
        assert (
            "observer-2 signed with a rotated key this page cannot prove (no anchors carry the admin ledger's key)"
            in verdict
            and "did NOT verify" not in verdict
        )
        assert browser.execute_script("return document.getElementById('verdict').className") == "warn"
        row = text_of(browser, "tr[data-observer='observer-2']")
        assert "signed by a later key of its own" in row and "INVALID" not in row
        assert "✓ Ed25519 valid" in text_of(browser, "tr[data-observer='observer-1']")
        shot(browser, "tally-rotated-observer")

        # Without anchors the gateway states observer-2's newest key: both verify, as its word.
        browser.get(f"{gateway}tally.html?ledger={ELECTION}")
        verdict = wait_text(browser, "#verdict", "The 2 observers agree", "the unanchored tally")
        assert "NOT checked against the publisher's anchors" in verdict

        browser.get(f"{gateway}charity.html?ledger={FUND}#anchors={bare}")
        summary = wait_text(browser, "#summary", "Balance 120.25 SAR", "the fund's balance beside a rotated observer")
        assert "NOT agreed: observer-1's word alone, still counting" in summary, summary
        assert "signed alike" not in summary and "NOT every observer's: observer-2" in summary, summary
        assert browser.execute_script("return document.getElementById('summary').className") == "warn"

        _replaced_key_tallies_count_only_in_force(browser, rotated, head, anchored, bare)


def _replaced_key_tallies_count_only_in_force(
    browser: Any, rotated: LocalCluster, head: int, anchored: str, bare: str
) -> None:
    """Whoever holds observer-2's replaced (anchored) key signs its tally stamped at the
    rotation's `until`, or inside the window at a height past what the rotation says that key
    had `tallied`: with the anchors' admin key each is shown NOT counted, as `vledger tally`
    refuses it; without it, the anchored key of an observer the node keys say rotated is
    unproven, never counted (before, the pages counted any body the anchored key verified).
    Inside the window at the height stated, the replaced key's tally counts."""
    gateway = rotated.gateway_url("replica-1")
    with urllib.request.urlopen(f"{gateway}api/ledgers/{ELECTION}/checkpoint", timeout=10) as answer:
        carried = json.loads(answer.read())["node_keys"]["rotations"]
    payloads = [decode_record(base64.b64decode(r["record"]), Limits()).content.payload for r in carried]
    rotation = next(p for p in payloads if p["node"] == "observer-2")
    until, tallied = rotation["until"], rotation["tallied"][ELECTION]
    assert tallied < head  # the register after the rotation: a height the old key never tallied
    wait_until(lambda: now_ms() > until, WAIT, "the end of observer-2's window")
    tallies = TallyBoard(connect(rotated.cluster_redis_url))
    genuine = tallies.latest(ELECTION, ["observer-2"])["observer-2"]
    assert genuine is not None
    honest = Snapshot.decode(genuine.body)
    old = load_signing_key(signing_key_paths(rotated.directory / "keys", "observer-2")[0])
    forged = {**honest.tally, "counts": {"mallory": 999}}
    row = "tr[data-observer='observer-2']"
    late = dataclasses.replace(honest, height=tallied, at_ms=until, tally=forged)
    past = dataclasses.replace(honest, height=head, at_ms=until - 1, tally=forged)
    within = dataclasses.replace(honest, height=tallied, at_ms=until - 1)
    try:
        for body, why in (
            (late, "stamped at or after that rotation's until"),
            (past, "its rotation says that key had tallied"),
        ):
            tallies.publish(ELECTION, "observer-2", body.height, body.body(), old.sign(body.body()))
            fresh(browser, f"{gateway}tally.html?ledger={ELECTION}#anchors={anchored}")
            verdict = wait_text(browser, "#verdict", "by a replaced key out of force, NOT counted", why)
            assert verdict.startswith("1 observer signature(s) did NOT verify with the publisher's anchors"), verdict
            shown = text_of(browser, row)
            assert "✗ NOT counted: signed by its key replaced at admin record" in shown and why in shown, shown
            assert "mallory" not in text_of(browser, "#observers tbody")
            fresh(browser, f"{gateway}tally.html?ledger={ELECTION}#anchors={bare}")
            wait_text(browser, row, "signed by its anchored key, which its rotation at admin record", "unproven")
            verdict = wait_text(browser, "#verdict", "NOT every observer's", "the anchored key unproven")
            assert "did NOT verify" not in verdict and "mallory" not in text_of(browser, "#observers tbody")
            assert browser.execute_script("return document.getElementById('verdict').className") != "ok"
        shot(browser, "tally-replaced-key-not-counted")
        tallies.publish(ELECTION, "observer-2", within.height, within.body(), old.sign(within.body()))
        fresh(browser, f"{gateway}tally.html?ledger={ELECTION}#anchors={anchored}")
        wait_text(browser, row, "✓ Ed25519 valid", "the replaced key's tally inside its window and height")
        assert "did NOT verify" not in text_of(browser, "#verdict")
    finally:
        tallies.client.set(tallies.latest_key(ELECTION, "observer-2"), genuine.entry_id)


def fresh(browser: Any, url: str) -> None:
    """Load ``url`` anew: from the same page with another fragment, a browser only scrolls."""
    browser.get(url)
    browser.refresh()


DAMAGED = {
    "error": {"code": "store_damaged", "message": "ledger 'x' on replica-1: its records do not lead to its tree"}
}


def test_the_charity_page_says_failed_when_a_record_s_proof_does_not_verify(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str
) -> None:
    """Outsider45: a tampered inclusion proof showed only as its row's "✗ the proof does not lead
    to the root", the summary above keeping its balance and "checked here with the publisher's
    anchors". The page now says Verification FAILED, as vote.html does."""
    real = cluster.gateway_url("replica-1")

    def lie(path: str, body: Any) -> Any:
        if not path.startswith(f"/api/ledgers/{FUND}/proof/inclusion") or not body.get("proof"):
            return None
        first = bytes.fromhex(body["proof"][0])
        return {**body, "proof": [bytes([first[0] ^ 1]).hex() + first[1:].hex(), *body["proof"][1:]]}

    with Lying(real, lie) as lying:
        fresh(browser, f"{lying.url}charity.html?ledger={FUND}#anchors={anchors}")
        proven = wait_text(browser, "#proven", "Verification FAILED", "the page-level failure")
        assert "do NOT lead to the checkpoint" in proven, proven
        summary = wait_text(browser, "#summary", "Verification FAILED", "the summary's failure")
        assert browser.execute_script("return document.getElementById('summary').className") == "bad", summary


def test_the_pages_name_their_controls_announce_their_verdict_and_have_an_icon(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str
) -> None:
    """Outsider45: the pages' inputs had no accessible name, the verdict no live region for a
    screen reader, and every page logged a 404 for /favicon.ico."""
    gateway = cluster.gateway_url("replica-1")
    for page, verdict in (("vote", "verdict"), ("tally", "verdict"), ("charity", "summary"), ("dashboard", None)):
        fresh(browser, f"{gateway}{page}.html#anchors={anchors}")
        wait_until(lambda: browser.execute_script("return !!document.getElementById('anchors-file')"), WAIT, page)
        unnamed = browser.execute_script(
            "return Array.from(document.querySelectorAll('input, select'))"
            ".filter((e) => !e.getAttribute('aria-label') && !(e.labels && e.labels.length)).map((e) => e.id)"
        )
        assert unnamed == [], (page, unnamed)
        if verdict is not None:
            live = browser.execute_script(f"return document.getElementById('{verdict}').getAttribute('aria-live')")
            assert live == "polite", page
        icon = browser.execute_script("const l = document.querySelector('link[rel=icon]'); return l && l.href")
        assert icon and _status(icon) == 200, (page, icon)


def test_the_pages_say_what_failed_when_the_gateway_refuses_its_store_or_cannot_be_reached(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str
) -> None:
    """outsider32 R4: with replica-1's store damaged (the gateway answers 503 store_damaged) or
    ``#gateway=`` unreachable, tally.html and charity.html showed an empty table, no verdict and
    no message (an uncaught error in the console). Each page now says what failed, gives no
    verdict of agreement, and asks again: once the gateway answers, the verdict comes back. The
    dashboard says the store the gateway refuses beside the node's own "store: ok"."""
    real = cluster.gateway_url("replica-1")
    refusing = {"on": True}

    def answer(path: str) -> tuple[int, str, bytes]:
        if path.startswith("/api/events"):
            return 404, "application/json", b"{}"
        ours = path.startswith((f"/api/ledgers/{ELECTION}", f"/api/ledgers/{FUND}"))
        if refusing["on"] and ours:
            return 503, "application/json", json.dumps(DAMAGED).encode()
        if refusing["on"] and path == "/api/cluster":
            said = _json(real + "api/cluster")
            said["nodes"]["replica-1"]["gateway_store"] = DAMAGED["error"]["message"]
            return 200, "application/json", json.dumps(said).encode()
        return Lying.answer(real, lambda *_: None, path)

    server, url = serve(answer)
    script = "return document.getElementById(arguments[0]).className"
    try:
        for page, ledger, where, table in (
            ("tally", ELECTION, "#verdict", "#observers tbody"),
            ("charity", FUND, "#summary", "#funds tbody"),
        ):
            refusing["on"] = True
            fresh(browser, f"{url}{page}.html?ledger={ledger}#anchors={anchors}")
            said = wait_text(browser, where, "[store_damaged]", f"the {page} page saying the gateway's refusal")
            assert said.startswith("NOT verified: ") and "No verdict can be given" in said, said
            assert "agree" not in said.replace("agreement", "") and "Balance" not in said, said
            assert browser.execute_script(script, where[1:]) == "bad" and text_of(browser, table) == ""
            shot(browser, f"{page}-store-damaged")
            refusing["on"] = False  # repaired: the page asks again on its own
            wait_text(browser, where, "observer", f"the {page} page's verdict once the gateway answers again")
            assert "NOT verified" not in text_of(browser, where) and text_of(browser, table) != ""

        closed = serve(lambda path: (200, "text/plain", b""))
        closed[0].shutdown()
        closed[0].server_close()  # a port nothing listens on
        gone = urllib.parse.quote(closed[1], safe="")
        for page, where in (("tally", "#verdict"), ("charity", "#summary"), ("vote", "#verdict")):
            fresh(browser, f"{real}{page}.html#gateway={gone}&anchors={anchors}")
            said = wait_text(
                browser, where, "gateway unreachable", f"the {page} page saying the gateway is unreachable"
            )
            assert closed[1].rstrip("/") in said and "No verdict can be given" in said, said
            assert browser.execute_script(script, where[1:]) == "bad"

        refusing["on"] = True
        fresh(browser, f"{url}dashboard.html")
        said = wait_text(
            browser, "tr[data-node='replica-1']", "store DAMAGED", "the dashboard saying the refused store"
        )
        assert DAMAGED["error"]["message"] in said, said
        fresh(browser, f"{url}vote.html?eid={election.eids[2]}")
        said = wait_text(browser, "#verdict", "[store_damaged]", "the voter page saying the gateway's refusal")
        assert said.startswith("NOT verified: ") and "Verified" not in said, said
    finally:
        server.shutdown()
        server.server_close()


def test_a_charity_ledger_the_gateway_refuses_stays_in_the_menu_marked_refused_with_its_code_and_message(
    browser: Any, cluster: LocalCluster, anchors: str
) -> None:
    """outsider34 #4: /api/ledgers lists a damaged copy's ledger with `refused` and no type, and
    charity.html's menu dropped it without a word: a donor saw no sign the fund exists."""
    real = cluster.gateway_url("replica-1")

    def answer(path: str) -> tuple[int, str, bytes]:
        if path.startswith("/api/events"):
            return 404, "application/json", b"{}"
        if path.startswith(f"/api/ledgers/{FUND}"):
            return 503, "application/json", json.dumps(DAMAGED).encode()
        if path == "/api/ledgers":
            listed = _json(real + "api/ledgers")
            for entry in listed["ledgers"]:
                if entry["ledger"] == FUND:  # as the gateway lists a ledger it refuses (15.2)
                    entry.update(size=None, root=None, type=None, signed=False, refused=DAMAGED["error"])
            return 200, "application/json", json.dumps(listed).encode()
        return Lying.answer(real, lambda *_: None, path)

    server, url = serve(answer)
    options = "return Array.from(document.querySelectorAll('#ledger option'), (o) => o.value + ' ' + o.textContent)"
    try:
        fresh(browser, f"{url}charity.html#anchors={anchors}")
        offered = wait_until(
            lambda: [o for o in browser.execute_script(options) if o.startswith(f"{FUND} ")], WAIT, "the fund offered"
        )
        assert offered == [f"{FUND} {FUND}: REFUSED by this gateway: {DAMAGED['error']['message']} [store_damaged]"]
        fresh(browser, f"{url}charity.html?ledger={FUND}#anchors={anchors}")
        said = wait_text(browser, "#summary", "[store_damaged]", "the charity page saying the fund's refusal")
        assert said.startswith("NOT verified: ") and DAMAGED["error"]["message"] in said, said
    finally:
        server.shutdown()
        server.server_close()


def test_the_voter_page_says_records_no_witnessed_checkpoint_covers_yet_are_pending_not_failed(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str
) -> None:
    """outsider32: with 3 of 5 witnesses down, records no majority-cosigned checkpoint covers
    yet were served without a receipt (15.2) and vote.html said "Verification FAILED": pending,
    not a failed proof. A voter with some records covered sees them verified and the rest pending."""
    eid = election.eids[6]
    good = receipt(cluster, eid)
    assert len(good["records"]) >= 2, good  # a registration and a cast
    kept = {"receipts": 0}

    def uncovered(path: str, body: Any) -> Any:
        if not path.startswith(f"/api/ledgers/{ELECTION}/voters/"):
            return None
        records = [
            dict(r, receipt=r["receipt"] if i < kept["receipts"] else None) for i, r in enumerate(body["records"])
        ]
        return dict(body, records=records)

    with Lying(cluster.gateway_url("replica-1"), uncovered) as lying:
        fresh(browser, f"{lying.url}vote.html?eid={eid}#anchors={anchors}")
        n = len(good["records"])
        said = wait_text(browser, "#verdict", "Pending", "the uncovered records said pending")
        assert f"Pending: {n} record(s) of {eid}" in said and "not yet covered by a witnessed checkpoint" in said, said
        assert (
            "FAILED" not in said
            and browser.execute_script("return document.getElementById('verdict').className") == "warn"
        )
        assert text_of(browser, "#checks").count("not yet covered by a witnessed checkpoint (pending)") == n

        kept["receipts"] = 1
        fresh(browser, f"{lying.url}vote.html?eid={eid}#anchors={anchors}")
        said = wait_text(browser, "#verdict", "Verified: 1 records", "one record verified, the others pending")
        assert f"{n - 1} more record(s) not yet covered by a witnessed checkpoint (pending)" in said, said
        assert browser.execute_script("return document.getElementById('verdict').className") == "warn"


def test_the_dashboard_checks_the_admin_ledger_s_checkpoint_with_the_anchors_admin_key(
    browser: Any, cluster: LocalCluster, election: Election, anchors: str
) -> None:
    """outsider32 P2: the admin ledger's row said "pins no checkpoint key" (nothing public proved
    it). Its checkpoint is now served and checked here with the anchors' admin line's key."""
    admin = next(
        line.split(" ", 1)[1]
        for line in base64.urlsafe_b64decode(anchors + "=" * (-len(anchors) % 4)).decode().splitlines()
        if line.startswith("admin ")
    )
    fresh(browser, f"{cluster.gateway_url('replica-1')}dashboard.html#anchors={anchors}")
    row = wait_text(browser, "tr[data-ledger='admin']", "✓ ", "the admin ledger's checkpoint checked with the anchors")
    assert f"✓ {admin.split('+', 1)[0]}" in row and "pins no checkpoint key" not in row, row


def test_the_pages_count_no_outside_witness_toward_an_epoch_from_2(browser: Any) -> None:
    """Outsider o24 F0: an outside witness (generic tlog-witness software, 13.9) holds no records
    and applies none of 10.9, so its line never makes a checkpoint of an epoch from 2 count
    (13.5 step 3), only toward the outside quorum; a cluster witness's does."""
    with scripts_page() as page:
        browser.get(page)
        got = browser.execute_script(
            """
const v = window.vledger;
const key = (name, byte) => ({ name, publicKey: new Uint8Array(32).fill(byte) });
const keys = { witnesses: [key("town/witness/r1", 1), key("ow.example/w1", 2)],
               outside: { names: new Set(["ow.example/w1"]), quorum: 1 } };
const seen = (names) => ({ cosigned: names.map((name) => ({ name, ok: true })) });
const judge = (names) => {
  try { v.witnessedEnough(seen(names), keys, true); return "counted"; } catch (e) { return e.message; }
};
return [judge(["ow.example/w1"]), judge(["town/witness/r1", "ow.example/w1"])];
"""
        )
    outside_only, both = got
    assert "no cluster witness cosigned" in outside_only and "[no_quorum]" in outside_only
    assert both == "counted"
