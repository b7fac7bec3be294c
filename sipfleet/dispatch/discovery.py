"""Fleet discovery by DNS: the members of a set follow an SRV (or A/AAAA) record set.

Pure: no sockets, no event loop, no clock. An entry's settings are a plain
``DiscoverySettings`` (the config side: ``sipfleet.config.discovery``). The
adapter (``sipfleet.aio.discovery``) asks DNS every ``refresh`` seconds and
hands each answer in as ``SrvRecord``s plus the addresses of their targets; this module turns that into destination specs
(``member_specs``), compares them with the members it had (``Discovered.apply``)
and says who joined, who left and who changed.

A member is one address and port: a target with several A/AAAA records gives one
destination per address (``sip:IP:PORT``), so every address takes calls, unlike a
list-file line naming the host, which Kamailio (and sipfleet's loader) resolves
to its first address only. Members that vanish from DNS are not dropped at once:
they are *draining* (no new calls, their calls finish) until their load is 0 or
``drain_timeout`` passes; the adapter then removes them. A failed lookup
(timeout, SERVFAIL, NXDOMAIN, an empty answer) changes nothing: the last good
members stay.

Discovered members are owned by DNS, not by the store: they are never written
to it, and ``merge`` adds them to whatever the store holds whenever the
destinations are rebuilt (a reload, an add, a refresh), so a reload keeps them.
A member whose set and URI a stored destination already has is left to the
store.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from string import Template
from typing import NamedTuple

from sipfleet.dispatch.attrs import parse_attrs
from sipfleet.dispatch.destination import DestinationSpec, StateKey, normalize_uri
from sipfleet.dispatch.settings import DiscoverySettings
from sipfleet.dispatch.snapshot import Snapshot

__all__ = [
    "Change",
    "Discovered",
    "Member",
    "MemberState",
    "SrvRecord",
    "base_specs",
    "diff",
    "member_specs",
    "merge",
    "parse_server",
    "spec_key",
    "transport_of",
]

#: Placeholders the ``attrs`` template may use.
PLACEHOLDERS = ("host", "ip", "port")

_SERVICE = re.compile(r"_(sips?)\._(udp|tcp|sctp|tls)\.", re.IGNORECASE)


def parse_server(text: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT``, ``[IPv6]:PORT`` or a bare IPv6 -> (ip, port); port 53
    when absent. Raises ValueError with what is wrong."""
    t = text.strip()
    host, port = t, 53
    if t.startswith("["):
        end = t.find("]")
        if end < 0:
            raise ValueError(f"DNS server {text!r}: unterminated [IPv6]")
        host, tail = t[1:end], t[end + 1 :]
        if tail:
            if not tail.startswith(":") or not tail[1:].isdecimal():
                raise ValueError(f"DNS server {text!r}: expected [IPv6]:PORT")
            port = int(tail[1:])
    elif t.count(":") == 1:
        host, _, p = t.partition(":")
        if not p.isdecimal():
            raise ValueError(f"DNS server {text!r}: bad port")
        port = int(p)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"DNS server {text!r}: not an IP address") from None
    if not 0 < port < 65536:
        raise ValueError(f"DNS server {text!r}: port out of range")
    return host, port


def transport_of(cfg: DiscoverySettings) -> str:
    """The members' transport: configured, else from the SRV service labels."""
    if cfg.transport is not None:
        return cfg.transport
    if cfg.srv is not None:
        m = _SERVICE.match(cfg.name)
        if m is not None:
            scheme, proto = m.group(1).lower(), m.group(2).lower()
            if scheme == "sips" or proto == "tls":
                return "tls"
            return proto if proto in ("udp", "tcp") else "udp"
    return "udp"


def render_attrs(template: str, host: str, ip: str, port: int) -> str:
    """The attrs of one member; ValueError for an unknown placeholder or bad attrs."""
    try:
        text = Template(template).substitute(host=host, ip=ip, port=str(port))
    except (KeyError, ValueError) as e:
        raise ValueError(
            f"unknown or bad placeholder {e} in {template!r} (use ${{host}}, ${{ip}}, ${{port}})"
        ) from None
    parse_attrs(text)
    return text


class SrvRecord(NamedTuple):
    """One SRV record (RFC 2782); an A/AAAA entry is one record with priority and
    weight 0, the entry's port and the name as target."""

    priority: int
    weight: int
    port: int
    target: str


