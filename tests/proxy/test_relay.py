"""sipfleet is no open relay (issue 9, item 1), phantom dialogs end (item 2) and
keep-alives hold no state (item 3): the pure core with a fake clock.

The attacker is 203.0.113.66; the host it wants traffic relayed to is
198.51.100.9. Back ends are 127.0.0.1:5070/5071 (the dispatcher's set 1).
"""

from __future__ import annotations

import asyncio

import pytest

from sipfleet.aio.events import EventBus
from sipfleet.config import (
    Config,
    DispatcherConfig,
    ListenSpec,
    MatchConfig,
    ProxyConfig,
    RouteConfig,
)
from sipfleet.core.factory import build_core
from sipfleet.dispatch import parse_list
from sipfleet.proxy.dialogs import ANSWERED, CONFIRMED
from sipfleet.proxy.net import Peer
from sipfleet.sip.message import Message
from sipfleet.testing import UA, FakeClock, RecordingSink

EVIL = "198.51.100.9"
ATTACKER = Peer(0, "203.0.113.66", 5060)
UAC = Peer(0, "192.0.2.10", 5080)  # a carrier: not a back end
TWO = "1 sip:127.0.0.1:5070 0 0 duid=a\n1 sip:127.0.0.1:5071 0 0 duid=b\n"


class Net:
    def __init__(self, routes: list[RouteConfig] | None = None, **settings: object) -> None:
        self.clock = FakeClock()
        self.sink = RecordingSink()
        settings.setdefault("aliases", ["sip.example.net:5060"])
        settings.pop("timers", None)  # None: the defaults, as [proxy] t1/t2/t4 give
        cfg = Config(
            proxy=ProxyConfig(
                listen=[ListenSpec(proto="udp", host="127.0.0.1", port=5060)], **settings
            ),  # type: ignore[arg-type]
            dispatcher=DispatcherConfig(ping_interval=0),
            route=routes or [],
        )
        # The server's wiring (sipfleet.core.factory), no sockets.
        self.core = build_core(
            cfg,
            parse_list(TWO),
            {},
            now=lambda: self.clock.now,
            sink=self.sink,
            events=EventBus(),
            lock=asyncio.Lock,
        )
        self.dispatcher = self.core.dispatcher
        self.router = self.core.router
        self.proxy = self.core.proxy

    def send(self, data: bytes, peer: Peer) -> None:
        self.proxy.receive(data, peer, self.clock.now)

    def tick(self, seconds: float) -> None:
        self.proxy.handle_timer(self.clock.advance(seconds))

    def to(self, host: str, port: int | None = None) -> list[Message]:
        out = []
        keep = []
        for p, d in self.sink.sent:
            if p.host == host and (port is None or p.port == port):
                out.append(d)
            else:
                keep.append((p, d))
        self.sink.sent = keep
        from sipfleet.sip.message import parse

        return [parse(d) for d in out]

    def backends(self) -> list[Message]:
        return self.to("127.0.0.1", 5070) + self.to("127.0.0.1", 5071)


def attacker_ua() -> UA:
    return UA(ATTACKER.host, ATTACKER.port)


OWN_ROUTES = {
    "own address": "<sip:127.0.0.1:5060;lr>",
    "own alias": "<sip:sip.example.net;lr>",
}


@pytest.mark.parametrize("method", ["INVITE", "MESSAGE", "OPTIONS", "REGISTER", "SUBSCRIBE"])
@pytest.mark.parametrize("route", list(OWN_ROUTES.values()), ids=list(OWN_ROUTES))
def test_preloaded_route_naming_us_never_sends_to_the_request_uri(method, route):
    net = Net()
    data = attacker_ua().request(method, f"sip:1900555@{EVIL}", routes=[route], body="")
    net.send(data, ATTACKER)
    assert net.to(EVIL) == []
    got = net.backends()
    # Routed by the dispatcher (to a back end), Request-URI untouched, no Route left.
    assert [m.method for m in got] == [method]
    assert got[0].ruri == f"sip:1900555@{EVIL}" and not got[0].has(b"route")


