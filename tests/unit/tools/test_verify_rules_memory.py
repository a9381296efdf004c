"""`vledger verify`'s rules keep every record they flag, each Violation holding its
raised RuleError with its traceback (the replay's frames and their records): about 4 KB a
flagged record, unbounded. Measured: a store of 100,000 records a forging home signed, each
breaking a rule, took verify to 472 MB (63 MB with --no-rules), and 12.4 s against 1.4 s; 1M
take some 4 GB, 10M exhaust the host. An observer keeps counts alone; verify prints the first
20 and lists the first 1,000 (PROTOCOL 11.5), so keeping more serves nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vledger.node.ledger import LedgerRules
from vledger.node.record import Entry
from vledger.node.store import ChainStore
from vledger.tests.unit.tools.test_verify_rules import AUTHOR, BEFORE, LIMITS, entry
from vledger.tests.unit.verifier.chains import write_entries
from vledger.tools import cli
from vledger.tools.report import LISTED_VIOLATIONS
from vledger.tools.verification import verify_store

FLAGGED = LISTED_VIOLATIONS + 200


def forged(directory: Path) -> Path:
    """A resources ledger whose every record after the genesis is an issue by no issuer."""
    with ChainStore(directory, origin="node-1") as store:
        rules = LedgerRules(("issue", "transfer"), 0, {"type": "resources", "unit": "credits", "issuers": [AUTHOR]})
        store.create_ledger(Entry.prepare(rules.genesis_content("credits", AUTHOR, "credits-0", BEFORE), 0, LIMITS))
        serial = [0]
        issue = {"account": "ana", "amount": 5}
        write_entries(store, [entry("credits", "issue", issue, "mallory", serial=serial) for _ in range(FLAGGED)])
    return directory


def test_verify_keeps_a_bounded_number_of_flagged_records_and_counts_them_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = forged(tmp_path / "s")
    rules = verify_store(store, None, LIMITS, workers=1, rules=True).reports[0].rules
    assert rules is not None
    assert len(rules.violations) <= LISTED_VIOLATIONS, len(rules.violations)
    assert all(v.error.__traceback__ is None for v in rules.violations)  # no frames kept alive
    assert cli.main(["verify", str(store), "--json"]) == 1
    listed = json.loads(capsys.readouterr().out)["ledgers"][0]["rules"]
    assert (listed["flagged"], len(listed["violations"])) == (FLAGGED, LISTED_VIOLATIONS)
    assert listed["tally"]["flagged"] == FLAGGED
