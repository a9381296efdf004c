"""Observers as real processes: they recount every ledger by its rules, sign their tallies, and agree.

One cluster for the module: an ingest node, a replica and two observers, each a real
process over real CURVE sockets and the session's Redis. An election written live (one
observer restarted half-way) is a module fixture too, written once for the tests that read
it: each test runs alone or in any order (a test that forges a tally takes it out again; one
that reads the tallies at the head first waits for both observers to reach it). Besides:
a chain with rule breakers placed behind the ingest node's back, the commands that read
the signed tallies and a voter's records.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.redis_server import RedisServer, connect
from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import load_signing_key, load_verify_key, signing_key_paths
from vledger.broker.tallies import Published, TallyBoard
from vledger.config.settings import Limits
from vledger.node.export import StoredRecord, decode_export_line
from vledger.node.record import Entry
from vledger.node.rules.engine import RulesEngine
from vledger.node.rules.votes import ElectionState
from vledger.node.store import ChainStore
from vledger.tests.integration.cluster import (
    ADMIN,
    FORGING_OBSERVERS,
    LocalCluster,
    entry,
    now_ms,
    remote_error,
    wait_until,
)
from vledger.tests.unit.verifier.chains import Election, plan_election, write_election
from vledger.verifier.tally import Snapshot, check_published, counted_hash

ELECTION = "election"
ROGUE = "rogue"
OBSERVERS = ("observer-1", "observer-2")
VOTERS = int(os.environ.get("VLEDGER_ELECTION_VOTERS", "10000"))  # the election size


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[LocalCluster]:
    with LocalCluster(
        redis_server.url,
        nodes=1,
        replicas=1,
        observers=2,
        observing=FORGING_OBSERVERS,
        ingest={"throttle_rate": 1_000_000, "throttle_burst": 1_000_000},  # the test measures counting
        replication={"write_timeout_ms": 1000},
    ) as running:
        yield running


@pytest.fixture(scope="module")
def election() -> Election:
    return plan_election(ELECTION, VOTERS, now_ms(), seed=2026, author="writer1")


@pytest.fixture(scope="module")
def written(cluster: LocalCluster, election: Election) -> dict[str, Snapshot]:
    """The election written live, one observer restarted mid-election: each observer's signed
    tally at its head then, before any test added a record."""
    started = time.monotonic()
    writer = cluster.client("writer1")
    genesis = election.rules.genesis_content(ELECTION, ADMIN, "genesis", now_ms())
    cluster.admin().create_ledger(Entry.prepare(genesis, 0, Limits()))
    for number, phase in enumerate(election.phases):
        writer.put_many(phase, window=128)
        if number == 1:  # mid-election: one observer goes down and comes back
            assert cluster.restart_node("observer-2") == 0
    snapshots = at_head(cluster, ELECTION)
    print(f"election of {VOTERS} voters written and tallied by both observers in {time.monotonic() - started:.1f} s")
    return snapshots


def board(cluster: LocalCluster) -> TallyBoard:
    return TallyBoard(connect(cluster.cluster_redis_url))


def latest(cluster: LocalCluster, ledger: str) -> dict[str, Snapshot]:
    """Each observer's latest snapshot whose signature verifies with its public key file."""
    found = {}
    for name, published in board(cluster).latest(ledger, OBSERVERS).items():
        if published is None:
            continue
        key = load_verify_key(signing_key_paths(cluster.directory / "keys", name)[1])
        checked = check_published(published, key, ledger)
        assert checked.snapshot is not None, checked.problem
        found[name] = checked.snapshot
    return found


def at_head(cluster: LocalCluster, ledger: str, timeout: float = 30.0) -> dict[str, Snapshot]:
    """Wait until both observers published a signed tally at the home node's head."""
    head = cluster.admin().call("size", {"ledger": ledger})["size"] - 1

    def there() -> dict[str, Snapshot] | None:
        snapshots = latest(cluster, ledger)
        return snapshots if {s.height for s in snapshots.values()} == {head} and len(snapshots) == 2 else None

    return wait_until(there, timeout, f"both observers' tallies of {ledger} at height {head}", interval=0.1)  # type: ignore[no-any-return]


@contextmanager
def in_place_of(
    cluster: LocalCluster, original: Published, height: int, body: bytes, signature: bytes
) -> Iterator[None]:
    """An entry published in ``original``'s observer's stream of the election and made its latest,
    for the block; then ``original`` its latest again and the entry taken out of the stream: left in
    it, a later read of the history (``vledger tally`` looking for a common height) would find it."""
    tallies = board(cluster)
    entry_id = tallies.publish(ELECTION, original.observer, height, body, signature)
    try:
        yield
    finally:
        tallies.client.set(tallies.latest_key(ELECTION, original.observer), original.entry_id)
        tallies.client.xdel(tallies.stream_key(ELECTION, original.observer), entry_id)


