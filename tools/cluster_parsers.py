"""The parsers of the commands of nodes and clusters: built without importing the modules that
run them (Redis, ZeroMQ, aiohttp, the node processes), which a :class:`~.args.Deferred` names
and imports when its command runs (cli.COMMANDS). The client verbs' are in client_parsers.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..node.tally_body import STALE_AFTER_MS
from .args import (
    KEY_ENV,
    PASSPHRASE_ENV,
    SUMMARIES,
    Deferred,
    Subparsers,
    add_command,
    add_config_option,
    add_json_option,
    ledger_name,
    node_name,
    positive,
)
from .client_payloads import seconds

SUPERVISE_TIMEOUT = 60.0  # seconds `vledger supervise start` and `stop` wait by default


# --- node_commands.py -------------------------------------------------------------------


# The node processes, by role: each runs until SIGTERM or SIGINT.
NODE_PROCESSES: dict[str, tuple[str, str]] = {
    "ingest": (
        SUMMARIES["ingest"],
        "Run the ingest node NAME of the cluster configuration: CURVE-encrypted client commands, durable "
        "appends, checkpointed and published to the replicas, until SIGTERM or SIGINT.",
    ),
    "replica": (
        SUMMARIES["replica"],
        "Run the replica node NAME of the cluster configuration: follow the feeds of the nodes it follows, "
        "verify and store every record its home's checkpoints cover, catch up on any gap, serve the read commands, "
        "until SIGTERM or SIGINT.",
    ),
    "observer": (
        SUMMARIES["observer"],
        "Run the observer node NAME of the cluster configuration: follow, verify and store every record "
        "as a replica does, serve the read commands, re-run every ledger's domain rules from the chain "
        "(flagging what breaks them) and publish tallies signed with NAME.sign to Redis, until SIGTERM "
        "or SIGINT.",
    ),
    "verifier": (
        SUMMARIES["verifier"],
        "Run the verifier NAME of the cluster configuration: check every new record on every copy, compare "
        "every copy's head with its home's, and sweep every copy from genesis, raising an alert on any "
        "divergence or tampering, until SIGTERM or SIGINT.",
    ),
}


def add_node_commands(commands: Subparsers) -> None:
    """The node processes' commands, ``gateway`` and ``keygen``."""
    for role, (summary, description) in NODE_PROCESSES.items():
        node = add_command(commands, role, Deferred("node_commands", "cmd_node"), summary, description)
        node.add_argument("--config", type=Path, required=True, metavar="FILE", help="the cluster configuration")
        node.add_argument("--node", type=node_name, required=True, metavar="NAME", help=f"which {role} node to run")
        _add_passphrase_option(node, "the node's secret keys are protected by a passphrase")

    gateway = add_command(
        commands,
        "gateway",
        Deferred("node_commands", "cmd_gateway"),
        SUMMARIES["gateway"],
        "Serve the store of node NAME read-only over HTTP on its gateway_port: the C2SP tlog-tiles of "
        "every ledger, JSON records, ranges, proofs, voters' records, the observers' signed tallies, "
        "fund balances, an event stream and the web pages (check my vote, live tally, charity, "
        "operators' dashboard), until SIGTERM or SIGINT. No account is needed; nothing is written.",
    )
    gateway.add_argument("--config", type=Path, required=True, metavar="FILE", help="the cluster configuration")
    gateway.add_argument("--node", type=node_name, metavar="NAME", help="whose store to serve")
    gateway.add_argument("--list", action="store_true", help="print the configured gateways' addresses and exit")
    gateway.add_argument("--port", type=int, metavar="PORT", help="listen here instead of the node's gateway_port")
    gateway.add_argument(
        "--host", metavar="ADDRESS", help="bind this address (a container: 0.0.0.0) instead of the node's bind or host"
    )
    gateway.add_argument(
        "--logs",
        type=Path,
        metavar="DIR",
        help="the processes' log files (<node>.log): their last lines are shown on the dashboard (/api/cluster) "
        "to whoever reaches the gateway, so give it only to a gateway this host alone reaches",
    )

    functions = add_command(
        commands,
        "redis-functions",
        Deferred("node_commands", "cmd_redis_functions"),
        SUMMARIES["redis-functions"],
        "Load vledger's Redis Functions library (the atomic steps every node calls with FCALL) into the "
        "cluster's Redis, signed in as the loader user (vledger-functions, its password beside the ACL "
        "file): no node's user may load one. It compares the code Redis holds under the library's name "
        "with its own and loads its own over other code (logged as an ERROR: someone with the loader's "
        "password tampered with it). With --keep, stay and do so again whenever Redis lost the library "
        "(restarted without its data, FUNCTION FLUSH, a new server) or holds other code, until SIGTERM "
        "or SIGINT: `vledger supervise` runs it so beside a local Redis.",
    )
    functions.add_argument("--config", type=Path, required=True, metavar="FILE", help="the cluster configuration")
    functions.add_argument(
        "--keep", action="store_true", help="stay, and load the library again when Redis lost it or holds other code"
    )
    functions.add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS", help="with --keep: how often to look (default 1)"
    )
    functions.add_argument(
        "--prune",
        action="store_true",
        help="then delete every vledger_* library but this version's (run it once every node runs this code: "
        "until then an older version's functions, bugs included, stay callable by every node's Redis user)",
    )

    keygen = add_command(
        commands,
        "keygen",
        Deferred("node_commands", "cmd_keygen"),
        SUMMARIES["keygen"],
        "Create a CURVE key pair: NAME.key (public) and NAME.key_secret (mode 0600). With "
        "--cluster, every key pair the configuration needs that does not exist yet.",
    )
    keygen.add_argument("name", nargs="?", metavar="NAME", help="the key pair's name (an account or node name)")
    keygen.add_argument("--dir", type=Path, default=Path("."), metavar="DIR", help="where to write (default: .)")
    keygen.add_argument("--cluster", type=Path, metavar="CONFIG", help="create the cluster's missing key pairs")
    keygen.add_argument(
        "--bundles",
        type=Path,
        metavar="DIR",
        help="with --cluster: also write DIR/<node>, DIR/gateway, DIR/redis (and DIR/sentinel behind Sentinel), "
        "each holding only the key files that process reads, to be its key directory (tools/key_bundles.py)",
    )
    _add_passphrase_option(keygen, "protect the secret key with a passphrase (scrypt + ChaCha20-Poly1305)")
    add_json_option(keygen)


