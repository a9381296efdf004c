"""What an ingest node answers: every command of the client protocol, without the sockets.

``IngestService.handle(key, data)`` takes the caller's CURVE public key (as ZeroMQ
authenticated it) and a request's bytes, and returns the reply's bytes at once, or a
:class:`Pending` reply when the answer waits on slow work: a put's group commit, an admin
command's Redis round trips. Neither ever raises: every failure becomes an error reply
with a documented code (docs/PROTOCOL.md, section 6), and nothing is written unless the
whole request was valid. Handlers are plain functions that return their result, or a
:class:`Later` holding the Future of it; nothing here blocks on slow work. A put's entry
waits in the service's round: the caller of ``handle`` calls :meth:`IngestService.flush`
after a batch of requests, which hands the round to the store as one run under one future
and commits a small round (a lone put) on its own thread, a larger one on the store's
committer thread (``[ingest] inline_commit_max``). The socket loop lives in ``ingest.loop``;
tests drive it through real sockets.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..broker.keys import load_public
from ..broker.redis_keys import GROUP_TAGS
from ..config.cluster import ClusterConfig, NodeConfig
from ..config.settings import PROTOCOL_LIMITS
from ..node import tree
from ..node.blobs import check_digest
from ..node.cosigning import GatheredCheckpoint, newest
from ..node.epoch import EPOCH_KIND, STANDBY_KEY_FIELD, meets_epoch_rule
from ..node.errors import (
    BadGenesisError,
    BadRequestError,
    BlobError,
    CheckpointKeyMissingError,
    FieldError,
    ForbiddenError,
    KeyMaterialError,
    NoSuchLedgerError,
    NotFoundError,
    NotHomeError,
    RequestError,
    ThrottledError,
    TreeSizeError,
    UnknownCommandError,
    VledgerError,
)
from ..node.key_rotation import ROTATION_KIND, KeyChain
from ..node.ledger import LedgerRules
from ..node.note import MAX_SIGNATURES, parse_checkpoint, parse_note
from ..node.outside import MAX_OUTSIDE_WITNESSES, outside_witnesses
from ..node.record import GENESIS_KIND, NODE_REQUEST_PREFIXES, Checked, Entry, Record
from ..node.rules.admin import ADMIN_LEDGER
from ..node.rules.engine import RulesEngine, check_new_rules
from ..node.rules.files import FilesState, may_read
from ..node.rules.moving_kinds import refuse_other_holders
from ..node.store import ChainStore, Receipt
from ..node.storefile import MAX_HEIGHT
from ..node.totp import MAX_CODE_LENGTH
from ..node.wire import (
    PROTOCOL_VERSION,
    Args,
    Request,
    RequestId,
    parse_request,
    reply_error,
    reply_ok,
    request_id_of,
)
from ..node.witness import PINNED_KEY_FIELD, home_key, pinned_key
from .content_check import ContentChecker
from .epochs import Promotion
from .key_chains import HomeKeys
from .loop import Waiting
from .round_future import RoundFuture
from .second_factor import OWN_RESET
from .throttle import Throttle
from .uploads import Uploads

log = logging.getLogger(__name__)

ROLES = ("admin", "writer", "observer", "replica")
EVERYONE = frozenset(ROLES)
WRITERS = frozenset(("admin", "writer"))
ADMINS = frozenset(("admin",))
HASH_SIZE = 32
FILE_KIND = "file"
# What a replica answers: the reads. A write there is answered not_home, naming the home node.
READ_COMMANDS = frozenset(
    (
        "hello",
        "ver",
        "help",
        "whoami",
        "ledger.list",
        "get",
        "range",
        "head",
        "size",
        "have",
        "checkpoint",
        "proof.inclusion",
        "file.download",  # a replica serves the file blobs it copied (PROTOCOL 7.4)
        "proof.consistency",
        "put",
        "ledger.create",
    )
)


class ReplicaWaiter(Protocol):
    """Write concern (vledger.ingest.write_concern): a future of the receipt and its witnesses."""

    def wait(self, receipt: Receipt, replicas: int, timeout_ms: int) -> Future[tuple[Receipt, list[str]]]: ...

    def never_met(self, replicas: int) -> str | None:
        """Why ``replicas`` witnesses can never cosign here (too few count), or None."""
        ...


class CheckpointServer(Protocol):
    """The checkpoints a node serves beside its records (docs/PROTOCOL.md section 10.7)."""

    def latest(self, ledger: str) -> bytes | None:
        """The latest checkpoint note of ``ledger`` this node holds (a home: signed; else verified)."""
        ...

    def covering(self, ledger: str, start: int, end: int) -> bytes | None:
        """A checkpoint note whose size is in ``start + 1 .. end``, if this node has (or signs) one."""
        ...


class CosignatureSource(Protocol):
    """The cosignatures a node knows of a ledger's checkpoints (vledger.ingest.cosignatures)."""

    def gathered(self, ledger: str, latest: bytes) -> list[GatheredCheckpoint]:
        """Each checkpoint among ``latest`` and the cosigned notes this node knows, with the
        cosignatures that verified one by one; largest size first."""
        ...

    def outside_names(self, ledger: str) -> frozenset[str]:
        """The names of the outside witnesses ``ledger``'s genesis lists (13.9)."""
        ...

    def cluster_names(self) -> frozenset[str]:
        """The names of the cluster's witnesses' keys: those the epoch rule counts (13.5 step 3)."""
        ...


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the account its key is bound to, and that account's role."""

    account: str
    role: str
    key: str


class AccountLookup(Protocol):
    """The node's view of the account registry (Redis, kept current by notifications)."""

    def lookup(self, key: str) -> Caller | None: ...


class SecondFactorCheck(Protocol):
    """vledger.ingest.second_factor.SecondFactors: may this admin go on with this code?"""

    def check(self, account: str, otp: str | None, key: str = "") -> None: ...

    def open_session(self, account: str, key: str, otp: str | None) -> dict[str, Any]: ...


class AccountAdmin(Protocol):
    """The admin commands' access to the registry; each call answers once every node applied it."""

    def apply(self, command: str, args: Args, caller: Caller | None = None) -> dict[str, Any]: ...

    def list_accounts(self) -> list[dict[str, Any]]: ...


def _as_is(result: object) -> object:
    return result


def _as_receipt(result: Receipt) -> Receipt:
    return result


@dataclass(slots=True)  # one per put; a frozen dataclass takes three times as long to build
class Later:
    """A handler's result that slow work delivers: ``then(future.result())``, once it is done."""

    future: Future[Any]
    then: Callable[[Any], object] = _as_is


