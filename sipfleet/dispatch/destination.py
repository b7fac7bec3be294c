"""Destinations: the spec as stored, and the immutable loaded form.

A ``DestinationSpec`` is one row of a list file or of the ``dispatcher``
table, exactly as written. ``make_destination`` validates it and derives what
selection and probing need; the result (``Destination``) never changes, while
runtime state lives in ``sipfleet.dispatch.state``.

URIs without a scheme get ``sip:`` prepended, as Kamailio's ``pack_dest``
does. Parsing is cached by URI text and by attrs text: a reload of a list
that barely changed parses almost nothing again (both caches are bounded).
"""

from __future__ import annotations

import re
from typing import NamedTuple, TypeAlias

from sipfleet.dispatch.attrs import Attrs, parse_attrs
from sipfleet.dispatch.errors import DestinationError
from sipfleet.sip.errors import BadMessage
from sipfleet.sip.uri import parse_uri

__all__ = [
    "PROTO_IDS",
    "Address",
    "Destination",
    "DestinationSpec",
    "StateKey",
    "check_uri_attrs",
    "make_destination",
    "normalize_uri",
    "validate_spec",
]

#: Kamailio's PROTO_* numbers, printed as PROTOID by ``dispatcher.list full``.
PROTO_IDS = {"udp": 1, "tcp": 2, "tls": 3, "sctp": 4, "ws": 5, "wss": 6}

#: Kamailio's DS_HN_SIZE - 2: longer host names are refused at load.
MAX_HOST_LEN = 254

#: Bound of each parse cache; past it the cache is cleared (a reload of a
#: list this large still parses every line only once).
CACHE_LIMIT = 1 << 18


class DestinationSpec(NamedTuple):
    """One destination as stored: a list-file line or a ``dispatcher`` row."""

    set_id: int
    uri: str
    flags: int = 0
    priority: int = 0
    attrs: str = ""
    description: str = ""


#: Identity of a destination's runtime and persisted admin state: the set id
#: and the URI lower-cased, as Kamailio matches addresses case-insensitively
#: (``ds_reinit_state``). A plain tuple: built for every entry on load.
StateKey: TypeAlias = tuple[int, str]


class Address(NamedTuple):
    """A resolved next hop: IP literal, port and transport; ``others`` are the
    name's other addresses (requests from them come from this back end too)."""

    ip: str
    port: int
    transport: str
    others: tuple[str, ...] = ()


# Parsed URI facts, a plain tuple (one per distinct URI text):
# (uri, scheme, host, host_lc, port, transport, proto_id, is_ip).
# ``uri`` is the normalised text ("sip:" prepended when missing); ``host`` as
# written (case kept, IPv6 brackets kept) as Kamailio prints HOST; ``host_lc``
# lower-case and bare, as parse_uri returns it.
_UriInfo: TypeAlias = tuple[str, str, str, str, "int | None", str, int, bool]

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}\Z")
# The common form "sip[s]:[user@]host[:port][;params]" with an IPv4 or plain
# host, recognised without parse_uri. It only accepts what parse_uri accepts,
# with the same results (tests cross-check); anything else goes to parse_uri.
_FAST_URI = re.compile(
    r"(sips?):(?:[^@;?:\s<>\"]+@)?"
    rf"(?:({_OCTET}(?:\.{_OCTET}){{3}})(?=[:;]|\Z)|([A-Za-z0-9.\-]+))"
    r"(?::([0-9]{1,5}))?((?:;[^;?@\s<>\"]*)*)\Z",
    re.IGNORECASE,
)

_uri_cache: dict[str, _UriInfo | str] = {}
_attrs_cache: dict[str, Attrs | str] = {}


def _transport_param(params: str) -> str | None:
    for part in params.split(";"):
        name, eq, value = part.partition("=")
        if eq and name.strip().lower() == "transport":
            return value.strip().lower() or None
    return None


def _uri_info(raw: str) -> _UriInfo:
    text = raw.strip()
    if not text:
        raise ValueError("empty destination URI")
    colon = text.find(":")
    scheme = text[:colon].lower() if colon > 0 else ""
    if scheme == "tel":
        raise ValueError(f"a tel: URI cannot be a destination: {text!r}")
    if scheme != "sip" and scheme != "sips":
        text = "sip:" + text
    m = _FAST_URI.match(text)
    port: int | None = None
    if m is not None:
        scheme, ip, name, port_s, params = m.groups()
        if port_s is not None:
            port = int(port_s)
            if not 0 < port < 65536:
                m = None
    if m is not None:
        scheme = scheme.lower()
        host = ip or name
        host_lc = host.lower()
        tparam = _transport_param(params) if params else None
        is_ip = ip is not None
    else:
        try:
            parsed = parse_uri(text)
        except BadMessage as exc:
            raise ValueError(f"bad destination URI {raw.strip()!r}: {exc.reason}") from None
        if not parsed.host:
            raise ValueError(f"destination URI without host: {raw.strip()!r}")
        scheme = parsed.scheme
        host_lc = parsed.host
        host = f"[{host_lc}]" if parsed.is_ipv6 else host_lc
        port = parsed.port
        tparam = parsed.params.get("transport")
        tparam = tparam.lower() if tparam else None
        is_ip = parsed.is_ipv6 or _IPV4.match(host_lc) is not None
    if len(host) > MAX_HOST_LEN:
        raise ValueError(f"host name too long in {text!r}")
    transport = tparam or ("tls" if scheme == "sips" else "udp")
    proto_id = PROTO_IDS.get(tparam, 7) if tparam else 0
    return (text, scheme, host, host_lc, port, transport, proto_id, is_ip)


