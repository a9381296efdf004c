"""``vledger status``: the whole cluster on one screen, and one exit code for it.

Four sources, read in parallel within a short bound:

* every node of the configuration is asked ``hello`` (at most ``HELLO_TIMEOUT``, each on a
  thread with a client of its own, so that nodes that are down cost that bound once, not
  once each): up or down; a replica's or observer's ``current`` and ``behind``; and a
  verifier's ``status`` (records checked, each copy's last complete sweep);
* the cluster's Redis, through vledger.tools.repl_commands: each ledger's head, every
  node's held height and lag, the replication count distribution; and the open alerts;
* with ``--run-dir``, supervisord's process table on its socket (vledger.tools.supervise):
  each program's state and pid.

:func:`cluster_status` turns what was read into a :class:`ClusterStatus` with the sentences
of what is wrong (pure: the unit tests feed it); :func:`status_json` and :func:`print_status`
show it. Exit codes: 0 every node up and current, no ledger behind, no open alert; 1 Redis
cannot be reached (or the configuration or the key cannot be read); 2 usage; 3 something is
down, behind or alerted (the code of ``vledger repl status`` and ``vledger supervise status``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request
import xmlrpc.client
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import redis

from ..broker.accounts import AccountRegistry, heartbeat_window
from ..broker.client import Client
from ..broker.keys import KeyPair
from ..broker.redis_server import connect, shown_url
from ..broker.replication import ReplicationLedger, numbered
from ..client.session import node_address, now_ms
from ..config.cluster import FOLLOWER_ROLES, ROLES, ClusterConfig, NodeConfig, load_cluster
from ..node.errors import (
    NodeUnavailableError,
    RedisServerError,
    RemoteError,
    StoreDamagedError,
    UsageError,
    VledgerError,
)
from ..node.json_values import error_json
from .alert_commands import open_alert_line, shown_value
from .args import KEY_ENV, config_file
from .client_output import table
from .client_session import load_client_keys
from .cluster_parsers import HELLO_TIMEOUT
from .paths import input_file
from .repl_commands import (
    EXIT_LAGGING,
    REDIS_TIMEOUT,
    Checker,
    LedgerStatus,
    marked_behind,
    marked_down,
    read_status,
    unfollowed_standby,
)
from .repl_commands import print_status as print_ledgers
from .repl_commands import status_json as ledgers_json
from .supervise import Supervisor, layout_for
from .watching import watch_rounds

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_PROBLEM = EXIT_LAGGING  # 3, as `repl status` and `supervise status` (supervisorctl's LSB code)
RUNNING = "RUNNING"  # supervisord's state of a program that runs
_SUPERVISOR_ERRORS = (OSError, xmlrpc.client.Error, http.client.HTTPException)
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a node's own port, never a proxy's
_READYZ_MAX = 1 << 16  # bytes of a /readyz body read


# --- what was read ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeAnswer:
    """What one node answered: its hello (None: no answer), a verifier's status, and what failed."""

    node: str
    hello: dict[str, Any] | None
    status: dict[str, Any] | None = None  # a verifier's status
    error: str | None = None  # why hello (or a verifier's status) got no usable answer
    # The checks its /readyz failed, check -> reason (empty: ready, or no /readyz to ask or answering).
    unready: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProgramState:
    state: str  # supervisord's statename
    pid: int | None  # None: not running


@dataclass(frozen=True, slots=True)
class SupervisordState:
    socket: str
    pid: int | None  # None: no supervisord answers on the socket
    programs: dict[str, ProgramState] = field(default_factory=dict)


# --- the pure core ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node: str
    role: str
    up: bool
    error: str | None
    version: str | None
    current: bool | None  # replicas and observers that answered; None for the others
    behind: dict[str, int]  # ledger -> records it lacks, as the node says
    process: ProgramState | None  # supervisord's view; None: not asked or not a program there
    standby: StandbyState | None = None  # an ingest node that is some ledgers' standby, as its hello says
    unready: dict[str, str] = field(default_factory=dict)  # the checks its /readyz failed, with why


