"""What `vledger` imports: only what the command it names runs (tools/cli.py, COMMANDS).

Every import is paid on every call (a clerk's script runs `vledger put` per record): each case
runs main in a fresh interpreter and reads its ``sys.modules``.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vledger.config.cluster import load_cluster
from vledger.tools import cli
from vledger.tools.args import Deferred
from vledger.tools.cluster_parsers import NODE_PROCESSES
from vledger.tools.node_commands import ensure_cluster_keys

# The servers' libraries: no client command runs them.
SERVER_LIBRARIES = ("aiohttp", "prometheus_client", "redis")
# Every library a command may need: parsing a command line needs none.
LIBRARIES = (*SERVER_LIBRARIES, "zmq", "Crypto", "nacl")
PROCESSES = ("vledger.ingest.server", "vledger.ingest.replica", "vledger.verifier.observer", "vledger.verifier.process")
GATEWAY = "vledger.verifier.gateway"
CLI_OWN = ("cli", "args", "paths", "report", "safe_output")  # what every command line imports

RUN_MAIN = """
import contextlib, io, json, sys
from vledger.tools import cli
from vledger.tools.args import Deferred
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
    code = cli.main(sys.argv[1:])
print(json.dumps({"code": code, "stderr": err.getvalue(), "modules": sorted(sys.modules)}))
"""


def run_main(*words: str, cwd: Path | None = None) -> tuple[int, str, set[str]]:
    """main(words) in a new interpreter: its exit code, its stderr and the modules it imported."""
    done = subprocess.run(
        [sys.executable, "-c", RUN_MAIN, *words], cwd=cwd, capture_output=True, text=True, timeout=120, check=True
    )
    answer = json.loads(done.stdout)
    return answer["code"], answer["stderr"], set(answer["modules"])


def imported(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` (packages or modules) ``modules`` holds."""
    return [name for name in names if name in modules]


@pytest.mark.parametrize("words", [["--help"], [], ["no-such-command"]])
def test_the_command_listing_imports_no_command(words: list[str]) -> None:
    code, _, modules = run_main(*words)
    assert code in (0, 2)
    assert imported(modules, LIBRARIES) == []
    # Not one command's module, nor a parser's: the listing is COMMANDS's summaries.
    assert {m for m in modules if m.startswith("vledger.tools.")} == {f"vledger.tools.{m}" for m in CLI_OWN}
    assert sorted(m for m in modules if m.startswith(("vledger.client", "vledger.ingest", "vledger.verifier"))) == []


@pytest.mark.parametrize("command", ["hello", "put", "status", "tally", "repair", "supervise", "demo", "gateway"])
def test_a_command_s_help_imports_no_library(command: str) -> None:
    code, _, modules = run_main(command, "--help")
    assert code == 0
    assert imported(modules, LIBRARIES) == []
    assert imported(modules, (*PROCESSES, GATEWAY, "vledger.tools.cluster_demo")) == []


@pytest.fixture
def silent_ports() -> Iterator[tuple[int, int]]:
    """Two ports bound and held, never listening: a node that does not answer."""
    with socket.socket() as held, socket.socket() as publishing:
        held.bind(("127.0.0.1", 0))
        publishing.bind(("127.0.0.1", 0))
        yield held.getsockname()[1], publishing.getsockname()[1]


def test_hello_imports_the_client_and_no_server(tmp_path: Path, silent_ports: tuple[int, int]) -> None:
    """`vledger hello` goes as far as asking the node (zmq, the key's cipher): nothing of a server."""
    silent_port, pub_port = silent_ports
    config = tmp_path / "cluster.toml"
    config.write_text(
        f'[cluster]\ndefault_home = "ingest-1"\n[nodes.ingest-1]\nrole = "ingest"\n'
        f"port = {silent_port}\npub_port = {pub_port}\n",
        encoding="utf-8",
    )
    ensure_cluster_keys(load_cluster(config))
    key = str(tmp_path / "keys" / "admin.key_secret")
    code, stderr, modules = run_main("hello", "--config", str(config), "--key", key, "--timeout", "0.2")
    assert code == 1 and stderr.splitlines()[-1].startswith(
        f"vledger: error: unavailable: tcp://127.0.0.1:{silent_port}: no answer within 0.2 s, and nothing accepts"
    )
    assert "zmq" in modules and "vledger.client.session" in modules
    assert imported(modules, SERVER_LIBRARIES) == []
    assert imported(modules, (*PROCESSES, GATEWAY, "vledger.client.api", "vledger.tools.supervise")) == []


NODE_CHECK = """
import json, sys
from vledger.tools.node_commands import _process
_process(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("role", sorted(NODE_PROCESSES))
def test_a_node_imports_its_own_process_alone(role: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", NODE_CHECK, role], capture_output=True, text=True, timeout=120, check=True
    )
    modules = set(json.loads(done.stdout))
    own = {
        "ingest": {"vledger.ingest.server", "vledger.ingest.replica"},  # an ingest node follows others too
        "replica": {"vledger.ingest.replica"},
        "observer": {"vledger.ingest.replica", "vledger.verifier.observer"},  # an observer is a replica that counts
        "verifier": {"vledger.verifier.process"},
    }[role]
    assert set(imported(modules, (*PROCESSES, GATEWAY))) == own


def test_the_listing_is_the_full_parser_s() -> None:
    """COMMANDS's summaries and order are the commands' own: `vledger --help` shows what each says."""
    assert cli.listing_parser().format_help() == cli.build_parser().format_help()


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_a_command_s_own_parser_is_the_full_one_s(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    helps = []
    for parser in (cli.build_parser(), cli.build_parser(command)):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        helps.append(capsys.readouterr().out)
    assert helps[0] == helps[1] and f"usage: vledger {command}" in helps[0]


def leaves(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    """Every command line's words and what runs it (``run``), through every level of subcommands."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield words, parser.get_default("run")
    for group in groups:
        for name, sub in group.choices.items():
            yield from leaves(sub, (*words, name))


def test_every_command_names_a_function_that_is_there() -> None:
    """A Deferred's names are strings: each must find its function (a factory's, its verb)."""
    found = dict(leaves(cli.build_parser()))
    assert len(found) > 60
    for words, run in found.items():
        if isinstance(run, Deferred):
            assert callable(run.target()), words
        else:
            assert callable(run), words
