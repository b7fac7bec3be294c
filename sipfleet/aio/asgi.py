"""Serve one ASGI application from an aiohttp handler (HTTP only, no lifespan).

aiohttp is the control plane's HTTP server; the MCP SDK's streamable HTTP
transport is an ASGI app. ``serve_asgi`` turns an aiohttp request into an
ASGI scope, feeds the body through ``receive`` in bounded chunks, and
streams what the app ``send``s (a JSON reply, or a long-lived SSE stream)
back through a ``StreamResponse``. A client that goes away is reported to
the app as ``http.disconnect``; an app that answers nothing gets a 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aiohttp import web

__all__ = ["AsgiApp", "serve_asgi"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
AsgiApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

_CHUNK = 1 << 16
_DISCONNECT_POLL = 0.5  # seconds between two looks at the connection after the body


def _scope(request: web.Request, root_path: str) -> Scope:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": f"{request.version.major}.{request.version.minor}",
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.raw_path.split("?", 1)[0].encode("latin-1", "replace"),
        "query_string": request.query_string.encode("latin-1", "replace"),
        "root_path": root_path,
        "headers": [(k.lower(), v) for k, v in request.raw_headers],
        "client": tuple(peer[:2]) if isinstance(peer, tuple) else None,
        "server": tuple(sock[:2]) if isinstance(sock, tuple) else None,
        "state": {},
    }


async def serve_asgi(
    app: AsgiApp, request: web.Request, *, root_path: str = ""
) -> web.StreamResponse:
    """Run ``app`` for ``request``; return the (already sent) response."""
    response: web.StreamResponse | None = None
    body_done = False
    finished = False

    async def receive() -> Message:
        nonlocal body_done
        if not body_done:
            chunk = await request.content.read(_CHUNK)
            more = not request.content.at_eof()
            if not more:
                body_done = True
            return {"type": "http.request", "body": chunk, "more_body": more}
        # After the body, the app only listens for the client leaving.
        while not finished:
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            await asyncio.sleep(_DISCONNECT_POLL)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal response
        kind = message["type"]
        if kind == "http.response.start":
            if response is not None:
                raise RuntimeError("ASGI app started the response twice")
            resp = web.StreamResponse(status=int(message["status"]))
            for name, value in message.get("headers", ()):
                key = name.decode("latin-1") if isinstance(name, bytes) else str(name)
                val = value.decode("latin-1") if isinstance(value, bytes) else str(value)
                if key.lower() in ("content-length", "transfer-encoding", "connection"):
                    continue  # aiohttp frames the body itself
                resp.headers.add(key, val)
            response = resp
        elif kind == "http.response.body":
            if response is None:
                raise RuntimeError("ASGI app sent a body before starting the response")
            if not response.prepared:
                await response.prepare(request)
            body = message.get("body", b"")
            if body:
                await response.write(body)
            if not message.get("more_body", False):
                await response.write_eof()

    try:
        await app(_scope(request, root_path), receive, send)
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("ASGI app failed on %s %s", request.method, request.path)
        if response is None:
            return web.Response(status=500, text="Internal Server Error\n")
    finally:
        finished = True
    if response is None:
        return web.Response(status=500, text="no response\n")
    if not response.prepared:
        await response.prepare(request)
        await response.write_eof()
    return response
