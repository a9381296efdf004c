"""The gateway's tally over real Redis: what one anonymous request may read of the observers' streams."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.replication import Alert, ReplicationLedger
from vledger.broker.signing import load_signing_key, signing_key_paths
from vledger.broker.tallies import HISTORY_PAGE, TallyBoard
from vledger.config.cluster import ClusterConfig, cluster_from_mapping
from vledger.config.settings import Limits
from vledger.node.tally_body import Snapshot
from vledger.tools.demo import run_demo
from vledger.tools.node_commands import ensure_cluster_keys
from vledger.verifier.gateway import Gateway
from vledger.verifier.tally import AGREE, LOOK_PAGE, LOOK_PAGES, MISMATCH, STILL_COUNTING, TALLY_RECOUNT

LEDGER = "election-2026"
SNAPSHOT = Snapshot("observer-1", LEDGER, 0, b"\x01" * 32, {"type": "plain", "records": 1}, b"\x02" * 32, 0)


@pytest.fixture
def config(tmp_path: Path, redis_client: Any) -> ClusterConfig:
    nodes: dict[str, Any] = {
        "ingest-1": {"role": "ingest", "port": 1, "pub_port": 2},
        "replica-1": {"role": "replica", "port": 3, "gateway_port": 4},
        "observer-1": {"role": "observer", "port": 5, "follow": ["ingest-1"]},
        "observer-2": {"role": "observer", "port": 6, "follow": ["ingest-1"]},
        "verifier-1": {"role": "verifier", "port": 7},
    }
    cluster = {"name": "t", "data": "data", "keys": "keys", "default_home": "ingest-1"}
    url = redis_client.connection_pool.connection_kwargs
    cluster["redis"] = f"redis://{url['host']}:{url['port']}"
    loaded = cluster_from_mapping({"cluster": cluster, "nodes": nodes}, tmp_path / "cluster.toml")
    ensure_cluster_keys(loaded)
    run_demo(loaded.store_dir("replica-1"), 20, 1, Limits())
    return loaded


def signed(config: ClusterConfig, observer: str, height: int) -> dict[str, Any]:
    snapshot = dataclasses.replace(SNAPSHOT, observer=observer, height=height, tally={"records": height + 1})
    body = snapshot.body()
    key = load_signing_key(signing_key_paths(config.keys_dir, observer)[0])
    return {"height": height, "body": body, "signature": key.sign(body)}


def test_a_tally_request_reads_a_few_small_pages_of_a_long_stream_with_no_common_height(
    config: ClusterConfig, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An observer long behind (or a key's thief signing only where the others never do) left no
    height in common on the streams: each anonymous /tally read every page of every stream
    (10,000 entries of up to 4 MiB a page) once a second. It reads LOOK_PAGES of LOOK_PAGE
    entries of each, each read at most MAX_READ_BYTES, and answers still counting, with each
    observer's latest signed tally as it is."""
    board = TallyBoard(redis_client)
    pipe = redis_client.pipeline(transaction=False)
    for height in range(0, 6 * HISTORY_PAGE, 2):  # three pages at even heights
        pipe.xadd(board.stream_key(LEDGER, "observer-1"), signed(config, "observer-1", height))
    pipe.execute()
    latest = signed(config, "observer-1", 6 * HISTORY_PAGE)
    board.publish(LEDGER, "observer-1", latest["height"], latest["body"], latest["signature"])
    odd = signed(config, "observer-2", 1)  # on no page of observer-1's
    board.publish(LEDGER, "observer-2", 1, odd["body"], odd["signature"])
    counts: list[tuple[str, int]] = []
    history = TallyBoard.history

    def counted(self: TallyBoard, ledger: str, observer: str, before: str | None = None, count: int = 0) -> Any:
        counts.append((observer, count))
        return history(self, ledger, observer, before, count)

    monkeypatch.setattr(TallyBoard, "history", counted)
    gateway = Gateway(config, "replica-1", redis_client=redis_client)
    try:
        shown = gateway.tally(LEDGER)
    finally:
        gateway.close()
    assert shown["verdict"]["status"] == STILL_COUNTING
    assert [o["signature_ok"] for o in shown["observers"]] == [True, True]
    assert counts.count(("observer-1", LOOK_PAGE)) == LOOK_PAGES == len([c for c in counts if c[0] == "observer-1"])


def test_a_verifier_s_open_tally_recount_alert_makes_the_gateway_s_verdict_a_mismatch(
    config: ClusterConfig, redis_client: Any
) -> None:
    """o21 F4: observers that agree (or one alone) with a count the verifier's recount of the same
    records contradicts: the verdict is a mismatch naming it while the verifier's alert is open;
    the same alert in another raiser's hash changes nothing."""
    board = TallyBoard(redis_client)
    for observer in ("observer-1", "observer-2"):
        tally = signed(config, observer, 5)
        board.publish(LEDGER, observer, 5, tally["body"], tally["signature"])

    def verdict() -> dict[str, Any]:
        gateway = Gateway(config, "replica-1", redis_client=redis_client)
        try:
            shown: dict[str, Any] = gateway.tally(LEDGER)["verdict"]
        finally:
            gateway.close()
        return shown

    assert verdict()["status"] == AGREE
    alert = Alert("observer-1", LEDGER, 5, TALLY_RECOUNT, "not the recount", "vledger-verifier")
    ReplicationLedger(redis_client, node="replica-1").alert(alert)
    assert (verdict()["status"], verdict()["recount"]) == (AGREE, [])
    ReplicationLedger(redis_client, node="verifier-1").alert(alert)
    shown = verdict()
    assert (shown["status"], shown["recount"], shown["differing"]) == (MISMATCH, ["observer-1"], ["observer-1"])
