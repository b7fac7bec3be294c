"""Fakes for driving the pure core in tests: a recording sink, a fake clock,
and a tiny scripted UA that writes the messages SIPp would.

Shipped with the package (like ``trio.testing``) so that tests of other
projects embedding sipfleet's core can use them too.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from sipfleet.proxy.net import Peer
from sipfleet.sip.message import Message, parse

__all__ = ["UA", "FakeClock", "RecordingSink"]


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class RecordingSink:
    """Collects what the core sends; ``take()`` returns and clears it."""

    def __init__(self) -> None:
        self.sent: list[tuple[Peer, bytes]] = []

    def send(self, peer: Peer, data: bytes) -> None:
        self.sent.append((peer, data))

    def take(self) -> list[tuple[Peer, Message]]:
        out = [(p, parse(d)) for p, d in self.sent]
        self.sent.clear()
        return out

    def take_to(self, host: str, port: int) -> list[Message]:
        """Messages sent to host:port (removed); the rest stays queued."""
        keep: list[tuple[Peer, bytes]] = []
        out: list[Message] = []
        for p, d in self.sent:
            if p.host == host and p.port == port:
                out.append(parse(d))
            else:
                keep.append((p, d))
        self.sent = keep
        return out


_counter = itertools.count(1)


class UA:
    """Writes requests and responses the way SIPp's scenarios do."""

    def __init__(self, host: str, port: int, transport: str = "UDP") -> None:
        self.host = host
        self.port = port
        self.transport = transport

    def invite(
        self,
        ruri: str,
        call_id: str | None = None,
        extra: Iterable[str] = (),
        body: str = "v=0\r\n",
        method: str = "INVITE",
        cseq: int = 1,
        to_tag: str | None = None,
        routes: Iterable[str] = (),
        branch: str | None = None,
    ) -> bytes:
        n = next(_counter)
        call_id = call_id or f"call-{n}@{self.host}"
        branch = branch or f"z9hG4bK-ua-{n}"
        to = f"<{ruri}>" + (f";tag={to_tag}" if to_tag else "")
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/{self.transport} {self.host}:{self.port};branch={branch}",
            *(f"Route: {r}" for r in routes),
            f"From: sipp <sip:sipp@{self.host}:{self.port}>;tag=from-{call_id}",
            f"To: {to}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:sipp@{self.host}:{self.port}>",
            "Max-Forwards: 70",
            *extra,
            f"Content-Length: {len(body)}",
            "",
            body,
        ]
        return "\r\n".join(lines).encode()

    def request(self, method: str, ruri: str, **kw: object) -> bytes:
        body = kw.pop("body", "")
        return self.invite(ruri, method=method, body=body, **kw)  # type: ignore[arg-type]

    def respond(
        self,
        req: Message,
        status: int,
        reason: str = "OK",
        to_tag: str | None = "uas-tag",
        record_route: bool = True,
        body: str = "",
    ) -> bytes:
        """A response echoing Via, Record-Route, From, To (+tag), Call-ID, CSeq."""
        lines = [f"SIP/2.0 {status} {reason}"]
        for name, line in zip(req.names, req.lines, strict=True):
            if name in (b"via", b"from", b"call-id", b"cseq") or (
                record_route and name == b"record-route"
            ):
                lines.append(line.decode())
            elif name == b"to":
                text = line.decode()
                if to_tag and status > 100 and ";tag=" not in text:
                    text += f";tag={to_tag}"
                lines.append(text)
        lines.append(f"Contact: <sip:{self.host}:{self.port};transport={self.transport}>")
        lines.append(f"Content-Length: {len(body)}")
        lines.append("")
        lines.append(body)
        return "\r\n".join(lines).encode()
