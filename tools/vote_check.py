"""``vledger vote check --electronic-id E``: a voter's own records, read from a copy of the chain and verified.

By default each record found is proven by its inclusion proof in a checkpoint the ledger's
key signed (with ``--quorum`` cosignatures): the election's records are read to find them,
but only the voter's own are verified, in O(log n) each. ``--full`` verifies and replays
every record from genesis instead (what follows describes that mode).

The voter (or anyone holding the id) asks a replica or an observer, by default the first
replica of the configuration, for the whole election with ``range``. Every record is
checked as the next of its chain from genesis to the head the node serves (the session's
ChainVerifier: checksum, proof of work, link), and replayed through the election's rules,
as an observer counts it. What it shows: the records that name the electronic id
(the registration whose id it is, and the casts, uncasts and withdrawal that carry it),
their heights, hashes and authors (the account that wrote each: a vote moved by another
account than the election's authority shows here), whether the vote counts, and the head that was verified,
and since when a majority of the trusted witnesses vouch for it: STALE past the cluster's
``recosign_interval_ms`` plus 10 s (PROTOCOL 11.4), an old view that may lack later records. The
trusted witnesses are the key directory's and the outside witnesses the genesis lists
(:attr:`ReceiptKeys.trusted`), as the client, ``vledger tally``, the gateway and the pages count them.

Either way the tree of the records read up to the node's latest signed checkpoint must be
that checkpoint's (``bad_proof``): a node serving a forked chain, valid record by record, is
refused rather than believed, and "no records" is said of the signed chain only. An id without
records is ``not_found`` and nothing else is said. A chain that does not verify fails with
the error of its first bad record (exit 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..client.voters import VoterCheck
from ..node.cosigning import distinct_witnesses, needed_witnesses, quorum_fresh_ms, stale_since, vouched_by
from ..node.note import VerifiedCheckpoint, VerifierKey
from ..node.receipt import ReceiptKeys
from ..node.rules import Ref
from ..node.rules.votes import Voter
from ..node.tally_body import STALE_AFTER_MS
from ..node.times import time_text
from .client_output import print_json


@dataclass(frozen=True, slots=True)
class Freshness:
    """How a ledger's checkpoint's freshness is judged (PROTOCOL 11.4): against ``now_ms``, with
    the cluster's ``recosign_ms``, over ``needed`` of the trusted witnesses (needed_witnesses: the
    quorum asked or a majority of them, 0 for none), the key directory's ``witnesses`` and the
    ``outside`` ones its genesis lists, and the default --stale-after of ``vledger tally``."""

    now_ms: int
    recosign_ms: int
    needed: int
    after_ms: int = STALE_AFTER_MS
    witnesses: tuple[VerifierKey, ...] = ()
    outside: tuple[VerifierKey, ...] = ()

    @classmethod
    def of(cls, keys: ReceiptKeys, now_ms: int, recosign_ms: int) -> Freshness:
        """Judged over ``keys.trusted`` with ``keys.quorum``: counting the key directory's
        witnesses alone, a head 2 of 5 cluster witnesses and both outside ones had just cosigned
        was called STALE here while the client, the gateway and the pages called it fresh."""
        needed = needed_witnesses(distinct_witnesses(keys.trusted), keys.quorum)
        outside = keys.outside.keys if keys.outside is not None else ()
        return cls(now_ms, recosign_ms, needed, witnesses=keys.witnesses, outside=outside)

    def fresh_ms(self, proven: VerifiedCheckpoint) -> int | None:
        """Since when ``needed`` trusted witnesses vouch for ``proven`` (None: fewer do)."""
        return quorum_fresh_ms(vouched_by(proven, self.witnesses, self.outside).values(), self.needed)

    def stale(self, proven: VerifiedCheckpoint) -> bool:
        return stale_since(self.fresh_ms(proven), self.now_ms, self.recosign_ms, self.after_ms, self.needed)


def print_vote_check(
    checks: list[VoterCheck], node: str, eid: str, *, as_json: bool, freshness: Mapping[str, Freshness] | None = None
) -> None:
    """``freshness`` by ledger (a ledger without one is not judged)."""
    judged = freshness or {}
    if as_json:
        ledgers = [_check_map(c, judged.get(c.ledger)) for c in checks]
        print_json({"electronic_id": eid, "node": node, "ledgers": ledgers, "verified": True})
        return
    for check in checks:
        print(f"{check.ledger} on {node}: electronic id {eid}")
        for item in check.records:
            record = item.record
            choice = record.content.payload.get("choice") if record.content.kind == "cast" else None
            extra = f"  choice {choice}" if isinstance(choice, str) else ""
            flag = f"  NOT COUNTED: breaks the rules [{item.flagged}]" if item.flagged else ""
            # The author is the account that wrote the record: a voter whose vote was moved by
            # another account than the authority's sees it here (PROTOCOL 7.1: close the kinds).
            print(
                f"  height {record.height:<8} {record.content.kind:<8} by {record.content.author:<12} "
                f"{record.link.hex()}{extra}{flag}"
            )
        print(f"  {_standing(check.voter)}")
        print(f"  head: height {check.head.height}, hash {check.head.hash.hex()}")
        if check.proven is not None:
            print(f"  {_proof_sentence(check.proven)}")
            if (fresh := judged.get(check.ledger)) is not None:
                print(f"  {_fresh_sentence(check.proven, fresh)}")
    if all(check.proven is not None for check in checks):
        print("each record proven by inclusion in a signed checkpoint (--full verifies the whole chain)")
    else:
        print("chain verified")


def _proof_sentence(proven: VerifiedCheckpoint) -> str:
    checkpoint = proven.checkpoint
    witnesses = f", cosigned by {', '.join(proven.witnesses)}" if proven.witnesses else ""
    return f"proven in the checkpoint of {checkpoint.origin} at size {checkpoint.size}{witnesses}"


def _fresh_sentence(proven: VerifiedCheckpoint, freshness: Freshness) -> str:
    """Since when a majority of its witnesses vouch for the checkpoint, and STALE past the rule:
    a copy no longer updated (or lying by omission) may lack the voter's later records."""
    fresh = freshness.fresh_ms(proven)
    if fresh is None and freshness.needed:
        return f"STALE: fewer than {freshness.needed} of the trusted witnesses vouched for this checkpoint"
    if fresh is None:
        return "no witness vouched for this checkpoint"
    said = f"a majority of its witnesses last vouched for it at {time_text(fresh)}"
    said += f", {(freshness.now_ms - fresh) // 1000:,} s ago"
    if freshness.stale(proven):
        return f"STALE: {said}: an old view, which may lack later records of this id"
    return said


