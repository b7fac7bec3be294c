"""[cluster] in the pure core: Record-Route names the shared address, every node
takes it as its own, and a BYE of a dialog set up through another node is
relayed on the signature and reported to the cluster hook (once, BYE only)."""

from __future__ import annotations

import asyncio
import re

import pytest

from sipfleet.aio.events import EventBus
from sipfleet.config import Config, DispatcherConfig, ListenSpec, ProxyConfig
from sipfleet.config.cluster import ClusterConfig
from sipfleet.core.factory import build_core
from sipfleet.dispatch import parse_list
from sipfleet.proxy.net import Peer
from sipfleet.sip.message import Message, parse
from sipfleet.testing import UA, FakeClock, RecordingSink

UAC = Peer(0, "192.0.2.10", 5080)
VIP = ("sip.example.net", 5060)
KEY = b"k" * 32


class Node:
    def __init__(self, port: int) -> None:
        self.clock = FakeClock()
        self.sink = RecordingSink()
        cfg = Config(
            proxy=ProxyConfig(listen=[ListenSpec(proto="udp", host="127.0.0.1", port=port)]),
            dispatcher=DispatcherConfig(ping_interval=0),
            cluster=ClusterConfig(advertise=f"{VIP[0]}:{VIP[1]}"),  # Record-Route and alias
        )
        # The server's wiring (sipfleet.core.factory), no sockets.
        self.proxy = build_core(
            cfg,
            parse_list("1 sip:127.0.0.1:5070 0 0\n"),
            {},
            now=lambda: self.clock.now,
            sink=self.sink,
            events=EventBus(),
            lock=asyncio.Lock,
            route_key=KEY,
        ).proxy
        self.foreign: list[bytes] = []
        self.proxy.on_foreign_bye = lambda m: self.foreign.append(m.call_id)

    def send(self, data: bytes, peer: Peer) -> None:
        self.proxy.receive(data, peer, self.clock.now)

    def out(self, port: int) -> list[Message]:
        got = [parse(d) for p, d in self.sink.sent if p.port == port]
        self.sink.sent = [(p, d) for p, d in self.sink.sent if p.port != port]
        return got


def test_a_bye_through_another_node_is_relayed_and_reported() -> None:
    a, b = Node(5060), Node(5062)
    uac = UA("192.0.2.10", 5080)
    a.send(uac.invite("sip:svc@sip.example.net", call_id="c1"), UAC)
    (inv,) = a.out(5070)
    rr = inv.get(b"record-route")
    assert rr is not None and rr.startswith(b"<sip:sip.example.net:5060;lr;sf=")
    assert inv.via.port == 5060  # Via stays the node's own: its answers come back here
    a.send(UA("127.0.0.1", 5070).respond(inv, 200, to_tag="t1"), Peer(0, "127.0.0.1", 5070))
    ack = uac.request("ACK", "sip:127.0.0.1:5070", call_id="c1", to_tag="t1", routes=[rr.decode()])
    a.send(ack, UAC)
    assert [m.method for m in a.out(5070)] == ["ACK"]
    assert a.proxy.dialogs.load("sip:127.0.0.1:5070") == 1

    bye = uac.request(
        "BYE", "sip:127.0.0.1:5070", call_id="c1", to_tag="t1", routes=[rr.decode()], cseq=2
    )
    b.send(bye, UAC)
    assert [m.method for m in b.out(5070)] == ["BYE"]
    assert b.foreign == [b"c1"]
    # A BYE of a dialog the node holds is not reported; nor is anything but BYE.
    a.send(bye, UAC)
    assert [m.method for m in a.out(5070)] == ["BYE"]
    assert a.foreign == []
    assert a.proxy.dialogs.load("sip:127.0.0.1:5070") == 0
    info = uac.request(
        "INFO", "sip:127.0.0.1:5070", call_id="c1", to_tag="t1", routes=[rr.decode()], cseq=3
    )
    b.send(info, UAC)
    assert b.foreign == [b"c1"]


@pytest.mark.parametrize(
    ("value", "port", "want"),
    [
        ("", 5060, None),
        ("sip.example.net", 5070, ("sip.example.net", 5070)),
        ("sip.example.net:5080", 5070, ("sip.example.net", 5080)),
        ("[2001:db8::1]:5090", 5070, ("2001:db8::1", 5090)),
        ("[2001:db8::1]", 5070, ("2001:db8::1", 5070)),
    ],
)
def test_advertise_forms(value: str, port: int, want: tuple[str, int] | None) -> None:
    assert ClusterConfig(advertise=value).advertise_hostport(port) == want


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"redis": "http://x"}, "redis://"),
        ({"redis": "redis://x", "heartbeat": 5, "load_ttl": 5}, "load_ttl"),
        ({"advertise": "vip:notaport"}, "HOST[:PORT]"),
        ({"advertise": "vip:0"}, "HOST[:PORT]"),
        ({"key_prefix": "a*b"}, "key_prefix"),
    ],
)
def test_bad_cluster_config_is_refused(fields: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        ClusterConfig(**fields)  # type: ignore[arg-type]


def test_defaults_are_off() -> None:
    cfg = ClusterConfig()
    assert not cfg.enabled and cfg.load_ttl > cfg.heartbeat
