"""SIP and SIPS URIs (RFC 3261 section 19.1), parsed once into a small value.

Only what routing needs is split out (scheme, user, host, port, the
``transport``/``lr``/``maddr`` parameters); the raw text is kept so a URI can
be written back exactly as it came.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from sipfleet.sip.errors import BadMessage

__all__ = ["URI", "format_hostport", "parse_uri"]

_SCHEMES = ("sip", "sips", "tel")


class URI:
    """A parsed URI. ``host`` is lower-case and bare (no IPv6 brackets)."""

    __slots__ = ("headers", "host", "params", "password", "port", "raw", "scheme", "user")

    def __init__(
        self,
        raw: str,
        scheme: str,
        user: str | None,
        password: str | None,
        host: str,
        port: int | None,
        params: dict[str, str | None],
        headers: str | None,
    ) -> None:
        self.raw = raw
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = params
        self.headers = headers

    @property
    def transport(self) -> str:
        """Lower-case transport parameter, ``udp`` when absent (``tcp`` for sips)."""
        t = self.params.get("transport")
        if t:
            return t.lower()
        return "tls" if self.scheme == "sips" else "udp"

    @property
    def lr(self) -> bool:
        return "lr" in self.params

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    def default_port(self) -> int:
        return 5061 if self.scheme == "sips" or self.transport == "tls" else 5060

    def effective_port(self) -> int:
        return self.port if self.port is not None else self.default_port()

    def hostport(self) -> str:
        return format_hostport(self.host, self.port)

    def __str__(self) -> str:
        return self.raw

    def __repr__(self) -> str:
        return f"URI({self.raw!r})"


def format_hostport(host: str, port: int | None) -> str:
    h = f"[{host}]" if ":" in host else host
    return h if port is None else f"{h}:{port}"


def _split_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for part in text.split(";"):
        if not part:
            continue
        name, eq, value = part.partition("=")
        params[name.strip().lower()] = value.strip() if eq else None
    return params


@lru_cache(maxsize=4096)
def parse_uri(raw: str) -> URI:
    """Parse a sip:, sips: or tel: URI; raise BadMessage (400) when malformed.

    Cached: the same few URIs (destinations, our own Record-Route, a
    dialog's Contact) come by again and again, and URI objects are treated
    as immutable.
    """
    text = raw.strip()
    colon = text.find(":")
    if colon <= 0:
        raise BadMessage(f"URI without scheme: {raw!r}")
    scheme = text[:colon].lower()
    if scheme not in _SCHEMES:
        raise BadMessage(f"unsupported URI scheme {scheme!r}", status=416)
    rest = text[colon + 1 :]
    if scheme == "tel":
        number, _, ptext = rest.partition(";")
        return URI(text, scheme, number, None, "", None, _split_params(ptext), None)
    if any(c in rest for c in ' \t<>"') or not rest:
        raise BadMessage(f"malformed URI {raw!r}")
    user: str | None = None
    password: str | None = None
    # The user part may hold '?', ';' and ',' (RFC 4475 3.1.1.2): find the
    # host first; an '@' can only be escaped after it.
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, sep, pw = userinfo.partition(":")
        password = pw if sep else None
        if not user:
            raise BadMessage(f"empty user part in URI {raw!r}")
    headers: str | None = None
    q = rest.find("?")
    if q >= 0:
        rest, headers = rest[:q], rest[q + 1 :]
    hostport, _, ptext = rest.partition(";")
    host, port = _split_hostport(hostport, raw)
    return URI(text, scheme, user, password, host, port, _split_params(ptext), headers)


def _split_hostport(hostport: str, raw: str) -> tuple[str, int | None]:
    port: int | None = None
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise BadMessage(f"unterminated IPv6 reference in {raw!r}")
        host = hostport[1:end]
        tail = hostport[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise BadMessage(f"bad IPv6 reference in {raw!r}") from None
        if tail:
            if not tail.startswith(":"):
                raise BadMessage(f"malformed host in {raw!r}")
            port = _port(tail[1:], raw)
    else:
        host, sep, ptxt = hostport.partition(":")
        if sep:
            port = _port(ptxt, raw)
    if not host:
        raise BadMessage(f"URI without host: {raw!r}")
    return host.lower(), port


def _port(text: str, raw: str) -> int:
    # isascii(): str.isdigit() also takes digits of other scripts ('²' makes int() raise).
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or not 0 < int(text) < 65536:
        raise BadMessage(f"bad port in URI {raw!r}")
    return int(text)
