"""JSON-RPC over HTTP: POST /RPC, as Kamailio's jsonrpcs over xhttp.

The status line carries the fault (``500 Method Not Found``), like jsonrpcs.
Bodies are bounded by ``client_max_size`` (413 beyond).

Every path the server serves passes ``HttpGuard`` first (an aiohttp
middleware, so routes added to the app later get it too), because a browser
on the operator's machine can reach a loopback port:

- ``Host`` must name the bound address (IP[:port]), ``localhost``, or a name
  in ``[control.http] allowed_hosts``: 421 otherwise (a DNS-rebinding page
  sends its own name);
- an ``Origin``, when present, must be this server itself (same scheme and
  Host): 403 otherwise (a cross-site page);
- the bearer token, when configured: 401 otherwise.

A POST to the RPC path must also say ``Content-Type: application/json``
(415 otherwise): a cross-site form or ``text/plain`` fetch cannot set it
without a CORS preflight, which is never granted.

Other features add their own paths (``/metrics``, the dashboard, ``/mcp``)
as ``HttpRoute`` entries, matched before the RPC path and behind the same
guard; a route marked public (a page shell or asset that carries no data)
skips only the token.
"""

from __future__ import annotations

import hmac
import inspect
import ipaddress
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from sipfleet.config.control import HttpConfig
from sipfleet.control.core_methods import package_version
from sipfleet.control.jsonrpc import JsonRpcHandler, JsonRpcReply
from sipfleet.control.methods import RPC_CALLER
from sipfleet.ratelog import RateLimitedLog

__all__ = ["JSON_TYPES", "HttpGuard", "HttpRoute", "HttpServer", "make_http_app", "start_http"]

log = logging.getLogger(__name__)
_peer_log = RateLimitedLog(log)


class _PeerFaults(logging.Filter):
    """aiohttp's own server log: a malformed HTTP request is the peer's fault,
    so one line without a traceback; every line rate-limited."""

    def filter(self, record: logging.LogRecord) -> bool:
        key = str(record.msg)
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = (
                "%s: %s",
                (record.getMessage(), " ".join(str(exc).split())[:300]),
            )
            record.exc_info = record.exc_text = None
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return _peer_log.allow(record.levelno, time.monotonic(), key)


#: Given to aiohttp as its server logger (a child of ours, so levels and
#: handlers are sipfleet's).
_server_log = logging.getLogger(f"{__name__}.server")
_server_log.addFilter(_PeerFaults())

