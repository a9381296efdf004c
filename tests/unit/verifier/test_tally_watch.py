"""The verifier's look at the observers' tallies: observers never compared are an alert, and a look reads little.

Review r8, finding 1: a thief of one observer's key who signs only at heights no honest
observer signs at (honest ones sign at their store's head, a checkpoint's end) kept the look
"still counting" for ever, and each look read every observer's whole stream. Real Redis.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.redis_server import RedisServer, free_ports
from vledger.broker.signing import load_signing_key, new_signing_key, signing_key_paths
from vledger.broker.tallies import HISTORY_PAGE, Published, TallyBoard
from vledger.config.cluster import ClusterConfig, load_cluster
from vledger.node.tally_body import Snapshot
from vledger.tools.node_commands import ensure_cluster_keys
from vledger.verifier import tally_watch
from vledger.verifier.tally import STILL_COUNTING, Checked, ObserverTally, TallyReport, Verdict
from vledger.verifier.tally_uncompared import UncomparedClock
from vledger.verifier.tally_watch import KEY_LAG_S, LOOK_PAGE, LOOK_PAGES, TallyWatch, key_lag_s

LEDGER = "fund"
AFTER_S = 300.0  # the default tally_uncompared_ms
SNAPSHOT = Snapshot("observer-1", LEDGER, 0, b"\x01" * 32, {"type": "plain", "records": 1}, b"\x02" * 32, 0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def config(tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> ClusterConfig:
    monkeypatch.delenv("REDIS_URL", raising=False)
    nodes = [("ingest-1", "ingest"), ("observer-1", "observer"), ("observer-2", "observer"), ("verifier-1", "verifier")]
    lines = ["[cluster]", 'name = "test"', f'redis = "{redis_server.url}"', 'default_home = "ingest-1"', ""]
    ports = iter(free_ports(len(nodes) + 1))
    for name, role in nodes:
        lines += [f"[nodes.{name}]", f'role = "{role}"', 'host = "127.0.0.1"', f"port = {next(ports)}"]
        lines += [f"pub_port = {next(ports)}"] if role == "ingest" else ['follow = ["ingest-1"]'] * (role == "observer")
        lines.append("")
    path = tmp_path / "cluster.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    loaded = load_cluster(path)
    ensure_cluster_keys(loaded)
    return loaded


@pytest.fixture
def watched(config: ClusterConfig, redis_client: Any) -> tuple[TallyWatch, Clock]:
    clock = Clock()
    return TallyWatch(config, redis_client, clock=clock), clock


def publish(config: ClusterConfig, board: TallyBoard, observer: str, height: int, records: int | None = None) -> None:
    """``observer``'s key signs a count at ``height`` (``records`` other than an honest count's: a forged one)."""
    tally = {"type": "plain", "records": height + 1 if records is None else records}
    snapshot = dataclasses.replace(
        SNAPSHOT, observer=observer, height=height, head=bytes([height % 256]) * 32, tally=tally
    )
    key = load_signing_key(signing_key_paths(config.keys_dir, observer)[0])
    board.publish(LEDGER, observer, height, snapshot.body(), key.sign(snapshot.body()))


def test_a_thief_who_never_signs_at_the_honest_height_is_alerted_once_the_bound_passed(
    config: ClusterConfig, watched: tuple[TallyWatch, Clock]
) -> None:
    watch, clock = watched
    board = watch.board
    publish(config, board, "observer-2", 9)  # honest: at the head of a checkpoint of size 10
    publish(config, board, "observer-1", 8, records=104)  # stolen key: size - 2, never compared
    assert watch(LEDGER, 10) == []
    clock.now = AFTER_S - 1
    publish(config, board, "observer-1", 8, records=104)  # signed again: a fresh at_ms, no new height
    assert watch(LEDGER, 10) == []
    clock.now = AFTER_S + 1
    [alert] = watch(LEDGER, 10)
    assert (alert.what, alert.node, alert.height, alert.source) == (
        "tally_uncompared", "vledger-tally", 8, "observer-1, observer-2",
    )  # fmt: skip
    assert "observer-1 at 8, observer-2 at 9" in alert.detail
    # Claiming heights past the verified checkpoint is no progress: the alert stays.
    publish(config, board, "observer-1", 12, records=104)
    clock.now += 5
    assert watch(LEDGER, 10) != []


def test_honest_observers_catching_up_or_under_steady_writes_never_alert(
    config: ClusterConfig, watched: tuple[TallyWatch, Clock]
) -> None:
    watch, clock = watched
    board = watch.board
    publish(config, board, "observer-2", 100)
    for step, height in enumerate((10, 60, 100), start=1):  # observer-1 catches up within the bound
        publish(config, board, "observer-1", height)
        clock.now = step * 100.0
        assert watch(LEDGER, 101) == []
    for step in range(40):  # steady writes: each signs its own heights, which never meet
        publish(config, board, "observer-1", 200 + 2 * step)
        publish(config, board, "observer-2", 201 + 2 * step)
        clock.now += 100.0
        assert watch(LEDGER, 202 + 2 * step) == []
    publish(config, board, "observer-1", 300)  # then observer-2 stops short of the head: named
    clock.now += AFTER_S + 1
    assert watch(LEDGER, 301) == []  # the ledger grew: progress
    clock.now += AFTER_S + 1
    assert watch(LEDGER, 301) != []
    publish(config, board, "observer-2", 300)  # met at the head: compared, nothing more to say
    assert watch(LEDGER, 301) == []


def test_an_observer_climbing_slower_than_the_bound_below_a_quiet_head_is_named(
    config: ClusterConfig, watched: tuple[TallyWatch, Clock]
) -> None:
    """Review r9 (b): any observer's new height restarted the clock, so a thief signing one new
    height per bound below the honest head was never named; now only the ledger's growth (or the
    highest latest height's) is progress. An honest replay that slow is named too (PROTOCOL 10.6)."""
    watch, clock = watched
    board = watch.board
    publish(config, board, "observer-2", 999)
    alerts = []
    for step in range(4):
        publish(config, board, "observer-1", 100 + step, records=5)
        clock.now = step * (AFTER_S - 1)
        alerts.append(watch(LEDGER, 1000))
    assert alerts[:2] == [[], []] and all(len(a) == 1 for a in alerts[2:])
    assert "observer-1 at 103, observer-2 at 999" in alerts[-1][0].detail
    watch2 = TallyWatch(config, watch.client, clock=clock)  # no checkpoint verified: no height is progress
    for step in range(4):
        publish(config, board, "observer-1", 2000 + step, records=5)
        clock.now = 10_000 + step * (AFTER_S - 1)
        alerts.append(watch2(LEDGER, None))
    assert all(len(a) == 1 for a in alerts[-2:])


