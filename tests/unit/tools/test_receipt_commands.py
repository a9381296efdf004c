"""``vledger receipt keys``: the vkeys ``receipt verify`` takes, from a cluster's key directory."""

from __future__ import annotations

import argparse
import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.signing import generate_signing_key, load_verify_key, signing_key_paths
from vledger.config.cluster import load_cluster
from vledger.node import tree
from vledger.node.anchors import Anchors
from vledger.node.ledger import LedgerRules
from vledger.node.node_keys import decode_node_keys, encode_node_keys, parse_node_keys
from vledger.node.note import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    Checkpoint,
    Note,
    SignerKey,
    cosign,
    parse_verifier_key,
    sign,
)
from vledger.node.receipt import Receipt
from vledger.node.record import ZERO_LINK, Entry
from vledger.tests.unit.node.conftest import ChainKit
from vledger.tests.unit.node.test_receipt import HOME, LEDGER, ORIGIN, OTHER_HOME, T0, WITNESSES, _chain, _receipt
from vledger.tests.unit.node.tree_oracle import hash_at_of
from vledger.tools import cli
from vledger.tools.args import vkey_arg
from vledger.tools.node_commands import ensure_cluster_keys

NODES = [("ingest-1", "ingest"), ("replica-1", "replica"), ("observer-1", "observer"), ("verifier-1", "verifier")]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    lines = ["[cluster]", 'name = "town"', 'redis = "redis://127.0.0.1:1/0"', 'default_home = "ingest-1"', ""]
    for port, (name, role) in enumerate(NODES, 7600):
        lines += [f"[nodes.{name}]", f'role = "{role}"', f"port = {port}"]
        lines += [f"pub_port = {port + 100}"] if role == "ingest" else []
        lines.append("")
    path = tmp_path / "cluster.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    ensure_cluster_keys(load_cluster(path))
    return path


