"""The web dashboard at ``GET /`` of the control HTTP server.

Plain HTML, JavaScript and CSS shipped in ``sipfleet/web/`` (no CDN, no
build step). The page shell and its assets carry no data and are public;
everything the page shows comes from ``GET /ui/stream`` (Server-Sent Events,
behind the RPC token when one is set): a ``hello`` with the recent events,
and the routed counts of the last two minutes (sampled every second, for
the chart), then a ``fleet`` snapshot every second and each ``event`` as the
EventBus emits it. Actions (drain, undrain, disable, enable, reload) are JSON-RPC
calls to the RPC path, so they pass the same checks as any other caller
and show up in the events with the transport that made them.

Bounds: at most ``max_streams`` pages at once (503 beyond); each has a
queue of ``queue_size`` events, and a page that cannot keep up loses the
overflow (counted, and told in its next snapshot) rather than grow it.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from collections import deque
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from sipfleet import __version__
from sipfleet.aio.events import Event
from sipfleet.aio.rpc_http import HttpRoute
from sipfleet.aio.rpc_thread import on_loop, soon_on
from sipfleet.control.fleet import FleetApp, destinations, fleet_view
from sipfleet.control.telemetry import Telemetry

__all__ = ["Dashboard"]

log = logging.getLogger(__name__)

_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
_ASSET_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"
    ),
}
_RECENT = 50  # events a new page starts with
_HISTORY = 120  # seconds of routed counts a new page starts its chart with
_HISTORY_DESTS = 64  # ... per destination up to this many; the total beyond
_STOP: Event = {}  # a queue sentinel: the server is closing


def _dumps(value: object) -> bytes:
    return orjson.dumps(value, default=str)


def _load_assets() -> tuple[str, dict[str, tuple[bytes, str]]]:
    web_dir = resources.files("sipfleet") / "web"
    page = (web_dir / "index.html").read_text("utf-8")
    assets: dict[str, tuple[bytes, str]] = {}
    for entry in web_dir.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _TYPES:
            assets[entry.name] = (entry.read_bytes(), _TYPES[suffix])
    return page, assets


class Dashboard:
    """The page, its assets and its live stream, over one running sipfleet."""

    def __init__(
        self,
        app: FleetApp,
        telemetry: Telemetry,
        loop: asyncio.AbstractEventLoop,
        rpc_path: str,
        *,
        tick: float = 1.0,
        max_streams: int = 16,
        queue_size: int = 512,
    ) -> None:
        self.app = app
        self.telemetry = telemetry
        self.loop = loop
        self.tick = tick
        self.max_streams = max_streams
        self.queue_size = queue_size
        page, self.assets = _load_assets()
        self.page = page.replace("{{RPC_PATH}}", html.escape(rpc_path, quote=True)).encode()
        self._queues: set[asyncio.Queue[Event]] = set()
        # A stream is served by the control HTTP server's loop, which may be
        # another thread's (``[control] own_thread``): each queue's own loop.
        self._queue_loops: dict[asyncio.Queue[Event], asyncio.AbstractEventLoop] = {}
        self._snapshot: tuple[float, dict[str, Any]] = (-1e9, {})
        self.streams_refused = 0
        self.events_dropped = 0
        # Routed counts once a second: {"time", "total", "routed": {"set|uri": n}}.
        self.history: deque[dict[str, Any]] = deque(maxlen=_HISTORY)
        self._sampler: asyncio.TimerHandle | None = None

    @property
    def streams(self) -> int:
        """Pages connected now."""
        return len(self._queues)

    def routes(self) -> list[HttpRoute]:
        return [
            HttpRoute("GET", "/", self._page, public=True),
            HttpRoute("GET", "/ui/stream", self._stream),
            HttpRoute("GET", "/ui/{name}", self._asset, public=True),
        ]

    def start(self) -> None:
        self._sample()

    def _sample(self) -> None:
        self._sampler = self.loop.call_later(self.tick, self._sample)
        routed: dict[str, int] = {}
        total = 0
        for v in destinations(self.app, self.telemetry):
            total += v.counts[0]
            if len(routed) < _HISTORY_DESTS:
                routed[f"{v.dest.set_id}|{v.dest.uri}"] = v.counts[0]
        self.history.append({"time": time.time(), "total": total, "routed": routed})

    async def close(self) -> None:
        """End every open stream (the HTTP server waits for its handlers)."""
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None
        for q in list(self._queues):
            loop = self._queue_loops.get(q)
            if loop is None or loop is asyncio.get_running_loop():
                _stop_queue(q)
            else:
                loop.call_soon_threadsafe(_stop_queue, q)

    # -- handlers ------------------------------------------------------------------
    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=self.page, content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS
        )

    async def _asset(self, request: web.Request) -> web.StreamResponse:
        found = self.assets.get(request.match_info["name"])
        if found is None:
            return web.Response(status=404, text="Not Found\n")
        body, ctype = found
        return web.Response(body=body, headers={"Content-Type": ctype, **_ASSET_HEADERS})

    def snapshot(self) -> dict[str, Any]:
        """The fleet now; one reading serves every page within half a tick."""
        now = self.loop.time()
        at, view = self._snapshot
        if now - at >= self.tick / 2:
            view = fleet_view(self.app, self.telemetry)
            self._snapshot = (now, view)
        return view

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if len(self._queues) >= self.max_streams:
            self.streams_refused += 1
            return web.Response(status=503, text="Too many dashboards open\n")
        queue: asyncio.Queue[Event] = asyncio.Queue(self.queue_size)
        here = asyncio.get_running_loop()
        lost = 0

        def on_event(event: Event) -> None:
            nonlocal lost
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                lost += 1
                self.events_dropped += 1

        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            }
        )
        await response.prepare(request)
        self._queues.add(queue)
        self._queue_loops[queue] = here
        # Events fire on the state's loop; the queue lives on this one.
        deliver = on_event if here is self.loop else soon_on(here, on_event)
        unsubscribe = await on_loop(self.loop, self.app.events.subscribe, deliver)
        try:
            recent, history = await on_loop(self.loop, self._hello_parts)
            hello = {"version": __version__, "events": recent, "history": history}
            await self._send(response, "hello", hello)
            next_tick = self.loop.time()
            while True:
                wait = next_tick - self.loop.time()
                if wait <= 0:
                    snapshot = await on_loop(self.loop, self.snapshot)
                    view = {**snapshot, "lost_events": lost, "sent": time.time()}
                    await self._send(response, "fleet", view)
                    next_tick = max(next_tick + self.tick, self.loop.time())
                    continue
                try:
                    event = await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    continue
                if event is _STOP:
                    break
                await self._send(response, "event", event)
        except ConnectionError:
            pass  # the page went away
        finally:
            if here is self.loop:
                unsubscribe()
            else:
                self.loop.call_soon_threadsafe(unsubscribe)
            self._queues.discard(queue)
            self._queue_loops.pop(queue, None)
        return response

    def _hello_parts(self) -> tuple[list[Any], list[dict[str, Any]]]:
        return list(self.app.events.recent)[-_RECENT:], list(self.history)

    @staticmethod
    async def _send(response: web.StreamResponse, kind: str, data: object) -> None:
        await response.write(b"event: " + kind.encode() + b"\ndata: " + _dumps(data) + b"\n\n")


def _stop_queue(q: asyncio.Queue[Event]) -> None:
    while q.full():
        q.get_nowait()
    q.put_nowait(_STOP)