@dataclass(frozen=True, slots=True)
class StandbyState:
    ledgers: tuple[str, ...]
    follow_restarts: int  # its follow ran again after a bug, since the node started


@dataclass(frozen=True, slots=True)
class CopySweep:
    copy: str  # "node|ledger"
    sweeps: int
    records: int  # how many records its last complete sweep verified
    age_s: float | None  # since its last complete sweep; None: none complete yet


@dataclass(frozen=True, slots=True)
class VerifierStatus:
    node: str
    up: bool
    checked: int | None
    swept: int | None
    copies: tuple[CopySweep, ...]

    @property
    def oldest(self) -> CopySweep | None:
        """The copy whose check is the most out of date: one never swept, else the oldest sweep."""
        return max(self.copies, key=lambda c: (c.age_s is None, c.age_s or 0.0), default=None)


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    cluster: str
    redis_url: str  # shown only through shown_url
    nodes: tuple[NodeStatus, ...]
    ledgers: tuple[LedgerStatus, ...]
    verifiers: tuple[VerifierStatus, ...]
    open_alerts: tuple[dict[str, Any], ...]  # ReplicationLedger.open_entries: every raiser's, each its own
    supervisord: SupervisordState | None
    problems: tuple[str, ...]
    redis_error: str | None = None  # Redis did not answer: ledgers and alerts are unknown

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        if self.redis_error is not None:
            return EXIT_FAILED
        return EXIT_OK if self.ok else EXIT_PROBLEM


def cluster_status(
    cluster: str,
    redis_url: str,
    roles: Mapping[str, str],
    answers: Mapping[str, NodeAnswer],
    ledgers: Sequence[LedgerStatus],
    open_alerts: Sequence[dict[str, Any]],
    supervisord: SupervisordState | None,
    now_ms: int,
    redis_error: str | None = None,
    accounts_version: int | None = None,
    standbys: Mapping[str, str] | None = None,
) -> ClusterStatus:
    """The cluster's status from what was read (pure).

    ``roles`` node -> role for every node of the configuration; ``answers`` node -> what it
    answered (a node missing here counts as not answering); ``now_ms`` the clock that dates
    the verifiers' sweeps (milliseconds since 1970, as theirs); ``redis_error`` why Redis
    could not be read (``ledgers`` and ``open_alerts`` are then empty and unknown);
    ``accounts_version`` Redis's accounts version (None: not read), 0 when it holds no account;
    ``standbys`` ledger -> the standby the cluster file names (its hello must say it follows it).
    """
    order = {role: index for index, role in enumerate(ROLES)}
    names = sorted(roles, key=lambda name: (order.get(roles[name], len(ROLES)), name))
    programs = supervisord.programs if supervisord is not None else {}
    nodes = tuple(
        _node_status(
            name, roles[name], answers.get(name, NodeAnswer(name, None, error="not asked")), programs.get(name)
        )
        for name in names
    )
    verifiers = tuple(
        _verifier_status(name, answers.get(name, NodeAnswer(name, None)), now_ms)
        for name in names
        if roles[name] == "verifier"
    )
    # A held height is what Redis last heard: of a node that does not answer, not current.
    down = {node.node for node in nodes if not node.up}
    ledgers = [marked_down(ledger, down) for ledger in ledgers]
    problems = _problems(nodes, ledgers, open_alerts, supervisord)
    problems += _unfollowed(nodes, ledgers, standbys or {})
    # A follower that says it lacks records of a ledger is behind in the ledger table too (after
    # the problems: its own line there says so), so that one output never says both "behind" and
    # "current" of it (outsider 25, H2: its held key, set each heartbeat, lags the cut it saw).
    ledgers = [marked_behind(ledger, {n.node for n in nodes if ledger.ledger in n.behind}) for ledger in ledgers]
    if accounts_version == 0:
        # Outsider26 I5: Redis lost its data. The nodes enforce the admin ledger they proved; only
        # the admin ledger's home puts Redis's copy back, within a poll while it runs.
        problems.insert(
            0,
            "Redis holds no account (it lost its data, or no admin was bootstrapped): the nodes enforce the "
            "admin ledger they proved; its home puts the accounts back while it runs",
        )
    if redis_error is not None:
        problems.insert(0, f"Redis is down: {redis_error}")
    return ClusterStatus(
        cluster,
        redis_url,
        nodes,
        tuple(ledgers),
        verifiers,
        tuple(open_alerts),
        supervisord,
        tuple(problems),
        redis_error,
    )


