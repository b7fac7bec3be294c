"""Destination attributes: Kamailio's ``name=value;...`` string, parsed once.

Known names follow ``ds_set_attrs`` in Kamailio's dispatch.c (names are
case-insensitive, a later duplicate wins, one trailing ``;`` is dropped from
the body); unknown names are kept in ``extra``. Values may be quoted.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final, NamedTuple

__all__ = ["Attrs", "parse_attrs"]

_EMPTY: Final[MappingProxyType[str, str]] = MappingProxyType({})


class Attrs(NamedTuple):
    """Parsed attributes of one destination (immutable)."""

    body: str | None = None
    duid: str | None = None
    maxload: int = 0
    weight: int = 0
    rweight: int = 0
    cc: int = 0
    latency: int | None = None
    socket: str | None = None
    sockname: str | None = None
    ping_from: str | None = None
    obproxy: str | None = None
    ocrate: int = 0
    ocmin: int = 0
    ocmax: int = 100
    extra: MappingProxyType[str, str] = _EMPTY


NO_ATTRS: Final = Attrs()
_tuple_new = tuple.__new__


def _int(name: str, value: str) -> int:
    body = value[1:] if value[:1] in "+-" else value
    if not body.isdecimal():
        raise ValueError(f"attribute {name}={value!r} is not an integer")
    return int(value)


def _range(name: str, n: int, lo: int, hi: int | None) -> int:
    if n < lo or (hi is not None and n > hi):
        raise ValueError(f"attribute {name}={n} out of range {lo}..{hi if hi is not None else ''}")
    return n


def parse_attrs(text: str) -> Attrs:
    """Parse an attrs string; raise ValueError naming the bad attribute.

    ``weight``/``rweight`` accept 0 (unset, as Kamailio treats an
    out-of-range value) and 1..100. ``ocmin``/``ocmax``/``ocrate`` are
    normalised as ``ds_set_attrs`` does (ocmax 0 or >100 -> 100; ocrate
    clamped into [ocmin, ocmax]).
    """
    if not text:
        return NO_ATTRS
    body = text[:-1] if text[-1] == ";" else text
    if not body:
        return NO_ATTRS
    duid = socket = sockname = ping_from = obproxy = None
    latency: int | None = None
    maxload = weight = rweight = cc = ocrate = ocmin = ocmax = 0
    extra: dict[str, str] | None = None
    for part in body.split(";"):
        name, _, value = part.partition("=")
        if not name.isalnum():
            # Rare shapes: white space, quotes, underscores, empty parts.
            name = name.strip()
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if not name:
                if part.strip():
                    raise ValueError(f"attribute without name in {text!r}")
                continue
        key = name.lower()
        if key == "duid":
            duid = value or None
        elif key == "weight":
            weight = _range(name, int(value) if value.isdecimal() else _int(name, value), 0, 100)
        elif key == "maxload":
            maxload = _range(name, int(value) if value.isdecimal() else _int(name, value), 0, None)
        elif key == "rweight":
            rweight = _range(name, int(value) if value.isdecimal() else _int(name, value), 0, 100)
        elif key == "socket":
            socket = value or None
        elif key == "sockname":
            sockname = value or None
        elif key == "ping_from":
            ping_from = value or None
        elif key == "obproxy":
            obproxy = value or None
        elif key == "cc":
            cc = int(value) if value.isdecimal() else _int(name, value)
        elif key == "latency":
            latency = _range(name, int(value) if value.isdecimal() else _int(name, value), 0, None)
        elif key == "ocrate":
            ocrate = _range(name, _int(name, value), 0, None)
        elif key == "ocmin":
            ocmin = _range(name, _int(name, value), 0, None)
        elif key == "ocmax":
            ocmax = _range(name, _int(name, value), 0, None)
        else:
            if extra is None:
                extra = {}
            extra[name] = value
    # Normalisation order as in ds_set_attrs.
    if ocmax > 100 or ocmax == 0:
        ocmax = 100
    if ocmin > 100 or ocmin > ocmax:
        ocmin = 0
    if ocrate > 100:
        ocrate = 0
    ocrate = min(max(ocrate, ocmin), ocmax)
    # tuple.__new__ skips the generated keyword __new__ (a reload makes 100k).
    return _tuple_new(
        Attrs,
        (
            body,
            duid,
            maxload,
            weight,
            rweight,
            cc,
            latency,
            socket,
            sockname,
            ping_from,
            obproxy,
            ocrate,
            ocmin,
            ocmax,
            MappingProxyType(extra) if extra else _EMPTY,
        ),
    )
