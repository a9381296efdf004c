"""The Redis keys named for one node, found and deleted once it left the cluster (``vledger repl forget``).

A replica or an observer taken out of the cluster file leaves behind the keys its Redis user
wrote (docs/PROTOCOL.md 10.10): per ledger its held height (``:held:<node>``), its cosigned
note (``:cosig:<node>``) and its recent ones (``:cosig:<node>:recent``) and its tallies
(``:tallies:<node>``, ``:tally:latest:<node>``); its
accounts report, the heartbeat (``vledger:{accounts}:applied:<node>``); its open alerts
(``vledger:{alerts}:open:<node>``) and, a verifier's, its sweep (``vledger:{sweep}:<node>``).
Nobody writes them again, and the readers that find nodes by SCAN (``vledger alerts``, a
ledger's cosignatures without a list of witnesses) go on reading them. Its alerts stream and
its evidence are the record of what it saw (a contradicting checkpoint is proof against a
home): :class:`NodeKeys` keeps them apart, and they are deleted only when asked.

Every key is named exactly: a SCAN pattern finds the candidates, and a key counts only when
it is the very name this node's key of that ledger has. The node name is checked first, so no
glob or key part comes from the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .accounts import AccountRegistry
from .redis_keys import NAMESPACE, glob_escape, group_key, is_ledger_name, ledger_key

# What each per-ledger key of a node is called after ``vledger:{<ledger>}:`` (10.10).
LEDGER_KINDS = ("held", "cosig", "tallies", "tally:latest")
SCAN_COUNT = 500


@dataclass(frozen=True, slots=True)
class NodeKeys:
    """The keys named for a node that exist: its ``state`` (what it last said: deleted by a
    forget) and its ``history`` (its alerts stream and evidence: deleted only when asked)."""

    state: tuple[str, ...]
    history: tuple[str, ...]


def node_keys(client: Any, node: str, namespace: str = NAMESPACE) -> NodeKeys:
    """The keys of ``node`` (a node name, :func:`AccountRegistry.applied_key` checks it: raises
    AccountError otherwise) in ``client``'s Redis, each sorted. SCAN: the admin's user's."""
    applied = AccountRegistry(client, namespace).applied_key(node)
    state = [key for kind in LEDGER_KINDS for key in _ledger_keys(client, namespace, kind, node)]
    state += _ledger_keys(client, namespace, "cosig", node, ":recent")
    state += [applied, group_key(namespace, "alerts", f"open:{node}"), group_key(namespace, "sweep", node)]
    history = [group_key(namespace, "alerts", f"log:{node}"), group_key(namespace, "evidence", node)]
    return NodeKeys(_existing(client, state), _existing(client, history))


def forget_keys(client: Any, keys: tuple[str, ...]) -> int:
    """Delete ``keys`` (each on its own: they lie in many slots); how many existed."""
    return sum(int(client.delete(key)) for key in keys)


def _ledger_keys(client: Any, namespace: str, kind: str, node: str, tail: str = "") -> list[str]:
    prefix, suffix = f"{namespace}:{{", f"}}:{kind}:{node}{tail}"
    found = []
    for raw in client.scan_iter(match=glob_escape(prefix) + "*" + glob_escape(suffix), count=SCAN_COUNT):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        ledger = key[len(prefix) : -len(suffix)]
        # ``*`` may span another kind's name: only this node's key of a ledger counts.
        if is_ledger_name(ledger) and key == ledger_key(namespace, ledger, f"{kind}:{node}{tail}"):
            found.append(key)
    return found


def _existing(client: Any, keys: list[str]) -> tuple[str, ...]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.exists(key)
    return tuple(sorted(key for key, there in zip(keys, pipe.execute(), strict=True) if there))
