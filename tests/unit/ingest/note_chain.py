"""A ledger of plain ``note`` records appended to a real ChainStore: what the outbox, its
process and a replica's relay are tested on."""

from __future__ import annotations

from vledger.config.settings import Limits
from vledger.node.ledger import LedgerRules
from vledger.node.record import Content, Entry
from vledger.node.store import ChainStore

LIMITS = Limits()
T0 = 1_790_000_000_000


def append(store: ChainStore, ledger: str, count: int) -> None:
    """``count`` more records on ``ledger`` (its genesis first if it is new), in one group commit or a few."""
    entries = []
    if ledger not in store.ledgers():
        rules = LedgerRules(("note",), 0, {})
        entries.append(Entry.prepare(rules.genesis_content(ledger, "admin", "create-1", T0), 0, LIMITS))
    start = store.size(ledger) + len(entries)
    for i in range(start, start + count - len(entries)):
        entries.append(Entry.prepare(Content(ledger, "note", {"n": i}, "Zoe.1", f"r-{i}", T0 + i), 0, LIMITS))
    for future in [store.submit_entry(e) for e in entries]:
        future.result()
