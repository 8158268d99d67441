"""The operations routes of the HTTP port: ``/metrics``, ``/healthz`` and ``/readyz``.

They run on the server's loop rather than in prometheus_client's thread
server, so they share the server's lifecycle: the port opens before recovery
starts (``/readyz`` can say "not yet" while the WAL replays, where a closed
port would only say "no") and closes last, once the engine is closed.

- ``GET /healthz``: 200 while the process runs and its event loop answers.
- ``GET /readyz``: 200 once recovery has finished and writes are accepted;
  503 while starting, while stopping, and when the engine refuses writes
  after a storage failure.
- ``GET /metrics``: the Prometheus text format (:mod:`xtsdb.server.metrics`).

``HEAD`` works too. The probes never need a token (an orchestrator probes
without one, and they reveal one bit); ``/metrics`` takes the check the
server gives it (with tokens configured: any valid token; docs/operations.md
says why).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from xtsdb.server.http_endpoint import HeadCheck, HttpReply, Router
from xtsdb.server.http_request import HttpRequest
from xtsdb.server.metrics import Metrics, StatsSource


class Health:
    """What the probes report; the server moves ``phase`` along as it starts and stops."""

    def __init__(self) -> None:
        self.phase = "starting"  # -> "ready" -> "stopping"
        self.engine: StatsSource | None = None  # set once recovery has finished
        self.server_stats: Callable[[], Mapping[str, Any]] | None = None  # loop-owned gauges


class OpsRoutes:
    """The three routes, over a :class:`Metrics` registry and a :class:`Health`."""

    def __init__(self, metrics: Metrics, health: Health) -> None:
        self.metrics = metrics
        self.health = health

    def add_to(self, router: Router, metrics_check: HeadCheck | None = None) -> None:
        router.add("GET HEAD", "/metrics", self._metrics, check_head=metrics_check)
        router.add("GET HEAD", "/healthz", self._healthz)
        router.add("GET HEAD", "/readyz", self._readyz)

    async def _healthz(self, req: HttpRequest) -> HttpReply:
        return HttpReply(200, b"ok\n")

    async def _readyz(self, req: HttpRequest) -> HttpReply:
        ready, why = await self._ready()
        return HttpReply(200 if ready else 503, f"{why}\n".encode())

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

    async def _metrics(self, req: HttpRequest) -> HttpReply:
        # Loop-owned figures are read here, on the loop; the engine's in the thread.
        stats_fn = self.health.server_stats
        server = dict(stats_fn()) if stats_fn is not None else None
        ready = self.health.phase == "ready"
        loop = asyncio.get_running_loop()
        text = await loop.run_in_executor(None, self.metrics.render, server, ready)
        return HttpReply(200, text, content_type=CONTENT_TYPE_LATEST)
