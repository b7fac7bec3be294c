"""A [[trunk]]'s route: its calls go where the named [[route]] says, before
any match rule (the wiring of sipfleet.aio.app, on the pure core)."""

from __future__ import annotations

import pytest

from sipfleet.config import ConfigError, DispatcherConfig, RouteConfig, load_config
from sipfleet.config.security import to_settings
from sipfleet.dispatch import Dispatcher, parse_list
from sipfleet.dispatch.policy import DispatchRouter
from sipfleet.proxy.core import Proxy, ProxySettings
from sipfleet.proxy.net import Listener, Peer
from sipfleet.security.gate import Gate
from sipfleet.testing import UA, FakeClock, RecordingSink

CARRIER = Peer(0, "198.51.100.7", 5060)
TENANT = Peer(0, "203.0.113.40", 5060)


def test_trunk_route_wins_over_match_rules():
    cfg = load_config(
        overrides={
            "route": [
                {"name": "tenant-b", "sets": [2]},
                {"name": "default", "sets": [1]},
            ],
            "trunk": [
                {"name": "carrier", "source": ["198.51.100.0/28"]},
                {"name": "b", "source": ["203.0.113.40/32"], "route": "tenant-b"},
            ],
        }
    )
    clock, sink = FakeClock(), RecordingSink()
    text = "1 sip:127.0.0.1:5070 0 0\n2 sip:127.0.0.1:5072 0 0\n"
    dispatcher = Dispatcher(
        DispatcherConfig(ping_interval=0).to_settings(), parse_list(text), now=clock.now
    )
    # The first rule matches everything: only the trunk's route sends set 2 calls.
    router = DispatchRouter(dispatcher, [RouteConfig(name="default", sets=[1]).to_settings(), *[
        RouteConfig(name="tenant-b", sets=[2]).to_settings()]], load=None)  # type: ignore[arg-type]  # fmt: skip
    proxy = Proxy([Listener(0, "udp", "127.0.0.1", 5060)], sink, router, ProxySettings())
    router.load = proxy.dialogs
    gate = Gate(to_settings(cfg.security, cfg.trunk, cfg.overload, cfg.limits))
    proxy.gate = gate

    def trunk_route(source: Peer) -> str | None:
        trunk = gate.trunks.match(source.host, source.port, "udp")
        return trunk.route if trunk is not None else None

    router.source_route = trunk_route
    for peer, port in ((CARRIER, 5070), (TENANT, 5072)):
        proxy.receive(UA(peer.host, peer.port).invite("sip:1@127.0.0.1"), peer, clock.now)
        assert [m.method for m in sink.take_to("127.0.0.1", port)] == ["INVITE"]


def test_trunk_config_is_checked():
    with pytest.raises(ConfigError, match="names route 'nope'"):
        load_config(overrides={"trunk": [{"name": "t", "source": ["10.0.0.0/8"], "route": "nope"}]})
    with pytest.raises(ConfigError, match="bad CIDR"):
        load_config(overrides={"trunk": [{"name": "t", "source": ["10.0.0.300/8"]}]})
    with pytest.raises(ConfigError, match="untrusted"):
        load_config(overrides={"security": {"untrusted": "404"}})
    cfg = load_config(overrides={"trunk": [{"name": "t", "source": ["10.0.0.0/8"]}]})
    assert to_settings(cfg.security, cfg.trunk, cfg.overload, cfg.limits).pike_density == 16
    cfg = load_config()
    assert to_settings(cfg.security, cfg.trunk, cfg.overload, cfg.limits).pike_density == 4000
