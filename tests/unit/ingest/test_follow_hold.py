"""The follower's hold on a ledger whose witnesses cosigned a rotation it lacks (PROTOCOL 10.7),
against a quorum of witness keys alone (review r21 F3), bounded in memory (r21 F5), on real stores.

The witnesses' notes are read with their home line unchecked, so a quorum of the other
witnesses' cosignature keys can state any tree: a note of a size no source reaches holds a
copy back, but visibly (``held_back``) and without a ``behind`` of a size nobody served; a
note whose root the run has at its size is their word for the run, which is released. A note
whose root the run has not drops it: the same as a fork of the retired key that brings a
rotation of its own, which only the witnesses tell from the true chain.
"""

from __future__ import annotations

from pathlib import Path

from tests.unit.ingest.test_key_chains import (
    K0,
    LEDGER,
    ORIGIN,
    WITNESSES,
    _home,
    _keys,
    _note,
    _notes,
    _Pages,
    _put_back,
    _Replica,
    _rotated_and_forked,
    _witnessed,
)
from vledger.ingest.follow import Page
from vledger.node.note import ALG_ED25519, SignerKey
from vledger.node.record import Record
from vledger.node.store import ChainStore

NOBODY = SignerKey(ORIGIN, ALG_ED25519, bytes(range(7, 39)))  # a key no record of the ledger names
SEED_X = bytes(range(9, 41))  # the key a fork of the retired key rotates to


def _rotated(directory: Path, *, before: int = 0, seed: bytes | None = None) -> tuple[list[Record], list[bytes]]:
    """4 records, ``before`` notes, a rotation (to ``seed``'s key if given), 5 notes; and a note by
    the key in force over every size from the rotation's on (index: size - 4 - before)."""
    with _home(directory) as home:
        _notes(home, 4, before)
        keys = _keys(home) if seed is None else _keys(home, make=seed)
        keys.rotate(LEDGER, "admin", home.append)
        _notes(home, 5 + before, 5)
        records = list(home.range(LEDGER))
        notes = [keys.sign(LEDGER, n, home.root(LEDGER, n)).note for n in range(4 + before, home.size(LEDGER) + 1)]
    return records, notes


def _sized(notes: list[bytes], first: int) -> list[tuple[int, bytes]]:
    return [(first + i, note) for i, note in enumerate(notes)]


def test_a_quorum_of_notes_no_source_reaches_holds_back_visibly_and_claims_nothing(tmp_path: Path) -> None:
    """r21 F3 (a): two witness keys cosign a note of size 2**40 by a key nobody holds. The honest
    run (its rotation included) is held, not stored: only the witnesses tell a true rotation
    from one the retired key made (the next test). But the copy says it is behind by what its
    sources served, not by 1.1e12, and raises held_back once every source was asked; when the
    witnesses' notes are the true chain's again, the run is stored under them and it closes."""
    records, notes = _rotated(tmp_path / "home")
    said: dict[str, bytes] = _witnessed(_note(NOBODY, 1 << 40, bytes(32)), *WITNESSES[:2])
    _put_back(tmp_path / "replica", records)
    honest = _Pages(records, _sized(notes, 4), name="ingest-1")
    replica = _Replica(tmp_path / "replica", [honest], None, lambda ledger: (said, 2))
    with replica.store:
        replica.follower.start()
        assert replica.store.size(LEDGER) == 4
        assert replica.follower.status() == {"current": False, "behind": {LEDGER: len(records) - 4}}
        assert [(a.what, a.node, a.source, a.height) for a in replica.alerts] == [
            ("held_back", "replica-1", "replica-1", len(records) - 1)
        ]
        said = _witnessed(notes[-1], *WITNESSES[:2])  # the witnesses cosign the true chain again
        replica.follower.refresh_witnessed(unsettled_only=True)
        assert list(replica.store.range(LEDGER)) == records
        assert replica.follower.status() == {"current": True, "behind": {}}
        assert replica.resolved == ["replica-1|ledger-a|held_back"]
        assert len(replica.alerts) == 1


