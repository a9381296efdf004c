"""Every command that takes ``--json`` prints one JSON object on stdout, a failure README's
``{"error": {"code", "message"}}`` (outsider26 I2: ``alerts --json`` printed JSON Lines, ``repair
--json`` a string ``"error"``, and a Redis that does not answer was a traceback).

Each command is walked once, in-process: the client verbs against the simulated node of
test_client_commands (a ledger that does not exist, or a command it does not know, is a refusal),
the others on a cluster file whose Redis answers nowhere, a local store, an export and key files.
The list is checked against the parsers: a new command with ``--json`` fails here until walked.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.keys import generate
from vledger.broker.redis_server import free_ports
from vledger.config.cluster import load_cluster
from vledger.config.settings import Limits
from vledger.node.errors import RemoteError
from vledger.node.ledger import LedgerRules
from vledger.node.record import Entry
from vledger.node.store import ChainStore
from vledger.tests.unit.tools.test_client_commands import Run, SimulatedNode, create, node, session, vledger
from vledger.tools import cli
from vledger.tools.node_commands import ensure_cluster_keys

__all__ = ["node", "session", "vledger"]  # the simulator's fixtures, used by name below

SHA = "ab" * 32
EID = "E-" + "a" * 16

# The client verbs, each against the simulator: (argv, exit status).
CLIENT: dict[str, tuple[list[str], int]] = {
    "hello": (["hello"], 0),
    "whoami": (["whoami"], 0),
    "ledger list": (["ledger", "list"], 0),
    "ledger create": (["ledger", "create", "fresh", "--kinds", "note", "--difficulty", "2"], 0),
    "ledger promote": (["ledger", "promote", "nosuch", "ingest-2"], 1),
    "ledger rotate-key": (["ledger", "rotate-key", "nosuch"], 1),
    "put": (["put", "notes", "note", "--payload", "{{}}"], 0),
    "get": (["get", "nosuch", "0"], 1),
    "head": (["head", "notes"], 0),
    "size": (["size", "notes"], 0),
    "range": (["range", "notes"], 0),
    "vote register": (["vote", "register", "nosuch", "--voter-id", "V-1"], 1),
    "vote cast": (["vote", "cast", "nosuch", "--electronic-id", EID, "--choice", "a"], 1),
    "vote uncast": (["vote", "uncast", "nosuch", "--electronic-id", EID], 1),
    "vote withdraw": (["vote", "withdraw", "nosuch", "--electronic-id", EID], 1),
    "vote check": (["vote", "check", "--electronic-id", EID], 1),
    "donate": (
        [
            "donate",
            "nosuch",
            "--fund",
            "f",
            "--amount",
            "1",
            "--source",
            "s",
            "--purpose",
            "p",
            "--donor",
            "S2-" + "a" * 128,
        ],
        1,
    ),
    "disburse": (["disburse", "nosuch", "--fund", "f", "--target", "t", "--amount", "1", "--purpose", "p"], 1),
    "issue": (["issue", "nosuch", "--account", "bob", "--amount", "1"], 1),
    "transfer": (["transfer", "nosuch", "--to", "bob", "--amount", "1"], 1),
    "file get": (["file", "get", SHA, "-o", "{tmp}/got"], 1),
    "file put": (["file", "put", "nosuch", "{tmp}/missing"], 2),
    "user add": (["user", "add", "bob", "--role", "writer"], 0),
    "user remove": (["user", "remove", "bob"], 0),
    "user enable": (["user", "enable", "bob"], 0),
    "user disable": (["user", "disable", "bob"], 0),
    "user key add": (["user", "key", "add", "bob", "{tmp}/bob.key"], 0),
    "user key revoke": (["user", "key", "revoke", "{tmp}/bob.key"], 0),
    "user list": (["user", "list"], 0),
    "grant add": (["grant", "add", "notes", "note", "bob"], 0),
    "grant revoke": (["grant", "revoke", "notes", "note", "bob"], 1),
    "grant list": (["grant", "list"], 0),
    "admin log": (["admin", "log"], 0),
    "admin totp enroll": (["admin", "totp", "enroll"], 1),
    "admin totp reset": (["admin", "totp", "reset", "bob"], 1),
    "key rotate": (["key", "rotate", "ingest-1"], 2),  # no rotation_port: a usage error
    "receipt get": (["receipt", "get", "nosuch", "1", "-o", "{tmp}/r.json"], 1),
}

# The other commands, on the files of `files` below: (argv, exit status).
LOCAL: dict[str, tuple[list[str], int]] = {
    "keygen": (["keygen", "carol", "--dir", "{tmp}/keys"], 0),
    "anchors": (["anchors", "--config", "{config}", "--store", "{store}"], 0),
    "receipt keys": (["receipt", "keys", "--config", "{config}"], 0),
    "receipt verify": (["receipt", "verify", "{tmp}/missing.json", "--genesis", "{tmp}/missing.json"], 2),
    "verify": (["verify", "{store}"], 0),
    "import": (["import", "{export}", "--store", "{tmp}/imported"], 0),
    "repair": (["repair", "replica-1", "--config", "{config}", "--timeout", "1"], 1),
    "alerts": (["alerts", "--config", "{config}"], 1),
    "repl status": (["repl", "status", "--config", "{config}"], 1),
    "repl forget": (["repl", "forget", "replica-9", "--config", "{config}"], 1),
    "status": (["status", "--config", "{config}", "--key", "{tmp}/keys/admin.key_secret"], 1),
    "tally": (["tally", "notes", "--config", "{config}"], 1),
    "admin bootstrap": (
        ["admin", "bootstrap", "--config", "{config}", "--account", "root", "--key", "{tmp}/keys/admin.key"],
        1,
    ),
    "admin migrate-keys": (["admin", "migrate-keys", "--config", "{config}"], 1),
}

CONFIG = """\
[cluster]
redis = "redis://127.0.0.1:1/0"  # nothing answers on port 1
default_home = "ingest-1"

