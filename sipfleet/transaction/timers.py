"""Timers for the pure core, driven by the caller's clock.

SIP timers come in a handful of fixed durations (T1, 2*T1 ... T2, 64*T1,
T4, the proxy's first-response timeouts), so each duration gets a FIFO
queue: deadlines in one queue are already in order, adding and cancelling
are O(1), and nothing is sorted per message. Cancelled timers are skipped
lazily when they reach the head of their queue. Timers of odd durations
(a dialog restored with what is left of its lifetime) go to a heap, so the
queues stay few.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["Timer", "Timers"]


class Timer:
    __slots__ = ("active", "args", "callback", "deadline")

    def __init__(
        self, deadline: float, callback: Callable[..., None], args: tuple[Any, ...]
    ) -> None:
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

    __slots__ = ("_heap", "_queues", "_seq", "armed", "wake")

    MAX_QUEUES = 32  # distinct durations with a FIFO of their own

    def __init__(self) -> None:
        self._queues: dict[float, deque[Timer]] = {}
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        # The adapter arms one wake-up for ``next_deadline()`` and says when in
        # ``armed``; a timer added earlier than that calls ``wake(deadline)`` so
        # it can re-arm (one float compare per add; most new timers are later).
        # -inf: a re-arm follows anyway (while the timers run), no wake needed.
        self.armed = float("-inf")
        self.wake: Callable[[float], None] | None = None

    def add(self, now: float, delay: float, callback: Callable[..., None], *args: Any) -> Timer:
        t = Timer(now + delay, callback, args)
        if t.deadline < self.armed:
            self._woken(t.deadline)
        q = self._queues.get(delay)
        if q is None:
            if len(self._queues) >= self.MAX_QUEUES:
                heapq.heappush(self._heap, (t.deadline, next(self._seq), t))
                return t
            q = self._queues[delay] = deque()
        q.append(t)
        return t

    def add_at(self, deadline: float, callback: Callable[..., None], *args: Any) -> Timer:
        """A one-off deadline (not one of the usual durations): kept in the heap."""
        t = Timer(deadline, callback, args)
        if deadline < self.armed:
            self._woken(deadline)
        heapq.heappush(self._heap, (deadline, next(self._seq), t))
        return t

    def _woken(self, deadline: float) -> None:
        self.armed = deadline
        wake = self.wake
        if wake is not None:
            wake(deadline)

    def next_deadline(self) -> float | None:
        best: float | None = None
        for q in self._queues.values():
            while q and not q[0].active:
                q.popleft()
            if q and (best is None or q[0].deadline < best):
                best = q[0].deadline
        heap = self._heap
        while heap and not heap[0][2].active:
            heapq.heappop(heap)
        if heap and (best is None or heap[0][0] < best):
            best = heap[0][0]
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
            heap = self._heap
            while heap and (not heap[0][2].active or heap[0][0] <= now):
                t = heapq.heappop(heap)[2]
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
        return sum(1 for q in self._queues.values() for t in q if t.active) + sum(
            1 for _, _, t in self._heap if t.active
        )


def _noop(*args: Any) -> None:
    pass


def _deadline(t: Timer) -> float:
    return t.deadline
