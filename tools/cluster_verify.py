"""``vledger verify --cluster FILE [--key FILE]``: the running cluster's open alerts, then, for each
ledger whose genesis lists outside witnesses (PROTOCOL 13.9), how far a quorum of them witnessed
it and whether every copy holds that tree (tools/outside_quorum.py, PROTOCOL 11.5); exit 1 while
there is an open alert or such a ledger fails.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..broker.keys import KeyPair, generation_name, key_paths, newest_generation
from ..broker.redis_server import connect
from ..broker.replication import REDIS_ERRORS, ReplicationLedger, redis_failed
from ..config.cluster import ClusterConfig, load_cluster
from ..ingest.store_sources import Sources
from ..node.errors import UsageError
from .alert_commands import EXIT_ALERTS, EXIT_OK, open_alert_line
from .args import KEY_ENV
from .client_session import load_client_keys
from .outside_quorum import check_outside
from .paths import input_file


def verify_cluster(path: Path, as_json: bool, key: Path | None = None, timeout: float = 5.0) -> int:
    """``vledger verify --cluster``: the open alerts, then for each ledger whose genesis lists
    outside witnesses (PROTOCOL 13.9) how far a quorum of them witnessed it and whether every
    copy is that tree (11.5); exit 1 while there is an open alert or a ledger fails."""
    config = load_cluster(path)
    access = config.redis_access("admin")
    repl = ReplicationLedger(connect(access, timeout=5.0))
    sources = Sources(config, _asking_keys(config, key), timeout)
    try:
        open_alerts = repl.open_entries()
        reports = [
            report
            for ledger, home in sorted(repl.ledgers_or_streams().items())
            if (report := check_outside(config, repl, sources, ledger, home or config.home_of(ledger).name)) is not None
        ]
    except REDIS_ERRORS as e:
        raise redis_failed(access.url, e) from None
    finally:
        sources.close()
        repl.client.close()
    ok = not open_alerts and all(r.ok for r in reports)
    if as_json:
        outside = [r.as_json() for r in reports]
        print(
            json.dumps(
                {"cluster": config.name, "open_alerts": open_alerts, "outside": outside, "ok": ok}, sort_keys=True
            )
        )
        return EXIT_OK if ok else EXIT_ALERTS
    if not open_alerts:
        print(f"cluster {config.name}: no open alert")
    else:
        print(f"cluster {config.name}: {len(open_alerts)} open alert{'s' if len(open_alerts) != 1 else ''}")
        for entry in open_alerts:
            print(open_alert_line(entry))
    for report in reports:
        print("\n".join(report.lines()))
    failed = [r.ledger for r in reports if not r.ok]
    if failed:
        print(f"outside witnesses: {len(failed)} ledger{'s' if len(failed) != 1 else ''} FAILED ({', '.join(failed)})")
    return EXIT_OK if ok else EXIT_ALERTS


def _asking_keys(config: ClusterConfig, key: Path | None) -> KeyPair:
    """The key that asks the nodes for checkpoints, records and proofs: ``key``, else $VLEDGER_KEY,
    else (where the cluster's key directory is, as for ``vledger repair``) the newest key of its
    verifier, else of another of its nodes. Which one asks changes no answer: each is checked."""
    given = key or os.environ.get(KEY_ENV)
    if given:
        return load_client_keys(input_file(Path(given), "--key" if key else f"${KEY_ENV}"))
    order = {"verifier": 0, "replica": 1, "observer": 2}
    for node in sorted(config.nodes.values(), key=lambda n: (order.get(n.role, 3), n.name)):
        newest = generation_name(node.name, newest_generation(config.keys_dir, node.name))
        secret = key_paths(config.keys_dir, newest)[1]
        if secret.is_file():
            return load_client_keys(secret)
    raise UsageError(
        f"which key asks the nodes? give --key FILE (a .key_secret file) or set ${KEY_ENV}: "
        f"{config.keys_dir} holds no node's key"
    )
