"""The Gate: what the proxy core asks about every packet (issue 11).

    check_source(host, now)             before parsing: False = a banned source, drop
    check_request(msg, host, port, proto, now)
                                        after parsing: PASS, DROP or REFUSE (403)
    admit(transactions, dialogs, new_invite)
                                        before a new transaction: 0, or 503 (bounds, shedding)
    quiet(host)                         no Timer G retransmissions of finals to this source

Trunks (``[[trunk]]``) and back ends (the destinations) are trusted: never
counted, never banned. Everyone else is counted per source (pike density,
users asked for, scanner User-Agents) and banned when over a limit; with
any trunk configured, an untrusted source gets 403 or nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from sipfleet.security.bans import Ban, BanTable
from sipfleet.security.settings import SecuritySettings
from sipfleet.security.sources import SourceTable
from sipfleet.security.trunks import TrunkTable

if TYPE_CHECKING:
    from sipfleet.sip.message import Message

__all__ = ["BACKEND", "DROP", "PASS", "REFUSE", "STAT_NAMES", "TRUNK", "Gate", "GateStats"]

PASS: Final = 0
DROP: Final = 1
REFUSE: Final = 2  # answer 403 Forbidden

UNTRUSTED: Final = 0
TRUNK: Final = 1
BACKEND: Final = 2

# ban/unban/overload events (each one a log line and a webhook): at most this
# many a second, so a sweep of spoofed sources cannot flood the log; the rest
# are counted in events_dropped (the bans themselves stand, see security.bans).
_EVENTS_PER_SECOND = 20
_SWEEP_PERIOD = 1.0


STAT_NAMES: Final = (
    "banned_drops",
    "bans",
    "dialog_limit",
    "events_dropped",
    "floods",
    "quiet",
    "scanners",
    "scans",
    "shed",
    "shed_episodes",
    "txn_limit",
    "untrusted",
)  # compiled classes have no __slots__ to list


class GateStats:
    """Counters (the ``pike:`` and ``sipfleet:`` statistics)."""

    __slots__ = (
        "banned_drops",
        "bans",
        "dialog_limit",
        "events_dropped",
        "floods",
        "quiet",
        "scanners",
        "scans",
        "shed",
        "shed_episodes",
        "txn_limit",
        "untrusted",
    )

    def __init__(self) -> None:
        self.banned_drops = 0  # packets dropped from banned sources
        self.bans = 0  # bans made (automatic and by RPC)
        self.floods = 0  # bans for request density (pike)
        self.scanners = 0  # bans for a scanner's User-Agent
        self.scans = 0  # bans for walking users
        self.untrusted = 0  # requests from sources that are no trunk (403 or dropped)
        self.shed = 0  # new INVITEs answered 503 while overloaded
        self.shed_episodes = 0  # times overload began
        self.txn_limit = 0  # requests refused at the transaction bound
        self.dialog_limit = 0  # new INVITEs refused at the dialog bound
        self.quiet = 0  # transactions that do not retransmit to an unverified source
        self.events_dropped = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in STAT_NAMES}


class Gate:
    """Trust, bans, density, bounds and shedding for one proxy core."""

    def __init__(self, settings: SecuritySettings | None = None) -> None:
        s = settings or SecuritySettings()
        self.settings = s
        self.trunks = TrunkTable(s.trunks)
        self.bans = BanTable(s.ban_time, s.ban_time_max, s.ban_max)
        self.sources = SourceTable(s.pike_window, s.pike_density, s.max_sources)
        self.stats = GateStats()
        self._agents = (
            re.compile(s.scanner_agents.encode(), re.I) if s.bans and s.scanner_agents else None
        )
        self._backends: frozenset[str] = frozenset()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.lag = 0.0
        self.overloaded = False
        self._sweep_at = 0.0
        self._events_at = 0.0
        self._events_budget = 0

    # -- trust ---------------------------------------------------------------------
    def set_backends(self, hosts: Iterable[str]) -> None:
        """The destinations' addresses: trusted for in-dialog requests and replies."""
        self._backends = frozenset(h.lower() for h in hosts)

    def trust(self, host: str, port: int, proto: str) -> int:
        if host in self._backends:
            return BACKEND
        if self.trunks.match(host, port, proto) is not None:
            return TRUNK
        return UNTRUSTED

    def is_backend(self, host: str) -> bool:
        return host in self._backends

    def trusted_host(self, host: str) -> bool:
        """A back end, or a trunk on some port/transport (for the ban rules)."""
        if host in self._backends:
            return True
        return any(
            self.trunks.match(host, t.port or 0, t.transport or "udp") for t in self.trunks.trunks
        )

    # -- per packet ------------------------------------------------------------------
    def check_source(self, host: str, now: float) -> bool:
        """Before parsing: False when ``host`` is banned (drop silently)."""
        bans = self.bans.bans
        if not bans:
            return True
        ban = bans.get(host)
        if ban is None:
            return True
        if ban.until <= now:
            del bans[host]
            self.bans.expired += 1
            self._unbanned(ban, "expired", now)
            return True
        ban.dropped += 1
        self.stats.banned_drops += 1
        return False

    def check_request(self, msg: Message, host: str, port: int, proto: str, now: float) -> int:
        """After parsing: PASS, DROP, or REFUSE (answer 403)."""
        if self.trust(host, port, proto):
            return PASS
        method = msg.method
        has_trunks = bool(self.trunks)
        if method == "ACK":
            src = self.sources.sources.get(host)
            if src is not None:
                src.verified = True  # it gets our answers: not a spoofed address
            return DROP if has_trunks else PASS
        s = self.settings
        if s.bans:
            agents = self._agents
            if agents is not None:
                ua = msg.get(b"user-agent")
                if ua is not None and agents.search(ua) is not None:
                    self.stats.scanners += 1
                    self.ban(host, "scanner: User-Agent " + ua[:64].decode("utf-8", "replace"), now)
                    return DROP
            if method != "CANCEL" and msg.to_tag is None:
                src = self.sources.get(host, now)
                if self.sources.hit(src, now):
                    self.stats.floods += 1
                    self.ban(
                        host,
                        "flood: over %d requests in %g s" % (s.pike_density, s.pike_window),
                        now,
                    )
                    return DROP
                # A PBX without a trunk entry calls many numbers: only with
                # trunks are INVITEs counted as walking users.
                if s.scan_users and (has_trunks or method != "INVITE"):
                    user = _user_of(msg)
                    if user is not None and self.sources.note_user(
                        src, user, now, s.scan_window, s.scan_users
                    ):
                        self.stats.scans += 1
                        self.ban(
                            host,
                            "scan: over %d users in %g s" % (s.scan_users, s.scan_window),
                            now,
                        )
                        return DROP
        if has_trunks:
            self.stats.untrusted += 1
            return DROP if s.untrusted == "drop" else REFUSE
        return PASS

    def quiet(self, host: str) -> bool:
        """Should answers to this UDP source go out once, never retransmitted?
        Yes until it has shown it receives them (its ACK): a spoofed source
        must not turn one INVITE into a dozen packets at its victim."""
        if not self.settings.quiet_unverified or host in self._backends:
            return False
        src = self.sources.sources.get(host)
        if src is not None and src.verified:
            return False
        if self.trunks and self.trusted_host(host):
            return False
        self.stats.quiet += 1
        return True

    def admit(self, transactions: int, dialogs: int, new_invite: bool) -> int:
        """0, or 503 when a bound or the overload state refuses a new request."""
        s = self.settings
        if transactions >= s.max_transactions:
            self.stats.txn_limit += 1
            return 503
        if not new_invite:
            return 0
        if dialogs >= s.max_dialogs:
            self.stats.dialog_limit += 1
            return 503
        if transactions >= s.shed_transactions or self.overloaded:
            self.stats.shed += 1
            return 503
        return 0

    # -- overload --------------------------------------------------------------------
    def set_lag(self, lag: float, now: float) -> None:
        """The event loop's lag (measured by the adapter). Shedding starts over
        ``max_lag`` and ends under half of it, so it does not flap."""
        self.lag = lag
        limit = self.settings.max_lag
        if not self.overloaded and lag > limit:
            self.overloaded = True
            self.stats.shed_episodes += 1
            self._emit("overload", {"lag": round(lag, 3), "state": "on"}, now)
        elif self.overloaded and lag < limit / 2:
            self.overloaded = False
            self._emit("overload", {"lag": round(lag, 3), "state": "off"}, now)

    # -- bans ------------------------------------------------------------------------
    def ban(self, host: str, reason: str, now: float, duration: float | None = None) -> Ban | None:
        """Ban ``host`` (never a trunk or a back end: None then)."""
        if self.trusted_host(host):
            return None
        ban = self.bans.add(host, reason, now, duration)
        self.stats.bans += 1
        self.sources.sources.pop(host, None)
        self._emit(
            "ban",
            {
                "address": host,
                "reason": reason,
                "seconds": round(ban.until - now, 3),
                "offence": ban.count,
            },
            now,
        )
        return ban

    def unban(self, host: str, now: float, by: str = "rpc") -> bool:
        ban = self.bans.remove(host)
        if ban is None:
            return False
        self._unbanned(ban, by, now)
        return True

    def next_sweep(self) -> float:
        """When ``maintain`` next has work (bans to expire, sources to prune)."""
        return self._sweep_at

    def maintain(self, now: float) -> None:
        """Expire bans and idle sources; cheap unless a sweep is due (once a second)."""
        if now < self._sweep_at:
            return
        self._sweep_at = now + _SWEEP_PERIOD
        for ban in self.bans.expire(now):
            self._unbanned(ban, "expired", now)
        if len(self.sources) > self.settings.max_sources // 2:
            self.sources.prune(now)

    def take_events(self) -> list[tuple[str, dict[str, Any]]]:
        events, self.events = self.events, []
        return events

    def _unbanned(self, ban: Ban, why: str, now: float) -> None:
        self._emit("unban", {"address": ban.host, "reason": why, "dropped": ban.dropped}, now)

    def _emit(self, kind: str, data: dict[str, Any], now: float) -> None:
        if now - self._events_at >= 1.0:
            self._events_at = now
            self._events_budget = _EVENTS_PER_SECOND
        if self._events_budget <= 0:
            self.stats.events_dropped += 1
            return
        self._events_budget -= 1
        self.events.append((kind, data))


def _user_of(msg: Message) -> str | None:
    """The user asked for: the R-URI's, else the To URI's (a REGISTER names it there)."""
    ruri = msg.ruri
    at = ruri.find("@")
    if at > 0:
        return ruri[ruri.find(":") + 1 : at]
    to = msg.get(b"to")
    if to is None:
        return None
    colon = to.find(b"sip")
    colon = to.find(b":", colon) if colon >= 0 else -1
    at_b = to.find(b"@", colon)
    if colon < 0 or at_b < 0:
        return None
    return to[colon + 1 : at_b].decode("utf-8", "replace")
