"""``vledger anchors --config FILE``: the cluster's trust anchors (docs/PROTOCOL.md 15.5), for
its publisher to hand out out of band (a web site of its own, a newspaper, a signed mail).

Every ledger's genesis link is read from a store (``--store DIR``; by default every store of
the configuration's nodes under its data directory, which must agree) and checked as the first
record of its chain; the witness and observer keys, and the admin ledger's checkpoint key,
come from the key directory, as ``vledger receipt keys`` reads them. Nothing is asked of a running node.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
from pathlib import Path

from ..broker.signing import admin_checkpoint_key, witness_keys
from ..config.cluster import ClusterConfig, ReplicationSettings, load_cluster
from ..config.settings import PROTOCOL_LIMITS
from ..node.anchors import Anchors
from ..node.errors import BadGenesisError, UsageError
from ..node.note import VerifierKey
from ..node.record import decode_record
from ..node.storefile import StoreReader
from ..node.verify import ChainVerifier
from ..node.witness import witness_name
from .args import config_file
from .client_output import print_json
from .paths import is_store

EXIT_OK = 0


def _stores(config: ClusterConfig, given: Path | None) -> list[Path]:
    if given is not None:
        if not is_store(given):
            raise UsageError(f"{given}: not a store directory")
        return [given]
    found = [config.store_dir(name) for name in sorted(config.nodes) if is_store(config.store_dir(name))]
    if not found:
        # The operator's machine of a cluster on several hosts holds none (outsider o21 F9).
        raise UsageError(
            f"no store under {config.data_dir}: give --store DIR (run it on a node's host, with --store that"
            " node's store directory, an ingest node's or a replica's that holds every ledger, or a copy of one)"
        )
    return found


def genesis_links(stores: list[Path]) -> dict[str, bytes]:
    """Each ledger's genesis link, its genesis verified as a chain's first record (raises its
    failure). Raises BadGenesisError [bad_genesis] when two stores hold different genesis records."""
    links: dict[str, tuple[bytes, Path]] = {}
    for store in stores:
        with contextlib.closing(StoreReader(store)) as reader:
            for ledger in reader.ledgers():
                data = reader.get(ledger, 0)
                if data is None:
                    continue  # a ledger this store only began to copy: another store anchors it
                record = decode_record(data, PROTOCOL_LIMITS)
                ChainVerifier(ledger, PROTOCOL_LIMITS).check(record)
                known = links.setdefault(ledger, (record.link, store))
                if known[0] != record.link:
                    raise BadGenesisError(
                        f"the genesis of {ledger} differs between {known[1]} and {store}", ledger=ledger, height=0
                    )
    return {ledger: link for ledger, (link, _store) in links.items()}


def cluster_anchors(config: ClusterConfig, store: Path | None = None) -> Anchors:
    witnesses = {key.name: key for key in witness_keys(config).values()}
    observers: dict[str, VerifierKey] = {}
    for node in config.nodes_of("observer"):
        key = witnesses.get(witness_name(config.name, node.name))
        if key is not None:
            observers[node.name] = key
    # The admin home's key proves the node keys' rotations (16.6); a key directory without its
    # file (logged) gives anchors without it, with which a rotated observer stays unproven.
    # The interval readers judge a head's freshness by (11.4), stated only when it is not the
    # default they assume: a cluster's anchors read as before unless it set another.
    interval = config.replication.recosign_interval_ms
    recosign_ms = None if interval == ReplicationSettings().recosign_interval_ms else interval
    links = genesis_links(_stores(config, store))
    return Anchors(links, witnesses, observers, admin_checkpoint_key(config), recosign_ms)


def cmd_anchors(args: argparse.Namespace) -> int:
    anchors = cluster_anchors(load_cluster(config_file(args.config)), args.store)
    if args.json:
        text = anchors.encode()
        # The fingerprint a publisher prints beside the link: the pages show it (PROTOCOL 15.5).
        print_json({"anchors": text, "sha256": hashlib.sha256(text.encode()).hexdigest(), **anchors.to_json()})
    else:
        print(anchors.encode(), end="")
    return EXIT_OK
