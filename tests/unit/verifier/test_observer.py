"""The observer's watcher over a real store, without processes: pacing, flagging, restarts."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from vledger.broker.replication import Alert
from vledger.broker.signing import new_signing_key
from vledger.config.cluster import ObserverSettings
from vledger.config.settings import Limits
from vledger.node.key_rotation import ROTATION_KIND
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry
from vledger.node.rules.admin import ADMIN_LEDGER, admin_genesis_rules
from vledger.node.store import ChainStore
from vledger.tests.unit.verifier.chains import plan_election, write_election, write_entries
from vledger.verifier.observer import Observer
from vledger.verifier.tally import Snapshot

LEDGER = "poll"
LIMITS = Limits()
SIGNER = new_signing_key()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Board:
    """The tally streams in memory: what the observer published, and a Redis that can be down."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, int, bytes, bytes]] = []
        self.down = False

    def publish(self, ledger: str, observer: str, height: int, body: bytes, signature: bytes) -> str:
        if self.down:
            raise redis.exceptions.ConnectionError("down")
        self.entries.append((ledger, observer, height, body, signature))
        return f"{len(self.entries)}-0"

    def latest_ids(self, ledgers: list[str], observers: list[str]) -> dict[str, dict[str, str]]:
        named: dict[str, dict[str, str]] = {ledger: {} for ledger in ledgers}
        for number, (ledger, observer, _, _, _) in enumerate(self.entries, start=1):
            if ledger in named and observer in observers:
                named[ledger][observer] = f"{number}-0"
        return named

    def heights(self, ledger: str = LEDGER) -> list[int]:
        return [height for name, _, height, _, _ in self.entries if name == ledger]

    def last(self, ledger: str = LEDGER) -> Snapshot:
        body, signature = next((b, s) for name, _, _, b, s in reversed(self.entries) if name == ledger)
        SIGNER.public.verify(body, signature)
        return Snapshot.decode(body)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChainStore]:
    opened = ChainStore(tmp_path / "store", origin="ingest-1")
    yield opened
    opened.close()


def observer(
    store: ChainStore,
    board: Board,
    clock: Clock,
    alerts: list[Alert],
    interval_ms: int = 1000,
    *,
    settings: ObserverSettings | None = None,
    wall_ms: Callable[[], int] = now_ms,
    admin_current: Callable[[], bool] | None = None,
) -> Observer:
    """Observer ``observer-1`` of ``store`` (``settings``: a tally each ``interval_ms`` by default)."""
    settings = settings if settings is not None else ObserverSettings(tally_interval_ms=interval_ms)
    return Observer(
        "observer-1",
        store,
        board,  # type: ignore[arg-type]
        SIGNER,
        settings,
        alerts.append,
        clock=clock,
        wall_ms=wall_ms,
        admin_current=admin_current,
    )


def test_snapshots_come_at_most_once_an_interval_and_the_last_one_is_at_the_head(store: ChainStore) -> None:
    election = plan_election(LEDGER, 50, now_ms())
    board, clock, alerts = Board(), Clock(), []
    watcher = observer(store, board, clock, alerts)
    store.create_ledger(election.genesis(now_ms()))
    watcher.turn()
    assert board.heights() == [0]  # the first snapshot comes at once
    write_entries(store, election.phases[0][:10])
    watcher.turn()
    clock.now += 0.5
    write_entries(store, election.phases[0][10:20])
    watcher.turn()
    assert board.heights() == [0]  # the head moved, but the interval has not passed
    clock.now += 0.6
    watcher.turn()
    assert board.heights() == [0, 20]
    clock.now += 5
    watcher.turn()
    watcher.turn()
    assert board.heights() == [0, 20]  # quiet, at the head: nothing more
    assert board.last().height == 20 and board.last().observer == "observer-1"


def _published_at_head(store: ChainStore) -> tuple[Board, Clock, Observer, int]:
    """An observer of a small election in ``store``, which published its one snapshot, at the head."""
    board, clock = Board(), Clock()
    watcher = observer(store, board, clock, [])
    write_election(store, plan_election(LEDGER, 5, now_ms()), now_ms())
    watcher.turn()
    head = store.size(LEDGER) - 1
    assert board.heights() == [head]
    return board, clock, watcher, head


