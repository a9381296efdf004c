"""bench.pyvserv's table: the ratio says how many times vledger is ahead, whichever way a figure points.

pyvserv itself is never installed or run here (it is installed on demand by `make bench-pyvserv` only).
"""

from __future__ import annotations

import pytest

from vledger.bench.pyvserv import Row, number, render


def test_a_rate_ratio_is_vledger_over_pyvserv() -> None:
    assert Row("put", "rec/s", pyvserv=500.0, vledger=2_000.0).ratio == pytest.approx(4.0)


def test_a_time_ratio_is_pyvserv_over_vledger() -> None:
    row = Row("hello", "ms", pyvserv=0.3, vledger=0.15, higher_is_better=False)
    assert row.ratio == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("value", "text"),
    [(12_345.6, "12,346"), (719.4, "719"), (41.26, "41.3"), (2.456, "2.46"), (0.1549, "0.155")],
)
def test_numbers_keep_about_three_significant_digits(value: float, text: str) -> None:
    assert number(value) == text


def test_the_table_has_a_row_per_figure_and_marks_where_vledger_is_behind() -> None:
    rows = [
        Row("put, 1 client, sequential", "rec/s", pyvserv=719.0, vledger=640.0, note="1,000 puts a run"),
        Row("hello round trip, median", "ms", pyvserv=0.26, vledger=0.15, higher_is_better=False),
    ]
    text = render(rows, ".venv/bin/python -m bench.pyvserv", ["3 rounds"])
    lines = text.splitlines()
    assert "`.venv/bin/python -m bench.pyvserv`" in lines
    assert "| figure | pyvserv | vledger | ratio (vledger ahead ×) |" in lines
    assert "| put, 1 client, sequential (rec/s) | 719 | 640 | **0.89: behind** |" in lines
    assert "| hello round trip, median (ms) | 0.260 | 0.150 | 1.7 |" in lines
    assert "- 3 rounds" in lines
    assert "- put, 1 client, sequential: 1,000 puts a run" in lines
