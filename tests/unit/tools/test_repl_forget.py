"""``vledger repl forget NODE`` against the session's real Redis: the keys of a node taken out of
the cluster file are deleted, exactly those, and only once nothing says it still runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.accounts import AccountRegistry
from vledger.broker.redis_server import RedisServer
from vledger.broker.replication import Alert, ReplicationLedger
from vledger.broker.tallies import TallyBoard
from vledger.tests.unit.tools.test_repl_commands import ELECTION, ZAKAT, run, write_config
from vledger.tools.repl_commands import EXIT_FAILED, EXIT_OK

REMOVED = "replica-4"


@pytest.fixture
def config(tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("REDIS_URL", raising=False)
    return write_config(tmp_path, redis_server.url)


def _written_by(client: Any, node: str) -> tuple[list[str], list[str]]:
    """Every key a replica-and-observer ``node`` writes, as its processes would (10.10): its
    state's, then its history's (alerts stream, evidence)."""
    repl, board, registry = ReplicationLedger(client), TallyBoard(client), AccountRegistry(client)
    for ledger in (ZAKAT, ELECTION):
        repl.advance(node, ledger, 3)
    client.set(repl.cosig_key(ZAKAT, node), b"a note")
    client.lpush(repl.cosig_recent_key(ZAKAT, node), b"a note")
    client.xadd(board.stream_key(ELECTION, node), {"body": b"b"})
    client.set(board.latest_key(ELECTION, node), b"1-0")
    registry.record_applied(node, 1)
    registry.record_stopped(node)
    client.hset(repl.open_alerts_key_of(node), f"{node}|{ZAKAT}|lagging", b"{}")
    client.xadd(repl.alerts_key_of(node), {"what": b"lagging"})
    client.hset(repl.evidence_key_of(node), ZAKAT, b"two notes")
    state = [
        repl.held_key(ZAKAT, node),
        repl.held_key(ELECTION, node),
        repl.cosig_key(ZAKAT, node),
        repl.cosig_recent_key(ZAKAT, node),
        board.stream_key(ELECTION, node),
        board.latest_key(ELECTION, node),
        registry.applied_key(node),
        repl.open_alerts_key_of(node),
    ]
    return sorted(state), sorted([repl.alerts_key_of(node), repl.evidence_key_of(node)])


def _keys(client: Any) -> set[str]:
    return {key.decode() for key in client.keys("*")}


def test_a_removed_node_s_keys_are_deleted_exactly_its_history_when_asked(
    capsys: pytest.CaptureFixture[str], config: Path, redis_client: Any
) -> None:
    """fix19a left them: README's removal stopped the node and took it out of the cluster file,
    and its held heights, heartbeat, cosignature, tallies and open alerts stayed in Redis for
    good, read by whatever finds nodes by SCAN. A node whose name another's begins with
    (replica-40) and the members keep every key."""
    state, history = _written_by(redis_client, REMOVED)
    others_state, others_history = _written_by(redis_client, "replica-40")
    ReplicationLedger(redis_client).advance("replica-1", ZAKAT, 3)
    before = _keys(redis_client)
    code, out, err = run(capsys, "repl", "forget", REMOVED, "--config", config, "--json")
    assert code == EXIT_OK, err
    assert json.loads(out) == {"node": REMOVED, "deleted": state, "kept": history, "resolved": []}
    assert _keys(redis_client) == before - set(state)
    code, out, err = run(capsys, "repl", "forget", REMOVED, "--config", config, "--history")
    assert code == EXIT_OK, err
    assert out.startswith(f"{REMOVED}: 2 keys deleted") and "kept" not in out
    assert _keys(redis_client) == before - set(state) - set(history)
    assert {*others_state, *others_history} <= _keys(redis_client)
    code, out, _ = run(capsys, "repl", "forget", REMOVED, "--config", config, "--json")  # nothing left: done
    assert code == EXIT_OK and json.loads(out) == {"node": REMOVED, "deleted": [], "kept": [], "resolved": []}


def test_a_member_or_a_node_that_may_still_run_is_refused_and_nothing_deleted(
    capsys: pytest.CaptureFixture[str], config: Path, redis_client: Any
) -> None:
    registry = AccountRegistry(redis_client)
    _written_by(redis_client, "replica-1")
    _written_by(redis_client, REMOVED)
    before = _keys(redis_client)
    code, out, _ = run(capsys, "repl", "forget", "replica-1", "--config", config, "--json")
    refused = json.loads(out)["error"]
    assert code == EXIT_FAILED and refused["code"] == "forget_refused" and "in the cluster file" in refused["message"]
    registry.record_applied(REMOVED, 2)  # started again, or never stopped
    code, out, err = run(capsys, "repl", "forget", REMOVED, "--config", config)
    assert code == EXIT_FAILED and "forget_refused" in err and "may still run" in err, err
    redis_client.delete(registry.applied_key(REMOVED))
    redis_client.set(registry.applied_key(REMOVED), b"junk")  # another type: nothing says it is down
    code, out, err = run(capsys, "repl", "forget", REMOVED, "--config", config)
    assert code == EXIT_FAILED and "unreadable" in err, err
    assert _keys(redis_client) == before


@pytest.mark.parametrize("name", ["replica-*", "Replica-4", "replica:4", ""])
def test_what_is_no_node_name_is_a_usage_error(capsys: pytest.CaptureFixture[str], config: Path, name: str) -> None:
    code, _, err = run(capsys, "repl", "forget", name, "--config", config)
    assert code == 2 and "not a node name" in err, err


def test_other_raisers_open_alerts_about_the_forgotten_node_are_resolved_as_the_operator_does(
    capsys: pytest.CaptureFixture[str], config: Path, redis_client: Any
) -> None:
    """Outsider o17: the verifier's `lagging` of a replica stopped before it was taken out stayed
    open for good (the restarted verifier no longer checks it; forget deleted only its own keys),
    so `vledger status` kept exiting 3. Forget closes those, noted as an operator's resolve (the
    verifier does not open them again); an alert about a member stays open."""
    verifier = ReplicationLedger(redis_client, node="verifier-1")
    verifier.alert(Alert(REMOVED, ZAKAT, 3, "lagging", "3 behind"))
    verifier.alert(Alert("replica-1", ZAKAT, 3, "lagging", "3 behind"))
    about = f"{REMOVED}|{ZAKAT}|lagging"
    code, out, err = run(capsys, "repl", "forget", REMOVED, "--config", config, "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["resolved"] == [about]
    open_keys = [entry["key"] for entry in ReplicationLedger(redis_client).open_entries()]
    assert open_keys == [f"replica-1|{ZAKAT}|lagging"]
    assert ReplicationLedger(redis_client).operator_resolved([("verifier-1", about)])


# Review r25 F3: `redis` is the alerts' stand-in for shared keys and the stream (no node), and
# evidence only an operator closes stays open: a forget is no resolve of it.
def test_forgetting_redis_closes_no_alert_about_a_shared_key(
    capsys: pytest.CaptureFixture[str], config: Path, redis_client: Any
) -> None:
    verifier = ReplicationLedger(redis_client, node="verifier-1")
    verifier.alert(Alert("redis", "vledger:{ledgers}", 0, "redis_key_damaged", "of another type"))
    code, out, _ = run(capsys, "repl", "forget", "redis", "--config", config, "--json")
    assert code != 0 or json.loads(out)["resolved"] == [], out
    assert [e["key"] for e in ReplicationLedger(redis_client).open_entries()] == [
        "redis|vledger:{ledgers}|redis_key_damaged"
    ]


def test_forgetting_a_node_leaves_the_operator_s_evidence_against_it_open(
    capsys: pytest.CaptureFixture[str], config: Path, redis_client: Any
) -> None:
    verifier = ReplicationLedger(redis_client, node="verifier-1")
    verifier.alert(Alert(REMOVED, ZAKAT, 3, "equivocation", "two roots at 3"))
    code, _, err = run(capsys, "repl", "forget", REMOVED, "--config", config, "--json")
    assert code == 0, err
    assert [e["key"] for e in ReplicationLedger(redis_client).open_entries()] == [f"{REMOVED}|{ZAKAT}|equivocation"]


def test_forgetting_a_witness_keeps_the_evidence_it_raised_itself_open(
    capsys: pytest.CaptureFixture[str], config: Path, redis_client: Any
) -> None:
    """An `equivocation` alert's `node` is the witness that holds the evidence (PROTOCOL 10.5),
    so it lives in the witness's own hash; a forget is no resolve of it (10.10): it stays open,
    while the witness's own state (`lagging`) goes."""
    witness = ReplicationLedger(redis_client, node=REMOVED)
    witness.alert(Alert(REMOVED, ZAKAT, 3, "equivocation", "two roots at 3", source="ingest-1"))
    witness.alert(Alert(REMOVED, ZAKAT, 5, "lagging", "behind"))
    code, out, err = run(capsys, "repl", "forget", REMOVED, "--config", config, "--json")
    assert code == EXIT_OK, err
    open_keys = [e["key"] for e in ReplicationLedger(redis_client).open_entries()]
    assert f"{REMOVED}|{ZAKAT}|equivocation" in open_keys, (open_keys, json.loads(out))
    assert f"{REMOVED}|{ZAKAT}|lagging" not in open_keys


def test_forgetting_a_witness_whose_hash_holds_a_field_of_no_text(
    capsys: pytest.CaptureFixture[str], config: Path, redis_client: Any
) -> None:
    """The hash is the witness's own Redis user's to write, and a witness is often taken out
    because it misbehaves: a field name that is no UTF-8 is no alert and goes, and the forget
    still keeps the evidence open (it died with a UnicodeDecodeError, nothing deleted)."""
    witness = ReplicationLedger(redis_client, node=REMOVED)
    witness.alert(Alert(REMOVED, ZAKAT, 3, "equivocation", "two roots at 3", source="ingest-1"))
    redis_client.hset(witness.open_alerts_key_of(REMOVED), b"\xff\xfe|x|lagging", b"{}")
    code, _out, err = run(capsys, "repl", "forget", REMOVED, "--config", config, "--json")
    assert code == EXIT_OK, err
    open_keys = [e["key"] for e in ReplicationLedger(redis_client).open_entries()]
    assert f"{REMOVED}|{ZAKAT}|equivocation" in open_keys
    assert redis_client.hlen(witness.open_alerts_key_of(REMOVED)) == 1