def cli_common(cluster: LocalCluster) -> list[str]:
    return ["--config", str(cluster.config_path)]


def recount_from_export(
    cluster: LocalCluster, node: str, ledger: str, height: int, tmp: Path
) -> tuple[Any, bytes, int]:
    """``vledger export`` of ``node``'s store, replayed by the rules engine up to ``height``: the
    tally, counted hash, last height replayed."""
    output = tmp / f"{node}.jsonl"
    cluster.cli("export", str(cluster.store_dir(node)), "--ledger", ledger, "-o", str(output))
    lines = output.read_bytes().splitlines()
    decoded = [decode_export_line(line, n, Limits()) for n, line in enumerate(lines, 1)]
    # Checkpoint lines aside, and the records other tests added after ``height``.
    records = [d.record for d in decoded if isinstance(d, StoredRecord) and d.record.height <= height]
    engine = RulesEngine()
    assert engine.replay(records) == []
    state = engine.state(ledger)
    assert state is not None and isinstance(state.domain, ElectionState)
    tally = state.domain.tally()
    return tally, counted_hash(ref.hash for ref in tally.counted), records[-1].height


def test_two_observers_and_a_recount_from_an_export_agree_exactly(
    cluster: LocalCluster, election: Election, written: dict[str, Snapshot], tmp_path: Path
) -> None:
    # The ingest node enforces the rules: a second vote of a steady voter is refused.
    refused = remote_error(
        cluster.client("writer1").put,
        entry(ELECTION, "cast", {"electronic_id": election.eids[0], "choice": "x"}, "writer1"),
    )
    assert refused.code in ("invalid_choice", "already_voted", "withdrawn")

    one, two = written["observer-1"], written["observer-2"]
    assert one.same_count(two) and one.observer == "observer-1" and two.observer == "observer-2"
    assert one.tally["counts"] == dict(election.counts)  # what the voters' stories say
    assert (one.tally["registered"], one.tally["cast"], one.tally["withdrawn"], one.tally["flagged"]) == (
        VOTERS,
        election.cast,
        election.withdrawn,
        0,
    )
    wait_until(
        lambda: cluster.sizes(ELECTION, ["replica-1"])["replica-1"] > one.height, 20, "replica-1 at the election's end"
    )
    tally, counted, head = recount_from_export(cluster, "replica-1", ELECTION, one.height, tmp_path)
    assert head == one.height
    assert tally.counts == one.tally["counts"] and counted == one.counted
    assert (tally.registered, tally.cast, tally.withdrawn) == (VOTERS, election.cast, election.withdrawn)


def test_rule_breakers_placed_behind_the_ingest_nodes_back_are_flagged_and_not_counted(cluster: LocalCluster) -> None:
    rogue = plan_election(ROGUE, 100, now_ms(), seed=5, breakers=True)
    assert cluster.stop_node("ingest-1") == 0
    store = ChainStore(cluster.store_dir("ingest-1"), origin="ingest-1")  # no domain rules: nothing refused
    try:
        write_election(store, rogue, now_ms())
        size = store.size(ROGUE)
    finally:
        store.close()
    cluster.start_node("ingest-1")

    snapshots = at_head(cluster, ROGUE)
    assert snapshots["observer-1"].height == size - 1
    one, two = snapshots["observer-1"], snapshots["observer-2"]
    assert one.same_count(two)
    assert one.tally["counts"] == dict(rogue.counts) and one.tally["flagged"] == len(rogue.breakers)
    alerts = ReplicationLedger(connect(cluster.cluster_redis_url)).alerts(10_000)
    for name in OBSERVERS:
        found = [a for a in alerts if a["node"] == name and a["ledger"] == ROGUE]
        assert [a["what"] for a in found] == rogue.breakers, name
        assert all(a["source"] == "ingest-1" and len(a["found"]) == 64 for a in found)


@pytest.mark.usefixtures("written")
def test_vledger_tally_checks_every_signature_and_shows_the_agreement(cluster: LocalCluster) -> None:
    at_head(cluster, ELECTION)
    done = cluster.cli("tally", ELECTION, *cli_common(cluster), "--json")
    report = json.loads(done.stdout)
    head = cluster.admin().call("size", {"ledger": ELECTION})["size"] - 1
    assert report["verdict"] == {"status": "agree", "height": head, "differing": [], "recount": []}
    assert report["ok"] is True
    assert [o["signature"] for o in report["observers"]] == ["ok", "ok"]
    text = cluster.cli("tally", ELECTION, *cli_common(cluster)).stdout
    assert f"agree at height {head}" in text and "signature OK" in text
    typo = cluster.cli("tally", "no-such-ledger", *cli_common(cluster), check=False)
    assert (typo.returncode, typo.stdout) == (1, "")  # not 3, "still counting": a script waiting on it stops
    assert "no_such_ledger" in typo.stderr


