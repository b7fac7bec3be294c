"""Destinations: URI normalisation, the fast URI path, attributes."""

from __future__ import annotations

import pytest

from sipfleet.dispatch import (
    Address,
    DestinationError,
    DestinationSpec,
    make_destination,
    parse_attrs,
)
from sipfleet.dispatch.destination import _FAST_URI, _uri_info
from sipfleet.sip.errors import BadMessage
from sipfleet.sip.uri import parse_uri


@pytest.mark.parametrize(
    ("raw", "uri", "host", "port", "transport", "address"),
    [
        (
            "sip:10.0.0.1:5060",
            "sip:10.0.0.1:5060",
            "10.0.0.1",
            5060,
            "udp",
            Address("10.0.0.1", 5060, "udp"),
        ),
        ("10.0.0.1", "sip:10.0.0.1", "10.0.0.1", None, "udp", Address("10.0.0.1", 5060, "udp")),
        ("SIP:Media.Example", "SIP:Media.Example", "Media.Example", None, "udp", None),
        (
            "sips:10.0.0.1",
            "sips:10.0.0.1",
            "10.0.0.1",
            None,
            "tls",
            Address("10.0.0.1", 5061, "tls"),
        ),
        (
            "sip:10.0.0.1;transport=TCP",
            "sip:10.0.0.1;transport=TCP",
            "10.0.0.1",
            None,
            "tcp",
            Address("10.0.0.1", 5060, "tcp"),
        ),
        (
            "sip:[2001:DB8::1]:5070",
            "sip:[2001:DB8::1]:5070",
            "[2001:db8::1]",
            5070,
            "udp",
            Address("2001:db8::1", 5070, "udp"),
        ),
        ("media.example:5080", "sip:media.example:5080", "media.example", 5080, "udp", None),
        ("sip:10.0.0.256", "sip:10.0.0.256", "10.0.0.256", None, "udp", None),  # a name, not an IP
        (
            "sip:u@10.0.0.1",
            "sip:u@10.0.0.1",
            "10.0.0.1",
            None,
            "udp",
            Address("10.0.0.1", 5060, "udp"),
        ),
    ],
)
def test_destination_uri(
    raw: str, uri: str, host: str, port: int | None, transport: str, address: Address | None
) -> None:
    d = make_destination(DestinationSpec(1, raw))
    assert (d.uri, d.host, d.port, d.transport, d.address) == (uri, host, port, transport, address)
    assert d.key == (1, uri.lower())


def test_load_key_is_duid_else_uri() -> None:
    assert make_destination(DestinationSpec(1, "sip:a", 0, 0, "duid=X1")).load_key == "X1"
    assert make_destination(DestinationSpec(1, "a")).load_key == "sip:a"


@pytest.mark.parametrize(
    "raw",
    ["", "   ", "tel:+1", "sip:a b", "sip:h:0", "sip:h:65536", "sip:@h", "sip:[zz]", "sip:h?x"],
)
def test_bad_uris(raw: str) -> None:
    if raw == "sip:h?x":  # headers are legal in a URI: accepted via parse_uri
        make_destination(DestinationSpec(1, raw))
        return
    with pytest.raises(DestinationError) as info:
        make_destination(DestinationSpec(7, raw))
    assert info.value.source == f"set 7 destination {raw!r}"


@pytest.mark.parametrize(
    "spec",
    [
        DestinationSpec(-1, "sip:a"),
        DestinationSpec(1, "sip:a", -1),
        DestinationSpec(1, "sip:a", 1 << 31),
    ],
)
def test_bad_numbers(spec: DestinationSpec) -> None:
    with pytest.raises(DestinationError):
        make_destination(spec)


FAST_CORPUS = [
    "sip:10.0.0.1",
    "sip:10.0.0.1:5060",
    "sips:h.example:5061",
    "sip:user@h.example",
    "sip:h.example;transport=tcp;lr",
    "SIP:H.EXAMPLE",
    "sip:h-1.example:1",
    "sip:a@b@c",
    "sip:h;p=a@b",
    "sip:h:65535",
    "sip:h:00080",
    "sip:1.2.3.4.5",
    "sip:user;x@h",
    "sip:999.1.1.1",
    "sip:h.example;;",
    "sip:h.example;transport=",
    "sip:0.0.0.0:5060",
]


@pytest.mark.parametrize("text", FAST_CORPUS)
def test_fast_path_agrees_with_parse_uri(text: str) -> None:
    """Whatever the regex accepts, parse_uri accepts with the same host/port/transport."""
    try:
        ref = parse_uri(text)
    except BadMessage:
        assert _FAST_URI.match(text) is None or not _uri_ok(text)
        return
    info = _uri_info(text)
    assert info[3] == ref.host
    assert info[4] == ref.port
    assert info[5] == ref.transport


def _uri_ok(text: str) -> bool:
    try:
        _uri_info(text)
    except ValueError:
        return False
    return True


def test_parse_attrs_known_and_unknown() -> None:
    a = parse_attrs(
        "duid=m1;MaxLoad=20;weight=50;rweight=7;cc=1;latency=40;socket=udp:1.2.3.4:5060;"
        'sockname=s1;ping_from=sip:lb@x;obproxy=sip:p;ocrate=30;ocmin=10;ocmax=50;My_Key="v 1";flag;'
    )
    assert (
        a.body
        == 'duid=m1;MaxLoad=20;weight=50;rweight=7;cc=1;latency=40;socket=udp:1.2.3.4:5060;sockname=s1;ping_from=sip:lb@x;obproxy=sip:p;ocrate=30;ocmin=10;ocmax=50;My_Key="v 1";flag'
    )
    assert (a.duid, a.maxload, a.weight, a.rweight, a.cc, a.latency) == ("m1", 20, 50, 7, 1, 40)
    assert (a.socket, a.sockname, a.ping_from, a.obproxy) == (
        "udp:1.2.3.4:5060",
        "s1",
        "sip:lb@x",
        "sip:p",
    )
    assert (a.ocrate, a.ocmin, a.ocmax) == (30, 10, 50)
    assert dict(a.extra) == {"My_Key": "v 1", "flag": ""}


@pytest.mark.parametrize(
    ("text", "oc"),
    [
        ("", (0, 0, 100)),
        ("ocmax=0", (0, 0, 100)),
        ("ocmax=150;ocrate=120", (0, 0, 100)),
        ("ocmin=60;ocmax=50", (0, 0, 50)),
        ("ocrate=5;ocmin=10", (10, 10, 100)),
        ("ocrate=90;ocmax=80", (80, 0, 80)),
    ],
)
def test_oc_normalisation(text: str, oc: tuple[int, int, int]) -> None:
    a = parse_attrs(text)
    assert (a.ocrate, a.ocmin, a.ocmax) == oc


def test_attrs_later_duplicate_wins_and_empty() -> None:
    assert parse_attrs("weight=5;weight=7").weight == 7
    assert parse_attrs(";").body is None
    assert parse_attrs("weight=0").weight == 0