@dataclass(frozen=True, slots=True)
class AfterSecondFactor:
    """What an admin command's handler returns once it checked what costs no code (arguments,
    the home node): its work, which runs only once the caller's second factor checks out, so
    that a code is never used up by a request that is then sent elsewhere."""

    call: Callable[[], object]


def _then_into(source: Future[Any], then: Callable[[Any], object], target: Future[Any]) -> None:
    try:
        target.set_result(then(source.result()))
    except BaseException as e:
        target.set_exception(e)


@dataclass(slots=True)
class Pending:
    """A reply that waits on ``future``: the loop calls :meth:`reply` once it is done."""

    request_id: RequestId
    future: Future[Any]
    then: Callable[[Any], object]

    def reply(self) -> bytes:
        """The reply's bytes (the future must be done); never raises. Made anew per call: the
        loop calls it once, and the metrics count the bytes it returns (``_MeteredReply``)."""
        try:
            return reply_ok(self.request_id, self.then(self.future.result()))
        except Exception as e:  # every outcome becomes a reply, a bug included
            return _error_reply(self.request_id, e)


def replies_of(waiting: Sequence[Pending]) -> list[bytes]:
    """Each of ``waiting``'s :meth:`Pending.reply`, in order, their futures done; never raises.

    The same bytes as one ``reply()`` each, but a future's outcome is read once for the run of
    replies that wait on it (a round of puts shares its group commit's): ``Future.result``
    takes the future's lock each time, which cost a pipelined put a sixth of its reply."""
    replies = []
    future: Future[Any] | None = None
    outcome: Any = None
    error: Exception | None = None
    for pending in waiting:
        if pending.future is not future:
            future = pending.future
            try:
                outcome, error = future.result(), None
            except Exception as e:  # each of its requests is answered with it, as reply() does
                outcome, error = None, e
        if error is not None:
            replies.append(_error_reply(pending.request_id, error))
            continue
        try:
            replies.append(reply_ok(pending.request_id, pending.then(outcome)))
        except Exception as e:  # every outcome becomes a reply, a bug included
            replies.append(_error_reply(pending.request_id, e))
    return replies


def _error_reply(request_id: RequestId, error: Exception) -> bytes:
    """An error reply: a VledgerError with its own code; anything else is a bug, logged."""
    if isinstance(error, VledgerError):
        if not isinstance(error, RequestError):
            log.info("request refused: code=%s", error.code)
        return reply_error(request_id, error)
    log.error("request failed unexpectedly", exc_info=error)
    return reply_error(request_id, VledgerError("internal error; the node logged it"))


Handler = Callable[["IngestService", Caller, Args], object]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    handler: Handler
    roles: frozenset[str]
    args: str
    summary: str
    takes: frozenset[str]  # the argument names it reads: any other is refused, never ignored


COMMANDS: dict[str, Command] = {}


def command(name: str, roles: frozenset[str], args: str, summary: str) -> Callable[[Handler], Handler]:
    """Register ``handler`` as command ``name``; ``args`` names every argument it reads
    (``[x]`` optional, ``a | b`` one or the other). Any command may carry ``otp`` (a client
    holding a code sends it with each request); only the admin commands read it."""
    takes = frozenset(re.findall(r"[a-z_][a-z0-9_]*", args)) | {"otp"}

    def register(handler: Handler) -> Handler:
        COMMANDS[name] = Command(name, handler, roles, args, summary, takes)
        return handler

    return register


def _copy_outcome(source: Future[Any], target: Future[Any]) -> None:
    error = source.exception()
    if error is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())


@dataclass(slots=True)
class _Round:
    """The puts the request loop queued since its last flush: their entries, and the one future
    that each of their replies waits on (it gets each entry's receipt or error, in order)."""

    entries: list[Entry] = field(default_factory=list)
    # Made, completed and read by the request loop's thread but for a round it hands to the store's
    # committer thread: no Condition of its own (ingest/round_future.py).
    future: Future[list[Receipt | Exception]] = field(default_factory=RoundFuture)


class _InRound:
    """Put ``index`` of a round: its receipt among the round's outcomes. One small object a
    put, called once (two partials and a wrapper function cost a put twice as much)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __call__(self, outcomes: list[Receipt | Exception]) -> Receipt:
        """The put's receipt; raises what refused it."""
        outcome = outcomes[self.index]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def reply(self, outcomes: list[Receipt | Exception]) -> dict[str, Any]:
        """The put's reply result (:func:`receipt_map`); raises what refused it."""
        outcome = outcomes[self.index]  # as __call__, inlined: one call fewer on a lone put's answer
        if isinstance(outcome, Exception):
            raise outcome
        return receipt_map(outcome)


def _replicated_map(outcome: tuple[Receipt, list[str]]) -> dict[str, Any]:
    receipt, replicas = outcome
    return {**receipt_map(receipt), "replicas": replicas}


def receipt_map(receipt: Receipt) -> dict[str, Any]:
    return {
        "ledger": receipt.ledger,
        "height": receipt.height,
        "hash": receipt.hash,
        "checksum": receipt.checksum,
        "duplicate": receipt.duplicate,
        "values": receipt.values,
    }


def _member_keys(config: ClusterConfig) -> dict[str, str]:
    """The public key of each node of the configuration that has one in the key directory."""
    keys = {}
    for node in config.nodes.values():
        try:
            keys[node.name] = load_public(config.public_key_path(node.name))
        except KeyMaterialError:
            continue  # such a node cannot reach this one (ingest/members.py logs it)
    return keys


