"""``vledger verify --cluster FILE [--key FILE]``: the running cluster's open alerts, the ledgers
whose cluster-file standby does not follow them, then, for each ledger whose genesis lists
outside witnesses (PROTOCOL 13.9), how far a quorum of them witnessed it and whether every copy
holds that tree (tools/outside_quorum.py, PROTOCOL 11.5, 11.6); exit 1 while there is an open
alert, such a standby, or such a ledger fails.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..broker.keys import KeyPair, generation_name, key_paths, newest_generation
from ..broker.redis_server import connect
from ..broker.replication import REDIS_ERRORS, ReplicationLedger, numbered, redis_failed
from ..config.cluster import FOLLOWER_ROLES, ClusterConfig, load_cluster
from ..ingest.store_sources import Sources
from .alert_commands import EXIT_ALERTS, EXIT_OK, open_alert_line
from .args import KEY_ENV
from .client_session import load_client_keys
from .outside_quorum import OutsideReport, check_outside
from .paths import input_file
from .repl_commands import unfollowed_standby


def verify_cluster(path: Path, as_json: bool, key: Path | None = None, timeout: float = 5.0) -> int:
    """``vledger verify --cluster``: the open alerts, then for each ledger whose genesis lists
    outside witnesses (PROTOCOL 13.9) how far a quorum of them witnessed it and whether every
    copy is that tree (11.5); exit 1 while there is an open alert or a ledger fails. Without a
    key to ask the nodes with (none given, none in the key directory) that check is not made,
    and said (``"outside": null`` and ``"outside_unchecked"`` in ``--json``)."""
    config = load_cluster(path)
    keys = _asking_keys(config, key)
    access = config.redis_access("admin")
    repl = ReplicationLedger(connect(access, timeout=5.0))
    reports: list[OutsideReport] | None = None
    unfollowed: list[dict[str, str]] = []
    try:
        open_alerts = repl.open_entries()
        # A ledger {ledgers} no longer names (every ingest node's user may HDEL there) is checked all the same.
        ledgers = sorted({**dict.fromkeys(repl.stream_ledgers(), ""), **repl.ledgers_or_streams()}.items())
        if keys is not None:
            sources = Sources(config, keys, timeout)
            try:
                if ledgers:  # every node that may hold a copy, at once: N down cost one timeout, not N
                    sources.probe(sorted(n.name for n in config.nodes.values() if n.role in HOLDER_ROLES))
                homes = [(ledger, trusted_home(config, ledger, home)) for ledger, home in ledgers]
                unfollowed = _unfollowed(config, homes, sources.hellos)
                reports = [r for ledger, home in homes if (r := check_outside(config, repl, sources, ledger, home))]
            finally:
                sources.close()
    except REDIS_ERRORS as e:
        raise redis_failed(access.url, e) from None
    finally:
        repl.client.close()
    unchecked = NO_KEY if reports is None and ledgers else None
    ok = not open_alerts and not unfollowed and all(r.ok for r in reports or ())
    if as_json:
        answer: dict[str, Any] = {"cluster": config.name, "open_alerts": [numbered(e) for e in open_alerts], "ok": ok}
        answer["standbys_not_following"] = [{k: v for k, v in u.items() if k != "line"} for u in unfollowed]
        answer["outside"] = None if reports is None else [r.as_json() for r in reports]
        if unchecked is not None:
            answer["outside_unchecked"] = unchecked
        print(json.dumps(answer, sort_keys=True))
        return EXIT_OK if ok else EXIT_ALERTS
    if not open_alerts:
        print(f"cluster {config.name}: no open alert")
    else:
        print(f"cluster {config.name}: {len(open_alerts)} open alert{'s' if len(open_alerts) != 1 else ''}")
        for entry in open_alerts:
            print(open_alert_line(entry))
    for entry in unfollowed:
        print(entry["line"])
    for report in reports or ():
        print("\n".join(report.lines()))
    failed = [r.ledger for r in reports or () if not r.ok]
    if failed:
        print(f"outside witnesses: {len(failed)} ledger{'s' if len(failed) != 1 else ''} FAILED ({', '.join(failed)})")
    if unchecked is not None:
        print(f"outside witnesses NOT checked: {unchecked}")
    return EXIT_OK if ok else EXIT_ALERTS


def _unfollowed(
    config: ClusterConfig, homes: list[tuple[str, str]], hellos: dict[str, dict[str, Any]]
) -> list[dict[str, str]]:
    """Each ledger whose cluster-file standby answered hello without following it (not its home
    now): ``{"ledger", "standby", "line"}`` (repl_commands.unfollowed_standby; outsider o21 F1:
    verify exited 0 meanwhile)."""
    found = []
    for ledger, home in homes:
        standby = config.standby_of(ledger)
        if standby is None or standby.name == home:
            continue
        line = unfollowed_standby(ledger, standby.name, hellos.get(standby.name))
        if line is not None:
            found.append({"ledger": ledger, "standby": standby.name, "line": line})
    return found


def trusted_home(config: ClusterConfig, ledger: str, announced: str) -> str:
    """The home whose keys check ``ledger``: the one Redis announces only when it is the cluster
    file's home or standby (10.9), else the cluster file's. Every ingest node's Redis user may
    write {ledgers}: a node named there could make the check its own keys' (none verifying,
    the ledger NOT checked and the exit 0)."""
    configured, standby = config.home_of(ledger).name, config.standby_of(ledger)
    return announced if announced in (configured, standby and standby.name) else configured


HOLDER_ROLES = frozenset(("ingest", *FOLLOWER_ROLES))  # who outside_quorum.holders may ask

NO_KEY = f"no key to ask the nodes with (give --key FILE or set ${KEY_ENV}; the key directory holds no node's key)"


def _asking_keys(config: ClusterConfig, key: Path | None) -> KeyPair | None:
    """The key that asks the nodes for checkpoints, records and proofs: ``key``, else $VLEDGER_KEY,
    else (where the cluster's key directory is, as for ``vledger repair``) the newest key of its
    verifier, else of another of its nodes; None when there is none. Which one asks changes no
    answer: each is checked."""
    given = key or os.environ.get(KEY_ENV)
    if given:
        return load_client_keys(input_file(Path(given), "--key" if key else f"${KEY_ENV}"))
    order = {"verifier": 0, "replica": 1, "observer": 2}
    for node in sorted(config.nodes.values(), key=lambda n: (order.get(n.role, 3), n.name)):
        newest = generation_name(node.name, newest_generation(config.keys_dir, node.name))
        secret = key_paths(config.keys_dir, newest)[1]
        if secret.is_file():
            return load_client_keys(secret)
    return None
