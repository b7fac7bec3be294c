"""Reload: atomic swap, state carried by set+URI or duid, reload_delta, add/remove."""

from __future__ import annotations

import pytest
from conftest import Build

from sipfleet.config import DispatcherConfig
from sipfleet.dispatch import (
    Address,
    AdminState,
    DestinationSpec,
    Dispatcher,
    DispatcherError,
    Health,
    Keys,
    Selection,
    parse_list,
)
from sipfleet.dispatch.flags import parse_rpc_state
from sipfleet.dispatch.target import DestTarget

BASE = "1 sip:a.example 0 0 duid=A\n1 sip:b.example 0 0 duid=B\n2 sip:c.example\n"


def flags(d: Dispatcher) -> dict[str, str]:
    return {
        t["DEST"]["URI"]: t["DEST"]["FLAGS"]
        for r in d.list_records()["RECORDS"]
        for t in r["SET"]["TARGETS"]
    }


def test_state_carried_by_set_and_uri(build: Build) -> None:
    d = build(BASE, reload_delta=0)
    a = d.find(1, "sip:a.example")
    assert a is not None
    d.on_probe_result(a, None, None, 1)
    d.state(a).latency.update(30, 0.9)
    d.set_state(DestTarget.uri(2, "sip:c.example"), parse_rpc_state("d"))
    before = d.state(a)
    result = d.reload(
        parse_list("1 SIP:A.EXAMPLE 0 5 duid=A\n2 sip:c.example\n3 sip:new\n"), now=10
    )
    assert (result.added, result.removed, result.kept) == (1, 1, 2)
    assert [(e.kind, e.uri, e.reason) for e in result.events] == [("dst-up", "sip:new", "added")]
    a2 = d.find(1, "sip:a.example")
    assert a2 is not None and a2 is not a and a2.priority == 5
    assert d.state(a2) is before  # the same runtime object: health, latency, counters
    assert d.state(a2).health is Health.INACTIVE and d.state(a2).latency.count == 1
    assert flags(d)["sip:c.example"] == "DX"  # admin state kept


def test_state_carried_by_duid_under_new_uri(build: Build) -> None:
    d = build(BASE, reload_delta=0)
    b = d.find(1, "sip:b.example")
    assert b is not None
    d.set_state(DestTarget.uri(1, "sip:b.example"), parse_rpc_state("ip"))
    d.reload(parse_list("1 sip:b2.example 0 0 duid=b\n"), now=1)  # duid compared case-insensitively
    assert flags(d) == {"sip:b2.example": "IP"}


def test_duid_match_is_per_set(build: Build) -> None:
    d = build(BASE, reload_delta=0)
    d.set_state(DestTarget.uri(1, "sip:a.example"), parse_rpc_state("i"))
    d.reload(parse_list("2 sip:x 0 0 duid=A\n"), now=1)
    assert flags(d) == {"sip:x": "AX"}


def test_changed_flags_in_source_win(build: Build) -> None:
    d = build(BASE, reload_delta=0)
    d.set_state(DestTarget.uri(1, "sip:a.example"), parse_rpc_state("i"))
    d.reload(parse_list("1 sip:a.example 4 0 duid=A\n1 sip:b.example 0 0 duid=B\n"), now=1)
    assert flags(d)["sip:a.example"] == "DX"  # the file now says disabled
    d.set_state(DestTarget.uri(1, "sip:b.example"), parse_rpc_state("i"))
    d.reload(parse_list("1 sip:a.example 4 0 duid=A\n1 sip:b.example 0 0 duid=B\n"), now=2)
    assert flags(d)["sip:b.example"] == "IX"  # unchanged line: runtime state kept


def test_duplicate_entries_get_their_own_state(build: Build) -> None:
    d = build("1 sip:a\n1 sip:a\n", reload_delta=0)
    d.set_state(DestTarget.uri(1, "sip:a"), parse_rpc_state("i"))  # the first match only
    d.reload(parse_list("1 sip:a\n1 sip:a\n"), now=1)
    assert sorted(t["DEST"]["FLAGS"] for t in d.list_records()["RECORDS"][0]["SET"]["TARGETS"]) == [
        "AX",
        "IX",
    ]


