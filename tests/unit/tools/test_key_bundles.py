"""``vledger keygen --cluster FILE --bundles DIR``: a folder per process, its own secrets and no other's.

tests/integration/test_key_bundles.py starts nodes and the gateway from these folders alone.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from vledger.broker import redis_acl
from vledger.config.cluster import load_cluster
from vledger.node.errors import UsageError
from vledger.tools import cli
from vledger.tools.key_bundles import FUNCTIONS, GATEWAY, REDIS, SENTINEL, bundle, bundle_names, write_bundles
from vledger.tools.node_commands import ensure_cluster_keys

CONFIG = """
[cluster]
name = "test"
keys = "keys"
redis = "{redis}"
default_home = "ingest-1"

[redis]
passwords = "keys/redis"

[nodes.ingest-1]
role = "ingest"
port = 7101
pub_port = 7201

[nodes.replica-1]
role = "replica"
port = 7111

[nodes.replica-10]
role = "replica"
port = 7112

[nodes.observer-1]
role = "observer"
port = 7121

[nodes.verifier-1]
role = "verifier"
port = 7131
"""
SENTINELS = "sentinel://127.0.0.1:26379/vledger/0"
SECRET_SUFFIXES = (".key_secret", ".sign", ".seal", ".redis_password", ".acl")


def cluster_file(directory: Path, redis: str = SENTINELS) -> Path:
    path = directory / "cluster.toml"
    path.write_text(CONFIG.format(redis=redis), encoding="utf-8")
    return path


def secrets_in(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.name.endswith(SECRET_SUFFIXES)}


def test_each_node_gets_every_public_file_and_its_own_secrets_only(tmp_path: Path) -> None:
    config = load_cluster(cluster_file(tmp_path))
    ensure_cluster_keys(config)
    out = tmp_path / "bundles"
    written = write_bundles(config, out)
    assert list(written) == [*sorted(config.nodes), GATEWAY, REDIS, SENTINEL, FUNCTIONS] == bundle_names(config)
    assert all(done.extra == [] for done in written.values())
    publics = {p.name for p in config.keys_dir.iterdir() if p.name.endswith((".key", ".sign.pub"))}
    assert "admin.key" in publics and "replica-10.sign.pub" in publics
    expected = {
        "ingest-1": {"ingest-1.key_secret", "ingest-1.sign", "second-factor.seal"},
        "replica-1": {"replica-1.key_secret", "replica-1.sign"},  # not replica-10's, whose name it begins
        "replica-10": {"replica-10.key_secret", "replica-10.sign"},
        "observer-1": {"observer-1.key_secret", "observer-1.sign"},
        "verifier-1": {"verifier-1.key_secret"},  # it signs nothing
    }
    for name, own in expected.items():
        folder = out / name
        user = redis_acl.user_name(config.node(name).role, name)
        assert secrets_in(folder) == own | {f"redis/{user}.redis_password"}, name
        assert {p.name for p in folder.iterdir() if p.is_file()} - own == publics, name
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        for path in folder.rglob("*"):
            if path.is_file():
                private = path.name.endswith(SECRET_SUFFIXES)
                assert stat.S_IMODE(path.stat().st_mode) == (0o600 if private else 0o644), path
                assert path.read_bytes() == (config.keys_dir / path.relative_to(folder)).read_bytes()
    # The public gateway: public files and its Redis user's password, no secret key at all.
    assert secrets_in(out / GATEWAY) == {"redis/vledger-gateway.redis_password"}
    # Redis: the ACL file and the password its servers sign in to each other with; the Sentinels theirs.
    assert secrets_in(out / REDIS) == {"redis.acl", "vledger-replication.redis_password"}
    assert secrets_in(out / SENTINEL) == {"vledger-sentinel.redis_password"}
    # The functions loader: its password alone, where [redis] passwords puts it (no public file either).
    assert {p.relative_to(out / FUNCTIONS).as_posix() for p in (out / FUNCTIONS).rglob("*") if p.is_file()} == {
        "redis/vledger-functions.redis_password"
    }
    # admin.key_secret and the admin's Redis password stay in the operator's key directory.
    everywhere = {p.name for p in out.rglob("*")}
    assert "admin.key_secret" not in everywhere and "vledger-admin.redis_password" not in everywhere


def test_the_acl_file_of_a_sentinel_set_has_its_servers_users_and_a_single_server_has_none(tmp_path: Path) -> None:
    replicated = load_cluster(cluster_file(tmp_path))
    ensure_cluster_keys(replicated)
    text = (replicated.keys_dir / "redis" / redis_acl.ACL_FILE).read_text()
    users = [line.split()[1] for line in text.splitlines()]
    assert users[0] == "default" and users[-2:] == [redis_acl.REPLICATION_USER, redis_acl.SENTINEL_USER]
    assert "nopass" not in text
    replication = next(line for line in text.splitlines() if line.split()[1] == redis_acl.REPLICATION_USER)
    assert "~" not in replication and "+psync" in replication.split()  # no key: it only replicates
    (tmp_path / "one").mkdir()
    single = load_cluster(cluster_file(tmp_path / "one", "redis://127.0.0.1:6379/0"))
    ensure_cluster_keys(single)
    text = (single.keys_dir / "redis" / redis_acl.ACL_FILE).read_text()
    assert redis_acl.REPLICATION_USER not in text and redis_acl.SENTINEL_USER not in text
    assert bundle_names(single)[-3:] == [GATEWAY, REDIS, FUNCTIONS]


def test_a_second_run_brings_the_folders_up_to_date_and_removes_nothing(tmp_path: Path) -> None:
    config = load_cluster(cluster_file(tmp_path))
    ensure_cluster_keys(config)
    out = tmp_path / "bundles"
    write_bundles(config, out)
    # A key rotated since (its next generation beside the first), and a checkpoint key that a home
    # running from its folder wrote there (ledger rotate-key): not in the key directory, not lost.
    (config.keys_dir / "replica-1@1.sign").write_bytes((config.keys_dir / "replica-1.sign").read_bytes())
    (config.keys_dir / "replica-1@1.sign").chmod(0o600)
    (out / "ingest-1" / "ingest-1.ckpt-0123456789abcdef.sign").write_text("a rotated checkpoint key")
    written = write_bundles(config, out)
    assert "replica-1@1.sign" in secrets_in(out / "replica-1") and "replica-1@1.sign" in written["replica-1"].files
    assert "replica-1@1.sign" not in secrets_in(out / "replica-10")
    assert (out / "ingest-1" / "ingest-1.ckpt-0123456789abcdef.sign").read_text() == "a rotated checkpoint key"
    assert written["ingest-1"].extra == ["ingest-1.ckpt-0123456789abcdef.sign"]
    assert [name for name, done in written.items() if done.extra] == ["ingest-1"]


def test_passwords_outside_the_key_directory_and_unknown_folders_are_refused(tmp_path: Path) -> None:
    path = cluster_file(tmp_path)
    path.write_text(path.read_text().replace('passwords = "keys/redis"', 'passwords = "redis"'))
    config = load_cluster(path)
    ensure_cluster_keys(config)
    with pytest.raises(UsageError, match="not inside"):
        bundle(config, "replica-1")
    with pytest.raises(UsageError, match="neither a node"):
        bundle(config, "replica-9")


def test_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = cluster_file(tmp_path)
    out = tmp_path / "bundles"
    assert cli.main(["keygen", "--cluster", str(path), "--bundles", str(out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["bundles"]["gateway"]["directory"] == str(out / "gateway")
    assert "redis/vledger-gateway.redis_password" in shown["bundles"]["gateway"]["files"]
    assert cli.main(["keygen", "--bundles", str(out), "replica-9"]) == 2
    assert "--bundles needs --cluster" in capsys.readouterr().err


def test_keygen_labels_redis_passwords_and_the_acl_file_secret_never_public(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Outsider o18 F8: "public Redis password (0600)" on a secret.
    assert cli.main(["keygen", "--cluster", str(cluster_file(tmp_path, "redis://127.0.0.1:6379/0"))]) == 0
    lines = capsys.readouterr().out.splitlines()
    redis_lines = [
        line for line in lines if ".redis_password" in line or line.rstrip().endswith("(0600)") or ".acl" in line
    ]
    assert redis_lines and all("public" not in line and "secret" in line for line in redis_lines), lines
    assert all(" public " in line for line in lines if line.split()[1].endswith(".key")), lines
    assert all(line.startswith(("created ", "kept ")) for line in lines), lines
