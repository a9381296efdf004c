"""(review r23 F1) a released run's records passed over are fetched again
checked only along the chain from the last one kept, and a proven rotation only against another
rotation at its height. A fork of the retired key K0 (a home put back before its rotate-key)
fetched then is stored, though the follower had verified the true run against a quorum's notes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.unit.ingest.test_follow_hold import _Failing, _rotated, _sized
from tests.unit.ingest.test_key_chains import (
    K0,
    LEDGER,
    WITNESSES,
    _home,
    _note,
    _notes,
    _Pages,
    _put_back,
    _Replica,
    _witnessed,
)
from vledger.ingest.follow import Page
from vledger.ingest.page_check import PageChecker


def _fork(directory: Path, common: int, count: int, note_size: int) -> tuple[list, bytes]:
    """The chain up to height ``common`` (exclusive) as the true one, then ``count`` other notes;
    its K0 note at ``note_size``."""
    with _home(directory) as fork:
        _notes(fork, 4, common - 4)
        _notes(fork, 1000, count)
        forked = list(fork.range(LEDGER))
        note = _note(K0, note_size, fork.root(LEDGER, note_size))
    return forked, note


def _run(tmp_path: Path, forked: list, fork_note: tuple[int, bytes], first: int = 10) -> tuple[list, _Replica]:
    """``first``: the smallest size the true source has a checkpoint of (a home need not sign every size)."""
    records, notes = _rotated(tmp_path / "home", before=6)  # the rotation at height 10
    _put_back(tmp_path / "replica", records)
    true = _Failing(
        records, _sized(notes, 10)[first - 10 :], upto=11
    )  # serves the held run up to the rotation, then fails
    forger = _Pages(forked, [fork_note])
    replica = _Replica(
        tmp_path / "replica", [true, forger], None, lambda ledger: (_witnessed(notes[-1], *WITNESSES), 2), max_held=2
    )
    return records, replica


def test_a_fork_without_a_rotation_at_the_proven_height_is_not_stored_on_refetch(tmp_path: Path) -> None:
    """The fork shares heights 0..9, has a plain record at 10 (where the true chain rotates) and
    K0's note at 13: once the refetched run passes 10, key_records drops the proven rotation
    (height > top) and K0's note past it verifies."""
    forked, note = _fork(tmp_path / "fork", 10, 8, 13)
    records, replica = _run(tmp_path, forked, (13, note))
    assert forked[:10] == records[:10] and forked[10] != records[10]
    with replica.store:
        replica.follower.start()
        stored = list(replica.store.range(LEDGER))
        assert stored == records[: len(stored)], f"fork stored up to size {len(stored)}"


def test_a_fork_below_the_proven_rotation_is_not_stored_on_refetch(tmp_path: Path) -> None:
    """The fork shares heights 0..7 and differs at 8, 9 (between the records kept and the
    rotation), under K0's note at 10 (K0 is in force up to the rotation): the held run the
    witnesses' root vouched for had the true 8, 9. (The true source signed no checkpoint at 10:
    one there would contradict the fork's and drop it.)"""
    forked, note = _fork(tmp_path / "fork", 8, 8, 10)
    records, replica = _run(tmp_path, forked, (10, note), first=11)
    assert forked[:8] == records[:8] and forked[8] != records[8]
    with replica.store:
        replica.follower.start()
        stored = list(replica.store.range(LEDGER))
        assert stored == records[: len(stored)], f"fork stored up to size {len(stored)}"


def test_a_release_mid_catch_up_does_not_leave_the_honest_source_for_the_next(
    tmp_path: Path, checker: PageChecker | None
) -> None:
    """No source fails here. With the page checker, the page fetched ahead (after the one whose
    flush released the run and cut it back to the records kept) no longer starts where the run
    goes on, and _catch_up takes that for 'this source lacks them': it leaves the honest source
    for the next one (here a fork from the rotation's height), and start() ends at size 10 of 16."""
    records, notes = _rotated(tmp_path / "home", before=6)  # the rotation at height 10
    forked, note = _fork(tmp_path / "fork", 10, 4, 13)
    _put_back(tmp_path / "replica", records)
    true = _Pages(records, _sized(notes, 10), name="ingest-1")
    forger = _Pages(forked, [(13, note)])
    replica = _Replica(
        tmp_path / "replica",
        [true, forger],
        checker,
        lambda ledger: (_witnessed(notes[-1], *WITNESSES), 2),
        max_held=2,
    )
    asked: list[tuple[str, int]] = []
    for source in replica.follower.sources:

        def fetch(ledger: str, start: int, count: int, orig: Any = source.fetch, name: str = source.name) -> Page:
            asked.append((name, start))
            return orig(ledger, start, count)

        source.fetch = fetch  # type: ignore[method-assign]
    with replica.store:
        replica.follower.start()
        stored = list(replica.store.range(LEDGER))
        assert stored == records[: len(stored)], f"fork stored up to size {len(stored)}"
        assert ("redis", 6) not in asked, f"the honest source was left after the release: {asked}"
        assert stored == records
