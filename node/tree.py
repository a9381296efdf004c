"""The Merkle tree of a ledger: RFC 9162 section 2 (the RFC 6962 tree), pure functions over bytes.

A ledger's records, in height order, are the leaves of one tree (docs/PROTOCOL.md section 12).
This module hashes leaves and interior nodes, keeps the right edge of a growing tree
(:class:`Frontier`), builds inclusion and consistency proofs for any past size from the
hashes of complete subtrees (the caller says where those come from: ``hash_at``), verifies
proofs exactly as RFC 9162 sections 2.1.3.2 and 2.1.4.2 say, and names C2SP ``tlog-tiles``
resources. Nothing here does I/O.

Coordinates: the complete subtree at ``(level, index)`` holds the ``2**level`` leaves that
start at leaf ``index * 2**level``; level 0 is the leaf hashes themselves.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence

from .errors import BadRequestError, ProofError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_NODE_PREFIX = hashlib.sha256(b"\x01")  # copied, never updated (Frontier.append_keeping)
MAX_PROOF_HASHES = 64  # a tree of at most 2**64 leaves never needs more
MAX_TREE_SIZE = 2**63 - 1  # the store's heights stop here (SQLite integers)

TILE_HEIGHT = 8
TILE_WIDTH = 256  # 2**TILE_HEIGHT
MAX_TILE_LEVEL = 63

HashAt = Callable[[int, int], bytes]
"""``hash_at(level, index)``: the hash of the complete subtree at those coordinates."""


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of a leaf whose input is ``data``."""
    h = hashlib.sha256(b"\x00")
    h.update(data)
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    h = hashlib.sha256(b"\x01")
    h.update(left)
    h.update(right)
    return h.digest()


def subtree_hashes(leaves: Sequence[bytes], level: int) -> list[bytes]:
    """The hashes of the complete subtrees of ``2**level`` leaves that ``leaves`` (leaf hashes,
    their count a multiple of ``2**level``) make one after another, a level at a time."""
    nodes = list(leaves)
    sha256 = hashlib.sha256
    for _ in range(level):
        nodes = [sha256(b"\x01" + left + right).digest() for left, right in zip(nodes[::2], nodes[1::2], strict=True)]
    return nodes


# --- the right edge of a growing tree ---------------------------------------------------