def add_admin_commands(commands: Subparsers) -> Subparsers:
    """The ``admin`` group; returns its actions, where the client verbs ``admin log`` and ``totp`` go."""
    admin = commands.add_parser(
        "admin",
        help=SUMMARIES["admin"],
        description="Create the first admin account (bootstrap) or read the admin ledger (log).",
    )
    actions = admin.add_subparsers(dest="admin_action", required=True, metavar="ACTION")
    bootstrap = add_command(
        actions,
        "bootstrap",
        Deferred("node_commands", "cmd_admin_bootstrap"),
        "create the first admin account (local, on a node's host)",
        "Bind a public key to a new admin account directly in the cluster's Redis. Only for the "
        "first admin: later accounts are made over the protocol by an admin, and the first admin "
        "command records this one on the admin ledger. Once the admin ledger exists it only confirms "
        "an enabled admin holding this key (with --totp: a new second factor for it); anything else "
        "is refused (admin_ledger_exists, exit 1).",
    )
    bootstrap.add_argument("--config", type=Path, required=True, metavar="FILE", help="the cluster configuration")
    bootstrap.add_argument("--account", required=True, metavar="NAME", help="the admin account's name")
    bootstrap.add_argument("--key", type=Path, required=True, metavar="FILE.key", help="its public key file")
    bootstrap.add_argument(
        "--totp",
        action="store_true",
        help="also give the account a new second factor (replacing any it has): prints its otpauth:// URI and "
        "recovery codes once",
    )
    bootstrap.add_argument(
        "--once",
        action="store_true",
        help="where the admin ledger already refuses it (admin_ledger_exists), say so and exit 0: for a start "
        "script that runs it every time, where the admin ledger's word on the account stands",
    )
    add_json_option(bootstrap)
    migrate_keys = add_command(
        actions,
        "migrate-keys",
        Deferred("node_commands", "cmd_admin_migrate_keys"),
        "rename Redis keys of the older layout (before hash tags)",
        "Rename every Redis key of the layout without hash tags to its tagged name (docs/PROTOCOL.md "
        "10.10), once, after an upgrade; running it again changes nothing. An old key whose new name "
        "holds other data is kept and listed, never deleted.",
    )
    migrate_keys.add_argument("--config", type=Path, required=True, metavar="FILE", help="the cluster configuration")
    add_json_option(migrate_keys)
    return actions


