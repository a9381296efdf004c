"""What the outside witnesses a ledger's genesis lists (PROTOCOL 13.9) have witnessed of it, as
``vledger verify --cluster`` reports it and ``vledger repair`` holds a copy to it.

Nothing here is taken on anyone's word. The genesis that lists the witnesses counts only with
its inclusion proof under a checkpoint a key of the home signed (a node could otherwise serve a
genesis that lists none, and the check would pass by having nothing to ask). The notes come from
Redis (the home's ``vledger:{<ledger>}:outside`` hash) and from every node's ``checkpoint``
answer (a home keeps its outside cosignatures in its store, so Redis's loss hides nothing), and
:func:`vledger.node.cosigning.gather` keeps only the lines that verify, with the home's keys and
the keys the genesis lists.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..broker.replication import ReplicationLedger
from ..config.cluster import FOLLOWER_ROLES, ClusterConfig
from ..config.settings import PROTOCOL_LIMITS
from ..ingest.key_chains import StreamedKeys
from ..ingest.store_sources import Sources, epoch_log_keys, source_root
from ..node.cosigning import GatheredCheckpoint, cosigned_by_witness, gather, newest
from ..node.errors import (
    NodeUnavailableError,
    ProofError,
    QuorumError,
    RemoteError,
    StoreContradictsCheckpointError,
    VledgerError,
)
from ..node.note import Checkpoint, VerifierKey, origin_for
from ..node.outside import QUORUM_NOTE, OutsideWitnesses, outside_witnesses
from ..node.record import decode_record
from ..node.tree import leaf_hash, verify_consistency, verify_inclusion
from ..node.verify import ChainVerifier


def holders(config: ClusterConfig, ledger: str, home: str) -> list[str]:
    """The nodes that keep a copy of ``ledger``: its home, the other of the configured home and
    its standby (10.9), then every replica and observer, each once."""
    standby = config.standby_of(ledger)
    named = [home, config.home_of(ledger).name, *([standby.name] if standby is not None else [])]
    followers = sorted(n.name for n in config.nodes.values() if n.role in FOLLOWER_ROLES)
    return list(dict.fromkeys([*named, *followers]))


def signed(notes: Iterable[bytes], log_keys: Sequence[VerifierKey], origin: str) -> list[GatheredCheckpoint]:
    """Every checkpoint among ``notes`` that one of ``log_keys`` signed, largest first (no witness asked)."""
    notes = list(notes)
    found = [g for key in log_keys for g in gather(notes, key, origin, ())]
    return sorted(found, key=lambda g: g.checkpoint.size, reverse=True)


def proven_outside(
    sources: Sources, node: str, ledger: str, size: int, root: bytes, cluster: str
) -> OutsideWitnesses | None:
    """The outside witnesses the genesis of ``ledger`` lists, read from ``node`` and proven by
    its inclusion proof in the tree of ``size`` leaves and ``root`` (a checkpoint the home's key
    signed). Raises ProofError [bad_proof] when the genesis served is not that tree's, the
    record's own error when it is no genesis, BadGenesisError [bad_genesis] when its list is
    unusable, and what ``sources`` raises for a node that does not answer."""
    data = sources.call(node, "get", {"ledger": ledger, "height": 0}).get("record")
    proof = sources.call(node, "proof.inclusion", {"ledger": ledger, "index": 0, "size": size}).get("proof")
    if not isinstance(data, bytes) or not isinstance(proof, list):
        raise ProofError(f"{node}: no genesis record of {ledger!r} and its inclusion proof in the answer")
    verify_inclusion(leaf_hash(data), 0, size, proof, root)
    rules = ChainVerifier(ledger, PROTOCOL_LIMITS).check(decode_record(data, PROTOCOL_LIMITS))
    return outside_witnesses(ledger, rules.rules, cluster)


def outside_notes(sources: Sources, nodes: Iterable[str], ledger: str, quorum: int) -> list[bytes]:
    """Each node's largest checkpoint of ``ledger`` with ``quorum`` outside cosignatures, else
    with one (for the message naming what is missing); a node that does not answer gives none."""
    notes = []
    for node in nodes:
        for outside in dict.fromkeys((quorum, 1)):
            with contextlib.suppress(VledgerError):
                note = sources.call(node, "checkpoint", {"ledger": ledger, "outside": outside}).get("checkpoint")
                if isinstance(note, bytes):
                    notes.append(note)
                    break
    return notes


@dataclass(frozen=True, slots=True)
class Witnessed:
    """What a ledger's outside witnesses cosigned: ``checkpoint``, the largest checkpoint the
    home signed that at least ``outside.quorum`` of them cosigned (None: none), and ``most``, a
    checkpoint with the most of them (for saying who is missing)."""

    outside: OutsideWitnesses
    checkpoint: GatheredCheckpoint | None
    most: GatheredCheckpoint | None

    def missing(self) -> list[str]:
        """The listed witnesses ``most`` lacks (all of them when none cosigned)."""
        have = set(self.most.witnesses) if self.most is not None else set()
        return [key.name for key in self.outside.keys if key.name not in have]

    def shortfall(self, ledger: str) -> str:
        """Why there is no quorum checkpoint: 13.5's no_quorum words, naming the witnesses missing."""
        most = self.most
        seen = "none cosigned" if most is None else f"at most {len(most.witnesses)}, at size {most.checkpoint.size}"
        return (
            f"ledger {ledger!r}: no checkpoint cosigned by {self.outside.quorum} of the {len(self.outside.keys)} "
            f"outside witnesses its genesis lists ({seen}); missing: {', '.join(self.missing())}"
        )


