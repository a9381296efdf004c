"""Sealed ids: private information turned into a stable, opaque id only its publisher can open.

A charity records "donor S2-..." rather than a name; an authority keeps the key and can
turn the id back into the information, nobody else can. The same information sealed with
the same key and context always gives the same id, so ids can be compared and counted
without being opened.

Byte format, version 2 (the ``S2-`` prefix, what :func:`seal` writes)::

    key        64 bytes: AES-256-SIV (RFC 5297), two AES-256 keys, S2V's first, CTR's second
    padded     utf8(NFC(info)) || 0x80 || 0x00 * k: the least k >= 0 that makes it one of the
               BUCKETS sizes (64, 128, 256, 512, 1024 bytes); info of more than 1023 UTF-8
               bytes is not sealed
    AD         exactly one associated-data component, utf8(context) (an empty context is
               one empty component, which RFC 5297 distinguishes from none); no nonce
    sealed     V || C    (RFC 5297's output: the 16-byte synthetic IV, then the ciphertext,
                          as long as the padded plaintext)
    id         "S2-" || base32(sealed)   (RFC 4648 alphabet, lower case, "=" padding removed)

Version 1 (``S1-``) is the same without the padding: its ciphertext is as long as utf8(info),
so its id told everyone the exact byte length of what it hid ("A" a 28-character id, a name
and a phone number a 60-character one). Version 2 ids all have one of five lengths, and
nearly every donor's name and contact fits the first. S1 ids already on chains stay valid
and still open; nothing writes them any more.

The bucket sizes: a floor of 64 bytes, so that the common case (a name, a phone number, an
id number) tells nothing about itself; above it powers of two, so that a long info reveals
at most its bit length and never costs more than twice its size. The pad is checked strictly
on opening (the 0x80 mark, only zeros after it, and the smallest bucket that holds the info),
after the tag: an authentic value padded any other way (by other software holding the key)
is refused, so one info under one key and context has exactly one S2 id. The two versions
share the key and the associated data, yet cannot stand for each other: an S2 plaintext read
as S1 holds a 0x80 right after complete UTF-8, an S1 plaintext read as S2 leaves an unfinished
UTF-8 sequence before its mark, and either is refused as not UTF-8.

The info is put in Unicode normal form C first, as every identifier a person types is (PROTOCOL
7.5): "Zoë" typed with a combining diaeresis (macOS input often gives it) is one donor with "Zoë"
typed composed, one id. Opening gives what was sealed: NFC for every id sealed since; an S1
id, or an S2 id sealed before NFC was added, may hold another form (compare NFC of both).

An id is accepted only in its exact spelling: upper case, padding or non-zero bits in the
last character's unused low bits are refused, so one sealed value has one id, and an S2 id
whose sealed bytes are not 16 + a bucket size is not a sealed id. The context (for example
the ledger's name) binds an id to where it is used: unsealed under another context it fails
like a tampered id.

:func:`seal` and :func:`unseal` are pure; :func:`new_seal_key` draws from the OS.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import unicodedata
from typing import TYPE_CHECKING

from .errors import SealError

if TYPE_CHECKING:
    from Crypto.Cipher._mode_siv import SivMode

PREFIX = "S2-"  # what seal() writes
V1_PREFIX = "S1-"  # still opened and accepted: ids already on chains
KEY_SIZE = 64
TAG_SIZE = 16
BUCKETS = (64, 128, 256, 512, 1024)  # the padded plaintext's possible sizes, in bytes
MAX_INFO_BYTES = BUCKETS[-1] - 1  # the pad takes at least its one 0x80 byte
PAD_MARK = 0x80
_BASE32 = re.compile(r"[a-z2-7]*")


def new_seal_key() -> bytes:
    """A fresh random AES-256-SIV key (64 bytes). Keep it secret and keep it: ids need it to open."""
    return os.urandom(KEY_SIZE)


def seal(key: bytes, info: str, context: str = "") -> str:
    """The S2 sealed id of ``info`` under ``key`` and ``context``: deterministic and opaque.

    Raises SealError when ``info`` is longer than MAX_INFO_BYTES in UTF-8."""
    padded = pad(unicodedata.normalize("NFC", info).encode())
    sealed = siv_encrypt(_checked_key(key), padded, context.encode())
    return PREFIX + base64.b32encode(sealed).decode("ascii").rstrip("=").lower()


def unseal(key: bytes, sealed: str, context: str = "") -> str:
    """The information sealed in ``sealed`` (S2 or S1); raises SealError unless ``key`` and ``context`` sealed it."""
    key = _checked_key(key)
    decoded = _decode(sealed)
    if decoded is None:
        raise SealError(
            f"not a sealed id ({PREFIX} or {V1_PREFIX}, then the lower-case base32 of the sealed bytes: "
            f"{TAG_SIZE} + {', '.join(map(str, BUCKETS[:-1]))} or {BUCKETS[-1]} of them after {PREFIX})"
        )
    prefix, data = decoded
    try:
        plaintext = siv_decrypt(key, data, context.encode())
    except ValueError as e:  # pycryptodome's "MAC check failed"
        raise SealError("sealed id does not open with this key and context (tampered, or sealed elsewhere)") from e
    # Only after the tag: the pad of an authentic value, so its check tells a forger nothing.
    info = plaintext if prefix == V1_PREFIX else unpad(plaintext)
    if info is None:  # authentic, so padded by other software with this key
        raise SealError(f"sealed information is not padded as {PREFIX} ids are (0x80, zeros, the smallest bucket)")
    try:
        return info.decode()
    except UnicodeDecodeError as e:  # authentic, so sealed by other software with this key (or relabelled)
        raise SealError("sealed information is not UTF-8 text") from e


def is_sealed(text: str) -> bool:
    """Whether ``text`` is spelt as a sealed id, S2 or S1 (without a key, nothing more can be known)."""
    return _decode(text) is not None


def padded_size(info_size: int) -> int:
    """The bucket an info of ``info_size`` bytes is padded to: the smallest that holds it and its 0x80."""
    for bucket in BUCKETS:
        if info_size < bucket:
            return bucket
    raise SealError(f"the information is {info_size} bytes in UTF-8: a sealed id holds at most {MAX_INFO_BYTES}")


def pad(info: bytes) -> bytes:
    """``info`` || 0x80 || zeros, as long as its bucket (raises SealError past MAX_INFO_BYTES)."""
    return info + bytes([PAD_MARK]) + bytes(padded_size(len(info)) - len(info) - 1)


def unpad(padded: bytes) -> bytes | None:
    """The info of a padded plaintext, or None unless :func:`pad` of that info gives exactly ``padded``."""
    marked = padded.rstrip(b"\x00")
    if not marked or marked[-1] != PAD_MARK:
        return None
    info = marked[:-1]
    if len(info) > MAX_INFO_BYTES or padded_size(len(info)) != len(padded):
        return None  # a larger bucket than needed: one info must have one id
    return info


def siv_encrypt(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """RFC 5297 AES-SIV with one associated-data component: V || C."""
    cipher = _siv(key)
    cipher.update(associated_data)
    ciphertext, tag = cipher.encrypt_and_digest(plaintext)
    return tag + ciphertext


def siv_decrypt(key: bytes, sealed: bytes, associated_data: bytes) -> bytes:
    """The inverse of :func:`siv_encrypt`; raises ValueError when the tag does not match."""
    cipher = _siv(key)
    cipher.update(associated_data)
    return cipher.decrypt_and_verify(sealed[TAG_SIZE:], sealed[:TAG_SIZE])


def _siv(key: bytes) -> SivMode:
    # pycryptodome is imported where an id is sealed or opened: parsing the `vledger` command
    # line reads this module's PREFIX and is_sealed, and needs none of its ~50 ms (tools/cli.py).
    from Crypto.Cipher import AES  # noqa: PLC0415

    return AES.new(key, AES.MODE_SIV)


def _checked_key(key: bytes) -> bytes:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise ValueError(f"a seal key is {KEY_SIZE} bytes (AES-256-SIV)")
    return key


def _decode(text: str) -> tuple[str, bytes] | None:
    """The prefix and sealed bytes of an id in its one exact spelling, else None."""
    if not isinstance(text, str) or text[: len(PREFIX)] not in (PREFIX, V1_PREFIX):
        return None
    prefix = text[: len(PREFIX)]
    body = text[len(prefix) :]
    if not _BASE32.fullmatch(body):
        return None
    try:
        data = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except binascii.Error:  # a length no byte count encodes to
        return None
    if base64.b32encode(data).decode("ascii").rstrip("=").lower() != body:
        return None
    if len(data) < TAG_SIZE or (prefix == PREFIX and len(data) - TAG_SIZE not in BUCKETS):
        return None
    return prefix, data
