"""The Merkle tree against outside vectors (transparency-dev/merkle) and by properties."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vledger.node import tree
from vledger.node.errors import BadRequestError, ProofError

VECTORS = json.loads((Path(__file__).parents[2] / "vectors" / "rfc6962.json").read_text(encoding="utf-8"))
LEAVES = [bytes.fromhex(x) for x in VECTORS["leaves"]]
ROOTS = [bytes.fromhex(x) for x in VECTORS["roots"]]
NODES = [[bytes.fromhex(x) for x in level] for level in VECTORS["node_hashes"]]


def _hex(p: dict[str, Any], key: str) -> bytes:
    return bytes.fromhex(p[key])


def _proof(p: dict[str, Any]) -> list[bytes]:
    return [bytes.fromhex(x) for x in p["proof"]]


class _Tree:
    """A tree kept the plain way: every level as a list, for ``hash_at``."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.levels: list[list[bytes]] = [leaves]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append([tree.node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])

    def hash_at(self, level: int, index: int) -> bytes:
        return self.levels[level][index]


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 2.1.1's MTH, recursively, straight from the definition."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return tree.node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


VECTOR_TREE = _Tree([tree.leaf_hash(x) for x in LEAVES])


def test_the_source_of_the_vectors_is_named() -> None:
    source = VECTORS["source"]
    assert source["repository"] == "https://github.com/transparency-dev/merkle"
    assert len(source["commit"]) == 40
    assert len(VECTORS["inclusion"]) > 50 and len(VECTORS["consistency"]) > 50


def test_leaf_hashes_and_every_complete_subtree_match_the_vectors() -> None:
    assert ROOTS[0] == tree.EMPTY_ROOT
    for level, hashes in enumerate(NODES):
        for index, expected in enumerate(hashes):
            assert VECTOR_TREE.hash_at(level, index) == expected, (level, index)


@pytest.mark.parametrize("size", range(9))
def test_frontier_and_root_at_give_the_vector_root_of_every_size(size: int) -> None:
    frontier = tree.Frontier()
    for data in LEAVES[:size]:
        frontier.append(tree.leaf_hash(data))
    assert frontier.root() == ROOTS[size]
    assert tree.root_at(size, VECTOR_TREE.hash_at) == ROOTS[size]
    assert tree.Frontier.at(size, VECTOR_TREE.hash_at).encode() == frontier.encode()
    assert tree.Frontier.decode(frontier.encode()).encode() == frontier.encode()


def test_frontier_append_returns_each_completed_subtree() -> None:
    frontier = tree.Frontier()
    seen = []
    for data in LEAVES:
        seen.extend(frontier.append(tree.leaf_hash(data)))
    assert sorted(seen) == sorted((lv, i, h) for lv, hashes in enumerate(NODES) for i, h in enumerate(hashes))


@settings(max_examples=100)
@given(st.integers(0, 40), st.lists(st.integers(0, 12), max_size=6), st.integers(0, 5))
def test_frontier_grow_is_append_leaf_by_leaf_from_min_level(start: int, runs: list[int], min_level: int) -> None:
    # A group commit grows a ledger's frontier by runs of leaves: the same frontier, and the
    # same subtrees from min_level up, as appending each leaf in turn.
    leaves = [hashlib.sha256(n.to_bytes(4, "big")).digest() for n in range(start + sum(runs))]
    one_by_one, by_runs = tree.Frontier(), tree.Frontier()
    for leaf in leaves[:start]:
        one_by_one.append(leaf)
        by_runs.append(leaf)
    at = start
    for run in runs:
        expected = [done for leaf in leaves[at : at + run] for done in one_by_one.append(leaf) if done[0] >= min_level]
        assert by_runs.grow(leaves[at : at + run], min_level) == expected
        assert by_runs.encode() == one_by_one.encode()
        at += run


@settings(max_examples=100)
@given(st.integers(0, 6), st.lists(st.integers(0, 5), max_size=5), st.integers(0, 4))
def test_frontier_grow_level_is_grow_of_the_subtrees_leaves(start: int, runs: list[int], level: int) -> None:
    # A follower given its page checker's subtrees of 2**level leaves grows by their hashes: the
    # same frontier, and the same subtrees from that level up, as growing by their leaves.
    width = 1 << level
    leaves = [hashlib.sha256(n.to_bytes(4, "big")).digest() for n in range((start + sum(runs)) * width)]
    by_leaves, by_subtrees = tree.Frontier(), tree.Frontier()
    by_leaves.grow(leaves[: start * width])
    by_subtrees.grow(leaves[: start * width])
    at = start * width
    for run in runs:
        piece = leaves[at : at + run * width]
        nodes = tree.subtree_hashes(piece, level)
        assert nodes == [tree.Frontier.of_leaves(piece[i : i + width]).root() for i in range(0, len(piece), width)]
        assert by_subtrees.grow_level(nodes, level) == by_leaves.grow(piece, level)
        assert by_subtrees.encode() == by_leaves.encode()
        at += len(piece)


