"""``[security]``, ``[[trunk]]``, ``[overload]`` and ``[limits]``: the typed
config of edge security and bounds; the core gets the plain
``SecuritySettings`` (``sipfleet.security.settings``) built by ``to_settings``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from pydantic import Field, field_validator

from sipfleet.config.base import Model, check_cidrs
from sipfleet.security.settings import DEFAULT_SCANNER_AGENTS, SecuritySettings, TrunkSpec

__all__ = ["LimitsConfig", "OverloadConfig", "SecurityConfig", "TrunkConfig", "to_settings"]


class TrunkConfig(Model):
    """``[[trunk]]``: a carrier allowed to start dialogs; with any trunk listed, only trunks may."""

    name: str = Field(min_length=1)
    source: list[str] = Field(min_length=1, description="CIDRs the trunk sends from")
    port: int | None = Field(None, ge=1, le=65535, description="only from this source port")
    transport: Literal["udp", "tcp", "tls"] | None = Field(None, description="only over this")
    route: str | None = Field(
        None, description="the [[route]] (by name) that serves this trunk's calls"
    )

    @field_validator("source")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        return check_cidrs(v)


class SecurityConfig(Model):
    """``[security]``: who is refused, banned and for how long."""

    untrusted: Literal["403", "drop"] = Field(
        "403",
        description="with [[trunk]] entries: what a source that is no trunk or back end gets",
    )
    bans: bool = Field(True, description="ban flooders and scanners (silent drop)")
    ban_time: float = Field(300.0, gt=0, description="first ban (s); doubles for repeat offenders")
    ban_time_max: float = Field(86400.0, gt=0, description="the longest ban (s)")
    max_bans: int = Field(
        100_000, ge=1, description="banned addresses kept; beyond, the soonest to expire goes"
    )
    pike_window: float = Field(
        2.0, gt=0, le=60, description="density window (s), Kamailio pike sampling_time_unit"
    )
    pike_density: int | None = Field(
        None,
        ge=1,
        description="new requests per window from one source before a ban (pike "
        "reqs_density_per_unit); default 16 with [[trunk]] entries, 4000 without",
    )
    scanner_user_agents: str = Field(
        DEFAULT_SCANNER_AGENTS,
        description='User-Agent regex of scanners, banned at once ("" for none)',
    )
    scan_users: int = Field(
        20,
        ge=0,
        description="distinct users one source may ask for within scan_window (0: no "
        "limit); INVITEs count only with [[trunk]] entries",
    )
    scan_window: float = Field(10.0, gt=0, description="window of scan_users (s)")
    max_sources: int = Field(100_000, ge=16, description="sources tracked for density and scans")
    quiet_unverified: bool = Field(
        True,
        description="no retransmitted finals to a UDP source before its first ACK (no "
        "reflection amplifier)",
    )
    server: str = Field("", description="Server header of our own responses (empty: none)")
    backend_agent: Literal["keep", "strip"] = Field(
        "keep",
        description="strip: back ends' Server/User-Agent headers do not go out to callers",
    )

    @field_validator("scanner_user_agents")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"bad regular expression {v!r}: {e}") from None
        return v


class OverloadConfig(Model):
    """``[overload]``: when new INVITEs get 503 + Retry-After (in-dialog requests,
    replies, probes and RPC go on)."""

    max_lag: float = Field(
        0.5, gt=0, description="event-loop lag (s) that starts shedding; it stops under half"
    )
    max_transactions: int = Field(
        150_000, ge=1, description="open server transactions that start shedding"
    )
    retry_after: int = Field(5, ge=0, le=3600, description="Retry-After of the 503 (s)")


class LimitsConfig(Model):
    """``[limits]``: hard bounds of the core's tables."""

    max_transactions: int = Field(
        200_000, ge=1, description="open server transactions; beyond, new requests get 503"
    )
    max_dialogs: int = Field(
        1_000_000, ge=1, description="tracked dialogs; beyond, new calls get 503"
    )


def to_settings(
    security: SecurityConfig,
    trunks: Sequence[TrunkConfig],
    overload: OverloadConfig,
    limits: LimitsConfig,
) -> SecuritySettings:
    return SecuritySettings(
        trunks=[TrunkSpec(t.name, t.source, t.port, t.transport, t.route) for t in trunks],
        untrusted=security.untrusted,
        bans=security.bans,
        ban_time=security.ban_time,
        ban_time_max=security.ban_time_max,
        ban_max=security.max_bans,
        pike_window=security.pike_window,
        pike_density=security.pike_density,
        scanner_agents=security.scanner_user_agents,
        scan_users=security.scan_users,
        scan_window=security.scan_window,
        max_sources=security.max_sources,
        quiet_unverified=security.quiet_unverified,
        strip_backend_agent=security.backend_agent == "strip",
        max_transactions=limits.max_transactions,
        max_dialogs=limits.max_dialogs,
        shed_transactions=overload.max_transactions,
        max_lag=overload.max_lag,
        retry_after=overload.retry_after,
    )
