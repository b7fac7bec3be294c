"""Fleet discovery by DNS, the pure side: answers -> members, joins and leaves,
drains, failures, and the specs a rebuild installs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sipfleet.config import ConfigError, DiscoveryConfig, DispatcherConfig, DnsConfig, load_config
from sipfleet.dispatch.destination import DestinationSpec
from sipfleet.dispatch.discovery import (
    Discovered,
    MemberState,
    SrvRecord,
    base_specs,
    diff,
    member_specs,
    merge,
    parse_server,
    spec_key,
    transport_of,
)
from sipfleet.dispatch.dispatcher import Dispatcher
from sipfleet.dispatch.settings import DiscoverySettings
from sipfleet.dispatch.snapshot import build_snapshot
from sipfleet.dispatch.target import DestTarget

SRV = "_sip._udp.media.fleet.test"


def cfg(**kw: object) -> DiscoverySettings:
    base: dict[str, object] = {"set": 1, "srv": SRV, "refresh": 1}
    base.update(kw)
    if "a" in kw:
        base.pop("srv")
    return DiscoveryConfig.model_validate(base).to_settings()


def uris(specs: list[DestinationSpec]) -> list[str]:
    return [s.uri for s in specs]


# -- config --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"srv": None}, "exactly one of srv"),
        ({"a": "media.fleet.test"}, "exactly one of srv"),  # srv and a
        ({"srv": "bad name"}, "bad DNS name"),
        ({"srv": "_sip._udp..fleet.test"}, "bad DNS name"),
        ({"srv": None, "a": "."}, "bad DNS name"),
        ({"attrs": "duid=${pod}"}, "unknown or bad placeholder"),
        ({"attrs": "weight=500"}, "out of range"),
        ({"refresh": 0}, "greater than or equal"),
    ],
)
def test_bad_config_is_refused_with_a_clear_message(kw: dict[str, object], error: str) -> None:
    base: dict[str, object] = {"set": 1, "srv": SRV, **kw}
    with pytest.raises(ValidationError, match=error):
        DiscoveryConfig.model_validate(base)


def test_config_file_sections() -> None:
    c = load_config(
        overrides={
            "discovery": [{"set": 2, "srv": SRV, "refresh": 5, "attrs": "duid=${host}"}],
            "dns": {"servers": ["127.0.0.1:5353", "[::1]:53", "192.0.2.1"]},
        }
    )
    assert c.discovery[0].set == 2 and c.discovery[0].to_settings().name == SRV
    assert [parse_server(s) for s in c.dns.servers] == [
        ("127.0.0.1", 5353),
        ("::1", 53),
        ("192.0.2.1", 53),
    ]
    with pytest.raises(ConfigError, match=r"dns.servers.*not an IP address"):
        load_config(overrides={"dns": {"servers": ["dns.example:53"]}})
    assert DnsConfig().servers == []


@pytest.mark.parametrize(
    ("kw", "transport"),
    [
        ({"srv": "_sip._udp.x.test"}, "udp"),
        ({"srv": "_sip._tcp.x.test"}, "tcp"),
        ({"srv": "_sips._tcp.x.test"}, "tls"),
        ({"srv": "media.x.test"}, "udp"),
        ({"srv": "_sip._udp.x.test", "transport": "tcp"}, "tcp"),
        ({"a": "x.test"}, "udp"),
    ],
)
def test_transport_from_the_service_name(kw: dict[str, object], transport: str) -> None:
    assert transport_of(cfg(**kw)) == transport


# -- answers -> members ----------------------------------------------------------------


def test_every_address_of_every_target_is_a_member() -> None:
    records = [SrvRecord(10, 50, 5070, "b.fleet.test."), SrvRecord(10, 50, 5071, "A.fleet.test")]
    addrs = {"a.fleet.test": ["127.0.0.3", "127.0.0.2"], "b.fleet.test": ["127.0.0.4"]}
    specs, warnings = member_specs(cfg(attrs="duid=${host}-${ip}:${port}"), records, addrs)
    assert warnings == []
    # stable order: target, then address; one address and port once
    assert uris(specs) == ["sip:127.0.0.2:5071", "sip:127.0.0.3:5071", "sip:127.0.0.4:5070"]
    assert specs[0].attrs == "duid=a.fleet.test-127.0.0.2:5071;weight=25"
    assert specs[2].attrs == "duid=b.fleet.test-127.0.0.4:5070;weight=50"
    assert {s.set_id for s in specs} == {1}
    assert specs[0].description == f"discovered: SRV {SRV}"


def test_srv_priority_and_weight() -> None:
    records = [
        SrvRecord(0, 30, 5060, "a.t"),
        SrvRecord(0, 10, 5060, "b.t"),
        SrvRecord(1, 0, 5060, "c.t"),
    ]
    addrs = {"a.t": ["10.0.0.1"], "b.t": ["10.0.0.2"], "c.t": ["10.0.0.3"]}
    specs, _ = member_specs(cfg(priority=10), records, addrs)
    by_uri = {s.uri: s for s in specs}
    # RFC 2782: lower SRV priority is preferred; the dispatcher's higher one is
    assert by_uri["sip:10.0.0.1:5060"].priority == 10
    assert by_uri["sip:10.0.0.3:5060"].priority == 9
    assert by_uri["sip:10.0.0.1:5060"].attrs == "weight=75"
    assert by_uri["sip:10.0.0.2:5060"].attrs == "weight=25"
    assert by_uri["sip:10.0.0.3:5060"].attrs == ""  # only weight 0 in its priority
    r, _ = member_specs(cfg(srv_weight="rweight"), records[:2], addrs)
    assert [s.attrs for s in r] == ["rweight=75", "rweight=25"]
    off, _ = member_specs(cfg(srv_weight="off"), records[:2], addrs)
    assert [s.attrs for s in off] == ["", ""]
    mine, _ = member_specs(cfg(attrs="weight=5"), records[:2], addrs)
    assert [s.attrs for s in mine] == ["weight=5", "weight=5"]  # the template wins


def test_transport_ipv6_flags_and_a_names() -> None:
    records = [SrvRecord(0, 0, 5061, "a.t")]
    specs, _ = member_specs(
        cfg(srv="_sips._tcp.x.test", flags=8), records, {"a.t": ["2001:db8::1"]}
    )
    assert specs == [
        DestinationSpec(
            1, "sip:[2001:db8::1]:5061;transport=tls", 8, 0, "", "discovered: SRV _sips._tcp.x.test"
        )
    ]
    a = cfg(a="media.fleet.test.", port=5080, attrs="duid=${ip}")
    specs, _ = member_specs(
        a,
        [SrvRecord(0, 0, a.port, "media.fleet.test")],
        {"media.fleet.test": ["127.0.0.5", "127.0.0.4"]},
    )
    assert [(s.uri, s.attrs) for s in specs] == [
        ("sip:127.0.0.4:5080", "duid=127.0.0.4"),
        ("sip:127.0.0.5:5080", "duid=127.0.0.5"),
    ]


def test_targets_without_address_and_the_member_bound() -> None:
    records = [SrvRecord(0, 0, 5060 + i, f"t{i}.test") for i in range(5)]
    addrs = {f"t{i}.test": [f"10.0.0.{i}"] for i in range(4)}
    specs, warnings = member_specs(cfg(max_members=2), records, addrs)
    assert uris(specs) == ["sip:10.0.0.0:5060", "sip:10.0.0.1:5061"]
    assert warnings == ["t4.test has no address", "4 members, only the first 2 taken"]


# -- joins, leaves, drains, failures -------------------------------------------------------


def spec(port: int, attrs: str = "") -> DestinationSpec:
    return DestinationSpec(1, f"sip:127.0.0.1:{port}", 0, 0, attrs, "discovered")


def test_diff_by_set_and_uri() -> None:
    prev = {spec_key(s): s for s in (spec(1), spec(2), spec(3))}
    change = diff(prev, [spec(2), spec(3, "weight=9"), spec(4), spec(4)])
    assert change.joined == (spec(4),)
    assert change.left == (spec(1),)
    assert change.changed == (spec(3, "weight=9"),)
    assert not diff(prev, [spec(3), spec(1), spec(2)])


def test_a_member_that_leaves_drains_then_is_removed_and_may_come_back() -> None:
    e = Discovered(cfg(drain_timeout=30))
    first = e.apply([spec(1), spec(2)], now=0.0)
    assert first.joined == (spec(1), spec(2)) and not first.left
    change = e.apply([spec(2), spec(3)], now=1.0)
    assert change.joined == (spec(3),) and change.left == (spec(1),)
    assert [(m.spec.uri, m.state) for m in e.members.values()] == [
        ("sip:127.0.0.1:1", MemberState.DRAINING),
        ("sip:127.0.0.1:2", MemberState.ACTIVE),
        ("sip:127.0.0.1:3", MemberState.ACTIVE),
    ]
    assert e.specs() == [spec(1), spec(2), spec(3)]  # the draining one stays installed
    assert e.expired(30.9) == [] and [m.spec for m in e.expired(31.0)] == [spec(1)]
    assert e.remove(spec_key(spec(2))) is None  # active members are not removed
    # back before its drain ended: active again
    back = e.apply([spec(1), spec(2), spec(3)], now=2.0)
    assert back.joined == (spec(1),)
    assert all(m.state is MemberState.ACTIVE for m in e.members.values())
    e.apply([spec(2), spec(3)], now=3.0)
    removed = e.remove(spec_key(spec(1)))
    assert removed is not None and removed.since == 3.0
    assert e.specs() == [spec(2), spec(3)]


def test_a_failed_lookup_keeps_the_members_and_is_reported_rate_limited() -> None:
    e = Discovered(cfg())
    e.apply([spec(1)], now=0.0)
    reported = [e.fail("timeout", t, every=60.0) for t in (1.0, 2.0, 60.9, 61.0, 62.0, 121.0)]
    assert reported == [True, False, False, True, False, True]
    assert e.errors == 6 and e.lookups == 7 and e.last_error == "timeout"
    assert e.specs() == [spec(1)] and e.failing_since == 1.0
    e.apply([spec(1)], now=130.0)
    assert e.failing_since is None
    assert e.fail("SERVFAIL", 131.0, every=60.0)  # a new failure spell is reported at once


# -- what a rebuild installs -------------------------------------------------------------


def test_merge_leaves_a_stored_destination_to_the_store() -> None:
    stored = [DestinationSpec(1, "sip:127.0.0.1:2", 0, 5, "duid=mine")]
    a = Discovered(cfg())
    a.apply([spec(1), spec(2)], 0.0)
    b = Discovered(cfg(srv="_sip._udp.other.test"))
    b.apply([spec(1), spec(3)], 0.0)
    specs, mine = merge(stored, [a, b])
    assert specs == [stored[0], spec(1), spec(3)]
    assert mine == {(1, "sip:127.0.0.1:1"), (1, "sip:127.0.0.1:3")}


def test_base_specs_rebuild_the_same_sets() -> None:
    stored = [
        DestinationSpec(2, "sip:10.0.0.1", 0, 0),
        DestinationSpec(1, "sip:10.0.0.2", 0, 5),
        DestinationSpec(1, "sip:10.0.0.3", 0, 0),
        DestinationSpec(1, "sip:10.0.0.4", 0, 0),
        DestinationSpec(2, "sip:10.0.0.5", 0, 0),
    ]
    e = Discovered(cfg())
    e.apply([spec(1), spec(2)], 0.0)
    specs, mine = merge(stored, [e])
    snap = build_snapshot(specs)
    again = build_snapshot(merge(base_specs(snap, mine), [e])[0])
    assert again.insertion_order == snap.insertion_order
    for set_id, dset in snap.sets.items():
        assert [d.spec for d in again.sets[set_id].entries] == [d.spec for d in dset.entries]
    assert base_specs(snap, mine) == [
        s for s in base_specs(build_snapshot(stored), set()) if spec_key(s) not in mine
    ]


def test_a_rebuild_keeps_the_state_of_remaining_members() -> None:
    """Joins and leaves go through the dispatcher's ordinary build/install: the
    members that stay keep their health, admin state and counters."""
    from sipfleet.dispatch.state import AdminState

    e = Discovered(cfg())
    e.apply([spec(1), spec(2)], 0.0)
    d = Dispatcher(DispatcherConfig().to_settings(), merge([], [e])[0])
    d.set_state(DestTarget.uri(1, "sip:127.0.0.1:2"), AdminState.DRAINING, by="discovery")
    kept = d.find(1, "sip:127.0.0.1:2")
    assert kept is not None
    e.apply([spec(2), spec(3)], 1.0)
    specs, _ = merge(base_specs(d.snapshot, {spec_key(spec(1)), spec_key(spec(2))}), [e])
    result = d.install(d.build(specs))
    assert (result.added, result.removed, result.kept) == (1, 0, 2)
    assert d.state(kept).admin is AdminState.DRAINING
    assert [x.uri for x in d.destinations()] == [
        "sip:127.0.0.1:3",
        "sip:127.0.0.1:2",
        "sip:127.0.0.1:1",
    ]


# -- names in the list file: every address is the back end's ------------------------------


def test_a_named_destination_keeps_every_address(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from sipfleet.aio import resolver

    def fake(host: str, port: object, type: int = 0) -> list[tuple[object, ...]]:
        assert host == "media.example"
        return [
            (socket.AF_INET6, type, 17, "", ("2001:db8::1", 0, 0, 0)),
            (socket.AF_INET, type, 17, "", ("192.0.2.1", 0)),
            (socket.AF_INET, type, 17, "", ("192.0.2.2", 0)),
            (socket.AF_INET, type, 17, "", ("192.0.2.1", 0)),
        ]

    monkeypatch.setattr(resolver.socket, "getaddrinfo", fake)
    assert resolver.resolve_all("media.example") == ["192.0.2.1", "192.0.2.2", "2001:db8::1"]
    assert resolver.resolve_all("192.0.2.9") == ["192.0.2.9"]
    assert resolver.resolve_destination("media.example", None, "udp") == (
        "192.0.2.1",
        5060,
        "udp",
        ("192.0.2.2", "2001:db8::1"),
    )


def test_requests_from_any_address_of_a_named_destination_are_from_a_back_end() -> None:
    """Kamailio's ds_is_from_list compares the first address only (issue 4338)."""
    from sipfleet.dispatch.destination import Address
    from sipfleet.dispatch.policy import DispatchRouter

    def resolve(host: str, port: int | None, transport: str) -> Address | None:
        if host != "media.example":
            return None
        return Address("192.0.2.1", port or 5060, transport, ("192.0.2.2",))

    d = Dispatcher(
        DispatcherConfig().to_settings(),
        [DestinationSpec(1, "sip:media.example"), DestinationSpec(1, "sip:198.51.100.1")],
        resolver=resolve,
    )

    class NoLoad:
        def load(self, key: str) -> int:
            return 0

    router = DispatchRouter(d, [], load=NoLoad())
    assert router.is_backend("192.0.2.1") and router.is_backend("192.0.2.2")
    assert router.is_backend("198.51.100.1") and not router.is_backend("192.0.2.3")
    named = d.find(1, "sip:media.example")
    assert named is not None
    target = router.target(named)
    assert target is not None and target.host == "192.0.2.1"  # sent to the first
