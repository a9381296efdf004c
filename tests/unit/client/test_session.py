"""client/session.py: Reader.proven_voter_check against a node that serves another chain, and a
Session whose ledger home is gone (its standby answers).

A voter asks one node for the election. The node may lie: here it serves a forked tail (each
record valid on its own and linked to the one before, as anyone can make them) under the
home's honest signed checkpoint. The voter's records then are not found in what it serves,
and "no records" must not be the answer: the tree of what it served is not the checkpoint's.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vledger.broker.keys import generate
from vledger.client.home_cache import SILENT_SECONDS, HomeCache, cache_path
from vledger.client.session import Reader, Session, new_request_id, node_address, now_ms
from vledger.client.write import Write
from vledger.config.cluster import ClusterConfig, load_cluster
from vledger.config.settings import PROTOCOL_LIMITS
from vledger.node.epoch import EPOCH_KIND, epoch_payload
from vledger.node.errors import BadGenesisError, FencedError, NodeUnavailableError, ProofError, RemoteError
from vledger.node.ledger import LedgerRules
from vledger.node.note import ALG_COSIGNATURE_V1, SignerKey, VerifiedCheckpoint, verify_checkpoint
from vledger.node.record import REQUEST_ID_PATTERN, Content, Entry
from vledger.node.rules.votes import electronic_id
from vledger.node.store import ChainStore
from vledger.node.witness import HomeSigner, home_key

LEDGER = "council"
ELECTION = {"type": "election", "choices": ["alice", "bob"], "opens": 0, "closes": 2**62}
KINDS = ("cast", "register", "uncast", "withdraw")
SIZE = 6  # the genesis and five registrations


class Served:
    """A node's answers to range, get and proof.inclusion, from one store."""

    def __init__(self, store: ChainStore) -> None:
        self.store = store

    def call(self, cmd: str, args: dict[str, Any] | None = None, *, node: object = None) -> Any:
        args = args or {}
        if cmd == "range":
            records = [data for _, data in self.store.range_raw(LEDGER, args["start"])]
            return {"records": records, "next": None}
        if cmd == "get":
            record = self.store.get(LEDGER, args["height"])
            assert record is not None
            return {"record": record.encode()}
        if cmd == "proof.inclusion":
            return {"proof": self.store.inclusion_proof(LEDGER, args["index"], args["size"])}
        raise AssertionError(f"not asked here: {cmd}")

    def close(self) -> None:
        return None


def _chain(path: Path, voters: list[str]) -> ChainStore:
    store = ChainStore(path, origin="ingest-1")
    genesis = LedgerRules(kinds=KINDS, difficulty=0, rules=ELECTION).genesis_content(LEDGER, "admin", "g", 1)
    store.create_ledger(Entry.prepare(genesis, 0, PROTOCOL_LIMITS))
    for i, voter in enumerate(voters):
        content = Content(LEDGER, "register", {"voter_id": voter}, "admin", f"r{i}", 2)
        store.append(Entry.prepare(content, 0, PROTOCOL_LIMITS))
    return store


def _signed(store: ChainStore) -> VerifiedCheckpoint:
    home = HomeSigner("t", bytes(range(32)))
    signed = home.sign(LEDGER, SIZE, store.root(LEDGER, SIZE))
    return verify_checkpoint(signed.note, home_key("t", LEDGER, home.key(LEDGER).public_key))


def _last_voter(store: ChainStore) -> str:
    """The electronic id of the voter registered last (height 5), whose vote check is tried."""
    mine = store.get(LEDGER, 5)
    assert mine is not None
    return electronic_id(mine)


@pytest.fixture
def honest(tmp_path: Path) -> Iterator[ChainStore]:
    store = _chain(tmp_path / "honest", ["V-1", "V-2", "V-3", "V-4", "V-5"])
    yield store
    store.close()


@pytest.fixture
def forked(tmp_path: Path) -> Iterator[ChainStore]:
    """A chain the same as ``honest``'s up to height 3, then another (valid record by record)."""
    store = _chain(tmp_path / "forked", ["V-1", "V-2", "V-3", "V-4x", "V-5x"])
    yield store
    store.close()


def test_a_forked_tail_under_the_honest_checkpoint_is_refused_not_reported_as_no_records(
    honest: ChainStore, forked: ChainStore
) -> None:
    proven, eid = _signed(honest), _last_voter(honest)
    found = Reader(Served(honest)).proven_voter_check(LEDGER, eid, proven)
    assert [item.record.height for item in found.records] == [5]
    with pytest.raises(ProofError, match="not the tree of 6 records"):
        Reader(Served(forked)).proven_voter_check(LEDGER, eid, proven)


def test_full_check_refuses_a_forked_chain_the_signed_checkpoint_does_not_make(
    honest: ChainStore, forked: ChainStore
) -> None:
    # --full verifies every record as the chain's next: a forked chain passes that (anyone can
    # compute checksums, work and links), so it must also be the signed checkpoint's tree.
    proven, eid = _signed(honest), _last_voter(honest)
    found = Reader(Served(honest)).full_voter_check(LEDGER, eid, proven)
    assert [item.record.height for item in found.records] == [5]
    assert Reader(Served(forked)).full_voter_check(LEDGER, eid, None).records == ()  # the chain alone
    with pytest.raises(ProofError, match="not the tree of 6 records"):
        Reader(Served(forked)).full_voter_check(LEDGER, eid, proven)


