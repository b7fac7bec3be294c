"""The header edits of a proxy, as pure functions on a message's lines.

The top Via's received/rport (RFC 3261 18.2.1, RFC 3581 4), Max-Forwards
(16.6 item 3), Route processing (16.4) and our Record-Route (16.6 item 4,
RFC 5658), the Via we strip from responses (16.7 item 3), the back ends'
Server/User-Agent the edge may strip (issue 11), and which of our
listeners sends toward a destination. ``lines`` are a message's header
lines, edited in place; an emptied line becomes b"" so indexes stay valid.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from sipfleet.sip.address import parse_address, split_commas
from sipfleet.sip.errors import BadMessage
from sipfleet.sip.uri import URI, parse_uri
from sipfleet.sip.via import Via, parse_via, split_first

if TYPE_CHECKING:
    from sipfleet.proxy.net import Listener, Peer
    from sipfleet.sip.message import Message

__all__ = [
    "AGENT_HEADERS",
    "add_record_route",
    "blank_agents",
    "decrement_max_forwards",
    "is_local",
    "listener_for",
    "pop_routes",
    "remove_route_values",
    "route_uri",
    "set_top_via",
    "strip_via",
    "top_via_value",
    "via_after_ours",
]

_RPORT: Final = re.compile(rb";\s*rport(?=\s*(;|$))", re.I)
AGENT_HEADERS: Final = (b"server", b"user-agent")


def listener_for(out: dict[tuple[str, int], Listener], proto: str, host: str) -> Listener | None:
    """Our listener that sends ``proto`` to ``host`` (its address family), if any."""
    return out.get((proto, 6 if ":" in host else 4))


# -- Via -----------------------------------------------------------------------
def top_via_value(via: Via, peer: Peer) -> bytes:
    """The first Via with received/rport added (RFC 3261 18.2.1, RFC 3581 4)."""
    raw = via.raw
    if via.has_rport and not via.rport_port:
        raw = _RPORT.sub(b";rport=%d" % peer.port, raw, count=1)
        if via.received is None:
            raw += b";received=" + peer.host.encode()
        return raw
    if via.host != peer.host and via.received is None:
        return raw + b";received=" + peer.host.encode()
    return raw


def set_top_via(msg: Message, lines: list[bytes], top_via: bytes) -> None:
    """Put ``top_via`` (from ``top_via_value``) in place of the first Via value."""
    if top_via is not msg.via.raw:
        i = msg.first[b"via"]
        rest = split_first(lines[i].partition(b":")[2])[1]
        lines[i] = b"Via: " + top_via + (b", " + rest if rest else b"")


def strip_via(msg: Message, strip_agent: bool) -> bytes | None:
    """The response without our Via (16.7 item 3), and without Server/User-Agent
    when ``strip_agent``; None when no Via is left (it was for us, 16.7 item 4)."""
    i = msg.first[b"via"]
    line = msg.lines[i]
    rest = split_first(line.partition(b":")[2])[1]
    if rest is None:
        if not msg.repeated or msg.names.count(b"via") == 1:
            return None
        lines = msg.lines[:i] + msg.lines[i + 1 :]
    else:
        lines = msg.lines[:i] + [b"Via: " + rest] + msg.lines[i + 1 :]
    if strip_agent:
        lines = _without_agent(msg, lines, i, rest is None)  # issue 11
    return b"\r\n".join((msg.start, *lines, b"", msg.body))


def _without_agent(msg: Message, lines: list[bytes], via: int, via_dropped: bool) -> list[bytes]:
    """``lines`` (msg's, with the Via at ``via`` edited or dropped) less Server/User-Agent."""
    names = msg.names
    if via_dropped:
        names = names[:via] + names[via + 1 :]
    return [line for name, line in zip(names, lines, strict=True) if name not in AGENT_HEADERS]


def blank_agents(msg: Message, lines: list[bytes]) -> None:
    """Empty the Server/User-Agent lines (issue 11: a back end's stays at the edge)."""
    for j, name in enumerate(msg.names):
        if name in AGENT_HEADERS:
            lines[j] = b""


def via_after_ours(msg: Message) -> Via | None:
    """The second Via of a response: where it goes after us."""
    vias = msg.values(b"via")
    if len(vias) < 2:
        return None
    try:
        return parse_via(vias[1])
    except BadMessage:
        return None


# -- Max-Forwards (16.6 item 3) ------------------------------------------------
def decrement_max_forwards(msg: Message, lines: list[bytes], default: int) -> None:
    """One hop less, or ``default`` when the request had none."""
    mf = msg.max_forwards
    if mf is None:
        lines.append(b"Max-Forwards: %d" % default)
    else:
        lines[msg.first[b"max-forwards"]] = b"Max-Forwards: %d" % (mf - 1)


# -- Route and Record-Route ----------------------------------------------------
def route_uri(value: bytes) -> URI:
    """The URI of one Route (or Record-Route) value."""
    return parse_uri(parse_address(value, "Route").uri.decode("utf-8", "surrogateescape"))


def is_local(uri: URI, local_addrs: set[tuple[str, int]]) -> bool:
    """``uri`` names this proxy (a listener, its advertised address or an alias)."""
    return (uri.host, uri.effective_port()) in local_addrs


def pop_routes(
    msg: Message,
    lines: list[bytes],
    own: dict[bytes, URI],
    own_prefixes: list[tuple[bytes, URI]],
    local_addrs: set[tuple[str, int]],
) -> tuple[int, URI | None, bytes | None, bytes | None]:
    """16.4: drop the Route values that name us from the top of the route set.

    ``own`` are our Record-Route values exactly, ``own_prefixes`` those signed
    (prefix + token + ">"). Returns how many were dropped, the last of them
    (its transport says how to reach the next hop of a double Record-Route),
    the next Route value, and the signature our values carried (routesig).
    """
    popped = 0
    hint: URI | None = None
    token: bytes | None = None
    for i, name in enumerate(msg.names):
        if name != b"route":
            continue
        values = split_commas(lines[i].partition(b":")[2])
        k = 0
        for v in values:
            uri = own.get(v)
            if uri is None:
                for prefix, puri in own_prefixes:
                    if v.startswith(prefix) and v.endswith(b">"):
                        uri = puri
                        token = v[len(prefix) : -1]
                        break
            if uri is None:
                uri = route_uri(v)
                if not is_local(uri, local_addrs):
                    break
                sf = uri.params.get("sf")
                if sf:
                    token = sf.encode()
            hint = uri
            k += 1
        popped += k
        if k < len(values):
            if k:
                lines[i] = b"Route: " + b", ".join(values[k:])
            return popped, hint, values[k], token
        lines[i] = b""
    return popped, hint, None, token


def remove_route_values(
    msg: Message, lines: list[bytes], count: int, from_end: bool = False
) -> None:
    """Drop ``count`` Route values from the start (or end) of the Route set."""
    idx = msg.positions(b"route")
    if from_end:
        idx.reverse()
    for i in idx:
        if count <= 0:
            break
        values = split_commas(lines[i].partition(b":")[2])
        n = min(count, len(values))
        count -= n
        keep = values[: len(values) - n] if from_end else values[n:]
        lines[i] = b"Route: " + b", ".join(keep) if keep else b""


def add_record_route(parts: list[bytes], out: Listener, inbound: Listener, rr_token: bytes) -> None:
    """Our Record-Route (16.6 item 4), signed; two when the request leaves by
    another listener than it came in on (double Record-Route, RFC 5658)."""
    token = rr_token + b">"
    parts.append(out.rr_head + token)
    if inbound is not out:
        parts.append(inbound.rr_head + token)