class IngestService:
    def __init__(
        self,
        config: ClusterConfig,
        node: NodeConfig,
        store: ChainStore,
        accounts: AccountLookup,
        admin: AccountAdmin,
        node_keys: Mapping[str, str],
        domain: RulesEngine | None = None,
        executor: Executor | None = None,
        version: str = "0",
        *,
        replicas: ReplicaWaiter | None = None,
        status: Callable[[], dict[str, Any]] | None = None,
        checkpoints: CheckpointServer | None = None,
        refused: Mapping[str, VledgerError] | None = None,
        checkpoint_key: bytes | None = None,
        cosignatures: CosignatureSource | None = None,
        second_factor: SecondFactorCheck | None = None,
        refetch: Callable[[str], None] | None = None,
        homes: Callable[[str], NodeConfig] | None = None,
        promotion: Promotion | None = None,
        keys: HomeKeys | None = None,
        chains: Callable[[str], KeyChain | None] | None = None,
        replaced: Callable[[str], bool] | None = None,
        content_check: ContentChecker | None = None,
    ) -> None:
        self.config = config
        # The node's content-check process (ingest/content_check.py): a round of pipelined
        # puts has its contents decoded there (prepare), off the request thread's GIL.
        self.content_check = content_check
        # An ingest node's: whether a newer epoch of a ledger it holds has another home and
        # this node does not follow it (PROTOCOL 10.9): its copy is no longer the ledger.
        self.replaced = replaced or (lambda ledger: False)
        # Each ledger's home now: of its newest epoch (PROTOCOL 10.9), else the cluster file's.
        self.home_of = homes or config.home_of
        self.promotion = promotion  # an ingest node's: ledger.promote when it is a ledger's standby
        self.node = node
        self.store = store
        self.accounts = accounts
        self.admin = admin
        self.node_keys = node_keys  # node name -> z85 public key, for not_home answers
        # The engine is the store's; its committer thread writes it. The reads here (is a file
        # readable) are single dict and set lookups, which CPython makes atomic.
        self.domain = domain
        self.uploads = Uploads(store.directory / "uploads", store.blobs, config.ingest, recorded=self.file_recorded)
        # A replica's: queue a blob to be copied again from another node (PROTOCOL 7.4); with it,
        # every download checks the copy's SHA-256 before its first byte is sent.
        self.refetch = refetch
        self.members = _member_keys(config)  # node name -> z85 key: the cluster's own nodes
        self.version = version
        self.settings = config.ingest
        self.throttle = Throttle(config.ingest.throttle_rate, config.ingest.throttle_burst)
        self._executor = executor
        self.replicas = replicas
        self.status = status  # extra fields of hello: a replica says whether it is current, a standby its restarts
        self.checkpoints = checkpoints  # each ledger's checkpoints this node serves (PROTOCOL 10.7)
        # Ledgers whose store contradicts a checkpoint this home signed: no write is taken.
        self.refused = refused or {}
        self.checkpoint_key = checkpoint_key  # a home's raw Ed25519 checkpoint key, told in hello
        self.cosignatures = cosignatures  # what the checkpoint command adds to a checkpoint
        self.read_only = node.role != "ingest"
        self.second_factor = second_factor  # None: admin commands need no code (no Redis to check it)
        self._round: _Round | None = None  # the request loop's puts, waiting for flush()
        # The cmd of the request handle() parsed last (None when it did not parse), read by the
        # metrics layer (ingest/metrics.py) for its label, so that it need not decode it again.
        self.last_command: str | None = None
        self.keys = keys  # a home's checkpoint keys: it signs and rotates them (PROTOCOL 13.8)
        self.chains = chains  # each held ledger's checkpoint key chain, for the checkpoint reply

    def prepare(self, datas: Sequence[bytes]) -> Sequence[Checked | None] | None:
        """For a round of requests read together, what the content-check process made of each
        put's content (None for a request to be handled as it is), to be given to :meth:`handle`
        with each; None for a round to be handled entirely as it is (no process, a small round,
        or the process not answering in time). Never raises."""
        checker = self.content_check
        return checker.check(datas) if checker is not None else None

    def handle(self, key: str, data: bytes, checked: Checked | None = None) -> bytes | Pending:
        """The reply to one request, or the Pending reply of one that waits on slow work;
        never raises. ``checked``: what :meth:`prepare` gave for ``data``, if anything; it
        changes no reply, only where the put's content was decoded."""
        request_id = None
        self.last_command = None
        try:
            request = parse_request(data, self.settings.max_message_bytes)
            request_id = request.id
            self.last_command = request.cmd
            result = self._dispatch(key, request, checked)
            if isinstance(result, Later):
                return Pending(request_id, result.future, result.then)
            return reply_ok(request_id, result)
        except VledgerError as e:
            if request_id is None:
                request_id = request_id_of(data)
            return _error_reply(request_id, e)
        except Exception as e:  # a bug (answer, log, and keep serving), or a damaged store
            return _error_reply(request_id, self.store.damaged(e) or e)

    def replies(self, waiting: list[Waiting]) -> list[bytes]:
        """The replies of requests :meth:`handle` answered with a Pending (``waiting``: those,
        in order), their future done (:func:`replies_of`); never raises."""
        return replies_of(waiting)  # type: ignore[arg-type]  # what handle returned: Pending replies (no cast(): a call a put)

    def sent(self, waiting: list[Waiting], replies: list[bytes]) -> None:
        """Nothing waits for replies to have gone out here (the metrics layer counts them)."""

    def flush(self) -> None:
        """Commit the puts handled since the last call as one run of entries under one future
        (ChainStore.submit_entries): a put costs no future of its own. A round of at most
        ``inline_commit_max`` puts is committed here, on this thread (see ChainStore.flush); a
        larger one is handed to the store's committer thread and this returns at once, so
        that the caller reads on while it is written. Their round's future carries each
        outcome, so this never raises."""
        queued, self._round = self._round, None
        if queued is None:
            return
        inline = len(queued.entries) <= self.settings.inline_commit_max
        try:
            # The round's own future, which its replies already wait on: the store completes it.
            # hashed: _entry made each by Entry.from_wire or from_checked, which hash its bytes.
            self.store.submit_entries(queued.entries, wake=not inline, future=queued.future, hashed=True)
        except VledgerError as e:  # the store is closed: every put of the round is answered so
            queued.future.set_exception(e)
            return
        if inline:
            self.store.flush()

    def _dispatch(self, key: str, request: Request, checked: Checked | None = None) -> object:
        caller = self.accounts.lookup(key)
        if caller is None:
            # A key that was revoked (or an account disabled) after its connection was made.
            raise ForbiddenError("this key may not use this node")
        wait = self.throttle.take(key)
        if wait:
            raise ThrottledError(f"too many requests; retry in {wait} ms", retry_after_ms=wait)
        found = COMMANDS.get(request.cmd)
        if found is None:
            raise UnknownCommandError(f"unknown command {request.cmd!r}; 'help' lists them")
        if caller.role not in found.roles:
            raise ForbiddenError(f"the {caller.role} role may not use {request.cmd!r}")
        if self.read_only and found.name not in READ_COMMANDS:
            raise ForbiddenError(f"node {self.node.name} is a {self.node.role}: it serves reads only")
        if not request.args.values.keys() <= found.takes:
            # A misspelt option ("W" for "w") must not be done without: say so.
            # By repr: a msgpack map key may be bin as well as str, and the two do not sort together.
            unknown = sorted(map(repr, set(request.args.values) - found.takes))
            raise BadRequestError(f"{request.cmd!r} takes no argument {', '.join(unknown)}")
        if found.handler is _put:  # straight to it: a lone put's every call counts (ingest/loop.py)
            result = _put_checked(self, caller, request.args, checked)
        else:
            result = found.handler(self, caller, request.args)
        if found.roles == ADMINS:
            # Every admin command passes the second factor (PROTOCOL 16.5): its handler must
            # hand its work over rather than do it.
            if not isinstance(result, AfterSecondFactor):
                raise TypeError(f"the handler of admin command {found.name!r} did not wait for the second factor")
            return self._after_second_factor(caller, request.args, result.call)
        return result

    # --- helpers --------------------------------------------------------------------

    def _after_second_factor(self, caller: Caller, args: Args, call: Callable[[], object]) -> object:
        """``call()``'s result once the caller's ``otp`` checks out. The check and ``call`` run
        in the executor (Redis round trips); a Later that ``call`` returns is waited on."""
        otp = args.optional_text("otp", max_length=MAX_CODE_LENGTH)
        gate = self.second_factor
        if self._executor is None:
            if gate is not None:
                gate.check(caller.account, otp, caller.key)
            return call()
        result: Future[Any] = Future()

        def run() -> None:
            try:
                if gate is not None:
                    gate.check(caller.account, otp, caller.key)
                outcome = call()
            except BaseException as e:
                result.set_exception(self.store.damaged(e) or e)
                return
            if isinstance(outcome, Later):
                outcome.future.add_done_callback(lambda done: _then_into(done, outcome.then, result))
            else:
                result.set_result(outcome)

        self._executor.submit(run)
        return Later(result)

    def _entry(self, caller: Caller, args: Args, checked: Checked | None = None) -> Entry:
        content = args.binary("content")  # its size is checked by Entry.from_wire: too_large, as PROTOCOL 4 says
        nonce = args.uint("nonce")
        limits = self.config.settings.limits
        entry = (
            Entry.from_wire(content, nonce, limits)
            if checked is None
            else Entry.from_checked(content, nonce, checked, limits)
        )
        if entry.content.author != caller.account:
            raise ForbiddenError("a record's author must be the account of the key that sends it")
        if entry.content.request_id.startswith(NODE_REQUEST_PREFIXES):
            raise FieldError(
                f"request id {entry.content.request_id!r}: ids starting {' or '.join(NODE_REQUEST_PREFIXES)} are "
                "the node's, for the records it places for ledger.promote and ledger.rekey"
            )
        if entry.content.ledger == ADMIN_LEDGER:
            raise ForbiddenError(f"the {ADMIN_LEDGER!r} ledger is written by its home node for the admin commands")
        home = self.home_of(entry.content.ledger)
        if home.name != self.node.name:
            raise self._not_home(entry.content.ledger, "written")
        return entry

    def _not_home(self, ledger: str, done: str, why: str = "") -> NotHomeError:
        home = self.home_of(ledger)
        return NotHomeError(
            f"ledger {ledger!r} is {done} on node {home.name!r}{why}",
            home={"node": home.name, "endpoint": home.endpoint, "key": self.node_keys.get(home.name, "")},
        )

    def _replaced(self, ledger: str) -> NotHomeError:
        why = (
            f", its home now: node {self.node.name} was replaced as its home (PROTOCOL 10.9),"
            " and its copy is not the ledger's"
        )
        return self._not_home(ledger, "read", why)

    def held(self, ledger: str) -> str:
        """``ledger`` if this node holds it, for a read.

        Raises NotHomeError naming the home when this node neither holds nor homes it, or holds
        it as a home that a newer epoch replaced (10.9: its records past the handover are not
        the ledger's, and it does not follow the new home); the client asks the home instead.
        Raises NoSuchLedgerError when it is the home and holds none.
        """
        if self.store.size(ledger) > 0:
            if self.replaced(ledger):
                raise self._replaced(ledger)
            return ledger
        if self.home_of(ledger).name != self.node.name:
            raise self._not_home(ledger, "held")
        raise NoSuchLedgerError(f"no ledger {ledger!r}")

    def _check_file_record(self, entry: Entry) -> str | None:
        """A file record on a files ledger must name a blob its author uploaded here, of that size.

        Returns the SHA-256 of the upload it claimed (Uploads.claim: its blob does not expire
        meanwhile), which the caller releases once the record was placed or refused; None when
        the record claims no upload."""
        if entry.content.kind != FILE_KIND or self.store.size(entry.content.ledger) == 0:
            return None
        if self.store.rules(entry.content.ledger).rules.get("type") != "files":
            return None
        payload = entry.content.payload
        sha256, size = payload.get("sha256"), payload.get("size")
        if not isinstance(sha256, str) or not isinstance(size, int):
            return None  # the ledger's rules refuse the payload with a precise error
        # The author must have uploaded these bytes: knowing a file's hash must not be enough
        # to become one of its uploaders (who, on an "uploader" ledger, may read it).
        try:
            check_digest(sha256)
        except BlobError:
            return None  # the ledger's rules refuse it as bad_payload
        if not self.uploads.claim(entry.content.author, sha256):
            raise NotFoundError("upload the file (file.upload) before recording it")
        try:
            held = self.store.blobs.path_of(sha256).stat().st_size
        except FileNotFoundError:
            self.uploads.release(sha256)
            raise NotFoundError("upload the file (file.upload) before recording it") from None
        if held != size:
            self.uploads.release(sha256)
            raise BadRequestError(f"the uploaded file is {held} bytes, the record says {size}")
        return sha256

    def file_recorded(self, sha256: str) -> bool | None:
        """Whether a file record of a ledger this node holds names ``sha256``, by the rules'
        state; None when that cannot be told (no rules here, or a files ledger they are reading
        again). The uploads' sweep deletes an unrecorded upload's blob only on False."""
        if self.domain is None:
            return None
        unknown = False
        for ledger in self.store.ledgers():
            state = self.domain.state(ledger)
            if state is None:
                try:
                    unknown = unknown or self.store.rules(ledger).rules.get("type") == "files"
                except NoSuchLedgerError:
                    continue
                continue
            if isinstance(state.domain, FilesState) and state.domain.file(sha256) is not None:
                return True
        return None if unknown else False

    def readable_file(self, sha256: str, caller: Caller) -> bool:
        """Whether ``caller`` may read the file: as a files ledger here that records it allows, or
        as a node of the cluster (a replica copies every file its ledgers record, PROTOCOL 7.4)."""
        if self.domain is None:
            return False
        member = self.members.get(caller.account) == caller.key
        for ledger in self.store.ledgers():
            state = self.domain.state(ledger)
            if state is None or not isinstance(state.domain, FilesState):
                continue
            if may_read(state.domain, sha256, caller.account) or (member and state.domain.file(sha256) is not None):
                return True
        return False

    def _append(self, entry: Entry, replicas: int = 0, *, wake: bool = False) -> Later:
        """The entry's receipt, once its group commit is durable (and ``replicas`` witnesses
        cosigned a checkpoint covering it). Raises the StoreContradictsCheckpointError of a
        ledger whose store contradicts a checkpoint this home signed.

        The entry waits in the round of the request loop's :meth:`flush`, unless ``wake``: a
        caller off the loop's thread (an admin command after its second factor) has it queued
        and wakes the committer."""
        refusal = self.refused.get(entry.content.ledger)
        watch = self.replicas
        if refusal is not None:
            raise refusal
        keyless = self.keys.missing(entry.content.ledger) if self.keys is not None else None
        if keyless is not None:
            # Acknowledged, its records would reach no copy: no checkpoint of them could be signed.
            raise CheckpointKeyMissingError(keyless)
        if replicas > 0 and watch is None:
            raise BadRequestError("this node does not track replication: a put here takes no w")
        never = watch.never_met(replicas) if replicas > 0 and watch is not None else None
        if never is not None:
            raise BadRequestError(f"{never}: the record is not written")
        if wake:
            durable: Future[Any] = self.store.submit_entry(entry, wake=True)
            receipt_of: Callable[[Any], Receipt] = _as_receipt
            reply_of: Callable[[Any], object] = receipt_map
        else:  # only the loop's thread queues here (and flush takes the round)
            queued = self._round
            if queued is None:
                queued = self._round = _Round()
            receipt_of = in_round = _InRound(len(queued.entries))
            reply_of = in_round.reply
            queued.entries.append(entry)
            durable = queued.future
        if replicas == 0 or watch is None:
            return Later(durable, reply_of)
        timeout_ms = self.config.replication.write_timeout_ms
        replicated: Future[tuple[Receipt, list[str]]] = Future()

        def then_wait(done: Future[Any]) -> None:
            try:
                receipt = receipt_of(done.result())
            except BaseException as e:
                replicated.set_exception(e)
                return
            watch.wait(receipt, replicas, timeout_ms).add_done_callback(lambda f: _copy_outcome(f, replicated))

        durable.add_done_callback(then_wait)
        return Later(replicated, _replicated_map)

    def latest_checkpoint(self, ledger: str) -> bytes | None:
        return self.checkpoints.latest(ledger) if self.checkpoints is not None else None

    def latest_checkpoint_size(self, ledger: str) -> int:
        """The size of the latest checkpoint of ``ledger`` this node signed or verified.
        Raises NotFoundError when there is none (yet)."""
        latest = self.latest_checkpoint(ledger)
        if latest is None:
            raise NotFoundError(f"no checkpoint of ledger {ledger!r} on node {self.node.name} yet")
        return parse_checkpoint(parse_note(latest).text).size

    def cosigned_checkpoint(self, ledger: str, witnesses: int = 0, outside: int = 0) -> GatheredCheckpoint:
        """The largest checkpoint of ``ledger`` this node knows with at least ``witnesses``
        verified cosignatures, ``outside`` of them by outside witnesses its genesis lists.
        Raises NotFoundError when there is none (yet)."""
        latest = self.latest_checkpoint(ledger)
        if latest is None:
            raise NotFoundError(f"no checkpoint of ledger {ledger!r} on node {self.node.name} yet")
        if self.cosignatures is not None:
            gathered = self.cosignatures.gathered(ledger, latest)
            if witnesses > 0:
                # A reader asking for cosignatures takes a checkpoint of an epoch from 2 only with a
                # cluster witness's (the epoch rule, 13.5 step 3): an outside one's alone is no
                # answer to it, though it counts toward ``witnesses`` (outsider o24 F0).
                own = self.cosignatures.cluster_names()
                gathered = [g for g in gathered if meets_epoch_rule(g.checkpoint, g.witnesses, own)]
        else:
            checkpoint = parse_checkpoint(parse_note(latest).text)  # this node signed or verified it
            gathered = [GatheredCheckpoint(checkpoint, latest, ())]
        found = newest(gathered, witnesses)
        if outside > 0:
            listed = self.cosignatures.outside_names(ledger) if self.cosignatures is not None else frozenset()
            enough = (g for g in gathered if len(listed.intersection(g.witnesses)) >= outside)
            found = next((g for g in enough if len(g.witnesses) >= witnesses), None)
        if found is None:
            more = f" ({outside} by outside witnesses)" if outside else ""
            raise NotFoundError(
                f"no checkpoint of ledger {ledger!r} with {witnesses} cosignatures{more} on node {self.node.name} yet"
            )
        return found

    def covering_checkpoint(self, ledger: str, start: int, end: int) -> bytes | None:
        return self.checkpoints.covering(ledger, start, end) if self.checkpoints is not None else None

    def _record(self, record: Record | None, what: str) -> Record:
        if record is None:
            raise NotFoundError(f"no {what} on this node")
        return record

    def _blocking(self, call: Callable[[], object]) -> object:
        """``call``'s result from the executor; without one, ``call`` runs here and now."""
        if self._executor is None:
            return call()
        return Later(self._executor.submit(self._reading, call))

    def _reading(self, call: Callable[[], object]) -> object:
        """``call()`` on an executor thread, a damaged store's error said as one (handle() does
        the same on the loop's thread)."""
        try:
            return call()
        except Exception as e:
            damaged = self.store.damaged(e)
            if damaged is None:
                raise
            raise damaged from e