def _add_passphrase_option(command: argparse.ArgumentParser, text: str) -> None:
    command.add_argument(
        "--passphrase", action="store_true", help=f"{text}; read from ${PASSPHRASE_ENV} or asked on the terminal"
    )


# --- supervise.py -----------------------------------------------------------------------


def add_supervise_command(commands: Subparsers) -> None:
    supervise = add_command(
        commands,
        "supervise",
        Deferred("supervise", "cmd_supervise"),
        SUMMARIES["supervise"],
        "start: create the missing keys and the admin account, write RUN/supervisord.conf (Redis and "
        "one program per node), start supervisord unless it runs, and wait until every process "
        "answers. stop: stop them all and wait until they are gone. status: supervisorctl status "
        "(exit 3 when a process is not running). conf: print the supervisord.conf.",
    )
    supervise.add_argument("action", choices=["start", "stop", "status", "conf"], help="what to do")
    supervise.add_argument("--config", type=Path, required=True, metavar="FILE", help="the cluster configuration")
    supervise.add_argument(
        "--run-dir",
        type=Path,
        metavar="DIR",
        help="supervisord's file, socket and logs, and Redis's data (default: the folder of the data directory)",
    )
    supervise.add_argument(
        "--timeout",
        type=seconds,
        default=SUPERVISE_TIMEOUT,
        metavar="SECONDS",
        help=f"how long start and stop wait ({SUPERVISE_TIMEOUT:g})",
    )


# --- tally_command.py -------------------------------------------------------------------


def add_tally_command(commands: Subparsers) -> None:
    tally = add_command(
        commands,
        "tally",
        Deferred("tally_command", "cmd_tally"),
        SUMMARIES["tally"],
        "Show every observer's latest signed tally of LEDGER from the cluster's Redis, each signature "
        "checked with the observer's public key NAME.sign.pub, and whether the observers agree at the "
        "newest height they all counted, and whether each has counted up to the ledger's latest "
        "checkpoint its home signed. Exit 0 all verified and in agreement; 1 a bad signature or a "
        "disagreement (added to the alerts), or no such ledger; 3 still counting; 4 an observer is stale "
        "(behind the checkpoint, signing nothing newer for --stale-after seconds) or ahead of it (claiming "
        "records no checkpoint holds), the agreement is old and behind the checkpoint, no checkpoint verified, "
        "or the checkpoint is stale (no majority of its witnesses vouched for it within the cluster's "
        "recosign_interval_ms plus --stale-after: an old view of a quiet ledger).",
    )
    tally.add_argument("ledger", type=ledger_name, metavar="LEDGER")
    tally.add_argument(
        "--stale-after",
        type=_seconds,
        default=STALE_AFTER_MS / 1000,
        metavar="SECONDS",
        help=f"how long an observer behind the checkpoint may sign nothing newer, and the checkpoint go "
        f"unvouched for past the recosign interval ({STALE_AFTER_MS // 1000})",
    )
    add_config_option(tally)
    add_json_option(tally)


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds >= 0")
    return seconds


# --- repl_commands.py -------------------------------------------------------------------


