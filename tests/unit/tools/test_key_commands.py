"""``vledger key rotate``: which key files it makes for each node, what it sends, what it refuses."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from vledger.broker.keys import generate, load_public
from vledger.broker.signing import generate_signing_key, load_verify_key
from vledger.client.session import Session
from vledger.config.cluster import ClusterConfig, load_cluster
from vledger.node.errors import KeyExistsError, NodeUnavailableError, RemoteError, UsageError
from vledger.tools.key_commands import cmd_key_rotate

NODES = """
[cluster]
keys = "keys"
data = "data"
default_home = "ingest-1"
[nodes.ingest-1]
role = "ingest"
port = 7390
pub_port = 7391
rotation_port = 7392
feed_rotation_port = 7393
[nodes.replica-1]
role = "replica"
port = 7394
rotation_port = 7395
[nodes.relay-1]
role = "replica"
port = 7396
pub_port = 7397
rotation_port = 7398
[nodes.replica-2]
role = "replica"
port = 7399
[nodes.verifier-1]
role = "verifier"
port = 7400
rotation_port = 7401
[nodes.verifier-2]
role = "verifier"
port = 7402
"""


class Admin:
    """The home of admin as the command sees it: node.rotate answered (or refused, or not
    answered), and the admin ledger's key_rotation records (``recorded``: the nodes they name)."""

    def __init__(self, config: ClusterConfig, refuse: bool = False, recorded: tuple[str, ...] = ()) -> None:
        self.config = config
        self.refuse = refuse
        self.silent = False  # records the rotation, but the answer is lost
        self.recorded = list(recorded)
        self.sent: list[dict[str, Any]] = []

    def call(self, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        assert cmd == "node.rotate"
        self.sent.append(args)
        if self.refuse:
            raise RemoteError("key_in_use", "the key is already in use", {})
        self.recorded.append(args["node"])
        if self.silent:
            raise NodeUnavailableError("no answer within 5 s")
        return {"node": args["node"], "curve": args["curve"], "sign": args["sign"], "until": 1, "height": 3}

    def records(self, ledger: str) -> Iterator[Any]:
        assert ledger == "admin"
        if not self.recorded:
            raise RemoteError("no_such_ledger", "no ledger 'admin'", {})
        yield SimpleNamespace(content=SimpleNamespace(kind="genesis", payload={}))
        for node in self.recorded:
            yield SimpleNamespace(content=SimpleNamespace(kind="key_rotation", payload={"node": node}))


@pytest.fixture
def config(tmp_path: Path) -> ClusterConfig:
    path = tmp_path / "cluster.toml"
    path.write_text(NODES)
    loaded = load_cluster(path)
    for name, node in loaded.nodes.items():
        generate(loaded.keys_dir, name)
        if node.role != "verifier":  # a verifier has no Ed25519 key (keygen --cluster makes none)
            generate_signing_key(loaded.keys_dir, name)
    return loaded


def rotate(admin: Admin, node: str) -> int:
    args = argparse.Namespace(rotated=node, window=60, passphrase=False, json=True)
    return cmd_key_rotate(cast(Session, admin), args)


def test_a_replica_with_a_rotation_port_gets_new_curve_and_ed25519_keys_in_one_record(config: ClusterConfig) -> None:
    admin = Admin(config)
    assert rotate(admin, "replica-1") == 0
    keys = config.keys_dir
    sent = admin.sent[0]
    assert sent["curve"] == load_public(keys / "replica-1@1.key") != load_public(keys / "replica-1.key")
    assert sent["sign"] == load_verify_key(keys / "replica-1@1.sign.pub").public_hex
    assert (keys / "replica-1@1.key_secret").stat().st_mode & 0o077 == 0
    assert (keys / "replica-1@1.sign").stat().st_mode & 0o077 == 0
    assert sent["window_ms"] == 60_000


def test_a_replica_without_a_rotation_port_rotates_its_ed25519_key_alone(config: ClusterConfig) -> None:
    admin = Admin(config)
    assert rotate(admin, "replica-2") == 0
    assert admin.sent[0]["curve"] == load_public(config.keys_dir / "replica-2.key")
    assert not (config.keys_dir / "replica-2@1.key").exists()
    assert (config.keys_dir / "replica-2@1.sign.pub").exists()


def test_a_node_with_a_feed_but_no_feed_rotation_port_is_refused_before_any_file_is_made(
    config: ClusterConfig,
) -> None:
    admin = Admin(config)
    with pytest.raises(UsageError, match="feed_rotation_port"):
        rotate(admin, "relay-1")
    assert admin.sent == [] and not list(config.keys_dir.glob("relay-1@*"))


def test_an_ingest_node_rotates_its_curve_key_and_a_refusal_removes_the_new_files(config: ClusterConfig) -> None:
    admin = Admin(config, refuse=True)
    with pytest.raises(RemoteError):
        rotate(admin, "ingest-1")
    assert admin.sent[0]["sign"] == load_verify_key(config.keys_dir / "ingest-1.sign.pub").public_hex
    assert not list(config.keys_dir.glob("ingest-1@*"))  # the next attempt makes the same generation
    with pytest.raises(RemoteError):
        rotate(Admin(config, refuse=True), "replica-1")
    assert not list(config.keys_dir.glob("replica-1@*"))


def test_a_verifier_rotates_its_curve_key_with_an_empty_sign_and_needs_a_rotation_port(
    config: ClusterConfig,
) -> None:
    admin = Admin(config)
    assert rotate(admin, "verifier-1") == 0
    keys = config.keys_dir
    sent = admin.sent[0]
    assert sent["curve"] == load_public(keys / "verifier-1@1.key") != load_public(keys / "verifier-1.key")
    assert sent["sign"] == ""  # it has no Ed25519 key (PROTOCOL 16.1)
    assert (keys / "verifier-1@1.key_secret").stat().st_mode & 0o077 == 0
    assert not list(keys.glob("verifier-1@1.sign*"))
    with pytest.raises(UsageError, match="rotation_port"):
        rotate(Admin(config), "verifier-2")
    assert not list(keys.glob("verifier-2@*"))
    with pytest.raises(UsageError, match="not a node"):
        rotate(Admin(config), "verifier-9")


def test_the_generation_is_the_admin_ledger_s_not_the_key_files(config: ClusterConfig) -> None:
    """Two rotations of ingest-1 were recorded without files here (a raw node.rotate, another
    operator's machine): the next is generation 3, as the node will look for it, not 1."""
    admin = Admin(config, recorded=("ingest-1", "replica-1", "ingest-1"))
    assert rotate(admin, "ingest-1") == 0
    keys = config.keys_dir
    assert admin.sent[0]["curve"] == load_public(keys / "ingest-1@3.key")
    assert sorted(p.name for p in keys.glob("ingest-1@*")) == ["ingest-1@3.key", "ingest-1@3.key_secret"]
    # A recorded rotation whose files were made on another machine: the next is 2, though none is here.
    assert rotate(Admin(config, recorded=("replica-1",)), "replica-1") == 0
    assert (keys / "replica-1@2.sign.pub").exists() and not (keys / "replica-1@1.sign.pub").exists()


def test_files_of_an_unrecorded_generation_are_refused_not_reused(config: ClusterConfig) -> None:
    generate(config.keys_dir, "ingest-1@1")  # left by an attempt the admin ledger never recorded
    admin = Admin(config)
    with pytest.raises(KeyExistsError, match="records 0 rotations of ingest-1"):
        rotate(admin, "ingest-1")
    assert admin.sent == []


def test_a_lost_answer_keeps_the_files_the_record_may_name(config: ClusterConfig) -> None:
    admin = Admin(config)
    admin.silent = True
    with pytest.raises(NodeUnavailableError) as raised:
        rotate(admin, "ingest-1")
    assert (config.keys_dir / "ingest-1@1.key_secret").exists()
    assert "may have been recorded" in " ".join(getattr(raised.value, "__notes__", []))
    # It was recorded: the retry makes the next generation, the ledger's.
    admin.silent = False
    assert rotate(admin, "ingest-1") == 0
    assert admin.sent[-1]["curve"] == load_public(config.keys_dir / "ingest-1@2.key")
