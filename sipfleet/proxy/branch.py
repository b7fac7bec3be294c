"""Via branch values we write (RFC 3261 16.6 item 8, 16.3 item 4, 16.11).

A branch is ``z9hG4bK`` + ``sf`` + a 4-hex instance tag + an 8-hex loop
hash + ``.`` + a per-transaction counter. The loop hash covers what does
not change while a request loops (tags, Call-ID, Request-URI, CSeq number,
Proxy-Require, Proxy-Authorization), so a request that comes back with our
Via and the same hash is a loop (482), and one whose hash differs is a
spiral, which is allowed.
"""

from __future__ import annotations

import os
import zlib

from sipfleet.sip.message import Message

__all__ = ["BranchFactory"]


class BranchFactory:
    __slots__ = ("_counter", "_salt", "prefix")

    def __init__(self, instance: bytes) -> None:
        tag = zlib.crc32(instance) & 0xFFFF
        self.prefix = "z9hG4bKsf%04x" % tag
        # A fresh salt per process keeps branches of a restarted proxy from
        # colliding with transactions the peers still remember.
        self._salt = os.urandom(3).hex()
        self._counter = 0

    def loop_hash(self, msg: Message) -> str:
        # Python's hash is salted per process, which is fine: a loop comes
        # back to the process that wrote the Via, and it is much cheaper.
        key: tuple[object, ...] = (msg.ruri, msg.from_tag, msg.to_tag, msg.call_id, msg.cseq[0])
        first = msg.first
        if b"proxy-require" in first or b"proxy-authorization" in first:
            key += (*msg.get_lines(b"proxy-require"), *msg.get_lines(b"proxy-authorization"))
        return "%08x" % (hash(key) & 0xFFFFFFFF)

    def new(self, loop_hash: str) -> str:
        self._counter += 1
        return f"{self.prefix}{loop_hash}.{self._salt}{self._counter:x}"

    def stateless(self, incoming_branch: str, salt: str = "") -> str:
        """A branch that is the same for retransmissions of one request (16.11)."""
        return "%s%08x.s%s" % (self.prefix, zlib.crc32((incoming_branch + salt).encode()), salt)

    def is_ours(self, branch: str) -> bool:
        return branch.startswith(self.prefix)

    def looped(self, msg: Message, via_lines: list[bytes]) -> bool:
        """True when a Via we wrote carries the loop hash this request has now."""
        needle = self.prefix.encode()
        current: bytes | None = None
        for line in via_lines:
            start = line.find(needle)
            while start >= 0:
                if current is None:
                    current = self.loop_hash(msg).encode()
                h = line[start + len(needle) : start + len(needle) + 8]
                if h == current:
                    return True
                start = line.find(needle, start + 1)
        return False
