"""Edge cases of sipfleet/sip/message.py not covered by the RFC 4475 vectors
(tests/sip/test_rfc4475.py) or the line limits (tests/sip/test_line_limits.py)."""

from __future__ import annotations

import pytest

from sipfleet.sip.errors import BadMessage
from sipfleet.sip.message import Limits, check_request, parse

INVITE = (
    b"INVITE sip:h SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
    b"From: <sip:a@h>;tag=1\r\n"
    b"To: <sip:b@h>\r\n"
    b"Call-ID: c\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 3\r\n"
    b"\r\n"
    b"abc"
)


def edit(old: bytes, new: bytes) -> bytes:
    assert old in INVITE
    return INVITE.replace(old, new, 1)


def check(data: bytes, datagram: bool = True) -> None:
    msg = parse(data, datagram=datagram)
    if msg.is_request:
        check_request(msg)


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (b"", 400, "Missing end of headers"),
        (b"INVITE sip:h SIP/2.0\r\nVia: x\r\n", 400, "Missing end of headers"),
        (b"\r\n\r\n", 400, "Malformed Request-Line"),
        (edit(b"Max-Forwards: 70", b"Not a header line"), 400, "Malformed header line"),
        (
            edit(b"Content-Length: 3", b"Content-Length: 4"),
            400,
            "Content-Length larger than message",
        ),
        (edit(b"Content-Length: 3", b"Content-Length: 3x"), 400, "Bad Content-Length header"),
        (
            edit(b"Content-Length: 3", b"Content-Length: 1234567890"),
            400,
            "Bad Content-Length header",
        ),
        (edit(b"INVITE sip:h SIP/2.0", b"INVITE sip:h SIP/3.0"), 505, "Version Not Supported"),
        (edit(b"INVITE sip:h SIP/2.0", b"INVITE sip:h HTTP/1.1"), 400, "Malformed Request-Line"),
        (edit(b"INVITE sip:h SIP/2.0", b"INVITE  sip:h SIP/2.0"), 400, "Malformed Request-Line"),
        (edit(b"INVITE sip:h SIP/2.0", b"INV@TE sip:h SIP/2.0"), 400, "Malformed method"),
        (edit(b"INVITE sip:h SIP/2.0", b"INVITE <sip:h> SIP/2.0"), 400, "Malformed Request-URI"),
        (edit(b"CSeq: 1 INVITE", b"CSeq: 2147483648 INVITE"), 400, "CSeq number too large"),
        (edit(b"CSeq: 1 INVITE", b"CSeq: 1"), 400, "Malformed CSeq header"),
        (edit(b"CSeq: 1 INVITE", b"CSeq: x INVITE"), 400, "Malformed CSeq header"),
        (edit(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), 400, "CSeq method does not match Request-Line"),
        (edit(b"Max-Forwards: 70", b"Max-Forwards: 256"), 400, "Bad Max-Forwards header"),
        (edit(b"Max-Forwards: 70", b"Max-Forwards: -1"), 400, "Bad Max-Forwards header"),
        (edit(b"Call-ID: c\r\n", b""), 400, "Missing Call-Id header"),
        (edit(b"Call-ID: c\r\n", b"Call-ID: c\r\ni: d\r\n"), 400, "Multiple Call-Id headers"),
        (
            edit(b"To: <sip:b@h>\r\n", b"To: <sip:b@h>\r\nt: <sip:c@h>\r\n"),
            400,
            "Multiple To headers",
        ),
        (
            edit(b"Via: SIP/2.0/UDP h;branch=z9hG4bK1", b"Via: SIP/2.0/UDP [::1]x"),
            400,
            "Malformed Via header",
        ),
        # RFC 3261 7.3.1: a continuation line folds into the previous header (here From).
        (edit(b"\r\nTo:", b"\r\n To:"), 400, "Missing To header"),
        (b"SIP/2.0 99 Too Low\r\n\r\n", 400, "Bad status code"),
        (b"SIP/2.0 700 Too High\r\n\r\n", 400, "Bad status code"),
        (b"SIP/2.0\r\n\r\n", 400, "Malformed status line"),
        (b"SIP/1.0 200 OK\r\n\r\n", 505, "Version Not Supported"),
    ],
)
def test_bad_messages(data: bytes, status: int, reason: str) -> None:
    """RFC 3261 7, 8.2, 16.3, 25.1: broken messages are the sender's fault, with the
    status (400/505/501) and a reason saying what is wrong."""
    with pytest.raises(BadMessage) as e:
        check(data)
    assert (e.value.status, e.value.reason) == (status, reason)


def test_unknown_method_with_matching_cseq_is_accepted() -> None:
    """RFC 3261 8.2.1: a method is a token; the proxy forwards what it does not know."""
    msg = parse(edit(b"INVITE sip:h", b"FOO sip:h").replace(b"1 INVITE", b"1 FOO"))
    check_request(msg)
    assert msg.method == "FOO" and msg.cseq == (1, "FOO")


def test_unknown_method_with_other_cseq_is_501() -> None:
    """RFC 4475 3.1.2.18: an unknown method whose CSeq disagrees is answered 501."""
    with pytest.raises(BadMessage) as e:
        check(edit(b"INVITE sip:h", b"FOO sip:h"))
    assert e.value.status == 501