@pytest.mark.parametrize(
    "routes",
    [
        ["<sip:localhost;lr>"],
        [f"<sip:{EVIL};lr>"],
        ["<sip:127.0.0.1:5060;lr>", f"<sip:{EVIL};lr>"],
        ["<sip:127.0.0.1:5060;lr>, <sip:evil.example.com;lr>", f"<sip:{EVIL}:5080;lr>"],
    ],
    ids=["localhost", "foreign", "ours then foreign", "several"],
)
@pytest.mark.parametrize("policy", ["remove", "refuse"])
def test_foreign_preloaded_routes_are_removed_or_refused(routes, policy):
    net = Net(preloaded_route=policy)
    net.send(attacker_ua().invite(f"sip:1900555@{EVIL}", routes=routes), ATTACKER)
    assert net.to(EVIL) == [] and net.to("evil.example.com") == []
    up = [m.status for m in net.to(ATTACKER.host)]
    if policy == "refuse":
        assert up == [100, 403] and net.backends() == []
        assert net.proxy.stats.relay_denied == 1
    else:
        (fwd,) = net.backends()
        assert not fwd.has(b"route") and up == [100]


def test_strict_routing_to_us_out_of_dialog_is_routed_by_the_dispatcher():
    net = Net()
    # R-URI is our Record-Route URI (a strict router upstream); the last Route the target.
    data = attacker_ua().invite("sip:127.0.0.1:5060;lr", routes=[f"<sip:{EVIL}>"])
    net.send(data, ATTACKER)
    assert net.to(EVIL) == []
    (fwd,) = net.backends()
    assert fwd.ruri == f"sip:{EVIL}" and not fwd.has(b"route")


def test_route_policy_by_source_cidr_is_not_bypassed_by_a_preloaded_route():
    trunk = RouteConfig(name="trunk", sets=[1], match=MatchConfig(source=["192.0.2.0/24"]))
    net = Net(routes=[trunk])
    net.send(attacker_ua().invite(f"sip:1900@{EVIL}", routes=["<sip:127.0.0.1:5060;lr>"]), ATTACKER)
    assert net.to(EVIL) == [] and net.backends() == []
    assert [m.status for m in net.to(ATTACKER.host)] == [100, 404]
    # The trunk itself is served.
    net.send(UA("192.0.2.10", 5060).invite("sip:1900@127.0.0.1"), Peer(0, "192.0.2.10", 5060))
    assert len(net.backends()) == 1


@pytest.mark.parametrize("method", ["BYE", "INVITE", "MESSAGE", "OPTIONS", "SUBSCRIBE"])
@pytest.mark.parametrize(
    "routes,status",
    [
        (["<sip:127.0.0.1:5060;lr>"], 481),  # ours, unsigned, no such dialog
        (["<sip:127.0.0.1:5060;lr;sf=AAAAAAAAAAAA>"], 403),  # ours, forged signature
        ([], 481),  # no Route at all
        ([f"<sip:{EVIL};lr>"], 481),  # a Route, not ours
    ],
    ids=["unsigned", "forged", "no-route", "foreign-route"],
)
def test_forged_to_tag_is_not_relayed(method, routes, status):
    net = Net()
    data = attacker_ua().request(method, f"sip:x@{EVIL}", to_tag="forged", routes=routes)
    net.send(data, ATTACKER)
    assert net.to(EVIL) == [] and net.backends() == []
    finals = [m.status for m in net.to(ATTACKER.host) if m.status >= 200]
    assert finals == [status]


def test_forged_ack_is_dropped():
    net = Net()
    for routes in (["<sip:127.0.0.1:5060;lr>"], ["<sip:127.0.0.1:5060;lr;sf=AAAAAAAAAAAA>"]):
        ack = attacker_ua().request("ACK", f"sip:x@{EVIL}", to_tag="forged", routes=routes)
        net.send(ack, ATTACKER)
    assert net.sink.sent == []
    assert net.proxy.stats.relay_denied == 2


