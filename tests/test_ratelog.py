"""The rate-limited logger: bounded lines under a flood, one summary each."""

from __future__ import annotations

import logging

import pytest

from sipfleet.ratelog import RateLimitedLog, flush_all


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))


@pytest.fixture
def sink() -> tuple[logging.Logger, _Lines]:
    logger = logging.getLogger("test.ratelog")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = _Lines()
    logger.handlers = [handler]
    return logger, handler


def test_flood_of_20000_lines_is_bounded_and_summarised(
    sink: tuple[logging.Logger, _Lines],
) -> None:
    logger, out = sink
    rl = RateLimitedLog(logger, per_second=10, burst=10)
    # 20,000 lines over 10 s of fake time: 10 at once, then 10 a second.
    for i in range(20_000):
        rl.warning(i * 0.0005, "refusing %s:%d", "192.0.2.1", i)
    written = [m for _, m in out.lines if "suppressed" not in m]
    summaries = [m for _, m in out.lines if "suppressed" in m]
    assert 10 <= len(written) <= 10 + 10 * 10 + 1
    assert summaries and len(summaries) <= len(written)
    rl.flush(10.0 + 1.0)
    summaries = [m for _, m in out.lines if "suppressed" in m]
    counted = sum(int(m.split("suppressed ")[1].split()[0]) for m in summaries)
    assert counted + len(written) == 20_000  # every line is written or counted
    assert rl.suppressed_total == counted
    assert summaries[0].startswith("refusing %s:%d: suppressed ")
    assert summaries[0].endswith(" s")


def test_burst_then_rate_per_key(sink: tuple[logging.Logger, _Lines]) -> None:
    logger, out = sink
    rl = RateLimitedLog(logger, per_second=2, burst=3)
    assert [rl.info(0.0, "a %d", i) for i in range(5)] == [True, True, True, False, False]
    assert rl.info(0.0, "b") is True  # another call site has its own bucket
    assert rl.info(0.4, "a %d", 5) is False  # 0.8 of a token
    assert rl.info(0.5, "a %d", 6) is True
    assert out.lines[-2:] == [
        (logging.INFO, "a %d: suppressed 3 similar messages in the last 0.5 s"),
        (logging.INFO, "a 6"),
    ]
    assert rl.info(0.5, "x", key="a %d") is False  # an explicit key shares the bucket


def test_summary_keeps_the_highest_level_and_flush_all(
    sink: tuple[logging.Logger, _Lines],
) -> None:
    logger, out = sink
    rl = RateLimitedLog(logger, per_second=1, burst=1)
    rl.info(0.0, "m")
    rl.info(0.1, "m")
    rl.warning(0.2, "m")
    assert flush_all(0.5) == 0  # no token yet
    assert flush_all(1.5) >= 1
    assert out.lines[-1] == (logging.WARNING, "m: suppressed 2 similar messages in the last 1.4 s")
    assert rl.flush(10.0) == 0  # nothing left to report; the idle key is forgotten


def test_keys_are_bounded(sink: tuple[logging.Logger, _Lines]) -> None:
    logger, out = sink
    rl = RateLimitedLog(logger, per_second=1, burst=1, max_keys=4)
    for i in range(1000):
        rl.info(0.0, f"line {i}")  # a careless caller formatting into the key
    assert len(out.lines) == 5  # four own buckets, then one shared by the rest
    assert len(rl._buckets) == 5


def test_filtered_level_costs_nothing(sink: tuple[logging.Logger, _Lines]) -> None:
    logger, out = sink
    logger.setLevel(logging.INFO)
    rl = RateLimitedLog(logger, per_second=1, burst=1)
    assert rl.debug(0.0, "d") is False
    assert rl.info(0.0, "d") is True
    assert out.lines == [(logging.INFO, "d")]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        RateLimitedLog(logging.getLogger("x"), per_second=0)
