"""TLS in the pure core: Via and Record-Route of a tls listener, double Record-Route
across transports, and sips: requests never leaving over UDP or TCP (RFC 5630)."""

from __future__ import annotations

import pytest

from sipfleet.proxy.core import Proxy
from sipfleet.proxy.net import Listener, Peer
from sipfleet.proxy.router import RoundRobinRouter
from sipfleet.sip.message import Message
from sipfleet.testing import RecordingSink

UDP, TCP, TLS = 0, 1, 2


def _proxy(destinations: list[str]) -> tuple[Proxy, RecordingSink]:
    sink = RecordingSink()
    listeners = [
        Listener(UDP, "udp", "127.0.0.1", 5060),
        Listener(TCP, "tcp", "127.0.0.1", 5060),
        Listener(TLS, "tls", "127.0.0.1", 5061),
    ]
    return Proxy(listeners, sink, RoundRobinRouter(destinations)), sink


def _invite(ruri: str, transport: str, branch: str = "z9hG4bK-t1") -> bytes:
    scheme = ruri.split(":", 1)[0]
    return (
        f"INVITE {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:5999;branch={branch};rport\r\n"
        f"From: <{scheme}:alice@127.0.0.1>;tag=a1\r\nTo: <{scheme}:bob@127.0.0.1>\r\n"
        f"Call-ID: {branch}\r\nCSeq: 1 INVITE\r\nContact: <{scheme}:alice@127.0.0.1:5999>\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def _rr(msg: Message) -> list[bytes]:
    """Our Record-Route values up to their signature (``;sf=``, sipfleet.proxy.routesig)."""
    return [v.partition(b";sf=")[0] + b";sf=" for v in msg.get_lines(b"record-route")]


def test_tls_in_udp_out_double_record_route_and_via_tls_upstream() -> None:
    proxy, sink = _proxy(["sip:127.0.0.1:7000"])
    proxy.receive(
        _invite("sip:bob@127.0.0.1:5061;transport=tls", "TLS"), Peer(TLS, "127.0.0.1", 40000), 1.0
    )
    sent = sink.take_to("127.0.0.1", 7000)
    assert len(sent) == 1
    fwd = sent[0]
    assert _rr(fwd) == [b"<sip:127.0.0.1:5060;lr;sf=", b"<sip:127.0.0.1:5061;transport=tls;lr;sf="]
    assert fwd.values(b"via")[0].startswith(b"SIP/2.0/UDP 127.0.0.1:5060;branch=")


def test_udp_in_tls_out_uses_the_tls_listener() -> None:
    proxy, sink = _proxy(["sip:127.0.0.1:7001;transport=tls"])
    proxy.receive(_invite("sip:bob@127.0.0.1", "UDP"), Peer(UDP, "127.0.0.1", 5999), 1.0)
    out = [(p, m) for p, m in sink.take() if m.is_request]
    assert len(out) == 1
    peer, fwd = out[0]
    assert peer == Peer(TLS, "127.0.0.1", 7001)
    assert fwd.values(b"via")[0].startswith(b"SIP/2.0/TLS 127.0.0.1:5061;branch=")
    assert _rr(fwd) == [b"<sip:127.0.0.1:5061;transport=tls;lr;sf=", b"<sip:127.0.0.1:5060;lr;sf="]


@pytest.mark.parametrize(
    ("listener", "transport", "destinations", "final", "reached"),
    [
        (TLS, "TLS", ["sip:127.0.0.1:7000"], 480, None),  # no TLS candidate: not downgraded
        (UDP, "UDP", ["sip:127.0.0.1:7000;transport=tls"], 416, None),  # insecure first hop
        (TCP, "TCP", ["sip:127.0.0.1:7000;transport=tls"], 416, None),
        # the UDP candidate is skipped, the TLS one takes the call
        (TLS, "TLS", ["sip:127.0.0.1:7000", "sip:127.0.0.1:7002;transport=tls"], None, 7002),
    ],
)
def test_a_sips_request_travels_over_tls_only(
    listener: int, transport: str, destinations: list[str], final: int | None, reached: int | None
) -> None:
    proxy, sink = _proxy(destinations)
    proxy.receive(_invite("sips:bob@127.0.0.1", transport), Peer(listener, "127.0.0.1", 5999), 1.0)
    out = sink.take()
    requests = [(p, m) for p, m in out if m.is_request]
    finals = [m.status for _, m in out if not m.is_request and m.status >= 200]
    if reached is None:
        assert requests == [] and finals == [final]
    else:
        assert [(p.listener, p.port) for p, _ in requests] == [(TLS, reached)] and finals == []
