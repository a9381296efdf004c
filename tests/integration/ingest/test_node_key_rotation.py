"""A node's CURVE key rotates under load (``vledger key rotate``, docs/PROTOCOL.md 16.6).

Two writers put throughout: one holds only the node's old key (it connected before the
rotation), the other the new key, reaching the node as the client library does once the
key directory has the new generation (its endpoint and its rotation endpoint). Every put of
both is acknowledged and stored; when the window ends, the old key gets no handshake, on a
new connection or on the one it had.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from vledger.broker.client import Client, NodeAddress
from vledger.broker.feed import FeedSource
from vledger.broker.keys import load_public, load_secret, new_keypair
from vledger.broker.redis_server import RedisServer, connect
from vledger.broker.replication import ReplicationLedger
from vledger.broker.signing import VerifyKey, load_signing_key, load_verify_key, new_signing_key, signing_key_paths
from vledger.client.session import node_address
from vledger.config.cluster import load_cluster
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.node.errors import NodeUnavailableError, NoteError, RemoteError
from vledger.node.record import decode_record
from vledger.node.rules.admin import ADMIN_LEDGER
from vledger.node.witness import CheckpointKeys, WitnessSigner, check_cosigned, home_key, witness_key, witness_name
from vledger.tests.integration.cluster import ADMIN, FeedTap, LocalCluster, entry, genesis, wait_until

LEDGER = "votes"
NODE = "ingest-1"
WINDOW_SECONDS = 6


class Writer(threading.Thread):
    """Puts one record after another until stopped; keeps every acknowledgement and failure."""

    def __init__(self, client: Client, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.client = client
        self.stop = threading.Event()
        self.acknowledged: dict[str, int] = {}  # request id -> height
        self.failures: list[str] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            e = entry(LEDGER, "vote", {"n": n, "by": self.name}, "writer1")
            try:
                result = self.client.put(e)
            except (NodeUnavailableError, RemoteError) as error:
                self.failures.append(f"put {n}: {error}")
                return
            self.acknowledged[e.content.request_id] = result["height"]


def _until(predicate: Callable[[], Any], seconds: float, what: str) -> None:
    wait_until(predicate, seconds, what)


def test_a_rotation_under_load_fails_no_put_and_the_old_key_is_refused_after_the_window(
    redis_server: RedisServer,
) -> None:
    with LocalCluster(redis_server.url, nodes=1, accounts={"writer1": "writer"}) as cluster:
        cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
        old_address = cluster.address(NODE)
        old = Writer(Client(old_address, cluster.keys["writer1"], timeout=5.0), "old-key")
        old.start()
        _until(lambda: len(old.acknowledged) >= 20, 20, "the first writer's puts")
        common = ["--config", str(cluster.config_path), "--key", str(cluster.directory / "keys" / "admin.key_secret")]
        rotated = cluster.cli("key", "rotate", NODE, "--window", str(WINDOW_SECONDS), "--json", *common)
        assert '"generation": 1' in rotated.stdout, rotated.stdout
        config = load_cluster(cluster.config_path)
        new_address = node_address(config, NODE)
        assert new_address.key == load_public(config.keys_dir / f"{NODE}@1.key") != old_address.key
        assert new_address.also == (config.node(NODE).rotation_endpoint,)
        new = Writer(Client(new_address, cluster.keys["writer1"], timeout=5.0), "new-key")
        new.start()
        sign = rotated_payload(rotated.stdout)["sign"]
        # A second rotation while the first one's window is open would cut the old key at once.
        _refused(new_address, cluster, {"node": NODE, "curve": new_keypair().public, "sign": sign}, "bad_request")
        _until(lambda: len(new.acknowledged) >= 20, 20, "the second writer's puts, on the new key")
        rotation = next(r for r in _admin_records(new_address, cluster) if r.content.kind == "key_rotation")
        until_ms = rotation.content.payload["until"]
        assert rotation.content.payload["curve"] == new_address.key
        # The old key works through the window (a second before its end, to spare the race).
        while time.time() * 1000 < until_ms - 1000:
            assert not old.failures, old.failures
            time.sleep(0.05)
        old.stop.set()
        old.join(10)
        assert not old.failures, old.failures
        done_before = len(new.acknowledged)
        _until(lambda: time.time() * 1000 > until_ms + 500, WINDOW_SECONDS + 5, "the window's end")
        _until(lambda: len(new.acknowledged) >= done_before + 20, 20, "puts on the new key after the window")
        new.stop.set()
        new.join(10)
        assert not new.failures, new.failures
        # The old key: refused on a new connection, and the connection it had is gone.
        for client in (Client(old_address, cluster.keys["writer1"], timeout=2.0), old.client):
            with pytest.raises(NodeUnavailableError):
                client.call("hello")
            client.close()
        # The new key alone (no rotation endpoint) now works on the node's endpoint.
        main_only = Client(NodeAddress(new_address.endpoint, new_address.key), cluster.keys["writer1"], timeout=5.0)
        assert main_only.call("hello")
        # Nothing acknowledged is lost: every put of both writers is in the chain, at its height.
        records = [decode_record(data, PROTOCOL_LIMITS) for data in main_only.records(LEDGER)]
        stored = {r.content.request_id: r.height for r in records}
        for writer in (old, new):
            assert writer.acknowledged, writer.name
            assert {rid: stored.get(rid) for rid in writer.acknowledged} == writer.acknowledged
        # What node.rotate refuses, on the node that homes the admin ledger.
        fresh = new_keypair().public
        for change, code in (
            ({"node": "ingest-9", "curve": fresh}, "bad_request"),  # no such node
            ({"curve": cluster.keys["writer1"].public}, "key_in_use"),  # an account's key
            ({"curve": new_address.key}, "key_in_use"),  # the node's own
            ({"curve": "not a key"}, "bad_public_key"),
            ({"curve": fresh, "sign": "xyz"}, "bad_request"),
            ({"curve": fresh, "window_ms": 10}, "bad_request"),
        ):
            _refused(main_only.node, cluster, {"node": NODE, "curve": fresh, "sign": sign} | change, code)
        main_only.close()
        new.client.close()


def _admin_records(address: NodeAddress, cluster: LocalCluster) -> list[Any]:
    admin = Client(address, cluster.keys[ADMIN], timeout=5.0)
    try:
        return [decode_record(data, PROTOCOL_LIMITS) for data in admin.records(ADMIN_LEDGER)]
    finally:
        admin.close()


def rotated_payload(stdout: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(stdout)
    return result


def _refused(address: NodeAddress, cluster: LocalCluster, args: dict[str, Any], code: str) -> None:
    admin = Client(address, cluster.keys[ADMIN], timeout=5.0)
    try:
        with pytest.raises(RemoteError) as refused:
            admin.call("node.rotate", {"window_ms": 5000} | args)
        assert refused.value.code == code, (args, refused.value)
    finally:
        admin.close()


# --- a replica's Ed25519 cosignature key -----------------------------------------------------------

REPLICA = "replica-1"
CLUSTER = "test"  # LocalCluster's [cluster] name


class WitnessedWriter(Writer):
    """Puts with ``w=1``: each answer needs a cosignature of the replica that the home verified."""

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            e = entry(LEDGER, "vote", {"n": n, "by": self.name}, "writer1")
            try:
                result = self.client.call("put", {"content": e.content_bytes, "nonce": e.nonce, "w": 1})
            except (NodeUnavailableError, RemoteError) as error:
                self.failures.append(f"put {n}: {error}")
                return
            self.acknowledged[e.content.request_id] = result["height"]


def _cosigned_by(cluster: LocalCluster, signing: VerifyKey) -> int:
    """The size of the replica's cosignature in Redis if ``signing`` made it, else 0."""
    note = ReplicationLedger(connect(cluster.cluster_redis_url)).cosignatures(LEDGER).get(REPLICA)
    home = load_verify_key(signing_key_paths(cluster.directory / "keys", NODE)[1]).raw
    try:
        key = witness_key(witness_name(CLUSTER, REPLICA), signing.raw)
        return check_cosigned(note or b"", LEDGER, CLUSTER, home_key(CLUSTER, LEDGER, home), key).size
    except NoteError:
        return 0


