"""``vledger repl status``: how far each node holds each ledger, as the cluster's Redis records it.

Everything comes from the keys of vledger.broker.replication: the ledgers and their home
nodes (``vledger:ledgers``), each stream's last height and each node's held height. No node
is asked: the command works while nodes are down, and says what Redis last heard from them.

A ledger's **head** is the highest height known to exist: the home's held height, or the
stream's last entry, or any node's held height if one is ahead of both (the home reports
after it streams, and a replica may report before the home does after a Redis outage).
A node's **lag** is head - held. Replicas and observers (the roles that follow the feeds
and keep a store, config.cluster.FOLLOWER_ROLES) hold every ledger: one **lags** when it
holds less than the head, including one that never reported. An ingest node that is not
the ledger's home is shown but never expected to hold it; a verifier holds nothing and is
shown only if Redis names it.

Exit codes: 0 every replica and observer holds every ledger up to its head; 1 Redis cannot
be reached or answers with an error (``vledger: error: redis_server: ...``), or the
configuration is invalid; 2 usage; 3 some replica or observer lags (the code
`vledger supervise status` gives for a process that is not running), so that a script can
wait with ``until vledger repl status --config F >/dev/null; do sleep 1; done``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from ..broker.redis_server import connect, shown_url
from ..broker.replication import ReplicationLedger, count_distribution
from ..config.cluster import FOLLOWER_ROLES, load_cluster
from ..node.errors import RedisServerError
from .args import Subparsers, add_command, add_config_option, add_json_option, config_path
from .client_output import table
from .client_payloads import seconds
from .watching import watch_rounds

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_LAGGING = 3
REDIS_TIMEOUT = 2.0  # seconds: a Redis that does not answer fails the command, it does not hang it
UNKNOWN_ROLE = "unknown"  # a node Redis names that the configuration does not
SHOWN_ROLES = ("ingest", *FOLLOWER_ROLES)  # the configured nodes listed even if they never reported
_ROLE_ORDER = {"ingest": 1, **{role: 2 for role in FOLLOWER_ROLES}}

JSON_SHAPE = """\
With --json, one JSON object (with --watch, one per line and round; a round that cannot
read Redis prints its error on stderr instead, and the watch goes on):

  {"redis": URL (password hidden), "current": bool (no replica or observer lags),
   "ledgers": [{"ledger": str, "home": node,
                "head": int (-1: no record yet), "stream_head": int or null,
                "home_held": int or null,
                "nodes": [{"node": str, "role": "ingest"|"replica"|"observer"|...|"unknown",
                           "held": int or null (never reported),
                           "lag": int or null (head - held), "lagging": bool}],
                "counts": [{"holders": int, "records": int}],
                "lagging": [node names]}]}

"counts" is the distribution of replication counts over the records 0..head: how many
records are held by that many nodes (the home included), fewest holders first.

Exit codes: 0 every replica and observer holds every ledger up to its head; 1 Redis
unreachable or an invalid configuration; 2 usage; 3 some replica or observer lags (one
that never reported counts as lagging).
With --watch the command runs until interrupted and exits with the last round's code."""


@dataclass(frozen=True, slots=True)
class NodeHeight:
    """One node's hold on one ledger."""

    node: str
    role: str  # the configuration's role, or "unknown" for a node only Redis names
    held: int | None  # None: never reported
    lag: int | None  # head - held; None when never reported
    lagging: bool  # a replica or observer that holds less than the head


@dataclass(frozen=True, slots=True)
class LedgerStatus:
    ledger: str
    home: str
    head: int  # -1: no record yet
    stream_head: int | None  # None: an empty (or missing) stream
    nodes: tuple[NodeHeight, ...]
    counts: dict[int, int]  # replication count -> how many records have it

    @property
    def home_held(self) -> int | None:
        return next((n.held for n in self.nodes if n.node == self.home), None)

    @property
    def lagging(self) -> list[str]:
        return [n.node for n in self.nodes if n.lagging]


def ledger_status(
    ledger: str, home: str, stream_last: int, held: Mapping[str, int], roles: Mapping[str, str]
) -> LedgerStatus:
    """The status of one ledger from what Redis holds (pure: the tests feed it directly).

    ``stream_last`` is the stream's last height (-1: empty); ``held`` node -> held height;
    ``roles`` node -> role, for every node of the configuration.
    """
    head = max([stream_last, *held.values()], default=-1)
    names = {name for name, role in roles.items() if role in SHOWN_ROLES} | set(held) | {home}

    def order(name: str) -> tuple[int, str]:
        return (0 if name == home else _ROLE_ORDER.get(roles.get(name, UNKNOWN_ROLE), 3), name)

    nodes = []
    for name in sorted(names, key=order):
        role = roles.get(name, UNKNOWN_ROLE)
        height = held.get(name)
        lag = None if height is None else head - height
        lagging = role in FOLLOWER_ROLES and head >= 0 and (height is None or height < head)
        nodes.append(NodeHeight(name, role, height, lag, lagging))
    return LedgerStatus(
        ledger=ledger,
        home=home,
        head=head,
        stream_head=stream_last if stream_last >= 0 else None,
        nodes=tuple(nodes),
        counts=count_distribution(dict(held), head + 1),
    )


def read_status(replication: ReplicationLedger, roles: Mapping[str, str]) -> list[LedgerStatus]:
    """Every ledger Redis knows of, by name (Redis's errors pass through)."""
    homes = replication.ledgers()
    names = sorted(homes)
    lasts = replication.last_heights(names)
    return [ledger_status(name, homes[name], lasts[name], replication.held(name), roles) for name in names]


