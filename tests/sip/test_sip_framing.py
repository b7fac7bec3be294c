"""Stream framing (RFC 3261 18.3) and CRLF keep-alives (RFC 5626 3.5.1):
sipfleet/sip/framing.py's StreamFramer."""

from __future__ import annotations

import pytest

from sipfleet.sip.errors import BadMessage
from sipfleet.sip.framing import PING, StreamFramer
from sipfleet.sip.message import parse


def message(
    body: bytes = b"hello", cl: bytes | None = None, name: bytes = b"Content-Length"
) -> bytes:
    length = str(len(body)).encode() if cl is None else cl
    return (
        b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n"
        b"Call-ID: c\r\n" + name + b": " + length + b"\r\n\r\n" + body
    )


M1 = message(b"one")
M2 = message(b"")
M3 = message(b"three\r\n\r\nwith a blank line")


def feed_all(chunks: list[bytes], **kw: int) -> tuple[list[bytes], int, int]:
    f = StreamFramer(**kw)
    out: list[bytes] = []
    pings = 0
    for chunk in chunks:
        got, n = f.feed(chunk)
        out += got
        pings += n
    return out, pings, f.pending


@pytest.mark.parametrize(
    ("chunks", "messages", "pings", "pending"),
    [
        ([M1], [M1], 0, 0),
        ([M1 + M2 + M3], [M1, M2, M3], 0, 0),
        # RFC 3261 18.3: the body is Content-Length octets, even if it holds CRLFCRLF.
        ([M3[:40], M3[40:-5], M3[-5:]], [M3], 0, 0),
        ([M1[:-1]], [], 0, len(M1) - 1),
        ([M1 + M2[:10]], [M1], 0, 10),
        # RFC 5626 3.5.1: a double CRLF between messages is a ping.
        ([PING], [], 1, 0),
        ([PING + M1 + PING + PING + M2], [M1, M2], 3, 0),
        ([b"\r\n", b"\r\n"], [], 1, 0),
        ([b"\r", b"\n\r", b"\n"], [], 1, 0),
        # A lone CRLF may be the start of a ping: kept; a stray one before a message
        # is skipped (RFC 3261 7.5: empty lines before the start line are ignored).
        ([b"\r\n"], [], 0, 2),
        ([b"\r\n" + M1], [M1], 0, 0),
        ([b"\n" + M1], [M1], 0, 0),
        # Compact form of Content-Length (RFC 3261 7.3.3).
        ([message(b"xy", name=b"l")], [message(b"xy", name=b"l")], 0, 0),
        ([message(b"xy", name=b"content-LENGTH")], [message(b"xy", name=b"content-LENGTH")], 0, 0),
    ],
)
def test_feed(chunks: list[bytes], messages: list[bytes], pings: int, pending: int) -> None:
    """RFC 3261 18.3 / RFC 5626 3.5.1: messages cut by Content-Length; pings counted."""
    assert feed_all(chunks) == (messages, pings, pending)


def test_one_octet_at_a_time() -> None:
    """RFC 3261 18.3: a message arriving in any pieces is framed the same."""
    stream = PING + M1 + M3 + PING + M2
    assert feed_all([stream[i : i + 1] for i in range(len(stream))]) == ([M1, M3, M2], 2, 0)


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (
            message().replace(b"Content-Length: 5\r\n", b""),
            400,
            "Missing Content-Length on a stream transport",
        ),
        (message(cl=b"5x"), 400, "Missing Content-Length on a stream transport"),
        (message(cl=b"-5"), 400, "Missing Content-Length on a stream transport"),
        (
            message().replace(b"Call-ID", b"Content-Length: 5\r\nX"),
            400,
            "Multiple Content-Length headers",
        ),
        (message(cl=b"99999"), 513, "Message Too Large"),
        (message(cl=b"9" * 50), 513, "Message Too Large"),
        # Past 4300 digits int() itself raises ValueError: still the peer's fault.
        (message(cl=b"9" * 5000), 513, "Message Too Large"),
    ],
)
def test_framing_errors(data: bytes, status: int, reason: str) -> None:
    """RFC 3261 18.3: on a stream, Content-Length is mandatory; without a sane one the
    stream cannot be resynchronised (the caller closes the connection)."""
    with pytest.raises(BadMessage) as e:
        StreamFramer().feed(data)
    assert (e.value.status, e.value.reason) == (status, reason)


def test_header_block_over_the_limit_without_its_end() -> None:
    """A header block that never ends is bounded by max_size (513, RFC 3261 21.5.11)."""
    f = StreamFramer(max_size=100)
    f.feed(b"OPTIONS sip:h SIP/2.0\r\n")
    with pytest.raises(BadMessage) as e:
        f.feed(b"X-Pad: " + b"a" * 100)
    assert e.value.status == 513


def test_message_at_the_limit_passes_one_over_fails() -> None:
    """max_size bounds a whole message (head and body): at the limit it passes."""
    data = message(b"x" * 40)
    assert feed_all([data], max_size=len(data)) == ([data], 0, 0)
    with pytest.raises(BadMessage) as e:
        feed_all([data], max_size=len(data) - 1)
    assert e.value.status == 513


def test_a_framed_message_parses_as_one_stream_message() -> None:
    """RFC 3261 18.3: the framer hands the parser exactly one message."""
    out, _, _ = feed_all([M3 + M1])
    assert out == [M3, M1]
    msg = parse(out[0], datagram=False)
    assert msg.body == b"three\r\n\r\nwith a blank line"
