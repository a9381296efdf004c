"""A store whose record bytes were changed in its file, behind the gateway (outsider o10 M1).

A ledger whose genesis pins the home's checkpoint key, 300 records (a full tile and a partial
one), the home's signed checkpoint at 290 kept in the store. One byte of a record's payload is
changed with SQLite, as an insider with the file would: the gateway served that record's entry
bundle as immutable next to a hash tile with the genuine leaf, and the record, its receipt and
its inclusion proof as 200. Over a real store and real HTTP (aiohttp in a thread).
"""

from __future__ import annotations

import json
import sqlite3
import struct
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.http import HttpThread
from vledger.broker.replication import Alert, ReplicationLedger
from vledger.broker.signing import generate_signing_key, load_signing_key, signing_key_paths
from vledger.config.cluster import ClusterConfig
from vledger.config.settings import Limits
from vledger.node import tree
from vledger.node.errors import StoreDamagedError
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry
from vledger.node.store import ChainStore
from vledger.node.storefile import DB_NAME
from vledger.node.witness import HomeSigner, WitnessSigner, home_key, witness_name
from vledger.tests.unit.verifier.fakes import FakeRedis, NoRedis, two_nodes
from vledger.verifier import gateway as gateway_module
from vledger.verifier.gateway import IMMUTABLE, Gateway, build_app, readiness
from vledger.verifier.tally import TallyReport, Verdict

LIMITS = Limits()
SEED = bytes(range(32))
LEDGER = "zakat"
RECORDS = 300
SIGNED_AT = 290  # records 290..299 are the home's newest, not covered by a checkpoint yet
AMOUNT = 40_000  # record i's payload holds AMOUNT + i: a msgpack uint16, changed in place


def _amount(height: int) -> bytes:
    return b"\xa6amount" + struct.pack(">BH", 0xCD, AMOUNT + height)


def signed_ledger(tmp_path: Path, records: int, signed_at: int) -> ClusterConfig:
    """replica-1's store: the ledger of ``records`` records, the home's checkpoint at ``signed_at`` kept."""
    config = two_nodes(tmp_path / "cluster.toml")
    home = HomeSigner("t", SEED)
    pinned = home_key("t", LEDGER, home.key(LEDGER).public_key).encode()
    with ChainStore(config.store_dir("replica-1"), origin="ingest-1") as store:
        rules = LedgerRules(kinds=("note",), difficulty=0, rules={"checkpoint_key": pinned})
        store.create_ledger(Entry.prepare(rules.genesis_content(LEDGER, "admin", "g", 1), 0, LIMITS))
        notes = [Content(LEDGER, "note", {"amount": AMOUNT + i}, "admin", f"r{i}", 1) for i in range(1, records)]
        placed = store.submit_entries([Entry.prepare(note, 0, LIMITS) for note in notes]).result()
        assert not [e for e in placed if isinstance(e, Exception)], placed[:3]
        signed = home.sign(LEDGER, signed_at, store.root(LEDGER, signed_at))
        store.checkpoints.keep(LEDGER, "signed", signed_at, signed.root, signed.note)
    return config


@pytest.fixture
def config(tmp_path: Path) -> ClusterConfig:
    return signed_ledger(tmp_path, RECORDS, SIGNED_AT)


@contextmanager
def serving(config: ClusterConfig, redis_client: Any = None) -> Iterator[tuple[str, Gateway]]:
    """replica-1's gateway over HTTP (aiohttp in a thread): its URL, and the gateway."""
    gateway = Gateway(config, "replica-1", redis_client=redis_client or NoRedis())
    try:
        with HttpThread(build_app(gateway, readiness(gateway)), "127.0.0.1", 0) as server:
            yield f"http://127.0.0.1:{server.port}", gateway
    finally:
        gateway.close()


@pytest.fixture
def served(config: ClusterConfig) -> Iterator[tuple[str, Gateway]]:
    with serving(config) as found:
        yield found


def forge(config: ClusterConfig, height: int) -> None:
    """Change one byte of record ``height``'s amount in the store's file (7232 for 40000 + h)."""
    path = config.store_dir("replica-1") / DB_NAME
    with sqlite3.connect(path) as db:
        (data,) = db.execute("SELECT data FROM records WHERE ledger = ? AND height = ?", (LEDGER, height)).fetchone()
        forged = bytes(data).replace(_amount(height), _amount(height)[:-2] + b"\x1c" + _amount(height)[-1:])
        assert forged != data
        db.execute("UPDATE records SET data = ? WHERE ledger = ? AND height = ?", (forged, LEDGER, height))
    db.close()


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def refused_damaged(url: str) -> bool:
    status, headers, body = get(url)
    return (
        status == 503
        and headers.get("Cache-Control") == "no-store"
        and json.loads(body)["error"]["code"] == "store_damaged"
    )


