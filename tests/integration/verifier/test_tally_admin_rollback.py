"""An older, genuine admin checkpoint set back in Redis: the verifier still trusts a rotated observer (o9 J5).

The insider holds the vledger-admin Redis password: it saved a genuine checkpoint of the admin
ledger, the admin then rotated observer-1's Ed25519 key (a record past that checkpoint), and it
sets the old note back and cuts the records list to match, every few milliseconds. The observer
signs its tallies with its new key. The verifier, running (o9's run C) or restarted meanwhile
(run B), judged those honest entries by the node keys of the shorter view, the replaced key, and
raised ``observer-1|<ledger>|bad_signature`` on every ledger, although its log said the records
proven before stay in force; those alerts stayed open once the rollback stopped. It checks them
by the rotations its own proven copy of the admin ledger holds, and resolves a bad_signature
alert it raised of entries that verify with them. Real processes: an ingest node (the admin home), an observer, a
verifier, a real redis-server.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from vledger.broker.redis_keys import group_key, ledger_key
from vledger.broker.redis_server import RedisServer, connect
from vledger.broker.replication import Alert, ReplicationLedger
from vledger.broker.signing import load_verify_key, signing_key_paths
from vledger.broker.tallies import Published, TallyBoard
from vledger.node.note import parse_checkpoint, parse_note
from vledger.node.rules.admin import ADMIN_LEDGER
from vledger.tests.integration.cluster import ADMIN, LocalCluster, entry, genesis, wait_until
from vledger.verifier.tally import check_published

LEDGER = "council"
OBSERVER = "observer-1"
VERIFIER = "verifier-1"
NOTE = ledger_key("vledger", ADMIN_LEDGER, "checkpoint")
RECORDS = group_key("vledger", "accounts", "admin:records")
BAD_SIGNATURE = f"{OBSERVER}|{LEDGER}|bad_signature"
WAIT = 30.0
# Looks at the tallies (every 5 s) past the observer's first entry by its new key: an entry failing
# is raised once keys read key_lag_s (5 s here) after it was first seen still reject it.
LOOKS_PAST = 3


def _cluster(redis_server: RedisServer) -> LocalCluster:
    return LocalCluster(
        redis_server.url, nodes=1, replicas=1, observers=1, verifiers=1, observing={"tally_interval_ms": 100}
    )


def _admin_size(client: Any) -> int:
    note = client.get(NOTE)
    return -1 if note is None else parse_checkpoint(parse_note(note).text).size


def _saved_checkpoint(client: Any) -> tuple[bytes, int]:
    """What the insider saves: Redis's genuine admin checkpoint once it covers the whole list."""

    def covered() -> tuple[bytes, int] | None:
        note, size = client.get(NOTE), client.llen(RECORDS)
        return (note, size) if note is not None and _admin_size(client) == size else None

    found: tuple[bytes, int] = wait_until(covered, WAIT, "an admin checkpoint of the whole list")
    return found


