"""Rate-limited logging for the lines a peer can trigger.

A flood of bad packets, refused connections or broken RPC requests must not
fill the disk: each key (by default the format string, i.e. the call site)
has a token bucket of ``burst`` lines refilled at ``per_second``. Lines past
it are counted, not written; the next line let through for that key, or
``flush(now)``, first writes one summary::

    closing tcp %s: %s: suppressed 1234 similar messages in the last 9.8 s

The time is passed in (``now``, any monotonic clock in seconds), so tests
drive it with a fake clock and the pure core can use it. Keys are bounded:
past ``max_keys`` distinct keys, new ones share one bucket.

    peer_log = RateLimitedLog(logging.getLogger(__name__))
    peer_log.warning(time.monotonic(), "refusing %s:%d", host, port)
"""

from __future__ import annotations

import logging
import weakref
from typing import Final

__all__ = ["RateLimitedLog", "flush_all"]

_OVERFLOW: Final = "(other messages)"


class _Bucket:
    __slots__ = ("at", "level", "since", "suppressed", "tokens")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.at = now  # when tokens was last refilled
        self.suppressed = 0
        self.since = now  # when the first suppressed line came
        self.level = logging.INFO  # of the last suppressed line, for its summary


class RateLimitedLog:
    """At most ``burst`` lines at once and ``per_second`` lines a second per key."""

    def __init__(
        self,
        logger: logging.Logger,
        per_second: float = 10.0,
        burst: int = 10,
        *,
        max_keys: int = 1024,
    ) -> None:
        if per_second <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("per_second > 0, burst >= 1 and max_keys >= 1 are required")
        self.logger = logger
        self.per_second = float(per_second)
        self.burst = float(burst)
        self.max_keys = max_keys
        self.suppressed_total = 0
        """Lines not written since start (a counter for stats)."""
        self._buckets: dict[str, _Bucket] = {}
        _instances.add(self)

    def debug(self, now: float, fmt: str, *args: object, key: str | None = None) -> bool:
        return self.log(logging.DEBUG, now, fmt, *args, key=key)

    def info(self, now: float, fmt: str, *args: object, key: str | None = None) -> bool:
        return self.log(logging.INFO, now, fmt, *args, key=key)

    def warning(self, now: float, fmt: str, *args: object, key: str | None = None) -> bool:
        return self.log(logging.WARNING, now, fmt, *args, key=key)

    def error(self, now: float, fmt: str, *args: object, key: str | None = None) -> bool:
        return self.log(logging.ERROR, now, fmt, *args, key=key)

    def exception(self, now: float, fmt: str, *args: object, key: str | None = None) -> bool:
        """``error`` with the traceback being handled (our bug a peer can repeat)."""
        return self.log(logging.ERROR, now, fmt, *args, key=key, exc_info=True)

    def log(
        self,
        level: int,
        now: float,
        fmt: str,
        *args: object,
        key: str | None = None,
        exc_info: bool = False,
    ) -> bool:
        """Write the line unless its key is over its rate; True when written."""
        if not self.logger.isEnabledFor(level):
            return False  # a filtered level costs no tokens
        if not self.allow(level, now, fmt if key is None else key):
            return False
        self.logger.log(level, fmt, *args, exc_info=exc_info)
        return True

    def allow(self, level: int, now: float, name: str) -> bool:
        """Take a token for a line of key ``name`` (writing the summary of the
        lines it suppressed first); False when it is to be suppressed. For
        lines written elsewhere, e.g. by a ``logging.Filter``."""
        bucket = self._buckets.get(name)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                name = _OVERFLOW
                bucket = self._buckets.get(name)
            if bucket is None:
                bucket = self._buckets[name] = _Bucket(self.burst, now)
        self._refill(bucket, now)
        if bucket.tokens < 1.0:
            if bucket.suppressed == 0:
                bucket.since, bucket.level = now, level
            else:
                bucket.level = max(bucket.level, level)
            bucket.suppressed += 1
            self.suppressed_total += 1
            return False
        bucket.tokens -= 1.0
        if bucket.suppressed:
            self._summary(name, bucket, now)
        return True

    def flush(self, now: float) -> int:
        """Write the summaries of keys that suppressed lines and have tokens
        again (call it from a periodic timer); returns how many."""
        written = 0
        for name, bucket in list(self._buckets.items()):
            if not bucket.suppressed:
                if now - bucket.at > 2 * self.burst / self.per_second:
                    del self._buckets[name]  # idle and full again: forget the key
                continue
            self._refill(bucket, now)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                self._summary(name, bucket, now)
                written += 1
        return written

    def _refill(self, bucket: _Bucket, now: float) -> None:
        if now > bucket.at:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.per_second)
            bucket.at = now

    def _summary(self, name: str, bucket: _Bucket, now: float) -> None:
        self.logger.log(
            bucket.level,
            "%s: suppressed %d similar messages in the last %.1f s",
            name,
            bucket.suppressed,
            max(now - bucket.since, 0.0),
        )
        bucket.suppressed = 0


_instances: weakref.WeakSet[RateLimitedLog] = weakref.WeakSet()


def flush_all(now: float) -> int:
    """``flush(now)`` on every RateLimitedLog alive (same clock as their lines)."""
    return sum(r.flush(now) for r in list(_instances))
