"""``vledger keygen --cluster`` (ensure_cluster_keys): every key the cluster needs, made once and kept."""

from __future__ import annotations

import stat
from pathlib import Path

from vledger.config.cluster import load_cluster
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
