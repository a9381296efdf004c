"""Outside witnesses on real processes: a home feeds the tlog-witness written from the C2SP spec
(tests/tlog_witness.py, over HTTP), receipts carry its cosignature and verify offline with only
the genesis; a witness that was fed a fork refuses (409, then 422), the home names it in an
alert, and a receipt of that ledger short of the genesis quorum is refused offline."""

from __future__ import annotations

import dataclasses
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vledger.broker.redis_server import connect
from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import load_signing_key, load_verify_key, signing_key_paths, witness_keys
from vledger.client import Client
from vledger.config.cluster import load_cluster
from vledger.node.errors import VledgerError
from vledger.node.note import add_checkpoint_request
from vledger.node.outside import QUORUM_NOTE
from vledger.node.receipt import Receipt, keys_from_genesis, verify_witnessed
from vledger.node.witness import HomeSigner, home_key
from vledger.tests.integration.cluster import ADMIN, LocalCluster, entry, genesis, remote_error, wait_until
from vledger.tests.tlog_witness import TlogWitness
from vledger.tools.tally_command import ledger_head

CLUSTER = "test"  # LocalCluster's [cluster] name
VOTES, AUDIT = "votes", "audit"  # votes lists the honest witness (quorum 1), audit both (quorum 2)
WAIT = 30.0


@pytest.fixture
def witnesses() -> Iterator[tuple[TlogWitness, TlogWitness]]:
    honest = TlogWitness("witness.example/honest", secrets.token_bytes(32), {}).start()
    forked = TlogWitness("witness.example/forked", secrets.token_bytes(32), {}).start()
    yield honest, forked
    honest.stop()
    forked.stop()


def _cli(cluster: LocalCluster, *args: str, check: bool = True) -> tuple[int, str]:
    key = cluster.directory / "keys" / f"{ADMIN}.key_secret"
    done = cluster.cli(*args[:2], "--config", str(cluster.config_path), "--key", str(key), *args[2:], check=check)
    return done.returncode, done.stdout + done.stderr


