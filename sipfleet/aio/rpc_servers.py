"""Start and stop every control transport over one registry.

    servers = await start_control(registry, config.control)
    ...                       # servers.run_dir, servers.endpoints
    await servers.close()     # listeners closed, socket files removed

A transport that fails to start stops the ones already started and raises:
a half-reachable control plane is worse than a clear error at startup.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sipfleet.aio.rpc_binrpc import start_ctl_tcp, start_ctl_udp, start_ctl_unix
from sipfleet.aio.rpc_dgram import start_dgram_udp, start_dgram_unix
from sipfleet.aio.rpc_fifo import FifoServer
from sipfleet.aio.rpc_http import HttpRoute, HttpServer, start_http
from sipfleet.aio.rpc_unix import Perms
from sipfleet.config.control import ControlConfig, parse_hostport
from sipfleet.control.binrpc import BinRpcHandler
from sipfleet.control.jsonrpc import JsonRpcHandler
from sipfleet.control.paths import BINRPC_SOCKET, DGRAM_SOCKET, FIFO_NAME, prepare_run_dir
from sipfleet.control.registry import Registry

__all__ = ["ControlServers", "start_control"]

log = logging.getLogger(__name__)


class _Closable(Protocol):
    async def close(self) -> None: ...


@dataclass
class ControlServers:
    run_dir: Path
    endpoints: dict[str, str] = field(default_factory=dict)
    """Transport name -> address, e.g. "http" -> "http://127.0.0.1:9060/RPC",
    "binrpc" -> "unix:/run/sipfleet/sipfleet_ctl" (bound ports resolved)."""
    jsonrpc: JsonRpcHandler | None = None
    """The JSON-RPC handler every JSON transport shares (its ``parse_errors``)."""
    http: HttpServer | None = None
    """The HTTP server, when enabled (its guard's ``refused`` count)."""
    _parts: list[_Closable] = field(default_factory=list, repr=False)

    async def close(self) -> None:
        parts, self._parts = self._parts, []
        for part in reversed(parts):
            try:
                await part.close()
            except Exception:
                log.exception("control: error while closing a transport")


async def start_control(
    registry: Registry,
    config: ControlConfig | None = None,
    *,
    http_routes: Sequence[HttpRoute] = (),
) -> ControlServers:
    """Start every enabled transport; ``http_routes`` are more paths on the HTTP one."""
    config = config or ControlConfig()
    run_dir = prepare_run_dir(config.run_dir)
    log.info("control: run directory %s (%s)", run_dir.path, run_dir.source)
    perms = Perms.from_config(config.socket)
    jsonrpc = JsonRpcHandler(registry, pretty=config.pretty)
    binrpc = BinRpcHandler(registry)
    limit = config.max_request_bytes
    servers = ControlServers(run_dir.path, jsonrpc=jsonrpc)
    try:
        if config.binrpc.enabled:
            path = config.binrpc.path or run_dir.path / BINRPC_SOCKET
            ctl = await start_ctl_unix(
                binrpc,
                jsonrpc,
                path,
                perms,
                max_request_bytes=limit,
                max_connections=config.max_connections,
            )
            servers._parts.append(ctl)
            servers.endpoints["binrpc"] = ctl.address
            if config.binrpc.tcp:
                host, port = parse_hostport(config.binrpc.tcp)
                tcp = await start_ctl_tcp(
                    binrpc,
                    jsonrpc,
                    host,
                    port,
                    max_request_bytes=limit,
                    max_connections=config.max_connections,
                )
                servers._parts.append(tcp)
                servers.endpoints["binrpc_tcp"] = tcp.address
            if config.binrpc.udp:
                host, port = parse_hostport(config.binrpc.udp)
                udp_ctl = await start_ctl_udp(binrpc, host, port, max_request_bytes=limit)
                servers._parts.append(udp_ctl)
                servers.endpoints["binrpc_udp"] = udp_ctl.address
        if config.fifo.enabled:
            path = config.fifo.path or run_dir.path / FIFO_NAME
            fifo = FifoServer(jsonrpc, path, config.fifo.reply_dir, perms, max_request_bytes=limit)
            await fifo.start()
            servers._parts.append(fifo)
            servers.endpoints["fifo"] = str(path)
        if config.dgram.enabled:
            path = config.dgram.path or run_dir.path / DGRAM_SOCKET
            dgram = await start_dgram_unix(jsonrpc, path, perms)
            servers._parts.append(dgram)
            servers.endpoints["dgram"] = dgram.address
            if config.dgram.udp:
                host, port = parse_hostport(config.dgram.udp)
                udp = await start_dgram_udp(jsonrpc, host, port)
                servers._parts.append(udp)
                servers.endpoints["dgram_udp"] = udp.address
        if config.http.enabled:
            mcp = None
            if config.mcp.enabled:
                from sipfleet.mcp.http import McpHttp

                mcp = McpHttp(jsonrpc, config.mcp, config.http)
            extra = [*http_routes, *(mcp.routes if mcp is not None else [])]
            http = await start_http(jsonrpc, config.http, max_request_bytes=limit, extra=extra)
            # Closed in reverse: MCP sessions (long-lived streams) end before the server waits
            # for its handlers.
            servers._parts.append(http)
            servers.http = http
            servers.endpoints["http"] = http.url
            if mcp is not None:
                servers._parts.append(mcp)
                base = http.url[: len(http.url) - len(config.http.path)]
                servers.endpoints["mcp"] = base + "/mcp"
    except BaseException:
        await servers.close()
        raise
    for name, address in servers.endpoints.items():
        log.info("control: %s on %s", name, address)
    return servers
