"""Optional /healthz and /metrics on a local port (CLIPBOT_HEALTH_PORT), served by aiohttp."""

from __future__ import annotations

import logging
import math

from aiohttp import web

log = logging.getLogger(__name__)


class HealthServer:
    """Liveness for Docker and orchestrators, Prometheus metrics for dashboards."""

    def __init__(self, bot, port: int, host: str = "127.0.0.1") -> None:
        self.bot = bot
        self.port = port
        self.host = host
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen on host:port."""
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = int(self._runner.addresses[0][1])  # the real port when 0 asked for any free one
        log.info("health and metrics on http://%s:%d/healthz and /metrics", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def healthz(self, request: web.Request) -> web.Response:
        """200 once connected to the gateway and ready, else 503."""
        bot = self.bot
        ready = bot.is_ready() and not bot.is_closed()
        latency = bot.latency
        body = {
            "status": "ok" if ready else "starting",
            "gateway_latency_ms": round(latency * 1e3, 1) if math.isfinite(latency) else None,
            "pictures": len(bot.engine.store),
            "in_flight": bot.admission.in_flight,
            "encoder_queue": bot.encoder_queue_depth(),
        }
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text exposition."""
        return web.Response(body=self.bot.metrics.exposition(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
