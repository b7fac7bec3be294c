"""Whole call flows through the pure proxy core, with a fake clock and no sockets."""

from __future__ import annotations

from sipfleet.proxy.core import Proxy, ProxySettings
from sipfleet.proxy.net import Listener, Peer
from sipfleet.proxy.router import RoundRobinRouter
from sipfleet.sip.message import Message
from sipfleet.testing import UA, FakeClock, RecordingSink

UAC = Peer(0, "127.0.0.1", 5080)


def make(dests=("sip:127.0.0.1:5070", "sip:127.0.0.1:5071"), **kw):
    sink = RecordingSink()
    clock = FakeClock()
    proxy = Proxy(
        [Listener(0, "udp", "127.0.0.1", 5060), Listener(1, "tcp", "127.0.0.1", 5060)],
        sink,
        RoundRobinRouter(list(dests)),
        ProxySettings(**kw),
    )
    return proxy, sink, clock


def test_basic_call_record_routed():
    proxy, sink, clock = make()
    uac, uas = UA("127.0.0.1", 5080), UA("127.0.0.1", 5070)
    proxy.receive(uac.invite("sip:service@127.0.0.1:5060", call_id="c1"), UAC, clock.now)
    up = sink.take_to("127.0.0.1", 5080)
    assert [m.status for m in up] == [100]
    (inv,) = sink.take_to("127.0.0.1", 5070)
    assert inv.method == "INVITE"
    assert inv.get(b"max-forwards") == b"69"
    rr = inv.get(b"record-route")
    assert rr is not None and rr.startswith(b"<sip:127.0.0.1:5060;lr;sf=") and rr.endswith(b">")
    assert len(inv.values(b"via")) == 2
    assert inv.via.branch.startswith("z9hG4bKsf")
    proxy.receive(uas.respond(inv, 180, "Ringing"), Peer(0, "127.0.0.1", 5070), clock.now)
    proxy.receive(uas.respond(inv, 200), Peer(0, "127.0.0.1", 5070), clock.now)
    up = sink.take_to("127.0.0.1", 5080)
    assert [m.status for m in up] == [180, 200]
    ok = up[1]
    assert len(ok.values(b"via")) == 1
    assert ok.get(b"record-route") == rr
    # ACK and BYE along the route set.
    ack = uac.request(
        "ACK",
        "sip:127.0.0.1:5070;transport=UDP",
        call_id="c1",
        to_tag="uas-tag",
        routes=["<sip:127.0.0.1:5060;lr>"],
    )
    proxy.receive(ack, UAC, clock.advance(0.01))
    (fwd_ack,) = sink.take_to("127.0.0.1", 5070)
    assert fwd_ack.method == "ACK" and not fwd_ack.has(b"route")
    bye = uac.request(
        "BYE",
        "sip:127.0.0.1:5070;transport=UDP",
        call_id="c1",
        to_tag="uas-tag",
        routes=["<sip:127.0.0.1:5060;lr>"],
        cseq=2,
    )
    proxy.receive(bye, UAC, clock.advance(1))
    (fwd_bye,) = sink.take_to("127.0.0.1", 5070)
    proxy.receive(uas.respond(fwd_bye, 200), Peer(0, "127.0.0.1", 5070), clock.now)
    (bye_ok,) = sink.take_to("127.0.0.1", 5080)
    assert bye_ok.status == 200 and bye_ok.cseq == (2, "BYE")
    # Everything cleans up after the transaction timers.
    clock.advance(40)
    proxy.handle_timer(clock.now)
    assert not proxy.server_txns and not proxy.client_txns
    assert sink.sent == []


def test_failover_on_503_and_timeout():
    proxy, sink, clock = make(
        dests=("sip:127.0.0.1:5070", "sip:127.0.0.1:5071", "sip:127.0.0.1:5072")
    )
    uac, uas = UA("127.0.0.1", 5080), UA("127.0.0.1", 5070)
    proxy.receive(uac.invite("sip:s@127.0.0.1", call_id="c2"), UAC, clock.now)
    sink.take_to("127.0.0.1", 5080)
    (inv,) = sink.take_to("127.0.0.1", 5070)
    proxy.receive(uas.respond(inv, 503, "Busy"), Peer(0, "127.0.0.1", 5070), clock.now)
    acks = sink.take_to("127.0.0.1", 5070)
    assert [m.method for m in acks] == ["ACK"]
    (_inv2,) = sink.take_to("127.0.0.1", 5071)
    # 5071 never answers: after the first-response timeout we go to 5072.
    clock.advance(0.5)
    proxy.handle_timer(clock.now)
    assert [m.method for m in sink.take_to("127.0.0.1", 5071)] == ["INVITE"]  # Timer A retransmit
    clock.advance(1.6)
    proxy.handle_timer(clock.now)
    (inv3,) = sink.take_to("127.0.0.1", 5072)
    proxy.receive(UA("127.0.0.1", 5072).respond(inv3, 200), Peer(0, "127.0.0.1", 5072), clock.now)
    up = sink.take_to("127.0.0.1", 5080)
    assert [m.status for m in up] == [200]
    assert proxy.stats.failovers == 2


