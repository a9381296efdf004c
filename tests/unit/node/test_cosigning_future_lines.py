"""A witness line dated beyond the clock skew ahead keeps no head fresh (PROTOCOL 10.5, 11.4;
review r22 F2): readers take a witness's largest T as its newest, so a line written while its clock
ran ahead would keep a frozen view "vouched for" until that date."""

from __future__ import annotations

import time

from vledger.broker.signing import new_signing_key
from vledger.node.cosigning import gather, needed_witnesses, stale_since, verified_fresh_ms
from vledger.node.note import verify_checkpoint
from vledger.node.witness import HomeSigner, SignedCheckpoint, WitnessSigner, home_key, witness_key

CLUSTER, LEDGER = "test", "votes"
HOME_KEY, WITNESS_KEY = new_signing_key(), new_signing_key()
NAME = f"{CLUSTER}/witness/replica-1"
RECOSIGN_MS, AFTER_MS, DAY_S = 300_000, 10_000, 86_400


def _note(now_s: int) -> tuple[SignedCheckpoint, bytes]:
    """A checkpoint its one witness first cosigned while its clock ran a day ahead, then (its
    clock set right) cosigned again at ``now_s``: 6dc93fd's path, the first line kept."""
    checkpoint = HomeSigner(CLUSTER, HOME_KEY.seed).sign(LEDGER, 5, bytes(range(32)))
    signer = WitnessSigner(NAME, WITNESS_KEY.seed)
    ahead = signer.cosign(checkpoint, now_s + DAY_S)
    return checkpoint, signer.cosign_again(ahead, now_s)


def test_a_line_dated_a_day_ahead_keeps_no_frozen_head_fresh_gateway_and_tally() -> None:
    now_s = int(time.time())
    _, note = _note(now_s)
    log_key, key = home_key(CLUSTER, LEDGER, HOME_KEY.public.raw), witness_key(NAME, WITNESS_KEY.public.raw)
    (gathered,) = gather([note], log_key, f"{CLUSTER}/{LEDGER}", [key])
    # An hour later, the witness gone (or the view frozen): nothing vouched for the head since.
    later_ms = (now_s + 3600) * 1000
    needed = needed_witnesses(gathered.trusted)
    assert stale_since(gathered.fresh_ms, later_ms, RECOSIGN_MS, AFTER_MS, needed), (
        f"fresh_ms {gathered.fresh_ms} is the line dated a day ahead: the frozen head is judged fresh"
    )


def test_a_line_dated_a_day_ahead_keeps_no_frozen_head_fresh_client() -> None:
    now_s = int(time.time())
    _, note = _note(now_s)
    log_key, key = home_key(CLUSTER, LEDGER, HOME_KEY.public.raw), witness_key(NAME, WITNESS_KEY.public.raw)
    verified = verify_checkpoint(note, log_key, [key], 1, origin=f"{CLUSTER}/{LEDGER}")
    later_ms = (now_s + 3600) * 1000
    fresh = verified_fresh_ms(verified, 1)
    assert stale_since(fresh, later_ms, RECOSIGN_MS, AFTER_MS, 1), f"fresh_ms {fresh}: a day ahead, judged fresh"


def test_a_head_vouched_for_only_by_lines_dated_a_year_ahead_is_stale() -> None:
    """The reader side: lines written while the witnesses' clocks ran a year ahead (a network
    attacker steering their NTP), served frozen by a gateway: never fresh (10.5's promise)."""
    now_s = int(time.time())
    checkpoint = HomeSigner(CLUSTER, HOME_KEY.seed).sign(LEDGER, 5, bytes(range(32)))
    note = WitnessSigner(NAME, WITNESS_KEY.seed).cosign(checkpoint, now_s + 365 * DAY_S)
    log_key, key = home_key(CLUSTER, LEDGER, HOME_KEY.public.raw), witness_key(NAME, WITNESS_KEY.public.raw)
    (gathered,) = gather([note], log_key, f"{CLUSTER}/{LEDGER}", [key])
    later_ms = (now_s + 3600) * 1000
    assert stale_since(gathered.fresh_ms, later_ms, RECOSIGN_MS, AFTER_MS, needed_witnesses(gathered.trusted))
