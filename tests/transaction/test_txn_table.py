"""The bounded transaction tables (sipfleet.transaction.table): the factories,
the 17.1.3 / 17.2.3 keys, the bound and its counter, stream peers."""

from __future__ import annotations

import pytest

from sipfleet.proxy.core import Proxy, ProxySettings
from sipfleet.proxy.net import Listener, Peer
from sipfleet.proxy.router import RoundRobinRouter
from sipfleet.sip.message import Message, parse
from sipfleet.testing import UA, FakeClock, RecordingSink
from sipfleet.transaction.client import ClientTransaction
from sipfleet.transaction.server import TimerConfig
from sipfleet.transaction.table import TransactionTable, server_key
from sipfleet.transaction.timers import Timers

UAC = Peer(0, "127.0.0.1", 5080)
NEXT = Peer(0, "127.0.0.1", 5070)


def _ignore_response(txn: ClientTransaction, msg: Message, now: float) -> None:
    pass


def _ignore_failure(txn: ClientTransaction, code: int, now: float) -> None:
    pass


def table(limit: int) -> tuple[TransactionTable, RecordingSink, Timers, list[ClientTransaction]]:
    sink = RecordingSink()
    timers = Timers()
    done: list[ClientTransaction] = []
    return TransactionTable(sink, timers, TimerConfig(), limit, done.append), sink, timers, done


def new(
    t: TransactionTable, branch: str, method: str, reliable: bool = False
) -> ClientTransaction | None:
    return t.new_client(branch, method, reliable, b"x", NEXT, _ignore_response, _ignore_failure)


def test_client_factory_keys_and_bound() -> None:
    """17.1.3: (branch, CSeq method); a full table refuses all but a CANCEL."""
    t, _, _, _ = table(2)
    a = new(t, "z9hG4bK-a", "INVITE")
    assert a is not None and a.invite and a.key == ("z9hG4bK-a", "INVITE")
    assert new(t, "z9hG4bK-b", "OPTIONS") is not None
    assert new(t, "z9hG4bK-c", "INVITE") is None
    assert len(t.client) == 2
    cancel = new(t, "z9hG4bK-a", "CANCEL")
    assert cancel is not None and not cancel.invite and len(t.client) == 3


