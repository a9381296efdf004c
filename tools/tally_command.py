"""``vledger tally LEDGER --config FILE``: every observer's latest signed tally, checked, and whether they agree.

Everything comes from the cluster's Redis (broker/tallies.py) and key directory: for each
observer of the configuration, its latest snapshot of the ledger, its signature checked
with ``<keys>/<observer>.sign.pub`` (or, once its key rotated, with its key in force at the
body's ``at_ms``, the rotations proven by the admin ledger's cache and its home's checkpoint,
docs/PROTOCOL.md 16.6) and its body read (docs/PROTOCOL.md section 11). The
observers agree when their snapshots at one height state the same head, tally and counted
hash. When their latest heights differ, their tally streams are read back, newest first, for
the newest height every observer published; with none yet, they are still counting. A
disagreement at one height is added to the ``vledger:{alerts}`` stream (``tally_mismatch``).

The ledger's head is not Redis's word: it is the largest checkpoint the home signed among the
note it wrote to Redis (``vledger:{<ledger>}:checkpoint``) and its witnesses' cosigned notes,
each signature verified with the home's (or, stating an epoch >= 2, the standby's)
``<node>.sign.pub`` from the key directory, the keys the observers' tallies are checked with.
An observer whose latest valid snapshot counts fewer records than that checkpoint holds, and
was signed more than ``--stale-after`` seconds ago, is **stale**: stuck, or far behind, so its
agreement is at a height the ledger left behind (docs/PROTOCOL.md 11.4).

Exit codes: 0 every signature verifies and the observers agree; 1 a bad or missing
signature, a malformed snapshot, a disagreement, no such ledger (``no_such_ledger``), or
Redis unreachable; 2 usage; 3 still
counting (an observer has published nothing yet, or no height is common to all), so that
a script can wait with ``until vledger tally L --config F >/dev/null; do sleep 1; done``;
4 an observer is stale or ahead of the checkpoint, the agreement is old and behind it, or they
agree but no checkpoint verified (and nothing of exit 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from typing import Any

import redis

from ..broker.redis_server import connect
from ..broker.replication import ReplicationLedger
from ..broker.signing import load_verify_key, newest_witness_keys, signing_key_paths
from ..broker.tallies import TallyBoard
from ..config.cluster import ClusterConfig, load_cluster
from ..config.settings import PROTOCOL_LIMITS
from ..ingest.key_chains import KeyChains, StreamRows
from ..node.cosigning import (
    GatheredCheckpoint,
    distinct_witnesses,
    gather,
    needed_witnesses,
    quorum_fresh_ms,
    quorum_since_ms,
)
from ..node.currency import minor_unit_digits
from ..node.epoch import epoch_claim
from ..node.errors import (
    BadEpochError,
    NoSuchLedgerError,
    RedisServerError,
    UsageError,
    VledgerError,
)
from ..node.json_values import jsonable
from ..node.key_rotation import KeyChain
from ..node.ledger import LedgerRules
from ..node.note import Checkpoint, VerifierKey, parse_checkpoint, parse_note, verify_checkpoint, witness_groups
from ..node.outside import outside_witnesses
from ..node.record import decode_record
from ..node.tally_body import STALE_AFTER_MS, Snapshot
from ..node.times import time_text
from ..node.tree import Frontier, leaf_hash
from ..node.witness import home_key
from ..verifier.node_keys import follow_redis
from ..verifier.tally import (
    AGREE,
    EXIT_OK,
    MISMATCH,
    TALLY_RECOUNT,
    Checked,
    LedgerHead,
    TallyReport,
    agreeing_groups,
    agreement_behind,
    ahead_observers,
    head_stale,
    majority,
    mismatch_alert,
    observer_histories,
    observer_keys,
    open_recounts,
    read_tallies,
    stale_observers,
    with_recounts,
)
from .args import config_file
from .client_payloads import money_text

REDIS_TIMEOUT = 2.0
log = logging.getLogger(__name__)
# A note that verified: its head, its checkpoint, and the trusted witnesses' lines that verified.
_Verified = tuple[LedgerHead, Checkpoint, GatheredCheckpoint | None]


def raise_mismatch(replication: ReplicationLedger, report: TallyReport) -> str:
    """Add the report's disagreement to the alerts stream; the alert's id."""
    return replication.alert(mismatch_alert(report.ledger, report.verdict, report.compared))


# --- what it prints --------------------------------------------------------------------------------


def snapshot_json(snapshot: Snapshot) -> dict[str, Any]:
    """A snapshot for scripts: the tally exactly as signed; a charity's says its amounts are minor units."""
    shown = {
        "height": snapshot.height,
        "head": snapshot.head.hex(),
        "tally": jsonable(snapshot.tally),
        "counted": snapshot.counted.hex(),
        "at_ms": snapshot.at_ms,
    }
    if snapshot.tally.get("type") == "charity":
        currency = snapshot.tally.get("currency")
        digits = minor_unit_digits(currency)  # None: not an ISO 4217 code with a minor unit
        shown["amounts"] = {"unit": "minor", "currency": currency, "per_unit": None if digits is None else 10**digits}
    return shown


