"""The child of the crash test: appends to a ChainStore from many threads until it is killed.

Usage: ``python crash_writer.py STORE_DIR RUN``. It writes one line to stdout for every
acknowledged append, only after the store's receipt (which comes back once the record is
durable), with a single ``write(2)`` so that a line the parent reads was acknowledged:

    ledger height hexhash request_id

It never stops on its own (except after a safety limit, if its parent is gone); the
parent kills it with SIGKILL at a random moment and checks that every line is in the store.

Request ids are a function of (run, writer, seq) and so is the entry's content, so that a
later run can rebuild an earlier run's entries and send them again, exactly as a client
retries a request whose outcome it never learned.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from vledger.config.settings import Limits
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry
from vledger.node.store import ChainStore, Receipt

LEDGERS = ("alpha", "beta")
KIND = "note"
WRITERS = 4
IN_FLIGHT = 8  # appends each writer keeps queued with submit_entry
SYNC_EVERY = 7  # every so many appends, a writer uses the blocking append() instead
RETRY_EVERY = 11  # every so many appends, a writer sends an acknowledged request again
RECENT = 32  # how many of the previous run's last records per writer are retried at start
HASH_FILL_AT = 24  # a run of the hash index filled every group or two: kills land in fills and between them
HASH_MERGE_STEP = 8  # merges of 8 runs in steps of a few rows: kills land inside merges too
SAFETY_LIMIT_S = 120.0  # the parent kills us long before; this only bounds an orphan's life

LIMITS = Limits()
RULES = LedgerRules(kinds=(KIND,), difficulty=0)


def request_id(run: int, writer: int, seq: int) -> str:
    return f"r{run}-w{writer}-{seq}"


def entry_for(run: int, writer: int, seq: int) -> Entry:
    """The same entry every time for the same (run, writer, seq): a retry sends identical bytes."""
    ledger = LEDGERS[(writer + seq) % len(LEDGERS)]
    content = Content(
        ledger=ledger,
        kind=KIND,
        payload={"run": run, "writer": writer, "seq": seq},
        author=f"writer{writer}",
        request_id=request_id(run, writer, seq),
        ts=1_700_000_000_000 + seq,
    )
    return Entry.prepare(content, RULES.difficulty, LIMITS)


def genesis_entry(ledger: str) -> Entry:
    content = RULES.genesis_content(ledger, "crash-admin", "genesis", 0)
    return Entry.prepare(content, RULES.difficulty, LIMITS)


def report(receipt: Receipt, entry: Entry) -> None:
    """One line per acknowledgement, in one write: a pipe write of < PIPE_BUF bytes is atomic."""
    line = f"{receipt.ledger} {receipt.height} {receipt.hash.hex()} {entry.content.request_id}\n"
    os.write(sys.stdout.fileno(), line.encode())


def die(message: str, code: int) -> None:
    """Leave at once: the parent reads an unexpected exit, and our stderr, as a failure."""
    sys.stderr.write(message)
    sys.stderr.flush()
    os._exit(code)


def check_duplicate(first: Receipt, again: Receipt, entry: Entry) -> None:
    if not again.duplicate or (again.ledger, again.height, again.hash) != (first.ledger, first.height, first.hash):
        die(f"retry of {entry.content.request_id} answered {again}, first answer was {first}\n", 3)


def write(store: ChainStore, run: int, writer: int) -> None:
    """Append forever, IN_FLIGHT at a time, reporting each receipt as it resolves."""
    in_flight: deque[tuple[Entry, Future[Receipt]]] = deque()
    acknowledged: deque[tuple[Entry, Receipt]] = deque(maxlen=64)
    seq = 0
    while True:
        entry = entry_for(run, writer, seq)
        seq += 1
        if seq % SYNC_EVERY == 0:
            receipt = store.append(entry)
            report(receipt, entry)
            acknowledged.append((entry, receipt))
        else:
            in_flight.append((entry, store.submit_entry(entry)))
        while len(in_flight) >= IN_FLIGHT:
            done, future = in_flight.popleft()
            receipt = future.result()
            report(receipt, done)
            acknowledged.append((done, receipt))
        if seq % RETRY_EVERY == 0 and acknowledged:
            first_entry, first = acknowledged[0]
            again = store.append(first_entry)
            check_duplicate(first, again, first_entry)
            report(again, first_entry)


def retry_previous_run(store: ChainStore, run: int) -> None:
    """Send again the previous run's last requests and the ones it may not have sent yet.

    Those it committed must come back as duplicates of the stored record (whether or not
    their acknowledgement reached the parent); the others are appended now.
    """
    last_seq: dict[int, int] = {}
    for ledger in LEDGERS:
        size = store.size(ledger)
        for record in store.range(ledger, max(1, size - RECENT * WRITERS)):
            payload = record.content.payload
            if payload["run"] == run - 1:
                last_seq[payload["writer"]] = max(last_seq.get(payload["writer"], -1), payload["seq"])
    for writer, top in sorted(last_seq.items()):
        for seq in range(max(0, top - RECENT // 2), top + IN_FLIGHT + 1):
            entry = entry_for(run - 1, writer, seq)
            receipt = store.append(entry)
            held = store.get(receipt.ledger, receipt.height)
            if held is None or held.hash != receipt.hash or held.content_bytes != entry.content_bytes:
                die(f"retry of {entry.content.request_id} answered {receipt}, the store holds {held}\n", 3)
            report(receipt, entry)


def guarded(target: Callable[..., None], *args: object) -> None:
    """Run a writer; any failure ends the whole process with its traceback on stderr."""
    try:
        target(*args)
    except BrokenPipeError:
        os._exit(0)  # the parent is gone
    except BaseException:
        die(traceback.format_exc(), 2)


def main() -> None:
    directory, run = Path(sys.argv[1]), int(sys.argv[2])
    store = ChainStore(directory, origin="crash-node", hash_fill_at=HASH_FILL_AT, hash_merge_step=HASH_MERGE_STEP)
    for ledger in LEDGERS:
        # Every run creates the ledgers again: after the first, the store answers a duplicate.
        entry = genesis_entry(ledger)
        report(store.create_ledger(entry), entry)
    threads = [threading.Thread(target=guarded, args=(write, store, run, w), daemon=True) for w in range(WRITERS)]
    if run > 0:
        threads.append(threading.Thread(target=guarded, args=(retry_previous_run, store, run), daemon=True))
    for thread in threads:
        thread.start()
    threads[0].join(SAFETY_LIMIT_S)
    die("crash writer: safety limit reached without being killed\n", 4)


if __name__ == "__main__":
    guarded(main)
