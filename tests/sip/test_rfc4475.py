"""RFC 4475 torture messages through the proxy core: each handled as the RFC says,
and the proxy keeps serving afterwards."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from sipfleet.proxy.core import Proxy
from sipfleet.proxy.net import Listener, Peer
from sipfleet.proxy.router import RoundRobinRouter
from sipfleet.sip.errors import BadMessage
from sipfleet.sip.message import parse
from sipfleet.testing import UA, FakeClock, RecordingSink

VECTORS = Path(__file__).parent.parent / "vectors" / "rfc4475"
_spec = importlib.util.spec_from_file_location(
    "rfc4475_cases", Path(__file__).parent / "rfc4475_cases.py"
)
assert _spec and _spec.loader
cases_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases_mod)
CASES = cases_mod.CASES
SOURCE = Peer(0, "192.0.2.200", 5060)
BACKEND = ("127.0.0.1", 5070)


def test_every_vector_has_a_case():
    assert sorted(c.file for c in CASES) == sorted(p.name for p in VECTORS.glob("*.dat"))
    assert len(CASES) == 49


def _proxy():
    sink = RecordingSink()
    proxy = Proxy(
        [Listener(0, "udp", "127.0.0.1", 5060)], sink, RoundRobinRouter(["sip:127.0.0.1:5070"])
    )
    return proxy, sink


@pytest.mark.parametrize("case", CASES, ids=[c.file for c in CASES])
def test_torture(case):
    data = (VECTORS / case.file).read_bytes()
    proxy, sink = _proxy()
    clock = FakeClock()
    proxy.receive(data, SOURCE, clock.now)
    sent = list(sink.sent)
    # Responses go to the source address, at the Via's port unless rport (RFC 3261 18.2.2).
    to_source = [parse(d) for p, d in sent if p.host == SOURCE.host]
    elsewhere = [(p, parse(d)) for p, d in sent if p.host != SOURCE.host]
    if case.kind == "forward":
        assert [m.status for m in to_source if m.status >= 200] == [], to_source
        assert len(elsewhere) == 1, sent
        peer, fwd = elsewhere[0]
        if parse(data).to_tag is None:
            assert (peer.host, peer.port) == BACKEND
        assert fwd.is_request
        assert fwd.via.branch.startswith("z9hG4bKsf")
        # Forwarded byte-for-byte apart from our Via and the edits we must make.
        assert fwd.body == parse(data).body
    elif case.kind == "reject":
        assert elsewhere == []
        # An INVITE refused after its transaction exists has had its 100 Trying.
        assert [m.status for m in to_source if m.status != 100] == [case.status], case.note
        if case.status == 420:
            assert to_source[0].get(b"unsupported")
    elif case.kind == "parse-ok-then-drop":
        parse(data)
        assert sent == []
        assert proxy.stats.drop_replies == 1
    else:
        with pytest.raises(BadMessage):
            msg = parse(data)
            msg.cseq  # noqa: B018
        assert sent == []
    # The proxy still serves a normal call afterwards.
    sink.sent.clear()
    proxy.receive(
        UA("127.0.0.1", 5080).invite("sip:x@127.0.0.1"), Peer(0, "127.0.0.1", 5080), clock.now
    )
    assert sink.take_to(*BACKEND)
