"""What an operator watches: ``/metrics`` and the dashboard on the control
HTTP server, and what feeds them from the running process.

The process (``sipfleet.aio.app.App``) makes one, hands its routes to the
control server and reports what only it sees::

    ops = OperatorViews(app)                        # in App.__init__
    start_control(..., http_routes=ops.http_routes(cfg.control.http.path))
    ops.start()                                     # the loop-lag and chart timers
    ops.telemetry.probe(dest.key, code, rtt)        # each OPTIONS probe result
    ops.telemetry.reloaded(ok, seconds)             # each reload
    await ops.close()                               # before the control server
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sipfleet.aio.http_dashboard import Dashboard
from sipfleet.aio.http_metrics import LoopLag, Metrics
from sipfleet.aio.rpc_http import HttpRoute
from sipfleet.control.fleet import FleetApp
from sipfleet.control.telemetry import Telemetry

__all__ = ["OperatorViews"]


class OperatorViews:
    def __init__(self, app: FleetApp, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop
        self.telemetry = Telemetry(lambda: (d.key for d in app.dispatcher.destinations()))
        self.lag = LoopLag(loop, self.telemetry)
        self.dashboard: Dashboard | None = None
        self.metrics = Metrics(app, self.telemetry, loop)

    def http_routes(self, rpc_path: str) -> list[HttpRoute]:
        """``/metrics`` and the dashboard (``/``, ``/ui/...``); its actions POST to ``rpc_path``."""
        self.dashboard = Dashboard(self.app, self.telemetry, self.loop, rpc_path)
        self.metrics.add(_DashboardCollector(self.dashboard))
        return [self.metrics.route(), *self.dashboard.routes()]

    def start(self) -> None:
        self.lag.start()
        if self.dashboard is not None:
            self.dashboard.start()

    async def close(self) -> None:
        self.lag.stop()
        if self.dashboard is not None:
            await self.dashboard.close()


class _DashboardCollector(Collector):
    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        d = self.dashboard
        yield GaugeMetricFamily(
            "sipfleet_dashboard_streams", "Dashboard pages connected", value=d.streams
        )
        yield CounterMetricFamily(
            "sipfleet_dashboard_streams_refused",
            "Dashboard pages refused (too many open)",
            value=d.streams_refused,
        )
        yield CounterMetricFamily(
            "sipfleet_dashboard_events_dropped",
            "Events a slow dashboard page did not get",
            value=d.events_dropped,
        )