[nodes.ingest-1]
role = "ingest"
port = {port}
pub_port = {pub}

[nodes.replica-1]
role = "replica"
port = {replica}

[nodes.observer-1]
role = "observer"
port = {observer}
"""


def json_commands() -> set[str]:
    """Every command path (``"user key add"``) whose parser has ``--json``."""
    found: set[str] = set()

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        if any("--json" in action.option_strings for action in parser._actions):
            found.add(" ".join(path))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])

    for command in cli.COMMANDS:
        for action in cli.build_parser(command)._actions:
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                walk(action.choices[command], [command])
    return found


def test_every_command_with_json_is_walked_here() -> None:
    assert json_commands() == set(CLIENT) | set(LOCAL)


def one_object(out: str, code: int, err: str) -> dict[str, Any]:
    """stdout as the one JSON object it must be; a failure's, the documented error object."""
    shown = json.loads(out)  # one value: "Extra data" for a second object or a line per item
    assert isinstance(shown, dict), out
    if code != 0 and "error" in shown:
        error = shown["error"]
        assert isinstance(error, dict) and isinstance(error["code"], str) and isinstance(error["message"], str), out
        if set(shown) == {"error"}:  # cli.main's: said on stderr as well (status's answer carries its own)
            assert f"{error['code']}: " in err or error["code"] == "usage", err
    elif code in (1, 2):
        pytest.fail(f"exit {code} without the error object: {out}")
    return shown


def filled(argv: list[str], **values: Path) -> list[str]:
    return [word.format(**{key: str(value) for key, value in values.items()}) for word in argv]


@pytest.mark.parametrize("command", sorted(CLIENT))
def test_each_client_verb_prints_one_object(command: str, vledger: Run, tmp_path: Path) -> None:
    create(vledger, "notes")
    assert vledger("put", "notes", "note", "--payload", "{}")[0] == 0  # two records: range's list has more than one
    generate(tmp_path, "bob")
    argv, status = CLIENT[command]
    code, out, err = vledger(*filled(argv, tmp=tmp_path), "--json")
    assert code == status, err
    one_object(out, code, err)


@pytest.fixture
def files(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A cluster file (its Redis answers nowhere, its nodes are not running), its keys, a store
    with a ledger and that store's export."""
    config = tmp_path / "cluster.toml"
    port, pub, replica, observer = free_ports(4)  # nothing listens there: every node is down
    config.write_text(CONFIG.format(port=port, pub=pub, replica=replica, observer=observer))
    ensure_cluster_keys(load_cluster(config))
    store = tmp_path / "data" / "ingest-1"
    with ChainStore(store, origin="ingest-1") as chain:
        content = LedgerRules(kinds=("note",), difficulty=0, rules={}).genesis_content("notes", "admin", "g", 1)
        chain.create_ledger(Entry.prepare(content, 0, Limits()))
    export = tmp_path / "notes.jsonl"
    assert cli.main(["export", str(store), "-o", str(export)]) == 0
    yield {"tmp": tmp_path, "config": config, "store": store, "export": export}


@pytest.mark.parametrize("command", sorted(LOCAL))
def test_each_other_command_prints_one_object(
    command: str,
    files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("VLEDGER_CONFIG", "VLEDGER_KEY", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    argv, status = LOCAL[command]
    capsys.readouterr()
    code = cli.main([*filled(argv, **files), "--json"])
    out, err = capsys.readouterr()
    assert code == status, err
    shown = one_object(out, code, err)
    redis_commands = (
        "repair",
        "alerts",
        "admin bootstrap",
        "admin migrate-keys",
        "tally",
        "repl status",
        "repl forget",
    )
    if command in (*redis_commands, "status"):
        assert shown["error"]["code"] == "redis_server", shown  # not a traceback (admin bootstrap's was)


def test_verify_cluster_prints_one_object(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    code = cli.main(["verify", "--cluster", str(files["config"]), "--json"])
    out, err = capsys.readouterr()
    assert code == 1 and one_object(out, code, err)["error"]["code"] == "redis_server"


def test_a_range_failing_part_way_ends_its_object_with_the_error(vledger: Run, node: SimulatedNode) -> None:
    """The records checked before the failure stay in the one object, the error beside them."""
    create(vledger, "notes")
    for i in range(4):
        assert vledger("put", "notes", "note", "--payload", json.dumps({"i": i}))[0] == 0
    node.page_size = 2
    served = node._range

    def failing(args: dict[str, Any]) -> Any:
        if args["start"] >= 2:
            raise RemoteError("busy", "the node is busy", {"retry_ms": 50})
        return served(args)

    node.override["range"] = failing
    code, out, err = vledger("range", "notes", "--json")
    shown = json.loads(out)
    assert code == 1 and [r["height"] for r in shown["records"]] == [0, 1]
    assert shown["error"] == {"code": "busy", "message": "the node is busy", "retry_ms": 50}
    assert err.count("busy: the node is busy") == 1 and out.count('"error"') == 1  # one object, not a second