def _standing(voter: Voter | None) -> str:
    if voter is None:
        return "no valid registration for this id"
    if voter.withdrawn is not None:
        return f"withdrawn at height {voter.withdrawn.height}: no vote counts"
    if voter.vote is None:
        return "registered, no vote counts now"
    return f"your vote counts: {voter.vote.choice} (cast at height {voter.vote.record.height})"


def _ref(ref: Ref | None) -> dict[str, Any] | None:
    return None if ref is None else {"height": ref.height, "hash": ref.hash.hex()}


def _vote(voter: Voter | None) -> dict[str, Any] | None:
    """The active vote: its choice and record (it counts unless the voter withdrew)."""
    if voter is None or voter.vote is None:
        return None
    ref = voter.vote.record
    return {"choice": voter.vote.choice, "height": ref.height, "hash": ref.hash.hex()}


def _check_map(check: VoterCheck, freshness: Freshness | None = None) -> dict[str, Any]:
    voter = check.voter
    return {
        "ledger": check.ledger,
        "head": _ref(check.head),
        "records": [
            {
                "height": item.record.height,
                "hash": item.record.link.hex(),
                "kind": item.record.content.kind,
                "author": item.record.content.author,
                "payload": item.record.content.payload,
                "flagged": item.flagged,
            }
            for item in check.records
        ],
        "registered": voter is not None,
        "vote": _vote(voter),
        "counted": voter is not None and voter.counted,
        "withdrawn": _ref(voter.withdrawn) if voter is not None else None,
        "checkpoint": None
        if check.proven is None
        else {
            "origin": check.proven.checkpoint.origin,
            "size": check.proven.checkpoint.size,
            "root": check.proven.checkpoint.root.hex(),
            "witnesses": list(check.proven.witnesses),
            "fresh_ms": None if freshness is None else freshness.fresh_ms(check.proven),
            "stale": freshness is not None and freshness.stale(check.proven),
        },
    }
