"""Which transaction a message belongs to: RFC 3261 17.2.3 (server side) and
17.1.3 (client side), seen through the proxy core with a fake clock."""

from __future__ import annotations

from sipfleet.proxy.core import Proxy, ProxySettings
from sipfleet.proxy.net import Listener, Peer
from sipfleet.proxy.router import RoundRobinRouter
from sipfleet.sip.message import Message
from sipfleet.testing import UA, FakeClock, RecordingSink

UAC = Peer(0, "127.0.0.1", 5080)
UAS = Peer(0, "127.0.0.1", 5070)


def make() -> tuple[Proxy, RecordingSink, FakeClock]:
    sink = RecordingSink()
    proxy = Proxy(
        [Listener(0, "udp", "127.0.0.1", 5060)],
        sink,
        RoundRobinRouter(["sip:127.0.0.1:5070"]),
        ProxySettings(),
    )
    return proxy, sink, FakeClock()


def invite(
    call_id: str, branch: str, ua: UA | None = None, cseq: int = 1, from_tag: str | None = None
) -> bytes:
    data = (ua or UA("127.0.0.1", 5080)).invite(
        "sip:s@127.0.0.1", call_id=call_id, branch=branch, cseq=cseq
    )
    if from_tag is not None:
        data = data.replace(f";tag=from-{call_id}".encode(), f";tag={from_tag}".encode())
    return data


def forwarded(sink: RecordingSink) -> list[Message]:
    return sink.take_to("127.0.0.1", 5070)


def test_retransmitted_invite_matches_its_server_transaction() -> None:
    """RFC 3261 17.2.3: same branch (magic cookie), sent-by and method: the same
    transaction; the retransmission gets the last provisional, nothing goes on."""
    proxy, sink, clock = make()
    data = invite("k1", "z9hG4bK-k1")
    proxy.receive(data, UAC, clock.now)
    assert len(forwarded(sink)) == 1
    assert [m.status for m in sink.take_to("127.0.0.1", 5080)] == [100]
    proxy.receive(data, UAC, clock.advance(0.5))
    assert forwarded(sink) == []
    assert [m.status for m in sink.take_to("127.0.0.1", 5080)] == [100]
    assert len(proxy.server_txns) == 1


def test_same_branch_from_another_sent_by_is_another_transaction() -> None:
    """RFC 3261 17.2.3: the sent-by of the top Via is part of the key: the same branch
    from another host:port is a new request."""
    proxy, sink, clock = make()
    proxy.receive(invite("k2", "z9hG4bK-k2"), UAC, clock.now)
    other = UA("127.0.0.1", 5081)
    proxy.receive(invite("k2b", "z9hG4bK-k2", ua=other), Peer(0, "127.0.0.1", 5081), clock.now)
    assert len(forwarded(sink)) == 2
    assert len(proxy.server_txns) == 2


def test_ack_for_a_non_2xx_matches_the_invite_transaction() -> None:
    """RFC 3261 17.2.3: an ACK matches the INVITE server transaction it acknowledges
    (method ACK matches INVITE); 17.2.1: it is absorbed and stops Timer G."""
    proxy, sink, clock = make()
    uac = UA("127.0.0.1", 5080)
    proxy.receive(invite("k3", "z9hG4bK-k3"), UAC, clock.now)
    (inv,) = forwarded(sink)
    proxy.receive(UA("127.0.0.1", 5070).respond(inv, 486, "Busy Here"), UAS, clock.now)
    assert [m.method for m in forwarded(sink)] == ["ACK"]  # the hop-by-hop ACK downstream
    up = sink.take_to("127.0.0.1", 5080)
    assert [m.status for m in up] == [100, 486]
    ack = uac.request(
        "ACK", "sip:s@127.0.0.1", call_id="k3", branch="z9hG4bK-k3", to_tag=up[1].to_tag.decode()
    )
    proxy.receive(ack, UAC, clock.now)
    for _ in range(10):
        proxy.handle_timer(clock.advance(1.0))
    assert forwarded(sink) == []  # not forwarded: the transaction absorbed it
    assert sink.take_to("127.0.0.1", 5080) == []  # and the 486 is no longer resent