def _call(net: Net, call_id: str, ack: bool = True) -> tuple[UA, Message, str]:
    """A call from the UAC to a back end, answered (and ACKed); returns the
    UAC, the forwarded INVITE and our signed Route value."""
    uac = UA("192.0.2.10", 5080)
    net.send(uac.invite("sip:svc@127.0.0.1:5060", call_id=call_id), UAC)
    (inv,) = net.backends()
    port = inv.via.port  # noqa: F841  (the 200 comes back from the back end that got it)
    uas = UA("127.0.0.1", 5070)
    net.send(uas.respond(inv, 200, to_tag=f"t-{call_id}"), Peer(0, "127.0.0.1", 5070))
    net.to("192.0.2.10", 5080)
    rr = inv.get(b"record-route")
    assert rr is not None and b";sf=" in rr
    if ack:
        net.send(
            uac.request(
                "ACK",
                "sip:127.0.0.1:5070",
                call_id=call_id,
                to_tag=f"t-{call_id}",
                routes=[rr.decode()],
            ),
            UAC,
        )
        assert [m.method for m in net.backends()] == ["ACK"]
    return uac, inv, rr.decode()


def test_known_dialog_goes_to_its_parties_not_elsewhere():
    net = Net()
    uac, _, rr = _call(net, "c1")
    bye = uac.request("BYE", f"sip:x@{EVIL}", call_id="c1", to_tag="t-c1", routes=[rr], cseq=2)
    net.send(bye, UAC)
    assert net.to(EVIL) == []
    assert [m.status for m in net.to("192.0.2.10", 5080)] == [403]
    ok = uac.request("BYE", "sip:127.0.0.1:5070", call_id="c1", to_tag="t-c1", routes=[rr], cseq=3)
    net.send(ok, UAC)
    assert [m.method for m in net.backends()] == ["BYE"]


def test_signed_route_carries_a_dialog_unknown_here_to_a_back_end_only():
    net = Net()
    uac, _, rr = _call(net, "c2")
    # The node restarts (same key): the dialog table is empty, the signature is not.
    key_net = Net()
    key_net.proxy.signer = net.proxy.signer
    bye = uac.request("BYE", "sip:127.0.0.1:5070", call_id="c2", to_tag="t-c2", routes=[rr], cseq=2)
    key_net.send(bye, UAC)
    assert [m.method for m in key_net.backends()] == ["BYE"]
    # The same signature cannot take a request from outside to a host of its choice ...
    evil = uac.request("BYE", f"sip:x@{EVIL}", call_id="c2", to_tag="t-c2", routes=[rr], cseq=3)
    key_net.send(evil, UAC)
    assert key_net.to(EVIL) == []
    assert [m.status for m in key_net.to("192.0.2.10", 5080)] == [403]
    # ... nor be reused for another Call-ID.
    other = uac.request("BYE", "sip:127.0.0.1:5070", call_id="c3", to_tag="t", routes=[rr], cseq=2)
    key_net.send(other, UAC)
    assert key_net.backends() == []
    assert [m.status for m in key_net.to("192.0.2.10", 5080)] == [403]
    # A back end may still reach the caller (callee -> caller BYE).
    back = UA("127.0.0.1", 5070).request(
        "BYE", "sip:sipp@192.0.2.10:5080", call_id="c2", to_tag="from-c2", routes=[rr], cseq=1
    )
    key_net.send(back, Peer(0, "127.0.0.1", 5070))
    assert [m.method for m in key_net.to("192.0.2.10", 5080)] == ["BYE"]