# --- session commands -------------------------------------------------------------------


@command("hello", EVERYONE, "", "the node's name, version and the ledgers it is home to")
def _hello(service: IngestService, caller: Caller, args: Args) -> object:
    homes = {ledger for ledger, node in service.config.homes.items() if node == service.node.name}
    if service.config.default_home == service.node.name:
        homes.update(ledger for ledger in service.store.ledgers() if ledger not in service.config.homes)
    # A ledger handed over (PROTOCOL 10.9) is its newest epoch's home's: this node's if promoted, not if replaced.
    homes = {ledger for ledger in homes if service.home_of(ledger).name == service.node.name}
    homes.update(ledger for ledger in service.store.ledgers() if service.home_of(ledger).name == service.node.name)
    return {
        "node": service.node.name,
        "version": service.version,
        "protocol": PROTOCOL_VERSION,
        "ledgers": sorted(homes),
        "account": caller.account,
        "role": caller.role,
        "node_role": service.node.role,
        "cluster": service.config.name,
        **({"checkpoint_key": service.checkpoint_key} if service.checkpoint_key is not None else {}),
        **(service.status() if service.status is not None else {}),
    }


@command("ver", EVERYONE, "", "the node's software and protocol versions")
def _ver(service: IngestService, caller: Caller, args: Args) -> object:
    return {"version": service.version, "protocol": PROTOCOL_VERSION}