# --- what it prints --------------------------------------------------------------------------------


def status_json(statuses: list[LedgerStatus], url: str) -> dict[str, Any]:
    return {
        "redis": shown_url(url),
        "current": not any(s.lagging for s in statuses),
        "ledgers": [
            {
                "ledger": s.ledger,
                "home": s.home,
                "head": s.head,
                "stream_head": s.stream_head,
                "home_held": s.home_held,
                "nodes": [
                    {"node": n.node, "role": n.role, "held": n.held, "lag": n.lag, "lagging": n.lagging}
                    for n in s.nodes
                ],
                "counts": [{"holders": holders, "records": records} for holders, records in s.counts.items()],
                "lagging": s.lagging,
            }
            for s in statuses
        ],
    }


def _number(value: int | None) -> str:
    return "-" if value is None or value < 0 else str(value)


def _state(node: NodeHeight) -> str:
    if node.lagging:
        return "behind"
    return "current" if node.role in FOLLOWER_ROLES else ""


def _counts(counts: dict[int, int]) -> str:
    if not counts:
        return "no records"
    return ", ".join(
        f"{records:,} on {holders} node{'s' if holders != 1 else ''}" for holders, records in counts.items()
    )


def print_status(statuses: list[LedgerStatus], url: str) -> None:
    print(f"Redis {shown_url(url)}: {len(statuses)} ledger{'s' if len(statuses) != 1 else ''}")
    if not statuses:
        return
    rows: list[tuple[str, ...]] = []
    for status in statuses:
        for index, node in enumerate(status.nodes):
            first = index == 0
            rows.append(
                (
                    status.ledger if first else "",
                    _number(status.head) if first else "",
                    _number(status.stream_head) if first else "",
                    node.node,
                    "home" if node.node == status.home else node.role,
                    _number(node.held),
                    _number(node.lag),
                    _state(node),
                )
            )
    print()
    table(("LEDGER", "HEAD", "STREAM", "NODE", "ROLE", "HELD", "LAG", "STATE"), rows)
    print()
    print("Records by replication count (the home included):")
    width = max(len(s.ledger) for s in statuses)
    for status in statuses:
        print(f"  {status.ledger:<{width}}  {_counts(status.counts)}")
    print()
    behind = [f"{s.ledger} ({', '.join(s.lagging)})" for s in statuses if s.lagging]
    print(f"Behind: {'; '.join(behind)}" if behind else "Every replica and observer holds every ledger up to its head.")


# --- the command -----------------------------------------------------------------------------------


def show_status(replication: ReplicationLedger, roles: Mapping[str, str], url: str, as_json: bool) -> int:
    """One round: read, print, and the exit code it makes (0 or 3; RedisServerError if Redis fails)."""
    try:
        statuses = read_status(replication, roles)
    except redis.exceptions.RedisError as e:
        raise RedisServerError(f"cannot read the replication state from Redis at {shown_url(url)}: {e}") from e
    if as_json:
        print(json.dumps(status_json(statuses, url)), flush=True)
    else:
        print_status(statuses, url)
        sys.stdout.flush()
    return EXIT_LAGGING if any(s.lagging for s in statuses) else EXIT_OK


def watch_status(
    replication: ReplicationLedger,
    roles: Mapping[str, str],
    url: str,
    *,
    as_json: bool,
    interval: float,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """A round every ``interval`` seconds until interrupted; the last round's exit code.

    A round that cannot reach Redis says so on stderr and the watch goes on: what it
    watches may come back.
    """
    return watch_rounds(
        lambda: show_status(replication, roles, url, as_json), as_json=as_json, interval=interval, sleep=sleep
    )


def cmd_repl_status(args: argparse.Namespace) -> int:
    config = load_cluster(config_path(args.config))
    access = config.redis_access("admin")
    url = access.url
    roles = {name: node.role for name, node in config.nodes.items()}
    client = connect(access, timeout=REDIS_TIMEOUT)
    try:
        replication = ReplicationLedger(client)
        if args.watch is None:
            return show_status(replication, roles, url, args.json)
        return watch_status(replication, roles, url, as_json=args.json, interval=args.watch)
    finally:
        client.close()


def add_repl_commands(commands: Subparsers) -> None:
    repl = commands.add_parser(
        "repl",
        help="replication: who holds how much of each ledger",
        description="Replication, as the cluster's Redis records it.",
    )
    actions = repl.add_subparsers(dest="repl_action", required=True, metavar="ACTION")
    status = add_command(
        actions,
        "status",
        cmd_repl_status,
        "each ledger's head, every node's held height and lag, the replication counts",
        "For every ledger in the cluster's Redis (the configuration's [cluster] redis, or\n"
        "$REDIS_URL): its head (the stream's last height and the home node's held height),\n"
        "every node's held height and lag (head - held; '-' if it never reported): the\n"
        "configuration's ingest, replica and observer nodes, and any other node Redis names;\n"
        "and how many records have each replication count. Asks no node: shows what Redis\n"
        "last heard.",
    )
    status.formatter_class = argparse.RawDescriptionHelpFormatter
    status.epilog = JSON_SHAPE
    add_config_option(status)
    add_json_option(status)
    status.add_argument(
        "--watch", type=seconds, metavar="SECONDS", help="print again every SECONDS until interrupted (Ctrl-C)"
    )
