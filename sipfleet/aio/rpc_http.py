"""JSON-RPC over HTTP: POST /RPC, as Kamailio's jsonrpcs over xhttp.

The status line carries the fault (``500 Method Not Found``), like jsonrpcs.
A bearer token, when configured, is checked before anything else (401
otherwise). Bodies are bounded by ``client_max_size`` (413 beyond).

Other features add their own paths (``/metrics``, the dashboard) as
``HttpRoute`` entries: matched before the RPC path, behind the same token
unless marked public (a page shell or asset that carries no data).
"""

from __future__ import annotations

import hmac
import inspect
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from sipfleet.control.config import HttpConfig
from sipfleet.control.core_methods import package_version
from sipfleet.control.jsonrpc import JsonRpcHandler, JsonRpcReply
from sipfleet.control.methods import RPC_CALLER

__all__ = ["HttpRoute", "HttpServer", "make_http_app", "start_http"]

log = logging.getLogger(__name__)


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


@dataclass(frozen=True)
class HttpRoute:
    """One more path on the control HTTP server (``make_http_app(extra=...)``)."""

    method: str  # "GET", "POST", ...
    path: str  # an aiohttp route path, e.g. "/metrics" or "/ui/{name}"
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    public: bool = False  # True: served without the token (it must carry no data)


def make_http_app(
    handler: JsonRpcHandler,
    *,
    path: str = "/RPC",
    token: str | None = None,
    max_request_bytes: int = 1 << 20,
    extra: Sequence[HttpRoute] = (),
) -> web.Application:
    server_header = f"sipfleet ({package_version()})"
    expected = f"Bearer {token}".encode() if token else None

    def refused(request: web.Request) -> web.Response | None:
        """The 401 for a request without the token, None when it may go on."""
        if expected is None:
            return None
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        if hmac.compare_digest(given, expected):
            return None
        headers = {"Server": server_header, "WWW-Authenticate": 'Bearer realm="sipfleet"'}
        return web.Response(status=401, text="Unauthorized\n", headers=headers)

    def guarded(route: HttpRoute) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            denied = None if route.public else refused(request)
            if denied is not None:
                return denied
            response = await route.handler(request)
            if not response.prepared:  # a stream has sent its headers already
                response.headers.setdefault("Server", server_header)
            return response

        return serve

    async def dispatch(request: web.Request) -> web.StreamResponse:
        headers = {"Server": server_header}
        denied = refused(request)
        if denied is not None:
            return denied
        # The stock kamailio.cfg dispatches every path matching ^/RPC.
        if not request.path.startswith(path):
            return web.Response(status=404, text="Not Found\n", headers=headers)
        if request.method != "POST":
            headers["Allow"] = "POST"
            return web.Response(status=405, text="POST a JSON-RPC request\n", headers=headers)
        body = await request.read()
        RPC_CALLER.set(f"http {request.remote}")  # this request's task: events say who
        outcome = handler.handle(body)
        reply = await outcome if inspect.isawaitable(outcome) else outcome
        assert isinstance(reply, JsonRpcReply)  # HTTP is never the FIFO case
        return web.Response(
            status=reply.status,
            reason=_ascii(reply.reason),
            body=reply.body,
            content_type="application/json",
            headers=headers,
        )

    app = web.Application(client_max_size=max_request_bytes)
    for route in extra:  # before the catch-all: aiohttp matches in order
        app.router.add_route(route.method, route.path, guarded(route))
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


@dataclass
class HttpServer:
    runner: web.AppRunner
    url: str

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_http(
    handler: JsonRpcHandler,
    cfg: HttpConfig,
    *,
    max_request_bytes: int,
    extra: Sequence[HttpRoute] = (),
) -> HttpServer:
    token = cfg.token.get_secret_value() if cfg.token else None
    app = make_http_app(
        handler, path=cfg.path, token=token, max_request_bytes=max_request_bytes, extra=extra
    )
    ssl_ctx: ssl.SSLContext | None = None
    if cfg.tls_cert and cfg.tls_key:
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    # Stop waits this long for in-flight calls (a drain that waits) before cutting them.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, cfg.host, cfg.port, ssl_context=ssl_ctx)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    host, port = runner.addresses[0][:2]
    shown = f"[{host}]" if ":" in host else host
    url = f"{'https' if ssl_ctx else 'http'}://{shown}:{port}{cfg.path}"
    return HttpServer(runner, url)
