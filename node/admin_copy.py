"""A copy of the admin ledger that a node may believe: the records a signed checkpoint proves.

Every node but the admin ledger's home reads the admin ledger from a copy it does not hold
(the Redis cache ``{accounts}:admin:records``, docs/PROTOCOL.md 16.4), which whoever may
write Redis may also write. So the copy counts only as far as a checkpoint of the admin
ledger, signed with its checkpoint key (its home's key, ``<cluster>/admin``), proves it: each
record's own checks, the chain of links from the genesis, and the Merkle root of the first
``size`` records equal to the checkpoint's. What is past that size waits for the next
checkpoint; a copy that the note does not prove gives nothing.

Pure: bytes and keys in, records out, a precise error of node/errors.py otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..config.settings import PROTOCOL_LIMITS
from .errors import ProofError
from .node_keys import admin_origin_cluster
from .note import VerifierKey, verify_checkpoint
from .record import Record, decode_record
from .rules.admin import ADMIN_LEDGER
from .tree import Frontier, leaf_hash
from .verify import ChainVerifier


def proven_admin_records(records: Sequence[bytes], note: bytes, admin_key: VerifierKey) -> tuple[Record, ...]:
    """The first ``size`` of ``records`` (the copy, from height 0) that checkpoint ``note`` proves.

    Raises WrongOriginError when ``admin_key`` is not an admin ledger's checkpoint key, the
    note's errors when it does not verify with it (13.5), ProofError [bad_proof] when the copy
    is shorter than the checkpoint or its tree has another root, and each record's first
    failure as a chain verifier finds it (2.4, section 4: structure, checksum, link, prev).
    """
    admin_origin_cluster(admin_key)
    checkpoint = verify_checkpoint(note, admin_key).checkpoint
    if checkpoint.size > len(records):
        raise ProofError(f"the admin checkpoint's size {checkpoint.size} is past the copy's {len(records)} records")
    chain = ChainVerifier(ADMIN_LEDGER, PROTOCOL_LIMITS)
    tree = Frontier()
    proven = []
    for data in records[: checkpoint.size]:
        record = decode_record(data, PROTOCOL_LIMITS)
        chain.feed(record)
        tree.append(leaf_hash(data))
        proven.append(record)
    if tree.root() != checkpoint.root:
        raise ProofError(f"the admin copy's first {checkpoint.size} records are not the tree its checkpoint signs")
    return tuple(proven)