def test_proven_tiles_and_bundles_are_immutable_the_newest_records_are_not(served: tuple[str, Gateway]) -> None:
    url, _ = served
    base = f"{url}/ledgers/{LEDGER}/tile"
    for path in ("entries/000", "0/000", f"entries/001.p/{SIGNED_AT - 256}", f"0/001.p/{SIGNED_AT - 256}"):
        status, headers, _ = get(f"{base}/{path}")
        assert status == 200 and headers["Cache-Control"] == IMMUTABLE, path
    # Past the served checkpoint: no signed root says these bytes are the ledger's yet.
    for path in (f"entries/001.p/{RECORDS - 256}", f"0/001.p/{RECORDS - 256}"):
        status, headers, _ = get(f"{base}/{path}")
        assert status == 200 and headers["Cache-Control"] == "no-cache", path
    assert json.loads(get(f"{url}/readyz")[2])["checks"]["store"] is None  # (its Redis is down)


def test_a_changed_record_in_a_full_tile_is_never_served(served: tuple[str, Gateway], config: ClusterConfig) -> None:
    url, _ = served
    forge(config, 3)
    api = f"{url}/api/ledgers/{LEDGER}"
    for route in (
        f"{url}/ledgers/{LEDGER}/tile/entries/000.p/7",
        f"{url}/ledgers/{LEDGER}/tile/entries/000",
        f"{url}/ledgers/{LEDGER}/tile/0/000",
        f"{api}/records/3",
        f"{api}/records?start=0&limit=5",
        f"{api}/receipts/3",
        f"{api}/proof/inclusion?index=3",
        # Once found, nothing of the ledger is served from this copy: its checkpoint, root,
        # other records (a client is sent to another copy, not to a store half forged).
        f"{url}/ledgers/{LEDGER}/checkpoint",
        api,
        f"{api}/records/260",
        f"{url}/ledgers/{LEDGER}/tile/entries/001.p/{SIGNED_AT - 256}",
    ):
        assert refused_damaged(route), route
    assert "do not lead to the root" in json.loads(get(f"{url}/readyz")[2])["checks"]["store"]


def test_a_record_changed_after_its_tile_was_proven_is_caught_too(
    served: tuple[str, Gateway], config: ClusterConfig
) -> None:
    # The proof is kept, not the verdict: what a later request reads is compared with it (the
    # outsider's forgery came after the tiles had been served and cached).
    url, _ = served
    bundle = f"{url}/ledgers/{LEDGER}/tile/entries/000"
    assert get(bundle)[1]["Cache-Control"] == IMMUTABLE
    assert get(f"{url}/api/ledgers/{LEDGER}/records/3")[0] == 200
    forge(config, 3)
    assert refused_damaged(f"{url}/api/ledgers/{LEDGER}/records/3")
    assert refused_damaged(bundle)


def test_a_changed_record_past_the_last_full_tile_refuses_the_checkpoint_and_the_verdict(
    served: tuple[str, Gateway], config: ClusterConfig
) -> None:
    url, gateway = served
    forge(config, 280)  # under the checkpoint, in the tree's right edge: its root is another
    api = f"{url}/api/ledgers/{LEDGER}"
    for route in (
        f"{url}/ledgers/{LEDGER}/checkpoint",
        f"{api}/checkpoint",
        api,  # its root would be the forged tree's
        f"{api}/receipts/7",
        f"{url}/ledgers/{LEDGER}/tile/entries/001.p/{SIGNED_AT - 256}",
    ):
        assert refused_damaged(route), route
    # The observers' verdict is judged against the served checkpoint: refused, not "agree".
    report = TallyReport(LEDGER, (), Verdict("agree", 5), {})
    with pytest.raises(StoreDamagedError):
        gateway._judged(LEDGER, report)


@pytest.mark.parametrize("forged", [True, False])
def test_an_alert_on_this_node_s_record_has_its_tile_checked_before_the_checkpoint_is_served(
    config: ClusterConfig, redis_client: Any, forged: bool
) -> None:
    # The node raised bad_checksum at height 3 (o10: the gateway served the checkpoint, the
    # root and an "agree" verdict meanwhile). An alert is a hint: an honest record stays served.
    if forged:
        forge(config, 3)
    alert = Alert("replica-1", LEDGER, 3, "bad_checksum", "the record's checksum is not its content's")
    ReplicationLedger(redis_client, node="replica-1").alert(alert)
    gateway = Gateway(config, "replica-1", redis_client=redis_client)
    try:
        with HttpThread(build_app(gateway), "127.0.0.1", 0) as server:
            url = f"http://127.0.0.1:{server.port}/ledgers/{LEDGER}/checkpoint"
            if forged:
                assert refused_damaged(url)
            else:
                assert get(url)[0] == 200
    finally:
        gateway.close()


