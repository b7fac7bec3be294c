"""Timers for the pure core, driven by the caller's clock.

SIP timers come in a handful of fixed durations (T1, 2*T1 ... T2, 64*T1,
T4, the proxy's first-response timeouts), so each duration gets a FIFO
queue: deadlines in one queue are already in order, adding and cancelling
are O(1), and nothing is sorted per message. Cancelled timers are skipped
lazily when they reach the head of their queue.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["Timer", "Timers"]


class Timer:
    __slots__ = ("active", "args", "callback", "deadline")

    def __init__(self, deadline: float, callback: Callable[..., None], args: tuple[Any, ...]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.args = args
        self.active = True

    def cancel(self) -> None:
        # A cancelled timer may wait in its queue for its whole duration:
        # let go of what it points at, so that can be freed now.
        self.active = False
        self.callback = _noop
        self.args = ()


class Timers:
    """A set of per-duration FIFO timer queues."""

    __slots__ = ("_queues",)

    def __init__(self) -> None:
        self._queues: dict[float, deque[Timer]] = {}

    def add(self, now: float, delay: float, callback: Callable[..., None], *args: Any) -> Timer:
        t = Timer(now + delay, callback, args)
        q = self._queues.get(delay)
        if q is None:
            q = self._queues[delay] = deque()
        q.append(t)
        return t

    def next_deadline(self) -> float | None:
        best: float | None = None
        for q in self._queues.values():
            while q and not q[0].active:
                q.popleft()
            if q and (best is None or q[0].deadline < best):
                best = q[0].deadline
        return best

    def run(self, now: float) -> int:
        """Fire every timer due at ``now``, earliest first, as ``callback(now, *args)``."""
        fired = 0
        while True:
            due: list[Timer] = []
            for q in self._queues.values():
                while q and (not q[0].active or q[0].deadline <= now):
                    t = q.popleft()
                    if t.active:
                        due.append(t)
            if not due:
                return fired
            due.sort(key=_deadline)
            for t in due:
                if t.active:  # an earlier callback may have cancelled it
                    t.active = False
                    fired += 1
                    callback, args = t.callback, t.args
                    t.callback, t.args = _noop, ()
                    callback(now, *args)
            # callbacks may have added zero-delay timers: loop until quiet

    def __len__(self) -> int:
        return sum(1 for q in self._queues.values() for t in q if t.active)


def _noop(*args: Any) -> None:
    pass


def _deadline(t: Timer) -> float:
    return t.deadline
