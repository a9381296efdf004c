"""``vledger demo --cluster FILE``: the running cluster doing its job, shown end to end.

As the cluster's admin, over the client protocol:

1. the demo ledgers that are missing are created on their home nodes: ``election-2026`` (three
   choices, open from a minute ago for 30 days), ``zakat`` (a charity fund, donors sealed with
   the key in ``<keys>/zakat.seal``) and ``resources`` (the admin issues units);
2. a batch of new voters registers, votes, some take their vote back and cast again, a few
   withdraw; a few donations and a disbursement; an issue and transfers. Every record's proof
   of work is done on every core; each phase is written before the next that depends on it;
3. each ledger is read back from its home node with ``range``, every record checked as the
   next of its chain, and replayed through the rules engine: an independent recount from the
   chain alone, which is what observers do. The election's tally must equal the tally before
   this run plus what this run wrote;
4. the demo waits (up to a deadline) until every replica holds every ledger up to its head,
   as Redis's holder heights say, and shows the replication counts; then until every
   observer has signed a tally of each ledger at its head, and shows whether they agree
   (``vledger tally``);
5. each node's store directory on this host, replicas included, is verified read-only from
   every genesis, as ``vledger verify`` does (a live store in WAL mode reads fine).

Running it again adds a new batch (new voter ids) to the same ledgers. Batches are planned
by pure functions (:func:`plan_voters`, :func:`plan_batch`), written by :class:`ClusterDemo`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from ..broker.client import Client
from ..broker.keys import new_keypair
from ..broker.redis_server import connect
from ..broker.replication import REDIS_ERRORS, ReplicationLedger, count_distribution
from ..broker.seal_keys import read_seal_key, write_seal_key
from ..client.session import Session, new_request_id, node_address, now_ms, reply_field
from ..client.write import Write
from ..config.cluster import ClusterConfig, load_cluster
from ..config.settings import Limits
from ..node.errors import KeyExistsError, NodeUnavailableError, RemoteError, UsageError, VledgerError
from ..node.ledger import LedgerRules
from ..node.receipt import keys_from_genesis, parse_receipt, verify_receipt
from ..node.record import Content, Entry, checksum_of
from ..node.rules import Domain, Ref
from ..node.rules.charity import CharityState, CharityTally
from ..node.rules.engine import RulesEngine, Violation, new_ledger_rules
from ..node.rules.resources import ResourcesState, ResourcesTally
from ..node.rules.votes import ELECTRONIC_ID_BYTES, ELECTRONIC_ID_PREFIX, ElectionState, ElectionTally
from ..node.sealed import seal
from ..node.times import time_text
from ..verifier.tally import TallyReport
from . import client_payloads as build
from .args import ADMIN_KEY
from .client_session import load_client_keys
from .demo import CHOICES, NAMES, SITES, prepare_entries, worker_count
from .moving_kinds import MOVING_KINDS, grant_moving_kinds, moving_kinds
from .progress import Progress
from .receipt_commands import receipt_keys_of
from .repl_commands import Checker
from .tally_command import tally_report
from .verification import Verification, verify_path

ELECTION = "election-2026"
ZAKAT = "zakat"
RESOURCES = "resources"
LEDGERS = (ELECTION, ZAKAT, RESOURCES)
# The kinds a run writes, in the order a report lists them.
KINDS = ("register", "cast", "uncast", "withdraw", "donation", "disbursement", "issue", "transfer")
SEAL_KEY_NAME = "zakat.seal"
ELECTION_DAYS = 30
OPENS_BEFORE_MS = 60_000
CHUNK = 64  # records sent at once to one node, all in flight together
PROGRESS_LINES_EVERY = 5.0  # seconds between plain progress lines off a terminal
TIMEOUT = 30.0
REPLICATION_WAIT = 60.0  # seconds for every replica to hold every record the run wrote
POLL = 0.1
UNCAST_SHARE = 0.10  # voters who take their vote back and cast again
WITHDRAW_SHARE = 0.03
DONATIONS = 5
TRANSFERS = 3
ISSUE_AMOUNT = 1_000
CURRENCY = "SAR"
UNIT = "credits"
_WEIGHTS = (0.45, 0.35, 0.20)  # how the demo's voters lean, so that the tally is not a tie


# --- the plan (pure) -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VoterPlan:
    """One new voter's story: a first choice, maybe a change of mind, maybe a withdrawal."""

    voter_id: str
    first: str
    second: str | None = None  # cast again after an uncast
    withdraws: bool = False

    @property
    def counted(self) -> str | None:
        """The choice this voter adds to the tally, if any."""
        return None if self.withdraws else (self.second or self.first)


