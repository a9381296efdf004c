"""The Redis side of replication: one stream per ledger, and who holds how much of it.

Keys (``vledger`` is the namespace; a ledger's keys carry it as their hash tag, the others
their group's, so that a script touches one Redis Cluster slot: broker/redis_keys.py):

* ``vledger:{<ledger>}:chain``: a stream of the ledger's records, entry id ``<height>-1``
  (Redis refuses the id ``0-0``, which genesis would take with ``-0``), fields ``record``
  (the record's bytes, docs/PROTOCOL.md section 2) and ``origin`` (the home node).
  Redis refuses an id at or below the top one, so a replayed height is never
  added twice. Trimmed to about ``stream_max_len`` entries; older records come from the
  home node's ``range`` command.
* ``vledger:{ledgers}``: a hash, ledger -> its home node.
* ``vledger:{ledgers}:epochs``: a hash, ledger -> ``"<epoch> <home>"`` of its latest handover (10.9);
  written by promotions only (:meth:`ReplicationLedger.promote` replaces it when of another type).
* ``vledger:{<ledger>}:checkpoint``: the home's latest checkpoint (docs/PROTOCOL.md
  section 10.7: a signed note, its exact bytes); the last entry of each batch in the stream
  carries its checkpoint too, in the field ``checkpoint``.
* ``vledger:{<ledger>}:cosig:<witness>``: the latest checkpoint that witness cosigned, as a
  signed note with the home's signature line and the witness's cosignature line; only that
  witness's Redis user writes it, so no witness can delete or set back another's (the older
  layout's hash ``vledger:{<ledger>}:cosig``, every witness's field in one key any witness
  could HDEL, is no longer read); and ``vledger:cosigned`` (a pub/sub channel):
  ``<witness> <ledger> <size>`` on every new one. Only a hint for speed: whoever counts
  cosignatures verifies each one itself.
* ``vledger:{<ledger>}:epoch_proof``: a home of an epoch from 2 on keeps there its first
  checkpoint of that epoch a witness cosigned (10.9); only ingest users write it, so a witness
  that empties ``cosig`` does not hide a handover from the home it replaced.
* ``vledger:{evidence}:<witness>``: a hash, ``<witness>|<ledger>|<size>`` -> JSON of the
  home's signed checkpoint that contradicts that witness's copy, kept verbatim; only that
  witness's Redis user writes it (``vledger:{evidence}``, the older layout's, the admin's).
* ``vledger:{<ledger>}:held:<node>``: the height up to which node ``<node>`` holds the
  ledger, every record from genesis on verified; only that node's Redis user writes it
  (broker/redis_acl.py). A hint (``vledger repl status``), never a proof: a node may claim
  what it does not hold. A node stores a ledger strictly in order and never with a gap, so
  "node N holds record h" is exactly "held[N] >= h", and the replication count of record h
  is the number of nodes whose held height is >= h. Why not a set of holders per record
  (``SADD``): it answers the same question exactly, is as idempotent (a report only ever
  raises the height, a redelivery changes nothing; at start and each heartbeat the node sets
  it to its store's head, so a value written by hand lasts a heartbeat), and costs one key per
  node instead of one per record and node. (The older layout's hash ``vledger:{<ledger>}:held``, every node's
  field in one key any node could write, is no longer read.)
* ``vledger:held`` (a pub/sub channel): ``<node> <ledger> <height>`` on every change.
* ``vledger:{alerts}:log:<node>``: a stream of the findings node ``<node>`` raised (a forged
  or conflicting record, a fork), and ``vledger:{alerts}:open:<node>``, a hash of those not
  resolved yet: field ``<node>|<ledger>|<what>`` (the node it is about), value the alert as
  JSON with its stream id. Only that node's Redis user writes them (broker/redis_acl.py: ACLs
  grant keys, not fields, so the keys are per raiser); ``vledger:{alerts}`` and
  ``vledger:{alerts}:open`` are the admin's (``vledger tally``, and the older layout's).
  Readers take the union and name each alert's raiser. Who resolves which
  (docs/PROTOCOL.md 10.5): a follower its own refusals once the true records are stored, and its
  alerts about its own copy (also an earlier run's) once a checkpoint vouches for it, a
  witness its ``cosigned_not_held`` once its store holds that checkpoint again, a
  home its alert against the stream once it rewrote it, the verifier a copy's chain alerts
  after a clean sweep and the stream's after a clean re-check; an operator the rest
  (``vledger alerts resolve``, from every raiser's hash), noting each one's stream id in
  ``vledger:{alerts}:resolved`` (field: ``<raiser>|<key>``), which only the admin's user may write. A
  raiser may still delete its own alerts, so the verifier opens again, in its own hash, an
  alert only an operator resolves (operator_resolves) that vanished without that note. And a node keeps its open alerts
  in its data directory too (broker/alert_journal.py), and puts back what Redis lost of them
  (:meth:`ReplicationLedger.reassert`).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis

from ..node.errors import RecordError, RedisServerError, StoreDamagedError, StoreError
from ..node.json_values import parse_json
from . import redis_functions
from .alert_journal import AlertJournal
from .redis_functions import RedisFunction
from .redis_keys import (
    NAMESPACE,
    glob_escape,
    group_key,
    is_ledger_name,
    ledger_key,
    refused_login_message,
    wrong_type_message,
)
from .redis_pipeline import Command, pipelined
from .redis_server import shown_url

MAX_HEIGHT = 2**63 - 1  # the largest height a record may have (a store's integer)

log = logging.getLogger(__name__)

T = TypeVar("T")

ALERTS_MAX_LEN = 100_000
STORE_CONTRADICTS = "store_contradicts_checkpoint"
# A witness's store no longer holds a checkpoint it cosigned. Not the follower's
# store_contradicts_checkpoint: a home checkpoint that vouches for the copy (what resolves the
# follower's) says nothing of the tree this witness cosigned, and a copy refilled from a home
# that signed another tree at that size is vouched for while the witness still holds the
# home's signature on the first (review 11 C). Only the witness resolves it (ingest/witness.py).
COSIGNED_NOT_HELD = "cosigned_not_held"
# The verifier's one alert per raiser that counts the operator-only alerts deleted from that
# raiser's hash past the ones it puts back one by one (verifier/checks.py PUT_BACK_CAP).
ALERTS_DELETED = "alerts_deleted"
# The alerts only an operator resolves (PROTOCOL 10.5): a signed contradiction, a node that
# accused itself of a store its own checkpoints contradict, a witness's cosignature or a file
# that is not what it should be, observers that disagree or are never compared.
# A home found its ledger's field of ``{ledgers}`` naming another node and put it back: raised by
# that home against ``redis`` (outsider43 M1: an ingest password re-homed another home's ledger).
HOME_REWRITTEN = "home_rewritten"

OPERATOR_RESOLVED = frozenset(
    (
        "equivocation",
        "signed_fork",
        "admin_cache_conflict",  # the copy is rewritten at once: the alert is the evidence
        "retired_key",
        STORE_CONTRADICTS,  # but a follower's about its own copy: see operator_resolves
        "bad_cosignature",
        "witness_refused",
        "bad_blob",
        "tally_mismatch",
        "tally_uncompared",
        "tally_recount",
        "failback_unconfigured",  # a handover of epoch 3+ no cluster file allows: perhaps a thief's
        HOME_REWRITTEN,  # the field is put back at once: the alert is the evidence
        ALERTS_DELETED,
    )
)


RECORD_CONFLICT = "record_conflict"
# A raiser's open alerts key of another type than a hash, or past OPEN_ALERTS_CAP fields (PROTOCOL
# 10.5): shown by readers in its alerts' place until it is a hash within the cap again (that node
# writes one of another type anew at its next alert) or an operator deletes it.
ALERT_KEYS_DAMAGED = "alert_keys_damaged"
# The most fields a reader reads of one raiser's open hash (PROTOCOL 10.5). A node holds one
# open alert per ledger and kind it has a cause for, far fewer on any cluster we run; but its own
# Redis user may fill its hash with any number, and every reader (the gateway each second,
# status, verify --cluster, the verifier) read them all: 1M fields (60 MB) took 21-26 s and
# 7-9 s of CPU each time (review r24 F5). Past this a hash is shown as one ALERT_KEYS_DAMAGED
# alert, its alerts unread; a reader takes one field more, to know (a hash sized first could grow
# before it was read: r25 F4). 10,000 alerts (2 MB in Redis) read in 0.08-0.1 s of CPU.
OPEN_ALERTS_CAP = 10_000
_PAST_CAP = f"more than the {OPEN_ALERTS_CAP} open alerts a reader reads"
# The most bytes (Redis's MEMORY USAGE) of one raiser's open hash a reader reads: the field cap
# alone let 10,000 fields of 50 KB through, 500 MB that each reader read whole (5.7-8.7 s and
# 1.5 GB a read, review r26). 10,000 alerts are some 2 MB: past this a hash is shown as one past
# the field cap is, unread.
OPEN_ALERTS_BYTES = 8 * 2**20
# One raiser's open hash is sized and read in one step, the library's read_open (FCALL_RO,
# broker/functions.lua): sized in one round trip and read in the next, a hash its raiser grew
# between the two (an O(1) RENAME toggled in a loop; MEMORY USAGE of a missing key is nil) was
# read past the byte cap, 500 MB a read (review r29).
# A shared key (``{ledgers}``, ``{ledgers}:epochs``) of another type: raised by the verifier
# against ``redis``, the key's name as its ``ledger`` (PROTOCOL 10.5).
REDIS_KEY_DAMAGED = "redis_key_damaged"


# Fields of ``{ledgers}`` that name no ledger (no ledger's name starts with "~", PROTOCOL 10.10):
# the token ("<home> <ms>") of the last replacement of the hash made of another type, and each
# home's copy of the token it named its ledgers again for (name_homes).
_MARK = "~"
REPLACED_FIELD = _MARK + "replaced"


def _relisted_field(home: str) -> str:
    return f"{_MARK}relisted:{home}"


def wrong_type(error: Exception) -> bool:
    return "WRONGTYPE" in str(error)


def wrong_typed_keys(client: Any, keys: Sequence[str]) -> dict[str, Exception]:
    """Those of the string ``keys`` that are of another type, each with its WRONGTYPE error: a
    reader's MGET reads them as none, so their owner finds them only so (any other error raises)."""
    if not keys:
        return {}
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
    found = {}
    for key, value in zip(keys, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(value, Exception):
            if not wrong_type(value):
                raise value
            found[key] = value
    return found


class LastRead:
    """A read of a shared hash that other nodes' Redis users may write (``{ledgers}:epochs``):
    while the key is of another type (WRONGTYPE), what it held at the last read instead, with one
    WARNING, as the verifier does (``redis_key_damaged``). Failing the whole caller made every
    home's heartbeat stop at its first read, for good (review17 2). Other errors pass through."""

    def __init__(self, name: str, read: Callable[[], dict[str, Any]]) -> None:
        self.name = name
        self._read = read
        self.last: dict[str, Any] = {}
        self.damaged = False

    def __call__(self) -> dict[str, Any]:
        try:
            found = self._read()
        except redis.exceptions.ResponseError as e:
            if not wrong_type(e):
                raise
            if not self.damaged:
                log.warning("Redis key %s is of another type (%s): read as it last held until it is a hash again"
                            " (a promotion replaces it, or the admin's user deletes it)", self.name, e)  # fmt: skip
            self.damaged = True
            return dict(self.last)
        self.damaged = False
        self.last = found
        return found


def operator_resolves(raiser: str | None, key: str, follows: Callable[[str, str], bool]) -> bool:
    """Whether only an operator resolves ``raiser``'s open alert ``key`` (``<node>|<ledger>|<what>``,
    PROTOCOL 10.5's table): its kind is of OPERATOR_RESOLVED, and it is not a follower's
    ``store_contradicts_checkpoint`` about its own copy of the ledger (``follows(node, ledger)``:
    a replica or observer, or the ledger's standby while another node is its home), which that
    follower resolves once a checkpoint of the home vouches for the copy again (repaired or
    restored): a follower that hid it would only hide its own blame, which it could as well
    never have raised. Or it is the verifier's ``record_conflict`` on a node's copy (one
    raiser's about another node): a follower's about a record it refused (``node`` itself) and
    a home's or the verifier's against the stream (``node`` ``redis``) resolve on their own."""
    node, _, rest = key.partition("|")
    ledger, what = rest.rpartition("|")[0], key.rpartition("|")[2]
    if what == RECORD_CONFLICT:
        return raiser is not None and node not in ("redis", raiser)
    if what not in OPERATOR_RESOLVED:
        return False
    return not (what == STORE_CONTRADICTS and raiser is not None and raiser == node and follows(node, ledger))


def copies_nothing(node: str, ledger: str) -> bool:
    """``follows`` for :func:`operator_resolves` where no node's own copy is in question."""
    return False


def operator_final(raiser: str | None, key: str) -> bool:
    """Whether an operator's resolution of ``raiser``'s alert ``key`` is final for its raiser
    even in the run that raised it (PROTOCOL 10.5): the kinds only an operator resolves (a
    follower's own ``store_contradicts_checkpoint`` too: once resolved by hand, its keeper does
    not tell it from another's), and the home's ``record_conflict`` against the stream, which
    the outbox resolves from what only its process remembers (the rewrite it began), so an
    outbox that restarted since would never resolve it, and which it raises again at the next
    entry that is not its record."""
    return operator_resolves(raiser, key, copies_nothing) or (
        key.startswith("redis|") and key.rpartition("|")[2] == RECORD_CONFLICT
    )


# What the replication paths survive and retry: Redis away, and Redis refusing (an error
# reply: out of memory at maxmemory, READONLY, NOPERM). The store has everything meanwhile.
# Per witness and ledger, how many of its newest cosigned notes Redis keeps (publish_cosignature):
# a home finds there a size a majority of the cluster's witnesses cosigned, where their newest
# notes alone, one size apart under steady writes, were never seen at one (review r32 #5).
RECENT_COSIGNATURES = 8
REDIS_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ResponseError,
)


