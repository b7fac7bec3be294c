"""The routing decision hook: where a new out-of-dialog request goes.

The proxy asks its ``Router`` once per new request and gets either a
rejection or an ordered list of candidate targets; it walks that list on
failover (RFC 3261 16.6 serial forking) and reports each branch's outcome
back, so health and load bookkeeping live with the router.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

from sipfleet.proxy.net import Peer
from sipfleet.sip.message import Message
from sipfleet.sip.uri import URI, parse_uri

__all__ = [
    "DEFAULT_FAILOVER_CODES",
    "Decision",
    "RoundRobinRouter",
    "Router",
    "Target",
]

DEFAULT_FAILOVER_CODES: Final = frozenset({408, 500, 502, 503, 504})


class Target:
    """One candidate next hop. ``dest`` is the router's own record of it."""

    __slots__ = ("dest", "host", "port", "proto", "uri")

    def __init__(self, uri: URI, host: str, port: int, proto: str, dest: object = None) -> None:
        self.uri = uri
        self.host = host
        self.port = port
        self.proto = proto
        self.dest = dest

    @classmethod
    def from_uri(cls, text: str, dest: object = None) -> Target:
        uri = parse_uri(text)
        return cls(
            uri, uri.params.get("maddr") or uri.host, uri.effective_port(), uri.transport, dest
        )

    def __repr__(self) -> str:
        return f"Target({self.uri.raw})"


class Decision:
    """A router's answer: candidates in order, or a rejection."""

    __slots__ = ("failover_codes", "max_attempts", "reject", "route", "targets")

    def __init__(
        self,
        targets: Sequence[Target] = (),
        failover_codes: frozenset[int] = DEFAULT_FAILOVER_CODES,
        max_attempts: int = 0,
        reject: tuple[int, str, tuple[bytes, ...]] | None = None,
        route: str = "",
    ) -> None:
        self.targets = targets
        self.failover_codes = failover_codes
        self.max_attempts = max_attempts or len(targets)
        self.reject = reject
        self.route = route


class Router(Protocol):
    def route(self, msg: Message, source: Peer, now: float) -> Decision: ...

    def outcome(self, target: Target, status: int, now: float) -> None:
        """A branch to ``target`` ended with ``status`` (408 on timeout, 503 on
        transport failure)."""
        ...

    def is_backend(self, host: str) -> bool:
        """``host`` (an IP literal, or a name as configured) is one of our back
        ends: trusted to send in-dialog requests anywhere, and a next hop that
        any in-dialog request may reach."""
        ...


class RoundRobinRouter:
    """Round-robin over a fixed list, failing over to the rest in order."""

    def __init__(
        self, destinations: Sequence[str], failover_codes: frozenset[int] = DEFAULT_FAILOVER_CODES
    ) -> None:
        self.targets = [Target.from_uri(d) for d in destinations]
        self.failover_codes = failover_codes
        self._hosts = frozenset(t.host for t in self.targets)
        self._next = 0

    def route(self, msg: Message, source: Peer, now: float) -> Decision:
        n = len(self.targets)
        if n == 0:
            return Decision(reject=(503, "No Destination Available", (b"Retry-After: 5",)))
        i = self._next % n
        self._next = i + 1
        return Decision(self.targets[i:] + self.targets[:i], self.failover_codes)

    def outcome(self, target: Target, status: int, now: float) -> None:
        pass

    def is_backend(self, host: str) -> bool:
        return host in self._hosts
