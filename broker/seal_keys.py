"""Seal key files: the 64 raw bytes of an AES-256-SIV key (node/sealed.py), mode 0600.

Whoever holds the file can open every sealed id made with it, so it is written with mode
0600 from its first byte and refused, as ssh refuses a secret key, when group or others may
read it. An existing file is never overwritten: the ids sealed with a lost key never open.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..node.errors import KeyExistsError, KeyMaterialError, KeyPermissionsError
from ..node.sealed import KEY_SIZE, new_seal_key


def write_seal_key(path: Path) -> None:
    """Write a new random seal key to ``path`` (refused if it exists)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise KeyExistsError(f"{path}: already exists; a seal key is never overwritten") from None
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # the umask may have taken bits the mode needs
        f.write(new_seal_key())
        f.flush()
        os.fsync(f.fileno())


def read_seal_key(path: Path) -> bytes:
    """The seal key in ``path``: exactly 64 bytes, in a file only its owner may read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise KeyMaterialError(f"{path}: cannot read: {e.strerror}") from e
    with os.fdopen(fd, "rb") as f:
        mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        if mode & 0o077:
            raise KeyPermissionsError(
                f"{path}: permissions {mode:04o} are too open: a seal key must not be readable by others; "
                f"run: chmod 600 {path}"
            )
        key = f.read(KEY_SIZE + 1)
    if len(key) != KEY_SIZE:
        raise KeyMaterialError(f"{path}: not a seal key (a seal key file holds exactly {KEY_SIZE} bytes)")
    return key
