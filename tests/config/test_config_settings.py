"""The typed config (sipfleet.config) and the plain settings the core runs on:
every field reaches the settings with its value, the defaults agree, and the
router describes its rules as the config spells them."""

from __future__ import annotations

import dataclasses

import pytest

from sipfleet.config import (
    DiscoveryConfig,
    DispatcherConfig,
    RouteConfig,
    load_config,
)
from sipfleet.dispatch import Dispatcher, parse_list
from sipfleet.dispatch.discovery import transport_of
from sipfleet.dispatch.policy import DispatchRouter
from sipfleet.dispatch.settings import (
    DiscoverySettings,
    DispatcherSettings,
    MatchSpec,
    RouteSpec,
)

PAIRS = [
    (DispatcherConfig, DispatcherSettings),
    (RouteConfig, RouteSpec),
    (DiscoveryConfig, DiscoverySettings),
]


@pytest.mark.parametrize(("model", "settings"), PAIRS)
def test_settings_have_the_fields_of_their_model(model: type, settings: type) -> None:
    assert set(model.model_fields) == {f.name for f in dataclasses.fields(settings)}


@pytest.mark.parametrize(("model", "settings"), PAIRS)
def test_settings_defaults_are_the_models(model: type, settings: type) -> None:
    for f in dataclasses.fields(settings):
        field = model.model_fields[f.name]
        if field.is_required():
            assert f.default is dataclasses.MISSING, f.name
            continue
        default = field.get_default(call_default_factory=True)
        mine = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        if isinstance(default, list):
            default = tuple(default)
        if hasattr(default, "to_settings"):
            default = default.to_settings()
        assert mine == default, f.name


def test_dispatcher_settings_carry_every_value() -> None:
    cfg = DispatcherConfig(
        algorithm=10,
        use_default=True,
        failover=False,
        hash_user_only=True,
        consistent_hash=True,
        ping_interval=3,
        ping_timeout=7,
        probe_timeout=0.5,
        ping_method="INFO",
        ping_from="sip:probe@lb.example",
        probing_mode=1,
        probing_threshold=3,
        inactive_threshold=2,
        ping_reply_codes="code=404;class=3",
        ping_latency_stats=False,
        list_runtime=False,
        latency_estimator_alpha=500,
        reload_delta=0,
        failover_codes=[503],
        max_failover_attempts=2,
        mark_on_failure="ip",
        skip_bad_destinations=True,
    )
    s = cfg.to_settings()
    for name, value in cfg.model_dump().items():
        got = getattr(s, name)
        assert (list(got) if isinstance(got, tuple) else got) == value, name
    assert s.reply_codes().accepts(404) and s.reply_codes().accepts(302)
    assert not s.reply_codes().accepts(405)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.algorithm = 4  # type: ignore[misc]


def test_routes_reach_the_router_as_the_config_spells_them() -> None:
    cfg = load_config(
        overrides={
            "dispatcher": {"ping_interval": 0, "failover_codes": [500, 503]},
            "route": [
                {
                    "name": "acme",
                    "match": {
                        "header": {"name": "X-Tenant", "value": "^acme$"},
                        "source": ["10.0.0.0/8"],
                        "method": ["INVITE"],
                        "ruri_user": "^1",
                    },
                    "sets": [2, 1],
                    "algorithm": 7,
                    "hash_header": "X-Account",
                    "limit": 3,
                    "failover_codes": [408],
                    "consistent_hash": True,
                    "retry_after": 0,
                },
                {"name": "default", "sets": [1]},
            ],
        },
        env={},
    )
    d = Dispatcher(cfg.dispatcher.to_settings(), parse_list("1 sip:127.0.0.1:5070 0 0\n"))
    router = DispatchRouter(d, [r.to_settings() for r in cfg.route], load=None)  # type: ignore[arg-type]
    assert router.describe() == [r.model_dump() for r in cfg.route]
    acme, default = router.policy.routes
    assert acme.failover == frozenset({408}) and acme.limit == 3
    assert default.failover == frozenset({500, 503}) and default.limit == 6
    assert acme.reject == (503, "Service Unavailable", ())
    # No [[route]]: the default route over the lowest set.
    router.set_routes([])
    assert router.describe() == [RouteConfig(name="default", sets=[1]).model_dump()]
    assert router.policy.routes[0].cfg == RouteSpec("default", (1,), MatchSpec())


def test_discovery_settings_name_the_entry() -> None:
    cfg = DiscoveryConfig.model_validate(
        {"set": 3, "srv": "_sips._tcp.media.example.", "attrs": "duid=${host}", "flags": 8}
    )
    s = cfg.to_settings()
    assert s.name == "_sips._tcp.media.example" and s.kind == "SRV"
    assert s.label == "set 3 SRV _sips._tcp.media.example"
    assert transport_of(s) == "tls" and s.flags == 8 and s.attrs == "duid=${host}"
    a = DiscoveryConfig.model_validate({"set": 1, "a": "pool.example", "port": 5080})
    assert a.to_settings().kind == "A" and transport_of(a.to_settings()) == "udp"
