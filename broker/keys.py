"""CURVE key pairs kept in files, the way ssh keeps its keys.

``generate(directory, name)`` writes two files:

* ``<name>.key``: the public key, mode 0644, in ZeroMQ's certificate format, so that
  ``zmq.auth.load_certificate`` and ``ThreadAuthenticator.configure_curve`` read it.
* ``<name>.key_secret``: mode 0600, created with that mode (never world-readable, not even
  for a moment). Without a passphrase it is a ZeroMQ certificate holding both keys. With a
  passphrase it is the JSON document described by :data:`SECRET_FORMAT` (below).

``load_secret`` refuses a secret file that group or others may read, like ssh does.

The passphrase-protected format, ``vledger-secret-key v1``, is one JSON object::

    {
      "format": "vledger-secret-key v1",
      "public_key": "<Z85 public key, 40 characters>",
      "kdf": "scrypt", "n": 32768, "r": 8, "p": 1,
      "salt": "<16 random bytes, hex>",
      "cipher": "chacha20-poly1305",
      "nonce": "<12 random bytes, hex>",
      "ciphertext": "<the 32-byte secret key, encrypted, hex>",
      "tag": "<16-byte Poly1305 tag, hex>"
    }

The key is ``scrypt(passphrase, salt, n, r, p)``, 32 bytes, over the passphrase in UTF-8
after Unicode NFC normalisation. The associated data, authenticated but not encrypted, is
the ASCII text ``"vledger-secret-key v1\\n<public_key>\\nscrypt <n> <r> <p>\\n<salt>\\n"``,
so a file whose public key or scrypt parameters were changed fails like a wrong passphrase.
After decryption the secret key must give back the public key (checked with libzmq).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import stat
import struct
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
from Crypto.Cipher import ChaCha20_Poly1305
from Crypto.Protocol.KDF import scrypt
from zmq.utils import z85

from ..node.errors import (
    BadPublicKeyError,
    KeyExistsError,
    KeyMaterialError,
    KeyNameError,
    KeyPermissionsError,
    PassphraseError,
)
from ..node.json_values import parse_json

logger = logging.getLogger(__name__)

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"  # noqa: S105 (a file name, not a password)
SECRET_FORMAT = "vledger-secret-key v1"  # noqa: S105 (a format name)

# scrypt cost for new files (32 MiB, about a tenth of a second); a file may name others,
# but never more than the bounds, so that a crafted file cannot make a load take minutes.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
_MAX_SCRYPT_N = 2**20
_MAX_SCRYPT_R = 32
_MAX_SCRYPT_P = 16
_SALT_BYTES = 16
_NONCE_BYTES = 12
_TAG_BYTES = 16
_KEY_BYTES = 32
_Z85_KEY_LENGTH = 40
_MAX_FILE_BYTES = 64 * 1024

# A name becomes a file name in `directory`, never a path: no separator, no leading dot.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_Z85 = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")

_PUBLIC_BANNER = """\
#   ZeroMQ CURVE Public Certificate (written by vledger)
#   Exchange securely, or check its fingerprint after the exchange.

"""
_PRIVATE_BANNER = """\
#   ZeroMQ CURVE **Secret** Certificate (written by vledger)
#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.

"""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A CURVE key pair as Z85 text. The secret never appears in a repr or a log line."""

    public: str
    secret: str = field(repr=False)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)


def new_keypair() -> KeyPair:
    """A fresh random key pair, kept in memory only."""
    public, secret = zmq.curve_keypair()
    return KeyPair(public.decode("ascii"), secret.decode("ascii"))


