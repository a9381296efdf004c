"""A witness whose store is lost (or rebuilt by `vledger repair` below what it cosigned) must not
forget what it cosigned and cosign a fork of it: one witness key on two trees (review r22 F1).
Its own published note in Redis is what it goes by (PROTOCOL 10.7)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vledger.node.checkpoint_log import COSIGNED
from vledger.node.record import Record
from vledger.node.store import ChainStore
from vledger.node.tree import verify_consistency
from vledger.node.witness import check_cosigned, home_key, witness_key

from .test_witness import CLUSTER, HOME, HOME_KEY, LEDGER, NAME, WITNESS_KEY, Copy, chain, forked  # noqa: F401 (fixtures)


def _cosigned_roots(repl: Any) -> tuple[int, bytes] | None:
    note = repl.cosignatures(LEDGER).get("replica-1")
    if note is None:
        return None
    log_key = home_key(CLUSTER, LEDGER, HOME_KEY.public.raw)
    c = check_cosigned(note, LEDGER, CLUSTER, log_key, witness_key(NAME, WITNESS_KEY.public.raw))
    return c.size, c.root


def _cosigns_no_fork_of(cosigned: tuple[int, bytes], again: Copy) -> None:
    """The witness on its new store, shown the home's rewritten tree at 12, never publishes a
    cosignature that does not extend ``cosigned``."""
    try:
        again.witness.verified(HOME.sign(LEDGER, 12, again.store.root(LEDGER, 12)))
        again.witness.turn()
        now = _cosigned_roots(again.repl)
        assert now is not None
        _never_two_trees(cosigned, now, again.store)
    finally:
        again.store.close()


def _never_two_trees(first: tuple[int, bytes], later: tuple[int, bytes], proof_source: ChainStore) -> None:
    """The witness's later cosigned checkpoint must extend its earlier one."""
    (size1, root1), (size2, root2) = first, later
    if size2 == size1:
        assert root2 == root1, "one witness key cosigned two roots at one size"
        return
    proof = proof_source.consistency_proof(LEDGER, size1, size2)
    verify_consistency(size1, size2, root1, root2, proof)  # raises ProofError: another tree


def test_a_witness_whose_store_was_lost_never_cosigns_a_fork_of_what_it_published(
    tmp_path: Path,
    chain: list[Record],  # noqa: F811
    forked: list[Record],  # noqa: F811
    redis_client: Any,
) -> None:
    first = Copy(tmp_path / "disk-1", chain, 10, redis_client)
    first.witness.verified(first.checkpoint(10))
    first.witness.turn()
    cosigned = _cosigned_roots(first.repl)
    assert cosigned is not None and cosigned[0] == 10
    first.store.close()
    # The disk is replaced; the node starts on a new store, which its follower fills from the home,
    # which now serves (and signs with its own key) its rewritten tail. Redis still holds the
    # witness's own note of the true tree at 10.
    _cosigns_no_fork_of(cosigned, Copy(tmp_path / "disk-2", forked, 12, redis_client))


def test_a_witness_repaired_below_what_it_cosigned_never_cosigns_a_fork_of_it(
    tmp_path: Path,
    chain: list[Record],  # noqa: F811
    forked: list[Record],  # noqa: F811
    redis_client: Any,
) -> None:
    """tools/repair.py carry_checkpoints keeps only the cosigned rows the new copy proves: a witness
    ahead of the quorum checkpoint (it cosigned 10, a quorum only 6) loses its row at 10, then
    catches up past 6 "as every follower does" from the home."""
    first = Copy(tmp_path / "store", chain, 10, redis_client)
    first.witness.verified(first.checkpoint(6))
    first.witness.turn()
    first.witness.verified(first.checkpoint(10))
    first.witness.turn()
    cosigned = _cosigned_roots(first.repl)
    assert cosigned is not None and cosigned[0] == 10
    six = first.store.checkpoints.latest(LEDGER, COSIGNED)
    assert six is not None and six.size == 10
    rows = [r for r in first.store.checkpoints.all(LEDGER, COSIGNED) if r.size <= 6]
    first.store.close()
    # The repaired store: records 0..5 (the quorum checkpoint's), the cosigned row at 6 carried over.
    repaired = tmp_path / "repaired"
    with ChainStore(repaired) as store:
        store.append_records(chain[:6])
        for row in rows:
            store.checkpoints.keep(LEDGER, COSIGNED, row.size, row.root, row.note)
        store.append_records(forked[6:12])  # then caught up from the home's rewritten tail
    _cosigns_no_fork_of(cosigned, Copy(repaired, [], 0, redis_client))
