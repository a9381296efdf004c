"""A witness whose clock runs far ahead is named (PROTOCOL 10.5 ``witness_clock``; outsiders o13
F8, o14: a witness under libfaketime +1 day had its lines counted and served, and nobody said so)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from vledger.broker.replication import ReplicationLedger
from vledger.node.cosigning import MAX_CLOCK_SKEW_MS
from vledger.node.note import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    Checkpoint,
    Note,
    NoteSignature,
    SignerKey,
    cosign,
    parse_note,
    sign,
    with_newest,
)
from vledger.node.witness import witness_name
from vledger.tests.unit.verifier.test_checks import LEDGER, WITNESS, Clock, FakeNode, _two_nodes
from vledger.verifier.checks import ClusterChecks
from vledger.verifier.witness_clock import WITNESS_CLOCK, WitnessClocks, newest_line

HOME = SignerKey(f"test/{LEDGER}", ALG_ED25519, bytes(range(32)))
THIEF = SignerKey("test/witness/replica-1", ALG_COSIGNATURE_V1, bytes(range(9, 41)))  # the name, not the key
DAY = 86_400
KEY = f"replica-1||{WITNESS_CLOCK}"


def _note(size: int, *stamps: int, by: SignerKey = WITNESS) -> bytes:
    """The home's checkpoint of ``size`` with a line of ``by`` at each of ``stamps`` (seconds), in order."""
    text = Checkpoint(f"test/{LEDGER}", size, bytes([size % 256]) * 32).body()
    note = Note(text, (sign(text, HOME), cosign(text, by, stamps[0]).note_signature())).encode()
    for stamp in stamps[1:]:
        again = Note(text, (sign(text, HOME), cosign(text, by, stamp).note_signature())).encode()
        note = with_newest(note, again)
    return note


def _redis_now_ms(repl: ReplicationLedger) -> int:
    seconds, micros = repl.client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_the_line_written_last_is_taken_and_a_forged_one_is_not() -> None:
    """The note carries the first line on a checkpoint, then the newest (10.7): the newest is
    the witness's clock now. A line that does not verify with its keys (its name, another key)
    says nothing of its clock, nor does a note that is no checkpoint."""
    now = int(time.time())
    keys = (WITNESS.verifier(),)
    first_ahead_then_right = _note(7, now + DAY, now)
    found = newest_line(LEDGER, first_ahead_then_right, keys, now * 1000)
    assert found is not None
    assert (found.ledger, found.size, found.timestamp) == (LEDGER, 7, now)
    assert newest_line(LEDGER, _note(7, now + DAY, by=THIEF), keys, now * 1000) is None
    assert newest_line(LEDGER, b"not a note\n\n\xe2\x80\x94 x AAAA\n", keys, now * 1000) is None


def test_a_line_dated_ahead_counts_only_if_it_verifies() -> None:
    """Lines within the skew are read as they are (only the witness's Redis user writes its
    note; review r20 F7: verifying each busy ledger's note cost ~87 us), but one dated past it
    raises an alert only if its signature verifies: a line of its name and key id whose
    signature is not its own (dated a day ahead) falls back to the line before it."""
    now = int(time.time())
    keys = (WITNESS.verifier(),)
    parsed = parse_note(_note(7, now))
    line = parsed.signatures[-1]
    forged = NoteSignature(line.name, line.key_id, (now + DAY).to_bytes(8, "big") + line.signature[8:])
    note = Note(parsed.text, (*parsed.signatures, forged)).encode()
    found = newest_line(LEDGER, note, keys, now * 1000)
    assert found is not None and found.timestamp == now


def test_a_line_beyond_the_skew_is_ahead_and_one_within_it_is_not() -> None:
    now = int(time.time())
    clocks = WitnessClocks()
    keys = {"replica-1": (WITNESS.verifier(),)}
    within = clocks.look({LEDGER: {"replica-1": _note(3, now + MAX_CLOCK_SKEW_MS // 1000)}}, keys, now * 1000)
    assert [(v.witness, v.ahead, v.lines) for v in within] == [("replica-1", None, 1)]
    beyond = clocks.look({LEDGER: {"replica-1": _note(3, now + MAX_CLOCK_SKEW_MS // 1000 + 1)}}, keys, now * 1000)
    assert beyond[0].ahead is not None and beyond[0].ahead.size == 3
    # No note: nothing tells its clock (lines 0), so an alert of it is not closed on that.
    assert [v.lines for v in clocks.look({LEDGER: {}}, keys, now * 1000)] == [0]


def test_the_verifier_raises_witness_clock_and_closes_it_once_a_later_line_is_within_the_skew(
    redis_client: Any, tmp_path: Path
) -> None:
    """Against Redis's own clock (TIME): replica-1's note dated a day ahead raises witness_clock
    about replica-1 with the skew in seconds; its next cosignature, dated right, closes it. A line
    a day ahead under its name by a key that is not its own raises nothing."""
    config = _two_nodes(tmp_path)
    own = SignerKey(witness_name(config.name, "replica-1"), ALG_COSIGNATURE_V1, WITNESS.seed)
    thief = SignerKey(own.name, ALG_COSIGNATURE_V1, THIEF.seed)
    chain = [bytes([i]) * 32 for i in range(11)]
    nodes = {"ingest-1": FakeNode("ingest-1", chain), "replica-1": FakeNode("replica-1", chain)}
    repl = ReplicationLedger(redis_client)
    repl.client.hset(repl.ledgers_key, LEDGER, "ingest-1")
    witnesses = lambda: (own.verifier(),)  # noqa: E731
    checks = ClusterChecks("verifier-1", config, repl, nodes, clock=Clock(), witness_keys=witnesses)  # type: ignore[arg-type]
    checks.start()
    now = _redis_now_ms(repl) // 1000

    repl.publish_cosignature(LEDGER, "replica-1", 11, _note(11, now + DAY, by=thief))
    checks.watch_witness_clocks()
    assert KEY not in repl.open_alerts()

    repl.publish_cosignature(LEDGER, "replica-1", 11, _note(11, now + DAY, by=own))
    checks.watch_witness_clocks()
    alert = repl.open_alerts()[KEY]
    assert (alert["node"], alert["ledger"], alert["source"], alert["found"]) == (
        "replica-1",
        "",
        "replica-1",
        str(now + DAY),
    )
    skew = int(alert["detail"].split(" s ahead of Redis's clock")[0].rsplit(" ", 1)[1])
    assert DAY - 5 <= skew <= DAY, alert["detail"]
    assert f"its cosignature of {LEDGER} at size 11" in alert["detail"]

    repl.publish_cosignature(LEDGER, "replica-1", 12, _note(12, _redis_now_ms(repl) // 1000, by=own))
    checks.watch_witness_clocks()
    assert KEY not in repl.open_alerts()
