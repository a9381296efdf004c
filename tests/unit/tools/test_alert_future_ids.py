"""One node's Redis password must not hide other raisers' alerts from `vledger alerts` (list and
--follow) with an `id` field, or a stream id in the future, in its own stream entries (review r24 F4)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.redis_server import RedisServer
from vledger.broker.replication import Alert, ReplicationLedger
from vledger.tests.unit.tools.test_alert_commands import write_config
from vledger.tools import alert_commands, cli

FUTURE = "99999999999999-0"  # a stream id some 3,000 years ahead


@pytest.fixture
def config(tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("REDIS_URL", raising=False)
    return write_config(tmp_path, redis_server.url)


def forge(redis_client: Any, count: int, explicit: bool) -> None:
    # ingest-2's own user may XADD any fields, with any id above its last, to its own stream
    # (~{alerts}:log:ingest-2): an `id` field, or a stream id itself in the future.
    forger = ReplicationLedger(redis_client, node="ingest-2")
    for i in range(count):
        fields = Alert("ingest-2", "zakat", i, "lag", "benign: nothing to do").fields()
        redis_client.xadd(
            forger.alerts_key, {**fields, "id": FUTURE}, id=f"99999999999999-{i + 1}" if explicit else "*"
        )


@pytest.mark.parametrize("explicit", [False, True])
def test_a_raiser_s_future_id_hides_no_other_raiser_s_open_alert_from_the_list(
    explicit: bool,
    config: Path,
    redis_client: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    verifier = ReplicationLedger(redis_client, node="verifier")
    real = verifier.alert(Alert("ingest-1", "zakat", 7, "tampered", "record 7 does not hash"))
    forge(redis_client, 5, explicit)
    assert cli.main(["alerts", "--config", str(config), "--json", "--count", "5"]) == 0
    listed = json.loads(capsys.readouterr().out)["alerts"]
    assert (real, True) in [(a["id"], a["open"]) for a in listed]  # the verifier's open alert is listed
    if not explicit:
        assert FUTURE not in [a["id"] for a in listed]  # an id is the stream's, not a field a raiser wrote


@pytest.mark.parametrize("explicit", [False, True])
def test_a_raiser_s_future_id_does_not_start_follow_in_the_future(
    explicit: bool,
    config: Path,
    redis_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    followed: list[dict[str, str]] = []
    monkeypatch.setattr(alert_commands, "_follow", lambda repl, last, as_json: followed.append(last))
    forge(redis_client, 1, explicit)
    assert cli.main(["alerts", "--config", str(config), "--follow"]) == 0
    seconds, _ = redis_client.time()
    # XREAD from a future id waits for ids past it: every raiser's new alerts went unseen.
    assert all(int(since.split("-")[0]) <= (int(seconds) + 1) * 1000 for since in followed[0].values())


def test_an_open_alert_whose_id_names_no_stream_entry_is_listed_open(
    config: Path,
    redis_client: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Outsider o17 5: an entry written with HSET alone into a raiser's open hash (its id names no
    stream entry) was missing from `vledger alerts` while status, verify --cluster and
    /api/cluster showed it open: an open alert reads the same everywhere (PROTOCOL 10.5)."""
    ingest = ReplicationLedger(redis_client, node="ingest-2")
    key = "replica-1|zakat|bad_checksum"
    fields = {**Alert("replica-1", "zakat", 3, "bad_checksum", "only in the hash").fields(), "id": "1-0"}
    redis_client.hset(ingest.open_alerts_key_of("ingest-2"), key, json.dumps(fields))
    assert cli.main(["alerts", "--config", str(config), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["alerts"]
    assert [(a["detail"], a["open"], a.get("raised_by")) for a in listed] == [("only in the hash", True, "ingest-2")]
