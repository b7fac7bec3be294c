#!/usr/bin/env python3
"""CPU cost of the pure proxy core per call, with no sockets.

Replays SIPp's record-routed call (INVITE, 180, 200, ACK, BYE, 200) through
``Proxy`` N times and prints microseconds per call; ``--profile`` adds a
cProfile of the hottest functions.

    .venv/bin/python bench/core_calls.py --calls 20000 [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import time

from sipfleet.aio.events import EventBus
from sipfleet.config import Config, DispatcherConfig, ListenSpec, ProxyConfig
from sipfleet.core.factory import build_core
from sipfleet.dispatch import parse_list
from sipfleet.proxy.core import Proxy
from sipfleet.proxy.net import Peer
from sipfleet.sip.message import parse

UAC = Peer(0, "127.0.0.1", 5080)
INVITE = (
    "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-4242-{n}-0\r\n"
    "From: sipp <sip:sipp@127.0.0.1:5080>;tag=4242SIPpTag00{n}\r\n"
    "To: <sip:service@127.0.0.1:5060>\r\n"
    "Call-ID: {n}-4242@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: sip:sipp@127.0.0.1:5080\r\n"
    "Max-Forwards: 70\r\n"
    "Subject: Performance Test\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 129\r\n\r\n"
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
INDIALOG = (
    "{m} sip:127.0.0.1:5070;transport=UDP SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-4242-{n}-{c}\r\n"
    "Route: <sip:127.0.0.1:5060;lr>\r\n"
    "From: sipp <sip:sipp@127.0.0.1:5080>;tag=4242SIPpTag00{n}\r\n"
    "To: <sip:service@127.0.0.1:5060>;tag=uas{n}\r\n"
    "Call-ID: {n}-4242@127.0.0.1\r\n"
    "CSeq: {c} {m}\r\n"
    "Contact: sip:sipp@127.0.0.1:5080\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: 0\r\n\r\n"
)


class Sink:
    def __init__(self) -> None:
        self.last: dict[int, bytes] = {}
        self.out: list[bytes] = []

    def send(self, peer: Peer, data: bytes) -> None:
        self.out.append(data)


def respond(req: bytes, status: int, reason: str, n: int) -> bytes:
    msg = parse(req)
    lines = [f"SIP/2.0 {status} {reason}".encode()]
    for name, line in zip(msg.names, msg.lines, strict=False):
        if name in (b"via", b"record-route", b"from", b"call-id", b"cseq"):
            lines.append(line)
        elif name == b"to":
            lines.append(line + (b";tag=uas%d" % n if b"tag=" not in line else b""))
    lines += [b"Contact: <sip:127.0.0.1:5070;transport=UDP>", b"Content-Length: 0", b"", b""]
    return b"\r\n".join(lines)


GATE = "none"  # --gate: none, open (every caller counted), trunk (callers are a [[trunk]])


def _proxy(sink: Sink) -> Proxy:
    """The proxy as ``sipfleet run`` builds it (sipfleet.core.factory): dispatcher,
    routing policy, dialogs, edge security gate."""
    from sipfleet.security.gate import Gate
    from sipfleet.security.settings import SecuritySettings, TrunkSpec

    trunks = [TrunkSpec("bench", ["127.0.0.0/8"])] if GATE == "trunk" else []
    cfg = Config(
        proxy=ProxyConfig(listen=[ListenSpec(proto="udp", host="127.0.0.1", port=5060)]),
        dispatcher=DispatcherConfig(ping_interval=0),
    )
    core = build_core(
        cfg,
        parse_list("1 sip:127.0.0.1:5070 0 0 duid=media-1\n"),
        {},
        now=lambda: 1000.0,
        sink=sink,
        events=EventBus(),
        lock=asyncio.Lock,
        gate=Gate(SecuritySettings(trunks=trunks, pike_density=10**9)),
    )
    proxy = core.proxy
    proxy.branches._salt = "bench"  # same branches in the recording and the replay
    if GATE == "none":
        proxy.gate = None  # --gate none: the core without its edge rules
    else:
        # No back ends trusted: the UAC and UAS share 127.0.0.1 here, and a back
        # end's traffic would skip every check.
        core.gate.set_backends(frozenset())
    return proxy


def record(calls: int) -> list[tuple[Peer | None, bytes, float]]:
    """The traffic of ``calls`` calls, as the proxy sees it: (source, bytes, time);
    a None source is a timer tick."""
    sink = Sink()
    proxy = _proxy(sink)
    uas = Peer(0, "127.0.0.1", 5070)
    now = 1000.0
    out: list[tuple[Peer | None, bytes, float]] = []

    def feed(peer: Peer, data: bytes) -> None:
        out.append((peer, data, now))
        proxy.receive(data, peer, now)

    for n in range(calls):
        feed(UAC, INVITE.format(n=n).encode())
        fwd = sink.out[-1]
        feed(uas, respond(fwd, 180, "Ringing", n))
        feed(uas, respond(fwd, 200, "OK", n))
        feed(UAC, INDIALOG.format(m="ACK", n=n, c=1).encode())
        feed(UAC, INDIALOG.format(m="BYE", n=n, c=2).encode())
        feed(uas, respond(sink.out[-1], 200, "OK", n))
        now += 0.001
        out.append((None, b"", now))
        proxy.handle_timer(now)
        sink.out.clear()
    return out


def replay(traffic: list[tuple[Peer | None, bytes, float]]) -> float:
    """Feed recorded traffic to a fresh proxy; return the seconds it took."""
    # The collector as sipfleet run sets it up (sipfleet.aio.app).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    proxy = _proxy(Sink())
    receive = proxy.receive
    tick = proxy.handle_timer
    t0 = time.perf_counter()
    for peer, data, now in traffic:
        if peer is None:
            tick(now)
        else:
            receive(data, peer, now)
    return time.perf_counter() - t0


def run(calls: int) -> float:
    """Microseconds of proxy CPU per call."""
    traffic = record(calls)
    return replay(traffic) / calls * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--gate", choices=["none", "open", "trunk"], default="none")
    a = ap.parse_args()
    global GATE
    GATE = a.gate
    if a.profile:
        prof = cProfile.Profile()
        prof.enable()
        us = run(a.calls)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    else:
        us = run(a.calls)
    print(f"core: {us:.1f} us per call ({a.calls} calls, gate {a.gate})")


if __name__ == "__main__":
    main()
