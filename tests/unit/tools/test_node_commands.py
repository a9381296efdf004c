"""``vledger keygen --cluster`` (ensure_cluster_keys): every key the cluster needs, made once and kept."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.redis_server import RedisServer
from vledger.broker.replication import ReplicationLedger
from vledger.config.cluster import load_cluster
from vledger.tools import cli
from vledger.tools.node_commands import ensure_cluster_keys

CONFIG = """
[cluster]
name = "test"
default_home = "ingest-1"

[nodes.ingest-1]
role = "ingest"
port = 7101
pub_port = 7201

[nodes.replica-1]
role = "replica"
port = 7111

[nodes.observer-1]
role = "observer"
port = 7121

[nodes.verifier-1]
role = "verifier"
port = 7131
"""


def test_every_home_and_witness_gets_an_ed25519_key_and_a_second_run_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(CONFIG, encoding="utf-8")
    config = load_cluster(path)
    made, kept = ensure_cluster_keys(config)
    signing = sorted(entry["name"] for entry in made if entry["name"].endswith(".sign"))
    # Homes sign checkpoints; replicas and observers cosign them (PROTOCOL 10.7); a verifier signs nothing.
    assert signing == ["ingest-1.sign", "observer-1.sign", "replica-1.sign"] and kept == []
    for name in ("ingest-1", "observer-1", "replica-1"):
        assert stat.S_IMODE((config.keys_dir / f"{name}.sign").stat().st_mode) == 0o600
        assert (config.keys_dir / f"{name}.sign.pub").is_file()
    assert not (config.keys_dir / "verifier-1.sign").exists()
    again_made, again_kept = ensure_cluster_keys(config)
    assert again_made == [] and {e["public"] for e in again_kept} >= {e["public"] for e in made}


def redis_config(directory: Path, redis_url: str) -> Path:
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
    config = str(redis_config(tmp_path, redis_server.url))
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
