"""The verifier's head comparison and sweep ends, with made-up nodes and a clock it does not own."""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.replication import OPEN_ALERTS_CAP, Alert, ReplicationLedger, StreamRecord
from vledger.config.cluster import VerifierSettings, cluster_from_mapping
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.node import tree
from vledger.node.epoch import EPOCH_KIND, epoch_payload
from vledger.node.errors import NodeUnavailableError
from vledger.node.ledger import LedgerRules
from vledger.node.note import ALG_COSIGNATURE_V1, ALG_ED25519, Checkpoint, Note, SignerKey, cosign, sign
from vledger.node.record import Content, Entry, decode_record
from vledger.node.store import ChainStore
from vledger.verifier.checks import (
    LIST_LEDGERS_SECONDS,
    MAX_UNLISTED_LEDGERS,
    PUT_BACK_CAP,
    SCAN_STREAMS_SECONDS,
    UNLISTED_GRACE_SECONDS,
    ClusterChecks,
)

LEDGER = "votes"
LAG_MS = 30_000


class FakeNode:
    """A node's head and hashes by height, as the verifier's reader would get them."""

    def __init__(self, name: str, hashes: list[bytes]) -> None:
        self.name = name
        self.hashes = hashes
        self.page_size = 500
        self.lists = True  # whether its ledger.list names the ledger it holds
        self.extra: list[str] = []  # more ledgers its ledger.list names
        self.asked: collections.Counter[str] = collections.Counter()  # ledger -> head asked
        self.listed = 0  # how often ledger.list was asked
        self.serving = True  # False: it answers the ledger's reads not_home (a replaced home)

    def up(self) -> bool:
        return True

    def down(self, seconds: float, error: Exception) -> None:
        raise AssertionError(f"{self.name} taken down: {error}")

    def head(self, ledger: str) -> tuple[int, bytes] | None:
        self.asked[ledger] += 1
        return (len(self.hashes) - 1, self.hashes[-1]) if self.hashes else None

    def hash_at(self, ledger: str, height: int) -> bytes | None:
        return self.hashes[height] if height < len(self.hashes) else None

    def ledgers(self) -> list[str]:
        self.listed += 1
        return ([LEDGER] if self.hashes and self.lists else []) + self.extra

    def page(self, ledger: str, start: int, limit: int) -> list[bytes]:
        return []  # hashes only, no record bytes: no genesis, so no checkpoint to hold a copy's tree against

    def span(self, ledger: str, start: int, count: int) -> list[bytes]:
        return []

    def serves(self, ledger: str) -> bool:
        return self.serving


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _two_nodes(tmp_path: Path) -> Any:
    """ingest-1, the home of every ledger, and a replica."""
    return cluster_from_mapping(
        {
            "cluster": {"default_home": "ingest-1"},
            "nodes": {
                "ingest-1": {"role": "ingest", "port": 7001, "pub_port": 7101},
                "replica-1": {"role": "replica", "port": 7011},
            },
        },
        tmp_path / "cluster.toml",
    )


@pytest.fixture
def checks(redis_client: Any, tmp_path: Path) -> tuple[ClusterChecks, dict[str, FakeNode], Clock]:
    config = _two_nodes(tmp_path)
    chain = [bytes([i]) * 32 for i in range(11)]
    nodes = {"ingest-1": FakeNode("ingest-1", chain), "replica-1": FakeNode("replica-1", chain[:6])}
    clock = Clock()
    repl = ReplicationLedger(redis_client)
    repl.client.hset(repl.ledgers_key, LEDGER, "ingest-1")
    settings = VerifierSettings(lag_alert_ms=LAG_MS)
    found = ClusterChecks("verifier-1", config, repl, nodes, settings=settings, clock=clock)  # type: ignore[arg-type]
    found.start()
    return found, nodes, clock


HOME_KEY = SignerKey(f"test/{LEDGER}", ALG_ED25519, bytes(range(32)))  # the checkpoint key the genesis pins
STANDBY_KEY = SignerKey(f"test/{LEDGER}", ALG_ED25519, bytes(range(1, 33)))  # the standby's, pinned beside it
WITNESS = SignerKey("test/witness/replica-1", ALG_COSIGNATURE_V1, bytes(range(2, 34)))


def _genesis(path: Path) -> bytes:
    """A genesis of LEDGER placed by ingest-1 that pins HOME_KEY and STANDBY_KEY (10.9)."""
    pinned = {"checkpoint_key": HOME_KEY.verifier().encode(), "standby_key": STANDBY_KEY.verifier().encode()}
    store = ChainStore(path / "genesis", origin="ingest-1")
    try:
        rules = LedgerRules(kinds=("vote", "epoch"), difficulty=0, rules=pinned)
        store.create_ledger(Entry.prepare(rules.genesis_content(LEDGER, "admin", "g", 1), 0, PROTOCOL_LIMITS))
        genesis = store.get(LEDGER, 0)
        assert genesis is not None
        return genesis.encode()
    finally:
        store.close()


def _epoch_2_note(size: int) -> bytes:
    """ingest-2's checkpoint of epoch 2 (any root: nothing here holds the tree), cosigned by WITNESS."""
    text = Checkpoint(f"test/{LEDGER}", size, bytes(32), ("vledger-epoch 2 ingest-2",)).body()
    return Note(text, (sign(text, STANDBY_KEY), cosign(text, WITNESS, 1_790_000_000).note_signature())).encode()


def open_kinds(checks: ClusterChecks) -> set[str]:
    return {key.rsplit("|", 1)[1] for key in checks.replication.open_alerts()}


