"""Admin accounts the admin ledger must show, through a real cluster and the command line
(docs/PROTOCOL.md 16.3): no bootstrap past the first admin, no last admin disabled."""

from __future__ import annotations

import json
from pathlib import Path

from vledger.tests.integration.cluster import ADMIN, LocalCluster, remote_error


def test_bootstrap_makes_no_hidden_admin_once_the_admin_ledger_exists(cluster: LocalCluster, tmp_path: Path) -> None:
    admin = cluster.admin()
    admin.call("account.add", {"account": "bystander", "role": "observer"})  # the admin ledger exists
    cluster.cli("keygen", "--dir", str(tmp_path), "mallory")
    bootstrap = ("admin", "bootstrap", "--config", str(cluster.config_path), "--account", "mallory")
    done = cluster.cli(*bootstrap, "--key", str(tmp_path / "mallory.key"), "--json", check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert json.loads(done.stdout)["error"]["code"] == "admin_ledger_exists"
    # A start script's run (docker compose's `bootstrap`, every `up`): said, exit 0, nothing made.
    once = cluster.cli(*bootstrap, "--key", str(tmp_path / "mallory.key"), "--json", "--once")
    assert json.loads(once.stdout)["skipped"] == "admin_ledger_exists"
    assert "mallory" not in {a["account"] for a in admin.call("account.list")["accounts"]}


def test_the_last_admin_cannot_lock_every_admin_out(cluster: LocalCluster) -> None:
    admin = cluster.admin()
    refused = remote_error(admin.call, "account.disable", {"account": ADMIN})
    assert refused.code == "last_admin"
    # Still an admin, still answered: the cluster did not go silent.
    assert admin.call("whoami")["account"] == ADMIN
    listed = {a["account"]: a for a in admin.call("account.list")["accounts"]}
    assert listed[ADMIN]["enabled"] is True
