"""``/metrics`` and the dashboard on the control HTTP server: the token rule, the page
and its assets, the live stream and its bounds. A real aiohttp server on a free
loopback port over the real pure core (tests/control/test_metrics.py's App)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families
from test_metrics import App

from sipfleet.aio.http_dashboard import Dashboard
from sipfleet.aio.http_metrics import LoopLag, Metrics
from sipfleet.aio.rpc_http import GUARD, make_http_app
from sipfleet.control.jsonrpc import JsonRpcHandler
from sipfleet.control.telemetry import Telemetry
from sipfleet.core.rpc import register_rpc

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _serve(
    test: Callable[[str, App, Dashboard], Awaitable[None]],
    *,
    token: str | None = TOKEN,
    **dash: Any,
) -> None:
    async def main() -> None:
        app = App()
        register_rpc(app.registry, app.core)
        dashboard = Dashboard(app, app.telemetry, asyncio.get_running_loop(), "/RPC", **dash)
        routes = [Metrics(app, app.telemetry).route(), *dashboard.routes()]
        web_app = make_http_app(JsonRpcHandler(app.registry), token=token, extra=routes)
        server = TestServer(web_app, host="127.0.0.1")
        await server.start_server()
        web_app[GUARD].bound.append(("127.0.0.1", server.port))  # as start_http does
        dashboard.start()
        try:
            await asyncio.wait_for(test(str(server.make_url("")), app, dashboard), 20)
        finally:
            await dashboard.close()
            await server.close()

    asyncio.run(main())


def test_page_and_assets_are_public_data_needs_the_token() -> None:
    async def check(base: str, app: App, dash: Dashboard) -> None:
        async with aiohttp.ClientSession() as s:
            async with s.get(base + "/") as r:
                assert r.status == 200
                page = await r.text()
                assert '<meta name="sipfleet-rpc" content="/RPC">' in page
                assert "script-src 'self'" in r.headers["Content-Security-Policy"]
                assert r.headers["X-Frame-Options"] == "DENY"
            async with s.get(base + "/ui/app.js") as r:
                assert r.status == 200 and r.content_type == "text/javascript"
                assert "dispatcher.drain" in await r.text()
            async with s.get(base + "/ui/style.css") as r:
                assert r.status == 200 and r.content_type == "text/css"
            for path in ("/ui/missing.js", "/ui/index.html", "/ui/..%2Fhttp_dashboard.py"):
                async with s.get(base + path) as r:
                    assert r.status == 404, path
            for path in ("/metrics", "/ui/stream"):
                async with s.get(base + path) as r:
                    assert r.status == 401, path
                    assert r.headers["WWW-Authenticate"] == 'Bearer realm="sipfleet"'
                async with s.get(base + path, headers={"Authorization": "Bearer nope"}) as r:
                    assert r.status == 401, path
            async with s.get(base + "/metrics", headers=AUTH) as r:
                assert r.status == 200
                assert r.content_type == "text/plain"
                text = await r.text()
                assert "sipfleet_destination_up{" in text
                names = {f.name for f in text_string_to_metric_families(text)}
                assert {"sipfleet_destination_state", "process_cpu_seconds"} <= names
            rpc = {"jsonrpc": "2.0", "method": "sipfleet.status", "id": 1}
            async with s.post(base + "/RPC", json=rpc) as r:
                assert r.status == 401
            async with s.post(base + "/RPC", json=rpc, headers=AUTH) as r:
                assert r.status == 200 and (await r.json())["result"]["destinations"] == 3

    _serve(check)


def test_without_a_token_everything_is_open_as_the_rpc() -> None:
    async def check(base: str, app: App, dash: Dashboard) -> None:
        async with aiohttp.ClientSession() as s, s.get(base + "/metrics") as r:
            assert r.status == 200

    _serve(check, token=None)


async def _read_events(resp: aiohttp.ClientResponse, n: int) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    buf = b""
    while len(out) < n:
        chunk = await resp.content.readany()
        assert chunk, "the stream ended"
        buf += chunk
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            kind = data = ""
            for line in block.decode().split("\n"):
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data += line[6:]
            out.append((kind, json.loads(data)))
    return out


def test_stream_sends_hello_snapshots_and_events_live() -> None:
    async def check(base: str, app: App, dash: Dashboard) -> None:
        app.events.emit("dst-down", {"set": 1, "uri": "sip:127.0.0.1:5071"})
        async with aiohttp.ClientSession() as s, s.get(base + "/ui/stream", headers=AUTH) as r:
            assert r.status == 200 and r.content_type == "text/event-stream"
            (hello, _snap) = await _read_events(r, 2)
            assert hello[0] == "hello"
            assert [e["event"] for e in hello[1]["events"]] == ["dst-down"]
            assert hello[1]["history"] and "routed" in hello[1]["history"][0]
            assert _snap[0] == "fleet"
            uris = [d["uri"] for st in _snap[1]["sets"] for d in st["destinations"]]
            assert len(uris) == 3
            assert dash.streams == 1
            app.events.emit("state-changed", {"set": 1, "state": "draining", "by": "test"})
            got = await _read_events(r, 2)  # the event, and a snapshot a second later
            kinds = [k for k, _ in got]
            assert "event" in kinds and "fleet" in kinds
            (ev,) = [v for k, v in got if k == "event"]
            assert ev["event"] == "state-changed" and ev["by"] == "test"
            await dash.close()  # the server stopping ends the stream
            rest = await asyncio.wait_for(r.content.read(), 5)
            assert b"event: event" not in rest
        assert dash.streams == 0

    _serve(check, tick=0.2)


def test_streams_are_bounded_and_a_slow_page_loses_events_not_memory() -> None:
    async def check(base: str, app: App, dash: Dashboard) -> None:
        async with (
            aiohttp.ClientSession() as s,
            s.get(base + "/ui/stream", headers=AUTH) as first,
        ):
            await _read_events(first, 1)
            async with s.get(base + "/ui/stream", headers=AUTH) as second:
                assert second.status == 503
            assert dash.streams_refused == 1
            for i in range(50):  # the page reads nothing meanwhile
                app.events.emit("dst-up", {"n": i})
            assert dash.events_dropped >= 50 - 4

    _serve(check, max_streams=1, queue_size=4)


def test_loop_lag_is_measured_when_the_loop_is_blocked() -> None:
    async def main() -> Telemetry:
        tel = Telemetry(lambda: ())
        lag = LoopLag(asyncio.get_running_loop(), tel, interval=0.02)
        lag.start()
        await asyncio.sleep(0.1)  # sleep-ok: idle, small lags (the behaviour)
        time.sleep(0.15)  # sleep-ok: the loop is stuck: the next tick comes late
        await asyncio.sleep(0.1)  # sleep-ok: the late tick is measured
        lag.stop()
        return tel

    tel = asyncio.run(main())
    cum = dict(tel.loop_lag.cumulative())
    assert cum["+Inf"] - cum["0.1"] >= 1  # the stuck tick, over 0.1 s late
    assert cum["0.1"] >= 2  # the idle ones
