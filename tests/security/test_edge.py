"""Edge security in the pure core (issue 11): trunks, bans, scanners, bounds,
shedding and the reflection bound, with a fake clock and no sockets."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from sipfleet.proxy.core import Proxy, ProxySettings
from sipfleet.proxy.net import Listener, Peer
from sipfleet.proxy.router import RoundRobinRouter
from sipfleet.security.bans import BanTable
from sipfleet.security.gate import Gate
from sipfleet.security.settings import SecuritySettings, TrunkSpec
from sipfleet.security.sources import SourceTable
from sipfleet.sip.build import make_response, set_server_header
from sipfleet.sip.message import parse
from sipfleet.testing import UA, FakeClock, RecordingSink

BACKEND = ("127.0.0.1", 5070)
TRUNK = Peer(0, "127.0.0.3", 5080)
OTHER = Peer(0, "127.0.0.2", 5090)


def make(gate_settings: SecuritySettings | None = None, **kw):
    sink = RecordingSink()
    clock = FakeClock()
    proxy = Proxy(
        [Listener(0, "udp", "127.0.0.1", 5060), Listener(1, "tcp", "127.0.0.1", 5060)],
        sink,
        RoundRobinRouter([f"sip:{BACKEND[0]}:{BACKEND[1]}"]),
        ProxySettings(**kw),
    )
    gate = Gate(gate_settings or SecuritySettings())
    gate.set_backends([BACKEND[0]])
    proxy.gate = gate
    return proxy, sink, clock, gate


def trunked(**kw):
    return SecuritySettings(trunks=[TrunkSpec("carrier", ["127.0.0.3/32"])], **kw)


def test_only_trunks_start_dialogs_403():
    proxy, sink, clock, gate = make(trunked())
    ua = UA(OTHER.host, OTHER.port)
    proxy.receive(ua.invite("sip:100@127.0.0.1"), OTHER, clock.now)
    (resp,) = sink.take_to(OTHER.host, OTHER.port)
    assert resp.status == 403
    assert sink.take_to(*BACKEND) == []
    assert not proxy.server_txns  # stateless: nothing kept
    assert gate.stats.untrusted == 1
    trunk = UA(TRUNK.host, TRUNK.port)
    proxy.receive(trunk.invite("sip:100@127.0.0.1"), TRUNK, clock.now)
    assert [m.status for m in sink.take_to(TRUNK.host, TRUNK.port)] == [100]
    (inv,) = sink.take_to(*BACKEND)
    assert inv.method == "INVITE"


def test_untrusted_drop_is_silent():
    proxy, sink, clock, gate = make(trunked(untrusted="drop"))
    proxy.receive(UA(OTHER.host, OTHER.port).invite("sip:1@x"), OTHER, clock.now)
    assert sink.sent == []
    assert gate.stats.untrusted == 1


def test_backend_in_dialog_bye_passes_with_trunks():
    proxy, sink, clock, gate = make(trunked())
    trunk, uas = UA(TRUNK.host, TRUNK.port), UA(*BACKEND)
    proxy.receive(trunk.invite("sip:100@127.0.0.1", call_id="d1"), TRUNK, clock.now)
    sink.take_to(TRUNK.host, TRUNK.port)
    (inv,) = sink.take_to(*BACKEND)
    proxy.receive(uas.respond(inv, 200), Peer(0, *BACKEND), clock.now)
    sink.take_to(TRUNK.host, TRUNK.port)
    # The back end hangs up: its BYE goes along the Record-Route to the trunk.
    bye = (
        b"BYE sip:sipp@127.0.0.3:5080 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-bye1\r\n"
        b"Route: <sip:127.0.0.1:5060;lr>\r\n"
        b"From: <sip:100@127.0.0.1>;tag=uas-tag\r\n"
        b"To: sipp <sip:sipp@127.0.0.3:5080>;tag=from-d1\r\n"
        b"Call-ID: d1\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    proxy.receive(bye, Peer(0, *BACKEND), clock.now)
    (fwd,) = sink.take_to(TRUNK.host, TRUNK.port)
    assert fwd.method == "BYE"
    assert gate.stats.untrusted == 0


def test_scanner_user_agent_banned_and_dropped():
    proxy, sink, clock, gate = make()
    ua = UA(OTHER.host, OTHER.port)
    msg = ua.request("OPTIONS", "sip:100@127.0.0.1", extra=["User-Agent: friendly-scanner"])
    proxy.receive(msg, OTHER, clock.now)
    assert sink.sent == []
    assert OTHER.host in gate.bans
    assert gate.stats.scanners == 1
    # Everything from it is dropped before parsing now, even a clean INVITE.
    proxy.receive(ua.invite("sip:100@127.0.0.1"), OTHER, clock.advance(1))
    assert sink.sent == []
    assert gate.stats.banned_drops == 1
    kinds = [k for k, _ in gate.take_events()]
    assert kinds == ["ban"]
    # Others are still served.
    proxy.receive(UA(TRUNK.host, TRUNK.port).invite("sip:1@127.0.0.1"), TRUNK, clock.now)
    assert [m.status for m in sink.take_to(TRUNK.host, TRUNK.port)] == [100]


def test_flood_banned_then_expires_and_doubles():
    proxy, sink, clock, gate = make(SecuritySettings(pike_density=16, ban_time=300))
    ua = UA(OTHER.host, OTHER.port)
    for _ in range(40):
        proxy.receive(ua.invite("sip:100@127.0.0.1"), OTHER, clock.advance(0.01))
    assert OTHER.host in gate.bans
    assert gate.stats.floods == 1
    forwarded = sink.take_to(*BACKEND)
    assert 14 <= len(forwarded) <= 17  # the density, not the flood
    ban = gate.bans.get(OTHER.host)
    assert ban is not None and ban.until - ban.since == 300
    clock.advance(301)
    gate.maintain(clock.now)
    assert OTHER.host not in gate.bans
    assert [k for k, _ in gate.take_events()] == ["ban", "unban"]
    for _ in range(40):
        proxy.receive(ua.invite("sip:100@127.0.0.1"), OTHER, clock.advance(0.01))
    again = gate.bans.get(OTHER.host)
    assert again is not None and again.until - again.since == 600  # a repeat offender


def test_trunks_and_backends_never_banned():
    proxy, _sink, clock, gate = make(trunked(pike_density=4))
    trunk = UA(TRUNK.host, TRUNK.port)
    for _ in range(50):
        proxy.receive(trunk.invite("sip:1@127.0.0.1"), TRUNK, clock.advance(0.001))
    assert len(gate.bans) == 0
    assert gate.ban(TRUNK.host, "rpc", clock.now) is None
    assert gate.ban(BACKEND[0], "rpc", clock.now) is None


def test_walking_users_is_a_scan():
    proxy, sink, clock, gate = make(SecuritySettings(scan_users=5))
    ua = UA(OTHER.host, OTHER.port)
    for ext in range(100, 110):
        reg = ua.request("REGISTER", "sip:127.0.0.1")
        reg = reg.replace(b"To: <sip:127.0.0.1>", b"To: <sip:%d@127.0.0.1>" % ext)
        proxy.receive(reg, OTHER, clock.advance(0.1))
    assert OTHER.host in gate.bans
    assert gate.stats.scans == 1
    assert len(sink.take_to(*BACKEND)) == 5


def test_invites_to_many_users_are_a_pbx_without_trunks():
    proxy, _sink, clock, gate = make(SecuritySettings(scan_users=5))
    ua = UA(OTHER.host, OTHER.port)
    for ext in range(100, 120):
        proxy.receive(ua.invite(f"sip:{ext}@127.0.0.1"), OTHER, clock.advance(0.1))
    assert len(gate.bans) == 0


def unanswered_packets(proxy, sink, clock, src: Peer) -> int:
    ua = UA(src.host, src.port)
    proxy.receive(ua.invite("sip:100@127.0.0.1"), src, clock.now)
    for _ in range(400):
        proxy.handle_timer(clock.advance(0.25))
    return len(sink.take_to(src.host, src.port))


def test_reflection_bound_for_unverified_sources():
    proxy, sink, clock, _ = make()
    # Without the gate's bound an unanswered INVITE sends a dozen packets back.
    plain, psink, pclock, _ = make()
    plain.gate = None
    assert unanswered_packets(plain, psink, pclock, OTHER) >= 10
    # With it: the 100 Trying and the final, once each.
    assert unanswered_packets(proxy, sink, clock, OTHER) == 2
    assert not proxy.server_txns and not proxy.client_txns


def test_verified_source_gets_retransmissions():
    proxy, sink, clock, gate = make()
    ua = UA(OTHER.host, OTHER.port)
    inv = ua.invite("sip:100@127.0.0.1", call_id="v1", branch="z9hG4bK-v1")
    proxy.receive(inv, OTHER, clock.now)
    (fwd,) = sink.take_to(*BACKEND)
    proxy.receive(UA(*BACKEND).respond(fwd, 486, "Busy"), Peer(0, *BACKEND), clock.now)
    assert [m.status for m in sink.take_to(OTHER.host, OTHER.port)] == [100, 486]
    ack = ua.request(
        "ACK", "sip:100@127.0.0.1", call_id="v1", branch="z9hG4bK-v1", to_tag="uas-tag"
    )
    proxy.receive(ack, OTHER, clock.now)
    assert not gate.quiet(OTHER.host)


def test_transaction_bound_and_memory_comes_back():
    """Unanswered INVITEs and MESSAGEs: open transactions stay under the bound,
    the rest get a stateless 503, everything is gone after Timer B/F/H, and
    the Python heap is back where it was (bench/unanswered.py: full size)."""
    bound = 1500
    proxy, sink, clock, gate = make(
        SecuritySettings(max_transactions=bound, shed_transactions=bound, pike_density=10**9)
    )
    ua = UA(OTHER.host, OTHER.port)

    def burst(n: int) -> int:
        peak = 0
        for i in range(n):
            proxy.receive(ua.invite("sip:100@127.0.0.1"), OTHER, clock.now)
            proxy.receive(ua.request("MESSAGE", "sip:100@127.0.0.1"), OTHER, clock.now)
            if i % 100 == 0:
                proxy.handle_timer(clock.advance(0.01))
                sink.sent.clear()
            peak = max(peak, len(proxy.server_txns))
        for _ in range(200):
            proxy.handle_timer(clock.advance(0.5))
            sink.sent.clear()
        return peak

    burst(bound)  # the tables reach their size once
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        refused = gate.stats.txn_limit + gate.stats.shed
        peak = burst(2000)
        gc.collect()
        after, high = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= bound
    assert gate.stats.txn_limit + gate.stats.shed - refused >= 4000 - bound
    assert not proxy.server_txns and not proxy.client_txns
    assert len(proxy.dialogs) == 0
    assert len(proxy.timers) == 0
    assert high - before > 2_000_000  # it did hold the transactions...
    assert after - before < 200_000, (before, high, after)  # ...and let them all go


def test_overload_sheds_new_invites_only_and_recovers():
    proxy, sink, clock, gate = make(SecuritySettings(max_lag=0.2, retry_after=7))
    ua = UA(TRUNK.host, TRUNK.port)
    gate.set_lag(0.5, clock.now)
    assert gate.overloaded
    proxy.receive(ua.invite("sip:1@127.0.0.1"), TRUNK, clock.now)
    (resp,) = sink.take_to(TRUNK.host, TRUNK.port)
    assert resp.status == 503 and resp.get(b"retry-after") == b"7"
    assert not proxy.server_txns
    # In-dialog requests go on.
    # (a dialog set up before: unknown here, so it carries our signed Route)
    token = proxy.signer.token(b"ovl", b"from-ovl").decode()
    bye = ua.request(
        "BYE",
        "sip:127.0.0.1:5070",
        call_id="ovl",
        to_tag="t",
        routes=[f"<sip:127.0.0.1:5060;lr;sf={token}>"],
        cseq=2,
    )
    proxy.receive(bye, TRUNK, clock.now)
    assert [m.method for m in sink.take_to(*BACKEND)] == ["BYE"]
    gate.set_lag(0.15, clock.now)  # under the bound, over half of it: still shedding
    assert gate.overloaded
    gate.set_lag(0.05, clock.now)
    assert not gate.overloaded
    proxy.receive(ua.invite("sip:1@127.0.0.1"), TRUNK, clock.now)
    assert [m.status for m in sink.take_to(TRUNK.host, TRUNK.port)] == [100]
    assert gate.stats.shed == 1 and gate.stats.shed_episodes == 1
    assert [e[1]["state"] for e in gate.take_events()] == ["on", "off"]


def test_no_server_header_by_default():
    msg = parse(UA("127.0.0.1", 5080).invite("sip:a@b"))
    assert b"Server:" not in make_response(msg, 404)
    set_server_header("edge")
    try:
        assert b"\r\nServer: edge\r\n" in make_response(msg, 404)
    finally:
        set_server_header(None)


def test_backend_agent_stripped_towards_callers():
    proxy, sink, clock, _gate = make(SecuritySettings(strip_backend_agent=True))
    ua = UA(TRUNK.host, TRUNK.port)
    proxy.receive(ua.invite("sip:1@127.0.0.1", call_id="s1"), TRUNK, clock.now)
    sink.take_to(TRUNK.host, TRUNK.port)
    (inv,) = sink.take_to(*BACKEND)
    resp = (
        UA(*BACKEND)
        .respond(inv, 200)
        .replace(b"Content-Length", b"Server: FreeSWITCH-1.10\r\nUser-Agent: x\r\nContent-Length")
    )
    proxy.receive(resp, Peer(0, *BACKEND), clock.now)
    (ok,) = sink.take_to(TRUNK.host, TRUNK.port)
    assert ok.status == 200 and not ok.has(b"server") and not ok.has(b"user-agent")
    assert ok.get(b"contact") is not None


@pytest.mark.parametrize("n", [3, 50])
def test_ban_table_bound_evicts_soonest(n):
    table = BanTable(300.0, 86400.0, max_bans=n)
    for i in range(n + 10):
        table.add(f"10.0.0.{i}", "x", float(i))
    assert len(table) == n
    assert table.evicted == 10
    assert "10.0.0.0" not in table and f"10.0.0.{n + 9}" in table


def test_source_table_bound():
    t = SourceTable(window=2.0, density=16, max_sources=100)
    for i in range(1000):
        t.hit(t.get(f"10.0.{i // 256}.{i % 256}", 0.0), 0.0)
    assert len(t) <= 100
    assert t.resets > 0


def test_trunk_port_and_transport():
    gate = Gate(
        SecuritySettings(trunks=[TrunkSpec("t", ["10.0.0.0/8"], port=5060, transport="tcp")])
    )
    assert gate.trunks.match("10.1.2.3", 5060, "tcp") is not None
    assert gate.trunks.match("10.1.2.3", 5061, "tcp") is None
    assert gate.trunks.match("10.1.2.3", 5060, "udp") is None
    assert gate.trunks.match("11.1.2.3", 5060, "tcp") is None


def test_a_sweep_of_banned_sources_does_not_flood_the_events():
    proxy, _sink, clock, gate = make()
    for i in range(500):
        src = Peer(0, f"10.9.{i // 250}.{i % 250}", 5060)
        msg = UA(src.host, 5060).request("OPTIONS", "sip:1@127.0.0.1", extra=["User-Agent: sipcli"])
        proxy.receive(msg, src, clock.now)
    assert len(gate.bans) == 500  # every one banned...
    assert len(gate.take_events()) == 20  # ...but 20 events (log lines, webhooks) a second
    assert gate.stats.events_dropped == 480
    clock.advance(1.0)
    gate.ban("10.10.0.1", "rpc", clock.now)
    assert len(gate.take_events()) == 1
