"""``vledger repl status``: its pure core, and the command against the session's real Redis.

The replication keys are written with ReplicationLedger directly, as the nodes would: no
node runs here.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.accounts import AccountRegistry, heartbeat_window
from vledger.broker.redis_server import RedisServer, connect, free_port, shown_url
from vledger.broker.replication import Alert, ReplicationLedger, StreamRecord
from vledger.broker.signing import generate_signing_key, load_signing_key, new_signing_key, signing_key_paths
from vledger.config.cluster import load_cluster
from vledger.config.settings import Limits
from vledger.ingest.key_chains import HomeKeys, KeyChains
from vledger.node import tree
from vledger.node.errors import RedisServerError
from vledger.node.key_rotation import ROTATION_KIND
from vledger.node.ledger import LedgerRules
from vledger.node.note import ALG_ED25519, Checkpoint, Note, SignerKey, sign
from vledger.node.record import Content, Entry
from vledger.node.rules.admin import ADMIN_LEDGER
from vledger.node.store import ChainStore
from vledger.node.witness import HomeSigner, WitnessSigner, witness_name
from vledger.tools import cli, repl_commands, status_command
from vledger.tools.repl_commands import EXIT_FAILED, EXIT_LAGGING, EXIT_OK, ledger_status

ROLES = {"ingest-1": "ingest", "ingest-2": "ingest", "replica-1": "replica", "replica-2": "replica"}
ELECTION = "election-2026"
ZAKAT = "zakat"
T0 = 1_790_000_000_000


def write_config(directory: Path, redis_url: str) -> Path:
    path = directory / "cluster.toml"
    path.write_text(
        f"""
[cluster]
name = "test"
redis = "{redis_url}"
default_home = "ingest-1"

[nodes.ingest-1]
role = "ingest"
port = 7101
pub_port = 7201

[nodes.ingest-2]
role = "ingest"
port = 7102
pub_port = 7202

[nodes.replica-1]
role = "replica"
port = 7111

[nodes.replica-2]
role = "replica"
port = 7112

