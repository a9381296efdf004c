"""``vledger status``: its pure core from made-up answers, and the command against the session's Redis
with nodes that do not run (each must cost the hello timeout once, not once per node)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.accounts import AccountRegistry
from vledger.broker.redis_server import RedisServer, free_port, free_ports
from vledger.broker.replication import Alert, ReplicationLedger, StreamRecord
from vledger.broker.signing import load_signing_key, new_signing_key, signing_key_paths
from vledger.config.cluster import load_cluster
from vledger.node.errors import RedisServerError
from vledger.node.witness import HomeSigner, WitnessSigner, witness_name
from vledger.tools import cli, status_command
from vledger.tools.node_commands import ensure_cluster_keys
from vledger.tools.repl_commands import ledger_status
from vledger.tools.repl_commands import status_json as repl_json
from vledger.tools.status_command import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PROBLEM,
    ClusterStatus,
    NodeAnswer,
    ProgramState,
    SupervisordState,
    cluster_status,
    node_rows,
    print_status,
    read_supervisord,
    status_json,
    verifier_line,
)

URL = "redis://:s3cret@127.0.0.1:6390/0"
NOW_MS = 1_800_000_000_000
ROLES = {
    "verifier-1": "verifier",
    "replica-1": "replica",
    "ingest-1": "ingest",
    "observer-1": "observer",
}
ELECTION = "election-2026"


def hello(name: str, role: str, **extra: Any) -> dict[str, Any]:
    return {"node": name, "version": "0.1.0", "protocol": 1, "ledgers": [], "node_role": role, **extra}


def verifier_status(copies: dict[str, int]) -> dict[str, Any]:
    """A verifier's status whose copies last completed a sweep at these times (0: never)."""
    return {
        "checked": 120,
        "swept": 3_400,
        "open_alerts": [],
        "copies": {
            copy: {"sweeps": 1 if done else 0, "at": 0, "last_complete_ms": done, "records": 43 if done else 0}
            for copy, done in copies.items()
        },
    }


def answers(**changes: NodeAnswer) -> dict[str, NodeAnswer]:
    """Every node up and current; ``changes`` replace some of them."""
    healthy = {
        "ingest-1": NodeAnswer("ingest-1", hello("ingest-1", "ingest")),
        "replica-1": NodeAnswer("replica-1", hello("replica-1", "replica", current=True, behind={})),
        "observer-1": NodeAnswer("observer-1", hello("observer-1", "observer", current=True, behind={})),
        "verifier-1": NodeAnswer(
            "verifier-1",
            hello("verifier-1", "verifier"),
            verifier_status({"ingest-1|election-2026": NOW_MS - 4_000, "replica-1|election-2026": NOW_MS - 9_000}),
        ),
    }
    return {**healthy, **{name.replace("_", "-"): answer for name, answer in changes.items()}}


def ledgers(held: int = 42) -> list[Any]:
    heights = {"ingest-1": 42, "replica-1": held, "observer-1": 42}
    return [ledger_status(ELECTION, "ingest-1", 42, heights, ROLES)]


def status_of(
    node_answers: dict[str, NodeAnswer] | None = None,
    *,
    held: int = 42,
    open_alerts: list[dict[str, Any]] | None = None,
    supervisord: SupervisordState | None = None,
    accounts_version: int | None = 7,
) -> ClusterStatus:
    return cluster_status(
        "test",
        URL,
        ROLES,
        answers() if node_answers is None else node_answers,
        ledgers(held),
        open_alerts or [],
        supervisord,
        NOW_MS,
        accounts_version=accounts_version,
    )


def supervised(**states: str) -> SupervisordState:
    programs = {name: ProgramState("RUNNING", 100 + i) for i, name in enumerate(["redis", *ROLES])}
    programs.update({name.replace("_", "-"): ProgramState(state, None) for name, state in states.items()})
    return SupervisordState("/tmp/vl/supervisor.sock", 99, programs)


# --- the pure core ---------------------------------------------------------------------------------