def test_a_thief_signing_the_honest_count_once_then_a_forged_one_lower_is_named(
    config: ClusterConfig, watched: tuple[TallyWatch, Clock]
) -> None:
    """Review r9 (a): the streams' history gave a common height (the honest count signed once at
    the head), so the observers were "compared" at every look while the forged latest never was."""
    watch, clock = watched
    board = watch.board
    publish(config, board, "observer-2", 9)
    publish(config, board, "observer-1", 9)  # the honest count at the head, once
    publish(config, board, "observer-1", 8, records=104)  # its latest: forged, lower
    assert watch(LEDGER, 10) == []
    clock.now = AFTER_S + 1
    [alert] = watch(LEDGER, 10)
    assert "observer-1 at 8, observer-2 at 9" in alert.detail


def test_a_thief_keeping_the_observer_s_genuine_history_and_forging_one_below_the_head_is_named(
    config: ClusterConfig, watched: tuple[TallyWatch, Clock]
) -> None:
    """outsider24 G7, as found: both observers had met at the quiet head (25) at earlier looks, the
    thief's stream keeps its genuine entries (at the head among them) and it makes a forged count at
    24, where observer-2 never signed, its latest. The history's common height 25 kept the verifier
    silent for good (no tally_uncompared, no tally_mismatch); the forged latest is named now."""
    watch, clock = watched
    board = watch.board
    for height in (20, 23, 25):
        publish(config, board, "observer-1", height)
    for height in (21, 25):
        publish(config, board, "observer-2", height)
    assert watch(LEDGER, 26) == []  # met at the head
    clock.now = 60.0
    assert watch(LEDGER, 26) == []
    publish(config, board, "observer-1", 24, records=5_025)  # the thief's latest: forged, below the head
    looks = []
    for step in range(1, 12):  # the verifier keeps looking at a quiet ledger
        clock.now = 60.0 + step * 30.0
        looks.append(watch(LEDGER, 26))
    # Silent while the bound (from the last look at which they met, 60 s) runs, then named.
    assert looks[:9] == [[]] * 9 and all(len(look) == 1 for look in looks[9:]), looks
    alert = looks[-1][0]
    assert (alert.what, alert.height, alert.source) == ("tally_uncompared", 24, "observer-1, observer-2")
    assert "observer-1 at 24, observer-2 at 25" in alert.detail


