"""What the property tests found, kept as plain tests (issue 11)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipfleet.proxy.core import Proxy, ProxySettings
from sipfleet.proxy.net import Listener, Peer
from sipfleet.proxy.router import RoundRobinRouter
from sipfleet.sip.errors import BadMessage
from sipfleet.sip.message import parse
from sipfleet.testing import UA, FakeClock, RecordingSink

UAC = Peer(0, "127.0.0.1", 5080)
UAS = Peer(0, "127.0.0.1", 5070)
FUZZ = Path(__file__).resolve().parents[1] / "vectors" / "fuzz"


def make():
    sink, clock = RecordingSink(), FakeClock()
    proxy = Proxy(
        [Listener(0, "udp", "127.0.0.1", 5060)],
        sink,
        RoundRobinRouter(["sip:127.0.0.1:5070"]),
        ProxySettings(),
    )
    return proxy, sink, clock


def test_bare_lf_in_a_copied_header_does_not_split_our_answer():
    # RFC 4475 3.1.2.7 with its CSeq line cut by a bare LF: the 400 we send
    # back copied the LF and did not parse.
    proxy, sink, clock = make()
    data = (
        b"OPTIONS sip:user@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bK293423\r\n"
        b"To: sip:user@example.com\r\nFrom: sip:other@example.net;tag=3923942\r\n"
        b"Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf\r\nCSeq:\nContent-Length: 13\r\n"
        b"Max-Forwards: 60\r\nContent-Length: 5\r\n\r\nhello"
    )
    proxy.receive(data, UAC, clock.now)
    ((_peer, out),) = sink.sent
    resp = parse(out)
    assert resp.status == 400


def test_a_back_end_that_rings_then_goes_silent_frees_its_transaction():
    # The INVITE client transaction stopped Timer B at the 180 and nothing
    # ended it after our CANCEL (Timer C): it stayed for ever.
    proxy, sink, clock = make()
    proxy.receive(UA("127.0.0.1", 5080).invite("sip:1@127.0.0.1"), UAC, clock.now)
    (inv,) = sink.take_to("127.0.0.1", 5070)
    proxy.receive(UA("127.0.0.1", 5070).respond(inv, 180, "Ringing"), UAS, clock.now)
    for _ in range(400):
        proxy.handle_timer(clock.advance(0.5))
    assert [m.method for m in sink.take_to("127.0.0.1", 5070)][:1] == ["CANCEL"]
    assert [m.status for m in sink.take_to("127.0.0.1", 5080)][-1] == 408
    assert not proxy.client_txns and not proxy.server_txns
    assert len(proxy.timers) == 0


def test_a_bare_lf_cannot_shift_header_names_onto_other_lines():
    # atheris: a bare LF before "Via:" inside the CSeq line made the name
    # scan find one name too many, and a line whose name is no token one too
    # few: the counts matched, the names slid, and "a=rtpmap:31 Via: ..." was
    # taken for a Via and copied into our 400, which then did not parse.
    data = (
        b"OPTIONS sip:u@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-lf1\r\n"
        b"CSeq: 1 OPTIONS\nVia: SIP/2.0/UDP evil\r\n"
        b"a=rtpmap:31 Via: x\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:u@127.0.0.1>\r\nCall-ID: lf1\r\n"
        b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    with pytest.raises(BadMessage):
        parse(data)
    proxy, sink, clock = make()
    proxy.receive(data, UAC, clock.now)
    for _, out in sink.sent:
        parse(out)


@pytest.mark.parametrize("path", sorted(FUZZ.glob("*.bin")), ids=lambda p: p.name)
def test_atheris_finds_stay_fixed(path: Path):
    """The inputs bench/fuzz_atheris.py found, as datagrams from a caller and
    a back end: no exception, and everything we send parses."""
    data = path.read_bytes()
    for peer in (UAC, UAS):
        proxy, sink, clock = make()
        for i in range(0, len(data), 700):
            proxy.receive(data[i : i + 1400], peer, clock.advance(0.1))
        proxy.receive(data, peer, clock.advance(0.1))
        for _ in range(100):
            proxy.handle_timer(clock.advance(2.0))
        for _, out in sink.sent:
            parse(out)
        assert not proxy.server_txns and not proxy.client_txns
