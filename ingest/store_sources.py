"""What ``vledger repair`` and a home's start-up (ingest/home_start.py) share: the other nodes
asked over CURVE with a node's key, the checkpoint keys of a ledger's home, the largest
checkpoint a quorum of witnesses cosigned, and the node whose tree at a size has a root, from
which records are fetched. Nothing here trusts where an answer comes from: a note counts when
a key of the home signed it, a source when its inclusion proof gives the checkpoint's root.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..broker.client import Client, node_address
from ..broker.keys import KeyPair
from ..broker.signing import home_checkpoint_publics, load_verify_key, signing_key_paths
from ..config.cluster import ClusterConfig
from ..config.settings import PROTOCOL_LIMITS
from ..node.cosigning import Counts, GatheredCheckpoint, gather, newest
from ..node.errors import NodeUnavailableError, RepairRefusedError, VledgerError
from ..node.note import Checkpoint, VerifierKey, verify_checkpoint
from ..node.record import Record, decode_record
from ..node.storefile import DB_NAME
from ..node.tree import leaf_hash, root_from_inclusion
from ..node.witness import home_key


def default_quorum(witnesses: int) -> int:
    """A majority of the cluster's witnesses (at least one)."""
    return witnesses // 2 + 1


ANSWER_TIMEOUT = 1.0  # seconds: how long a node may take to answer before it counts as stopped


def listening(endpoint: str, timeout: float = ANSWER_TIMEOUT) -> bool:
    """Whether a TCP connection to ``tcp://host:port`` is accepted: a process still holds the port,
    whatever key it would take (a node may refuse a key the handshake never tells us about)."""
    host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