def _uri(ip: str, port: int, transport: str) -> str:
    host = f"[{ip}]" if ":" in ip else ip
    suffix = "" if transport == "udp" else f";transport={transport}"
    return f"sip:{host}:{port}{suffix}"


def _has_attr(attrs: str, name: str) -> bool:
    return any(p.partition("=")[0].strip().lower() == name for p in attrs.split(";"))


def member_specs(
    cfg: DiscoverySettings,
    records: Iterable[SrvRecord],
    addresses: Mapping[str, Sequence[str]],
) -> tuple[list[DestinationSpec], list[str]]:
    """The destination specs of one answer, and warnings (what was left out).

    ``addresses`` maps each target (lower-case, no trailing dot) to its
    addresses; a target with none gives no member. Members are ordered by SRV
    priority, then target, then address, so the same answer always gives the
    same list; one address and port appears once (its first record wins).
    """
    transport = transport_of(cfg)
    warnings: list[str] = []
    # (record, target, ip) for every address, in a stable order
    rows: list[tuple[SrvRecord, str, str]] = []
    for rec in sorted(records, key=lambda r: (r.priority, r.target.lower(), r.port, r.weight)):
        target = rec.target.lower().rstrip(".")
        ips = addresses.get(target, ())
        if not ips:
            warnings.append(f"{target} has no address")
        for ip in sorted(set(ips), key=_ip_order):
            rows.append((rec, target, ip))
    seen: set[tuple[str, int]] = set()
    unique: list[tuple[SrvRecord, str, str]] = []
    for rec, target, ip in rows:
        if (ip, rec.port) in seen:
            continue
        seen.add((ip, rec.port))
        unique.append((rec, target, ip))
    if len(unique) > cfg.max_members:
        warnings.append(f"{len(unique)} members, only the first {cfg.max_members} taken")
        unique = unique[: cfg.max_members]
    weights = _weights(unique) if cfg.srv_weight != "off" else {}
    out: list[DestinationSpec] = []
    for i, (rec, target, ip) in enumerate(unique):
        attrs = render_attrs(cfg.attrs, target, ip, rec.port)
        w = weights.get(i, 0)
        if w and not _has_attr(attrs, cfg.srv_weight):
            attrs = f"{attrs};{cfg.srv_weight}={w}" if attrs else f"{cfg.srv_weight}={w}"
        out.append(
            DestinationSpec(
                cfg.set,
                _uri(ip, rec.port, transport),
                cfg.flags,
                cfg.priority - rec.priority,
                attrs,
                f"discovered: {cfg.kind} {cfg.name}",
            )
        )
    return out, warnings


def _ip_order(ip: str) -> tuple[int, int]:
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return (9, 0)
    return (a.version, int(a))


def _weights(rows: Sequence[tuple[SrvRecord, str, str]]) -> dict[int, int]:
    """SRV weights scaled to 1..100, summing to ~100 within each SRV priority; a
    record's weight is shared by its target's addresses. All zero: none."""
    per_record: dict[SrvRecord, int] = {}
    for rec, _, _ in rows:
        per_record[rec] = per_record.get(rec, 0) + 1
    share = [rec.weight / per_record[rec] for rec, _, _ in rows]
    totals: dict[int, float] = {}
    for (rec, _, _), s in zip(rows, share, strict=True):
        totals[rec.priority] = totals.get(rec.priority, 0.0) + s
    out: dict[int, int] = {}
    for i, ((rec, _, _), s) in enumerate(zip(rows, share, strict=True)):
        total = totals[rec.priority]
        if total > 0:
            out[i] = min(100, max(1, round(100 * s / total)))
    return out


def spec_key(spec: DestinationSpec) -> StateKey:
    """The dispatcher's identity of a spec: set and URI, lower-case."""
    try:
        uri = normalize_uri(spec.uri)
    except ValueError:
        uri = spec.uri
    return (spec.set_id, uri.lower())


@dataclass(frozen=True, slots=True)
class Change:
    """What one answer changed: specs that joined (new, or back from draining),
    left (now draining) and changed (same URI, other attrs/priority)."""

    joined: tuple[DestinationSpec, ...] = ()
    left: tuple[DestinationSpec, ...] = ()
    changed: tuple[DestinationSpec, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.joined or self.left or self.changed)


