"""`vledger repl forget W` deletes W's own open hash, and with it the evidence only
an operator closes that W raised itself. An `equivocation` alert's `node` is the witness that
holds the evidence (PROTOCOL 10.5), so it lives in the witness's own hash, under `W|<ledger>|
equivocation`: forgetting the witness that caught its home equivocating closed that alert with
no operator's resolution noted, and `vledger alerts`/`status` then show nothing open. PROTOCOL
10.10 says a forget closes none of those ("a forget is no resolve of it")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.redis_server import RedisServer
from vledger.broker.replication import Alert, ReplicationLedger
from vledger.tests.unit.tools.test_repl_commands import ZAKAT, run, write_config
from vledger.tools.repl_commands import EXIT_OK

REMOVED = "replica-4"


@pytest.fixture
def config(tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("REDIS_URL", raising=False)
    return write_config(tmp_path, redis_server.url)


def test_forgetting_a_witness_keeps_the_evidence_it_raised_itself_open(
    capsys: pytest.CaptureFixture[str], config: Path, redis_client: Any
) -> None:
    witness = ReplicationLedger(redis_client, node=REMOVED)
    witness.alert(Alert(REMOVED, ZAKAT, 3, "equivocation", "two roots at 3", source="ingest-1"))
    witness.alert(Alert(REMOVED, ZAKAT, 5, "lagging", "behind"))  # its own state: may go
    code, out, err = run(capsys, "repl", "forget", REMOVED, "--config", config, "--json")
    assert code == EXIT_OK, err
    open_keys = [e["key"] for e in ReplicationLedger(redis_client).open_entries()]
    assert f"{REMOVED}|{ZAKAT}|equivocation" in open_keys, (open_keys, json.loads(out))