def test_everything_up_and_current_is_ok() -> None:
    status = status_of()
    assert status.ok and status.exit_code == EXIT_OK and status.problems == ()
    assert [n.node for n in status.nodes] == ["ingest-1", "replica-1", "observer-1", "verifier-1"]  # by role
    header, rows = node_rows(status)
    assert header == ("NODE", "ROLE", "STATE", "SYNC", "NOTE")  # no PROCESS column without --run-dir
    assert rows == [
        ("ingest-1", "ingest", "up", "", ""),
        ("replica-1", "replica", "up", "current", ""),
        ("observer-1", "observer", "up", "current", ""),
        ("verifier-1", "verifier", "up", "", ""),
    ]


def test_a_standby_s_follow_restarts_show_in_the_table_and_the_json_but_are_no_problem() -> None:
    standby = {"ledgers": ["votes", "election-2026"], "follow_restarts": 3}
    status = status_of(answers(ingest_1=NodeAnswer("ingest-1", hello("ingest-1", "ingest", standby=standby))))
    _, rows = node_rows(status)
    assert rows[0] == (
        "ingest-1",
        "ingest",
        "up",
        "",
        "standby follow (votes, election-2026) restarted 3 times after a bug: see its log",
    )
    assert status_json(status)["nodes"][0]["standby"] == standby
    assert status.ok  # it follows again: the count is for the operator to read, not an exit code
    quiet = status_of(
        answers(ingest_1=NodeAnswer("ingest-1", hello("ingest-1", "ingest", standby={**standby, "follow_restarts": 0})))
    )
    assert node_rows(quiet)[1][0][-1] == ""
    assert status_json(quiet)["nodes"][0]["standby"]["follow_restarts"] == 0


def test_a_standby_the_cluster_file_names_that_does_not_follow_its_ledger_is_a_problem() -> None:
    """Outsider o21 F1: a ledger named in the cluster file after its standby started is not
    followed (the node reads the file at its start), and status said OK: a promotion then finds
    the standby holding nothing. Its hello says which ledgers it follows; the file names more."""
    roles = {**ROLES, "ingest-2": "ingest"}

    def status(standby: dict[str, Any] | None) -> ClusterStatus:
        extra = {} if standby is None else {"standby": standby}
        node_answers = {**answers(), "ingest-2": NodeAnswer("ingest-2", hello("ingest-2", "ingest", **extra))}
        return cluster_status(
            "test",
            URL,
            roles,
            node_answers,
            ledgers(),
            [],
            None,
            NOW_MS,
            standbys={ELECTION: "ingest-2", "gone": "ingest-2"},
        )

    following = status({"ledgers": [ELECTION], "follow_restarts": 0})
    assert following.ok, following.problems
    for hello_standby in (None, {"ledgers": ["other"], "follow_restarts": 0}):
        stale = status(hello_standby)
        assert stale.exit_code == EXIT_PROBLEM
        assert stale.problems == (
            f"{ELECTION}: its standby ingest-2 does not follow it (ingest-2 read its cluster file before the file"
            " named it so): restart ingest-2",
        )  # not "gone": no such ledger in Redis


def test_a_node_that_answers_hello_but_fails_its_readyz_is_not_ready_and_a_problem() -> None:
    # Outsider o13: left on a rotated Redis password, replica-3 was "up current" with exit 0 while
    # it published nothing; only its /readyz said ok:false.
    reason = "AuthenticationError: invalid username-password pair"
    locked_out = NodeAnswer("replica-1", hello("replica-1", "replica", current=True), unready={"redis": reason})
    status = status_of(answers(replica_1=locked_out))
    assert status.exit_code == EXIT_PROBLEM
    assert status.problems == (f"replica-1 answers but is not ready: redis: {reason}",)
    assert node_rows(status)[1][1] == ("replica-1", "replica", "not ready", "current", f"not ready: redis: {reason}")
    assert status_json(status)["nodes"][1]["unready"] == {"redis": reason}
    assert status_json(status_of())["nodes"][1]["unready"] == {}