def test_cancel_while_ringing():
    proxy, sink, clock = make()
    uac, uas = UA("127.0.0.1", 5080), UA("127.0.0.1", 5070)
    invite = uac.invite("sip:s@127.0.0.1", call_id="c3", branch="z9hG4bK-c3")
    proxy.receive(invite, UAC, clock.now)
    sink.take_to("127.0.0.1", 5080)
    (inv,) = sink.take_to("127.0.0.1", 5070)
    proxy.receive(uas.respond(inv, 180, "Ringing"), Peer(0, "127.0.0.1", 5070), clock.now)
    sink.take_to("127.0.0.1", 5080)
    cancel = uac.request("CANCEL", "sip:s@127.0.0.1", call_id="c3", branch="z9hG4bK-c3")
    proxy.receive(cancel, UAC, clock.now)
    (ok,) = sink.take_to("127.0.0.1", 5080)
    assert ok.status == 200 and ok.cseq[1] == "CANCEL"
    (c,) = sink.take_to("127.0.0.1", 5070)
    assert c.method == "CANCEL" and c.via.branch == inv.via.branch
    proxy.receive(uas.respond(c, 200), Peer(0, "127.0.0.1", 5070), clock.now)
    proxy.receive(
        uas.respond(inv, 487, "Request Terminated"), Peer(0, "127.0.0.1", 5070), clock.now
    )
    (ack,) = sink.take_to("127.0.0.1", 5070)
    assert ack.method == "ACK"
    (t,) = sink.take_to("127.0.0.1", 5080)
    assert t.status == 487
    assert proxy.stats.failovers == 0


def test_no_answer_gives_408_retransmitted_until_ack():
    proxy, sink, clock = make(dests=("sip:127.0.0.1:5070",))
    uac = UA("127.0.0.1", 5080)
    proxy.receive(uac.invite("sip:s@127.0.0.1", call_id="c4", branch="z9hG4bK-c4"), UAC, clock.now)
    for _ in range(5):
        proxy.handle_timer(clock.advance(0.5))
    up = sink.take_to("127.0.0.1", 5080)
    assert [m.status for m in up] == [100, 408, 408]  # Timer G retransmits the final
    ack = uac.request(
        "ACK", "sip:s@127.0.0.1", call_id="c4", branch="z9hG4bK-c4", to_tag=up[1].to_tag.decode()
    )
    proxy.receive(ack, UAC, clock.now)
    for _ in range(10):
        proxy.handle_timer(clock.advance(1))
    assert sink.take_to("127.0.0.1", 5080) == []
    clock.advance(60)
    proxy.handle_timer(clock.now)
    assert not proxy.server_txns and not proxy.client_txns


def _msg(sink: RecordingSink) -> list[Message]:
    return [m for _, m in sink.take()]


