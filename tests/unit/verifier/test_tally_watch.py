"""The verifier's look at the observers' tallies: observers never compared are an alert, and a look reads little.

Review r8, finding 1: a thief of one observer's key who signs only at heights no honest
observer signs at (honest ones sign at their store's head, a checkpoint's end) kept the look
"still counting" for ever, and each look read every observer's whole stream. Real Redis.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.redis_server import RedisServer, free_ports
from vledger.broker.signing import load_signing_key, signing_key_paths
from vledger.broker.tallies import HISTORY_PAGE, TallyBoard
from vledger.config.cluster import ClusterConfig, load_cluster
from vledger.node.tally_body import Snapshot
from vledger.tools.node_commands import ensure_cluster_keys
from vledger.verifier.tally_watch import LOOK_PAGES, TallyWatch

LEDGER = "fund"
AFTER_S = 300.0  # the default tally_uncompared_ms
SNAPSHOT = Snapshot("observer-1", LEDGER, 0, b"\x01" * 32, {"type": "plain", "records": 1}, b"\x02" * 32, 0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def config(tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> ClusterConfig:
    monkeypatch.delenv("REDIS_URL", raising=False)
    nodes = [("ingest-1", "ingest"), ("observer-1", "observer"), ("observer-2", "observer"), ("verifier-1", "verifier")]
    lines = ["[cluster]", 'name = "test"', f'redis = "{redis_server.url}"', 'default_home = "ingest-1"', ""]
    ports = iter(free_ports(len(nodes) + 1))
    for name, role in nodes:
        lines += [f"[nodes.{name}]", f'role = "{role}"', 'host = "127.0.0.1"', f"port = {next(ports)}"]
        lines += [f"pub_port = {next(ports)}"] if role == "ingest" else ['follow = ["ingest-1"]'] * (role == "observer")
        lines.append("")
    path = tmp_path / "cluster.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    loaded = load_cluster(path)
    ensure_cluster_keys(loaded)
    return loaded


@pytest.fixture
def watched(config: ClusterConfig, redis_client: Any) -> tuple[TallyWatch, Clock]:
    clock = Clock()
    return TallyWatch(config, redis_client, clock=clock), clock


def publish(config: ClusterConfig, board: TallyBoard, observer: str, height: int, records: int | None = None) -> None:
    """``observer``'s key signs a count at ``height`` (``records`` other than an honest count's: a forged one)."""
    tally = {"type": "plain", "records": height + 1 if records is None else records}
    snapshot = dataclasses.replace(
        SNAPSHOT, observer=observer, height=height, head=bytes([height % 256]) * 32, tally=tally
    )
    key = load_signing_key(signing_key_paths(config.keys_dir, observer)[0])
    board.publish(LEDGER, observer, height, snapshot.body(), key.sign(snapshot.body()))


def test_a_thief_who_never_signs_at_the_honest_height_is_alerted_once_the_bound_passed(
    config: ClusterConfig, watched: tuple[TallyWatch, Clock]
) -> None:
    watch, clock = watched
    board = watch.board
    publish(config, board, "observer-2", 9)  # honest: at the head of a checkpoint of size 10
    publish(config, board, "observer-1", 8, records=104)  # stolen key: size - 2, never compared
    assert watch(LEDGER, 10) == []
    clock.now = AFTER_S - 1
    publish(config, board, "observer-1", 8, records=104)  # signed again: a fresh at_ms, no new height
    assert watch(LEDGER, 10) == []
    clock.now = AFTER_S + 1
    [alert] = watch(LEDGER, 10)
    assert (alert.what, alert.node, alert.height, alert.source) == (
        "tally_uncompared", "vledger-tally", 8, "observer-1, observer-2",
    )  # fmt: skip
    assert "observer-1 at 8, observer-2 at 9" in alert.detail
    # Claiming heights past the verified checkpoint is no progress: the alert stays.
    publish(config, board, "observer-1", 12, records=104)
    clock.now += 5
    assert watch(LEDGER, 10) != []


def test_honest_observers_catching_up_or_under_steady_writes_never_alert(
    config: ClusterConfig, watched: tuple[TallyWatch, Clock]
) -> None:
    watch, clock = watched
    board = watch.board
    publish(config, board, "observer-2", 100)
    for step in range(1, 40):  # observer-1 catches up a little every 100 s: never a common height till the end
        publish(config, board, "observer-1", step)
        clock.now = step * 100.0
        assert watch(LEDGER, 101) == []
    for step in range(40):  # steady writes: each signs its own heights, which never meet
        publish(config, board, "observer-1", 200 + 2 * step)
        publish(config, board, "observer-2", 201 + 2 * step)
        clock.now += 100.0
        assert watch(LEDGER, 300) == []
    publish(config, board, "observer-1", 300)  # then observer-2 stops short of the head: named
    clock.now += AFTER_S + 1
    assert watch(LEDGER, 301) == []  # its new height is progress
    clock.now += AFTER_S + 1
    assert watch(LEDGER, 301) != []
    publish(config, board, "observer-2", 300)  # met at the head: compared, nothing more to say
    assert watch(LEDGER, 301) == []


def test_a_look_reads_at_most_two_pages_of_each_stream_and_nothing_while_no_latest_changed(
    config: ClusterConfig, redis_client: Any, watched: tuple[TallyWatch, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    watch, _ = watched
    board = watch.board
    pipe = redis_client.pipeline(transaction=False)
    for height in range(3 * HISTORY_PAGE):  # three pages at even heights, none observer-2 signed at
        snapshot = dataclasses.replace(SNAPSHOT, height=2 * height)
        key = load_signing_key(signing_key_paths(config.keys_dir, "observer-1")[0])
        pipe.xadd(
            board.stream_key(LEDGER, "observer-1"),
            {"height": 2 * height, "body": snapshot.body(), "signature": key.sign(snapshot.body())},
        )
    pipe.execute()
    publish(config, board, "observer-1", 6 * HISTORY_PAGE)
    publish(config, board, "observer-2", 1)  # odd: on no page of observer-1's
    pages: list[str] = []
    history = board.history

    def counted(ledger: str, observer: str, before: str | None = None, count: int = HISTORY_PAGE) -> Any:
        pages.append(observer)
        return history(ledger, observer, before, count)

    monkeypatch.setattr(board, "history", counted)
    assert watch(LEDGER, None) == []
    assert pages.count("observer-1") == LOOK_PAGES == 2
    pages.clear()
    assert watch(LEDGER, None) == []
    assert pages == []  # the same latest ids: the report of the last look stands
    publish(config, board, "observer-2", 3)
    assert watch(LEDGER, None) == []
    assert pages.count("observer-1") == LOOK_PAGES


def test_an_entry_whose_signature_fails_is_a_bad_signature_alert_naming_its_observer(
    config: ClusterConfig, watched: tuple[TallyWatch, Clock]
) -> None:
    """The look checked each entry's signature but only compared counts: an observer's stream
    carrying a count that no key of that observer signed (here observer-2's key, under
    observer-1's name) was left out of the comparison, and nothing was raised."""
    watch, _ = watched
    board = watch.board
    publish(config, board, "observer-2", 9)
    forged = dataclasses.replace(SNAPSHOT, height=9, head=bytes([9]) * 32, tally={"type": "plain", "records": 104})
    other = load_signing_key(signing_key_paths(config.keys_dir, "observer-2")[0])
    board.publish(LEDGER, "observer-1", 9, forged.body(), other.sign(forged.body()))
    [alert] = watch(LEDGER, 10)
    assert (alert.what, alert.node, alert.source, alert.ledger, alert.height) == (
        "bad_signature", "observer-1", "observer-1", LEDGER, 9,
    )  # fmt: skip
    assert alert.found == "sha256:" + hashlib.sha256(forged.body()).hexdigest()
    assert "does not verify" in alert.detail
    publish(config, board, "observer-1", 9)  # its own key signs the honest count: no alert any more
    assert watch(LEDGER, 10) == []
