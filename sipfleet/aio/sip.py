"""asyncio adapters for SIP over UDP, TCP and TLS: the only code that moves
SIP bytes between sockets and the pure proxy core.

UDP datagrams go straight from ``datagram_received`` into
``Proxy.receive``: no task or coroutine per message. TCP and TLS
connections are framed by ``StreamFramer``, reused for responses and
in-dialog requests (keyed by listener and remote address: RFC 5923's
connection reuse), opened on demand for outbound requests (TLS verified per
``[tls]``), and closed when idle.

Every connection is bounded (``ConnLimits``): in total, with a share only
outbound connections may use, so inbound floods never starve the back
ends; per source address; in bytes queued; and in time: an inbound
connection that has not delivered a whole message within
``header_timeout`` (slow-loris), a TLS handshake past its timeout and an
idle connection are closed. Each refusal and close is counted (``NetStats``)
and logged at a bounded rate. TLS runs in the loop (asyncio's SSL
transport); ``bench/tls_udp_stall.py`` measures what that costs the UDP path.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import re
import socket
import ssl
import struct
from collections.abc import Callable, Coroutine
from typing import Any, cast

from sipfleet.aio.tls import TlsContexts, describe_tls_error
from sipfleet.aio.udp import FastSink, UdpEndpoint
from sipfleet.control.node_methods import TcpConnInfo
from sipfleet.proxy.core import Proxy
from sipfleet.proxy.net import Listener, Peer
from sipfleet.ratelog import RateLimitedLog
from sipfleet.sip.errors import BadMessage
from sipfleet.sip.framing import PONG, StreamFramer
from sipfleet.sip.via import parse_via

__all__ = ["ConnLimits", "NetStats", "SipTransports", "TcpCounters"]

log = logging.getLogger("sipfleet.net")
#: Lines a peer can trigger (refused, slow and broken connections, failed
#: handshakes, names from its headers), at most ~10 a second each with a
#: suppressed-count summary.
peer_log = RateLimitedLog(log)

_new = tuple.__new__  # builds a Peer without the namedtuple's Python-level __new__
_MAX_PENDING_BYTES = 1 << 20  # per connection still connecting; beyond it we fail the peer
_DNS_TTL = 60.0
_HANDSHAKE_ERRORS = (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError)
_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets the connection
_MAX_ALIASES = 4  # per connection (RFC 5923 aliases)
_REFUSED_TCP = "tcp connection limit reached, refusing %s:%s: %s"
_REFUSED_TLS = "tls connection limit reached, refusing %s:%s: %s"
# The first Via line of a message, when it is a TLS one asking for an alias.
_ALIAS_VIA = re.compile(
    rb"\r\n(?:via|v)[ \t]*:[ \t]*(SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*TLS[^\r,]*)", re.I
)


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
        self.con_timeout = 0  # closed by us: idle, or no whole message in time
        self.connect_failed = 0  # outbound connects (and their TLS handshakes) that failed
        self.connect_success = 0  # outbound connects that succeeded
        self.established = 0  # connections that reached the connected state, both ways
        self.local_reject = 0  # inbound connections refused by a connection limit
        self.passive_open = 0  # inbound connections accepted
        self.sendq_full = 0  # writes dropped or connections closed: a queue was full


class NetStats:
    """sipfleet's own reasons for refusing or closing a connection (Kamailio's
    ``tcp:`` names are in ``TcpCounters``)."""

    __slots__ = (
        "alias_refused",
        "buffer_closed",
        "header_timeout",
        "idle_closed",
        "input_closed",
        "refused_per_source",
        "refused_total",
        "tls_handshake_failed",
        "tls_handshake_timeout",
        "tls_handshakes",
    )

    def __init__(self) -> None:
        self.alias_refused = 0
        self.buffer_closed = 0
        self.header_timeout = 0
        self.idle_closed = 0
        self.input_closed = 0
        self.refused_per_source = 0
        self.refused_total = 0
        self.tls_handshake_failed = 0
        self.tls_handshake_timeout = 0
        self.tls_handshakes = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class ConnLimits:
    """Bounds on TCP/TLS connections (``[proxy] tcp_*``, ``[tls] handshake_timeout``)."""

    __slots__ = (
        "handshake_timeout",
        "header_timeout",
        "idle_timeout",
        "max_buffer",
        "max_connections",
        "max_inbound",
        "per_source",
    )

    def __init__(
        self,
        *,
        max_connections: int = 4096,
        per_source: int = 256,
        outbound_reserve: float = 0.1,
        header_timeout: float = 10.0,
        idle_timeout: float = 300.0,
        max_buffer: int = 1 << 20,
        handshake_timeout: float = 5.0,
    ) -> None:
        self.max_connections = max_connections
        # Inbound connections never take the reserved share: a flood of them
        # cannot keep us from reaching the back ends.
        self.max_inbound = max(1, int(max_connections * (1.0 - outbound_reserve)))
        self.per_source = per_source
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.max_buffer = max_buffer
        self.handshake_timeout = handshake_timeout


class _Tcp(asyncio.Protocol):
    """One TCP or TLS connection, inbound or outbound."""

    def __init__(
        self,
        owner: SipTransports,
        index: int,
        key: tuple[int, str, int] | None,
        tls: bool,
        inbound: bool | None = None,
    ) -> None:
        self.owner = owner
        self.index = index
        self.key = key
        owner._conn_seq += 1
        self.id = owner._conn_seq  # core.tcp_list's id
        self.local: tuple[str, int] | None = None  # our address on it, once connected
        # Inbound TCP comes without a key (learnt at connection_made); inbound
        # TLS is admitted at accept, before its handshake, and has one.
        self.inbound = key is None if inbound is None else inbound
        self.outbound = not self.inbound
        self.tls = tls
        self.transport: asyncio.Transport | None = None  # what we read and write (TLS: clear)
        self.sock: socket.socket | None = None  # an accepted TLS socket, until its handshake ends
        self.framer = StreamFramer(owner.max_message_size)
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.last = self.connected_at = owner.time()
        self.got_message = False  # a complete message (or keep-alive) arrived
        self.partial_since: float | None = None  # first byte of the message being framed
        self.counted = False  # holds a slot in the owner's tables
        self.closed = False
        self.aliases: list[tuple[int, str, int]] = []  # RFC 5923: other keys that reach us

    @property
    def kind(self) -> str:
        return "tls" if self.tls else "tcp"

    # -- asyncio callbacks -------------------------------------------------------
    def connection_made(self, base: asyncio.BaseTransport) -> None:
        owner = self.owner
        if self.key is None:  # inbound TCP: admitted now
            addr = base.get_extra_info("peername")
            self.key = (self.index, addr[0], addr[1])
            why = owner.admit(addr[0])
            if why is not None:
                owner.refused(self, why)
                self.closed = True
                base.abort()  # type: ignore[attr-defined]
                return
            owner.tcp_counters.passive_open += 1
            owner.register(self)
        elif not self.inbound:
            owner.tcp_counters.connect_success += 1
        self._ready(base)

    async def handshake(self, sock: socket.socket) -> None:
        """TLS server side of an accepted socket (RFC 3261 26.2.1), bounded in time."""
        owner = self.owner
        assert owner.tls is not None and self.key is not None
        owner.stats.tls_handshakes += 1
        self.sock = sock
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: self,
                sock,
                ssl=owner.tls.front,
                ssl_handshake_timeout=owner.limits.handshake_timeout,
            )
        except _HANDSHAKE_ERRORS as e:
            # uvloop says ConnectionAbortedError("... taking longer ...") for its timeout.
            timed_out = isinstance(e, TimeoutError) or "taking longer" in str(e)
            if timed_out:
                owner.stats.tls_handshake_timeout += 1
            else:
                owner.stats.tls_handshake_failed += 1
            peer_log.log(
                logging.WARNING, owner.time(), "tls handshake with %s:%s failed: %s",
                self.key[1], self.key[2],
                f"no handshake within {owner.limits.handshake_timeout:g} s" if timed_out
                else describe_tls_error(e),
            )  # fmt: skip
            self.sock = None
            if sock.fileno() >= 0:
                sock.close()
            self.forget()
            return
        finally:
            self.sock = None
        if self.closed and self.transport is not None:  # swept while shaking hands
            self.transport.abort()

    def _ready(self, base: asyncio.BaseTransport) -> None:
        transport: asyncio.Transport = base  # type: ignore[assignment]  # uvloop's is no subclass
        self.transport = transport
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
        pending, self.pending, self.pending_bytes = self.pending, [], 0
        for data in pending:
            self._write(data)

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        self.last = now = owner.time()
        try:
            messages, pings = self.framer.feed(data)
        except BadMessage as e:
            owner.proxy.stats.bad_msg_hdr += 1
            owner.stats.input_closed += 1
            peer_log.log(logging.INFO, now, "closing %s %s: %s", self.kind, self.key, e.reason)
            self.abort()
            return
        if messages or pings:
            self.got_message = True
            self.partial_since = now if self.framer.pending else None
        elif self.partial_since is None and self.framer.pending:
            self.partial_since = now
        if pings and self.transport is not None:
            self._write(PONG * pings)
        assert self.key is not None
        peer = Peer(*self.key)
        for msg in messages:
            if self.tls and self.inbound and msg[:4] != b"SIP/" and b"alias" in msg[:4096]:
                self._alias(msg)
            try:
                owner.proxy.receive(msg, peer, now)
            except Exception:
                owner.proxy.stats.internal_errors += 1
                peer_log.exception(now, "internal error handling a message from %s", self.key)

    def _alias(self, msg: bytes) -> None:
        """RFC 5923: a request whose top Via (TLS) carries ``alias`` lets us send to
        its sent-by over this connection, when the client's verified certificate
        names that host (section 9: never on a claim alone)."""
        m = _ALIAS_VIA.search(msg, 0, 4096)
        if m is None or len(self.aliases) >= _MAX_ALIASES or self.transport is None:
            return
        try:
            via = parse_via(m.group(1).strip())
        except BadMessage:
            return
        if "alias" not in via.params:
            return
        key = (self.index, via.host, via.port or 5061)
        owner = self.owner
        if key in self.aliases or key in owner.conns:
            return
        cert = self.transport.get_extra_info("peercert")
        names = {
            v.lower()
            for k, v in (cert or {}).get("subjectAltName", ())
            if k in ("DNS", "IP Address")
        }
        if via.host not in names:
            owner.stats.alias_refused += 1
            return
        self.aliases.append(key)
        owner.aliases[key] = self

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, ConnectionResetError):
            self.owner.tcp_counters.con_reset += 1
        self.forget()

    # -- used by the owner ---------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.last = self.owner.time()
        if self.transport is None:
            if self.pending_bytes + len(data) > _MAX_PENDING_BYTES:
                self.owner.tcp_counters.sendq_full += 1
                return
            self.pending.append(data)
            self.pending_bytes += len(data)
        else:
            self._write(data)

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        owner = self.owner
        if transport.get_write_buffer_size() > owner.limits.max_buffer:
            # A peer that does not read: memory stays bounded, and its
            # transactions learn of the failure (RFC 3261 18.4) now.
            owner.stats.buffer_closed += 1
            owner.tcp_counters.sendq_full += 1
            peer_log.log(
                logging.WARNING, owner.time(),
                "closing %s %s: more than %d bytes queued (the peer does not read)",
                self.kind, self.key, owner.limits.max_buffer,
            )  # fmt: skip
            self.abort()
            if self.key is not None:
                owner.fail_peer_soon(Peer(*self.key))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        elif self.sock is not None and self.sock.fileno() >= 0:
            # Mid-handshake: shutting the socket down ends the handshake
            # with an error, and the handshake task cleans up.
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.forget()

    def forget(self) -> None:
        """Give back this connection's slots, once; fail what still waits to be sent."""
        if self.closed:
            return
        self.closed = True
        owner = self.owner
        if self.counted:
            owner.unregister(self)
        for key in self.aliases:
            if owner.aliases.get(key) is self:
                del owner.aliases[key]
        self.aliases.clear()
        if self.key is not None and self.pending:
            self.pending.clear()
            self.pending_bytes = 0
            owner.fail_peer_soon(Peer(*self.key))


