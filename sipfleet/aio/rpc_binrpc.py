"""The ctl sockets: BINRPC for kamcmd on a unix stream socket, optionally TCP
and UDP (``kamcmd -s udp:HOST:PORT``).

Each connection may carry several requests, answered in order; partial
reads are framed by ``PacketReader``. A corrupt packet is answered 400 and
the connection closed, as ctl does; idle connections close after 120 s
(ctl's timeout); connections past ``max_connections`` are closed at once.

sipfleet's own CLI speaks JSON-RPC on the same socket: a connection whose
first byte is '{' (never BINRPC's 0xA1) carries JSON documents framed like
the FIFO, each answered by one JSON document and a newline. That gives the
CLI exact JSON results (BINRPC cannot carry null or arrays in structs)
behind the socket's file permissions, with no size limit.

Over UDP each datagram is one request and its reply goes back to the sender,
as ctl's datagram listener does; a reply that cannot fit in one datagram is
answered with a fault that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import time
from pathlib import Path
from typing import Any

from sipfleet.aio.rpc_dgram import UDP_MAX, DatagramService, DgramServer, bind_udp, peer_log
from sipfleet.aio.rpc_unix import OwnedPath, Perms, bind_unix
from sipfleet.control.binrpc import (
    CORRUPTED,
    BinRpcError,
    BinRpcHandler,
    BinRpcReply,
    Packet,
    PacketReader,
    encode_fault,
)
from sipfleet.control.jsonrpc import (
    DocumentTooLarge,
    JsonRpcHandler,
    JsonRpcReply,
    JsonStreamReader,
)
from sipfleet.control.methods import RPC_CALLER

__all__ = ["CtlServer", "start_ctl_tcp", "start_ctl_udp", "start_ctl_unix"]

log = logging.getLogger(__name__)

IDLE_TIMEOUT = 120.0  # ctl's IO_STREAM_CONN_TIMEOUT
_READ = 65536
_JSON_START = frozenset(b"{ \t\r\n")


class _Service:
    def __init__(
        self,
        binrpc: BinRpcHandler,
        jsonrpc: JsonRpcHandler,
        *,
        max_request_bytes: int,
        max_connections: int,
        label: str,
    ) -> None:
        self.binrpc = binrpc
        self.jsonrpc = jsonrpc
        self.max_request_bytes = max_request_bytes
        self.max_connections = max_connections
        self.label = label
        self.connections: set[asyncio.Task[None]] = set()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self.connections) >= self.max_connections:
            peer_log.warning(
                time.monotonic(),
                "rpc ctl %s: %d connections open, refusing one",
                self.label,
                len(self.connections),
            )
            writer.close()
            return
        self.connections.add(task)
        try:
            first = await asyncio.wait_for(reader.read(_READ), IDLE_TIMEOUT)
            if not first:
                return
            if first[0] in _JSON_START:
                await self._json(first, reader, writer)
            else:
                await self._binrpc(first, reader, writer)
        except (TimeoutError, ConnectionError):
            pass
        except Exception:
            peer_log.exception(time.monotonic(), "rpc ctl %s: connection failed", self.label)
        finally:
            self.connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _binrpc(
        self, data: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        framer = PacketReader(self.max_request_bytes)
        while data:
            try:
                packets = framer.feed(data)
            except BinRpcError as e:
                peer_log.warning(time.monotonic(), "rpc ctl %s: %s", self.label, e)
                writer.write(encode_fault(400, f"bad request: {CORRUPTED}", framer.last_cookie))
                await writer.drain()
                return
            RPC_CALLER.set("binrpc")  # this connection's task: events say who
            for packet in packets:
                outcome = self.binrpc.handle(packet)
                reply = await outcome if inspect.isawaitable(outcome) else outcome
                assert isinstance(reply, BinRpcReply)
                writer.write(reply.data)
                await writer.drain()
                if reply.close:
                    return
            data = await asyncio.wait_for(reader.read(_READ), IDLE_TIMEOUT)

    async def _json(
        self, data: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        framer = JsonStreamReader(self.max_request_bytes)
        while data:
            try:
                docs = framer.feed(data)
            except DocumentTooLarge as e:
                peer_log.warning(time.monotonic(), "rpc ctl %s: %s", self.label, e)
                return
            for doc in docs:
                outcome = self.jsonrpc.handle(doc)
                reply = await outcome if inspect.isawaitable(outcome) else outcome
                assert isinstance(reply, JsonRpcReply)
                writer.write(reply.body + b"\n")
                await writer.drain()
            data = await asyncio.wait_for(reader.read(_READ), IDLE_TIMEOUT)


class CtlServer:
    def __init__(
        self, server: asyncio.Server, service: _Service, owned: OwnedPath | None, address: str
    ) -> None:
        self.server = server
        self.service = service
        self.owned = owned
        self.address = address

    async def close(self) -> None:
        self.server.close()
        for task in list(self.service.connections):
            task.cancel()
        if self.service.connections:
            await asyncio.gather(*self.service.connections, return_exceptions=True)
        await self.server.wait_closed()
        if self.owned is not None:
            self.owned.remove()


async def start_ctl_unix(
    binrpc: BinRpcHandler,
    jsonrpc: JsonRpcHandler,
    path: Path,
    perms: Perms,
    *,
    max_request_bytes: int,
    max_connections: int,
) -> CtlServer:
    service = _Service(
        binrpc,
        jsonrpc,
        max_request_bytes=max_request_bytes,
        max_connections=max_connections,
        label=str(path),
    )
    sock, owned = bind_unix(path, socket.SOCK_STREAM, perms)
    try:
        server = await asyncio.start_unix_server(service, sock=sock)
    except BaseException:
        sock.close()
        owned.remove()
        raise
    return CtlServer(server, service, owned, f"unix:{path}")


async def start_ctl_tcp(
    binrpc: BinRpcHandler,
    jsonrpc: JsonRpcHandler,
    host: str,
    port: int,
    *,
    max_request_bytes: int,
    max_connections: int,
) -> CtlServer:
    service = _Service(
        binrpc,
        jsonrpc,
        max_request_bytes=max_request_bytes,
        max_connections=max_connections,
        label=f"tcp:{host}:{port}",
    )
    server = await asyncio.start_server(service, host, port)
    bound = server.sockets[0].getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    return CtlServer(server, service, None, f"tcp:{shown}:{bound[1]}")


class _DgramProtocol(DatagramService):
    """One BINRPC request per datagram, the reply sent back to its sender."""

    kind = "ctl"

    def __init__(self, binrpc: BinRpcHandler, max_request_bytes: int, label: str) -> None:
        super().__init__(label)
        self.binrpc = binrpc
        self.max_request_bytes = max_request_bytes

    def datagram_received(self, data: bytes, addr: Any) -> None:
        framer = PacketReader(self.max_request_bytes)
        try:
            packets = framer.feed(data)
        except BinRpcError as e:
            peer_log.warning(time.monotonic(), "rpc ctl %s: %s from %s", self.label, e, addr)
            self.send(encode_fault(400, f"bad request: {CORRUPTED}", framer.last_cookie), addr)
            return
        if len(packets) != 1 or framer.buffered:
            peer_log.warning(
                time.monotonic(),
                "rpc ctl %s: a datagram from %s is not one whole BINRPC packet: dropped",
                self.label,
                addr,
            )
            return
        self.spawn(self._serve(packets[0], addr))

    async def _serve(self, packet: Packet, addr: Any) -> None:
        RPC_CALLER.set("binrpc")
        try:
            outcome = self.binrpc.handle(packet)
            reply = await outcome if inspect.isawaitable(outcome) else outcome
        except Exception:
            peer_log.exception(time.monotonic(), "rpc ctl %s: request failed", self.label)
            return
        assert isinstance(reply, BinRpcReply)
        data = reply.data
        if len(data) > UDP_MAX:
            peer_log.warning(
                time.monotonic(),
                "rpc ctl %s: %d byte reply too big for a datagram, sending a fault",
                self.label,
                len(data),
            )
            data = encode_fault(500, "Reply Too Big For A Datagram", packet.cookie)
        self.send(data, addr)


async def start_ctl_udp(
    binrpc: BinRpcHandler, host: str, port: int, *, max_request_bytes: int
) -> DgramServer:
    label = f"udp:{host}:{port}"
    return await bind_udp(lambda: _DgramProtocol(binrpc, max_request_bytes, label), host, port)
