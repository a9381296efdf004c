"""A rival note (34b743c6, o18 F3) is judged as any note of a size the store holds: its
epoch first (PROTOCOL 10.7, 10.9), not straight against the tree.

The old home, cut off, announces its own tail past the handover (size 7) before this copy
heard of the standby; the standby's note of size 7 then takes its place and the records are
stored under it. The old home's note, held back as the rival, was compared with the stored
tree without the epoch check: of another epoch, no note proves the home signed two trees,
so the COPY was judged at fault (store_contradicts_checkpoint naming itself) and stopped
storing the ledger, where the note must be refused [fenced] naming the old home."""

from __future__ import annotations

from vledger.broker.feed import FeedCheckpoints
from vledger.node.record import Record

# The fixtures and helpers of the module this test joins.
from vledger.tests.unit.ingest.test_epochs import (  # noqa: F401
    EPOCH_2,
    HOME,
    HOME_SIGNER,
    LEDGER,
    STANDBY,
    STANDBY_SIGNER,
    Witness,
    _checkpoint,
    chains,
    witness,
)


def test_a_fenced_home_s_note_replaced_by_the_standby_s_is_refused_not_held_against_the_copy(
    witness: Witness,  # noqa: F811
    chains: tuple[list[Record], list[Record]],  # noqa: F811
) -> None:
    handed, stale = chains
    witness.send(handed[:5], _checkpoint(handed[:5], HOME_SIGNER), HOME)
    old = _checkpoint(stale, HOME_SIGNER)  # the old home's tail, size 7, its own key
    new = _checkpoint(handed[:7], STANDBY_SIGNER, EPOCH_2)  # the standby's, size 7: handover + 1
    assert old.size == new.size == 7 and old.root != new.root
    witness.follower.receive([FeedCheckpoints(HOME, {LEDGER: old.note})])
    witness.follower.receive([FeedCheckpoints(STANDBY, {LEDGER: new.note})])
    witness.send(handed[5:7], new, STANDBY)
    assert witness.held() == handed[:7]
    assert [(a.what, a.source) for a in witness.alerts] == [("fenced", HOME)]
    # And the copy goes on following the standby.
    witness.send(handed[7:], _checkpoint(handed, STANDBY_SIGNER, EPOCH_2), STANDBY)
    assert witness.held() == handed
