"""r26's `vledger repl forget W` reads W's own open hash (HKEYS) to keep its operator-only alerts,
and decodes every field name as UTF-8 (tools/repl_forget.py _text). The hash is W's own Redis
user's to write, and W is being taken out (often because it misbehaves): one field that is no
UTF-8 makes the command die with a UnicodeDecodeError traceback, nothing deleted and no
`forget_refused`; an operator cannot forget W with the tool until they HDEL that field by hand.
Before r26 the hash was deleted unread. A field no node raises is no alert: it goes."""

from __future__ import annotations

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


def test_forgetting_a_witness_whose_hash_holds_a_field_of_no_text(
    capsys: pytest.CaptureFixture[str], config: Path, redis_client: Any
) -> None:
    witness = ReplicationLedger(redis_client, node=REMOVED)
    witness.alert(Alert(REMOVED, ZAKAT, 3, "equivocation", "two roots at 3", source="ingest-1"))
    redis_client.hset(witness.open_alerts_key_of(REMOVED), b"\xff\xfe|x|lagging", b"{}")
    code, _out, err = run(capsys, "repl", "forget", REMOVED, "--config", config, "--json")
    assert code == EXIT_OK, err
    open_keys = [e["key"] for e in ReplicationLedger(redis_client).open_entries()]
    assert f"{REMOVED}|{ZAKAT}|equivocation" in open_keys
    assert redis_client.hlen(witness.open_alerts_key_of(REMOVED)) == 1
