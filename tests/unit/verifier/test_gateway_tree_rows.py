"""A store whose tree rows were changed in its file, behind the gateway (gw31).

The records stay genuine; one byte of a hash of the ``tree`` table is changed with SQLite, as an
insider with the file would. A tile of level 1 and up, an inclusion or consistency proof, a
receipt's proof are made of those rows: the gateway served them (a tile as immutable) and every
client then rejected them, where a changed record is refused ``store_damaged`` at the gateway.
600 records (two full level-0 tiles, a partial third, a level-1 tile of two hashes), the home's
signed checkpoint at 590; the rows changed are none that proving the checkpoint's edge tile reads.
Over a real store and real HTTP (aiohttp in a thread).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from vledger.config.cluster import ClusterConfig
from vledger.node import tree
from vledger.node.errors import StoreDamagedError, TreeSizeError
from vledger.node.storefile import DB_NAME
from vledger.tests.unit.verifier.fakes import FakeRedis, NoRedis, two_nodes
from vledger.tests.unit.verifier.test_gateway_tampered import (
    LEDGER,
    cosigned_ahead,
    get,
    refused_damaged,
    serving,
    signed_ledger,
)
from vledger.verifier import gateway as gateway_module
from vledger.verifier.gateway import IMMUTABLE, Gateway

RECORDS = 600
SIGNED_AT = 590


@pytest.fixture
def config(tmp_path: Path) -> ClusterConfig:
    return signed_ledger(tmp_path, RECORDS, SIGNED_AT)


@pytest.fixture
def served(config: ClusterConfig) -> Iterator[tuple[str, Gateway]]:
    with serving(config) as found:
        yield found


def flip(config: ClusterConfig, level: int, index: int) -> None:
    """Change one byte of the store's tree row ``(level, index)`` (and once more: put it back)."""
    with sqlite3.connect(config.store_dir("replica-1") / DB_NAME) as db:
        (found,) = db.execute(
            "SELECT hash FROM tree WHERE ledger = ? AND level = ? AND idx = ?", (LEDGER, level, index)
        ).fetchone()
        changed = bytes([found[0] ^ 1]) + bytes(found[1:])
        db.execute(
            "UPDATE tree SET hash = ? WHERE ledger = ? AND level = ? AND idx = ?", (changed, LEDGER, level, index)
        )
    db.close()


def ready(url: str) -> str | None:
    store: str | None = json.loads(get(f"{url}/readyz")[2])["checks"]["store"]
    return store


@pytest.mark.parametrize(
    ("row", "route"),
    [
        # tile 1/000's first hash: in no level-0 tile's path to the root of 590, nor the edge tile's
        ((8, 0), "tile/1/000.p/2"),
        # the sibling of leaf 3's 16: inside tile 0/000, which is proven from its records
        ((4, 1), "api/proof/inclusion?index=3&size=300"),
        ((4, 1), "api/receipts/3"),
        ((4, 1), f"api/proof/inclusion?index=3&size={SIGNED_AT}"),
        # the old root of 16, and a hash of the proof from 16
        ((4, 0), "api/proof/consistency?old=16&new=300"),
        ((4, 0), "api/proof/consistency?old=16&new=590"),
        ((5, 1), "api/proof/consistency?old=16&new=512"),
    ],
)
def test_a_changed_tree_row_is_never_served_and_the_ledger_is_served_again_once_repaired(
    served: tuple[str, Gateway],
    config: ClusterConfig,
    monkeypatch: pytest.MonkeyPatch,
    row: tuple[int, int],
    route: str,
) -> None:
    url, _ = served
    wanted = (
        f"{url}/ledgers/{LEDGER}/{route}" if route.startswith("tile") else f"{url}/api/ledgers/{LEDGER}/{route[4:]}"
    )
    assert get(f"{url}/ledgers/{LEDGER}/checkpoint")[0] == 200
    flip(config, *row)
    assert refused_damaged(wanted), wanted
    assert ready(url) is not None
    # Once found, nothing of that copy of the ledger is served, its checkpoint included.
    assert refused_damaged(f"{url}/ledgers/{LEDGER}/checkpoint")
    flip(config, *row)  # repaired in place (the same file): proven again at a request, served again
    monkeypatch.setattr(gateway_module, "REFUSAL_SECONDS", 0.0)
    status, _, body = get(wanted)
    assert status == 200, body[:300]
    assert get(f"{url}/ledgers/{LEDGER}/checkpoint")[0] == 200
    assert ready(url) is None


def test_a_level_1_tile_changed_after_it_was_served_is_served_as_proven(
    served: tuple[str, Gateway], config: ClusterConfig
) -> None:
    # A proven tile is kept and served from memory: a row changed later never goes out.
    url, _ = served
    tile = f"{url}/ledgers/{LEDGER}/tile/1/000.p/2"
    status, headers, genuine = get(tile)
    assert status == 200 and headers["Cache-Control"] == IMMUTABLE
    flip(config, 8, 1)
    assert get(tile)[2] == genuine


