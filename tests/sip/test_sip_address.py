"""name-addr / addr-spec values and comma splitting (RFC 3261 20.10, 25.1; RFC 4475):
sipfleet/sip/address.py."""

from __future__ import annotations

import pytest

from sipfleet.sip.address import parse_address, split_commas, tag_of
from sipfleet.sip.errors import BadMessage

# value, display, uri, params, angle
GOOD = [
    (b"<sip:b@h>", None, b"sip:b@h", b"", True),
    (b"<sip:b@h>;tag=1", None, b"sip:b@h", b";tag=1", True),
    (b'"Bob" <sip:b@h>;tag=x;expires=60', b'"Bob"', b"sip:b@h", b";tag=x;expires=60", True),
    (b'"Bob \\"B\\" <x>" <sip:b@h>', b'"Bob \\"B\\" <x>"', b"sip:b@h", b"", True),
    (b"Bob Smith <sip:b@h>", b"Bob Smith", b"sip:b@h", b"", True),
    (b'""<sip:b@h>', b'""', b"sip:b@h", b"", True),
    # RFC 4475 3.1.2.14: LWS just inside <> is tolerated.
    (b"< sip:b@h >", None, b"sip:b@h", b"", True),
    # addr-spec: parameters after the URI belong to the header (RFC 3261 20.10).
    (b"sip:b@h;tag=2", None, b"sip:b@h", b";tag=2", False),
    (b"  sip:b@h  ", None, b"sip:b@h", b"", False),
    (b"<sip:b@h?subject=x>", None, b"sip:b@h?subject=x", b"", True),
]


@pytest.mark.parametrize(("value", "display", "uri", "params", "angle"), GOOD)
def test_good_addresses(value, display, uri, params, angle) -> None:
    """RFC 3261 25.1: name-addr = [display-name] LAQUOT addr-spec RAQUOT, or addr-spec."""
    a = parse_address(value)
    assert (a.display, a.uri, a.params, a.angle) == (display, uri, params, angle)


BAD = [
    (b"", "Malformed address"),
    (b"<>", "Malformed URI in address"),
    (b"<sip:b@h", "Missing '>' in address"),
    (b'"Bob <sip:b@h>', "Unterminated quoted string in address"),
    (b'"Bob" x <sip:b@h>', "Malformed address"),
    (b'"Bob"', "Malformed address"),
    (b"Bob@home <sip:b@h>", "Display name of address must be quoted"),
    (b"<sip:b @h>", "Malformed URI in address"),
    # RFC 3261 20.10: an addr-spec with '?' or ',' must be in angle brackets.
    (b"sip:b@h?subject=x", "Malformed address"),
    (b"sip:b@h,sip:c@h", "Malformed address"),
    (b"sip:b @h", "Malformed address"),
]


@pytest.mark.parametrize(("value", "reason"), BAD)
def test_bad_addresses_are_bad_messages(value: bytes, reason: str) -> None:
    """RFC 3261 25.1 / RFC 4475 3.1.2.x: broken addresses are a 400 with a clear reason."""
    with pytest.raises(BadMessage) as e:
        parse_address(value)
    assert e.value.status == 400 and e.value.reason == reason


def test_the_header_name_is_in_the_error() -> None:
    """A 400's reason names the header at fault."""
    with pytest.raises(BadMessage, match="Missing '>' in From"):
        parse_address(b"<sip:a@h", "From")


@pytest.mark.parametrize(
    ("params", "name", "value"),
    [
        (b";tag=abc;expires=60", "tag", "abc"),
        (b";tag=abc;expires=60", "EXPIRES", "60"),
        (b"; Tag = abc ", "tag", "abc"),
        (b";lr;x=1", "lr", ""),
        (b";x=1", "tag", None),
    ],
)
def test_param(params: bytes, name: str, value: str | None) -> None:
    """RFC 3261 7.3.1: parameter names are case-insensitive; a flag has no value."""
    a = parse_address(b"<sip:h>" + params)
    assert a.param(name) == value


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        (b"<sip:a@h>;tag=1928301774", b"1928301774"),
        (b'"A" <sip:a@h>;x=y;tag=abc', b"abc"),
        (b"<sip:a@h>", None),
        # A tag inside the URI is the URI's, not the header's.
        (b"<sip:a@h;tag=inner>", None),
        (b"<sip:a@h;tag=inner>;tag=outer", b"outer"),
        (b"sip:a@h;TAG = z", b"z"),
        (b"sip:a@h;tag=1,x", b"1"),
    ],
)
def test_tag_of(value: bytes, tag: bytes | None) -> None:
    """RFC 3261 19.3: the tag is a header parameter of From/To; both parsers agree."""
    assert tag_of(value) == tag
    assert parse_address(value.partition(b",")[0]).tag == tag


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        (b"", []),
        (b" , ,", []),
        (b"<sip:a>", [b"<sip:a>"]),
        (b"<sip:a>, <sip:b>,<sip:c>", [b"<sip:a>", b"<sip:b>", b"<sip:c>"]),
        (b'"Doe, J" <sip:j@h>, <sip:k@h>', [b'"Doe, J" <sip:j@h>', b"<sip:k@h>"]),
        (b"<sip:a@h;x=1,2>, <sip:b>", [b"<sip:a@h;x=1,2>", b"<sip:b>"]),
        (b'"a\\",b" <sip:a>, c', [b'"a\\",b" <sip:a>', b"c"]),
        (b"a,,b", [b"a", b"b"]),
    ],
)
def test_split_commas(value: bytes, parts: list[bytes]) -> None:
    """RFC 3261 7.3.1: comma-joined values split outside quotes and <...> only."""
    assert split_commas(value) == parts