def test_a_replica_s_ed25519_key_rotates_under_w1_puts_and_its_old_key_stops_counting_after_the_window(
    redis_server: RedisServer,
) -> None:
    with LocalCluster(
        redis_server.url, nodes=1, replicas=1, accounts={"writer1": "writer"}, replication={"write_timeout_ms": 5000}
    ) as cluster:
        cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
        keys = cluster.directory / "keys"
        old_key = load_verify_key(signing_key_paths(keys, REPLICA)[1])
        writer = WitnessedWriter(Client(cluster.address(NODE), cluster.keys["writer1"], timeout=10.0), "w1")
        writer.start()
        _until(lambda: len(writer.acknowledged) >= 5, 30, "the first w=1 puts")
        common = ["--config", str(cluster.config_path), "--key", str(keys / "admin.key_secret")]
        rotated = cluster.cli("key", "rotate", REPLICA, "--window", str(WINDOW_SECONDS), "--json", *common)
        result = rotated_payload(rotated.stdout)
        assert result["generation"] == 1, rotated.stdout
        new_key = load_verify_key(signing_key_paths(keys, f"{REPLICA}@1")[1])
        assert result["sign"] == new_key.public_hex != old_key.public_hex
        assert result["curve"] == load_public(keys / f"{REPLICA}.key")  # its CURVE key stays
        # The replica cosigns with the new key from the record on; the home counts it.
        _until(lambda: _cosigned_by(cluster, new_key) > 0, 30, "a cosignature by the replica's new key")
        done = len(writer.acknowledged)
        _until(lambda: len(writer.acknowledged) >= done + 5, 30, "w=1 puts answered on the new key")
        _until(lambda: time.time() * 1000 > result["until"] + 500, WINDOW_SECONDS + 5, "the window's end")
        done = len(writer.acknowledged)
        _until(lambda: len(writer.acknowledged) >= done + 5, 30, "w=1 puts answered after the window")
        writer.stop.set()
        writer.join(15)
        assert not writer.failures, writer.failures  # answered throughout
        # The checkpoint command serves the replica's cosignature by its new key.
        served = cluster.admin().call("checkpoint", {"ledger": LEDGER, "witnesses": 1})
        home_raw = load_verify_key(signing_key_paths(keys, NODE)[1]).raw
        by_new = witness_key(witness_name(CLUSTER, REPLICA), new_key.raw)
        assert check_cosigned(served["checkpoint"], LEDGER, CLUSTER, home_key(CLUSTER, LEDGER, home_raw), by_new)
        # A witness never gets an Ed25519 key it had back, nor a CURVE key another node has (both
        # after the window, each a valid request but for the one change).
        curve, fresh_sign = result["curve"], new_signing_key().public.public_hex
        for change in ({"sign": old_key.public_hex}, {"sign": new_key.public_hex}):
            args = {"node": REPLICA, "curve": curve, "sign": fresh_sign} | change
            _refused(cluster.address(NODE), cluster, args, "bad_request")
        _refused(
            cluster.address(NODE),
            cluster,
            {"node": REPLICA, "curve": cluster.address(NODE).key, "sign": fresh_sign},
            "key_in_use",
        )
        # After the window the old key's cosignature of a later checkpoint never counts: the
        # rotation states what that key had cosigned (16.6), and this checkpoint is larger,
        # whatever time it is stamped with (outsider F3); stamped at ``until`` or later it is
        # also a bad_cosignature alert. The replica stops, its old key cosigns the checkpoint
        # over each next w=1 put.
        assert cluster.stop_node(REPLICA) == 0
        replication = ReplicationLedger(connect(cluster.cluster_redis_url))
        home = load_verify_key(signing_key_paths(keys, NODE)[1]).raw
        checkpoints = CheckpointKeys(CLUSTER, lambda ledger: home_key(CLUSTER, ledger, home))
        old_signing = WitnessSigner(
            witness_name(CLUSTER, REPLICA), load_signing_key(signing_key_paths(keys, REPLICA)[0]).seed
        )

        def put_cosigned_by_old_key(n: int, stamped: int) -> dict[str, Any]:
            height = int(cluster.admin().call("size", {"ledger": LEDGER})["size"])
            e = entry(LEDGER, "vote", {"late": n}, "writer1")
            answer: list[Any] = []
            put = threading.Thread(
                target=lambda: answer.append(_outcome(writer.client, {"content": e.content_bytes, "nonce": e.nonce})),
                daemon=True,
            )
            put.start()

            def covering() -> Any:
                checkpoint = checkpoints.check(LEDGER, replication.checkpoints()[LEDGER])
                return checkpoint if checkpoint.size > height else None

            checkpoint = wait_until(covering, 4, f"a checkpoint over height {height}")
            replication.publish_cosignature(LEDGER, REPLICA, checkpoint.size, old_signing.cosign(checkpoint, stamped))
            put.join(20)
            result: dict[str, Any] = answer[0]
            return result

        in_window = put_cosigned_by_old_key(1, result["until"] // 1000 - 1)
        assert in_window.get("error") == "replication_timeout", in_window  # backdated: not counted either
        # The first whole second at or after ``until``: a time.time() truncated to seconds could
        # still fall before ``until`` when the test runs within a second of the window's end.
        after = put_cosigned_by_old_key(2, -(-result["until"] // 1000))
        assert after.get("error") == "replication_timeout", after  # stamped after: it does not
        bad = wait_until(
            lambda: [a for a in replication.alerts(1000) if a["what"] == "bad_cosignature"],
            30,
            "a bad_cosignature alert",
        )
        assert {a["source"] for a in bad} == {REPLICA} and "out of force" in bad[0]["detail"]
        writer.client.close()


def _outcome(client: Client, args: dict[str, Any]) -> dict[str, Any]:
    """A put with ``w=1``: its result, or ``{"error": code}`` for a refusal."""
    try:
        result: dict[str, Any] = client.call("put", {**args, "w": 1})
    except RemoteError as e:
        return {"error": e.code}
    return result


# --- a replica's CURVE key, with its Ed25519 key ---------------------------------------------------


def test_a_replica_s_curve_key_rotates_under_w1_puts_and_its_old_key_gets_no_handshake_after_the_window(
    redis_server: RedisServer,
) -> None:
    with LocalCluster(
        redis_server.url,
        nodes=1,
        replicas=1,
        rotating=[REPLICA],
        accounts={"writer1": "writer"},
        replication={"write_timeout_ms": 5000},
    ) as cluster:
        cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
        keys = cluster.directory / "keys"
        config = load_cluster(cluster.config_path)
        old_address = cluster.address(REPLICA)
        reader = Client(old_address, cluster.keys["writer1"], timeout=5.0)  # connected before: the old key
        assert reader.call("hello")
        writer = WitnessedWriter(Client(cluster.address(NODE), cluster.keys["writer1"], timeout=10.0), "w1")
        writer.start()
        _until(lambda: len(writer.acknowledged) >= 5, 30, "the first w=1 puts")
        common = ["--config", str(cluster.config_path), "--key", str(keys / "admin.key_secret")]
        rotated = cluster.cli("key", "rotate", REPLICA, "--window", str(WINDOW_SECONDS), "--json", *common)
        result = rotated_payload(rotated.stdout)
        assert result["generation"] == 1, rotated.stdout
        # One record, both keys: the CURVE pair and the Ed25519 key of generation 1.
        assert result["curve"] == load_public(keys / f"{REPLICA}@1.key") != old_address.key
        assert result["sign"] == load_verify_key(signing_key_paths(keys, f"{REPLICA}@1")[1]).public_hex
        new_address = node_address(config, REPLICA)
        assert new_address == NodeAddress(
            old_address.endpoint, result["curve"], (config.node(REPLICA).rotation_endpoint,)
        )
        new_reader = Client(new_address, cluster.keys["writer1"], timeout=5.0)
        # During the window both keys are served (the old on port, the new on rotation_port).
        while time.time() * 1000 < result["until"] - 1000:
            assert reader.call("size", {"ledger": LEDGER})["size"] > 0
            assert new_reader.call("size", {"ledger": LEDGER})["size"] > 0
            assert not writer.failures, writer.failures
            time.sleep(0.2)
        # The replica connects to the home with its new key from the record on.
        _until(
            lambda: "connects to the others with its key generation 1" in cluster.log_text(REPLICA),
            10,
            "the replica's switch to its new client key",
        )
        _until(lambda: time.time() * 1000 > result["until"] + 500, WINDOW_SECONDS + 5, "the window's end")
        done = len(writer.acknowledged)
        _until(lambda: len(writer.acknowledged) >= done + 5, 30, "w=1 puts answered after the window")
        writer.stop.set()
        writer.join(15)
        assert not writer.failures, writer.failures  # answered throughout: no failed request
        # The old server key: refused on a new connection and on the one it had.
        for client in (Client(old_address, cluster.keys["writer1"], timeout=2.0), reader):
            with pytest.raises(NodeUnavailableError):
                client.call("hello")
            client.close()
        main_only = Client(NodeAddress(new_address.endpoint, new_address.key), cluster.keys["writer1"], timeout=5.0)
        assert main_only.call("size", {"ledger": LEDGER})["size"] >= len(writer.acknowledged)
        # The old client key: the home admits the replica's new key only.
        home = config.node(NODE)
        old_client = load_secret(keys / f"{REPLICA}.key_secret")
        new_client = load_secret(keys / f"{REPLICA}@1.key_secret")
        stale = Client(NodeAddress(home.endpoint, cluster.address(NODE).key), old_client, timeout=2.0)
        with stale, pytest.raises(NodeUnavailableError):
            stale.call("hello")
        with Client(NodeAddress(home.endpoint, cluster.address(NODE).key), new_client, timeout=5.0) as fresh:
            assert fresh.call("hello")
        main_only.close()
        new_reader.close()
        writer.client.close()


# --- the home's feed key -----------------------------------------------------------------------------


def test_the_home_s_feed_key_rotates_while_puts_flow_and_every_replica_ends_with_every_record(
    redis_server: RedisServer,
) -> None:
    with LocalCluster(
        redis_server.url, nodes=1, replicas=2, accounts={"writer1": "writer", "sub": "observer"}
    ) as cluster:
        cluster.admin().create_ledger(genesis(LEDGER, ADMIN, ["vote"]))
        keys = cluster.directory / "keys"
        home = load_cluster(cluster.config_path).node(NODE)
        assert home.feed_endpoint is not None and home.feed_rotation_endpoint is not None
        old_key = cluster.address(NODE).key
        writer = Writer(Client(cluster.address(NODE), cluster.keys["writer1"], timeout=5.0), "w")
        writer.start()
        _until(lambda: len(writer.acknowledged) >= 20, 20, "the first puts")
        common = ["--config", str(cluster.config_path), "--key", str(keys / "admin.key_secret")]
        rotated = rotated_payload(
            cluster.cli("key", "rotate", NODE, "--window", str(WINDOW_SECONDS), "--json", *common).stdout
        )
        new_key = rotated["curve"]
        # The writer learns the new request key as the client library does (the feed is what is tested).
        writer.client.node = node_address(load_cluster(cluster.config_path), NODE)
        # During the window: the old key on pub_port, the new one on feed_rotation_port.
        in_window = [
            FeedTap(FeedSource(NODE, home.feed_endpoint, old_key), cluster.keys["sub"]),
            FeedTap(FeedSource(NODE, home.feed_rotation_endpoint, new_key), cluster.keys["sub"]),
        ]
        for tap in in_window:
            tap.wait_beats(1, 10)
            tap.close()
        _until(lambda: time.time() * 1000 > rotated["until"] + 500, WINDOW_SECONDS + 5, "the window's end")
        done = len(writer.acknowledged)
        _until(lambda: len(writer.acknowledged) >= done + 20, 20, "puts after the window")
        # After it: the old key gets nothing on either endpoint, the new one gets the feed on both.
        old_taps = [
            FeedTap(FeedSource(NODE, endpoint, old_key), cluster.keys["sub"])
            for endpoint in (home.feed_endpoint, home.feed_rotation_endpoint)
        ]
        new_tap = FeedTap(FeedSource(NODE, home.feed_endpoint, new_key), cluster.keys["sub"])
        new_tap.wait_beats(2, 10)
        for tap in old_taps:
            tap.read(1.0)
            assert tap.records == [] and tap.beats == [], tap.source
            tap.close()
        new_tap.close()
        writer.stop.set()
        writer.join(10)
        assert not writer.failures, writer.failures
        # Nothing lost across the switch: every replica ends with every record, the home's head.
        config = load_cluster(cluster.config_path)
        inspectors = {
            name: Client(node_address(config, name), cluster.keys[ADMIN], follow=False)
            for name in (NODE, "replica-1", "replica-2")
        }
        size = inspectors[NODE].call("size", {"ledger": LEDGER})["size"]
        assert size > max(writer.acknowledged.values())
        _until(
            lambda: all(
                inspectors[r].call("size", {"ledger": LEDGER})["size"] == size for r in ("replica-1", "replica-2")
            ),
            30,
            "every replica at the home's size",
        )
        head_of = {name: client.call("head", {"ledger": LEDGER})["hash"] for name, client in inspectors.items()}
        assert len(set(head_of.values())) == 1, head_of
        # The replicas followed the feed's new key (their subscriptions were retargeted).
        for replica in ("replica-1", "replica-2"):
            assert "feed subscription now with key" in cluster.log_text(replica), replica
        for client in (writer.client, *inspectors.values()):
            client.close()
