"""`vledger admin migrate-keys`: the untagged layout moved over on a real Redis, what it says, its exit code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.redis_server import RedisServer
from vledger.broker.replication import ReplicationLedger
from vledger.tools import cli


def write_config(directory: Path, redis_url: str) -> Path:
    path = directory / "cluster.toml"
    path.write_text(
        f'[cluster]\nredis = "{redis_url}"\ndefault_home = "ingest-1"\n'
        '[nodes.ingest-1]\nrole = "ingest"\nport = 7390\npub_port = 7392\n'
    )
    return path


def test_migrate_keys_moves_reports_and_exits_1_on_what_it_kept(
    tmp_path: Path,
    redis_server: RedisServer,
    redis_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    config = str(write_config(tmp_path, redis_server.url))
    redis_client.xadd("vledger:chain:votes", {"record": b"r0", "origin": "ingest-1"}, id="0-1")
    redis_client.hset("vledger:ledgers", "votes", "ingest-1")
    assert cli.main(["admin", "migrate-keys", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "moved vledger:chain:votes -> vledger:{votes}:chain" in out
    assert [r.data for r in ReplicationLedger(redis_client).read("votes", 0, 5)] == [b"r0"]

    assert cli.main(["admin", "migrate-keys", "--config", config]) == 0  # again: nothing to do
    assert "nothing to do" in capsys.readouterr().out

    redis_client.xadd("vledger:alerts", {"what": "fork"})  # an old stream whose new name holds another
    redis_client.xadd("vledger:{alerts}", {"what": "bad_link"})
    assert cli.main(["admin", "migrate-keys", "--config", config, "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {"kept": {"vledger:alerts": "vledger:{alerts}"}, "moved": {}}
    assert redis_client.xlen("vledger:alerts") == 1  # kept, not lost