@contextmanager
def _set_back(client: Any, note: bytes, size: int) -> Iterator[None]:
    """The insider's loop: the old note set back and the list cut to its size, every 5 ms."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            client.set(NOTE, note)
            client.ltrim(RECORDS, 0, size - 1)
            stop.wait(0.005)

    thread = threading.Thread(target=loop, name="rollback", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _rotate(cluster: LocalCluster) -> tuple[dict[str, Any], Any]:
    """``vledger key rotate observer-1``, answered once every node applied it; the new key."""
    keys = cluster.directory / "keys"
    common = ["--config", str(cluster.config_path), "--key", str(keys / "admin.key_secret")]
    rotated = json.loads(cluster.cli("key", "rotate", OBSERVER, "--window", "1", "--json", *common).stdout)
    assert rotated["pending"] == [], rotated
    return rotated, load_verify_key(signing_key_paths(keys, f"{OBSERVER}@1")[1])


def _signed_by(board: TallyBoard, key: Any) -> Published:
    def latest() -> Published | None:
        published = board.latest(LEDGER, [OBSERVER]).get(OBSERVER)
        return published if published is not None and check_published(published, key, LEDGER).ok else None

    found: Published = wait_until(latest, WAIT, "the observer's latest tally signed by its new key")
    return found


def _looks(cluster: LocalCluster) -> int:
    return int(cluster.admin(VERIFIER).call("status")["tally_looks"])


def _looked_past(cluster: LocalCluster, looks: int) -> None:
    wait_until(lambda: _looks(cluster) >= looks + LOOKS_PAST, WAIT, f"{LOOKS_PAST} more looks at the tallies")


def _bad_signatures(alerts: ReplicationLedger) -> list[dict[str, str]]:
    return [a for a in alerts.alerts(1000) if a.get("what") == "bad_signature"]


def _prepared(cluster: LocalCluster) -> tuple[Any, TallyBoard, ReplicationLedger]:
    """The ledger written and looked at by the verifier before the rotation: its keys were read then."""
    cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
    cluster.client("writer1").put_many([entry(LEDGER, "vote", {"n": i}, "writer1") for i in range(3)])
    client = connect(cluster.cluster_redis_url)
    board = TallyBoard(client)
    wait_until(lambda: board.latest(LEDGER, [OBSERVER]).get(OBSERVER) is not None, WAIT, "the observer's tally")
    looks = _looks(cluster)
    wait_until(lambda: _looks(cluster) > looks, WAIT, "a look with the observer's tally there")
    return client, board, ReplicationLedger(client)


def test_a_running_verifier_checks_a_rotated_observer_by_its_proven_key_while_an_old_admin_checkpoint_is_set_back(
    redis_server: RedisServer,
) -> None:
    """o9 run C: the running verifier raised bad_signature within a second of the set-back."""
    with _cluster(redis_server) as cluster:
        client, board, alerts = _prepared(cluster)
        note, size = _saved_checkpoint(client)
        _, new_key = _rotate(cluster)
        # Set back at once: the verifier read the observers' keys before the rotation, and reads
        # them again when the observer's first entry by its new key fails with them.
        with _set_back(client, note, size):
            _signed_by(board, new_key)
            _looked_past(cluster, _looks(cluster))
            assert _admin_size(client) == size
            assert _bad_signatures(alerts) == []
            # `vledger tally` has no copy of its own: the admin ledger's stream and the replica's
            # cosigned admin checkpoint in Redis still prove the rotation.
            shown = cluster.cli("tally", LEDGER, "--config", str(cluster.config_path), "--json", check=False)
            assert [o["signature"] for o in json.loads(shown.stdout)["observers"]] == ["ok"], shown.stdout


def test_a_verifier_restarted_while_an_old_admin_checkpoint_is_set_back_keeps_the_rotation_it_proved(
    redis_server: RedisServer,
) -> None:
    """o9 run B: restarted during the set-back, the verifier logged the records proven before in
    force, took the shorter view's keys for the tallies and raised bad_signature, left open once
    the rollback stopped. One an earlier run raised of the honest entry is resolved."""
    with _cluster(redis_server) as cluster:
        client, board, alerts = _prepared(cluster)
        note, size = _saved_checkpoint(client)
        _, new_key = _rotate(cluster)
        honest = _signed_by(board, new_key)
        with _set_back(client, note, size):
            assert cluster.stop_node(VERIFIER) == 0
            # What the verifier had raised before this fix, left open by the run that stopped.
            ReplicationLedger(client, node=VERIFIER).alert(
                Alert(
                    OBSERVER,
                    LEDGER,
                    honest.height,
                    "bad_signature",
                    f"its tally stream's entry {honest.entry_id} does not verify: the signature does not verify",
                    found=f"sha256:{hashlib.sha256(honest.body).hexdigest()}",
                )
            )
            planted = [a["id"] for a in _bad_signatures(alerts)]
            cluster.start_node(VERIFIER)
            wait_until(lambda: BAD_SIGNATURE not in alerts.open_alerts(), WAIT, "the planted alert resolved")
            _looked_past(cluster, _looks(cluster))
            assert [a["id"] for a in _bad_signatures(alerts)] == planted
            assert BAD_SIGNATURE not in alerts.open_alerts()
