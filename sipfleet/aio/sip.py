"""asyncio adapters for SIP over UDP and TCP: the only code that moves SIP
bytes between sockets and the pure proxy core.

UDP datagrams go straight from ``datagram_received`` into
``Proxy.receive``: no task or coroutine per message. TCP connections are
framed by ``StreamFramer``, reused for responses and in-dialog requests
(keyed by listener and remote address), opened on demand for outbound
requests, and closed when idle.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import cast

from sipfleet.aio.udp import FastSink, UdpEndpoint
from sipfleet.control.node_methods import TcpConnInfo
from sipfleet.proxy.core import Proxy
from sipfleet.proxy.net import Listener, Peer
from sipfleet.ratelog import RateLimitedLog
from sipfleet.sip.errors import BadMessage
from sipfleet.sip.framing import PONG, StreamFramer

__all__ = ["SipTransports", "TcpCounters"]

log = logging.getLogger("sipfleet.net")
#: Lines a peer can trigger (refused and broken connections, names from its
#: headers), at most ~10 a second each with a suppressed-count summary.
peer_log = RateLimitedLog(log)

_new = tuple.__new__  # builds a Peer without the namedtuple's Python-level __new__
_MAX_PENDING_BYTES = 1 << 20  # per connection still connecting; beyond it we fail the peer


class TcpCounters:
    """Kamailio's ``tcp:`` statistics, counted by the adapter that sees them."""

    __slots__ = (
        "con_reset",
        "con_timeout",
        "connect_failed",
        "connect_success",
        "established",
        "local_reject",
        "passive_open",
        "sendq_full",
    )

    def __init__(self) -> None:
        self.con_reset = 0  # closed by the peer with an error (reset)
        self.con_timeout = 0  # closed by us after tcp_idle_timeout without traffic
        self.connect_failed = 0  # outbound connects that failed
        self.connect_success = 0  # outbound connects that succeeded
        self.established = 0  # connections that reached the connected state, both ways
        self.local_reject = 0  # inbound connections refused at tcp_max_connections
        self.passive_open = 0  # inbound connections accepted
        self.sendq_full = 0  # writes dropped: the queue of a connecting socket was full


class _Tcp(asyncio.Protocol):
    """One TCP connection, inbound or outbound."""

    def __init__(self, owner: SipTransports, index: int, key: tuple[int, str, int] | None) -> None:
        self.owner = owner
        self.index = index
        self.key = key
        owner._conn_seq += 1
        self.id = owner._conn_seq
        self.outbound = key is not None
        self.local: tuple[str, int] | None = None
        self.transport: asyncio.Transport | None = None
        self.framer = StreamFramer(owner.max_message_size)
        self.pending: list[bytes] = []
        self.last = owner.time()

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport: asyncio.Transport = base  # type: ignore[assignment]  # uvloop's is no subclass
        self.transport = transport
        if self.key is None:  # inbound: we learn the peer now
            addr = transport.get_extra_info("peername")
            self.key = (self.index, addr[0], addr[1])
            if len(self.owner.conns) >= self.owner.max_connections:
                self.owner.tcp_counters.local_reject += 1
                peer_log.warning(
                    self.owner.time(),
                    "tcp connection limit reached, refusing %s:%s",
                    addr[0],
                    addr[1],
                )
                transport.abort()
                return
            self.owner.conns[self.key] = self
            self.owner.tcp_counters.passive_open += 1
        else:
            self.owner.tcp_counters.connect_success += 1
        self.owner.tcp_counters.established += 1
        local = transport.get_extra_info("sockname")
        if local:
            self.local = (str(local[0]), int(local[1]))
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        for data in self.pending:
            transport.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        self.last = now = owner.time()
        try:
            messages, pings = self.framer.feed(data)
        except BadMessage as e:
            owner.proxy.stats.bad_msg_hdr += 1
            peer_log.info(now, "closing tcp %s: %s", self.key, e.reason)
            assert self.transport is not None
            self.transport.close()
            return
        if pings and self.transport is not None:
            self.transport.write(PONG * pings)
        assert self.key is not None
        peer = Peer(*self.key)
        for msg in messages:
            try:
                owner.proxy.receive(msg, peer, now)
            except Exception:
                owner.proxy.stats.internal_errors += 1
                peer_log.exception(now, "internal error handling a message from %s", self.key)

    def send(self, data: bytes) -> None:
        self.last = self.owner.time()
        if self.transport is None:
            if sum(map(len, self.pending)) > _MAX_PENDING_BYTES:
                self.owner.tcp_counters.sendq_full += 1
                return
            self.pending.append(data)
        elif not self.transport.is_closing():
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        owner = self.owner
        if exc is not None:
            owner.tcp_counters.con_reset += 1
        if self.key is not None and owner.conns.get(self.key) is self:
            del owner.conns[self.key]
            if self.pending:
                owner.fail_peer(Peer(*self.key))