#: Content types a JSON-RPC POST may carry; none is a CORS "simple" type.
JSON_TYPES = frozenset({"application/json", "application/json-rpc", "application/jsonrequest"})

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def _split_host(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` or ``[v6][:port]`` -> (lower-case host, port), None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        host, _, port = value.partition(":")
        if ":" in port:
            return None  # an IPv6 literal without brackets
    host = host.rstrip(".")
    if not host or (port and not (port.isdigit() and int(port) <= 65535)):
        return None
    return host, (int(port) if port else None)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass
class HttpGuard:
    """Host, Origin and bearer-token checks for every HTTP request.

    ``bound`` is filled with the listening (ip, port) pairs once the site is
    up (port 0 is only known then).
    """

    names: Iterable[str] = ()
    """Operator-allowed ``name`` (any port) or ``name:port`` entries."""
    token: str | None = None
    scheme: str = "http"
    bound: list[tuple[str, int]] = field(default_factory=list)
    refused: int = 0
    """Requests refused by the guard (a counter for stats)."""

    def __post_init__(self) -> None:
        self._any_port: set[str] = set()
        self._with_port: set[tuple[str, int]] = set()
        for entry in self.names:
            split = _split_host(entry)
            if split is None:
                raise ValueError(f"allowed host {entry!r} is not HOST[:PORT]")
            host, port = split
            if port is None:
                self._any_port.add(host)
            else:
                self._with_port.add((host, port))
        self._expected = f"Bearer {self.token}".encode() if self.token else None

    def host_allowed(self, value: str) -> bool:
        split = _split_host(value)
        if split is None:
            return False
        host, port = split
        if host in self._any_port or (port is not None and (host, port) in self._with_port):
            return True
        ports = {p for _, p in self.bound}
        if port is not None and port not in ports:
            return False
        if host == "localhost":
            return True
        ip = _ip(host)
        if ip is None:
            return False  # a name nobody configured: maybe a rebinding page's
        for bound_host, _ in self.bound:
            bound_ip = _ip(bound_host.split("%")[0])
            if bound_ip is None:
                continue
            if bound_ip == ip or (bound_ip.is_unspecified and bound_ip.version == ip.version):
                return True
            if bound_ip.is_unspecified and ip.version == 4 and bound_ip.version == 6:
                return True  # "::" takes IPv4 too
        return False

    def _same_origin(self, origin: str, host: str) -> bool:
        parts = urlsplit(origin)
        if parts.scheme != self.scheme or parts.path or parts.query or parts.username:
            return False
        default = 443 if self.scheme == "https" else 80
        a, b = _split_host(parts.netloc), _split_host(host)
        if a is None or b is None:
            return False
        return (a[0], a[1] or default) == (b[0], b[1] or default)

    def refusal(self, request: web.Request, token: bool = True) -> web.Response | None:
        """The answer refusing ``request``, or None when it may proceed;
        ``token=False`` for public routes (Host and Origin still checked)."""
        host = request.headers.get("Host")
        if host is not None and not self.host_allowed(host):
            return self._refuse(
                request,
                421,
                "Misdirected Request",
                f"Host {host[:100]!r} is not this server; add it to "
                "[control.http] allowed_hosts if it is",
            )
        origin = request.headers.get("Origin")
        if origin is not None and (host is None or not self._same_origin(origin, host)):
            return self._refuse(
                request, 403, "Forbidden", f"cross-origin request from {origin[:100]!r} refused"
            )
        if token and self._expected is not None:
            given = request.headers.get("Authorization", "").encode("utf-8", "replace")
            if not hmac.compare_digest(given, self._expected):
                response = self._refuse(request, 401, "Unauthorized", "Unauthorized")
                response.headers["WWW-Authenticate"] = 'Bearer realm="sipfleet"'
                return response
        return None

    def _refuse(self, request: web.Request, status: int, reason: str, text: str) -> web.Response:
        self.refused += 1
        _peer_log.warning(
            time.monotonic(),
            "http %s: %d %s %s: %s",
            request.remote,
            status,
            _ascii(request.method[:16]),
            _ascii(request.path[:100]),
            _ascii(text),
            key=f"http refused {status}",
        )
        return web.Response(status=status, reason=reason, text=text + "\n")

    @web.middleware
    async def middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        public = request.match_info.route.resource in request.app.get(PUBLIC, ())
        refused = self.refusal(request, token=not public)
        if refused is not None:
            refused.headers["Server"] = request.app.get(SERVER_HEADER, "sipfleet")
            return refused
        return await handler(request)


SERVER_HEADER: web.AppKey[str] = web.AppKey("server_header", str)
GUARD: web.AppKey[HttpGuard] = web.AppKey("guard", HttpGuard)
PUBLIC: web.AppKey[frozenset[object]] = web.AppKey("public", frozenset)


@dataclass(frozen=True)
class HttpRoute:
    """One more path on the control HTTP server (``make_http_app(extra=...)``)."""

    method: str  # "GET", "POST", "*" ...
    path: str  # an aiohttp route path, e.g. "/metrics" or "/ui/{name}"
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    public: bool = False  # True: served without the token (it must carry no data)


def make_http_app(
    handler: JsonRpcHandler,
    *,
    path: str = "/RPC",
    token: str | None = None,
    max_request_bytes: int = 1 << 20,
    guard: HttpGuard | None = None,
    extra: Sequence[HttpRoute] = (),
) -> web.Application:
    """The app: ``guard`` (default: the token only, loopback addresses filled
    in by ``start_http``) runs before every route, this one's and later ones."""
    server_header = f"sipfleet ({package_version()})"
    guard = guard or HttpGuard(token=token)

    def with_server(route: HttpRoute) -> _Handler:
        async def serve(request: web.Request) -> web.StreamResponse:
            response = await route.handler(request)
            if not response.prepared:  # a stream has sent its headers already
                response.headers.setdefault("Server", server_header)
            return response

        return serve

    async def dispatch(request: web.Request) -> web.StreamResponse:
        headers = {"Server": server_header}
        # The stock kamailio.cfg dispatches every path matching ^/RPC.
        if not request.path.startswith(path):
            return web.Response(status=404, text="Not Found\n", headers=headers)
        if request.method != "POST":
            headers["Allow"] = "POST"
            return web.Response(status=405, text="POST a JSON-RPC request\n", headers=headers)
        if request.content_type not in JSON_TYPES:
            return web.Response(
                status=415,
                text="Unsupported Media Type: send the JSON-RPC request with "
                "'Content-Type: application/json'\n",
                headers=headers,
            )
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

    app = web.Application(client_max_size=max_request_bytes, middlewares=[guard.middleware])
    app[SERVER_HEADER] = server_header
    app[GUARD] = guard
    public: set[object] = set()
    for route in extra:  # before the catch-all: aiohttp matches in order
        added = app.router.add_route(route.method, route.path, with_server(route))
        if route.public:
            public.add(added.resource)
    app[PUBLIC] = frozenset(public)
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


@dataclass
class HttpServer:
    runner: web.AppRunner
    url: str
    guard: HttpGuard

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
    scheme = "https" if ssl_ctx else "http"
    names = list(cfg.allowed_hosts)
    if _ip(cfg.host) is None:
        names.append(cfg.host)  # bound by name: that name is ours
    guard = HttpGuard(names, token, scheme)
    app = make_http_app(
        handler, path=cfg.path, max_request_bytes=max_request_bytes, guard=guard, extra=extra
    )
    # Stop waits this long for in-flight calls (a drain that waits) before cutting them.
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=5.0, logger=_server_log
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, cfg.host, cfg.port, ssl_context=ssl_ctx)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    guard.bound.extend((str(a[0]), int(a[1])) for a in runner.addresses)
    host, port = runner.addresses[0][:2]
    shown = f"[{host}]" if ":" in host else host
    url = f"{scheme}://{shown}:{port}{cfg.path}"
    return HttpServer(runner, url, guard)
