"""Errors of the SIP layer, in two families.

    SipError
    +-- BadMessage        the peer's fault: answer with ``status`` (400, 413,
    |                     416, 420, 482, 483, 505, 513 ...) when the message
    |                     can be answered, else drop it and count the drop
    +-- (none yet)

Our own bugs are plain exceptions: they are logged loudly by the adapters and
never answered on the wire.
"""

from __future__ import annotations

__all__ = ["BadMessage", "SipError"]


class SipError(Exception):
    """Base of errors about a SIP message."""


class BadMessage(SipError):
    """A message broke the grammar or a rule a proxy must enforce.

    ``status`` is the response a request deserves (a response is dropped);
    ``reason`` is the phrase to send with it.
    """

    def __init__(self, reason: str, status: int = 400, headers: tuple[bytes, ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.headers = headers
