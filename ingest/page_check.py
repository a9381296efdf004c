"""Catch-up pages checked ahead in a second process: the follower's use of the second core.

A follower catching up spends most of its time on each record's checks (docs/PROTOCOL.md
section 4: canonical form, checksum, proof of work, link) and its Merkle leaf hash, all on
one core under the GIL. A ``PageChecker`` runs those checks in a worker process on the
page *after* the one the follower is taking: the follower hands it a page as soon as it is
fetched and, by the time it needs it, gets back how many leading rows passed
(``ChainVerifier``'s fast path, every check of section 4 at once) and their leaf hashes.

What the worker's word is worth, and what the follower still checks itself:

* The worker checks a page's rows in order as a chain: from the start the follower gives it
  (the height, link and rules its own chain stands on), or from where the worker's previous
  page ended, when that page passed whole. Any row it is not sure of ends the passed prefix.
* The follower builds the passed rows' Records without checking them again, from the values
  the worker read them as (ChainVerifier.take_values, from the expression that checked each
  row: the follower's thread does not decode them), and takes each only if it says the height it was
  sent as and its ``prev`` is the link of the row before, the first one the link its own
  chain ends on: so the worker's chain is tied to the follower's, row by row.
* The follower grows its Merkle tree by the worker's hashes of the page's complete 16-leaf
  subtrees (each whose leaves lie between two checkpoints), and compares its root with the
  signed checkpoint's, to which each is an input: a false one cannot pass. A root that differs
  is worked out again from the leaves alone; if that one matches, the worker lied and counts
  as broken (:meth:`PageChecker.distrust`), and the run is stored.
* Every row past the prefix, every ``checkpoint_key`` record, every checkpoint note and every
  decision to store goes the follower's own way, as without a checker: a bad row is named
  and refused exactly as before. A checker that fails (its process gone) is dropped, with a
  warning, and the follower checks everything itself. Until the worker has started (it
  says :data:`READY`), the follower does not wait for it: it checks the pages itself. Nor
  does it wait for the process to be started: that runs on a thread of the checker's (a
  second on a loaded machine, the first time, with the forkserver), so the follower's
  thread, which also takes the live feed, never stands still for it.

Nothing here touches the store; the follower (vledger.ingest.follow) drives it.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import marshal
import multiprocessing
import multiprocessing.connection
import multiprocessing.reduction
import pickle
import threading
import time
from dataclasses import dataclass, field

from ..broker.shm import take_ownership
from ..config.settings import PROTOCOL_LIMITS
from ..node.ledger import LedgerRules
from ..node.record import RecordColumns, columns_of_fields
from ..node.storefile import STORED_LEVEL
from ..node.tree import leaf_hash, subtree_hashes
from ..node.verify import ChainVerifier

log = logging.getLogger(__name__)

KEPT_LEAVES = 1 << STORED_LEVEL  # the leaves of the smallest subtree a store keeps (node/store.py's)
STOP_WAIT = 5.0  # seconds a stopping worker is given before it is terminated
READY = "ready"  # the worker's first message: it has imported what it checks with
# The first byte of an answer sent as marshal data (see _encode); a pickle never begins with it.
MARSHALLED = b"\x00"
MARSHAL_VERSION = 4
COLUMNS = len(columns_of_fields([]))  # a record's values, a column each


@dataclass(frozen=True, slots=True)
class Start:
    """Where a page's chain starts: the height its first row must have, the link it must
    stand on, and the ledger's rules (the genesis held: the worker never checks a genesis)."""

    height: int
    prev: bytes
    rules: LedgerRules


@dataclass(frozen=True, slots=True)
class Checked:
    """The worker's answer for a page: its first ``len(leaves)`` rows passed every check of
    section 4 as a chain, and these are their Merkle leaf hashes (docs/PROTOCOL.md 12).

    ``fields``: those rows' values, read by the worker, a column each
    (vledger.node.record.RecordColumns); None: the follower decodes the rows itself
    (record_of_checked). Decoding a row's two msgpack maps was most of what building its Record
    cost the follower's thread (~5.7 us a record), and the worker has a core of its own for it."""

    leaves: list[bytes]
    fields: RecordColumns | None = None
    # The hashes of the complete subtrees of KEPT_LEAVES leaves among those rows, in order, the
    # first of index ``first_subtree``: the follower grows its tree by one hash for each such 16
    # leaves (node/store.py's grow_kept_by), where it took 15 (~1 us a record of its thread, under the GIL).
    subtrees: list[bytes] = field(default_factory=list)
    first_subtree: int = 0