def test_a_range_below_the_signed_checkpoint_is_proven_run_by_run(honest: ChainStore, forked: ChainStore) -> None:
    # `vledger range --node NAME` printed a lying node's forked tail: each record checked only as
    # the next of the chain that node served. Below the checkpoint, each run is proven in it.
    proven = _signed(honest)
    assert [r.height for r in Reader(Served(honest)).proven_records(LEDGER, 2, proven)] == [2, 3, 4, 5]
    assert [r.height for r in Reader(Served(forked)).proven_records(LEDGER, 2, None)] == [2, 3, 4, 5]
    shown: list[int] = []
    with pytest.raises(ProofError):
        shown.extend(r.height for r in Reader(Served(forked)).proven_records(LEDGER, 2, proven))
    assert shown == []  # nothing of the run was yielded before its proof failed


# --- Session: a home gone, replaced by its standby (PROTOCOL 10.9) ----------------------------


def _answered(served: Served, cmd: str, args: dict[str, Any] | None, node: Any) -> Any:
    """What a node that answers says: ``whoami`` as the admin, a ``put`` appended to ``served``'s
    store, anything else as ``served`` answers it."""
    if cmd == "whoami":
        return {"account": "admin", "role": "admin", "key": "k"}
    if cmd == "put":
        entry = Entry.from_wire(args["content"] if args else b"", args["nonce"] if args else 0, PROTOCOL_LIMITS)
        placed = served.store.append(entry)
        return {"ledger": placed.ledger, "height": placed.height, "hash": placed.hash, "checksum": entry.checksum}
    return served.call(cmd, args, node=node)


class HomeGone:
    """The cluster with its configured home silent: the standby (a Served store) answers for it,
    and every request is logged with the node it was sent to."""

    def __init__(self, store: ChainStore, home: object) -> None:
        self.standby = Served(store)
        self.home = home
        self.sent: list[tuple[str, object]] = []

    def call(self, cmd: str, args: dict[str, Any] | None = None, *, node: object = None) -> Any:
        self.sent.append((cmd, node))
        if node == self.home:
            raise NodeUnavailableError("no answer within 1 s")
        return _answered(self.standby, cmd, args, node)

    def close(self) -> None:
        return None


@pytest.fixture
def standby_session(tmp_path: Path, honest: ChainStore) -> Iterator[tuple[Session, HomeGone]]:
    """A session of the node ``ingest-2``, the standby of LEDGER, whose home ``ingest-1`` is gone."""
    (tmp_path / "cluster.toml").write_text(
        '[cluster]\nkeys = "keys"\ndata = "data"\ndefault_home = "ingest-1"\n'
        '[nodes.ingest-1]\nrole = "ingest"\nport = 7390\npub_port = 7392\n'
        '[nodes.ingest-2]\nrole = "ingest"\nport = 7391\npub_port = 7393\n'
        '[nodes.replica-1]\nrole = "replica"\nport = 7396\n'  # a standby's epoch needs a witness (10.9)
        f'[ledgers.{LEDGER}]\nhome = "ingest-1"\nstandby = "ingest-2"\n'
    )
    generate(tmp_path / "keys", "ingest-1")  # the home's public key, for its address
    config = load_cluster(tmp_path / "cluster.toml")
    cluster = HomeGone(honest, node_address(config, "ingest-1"))
    yield Session(config, config.node("ingest-2"), cluster), cluster


def test_a_write_whose_home_does_not_answer_reads_the_genesis_of_the_standby_and_goes_there(
    standby_session: tuple[Session, HomeGone],
) -> None:
    """The genesis (the rules a write is built by) is read from the standby too: before, the
    home's silence failed every write before the standby was tried (`vledger vote register`
    after a promotion exited `unavailable`, README's "sends a write ... to the standby")."""
    session, cluster = standby_session
    receipt = session.put(LEDGER, Write("register", {"voter_id": "V-7"}))
    assert receipt["height"] == SIZE
    assert [cmd for cmd, node in cluster.sent if node == cluster.home] == ["get"]  # asked once, then skipped
    assert ("put", None) in cluster.sent


def test_a_session_given_a_node_never_turns_to_the_standby(standby_session: tuple[Session, HomeGone]) -> None:
    session, cluster = standby_session
    session.pinned = True
    session.client = HomeGone(cluster.standby.store, None)  # --node: the given node is the silent one
    with pytest.raises(NodeUnavailableError):
        session.put(LEDGER, Write("register", {"voter_id": "V-7"}))


def test_a_read_whose_home_does_not_answer_goes_to_the_standby(standby_session: tuple[Session, HomeGone]) -> None:
    """After a promotion with the old home down, `vledger size` and `get` read the ledger from
    its standby (the new home) instead of failing `unavailable` at the configured home."""
    session, cluster = standby_session
    assert [r.height for r in session.records(LEDGER)] == list(range(SIZE))
    assert session.record(LEDGER, SIZE - 1).height == SIZE - 1
    assert [cmd for cmd, node in cluster.sent if node == cluster.home] == ["range"]  # asked once, then skipped


