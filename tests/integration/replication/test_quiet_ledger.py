"""A quiet ledger's freshness on real processes (outsider o4 F2): witnesses cosigned only as the
ledger grew, so an old head could not be told from a live one.

A cluster whose witnesses cosign a quiet ledger's checkpoint again every 2 s
(``recosign_interval_ms``, PROTOCOL 10.7): each witness's note in Redis keeps its first line and
its newest; the head's ``fresh_ms`` moves on while ``since_ms`` stays, so an observer stuck behind
stays STALE across every re-cosigning; the gateway's event stream announces each re-cosigning
(a page or a script following it hears the head is still vouched for), and a vledger.client with
the cluster's anchors (which state its 2 s interval) takes the head; once every witness stops (a
frozen view), the gateway's verdict, ``vledger tally`` and the client call the head STALE. Every
time is read from signature lines this test verifies itself, with the keys of the cluster's key
directory.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.request
from typing import Any

import pytest

from vledger.broker.redis_server import connect
from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import load_signing_key, load_verify_key, signing_key_paths
from vledger.broker.tallies import TallyBoard
from vledger.client import Client
from vledger.client.http import GatewayConnection
from vledger.config.cluster import ReplicationSettings, load_cluster
from vledger.node.cosigning import GatheredCheckpoint, gather, needed_witnesses, quorum_since_ms, recosign_due_ms
from vledger.node.errors import StaleCheckpointError
from vledger.node.ledger import LedgerRules
from vledger.node.note import Cosignature, parse_note
from vledger.node.record import Entry
from vledger.node.witness import home_key, witness_key, witness_name
from vledger.tests.integration.cluster import ADMIN, LIMITS, LocalCluster, entry, now_ms, wait_until
from vledger.tools.tally_command import tally_report
from vledger.verifier.tally import Snapshot

LEDGER = "votes"
CLUSTER = "test"  # LocalCluster's [cluster] name
RECOSIGN_MS = 2000
WITNESSES = ["replica-1", "replica-2", "observer-1"]
WAIT = 40.0


def _public(cluster: LocalCluster, name: str) -> bytes:
    return load_verify_key(signing_key_paths(cluster.directory / "keys", name)[1]).raw


def head(cluster: LocalCluster) -> GatheredCheckpoint:
    """The largest checkpoint among the witnesses' notes in Redis, every line verified here."""
    notes = list(ReplicationLedger(connect(cluster.cluster_redis_url)).cosignatures(LEDGER).values())
    keys = [witness_key(witness_name(CLUSTER, w), _public(cluster, w)) for w in WITNESSES]
    log_key = home_key(CLUSTER, LEDGER, _public(cluster, "ingest-1"))
    found = gather(notes, log_key, log_key.name, keys)
    assert found, notes
    return found[0]


def own_lines(cluster: LocalCluster) -> dict[str, tuple[int, list[int]]]:
    """Each witness's note in Redis: its size, and the times (s) of its own lines, in note order."""
    notes = ReplicationLedger(connect(cluster.cluster_redis_url)).cosignatures(LEDGER)
    found = {}
    for name, note in notes.items():
        parsed = parse_note(note)
        times = [
            Cosignature.from_note_signature(s).timestamp
            for s in parsed.signatures
            if s.name == witness_name(CLUSTER, name)
        ]
        found[name] = (int(parsed.text.split("\n")[1]), times)
    return found


def _json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