class PageChecker:
    """A worker process that checks pages for one follower, in the order they are handed over.

    ``submit`` hands a page over and returns at once; ``result`` gives the answers in the same
    order. Once :meth:`ready`, pages may be submitted on one thread (the follower's fetch
    thread) while answers are taken on another (the follower's): the pipe's two directions
    are apart and the pages waiting are a deque (append and popleft are atomic); everything
    else is one thread's. Raises nothing once started: a worker that cannot be reached makes
    :attr:`broken` true and every later answer empty.
    """

    def __init__(self) -> None:
        # Started by begin (a replica, at its start), else at the first catch-up page (ready or
        # submit): not by making one, so that a follower that never catches up needs no process.
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: multiprocessing.connection.Connection | None = None
        # The process is started on a thread of its own: starting it (and, the first time, the
        # forkserver, which imports the checks) takes a second of a loaded machine, and the
        # follower's thread, which also takes the live feed, must not stand still that long.
        self._starting: threading.Thread | None = None
        self._start_error: BaseException | None = None
        self._waiting: collections.deque[int] = collections.deque()  # rows of each page handed over
        self.broken = False
        self._ready = False
        self.passed = 0  # rows it passed, all pages together (what the follower was spared)

    def begin(self) -> None:
        """Start the worker now, on the checker's own thread, and return at once: a catch-up
        that starts before the worker is ready checks its pages itself (a loaded machine takes
        seconds to start one: it missed most of a 20,000-record catch-up)."""
        self._start(timeout=0.0)

    def _start(self, timeout: float | None = None) -> multiprocessing.connection.Connection | None:
        """The pipe to the worker, whose start is begun on the first call; None while it is
        still starting after ``timeout`` seconds (None: waits until it has), or once broken."""
        if self._starting is None and not self.broken:
            self._starting = threading.Thread(target=self._launch, name="page-check-start", daemon=True)
            self._starting.start()
        if self._starting is not None and self._conn is None and not self.broken:
            self._starting.join(timeout)
            if self._starting.is_alive():
                return None
            if self._start_error is not None:  # read only once the starting thread is over
                self._fail(self._start_error)
        return None if self.broken else self._conn

    def _launch(self) -> None:
        """On the starting thread: start the worker's process (what ``_start`` waits for)."""
        # forkserver: the worker never inherits the node's threads (its committer, its sockets) mid-flight.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])  # the server imports this module once, not each worker
        take_ownership()  # what a node killed with its process group left in /dev/shm is removed
        ours, theirs = context.Pipe()
        process = context.Process(target=_serve, args=(theirs,), name="vledger-page-check", daemon=True)
        try:
            process.start()
        except OSError as e:
            ours.close()
            self._start_error = e
            return
        finally:
            theirs.close()
        log.info("catch-up pages are checked ahead in process %s", process.pid)
        self._process = process
        self._conn = ours  # last: _start reads the others once the thread is over

    @property
    def pid(self) -> int | None:
        """The worker's process id; None until it is started (:meth:`begin`, or the first catch-up page)."""
        return self._process.pid if self._process is not None else None

    def ready(self, timeout: float = 0.0) -> bool:
        """Whether the worker has started, waiting up to ``timeout`` seconds for it to say so."""
        deadline = time.monotonic() + timeout
        if not self._ready and not self.broken and (conn := self._start(timeout)) is not None:
            try:
                if conn.poll(max(0.0, deadline - time.monotonic())):
                    self._take_ready()
            except (OSError, EOFError) as e:
                self._fail(e)
        return self._ready

    def _take_ready(self) -> None:
        assert self._conn is not None  # only after _start
        message = self._conn.recv()
        if message != READY:
            self._fail(RuntimeError(f"the worker said {message!r} first, not {READY!r}"))
        self._ready = not self.broken

    def submit(self, ledger: str, rows: list[bytes], start: Start | None) -> None:
        """Hand ``rows`` (record bytes of ``ledger``, by height) over; ``start`` None: they
        follow the rows handed over last, and are checked only if those passed whole."""
        conn = self._start()
        if conn is None:
            self._waiting.append(0)
            return
        try:
            conn.send((ledger, rows, start))
        except (OSError, ValueError) as e:
            self._fail(e)
        self._waiting.append(len(rows))

    def result(self) -> Checked:
        """The answer for the oldest page handed over and not answered yet (empty if broken)."""
        if not self._waiting:
            raise RuntimeError("no page was handed over")
        self._waiting.popleft()
        if self.broken:
            return Checked([])
        try:
            if not self._ready:
                self._take_ready()
            answer = _decode(self._conn.recv_bytes()) if self._conn is not None and not self.broken else None
        except (OSError, EOFError, TypeError, ValueError, pickle.UnpicklingError) as e:
            self._fail(e)
            return Checked([])
        if not isinstance(answer, Checked):  # the worker's own failure, as text
            self._fail(RuntimeError(str(answer)))
            return Checked([])
        if answer.fields is not None and (
            len(answer.fields) != COLUMNS or any(len(column) != len(answer.leaves) for column in answer.fields)
        ):
            counts = sorted({len(column) for column in answer.fields})
            self._fail(RuntimeError(f"{counts} rows' values for {len(answer.leaves)} leaves"))
            return Checked([])
        self.passed += len(answer.leaves)
        return answer

    def waiting(self) -> int:
        """How many pages were handed over whose answer was not taken yet."""
        return len(self._waiting)

    def discard(self) -> None:
        """Drop the answers of every page handed over (the follower will not use them)."""
        while self._waiting:
            self.result()

    def close(self) -> None:
        """Stop the worker (terminated if it does not stop in ``STOP_WAIT`` seconds); one never
        started stays so (later calls find it broken)."""
        if self._starting is not None:
            self._starting.join(STOP_WAIT)  # a start under way ends first: its process is stopped below
        if self._conn is None or self._process is None:
            self.broken = True
            return
        if not self.broken:
            with contextlib.suppress(OSError, ValueError):  # gone already: terminated below
                self._conn.send(None)
        self._conn.close()
        self._process.join(STOP_WAIT)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(STOP_WAIT)

    def distrust(self, why: str) -> None:
        """The follower found an answer false (its subtrees gave another root than its leaves):
        the worker is broken from now on, and the follower checks everything itself."""
        self._fail(RuntimeError(why))

    def _fail(self, error: BaseException) -> None:
        if not self.broken:
            log.warning("page checker gone (%s): the follower checks every record itself", error)
        self.broken = True


