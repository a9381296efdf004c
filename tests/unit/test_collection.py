"""The suite collects the same test ids every time, which `make test` (pytest-xdist) relies on.

Each xdist worker collects the suite on its own and the controller refuses to run when their
lists differ: an id built from a random value (a fresh key, an object's address) breaks every
parallel run. A second, independent collection must therefore name every test this one has.

Under xdist (`make test`) the controller makes that very comparison between its workers' own
collections before it runs anything, so this test runs only where pytest runs without it: its
subprocess collects the whole suite again (20 s of CI's 15 minutes) to learn what xdist already
checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(
    "PYTEST_XDIST_WORKER" in os.environ, reason="xdist compares its workers' collections itself, before any test runs"
)
def test_a_second_collection_names_every_test_of_this_one(request: pytest.FixtureRequest) -> None:
    ours = {item.nodeid for item in request.session.items if item.nodeid.startswith("tests/")}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    theirs = {line for line in run.stdout.splitlines() if "::" in line}
    assert len(theirs) > 1000  # the whole suite, not an error page
    assert sorted(ours - theirs) == []
