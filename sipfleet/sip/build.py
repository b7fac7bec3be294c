"""Building the few messages a proxy writes itself: local responses
(RFC 3261 8.2.6), and the Via, Max-Forwards and Route edits of forwarding.
"""

from __future__ import annotations

import zlib
from typing import Final

from sipfleet.sip.message import Message

__all__ = ["REASONS", "make_response", "set_server_header", "to_tag_for"]

REASONS: Final[dict[int, str]] = {
    100: "Trying",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    487: "Request Terminated",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
    513: "Message Too Large",
}

# The Server header of our own responses: none by default, so that a
# scanner cannot fingerprint the edge. One process, one setting.
_server: list[bytes] = []
_COPY: Final = (b"via", b"from", b"call-id", b"cseq")


def to_tag_for(msg: Message) -> bytes:
    """A To tag that is the same for every retransmission of ``msg``."""
    seed = b"|".join((msg.get(b"call-id") or b"", msg.get(b"from") or b"", msg.get(b"cseq") or b""))
    return b"sf%08x" % zlib.crc32(seed)


def make_response(
    msg: Message,
    status: int,
    reason: str | None = None,
    extra: tuple[bytes, ...] | list[bytes] = (),
    body: bytes = b"",
    top_via: bytes | None = None,
) -> bytes:
    """A response to request ``msg``: Via, From, To (tag added for status > 100),
    Call-ID and CSeq copied as received; ``top_via`` replaces the first Via
    value (the one with received/rport added).
    """
    out = [b"SIP/2.0 %d %s" % (status, (reason or REASONS.get(status, "Unknown")).encode())]
    lines = msg.lines
    names = msg.names
    first_via = True
    to_done = False
    for i, name in enumerate(names):
        if name in _COPY:
            line = lines[i]
            if b"\n" in line or b"\r" in line:  # a bare CR/LF must not split our answer
                line = line.replace(b"\r", b" ").replace(b"\n", b" ")
            if name == b"via" and first_via and top_via is not None:
                first_via = False
                rest = line.partition(b":")[2]
                comma = _first_comma(rest)
                line = b"Via: " + top_via + (rest[comma:] if comma >= 0 else b"")
            out.append(line)
        elif name == b"to" and not to_done:
            to_done = True
            line = lines[i]
            if b"\n" in line or b"\r" in line:
                line = line.replace(b"\r", b" ").replace(b"\n", b" ")
            if status > 100 and msg.to_tag is None:
                line = line.rstrip() + b";tag=" + to_tag_for(msg)
            out.append(line)
    out.extend(_server)
    out.extend(extra)
    out.append(b"Content-Length: %d" % len(body))
    out.append(b"")
    out.append(body)
    return b"\r\n".join(out)


def set_server_header(value: str | None) -> None:
    """The Server header value of every local response; None or "" for none."""
    _server.clear()
    if value:
        _server.append(b"Server: " + value.encode("utf-8"))


def _first_comma(value: bytes) -> int:
    if value.find(b'"') < 0:
        return value.find(b",")
    quoted = False
    for i, c in enumerate(value):
        if c == 0x22:
            quoted = not quoted
        elif c == 0x2C and not quoted:
            return i
    return -1
