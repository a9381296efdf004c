"""An insider who writes Redis against the admin ledger's copy there (reviewer r13 #1, #3, #8).

The admin ledger's home and a second node in one process, with a real redis-server: the writes an
attacker with the admin Redis password makes are plain Redis commands, and each interleaving that
a loaded host gives now and then is scripted (a reload between two steps of a command).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from vledger.broker import accounts as accounts_module
from vledger.broker.accounts import AccountCache, AccountRegistry
from vledger.broker.admin_copy import PEER_RETRY, PeerCopies, PeerCopy, SignedAdminSource
from vledger.broker.keys import new_keypair
from vledger.broker.redis_keys import group_key, ledger_key
from vledger.broker.replication import Alert
from vledger.ingest import accounts as ingest_accounts
from vledger.ingest import admin_ledger as admin_ledger_module
from vledger.ingest import admin_peers as admin_peers_module
from vledger.ingest.accounts import RegistryAdmin
from vledger.ingest.admin_ledger import ADMIN_CACHE_CONFLICT, BYTES_CHECK_SECONDS, AdminLedger, StoreAdminSource
from vledger.ingest.store_sources import Sources
from vledger.node.admin_copy import proven_admin_records
from vledger.node.errors import NodeUnavailableError, NoSuchLedgerError, NotHomeError, VledgerError
from vledger.node.rules.admin import ADMIN_LEDGER
from vledger.node.rules.engine import RulesEngine
from vledger.node.store import ChainStore
from vledger.node.tree import Frontier, leaf_hash
from vledger.node.wire import Args
from vledger.node.witness import HomeSigner
from vledger.tests.integration.cluster import wait_until

from .test_admin_ledger import ADMIN_KEY, CLUSTER, HOME_SEED, ROOT, publish_admin_checkpoint

NOTE = ledger_key("vledger", ADMIN_LEDGER, "checkpoint")
DEADLINE = 20.0


class Home:
    """The admin ledger's home (its store, its cache, its admin commands), alerts recorded."""

    def __init__(self, redis_client: Any, directory: Path, nodes: list[str]) -> None:
        self.registry = AccountRegistry(redis_client)
        self.registry.bootstrap_admin("root", new_keypair().public)
        self.store = ChainStore(directory / "ingest-1", origin="ingest-1", domain=RulesEngine())
        self.unbacked: list[list[str]] = []
        self.cache = AccountCache(
            self.registry, "ingest-1", admin=StoreAdminSource(self.store), on_unbacked=self.unbacked.append
        ).start()
        self.alerts: list[Alert] = []
        self.now = [0.0]  # the home's clock
        self.ledger = AdminLedger(
            self.store, self.registry, admin_key=ADMIN_KEY, on_alert=self.alerts.append, clock=lambda: self.now[0]
        )
        self.admin = RegistryAdmin(self.registry, self.cache, nodes, 2000, self.ledger)

    def apply(self, command: str, **args: Any) -> dict[str, Any]:
        return self.admin.apply(command, Args(args), ROOT)

    def close(self) -> None:
        self.cache.stop()
        self.store.close()


@pytest.fixture
def home(redis_client: Any, tmp_path: Path) -> Iterator[Home]:
    made = Home(redis_client, tmp_path, ["ingest-1", "ingest-2"])
    yield made
    made.close()


def _other(home: Home, redis_client: Any, **kwargs: Any) -> AccountCache:
    """Another node (ingest-2), proving Redis's copy with the home's checkpoint, started."""
    source = SignedAdminSource(redis_client, ADMIN_KEY)
    return AccountCache(home.registry, "ingest-2", poll_interval=0.1, admin=source, **kwargs).start()


def test_a_node_meeting_records_and_no_checkpoint_first_admits_no_account_of_redis(
    home: Home, redis_client: Any
) -> None:
    """r13 #1: with the checkpoint deleted (in a loop), a node that had proven nothing (restarted)
    took Redis's accounts as they are: a forged admin got in. Now Redis's accounts count only
    while the copy is empty (a brand-new cluster)."""
    home.apply("account.add", account="writer", role="writer")
    writer = new_keypair().public
    home.apply("key.add", account="writer", key=writer)
    mallory = new_keypair().public
    redis_client.hset(group_key("vledger", "accounts", "keys"), mallory, "root")  # a forged key of the real admin
    redis_client.delete(NOTE)
    other = _other(home, redis_client)
    try:
        assert other.lookup(mallory) is None
        assert other.lookup(writer) is None and other.snapshot.accounts == {}  # nothing proven: nobody
        publish_admin_checkpoint(redis_client, home.store)  # the home sets it again
        other.refresh()
        assert other.lookup(writer) is not None and other.lookup(mallory) is None
        redis_client.delete(NOTE)
        other.refresh()
        assert other.lookup(writer) is not None and other.lookup(mallory) is None  # what it proved, kept
    finally:
        other.stop()


