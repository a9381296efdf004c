"""``vledger repl forget NODE``: delete the Redis keys of a node taken out of the cluster.

README's "Removing a replica or an observer" stops the node and takes it out of the cluster
file; its keys in Redis stay (broker/node_forget.py names them). This command deletes them,
once nothing says the node still runs (its open hash kept, holding only the alerts only an
operator closes, when it raised some): it refuses (``forget_refused``, nothing deleted) a node
the cluster file still lists, and one whose heartbeat (its accounts report,
``vledger:{accounts}:applied:<node>``) is more recent than the window in which a live node
reports (``heartbeat_window``), or unreadable (a key of another type: nothing says it is
down). A node that never reported is taken as stopped: Redis cannot tell, and the cluster
file no longer names it.

It also closes, as ``vledger alerts resolve`` does, the open alerts other nodes raised about it
(``<node>|...``: a verifier's ``lagging`` of it would stay open for good).

Exit codes: 0 its keys deleted (or none found); 1 refused, Redis unreachable or an invalid
configuration; 2 usage (not a node name).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import redis

from ..broker.accounts import AccountRegistry, heartbeat_window
from ..broker.node_forget import forget_keys, node_keys
from ..broker.redis_server import connect
from ..broker.replication import (
    REDIS_ERRORS,
    ReplicationLedger,
    copies_nothing,
    operator_resolves,
    redis_failed,
    wrong_type,
)
from ..config.cluster import ClusterConfig, load_cluster
from ..node.errors import ForgetRefusedError, UsageError
from ..node.record import NAME_PATTERN
from .args import config_file
from .repl_commands import EXIT_OK, REDIS_TIMEOUT


def cmd_repl_forget(args: argparse.Namespace) -> int:
    node: str = args.node
    if NAME_PATTERN.fullmatch(node) is None:
        raise UsageError(f"{node!r} is not a node name ({NAME_PATTERN.pattern})")
    config = load_cluster(config_file(args.config))
    access = config.redis_access("admin")
    client = connect(access, timeout=REDIS_TIMEOUT)
    try:
        _refuse_if_present(config, AccountRegistry(client), node)
        found = node_keys(client, node)
        repl = ReplicationLedger(client)
        evidence = _own_evidence(client, repl, node, found.state)
        deleted = tuple(key for key in found.state if not (evidence and key == repl.open_alerts_key_of(node)))
        deleted += found.history if args.history else ()
        forget_keys(client, deleted)
        resolved = _resolve_about(repl, node)
    except REDIS_ERRORS as e:
        raise redis_failed(access.url, e) from None
    finally:
        client.close()
    kept: tuple[str, ...] = (repl.open_alerts_key_of(node),) if evidence else ()
    kept += () if args.history else found.history
    _print(node, deleted, kept, resolved, args.json)
    return EXIT_OK


FORGET_SCAN = 1_000  # fields of the node's open hash read (HSCAN) and deleted (HDEL) a step


def _own_evidence(client: Any, repl: ReplicationLedger, node: str, state: tuple[str, ...]) -> bool:
    """Delete from ``node``'s own open hash every alert but those only an operator closes (its
    ``equivocation``: ``node`` is the witness that holds the evidence, PROTOCOL 10.5), which
    stay open there: deleting the hash closed them with no operator's note (review r26).
    Whether any stayed (the hash is then kept). The hash is the node's own user's to fill: read
    a step at a time (HSCAN), and a field that is no text is no alert of it (it goes)."""
    key = repl.open_alerts_key_of(node)
    if key not in state:
        return False
    kept = False
    try:
        gone: list[bytes] = []
        for field, _ in client.hscan_iter(key, count=FORGET_SCAN):  # (NOVALUES: Redis 7.4 on)
            raw = field if isinstance(field, bytes) else str(field).encode()
            if operator_resolves(node, raw.decode(errors="replace"), copies_nothing):
                kept = True
                continue
            gone.append(raw)
            if len(gone) >= FORGET_SCAN:
                client.hdel(key, *gone)
                gone = []
    except redis.exceptions.ResponseError as e:
        if not wrong_type(e):
            raise
        return False  # of another type: no alert of the node's, deleted
    if kept and gone:
        client.hdel(key, *gone)
    return kept


def _resolve_about(repl: ReplicationLedger, node: str) -> list[str]:
    """Close, as the operator does (noted, so the verifier does not open them again), the other
    raisers' open alerts about ``node`` (keys ``<node>|...``): the verifier's ``lagging`` of a
    replica stopped before it was taken out stayed open for good, since nobody checks it any
    more (outsider o17). Their streams keep them."""
    if node == "redis":  # the alerts' stand-in for shared keys and the stream (PROTOCOL 10.5): no node
        return []
    about = sorted(
        {
            entry["key"]
            for entry in repl.open_entries()
            if str(entry.get("key", "")).startswith(f"{node}|")
            # Evidence only an operator closes (an equivocation of its ledgers) stays: forget is no resolve.
            and not operator_resolves(entry.get("raised_by"), entry["key"], copies_nothing)
        }
    )
    repl.resolve_as_operator(about)
    return about


def _refuse_if_present(config: ClusterConfig, registry: AccountRegistry, node: str) -> None:
    """Raise ForgetRefusedError while anything says ``node`` is a member that may still run."""
    if node in config.nodes:
        raise ForgetRefusedError(
            f"{node} is in the cluster file: take its [nodes.{node}] entry out first (README, "
            '"Removing a replica or an observer")'
        )
    window = heartbeat_window(config.settings.broker.accounts_poll_ms / 1000)
    if registry.live_nodes([node], window):
        age = registry.silence([node]).get(node)
        said = "is unreadable (a key of another type)" if age is None else f"is {age:.0f} s old"
        raise ForgetRefusedError(
            f"{node}'s heartbeat ({registry.applied_key(node)}) {said}, within {window:.0f} s: "
            "it may still run; stop it first"
        )


def _print(node: str, deleted: tuple[str, ...], kept: tuple[str, ...], resolved: list[str], as_json: bool) -> None:
    if as_json:
        found = {"node": node, "deleted": list(deleted), "kept": list(kept), "resolved": resolved}
        print(json.dumps(found), flush=True)
        return
    print(f"{node}: {len(deleted)} keys deleted" + "".join(f"\n  {key}" for key in deleted))
    if resolved:
        print(f"resolved {len(resolved)} open alerts about it: {', '.join(resolved)}")
    if kept:
        print(f"kept its alerts stream and evidence (--history deletes them): {', '.join(kept)}")
