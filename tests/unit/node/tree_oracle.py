"""A Merkle tree over a plain list of leaf hashes, recomputed on every call: the test modules'
independent oracle for proofs and roots (kept apart from node/node_keys.py's cached one on purpose)."""

from __future__ import annotations

from vledger.node import tree


def hash_at_of(leaves: list[bytes]) -> tree.HashAt:
    """``hash_at`` over complete subtrees of ``leaves``, hashed pairwise from the leaves up."""

    def hash_at(level: int, index: int) -> bytes:
        hashes = leaves[index << level : (index + 1) << level]
        while len(hashes) > 1:
            hashes = [tree.node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        return hashes[0]

    return hash_at
