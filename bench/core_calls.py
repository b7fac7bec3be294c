#!/usr/bin/env python3
"""CPU cost of the pure proxy core per call, with no sockets.

Replays SIPp's record-routed call (INVITE, 180, 200, ACK, BYE, 200) through
``Proxy`` N times and prints microseconds per call; ``--profile`` adds a
cProfile of the hottest functions.

    .venv/bin/python bench/core_calls.py --calls 20000 [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from sipfleet.proxy.core import Proxy
from sipfleet.proxy.net import Listener, Peer
from sipfleet.proxy.router import RoundRobinRouter
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


def run(calls: int) -> float:
    sink = Sink()
    proxy = Proxy([Listener(0, "udp", "127.0.0.1", 5060)], sink, RoundRobinRouter(["sip:127.0.0.1:5070"]))
    uas = Peer(0, "127.0.0.1", 5070)
    # Pre-build the traffic so only the proxy is timed.
    now = 1000.0
    total = 0.0
    for n in range(calls):
        sink.out.clear()
        t0 = time.perf_counter()
        proxy.receive(INVITE.format(n=n).encode(), UAC, now)
        t1 = time.perf_counter()
        fwd = sink.out[-1]
        r180, r200 = respond(fwd, 180, "Ringing", n), respond(fwd, 200, "OK", n)
        ack = INDIALOG.format(m="ACK", n=n, c=1).encode()
        bye = INDIALOG.format(m="BYE", n=n, c=2).encode()
        t2 = time.perf_counter()
        proxy.receive(r180, uas, now)
        proxy.receive(r200, uas, now)
        proxy.receive(ack, UAC, now)
        proxy.receive(bye, UAC, now)
        t3 = time.perf_counter()
        bye_fwd = sink.out[-1]
        ok = respond(bye_fwd, 200, "OK", n)
        t4 = time.perf_counter()
        proxy.receive(ok, uas, now)
        now += 0.001
        proxy.handle_timer(now)
        t5 = time.perf_counter()
        total += (t1 - t0) + (t3 - t2) + (t5 - t4)
    return total / calls * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    if a.profile:
        prof = cProfile.Profile()
        prof.enable()
        us = run(a.calls)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    else:
        us = run(a.calls)
    print(f"core: {us:.1f} us per call ({a.calls} calls)")


if __name__ == "__main__":
    main()
