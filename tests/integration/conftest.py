from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A fresh directory with a short path under /tmp (socket paths are limited to ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="vledger-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
