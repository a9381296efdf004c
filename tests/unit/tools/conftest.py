"""The CLI's tests run ``vledger`` in-process: each ``main()`` configures logging."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def vledger_logging_restored() -> Iterator[None]:
    """Put the ``vledger`` logger back as it was after each test. ``configure_logging`` hands it a
    handler on ``sys.stderr``, which under pytest is the test's capture, closed after it: a later
    log in this process (an outbox thread of another test, warning that the session's Redis went
    away at its end) then printed "--- Logging error ---" instead of its line."""
    logger = logging.getLogger("vledger")
    handlers, level = logger.handlers[:], logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