@pytest.mark.usefixtures("written")
def test_tallies_at_different_heights_are_compared_at_the_newest_height_both_published_and_one_ahead_exits_4(
    cluster: LocalCluster,
) -> None:
    at_head(cluster, ELECTION)
    original = board(cluster).latest(ELECTION, OBSERVERS)["observer-1"]
    assert original is not None
    ahead = Snapshot.decode(original.body)
    future = Snapshot(ahead.observer, ELECTION, ahead.height + 5, bytes(32), ahead.tally, ahead.counted, now_ms())
    key = load_signing_key(signing_key_paths(cluster.directory / "keys", "observer-1")[0])
    with in_place_of(cluster, original, future.height, future.body(), key.sign(future.body())):
        done = cluster.cli("tally", ELECTION, *cli_common(cluster), "--json", check=False)
        report = json.loads(done.stdout)
        assert report["verdict"]["status"] == "agree" and report["verdict"]["height"] == ahead.height
        # ... but a body past every checkpoint of the ledger cannot be checked: one observer's key
        # signing a height no record has made the others' older agreement exit 0.
        assert done.returncode == 4 and report["ahead"] == ["observer-1"] and report["ok"] is False
        text = cluster.cli("tally", ELECTION, *cli_common(cluster), check=False)
        assert text.returncode == 4 and "AHEAD: observer-1" in text.stdout


@pytest.mark.usefixtures("written")
@pytest.mark.parametrize("forge", ["body", "signature", "another_s"])
def test_a_forged_tally_in_redis_is_detected(cluster: LocalCluster, forge: str) -> None:
    at_head(cluster, ELECTION)
    shown = board(cluster).latest(ELECTION, OBSERVERS)
    original = shown["observer-1"]
    assert original is not None
    body, signature = original.body, original.signature
    if forge == "body":  # one more vote for alice, under the observer's real signature
        snapshot = Snapshot.decode(body)
        counts = {**snapshot.tally["counts"], "alice": snapshot.tally["counts"]["alice"] + 1}
        body = dataclasses.replace(snapshot, tally={**snapshot.tally, "counts": counts}).body()
    elif forge == "signature":
        signature = secrets.token_bytes(64)
    else:  # observer-2's own signed tally in observer-1's keys: a reader takes the keys' observer
        other = shown["observer-2"]
        assert other is not None
        body, signature = other.body, other.signature
    with in_place_of(cluster, original, original.height, body, signature):
        done = cluster.cli("tally", ELECTION, *cli_common(cluster), check=False)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "BAD [bad_signature]" in done.stdout
    assert cluster.cli("tally", ELECTION, *cli_common(cluster), check=False).returncode == 0


@pytest.mark.usefixtures("written")
def test_observers_signing_different_tallies_at_one_height_raise_a_mismatch_alert(cluster: LocalCluster) -> None:
    at_head(cluster, ELECTION)
    original = board(cluster).latest(ELECTION, OBSERVERS)["observer-2"]
    assert original is not None
    snapshot = Snapshot.decode(original.body)
    counts = {**snapshot.tally["counts"], "bob": snapshot.tally["counts"]["bob"] - 1}
    lying = dataclasses.replace(snapshot, tally={**snapshot.tally, "counts": counts})
    key = load_signing_key(signing_key_paths(cluster.directory / "keys", "observer-2")[0])
    with in_place_of(cluster, original, lying.height, lying.body(), key.sign(lying.body())):
        done = cluster.cli("tally", ELECTION, *cli_common(cluster), "--json", check=False)
        assert done.returncode == 1
        report = json.loads(done.stdout)
        # Two observers that disagree: nobody can say which is right, so both are named.
        assert report["verdict"]["status"] == "mismatch" and report["verdict"]["differing"] == list(OBSERVERS)
        alerts = ReplicationLedger(connect(cluster.cluster_redis_url)).alerts(10)
        assert any(a["what"] == "tally_mismatch" and a["id"] == report["alert"] for a in alerts)


