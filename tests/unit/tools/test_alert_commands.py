"""`vledger alerts`: what it prints, on an empty alerts stream of a real Redis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.redis_server import RedisServer
from vledger.broker.replication import Alert, ReplicationLedger
from vledger.tools import alert_commands, cli


def write_config(directory: Path, redis_url: str) -> Path:
    path = directory / "cluster.toml"
    path.write_text(
        f'[cluster]\nredis = "{redis_url}"\ndefault_home = "ingest-1"\n'
        '[nodes.ingest-1]\nrole = "ingest"\nport = 7390\npub_port = 7392\n'
    )
    return path


@pytest.mark.parametrize(
    ("follow", "said"), [([], "no alerts\n"), (["--follow"], "no open alerts; waiting for new ones\n")]
)
def test_no_alert_is_said_not_left_silent(
    follow: list[str],
    said: str,
    tmp_path: Path,
    redis_server: RedisServer,
    redis_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    followed: list[dict[str, str]] = []
    monkeypatch.setattr(alert_commands, "_follow", lambda repl, last, as_json: followed.append(last))
    config = write_config(tmp_path, redis_server.url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert cli.main(["alerts", "--config", str(config), *follow]) == 0
    assert capsys.readouterr().out == said
    # Followed from now on, in every raiser's stream: the admin's and each configured node's.
    assert [sorted(streams) for streams in followed] == (
        [["vledger:{alerts}", "vledger:{alerts}:log:ingest-1"]] if follow else []
    )
    assert all(len(set(streams.values())) == 1 and "$" not in streams.values() for streams in followed)
    assert cli.main(["alerts", "--config", str(config), "--json", *follow]) == 0
    assert json.loads(capsys.readouterr().out) == {"alerts": []}  # one object, as --help says


def test_each_listed_alert_says_whether_it_is_still_open(
    tmp_path: Path,
    redis_server: RedisServer,
    redis_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The stream keeps resolved alerts too: listed alone, a resolved one read as a current fault.
    repl = ReplicationLedger(redis_client)
    repl.alert(Alert("redis", "zakat", 7, "record_conflict", "the home rewrote the stream", source="ingest-2"))
    repl.alert(Alert("replica-3", "votes", 100, "bad_checksum", "checksum does not match the content"))
    assert repl.resolve(["redis|zakat|record_conflict"]) == 1
    config = write_config(tmp_path, redis_server.url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert cli.main(["alerts", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1:3] for line in lines] == [["closed", "record_conflict"], ["open", "bad_checksum"]]
    assert cli.main(["alerts", "--config", str(config), "--json"]) == 0
    # One JSON object, as --help says (outsider26 I2: a line per alert failed json.load).
    shown = json.loads(capsys.readouterr().out)["alerts"]
    assert [(a["what"], a["open"]) for a in shown] == [("record_conflict", False), ("bad_checksum", True)]
    # Numbers as numbers, as every other --json output gives them (outsider23: "height": "7").
    assert [a["height"] for a in shown] == [7, 100] and all(isinstance(a["at_ms"], int) for a in shown)


def test_resolving_a_key_that_is_not_open_fails_and_closes_nothing(
    tmp_path: Path,
    redis_server: RedisServer,
    redis_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A mistyped key said "resolved 0 of 1 alerts" with exit status 0."""
    repl = ReplicationLedger(redis_client)
    repl.alert(Alert("replica-3", "votes", 100, "bad_checksum", "checksum does not match the content"))
    config = write_config(tmp_path, redis_server.url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    typo = "replica-3|votes|bad_chcksum"
    assert cli.main(["alerts", "resolve", "--config", str(config), "replica-3|votes|bad_checksum", typo]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"not_found: no open alert {typo}: nothing resolved" in err
    assert list(repl.open_alerts()) == ["replica-3|votes|bad_checksum"]
    assert cli.main(["alerts", "resolve", "--config", str(config), "replica-3|votes|bad_checksum"]) == 0
    assert capsys.readouterr().out == "resolved 1 of 1 alerts\n"
    assert repl.open_alerts() == {}
    assert cli.main(["alerts", "list", "--config", str(config), typo]) == 2  # a key means resolve was meant
    assert "keys are for resolve" in capsys.readouterr().err


def test_following_with_json_prints_one_object_a_line_for_each_batch_of_new_alerts(
    tmp_path: Path,
    redis_server: RedisServer,
    redis_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each line a script reads is one JSON object of the listing's shape, ``{"alerts": [...]}``:
    a line per alert was not the object --help promises (outsider26 I2)."""
    repl = ReplicationLedger(redis_client)
    repl.alert(Alert("replica-3", "votes", 100, "bad_checksum", "checksum does not match the content"))
    real = alert_commands._replication
    reads = 0

    def replication(config: Any) -> ReplicationLedger:
        followed = real(config)
        xread = followed.client.xread

        def read(*args: Any, **kwargs: Any) -> Any:
            nonlocal reads
            reads += 1
            if reads == 1:  # two alerts raised while it follows
                repl.alert(Alert("replica-1", "votes", 7, "lagging", "behind"))
                repl.alert(Alert("replica-2", "votes", 8, "lagging", "behind"))
            got = xread(*args, **kwargs)
            if not got and reads > 1:
                raise KeyboardInterrupt  # the operator's ^C once both were printed
            return got

        monkeypatch.setattr(followed.client, "xread", read)
        return followed

    monkeypatch.setattr(alert_commands, "_replication", replication)
    config = write_config(tmp_path, redis_server.url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert cli.main(["alerts", "--config", str(config), "--json", "--follow"]) == 130
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["what"] for a in lines[0]["alerts"]] == ["bad_checksum"]
    followed = [(a["node"], a["height"], a["open"]) for line in lines[1:] for a in line["alerts"]]
    assert followed == [("replica-1", 7, True), ("replica-2", 8, True)]


def test_an_open_alert_reads_the_same_in_the_list_as_in_verify_cluster(
    tmp_path: Path,
    redis_server: RedisServer,
    redis_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Outsider o16 3: a raiser writes its stream entry and its open hash's JSON; `alerts` showed
    # the entry's detail ("forged by o16"), status and verify --cluster the hash's: one alert,
    # two texts. An open one reads as its open hash holds it, everywhere; a value that is no
    # JSON object reads alike too (verify said "height None: None", status "height ?: ").
    raiser = ReplicationLedger(redis_client, node="ingest-1")
    alert = Alert("replica-1", "zakat", 3, "bad_checksum", "record 3 of replica-1's copy does not hash")
    raised = raiser.alert(alert)
    redis_client.xadd(raiser.alerts_key, {**alert.fields(), "detail": "forged by o16"})
    held = json.loads(redis_client.hget(raiser.open_alerts_key, alert.key))
    redis_client.hset(raiser.open_alerts_key, alert.key, json.dumps({**held, "height": 4}))
    redis_client.hset(raiser.open_alerts_key, "replica-2|zakat|lag", b"not json")
    config = write_config(tmp_path, redis_server.url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert cli.main(["verify", "--cluster", str(config)]) == 1
    assert capsys.readouterr().out.splitlines()[1:] == [
        f"  {alert.key}  height 4 [raised by ingest-1]: {alert.detail}",
        "  replica-2|zakat|lag  height ? [raised by ingest-1]: ",
    ]
    assert cli.main(["verify", "--cluster", str(config), "--json"]) == 1
    verified = json.loads(capsys.readouterr().out)["open_alerts"]
    assert [(a.get("height"), a.get("detail")) for a in verified] == [(4, alert.detail), (None, None)]
    assert cli.main(["alerts", "--config", str(config), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["alerts"]
    assert [(a["id"], a["open"], a.get("height"), a.get("detail")) for a in listed] == [
        ("", True, None, None),  # open in ingest-1's hash, no stream entry: listed all the same (r24)
        (raised, True, 4, alert.detail),
        (listed[2]["id"], False, 3, "forged by o16"),  # an entry no open hash names: as the stream has it
    ]


def test_a_raisers_height_of_thousands_of_digits_is_listed_as_written(
    tmp_path: Path,
    redis_server: RedisServer,
    redis_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A raiser writes its alerts' JSON, any height: int() of 4,301 digits or more raises
    # (Python's limit), and `alerts --json` failed for every raiser's alerts. Past 19 digits, no
    # height nor time of an honest raiser's, it is the raiser's text.
    raiser = ReplicationLedger(redis_client, node="ingest-1")
    alert = Alert("replica-1", "zakat", 3, "bad_checksum", "record 3 does not hash")
    raiser.alert(alert)
    held = json.loads(redis_client.hget(raiser.open_alerts_key, alert.key))
    redis_client.hset(raiser.open_alerts_key, alert.key, json.dumps({**held, "height": "9" * 5000, "at_ms": "-1"}))
    config = write_config(tmp_path, redis_server.url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert cli.main(["alerts", "--config", str(config), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["alerts"]
    assert [(a["height"], a["at_ms"]) for a in listed if a["open"]] == [("9" * 5000, -1)]
    assert cli.main(["verify", "--cluster", str(config), "--json"]) == 1
    (verified,) = json.loads(capsys.readouterr().out)["open_alerts"]
    assert (verified["height"], verified["at_ms"]) == ("9" * 5000, -1)
