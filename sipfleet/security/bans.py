"""Banned source addresses: why, since and until when (Kamailio's htable
``ipban``). A repeat offender's ban doubles each time, up to a ceiling."""

from __future__ import annotations

from typing import Any

__all__ = ["Ban", "BanTable"]


class Ban:
    __slots__ = ("count", "dropped", "host", "reason", "since", "until")

    def __init__(self, host: str, reason: str, since: float, until: float, count: int) -> None:
        self.host = host
        self.reason = reason
        self.since = since
        self.until = until
        self.count = count  # which offence this is (1 = first)
        self.dropped = 0  # packets dropped since the ban


class BanTable:
    """At most ``max_bans`` bans; offences are remembered ``memory`` seconds
    (bounded the same way) so that repeat offenders get longer bans."""

    def __init__(self, base: float, ceiling: float, max_bans: int, memory: float = 86400.0) -> None:
        self.base = base
        self.ceiling = ceiling
        self.max_bans = max_bans
        self.memory = memory
        self.bans: dict[str, Ban] = {}
        self._offences: dict[str, tuple[int, float]] = {}  # host -> (count, last ban)
        self.evicted = 0  # bans pushed out early because the table was full
        self.added = 0
        self.expired = 0
        self.removed = 0

    def __len__(self) -> int:
        return len(self.bans)

    def __contains__(self, host: str) -> bool:
        return host in self.bans

    def get(self, host: str) -> Ban | None:
        return self.bans.get(host)

    def add(self, host: str, reason: str, now: float, duration: float | None = None) -> Ban:
        """Ban ``host``; without ``duration``, base time doubled per earlier offence."""
        old = self.bans.get(host)
        prior = self._offences.get(host)
        count = prior[0] + 1 if prior is not None and now - prior[1] < self.memory else 1
        if duration is None:
            duration = min(self.base * (2 ** min(count - 1, 30)), self.ceiling)
        if old is None and len(self.bans) >= self.max_bans:
            victim = min(self.bans.values(), key=_until)
            del self.bans[victim.host]
            self.evicted += 1
        ban = Ban(host, reason, now, now + duration, count)
        if old is not None:
            ban.dropped = old.dropped
        self.bans[host] = ban
        if len(self._offences) >= self.max_bans and host not in self._offences:
            self._forget(now)
        self._offences[host] = (count, now)
        self.added += 1
        return ban

    def remove(self, host: str) -> Ban | None:
        ban = self.bans.pop(host, None)
        if ban is not None:
            self.removed += 1
            self._offences.pop(host, None)  # an operator's unban forgives
        return ban

    def expire(self, now: float) -> list[Ban]:
        """Remove and return the bans that ran out."""
        done = [b for b in self.bans.values() if b.until <= now]
        for b in done:
            del self.bans[b.host]
        self.expired += len(done)
        return done

    def _forget(self, now: float) -> None:
        old = [h for h, (_, t) in self._offences.items() if now - t >= self.memory]
        for h in old:
            del self._offences[h]
        if len(self._offences) >= self.max_bans:
            self._offences.clear()

    def listing(self, now: float) -> list[dict[str, Any]]:
        """Every ban, soonest to expire first."""
        return [
            {
                "address": b.host,
                "reason": b.reason,
                "since": b.since,
                "expires_in": max(0.0, b.until - now),
                "offence": b.count,
                "dropped": b.dropped,
            }
            for b in sorted(self.bans.values(), key=_until)
        ]


def _until(b: Ban) -> float:
    return b.until