def test_unchanged_lines_keep_their_destination_object(build: Build) -> None:
    d = build(BASE, reload_delta=0)
    a, b = d.find(1, "sip:a.example"), d.find(1, "sip:b.example")
    d.reload(parse_list("1 sip:a.example 0 0 duid=A\n1 sip:b.example 0 1 duid=B\n"), now=1)
    assert d.find(1, "sip:a.example") is a
    assert d.find(1, "sip:b.example") is not b
    assert d.state(a) is d.state(d.find(1, "sip:a.example"))  # type: ignore[arg-type]


def test_inflight_selection_keeps_old_snapshot(build: Build) -> None:
    d = build(BASE, reload_delta=0)
    old_snapshot = d.snapshot
    sel = d.select(1, Keys(), now=0, algorithm=8)
    assert isinstance(sel, Selection)
    d.reload(parse_list("1 sip:z\n"), now=1)
    assert d.snapshot is not old_snapshot
    assert [c.uri for c in sel.candidates] == ["sip:b.example", "sip:a.example"]
    assert [x.uri for x in old_snapshot.destinations()] == [
        "sip:c.example",
        "sip:b.example",
        "sip:a.example",
    ]


@pytest.mark.parametrize(
    ("delta", "times", "refused"),
    [
        (5, [100.0, 104.9], [False, True]),
        (5, [100.0, 105.0], [False, False]),
        (5, [100.0, 101.0, 103.0, 106.0], [False, True, True, False]),  # refusals do not restamp
        (0, [100.0, 100.0, 100.0], [False, False, False]),
    ],
)
def test_reload_delta(build: Build, delta: float, times: list[float], refused: list[bool]) -> None:
    d = build(BASE, reload_delta=delta)
    for now, expect in zip(times, refused, strict=True):
        if expect:
            with pytest.raises(DispatcherError) as info:
                d.reload(parse_list(BASE), now=now)
            assert (info.value.code, info.value.message) == (500, "Ongoing reload")
        else:
            d.reload(parse_list(BASE), now=now)


def test_reload_delta_shared_by_add_and_remove(build: Build) -> None:
    d = build(BASE)  # default 5 s
    d.add(1, "sip:d.example", now=100.0)
    with pytest.raises(DispatcherError, match="Ongoing reload"):
        d.remove(1, "sip:d.example", now=102.0)
    with pytest.raises(DispatcherError, match="Ongoing reload"):
        d.reload(parse_list(BASE), now=104.0)
    d.remove(1, "sip:d.example", now=105.0)
    assert d.find(1, "sip:d.example") is None


def test_failed_reload_keeps_old_sets_and_stamps_time(build: Build) -> None:
    d = build(BASE, reload_delta=5)
    bad = [DestinationSpec(1, "sip:ok"), DestinationSpec(1, "sip:h:99999")]
    with pytest.raises(DispatcherError) as info:
        d.reload(bad, now=100.0)
    assert (info.value.code, info.value.message) == (500, "Reload Failed")
    assert "sip:h:99999" in info.value.detail
    assert len(list(d.destinations())) == 3
    with pytest.raises(DispatcherError, match="Ongoing reload"):
        d.reload(parse_list(BASE), now=101.0)


def test_skip_bad_destinations(build: Build) -> None:
    d = build(BASE, reload_delta=0, skip_bad_destinations=True)
    result = d.reload([DestinationSpec(1, "sip:ok"), DestinationSpec(1, "sip:h:99999")], now=1)
    assert [x.uri for x in d.destinations()] == ["sip:ok"]
    assert len(result.warnings) == 1 and "99999" in result.warnings[0]


