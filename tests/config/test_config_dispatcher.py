"""DispatcherConfig: defaults and clear validation errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sipfleet.config import DispatcherConfig


def test_defaults() -> None:
    c = DispatcherConfig()
    assert c.algorithm == 4
    assert c.ping_interval == 10
    assert c.ping_from == "sip:dispatcher@localhost"
    assert c.ping_latency_stats is True
    assert c.reload_delta == 5
    assert c.failover_codes == [408, 500, 502, 503, 504]
    assert (c.probing_threshold, c.inactive_threshold) == (1, 1)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("algorithm", 15, "unknown algorithm 15"),
        ("probing_mode", 4, "less than or equal to 3"),
        ("ping_interval", -1, "greater than or equal to 0"),
        ("probing_threshold", 0, "greater than or equal to 1"),
        ("ping_reply_codes", "code=99", "out of range 100..699"),
        ("ping_from", "mailto:x", "not a SIP URI"),
        ("failover_codes", [200], "not a final failure"),
        ("mark_on_failure", "ix", "bad state letter"),
        ("latency_estimator_alpha", 1000, "less than 1000"),
        ("reload_delta", -5, "greater than or equal to 0"),
        ("no_such_option", 1, "Extra inputs are not permitted"),
    ],
)
def test_validation(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        DispatcherConfig(**{field: value})
    assert message in str(info.value)
    assert field in str(info.value)


def test_algorithm_64_and_frozen() -> None:
    c = DispatcherConfig(algorithm=64, reload_delta=0)
    with pytest.raises(ValidationError):
        c.algorithm = 4  # type: ignore[misc]
