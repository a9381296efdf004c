"""What ``vledger verify`` and ``make run`` print for a store that verified."""

from __future__ import annotations

import pytest

from vledger.tools.report import print_verification
from vledger.tools.verification import LedgerReport, Verification


@pytest.mark.parametrize(("count", "said"), [(0, "OK, 5 records, head"), (1, "1 checkpoint,"), (2, "2 checkpoints,")])
def test_the_checkpoints_are_counted_in_words(count: int, said: str, capsys: pytest.CaptureFixture[str]) -> None:
    report = LedgerReport("votes", records=5, head=bytes(32), checkpoints=count)
    print_verification("store", Verification(reports=[report]), as_json=False)
    assert said in capsys.readouterr().out