def test_cancel_is_its_own_transaction_with_the_invites_branch() -> None:
    """RFC 3261 17.2.3 / 9.2: CANCEL carries the INVITE's branch but is a transaction
    of its own (the method is part of the key); 16.10: it is answered 200 at once."""
    proxy, sink, clock = make()
    uac = UA("127.0.0.1", 5080)
    proxy.receive(invite("k4", "z9hG4bK-k4"), UAC, clock.now)
    forwarded(sink)
    sink.take_to("127.0.0.1", 5080)
    cancel = uac.request("CANCEL", "sip:s@127.0.0.1", call_id="k4", branch="z9hG4bK-k4")
    proxy.receive(cancel, UAC, clock.now)
    (ok,) = sink.take_to("127.0.0.1", 5080)
    assert ok.status == 200 and ok.cseq[1] == "CANCEL"
    assert len(proxy.server_txns) == 2


def test_rfc2543_requests_match_by_dialog_and_cseq() -> None:
    """RFC 3261 17.2.3: without the magic cookie, a retransmission matches by
    Request-URI, To tag, From tag, Call-ID, CSeq and top Via."""
    proxy, sink, clock = make()
    data = invite("k5", "old-branch-k5")
    proxy.receive(data, UAC, clock.now)
    assert len(forwarded(sink)) == 1
    proxy.receive(data, UAC, clock.advance(0.5))
    assert forwarded(sink) == []
    # Another CSeq (or From tag) is another transaction.
    proxy.receive(invite("k5", "old-branch-k5", cseq=2), UAC, clock.now)
    proxy.receive(invite("k5", "old-branch-k5", from_tag="other"), UAC, clock.now)
    assert len(forwarded(sink)) == 2


def test_responses_match_client_transactions_by_branch_and_cseq_method() -> None:
    """RFC 3261 17.1.3: a response matches the client transaction whose branch is in
    its top Via AND whose method is in its CSeq: a CANCEL's answer shares the branch
    of the INVITE but must not end the INVITE transaction."""
    proxy, sink, clock = make()
    uac, uas = UA("127.0.0.1", 5080), UA("127.0.0.1", 5070)
    proxy.receive(invite("k6", "z9hG4bK-k6"), UAC, clock.now)
    (inv,) = forwarded(sink)
    sink.take_to("127.0.0.1", 5080)
    proxy.receive(uas.respond(inv, 180, "Ringing"), UAS, clock.now)
    sink.take_to("127.0.0.1", 5080)
    proxy.receive(
        uac.request("CANCEL", "sip:s@127.0.0.1", call_id="k6", branch="z9hG4bK-k6"),
        UAC,
        clock.now,
    )
    sink.take_to("127.0.0.1", 5080)
    (cancel,) = forwarded(sink)
    assert cancel.via.branch == inv.via.branch
    proxy.receive(uas.respond(cancel, 200), UAS, clock.now)
    # The 200 for CANCEL ended the CANCEL client transaction only: not relayed up.
    assert sink.take_to("127.0.0.1", 5080) == []
    assert proxy.client_txns[(inv.via.branch, "CANCEL")].status == 200
    assert proxy.client_txns[(inv.via.branch, "INVITE")].status == 180
    proxy.receive(uas.respond(inv, 487, "Request Terminated"), UAS, clock.now)
    assert [m.status for m in sink.take_to("127.0.0.1", 5080)] == [487]


def test_a_response_to_an_unknown_branch_matches_nothing() -> None:
    """RFC 3261 17.1.3: no matching client transaction: the response is not taken
    for one (16.7: a proxy forwards such stray responses statelessly, or drops them)."""
    proxy, sink, clock = make()
    proxy.receive(invite("k7", "z9hG4bK-k7"), UAC, clock.now)
    (inv,) = forwarded(sink)
    stray = (
        UA("127.0.0.1", 5070).respond(inv, 486).replace(inv.via.branch.encode(), b"z9hG4bK-unknown")
    )
    proxy.receive(stray, UAS, clock.now)
    txn = proxy.client_txns[(inv.via.branch, "INVITE")]
    assert txn.status == 0  # still waiting for its own answer