def plan_voters(numbers: Sequence[int], choices: Sequence[str], seed: int) -> list[VoterPlan]:
    """Voters ``V-<number>``; about 10 % uncast and cast another choice, about 3 % withdraw."""
    rng = random.Random(seed)  # noqa: S311 (the demo's voters, the same for a seed; nothing secret)
    weights = [_WEIGHTS[i] if i < len(_WEIGHTS) else _WEIGHTS[-1] for i in range(len(choices))]
    plans = []
    for number in numbers:
        first = rng.choices(choices, weights)[0]
        draw = rng.random()
        second = None
        if draw < UNCAST_SHARE and len(choices) > 1:
            second = rng.choice([c for c in choices if c != first])
        withdraws = UNCAST_SHARE <= draw < UNCAST_SHARE + WITHDRAW_SHARE
        plans.append(VoterPlan(f"V-{number:06d}", first, second, withdraws))
    return plans


def next_voter_numbers(registered: Callable[[str], bool], start: int, count: int) -> list[int]:
    """The first ``count`` numbers from ``start`` on whose voter id is not registered yet."""
    numbers: list[int] = []
    number = start
    while len(numbers) < count:
        if not registered(f"V-{number:06d}"):
            numbers.append(number)
        number += 1
    return numbers


def electronic_id_of(registration: Content, limits: Limits) -> str:
    """The electronic id the ledger will give this registration (node/rules/votes.py)."""
    return ELECTRONIC_ID_PREFIX + checksum_of(registration.encode(limits))[:ELECTRONIC_ID_BYTES].hex()


@dataclass(slots=True)
class Batch:
    """What one run writes: phases of contents (each needs the previous one written), and counts."""

    phases: list[list[Content]] = field(default_factory=lambda: [[], [], [], []])
    voters: list[VoterPlan] = field(default_factory=list)
    written: Counter[tuple[str, str]] = field(default_factory=Counter)  # (ledger, kind) -> records

    def add(self, phase: int, content: Content) -> None:
        self.phases[phase].append(content)
        self.written[content.ledger, content.kind] += 1

    @property
    def size(self) -> int:
        return sum(len(phase) for phase in self.phases)

    def counted(self) -> Counter[str]:
        return Counter(v.counted for v in self.voters if v.counted is not None)


@dataclass(frozen=True, slots=True)
class BatchInput:
    """What a batch is planned from: who writes, when, and what the chains allow."""

    account: str
    ts: int
    voters: list[VoterPlan]
    seal_donor: Callable[[str], str]  # donor information -> sealed id
    resources: bool  # the account may issue on the resources ledger
    serial: int  # numbers the batch's donors, funds and transfers (the voters' first number)


