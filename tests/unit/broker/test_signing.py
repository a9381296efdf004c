"""Ed25519 signing keys of observers, homes and witnesses: the files, their modes, signatures outsiders check."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vledger.broker.signing import (
    SigningKey,
    VerifyKey,
    generate_signing_key,
    load_signing_key,
    load_verify_key,
    new_signing_key,
    signing_key_paths,
)
from vledger.node.errors import KeyExistsError, KeyMaterialError, KeyPermissionsError, PassphraseError, SignatureError

# RFC 8032, section 7.1, TEST 1: the empty message under a known secret key.
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
KEY = new_signing_key()


def test_signatures_are_pure_ed25519_as_rfc8032_defines_them() -> None:
    """The RFC's own test vector: what an outsider's Ed25519 library computes, byte for byte."""
    key = SigningKey(RFC8032_SECRET)
    assert key.public.raw == RFC8032_PUBLIC
    assert key.sign(b"") == RFC8032_SIGNATURE
    key.public.verify(b"", RFC8032_SIGNATURE)


def test_the_files_are_pem_with_the_modes_of_secret_and_public_keys(tmp_path: Path) -> None:
    public = generate_signing_key(tmp_path, "observer-1")
    private_path, public_path = signing_key_paths(tmp_path, "observer-1")
    assert (private_path.name, public_path.name) == ("observer-1.sign", "observer-1.sign.pub")
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(public_path.stat().st_mode) == 0o644
    assert private_path.read_text().startswith("-----BEGIN PRIVATE KEY-----\n")
    assert public_path.read_text().startswith("-----BEGIN PUBLIC KEY-----\n")
    signing = load_signing_key(private_path)
    verify = load_verify_key(public_path)
    assert verify.public_hex == public.public_hex == signing.public.public_hex
    # docs/PROTOCOL.md 11.3, as an outsider reads it: the DER is a fixed prefix and the raw key.
    der = base64.b64decode("".join(public_path.read_text().splitlines()[1:-1]))
    assert der == bytes.fromhex("302a300506032b6570032100") + bytes.fromhex(verify.public_hex)
    verify.verify(b"body", signing.sign(b"body"))


def test_an_existing_key_is_never_replaced(tmp_path: Path) -> None:
    generate_signing_key(tmp_path, "observer-1")
    before = signing_key_paths(tmp_path, "observer-1")[0].read_bytes()
    with pytest.raises(KeyExistsError):
        generate_signing_key(tmp_path, "observer-1")
    assert signing_key_paths(tmp_path, "observer-1")[0].read_bytes() == before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_private_key_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    generate_signing_key(tmp_path, "observer-1")
    private_path = signing_key_paths(tmp_path, "observer-1")[0]
    os.chmod(private_path, mode)
    with pytest.raises(KeyPermissionsError):
        load_signing_key(private_path)


def test_a_passphrase_protects_the_private_key(tmp_path: Path) -> None:
    generate_signing_key(tmp_path, "observer-1", "correct horse")
    private_path = signing_key_paths(tmp_path, "observer-1")[0]
    assert private_path.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    with pytest.raises(PassphraseError):
        load_signing_key(private_path)
    with pytest.raises(PassphraseError):
        load_signing_key(private_path, "wrong")
    load_signing_key(private_path, "correct horse").sign(b"x")
    generate_signing_key(tmp_path, "observer-2")
    with pytest.raises(PassphraseError):
        load_signing_key(signing_key_paths(tmp_path, "observer-2")[0], "not needed")


def test_files_of_another_kind_are_refused(tmp_path: Path) -> None:
    generate_signing_key(tmp_path, "observer-1")
    private_path, public_path = signing_key_paths(tmp_path, "observer-1")
    with pytest.raises(KeyMaterialError):
        load_verify_key(private_path)  # a private key where a public one belongs
    with pytest.raises(KeyMaterialError):
        load_signing_key(_private_copy(public_path, tmp_path / "pub-as-private"))
    garbage = tmp_path / "garbage.sign.pub"
    garbage.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(KeyMaterialError):
        load_verify_key(garbage)
    with pytest.raises(KeyMaterialError):
        load_verify_key(tmp_path / "missing.sign.pub")


def _private_copy(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    os.chmod(target, 0o600)
    return target


@given(st.binary(min_size=1, max_size=200), st.data())
def test_any_changed_byte_of_the_data_or_the_signature_fails(data: bytes, draw: st.DataObject) -> None:
    signature = KEY.sign(data)
    KEY.public.verify(data, signature)
    index = draw.draw(st.integers(0, len(data) - 1))
    changed = data[:index] + bytes([data[index] ^ draw.draw(st.integers(1, 255))]) + data[index + 1 :]
    with pytest.raises(SignatureError):
        KEY.public.verify(changed, signature)
    spot = draw.draw(st.integers(0, len(signature) - 1))
    forged = signature[:spot] + bytes([signature[spot] ^ 1]) + signature[spot + 1 :]
    with pytest.raises(SignatureError):
        KEY.public.verify(data, forged)


def test_a_signature_of_another_length_or_key_fails() -> None:
    with pytest.raises(SignatureError):
        KEY.public.verify(b"x", KEY.sign(b"x")[:63])
    other: VerifyKey = new_signing_key().public
    with pytest.raises(SignatureError):
        other.verify(b"x", KEY.sign(b"x"))


# --- Ed25519 keys (docs/PROTOCOL.md 10.7) -----------------------------------------------------------


def test_the_seed_and_raw_public_key_are_rfc8032_s() -> None:
    """What a note signer key holds (node/note.py): the 32-byte private key and public key of RFC 8032."""
    key = SigningKey(RFC8032_SECRET)
    assert key.seed == RFC8032_SECRET
    assert key.public.raw == RFC8032_PUBLIC


@pytest.mark.parametrize(
    "raw",
    [
        bytes([1]) + bytes(31),
        bytes(32),
        bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    ],
)
def test_a_public_key_of_small_order_is_refused(raw: bytes, tmp_path: Path) -> None:
    """PROTOCOL 11.3 and 13.2: no signature by such a key verifies, so the key is refused outright."""
    with pytest.raises(KeyMaterialError, match="small order"):
        VerifyKey(raw)
    path = tmp_path / "small.sign.pub"
    path.write_text(
        "-----BEGIN PUBLIC KEY-----\n"
        + base64.b64encode(bytes.fromhex("302a300506032b6570032100") + raw).decode()
        + "\n-----END PUBLIC KEY-----\n"
    )
    with pytest.raises(KeyMaterialError, match="small order"):
        load_verify_key(path)


def test_keys_round_trip_their_pem_files(tmp_path: Path) -> None:
    """The key files pycryptodome writes are read back to the same seed and public key."""
    generate_signing_key(tmp_path, "home-1", "a passphrase")
    private_path, public_path = signing_key_paths(tmp_path, "home-1")
    signing = load_signing_key(private_path, "a passphrase")
    assert load_verify_key(public_path) == signing.public
    assert SigningKey(signing.seed).sign(b"m") == signing.sign(b"m")
    with pytest.raises(KeyMaterialError):
        SigningKey(signing.seed[:31])