def test_frontier_grow_level_refuses_a_subtree_that_would_not_land_on_its_place() -> None:
    frontier = tree.Frontier()
    frontier.grow([tree.leaf_hash(b"a")] * 3)
    with pytest.raises(ProofError, match="cannot start at 3"):
        frontier.grow_level([tree.leaf_hash(b"b")], 1)
    frontier.append(tree.leaf_hash(b"c"))
    with pytest.raises(ProofError, match="subtree hash 1"):
        frontier.grow_level([tree.leaf_hash(b"b"), b"short"], 1)
    assert frontier.size == 4


def test_frontier_grow_refuses_a_bad_leaf_before_adding_any() -> None:
    frontier = tree.Frontier()
    frontier.append(tree.leaf_hash(b"a"))
    with pytest.raises(ProofError, match="leaf hash 1"):
        frontier.grow([tree.leaf_hash(b"b"), b"short"])
    assert frontier.size == 1


@pytest.mark.parametrize("probe", VECTORS["inclusion"], ids=lambda p: p["file"].removeprefix("testdata/"))
def test_inclusion_vectors(probe: dict[str, Any]) -> None:
    args = (_hex(probe, "leafHash"), probe["leafIdx"], probe["treeSize"], _proof(probe), _hex(probe, "root"))
    if probe["wantErr"]:
        with pytest.raises(ProofError):
            tree.verify_inclusion(*args)
        return
    tree.verify_inclusion(*args)
    if probe["desc"] == "happy path":  # and we build the same proof from the leaves
        assert tree.inclusion_proof(probe["leafIdx"], probe["treeSize"], VECTOR_TREE.hash_at) == _proof(probe)


@pytest.mark.parametrize("probe", VECTORS["consistency"], ids=lambda p: p["file"].removeprefix("testdata/"))
def test_consistency_vectors(probe: dict[str, Any]) -> None:
    args = (probe["size1"], probe["size2"], _hex(probe, "root1"), _hex(probe, "root2"), _proof(probe))
    if probe["wantErr"]:
        with pytest.raises(ProofError):
            tree.verify_consistency(*args)
        return
    if len(args[2]) != tree.HASH_SIZE:
        # The Go verifier never looks at the roots of equal sizes beyond comparing them; we
        # refuse any root that is not a SHA-256 hash before looking at anything else.
        with pytest.raises(ProofError, match="32-byte"):
            tree.verify_consistency(*args)
        return
    tree.verify_consistency(*args)
    if probe["desc"] == "happy path":
        assert tree.consistency_proof(probe["size1"], probe["size2"], VECTOR_TREE.hash_at) == _proof(probe)


# --- properties over random trees -------------------------------------------------------


def _random_tree(size: int) -> _Tree:
    return _Tree([tree.leaf_hash(i.to_bytes(4, "big")) for i in range(size)])


def _flip(data: bytes, at: int) -> bytes:
    at %= len(data)
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


@settings(max_examples=150, deadline=None)
@given(size=st.integers(1, 300), data=st.data())
def test_every_inclusion_proof_verifies_and_no_change_does(size: int, data: st.DataObject) -> None:
    t = _random_tree(size)
    index = data.draw(st.integers(0, size - 1))
    root = tree.root_at(size, t.hash_at)
    assert root == _mth(t.levels[0])
    proof = tree.inclusion_proof(index, size, t.hash_at)
    leaf = t.levels[0][index]
    tree.verify_inclusion(leaf, index, size, proof, root)
    at = data.draw(st.integers(0, 31))
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        with pytest.raises(ProofError):
            tree.verify_inclusion(leaf, index, size, [*proof[:k], _flip(proof[k], at), *proof[k + 1 :]], root)
    with pytest.raises(ProofError):
        tree.verify_inclusion(leaf, index, size, proof, _flip(root, at))
    with pytest.raises(ProofError):
        tree.verify_inclusion(_flip(leaf, at), index, size, proof, root)
    other = data.draw(st.integers(0, size).filter(lambda i: i != index))
    with pytest.raises(ProofError):
        tree.verify_inclusion(leaf, other, size, proof, root)
    # A proof binds its tree size only through its shape (the signed size binds the rest):
    # any size whose path has another length, or that lacks the leaf, is refused.
    wrong = data.draw(st.integers(1, 400).filter(lambda s: s != size))
    if index >= wrong or len(tree.inclusion_proof(index, wrong, _random_tree(wrong).hash_at)) != len(proof):
        with pytest.raises(ProofError):
            tree.verify_inclusion(leaf, index, wrong, proof, root)