def _cached_uri(raw: str) -> _UriInfo:
    hit = _uri_cache.get(raw)
    if hit is None:
        try:
            hit = _uri_info(raw)
        except ValueError as exc:
            hit = str(exc)
        if len(_uri_cache) >= CACHE_LIMIT:
            _uri_cache.clear()
        _uri_cache[raw] = hit
    if isinstance(hit, str):
        raise ValueError(hit)
    return hit


def _cached_attrs(text: str) -> Attrs:
    hit = _attrs_cache.get(text)
    if hit is None:
        try:
            hit = parse_attrs(text)
        except ValueError as exc:
            hit = str(exc)
        if len(_attrs_cache) >= CACHE_LIMIT:
            _attrs_cache.clear()
        _attrs_cache[text] = hit
    if isinstance(hit, str):
        raise ValueError(hit)
    return hit


def normalize_uri(raw: str) -> str:
    """The destination URI as Kamailio keeps it; raise ValueError if invalid."""
    return _cached_uri(raw)[0]


class Destination:
    """One loaded destination. Immutable; compared and hashed by identity.

    ``load_key`` is what call-load counts against: the ``duid`` attribute,
    or the URI for destinations without one (Kamailio refuses call-load for
    those; sipfleet counts them by URI). ``index`` is the position in its
    set, fixed when the snapshot is built.
    """

    __slots__ = (
        "_info",
        "attrs",
        "flags",
        "index",
        "key",
        "load_key",
        "priority",
        "set_id",
        "spec",
        "uri",
    )

    def __init__(self, spec: DestinationSpec, info: _UriInfo, attrs: Attrs) -> None:
        self.spec = spec
        self._info = info
        self.set_id = spec[0]
        uri = self.uri = info[0]
        self.flags = spec[2]
        self.priority = spec[3]
        self.attrs = attrs
        self.key: StateKey = (spec[0], uri.lower())
        duid = attrs[1]
        self.load_key = duid if duid is not None else uri
        self.index = -1

    @property
    def description(self) -> str:
        return self.spec[5]

    @property
    def scheme(self) -> str:
        return self._info[1]

    @property
    def host(self) -> str:
        """The host as written (IPv6 in brackets), as Kamailio prints HOST."""
        return self._info[2]

    @property
    def port(self) -> int | None:
        """The port written in the URI, None when absent."""
        return self._info[4]

    @property
    def transport(self) -> str:
        """The ``transport`` parameter, lower-case; udp (tls for sips) if absent."""
        return self._info[5]

    @property
    def proto_id(self) -> int:
        """Kamailio's PROTO_* of the transport parameter (0 when absent)."""
        return self._info[6]

    @property
    def address(self) -> Address | None:
        """The next hop when the host is an IP literal, else None."""
        info = self._info
        if not info[7]:
            return None
        port = info[4]
        if port is None:
            port = 5061 if info[1] == "sips" or info[5] == "tls" else 5060
        return Address(info[3], port, info[5])

    @property
    def host_name(self) -> str:
        """The host without IPv6 brackets, for DNS."""
        return self._info[3]

    @property
    def duid(self) -> str | None:
        return self.attrs.duid

    def __repr__(self) -> str:
        return f"Destination({self.set_id}, {self.uri!r})"


def _check(spec: DestinationSpec) -> tuple[_UriInfo, Attrs]:
    if not 0 <= spec.set_id < 1 << 31:
        raise ValueError(f"set id {spec.set_id} out of range 0..2147483647")
    if not 0 <= spec.flags < 1 << 31:
        raise ValueError(f"flags {spec.flags} out of range 0..2147483647")
    if not -(1 << 31) <= spec.priority < 1 << 31:
        raise ValueError(f"priority {spec.priority} out of range")
    return _cached_uri(spec.uri), _cached_attrs(spec.attrs)


def check_uri_attrs(uri: str, attrs: str) -> None:
    """Raise ValueError if the URI or the attrs string is bad (cached)."""
    _cached_uri(uri)
    if attrs:
        _cached_attrs(attrs)


def validate_spec(spec: DestinationSpec) -> None:
    """Raise ValueError saying what is wrong with a spec (URI, attrs, numbers)."""
    _check(spec)


def make_destination(spec: DestinationSpec) -> Destination:
    """Validate a spec into a Destination; raise DestinationError on bad data."""
    try:
        info, attrs = _check(spec)
    except ValueError as exc:
        raise DestinationError(str(exc), f"set {spec.set_id} destination {spec.uri!r}") from None
    return Destination(spec, info, attrs)
