"""`vledger verify` judges a copy by the observers' rules: what they flag fails it, with their code.

The stores here have no rules engine (ChainStore alone): a record that breaks a rule gets on the
chain signed and linked, as a forging home's would, and only the rules can tell it apart.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from vledger.config.settings import Limits
from vledger.node.key_rotation import ROTATION_KIND, rotation_payload
from vledger.node.ledger import LedgerRules
from vledger.node.note import ALG_ED25519, SignerKey
from vledger.node.record import Content, Entry
from vledger.node.rules.admin import ADMIN_LEDGER, admin_genesis_rules
from vledger.node.sealed import new_seal_key, seal
from vledger.node.store import ChainStore
from vledger.tests.unit.verifier.chains import AUTHOR, Election, plan_election, write_election, write_entries
from vledger.tools import cli
from vledger.tools.verification import Verification, verify_path, verify_store
from vledger.verifier.tally import TallyKeeper

LIMITS = Limits()
HOUR_MS = 3_600_000
# Every record accepted an hour ago: past the grant_wait_ms an observer waits for a grant on its way.
BEFORE = time.time_ns() // 1_000_000 - HOUR_MS
SIGNER = SignerKey("local/keys", ALG_ED25519, bytes(range(32)))
ROOT = {"account": "root", "op": "import", "role": "admin", "enabled": True, "keys": []}


def clock_from(start: int) -> Callable[[], int]:
    ticks = iter(range(start, start + HOUR_MS))
    return lambda: next(ticks)


def entry(ledger: str, kind: str, payload: dict[str, Any], author: str = AUTHOR, *, serial: list[int]) -> Entry:
    serial[0] += 1
    return Entry.prepare(Content(ledger, kind, payload, author, f"{ledger}-{serial[0]}", BEFORE), 0, LIMITS)


def admin_ledger(store: ChainStore, grants: list[tuple[str, str, str]], serial: list[int]) -> None:
    """An admin ledger: root an enabled admin, then each (ledger, kind, account) grant."""
    store.create_ledger(
        Entry.prepare(admin_genesis_rules().genesis_content(ADMIN_LEDGER, "root", "admin-0", BEFORE), 0, LIMITS)
    )
    records = [entry(ADMIN_LEDGER, "account", {**ROOT, "via": ""}, "root", serial=serial)]
    for ledger, kind, account in grants:
        payload = {"ledger": ledger, "kind": kind, "account": account, "via": ""}
        records.append(entry(ADMIN_LEDGER, "grant", payload, "root", serial=serial))
    write_entries(store, records)


def resources(store: ChainStore, forged: bool, serial: list[int]) -> None:
    rules = LedgerRules(("issue", "transfer"), 0, {"type": "resources", "unit": "credits", "issuers": [AUTHOR]})
    store.create_ledger(Entry.prepare(rules.genesis_content("credits", AUTHOR, "credits-0", BEFORE), 0, LIMITS))
    records = [
        entry("credits", "issue", {"account": "ana", "amount": 100}, serial=serial),
        entry("credits", "transfer", {"from": "ana", "to": "ben", "amount": 30}, "ana", serial=serial),
    ]
    if forged:
        records += [
            entry("credits", "issue", {"account": "ana", "amount": 5}, "mallory", serial=serial),  # not_issuer
            entry("credits", "transfer", {"from": "ben", "to": "ana", "amount": 31}, "ben", serial=serial),
        ]
    write_entries(store, records)


def charity(store: ChainStore, forged: bool, serial: list[int]) -> None:
    rules = LedgerRules(("disbursement", "donation"), 0, {"type": "charity", "currency": "SAR", "funds": ["zakat"]})
    store.create_ledger(Entry.prepare(rules.genesis_content("relief", AUTHOR, "relief-0", BEFORE), 0, LIMITS))
    donor = seal(new_seal_key(), "Zoë", "gifts")
    gift = {"donor": donor, "fund": "zakat", "amount": 500, "source": "bank", "purpose": ""}
    records = [
        entry("relief", "donation", gift, serial=serial),
        entry("relief", "disbursement", {"fund": "zakat", "target": "t", "amount": 200, "purpose": ""}, serial=serial),
    ]
    if forged:
        records += [
            entry("relief", "donation", {**gift, "fund": "yachts"}, serial=serial),  # unknown_fund
            entry(
                "relief", "disbursement", {"fund": "zakat", "target": "t", "amount": 301, "purpose": ""}, serial=serial
            ),
        ]
    write_entries(store, records)


def honest_store(directory: Path) -> tuple[Path, Election]:
    """An admin ledger granting the clerk registrations, an election, a resources and a charity ledger."""
    serial = [0]
    election = plan_election("poll", 40, BEFORE)
    with ChainStore(directory, origin="ingest-1", clock=clock_from(BEFORE)) as store:
        admin_ledger(store, [("poll", "register", AUTHOR)], serial)
        write_election(store, election, BEFORE)
        resources(store, False, serial)
        charity(store, False, serial)
    return directory, election


def forged_store(directory: Path) -> tuple[Path, Election]:
    """The honest store's ledgers with records breaking each rule family, and a grant and admin
    authors broken: a grant mallory wrote herself on the admin ledger, her registration without
    a grant, a checkpoint key rotation by no admin."""
    serial = [0]
    election = plan_election("poll", 40, BEFORE, breakers=True)
    with ChainStore(directory, origin="ingest-1", clock=clock_from(BEFORE)) as store:
        admin_ledger(store, [("poll", "register", AUTHOR)], serial)
        own = {"ledger": "poll", "kind": "register", "account": "mallory", "via": ""}
        write_entries(store, [entry(ADMIN_LEDGER, "grant", own, "mallory", serial=serial)])
        write_election(store, election, BEFORE)
        write_entries(store, [entry("poll", "register", {"voter_id": "sneaky"}, "mallory", serial=serial)])
        resources(store, True, serial)
        charity(store, True, serial)
        keys = LedgerRules((ROTATION_KIND, "note"), 0, {"checkpoint_key": SIGNER.verifier().encode()})
        store.create_ledger(Entry.prepare(keys.genesis_content("keys", "root", "keys-0", BEFORE), 0, LIMITS))
        new = SignerKey("local/keys", ALG_ED25519, bytes(range(1, 33)))
        rotation = rotation_payload(SIGNER, new.verifier())
        write_entries(store, [entry("keys", ROTATION_KIND, rotation, "w9", serial=serial)])
    return directory, election


def observe(directory: Path) -> tuple[TallyKeeper, dict[str, list[tuple[int, str]]]]:
    """An observer's keeper fed the store, admin ledger first (verifier/observer.py's order), and what it flags."""
    keeper = TallyKeeper()
    flags: dict[str, list[tuple[int, str]]] = {}
    with ChainStore(directory, origin="reader") as store:
        ledgers = sorted(store.ledgers(), key=lambda ledger: ledger != ADMIN_LEDGER)
        for ledger in ledgers:
            for record in store.range(ledger):
                violation = keeper.feed(record)
                if violation is not None:
                    flags.setdefault(ledger, []).append((violation.height, violation.error.code))
    return keeper, flags


def observers_flags(directory: Path) -> dict[str, list[tuple[int, str]]]:
    return observe(directory)[1]


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().out


def verify_json(capsys: pytest.CaptureFixture[str], directory: Path) -> tuple[int, dict[str, Any]]:
    code, out = run(capsys, "verify", directory, "--json")
    return code, json.loads(out)


def test_a_forged_store_fails_verify_with_each_code_the_observers_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, election = forged_store(tmp_path / "s")
    code, value = verify_json(capsys, directory)
    assert code == 1 and value["ok"] is False and value["rules"] == {"checked": True, "grants_judged": True}
    found = {
        entry["ledger"]: [(v["height"], v["code"]) for v in entry["rules"]["violations"]]
        for entry in value["ledgers"]
        if entry["rules"]["violations"]
    }
    assert found == observers_flags(directory)
    codes = {ledger: [code for _, code in flags] for ledger, flags in found.items()}
    assert codes == {
        "poll": [*election.breakers, "not_granted"],
        "credits": ["not_issuer", "insufficient_funds"],
        "relief": ["unknown_fund", "insufficient_funds"],
        "keys": ["not_admin_author"],
        "admin": ["not_admin_author"],
    }
    # Each ledger's chain verified: the rules alone fail it, its error the first record flagged.
    for entry in value["ledgers"]:
        assert entry["records"] > 0
        if entry["ledger"] in found:
            assert entry["ok"] is False and entry["error"]["code"] == codes[entry["ledger"]][0]
    code, text = run(capsys, "verify", directory)
    assert code == 1
    assert "credits: FAILED the rules: 2 records the observers flag and do not count" in text
    assert "keys: FAILED the rules" in text and "[not_admin_author]" in text
    assert "verification FAILED: 5 of 5 ledgers" in text


def test_an_export_of_the_forged_store_fails_alike(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory, _ = forged_store(tmp_path / "s")
    assert run(capsys, "export", directory, "-o", tmp_path / "e.jsonl")[0] == 0
    from_store = verify_path(directory, None, LIMITS)
    from_file = verify_path(tmp_path / "e.jsonl", None, LIMITS)
    assert not from_file.ok and from_file.grants_judged

    def flagged(result: Any) -> dict[str, list[tuple[int, str]]]:
        return {
            r.ledger: [(v.height, v.error.code) for v in r.rules.violations]
            for r in result.reports
            if r.rules and r.rules.violations
        }

    assert flagged(from_file) == flagged(from_store) == observers_flags(directory)
    # One ledger asked for: the file's admin ledger still judges its grants.
    [poll] = verify_path(tmp_path / "e.jsonl", "poll", LIMITS).reports
    [stored] = verify_path(directory, "poll", LIMITS).reports
    assert poll.rules is not None and stored.rules is not None
    assert poll.rules.violations[-1].error.code == stored.rules.violations[-1].error.code == "not_granted"


def test_an_honest_store_passes_and_states_each_tally_as_the_observers_count_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, election = honest_store(tmp_path / "s")
    code, value = verify_json(capsys, directory)
    assert code == 0 and value["ok"] is True, value
    tallies = {entry["ledger"]: entry["rules"]["tally"] for entry in value["ledgers"]}
    poll = tallies["poll"]
    assert poll["counts"] == dict(election.counts)  # the voters' stories, not the engine, say so
    assert (poll["registered"], poll["cast"], poll["withdrawn"]) == (
        election.registered,
        election.cast,
        election.withdrawn,
    )
    assert tallies["credits"]["balances"] == {"ana": 70, "ben": 30}
    # The hash an observer's signed snapshot states of the records it counted, recounted here alone.
    keeper, _ = observe(directory)
    [poll_entry] = [entry for entry in value["ledgers"] if entry["ledger"] == "poll"]
    assert poll_entry["rules"]["counted"] == keeper.snapshot("o", "poll", 0).counted.hex()
    assert tallies["relief"]["funds"]["zakat"]["balance"] == 300
    code, text = run(capsys, "verify", directory)
    assert code == 0 and "verified: OK (4 ledgers" in text
    assert f'poll: tally of its {len(election.entries) + 1} heights, as the observers count it: {{"cast": ' in text


def test_a_record_an_observer_still_waits_for_a_grant_for_is_not_flagged_yet(tmp_path: Path) -> None:
    """Accepted within grant_wait_ms, after the last admin record the copy holds: a grant accepted
    before it may be on its way, so the observers wait, not flag; verify says so and fails nothing."""
    serial = [0]
    now = time.time_ns() // 1_000_000
    with ChainStore(tmp_path / "s", origin="ingest-1") as store:  # accepted now
        admin_ledger(store, [("poll", "register", AUTHOR)], serial)
        write_election(store, plan_election("poll", 3, now), now)
        write_entries(store, [entry("poll", "register", {"voter_id": "late"}, "mallory", serial=serial)])
        size = store.size("poll")
    result = verify_path(tmp_path / "s", None, LIMITS)
    [poll] = [r for r in result.reports if r.ledger == "poll"]
    assert result.ok and poll.rules is not None
    assert (poll.rules.waiting, poll.rules.judged, poll.rules.violations) == (size - 1, size - 1, [])


def test_no_rules_passes_what_the_observers_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory, _ = forged_store(tmp_path / "s")
    code, text = run(capsys, "verify", directory, "--no-rules")
    assert code == 0 and "rules NOT judged (--no-rules)" in text


def test_a_copy_without_an_admin_ledger_says_grants_were_not_judged(tmp_path: Path) -> None:
    serial = [0]
    with ChainStore(tmp_path / "s", origin="ingest-1", clock=clock_from(BEFORE)) as store:
        resources(store, True, serial)
    result = verify_path(tmp_path / "s", None, LIMITS)
    assert result.rules and not result.grants_judged and not result.ok


def verdicts(result: Verification) -> dict[str, Any]:
    return {
        r.ledger: None
        if r.rules is None
        else (
            r.rules.judged,
            [(v.height, v.error.code, v.error.reason) for v in r.rules.violations],
            r.rules.waiting,
            r.rules.tally,
        )
        for r in result.reports
    }


def test_rules_judged_beside_the_chunks_are_those_judged_alone_and_a_broken_chain_is_not_judged(
    tmp_path: Path,
) -> None:
    """With workers, the rules judge every record the store holds on one of them while the chunks
    are checked: taken only when every ledger verified whole; else the ledgers that did are judged
    alone (the worker judged the broken one's records too)."""
    directory, _ = forged_store(tmp_path / "s")
    alone = verify_store(directory, None, LIMITS, workers=1, rules=True)
    with ThreadPoolExecutor(2) as pool:
        beside = verify_store(directory, None, LIMITS, workers=2, chunk=8, executor=pool, rules=True)
        assert verdicts(beside) == verdicts(alone) and beside.grants_judged and not beside.ok
        # A changed byte in the poll's record 30: the chain's failure is its verdict.
        with sqlite3.connect(directory / "chain.sqlite3") as conn:
            conn.execute(
                "UPDATE records SET data = CAST(substr(data, 1, 40) || X'00' || substr(data, 42) AS BLOB) "
                "WHERE ledger = 'poll' AND height = 30"
            )
        conn.close()
        broken = verify_store(directory, None, LIMITS, workers=2, chunk=8, executor=pool, rules=True)
    [poll] = [r for r in broken.reports if r.ledger == "poll"]
    assert poll.error is not None and poll.error_height == 30
    assert poll.rules is None
    assert {k: v for k, v in verdicts(broken).items() if k != "poll"} == {
        k: v for k, v in verdicts(alone).items() if k != "poll"
    }
