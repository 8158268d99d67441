"""The operations endpoint: ``/metrics``, ``/healthz`` and ``/readyz`` over HTTP/1.1.

It runs on the server's own event loop rather than in prometheus_client's
thread server, so it shares the server's lifecycle: it listens before
recovery starts (``/readyz`` can say "not yet" while the WAL replays, where a
closed port would only say "no") and it stops with the server.

- ``GET /healthz``: 200 while the process runs and its event loop answers.
- ``GET /readyz``: 200 once recovery has finished and writes are accepted;
  503 while starting, while stopping, and when the engine refuses writes
  after a storage failure.
- ``GET /metrics``: the Prometheus text format (:mod:`xtsdb.server.metrics`).

``HEAD`` works too. One request per connection (``Connection: close``):
scrapers and probes open a connection per request anyway. A request head is
bounded to 8 KiB and 5 s, so a slow or hostile client holds one socket for
that long at most. There is no authentication: the endpoint exposes figures,
never data; bind it where only the scraper and the orchestrator reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from xtsdb.server.http_request import MAX_HEAD, HttpError, read_head, response
from xtsdb.server.metrics import Metrics, StatsSource

log = logging.getLogger("xtsdb.server")

HEAD_TIMEOUT = 5.0
WRITE_TIMEOUT = 10.0
_TEXT = "text/plain; charset=utf-8"


class Health:
    """What the probes report; the server moves ``phase`` along as it starts and stops."""

    def __init__(self) -> None:
        self.phase = "starting"  # -> "ready" -> "stopping"
        self.engine: StatsSource | None = None  # set once recovery has finished
        self.server_stats: Callable[[], Mapping[str, Any]] | None = None  # loop-owned gauges


class OpsEndpoint:
    """A listening HTTP endpoint; :meth:`start` it, :meth:`close` it."""

    def __init__(self, metrics: Metrics, health: Health) -> None:
        self.metrics = metrics
        self.health = health
        self.host = ""
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, host: str, port: int) -> OpsEndpoint:
        self._server = await asyncio.start_server(
            self._handle, host, port, limit=MAX_HEAD, backlog=64
        )
        self.host, self.port = self._server.sockets[0].getsockname()[:2]
        shown = f"[{self.host}]" if ":" in self.host else self.host
        log.info("metrics and probes on http://%s:%d (/metrics /healthz /readyz)", shown, self.port)
        return self

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None

    # -- one request ---------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        headers: dict[str, str] = {}
        try:
            try:
                req = await asyncio.wait_for(read_head(reader), HEAD_TIMEOUT)
            except HttpError:
                req = None
                status, ctype, body = 400, _TEXT, b"bad request\n"
            except (TimeoutError, ConnectionError):
                return
            else:
                if req is None:  # the peer closed without asking anything
                    return
                status, ctype, body, headers = await self._route(req.method, req.path)
            head_only = req is not None and req.method == "HEAD"
            writer.write(response(status, body, content_type=ctype, headers=headers,
                                  keep_alive=False, head_only=head_only))  # fmt: skip
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        except (TimeoutError, ConnectionError):
            pass
        except Exception:  # a bug here must not take the server down, only this answer
            log.exception("metrics endpoint failed to answer")
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _route(self, method: str, path: str) -> tuple[int, str, bytes, dict[str, str]]:
        if method not in ("GET", "HEAD"):
            return 405, _TEXT, b"method not allowed\n", {"Allow": "GET, HEAD"}
        if path == "/healthz":
            return 200, _TEXT, b"ok\n", {}
        if path == "/readyz":
            ready, why = await self._ready()
            return (200 if ready else 503), _TEXT, f"{why}\n".encode(), {}
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, await self._metrics(), {}
        return 404, _TEXT, b"not found: try /metrics, /healthz or /readyz\n", {}

    async def _ready(self) -> tuple[bool, str]:
        health = self.health
        if health.phase != "ready":
            return False, f"not ready: {health.phase}"
        engine = health.engine
        if engine is not None:
            stats = await asyncio.get_running_loop().run_in_executor(None, engine.stats)
            if stats.get("failed"):
                return False, f"not ready: the engine refuses writes: {stats['failed']}"
        return True, "ready"

    async def _metrics(self) -> bytes:
        # Loop-owned figures are read here, on the loop; the engine's in the thread.
        stats_fn = self.health.server_stats
        server = dict(stats_fn()) if stats_fn is not None else None
        ready = self.health.phase == "ready"
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.metrics.render, server, ready)