def test_a_node_that_does_not_answer_is_down_and_a_problem() -> None:
    down = NodeAnswer("replica-1", None, error="tcp://127.0.0.1:7111: no answer within 1 s")
    status = status_of(answers(replica_1=down))
    assert status.exit_code == EXIT_PROBLEM
    assert status.problems == ("replica-1 does not answer hello: tcp://127.0.0.1:7111: no answer within 1 s",)
    replica = status.nodes[1]
    assert (replica.up, replica.current, replica.version) == (False, None, None)
    assert node_rows(status)[1][1] == ("replica-1", "replica", "down", "", "tcp://127.0.0.1:7111: no answer within 1 s")


def test_a_node_that_does_not_answer_is_down_in_the_ledger_table_not_current(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Its held height is what Redis last heard: the table showed a stopped replica "current"
    beside the problem that it does not answer (the outsider's finding)."""
    down = NodeAnswer("replica-1", None, error="tcp://127.0.0.1:7111: no answer within 1 s")
    status = status_of(answers(replica_1=down))
    (ledger,) = status.ledgers
    assert ledger.down == ["replica-1"] and ledger.lagging == []
    shown = {n["node"]: n["down"] for n in status_json(status)["ledgers"][0]["nodes"]}
    assert shown == {"ingest-1": False, "replica-1": True, "observer-1": False}
    print_status(status)
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if line.split()[:2] == ["replica-1", "replica"] and "42" in line]
    assert row.split()[-1] == "down"
    assert "Every replica and observer holds" not in out
    assert status_of().ledgers[0].down == []  # every node answers: none is


def test_a_node_down_with_its_store_damaged_alert_says_why() -> None:
    """A node whose store did not open is not only "does not answer hello": its alert's reason."""
    down = NodeAnswer("replica-1", None, error="no answer")
    detail = "[tree_mismatch] /data/replica-1/store.db: ledger 'e': the stored tree's node at level 4, index 1 ..."
    alert = {"id": "1-0", "node": "replica-1", "ledger": "", "height": "0", "what": "store_damaged", "detail": detail}
    key = "replica-1||store_damaged"
    status = status_of(answers(replica_1=down), open_alerts=[{**alert, "key": key, "raised_by": "replica-1"}])
    assert status.problems == (
        f"replica-1 does not answer hello: its store is damaged (store_damaged): {detail}",
        "1 open alert: replica-1||store_damaged [raised by replica-1]",
    )
    assert status.exit_code == EXIT_PROBLEM
    # Only the node raises it about its own store: another node's claim is no reason of its.
    forged = {**alert, "key": key, "raised_by": "ingest-1", "detail": "forged"}
    assert status_of(answers(replica_1=down), open_alerts=[forged]).problems == (
        "replica-1 does not answer hello: no answer",
        "1 open alert: replica-1||store_damaged [raised by ingest-1]",
    )


def test_a_node_missing_from_the_answers_counts_as_down() -> None:
    node_answers = answers()
    del node_answers["ingest-1"]
    status = status_of(node_answers)
    assert not status.nodes[0].up and status.problems == ("ingest-1 does not answer hello: not asked",)


def test_no_node_answering_hints_at_the_key() -> None:
    status = status_of({name: NodeAnswer(name, None, error="no answer") for name in ROLES})
    assert len(status.problems) == len(ROLES) + 1
    assert "is the key an account of this cluster?" in status.problems[-1]


def test_redis_holding_no_account_is_a_problem_that_says_so() -> None:
    """Outsider26 I5: Redis lost its data and nothing said so."""
    status = status_of(accounts_version=0)
    assert status.exit_code == EXIT_PROBLEM and status.problems[0].startswith("Redis holds no account")
    assert status_of(accounts_version=None).ok  # not readable by this Redis user: nothing said


def test_a_follower_that_is_behind_or_still_catching_up_is_a_problem() -> None:
    behind = NodeAnswer("replica-1", hello("replica-1", "replica", current=False, behind={ELECTION: 1_200}))
    starting = NodeAnswer("observer-1", hello("observer-1", "observer", current=False, behind={}))
    status = status_of(answers(replica_1=behind, observer_1=starting))
    assert status.problems == (
        "replica-1 is behind: election-2026 by 1,200",
        "observer-1 is behind: its start-up catch-up has not finished",
    )
    rows = {row[0]: row for row in node_rows(status)[1]}
    assert rows["replica-1"][3] == "behind: election-2026 1,200"
    assert rows["observer-1"][3] == "catching up"
    assert status.nodes[1].behind == {ELECTION: 1_200}


def test_a_follower_that_says_it_is_behind_is_not_current_in_the_ledger_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """outsider 25, H2: a replica whose tail was cut said "behind: load1 5" in the same output
    whose ledger table showed it "current" and "Every replica and observer holds every ledger up
    to its head", its held key in Redis being the head it had before the cut."""
    behind = NodeAnswer("replica-1", hello("replica-1", "replica", current=False, behind={ELECTION: 5}))
    status = status_of(answers(replica_1=behind))
    (ledger,) = status.ledgers
    assert ledger.lagging == ["replica-1"]
    assert status.problems == ("replica-1 is behind: election-2026 by 5",)  # said once
    assert status_json(status)["ledgers"][0]["lagging"] == ["replica-1"]
    print_status(status)
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if line.split()[:2] == ["replica-1", "replica"] and "42" in line]
    assert row.split()[-1] == "behind"
    assert "Every replica and observer holds" not in out and "Behind: election-2026 (replica-1)" in out
    other = NodeAnswer("replica-1", hello("replica-1", "replica", current=False, behind={"zakat": 5}))
    assert status_of(answers(replica_1=other)).ledgers[0].lagging == []  # another ledger's lag is its own