def test_the_keys_are_the_key_files_as_vkeys(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The .sign.pub files are PEM; receipt verify wants vkeys, which no command printed before.
    keys = load_cluster(config).keys_dir
    assert cli.main(["receipt", "keys", "--config", str(config), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert sorted(shown["witnesses"]) == ["observer-1", "replica-1"]  # followers only: a verifier signs nothing
    for node, text in shown["witnesses"].items():
        key = parse_verifier_key(text)
        assert key.name == f"town/witness/{node}" and key.alg == 0x04
        assert key.public_key == load_verify_key(signing_key_paths(keys, node)[1]).raw
    admin = parse_verifier_key(shown["admin_key"])
    assert admin.name == "town/admin" and admin.alg == ALG_ED25519
    assert admin.public_key == load_verify_key(signing_key_paths(keys, "ingest-1")[1]).raw


def test_the_text_is_receipt_verify_s_options(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["receipt", "keys", "--config", str(config)]) == 0
    words = capsys.readouterr().out.split()
    assert words[0::2] == ["--witness", "--witness", "--admin-key"]
    assert all(vkey_arg(text) for text in words[1::2])


def test_a_genesis_file_that_is_none_is_named_in_the_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The README's donor saves the gateway's /receipts/0 with curl; a 404 answer saved so was
    # refused as "non_canonical: trailing bytes after the value", naming neither file nor genesis.
    vector = json.loads((Path(__file__).parents[2] / "vectors" / "receipt.json").read_text())
    receipt = tmp_path / "receipt.json"
    receipt.write_text(vector["receipt"], encoding="utf-8")
    genesis = tmp_path / "genesis.bin"
    genesis.write_bytes(base64.b64decode(vector["genesis_b64"]))
    assert cli.main(["receipt", "verify", str(receipt), "--genesis", str(genesis)]) == 1
    assert "pins no checkpoint key" in capsys.readouterr().err  # a genesis: its own sentence
    answer = tmp_path / "answer.json"
    answer.write_text('{"error": {"code": "not_found", "message": "no checkpoint yet"}}')
    assert cli.main(["receipt", "verify", str(receipt), "--genesis", str(answer)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"vledger: error: non_canonical: --genesis {answer}: trailing bytes")
    assert cli.main(["receipt", "verify", str(receipt), "--genesis", str(receipt)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"vledger: error: height_gap: --genesis {receipt}: ledger 'election-2026' height 2: ")


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_a_receipt_with_an_index_of_5000_digits_is_bad_receipt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], json_flag: list[str]
) -> None:
    # Python refuses to convert a string of over 4,300 digits with a bare ValueError: it was a traceback.
    vector = json.loads((Path(__file__).parents[2] / "vectors" / "receipt.json").read_text())
    receipt = tmp_path / "receipt.json"
    receipt.write_text(re.sub(r'"index":[0-9]+', '"index":' + "9" * 5000, vector["receipt"]), encoding="utf-8")
    genesis = tmp_path / "genesis.bin"
    genesis.write_bytes(base64.b64decode(vector["genesis_b64"]))
    assert cli.main(["receipt", "verify", str(receipt), "--genesis", str(genesis), *json_flag]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("vledger: error: bad_receipt: receipt: the file is not UTF-8 JSON")
    if json_flag:
        assert json.loads(out)["error"]["code"] == "bad_receipt"


def test_one_witness_key_under_two_names_is_one_witness_toward_the_quorum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # PROTOCOL 13.4: the name is not signed, so a cosignature relabelled under a second name of
    # the same key counted twice toward --quorum 2.
    vector = json.loads((Path(__file__).parents[2] / "vectors" / "receipt.json").read_text())
    receipt = tmp_path / "receipt.json"
    receipt.write_text(vector["receipt"], encoding="utf-8")
    genesis = tmp_path / "genesis.bin"
    genesis.write_bytes(base64.b64decode(vector["genesis_b64"]))
    seed = bytes(range(32))
    one, alias = (SignerKey(f"town/witness/{n}", ALG_COSIGNATURE_V1, seed).verifier().encode() for n in ("r1", "r9"))
    argv = ["receipt", "verify", str(receipt), "--genesis", str(genesis), "--witness", one, "--witness", alias]
    assert cli.main([*argv, "--quorum", "2"]) == 2
    assert "--quorum 2 needs as many --witness keys, each of its own public key" in capsys.readouterr().err


@pytest.mark.parametrize("missing", ["file", "genesis"])
def test_a_path_that_names_no_file_is_a_usage_error_as_in_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], missing: str
) -> None:
    # `verify /nonexistent` exits 2 (usage); `receipt verify /nonexistent` exited 1 (error).
    vector = json.loads((Path(__file__).parents[2] / "vectors" / "receipt.json").read_text())
    receipt = tmp_path / "receipt.json"
    receipt.write_text(vector["receipt"], encoding="utf-8")
    gone = tmp_path / "nonexistent"
    file, genesis = (gone, receipt) if missing == "file" else (receipt, gone)
    assert cli.main(["receipt", "verify", str(file), "--genesis", str(genesis), "--json"]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["error"]["code"] == "usage" and f"{gone}: no such file" in err
    assert cli.main(["receipt", "verify", str(tmp_path), "--genesis", str(receipt)]) == 2
    assert "a directory, not a file" in capsys.readouterr().err
    assert cli.main(["verify", str(gone)]) == 2


def test_after_a_rotation_a_witness_s_key_is_its_newest_generation(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Outsider F3: the replaced key is left out, since its thief can still stamp a cosignature
    inside the window; a CURVE-only generation file does not count as a cosignature key."""
    keys = load_cluster(config).keys_dir
    first = generate_signing_key(keys, "replica-1@1")
    newest = generate_signing_key(keys, "replica-1@2")
    (keys / "replica-1@3.key").write_text("a CURVE key of a later generation\n")
    assert cli.main(["receipt", "keys", "--config", str(config), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["witnesses"]
    replica = parse_verifier_key(shown["replica-1"])
    assert replica.name == "town/witness/replica-1" and replica.public_key == newest.raw != first.raw
    observer = parse_verifier_key(shown["observer-1"])  # never rotated: its key file
    assert observer.public_key == load_verify_key(signing_key_paths(keys, "observer-1")[1]).raw


def _node_keys_case(vector: dict[str, Any], why: str) -> dict[str, Any]:
    (case,) = [c for c in vector["cases"] if c["why"] == why]
    return dict(json.loads(case["receipt"]))


def _receipt_file(path: Path, obj: dict[str, Any]) -> Path:
    path.write_text(json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def test_node_keys_given_bind_a_replaced_key_whatever_the_receipt_carries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``receipt keys`` gives generation 0 and the rotations (``--node-keys``): a replaced key's
    cosignature on a checkpoint no larger than its rotation's ``cosigned`` counts (a receipt
    saved before the rotation, which carries no node keys), and a thief's on a larger one does
    not, even in a receipt stripped of the node keys that would show the rotation (with the
    generation-0 keys alone, that stripped forgery counted)."""
    vector = json.loads((Path(__file__).parents[2] / "vectors" / "node_keys.json").read_text())
    genesis = tmp_path / "genesis.bin"
    genesis.write_bytes(base64.b64decode(vector["genesis_b64"]))
    honest = _node_keys_case(vector, "the old key, on a checkpoint its rotation says it cosigned")
    forged = _node_keys_case(vector, "the old key, on a larger checkpoint than its rotation says it cosigned")
    # Each case's admin ledger states its own cosigned size for the one rotation: 4 and more
    # (the checkpoint's size) in the honest one's, less in the forged one's.
    evidence, stated = (encode_node_keys(parse_node_keys(c["node_keys"])) for c in (honest, forged))
    assert decode_node_keys(evidence) == parse_node_keys(honest["node_keys"])
    del honest["node_keys"], forged["node_keys"]  # saved before the rotation; stripped by the thief
    old = _receipt_file(tmp_path / "old.json", honest)
    stripped = _receipt_file(tmp_path / "stripped.json", forged)
    keys = [word for w in vector["witnesses"] for word in ("--witness", w)] + ["--quorum", str(vector["quorum"])]
    verify = ["receipt", "verify", "--genesis", str(genesis), *keys, "--admin-key", vector["admin_key"]]
    assert cli.main([*verify, str(stripped)]) == 0  # what a generation-0 key alone let through
    capsys.readouterr()
    assert cli.main([*verify, "--node-keys", evidence, str(old)]) == 0
    assert "replica-1" in capsys.readouterr().out
    assert cli.main([*verify, "--node-keys", stated, str(stripped)]) == 1
    assert "no_quorum" in capsys.readouterr().err
    # Without --admin-key, node keys prove nothing: a usage error, not a silent pass.
    assert cli.main([*verify[:-2], "--node-keys", evidence, str(old)]) == 2
    assert "--node-keys needs --admin-key" in capsys.readouterr().err
    assert cli.main([*verify, "--node-keys", "bm90IGpzb24=", str(old)]) == 2  # base64 of "not json"
    assert "not node keys" in capsys.readouterr().err


# --- --anchors: what a donor with no account holds (o6 H5) -------------------------------------


def _files(tmp_path: Path, records: list[Any], receipt: Any, name: str) -> tuple[Path, Path]:
    receipt_file, genesis_file = tmp_path / f"{name}.json", tmp_path / f"{name}-genesis.bin"
    receipt_file.write_bytes(receipt.encode())
    genesis_file.write_bytes(records[0].encode())
    return receipt_file, genesis_file


def _anchors(tmp_path: Path, genesis_link: bytes) -> Path:
    witnesses = {w.name: w.verifier() for w in WITNESSES}
    path = tmp_path / "anchors.txt"
    path.write_text(Anchors({LEDGER: genesis_link}, witnesses, {}).encode(), encoding="utf-8")
    return path


def test_anchors_refuse_a_gateway_s_own_genesis_and_ask_a_majority_of_their_witnesses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gateway that serves its own genesis (pinning its own key) and a receipt its key signed
    got `valid` from receipt verify --genesis: the donor had no way to refuse it but the cluster's
    key directory."""
    kit = ChainKit()
    honest = _chain(kit, 4)
    forged = _chain(kit, 4, OTHER_HOME)
    anchors = _anchors(tmp_path, honest[0].link)
    receipt, genesis = _files(tmp_path, honest, _receipt(honest, 2), "gift")
    assert cli.main(["receipt", "verify", str(receipt), "--genesis", str(genesis), "--anchors", str(anchors)]) == 0
    out = capsys.readouterr().out
    assert f"(genesis {honest[0].link.hex()}, anchored)" in out and "3 witnesses cosigned" in out
    fake, fake_genesis = _files(tmp_path, forged, _receipt_without_witnesses(forged, 2), "forged")
    assert cli.main(["receipt", "verify", str(fake), "--genesis", str(fake_genesis)]) == 0  # what --anchors is for
    capsys.readouterr()
    argv = ["receipt", "verify", str(fake), "--genesis", str(fake_genesis), "--json"]
    assert cli.main([*argv, "--anchors", str(anchors)]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "bad_genesis"
    # Anchors of that genesis (which a publisher never hands out) still ask for the witnesses.
    assert cli.main([*argv, "--anchors", str(_anchors(tmp_path, forged[0].link))]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "no_quorum"


def _receipt_without_witnesses(records: list[Any], index: int) -> Any:
    leaves = [tree.leaf_hash(r.encode()) for r in records]
    size = len(records)
    body = Checkpoint(ORIGIN, size, tree.root_at(size, hash_at_of(leaves)), ()).body()
    note = Note(body, (sign(body, OTHER_HOME),)).encode()
    return Receipt.of(records[index].encode(), tree.inclusion_proof(index, size, hash_at_of(leaves)), note)


# --- receipt get --------------------------------------------------------------------------------


def test_receipt_get_to_a_file_with_json_prints_one_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Outsider o12: `receipt get L H -o FILE --json` printed nothing on stdout (its line went to
    stderr), though every --json command prints one JSON object."""
    from vledger.tools.receipt_commands import cmd_receipt_get

    records = _chain(ChainKit(), 4)
    receipt = _receipt(records, 2)

    class Served:  # a session whose receipt the command writes (the session verifies it: 14.3)
        def checkpoint_keys(self, ledger: str, quorum: int) -> object:
            return object()

        def receipt(self, ledger: str, index: int, keys: object, deadline: float) -> Receipt:
            return receipt

    out_file = tmp_path / "r.json"
    for as_json in (True, False):
        args = argparse.Namespace(ledger=LEDGER, height=2, hash=None, output=out_file, quorum=0, wait=0, json=as_json)
        assert cmd_receipt_get(Served(), args) == 0  # type: ignore[arg-type]
        assert out_file.read_bytes() == receipt.encode()
        out, err = capsys.readouterr()
        if as_json:
            shown = json.loads(out)
            assert shown["ledger"] == LEDGER and shown["height"] == 2 and shown["file"] == str(out_file)
            assert shown["hash"] == records[2].link.hex() and shown["checkpoint"]["size"] == 4 and not err
        else:
            assert not out and f"receipt of {LEDGER} height 2 written to {out_file}" in err


# --- a voter's set of receipts (the gateway's /voters answer saved, PROTOCOL 15.2) ----------------


def test_a_voters_answer_of_another_form_is_bad_receipt_and_a_receipt_file_is_read_as_one() -> None:
    from vledger.node.errors import ReceiptError
    from vledger.tools.voter_receipts import parse_voter_receipts

    receipt = _receipt(_chain(ChainKit(), 4), 2).encode().decode("utf-8")
    assert parse_voter_receipts(receipt.encode()) is None  # a receipt file: not a set
    assert parse_voter_receipts(b"\xff not json") is None

    def answer(records: object, ledger: object = LEDGER) -> bytes:
        return json.dumps({"ledger": ledger, "electronic_id": "E-1", "records": records}).encode()

    shown = parse_voter_receipts(answer([{"height": 2, "receipt": receipt}, {"height": 3, "receipt": None}]))
    assert shown is not None and [r.index for r in shown.receipts] == [2] and shown.pending == (3,)
    for bad in (
        answer("x"),
        answer([], ledger=5),
        answer([{"height": 2}]),
        answer([{"height": "2", "receipt": None}]),
        answer([{"height": 2, "receipt": 5}]),
        answer([{"height": 2, "receipt": "not a receipt"}]),
        answer([{"height": 3, "receipt": receipt}]),  # listed at another height than its own
        answer([{"height": 2, "receipt": receipt}], ledger="elsewhere"),
    ):
        with pytest.raises(ReceiptError):
            parse_voter_receipts(bad)


def test_an_epoch_5_forged_with_the_genesis_key_and_an_outside_witness_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Outsider o24 F0: a thief of the genesis home's key appended a handover to epoch 5 and a
    record, signed the tree stating `vledger-epoch 5`, got the genesis-listed outside witness (a
    generic tlog-witness, which applies none of 10.9) to cosign, and `receipt verify --genesis`
    said valid. An outside witness's line counts only toward the outside quorum (13.5 step 3):
    with the genesis alone the receipt is refused, saying to give the anchors; with them, too."""
    kit = ChainKit()
    outside = SignerKey("ow.example/w1", ALG_COSIGNATURE_V1, bytes([42]) * 32)
    rules = {
        "checkpoint_key": HOME.verifier().encode(),
        "standby_key": OTHER_HOME.verifier().encode(),
        "witnesses": [outside.verifier().encode()],
        "quorum": 1,
    }
    genesis = Entry.prepare(
        LedgerRules(kinds=("epoch", "note"), difficulty=4, rules=rules).genesis_content(LEDGER, "admin", "c", T0),
        4,
        kit.limits,
    ).place(0, ZERO_LINK, T0, "n")
    records = [genesis]
    for i in range(1, 5):
        records.append(kit.extend(records[-1], kit.entry(i, 4, ledger=LEDGER, kind="note")))
    leaves = [tree.leaf_hash(r.encode()) for r in records]
    size = len(records)
    body = Checkpoint(ORIGIN, size, tree.root_at(size, hash_at_of(leaves)), ("vledger-epoch 5 ingest-1",)).body()
    note = Note(body, (sign(body, HOME), cosign(body, outside, 1_790_000_000).note_signature())).encode()
    forged = Receipt.of(records[3].encode(), tree.inclusion_proof(3, size, hash_at_of(leaves)), note)
    receipt, genesis_file = _files(tmp_path, records, forged, "forged-epoch5")
    argv = ["receipt", "verify", str(receipt), "--genesis", str(genesis_file), "--json"]
    assert cli.main(argv) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["code"] == "no_quorum" and "--anchors" in error["message"]
    assert cli.main([*argv, "--anchors", str(_anchors(tmp_path, records[0].link))]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "no_quorum"
