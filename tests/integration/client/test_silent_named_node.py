"""A session whose ledger's home or standby is named to it, then never answers: it asks the other
of the two once (PROTOCOL 10.9), over real CURVE sockets on 127.0.0.1.

Before, a not_home that named the configured home (or, after a promotion, the standby) sent
the read there, and its silence failed the command though the other node was up.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from vledger.broker.curve import AllowList, CurveServer, stop_authenticator
from vledger.broker.keys import KeyPair, generate, new_keypair
from vledger.client.session import Session, open_session
from vledger.config.cluster import load_cluster
from vledger.node.errors import NodeUnavailableError

TIMEOUT = 0.5  # seconds: the client's patience with each node
STOP_WAIT = 5.0
LEDGER = "council"
NODES = ("ingest-1", "ingest-2", "ingest-3")  # ingest-1 homes LEDGER, ingest-2 is its standby


@dataclass
class Node:
    """A node that reads every request and answers it as ``behaviour`` says: ``"serve"``
    (``{"node": name}``), ``"silent"`` (never), or ``"not_home <node>"`` naming that node."""

    name: str
    server: CurveServer
    behaviour: str = "serve"
    asked: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    named: dict[str, dict[str, str]] = field(default_factory=dict)

    def run(self) -> None:
        socket = self.server.socket
        while not self.stopping.is_set():
            if not socket.poll(20):
                continue
            identity, data = socket.recv_multipart()
            request = msgpack.unpackb(data)
            self.asked.append(request["cmd"])
            if self.behaviour == "silent":
                continue
            if self.behaviour.startswith("not_home "):
                home = self.named[self.behaviour.split()[1]]
                error = {"code": "not_home", "message": f"{LEDGER} is homed elsewhere", "home": home}
                reply: dict[str, Any] = {"id": request["id"], "ok": False, "error": error}
            else:
                reply = {"id": request["id"], "ok": True, "result": {"node": self.name}}
            socket.send_multipart([identity, msgpack.packb(reply)])


@dataclass
class Cluster:
    nodes: dict[str, Node]
    config_path: Path
    caller: KeyPair

    def session(self, node: str | None = None) -> Session:
        return open_session(load_cluster(self.config_path), self.caller, node, timeout=TIMEOUT)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    ctx: zmq.Context[Any] = zmq.Context()
    caller = new_keypair()
    keys_dir = tmp_path / "keys"
    nodes: dict[str, Node] = {}
    publics: dict[str, str] = {}
    threads = []
    allowed = AllowList([caller.public])  # one allow-list per ZAP domain of a context
    for name in NODES:
        pair = generate(keys_dir, name)
        publics[name] = pair.public
        server = CurveServer(pair, "tcp://127.0.0.1:*", allowed, ctx=ctx)
        nodes[name] = Node(name, server)
    ports = {name: int(node.server.connect_endpoint.rsplit(":", 1)[1]) for name, node in nodes.items()}
    named = {
        name: {"node": name, "endpoint": node.server.connect_endpoint, "key": publics[name]}
        for name, node in nodes.items()
    }
    for node in nodes.values():
        node.named = named
        thread = threading.Thread(target=node.run, daemon=True)
        thread.start()
        threads.append(thread)
    config = tmp_path / "cluster.toml"
    config.write_text(
        '[cluster]\nkeys = "keys"\ndata = "data"\ndefault_home = "ingest-3"\n'
        + "".join(
            f'[nodes.{name}]\nrole = "ingest"\nport = {ports[name]}\npub_port = {10 + i}\n'  # no feed is read
            for i, name in enumerate(NODES)
        )
        + '[nodes.replica-1]\nrole = "replica"\nport = 20\n'  # a standby's epoch needs a witness (10.9)
        + f'[ledgers.{LEDGER}]\nhome = "ingest-1"\nstandby = "ingest-2"\n'
    )
    try:
        yield Cluster(nodes, config, caller)
    finally:
        for node in nodes.values():
            node.stopping.set()
        for thread in threads:
            thread.join(STOP_WAIT)
        for node in nodes.values():
            node.server.close()
        stop_authenticator(ctx)
        ctx.destroy(linger=0)


def test_a_not_home_naming_the_silent_home_sends_the_read_to_the_standby(cluster: Cluster) -> None:
    nodes = cluster.nodes
    nodes["ingest-3"].behaviour = "not_home ingest-1"  # the session's node: the configured home is ingest-1
    nodes["ingest-1"].behaviour = "silent"
    session = cluster.session()
    try:
        assert session.call("size", {"ledger": LEDGER}, node=None) == {"node": "ingest-2"}
        assert nodes["ingest-1"].asked == ["size"]  # one timeout, then the standby
        assert session.call("head", {"ledger": LEDGER}, node=session.ledger_node(LEDGER)) == {"node": "ingest-2"}
        assert nodes["ingest-1"].asked == ["size"]  # the silent home is not asked again
    finally:
        session.close()


def test_a_not_home_naming_the_standby_that_then_goes_silent_sends_the_read_to_the_home(cluster: Cluster) -> None:
    nodes = cluster.nodes
    nodes["ingest-3"].behaviour = "not_home ingest-2"  # says the standby was promoted
    nodes["ingest-2"].behaviour = "silent"
    session = cluster.session()
    try:
        assert session.call("size", {"ledger": LEDGER}) == {"node": "ingest-1"}
        assert nodes["ingest-2"].asked == ["size"]
        assert session.ledger_node(LEDGER) == session.home_node(LEDGER)  # the move it named is forgotten
    finally:
        session.close()


def test_a_standby_kept_from_a_not_home_that_goes_silent_later_sends_the_read_to_the_home(cluster: Cluster) -> None:
    nodes = cluster.nodes
    nodes["ingest-1"].behaviour = "not_home ingest-2"  # the old home, up, names its promoted standby
    session = cluster.session()
    try:
        assert session.call("size", {"ledger": LEDGER}, node=session.ledger_node(LEDGER)) == {"node": "ingest-2"}
        nodes["ingest-2"].behaviour = "silent"  # the new home, kept for the session, goes silent
        nodes["ingest-1"].behaviour = "serve"  # and the old one is home again (handed back)
        assert session.call("size", {"ledger": LEDGER}, node=session.ledger_node(LEDGER)) == {"node": "ingest-1"}
        assert nodes["ingest-2"].asked == ["size", "size"]
    finally:
        session.close()


def test_both_silent_fails_after_one_try_of_each(cluster: Cluster) -> None:
    nodes = cluster.nodes
    nodes["ingest-3"].behaviour = "not_home ingest-1"
    nodes["ingest-1"].behaviour = nodes["ingest-2"].behaviour = "silent"
    session = cluster.session()
    try:
        with pytest.raises(NodeUnavailableError):
            session.call("size", {"ledger": LEDGER})
        assert (nodes["ingest-1"].asked, nodes["ingest-2"].asked) == (["size"], ["size"])
    finally:
        session.close()
