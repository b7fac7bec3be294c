"""Start lines and header lines past ``max_line_length``: the peer's fault (a
BadMessage with the status it deserves), never an exception of ours."""

from __future__ import annotations

import pytest

from sipfleet.proxy.core import Proxy, ProxySettings
from sipfleet.proxy.net import Listener, Peer
from sipfleet.proxy.router import RoundRobinRouter
from sipfleet.sip.errors import BadMessage
from sipfleet.sip.message import Limits, parse
from sipfleet.testing import FakeClock, RecordingSink

LONG = b"a" * 9000
HEADERS = (
    b"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKlong\r\n"
    b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\n"
    b"Call-ID: long-line\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
    b"Content-Length: 0\r\n"
)


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        # Only a start line (the flood: max() of no header lines).
        (b"INVITE sip:" + LONG + b"@x SIP/2.0\r\n\r\n", 414, "Request-URI Too Long"),
        (b"OPTIONS sip:" + LONG + b" SIP/2.0\r\n" + HEADERS + b"\r\n", 414, "Request-URI Too Long"),
        (b"SIP/2.0 200 " + LONG + b"\r\n\r\n", 400, "Status line too long"),
        (b"X" * 9000 + b"\r\n\r\n", 414, "Request-URI Too Long"),
        (b"OPTIONS sip:x SIP/2.0\r\nX-Long: " + LONG + b"\r\n\r\n", 400, "Header line too long"),
    ],
)
def test_too_long_lines_are_bad_messages(data: bytes, status: int, reason: str) -> None:
    with pytest.raises(BadMessage) as e:
        parse(data)
    assert (e.value.status, e.value.reason) == (status, reason)


def test_lines_at_the_limit_parse() -> None:
    limits = Limits(max_line_length=64)
    start = b"OPTIONS sip:" + b"u" * 44 + b" SIP/2.0"
    assert len(start) == 64
    assert parse(start + b"\r\n\r\n", limits).ruri.startswith("sip:u")
    with pytest.raises(BadMessage):
        parse(start.replace(b"sip:", b"sip:u") + b"\r\n\r\n", limits)


def _proxy() -> tuple[Proxy, RecordingSink]:
    sink = RecordingSink()
    proxy = Proxy(
        [Listener(0, "udp", "127.0.0.1", 5060)],
        sink,
        RoundRobinRouter(["sip:127.0.0.1:5070"]),
        ProxySettings(),
    )
    return proxy, sink


def test_core_drops_and_counts_a_bare_long_start_line() -> None:
    proxy, sink = _proxy()
    clock = FakeClock()
    for _ in range(100):
        proxy.receive(
            b"INVITE sip:" + LONG + b"@x SIP/2.0\r\n\r\n", Peer(0, "127.0.0.1", 5080), clock.now
        )
    assert sink.sent == []  # nothing to copy a response from
    assert proxy.stats.bad_msg_hdr == 100
    assert proxy.stats.drop_requests == 100


def test_core_answers_414_when_it_can() -> None:
    proxy, sink = _proxy()
    data = b"OPTIONS sip:" + LONG + b" SIP/2.0\r\n" + HEADERS + b"\r\n"
    proxy.receive(data, Peer(0, "127.0.0.1", 5080), FakeClock().now)
    ((peer, msg),) = sink.take()
    assert (peer.host, peer.port, msg.status) == ("127.0.0.1", 5080, 414)
    assert msg.get(b"call-id") == b"long-line"
