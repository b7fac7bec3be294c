"""The condition waits every e2e test uses (waits.py): they return what the probe found,
and a timeout names what was awaited and what was last seen."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from waits import wait_for, wait_for_async


def test_wait_for_returns_the_first_truthy_value() -> None:
    counter = itertools.count()
    assert wait_for("the third poll", lambda: next(counter) >= 2 and "done", 5, 0.001) == "done"


def test_a_timeout_names_what_was_awaited_and_what_was_seen() -> None:
    with pytest.raises(AssertionError, match=r"after 0.05 s waiting for b to drain .*'AP'"):
        wait_for("b to drain", lambda: False, 0.05, 0.01, seen=lambda: {"b": "AP"})
    with pytest.raises(AssertionError, match=r"waiting for a reply \(last seen: b''\)"):
        wait_for("a reply", lambda: b"", 0.02, 0.01)


def test_a_broken_report_does_not_hide_the_timeout() -> None:
    def broken() -> str:
        raise OSError("gone")

    with pytest.raises(AssertionError, match=r"waiting for x \(last seen: .*cannot read it"):
        wait_for("x", lambda: None, 0.02, 0.01, seen=broken)


def test_an_error_in_the_probe_propagates_at_once() -> None:
    def probe() -> bool:
        raise RuntimeError("the process exited")

    with pytest.raises(RuntimeError, match="exited"):
        wait_for("anything", probe, 60)


def test_wait_for_async_takes_plain_and_awaitable_probes() -> None:
    polls = itertools.count()

    async def later() -> int | None:
        await asyncio.sleep(0)  # sleep-ok: yields to the loop, as a real probe's I/O would
        n = next(polls)
        return n if n >= 2 else None

    async def go() -> tuple[int, bool]:
        got = await wait_for_async("an awaitable probe", later, 5, 0.001)
        plain = await wait_for_async("a plain probe", lambda: True, 5)
        with pytest.raises(AssertionError, match="waiting for never"):
            await wait_for_async("never", lambda: 0, 0.02, 0.01)
        return got, plain

    assert asyncio.run(go()) == (2, True)