def witnessed(
    notes: Iterable[bytes], log_keys: Sequence[VerifierKey], origin: str, outside: OutsideWitnesses
) -> Witnessed:
    """What ``outside`` witnessed among ``notes``: each line checked on its own (a forged one is
    dropped, never counted), the notes signed by one of ``log_keys``."""
    notes = list(notes)
    gathered = [g for key in log_keys for g in gather(notes, key, origin, outside.keys)]
    gathered.sort(key=lambda g: (g.checkpoint.size, len(g.witnesses)), reverse=True)
    most = max(gathered, key=lambda g: (len(g.witnesses), g.checkpoint.size), default=None)
    return Witnessed(outside, newest(gathered, outside.quorum), most if most is not None and most.witnesses else None)


def forged_notes(in_redis: Mapping[str, bytes], outside: OutsideWitnesses, origin: str) -> list[str]:
    """The fields of the Redis hash ``vledger:{<ledger>}:outside`` whose note carries no line of
    the witness it is filed under that verifies with the key the genesis lists (or that name no
    listed witness): someone other than the home wrote there (only its Redis user may)."""
    bad = []
    for name, note in sorted(in_redis.items()):
        key = outside.key(name)
        if name == QUORUM_NOTE:  # the home's join of a quorum's lines (13.9): each of them must verify
            got = len(cosigned_by_witness([note], origin, outside.keys))
            if got < outside.quorum:
                bad.append(f"{name} (the cosignatures of {got} of the listed witnesses verify, not {outside.quorum})")
        elif key is None:
            bad.append(f"{name} (no witness the genesis lists)")
        elif not cosigned_by_witness([note], origin, [key]):
            bad.append(f"{name} (its cosignature does not verify)")
    return bad


def prove_extends(
    sources: Sources, nodes: Iterable[str], ledger: str, old: tuple[int, bytes], new: tuple[int, bytes]
) -> str:
    """The first of ``nodes`` whose consistency proof shows the tree ``new`` (size, root) extends
    the tree ``old``. Raises ProofError naming why each failed (a proof that does not verify, a
    node that holds fewer records or does not answer)."""
    reasons = []
    for node in nodes:
        try:
            reply = sources.call(node, "proof.consistency", {"ledger": ledger, "old": old[0], "new": new[0]})
            proof = reply.get("proof")
            if not isinstance(proof, list):
                raise ProofError("no proof in the answer")
            verify_consistency(old[0], new[0], old[1], new[1], proof)
        except VledgerError as e:
            reasons.append(f"{node}: {e.code}: {getattr(e, 'reason', e.message)}")
            continue
        return node
    raise ProofError("; ".join(reasons) or "no node to ask")


# --- vledger verify --cluster -------------------------------------------------------------------------


HOLDS, BEHIND, ANOTHER_ROOT, SILENT = "holds", "behind", "another_root", "unavailable"


