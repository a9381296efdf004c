"""The verifier's own count of each ledger against the observers' signed tallies (o21 F4).

One broken-into observer host (its .sign key and Redis password) published a tally with
invented balances; with one observer nothing compared it, and `vledger tally`, the gateway and
the client said "agree". The verifier recounts the chain, raises ``tally_recount`` naming the
observer, and every reader's verdict is a mismatch while that alert is open.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.redis_server import RedisServer, free_ports
from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import load_signing_key, signing_key_paths
from vledger.config.cluster import ClusterConfig, load_cluster
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry
from vledger.node.store import ChainStore
from vledger.node.tally_body import Snapshot
from vledger.tests.unit.verifier.chains import AUTHOR, LIMITS, write_entries
from vledger.tests.unit.verifier.test_tally_watch import Clock
from vledger.tools.node_commands import ensure_cluster_keys
from vledger.verifier.tally import AGREE, MISMATCH, TALLY_RECOUNT, judge, open_recounts, read_tallies, with_recounts
from vledger.verifier.tally_recount import TallyRecount
from vledger.verifier.tally_watch import TallyWatch

LEDGER = "fund"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def config(tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> ClusterConfig:
    """One observer (the README allows it), one verifier."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    ports = iter(free_ports(4))
    lines = ["[cluster]", 'name = "test"', f'redis = "{redis_server.url}"', 'default_home = "ingest-1"', ""]
    lines += ["[nodes.ingest-1]", 'role = "ingest"', f"port = {next(ports)}", f"pub_port = {next(ports)}", ""]
    lines += ["[nodes.observer-1]", 'role = "observer"', f"port = {next(ports)}", 'follow = ["ingest-1"]', ""]
    lines += ["[nodes.verifier-1]", 'role = "verifier"', f"port = {next(ports)}", ""]
    path = tmp_path / "cluster.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    loaded = load_cluster(path)
    ensure_cluster_keys(loaded)
    return loaded


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChainStore]:
    opened = ChainStore(tmp_path / "store", origin="ingest-1")
    rules = LedgerRules(("issue", "transfer"), 0, {"type": "resources", "unit": "u", "issuers": [AUTHOR]})
    opened.create_ledger(Entry.prepare(rules.genesis_content(LEDGER, AUTHOR, "g", _now_ms()), 0, LIMITS))
    entries = [
        Entry.prepare(
            Content(LEDGER, "issue", {"account": "ana", "amount": 100 + i}, AUTHOR, f"r{i}", _now_ms()), 0, LIMITS
        )
        for i in range(5)
    ]
    write_entries(opened, entries)
    yield opened
    opened.close()


def _reads(store: ChainStore) -> tuple[list[tuple[str, int, int]], Any]:
    asked: list[tuple[str, int, int]] = []

    def read(ledger: str, start: int, limit: int) -> list[bytes]:
        asked.append((ledger, start, limit))
        return [data for _, data in store.range_raw(ledger, start, start + limit)] if ledger == LEDGER else []

    return asked, read


def test_the_recount_is_the_observers_count_fed_once_and_bounded_per_look(store: ChainStore) -> None:
    asked, read = _reads(store)
    recount = TallyRecount(read, 10_000, records_per_look=4)
    assert recount.at(LEDGER, 5) is None  # 4 records a look: heights 0..3
    counted = recount.at(LEDGER, 5)
    assert counted is not None and counted.height == 5
    assert counted.tally["balances"] == {"ana": sum(100 + i for i in range(5))}
    assert counted.head == next(iter(store.range(LEDGER, 5, 6))).link
    assert recount.fed == 6  # every record once
    before = len(asked)
    assert recount.at(LEDGER, 5) == counted and len(asked) == before  # kept: no read
    assert recount.at(LEDGER, 4) is None and len(asked) == before  # passed, never asked: not kept, no replay


def _publish(config: ClusterConfig, watch: TallyWatch, observer: str, snapshot: Snapshot) -> None:
    key = load_signing_key(signing_key_paths(config.keys_dir, observer)[0])
    body = dataclasses.replace(snapshot, observer=observer, at_ms=_now_ms()).body()
    watch.board.publish(LEDGER, observer, snapshot.height, body, key.sign(body))


def test_one_observer_s_invented_balances_are_a_tally_recount_alert_and_no_reader_s_agreement(
    config: ClusterConfig, redis_client: Any, store: ChainStore
) -> None:
    watch = TallyWatch(config, redis_client, clock=Clock())
    watch.recount = TallyRecount(_reads(store)[1], 10_000)
    honest = TallyRecount(_reads(store)[1], 10_000).at(LEDGER, 5)
    assert honest is not None
    _publish(config, watch, "observer-1", honest)
    assert [a for a in watch(LEDGER, 6) if a.what == TALLY_RECOUNT] == []

    # observer-1's stolen key signs the same head with an account that does not exist.
    forged_tally = honest.tally | {"balances": {"ana": 400, "mallory": 600}}
    _publish(config, watch, "observer-1", dataclasses.replace(honest, tally=forged_tally))
    report = read_tallies(watch.board, LEDGER, *watch.keys())
    assert judge(report.compared, ["observer-1"]).status == AGREE  # alone, it agrees with itself
    [alert] = [a for a in watch(LEDGER, 6) if a.what == TALLY_RECOUNT]
    assert (alert.node, alert.ledger, alert.height, alert.expected) == ("observer-1", LEDGER, 5, honest.counted.hex())

    # Raised by the verifier, it turns every reader's verdict into a mismatch naming observer-1.
    assert open_recounts(redis_client, config, LEDGER) == {}
    ReplicationLedger(redis_client, node="observer-1").alert(alert)  # an observer's claim counts nothing
    assert open_recounts(redis_client, config, LEDGER) == {}
    ReplicationLedger(redis_client, node="verifier-1").alert(alert)
    assert open_recounts(redis_client, config, LEDGER) == {"observer-1": 5}
    judged = with_recounts(report, open_recounts(redis_client, config, LEDGER))
    assert (judged.verdict.status, judged.verdict.recount, judged.exit_code) == (MISMATCH, ("observer-1",), 1)
    assert judged.verdict.json()["recount"] == ["observer-1"]