class Frontier:
    """The compact range [0, size): one hash per set bit of ``size``, highest level first.

    That is all a tree needs to grow and to name its root: at most 64 hashes, whatever its
    size. :meth:`append` also returns every subtree it completed, so a store can keep them.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        """Raises ProofError when ``hashes`` is not one 32-byte hash per set bit of ``size``."""
        if not 0 <= size <= MAX_TREE_SIZE:
            raise ProofError(f"a tree size must be in 0..{MAX_TREE_SIZE}, not {size}")
        if len(hashes) != size.bit_count():
            raise ProofError(f"a tree of size {size} has {size.bit_count()} edge hashes, not {len(hashes)}")
        _check_hashes(hashes, "edge hash")
        self._size = size
        self._hashes = list(hashes)

    @classmethod
    def at(cls, size: int, hash_at: HashAt) -> Frontier:
        """The frontier of the tree of ``size`` leaves, read from its complete subtrees."""
        return cls(size, [hash_at(level, index) for level, index in edge(size)])

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def copy(self) -> Frontier:
        twin = Frontier.__new__(Frontier)
        twin._size = self._size
        twin._hashes = list(self._hashes)
        return twin

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add the leaf whose hash is ``leaf``; return the subtrees this completed.

        They come as ``(level, index, hash)``, lowest level first: the leaf itself, then one
        interior node for each trailing one bit of the old size (RFC 9162 2.1.1 pairs them).
        """
        if len(leaf) != HASH_SIZE:
            raise ProofError(f"a leaf hash is {HASH_SIZE} bytes, not {len(leaf)}")
        if self._size >= MAX_TREE_SIZE:
            raise ProofError(f"a tree holds at most {MAX_TREE_SIZE} leaves")
        index = self._size
        done = [(0, index, leaf)]
        node = leaf
        level = 0
        hashes = self._hashes
        while index & 1:
            node = node_hash(hashes.pop(), node)
            index >>= 1
            level += 1
            done.append((level, index, node))
        hashes.append(node)
        self._size += 1
        return done

    def grow(self, leaves: Sequence[bytes], min_level: int = 0) -> list[tuple[int, int, bytes]]:
        """Add the leaves whose hashes are ``leaves``, in order; return the subtrees they
        completed at ``min_level`` and above, in the order :meth:`append` gives them.

        One call for a group commit's leaves of a ledger: no list per leaf, and no tuple for
        the levels below ``min_level``, which a store does not keep. Raises ProofError, before
        adding any, for a leaf that is not a 32-byte hash or more leaves than the tree takes.
        """
        _check_hashes(leaves, "leaf hash")
        if len(leaves) > MAX_TREE_SIZE - self._size:
            raise ProofError(f"a tree holds at most {MAX_TREE_SIZE} leaves")
        done: list[tuple[int, int, bytes]] = []
        hashes = self._hashes
        size = self._size
        sha256 = hashlib.sha256
        for leaf in leaves:
            if min_level <= 0:
                done.append((0, size, leaf))
            node, index, level = leaf, size, 0
            while index & 1:
                node = sha256(b"\x01" + hashes.pop() + node).digest()  # node_hash, inlined
                index >>= 1
                level += 1
                if level >= min_level:
                    done.append((level, index, node))
            hashes.append(node)
            size += 1
        self._size = size
        return done

    def grow_level(self, nodes: Sequence[bytes], level: int) -> list[tuple[int, int, bytes]]:
        """Add complete subtrees of ``2**level`` leaves each, whose hashes are ``nodes``, in order,
        to a tree whose size is a multiple of ``2**level``; return what :meth:`grow` with
        ``min_level=level`` returns for their leaves (the subtrees themselves among them).

        At such a size the frontier holds no subtree below ``level``: it is the frontier of a
        tree whose leaves are those subtrees, so each is added as grow adds a leaf, with one
        hash where the leaves' way took ``2**level`` (a follower given its page checker's
        16-leaf subtrees, ingest/follow.py). Raises ProofError, before adding any, for a size
        that is not such a multiple, a node that is not a 32-byte hash, or too many leaves."""
        if level < 0 or self._size % (1 << level):
            raise ProofError(f"subtrees of 2**{level} leaves cannot start at {self._size}")
        _check_hashes(nodes, "subtree hash")
        if len(nodes) > (MAX_TREE_SIZE - self._size) >> level:
            raise ProofError(f"a tree holds at most {MAX_TREE_SIZE} leaves")
        done: list[tuple[int, int, bytes]] = []
        hashes = self._hashes
        size = self._size >> level
        sha256 = hashlib.sha256
        for subtree in nodes:
            node, index, at = subtree, size, level
            done.append((at, index, node))
            while index & 1:
                node = sha256(b"\x01" + hashes.pop() + node).digest()  # node_hash, inlined
                index >>= 1
                at += 1
                done.append((at, index, node))
            hashes.append(node)
            size += 1
        self._size = size << level
        return done

    @classmethod
    def of_leaves(cls, leaves: Sequence[bytes]) -> Frontier:
        """The frontier of the tree whose leaf hashes are ``leaves``, built a level at a time
        (one list of pairs per level, not a call per leaf: a verifier's bulk path)."""
        _check_hashes(leaves, "leaf hash")
        edge: list[bytes] = []  # lowest level first
        level = list(leaves)
        sha256 = hashlib.sha256
        while level:
            if len(level) & 1:
                edge.append(level.pop())
            level = [
                sha256(b"\x01" + left + right).digest() for left, right in zip(level[::2], level[1::2], strict=True)
            ]
        return cls(len(leaves), edge[::-1])

    def extend(self, after: Frontier) -> None:
        """Add the leaves ``after`` is the frontier of, as the leaves right after this tree's.

        Raises ProofError unless every complete subtree of ``after`` lands on a complete
        subtree of the joined tree: this tree's size must be a multiple of the largest power
        of two in ``after``'s size (true of a chunk of ``2**k`` leaves at a multiple of ``2**k``).
        """
        if after._size and self._size % (1 << (after._size.bit_length() - 1)):
            raise ProofError(f"a tree of {after._size} leaves does not start on a subtree at {self._size}")
        if self._size + after._size > MAX_TREE_SIZE:
            raise ProofError(f"a tree holds at most {MAX_TREE_SIZE} leaves")
        hashes = self._hashes
        for level, subtree in zip(sorted(_bits(after._size), reverse=True), after._hashes, strict=True):
            index, node = self._size >> level, subtree
            while index & 1:  # this subtree completes its left neighbour: fold it in, upwards
                node = node_hash(hashes.pop(), node)
                index >>= 1
            hashes.append(node)
            self._size += 1 << level

    def append_all(self, leaves: Sequence[bytes]) -> None:
        """Add the leaf hashes ``leaves`` in order: what :meth:`append` of each gives, computed
        in the largest blocks that land on complete subtrees (:meth:`of_leaves`, :meth:`extend`)."""
        done, count = 0, len(leaves)
        while done < count:
            size = self._size
            block = 1 << ((count - done).bit_length() - 1)
            if size:
                block = min(block, size & -size)  # the largest subtree that can start at ``size``
            if block == 1:
                self.append(leaves[done])
            else:
                self.extend(Frontier.of_leaves(leaves[done : done + block]))
            done += block

    def append_keeping(self, leaves: Sequence[bytes], level: int) -> list[bytes]:
        """Add the leaf hashes ``leaves`` in order, as :meth:`append_all`; return the hashes of
        the complete subtrees of ``2**level`` leaves they completed, in order (what a store keeps
        at its lowest stored level, checked by a verifier as it folds the records' leaves in).

        The leaves up to the next multiple of ``2**level`` go one at a time, the groups of
        ``2**level`` after them a level at a time (the same hashes :meth:`append_all` computes,
        none twice), then the few left over one at a time. Raises ProofError as :meth:`grow`.
        """
        _check_hashes(leaves, "leaf hash")
        group = 1 << level
        kept: list[bytes] = []
        done, count = 0, len(leaves)
        while done < count and self._size % group:
            kept.extend(node for at, _, node in self.append(leaves[done]) if at == level)
            done += 1
        whole = (count - done) // group * group
        if whole:
            nodes = list(leaves[done : done + whole])
            # Each node a copy of a hash that took the prefix, updated with both children: no
            # 65-byte concatenation a node, 15% less than sha256(b"\x01" + left + right) (the
            # workers of `vledger verify` hash 15 nodes every 16 records; the same hashes).
            prefixed = _NODE_PREFIX.copy
            for _ in range(level):
                above = []
                for left, right in zip(nodes[::2], nodes[1::2], strict=True):
                    node = prefixed()
                    node.update(left)
                    node.update(right)
                    above.append(node.digest())
                nodes = above
            self.append_subtrees(nodes, level)
            kept.extend(nodes)
            done += whole
        for leaf in leaves[done:]:  # fewer than a group: they complete none
            self.append(leaf)
        return kept

    def append_subtrees(self, nodes: Sequence[bytes], level: int) -> None:
        """Add complete subtrees of ``2**level`` leaves each, whose hashes are ``nodes``, in order.

        Raises ProofError unless the tree's size is a multiple of ``2**level`` (they would not
        be complete subtrees of the joined tree), or past MAX_TREE_SIZE.
        """
        if self._size % (1 << level):
            raise ProofError(f"subtrees of {1 << level} leaves do not start on a subtree at {self._size}")
        done, count = 0, len(nodes)
        while done < count:
            units = self._size >> level
            block = 1 << ((count - done).bit_length() - 1)
            if units:
                block = min(block, units & -units)  # the largest subtree that can start here
            self.extend(Frontier(block << level, Frontier.of_leaves(nodes[done : done + block]).hashes))
            done += block

    def root(self) -> bytes:
        """MTH of the whole tree: the edge hashes folded from the right; EMPTY_ROOT if empty."""
        if not self._hashes:
            return EMPTY_ROOT
        root = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            root = node_hash(left, root)
        return root

    def encode(self) -> bytes:
        """8 bytes of size (big-endian), then the edge hashes, highest level first."""
        return self._size.to_bytes(8, "big") + b"".join(self._hashes)

    @classmethod
    def decode(cls, data: bytes) -> Frontier:
        """The inverse of :meth:`encode`; raises ProofError on any other length or size."""
        if len(data) < 8 or (len(data) - 8) % HASH_SIZE:
            raise ProofError(f"an encoded frontier is 8 + 32*k bytes, not {len(data)}")
        size = int.from_bytes(data[:8], "big")
        return cls(size, [data[i : i + HASH_SIZE] for i in range(8, len(data), HASH_SIZE)])

    def __repr__(self) -> str:
        return f"Frontier(size={self._size}, root={self.root().hex()})"


