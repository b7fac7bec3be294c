"""Stream framing for SIP over TCP (RFC 3261 18.3) and CRLF keep-alives
(RFC 5626 3.5.1): bytes in, whole messages out.
"""

from __future__ import annotations

import re
from typing import Final

from sipfleet.sip.errors import BadMessage

__all__ = ["PING", "PONG", "StreamFramer"]

PING: Final = b"\r\n\r\n"
PONG: Final = b"\r\n"
_CL: Final = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*([0-9]+)[ \t]*(?=\r\n)", re.I)


class StreamFramer:
    """Splits a byte stream into messages by Content-Length.

    ``feed`` returns the complete messages and how many keep-alive pings
    (double CRLF between messages) arrived, each of which deserves a pong.
    A framing error (no or bad Content-Length, a header block over the size
    limit) raises BadMessage: the stream cannot be resynchronised and the
    connection must be closed.
    """

    __slots__ = ("_buf", "max_size")

    def __init__(self, max_size: int = 65536) -> None:
        self._buf = bytearray()
        self.max_size = max_size

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pings = 0
        while buf:
            # Keep-alives and stray CRLFs between messages.
            if buf[0] in (0x0D, 0x0A):
                if buf.startswith(PING):
                    pings += 1
                    del buf[:4]
                    continue
                if len(buf) < 4 and PING.startswith(bytes(buf)):
                    break  # maybe the start of a ping
                del buf[0]
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.max_size:
                    raise BadMessage("Message Too Large", status=513)
                break
            head = bytes(buf[: end + 2])
            m = _CL.search(head)
            if m is None:
                raise BadMessage("Missing Content-Length on a stream transport")
            if len(_CL.findall(head)) > 1:
                raise BadMessage("Multiple Content-Length headers")
            digits = m.group(1)
            # len() first: int() of thousands of digits raises ValueError, not BadMessage.
            if len(digits) > 9:
                raise BadMessage("Message Too Large", status=513)
            total = end + 4 + int(digits)
            if total > self.max_size:
                raise BadMessage("Message Too Large", status=513)
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out, pings

    @property
    def pending(self) -> int:
        return len(self._buf)
