"""MCP over streamable HTTP at ``/mcp`` on the control HTTP server.

The SDK's ``StreamableHTTPSessionManager`` (stateful sessions, JSON replies,
bounded by ``[control.mcp] max_sessions`` and ``session_idle_timeout``) runs
behind an aiohttp route through ``sipfleet.aio.asgi``. It starts on the first
request (the SDK costs ~1 s of imports, paid only when MCP is used) in a task
of its own, which owns the manager's task group until ``close``. The bearer
token rule of the control HTTP server applies (checked before this route).
On a loopback bind the SDK's DNS-rebinding protection also checks Host and
Origin.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from sipfleet.aio.asgi import serve_asgi
from sipfleet.aio.rpc_http import HttpRoute
from sipfleet.config.control import HttpConfig, McpConfig, is_loopback
from sipfleet.control.jsonrpc import JsonRpcHandler

if TYPE_CHECKING:
    from sipfleet.aio.asgi import AsgiApp

__all__ = ["MCP_PATH", "McpHttp"]

log = logging.getLogger("sipfleet.mcp")

MCP_PATH = "/mcp"
_MAX_BODY = 1 << 20


class McpHttp:
    """The ``/mcp`` route and the session manager's lifetime."""

    def __init__(self, handler: JsonRpcHandler, cfg: McpConfig, http: HttpConfig) -> None:
        self._handler = handler
        self._cfg = cfg
        self._http = http
        self._asgi: AsgiApp | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._closed = False
        self.requests = 0

    @property
    def routes(self) -> list[HttpRoute]:
        """Its paths on the control HTTP server."""
        return [HttpRoute("*", MCP_PATH, self.handle), HttpRoute("*", MCP_PATH + "/", self.handle)]

    async def _start(self) -> AsgiApp:
        from mcp.server.transport_security import TransportSecuritySettings

        from sipfleet.mcp.backend import RegistryBackend
        from sipfleet.mcp.server import build_server

        server = build_server(RegistryBackend(self._handler), self._cfg)
        security = None
        if is_loopback(self._http.host):
            security = TransportSecuritySettings(
                enable_dns_rebinding_protection=True,
                allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
                allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
            )
        # The public way to the low-level server's session manager: build the app, keep
        # its manager, serve it ourselves (no Starlette routing, no uvicorn).
        server.streamable_http_app(
            json_response=True,
            transport_security=security,
            max_request_body_size=_MAX_BODY,
            session_idle_timeout=self._cfg.session_idle_timeout,
            max_sessions=self._cfg.max_sessions,
        )
        manager = server.session_manager
        started = asyncio.Event()

        async def run() -> None:
            try:
                async with manager.run():
                    started.set()
                    await self._stop.wait()
            except Exception:
                log.exception("MCP session manager stopped")
            finally:
                started.set()

        self._task = asyncio.get_running_loop().create_task(run(), name="mcp-sessions")
        await started.wait()
        if self._task.done():
            raise RuntimeError("the MCP session manager did not start")
        log.info("mcp: streamable HTTP sessions served at %s", MCP_PATH)
        return manager.handle_request

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self._closed:
            return web.Response(status=503, text="shutting down\n")
        if self._asgi is None:
            async with self._lock:
                if self._asgi is None:
                    try:
                        self._asgi = await self._start()
                    except Exception:
                        log.exception("mcp: cannot start")
                        return web.Response(status=503, text="MCP is not available\n")
        self.requests += 1
        return await serve_asgi(self._asgi, request)

    async def close(self) -> None:
        self._closed = True
        self._stop.set()
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(task, 5.0)
            except TimeoutError:
                task.cancel()
                log.warning("mcp: session manager did not stop within 5 s")
