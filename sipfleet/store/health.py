"""Whether a store's backend answers, said loudly but not too often.

Every operation of a database store reports here: a failure marks the
store down (logged at most once per ``LOG_EVERY`` seconds, with how many
failures were not logged), the next success marks it up again (logged
once, with how long it was down). ``status()`` is what ``sipfleet.status``
and ``core.info`` show.
"""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["LOG_EVERY", "StoreHealth"]

log = logging.getLogger("sipfleet.store")

#: At most one "store unreachable" line this often (seconds).
LOG_EVERY = 10.0


class StoreHealth:
    def __init__(self, name: str, clock: Any = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self.ok = True
        self.error: str | None = None
        self.down_since: float | None = None  # wall clock
        self.failures = 0  # since start
        self.recoveries = 0
        self._logged_at: float | None = None
        self._unlogged = 0

    def failed(self, operation: str, exc: BaseException) -> None:
        self.failures += 1
        now = self._clock()
        text = str(exc).strip().splitlines()  # libpq adds an indented second line
        self.error = f"{operation}: {text[0] if text else type(exc).__name__}"
        if self.ok:
            self.ok = False
            self.down_since = time.time()
        if self._logged_at is None or now - self._logged_at >= LOG_EVERY:
            more = f" ({self._unlogged} more failures not logged)" if self._unlogged else ""
            log.error(
                "store %s unreachable: %s; routing on the last snapshot, writes kept for a retry%s",
                self.name,
                self.error,
                more,
            )
            self._logged_at = now
            self._unlogged = 0
        else:
            self._unlogged += 1

    def succeeded(self) -> bool:
        """Mark the store up; True if it was down (the caller reconciles)."""
        if self.ok:
            return False
        down = time.time() - self.down_since if self.down_since else 0.0
        log.warning("store %s reachable again after %.1f s", self.name, down)
        self.ok = True
        self.error = None
        self.down_since = None
        self._logged_at = None
        self._unlogged = 0
        self.recoveries += 1
        return True

    def status(self) -> dict[str, Any]:
        return {
            "url": self.name,
            "ok": self.ok,
            "error": self.error,
            "down_since": self.down_since,
            "failures": self.failures,
        }