def test_a_ledger_behind_in_redis_is_a_problem_even_if_every_node_answers() -> None:
    status = status_of(held=30)
    assert status.problems == ("election-2026: replica-1 behind the head 42 (as Redis last heard)",)


def test_open_alerts_are_a_problem_and_listed_by_key_and_raiser() -> None:
    alert = {"id": "1-0", "node": "replica-1", "ledger": ELECTION, "height": "7", "what": "bad_link", "detail": "x"}
    key = "replica-1|election-2026|bad_link"
    entries = [{**alert, "key": key, "raised_by": raiser} for raiser in ("replica-1", "verifier-1")]
    status = status_of(open_alerts=entries)
    assert status.problems == (f"2 open alerts: {key} [raised by replica-1], {key} [raised by verifier-1]",)
    assert status_json(status)["open_alerts"] == [{**entry, "height": 7} for entry in entries]  # a number (o17)


def test_a_verifier_that_answers_hello_but_not_status_is_a_problem() -> None:
    mute = NodeAnswer("verifier-1", hello("verifier-1", "verifier"), error="status: no answer within 1 s")
    status = status_of(answers(verifier_1=mute))
    assert status.problems == ("verifier-1: status: no answer within 1 s",)
    (verifier,) = status.verifiers
    assert (verifier.up, verifier.checked, verifier.copies, verifier.oldest) == (True, None, (), None)
    assert verifier_line(verifier) == "Verifier verifier-1: up, no status"


def test_the_oldest_sweep_is_a_copy_never_swept_else_the_longest_ago() -> None:
    (verifier,) = status_of().verifiers
    assert verifier.checked == 120 and verifier.swept == 3_400
    assert [(c.copy, c.age_s) for c in verifier.copies] == [
        ("ingest-1|election-2026", 4.0),
        ("replica-1|election-2026", 9.0),
    ]
    assert verifier.oldest is not None and verifier.oldest.copy == "replica-1|election-2026"
    assert verifier_line(verifier).endswith(
        "2 copies, the oldest complete sweep: replica-1|election-2026, 9 s ago (43 records)"
    )

    never = verifier_status({"ingest-1|zakat": NOW_MS - 600_000, "observer-1|zakat": 0})
    fresh = NodeAnswer("verifier-1", hello("verifier-1", "verifier"), never)
    (verifier,) = status_of(answers(verifier_1=fresh)).verifiers
    assert verifier.oldest is not None and (verifier.oldest.copy, verifier.oldest.age_s) == ("observer-1|zakat", None)
    assert "observer-1|zakat not swept completely yet" in verifier_line(verifier)


