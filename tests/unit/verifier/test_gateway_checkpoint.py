"""The gateway's signed checkpoint and receipts, over a real store and real HTTP.

A ledger whose genesis pins its home's checkpoint key; the store keeps the home's signed
checkpoint and a witness's cosigned one; Redis is not reachable (the store's notes are
served alone) or holds forged cosignature lines (dropped line by line). What the gateway
serves is checked with the outsider verifier's code only (tests/vectors/outsider_verify.py).
"""

from __future__ import annotations

import json
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.http import HttpThread
from vledger.broker.signing import generate_signing_key, load_signing_key, signing_key_paths
from vledger.config.settings import Limits
from vledger.node.errors import NotFoundError
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry
from vledger.node.rules.votes import electronic_id
from vledger.node.store import ChainStore
from vledger.node.witness import HomeSigner, WitnessSigner, home_key, witness_name
from vledger.tools import cli
from vledger.tools.demo import run_demo
from vledger.tools.exporting import export_store
from vledger.tools.importing import import_file
from vledger.verifier.gateway import Gateway, build_app

sys.path.insert(0, str(Path(__file__).parents[2] / "vectors"))
import outsider_verify as ov

from vledger.tests.unit.verifier.fakes import FakeRedis, NoRedis, two_nodes

LIMITS = Limits()
SEED = bytes(range(32))
LEDGER = "votes"
RECORDS = 40
SIGNED_AT = 30  # the home signed the first 30 records; the witness cosigned the first 20
COSIGNED_AT = 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("gwcp")
    config = two_nodes(base / "cluster.toml")
    generate_signing_key(config.keys_dir, "replica-1")
    witness_seed = load_signing_key(signing_key_paths(config.keys_dir, "replica-1")[0]).seed
    witness = WitnessSigner(witness_name("t", "replica-1"), witness_seed)
    home = HomeSigner("t", SEED)
    pinned = home_key("t", LEDGER, home.key(LEDGER).public_key).encode()
    with ChainStore(config.store_dir("replica-1"), origin="ingest-1") as store:
        rules = LedgerRules(kinds=("note",), difficulty=0, rules={"checkpoint_key": pinned})
        store.create_ledger(Entry.prepare(rules.genesis_content(LEDGER, "admin", "g", 1), 0, LIMITS))
        for i in range(1, RECORDS):
            store.append(Entry.prepare(Content(LEDGER, "note", {"n": i}, "admin", f"r{i}", 1), 0, LIMITS))
        signed = home.sign(LEDGER, SIGNED_AT, store.root(LEDGER, SIGNED_AT))
        store.checkpoints.keep(LEDGER, "signed", SIGNED_AT, signed.root, signed.note)
        older = home.sign(LEDGER, COSIGNED_AT, store.root(LEDGER, COSIGNED_AT))
        cosigned = witness.cosign(older, 1_790_000_000)
        store.checkpoints.keep(LEDGER, "cosigned", COSIGNED_AT, older.root, cosigned)
    yield {
        "config": config,
        "pinned": pinned,
        "witness": witness,
        "signed": signed,
        "cosigned": cosigned,
    }


def serve(cluster: dict[str, Any], redis_client: Any) -> Any:
    gateway = Gateway(cluster["config"], "replica-1", redis_client=redis_client)
    return gateway, HttpThread(build_app(gateway), "127.0.0.1", 0)


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def keys_of(shown: dict[str, Any]) -> tuple[ov.NoteKey, list[ov.NoteKey]]:
    return ov.parse_vkey(shown["log_key"]), [ov.parse_vkey(v) for v in shown["witness_keys"].values()]


def test_the_most_cosigned_checkpoint_is_served_with_its_keys_and_verifies_outside(cluster: dict[str, Any]) -> None:
    gateway, thread = serve(cluster, NoRedis())
    with thread as server:
        url = f"http://127.0.0.1:{server.port}"
        status, headers, note = get(f"{url}/ledgers/{LEDGER}/checkpoint")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert headers["Cache-Control"] == "public, max-age=2"  # tlog-tiles: mutable, short-lived
        shown = json.loads(get(f"{url}/api/ledgers/{LEDGER}/checkpoint")[2])
        assert shown["log_key"] == cluster["pinned"] and shown["cosigned_by"] == ["t/witness/replica-1"]
        assert shown["note"].encode() == note and shown["size"] == COSIGNED_AT
        log_key, witnesses = keys_of(shown)
        got = ov.verify_checkpoint(note, log_key, witnesses, 1)
        assert got["size"] == COSIGNED_AT and set(got["witnesses"]) == {"t/witness/replica-1"}
        # Asking for no cosignature gives the largest the home signed.
        bare = json.loads(get(f"{url}/api/ledgers/{LEDGER}/checkpoint?witnesses=0")[2])
        assert bare["size"] == SIGNED_AT and bare["cosigned_by"] == []
        status, _, body = get(f"{url}/api/ledgers/{LEDGER}/checkpoint?witnesses=9")
        assert status == 400 and json.loads(body)["error"]["code"] == "bad_request"
    gateway.close()


