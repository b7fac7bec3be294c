"""Where responses go and what the proxy writes into the Via it received
(RFC 3261 18.2.1-18.2.2, RFC 3581 4), on the pure core with a fake clock. These run
compiled too: mypyc once turned the ``rport`` flag into 1 and broke ``is False``."""

from __future__ import annotations

from sipfleet.proxy.core import Proxy, ProxySettings
from sipfleet.proxy.net import Listener, Peer
from sipfleet.proxy.router import RoundRobinRouter
from sipfleet.testing import UA, FakeClock, RecordingSink

SOURCE = Peer(0, "127.0.0.1", 5099)  # where the datagrams come from (a NAT's port)


def make() -> tuple[Proxy, RecordingSink, FakeClock]:
    sink = RecordingSink()
    proxy = Proxy(
        [Listener(0, "udp", "127.0.0.1", 5060)],
        sink,
        RoundRobinRouter(["sip:127.0.0.1:5070"]),
        ProxySettings(),
    )
    return proxy, sink, FakeClock()


def test_rport_flag_is_filled_in_and_answered_to_the_source_port() -> None:
    """RFC 3581 4: with a valueless rport the proxy adds rport=<source port> (and
    received) to the Via and answers to the source port."""
    proxy, sink, clock = make()
    data = UA("127.0.0.1", 5080).invite("sip:s@127.0.0.1", call_id="r1", branch="z9hG4bK-r1")
    data = data.replace(b";branch=z9hG4bK-r1", b";rport;branch=z9hG4bK-r1")
    proxy.receive(data, SOURCE, clock.now)
    assert [m.status for m in sink.take_to("127.0.0.1", 5099)] == [100]
    (inv,) = sink.take_to("127.0.0.1", 5070)
    upstream_via = inv.values(b"via")[1]
    assert b";rport=5099;" in upstream_via and upstream_via.endswith(b";received=127.0.0.1")
    assert sink.take() == []


def test_without_rport_answers_go_to_the_via_port() -> None:
    """RFC 3261 18.2.2: without rport, a response over UDP goes to the sent-by port."""
    proxy, sink, clock = make()
    data = UA("127.0.0.1", 5080).invite("sip:s@127.0.0.1", call_id="r2", branch="z9hG4bK-r2")
    proxy.receive(data, SOURCE, clock.now)
    assert [m.status for m in sink.take_to("127.0.0.1", 5080)] == [100]
    (inv,) = sink.take_to("127.0.0.1", 5070)
    assert b"rport" not in inv.values(b"via")[1]
    assert sink.take() == []
