"""Condition waits for the tests: poll until something holds, fail naming what was awaited
and what was last seen.

The suite runs on loaded machines (two cores shared with other jobs), so a test never
sleeps a guessed time for something to happen: it waits for the thing itself, with a
deadline generous enough for a slow machine (a wait returns as soon as its condition
holds, so a long deadline costs nothing when things go well). ``tests/test_test_rules.py``
fails on a ``time.sleep`` or ``asyncio.sleep`` in the tests that is not marked
``# sleep-ok: <why>`` (a pause that is the behaviour under test, not a wait).

Import it by name (pyproject puts tests/e2e on the path)::

    from waits import wait_for
    wait_for("b to be draining", lambda: proxy.flags()[b.uri] == "DP", 10,
             seen=proxy.flags)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["wait_for", "wait_for_async"]

T = TypeVar("T")


def _timed_out(what: str, timeout: float, last: object, seen: Callable[[], Any] | None) -> str:
    shown: object = last
    if seen is not None:
        try:
            shown = seen()
        except Exception as e:  # the report must not hide the timeout
            shown = f"(cannot read it: {e!r})"
    return f"timed out after {timeout:g} s waiting for {what} (last seen: {shown!r})"


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    interval: float = 0.05,
    *,
    seen: Callable[[], Any] | None = None,
) -> T:
    """Call ``probe`` every ``interval`` s until it returns something truthy, and return
    that. After ``timeout`` s fail with an AssertionError naming ``what`` and what was
    last seen: ``seen()`` when given (e.g. the state the predicate looks at), else the
    probe's last value. An exception from ``probe`` propagates at once."""
    deadline = time.monotonic() + timeout
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(_timed_out(what, timeout, last, seen))
        time.sleep(interval)  # sleep-ok: the poll interval of this bounded wait


async def wait_for_async(
    what: str,
    probe: Callable[[], T | Awaitable[T | None] | None],
    timeout: float,
    interval: float = 0.05,
    *,
    seen: Callable[[], Any] | None = None,
) -> T:
    """``wait_for`` inside an event loop: ``probe`` may be a plain function or return an
    awaitable; the loop runs between polls."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        last: Any = await got if isinstance(got, Awaitable) else got
        if last:
            return last  # type: ignore[no-any-return]
        if time.monotonic() >= deadline:
            raise AssertionError(_timed_out(what, timeout, last, seen))
        await asyncio.sleep(interval)  # sleep-ok: the poll interval of this bounded wait
