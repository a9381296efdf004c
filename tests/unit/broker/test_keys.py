"""CURVE key files: modes, formats, passphrases, and refusals with a sentence that says why."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.auth

from vledger.broker import keys
from vledger.node.errors import (
    BadPublicKeyError,
    KeyExistsError,
    KeyMaterialError,
    KeyNameError,
    KeyPermissionsError,
    PassphraseError,
)

PASSPHRASE = "correct horse battery staple"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    yield
    os.umask(old)


def test_generate_writes_a_public_0644_and_a_secret_0600(tmp_path: Path, permissive_umask: None) -> None:
    pair = keys.generate(tmp_path, "node-1")
    assert mode(tmp_path / "node-1.key") == 0o644
    assert mode(tmp_path / "node-1.key_secret") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node-1.key", "node-1.key_secret"]  # no temporaries left
    assert keys.load_public(tmp_path / "node-1.key") == pair.public
    assert keys.load_secret(tmp_path / "node-1.key_secret") == pair


def test_a_strict_umask_still_gives_the_documented_modes(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        keys.generate(tmp_path, "k")
    finally:
        os.umask(old)
    assert (mode(tmp_path / "k.key"), mode(tmp_path / "k.key_secret")) == (0o644, 0o600)


def test_the_secret_file_is_created_with_mode_0600(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[tuple[str, int]] = []
    real_open = os.open

    def spy(path: str | os.PathLike[str], flags: int, mode: int = 0o777, **kw: object) -> int:
        opened.append((os.fspath(path), mode))
        return real_open(path, flags, mode)

    monkeypatch.setattr(keys.os, "open", spy)
    keys.generate(tmp_path, "k")
    created = [(p, m) for p, m in opened if "key_secret" in p and p.endswith(".tmp")]
    assert created and all(m == 0o600 for _, m in created)


def test_zeromq_reads_the_unprotected_files(tmp_path: Path) -> None:
    pair = keys.generate(tmp_path, "srv")
    assert zmq.auth.load_certificate(tmp_path / "srv.key") == (pair.public.encode(), None)
    assert zmq.auth.load_certificate(tmp_path / "srv.key_secret") == (pair.public.encode(), pair.secret.encode())


def test_keys_written_by_zeromq_load_once_their_mode_is_fixed(tmp_path: Path) -> None:
    public_file, secret_file = zmq.auth.create_certificates(tmp_path, "zmq")
    with pytest.raises(KeyPermissionsError):  # pyzmq writes 0644 (NOTES): refused until chmod 600
        keys.load_secret(Path(secret_file))
    os.chmod(secret_file, 0o600)
    pair = keys.load_secret(Path(secret_file))
    assert pair.public == keys.load_public(Path(public_file))


def test_generate_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    first = keys.generate(tmp_path, "k")
    with pytest.raises(KeyExistsError, match="already exists"):
        keys.generate(tmp_path, "k")
    assert keys.load_secret(tmp_path / "k.key_secret") == first
    second = keys.generate(tmp_path, "k", overwrite=True)
    assert second != first
    assert keys.load_secret(tmp_path / "k.key_secret") == second
    assert mode(tmp_path / "k.key_secret") == 0o600


def test_generate_refuses_when_only_the_public_file_exists(tmp_path: Path) -> None:
    (tmp_path / "alice.key").write_text("someone else's key")
    with pytest.raises(KeyExistsError):
        keys.generate(tmp_path, "alice")
    assert not (tmp_path / "alice.key_secret").exists()


@pytest.mark.parametrize("name", ["", "../evil", "a/b", ".hidden", "-flag", "x" * 65, "a\x00b", "é"])
def test_a_key_name_never_becomes_a_path(tmp_path: Path, name: str) -> None:
    with pytest.raises(KeyNameError):
        keys.generate(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_passphrase_round_trip(tmp_path: Path) -> None:
    pair = keys.generate(tmp_path, "admin", PASSPHRASE)
    secret_file = tmp_path / "admin.key_secret"
    assert mode(secret_file) == 0o600
    document = json.loads(secret_file.read_text())
    assert document["format"] == "vledger-secret-key v1"
    assert (document["kdf"], document["n"], document["r"], document["p"]) == ("scrypt", 2**15, 8, 1)
    assert document["cipher"] == "chacha20-poly1305"
    assert pair.secret not in secret_file.read_text()
    assert keys.load_secret(secret_file, PASSPHRASE) == pair
    assert keys.load_public(secret_file) == keys.load_public(tmp_path / "admin.key") == pair.public


def test_the_passphrase_is_normalised(tmp_path: Path) -> None:
    pair = keys.generate(tmp_path, "k", "Zo\u00eb")  # composed ë
    assert keys.load_secret(tmp_path / "k.key_secret", "Zoe\u0308") == pair  # e + combining diaeresis


def test_a_wrong_or_missing_passphrase_is_refused_clearly(tmp_path: Path) -> None:
    keys.generate(tmp_path, "k", PASSPHRASE)
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        keys.load_secret(tmp_path / "k.key_secret", "not it")
    with pytest.raises(PassphraseError, match="protected by a passphrase"):
        keys.load_secret(tmp_path / "k.key_secret")


def test_a_passphrase_for_an_unprotected_key_is_refused(tmp_path: Path) -> None:
    keys.generate(tmp_path, "k")
    with pytest.raises(PassphraseError, match="has no passphrase"):
        keys.load_secret(tmp_path / "k.key_secret", PASSPHRASE)


def test_an_empty_passphrase_is_not_a_passphrase(tmp_path: Path) -> None:
    with pytest.raises(PassphraseError):
        keys.generate(tmp_path, "k", "")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("public_key", keys.new_keypair().public), ("n", 2**14), ("salt", "00" * 16)],
    ids=["public_key", "n", "salt"],  # a fresh key in an id would differ between collections
)
def test_a_changed_header_fails_like_a_wrong_passphrase(tmp_path: Path, field: str, value: object) -> None:
    keys.generate(tmp_path, "k", PASSPHRASE)
    path = tmp_path / "k.key_secret"
    document = json.loads(path.read_text())
    document[field] = value
    path.write_text(json.dumps(document))
    with pytest.raises(PassphraseError):
        keys.load_secret(path, PASSPHRASE)


def test_absurd_scrypt_parameters_are_refused_before_any_work(tmp_path: Path) -> None:
    keys.generate(tmp_path, "k", PASSPHRASE)
    path = tmp_path / "k.key_secret"
    document = json.loads(path.read_text())
    document["n"] = 2**30
    path.write_text(json.dumps(document))
    with pytest.raises(KeyMaterialError, match="out of bounds"):
        keys.load_secret(path, PASSPHRASE)


@pytest.mark.parametrize("loose", [0o640, 0o604, 0o644, 0o660, 0o602])
def test_a_secret_readable_or_writable_by_others_is_refused(tmp_path: Path, loose: int) -> None:
    keys.generate(tmp_path, "k")
    path = tmp_path / "k.key_secret"
    os.chmod(path, loose)
    with pytest.raises(KeyPermissionsError, match=f"permissions {loose:04o} are too open.*chmod 600"):
        keys.load_secret(path)


def test_a_secret_that_does_not_match_its_public_key_is_refused(tmp_path: Path) -> None:
    keys.generate(tmp_path, "k")
    path = tmp_path / "k.key_secret"
    other = keys.new_keypair()
    path.write_text(path.read_text().replace(keys.load_public(path), other.public))
    with pytest.raises(KeyMaterialError, match="does not belong"):
        keys.load_secret(path)


def test_a_public_file_is_not_a_secret_file(tmp_path: Path) -> None:
    keys.generate(tmp_path, "k")
    os.chmod(tmp_path / "k.key", 0o600)
    with pytest.raises(KeyMaterialError, match="no secret-key"):
        keys.load_secret(tmp_path / "k.key")


def test_missing_and_garbage_files_say_so(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError, match="cannot read"):
        keys.load_public(tmp_path / "nothing.key")
    (tmp_path / "bin.key").write_bytes(b"\xff\xfe")
    with pytest.raises(KeyMaterialError, match="not ASCII"):
        keys.load_public(tmp_path / "bin.key")
    (tmp_path / "empty.key").write_text("# nothing here\n")
    with pytest.raises(KeyMaterialError, match="no public-key"):
        keys.load_public(tmp_path / "empty.key")
    (tmp_path / "deep.key").write_text('{"a": ' + "[" * 30_000 + "]" * 30_000 + "}")  # json's RecursionError
    with pytest.raises(KeyMaterialError, match=r"not a valid .*: nested deeper"):
        keys.load_public(tmp_path / "deep.key")


def test_write_public_stores_a_received_key(tmp_path: Path) -> None:
    public = keys.new_keypair().public
    keys.write_public(tmp_path / "bob.key", public)
    assert keys.load_public(tmp_path / "bob.key") == public
    with pytest.raises(KeyExistsError):
        keys.write_public(tmp_path / "bob.key", public)


@pytest.mark.parametrize(
    "text",
    ["", "short", "x" * 39, "x" * 41, "~" * 40, " " + "a" * 39, "%" * 40, "\u00e9" * 40, b"\xff" * 40],
)
def test_check_public_key_refuses_what_is_not_a_z85_key(text: str | bytes) -> None:
    with pytest.raises(BadPublicKeyError):
        keys.check_public_key(text)


def test_public_key_helpers() -> None:
    pair = keys.new_keypair()
    assert keys.check_public_key(pair.public.encode()) == pair.public
    assert pair.fingerprint.startswith("SHA256:") and len(pair.fingerprint) == 7 + 43
    assert keys.fingerprint(pair.public) == pair.fingerprint
    assert pair.secret not in repr(pair)


def test_nothing_secret_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    pair = keys.generate(tmp_path, "k")
    keys.load_secret(tmp_path / "k.key_secret")
    protected = keys.generate(tmp_path, "p", PASSPHRASE)
    with pytest.raises(PassphraseError):
        keys.load_secret(tmp_path / "p.key_secret", "wrong")
    assert pair.secret not in caplog.text and protected.secret not in caplog.text
    assert PASSPHRASE not in caplog.text


def test_a_public_key_given_as_the_secret_is_named_as_such_not_told_to_chmod(tmp_path: Path) -> None:
    keys.generate(tmp_path, "alice")
    public = tmp_path / "alice.key"
    assert stat.S_IMODE(public.stat().st_mode) & 0o044  # readable by others, as a public key is
    with pytest.raises(KeyMaterialError, match=r"this is a public key .*pass the \.key_secret file") as caught:
        keys.load_secret(public)
    assert "chmod" not in caught.value.message
    secret = tmp_path / "alice.key_secret"
    secret.chmod(0o644)  # a real secret left readable is still told to chmod
    with pytest.raises(KeyPermissionsError, match="chmod 600"):
        keys.load_secret(secret)


def test_a_nodes_key_generations_are_found_by_name(tmp_path: Path) -> None:
    assert keys.generation_name("ingest-1", 0) == "ingest-1"
    assert keys.generation_name("ingest-1", 3) == "ingest-1@3"
    assert keys.newest_generation(tmp_path, "ingest-1") == 0
    keys.generate(tmp_path, "ingest-1")
    keys.generate(tmp_path, "ingest-1@2")
    keys.generate(tmp_path, "ingest-10@7")  # another node whose name starts alike
    (tmp_path / "ingest-1@x.key").write_text("not a generation")
    (tmp_path / "ingest-1@09.key").write_text("not a generation either")
    assert keys.newest_generation(tmp_path, "ingest-1") == 2
