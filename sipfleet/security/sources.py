"""What is known of each untrusted source: its request density over a
sliding window (Kamailio's ``pike``), the users it asked for lately (a
scanner walks extensions), and whether it has shown it receives our packets.

The window slides by weighting the previous window's count by how much of
it still overlaps (the estimate of a two-bucket sliding window): O(1) per
request, two numbers per source.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Source", "SourceTable"]


class Source:
    __slots__ = ("cur", "prev", "start", "users", "users_start", "verified")

    def __init__(self, now: float) -> None:
        self.start = now  # when the current window began
        self.prev = 0  # requests in the previous window
        self.cur = 0  # ... and in the current one
        self.users: set[str] = set()
        self.users_start = now
        self.verified = False  # it answered us (an ACK, a response): not a spoofed address

    def density(self, now: float, window: float) -> float:
        overlap = 1.0 - (now - self.start) / window
        return self.cur + (self.prev * overlap if overlap > 0 else 0.0)


class SourceTable:
    """Per-source state for at most ``max_sources`` sources.

    When full, sources idle for two windows are dropped; if that frees
    nothing (a spoofed-address sweep) the table starts over, counted in
    ``resets``: losing a few seconds of history beats unbounded memory.
    """

    def __init__(self, window: float, density: int, max_sources: int) -> None:
        self.window = window
        self.density = density
        self.max_sources = max_sources
        self.sources: dict[str, Source] = {}
        self.resets = 0

    def __len__(self) -> int:
        return len(self.sources)

    def get(self, host: str, now: float) -> Source:
        src = self.sources.get(host)
        if src is None:
            if len(self.sources) >= self.max_sources:
                self.prune(now)
            src = self.sources[host] = Source(now)
        return src

    def hit(self, src: Source, now: float) -> bool:
        """Count one request; True when the source is over its density."""
        window = self.window
        elapsed = now - src.start
        if elapsed >= window:
            if elapsed >= 2 * window:
                src.prev = 0
                src.start = now
            else:
                src.prev = src.cur
                src.start += window
            src.cur = 0
        src.cur += 1
        return src.density(now, window) > self.density

    @staticmethod
    def note_user(src: Source, user: str, now: float, window: float, limit: int) -> bool:
        """Remember a requested user; True when more than ``limit`` distinct
        users were asked for within ``window``."""
        if now - src.users_start >= window:
            src.users.clear()
            src.users_start = now
        users = src.users
        if user not in users:
            users.add(user)
            return len(users) > limit
        return False

    def prune(self, now: float) -> None:
        horizon = 2 * self.window
        idle = [h for h, s in self.sources.items() if now - s.start >= horizon and not s.verified]
        for h in idle:
            del self.sources[h]
        if len(self.sources) >= self.max_sources:
            self.sources.clear()
            self.resets += 1

    def top(self, now: float, which: str = "ALL") -> list[dict[str, Any]]:
        """Kamailio's ``pike.top`` rows: HOT (over the density), WARM (over half)."""
        out: list[dict[str, Any]] = []
        for host, s in self.sources.items():
            d = s.density(now, self.window)
            status = "HOT" if d > self.density else "WARM" if d > self.density / 2 else "ALL"
            if which == "HOT" and status != "HOT":
                continue
            if which == "WARM" and status == "ALL":
                continue
            if which == "ALL" and d < 1.0:
                continue
            out.append(
                {
                    "ip_addr": host,
                    "leaf_hits_prev": s.prev,
                    "leaf_hits_curr": s.cur,
                    "expires": max(0, int(s.start + 2 * self.window - now)),
                    "status": status,
                }
            )
        out.sort(key=_hits, reverse=True)
        return out


def _hits(row: dict[str, Any]) -> int:
    return int(row["leaf_hits_prev"]) + int(row["leaf_hits_curr"])