@command("help", EVERYONE, "[command]", "the commands your role may use, or one command's arguments")
def _help(service: IngestService, caller: Caller, args: Args) -> object:
    name = args.optional_text("command", max_length=32)
    listed = [c for c in COMMANDS.values() if caller.role in c.roles and (name is None or c.name == name)]
    if name is not None and not listed:
        raise NotFoundError(f"no command {name!r} for the {caller.role} role")
    return {
        "commands": [
            {"name": c.name, "args": c.args, "roles": sorted(c.roles), "summary": c.summary}
            for c in sorted(listed, key=lambda c: c.name)
        ]
    }


@command("whoami", EVERYONE, "", "your account, role and key")
def _whoami(service: IngestService, caller: Caller, args: Args) -> object:
    return {"account": caller.account, "role": caller.role, "key": caller.key}


# --- ledgers ----------------------------------------------------------------------------


@command("ledger.create", ADMINS, "content nonce [keep_grants]", "start a ledger from a genesis entry")
def _ledger_create(service: IngestService, caller: Caller, args: Args) -> object:
    entry = service._entry(caller, args)
    ledger = entry.content.ledger
    if entry.content.kind != GENESIS_KIND:
        raise BadGenesisError("ledger.create takes a genesis entry", ledger=ledger, height=0)
    if ledger in GROUP_TAGS:  # its Redis keys would share the group's tag and ACL patterns (10.10)
        raise BadGenesisError(
            f"no ledger may be named {ledger!r}: it is the hash tag of cluster-wide Redis keys", ledger=ledger, height=0
        )
    rules = LedgerRules.from_genesis(entry.content, PROTOCOL_LIMITS)
    check_new_rules(ledger, rules.rules)  # its domain's defaults written out (a resources ledger's bound, 7.3)
    pinned_key(ledger, rules, service.config.name, STANDBY_KEY_FIELD)  # a standby's key of this cluster (10.9)
    if service.checkpoint_key is not None:  # a genesis may pin only this home's checkpoint key
        pinned = pinned_key(ledger, rules, service.config.name)
        if pinned is not None and pinned != home_key(service.config.name, ledger, service.checkpoint_key):
            raise BadGenesisError(
                f"rules.{PINNED_KEY_FIELD} pins another key than {service.node.name}'s checkpoint key",
                ledger=ledger,
                height=0,
            )
    # Outside witnesses a genesis lists must be usable keys (PROTOCOL 13.9), else bad_genesis.
    outside_witnesses(ledger, LedgerRules.from_genesis(entry.content, PROTOCOL_LIMITS).rules, service.config.name)
    # A kind that moves votes or money granted to another account before the ledger existed would
    # let it write beside the creator (16.2): a raw client's create is refused as the command's is.
    # A check at creation only (nothing on the chain says it was made): a retry of a created
    # ledger answers as before, and no replay judges a genesis by it.
    grants = service.domain.grants() if service.domain is not None else None
    if not args.flag("keep_grants") and grants is not None and service.store.size(ledger) == 0:
        refuse_other_holders(grants.table(), ledger, rules.rules, entry.content.author)
    # Run in the executor after the code is checked: no flush of the loop's would take it.
    return AfterSecondFactor(lambda: service._append(entry, wake=True))