def test_a_copy_behind_is_lagging_only_after_lag_alert_ms_and_resolves_once_caught_up(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    found, nodes, clock = checks
    found.compare_heads()
    clock.now += LAG_MS / 1000 - 1
    found.compare_heads()
    assert open_kinds(found) == set()  # behind, but not for long: transient lag raises nothing
    clock.now += 2
    found.compare_heads()
    assert open_kinds(found) == {"lagging"}
    (alert,) = found.replication.alerts()
    assert (alert["node"], alert["ledger"], alert["height"]) == ("replica-1", LEDGER, "6")
    nodes["replica-1"].hashes = list(nodes["ingest-1"].hashes)
    found.compare_heads()
    assert open_kinds(found) == set()


def test_a_copy_cut_short_on_a_quiet_ledger_is_lagging_only_once_behind_for_lag_alert_ms(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    """Outsider o23 LOW 2: a copy cut 0.4 s before was reported lagging at once, "which ingest-1
    has held for 128 s": the record's age, not how long the copy had been behind."""
    found, nodes, clock = checks
    home, copy = nodes["ingest-1"], nodes["replica-1"]
    copy.hashes = list(home.hashes)
    found.compare_heads()
    clock.now += 128  # a quiet ledger: nothing new, the copy holds every record
    found.compare_heads()
    copy.hashes = home.hashes[:8]  # its last 3 records lost
    clock.now += 0.4
    found.compare_heads()
    assert open_kinds(found) == set()  # behind for 0.4 s, not 128
    clock.now += LAG_MS / 1000 - 1
    found.compare_heads()
    assert open_kinds(found) == set()
    clock.now += 2
    found.compare_heads()
    (alert,) = found.replication.alerts()
    assert (alert["what"], alert["height"], alert["found"]) == ("lagging", "8", "7")
    assert alert["detail"] == f"it lacks height 8, which ingest-1 holds: behind it for {LAG_MS / 1000 + 1:.0f} s"
    copy.hashes = list(home.hashes)
    found.compare_heads()
    assert open_kinds(found) == set()


def test_a_copy_cut_further_while_behind_counts_its_lag_from_the_cut(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    found, nodes, clock = checks
    found.compare_heads()  # replica-1 at 5 of the home's 10
    clock.now += LAG_MS / 1000 - 5
    found.compare_heads()
    nodes["replica-1"].hashes = nodes["replica-1"].hashes[:3]  # cut: it lacks height 3 since now
    clock.now += 10  # behind the home for 35 s, but lacking height 3 for only 10
    found.compare_heads()
    assert open_kinds(found) == set()
    clock.now += LAG_MS / 1000
    found.compare_heads()
    (alert,) = found.replication.alerts()
    assert alert["height"] == "3" and alert["detail"].endswith(f"behind it for {LAG_MS / 1000:.0f} s")


def test_a_head_that_differs_from_the_homes_record_at_its_height_is_a_fork(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    found, nodes, _ = checks
    nodes["replica-1"].hashes[-1] = b"\xff" * 32
    found.compare_heads()
    assert open_kinds(found) == {"fork"}
    (alert,) = found.replication.alerts()
    assert alert["height"] == "5" and alert["found"] == (b"\xff" * 32).hex()


def test_a_sweep_that_ends_below_what_the_node_itself_answered_holding_is_truncated(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    found, nodes, _ = checks
    replica = nodes["replica-1"]
    copy = found.ledgers[LEDGER].copies["replica-1"]
    found.compare_heads()  # it answers head 5
    found._sweep_complete(LEDGER, "replica-1", 5, found._held_before(LEDGER, "replica-1", copy), replica)  # type: ignore[arg-type]
    assert open_kinds(found) == set()
    replica.hashes = replica.hashes[:3]  # cut short behind its back: it now answers head 2
    found._sweep_complete(LEDGER, "replica-1", 2, found._held_before(LEDGER, "replica-1", copy), replica)  # type: ignore[arg-type]
    assert open_kinds(found) == {"truncated"}
    (alert,) = found.replication.alerts()
    assert (alert["node"], alert["height"], alert["expected"], alert["found"]) == ("replica-1", "3", "5", "2")


def test_a_sweep_cut_short_by_a_home_just_replaced_is_no_truncation(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    """outsider 20, F13: promoted away, the old home answers the ledger's reads not_home at once
    (taken for holding none: the sweep ends at -1), a moment before the verifier learns the new
    epoch; `truncated` was raised against a copy that still held every record."""
    found, nodes, _ = checks
    home = nodes["ingest-1"]
    copy = found.ledgers[LEDGER].copies["ingest-1"]
    found.compare_heads()  # it answers head 10
    held = found._held_before(LEDGER, "ingest-1", copy)
    home.serving = False
    found._sweep_complete(LEDGER, "ingest-1", -1, held, home)  # type: ignore[arg-type]
    assert open_kinds(found) == set()
    home.serving = True  # the same short end from a node that serves the ledger is one
    found._sweep_complete(LEDGER, "ingest-1", -1, held, home)  # type: ignore[arg-type]
    assert open_kinds(found) == {"truncated"}


def test_a_held_height_only_redis_claims_accuses_no_node(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock], caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 3: a node's Redis user sets its own vledger:{L}:held:<node>, and may claim what it
    does not hold (and the admin's user writes any). A height the node itself denies, a name no
    configuration knows and a value that is no height raise nothing and break nothing; a
    truncated alert raised on such a claim alone (by an earlier verifier) resolves."""
    found, nodes, _ = checks
    repl = found.replication
    repl.client.mset(
        {
            repl.held_key(LEDGER, node): v
            for node, v in (("replica-1", "99999"), ("evil", "99999"), ("ingest-1", "junk"))
        }
    )
    found.raise_alert(Alert("replica-1", LEDGER, 6, "truncated", "the copy ends at 5, but it held up to 99999"))
    copy = found.ledgers[LEDGER].copies["replica-1"]
    found.compare_heads()
    found._sweep_complete(LEDGER, "replica-1", 5, found._held_before(LEDGER, "replica-1", copy), nodes["replica-1"])  # type: ignore[arg-type]
    assert open_kinds(found) == set()
    assert "Redis says replica-1 holds votes up to 99999, but the node answers that it ends at 5" in caplog.text
    assert repl.held(LEDGER) == {"replica-1": 99999, "evil": 99999}


def test_a_copy_that_stops_answering_is_lagging_whatever_redis_claims_it_holds(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    found, nodes, clock = checks
    found.compare_heads()  # replica-1 answers head 5
    nodes["replica-1"] = StoppedNode("replica-1", nodes["replica-1"].hashes)
    repl = found.replication
    repl.client.set(repl.held_key(LEDGER, "replica-1"), "99999")  # would hide its lag if believed
    clock.now += LAG_MS / 1000 + 1
    found.compare_heads()
    assert open_kinds(found) == {"lagging"}
    (alert,) = repl.alerts()
    assert (alert["height"], alert["found"]) == ("6", "5")
    assert alert["detail"].startswith("it does not answer, and last answered lacking height 6")


def test_a_copy_that_never_answered_is_lagging_without_a_height_made_up_for_it(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    # outsider o11: "it has not answered, and lacks height 0, which ingest-1 has held for 31 s"
    # of a node that had never answered: no height of it was known, and the home held 10.
    found, nodes, clock = checks
    nodes["replica-1"] = StoppedNode("replica-1", nodes["replica-1"].hashes)
    found.compare_heads()
    clock.now += LAG_MS / 1000 + 1
    found.compare_heads()
    (alert,) = found.replication.alerts()
    assert (alert["what"], alert["height"], alert["expected"], alert["found"]) == ("lagging", "0", "10", "")
    assert alert["detail"] == (
        "it does not answer, and has not said it holds any record of it since this verifier started: what it "
        f"holds is unknown; ingest-1 has held height 10 for {LAG_MS / 1000 + 1:.0f} s"
    )


def test_a_copy_that_trails_a_busy_home_by_a_second_is_never_lagging(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    """13 records a second, the copy a second behind: never caught up, yet behind no record for long."""
    found, nodes, clock = checks
    home, copy = nodes["ingest-1"], nodes["replica-1"]
    chain = [bytes([i % 256, i // 256]) * 16 for i in range(13 * 200)]
    home.hashes, copy.hashes = chain[:13], chain[:1]
    for _ in range(3 * LAG_MS // 1000):
        found.compare_heads()
        clock.now += 1
        copy.hashes = chain[: len(home.hashes)]  # what the home held a second ago
        home.hashes = chain[: len(home.hashes) + 13]
    assert open_kinds(found) == set()
    copy.hashes = copy.hashes[:]  # now it stops: the record above it gets older than lag_alert_ms
    stuck = len(copy.hashes)
    for _ in range(LAG_MS // 1000 + 2):
        found.compare_heads()
        clock.now += 1
        home.hashes = chain[: len(home.hashes) + 13]
    assert open_kinds(found) == {"lagging"}
    (alert,) = found.replication.alerts()
    assert (alert["node"], alert["height"]) == ("replica-1", str(stuck))


def test_a_fork_is_named_at_the_first_height_that_differs_not_at_the_head(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    found, nodes, _ = checks
    nodes["replica-1"].hashes[3:] = [b"\xee" * 32] * 3  # a tail rewritten from height 3
    found.compare_heads()
    (alert,) = found.replication.alerts()
    assert (alert["what"], alert["height"], alert["found"]) == ("fork", "3", (b"\xee" * 32).hex())
    assert alert["expected"] == nodes["ingest-1"].hashes[3].hex()


def test_a_sweep_finding_is_searched_back_to_the_record_rewritten_below_it(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    """A record rewritten whole at 3 (fresh link) breaks the link of 4: the sweep finds 4, 3 is named."""
    found, nodes, _ = checks
    replica = nodes["replica-1"]
    assert found._first_difference(LEDGER, "replica-1", replica, 3, differs=False) == 4  # type: ignore[arg-type]
    replica.hashes[3] = b"\xee" * 32
    assert found._first_difference(LEDGER, "replica-1", replica, 3, differs=False) == 3  # type: ignore[arg-type]
    replica.hashes[1] = b"\xdd" * 32  # and everything from 1 on (a linked copy differs from there up)
    replica.hashes[2] = b"\xdd" * 32
    assert found._first_difference(LEDGER, "replica-1", replica, 3, differs=False) == 1  # type: ignore[arg-type]


class StoppedNode(FakeNode):
    """A node that does not answer."""

    def up(self) -> bool:
        return False


def _with_standby(tmp_path: Path, ledger: str) -> Any:
    """ingest-1 the default home, ingest-2 the standby of ``ledger`` only, and a replica."""
    return cluster_from_mapping(
        {
            "cluster": {"default_home": "ingest-1"},
            "nodes": {
                "ingest-1": {"role": "ingest", "port": 7001, "pub_port": 7101},
                "ingest-2": {"role": "ingest", "port": 7002, "pub_port": 7102},
                "replica-1": {"role": "replica", "port": 7011},
            },
            "ledgers": {ledger: {"home": "ingest-1", "standby": "ingest-2"}},
        },
        tmp_path / "cluster.toml",
    )


def test_after_a_handover_the_replaced_home_is_no_copy_and_its_lag_alert_closes(
    redis_client: Any, tmp_path: Path
) -> None:
    """PROTOCOL 10.9: ingest-1 stopped, its standby ingest-2 promoted and writing on. The old
    home's copy is no longer the ledger's (it answers reads not_home): the verifier neither
    holds it lagging ("it does not answer") nor keeps the alert it raised before open, while
    a replica behind the new home still is."""
    config = _with_standby(tmp_path, LEDGER)
    chain = [bytes([i]) * 32 for i in range(16)]
    nodes: dict[str, FakeNode] = {
        "ingest-1": StoppedNode("ingest-1", chain[:11]),
        "ingest-2": FakeNode("ingest-2", chain[:11]),
        "replica-1": FakeNode("replica-1", chain[:11]),
    }
    clock = Clock()
    repl = ReplicationLedger(redis_client)
    repl.client.hset(repl.ledgers_key, LEDGER, "ingest-1")
    repl.add([StreamRecord(LEDGER, 0, _genesis(tmp_path), "ingest-1")])  # pins the home's and the standby's keys
    repl.advance("ingest-1", LEDGER, 10)
    settings = VerifierSettings(lag_alert_ms=LAG_MS)
    witnesses = lambda: (WITNESS.verifier(),)  # noqa: E731
    found = ClusterChecks("verifier-1", config, repl, nodes, settings=settings, clock=clock, witness_keys=witnesses)  # type: ignore[arg-type]
    found.start()
    assert set(found.ledgers[LEDGER].copies) == {"ingest-1", "ingest-2", "replica-1"}
    # Raised while the old home was away (by this verifier before it knew of the handover).
    found.raise_alert(Alert("ingest-1", LEDGER, 11, "lagging", "it does not answer and reported lacking height 11"))
    assert repl.promote(LEDGER, 2, "ingest-2") is None
    nodes["ingest-2"].hashes = list(chain)  # the new home writes on
    found.refresh_ledgers()
    assert found.ledgers[LEDGER].home == "ingest-1"  # Redis's word alone: no signed note proves epoch 2 yet
    # The new home's checkpoint of epoch 2, signed by the standby's pinned key, cosigned by a witness.
    repl.publish_cosignature(LEDGER, "replica-1", 16, _epoch_2_note(16))
    found.refresh_ledgers()
    assert found.ledgers[LEDGER].home == "ingest-2"
    assert set(found.ledgers[LEDGER].copies) == {"ingest-2", "replica-1"}
    assert open_kinds(found) == set()
    found.compare_heads()
    clock.now += LAG_MS / 1000 + 1
    found.compare_heads()
    assert set(repl.open_alerts()) == {f"replica-1|{LEDGER}|lagging"}  # the replica is behind ingest-2
    # A verifier started after the handover never takes the old home as a copy.
    again = ClusterChecks("verifier-2", config, repl, nodes, settings=settings, clock=clock, witness_keys=witnesses)  # type: ignore[arg-type]
    again.start()
    assert set(again.ledgers[LEDGER].copies) == {"ingest-2", "replica-1"}


def test_a_standbys_own_store_contradicts_checkpoint_is_its_to_resolve_until_it_is_promoted(
    redis_client: Any, tmp_path: Path
) -> None:
    """Review 11 I: a standby's follower resolves its own store_contradicts_checkpoint about its
    copy once the home vouches for it (ingest/standby.py, as a replica's), but the verifier
    exempted only replicas and observers and put it back, as if someone had hidden a home's
    self-accusation. Its own about a ledger it is not the standby of, or once promoted (then it
    is that ledger's home), stays the operator's."""
    config = _with_standby(tmp_path, LEDGER)
    chain = [bytes([i]) * 32 for i in range(16)]
    nodes = {name: FakeNode(name, chain[:11]) for name in ("ingest-1", "ingest-2", "replica-1")}
    repl = ReplicationLedger(redis_client)
    repl.client.hset(repl.ledgers_key, LEDGER, "ingest-1")
    repl.add([StreamRecord(LEDGER, 0, _genesis(tmp_path), "ingest-1")])  # pins the home's and the standby's keys
    witnesses = lambda: (WITNESS.verifier(),)  # noqa: E731
    found = ClusterChecks("verifier-1", config, repl, nodes, clock=Clock(), witness_keys=witnesses)  # type: ignore[arg-type]
    found.start()
    standby = ReplicationLedger(redis_client, node="ingest-2")
    own = Alert("ingest-2", LEDGER, 7, "store_contradicts_checkpoint", "its copy", source="ingest-2")
    not_its = Alert("ingest-2", "zakat", 2, "store_contradicts_checkpoint", "its store", source="ingest-2")

    def raised_then_resolved_by_the_standby() -> set[str]:
        standby.alert(own)
        standby.alert(not_its)
        found.refresh_open()
        standby.resolve([own.key, not_its.key])
        found.refresh_open()
        return set(repl.open_alerts())

    assert raised_then_resolved_by_the_standby() == {not_its.key}  # its own copy's: not put back
    assert repl.promote(LEDGER, 2, "ingest-2") is None
    repl.publish_cosignature(LEDGER, "replica-1", 16, _epoch_2_note(16))  # epoch 2 proven: ingest-2 is home
    found.refresh_ledgers()
    assert found.ledgers[LEDGER].home == "ingest-2"
    assert raised_then_resolved_by_the_standby() == {own.key, not_its.key}


def test_an_alert_only_an_operator_resolves_is_opened_again_when_another_user_deletes_it(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    found, _, _ = checks
    repl = found.replication
    evidence = Alert(
        node="replica-1", ledger=LEDGER, what="equivocation", height=3, detail="two roots", source="ingest-1"
    )
    refusal = Alert(node="replica-1", ledger=LEDGER, what="bad_link", height=4, detail="refused", source="ingest-1")
    repl.alert(evidence)
    repl.alert(refusal)
    found.refresh_open()
    raised = repl.open_alerts()[evidence.key]
    repl.resolve([evidence.key, refusal.key])  # HDEL, as any node's Redis user may
    found.refresh_open()
    # The equivocation is back, as it was (its stream id too); a follower's own refusal is its to resolve.
    assert repl.open_alerts() == {evidence.key: raised}
    assert evidence.key in found.open and refusal.key not in found.open
    repl.resolve_as_operator([evidence.key])  # vledger alerts resolve: noted where only the admin writes
    assert repl.operator_resolved([(None, evidence.key)]) == {(None, evidence.key): raised["id"]}
    found.refresh_open()
    assert repl.open_alerts() == {} and found.open == {}
    repl.alert(evidence)  # raised again later: a new alert, which the old resolution does not cover
    found.refresh_open()
    repl.resolve([evidence.key])
    found.refresh_open()
    assert list(repl.open_alerts()) == [evidence.key]


def test_another_raisers_alert_of_a_key_holds_back_none_of_the_verifiers_findings(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    found, nodes, _ = checks
    repl = found.replication
    key = f"replica-1|{LEDGER}|fork"
    # replica-3's Redis user writes its own open hash as it likes: height 0, an id from the future.
    forged = {"id": "9999999999999-0", "height": "0", "node": "replica-1", "ledger": LEDGER, "what": "lag"}
    repl.client.hset(repl.open_alerts_key_of("replica-3"), key, json.dumps(forged))
    found.refresh_open()
    nodes["replica-1"].hashes[-1] = b"\xff" * 32
    found.compare_heads()
    assert found.open == {key: 5}
    shown = repl.open_alerts()[key]
    assert "raised_by" not in shown and (shown["what"], shown["height"]) == ("fork", "5")  # the verifier's own


def test_an_operators_resolution_of_one_raisers_alert_does_not_cover_anothers(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    found, _, _ = checks
    repl = found.replication
    witness = ReplicationLedger(repl.client, node="replica-1")
    evidence = Alert("replica-1", LEDGER, 3, "equivocation", "two roots", source="ingest-1")
    witness.alert(evidence)
    forged = {"id": "9999999999999-0", "height": "0", "node": "replica-1", "ledger": LEDGER, "what": "equivocation"}
    repl.client.hset(repl.open_alerts_key_of("replica-3"), evidence.key, json.dumps(forged))
    found.refresh_open()
    repl.resolve_as_operator([evidence.key])  # both raisers' alerts, each one's id noted for its raiser
    found.refresh_open()
    assert repl.open_alerts() == {}
    witness.alert(evidence)  # the witness raises it again; then its own user deletes it
    found.refresh_open()
    witness.resolve([evidence.key])
    found.refresh_open()
    shown = repl.open_alerts()[evidence.key]  # put back by the verifier: replica-3's note covers nothing of it
    assert shown["what"] == "equivocation" and "raised_by" not in shown


def test_an_open_alert_whose_id_is_no_text_does_not_stop_the_verifier(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    found, _, _ = checks
    repl = found.replication
    key = f"replica-1|{LEDGER}|equivocation"
    theirs = repl.open_alerts_key_of("replica-3")
    repl.client.hset(theirs, key, json.dumps({"id": [1], "what": "equivocation"}))  # any JSON its user writes
    found.refresh_open()
    repl.resolve_as_operator([key])  # noted for replica-3 with no id: its alert had none
    found.refresh_open()
    assert repl.open_alerts() == {}
    repl.client.hset(theirs, key, json.dumps({"id": [1], "what": "equivocation"}))
    found.refresh_open()
    repl.client.hdel(theirs, key)  # deleted by its raiser: put back unless the note covers it
    found.refresh_open()
    assert repl.open_alerts() == {}  # an id that is none is covered by any note of its raiser's


def test_an_alert_put_back_from_another_raisers_hash_holds_back_none_of_the_verifiers_findings(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    found, _, _ = checks
    repl = found.replication
    key = f"ingest-1|{LEDGER}|store_contradicts_checkpoint"
    theirs = repl.open_alerts_key_of("replica-3")
    forged = {"id": "1-0", "height": "0", "what": "store_contradicts_checkpoint", "detail": "said by replica-3"}
    repl.client.hset(theirs, key, json.dumps(forged))
    found.refresh_open()
    repl.client.hdel(theirs, key)  # deleted by its raiser: put back, as replica-3 wrote it and naming it
    found.refresh_open()
    assert repl.open_alerts()[key] == {**forged, "reopened_from": "replica-3"}
    assert found.open == {}
    found.raise_alert(Alert("ingest-1", LEDGER, 4, "store_contradicts_checkpoint", "its tree at size 5 is not"))
    assert found.open == {key: 4} and repl.open_alerts()[key]["height"] == "4"


def test_a_followers_own_store_contradicts_checkpoint_it_resolves_is_not_put_back_but_a_homes_is(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    """outsider 25, H1: a replica resolves its own store_contradicts_checkpoint once its repaired
    copy is vouched for (PROTOCOL 10.5); put back by the verifier, it stayed open for good. A
    home's own, or one a follower raised about another node, is still the operator's."""
    found, _, _ = checks
    repl = found.replication
    replica = ReplicationLedger(repl.client, node="replica-1")
    home = ReplicationLedger(repl.client, node="ingest-1")
    own = Alert("replica-1", LEDGER, 7, "store_contradicts_checkpoint", "its copy", source="replica-1")
    homes = Alert("ingest-1", LEDGER, 9, "store_contradicts_checkpoint", "its store", source="ingest-1")
    about_another = Alert("ingest-1", "zakat", 2, "store_contradicts_checkpoint", "says it", source="ingest-1")
    replica.alert(own)
    replica.alert(about_another)
    home.alert(homes)
    found.refresh_open()
    replica.resolve([own.key, about_another.key])
    home.resolve([homes.key])
    found.refresh_open()
    assert sorted(repl.open_alerts()) == sorted([homes.key, about_another.key])
    assert repl.open_alerts()[about_another.key]["reopened_from"] == "replica-1"


def test_an_operators_alert_hidden_in_an_open_hash_past_the_cap_is_put_back_and_the_hash_named(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    """review r24 F5: a raiser's hash past OPEN_ALERTS_CAP is not read (every reader stalled on
    1M fields); the equivocation it held is not hidden so, but put back by the verifier."""
    found, _, _ = checks
    repl = found.replication
    key = f"replica-1|{LEDGER}|equivocation"
    theirs = repl.open_alerts_key_of("replica-3")
    repl.client.hset(theirs, key, json.dumps({"id": "1-0", "what": "equivocation", "detail": "two roots"}))
    found.refresh_open()
    pipe = repl.client.pipeline(transaction=False)
    for start in range(0, OPEN_ALERTS_CAP, 5000):
        pipe.hset(theirs, mapping={f"x|{i}|lag": "{}" for i in range(start, min(OPEN_ALERTS_CAP, start + 5000))})
    pipe.execute()
    found.refresh_open()
    put_back = repl.open_alerts()[key]
    assert (put_back["reopened_from"], put_back["detail"]) == ("replica-3", "two roots")
    assert "replica-3||alert_keys_damaged" in repl.open_alerts()


def test_an_open_alert_whose_what_is_no_text_does_not_stop_the_verifier(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    found, _, _ = checks
    repl = found.replication
    key = f"replica-1|{LEDGER}|equivocation"
    repl.client.hset(repl.open_alerts_key_of("replica-3"), key, json.dumps({"what": [1]}))
    found.refresh_open()  # the kind is the key's: an equivocation, which the verifier keeps open
    repl.client.hdel(repl.open_alerts_key_of("replica-3"), key)
    found.refresh_open()
    assert repl.open_alerts()[key] == {"what": [1], "reopened_from": "replica-3"}


def test_a_sweep_budget_spent_on_the_first_copies_leaves_the_next_call_to_the_others(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each sweep() starts where the last one's budget ran out: started at the first copy every
    time, a budget spent there left the copies listed last unswept for as long as it was."""
    found, _, clock = checks
    swept: list[str] = []

    def one_step(ledger: str, node: str, copy: Any, reader: Any) -> int:
        swept.append(node)
        clock.now += 1.0  # the whole budget: one copy a call
        return 1

    monkeypatch.setattr(found, "_sweep_copy", one_step)
    for copy in found.ledgers[LEDGER].copies.values():
        copy.next_sweep_at = 0.0
    for _ in range(4):
        found.sweep(budget_seconds=0.5)
    assert sorted(set(swept)) == ["ingest-1", "replica-1"] and swept[0] != swept[1]


@pytest.mark.parametrize("found_by", ["ingest-1", "stream", "verifier"])
def test_a_ledger_deleted_from_redis_s_ledgers_hash_is_checked_anyway_and_alerted(
    redis_client: Any, tmp_path: Path, found_by: str
) -> None:
    """Any ingest node's Redis user may HDEL a ledger from ``{ledgers}``: a verifier started after
    that discovered ledgers from that hash alone, and never checked it (nor alerted on any
    tampering with it). It finds it from a node's ``ledger.list``, the stream key that exists,
    or its own saved state, checks it, and raises ``unlisted_ledger`` against ``redis`` once it
    stays unlisted past a grace; listed again, the alert resolves."""
    config = _two_nodes(tmp_path)
    chain = [bytes([i]) * 32 for i in range(11)]
    nodes = {"ingest-1": FakeNode("ingest-1", chain), "replica-1": FakeNode("replica-1", chain)}
    repl = ReplicationLedger(redis_client, node="verifier-1")
    if found_by == "stream":
        repl.add([StreamRecord(LEDGER, 0, b"r0", "ingest-1")])
    if found_by == "verifier":
        redis_client.hset("vledger:{sweep}:verifier-1", f"replica-1|{LEDGER}", "3:00:1:0")
    if found_by != "ingest-1":
        for node in nodes.values():
            node.lists = False
    redis_client.hdel(repl.ledgers_key, LEDGER)  # whatever the home or the stream's append wrote
    clock = Clock()
    checks = ClusterChecks("verifier-1", config, repl, nodes, clock=clock)  # type: ignore[arg-type]
    checks.start()
    assert LEDGER in checks.ledgers and set(checks.ledgers[LEDGER].copies) == {"ingest-1", "replica-1"}
    assert not [a for a in repl.alerts() if a["what"] == "unlisted_ledger"]  # a new ledger's moment
    clock.now += 11
    checks.refresh_ledgers()
    (alert,) = [a for a in repl.alerts() if a["what"] == "unlisted_ledger"]
    assert (alert["node"], alert["ledger"], alert["source"]) == ("redis", LEDGER, found_by)
    assert f"redis|{LEDGER}|unlisted_ledger" in repl.open_alerts()
    redis_client.hset(repl.ledgers_key, LEDGER, "ingest-1")
    checks.refresh_ledgers()
    assert f"redis|{LEDGER}|unlisted_ledger" not in repl.open_alerts()


def test_a_new_ledger_deleted_from_the_hash_before_its_home_lists_it_is_alerted_after_the_grace(
    redis_client: Any, tmp_path: Path
) -> None:
    """Named by Redis's hash alone until its home's next ledger.list (LIST_LEDGERS_SECONDS), a new
    ledger deleted from the hash was forgotten at once, though its stream exists: found again only
    at that next look, its ``unlisted_ledger`` came up to 30 s late (test_verifier's
    ..._resolved_after_a_verifier_restart, "not within 30 s", under load)."""
    chain = [bytes([i]) * 32 for i in range(3)]
    nodes = {name: FakeNode(name, chain) for name in ("ingest-1", "replica-1")}
    for node in nodes.values():
        node.lists = False  # not yet listed by its home: between two looks
    repl = ReplicationLedger(redis_client, node="verifier-1")
    clock = Clock()
    checks = ClusterChecks("verifier-1", _two_nodes(tmp_path), repl, nodes, clock=clock)  # type: ignore[arg-type]
    checks.start()
    repl.add([StreamRecord(LEDGER, 0, b"r0", "ingest-1")])  # created after the start's SCAN
    clock.now += 1
    checks.refresh_ledgers()
    assert LEDGER in checks.ledgers
    redis_client.hdel(repl.ledgers_key, LEDGER)
    clock.now += 1
    checks.refresh_ledgers()
    assert LEDGER in checks.ledgers  # still checked
    clock.now += UNLISTED_GRACE_SECONDS
    checks.refresh_ledgers()
    (alert,) = [a for a in repl.alerts() if a["what"] == "unlisted_ledger"]
    assert (alert["ledger"], alert["source"]) == (LEDGER, "stream")


def _three_nodes(tmp_path: Path) -> Any:
    """ingest-1 the default home, ingest-2 the standby of ``ballots`` only, and a replica."""
    return _with_standby(tmp_path, "ballots")


def test_a_ledger_list_counts_only_from_the_ledger_s_home_or_standby_and_makes_no_stream(
    redis_client: Any, tmp_path: Path
) -> None:
    """A broken-into replica answering ``ledger.list`` with names of its choosing made the verifier
    create each one's stream (MKSTREAM, found again by the SCAN after every restart: for good)
    and ask every node its head every round. A name counts only from a node an epoch can make its
    home (the configured home or standby, 10.9); none is asked of the others; and no stream is
    made for it: the consumer group comes once the stream exists."""
    chain = [bytes([i]) * 32 for i in range(3)]
    nodes = {name: FakeNode(name, chain) for name in ("ingest-1", "ingest-2", "replica-1")}
    nodes["replica-1"].extra = ["ghost"]  # anything a replica lists: not its to name
    nodes["ingest-2"].extra = ["ballots", "others"]  # the standby of ballots, and of no "others"
    repl = ReplicationLedger(redis_client, node="verifier-1")
    repl.client.hset(repl.ledgers_key, LEDGER, "ingest-1")
    clock = Clock()
    checks = ClusterChecks("verifier-1", _three_nodes(tmp_path), repl, nodes, clock=clock)  # type: ignore[arg-type]
    checks.start()
    assert sorted(checks.ledgers) == ["ballots", LEDGER]
    assert nodes["replica-1"].listed == 0  # a replica's list (every ledger's head and checkpoint) is never asked
    assert not redis_client.exists(repl.stream_key("ballots"))  # nothing made for a name a node gave
    assert not checks.ledgers["ballots"].grouped
    checks.consume(0)  # a ledger without its group is not read (no NOGROUP)
    checks.compare_heads()
    assert nodes["ingest-1"].asked["ghost"] == 0
    repl.add([StreamRecord("ballots", 0, b"r0", "ingest-1")])
    redis_client.hdel(repl.ledgers_key, "ballots")
    checks.refresh_ledgers()
    assert checks.ledgers["ballots"].grouped
    assert checks.consume(0) + checks.consume(0) == 1  # its first entry (after the pending ones), through the group


def test_the_ledgers_found_besides_redis_s_hash_are_capped_and_those_left_out_logged(
    redis_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A home may name any number of ledgers (and any ingest node's Redis user make any number of
    stream keys); each is checked on every copy every heads round. Past MAX_UNLISTED_LEDGERS,
    the others are left out and logged; those checked already stay checked."""
    chain = [bytes([i]) * 32 for i in range(3)]
    nodes = {name: FakeNode(name, chain) for name in ("ingest-1", "ingest-2", "replica-1")}
    nodes["ingest-1"].extra = [f"l{i:05d}" for i in range(MAX_UNLISTED_LEDGERS + 5)]
    repl = ReplicationLedger(redis_client, node="verifier-1")
    repl.client.hset(repl.ledgers_key, LEDGER, "ingest-1")
    clock = Clock()
    checks = ClusterChecks("verifier-1", _three_nodes(tmp_path), repl, nodes, clock=clock)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="vledger.verifier.checks"):
        checks.start()
    assert len(checks.ledgers) == 1 + MAX_UNLISTED_LEDGERS
    assert "l00000" in checks.ledgers and f"l{MAX_UNLISTED_LEDGERS:05d}" not in checks.ledgers
    assert f"5 not checked: l{MAX_UNLISTED_LEDGERS:05d}" in caplog.text
    assert [k for k in redis_client.scan_iter(match="vledger:{l*}:chain")] == []
    nodes["ingest-1"].extra = ["a-new-one"]  # sorted first, but the checked ones keep their place
    clock.now += LIST_LEDGERS_SECONDS
    checks.refresh_ledgers()
    assert "l00000" in checks.ledgers and "a-new-one" not in checks.ledgers


def test_the_stream_keys_are_looked_for_at_start_and_seldom_after(redis_client: Any, tmp_path: Path) -> None:
    """The SCAN walks the whole keyspace; it is a backstop for a ledger whose home is away (the
    home's ledger.list finds the others every LIST_LEDGERS_SECONDS), so it runs at start and
    every SCAN_STREAMS_SECONDS."""
    chain = [bytes([i]) * 32 for i in range(3)]
    nodes = {name: FakeNode(name, chain) for name in ("ingest-1", "ingest-2", "replica-1")}
    repl = ReplicationLedger(redis_client, node="verifier-1")
    repl.add([StreamRecord("early", 0, b"r0", "ingest-1")])
    redis_client.hdel(repl.ledgers_key, "early")
    clock = Clock()
    checks = ClusterChecks("verifier-1", _three_nodes(tmp_path), repl, nodes, clock=clock)  # type: ignore[arg-type]
    checks.start()
    assert "early" in checks.ledgers
    repl.add([StreamRecord("late", 0, b"r0", "ingest-1")])
    redis_client.hdel(repl.ledgers_key, "late")
    clock.now += LIST_LEDGERS_SECONDS
    checks.refresh_ledgers()
    assert "late" not in checks.ledgers
    clock.now += SCAN_STREAMS_SECONDS
    checks.refresh_ledgers()
    assert "late" in checks.ledgers


def test_an_unlisted_ledger_alert_raised_before_a_restart_resolves_once_the_hash_lists_it_again(
    redis_client: Any, tmp_path: Path
) -> None:
    """Resolution walked only the ledgers this run saw unlisted: a verifier restarted after the
    hash listed the ledger again left the alert open for good."""
    chain = [bytes([i]) * 32 for i in range(3)]
    nodes = {name: FakeNode(name, chain) for name in ("ingest-1", "ingest-2", "replica-1")}
    repl = ReplicationLedger(redis_client, node="verifier-1")
    clock = Clock()
    before = ClusterChecks("verifier-1", _three_nodes(tmp_path), repl, nodes, clock=clock)  # type: ignore[arg-type]
    before.start()
    clock.now += 11
    before.refresh_ledgers()
    assert f"redis|{LEDGER}|unlisted_ledger" in repl.open_alerts()
    redis_client.hset(repl.ledgers_key, LEDGER, "ingest-1")  # listed again while the verifier is down
    after = ClusterChecks("verifier-1", _three_nodes(tmp_path), repl, nodes, clock=clock)  # type: ignore[arg-type]
    after.start()
    assert f"redis|{LEDGER}|unlisted_ledger" not in repl.open_alerts()


def test_junk_names_hset_into_redis_s_ledgers_hash_make_no_stream_and_are_capped(
    redis_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Any ingest node's Redis user may HSET names into ``{ledgers}``: the verifier made each one's
    stream (MKSTREAM) and checked it on every copy every round, however many. A name that is no
    ledger's is left out; a name nothing else gives (no node, stream or cluster file) is checked
    up to MAX_UNLISTED_LEDGERS, with no stream made for it; the rest are logged once, not each
    round, and the verifier goes on checking the real ledger."""
    chain = [bytes([i]) * 32 for i in range(3)]
    nodes = {name: FakeNode(name, chain) for name in ("ingest-1", "replica-1")}
    repl = ReplicationLedger(redis_client, node="verifier-1")
    repl.client.hset(repl.ledgers_key, LEDGER, "ingest-1")
    junk = {f"junk{i:04d}": "ingest-1" for i in range(1000)}
    invalid = {"no ledger/name": "ingest-1", "x" * 300: "ingest-1", "ledgers": "ingest-1"}
    repl.client.hset(repl.ledgers_key, mapping={**junk, **invalid})
    clock = Clock()
    checks = ClusterChecks("verifier-1", _two_nodes(tmp_path), repl, nodes, clock=clock)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="vledger.verifier.checks"):
        checks.start()
        taken = set(checks.ledgers)
        for _ in range(3):  # rounds past every look elsewhere: the same names, nothing more
            clock.now += SCAN_STREAMS_SECONDS
            checks.refresh_ledgers()
            checks.compare_heads()
            checks.save_checkpoints()
            assert set(checks.ledgers) == taken
    assert LEDGER in taken and len(taken) == 1 + MAX_UNLISTED_LEDGERS
    assert taken - {LEDGER} == set(sorted(junk)[:MAX_UNLISTED_LEDGERS])
    assert [k for k in redis_client.scan_iter(match="vledger:{*}:chain")] == [repl.stream_key(LEDGER).encode()]
    assert caplog.text.count("names no node, stream or cluster file gives") == 1, caplog.text
    # Names that are no ledger's are left out as Redis's hash is read (outsider43 M1): not counted.
    assert f"{1000 - MAX_UNLISTED_LEDGERS} not checked" in caplog.text
    saved = {_field.decode() for _field in redis_client.hkeys("vledger:{sweep}:verifier-1")}
    assert saved == {f"{node}|{LEDGER}" for node in nodes}  # a restart finds no junk name there
    repl.add([StreamRecord(LEDGER, 0, b"r0", "ingest-1")])
    assert checks.consume(1) + checks.consume(1) == 1  # the real ledger's entry, read as before
    # Restarted on the same Redis: the same names, no stream, no more.
    again = ClusterChecks("verifier-1", _two_nodes(tmp_path), repl, nodes, clock=clock)  # type: ignore[arg-type]
    again.start()
    assert set(again.ledgers) == taken
    # A name that leaves the hash is forgotten; the next one takes its place, still without a stream.
    redis_client.hdel(repl.ledgers_key, "junk0000")
    again.refresh_ledgers()
    assert "junk0000" not in again.ledgers and f"junk{MAX_UNLISTED_LEDGERS:04d}" in again.ledgers
    assert not redis_client.exists(repl.stream_key(f"junk{MAX_UNLISTED_LEDGERS:04d}"))


def _records(path: Path, count: int) -> list[bytes]:
    """A chain of LEDGER, its genesis and ``count - 1`` votes, as its home stores it."""
    rules = LedgerRules(("vote",), 0, {})
    with ChainStore(path, origin="ingest-1") as store:
        store.create_ledger(Entry.prepare(rules.genesis_content(LEDGER, "admin", "g", 1), 0, PROTOCOL_LIMITS))
        votes = [Content(LEDGER, "vote", {"n": i}, "admin", f"r{i}", 2 + i) for i in range(count - 1)]
        for future in [store.submit_entry(Entry.prepare(vote, 0, PROTOCOL_LIMITS)) for vote in votes]:
            future.result()
        return [data for _, data in store.range_raw(LEDGER)]


class CopyNode(FakeNode):
    """A node's records by height, served as its ``range`` serves them: those it holds from a
    height on, in order, a height it lacks (deleted behind its back) skipped."""

    def __init__(self, name: str, held: dict[int, bytes]) -> None:
        super().__init__(name, [])
        self.held = held

    def head(self, ledger: str) -> tuple[int, bytes] | None:
        top = max(self.held, default=None)
        return None if top is None else (top, decode_record(self.held[top], PROTOCOL_LIMITS).hash)

    def hash_at(self, ledger: str, height: int) -> bytes | None:
        data = self.held.get(height)
        return None if data is None else decode_record(data, PROTOCOL_LIMITS).hash

    def ledgers(self) -> list[str]:
        return [LEDGER]

    def page(self, ledger: str, start: int, limit: int) -> list[bytes]:
        return [data for height, data in sorted(self.held.items()) if height >= start][:limit]

    def span(self, ledger: str, start: int, count: int) -> list[bytes]:
        return [data for height, data in sorted(self.held.items()) if start <= height < start + count]


def _conflicts(
    redis_client: Any, tmp_path: Path, copies: dict[str, dict[int, bytes]], streamed: list[bytes]
) -> list[dict[str, str]]:
    """The record_conflict alerts a verifier raises checking ``streamed`` (the stream's entries)
    against the copies (node -> its records by height)."""
    _, repl, _ = _forked_stream_checks(redis_client, tmp_path, copies, streamed)
    return [a for a in repl.alerts() if a["what"] == "record_conflict"]


@pytest.mark.parametrize("holed", ["replica-1", "ingest-1"])
def test_a_copy_that_lacks_records_the_stream_holds_has_no_record_conflict_there(
    redis_client: Any, tmp_path: Path, holed: str
) -> None:
    """A copy whose records 3 and 4 were deleted behind its back serves 5 on where 3 should be:
    compared by place, its records were taken for others than the stream's, and the verifier
    raised a record_conflict (only an operator resolves it) that stayed open after the copy
    fetched them again (fresh-clone CI, test_cut_copy[hole]). A missing record differs from
    none: the sweep names the hole (height_gap), and a record that does differ from the
    stream's at its own height, above the hole, is still a record_conflict."""
    chain = _records(tmp_path / "home", 10)
    other = _records(tmp_path / "other", 10)  # another chain of LEDGER: its record at 7 is another vote 6
    copies = {name: dict(enumerate(chain)) for name in ("ingest-1", "replica-1")}
    del copies[holed][3], copies[holed][4]
    copies["replica-1"][7] = other[7]
    conflicts = [(a["node"], a["height"]) for a in _conflicts(redis_client, tmp_path, copies, chain)]
    assert conflicts == [("replica-1", "7")]


def _forked_stream_checks(
    redis_client: Any, tmp_path: Path, copies: dict[str, dict[int, bytes]], streamed: list[bytes]
) -> tuple[ClusterChecks, ReplicationLedger, dict[str, CopyNode]]:
    """A verifier that checked ``streamed`` (the stream's entries) against the copies (node -> its
    records by height), its Redis and the copies."""
    nodes = {name: CopyNode(name, held) for name, held in copies.items()}
    repl = ReplicationLedger(redis_client, node="verifier-1")
    repl.client.hset(repl.ledgers_key, LEDGER, "ingest-1")
    checks = ClusterChecks("verifier-1", _two_nodes(tmp_path), repl, nodes, clock=Clock())  # type: ignore[arg-type]
    checks.start()
    repl.add([StreamRecord(LEDGER, height, data, "ingest-1") for height, data in enumerate(streamed)])
    assert checks.consume(1) + checks.consume(1) == len(streamed)
    return checks, repl, nodes


def _rewritten(checks: ClusterChecks, repl: ReplicationLedger, chain: list[bytes], start: int) -> None:
    """The home rewrites the stream from its store from ``start`` on (10.2), and the verifier checks it."""
    repl.rewind(LEDGER, start)
    repl.add([StreamRecord(LEDGER, height, chain[height], "ingest-1") for height in range(start, len(chain))])
    assert checks.consume(1) + checks.consume(1) == len(chain) - start


def test_a_copy_s_record_conflict_with_a_forked_stream_resolves_once_the_stream_is_the_home_s_again(
    redis_client: Any, tmp_path: Path
) -> None:
    """outsider o13 F6: a home started on an old store forked the ledger at 5 and streamed it;
    every honest copy got a record_conflict "this node's record differs from the stream's",
    which stayed open after the home was repaired and the stream rewritten from its store."""
    chain = _records(tmp_path / "home", 10)
    fork = chain[:5] + _records(tmp_path / "other", 10)[5:]
    copies = {"ingest-1": dict(enumerate(fork)), "replica-1": dict(enumerate(chain))}
    checks, repl, nodes = _forked_stream_checks(redis_client, tmp_path, copies, fork)
    assert {f"replica-1|{LEDGER}|record_conflict", f"redis|{LEDGER}|bad_link"} <= set(repl.open_alerts())
    nodes["ingest-1"].held = dict(enumerate(chain))  # vledger repair
    _rewritten(checks, repl, chain, 5)
    assert repl.open_alerts() == {}
    checks.refresh_open()  # not put back as vanished: the verifier resolved its own finding
    assert repl.open_alerts() == {}


def test_the_stream_s_alerts_resolve_on_a_clean_check_of_it_whatever_a_copy_s_check_found(
    redis_client: Any, tmp_path: Path
) -> None:
    """outsider o13 F6: redis's bad_link stayed open because the check of the rewritten entries
    that cleared it also found a copy that had taken the fork (a finding of that copy's)."""
    chain = _records(tmp_path / "home", 10)
    fork = chain[:5] + _records(tmp_path / "other", 10)[5:]
    copies = {"ingest-1": dict(enumerate(fork)), "replica-1": dict(enumerate(chain[:5]))}
    checks, repl, nodes = _forked_stream_checks(redis_client, tmp_path, copies, fork)
    assert f"redis|{LEDGER}|bad_link" in repl.open_alerts()
    nodes["ingest-1"].held = dict(enumerate(chain))
    nodes["replica-1"].held = dict(enumerate(fork))  # it took the fork meanwhile
    _rewritten(checks, repl, chain, 5)
    assert set(repl.open_alerts()) == {f"replica-1|{LEDGER}|record_conflict"}


@pytest.mark.parametrize("changed", ["replica-1", "redis"])
def test_a_record_changed_with_its_link_kept_is_a_conflict_that_shows_what_differs(
    redis_client: Any, tmp_path: Path, changed: str
) -> None:
    """outsider o11: a record whose content was changed and its link kept was a record_conflict
    whose expected and found were the same hash (the link): the alert showed no difference."""
    chain = _records(tmp_path / "home", 10)
    other = _records(tmp_path / "other", 10)
    record = decode_record(chain[7], PROTOCOL_LIMITS)
    forged = dataclasses.replace(record, content_bytes=decode_record(other[6], PROTOCOL_LIMITS).content_bytes)
    assert forged.hash == record.hash and forged.encode() != chain[7]
    copies = {name: dict(enumerate(chain)) for name in ("ingest-1", "replica-1")}
    streamed = list(chain)
    if changed == "redis":
        streamed[7] = forged.encode()
    else:
        copies["replica-1"][7] = forged.encode()
    (conflict,) = _conflicts(redis_client, tmp_path, copies, streamed)
    assert (conflict["node"], conflict["height"]) == (changed, "7")
    # The stream's (or the home's) record is the expected one, the changed one is found.
    assert conflict["expected"] == "leaf:" + tree.leaf_hash(chain[7]).hex()
    assert conflict["found"] == "leaf:" + tree.leaf_hash(forged.encode()).hex()
    assert conflict["detail"].endswith(": the same link, another content (expected and found: their leaf hashes)")


def test_an_observer_s_bad_signature_is_resolved_once_its_entries_verify(redis_client: Any, tmp_path: Path) -> None:
    """outsider o8 J5: bad_signature alerts raised with a stale key view stayed open for good."""
    config = _two_nodes(tmp_path)
    chain = [bytes([i]) * 32 for i in range(11)]
    nodes = {"ingest-1": FakeNode("ingest-1", chain), "replica-1": FakeNode("replica-1", chain)}
    repl = ReplicationLedger(redis_client)
    repl.client.hset(repl.ledgers_key, LEDGER, "ingest-1")
    bad = Alert(
        "observer-1", LEDGER, 10, "bad_signature", "its tally stream's entry 1-0 does not verify: x", "observer-1"
    )
    verdicts: list[list[Alert]] = [[bad]]
    asked: list[dict[str, Any]] = []
    verifies = [False]

    def cleared(ledger: str, raised: Mapping[str, Mapping[str, Any]]) -> list[str]:
        asked.append({ledger: dict(raised)})
        return sorted(raised) if verifies[0] else []

    checks = ClusterChecks(
        "verifier-1",
        config,
        repl,
        nodes,
        clock=Clock(),  # type: ignore[arg-type]
        tallies=lambda ledger, size: verdicts[0],
        tally_cleared=cleared,
    )
    checks.start()
    checks.compare_tallies()
    assert "observer-1|" + LEDGER + "|bad_signature" in repl.open_alerts()
    verdicts[0] = []
    checks.compare_tallies()  # still failing: stays open
    assert "observer-1|" + LEDGER + "|bad_signature" in repl.open_alerts()
    again = ClusterChecks(  # a restart: the open alert's fields are handed over
        "verifier-1",
        config,
        repl,
        nodes,
        clock=Clock(),  # type: ignore[arg-type]
        tallies=lambda ledger, size: [],
        tally_cleared=cleared,
    )
    again.start()
    verifies[0] = True
    again.compare_tallies()
    assert asked[-1][LEDGER]["observer-1"]["detail"] == bad.detail
    assert "observer-1|" + LEDGER + "|bad_signature" not in repl.open_alerts()


def _handed_over(
    tmp_path: Path, placer: str, *, after: int = 0, at: int = 10, placed: int = 1
) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """The chain of LEDGER (genesis pinning HOME_KEY and STANDBY_KEY, 9 votes) that ingest-1
    placed; the new home ingest-2's copy, those 10 records, its handover record at 10 (epoch
    2) and ``after`` votes of its own; and the ``placed`` records ``placer`` placed from ``at``
    on, chained on the new home's records below (at 10, ingest-1's: its last append, fenced)."""
    pinned = {"checkpoint_key": HOME_KEY.verifier().encode(), "standby_key": STANDBY_KEY.verifier().encode()}
    rules = LedgerRules(("vote", EPOCH_KIND), 0, pinned)
    votes = [Content(LEDGER, "vote", {"n": i}, "admin", f"r{i}", 2 + i) for i in range(30)]
    with ChainStore(tmp_path / "old", origin="ingest-1") as old:
        old.create_ledger(Entry.prepare(rules.genesis_content(LEDGER, "admin", "g", 1), 0, PROTOCOL_LIMITS))
        for vote in votes[:9]:
            old.submit_entry(Entry.prepare(vote, 0, PROTOCOL_LIMITS)).result()
        records = list(old.range(LEDGER))
    chain = [r.encode() for r in records]
    with ChainStore(tmp_path / "new", origin="ingest-2") as new:
        new.append_records(records)
        payload = epoch_payload(2, "ingest-2", STANDBY_KEY.verifier())
        new.submit_entry(
            Entry.prepare(Content(LEDGER, EPOCH_KIND, payload, "admin", "epoch-2", 50), 0, PROTOCOL_LIMITS)
        ).result()
        for vote in votes[10 : 10 + after]:
            new.submit_entry(Entry.prepare(vote, 0, PROTOCOL_LIMITS)).result()
        new_records = list(new.range(LEDGER))
    with ChainStore(tmp_path / "placer", origin=placer) as other:
        other.append_records(new_records[:at])
        for vote in votes[20 : 20 + placed]:
            other.submit_entry(Entry.prepare(vote, 0, PROTOCOL_LIMITS)).result()
        theirs = [data for _, data in other.range_raw(LEDGER, at)]
    return chain, [r.encode() for r in new_records], theirs


def _checking_after_the_handover(
    redis_client: Any, tmp_path: Path, chain: list[bytes], new_chain: list[bytes]
) -> tuple[ClusterChecks, ReplicationLedger]:
    """A verifier that checked ingest-1's ``chain`` in the stream, then proved epoch 2 (ingest-2
    home, holding ``new_chain``, as replica-1 does)."""
    nodes = {
        "ingest-1": StoppedNode("ingest-1", []),
        "ingest-2": CopyNode("ingest-2", dict(enumerate(new_chain))),
        "replica-1": CopyNode("replica-1", dict(enumerate(new_chain))),
    }
    repl = ReplicationLedger(redis_client, node="verifier-1")
    repl.client.hset(repl.ledgers_key, LEDGER, "ingest-1")
    repl.add([StreamRecord(LEDGER, height, data, "ingest-1") for height, data in enumerate(chain)])
    witnesses = lambda: (WITNESS.verifier(),)  # noqa: E731
    checks = ClusterChecks(  # type: ignore[arg-type]
        "verifier-1", _with_standby(tmp_path, LEDGER), repl, nodes, clock=Clock(), witness_keys=witnesses
    )
    checks.start()
    assert checks.consume(1) + checks.consume(1) == len(chain)  # the pending ones first (none)
    assert repl.promote(LEDGER, 2, "ingest-2") is None
    repl.publish_cosignature(LEDGER, "replica-1", len(new_chain), _epoch_2_note(len(new_chain)))
    checks.refresh_ledgers()
    assert checks.ledgers[LEDGER].home == "ingest-2"
    return checks, repl


@pytest.mark.parametrize("placer", ["ingest-1", "intruder"])
def test_the_replaced_home_s_record_past_the_handover_in_the_stream_is_no_redis_conflict(
    redis_client: Any, tmp_path: Path, placer: str
) -> None:
    """The race behind a CI flake of test_standby's takeover: the killed home's outbox appended
    its record 10 after its node died; its standby, promoted at size 10, placed its handover
    record there, and its outbox rewrites the stream's entry from its store at once (10.2). A
    verifier that checks the entry in between, holding epoch 2 proven, found it differing from
    the new home's record and blamed Redis. The fenced home's record past the handover is no
    part of the ledger and no lie of Redis: nothing is raised, nothing resolved, and the
    rewritten entry checks clean. A record there that another node placed still is the
    stream's record_conflict."""
    chain, new_chain, (placed,) = _handed_over(tmp_path, placer)
    checks, repl = _checking_after_the_handover(redis_client, tmp_path, chain, new_chain)
    repl.add([StreamRecord(LEDGER, 10, placed, "ingest-1")])  # the killed home's outbox's last append
    assert checks.consume(1) == 1
    conflicts = [(a["node"], a["height"]) for a in repl.alerts() if a["what"] == "record_conflict"]
    assert conflicts == ([] if placer == "ingest-1" else [("redis", "10")])
    repl.rewind(LEDGER, 10)  # what the new home's outbox does then
    repl.add([StreamRecord(LEDGER, 10, new_chain[10], "ingest-2")])
    assert checks.consume(1) == 1
    assert [(a["node"], a["height"]) for a in repl.alerts() if a["what"] == "record_conflict"] == conflicts
    assert not repl.open_alerts()  # the rewritten entry checks clean (the intruder's alert, too, resolves)


def test_the_fenced_home_s_last_append_of_several_records_is_no_redis_conflict(
    redis_client: Any, tmp_path: Path
) -> None:
    """The fenced outbox's last append may hold several records (10..12 here, read in one go):
    the run from the handover on is its leftover, where the new home holds 10..12 too."""
    chain, new_chain, leftover = _handed_over(tmp_path, "ingest-1", after=2, placed=3)
    checks, repl = _checking_after_the_handover(redis_client, tmp_path, chain, new_chain)
    repl.add([StreamRecord(LEDGER, 10 + i, data, "ingest-1") for i, data in enumerate(leftover)])
    assert checks.consume(100) == 3
    assert [a for a in repl.alerts() if a["what"] == "record_conflict"] == []


def test_an_old_home_s_record_past_the_new_home_s_in_the_stream_is_still_a_redis_conflict(
    redis_client: Any, tmp_path: Path
) -> None:
    """Review r15 F-B: the exemption above had no bound. The replaced home's Redis user keeps its
    write selector on the stream, so it (or whoever broke into it) could add a record of its own
    origin at the head long after the handover, here at 15 past the new home's 10..14, and the
    verifier said nothing (before sb28: record_conflict). Only the run from the handover is the
    fenced outbox's; this is raised against ``redis``."""
    chain, new_chain, (forged,) = _handed_over(tmp_path, "ingest-1", after=6, at=15)
    checks, repl = _checking_after_the_handover(redis_client, tmp_path, chain, new_chain)
    repl.add([StreamRecord(LEDGER, h, new_chain[h], "ingest-2") for h in range(10, 15)])
    repl.add([StreamRecord(LEDGER, 15, forged, "ingest-1")])  # the replaced home's user, at the head
    while checks.consume(100):
        pass
    conflicts = [(a["node"], a["height"]) for a in repl.alerts() if a["what"] == "record_conflict"]
    assert conflicts == [("redis", "15")]


@pytest.mark.parametrize("key", ["vledger:{ledgers}", "vledger:{ledgers}:epochs"])
def test_a_shared_hash_of_another_type_stops_no_check_and_is_alerted_until_it_reads_again(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock], key: str
) -> None:
    # Any ingest node's Redis user may make {ledgers} (or its epochs) a string: each tick failed
    # WRONGTYPE, logged as "Redis unavailable", and no check ran at all (outsider 31, N1).
    found, nodes, clock = checks
    client = found.replication.client
    saved = client.hgetall(key)
    client.delete(key)
    client.set(key, "x")
    clock.now += 100
    found.tick(block_ms=1)
    nodes["replica-1"].hashes[-1] = b"\xff" * 32
    found.tick(block_ms=1)
    found.compare_heads()
    assert {"fork", "redis_key_damaged"} <= open_kinds(found)  # (these fakes' sweeps find truncations too)
    damaged = found.replication.open_alerts()[f"redis|{key}|redis_key_damaged"]
    assert damaged["source"] == "redis" and "WRONGTYPE" in damaged["detail"]
    # Who puts it right, truly: no home writes the epochs hash (review17 2), a promotion does.
    assert ("next promotion replaces it" in damaged["detail"]) == key.endswith(":epochs")
    assert LEDGER in found.ledgers  # checked with what the hash last held
    client.delete(key)
    if saved:
        client.hset(key, mapping=saved)
    found.refresh_ledgers()
    assert "fork" in open_kinds(found) and "redis_key_damaged" not in open_kinds(found)


def test_a_fork_on_the_ledger_whose_stream_is_of_another_type_is_a_fork(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    # wt31 left it open that r17 #1's repro gave `truncated`, not `fork`, for a copy forked on
    # the very ledger whose stream was damaged: the repro's second tick came before the heads
    # check was due (its clock stood still), and these fakes' sweeps find truncations anyway
    # (their pages are empty). Without the damage it gave the same. The heads check names the
    # fork while the stream is of another type, and it stays open once the stream is back.
    found, nodes, clock = checks
    client = found.replication.client
    key = found.replication.stream_key(LEDGER)
    client.delete(key)
    client.set(key, "x")
    clock.now += 100
    found.tick(block_ms=1)
    nodes["replica-1"].hashes[-1] = b"\xff" * 32
    clock.now += 100
    found.tick(block_ms=1)
    assert {"fork", "redis_key_damaged"} <= open_kinds(found)
    client.delete(key)  # its home replaces it (an empty stream here: these fakes hold no records)
    clock.now += 100
    found.tick(block_ms=1)
    assert client.type(key) == b"stream"
    assert "fork" in open_kinds(found) and "redis_key_damaged" not in open_kinds(found)


def test_its_own_sweep_checkpoints_key_of_another_type_stops_no_check_and_is_replaced(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    # The admin's user can SET the verifier's sweep key: every tick failed WRONGTYPE (outsider 31, N1).
    found, nodes, clock = checks
    client = found.replication.client
    client.delete(found.checkpoints_key)
    client.set(found.checkpoints_key, "x")
    nodes["replica-1"].hashes[-1] = b"\xff" * 32
    clock.now += 100
    found.tick(block_ms=1)
    found.refresh_ledgers()
    found.compare_heads()
    assert "fork" in open_kinds(found)
    found.save_checkpoints()
    assert client.type(found.checkpoints_key) == b"hash"


def test_a_copy_s_record_conflict_stays_open_while_the_copy_still_differs_in_the_checked_batch(
    redis_client: Any, tmp_path: Path
) -> None:
    """review r20 F1: the copy's record_conflict (raised at 5 against a forked stream) was resolved
    when the rewritten stream showed the copy holding the home's record at 5, although the same
    batch found the copy's record at 7 changed (link kept): raise_alert dropped the finding at 7
    (the key open at 5) and _resolve_checked then closed the key: a false all-clear."""
    chain = _records(tmp_path / "home", 10)
    other = _records(tmp_path / "other", 10)
    fork = chain[:5] + other[5:]
    record = decode_record(chain[7], PROTOCOL_LIMITS)
    forged = dataclasses.replace(record, content_bytes=decode_record(other[6], PROTOCOL_LIMITS).content_bytes)
    tampered = dict(enumerate(chain))
    tampered[7] = forged.encode()
    copies = {"ingest-1": dict(enumerate(fork)), "replica-1": tampered}
    checks, repl, nodes = _forked_stream_checks(redis_client, tmp_path, copies, fork)
    assert f"replica-1|{LEDGER}|record_conflict" in repl.open_alerts()
    nodes["ingest-1"].held = dict(enumerate(chain))  # the home repaired, the stream rewritten
    _rewritten(checks, repl, chain, 5)
    assert f"replica-1|{LEDGER}|record_conflict" in repl.open_alerts()  # its record at 7 still differs


def test_the_stream_s_alert_stays_open_when_its_home_was_not_compared_and_a_copy_disagrees(
    redis_client: Any, tmp_path: Path
) -> None:
    """review r20 F2: with the home away (its reader down), a chain-valid forged entry streamed
    again (anyone with an ingest Redis password may rewind and XADD) closed the stream's
    record_conflict that the home's check had raised, and blamed the honest copy instead: the
    copies' disagreement no longer counts against the stream (fix19a), and the home was not asked."""
    chain = _records(tmp_path / "home", 10)
    real = decode_record(chain[7], PROTOCOL_LIMITS)
    other = Entry.prepare(Content(LEDGER, "vote", {"n": 99}, "admin", "forged", 50), 0, PROTOCOL_LIMITS)
    forged = other.place(7, real.prev, real.accepted, "ingest-1").encode()
    streamed = [*chain[:7], forged]
    copies = {"ingest-1": dict(enumerate(chain)), "replica-1": dict(enumerate(chain))}
    checks, repl, nodes = _forked_stream_checks(redis_client, tmp_path, copies, streamed)
    assert set(repl.open_alerts()) == {f"redis|{LEDGER}|record_conflict"}
    nodes["ingest-1"].up = lambda: False  # type: ignore[method-assign]  # the home away
    _rewritten(checks, repl, streamed, 5)  # the same forged entry streamed again
    assert f"redis|{LEDGER}|record_conflict" in repl.open_alerts()


def test_a_copy_s_changed_record_below_an_agreeing_head_keeps_its_record_conflict(
    redis_client: Any, tmp_path: Path
) -> None:
    """Review r21 F1: a copy whose record at 7 was changed with record 8's link kept still has the
    home's head: head agreement says nothing of the prefix of a copy whose chain is broken."""
    chain = _records(tmp_path / "home", 10)
    other = _records(tmp_path / "other", 10)
    copies = {"ingest-1": dict(enumerate(chain)), "replica-1": dict(enumerate(chain))}
    copies["replica-1"][7] = other[7]  # changed behind its back; record 8 still links to the home's 7
    checks, repl, _ = _forked_stream_checks(redis_client, tmp_path, copies, chain)
    assert f"replica-1|{LEDGER}|record_conflict" in repl.open_alerts()
    checks.compare_heads()  # its head (9) is the home's record
    assert f"replica-1|{LEDGER}|record_conflict" in repl.open_alerts()


@pytest.mark.parametrize("tampered", [False, True])
def test_a_copy_s_record_conflict_with_a_forked_stream_closes_only_at_its_clean_sweep(
    redis_client: Any, tmp_path: Path, tampered: bool
) -> None:
    """The case 9902736 fixed: the stream forked at 5 (the copy honest), the home repaired and the
    stream rewritten while the home was still marked down: the copy's conflict closes once a
    clean sweep of it ends on the home's record; a copy whose record at 7 was also changed
    (its successor's link kept: its head is still the home's) never has it closed."""
    chain = _records(tmp_path / "home", 10)
    other = _records(tmp_path / "other", 10)
    fork = chain[:5] + other[5:]
    copy = dict(enumerate(chain))
    if tampered:
        copy[7] = other[7]
    copies = {"ingest-1": dict(enumerate(fork)), "replica-1": copy}
    checks, repl, nodes = _forked_stream_checks(redis_client, tmp_path, copies, fork)
    assert f"replica-1|{LEDGER}|record_conflict" in repl.open_alerts()
    nodes["ingest-1"].held = dict(enumerate(chain))
    nodes["ingest-1"].up = lambda: False  # type: ignore[method-assign]  # still marked down
    _rewritten(checks, repl, chain, 5)
    del nodes["ingest-1"].up  # back
    assert f"replica-1|{LEDGER}|record_conflict" in repl.open_alerts()
    for _ in range(10):
        checks.compare_heads()
        checks.sweep(budget_seconds=1.0)
        checks._clock.now += 3600  # type: ignore[attr-defined]
    assert (f"replica-1|{LEDGER}|record_conflict" in repl.open_alerts()) is tampered


# Review r25 F2: one raiser's Redis user, opening and deleting operator-only alerts in its own hash
# (each batch within the reader's cap), made the verifier put them all back into its own hash,
# past OPEN_ALERTS_CAP: every reader then read none of the verifier's alerts, its own findings
# among them. Past PUT_BACK_CAP one alert per raiser counts the rest.
def test_a_raiser_cannot_push_the_verifier_s_own_hash_past_the_cap_by_put_backs(checks: Any) -> None:
    found, _, _ = checks
    repl = found.replication
    repl.node = "verifier"  # as runtime.replication() makes it: the verifier raises into its own hash
    genuine = Alert("ingest-1", LEDGER, 7, "equivocation", "two roots at 7 (the verifier's own finding)")
    repl.alert(genuine)
    theirs = repl.open_alerts_key_of("replica-3")
    half = OPEN_ALERTS_CAP // 2 + 1
    for batch in range(2):
        fields = {f"ingest-1|junk{batch}-{i}|equivocation": json.dumps({"id": "1-0"}) for i in range(half)}
        repl.client.hset(theirs, mapping=fields)
        found.refresh_open()  # seen open (the hash is within the cap)
        repl.client.delete(theirs)  # replica-3's user may HDEL every field of its own hash
        found.refresh_open()  # each put back into the verifier's own hash
    assert genuine.key in repl.open_alerts(), "the verifier's own equivocation is no longer shown"
    counted = repl.open_alerts()["replica-3||alerts_deleted"]
    assert int(counted["height"]) == 2 * half - PUT_BACK_CAP  # the rest counted, not put back
    assert len(repl.client.hkeys(repl.open_alerts_key)) <= PUT_BACK_CAP + 2


class SilentNode(FakeNode):
    """A node whose every read times out (cut off from the verifier, or killed): taken down."""

    def __init__(self, name: str, hashes: list[bytes]) -> None:
        super().__init__(name, hashes)
        self.down_until = 0.0

    def up(self) -> bool:
        return not self.down_until

    def down(self, seconds: float, error: Exception) -> None:
        self.down_until = seconds

    def head(self, ledger: str) -> tuple[int, bytes] | None:
        raise NodeUnavailableError(f"{self.name}: no answer within 2 s")


def test_a_home_that_answers_no_read_for_lag_alert_ms_is_home_unreachable_until_it_answers(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    """Outsider o24 F3: a home cut off from its clients (its Redis heartbeats going on) or
    killed: no verifier alert at all for 60+ s, so `verify --cluster` exited 0. It is
    home_unreachable once it has answered none of the verifier's reads for lag_alert_ms, one
    alert (not one a round), closed by the verifier at its next answer."""
    found, nodes, clock = checks
    found.compare_heads()
    live = nodes["ingest-1"]
    nodes["ingest-1"] = SilentNode("ingest-1", live.hashes)
    found.compare_heads()
    clock.now += LAG_MS / 1000 - 1
    nodes["ingest-1"].down_until = 0.0  # asked again (its reader's skip window is over)
    found.compare_heads()
    assert "home_unreachable" not in open_kinds(found)  # silent, but not for long
    for _ in range(3):
        clock.now += 1
        nodes["ingest-1"].down_until = 0.0
        found.compare_heads()
    assert "home_unreachable" in open_kinds(found)
    unreachable = [a for a in found.replication.alerts() if a["what"] == "home_unreachable"]
    assert len(unreachable) == 1, unreachable
    (alert,) = unreachable
    assert (alert["node"], alert["ledger"]) == ("ingest-1", LEDGER)
    assert "has answered none of this verifier's reads for" in alert["detail"], alert["detail"]
    nodes["ingest-1"] = live
    found.compare_heads()
    assert "home_unreachable" not in open_kinds(found)


def test_a_home_unreachable_alert_of_a_node_no_longer_the_home_is_resolved(
    checks: tuple[ClusterChecks, dict[str, FakeNode], Clock],
) -> None:
    """A failback made while the epoch-2 home was stopped (its alert raised), with the file
    swapped back after it: the replaced-home rule (the file's home) names no node, and the
    alert of the node that is no longer the home stayed open for good (seen in the failback test)."""
    found, _, _ = checks
    found.raise_alert(Alert("ingest-2", LEDGER, 10, "home_unreachable", "raised while ingest-2 was the home"))
    found.raise_alert(Alert("ingest-2", "other", 3, "home_unreachable", "of another ledger it is still home of"))
    found.compare_heads()
    assert f"ingest-2|{LEDGER}|home_unreachable" not in found.replication.open_alerts()
    assert "ingest-2|other|home_unreachable" in found.replication.open_alerts()  # no ledger of this verifier's
