"""HTTP plumbing (aiohttp) shared by the public gateway and every process's health port.

* :func:`json_errors`, a middleware: every failure is a JSON body ``{"error": {"code", "message"}}``
  with a stable code of docs/PROTOCOL.md and a 4xx status, never an HTML page or a traceback;
  a bug is a 500 with the code ``error``, logged here, its details kept out of the answer.
* :class:`HttpThread`: an aiohttp application served from a thread of its own (its own event
  loop), so that the node processes, which are threads around ZeroMQ sockets, can add one.
* :func:`health_app`: ``/healthz`` (the process is alive), ``/readyz`` (every readiness check
  passes: store open, Redis reachable, copy current) and ``/metrics`` (Prometheus text).

aiohttp rather than ``http.server``: one event loop serves thousands of idle Server-Sent
Events connections and keeps up with a cache's tile requests (README, "Public HTTP gateway").
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ..node.errors import VledgerError

log = logging.getLogger(__name__)
START_TIMEOUT = 10.0  # seconds: binding a port never takes longer unless something is wrong
SHUTDOWN_TIMEOUT = 3.0  # seconds open requests get to finish when the server stops
READ_VERBS = frozenset(("GET", "HEAD"))

# The HTTP status of each code a read can fail with; any other VledgerError is a 400.
STATUS_OF_CODE: Mapping[str, int] = {
    "not_found": 404,
    "no_such_ledger": 404,
    "bad_tree_size": 404,
    "too_large": 413,
    "store_error": 503,
    "store_closed": 503,
    "tree_mismatch": 500,
}
_REASON_CODE = {404: "not_found", 405: "bad_request", 413: "too_large"}

Check = Callable[[], str | None]  # None when ready, else the reason it is not


class _OneLineRefusals(logging.Filter):
    """aiohttp logs every request it cannot parse (a header over 8,190 bytes, a bad request
    line) with a traceback at ERROR, and answers it 400 itself: on the public gateway anyone
    could fill the log that way. Such a record becomes one DEBUG line; others pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            reason = str(error.message).strip().splitlines()[0][:200] if error.message else type(error).__name__
            record.msg, record.args = "%s: %s", (record.getMessage(), reason)
            record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
            record.exc_info = record.exc_text = None
        return True


# The server side of each connection logs here instead of aiohttp's "aiohttp.server".
protocol_log = logging.getLogger(__name__ + ".protocol")
protocol_log.addFilter(_OneLineRefusals())


def error_response(status: int, code: str, message: str) -> web.Response:
    """The one error shape: ``{"error": {"code": code, "message": message}}``, never cached."""
    body = {"error": {"code": code, "message": message}}
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


def json_response(value: Any, *, cache: str = "no-cache", status: int = 200) -> web.Response:
    """``value`` as compact JSON with the given Cache-Control."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return web.Response(text=text, status=status, content_type="application/json", headers={"Cache-Control": cache})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every refusal as JSON: unknown paths, other verbs, VledgerErrors, bugs."""
    if request.method not in READ_VERBS:
        return error_response(405, "bad_request", f"{request.method} is not served: this is read-only (GET, HEAD)")
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _REASON_CODE.get(e.status, "bad_request")
        message = "no such path" if e.status == 404 else e.reason
        return error_response(e.status, code, message)
    except VledgerError as e:
        return error_response(STATUS_OF_CODE.get(e.code, 400), e.code, e.message)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path[:200])
        return error_response(500, "error", "internal error; the server logged it")


class HttpThread:
    """Serve ``app`` on ``host:port`` from a daemon thread with its own event loop.

    :meth:`start` returns once the port is bound (``port`` then holds the bound port, useful
    with 0) and raises OSError when it cannot be; :meth:`stop` closes every connection.
    """

    def __init__(self, app: web.Application, host: str, port: int, name: str = "http") -> None:
        self.app = app
        self.host = host
        self.port = port
        self._name = name
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)

    def start(self) -> HttpThread:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        try:
            future.result(START_TIMEOUT)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            raise
        log.info("%s listening on http://%s:%d/", self._name, self.host, self.port)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT, logger=protocol_log
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = site._server  # the bound socket tells the port chosen for 0
        if server is not None and self.port == 0:
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.port = sockets[0].getsockname()[1]

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(START_TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT)
        self._loop.close()

    def __enter__(self) -> HttpThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_checks(checks: Mapping[str, Check]) -> dict[str, str | None]:
    """Each check's outcome: None when it passes, else its reason (a check that raises fails with its error)."""
    results: dict[str, str | None] = {}
    for name, check in checks.items():
        try:
            results[name] = check()
        except Exception as e:  # a probe answers; it never takes the process down
            results[name] = f"{type(e).__name__}: {e}"
    return results


def add_health_routes(app: web.Application, checks: Mapping[str, Check], registry: CollectorRegistry) -> None:
    """``/healthz``, ``/readyz`` and ``/metrics`` on ``app`` (see the module's docstring)."""

    async def healthz(_: web.Request) -> web.Response:
        return json_response({"ok": True})

    async def readyz(_: web.Request) -> web.Response:
        # Checks may block on Redis for their timeout: off the event loop.
        results = await asyncio.get_running_loop().run_in_executor(None, run_checks, checks)
        ready = all(reason is None for reason in results.values())
        return json_response({"ok": ready, "checks": results}, status=200 if ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


def health_app(checks: Mapping[str, Check], registry: CollectorRegistry) -> web.Application:
    """An application with only the three probes, for a node's ``http_port``."""
    app = web.Application(middlewares=[json_errors])
    add_health_routes(app, checks, registry)
    return app