def test_a_quorum_note_whose_root_the_run_has_releases_it_whatever_key_signed_it(tmp_path: Path) -> None:
    """r21 F3 (b), the part a run can prove: the witnesses' note at a size the run reaches, by a
    key the run's chain does not name, states the run's own root there: it is their word for
    this run, which is stored (under the home's checkpoints it verifies), never dropped."""
    records, notes = _rotated(tmp_path / "home")
    truth = _note(NOBODY, len(records), _root(records, tmp_path / "tree"))
    _put_back(tmp_path / "replica", records)
    honest = _Pages(records, _sized(notes, 4), name="ingest-1")
    replica = _Replica(tmp_path / "replica", [honest], None, lambda ledger: (_witnessed(truth, *WITNESSES[:2]), 2))
    with replica.store:
        replica.follower.start()
        assert list(replica.store.range(LEDGER)) == records
        assert replica.alerts == []


def test_a_quorum_note_whose_root_the_run_has_not_drops_it_as_a_rotated_fork_of_the_retired_key(
    tmp_path: Path,
) -> None:
    """r21 F3 (b), the part no run can prove: a run that brings a rotation and checkpoints by its
    new key, reaching a quorum's note whose key it does not know and whose root it has not, is
    what a holder of the retired key makes (a fork from the rotation's height, rotating to a key
    of its own): it is dropped, however honest it may be, and never stored; the copy says so."""
    records, notes = _rotated(tmp_path / "home")
    fork, fork_notes = _rotated(tmp_path / "fork", seed=SEED_X)
    assert fork[:4] == records[:4] and fork[4] != records[4] and len(fork) == len(records)
    _put_back(tmp_path / "replica", records)
    forger = _Pages(fork, _sized(fork_notes, 4))
    replica = _Replica(tmp_path / "replica", [forger], None, lambda ledger: (_witnessed(notes[-1], *WITNESSES), 2))
    with replica.store:
        replica.follower.start()
        assert replica.store.size(LEDGER) == 4
        assert [(a.what, a.source) for a in replica.alerts] == [("held_back", "replica-1")]
        assert replica.follower.pending(LEDGER) == []  # dropped, not kept waiting
        replica.follower.sources.append(_Pages(records, _sized(notes, 4), name="ingest-1"))
        replica.follower.catch_up_all()
        assert list(replica.store.range(LEDGER)) == records
        assert "replica-1|ledger-a|held_back" in replica.resolved


def test_a_fresh_copy_never_stores_a_fork_the_old_key_signed(tmp_path: Path) -> None:
    """r21 F2: the hold read the witnesses' notes only of ledgers the copy held records of: a new
    replica, or one whose store was wiped, catching up from a home put back before its rotation
    (the fork under the old key K0, which the home's configured key verifies) stored the fork,
    though a quorum of witnesses said otherwise. An empty copy is held back too, then stores
    the true chain from an honest source."""
    records, notes, forked, fork_note = _rotated_and_forked(tmp_path)
    redis = _Pages(forked, [(len(forked), fork_note)])
    redis.latest = {LEDGER: fork_note}
    replica = _Replica(tmp_path / "replica", [redis], None, lambda ledger: (_witnessed(notes[-1][1], *WITNESSES), 2))
    replica.chains.fallback = lambda ledger: K0.verifier()  # a real replica's: the home's configured <home>.sign.pub
    with replica.store:
        replica.follower.start()
        assert replica.store.size(LEDGER) == 0, "the fork was stored"
        assert [(a.what, a.source) for a in replica.alerts] == [("held_back", "replica-1")]
        replica.follower.sources.append(_Pages(records, notes, name="ingest-1"))
        replica.follower.catch_up_all()
        assert list(replica.store.range(LEDGER)) == records


