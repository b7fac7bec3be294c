"""The Via header field (RFC 3261 18.2, 20.42, 25.1; RFC 3581 rport):
sipfleet/sip/via.py, both its fast path and its full grammar."""

from __future__ import annotations

import pytest

from sipfleet.sip.errors import BadMessage
from sipfleet.sip.via import parse_via, split_first

# value, transport, host, port, branch, rport, received
GOOD = [
    (
        b"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1",
        "UDP",
        "10.0.0.1",
        5060,
        "z9hG4bK1",
        False,
        None,
    ),
    (
        b"SIP/2.0/tcp Host.Example;branch=z9hG4bKa",
        "TCP",
        "host.example",
        None,
        "z9hG4bKa",
        False,
        None,
    ),
    (b"SIP/2.0/TLS h:5061;rport;branch=z9hG4bK2", "TLS", "h", 5061, "z9hG4bK2", True, None),
    (b"SIP/2.0/UDP h;received=192.0.2.1;rport=5070", "UDP", "h", None, "", 5070, "192.0.2.1"),
    (b"SIP/2.0/UDP [2001:db8::1]:5070;branch=b", "UDP", "2001:db8::1", 5070, "b", False, None),
    (b"SIP/2.0/UDP [::1];branch=b", "UDP", "::1", None, "b", False, None),
    (b"SIP/2.0/WSS h.invalid;branch=z9hG4bKw", "WSS", "h.invalid", None, "z9hG4bKw", False, None),
    # RFC 3261 25.1: LWS around '/' and ':' and ';' (the slow path).
    (b"SIP / 2.0 / UDP  h : 5070 ; branch = z9hG4bK3", "UDP", "h", 5070, "z9hG4bK3", False, None),
    (b"SIP/2.0/UDP h;BRANCH=z9hG4bK4;RPort", "UDP", "h", None, "z9hG4bK4", True, None),
    (b'SIP/2.0/UDP h ;x="quoted";branch=z9hG4bK5', "UDP", "h", None, "z9hG4bK5", False, None),
    # RFC 3261 25.1: gen-value may be a quoted-string, which may hold ';' and ','.
    (b'SIP/2.0/UDP h;x="a;b";branch=z9hG4bK6', "UDP", "h", None, "z9hG4bK6", False, None),
    (b'SIP/2.0/UDP h ; x = "a\\";b" ;branch=z9hG4bK7', "UDP", "h", None, "z9hG4bK7", False, None),
    # RFC 3261 25.1: other-transport is a token.
    (b"SIP/2.0/FOO h", "FOO", "h", None, "", False, None),
]


@pytest.mark.parametrize(
    ("value", "transport", "host", "port", "branch", "rport", "received"), GOOD
)
def test_good_vias(value, transport, host, port, branch, rport, received) -> None:
    """RFC 3261 20.42 / 25.1: sent-protocol, sent-by and the parameters a proxy uses."""
    v = parse_via(value)
    assert (v.transport, v.host, v.port, v.branch, v.rport, v.received) == (
        transport,
        host,
        port,
        branch,
        rport,
        received,
    )
    assert v.raw == value


BAD = [
    b"",
    b"SIP/2.0/UDP",
    b"SIP/3.0/UDP h",
    b"SIP/2.0 h",
    b"SIP/2.0/UDP h:0",
    b"SIP/2.0/UDP h:65536",
    b"SIP/2.0/UDP h:123456",
    b"SIP/2.0/UDP h:50x",
    b"SIP/2.0/UDP h;;branch=x",
    b"SIP/2.0/UDP h;=x",
    b"SIP/2.0/UDP [::1",
    b"SIP/2.0/UDP h@x",
    b'SIP/2.0/UDP h;x="a;b',
    b"SIP/2.0/UDP h;x=1;",
    # After an IPv6 reference only ':' port may follow.
    b"SIP/2.0/UDP [::1]x5070",
    b"SIP/2.0/UDP [::1]55070",
    b"SIP/2.0/UDP [::1]x",
    # A port of thousands of digits is a bad port, not an int() error.
    b"SIP/2.0/UDP h:" + b"1" * 5000,
]