def _signature(checked: Checked | None) -> str:
    if checked is None:
        return "none"
    return "ok" if checked.ok else "bad"


def head_json(head: LedgerHead | None) -> dict[str, Any] | None:
    if head is None:
        return None
    return {
        "size": head.size,
        "signer": head.signer,
        "problem": head.problem,
        "since_ms": head.since_ms,
        "fresh_ms": head.fresh_ms,
    }


def report_json(report: TallyReport) -> dict[str, Any]:
    return {
        "ledger": report.ledger,
        "observers": [
            {
                "observer": t.observer,
                "entry": None if t.checked is None else t.checked.published.entry_id,
                "signature": _signature(t.checked),
                "error": _error(t.checked),
                "stale": t.observer in report.stale,
                "ahead": t.observer in report.ahead,
                "snapshot": None
                if t.checked is None or t.checked.snapshot is None
                else snapshot_json(t.checked.snapshot),
            }
            for t in report.observers
        ],
        "head": head_json(report.head),
        "stale": list(report.stale),
        "ahead": list(report.ahead),
        "behind": report.behind,
        "head_stale": report.head_stale,
        "verdict": report.verdict.json(),
        "compared": {name: snapshot_json(snapshot) for name, snapshot in report.compared.items()},
        "problems": [
            {"observer": c.published.observer, "entry": c.published.entry_id, "error": _error(c)}
            for c in report.older
            if not c.ok
        ],
        "alert": report.alert,
        "ok": report.exit_code == EXIT_OK,
    }


def _error(checked: Checked | None) -> dict[str, str] | None:
    if checked is None or checked.problem is None:
        return None
    return {"code": checked.problem.code, "message": checked.problem.message}


# A charity tally's amounts (PROTOCOL 11.2), in minor units; people read them in the currency.
MONEY_KEYS = frozenset(("donated", "disbursed", "balance"))


def tally_lines(tally: dict[str, Any], indent: str = "  ") -> list[str]:
    """A tally map for people: one line per key, maps compact (choices and their counts, funds, balances);
    a charity's amounts in its currency ("2,250.00 SAR", "225,000 JPY"), never in minor units
    unless its code has no ISO 4217 exponent (node/currency.py), when they say so."""
    currency = tally.get("currency") if tally.get("type") == "charity" else None
    lines = []
    for key, value in tally.items():
        if key == "type":
            continue
        if isinstance(value, dict):
            text = ", ".join(f"{k} {_compact(v, currency)}" for k, v in value.items()) or "none"
        else:
            text = _compact(value, currency, key)
        lines.append(f"{indent}{key}: {text}")
    return lines


def _compact(value: Any, currency: Any = None, key: str = "") -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        if isinstance(currency, str) and key in MONEY_KEYS:
            return money_text(value, currency)
        return f"{value:,}"
    if isinstance(value, str):
        return value
    if isinstance(value, dict):  # a fund's totals: "(donated 19.00 SAR, disbursed 9.50 SAR, donations 3, ...)"
        return "(" + ", ".join(f"{k} {_compact(v, currency, k)}" for k, v in value.items()) + ")"
    return json.dumps(jsonable(value), ensure_ascii=False, separators=(",", ":"))


