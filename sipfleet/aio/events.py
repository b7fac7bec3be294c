"""Events of the running proxy (dst-up, dst-down, state changes ...): logged,
counted, and handed to subscribers (webhooks, the dashboard).

Subscribers must not block: each gets the event synchronously and queues
what it needs to do.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from sipfleet.ratelog import RateLimitedLog

__all__ = ["Event", "EventBus"]

log = logging.getLogger("sipfleet.events")
_event_log = RateLimitedLog(log, per_second=20, burst=50)

Event = dict[str, Any]


class EventBus:
    """Fan-out of events, with counters and a bounded history for the RPC."""

    def __init__(self, history: int = 1000) -> None:
        self.counts: Counter[str] = Counter()
        self.recent: deque[Event] = deque(maxlen=history)  # bounded: a flapping fleet
        self._subscribers: list[Callable[[Event], None]] = []

    def subscribe(self, fn: Callable[[Event], None]) -> Callable[[], None]:
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn)

    def emit(self, kind: str, data: dict[str, Any]) -> Event:
        event: Event = {"event": kind, "time": time.time(), **data}
        self.counts[kind] += 1
        self.recent.append(event)
        # Some events are a peer's doing (a phantom call, a ban): the log line is
        # rate-limited per kind; the event itself always goes out.
        _event_log.info(
            time.monotonic(),
            "%s %s",
            kind,
            " ".join(f"{k}={v}" for k, v in data.items() if v is not None),
            key=kind,
        )
        for fn in list(self._subscribers):
            try:
                fn(event)
            except Exception:
                log.exception("event subscriber failed on %s", kind)
        return event