@settings(max_examples=150, deadline=None)
@given(new=st.integers(1, 300), data=st.data())
def test_every_consistency_proof_verifies_and_no_change_does(new: int, data: st.DataObject) -> None:
    t = _random_tree(new)
    old = data.draw(st.integers(1, new))
    old_root, new_root = tree.root_at(old, t.hash_at), tree.root_at(new, t.hash_at)
    proof = tree.consistency_proof(old, new, t.hash_at)
    tree.verify_consistency(old, new, old_root, new_root, proof)
    at = data.draw(st.integers(0, 31))
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        with pytest.raises(ProofError):
            tree.verify_consistency(old, new, old_root, new_root, [*proof[:k], _flip(proof[k], at), *proof[k + 1 :]])
    with pytest.raises(ProofError):
        tree.verify_consistency(old, new, _flip(old_root, at), new_root, proof)
    with pytest.raises(ProofError):
        tree.verify_consistency(old, new, old_root, _flip(new_root, at), proof)
    wrong_old = data.draw(st.integers(0, new + 1))
    wrong_new = data.draw(st.integers(0, new + 50))
    for o, n in ((wrong_old, new), (old, wrong_new)):
        same_shape = 0 < o <= n and len(tree.consistency_proof(o, n, _random_tree(n).hash_at)) == len(proof)
        if (o, n) != (old, new) and not same_shape:
            with pytest.raises(ProofError):
                tree.verify_consistency(o, n, old_root, new_root, proof)


def test_a_proof_is_bounded_before_any_work() -> None:
    leaf = tree.leaf_hash(b"x")
    with pytest.raises(ProofError, match="at most 64 hashes"):
        tree.verify_inclusion(leaf, 0, 2, [leaf] * 65, leaf)
    with pytest.raises(ProofError, match="proof hash 1 is not a 32-byte hash"):
        tree.verify_inclusion(leaf, 0, 4, [leaf, leaf[:31]], leaf)
    with pytest.raises(ProofError, match="at most 64 hashes"):
        tree.verify_consistency(1, 2, leaf, leaf, [leaf] * 65)
    with pytest.raises(ProofError, match="old root"):
        tree.verify_consistency(1, 2, b"", leaf, [leaf])


def test_sizes_outside_the_rfc_are_refused_with_a_reason() -> None:
    t = _random_tree(4)
    with pytest.raises(ProofError, match="need 0 < old <= new"):
        tree.consistency_proof(0, 4, t.hash_at)
    with pytest.raises(ProofError, match="need 0 < old <= new"):
        tree.consistency_proof(5, 4, t.hash_at)
    with pytest.raises(ProofError, match="not in a tree of size 4"):
        tree.inclusion_proof(4, 4, t.hash_at)
    assert tree.consistency_proof(4, 4, t.hash_at) == []
    with pytest.raises(ProofError, match="empty tree"):
        tree.verify_consistency(0, 4, tree.EMPTY_ROOT, tree.root_at(4, t.hash_at), [])
    with pytest.raises(ProofError, match="different roots"):
        tree.verify_consistency(4, 4, tree.EMPTY_ROOT, tree.root_at(4, t.hash_at), [])


def test_frontier_refuses_a_bad_encoding() -> None:
    with pytest.raises(ProofError, match="8 \\+ 32\\*k"):
        tree.Frontier.decode(b"\x00" * 7)
    with pytest.raises(ProofError, match="edge hashes"):
        tree.Frontier.decode((3).to_bytes(8, "big") + b"\x00" * 32)


