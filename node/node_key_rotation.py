"""Which keys of a node are in force when: its key generations, from the admin ledger.

A node starts with the keys of its files in the key directory (generation 0: ``<node>.key``,
``<node>.sign.pub``). Each ``key_rotation`` record of the admin ledger (docs/PROTOCOL.md 16.1
and 16.6) gives it the next generation: its CURVE public key ``curve`` (Z85) and its Ed25519
key ``sign`` (hex; ``""`` for a node that has none, the verifier), from the record's
``accepted`` time on, while the generation before it stays in force until the record's
``until``. So at any time a node has one or two CURVE keys in force: the newest, and the one
before it during its overlap window.

Pure: times are milliseconds since 1970 given by the caller, keys are strings; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# A Z85 CURVE public key (40 characters) and a raw Ed25519 public key in lower-case hex.
_Z85_KEY = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")
_ED25519_HEX = re.compile(r"[0-9a-f]{64}")


def curve_key_problem(value: object) -> str | None:
    """What is wrong with ``value`` as a Z85 CURVE public key, or None."""
    if not isinstance(value, str) or _Z85_KEY.fullmatch(value) is None:
        return f"curve {value!r} is not a Z85 CURVE public key (40 characters)"
    return None


def sign_key_problem(value: object) -> str | None:
    """What is wrong with ``value`` as an Ed25519 public key in hex, or None."""
    if not isinstance(value, str) or _ED25519_HEX.fullmatch(value) is None:
        return f"sign {value!r} is not an Ed25519 public key (64 lower-case hex digits)"
    return None


# A key_rotation's ``sign`` for a node that has no Ed25519 key (the verifier, PROTOCOL 16.6).
NO_SIGN_KEY = ""


def rotation_sign_problem(value: object) -> str | None:
    """What is wrong with ``value`` as a ``key_rotation`` record's ``sign`` (PROTOCOL 16.1), or
    None: an Ed25519 public key in hex, or :data:`NO_SIGN_KEY` for a node that signs nothing."""
    if value == NO_SIGN_KEY:
        return None
    return sign_key_problem(value)


@dataclass(frozen=True, slots=True)
class Generation:
    """One generation of a node's keys: in force from ``since`` (ms) on; the one before it
    stays in force until ``overlap_until`` (None for generation 0, which replaced nothing).
    ``replaced_cosigned`` is the rotation record's ``cosigned`` (PROTOCOL 16.6), sorted
    (ledger, size) pairs: the largest checkpoint of each ledger the generation before it had
    cosigned when the record was written; None for a record without one (and generation 0).
    ``replaced_tallied`` is its ``tallied`` the same way: the largest tally height of each
    ledger the generation before it had signed (an observer's, 11.3)."""

    number: int
    curve: str
    sign: str
    since: int
    overlap_until: int | None = None
    replaced_cosigned: tuple[tuple[str, int], ...] | None = None
    replaced_tallied: tuple[tuple[str, int], ...] | None = None


@dataclass(frozen=True, slots=True)
class KeyHistory:
    """A node's key generations, oldest first (generation 0 from its key files)."""

    node: str
    generations: tuple[Generation, ...]

    @property
    def newest(self) -> Generation:
        return self.generations[-1]

    def in_force(self, now_ms: int) -> tuple[Generation, ...]:
        """The generations in force at ``now_ms``, newest first: the newest one placed by then,
        and the one before it while its overlap lasts (``now_ms < overlap_until``)."""
        placed = [g for g in self.generations if g.since <= now_ms]
        if not placed:
            return (self.generations[0],)
        newest = placed[-1]
        if len(placed) > 1 and newest.overlap_until is not None and now_ms < newest.overlap_until:
            return (newest, placed[-2])
        return (newest,)

    def curve_keys(self, now_ms: int) -> tuple[str, ...]:
        """The node's CURVE public keys in force at ``now_ms``, newest first."""
        return tuple(dict.fromkeys(g.curve for g in self.in_force(now_ms)))

    def curve_generation(self, number: int) -> int:
        """The first generation whose CURVE key is generation ``number``'s: a rotation of the
        Ed25519 key alone (a replica's or an observer's, 16.6) keeps the CURVE key it had."""
        curve = next(g.curve for g in self.generations if g.number == number)
        return next(g.number for g in self.generations if g.curve == curve)

    def sign_keys(self) -> tuple[str, ...]:
        """Every Ed25519 key (hex) the node ever had, newest first (none for ``""``: no key)."""
        return tuple(dict.fromkeys(g.sign for g in reversed(self.generations) if g.sign))

    def signs_at(self, sign: str, timestamp_ms: int) -> bool:
        """Whether a signature by Ed25519 key ``sign`` (hex) made at ``timestamp_ms`` (what the
        signature states, e.g. a cosignature/v1 timestamp) counts: the newest generation's key
        always; an older generation's only while ``timestamp_ms`` is before the ``until`` of
        the rotation that replaced it; a key the node never had, never, nor ``""`` (a
        generation without an Ed25519 key, the verifier's, signs nothing)."""
        return any(True for _ in self._in_window(sign, timestamp_ms))

    def cosigns(self, sign: str, timestamp_ms: int, ledger: str, size: int) -> bool:
        """Whether a cosignature by Ed25519 key ``sign`` (hex) stamped ``timestamp_ms`` on a
        checkpoint of ``size`` records of ``ledger`` counts (PROTOCOL 16.6): the newest
        generation's key always; a replaced one's only as :meth:`signs_at` says and, when the
        rotation that replaced it states what that key had ``cosigned``, only on a checkpoint of
        a ledger listed there no larger than the size listed. The timestamp is the signer's own
        claim; the sizes are the admin ledger's, so a thief of the replaced key cannot stretch
        them to a later (or forked, larger) checkpoint."""
        return self._counts_up_to(sign, timestamp_ms, ledger, size, _stated_cosigned)

    def tallies(self, sign: str, at_ms: int, ledger: str, height: int) -> bool:
        """Whether an observer's tally (PROTOCOL 11.3) of ``ledger`` at ``height`` signed by
        Ed25519 key ``sign`` (hex) with the body's ``at_ms`` counts (16.6): as :meth:`cosigns`
        says of a checkpoint's size, with the rotation's ``tallied`` heights in place of its
        ``cosigned`` sizes. ``at_ms`` is the signer's claim, the heights the admin ledger's."""
        return self._counts_up_to(sign, at_ms, ledger, height, _stated_tallied)

    def _counts_up_to(
        self,
        sign: str,
        timestamp_ms: int,
        ledger: str,
        value: int,
        stated: Callable[[Generation], tuple[tuple[str, int], ...] | None],
    ) -> bool:
        """Whether key ``sign``'s signature stamped ``timestamp_ms`` of ``ledger``'s ``value`` (a
        size or a height) counts: in its window, and no larger than what the rotation that
        replaced it ``stated`` of that ledger (a ledger it does not list: nothing counts)."""
        for replacing in self._in_window(sign, timestamp_ms):
            # The newest key (None), or a rotation recorded before 16.6 stated anything: the window alone.
            bound = None if replacing is None else stated(replacing)
            if bound is None or value <= dict(bound).get(ledger, -1):
                return True
        return False

    def _in_window(self, sign: str, timestamp_ms: int) -> Iterator[Generation | None]:
        """For each generation with key ``sign`` (a verifier may trust the newest key as
        generation 0, so one key may be two generations'), whose signature stamped
        ``timestamp_ms`` counts by time: None for the newest generation (always), else the
        generation that replaced it, stamped before that one's ``until``."""
        if sign == NO_SIGN_KEY:
            return
        generations = self.generations
        for i, generation in enumerate(generations):
            if generation.sign != sign:
                continue
            if i == len(generations) - 1:
                yield None
                continue
            replacing = generations[i + 1]
            if replacing.overlap_until is not None and timestamp_ms < replacing.overlap_until:
                yield replacing

    def newest_curve_generation(self, now_ms: int) -> int:
        """The generation whose key files hold the newest CURVE key in force at ``now_ms``: the
        key a node connects to others with, and the one its clients reach it with (16.6)."""
        return self.curve_generation(self.in_force(now_ms)[0].number)

    def window_end(self, now_ms: int) -> int | None:
        """When the overlap in force at ``now_ms`` ends (ms), or None if there is none."""
        generations = self.in_force(now_ms)
        return generations[0].overlap_until if len(generations) > 1 else None


def _stated_cosigned(replacing: Generation) -> tuple[tuple[str, int], ...] | None:
    return replacing.replaced_cosigned


def _stated_tallied(replacing: Generation) -> tuple[tuple[str, int], ...] | None:
    return replacing.replaced_tallied


def _stated(rotation: Mapping[str, Any], field: str) -> tuple[tuple[str, int], ...] | None:
    """A rotation's ``cosigned`` or ``tallied`` (ledger -> int) as sorted pairs; None when absent."""
    value = rotation.get(field)
    return tuple(sorted(value.items())) if isinstance(value, Mapping) else None


def key_histories(
    original: Mapping[str, tuple[str, str]], rotations: Iterable[Mapping[str, Any]]
) -> dict[str, KeyHistory]:
    """Each node's KeyHistory: ``original`` maps a node to its generation-0 (curve, sign) keys
    (its key files; a node missing there starts at its first rotation), ``rotations`` are the
    ``key_rotation`` payloads in admin-ledger order, each with its record's ``accepted``."""
    generations: dict[str, list[Generation]] = {
        node: [Generation(0, curve, sign, 0)] for node, (curve, sign) in original.items()
    }
    for rotation in rotations:
        node = rotation["node"]
        known = generations.setdefault(node, [])
        number = known[-1].number + 1 if known else 1
        known.append(
            Generation(
                number,
                rotation["curve"],
                rotation["sign"],
                rotation["accepted"],
                rotation["until"],
                _stated(rotation, "cosigned"),
                _stated(rotation, "tallied"),
            )
        )
    return {node: KeyHistory(node, tuple(known)) for node, known in generations.items() if known}
