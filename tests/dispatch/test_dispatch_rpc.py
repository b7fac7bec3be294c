"""What the RPC layer calls: set_state, list_records, ping_active, oclist."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import Build, FakeLoad

from sipfleet.dispatch import AdminState, DestTarget, DispatcherError, StateKey, parse_rpc_state
from sipfleet.dispatch.avl import avl_postorder
from sipfleet.dispatch.flags import DS_DISABLED, DS_INACTIVE, DS_PROBING, DS_TRYING, state_letters

VECTORS = Path(__file__).parent.parent / "control" / "vectors"
# The list behind tests/control/vectors/jsonrpc-dispatcher-list.json
# (captured from Kamailio 5.6.3, see tests/e2e/kamailio_ref.py).
KAMAILIO_LIST = "1 sip:127.0.0.1:5070 0 10 duid=media-1;weight=50\n1 sip:127.0.0.1:5071 8 5\n2 sip:127.0.0.1:5072\n"


@pytest.mark.parametrize(
    ("arg", "bits"),
    [
        ("a", 0),
        ("A", 0),
        ("1", 0),
        ("ap", DS_PROBING),
        ("AP", DS_PROBING),
        ("1p", DS_PROBING),
        ("i", DS_INACTIVE),
        ("I", DS_INACTIVE),
        ("0", DS_INACTIVE),
        ("ip", DS_INACTIVE | DS_PROBING),
        ("d", DS_DISABLED),
        ("D", DS_DISABLED),
        ("2", DS_DISABLED),
        ("dp", DS_DISABLED),
        ("t", DS_TRYING),
        ("T", DS_TRYING),
        ("3", DS_TRYING),
        ("tP", DS_TRYING | DS_PROBING),
        ("ax", 0),
        ("active", 0),
        ("inactive", DS_INACTIVE),
    ],
)
def test_parse_rpc_state(arg: str, bits: int) -> None:
    assert parse_rpc_state(arg) == bits


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("", "Invalid State Parameter"),
        ("x", "Unknown State Value"),
        ("4", "Unknown State Value"),
        ("pa", "Unknown State Value"),
    ],
)
def test_parse_rpc_state_errors(arg: str, message: str) -> None:
    with pytest.raises(DispatcherError) as info:
        parse_rpc_state(arg)
    assert info.value == DispatcherError(500, message)


@pytest.mark.parametrize(
    ("bits", "letters"),
    [
        (0, "AX"),
        (DS_PROBING, "AP"),
        (DS_INACTIVE | DS_PROBING, "IP"),
        (DS_DISABLED, "DX"),
        (DS_TRYING | DS_PROBING, "TP"),
        (DS_INACTIVE | DS_DISABLED, "IX"),
        (DS_DISABLED | DS_TRYING, "DX"),
        (32, "AN"),
        (32 | DS_PROBING, "AP"),
        (DS_INACTIVE | 32, "IN"),
    ],
)
def test_state_letters(bits: int, letters: str) -> None:
    assert state_letters(bits) == letters


def targets(result: dict[str, Any], set_id: int) -> list[dict[str, Any]]:
    for rec in result["RECORDS"]:
        if rec["SET"]["ID"] == set_id:
            return [t["DEST"] for t in rec["SET"]["TARGETS"]]
    raise KeyError(set_id)


def test_set_state_by_address_duid_and_all(build: Build) -> None:
    d = build("1 sip:a 0 0 duid=A\n1 sip:b 0 0 duid=B\n2 sip:c\n")

    def keys(target: DestTarget, letters: str) -> list[StateKey]:
        return [x.key for x in d.set_state(target, parse_rpc_state(letters))]

    assert keys(DestTarget.uri(1, "SIP:A"), "ip") == []  # case-insensitive; admin unchanged
    assert keys(DestTarget.uri(1, "sip:b"), "d") == [(1, "sip:b")]  # admin changed: persist it
    assert [t["FLAGS"] for t in targets(d.list_records(), 1)] == ["DX", "IP"]
    assert keys(DestTarget.duid(1, "b"), "a") == [(1, "sip:b")]  # Kamailio: case-insensitive
    assert d.set_state(DestTarget.whole_set(1), parse_rpc_state("t")) == []
    assert [t["FLAGS"] for t in targets(d.list_records(), 1)] == ["TX", "TX"]
    assert (
        d.set_state(DestTarget.whole_set(7), parse_rpc_state("i")) == []
    )  # Kamailio answers Ok for an unknown set with "all"
    for call in (
        lambda: d.set_state(DestTarget.uri(1, "sip:nope"), parse_rpc_state("i")),
        lambda: d.set_state(DestTarget.uri(7, "sip:a"), parse_rpc_state("i")),
        lambda: d.set_state(DestTarget.duid(1, "nope"), parse_rpc_state("i")),
        lambda: d.set_state(DestTarget.uri(None, "sip:a"), parse_rpc_state("i")),
    ):
        with pytest.raises(DispatcherError) as info:
            call()
        assert info.value == DispatcherError(500, "State Update Failed")


def test_set_admin_and_admin_states(build: Build) -> None:
    d = build("1 sip:a\n1 sip:b\n")
    (a,) = d.set_state(DestTarget.uri(1, "sip:A"), AdminState.DISABLED, since=5.0, by="op")
    assert (a.key, d.state(a).admin_since, d.state(a).admin_by) == ((1, "sip:a"), 5.0, "op")
    assert d.set_state(DestTarget.uri(1, "sip:A"), AdminState.DISABLED) == []  # already so
    with pytest.raises(DispatcherError, match="State Update Failed"):
        d.set_state(DestTarget.uri(1, "sip:x"), AdminState.DISABLED)
    assert d.admin_states() == {(1, "sip:a"): AdminState.DISABLED}


def test_targets_name_destinations_explicitly(build: Build) -> None:
    d = build("1 sip:a 0 0 duid=m1\n1 sip:a 0 0 duid=m2\n2 sip:b 0 0 duid=m1\n2 sip:c\n")

    def named(target: DestTarget) -> list[StateKey]:
        return [x.key for x, _ in d.lookup(target)]

    assert named(DestTarget.uri(1, "SIP:A")) == [(1, "sip:a")]  # the first entry with the URI
    assert named(DestTarget.uri(None, "sip:b")) == [(2, "sip:b")]
    assert named(DestTarget.duid(None, "m1")) == [(1, "sip:a"), (2, "sip:b")]  # every set
    assert named(DestTarget.duid(2, "m1")) == [(2, "sip:b")]
    assert named(DestTarget.duid(None, "M1")) == []  # a duid compares exactly
    assert named(DestTarget.duid(None, "sip:b")) == []  # no guessing: a URI is no duid
    assert named(DestTarget.uri(None, "m1")) == []
    assert named(DestTarget.whole_set(2)) == [(2, "sip:c"), (2, "sip:b")]  # Kamailio's set order
    assert named(DestTarget.whole_set(7)) == []


def test_list_matches_kamailios_captured_answer(build: Build) -> None:
    d = build(KAMAILIO_LIST, ping_latency_stats=False)
    captured = json.loads((VECTORS / "jsonrpc-dispatcher-list.json").read_text())["result"]
    assert d.list_records() == captured
    assert list(d.list_records()) == ["NRSETS", "RECORDS"]


def test_list_modes_and_runtime(build: Build) -> None:
    d = build(KAMAILIO_LIST)
    short = d.list_records("short")
    assert all("ATTRS" not in t for t in targets(short, 1))
    full = d.list_records("FULL", load=FakeLoad({"media-1": 3}))
    t = targets(full, 1)
    assert list(t[0]) == [
        "URI",
        "FLAGS",
        "PRIORITY",
        "HOST",
        "IPADDR",
        "PORT",
        "PROTOID",
        "DNSTIME_SEC",
        "DNSTIME_USEC",
        "ATTRS",
        "LATENCY",
        "RUNTIME",
    ]
    assert (t[0]["DNSTIME_SEC"], t[0]["DNSTIME_USEC"]) == (0, 0)
    assert t[0]["HOST"] == "127.0.0.1" and t[0]["IPADDR"] == "127.0.0.1" and t[0]["PORT"] == 5070
    assert t[0]["ATTRS"] == {
        "BODY": "duid=media-1;weight=50",
        "DUID": "media-1",
        "MAXLOAD": 0,
        "WEIGHT": 50,
        "RWEIGHT": 0,
        "SOCKET": None,
        "SOCKNAME": None,
        "OBPROXY": None,
    }
    assert t[0]["RUNTIME"] == {"DLGLOAD": 3}
    assert "ATTRS" not in t[1]  # 5.6.3's full listing: ATTRS only when set (measured)
    assert t[1]["RUNTIME"] == {"DLGLOAD": 0}
    assert t[0]["LATENCY"] == {"AVG": 0.0, "STD": 0.0, "EST": 0.0, "MAX": 0, "TIMEOUT": 0}


def test_list_full_proto_and_ports(build: Build) -> None:
    d = build("1 sip:10.0.0.1;transport=tcp\n1 sips:[2001:db8::2]:5071\n1 sip:name.example\n")
    full = {t["URI"]: t for t in targets(d.list_records("full"), 1)}
    assert (
        full["sip:10.0.0.1;transport=tcp"]["PORT"],
        full["sip:10.0.0.1;transport=tcp"]["PROTOID"],
    ) == (0, 2)
    assert full["sips:[2001:db8::2]:5071"]["HOST"] == "[2001:db8::2]"
    assert full["sips:[2001:db8::2]:5071"]["IPADDR"] == "2001:db8::2"
    assert full["sip:name.example"]["IPADDR"] is None


@pytest.mark.parametrize(
    ("inserted", "walk"),
    [
        ([1, 2], [2, 1]),
        ([1, 2, 3], [1, 3, 2]),
        ([3, 2, 1], [1, 3, 2]),
        ([5, 1, 9, 3, 7, 2], [1, 3, 2, 7, 9, 5]),  # 2 under 1 -> 3 rotates: 2(1, 3)
        (list(range(1, 8)), [1, 3, 2, 5, 7, 6, 4]),
    ],
)
def test_avl_walk_order(inserted: list[int], walk: list[int]) -> None:
    assert avl_postorder(inserted) == walk


def test_oclist_unknown_group(build: Build) -> None:
    d = build("1 sip:a 0 0 ocrate=20;ocmin=10\n")
    assert d.oclist(1)[0] | {} == {
        "group": 1,
        "uri": "sip:a",
        "flags": 0,
        "priority": 0,
        "ocrate": 20,
        "ocidx": 0,
        "ocseq": 0,
        "octime_sec": 0,
        "octime_usec": 0,
        "ocmin": 10,
        "ocmax": 100,
    }
    with pytest.raises(DispatcherError) as info:
        d.oclist(2)
    assert info.value == DispatcherError(404, "Destination Group Not Found")
