"""A head's freshness as vledger.client judges it when the genesis lists outside witnesses
(PROTOCOL 11.4, 15.4 step 8), over a real gateway (a real store, real HTTP).

Three cluster witnesses and two outside ones the genesis lists (outside quorum 1): 5 trusted,
3 needed. The gateway's checkpoint answers are rewritten where the client reads them, so each
test chooses who cosigned which checkpoint, and when.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vledger.broker.http import HttpThread
from vledger.broker.signing import generate_signing_key, load_signing_key, signing_key_paths, witness_keys
from vledger.client import Client
from vledger.client.http import GatewayConnection
from vledger.config.cluster import ClusterConfig, cluster_from_mapping
from vledger.node.errors import StaleCheckpointError
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry
from vledger.node.store import ChainStore
from vledger.node.witness import HomeSigner, WitnessSigner, home_key, witness_name
from vledger.verifier.gateway import Gateway, build_app

from .test_api import LIMITS, RECORDS, SEED, NoRedis
from .test_api import SIGNED_AT as HEAD

LEDGER = "ow"
BEFORE = 20
REPLICAS = ("replica-1", "replica-2", "replica-3")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("fresh")
    nodes: dict[str, Any] = {"ingest-1": {"role": "ingest", "port": 1, "pub_port": 2}}
    nodes.update({name: {"role": "replica", "port": 10 + i, "gateway_port": 20 + i} for i, name in enumerate(REPLICAS)})
    config = cluster_from_mapping(
        {"cluster": {"name": "t", "data": "data", "keys": "keys", "default_home": "ingest-1"}, "nodes": nodes},
        base / "cluster.toml",
    )
    signers = {}
    for name in REPLICAS:
        generate_signing_key(config.keys_dir, name)
        seed = load_signing_key(signing_key_paths(config.keys_dir, name)[0]).seed
        signers[name] = WitnessSigner(witness_name("t", name), seed)
    for i, name in enumerate(("w1", "w2")):
        signers[name] = WitnessSigner(f"example.org/{name}", bytes([40 + i]) * 32)
    home = HomeSigner("t", SEED)
    pinned = home_key("t", LEDGER, home.key(LEDGER).public_key).encode()
    listed = [signers[name].key.verifier().encode() for name in ("w1", "w2")]
    with ChainStore(config.store_dir("replica-1"), origin="ingest-1") as store:
        rules = LedgerRules(
            kinds=("note",), difficulty=0, rules={"checkpoint_key": pinned, "witnesses": listed, "quorum": 1}
        )
        store.create_ledger(Entry.prepare(rules.genesis_content(LEDGER, "admin", "g", 1), 0, LIMITS))
        for i in range(1, RECORDS):
            store.append(Entry.prepare(Content(LEDGER, "note", {"n": i}, "admin", f"r{i}", 1), 0, LIMITS))
        roots = {size: store.root(LEDGER, size) for size in (HEAD, BEFORE)}
        signed = home.sign(LEDGER, HEAD, roots[HEAD])
        store.checkpoints.keep(LEDGER, "signed", HEAD, signed.root, signed.note)
        genesis = store.get(LEDGER, 0)
        assert genesis is not None
    gateway = Gateway(config, "replica-1", redis_client=NoRedis())
    with HttpThread(build_app(gateway), "127.0.0.1", 0) as server:
        yield {
            "url": f"http://127.0.0.1:{server.port}/",
            "config": config,
            "genesis": genesis.encode(),
            "home": home,
            "roots": roots,
            "signers": signers,
        }
    gateway.close()


def client(served: dict[str, Any]) -> Client:
    config: ClusterConfig = served["config"]
    return Client.http(
        served["url"], genesis={LEDGER: served["genesis"]}, witnesses=list(witness_keys(config).values())
    )


def note(served: dict[str, Any], size: int, ages: dict[str, int]) -> str:
    """The home's checkpoint of ``size`` records, cosigned by each witness ``ages[name]`` s ago."""
    cosigned = served["home"].sign(LEDGER, size, served["roots"][size]).note
    for name, age in ages.items():
        cosigned = served["signers"][name].cosign_again(cosigned, int(time.time()) - age)
    return str(cosigned.decode())


