"""The server's one HTTP port: the InfluxDB API, Prometheus remote storage, metrics and probes.

One :class:`HttpApi` listens on ``http_port`` (off by default; 8086 in the
Docker image) and serves, on one router:

=====================  ==========================================  ==============
route                  what                                        token
=====================  ==========================================  ==============
``/ping``, ``/health`` InfluxDB liveness                           none
``/healthz``           the process answers                         none
``/readyz``            recovery done, writes accepted              none
``/metrics``           Prometheus text format                      any role
``/write``,            line protocol (:mod:`.influx`)              write
``/api/v2/write``
``/query``             InfluxQL (:mod:`.influxql_route`)           any role [#]_
``/api/v1/write``      Prometheus remote write (:mod:`.http_prom`) write
``/api/v1/read``       Prometheus remote read                      any role
``/``, ``/console/*``  the web console's page (:mod:`.console`)    none
``/api/console/*``     the console's JSON API                      any role
=====================  ==========================================  ==============

.. [#] ``CREATE DATABASE`` needs the ``write`` role.

Tokens are asked for only when the server has tokens configured. The port
opens before recovery so the probes answer while the WAL replays; the data
routes answer 503 until the server :meth:`~HttpApi.attach`\\ es its context, and
again once it begins to stop (:meth:`~HttpApi.drain`). Every request is
bounded by the listener's :class:`~xtsdb.server.http_endpoint.HttpLimits`: the
body by ``max_frame`` (before it is buffered), its arrival by
``frame_timeout``, an idle connection by ``idle_timeout``; bodies being
received count against ``max_partial_bytes`` together with the binary port's.
Errors are InfluxDB-style JSON (``{"error": "..."}``).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from xtsdb.server.auth import Authenticator
from xtsdb.server.console import ConsoleRoutes
from xtsdb.server.context import ServerContext
from xtsdb.server.http_endpoint import HttpLimits, HttpListener, Router
from xtsdb.server.http_gate import DataGate
from xtsdb.server.http_ops import Health, OpsRoutes
from xtsdb.server.http_prom import PromRoutes
from xtsdb.server.influx import InfluxRoutes, error_reply
from xtsdb.server.limits import ByteBudget
from xtsdb.server.metrics import Metrics

if TYPE_CHECKING:
    from xtsdb.server.config import ServerConfig

log = logging.getLogger("xtsdb.server")


class HttpApi(HttpListener):
    """Every HTTP route of one server on one port: :meth:`start` it, :meth:`close` it last."""

    def __init__(
        self,
        metrics: Metrics,
        health: Health,
        gate: DataGate,
        limits: HttpLimits,
        budget: ByteBudget | None = None,
    ) -> None:
        self.gate = gate
        self.ops = OpsRoutes(metrics, health)
        self.influx = InfluxRoutes(gate)
        self.prom = PromRoutes(gate)
        self.requests: Counter[int] = Counter()  # by status
        router = Router()
        self.ops.add_to(router, metrics_check=gate.check("read"))
        self.influx.add_to(router)
        self.prom.add_to(router)
        ConsoleRoutes(gate).add_to(router)
        super().__init__(
            router,
            limits,
            name="HTTP API",
            budget=budget,  # shared with the binary port: bodies being received
            error_reply=error_reply,
            on_answer=self._count,
        )

    @classmethod
    def from_config(
        cls,
        config: ServerConfig,
        metrics: Metrics,
        health: Health,
        auth: Authenticator | None,
        budget: ByteBudget | None = None,
    ) -> HttpApi:
        """With the binary port's limits: ``max_frame``, the timeouts, ``max_connections``."""
        request_timeout = config.frame_timeout or None
        limits = HttpLimits(
            max_body=config.max_frame,
            max_connections=config.max_connections,
            idle_timeout=config.idle_timeout or None,
            request_timeout=request_timeout,
            write_timeout=request_timeout,
        )
        gate = DataGate(
            auth, max_queue_bytes=config.max_queue_bytes, queue_wait=request_timeout or 30.0
        )
        return cls(metrics, health, gate, limits, budget)

    def attach(self, ctx: ServerContext) -> None:
        """Recovery is done: the data routes serve ``ctx`` from now on."""
        self.gate.attach(ctx)

    async def drain(self, timeout: float) -> int:
        """Refuse new data requests and wait up to ``timeout`` for those in progress.

        Called before the write queue stops, so the writes of requests in
        progress are committed and answered; the probes keep answering.
        Returns how many were still running.
        """
        late = await self.gate.drain(timeout)
        if late:
            log.warning("%d HTTP requests still running after %.0f s", late, timeout)
        return late

    def stats(self) -> dict[str, Any]:
        """This port's counters, for the stats op."""
        return {
            "http_requests": {str(k): v for k, v in self.requests.items()},
            "http_connections": self.connections,
            **self.influx.stats(),
            **self.prom.stats(),
        }

    def _count(self, status: int) -> None:
        self.requests[status] += 1