def test_a_receipt_verifies_with_the_outsider_code_and_a_flipped_byte_fails(cluster: dict[str, Any]) -> None:
    gateway, thread = serve(cluster, NoRedis())
    with thread as server:
        url = f"http://127.0.0.1:{server.port}"
        shown = json.loads(get(f"{url}/api/ledgers/{LEDGER}/checkpoint")[2])
        log_key, witnesses = keys_of(shown)
        status, headers, receipt = get(f"{url}/api/ledgers/{LEDGER}/receipts/7")
        assert status == 200 and "attachment" in headers["Content-Disposition"]
        assert ov.verify_receipt(receipt, log_key, witnesses, 1)["size"] == COSIGNED_AT
        record_at = receipt.index(b'"record":"') + 20
        flipped = receipt[:record_at] + bytes([receipt[record_at] ^ 1]) + receipt[record_at + 1 :]
        with pytest.raises(ov.VerifyError):
            ov.verify_receipt(flipped, log_key, witnesses, 1)
        # A record the served checkpoint does not cover yet has no receipt (yet).
        status, _, body = get(f"{url}/api/ledgers/{LEDGER}/receipts/{COSIGNED_AT}")
        assert status == 404 and json.loads(body)["error"]["code"] == "not_found"
        status, _, body = get(f"{url}/api/ledgers/{LEDGER}/receipts/99x")
        assert status == 400 and json.loads(body)["error"]["code"] == "bad_request"
    gateway.close()


def test_forged_cosignature_lines_in_redis_are_dropped_and_good_ones_kept(cluster: dict[str, Any]) -> None:
    signed = cluster["signed"]
    good = cluster["witness"].cosign(signed, 1_790_000_100)  # the witness cosigned the newer one too
    impostor = WitnessSigner(witness_name("t", "replica-1"), bytes(32)).cosign(signed, 1_790_000_200)
    # Each under a node of the cluster file: the gateway reads those nodes' keys, no others.
    redis_notes = {b"replica-1": good, b"ingest-1": impostor}
    gateway, thread = serve(cluster, FakeRedis(redis_notes))
    with thread as server:
        url = f"http://127.0.0.1:{server.port}"
        shown = json.loads(get(f"{url}/api/ledgers/{LEDGER}/checkpoint")[2])
        assert shown["size"] == SIGNED_AT and shown["cosigned_by"] == ["t/witness/replica-1"]
        log_key, witnesses = keys_of(shown)
        assert ov.verify_checkpoint(shown["note"].encode(), log_key, witnesses, 1)["size"] == SIGNED_AT
        metrics = get(f"{url}/metrics")[2].decode()
        assert f'vledger_checkpoint_cosignatures{{ledger="{LEDGER}"}} 1.0' in metrics
        assert f'vledger_checkpoint_lag_records{{ledger="{LEDGER}"}} {RECORDS - SIGNED_AT}.0' in metrics
        assert f'vledger_checkpoint_age_seconds{{ledger="{LEDGER}"}}' in metrics
    gateway.close()


def test_an_unknown_ledger_or_a_bad_name_is_a_json_error(cluster: dict[str, Any]) -> None:
    gateway, thread = serve(cluster, NoRedis())
    with thread as server:
        url = f"http://127.0.0.1:{server.port}"
        status, _, body = get(f"{url}/ledgers/nosuch/checkpoint")
        assert status == 404 and json.loads(body)["error"]["code"] == "no_such_ledger"
        status, _, body = get(f"{url}/ledgers/..%2Fetc/checkpoint")
        assert status in (400, 404) and "error" in json.loads(body)
    gateway.close()