def _node_status(name: str, role: str, answer: NodeAnswer, process: ProgramState | None) -> NodeStatus:
    hello = answer.hello or {}
    follower = role in FOLLOWER_ROLES and answer.hello is not None
    behind = hello.get("behind")
    return NodeStatus(
        node=name,
        role=role,
        up=answer.hello is not None,
        error=answer.error,
        version=_text_or_none(hello.get("version")),
        current=bool(hello.get("current")) if follower else None,
        behind={str(k): v for k, v in behind.items() if _is_int(v)} if follower and isinstance(behind, dict) else {},
        process=process,
        standby=_standby(hello.get("standby")),
        unready=dict(answer.unready) if answer.hello is not None else {},
    )


def _standby(value: object) -> StandbyState | None:
    if not isinstance(value, dict):
        return None
    ledgers = value.get("ledgers")
    return StandbyState(
        tuple(str(ledger) for ledger in ledgers) if isinstance(ledgers, list) else (),
        _int(value.get("follow_restarts")),
    )


def _verifier_status(name: str, answer: NodeAnswer, now_ms: int) -> VerifierStatus:
    status = answer.status or {}
    copies = status.get("copies")
    sweeps = []
    for copy, entry in sorted(copies.items()) if isinstance(copies, dict) else []:
        sweep = entry if isinstance(entry, dict) else {}
        done = _int(sweep.get("last_complete_ms"))
        sweeps.append(
            CopySweep(
                copy=str(copy),
                sweeps=_int(sweep.get("sweeps")),
                records=_int(sweep.get("records")),
                age_s=max(0.0, (now_ms - done) / 1000) if done > 0 else None,
            )
        )
    checked, swept = status.get("checked"), status.get("swept")
    return VerifierStatus(
        node=name,
        up=answer.hello is not None,
        checked=checked if _is_int(checked) else None,
        swept=swept if _is_int(swept) else None,
        copies=tuple(sweeps),
    )


def _problems(
    nodes: Sequence[NodeStatus],
    ledgers: Sequence[LedgerStatus],
    open_alerts: Sequence[dict[str, Any]],
    supervisord: SupervisordState | None,
) -> list[str]:
    problems = []
    if supervisord is not None and supervisord.pid is None:
        problems.append(f"no supervisord answers on {supervisord.socket}")
    elif supervisord is not None:
        problems += [
            f"supervisord: {name} is {program.state}"
            for name, program in sorted(supervisord.programs.items())
            if program.state != RUNNING
        ]
    for node in nodes:
        # A node whose store did not open said why before it exited (PROTOCOL 10.5).
        damaged = _own_store_damaged(node.node, open_alerts)
        if not node.up and damaged is not None:
            problems.append(
                f"{node.node} does not answer hello: its store is damaged ({StoreDamagedError.code}): "
                f"{shown_value(damaged.get('detail', ''))}"
            )
        elif not node.up:
            problems.append(f"{node.node} does not answer hello: {node.error}")
        elif node.error is not None:
            problems.append(f"{node.node}: {node.error}")
        if node.up and node.unready:
            # Outsider o13: a node left on a rotated Redis password answered hello, "up current",
            # while it could publish nothing; only its /readyz said so.
            problems.append(f"{node.node} answers but is not ready: {_unready(node.unready)}")
        if node.current is False:
            problems.append(f"{node.node} is behind: {_behind(node.behind)}")
    if nodes and not any(node.up for node in nodes):
        problems.append(
            "no node answers: if they run, is the key an account of this cluster? (a refused key gets no answer)"
        )
    problems += [
        f"{ledger.ledger}: {', '.join(ledger.lagging)} behind the head {ledger.head} (as Redis last heard)"
        for ledger in ledgers
        if ledger.lagging
    ]
    problems += [
        f"{ledger.ledger}: a witness cosigned epoch {ledger.refused[0]} at {ledger.refused[1]}, which this cluster "
        f"file does not allow: if you promoted it, state `epoch = {ledger.refused[0]}` in [ledgers.{ledger.ledger}] "
        "on every host (PROTOCOL 10.9)"
        for ledger in ledgers
        if ledger.refused is not None
    ]
    problems += [
        f"{ledger.ledger}: Redis's latest checkpoint verifies with no key of its home {ledger.home} (its key file, "
        "or a rotated key the ledger's records in Redis name): its checkpoints are not checked"
        for ledger in ledgers
        if ledger.unverified_note
    ]
    if open_alerts:
        problems.append(
            f"{len(open_alerts)} open alert{'s' if len(open_alerts) != 1 else ''}: "
            + ", ".join(_named(entry) for entry in open_alerts)
        )
    return problems