def test_unacked_2xx_ends_the_dialog_with_byes_both_ways():
    net = Net(timers=None)
    _call(net, "phantom", ack=False)
    dlg = next(iter(net.proxy.dialogs))
    assert dlg.state == ANSWERED
    assert net.proxy.dialogs.loads == {"a": 1} or net.proxy.dialogs.loads == {"b": 1}
    assert net.proxy.dialogs.stats_active()["answering"] == 1
    net.tick(31.9)
    assert len(net.proxy.dialogs) == 1
    net.tick(0.2)  # 64 * T1 = 32 s after the 2xx
    assert len(net.proxy.dialogs) == 0 and net.proxy.dialogs.loads == {}
    assert net.proxy.dialogs.no_ack == 1
    byes = [m for m in net.backends() if m.method == "BYE"] + [
        m for m in net.to("192.0.2.10", 5080) if m.is_request and m.method == "BYE"
    ]
    assert len(byes) == 2
    assert {m.ruri for m in byes} == {
        "sip:127.0.0.1:5070;transport=UDP",
        "sip:sipp@192.0.2.10:5080",
    }


def test_ack_confirms_and_persistence_waits_for_it():
    net = Net()
    confirmed = []
    net.proxy.dialogs.on_confirm = confirmed.append
    _call(net, "acked", ack=False)
    assert confirmed == []
    uac = UA("192.0.2.10", 5080)
    dlg = next(iter(net.proxy.dialogs))
    rr = "<sip:127.0.0.1:5060;lr>"
    net.send(
        uac.request("ACK", "sip:127.0.0.1:5070", call_id="acked", to_tag="t-acked", routes=[rr]),
        UAC,
    )
    assert dlg.state == CONFIRMED and confirmed == [dlg]
    net.tick(40)
    assert len(net.proxy.dialogs) == 1  # the lifetime runs, not the ACK timer


def test_flood_of_unacked_invites_leaves_no_load():
    net = Net()
    for n in range(500):
        _call(net, f"f{n}", ack=False)
        net.sink.sent.clear()
    assert len(net.proxy.dialogs) == 500
    net.tick(33)
    assert len(net.proxy.dialogs) == 0 and net.proxy.dialogs.loads == {}


def test_options_to_us_are_answered_without_a_transaction():
    net = Net()
    ua = attacker_ua()
    for n in range(1000):
        net.send(ua.request("OPTIONS", "sip:127.0.0.1:5060", call_id=f"ka{n}", body=""), ATTACKER)
    answers = net.to(ATTACKER.host)
    assert [m.status for m in answers] == [200] * 1000
    assert answers[0].get(b"allow") is not None and answers[0].to_tag is not None
    assert not net.proxy.server_txns and not net.proxy.client_txns
    # With a user part it is not for us: routed like any OPTIONS.
    net.send(ua.request("OPTIONS", "sip:alice@127.0.0.1:5060", body=""), ATTACKER)
    assert [m.method for m in net.backends()] == ["OPTIONS"]


def test_dialog_ids_survive_a_restore_and_are_not_reused():
    net = Net()
    for n in range(3):
        _call(net, f"id{n}")
    before = {(d.call_id, d.h_entry, d.h_id) for d in net.proxy.dialogs}
    restarted = Net()
    from sipfleet.proxy.dialogs import Dialog

    for call_id, _, h_id in before:
        dlg = Dialog(call_id, b"from-" + call_id, h_id, restarted.clock.now)
        dlg.state = CONFIRMED
        restarted.proxy.dialogs.restore(dlg, restarted.clock.now, 3600)
    after = {(d.call_id, d.h_entry, d.h_id) for d in restarted.proxy.dialogs}
    assert after == before  # h_entry is a CRC of the Call-ID, h_id kept
    _call(restarted, "new")
    ids = [(d.h_entry, d.h_id) for d in restarted.proxy.dialogs]
    assert len(set(ids)) == 4
    new = next(d for d in restarted.proxy.dialogs if d.call_id == b"new")
    assert new.h_id > max(h for _, _, h in before)
