"""Ed25519 signing keys: observers sign their tallies (PROTOCOL section 11), home nodes their
checkpoints and witnesses their cosignatures (10.7).

An observer signs each tally snapshot it publishes; anyone holding its public key file
checks the signature. Two files per observer, beside the CURVE keys in the cluster's key
directory:

* ``<name>.sign``: the private key, PKCS#8 in PEM (``-----BEGIN PRIVATE KEY-----``, the
  Ed25519 form of RFC 8410), mode 0600 from its first byte; refused when group or others may
  read it, like a CURVE secret (broker/keys.py). With a passphrase it is encrypted PKCS#8
  (``-----BEGIN ENCRYPTED PRIVATE KEY-----``: PBKDF2-HMAC-SHA512, AES-256-CBC).
* ``<name>.sign.pub``: the public key, SubjectPublicKeyInfo in PEM (``-----BEGIN PUBLIC
  KEY-----``, RFC 8410), mode 0644. ``openssl pkey -pubin -in <name>.sign.pub`` reads it.

A signature is Ed25519 as RFC 8032 defines it (PureEdDSA: no context, no pre-hash), 64
bytes, over the exact bytes signed (for a tally: its canonical msgpack body).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import nacl.signing
from Crypto.PublicKey import ECC
from Crypto.Signature import eddsa

from ..config.cluster import FOLLOWER_ROLES, ClusterConfig
from ..node.errors import KeyExistsError, KeyMaterialError, NoteKeyError, PassphraseError, SignatureError
from ..node.note import ALG_ED25519, ED25519_KEY_BYTES, VerifierKey, ed25519_public_key, ed25519_verify, origin_for
from ..node.rules.admin import ADMIN_LEDGER
from ..node.witness import witness_key, witness_name
from .keys import check_name, generation_name, install_file, newest_generation, read_key_text, read_private_text

logger = logging.getLogger(__name__)

PRIVATE_SUFFIX = ".sign"
PUBLIC_SUFFIX = ".sign.pub"
SIGNATURE_BYTES = 64
CURVE = "Ed25519"
_PROTECTION = "PBKDF2WithHMAC-SHA512AndAES256-CBC"


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """An Ed25519 public key, its 32 ``raw`` bytes (RFC 8032): checks signatures. Construction
    refuses bytes that are no point or a point of small order [bad_key]."""

    raw: bytes
    _key: nacl.signing.VerifyKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != ED25519_KEY_BYTES:
            raise KeyMaterialError(f"an Ed25519 public key is {ED25519_KEY_BYTES} bytes")
        try:
            object.__setattr__(self, "_key", ed25519_public_key(self.raw))
        except NoteKeyError as e:
            raise KeyMaterialError(str(e)) from None

    @property
    def public_hex(self) -> str:
        """The raw public key in hex: what ``keygen`` prints."""
        return self.raw.hex()

    def pem(self) -> str:
        return str(eddsa.import_public_key(self.raw).export_key(format="PEM")) + "\n"

    def verify(self, data: bytes, signature: bytes) -> None:
        """Raise SignatureError unless ``signature`` is this key's Ed25519 signature of ``data``."""
        if len(signature) != SIGNATURE_BYTES:
            raise SignatureError(f"a signature is {SIGNATURE_BYTES} bytes, not {len(signature)}")
        if not ed25519_verify(self._key, data, signature):
            raise SignatureError(f"the signature does not verify with key {self.public_hex}")


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An Ed25519 private key, its 32-byte ``seed`` (RFC 8032's private key): signs. Never in
    a repr or a log line."""

    seed: bytes = field(repr=False)
    _key: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)
    _public: VerifyKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes) or len(self.seed) != ED25519_KEY_BYTES:
            raise KeyMaterialError(f"an Ed25519 private key is a {ED25519_KEY_BYTES}-byte seed")
        object.__setattr__(self, "_key", nacl.signing.SigningKey(self.seed))
        object.__setattr__(self, "_public", VerifyKey(bytes(self._key.verify_key)))

    @property
    def public(self) -> VerifyKey:
        return self._public

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data).signature

    def pem(self, passphrase: str | None = None) -> str:
        """The PKCS#8 PEM of the key file, encrypted when ``passphrase`` is given."""
        key = eddsa.import_private_key(self.seed)
        if passphrase is None:
            return str(key.export_key(format="PEM"))
        return str(key.export_key(format="PEM", passphrase=passphrase, protection=_PROTECTION))


def new_signing_key() -> SigningKey:
    """A fresh random key, kept in memory only."""
    return SigningKey(secrets.token_bytes(ED25519_KEY_BYTES))


def signing_key_paths(directory: Path, name: str) -> tuple[Path, Path]:
    """The private and public file of signing key ``name`` in ``directory``."""
    check_name(name)
    return directory / f"{name}{PRIVATE_SUFFIX}", directory / f"{name}{PUBLIC_SUFFIX}"


def generate_signing_key(directory: Path, name: str, passphrase: str | None = None) -> VerifyKey:
    """Create ``<name>.sign`` (0600) and ``<name>.sign.pub`` (0644) in ``directory``.

    Refuses (KeyExistsError) if either exists: a signing key is never replaced behind the
    back of those who hold its public key.
    """
    signing = new_signing_key()
    _install_signing_key(directory, name, signing, passphrase)
    return signing.public


def _install_signing_key(directory: Path, name: str, signing: SigningKey, passphrase: str | None) -> None:
    private_path, public_path = signing_key_paths(directory, name)
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise KeyExistsError(f"{path}: already exists; remove it first")
    if passphrase is not None and not passphrase:
        raise PassphraseError("a passphrase must be a non-empty string (use None for no passphrase)")
    text = signing.pem(passphrase)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    install_file(private_path, text + "\n", 0o600, overwrite=False)
    try:
        install_file(public_path, signing.public.pem(), 0o644, overwrite=False)
    except BaseException:
        private_path.unlink(missing_ok=True)
        raise
    logger.info("wrote Ed25519 signing key %s (%s) to %s", name, signing.public.public_hex, directory)


CHECKPOINT_KEY_INFIX = ".ckpt-"  # <home>.ckpt-<16 hex of SHA-256(public key)>.sign: a rotated checkpoint key


def checkpoint_key_name(home: str, public_key: bytes) -> str:
    """The key name of a checkpoint key ``home`` rotated to: named by its public key's digest,
    never by a ledger name (no client string becomes a file path)."""
    return check_name(f"{home}{CHECKPOINT_KEY_INFIX}{hashlib.sha256(public_key).hexdigest()[:16]}")


def generate_checkpoint_key(directory: Path, home: str, passphrase: str | None = None) -> SigningKey:
    """A fresh checkpoint key of ``home``, written beside its node key before it is used:
    ``<home>.ckpt-<digest>.sign`` (0600, with ``home``'s passphrase if it has one) and ``.sign.pub``."""
    signing = new_signing_key()
    _install_signing_key(directory, checkpoint_key_name(home, signing.public.raw), signing, passphrase)
    return signing


def remove_checkpoint_key(directory: Path, home: str, public_key: bytes) -> None:
    """Remove the files :func:`generate_checkpoint_key` wrote for ``public_key``, once no
    record names that key (its rotation refused): a private key nothing uses is a risk."""
    for path in signing_key_paths(directory, checkpoint_key_name(home, public_key)):
        path.unlink(missing_ok=True)
    logger.info("removed the unused checkpoint key %s of %s", public_key.hex(), home)


def home_checkpoint_publics(directory: Path, home: str) -> list[bytes]:
    """The raw public keys ``home`` has signed checkpoints with: its node key's, then each rotated
    key's (``.sign.pub`` files); for tools that read checkpoints without the ledger's chain."""
    check_name(home)
    paths = [signing_key_paths(directory, home)[1]]
    paths += sorted(directory.glob(f"{home}{CHECKPOINT_KEY_INFIX}*{PUBLIC_SUFFIX}"))
    return [load_verify_key(path).raw for path in paths if path.is_file()]


def load_checkpoint_keys(directory: Path, home: str, passphrase: str | None = None) -> list[SigningKey]:
    """Every rotated checkpoint key of ``home`` in ``directory`` (see :func:`generate_checkpoint_key`)."""
    check_name(home)
    return [
        load_signing_key(path, passphrase)
        for path in sorted(directory.glob(f"{home}{CHECKPOINT_KEY_INFIX}*{PRIVATE_SUFFIX}"))
    ]


def load_signing_key(path: Path, passphrase: str | None = None) -> SigningKey:
    """The private key in a ``.sign`` file; refuses a file that others may read."""
    text = read_private_text(path)
    encrypted = "ENCRYPTED PRIVATE KEY" in text
    if encrypted and passphrase is None:
        raise PassphraseError(f"{path}: this signing key is protected by a passphrase; give it")
    if not encrypted and passphrase is not None:
        raise PassphraseError(f"{path}: this signing key has no passphrase, but one was given")
    try:
        key = ECC.import_key(text, passphrase=passphrase)
    except ValueError as e:
        if encrypted:
            raise PassphraseError(f"{path}: wrong passphrase (or the file was changed)") from None
        raise KeyMaterialError(f"{path}: not an Ed25519 private key in PEM ({e})") from None
    if key.curve != CURVE or not key.has_private():
        raise KeyMaterialError(f"{path}: not an Ed25519 private key (a {key.curve} key)")
    return SigningKey(bytes(key.seed))


def load_verify_key(path: Path) -> VerifyKey:
    """The public key in a ``.sign.pub`` file."""
    text = read_key_text(path)
    try:
        key = ECC.import_key(text)
    except ValueError as e:
        raise KeyMaterialError(f"{path}: not an Ed25519 public key in PEM ({e})") from None
    if key.curve != CURVE or key.has_private():
        raise KeyMaterialError(f"{path}: not an Ed25519 public key (a {key.curve} key)")
    return VerifyKey(bytes(key.export_key(format="raw")))


def admin_checkpoint_key(config: ClusterConfig) -> VerifierKey | None:
    """The admin ledger's checkpoint key: its home's public key file, named ``<cluster>/admin``
    (the admin genesis pins none, PROTOCOL 16.1); None when the file is missing or unreadable
    (logged): nothing of the admin ledger can then be proven to this reader."""
    home = config.home_of(ADMIN_LEDGER).name
    try:
        raw = load_verify_key(signing_key_paths(config.keys_dir, home)[1]).raw
    except KeyMaterialError as e:
        logger.warning("the admin ledger's checkpoint key (%s) cannot be read: %s", home, e)
        return None
    return VerifierKey(origin_for(config.name, ADMIN_LEDGER), ALG_ED25519, raw)


def witness_keys(config: ClusterConfig) -> dict[str, VerifierKey]:
    """The cosignature key of every replica and observer whose ``<name>.sign.pub`` exists."""
    keys = {}
    for node in config.nodes.values():
        path = signing_key_paths(config.keys_dir, node.name)[1]
        if node.role in FOLLOWER_ROLES and path.is_file():
            keys[node.name] = witness_key(witness_name(config.name, node.name), load_verify_key(path).raw)
    return keys


def newest_witness_keys(config: ClusterConfig) -> dict[str, VerifierKey]:
    """The cosignature key of every replica and observer of its newest generation in the key
    directory (``<name>@<g>.sign.pub`` of the highest ``g``, else ``<name>.sign.pub``), named
    as generation 0 is: after a rotation (PROTOCOL 16.6) the key its node signs with, and not
    the replaced one, which a thief who holds it can still stamp with a time in its window."""
    keys = {}
    for node in config.nodes.values():
        if node.role not in FOLLOWER_ROLES:
            continue
        generation = newest_generation(config.keys_dir, node.name, PUBLIC_SUFFIX)
        path = signing_key_paths(config.keys_dir, generation_name(node.name, generation))[1]
        if path.is_file():
            keys[node.name] = witness_key(witness_name(config.name, node.name), load_verify_key(path).raw)
    return keys