REPL_JSON_SHAPE = """\
With --json, one JSON object (with --watch, one per line and round; a round that cannot
read Redis prints its error on stderr instead, and the watch goes on):

  {"redis": URL (password hidden), "current": bool (no replica, observer or standby lags or
   is down, and no home is down),
   "ledgers": [{"ledger": str, "home": node (the cluster file's, or the proven epoch's),
                "epoch": int (the newest proven: 1 until a handover is proven),
                "claimed": null, or {"epoch": int, "home": node}: what Redis names
                           when it is not the proven epoch and home (claimed, unproven),
                "refused": null, or {"epoch": int, "home": node}: a newer epoch a witness's
                           note proves that this cluster file does not allow (an epoch from 3
                           whose home it does not name the standby, nor states the epoch of:
                           state `epoch = N` on every host if you promoted it),
                "unproven": bool (a claim, a refused epoch, or a checkpoint in Redis of
                            which none verifies: nothing shown is proven; exit 4),
                "head": int (-1: no record yet), "head_from": "checkpoint" (the latest
                checkpoint that verifies, size - 1) or "home" (none verifies: the
                home's held height or the stream's last, whichever is higher),
                "stream_head": int or null, "home_held": int or null,
                "nodes": [{"node": str, "role": "ingest"|"replica"|"observer"|...|"unknown",
                           "held": int or null (never reported),
                           "lag": int or null (head - held; null when unverified),
                           "lagging": bool (a replica, an observer, or the ledger's standby
                                      while it is not the home, holding less than the head),
                           "cosigned": int or null (the size its verified cosignature is of),
                           "unverified": bool (held above the head: a claim nothing signed
                                           confirms; anyone who reaches Redis can write it),
                           "down": bool (its heartbeat in Redis is older than 30 s, or
                                    6 accounts polls: "held" is what it last said; the home
                                    too while the verifier's home_unreachable of it is open),
                           "fenced": bool (the home a proven handover replaced: its copy,
                                     whose records past the handover are not the ledger's,
                                     is not counted; no lag),
                           "impossible": bool (held above all the home holds: written by
                                         hand, down or not; counted nowhere)}],
                "counts": [{"holders": int, "records": int}],
                "lagging": [node names],
                "checkpoint": int or null (the size of the latest checkpoint that verifies),
                "cosigned": {witness: int (the size of its cosignature that verifies)}}]}

"counts" is the distribution of replication counts over the records 0..head: how many
records are held by that many nodes (the home included), fewest holders first; only the
configuration's ingest, replica and observer nodes count (a held height is still a claim),
never a fenced home.

Exit codes: 0 every replica and observer (and standby) holds every ledger up to its head
and every ledger's home is up; 1 Redis unreachable or an invalid configuration; 2 usage;
3 some replica, observer or standby lags (one that never reported counts as lagging) or is
down, or a ledger's home is down (its writes stop: its heartbeat stopped, or the verifier's
home_unreachable of it is open); 4, before 3, a ledger is unproven ("unproven" above).
With --watch the command runs until interrupted and exits with the last round's code."""


def add_repl_commands(commands: Subparsers) -> None:
    repl = commands.add_parser(
        "repl",
        help=SUMMARIES["repl"],
        description="Replication, as the cluster's Redis records it.",
    )
    actions = repl.add_subparsers(dest="repl_action", required=True, metavar="ACTION")
    status = add_command(
        actions,
        "status",
        Deferred("repl_commands", "cmd_repl_status"),
        "each ledger's head, every node's held height and lag, the replication counts",
        "For every ledger in the cluster's Redis (the configuration's [cluster] redis, or\n"
        "$REDIS_URL): its head (what the home signed: its latest checkpoint that verifies;\n"
        "without one, the home's held height or the stream's last), the stream's last height,\n"
        "every node's held height and lag (head - held; '-' if it never reported; a held\n"
        "height above the head is 'unverified'): the configuration's ingest, replica and\n"
        "observer nodes, and any other node Redis names (counted nowhere);\n"
        "how many records have each replication count (hints: held heights prove nothing);\n"
        "and each ledger's latest checkpoint with the witnesses whose cosignature verifies\n"
        "(what a put's w counts). Asks no node: shows what Redis last heard.",
    )
    status.formatter_class = argparse.RawDescriptionHelpFormatter
    status.epilog = REPL_JSON_SHAPE
    add_config_option(status)
    add_json_option(status)
    status.add_argument(
        "--watch", type=seconds, metavar="SECONDS", help="print again every SECONDS until interrupted (Ctrl-C)"
    )
    forget = add_command(
        actions,
        "forget",
        Deferred("repl_forget", "cmd_repl_forget"),
        "delete the Redis keys of a node taken out of the cluster",
        "Delete what NODE wrote in the cluster's Redis, once README's \"Removing a replica or an\n"
        'observer" took it out of the cluster file and stopped it: per ledger its held height,\n'
        "cosigned note and tallies, its accounts report (the heartbeat), its open alerts and its\n"
        "sweep (PROTOCOL 10.10 names each key). Its alerts stream and evidence are kept unless\n"
        "--history. Refused (forget_refused, nothing deleted) while the cluster file names NODE or\n"
        "its heartbeat is recent or unreadable: it may still run.",
    )
    forget.formatter_class = argparse.RawDescriptionHelpFormatter
    forget.epilog = (
        'With --json: {"node", "deleted": [keys], "kept": [keys]}.\n\n'
        "Exit codes: 0 its keys deleted (or none found); 1 refused, Redis unreachable or an\n"
        "invalid configuration; 2 usage (not a node name)."
    )
    forget.add_argument("node", metavar="NODE", help="the node's name, no longer in the cluster file")
    forget.add_argument("--history", action="store_true", help="delete its alerts stream and evidence too")
    add_config_option(forget)
    add_json_option(forget)


