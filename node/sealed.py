"""Sealed ids: private information turned into a stable, opaque id only its publisher can open.

A charity records "donor S1-..." rather than a name; an authority keeps the key and can
turn the id back into the information, nobody else can. The same information sealed with
the same key and context always gives the same id, so ids can be compared and counted
without being opened.

Byte format, version 1 (the ``S1-`` prefix)::

    key        64 bytes: AES-256-SIV (RFC 5297), two AES-256 keys, S2V's first, CTR's second
    plaintext  utf8(info)
    AD         exactly one associated-data component, utf8(context) (an empty context is
               one empty component, which RFC 5297 distinguishes from none); no nonce
    sealed     V || C    (RFC 5297's output: the 16-byte synthetic IV, then the ciphertext,
                          as long as the plaintext)
    id         "S1-" || base32(sealed)   (RFC 4648 alphabet, lower case, "=" padding removed)

An id is accepted only in that exact spelling: upper case, padding or non-zero bits in the
last character's unused low bits are refused, so one sealed value has one id. The context
(for example the ledger's name) binds an id to where it is used: unsealed under another
context it fails like a tampered id.

:func:`seal` and :func:`unseal` are pure; :func:`new_seal_key` draws from the OS.
"""

from __future__ import annotations

import base64
import binascii
import os
import re

from Crypto.Cipher import AES

from .errors import SealError

PREFIX = "S1-"
KEY_SIZE = 64
TAG_SIZE = 16
_BASE32 = re.compile(r"[a-z2-7]*")


def new_seal_key() -> bytes:
    """A fresh random AES-256-SIV key (64 bytes). Keep it secret and keep it: ids need it to open."""
    return os.urandom(KEY_SIZE)


def seal(key: bytes, info: str, context: str = "") -> str:
    """The sealed id of ``info`` under ``key`` and ``context``: deterministic and opaque."""
    sealed = siv_encrypt(_checked_key(key), info.encode(), context.encode())
    return PREFIX + base64.b32encode(sealed).decode("ascii").rstrip("=").lower()


def unseal(key: bytes, sealed: str, context: str = "") -> str:
    """The information sealed in ``sealed``; raises SealError unless ``key`` and ``context`` sealed it."""
    key = _checked_key(key)
    data = _decode(sealed)
    if data is None:
        raise SealError(f"not a sealed id ({PREFIX} and lower-case base32 of at least {TAG_SIZE} bytes)")
    try:
        plaintext = siv_decrypt(key, data, context.encode())
    except ValueError as e:  # pycryptodome's "MAC check failed"
        raise SealError("sealed id does not open with this key and context (tampered, or sealed elsewhere)") from e
    try:
        return plaintext.decode()
    except UnicodeDecodeError as e:  # authentic, so sealed by other software with this key
        raise SealError("sealed information is not UTF-8 text") from e


def is_sealed(text: str) -> bool:
    """Whether ``text`` is spelt as a sealed id (without a key, nothing more can be known)."""
    return _decode(text) is not None


def siv_encrypt(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """RFC 5297 AES-SIV with one associated-data component: V || C."""
    cipher = AES.new(key, AES.MODE_SIV)
    cipher.update(associated_data)
    ciphertext, tag = cipher.encrypt_and_digest(plaintext)
    return tag + ciphertext


def siv_decrypt(key: bytes, sealed: bytes, associated_data: bytes) -> bytes:
    """The inverse of :func:`siv_encrypt`; raises ValueError when the tag does not match."""
    cipher = AES.new(key, AES.MODE_SIV)
    cipher.update(associated_data)
    return cipher.decrypt_and_verify(sealed[TAG_SIZE:], sealed[:TAG_SIZE])


def _checked_key(key: bytes) -> bytes:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise ValueError(f"a seal key is {KEY_SIZE} bytes (AES-256-SIV)")
    return key


def _decode(text: str) -> bytes | None:
    """The sealed bytes of an id in its one exact spelling, else None."""
    if not isinstance(text, str) or not text.startswith(PREFIX):
        return None
    body = text[len(PREFIX) :]
    if not _BASE32.fullmatch(body):
        return None
    try:
        data = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except binascii.Error:  # a length no byte count encodes to
        return None
    if len(data) < TAG_SIZE or base64.b32encode(data).decode("ascii").rstrip("=").lower() != body:
        return None
    return data