@command(
    "ledger.promote",
    ADMINS,
    "ledger [key_not_stolen]",
    "make this node, the ledger's standby, its home in a new epoch (10.9)",
)
def _ledger_promote(service: IngestService, caller: Caller, args: Args) -> object:
    ledger = args.text("ledger", max_length=64)
    key_not_stolen = args.flag("key_not_stolen")  # a failback's confirmation (10.9)
    promotion = service.promotion
    if promotion is None:
        raise ForbiddenError(f"node {service.node.name} takes over no ledger")

    def place(entry: Entry) -> object:
        later = service._append(entry, wake=True)
        return later.then(later.future.result())  # durable (or refused) before promote goes on

    def promote() -> object:
        return promotion.promote(ledger, caller.account, int(time.time() * 1000), place, key_not_stolen=key_not_stolen)

    # Redis round trips and the wait for the handover's fsync: in the executor, after the code.
    return AfterSecondFactor(promote)


@command("ledger.rekey", ADMINS, "ledger", "rotate the ledger's checkpoint key (a record signed by the old key)")
def _ledger_rotate_key(service: IngestService, caller: Caller, args: Args) -> object:
    ledger = args.text("ledger")
    if ledger == ADMIN_LEDGER:
        raise ForbiddenError(f"the {ADMIN_LEDGER!r} ledger is written by its home node for the admin commands")
    if service.home_of(ledger).name != service.node.name:
        raise service._not_home(ledger, "written")
    if service.store.size(ledger) > 0 and STANDBY_KEY_FIELD in service.store.rules(ledger).rules:
        # Its standby's epochs are checked against the genesis key alone (10.9): not both yet.
        raise ForbiddenError(f"ledger {ledger!r} has a standby home: its checkpoint key does not rotate")
    keys = service.keys
    if keys is None:
        raise BadRequestError("this node signs no checkpoints")
    if service.store.size(ledger) == 0:
        raise NoSuchLedgerError(f"no ledger {ledger!r}")
    refusal = service.refused.get(ledger)
    if refusal is not None:
        raise refusal

    def rotate() -> object:
        def append(entry: Entry) -> Receipt:
            return service.store.submit_entry(entry, wake=True).result()

        receipt = keys.rotate(ledger, caller.account, append)
        return {**receipt_map(receipt), "key": keys.key_at(ledger, receipt.height + 1).verifier().encode()}

    return AfterSecondFactor(rotate)


@command("ledger.list", EVERYONE, "", "the ledgers this node holds")
def _ledger_list(service: IngestService, caller: Caller, args: Args) -> object:
    ledgers = []
    for ledger in service.store.ledgers():
        if service.replaced(ledger):
            continue  # a copy that is no longer the ledger's (10.9): its new home lists it
        rules = service.store.rules(ledger)
        head = service.store.stored_head(ledger)  # what the file holds, not a cached head
        ledgers.append(
            {
                "ledger": ledger,
                "home": service.home_of(ledger).name,
                "size": head.height + 1 if head else 0,
                "head": head.hash if head else None,
                "difficulty": rules.difficulty,
                "kinds": list(rules.kinds),
                "type": rules.rules.get("type", "plain"),
                "checkpoint": service.latest_checkpoint(ledger),
            }
        )
    return {"ledgers": ledgers}


