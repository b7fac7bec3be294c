"""``[[discovery]]`` and ``[dns]``: sets whose members follow DNS records, and
the resolvers asked. ``to_settings()`` gives the pure discovery logic
(``sipfleet.dispatch.discovery``) its plain ``DiscoverySettings``; the DNS
adapter (``sipfleet.aio.discovery``) reads ``DnsConfig``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from sipfleet.config.base import Model
from sipfleet.dispatch.discovery import parse_server, render_attrs
from sipfleet.dispatch.settings import DiscoverySettings

__all__ = ["DiscoveryConfig", "DnsConfig"]


class DnsConfig(Model):
    """``[dns]``: the resolvers discovery asks."""

    servers: list[str] = Field(
        default_factory=list,
        description='"IP[:PORT]" or "[IPv6]:PORT" of recursive resolvers, asked in order; '
        "empty = the system's (/etc/resolv.conf)",
    )
    timeout: float = Field(
        2.0, gt=0, le=30, description="seconds a lookup may take (all servers and retries)"
    )

    @field_validator("servers")
    @classmethod
    def _servers(cls, v: list[str]) -> list[str]:
        for s in v:
            parse_server(s)
        return v


class DiscoveryConfig(Model):
    """``[[discovery]]``: a set whose members are the records of a DNS name."""

    set: int = Field(ge=0, lt=1 << 31, description="destination set the members join")
    srv: str | None = Field(
        None,
        description="SRV name, e.g. _sip._udp.media.default.svc.cluster.local (a Kubernetes "
        "headless Service); each target's A/AAAA addresses become members on the record's port",
    )
    a: str | None = Field(
        None, description="or an A/AAAA name: every address becomes a member on `port`"
    )
    port: int = Field(5060, ge=1, le=65535, description="port of the members of an `a` name")
    transport: Literal["udp", "tcp", "tls"] | None = Field(
        None,
        description="transport of the members; default from the SRV name (_sip._udp udp, "
        "_sip._tcp tcp, _sips._tcp tls), udp for an `a` name",
    )
    family: Literal["ipv4", "ipv6", "both"] = Field(
        "ipv4", description="addresses used: A records, AAAA records or both"
    )
    refresh: float = Field(
        30.0, ge=0.2, le=86400, description="seconds between lookups (a DNS TTL is not waited for)"
    )
    attrs: str = Field(
        "",
        description="attrs of every member, with ${host} (the SRV target or the `a` name), "
        "${ip} and ${port} replaced, e.g. 'duid=${host};maxload=100'",
    )
    flags: int = Field(0, ge=0, lt=1 << 31, description="flags of every member (8: probe it)")
    priority: int = Field(
        0,
        ge=-(1 << 30),
        le=1 << 30,
        description="priority of the members; an SRV record's priority is subtracted (RFC 2782: "
        "lower is preferred), so the preferred records come first in the set",
    )
    srv_weight: Literal["weight", "rweight", "off"] = Field(
        "weight",
        description="SRV weights become this attribute, scaled to sum 100 within each SRV "
        "priority (algorithms 9 and 11, weighted consistent hashing); off: not used; an "
        "attrs template that sets it wins",
    )
    drain_timeout: float = Field(
        600.0,
        ge=0,
        description="a member gone from DNS drains (no new calls) until its calls end, at most "
        "this long (s), then is removed",
    )
    max_members: int = Field(
        1000, ge=1, le=100_000, description="members taken from one answer; the rest are ignored"
    )

    @model_validator(mode="after")
    def _one_name(self) -> DiscoveryConfig:
        if (self.srv is None) == (self.a is None):
            raise ValueError("give exactly one of srv (an SRV name) or a (an A/AAAA name)")
        name = (self.srv or self.a or "").strip()
        labels = name.rstrip(".").split(".")
        if len(name) > 253 or any(not 0 < len(x) <= 63 or " " in x for x in labels):
            raise ValueError(f"bad DNS name {name!r}")
        try:
            render_attrs(self.attrs, "member.example", "192.0.2.1", 5060)
        except ValueError as e:
            raise ValueError(f"attrs: {e}") from None
        return self

    def to_settings(self) -> DiscoverySettings:
        """The plain settings discovery runs on."""
        return DiscoverySettings(**self.model_dump())