def test_add_keeps_state_and_walks_like_kamailio(build: Build) -> None:
    d = build("1 sip:x1\n1 sip:x2\n1 sip:x3\n")  # order x3 x2 x1
    d.set_state(DestTarget.uri(1, "sip:x2"), parse_rpc_state("i"))
    d.add(1, "sip:x4", 0, 0, "duid=X4", now=0)
    # Kamailio re-adds in walk order (x3 x2 x1), then x4, and sorts again:
    # equal priorities reverse once more.
    assert [x.uri for x in d.destinations()] == ["sip:x4", "sip:x1", "sip:x2", "sip:x3"]
    assert flags(d)["sip:x2"] == "IX"
    with pytest.raises(DispatcherError) as info:
        d.add(1, "sip:bad:0", now=100)
    assert info.value.message == "Adding dispatcher dst failed"


def test_remove_exact_match_after_sip_prefix(build: Build) -> None:
    d = build("1 sip:a\n1 sip:a\n1 sip:B\n2 sip:a\n")
    d.remove(1, "a", now=0)  # normalised to sip:a, both entries of set 1
    assert sorted((x.set_id, x.uri) for x in d.destinations()) == [(1, "sip:B"), (2, "sip:a")]
    d.remove(1, "sip:b", now=10)  # case-sensitive, as Kamailio: no match, no error
    assert d.find(1, "sip:B") is not None
    d.remove(1, "sip:B", now=20)
    d.remove(2, "sip:a", now=30)
    with pytest.raises(DispatcherError) as info:
        d.list_records()
    assert (info.value.code, info.value.message) == (500, "No Destination Sets")


def test_persisted_admin_states_apply_at_start() -> None:
    d = Dispatcher(
        DispatcherConfig().to_settings(),
        parse_list(BASE),
        admin_states={
            (1, "sip:a.example"): AdminState.DISABLED,
            (9, "sip:gone"): AdminState.DISABLED,
        },
    )
    assert flags(d)["sip:a.example"] == "DX"
    assert d.admin_states() == {(1, "sip:a.example"): AdminState.DISABLED}


class FakeStore:
    def load(self) -> list[DestinationSpec]:
        return parse_list(BASE)

    def load_admin_states(self) -> dict[tuple[int, str], AdminState]:
        return {(2, "sip:c.example"): AdminState.DISABLED}


def test_from_store() -> None:
    d = Dispatcher.from_store(FakeStore(), DispatcherConfig().to_settings())
    assert flags(d)["sip:c.example"] == "DX"


def test_resolver_for_names_only() -> None:
    calls: list[tuple[str, int | None, str]] = []

    def resolver(host: str, port: int | None, transport: str) -> Address | None:
        calls.append((host, port, transport))
        return Address("192.0.2.7", port or 5060, transport) if host == "media.example" else None

    text = "1 sip:10.0.0.1\n1 sip:media.example:5070;transport=tcp\n1 sip:nodns.example 16\n1 sip:nx.example\n"
    d = Dispatcher(DispatcherConfig().to_settings(), parse_list(text), resolver=resolver)
    assert sorted(calls) == [("media.example", 5070, "tcp"), ("nx.example", None, "udp")]
    assert d.snapshot.warning_count == 1 and "nx.example" in d.snapshot.warnings[0]
    full = {
        t["DEST"]["URI"]: t["DEST"]["IPADDR"]
        for t in d.list_records("full")["RECORDS"][0]["SET"]["TARGETS"]
    }
    assert full == {
        "sip:10.0.0.1": "10.0.0.1",
        "sip:media.example:5070;transport=tcp": "192.0.2.7",
        "sip:nodns.example": None,
        "sip:nx.example": None,
    }


def test_build_then_install_for_worker_threads(build: Build) -> None:
    d = build(BASE)
    d.begin_reload(100.0)
    snap = d.build(parse_list("1 sip:q\n"))
    result = d.install(snap)
    assert result.added == 1 and [x.uri for x in d.destinations()] == ["sip:q"]
    with pytest.raises(DispatcherError):
        d.begin_reload(101.0)
