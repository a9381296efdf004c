"""`vledger alerts`: what it prints, on an empty alerts stream of a real Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vledger.broker.redis_server import RedisServer
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
    followed: list[str] = []
    monkeypatch.setattr(alert_commands, "_follow", lambda repl, last, as_json: followed.append(last))
    config = write_config(tmp_path, redis_server.url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert cli.main(["alerts", "--config", str(config), *follow]) == 0
    assert capsys.readouterr().out == said
    assert followed == (["$"] if follow else [])
    assert cli.main(["alerts", "--config", str(config), "--json", *follow]) == 0
    assert capsys.readouterr().out == ""  # JSON lines stay JSON lines