def test_a_verifier_that_is_down_is_listed_without_figures() -> None:
    status = status_of(answers(verifier_1=NodeAnswer("verifier-1", None, error="no answer")))
    (verifier,) = status.verifiers
    assert (verifier.up, verifier.checked, verifier.oldest) == (False, None, None)
    assert verifier_line(verifier) == "Verifier verifier-1: down"


def test_a_garbled_verifier_status_gives_no_figures_rather_than_failing() -> None:
    odd = {"checked": "many", "swept": True, "copies": {"a|b": "not a map", "c|d": {"last_complete_ms": "x"}}}
    status = status_of(answers(verifier_1=NodeAnswer("verifier-1", hello("verifier-1", "verifier"), odd)))
    (verifier,) = status.verifiers
    assert (verifier.checked, verifier.swept) == (None, None)
    assert [(c.copy, c.sweeps, c.age_s) for c in verifier.copies] == [("a|b", 0, None), ("c|d", 0, None)]


def test_supervisord_states_show_in_the_table_and_a_program_not_running_is_a_problem() -> None:
    status = status_of(supervisord=supervised())
    assert status.ok
    header, rows = node_rows(status)
    assert header == ("NODE", "ROLE", "STATE", "PROCESS", "SYNC", "NOTE")
    by_name = {row[0]: row for row in rows}
    assert by_name["replica-1"][3] == "RUNNING pid 102"
    assert by_name["redis"] == ("redis", "-", "up", "RUNNING pid 100", "", "")  # a program that is no node

    down = NodeAnswer("replica-1", None, error="no answer")
    status = status_of(answers(replica_1=down), supervisord=supervised(replica_1="EXITED"))
    assert status.problems == ("supervisord: replica-1 is EXITED", "replica-1 does not answer hello: no answer")
    assert {row[0]: row for row in node_rows(status)[1]}["replica-1"][3] == "EXITED"


def test_no_supervisord_is_a_problem() -> None:
    status = status_of(supervisord=SupervisordState("/tmp/vl/supervisor.sock", None))
    assert status.problems == ("no supervisord answers on /tmp/vl/supervisor.sock",)
    assert {row[0]: row[3] for row in node_rows(status)[1]}["ingest-1"] == "-"


def test_the_json_object_and_its_ledgers_as_repl_status_gives_them() -> None:
    status = status_of(supervisord=supervised())
    report = json.loads(json.dumps(status_json(status)))
    assert set(report) == {
        "cluster",
        "redis",
        "redis_error",
        "ok",
        "problems",
        "supervisord",
        "nodes",
        "ledgers",
        "verifiers",
        "open_alerts",
    }
    assert report["redis"] == "redis://:***@127.0.0.1:6390/0"
    assert "s3cret" not in json.dumps(report)
    assert (report["cluster"], report["ok"], report["problems"]) == ("test", True, [])
    assert report["ledgers"] == repl_json(ledgers(), URL)["ledgers"]
    assert report["supervisord"]["pid"] == 99
    assert report["supervisord"]["programs"]["redis"] == {"state": "RUNNING", "pid": 100}
    assert report["nodes"][1] == {
        "node": "replica-1",
        "role": "replica",
        "up": True,
        "error": None,
        "version": "0.1.0",
        "current": True,
        "behind": {},
        "unready": {},
        "standby": None,
        "process": {"state": "RUNNING", "pid": 102},
    }
    (verifier,) = report["verifiers"]
    assert set(verifier) == {"node", "up", "checked", "swept", "copies", "oldest"}
    assert verifier["oldest"] == {"copy": "replica-1|election-2026", "sweeps": 1, "records": 43, "age_s": 9.0}
    assert report["open_alerts"] == []
    assert status_json(status_of())["supervisord"] is None


