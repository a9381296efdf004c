"""bench/verify.py's figure 2c: its ceiling, the bare loop in several processes at once, reads
every record of the store once, and no fewer."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from vledger.bench import stores
from vledger.bench.verify import _bare_at_once, _ready


def test_the_bare_loop_at_once_reads_each_record_once(tmp_path: Path) -> None:
    stores.build(tmp_path, 1_001)  # an odd count: the processes' shares differ by one
    with multiprocessing.get_context("spawn").Pool(2, initializer=_ready) as pool:
        assert _bare_at_once(pool, tmp_path, 1_001, 2) > 0
        assert _bare_at_once(pool, tmp_path, 1_001, 3) > 0  # more shares than processes
        # A store holding fewer records than verify was said to check gives no ceiling.
        with pytest.raises(RuntimeError, match="read 1,001 records, not 1,200"):
            _bare_at_once(pool, tmp_path, 1_200, 2)