def test_a_home_feeds_outside_witnesses_and_receipts_need_their_quorum(
    start_cluster: Callable[..., LocalCluster], witnesses: tuple[TlogWitness, TlogWitness], tmp_path: Path
) -> None:
    honest, forked = witnesses
    outside = {honest.name: honest.url, forked.name: forked.url}
    cluster = start_cluster(nodes=1, outside_witnesses=outside, gateways=["ingest-1"])
    keys = cluster.directory / "keys"
    public = load_verify_key(signing_key_paths(keys, "ingest-1")[1]).raw
    for ledger in (VOTES, AUDIT):
        vkey = home_key(CLUSTER, ledger, public).encode()
        honest.trust(f"{CLUSTER}/{ledger}", vkey)
        forked.trust(f"{CLUSTER}/{ledger}", vkey)
    # Before the ledger exists, someone with the home's key feeds the second witness a tree of
    # "audit" that the home will never hold: that witness now refuses the true one.
    fork = HomeSigner(CLUSTER, load_signing_key(signing_key_paths(keys, "ingest-1")[0]).seed).sign(AUDIT, 2, bytes(32))
    assert forked.add_checkpoint(add_checkpoint_request(0, [], fork.note).encode())[0] == 200

    admin = cluster.admin()
    unusable = {"checkpoint_key": home_key(CLUSTER, VOTES, public).encode(), "witnesses": [honest.vkey], "quorum": 2}
    assert remote_error(admin.create_ledger, genesis(VOTES, ADMIN, ["vote"], unusable)).code == "bad_genesis"
    # votes by the command line (the home's key pinned from its hello), audit by the library.
    _cli(cluster, "ledger", "create", VOTES, "--kinds", "vote", "--difficulty", "0", "--outside-witness", honest.vkey)
    audit = {"witnesses": [honest.vkey, forked.vkey], "quorum": 2}
    admin.create_ledger(
        genesis(AUDIT, ADMIN, ["vote"], {"checkpoint_key": home_key(CLUSTER, AUDIT, public).encode(), **audit})
    )
    for ledger in (VOTES, AUDIT):
        for n in range(5):
            admin.put(entry(ledger, "vote", {"n": n}, ADMIN))

    # The honest witness cosigns both ledgers as they grow; a receipt of votes carries it.
    out = tmp_path / "votes.receipt"
    _cli(cluster, "receipt", "get", VOTES, "3", "--wait", "20", "-o", str(out))
    wait_until(lambda: honest.latest.get(f"{CLUSTER}/{AUDIT}", (0, b""))[0] == 6, WAIT, "audit cosigned by honest")
    # The forked witness answered the home 409 (its size 2), then 422 (no proof from its fork).
    repl = ReplicationLedger(connect(cluster.cluster_redis_url))
    alert = wait_until(
        lambda: next((a for a in repl.open_alerts().values() if a["what"] == "witness_refused"), None),
        WAIT,
        "the home names the witness that refused",
    )
    assert (alert["node"], alert["source"], alert["ledger"]) == ("ingest-1", forked.name, AUDIT)
    # Its 409 may name a size past the home's first checkpoint (a refusal at once); once the home
    # is past it, the retry from that size brings the 422.
    wait_until(lambda: 409 in forked.answers and 422 in forked.answers, WAIT, "the forked witness's 409 and 422")
    assert forked.latest[f"{CLUSTER}/{AUDIT}"][0] == 2
    assert set(repl.outside_cosignatures(VOTES)) == {honest.name, QUORUM_NOTE}  # 1 of 1: the quorum's too
    # The public gateway serves the outside cosignature with the keys and quorum the genesis lists.
    try:
        with urllib.request.urlopen(f"{cluster.gateway_url('ingest-1')}api/ledgers/{VOTES}/checkpoint") as answer:
            shown = json.load(answer)
    except urllib.error.HTTPError as e:
        raise AssertionError(e.read()) from e
    assert shown["outside_witnesses"] == {"keys": [honest.vkey], "quorum": 1}
    assert honest.name in shown["cosigned_by"]

    # The checkpoint command finds the largest checkpoint with that many outside cosignatures.
    assert admin.call("checkpoint", {"ledger": VOTES, "outside": 1})["witnesses"] == [honest.name]
    assert remote_error(admin.call, "checkpoint", {"ledger": AUDIT, "outside": 2}).code == "not_found"
    assert remote_error(admin.call, "checkpoint", {"ledger": AUDIT, "outside": 33}).code == "bad_request"
    # A receipt of audit with what the cluster has: one of the two outside cosignatures.
    served = admin.call("checkpoint", {"ledger": AUDIT, "witnesses": 1})
    assert served["witnesses"] == [honest.name] and served["size"] == 6
    proof = admin.call("proof.inclusion", {"ledger": AUDIT, "index": 3, "size": 6})["proof"]
    record = admin.call("get", {"ledger": AUDIT, "height": 3})["record"]
    short = tmp_path / "audit.receipt"
    short.write_bytes(Receipt.of(record, proof, served["checkpoint"]).encode())
    for ledger in (VOTES, AUDIT):
        (tmp_path / f"{ledger}.genesis").write_bytes(admin.call("get", {"ledger": ledger, "height": 0})["record"])
    _, refused = _cli(cluster, "receipt", "get", AUDIT, "3", "--wait", "1", "-o", str(tmp_path / "x"), check=False)
    assert "not_found" in refused and "nor with 2 of the outside witnesses" in refused
    cluster.stop()

    done = cluster.cli("receipt", "verify", str(out), "--genesis", str(tmp_path / "votes.genesis"))
    assert "1 outside witness cosigned (witness.example/honest), the genesis asks 1" in done.stdout
    failed = cluster.cli("receipt", "verify", str(short), "--genesis", str(tmp_path / "audit.genesis"), check=False)
    assert failed.returncode == 1 and "no_quorum" in failed.stderr and forked.name in failed.stderr