class _Watched(_Pages):
    """A source that notes how many records the follower keeps pending at each fetch."""

    def __init__(self, records: list[Record], notes: list[tuple[int, bytes]], replica: list[_Replica]) -> None:
        super().__init__(records, notes, name="ingest-1")
        self.replica = replica
        self.kept: list[int] = []

    def fetch(self, ledger: str, start: int, count: int) -> Page:
        self.kept.append(len(self.replica[0].follower.pending(ledger)))
        return super().fetch(ledger, start, count)


def test_a_held_run_keeps_at_most_max_held_records_and_fetches_the_rest_again_once_proven(tmp_path: Path) -> None:
    """r21 F5: a rotation far above what the copy holds. Past ``max_held`` records the held run is
    verified and hashed but not kept; the rotation it passes over makes the witnesses' notes
    verify, and the records passed over are fetched again, checked along the key chain that
    rotation proved (kept aside meanwhile), and stored."""
    records, notes = _rotated(tmp_path / "home", before=6)  # the rotation at height 10
    _put_back(tmp_path / "replica", records)
    box: list[_Replica] = []
    source = _Watched(records, _sized(notes, 10), box)
    replica = _Replica(
        tmp_path / "replica", [source], None, lambda ledger: (_witnessed(notes[-1], *WITNESSES), 2), max_held=2
    )
    box.append(replica)
    with replica.store:
        replica.follower.start()
        assert list(replica.store.range(LEDGER)) == records
        assert replica.alerts == []
        assert max(source.kept) <= 2 + replica.follower.batch
        assert source.kept.count(2) >= 2  # held at 2 while the pages up to the rotation went by


def _root(records: list[Record], directory: Path) -> bytes:
    """The tree root of ``records`` (a store of them, as the home's)."""
    with ChainStore(directory, origin="tree") as store:
        store.append_records(records)
        return store.root(LEDGER)


class _Failing(_Pages):
    """A source that stops answering once it served a page reaching ``upto``, until told again."""

    def __init__(self, records: list[Record], notes: list[tuple[int, bytes]], upto: int) -> None:
        super().__init__(records, notes, name="ingest-1")
        self.upto = upto
        self.down = False

    def fetch(self, ledger: str, start: int, count: int) -> Page:
        if self.down:
            raise OSError("down")
        page = super().fetch(ledger, start, count)
        self.down = bool(page.rows) and page.rows[-1][0] >= self.upto
        return page


def test_a_rotation_passed_over_and_proven_is_followed_while_the_run_is_fetched_again(tmp_path: Path) -> None:
    """The records a released run passed over are fetched again, here from another source whose
    chain, the same up to the rotation, brings another rotation there (a holder of the retired
    key rotating on a fork of its own): the rotation the witnesses' notes proved stays in the
    key chain meanwhile, so that one is refused (bad_rotation) and nothing past the true
    prefix is stored; followed for the fork, its checkpoints by its own key would store it."""
    records, notes = _rotated(tmp_path / "home", before=6)  # the rotation at height 10
    fork, fork_notes = _rotated(tmp_path / "fork", before=6, seed=SEED_X)
    assert fork[:10] == records[:10] and fork[10] != records[10]
    _put_back(tmp_path / "replica", records)
    true = _Failing(records, _sized(notes, 10), upto=11)
    forger = _Pages(fork, _sized(fork_notes, 10))
    replica = _Replica(
        tmp_path / "replica", [true, forger], None, lambda ledger: (_witnessed(notes[-1], *WITNESSES), 2), max_held=2
    )
    with replica.store:
        replica.follower.start()
        assert list(replica.store.range(LEDGER)) == records[: replica.store.size(LEDGER)]
        assert replica.store.size(LEDGER) <= 10
        assert ("bad_rotation", "redis", 10) in [(a.what, a.source, a.height) for a in replica.alerts]
        true.down, true.upto = False, len(records)
        replica.follower.catch_up_all()
        assert list(replica.store.range(LEDGER)) == records