def diff(previous: Mapping[StateKey, DestinationSpec], fresh: Sequence[DestinationSpec]) -> Change:
    """Compare the members before with a fresh answer, by set and URI."""
    now = {spec_key(s): s for s in fresh}
    joined = tuple(s for k, s in now.items() if k not in previous)
    changed = tuple(s for k, s in now.items() if k in previous and previous[k] != s)
    left = tuple(s for k, s in previous.items() if k not in now)
    return Change(joined, left, changed)


class MemberState(Enum):
    ACTIVE = "active"
    DRAINING = "draining"


@dataclass(slots=True)
class Member:
    spec: DestinationSpec
    state: MemberState = MemberState.ACTIVE
    since: float = 0.0  # monotonic time of the last change of state


@dataclass
class Discovered:
    """The members of one ``[[discovery]]`` entry and its lookup history.

    ``members`` keeps join order, so the specs (and the set built from them)
    are the same for the same answers. Bounded: at most ``max_members`` active
    members from the current answer plus those still draining, each of which
    leaves within ``drain_timeout``.
    """

    cfg: DiscoverySettings
    members: dict[StateKey, Member] = field(default_factory=dict)
    lookups: int = 0
    errors: int = 0  # failed lookups, ever
    failing_since: float | None = None
    last_ok: float | None = None
    last_error: str = ""
    last_error_reported: float | None = None
    warnings: tuple[str, ...] = ()

    def active(self) -> dict[StateKey, DestinationSpec]:
        return {k: m.spec for k, m in self.members.items() if m.state is MemberState.ACTIVE}

    def draining(self) -> dict[StateKey, Member]:
        return {k: m for k, m in self.members.items() if m.state is MemberState.DRAINING}

    def specs(self) -> list[DestinationSpec]:
        """Every member the dispatcher must hold: active and draining."""
        return [m.spec for m in self.members.values()]

    def apply(self, fresh: Sequence[DestinationSpec], now: float) -> Change:
        """A good answer: update the members; return what changed."""
        self.lookups += 1
        self.last_ok = now
        self.failing_since = None
        change = diff(self.active(), fresh)
        for spec in change.joined:
            key = spec_key(spec)
            self.members.pop(key, None)  # back from draining: joins again, at the end
            self.members[key] = Member(spec, MemberState.ACTIVE, now)
        for spec in change.changed:
            self.members[spec_key(spec)].spec = spec
        for spec in change.left:
            m = self.members[spec_key(spec)]
            m.state, m.since = MemberState.DRAINING, now
        return change

    def fail(self, reason: str, now: float, every: float) -> bool:
        """A failed lookup: members stay. Whether to report it now: the first
        failure after a success, then at most once per ``every`` seconds."""
        self.lookups += 1
        self.errors += 1
        self.last_error = reason
        if self.failing_since is None:
            self.failing_since = now
            self.last_error_reported = now
            return True
        if self.last_error_reported is None or now - self.last_error_reported >= every:
            self.last_error_reported = now
            return True
        return False

    def expired(self, now: float) -> list[Member]:
        """Draining members past ``drain_timeout``."""
        limit = self.cfg.drain_timeout
        return [m for m in self.draining().values() if now - m.since >= limit]

    def remove(self, key: StateKey) -> Member | None:
        """Forget a member that finished draining."""
        m = self.members.get(key)
        if m is None or m.state is not MemberState.DRAINING:
            return None
        return self.members.pop(key)


def merge(
    stored: Sequence[DestinationSpec], entries: Iterable[Discovered]
) -> tuple[list[DestinationSpec], set[StateKey]]:
    """What the dispatcher installs: the stored specs, then every discovered member
    that no stored spec (or earlier entry) has; and the keys of those members."""
    taken = {spec_key(s) for s in stored}
    out = list(stored)
    mine: set[StateKey] = set()
    for entry in entries:
        for spec in entry.specs():
            key = spec_key(spec)
            if key in taken:
                continue
            taken.add(key)
            mine.add(key)
            out.append(spec)
    return out, mine


def base_specs(snapshot: Snapshot, discovered: set[StateKey]) -> list[DestinationSpec]:
    """The specs of a snapshot that discovery does not own, in an input order that
    builds the same sets again (sets in insertion order; within a set the build
    reverses equal priorities, so they are given reversed)."""
    out: list[DestinationSpec] = []
    for set_id in snapshot.insertion_order:
        for d in reversed(snapshot.sets[set_id].entries):
            if d.key not in discovered:
                out.append(d.spec)
    return out
