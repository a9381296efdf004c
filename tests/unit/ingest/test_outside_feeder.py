"""The witness feeder's protocol handling: a real home store and checkpoints, fed to the
tlog-witness written from the C2SP spec (tests/tlog_witness.py) in-process, and to answers
no witness should give (409 storms, 422, garbage, timeouts)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from vledger.broker.replication import Alert, ReplicationLedger
from vledger.config.cluster import ReplicationSettings
from vledger.config.settings import Limits
from vledger.ingest.cosignatures import KnownCosignatures
from vledger.ingest.outside_feeder import LOST_CHECK_SECONDS, WitnessFeeder
from vledger.node.checkpoint_log import SIGNED
from vledger.node.ledger import LedgerRules
from vledger.node.note import (
    ALG_COSIGNATURE_V1,
    Cosignature,
    Note,
    SignerKey,
    VerifierKey,
    add_checkpoint_request,
    cosign,
    parse_note,
    parse_verifier_key,
    verify_checkpoint,
)
from vledger.node.outside import QUORUM_NOTE, OutsideWitnesses, WitnessReply, check_witnessed, outside_kind
from vledger.node.record import Content, Entry
from vledger.node.store import ChainStore
from vledger.node.witness import HomeSigner, SignedCheckpoint, home_key
from vledger.tests.tlog_witness import TlogWitness
from vledger.tools.outside_quorum import forged_notes, witnessed

LIMITS = Limits()
T0 = 1_790_000_000_000
CLUSTER, LEDGER = "test", "votes"
ORIGIN = f"{CLUSTER}/{LEDGER}"
HOME = HomeSigner(CLUSTER, secrets.token_bytes(32))
LOG_KEY = home_key(CLUSTER, LEDGER, HOME.key(LEDGER).public_key)

# The cluster's own witnesses of the outside-feeder tests, and the note each publishes in Redis.
CLUSTER_WITNESSES = tuple(
    SignerKey(f"{CLUSTER}/witness/replica-{i}", ALG_COSIGNATURE_V1, bytes([i + 9]) * 32) for i in range(3)
)


def cluster_cosigned(checkpoint: SignedCheckpoint, by: SignerKey, at: int = 1_790_000_000) -> bytes:
    """``checkpoint``'s note with ``by``'s cosignature line, as a cluster witness publishes it."""
    text = parse_note(checkpoint.note).text
    return Note(text, (parse_note(checkpoint.note).signatures[0], cosign(text, by, at).note_signature())).encode()


def witness_node(by: SignerKey) -> str:
    return by.name.rpartition("/")[2]


def publish_cluster_cosignature(
    replication: ReplicationLedger, checkpoint: SignedCheckpoint, by: SignerKey, at: int = 1_790_000_000
) -> None:
    replication.publish_cosignature(LEDGER, witness_node(by), checkpoint.size, cluster_cosigned(checkpoint, by, at))


URL = "http://witness.invalid"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Home:
    """A home store whose genesis lists ``witness``; its feeder posts through ``post``."""

    def __init__(
        self,
        directory: Path,
        witness: TlogWitness,
        replication: ReplicationLedger | None = None,
        others: tuple[TlogWitness, ...] = (),
        quorum: int = 1,
        cluster_witnesses: tuple[VerifierKey, ...] = (),
    ) -> None:
        self.store = ChainStore(directory, origin="home", clock=lambda: T0)
        listed = [witness.vkey, *(other.vkey for other in others)]
        rules = {"checkpoint_key": LOG_KEY.encode(), "witnesses": listed, "quorum": quorum}
        self.store.create_ledger(
            Entry.prepare(LedgerRules(("note",), 0, rules).genesis_content(LEDGER, "a", "g", T0), 0, LIMITS)
        )
        self.witness = witness
        self.latest: dict[str, SignedCheckpoint] = {}
        self.alerts: list[Alert] = []
        self.posted: list[bytes] = []
        self.clock = Clock()
        self.answer = self.spec_witness
        self.others = {f"http://{other.name}": other for other in others}
        self.down: set[str] = set()  # the names of the other witnesses that do not answer
        self.feeder = WitnessFeeder(
            "ingest-1",
            self.store,
            lambda: self.latest,
            {witness.name: URL, **{other.name: url for url, other in self.others.items()}},
            replication,
            ReplicationSettings(),
            self.alerts.append,
            cluster=CLUSTER,
            post=self.post,
            clock=self.clock,
            witnesses=lambda: cluster_witnesses,
        )

    def spec_witness(self, body: bytes) -> WitnessReply:
        status, content_type, answer = self.witness.add_checkpoint(body)
        return WitnessReply(status, content_type.split(";")[0], answer)

    def post(self, url: str, body: bytes, timeout: float) -> WitnessReply:
        assert timeout == 5.0
        other = self.others.get(url)
        if other is not None:
            if other.name in self.down:
                raise TimeoutError(f"{other.name}: no whole answer within the deadline")
            status, content_type, answer = other.add_checkpoint(body)
            return WitnessReply(status, content_type.split(";")[0], answer)
        assert url == URL
        self.posted.append(body)
        return self.answer(body)

    def grow(self, to: int) -> SignedCheckpoint:
        for i in range(self.store.size(LEDGER), to):
            self.store.append(Entry.prepare(Content(LEDGER, "note", {"n": i}, "Zoe.1", f"r-{i}", T0 + i), 0, LIMITS))
        checkpoint = HOME.sign(LEDGER, to, self.store.root(LEDGER, to))
        self.store.checkpoints.keep(LEDGER, SIGNED, to, checkpoint.root, checkpoint.note)
        self.latest[LEDGER] = checkpoint
        return checkpoint

    def witness_key(self) -> VerifierKey:
        return parse_verifier_key(self.witness.vkey)

    def kept(self) -> list[int]:
        return [c.size for c in self.store.checkpoints.all(LEDGER, outside_kind(self.witness.name))]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    witness = TlogWitness("witness.example/w1", secrets.token_bytes(32), {ORIGIN: LOG_KEY.encode()})
    made = Home(tmp_path / "home", witness)
    yield made
    made.store.close()


def test_the_home_feeds_each_checkpoint_with_a_proof_from_the_last_cosigned(home: Home) -> None:
    home.grow(3)
    home.feeder.turn()
    assert home.posted[-1].startswith(b"old 0\n\n") and home.kept() == [3]
    home.feeder.turn()  # nothing newer: nothing sent
    assert len(home.posted) == 1
    home.grow(11)
    home.feeder.turn()
    assert home.posted[-1].startswith(b"old 3\n") and home.kept() == [3, 11]
    assert home.witness.latest[ORIGIN] == (11, home.store.root(LEDGER, 11)) and home.witness.answers == [200, 200]
    kept = home.store.checkpoints.latest(LEDGER, outside_kind(home.witness.name))
    assert kept is not None
    assert verify_checkpoint(kept.note, LOG_KEY, (home.witness_key(),), 1).checkpoint.size == 11
    assert home.feeder.counts.cosigned == 2 and not home.alerts


def test_a_genesis_naming_an_outside_witness_as_the_cluster_s_own_is_fed_to_no_witness(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """fix19c left the feeder out: it fed, and kept under ``outside:<name>``, a witness that a
    genesis (made before the home refused it, 13.9) names ``<cluster>/witness/...``, whose lines
    count by name as that cluster witness's. It uses none of that genesis's outside witnesses."""
    posing = TlogWitness(f"{CLUSTER}/witness/replica-1", secrets.token_bytes(32), {ORIGIN: LOG_KEY.encode()})
    home = Home(tmp_path / "home", posing)
    try:
        home.grow(3)
        home.feeder.turn()
        assert home.posted == [] and home.kept() == [] and posing.answers == []
        assert "lists no usable outside witnesses" in caplog.text and posing.name in caplog.text
    finally:
        home.store.close()


def test_a_quiet_ledger_is_fed_again_after_the_interval_its_first_cosignature_kept(
    tmp_path: Path, redis_client: Any
) -> None:
    # PROTOCOL 13.9: the home asks its outside witnesses to cosign a quiet ledger's checkpoint
    # again (old = its size, no proof) every recosign_interval_ms; the note published keeps the
    # witness's first line (since_ms) beside the newest (fresh_ms), the store the first.
    at = [1_800_000_000.0]
    witness = TlogWitness("witness.example/w1", secrets.token_bytes(32), {ORIGIN: LOG_KEY.encode()}, lambda: at[0])
    replication = ReplicationLedger(redis_client)
    home = Home(tmp_path / "home", witness, replication)
    try:
        home.grow(3)
        home.feeder.turn()
        home.clock.now += 299
        at[0] += 299
        home.feeder.turn()
        assert len(home.posted) == 1  # not yet
        for later in (1_800_000_301, 1_800_000_700):
            home.clock.now += later - at[0]
            at[0] = later
            home.feeder.turn()
            assert home.posted[-1].startswith(b"old 3\n\n")  # the same size, no proof
            note = replication.outside_cosignatures(LEDGER)[witness.name]
            times = [Cosignature.from_note_signature(s).timestamp for s in parse_note(note).signatures[1:]]
            assert times == [1_800_000_000, later]
            assert verify_checkpoint(note, LOG_KEY, (home.witness_key(),), 1).checkpoint.size == 3
        assert len(home.posted) == 3 and witness.answers == [200, 200, 200] and home.kept() == [3]
        home.grow(5)  # it grows: fed at once, from size 3
        home.feeder.turn()
        assert home.posted[-1].startswith(b"old 3\n") and home.kept() == [3, 5] and not home.alerts
    finally:
        home.store.close()


def test_a_409_is_answered_from_the_size_the_witness_names(home: Home) -> None:
    first = home.grow(4)
    status, _, _ = home.witness.add_checkpoint(add_checkpoint_request(0, [], first.note).encode())
    assert status == 200  # someone else fed it size 4: the home does not know
    home.grow(9)
    home.feeder.turn()
    assert [body.split(b"\n", 1)[0] for body in home.posted] == [b"old 0", b"old 4"]
    assert home.witness.answers == [200, 409, 200] and home.kept() == [9]
    assert home.feeder.counts.conflicts == 1 and home.feeder.counts.cosigned == 1


def test_a_witness_fed_a_fork_refuses_and_the_home_names_it(home: Home) -> None:
    forked = HOME.sign(LEDGER, 5, bytes(32))  # the home's key, a tree this store never had
    assert home.witness.add_checkpoint(add_checkpoint_request(0, [], forked.note).encode())[0] == 200
    home.grow(8)
    home.feeder.turn()
    assert home.witness.answers == [200, 409, 422] and home.kept() == []
    [alert] = home.alerts
    assert (alert.what, alert.source, alert.node) == ("witness_refused", "witness.example/w1", "ingest-1")
    assert alert.height == 7
    assert "422" in alert.detail
    home.clock.now += 1000
    home.feeder.turn()  # tried again later, still refused: one alert per ledger, witness and status
    assert home.witness.answers[-1] == 422 and len(home.alerts) == 1


def test_a_witness_ahead_of_the_home_is_named(home: Home) -> None:
    ahead = HOME.sign(LEDGER, 50, bytes(32))  # a checkpoint of this key larger than the store
    assert home.witness.add_checkpoint(add_checkpoint_request(0, [], ahead.note).encode())[0] == 200
    home.grow(6)
    home.feeder.turn()
    assert home.witness.answers == [200, 409] and home.kept() == []
    [alert] = home.alerts
    assert alert.what == "witness_refused" and "cosigned size 50" in alert.detail


@pytest.mark.parametrize(
    "answer",
    [
        WitnessReply(200, "text/plain", b"not a signature line\n"),
        WitnessReply(200, "text/plain", b""),
        WitnessReply(409, "text/plain", b"3\n"),
        WitnessReply(409, "text/x.tlog.size", b"three\n"),
        None,  # unreachable: the post raises
    ],
)
def test_garbage_or_silence_backs_off_and_is_never_kept(home: Home, answer: WitnessReply | None) -> None:
    def reply(body: bytes) -> WitnessReply:
        if answer is None:
            raise TimeoutError("timed out")
        return answer

    home.answer = reply
    home.grow(3)
    home.feeder.turn()
    assert len(home.posted) == 1 and home.feeder.counts.failed == 1 and home.kept() == []
    home.feeder.turn()  # within the backoff: not sent again
    assert len(home.posted) == 1
    assert not home.alerts  # one failure is no news
    home.clock.now += 1.5
    home.feeder.turn()
    assert len(home.posted) == 2 and home.feeder.counts.failed == 2
    [alert] = home.alerts  # two in a row: the witness is named
    assert (alert.what, alert.source, alert.ledger, alert.height) == (
        "witness_unreachable",
        home.witness.name,
        LEDGER,
        2,
    )
    home.clock.now += 1.5  # the wait doubled to 2 s
    home.feeder.turn()
    assert len(home.posted) == 2
    home.answer = home.spec_witness
    home.clock.now += 1
    home.feeder.turn()
    assert home.kept() == [3] and len(home.alerts) == 1


def test_a_cosignature_by_another_key_under_the_witness_name_is_not_kept(home: Home) -> None:
    impostor = TlogWitness(home.witness.name, secrets.token_bytes(32), {ORIGIN: LOG_KEY.encode()})

    def reply(body: bytes) -> WitnessReply:
        status, content_type, answer = impostor.add_checkpoint(body)
        return WitnessReply(status, content_type.split(";")[0], answer)

    home.answer = reply
    home.grow(3)
    home.feeder.turn()
    assert impostor.answers == [200] and home.kept() == [] and home.feeder.counts.failed == 1


def test_an_unreachable_witness_is_named_until_it_cosigns_again_and_the_others_go_on(
    tmp_path: Path, redis_client: Any
) -> None:
    # outsider26 I1: a witness that does not answer got no alert; the alert's key is the ledger's
    # (node|ledger|what), so it stays open while any of the ledger's witnesses is unreachable.
    def made(name: str) -> TlogWitness:
        return TlogWitness(f"witness.example/{name}", secrets.token_bytes(32), {ORIGIN: LOG_KEY.encode()})

    honest, second, third = made("w1"), made("w2"), made("w3")
    replication = ReplicationLedger(redis_client)
    home = Home(tmp_path / "home", honest, replication, (second, third))
    key = f"ingest-1|{LEDGER}|witness_unreachable"

    def raised(alert: Alert) -> None:  # as the node does: into Redis
        home.alerts.append(alert)
        replication.alert(alert)

    home.feeder.on_alert = raised
    try:
        home.down = {second.name, third.name}
        home.grow(3)
        home.feeder.turn()
        home.clock.now += 1.5
        home.grow(4)
        home.feeder.turn()
        assert honest.latest[ORIGIN][0] == 4 and home.kept() == [3, 4]  # the honest one goes on
        assert {a.source for a in home.alerts} == {second.name, third.name}
        assert replication.open_alerts()[key]["source"] in (second.name, third.name)
        home.down = {third.name}
        home.clock.now += 2.5
        home.feeder.turn()
        assert second.latest[ORIGIN][0] == 4
        assert replication.open_alerts()[key]["source"] == third.name  # still one down: named
        home.feeder.stop()
        # A new run of the home takes the open alert as its own, and closes it once w3 cosigns.
        home.feeder = WitnessFeeder(
            "ingest-1", home.store, lambda: home.latest, home.feeder.urls, replication, ReplicationSettings(),
            raised, cluster=CLUSTER, post=home.post, clock=home.clock,
        )  # fmt: skip
        home.down = set()
        home.feeder.start()  # its threads, one per witness
        deadline = time.monotonic() + 10
        while key in replication.open_alerts() and time.monotonic() < deadline:
            time.sleep(0.05)
        home.feeder.stop()
        assert third.latest[ORIGIN][0] == 4 and key not in replication.open_alerts()
    finally:
        home.store.close()


class HeldReplication(ReplicationLedger):
    """Real Redis; the feeder thread named ``held`` waits in its first publish until let go, and
    the first publish from any other thread finds Redis unavailable."""

    def __init__(self, client: Any, held: str) -> None:
        super().__init__(client)
        self.held = held
        self.waiting, self.go = threading.Event(), threading.Event()
        self.refused_once = False

    def publish_outside_cosignature(self, ledger: str, witness: str, size: int, note: bytes) -> None:
        if threading.current_thread().name == self.held and not self.waiting.is_set():
            self.waiting.set()
            assert self.go.wait(10)
        elif threading.current_thread().name != self.held and not self.refused_once:
            self.refused_once = True
            raise redis.exceptions.ConnectionError("Redis restarting")
        super().publish_outside_cosignature(ledger, witness, size, note)


def test_a_witness_thread_never_sets_another_witness_cosignature_back(tmp_path: Path, redis_client: Any) -> None:
    # review r12, 4: every witness's thread published every witness's pending cosignature, so a
    # thread holding an older note of w1 could HSET it after w1's own thread published a newer.
    def made(name: str) -> TlogWitness:
        return TlogWitness(f"witness.example/{name}", secrets.token_bytes(32), {ORIGIN: LOG_KEY.encode()})

    first, second = made("w1"), made("w2")
    replication = HeldReplication(redis_client, held="w2's thread")
    home = Home(tmp_path / "home", first, replication, (second,))
    try:
        home.grow(3)
        home.feeder.turn((first.name,))  # cosigned at 3, not published: Redis unavailable
        assert first.name not in replication.outside_cosignatures(LEDGER)
        turn = threading.Thread(target=home.feeder.turn, args=((second.name,),), name="w2's thread")
        turn.start()
        assert replication.waiting.wait(10)  # w2's thread publishing
        home.grow(5)
        home.feeder.turn((first.name,))  # w1's thread cosigns 5 and publishes it
        replication.go.set()
        turn.join(10)
        assert not turn.is_alive()
        published = replication.outside_cosignatures(LEDGER)
        sizes = {
            witness.name: verify_checkpoint(
                published[witness.name], LOG_KEY, (parse_verifier_key(witness.vkey),), 1
            ).checkpoint.size
            for witness in (first, second)
        }
        assert sizes == {first.name: 5, second.name: 3}
    finally:
        home.store.close()


def test_an_outside_witness_whose_clock_runs_ahead_is_logged_once_until_it_is_right(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Outsiders o13 F8, o14: a witness a day ahead had its lines kept and served, and no log said
    so. The verifier reads only the cluster's own witnesses' notes, so the home says it of an
    outside one: once while it stays ahead (it cosigns each checkpoint), again only after it was right."""
    skew = [86_400.0]
    witness = TlogWitness(
        "witness.example/w1", secrets.token_bytes(32), {ORIGIN: LOG_KEY.encode()}, lambda: time.time() + skew[0]
    )
    home = Home(tmp_path / "home", witness)
    try:
        with caplog.at_level("INFO", logger="vledger.ingest.outside_feeder"):
            for size in (3, 5):
                home.grow(size)
                home.feeder.turn()
            ahead = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
            assert len(ahead) == 1 and "witness.example/w1 cosigned votes dated" in ahead[0], ahead
            assert "s ahead of this host's clock" in ahead[0]
            assert int(ahead[0].split(" s ahead")[0].rsplit(" ", 1)[1]) in range(86_390, 86_401)
            skew[0] = 0.0
            home.grow(7)
            home.feeder.turn()
            assert any("dated within the clock skew again" in r.getMessage() for r in caplog.records)
        assert home.kept() == [3, 5, 7]  # kept all the same: counting is freshness's business, not this log's
    finally:
        home.store.close()