@pytest.mark.parametrize("value", BAD)
def test_bad_vias_are_bad_messages(value: bytes) -> None:
    """RFC 3261 25.1: a Via off the grammar is the sender's fault (400)."""
    with pytest.raises(BadMessage) as e:
        parse_via(value)
    assert e.value.status == 400


@pytest.mark.parametrize(
    ("value", "rport"),
    [
        (b"SIP/2.0/UDP h;rport", True),
        (b"SIP/2.0/UDP h;rport=5070", 5070),
        (b"SIP/2.0/UDP h;rport=abc", True),
        # Not a port: treated as the flag, never as an int() error or port 99999999.
        (b"SIP/2.0/UDP h;rport=99999999", True),
        (b"SIP/2.0/UDP h;rport=0", True),
        (b"SIP/2.0/UDP h;rport=\xc2\xb2", True),  # '²' is a digit to str.isdigit()
        (b"SIP/2.0/UDP h ;rport=\xd9\xa3", True),  # Arabic-Indic three, slow path
        (b"SIP/2.0/UDP h;rport=" + b"9" * 5000, True),
    ],
)
def test_rport_values(value: bytes, rport: int | bool) -> None:
    """RFC 3581 4: rport is a flag in a request; a value is a port (1-65535)."""
    assert parse_via(value).rport == rport


@pytest.mark.parametrize(
    ("value", "address"),
    [
        (b"SIP/2.0/UDP h:5070", ("h", 5070)),
        (b"SIP/2.0/UDP h", ("h", 5060)),
        (b"SIP/2.0/UDP h;received=192.0.2.1", ("192.0.2.1", 5060)),
        (b"SIP/2.0/UDP h:5070;received=192.0.2.1", ("192.0.2.1", 5070)),
        (b"SIP/2.0/UDP h:5070;received=192.0.2.1;rport=6000", ("192.0.2.1", 6000)),
        (b"SIP/2.0/UDP h:5070;rport", ("h", 5070)),
    ],
)
def test_response_address(value: bytes, address: tuple[str, int]) -> None:
    """RFC 3261 18.2.2 and RFC 3581 4: received, then rport, else sent-by's port."""
    assert parse_via(value).response_address() == address


def test_sent_by_and_magic_cookie() -> None:
    """RFC 3261 8.1.1.7: a branch starting with z9hG4bK is RFC 3261 compliant."""
    v = parse_via(b"SIP/2.0/UDP [::1]:5070;branch=z9hG4bKx")
    assert v.sent_by() == "[::1]:5070" and v.rfc3261_branch
    assert not parse_via(b"SIP/2.0/UDP h;branch=old").rfc3261_branch
    assert parse_via(b"SIP/2.0/UDP h").sent_by() == "h"


@pytest.mark.parametrize(
    ("line", "first", "rest"),
    [
        (b"SIP/2.0/UDP a", b"SIP/2.0/UDP a", None),
        (b"SIP/2.0/UDP a , SIP/2.0/UDP b", b"SIP/2.0/UDP a", b"SIP/2.0/UDP b"),
        (
            b"SIP/2.0/UDP a,SIP/2.0/UDP b,SIP/2.0/UDP c",
            b"SIP/2.0/UDP a",
            b"SIP/2.0/UDP b,SIP/2.0/UDP c",
        ),
        (b'SIP/2.0/UDP a;x="1,2", SIP/2.0/UDP b', b'SIP/2.0/UDP a;x="1,2"', b"SIP/2.0/UDP b"),
        (b"SIP/2.0/UDP a,", b"SIP/2.0/UDP a", None),
    ],
)
def test_split_first(line: bytes, first: bytes, rest: bytes | None) -> None:
    """RFC 3261 7.3.1: Via values may be comma-joined; a proxy pops only the first."""
    assert split_first(line) == (first, rest)
