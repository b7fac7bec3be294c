"""``[[route]]``: the routing policy's typed configuration.

Ordered ``[[route]]`` tables in the TOML; the first whose ``match`` fits the
request wins (R-URI user/host, a header, the source address, the method).
A route names its sets in order (primary, then backups), the algorithm, how
many candidates to try, and which final codes fail over. With no routes
configured, one default route serves the lowest set id. ``to_settings()``
gives the plain ``RouteSpec`` the router (``sipfleet.dispatch.policy``) runs.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from sipfleet.config.base import Model, check_cidrs
from sipfleet.dispatch.settings import ALGORITHMS, HeaderSpec, MatchSpec, RouteSpec

__all__ = ["HeaderMatch", "MatchConfig", "RouteConfig"]


class HeaderMatch(Model):
    name: str = Field(min_length=1)
    value: str = Field(description="regular expression the header value must match (search)")

    def to_settings(self) -> HeaderSpec:
        return HeaderSpec(self.name, self.value)


class MatchConfig(Model):
    """Every given condition must hold; an empty match matches everything."""

    ruri_user: str | None = Field(None, description="regex on the R-URI user part (fullmatch)")
    ruri_host: str | None = Field(None, description="regex on the R-URI host (fullmatch)")
    header: HeaderMatch | None = None
    source: list[str] = Field(default_factory=list, description="CIDRs of the sender")
    method: list[str] = Field(default_factory=list, description="request methods")

    @field_validator("ruri_user", "ruri_host")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"bad regular expression {v!r}: {e}") from None
        return v

    @field_validator("source")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        return check_cidrs(v)

    def to_settings(self) -> MatchSpec:
        return MatchSpec(
            ruri_user=self.ruri_user,
            ruri_host=self.ruri_host,
            header=None if self.header is None else self.header.to_settings(),
            source=tuple(self.source),
            method=tuple(self.method),
        )


class RouteConfig(Model):
    """``[[route]]``: a rule of the routing policy."""

    name: str = Field(min_length=1)
    match: MatchConfig = Field(default_factory=MatchConfig)
    sets: list[int] = Field(min_length=1, description="set ids: primary, then backups")
    algorithm: int | None = Field(None, description="default: [dispatcher] algorithm")
    limit: int = Field(0, ge=0, le=256, description="candidates to try, 0 = [dispatcher]'s")
    failover_codes: list[int] | None = Field(None, description="default: [dispatcher]'s")
    consistent_hash: bool | None = Field(None, description="default: [dispatcher]'s")
    hash_header: str | None = Field(None, description="header hashed by algorithm 7")
    retry_after: int = Field(5, ge=0, le=86400, description="Retry-After of the 503")

    @field_validator("algorithm")
    @classmethod
    def _alg(cls, v: int | None) -> int | None:
        if v is not None and v not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {v}")
        return v

    @model_validator(mode="after")
    def _alg7(self) -> RouteConfig:
        if self.algorithm == 7 and not self.hash_header:
            raise ValueError("algorithm 7 hashes a header: set hash_header")
        return self

    def to_settings(self) -> RouteSpec:
        """The plain rule the router runs."""
        codes = self.failover_codes
        return RouteSpec(
            name=self.name,
            sets=tuple(self.sets),
            match=self.match.to_settings(),
            algorithm=self.algorithm,
            limit=self.limit,
            failover_codes=None if codes is None else tuple(codes),
            consistent_hash=self.consistent_hash,
            hash_header=self.hash_header,
            retry_after=self.retry_after,
        )