def cosigned_ahead(config: ClusterConfig, records: int) -> bytes:
    """replica-1's cosignature of the home's checkpoint of 10 records more than the store's ``records``."""
    home = HomeSigner("t", SEED)
    generate_signing_key(config.keys_dir, "replica-1")
    seed = load_signing_key(signing_key_paths(config.keys_dir, "replica-1")[0]).seed
    witness = WitnessSigner(witness_name("t", "replica-1"), seed)
    return witness.cosign(home.sign(LEDGER, records + 10, tree.leaf_hash(b"later")), 1_790_000_000)


def test_the_store_s_own_checkpoint_is_served_while_a_larger_one_is_past_its_records(config: ClusterConfig) -> None:
    # The witness cosigned a larger checkpoint (in Redis) than this store holds: it was chosen
    # (the most cosigned) and answered "no checkpoint yet", with the store's own one there.
    gateway = Gateway(config, "replica-1", redis_client=FakeRedis({b"replica-1": cosigned_ahead(config, RECORDS)}))
    try:
        assert gateway.checkpoint(LEDGER).gathered.checkpoint.size == SIGNED_AT
    finally:
        gateway.close()


def test_a_ledger_healed_in_place_is_served_again(
    served: tuple[str, Gateway], config: ClusterConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A follower heals its copy in the same file (node/store_cut.py cuts back, fetches again):
    # the gateway refused the ledger until it restarted (review r16, finding 4).
    url, _ = served
    path = config.store_dir("replica-1") / DB_NAME
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT * FROM records WHERE ledger = ? AND height = 100", (LEDGER,)).fetchone()
        db.execute("DELETE FROM records WHERE ledger = ? AND height = 100", (LEDGER,))
    db.close()
    assert refused_damaged(f"{url}/api/ledgers/{LEDGER}/records/120")
    assert json.loads(get(f"{url}/readyz")[2])["checks"]["store"] is not None
    # From now on every request finds the refusal expired: the tile is proven again, and while
    # the record is missing, refused again.
    monkeypatch.setattr(gateway_module, "REFUSAL_SECONDS", 0.0)
    assert refused_damaged(f"{url}/api/ledgers/{LEDGER}/records/120")
    assert json.loads(get(f"{url}/readyz")[2])["checks"]["store"] is not None
    with sqlite3.connect(path) as db:  # the node fetched it again: the same bytes, the same file
        db.execute(f"INSERT INTO records VALUES ({','.join('?' * len(row))})", row)
    db.close()
    status, _, body = get(f"{url}/api/ledgers/{LEDGER}/records/120")
    assert status == 200, body[:300]
    assert get(f"{url}/ledgers/{LEDGER}/checkpoint")[0] == 200
    assert json.loads(get(f"{url}/readyz")[2])["checks"]["store"] is None


def test_a_refused_ledger_s_cached_tiles_are_refused_too(served: tuple[str, Gateway], config: ClusterConfig) -> None:
    # A tile in the cache went out 200 immutable while every other route of the ledger answered
    # store_damaged (review r18, finding 5): PROTOCOL 15.1 refuses its tiles too.
    url, _ = served
    base = f"{url}/ledgers/{LEDGER}/tile"
    for path in ("0/000", "1/000.p/1"):
        status, headers, _ = get(f"{base}/{path}")
        assert status == 200 and headers["Cache-Control"] == IMMUTABLE, path
    forge(config, 3)
    assert refused_damaged(f"{url}/api/ledgers/{LEDGER}/records/3")
    assert refused_damaged(f"{base}/0/000")
    assert refused_damaged(f"{base}/1/000.p/1")


def test_a_contradiction_found_by_reads_of_a_replaced_file_is_not_recorded(served: tuple[str, Gateway]) -> None:
    # A thread still on the old file (for up to STORE_LOOK_SECONDS after `vledger repair`'s
    # swap) marked the new one damaged, and nothing reset it until the gateway restarted.
    url, gateway = served
    assert get(f"{url}/api/ledgers/{LEDGER}/records/3")[0] == 200
    generation = gateway._generation
    gateway._generation += 1  # another thread saw the file replaced meanwhile
    error = gateway.contradiction(LEDGER, "read from the old file", generation, 0)
    assert isinstance(error, StoreDamagedError)
    assert gateway.known_damage() is None
    assert get(f"{url}/api/ledgers/{LEDGER}/records/3")[0] == 200


def test_the_newest_records_read_once_are_compared_with_as_proven_ones(
    served: tuple[str, Gateway], config: ClusterConfig
) -> None:
    # The newest partial tile, which no signed root proves, was re-read (up to 256 records) and
    # served as the store said at each request: its leaves are now kept for the ledger's size.
    url, _ = served
    api = f"{url}/api/ledgers/{LEDGER}"
    assert get(f"{api}/records/295")[0] == 200
    forge(config, 295)
    assert refused_damaged(f"{api}/records/295")


def test_the_roots_checked_are_the_newest_few_per_ledger(served: tuple[str, Gateway], config: ClusterConfig) -> None:
    _, gateway = served
    with ChainStore(config.store_dir("replica-1"), origin="ingest-1") as store:
        roots = [(size, store.root(LEDGER, size)) for size in range(1, 40)]
    for size, root in roots:
        gateway._check_root(LEDGER, size, root)
    assert gateway._roots_checked[LEDGER] == roots[-gateway_module.ROOTS_KEPT :]


def _listed(url: str) -> dict[str, Any]:
    status, _, body = get(f"{url}/api/ledgers")
    assert status == 200, body[:300]
    (entry,) = [e for e in json.loads(body)["ledgers"] if e["ledger"] == LEDGER]
    return dict(entry)


@pytest.mark.parametrize("height", [3, 280])
def test_the_index_lists_the_signed_root_and_a_refused_ledger_as_refused(
    served: tuple[str, Gateway], config: ClusterConfig, height: int
) -> None:
    # The index kept listing the store's root (the forged tree's, for a record of its right
    # edge) while every route of the ledger answered store_damaged (outsider o11).
    url, _ = served
    with ChainStore(config.store_dir("replica-1"), origin="ingest-1") as store:
        signed_root = store.root(LEDGER, SIGNED_AT).hex()
    assert _listed(url) == {
        "ledger": LEDGER,
        "size": SIGNED_AT,
        "root": signed_root,
        "type": None,
        "signed": True,
        "refused": None,
    }
    forge(config, height)
    assert refused_damaged(f"{url}/api/ledgers/{LEDGER}/records/{height}")
    entry = _listed(url)
    assert entry["refused"]["code"] == "store_damaged", entry
    assert (entry["size"], entry["root"], entry["signed"]) == (None, None, False)


def test_the_cluster_state_says_the_store_the_gateway_refuses(config: ClusterConfig, redis_client: Any) -> None:
    # outsider32 R4: the dashboard showed replica-1 READY "store: ok" (the node's own /readyz)
    # while every answer of the gateway from that store was 503 store_damaged.
    gateway = Gateway(config, "replica-1", redis_client=redis_client)
    try:
        with HttpThread(build_app(gateway, readiness(gateway)), "127.0.0.1", 0) as server:
            url = f"http://127.0.0.1:{server.port}"
            assert json.loads(get(f"{url}/api/cluster")[2])["nodes"]["replica-1"]["gateway_store"] is None
            forge(config, 3)
            assert refused_damaged(f"{url}/api/ledgers/{LEDGER}/records/3")
            gateway._cluster_cache = None  # the answer before the damage is cached for a moment
            said = json.loads(get(f"{url}/api/cluster")[2])["nodes"]
            assert "do not lead to the root" in said["replica-1"]["gateway_store"], said
            assert said["ingest-1"].get("gateway_store") is None
    finally:
        gateway.close()


def test_another_raiser_s_later_alert_of_the_key_hides_neither_the_height_to_check_nor_the_alert(
    config: ClusterConfig, redis_client: Any
) -> None:
    # Outsider o16 2: another node's alert under the key, with a later stream id, stood for the
    # node's own: its height 0 was all the gateway checked before serving the checkpoint, and all
    # /api/cluster showed. Each raiser's alert is its own entry, each one's height checked.
    forge(config, 3)
    alert = Alert("replica-1", LEDGER, 3, "bad_checksum", "the record's checksum is not its content's")
    ReplicationLedger(redis_client, node="replica-1").alert(alert)
    benign = Alert("replica-1", LEDGER, 0, "bad_checksum", "benign: nothing to do")
    ReplicationLedger(redis_client, node="ingest-1").alert(benign)
    gateway = Gateway(config, "replica-1", redis_client=redis_client)
    try:
        with HttpThread(build_app(gateway, readiness(gateway)), "127.0.0.1", 0) as server:
            url = f"http://127.0.0.1:{server.port}"
            assert refused_damaged(f"{url}/ledgers/{LEDGER}/checkpoint")
            shown = json.loads(get(f"{url}/api/cluster")[2])["alerts"]
            assert [(a["key"], a["raised_by"], a["height"], a["detail"]) for a in shown] == [
                (alert.key, "ingest-1", 0, benign.detail),
                (alert.key, "replica-1", 3, alert.detail),
            ]
            # Numbers as numbers, as every raiser's and every other JSON output's (outsider o17).
            assert all(isinstance(a["at_ms"], int) for a in shown)
    finally:
        gateway.close()