def report_lines(report: TallyReport) -> list[str]:
    width = max((len(t.observer) for t in report.observers), default=0)
    lines = [f"{report.ledger}: {len(report.observers)} observers"]
    for t in report.observers:
        if t.checked is None:
            lines.append(f"  {t.observer:<{width}}  no tally published yet")
        elif t.checked.snapshot is None:
            assert t.checked.problem is not None
            published = t.checked.published
            lines.append(
                f"  {t.observer:<{width}}  height {published.height}  entry {published.entry_id}  "
                f"BAD [{t.checked.problem.code}]: {t.checked.problem.message}"
            )
        else:
            s = t.checked.snapshot
            mark = "  STALE" if t.observer in report.stale else "  AHEAD" if t.observer in report.ahead else ""
            lines.append(
                f"  {t.observer:<{width}}  height {s.height}  head {s.head.hex()[:16]}…  "
                f"at {time_text(s.at_ms)}  signature OK{mark}"
            )
    for checked in report.older:
        if not checked.ok:
            assert checked.problem is not None
            p = checked.published
            lines.append(f"  {p.observer}: older entry {p.entry_id} (height {p.height}) BAD [{checked.problem.code}]")
    verdict = report.verdict
    if verdict.status == AGREE:
        first = next(iter(report.compared.values()))
        lines.append(f"agree at height {verdict.height} (head {first.head.hex()[:16]}…):")
        lines += tally_lines(first.tally)
        lines.append(f"  counted: {first.counted.hex()}")
    elif verdict.status == MISMATCH:
        if verdict.recount:
            lines.append(
                f"MISMATCH: the verifier's own count of the same records contradicts the tally of "
                f"{', '.join(verdict.recount)} (its open {TALLY_RECOUNT} alert: `vledger alerts` shows it)"
            )
        if len(report.compared) > 1 and set(verdict.differing) - set(verdict.recount):
            lines.append(f"MISMATCH at height {verdict.height}: {_mismatch_text(report)}")
        for name, snapshot in report.compared.items():
            lines.append(f"  {name}: counted {snapshot.counted.hex()[:16]}…")
            lines += tally_lines(snapshot.tally, "    ")
        if report.alert is not None:
            lines.append(f"alert {report.alert} added to the alerts stream")
    else:
        lines.append("still counting: no height that every observer has published a tally at yet")
    lines += _head_lines(report)
    return lines


def _mismatch_text(report: TallyReport) -> str:
    """Who disagrees, naming no observer the reference: the minority against the largest agreeing
    group, or, when no group is larger (two observers), every observer compared."""
    differing = ", ".join(report.verdict.differing)
    agreeing = majority(agreeing_groups(report.compared, report.compared))
    if agreeing:
        return f"{differing} differ from {', '.join(agreeing)}"
    return f"{differing} differ, and no count is signed by more observers than another"


def _head_lines(report: TallyReport) -> list[str]:
    head = report.head
    if head is None:
        return []
    if head.size is None:
        return [f"ledger head not checked: {head.problem}; the agreement may be at a height the ledger left behind"]
    lines = [f"ledger head: a checkpoint of {head.size:,} records, signed by {head.signer} (verified)"]
    if head.fresh_ms is not None:
        ago = "" if report.judged_at_ms is None else f", {(report.judged_at_ms - head.fresh_ms) // 1000:,} s ago"
        lines.append(f"  a majority of its witnesses last vouched for it at {time_text(head.fresh_ms)}{ago}")
    elif head.needed:
        lines.append(f"  fewer than {head.needed} of the trusted witnesses vouched for it")
    if report.head_stale:
        lines.append(
            "STALE: no majority of the witnesses vouched for this head within the cluster's recosign interval "
            "and --stale-after (they cosign even a quiet ledger's checkpoint again): this is an old view, and "
            "the ledger may have moved on"
        )
    for name in report.stale:
        lines.append(
            f"STALE: {name} has signed nothing past the checkpoint's {head.size:,} records for a while: "
            "it is stuck or far behind, and its tally is not the ledger's"
        )
    for name in report.ahead:
        lines.append(
            f"AHEAD: {name} claims to have counted past the checkpoint's {head.size:,} records: no checkpoint "
            "shows those records, so its tally cannot be checked (a lying observer, or a home whose newest "
            "checkpoint has not reached Redis)"
        )
    if report.behind:
        lines.append(
            f"BEHIND: the observers agree only at height {report.verdict.height}, which the checkpoint's "
            f"{head.size:,} records left behind, on tallies signed more than --stale-after ago, dated ahead "
            "of this computer's clock, or behind a checkpoint witnesses cosigned more than --stale-after ago"
        )
    return lines