def _bits(size: int) -> list[int]:
    """The levels of the set bits of ``size``: one complete subtree each in a frontier."""
    return [level for level in range(size.bit_length()) if size >> level & 1]


def edge(size: int) -> list[tuple[int, int]]:
    """The coordinates of the compact range [0, size), highest level first."""
    out = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            out.append((level, start >> level))
            start += 1 << level
    return out


# --- roots and proofs from complete subtrees --------------------------------------------


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2): where RFC 9162 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def _subtree_root(start: int, n: int, hash_at: HashAt) -> bytes:
    """MTH(D[start:start+n]) for n >= 1, where ``start`` is a multiple of the smallest power of
    two >= n (so every subtree it splits into is complete and has coordinates)."""
    if n & (n - 1) == 0:
        level = n.bit_length() - 1
        return hash_at(level, start >> level)
    k = _split(n)
    return node_hash(_subtree_root(start, k, hash_at), _subtree_root(start + k, n - k, hash_at))


def _check_size(size: int, what: str = "tree size") -> None:
    if not 0 <= size <= MAX_TREE_SIZE:
        raise ProofError(f"a {what} must be in 0..{MAX_TREE_SIZE}, not {size}")


def root_at(size: int, hash_at: HashAt) -> bytes:
    """MTH of the first ``size`` leaves (EMPTY_ROOT for 0), from complete subtrees only."""
    _check_size(size)
    return _subtree_root(0, size, hash_at) if size else EMPTY_ROOT