def _unfollowed(nodes: Sequence[NodeStatus], ledgers: Sequence[LedgerStatus], standbys: Mapping[str, str]) -> list[str]:
    """The ledgers (of those Redis lists) whose cluster-file standby answers hello without
    following them (:func:`unfollowed_standby`; outsider o21 F1: status said OK meanwhile). A
    standby that became the home is no longer asked to."""
    up = {node.node: node for node in nodes if node.up}
    problems = []
    for ledger in ledgers:
        node = up.get(standbys.get(ledger.ledger, ""))
        if node is None or ledger.home == node.node:
            continue
        listed = {"standby": {"ledgers": list(node.standby.ledgers)}} if node.standby is not None else {}
        problem = unfollowed_standby(ledger.ledger, node.node, listed)
        if problem is not None:
            problems.append(problem)
    return problems


def _own_store_damaged(node: str, open_alerts: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The ``store_damaged`` alert ``node`` raised about its own store, if open: only the node
    raises it (PROTOCOL 10.5), and another node's claim under that key is not its word."""
    key = f"{node}||{StoreDamagedError.code}"
    return next((e for e in open_alerts if e["key"] == key and e.get("raised_by") == node), None)


def _named(entry: dict[str, Any]) -> str:
    return f"{entry['key']} [raised by {entry['raised_by']}]" if entry.get("raised_by") else str(entry["key"])


def _unready(unready: Mapping[str, str]) -> str:
    return "; ".join(f"{check}: {reason}" for check, reason in sorted(unready.items()))


def _behind(behind: Mapping[str, int]) -> str:
    if not behind:
        return "its start-up catch-up has not finished"
    return ", ".join(f"{ledger} by {count:,}" for ledger, count in sorted(behind.items()))


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(value: object) -> int:
    return value if _is_int(value) else 0


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


# --- what it prints ---------------------------------------------------------------------------


def status_json(status: ClusterStatus) -> dict[str, Any]:
    supervisord = status.supervisord
    return {
        "cluster": status.cluster,
        "redis": shown_url(status.redis_url),
        "redis_error": status.redis_error,
        "ok": status.ok,
        "problems": list(status.problems),
        "supervisord": None
        if supervisord is None
        else {
            "socket": supervisord.socket,
            "pid": supervisord.pid,
            "programs": {name: _program_json(p) for name, p in sorted(supervisord.programs.items())},
        },
        "nodes": [
            {
                "node": n.node,
                "role": n.role,
                "up": n.up,
                "error": n.error,
                "version": n.version,
                "current": n.current,
                "behind": n.behind,
                "unready": n.unready,
                "standby": None
                if n.standby is None
                else {"ledgers": list(n.standby.ledgers), "follow_restarts": n.standby.follow_restarts},
                "process": None if n.process is None else _program_json(n.process),
            }
            for n in status.nodes
        ],
        "ledgers": ledgers_json(list(status.ledgers), status.redis_url)["ledgers"],
        "verifiers": [
            {
                "node": v.node,
                "up": v.up,
                "checked": v.checked,
                "swept": v.swept,
                "copies": [_copy_json(c) for c in v.copies],
                "oldest": None if v.oldest is None else _copy_json(v.oldest),
            }
            for v in status.verifiers
        ],
        "open_alerts": [numbered(entry) for entry in status.open_alerts],
        # Exit 1 is a failure: README's error object too, where a script reads ["error"]["code"].
        **(error_json(RedisServerError.code, status.redis_error) if status.redis_error is not None else {}),
    }


def _program_json(program: ProgramState) -> dict[str, Any]:
    return {"state": program.state, "pid": program.pid}


def _copy_json(copy: CopySweep) -> dict[str, Any]:
    return {"copy": copy.copy, "sweeps": copy.sweeps, "records": copy.records, "age_s": copy.age_s}


def node_rows(status: ClusterStatus) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The node table: its header and rows (the PROCESS column only when supervisord was asked)."""
    supervised = status.supervisord is not None
    header = ("NODE", "ROLE", "STATE", *(("PROCESS",) if supervised else ()), "SYNC", "NOTE")
    rows = []
    for node in status.nodes:
        process = (_process(node.process),) if supervised else ()
        unready = f"not ready: {_unready(node.unready)}" if node.up and node.unready else None
        note = "; ".join(text for text in (node.error, unready, _restarts(node.standby)) if text)
        state = ("not ready" if node.unready else "up") if node.up else "down"
        rows.append((node.node, node.role, state, *process, _sync(node), note))
    if status.supervisord is not None:  # the programs that are no node: the Redis run here
        names = {node.node for node in status.nodes}
        for name, program in sorted(status.supervisord.programs.items()):
            if name not in names:
                rows.append((name, "-", "up" if program.state == RUNNING else "down", _process(program), "", ""))
    return header, rows


def _restarts(standby: StandbyState | None) -> str | None:
    """A standby's follow restarts for the NOTE column (none: nothing to say)."""
    if standby is None or not standby.follow_restarts:
        return None
    times = "once" if standby.follow_restarts == 1 else f"{standby.follow_restarts:,} times"
    return f"standby follow ({', '.join(standby.ledgers)}) restarted {times} after a bug: see its log"


def _process(program: ProgramState | None) -> str:
    if program is None:
        return "-"
    return f"{program.state} pid {program.pid}" if program.pid else program.state


def _sync(node: NodeStatus) -> str:
    if node.current is None:
        return ""
    if node.current:
        return "current"
    if not node.behind:
        return "catching up"
    return "behind: " + ", ".join(f"{ledger} {count:,}" for ledger, count in sorted(node.behind.items()))


def _age(age_s: float) -> str:
    if age_s < 120:
        return f"{age_s:.0f} s"
    if age_s < 7200:
        return f"{age_s / 60:.0f} min"
    return f"{age_s / 3600:.1f} h"


def verifier_line(verifier: VerifierStatus) -> str:
    if not verifier.up:
        return f"Verifier {verifier.node}: down"
    if verifier.checked is None:
        return f"Verifier {verifier.node}: up, no status"
    oldest = verifier.oldest
    if oldest is None:
        sweep = "no copy to sweep yet"
    elif oldest.age_s is None:
        sweep = f"{oldest.copy} not swept completely yet"
    else:
        sweep = f"{oldest.copy}, {_age(oldest.age_s)} ago ({oldest.records:,} records)"
    return (
        f"Verifier {verifier.node}: {verifier.checked:,} records checked, {verifier.swept or 0:,} re-verified "
        f"by sweeps; {len(verifier.copies)} copies, the oldest complete sweep: {sweep}"
    )


def print_status(status: ClusterStatus) -> None:
    where = ""
    if status.supervisord is not None and status.supervisord.pid is None:
        where = f"; no supervisord answers on {status.supervisord.socket}"
    elif status.supervisord is not None:
        where = f"; supervisord pid {status.supervisord.pid} on {status.supervisord.socket}"
    up = sum(node.up for node in status.nodes)
    print(f"cluster {status.cluster}: {up} of {len(status.nodes)} nodes up{where}")
    print()
    table(*node_rows(status))
    print()
    if status.redis_error is not None:
        print(f"Redis at {shown_url(status.redis_url)}: DOWN ({status.redis_error}): ledgers and alerts unknown")
    else:
        print_ledgers(list(status.ledgers), status.redis_url)
    if status.verifiers:
        print()
        for verifier in status.verifiers:
            print(verifier_line(verifier))
    print()
    if status.redis_error is not None:
        print("Open alerts: unknown (they are kept in Redis)")
    elif not status.open_alerts:
        print("Open alerts: none")
    else:
        print(f"Open alerts: {len(status.open_alerts)}")
        for entry in status.open_alerts:
            print(open_alert_line(entry))
    print()
    if status.ok:
        print("OK: every node up and current, every ledger replicated to its head, no open alert.")
    else:
        print(f"Problems ({len(status.problems)}):")
        for problem in status.problems:
            print(f"  {problem}")


# --- reading the cluster ------------------------------------------------------------------------


def ask_node(config: ClusterConfig, name: str, keys: KeyPair, timeout: float) -> NodeAnswer:
    """``hello`` (and a verifier's ``status``) within ``timeout`` each; never raises for a node's failure."""
    try:
        address = node_address(config, name)
    except (VledgerError, OSError) as e:
        return NodeAnswer(name, None, error=f"no public key: {getattr(e, 'message', e)}")
    with Client(address, keys, timeout=timeout, max_message_bytes=config.ingest.max_message_bytes) as client:
        try:
            hello = client.hello()
        except (NodeUnavailableError, RemoteError) as e:
            return NodeAnswer(name, None, error=e.message)
        if hello.get("node") != name:
            return NodeAnswer(name, None, error=f"{address}: answers as {hello.get('node')!r}")
        unready = ask_ready(config.nodes[name], timeout)
        if config.nodes[name].role != "verifier":
            return NodeAnswer(name, hello, unready=unready)
        try:
            status = client.call("status")
        except (NodeUnavailableError, RemoteError) as e:
            return NodeAnswer(name, hello, error=f"status: {e.message}", unready=unready)
        return NodeAnswer(name, hello, status if isinstance(status, dict) else None, unready=unready)


def ask_ready(node: NodeConfig, timeout: float) -> dict[str, str]:
    """The checks node ``node``'s ``/readyz`` fails, check -> reason; empty when it has no
    ``http_port``, is ready, or does not answer it in ``timeout`` (hello says whether it is up)."""
    if node.http_port is None:
        return {}
    url = f"http://{node.host}:{node.http_port}/readyz"
    try:
        with _NO_PROXY.open(url, timeout=timeout) as answer:
            body = answer.read(_READYZ_MAX)
    except urllib.error.HTTPError as e:  # 503: not ready, with the same body
        body = e.read(_READYZ_MAX)
    except (OSError, http.client.HTTPException):
        return {}
    try:
        found = json.loads(body)
    except ValueError:
        return {}
    checks = found.get("checks") if isinstance(found, dict) and found.get("ok") is False else None
    if not isinstance(checks, dict):
        return {}
    return {str(check): str(reason) for check, reason in checks.items() if reason is not None}


def read_supervisord(supervisor: Supervisor) -> SupervisordState:
    socket = str(supervisor.socket_path)
    if not supervisor.running():
        return SupervisordState(socket, None)
    try:
        pid = supervisor.pid()
        table = supervisor.processes()
    except _SUPERVISOR_ERRORS:  # it stopped between two calls
        return SupervisordState(socket, None)
    return SupervisordState(
        socket,
        pid,
        {name: ProgramState(str(info["statename"]), info.get("pid") or None) for name, info in table.items()},
    )


@dataclass
class StatusReader:
    """What one round reads, kept open across the rounds of --watch."""

    config: ClusterConfig
    keys: KeyPair
    redis_url: str
    replication: ReplicationLedger
    executor: Executor
    supervisor: Supervisor | None = None
    timeout: float = HELLO_TIMEOUT
    clock: Callable[[], int] = now_ms
    # Checks the cosignatures in Redis with the key files, as repl status does: without it
    # the COSIGNED column was always empty. Kept across --watch rounds (it caches key histories).
    checker: Checker = field(init=False)

    def __post_init__(self) -> None:
        self.checker = Checker(self.config, self.replication.client)

    def read(self) -> ClusterStatus:
        """One round: the nodes are asked in parallel while Redis is read; Redis down is shown,
        not raised, since the nodes answer over CURVE without it."""
        asked: dict[str, Future[NodeAnswer]] = {
            name: self.executor.submit(ask_node, self.config, name, self.keys, self.timeout)
            for name in self.config.nodes
        }
        roles = {name: node.role for name, node in self.config.nodes.items()}
        ledgers: list[LedgerStatus] = []
        open_alerts: list[dict[str, Any]] = []
        redis_error = None
        accounts_version = None
        try:
            # As repl status judges them (o15: a node removed from the cluster file kept its rows,
            # "unknown", its lag growing for good, and the summary still said every ledger replicated).
            silent_after = heartbeat_window(self.config.settings.broker.accounts_poll_ms / 1000)
            ledgers = list(read_status(self.replication, roles, self.checker, silent_after=silent_after))
            open_alerts = self.replication.open_entries()
            accounts_version = self._accounts_version()
        except redis.exceptions.RedisError as e:
            redis_error = str(e) or type(e).__name__
        finally:
            answers = {name: future.result() for name, future in asked.items()}
        supervisord = read_supervisord(self.supervisor) if self.supervisor is not None else None
        return cluster_status(
            self.config.name,
            self.redis_url,
            roles,
            answers,
            ledgers,
            open_alerts,
            supervisord,
            self.clock(),
            redis_error,
            accounts_version,
            dict(self.config.standbys),
        )

    def _accounts_version(self) -> int | None:
        """Redis's accounts version; None when this Redis user may not read it."""
        try:
            return AccountRegistry(self.replication.client, self.replication.namespace).version()
        except redis.exceptions.NoPermissionError:
            return None


# --- the command -----------------------------------------------------------------------------------


def show_status(reader: StatusReader, as_json: bool) -> int:
    status = reader.read()
    if as_json:
        print(json.dumps(status_json(status)), flush=True)
    else:
        print_status(status)
        sys.stdout.flush()
    return status.exit_code


def watch_status(
    reader: StatusReader, *, as_json: bool, interval: float, sleep: Callable[[float], None] = time.sleep
) -> int:
    """A round every ``interval`` seconds until interrupted; the last round's exit code.

    A round that cannot reach Redis says so on stderr and the watch goes on.
    """
    return watch_rounds(lambda: show_status(reader, as_json), as_json=as_json, interval=interval, sleep=sleep)


def client_key(key: Path | None, environ: Mapping[str, str] = os.environ) -> Path:
    path = key or environ.get(KEY_ENV)
    if not path:
        raise UsageError(f"which key asks the nodes? give --key FILE (a .key_secret file) or set ${KEY_ENV}")
    return input_file(Path(path), "--key" if key else f"${KEY_ENV}")


def cmd_status(args: argparse.Namespace) -> int:
    path, key = config_file(args.config), client_key(args.key)  # missing files, before either is read
    config = load_cluster(path)
    keys = load_client_keys(key)
    access = config.redis_access("admin")
    url = access.url
    supervisor = None
    if args.run_dir is not None:
        supervisor = Supervisor(layout_for(config, args.run_dir, find_redis=False).socket_path)
    client = connect(access, timeout=REDIS_TIMEOUT)
    try:
        with ThreadPoolExecutor(max_workers=min(32, len(config.nodes)), thread_name_prefix="status") as executor:
            reader = StatusReader(
                config, keys, url, ReplicationLedger(client), executor, supervisor, timeout=HELLO_TIMEOUT
            )
            if args.watch is None:
                return show_status(reader, args.json)
            return watch_status(reader, as_json=args.json, interval=args.watch)
    finally:
        client.close()
