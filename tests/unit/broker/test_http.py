"""The shared HTTP plumbing: what a request aiohttp cannot parse leaves in the log."""

from __future__ import annotations

import logging
import socket
import sys
import time

import pytest
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong

from vledger.broker.http import HttpThread, json_errors, protocol_log

DEADLINE = 5.0


def test_an_unparsable_request_is_one_debug_line_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    # aiohttp logged each one with a traceback at ERROR: anyone could flood a gateway's log.
    caplog.set_level(logging.DEBUG, logger=protocol_log.name)
    with HttpThread(web.Application(middlewares=[json_errors]), "127.0.0.1", 0) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
            assert conn.recv(64).startswith(b"HTTP/1.0 400")
        deadline = time.monotonic() + DEADLINE
        while not [r for r in caplog.records if r.name == protocol_log.name] and time.monotonic() < deadline:
            time.sleep(0.01)
    records = [r for r in caplog.records if r.name == protocol_log.name]
    assert len(records) == 1
    assert records[0].levelno == logging.DEBUG and records[0].exc_info is None
    assert "8190" in records[0].getMessage() and "\n" not in records[0].getMessage()


def test_any_other_error_keeps_its_level_and_traceback() -> None:
    try:
        raise ValueError("a bug")
    except ValueError:
        bug = logging.LogRecord(protocol_log.name, logging.ERROR, __file__, 1, "Error handling", (), sys.exc_info())
    assert protocol_log.filters  # else the loop below would pass having checked nothing
    for f in protocol_log.filters:
        assert isinstance(f, logging.Filter) and f.filter(bug)
    assert bug.levelno == logging.ERROR and bug.exc_info is not None


def test_the_filter_reads_aiohttp_s_parse_error() -> None:
    # The class the filter matches is what aiohttp raises for an overlong header line.
    try:
        raise LineTooLong(b"x" * 10, 8190)
    except LineTooLong:
        record = logging.LogRecord(protocol_log.name, logging.ERROR, __file__, 1, "Error handling", (), sys.exc_info())
    for f in protocol_log.filters:
        assert isinstance(f, logging.Filter) and f.filter(record)
    assert record.levelno == logging.DEBUG and record.exc_info is None