def test_a_brand_new_cluster_s_node_takes_redis_s_accounts_until_the_first_checkpoint(
    home: Home, redis_client: Any
) -> None:
    """What #1's fix keeps: before any admin record, the bootstrap's admin is let in; and a node
    on those accounts keeps them while the first command's records await their checkpoint."""
    root = home.cache.snapshot.accounts["root"].keys[0]
    other = _other(home, redis_client)
    try:
        assert other.lookup(root) is not None
        home.apply("account.add", account="writer", role="writer")
        other.refresh()
        assert redis_client.get(NOTE) is None and other.lookup(root) is not None
    finally:
        other.stop()


def test_a_junk_entry_in_the_copy_is_rewritten_by_the_home_at_its_next_record_and_alerted(
    home: Home, redis_client: Any
) -> None:
    """r13 #3: one RPUSH of junk put each later record of the home one index off (the push script
    took "the list is longer" for "already there"): no checkpoint proved the copy again, and a
    key revoked stayed in on every other node, for good."""
    victim = new_keypair().public
    home.apply("account.add", account="victim", role="writer")
    home.apply("key.add", account="victim", key=victim)
    publish_admin_checkpoint(redis_client, home.store)
    other = _other(home, redis_client)
    try:
        assert other.lookup(victim) is not None
        junk_at = home.registry.admin_size()
        redis_client.rpush(home.registry.admin_records_key, b"junk")
        home.apply("key.revoke", key=victim)
        publish_admin_checkpoint(redis_client, home.store)
        stored = [data for _, data in home.store.range_raw(ADMIN_LEDGER, 0)]
        assert home.registry.admin_records() == stored
        assert [(a.what, a.node, a.height) for a in home.alerts] == [(ADMIN_CACHE_CONFLICT, "redis", junk_at)]
        other.refresh()
        assert other.lookup(victim) is None and not other.behind
    finally:
        other.stop()


def test_a_junk_entry_pushed_while_the_home_is_down_is_rewritten_at_its_start(home: Home, redis_client: Any) -> None:
    """r13 #3, the home down: the list longer than its store made its start raise store_damaged
    (exit 65, naming a repair that rebuilds the store, not the list). A longer list counts as the
    store being behind only where a checkpoint the home signed covers it."""
    home.apply("account.add", account="writer", role="writer")
    publish_admin_checkpoint(redis_client, home.store)
    redis_client.rpush(home.registry.admin_records_key, b"junk")
    home.ledger.sync()
    assert home.registry.admin_records() == [data for _, data in home.store.range_raw(ADMIN_LEDGER, 0)]
    assert [a.what for a in home.alerts] == [ADMIN_CACHE_CONFLICT]