def _all_routes(url: str, size: int, signed: int) -> Iterator[str]:
    tiles = f"{url}/ledgers/{LEDGER}"
    for level in (0, 1):
        for index in range(-(-(size >> (tree.TILE_HEIGHT * level)) // tree.TILE_WIDTH)):
            for width in sorted({1, tree.tile_width(level, index, signed), tree.tile_width(level, index, size)}):
                if width:
                    yield f"{tiles}/{tree.tile_path(level, index, width)}"
    api = f"{url}/api/ledgers/{LEDGER}"
    for n in sorted({1, 16, 17, 255, 256, 257, 300, 512, signed - 1, signed, size - 1, size}):
        yield f"{api}/proof/inclusion?index={n - 1}&size={n}"
        yield f"{api}/proof/inclusion?index=0&size={n}"
        yield f"{api}/proof/inclusion?index={n // 2}&size={n}"
        for m in sorted({1, 2, 16, 255, 256, 257, 300, signed, n}):
            if m <= n:
                yield f"{api}/proof/consistency?old={m}&new={n}"
    for height in (0, 3, 255, 256, 511, 512, signed - 1):
        yield f"{api}/receipts/{height}"


def test_an_honest_store_is_never_refused_at_the_edges(served: tuple[str, Gateway]) -> None:
    # Partial tiles of either level at the checkpoint's size and the store's, proofs of sizes
    # under, at and past the signed root (past it nothing proves them: served, not refused).
    url, _ = served
    for route in _all_routes(url, RECORDS, SIGNED_AT):
        status, headers, body = get(route)
        assert status == 200, (route, body[:300])
        if "/tile/" in route:
            level, index, width = tree.parse_tile_path(route.split(f"/{LEDGER}/", 1)[1])
            proven = tree.tile_width(level, index, SIGNED_AT) >= width
            assert headers["Cache-Control"] == (IMMUTABLE if proven else "no-cache"), route
    assert ready(url) is None


def test_a_checkpoint_newer_than_the_store_refuses_nothing(config: ClusterConfig) -> None:
    # A witness cosigned a checkpoint past this store's records (it lags): the store's own is
    # what proves, and nothing is refused.
    with serving(config, FakeRedis({b"replica-1": cosigned_ahead(config, RECORDS)})) as (url, _):
        for route in _all_routes(url, RECORDS, SIGNED_AT):
            status, _, body = get(route)
            assert status == 200, (route, body[:300])
        assert ready(url) is None


def test_a_tile_past_the_checkpoint_must_begin_with_the_hashes_proven(config: ClusterConfig) -> None:
    # Signed at 300: tile 1/000 holds one proven hash; its width 2 (the store's 600 records) is
    # served no-cache, and once the proven hash's row changed, never.
    signed = signed_ledger(config.path.parent / "again", RECORDS, 300)
    gateway = Gateway(signed, "replica-1", redis_client=NoRedis())
    try:
        assert gateway.tile(LEDGER, "tile/1/000.p/1")[1] is True
        assert gateway.tile(LEDGER, "tile/1/000.p/2")[1] is False
        flip(signed, 8, 0)
        with pytest.raises(StoreDamagedError, match="not the one proven"):
            gateway.tile(LEDGER, "tile/1/000.p/2")
    finally:
        gateway.close()


def test_a_check_that_checks_nothing_now_ends_the_refusal(
    served: tuple[str, Gateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proof of a size the copy no longer holds (cut back to heal) cannot be run again: the
    # request that ran it, for another record, was answered that proof's bad_tree_size.
    url, gateway = served
    record = f"{url}/api/ledgers/{LEDGER}/records/3"
    assert get(record)[0] == 200

    def gone() -> None:
        raise TreeSizeError(f"size 999 is past the {RECORDS} records")

    gateway.contradiction(LEDGER, "a proof of size 999 is wrong", gateway._generation, 0, gone)
    assert refused_damaged(record)
    monkeypatch.setattr(gateway_module, "REFUSAL_SECONDS", 0.0)
    assert get(record)[0] == 200
    assert ready(url) is None


BIG = 65_536 + 300  # a level-2 tile (one node of 65,536 leaves), level-1 tiles full and partial
BIG_SIGNED = BIG - 10


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of BIG records signed at BIG_SIGNED, built once (~5 s); each test serves a copy."""
    return signed_ledger(tmp_path_factory.mktemp("big"), BIG, BIG_SIGNED).path


def _copy(big_store: Path, tmp_path: Path) -> ClusterConfig:
    shutil.copytree(big_store.parent, tmp_path / "big")
    return two_nodes(tmp_path / "big" / big_store.name)


def test_an_honest_store_of_a_level_2_tile_is_never_refused(big_store: Path, tmp_path: Path) -> None:
    with serving(_copy(big_store, tmp_path)) as (url, _):
        tiles, api = f"{url}/ledgers/{LEDGER}", f"{url}/api/ledgers/{LEDGER}"
        for path, proven in (
            ("tile/2/000.p/1", True),
            ("tile/1/000", True),
            ("tile/1/001.p/1", True),
            ("tile/0/256", True),
            (f"tile/0/257.p/{BIG_SIGNED - 257 * 256}", True),
            (f"tile/0/257.p/{BIG - 257 * 256}", False),
        ):
            status, headers, body = get(f"{tiles}/{path}")
            assert status == 200 and headers["Cache-Control"] == (IMMUTABLE if proven else "no-cache"), (path, body)
        for route in (
            "proof/inclusion?index=65535&size=65536",
            f"proof/inclusion?index=65536&size={BIG_SIGNED}",
            f"proof/inclusion?index=70&size={BIG_SIGNED - 1}",
            f"proof/consistency?old=65536&new={BIG_SIGNED}",
            "proof/consistency?old=300&new=65536",
            f"proof/consistency?old=65537&new={BIG}",
            "receipts/65600",
        ):
            status, _, body = get(f"{api}/{route}")
            assert status == 200, (route, body[:300])
        assert ready(url) is None


def test_a_changed_row_of_a_full_level_1_tile_is_never_served(big_store: Path, tmp_path: Path) -> None:
    # The node of leaves 1280..1535: in no path the checkpoint's edge tile or tile 1/000 itself
    # reads from the store, only in tile 0/004's (which no request asked for).
    config = _copy(big_store, tmp_path)
    with serving(config) as (url, _):
        flip(config, 8, 5)
        assert refused_damaged(f"{url}/ledgers/{LEDGER}/tile/1/000")