def test_an_imported_copy_of_the_store_serves_the_same_checkpoints(cluster: dict[str, Any], tmp_path: Path) -> None:
    """`vledger export` then `vledger import` elsewhere: the copy keeps the checkpoint lines
    (imported rows), and its gateway answers as the original's does."""
    config = cluster["config"]
    copy = two_nodes(tmp_path / "cluster.toml")
    shutil.copytree(config.keys_dir, copy.keys_dir)
    export_store(config.store_dir("replica-1"), None, tmp_path / "e.jsonl", LIMITS)
    assert import_file(tmp_path / "e.jsonl", copy.store_dir("replica-1"), None, LIMITS).ok
    answers = []
    for served in (config, copy):
        gateway = Gateway(served, "replica-1", redis_client=NoRedis())
        with HttpThread(build_app(gateway), "127.0.0.1", 0) as server:
            url = f"http://127.0.0.1:{server.port}/api/ledgers/{LEDGER}"
            answers.append([get(f"{url}/checkpoint{query}")[2] for query in ("", "?witnesses=0", "?witnesses=1")])
            answers[-1].append(get(f"{url}/receipts/7")[2])
        gateway.close()
    assert answers[0] == answers[1]
    assert json.loads(answers[1][0])["size"] == COSIGNED_AT and json.loads(answers[1][1])["size"] == SIGNED_AT


def test_a_voters_records_past_the_served_checkpoint_are_listed_without_a_receipt(tmp_path: Path) -> None:
    # The served checkpoint is the most cosigned one, which may be older than the records: the
    # voter's lookup indexed only what it covered and answered not_found for a voter registered
    # after it (a client that had verified a larger checkpoint was told the voter does not exist).
    config = two_nodes(tmp_path / "cluster.toml")
    home = HomeSigner("t", SEED)
    ledger = "election-2026"
    run_demo(
        config.store_dir("replica-1"),
        30,
        0,
        LIMITS,
        lambda name: home_key("t", name, home.key(name).public_key).encode(),
    )
    with ChainStore(config.store_dir("replica-1"), origin="ingest-1") as store:
        registrations = [r for r in store.range(ledger) if r.content.kind == "register"]
        covered = 1  # the genesis alone
        signed = home.sign(ledger, covered, store.root(ledger, covered))
        store.checkpoints.keep(ledger, "signed", covered, signed.root, signed.note)
    assert registrations
    gateway, thread = serve({"config": config}, NoRedis())
    with thread as server:
        status, _, body = get(
            f"http://127.0.0.1:{server.port}/api/ledgers/{ledger}/voters/{electronic_id(registrations[0])}"
        )
        assert status == 200, body
        shown = json.loads(body)
        assert shown["checkpoint"]["size"] == covered
        assert [r["receipt"] for r in shown["records"]] == [None] * len(shown["records"]) and shown["records"]
    gateway.close()


