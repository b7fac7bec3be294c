"""The root of sipfleet's one typed configuration, and its loader: TOML,
validated once, with environment overrides for the common keys and CLI flags
mapped onto the same fields; a validation error is explained per key.

    [proxy] [tls]  listeners and SIP behaviour (sipfleet.config.proxy)
    [store]        where destinations live (sipfleet.config.store)
    [dispatcher]   algorithms, failover, probing, reload (sipfleet.config.dispatcher)
    [[route]]      routing policy (sipfleet.config.routes)
    [control]      RPC transports (sipfleet.config.control)
    [security] [[trunk]] [overload] [limits]
                   edge security and bounds (sipfleet.config.security)
    [[webhook]]    where events are POSTed (sipfleet.config.webhooks)
    [[discovery]]  sets whose members follow DNS records (sipfleet.config.discovery)
    [dns]          the resolvers discovery asks (sipfleet.config.discovery)
    [cluster]      nodes sharing state through Redis (sipfleet.config.cluster)
    [log]          logging (here)
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from sipfleet.config.base import Model
from sipfleet.config.cluster import ClusterConfig
from sipfleet.config.control import ControlConfig
from sipfleet.config.discovery import DiscoveryConfig, DnsConfig
from sipfleet.config.dispatcher import DispatcherConfig
from sipfleet.config.proxy import ProxyConfig, TlsConfig
from sipfleet.config.routes import RouteConfig
from sipfleet.config.security import (
    LimitsConfig,
    OverloadConfig,
    SecurityConfig,
    TrunkConfig,
    to_settings,
)
from sipfleet.config.store import StoreConfig
from sipfleet.config.webhooks import WebhookConfig
from sipfleet.dispatch.settings import RouteSpec
from sipfleet.security.settings import SecuritySettings

__all__ = ["ENV_OVERRIDES", "Config", "ConfigError", "LogConfig", "load_config"]


class ConfigError(Exception):
    """A configuration problem, with a message meant for the operator."""


class LogConfig(Model):
    """``[log]``: logging to stderr."""

    level: Literal["debug", "info", "warning", "error"] = Field("info", description="threshold")


class Config(Model):
    proxy: ProxyConfig = Field(default_factory=ProxyConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    dispatcher: DispatcherConfig = Field(default_factory=DispatcherConfig)
    route: list[RouteConfig] = Field(default_factory=list)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    webhook: list[WebhookConfig] = Field(default_factory=list)
    discovery: list[DiscoveryConfig] = Field(default_factory=list)
    dns: DnsConfig = Field(default_factory=DnsConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    trunk: list[TrunkConfig] = Field(default_factory=list)
    overload: OverloadConfig = Field(default_factory=OverloadConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)

    @model_validator(mode="after")
    def _trunk_routes(self) -> Config:
        names = {r.name for r in self.route}
        for t in self.trunk:
            if t.route is not None and t.route not in names:
                raise ValueError(
                    f"trunk {t.name!r} names route {t.route!r}: no [[route]] has that name"
                )
        return self

    @model_validator(mode="after")
    def _tls_needs_a_certificate(self) -> Config:
        if any(spec.proto == "tls" for spec in self.proxy.listen) and (
            self.tls.certificate is None or self.tls.private_key is None
        ):
            raise ValueError("a tls: listener needs [tls] certificate and private_key")
        return self

    def security_settings(self) -> SecuritySettings:
        """The edge gate's plain settings: [security], [[trunk]], [overload], [limits]."""
        return to_settings(self.security, self.trunk, self.overload, self.limits)

    def route_specs(self) -> list[RouteSpec]:
        """The routing policy's plain settings, one per [[route]] in order."""
        return [r.to_settings() for r in self.route]


# Environment variable -> dotted config key.
ENV_OVERRIDES: dict[str, str] = {
    "SIPFLEET_LISTEN": "proxy.listen",
    "SIPFLEET_LOG_LEVEL": "log.level",
    "SIPFLEET_FIRST_RESPONSE_TIMEOUT": "proxy.first_response_timeout",
    "SIPFLEET_DB": "store.url",
    "SIPFLEET_STORE_URL": "store.url",  # the Helm chart passes its Secret this way
    "SIPFLEET_CLUSTER_REDIS": "cluster.redis",
    "SIPFLEET_ALGORITHM": "dispatcher.algorithm",
    "SIPFLEET_PING_INTERVAL": "dispatcher.ping_interval",
    "SIPFLEET_RUN_DIR": "control.run_dir",
    "SIPFLEET_HTTP_TOKEN": "control.http.token",
}


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Config:
    """Read TOML (if given), apply environment then CLI overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    environ = os.environ if env is None else env
    for var, key in ENV_OVERRIDES.items():
        if var in environ:
            _set_dotted(data, key, environ[var])
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_explain(e, path)) from None


def _explain(e: ValidationError, path: str | Path | None) -> str:
    where = f" in {path}" if path else ""
    lines = [f"invalid configuration{where}:"]
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)