def test_a_witness_that_trickles_its_answers_holds_back_only_itself_and_is_named(
    start_cluster: Callable[..., LocalCluster], witnesses: tuple[TlogWitness, TlogWitness], tmp_path: Path
) -> None:
    # outsider26 I1: a listed witness answering a byte at a time (each within a read's timeout)
    # held the home's one feeding thread: no other witness was fed, no receipt, no alert.
    honest, slow = witnesses
    slow.trickle = 0.5  # a byte every 0.5 s: each read well within witness_timeout_ms
    cluster = start_cluster(
        nodes=1,
        outside_witnesses={honest.name: honest.url, slow.name: slow.url},
        replication={"witness_timeout_ms": 2000, "witness_backoff_max_ms": 2000},
    )
    public = load_verify_key(signing_key_paths(cluster.directory / "keys", "ingest-1")[1]).raw
    vkey = home_key(CLUSTER, VOTES, public).encode()
    for witness in (honest, slow):
        witness.trust(f"{CLUSTER}/{VOTES}", vkey)
    admin = cluster.admin()
    outside = {"witnesses": [slow.vkey, honest.vkey], "quorum": 1}  # the slow one listed first
    admin.create_ledger(genesis(VOTES, ADMIN, ["vote"], {"checkpoint_key": vkey, **outside}))
    repl = ReplicationLedger(connect(cluster.cluster_redis_url))

    def unreachable() -> dict[str, str] | None:
        return next((a for a in repl.open_alerts().values() if a["what"] == "witness_unreachable"), None)

    for height in range(1, 9):
        admin.put(entry(VOTES, "vote", {"n": height}, ADMIN))
        # The honest witness cosigns each new record while the slow one holds a request open.
        _cli(cluster, "receipt", "get", VOTES, str(height), "--wait", "20", "-o", str(tmp_path / f"{height}.receipt"))
        if height == 1:
            wait_until(lambda: slow.trickled >= 1, WAIT, "the slow witness holds a request")
    alert = wait_until(unreachable, WAIT, "the home names the witness that does not answer")
    assert (alert["node"], alert["source"], alert["ledger"]) == ("ingest-1", slow.name, VOTES)
    assert "within the deadline" in alert["detail"] or "timed out" in alert["detail"]
    assert slow.latest.get(f"{CLUSTER}/{VOTES}") is None and honest.latest[f"{CLUSTER}/{VOTES}"][0] == 9
    slow.trickle = None  # it answers again: it cosigns, and the home closes the alert
    wait_until(lambda: slow.latest.get(f"{CLUSTER}/{VOTES}", (0, b""))[0] == 9, WAIT, "the slow witness cosigns")
    wait_until(lambda: unreachable() is None, WAIT, "the alert closes")
    # The home publishes the note after the answer closed the alert (last CI saw it read in between).
    both = {honest.name, slow.name, QUORUM_NOTE}
    wait_until(lambda: set(repl.outside_cosignatures(VOTES)) == both, WAIT, "both cosignatures are published")


def test_a_head_its_outside_witnesses_vouch_for_is_fresh_while_the_cluster_s_witness_is_down(
    start_cluster: Callable[..., LocalCluster], witnesses: tuple[TlogWitness, TlogWitness]
) -> None:
    # outsider o8 J4: the cluster's witnesses stopped while a ledger whose genesis lists two
    # outside witnesses (both up) was written. The gateway counts those (3 trusted, 2 vouch);
    # vledger.client counted its own witness alone and refused every read of the live head
    # ("none did, so the server shows an old view"), and `vledger tally` judged it by 1 of 1.
    first, second = witnesses
    cluster = start_cluster(
        nodes=1,
        replicas=1,
        outside_witnesses={first.name: first.url, second.name: second.url},
        gateways=["ingest-1"],
    )
    vkey = home_key(CLUSTER, VOTES, load_verify_key(signing_key_paths(cluster.directory / "keys", "ingest-1")[1]).raw)
    for witness in (first, second):
        witness.trust(f"{CLUSTER}/{VOTES}", vkey.encode())
    admin = cluster.admin()
    outside = {"witnesses": [first.vkey, second.vkey], "quorum": 1}
    admin.create_ledger(genesis(VOTES, ADMIN, ["vote"], {"checkpoint_key": vkey.encode(), **outside}))
    cluster.stop_node("replica-1")
    for n in range(1, 5):
        admin.put(entry(VOTES, "vote", {"n": n}, ADMIN))
    origin = f"{CLUSTER}/{VOTES}"
    wait_until(
        lambda: all(w.latest.get(origin, (0, b""))[0] == 5 for w in (first, second)), WAIT, "both outside cosign 5"
    )
    url = f"{cluster.gateway_url('ingest-1')}api/ledgers/{VOTES}/checkpoint"

    def served() -> bool:
        with urllib.request.urlopen(url) as answer:
            shown = json.load(answer)
        return bool(shown["size"] == 5 and {first.name, second.name} <= set(shown["cosigned_by"]))

    wait_until(served, WAIT, "the gateway serves the head both outside witnesses cosigned", interval=0.5)
    config = load_cluster(cluster.config_path)
    pinned = {VOTES: admin.call("get", {"ledger": VOTES, "height": 0})["record"]}
    with Client.http(
        cluster.gateway_url("ingest-1"), genesis=pinned, witnesses=witness_keys(config).values()
    ) as reader:
        assert reader.checkpoint(VOTES).checkpoint.size == 5
    head = ledger_head(config, connect(cluster.cluster_redis_url), VOTES)
    assert (head.size, head.needed) == (5, 2) and head.fresh_ms is not None


