"""The timer wheel under Timers A-M (sipfleet/transaction/timers.py): per-duration
FIFO queues plus a heap, driven by the caller's clock."""

from __future__ import annotations

import pytest

from sipfleet.transaction.timers import Timers


def recorder() -> tuple[list[tuple[float, str]], object]:
    fired: list[tuple[float, str]] = []

    def cb(now: float, name: str) -> None:
        fired.append((now, name))

    return fired, cb


def test_fires_earliest_first_across_queues_and_heap() -> None:
    """RFC 3261 17: timers of many durations (T1, T2, 64*T1, T4) run in deadline order."""
    timers = Timers()
    fired, cb = recorder()
    timers.add(0.0, 32.0, cb, "B")
    timers.add(0.0, 0.5, cb, "A")
    timers.add(0.0, 5.0, cb, "K")
    timers.add_at(1.0, cb, "odd")
    timers.add(0.2, 0.5, cb, "A2")
    assert timers.next_deadline() == 0.5
    assert timers.run(40.0) == 5
    assert [n for _, n in fired] == ["A", "A2", "odd", "K", "B"]
    assert all(now == 40.0 for now, _ in fired)  # callbacks get the caller's now
    assert timers.next_deadline() is None and len(timers) == 0


def test_nothing_fires_before_its_deadline() -> None:
    """17.1.1.2: a timer set for T1 fires at T1, not a tick earlier."""
    timers = Timers()
    fired, cb = recorder()
    timers.add(10.0, 0.5, cb, "A")
    assert timers.run(10.499) == 0 and fired == []
    assert timers.run(10.5) == 1 and fired == [(10.5, "A")]


def test_cancelled_timers_never_fire_and_are_not_counted() -> None:
    """17.1.1.2: a 1xx cancels Timer A; a cancelled timer must not resend."""
    timers = Timers()
    fired, cb = recorder()
    a = timers.add(0.0, 0.5, cb, "A")
    timers.add(0.0, 0.5, cb, "A-other")
    h = timers.add_at(0.3, cb, "heap")
    a.cancel()
    h.cancel()
    assert len(timers) == 1
    assert timers.next_deadline() == 0.5
    timers.run(1.0)
    assert fired == [(1.0, "A-other")]


def test_a_callback_may_cancel_a_timer_due_in_the_same_run() -> None:
    """17.2.1: the ACK cancels Timer G and H; if both are due at once, the first wins."""
    timers = Timers()
    fired: list[str] = []
    later = timers.add(0.0, 2.0, lambda now: fired.append("later"))
    timers.add(0.0, 1.0, lambda now: (fired.append("first"), later.cancel()))
    assert timers.run(5.0) == 1
    assert fired == ["first"]


def test_zero_delay_timers_added_by_callbacks_fire_in_the_same_run() -> None:
    """17.1.1.2: Timer D is zero on reliable transports: it must run at once."""
    timers = Timers()
    fired: list[str] = []
    timers.add(0.0, 1.0, lambda now: timers.add(now, 0.0, lambda n: fired.append("zero")))
    assert timers.run(1.0) == 2
    assert fired == ["zero"]


def test_many_durations_overflow_into_the_heap_in_order() -> None:
    """Beyond MAX_QUEUES distinct durations timers go to the heap, still in order."""
    timers = Timers()
    fired, cb = recorder()
    n = Timers().MAX_QUEUES + 10  # an instance: compiled, the class holds a descriptor
    for i in range(n, 0, -1):
        timers.add(0.0, i / 100, cb, str(i))
    assert len(timers) == n
    for i in range(1, n + 1):
        assert timers.next_deadline() == pytest.approx(i / 100)
        timers.run(i / 100)
    assert [int(name) for _, name in fired] == list(range(1, n + 1))


def test_cancel_releases_the_callback() -> None:
    """A cancelled timer drops what it points at (no cycle waits out its duration)."""
    timers = Timers()
    t = timers.add(0.0, 32.0, lambda now, obj: None, object())
    t.cancel()
    assert t.args == () and not t.active


def test_a_timer_earlier_than_the_armed_wake_up_asks_for_an_earlier_one() -> None:
    """The adapter arms one wake-up (``armed``); only a timer due before it calls
    ``wake``, and then ``armed`` moves to it, so a burst of equal timers wakes once."""
    timers = Timers()
    woken: list[float] = []
    timers.wake = woken.append
    timers.add(0.0, 0.5, _noop)  # armed is -inf until the adapter arms: no wake
    assert woken == []
    timers.armed = 10.0
    timers.add(1.0, 32.0, _noop)  # 33.0: later than armed
    assert woken == []
    timers.add(1.0, 0.5, _noop)  # 1.5: earlier
    timers.add(1.0, 0.5, _noop)  # 1.5 again: armed is 1.5 now
    timers.add_at(1.2, _noop)  # a one-off deadline, earlier still
    assert woken == [1.5, 1.2] and timers.armed == 1.2
    assert timers.next_deadline() == 0.5


def _noop(now: float) -> None:
    pass