def inclusion_proof(index: int, size: int, hash_at: HashAt, level: int = 0) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 2.1.3.1, leaf side first; with ``level``, the path of
    the complete subtree at ``(level, index)`` instead of a leaf's: the hashes above it only.

    Above ``level`` the tree of ``size`` leaves is the RFC 9162 tree of ``ceil(size / 2**level)``
    leaves, its subtrees of ``2**level`` leaves (the last maybe partial) as leaves: every split
    of a range over ``2**level`` leaves falls on a multiple of ``2**level``. So the path checks
    with :func:`root_from_inclusion` at ``index`` in a tree of that many leaves.

    Raises ProofError unless that subtree is complete in the tree of ``size`` leaves.
    """
    _check_size(size)
    width = 1 << level
    if index < 0 or (index + 1) * width > size:
        raise ProofError(
            f"leaf {index} is not in a tree of size {size}"
            if not level
            else f"no complete subtree at level {level}, index {index} in a tree of size {size}"
        )
    path: list[bytes] = []
    start, n, m = 0, size, index * width
    while n > width:
        k = _split(n)
        if m < k:
            path.append(_subtree_root(start + k, n - k, hash_at))
            n = k
        else:
            path.append(_subtree_root(start, k, hash_at))
            start, n, m = start + k, n - k, m - k
    path.reverse()
    return path


def consistency_proof(old_size: int, new_size: int, hash_at: HashAt) -> list[bytes]:
    """PROOF(old_size, D[0:new_size]) of RFC 9162 2.1.4.1: empty when the sizes are equal.

    Raises ProofError unless 0 < old_size <= new_size (the RFC defines no proof from the
    empty tree: every tree extends it, there is nothing to prove).
    """
    _check_size(new_size)
    if not 0 < old_size <= new_size:
        raise ProofError(f"no consistency proof from size {old_size} to size {new_size}: need 0 < old <= new")
    path: list[bytes] = []
    start, n, m, whole = 0, new_size, old_size, True
    # SUBPROOF(m, D[start:start+n], whole), unrolled: each step adds one hash, then descends.
    while m != n:
        k = _split(n)
        if m <= k:
            path.append(_subtree_root(start + k, n - k, hash_at))
            n = k
        else:
            path.append(_subtree_root(start, k, hash_at))
            start, n, m, whole = start + k, n - k, m - k, False
    if not whole:
        path.append(_subtree_root(start, n, hash_at))
    path.reverse()
    return path


# --- verification (RFC 9162 2.1.3.2 and 2.1.4.2) ----------------------------------------


def _check_hashes(hashes: Sequence[bytes], what: str) -> None:
    for i, h in enumerate(hashes):
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            got = len(h) if isinstance(h, bytes) else type(h).__name__
            raise ProofError(f"{what} {i} is not a {HASH_SIZE}-byte hash ({got})")


def _check_proof(proof: Sequence[bytes], *named: tuple[str, bytes]) -> None:
    """Bound the work before doing any: at most 64 hashes, each (and each named hash) 32 bytes."""
    if len(proof) > MAX_PROOF_HASHES:
        raise ProofError(f"a proof has at most {MAX_PROOF_HASHES} hashes, this one {len(proof)}")
    _check_hashes(proof, "proof hash")
    for name, value in named:
        if not isinstance(value, bytes) or len(value) != HASH_SIZE:
            raise ProofError(f"the {name} is not a {HASH_SIZE}-byte hash")


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` leads to from ``leaf`` at ``index`` (RFC 9162 2.1.3.2, steps 1-5
    but the final comparison). Raises ProofError when a check of the algorithm fails."""
    _check_proof(proof, ("leaf hash", leaf))
    _check_size(size)
    if not 0 <= index < size:  # step 1
        raise ProofError(f"leaf index {index} is not below the tree size {size}")
    fn, sn, r = index, size - 1, leaf  # steps 2, 3
    for p in proof:  # step 4
        if sn == 0:
            raise ProofError(f"the inclusion proof is longer than a tree of size {size} needs ({len(proof)} hashes)")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:  # step 5
        raise ProofError(f"the inclusion proof is shorter than a tree of size {size} needs ({len(proof)} hashes)")
    return r


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf`` is leaf ``index`` of the tree of ``size`` leaves whose root is ``root``.

    Raises ProofError naming the check that failed: a hash not 32 bytes, a proof over 64
    hashes, an index not below the size, a proof too long or too short, or a root mismatch.
    """
    _check_proof((), ("root", root))
    if root_from_inclusion(leaf, index, size, proof) != root:
        raise ProofError(f"the inclusion proof of leaf {index} leads to another root than the tree of size {size}")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Check that the tree of ``new_size`` leaves and root ``new_root`` extends the tree of
    ``old_size`` leaves and root ``old_root`` (RFC 9162 2.1.4.2).

    Equal sizes need an empty proof and equal roots. The RFC defines no proof from the
    empty tree, so ``old_size == 0`` is refused (a caller that holds no earlier tree has
    nothing to check). Raises ProofError naming the check that failed.
    """
    _check_proof(proof, ("old root", old_root), ("new root", new_root))
    _check_size(old_size, "old tree size")
    _check_size(new_size, "new tree size")
    if old_size > new_size:
        raise ProofError(f"the old tree size {old_size} is larger than the new tree size {new_size}")
    if old_size == 0:
        raise ProofError("there is no consistency proof from the empty tree: it is consistent with every tree")
    if old_size == new_size:
        if proof:
            raise ProofError(f"trees of equal size {old_size} need an empty proof, not {len(proof)} hashes")
        if old_root != new_root:
            raise ProofError(f"two trees of size {old_size} have different roots")
        return
    if not proof:  # step 1
        raise ProofError(f"the consistency proof from size {old_size} to {new_size} is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # step 2
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1  # step 3
    while fn & 1:  # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:
            raise ProofError(
                f"the consistency proof from size {old_size} to {new_size} is too long ({len(proof)} hashes)"
            )
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:  # step 7
        raise ProofError(f"the consistency proof from size {old_size} to {new_size} is too short ({len(proof)} hashes)")
    if fr != old_root:
        raise ProofError(f"the consistency proof does not lead to the old root of the tree of size {old_size}")
    if sr != new_root:
        raise ProofError(f"the consistency proof does not lead to the new root of the tree of size {new_size}")


# --- C2SP tlog-tiles ----------------------------------------------------------------------


def tile_width(level: int, index: int, size: int) -> int:
    """How many hashes tile ``index`` of tile level ``level`` holds in a tree of ``size``
    leaves: 256 when full, 1..255 when partial, 0 when the tree has no such tile yet."""
    if not 0 <= level <= MAX_TILE_LEVEL or index < 0:
        return 0
    available = size >> (TILE_HEIGHT * level)  # floor(size / 256**level) hashes at that level
    return max(0, min(TILE_WIDTH, available - index * TILE_WIDTH))


def tile_hashes(level: int, index: int, width: int, hash_at: HashAt) -> bytes:
    """The tile's bytes: ``width`` hashes of tree level 8*level from node index*256 on."""
    if not 0 <= level <= MAX_TILE_LEVEL or index < 0 or not 1 <= width <= TILE_WIDTH:
        raise ProofError(f"no tile at level {level}, index {index}, width {width}")
    first = index * TILE_WIDTH
    return b"".join(hash_at(TILE_HEIGHT * level, first + i) for i in range(width))


def verify_tile(hashes: Sequence[bytes], level: int, index: int, size: int, root: bytes, hash_at: HashAt) -> None:
    """Check that ``hashes`` are the hashes of tile ``<level>/<index>`` in the tree of ``size``
    leaves whose root is ``root``: all of the tile's hashes that tree holds (at most 256; for
    tile level 0 the leaf hashes), the tree's other hashes taken from ``hash_at``. The inclusion
    path of the tile's first hash holds a subtree over every other hash of the tile, computed
    from them, so one path checks them all: a changed hash of the tile, or a changed hash
    outside it, leads to another root.

    Raises ProofError when ``hashes`` are not that many, or lead to another root.
    """
    below = TILE_HEIGHT * level  # the tree level of the tile's hashes
    first = index * TILE_WIDTH
    count = tile_width(level, index, size)
    if count <= 0 or len(hashes) != count:
        raise ProofError(f"tile {level}/{index} of a tree of size {size} has {count} hashes, not {len(hashes)}")

    def at(height: int, i: int) -> bytes:
        above = height - below  # a subtree of 2**above of the tile's hashes, if inside the tile
        if 0 <= above < TILE_HEIGHT:
            start = (i << above) - first
            if start >= 0 and start + (1 << above) <= count:
                return subtree_hashes(hashes[start : start + (1 << above)], above)[0]
        return hash_at(height, i)

    path = inclusion_proof(first, size, at, below)
    if root_from_inclusion(hashes[0], first, -(-size >> below), path) != root:
        raise ProofError(f"tile {level}/{index} leads to another root than the tree of size {size}")


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    """``tile/<L>/<N>[.p/<W>]`` with N in 3-digit groups, all but the last prefixed with x."""
    if not 0 <= level <= MAX_TILE_LEVEL or index < 0 or not 1 <= width <= TILE_WIDTH:
        raise ProofError(f"no tile at level {level}, index {index}, width {width}")
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    path = f"tile/{level}/{'/'.join(reversed(groups))}"
    return path if width == TILE_WIDTH else f"{path}.p/{width}"


_TILE_PATH = re.compile(r"tile/(0|[1-9][0-9]?)/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?")
# Digits in any grouping: an index past the largest is told so however it is written
# (tile/0/<27 digits> said "not a tile path" where the grouped form said "at most 2**63 - 1").
_TILE_DIGITS = re.compile(r"tile/[0-9]+/((?:x?[0-9]+/)*x?[0-9]+)(?:\.p/[0-9]+)?")
TILE_INDEX_LIMIT = "a tile index is at most 2**63 - 1"


def parse_tile_path(path: str) -> tuple[int, int, int]:
    """``(level, index, width)`` of a tile path; raises BadRequestError for anything else.

    Strict, so that one tile has one name: no leading zeros, no empty or x-prefixed last
    group, a leading group of 000 only for index 0, levels 0..63, widths 1..255, indexes
    0..2**63 - 1.
    """
    match = _TILE_PATH.fullmatch(path)
    if match is None:
        digits = _TILE_DIGITS.fullmatch(path)
        if digits is not None and int(digits.group(1).replace("x", "").replace("/", "")) > MAX_TREE_SIZE:
            raise BadRequestError(f"{path[:100]!r}: {TILE_INDEX_LIMIT}")
        raise BadRequestError(f"{path[:100]!r} is not a tile path (tile/<L>/<N>[.p/<W>])")
    level = int(match.group(1))
    groups = match.group(2).split("/")
    if len(groups) > 1 and groups[0] == "x000":
        raise BadRequestError(f"{path[:100]!r}: a tile index has no leading zero groups")
    index = int("".join(g.lstrip("x") for g in groups))
    width = int(match.group(3)) if match.group(3) else TILE_WIDTH
    if level > MAX_TILE_LEVEL or (match.group(3) and width >= TILE_WIDTH):
        raise BadRequestError(f"{path[:100]!r}: tile level 0..63, partial width 1..255")
    if index > MAX_TREE_SIZE:  # as every number in a path (PROTOCOL 15): not a tile past the tree
        raise BadRequestError(f"{path[:100]!r}: {TILE_INDEX_LIMIT}")
    return level, index, width