def test_a_thief_naming_no_entry_for_a_look_pauses_the_clock_never_restarts_it(
    config: ClusterConfig, watched: tuple[TallyWatch, Clock], redis_client: Any
) -> None:
    """Review r9 (c): fewer than two valid latest snapshots restarted the clock, so a thief whose
    latest named no entry for one look every few minutes was never named."""
    watch, clock = watched
    board = watch.board
    publish(config, board, "observer-2", 9)
    publish(config, board, "observer-1", 8, records=104)
    assert watch(LEDGER, 10) == []
    clock.now = AFTER_S - 5
    assert watch(LEDGER, 10) == []
    redis_client.set(board.latest_key(LEDGER, "observer-1"), b"0-1")  # names no entry: no snapshot
    clock.now += 1
    assert watch(LEDGER, 10) == []  # one valid: nothing to compare, no alert
    publish(config, board, "observer-1", 8, records=104)
    clock.now += 5
    [alert] = watch(LEDGER, 10)
    assert "observer-1 at 8, observer-2 at 9" in alert.detail


def test_a_look_reads_at_most_two_small_pages_of_each_stream_and_nothing_while_no_latest_changed(
    config: ClusterConfig, redis_client: Any, watched: tuple[TallyWatch, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    watch, _ = watched
    board = watch.board
    pipe = redis_client.pipeline(transaction=False)
    for height in range(3 * HISTORY_PAGE):  # three pages at even heights, none observer-2 signed at
        snapshot = dataclasses.replace(SNAPSHOT, height=2 * height)
        key = load_signing_key(signing_key_paths(config.keys_dir, "observer-1")[0])
        pipe.xadd(
            board.stream_key(LEDGER, "observer-1"),
            {"height": 2 * height, "body": snapshot.body(), "signature": key.sign(snapshot.body())},
        )
    pipe.execute()
    publish(config, board, "observer-1", 6 * HISTORY_PAGE)
    publish(config, board, "observer-2", 1)  # odd: on no page of observer-1's
    pages: list[str] = []
    counts: set[int] = set()
    history = board.history

    def counted(ledger: str, observer: str, before: str | None = None, count: int = HISTORY_PAGE) -> Any:
        pages.append(observer)
        counts.add(count)
        return history(ledger, observer, before, count)

    monkeypatch.setattr(board, "history", counted)
    assert watch(LEDGER, None) == []
    assert pages.count("observer-1") == LOOK_PAGES == 2
    assert counts == {LOOK_PAGE} and LOOK_PAGE <= 32  # small pages: their bytes are an observer's to choose
    pages.clear()
    assert watch(LEDGER, None) == []
    assert pages == []  # the same latest ids: the report of the last look stands
    publish(config, board, "observer-2", 3)
    assert watch(LEDGER, None) == []
    assert pages.count("observer-1") == LOOK_PAGES


def test_an_entry_whose_signature_fails_is_a_bad_signature_alert_naming_its_observer(
    config: ClusterConfig, watched: tuple[TallyWatch, Clock]
) -> None:
    """The look checked each entry's signature but only compared counts: an observer's stream
    carrying a count that no key of that observer signed (here observer-2's key, under
    observer-1's name) was left out of the comparison, and nothing was raised."""
    watch, clock = watched
    board = watch.board
    publish(config, board, "observer-2", 9)
    forged = dataclasses.replace(SNAPSHOT, height=9, head=bytes([9]) * 32, tally={"type": "plain", "records": 104})
    other = load_signing_key(signing_key_paths(config.keys_dir, "observer-2")[0])
    board.publish(LEDGER, "observer-1", 9, forged.body(), other.sign(forged.body()))
    assert watch(LEDGER, 10) == []  # not yet: a rotation this look's keys do not show yet may explain it
    clock.now += KEY_LAG_S
    [alert] = watch(LEDGER, 10)
    assert (alert.what, alert.node, alert.source, alert.ledger, alert.height) == (
        "bad_signature", "observer-1", "observer-1", LEDGER, 9,
    )  # fmt: skip
    assert alert.found == "sha256:" + hashlib.sha256(forged.body()).hexdigest()
    assert "does not verify" in alert.detail
    publish(config, board, "observer-1", 9)  # its own key signs the honest count: no alert any more
    assert watch(LEDGER, 10) == []


def test_an_observer_whose_key_files_were_deleted_is_left_out_not_raised_as_a_forger(
    config: ClusterConfig, watched: tuple[TallyWatch, Clock]
) -> None:
    """o21 F10: removing observer-2 (README: its key files deleted from every host) raised
    bad_signature ("no public signing key") on each of its ledgers until `repl forget` could run."""
    watch, clock = watched
    board = watch.board
    publish(config, board, "observer-1", 9)
    publish(config, board, "observer-2", 9)
    signing_key_paths(config.keys_dir, "observer-2")[1].unlink()
    for _ in range(3):
        clock.now += KEY_LAG_S + 60
        assert watch(LEDGER, 10) == []
    assert list(watch.keys()[0]) == ["observer-1"]


def test_a_junk_entry_replaced_before_each_look_is_raised_a_look_after_the_first(
    config: ClusterConfig, watched: tuple[TallyWatch, Clock]
) -> None:
    """Review r10 #3: the wait was each entry's, so whoever holds an observer's Redis password
    (no key) adding a new junk entry before each look started a new wait at each, and with no
    valid latest of that observer nothing else was raised either, for ever. The wait is the
    observer's, until its entries read all verify again."""
    watch, clock = watched
    board = watch.board
    publish(config, board, "observer-2", 9)
    other = load_signing_key(signing_key_paths(config.keys_dir, "observer-2")[0])
    raised: list[list[tuple[str, str, str]]] = []
    for look in range(3):
        forged = dataclasses.replace(
            SNAPSHOT, height=9, head=bytes([9]) * 32, tally={"type": "plain", "records": 100 + look}
        )
        board.publish(LEDGER, "observer-1", 9, forged.body(), other.sign(forged.body()))
        found = "sha256:" + hashlib.sha256(forged.body()).hexdigest()
        raised.append([(a.what, a.node, a.found) for a in watch(LEDGER, 10) if a.what == "bad_signature"])
        assert raised[-1] in ([], [("bad_signature", "observer-1", found)])
        clock.now += KEY_LAG_S
    assert [bool(r) for r in raised] == [False, True, True]
    publish(config, board, "observer-1", 9)  # its own key again: its wait ends, a later failure waits anew
    assert watch(LEDGER, 10) == []
    forged = dataclasses.replace(SNAPSHOT, height=10, head=bytes([10]) * 32, tally={"type": "plain", "records": 5})
    board.publish(LEDGER, "observer-1", 10, forged.body(), other.sign(forged.body()))
    clock.now += KEY_LAG_S
    assert [a for a in watch(LEDGER, 11) if a.what == "bad_signature"] == []


def test_a_latest_set_back_to_an_older_valid_entry_on_every_other_look_does_not_restart_the_wait(
    config: ClusterConfig, watched: tuple[TallyWatch, Clock]
) -> None:
    """Review 11 G: the wait stopped as soon as one look read the observer's entries all
    verifying, so its Redis user (no key) pointing its latest at an old valid entry on one look
    and at a junk entry on the next restarted the wait at every other look, and bad_signature was
    never raised. Only an entry verifying at or past the failing one ends the wait; an old junk
    entry shown again after the observer's next honest one gets none anew, a newer one does."""
    watch, clock = watched
    board = watch.board
    publish(config, board, "observer-2", 9)
    own, other = (
        load_signing_key(signing_key_paths(config.keys_dir, name)[0]) for name in ("observer-1", "observer-2")
    )
    honest = dataclasses.replace(SNAPSHOT, height=9, head=bytes([9]) * 32, tally={"type": "plain", "records": 10})
    valid = board.publish(LEDGER, "observer-1", 9, honest.body(), own.sign(honest.body()))
    forged = dataclasses.replace(honest, tally={"type": "plain", "records": 104})
    junk = board.publish(LEDGER, "observer-1", 9, forged.body(), other.sign(forged.body()))

    def look(latest: str) -> bool:
        watch.client.set(board.latest_key(LEDGER, "observer-1"), latest)
        raised = any(a.what == "bad_signature" for a in watch(LEDGER, 10))
        clock.now += 2
        return raised

    # Junk first seen at 0 s; keys read at 8 s, past KEY_LAG_S (5 s) after it, still reject it.
    assert [look(junk if i % 2 == 0 else valid) for i in range(8)] == [False] * 4 + [True, False, True, False]
    for observer in ("observer-2", "observer-1"):  # their next honest entries, past the junk one
        publish(config, board, observer, 10)
    assert watch(LEDGER, 11) == []
    assert look(junk)  # set back to the old junk entry: raised at once, its wait long over
    newer = board.publish(LEDGER, "observer-1", 11, forged.body(), other.sign(forged.body()))
    assert look(newer)  # junk past it, with no honest entry read in between: no wait anew
    for observer in ("observer-2", "observer-1"):
        publish(config, board, observer, 12)
    assert watch(LEDGER, 13) == []
    later = board.publish(LEDGER, "observer-1", 13, forged.body(), other.sign(forged.body()))
    assert not look(later)  # failing past an entry that verified: a rotation not shown yet, waits anew


def test_keys_read_again_for_a_failing_entry_leave_other_ledgers_reports_standing(
    config: ClusterConfig, watched: tuple[TallyWatch, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review r10 #3: a failing entry re-reads the keys at each look until confirmed, and the
    same keys read again threw away every ledger's report, so each ledger was read again."""
    watch, clock = watched
    board = watch.board
    for observer in ("observer-1", "observer-2"):
        snapshot = dataclasses.replace(SNAPSHOT, observer=observer, ledger="other", height=3)
        key = load_signing_key(signing_key_paths(config.keys_dir, observer)[0])
        board.publish("other", observer, 3, snapshot.body(), key.sign(snapshot.body()))
    publish(config, board, "observer-2", 9)
    forged = dataclasses.replace(SNAPSHOT, height=9, head=bytes([9]) * 32, tally={"type": "plain", "records": 104})
    other = load_signing_key(signing_key_paths(config.keys_dir, "observer-2")[0])
    board.publish(LEDGER, "observer-1", 9, forged.body(), other.sign(forged.body()))
    read: list[str] = []
    real = tally_watch.read_tallies

    def counted(board: TallyBoard, ledger: str, *args: Any, **kwargs: Any) -> Any:
        read.append(ledger)
        return real(board, ledger, *args, **kwargs)

    monkeypatch.setattr(tally_watch, "read_tallies", counted)
    assert watch("other", 4) == [] and watch(LEDGER, 10) == []
    for _ in range(3):  # looks a second apart: each re-reads the keys for the unconfirmed entry
        clock.now += 1.5
        keys_read = watch._keys_read()
        assert watch(LEDGER, 10) == [] and watch("other", 4) == []
        assert watch._keys_read() > keys_read
    assert read == ["other", LEDGER]  # the same keys and latest ids: neither report was read again


def test_an_honest_rotation_s_first_tallies_raise_nothing_though_the_look_s_keys_predate_it(
    config: ClusterConfig, redis_client: Any
) -> None:
    """outsider24 G4: `vledger key rotate observer-1` made the verifier raise bad_signature
    (operator-only) on every ledger within 3 s: observer-1 signed with its new key at once, and
    the look checked that with the keys it had read up to a minute before. The rotation is proven
    to the verifier only once the admin ledger's checkpoint covering it reaches Redis."""
    clock = Clock()
    clock.now = 1000.0
    proven: list[dict[str, Any]] = []  # the rotations the admin ledger's cache proves, as it grows
    watch = TallyWatch(config, redis_client, clock=clock, rotations=lambda: list(proven))
    publish(config, watch.board, "observer-1", 9)
    publish(config, watch.board, "observer-2", 9)
    assert watch(LEDGER, 10) == []  # the keys are read: no rotation yet
    new = new_signing_key()
    at_ms = 1_796_588_311_000
    rotated = dataclasses.replace(SNAPSHOT, height=10, head=bytes([10]) * 32, tally={"type": "plain", "records": 11})
    rotated = dataclasses.replace(rotated, at_ms=at_ms)
    watch.board.publish(LEDGER, "observer-1", 10, rotated.body(), new.sign(rotated.body()))
    clock.now += 2  # the next look, keys 2 s old; the admin checkpoint proving the rotation is not in Redis yet
    assert watch(LEDGER, 11) == []
    rotation = {"node": "observer-1", "curve": "", "sign": new.public.public_hex, "accepted": at_ms - 500}
    proven.append({**rotation, "until": at_ms + 20_000})
    clock.now += KEY_LAG_S  # a look later the rotation is proven: the entry verifies, nothing is raised
    assert watch(LEDGER, 11) == []
    clock.now += KEY_LAG_S
    assert watch(LEDGER, 11) == []


def test_a_rotation_proven_a_checkpoint_interval_later_raises_nothing_and_a_forgery_waits_as_long(
    config: ClusterConfig, redis_client: Any
) -> None:
    """Review r10 #6: the wait was a fixed 5 s, while a home may hold the admin ledger's checkpoint
    proving a rotation back for checkpoint_interval_ms: with 10 s an honest `key rotate` raised
    bad_signature. The wait grows by the interval, for forgeries too."""
    slow = dataclasses.replace(
        config, replication=dataclasses.replace(config.replication, checkpoint_interval_ms=10_000)
    )
    assert key_lag_s(slow) == KEY_LAG_S + 10 and key_lag_s(config) == KEY_LAG_S
    clock = Clock()
    clock.now = 1000.0
    proven: list[dict[str, Any]] = []
    watch = TallyWatch(slow, redis_client, clock=clock, rotations=lambda: list(proven))
    publish(slow, watch.board, "observer-1", 9)
    publish(slow, watch.board, "observer-2", 9)
    assert watch(LEDGER, 10) == []
    new = new_signing_key()
    at_ms = 1_796_588_311_000
    rotated = dataclasses.replace(SNAPSHOT, height=10, head=bytes([10]) * 32, tally={"type": "plain", "records": 11})
    rotated = dataclasses.replace(rotated, at_ms=at_ms)
    watch.board.publish(LEDGER, "observer-1", 10, rotated.body(), new.sign(rotated.body()))
    for _ in range(2):  # looks while the admin home has not signed the rotation's checkpoint yet
        clock.now += 5
        assert watch(LEDGER, 11) == []
    rotation = {"node": "observer-1", "curve": "", "sign": new.public.public_hex, "accepted": at_ms - 500}
    proven.append({**rotation, "until": at_ms + 20_000})  # a checkpoint interval after the record
    clock.now += 5
    assert watch(LEDGER, 11) == []
    other = load_signing_key(signing_key_paths(slow.keys_dir, "observer-2")[0])
    forged = dataclasses.replace(SNAPSHOT, height=11, head=bytes([11]) * 32, tally={"type": "plain", "records": 99})
    watch.board.publish(LEDGER, "observer-1", 11, forged.body(), other.sign(forged.body()))
    raised = []
    for _ in range(4):
        clock.now += 5
        raised.append([a.node for a in watch(LEDGER, 12) if a.what == "bad_signature"])
    assert raised == [[], [], [], ["observer-1"]]  # 15 s after it was first seen failing


def test_observers_met_only_when_every_configured_one_has_a_valid_latest_at_that_height() -> None:
    """Two at one height beside a third with no valid latest have not met (a thief pointing its
    latest at nothing would restart the clock): the alert names the third."""
    snapshot = dataclasses.replace(SNAPSHOT, height=9)

    def tally(observer: str) -> ObserverTally:
        published = Published("1-0", observer, 9, b"", b"")
        return ObserverTally(observer, Checked(published, dataclasses.replace(snapshot, observer=observer), None))

    observers = (tally("observer-1"), tally("observer-2"), ObserverTally("observer-3", None))
    compared = {t.observer: t.checked.snapshot for t in observers if t.checked and t.checked.snapshot}
    report = TallyReport(LEDGER, observers, Verdict(STILL_COUNTING), compared)  # as read: the two compared
    clock = UncomparedClock(AFTER_S)
    assert clock.look(report, 10, 0.0) is None
    alert = clock.look(report, 10, AFTER_S + 1)
    assert alert is not None and "observer-1 at 9, observer-2 at 9, observer-3 with no valid latest" in alert.detail
    met = TallyReport(LEDGER, observers[:2], Verdict(STILL_COUNTING), compared)
    assert clock.look(met, 10, AFTER_S + 2) is None and clock.look(report, 10, AFTER_S + 3) is None


def _rotated_observer(config: ClusterConfig, watch: TallyWatch, proven: list[dict[str, Any]]) -> None:
    """observer-1's key rotates (proven), and it signs its next tally with the new key."""
    new = new_signing_key()
    at_ms = 1_796_588_311_000
    rotated = dataclasses.replace(SNAPSHOT, height=10, head=bytes([10]) * 32, tally={"type": "plain", "records": 11})
    rotated = dataclasses.replace(rotated, at_ms=at_ms)
    rotation = {"node": "observer-1", "curve": "", "sign": new.public.public_hex, "accepted": at_ms - 500}
    proven.append({**rotation, "until": at_ms + 20_000})
    watch.board.publish(LEDGER, "observer-1", 10, rotated.body(), new.sign(rotated.body()))
    publish(config, watch.board, "observer-2", 10)


def _watching_a_rotation(config: ClusterConfig, redis_client: Any) -> tuple[TallyWatch, Clock, list[dict[str, Any]]]:
    """A watch that looked once at both observers' honest tallies, then observer-1's key rotated
    (see _rotated_observer); the rotations it reads are the list returned, changed in place."""
    clock = Clock()
    clock.now = 1000.0
    proven: list[dict[str, Any]] = []
    watch = TallyWatch(config, redis_client, clock=clock, rotations=lambda: list(proven))
    publish(config, watch.board, "observer-1", 9)
    publish(config, watch.board, "observer-2", 9)
    assert watch(LEDGER, 10) == []
    _rotated_observer(config, watch, proven)
    return watch, clock, proven


def test_an_admin_checkpoint_set_back_in_redis_does_not_make_a_rotated_observer_s_tallies_forged(
    config: ClusterConfig, redis_client: Any
) -> None:
    """outsider o8 J5: an older, genuine checkpoint of the admin ledger set back in Redis for 30 s
    proved fewer rotations; the verifier took that shorter view, checked observer-1's entries signed
    with its new key against its replaced one, and raised 9 bad_signature alerts."""
    watch, clock, proven = _watching_a_rotation(config, redis_client)
    clock.now += tally_watch.KEYS_FOR_S  # the keys read again: the rotation is proven
    assert watch(LEDGER, 11) == []
    kept = list(proven)
    proven.clear()  # Redis's checkpoint set back to one from before the rotation
    for _ in range(3):  # keys read again each time, past every wait: still the newest proven view
        clock.now += tally_watch.KEYS_FOR_S
        assert [a.what for a in watch(LEDGER, 11)] == []
    proven.extend(kept)
    assert watch(LEDGER, 11) == []


def test_a_bad_signature_raised_with_a_stale_key_view_is_cleared_once_the_entry_verifies(
    config: ClusterConfig, redis_client: Any
) -> None:
    """outsider o8 J5: those alerts stayed open after every node restarted, while `vledger tally`
    said signature OK: an entry raised as bad_signature that verifies with the keys proven now is
    cleared, by this run and by a verifier started later (from the open alert's fields)."""
    watch, clock, proven = _watching_a_rotation(config, redis_client)
    rotation = proven.pop()  # not proven yet to this verifier (a view from before it): raised
    raised = []
    for _ in range(4):
        clock.now += KEY_LAG_S
        raised += [a for a in watch(LEDGER, 11) if a.what == "bad_signature"]
    assert raised and {a.node for a in raised} == {"observer-1"}  # each look names it: checks.py raises it once
    assert watch.cleared(LEDGER, {}) == []  # still failing
    later = TallyWatch(config, redis_client, clock=clock, rotations=lambda: list(proven))  # a restart
    alert = {"detail": raised[0].detail, "found": raised[0].found}
    assert later.cleared(LEDGER, {"observer-1": alert}) == []
    proven.append(rotation)  # the rotation proven: the entry verifies
    clock.now += tally_watch.KEYS_FOR_S
    assert watch.cleared(LEDGER, {}) == ["observer-1"]
    assert later.cleared(LEDGER, {"observer-1": alert}) == ["observer-1"]
    # An alert whose entry's body is not the one it names is not cleared by another entry's verdict.
    forged = {"detail": raised[0].detail, "found": "sha256:" + "00" * 32}
    assert (
        TallyWatch(config, redis_client, clock=clock, rotations=lambda: list(proven)).cleared(
            LEDGER, {"observer-1": forged}
        )
        == []
    )
