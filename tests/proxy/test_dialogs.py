"""The dialog table and call-load, driven through the whole pure core
(proxy + dispatcher + router) with a fake clock."""

from __future__ import annotations

import asyncio
import random

import pytest

from sipfleet.aio.events import EventBus
from sipfleet.config import Config, DispatcherConfig, ListenSpec, ProxyConfig, RouteConfig
from sipfleet.core.factory import build_core
from sipfleet.dispatch import parse_list
from sipfleet.proxy.net import Peer
from sipfleet.sip.message import Message
from sipfleet.testing import UA, FakeClock, RecordingSink

UAC = Peer(0, "127.0.0.1", 5080)
RR = "<sip:127.0.0.1:5060;lr>"


class Net:
    """A proxy over a dispatcher, and helpers to play the UAC and the UASes."""

    def __init__(self, text: str, routes: list[RouteConfig] | None = None, **cfg: object) -> None:
        self.clock = FakeClock()
        self.sink = RecordingSink()
        cfg.setdefault("ping_interval", 0)
        config = Config(
            proxy=ProxyConfig(
                listen=[ListenSpec(proto="udp", host="127.0.0.1", port=5060)],
                first_response_timeout=2.0,
                dialog_lifetime=3600,
            ),
            dispatcher=DispatcherConfig(**cfg),  # type: ignore[arg-type]
            route=routes or [],
        )
        # The server's wiring (sipfleet.core.factory), no sockets.
        self.core = build_core(
            config,
            parse_list(text),
            {},
            now=lambda: self.clock.now,
            sink=self.sink,
            events=EventBus(),
            lock=asyncio.Lock,
        )
        self.dispatcher = self.core.dispatcher
        self.router = self.core.router
        self.proxy = self.core.proxy
        self.uac = UA("127.0.0.1", 5080)

    def send(self, data: bytes, peer: Peer) -> None:
        self.proxy.receive(data, peer, self.clock.now)

    def tick(self, seconds: float) -> None:
        self.proxy.handle_timer(self.clock.advance(seconds))

    def at(self, port: int) -> list[Message]:
        return self.sink.take_to("127.0.0.1", port)

    def loads(self) -> dict[str, int]:
        return dict(self.proxy.dialogs.loads)


def uas(port: int) -> tuple[UA, Peer]:
    return UA("127.0.0.1", port), Peer(0, "127.0.0.1", port)


THREE = "1 sip:127.0.0.1:5070 0 0 duid=a\n1 sip:127.0.0.1:5071 0 0 duid=b\n1 sip:127.0.0.1:5072 0 0 duid=c\n"


