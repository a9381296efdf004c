"""What an account name holds on the resources ledgers: units, and the right to issue (PROTOCOL 7.3).

A grant is the account's and ends with it (16.2), but units and a genesis's ``issuers`` are
keyed by the name alone: an account added again under a removed account's name, or under a
name that units were sent to before any account had it, moves those units and issues. So
``vledger user remove`` says what the name keeps, and ``vledger user add`` of a name that holds
any refuses unless told ``--reuse-name`` (outsider o6 H6).

No node's word on a balance is taken. A ledger's balances come from the newest count every
observer signed alike (their tallies in Redis, each signature checked with the observer's key
from the key directory as ``vledger tally`` checks it, PROTOCOL 11), tied to the chain the node
serves by the hash of the record at its height, the records after it checked as the chain's
next and none of them naming the account. Only without such a count (no observer or Redis
access, observers disagreeing or still counting, a later record naming the account) is the
ledger replayed through its rules from its chain, checked record by record, as ``grant list``
replays the admin ledger: replayed on every account command, a resources ledger of a million
records took minutes each time (review r11 E).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from ..client.session import Session
from ..config.cluster import ClusterConfig
from ..node.errors import VledgerError
from ..node.record import Record
from ..node.rules.engine import RulesEngine
from ..node.rules.resources import ResourcesState
from ..node.tally_body import Snapshot

log = logging.getLogger(__name__)
REDIS_TIMEOUT = 2.0  # seconds: a Redis out of reach costs the command this much before the replay


@dataclass(frozen=True, slots=True)
class Holding:
    """What ``account`` holds on one resources ledger: ``units`` of ``unit``, and whether it issues."""

    ledger: str
    unit: str
    units: int
    issuer: bool

    def text(self) -> str:
        held = [f"{self.units:,} {self.unit}"] if self.units else []
        return f"{' and '.join([*held, *(['the right to issue'] if self.issuer else [])])} on {self.ledger}"


def holding_on(session: Session, ledger: str, account: str, counted: Snapshot | None = None) -> Holding | None:
    """``account``'s holding on the resources ledger ``ledger`` (None: no units, no issuer), from
    the observers' count ``counted`` of it when it settles the name, else from a replay."""
    held = _counted_holding(session, ledger, account, counted) if counted is not None else None
    if held is None:
        engine = RulesEngine()
        engine.replay(session.records(ledger))
        held = _holding(engine, ledger, account, None)
    return held if held is not None and (held.units or held.issuer) else None


def _holding(engine: RulesEngine, ledger: str, account: str, units: int | None) -> Holding | None:
    """``account``'s holding by the resources state ``engine`` holds of ``ledger`` (None: not one),
    its units the state's unless given."""
    state = engine.state(ledger)
    if state is None or not isinstance(state.domain, ResourcesState):
        return None
    domain = state.domain
    held = domain.balance(account) if units is None else units
    return Holding(ledger, domain.unit, held, account in domain.issuers)


def _counted_holding(session: Session, ledger: str, account: str, counted: Snapshot) -> Holding | None:
    """``account``'s holding by ``counted`` (its units may be 0), or None when the count does not
    settle it: it is no resources count, the node serves another record at its height, or a
    record after it names the account."""
    balances = counted.tally.get("balances")
    units = balances.get(account, 0) if isinstance(balances, dict) else None
    if counted.tally.get("type") != ResourcesState.type_name or type(units) is not int:
        return None
    engine = RulesEngine()  # its genesis only: the unit and the issuers
    engine.replay([session.record(ledger, 0)])
    if session.record(ledger, counted.height).link != counted.head:
        return None
    if any(_names(record, account) for record in session.records(ledger, counted.height + 1)):
        return None
    return _holding(engine, ledger, account, units)


def _names(record: Record, account: str) -> bool:
    """Whether ``record`` is an issue or transfer naming ``account`` (and so may change its balance)."""
    payload = record.content.payload
    return (
        record.content.kind in ResourcesState.kinds
        and isinstance(payload, dict)
        and account in (payload.get("account"), payload.get("from"), payload.get("to"))
    )


def agreed_counts(config: ClusterConfig, ledgers: Iterable[str]) -> dict[str, Snapshot]:
    """Per ledger of ``ledgers``, the newest count every observer of ``config`` signed alike, read
    from Redis as ``vledger tally`` reads it (the signatures checked with the key directory's keys
    and the rotations the admin ledger proves); a ledger without one is left out, and all are when
    Redis cannot be read: the caller replays them."""
    ledgers = list(ledgers)
    if not ledgers or not config.nodes_of("observer"):  # Redis is not even asked
        return {}
    # Redis's modules are imported here, by what reads Redis: the other client commands need none.
    import redis  # noqa: PLC0415

    from ..broker.redis_server import connect  # noqa: PLC0415
    from ..broker.tallies import TallyBoard  # noqa: PLC0415
    from ..verifier.node_keys import follow_redis  # noqa: PLC0415
    from ..verifier.tally import (  # noqa: PLC0415
        AGREE,
        LOOK_PAGE,
        LOOK_PAGES,
        observer_histories,
        observer_keys,
        read_tallies,
    )

    keys = observer_keys(config)
    if not any(keys.values()):  # no key to check a count with (an admin away from the key directory)
        return {}
    counts: dict[str, Snapshot] = {}
    try:
        client = connect(config.redis_access("admin"), timeout=REDIS_TIMEOUT)
    except VledgerError as e:
        log.info("no observers' counts read (%s): the resources ledgers are replayed", e)
        return {}
    try:
        histories = observer_histories(keys, follow_redis(config, client))
        board = TallyBoard(client, stream_max_len=config.observers.tally_stream_max_len)
        for ledger in ledgers:
            report = read_tallies(board, ledger, keys, histories, pages=LOOK_PAGES, page=LOOK_PAGE)
            if report.verdict.status == AGREE and report.compared:
                counts[ledger] = next(iter(report.compared.values()))
    except (redis.exceptions.RedisError, VledgerError) as e:
        log.info("the observers' counts could not be read (%s): the other resources ledgers are replayed", e)
    finally:
        client.close()
    return counts


def holdings(session: Session, account: str) -> list[Holding]:
    """What ``account`` holds on every resources ledger of the cluster, in ledger order."""
    ledgers = [
        ledger
        for entry in session.ledgers()
        if entry.get("type") == ResourcesState.type_name and isinstance(ledger := entry.get("ledger"), str)
    ]
    counts = agreed_counts(session.config, ledgers)
    found = []
    for ledger in ledgers:
        held = holding_on(session, ledger, account, counts.get(ledger))
        if held is not None:
            found.append(held)
    return found


def checked_holdings(session: Session, account: str) -> list[Holding] | None:
    """As :func:`holdings`; None, with a warning on stderr, when a ledger could not be read or
    failed its checks: an account command goes on rather than wait for every resources ledger's
    home, and what it changed is never reported as a failure for a read beside it."""
    try:
        return holdings(session, account)
    except VledgerError as e:
        print(
            f"vledger: warning: could not read what the name {account} holds on the resources ledgers ({e})",
            file=sys.stderr,
        )
        return None


def holdings_text(account: str, held: list[Holding]) -> str:
    return f"the name {account} holds {'; '.join(h.text() for h in held)}"
