"""Bounded TCP: a connection flood and slow-loris senders from one address do
not lock out a trunk on another; the slow ones are closed within the header
timeout; inbound connections never take the share kept for back ends.

Linux routes all of 127/8 to lo, so the trunk binds 127.0.0.2.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from pathlib import Path

import pytest
import sipp as harness
from waits import wait_for

sipp_env = harness.sipp_env
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]
HOST = harness.HOST
TRUNK = "127.0.0.2"

_SLOW_HEAD = (
    b"INVITE sip:slow@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-slow\r\n"
    + b"X-Padding: "
    + b"a" * 400
)


def _stderr(proxy: harness.Proxy) -> str:
    return Path(proxy.stderr_path).read_text("utf-8", "replace")


def _connect_many(port: int, count: int, deadline: float) -> list[socket.socket]:
    """``count`` connections from 127.0.0.1 that never send a byte (bounded in time)."""
    socks: list[socket.socket] = []
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((HOST, port))
        socks.append(s)
    return socks


class SlowLoris(threading.Thread):
    """Connections sending a header one byte at a time, every ``interval`` s;
    records how long each stayed open."""

    def __init__(self, port: int, count: int, interval: float, limit: float) -> None:
        super().__init__(daemon=True)
        self.socks = [socket.create_connection((HOST, port), timeout=5.0) for _ in range(count)]
        self.opened = {s: time.monotonic() for s in self.socks}
        self.lifetimes: dict[socket.socket, float] = {}
        self.interval = interval
        self.limit = limit  # seconds: the thread gives up after this long

    def run(self) -> None:
        end = time.monotonic() + self.limit
        sent = 0
        for s in self.socks:
            s.setblocking(False)
        while len(self.lifetimes) < len(self.socks) and time.monotonic() < end:
            live = [s for s in self.socks if s not in self.lifetimes]
            readable, _, _ = select.select(live, [], [], self.interval)
            now = time.monotonic()
            for s in readable:  # EOF or RST: sipfleet closed it
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    self.lifetimes[s] = now - self.opened[s]
            byte = _SLOW_HEAD[sent % len(_SLOW_HEAD) : sent % len(_SLOW_HEAD) + 1]
            sent += 1
            for s in live:
                if s in self.lifetimes:
                    continue
                try:
                    s.send(byte)
                except OSError:
                    self.lifetimes[s] = time.monotonic() - self.opened[s]
        for s in self.socks:
            s.close()


def test_5000_connections_and_100_slow_loris_do_not_lock_out_a_trunk(sipp_env):
    header_timeout = 4.0
    uas = sipp_env.uas("uas_rr.xml")
    proxy = sipp_env.proxy(
        [uas],
        tcp_header_timeout=header_timeout,
        tcp_max_connections_per_source=1000,
        tcp_max_connections=8000,
    )
    slow = SlowLoris(proxy.port, 100, interval=0.5, limit=header_timeout + 10)
    slow.start()
    flood = _connect_many(proxy.port, 5000, time.monotonic() + 20)
    try:
        assert len(flood) == 5000
        # The trunk, from another address, while all that is open.
        r = sipp_env.uac(
            "uac_rr.xml", proxy, calls=100, rate=50, transport="tcp", extra=["-i", TRUNK]
        )
        assert (r.successful, r.failed) == (100, 0), r.summary()
        slow.join(header_timeout + 12)
        assert len(slow.lifetimes) == 100, f"{100 - len(slow.lifetimes)} slow ones still open"
        lifetimes = sorted(slow.lifetimes.values())
        # Closed within the header timeout (+ the sweep's 0.4 s and scheduling slack),
        # and not before it while they kept sending.
        assert lifetimes[-1] <= header_timeout + 1.0, lifetimes[-5:]
        assert lifetimes[0] >= header_timeout - 0.2, lifetimes[:5]
    finally:
        for s in flood:
            s.close()
    log = _stderr(proxy)
    assert "tcp_max_connections_per_source" in log  # the refusals are logged...
    assert log.count("tcp connection limit reached, refusing") <= 200  # ...at a bounded rate
    assert "no complete message within 4 s" in log
    assert uas.stop().successful == 100


def test_inbound_connections_never_take_the_outbound_share(sipp_env):
    """20 of 40 slots are kept for outbound: 25 idle inbound connections get 20,
    and calls still reach a TCP back end."""
    uas = sipp_env.uas("uas_rr.xml", transport="tcp")
    proxy = sipp_env.proxy(
        [uas],
        tcp_max_connections=40,
        tcp_outbound_reserve=0.5,
        tcp_max_connections_per_source=100,
        tcp_header_timeout=60.0,
    )
    idle = [socket.create_connection((HOST, proxy.port), timeout=5.0) for _ in range(25)]
    try:

        def refused() -> int:
            n = 0
            for s in idle:
                s.setblocking(False)
                try:
                    n += s.recv(1) == b""
                except BlockingIOError:
                    pass
                except OSError:
                    n += 1
            return n

        wait_for("5 idle connections closed", lambda: refused() >= 5, 20, seen=refused)
        assert refused() == 5
        r = sipp_env.uac("uac_rr.xml", proxy, calls=20, rate=40)
        assert (r.successful, r.failed) == (20, 0), r.summary()
    finally:
        for s in idle:
            s.close()
    assert "20 inbound connections open (tcp_max_connections)" in _stderr(proxy)
    assert uas.stop().successful == 20


def test_a_peer_that_does_not_read_is_closed_at_the_buffer_bound(sipp_env):
    """Pipelined OPTIONS whose answers are never read: once more than tcp_max_buffer
    bytes wait to be sent, sipfleet closes the connection (memory stays bounded)."""
    proxy = sipp_env.proxy([f"sip:{HOST}:9"], tcp_max_buffer=65536)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(
        socket.SOL_SOCKET, socket.SO_RCVBUF, 4096
    )  # a tiny window: the kernel holds little
    s.connect((HOST, proxy.port))
    s.settimeout(0.5)
    closed = False
    deadline = time.monotonic() + 20
    n = 0
    while not closed and time.monotonic() < deadline and n < 200_000:
        burst = b"".join(
            (
                f"OPTIONS sip:{HOST}:{proxy.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/TCP {HOST}:9;branch=z9hG4bK-buf{n + i}\r\n"
                f"From: <sip:buf@{HOST}>;tag=b\r\nTo: <sip:{HOST}>\r\nCall-ID: buf-{n + i}\r\n"
                "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            for i in range(100)
        )
        n += 100
        try:
            s.sendall(burst)
        except TimeoutError:
            continue  # sipfleet reads slower than this: go on
        except (ConnectionResetError, BrokenPipeError):
            closed = True
    s.close()
    assert closed, f"still open after {n} requests"
    assert "more than 65536 bytes queued (the peer does not read)" in _stderr(proxy)
