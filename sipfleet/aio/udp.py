"""The UDP fast path between uvloop and the core, compiled with mypyc.

``UdpEndpoint`` is a listener's datagram protocol (asyncio's
DatagramProtocol methods, duck-typed): each datagram goes straight into
``Proxy.receive``. ``FastSink`` is the core's sink: a datagram to an IP
literal over a UDP listener goes straight to ``sendto``; everything else
(TCP, a host name to resolve) goes to the slow path of
``sipfleet.aio.sip.SipTransports``. Both run once per message, so they are
kept out of the interpreter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sipfleet.proxy.core import Proxy
from sipfleet.proxy.net import Peer
from sipfleet.ratelog import RateLimitedLog

__all__ = ["FastSink", "UdpEndpoint"]

log = logging.getLogger("sipfleet.net")
# A datagram that trips a bug of ours may come 20,000 times a second.
_peer_log = RateLimitedLog(log)

_new = tuple.__new__  # a Peer without the namedtuple's Python-level __new__


class UdpEndpoint:
    """One UDP listener's protocol."""

    def __init__(self, proxy: Proxy, index: int, time: Callable[[], float]) -> None:
        self.proxy = proxy
        self.index = index
        self.time = time
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        now = self.time()
        try:
            self.proxy.receive(data, _new(Peer, (self.index, addr[0], addr[1])), now)
        except Exception:  # our bug: log it loudly, keep serving everyone else
            self.proxy.stats.internal_errors += 1
            _peer_log.exception(
                now, "internal error handling a datagram from %s:%s", addr[0], addr[1]
            )

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error on listener %d: %s", self.index, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


class FastSink:
    """The sink the core writes through (``sipfleet.proxy.net.Sink``)."""

    def __init__(self, slow: Callable[[Peer, bytes], None]) -> None:
        self.slow = slow
        #: listener index -> its UDP transport's sendto (filled as they start)
        self.sendto: dict[int, Callable[[bytes, tuple[str, int]], None]] = {}
        #: hosts known to be IP literals (the slow path checks and adds them)
        self.ips: set[str] = set()

    def send(self, peer: Peer, data: bytes) -> None:
        sendto = self.sendto.get(peer[0])
        host: str = peer[1]
        if sendto is None or host not in self.ips:
            self.slow(peer, data)
            return
        try:
            sendto(data, (host, peer[2]))
        except (OSError, ValueError) as e:
            log.debug("udp send to %s:%d failed: %s", host, peer[2], e)