# --- repair.py --------------------------------------------------------------------------


def add_repair_command(commands: Subparsers) -> None:
    repair = add_command(
        commands,
        "repair",
        Deferred("repair", "cmd_repair"),
        SUMMARIES["repair"],
        "Rebuild NODE's store, which must be stopped: per ledger, take the largest checkpoint its home "
        "signed that a quorum of witnesses cosigned (their keys from the key directory), find another "
        "node whose tree at that size has that root, copy and verify its records into a fresh store "
        "beside NODE's, and only then move the old store aside (<store>.broken-<time>, never deleted) "
        "and put the new one in place. Refuses, saying why and changing nothing, when there is no such "
        "checkpoint or source, or a record does not verify. Exit 0 repaired, 1 refused, 2 usage.",
    )
    repair.add_argument("node", type=node_name, metavar="NODE", help="the node whose store to rebuild")
    repair.add_argument("--config", type=Path, required=True, metavar="FILE", help="the cluster configuration")
    repair.add_argument(
        "--key", type=Path, metavar="FILE", help="the key to read the other nodes with (default: NODE's own)"
    )
    repair.add_argument(
        "--quorum", type=positive, metavar="N", help="cosignatures the checkpoint needs (default: a majority)"
    )
    repair.add_argument(
        "--force", action="store_true", help="rebuild even a store that already holds every quorum checkpoint"
    )
    repair.add_argument(
        "--restart", action="store_true", help="stop NODE through supervisord first, start it again after"
    )
    repair.add_argument("--run-dir", type=Path, metavar="DIR", help="supervisord's directory (as for supervise)")
    repair.add_argument(
        "--timeout", type=seconds, default=10.0, metavar="SECONDS", help="how long one request may wait (10)"
    )
    add_json_option(repair)


# --- alert_commands.py ------------------------------------------------------------------


def add_alert_commands(commands: Subparsers) -> None:
    alerts = add_command(
        commands,
        "alerts",
        Deferred("alert_commands", "cmd_alerts"),
        SUMMARIES["alerts"],
        "List the latest alerts (a node, ledger and height, what failed, expected and found), "
        "oldest first, each marked open or closed (resolved, or raised again since); --follow then "
        "prints new ones as they come. 'resolve' closes open alerts (vledger verify --cluster lists them); "
        "one whose raiser resolves it itself comes back while its raiser still sees its cause.",
    )
    alerts.add_argument(
        "action", nargs="?", choices=["list", "resolve"], default="list", help="list (default) or resolve"
    )
    alerts.add_argument("keys", nargs="*", metavar="KEY", help="resolve: the open alerts' keys, NODE|LEDGER|WHAT")
    alerts.set_defaults(trailing="keys")  # keys also after options: cli.main
    add_config_option(alerts)
    alerts.add_argument("--follow", action="store_true", help="wait for new alerts and print them")
    alerts.add_argument("--count", type=positive, default=100, metavar="N", help="how many past alerts (100)")
    alerts.add_argument("--all", action="store_true", help="resolve: every open alert")
    add_json_option(alerts, ', {"alerts": [...]} (with --follow, then one more a line for each batch of new ones)')


# --- status_command.py ------------------------------------------------------------------


HELLO_TIMEOUT = 1.0  # seconds a node has to answer hello (and a verifier status) before it counts as down