@dataclass(slots=True)
class OutsideReport:
    """One ledger whose genesis lists outside witnesses, as ``vledger verify --cluster`` judges it.

    ``checkpoint`` is the largest checkpoint the home signed that ``quorum`` of them cosigned;
    ``copies`` what each node holding the ledger holds at its size (HOLDS its root, BEHIND:
    fewer records, ANOTHER_ROOT, SILENT: no answer); ``error`` the failure (None: passed),
    ``warnings`` what could not be checked or was found forged without failing the ledger,
    ``head`` the largest checkpoint of the home's key known (records past the quorum's are not
    witnessed outside yet: said, not failed)."""

    ledger: str
    home: str
    quorum: int = 0
    listed: tuple[str, ...] = ()
    checkpoint: GatheredCheckpoint | None = None
    head: int | None = None
    copies: dict[str, str] = field(default_factory=dict)
    error: VledgerError | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_json(self) -> dict[str, Any]:
        held = self.checkpoint
        return {
            "ledger": self.ledger,
            "ok": self.ok,
            "checked": bool(self.quorum),
            "quorum": self.quorum,
            "listed": list(self.listed),
            "size": None if held is None else held.checkpoint.size,
            "root": None if held is None else held.checkpoint.root.hex(),
            "witnesses": [] if held is None else list(held.witnesses),
            "head": self.head,
            "copies": dict(sorted(self.copies.items())),
            "error": None if self.error is None else {"code": self.error.code, "message": self.error.message},
            "warnings": list(self.warnings),
        }

    def lines(self) -> list[str]:
        """The report as text: a verdict line, then one indented line per copy and warning."""
        held, ledger = self.checkpoint, self.ledger
        if not self.quorum:
            said = f"{ledger}: outside witnesses NOT checked"
        elif held is None:
            said = (
                f"{ledger}: no checkpoint a quorum of outside witnesses cosigned ({self.quorum} of {len(self.listed)})"
            )
        else:
            size = held.checkpoint.size
            behind = (
                ""
                if self.head is None or self.head <= size
                else f"; the home signed up to {self.head:,}, not yet witnessed outside"
            )
            said = (
                f"{ledger}: witnessed outside up to {size:,} by {len(held.witnesses)} of {len(self.listed)} "
                f"({', '.join(held.witnesses)}; the genesis asks {self.quorum}){behind}"
            )
        out = [said]
        if self.error is not None:
            out.append(f"  FAILED [{self.error.code}]: {self.error.message}")
        out.extend(f"  {node}: {state}" for node, state in sorted(self.copies.items()))
        out.extend(f"  warning: {w}" for w in self.warnings)
        return out


def check_outside(
    config: ClusterConfig, replication: ReplicationLedger, sources: Sources, ledger: str, home: str
) -> OutsideReport | None:
    """What the outside witnesses of ``ledger`` witnessed, and whether every copy the nodes hold
    is consistent with it (PROTOCOL 11.6); None when its genesis lists none. Redis's errors
    propagate (the caller names the server)."""
    report = OutsideReport(ledger, home)
    origin = origin_for(config.name, ledger)
    nodes = holders(config, ledger, home)
    try:
        log_keys = epoch_log_keys(config, ledger, home)
    except VledgerError as e:
        report.warnings.append(f"not checked: {e.message}")
        return report
    # A rotated key's file is on the home's host alone; the rotation records in Redis prove it (o21 F3).
    log_keys += StreamedKeys(replication).after(ledger, log_keys)
    notes = [
        *replication.checkpoints([ledger]).values(),
        *replication.cosignatures(ledger, sorted(config.nodes)).values(),
    ]
    in_redis = replication.outside_cosignatures(ledger)
    notes.extend(in_redis.values())
    heads = signed(notes, log_keys, origin)
    if not heads:  # Redis lost them: the nodes' own
        for node in nodes:
            with contextlib.suppress(VledgerError):
                note = sources.call(node, "checkpoint", {"ledger": ledger}).get("checkpoint")
                if isinstance(note, bytes):
                    notes.append(note)
        heads = signed(notes, log_keys, origin)
    if not heads:
        report.warnings.append("not checked: no checkpoint its home's key signed, in Redis or on a node that answered")
        return report
    report.head = heads[0].checkpoint.size
    try:
        standby = config.standby_of(ledger)
        listed = _listed(sources, nodes, ledger, heads, config.name, standby.name if standby is not None else None)
    except (StoreContradictsCheckpointError, QuorumError) as e:
        report.error = e
        return report
    except ProofError as e:
        report.warnings.append(f"not checked: no node proved its genesis under a checkpoint of its home ({e.message})")
        return report
    if listed is None:
        return None
    report.quorum, report.listed = listed.quorum, tuple(key.name for key in listed.keys)
    report.warnings.extend(
        f"[bad_cosignature] Redis's {replication.outside_key(ledger)} holds a note under {name}: not counted"
        for name in forged_notes(in_redis, listed, origin)
    )
    notes.extend(outside_notes(sources, nodes, ledger, listed.quorum))
    seen = witnessed(notes, log_keys, origin, listed)
    report.checkpoint = seen.checkpoint
    if seen.checkpoint is None:
        report.error = QuorumError(seen.shortfall(ledger))
        return report
    _check_copies(report, sources, nodes, seen.checkpoint.checkpoint)
    return report