def test_the_text_shows_each_part_and_the_problems(capsys: pytest.CaptureFixture[str]) -> None:
    down = NodeAnswer("replica-1", None, error="no answer within 1 s")
    alert = {"key": "replica-1|election-2026|bad_link", "height": "7", "detail": "the link does not match"}
    print_status(status_of(answers(replica_1=down), open_alerts=[{**alert, "raised_by": "verifier-1"}]))
    out = capsys.readouterr().out
    assert out.startswith("cluster test: 3 of 4 nodes up\n")
    assert "Redis redis://:***@127.0.0.1:6390/0: 1 ledger" in out and "s3cret" not in out
    assert "Verifier verifier-1: 120 records checked, 3,400 re-verified by sweeps" in out
    assert (
        "Open alerts: 1\n  replica-1|election-2026|bad_link  height 7 [raised by verifier-1]: the link does not match"
    ) in out
    assert out.rstrip().endswith(
        "Problems (2):\n  replica-1 does not answer hello: no answer within 1 s\n"
        "  1 open alert: replica-1|election-2026|bad_link [raised by verifier-1]"
    )
    print_status(status_of())
    assert capsys.readouterr().out.rstrip().endswith("no open alert.")


class FakeSupervisor:
    socket_path = Path("/tmp/vl/supervisor.sock")

    def __init__(self, up: bool, fails: bool = False) -> None:
        self.up = up
        self.fails = fails

    def running(self) -> bool:
        return self.up

    def pid(self) -> int:
        return 99

    def processes(self) -> dict[str, dict[str, Any]]:
        if self.fails:
            raise ConnectionRefusedError("gone")
        return {"redis": {"statename": "RUNNING", "pid": 7}, "ingest-1": {"statename": "BACKOFF", "pid": 0}}


def test_read_supervisord() -> None:
    state = read_supervisord(FakeSupervisor(up=True))  # type: ignore[arg-type]
    assert state == SupervisordState(
        "/tmp/vl/supervisor.sock", 99, {"redis": ProgramState("RUNNING", 7), "ingest-1": ProgramState("BACKOFF", None)}
    )
    assert read_supervisord(FakeSupervisor(up=False)).pid is None  # type: ignore[arg-type]
    assert read_supervisord(FakeSupervisor(up=True, fails=True)).pid is None  # type: ignore[arg-type]


# --- the command, with Redis and no node running -----------------------------------------------------


def write_config(directory: Path, redis_url: str) -> Path:
    """A cluster of eight nodes on ports where nothing listens, with its keys."""
    nodes = [("ingest-1", "ingest"), ("ingest-2", "ingest"), ("replica-1", "replica"), ("replica-2", "replica")]
    nodes += [("replica-3", "replica"), ("observer-1", "observer"), ("observer-2", "observer")]
    nodes += [("verifier-1", "verifier")]
    lines = ["[cluster]", 'name = "test"', f'redis = "{redis_url}"', 'default_home = "ingest-1"', ""]
    ports = iter(free_ports(len(nodes) + sum(role == "ingest" for _, role in nodes)))
    for name, role in nodes:
        lines += [f"[nodes.{name}]", f'role = "{role}"', 'host = "127.0.0.1"', f"port = {next(ports)}"]
        lines += [f"pub_port = {next(ports)}"] if role == "ingest" else []
        lines += ['follow = ["ingest-1", "ingest-2"]'] if role in ("replica", "observer") else []
        lines.append("")
    path = directory / "cluster.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    ensure_cluster_keys(load_cluster(path))
    return path