def test_a_junk_entry_pushed_while_the_home_is_idle_is_rewritten_at_its_next_poll(
    home: Home, redis_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """acct28's left-out: the refill at each accounts poll only logged a list longer than the
    store, so an idle home left the junk (and every other node's accounts frozen behind it) until
    the next admin command. Now it does what a start does: rewrite and alert, unless Redis's
    verified checkpoint covers the list past the store (the store is behind: left, logged)."""
    home.apply("account.add", account="writer", role="writer")
    publish_admin_checkpoint(redis_client, home.store)
    stored = [data for _, data in home.store.range_raw(ADMIN_LEDGER, 0)]
    redis_client.rpush(home.registry.admin_records_key, b"junk")
    home.ledger.refill()
    assert home.registry.admin_records() == stored
    assert [(a.what, a.height) for a in home.alerts] == [(ADMIN_CACHE_CONFLICT, len(stored))]
    home.ledger.refill()
    assert len(home.alerts) == 1  # the copy is the store's again: nothing more
    # A checkpoint the home's key signed past the store: the longer list may be genuine.
    redis_client.rpush(home.registry.admin_records_key, b"later")
    signed = HomeSigner(CLUSTER, HOME_SEED).sign(ADMIN_LEDGER, len(stored) + 1, bytes(32))
    redis_client.set(NOTE, signed.note)
    home.ledger.refill()
    home.ledger.refill()
    assert home.registry.admin_records() == [*stored, b"later"] and len(home.alerts) == 1
    assert len([r for r in caplog.records if "signed past it: not refilled" in r.getMessage()]) == 1


def test_an_entry_set_in_a_list_of_the_store_s_length_is_rewritten_at_the_next_poll(
    home: Home, redis_client: Any
) -> None:
    """Review r14 F2 (a): the poll took a list of the store's length for healthy without looking
    at its bytes, so one LSET stayed until the home's next start, every other node's accounts
    frozen meanwhile (no checkpoint proves the list again)."""
    home.apply("account.add", account="writer", role="writer")
    publish_admin_checkpoint(redis_client, home.store)
    stored = [data for _, data in home.store.range_raw(ADMIN_LEDGER, 0)]
    home.ledger.refill()
    assert home.alerts == []  # the store's bytes: nothing to do
    redis_client.lset(home.registry.admin_records_key, 1, b"junk")
    home.ledger.refill()  # within the minute: not compared again (review r15 F-C)
    assert home.alerts == []
    home.now[0] += BYTES_CHECK_SECONDS
    home.ledger.refill()
    assert home.registry.admin_records() == stored
    assert [(a.what, a.height) for a in home.alerts] == [(ADMIN_CACHE_CONFLICT, 1)]
    home.apply("account.add", account="writer2", role="writer")
    home.now[0] += BYTES_CHECK_SECONDS
    home.ledger.refill()
    assert home.registry.admin_records() == [data for _, data in home.store.range_raw(ADMIN_LEDGER, 0)]
    assert len(home.alerts) == 1


def test_the_poll_compares_the_list_s_bytes_once_a_minute_a_page_a_call(
    home: Home, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review r15 F-C: the digest of the whole list, in one script at every poll (5 s), blocked
    Redis for all of it (22 ms at 10k records, 336 ms at 100k). Now a poll compares at most once
    a minute, each script call a page, and an entry set past the first page is still found."""
    monkeypatch.setattr(admin_ledger_module, "BYTES_CHECK_PAGE", 2)
    for n in range(3):
        home.apply("account.add", account=f"writer{n}", role="writer")
    publish_admin_checkpoint(redis_client, home.store)
    stored = [data for _, data in home.store.range_raw(ADMIN_LEDGER, 0)]
    assert len(stored) >= 5
    calls: list[tuple[int, int]] = []
    real = home.registry.admin_records_digest
    monkeypatch.setattr(
        home.registry, "admin_records_digest", lambda first, last: (calls.append((first, last)), real(first, last))[1]
    )
    for _ in range(3):
        home.ledger.refill()
    assert calls == [(first, min(first + 1, len(stored) - 1)) for first in range(0, len(stored), 2)]
    redis_client.lset(home.registry.admin_records_key, 4, b"junk")
    home.now[0] += BYTES_CHECK_SECONDS
    home.ledger.refill()
    assert home.registry.admin_records() == stored
    assert [(a.what, a.height) for a in home.alerts] == [(ADMIN_CACHE_CONFLICT, 4)]


def test_junk_pushed_before_the_first_command_after_a_start_is_rewritten_at_that_command(
    home: Home, redis_client: Any
) -> None:
    """Review r14 F2 (b): a start whose sync found Redis's list the store's knew nothing of it
    after, so the next command pushed from the list's length, past an entry pushed meanwhile:
    the junk sat at the new record's index, the list the store's length."""
    home.apply("account.add", account="writer", role="writer")
    publish_admin_checkpoint(redis_client, home.store)
    home.ledger = AdminLedger(home.store, home.registry, admin_key=ADMIN_KEY, on_alert=home.alerts.append)
    home.admin.ledger = home.ledger  # the home restarted
    home.ledger.sync()
    junk_at = home.registry.admin_size()
    redis_client.rpush(home.registry.admin_records_key, b"junk")
    home.apply("account.add", account="writer2", role="writer")  # before the next poll
    assert home.registry.admin_records() == [data for _, data in home.store.range_raw(ADMIN_LEDGER, 0)]
    assert [(a.what, a.height) for a in home.alerts] == [(ADMIN_CACHE_CONFLICT, junk_at)]


def test_a_conflict_found_at_a_push_is_alerted_at_its_height_not_the_push_s_start(
    home: Home, redis_client: Any
) -> None:
    """Review r14 F2: the alert named where the push began, not the height the script found other bytes at."""
    home.apply("account.add", account="writer", role="writer")
    start = home.registry.admin_size()
    grant = {"ledger": "x", "kind": "y", "account": "writer", "via": ""}
    home.ledger._write("grant", grant, "root")
    home.ledger._write("grant", {**grant, "kind": "z"}, "root")
    first = [data for _, data in home.store.range_raw(ADMIN_LEDGER, start, start + 1)]
    redis_client.rpush(home.registry.admin_records_key, *first, b"junk")  # the first right, then junk
    home.ledger._cache()
    assert home.registry.admin_records() == [data for _, data in home.store.range_raw(ADMIN_LEDGER, 0)]
    assert [(a.what, a.height) for a in home.alerts] == [(ADMIN_CACHE_CONFLICT, start + 1)]


def test_a_node_stuck_behind_the_copy_stays_live_pending_and_alerted(
    home: Home, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """r13 #3: a node that could not prove Redis's copy never wrote ``seen`` (only an applied
    version did): past the heartbeat window it counted as gone, and admin commands answered
    ``pending: []`` while it still let a disabled account in. It was only logged, too."""
    monkeypatch.setattr(ingest_accounts, "heartbeat_window", lambda poll: 1.0)
    monkeypatch.setattr(accounts_module, "_BEHIND_FAST_FOR", 0.3)
    home.apply("account.add", account="victim", role="writer")
    publish_admin_checkpoint(redis_client, home.store)
    reports: list[str | None] = []
    other = _other(home, redis_client, on_unproven=reports.append)
    try:
        assert other.lookup(home.cache.snapshot.accounts["root"].keys[0]) is not None and not other.behind
        # Its record's checkpoint never comes (the home's outbox stopped): ingest-2 is stuck behind.
        home.apply("account.disable", account="victim")
        assert reports[0] is None  # its start resolved whatever an earlier run left open
        wait_until(lambda: len(reports) > 1, DEADLINE, "the stuck node's alert")
        assert reports[1] is not None and "no checkpoint" in reports[1]
        # Past the heartbeat window, still named: it is alive, and has not applied the change.
        answer = home.apply("account.enable", account="victim")
        assert answer["pending"] == ["ingest-2"]
        publish_admin_checkpoint(redis_client, home.store)
        wait_until(lambda: reports[-1] is None, DEADLINE, "the alert resolved once proven")
    finally:
        other.stop()


def test_the_home_reports_no_unbacked_account_between_a_revoke_s_record_and_redis_s_change(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    """r13 #8: the record comes first, Redis's change after; a reload in between (a poll, or a
    stranger's handshake) found Redis still letting in the key the record ended, and raised
    ``unbacked_account`` on an honest cluster, resolved a moment later."""
    victim = new_keypair().public
    home.apply("account.add", account="victim", role="writer")
    home.apply("key.add", account="victim", key=victim)
    registry = home.registry
    for name in ("revoke_key", "disable", "remove_account"):
        change = getattr(registry, name)

        def reloaded_first(*args: Any, _change: Any = change) -> int:
            home.cache.refresh()  # another thread's reload, between the record and Redis's change
            return int(_change(*args))

        monkeypatch.setattr(registry, name, reloaded_first)
    home.apply("key.revoke", key=victim)
    home.apply("account.disable", account="victim")
    home.apply("account.remove", account="victim")
    assert [found for found in home.unbacked if found] == []


def _signed_copy(home: Home, node: str = "replica-1") -> PeerCopy:
    """What a node holding the home's admin ledger sends: its records and the home's signed note."""
    records = [data for _, data in home.store.range_raw(ADMIN_LEDGER)]
    tree = Frontier()
    for data in records:
        tree.append(leaf_hash(data))
    return PeerCopy(node, records, (HomeSigner(CLUSTER, HOME_SEED).sign(ADMIN_LEDGER, tree.size, tree.root()).note,))


def _asking(redis_client: Any, answers: list[PeerCopies], clock: list[float]) -> SignedAdminSource:
    """ingest-2's source whose nodes answer ``answers`` in turn (the last again), on ``clock``."""
    asked = iter(answers)
    last = [answers[-1]]

    def peers() -> PeerCopies:
        last[0] = next(asked, last[0])
        return last[0]

    return SignedAdminSource(redis_client, ADMIN_KEY, clock=lambda: clock[0], peers=peers)


def test_an_empty_copy_is_no_admin_ledger_only_once_the_ledger_s_home_says_so(home: Home, redis_client: Any) -> None:
    """Outsider o9 K2: Redis's list and checkpoint deleted (in a loop), a node that proved nothing
    took Redis's accounts as they are. Nobody answering proves nothing: no account, and the node
    asks again, at most every PEER_RETRY. Nor does a follower that holds no record (new, wiped,
    syncing: review r16 #5, where it let the forged admin in); the home's "none" lets the
    bootstrap's accounts in."""
    root = home.cache.snapshot.accounts["root"].keys[0]
    clock = [0.0]
    holders = ("ingest-1", "replica-1")
    nobody = PeerCopies(holders, (), ())
    empty_follower = PeerCopies(holders, ("replica-1",), ())
    none = PeerCopies(holders, holders, (), home_none=True)
    source = _asking(redis_client, [nobody, nobody, empty_follower, none], clock)
    other = AccountCache(home.registry, "ingest-2", admin=source)  # loaded here, by this thread alone
    other.refresh()
    copy = source.load()
    assert copy.records == () and copy.unproven and "ingest-1, replica-1" in copy.waiting
    assert other.lookup(root) is None
    clock[0] += PEER_RETRY / 2
    assert source.load().records == ()  # not asked again so soon
    clock[0] += PEER_RETRY
    assert source.load().records == ()  # nobody again
    clock[0] += PEER_RETRY
    copy = source.load()
    assert copy.records == () and "only its home's word" in copy.waiting  # the follower's "none" settles nothing
    other.refresh()
    assert other.lookup(root) is None
    clock[0] += PEER_RETRY
    assert source.load().records is None  # the home's "none": the bootstrap
    other.refresh()
    assert other.lookup(root) is not None


def test_a_node_that_proved_nothing_takes_the_copy_a_node_that_holds_the_ledger_proves(
    home: Home, redis_client: Any
) -> None:
    """K2: a forged admin written while the copy and checkpoint are deleted is refused, the
    ledger's writer let in; a copy with no note that proves it still says a ledger exists."""
    home.apply("account.add", account="writer", role="writer")
    writer = new_keypair().public
    home.apply("key.add", account="writer", key=writer)
    mallory = new_keypair().public
    redis_client.hset(group_key("vledger", "accounts", "keys"), mallory, "root")
    redis_client.delete(NOTE, home.registry.admin_records_key)
    signed = _signed_copy(home)
    unproven = PeerCopy("ingest-1", signed.records, ())
    clock = [0.0]
    holders = ("ingest-1", "replica-1")
    source = _asking(
        redis_client,
        [PeerCopies(holders, ("ingest-1",), (unproven,)), PeerCopies(holders, holders, (unproven, signed))],
        clock,
    )
    other = AccountCache(home.registry, "ingest-2", admin=source)
    other.refresh()
    assert other.lookup(mallory) is None and other.lookup(writer) is None  # records exist: no bootstrap
    clock[0] += PEER_RETRY
    other.refresh()
    assert other.lookup(writer) is not None and other.lookup(mallory) is None
    assert len(source.load().records or ()) == len(signed.records)


class ScriptedPeer:
    """A node asked for the admin ledger that answers ``range`` as ``reply`` says (a lying one's
    script), and stops answering after ``answers`` requests (the 10 s deadline's stand-in)."""

    def __init__(self, reply: Callable[[int, int], dict[str, Any]], answers: int = 50) -> None:
        self.reply = reply
        self.answers = answers
        self.asked: list[tuple[int, int]] = []

    def call(self, name: str, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        assert cmd == "range" and args["ledger"] == ADMIN_LEDGER
        if len(self.asked) >= self.answers:
            raise NodeUnavailableError("no answer")
        self.asked.append((args["start"], args["limit"]))
        return self.reply(args["start"], args["limit"])

    def copy(self, notes: list[bytes], page: int = 2, *, home: bool = False) -> PeerCopy | bool | None:
        return admin_peers_module._copy(cast(Sources, self), "replica-1", notes, page, ADMIN_KEY, home=home)


def _admin_records(home: Home) -> tuple[list[bytes], bytes]:
    """The home's admin records (at least five) and its signed note of them."""
    for n in range(3):
        home.apply("account.add", account=f"w{n}", role="writer")
    signed = _signed_copy(home)
    assert len(signed.records) >= 5
    return signed.records, signed.notes[0]


def _pages(records: list[bytes], note: bytes | None = None) -> Callable[[int, int], dict[str, Any]]:
    def reply(start: int, limit: int) -> dict[str, Any]:
        page = records[start : start + limit]
        end = start + len(page)
        return {"records": page, "next": end if end < len(records) else None, "checkpoint": note}

    return reply


def test_a_peer_s_copy_is_fetched_only_as_far_as_its_verified_notes_go(home: Home) -> None:
    """r16 #6: a peer that says there is always more (``next`` the count received) was asked
    page after page for 10 s, at each start and every PEER_RETRY, and its pages kept. Now: up
    to the size a verified note proves, and one page past it, for that page's own note."""
    records, note = _admin_records(home)
    flood = ScriptedPeer(lambda start, limit: {"records": [b"\0" * 1000] * limit, "next": start + limit})
    assert flood.copy([]) == PeerCopy("replica-1", [], ())  # its first page is no records: nothing kept
    assert len(flood.asked) == 1
    honest = ScriptedPeer(_pages(records))
    copy = honest.copy([note])
    assert isinstance(copy, PeerCopy) and copy.records == records
    assert len(proven_admin_records(copy.records, note, ADMIN_KEY)) == len(records)
    assert len(honest.asked) == -(-len(records) // 2)  # a page ends where the note does: asked no further
    more = ScriptedPeer(_pages(records + records))  # a lying peer with more than the note proves
    copy = more.copy([note])
    assert isinstance(copy, PeerCopy) and len(copy.records) <= len(records) + 2  # one page past the note at most
    assert len(more.asked) == -(-len(records) // 2) + 1
    unproven = ScriptedPeer(_pages(records))  # no note: the first page only (its note would come with it)
    copy = unproven.copy([b"not a note"])
    assert isinstance(copy, PeerCopy) and copy.records == records[:2] and len(unproven.asked) == 1
    later = ScriptedPeer(_pages(records, note))  # a started follower: the note comes with its pages
    copy = later.copy([])
    assert isinstance(copy, PeerCopy) and copy.records == records


def test_a_peer_s_page_longer_than_asked_or_of_other_heights_or_too_large_ends_its_copy(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    records, note = _admin_records(home)
    longer = ScriptedPeer(lambda start, limit: {"records": records[start:], "next": None})
    assert longer.copy([note]) == PeerCopy("replica-1", [], (note,))
    shifted = ScriptedPeer(lambda start, limit: {"records": records[start + 1 : start + limit + 1], "next": 0})
    assert shifted.copy([note]) == PeerCopy("replica-1", [], (note,))
    monkeypatch.setattr(admin_peers_module, "PEER_COPY_MAX_BYTES", sum(len(data) for data in records[:3]))
    capped = ScriptedPeer(_pages(records))
    copy = capped.copy([note])
    assert isinstance(copy, PeerCopy) and copy.records == records[:2]


def test_only_the_home_s_no_such_ledger_says_there_is_no_admin_ledger() -> None:
    """r16 #5: a follower's ``not_home`` (it holds no record) and a follower's claim of
    ``no_such_ledger`` (only a home says that) are no "none"."""

    def refuse(error: VledgerError) -> ScriptedPeer:
        def reply(start: int, limit: int) -> dict[str, Any]:
            raise error

        return ScriptedPeer(reply)

    assert refuse(NoSuchLedgerError("no ledger")).copy([], home=True) is True
    assert refuse(NoSuchLedgerError("no ledger")).copy([]) is False
    assert refuse(NotHomeError("held on ingest-1")).copy([]) is False
    assert refuse(NotHomeError("held on ingest-1")).copy([], home=True) is False