PROOF_TRIES = 4  # checkpoints, largest first, a node that holds fewer records is asked to prove its genesis in


def _listed(
    sources: Sources,
    nodes: Sequence[str],
    ledger: str,
    heads: Sequence[GatheredCheckpoint],
    cluster: str,
    standby: str | None = None,
) -> OutsideWitnesses | None:
    """The outside witnesses the genesis lists, as every one of ``nodes`` that proves its genesis
    in one of the largest ``heads`` it holds (a follower behind the newest: in an older one)
    proves it. Raises ProofError naming why each node failed when none proves it, and
    StoreContradictsCheckpointError when two prove different genesis: the first alone would let
    a standby's key (10.9), or a home's, sign a tree whose genesis lists none, and the ledger
    go unchecked while its home does not answer (review r27). Raises QuorumError [no_quorum] when
    ``standby`` alone proves it: its host holds a key that signs the ledger's checkpoints (10.9),
    so its proof alone is the word of whoever holds that key (r27 F5 rest): nothing is decided."""
    why = []
    proven: dict[str, OutsideWitnesses | None] = {}
    for node in nodes:
        for held in heads[:PROOF_TRIES]:
            try:
                proven[node] = proven_outside(
                    sources, node, ledger, held.checkpoint.size, held.checkpoint.root, cluster
                )
            except RemoteError as e:
                if e.code == "bad_tree_size":
                    continue  # it holds fewer records: an older checkpoint
                why.append(f"{node}: {e.code}: {e.reason}")
            except VledgerError as e:
                why.append(f"{node}: {e.code}: {e.message}")
            break
        else:
            why.append(f"{node}: holds none of the {min(len(heads), PROOF_TRIES)} largest checkpoints")
    if not proven:
        raise ProofError("; ".join(why) or "no node holds the ledger")
    if standby is not None and set(proven) == {standby}:
        raise QuorumError(
            f"ledger {ledger!r}: its genesis was proven only by its standby {standby}, whose host holds a key that "
            "signs its checkpoints and could sign a tree of its own: the outside witnesses it lists are not decided "
            f"until its home, a replica or an observer proves it too ({'; '.join(why) or 'no other node holds it'})"
        )
    found = list(dict.fromkeys(proven.values()))
    if len(found) > 1:
        said = "; ".join(
            f"{node}: {'none' if listed is None else ', '.join(k.name for k in listed.keys)}"
            for node, listed in proven.items()
        )
        raise StoreContradictsCheckpointError(
            f"the nodes prove genesis listing different outside witnesses under checkpoints of its keys ({said})",
            ledger=ledger,
        )
    return found[0]


def _check_copies(report: OutsideReport, sources: Sources, nodes: Sequence[str], checkpoint: Checkpoint) -> None:
    """Each copy's tree at the quorum checkpoint's size against its root (from its last record
    there and that record's inclusion proof); a copy with another root, or a home short of what
    its key signed and the witnesses cosigned, fails the ledger."""
    size, root, ledger = checkpoint.size, checkpoint.root, report.ledger
    for node in nodes:
        try:
            found = source_root(sources, node, ledger, size)
        except NodeUnavailableError:
            report.copies[node] = SILENT
            continue
        except VledgerError as e:
            # A copy with fewer records is refused the size (bad_tree_size) or the height.
            report.copies[node] = BEHIND if isinstance(e, RemoteError) else f"{ANOTHER_ROOT} ({e.code}: {e.message})"
            continue
        report.copies[node] = HOLDS if found == root else f"{ANOTHER_ROOT} {found.hex()[:16]}..."
    wrong = [node for node, state in report.copies.items() if state.startswith(ANOTHER_ROOT)]
    said = f"size {size:,}, root {root.hex()[:16]}..."
    if wrong:
        report.error = StoreContradictsCheckpointError(
            f"the copies of {', '.join(wrong)} are not the tree a quorum of outside witnesses cosigned ({said})",
            ledger=ledger,
        )
    elif report.copies.get(report.home) == BEHIND:
        report.error = StoreContradictsCheckpointError(
            f"its home {report.home} holds fewer records than the checkpoint its key signed and a quorum of "
            f"outside witnesses cosigned ({said})",
            ledger=ledger,
        )
    elif HOLDS not in report.copies.values():
        report.warnings.append(f"no copy answered with the tree the outside witnesses cosigned ({said}): not compared")