# --- tiles --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "index", "width", "path"),
    [
        (0, 0, 256, "tile/0/000"),
        (0, 1234067, 256, "tile/0/x001/x234/067"),
        (1, 5, 17, "tile/1/005.p/17"),
        (2, 1000, 1, "tile/2/x001/000.p/1"),
        (63, 999, 255, "tile/63/999.p/255"),
        (0, 2**63 - 1, 256, "tile/0/x009/x223/x372/x036/x854/x775/807"),
    ],
)
def test_tile_paths_round_trip(level: int, index: int, width: int, path: str) -> None:
    assert tree.tile_path(level, index, width) == path
    assert tree.parse_tile_path(path) == (level, index, width)


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/1",
        "tile/00/000",
        "tile/64/000",
        "tile/0/x000/001",
        "tile/0/000.p/256",
        "tile/0/000.p/0",
        "tile/0/000.p/07",
        "tile/0/x001",
        "tile/0/001/",
        "tile/entries/000",
        "../tile/0/000",
        "tile/0/000\n",
        "tile/0/x009/x223/x372/x036/x854/x775/808",  # 2**63: past any tree (the outsider's was longer)
        "tile/0/x999/x999/x999/x999/x999/x999/x999/999",
    ],
)
def test_tile_paths_that_are_not_canonical_are_refused(path: str) -> None:
    with pytest.raises(BadRequestError):
        tree.parse_tile_path(path)


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/x009/x223/x372/x036/x854/x775/808",
        "tile/0/999999999999999999999999999",  # outsider34: it said "not a tile path"
        "tile/0/x9999999999999999999/000.p/5",
    ],
)
def test_a_tile_index_past_the_largest_is_told_so_however_it_is_grouped(path: str) -> None:
    with pytest.raises(BadRequestError, match=r"a tile index is at most 2\*\*63 - 1"):
        tree.parse_tile_path(path)


def test_tile_widths_follow_the_spec_example() -> None:
    # tlog-tiles: a tree of 70,000 leaves has 273 full level-0 tiles, a partial one of 112,
    # one full level-1 tile, a partial one of 17, and a partial level-2 tile of width 1.
    size = 70_000
    assert [tree.tile_width(0, n, size) for n in (0, 272, 273, 274)] == [256, 256, 112, 0]
    assert [tree.tile_width(1, n, size) for n in (0, 1, 2)] == [256, 17, 0]
    assert [tree.tile_width(2, 0, size), tree.tile_width(3, 0, size)] == [1, 0]
    assert tree.tile_width(1, 0, 256) == 1


def test_tile_hashes_are_the_nodes_at_level_8l() -> None:
    t = _random_tree(600)
    tile = tree.tile_hashes(0, 2, 88, t.hash_at)
    assert tile == b"".join(t.levels[0][512:600])
    assert tree.tile_hashes(1, 0, 2, t.hash_at) == t.levels[8][0] + t.levels[8][1]


# --- frontiers built in blocks: what a chunked verifier joins ---------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 300), st.data())
def test_a_frontier_built_in_blocks_is_the_one_built_leaf_by_leaf(count: int, data: st.DataObject) -> None:
    leaves = [tree.leaf_hash(i.to_bytes(4, "big")) for i in range(count)]
    one_by_one = tree.Frontier()
    for leaf in leaves:
        one_by_one.append(leaf)
    assert tree.Frontier.of_leaves(leaves).hashes == one_by_one.hashes
    cuts = sorted(data.draw(st.lists(st.integers(0, count), max_size=4)))
    in_parts = tree.Frontier()
    for start, stop in zip([0, *cuts], [*cuts, count], strict=True):
        in_parts.append_all(leaves[start:stop])
    assert (in_parts.size, in_parts.hashes, in_parts.root()) == (count, one_by_one.hashes, one_by_one.root())


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 300), st.sampled_from((0, 1, 4)), st.data())
def test_a_frontier_grown_in_parts_keeps_each_complete_subtree_of_a_level(
    count: int, level: int, data: st.DataObject
) -> None:
    """append_keeping: the frontier of append_all, and every subtree of 2**level leaves it
    completed, in order, whatever the parts (as a verifier's batches, cut at checkpoints)."""
    leaves = [tree.leaf_hash(i.to_bytes(4, "big")) for i in range(count)]
    one_by_one = tree.Frontier()
    expected = [node for at, _, node in one_by_one.grow(leaves, level) if at == level]
    cuts = sorted(data.draw(st.lists(st.integers(0, count), max_size=4)))
    in_parts, kept = tree.Frontier(), []
    for start, stop in zip([0, *cuts], [*cuts, count], strict=True):
        kept += in_parts.append_keeping(leaves[start:stop], level)
    assert (in_parts.size, in_parts.hashes) == (count, one_by_one.hashes)
    assert kept == expected and len(kept) == count >> level