[ledgers.zakat]
home = "ingest-2"
""",
        encoding="utf-8",
    )
    return path


def stream(repl: ReplicationLedger, ledger: str, home: str, size: int) -> None:
    repl.add([StreamRecord(ledger, h, f"record {h}".encode(), home) for h in range(size)])


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def repl(redis_client: Any) -> ReplicationLedger:
    return ReplicationLedger(redis_client)


@pytest.fixture
def config(tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("REDIS_URL", raising=False)
    return write_config(tmp_path, redis_server.url)


def node(status: dict[str, Any], name: str) -> dict[str, Any]:
    matches: list[dict[str, Any]] = [n for n in status["nodes"] if n["node"] == name]
    (entry,) = matches
    return entry


def ledger(report: dict[str, Any], name: str) -> dict[str, Any]:
    matches: list[dict[str, Any]] = [e for e in report["ledgers"] if e["ledger"] == name]
    (entry,) = matches
    return entry


# --- the pure core ---------------------------------------------------------------------------------


def test_lag_is_head_minus_held_and_a_replica_that_never_reported_lags() -> None:
    status = ledger_status(ELECTION, "ingest-1", 41, {"ingest-1": 41, "replica-1": 41}, ROLES)
    assert status.head == 41 and status.stream_head == 41 and status.home_held == 41
    assert [n.node for n in status.nodes] == ["ingest-1", "ingest-2", "replica-1", "replica-2"]  # home first
    by_name = {n.node: n for n in status.nodes}
    assert (by_name["replica-1"].lag, by_name["replica-1"].lagging) == (0, False)
    assert (by_name["replica-2"].held, by_name["replica-2"].lag, by_name["replica-2"].lagging) == (None, None, True)
    # Another ingest node is shown, but never expected to hold a ledger it is not home to.
    assert (by_name["ingest-2"].held, by_name["ingest-2"].lagging) == (None, False)
    assert status.lagging == ["replica-2"]
    assert status.counts == {2: 42}


def test_without_a_checkpoint_the_head_is_the_homes_held_height_or_the_streams_last() -> None:
    # The stream ahead of the home's report (it streams first).
    ahead_stream = ledger_status(ZAKAT, "ingest-2", 9, {"ingest-2": 7, "replica-1": 7, "replica-2": 7}, ROLES)
    assert (ahead_stream.head, ahead_stream.head_from, ahead_stream.home_held) == (9, "home", 7)
    assert {n.node: n.lag for n in ahead_stream.nodes}["ingest-2"] == 2
    assert ahead_stream.lagging == ["replica-1", "replica-2"]
    # A replica ahead of both (after a Redis outage it may report before the home does) is
    # shown unverified: no negative lag, and not taken for the head.
    ahead_replica = ledger_status(ZAKAT, "ingest-2", 5, {"ingest-2": 5, "replica-1": 6, "replica-2": 5}, ROLES)
    assert ahead_replica.head == 5 and ahead_replica.lagging == []
    replica = {n.node: n for n in ahead_replica.nodes}["replica-1"]
    assert (replica.held, replica.lag, replica.unverified, replica.lagging) == (6, None, True, False)


def test_a_held_height_forged_in_redis_makes_no_head_and_no_node_behind() -> None:
    """Finding 3: a node's Redis user may claim any height in its own vledger:{L}:held:<node>
    (and the admin's writes any name). Neither a
    configured node's forged height nor a name no configuration knows moves the head, puts the
    others behind or adds to a replication count."""
    held = {"ingest-1": 41, "replica-1": 99999, "replica-2": 41, "evil": 99999}
    status = ledger_status(ELECTION, "ingest-1", 41, held, ROLES)
    assert status.head == 41 and status.lagging == []
    by_name = {n.node: n for n in status.nodes}
    assert (by_name["replica-1"].unverified, by_name["replica-1"].lag) == (True, None)
    assert (by_name["evil"].role, by_name["evil"].unverified) == ("unknown", True)
    # replica-1's claim counted it a holder (outsider19 F8: "14 on 6 nodes" with 5 holding them).
    assert status.counts == {2: 42}
    # With a checkpoint that verifies, the head is what the home signed, whatever Redis claims.
    signed = ledger_status(ELECTION, "ingest-1", 99999, {**held, "ingest-1": 99999}, ROLES, checkpoint=42)
    assert (signed.head, signed.head_from, signed.lagging) == (41, "checkpoint", [])
    # A larger checkpoint a witness verifiably cosigned counts too, and a replica short of it lags.
    cosigned = ledger_status(ELECTION, "ingest-1", 50, {"ingest-1": 50, "replica-1": 50, "replica-2": 41}, ROLES,
                             checkpoint=42, cosigned={"replica-1": 51})  # fmt: skip
    assert (cosigned.head, cosigned.lagging) == (50, ["replica-2"])


def test_nodes_only_redis_names_are_shown_as_unknown_and_counted_nowhere() -> None:
    held = {"ingest-1": 9, "replica-1": 9, "replica-2": 9, "observer-7": 4}
    status = ledger_status(ELECTION, "ingest-1", 9, held, ROLES)
    observer = status.nodes[-1]
    assert (observer.node, observer.role, observer.held, observer.lag, observer.lagging) == (
        "observer-7",
        "unknown",
        4,
        5,
        False,
    )
    assert status.counts == {3: 10}  # no node of the configuration wrote observer-7's height
    assert status.lagging == []


def test_observers_hold_every_ledger_and_verifiers_none() -> None:
    roles = {**ROLES, "observer-1": "observer", "verifier-1": "verifier"}
    status = ledger_status(ELECTION, "ingest-1", 9, {"ingest-1": 9, "replica-1": 9, "replica-2": 9}, roles)
    assert [n.node for n in status.nodes] == ["ingest-1", "ingest-2", "observer-1", "replica-1", "replica-2"]
    assert status.lagging == ["observer-1"]  # never reported
    reported = ledger_status(ELECTION, "ingest-1", 9, {"ingest-1": 9, "observer-1": 9, "verifier-1": 3}, roles)
    assert {n.node: (n.role, n.lagging) for n in reported.nodes}["verifier-1"] == ("verifier", False)
    assert {n.node: n.lagging for n in reported.nodes}["observer-1"] is False


def test_a_home_that_the_configuration_lacks_is_still_listed_first() -> None:
    status = ledger_status("old", "ingest-9", 2, {"ingest-9": 2, "replica-1": 2, "replica-2": 2}, ROLES)
    assert status.nodes[0].node == "ingest-9" and status.nodes[0].role == "unknown"
    assert status.home_held == 2 and status.lagging == []


def test_a_ledger_without_records_lags_nowhere() -> None:
    status = ledger_status(ELECTION, "ingest-1", -1, {}, ROLES)
    assert status.head == -1 and status.stream_head is None and status.home_held is None
    assert status.lagging == [] and status.counts == {}


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6390/0", "redis://127.0.0.1:6390/0"),
        ("redis://:s3cret@10.0.0.5:6379/2", "redis://:***@10.0.0.5:6379/2"),
        ("rediss://vledger:s3cret@redis.example:6380/0", "rediss://vledger:***@redis.example:6380/0"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_a_password_never_shows(url: str, shown: str) -> None:
    assert shown_url(url) == shown


# --- the command against Redis ---------------------------------------------------------------------


def test_every_replica_current_exits_0(
    capsys: pytest.CaptureFixture[str], config: Path, repl: ReplicationLedger
) -> None:
    stream(repl, ZAKAT, "ingest-2", 5)
    for name in ("ingest-2", "replica-1", "replica-2"):
        repl.advance(name, ZAKAT, 4)
    code, out, err = run(capsys, "repl", "status", "--config", config)
    assert code == EXIT_OK, err
    lines = out.splitlines()
    assert lines[0].endswith(": 1 ledger") and "redis://127.0.0.1:" in lines[0]
    assert lines[2].split() == ["LEDGER", "HEAD", "STREAM", "NODE", "ROLE", "HELD", "LAG", "COSIGNED", "STATE"]
    assert lines[3].split() == ["zakat", "4", "4", "ingest-2", "home", "4", "0", "-"]
    assert lines[4].split() == ["ingest-1", "ingest", "-", "-", "-"]
    assert lines[5].split() == ["replica-1", "replica", "4", "0", "-", "current"]
    assert "zakat  no checkpoint that verifies" in out
    assert "zakat  5 on 3 nodes" in out
    assert out.rstrip().endswith("Every replica and observer holds every ledger up to its head.")


def test_keys_of_another_type_fail_no_status(
    capsys: pytest.CaptureFixture[str], config: Path, repl: ReplicationLedger
) -> None:
    # The admin's user can make any key another type (wt31): {ledgers} a string, a node's held
    # height or a checkpoint a hash failed the whole status ("a Redis key ... is of another type").
    stream(repl, ZAKAT, "ingest-2", 5)
    for name in ("ingest-2", "replica-1", "replica-2"):
        repl.advance(name, ZAKAT, 4)
    repl.client.set(repl.ledgers_key, "x")
    repl.client.delete(repl.held_key(ZAKAT, "replica-2"))
    repl.client.hset(repl.held_key(ZAKAT, "replica-2"), "x", "1")
    repl.client.hset(repl.checkpoint_key(ZAKAT), "x", "1")
    code, out, err = run(capsys, "repl", "status", "--config", config)
    lines = out.splitlines()
    assert lines, err
    assert lines[0].endswith(": 1 ledger"), out + err
    assert lines[3].split() == ["zakat", "4", "4", "ingest-2", "home", "4", "0", "-"]
    assert lines[6].split()[:3] == ["replica-2", "replica", "-"]  # no height read
    assert code == EXIT_LAGGING


def zakat_held_by_nodes_alive(repl: ReplicationLedger) -> tuple[AccountRegistry, int, int]:
    """zakat's 5 records held by its home and both replicas, every node alive now by the Redis
    clock; returns the registry, a heartbeat time older than the window (the configuration's
    accounts_poll_ms: 5 s) and the Redis clock's seconds."""
    stream(repl, ZAKAT, "ingest-2", 5)
    for name in ("ingest-2", "replica-1", "replica-2"):
        repl.advance(name, ZAKAT, 4)
    registry = AccountRegistry(repl.client)
    for name in ROLES:
        registry.record_applied(name, 1)
    seconds, _ = repl.client.time()
    return registry, int(seconds - heartbeat_window(5.0) - 1) * 1000, seconds


def shown_down(capsys: pytest.CaptureFixture[str], config: Path, name: str) -> tuple[str, dict[str, Any]]:
    """`repl status` with ``name`` down (zakat's only): exit 3, in the text and the JSON; the
    text, and zakat's JSON entry."""
    code, out, err = run(capsys, "repl", "status", "--config", config)
    assert code == EXIT_LAGGING, out + err
    assert f"Down (their held heights are what they last said): zakat ({name})" in out
    assert "Every replica and observer holds" not in out
    code, shown, err = run(capsys, "repl", "status", "--config", config, "--json")
    report = json.loads(shown)
    assert code == EXIT_LAGGING and report["current"] is False
    zakat = ledger(report, ZAKAT)
    assert node(zakat, name)["down"] is True
    return out, zakat


def test_a_replica_whose_heartbeat_stopped_is_down_not_current_and_exits_3(
    capsys: pytest.CaptureFixture[str], config: Path, repl: ReplicationLedger
) -> None:
    """A stopped replica's last held height was shown "current" (the outsider's finding): what
    Redis last heard of a node with no heartbeat for longer than the window is no state now."""
    registry, silent_ms, _ = zakat_held_by_nodes_alive(repl)
    code, out, err = run(capsys, "repl", "status", "--config", config)
    assert code == EXIT_OK, err
    repl.client.hset(registry.applied_key("replica-2"), "seen", silent_ms)  # its last heartbeat, then it stopped

    out, zakat = shown_down(capsys, config, "replica-2")
    (row,) = [line for line in out.splitlines() if line.split()[:1] == ["replica-2"]]
    assert row.split() == ["replica-2", "replica", "4", "0", "-", "down"]
    (row,) = [line for line in out.splitlines() if line.split()[:1] == ["replica-1"]]
    assert row.split()[-1] == "current"
    assert node(zakat, "replica-1")["down"] is False
    assert zakat["lagging"] == []  # it holds the head as far as anyone knows: down, not behind


def test_a_replica_stopped_cleanly_is_down_at_once(
    capsys: pytest.CaptureFixture[str], config: Path, repl: ReplicationLedger
) -> None:
    """A replica stopped with SIGTERM says so (AccountCache.stop): it is down from then on, not
    once its heartbeat window ended."""
    registry, _, _ = zakat_held_by_nodes_alive(repl)
    registry.record_stopped("replica-2")
    shown_down(capsys, config, "replica-2")
    registry.record_applied("replica-2", 1)  # started again: live
    code, out, err = run(capsys, "repl", "status", "--config", config)
    assert code == EXIT_OK, out + err


def test_a_node_removed_from_the_configuration_and_stopped_is_no_longer_listed(
    capsys: pytest.CaptureFixture[str], config: Path, repl: ReplicationLedger
) -> None:
    """o13 F7: replica-4, removed from the cluster file (and its account) and stopped, kept its
    rows in `repl status` for good ("unknown", its lag growing). One still running is shown."""
    registry, silent_ms, _ = zakat_held_by_nodes_alive(repl)
    for name in ("replica-4", "replica-5"):
        repl.advance(name, ZAKAT, 3)
        registry.record_applied(name, 1)
    registry.record_stopped("replica-4")  # stopped, as README's "Removing a node" says
    repl.client.hset(registry.applied_key("replica-5"), "seen", silent_ms)  # killed long ago
    code, out, err = run(capsys, "repl", "status", "--config", config, "--json")
    assert code == EXIT_OK, out + err
    assert [n["node"] for n in ledger(json.loads(out), ZAKAT)["nodes"]] == [
        "ingest-2",
        "ingest-1",
        "replica-1",
        "replica-2",
    ]
    registry.record_applied("replica-4", 1)  # still running (or started again): shown, counted nowhere
    code, out, err = run(capsys, "repl", "status", "--config", config, "--json")
    assert node(ledger(json.loads(out), ZAKAT), "replica-4")["role"] == "unknown"


def test_a_home_whose_heartbeat_stopped_is_down_and_exits_3(
    capsys: pytest.CaptureFixture[str], config: Path, repl: ReplicationLedger
) -> None:
    """outsider 25, H4: a ledger's home shown down, every replica current, exited 0 with "Every
    replica and observer holds every ledger up to its head": the home is the one node whose
    loss stops the ledger's writes, and README's table says exit 3 on down."""
    registry, silent_ms, seconds = zakat_held_by_nodes_alive(repl)
    repl.client.hset(registry.applied_key("ingest-2"), "seen", silent_ms)  # the home stopped

    out, _ = shown_down(capsys, config, "ingest-2")
    (row,) = [line for line in out.splitlines() if line.split()[:5] == ["zakat", "4", "4", "ingest-2", "home"]]
    assert row.split()[-1] == "down"
    # An ingest node that is no ledger's home being down is not the command's business.
    repl.client.hset(registry.applied_key("ingest-2"), "seen", seconds * 1000)
    repl.client.hset(registry.applied_key("ingest-1"), "seen", silent_ms)
    code, out, err = run(capsys, "repl", "status", "--config", config)
    assert code == EXIT_OK, out + err


def test_a_claim_above_the_head_is_named_not_taken_for_every_replica_holding(
    capsys: pytest.CaptureFixture[str], config: Path, repl: ReplicationLedger
) -> None:
    # outsider 20, F9: "Every replica and observer holds every ledger" beside an unverified row.
    stream(repl, ZAKAT, "ingest-2", 5)
    for name, height in (("ingest-2", 4), ("replica-1", 4), ("replica-2", 99999)):
        repl.advance(name, ZAKAT, height)
    code, out, err = run(capsys, "repl", "status", "--config", config)
    assert code == EXIT_OK, err
    assert "Every replica and observer holds" not in out
    # Past all the home holds (no checkpoint: the head is the home's): impossible (outsider43 LOW 3).
    impossible = "Impossible (held heights past all the home holds, counted nowhere): zakat (replica-2)"
    assert out.rstrip().endswith(impossible)


def test_a_lagging_replica_exits_3_and_the_json_says_who(
    capsys: pytest.CaptureFixture[str], config: Path, repl: ReplicationLedger
) -> None:
    stream(repl, ELECTION, "ingest-1", 42)
    stream(repl, ZAKAT, "ingest-2", 3)
    repl.advance("ingest-1", ELECTION, 41)
    repl.advance("replica-1", ELECTION, 41)
    repl.advance("replica-2", ELECTION, 30)
    repl.advance("observer-9", ELECTION, 10)
    for name in ("ingest-2", "replica-1", "replica-2"):
        repl.advance(name, ZAKAT, 2)

    code, out, err = run(capsys, "repl", "status", "--config", config, "--json")
    assert code == EXIT_LAGGING, err
    report = json.loads(out)
    assert set(report) == {"redis", "current", "ledgers"}
    assert report["current"] is False
    assert [e["ledger"] for e in report["ledgers"]] == [ELECTION, ZAKAT]
    election = ledger(report, ELECTION)
    assert set(election) == {
        "ledger",
        "home",
        "epoch",
        "claimed",
        "refused",
        "unproven",
        "head",
        "head_from",
        "stream_head",
        "home_held",
        "nodes",
        "counts",
        "lagging",
        "checkpoint",
        "cosigned",
    }
    assert (election["checkpoint"], election["cosigned"], election["epoch"], election["claimed"]) == (None, {}, 1, None)
    assert (election["home"], election["head"], election["stream_head"], election["home_held"]) == (
        "ingest-1",
        41,
        41,
        41,
    )
    assert [n["node"] for n in election["nodes"]] == ["ingest-1", "ingest-2", "replica-1", "replica-2", "observer-9"]
    assert node(election, "replica-2") == {
        "node": "replica-2",
        "role": "replica",
        "held": 30,
        "lag": 11,
        "lagging": True,
        "cosigned": None,
        "unverified": False,
        "down": False,
        "fenced": False,
        "impossible": False,
    }
    assert node(election, "ingest-2") == {
        "node": "ingest-2",
        "role": "ingest",
        "held": None,
        "lag": None,
        "lagging": False,
        "cosigned": None,
        "unverified": False,
        "down": False,
        "fenced": False,
        "impossible": False,
    }
    assert node(election, "observer-9")["role"] == "unknown"
    assert election["counts"] == [  # observer-9, a name the configuration lacks, is counted nowhere
        {"holders": 2, "records": 11},
        {"holders": 3, "records": 31},
    ]
    assert sum(c["records"] for c in election["counts"]) == 42
    assert election["lagging"] == ["replica-2"]
    assert ledger(report, ZAKAT)["lagging"] == []

    code, out, _ = run(capsys, "repl", "status", "--config", config)
    assert code == EXIT_LAGGING
    assert "Behind: election-2026 (replica-2)" in out
    assert "11 on 2 nodes, 31 on 3 nodes" in out
    (row,) = [line for line in out.splitlines() if " replica-2 " in f" {line} " and " 30 " in line]
    assert row.split() == ["replica-2", "replica", "30", "11", "-", "behind"]


def test_cosignatures_are_counted_only_when_they_verify_with_the_key_files(
    capsys: pytest.CaptureFixture[str], config: Path, repl: ReplicationLedger
) -> None:
    keys = config.parent / "keys"
    seeds = {name: generate_signing_key(keys, name) for name in ("ingest-1", "replica-1", "replica-2")}
    assert all(seeds.values())
    home = HomeSigner("test", load_signing_key(signing_key_paths(keys, "ingest-1")[0]).seed)
    stream(repl, ELECTION, "ingest-1", 10)
    old, latest = home.sign(ELECTION, 6, bytes(32)), home.sign(ELECTION, 10, bytes(range(32)))
    repl.set_checkpoints({ELECTION: latest.note})
    for name, checkpoint in (("replica-1", latest), ("replica-2", old)):
        witness = WitnessSigner(witness_name("test", name), load_signing_key(signing_key_paths(keys, name)[0]).seed)
        repl.publish_cosignature(ELECTION, name, checkpoint.size, witness.cosign(checkpoint, 1_790_000_000))
    forged = WitnessSigner(witness_name("test", "replica-2"), new_signing_key().seed).cosign(latest, 1_790_000_000)
    repl.publish_cosignature(ELECTION, "ghost", 10, forged)  # not a witness of this cluster
    out = run(capsys, "repl", "status", "--config", config, "--json")[1]
    election = ledger(json.loads(out), ELECTION)
    assert (election["checkpoint"], election["cosigned"]) == (10, {"replica-1": 10, "replica-2": 6})
    repl.publish_cosignature(ELECTION, "replica-2", 10, forged)  # its name, another key: not counted
    out = run(capsys, "repl", "status", "--config", config)[1]
    assert "election-2026  size 10: 1 cosignature (replica-1)" in out


def _admin_checkpoint(repl: ReplicationLedger, records: list[bytes], home: SignerKey) -> None:
    """The admin ledger's cache in Redis made ``records``, with ``home``'s checkpoint of them."""
    AccountRegistry(repl.client).rewrite_admin_records(records)
    frontier = tree.Frontier()
    for record in records:
        frontier.append(tree.leaf_hash(record))
    body = Checkpoint(home.name, len(records), frontier.root()).body()
    repl.client.set(repl.checkpoint_key(ADMIN_LEDGER), Note(body, (sign(body, home),)).encode())


def test_a_watch_keeps_counting_a_rotated_witness_when_redis_s_admin_checkpoint_is_set_back(
    config: Path, repl: ReplicationLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """wk28 (outsider o8 J5's rule): `repl status --watch` read the rotations again each round from
    whatever admin checkpoint Redis held; one set back to before replica-1's rotation stopped its
    cosignatures by its new key from counting. A round never proves fewer rotations than one before."""
    monkeypatch.setattr(repl_commands, "HISTORIES_FOR_S", 0.0)  # each round reads the rotations again
    vector = json.loads((Path(__file__).parents[2] / "vectors" / "node_keys.json").read_text(encoding="utf-8"))
    records = [base64.b64decode(r) for r in vector["admin_records_b64"]]  # genesis, account, replica-1's rotation
    keys = config.parent / "keys"
    for name in ("ingest-1", "replica-1"):
        generate_signing_key(keys, name)
    seed = load_signing_key(signing_key_paths(keys, "ingest-1")[0]).seed  # the admin home's and election's
    stream(repl, ELECTION, "ingest-1", 10)
    latest = HomeSigner("test", seed).sign(ELECTION, 10, bytes(range(32)))
    repl.set_checkpoints({ELECTION: latest.note})
    new_key = WitnessSigner(witness_name("test", "replica-1"), bytes([22]) * 32)  # tests/vectors/generate.py's
    repl.publish_cosignature(ELECTION, "replica-1", 10, new_key.cosign(latest, 1_790_010_000))  # past its window
    admin = SignerKey("test/admin", ALG_ED25519, seed)
    _admin_checkpoint(repl, records, admin)
    checker = repl_commands.Checker(load_cluster(config), repl.client)
    assert checker.witnessed(repl, ELECTION, ["replica-1"], latest.note).cosigned == {"replica-1": 10}
    _admin_checkpoint(repl, records[:2], admin)  # set back to before the rotation
    for _ in range(2):
        assert checker.witnessed(repl, ELECTION, ["replica-1"], latest.note).cosigned == {"replica-1": 10}
    # A status started now never proved the rotation: the set-back copy is all it has.
    fresh = repl_commands.Checker(load_cluster(config), repl.client)
    assert fresh.witnessed(repl, ELECTION, ["replica-1"], latest.note).cosigned == {}


def test_a_rotated_ledger_s_checkpoints_verify_along_the_chain_its_stream_holds(
    capsys: pytest.CaptureFixture[str], config: Path, repl: ReplicationLedger, tmp_path: Path
) -> None:
    """o21 F3: after `vledger ledger rotate-key`, the new key's file is on the home's host alone;
    repl status said "no checkpoint that verifies" (and status OK) for good. The rotation record
    in Redis's stream, signed by the key file's key the genesis pins, proves the new key."""
    keys = config.parent / "keys"
    for name in ("ingest-1", "replica-1"):
        generate_signing_key(keys, name)
    seed = load_signing_key(signing_key_paths(keys, "ingest-1")[0]).seed
    pinned = SignerKey(f"test/{ELECTION}", ALG_ED25519, seed).verifier()
    store = ChainStore(tmp_path / "home", origin="ingest-1", clock=lambda: T0)
    rules = LedgerRules((ROTATION_KIND, "note"), 0, {"checkpoint_key": pinned.encode()})
    store.create_ledger(Entry.prepare(rules.genesis_content(ELECTION, "admin", "create-1", T0), 0, Limits()))
    home = HomeKeys("test", seed, KeyChains(store, lambda ledger: None), make_seed=lambda: bytes(range(32)))
    home.rotate(ELECTION, "admin", store.append)
    for i in range(3):
        store.append(Entry.prepare(Content(ELECTION, "note", {"n": i}, "Zoe.1", f"r-{i}", T0 + i), 0, Limits()))
    size = store.size(ELECTION)
    note = home.sign(ELECTION, size, store.root(ELECTION, size))
    repl.set_checkpoints({ELECTION: note.note})
    witness = WitnessSigner(
        witness_name("test", "replica-1"), load_signing_key(signing_key_paths(keys, "replica-1")[0]).seed
    )
    repl.publish_cosignature(ELECTION, "replica-1", size, witness.cosign(note, 1_790_000_000))
    # Before the stream holds the rotation nothing proves the new key: status says so, not OK.
    rows = [data for _, data in store.range_raw(ELECTION)]
    repl.append(ELECTION, "ingest-1", 0, rows[:1])
    (unproven,) = repl_commands.read_status(repl, ROLES, repl_commands.Checker(load_cluster(config), repl.client))
    assert (unproven.checkpoint, unproven.cosigned, unproven.unverified_note) == (None, {}, True)
    problems = status_command.cluster_status("test", "redis://x", ROLES, {}, [unproven], [], None, 0).problems
    assert any(
        p.startswith(f"{ELECTION}: Redis's latest checkpoint verifies with no key of its home") for p in problems
    )
    repl.append(ELECTION, "ingest-1", 1, rows[1:])
    out = run(capsys, "repl", "status", "--config", config, "--json")[1]
    election = ledger(json.loads(out), ELECTION)
    assert (election["checkpoint"], election["cosigned"]) == (size, {"replica-1": size})
    out = run(capsys, "repl", "status", "--config", config)[1]
    assert f"{ELECTION}  size {size}: 1 cosignature (replica-1)" in out
    store.close()


def test_catching_up_turns_the_exit_code_to_0(
    capsys: pytest.CaptureFixture[str], config: Path, repl: ReplicationLedger
) -> None:
    stream(repl, ELECTION, "ingest-1", 10)
    repl.advance("ingest-1", ELECTION, 9)
    repl.advance("replica-1", ELECTION, 9)
    assert run(capsys, "repl", "status", "--config", config)[0] == EXIT_LAGGING  # replica-2 never reported
    repl.advance("replica-2", ELECTION, 9)
    assert run(capsys, "repl", "status", "--config", config)[0] == EXIT_OK


def test_no_ledgers_yet(capsys: pytest.CaptureFixture[str], config: Path, repl: ReplicationLedger) -> None:
    code, out, _ = run(capsys, "repl", "status", "--config", config)
    assert code == EXIT_OK and out.strip().endswith(": 0 ledgers")
    code, out, _ = run(capsys, "repl", "status", "--config", config, "--json")
    assert code == EXIT_OK and json.loads(out)["ledgers"] == [] and json.loads(out)["current"] is True


def test_redis_url_overrides_the_configuration(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    redis_server: RedisServer,
    repl: ReplicationLedger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream(repl, ZAKAT, "ingest-2", 1)
    config = write_config(tmp_path, f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    code, out, err = run(capsys, "repl", "status", "--config", config, "--json")
    assert code == EXIT_LAGGING, err  # nobody reported holding the one record
    assert json.loads(out)["redis"] == redis_server.url


def test_unreachable_redis_exits_1_with_a_code_and_no_password(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    config = write_config(tmp_path, f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    code, out, err = run(capsys, "repl", "status", "--config", config)
    assert code == EXIT_FAILED
    assert out == ""
    assert err.startswith("vledger: error: redis_server: cannot read the replication state from Redis at redis://:***@")
    assert "s3cret" not in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_an_invalid_configuration_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[cluster]\nname = 'x'\n", encoding="utf-8")
    code, _, err = run(capsys, "repl", "status", "--config", path)
    assert code == EXIT_FAILED and err.startswith("vledger: error: bad_settings: ")


@pytest.mark.parametrize(
    "argv",
    [
        ["repl"],
        ["repl", "status", "--config", "c.toml", "--watch", "0"],
        ["repl", "status", "--config", "c.toml", "--watch", "soon"],
        ["repl", "lag", "--config", "c.toml"],
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and "usage: vledger repl" in err


def test_help_documents_the_json_shape_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "repl", "status", "--help")
    assert code == 0
    for words in (
        '"stream_head"',
        '"home_held"',
        '"lagging"',
        '"counts"',
        "Exit codes",
        "3 some replica, observer or standby lags",
        "or a ledger's home is down",
        '"refused"',
        "4, before 3, a ledger is unproven",
    ):
        assert words in out
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "repl" in out


# --- --watch ---------------------------------------------------------------------------------------


class Rounds:
    """A sleep that lets ``rounds`` rounds run, calling ``between`` after each, then interrupts."""

    def __init__(self, rounds: int, between: Any = None) -> None:
        self.left = rounds
        self.between = between
        self.slept: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        if self.between is not None:
            self.between(len(self.slept))
        self.left -= 1
        if self.left <= 0:
            raise KeyboardInterrupt


def test_watch_prints_a_round_each_interval_and_exits_with_the_last_code(
    capsys: pytest.CaptureFixture[str], redis_server: RedisServer, repl: ReplicationLedger
) -> None:
    stream(repl, ZAKAT, "ingest-2", 3)
    repl.advance("ingest-2", ZAKAT, 2)
    repl.advance("replica-1", ZAKAT, 2)

    def catch_up(round_done: int) -> None:
        if round_done == 1:
            repl.advance("replica-2", ZAKAT, 2)

    sleep = Rounds(2, catch_up)
    code = repl_commands.watch_status(repl, ROLES, redis_server.url, as_json=True, interval=2.5, sleep=sleep)
    assert code == EXIT_OK  # the second round's: replica-2 caught up in between
    assert sleep.slept == [2.5, 2.5]
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert (first["current"], second["current"]) == (False, True)


def test_watch_goes_on_when_redis_goes_away(capsys: pytest.CaptureFixture[str], redis_server: RedisServer) -> None:
    # A Redis of this test's own (the session's must stay up), stopped after the first round.
    directory = Path(tempfile.mkdtemp(prefix="vledger-watch-", dir="/tmp"))
    server = RedisServer(directory, executable=redis_server.executable)
    server.start()
    client = connect(server.url, timeout=0.5)
    try:
        repl = ReplicationLedger(client)
        stream(repl, ZAKAT, "ingest-2", 1)

        def stop_redis(round_done: int) -> None:
            if round_done == 1:
                server.stop()

        sleep = Rounds(2, stop_redis)
        code = repl_commands.watch_status(repl, ROLES, server.url, as_json=False, interval=1.0, sleep=sleep)
    finally:
        client.close()
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    assert code == EXIT_FAILED  # the last round's
    out, err = capsys.readouterr()
    assert "zakat" in out and out.count(": 1 ledger") == 1
    assert err.startswith("vledger: error: redis_server: ") and len(err.splitlines()) == 1


def test_show_status_turns_redis_errors_into_redis_server_errors(redis_server: RedisServer) -> None:
    client = connect(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    try:
        with pytest.raises(RedisServerError, match="cannot read the replication state"):
            repl_commands.show_status(ReplicationLedger(client), ROLES, "redis://nowhere/0", as_json=True)
    finally:
        client.close()


def with_standby(config: Path) -> tuple[HomeSigner, HomeSigner, WitnessSigner, WitnessSigner]:
    """election-2026 homed on ingest-1 with ingest-2 its standby, and every node's key file: the
    signers of ingest-1, ingest-2 (checkpoints) and of replica-1, replica-2 (cosignatures)."""
    config.write_text(
        config.read_text() + '\n[ledgers.election-2026]\nhome = "ingest-1"\nstandby = "ingest-2"\n', encoding="utf-8"
    )
    keys = config.parent / "keys"
    for name in ("ingest-1", "ingest-2", "replica-1", "replica-2"):
        generate_signing_key(keys, name)
    old, new = (
        HomeSigner("test", load_signing_key(signing_key_paths(keys, n)[0]).seed) for n in ("ingest-1", "ingest-2")
    )
    replica_1, replica_2 = (
        WitnessSigner(witness_name("test", n), load_signing_key(signing_key_paths(keys, n)[0]).seed)
        for n in ("replica-1", "replica-2")
    )
    return old, new, replica_1, replica_2


def test_a_home_or_epoch_only_redis_names_is_shown_as_a_claim_until_a_cosigned_note_proves_it(
    capsys: pytest.CaptureFixture[str], config: Path, repl: ReplicationLedger
) -> None:
    """PROTOCOL 10.9: every ingest node's Redis user writes vledger:{ledgers} and its epochs
    hash. Redis naming ingest-2 the home of epoch 2 (as a promotion writes it) is a claim: the
    cluster file's home stays the home and its checkpoints count, while neither the standby's
    note alone nor one with a forged cosignature proves the handover. Once a witness cosigned
    the standby's checkpoint of epoch 2, ingest-2 is the home and the fenced home's epoch-1
    notes no longer count (a fenced home's may lie past the handover)."""
    old, new, replica_1, replica_2 = with_standby(config)
    stream(repl, ELECTION, "ingest-1", 12)
    epoch_1 = old.sign(ELECTION, 10, bytes(range(32)))
    repl.set_checkpoints({ELECTION: epoch_1.note})
    repl.publish_cosignature(ELECTION, "replica-2", 10, replica_2.cosign(epoch_1, 1_790_000_000))
    assert repl.promote(ELECTION, 2, "ingest-2") is None  # the epochs hash and the home map, as a promotion
    made_up = new.sign(ELECTION, 500, bytes(range(1, 33)), ("vledger-epoch 2 ingest-2",))
    forger = WitnessSigner(witness_name("test", "replica-1"), new_signing_key().seed)
    for unproven in (made_up.note, forger.cosign(made_up, 1_790_000_000)):
        repl.set_checkpoints({ELECTION: unproven})
        repl.publish_cosignature(ELECTION, "replica-1", 500, unproven)
        election = ledger(json.loads(run(capsys, "repl", "status", "--config", config, "--json")[1]), ELECTION)
        assert (election["home"], election["epoch"], election["claimed"]) == (
            "ingest-1",
            1,
            {"epoch": 2, "home": "ingest-2"},
        )
        assert (election["head"], election["checkpoint"], election["cosigned"]) == (9, None, {"replica-2": 10})
    out = run(capsys, "repl", "status", "--config", config)[1]
    assert "Claimed, unproven" in out
    assert (
        "election-2026  Redis names ingest-2 the home (epoch 2); shown: ingest-1 (the cluster file's home, no "
        "handover proven)"
    ) in out
    assert [ELECTION, "9", "11", "ingest-1", "home"] in [line.split()[:5] for line in out.splitlines()]
    # The standby's checkpoint of epoch 2, cosigned by replica-1's key: proven.
    epoch_2 = new.sign(ELECTION, 12, bytes(range(2, 34)), ("vledger-epoch 2 ingest-2",))
    repl.set_checkpoints({ELECTION: epoch_2.note})
    repl.publish_cosignature(ELECTION, "replica-1", 12, replica_1.cosign(epoch_2, 1_790_000_000))
    election = ledger(json.loads(run(capsys, "repl", "status", "--config", config, "--json")[1]), ELECTION)
    assert (election["home"], election["epoch"], election["claimed"]) == ("ingest-2", 2, None)
    assert (election["checkpoint"], election["cosigned"]) == (12, {"replica-1": 12})  # not replica-2's epoch-1 note
    assert "Claimed, unproven" not in run(capsys, "repl", "status", "--config", config)[1]


def test_an_epochs_hash_made_a_string_shows_the_epoch_the_notes_prove(
    capsys: pytest.CaptureFixture[str], config: Path, repl: ReplicationLedger
) -> None:
    """Any ingest node's Redis user may SET vledger:{ledgers}:epochs (review17 2): the command
    failed on it. It names no claim then; the witnessed note proves the handover as before."""
    _, new, replica_1, _ = with_standby(config)
    stream(repl, ELECTION, "ingest-2", 12)
    assert repl.promote(ELECTION, 2, "ingest-2") is None  # as the promotions write Redis
    epoch_2 = new.sign(ELECTION, 12, bytes(range(2, 34)), ("vledger-epoch 2 ingest-2",))
    repl.set_checkpoints({ELECTION: epoch_2.note})
    repl.publish_cosignature(ELECTION, "replica-1", 12, replica_1.cosign(epoch_2, 1_790_000_000))
    repl.client.set(repl.epochs_key, "x")
    election = ledger(json.loads(run(capsys, "repl", "status", "--config", config, "--json")[1]), ELECTION)
    assert (election["home"], election["epoch"], election["claimed"]) == ("ingest-2", 2, None)


def test_a_home_map_entry_only_redis_writes_names_no_home(
    capsys: pytest.CaptureFixture[str], config: Path, repl: ReplicationLedger
) -> None:
    """One HSET vledger:{ledgers} election-2026 replica-1: the cluster file's home ingest-1 is
    still the home (its checkpoint counts, the head is its), replica-1 a replica, the entry a claim."""
    keys = config.parent / "keys"
    generate_signing_key(keys, "ingest-1")
    home = HomeSigner("test", load_signing_key(signing_key_paths(keys, "ingest-1")[0]).seed)
    stream(repl, ELECTION, "ingest-1", 10)
    repl.set_checkpoints({ELECTION: home.sign(ELECTION, 10, bytes(range(32))).note})
    repl.client.hset(repl.ledgers_key, ELECTION, "replica-1")
    election = ledger(json.loads(run(capsys, "repl", "status", "--config", config, "--json")[1]), ELECTION)
    assert (election["home"], election["claimed"], election["checkpoint"]) == (
        "ingest-1",
        {"epoch": 1, "home": "replica-1"},
        10,
    )
    assert node(election, "replica-1")["role"] == "replica"


def test_a_fenced_home_is_shown_fenced_and_counted_in_no_replication_count(
    capsys: pytest.CaptureFixture[str], config: Path, repl: ReplicationLedger
) -> None:
    """Outsider 25 H8: after a proven promotion, the old home's held height counted it a holder
    ("712 on 7 nodes"), though its record at the handover's height was its own orphan, not the
    chain's (PROTOCOL 10.9: a replaced home is no copy of the ledger)."""
    _, new, replica_1, replica_2 = with_standby(config)
    stream(repl, ELECTION, "ingest-2", 14)
    epoch_2 = new.sign(ELECTION, 14, bytes(range(2, 34)), ("vledger-epoch 2 ingest-2",))
    repl.set_checkpoints({ELECTION: epoch_2.note})
    for witness, signer in (("replica-1", replica_1), ("replica-2", replica_2)):
        repl.publish_cosignature(ELECTION, witness, 14, signer.cosign(epoch_2, 1_790_000_000))
    assert repl.promote(ELECTION, 2, "ingest-2") is None
    # The handover record is at 11: ingest-1 holds records 0..11, its 11 the orphan it placed.
    for node_name, height in (("ingest-1", 11), ("ingest-2", 13), ("replica-1", 13), ("replica-2", 13)):
        repl.set_held(node_name, ELECTION, height)
    code, out, _ = run(capsys, "repl", "status", "--config", config, "--json")
    election = ledger(json.loads(out), ELECTION)
    assert (code, election["home"], election["epoch"], election["head"]) == (EXIT_OK, "ingest-2", 2, 13)
    assert election["counts"] == [{"holders": 3, "records": 14}]  # not 12 on 4 nodes and 2 on 3
    fenced = node(election, "ingest-1")
    assert (fenced["fenced"], fenced["held"], fenced["lag"], fenced["lagging"]) == (True, 11, None, False)
    assert not any(n["fenced"] for n in election["nodes"] if n["node"] != "ingest-1")
    code, out, _ = run(capsys, "repl", "status", "--config", config)
    assert code == EXIT_OK
    assert [ELECTION, "13", "13", "ingest-2", "home"] in [line.split()[:5] for line in out.splitlines()]
    assert ["ingest-1", "ingest", "11", "-", "-", "fenced"] in [line.split() for line in out.splitlines()]
    assert f"  {ELECTION}  14 on 3 nodes" in out
    assert (
        f"Fenced (a proven handover replaced them as home; their copies are not counted): {ELECTION} (ingest-1)" in out
    )
    assert "Every replica and observer holds every ledger up to its head." in out


def test_after_the_file_swaps_home_and_standby_the_newest_witnessed_epoch_names_the_home(
    capsys: pytest.CaptureFixture[str], config: Path, repl: ReplicationLedger
) -> None:
    """A failback (10.9): the operator swaps the ledger's home and standby in the cluster file
    once ingest-2 took over. The command took a handover only from a note of the standby's key
    file naming another home than the file's: with the file swapped it showed epoch 2 as epoch
    1 of its home, and never epoch 3, the genesis home's again (signed by the home's key file).
    Either key file's witnessed note counts; the newest epoch names the home."""
    old, new, replica_1, replica_2 = with_standby(config)
    text = config.read_text()
    config.write_text(
        text.replace('home = "ingest-1"\nstandby = "ingest-2"', 'home = "ingest-2"\nstandby = "ingest-1"')
    )
    stream(repl, ELECTION, "ingest-2", 12)
    assert repl.promote(ELECTION, 2, "ingest-2") is None  # as the promotions write Redis
    epoch_2 = new.sign(ELECTION, 12, bytes(range(2, 34)), ("vledger-epoch 2 ingest-2",))
    repl.set_checkpoints({ELECTION: epoch_2.note})
    repl.publish_cosignature(ELECTION, "replica-1", 12, replica_1.cosign(epoch_2, 1_790_000_000))
    repl.publish_cosignature(ELECTION, "replica-2", 12, replica_2.cosign(epoch_2, 1_790_000_000))
    election = ledger(json.loads(run(capsys, "repl", "status", "--config", config, "--json")[1]), ELECTION)
    assert (election["home"], election["epoch"]) == ("ingest-2", 2)
    assert repl.promote(ELECTION, 3, "ingest-1") is None
    epoch_3 = old.sign(ELECTION, 14, bytes(range(3, 35)), ("vledger-epoch 3 ingest-1",))
    repl.set_checkpoints({ELECTION: epoch_3.note})
    repl.publish_cosignature(ELECTION, "replica-1", 14, replica_1.cosign(epoch_3, 1_790_000_000))
    election = ledger(json.loads(run(capsys, "repl", "status", "--config", config, "--json")[1]), ELECTION)
    assert (election["home"], election["epoch"], election["claimed"]) == ("ingest-1", 3, None)
    assert election["cosigned"] == {"replica-1": 14}  # replica-2's is of epoch 2, below
    # The file as it was before the swap: epoch 3 is no failback the operator made (review r30
    # F1: the stolen genesis key's, as witnesses refuse it), and epoch 2 stays the newest.
    config.write_text(text)
    election = ledger(json.loads(run(capsys, "repl", "status", "--config", config, "--json")[1]), ELECTION)
    assert (election["home"], election["epoch"]) == ("ingest-2", 2)


def test_an_epoch_the_file_does_not_allow_a_lagging_standby_and_an_unverified_note_exit_non_zero(
    capsys: pytest.CaptureFixture[str], config: Path, repl: ReplicationLedger
) -> None:
    """Outsider o24 F1: after a failback (file epoch = 3) and a second outage (ingest-2 promoted,
    epoch 4), the README's swap left `epoch = 3`: ingest-1, the standby, stored nothing past the
    handover, while repl status exited 0 printing "no checkpoint that verifies", "shown:
    ingest-2 (epoch 1)" (never epoch 1's home), a standby 150 behind and "Every replica and
    observer holds every ledger up to its head". It names the witnessed epoch 4 the file does
    not allow (and what to state), exits 4 while it or a claim is unproven, 3 while the
    standby lags, 0 once the file states epoch 4 and the standby caught up."""
    _, new, replica_1, replica_2 = with_standby(config)
    text = config.read_text()
    config.write_text(
        text.replace('home = "ingest-1"\nstandby = "ingest-2"', 'home = "ingest-2"\nstandby = "ingest-1"\nepoch = 3')
    )
    stream(repl, ELECTION, "ingest-2", 497)
    assert repl.promote(ELECTION, 4, "ingest-2") is None  # as the promotion of epoch 4 wrote Redis
    epoch_4 = new.sign(ELECTION, 497, bytes(range(4, 36)), ("vledger-epoch 4 ingest-2",))
    repl.set_checkpoints({ELECTION: epoch_4.note})
    for witness, signer in (("replica-1", replica_1), ("replica-2", replica_2)):
        repl.publish_cosignature(ELECTION, witness, 497, signer.cosign(epoch_4, 1_790_000_000))
        repl.set_held(witness, ELECTION, 496)
    repl.set_held("ingest-2", ELECTION, 496)
    repl.set_held("ingest-1", ELECTION, 346)  # stopped at the handover it refused
    code, out, _ = run(capsys, "repl", "status", "--config", config, "--json")
    election = ledger(json.loads(out), ELECTION)
    assert code == repl_commands.EXIT_UNPROVEN
    assert election["refused"] == {"epoch": 4, "home": "ingest-2"}
    assert node(election, "ingest-1")["lagging"] is True and "ingest-1" in election["lagging"]
    code, out, _ = run(capsys, "repl", "status", "--config", config)
    assert code == repl_commands.EXIT_UNPROVEN
    assert "(epoch 1)" not in out and "Every replica and observer holds" not in out
    assert f"{ELECTION}  a witness cosigned epoch 4 at ingest-2" in out and "epoch = 4" in out, out
    assert f"Behind: {ELECTION} (ingest-1)" in out
    (status,) = repl_commands.read_status(repl, ROLES, repl_commands.Checker(load_cluster(config), repl.client))
    problems = status_command.cluster_status("test", "redis://x", ROLES, {}, [status], [], None, 0).problems
    assert any("epoch = 4" in problem for problem in problems), problems  # vledger status says it too
    # The file states the epoch made: proven, the standby's lag alone is left (exit 3), then none.
    config.write_text(config.read_text().replace("epoch = 3", "epoch = 4"))
    code, out, _ = run(capsys, "repl", "status", "--config", config, "--json")
    election = ledger(json.loads(out), ELECTION)
    assert (code, election["home"], election["epoch"], election["refused"]) == (EXIT_LAGGING, "ingest-2", 4, None)
    assert election["checkpoint"] == 497
    repl.set_held("ingest-1", ELECTION, 496)
    code, out, _ = run(capsys, "repl", "status", "--config", config)
    assert code == EXIT_OK and out.rstrip().endswith("Every replica and observer holds every ledger up to its head.")


def test_a_checkpoint_in_redis_that_no_key_verifies_or_a_claimed_home_exits_4(
    capsys: pytest.CaptureFixture[str], config: Path, repl: ReplicationLedger
) -> None:
    """o24 F1: "no checkpoint that verifies" of a ledger whose checkpoint Redis holds, and a home
    Redis names that nothing proves, were printed under exit 0."""
    keys = config.parent / "keys"
    generate_signing_key(keys, "ingest-2")
    stream(repl, ZAKAT, "ingest-2", 5)
    for name in ("ingest-2", "replica-1", "replica-2"):
        repl.advance(name, ZAKAT, 4)
    stranger = HomeSigner("test", new_signing_key().seed)
    repl.set_checkpoints({ZAKAT: stranger.sign(ZAKAT, 5, bytes(range(32))).note})
    code, out, _ = run(capsys, "repl", "status", "--config", config)
    assert code == repl_commands.EXIT_UNPROVEN and "zakat  no checkpoint that verifies" in out, out
    home = HomeSigner("test", load_signing_key(signing_key_paths(keys, "ingest-2")[0]).seed)
    repl.set_checkpoints({ZAKAT: home.sign(ZAKAT, 5, bytes(range(32))).note})
    assert run(capsys, "repl", "status", "--config", config)[0] == EXIT_OK
    repl.client.hset(repl.ledgers_key, ZAKAT, "replica-1")
    code, out, _ = run(capsys, "repl", "status", "--config", config)
    assert code == repl_commands.EXIT_UNPROVEN and "Claimed, unproven" in out


def test_a_home_the_verifier_finds_unreachable_is_down_though_its_heartbeat_goes_on(
    capsys: pytest.CaptureFixture[str], config: Path, repl: ReplicationLedger
) -> None:
    """o24 F3: a home cut off from its clients (not from Redis: its heartbeats go on) left repl
    status at exit 0 for 60+ s, though the README says it exits 3 for a home down. The verifier's
    home_unreachable alert of it (PROTOCOL 10.6) shows it down until it is resolved; the same
    alert in the hash of a node that is no verifier of the configuration does not."""
    config.write_text(config.read_text() + '\n[nodes.verifier-1]\nrole = "verifier"\nport = 7121\n')
    stream(repl, ZAKAT, "ingest-2", 5)
    for name in ("ingest-2", "replica-1", "replica-2"):
        repl.advance(name, ZAKAT, 4)
    assert run(capsys, "repl", "status", "--config", config)[0] == EXIT_OK
    stranger = ReplicationLedger(repl.client, node="replica-1")
    stranger.alert(Alert("ingest-2", ZAKAT, 5, "home_unreachable", "made up by replica-1's Redis user"))
    assert run(capsys, "repl", "status", "--config", config)[0] == EXIT_OK
    verifier = ReplicationLedger(repl.client, node="verifier-1")
    verifier.alert(Alert("ingest-2", ZAKAT, 5, "home_unreachable", "answered none of this verifier's reads for 31 s"))
    code, out, _ = run(capsys, "repl", "status", "--config", config, "--json")
    zakat = ledger(json.loads(out), ZAKAT)
    assert code == EXIT_LAGGING and node(zakat, "ingest-2")["down"] is True
    assert not node(zakat, "replica-1")["down"]
    verifier.resolve([f"ingest-2|{ZAKAT}|home_unreachable"])
    assert run(capsys, "repl", "status", "--config", config)[0] == EXIT_OK


def test_a_held_height_past_the_head_of_a_down_node_is_flagged_impossible_and_counted_nowhere(
    capsys: pytest.CaptureFixture[str], config: Path, repl: ReplicationLedger
) -> None:
    """outsider43 LOW 3: a down replica's held key set to 999999 by its own Redis user was
    shown "down" like any stopped node's, and the text gave no sign the height was impossible.
    A held height past the head is flagged (state, JSON and the summary) down or not, and no
    replication count takes it."""
    registry, silent_ms, _ = zakat_held_by_nodes_alive(repl)
    repl.client.set(repl.held_key(ZAKAT, "replica-2"), 999999)
    repl.client.hset(registry.applied_key("replica-2"), "seen", silent_ms)
    code, out, err = run(capsys, "repl", "status", "--config", config)
    assert code == EXIT_LAGGING, out + err
    (row,) = [line for line in out.splitlines() if line.split()[:1] == ["replica-2"]]
    assert row.split() == ["replica-2", "replica", "999999", "-", "-", "impossible"]
    assert "zakat  5 on 2 nodes" in out  # the home and replica-1, never replica-2
    assert "Impossible (held heights past all the home holds, counted nowhere): zakat (replica-2)" in out
    code, shown, err = run(capsys, "repl", "status", "--config", config, "--json")
    replica = node(ledger(json.loads(shown), ZAKAT), "replica-2")
    assert (replica["held"], replica["impossible"], replica["down"]) == (999999, True, True)


def test_a_ledger_only_the_ledgers_hash_names_or_no_ledger_name_is_not_listed(
    capsys: pytest.CaptureFixture[str], config: Path, repl: ReplicationLedger
) -> None:
    """outsider43 M1: any ingest node's Redis user may HSET ``ghost`` and ``<script>x</script>``
    into ``{ledgers}``; both were listed as ledgers ("no checkpoint that verifies")."""
    stream(repl, ZAKAT, "ingest-2", 5)
    repl.advance("ingest-2", ZAKAT, 4)
    repl.client.hset(repl.ledgers_key, mapping={"ghost": "ingest-2", "<script>x</script>": "ingest-1"})
    _, out, err = run(capsys, "repl", "status", "--config", config, "--json")
    assert [entry["ledger"] for entry in json.loads(out)["ledgers"]] == [ZAKAT], out + err
    repl.advance("replica-1", "ghost", 0)  # a node says it holds it: shown (and judged) as any other
    _, out, err = run(capsys, "repl", "status", "--config", config, "--json")
    assert [entry["ledger"] for entry in json.loads(out)["ledgers"]] == ["ghost", ZAKAT], out + err