STATUS_JSON_SHAPE = """\
With --json, one JSON object (with --watch, one per line and round). Redis down does not
hide the nodes: they are still asked over CURVE, and "redis_error" says why the ledgers and
alerts (read from Redis) are empty:

  {"cluster": str, "redis": URL (password hidden), "redis_error": str or null (Redis down),
   "error": {"code": "redis_server", "message": str} (only with Redis down: exit 1),
   "ok": bool (exit code 0),
   "problems": [str]: one sentence for each thing down, behind or alerted,
   "supervisord": null (no --run-dir)
                  or {"socket": path, "pid": int or null (none answers),
                      "programs": {name: {"state": "RUNNING"|"EXITED"|..., "pid": int or null}}},
   "nodes": [{"node": str, "role": "ingest"|"replica"|"observer"|"verifier",
              "up": bool (answered hello), "error": str or null (why not, or a verifier's
              failed status), "version": str or null,
              "current": bool or null (replicas and observers: caught up and behind nothing),
              "behind": {ledger: records},
              "standby": null, or for an ingest node that is a standby (its hello's):
                         {"ledgers": [names], "follow_restarts": int (its follow ran again
                          after a bug, since the node started: see its log)},
              "process": {"state": str, "pid": int or null} or null (not supervised here)}],
   "ledgers": [as in `vledger repl status --json`: {"ledger", "home", "epoch", "claimed", "refused", "unproven",
               "head", "head_from",
               "stream_head", "home_held", "nodes": [{"node", "role", "held", "lag", "lagging",
               "cosigned", "unverified", "down" (here: it does not answer hello; "held" is what
               it last said), "fenced"}], "counts": [{"holders", "records"}], "lagging": [node],
               "checkpoint", "cosigned"}],
   "verifiers": [{"node": str, "up": bool, "checked": int or null (stream entries checked),
                  "swept": int or null (records re-verified by sweeps),
                  "copies": [{"copy": "node|ledger", "sweeps": int, "records": int,
                              "age_s": float or null (since its last complete sweep; null: none yet)}],
                  "oldest": one of "copies" (a copy never swept first, else the oldest sweep) or null}],
   "open_alerts": [{"key": "node|ledger|what", "id", "node", "ledger", "height", "what", "detail",
                    "source", "expected", "found", "raised_by" (the node whose keys hold it; absent
                    for the admin's shared keys)}] (strings, as `vledger verify --cluster --json`
                   gives them; by key, then raiser: two raisers of one key are two entries)}

Exit codes: 0 every node answers, every replica and observer is current, no ledger is
behind in Redis, no alert is open (and with --run-dir every program is RUNNING); 1 Redis
cannot be reached (the nodes are shown all the same), or the configuration or the key cannot
be read; 2 usage; 3 something
is down, behind or alerted. With --watch the command runs until interrupted and exits
with the last round's code."""


def add_status_command(commands: Subparsers) -> None:
    status = add_command(
        commands,
        "status",
        Deferred("status_command", "cmd_status"),
        SUMMARIES["status"],
        "One view of the cluster. Every node of the configuration is asked hello (each at most\n"
        f"{HELLO_TIMEOUT:g} s, all at once): up or down, and whether each replica and observer is current.\n"
        "With --run-dir, supervisord's state and pid of each program too. From the cluster's\n"
        "Redis (the configuration's [cluster] redis, or $REDIS_URL), as `vledger repl status`:\n"
        "each ledger's head, every node's held height and lag, the replication counts; and the\n"
        "open alerts. From each verifier: the records it checked and its oldest complete sweep.\n"
        "The nodes are asked with --key (or $VLEDGER_KEY): any account's key, e.g. the admin's.",
    )
    status.formatter_class = argparse.RawDescriptionHelpFormatter
    status.epilog = STATUS_JSON_SHAPE
    add_config_option(status)
    status.add_argument(
        "--key", type=Path, metavar="FILE", help=f"the secret key that asks the nodes (default: ${KEY_ENV})"
    )
    status.add_argument(
        "--run-dir", type=Path, metavar="DIR", help="where `vledger supervise` runs the cluster: its process table too"
    )
    add_json_option(status)
    status.add_argument(
        "--watch", type=seconds, metavar="SECONDS", help="print again every SECONDS until interrupted (Ctrl-C)"
    )


# --- anchors_command.py -----------------------------------------------------------------


def add_anchors_command(commands: Subparsers) -> None:
    anchors = add_command(
        commands,
        "anchors",
        Deferred("anchors_command", "cmd_anchors"),
        SUMMARIES["anchors"],
        "Print the trust anchors of docs/PROTOCOL.md 15.5: every ledger's genesis hash (read from "
        "--store, or from every store of the configuration, which must agree), the witnesses' keys, "
        "the observers' keys and the admin ledger's checkpoint key (from the key directory). Anyone "
        "holding them verifies the cluster with no account, over the public gateway or its web "
        "pages, trusting nothing the gateway says.",
    )
    add_config_option(anchors)
    anchors.add_argument("--store", type=Path, metavar="DIR", help="read the genesis records from this store only")
    add_json_option(anchors)
