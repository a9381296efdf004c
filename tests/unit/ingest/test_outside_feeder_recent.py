"""The outside feeder's reading of the cluster witnesses' recent notes (PROTOCOL 13.9, review r32
#4 and #5): what it feeds on the timeout, junk in a witness's list, and what it does not read."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from vledger.broker.replication import ReplicationLedger
from vledger.node.note import ALG_COSIGNATURE_V1, SignerKey, parse_note, verify_checkpoint
from vledger.node.outside import QUORUM_NOTE
from vledger.node.witness import HomeSigner
from vledger.tests.tlog_witness import TlogWitness
from vledger.tests.unit.ingest.test_outside_feeder import (
    CLUSTER,
    CLUSTER_WITNESSES,
    LEDGER,
    LOG_KEY,
    ORIGIN,
    Home,
    cluster_cosigned,
    witness_node,
)

KEYS = tuple(w.verifier() for w in CLUSTER_WITNESSES)


class CountingReplication(ReplicationLedger):
    """Counts the feeder's reads of the cluster witnesses' notes."""

    reads = 0

    def recent_cosignatures(self, ledger: str, witnesses: Any) -> dict[str, list[bytes]]:
        self.reads += 1
        return super().recent_cosignatures(ledger, witnesses)


def made(tmp_path: Path, replication: ReplicationLedger) -> tuple[Home, TlogWitness]:
    witness = TlogWitness("witness.example/w1", secrets.token_bytes(32), {ORIGIN: LOG_KEY.encode()})
    return Home(tmp_path / "home", witness, replication, cluster_witnesses=KEYS), witness


def test_on_the_timeout_the_largest_checkpoint_with_the_most_cluster_lines_is_fed(
    tmp_path: Path, redis_client: Any
) -> None:
    """No majority at any size for witness_timeout_ms: fed before, the newest signed carried no
    cluster line (o24 F5, the epoch rule); now the largest with the most lines past the outside
    witness's size: two lines at 6 beat one at 7 and none at 8."""
    replication = ReplicationLedger(redis_client)
    home, witness = made(tmp_path, replication)
    try:
        at4 = home.grow(4)
        for w in CLUSTER_WITNESSES:
            replication.publish_cosignature(LEDGER, witness_node(w), 4, cluster_cosigned(at4, w))
        home.feeder.turn()
        assert witness.latest[ORIGIN][0] == 4
        at5, at6, at7 = home.grow(5), home.grow(6), home.grow(7)
        home.grow(8)
        # replica-0 cosigned 5 and 6 (one line each), replica-1 6 (two at 6), replica-2 nothing
        # past 4 but a note of 7 under replica-1's key, which counts for nothing but its own line.
        replication.publish_cosignature(
            LEDGER, witness_node(CLUSTER_WITNESSES[0]), 5, cluster_cosigned(at5, CLUSTER_WITNESSES[0])
        )
        replication.publish_cosignature(
            LEDGER, witness_node(CLUSTER_WITNESSES[0]), 6, cluster_cosigned(at6, CLUSTER_WITNESSES[0])
        )
        replication.publish_cosignature(
            LEDGER, witness_node(CLUSTER_WITNESSES[1]), 6, cluster_cosigned(at6, CLUSTER_WITNESSES[1])
        )
        replication.publish_cosignature(
            LEDGER, witness_node(CLUSTER_WITNESSES[1]), 7, cluster_cosigned(at7, CLUSTER_WITNESSES[1])
        )
        home.clock.now += 1
        home.feeder.turn()
        assert witness.latest[ORIGIN][0] == 6  # a majority (2 of 3) cosigned 6: fed at once
        at9 = home.grow(9)
        home.grow(10)
        replication.publish_cosignature(
            LEDGER, witness_node(CLUSTER_WITNESSES[2]), 9, cluster_cosigned(at9, CLUSTER_WITNESSES[2])
        )
        home.clock.now += 1
        home.feeder.turn()
        assert witness.latest[ORIGIN][0] == 6  # no majority past 6: it waits
        home.clock.now += 5
        home.feeder.turn()
        # Past the timeout: 7 and 9 have one line each, 10 none: the largest with the most is 9.
        assert witness.latest[ORIGIN][0] == 9
        quorum = replication.outside_cosignatures(LEDGER)[QUORUM_NOTE]
        assert verify_checkpoint(quorum, LOG_KEY, KEYS, 1).checkpoint.size == 9  # the epoch rule's line
        home.clock.now += 5
        home.feeder.turn()
        assert witness.latest[ORIGIN][0] == 10  # none past 9 with a line: the newest signed
    finally:
        home.store.close()


