"""name-addr / addr-spec values: From, To, Contact, Route, Record-Route
(RFC 3261 section 20.10, 25.1), and comma splitting that respects quotes and
angle brackets.
"""

from __future__ import annotations

import re

from sipfleet.sip.errors import BadMessage

__all__ = ["Address", "parse_address", "split_commas", "tag_of"]

_TOKEN_LWS = re.compile(rb"[A-Za-z0-9.!%*_+`'~\- \t]*")
_TAG_VALUE = re.compile(rb"[^;,\s]+")
_TAG = re.compile(rb";\s*tag\s*=\s*([^;,\s]+)", re.I)


class Address:
    """A parsed name-addr or addr-spec: display name, URI text and the raw
    header parameters that follow it (``;tag=...;expires=...``)."""

    __slots__ = ("angle", "display", "params", "uri")

    def __init__(self, display: bytes | None, uri: bytes, params: bytes, angle: bool) -> None:
        self.display = display
        self.uri = uri
        self.params = params
        self.angle = angle

    def param(self, name: str) -> str | None:
        """The value of a header parameter (case-insensitive name), '' if valueless."""
        key = name.lower().encode()
        for part in self.params.split(b";"):
            n, eq, v = part.partition(b"=")
            if n.strip().lower() == key:
                return v.strip().decode("utf-8", "surrogateescape") if eq else ""
        return None

    @property
    def tag(self) -> bytes | None:
        m = _TAG.search(self.params)
        return m.group(1) if m else None


def parse_address(value: bytes, what: str = "address") -> Address:
    """Parse one name-addr or addr-spec; BadMessage(400) naming ``what`` when malformed."""
    v = value.strip()
    lt = v.find(b"<")
    if lt >= 0 or v.startswith(b'"'):
        display: bytes | None
        if v.startswith(b'"'):
            end = _quoted_end(v, 0)
            if end < 0:
                raise BadMessage(f"Unterminated quoted string in {what}")
            display = v[: end + 1]
            lt = v.find(b"<", end + 1)
            if lt < 0 or v[end + 1 : lt].strip():
                raise BadMessage(f"Malformed {what}")
        else:
            display = v[:lt].strip() or None
            if display is not None and _TOKEN_LWS.fullmatch(display) is None:
                raise BadMessage(f"Display name of {what} must be quoted")
        gt = v.find(b">", lt)
        if gt < 0:
            raise BadMessage(f"Missing '>' in {what}")
        # RFC 4475 3.1.2.14: LWS just inside <> is tolerated.
        uri = v[lt + 1 : gt].strip()
        if not uri or uri.find(b" ") >= 0 or uri.find(b"\t") >= 0:
            raise BadMessage(f"Malformed URI in {what}")
        return Address(display, uri, v[gt + 1 :], True)
    # addr-spec: everything up to the first ';' is the URI, the rest header params.
    semi = v.find(b";")
    uri = v if semi < 0 else v[:semi]
    uri = uri.rstrip()
    if not uri or uri.find(b" ") >= 0 or uri.find(b"?") >= 0 or uri.find(b",") >= 0:
        raise BadMessage(f"Malformed {what}")
    return Address(None, uri, b"" if semi < 0 else v[semi:], False)


def tag_of(value: bytes) -> bytes | None:
    """The ``tag`` parameter of a From/To value, without a full parse."""
    gt = value.rfind(b">")
    start = gt + 1 if gt >= 0 else 0
    i = value.find(b";tag=", start)
    if i >= 0:  # the usual spelling
        m = _TAG_VALUE.match(value, i + 5)
        if m is not None:
            return m.group()
    m = _TAG.search(value, start)
    return m.group(1) if m else None


def _quoted_end(v: bytes, start: int) -> int:
    i = start + 1
    n = len(v)
    while i < n:
        c = v[i]
        if c == 0x5C:  # backslash escapes the next octet
            i += 2
            continue
        if c == 0x22:
            return i
        i += 1
    return -1


def split_commas(value: bytes) -> list[bytes]:
    """Split a comma-joined header value, respecting quotes and <...>."""
    if value.find(b",") < 0:
        v = value.strip()
        return [v] if v else []
    if value.find(b'"') < 0 and value.find(b"<") < 0:
        return [p.strip() for p in value.split(b",") if p.strip()]
    out: list[bytes] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if quoted:
            if c == 0x5C:
                i += 1
            elif c == 0x22:
                quoted = False
        elif c == 0x22:
            quoted = True
        elif c == 0x3C:
            depth += 1
        elif c == 0x3E:
            depth -= 1
        elif c == 0x2C and depth == 0:
            part = value[start:i].strip()
            if part:
                out.append(part)
            start = i + 1
        i += 1
    part = value[start:].strip()
    if part:
        out.append(part)
    return out