def check_public_key(text: str | bytes) -> str:
    """``text`` as a Z85 public key string, or BadPublicKeyError."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise BadPublicKeyError("a public key is 40 characters of Z85 text") from None
    if not isinstance(text, str) or _Z85.fullmatch(text) is None:
        raise BadPublicKeyError("a public key is 40 characters of Z85 text")
    try:
        z85.decode(text)
    except (KeyError, ValueError, struct.error) as e:  # a 5-character group over 2**32
        raise BadPublicKeyError("a public key is 40 characters of Z85 text") from e
    return text


def fingerprint(public: str) -> str:
    """``SHA256:<base64>`` of the raw 32-byte public key, as ssh prints its fingerprints."""
    raw = z85.decode(check_public_key(public))
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode("ascii").rstrip("=")


def check_name(name: str) -> str:
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise KeyNameError(
            f"key name {name!r} is not valid: letters, digits, '.', '_', '@', '-', "
            "starting with a letter or digit, at most 64"
        )
    return name


# A node's key generation g > 0 (PROTOCOL 16.6) is the key named ``<node>@<g>``.
GENERATION_MARK = "@"


def generation_name(name: str, generation: int) -> str:
    """The key name of ``name``'s key generation ``generation`` (0: ``name`` itself)."""
    return name if generation == 0 else f"{name}{GENERATION_MARK}{generation}"


def newest_generation(directory: Path, name: str, suffix: str = PUBLIC_SUFFIX) -> int:
    """The highest generation of ``name`` whose public key file (CURVE ``.key``, or the file
    ending in ``suffix``) is in ``directory`` (0 if none)."""
    check_name(name)
    newest = 0
    prefix = f"{name}{GENERATION_MARK}"
    for path in directory.glob(f"{prefix}*{suffix}"):
        number = path.name[len(prefix) : -len(suffix)]
        if number.isascii() and number.isdigit() and len(number) <= 20 and not number.startswith("0"):
            newest = max(newest, int(number))
    return newest


def key_paths(directory: Path, name: str) -> tuple[Path, Path]:
    """The public and secret file of key ``name`` in ``directory``."""
    check_name(name)
    return directory / f"{name}{PUBLIC_SUFFIX}", directory / f"{name}{SECRET_SUFFIX}"


# --- writing ------------------------------------------------------------------------------


def generate(directory: Path, name: str, passphrase: str | None = None, *, overwrite: bool = False) -> KeyPair:
    """Create a key pair and write ``<name>.key`` and ``<name>.key_secret`` in ``directory``.

    Refuses (KeyExistsError) if either file exists, unless ``overwrite``. Each file is
    written under a temporary name and then linked (or, when overwriting, renamed) into
    place, so that a crash never leaves a half-written key.
    """
    public_path, secret_path = key_paths(directory, name)
    if not overwrite:
        for path in (public_path, secret_path):
            if path.exists() or path.is_symlink():
                raise KeyExistsError(f"{path}: already exists; remove it first or ask to overwrite")
    pair = new_keypair()
    secret_text = _secret_file_text(pair, passphrase)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    install_file(secret_path, secret_text, 0o600, overwrite)
    try:
        install_file(public_path, _certificate(_PUBLIC_BANNER, pair.public), 0o644, overwrite)
    except BaseException:
        secret_path.unlink(missing_ok=True)
        raise
    logger.info("wrote CURVE key %s (%s) to %s", name, pair.fingerprint, directory)
    return pair


def write_public(path: Path, public: str, *, overwrite: bool = False) -> None:
    """Write a public key file (0644) for a key received from someone else."""
    install_file(path, _certificate(_PUBLIC_BANNER, check_public_key(public)), 0o644, overwrite)


def _certificate(banner: str, public: str, secret: str | None = None) -> str:
    lines = [banner, "metadata\n", "curve\n", f'    public-key = "{public}"\n']
    if secret is not None:
        lines.append(f'    secret-key = "{secret}"\n')
    return "".join(lines)


