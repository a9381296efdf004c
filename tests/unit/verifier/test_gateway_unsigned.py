"""Tiles past every signed root are never served immutable (review r16, finding 3).

A ledger of 520 records whose store keeps the home's signed checkpoint at 200 only. One byte of
record 300 is changed in the store's file, and the tree's row (8, 1) recomputed from the changed
records, as an insider with the file would: the row alone "proved" the full tile 1, and its
bundle was served with the forged bytes as immutable, kept a year by every cache.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from vledger.broker.http import HttpThread
from vledger.broker.signing import generate_signing_key, load_signing_key, signing_key_paths
from vledger.config.cluster import ClusterConfig
from vledger.node import tree
from vledger.node.store import ChainStore
from vledger.node.storefile import DB_NAME
from vledger.node.witness import HomeSigner, WitnessSigner, witness_name
from vledger.tests.unit.verifier.fakes import FakeRedis, NoRedis
from vledger.tests.unit.verifier.test_gateway_tampered import LEDGER, SEED, get, signed_ledger
from vledger.verifier.gateway import IMMUTABLE, Gateway, build_app, readiness

RECORDS = 520
SIGNED_AT = 200


@pytest.fixture
def config(tmp_path: Path) -> ClusterConfig:
    return signed_ledger(tmp_path, RECORDS, SIGNED_AT)


def _serve(gateway: Gateway) -> Iterator[str]:
    try:
        with HttpThread(build_app(gateway, readiness(gateway)), "127.0.0.1", 0) as server:
            yield f"http://127.0.0.1:{server.port}/ledgers/{LEDGER}"
    finally:
        gateway.close()


@pytest.fixture
def served(config: ClusterConfig) -> Iterator[str]:
    yield from _serve(Gateway(config, "replica-1", redis_client=NoRedis()))


def _forge_with_row(config: ClusterConfig) -> bytes:
    path = config.store_dir("replica-1") / DB_NAME
    with sqlite3.connect(path) as db:
        (data,) = db.execute("SELECT data FROM records WHERE ledger=? AND height=300", (LEDGER,)).fetchone()
        forged = bytes(data)[:-1] + bytes([data[-1] ^ 1])
        db.execute("UPDATE records SET data=? WHERE ledger=? AND height=300", (forged, LEDGER))
        rows = [
            bytes(d)
            for (d,) in db.execute(
                "SELECT data FROM records WHERE ledger=? AND height BETWEEN 256 AND 511 ORDER BY height", (LEDGER,)
            )
        ]
        row = tree.subtree_hashes([tree.leaf_hash(d) for d in rows], tree.TILE_HEIGHT)[0]
        assert db.execute("UPDATE tree SET hash=? WHERE ledger=? AND level=8 AND idx=1", (row, LEDGER)).rowcount == 1
    db.close()
    return forged


def test_a_full_bundle_past_the_signed_root_forged_with_its_row_is_not_immutable(
    served: str, config: ClusterConfig
) -> None:
    forged = _forge_with_row(config)
    assert get(f"{served}/checkpoint")[0] == 200
    for path in ("tile/entries/001", "tile/0/001"):
        status, headers, _ = get(f"{served}/{path}")
        assert status == 200, path
        assert headers["Cache-Control"] == "no-cache", f"{path}: no signed root covers it, served immutable"
    assert forged in get(f"{served}/tile/entries/001")[2]  # the store's word, but not for a year


def test_a_tile_of_level_1_is_immutable_only_under_a_signed_root(served: str) -> None:
    # Node (8, 0) covers leaves 0..255: past the root of size 200, as is (8, 1).
    for path in ("tile/1/000.p/1", "tile/1/000.p/2"):
        status, headers, _ = get(f"{served}/{path}")
        assert status == 200 and headers["Cache-Control"] == "no-cache", path
    assert get(f"{served}/tile/entries/000.p/{SIGNED_AT}")[1]["Cache-Control"] == IMMUTABLE


def test_tiles_are_proven_against_the_largest_verified_note_not_only_the_most_cosigned(
    config: ClusterConfig,
) -> None:
    # The witness cosigned the checkpoint of size 200 only; the home signed one of 512 since.
    # The served one is the cosigned 200, yet the signed 512 proves tiles 1 and 1/000.p/2.
    home = HomeSigner("t", SEED)
    generate_signing_key(config.keys_dir, "replica-1")
    seed = load_signing_key(signing_key_paths(config.keys_dir, "replica-1")[0]).seed
    witness = WitnessSigner(witness_name("t", "replica-1"), seed)
    with ChainStore(config.store_dir("replica-1"), origin="ingest-1") as store:
        cosigned = witness.cosign(home.sign(LEDGER, SIGNED_AT, store.root(LEDGER, SIGNED_AT)), 1_790_000_000)
        signed = home.sign(LEDGER, 512, store.root(LEDGER, 512))
        store.checkpoints.keep(LEDGER, "signed", 512, signed.root, signed.note)
    gateway = Gateway(config, "replica-1", redis_client=FakeRedis({b"replica-1": cosigned}))
    assert gateway.checkpoint(LEDGER).gathered.checkpoint.size == SIGNED_AT
    for base in _serve(gateway):
        for path in ("tile/entries/001", "tile/0/001", "tile/1/000.p/2"):
            status, headers, _ = get(f"{base}/{path}")
            assert status == 200 and headers["Cache-Control"] == IMMUTABLE, path
        assert get(f"{base}/tile/entries/002.p/{RECORDS - 512}")[1]["Cache-Control"] == "no-cache"