class Sources:
    """One client per other node of the cluster, opened when first asked. A node that did not
    answer once is not asked again in this run: each ledger (the admin ledger too) would
    otherwise wait the whole timeout on each node that is down, several times over."""

    def __init__(self, config: ClusterConfig, keys: KeyPair, timeout: float) -> None:
        self.config = config
        self.keys = keys
        self.timeout = timeout
        self.deadline: float | None = None  # time.monotonic() past which no call waits (a heal's budget)
        self._clients: dict[str, Client] = {}
        self._down: set[str] = set()
        self.hellos: dict[str, dict[str, Any]] = {}  # what each node :meth:`probe` asked answered

    def client(self, name: str) -> Client:
        client = self._clients.get(name)
        if client is None:
            address = node_address(self.config, name)  # its newest key (PROTOCOL 16.6)
            client = Client(
                address, self.keys, timeout=self.timeout, max_message_bytes=self.config.ingest.max_message_bytes
            )
            self._clients[name] = client
        return client

    def time_left(self, name: str, cmd: str) -> float:
        """How long a call may wait: the timeout, or less as the deadline nears (NodeUnavailableError past it)."""
        if self.deadline is None:
            return self.timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise NodeUnavailableError(f"{name}: {cmd}: not asked, no time is left")
        return min(self.timeout, left)

    def call(self, name: str, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        if name in self._down:
            raise NodeUnavailableError(f"{name} did not answer earlier in this repair")
        client = self.client(name)
        client.set_timeout(self.time_left(name, cmd))
        try:
            result = client.call(cmd, args)
        except NodeUnavailableError:
            self._down.add(name)
            raise
        if not isinstance(result, dict):
            raise RepairRefusedError(f"{name}: {cmd}: the reply is not a map")
        return result

    def probe(self, names: Iterable[str]) -> set[str]:
        """Ask each of ``names`` for its ``hello`` at once, each on a thread of its own, and take
        those that do not answer within the timeout as down for the rest of the run (returned).
        Asked one by one as a check needs them, N nodes down cost N timeouts in a row (``vledger
        verify --cluster`` took 5 s for each); asked together, one. A node that answers with an
        error answers: it is asked again."""
        names = [name for name in dict.fromkeys(names) if name not in self._down]
        if not names:
            return set()
        clients = {name: self.client(name) for name in names}  # made here: each thread uses its own

        def hello(name: str) -> bool:
            client = clients[name]
            try:
                client.set_timeout(self.time_left(name, "hello"))
                answer = client.call("hello", {})
                if isinstance(answer, dict):
                    self.hellos[name] = answer
            except NodeUnavailableError:
                return False
            except VledgerError:
                return True
            return True

        with ThreadPoolExecutor(len(names), thread_name_prefix="probe") as pool:
            answered = dict(zip(names, pool.map(hello, names), strict=True))
        down = {name for name, ok in answered.items() if not ok}
        self._down |= down
        return down

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def stored_ledgers(store: Path) -> set[str]:
    """The ledgers a store's file holds, read without writing to it (the store may be evidence)."""
    path = store / DB_NAME
    if not path.is_file():
        return set()
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return {row[0] for row in db.execute("SELECT DISTINCT ledger FROM records")}
    except sqlite3.Error:
        return set()  # a file too damaged to list: the cluster's list is what counts


def epoch_log_keys(config: ClusterConfig, ledger: str, home: str) -> list[VerifierKey]:
    """The checkpoint keys of ``ledger``'s checkpoints: its home's (log_keys_of) and, for a
    ledger with a standby (10.9), those of the other of the configured home and the standby:
    either may have signed the largest checkpoint a quorum cosigned, and the records fetched
    under it decide which epoch it is (copy_ledger). A key file missing is no key."""
    keys = log_keys_of(config, ledger, home)
    standby = config.standby_of(ledger)
    if standby is not None:
        for other in {config.home_of(ledger).name, standby.name} - {home}:
            with contextlib.suppress(RepairRefusedError):
                keys.extend(log_keys_of(config, ledger, other))
    return keys


def log_key_of(config: ClusterConfig, ledger: str, home: str) -> VerifierKey:
    """The checkpoint key of ``ledger``: its home's key file in the cluster's key directory."""
    path = signing_key_paths(config.keys_dir, home)[1]
    if not path.is_file():
        raise RepairRefusedError(f"ledger {ledger!r}: no {path} to check its home's checkpoints with")
    return home_key(config.name, ledger, load_verify_key(path).raw)


def log_keys_of(config: ClusterConfig, ledger: str, home: str) -> list[VerifierKey]:
    """Every checkpoint key of ``ledger``'s home: its node key's, then each rotated key's (13.8).
    A checkpoint a quorum of witnesses cosigned was the key in force's: they checked that."""
    first = log_key_of(config, ledger, home)
    return [first, *(home_key(config.name, ledger, p) for p in home_checkpoint_publics(config.keys_dir, home)[1:])]


def quorum_checkpoint(
    ledger: str,
    notes: list[bytes],
    log_key: VerifierKey | Sequence[VerifierKey],
    origin: str,
    witnesses: Mapping[str, VerifierKey],
    quorum: int,
    rotated: Sequence[VerifierKey] = (),
    counts: Counts | None = None,
) -> GatheredCheckpoint:
    """The largest checkpoint among ``notes`` with ``quorum`` verified cosignatures (by the
    ``witnesses``' keys, or the ``rotated`` keys in force of those whose key rotated, each line as
    ``counts`` allows: node/cosigning.py), signed
    by ``log_key`` (or one of those keys) (RepairRefusedError if none)."""
    keys = [log_key] if isinstance(log_key, VerifierKey) else list(log_key)
    gathered = [g for key in keys for g in gather(notes, key, origin, (*witnesses.values(), *rotated), counts)]
    gathered.sort(key=lambda g: (g.checkpoint.size, len(g.witnesses)), reverse=True)
    chosen = newest(gathered, quorum)
    if chosen is None:
        best = max(gathered, key=lambda g: len(g.witnesses), default=None)
        seen = (
            "no checkpoint that verifies"
            if best is None
            else f"at most {len(best.witnesses)} ({', '.join(best.witnesses) or 'none'}, size {best.checkpoint.size})"
        )
        raise RepairRefusedError(
            f"ledger {ledger!r}: no checkpoint cosigned by a quorum of {quorum} of the cluster's "
            f"{len(witnesses)} witnesses ({seen}); nothing to rebuild from"
        )
    return chosen


def source_root(sources: Sources, node: str, ledger: str, size: int) -> bytes:
    """``node``'s tree root at ``size``: from its record ``size - 1`` and that record's inclusion proof."""
    last = sources.call(node, "get", {"ledger": ledger, "height": size - 1}).get("record")
    if not isinstance(last, bytes):
        raise RepairRefusedError(f"{node}: get: no record bytes")
    reply = sources.call(node, "proof.inclusion", {"ledger": ledger, "index": size - 1, "size": size})
    proof = reply.get("proof")
    if not isinstance(proof, list):
        raise RepairRefusedError(f"{node}: proof.inclusion: no proof")
    return root_from_inclusion(leaf_hash(last), size - 1, size, proof)


def not_a_source(sources: Sources, node: str, ledger: str, size: int, root: bytes) -> str | None:
    """Why ``node``'s tree at ``size`` is not one of ``root`` (naming it); None when it is."""
    try:
        found = source_root(sources, node, ledger, size)
    except VledgerError as e:
        return f"{node}: {e.code}: {e.message}"
    if found == root:
        return None
    return f"{node}: its tree of size {size} has another root ({found.hex()[:16]}...)"


def choose_source(sources: Sources, candidates: list[str], ledger: str, size: int, root: bytes) -> str:
    """The first of ``candidates`` whose tree at ``size`` has ``root``; RepairRefusedError naming why each failed."""
    reasons = []
    for node in candidates:
        why = not_a_source(sources, node, ledger, size, root)
        if why is None:
            return node
        reasons.append(why)
    raise RepairRefusedError(
        f"ledger {ledger!r}: no source is consistent with the checkpoint of size {size} "
        f"(root {root.hex()[:16]}...): " + ("; ".join(reasons) or "no other node holds it")
    )


def fetch(
    sources: Sources, node: str, ledger: str, size: int, page: int, start: int = 0
) -> Iterator[tuple[bytes, Record]]:
    """Records ``start .. size - 1`` of ``ledger`` from ``node``, by ``range`` pages, each decoded (unverified)."""
    while start < size:
        reply = sources.call(node, "range", {"ledger": ledger, "start": start, "limit": min(page, size - start)})
        records = reply.get("records")
        if not isinstance(records, list) or not records:
            raise RepairRefusedError(f"{node}: range from {start} of {ledger!r} sent no records")
        for data in records:
            if start >= size:
                break
            if not isinstance(data, bytes):
                raise RepairRefusedError(f"{node}: range: a record that is not bytes")
            yield data, decode_record(data, PROTOCOL_LIMITS)
            start += 1


def verified_by_any(note: bytes, keys: Sequence[VerifierKey], origin: str) -> Checkpoint | None:
    """The checkpoint of ``note`` when one of ``keys`` signed it, else None."""
    for key in keys:
        with contextlib.suppress(VledgerError):
            return verify_checkpoint(note, key, origin=origin).checkpoint
    return None