def redis_failed(url: str, error: Exception) -> RedisServerError:
    """One of REDIS_ERRORS as a command's documented failure (``redis_server``), the server named
    with its password hidden: a traceback is no answer a script can read. A WRONGTYPE did
    answer: one key is of another type, not the server away (outsider 31, N1)."""
    if wrong_type(error):
        return RedisServerError(f"Redis at {shown_url(url)}: {wrong_type_message(error)}")
    if isinstance(error, redis.exceptions.AuthenticationError):
        return RedisServerError(f"Redis at {shown_url(url)} {refused_login_message(error)}")
    return RedisServerError(f"Redis at {shown_url(url)} does not answer: {error}")


# Entries a rewind deletes a call (functions.lua takes at most 10,000): a record is up to
# ~64 KiB, and the function holds the entries it deletes in memory.
REWIND_BATCH = 1_000

# The Lua steps (advance, set_held, resolve_up_to, promote, unpromote, append, rewind) are
# functions of broker/functions.lua, called by name (broker/redis_functions.py).


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One record as the stream holds it."""

    ledger: str
    height: int
    data: bytes
    origin: str
    checkpoint: bytes = b""  # the home's checkpoint of the size up to this record, on each batch's last


@dataclass(frozen=True, slots=True)
class Alert:
    """A finding: what failed on which node, at which ledger and height."""

    node: str
    ledger: str
    height: int
    what: str  # an error code of docs/PROTOCOL.md (bad_link, record_conflict, fork, ...)
    detail: str
    source: str = ""  # where the faulty data came from, when it came from elsewhere
    expected: str = ""
    found: str = ""
    # Only an operator resolves this one, whatever its kind says (a former home's record_conflict
    # about the tail it set aside, 10.9: its key is a follower's refusal's, which comes back while
    # its cause remains). Not a field of the alert: its raiser's journal keeps it (operator_only).
    operator_only: bool = field(default=False, compare=False)

    @property
    def key(self) -> str:
        """What identifies an open alert: one per node, ledger and kind of finding."""
        return f"{self.node}|{self.ledger}|{self.what}"

    def fields(self) -> dict[str, str]:
        return {
            "node": self.node,
            "ledger": self.ledger,
            "height": str(self.height),
            "what": self.what,
            "detail": self.detail,
            "source": self.source,
            "expected": self.expected,
            "found": self.found,
            "at_ms": str(time.time_ns() // 1_000_000),
        }


# The alert fields that are numbers (PROTOCOL 10.5), text in a raiser's stream and open hash as
# every field there: the JSON outputs give them as integers (`vledger alerts --json`, `status
# --json`, `verify --cluster --json`, /api/cluster: outsider23, o17). A raiser writes any value:
# one of more than 19 digits, no height nor time, stays its text (int() of 4,301 digits raises).
NUMERIC_ALERT_FIELDS = ("height", "at_ms")
_ALERT_NUMBER = re.compile(r"-?[0-9]{1,19}")


def numbered(alert: dict[str, Any]) -> dict[str, Any]:
    """``alert`` (an open entry or a stream entry) with its NUMERIC_ALERT_FIELDS as integers
    where they are decimal text; any other value as its raiser wrote it."""
    numbers = {
        name: int(value)
        for name in NUMERIC_ALERT_FIELDS
        if isinstance(value := alert.get(name), str) and _ALERT_NUMBER.fullmatch(value)
    }
    return {**alert, **numbers}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _json_map(raw: Any) -> dict[str, Any]:
    """An open alert's or an evidence's fields, or none for a value that is not a JSON object:
    every node's Redis user may write its own fields there, and what one wrote must not stop an
    operator listing or resolving alerts, nor the verifier reading them."""
    try:
        value = parse_json(_text(raw))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _past_bytes_problem(used: int) -> str:
    return f"{used} bytes, more than the {OPEN_ALERTS_BYTES} of open alerts a reader reads"


def _alert_id(alert: dict[str, Any]) -> str:
    found = alert.get("id", "")
    return found if isinstance(found, str) else ""


def stream_order(value: Any) -> tuple[int, int]:
    """:func:`_stream_id` of ``value``, (-1, -1) for what is no text: an open alert's ``id`` is
    what its raiser wrote, any JSON value."""
    return _stream_id(value) if isinstance(value, str) else (-1, -1)


_STREAM_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")


def _stream_id(value: str) -> tuple[int, int]:
    """A stream id as a comparable pair; (-1, -1) for one that is none. The server's clock
    makes every stream's ids, so those of two raisers' streams compare as times do."""
    found = _STREAM_ID.fullmatch(value)  # ASCII digits, 20 at most: int() takes "²" no more than 5,000 digits
    return (int(found[1]), int(found[2] or 0)) if found else (-1, -1)


def _unparsed_xrange(client: Any) -> Any:
    """A client beside ``client`` (the same connection pool) whose XRANGE answers each entry
    as Redis sends it, (id, [field, value, ...]), not as redis-py's parser makes it, a tuple
    and a dict an entry: that parser cost a replica's catch-up ~0.9 us of its GIL a record
    (CPU time, measured), half of reading a page. None for a client that is no redis.Redis."""
    if not isinstance(client, redis.Redis):
        return None
    raw = redis.Redis(connection_pool=client.connection_pool)
    raw.set_response_callback("XRANGE", lambda response, **options: response)
    return raw


def entry_id(height: int) -> str:
    return f"{height}-1"


def entry_height(key: Any) -> int:
    """The height of a stream entry id ``<height>-1``."""
    if isinstance(key, bytes):  # as Redis answers: int() takes the ASCII digits as they are
        return int(key.partition(b"-")[0])
    return int(str(key).partition("-")[0])


class ReplicationLedger:
    """Streams, holder heights and alerts on one Redis (``client`` from ``redis_server.connect``)."""

    def __init__(
        self,
        client: Any,
        namespace: str = NAMESPACE,
        *,
        stream_max_len: int = 1_000_000,
        node: str | None = None,
        raisers: Iterable[str] | None = None,
        journal: AlertJournal | None = None,
    ) -> None:
        """``node``: the node this client raises alerts and keeps evidence as, in keys of its
        own name, the only ones its Redis user may write (broker/redis_acl.py); None: the
        shared keys, which only the admin's user writes. ``raisers``: the nodes whose alerts
        and evidence are read, besides the shared keys and ``node``'s own (a process passes
        its cluster's nodes); None: every node's found in Redis (SCAN, which only the admin's
        user may run). ``journal``: where this node also keeps its open alerts, which
        :meth:`reassert` puts back into a Redis that lost them (PROTOCOL 10.5)."""
        self.client = client
        self.journal = journal
        # A raise and a reassert of one process do not interleave (the alert put back twice).
        self._alerts_lock = threading.RLock()
        self._journal_failing = False  # the last write of the alert journal failed (_journaled)
        self.namespace = namespace
        self.stream_max_len = stream_max_len
        self.node = node
        self._raisers = None if raisers is None else tuple(dict.fromkeys(raisers))
        self._advance = RedisFunction(client, "advance")
        self._set_held = RedisFunction(client, "set_held")
        self._resolve_up_to = RedisFunction(client, "resolve_up_to")
        self._rewind = RedisFunction(client, "rewind")
        self._promote = RedisFunction(client, "promote")
        self._unpromote = RedisFunction(client, "unpromote")
        self._raw = _unparsed_xrange(client)
        self._recent_refused = False  # a redis.acl from before the recent cosignatures: logged once

    # --- keys -----------------------------------------------------------------------

    # A ledger's keys share its hash tag, the cluster-wide ones their group's (broker/redis_keys.py):
    # each script and transaction below touches keys of one Redis Cluster slot.

    def stream_key(self, ledger: str) -> str:
        return ledger_key(self.namespace, ledger, "chain")

    def held_key(self, ledger: str, node: str) -> str:
        """``node``'s held height of ``ledger``: a key of its own, which only its Redis user writes."""
        return ledger_key(self.namespace, ledger, f"held:{node}")

    @property
    def ledgers_key(self) -> str:
        return group_key(self.namespace, "ledgers")

    @property
    def epochs_key(self) -> str:
        return group_key(self.namespace, "ledgers", "epochs")  # the ledgers hash's slot: one script writes both

    def checkpoint_key(self, ledger: str) -> str:
        return ledger_key(self.namespace, ledger, "checkpoint")

    def cosig_key(self, ledger: str, witness: str) -> str:
        """``witness``'s latest cosigned note of ``ledger``: a key of its own, which only its Redis user writes."""
        return ledger_key(self.namespace, ledger, f"cosig:{witness}")

    def cosig_recent_key(self, ledger: str, witness: str) -> str:
        """``witness``'s RECENT_COSIGNATURES newest cosigned notes of ``ledger``, newest first (a
        list): a key of its own, which only its Redis user writes (a node's name has no colon)."""
        return ledger_key(self.namespace, ledger, f"cosig:{witness}:recent")

    def epoch_proof_key(self, ledger: str) -> str:
        return ledger_key(self.namespace, ledger, "epoch_proof")

    def outside_key(self, ledger: str) -> str:
        return ledger_key(self.namespace, ledger, "outside")

    @property
    def cosigned_channel(self) -> str:
        return f"{self.namespace}:cosigned"

    @property
    def evidence_key(self) -> str:
        """Where this client keeps evidence: its node's own hash, or the shared one (the admin's)."""
        return self.evidence_key_of(self.node)

    def evidence_key_of(self, node: str | None) -> str:
        return group_key(self.namespace, "evidence", node or "")

    @property
    def held_channel(self) -> str:
        return f"{self.namespace}:held"

    @property
    def alerts_key(self) -> str:
        """The alerts stream this client adds to: its node's own, or the shared one (the admin's)."""
        return self.alerts_key_of(self.node)

    @property
    def open_alerts_key(self) -> str:
        """The open alerts this client raises and resolves: its node's own hash, or the shared one."""
        return self.open_alerts_key_of(self.node)

    def alerts_key_of(self, node: str | None) -> str:
        return group_key(self.namespace, "alerts", f"log:{node}" if node else "")

    def open_alerts_key_of(self, node: str | None) -> str:
        return group_key(self.namespace, "alerts", f"open:{node}" if node else "open")

    def raisers(self) -> list[str | None]:
        """Whose alert keys are read: the shared ones (None) first, then each node's."""
        if self._raisers is not None:
            nodes = [*self._raisers, *([self.node] if self.node else [])]
        else:
            prefix = self.open_alerts_key_of("x")[:-1]
            found = set()
            for pattern in (prefix, self.alerts_key_of("x")[:-1], self.evidence_key_of("x")[:-1]):
                for raw in self.client.scan_iter(match=glob_escape(pattern) + "*", count=500):
                    found.add(_text(raw)[len(pattern) :])
            nodes = sorted(found)
        return [None, *dict.fromkeys(nodes)]

    @property
    def alert_streams(self) -> list[str]:
        """Every alerts stream read (:meth:`raisers`)."""
        return [self.alerts_key_of(node) for node in self.raisers()]

    @property
    def resolved_alerts_key(self) -> str:
        return group_key(self.namespace, "alerts", "resolved")

    # --- the streams ----------------------------------------------------------------

    def add(self, records: Sequence[StreamRecord]) -> int:
        """Add records to their ledgers' streams in one round trip; returns how many were new.

        A record whose height is already in its stream (a publisher that restarted and sends
        again) is refused by Redis and skipped here: the stream keeps the first one.
        """
        if not records:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for record in records:
            pipe.xadd(
                self.stream_key(record.ledger),
                {"record": record.data, "origin": record.origin},
                id=entry_id(record.height),
                maxlen=self.stream_max_len,
                approximate=True,
            )
        for ledger, origin in {(r.ledger, r.origin) for r in records}:
            pipe.hsetnx(self.ledgers_key, ledger, origin)
        added = 0
        for result in pipe.execute(raise_on_error=False)[: len(records)]:
            if isinstance(result, redis.exceptions.ResponseError):
                if "equal or smaller" not in str(result):
                    raise result
            elif isinstance(result, Exception):
                raise result
            else:
                added += 1
        return added

    def append(self, ledger: str, origin: str, first: int, records: Sequence[bytes], checkpoint: bytes = b"") -> int:
        """Add ``records`` (heights ``first``, ``first + 1``, ...) where they continue the stream,
        atomically; returns the stream's last height afterwards. Below the last of these
        heights, the stream lacks records the caller must add first (from its store).

        ``checkpoint`` (the home's signed checkpoint whose size ends at the last record) goes
        on that record's entry, and becomes the ledger's latest (``vledger:{<ledger>}:checkpoint``)."""
        return self.append_checked(ledger, origin, first, records, checkpoint)[0]

    def append_checked(
        self,
        ledger: str,
        origin: str,
        first: int,
        records: Sequence[bytes],
        checkpoint: bytes = b"",
        *,
        held: int | None = None,
        latest: bool = True,
    ) -> tuple[int, int | None]:
        """:meth:`append`, and the first height of the run that the stream already holds with
        other bytes, or skips, or cannot take because entries were deleted from the stream's
        tail (its last id stays above them: None: none). From there the stream is not the
        caller's chain: nothing of the run above it is added, and the caller rewrites it
        (:meth:`rewind`).

        ``held``: also record, in the same round trip, that ``origin`` holds ``ledger`` up to
        that height (:meth:`advance`, whatever the append finds): a home's outbox pass told
        Redis its height in a round trip of its own after each append, which was as much of
        its process's time as the append's.

        ``latest``: ``checkpoint`` also becomes the ledger's latest; False for an older one (a
        chunk of a refill from the store), which goes on its entry only: the latest never steps
        back to a smaller tree, which readers report (``rollback``, PROTOCOL 10.5)."""
        if not records:
            return self.last_height(ledger), None
        # The home is named before its records are appended, in the same round trip: the
        # ledgers hash is cluster-wide, so no script of one ledger's slot may write it.
        keys = [self.stream_key(ledger), *([self.checkpoint_key(ledger)] if latest else [])]
        args: list[str | bytes | int] = [first, self.stream_max_len, origin, checkpoint, *records]
        for tries_left in (1, 0):
            # One round trip for the outbox's pass. A Redis that lacks the functions (new,
            # restarted without its data) ran nothing of them: the library is loaded where this
            # client may (no access control) and all is sent again, else FunctionsMissingError.
            commands: list[Command] = [
                ("HSETNX", self.ledgers_key, ledger, origin),
                redis_functions.command("append", keys, args),
            ]
            if held is not None:
                commands.append(
                    redis_functions.command(
                        "advance", [self.held_key(ledger, origin)], [origin, held, ledger, self.held_channel]
                    )
                )
            named, *replies = pipelined(self.client, commands, raise_on_error=False)
            if redis_functions.reloaded(replies, self.client):
                if not tries_left:
                    raise redis_functions.missing(replies[0])
                continue  # sent again whole: the HSETNX and what ran of it run again to the same end
            if isinstance(replies[0], redis.exceptions.ResponseError) and wrong_type(replies[0]):
                # The admin's user can SET a ledger's stream: every append of every ledger of
                # this home failed on it, taken for Redis away. The home owns the stream and
                # its store holds every record: an empty stream, which the caller fills.
                self.replace_damaged(self.stream_key(ledger), replies[0], lambda: None)
                return self.append_checked(ledger, origin, first, records, checkpoint, held=held, latest=latest)
            advanced = replies[1] if held is not None else None
            if isinstance(advanced, redis.exceptions.ResponseError) and wrong_type(advanced):
                assert held is not None
                replies[1] = self._replace_held(origin, ledger, held, advanced)
            if isinstance(named, redis.exceptions.ResponseError) and wrong_type(named):
                # Any ingest node's Redis user may make the hash a string: every append of
                # every home failed on it for good (outsider 31, N1). Its entries are homes'
                # claims the verifier does not take as proof; each home names its own again.
                write = functools.partial(self._name_home, ledger, origin)
                named = self.replace_wrong_type(self.ledgers_key, named, write)
            for reply in (named, *replies):
                if isinstance(reply, redis.exceptions.ResponseError):
                    raise reply
            last, conflict = replies[0]
            return int(last), None if int(conflict) < 0 else int(conflict)
        raise AssertionError("unreachable: the second try returns or raises")

    def rewind(self, ledger: str, height: int) -> int:
        """Delete the stream's entries from ``height`` on, so that they can be added again, and
        set back the consumer groups that read past it; returns how many were deleted.

        In calls of at most :data:`REWIND_BATCH` entries each: any ingest user may add a million
        entries to a stream, and one call over them all blocked Redis for seconds (review r31 #3).
        Between calls Redis serves everyone else."""
        deleted = 0
        while True:
            done, left = self._rewind(keys=[self.stream_key(ledger)], args=[height, REWIND_BATCH])
            deleted += int(done)
            if not int(left):
                return deleted

    def checkpoints(self, ledgers: Iterable[str] | None = None) -> dict[str, bytes]:
        """Each announced ledger's latest checkpoint (or each of ``ledgers``'), as its home wrote it
        (a signed note; unchecked); a ledger without one is left out."""
        return self.checkpoint_reads(ledgers)[0]

    def checkpoint_reads(self, ledgers: Iterable[str] | None = None) -> tuple[dict[str, bytes], dict[str, Exception]]:
        """:meth:`checkpoints`, and the checkpoint keys found of another type, each with its error:
        one such key (the admin's user can make it a hash) failed the read of every ledger's
        latest, for as long as its home took to SET it again (any error but WRONGTYPE raises)."""
        names = sorted(self.ledgers() if ledgers is None else ledgers)
        pipe = self.client.pipeline(transaction=False)
        for ledger in names:
            pipe.get(self.checkpoint_key(ledger))
        notes: dict[str, bytes] = {}
        damaged: dict[str, Exception] = {}
        for ledger, note in zip(names, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(note, Exception):
                if not wrong_type(note):
                    raise note
                damaged[self.checkpoint_key(ledger)] = note
            elif note is not None:
                notes[ledger] = bytes(note)
        if damaged:
            log.warning("Redis keys %s are of another type: read as no checkpoint", ", ".join(sorted(damaged)))
        return notes, damaged

    def set_checkpoints(self, checkpoints: dict[str, bytes]) -> dict[str, Exception]:
        """Make each note its ledger's latest checkpoint (one key per ledger, in its slot); the
        ledgers whose key this user may not write (NOPERM: ACL selectors per ledger), with the
        error, the others set all the same. Any other error raises."""
        refused: dict[str, Exception] = {}
        if checkpoints:
            pipe = self.client.pipeline(transaction=False)
            for ledger, note in checkpoints.items():
                pipe.set(self.checkpoint_key(ledger), note)
            for ledger, answer in zip(checkpoints, pipe.execute(raise_on_error=False), strict=True):
                if isinstance(answer, redis.exceptions.NoPermissionError):
                    refused[ledger] = answer
                elif isinstance(answer, Exception):
                    raise answer
        return refused

    # --- cosignatures and evidence -------------------------------------------------------

    def publish_cosignature(self, ledger: str, witness: str, size: int, note: bytes, *, recent: bool = True) -> None:
        """Make ``note`` (a checkpoint with ``witness``'s cosignature) its latest for ``ledger``,
        and, ``recent``, the newest of its RECENT_COSIGNATURES kept in :meth:`cosig_recent_key`
        (a ledger whose genesis lists outside witnesses: its home feeds them a checkpoint a
        majority of the cluster's witnesses cosigned, found there, ingest/outside_feeder.py). A
        list of another type is deleted and written again (the admin's user can SET it)."""
        recent_key = self.cosig_recent_key(ledger, witness)

        def push() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.lpush(recent_key, note)
            pipe.ltrim(recent_key, 0, RECENT_COSIGNATURES - 1)
            pipe.execute()

        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.cosig_key(ledger, witness), note)
        if recent:
            pipe.lpush(recent_key, note)
            pipe.ltrim(recent_key, 0, RECENT_COSIGNATURES - 1)
        pipe.publish(self.cosigned_channel, f"{witness} {ledger} {size}")
        # One transaction: each command runs whatever another's error, so only the list's
        # WRONGTYPE is taken apart from the rest (the note and the hint are set all the same).
        try:
            results = pipe.execute(raise_on_error=False)
        except redis.exceptions.NoPermissionError as e:
            if not recent:
                raise
            # A redis.acl written before the lists grants no LPUSH there, and Redis discards the
            # whole transaction: the newest note goes alone (its home feeds by the newest notes).
            if not self._recent_refused:
                self._recent_refused = True
                log.warning("%s: Redis refused its recent cosignatures of %s (%s): the newest alone is published"
                            " until `vledger keygen --cluster` writes redis.acl anew", witness, ledger, e)  # fmt: skip
            self.publish_cosignature(ledger, witness, size, note, recent=False)
            return
        listed = results[1:3] if recent else []
        for result in (results[0], results[-1]):
            if isinstance(result, Exception):
                raise result
        damaged = next((r for r in listed if isinstance(r, Exception)), None)
        if damaged is not None and not wrong_type(damaged):
            raise damaged
        if damaged is not None:
            self.replace_damaged(recent_key, damaged, push)

    def wrong_typed(self, keys: Sequence[str]) -> dict[str, Exception]:
        """:func:`wrong_typed_keys` on this client."""
        return wrong_typed_keys(self.client, keys)

    def read_back(self, keys: Sequence[str]) -> tuple[dict[str, Exception], list[str]]:
        """Of the string ``keys``: those of another type, each with its WRONGTYPE error (as
        :func:`wrong_typed_keys`), and those Redis does not hold; one pipelined GET each."""
        if not keys:
            return {}, []
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        damaged, missing = {}, []
        for key, value in zip(keys, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(value, Exception):
                if not wrong_type(value):
                    raise value
                damaged[key] = value
            elif value is None:
                missing.append(key)
        return damaged, missing

    def outside_fields(self, ledgers: Sequence[str]) -> dict[str, set[str]]:
        """Per ledger, the fields its outside hash holds, in one round trip (a hash of another
        type reads as none: its home replaces it at its next note)."""
        pipe = self.client.pipeline(transaction=False)
        for ledger in ledgers:
            pipe.hkeys(self.outside_key(ledger))
        found: dict[str, set[str]] = {}
        for ledger, value in zip(ledgers, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(value, Exception) and not wrong_type(value):
                raise value
            found[ledger] = set() if isinstance(value, Exception) else {_text(k) for k in value}
        return found

    def _nodes_keyed(self, prefix: str) -> list[str]:
        """The nodes whose per-node keys ``<prefix><node>`` are read: those of :meth:`raisers`
        (a process passes its cluster's), else every one found (SCAN, which only the admin's
        user may run)."""
        if self._raisers is not None:
            return list(dict.fromkeys([*self._raisers, *([self.node] if self.node else [])]))
        found = self.client.scan_iter(match=glob_escape(prefix) + "*", count=500)
        # A node's name has no colon: ``<prefix><node>:recent`` is a witness's recent notes (a list).
        return sorted({name for raw in found if ":" not in (name := _text(raw)[len(prefix) :])})

    def _witness_names(self, ledger: str, witnesses: Iterable[str] | None) -> list[str]:
        """Whose cosignature keys of ``ledger`` are read: ``witnesses`` if given, else
        :meth:`_nodes_keyed`'s."""
        if witnesses is not None:
            return list(dict.fromkeys(witnesses))
        return self._nodes_keyed(self.cosig_key(ledger, ""))

    def cosignatures(self, ledger: str, witnesses: Iterable[str] | None = None) -> dict[str, bytes]:
        """witness -> the note it says it cosigned last, for each witness of :meth:`_witness_names`
        that has one (unchecked: each witness's Redis user writes its own)."""
        names = self._witness_names(ledger, witnesses)
        if not names:
            return {}
        notes = self.client.mget([self.cosig_key(ledger, name) for name in names])
        return {name: bytes(note) for name, note in zip(names, notes, strict=True) if note is not None}

    def recent_cosignatures(self, ledger: str, witnesses: Iterable[str]) -> dict[str, list[bytes]]:
        """witness -> its latest note (:meth:`cosignatures`) and the RECENT_COSIGNATURES it says
        it cosigned last (newest first, :meth:`cosig_recent_key`), of each of ``witnesses`` that
        has any, in one round trip. Unchecked, as :meth:`cosignatures`; a list of another type
        reads as none, and no more than RECENT_COSIGNATURES are read of a longer one."""
        names = list(dict.fromkeys(witnesses))
        if not names:
            return {}
        pipe = self.client.pipeline(transaction=False)
        pipe.mget([self.cosig_key(ledger, name) for name in names])
        for name in names:
            pipe.lrange(self.cosig_recent_key(ledger, name), 0, RECENT_COSIGNATURES - 1)
        newest, *lists = pipe.execute(raise_on_error=False)
        if isinstance(newest, Exception):
            raise newest
        found: dict[str, list[bytes]] = {}
        for name, note, value in zip(names, newest, lists, strict=True):
            if isinstance(value, Exception) and not wrong_type(value):
                raise value
            held = [] if isinstance(value, Exception) else [bytes(item) for item in value]
            if note is not None:
                held.insert(0, bytes(note))
            if held:
                found[name] = held
        return found

    def witness_notes(
        self, ledgers: Iterable[str], witnesses: Iterable[str]
    ) -> tuple[dict[str, dict[str, bytes]], int]:
        """:meth:`cosignatures` of each of ``ledgers`` by ``witnesses`` (ledger -> witness -> note),
        and Redis's clock (``TIME``, ms) in the same round trip: what each witness's cosignature
        times are held against (verifier/witness_clock.py). A key of another type reads as none."""
        names, ledger_names = list(dict.fromkeys(witnesses)), list(dict.fromkeys(ledgers))
        asked = ledger_names if names else []
        pipe = self.client.pipeline(transaction=False)
        for ledger in asked:
            pipe.mget([self.cosig_key(ledger, name) for name in names])
        pipe.time()
        *replies, (seconds, micros) = pipe.execute()
        notes = {
            ledger: {name: bytes(note) for name, note in zip(names, found, strict=True) if note is not None}
            for ledger, found in zip(asked, replies, strict=True)
        }
        return notes, int(seconds) * 1000 + int(micros) // 1000

    def cosignatures_of(self, ledgers: Iterable[str], witnesses: Iterable[str]) -> dict[str, dict[str, bytes]]:
        """:meth:`cosignatures` of each of ``ledgers`` by ``witnesses``, in one round trip (a
        ledger none of them cosigned is left out)."""
        notes, _ = self.witness_notes(sorted(set(ledgers)), witnesses)
        return {ledger: held for ledger, held in notes.items() if held}

    def publish_outside_cosignature(self, ledger: str, witness: str, size: int, note: bytes) -> None:
        """A home's: make ``note`` (its checkpoint with outside witness ``witness``'s verified
        cosignature) that witness's latest for ``ledger``, in a hash of its own (only a home
        writes it; the cluster's witnesses' hash stays theirs). Of another type (the admin's user
        can SET it), the home replaces it: the other outside witnesses' notes come with their next feed."""

        def publish() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(self.outside_key(ledger), witness, note)
            pipe.publish(self.cosigned_channel, f"{witness} {ledger} {size}")
            pipe.execute()

        try:
            publish()
        except redis.exceptions.ResponseError as e:
            if not wrong_type(e):
                raise
            self.replace_damaged(self.outside_key(ledger), e, publish)

    def outside_cosignatures(self, ledger: str) -> dict[str, bytes]:
        """outside witness -> the note its home says it cosigned last (unchecked); none while the
        hash is of another type (a reader of the ledger's head goes on with the others' notes)."""
        try:
            found = self.client.hgetall(self.outside_key(ledger))
        except redis.exceptions.ResponseError as e:
            if not wrong_type(e):
                raise
            log.warning("Redis key %s is of another type (%s): read as no note", self.outside_key(ledger), e)
            return {}
        return {_text(k): bytes(v) for k, v in found.items()}

    def keep_evidence(self, witness: str, ledger: str, size: int, evidence: dict[str, str]) -> None:
        """Keep ``evidence`` (texts, verbatim) that ``witness`` found at ``size`` of ``ledger``."""
        self.client.hset(self.evidence_key, f"{witness}|{ledger}|{size}", json.dumps(evidence, sort_keys=True))

    def evidence(self) -> dict[str, dict[str, str]]:
        """Every raiser's evidence, by ``<witness>|<ledger>|<size>``; in a node's own hash, only
        fields of its own name count (it may write nothing else there, nor anywhere else)."""
        raisers = self.raisers()
        pipe = self.client.pipeline(transaction=False)
        for node in raisers:
            pipe.hgetall(self.evidence_key_of(node))
        found: dict[str, dict[str, str]] = {}
        for node, fields in zip(raisers, pipe.execute(), strict=True):
            for k, v in fields.items():
                key = _text(k)
                if node is None or key.startswith(node + "|"):
                    found[key] = _json_map(v)
        return found

    def last_height(self, ledger: str) -> int:
        """The height of the stream's last record, -1 if it has none."""
        entries = self.client.xrevrange(self.stream_key(ledger), count=1)
        return entry_height(entries[0][0]) if entries else -1

    def last_heights(self, ledgers: Iterable[str]) -> dict[str, int]:
        """Each ledger's last height in its stream, -1 for none: for a stream of another type too
        (the admin's user can SET it), which its home's next append replaces (:meth:`append_checked`)."""
        names = list(ledgers)
        pipe = self.client.pipeline(transaction=False)
        for ledger in names:
            pipe.xrevrange(self.stream_key(ledger), count=1)
        lasts = {}
        for ledger, entries in zip(names, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(entries, Exception) and not wrong_type(entries):
                raise entries
            lasts[ledger] = entry_height(entries[0][0]) if entries and not isinstance(entries, Exception) else -1
        return lasts

    def read(self, ledger: str, start: int, count: int, stop: int | None = None) -> list[StreamRecord]:
        """Up to ``count`` records from height ``start`` on (below ``stop``), in order. The first
        one is above ``start`` when the stream was trimmed past it: the caller must check."""
        end = "+" if stop is None else entry_id(stop - 1)
        if stop is not None and stop <= start:
            return []
        entries = self.client.xrange(self.stream_key(ledger), min=entry_id(start), max=end, count=count)
        records = []
        for key, fields in entries:
            records.append(
                StreamRecord(
                    ledger,
                    entry_height(key),
                    bytes(fields[b"record"]),
                    _text(fields.get(b"origin", b"")),
                    bytes(fields.get(b"checkpoint", b"")),
                )
            )
        return records

    def read_rows(self, ledger: str, start: int, count: int) -> tuple[list[tuple[int, bytes]], list[bytes]]:
        """:meth:`read`'s records as (height, bytes), and the checkpoints among them, in order:
        what a catch-up page needs, without a StreamRecord or an origin decoded per record
        (they cost a replica catching up a tenth of its fetch)."""
        if self._raw is None:
            entries = self.client.xrange(self.stream_key(ledger), min=entry_id(start), max="+", count=count)
            pairs = [(key, [item for pair in fields.items() for item in pair]) for key, fields in entries]
        else:
            pairs = self._raw.xrange(self.stream_key(ledger), min=entry_id(start), max="+", count=count)
        rows = []
        checkpoints = []
        for key, flat in pairs:
            # Each entry's fields as Redis answers them, in the order they were added: record
            # and origin, and on the last record of a batch its checkpoint (add, _APPEND).
            if len(flat) == 4 and flat[0] == b"record" and flat[2] == b"origin":
                rows.append((int(key.partition(b"-")[0]), flat[1]))
                continue
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            rows.append((entry_height(key), bytes(fields[b"record"])))
            checkpoint = fields.get(b"checkpoint")
            if checkpoint:
                checkpoints.append(bytes(checkpoint))
        return rows, checkpoints

    def ledgers(self) -> dict[str, str]:
        """Every ledger a home node announced, with its home (the hash's marks of a replacement,
        :data:`REPLACED_FIELD`, left out, and every field that is no ledger's name: any ingest
        node's Redis user may HSET ``ghost`` or ``<script>x</script>`` there, which the public
        gateway listed, outsider43 M1). A claim still: which ledgers exist a genesis proves."""
        found = {_text(k): _text(v) for k, v in self.client.hgetall(self.ledgers_key).items()}
        return {name: home for name, home in found.items() if is_ledger_name(name)}

    def stream_ledgers(self, count: int = 1000) -> set[str]:
        """The ledgers whose stream key ``vledger:{<ledger>}:chain`` exists (SCAN, ``count`` keys a
        step: the admin's and the verifier's users may run it), names of no ledger left out."""
        prefix, suffix = f"{self.namespace}:{{", "}:chain"
        streams: set[str] = set()
        for raw in self.client.scan_iter(
            match=glob_escape(prefix) + "*" + glob_escape(suffix), count=count, _type="stream"
        ):
            key = _text(raw)
            ledger = key[len(prefix) : -len(suffix)]
            if key.startswith(prefix) and key.endswith(suffix) and is_ledger_name(ledger):
                streams.add(ledger)
        return streams

    def ledgers_or_streams(self) -> dict[str, str]:
        """:meth:`ledgers`; while ``{ledgers}`` is of another type (the admin's user can SET it,
        until a home replaces it), the ledgers whose stream exists (:meth:`stream_ledgers`), each
        with no home named (""): the caller takes the cluster file's. For an operator's command,
        which failed on it (``vledger repl status``, ``repair``)."""
        try:
            return self.ledgers()
        except redis.exceptions.ResponseError as e:
            if not wrong_type(e):
                raise
            log.warning("Redis key %s is of another type (%s): the ledgers whose stream exists are taken, with"
                        " the cluster file's homes", self.ledgers_key, e)  # fmt: skip
        return dict.fromkeys(sorted(self.stream_ledgers()), "")

    def epochs(self) -> dict[str, tuple[int, str]]:
        """Each ledger handed over (PROTOCOL 10.9): its latest epoch and that epoch's home."""
        found = {}
        for key, value in self.client.hgetall(self.epochs_key).items():
            number, _, home = _text(value).partition(" ")
            if number.isascii() and number.isdigit() and len(number) <= 20 and home:
                found[_text(key)] = (int(number), home)
        return found

    def epoch_notes(self, ledger: str, witnesses: Iterable[str] | None = None) -> list[bytes]:
        """The notes that may prove a newer epoch of ``ledger`` than a node's store holds (10.9):
        its latest checkpoint, the proof its newest epoch's home kept and each witness's cosigned
        note (:meth:`cosignatures`' witnesses), in one round trip (unchecked)."""
        names = self._witness_names(ledger, witnesses)
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.checkpoint_key(ledger))
        pipe.get(self.epoch_proof_key(ledger))
        if names:
            pipe.mget([self.cosig_key(ledger, name) for name in names])
        latest, proof, *rest = pipe.execute(raise_on_error=False)
        cosigned = rest[0] if rest else []
        for answer in (latest, cosigned):
            if isinstance(answer, Exception):
                raise answer
        # NOPERM: a Redis user made before ``epoch_proof`` was (keygen --cluster adds it): the rest still proves.
        proof = None if isinstance(proof, redis.exceptions.NoPermissionError) else self._kept_proof(ledger, proof)
        kept = [note for note in (latest, proof, *cosigned) if note is not None]
        return [bytes(note) for note in kept]

    def epoch_proof(self, ledger: str) -> bytes | None:
        """The proof of its epoch the newest epoch's home kept (:meth:`keep_epoch_proof`; unchecked)."""
        try:
            note = self.client.get(self.epoch_proof_key(ledger))
        except redis.exceptions.ResponseError as e:
            note = self._kept_proof(ledger, e)
        return bytes(note) if note is not None else None

    def _kept_proof(self, ledger: str, answer: Any) -> Any:
        """The GET of ``ledger``'s kept proof, none while the key is of another type (the admin's
        user can make it a hash): every reader of the notes that may prove an epoch failed on
        it (a promotion, a node's look for a newer epoch, the verifier's, ``repl status``),
        though the witnesses' notes and the latest checkpoint may prove it all the same. Its
        home sets it again (the outbox's heartbeat: ``redis_key_damaged``). Other errors raise."""
        if not isinstance(answer, Exception):
            return answer
        if not wrong_type(answer):
            raise answer
        log.warning("Redis key %s is of another type (%s): read as no kept proof", self.epoch_proof_key(ledger), answer)
        return None

    def keep_epoch_proof(self, ledger: str, note: bytes) -> None:
        """A home of an epoch from 2 on: keep ``note``, its checkpoint of that epoch a witness
        cosigned, where only ingest users write (10.9): the witnesses' hash, which every
        witness's user may empty, is then not all a replaced home has to learn it was replaced."""
        self.client.set(self.epoch_proof_key(ledger), note)

    def promote(
        self, ledger: str, epoch: int, home: str, replacing: tuple[int, str] | None = None
    ) -> tuple[int, str] | None:
        """Name ``home`` the home of ``ledger`` in ``epoch``, in ``epochs`` and the home map,
        atomically and only if no epoch as high is named yet (or it is this one, or exactly
        ``replacing``, an entry the caller found nothing proves): None, else the epoch and home
        Redis already names. An entry that is no ``<epoch> <home>`` counts as none (any ingest
        node's Redis user may write one). Either hash of another type (any ingest node's
        Redis user may SET it) is replaced, and the script runs again: the promoting standby is
        their writer, and what the key held was no entry (review17 2). The other ledgers' entries
        are not written back: each is a claim, and every reader finds a proven epoch from the
        notes themselves (10.9), so none is lost by it and no fenced home is let back."""
        unproven = [str(replacing[0]), replacing[1]] if replacing is not None else ["", ""]
        args = [ledger, epoch, home, *unproven]
        promote = functools.partial(self._promote, keys=[self.epochs_key, self.ledgers_key], args=args)
        try:
            held = promote()
        except redis.exceptions.ResponseError as e:
            if not wrong_type(e):
                raise
            for name in (self.epochs_key, self.ledgers_key):  # the script's error names neither
                try:
                    self.client.hget(name, ledger)  # an ingest user may HGET them, not TYPE
                except redis.exceptions.ResponseError as damaged:
                    if not wrong_type(damaged):
                        raise
                    # {ledgers} replaced is marked so: every home names its ledgers again (name_homes).
                    mark = functools.partial(self._name_homes, [], home, replaced=True)
                    self.replace_wrong_type(name, damaged, mark if name == self.ledgers_key else lambda: None)
            held = promote()
        if held is None:
            return None
        number, _, named = _text(held).partition(" ")
        return int(number), named

    def unpromote(self, ledger: str, epoch: int, home: str, before: tuple[int, str]) -> bool:
        """Undo :meth:`promote` of ``home`` in ``epoch``: name ``before`` (the epoch and home the
        promotion replaced; epoch 1 is named by no entry) again, atomically and only if
        ``epochs`` still names exactly that promotion. Whether it was undone."""
        previous = "" if before[0] < 2 else f"{before[0]} {before[1]}"
        args = [ledger, f"{epoch} {home}", previous, before[1], home]
        return bool(self._unpromote(keys=[self.epochs_key, self.ledgers_key], args=args))

    # --- who holds what ---------------------------------------------------------------

    def advance(self, node: str, ledger: str, height: int) -> int:
        """Record that ``node`` holds ``ledger`` up to ``height``; returns the height now recorded."""
        return self._held_script(self._advance, node, ledger, height)

    def set_held(self, node: str, ledger: str, height: int) -> int:
        """Record that ``node`` holds ``ledger`` up to exactly ``height`` (its store's head), lower
        or higher than what Redis held; returns ``height``. Only the thread that reports the
        node's heights calls it, with a head read after every height it reported."""
        return self._held_script(self._set_held, node, ledger, height)

    def _held_script(self, script: Any, node: str, ledger: str, height: int) -> int:
        """Run ``script`` (_ADVANCE or _SET_HELD) on ``node``'s held key of ``ledger``, replacing
        the key found of another type (:meth:`_replace_held`)."""
        try:
            return int(script(keys=[self.held_key(ledger, node)], args=[node, height, ledger, self.held_channel]))
        except redis.exceptions.ResponseError as e:
            if not wrong_type(e):
                raise
            return self._replace_held(node, ledger, height, e)

    def _replace_held(self, node: str, ledger: str, height: int, error: Exception) -> int:
        """Write ``node``'s held key of ``ledger``, found of another type (the admin's user can make
        it a hash: every report of the node failed on it, and with it the node's every other
        report, taken for Redis away), as ``height``: SET replaces a key of any type, and it is the
        one command a follower's user may run on it (broker/redis_acl.py)."""

        def write() -> int:
            self.client.set(self.held_key(ledger, node), height)
            self.client.publish(self.held_channel, f"{node} {ledger} {height}")
            return height

        return int(self.replace_damaged(self.held_key(ledger, node), error, write, delete=False))

    def held(self, ledger: str) -> dict[str, int]:
        """node -> the height up to which it says it holds ``ledger``, for each node of
        :meth:`raisers` (claims: each node writes its own, and may claim what it does not hold;
        a value that is no height, which no node writes, is left out)."""
        nodes = self._nodes_keyed(self.held_key(ledger, ""))
        if not nodes:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for node in nodes:
            pipe.get(self.held_key(ledger, node))
        held = {}
        for node, value in zip(nodes, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(value, Exception):
                if not wrong_type(value):
                    raise value
                continue  # of another type, as a value that is no height: its node replaces it
            if value is None:
                continue
            try:
                height = int(value)
            except ValueError:
                continue
            if -1 <= height <= MAX_HEIGHT:  # -1: holds no record yet; outside these, no height at all
                held[node] = height
        return held

    def holders(self, ledger: str, height: int) -> list[str]:
        """The nodes that hold record ``height`` of ``ledger``."""
        return sorted(node for node, held in self.held(ledger).items() if held >= height)

    # --- alerts ---------------------------------------------------------------------

    def alert(self, alert: Alert) -> str:
        """Add ``alert`` to this client's alerts stream and open alerts; returns its stream id."""
        fields = alert.fields()
        with self._alerts_lock:
            journal = self.journal
            kept = None
            if journal is not None:  # first: a Redis that is away or refuses loses nothing
                self._journaled(functools.partial(self._close_if_operator_resolved, journal, alert.key))
                # Raised again while open (its cause stays), it keeps its first at_ms (10.5).
                raised = functools.partial(journal.raised, operator_only=alert.operator_only)
                kept = self._journaled(functools.partial(raised, alert.key, {"id": "", **fields}))
                if kept is not None:
                    fields["at_ms"] = kept["at_ms"]
            opened = self._put(alert.key, fields)
            if journal is not None and kept is not None:  # not in the journal: nothing to record there
                self._journaled(functools.partial(journal.recorded, alert.key, opened))
            return str(opened["id"])

    def _journaled(self, write: Callable[[], T]) -> T | None:
        """``write``'s result, or None when the alert journal could not be written (its disk full,
        outsider o13: the node that knew the cause died raising its alert): the alert still goes
        to Redis, which then alone keeps it. Said once until the journal is written again: a
        row changed, not a call that only read (outsider o15 #5a: on a full disk the read before
        each raise said "written again", and the raise "cannot be written", in turns)."""
        journal = self.journal
        try:
            before = journal.changes if journal is not None and self._journal_failing else 0
            done = write()
        except sqlite3.Error as e:
            if not self._journal_failing:
                self._journal_failing = True
                log.error("alert journal of %s cannot be written (%s): its alerts go to Redis only", self.node, e)
            return None
        if self._journal_failing and journal is not None and journal.changes > before:
            self._journal_failing = False
            log.warning("alert journal of %s is written again", self.node)
        return done

    def _close_if_operator_resolved(self, journal: AlertJournal, key: str) -> None:
        """Close ``key``'s journal row when an operator resolved the alert it holds (its stream
        id noted, as :meth:`_reassert` reads it): the journal learns of that only at the next
        reassert, and a raise before it kept the resolved alert's at_ms (review18 6). Redis
        away: the row stays (the raise must not wait on Redis), as it would until a reassert."""
        held = journal.open_alert(key)
        if held is None or not _alert_id(held):
            return
        try:
            note = self.operator_resolved([(self.node, key)]).get((self.node, key))
        except REDIS_ERRORS:
            return
        if note is not None and _stream_id(note) >= _stream_id(_alert_id(held)):
            journal.resolved([key], by="operator")

    def _put(self, key: str, fields: dict[str, str]) -> dict[str, str]:
        """Add an alert's ``fields`` to this client's stream and open hash; returns it as the
        hash holds it, its stream ``id`` added."""
        add = functools.partial(self.client.xadd, self.alerts_key, fields, maxlen=ALERTS_MAX_LEN, approximate=True)
        opened = {"id": _text(self.own_write(self.alerts_key, add)), **fields}
        self.own_write(self.open_alerts_key, functools.partial(self._hset_open, key, opened))
        return opened

    def _hset_open(self, key: str, alert: dict[str, Any]) -> Any:
        return self.client.hset(self.open_alerts_key, key, json.dumps(alert, sort_keys=True))

    def _name_home(self, ledger: str, origin: str) -> Any:
        return self._name_homes([ledger], origin, replaced=True)

    def name_homes(self, ledgers: Iterable[str], origin: str) -> None:
        """A home's heartbeat: when ``{ledgers}`` is of another type, replace it and name
        ``origin`` the home of each of ``ledgers`` (a ledger that gets no record was never named
        again once the hash was lost so); when another home replaced it since this one last
        looked (its token in :data:`REPLACED_FIELD`), name them again too: their entries went with
        the hash. A hash that merely lacks an entry is left as it is: the verifier's
        ``unlisted_ledger`` is the evidence of that HDEL (PROTOCOL 10.5)."""
        names = list(ledgers)
        if not names:
            return
        try:
            replaced, relisted = self.client.hmget(self.ledgers_key, [REPLACED_FIELD, _relisted_field(origin)])
        except redis.exceptions.ResponseError as e:
            if not wrong_type(e):
                raise
            write = functools.partial(self._name_homes, names, origin, replaced=True, complete=True)
            self.replace_wrong_type(self.ledgers_key, e, write)
            return
        if replaced is not None and replaced != relisted:
            log.info("Redis's ledgers hash was replaced (%s): naming this node's ledgers in it again", _text(replaced))
            self._name_homes(names, origin, relisted=_text(replaced))

    def reclaim_homes(
        self, ledgers: Iterable[str], origin: str, claimed: Mapping[str, tuple[int, str]]
    ) -> dict[str, str]:
        """A home's heartbeat, for ``ledgers``, the ones it homes (proven: its store, 10.9): each
        whose field in ``{ledgers}`` names another node is put back to ``origin``; returns ledger
        -> the node it named. Any ingest node's Redis user may HSET a field (no ACL reaches a
        field), and a ledger re-homed so stayed so for good: ``vledger repair`` took its home from
        there and refused it (outsider43 M1). A field naming the node ``claimed`` (``{ledgers}:epochs``)
        names the home of a newer epoch is left: a promotion writes both, and whether it is
        proven is the outbox's to find (:meth:`~vledger.ingest.outbox.Outbox._replaced`), not this
        step's. A missing field is left too: the verifier's ``unlisted_ledger`` is that HDEL's
        evidence, and the home's next append names it again (HSETNX)."""
        names = list(ledgers)
        if not names:
            return {}
        try:
            found = self.client.hmget(self.ledgers_key, names)
        except redis.exceptions.ResponseError as e:
            if not wrong_type(e):
                raise
            return {}  # name_homes replaces it
        taken = {
            ledger: _text(home)
            for ledger, home in zip(names, found, strict=True)
            if home is not None and _text(home) != origin and claimed.get(ledger, (0, ""))[1] != _text(home)
        }
        if taken:
            self.client.hset(self.ledgers_key, mapping=dict.fromkeys(taken, origin))
        return taken

    def _name_homes(
        self, ledgers: list[str], origin: str, *, replaced: bool = False, complete: bool = False, relisted: str = ""
    ) -> Any:
        """HSETNX each of ``ledgers`` to ``origin``; ``replaced``: the hash is new, and a token of
        this replacement marks it, so that every home names its ledgers again (this one too unless
        ``complete``, all its ledgers among ``ledgers``); ``relisted``: the token of the
        replacement this home named its ledgers again for."""
        pipe = self.client.pipeline(transaction=False)
        for ledger in ledgers:
            pipe.hsetnx(self.ledgers_key, ledger, origin)
        if replaced:
            token = f"{origin} {time.time_ns() // 1_000_000}"
            pipe.hset(self.ledgers_key, REPLACED_FIELD, token)
            relisted = token if complete else ""
        if relisted:
            pipe.hset(self.ledgers_key, _relisted_field(origin), relisted)
        return pipe.execute()[: len(ledgers)]

    def replace_wrong_type(self, name: str, error: Exception, write: Callable[[], Any], *, delete: bool = True) -> Any:
        """Delete key ``name``, which ``error`` (WRONGTYPE) found of another type, and ``write``
        it again: what it held was none of the writer's (its writers write it of its type).
        ``delete`` false: ``write`` replaces it itself (a SET, for a user that may not DEL it)."""
        log.warning("Redis key %s is of another type (%s): someone with a Redis password that may write it"
                    " changed it; replaced", name, error)  # fmt: skip
        if delete:
            self.client.delete(name)
        return write()

    def replace_damaged(self, name: str, error: Exception, write: Callable[[], Any], *, delete: bool = True) -> Any:
        """:meth:`replace_wrong_type` by the owner of a key of one ledger (its home's stream, a
        node's held height, a witness's cosignature, an observer's tally keys), with the damage
        raised as ``redis_key_damaged`` against ``redis`` naming the key (PROTOCOL 10.5): in the
        alerts' log the evidence of an insider's write stays, and the alert is resolved once the
        key is written anew (the owner's next write would have replaced it without a word)."""
        alert = Alert("redis", name, 0, REDIS_KEY_DAMAGED,
                      f"Redis key {name} was of another type ({error}): someone with a Redis password that may"
                      f" write it (the admin's) changed it; {self.node or 'its owner'} writes it anew",
                      source=self.node or "")  # fmt: skip
        self.alert(alert)
        done = self.replace_wrong_type(name, error, write, delete=delete)
        self.resolve([alert.key])
        return done

    def own_write(self, name: str, write: Callable[[], Any]) -> Any:
        """``write`` to this node's own alert key ``name``; one of another type (its own Redis
        user can XADD to its open hash, HSET its stream: review16 2) is deleted and written
        again, as a node does its applied key (broker/accounts.py), else every alert it raises
        or puts back would fail there for good. What the key held was no alert of this node's
        (the journal keeps those)."""
        try:
            return write()
        except redis.exceptions.ResponseError as e:
            if not wrong_type(e):
                raise
            return self.replace_wrong_type(name, e, write)

    def _own_open_fields(self, keys: list[str]) -> dict[str, str]:
        """These fields of this node's open hash, none where the key is of another type (its
        next put replaces it). HMGET, not the whole hash: the node's own Redis user may fill it
        with any number of other fields (1M: 7-9 s of CPU a read, review r24 F5)."""
        try:
            values = self.client.hmget(self.open_alerts_key, keys)
        except redis.exceptions.ResponseError as e:
            if not wrong_type(e):
                raise
            return {}
        return {key: _text(value) for key, value in zip(keys, values, strict=True) if value is not None}

    def open_by_raiser(self, report_damaged: bool = True) -> list[tuple[str | None, dict[str, dict[str, Any]]]]:
        """Every raiser's open alerts (:meth:`raisers`, None: the shared keys), as its hash holds
        them, except an ``id`` past the server's clock, which is shown empty: the raiser wrote the
        JSON, id included, and no stream of this server made that id (PROTOCOL 10.5). Left as it
        was, it would rank above every alert raised since, and an operator's note of it would
        cover them. A raiser whose open key is of another type (its own Redis user can make it
        a stream) or holds more than OPEN_ALERTS_CAP fields (read by none: review r24 F5) holds
        none; with ``report_damaged``, an ALERT_KEYS_DAMAGED alert about it stands in the shared
        keys' place instead: one node's key must not hide every raiser's alerts from the
        operator, the gateway and the verifier (review16 2b), nor stall them."""
        raisers = self.raisers()
        held, problems, clock = self._read_open(raisers)
        damaged: dict[str, dict[str, Any]] = {}
        for raiser, problem in problems.items():
            log.warning("the open alerts of %s are not read (%s): shown as %s", raiser, problem, ALERT_KEYS_DAMAGED)
            key = self.open_alerts_key_of(raiser)
            found_alert = Alert(raiser, "", 0, ALERT_KEYS_DAMAGED, f"{key}: {problem}", "redis")
            damaged[found_alert.key] = {"id": "", **found_alert.fields()}
        # An ACL file written before TIME was the gateway's refuses it (until `vledger keygen
        # --cluster` runs again): this host's clock then, a cluster's hosts keep theirs close.
        seconds, micros = divmod(time.time_ns() // 1000, 1_000_000) if isinstance(clock, Exception) else clock
        now = (int(seconds) * 1000 + int(micros) // 1000, 2**64)  # every id of this millisecond or before
        found = []
        for node in raisers:
            alerts = {_text(k): _json_map(v) for k, v in held.get(node, {}).items()}
            for alert in alerts.values():
                if _stream_id(_alert_id(alert)) > now:
                    alert["id"] = ""
            found.append((node, alerts))
        if damaged and report_damaged:
            found.append((None, damaged))
        return found

    def _read_open(self, raisers: list[str | None]) -> tuple[dict[str | None, dict[Any, Any]], dict[str, str], Any]:
        """Each raiser's open hash as read, and why those not read were not (another type, or
        more than OPEN_ALERTS_CAP fields); and the server's TIME (or its error). One pipeline:
        ``HRANDFIELD key CAP+1 WITHVALUES`` answers at most CAP+1 distinct fields, so a raiser
        that grows its hash while it is read is never read past the cap (review r25 F4: sized by
        HLEN, then read whole by HGETALL, it was read whole once grown between the two). The
        shared keys (None) are the admin's alone to write: read whole. A user whose ACL file
        predates HRANDFIELD (until `vledger keygen --cluster`) reads as it did before it. Each
        hash is sized and read in one step (the library's read_open); a user whose ACL file
        predates it, or a Redis that lost the library, sizes them all first, then reads
        (:meth:`_read_apart`)."""
        pipe = self.client.pipeline(transaction=False)
        for node in raisers:
            if node:
                key = self.open_alerts_key_of(node)
                bounds = [OPEN_ALERTS_CAP + 1, OPEN_ALERTS_BYTES]
                pipe.execute_command(*redis_functions.command("read_open", [key], bounds))
            else:
                pipe.hgetall(self.open_alerts_key_of(node))
        pipe.time()
        *replies, clock = pipe.execute(raise_on_error=False)
        held: dict[str | None, dict[Any, Any]] = {}
        problems: dict[str, str] = {}
        apart = []
        for node, reply in zip(raisers, replies, strict=True):
            if node and (isinstance(reply, redis.exceptions.NoPermissionError) or redis_functions.is_missing(reply)):
                apart.append(node)
            elif node and isinstance(reply, int):
                problems[node] = _past_bytes_problem(reply)
            else:
                self._take_open(node, reply, held, problems)
        if apart:
            self._read_apart(apart, held, problems)
        return held, problems, clock

    def _read_apart(self, raisers: list[str], held: dict[str | None, dict[Any, Any]], problems: dict[str, str]) -> None:
        """The read where read_open cannot run (an ACL file before it, the library lost): the
        hashes sized in one round trip and read in the next (a hash grown between the two is
        read: HRANDFIELD still stops at the field cap)."""
        past = self._past_bytes(list(raisers))
        problems.update(past)
        raisers = [node for node in raisers if node not in past]
        pipe = self.client.pipeline(transaction=False)
        for node in raisers:
            pipe.hrandfield(self.open_alerts_key_of(node), OPEN_ALERTS_CAP + 1, withvalues=True)
        unsized = []
        for node, reply in zip(raisers, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, redis.exceptions.NoPermissionError):
                unsized.append(node)
            else:
                self._take_open(node, reply, held, problems)
        if unsized:
            self._read_sized(unsized, held, problems)

    @staticmethod
    def _take_open(
        node: str | None, reply: Any, held: dict[str | None, dict[Any, Any]], problems: dict[str, str]
    ) -> None:
        """One raiser's read hash into ``held``, or why it is not read into ``problems``."""
        if node and isinstance(reply, redis.exceptions.ResponseError) and wrong_type(reply):
            problems[node] = str(reply)
        elif isinstance(reply, Exception):
            raise reply
        elif node:
            fields = iter(reply)  # field, value, field, value...
            alerts = dict(zip(fields, fields, strict=True))
            if len(alerts) > OPEN_ALERTS_CAP:
                problems[node] = _PAST_CAP
            else:
                held[node] = alerts
        else:
            held[node] = reply

    def _past_bytes(self, raisers: list[str | None]) -> dict[str, str]:
        """Of the raisers' open hashes, those past OPEN_ALERTS_BYTES (MEMORY USAGE, every field
        counted up to the field cap, past it an estimate: a size, never the fields), each with
        what it holds; they are not read. A hash
        grown between this and the read is read (HRANDFIELD still stops at the field cap), as
        is every hash of a user whose ACL file predates MEMORY USAGE."""
        nodes = [node for node in raisers if node]
        pipe = self.client.pipeline(transaction=False)
        for node in nodes:
            # SAMPLES past the field cap, not 0 (every field, in Redis's one thread: 1.2 s for
            # 2M fields at each read, review r27): exact for a hash a reader reads, bounded else.
            pipe.memory_usage(self.open_alerts_key_of(node), samples=OPEN_ALERTS_CAP + 1)
        return {
            node: _past_bytes_problem(used)
            for node, used in zip(nodes, pipe.execute(raise_on_error=False), strict=True)
            if isinstance(used, int) and used > OPEN_ALERTS_BYTES
        }

    def _read_sized(self, nodes: list[str], held: dict[str | None, dict[Any, Any]], problems: dict[str, str]) -> None:
        """The read of a user whose ACL file predates HRANDFIELD: each hash sized by HLEN, then
        read whole with HGETALL where within OPEN_ALERTS_CAP (one grown between the two is read
        whole: review r25 F4), or read whole unsized where the ACL file predates HLEN too."""
        pipe = self.client.pipeline(transaction=False)
        for node in nodes:
            pipe.hlen(self.open_alerts_key_of(node))
        read = []
        for node, length in zip(nodes, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(length, int) and length > OPEN_ALERTS_CAP:
                problems[node] = _PAST_CAP
            elif isinstance(length, Exception) and not isinstance(length, redis.exceptions.NoPermissionError):
                if not wrong_type(length):
                    raise length
                problems[node] = str(length)
            else:
                read.append(node)
        for node in read:
            pipe.hgetall(self.open_alerts_key_of(node))
        for node, reply in zip(read, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, Exception):
                if not wrong_type(reply):
                    raise reply
                problems[node] = str(reply)
            else:
                held[node] = reply

    def own_open_alerts(self) -> dict[str, dict[str, Any]]:
        """This client's node's open alerts (key -> the alert's fields), as its own hash holds
        them, and those its journal holds open that Redis lost (:meth:`reassert` puts them
        back): what an earlier run raised, which a later run may take as its own to resolve.
        With a journal, Redis not answering gives the journal's alone; without, raises it. The
        hash is read as every reader reads it (:meth:`_read_open`): one of another type, or
        past OPEN_ALERTS_CAP fields (its own Redis user may fill it: review r25 F4), gives the
        journal's alone, with a WARNING."""
        kept = {key: alert for key, (alert, _) in self.journal.open_alerts().items()} if self.journal else {}
        try:
            held, problems, _ = self._read_open([self.node])
        except REDIS_ERRORS:
            if self.journal is None:
                raise
            return kept
        for problem in problems.values():
            log.warning("its own open alerts are not read (%s): its journal's alone are taken", problem)
        return {**kept, **{_text(k): _json_map(v) for k, v in held.get(self.node, {}).items()}}

    def open_entries(self) -> list[dict[str, Any]]:
        """Every raiser's open alerts, each its own entry: the fields its raiser's hash holds
        (:meth:`open_by_raiser`), ``key`` (``<node>|<ledger>|<what>``) and ``raised_by`` (the
        node in whose keys it is, the one thing about an alert its writer cannot choose; none
        for the shared keys, the admin's, and alerts of the older layout), ordered by key, then
        raiser. Where raisers share a key (a follower and the verifier can) each is shown: no
        raiser's entry stands for, hides or closes another's, since any node's Redis user may
        write any key, with any id and detail, in its own hash (outsider o16 2: ingest-2's
        "benign: nothing to do" under the verifier's key, with a later id, was all readers
        showed of it)."""
        found = []
        for node, alerts in self.open_by_raiser():
            for key, alert in alerts.items():
                fields = {k: v for k, v in alert.items() if k not in ("key", "raised_by")}
                found.append({**fields, "key": key, **({"raised_by": node} if node else {})})
        found.sort(key=lambda entry: (entry["key"], entry.get("raised_by", "")))
        return found

    def open_alerts(self) -> dict[str, dict[str, Any]]:
        """The keys of the open alerts, each with one raiser's entry (:meth:`open_entries`, the
        first by raiser name where raisers share it), for a caller that looks a key up; whatever
        shows alerts to someone shows :meth:`open_entries`, every raiser's."""
        found: dict[str, dict[str, Any]] = {}
        for entry in self.open_entries():
            found.setdefault(entry["key"], {k: v for k, v in entry.items() if k != "key"})
        return found

    def resolve(self, keys: Iterable[str]) -> int:
        """Close these of this client's open alerts; returns how many were open (in Redis, or
        in its journal). Another node's are not this client's to close (its Redis user may not
        write them)."""
        names = list(keys)
        if not names:
            return 0
        # The journal first: an alert its raiser resolved never comes back from it.
        journal = self.journal
        kept = (self._journaled(lambda: journal.resolved(names)) or 0) if journal is not None else 0
        return max(kept, int(self.client.hdel(self.open_alerts_key, *names)))

    def resolve_up_to(self, keys: Iterable[str], upto: int) -> int:
        """Close these of this client's open alerts that were raised at heights up to ``upto``
        (a follower's, PROTOCOL 10.5: its cause is gone up to there); one of these keys raised
        since at a greater height stays open. Returns how many were closed."""
        names = list(keys)
        if not names:
            return 0
        journal = self.journal
        kept = (self._journaled(lambda: journal.resolved(names, upto=upto)) or 0) if journal is not None else 0
        return max(kept, int(self._resolve_up_to(keys=[self.open_alerts_key], args=[min(upto, MAX_HEIGHT), *names])))

    def reassert(self) -> list[str]:
        """Put back into this node's open hash each alert its journal holds open that the hash
        lacks or holds otherwise (Redis lost it: a FLUSHALL, a restart without its append-only
        file; or someone with the node's Redis password deleted or rewrote it), as a new entry
        of its stream; returns their keys (PROTOCOL 10.5). An alert an operator resolved (noted
        in ``{alerts}:resolved`` with its stream id or a later one) is not put back but closed
        in the journal, if only an operator resolves its kind or that alert (Alert.operator_only),
        or an earlier run raised it: one this run raised and resolves itself comes back while its
        cause remains."""
        if self.journal is None:
            return []
        with self._alerts_lock:
            return self._reassert(self.journal)

    def _reassert(self, journal: AlertJournal) -> list[str]:
        kept = journal.open_alerts()
        if not kept:
            return []
        held = self._own_open_fields(list(kept))
        lost = [key for key, (alert, _) in kept.items() if held.get(key) != json.dumps(alert, sort_keys=True)]
        operator_only = journal.operator_only()
        try:
            notes = self.operator_resolved((self.node, key) for key in lost)
        except redis.exceptions.NoPermissionError as e:  # an ACL file from before this read: keygen --cluster
            log.warning("the operator's resolutions are not readable (%s): every lost alert is put back", e)
            notes = {}
        put_back = []
        for key in lost:
            alert, raised_ms = kept[key]
            note = notes.get((self.node, key))
            by_operator = note is not None and _alert_id(alert) and _stream_id(note) >= _stream_id(_alert_id(alert))
            final = operator_final(self.node, key) or key in operator_only or raised_ms < journal.started_ms
            if by_operator and final:
                journal.resolved([key], by="operator")
                continue
            fields = {k: str(v) for k, v in alert.items() if k != "id"}
            if journal.put_back(key, alert, functools.partial(self._put, key, fields)):
                put_back.append(key)
        return put_back

    @staticmethod
    def resolved_field(raiser: str | None, key: str) -> str:
        """The field of ``{alerts}:resolved`` that notes an operator's resolution of ``raiser``'s
        alert ``key``: ``<raiser>|<key>``, the bare key for the shared keys. Per raiser, so that
        the id one raiser wrote never counts as the resolution of another's alert."""
        return f"{raiser}|{key}" if raiser else key

    def resolve_as_operator(self, keys: Iterable[str]) -> int:
        """Close these open alerts, every raiser's, as the operator does: each raiser's alert's
        stream id is first noted in ``{alerts}:resolved`` (:meth:`resolved_field`), which only
        the admin's Redis user may write, so that the verifier tells an operator's resolution
        from a deletion by a raiser (PROTOCOL 10.5). Returns how many keys were open."""
        names = list(keys)
        if not names:
            return 0
        ids: dict[str, str] = {}
        closed: set[str] = set()
        held: list[tuple[str, list[str]]] = []
        for node, alerts in self.open_by_raiser(report_damaged=False):
            mine = [name for name in names if name in alerts]
            for name in mine:
                ids[self.resolved_field(node, name)] = _alert_id(alerts[name])
            closed.update(mine)
            if mine:
                held.append((self.open_alerts_key_of(node), mine))
        if ids:  # first, alone: a note that failed WRONGTYPE while the HDELs ran would be lost
            # Only the admin's user writes it: of another type, every resolution failed (N1).
            self.own_write(self.resolved_alerts_key, functools.partial(self._note_resolved, ids))
        pipe = self.client.pipeline(transaction=False)
        for key, mine in held:
            pipe.hdel(key, *mine)
        pipe.execute()
        return len(closed)

    def _note_resolved(self, ids: dict[str, str]) -> Any:
        return self.client.hset(self.resolved_alerts_key, mapping=ids)

    def operator_resolved(self, alerts: Iterable[tuple[str | None, str]]) -> dict[tuple[str | None, str], str]:
        """The stream id of the alert an operator last resolved under each of these (raiser,
        key) pairs that has one."""
        names = list(alerts)
        if not names:
            return {}
        try:
            found = self.client.hmget(self.resolved_alerts_key, [self.resolved_field(*name) for name in names])
        except redis.exceptions.ResponseError as e:
            if not wrong_type(e):
                raise
            # No resolution can be read: none is taken (an alert stays shown), none is lost
            # that the key still held; the operator's next resolution replaces the key.
            log.warning("Redis key %s is of another type (%s): no operator's resolution read",
                        self.resolved_alerts_key, e)  # fmt: skip
            return {}
        return {name: _text(raw) for name, raw in zip(names, found, strict=True) if raw is not None}

    def reopen(self, key: str, alert: dict[str, str]) -> None:
        """Put ``alert`` (as an open hash held it) back under ``key``, in this client's open alerts."""
        kept = {k: v for k, v in alert.items() if k != "raised_by"}
        if self.journal is not None:
            self.journal.raised(key, kept, "reopened")
        self.own_write(self.open_alerts_key, functools.partial(self._hset_open, key, kept))

    def resolve_node(self, node: str, ledger: str, kinds: Iterable[str]) -> int:
        return self.resolve(f"{node}|{ledger}|{what}" for what in kinds)

    def alerts(self, count: int = 100) -> list[dict[str, str]]:
        """The latest alerts of every raiser, oldest first, each with its stream id as ``id``
        and ``raised_by`` as :meth:`open_entries` gives it."""
        raisers = self.raisers()
        pipe = self.client.pipeline(transaction=False)
        for node in raisers:
            pipe.xrevrange(self.alerts_key_of(node), count=count)
        pipe.time()
        *replies, clock = pipe.execute(raise_on_error=False)
        seconds, micros = divmod(time.time_ns() // 1000, 1_000_000) if isinstance(clock, Exception) else clock
        now = (int(seconds) * 1000 + int(micros) // 1000, 2**64)
        merged = []
        for node, entries in zip(raisers, replies, strict=True):
            if isinstance(entries, redis.exceptions.ResponseError) and wrong_type(entries):
                # One stream of another type hides no other raiser's alerts (N1); its raiser
                # (or the admin, for the shared one) writes it anew at its next alert.
                log.warning("Redis key %s is of another type (%s): its alerts are not shown",
                            self.alerts_key_of(node), entries)  # fmt: skip
                continue
            if isinstance(entries, Exception):
                raise entries
            for key, fields in entries:
                # The stream's id and the raiser's name last: a field its writer named ``id``
                # (a future one sorted last, hid every other raiser's alert) or ``raised_by`` is not theirs.
                alert = {_text(k): _text(v) for k, v in fields.items() if _text(k) not in ("id", "raised_by")}
                merged.append({**alert, "id": _text(key), **({"raised_by": node} if node else {})})
        # A raiser may XADD its own stream with an explicit id past the server's clock: ranked
        # as the oldest, it pushes no other raiser's alert out of the latest ``count``.
        merged.sort(key=lambda alert: _stream_id(alert["id"]) if _stream_id(alert["id"]) <= now else (-1, -1))
        return merged[-count:] if count > 0 else []


STORE_DAMAGED = StoreDamagedError.code  # the alert of a node whose own store is damaged (PROTOCOL 10.5)


def store_damaged_alert(node: str, error: StoreError | RecordError) -> Alert:
    """The alert of a node whose own store failed ``error``'s check when it opened, or whose
    file a read or write found damaged while it ran (PROTOCOL 10.5): ``ledger`` empty (one per
    node), ``height`` the failed record's when the check names one, and ``detail`` the check's
    code and its sentence (the file, ledger, level and index)."""
    height = error.height if isinstance(error, RecordError) and error.height is not None else 0
    detail = f"[{error.code}] {error.message}"
    return Alert(node, "", height, STORE_DAMAGED, detail, source=node)


def raise_alert(replication: ReplicationLedger, alert: Alert) -> None:
    """Add ``alert`` to the alerts stream; if Redis is down, the log keeps it."""
    try:
        replication.alert(alert)
    except REDIS_ERRORS as e:
        log.error("alert not recorded in Redis (%s): %s", e, alert)


def count_distribution(held: dict[str, int], size: int) -> dict[int, int]:
    """How many of a ledger's ``size`` records have each replication count, from the holders' heights.

    Record h is held by every node whose height is >= h: sort the heights, and each step
    between two of them is a run of records with one count.
    """
    distribution: dict[int, int] = {}
    below = size  # records at heights >= the current bound, not yet counted
    heights = sorted((min(h, size - 1) for h in held.values() if h >= 0), reverse=True)
    holders = 0
    top = size - 1
    for height in heights:
        if height < top:
            if top - height > 0:
                distribution[holders] = distribution.get(holders, 0) + (top - height)
            below -= top - height
            top = height
        holders += 1
    if below > 0:
        distribution[holders] = distribution.get(holders, 0) + below
    return {count: n for count, n in sorted(distribution.items()) if n}
