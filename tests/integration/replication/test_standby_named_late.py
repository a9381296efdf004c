"""A standby named in the cluster file after it started (outsider o21 F1, PROTOCOL 10.9): it
reads the file only at its start, so it does not follow the ledger. `vledger status` and
`vledger verify --cluster` said OK meanwhile, and its promotion was refused "not the standby in
the cluster file" with nothing saying why. They now say so, and what to run; restarted, it
follows the ledger and they are OK again. Promoted under Redis users made before the file named
it (no new redis.acl), Redis refuses its writes of the ledger's stream: that is an alert with the
steps to run, and status is not OK, where it said OK with the stream behind the head."""

from __future__ import annotations

import json
from typing import Any

from vledger.tests.integration.cluster import LocalCluster, entry, wait_until

LEDGER = "late"
WAIT = 60.0


def _listed(cluster: LocalCluster) -> list[str]:
    standby = cluster.admin("ingest-2").call("hello").get("standby") or {}
    return list(standby.get("ledgers", []))


def test_a_standby_named_after_it_started_is_said_not_to_follow_until_restarted(start_cluster: Any) -> None:
    cluster: LocalCluster = start_cluster(nodes=2, replicas=1)
    with cluster.config_path.open("a") as file:  # on every host, the nodes running
        file.write(f'\n[ledgers.{LEDGER}]\nhome = "ingest-1"\nstandby = "ingest-2"\n')
    key = ["--key", str(cluster.directory / "keys" / "admin.key_secret")]
    common = ["--config", str(cluster.config_path), *key]
    cluster.cli("ledger", "create", LEDGER, "--kinds", "vote", "--difficulty", "0", *common)
    cluster.client("writer1").put_many([entry(LEDGER, "vote", {"n": n}, "writer1") for n in range(3)])
    said = f"{LEDGER}: its standby ingest-2 does not follow it"
    assert _listed(cluster) == []

    status = cluster.cli("status", *common, "--json", check=False)
    assert status.returncode == 3, status.stdout + status.stderr
    assert any(p.startswith(said) and p.endswith("restart ingest-2") for p in json.loads(status.stdout)["problems"])
    verify = cluster.cli("verify", "--cluster", str(cluster.config_path), "--json", *key, check=False)
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["standbys_not_following"] == [{"ledger": LEDGER, "standby": "ingest-2"}]
    promote = cluster.cli("ledger", "promote", LEDGER, "ingest-2", "--node", "ingest-2", *common, check=False)
    assert promote.returncode != 0 and "after it started: restart ingest-2" in promote.stderr, promote.stderr

    assert cluster.restart_node("ingest-2") == 0
    wait_until(lambda: _listed(cluster) == [LEDGER], WAIT, "ingest-2 follows the ledger")
    status = cluster.cli("status", *common, "--json", check=False)
    assert not [p for p in json.loads(status.stdout)["problems"] if p.startswith(said)]
    verify = cluster.cli("verify", "--cluster", str(cluster.config_path), "--json", *key, check=False)
    assert json.loads(verify.stdout)["standbys_not_following"] == []

    assert cluster.stop_node("ingest-1") == 0
    promote_args = ("ledger", "promote", LEDGER, "ingest-2", "--node", "ingest-2", *common)
    wait_until(lambda: cluster.cli(*promote_args, check=False).returncode == 0, WAIT, "the promotion")
    cluster.client("writer1", "ingest-2").put_many([entry(LEDGER, "vote", {"n": n}, "writer1") for n in range(3, 5)])
    alert_key = f"ingest-2|{LEDGER}|stream_refused"

    def refused() -> dict[str, Any] | None:
        shown = json.loads(cluster.cli("status", *common, "--json", check=False).stdout)
        return next((a for a in shown["open_alerts"] if a["key"] == alert_key), None)

    alert = wait_until(refused, WAIT, "the stream_refused alert")
    assert "vledger keygen --cluster" in alert["detail"] and "ACL LOAD as Redis's own admin" in alert["detail"]
    assert cluster.cli("status", *common, check=False).returncode == 3
