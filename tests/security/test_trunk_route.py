"""A [[trunk]]'s route: its calls go where the named [[route]] says, before
any match rule (the server's wiring, sipfleet.core.factory, on the pure core)."""

from __future__ import annotations

import asyncio

import pytest

from sipfleet.aio.events import EventBus
from sipfleet.config import ConfigError, DispatcherConfig, load_config
from sipfleet.config.security import to_settings
from sipfleet.core.factory import build_core
from sipfleet.dispatch import parse_list
from sipfleet.proxy.net import Peer
from sipfleet.testing import UA, FakeClock, RecordingSink

CARRIER = Peer(0, "198.51.100.7", 5060)
TENANT = Peer(0, "203.0.113.40", 5060)


def test_trunk_route_wins_over_match_rules():
    cfg = load_config(
        overrides={
            # The first rule matches everything: only the trunk's route sends set 2 calls.
            "route": [
                {"name": "default", "sets": [1]},
                {"name": "tenant-b", "sets": [2]},
            ],
            "trunk": [
                {"name": "carrier", "source": ["198.51.100.0/28"]},
                {"name": "b", "source": ["203.0.113.40/32"], "route": "tenant-b"},
            ],
        }
    )
    clock, sink = FakeClock(), RecordingSink()
    text = "1 sip:127.0.0.1:5070 0 0\n2 sip:127.0.0.1:5072 0 0\n"
    # The server's wiring (sipfleet.core.factory): gate, trusted back ends, trunk routes.
    core = build_core(
        cfg.model_copy(update={"dispatcher": DispatcherConfig(ping_interval=0)}),
        parse_list(text),
        {},
        now=lambda: clock.now,
        sink=sink,
        events=EventBus(),
        lock=asyncio.Lock,
    )
    proxy = core.proxy
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