class SipTransports:
    """The listeners' sockets, and the sink the proxy core writes through."""

    def __init__(
        self,
        listeners: list[Listener],
        time: Callable[[], float],
        max_message_size: int = 65536,
        limits: ConnLimits | None = None,
        tls: TlsContexts | None = None,
    ) -> None:
        self.listeners = listeners
        self.time = time
        self.max_message_size = max_message_size
        self.limits = limits or ConnLimits()
        self.tls = tls
        if tls is None and any(lst.proto == "tls" for lst in listeners):
            raise ValueError("tls: listeners need TLS contexts ([tls] certificate)")
        self.stats = NetStats()
        self.tcp_counters = TcpCounters()
        self._conn_seq = 0
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
        self.tls_socks: list[socket.socket] = []  # tls: listeners, accepted by _accept_tls
        #: every connection by (listener, remote host, remote port); at most
        #: limits.max_connections, inbound ones at most limits.max_inbound
        self.conns: dict[tuple[int, str, int], _Tcp] = {}
        #: RFC 5923 aliases: (listener, sent-by host, port) -> the connection that
        #: offered it; at most _MAX_ALIASES per connection, gone with it
        self.aliases: dict[tuple[int, str, int], _Tcp] = {}
        self.inbound = 0
        #: inbound connections per remote address, each at most limits.per_source
        self.per_source: dict[str, int] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # handshakes, connects, lookups

    def attach(self, proxy: Proxy) -> None:
        self.proxy = proxy

    @property
    def max_connections(self) -> int:
        return self.limits.max_connections

    @property
    def idle_timeout(self) -> float:
        return self.limits.idle_timeout

    def tcp_connections(self) -> list[TcpConnInfo]:
        """A read-only copy of the TCP/TLS connection table (for core.tcp_list)."""
        now = self.time()
        out: list[TcpConnInfo] = []
        for conn in list(self.conns.values()):
            if conn.key is None:
                continue
            lst = self.listeners[conn.index]
            local = conn.local or (lst.host, lst.port)
            transport = conn.transport
            queued = conn.pending_bytes
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

    # -- connection bookkeeping -------------------------------------------------
    def admit(self, host: str) -> str | None:
        """Why an inbound connection from ``host`` is refused, or None."""
        limits = self.limits
        if self.inbound >= limits.max_inbound:
            self.tcp_counters.local_reject += 1
            self.stats.refused_total += 1
            return f"{self.inbound} inbound connections open (tcp_max_connections)"
        if self.per_source.get(host, 0) >= limits.per_source:
            self.tcp_counters.local_reject += 1
            self.stats.refused_per_source += 1
            return f"{limits.per_source} open from this address (tcp_max_connections_per_source)"
        return None

    def refused(self, conn: _Tcp, why: str) -> None:
        key = conn.key or (0, "?", 0)
        # One format (and so one rate-limit key, named in its summary) per transport.
        fmt = _REFUSED_TLS if conn.tls else _REFUSED_TCP
        peer_log.warning(self.time(), fmt, key[1], key[2], why)

    def register(self, conn: _Tcp) -> None:
        key = conn.key
        assert key is not None
        old = self.conns.get(key)
        if old is not None and old is not conn:
            old.abort()  # a stale entry for a reused address and port
        self.conns[key] = conn
        conn.counted = True
        if conn.inbound:
            self.inbound += 1
            self.per_source[key[1]] = self.per_source.get(key[1], 0) + 1

    def unregister(self, conn: _Tcp) -> None:
        conn.counted = False
        key = conn.key
        assert key is not None
        if self.conns.get(key) is conn:
            del self.conns[key]
        if conn.inbound:
            self.inbound -= 1
            n = self.per_source.get(key[1], 0) - 1
            if n > 0:
                self.per_source[key[1]] = n
            else:
                self.per_source.pop(key[1], None)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def write_queue_size(self) -> int:
        """Bytes waiting to be sent over every connection."""
        return sum(
            c.pending_bytes + (c.transport.get_write_buffer_size() if c.transport else 0)
            for c in self.conns.values()
        )

    def tls_open(self) -> int:
        return sum(1 for c in self.conns.values() if c.tls)

    def stat_values(self) -> list[tuple[str, str, Callable[[], int], bool]]:
        """sipfleet's own (group, name, read, resettable) for ``stats.get_statistics``;
        Kamailio's ``tcp:`` names come from ``tcp_counters``."""
        st = self.stats

        def counter(attr: str) -> Callable[[], int]:
            return lambda: int(getattr(st, attr))

        return [
            ("sipfleet", "tcp_refused_total_limit", counter("refused_total"), True),
            ("sipfleet", "tcp_refused_per_source", counter("refused_per_source"), True),
            ("sipfleet", "tcp_header_timeouts", counter("header_timeout"), True),
            ("sipfleet", "tcp_idle_closed", counter("idle_closed"), True),
            ("sipfleet", "tcp_bad_stream_closed", counter("input_closed"), True),
            ("sipfleet", "tcp_buffer_closed", counter("buffer_closed"), True),
            ("sipfleet", "tcp_inbound_connections", lambda: self.inbound, False),
            ("sipfleet", "tls_handshakes", counter("tls_handshakes"), True),
            ("sipfleet", "tls_handshake_failures", counter("tls_handshake_failed"), True),
            ("sipfleet", "tls_handshake_timeouts", counter("tls_handshake_timeout"), True),
            ("sipfleet", "tls_connections", self.tls_open, False),
            ("sipfleet", "tls_reloads", lambda: self.tls.reloads if self.tls else 0, True),
            ("sipfleet", "tls_aliases", lambda: len(self.aliases), False),
            ("sipfleet", "tls_aliases_refused", counter("alias_refused"), True),
        ]

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
            elif lst.proto == "tls":
                # Accepted here, so the limits are checked before any handshake
                # work and a failed handshake is ours to log with its reason.
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((lst.host, lst.port))
                sock.listen(1024)
                sock.setblocking(False)
                self.tls_socks.append(sock)
                self.spawn(self._accept_tls(lst, sock))
            else:
                server = await loop.create_server(
                    functools.partial(_Tcp, self, lst.index, None, False),
                    lst.host,
                    lst.port,
                    family=family,
                    reuse_address=True,
                    backlog=1024,
                )
                self.servers.append(server)
        self._sweeper = loop.call_later(self._sweep_period(), self._sweep)

    async def _accept_tls(self, lst: Listener, lsock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, addr = await loop.sock_accept(lsock)
            except asyncio.CancelledError:
                raise
            except OSError as e:  # EMFILE and the like: say so, back off, go on
                peer_log.log(logging.ERROR, self.time(), "tls accept on %s: %s", lst, e)
                await asyncio.sleep(0.1)
                continue
            conn = _Tcp(self, lst.index, (lst.index, addr[0], addr[1]), True, inbound=True)
            why = self.admit(addr[0])
            if why is not None:
                self.refused(conn, why)
                conn.closed = True
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
                sock.close()
                continue
            self.tcp_counters.passive_open += 1
            self.register(conn)
            self.spawn(conn.handshake(sock))

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
        conn = self.conns.get(peer) or self.aliases.get(peer)
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
                family = (
                    socket.AF_INET6 if self.listeners[peer.listener].family == 6 else socket.AF_INET
                )
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

        self.spawn(lookup())

    def _connect(self, peer: Peer) -> _Tcp | None:
        lst = self.listeners[peer.listener]
        tls = lst.proto == "tls"
        if len(self.conns) >= self.limits.max_connections or (tls and self.tls is None):
            self.tcp_counters.connect_failed += 1
            self.fail_peer_soon(peer)
            return None
        key = (peer.listener, peer.host, peer.port)
        conn = _Tcp(self, peer.listener, key, tls)
        self.register(conn)
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if lst.family == 6 else socket.AF_INET

        async def connect() -> None:
            try:
                if tls:
                    assert self.tls is not None
                    await loop.create_connection(
                        lambda: conn,
                        peer.host,
                        peer.port,
                        family=family,
                        ssl=self.tls.client,
                        server_hostname=peer.host,
                        ssl_handshake_timeout=self.limits.handshake_timeout,
                    )
                else:
                    await loop.create_connection(lambda: conn, peer.host, peer.port, family=family)
            except _HANDSHAKE_ERRORS as e:
                self.tcp_counters.connect_failed += 1
                if tls and isinstance(e, ssl.SSLError | TimeoutError):
                    self.stats.tls_handshake_failed += 1
                peer_log.log(
                    logging.WARNING, self.time(), "%s connect to %s:%d failed: %s",
                    lst.proto, peer.host, peer.port, describe_tls_error(e),
                )  # fmt: skip
                conn.pending.clear()
                conn.pending_bytes = 0
                conn.forget()
                self.fail_peer(peer)

        self.spawn(connect())
        return conn

    def fail_peer(self, peer: Peer) -> None:
        try:
            self.proxy.transport_failed(peer, self.time())
        except Exception:
            log.exception("internal error reporting a transport failure")

    def fail_peer_soon(self, peer: Peer) -> None:
        # The core's Sink contract: send() never calls back into the core.
        asyncio.get_running_loop().call_soon(self.fail_peer, peer)

    # -- timeouts ------------------------------------------------------------
    def _sweep_period(self) -> float:
        limits = self.limits
        return max(0.05, min(1.0, limits.header_timeout / 10, limits.idle_timeout / 10))

    def _sweep(self) -> None:
        """Close idle connections, and inbound ones too slow to send a whole
        message (slow-loris): within header_timeout of connecting, or of the
        first byte of a message after their last complete one."""
        now = self.time()
        limits = self.limits
        for conn in list(self.conns.values()):
            if conn.closed:
                continue
            if conn.inbound:
                start = conn.partial_since if conn.got_message else conn.connected_at
                if start is not None and now - start > limits.header_timeout:
                    self.stats.header_timeout += 1
                    self.tcp_counters.con_timeout += 1
                    key = conn.key or (0, "?", 0)
                    peer_log.log(
                        logging.INFO, now, "closing %s from %s:%s: no complete message within %g s",
                        conn.kind, key[1], key[2], limits.header_timeout,
                    )  # fmt: skip
                    conn.abort()
                    continue
            if now - conn.last > limits.idle_timeout and conn.transport is not None:
                self.stats.idle_closed += 1
                self.tcp_counters.con_timeout += 1
                conn.transport.close()
                conn.forget()
        self._sweeper = asyncio.get_running_loop().call_later(self._sweep_period(), self._sweep)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for server in self.servers:
            server.close()
        for conn in list(self.conns.values()):
            if conn.transport is not None:
                conn.transport.close()
                conn.forget()
            else:
                conn.abort()
        for task in list(self._tasks):
            task.cancel()
        for sock in self.tls_socks:
            sock.close()
        for udp in self.udp.values():
            udp.close()
        for server in self.servers:
            await server.wait_closed()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