def plan_batch(given: BatchInput, limits: Limits, request_ids: Callable[[], str] = new_request_id) -> Batch:
    """Every record of a run, in four phases: registrations, donations and an issue; votes, a
    disbursement and transfers; uncasts and withdrawals; the votes cast again."""
    batch = Batch(voters=list(given.voters))

    def add(phase: int, ledger: str, write: Write) -> Content:
        content = Content(ledger, write.kind, write.payload, given.account, request_ids(), given.ts)
        batch.add(phase, content)
        return content

    for voter in given.voters:
        eid = electronic_id_of(add(0, ELECTION, build.register(voter.voter_id)), limits)
        add(1, ELECTION, build.cast(eid, voter.first))
        if voter.second is not None:
            add(2, ELECTION, build.uncast(eid))
            add(3, ELECTION, build.cast(eid, voter.second))
        elif voter.withdraws:
            add(2, ELECTION, build.withdraw(eid))
    general = 0
    for i in range(DONATIONS):
        n = given.serial + i
        fund = "general" if i % 3 else "orphans"
        amount = 10_000 * (1 + (n * 7) % 9)  # halalas: 100.00 to 900.00 SAR
        general += amount if fund == "general" else 0
        donor = given.seal_donor(f"{NAMES[n % len(NAMES)]} (donor {n})")
        source, purpose = ("transfer", "zakat-al-mal") if i % 2 else ("cash", "sadaqah")
        add(0, ZAKAT, build.donation(donor, fund, amount, source, purpose))
    add(1, ZAKAT, build.disbursement("general", SITES[given.serial % len(SITES)], general // 2, "medicine"))
    if given.resources:
        add(0, RESOURCES, build.issue(given.account, ISSUE_AMOUNT))
        for i in range(TRANSFERS):
            site = SITES[(given.serial + i) % len(SITES)]
            add(1, RESOURCES, build.transfer(given.account, site, ISSUE_AMOUNT // 10 * (i + 1)))
    return batch


def ledger_rules(ledger: str, account: str, difficulty: int, ts: int) -> LedgerRules:
    """A demo ledger's genesis rules, for a ledger created now."""
    if ledger == ELECTION:
        rules: dict[str, Any] = {
            "type": ElectionState.type_name,
            "choices": list(CHOICES),
            "opens": ts - OPENS_BEFORE_MS,
            "closes": ts + ELECTION_DAYS * 86_400_000,
        }
        return LedgerRules(tuple(sorted(ElectionState.kinds)), difficulty, new_ledger_rules(rules))
    if ledger == ZAKAT:
        rules = {"type": CharityState.type_name, "currency": CURRENCY}
        return LedgerRules(tuple(sorted(CharityState.kinds)), difficulty, new_ledger_rules(rules))
    rules = {"type": ResourcesState.type_name, "unit": UNIT, "issuers": [account]}
    return LedgerRules(tuple(sorted(ResourcesState.kinds)), difficulty, new_ledger_rules(rules))


# --- what a run found ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainReadBack:
    """A ledger as read back from its home node and replayed through the rules."""

    ledger: str
    node: str
    head: Ref  # the last record: its height and hash
    violations: list[Violation]
    domain: Domain  # the ledger's state, rebuilt from the chain alone

    @property
    def records(self) -> int:
        return self.head.height + 1


@dataclass(frozen=True, slots=True)
class Replication:
    """Who holds how much of a ledger, as Redis says once the replicas caught up (or the deadline passed)."""

    ledger: str
    size: int
    held: dict[str, int]  # node -> the height it holds up to
    counts: dict[int, int]  # replication count -> how many records have it
    replicas: tuple[str, ...]  # the configuration's replica nodes
    checkpoint: int | None = None  # the size of the home's latest checkpoint that verifies
    cosigned: dict[str, int] = field(default_factory=dict)  # witness -> the size its cosignature verifies at

    @property
    def complete(self) -> bool:
        """Every replica holds every record, and has cosigned a checkpoint of them all (what w counts)."""
        return all(
            self.held.get(node, -1) >= self.size - 1 and self.cosigned.get(node, 0) >= self.size
            for node in self.replicas
        )


@dataclass(frozen=True, slots=True)
class VerifierView:
    """What a verifier reports once it checked every record written and swept every copy since."""

    node: str
    open_alerts: list[str]  # NODE|LEDGER|WHAT of every alert not resolved
    copies: int  # node copies of ledgers it sweeps
    swept: int  # of those, how many it swept to their end after the run's last write
    checked: bool  # its consumer group read every stream to its head, nothing left pending
    answered: bool = True

    @property
    def ok(self) -> bool:
        return self.answered and self.checked and self.swept == self.copies and not self.open_alerts


@dataclass(frozen=True, slots=True)
class CheckpointView:
    """A ledger's latest checkpoint its home serves, verified, and the witnesses whose cosignature verified."""

    ledger: str
    size: int
    root: bytes
    witnesses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReceiptView:
    """One voter's receipt as ``vledger receipt get`` fetches it, and its offline check's outcome."""

    ledger: str
    index: int
    kind: str
    data: bytes  # the receipt file's bytes (docs/PROTOCOL.md 14.2)
    size: int  # the checkpoint it stands in
    witnesses: tuple[str, ...]
    verified: str | None  # None: verified offline with the genesis and the keys (receipt keys); else why not


@dataclass(frozen=True, slots=True)
class ClusterDemoRun:
    cluster: str
    account: str
    created: list[str]
    written: Counter[tuple[str, str]]
    voters: list[VoterPlan]
    seconds: float
    processes: int
    chains: list[ChainReadBack]
    expected: dict[str, int]  # the election's counts: before this run, plus what it wrote
    stores: list[tuple[str, Path, Verification]]
    replication: list[Replication] = field(default_factory=list)
    replication_seconds: float = 0.0
    tallies: list[TallyReport] = field(default_factory=list)  # the observers' signed tallies, one per ledger
    verifiers: list[VerifierView] = field(default_factory=list)
    checkpoints: list[CheckpointView] = field(default_factory=list)
    receipt: ReceiptView | None = None

    def chain(self, ledger: str) -> ChainReadBack:
        return next(c for c in self.chains if c.ledger == ledger)

    @property
    def election(self) -> ElectionTally:
        return _domain(self.chain(ELECTION), ElectionState).tally()

    @property
    def charity(self) -> CharityTally:
        return _domain(self.chain(ZAKAT), CharityState).tally()

    @property
    def resources(self) -> ResourcesTally:
        return _domain(self.chain(RESOURCES), ResourcesState).tally()

    @property
    def tally_matches(self) -> bool:
        return self.election.counts == self.expected

    @property
    def failures(self) -> list[str]:
        """What went wrong, one phrase each (empty when all is well)."""
        failed = {
            "the recount differs from what was written": not self.tally_matches,
            "a chain broke a rule": any(c.violations for c in self.chains),
            "a store did not verify": not all(result.ok for _, _, result in self.stores),
            "a ledger is not on every replica": not all(r.complete for r in self.replication),
            "the observers' tallies did not agree": not all(report.exit_code == 0 for report in self.tallies),
            "a verifier did not check every record and sweep every copy, or has open alerts": not all(
                view.ok for view in self.verifiers
            ),
            "the receipt did not verify offline": self.receipt is not None and self.receipt.verified is not None,
        }
        return [what for what, bad in failed.items() if bad]

    @property
    def ok(self) -> bool:
        return not self.failures


_D = TypeVar("_D", bound=Domain)


def _domain(chain: ChainReadBack, kind: type[_D]) -> _D:
    """The ledger's state if its rules are the demo's kind; a ledger made otherwise is not the demo's."""
    if not isinstance(chain.domain, kind):
        raise UsageError(
            f"ledger {chain.ledger!r} holds {chain.domain.type_name!r} rules, not {kind.type_name!r}: "
            "the demo needs a ledger of its own"
        )
    return chain.domain


# --- the run -------------------------------------------------------------------------------------


class ClusterDemo:
    """One run against a running cluster, as its admin: one pinned session per ingest node."""

    def __init__(
        self,
        config: ClusterConfig,
        difficulty: int,
        otp: str | None = None,
        ask: Callable[[], str] | None = None,
    ) -> None:
        self.config = config
        self.difficulty = difficulty
        self.limits = config.settings.limits
        keys = load_client_keys(config.secret_key_path(ADMIN_KEY))
        self.clients: dict[str, Client] = {}
        self.sessions: dict[str, Session] = {}
        for node in config.ingest_nodes():
            client = Client(
                node_address(config, node.name),
                keys,
                timeout=TIMEOUT,
                max_message_bytes=config.ingest.max_message_bytes,
            )
            self.clients[node.name] = client
            self.sessions[node.name] = Session(config, node, client, pinned=True)
        share_second_factor(list(self.sessions.values()), otp, ask)
        self.notes: list[str] = []
        self.homes: dict[str, str] = {}  # ledger -> its home, once a handover made it another than the file's

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()

    def __enter__(self) -> ClusterDemo:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def home(self, ledger: str) -> str:
        """The node that is ``ledger``'s home: the cluster file's, or the standby a proven handover made home."""
        return self.homes.get(ledger) or self.config.home_of(ledger).name

    def session(self, ledger: str) -> Session:
        return self.sessions[self.home(ledger)]

    def run(self, voters: int, say: Callable[[str], None] = print) -> ClusterDemoRun:
        """The whole demo; ``say`` tells what is about to happen before the long part."""
        self.homes = self._proven_homes()
        account = self.session(ELECTION).account
        created = self._create_missing(account)
        for line in self._roles(account):
            say(line)
        before = {ledger: self.read_back(ledger) for ledger in (ELECTION, RESOURCES)}
        election = _domain(before[ELECTION], ElectionState)
        resources = _domain(before[RESOURCES], ResourcesState)
        batch = plan_batch(self._batch_input(account, election, resources, voters), self.limits)
        ledgers = f"created {', '.join(created)}" if created else "its ledgers were there already"
        say(f"Cluster {self.config.name}, as {account}: {ledgers}.")
        if batch.voters:
            say(f"{len(batch.voters):,} new voters, {batch.voters[0].voter_id} to {batch.voters[-1].voter_id}.")
        for note in self.notes:
            say(f"Note: {note}.")
        say(f"Writing {batch.size:,} records, their proof of work on {worker_count()} processes...")
        seconds = self._write(batch)
        chains = [self.read_back(ledger) for ledger in LEDGERS]
        counts = election.tally().counts
        expected = Counter(counts) + batch.counted()
        if self.config.nodes_of("replica"):
            say(f"Waiting for the {len(self.config.nodes_of('replica'))} replicas to hold every record...")
        if self.config.nodes_of("observer"):
            say(f"Then for the {len(self.config.nodes_of('observer'))} observers to sign a tally at every head...")
        if self.config.nodes_of("verifier"):
            say("And for the verifier to check every new record and sweep every copy again...")
        written_ms = now_ms()
        started = time.monotonic()
        replication = self._replication({chain.ledger: chain.records for chain in chains})
        return ClusterDemoRun(
            cluster=self.config.name,
            account=account,
            created=created,
            written=batch.written,
            voters=batch.voters,
            seconds=seconds,
            processes=worker_count(),
            chains=chains,
            expected={choice: expected[choice] for choice in counts},
            stores=self._verify_stores(),
            replication=replication,
            replication_seconds=time.monotonic() - started,
            tallies=self._tallies({chain.ledger: chain.head.height for chain in chains}),
            verifiers=self._verifiers({chain.ledger: chain.head.height for chain in chains}, written_ms),
            checkpoints=[self._checkpoint(ledger) for ledger in LEDGERS],
            receipt=self._receipt(chains[0]),
        )

    def _checkpoint(self, ledger: str) -> CheckpointView:
        """The home's latest checkpoint of ``ledger``, verified with the pinned key and the witness keys."""
        session = self.session(ledger)
        verified = session.checkpoint(ledger, session.checkpoint_keys(ledger, 0))
        return CheckpointView(ledger, verified.checkpoint.size, verified.checkpoint.root, verified.witnesses)

    def _receipt(self, chain: ChainReadBack) -> ReceiptView:
        """The receipt of the election's last record (a voter's), fetched as ``vledger receipt get`` does
        (under a checkpoint a majority of the witnesses cosigned, when there are witnesses), then checked
        as ``vledger receipt verify --genesis G $(vledger receipt keys)`` does: the file, the genesis
        record, the witness keys, the admin ledger's key and the node keys that bound the replaced
        ones (14.3). With the witness keys alone, a receipt cosigned by witnesses whose keys rotated
        was refused no_quorum: nothing proved their later keys (outsider45)."""
        session = self.session(chain.ledger)
        index = chain.head.height
        given = receipt_keys_of(self.config)
        witnesses = given.witnesses
        quorum = len(witnesses) // 2 + 1 if witnesses else 0  # a majority of the witnesses, as repair asks
        deadline = time.monotonic() + TIMEOUT
        receipt = session.receipt(chain.ledger, index, session.checkpoint_keys(chain.ledger, quorum), deadline)
        data = receipt.encode()
        genesis = session.record(chain.ledger, 0).encode()
        kind = session.record(chain.ledger, index).content.kind
        try:
            keys = keys_from_genesis(genesis, chain.ledger, witnesses.values(), quorum)
            if given.admin_key is not None:
                keys = dataclasses.replace(keys, admin_key=given.admin_key, node_keys=given.node_keys)
            verified = verify_receipt(parse_receipt(data), keys)
        except VledgerError as e:
            return ReceiptView(chain.ledger, index, kind, data, 0, (), f"{e.code}: {e.message}")
        checkpoint = verified.checkpoint
        return ReceiptView(chain.ledger, index, kind, data, checkpoint.checkpoint.size, checkpoint.witnesses, None)

    def _create_missing(self, account: str) -> list[str]:
        held: set[str] = set()
        for session in self.sessions.values():
            held.update(entry["ledger"] for entry in reply_field(session.call("ledger.list"), "ledgers", list))
        created = []
        for ledger in LEDGERS:
            if ledger not in held:
                rules = ledger_rules(ledger, account, self.difficulty, now_ms())
                # As `vledger ledger create` does: its votes and money closed to the admin first.
                grant_moving_kinds(self.session(ledger), ledger, moving_kinds(rules.rules), account)
                self.session(ledger).create_ledger(ledger, rules)
                created.append(ledger)
        return created

    def _roles(self, account: str) -> list[str]:
        """An election office's roles (README "Roles and grants"): a registrar who may register,
        a treasurer who may disburse, an auditor who reads; the admin holds every kind that
        moves a vote or money (tools/moving_kinds.py: granted before a ledger this run created,
        here for one an earlier run left open), so that no other writer may write them and its
        own batch goes on. Then one write without a grant, refused (the registrar's
        disbursement; a registration of its own would change the demo's voter count). Each change is a record
        on the admin ledger (`vledger admin log`). Keys are made for this run only."""
        admin = self.session(ELECTION)
        keys = {name: new_keypair() for name in ("registrar", "treasurer", "auditor")}
        roles = {"registrar": "writer", "treasurer": "writer", "auditor": "observer"}
        for name, role in roles.items():
            with contextlib.suppress(RemoteError):  # there from an earlier run: it gets another key
                admin.call("account.add", {"account": name, "role": role})
            admin.call("key.add", {"account": name, "key": keys[name].public})
        for ledger, kind, holder in (
            (ELECTION, "register", "registrar"),
            *((ELECTION, kind, account) for kind in MOVING_KINDS["election"]),
            (ZAKAT, "disbursement", "treasurer"),
            *((ZAKAT, kind, account) for kind in MOVING_KINDS["charity"]),
        ):
            try:
                admin.call("grant.add", {"ledger": ledger, "kind": kind, "account": holder})
            except RemoteError as e:
                if e.code != "already_granted":
                    raise
        lines = [
            f"Roles: {account} alone may register, cast, uncast and withdraw on {ELECTION} and donate to "
            f"and disburse from {ZAKAT}, beside a registrar who may register and a treasurer who may "
            "disburse; an auditor reads (see: vledger grant list, vledger admin log)."
        ]
        node = self.config.nodes[self.home(ELECTION)]
        client = Client(node_address(self.config, node.name), keys["registrar"], timeout=TIMEOUT)
        registrar = Session(self.config, node, client)
        try:
            try:
                registrar.put(ZAKAT, build.disbursement("general", "mallory-offshore", 1, "none"))
                lines.append("registrar disbursed to mallory-offshore: ACCEPTED (grants are not enforced!)")
            except RemoteError as e:
                lines.append(f"registrar tried to disburse to mallory-offshore: refused, {e.code}.")
            # A cast under an id no voter holds: a ballot the registrar may not move, whoever's it is
            # (the grant rule runs before the election's; were cast open, this is not_registered).
            try:
                registrar.put(ELECTION, build.cast("E-0000000000000000", CHOICES[0]))
                lines.append("registrar cast a vote: ACCEPTED (cast is open to every writer!)")
            except RemoteError as e:
                lines.append(f"registrar tried to cast a vote: refused, {e.code}.")
        finally:
            registrar.close()
        return lines

    def _batch_input(self, account: str, election: ElectionState, resources: ResourcesState, voters: int) -> BatchInput:
        ts = now_ms()
        if ts >= election.closes:
            self.notes.append(f"{ELECTION} closed at {time_text(election.closes)}: no new voters")
            voters = 0
        registered = election.tally().registered
        numbers = next_voter_numbers(lambda v: election.electronic_id_of(v) is not None, registered + 1, voters)
        issuer = account in resources.issuers
        if not issuer:
            self.notes.append(f"{account} is not an issuer of {RESOURCES}: no issue, no transfers")
        serial = numbers[0] if numbers else registered + 1
        return BatchInput(
            account=account,
            ts=ts,
            voters=plan_voters(numbers, election.choices, seed=serial),
            seal_donor=self._sealer(),
            resources=issuer,
            serial=serial,
        )

    def _sealer(self) -> Callable[[str], str]:
        """Seals donor information with the fund's key, made on the first run and kept with the keys."""
        path = self.config.keys_dir / SEAL_KEY_NAME
        with contextlib.suppress(KeyExistsError):
            write_seal_key(path)
        key = read_seal_key(path)
        return lambda info: seal(key, info, ZAKAT)

    def _write(self, batch: Batch) -> float:
        """Every record of ``batch``, its work done on every core; phase by phase, CHUNK at a time per node."""
        levels = {ledger: self.session(ledger).rules(ledger).difficulty for ledger in LEDGERS}
        jobs = [(c, levels[c.ledger], self.limits) for phase in batch.phases for c in phase]
        phase_ends = set(itertools.accumulate(len(phase) for phase in batch.phases))
        started = time.monotonic()
        pending: dict[str, list[Entry]] = {}
        with Progress("records", len(jobs), lines_every=PROGRESS_LINES_EVERY) as progress:
            for index, entry in enumerate(prepare_entries(jobs, progress), 1):
                node = self.home(entry.content.ledger)
                chunk = pending.setdefault(node, [])
                chunk.append(entry)
                if len(chunk) >= CHUNK:
                    self._send(node, pending.pop(node))
                if index in phase_ends:  # the next phase needs this one written
                    for name, entries in pending.items():
                        self._send(name, entries)
                    pending.clear()
        return time.monotonic() - started

    def _send(self, node: str, entries: list[Entry]) -> None:
        requests = [("put", {"content": e.content_bytes, "nonce": e.nonce}) for e in entries]
        receipts = self.clients[node].call_many(requests, window=CHUNK)
        for entry, receipt in zip(entries, receipts, strict=True):
            if not isinstance(receipt, dict) or receipt.get("checksum") != entry.checksum:
                raise NodeUnavailableError(f"{node}: a receipt that is not for the record sent")

    def read_back(self, ledger: str) -> ChainReadBack:
        """The ledger from its home node, each record checked as its chain's next, replayed through the rules."""
        session = self.session(ledger)
        engine = RulesEngine()
        violations = engine.replay(session.records(ledger))
        state = engine.state(ledger)
        if state is None:
            raise NodeUnavailableError(f"{session.node.name}: no records of {ledger!r}")
        return ChainReadBack(ledger, session.node.name, state.head, violations, state.domain)

    def _tallies(self, heads: dict[str, int]) -> list[TallyReport]:
        """Each ledger's signed tallies once the observers agree at its head; at once on a bad signature
        or a mismatch; else at the deadline."""
        if not self.config.nodes_of("observer"):
            return []
        client = connect(self.config.redis_access("admin"), timeout=TIMEOUT)
        deadline = time.monotonic() + REPLICATION_WAIT
        reports: list[TallyReport] = []
        try:
            while time.monotonic() <= deadline:
                try:
                    reports = [tally_report(self.config, ledger, client) for ledger in heads]
                except REDIS_ERRORS:
                    reports = []
                if reports and all(r.exit_code == 0 and r.verdict.height == heads[r.ledger] for r in reports):
                    break
                if any(r.exit_code == 1 for r in reports):
                    break
                time.sleep(POLL)
            return reports
        finally:
            client.close()

    def _verifiers(self, heads: dict[str, int], written_ms: int) -> list[VerifierView]:
        """Each verifier's view once it checked every stream to its head and swept every copy since
        ``written_ms`` (or at the deadline)."""
        views = []
        keys = load_client_keys(self.config.secret_key_path(ADMIN_KEY))
        repl = ReplicationLedger(connect(self.config.redis_access("admin"), timeout=TIMEOUT))
        try:
            for node in self.config.nodes_of("verifier"):
                with Client(node_address(self.config, node.name), keys, timeout=TIMEOUT) as client:
                    deadline = time.monotonic() + REPLICATION_WAIT
                    while True:
                        view = _verifier_view(node.name, client, repl, heads, written_ms)
                        if view.ok or time.monotonic() > deadline:
                            break
                        time.sleep(POLL)
                    views.append(view)
        finally:
            repl.client.close()
        return views

    def _proven_homes(self) -> dict[str, str]:
        """The demo ledgers whose home a proven handover moved (PROTOCOL 10.9, as ``vledger repl
        status`` proves it), and that home; none when Redis cannot say (the cluster file's then)."""
        client = connect(self.config.redis_access("admin"), timeout=TIMEOUT)
        repl, checker = ReplicationLedger(client), Checker(self.config, client)
        try:
            seen = {ledger: checker.witnessed(repl, ledger, sorted(self.config.nodes), None) for ledger in LEDGERS}
        except REDIS_ERRORS:
            return {}
        finally:
            client.close()
        return {ledger: witnessed.home for ledger, witnessed in seen.items() if witnessed.replaced is not None}

    def _replication(self, sizes: dict[str, int]) -> list[Replication]:
        """Each ledger's holder heights once every replica holds it all, or at the deadline: its
        checkpoints and cosignatures those of its newest proven epoch, its fenced home no holder."""
        replicas = tuple(node.name for node in self.config.nodes_of("replica"))
        client = connect(self.config.redis_access("admin"), timeout=TIMEOUT)
        repl = ReplicationLedger(client)
        checker = Checker(self.config, client)
        deadline = time.monotonic() + REPLICATION_WAIT
        try:
            while True:
                views = []
                for ledger, size in sizes.items():
                    held = self._held(repl, ledger)
                    checkpoint, cosigned = None, {}
                    try:
                        note = repl.checkpoints().get(ledger)
                        seen = checker.witnessed(repl, ledger, sorted(self.config.nodes), note)
                        checkpoint, cosigned = seen.checkpoint, seen.cosigned
                        if seen.replaced is not None:
                            held.pop(seen.replaced, None)  # no copy of the ledger (10.9)
                    except REDIS_ERRORS:
                        pass
                    views.append(
                        Replication(ledger, size, held, count_distribution(held, size), replicas, checkpoint, cosigned)
                    )
                if all(view.complete for view in views) or time.monotonic() > deadline:
                    return views
                time.sleep(POLL)
        finally:
            client.close()

    @staticmethod
    def _held(repl: ReplicationLedger, ledger: str) -> dict[str, int]:
        try:
            return repl.held(ledger)
        except REDIS_ERRORS:
            return {}

    def _verify_stores(self) -> list[tuple[str, Path, Verification]]:
        """Each node's store on this host, read-only, from every genesis: what ``vledger verify DIR`` does."""
        stores = []
        for node in [*self.config.ingest_nodes(), *self.config.nodes_of("replica"), *self.config.nodes_of("observer")]:
            path = self.config.store_dir(node.name)
            if node.role == "ingest" or path.is_dir():
                stores.append((node.name, path, verify_path(path, None, self.limits)))
        return stores


def _verifier_view(
    name: str, client: Client, repl: ReplicationLedger, heads: dict[str, int], written_ms: int
) -> VerifierView:
    try:
        status = client.call("status")
    except (NodeUnavailableError, RemoteError):
        return VerifierView(name, [], 0, 0, False, answered=False)
    copies = {key: copy for key, copy in status.get("copies", {}).items() if key.split("|")[-1] in heads}
    swept = sum(1 for copy in copies.values() if copy.get("last_complete_ms", 0) > written_ms)
    checked = True
    for ledger, head in heads.items():
        try:
            groups = repl.client.xinfo_groups(repl.stream_key(ledger))
        except REDIS_ERRORS:
            groups = []
        group = next((g for g in groups if g.get("name") in (b"verifier", "verifier")), None)
        delivered = group.get("last-delivered-id", b"0-0") if group else b"0-0"
        delivered = delivered.decode() if isinstance(delivered, bytes) else str(delivered)
        if group is None or int(delivered.split("-")[0]) < head or group.get("pending", 1) != 0:
            checked = False
    return VerifierView(name, list(status.get("open_alerts", [])), len(copies), swept, checked)


def share_second_factor(sessions: Sequence[Session], otp: str | None, ask: Callable[[], str] | None) -> None:
    """The admin's one-time code ``otp`` for every session: traded on the first for a
    second-factor session (PROTOCOL 16.5), which any ingest node takes, since a code works once
    and the demo sends admin commands to every home. No code: the first node that wants one
    asks (``ask``) and it is traded the same way, or its refusal says how to give one."""
    if not sessions:
        return
    first, *rest = sessions
    first.second_factor(otp, ask)
    if otp is not None or ask is not None:
        # A code typed on the terminal too: kept as the code, the next admin command would send
        # it used up, a guess counted against the admin each time (five lock it out: review r28).
        first.second_factor_session()
    for session in rest:
        session.second_factor(first.otp, ask)


def run_cluster_demo(
    config_path: Path,
    voters: int,
    difficulty: int,
    say: Callable[[str], None] = print,
    otp: str | None = None,
    ask: Callable[[], str] | None = None,
) -> ClusterDemoRun:
    with ClusterDemo(load_cluster(config_path), difficulty, otp, ask) as demo:
        return demo.run(voters, say)