def test_subtrees_join_only_on_their_own_boundary() -> None:
    leaves = [tree.leaf_hash(bytes([i])) for i in range(48)]
    joined = tree.Frontier()
    joined.append_subtrees([tree.Frontier.of_leaves(leaves[i : i + 16]).root() for i in (0, 16, 32)], 4)
    assert (joined.size, joined.hashes) == (48, tree.Frontier.of_leaves(leaves).hashes)
    with pytest.raises(ProofError, match="do not start on a subtree"):
        tree.Frontier.of_leaves(leaves[:3]).append_subtrees([joined.hashes[0]], 4)


def test_a_subtree_joins_only_where_it_lands_on_complete_subtrees() -> None:
    leaves = [tree.leaf_hash(bytes([i])) for i in range(12)]
    joined = tree.Frontier.of_leaves(leaves[:8])
    joined.extend(tree.Frontier.of_leaves(leaves[8:]))  # 4 leaves at 8: a multiple of 4
    assert joined.root() == tree.Frontier.of_leaves(leaves).root()
    with pytest.raises(ProofError):
        tree.Frontier.of_leaves(leaves[:6]).extend(tree.Frontier.of_leaves(leaves[6:]))  # 6 leaves at 6


_BIG = [tree.leaf_hash(i.to_bytes(4, "big")) for i in range(70_000)]
_BIG_TREE: dict[tuple[int, int], bytes] = {}  # every complete subtree of _BIG, filled once


def _big_hash_at(level: int, index: int) -> bytes:
    if not _BIG_TREE:
        frontier = tree.Frontier()
        _BIG_TREE.update(((at, i), node) for at, i, node in frontier.grow(_BIG))
    return _BIG_TREE[(level, index)]


@pytest.mark.parametrize(
    ("size", "level", "index"),
    [
        (1, 0, 0),
        (256, 0, 0),
        (300, 0, 0),
        (300, 0, 1),
        (1000, 0, 2),
        (1000, 0, 3),
        (70_000, 0, 5),
        (256, 1, 0),  # a level-1 tile of one hash: the whole tree
        (300, 1, 0),
        (1000, 1, 0),  # 3 hashes, the tree's right edge a partial subtree beside them
        (1024, 1, 0),
        (65_536, 1, 0),  # full
        (65_537, 1, 0),
        (70_000, 1, 0),
        (70_000, 1, 1),  # 17 hashes at 256 on, after a full tile
        (65_536, 2, 0),  # one hash of tree level 16
        (70_000, 2, 0),
    ],
)
def test_a_tile_s_hashes_lead_to_the_root_and_any_changed_one_does_not(size: int, level: int, index: int) -> None:
    root = tree.root_at(size, _big_hash_at)
    below, first = tree.TILE_HEIGHT * level, index * tree.TILE_WIDTH
    mine = [_big_hash_at(below, first + i) for i in range(tree.tile_width(level, index, size))]
    tree.verify_tile(mine, level, index, size, root, _big_hash_at)
    for changed in {0, len(mine) // 2, len(mine) - 1}:
        forged = [*mine[:changed], tree.leaf_hash(b"forged"), *mine[changed + 1 :]]
        with pytest.raises(ProofError):
            tree.verify_tile(forged, level, index, size, root, _big_hash_at)
    with pytest.raises(ProofError):  # one hash short: not all of the tile
        tree.verify_tile(mine[:-1], level, index, size, root, _big_hash_at)
    with pytest.raises(ProofError):  # the right hashes, another root
        tree.verify_tile(mine, level, index, size, tree.leaf_hash(b"other"), _big_hash_at)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 70_000), st.integers(0, 16), st.data())
def test_a_subtree_s_path_leads_to_the_root(size: int, level: int, data: st.DataObject) -> None:
    # Above a level the tree is the RFC tree of ceil(size / 2**level) leaves (tree.inclusion_proof).
    if size >> level == 0:
        with pytest.raises(ProofError):
            tree.inclusion_proof(0, size, _big_hash_at, level)
        return
    index = data.draw(st.integers(0, (size >> level) - 1))
    path = tree.inclusion_proof(index, size, _big_hash_at, level)
    coarse = -(-size >> level)
    assert tree.root_from_inclusion(_big_hash_at(level, index), index, coarse, path) == tree.root_at(size, _big_hash_at)