@command("put", WRITERS, "content nonce [w]", "append a record (answered once durable, and held by w replicas)")
def _put(service: IngestService, caller: Caller, args: Args) -> object:
    return _put_checked(service, caller, args, None)


def _put_checked(service: IngestService, caller: Caller, args: Args, checked: Checked | None) -> object:
    """put, its content decoded already when ``checked`` (IngestService.prepare) says what it is."""
    entry = service._entry(caller, args, checked)
    replicas = args.uint("w", default=0, maximum=service.config.replication.max_write_concern)
    if entry.content.kind == GENESIS_KIND:
        raise ForbiddenError("a genesis entry goes through ledger.create")
    if entry.content.kind == ROTATION_KIND:
        raise ForbiddenError("a checkpoint key rotation goes through ledger.rekey")
    if entry.content.kind == EPOCH_KIND:  # admin-only as a rotation is: no grant governs it (16.2)
        raise ForbiddenError("a handover goes through ledger.promote")
    claimed = service._check_file_record(entry)
    if claimed is None:
        return service._append(entry, replicas)
    try:
        later = service._append(entry, replicas)
    except BaseException:
        service.uploads.release(claimed)
        raise
    # Held until the record is placed (the rules' state names the file then) or refused.
    later.future.add_done_callback(lambda _: service.uploads.release(claimed))
    return later


@command("get", EVERYONE, "ledger height | hash", "one record's bytes")
def _get(service: IngestService, caller: Caller, args: Args) -> object:
    """The record at a ledger's height, or the record with a hash in any ledger this node holds.

    Both forms at once is bad_request: the hash form ignores ledgers, so a ``ledger`` beside a
    hash would be answered with another ledger's record as if it were that ledger's."""
    if args.has("hash"):
        if args.has("ledger") or args.has("height"):
            raise BadRequestError("give ledger and height, or hash, not both")
        record = service.store.get_by_hash(args.binary("hash", size=HASH_SIZE))
        if record is not None:
            service.held(record.ledger)  # not a replaced home's copy (10.9)
    else:
        ledger, height = args.text("ledger"), args.uint("height", maximum=MAX_HEIGHT)
        record = service.store.get(service.held(ledger), height)
    return {"record": service._record(record, "such record").encode()}


@command("range", EVERYONE, "ledger start [limit]", "a page of records from a height on")
def _range(service: IngestService, caller: Caller, args: Args) -> object:
    ledger = args.text("ledger")
    start = args.uint("start", maximum=MAX_HEIGHT)
    page = service.settings.page_size
    limit = args.uint("limit", default=page, maximum=page) or page
    service.held(ledger)
    # Pages are also bounded in bytes: a client takes in replies of up to twice the request
    # limit, and a page of large records would be cut off by the client's socket, unanswered.
    budget = service.settings.max_message_bytes
    records: list[bytes] = []
    # A store with a hole below its head gives the records it holds, each naming its height
    # (10.6 step 1): the page ends after the last one given, not at start + their count, which
    # sent a reader back over records it had read; a window wholly in the hole is passed over.
    end = start + limit
    run = start  # where the last run of consecutive heights given starts
    for height, data in service.store.range_raw(ledger, start, start + limit):
        if records and len(data) > budget:
            break
        budget -= len(data)
        records.append(data)
        if len(records) == 1 or height != end:
            run = height
        end = height + 1
    size = service.store.stored_size(ledger)
    # Only a checkpoint whose last record is among these helps the reader store them: over a
    # hole, one ending in it went with them (review r14 small28), so it ends in the last run.
    checkpoint = service.covering_checkpoint(ledger, run, end) if records else None
    return {"records": records, "next": end if end < size else None, "checkpoint": checkpoint}


@command("head", EVERYONE, "ledger", "the ledger's last record")
def _head(service: IngestService, caller: Caller, args: Args) -> object:
    record = service._record(service.store.stored_head(service.held(args.text("ledger"))), "head")
    return {"height": record.height, "hash": record.hash, "record": record.encode()}


@command("size", EVERYONE, "ledger", "how many records the ledger holds")
def _size(service: IngestService, caller: Caller, args: Args) -> object:
    return {"size": service.store.stored_size(service.held(args.text("ledger")))}


@command("have", EVERYONE, "hashes", "which of these record hashes this node holds")
def _have(service: IngestService, caller: Caller, args: Args) -> object:
    hashes = args.binary_list("hashes", size=HASH_SIZE, max_items=service.settings.page_size)
    # A replaced home's records are not the ledger's (10.9): it does not say it has them.
    found = [(h, service.store.index_of(h)) for h in hashes]
    return {"have": [h for h, at in found if at is not None and not service.replaced(at[0])]}


# --- checkpoints and proofs (docs/PROTOCOL.md section 14) ------------------------------


@command("checkpoint", EVERYONE, "ledger [witnesses] [outside]", "the latest cosigned checkpoint note this node knows")
def _checkpoint(service: IngestService, caller: Caller, args: Args) -> object:
    ledger = args.text("ledger")
    witnesses = args.uint("witnesses", default=0, maximum=MAX_SIGNATURES - 1)
    outside = args.uint("outside", default=0, maximum=MAX_OUTSIDE_WITNESSES)
    if service.replaced(ledger):
        raise service._replaced(ledger)  # its checkpoints past the handover are fenced ones
    # Off the loop thread where there is an executor: the cosignatures may come from Redis.
    return service._blocking(
        lambda: _checkpoint_reply(service, ledger, service.cosigned_checkpoint(ledger, witnesses, outside))
    )


def _checkpoint_reply(service: IngestService, ledger: str, found: GatheredCheckpoint) -> dict[str, Any]:
    reply = {"checkpoint": found.note, "size": found.checkpoint.size, "witnesses": list(found.witnesses)}
    chain = service.chains(ledger) if service.chains is not None else None
    # The rotations below its size: what a reader needs to follow the key chain to the checkpoint's key.
    rotations = [h for h in chain.heights if h < found.checkpoint.size] if chain is not None else []
    return {**reply, "rotations": rotations}


def _tree_size(service: IngestService, ledger: str) -> int:
    """How many records of ``ledger`` this node holds; NotFoundError for a ledger it does not."""
    if ledger not in service.store.ledgers():
        raise NotFoundError(f"no ledger {ledger!r} on node {service.node.name}")
    if service.replaced(ledger):
        raise service._replaced(ledger)
    return service.store.size(ledger)