def test_round_robin_alternates_and_load_follows_dialogs():
    net = Net(THREE, algorithm=4)
    got = []
    for n in range(6):
        net.send(net.uac.invite("sip:s@127.0.0.1", call_id=f"rr{n}"), UAC)
        for port in (5070, 5071, 5072):
            for m in net.at(port):
                got.append(port)
                ua, peer = uas(port)
                net.send(ua.respond(m, 200, to_tag=f"t{n}"), peer)
        net.at(5080)
    assert sorted(got[:3]) == [5070, 5071, 5072] and got[:3] == got[3:]
    assert net.loads() == {"a": 2, "b": 2, "c": 2}
    # BYE from the caller for one call, from the callee for another.
    net.send(
        net.uac.request(
            "BYE", "sip:127.0.0.1:5070", call_id="rr0", to_tag="t0", routes=[RR], cseq=2
        ),
        UAC,
    )
    first = got[0]
    ua, peer = uas(first)
    bye = (
        f"BYE sip:sipp@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{first};branch=z9hG4bK-cb\r\n"
        f"Route: {RR}\r\nFrom: <sip:s@127.0.0.1>;tag=t3\r\nTo: sipp <sip:sipp@127.0.0.1:5080>;tag=from-rr3\r\n"
        f"Call-ID: rr3\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    net.send(bye, peer)
    # rr0 and rr3 both went to the first destination: both ended.
    assert net.loads() == {k: 2 for k in "abc" if k != {5070: "a", 5071: "b", 5072: "c"}[first]}
    assert len(net.proxy.dialogs) == 4


def test_call_load_never_exceeds_maxload():
    text = "1 sip:127.0.0.1:5070 0 0 duid=a;maxload=5\n1 sip:127.0.0.1:5071 0 0 duid=b;maxload=5\n"
    net = Net(text, algorithm=10)
    for n in range(12):
        net.send(net.uac.invite("sip:s@127.0.0.1", call_id=f"ml{n}"), UAC)
        for port in (5070, 5071):
            for m in net.at(port):
                ua, peer = uas(port)
                net.send(ua.respond(m, 180, "Ringing", to_tag=f"t{n}"), peer)
        assert all(v <= 5 for v in net.loads().values())
    up = net.at(5080)
    assert sum(1 for m in up if m.status == 503) == 2  # the 11th and 12th: every destination full
    assert net.loads() == {"a": 5, "b": 5}


def test_failover_moves_load_and_failures_end_dialogs():
    text = THREE.replace(" 0 0 duid=a", " 0 30 duid=a").replace(" 0 0 duid=b", " 0 20 duid=b")
    net = Net(text, algorithm=8)  # serial, highest priority first: 5070, 5071, 5072
    net.send(net.uac.invite("sip:s@127.0.0.1", call_id="fo"), UAC)
    (inv,) = net.at(5070)
    assert net.loads() == {"a": 1}
    ua, peer = uas(5070)
    net.send(ua.respond(inv, 503, "Unavailable"), peer)
    (_inv2,) = net.at(5071)
    assert net.loads() == {"b": 1}
    net.tick(2.1)  # 5071 never answers: first-response timeout
    (inv3,) = [m for m in net.at(5072) if m.method == "INVITE"]
    assert net.loads() == {"c": 1}
    ua, peer = uas(5072)
    net.send(ua.respond(inv3, 486, "Busy Here"), peer)
    assert net.loads() == {}
    assert len(net.proxy.dialogs) == 0
    assert [m.status for m in net.at(5080)] == [100, 486]


def test_dialog_expires_when_bye_never_comes():
    net = Net(THREE, algorithm=4)
    net.send(net.uac.invite("sip:s@127.0.0.1", call_id="exp"), UAC)
    (inv,) = net.at(5070) or net.at(5071) or net.at(5072)
    port = inv.via.port  # unused, the request went to one of the three
    for p in (5070, 5071, 5072):
        net.at(p)
    ua, peer = uas(5070)
    net.send(ua.respond(inv, 200), peer)
    net.send(
        net.uac.request("ACK", "sip:127.0.0.1:5070", call_id="exp", to_tag="uas-tag", routes=[RR]),
        UAC,
    )
    assert len(net.proxy.dialogs) == 1
    net.tick(3599)
    assert len(net.proxy.dialogs) == 1
    net.tick(2)
    assert len(net.proxy.dialogs) == 0 and net.loads() == {}
    assert net.proxy.dialogs.expired == 1
    del port


def test_no_usable_destination_gives_503_with_retry_after():
    net = Net("1 sip:127.0.0.1:5070 1 0\n", algorithm=4)  # flag 1: inactive
    net.send(net.uac.invite("sip:s@127.0.0.1", call_id="none"), UAC)
    up = net.at(5080)
    assert [m.status for m in up] == [100, 503]
    assert up[1].get(b"retry-after") == b"5"


def test_routes_by_header_and_source():
    text = THREE + "2 sip:127.0.0.1:5090 0 0 duid=t\n"
    routes = [
        RouteConfig(
            name="tenant", match={"header": {"name": "X-Tenant", "value": "^acme$"}}, sets=[2]
        ),
        RouteConfig(name="trunk", match={"source": ["10.0.0.0/8"]}, sets=[2]),
        RouteConfig(name="default", sets=[1], algorithm=8),
    ]
    net = Net(text.replace(" 0 0 duid=a", " 0 30 duid=a"), routes=routes)
    net.send(net.uac.invite("sip:s@127.0.0.1", extra=["X-Tenant: acme"]), UAC)
    assert [m.method for m in net.at(5090)] == ["INVITE"]
    net.send(net.uac.invite("sip:s@127.0.0.1", extra=["X-Tenant: other"]), UAC)
    assert [m.method for m in net.at(5070)] == ["INVITE"]
    net.send(UA("10.1.2.3", 5060).invite("sip:s@127.0.0.1"), Peer(0, "10.1.2.3", 5060))
    assert [m.method for m in net.at(5090)] == ["INVITE"]


@pytest.mark.parametrize(("seed", "calls"), [(1, 50_000), (2, 5_000)])
def test_load_equals_open_dialogs_after_random_calls(seed: int, calls: int) -> None:
    """Random hang-ups from both sides, busy, 503 failover, no answer, CANCEL,
    never-BYE expiry: at every step the table matches the calls still open,
    and at the end every load is zero."""
    rng = random.Random(seed)
    text = "".join(f"1 sip:127.0.0.1:{5070 + i} 0 0 duid=m{i};maxload=400\n" for i in range(4))
    net = Net(text, algorithm=10)
    net.proxy.dialogs.lifetime = 30.0
    ports = [5070 + i for i in range(4)]
    open_calls: dict[str, tuple[int, Message]] = {}  # call-id -> (port, the INVITE it got)
    pending: list[tuple[str, int, Message]] = []
    for n in range(calls):
        cid = f"r{seed}-{n}"
        net.send(net.uac.invite("sip:s@127.0.0.1", call_id=cid, branch=f"z9hG4bK-{cid}"), UAC)
        for port in ports:
            for m in net.at(port):
                if m.method == "INVITE":
                    pending.append((cid, port, m))
        # Play the back ends for whatever INVITEs are waiting.
        while pending:
            c, port, inv = pending.pop()
            ua, peer = uas(port)
            roll = rng.random()
            if roll < 0.6:
                net.send(ua.respond(inv, 180, "Ringing", to_tag="t" + c), peer)
                if rng.random() < 0.08:  # the caller gives up while it rings
                    net.send(
                        net.uac.request(
                            "CANCEL", "sip:s@127.0.0.1", call_id=c, branch=f"z9hG4bK-{c}"
                        ),
                        UAC,
                    )
                    net.at(port)
                    net.send(ua.respond(inv, 487, "Request Terminated", to_tag="t" + c), peer)
                else:
                    net.send(ua.respond(inv, 200, to_tag="t" + c), peer)
                    open_calls[c] = (port, inv)
            elif roll < 0.7:
                net.send(ua.respond(inv, 486, "Busy Here", to_tag="t" + c), peer)
            elif roll < 0.8:
                net.send(ua.respond(inv, 503, "Unavailable"), peer)  # fails over
            elif roll < 0.85:
                pass  # never answers: the first-response timeout fails it over
            else:
                net.send(ua.respond(inv, 200, to_tag="t" + c), peer)
                open_calls[c] = (port, inv)
            for p in ports:
                for m in net.at(p):
                    if m.method == "INVITE":
                        pending.append((c, p, m))
        # Hang up some open calls, from either side; leave a few to expire.
        for c in list(open_calls)[: rng.randint(0, 3)]:
            port, inv = open_calls.pop(c)
            if rng.random() < 0.05:
                continue  # its BYE never comes: the dialog lifetime ends it
            if rng.random() < 0.5:
                net.send(
                    net.uac.request(
                        "BYE",
                        f"sip:127.0.0.1:{port}",
                        call_id=c,
                        to_tag="t" + c,
                        routes=[RR],
                        cseq=2,
                    ),
                    UAC,
                )
            else:
                bye = (
                    f"BYE sip:sipp@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-b{c}\r\n"
                    f"Route: {RR}\r\nFrom: <sip:s@127.0.0.1>;tag=t{c}\r\nTo: sipp <sip:sipp@127.0.0.1:5080>;tag=from-{c}\r\n"
                    f"Call-ID: {c}\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                ).encode()
                net.send(bye, Peer(0, "127.0.0.1", port))
        net.sink.sent.clear()
        if n % 50 == 0:
            net.tick(2.5)  # fire first-response timeouts, expiries
            for p in ports:
                for m in net.at(p):
                    if m.method == "INVITE":
                        pending.append(("late", p, m))
            pending.clear()
        table = net.proxy.dialogs
        counted: dict[str, int] = {}
        for dlg in table:
            if dlg.load_key is not None:
                counted[dlg.load_key] = counted.get(dlg.load_key, 0) + 1
        assert table.loads == counted
        assert all(v <= 400 for v in table.loads.values())
    for c, (port, _inv) in list(open_calls.items()):
        net.send(
            net.uac.request(
                "BYE", f"sip:127.0.0.1:{port}", call_id=c, to_tag="t" + c, routes=[RR], cseq=2
            ),
            UAC,
        )
    for _ in range(10):
        net.tick(10.0)  # expiries, and Timers F then J of BYEs nobody answered
    assert net.loads() == {}
    assert len(net.proxy.dialogs) == 0
    assert not net.proxy.server_txns and not net.proxy.client_txns