def test_a_quiet_ledger_is_cosigned_again_an_observer_behind_stays_stale_and_a_frozen_view_turns_stale(
    start_cluster: Any,
) -> None:
    cluster: LocalCluster = start_cluster(
        nodes=1, replicas=2, observers=1, gateways=["replica-1"], replication={"recosign_interval_ms": RECOSIGN_MS}
    )
    rules = cluster.pinned(LEDGER, LedgerRules(("vote",), 0, {}))  # the gateway serves pinned ledgers only
    cluster.admin().create_ledger(Entry.prepare(rules.genesis_content(LEDGER, ADMIN, "g", now_ms()), 0, LIMITS))
    cluster.client("writer1").put_many([entry(LEDGER, "vote", {"n": n}, "writer1") for n in range(5)])
    size = int(cluster.admin().call("size", {"ledger": LEDGER})["size"])

    # Every witness cosigns the head; then, nothing written, again at least 2 s later, keeping its first line.
    def cosigned_at_head() -> dict[str, int] | None:
        lines = own_lines(cluster)
        done = all(w in lines and lines[w][0] == size for w in WITNESSES)
        return {w: lines[w][1][0] for w in WITNESSES} if done else None

    first: dict[str, int] = wait_until(cosigned_at_head, WAIT, f"every witness's cosignature at size {size}")

    def again() -> bool:
        lines = own_lines(cluster)
        return all(
            lines[w][0] == size and len(lines[w][1]) == 2 and lines[w][1][0] == first[w] and lines[w][1][1] > first[w]
            for w in WITNESSES
        )

    wait_until(again, WAIT, "every witness's cosignature of the quiet ledger again, its first line kept")

    # The gateway announces a re-cosigning (the same size and cosigners, a newer fresh_ms): before,
    # only a larger checkpoint or other cosigners made an event, so a follower heard nothing.
    gateway = cluster.gateway_url("replica-1")
    shown = _json(f"{gateway}api/ledgers/{LEDGER}/checkpoint")
    events = GatewayConnection(gateway).open_events(WAIT)
    deadline = time.monotonic() + WAIT
    while True:
        assert time.monotonic() < deadline, "no checkpoint event of the quiet ledger cosigned again"
        kind, data = next(events)
        if kind == "checkpoint" and data["ledger"] == LEDGER and data["fresh_ms"] > shown["fresh_ms"]:
            assert data["size"] == size and data["since_ms"] == shown["since_ms"], data
            break

    # A script holding the cluster's anchors judges the head by the interval they state.
    anchors = cluster.cli("anchors", "--config", str(cluster.config_path)).stdout
    assert f"\nrecosign_interval_ms {RECOSIGN_MS}\n" in anchors, anchors
    (cluster.directory / "anchors.txt").write_text(anchors)
    reader = Client.http(gateway, anchors=cluster.directory / "anchors.txt", quorum=2)
    assert reader.recosign_ms == RECOSIGN_MS and reader.checkpoint(LEDGER).checkpoint.size == size
    since = quorum_since_ms((t * 1000 for t in first.values()), needed_witnesses(len(WITNESSES)))
    found = head(cluster)
    assert found.checkpoint.size == size and found.since_ms == since
    assert (
        found.fresh_ms is not None
        and since is not None
        and found.fresh_ms >= since + recosign_due_ms(RECOSIGN_MS, ReplicationSettings().heartbeat_ms)
    )

    # Observer-1 stopped behind: its key re-signs the old count with a fresh date (a stuck observer
    # re-signing, or a thief). Its date is its word; the witnesses' first times are not, and the
    # re-cosignings never move them: STALE at every look, across several re-cosignings.
    assert cluster.stop_node("observer-1") == 0
    config = load_cluster(cluster.config_path)
    client = connect(cluster.cluster_redis_url)
    tallies = TallyBoard(client)
    latest = tallies.latest(LEDGER, ["observer-1"])["observer-1"]
    assert latest is not None
    key = load_signing_key(signing_key_paths(cluster.directory / "keys", "observer-1")[0])
    vouched = found.fresh_ms
    rounds = 0
    deadline = time.monotonic() + 4 * RECOSIGN_MS / 1000 + WAIT
    while rounds < 3:
        assert time.monotonic() < deadline, f"{rounds} re-cosignings seen"
        stuck = dataclasses.replace(Snapshot.decode(latest.body), height=size - 3, at_ms=now_ms())
        tallies.publish(LEDGER, "observer-1", stuck.height, stuck.body(), key.sign(stuck.body()))
        report = tally_report(config, LEDGER, client, stale_after_ms=1000)
        assert report.head is not None and report.head.size == size and report.head.since_ms == since, report.head
        assert report.stale == ("observer-1",), report
        if report.head.fresh_ms is not None and report.head.fresh_ms > vouched:
            rounds, vouched = rounds + 1, report.head.fresh_ms
        time.sleep(0.2)  # a look every 0.2 s: the test's pace, no race waited out

    # The live gateway serves both times; stopping every witness freezes the view, which ages
    # past the interval and the 10 s grace: the gateway's verdict, the command and the client say STALE.
    shown = _json(f"{gateway}api/ledgers/{LEDGER}/checkpoint")
    assert shown["since_ms"] == since and shown["fresh_ms"] > since and shown["recosign_interval_ms"] == RECOSIGN_MS
    assert _json(f"{gateway}api/ledgers/{LEDGER}/tally")["verdict"]["head_stale"] is False
    for name in ("replica-1", "replica-2"):
        assert cluster.stop_node(name) == 0
    verdict = wait_until(
        lambda: (v := _json(f"{gateway}api/ledgers/{LEDGER}/tally")["verdict"])["head_stale"] and v,
        WAIT,
        "the frozen view's head STALE in the gateway's verdict",
    )
    assert verdict["status"] == "stale" and verdict["fresh_ms"] <= now_ms() - RECOSIGN_MS - 10_000, verdict
    done = cluster.cli("tally", LEDGER, "--config", str(cluster.config_path), "--json", check=False)
    report_json = json.loads(done.stdout)
    assert done.returncode == 4 and report_json["head_stale"] is True, done.stdout + done.stderr
    assert report_json["head"]["since_ms"] == since
    with pytest.raises(StaleCheckpointError, match=f"checkpoint of {size} records"):
        reader.checkpoint(LEDGER)
    reader.close()