def test_one_outside_witness_lagging_leaves_what_the_quorum_cosigned_witnessed(
    start_cluster: Callable[..., LocalCluster], witnesses: tuple[TlogWitness, TlogWitness], tmp_path: Path
) -> None:
    # Outsider o20 F1: 2 of 2 listed; once one stopped cosigning while the other cosigned newer
    # sizes, every reader said no quorum ever cosigned the ledger (verify --cluster no_quorum,
    # receipt get not_found, the gateway's checkpoint and receipts short of the quorum), though
    # the home's store held the sizes both cosigned.
    first, second = witnesses
    cluster = start_cluster(nodes=1, replicas=1, outside_witnesses={w.name: w.url for w in witnesses},
                            gateways=["ingest-1"])  # fmt: skip
    public = load_verify_key(signing_key_paths(cluster.directory / "keys", "ingest-1")[1]).raw
    for witness in witnesses:
        witness.trust(f"{CLUSTER}/{AUDIT}", home_key(CLUSTER, AUDIT, public).encode())
    admin = cluster.admin()
    rules = {"checkpoint_key": home_key(CLUSTER, AUDIT, public).encode(), "witnesses": [first.vkey, second.vkey]}
    admin.create_ledger(genesis(AUDIT, ADMIN, ["vote"], {**rules, "quorum": 2}))
    for n in range(3):
        admin.put(entry(AUDIT, "vote", {"n": n}, ADMIN))
    origin = f"{CLUSTER}/{AUDIT}"
    for witness in witnesses:
        wait_until(lambda w=witness: w.latest.get(origin, (0, b""))[0] == 4, WAIT, f"{witness.name} cosigns 4")
    repl = ReplicationLedger(connect(cluster.cluster_redis_url))
    wait_until(lambda: {first.name, second.name} <= set(repl.outside_cosignatures(AUDIT)), WAIT, "both published")
    second.stop()  # it lags from now on: the home's requests find no one
    for n in range(3, 6):
        admin.put(entry(AUDIT, "vote", {"n": n}, ADMIN))
    wait_until(lambda: first.latest.get(origin, (0, b""))[0] == 7, WAIT, f"{first.name} cosigns 7")
    wait_until(lambda: b"\n7\n" in repl.outside_cosignatures(AUDIT)[first.name], WAIT, "its note of 7 published")

    assert admin.call("checkpoint", {"ledger": AUDIT, "outside": 2})["size"] == 4
    done = cluster.cli("verify", "--cluster", str(cluster.config_path), "--json", check=False)
    report = next(r for r in json.loads(done.stdout)["outside"] if r["ledger"] == AUDIT)
    assert report["ok"] and report["size"] == 4 and report["head"] == 7, report
    assert set(report["witnesses"]) == {first.name, second.name}
    out = tmp_path / "audit.receipt"
    _cli(cluster, "receipt", "get", AUDIT, "2", "--wait", "5", "-o", str(out))
    (tmp_path / "audit.genesis").write_bytes(admin.call("get", {"ledger": AUDIT, "height": 0})["record"])
    done = cluster.cli("receipt", "verify", str(out), "--genesis", str(tmp_path / "audit.genesis"))
    assert "2 outside witnesses cosigned" in done.stdout, done.stdout
    gateway = cluster.gateway_url("ingest-1")
    with urllib.request.urlopen(f"{gateway}api/ledgers/{AUDIT}/checkpoint") as answer:
        shown = json.load(answer)
    assert shown["size"] == 4 and {first.name, second.name} <= set(shown["cosigned_by"]), shown
    served = tmp_path / "served.receipt"
    with urllib.request.urlopen(f"{cluster.gateway_url('ingest-1')}api/ledgers/{AUDIT}/receipts/1") as answer:
        served.write_bytes(answer.read())
    cluster.cli("receipt", "verify", str(served), "--genesis", str(tmp_path / "audit.genesis"))
    # The HTTP client asks the gateway for that many cosignatures: the quorum's checkpoint too.
    with Client.http(gateway, genesis={AUDIT: (tmp_path / "audit.genesis").read_bytes()}) as client:
        assert client.checkpoint(AUDIT).checkpoint.size == 4
        assert client.record(AUDIT, 2).record.ledger == AUDIT
    # repair holds a copy to it (it said none of the quorum had cosigned anything: its guard was off).
    replica = cluster.admin("replica-1")
    wait_until(lambda: replica.call("size", {"ledger": AUDIT})["size"] == 7, WAIT, "replica-1 holds 7")
    assert cluster.stop_node("replica-1") == 0
    done = cluster.cli("repair", "replica-1", "--config", str(cluster.config_path), "--json", "--force",
                       "--timeout", "4", check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    [audit] = [r for r in json.loads(done.stdout)["ledgers"] if r["ledger"] == AUDIT]
    assert audit["outside"]["quorum"] == 2 and audit["outside"]["size"] == 4, audit


def test_a_slower_outside_witness_leaves_every_served_checkpoint_verifying_with_the_anchors(
    start_cluster: Callable[..., LocalCluster],
) -> None:
    """Outsider o24 F5: with an outside witness merely ~2 s slower than the cluster's, the
    gateway served, while the ledger was written, the outside quorum's (older) size with no
    cluster witness line, and `receipt verify --anchors` of real receipts said no_quorum. Every
    checkpoint served under writes now verifies with a majority of the cluster's witnesses and
    the genesis' outside quorum, as a reader with the anchors asks."""
    slow = TlogWitness("witness.example/slow", secrets.token_bytes(32), {}).start()
    slow.delay = 1.5
    try:
        cluster = start_cluster(nodes=1, replicas=2, outside_witnesses={slow.name: slow.url}, gateways=["replica-1"])
        public = load_verify_key(signing_key_paths(cluster.directory / "keys", "ingest-1")[1]).raw
        vkey = home_key(CLUSTER, VOTES, public)
        slow.trust(f"{CLUSTER}/{VOTES}", vkey.encode())
        admin = cluster.admin()
        rules = {"checkpoint_key": vkey.encode(), "witnesses": [slow.vkey], "quorum": 1}
        admin.create_ledger(genesis(VOTES, ADMIN, ["vote"], rules))
        cluster_keys = list(witness_keys(load_cluster(cluster.config_path)).values())
        majority = len(cluster_keys) // 2 + 1
        keys = keys_from_genesis(admin.call("get", {"ledger": VOTES, "height": 0})["record"], VOTES, cluster_keys)
        keys = dataclasses.replace(keys, quorum=majority)
        url = f"{cluster.gateway_url('replica-1')}ledgers/{VOTES}/checkpoint"
        stop = threading.Event()

        def write() -> None:
            n = 0
            while not stop.wait(0.25):
                admin_writer.put(entry(VOTES, "vote", {"n": n}, ADMIN))
                n += 1

        admin_writer = cluster.admin()
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        origin = f"{CLUSTER}/{VOTES}"
        wait_until(lambda: slow.latest.get(origin, (0, b""))[0] > 1, WAIT, "the slow witness cosigns the ledger")
        sizes, refused = [], []
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            with urllib.request.urlopen(url) as answer:
                note = answer.read()
            try:
                sizes.append(verify_witnessed(note, keys).checkpoint.size)
            except VledgerError as e:
                refused.append(f"{e.code}: {e.message}")
            time.sleep(0.4)
        stop.set()
        writer.join(10)
        assert not refused, refused
        assert len(sizes) >= 10 and sizes[-1] > sizes[0], sizes  # it was written meanwhile
    finally:
        slow.stop()