class SipTransports:
    """The listeners' sockets, and the sink the proxy core writes through."""

    def __init__(
        self,
        listeners: list[Listener],
        time: Callable[[], float],
        max_message_size: int = 65536,
        idle_timeout: float = 300.0,
        max_connections: int = 4096,
    ) -> None:
        self.listeners = listeners
        self.time = time
        self.max_message_size = max_message_size
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.proxy: Proxy = None  # type: ignore[assignment]  # set by attach()
        self.udp: dict[int, asyncio.DatagramTransport] = {}
        self._sendto: dict[int, Callable[[bytes, tuple[str, int]], None]] = {}
        # The core writes through the compiled fast sink; what it cannot
        # send itself (TCP, names to resolve) comes back to send() here.
        self.sink = FastSink(self.send)
        self._ips = self.sink.ips  # hosts known to be IP literals, shared
        self._names: dict[str, str] = {}  # host name -> IP, for _DNS_TTL
        self._resolving: dict[str, list[tuple[Peer, bytes]]] = {}
        self.servers: list[asyncio.Server] = []
        self.conns: dict[tuple[int, str, int], _Tcp] = {}
        self.tcp_counters = TcpCounters()
        self._conn_seq = 0
        self._sweeper: asyncio.TimerHandle | None = None

    def attach(self, proxy: Proxy) -> None:
        self.proxy = proxy

    def tcp_connections(self) -> list[TcpConnInfo]:
        """A read-only copy of the TCP connection table (for core.tcp_list)."""
        now = self.time()
        out: list[TcpConnInfo] = []
        for conn in list(self.conns.values()):
            if conn.key is None:
                continue
            lst = self.listeners[conn.index]
            local = conn.local or (lst.host, lst.port)
            transport = conn.transport
            queued = sum(map(len, conn.pending))
            if transport is not None:
                queued += transport.get_write_buffer_size()
            out.append(
                TcpConnInfo(
                    conn.id,
                    conn.outbound,
                    transport is not None and not transport.is_closing(),
                    conn.key[1],
                    conn.key[2],
                    local[0],
                    local[1],
                    max(now - conn.last, 0.0),
                    queued,
                )
            )
        return out

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for lst in self.listeners:
            family = socket.AF_INET6 if lst.family == 6 else socket.AF_INET
            if lst.proto == "udp":
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                for opt, size in ((socket.SO_RCVBUF, 8 << 20), (socket.SO_SNDBUF, 8 << 20)):
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, opt, size)
                    except OSError:
                        pass
                sock.bind((lst.host, lst.port))
                # A compiled class with DatagramProtocol's methods (duck-typed).
                endpoint = cast(
                    "Callable[[], asyncio.DatagramProtocol]",
                    functools.partial(UdpEndpoint, self.proxy, lst.index, self.time),
                )
                transport, _ = await loop.create_datagram_endpoint(endpoint, sock=sock)
                self.udp[lst.index] = transport
                self._sendto[lst.index] = self.sink.sendto[lst.index] = transport.sendto
            else:
                server = await loop.create_server(
                    functools.partial(_Tcp, self, lst.index, None),
                    lst.host,
                    lst.port,
                    family=family,
                    reuse_address=True,
                    backlog=1024,
                )
                self.servers.append(server)
        self._sweeper = loop.call_later(min(self.idle_timeout, 5.0), self._sweep)

    # -- the sink ------------------------------------------------------------
    def send(self, peer: Peer, data: bytes) -> None:
        sendto = self._sendto.get(peer[0])
        if sendto is not None:
            host = peer[1]
            if host not in self._ips:
                ip = self._names.get(host)
                if ip is None:
                    if not _is_ip(host):
                        self._resolve_then_send(peer, data)
                        return
                    if len(self._ips) > 65536:  # bounded: peers come and go
                        self._ips.clear()
                    self._ips.add(host)
                else:
                    host = ip
            try:
                sendto(data, (host, peer[2]))
            except (OSError, ValueError) as e:
                log.debug("udp send to %s:%d failed: %s", host, peer[2], e)
            return
        conn = self.conns.get(peer)
        if conn is None:
            conn = self._connect(peer)
            if conn is None:
                return
        conn.send(data)

    def _resolve_then_send(self, peer: Peer, data: bytes) -> None:
        """A next hop named by DNS (a Contact or Route with a host name): look it
        up off the loop's hot path, then send; unresolvable = transport failure."""
        host = peer.host
        waiting = self._resolving.get(host)
        if waiting is not None:
            if len(waiting) < 64:  # bounded while the lookup is out
                waiting.append((peer, data))
            return
        self._resolving[host] = [(peer, data)]
        loop = asyncio.get_running_loop()

        async def lookup() -> None:
            ip: str | None = None
            try:
                infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
                family = socket.AF_INET6 if self.listeners[peer.listener].family == 6 else socket.AF_INET
                ip = next((str(i[4][0]) for i in infos if i[0] == family), None)
            except OSError as e:
                peer_log.info(self.time(), "cannot resolve %s: %s", host, e)
            queued = self._resolving.pop(host, [])
            if ip is None:
                for p, _ in queued:
                    self.fail_peer(p)
                return
            if len(self._names) > 4096:  # bounded: names come from peers' headers
                self._names.clear()
            self._names[host] = ip
            loop.call_later(_DNS_TTL, self._names.pop, host, None)
            for p, d in queued:
                self.send(p, d)

        task = loop.create_task(lookup())
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)

    def _connect(self, peer: Peer) -> _Tcp | None:
        if len(self.conns) >= self.max_connections:
            self.fail_peer_soon(peer)
            return None
        lst = self.listeners[peer.listener]
        key = (peer.listener, peer.host, peer.port)
        conn = _Tcp(self, peer.listener, key)
        self.conns[key] = conn
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if lst.family == 6 else socket.AF_INET

        async def connect() -> None:
            try:
                await loop.create_connection(lambda: conn, peer.host, peer.port, family=family)
            except OSError as e:
                self.tcp_counters.connect_failed += 1
                peer_log.info(
                    self.time(), "tcp connect to %s:%d failed: %s", peer.host, peer.port, e
                )
                if self.conns.get(key) is conn:
                    del self.conns[key]
                conn.pending.clear()
                self.fail_peer(peer)

        task = loop.create_task(connect())
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)
        return conn

    def fail_peer(self, peer: Peer) -> None:
        try:
            self.proxy.transport_failed(peer, self.time())
        except Exception:
            peer_log.exception(self.time(), "internal error reporting a transport failure")

    def fail_peer_soon(self, peer: Peer) -> None:
        # The core's Sink contract: send() never calls back into the core.
        asyncio.get_running_loop().call_soon(self.fail_peer, peer)

    def _sweep(self) -> None:
        now = self.time()
        for conn in list(self.conns.values()):
            if now - conn.last > self.idle_timeout and conn.transport is not None:
                if not conn.transport.is_closing():
                    self.tcp_counters.con_timeout += 1
                conn.transport.close()
        self._sweeper = asyncio.get_running_loop().call_later(
            min(self.idle_timeout, 5.0), self._sweep
        )

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for server in self.servers:
            server.close()
        for conn in list(self.conns.values()):
            if conn.transport is not None:
                conn.transport.close()
        for udp in self.udp.values():
            udp.close()
        for server in self.servers:
            await server.wait_closed()


_tasks: set[asyncio.Task[None]] = set()
_DNS_TTL = 60.0


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