def test_junk_in_a_witness_s_recent_notes_counts_nowhere(tmp_path: Path, redis_client: Any) -> None:
    """A witness's Redis user writes its own list: garbage, a note of another root, a forged line
    of another witness and a size past 2**63 make no majority and stop nothing."""
    replication = ReplicationLedger(redis_client)
    home, witness = made(tmp_path, replication)
    try:
        home.grow(3)
        at4 = home.grow(4)
        replication.publish_cosignature(
            LEDGER, witness_node(CLUSTER_WITNESSES[0]), 4, cluster_cosigned(at4, CLUSTER_WITNESSES[0])
        )
        mallory = SignerKey(CLUSTER_WITNESSES[1].name, ALG_COSIGNATURE_V1, bytes(32))  # replica-1's name, not its key
        other_root = HomeSigner(CLUSTER, secrets.token_bytes(32)).sign(LEDGER, 4, bytes(32))
        huge = HomeSigner(CLUSTER, secrets.token_bytes(32)).sign(LEDGER, 2**63, bytes(32))
        recent = replication.cosig_recent_key(LEDGER, witness_node(CLUSTER_WITNESSES[2]))
        for junk in (
            b"garbage",
            cluster_cosigned(at4, mallory),
            cluster_cosigned(other_root, CLUSTER_WITNESSES[1]),
            huge.note,
        ):
            redis_client.lpush(recent, junk)
        home.clock.now += 1
        home.feeder.turn()
        assert ORIGIN not in witness.latest  # one true line at 4 is no majority: it waits
        redis_client.set(recent, "junk of another type")
        home.clock.now += 5
        home.feeder.turn()
        assert witness.latest[ORIGIN][0] == 4  # the timeout: the one with a line
        quorum = replication.outside_cosignatures(LEDGER)[QUORUM_NOTE]
        assert [s.name for s in parse_note(quorum).signatures if "/witness/" in s.name] == [CLUSTER_WITNESSES[0].name]
    finally:
        home.store.close()


def test_nothing_is_read_for_a_ledger_its_witnesses_cosigned_or_another_thread_serves(
    tmp_path: Path, redis_client: Any
) -> None:
    """Review r32 #4: each witness thread read every ledger's cluster notes every 0.2 s."""
    replication = CountingReplication(redis_client)
    home, witness = made(tmp_path, replication)
    try:
        at3 = home.grow(3)
        for w in CLUSTER_WITNESSES:
            replication.publish_cosignature(LEDGER, witness_node(w), 3, cluster_cosigned(at3, w))
        home.feeder.turn((witness.name,))
        assert witness.latest[ORIGIN][0] == 3 and replication.reads == 1
        home.feeder.turn(("witness.example/another",))  # a thread whose witnesses the ledger lists not
        home.clock.now += 1
        home.feeder.turn((witness.name,))  # cosigned the newest already
        assert replication.reads == 1
        home.clock.now += 300  # a quiet ledger's recosign (recosign_interval_ms), still no read
        home.feeder.turn((witness.name,))
        assert replication.reads == 1 and len(home.posted) == 2
    finally:
        home.store.close()


def test_on_the_timeout_a_majority_s_largest_checkpoint_beats_an_older_one_all_cosigned(
    tmp_path: Path, redis_client: Any
) -> None:
    """The outside witness was down while the cluster's checkpoint stood still: back, it is fed
    the largest a majority cosigned (7, two lines), not an older one with all three (5)."""
    replication = ReplicationLedger(redis_client)
    home, witness = made(tmp_path, replication)
    try:
        at4 = home.grow(4)
        for w in CLUSTER_WITNESSES:
            replication.publish_cosignature(LEDGER, witness_node(w), 4, cluster_cosigned(at4, w))
        home.feeder.turn()
        assert witness.latest[ORIGIN][0] == 4

        def down(body: bytes) -> Any:
            raise TimeoutError("no answer within the deadline")

        home.answer = down
        at5 = home.grow(5)
        at7 = home.grow(7)
        home.grow(9)
        for w in CLUSTER_WITNESSES:
            replication.publish_cosignature(LEDGER, witness_node(w), 5, cluster_cosigned(at5, w))
        for w in CLUSTER_WITNESSES[:2]:
            replication.publish_cosignature(LEDGER, witness_node(w), 7, cluster_cosigned(at7, w))
        home.clock.now += 1
        home.feeder.turn()
        home.answer = home.spec_witness
        home.clock.now += 6  # past witness_timeout_ms and the back-off
        home.feeder.turn()
        assert witness.latest[ORIGIN][0] == 7
    finally:
        home.store.close()