def test_a_saved_voters_answer_is_a_set_of_receipts_receipt_verify_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Outsider o12: 15.2 calls the /voters answer saved as a file "a voter's set of receipts", and
    `vledger receipt verify` refused it (bad_receipt). Now each receipt in it is verified and must be
    of a record of that voter; records listed without one are named pending; a set with another
    voter's receipt, or with none, is refused."""
    config = two_nodes(tmp_path / "cluster.toml")
    home = HomeSigner("t", SEED)
    ledger = "election-2026"
    pinned = home_key("t", ledger, home.key(ledger).public_key).encode()
    rules = {"type": "election", "choices": ["a", "b"], "opens": 1, "closes": 2**42, "checkpoint_key": pinned}
    with ChainStore(config.store_dir("replica-1"), origin="ingest-1") as store:
        kinds = ("cast", "register", "uncast", "withdraw")
        genesis = LedgerRules(kinds, 0, rules).genesis_content(ledger, "admin", "g", 1)
        store.create_ledger(Entry.prepare(genesis, 0, LIMITS))
        voters = []
        for i in range(2):
            content = Content(ledger, "register", {"voter_id": f"V-{i}"}, "admin", f"reg{i}", 1)
            voters.append(electronic_id(store.append(Entry.prepare(content, 0, LIMITS))))
        for i, (kind, extra) in enumerate((("cast", {"choice": "a"}), ("uncast", {}), ("cast", {"choice": "b"}))):
            for eid in voters:
                payload = {"electronic_id": eid, **extra}
                store.append(Entry.prepare(Content(ledger, kind, payload, "admin", f"{kind}{i}{eid}", 1), 0, LIMITS))
        size = store.size(ledger)
        signed = home.sign(ledger, size, store.root(ledger, size))
        store.checkpoints.keep(ledger, "signed", size, signed.root, signed.note)
    gateway, thread = serve({"config": config}, NoRedis())
    with thread as server:
        answers = [get(f"http://127.0.0.1:{server.port}/api/ledgers/{ledger}/voters/{eid}")[2] for eid in voters[:2]]
    gateway.close()
    saved = tmp_path / "voters.json"
    saved.write_bytes(answers[0])
    shown = json.loads(answers[0])
    heights = [r["height"] for r in shown["records"]]
    assert len(heights) == 4 and all(r["receipt"] for r in shown["records"])
    verify = ["receipt", "verify", str(saved), "--key", pinned]
    assert cli.main([*verify, "--json"]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert (checked["ok"], checked["electronic_id"], checked["pending"]) == (True, voters[0], [])
    assert [r["height"] for r in checked["receipts"]] == heights
    assert {r["checkpoint"]["size"] for r in checked["receipts"]} == {size}
    assert cli.main(verify) == 0
    assert capsys.readouterr().out.startswith(f"valid: {len(heights)} receipts of {voters[0]}:\n  register record ")

    pending = dict(shown, records=[*shown["records"][:-1], dict(shown["records"][-1], receipt=None)])
    saved.write_text(json.dumps(pending), encoding="utf-8")
    assert cli.main([*verify, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pending"] == heights[-1:]

    another = json.loads(answers[1])["records"][0]
    for records, why in (
        ([*shown["records"], another], f"is no record of {voters[0]}"),
        ([dict(r, receipt=None) for r in shown["records"]], f"no record of {voters[0]} has a receipt yet"),
    ):
        saved.write_text(json.dumps(dict(shown, records=records)), encoding="utf-8")
        assert cli.main([*verify, "--json"]) == 1
        error = json.loads(capsys.readouterr().out)["error"]
        assert error["code"] == "bad_receipt" and why in error["message"], error


def test_redis_down_is_logged_once_a_minute_a_ledger_not_once_a_read(
    cluster: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # A store-only gateway (or Redis down) logged a warning per checkpoint read: `make bench`'s
    # gateway run printed 118 of them.
    gateway = Gateway(cluster["config"], "replica-1", redis_client=NoRedis())
    with caplog.at_level("WARNING", logger="vledger.verifier.gateway"):
        for _ in range(3):
            gateway._checkpoints.clear()  # past the 1 s cache: each read asks Redis again
            assert gateway.checkpoint(LEDGER).gathered.checkpoint.size == COSIGNED_AT
    assert [r.getMessage() for r in caplog.records].count(
        f"checkpoint of {LEDGER}: Redis unavailable (redis is down); serving what the store holds"
    ) == 1
    gateway.close()


def test_the_index_and_a_proof_without_size_are_of_the_served_checkpoint(cluster: dict[str, Any]) -> None:
    """Outsider o24 F6/B4 (15.2): `/api/ledgers` listed a size past the checkpoint served, and an
    inclusion proof without `size` was of the store's tree, a root a client pairing it with the
    served checkpoint cannot verify. Both are now the served checkpoint's (the most cosigned)."""
    gateway, thread = serve(cluster, NoRedis())
    with thread as server:
        url = f"http://127.0.0.1:{server.port}"
        shown = json.loads(get(f"{url}/api/ledgers/{LEDGER}/checkpoint")[2])
        listed = {e["ledger"]: e for e in json.loads(get(f"{url}/api/ledgers")[2])["ledgers"]}[LEDGER]
        assert (listed["size"], listed["root"], listed["signed"]) == (shown["size"], shown["root"], True)
        assert shown["size"] == COSIGNED_AT
        proof = json.loads(get(f"{url}/api/ledgers/{LEDGER}/proof/inclusion?index=3")[2])
        assert (proof["size"], proof["root"]) == (COSIGNED_AT, shown["root"])
        status, _, body = get(f"{url}/api/ledgers/{LEDGER}/proof/inclusion?index={COSIGNED_AT}")
        assert status == 404 and json.loads(body)["error"]["code"] == "bad_tree_size"
        at = json.loads(get(f"{url}/api/ledgers/{LEDGER}/proof/inclusion?index={COSIGNED_AT}&size={RECORDS}")[2])
        assert at["size"] == RECORDS  # a size asked for is still answered: the store's tree, unchecked past it
    gateway.close()


def test_a_ledger_whose_served_checkpoint_is_gone_a_moment_leaves_the_index_whole(
    cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review r32: the index asks ``checkpoint`` apart from ``_served`` (their caches age apart);
    a NotFoundError there failed the whole `/api/ledgers` for one ledger's race."""
    gateway = Gateway(cluster["config"], "replica-1", redis_client=NoRedis())

    checkpoint = gateway.checkpoint

    def gone_for_the_index(ledger: str, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:  # _served's own read: still there
            return checkpoint(ledger, *args, **kwargs)
        raise NotFoundError(f"no checkpoint of {ledger} this moment")

    monkeypatch.setattr(gateway, "checkpoint", gone_for_the_index)
    [entry] = [e for e in gateway.ledgers() if e["ledger"] == LEDGER]
    assert (entry["size"], entry["signed"], entry["refused"]) == (RECORDS, True, None)  # the store's tree
    gateway.close()
