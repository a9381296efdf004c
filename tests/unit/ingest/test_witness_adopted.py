# ruff: noqa: F811
"""(review r23 F2) a witness that adopted its own published note (ce0e035)
and whose store follows a home that never reaches that size (a rewritten tail shorter than
what it cosigned: a home put back or replaced, quiet since) stays silent for good: it cosigns
nothing and raises nothing, where the same row kept in its store raises cosigned_not_held."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vledger.node.checkpoint_log import COSIGNED
from vledger.node.record import Record
from vledger.node.store import ChainStore

from .test_witness import HOME, LEDGER, Copy, chain, forked  # noqa: F401 (fixtures)


def _cosigned_10(directory: Path, chain: list[Record], client: Any) -> None:
    first = Copy(directory, chain, 10, client)
    first.witness.verified(first.checkpoint(10))
    first.witness.turn()
    assert first.published() == 10
    first.store.close()


def test_a_store_row_above_the_store_is_reported(
    tmp_path: Path,
    chain: list[Record],
    forked: list[Record],
    redis_client: Any,
) -> None:
    """The baseline: the row kept, the store cut to a shorter other tree: reported at start."""
    _cosigned_10(tmp_path / "a", chain, redis_client)
    with ChainStore(tmp_path / "a") as store:
        rows = store.checkpoints.all(LEDGER, COSIGNED)
    with ChainStore(tmp_path / "b") as store:
        store.append_records(forked[:8])
        for row in rows:
            store.checkpoints.keep(LEDGER, COSIGNED, row.size, row.root, row.note)
    again = Copy(tmp_path / "b", [], 0, redis_client)
    try:
        again.witness.verified(HOME.sign(LEDGER, 8, again.store.root(LEDGER, 8)))
        again.witness.turn()
        assert [a.what for a in again.alerts] == ["cosigned_not_held"]
    finally:
        again.store.close()


def test_an_adopted_note_above_a_store_that_never_reaches_it_is_reported(
    tmp_path: Path,
    chain: list[Record],
    forked: list[Record],
    redis_client: Any,
) -> None:
    """The store lost; the new one follows a home whose (other) tree stops at 8 and stays there."""
    _cosigned_10(tmp_path / "a", chain, redis_client)
    again = Copy(tmp_path / "b", forked, 8, redis_client)
    try:
        for _ in range(3):  # heartbeats of the quiet home's checkpoint at 8
            again.witness.verified(HOME.sign(LEDGER, 8, again.store.root(LEDGER, 8)))
            again.witness.turn()
        assert again.published() == 10  # nothing cosigned of the other tree: right
        assert [a.what for a in again.alerts] == ["cosigned_not_held"], "blocked for good, and nobody told"
    finally:
        again.store.close()