def test_client_done_leaves_the_table_and_its_peer() -> None:
    """A finished transaction over a stream leaves the table and the peer's set;
    the transaction user hears of it."""
    t, _, timers, done = table(10)
    txn = new(t, "z9hG4bK-s", "OPTIONS", reliable=True)
    assert txn is not None and t.by_peer == {NEXT: {txn}}
    txn.start(0.0)
    resp = parse(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-s\r\n"
        b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert t.client_for(resp) is txn
    txn.receive(resp, 0.1)  # reliable: Timer K is 0, the transaction ends now
    timers.run(0.2)
    assert not t.client and not t.by_peer and done == [txn]
    assert t.transport_failed(NEXT) is None


def test_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        table(0)


def test_full_server_table_answers_503_and_counts() -> None:
    """A new request beyond the bound gets 503 with Retry-After, statelessly;
    a retransmission of a request the table holds still matches it."""
    sink = RecordingSink()
    proxy = Proxy(
        [Listener(0, "udp", "127.0.0.1", 5060)],
        sink,
        RoundRobinRouter(["sip:127.0.0.1:5070"]),
        ProxySettings(max_transactions=1),
    )
    clock = FakeClock()
    ua = UA("127.0.0.1", 5080)
    first = ua.invite("sip:s@127.0.0.1", call_id="t1", branch="z9hG4bK-t1")
    proxy.receive(first, UAC, clock.now)
    assert [m.status for m in sink.take_to("127.0.0.1", 5080)] == [100]
    proxy.receive(ua.invite("sip:s@127.0.0.1", call_id="t2", branch="z9hG4bK-t2"), UAC, clock.now)
    (refused,) = sink.take_to("127.0.0.1", 5080)
    assert refused.status == 503 and refused.get(b"retry-after") == b"5"
    assert proxy.stats.txn_refused == 1
    assert len(proxy.server_txns) == 1 and len(sink.take_to("127.0.0.1", 5070)) == 1
    proxy.receive(first, UAC, clock.advance(0.5))
    assert [m.status for m in sink.take_to("127.0.0.1", 5080)] == [100]
    assert proxy.stats.txn_refused == 1 and proxy.stats.retransmissions == 1
    key = server_key(parse(first), "INVITE")
    assert key == ("z9hG4bK-t1", "127.0.0.1", 5080, "INVITE")
    assert key in proxy.server_txns


def test_full_client_table_fails_the_branch_with_503() -> None:
    """No room for a client transaction: the request is answered 503 (local)."""
    sink = RecordingSink()
    proxy = Proxy(
        [Listener(0, "udp", "127.0.0.1", 5060)],
        sink,
        RoundRobinRouter(["sip:127.0.0.1:5070"]),
        ProxySettings(max_transactions=1),
    )
    clock = FakeClock()
    ua = UA("127.0.0.1", 5080)
    assert proxy.originate(
        "OPTIONS",
        "sip:127.0.0.1:5070",
        proxy.router.route(parse(ua.invite("sip:s@x", call_id="o")), UAC, clock.now).targets[0],
        (b"From: <sip:p@x>;tag=p", b"To: <sip:q@x>", b"Call-ID: probe", b"CSeq: 1 OPTIONS"),
        lambda code, msg, now: None,
        clock.now,
    )
    proxy.receive(ua.invite("sip:s@127.0.0.1", call_id="t3", branch="z9hG4bK-t3"), UAC, clock.now)
    assert [m.status for m in sink.take_to("127.0.0.1", 5080)] == [100, 503]
    assert proxy.stats.txn_refused == 1


def test_stream_peers_are_forgotten_when_their_transactions_end() -> None:
    """Client transactions over TCP are listed by peer (a transport failure
    reaches them) only while they live: a finished call leaves no entry."""
    sink = RecordingSink()
    proxy = Proxy(
        [Listener(0, "tcp", "127.0.0.1", 5060)],
        sink,
        RoundRobinRouter(["sip:127.0.0.1:5070;transport=tcp"]),
        ProxySettings(),
    )
    clock = FakeClock()
    uac, uas = UA("127.0.0.1", 5080, "TCP"), UA("127.0.0.1", 5070, "TCP")
    for n in range(3):
        proxy.receive(uac.invite("sip:s@127.0.0.1", call_id=f"tcp{n}"), UAC, clock.now)
        (inv,) = sink.take_to("127.0.0.1", 5070)
        assert len(proxy.txns.by_peer[NEXT]) == 1
        proxy.receive(uas.respond(inv, 486, "Busy Here"), NEXT, clock.now)
        sink.sent.clear()
    proxy.handle_timer(clock.advance(1))  # reliable: Timer D is 0
    assert not proxy.client_txns and not proxy.txns.by_peer
    proxy.transport_failed(NEXT, clock.now)
    assert proxy.stats.transport_errors == 0  # nothing was waiting on it


def test_transactions_share_their_key_and_callbacks() -> None:
    """Memory per open transaction (tens of thousands at 1,000 calls/s): the
    table's key is the transaction's own tuple, and the table's clean-up
    callbacks are bound once, not once per transaction (each would be one
    more object the collector walks)."""
    t, _, _, _ = table(10)
    a = new(t, "z9hG4bK-k1", "INVITE")
    b = new(t, "z9hG4bK-k2", "BYE")
    assert a is not None and b is not None
    for txn in (a, b):
        (key,) = [k for k, v in t.client.items() if v is txn]
        assert key is txn.key
    assert a.on_terminated is b.on_terminated
    s1 = t.new_server(("z9hG4bK-s1", "h", 5060, "INVITE"), True, False, UAC)
    s2 = t.new_server(("z9hG4bK-s2", "h", 5060, "BYE"), False, False, UAC)
    assert s1.on_terminated is s2.on_terminated