def _checked_size(service: IngestService, ledger: str, args: Args, name: str, held: int) -> int:
    size = args.uint(name, maximum=tree.MAX_TREE_SIZE)
    if size > held:
        raise TreeSizeError(f"{name} {size} is past the {held} records node {service.node.name} holds of {ledger!r}")
    return size


@command("proof.inclusion", EVERYONE, "ledger index | hash [size]", "a record's inclusion proof in a tree size")
def _proof_inclusion(service: IngestService, caller: Caller, args: Args) -> object:
    ledger = args.text("ledger")
    held = _tree_size(service, ledger)
    if args.has("hash"):
        if args.has("index"):
            raise BadRequestError("give index or hash, not both")
        found = service.store.index_of(args.binary("hash", size=HASH_SIZE))
        if found is None or found[0] != ledger:
            raise NotFoundError(f"no record of ledger {ledger!r} with that hash on node {service.node.name}")
        index = found[1]
    else:
        index = args.uint("index", maximum=tree.MAX_TREE_SIZE)
    if args.has("size"):
        size = _checked_size(service, ledger, args, "size", held)
    else:
        size = service.latest_checkpoint_size(ledger)
    if index >= size:
        raise TreeSizeError(f"record {index} is not in the tree of size {size} of {ledger!r}")
    return {"index": index, "size": size, "proof": service.store.inclusion_proof(ledger, index, size)}


@command("proof.consistency", EVERYONE, "ledger old new", "the proof that tree size new extends tree size old")
def _proof_consistency(service: IngestService, caller: Caller, args: Args) -> object:
    ledger = args.text("ledger")
    held = _tree_size(service, ledger)
    old = _checked_size(service, ledger, args, "old", held)
    new = _checked_size(service, ledger, args, "new", held)
    if not 0 < old <= new:
        raise BadRequestError(f"a consistency proof needs 0 < old <= new, not old {old} and new {new}")
    return {"old": old, "new": new, "proof": service.store.consistency_proof(ledger, old, new)}


# --- accounts ---------------------------------------------------------------------------


def _admin_command(name: str, args_doc: str, summary: str) -> None:
    def run(service: IngestService, caller: Caller, args: Args) -> object:
        # One node orders the admin ledger, so one node runs every change (PROTOCOL 16.3).
        if service.config.home_of(ADMIN_LEDGER).name != service.node.name:
            raise service._not_home(ADMIN_LEDGER, "written")
        # A refusal that needs neither Redis nor the code comes before it, so that it does not
        # use the code up (a recovery code is good once ever, outsider45): an admin resetting
        # its own factor. A named account that does not exist (no_such_account) or is no admin
        # (bad_request) is told only after the code: the accounts are read in the executor, and
        # a holder of the key alone learns nothing of other accounts (PROTOCOL 16.5).
        if name == "totp.reset" and args.optional_text("account", max_length=64) == caller.account:
            raise ForbiddenError(OWN_RESET)
        return AfterSecondFactor(lambda: service.admin.apply(name, args, caller))

    command(name, ADMINS, args_doc, summary)(run)


_admin_command("account.add", "account role", "create an account with a role")
_admin_command("account.remove", "account", "delete an account and its keys")
_admin_command("account.enable", "account", "let an account's keys in again")
_admin_command("account.disable", "account", "refuse an account's keys from their next request")
_admin_command("key.add", "account key", "bind a CURVE public key (z85) to an account")
_admin_command("key.revoke", "key [account]", "refuse a key from its next request (that account's, if named)")
_admin_command("grant.add", "ledger kind account", "let an account write a kind (or *) of a ledger")
_admin_command("grant.revoke", "ledger kind account", "end an account's grant")
_admin_command("node.rotate", "node curve sign window_ms", "a node's new keys; its old ones work window_ms more")
_admin_command("totp.enroll", "[account]", "a first second factor for an admin (you): its URI and recovery codes")
_admin_command("totp.reset", "account", "a new second factor for another admin: its URI and recovery codes")


@command("totp.session", ADMINS, "", "trade your one-time code for a session of 2 minutes: one code, several commands")
def _totp_session(service: IngestService, caller: Caller, args: Args) -> object:
    otp = args.optional_text("otp", max_length=MAX_CODE_LENGTH)
    gate = service.second_factor
    if gate is None:  # no code is checked here: nothing to open
        return AfterSecondFactor(lambda: {"session": None, "expires_ms": 0})
    # Any ingest node opens one (its code is checked first, in the executor, as for every admin command).
    return AfterSecondFactor(lambda: gate.open_session(caller.account, caller.key, otp))


@command("account.list", ADMINS, "", "every account, its role, state and keys")
def _account_list(service: IngestService, caller: Caller, args: Args) -> object:
    return AfterSecondFactor(lambda: {"accounts": service.admin.list_accounts()})


# --- files ------------------------------------------------------------------------------


@command("file.upload", WRITERS, "sha256 size offset data", "send a file in chunks (then put a file record)")
def _file_upload(service: IngestService, caller: Caller, args: Args) -> object:
    received, complete = service.uploads.receive(
        caller.account,
        args.text("sha256", max_length=64),
        args.uint("size", maximum=service.settings.max_file_bytes),
        args.uint("offset"),
        args.binary("data", max_size=service.settings.file_chunk_bytes),
    )
    return {"received": received, "complete": complete}


@command("file.download", EVERYONE, "sha256 offset length", "read a file in chunks, as its ledger's read rule allows")
def _file_download(service: IngestService, caller: Caller, args: Args) -> object:
    sha256 = args.text("sha256", max_length=64)
    offset = args.uint("offset")
    length = args.uint("length", maximum=service.settings.file_chunk_bytes)
    if not service.readable_file(sha256, caller):
        raise NotFoundError("no such file, or not one you may read")  # the same answer for both
    if service.refetch is not None:
        if not service.store.blobs.has(sha256):
            raise BlobError("this replica has not copied the file yet: ask again shortly, or ask another node")
        if offset == 0 and not service.store.blobs.intact(sha256):
            # Never serve a damaged copy: drop it and copy it again from a node that holds it.
            service.store.blobs.discard(sha256)
            service.refetch(sha256)
            log.error("file blob %s was damaged on disk: discarded, being copied again", sha256)
            raise BlobError("this replica's copy of the file was damaged; it is being copied again: ask again shortly")
    with service.store.blobs.open(sha256) as f:
        size = os.fstat(f.fileno()).st_size
        if offset >= size:  # past the end: no bytes, as a file read gives (and no seek overflow)
            return {"data": b"", "size": size}
        f.seek(offset)
        return {"data": f.read(length), "size": size}