def test_a_latest_tally_another_wrote_in_its_stream_is_replaced_within_seconds(store: ChainStore) -> None:
    """outsider 20, F10: with the observer's Redis password alone, another observer's signed body
    added to its stream and named its latest: readers found it unsigned (bad_signature), and on a
    quiet ledger no new head ever replaced it."""
    board, clock, watcher, head = _published_at_head(store)
    forged = (LEDGER, "observer-1", head, b"another's body", b"another's signature")
    board.entries.append(forged)
    clock.now += 1.0
    watcher.turn()
    assert len(board.entries) == 3 and board.last().height == head  # its own again, signed
    board.entries.append(forged)
    clock.now += 1.0
    watcher.turn()
    assert len(board.entries) == 4  # not looked at again yet: once every latest_check_ms (5 s)
    clock.now += 5.0
    watcher.turn()
    assert len(board.entries) == 5 and board.last().height == head
    clock.now += 10.0
    watcher.turn()
    assert len(board.entries) == 5  # its own is the latest: nothing more


def test_a_refused_look_at_its_latest_tally_publishes_nothing_again_and_is_said_once(
    store: ChainStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Outsider 21, F7: the observers' ACL refused the read of their own latest id, which was
    taken for "Redis names none": every observer published every ledger again every 5 s, with a
    fresh at_ms, so a stuck one could never look stale."""
    board, clock, watcher, head = _published_at_head(store)

    def refused(ledgers: list[str], observers: list[str]) -> dict[str, dict[str, str]]:
        raise redis.exceptions.NoPermissionError("this user has no permissions to access one of the keys")

    monkeypatch.setattr(board, "latest_ids", refused)
    for _ in range(3):
        clock.now += 6.0
        watcher.turn()
    assert board.heights() == [head]
    said = [r for r in caplog.records if "refuses it a read of its own latest tally" in r.getMessage()]
    assert len(said) == 1


def test_a_redis_outage_delays_a_snapshot_and_loses_none(store: ChainStore) -> None:
    election = plan_election(LEDGER, 5, now_ms())
    board, clock, alerts = Board(), Clock(), []
    watcher = observer(store, board, clock, alerts)
    write_election(store, election, now_ms())
    board.down = True
    watcher.turn()
    assert board.entries == []
    board.down = False
    watcher.turn()
    assert board.entries == []  # the next try waits for the interval
    clock.now += 1.0
    watcher.turn()
    assert board.heights() == [store.size(LEDGER) - 1]


def test_a_new_key_signs_every_ledger_s_last_count_again_at_once(store: ChainStore) -> None:
    # PROTOCOL 16.6: the rotation states the heights the old key had tallied when the admin home
    # read them; a tally the old key signed since, at a larger height, does not count, and on a
    # quiet ledger it would stay the observer's latest for good.
    board, clock, watcher, head = _published_at_head(store)
    watcher.turn()
    assert board.heights() == [head]  # quiet: nothing more
    rotated = new_signing_key()
    watcher.signs_with(rotated)
    watcher.turn()  # not an interval after the last snapshot: the switch does not wait for one
    assert board.heights() == [head, head]
    _, _, _, body, signature = board.entries[-1]
    rotated.public.verify(body, signature)
    assert Snapshot.decode(body).height == head
    clock.now += 5
    watcher.turn()
    assert board.heights() == [head, head]  # once


def test_rule_breakers_are_alerted_with_their_code_and_not_counted(store: ChainStore) -> None:
    election = plan_election(LEDGER, 80, now_ms(), breakers=True)
    write_election(store, election, now_ms())
    board, clock, alerts = Board(), Clock(), []
    watcher = observer(store, board, clock, alerts)
    watcher.turn()
    assert [a.what for a in alerts] == election.breakers
    assert {(a.node, a.ledger, a.source) for a in alerts} == {("observer-1", LEDGER, "ingest-1")}
    for alert in alerts:
        record = store.get(LEDGER, alert.height)
        assert record is not None and alert.found == record.link.hex()
    tally = board.last().tally
    assert tally["counts"] == dict(election.counts) and tally["flagged"] == len(election.breakers)


def test_a_restarted_observer_rebuilds_from_its_store_and_publishes_only_at_its_head(
    store: ChainStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    election = plan_election(LEDGER, 200, now_ms(), breakers=True)
    write_election(store, election, now_ms())
    first_board = Board()
    observer(store, first_board, Clock(), []).turn()

    monkeypatch.setattr("vledger.verifier.observer.MAX_RECORDS_PER_TURN", 97)  # a replay over several turns
    board, clock, alerts = Board(), Clock(), []
    restarted = observer(store, board, clock, alerts)
    turns = 0
    while restarted.keeper.next_height(LEDGER) < store.size(LEDGER):
        restarted.turn()
        turns += 1
    assert turns > 2
    assert board.heights() == [store.size(LEDGER) - 1]  # nothing published half-way through its own store
    before, after = first_board.last(), board.last()
    assert after.same_count(before) and after.tally["counts"] == dict(election.counts)


def _admin_entry(kind: str, payload: dict[str, object], serial: int) -> Entry:
    content = Content(ADMIN_LEDGER, kind, {**payload, "via": ""}, "root", f"admin-{serial}", 0)
    return Entry.prepare(content, 0, LIMITS)


def test_a_record_written_without_a_grant_is_flagged_once_the_admin_ledger_is_current(store: ChainStore) -> None:
    """The store has no rules engine: the ungranted record gets past ingest, as an attacker's would."""
    admin_genesis = admin_genesis_rules().genesis_content(ADMIN_LEDGER, "root", "admin-0", 0)
    store.create_ledger(Entry.prepare(admin_genesis, 0, LIMITS))
    store.append(
        _admin_entry("account", {"account": "root", "op": "import", "role": "admin", "enabled": True, "keys": []}, 9)
    )
    election = plan_election(LEDGER, 5, now_ms())
    write_election(store, election, now_ms())  # written by the clerk while register is open
    store.append(_admin_entry("grant", {"ledger": LEDGER, "kind": "register", "account": "registrar"}, 1))
    smuggled = Content(LEDGER, "register", {"voter_id": "smuggled"}, election.author, "smuggled-1", 0)
    store.append(Entry.prepare(smuggled, 0, LIMITS))
    granted = Content(LEDGER, "register", {"voter_id": "granted"}, "registrar", "granted-1", 0)
    store.append(Entry.prepare(granted, 0, LIMITS))
    board, clock, alerts = Board(), Clock(), []
    current = [False]
    settings = ObserverSettings(tally_interval_ms=1000)
    # The smuggled record is accepted after the last admin record: judged once grant_wait_ms passed.
    watcher = observer(
        store,
        board,
        clock,
        alerts,
        settings=settings,
        wall_ms=lambda: now_ms() + settings.grant_wait_ms,
        admin_current=lambda: current[0],
    )
    watcher.turn()
    assert alerts == [] and board.heights() == [] and board.heights(ADMIN_LEDGER) == [2]  # admin only, for now
    current[0] = True
    watcher.turn()
    size = store.size(LEDGER)
    assert [(a.ledger, a.height, a.what) for a in alerts] == [(LEDGER, size - 2, "not_granted")]
    assert board.last().tally["flagged"] == 1 and board.last().tally["registered"] == election.registered + 1


def _grant_waiting_observer(store: ChainStore) -> tuple[Observer, Board, Clock, list[Alert], list[int]]:
    """An observer that waits up to 10 s for a grant on its way, on a wall clock the test moves
    (``wall[0]``, ms), its admin copy current."""
    board, clock, alerts = Board(), Clock(), []
    wall = [now_ms()]
    settings = ObserverSettings(tally_interval_ms=1000, grant_wait_ms=10_000)
    watcher = observer(
        store, board, clock, alerts, settings=settings, wall_ms=lambda: wall[0], admin_current=lambda: True
    )
    return watcher, board, clock, alerts, wall


def test_an_ungranted_record_accepted_far_ahead_is_flagged_once_grant_wait_ms_passed_since_first_seen(
    tmp_path: Path,
) -> None:
    """Review r19 3: the wait was measured from the record's ``accepted`` alone, which its home
    sets, unbounded. A (compromised, or clock-stepped) home that places an ungranted record
    stamped years ahead had every observer wait for it, with no not_granted alert and the
    ledger's count frozen before it, until its wall clock got there."""
    years_ms = 10 * 365 * 86_400_000
    accepted = [now_ms()]
    home = ChainStore(tmp_path / "home", origin="ingest-1", clock=lambda: accepted[0])
    try:
        home.create_ledger(
            Entry.prepare(admin_genesis_rules().genesis_content(ADMIN_LEDGER, "root", "admin-0", 0), 0, LIMITS)
        )
        root = {"account": "root", "op": "import", "role": "admin", "enabled": True, "keys": []}
        home.append(_admin_entry("account", root, 9))
        election = plan_election(LEDGER, 5, now_ms())
        write_election(home, election, now_ms())
        home.append(_admin_entry("grant", {"ledger": LEDGER, "kind": "register", "account": "registrar"}, 1))
        accepted[0] += years_ms
        smuggled = Content(LEDGER, "register", {"voter_id": "smuggled"}, election.author, "smuggled-1", 0)
        home.append(Entry.prepare(smuggled, 0, LIMITS))
        watcher, board, clock, alerts, wall = _grant_waiting_observer(home)
        watcher.turn()  # first seen: it may still wait for a grant on its way
        size = home.size(LEDGER)
        assert alerts == [] and board.heights() == []
        wall[0] += watcher.grant_wait_ms - 1
        clock.now += 2
        watcher.turn()
        assert alerts == [] and board.heights() == []  # its count waits before it: nothing signed
        wall[0] += 1
        clock.now += 2
        watcher.turn()
        assert [(a.ledger, a.height, a.what) for a in alerts] == [(LEDGER, size - 1, "not_granted")]
        assert board.heights()[-1] == size - 1 and board.last().tally["flagged"] == 1
    finally:
        home.close()


def test_a_record_granted_by_an_admin_record_still_on_its_way_waits_for_it_and_is_counted(
    store: ChainStore, tmp_path: Path
) -> None:
    """The admin home's held height in Redis says this observer's admin copy is current (its
    outbox wrote it before the home accepted the clerk's grant), yet the grant, accepted before
    the clerk's records, has not reached the observer: they were flagged not_granted and the
    election's tally signed without them, for good."""
    ticks = itertools.count(now_ms())  # every record of the home a millisecond after the one before
    home = ChainStore(tmp_path / "home", origin="ingest-1", clock=lambda: next(ticks))
    try:
        home.create_ledger(
            Entry.prepare(admin_genesis_rules().genesis_content(ADMIN_LEDGER, "root", "a-0", 0), 0, LIMITS)
        )
        root = {"account": "root", "op": "import", "role": "admin", "enabled": True, "keys": []}
        home.append(_admin_entry("account", root, 1))
        for serial, account in enumerate(("registrar", "clerk"), start=2):  # the clerk's grant comes last
            home.append(_admin_entry("grant", {"ledger": LEDGER, "kind": "register", "account": account}, serial))
        election = plan_election(LEDGER, 5, now_ms(), author="clerk")
        write_election(home, election, now_ms())
        admin, votes = list(home.range(ADMIN_LEDGER)), list(home.range(LEDGER))
    finally:
        home.close()
    assert admin[-1].accepted < votes[1].accepted  # the clerk held the grant when it registered voters
    store.append_records([*admin[:-1], *votes])
    watcher, board, clock, alerts, wall = _grant_waiting_observer(store)
    watcher.turn()
    assert alerts == [] and board.heights() == []  # nothing flagged, nothing of the election signed
    store.append_record(admin[-1])
    clock.now += 1
    watcher.turn()
    assert alerts == [] and board.heights() == [len(votes) - 1]
    assert board.last().tally["counts"] == dict(election.counts) and board.last().tally["flagged"] == 0
    # One the admin ledger never granted is flagged once grant_wait_ms passed since its accepted time.
    store.append(Entry.prepare(Content(LEDGER, "register", {"voter_id": "x"}, "mallory", "m-1", 0), 0, LIMITS))
    smuggled = next(store.range(LEDGER, len(votes)))
    clock.now += 1
    watcher.turn()
    assert alerts == [] and board.heights() == [len(votes) - 1]
    wall[0] = smuggled.accepted + 10_000
    clock.now += 1
    watcher.turn()
    assert [(a.height, a.what) for a in alerts] == [(len(votes), "not_granted")] and board.heights()[-1] == len(votes)


def test_a_key_rotation_by_no_admin_is_flagged_and_one_by_an_admin_counted(store: ChainStore) -> None:
    """ho32: a home that placed a ``checkpoint_key`` record by a writer (only ingest refused such
    puts) passed every checker. The observer's engine flags it not_admin_author (PROTOCOL 16.7),
    once ``grant_wait_ms`` has passed since it was accepted, as an ungranted record; an admin's passes."""
    admin_genesis = admin_genesis_rules().genesis_content(ADMIN_LEDGER, "root", "admin-0", 0)
    store.create_ledger(Entry.prepare(admin_genesis, 0, LIMITS))
    root = {"account": "root", "op": "import", "role": "admin", "enabled": True, "keys": []}
    store.append(_admin_entry("account", root, 1))
    writer = {"account": "w9", "op": "add", "role": "writer", "enabled": True, "keys": ["k"]}
    store.append(_admin_entry("account", writer, 2))
    rules = LedgerRules((ROTATION_KIND, "note"), 0, {})
    store.create_ledger(Entry.prepare(rules.genesis_content("keys", "root", "keys-0", 0), 0, LIMITS))
    for author in ("root", "w9"):  # the store has no rules engine: the writer's gets past it
        content = Content("keys", ROTATION_KIND, {"new": "a key"}, author, f"rotate-{author}", 0)
        store.append(Entry.prepare(content, 0, LIMITS))
    alerts: list[Alert] = []
    settings = ObserverSettings(tally_interval_ms=1000)
    watcher = observer(
        store,
        Board(),
        Clock(),
        alerts,
        settings=settings,
        wall_ms=lambda: now_ms() + settings.grant_wait_ms,
        admin_current=lambda: True,
    )
    watcher.turn()
    assert [(a.ledger, a.height, a.what) for a in alerts] == [("keys", 2, "not_admin_author")]
    assert "'w9'" in alerts[0].detail
