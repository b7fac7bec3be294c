"""sipfleet's one typed configuration (pydantic): every section's model and
the loader. The runtime never reads these models: each gives the pure core
its plain settings (``to_settings()``), so pydantic stays out of it.

    load.py        Config (the root), LogConfig, ENV_OVERRIDES, load_config, ConfigError
    proxy.py       [proxy] ProxyConfig, ListenSpec; [tls] TlsConfig
    store.py       [store] StoreConfig
    dispatcher.py  [dispatcher] DispatcherConfig -> dispatch.settings.DispatcherSettings
    routes.py      [[route]] RouteConfig, MatchConfig, HeaderMatch -> RouteSpec
    discovery.py   [[discovery]] DiscoveryConfig -> DiscoverySettings; [dns] DnsConfig
    control.py     [control] ControlConfig and its transports' sections
    security.py    [security] [[trunk]] [overload] [limits] -> SecuritySettings
    cluster.py     [cluster] ClusterConfig
    webhooks.py    [[webhook]] WebhookConfig

Importing it loads no I/O module (no asyncio, no aiohttp).
"""

from sipfleet.config.cluster import ClusterConfig
from sipfleet.config.control import ControlConfig
from sipfleet.config.discovery import DiscoveryConfig, DnsConfig
from sipfleet.config.dispatcher import DispatcherConfig
from sipfleet.config.load import ENV_OVERRIDES, Config, ConfigError, LogConfig, load_config
from sipfleet.config.proxy import ListenSpec, ProxyConfig, TlsConfig
from sipfleet.config.routes import HeaderMatch, MatchConfig, RouteConfig
from sipfleet.config.security import LimitsConfig, OverloadConfig, SecurityConfig, TrunkConfig
from sipfleet.config.store import StoreConfig
from sipfleet.config.webhooks import WebhookConfig

__all__ = [
    "ENV_OVERRIDES",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "ControlConfig",
    "DiscoveryConfig",
    "DispatcherConfig",
    "DnsConfig",
    "HeaderMatch",
    "LimitsConfig",
    "ListenSpec",
    "LogConfig",
    "MatchConfig",
    "OverloadConfig",
    "ProxyConfig",
    "RouteConfig",
    "SecurityConfig",
    "StoreConfig",
    "TlsConfig",
    "TrunkConfig",
    "WebhookConfig",
    "load_config",
]
