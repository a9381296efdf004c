"""Sealed ids (node/sealed.py): deterministic AES-256-SIV, opened only with the key and context."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vledger.node.errors import SealError, VledgerError
from vledger.node.sealed import is_sealed, new_seal_key, seal, siv_decrypt, siv_encrypt, unseal

KEY = bytes(range(64))
OTHER_KEY = bytes(range(1, 65))
SPELLING = re.compile(r"S1-[a-z2-7]+")


def body(sealed: str) -> bytes:
    text = sealed.removeprefix("S1-").upper()
    return base64.b32decode(text + "=" * (-len(text) % 8))


def test_seal_and_unseal_round_trip_non_ascii() -> None:
    sealed = seal(KEY, "Zoë Ābele, ID 7781", "zakat-fund")
    assert SPELLING.fullmatch(sealed)
    assert unseal(KEY, sealed, "zakat-fund") == "Zoë Ābele, ID 7781"


@given(st.text(), st.text())
def test_any_text_round_trips(info: str, context: str) -> None:
    assert unseal(KEY, seal(KEY, info, context), context) == info


def test_sealing_is_deterministic() -> None:
    assert seal(KEY, "Zoë") == seal(KEY, "Zoë") == seal(KEY, "Zoë", "")
    assert seal(KEY, "Zoë") != seal(KEY, "Zoe")


def test_the_id_depends_on_key_and_context() -> None:
    ids = {seal(KEY, "Zoë", "a"), seal(KEY, "Zoë", "b"), seal(OTHER_KEY, "Zoë", "a"), seal(KEY, "Zoë")}
    assert len(ids) == 4


def test_the_byte_format_is_tag_then_ciphertext() -> None:
    """S1- || base32(V || C): the 16-byte synthetic IV, then as many bytes as the UTF-8 info."""
    for info in ("", "Zoë", "x" * 100):
        data = body(seal(KEY, info, "ctx"))
        assert len(data) == 16 + len(info.encode())
        assert data == siv_encrypt(KEY, info.encode(), b"ctx")


def test_aes_siv_matches_rfc_5297() -> None:
    """RFC 5297 appendix A.1 (AES-128-SIV, one associated-data component): V || C."""
    key = bytes.fromhex("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    ad = bytes.fromhex("101112131415161718191a1b1c1d1e1f2021222324252627")
    plaintext = bytes.fromhex("112233445566778899aabbccddee")
    expected = bytes.fromhex("85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c")
    assert siv_encrypt(key, plaintext, ad) == expected
    assert siv_decrypt(key, expected, ad) == plaintext


def test_an_empty_context_is_one_empty_component_not_none() -> None:
    from Crypto.Cipher import AES

    cipher = AES.new(KEY, AES.MODE_SIV)  # no associated data at all
    ciphertext, tag = cipher.encrypt_and_digest(b"Zoe")
    assert body(seal(KEY, "Zoe")) != tag + ciphertext


def test_the_wrong_key_is_refused() -> None:
    sealed = seal(KEY, "Zoë", "zakat-fund")
    with pytest.raises(SealError) as caught:
        unseal(OTHER_KEY, sealed, "zakat-fund")
    assert caught.value.code == "bad_seal"
    assert isinstance(caught.value, VledgerError)


@pytest.mark.parametrize("context", ["", "other-fund", "zakat-fund ", "Zakat-fund"])
def test_the_wrong_context_is_refused(context: str) -> None:
    with pytest.raises(SealError):
        unseal(KEY, seal(KEY, "Zoë", "zakat-fund"), context)


@given(st.data())
def test_any_changed_character_is_refused(data: st.DataObject) -> None:
    sealed = seal(KEY, "Zoë", "ctx")
    index = data.draw(st.integers(0, len(sealed) - 1))
    replacement = data.draw(st.sampled_from("abcdefghijklmnopqrstuvwxyz234567S1-=A"))
    changed = sealed[:index] + replacement + sealed[index + 1 :]
    if changed != sealed:
        with pytest.raises(SealError):
            unseal(KEY, changed, "ctx")


@given(st.data())
def test_any_flipped_bit_is_refused(data: st.DataObject) -> None:
    raw = bytearray(body(seal(KEY, "Zoë", "ctx")))
    bit = data.draw(st.integers(0, 8 * len(raw) - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    tampered = "S1-" + base64.b32encode(bytes(raw)).decode().rstrip("=").lower()
    with pytest.raises(SealError):
        unseal(KEY, tampered, "ctx")


def test_only_the_one_exact_spelling_is_accepted() -> None:
    sealed = seal(KEY, "Zoe")  # 16 + 3 bytes: 31 characters, the last with 3 unused bits
    assert len(sealed) == 3 + 31
    last = "abcdefghijklmnopqrstuvwxyz234567".index(sealed[-1])
    same_bytes = sealed[:-1] + "abcdefghijklmnopqrstuvwxyz234567"[last ^ 1]
    assert body(same_bytes) == body(sealed)  # a lax decoder would take it
    for spelling in (
        same_bytes,
        sealed.upper(),
        "S1-" + sealed[3:].upper(),
        sealed + "=",
        sealed + "=====",
        "s1-" + sealed[3:],
    ):
        assert not is_sealed(spelling)
        with pytest.raises(SealError, match="not a sealed id"):
            unseal(KEY, spelling)


@pytest.mark.parametrize(
    "text", ["", "S1-", "S2-" + "a" * 26, "S1-" + "a" * 25, "S1-abc", "S1-a", "Zoë", "S1-aaaaaaaaa!"]
)
def test_malformed_ids_are_refused(text: str) -> None:
    assert not is_sealed(text)
    with pytest.raises(SealError):
        unseal(KEY, text)


def test_is_sealed_accepts_real_ids() -> None:
    assert is_sealed(seal(KEY, ""))
    assert is_sealed(seal(new_seal_key(), "Zoë", "ctx"))


@pytest.mark.parametrize("key", [b"", bytes(32), bytes(63), bytes(65), "k" * 64])
def test_keys_are_64_bytes(key: object) -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        seal(key, "Zoë")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="64 bytes"):
        unseal(key, seal(KEY, "Zoë"))  # type: ignore[arg-type]


def test_new_keys_are_fresh_64_byte_keys() -> None:
    keys = {new_seal_key() for _ in range(8)}
    assert len(keys) == 8
    assert all(len(key) == 64 for key in keys)
