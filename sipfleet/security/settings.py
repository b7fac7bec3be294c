"""The security settings the core uses: plain objects, built from the typed
config by ``sipfleet.config.security.to_settings`` (no pydantic in the core)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DEFAULT_SCANNER_AGENTS", "SecuritySettings", "TrunkSpec"]

#: Kamailio's default config (WITH_ANTIFLOOD) drops these User-Agents silently.
DEFAULT_SCANNER_AGENTS = "friendly|scanner|sipcli|sipvicious|VaxSIPUserAgent|pplsip"


class TrunkSpec:
    """One ``[[trunk]]``: who may start dialogs (CIDRs, optional port and transport)."""

    __slots__ = ("name", "networks", "port", "route", "transport")

    def __init__(
        self,
        name: str,
        networks: Sequence[str],
        port: int | None = None,
        transport: str | None = None,
        route: str | None = None,
    ) -> None:
        self.name = name
        self.networks = tuple(networks)
        self.port = port
        self.transport = transport.lower() if transport else None
        self.route = route


class SecuritySettings:
    """``[security]``, ``[[trunk]]``, ``[overload]`` and ``[limits]`` for the core."""

    __slots__ = (
        "ban_max",
        "ban_time",
        "ban_time_max",
        "bans",
        "max_dialogs",
        "max_lag",
        "max_sources",
        "max_transactions",
        "pike_density",
        "pike_window",
        "quiet_unverified",
        "retry_after",
        "scan_users",
        "scan_window",
        "scanner_agents",
        "shed_transactions",
        "strip_backend_agent",
        "trunks",
        "untrusted",
    )

    def __init__(
        self,
        *,
        trunks: Sequence[TrunkSpec] = (),
        untrusted: str = "403",
        bans: bool = True,
        ban_time: float = 300.0,
        ban_time_max: float = 86400.0,
        ban_max: int = 100_000,
        pike_window: float = 2.0,
        pike_density: int | None = None,
        scanner_agents: str = DEFAULT_SCANNER_AGENTS,
        scan_users: int = 20,
        scan_window: float = 10.0,
        max_sources: int = 100_000,
        quiet_unverified: bool = True,
        strip_backend_agent: bool = False,
        max_transactions: int = 200_000,
        max_dialogs: int = 1_000_000,
        shed_transactions: int = 150_000,
        max_lag: float = 0.5,
        retry_after: int = 5,
    ) -> None:
        if untrusted not in ("403", "drop"):
            raise ValueError('untrusted must be "403" or "drop"')
        self.trunks = tuple(trunks)
        self.untrusted = untrusted
        self.bans = bans
        self.ban_time = ban_time
        self.ban_time_max = ban_time_max
        self.ban_max = ban_max
        self.pike_window = pike_window
        # Kamailio's 16 per 2 s suits an edge where trunks are listed (they are
        # never counted); without trunks every caller is counted, so the
        # default lets one PBX place 2,000 calls/s.
        if pike_density is None:
            pike_density = 16 if self.trunks else 4000
        self.pike_density = pike_density
        self.scanner_agents = scanner_agents
        self.scan_users = scan_users
        self.scan_window = scan_window
        self.max_sources = max_sources
        self.quiet_unverified = quiet_unverified
        self.strip_backend_agent = strip_backend_agent
        self.max_transactions = max_transactions
        self.max_dialogs = max_dialogs
        self.shed_transactions = shed_transactions
        self.max_lag = max_lag
        self.retry_after = retry_after