def test_extra_octets_after_the_body() -> None:
    """RFC 3261 18.3: over UDP octets beyond Content-Length are dropped; on a stream
    (one framed message) they are an error."""
    assert parse(INVITE + b"junk").body == b"abc"
    with pytest.raises(BadMessage, match="Content-Length smaller"):
        parse(INVITE + b"junk", datagram=False)


def test_missing_content_length_takes_the_rest_as_body() -> None:
    """RFC 3261 18.3 / 20.14: over UDP the body runs to the end of the datagram."""
    msg = parse(edit(b"Content-Length: 3\r\n", b""))
    assert msg.body == b"abc" and msg.content_length is None


def test_compact_forms_and_case() -> None:
    """RFC 3261 7.3.3 / 7.3.5: compact names and any case map to one long lower-case name."""
    data = (
        edit(b"Via:", b"v:")
        .replace(b"From:", b"f:")
        .replace(b"To:", b"T:")
        .replace(b"Call-ID:", b"i:")
    )
    data = data.replace(b"CSeq:", b"cseq:").replace(b"Content-Length:", b"l:")
    msg = parse(data)
    check_request(msg)
    assert msg.names == [
        b"via",
        b"from",
        b"to",
        b"call-id",
        b"cseq",
        b"max-forwards",
        b"content-length",
    ]
    assert msg.call_id == b"c" and msg.from_tag == b"1" and msg.to_tag is None


def test_folded_lines_become_one_space() -> None:
    """RFC 3261 7.3.1: folding (CRLF then whitespace) equals one SP."""
    msg = parse(edit(b"Max-Forwards: 70", b"Subject: one,\r\n  two\r\n\tthree"))
    assert msg.get(b"subject") == b"one, two three"


def test_repeated_headers_and_values() -> None:
    """RFC 3261 7.3.1: a list header may repeat and comma-join: order is kept."""
    msg = parse(edit(b"Max-Forwards: 70", b"Route: <sip:a>, <sip:b>\r\nX-A: 1\r\nroute: <sip:c>"))
    assert msg.repeated  # "Route" and "route" are one name
    assert msg.positions(b"route") == [5, 7]
    assert msg.get(b"route") == b"<sip:a>, <sip:b>"
    assert msg.get_lines(b"route") == [b"<sip:a>, <sip:b>", b"<sip:c>"]
    assert msg.values(b"route") == [b"<sip:a>", b"<sip:b>", b"<sip:c>"]
    assert msg.pos(b"x-a") == 6 and msg.pos(b"nope") == -1 and not msg.has(b"nope")


@pytest.mark.parametrize(
    ("via", "branch"),
    [
        (b"SIP/2.0/UDP h;branch=z9hG4bK1", "z9hG4bK1"),
        (b"SIP/2.0/UDP h;rport;branch=z9hG4bK1;received=x", "z9hG4bK1"),
        (b"SIP/2.0/UDP h;branch=z9hG4bK1,SIP/2.0/UDP g;branch=2", "z9hG4bK1"),
        (b"SIP/2.0/UDP g, SIP/2.0/UDP h;branch=z9hG4bK1", ""),
        (b"SIP/2.0/UDP h;branch=z9hG4bK1 ;x=1", "z9hG4bK1"),
        (b"SIP/2.0/UDP h", ""),
    ],
)
def test_top_branch_agrees_with_the_full_parse(via: bytes, branch: str) -> None:
    """RFC 3261 17.1.3: a response's transaction is found by its top Via's branch;
    the shortcut must give what the full Via parse gives."""
    msg = parse(edit(b"SIP/2.0/UDP h;branch=z9hG4bK1", via))
    assert msg.top_branch() == branch
    assert msg.via.branch == branch
    assert msg.top_branch() == branch  # and after the full parse is cached


def test_response_start_line() -> None:
    """RFC 3261 7.2: Status-Line = SIP-Version SP Status-Code SP Reason-Phrase."""
    msg = parse(b"SIP/2.0 486 Busy Here\r\nContent-Length: 0\r\n\r\n")
    assert (msg.is_request, msg.status, msg.reason) == (False, 486, b"Busy Here")
    assert repr(msg) == "<Message 486 Busy Here>"
    assert parse(b"SIP/2.0 200\r\n\r\n").reason == b""


def test_trailing_whitespace_on_the_request_line_is_not_forwarded() -> None:
    """RFC 4475 3.1.2.10: be liberal in what is accepted, but never forward the extra SP."""
    msg = parse(edit(b"INVITE sip:h SIP/2.0", b"INVITE sip:h SIP/2.0 \t"))
    assert msg.start == b"INVITE sip:h SIP/2.0"


def test_lower_case_version_is_accepted() -> None:
    """RFC 3261 7.1: the SIP-Version string is case-insensitive."""
    assert parse(edit(b"INVITE sip:h SIP/2.0", b"INVITE sip:h sip/2.0")).method == "INVITE"


def test_limits() -> None:
    """Hard limits bound memory per message: size (513) and header count (400)."""
    with pytest.raises(BadMessage) as e:
        parse(INVITE, Limits(max_message_size=len(INVITE) - 1))
    assert e.value.status == 513
    parse(INVITE, Limits(max_message_size=len(INVITE)))
    with pytest.raises(BadMessage, match="Too many header fields"):
        parse(INVITE, Limits(max_header_count=6))
    parse(INVITE, Limits(max_header_count=7))


def test_to_bytes_round_trips_exactly() -> None:
    """A proxy forwards what it does not touch byte for byte."""
    assert parse(INVITE).to_bytes() == INVITE