def test_a_vote_check_under_a_replaced_home_s_checkpoint_past_the_handover_is_fenced(tmp_path: Path) -> None:
    """PROTOCOL 10.9: the records read up to a checkpoint hold its ledger's epochs. Epoch 2's
    checkpoint (the standby's key and line) proves them; the old home's of the same tree, past
    the handover record, is a fenced home's and proves nothing."""
    home, standby = HomeSigner("t", bytes(range(32))), HomeSigner("t", bytes(range(1, 33)))
    home_vkey = home_key("t", LEDGER, home.key(LEDGER).public_key)
    standby_vkey = home_key("t", LEDGER, standby.key(LEDGER).public_key)
    rules = {**ELECTION, "checkpoint_key": home_vkey.encode(), "standby_key": standby_vkey.encode()}
    with ChainStore(tmp_path / "handed", origin="ingest-1") as store:
        genesis = LedgerRules(kinds=(EPOCH_KIND, *KINDS), difficulty=0, rules=rules).genesis_content(
            LEDGER, "a", "g", 1
        )
        store.create_ledger(Entry.prepare(genesis, 0, PROTOCOL_LIMITS))
        store.append(Entry.prepare(Content(LEDGER, "register", {"voter_id": "V-1"}, "a", "r1", 2), 0, PROTOCOL_LIMITS))
        head = store.head(LEDGER)
        assert head is not None
        handover = Content(LEDGER, EPOCH_KIND, epoch_payload(2, "ingest-2", standby_vkey), "a", "epoch-2", 3)
        store.append_record(Entry.prepare(handover, 0, PROTOCOL_LIMITS).place(2, head.link, 3, "ingest-2"))
        size, root = 3, store.root(LEDGER, 3)
        mine = store.get(LEDGER, 1)
        assert mine is not None
        eid = electronic_id(mine)
        epoch_2 = verify_checkpoint(standby.sign(LEDGER, size, root, ("vledger-epoch 2 ingest-2",)).note, standby_vkey)
        found = Reader(Served(store)).proven_voter_check(LEDGER, eid, epoch_2)
        assert [item.record.height for item in found.records] == [1]
        fenced = verify_checkpoint(home.sign(LEDGER, size, root).note, home_vkey)
        with pytest.raises(FencedError):
            Reader(Served(store)).proven_voter_check(LEDGER, eid, fenced)
        with pytest.raises(FencedError):
            Reader(Served(store)).full_voter_check(LEDGER, eid, fenced)


# --- the default request id -------------------------------------------------------------------