def test_a_lagging_witness_leaves_the_checkpoint_its_quorum_cosigned_readable(
    tmp_path: Path, redis_client: Any
) -> None:
    # Outsider o20 F1: with 2 of 2, once w2 lagged each witness's newest note carried a size the
    # other had not cosigned, and every reader said no quorum ever cosigned: the home's store held
    # sizes both cosigned, in separate rows. The home now publishes (and serves) the quorum's note.
    def made(name: str) -> TlogWitness:
        return TlogWitness(f"witness.example/{name}", secrets.token_bytes(32), {ORIGIN: LOG_KEY.encode()})

    first, second = made("w1"), made("w2")
    replication = ReplicationLedger(redis_client)
    home = Home(tmp_path / "home", first, replication, (second,), quorum=2)
    outside = OutsideWitnesses((parse_verifier_key(first.vkey), parse_verifier_key(second.vkey)), 2)
    known = KnownCosignatures(CLUSTER, home.store, None, {}, lambda ledger: LOG_KEY)

    def quorum_sizes() -> tuple[int | None, int | None]:
        """The quorum's size as a reader of Redis finds it, and as the home's checkpoint command does."""
        seen = witnessed(replication.outside_cosignatures(LEDGER).values(), [LOG_KEY], ORIGIN, outside).checkpoint
        names = {first.name, second.name}
        served = [g for g in known.gathered(LEDGER, home.latest[LEDGER].note) if names <= set(g.witnesses)]
        return (seen.checkpoint.size if seen is not None else None, served[0].checkpoint.size if served else None)

    try:
        home.grow(3)
        home.feeder.turn()
        assert quorum_sizes() == (3, 3)
        home.down = {second.name}
        home.grow(7)
        home.feeder.turn()
        home.grow(9)
        home.clock.now += 5
        home.feeder.turn()
        newest = replication.outside_cosignatures(LEDGER)
        assert check_witnessed(newest[QUORUM_NOTE], LOG_KEY, outside).checkpoint.size == 3
        assert verify_checkpoint(newest[first.name], LOG_KEY, outside.keys, 1).checkpoint.size == 9
        assert quorum_sizes() == (3, 3)  # the quorum's size stays while w2 lags
        home.down = set()
        home.clock.now += 5
        home.feeder.turn()
        assert quorum_sizes() == (9, 9)
        assert forged_notes(replication.outside_cosignatures(LEDGER), outside, ORIGIN) == []
        # Outsider o20 F3: Redis lost its data; the home sets its notes again at its next look.
        published = replication.outside_cosignatures(LEDGER)
        redis_client.flushdb()
        home.clock.now += LOST_CHECK_SECONDS
        home.feeder.turn()
        assert replication.outside_cosignatures(LEDGER) == published
    finally:
        home.store.close()


