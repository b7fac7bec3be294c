"""What the pure core knows of the network: its listeners, peers, and the
sink it writes through. The adapters in ``sipfleet.aio`` implement the sink.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from sipfleet.sip.uri import format_hostport

__all__ = ["Listener", "Peer", "Sink"]


class Peer(NamedTuple):
    """A remote endpoint reached through one of our listeners.

    For TCP the (listener, host, port) triple also names the connection.
    """

    listener: int
    host: str
    port: int


class Listener:
    """One socket we listen on, and how we name ourselves on it."""

    __slots__ = (
        "advertise",
        "family",
        "host",
        "index",
        "port",
        "proto",
        "reliable",
        "route_prefix",
        "rr_head",
        "rr_line",
        "sent_by",
        "via_prefix",
    )

    def __init__(
        self,
        index: int,
        proto: str,
        host: str,
        port: int,
        advertise: str | None = None,
        record_route: tuple[str, int] | None = None,
    ) -> None:
        self.index = index
        self.proto = proto.lower()
        self.host = host
        self.port = port
        self.family = 6 if ":" in host else 4
        self.reliable = self.proto != "udp"
        adv_host = advertise or host
        self.advertise = format_hostport(adv_host, port)
        self.sent_by = self.advertise.encode()
        self.via_prefix = b"Via: SIP/2.0/" + self.proto.upper().encode() + b" " + self.sent_by
        transport = b"" if self.proto == "udp" else b";transport=" + self.proto.encode()
        # [cluster] advertise: a name every node of the cluster answers for, so a
        # dialog's later requests can reach any of them (Via stays ours: the
        # answers to our transactions must come back here).
        rr_by = self.sent_by if record_route is None else format_hostport(*record_route).encode()
        self.rr_line = b"Record-Route: <sip:" + rr_by + transport + b";lr>"
        # Our Record-Route carries a signature (sipfleet.proxy.routesig): the
        # line is rr_head + token + b">", and a Route value of ours starts with
        # route_prefix, recognised without parsing.
        self.route_prefix = b"<sip:" + rr_by + transport + b";lr;sf="
        self.rr_head = b"Record-Route: " + self.route_prefix

    def __repr__(self) -> str:
        return f"Listener({self.proto}:{self.advertise})"


class Sink(Protocol):
    """Where the core's output goes. ``send`` must not call back into the core."""

    def send(self, peer: Peer, data: bytes) -> None: ...