# --- the command -----------------------------------------------------------------------------------


def ledger_head(config: ClusterConfig, client: Any, ledger: str) -> LedgerHead:
    """The ledger's head: the largest checkpoint its home signed, among the note the home wrote
    to Redis (``vledger:{<ledger>}:checkpoint``) and those its witnesses cosigned (``:cosig``),
    each verified with the home's checkpoint key from the key directory (or its standby's, after
    a handover, stating an epoch >= 2): the height it states is the home's signed word, not
    Redis's, and an ingest user writing back an older note, or junk, moves it back no further
    than the witnesses' latest. Redis errors pass."""
    replication = ReplicationLedger(client)
    note = replication.checkpoints([ledger]).get(ledger)  # none while its key is of another type
    notes = [
        *([bytes(note)] if note else []),
        *replication.cosignatures(ledger).values(),
        *replication.outside_cosignatures(ledger).values(),
    ]
    if not notes:
        return LedgerHead(None, problem="no checkpoint of the ledger in Redis yet")
    signers = [config.home_of(ledger)]
    standby = config.standby_of(ledger)
    if standby is not None:
        signers.append(standby)
    problems: list[str] = []
    witnesses = list(newest_witness_keys(config).values())
    chain = _RedisChain(replication, ledger)

    def verified_heads(trusted: list[VerifierKey]) -> list[_Verified | None]:
        return [
            _verified_head(config, ledger, n, [s.name for s in signers], standby, trusted, problems, chain)
            for n in notes
        ]

    heads = verified_heads(witnesses)
    verified = [head for head in heads if head is not None]
    if verified:
        best = max(verified, key=lambda head: head[0].size or 0)
        # The outside witnesses the genesis lists are trusted too (11.4, as the gateway and the
        # pages count them), once the genesis the stream holds is proven in the head's tree.
        outside = _proven_outside(replication, config.name, ledger, best[1])
        if outside:
            witnesses = [*witnesses, *outside]
            heads = verified_heads(witnesses)
            verified = [head for head in heads if head is not None]
        head = best[0]
        # A witness that cosigned a tree at least this large at T saw this one by T (append-only):
        # each witness's oldest such T, and the time by which a majority of the trusted witnesses
        # had cosigned. Each one's newest T on any checkpoint of this view (none is larger), and
        # since when a majority of them have vouched for it (a quiet ledger's witnesses cosign it
        # again, PROTOCOL 10.7: a frozen view's time ages; a head just signed is judged by the
        # checkpoint before it, which they cosigned, so an honest busy ledger is never stale).
        # Per witness, not per name: names sharing a key are one witness (13.5 step 1), and the
        # name a note's line of it carries may differ from note to note (review r13, 9).
        group = witness_groups(witnesses)
        times: dict[str, int] = {}
        newest: dict[str, int] = {}
        for one, _, gathered in verified:
            if gathered is None:
                continue
            if (one.size or 0) >= (head.size or 0):
                for name, at_ms in gathered.cosigned_ms.items():
                    witness = group.get(name, name)
                    times[witness] = min(at_ms, times.get(witness, at_ms))
            for name, at_ms in gathered.vouched_ms.items():
                witness = group.get(name, name)
                newest[witness] = max(at_ms, newest.get(witness, at_ms))
        needed = needed_witnesses(distinct_witnesses(witnesses))
        head = replace(
            head,
            since_ms=quorum_since_ms(times.values(), needed),
            fresh_ms=quorum_fresh_ms(newest.values(), needed),
            needed=needed,
        )
        # A larger note that no key file verifies (the home's newer key after a ledger.rekey, or
        # junk) leaves the head uncertain upward: an observer counting past it may be right.
        larger = any(
            h is None and (_claimed_size(n) or 0) > (head.size or 0) for h, n in zip(heads, notes, strict=True)
        )
        return replace(head, larger_unverified=larger)
    return LedgerHead(None, problem="no checkpoint in Redis verifies (" + "; ".join(dict.fromkeys(problems)) + ")")


