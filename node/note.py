"""C2SP signed notes, checkpoints and cosignatures, byte for byte (docs/PROTOCOL.md section 13).

Pure: bytes and dataclasses in, bytes and dataclasses out, an error from node/errors.py on
anything else. The formats are the published ones, so outside software interoperates:

- signed note (c2sp.org/signed-note, Go's golang.org/x/mod/sumdb/note): a text ending in a
  newline, a blank line, then lines ``— <name> base64(key id (4) || signature)``;
- verifier keys ``<name>+<hex key id>+base64(type || public key)`` and signer keys
  ``PRIVATE+KEY+<name>+<hex key id>+base64(type || seed)``, with
  key id = SHA-256(name || 0x0A || type || public key)[:4], type 0x01 for Ed25519 note
  signatures and 0x04 for Ed25519 cosignatures;
- checkpoint (c2sp.org/tlog-checkpoint): origin, decimal tree size, base64 root hash,
  optional extension lines;
- cosignature (c2sp.org/tlog-cosignature, Ed25519 cosignature/v1): an Ed25519 signature over
  ``cosignature/v1\\ntime <T>\\n`` || checkpoint text, sent as key id || u64be(T) || signature;
- the add-checkpoint messages of c2sp.org/tlog-witness.

Verification follows the note spec: signatures from unknown keys are ignored, a signature by
a trusted key that fails refuses the whole note, and a note without a verified signature by
the key it needs is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import (
    CheckpointError,
    CosignatureError,
    NoteError,
    NoteKeyError,
    NoteSignatureError,
    QuorumError,
    UnverifiedNoteError,
    WitnessRequestError,
    WrongOriginError,
)

# The Ed25519 libraries (PyNaCl, and pycryptodome's key decoding, which brings cffi and pycparser)
# cost ~75 ms of CPU to import: a process that reads notes but never checks a signature (`vledger
# verify` of a store that keeps no checkpoint, each of whose records the workers forked from it
# check) imports them when its first key is made, not at start-up.
if TYPE_CHECKING:
    import nacl.signing

ALG_ED25519 = 0x01  # signed-note: Ed25519 over the note text
ALG_COSIGNATURE_V1 = 0x04  # tlog-cosignature: timestamped Ed25519 over cosignature/v1 || text
ALGORITHMS = frozenset({ALG_ED25519, ALG_COSIGNATURE_V1})

# Limits. The note spec asks verifiers to accept at least 16 signatures; Go's sumdb/note
# refuses more than 100, and so do we. Names are capped at 255 bytes as in
# transparency-dev/formats (the ML-DSA cosignature encodes a name's length in one byte).
MAX_SIGNATURES = 100
MAX_NAME_BYTES = 255
MAX_NOTE_BYTES = 64 * 1024  # 100 Ed25519 cosignature lines and a checkpoint fit in 20 KiB
MAX_SIZE = 2**64 - 1  # a tree size is a u64 (tlog-checkpoint, tlog-tiles)
MAX_TIMESTAMP = 2**63 - 1  # tlog-cosignature
MAX_PROOF_LINES = 63  # tlog-witness: a consistency proof of a u64 tree has at most 63 hashes
MAX_ADD_CHECKPOINT_BYTES = MAX_NOTE_BYTES + 16 + MAX_PROOF_LINES * 45  # old line, proof, blank

HASH_BYTES = 32
KEY_ID_BYTES = 4
ED25519_KEY_BYTES = 32
ED25519_SIGNATURE_BYTES = 64
TIMESTAMP_BYTES = 8
COSIGNATURE_BYTES = TIMESTAMP_BYTES + ED25519_SIGNATURE_BYTES
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 6962 2.1: the root of the empty tree

SIGNATURE_PREFIX = "\u2014 "  # em dash, space
COSIGNATURE_HEADER = "cosignature/v1\n"
SIZE_CONTENT_TYPE = "text/x.tlog.size"  # tlog-witness: a 409 Conflict body

_DECIMAL = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_HEX_KEY_ID = re.compile(r"[0-9a-f]{8}", re.ASCII)
# Unicode White_Space, as Go's unicode.IsSpace sees it: none may appear in a key name.
_SPACES = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | frozenset(
    chr(c) for c in range(0x2000, 0x200B)
)
# What no key name may hold (is_valid_name), no note text but its newlines (_check_text) and no
# checkpoint line (Checkpoint): one search in C each, where a loop over the characters in Python
# was a third of checking a checkpoint note (a replica catching up checks hundreds a second).
_NOT_IN_NAME = re.compile("[" + "".join(re.escape(c) for c in sorted(_SPACES)) + "\x00-\x1f\ud800-\udfff]")
_NOT_IN_TEXT = re.compile("[\x00-\x09\x0b-\x1f\ud800-\udfff]")
_NOT_IN_LINE = re.compile("[\x00-\x1f\ud800-\udfff]")


# --- small strict codecs ------------------------------------------------------------------


def _b64decode(text: str, what: str, error: type[NoteError] = NoteError) -> bytes:
    """Standard base64 with padding, in its one canonical form (re-encoding gives it back)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise error(f"{what}: not standard base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise error(f"{what}: not the canonical base64 of its bytes")
    return raw


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _decimal(text: str, what: str, maximum: int, error: type[NoteError]) -> int:
    if not _DECIMAL.fullmatch(text):
        raise error(f"{what}: {text[:40]!r} is not a decimal number without leading zeros")
    if len(text) > len(str(maximum)) or int(text) > maximum:
        raise error(f"{what}: {text[:40]!r} is over {maximum}")
    return int(text)


def is_valid_name(name: str) -> bool:
    """Whether ``name`` may name a key: non-empty, at most 255 UTF-8 bytes, no Unicode space,
    no plus sign and no control character."""
    return (
        0 < len(name.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES
        and "+" not in name
        and _NOT_IN_NAME.search(name) is None
    )


def _check_name(name: str, what: str, error: type[NoteError] = NoteError) -> str:
    if not isinstance(name, str) or not is_valid_name(name):
        raise error(f"{what} {name!r:.80}: a key name is 1 to 255 bytes without spaces, '+' or control characters")
    return name


def _check_text(text: str, what: str) -> None:
    if not text.endswith("\n"):
        raise NoteError(f"{what} does not end in a newline")
    found = _NOT_IN_TEXT.search(text)
    if found is not None:
        raise NoteError(f"{what} holds the control character {found[0]!r} (only newline is allowed)")


# --- keys -------------------------------------------------------------------------------------


def key_id(name: str, alg: int, public_key: bytes) -> int:
    """The note key id: the first four bytes, big-endian, of SHA-256(name || 0x0A || alg || key)."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public_key).digest()
    return int.from_bytes(digest[:KEY_ID_BYTES], "big")


# The y coordinates of the eight points of small order (RFC 8032's curve has cofactor 8), as
# libsodium lists them: a public key or a signature's R among them is refused (PROTOCOL 13.2).
_SMALL_ORDER_Y = frozenset(
    {
        0,
        1,
        2**255 - 20,  # p - 1
        0x05FC536D880238B13933C6D305ACDFD5F098EFF289F4C345B027B2C28F95E826,
        0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7,
    }
)


def is_small_order(encoded: bytes) -> bool:
    """Whether the 32-byte point encoding ``encoded`` is one of the eight points of small order
    (the sign bit aside), which libsodium refuses as a public key and as a signature's R."""
    return int.from_bytes(encoded, "little") & (2**255 - 1) in _SMALL_ORDER_Y


def ed25519_public_key(public_key: bytes) -> nacl.signing.VerifyKey:
    """The key libsodium verifies with, built once per key.

    Raises NoteKeyError [bad_note_key] for bytes that are no Ed25519 point (RFC 8032 5.1.3) or
    a point of small order, whose signatures no verifier of PROTOCOL 13.2 accepts."""
    import nacl.signing  # noqa: PLC0415 - see TYPE_CHECKING above
    from Crypto.Signature import eddsa  # noqa: PLC0415

    try:
        eddsa.import_public_key(public_key)  # RFC 8032 5.1.3 decoding: libsodium has no such call
    except ValueError:
        raise NoteKeyError("the public key is not an Ed25519 point") from None
    if is_small_order(public_key):
        raise NoteKeyError("the public key is an Ed25519 point of small order")
    return nacl.signing.VerifyKey(public_key)


def ed25519_verify(key: nacl.signing.VerifyKey, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``key``'s Ed25519 signature of ``message`` (PROTOCOL 13.2:
    RFC 8032 5.1.7 compared as encodings, small-order R and keys refused, as libsodium does)."""
    if len(signature) != ED25519_SIGNATURE_BYTES:
        return False
    import nacl.exceptions  # noqa: PLC0415 - imported already: ``key`` is nacl's

    try:
        key.verify(message, signature)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A trusted public key: ``name``, signature type ``alg`` (0x01 note, 0x04 cosignature)
    and the 32-byte Ed25519 ``public_key``. Construction checks all three [bad_note_key]."""

    name: str
    alg: int
    public_key: bytes
    _key: nacl.signing.VerifyKey = field(init=False, repr=False, compare=False)
    _key_id: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_name(self.name, "verifier key name", NoteKeyError)
        if self.alg not in ALGORITHMS:
            raise NoteKeyError(f"verifier key {self.name}: unknown signature type {self.alg:#04x}")
        if not isinstance(self.public_key, bytes) or len(self.public_key) != ED25519_KEY_BYTES:
            raise NoteKeyError(f"verifier key {self.name}: an Ed25519 public key is 32 bytes")
        object.__setattr__(self, "_key", ed25519_public_key(self.public_key))
        object.__setattr__(self, "_key_id", key_id(self.name, self.alg, self.public_key))

    @property
    def key_id(self) -> int:
        return self._key_id

    def encode(self) -> str:
        """The vkey string ``<name>+<8 hex digits of key id>+base64(alg || public key)``."""
        return f"{self.name}+{self.key_id:08x}+{_b64(bytes([self.alg]) + self.public_key)}"

    def as_cosigner(self) -> VerifierKey:
        """The same name and public key as a cosignature (type 0x04) key, whose key id differs."""
        return VerifierKey(self.name, ALG_COSIGNATURE_V1, self.public_key)

    def verify_raw(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature (RFC 8032) of ``message``."""
        return ed25519_verify(self._key, message, signature)


def parse_verifier_key(vkey: str) -> VerifierKey:
    """Parse ``<name>+<hex key id>+<base64(type || key)>``.

    Raises NoteKeyError [bad_note_key] when a part is missing or malformed, the type is not
    0x01 or 0x04, the key is not 32 bytes of an Ed25519 point, or the key id is not the one
    computed from the name, type and key.
    """
    parts = vkey.split("+", 2) if isinstance(vkey, str) else []  # base64 may hold a "+"
    if len(parts) != 3:
        raise NoteKeyError("a verifier key is <name>+<key id>+<key>")
    name, hex_id, key64 = parts
    _check_name(name, "verifier key name", NoteKeyError)
    if not _HEX_KEY_ID.fullmatch(hex_id):
        raise NoteKeyError(f"verifier key {name}: the key id is 8 lower-case hex digits")
    raw = _b64decode(key64, f"verifier key {name}", NoteKeyError)
    if len(raw) != 1 + ED25519_KEY_BYTES:
        raise NoteKeyError(f"verifier key {name}: the key is a type byte and 32 bytes")
    key = VerifierKey(name, raw[0], raw[1:])
    if int(hex_id, 16) != key.key_id:
        raise NoteKeyError(f"verifier key {name}: key id {hex_id} does not match its name and key")
    return key


@dataclass(frozen=True, slots=True)
class SignerKey:
    """A private key: ``name``, type ``alg`` and the 32-byte Ed25519 ``seed`` (RFC 8032's
    private key). Never printed: the seed is left out of repr."""

    name: str
    alg: int
    seed: bytes = field(repr=False)
    _key: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)
    _public_key: bytes = field(init=False, repr=False, compare=False)
    _key_id: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_name(self.name, "signer key name", NoteKeyError)
        if self.alg not in ALGORITHMS:
            raise NoteKeyError(f"signer key {self.name}: unknown signature type {self.alg:#04x}")
        if not isinstance(self.seed, bytes) or len(self.seed) != ED25519_KEY_BYTES:
            raise NoteKeyError(f"signer key {self.name}: an Ed25519 seed is 32 bytes")
        import nacl.signing  # noqa: PLC0415 - see TYPE_CHECKING above

        signing = nacl.signing.SigningKey(self.seed)
        # Derived once: a checkpoint signature names the key id, and deriving both per
        # signature cost more than the signature itself.
        object.__setattr__(self, "_key", signing)
        object.__setattr__(self, "_public_key", bytes(signing.verify_key))
        object.__setattr__(self, "_key_id", key_id(self.name, self.alg, self._public_key))

    @property
    def public_key(self) -> bytes:
        return self._public_key

    @property
    def key_id(self) -> int:
        return self._key_id

    def verifier(self) -> VerifierKey:
        return VerifierKey(self.name, self.alg, self.public_key)

    def encode(self) -> str:
        """The secret string ``PRIVATE+KEY+<name>+<hex key id>+base64(alg || seed)``."""
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{_b64(bytes([self.alg]) + self.seed)}"

    def sign_raw(self, message: bytes) -> bytes:
        """This key's Ed25519 signature (RFC 8032, deterministic) of ``message``."""
        return self._key.sign(message).signature


def parse_signer_key(skey: str) -> SignerKey:
    """Parse ``PRIVATE+KEY+<name>+<hex key id>+<base64(type || seed)>``.

    Raises NoteKeyError [bad_note_key] as parse_verifier_key does; the key id is checked
    against the public key derived from the seed. The message never holds the secret.
    """
    parts = skey.split("+", 4) if isinstance(skey, str) else []
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise NoteKeyError("a signer key is PRIVATE+KEY+<name>+<key id>+<key>")
    name, hex_id, key64 = parts[2:]
    _check_name(name, "signer key name", NoteKeyError)
    if not _HEX_KEY_ID.fullmatch(hex_id):
        raise NoteKeyError(f"signer key {name}: the key id is 8 lower-case hex digits")
    raw = _b64decode(key64, f"signer key {name}", NoteKeyError)
    if len(raw) != 1 + ED25519_KEY_BYTES:
        raise NoteKeyError(f"signer key {name}: the key is a type byte and a 32-byte seed")
    key = SignerKey(name, raw[0], raw[1:])
    if int(hex_id, 16) != key.key_id:
        raise NoteKeyError(f"signer key {name}: key id {hex_id} does not match its name and key")
    return key


def generate_signer_key(name: str, alg: int = ALG_ED25519) -> SignerKey:
    """A new Ed25519 key from the operating system's random source."""
    return SignerKey(name, alg, secrets.token_bytes(ED25519_KEY_BYTES))


# --- signed notes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: the key ``name``, its ``key_id`` and the ``signature`` bytes after it."""

    name: str
    key_id: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_name(self.name, "signature name")
        if not 0 <= self.key_id < 2**32:
            raise NoteError(f"signature by {self.name}: a key id is a u32")
        if not isinstance(self.signature, bytes) or not self.signature:
            raise NoteError(f"signature by {self.name}: no signature bytes")

    def line(self) -> str:
        """``— <name> base64(key id || signature)`` and a newline."""
        return f"{SIGNATURE_PREFIX}{self.name} {_b64(self.key_id.to_bytes(KEY_ID_BYTES, 'big') + self.signature)}\n"

    def is_by(self, key: VerifierKey) -> bool:
        return self.name == key.name and self.key_id == key.key_id


def parse_signature_line(line: str) -> NoteSignature:
    """Parse one signature line, without its newline. Raises NoteError [bad_note]."""
    if not line.startswith(SIGNATURE_PREFIX):
        raise NoteError(f"signature line {line[:40]!r} does not start with an em dash and a space")
    name, space, b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
    if not space or not b64:
        raise NoteError(f"signature line {line[:40]!r} is not '— <name> <base64>'")
    _check_name(name, "signature line name")
    raw = _b64decode(b64, f"signature by {name}")
    if len(raw) <= KEY_ID_BYTES:
        raise NoteError(f"signature by {name}: fewer than 5 bytes")
    return NoteSignature(name, int.from_bytes(raw[:KEY_ID_BYTES], "big"), raw[KEY_ID_BYTES:])


@dataclass(frozen=True, slots=True)
class Note:
    """A signed note: its ``text`` (ending in a newline) and 1 to 100 ``signatures``, in order."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def __post_init__(self) -> None:
        _check_text(self.text, "the note text")
        if not 0 < len(self.signatures) <= MAX_SIGNATURES:
            raise NoteError(f"a note has 1 to {MAX_SIGNATURES} signatures, not {len(self.signatures)}")

    def encode(self) -> bytes:
        """The note's bytes: text, a blank line, the signature lines. Raises NoteError when
        they would be over MAX_NOTE_BYTES."""
        data = (self.text + "\n" + "".join(s.line() for s in self.signatures)).encode("utf-8")
        if len(data) > MAX_NOTE_BYTES:
            raise NoteError(f"a note is at most {MAX_NOTE_BYTES} bytes, this one {len(data)}")
        return data

    def with_signatures(self, *added: NoteSignature) -> Note:
        """This note with ``added`` appended; an older signature by the same name and key id
        is replaced (as Go's note.Sign does)."""
        replaced = {(s.name, s.key_id) for s in added}
        kept = tuple(s for s in self.signatures if (s.name, s.key_id) not in replaced)
        return Note(self.text, kept + tuple(added))


def with_newest(first: bytes, newest: bytes) -> bytes:
    """The note ``first`` with the signature lines of ``newest`` (a note of the same text) that
    it lacks appended: a witness's first cosignature of a checkpoint, then its newest (PROTOCOL
    10.7, 13.9). Raises NoteError when either is no note or their texts differ."""
    old, new = parse_note(first), parse_note(newest)
    if old.text != new.text:
        raise NoteError("two notes of different texts")
    return Note(old.text, (*old.signatures, *(s for s in new.signatures if s not in old.signatures))).encode()


def parse_note(data: bytes) -> Note:
    """Split a signed note into its text and signature lines, checking syntax only.

    Raises NoteError [bad_note] when ``data`` is over MAX_NOTE_BYTES, not UTF-8, holds a
    control character other than newline, has no blank line before the signatures, has a
    malformed or unterminated signature line, or more than MAX_SIGNATURES of them. Nothing
    is verified: use open_note or verify_checkpoint before trusting the text.
    """
    if not isinstance(data, bytes):
        raise NoteError("a note is bytes")
    if len(data) > MAX_NOTE_BYTES:
        raise NoteError(f"a note is at most {MAX_NOTE_BYTES} bytes, this one {len(data)}")
    try:
        message = data.decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError("a note is UTF-8 text") from None
    split = message.rfind("\n\n")
    if split < 0:
        raise NoteError("a note has a blank line between its text and its signatures")
    text, block = message[: split + 1], message[split + 2 :]
    if not block.endswith("\n"):
        raise NoteError("a note ends with a signature line and its newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"a note has at most {MAX_SIGNATURES} signatures, this one {len(lines)}")
    return Note(text, tuple(parse_signature_line(line) for line in lines))


@dataclass(frozen=True, slots=True)
class OpenedNote:
    """A note whose signatures by trusted keys all verified: ``verified`` pairs each such
    signature with its key (first signature per key only), ``unverified`` lists the others."""

    note: Note
    verified: tuple[tuple[VerifierKey, NoteSignature], ...]
    unverified: tuple[NoteSignature, ...]

    def signed_by(self, key: VerifierKey) -> NoteSignature | None:
        return next((s for k, s in self.verified if k == key), None)


def _key_table(known: Iterable[VerifierKey]) -> dict[tuple[str, int], VerifierKey]:
    table: dict[tuple[str, int], VerifierKey] = {}
    for key in known:
        if not isinstance(key, VerifierKey):
            raise NoteKeyError(f"{key!r:.60} is not a verifier key")
        other = table.setdefault((key.name, key.key_id), key)
        if other != key:
            raise NoteKeyError(f"two trusted keys share the name {key.name} and key id {key.key_id:08x}")
    return table


def verify_signature(text: str, signature: NoteSignature, key: VerifierKey) -> bool:
    """Whether ``signature`` (by ``key``'s name and key id) verifies over the note ``text``:
    plain Ed25519 for type 0x01, cosignature/v1 for type 0x04."""
    if not signature.is_by(key):
        return False
    body = text.encode("utf-8")
    if key.alg == ALG_COSIGNATURE_V1:
        if len(signature.signature) != COSIGNATURE_BYTES:
            return False
        timestamp = int.from_bytes(signature.signature[:TIMESTAMP_BYTES], "big")
        if timestamp > MAX_TIMESTAMP:
            return False
        return key.verify_raw(cosignature_message(body, timestamp), signature.signature[TIMESTAMP_BYTES:])
    return key.verify_raw(body, signature.signature)


def open_note(data: bytes, known: Iterable[VerifierKey]) -> OpenedNote:
    """Parse a note and verify every signature whose name and key id match a ``known`` key.

    Raises NoteError [bad_note] for a malformed note (parse_note), NoteKeyError
    [bad_note_key] for two different known keys with one name and key id, NoteSignatureError
    [bad_note_signature] (CosignatureError [bad_cosignature] for a type 0x04 key) when a
    signature by a known key does not verify, and UnverifiedNoteError [unverified_note] when
    no signature by a known key is present. Unknown keys' signatures are kept, unverified.
    """
    table = _key_table(known)
    return _open_parsed(parse_note(data), table)


def _open_parsed(note: Note, table: dict[tuple[str, int], VerifierKey]) -> OpenedNote:
    """open_note of a note parsed already, with the known keys by name and key id."""
    verified: list[tuple[VerifierKey, NoteSignature]] = []
    unverified: list[NoteSignature] = []
    seen: set[tuple[str, int]] = set()
    for sig in note.signatures:
        key = table.get((sig.name, sig.key_id))
        if key is None:
            if sig not in unverified:
                unverified.append(sig)
            continue
        if (sig.name, sig.key_id) in seen:
            continue  # as Go: a repeated line by one key counts once, only the first is checked
        seen.add((sig.name, sig.key_id))
        if not verify_signature(note.text, sig, key):
            kind = CosignatureError if key.alg == ALG_COSIGNATURE_V1 else NoteSignatureError
            raise kind(f"the signature by {key.name}+{key.key_id:08x} does not verify")
        verified.append((key, sig))
    if not verified:
        raise UnverifiedNoteError("the note has no signature by a trusted key")
    return OpenedNote(note, tuple(verified), tuple(unverified))


def sign(text: str, key: SignerKey) -> NoteSignature:
    """An Ed25519 note signature (type 0x01) of ``text`` by ``key``. Raises NoteError when
    the text is not a note text and NoteKeyError when ``key`` is not a type 0x01 key."""
    if key.alg != ALG_ED25519:
        raise NoteKeyError(f"key {key.name} is of type {key.alg:#04x}, not a note signing key (0x01)")
    _check_text(text, "the note text")
    return NoteSignature(key.name, key.key_id, key.sign_raw(text.encode("utf-8")))


# --- checkpoints ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A C2SP checkpoint body: the log's ``origin``, tree ``size``, 32-byte ``root`` hash and
    optional ``extensions`` (opaque lines). Construction checks each [bad_checkpoint]."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for what, line in (("origin", self.origin), *(("extension line", x) for x in self.extensions)):
            if not isinstance(line, str) or not line:
                raise CheckpointError(f"checkpoint: an empty or missing {what}")
            if _NOT_IN_LINE.search(line) is not None:
                raise CheckpointError(f"checkpoint: the {what} holds a control character")
        if type(self.size) is not int or not 0 <= self.size <= MAX_SIZE:
            raise CheckpointError(f"checkpoint: a tree size is 0 to {MAX_SIZE}")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_BYTES:
            raise CheckpointError("checkpoint: a root hash is 32 bytes")

    def body(self) -> str:
        """The note text: origin, size, base64 root and extension lines, each ending in a newline."""
        return "".join(f"{line}\n" for line in (self.origin, str(self.size), _b64(self.root), *self.extensions))


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint body (a note's text). Raises CheckpointError [bad_checkpoint] when
    it does not end in a newline, has fewer than three lines, an empty origin or extension
    line, a size that is not decimal without leading zeros or over 2^64 - 1, or a root that
    is not the canonical base64 of 32 bytes."""
    if not isinstance(text, str) or not text.endswith("\n"):
        raise CheckpointError("checkpoint: the body does not end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("checkpoint: the body has an origin, a size and a root hash line")
    origin, size, root, *extensions = lines
    return Checkpoint(
        origin,
        _decimal(size, "checkpoint size", MAX_SIZE, CheckpointError),
        _b64decode(root, "checkpoint root hash", CheckpointError),
        tuple(extensions),
    )


def origin_for(cluster: str, ledger: str) -> str:
    """The origin line (and log key name) of a vledger ledger: ``<cluster>/<ledger>``."""
    return _check_name(f"{cluster}/{ledger}", "origin", CheckpointError)


# --- cosignatures -----------------------------------------------------------------------------


def cosignature_message(body: bytes, timestamp: int) -> bytes:
    """The bytes an Ed25519 cosignature/v1 signs: ``cosignature/v1\\ntime <T>\\n`` || body."""
    return f"{COSIGNATURE_HEADER}time {timestamp}\n".encode("ascii") + body


@dataclass(frozen=True, slots=True)
class Cosignature:
    """A verified or parsed Ed25519 cosignature/v1: the witness ``name``, ``key_id``, the
    POSIX ``timestamp`` it signed at and the 64-byte Ed25519 ``signature``."""

    name: str
    key_id: int
    timestamp: int
    signature: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.timestamp <= MAX_TIMESTAMP:
            raise CosignatureError(f"cosignature by {self.name}: a timestamp is 0 to 2^63 - 1")
        if not isinstance(self.signature, bytes) or len(self.signature) != ED25519_SIGNATURE_BYTES:
            raise CosignatureError(f"cosignature by {self.name}: an Ed25519 signature is 64 bytes")

    def note_signature(self) -> NoteSignature:
        """The signature line's content: key id || u64be(timestamp) || signature."""
        return NoteSignature(self.name, self.key_id, self.timestamp.to_bytes(TIMESTAMP_BYTES, "big") + self.signature)

    @classmethod
    def from_note_signature(cls, sig: NoteSignature) -> Cosignature:
        """Read a cosignature line's fields. Raises CosignatureError [bad_cosignature] unless
        it holds 8 + 64 bytes after the key id and a timestamp of at most 2^63 - 1."""
        if len(sig.signature) != COSIGNATURE_BYTES:
            raise CosignatureError(f"cosignature by {sig.name}: 72 bytes after the key id, not {len(sig.signature)}")
        timestamp = int.from_bytes(sig.signature[:TIMESTAMP_BYTES], "big")
        return cls(sig.name, sig.key_id, timestamp, sig.signature[TIMESTAMP_BYTES:])


def cosign(text: str, key: SignerKey, timestamp: int) -> Cosignature:
    """``key``'s cosignature/v1 on the checkpoint body ``text`` at POSIX time ``timestamp``.

    Raises NoteKeyError unless ``key`` is a type 0x04 key, CheckpointError when ``text`` is
    not a checkpoint body, CosignatureError when the timestamp is out of 0..2^63 - 1.
    """
    if key.alg != ALG_COSIGNATURE_V1:
        raise NoteKeyError(f"key {key.name} is of type {key.alg:#04x}, not a cosignature key (0x04)")
    parse_checkpoint(text)
    if type(timestamp) is not int or not 0 <= timestamp <= MAX_TIMESTAMP:
        raise CosignatureError(f"cosignature by {key.name}: a timestamp is 0 to 2^63 - 1")
    message = cosignature_message(text.encode("utf-8"), timestamp)
    return Cosignature(key.name, key.key_id, timestamp, key.sign_raw(message))


# --- checking a checkpoint with a quorum of witnesses -----------------------------------------


@dataclass(frozen=True, slots=True)
class VerifiedCheckpoint:
    """A checkpoint whose log signature verified, with the witnesses' verified cosignatures
    (one per witness name, first in note order)."""

    checkpoint: Checkpoint
    note: Note
    log_signature: NoteSignature
    cosignatures: tuple[Cosignature, ...]
    # Each counted witness's newest verified line of that key, in the order of ``cosignatures``
    # (the same one when it has one line): a quiet ledger's witnesses cosign it again (10.7).
    newest: tuple[Cosignature, ...] = ()

    @property
    def witnesses(self) -> tuple[str, ...]:
        """The names of the witnesses whose cosignature verified, in note order."""
        return tuple(c.name for c in self.cosignatures)


def witness_groups(keys: Iterable[VerifierKey]) -> dict[str, str]:
    """Each witness name of ``keys`` -> the name that stands for its witness: the least of the
    names joined to it by a shared public key. The name is not signed (13.4): one key under two
    names is one witness, and must count once toward a quorum (13.5 step 5), while one name
    with two keys (a rotation's overlap) is one witness already."""
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while parent[name] != name:
            name = parent[name]
        return name

    owner: dict[bytes, str] = {}
    for key in keys:
        parent.setdefault(key.name, key.name)
        other = owner.setdefault(key.public_key, key.name)
        low, high = sorted((root(key.name), root(other)))
        parent[high] = low
    return {name: root(name) for name in parent}


def verify_checkpoint(
    data: bytes,
    log_key: VerifierKey,
    witnesses: Iterable[VerifierKey] = (),
    quorum: int = 0,
    *,
    origin: str | None = None,
    parsed: tuple[Note, Checkpoint] | None = None,
) -> VerifiedCheckpoint:
    """Check a signed checkpoint as a client or a witness does (docs/PROTOCOL.md 13.5).

    ``log_key`` is the log's type 0x01 key, ``witnesses`` the trusted type 0x04 keys and
    ``quorum`` how many distinct witnesses must have cosigned: names that share a public key
    are one witness (:func:`witness_groups`), its first cosignature in note order the one kept.
    ``origin`` (default: the log key's name) is the origin line expected.

    Raises NoteKeyError [bad_note_key] for unusable keys; QuorumError [no_quorum] for a quorum
    outside 0..(number of witness names) or one not met; NoteError [bad_note] for a malformed
    note; NoteSignatureError [bad_note_signature] when the log's signature does not verify;
    CosignatureError [bad_cosignature] when a trusted witness's does not; UnverifiedNoteError
    [unverified_note] when the log did not sign; CheckpointError [bad_checkpoint] for a body
    that is not a checkpoint; WrongOriginError [wrong_origin] for another log's checkpoint.

    ``parsed``: ``data``'s note and checkpoint body, which the caller parsed already (to find
    the key in force at its size, KeyChain.check): not parsed again.
    """
    if not isinstance(log_key, VerifierKey) or log_key.alg != ALG_ED25519:
        raise NoteKeyError("the log key must be an Ed25519 note key (type 0x01)")
    witness_keys = tuple(witnesses)
    for key in witness_keys:
        if not isinstance(key, VerifierKey) or key.alg != ALG_COSIGNATURE_V1:
            raise NoteKeyError(f"witness key {getattr(key, 'name', key)!r:.60} is not a cosignature key (type 0x04)")
        if key.public_key == log_key.public_key:
            raise NoteKeyError(f"witness {key.name} uses the log's own public key")
    groups = witness_groups(witness_keys)
    distinct = len(set(groups.values()))
    if type(quorum) is not int or not 0 <= quorum <= distinct:
        raise QuorumError(f"a quorum of {quorum} can never be met by {distinct} distinct witnesses")
    if parsed is None:
        opened = open_note(data, (log_key, *witness_keys))
    else:
        opened = _open_parsed(parsed[0], _key_table((log_key, *witness_keys)))
    log_signature = opened.signed_by(log_key)
    if log_signature is None:
        raise UnverifiedNoteError(f"the checkpoint is not signed by the log key {log_key.name}+{log_key.key_id:08x}")
    checkpoint = parse_checkpoint(opened.note.text) if parsed is None else parsed[1]
    expected = log_key.name if origin is None else origin
    if checkpoint.origin != expected:
        raise WrongOriginError(f"the checkpoint's origin is {checkpoint.origin!r:.80}, not {expected!r}")
    cosignatures: list[Cosignature] = []
    newest: list[Cosignature] = []
    counted: set[str] = set()
    for key, sig in opened.verified:
        if key.alg == ALG_COSIGNATURE_V1 and groups[key.name] not in counted:
            counted.add(groups[key.name])
            cosignatures.append(Cosignature.from_note_signature(sig))
            newest.append(_newest_line(opened.note, key, cosignatures[-1]))
    if len(cosignatures) < quorum:
        missing = sorted(name for name, group in groups.items() if group not in counted)
        raise QuorumError(
            f"checkpoint {checkpoint.origin} at size {checkpoint.size}: {len(cosignatures)} of the "
            f"{quorum} witness cosignatures needed (none from {', '.join(missing)})"
        )
    return VerifiedCheckpoint(checkpoint, opened.note, log_signature, tuple(cosignatures), tuple(newest))


def _newest_line(note: Note, key: VerifierKey, first: Cosignature) -> Cosignature:
    """The newest cosignature by ``key`` on ``note`` whose line verifies (``first`` did): opening a
    note checks only a key's first line (13.2); a later one that does not verify is not counted."""
    newest = first
    for sig in note.signatures:
        if (sig.name, sig.key_id) != (key.name, key.key_id) or len(sig.signature) != COSIGNATURE_BYTES:
            continue
        later = Cosignature.from_note_signature(sig)
        if later.timestamp > newest.timestamp and verify_signature(note.text, sig, key):
            newest = later
    return newest


# --- tlog-witness messages ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddCheckpointRequest:
    """The body of a tlog-witness ``POST <prefix>/add-checkpoint``: the size of the last
    checkpoint the witness cosigned (``old_size``), a consistency ``proof`` from it, and the
    signed checkpoint ``note``. ``checkpoint`` is the note's body, parsed but NOT verified."""

    old_size: int
    proof: tuple[bytes, ...]
    note: bytes
    checkpoint: Checkpoint

    def encode(self) -> bytes:
        return _add_checkpoint_body(self.old_size, self.proof, self.note)


def _add_checkpoint_body(old_size: int, proof: Sequence[bytes], note: bytes) -> bytes:
    lines = [f"old {old_size}\n", *(f"{_b64(h)}\n" for h in proof), "\n"]
    return "".join(lines).encode("ascii") + note


def add_checkpoint_request(old_size: int, proof: Sequence[bytes], note: bytes) -> AddCheckpointRequest:
    """Build a request (as a log does), with the checks parse_add_checkpoint makes."""
    return parse_add_checkpoint(_add_checkpoint_body(old_size, proof, note))


def parse_add_checkpoint(body: bytes, max_bytes: int = MAX_ADD_CHECKPOINT_BYTES) -> AddCheckpointRequest:
    """Parse an add-checkpoint request body, bounds first.

    Raises WitnessRequestError [bad_witness_message] with ``status`` 400 when the body is
    over ``max_bytes``, the old size line or a proof line is malformed, there are more than
    63 proof lines, the checkpoint note or body is malformed, or the old size is over the
    checkpoint's size; with ``status`` 422 when the old size is 0 and a proof is given, or a
    checkpoint of size 0 does not have the empty tree's root. Signatures are not checked here
    (verify_checkpoint, with the key the witness trusts for the origin: 403 when it fails,
    404 for an unknown origin); nor is the proof (409 and 422 are the witness's to decide).
    """
    if not isinstance(body, bytes) or len(body) > max_bytes:
        raise WitnessRequestError(f"an add-checkpoint body is bytes, at most {max_bytes} of them")
    position = 0
    head: list[str] = []
    while True:  # at most 1 + 63 + 1 lines are read before the note
        end = body.find(b"\n", position)
        if end < 0:
            raise WitnessRequestError("an add-checkpoint body has a blank line before its checkpoint")
        try:
            line = body[position:end].decode("ascii")
        except UnicodeDecodeError:
            raise WitnessRequestError("the old size and proof lines are ASCII") from None
        position = end + 1
        if not line:
            break
        head.append(line)
        if len(head) > 1 + MAX_PROOF_LINES:
            raise WitnessRequestError(f"at most {MAX_PROOF_LINES} consistency proof lines")
    if not head or not head[0].startswith("old "):
        raise WitnessRequestError("an add-checkpoint body starts with 'old <size>'")
    try:
        old_size = _decimal(head[0][4:], "old size", MAX_SIZE, WitnessRequestError)
        proof = tuple(_b64decode(line, "consistency proof line", WitnessRequestError) for line in head[1:])
        note = body[position:]
        checkpoint = parse_checkpoint(parse_note(note).text)
    except WitnessRequestError:
        raise
    except NoteError as e:
        raise WitnessRequestError(f"add-checkpoint: {e.message}") from e
    if any(len(h) != HASH_BYTES for h in proof):
        raise WitnessRequestError("a consistency proof line is the base64 of 32 bytes")
    if old_size > checkpoint.size:
        raise WitnessRequestError(f"old size {old_size} is over the checkpoint's size {checkpoint.size}")
    if old_size == 0 and proof:
        raise WitnessRequestError("no consistency proof may follow an old size of 0", status=422)
    if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
        raise WitnessRequestError("a checkpoint of size 0 has the root SHA-256 of nothing", status=422)
    return AddCheckpointRequest(old_size, proof, note, checkpoint)


def encode_cosignature_response(cosignatures: Iterable[Cosignature]) -> bytes:
    """A 200 response body: one note signature line per cosignature, at least one."""
    lines = [c.note_signature().line() for c in cosignatures]
    if not 0 < len(lines) <= MAX_SIGNATURES:
        raise WitnessRequestError(f"a cosignature response has 1 to {MAX_SIGNATURES} lines")
    return "".join(lines).encode("utf-8")


def parse_cosignature_response(body: bytes) -> tuple[NoteSignature, ...]:
    """The signature lines of a 200 response, syntax checked (unknown keys are the caller's
    to ignore: append them to the checkpoint note and verify_checkpoint). Raises
    WitnessRequestError [bad_witness_message] for anything else than 1 to 100 lines."""
    if not isinstance(body, bytes) or len(body) > MAX_NOTE_BYTES or not body.endswith(b"\n"):
        raise WitnessRequestError("a cosignature response is signature lines, each ending in a newline")
    try:
        lines = body.decode("utf-8")[:-1].split("\n")
        if len(lines) > MAX_SIGNATURES:
            raise WitnessRequestError(f"a cosignature response has at most {MAX_SIGNATURES} lines")
        return tuple(parse_signature_line(line) for line in lines)
    except UnicodeDecodeError:
        raise WitnessRequestError("a cosignature response is UTF-8") from None
    except WitnessRequestError:
        raise
    except NoteError as e:
        raise WitnessRequestError(f"cosignature response: {e.message}") from e


def encode_size_response(size: int) -> bytes:
    """A 409 Conflict body (Content-Type text/x.tlog.size): the witness's latest cosigned size."""
    if type(size) is not int or not 0 <= size <= MAX_SIZE:
        raise WitnessRequestError(f"a tree size is 0 to {MAX_SIZE}")
    return f"{size}\n".encode("ascii")


def parse_size_response(body: bytes) -> int:
    """The tree size of a 409 Conflict body. Raises WitnessRequestError unless it is a
    decimal number without leading zeros and a newline."""
    if not isinstance(body, bytes) or not body.endswith(b"\n") or len(body) > 21:
        raise WitnessRequestError("a size response is a decimal number and a newline")
    return _decimal(body[:-1].decode("ascii", "replace"), "size response", MAX_SIZE, WitnessRequestError)