def test_default_request_ids_sort_by_time_and_stay_unguessable() -> None:
    # Time first: an author's ids sort as they were made, so the store's (ledger, author,
    # request_id) index takes each put on the last page of the author's range.
    times = iter(range(1_764_000_000_000, 1_764_000_000_000 + 5_000 * 7, 7))
    made = [new_request_id(lambda: next(times)) for _ in range(5_000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    for request_id in made:
        assert len(request_id) == 32 <= PROTOCOL_LIMITS.max_request_id_length
        assert REQUEST_ID_PATTERN.fullmatch(request_id) and request_id == request_id.lower()
    assert made[0][:12] == f"{1_764_000_000_000:012x}"
    # Within one millisecond the 80 random bits differ: two writers' ids never meet.
    same_ms = {new_request_id(lambda: 1_764_000_000_000) for _ in range(5_000)}
    assert len(same_ms) == 5_000 and {i[:12] for i in same_ms} == {f"{1_764_000_000_000:012x}"}
    tails = [int(i[12:], 16) for i in same_ms]
    assert max(tails) - min(tails) > 2**70  # spread over the 80 bits, not a counter
    # The real clock: ids made later never sort before earlier ones (to the millisecond).
    first, second = new_request_id(), new_request_id()
    assert first[:12] <= second[:12]
    assert abs(int(first[:12], 16) - now_ms()) < 60_000


# --- Session: a replaced home that answers not_home (PROTOCOL 10.9) ----------------------------


class Replaced:
    """The cluster after a promotion, with the old home ``ingest-1`` up: it answers every request
    not_home naming ``named`` (at ``endpoint``: a lying node may state any); any other node
    serves the new home's store. Every request is logged with the endpoint it was sent to."""

    def __init__(self, store: ChainStore, home: str, named: str, endpoint: str, own: str = "") -> None:
        self.served = Served(store)
        self.home = home
        self.own = own  # the endpoint of the session's node (asked as node=None)
        self.named = {"node": named, "endpoint": endpoint, "key": "k" * 40}
        self.sent: list[tuple[str, str]] = []

    def call(self, cmd: str, args: dict[str, Any] | None = None, *, node: Any = None) -> Any:
        endpoint = self.own if node is None else node.endpoint
        self.sent.append((cmd, endpoint))
        if endpoint == self.home:
            raise RemoteError("not_home", "ledger 'council' is read on node 'ingest-2'", {"home": self.named})
        return self.served.call(cmd, args, node=node)

    def close(self) -> None:
        return None

    def asked(self, endpoint: str) -> list[str]:
        return [cmd for cmd, sent_to in self.sent if sent_to == endpoint]


@pytest.fixture
def three_nodes(tmp_path: Path) -> ClusterConfig:
    """ingest-1 homes LEDGER, ingest-2 is its standby, ingest-3 is neither (the session's node)."""
    (tmp_path / "cluster.toml").write_text(
        '[cluster]\nkeys = "keys"\ndata = "data"\ndefault_home = "ingest-3"\n'
        '[nodes.ingest-1]\nrole = "ingest"\nport = 7390\npub_port = 7392\n'
        '[nodes.ingest-2]\nrole = "ingest"\nport = 7391\npub_port = 7393\n'
        '[nodes.ingest-3]\nrole = "ingest"\nport = 7394\npub_port = 7395\n'
        '[nodes.replica-1]\nrole = "replica"\nport = 7396\n'  # a standby's epoch needs a witness (10.9)
        f'[ledgers.{LEDGER}]\nhome = "ingest-1"\nstandby = "ingest-2"\n'
    )
    for name in ("ingest-1", "ingest-2", "ingest-3"):
        generate(tmp_path / "keys", name)
    return load_cluster(tmp_path / "cluster.toml")


def test_a_session_keeps_the_standby_a_replaced_home_names(three_nodes: ClusterConfig, honest: ChainStore) -> None:
    """While the old home is up, each read of the ledger cost a not_home round trip to it; the
    session now asks it once and then the new home, at the address the configuration gives
    (the endpoint the answer states is not used), for reads and writes alike."""
    config = three_nodes
    home, standby = config.node("ingest-1").endpoint, config.node("ingest-2").endpoint
    cluster = Replaced(honest, home, "ingest-2", "tcp://203.0.113.9:7391")
    session = Session(config, config.node("ingest-3"), cluster)
    assert [r.height for r in session.records(LEDGER)] == list(range(SIZE))
    assert session.record(LEDGER, 3).height == 3
    assert session.record(LEDGER, 4).height == 4
    assert cluster.asked(home) == ["range"]  # once, then skipped
    assert cluster.asked(standby) == ["range", "get", "get", "get"]  # the genesis' rules: one get
    assert cluster.asked("tcp://203.0.113.9:7391") == []
    assert session.ledger_node(LEDGER) == node_address(config, "ingest-2")


def test_a_not_home_naming_a_node_that_cannot_be_the_home_is_followed_once_never_kept(
    three_nodes: ClusterConfig, honest: ChainStore
) -> None:
    """A lying (or confused) node names ingest-3, neither the ledger's home nor its standby:
    each request is sent there once, as PROTOCOL 6.1 says, but the session keeps asking the
    configured home: no reply moves the session's later requests anywhere it likes."""
    config = three_nodes
    home = config.node("ingest-1").endpoint
    cluster = Replaced(honest, home, "ingest-3", "tcp://203.0.113.9:7394")
    session = Session(config, config.node("ingest-2"), cluster)
    assert session.record(LEDGER, 3).height == 3
    assert session.record(LEDGER, 4).height == 4
    assert cluster.asked(home) == ["get", "get", "get"]  # the genesis, 3 and 4: each asked there first
    assert cluster.asked("tcp://203.0.113.9:7394") == ["get", "get", "get"]
    assert session.ledger_node(LEDGER) == node_address(config, "ingest-1")


def test_a_pinned_session_keeps_its_node(three_nodes: ClusterConfig, honest: ChainStore) -> None:
    """--node names the node every request goes to: its not_home is followed each time, not kept."""
    config = three_nodes
    home, standby = config.node("ingest-1").endpoint, config.node("ingest-2").endpoint
    cluster = Replaced(honest, home, "ingest-2", standby, own=home)
    session = Session(config, config.node("ingest-1"), cluster, pinned=True)
    assert session.record(LEDGER, 3).height == 3
    assert session.record(LEDGER, 4).height == 4
    assert cluster.asked(home) == ["get", "get", "get"]
    assert session.ledger_node(LEDGER) is None


def test_a_session_keeps_the_home_of_a_handover_it_read_proven(tmp_path: Path) -> None:
    """A cluster file that names no standby (changed since the promotion): a not_home naming
    ingest-2 is followed once each time, until the session has read, proven in a verified
    checkpoint, the handover record that made ingest-2 the home; then it is kept."""
    (tmp_path / "cluster.toml").write_text(
        '[cluster]\nkeys = "keys"\ndata = "data"\ndefault_home = "ingest-3"\n'
        '[nodes.ingest-1]\nrole = "ingest"\nport = 7390\npub_port = 7392\n'
        '[nodes.ingest-2]\nrole = "ingest"\nport = 7391\npub_port = 7393\n'
        '[nodes.ingest-3]\nrole = "ingest"\nport = 7394\npub_port = 7395\n'
        f'[ledgers.{LEDGER}]\nhome = "ingest-1"\n'
    )
    for name in ("ingest-1", "ingest-2", "ingest-3"):
        generate(tmp_path / "keys", name)
    config = load_cluster(tmp_path / "cluster.toml")
    standby = HomeSigner("t", bytes(range(1, 33)))
    standby_vkey = home_key("t", LEDGER, standby.key(LEDGER).public_key)
    home_vkey = home_key("t", LEDGER, HomeSigner("t", bytes(range(32))).key(LEDGER).public_key)
    rules = {**ELECTION, "checkpoint_key": home_vkey.encode(), "standby_key": standby_vkey.encode()}
    with ChainStore(tmp_path / "handed", origin="ingest-1") as store:
        genesis = LedgerRules(kinds=(EPOCH_KIND, *KINDS), difficulty=0, rules=rules).genesis_content(
            LEDGER, "a", "g", 1
        )
        store.create_ledger(Entry.prepare(genesis, 0, PROTOCOL_LIMITS))
        store.append(Entry.prepare(Content(LEDGER, "register", {"voter_id": "V-1"}, "a", "r1", 2), 0, PROTOCOL_LIMITS))
        head = store.head(LEDGER)
        assert head is not None
        handover = Content(LEDGER, EPOCH_KIND, epoch_payload(2, "ingest-2", standby_vkey), "a", "epoch-2", 3)
        store.append_record(Entry.prepare(handover, 0, PROTOCOL_LIMITS).place(2, head.link, 3, "ingest-2"))
        epoch_2 = verify_checkpoint(
            standby.sign(LEDGER, 3, store.root(LEDGER, 3), ("vledger-epoch 2 ingest-2",)).note, standby_vkey
        )
        cluster = Replaced(store, config.node("ingest-1").endpoint, "ingest-2", config.node("ingest-2").endpoint)
        session = Session(config, config.node("ingest-3"), cluster)
        assert session.record(LEDGER, 1).height == 1
        assert session.ledger_node(LEDGER) == node_address(config, "ingest-1")  # followed, not kept
        epochs = session.epochs_under(LEDGER, epoch_2)
        assert epochs is not None and epochs.current.home == "ingest-2"
        assert session.record(LEDGER, 2).height == 2
        assert session.ledger_node(LEDGER) == node_address(config, "ingest-2")
        asked = len(cluster.asked(config.node("ingest-1").endpoint))
        assert session.record(LEDGER, 1).height == 1
        assert len(cluster.asked(config.node("ingest-1").endpoint)) == asked  # the old home is skipped


# --- Session: a write while the standby is being promoted (PROTOCOL 10.9) ----------------------


class Promoting:
    """The home ``ingest-1`` frozen (every request to it goes unanswered), its standby
    ``ingest-2`` not yet promoted: it answers a write not_home naming ingest-1 until it has
    refused ``refusals`` of them, then serves it from ``store`` (the promoted standby's copy,
    duplicate when it holds the request id). Every request is logged with the endpoint it was
    sent to, and every pause the session takes with the (fake) time it was taken at."""

    def __init__(self, store: ChainStore, config: ClusterConfig, refusals: int, named: str = "") -> None:
        self.served = Served(store)
        self.home = config.node("ingest-1").endpoint
        self.standby = config.node("ingest-2").endpoint
        self.silent = {self.home, named}  # named: another node the standby names, as silent
        self.named = {"node": "ingest-3" if named else "ingest-1", "endpoint": named or self.home, "key": "k" * 40}
        self.refusals = refusals
        self.now = 0.0
        self.sent: list[tuple[str, str]] = []
        self.pauses: list[float] = []

    def call(self, cmd: str, args: dict[str, Any] | None = None, *, node: Any = None) -> Any:
        endpoint = "own" if node is None else node.endpoint
        self.sent.append((cmd, endpoint))
        if endpoint in self.silent:
            self.now += 1.0  # the session's timeout, waited out
            raise NodeUnavailableError(f"{endpoint}: no answer within 1 s")
        if cmd == "whoami":
            return {"account": "admin", "role": "admin", "key": "k"}
        if cmd == "put":
            if self.refusals > 0:
                self.refusals -= 1
                raise RemoteError("not_home", f"ledger {LEDGER!r} is written on node 'ingest-1'", {"home": self.named})
            entry = Entry.from_wire(args["content"] if args else b"", args["nonce"] if args else 0, PROTOCOL_LIMITS)
            placed = self.served.store.append(entry)
            return {
                "ledger": placed.ledger,
                "height": placed.height,
                "hash": placed.hash,
                "checksum": entry.checksum,
                "duplicate": placed.duplicate,
            }
        return self.served.call(cmd, args, node=node)

    def close(self) -> None:
        return None

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now

    def asked(self, endpoint: str, cmd: str = "put") -> list[int]:
        """The positions of the ``cmd`` requests sent to ``endpoint``, among every ``cmd``."""
        sent = [to for what, to in self.sent if what == cmd]
        return [i for i, to in enumerate(sent) if to == endpoint]


def _promoting_session(config: ClusterConfig, cluster: Promoting, wait: float = 60.0) -> Session:
    return Session(
        config, config.node("ingest-3"), cluster, handover_wait=wait, sleep=cluster.sleep, monotonic=cluster.clock
    )


def test_a_write_the_standby_refuses_before_its_promotion_waits_for_it_not_for_the_silent_home(
    three_nodes: ClusterConfig, honest: ChainStore
) -> None:
    """The outsider's drill: the home frozen, a write sent there goes unanswered, the standby
    (not promoted yet) answers not_home naming that same home. The session went straight back
    to it and failed after a second timeout; the write now waits, asking the standby and the
    home again, pausing longer each round, until the promoted standby serves it."""
    config = three_nodes
    cluster = Promoting(honest, config, refusals=3)
    session = _promoting_session(config, cluster)
    receipt = session.put(LEDGER, Write("register", {"voter_id": "V-7"}), request_id="drill-64", ts=64)
    assert (receipt["height"], receipt["duplicate"]) == (SIZE, False)
    # The genesis read found the home silent: the write goes to the standby, which refuses it,
    # then rounds of [pause, standby, home] until the standby serves it.
    assert next(cmd for cmd, to in cluster.sent if to == cluster.home) == "get"
    assert cluster.asked(cluster.standby) == [0, 1, 3, 5]
    assert cluster.asked(cluster.home) == [2, 4]  # never twice without a pause and the standby between
    assert cluster.pauses == sorted(cluster.pauses) and len(cluster.pauses) == 3 and cluster.pauses[0] < 1


def test_a_write_the_silent_home_placed_is_answered_duplicate_by_the_promoted_standby(
    three_nodes: ClusterConfig, honest: ChainStore
) -> None:
    """The write the home placed (and the handover kept) before it went silent: asked again
    with the same request id, the promoted standby answers it duplicate with its receipt."""
    config = three_nodes
    write = Write("register", {"voter_id": "V-8"})
    first = _promoting_session(config, Promoting(honest, config, refusals=0))
    placed = first.put(LEDGER, write, request_id="drill-64", ts=64)
    cluster = Promoting(honest, config, refusals=2)
    receipt = _promoting_session(config, cluster).put(LEDGER, write, request_id="drill-64", ts=64)
    assert (receipt["height"], receipt["hash"], receipt["duplicate"]) == (placed["height"], placed["hash"], True)
    assert honest.size(LEDGER) == SIZE + 1  # written once


def test_a_write_waits_for_a_promotion_no_longer_than_its_deadline(
    three_nodes: ClusterConfig, honest: ChainStore
) -> None:
    """No promotion comes: the write fails unavailable once the wait is over (not at once, not
    never), saying the standby still names the silent home, with the note to retry it."""
    config = three_nodes
    cluster = Promoting(honest, config, refusals=10_000)
    session = _promoting_session(config, cluster, wait=30.0)
    with pytest.raises(NodeUnavailableError) as raised:
        session.put(LEDGER, Write("register", {"voter_id": "V-9"}), request_id="drill-65", ts=65)
    assert "still names" in raised.value.message and "ingest-1" in raised.value.message
    assert any("--request-id drill-65" in note for note in raised.value.__notes__)
    # The first refusal came at 2 s (the home's timeout, then the genesis read); the wait ends
    # 30 s later, less one home timeout at most (asked after the last pause).
    assert 30.0 <= cluster.now <= 2.0 + 30.0 + 1.0
    assert sum(cluster.pauses) <= 30.0 and max(cluster.pauses) <= 4.0
    assert honest.size(LEDGER) == SIZE  # nothing written


def test_a_write_whose_standby_names_a_home_that_answers_goes_there_at_once(
    three_nodes: ClusterConfig, honest: ChainStore
) -> None:
    """The wait is only for a home that did not answer: a replaced home that answers not_home
    naming the new home is followed at once, as before (no pause)."""
    config = three_nodes
    promoted = Promoting(honest, config, refusals=0)
    cluster = Replaced(honest, promoted.home, "ingest-2", promoted.standby)
    cluster.served = promoted  # type: ignore[assignment]  # the new home takes writes too
    pauses: list[float] = []
    session = Session(config, config.node("ingest-3"), cluster, sleep=pauses.append)
    receipt = session.put(LEDGER, Write("register", {"voter_id": "V-7"}))
    assert receipt["height"] == SIZE and pauses == []
    assert cluster.asked(promoted.home) == ["get"]  # then kept on the new home (6.1)


def test_a_standby_silent_for_another_ledger_is_still_asked_for_this_one(tmp_path: Path, honest: ChainStore) -> None:
    """ingest-2 is the standby of two ledgers. A request about the other one found it silent
    (with that ledger's home); then it came back, promoted for LEDGER, whose home went silent.
    The write was failed unavailable without ever asking ingest-2: the session's "silent" mark
    was read as "the standby is the node that just failed". Only this write's nodes count."""
    (tmp_path / "cluster.toml").write_text(
        '[cluster]\nkeys = "keys"\ndata = "data"\ndefault_home = "ingest-3"\n'
        + "".join(
            f'[nodes.ingest-{n}]\nrole = "ingest"\nport = {7400 + n}\npub_port = {7410 + n}\n' for n in range(1, 5)
        )
        + '[nodes.replica-1]\nrole = "replica"\nport = 7420\n'  # a standby's epoch needs a witness (10.9)
        + f'[ledgers.{LEDGER}]\nhome = "ingest-1"\nstandby = "ingest-2"\n'
        + '[ledgers.other]\nhome = "ingest-4"\nstandby = "ingest-2"\n'
    )
    for n in range(1, 5):
        generate(tmp_path / "keys", f"ingest-{n}")
    config = load_cluster(tmp_path / "cluster.toml")
    cluster = Promoting(honest, config, refusals=0)
    other_home = config.node("ingest-4").endpoint
    cluster.silent = set()
    session = _promoting_session(config, cluster)
    assert session.put(LEDGER, Write("register", {"voter_id": "V-7"}))["height"] == SIZE  # all up
    cluster.silent = {other_home, cluster.standby}
    with pytest.raises(NodeUnavailableError):
        session.call("size", {"ledger": "other"}, node=session.ledger_node("other"))
    cluster.silent = {other_home, cluster.home}  # ingest-2 back, LEDGER's home gone
    receipt = session.put(LEDGER, Write("register", {"voter_id": "V-8"}))
    assert receipt["height"] == SIZE + 1
    assert cluster.asked(cluster.standby) == [2]  # the write the home left unanswered


def test_a_silent_node_the_session_may_not_trust_is_asked_once_not_waited_for(
    three_nodes: ClusterConfig, honest: ChainStore
) -> None:
    """The standby names ingest-3 (neither the ledger's home nor its standby) at an address
    that does not answer: followed once per answer, as PROTOCOL 6.1 says, never waited for."""
    config = three_nodes
    cluster = Promoting(honest, config, refusals=10_000, named="tcp://203.0.113.9:7394")
    session = _promoting_session(config, cluster)
    with pytest.raises(NodeUnavailableError):
        session.put(LEDGER, Write("register", {"voter_id": "V-7"}))
    assert cluster.pauses == []
    assert cluster.asked("tcp://203.0.113.9:7394") == [1, 3]  # after each refusal of the standby


# --- Session: a home found silent by an earlier process (client/home_cache.py) -----------------


class Silent:
    """The cluster with the nodes at ``silent`` endpoints not answering; the others serve the
    promoted standby's ``store``. The session's own node is ``own``. Requests are logged."""

    def __init__(self, store: ChainStore, silent: set[str], own: str) -> None:
        self.served = Served(store)
        self.silent = silent
        self.own = own
        self.sent: list[tuple[str, str]] = []

    def call(self, cmd: str, args: dict[str, Any] | None = None, *, node: Any = None) -> Any:
        endpoint = self.own if node is None else node.endpoint
        self.sent.append((cmd, endpoint))
        if endpoint in self.silent:
            raise NodeUnavailableError(f"{endpoint}: no answer within 1 s")
        return _answered(self.served, cmd, args, node)

    def close(self) -> None:
        return None

    def asked(self, endpoint: str) -> list[str]:
        return [cmd for cmd, sent_to in self.sent if sent_to == endpoint]


def _process(config: ClusterConfig, cluster: Silent, homes: HomeCache) -> Session:
    """A new `vledger` process's session: of the default home ingest-1, with the note file."""
    cluster.own = config.node("ingest-1").endpoint
    return Session(config, config.node("ingest-1"), cluster, homes=homes)


def test_a_new_process_skips_the_home_an_earlier_one_found_silent(
    three_nodes: ClusterConfig, honest: ChainStore, tmp_path: Path
) -> None:
    """A ledger's home stopped, its standby promoted: each new `vledger put` waited out the
    home's timeout for the genesis and again for whoami (asked of the session's node, that same
    home) before the standby. Now the first process waits once, and notes it beside the key;
    the next ones ask the standby first and the home never."""
    config = three_nodes
    home, standby = config.node("ingest-1").endpoint, config.node("ingest-2").endpoint
    key = tmp_path / "keys" / "admin.key_secret"
    cluster = Silent(honest, {home}, home)
    first = _process(config, cluster, HomeCache.beside(key, config.path))
    assert first.put(LEDGER, Write("register", {"voter_id": "V-7"}))["height"] == SIZE
    assert cluster.asked(home) == ["get"]  # one timeout: whoami went to the standby too
    assert cluster.asked(standby) == ["get", "whoami", "put"]

    note = cache_path(key, config.path)
    assert note.parent == key.parent and LEDGER not in note.name
    assert stat.S_IMODE(note.stat().st_mode) == 0o600
    cluster.sent.clear()
    second = _process(config, cluster, HomeCache.beside(key, config.path))
    assert second.put(LEDGER, Write("register", {"voter_id": "V-8"}))["height"] == SIZE + 1
    assert second.record(LEDGER, SIZE).height == SIZE
    assert cluster.asked(home) == []  # no timeout at all
    assert cluster.asked(standby) == ["get", "whoami", "put", "get"]


def test_a_noted_standby_that_does_not_answer_sends_the_process_back_to_the_home(
    three_nodes: ClusterConfig, honest: ChainStore, tmp_path: Path
) -> None:
    """The home is back and the standby down (never promoted, say): the note costs the standby's
    timeout once, the home answers, and the note ends."""
    config = three_nodes
    home, standby = config.node("ingest-1").endpoint, config.node("ingest-2").endpoint
    homes = HomeCache(tmp_path / "notes.json")
    homes.home_silent(LEDGER, "ingest-2")
    cluster = Silent(honest, {standby}, home)
    session = _process(config, cluster, homes)
    assert session.put(LEDGER, Write("register", {"voter_id": "V-7"}))["height"] == SIZE
    assert cluster.asked(standby) == ["get"]
    assert cluster.asked(home) == ["get", "whoami", "put"]
    assert homes.silent() == {}
    cluster.sent.clear()
    again = _process(config, cluster, homes)
    assert again.record(LEDGER, 2).height == 2 and cluster.asked(standby) == []


def test_a_note_is_kept_for_a_while_and_only_for_the_configured_standby(
    three_nodes: ClusterConfig, honest: ChainStore, tmp_path: Path
) -> None:
    config = three_nodes
    home = config.node("ingest-1").endpoint
    now = [1_000_000.0]
    homes = HomeCache(tmp_path / "notes.json", clock=lambda: now[0])
    homes.home_silent(LEDGER, "ingest-3")  # not its standby (a cluster file changed since): ignored
    homes.home_silent("other", "ingest-2")
    cluster = Silent(honest, set(), home)
    assert _process(config, cluster, homes).record(LEDGER, 1).height == 1
    assert cluster.asked(home) == ["get", "get"]
    homes.home_silent(LEDGER, "ingest-2")
    now[0] += SILENT_SECONDS  # past its time: the home is asked first again
    assert homes.silent() == {}
    (tmp_path / "notes.json").write_text("{not json")  # a damaged note file: as none, never a failure
    assert homes.silent() == {}
    homes.home_silent(LEDGER, "ingest-2")
    assert homes.silent() == {LEDGER: "ingest-2"}
    pinned = Session(config, config.node("ingest-1"), cluster, pinned=True, homes=homes)  # --node: no notes
    cluster.sent.clear()
    assert pinned.record(LEDGER, 1).height == 1 and cluster.asked(home) == ["get", "get"]


class _Hellos:
    """Nodes that answer only ``hello``, each with its own checkpoint key."""

    def __init__(self) -> None:
        self.asked: list[object] = []

    def call(self, cmd: str, args: dict[str, Any] | None = None, *, node: object = None) -> Any:
        assert cmd == "hello"
        self.asked.append(node)
        key = HomeSigner("local", bytes([len(self.asked)]) * 32).key(LEDGER).public_key
        return {"checkpoint_key": key, "cluster": "local"}

    def close(self) -> None:
        return None


class Creating:
    """A home that states no checkpoint key (its genesis pins none) and logs what it is sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def call(self, cmd: str, args: dict[str, Any] | None = None, *, node: object = None) -> Any:
        self.sent.append(cmd)
        if cmd == "hello":
            return {}
        if cmd == "whoami":
            return {"account": "admin", "role": "admin", "key": "k"}
        raise AssertionError(f"not sent here: {cmd}")

    def close(self) -> None:
        return None


def test_ledger_create_lists_the_rotation_kind_only_for_a_ledger_without_a_standby(
    standby_session: tuple[Session, HomeGone],
) -> None:
    """Outsider o16 F4: a ledger with a standby never rotates (10.9, 13.8), so its genesis does
    not list ``checkpoint_key`` (it listed it: cast,checkpoint_key,epoch,...); one without a
    standby still may rotate."""
    session = Session(standby_session[0].config, standby_session[0].node, _Hellos())
    rules = LedgerRules(("register",), 0, {})
    with_standby = session._pin_checkpoint_key(LEDGER, rules)
    assert with_standby.kinds == (EPOCH_KIND, "register")
    assert {"checkpoint_key", "standby_key"} <= set(with_standby.rules)
    alone = session._pin_checkpoint_key("other", rules)
    assert alone.kinds == ("checkpoint_key", "register") and "standby_key" not in alone.rules


def test_a_create_naming_an_outside_witness_as_the_cluster_s_own_is_refused_before_it_is_sent(
    three_nodes: ClusterConfig,
) -> None:
    """fix19c left the client out: it checked a new genesis's outside witnesses (13.9) without
    the cluster's name, so one named ``<cluster>/witness/...``, which the home refuses, was sent
    (its proof of work done for nothing). Refused here as the home would: bad_genesis, nothing sent."""
    config = three_nodes
    posing = SignerKey(f"{config.name}/witness/replica-1", ALG_COSIGNATURE_V1, bytes([5]) * 32)
    cluster = Creating()
    session = Session(config, config.node("ingest-3"), cluster)
    rules = LedgerRules(("note",), 0, {"witnesses": [posing.verifier().encode()], "quorum": 1})
    with pytest.raises(BadGenesisError, match="named as a witness of cluster"):
        session.create_ledger("notes", rules)
    assert "ledger.create" not in cluster.sent
