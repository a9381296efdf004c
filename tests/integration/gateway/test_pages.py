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
import json
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.redis_server import RedisServer
from vledger.config.settings import Limits
from vledger.node.ledger import LedgerRules
from vledger.node.record import Entry
from vledger.node.rules.votes import ELECTRONIC_ID_BYTES, ELECTRONIC_ID_PREFIX
from vledger.node.sealed import new_seal_key, seal
from vledger.tests.integration.cluster import ADMIN, LocalCluster, entry, now_ms, wait_until
from vledger.tests.unit.verifier.chains import Election, plan_election
from vledger.verifier.gateway import amount_text

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
        redis_server.url, nodes=1, replicas=1, observers=2, gateways=["replica-1"], observing={"tally_interval_ms": 200}
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
    rules = LedgerRules(("donation", "disbursement"), 0, {"type": "charity", "currency": "SAR", "funds": ["zakat"]})
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
    shot(browser, "vote")

    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(good))
    browser.get(f"{cluster.gateway_url('replica-1')}vote.html")
    browser.find_element(By.ID, "file").send_keys(str(path))
    wait_text(
        browser, "#verdict", f"Verified: {len(good['records'])} records of {eid} (receipt receipt.json)", "the receipt"
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


def _rows(browser: Any) -> list[str]:
    script = "return Array.from(document.querySelectorAll('#observers td.counts'), (e) => e.innerText)"
    return list(browser.execute_script(script)) or [""]


def _total(counts: str) -> int:
    return sum(int(part.rsplit(" ", 1)[1]) for part in counts.split(", ") if part)


def test_the_charity_page_shows_balances_in_currency_units(
    browser: Any, cluster: LocalCluster, election: Election
) -> None:
    browser.get(f"{cluster.gateway_url('replica-1')}charity.html?ledger={FUND}")
    wait_text(browser, "#funds td.balance", "2225.50 SAR", "the fund's balance")
    latest = wait_text(browser, "#latest", "family-07", "the latest records")
    assert "2500.00" in latest and "125.50" in latest and "400.00" in latest  # as the funds' strings
    shot(browser, "charity")


def test_amounts_are_shown_from_their_digits_as_the_gateway_writes_them(browser: Any) -> None:
    """The pages' amountText (verifier/web/static/vledger.js) gives the gateway's amount_text
    for any amount: 2**53 + 1 minor units divided as a float would show 90071992547409.92."""
    script = (REPO / "verifier" / "web" / "static" / "vledger.js").read_text(encoding="utf-8")
    amounts = [0, 5, 99, 2025, -2025, -1, 40_000, 2**53 + 1, 2**64 - 1]
    browser.get("about:blank")
    shown = browser.execute_script(
        script + "\nreturn arguments[0].map((a) => [window.vledger.amountText(BigInt(a)),"
        " Math.abs(Number(a)) <= Number.MAX_SAFE_INTEGER ? window.vledger.amountText(Number(a)) : null]);",
        [str(a) for a in amounts],
    )
    assert [big for big, _ in shown] == [amount_text(a) for a in amounts]
    assert [small for _, small in shown][:7] == [amount_text(a) for a in amounts[:7]]
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