def test_call_flows_leave_no_reference_cycles():
    """The core frees its objects by refcount; the running proxy keeps the
    collector nearly idle (sipfleet.aio.app) and relies on this."""
    import gc

    proxy, sink, clock = make()
    uac, uas = UA("127.0.0.1", 5080), UA("127.0.0.1", 5070)
    gc.collect()
    gc.disable()
    try:
        for n in range(20):
            cid = f"gc{n}"
            proxy.receive(
                uac.invite("sip:s@127.0.0.1", call_id=cid, branch=f"z9hG4bK-{cid}"), UAC, clock.now
            )
            for port in (5070, 5071):
                for inv in sink.take_to("127.0.0.1", port):
                    ua, peer = UA("127.0.0.1", port), Peer(0, "127.0.0.1", port)
                    if n % 4 == 0:  # busy
                        proxy.receive(ua.respond(inv, 486, "Busy"), peer, clock.now)
                    elif n % 4 == 1:  # cancelled while ringing
                        proxy.receive(ua.respond(inv, 180, "Ringing"), peer, clock.now)
                        proxy.receive(
                            uac.request(
                                "CANCEL", "sip:s@127.0.0.1", call_id=cid, branch=f"z9hG4bK-{cid}"
                            ),
                            UAC,
                            clock.now,
                        )
                        proxy.receive(ua.respond(inv, 487, "Terminated"), peer, clock.now)
                    elif n % 4 == 2:  # 503: fails over to the other, which answers
                        proxy.receive(ua.respond(inv, 503, "Unavailable"), peer, clock.now)
                    else:  # answered, then BYE
                        proxy.receive(ua.respond(inv, 200), peer, clock.now)
                        bye = uac.request(
                            "BYE",
                            f"sip:127.0.0.1:{port}",
                            call_id=cid,
                            to_tag="uas-tag",
                            routes=["<sip:127.0.0.1:5060;lr>"],
                            cseq=2,
                        )
                        proxy.receive(bye, UAC, clock.now)
            for port in (5070, 5071):  # answer what failed over or was forwarded
                for m in sink.take_to("127.0.0.1", port):
                    if m.method in ("INVITE", "BYE", "CANCEL"):
                        proxy.receive(uas.respond(m, 200), Peer(0, "127.0.0.1", port), clock.now)
            sink.sent.clear()
        for _ in range(10):
            proxy.handle_timer(clock.advance(10))
        assert not proxy.server_txns and not proxy.client_txns and not len(proxy.dialogs)
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_options_to_the_proxy_is_answered_and_stopping_refuses_new_calls():
    proxy, sink, clock = make()
    uac = UA("127.0.0.1", 5080)
    proxy.receive(uac.request("OPTIONS", "sip:127.0.0.1:5060"), UAC, clock.now)
    (ok,) = sink.take_to("127.0.0.1", 5080)
    assert ok.status == 200 and ok.has(b"allow")
    assert sink.sent == []  # nothing went to a back end
    proxy.accepting = False  # graceful stop
    proxy.receive(uac.invite("sip:s@127.0.0.1"), UAC, clock.now)
    up = sink.take_to("127.0.0.1", 5080)
    assert [m.status for m in up] == [100, 503]
    assert up[1].get(b"retry-after") == b"30"
    assert sink.sent == []


def test_in_dialog_request_to_a_silent_hop_gets_408_after_first_response_timeout():
    proxy, sink, clock = make(first_response_timeout=1.0)
    uac = UA("127.0.0.1", 5080)
    # A dialog set up before a restart: unknown here, but our signed Route proves it.
    token = proxy.signer.token(b"dead", b"from-dead").decode()
    bye = uac.request(
        "BYE",
        "sip:127.0.0.1:5070",
        call_id="dead",
        to_tag="t",
        cseq=2,
        routes=[f"<sip:127.0.0.1:5060;lr;sf={token}>"],
        branch="z9hG4bK-dead",
    )
    proxy.receive(bye, UAC, clock.now)
    assert [m.method for m in sink.take_to("127.0.0.1", 5070)] == ["BYE"]
    proxy.handle_timer(clock.advance(0.6))  # Timer E retransmits once
    assert [m.method for m in sink.take_to("127.0.0.1", 5070)] == ["BYE"]
    proxy.handle_timer(clock.advance(0.5))
    assert [m.status for m in sink.take_to("127.0.0.1", 5080)] == [408]
    for _ in range(10):
        proxy.handle_timer(clock.advance(10))
    assert sink.take_to("127.0.0.1", 5070) == []  # no more retransmissions
    assert not proxy.server_txns and not proxy.client_txns


def test_crlf_keepalive_datagrams_are_ignored():
    proxy, sink, clock = make()
    for ka in (b"\r\n\r\n", b"\r\n", b" "):
        proxy.receive(ka, UAC, clock.now)
    assert sink.sent == []
    assert proxy.stats.keepalives == 3 and proxy.stats.bad_msg_hdr == 0


def test_cancel_after_a_local_final_changes_nothing():
    """16.10: a CANCEL for an INVITE we answered ourselves (503 while shutting
    down) gets its 200 and nothing else: no second final, none counted."""
    proxy, sink, clock = make()
    proxy.accepting = False
    uac = UA("127.0.0.1", 5080)
    proxy.receive(uac.invite("sip:s@127.0.0.1", call_id="c9", branch="z9hG4bK-c9"), UAC, clock.now)
    assert [m.status for m in sink.take_to("127.0.0.1", 5080)] == [100, 503]
    cancel = uac.request("CANCEL", "sip:s@127.0.0.1", call_id="c9", branch="z9hG4bK-c9")
    proxy.receive(cancel, UAC, clock.now)
    (ok,) = sink.take_to("127.0.0.1", 5080)
    assert ok.status == 200 and ok.cseq[1] == "CANCEL"
    assert proxy.stats.local_replies == 2
    assert sink.take_to("127.0.0.1", 5070) == []