def _proven_outside(
    replication: ReplicationLedger, cluster: str, ledger: str, head: Checkpoint
) -> tuple[VerifierKey, ...]:
    """The outside witnesses (13.9) the genesis in the Redis stream lists, once that genesis is
    proven to be the one of ``head``'s tree: the stream's records up to its size make its root.
    Anyone with the stream's password could write a genesis listing witnesses of their own,
    which would then keep a frozen view fresh; so one not proven (a stream trimmed or forged, a
    head larger than the stream) lists none, and the cluster's witnesses alone judge the head;
    nor does one that names an outside witness as one of ``cluster``'s witnesses (13.9).
    Reading the stream only when its genesis lists some keeps the common case one read."""
    rows = StreamRows(replication)
    try:
        if outside_witnesses(ledger, rows.rules(ledger).rules, cluster) is None:
            return ()
        # The list counted is decoded from the very genesis bytes hashed below: a stream swapped
        # between two reads would otherwise lend a forged genesis' witnesses the real root.
        listed = None
        tree = Frontier()
        for height, data in rows.range_raw(ledger, 0, head.size):
            if height == 0:
                listed = outside_witnesses(ledger, genesis_rules(data).rules, cluster)
            tree.append(leaf_hash(data))
    except VledgerError as e:
        log.info("the outside witnesses of %s are not counted: %s", ledger, e)
        return ()
    if tree.size != head.size or tree.root() != head.root:
        log.warning("the Redis stream of %s is not the head's tree: its outside witnesses are not counted", ledger)
        return ()
    return listed.keys if listed is not None else ()


def _claimed_size(note: bytes) -> int | None:
    """The size a checkpoint note states, unverified (None: not a checkpoint note)."""
    try:
        return parse_checkpoint(parse_note(note).text).size
    except (VledgerError, ValueError):
        return None


def _verified_head(
    config: ClusterConfig,
    ledger: str,
    note: bytes,
    signers: list[str],
    standby: Any,
    witnesses: list[VerifierKey],
    problems: list[str],
    chain: _RedisChain | None = None,
) -> _Verified | None:
    """``note``'s size when one of ``signers`` signed it (the standby only with an epoch line
    >= 2, PROTOCOL 10.9: its key alone proves no handover), its checkpoint, and the note with the cosignatures of
    the ``witnesses`` that verified (None: no line verified; the caller takes the majority's times
    over every note at least as large); else None, the reasons added to ``problems``."""
    for i, name in enumerate(signers):
        try:
            key = home_key(config.name, ledger, load_verify_key(signing_key_paths(config.keys_dir, name)[1]).raw)
            if i == 0 and chain is not None:  # the key in force at the note's size (13.8)
                key = chain.key_for(note, key)
            checkpoint = verify_checkpoint(note, key).checkpoint
            if standby is not None and name == standby.name and epoch_claim(checkpoint)[0] < 2:
                raise BadEpochError("signed by the standby's key without an epoch line >= 2")
            cosigned = gather([note], key, key.name, witnesses)
            return LedgerHead(checkpoint.size, name), checkpoint, cosigned[0] if cosigned else None
        except VledgerError as e:
            problems.append(f"{name}'s key: {e.code}")
    return None


