"""The Via header field (RFC 3261 sections 18.2, 20.42; RFC 3581 rport).

A proxy touches only the topmost Via of what it receives, so only that one
is parsed; the others stay raw. The common shape (``SIP/2.0/UDP host:port;
params`` with no odd whitespace) takes a split-based fast path; everything
else goes through the full grammar.
"""

from __future__ import annotations

import re
from typing import Final

from sipfleet.sip.address import split_commas
from sipfleet.sip.errors import BadMessage

__all__ = ["MAGIC_COOKIE", "Via", "parse_via", "split_first"]

MAGIC_COOKIE = "z9hG4bK"

# RFC 3261 25.1: "SIP" SLASH "2.0" SLASH transport LWS sent-by, LWS allowed around '/'.
_VIA: Final = re.compile(
    rb"\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9.!%*_+`'~-]+)\s+"
    rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?:\s*:\s*([0-9]{1,5}))?\s*(;.*)?",
    re.S | re.I,
)
_PARAM: Final = re.compile(
    rb"\s*([A-Za-z0-9.!%*_+`'~-]+)\s*(?:=\s*(\"(?:[^\"\\]|\\.)*\"|[^\s;\"]+)\s*)?"
)
_PARAM_AT: Final = re.compile(b";" + _PARAM.pattern)
_HOST: Final = re.compile(rb"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]")
_TRANSPORTS: Final = {
    b"UDP": "UDP",
    b"TCP": "TCP",
    b"TLS": "TLS",
    b"SCTP": "SCTP",
    b"WS": "WS",
    b"WSS": "WSS",
}


_PORTS: dict[bytes, int] = {b"5060": 5060, b"5061": 5061}  # int(bytes) is slow: memo
_PNAMES: Final = {n.encode(): n for n in ("branch", "rport", "received", "maddr", "ttl")}


class Via:
    """One parsed Via value. ``host`` is bare (IPv6 without brackets)."""

    __slots__ = (
        "branch",
        "has_rport",
        "host",
        "params",
        "port",
        "raw",
        "received",
        "rport",
        "rport_port",
        "transport",
    )

    def __init__(
        self, raw: bytes, transport: str, host: str, port: int | None, params: dict[str, str | None]
    ) -> None:
        self.raw = raw
        self.transport = transport
        self.host = host
        self.port = port
        self.params = params
        self.branch = params.get("branch") or ""
        self.received = params.get("received")
        # RFC 3581 4: rport is a flag, or a port (1-65535); any other value counts as
        # the flag (isascii: str.isdigit() also takes other scripts' digits, which
        # int() refuses). The plain-typed has_rport/rport_port are what the core tests:
        # compiled by mypyc, an ``int | bool`` loses True (a conditional expression
        # joins it to int: 1) and ``is False`` on it does not hold.
        self.has_rport = "rport" in params
        self.rport_port = 0
        self.rport: int | bool = False  # the older view: False, True or the port
        if self.has_rport:
            rport = params["rport"]
            self.rport = True
            if rport and len(rport) <= 5 and rport.isascii() and rport.isdigit():
                value = int(rport)
                if 0 < value < 65536:
                    self.rport_port = value
                    self.rport = value

    @property
    def rfc3261_branch(self) -> bool:
        return self.branch.startswith(MAGIC_COOKIE)

    def sent_by(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return h if self.port is None else f"{h}:{self.port}"

    def response_address(self, default_port: int = 5060) -> tuple[str, int]:
        """Where a response to this hop goes (RFC 3261 18.2.2, RFC 3581 section 4)."""
        host = self.received or self.host
        if self.rport_port:
            return host, self.rport_port
        return host, self.port or default_port


def parse_via(value: bytes) -> Via:
    """Parse one Via value (no commas); BadMessage(400) when malformed."""
    proto, sp, rest = value.partition(b" ")
    if (
        sp
        and proto[:8].upper() == b"SIP/2.0/"
        and proto[8:].upper() in _TRANSPORTS
        and rest.find(b" ") < 0
        and rest.find(b"\t") < 0
        and rest.find(b'"') < 0
    ):
        hostport, _, ptext = rest.partition(b";")
        if hostport[:1] == b"[":
            end = hostport.find(b"]")
            host_b = hostport[: end + 1]
            tail = hostport[end + 1 :] if end > 0 else b"x"
            # After the reference: nothing or ":port"; else the full grammar rejects it.
            port_b = tail[1:] if tail[:1] == b":" else (b"x" if tail else b"")
        else:
            host_b, _, port_b = hostport.partition(b":")
        if (
            _HOST.fullmatch(host_b) is not None
            and (not port_b or port_b.isdigit())
            and len(port_b) <= 5
        ):
            params: dict[str, str | None] = {}
            if ptext:
                for part in ptext.split(b";"):
                    name, eq, val = part.partition(b"=")
                    key = _PNAMES.get(name)
                    if key is None:
                        if not name:
                            raise BadMessage("Malformed Via parameter")
                        key = name.decode("ascii", "replace").lower()
                    params[key] = val.decode("utf-8", "surrogateescape") if eq else None
            host = host_b.decode("ascii").lower()
            if host[0] == "[":
                host = host[1:-1]
            port = _PORTS.get(port_b) if port_b else None
            if port is None and port_b:
                port = int(port_b)
                if len(_PORTS) < 4096:  # the ports a proxy sees are few; bound the memo
                    _PORTS[port_b] = port
            if port is not None and not 0 < port < 65536:
                raise BadMessage("Bad port in Via header")
            return Via(value, _TRANSPORTS[proto[8:].upper()], host, port, params)
    return _parse_via_slow(value)


def _parse_via_slow(value: bytes) -> Via:
    m = _VIA.fullmatch(value)
    if m is None:
        raise BadMessage("Malformed Via header")
    transport, host_b, port_b, ptext = m.groups()
    host = host_b.decode("ascii").lower()
    if host.startswith("["):
        host = host[1:-1]
    port: int | None = None
    if port_b is not None:
        port = int(port_b)
        if not 0 < port < 65536:
            raise BadMessage("Bad port in Via header")
    params: dict[str, str | None] = {}
    if ptext:
        # One ';'-led parameter at a time: a quoted gen-value may hold ';' (RFC 3261 25.1).
        pos = 0
        while pos < len(ptext):
            pm = _PARAM_AT.match(ptext, pos)
            if pm is None:
                raise BadMessage("Malformed Via parameter")
            name, val = pm.groups()
            params[name.decode("ascii").lower()] = (
                val.decode("utf-8", "surrogateescape") if val is not None else None
            )
            pos = pm.end()
    return Via(value, transport.decode("ascii").upper(), host, port, params)


def split_first(value: bytes) -> tuple[bytes, bytes | None]:
    """Split a Via header line's value into its first value and the rest."""
    comma = value.find(b",")
    if comma < 0:
        return value.strip(), None
    if value.find(b'"') < 0:
        rest = value[comma + 1 :].strip()
        return value[:comma].strip(), rest or None
    parts = split_commas(value)
    return parts[0], (b", ".join(parts[1:]) or None)
