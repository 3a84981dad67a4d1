"""The operator's liveness server: `GET /healthz` for the kubelet, `GET /metrics` for Prometheus.

One HTTP server on `KUBETUNE_LIVENESS_BIND:KUBETUNE_LIVENESS_PORT` (default 127.0.0.1:8080)
serves both, so metrics need no port of their own. It replaces kopf's liveness endpoint, which
serves a single path: `/healthz` answers what kopf's answered (`{"controller": <probe>}`, the
benchmarks read the create timings from it), and 503 until the controllers have started.
main.py runs it around kopf, so it stops with the operator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from kubetune_operator.metrics import CONTENT_TYPE, OperatorMetrics

log = logging.getLogger("kubetune.operator")

Probe = Callable[[], dict[str, Any] | None]
"""The controller's probe answer; None while it has not started (or has stopped)."""


class HealthServer:
    """Serves /healthz from `probe` and /metrics from `metrics`."""

    def __init__(self, probe: Probe, metrics: OperatorMetrics) -> None:
        self._probe = probe
        self._metrics = metrics
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics_text)
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        answer = self._probe()
        if answer is None:
            return web.json_response({"controller": "not started"}, status=503)
        return web.json_response({"controller": answer})

    async def _metrics_text(self, request: web.Request) -> web.Response:
        response = web.Response(body=self._metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0 picks a free port); the port bound."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        log.info("liveness and metrics endpoint listening on %s:%s", host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