def serve(
    monkeypatch: pytest.MonkeyPatch, latest: Callable[[], str], cosigned: Callable[[int], str] | None = None
) -> list[int]:
    """The gateway's checkpoint answer with the note ``latest()``; asked for one with ``k > 1``
    cosignatures, ``cosigned(k)``'s when given. Returns the ``k`` so asked."""
    honest = GatewayConnection.get_json
    asked: list[int] = []

    def forged(self: GatewayConnection, path: str, query: dict[str, int] | None = None) -> dict[str, Any]:
        if not path.endswith("/checkpoint"):
            return honest(self, path, query)
        wanted = (query or {}).get("witnesses", 0)
        if wanted > 1 and cosigned is not None:  # the head is asked with the outside quorum, 1
            asked.append(wanted)
            return {"note": cosigned(wanted)}
        return {"note": latest()}

    monkeypatch.setattr(GatewayConnection, "get_json", forged)
    return asked


def test_the_genesis_outside_witnesses_count_among_the_trusted(
    served: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outsider o8 J4: a majority of the cluster's witnesses down, a live head cosigned by the
    two still up and by both outside witnesses the genesis lists. The gateway and the pages call
    it fresh (4 of 7 trusted); the client counted its own 3 alone (2 needed, 1 line) and refused
    it: "none did, so the server shows an old view". Over 5 trusted, 3 needed: 3 vouched now."""
    serve(monkeypatch, lambda: note(served, HEAD, {"replica-1": 5, "w1": 5, "w2": 5}))
    with client(served) as reader:
        assert reader.checkpoint(LEDGER).checkpoint.size == HEAD


def test_a_stale_head_says_how_many_of_the_trusted_witnesses_vouched(
    served: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only 2 of the 5 trusted witnesses vouched within the interval (the others 400 s ago):
    stale, and the message says what the client saw, not that the server is lying."""
    old = {"replica-1": 400, "replica-2": 400, "replica-3": 400}
    serve(monkeypatch, lambda: note(served, HEAD, {**old, "w1": 5, "w2": 5}))
    with client(served) as reader, pytest.raises(StaleCheckpointError) as e:
        reader.checkpoint(LEDGER)
    assert e.value.code == "stale_checkpoint"
    assert (
        "only 2 of the 5 trusted witnesses (3 needed) vouched for the checkpoint of 30 records within 310 s "
        "(3 of them last did 40" in e.value.message
    )
    assert e.value.message.endswith("the server shows an old view, or too many witnesses are down (PROTOCOL 11.4)")


def test_a_witness_s_newest_line_counts_on_any_checkpoint_of_the_view(
    served: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A head just signed carries 2 lines (replica-2 and w1, now); the server's largest
    checkpoint with 3 cosignatures is the one before it (replica-1 and replica-3 400 s ago, w2
    now). Each witness's newest line on either is its word on the view (11.4): 3 of 5 vouched
    now. The client judged the older note alone, over its own witnesses: 400 s, stale."""
    asked = serve(
        monkeypatch,
        lambda: note(served, HEAD, {"replica-2": 5, "w1": 5}),
        lambda _: note(served, BEFORE, {"replica-1": 400, "replica-3": 400, "w2": 5}),
    )
    with client(served) as reader:
        assert reader.checkpoint(LEDGER).checkpoint.size == HEAD
    assert asked == [3]
    # With the older note's fresh line gone, 2 of 5 vouched lately: stale, said as such.
    asked = serve(
        monkeypatch,
        lambda: note(served, HEAD, {"replica-2": 5, "w1": 5}),
        lambda _: note(served, BEFORE, {"replica-1": 400, "replica-3": 400, "w2": 400}),
    )
    with client(served) as reader, pytest.raises(StaleCheckpointError, match="only 2 of the 5 trusted witnesses"):
        reader.checkpoint(LEDGER)