class _RedisChain:
    """The ledger's checkpoint key chain (13.8) from the records the Redis stream holds (read
    once, at the first note: only a genesis that lists ``checkpoint_key`` makes it scan them):
    after ``vledger ledger rotate-key`` the home signs with a key no ``<home>.sign.pub`` holds,
    and every run exited 4 (outsider23 F4) while the rotation record proves that key from the
    genesis; and the retired key signs nothing past its rotation. The chain must start at the
    key-directory key, the operator's trust, which the genesis must pin; a stream trimmed past
    the genesis proves nothing and leaves that key alone."""

    def __init__(self, replication: ReplicationLedger, ledger: str) -> None:
        self.replication = replication
        self.ledger = ledger
        self._chain: KeyChain | None = None
        self._read = False

    def key_for(self, note: bytes, home: VerifierKey) -> VerifierKey:
        """The key in force at ``note``'s claimed size along a chain starting at ``home``; else ``home``."""
        size = _claimed_size(note)
        if size is None:
            return home
        if not self._read:
            self._read = True
            try:
                self._chain = KeyChains(StreamRows(self.replication), lambda ledger: None).stored(self.ledger)
            except VledgerError:
                self._chain = None
        chain = self._chain
        if chain is None or chain.keys[0].public_key != home.public_key:
            return home
        return chain.key_for_size(size)


def genesis_rules(data: bytes) -> LedgerRules:
    """The rules a genesis record's bytes state."""
    return LedgerRules.from_genesis(decode_record(data, PROTOCOL_LIMITS).content, PROTOCOL_LIMITS)


def tally_report(
    config: ClusterConfig,
    ledger: str,
    client: Any,
    now_ms: int | None = None,
    stale_after_ms: int = STALE_AFTER_MS,
) -> TallyReport:
    """Read, check and compare; a mismatch is added to the alerts stream (Redis errors pass);
    observers behind the ledger's verified checkpoint for more than ``stale_after_ms`` are stale.

    Raises NoSuchLedgerError when no observer published a tally of ``ledger`` and no home
    node announced it (``vledger:{ledgers}``): a misspelt name is not "still counting".
    """
    keys = observer_keys(config)
    # An observer whose key rotated signs with its newest generation: proven on the admin ledger (16.6).
    histories = observer_histories(keys, follow_redis(config, client))
    board = TallyBoard(client, stream_max_len=config.observers.tally_stream_max_len)
    report = read_tallies(board, ledger, keys, histories)
    silent = all(t.checked is None for t in report.observers)
    if silent and ledger not in ReplicationLedger(client).ledgers_or_streams():
        raise NoSuchLedgerError(f"no ledger {ledger!r} in the cluster")
    if report.verdict.status == MISMATCH:
        report = replace(report, alert=raise_mismatch(ReplicationLedger(client), report))
    # One observer agrees with itself: a verifier's recount that contradicts it is a mismatch (o21 F4).
    report = with_recounts(report, open_recounts(client, config, ledger))
    # The head is read after the tallies, and once more when someone is ahead of it: an honest
    # observer is ahead only of a checkpoint the home had not yet written to Redis.
    head = ledger_head(config, client, ledger)
    if ahead_observers(report.observers, head):
        head = ledger_head(config, client, ledger)
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    return replace(
        report,
        head=head,
        stale=stale_observers(report.observers, head, now, stale_after_ms),
        ahead=ahead_observers(report.observers, head),
        behind=agreement_behind(report.verdict, report.compared, report.observers, head, now, stale_after_ms),
        head_stale=head_stale(head, now, stale_after_ms, config.replication.recosign_interval_ms),
        judged_at_ms=now,
    )


def cmd_tally(args: argparse.Namespace) -> int:
    config = load_cluster(config_file(args.config))
    if not config.nodes_of("observer"):
        raise UsageError(f"{config.path} names no observer node")
    client = connect(config.redis_access("admin"), timeout=REDIS_TIMEOUT)
    try:
        report = tally_report(config, args.ledger, client, stale_after_ms=round(args.stale_after * 1000))
    except redis.exceptions.RedisError as e:
        raise RedisServerError(f"cannot read the tallies from Redis: {e}") from e
    finally:
        client.close()
    if args.json:
        print(json.dumps(report_json(report), ensure_ascii=False))
    else:
        print("\n".join(report_lines(report)))
    return report.exit_code