@pytest.fixture
def config(tmp_path: Path, redis_server: RedisServer, redis_client: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("VLEDGER_KEY", raising=False)
    return write_config(tmp_path, redis_server.url)


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_nodes_down_cost_the_timeout_once_and_exit_3(
    capsys: pytest.CaptureFixture[str], config: Path, redis_client: Any
) -> None:
    found = Alert("replica-1", ELECTION, 3, "bad_link", "a changed byte")
    ReplicationLedger(redis_client, node="verifier-1").alert(found)
    # Another node's own keys, the same key, raised later: it shows beside the verifier's, not instead.
    ReplicationLedger(redis_client, node="ingest-2").alert(Alert("replica-1", ELECTION, 9, "bad_link", "benign"))
    key = config.parent / "keys" / "admin.key_secret"
    started = time.monotonic()
    code, out, err = run(capsys, "status", "--config", config, "--key", key, "--json")
    took = time.monotonic() - started
    assert code == EXIT_PROBLEM, err
    # Eight nodes that do not answer, asked at once: about one timeout, far from eight.
    assert took < status_command.HELLO_TIMEOUT + 1.5, f"{took:.2f} s"
    report = json.loads(out)
    assert len(report["nodes"]) == 8 and not any(n["up"] for n in report["nodes"])
    assert all("no answer within 1 s" in n["error"] for n in report["nodes"])
    shown = [(a["key"], a["raised_by"], a["height"], a["detail"]) for a in report["open_alerts"]]
    assert shown == [(found.key, "ingest-2", 9, "benign"), (found.key, "verifier-1", 3, "a changed byte")]
    assert f"2 open alerts: {found.key} [raised by ingest-2], {found.key} [raised by verifier-1]" in report["problems"]
    code, out, err = run(capsys, "status", "--config", config, "--key", key)
    assert code == EXIT_PROBLEM, err
    assert (
        f"Open alerts: 2\n  {found.key}  height 9 [raised by ingest-2]: benign\n"
        f"  {found.key}  height 3 [raised by verifier-1]: a changed byte\n"
    ) in out


def test_the_key_comes_from_the_environment(
    capsys: pytest.CaptureFixture[str], config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status_command, "HELLO_TIMEOUT", 0.1)
    monkeypatch.setenv("VLEDGER_KEY", str(config.parent / "keys" / "admin.key_secret"))
    code, out, err = run(capsys, "status", "--config", config, "--run-dir", config.parent / "run")
    assert code == EXIT_PROBLEM, err
    socket = config.parent.resolve() / "run" / "supervisor.sock"
    assert out.startswith(f"cluster test: 0 of 8 nodes up; no supervisord answers on {socket}\n")
    assert f"  no supervisord answers on {socket}\n" in out  # a problem too


def test_redis_down_still_shows_the_nodes_marks_redis_down_and_exits_1_without_the_password(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setattr(status_command, "HELLO_TIMEOUT", 0.1)
    config = write_config(tmp_path, f"redis://:s3cret@127.0.0.1:{free_port()}/0")  # nothing listens there
    key = tmp_path / "keys" / "admin.key_secret"
    code, out, err = run(capsys, "status", "--config", config, "--key", key)
    assert code == EXIT_FAILED and err == ""
    assert out.startswith("cluster test: 0 of 8 nodes up\n")  # the nodes, asked over CURVE all the same
    assert "replica-1" in out and "Redis at redis://:***@127.0.0.1:" in out and ": DOWN (" in out
    assert "Open alerts: unknown" in out and "Open alerts: none" not in out
    assert "s3cret" not in out
    code, out, _ = run(capsys, "status", "--config", config, "--key", key, "--json")
    report = json.loads(out)
    assert code == EXIT_FAILED and report["redis_error"] and len(report["nodes"]) == 8
    assert report["problems"][0].startswith("Redis is down: ") and "s3cret" not in out


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--config", "c.toml", "--watch", "0"],
        ["status", "--config", "c.toml", "--watch", "soon"],
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and "usage: vledger status" in err


def test_no_key_is_a_usage_error(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, out, err = run(capsys, "status", "--config", config)
    assert code == 2 and out == ""
    assert err.startswith("vledger: error: which key asks the nodes? give --key FILE")


def test_help_documents_the_json_shape_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "status", "--help")
    assert code == 0
    for words in (
        '"problems"',
        '"supervisord"',
        '"verifiers"',
        '"open_alerts"',
        '"age_s"',
        "Exit codes",
        "3 something",
    ):
        assert words in out
    assert "status" in run(capsys, "--help")[1]


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


class FakeReader:
    """Rounds of made-up status: the second one after the alert is resolved; a round may fail."""

    def __init__(self, *statuses: ClusterStatus | Exception) -> None:
        self.statuses = list(statuses)

    def read(self) -> ClusterStatus:
        status = self.statuses.pop(0)
        if isinstance(status, Exception):
            raise status
        return status


def test_watch_prints_a_round_each_interval_and_exits_with_the_last_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    alerted = status_of(open_alerts=[{"key": "replica-1|election-2026|bad_link", "height": "7"}])
    reader = FakeReader(alerted, status_of())
    sleep = Rounds(2)
    code = status_command.watch_status(reader, as_json=True, interval=2.5, sleep=sleep)  # type: ignore[arg-type]
    assert code == EXIT_OK and sleep.slept == [2.5, 2.5]
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert (first["ok"], second["ok"]) == (False, True)


def test_watch_goes_on_when_a_round_fails(capsys: pytest.CaptureFixture[str]) -> None:
    reader = FakeReader(status_of(), RedisServerError("cannot read the cluster's state from Redis"))
    code = status_command.watch_status(reader, as_json=False, interval=1.0, sleep=Rounds(2))  # type: ignore[arg-type]
    assert code == EXIT_FAILED
    out, err = capsys.readouterr()
    assert out.count("cluster test: 4 of 4 nodes up") == 1
    assert err == "vledger: error: redis_server: cannot read the cluster's state from Redis\n"


def test_the_cosignatures_that_verify_are_shown_as_repl_status_shows_them(
    capsys: pytest.CaptureFixture[str], config: Path, redis_client: Any
) -> None:
    # status read Redis without the key files' checker, so its COSIGNED column was always empty.
    keys = config.parent / "keys"
    repl = ReplicationLedger(redis_client)
    repl.add([StreamRecord(ELECTION, h, f"record {h}".encode(), "ingest-1") for h in range(10)])
    home = HomeSigner("test", load_signing_key(signing_key_paths(keys, "ingest-1")[0]).seed)
    checkpoint = home.sign(ELECTION, 10, bytes(32))
    repl.set_checkpoints({ELECTION: checkpoint.note})
    seeds = {"replica-1": load_signing_key(signing_key_paths(keys, "replica-1")[0]).seed}
    seeds["replica-2"] = new_signing_key().seed  # its name, another key
    for name, seed in seeds.items():
        cosignature = WitnessSigner(witness_name("test", name), seed).cosign(checkpoint, 1)
        repl.publish_cosignature(ELECTION, name, 10, cosignature)
    _, out, err = run(capsys, "status", "--config", config, "--key", keys / "admin.key_secret", "--json")
    (election,) = [entry for entry in json.loads(out)["ledgers"] if entry["ledger"] == ELECTION]
    assert election["cosigned"] == {"replica-1": 10}, err  # replica-2's is by another key: not counted


def test_a_node_removed_from_the_cluster_file_and_stopped_has_no_rows(
    capsys: pytest.CaptureFixture[str], config: Path, redis_client: Any
) -> None:
    """Outsider o15: after README's "Removing a replica or an observer", `vledger status` kept a
    row of each ledger for it ("unknown", its lag growing for good) where `repl status` did not."""
    repl = ReplicationLedger(redis_client)
    repl.add([StreamRecord(ELECTION, h, f"record {h}".encode(), "ingest-1") for h in range(4)])
    registry = AccountRegistry(redis_client)
    for name in ("replica-1", "replica-4"):
        repl.advance(name, ELECTION, 3)
        registry.record_applied(name, 1)
    registry.record_stopped("replica-4")  # stopped and not in the cluster file
    key = config.parent / "keys" / "admin.key_secret"
    _, out, err = run(capsys, "status", "--config", config, "--key", key, "--json")
    (election,) = [entry for entry in json.loads(out)["ledgers"] if entry["ledger"] == ELECTION]
    shown = {row["node"] for row in election["nodes"]}
    assert "replica-1" in shown and "replica-4" not in shown, err
