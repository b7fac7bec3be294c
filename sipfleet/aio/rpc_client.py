"""Clients for the control transports: the CLI's, and the tests' kamcmd/kamcli stand-ins.

``call_ctl_json`` is the CLI's default: JSON-RPC over the ctl unix socket
(see ``rpc_binrpc``), exact JSON behind the socket's permissions.
``call_http`` speaks to /RPC; ``call_binrpc`` is what kamcmd does;
``call_dgram`` is what kamcli's socket transport does.

Every call is bounded by ``timeout``; a server that cannot be reached
raises ``RpcUnreachable`` naming the address tried.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from sipfleet.control.binrpc import (
    PacketReader,
    PacketType,
    decode_fault,
    decode_records,
    encode_request,
)
from sipfleet.control.jsonrpc import JsonStreamReader
from sipfleet.control.registry import RpcFault

__all__ = [
    "BinRpcResult",
    "RpcUnreachable",
    "call_binrpc",
    "call_ctl_json",
    "call_dgram",
    "call_http",
    "jsonrpc_request",
]

# What a client buffers of one reply (dispatcher.list of 100k entries is ~40 MB).
MAX_REPLY = 256 << 20


class RpcUnreachable(Exception):
    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot reach {address}: {reason}")
        self.address = address
        self.reason = reason


def jsonrpc_request(
    method: str, params: Sequence[object], rid: int | None = None
) -> dict[str, object]:
    return {
        "jsonrpc": "2.0",
        "method": method,
        "params": list(params),
        "id": random.randrange(1, 1 << 31) if rid is None else rid,
    }


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


async def _open_stream(
    address: str, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    proto, _, rest = address.partition(":")
    try:
        if proto in ("unix", "unixs"):
            coro = asyncio.open_unix_connection(rest, limit=MAX_REPLY)
        elif proto == "tcp":
            host, _, port = rest.rpartition(":")
            coro = asyncio.open_connection(host.strip("[]"), int(port), limit=MAX_REPLY)
        else:
            raise RpcUnreachable(address, "address must be unix:PATH or tcp:HOST:PORT")
        return await asyncio.wait_for(coro, timeout)
    except (OSError, TimeoutError) as e:
        raise RpcUnreachable(address, _reason(e)) from e


async def call_ctl_json(
    path: str | os.PathLike[str],
    method: str,
    params: Sequence[object] = (),
    *,
    timeout: float = 10.0,
) -> dict[str, object]:
    """A JSON-RPC call over the ctl unix socket; returns the reply document."""
    address = f"unix:{os.fspath(path)}"
    reader, writer = await _open_stream(address, timeout)
    try:
        writer.write(orjson.dumps(jsonrpc_request(method, params)) + b"\n")
        framer = JsonStreamReader(MAX_REPLY)
        async with asyncio.timeout(timeout):
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    raise RpcUnreachable(address, "connection closed before the reply")
                docs = framer.feed(data)
                if docs:
                    return _document(docs[0], address)
    except TimeoutError as e:
        raise RpcUnreachable(address, f"no reply within {timeout:g} s") from e
    except OSError as e:
        raise RpcUnreachable(address, _reason(e)) from e
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _document(data: bytes, address: str) -> dict[str, object]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise RpcUnreachable(address, f"reply is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise RpcUnreachable(address, "reply is not a JSON-RPC object")
    return doc


async def call_http(
    url: str,
    method: str,
    params: Sequence[object] = (),
    *,
    token: str | None = None,
    timeout: float = 10.0,
    verify_tls: bool = True,
) -> dict[str, object]:
    """A JSON-RPC call over HTTP; returns the reply document (faults included)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = orjson.dumps(jsonrpc_request(method, params))
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.post(url, data=body, headers=headers, ssl=verify_tls) as resp,
        ):
            data = await resp.read()
            if resp.status == 401:
                raise RpcUnreachable(
                    url, "401 Unauthorized: pass --token or set SIPFLEET_RPC_TOKEN"
                )
            if resp.content_type != "application/json":
                raise RpcUnreachable(url, f"HTTP {resp.status} {resp.reason}")
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        raise RpcUnreachable(
            url, _reason(e) if not isinstance(e, TimeoutError) else f"no reply within {timeout:g} s"
        ) from e
    return _document(data, url)


@dataclass(frozen=True, slots=True)
class BinRpcResult:
    values: list[object]
    """The reply's top-level records (one per ``rpc->add`` in Kamailio)."""
    fault: RpcFault | None = None


async def call_binrpc(
    address: str, method: str, params: Sequence[object] = (), *, timeout: float = 10.0
) -> BinRpcResult:
    """A BINRPC call, as kamcmd makes it; ``address`` is unix:PATH or tcp:HOST:PORT."""
    reader, writer = await _open_stream(address, timeout)
    cookie = random.randrange(1 << 31)
    try:
        writer.write(encode_request(method, params, cookie))
        framer = PacketReader(MAX_REPLY)
        async with asyncio.timeout(timeout):
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    raise RpcUnreachable(address, "connection closed before the reply")
                packets = framer.feed(data)
                if packets:
                    break
    except TimeoutError as e:
        raise RpcUnreachable(address, f"no reply within {timeout:g} s") from e
    except OSError as e:
        raise RpcUnreachable(address, _reason(e)) from e
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    packet = packets[0]
    if packet.cookie != cookie:
        raise RpcUnreachable(address, "reply cookie does not match")
    if packet.type == PacketType.FAULT:
        return BinRpcResult([], decode_fault(packet.body))
    return BinRpcResult(decode_records(packet.body))


async def call_dgram(
    address: str,
    method: str,
    params: Sequence[object] = (),
    *,
    timeout: float = 10.0,
    reply_dir: str | os.PathLike[str] | None = None,
) -> dict[str, object]:
    """A JSON-RPC datagram call (``unixd:PATH`` or ``udp:HOST:PORT``), as kamcli's socket transport."""
    proto, _, rest = address.partition(":")
    loop = asyncio.get_running_loop()
    body = orjson.dumps(jsonrpc_request(method, params))
    reply_path: Path | None = None
    if proto in ("unixd", "unix"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # The server replies to our bound address, so we need one.
        directory = Path(reply_dir or tempfile.gettempdir())
        reply_path = (
            directory / f"sipfleet_rpc_client_{os.getpid()}_{random.randrange(1 << 30)}.sock"
        )
        target: str | tuple[str, int] = rest
        sock.bind(str(reply_path))
    elif proto == "udp":
        host, _, port = rest.rpartition(":")
        target = (host.strip("[]"), int(port))
        family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    else:
        raise RpcUnreachable(address, "address must be unixd:PATH or udp:HOST:PORT")
    sock.setblocking(False)
    try:
        try:
            await asyncio.wait_for(loop.sock_sendto(sock, body, target), timeout)
            async with asyncio.timeout(timeout):
                data = await loop.sock_recv(sock, MAX_REPLY)
        except TimeoutError as e:
            raise RpcUnreachable(address, f"no reply within {timeout:g} s") from e
        except OSError as e:
            raise RpcUnreachable(address, _reason(e)) from e
    finally:
        sock.close()
        if reply_path is not None:
            with contextlib.suppress(OSError):
                reply_path.unlink()
    return _document(data, address)
