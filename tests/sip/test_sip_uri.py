"""SIP, SIPS and tel URIs (RFC 3261 19.1; RFC 3966 for tel): sipfleet/sip/uri.py."""

from __future__ import annotations

import pytest

from sipfleet.sip.errors import BadMessage
from sipfleet.sip.uri import format_hostport, parse_uri

# raw, scheme, user, password, host, port, params, headers
GOOD = [
    ("sip:h", "sip", None, None, "h", None, {}, None),
    ("SIP:Host.Example.COM", "sip", None, None, "host.example.com", None, {}, None),
    ("sip:alice@h:5070", "sip", "alice", None, "h", 5070, {}, None),
    ("sip:alice:secret@h", "sip", "alice", "secret", "h", None, {}, None),
    ("sips:bob@[2001:DB8::1]:5061", "sips", "bob", None, "2001:db8::1", 5061, {}, None),
    ("sip:[::1]", "sip", None, None, "::1", None, {}, None),
    (
        "sip:h;transport=TCP;lr",
        "sip",
        None,
        None,
        "h",
        None,
        {"transport": "TCP", "lr": None},
        None,
    ),
    (
        "sip:h;Maddr=10.0.0.1;LR",
        "sip",
        None,
        None,
        "h",
        None,
        {"maddr": "10.0.0.1", "lr": None},
        None,
    ),
    (
        "sip:a@h?subject=x&priority=urgent",
        "sip",
        "a",
        None,
        "h",
        None,
        {},
        "subject=x&priority=urgent",
    ),
    # RFC 4475 3.1.1.2: ';', '?' and ',' may appear in the user part.
    (
        "sip:user;par=u%40example.net@h",
        "sip",
        "user;par=u%40example.net",
        None,
        "h",
        None,
        {},
        None,
    ),
    ("sip:a?b,c@h;x", "sip", "a?b,c", None, "h", None, {"x": None}, None),
    ("sip:h:1", "sip", None, None, "h", 1, {}, None),
    ("sip:h:65535", "sip", None, None, "h", 65535, {}, None),
    ("  sip:h  ", "sip", None, None, "h", None, {}, None),
    (
        "tel:+1-201-555-0123;phone-context=x",
        "tel",
        "+1-201-555-0123",
        None,
        "",
        None,
        {"phone-context": "x"},
        None,
    ),
]


@pytest.mark.parametrize(
    ("raw", "scheme", "user", "password", "host", "port", "params", "headers"), GOOD
)
def test_good_uris(raw, scheme, user, password, host, port, params, headers) -> None:
    """RFC 3261 19.1.1: the components of a SIP URI; host is case-insensitive (19.1.4)."""
    u = parse_uri(raw)
    assert (u.scheme, u.user, u.password, u.host, u.port, u.params, u.headers) == (
        scheme,
        user,
        password,
        host,
        port,
        params,
        headers,
    )
    assert str(u) == raw.strip()  # written back as it came


BAD = [
    ("", 400),
    ("h", 400),
    (":h", 400),
    ("http://example.com", 416),  # RFC 3261 21.4.14: Unsupported URI Scheme
    ("mailto:a@h", 416),
    ("sip:", 400),
    ("sip:@h", 400),
    ("sip:a@", 400),
    ("sip:a b@h", 400),
    ("sip:<h>", 400),
    ('sip:"h"', 400),
    ("sip:h:", 400),
    ("sip:h:0", 400),
    ("sip:h:65536", 400),
    ("sip:h:123456", 400),
    ("sip:h:50a", 400),
    ("sip:h:-1", 400),
    ("sip:[2001:db8::1", 400),
    ("sip:[2001:db8::zz]", 400),
    ("sip:[::1]5060", 400),
    ("sip:[::1]:", 400),
    ("sip:;lr", 400),
    # Only ASCII digits are a port (str.isdigit() also takes other scripts' digits).
    ("sip:h:\u00b2", 400),
    ("sip:h:\u0663\u0664", 400),
    ("sip:[::1]:\u0665", 400),
]


@pytest.mark.parametrize(("raw", "status"), BAD)
def test_bad_uris_are_bad_messages(raw: str, status: int) -> None:
    """RFC 3261 19.1.1 / 25.1: a malformed URI is the peer's fault (400, or 416 for a
    scheme we do not serve), never another exception."""
    with pytest.raises(BadMessage) as e:
        parse_uri(raw)
    assert e.value.status == status


@pytest.mark.parametrize(
    ("raw", "transport", "port"),
    [
        ("sip:h", "udp", 5060),
        ("sip:h;transport=TCP", "tcp", 5060),
        ("sip:h;transport=tls", "tls", 5061),
        ("sips:h", "tls", 5061),
        ("sips:h:5070", "tls", 5070),
        ("sip:h:5080;transport=udp", "udp", 5080),
    ],
)
def test_transport_and_effective_port(raw: str, transport: str, port: int) -> None:
    """RFC 3263 4.1-4.2: transport from the parameter (UDP for sip, TLS for sips),
    port 5060, or 5061 for TLS, unless given."""
    u = parse_uri(raw)
    assert u.transport == transport
    assert u.effective_port() == port


def test_lr_and_ipv6_flags() -> None:
    """RFC 3261 19.1.1: lr marks a loose router; an IPv6 reference is bracketed."""
    assert parse_uri("sip:p;lr").lr and not parse_uri("sip:p").lr
    u = parse_uri("sip:[fe80::1]:5070")
    assert u.is_ipv6 and u.hostport() == "[fe80::1]:5070"
    assert not parse_uri("sip:10.0.0.1").is_ipv6


@pytest.mark.parametrize(
    ("host", "port", "text"),
    [("h", None, "h"), ("h", 5060, "h:5060"), ("::1", None, "[::1]"), ("::1", 5061, "[::1]:5061")],
)
def test_format_hostport(host: str, port: int | None, text: str) -> None:
    """RFC 3261 25.1: hostport, with IPv6 references in brackets."""
    assert format_hostport(host, port) == text
    assert parse_uri("sip:" + text).hostport() == text