def install_file(path: Path, text: str, mode: int, overwrite: bool) -> None:
    """Write ``text`` to ``path`` with ``mode`` from its first byte, fsynced; never half-written.

    Without ``overwrite`` an existing name is refused (KeyExistsError), even one that appears meanwhile.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            os.fchmod(f.fileno(), mode)  # the umask may have taken bits the mode needs
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)  # fails if the name exists, even if it appeared just now
            except FileExistsError:
                raise KeyExistsError(f"{path}: already exists; remove it first or ask to overwrite") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _secret_file_text(pair: KeyPair, passphrase: str | None) -> str:
    if passphrase is None:
        return _certificate(_PRIVATE_BANNER, pair.public, pair.secret)
    salt = secrets.token_bytes(_SALT_BYTES)
    nonce = secrets.token_bytes(_NONCE_BYTES)
    cipher = ChaCha20_Poly1305.new(key=_derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P), nonce=nonce)
    cipher.update(_associated_data(pair.public, SCRYPT_N, SCRYPT_R, SCRYPT_P, salt.hex()))
    ciphertext, tag = cipher.encrypt_and_digest(z85.decode(pair.secret))
    document = {
        "format": SECRET_FORMAT,
        "public_key": pair.public,
        "kdf": "scrypt",
        "n": SCRYPT_N,
        "r": SCRYPT_R,
        "p": SCRYPT_P,
        "salt": salt.hex(),
        "cipher": "chacha20-poly1305",
        "nonce": nonce.hex(),
        "ciphertext": ciphertext.hex(),
        "tag": tag.hex(),
    }
    return json.dumps(document, indent=2) + "\n"


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    if not isinstance(passphrase, str) or not passphrase:
        raise PassphraseError("a passphrase must be a non-empty string (use None for no passphrase)")
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    key = scrypt(secret, salt, _KEY_BYTES, N=n, r=r, p=p)
    assert isinstance(key, bytes)
    return key


def _associated_data(public: str, n: int, r: int, p: int, salt_hex: str) -> bytes:
    return f"{SECRET_FORMAT}\n{public}\nscrypt {n} {r} {p}\n{salt_hex}\n".encode("ascii")


# --- reading ------------------------------------------------------------------------------


def load_public(path: Path) -> str:
    """The Z85 public key in a ``.key`` file (or in a secret file: both hold it)."""
    text = read_key_text(path)
    if text.lstrip().startswith("{"):
        public = _document(text, path).get("public_key")
        if not isinstance(public, str):
            raise KeyMaterialError(f"{path}: no public_key in this {SECRET_FORMAT} file")
        return _checked_public(public, path)
    public_text, _ = _certificate_keys(text, path)
    return public_text


def load_secret(path: Path, passphrase: str | None = None) -> KeyPair:
    """The key pair in a ``.key_secret`` file; refuses a file that others may read.

    Raises KeyMaterialError for a public ``.key`` file (named as such before its mode is
    judged: it is meant to be readable), KeyPermissionsError for a secret others may read,
    PassphraseError for a missing, unneeded or wrong passphrase.
    """
    try:
        text = read_private_text(path)
    except KeyPermissionsError:
        if _is_public_key_file(path):
            raise KeyMaterialError(_PUBLIC_KEY_GIVEN.format(path=path)) from None
        raise
    if text.lstrip().startswith("{"):
        if passphrase is None:
            raise PassphraseError(f"{path}: this secret key is protected by a passphrase; give it")
        return _open_protected(_document(text, path), passphrase, path)
    if passphrase is not None:
        raise PassphraseError(f"{path}: this secret key has no passphrase, but one was given")
    public, secret = _certificate_keys(text, path)
    if secret is None:
        raise KeyMaterialError(_PUBLIC_KEY_GIVEN.format(path=path))
    return _matching_pair(public, secret, path)


_PUBLIC_KEY_GIVEN = "{path}: this is a public key (it holds no secret-key): pass the .key_secret file"


def _is_public_key_file(path: Path) -> bool:
    """Whether ``path`` is a CURVE certificate holding a public key and no secret key."""
    try:
        return _certificate_keys(read_key_text(path), path)[1] is None
    except KeyMaterialError:
        return False


def read_private_text(path: Path) -> str:
    """The text of a secret key file; refuses one that group or others may read (KeyPermissionsError)."""
    fd = _open(path)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)  # the file we read, not whatever the name points to later
        if mode & 0o077:
            raise KeyPermissionsError(
                f"{path}: permissions {mode:04o} are too open: a secret key must not be readable "
                f"by others; run: chmod 600 {path}"
            )
        return _read_fd(fd, path)
    finally:
        os.close(fd)


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise KeyMaterialError(f"{path}: cannot read: {e.strerror}") from e


def read_key_text(path: Path) -> str:
    """The text of a key file that anyone may read (ASCII, at most 64 KiB)."""
    fd = _open(path)
    try:
        return _read_fd(fd, path)
    finally:
        os.close(fd)


def _read_fd(fd: int, path: Path) -> str:
    chunks: list[bytes] = []
    size = 0
    while chunk := os.read(fd, _MAX_FILE_BYTES + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > _MAX_FILE_BYTES:
            raise KeyMaterialError(f"{path}: too large for a key file")
    data = b"".join(chunks)
    try:
        return data.decode("ascii")
    except UnicodeDecodeError as e:
        raise KeyMaterialError(f"{path}: not a key file (not ASCII text)") from e


def _certificate_keys(text: str, path: Path) -> tuple[str, str | None]:
    """The keys of a ZeroMQ certificate, read as zmq.auth.load_certificate reads them."""
    public: str | None = None
    secret: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            continue
        if line.startswith("public-key") and "=" in line:
            public = line.split("=", 1)[1].strip(" \t'\"")
        elif line.startswith("secret-key") and "=" in line:
            secret = line.split("=", 1)[1].strip(" \t'\"")
    if public is None:
        raise KeyMaterialError(f"{path}: no public-key in this file (not a ZeroMQ certificate)")
    return _checked_public(public, path), secret


def _checked_public(public: str, path: Path) -> str:
    try:
        return check_public_key(public)
    except BadPublicKeyError as e:
        raise BadPublicKeyError(f"{path}: {e.message}") from None


def _matching_pair(public: str, secret: str, path: Path) -> KeyPair:
    try:
        derived = zmq.curve_public(secret.encode("ascii")).decode("ascii")
    except (zmq.ZMQError, ValueError, UnicodeEncodeError):
        raise KeyMaterialError(f"{path}: the secret-key is not a valid Z85 CURVE key") from None
    if derived != public:
        raise KeyMaterialError(f"{path}: the secret-key does not belong to the public-key in the same file")
    return KeyPair(public, secret)


def _document(text: str, path: Path) -> dict[str, Any]:
    try:
        document = parse_json(text)
    except json.JSONDecodeError as e:
        raise KeyMaterialError(f"{path}: not a valid {SECRET_FORMAT} file: {e.msg}") from None
    if not isinstance(document, dict) or document.get("format") != SECRET_FORMAT:
        raise KeyMaterialError(f"{path}: not a {SECRET_FORMAT} file")
    return document


def _open_protected(document: dict[str, Any], passphrase: str, path: Path) -> KeyPair:
    public = _checked_public(_field(document, "public_key", str, path), path)
    if document.get("kdf") != "scrypt" or document.get("cipher") != "chacha20-poly1305":
        raise KeyMaterialError(f"{path}: unknown kdf or cipher (this version knows scrypt and chacha20-poly1305)")
    n, r, p = (_field(document, k, int, path) for k in ("n", "r", "p"))
    if not (1 < n <= _MAX_SCRYPT_N and n & (n - 1) == 0 and 0 < r <= _MAX_SCRYPT_R and 0 < p <= _MAX_SCRYPT_P):
        raise KeyMaterialError(f"{path}: scrypt parameters out of bounds")
    salt_hex = _field(document, "salt", str, path)
    salt, nonce, ciphertext, tag = (
        _hex(document, k, size, path)
        for k, size in (("salt", _SALT_BYTES), ("nonce", _NONCE_BYTES), ("ciphertext", _KEY_BYTES), ("tag", _TAG_BYTES))
    )
    cipher = ChaCha20_Poly1305.new(key=_derive(passphrase, salt, n, r, p), nonce=nonce)
    cipher.update(_associated_data(public, n, r, p, salt_hex))
    try:
        raw_secret = cipher.decrypt_and_verify(ciphertext, tag)
    except ValueError:
        raise PassphraseError(f"{path}: wrong passphrase (or the file was changed)") from None
    return _matching_pair(public, z85.encode(raw_secret).decode("ascii"), path)


def _field(document: dict[str, Any], key: str, kind: type[Any], path: Path) -> Any:
    value = document.get(key)
    if type(value) is not kind:
        raise KeyMaterialError(f"{path}: field {key!r} is missing or not a {kind.__name__}")
    return value


def _hex(document: dict[str, Any], key: str, size: int, path: Path) -> bytes:
    try:
        value = bytes.fromhex(_field(document, key, str, path))
    except ValueError:
        raise KeyMaterialError(f"{path}: field {key!r} is not hex") from None
    if len(value) != size:
        raise KeyMaterialError(f"{path}: field {key!r} must be {size} bytes")
    return value
