"""Fixtures shared by the follower's tests: every catch-up test runs with and without a page checker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vledger.ingest.page_check import PageChecker


@pytest.fixture(scope="session")
def page_checker() -> Iterator[PageChecker]:
    """One worker process for the whole run: each catch-up hands it a start of its own."""
    checker = PageChecker()
    assert checker.ready(timeout=60)  # a follower never waits for it to start: the tests do, once
    yield checker
    checker.close()


@pytest.fixture(params=["in process", "page checker"])
def checker(request: pytest.FixtureRequest) -> Iterator[PageChecker | None]:
    """Records checked in the follower's own process, then catch-up pages checked ahead in a
    page checker's (ingest/page_check.py): the same test, the same outcome expected."""
    if request.param == "in process":
        yield None
        return
    checker: PageChecker = request.getfixturevalue("page_checker")
    yield checker
    assert not checker.broken
    assert not checker.waiting()  # every answer taken, none left over for the next test