def check_page(verifier: ChainVerifier | None, rows: list[bytes]) -> tuple[Checked, bool]:
    """The answer for the leading ``rows`` that ``verifier``'s fast path takes, in order
    (advancing it): their leaf hashes and values; and whether every row passed. None checks
    nothing.

    The page in one call (take_values: a call a row cost ~1 us a record), and the values from
    the expression that checked each row (3.4 -> ~1 us a record: the two maps not decoded again)."""
    if verifier is None:
        return Checked([], columns_of_fields([])), False
    first = verifier.next_height  # the first row's leaf index
    names: dict[bytes, str] = {}  # a page's: marshal writes each name once (a reference after)
    fields = verifier.take_values(rows, names)
    passed = len(fields)
    leaves = [leaf_hash(data) for data in rows[:passed]]
    begin = -first % KEPT_LEAVES  # the leaves before the first subtree that starts among them
    whole = max(0, len(leaves) - begin) // KEPT_LEAVES * KEPT_LEAVES
    subtrees = subtree_hashes(leaves[begin : begin + whole], STORED_LEVEL)
    # A column each (0.45 us a record here): what the follower builds its Records from.
    return Checked(leaves, columns_of_fields(fields), subtrees, (first + begin) // KEPT_LEAVES), passed == len(rows)


def _encode(checked: Checked) -> bytes:
    """``checked`` as marshal data of its fields (after MARSHALLED), or pickled when a value is not
    one marshal writes (a payload of another type than msgpack's: none that decoding gives).

    Why marshal: it writes and reads the builtin types of an answer in C without pickle's memo
    of every object (the worker's pickling 1.85 -> 0.79 us a record, the follower's unpickling
    1.05 -> 0.87, same page of 1,000 records). Its format is only the same interpreter's, which
    the worker is (the follower's executable, by the forkserver), and, like a pickle, what it
    reads is trusted: the worker is the follower's own process."""
    try:
        return MARSHALLED + marshal.dumps(
            (checked.leaves, checked.fields, checked.subtrees, checked.first_subtree), MARSHAL_VERSION
        )
    except ValueError:
        return bytes(multiprocessing.reduction.ForkingPickler.dumps(checked))


def _decode(message: bytes) -> object:
    """What the worker sent as bytes (see _encode): a Checked, or its failure's text."""
    if message[:1] == MARSHALLED:
        return Checked(*marshal.loads(memoryview(message)[1:]))  # noqa: S302 - our own worker, see _encode
    return pickle.loads(message)  # noqa: S301 - our own worker (what recv() read before)


def _serve(conn: multiprocessing.connection.Connection) -> None:
    """The worker: answers each page with a Checked, until told to stop (None) or the pipe closes."""
    verifier: ChainVerifier | None = None
    try:
        conn.send(READY)
        while (message := conn.recv()) is not None:
            ledger, rows, start = message
            if start is not None:
                verifier = ChainVerifier.after(ledger, start.height - 1, start.prev, start.rules, PROTOCOL_LIMITS)
            elif verifier is not None and verifier.ledger != ledger:
                verifier = None
            try:
                checked, whole = check_page(verifier, rows)
            except Exception as e:  # a fault of this worker: reported to the follower, which checks itself
                conn.send(f"{type(e).__name__}: {e}")
                continue
            if not whole:
                verifier = None  # the next page continues from nowhere: checked only with a start
            conn.send_bytes(_encode(checked))
    except (EOFError, OSError, KeyboardInterrupt):
        pass  # the follower is gone: nothing to answer
    finally:
        conn.close()
