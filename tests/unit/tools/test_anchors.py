"""Trust anchors (PROTOCOL 15.5): the text format, and ``vledger anchors`` reading a cluster's
key directory and the genesis records of its stores."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from vledger.broker.signing import generate_signing_key, load_verify_key
from vledger.config.settings import Limits
from vledger.node.anchors import HEADER, Anchors, parse_anchors
from vledger.node.errors import SettingsError
from vledger.node.ledger import LedgerRules
from vledger.node.note import ALG_COSIGNATURE_V1, ALG_ED25519, VerifierKey
from vledger.node.record import Entry
from vledger.node.store import ChainStore
from vledger.node.witness import witness_key
from vledger.tools.cli import main

LIMITS = Limits()
KEY = witness_key(
    "local/witness/replica-1", bytes.fromhex("3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29")
)
OTHER = witness_key(
    "local/witness/observer-1", bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
)
LINK = bytes(range(32))
ADMIN_KEY = VerifierKey("local/admin", ALG_ED25519, KEY.public_key)

CONFIG = """
[cluster]
name = "local"
keys = "keys"
data = "data"
default_home = "ingest-1"
[nodes.ingest-1]
role = "ingest"
port = 7390
pub_port = 7391
[nodes.replica-1]
role = "replica"
port = 7394
[nodes.observer-1]
role = "observer"
port = 7396
[nodes.verifier-1]
role = "verifier"
port = 7400
"""


def test_the_text_is_sorted_and_parses_back() -> None:
    anchors = Anchors({"zakat": LINK, "admin": bytes(32)}, {KEY.name: KEY, OTHER.name: OTHER}, {"observer-1": OTHER})
    text = anchors.encode()
    assert text == (
        f"{HEADER}\n"
        f"ledger admin {'00' * 32}\n"
        f"ledger zakat {LINK.hex()}\n"
        f"witness {OTHER.encode()}\n"
        f"witness {KEY.encode()}\n"
        f"observer observer-1 {OTHER.encode()}\n"
    )
    assert parse_anchors(text.encode()) == anchors and anchors.to_json()["admin"] is None
    # Any order of lines is the same anchors.
    lines = text.splitlines(keepends=True)
    assert parse_anchors(("".join([lines[0], *reversed(lines[1:])])).encode()) == anchors
    # The admin ledger's checkpoint key comes last; anchors without it are the same as before.
    with_admin = Anchors(anchors.ledgers, anchors.witnesses, anchors.observers, ADMIN_KEY)
    assert with_admin.encode() == text + f"admin {ADMIN_KEY.encode()}\n"
    assert parse_anchors(with_admin.encode().encode()) == with_admin
    assert with_admin.to_json()["admin"] == ADMIN_KEY.encode()
    lines = with_admin.encode().splitlines(keepends=True)
    assert parse_anchors(("".join([lines[0], *reversed(lines[1:])])).encode()) == with_admin
    # A cluster's recosign_interval_ms other than the default comes last (11.4's stale head).
    timed = Anchors(anchors.ledgers, anchors.witnesses, anchors.observers, ADMIN_KEY, 900_000)
    assert timed.encode() == with_admin.encode() + "recosign_interval_ms 900000\n"
    assert parse_anchors(timed.encode().encode()) == timed and timed.to_json()["recosign_interval_ms"] == 900_000
    assert parse_anchors(text.encode()).recosign_ms is None


# Refused by node/anchors.py, and by the pages' parseAnchors (tests/integration/gateway/test_pages.py).
REFUSED = [
    "",
    "vledger-anchors v2\n",
    f"{HEADER}",  # no final newline
    f"{HEADER}\nledger zakat {LINK.hex()}",
    f"{HEADER}\nledger zakat {LINK.hex().upper()}\n",
    f"{HEADER}\nledger zakat {LINK.hex()[:-2]}\n",
    f"{HEADER}\nledger Zakat {LINK.hex()}\n",
    f"{HEADER}\nledger zakat {LINK.hex()}\nledger zakat {LINK.hex()}\n",
    f"{HEADER}\nledger zakat  {LINK.hex()}\n",
    f"{HEADER}\nwitness {KEY.encode()}\nwitness {KEY.encode()}\n",
    f"{HEADER}\nwitness {VerifierKey('local/zakat', ALG_ED25519, KEY.public_key).encode()}\n",
    f"{HEADER}\nwitness {KEY.encode()[:-2]}AA\n",
    f"{HEADER}\nobserver {OTHER.encode()}\n",
    f"{HEADER}\nobserver o/1 {OTHER.encode()}\n",
    f"{HEADER}\n\n",
    f"{HEADER}\nkey {KEY.encode()}\n",
    f"{HEADER}\r\n",
    f"{HEADER}\nwitness {KEY.encode()}\r\n",
    f"{HEADER}\nwitness {KEY.encode()[:20]}\t{KEY.encode()[20:]}\n",
    f"{HEADER}\nadmin {ADMIN_KEY.encode()}\nadmin {ADMIN_KEY.encode()}\n",
    f"{HEADER}\nadmin {VerifierKey('local/admin', ALG_COSIGNATURE_V1, KEY.public_key).encode()}\n",
    f"{HEADER}\nadmin {VerifierKey('local/zakat', ALG_ED25519, KEY.public_key).encode()}\n",
    f"{HEADER}\nadmin {ADMIN_KEY.encode()[:-2]}AA\n",
    f"{HEADER}\nadmin local {ADMIN_KEY.encode()}\n",
    f"{HEADER}\nrecosign_interval_ms 0\n",
    f"{HEADER}\nrecosign_interval_ms 0300000\n",
    f"{HEADER}\nrecosign_interval_ms -5\n",
    f"{HEADER}\nrecosign_interval_ms 1e6\n",
    f"{HEADER}\nrecosign_interval_ms 9007199254740992\n",
    f"{HEADER}\nrecosign_interval_ms \n",
    f"{HEADER}\nrecosign_interval_ms 300000 ms\n",
    f"{HEADER}\nrecosign_interval_ms 300000\nrecosign_interval_ms 300000\n",
]


@pytest.mark.parametrize("text", REFUSED)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(SettingsError) as refused:
        parse_anchors(text.encode())
    assert refused.value.code == "bad_settings"


def test_not_utf8_or_too_large_is_refused() -> None:
    for data in (HEADER.encode() + b"\n\xff\n", HEADER.encode() + b"\n" + b"x" * 65_536):
        with pytest.raises(SettingsError):
            parse_anchors(data)


def _cluster(tmp_path: Path) -> Path:
    config = tmp_path / "cluster.toml"
    config.write_text(CONFIG)
    (tmp_path / "keys").mkdir()
    for node in ("ingest-1", "replica-1", "observer-1"):
        generate_signing_key(tmp_path / "keys", node)
    return config


def _genesis(store: Path, ledger: str, request_id: str = "g") -> bytes:
    with ChainStore(store, origin="ingest-1") as chain:
        content = LedgerRules(kinds=("note",), difficulty=0, rules={}).genesis_content(ledger, "admin", request_id, 1)
        return chain.create_ledger(Entry.prepare(content, 0, LIMITS)).hash


def test_vledger_anchors_prints_the_genesis_links_and_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _cluster(tmp_path)
    votes = _genesis(tmp_path / "data" / "ingest-1", "votes")
    assert _genesis(tmp_path / "data" / "replica-1", "votes") != votes  # another time, another link
    assert main(["anchors", "--config", str(config), "--store", str(tmp_path / "data" / "ingest-1")]) == 0
    anchors = parse_anchors(capsys.readouterr().out.encode())
    assert anchors.ledgers == {"votes": votes}
    assert sorted(anchors.witnesses) == ["local/witness/observer-1", "local/witness/replica-1"]
    assert anchors.observers == {"observer-1": anchors.witnesses["local/witness/observer-1"]}
    # The admin ledger's home is ingest-1 (default_home): its key, named for the admin ledger.
    home = load_verify_key(tmp_path / "keys" / "ingest-1.sign.pub").raw
    assert anchors.admin == VerifierKey("local/admin", ALG_ED25519, home)
    assert main(["anchors", "--config", str(config), "--store", str(tmp_path / "data" / "ingest-1"), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["ledgers"] == {"votes": votes.hex()} and parse_anchors(answer["anchors"].encode()) == anchors
    assert answer["sha256"] == hashlib.sha256(answer["anchors"].encode()).hexdigest()  # the pages show it


def test_every_store_must_agree_on_a_genesis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _cluster(tmp_path)
    _genesis(tmp_path / "data" / "ingest-1", "votes")
    _genesis(tmp_path / "data" / "replica-1", "votes", request_id="other")
    assert main(["anchors", "--config", str(config)]) == 1
    assert "bad_genesis" in capsys.readouterr().err


def test_no_store_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["anchors", "--config", str(_cluster(tmp_path))]) == 2
    said = capsys.readouterr().err
    # Outsider o21 F9: the operator's machine of a cluster on several hosts holds no store.
    assert "give --store" in said and "on a node's host" in said


def test_anchors_without_the_admin_home_s_key_file_carry_no_admin_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _cluster(tmp_path)
    (tmp_path / "keys" / "ingest-1.sign.pub").unlink()
    _genesis(tmp_path / "data" / "ingest-1", "votes")
    assert main(["anchors", "--config", str(config), "--store", str(tmp_path / "data" / "ingest-1")]) == 0
    printed = capsys.readouterr().out
    assert "\nadmin " not in printed and parse_anchors(printed.encode()).admin is None


def test_anchors_state_a_recosign_interval_other_than_the_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reader judges a head STALE past recosign_interval_ms + 10 s (11.4): a cluster that set a
    longer one must hand it out with its keys, not leave each reader to believe a gateway."""
    config = _cluster(tmp_path)
    _genesis(tmp_path / "data" / "ingest-1", "votes")
    store = ["--store", str(tmp_path / "data" / "ingest-1")]
    assert main(["anchors", "--config", str(config), *store]) == 0
    assert "recosign_interval_ms" not in capsys.readouterr().out  # the default: as before
    config.write_text(CONFIG + "[replication]\nrecosign_interval_ms = 900000\n")
    assert main(["anchors", "--config", str(config), *store]) == 0
    printed = capsys.readouterr().out
    assert (
        printed.endswith("\nrecosign_interval_ms 900000\n") and parse_anchors(printed.encode()).recosign_ms == 900_000
    )
