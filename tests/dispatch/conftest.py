"""Fixtures for the dispatcher core: builders, a fake dialog table, keys."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from sipfleet.config import DispatcherConfig
from sipfleet.dispatch import Dispatcher, parse_list


class FakeLoad:
    """A dialog table stand-in: open calls per load key."""

    def __init__(self, loads: dict[str, int] | None = None) -> None:
        self.loads: dict[str, int] = dict(loads or {})

    def load(self, duid: str) -> int:
        return self.loads.get(duid, 0)

    def open(self, key: str) -> None:
        self.loads[key] = self.loads.get(key, 0) + 1

    def close(self, key: str) -> None:
        self.loads[key] -= 1


Build = Callable[..., Dispatcher]


@pytest.fixture
def build() -> Build:
    """``build(list_text, now=0.0, seed=1, **config)`` -> Dispatcher."""

    def _build(text: str, now: float = 0.0, seed: int = 1, **cfg: Any) -> Dispatcher:
        cfg.setdefault("probing_mode", 1)  # these tests probe every destination
        return Dispatcher(
            DispatcherConfig(**cfg).to_settings(),
            parse_list(text, "test.list"),
            now=now,
            rng=random.Random(seed),
        )

    return _build


@pytest.fixture
def fake_load() -> FakeLoad:
    return FakeLoad()
