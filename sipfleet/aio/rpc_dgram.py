"""JSON-RPC datagrams (unix or UDP), as jsonrpcs' datagram transport.

One request per datagram; the reply goes to the sender's address (a client
must bind its socket, as kamcli's ``transport=socket`` does). A reply too big
for one datagram becomes a fault saying so, rather than silence.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, cast

from sipfleet.aio.rpc_unix import OwnedPath, Perms, bind_unix
from sipfleet.control.jsonrpc import JsonRpcHandler
from sipfleet.control.methods import RPC_CALLER
from sipfleet.control.registry import RpcFault
from sipfleet.ratelog import RateLimitedLog

__all__ = [
    "UDP_MAX",
    "DatagramService",
    "DgramServer",
    "bind_udp",
    "start_dgram_udp",
    "start_dgram_unix",
]

log = logging.getLogger(__name__)
peer_log = RateLimitedLog(log)  # every line a datagram sender can trigger

_MAX_INFLIGHT = 64  # requests being served at once; more are dropped, as a full UDP queue would
UDP_MAX = 65507  # the largest IPv4 UDP payload
REPLY_TOO_BIG = RpcFault(500, "Reply Too Big For A Datagram")


class DatagramService(asyncio.DatagramProtocol):
    """What every datagram RPC listener shares: one request per datagram, served
    in its own task, at most ``_MAX_INFLIGHT`` at once (more are dropped and
    logged, as a full socket queue would), replies sent back to the sender."""

    kind = "dgram"  # for log lines

    def __init__(self, label: str) -> None:
        self.label = label
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def spawn(self, request: Coroutine[Any, Any, None]) -> None:
        """Serve ``request`` in a task, or drop it when too many are in flight."""
        if len(self.tasks) >= _MAX_INFLIGHT:
            request.close()
            peer_log.warning(
                time.monotonic(),
                "rpc %s %s: %d requests in flight, dropping one",
                self.kind,
                self.label,
                len(self.tasks),
            )
            return
        task = asyncio.create_task(request)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def send(self, data: bytes, addr: Any) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    def error_received(self, exc: Exception) -> None:
        peer_log.warning(time.monotonic(), "rpc %s %s: %s", self.kind, self.label, exc)


class _Protocol(DatagramService):
    def __init__(self, handler: JsonRpcHandler, max_reply: int, label: str) -> None:
        super().__init__(label)
        self.handler = handler
        self.max_reply = max_reply

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not addr:
            peer_log.warning(
                time.monotonic(),
                "rpc dgram %s: request from an unbound socket: no way to reply",
                self.label,
            )
            return
        self.spawn(self._serve(data, addr))

    async def _serve(self, data: bytes, addr: Any) -> None:
        RPC_CALLER.set("dgram")
        try:
            outcome = self.handler.handle(data)
            reply = await outcome if inspect.isawaitable(outcome) else outcome
        except Exception:
            peer_log.exception(time.monotonic(), "rpc dgram %s: request failed", self.label)
            return
        if reply is None or not reply.parsed:
            return  # jsonrpcs drops what it cannot parse
        body = reply.body
        if len(body) > self.max_reply:
            peer_log.warning(
                time.monotonic(),
                "rpc dgram %s: %d byte reply too big, sending a fault",
                self.label,
                len(body),
            )
            body = self.handler.fault_reply(data, REPLY_TOO_BIG).body
        self.send(body, addr)


class DgramServer:
    def __init__(
        self,
        transport: asyncio.DatagramTransport,
        protocol: DatagramService,
        owned: OwnedPath | None,
        address: str,
    ) -> None:
        self.transport = transport
        self.protocol = protocol
        self.owned = owned
        self.address = address

    async def close(self) -> None:
        self.transport.close()
        for task in list(self.protocol.tasks):
            task.cancel()
        if self.protocol.tasks:
            await asyncio.gather(*self.protocol.tasks, return_exceptions=True)
        if self.owned is not None:
            self.owned.remove()


async def bind_udp(factory: Callable[[], DatagramService], host: str, port: int) -> DgramServer:
    """Serve ``factory()``'s protocol on UDP HOST:PORT (port 0: any free one)."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(factory, local_addr=(host, port))
    bound = transport.get_extra_info("sockname")
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    return DgramServer(transport, protocol, None, f"udp:{shown}:{bound[1]}")


async def start_dgram_unix(handler: JsonRpcHandler, path: Path, perms: Perms) -> DgramServer:
    sock, owned = bind_unix(path, socket.SOCK_DGRAM, perms)
    # Linux refuses a unix datagram over the send buffer (less a little).
    max_reply = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) - 64
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Protocol(handler, max_reply, str(path)), sock=sock
        )
    except BaseException:
        sock.close()
        owned.remove()
        raise
    return DgramServer(transport, protocol, owned, f"unixd:{path}")


async def start_dgram_udp(handler: JsonRpcHandler, host: str, port: int) -> DgramServer:
    return await bind_udp(lambda: _Protocol(handler, UDP_MAX, f"udp:{host}:{port}"), host, port)