def test_a_slower_outside_witness_s_quorum_note_carries_the_cluster_witnesses_lines(
    tmp_path: Path, redis_client: Any
) -> None:
    """Outsider o24 F5: an outside witness 2 s slower than the cluster's cosigned a size whose
    cluster lines were gone from Redis by then (each witness keeps only its newest note), so the
    served checkpoint of a ledger being written carried no cluster line: `receipt verify
    --anchors` said no_quorum. The home feeds what a majority of the cluster's witnesses cosigned
    and keeps their lines in the outside notes: every quorum note verifies with the anchors'
    majority, while the ledger grows at every answer."""
    replication = ReplicationLedger(redis_client)
    cluster = list(CLUSTER_WITNESSES)
    keys = tuple(w.verifier() for w in cluster)
    witness = TlogWitness("witness.example/w1", secrets.token_bytes(32), {ORIGIN: LOG_KEY.encode()})
    home = Home(tmp_path / "home", witness, replication, cluster_witnesses=keys)
    outside = OutsideWitnesses((parse_verifier_key(witness.vkey),), 1)
    by_node = {witness_node(w): w.verifier() for w in cluster}
    known = KnownCosignatures(CLUSTER, home.store, replication, by_node, lambda ledger: LOG_KEY)

    def cosigned_by_the_cluster(checkpoint: SignedCheckpoint, witnesses: list[SignerKey]) -> None:
        for i, w in enumerate(witnesses):
            publish_cluster_cosignature(replication, checkpoint, w, 1_790_000_000 + i)

    def slow(body: bytes) -> WitnessReply:
        # While the outside witness takes its time, the ledger grows and the cluster cosigns on.
        cosigned_by_the_cluster(home.grow(home.store.size(LEDGER) + 2), cluster)
        return home.spec_witness(body)

    def anchored(note: bytes) -> int:
        """The size a reader with the anchors (a majority of the cluster's witnesses) and the
        genesis' outside quorum takes ``note`` at (raises as it would refuse it)."""
        check_witnessed(note, LOG_KEY, outside)
        return verify_checkpoint(note, LOG_KEY, keys, 2).checkpoint.size

    home.answer = slow
    try:
        cosigned_by_the_cluster(home.grow(3), cluster)
        sizes = []
        for _ in range(4):
            home.clock.now += 1
            home.feeder.turn()
            quorum = replication.outside_cosignatures(LEDGER)[QUORUM_NOTE]
            sizes.append(anchored(quorum))
            served = [g for g in known.gathered(LEDGER, home.latest[LEDGER].note) if witness.name in g.witnesses]
            assert anchored(served[0].note) == sizes[-1]
        assert sizes == [3, 5, 7, 9] and home.store.size(LEDGER) == 11
        # Only one of the three cosigned the newest: no majority there, the last one with it is fed.
        cosigned_by_the_cluster(home.grow(13), cluster[:1])
        home.answer = home.spec_witness
        home.clock.now += 1
        home.feeder.turn()
        assert witness.latest[ORIGIN][0] == 11 and anchored(replication.outside_cosignatures(LEDGER)[QUORUM_NOTE]) == 11
        # The cluster's witnesses cosign nothing newer for witness_timeout_ms: the newest signed is fed.
        home.clock.now += 5
        home.feeder.turn()
        assert witness.latest[ORIGIN][0] == 13 and not home.alerts
    finally:
        home.store.close()
