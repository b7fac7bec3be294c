#!/usr/bin/env python3
"""A digest of everything the pure proxy core sends, over random call flows.

For refactors that must not change the SIP bytes on the wire: run it in two
checkouts and compare the output line for line. Each seed drives one proxy
through random INVITEs, OPTIONS and MESSAGEs, provisional and final answers
from three back ends, CANCELs, retransmissions, ACKs, BYEs and clock jumps
(first-response and Timer C timeouts, failover); each line is the seed, a
digest of every datagram sent and the counters.

    PYTHONHASHSEED=0 .venv/bin/python bench/wire_digest.py 0 300 > new.txt
    (cd ../main && PYTHONHASHSEED=0 .venv/bin/python bench/wire_digest.py 0 300) > old.txt
    diff old.txt new.txt

Random values (branch salt, route key) are fixed here; the loop-hash part of
our branches is masked, as compiled and pure builds hash differently.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re

os.urandom = lambda n: b"\x07" * n  # before sipfleet: fixed branch salts

from sipfleet.proxy.core import Proxy, ProxySettings  # noqa: E402
from sipfleet.proxy.net import Listener, Peer  # noqa: E402
from sipfleet.proxy.router import RoundRobinRouter  # noqa: E402
from sipfleet.sip.message import Message, parse  # noqa: E402
from sipfleet.testing import UA, FakeClock, RecordingSink  # noqa: E402

COUNTERS = (
    "bad_msg_hdr",
    "drop_replies",
    "drop_requests",
    "err_requests",
    "failovers",
    "fwd_replies",
    "fwd_requests",
    "local_replies",
    "rcv_replies",
    "rcv_requests",
    "relay_denied",
    "retransmissions",
    "timeouts",
    "transport_errors",
    "uac_transactions",
    "uas_transactions",
)
INVITE_CODES = (100, 180, 183, 200, 200, 486, 503, 487, 404, 603, 302, 408)
PORTS = (5070, 5071, 5072)
UAC = Peer(0, "127.0.0.1", 5080)
_LOOP_HASH = re.compile(rb"(z9hG4bKsf[0-9a-f]{4})[0-9a-f]{8}\.")


def run(seed: int) -> tuple[str, int]:
    """(digest, datagrams sent) of one random flow."""
    rnd = random.Random(seed)
    sink = RecordingSink()
    clock = FakeClock()
    proxy = Proxy(
        [Listener(0, "udp", "127.0.0.1", 5060)],
        sink,
        RoundRobinRouter([f"sip:127.0.0.1:{p}" for p in PORTS]),
        ProxySettings(
            first_response_timeout=rnd.choice((1.0, 2.0)),
            final_response_timeout=5.0,
            max_failover=rnd.choice((0, 1, 2)),
            route_key=b"k" * 32,
        ),
    )
    uac = UA("127.0.0.1", 5080)
    trace: list[bytes] = []
    inbox: dict[int, list[Message]] = {p: [] for p in PORTS}
    sent: dict[str, bytes] = {}

    def drain() -> None:
        for peer, data in sink.sent:
            trace.append(b"%d %s %d|" % (peer.listener, peer.host.encode(), peer.port) + data)
            if peer.port in inbox:
                m = parse(data)
                if m.is_request and m.method != "ACK":
                    inbox[peer.port].append(m)
        sink.sent.clear()

    for n in range(rnd.randint(20, 80)):
        r = rnd.random()
        calls = list(sent)
        if r < 0.2:
            cid = f"s{seed}c{n}"
            method = rnd.choice(("INVITE", "INVITE", "INVITE", "OPTIONS", "MESSAGE"))
            branch = f"z9hG4bK-{cid}"
            if method == "INVITE":
                data = uac.invite("sip:s@127.0.0.1", call_id=cid, branch=branch)
            else:
                data = uac.request(method, "sip:s@127.0.0.1", call_id=cid, branch=branch)
            sent[cid] = data
            proxy.receive(data, UAC, clock.now)
        elif r < 0.55:
            port = rnd.choice(PORTS)
            if inbox[port]:
                m = rnd.choice(inbox[port])
                if m.method in ("CANCEL", "BYE"):
                    code = 200
                elif m.method == "INVITE":
                    code = rnd.choice(INVITE_CODES)
                else:
                    code = rnd.choice((100, 200, 404, 503))
                resp = UA("127.0.0.1", port).respond(m, code, to_tag=f"t{port}")
                proxy.receive(resp, Peer(0, "127.0.0.1", port), clock.now)
        elif r < 0.65 and calls:
            cid = rnd.choice(calls)
            cancel = uac.request("CANCEL", "sip:s@127.0.0.1", call_id=cid, branch=f"z9hG4bK-{cid}")
            proxy.receive(cancel, UAC, clock.now)
        elif r < 0.72 and calls:
            proxy.receive(sent[rnd.choice(calls)], UAC, clock.now)  # a retransmission
        elif r < 0.8 and calls:
            port = rnd.choice(PORTS)
            method = rnd.choice(("ACK", "BYE"))
            req = uac.request(
                method,
                f"sip:127.0.0.1:{port}",
                call_id=rnd.choice(calls),
                to_tag=f"t{port}",
                routes=["<sip:127.0.0.1:5060;lr>"],
                cseq=1 if method == "ACK" else 2,
            )
            proxy.receive(req, UAC, clock.now)
        else:
            proxy.handle_timer(clock.advance(rnd.choice((0.1, 0.5, 1.5, 3.0, 6.0))))
        drain()
    for _ in range(20):
        proxy.handle_timer(clock.advance(5))
    drain()
    st = proxy.stats
    counts = [getattr(st, name) for name in COUNTERS]
    counts += [len(proxy.server_txns), len(proxy.client_txns), len(proxy.dialogs)]
    masked = [_LOOP_HASH.sub(rb"\1XXXXXXXX.", t) for t in trace]
    digest = hashlib.sha256(b"\n".join(masked) + repr(counts).encode()).hexdigest()[:16]
    return digest, len(trace)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("first", type=int, help="first seed")
    ap.add_argument("last", type=int, help="last seed (exclusive)")
    args = ap.parse_args()
    total = 0
    for seed in range(args.first, args.last):
        digest, n = run(seed)
        total += n
        print(seed, digest, n)
    print("datagrams", total)


if __name__ == "__main__":
    main()
