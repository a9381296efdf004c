"""Trust anchors (docs/PROTOCOL.md 15.5): what a publisher hands out of band, so that anyone
can verify a cluster with no account and nothing taken from the server being checked.

The anchors text names, per ledger, the link of its genesis record (the genesis pins the
checkpoint key and lists the outside witnesses, so its hash is the ledger's identity), the
cluster's witness keys and its observers' tally keys, as vkeys, and optionally the admin
ledger's checkpoint key, with which a holder proves the node keys' rotations (16.6), and the
cluster's recosign_interval_ms when it is not the default (how old a head may grow, 11.4: a
frozen gateway must not state a longer one to keep its old view fresh). Pure: text in, values
out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .errors import SettingsError
from .note import ALG_COSIGNATURE_V1, ALG_ED25519, VerifierKey, parse_verifier_key
from .record import NAME_PATTERN

HEADER = "vledger-anchors v1"
ADMIN_KEY_SUFFIX = "/admin"  # the admin ledger's checkpoint key is named <cluster>/admin (16.6)
MAX_ANCHORS_BYTES = 65_536  # a cluster's anchors are a few kilobytes: refuse before parsing more
MAX_NAME_LENGTH = 64  # names, PROTOCOL section 2
RECOSIGN_LINE = "recosign_interval_ms"
# The largest interval a line may state: 2**53 - 1, exact in a page's JavaScript numbers too.
MAX_RECOSIGN_MS = 2**53 - 1


def is_valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and NAME_PATTERN.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class Anchors:
    """``ledgers``: ledger name to its genesis link (32 bytes); ``witnesses``: the cluster's
    witness keys (type 0x04) by key name; ``observers``: observer name to its key (type 0x04,
    whose public key checks the observer's signed tallies); ``admin``: the admin ledger's
    checkpoint key (type 0x01, named ``<cluster>/admin``), None when the anchors carry none;
    ``recosign_ms``: the cluster's recosign_interval_ms (10.7), None when they state none (the
    default, 300000, then holds)."""

    ledgers: Mapping[str, bytes]
    witnesses: Mapping[str, VerifierKey]
    observers: Mapping[str, VerifierKey]
    admin: VerifierKey | None = None
    recosign_ms: int | None = None

    def encode(self) -> str:
        """The anchors text: the header, then ledger, witness and observer lines, each sorted by
        name, then the admin line when there is an admin key, then the recosign_interval_ms line
        when one is stated."""
        lines = [HEADER]
        lines += [f"ledger {name} {self.ledgers[name].hex()}" for name in sorted(self.ledgers)]
        lines += [f"witness {self.witnesses[name].encode()}" for name in sorted(self.witnesses)]
        lines += [f"observer {name} {self.observers[name].encode()}" for name in sorted(self.observers)]
        lines += [] if self.admin is None else [f"admin {self.admin.encode()}"]
        lines += [] if self.recosign_ms is None else [f"{RECOSIGN_LINE} {self.recosign_ms}"]
        return "".join(line + "\n" for line in lines)

    def to_json(self) -> dict[str, object]:
        return {
            "ledgers": {name: self.ledgers[name].hex() for name in sorted(self.ledgers)},
            "witnesses": [self.witnesses[name].encode() for name in sorted(self.witnesses)],
            "observers": {name: self.observers[name].encode() for name in sorted(self.observers)},
            "admin": None if self.admin is None else self.admin.encode(),
            "recosign_interval_ms": self.recosign_ms,
        }


def _cosignature_key(vkey: str, where: str) -> VerifierKey:
    try:
        key = parse_verifier_key(vkey)
    except Exception as e:
        raise SettingsError(f"{where}: {getattr(e, 'message', e)}") from None
    if key.alg != ALG_COSIGNATURE_V1:
        raise SettingsError(f"{where}: not a cosignature (type 0x04) key")
    return key


def _admin_key(vkey: str, where: str) -> VerifierKey:
    try:
        key = parse_verifier_key(vkey)
    except Exception as e:
        raise SettingsError(f"{where}: {getattr(e, 'message', e)}") from None
    if key.alg != ALG_ED25519 or not key.name.endswith(ADMIN_KEY_SUFFIX) or key.name == ADMIN_KEY_SUFFIX:
        raise SettingsError(f"{where}: not an admin ledger's checkpoint key (type 0x01, named <cluster>/admin)")
    return key


def _genesis_link(text: str, where: str) -> bytes:
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise SettingsError(f"{where}: a genesis hash is 64 lower-case hex digits")
    return bytes.fromhex(text)


def parse_anchors(data: bytes) -> Anchors:
    """Parse an anchors text (PROTOCOL 15.5), in any line order.

    Raises SettingsError [bad_settings] for anything else: over 65,536 bytes, not UTF-8, a
    missing header, a line not ending in a newline, an unknown line, a bad name, hash or vkey,
    a ledger, witness or observer named twice, two admin lines, or a recosign_interval_ms line
    that is not one decimal from 1 to 2**53 - 1 without leading zeros, or is there twice.
    """
    if len(data) > MAX_ANCHORS_BYTES:
        raise SettingsError(f"anchors: over {MAX_ANCHORS_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError("anchors: not UTF-8") from None
    if not text.endswith("\n"):
        raise SettingsError("anchors: the last line does not end in a newline")
    lines = text[:-1].split("\n")
    if lines[0] != HEADER:
        raise SettingsError(f"anchors: the first line is not {HEADER!r}")
    ledgers: dict[str, bytes] = {}
    witnesses: dict[str, VerifierKey] = {}
    observers: dict[str, VerifierKey] = {}
    admin: VerifierKey | None = None
    recosign_ms: int | None = None
    for number, line in enumerate(lines[1:], start=2):
        where = f"anchors line {number}"
        fields = line.split(" ")
        if fields[0] == "ledger" and len(fields) == 3:
            if not is_valid_name(fields[1]):
                raise SettingsError(f"{where}: {fields[1]!r} is not a ledger name")
            if fields[1] in ledgers:
                raise SettingsError(f"{where}: ledger {fields[1]} is anchored twice")
            ledgers[fields[1]] = _genesis_link(fields[2], where)
        elif fields[0] == "witness" and len(fields) == 2:
            key = _cosignature_key(fields[1], where)
            if key.name in witnesses:
                raise SettingsError(f"{where}: witness {key.name} is anchored twice")
            witnesses[key.name] = key
        elif fields[0] == "observer" and len(fields) == 3:
            if not is_valid_name(fields[1]):
                raise SettingsError(f"{where}: {fields[1]!r} is not a node name")
            if fields[1] in observers:
                raise SettingsError(f"{where}: observer {fields[1]} is anchored twice")
            observers[fields[1]] = _cosignature_key(fields[2], where)
        elif fields[0] == "admin" and len(fields) == 2:
            if admin is not None:
                raise SettingsError(f"{where}: a second admin line")
            admin = _admin_key(fields[1], where)
        elif fields[0] == RECOSIGN_LINE and len(fields) == 2:
            if recosign_ms is not None:
                raise SettingsError(f"{where}: a second {RECOSIGN_LINE} line")
            recosign_ms = _interval(fields[1], where)
        else:
            raise SettingsError(f"{where}: not a ledger, witness, observer, admin or {RECOSIGN_LINE} line")
    return Anchors(ledgers, witnesses, observers, admin, recosign_ms)


def _interval(text: str, where: str) -> int:
    if not text.isascii() or not text.isdigit() or text.startswith("0") or int(text) > MAX_RECOSIGN_MS:
        raise SettingsError(f"{where}: {RECOSIGN_LINE} is a decimal from 1 to {MAX_RECOSIGN_MS} (ms)")
    return int(text)
