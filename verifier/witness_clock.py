"""Each witness's clock as its cosignatures in Redis date it (PROTOCOL 10.5, ``witness_clock``).

A witness stamps every cosignature/v1 line with ``T`` from its own clock (13.4). Readers that
judge a head's freshness ignore a ``T`` more than the clock skew ahead of their own (11.4), so a
witness whose clock ran ahead fools none of them; but its lines still count toward ``w`` and are
served, and nothing else says that its clock is wrong (outsiders o13 F8, o14: a day ahead under
libfaketime went unnoticed). The verifier looks at the line each witness wrote last on each
ledger and names the witness whose line is dated beyond the skew past Redis's clock.

Pure: notes, keys and a time in, verdicts out; a cache keeps a note that did not change from
being verified again at every look.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..node.cosigning import MAX_CLOCK_SKEW_MS
from ..node.errors import NoteError
from ..node.note import Cosignature, VerifierKey, parse_checkpoint, parse_note, verify_signature
from ..node.times import time_text

WITNESS_CLOCK = "witness_clock"


@dataclass(frozen=True, slots=True)
class WitnessLine:
    """A witness's last verified cosignature line on ``ledger``: the checkpoint's ``size`` and
    the line's ``timestamp`` (T, POSIX seconds)."""

    ledger: str
    size: int
    timestamp: int

    def ahead_ms(self, now_ms: int) -> int:
        """How far ``T`` is past ``now_ms`` (negative: before it)."""
        return self.timestamp * 1000 - now_ms


@dataclass(frozen=True, slots=True)
class ClockVerdict:
    """One look at a witness's lines: ``ahead``, the line dated furthest past the reader's clock
    when it is more than MAX_CLOCK_SKEW_MS past (None: none is), and ``lines``, how many of its
    ledgers' notes carried a line of its that verified (0: nothing tells its clock)."""

    witness: str
    ahead: WitnessLine | None
    lines: int


def ahead_detail(line: WitnessLine, now_ms: int) -> str:
    """The ``witness_clock`` alert's sentence about ``line``, dated past ``now_ms``."""
    return (
        f"its cosignature of {line.ledger} at size {line.size} in Redis is dated {time_text(line.timestamp * 1000)}, "
        f"{line.ahead_ms(now_ms) // 1000} s ahead of Redis's clock ({time_text(now_ms)}; {MAX_CLOCK_SKEW_MS // 1000} s "
        "of skew allowed): its host's clock runs ahead. Readers ignore such a date when they judge a head's "
        "freshness, so its cosignatures keep no head fresh, while they still count toward a put's w. Set its "
        "clock right: the alert closes once its newest cosignature of every ledger is dated within the skew"
    )


def newest_line(ledger: str, note: bytes, keys: Iterable[VerifierKey], now_ms: int) -> WitnessLine | None:
    """The last line of ``note`` (a witness's note of ``ledger`` in Redis) by one of ``keys`` (that
    witness's keys in force, by name and key id): the one it wrote last, since its note carries
    its first line on the checkpoint, then its newest (PROTOCOL 10.7). A line dated more than the
    skew past ``now_ms`` counts only if it verifies (a forged one is ``bad_cosignature``'s, and
    tells nothing of the clock); one within it is taken as it reads, unverified: only the
    witness's own Redis user writes its note, and an Ed25519 check of every busy ledger's note
    at each look cost the verifier ~87 us a note (review r20 F7). None for a note that is no
    checkpoint or carries no such line."""
    wanted = tuple(keys)
    try:
        parsed = parse_note(note)
        size = parse_checkpoint(parsed.text).size
    except NoteError:
        return None
    for line in reversed(parsed.signatures):
        by = [key for key in wanted if line.is_by(key)]
        if not by:
            continue
        try:
            found = WitnessLine(ledger, size, Cosignature.from_note_signature(line).timestamp)
        except NoteError:
            continue
        if found.ahead_ms(now_ms) <= MAX_CLOCK_SKEW_MS or any(verify_signature(parsed.text, line, key) for key in by):
            return found
    return None


class WitnessClocks:
    """Judges each witness's clock from its notes, verifying a note only when it changed."""

    def __init__(self) -> None:
        # (witness, ledger) -> (the note last verified and the keys it was verified with, its
        # newest line): a quiet ledger's note stays the same for a recosign interval, and each
        # look would verify it again.
        self._seen: dict[tuple[str, str], tuple[tuple[bytes, tuple[VerifierKey, ...]], WitnessLine | None]] = {}

    def look(
        self, notes: Mapping[str, Mapping[str, bytes]], keys: Mapping[str, Iterable[VerifierKey]], now_ms: int
    ) -> list[ClockVerdict]:
        """A verdict for each witness of ``keys`` (witness -> its keys in force) over ``notes``
        (ledger -> witness -> the note Redis holds under its name), against ``now_ms`` (Redis's clock)."""
        verdicts = []
        seen: dict[tuple[str, str], tuple[tuple[bytes, tuple[VerifierKey, ...]], WitnessLine | None]] = {}
        for witness, witness_keys in keys.items():
            held = tuple(witness_keys)
            found = []
            for ledger, by_witness in notes.items():
                note = by_witness.get(witness)
                if note is None:
                    continue
                cached = self._seen.get((witness, ledger))
                line = (
                    cached[1]
                    if cached is not None and cached[0] == (note, held)
                    else newest_line(ledger, note, held, now_ms)
                )
                seen[(witness, ledger)] = ((note, held), line)
                if line is not None:
                    found.append(line)
            furthest = max(found, key=lambda line: line.timestamp, default=None)
            ahead = furthest if furthest is not None and furthest.ahead_ms(now_ms) > MAX_CLOCK_SKEW_MS else None
            verdicts.append(ClockVerdict(witness, ahead, len(found)))
        self._seen = seen
        return verdicts
