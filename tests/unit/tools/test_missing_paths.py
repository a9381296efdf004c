"""A file named on the command line that is not there is a usage error (exit 2, code ``usage``),
whichever command and option names it: as ``verify /nonexistent`` and ``receipt verify`` say.

``vledger seal --key /missing`` exited 1 with ``bad_key`` and ``--config /missing`` with
``bad_settings``: the codes of a file that is there but wrong.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from vledger.broker.seal_keys import write_seal_key
from vledger.node.errors import UsageError
from vledger.tools import cli, client_commands

GONE = "{tmp}/nonexistent"


def _argv(template: list[str], tmp_path: Path) -> list[str]:
    return [word.format(tmp=tmp_path) for word in template]


# The file each names is missing; every other file it needs is there (conftest-free: a config the
# commands never get to read, a seal key and a secret key file that would load).
CASES = [
    (["seal", "--key", GONE, "text"], f"--key {GONE}: no such file"),
    (["unseal", "--key", GONE, "S2x"], f"--key {GONE}: no such file"),
    (["seal-key", "--out", f"{GONE}/seal.key"], f"{GONE}/seal.key: no such directory {GONE}"),
    (["hello", "--config", GONE, "--key", "{tmp}/me.key_secret", "--json"], f"the configuration {GONE}: no such file"),
    (["hello", "--config", "{tmp}/cluster.toml", "--key", GONE, "--json"], f"the key {GONE}: no such file"),
    (["status", "--config", GONE, "--key", "{tmp}/me.key_secret", "--json"], f"--config {GONE}: no such file"),
    (["status", "--config", "{tmp}/cluster.toml", "--key", GONE, "--json"], f"--key {GONE}: no such file"),
    (["receipt", "keys", "--config", GONE, "--json"], f"--config {GONE}: no such file"),
    (["anchors", "--config", GONE], f"--config {GONE}: no such file"),
    (["tally", "zakat", "--config", GONE], f"--config {GONE}: no such file"),
    (["alerts", "--config", GONE], f"--config {GONE}: no such file"),
    (["repl", "status", "--config", GONE], f"--config {GONE}: no such file"),
    (["verify", "--cluster", GONE], f"--cluster {GONE}: no such file"),
    (["demo", "--cluster", GONE], f"--cluster {GONE}: no such file"),
    (["keygen", "--cluster", GONE], f"--cluster {GONE}: no such file"),
    (["repair", "replica-1", "--config", GONE], f"--config {GONE}: no such file"),
    (["supervise", "--config", GONE, "status"], f"--config {GONE}: no such file"),
    (["ingest", "--config", GONE, "--node", "ingest-1"], f"--config {GONE}: no such file"),
    (["gateway", "--config", GONE, "--list"], f"--config {GONE}: no such file"),
    (
        ["admin", "bootstrap", "--config", "{tmp}/cluster.toml", "--account", "alice", "--key", GONE],
        f"--key {GONE}: no such file",
    ),
]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """The files the commands would read, when the one under test were there: none is read."""
    (tmp_path / "cluster.toml").write_text("[cluster]\nname = 'never read'\n", encoding="utf-8")
    secret = tmp_path / "me.key_secret"
    secret.write_text("not read either\n", encoding="utf-8")
    os.chmod(secret, 0o600)
    write_seal_key(tmp_path / "seal.key")
    return tmp_path


@pytest.mark.parametrize(("argv", "said"), CASES, ids=[" ".join(argv[:2]) + f" {said[:12]}" for argv, said in CASES])
def test_a_missing_file_on_the_command_line_is_a_usage_error(
    argv: list[str], said: str, files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(_argv(argv, files)) == 2
    out, err = capsys.readouterr()
    assert said.format(tmp=files) in err
    if "--json" in argv:
        assert json.loads(out)["error"]["code"] == "usage"


def test_a_missing_key_from_the_environment_is_a_usage_error_too(
    files: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLEDGER_KEY", str(files / "nonexistent"))
    assert cli.main(["hello", "--config", str(files / "cluster.toml")]) == 2
    assert f"the key {files}/nonexistent: no such file" in capsys.readouterr().err


def test_a_key_file_that_is_there_but_wrong_is_still_bad_key(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The usage rule is for a missing name only: a short seal key is the key's fault (exit 1)."""
    short = files / "short.key"
    short.write_bytes(b"x" * 10)
    os.chmod(short, 0o600)
    assert cli.main(["seal", "--key", str(short), "text"]) == 1
    assert "bad_key" in capsys.readouterr().err
    assert cli.main(["seal", "--key", str(files / "seal.key"), "text"]) == 0


def test_a_directory_named_as_a_file_is_a_usage_error(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["seal", "--key", str(files), "text"]) == 2
    assert f"--key {files}: a directory, not a file" in capsys.readouterr().err


def test_a_missing_seal_key_or_upload_of_a_session_verb_is_a_usage_error(tmp_path: Path) -> None:
    """``donate --seal-key`` and ``file put PATH`` read their file once the session is open."""
    gone = tmp_path / "nonexistent"
    donate = argparse.Namespace(donor=None, seal_key=gone, donor_info="x", donor_info_file=None, ledger="zakat")
    with pytest.raises(UsageError, match=f"--seal-key {gone}: no such file"):
        client_commands.donor_id(donate)
    put = argparse.Namespace(path=gone, name=None, ledger="docs", request_id=None, ts=None, json=False)
    with pytest.raises(UsageError, match=f"{gone}: no such file"):
        client_commands.cmd_file_put(None, put)  # type: ignore[arg-type]  # refused before the session is used