@pytest.mark.usefixtures("written")
def test_vote_check_finds_a_voters_records_on_a_verified_chain(cluster: LocalCluster, election: Election) -> None:
    changer = election.phases[2][0].content.payload["electronic_id"]
    key = ["--key", str(cluster.directory / "keys" / "admin.key_secret")]
    size = cluster.admin().call("size", {"ledger": ELECTION})["size"]
    by_proof = ["vote", "check", ELECTION, "--electronic-id", changer, "--quorum", "1", *cli_common(cluster), *key]
    # The voter's records are proven in the latest checkpoint a witness cosigned: wait for the
    # one that covers the whole (quiet) election.

    def whole() -> dict[str, Any] | None:
        report: dict[str, Any] = json.loads(cluster.cli(*by_proof, "--json").stdout)
        return report if report["ledgers"][0]["checkpoint"]["size"] == size else None

    report = wait_until(whole, 20, "a cosigned checkpoint of the whole election")
    assert report["node"] == "replica-1" and report["verified"] is True  # the first replica by default
    [found] = report["ledgers"]
    kinds = [r["kind"] for r in found["records"]]
    assert kinds in (["register", "cast", "uncast", "cast"], ["register", "cast", "withdraw"])
    heights = [r["height"] for r in found["records"]]
    assert heights == sorted(heights) and all(len(r["hash"]) == 64 for r in found["records"])
    assert {r["author"] for r in found["records"]} == {"writer1"}  # who wrote each, for the voter to see
    assert found["head"]["height"] == size - 1 and len(found["checkpoint"]["witnesses"]) >= 1

    full = ["vote", "check", "--full", "--electronic-id", changer, "--node", "observer-1"]
    text = cluster.cli(*full, *cli_common(cluster), *key)
    assert "chain verified" in text.stdout and f"{ELECTION} on observer-1" in text.stdout
    assert cluster.cli(*by_proof).stdout.count("proven in the checkpoint of") == 1

    unknown = cluster.cli(
        "vote", "check", ELECTION, "--electronic-id", "E-0123456789abcdef", *cli_common(cluster), *key, check=False
    )
    assert unknown.returncode == 1 and "not_found" in unknown.stderr and unknown.stdout == ""


@pytest.mark.usefixtures("written")
def test_observers_report_what_they_hold_but_never_count_towards_a_write_concern(cluster: LocalCluster) -> None:
    writer = cluster.client("writer1")
    voter = entry(ELECTION, "register", {"voter_id": "late-voter"}, "writer1")
    receipt = writer.call("put", {"content": voter.content_bytes, "nonce": voter.nonce, "w": 1})
    assert receipt["replicas"] == ["replica-1"]
    held = ReplicationLedger(connect(cluster.cluster_redis_url))
    wait_until(
        lambda: all(held.held(ELECTION).get(name, -1) >= receipt["height"] for name in OBSERVERS),
        10,
        "the observers' held heights",
    )
    second = entry(ELECTION, "register", {"voter_id": "later-voter"}, "writer1")
    error = remote_error(writer.call, "put", {"content": second.content_bytes, "nonce": second.nonce, "w": 2})
    assert error.code == "bad_request" and "only 1 witnesses count for w" in error.message, error  # not written


@pytest.mark.usefixtures("written")
def test_vledger_tally_names_an_observer_stuck_behind_the_ledger_s_signed_checkpoint(cluster: LocalCluster) -> None:
    at_head(cluster, ELECTION)
    assert cluster.stop_node("observer-2") == 0
    try:
        writer = cluster.client("writer1")
        for number in range(3):
            writer.put(entry(ELECTION, "register", {"voter_id": f"after-observer-2-{number}"}, "writer1"))
        size = cluster.admin().call("size", {"ledger": ELECTION})["size"]

        def stale() -> dict[str, Any] | None:
            done = cluster.cli("tally", ELECTION, *cli_common(cluster), "--json", "--stale-after", "0", check=False)
            report: dict[str, Any] = json.loads(done.stdout)
            # observer-1 at the head, the home's signed checkpoint in Redis covering it
            caught_up = report["head"]["size"] == size and report["compared"]
            # observer-1 too until it has published the head (--stale-after 0): wait for it, not observer-2
            return {"exit": done.returncode, **report} if caught_up and report["stale"] == ["observer-2"] else None

        report = wait_until(stale, 20, "a checkpoint past observer-2's tally")
        # The two still agree at the height observer-2 stopped at: without the head, that read "agree", exit 0.
        assert report["verdict"]["status"] == "agree" and report["verdict"]["height"] < size - 1
        assert report["exit"] == 4 and report["stale"] == ["observer-2"] and report["ok"] is False
        assert report["head"]["signer"] == "ingest-1" and report["head"]["problem"] is None
        assert [o["stale"] for o in report["observers"]] == [False, True]
        text = cluster.cli("tally", ELECTION, *cli_common(cluster), "--stale-after", "0", check=False)
        assert text.returncode == 4 and "STALE: observer-2" in text.stdout
    finally:
        cluster.start_node("observer-2")
    at_head(cluster, ELECTION)
    assert cluster.cli("tally", ELECTION, *cli_common(cluster), "--stale-after", "0").returncode == 0
